//! Builds the XDP steering program (`ebpf/xdp_steer.c`) into
//! `$OUT_DIR/xdp_steer.o` with clang, for `src/xdp/program.rs` to embed.
//!
//! Needs clang (with the BPF target), the kernel UAPI headers and libbpf's
//! `bpf/bpf_helpers.h`: `deploy/setup.sh` installs all of them on Debian.
//! `CLANG` overrides the compiler; `WIRESPEED_BPF_CFLAGS` appends flags.

use std::{
    env,
    path::{Path, PathBuf},
    process::{exit, Command},
};

const SETUP_HINT: &str = "run deploy/setup.sh as root (it installs clang, llvm, libbpf-dev and \
                          the kernel headers), or set CLANG to a clang with the BPF target";

fn fail(message: &str) -> ! {
    eprintln!("error: building the XDP program ebpf/xdp_steer.c: {message}");
    eprintln!("hint: {SETUP_HINT}");
    exit(1);
}

/// Debian's multiarch include directory holding `asm/*.h` for the target.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => return None,
    };
    let dir = Path::new("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("../ebpf/xdp_steer.c");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let object = out_dir.join("xdp_steer.o");

    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=WIRESPEED_BPF_CFLAGS");

    if !source.is_file() {
        fail(&format!("source file {} not found", source.display()));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").is_file() {
        fail("/usr/include/bpf/bpf_helpers.h not found (Debian package libbpf-dev)");
    }
    if !Path::new("/usr/include/linux/bpf.h").is_file() {
        fail("/usr/include/linux/bpf.h not found (Debian package linux-libc-dev)");
    }

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut cmd = Command::new(&clang);
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-Wall",
        "-Wno-unused-function",
    ]);
    if let Some(dir) = multiarch_include() {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(["-I", "/usr/include"]);
    if let Ok(extra) = env::var("WIRESPEED_BPF_CFLAGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd.arg("-c").arg(&source).arg("-o").arg(&object);

    let status = match cmd.status() {
        Ok(status) => status,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            fail(&format!("`{clang}` not found on PATH"))
        }
        Err(err) => fail(&format!("could not run `{clang}`: {err}")),
    };
    if !status.success() {
        fail(&format!("`{cmd:?}` failed with {status}"));
    }
}
