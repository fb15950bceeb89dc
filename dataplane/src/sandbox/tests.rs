use std::ffi::CString;

use super::seccomp::{self, ALLOW, EPERM, TEST_ARCH};
use super::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: dropping capabilities and reading another process's memory need root");
    }
    root
}

const REGION_DIR_FD: i32 = 7;
const PID: i32 = 4242;

fn filter() -> Vec<libc::sock_filter> {
    seccomp::build(&policy::rules(Some(REGION_DIR_FD), PID)).unwrap()
}

fn verdict(nr: libc::c_long, args: [u64; 6]) -> u32 {
    seccomp::run(&filter(), TEST_ARCH, nr, args)
}

fn args(a: &[u64]) -> [u64; 6] {
    let mut v = [0u64; 6];
    v[..a.len()].copy_from_slice(a);
    v
}

#[test]
fn the_loop_s_system_calls_are_allowed() {
    for nr in [
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_recvmmsg,
        libc::SYS_sendmmsg,
        libc::SYS_sendto,
        libc::SYS_ppoll,
        libc::SYS_futex,
        libc::SYS_clock_nanosleep,
        libc::SYS_exit,
        libc::SYS_pidfd_open,
    ] {
        assert_eq!(verdict(nr, args(&[])), ALLOW, "system call {nr}");
    }
}

#[test]
fn reaching_other_processes_files_or_programs_is_refused() {
    for nr in [
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kill,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_capset,
        libc::SYS_prctl,
        libc::SYS_connect,
        libc::SYS_renameat2,
        libc::SYS_mount,
    ] {
        assert_eq!(verdict(nr, args(&[])), EPERM, "system call {nr}");
    }
}

#[test]
fn only_udp_and_rtnetlink_sockets() {
    let sock = |family: i32, ty: i32, proto: i32| {
        verdict(
            libc::SYS_socket,
            args(&[family as u64, ty as u64, proto as u64]),
        )
    };
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    assert_eq!(sock(libc::AF_INET, libc::SOCK_DGRAM | flags, 0), ALLOW);
    assert_eq!(
        sock(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        ALLOW
    );
    assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW | flags, 0), ALLOW);
    assert_eq!(
        sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP),
        EPERM
    );
    assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM, 0), EPERM);
    assert_eq!(sock(libc::AF_PACKET, libc::SOCK_DGRAM, 0), EPERM);
    assert_eq!(sock(libc::AF_UNIX, libc::SOCK_DGRAM, 0), EPERM);
    assert_eq!(sock(libc::AF_XDP, libc::SOCK_RAW, 0), EPERM);
    assert_eq!(
        sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER),
        EPERM
    );
}

/// Where AF_XDP uplinks follow the peers, the data plane takes over
/// sockets its attacher made: receiving them and mapping their rings and
/// UMEM file is allowed; making them (an AF_XDP socket, a memory file, a
/// program, a map or a link) is not.
#[test]
fn taking_an_af_xdp_socket_over_is_allowed_making_one_is_not() {
    let shared = (libc::MAP_SHARED | libc::MAP_POPULATE) as u64;
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    for (nr, a) in [
        (
            libc::SYS_recvmsg,
            args(&[3, 0, libc::MSG_CMSG_CLOEXEC as u64]),
        ),
        (libc::SYS_mmap, args(&[0, 1 << 20, rw, shared, 5, 0])),
        (libc::SYS_getsockopt, args(&[5, libc::SOL_XDP as u64, 1])),
        (libc::SYS_fstat, args(&[6])),
        (libc::SYS_fcntl, args(&[6, libc::F_GET_SEALS as u64])),
    ] {
        assert_eq!(verdict(nr, a), ALLOW, "system call {nr}");
    }
    const BPF_MAP_CREATE: u64 = 0;
    const BPF_PROG_LOAD: u64 = 5;
    const BPF_LINK_CREATE: u64 = 28;
    for (nr, a) in [
        (
            libc::SYS_socket,
            args(&[libc::AF_XDP as u64, libc::SOCK_RAW as u64]),
        ),
        (libc::SYS_memfd_create, args(&[0, 0])),
        (libc::SYS_bpf, args(&[BPF_MAP_CREATE])),
        (libc::SYS_bpf, args(&[BPF_PROG_LOAD])),
        (libc::SYS_bpf, args(&[BPF_LINK_CREATE])),
        (
            libc::SYS_mmap,
            args(&[0, 4096, rw | libc::PROT_EXEC as u64, shared, 5, 0]),
        ),
    ] {
        assert_eq!(verdict(nr, a), EPERM, "system call {nr} {a:?}");
    }
}

#[test]
fn arguments_are_checked() {
    let ioctl = |cmd: libc::c_ulong| verdict(libc::SYS_ioctl, args(&[3, cmd]));
    assert_eq!(ioctl(libc::SIOCGIFMTU as libc::c_ulong), ALLOW);
    assert_eq!(ioctl(libc::SIOCGIFINDEX as libc::c_ulong), ALLOW);
    assert_eq!(ioctl(libc::SIOCSIFMTU as libc::c_ulong), EPERM);
    assert_eq!(ioctl(libc::TUNGETIFF as libc::c_ulong), ALLOW);
    assert_eq!(ioctl(libc::TUNSETIFF as libc::c_ulong), EPERM);
    assert_eq!(ioctl(libc::TUNSETOFFLOAD as libc::c_ulong), EPERM);

    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    assert_eq!(verdict(libc::SYS_mmap, args(&[0, 4096, rw])), ALLOW);
    assert_eq!(verdict(libc::SYS_mmap, args(&[0, 4096, rx])), EPERM);
    assert_eq!(verdict(libc::SYS_mprotect, args(&[0, 4096, rx])), EPERM);

    let unlink = |fd: i32, flags: i32| {
        verdict(
            libc::SYS_unlinkat,
            args(&[fd as u32 as u64, 0, flags as u64]),
        )
    };
    assert_eq!(unlink(REGION_DIR_FD, 0), ALLOW);
    assert_eq!(unlink(libc::AT_FDCWD, 0), EPERM);
    assert_eq!(unlink(REGION_DIR_FD, libc::AT_REMOVEDIR), EPERM);

    assert_eq!(verdict(libc::SYS_tgkill, args(&[PID as u64, 1, 6])), ALLOW);
    assert_eq!(verdict(libc::SYS_tgkill, args(&[1, 1, 9])), EPERM);

    let bpf = |cmd: u64| verdict(libc::SYS_bpf, args(&[cmd]));
    assert_eq!(bpf(2), ALLOW, "BPF_MAP_UPDATE_ELEM");
    assert_eq!(bpf(0), EPERM, "BPF_MAP_CREATE");
    assert_eq!(bpf(5), EPERM, "BPF_PROG_LOAD");
}

#[test]
fn other_abis_are_refused() {
    let f = filter();
    let nr = libc::SYS_read;
    assert_eq!(seccomp::run(&f, TEST_ARCH, nr, args(&[])), ALLOW);
    // i386's AUDIT_ARCH: its numbers mean other calls.
    assert_eq!(seccomp::run(&f, 0x4000_0003, nr, args(&[])), EPERM);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            seccomp::run(&f, TEST_ARCH, nr | 0x4000_0000, args(&[])),
            EPERM,
            "x32"
        );
    }
}

#[test]
fn the_escape_hatch_leaves_the_filter_out() {
    let s = Sandbox::prepare(KEPT_CAPS, None, false).unwrap();
    assert!(!s.filters());
    let s = Sandbox::prepare(KEPT_CAPS, None, true).unwrap();
    assert!(s.filters());
}

// ---------------------------------------------------------------------------
// In the kernel, in forked children (a filter cannot be taken off again).

/// A value in the test process's memory; the forked child has its copy at
/// the same address, so it knows where to look in its parent.
static SECRET: [u8; 16] = *b"control's secret";

/// Runs `f` in a forked child and returns its exit code. `f` may only make
/// system calls: another thread of the test process may have held the
/// allocator's lock at the fork.
fn in_child(f: impl FnOnce() -> u8) -> u8 {
    // SAFETY: the child runs `f` (system calls only, see above) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(code.into()) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, into a live integer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status) as u8
}

/// 0 when `/proc/PARENT/mem` opens and reads back SECRET, 1 when the open
/// is refused, 2 when it opens but the read fails, 3 for a wrong read.
fn read_parent_mem(path: &CString) -> u8 {
    // SAFETY: `path` is NUL-terminated and lives across the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 1;
    }
    let mut buf = [0u8; 16];
    // SAFETY: reads at most 16 bytes into `buf`, from an fd we own.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            SECRET.as_ptr() as libc::off_t,
        )
    };
    // SAFETY: closes the fd opened above, once.
    unsafe { libc::close(fd) };
    match n {
        16 if buf == SECRET => 0,
        16 => 3,
        _ => 2,
    }
}

/// 0 when process_vm_readv reads SECRET out of the parent, 1 when refused.
fn vm_read_parent(parent: libc::pid_t) -> u8 {
    let mut buf = [0u8; 16];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: SECRET.as_ptr() as *mut libc::c_void,
        iov_len: SECRET.len(),
    };
    // SAFETY: writes at most 16 bytes into `buf` through `local`; `remote`
    // is only an address in the other process.
    let n = unsafe { libc::process_vm_readv(parent, &local, 1, &remote, 1, 0) };
    match n {
        16 if buf == SECRET => 0,
        n if n < 0 => 1,
        _ => 3,
    }
}

/// 0 when PTRACE_SEIZE attaches to the parent (which it does not stop;
/// the child's exit detaches it), 1 when refused.
fn seize_parent(parent: libc::pid_t) -> u8 {
    // SAFETY: PTRACE_SEIZE takes a pid and no memory of ours.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, parent, 0, 0) };
    u8::from(r != 0)
}

fn parent_mem() -> (libc::pid_t, CString) {
    let parent = std::process::id() as libc::pid_t;
    (parent, CString::new(format!("/proc/{parent}/mem")).unwrap())
}

/// Without the sandbox the child reads its parent's memory both ways: the
/// checks below test the sandbox, not an environment that forbids it.
#[test]
fn unsandboxed_the_child_can_read_its_parent() {
    if !is_root() {
        return;
    }
    let (parent, path) = parent_mem();
    assert_eq!(in_child(|| read_parent_mem(&path)), 0);
    assert_eq!(in_child(|| vm_read_parent(parent)), 0);
    assert_eq!(in_child(|| seize_parent(parent)), 0);
}

/// Capabilities alone already do it: with fewer than the parent has, the
/// kernel's ptrace check refuses, though both are root and the parent is
/// dumpable.
#[test]
fn with_fewer_capabilities_the_parent_s_memory_is_out_of_reach() {
    if !is_root() {
        return;
    }
    let (parent, path) = parent_mem();
    let s = Sandbox::prepare(KEPT_CAPS, None, false).unwrap();
    let code = in_child(|| {
        if s.drop_privileges().is_err() {
            return 10;
        }
        if caps::effective().ok() != Some(KEPT_CAPS) {
            return 11;
        }
        match (
            read_parent_mem(&path),
            vm_read_parent(parent),
            seize_parent(parent),
        ) {
            (1, 1, 1) => 0,
            (a, b, c) => 20 + a * 8 + b * 2 + c,
        }
    });
    assert_eq!(code, 0);
}

/// The data plane's whole sandbox: its parent's memory is out of reach,
/// nothing can be opened, no raw socket made, while what the loop does
/// still works.
#[test]
fn sandboxed_the_data_plane_cannot_read_control() {
    if !is_root() {
        return;
    }
    let (parent, path) = parent_mem();
    let etc = CString::new("/etc/hostname").unwrap();
    let s = Sandbox::prepare(KEPT_CAPS, None, true).unwrap();
    let code = in_child(|| {
        match s.drop_privileges() {
            Ok(Dropped { bounding: true }) => {}
            _ => return 10,
        }
        if caps::effective().ok() != Some(KEPT_CAPS) {
            return 11;
        }
        if s.enter_filter().is_err() {
            return 12;
        }
        if read_parent_mem(&path) != 1 {
            return 13;
        }
        if vm_read_parent(parent) != 1 {
            return 14;
        }
        if seize_parent(parent) != 1 {
            return 20;
        }
        // SAFETY: open with a NUL-terminated path; closed if it opened.
        let fd = unsafe { libc::open(etc.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            return 15;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
            return 16;
        }
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw >= 0 {
            return 17;
        }
        // SAFETY: socket(2) with constant arguments; closed below.
        let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if udp < 0 {
            return 18;
        }
        // SAFETY: closes the socket just made.
        unsafe { libc::close(udp) };
        // The supervisor polls the TUN's index this way.
        if crate::tun::ifindex("lo").is_none() {
            return 19;
        }
        0
    });
    assert_eq!(code, 0);
}

fn host_verdict(nr: libc::c_long, args: [u64; 6]) -> u32 {
    let f = seccomp::build(&policy::host_rules(&[REGION_DIR_FD], PID)).unwrap();
    seccomp::run(&f, TEST_ARCH, nr, args)
}

/// The host data plane takes tenants for its whole life: accepting their
/// connections and turning their TUN offloads on is allowed to it (and to
/// it only), removing files only in the directory it opened at start.
#[test]
fn the_host_filter_adds_accepting_offloads_and_its_own_directory() {
    assert_eq!(host_verdict(libc::SYS_accept4, args(&[])), ALLOW);
    assert_eq!(host_verdict(libc::SYS_geteuid, args(&[])), ALLOW);
    assert_eq!(verdict(libc::SYS_accept4, args(&[])), EPERM);
    let offload = args(&[3, libc::TUNSETOFFLOAD]);
    assert_eq!(host_verdict(libc::SYS_ioctl, offload), ALLOW);
    assert_eq!(verdict(libc::SYS_ioctl, offload), EPERM);
    assert_eq!(
        host_verdict(libc::SYS_ioctl, args(&[3, libc::TUNSETIFF])),
        EPERM
    );
    let unlink =
        |fd: i32, flags: i32| host_verdict(libc::SYS_unlinkat, args(&[fd as u64, 0, flags as u64]));
    assert_eq!(unlink(REGION_DIR_FD, 0), ALLOW);
    assert_eq!(unlink(REGION_DIR_FD + 1, 0), EPERM);
    assert_eq!(unlink(libc::AT_FDCWD, 0), EPERM);
    assert_eq!(unlink(REGION_DIR_FD, libc::AT_REMOVEDIR), EPERM);
}

#[test]
fn the_host_filter_still_refuses_other_processes_files_and_programs() {
    for nr in [
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kill,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_setns,
        libc::SYS_capset,
        libc::SYS_connect,
        libc::SYS_listen,
    ] {
        assert_eq!(host_verdict(nr, args(&[])), EPERM, "system call {nr}");
    }
    let sock =
        |family: i32, ty: i32| host_verdict(libc::SYS_socket, args(&[family as u64, ty as u64, 0]));
    assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM), ALLOW);
    assert_eq!(sock(libc::AF_UNIX, libc::SOCK_SEQPACKET), EPERM);
    assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW), EPERM);
    let exec_mmap = args(&[0, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64]);
    assert_eq!(host_verdict(libc::SYS_mmap, exec_mmap), EPERM);
}

/// The host data plane's sandbox, entered: a connection is accepted and a
/// descriptor received with SCM_RIGHTS, while opening a file by path and
/// running a program fail with EPERM.
#[test]
fn sandboxed_the_host_data_plane_accepts_and_receives_but_opens_and_runs_nothing() {
    if !is_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wirespeed-hostsb-{}", std::process::id()));
    let path = dir.join("dataplane.sock");
    let listener = crate::process::host::listen::Listener::bind(&path).unwrap();
    let etc = CString::new("/etc/hostname").unwrap();
    let sh = CString::new("/bin/sh").unwrap();
    let s = Sandbox::prepare_host(KEPT_CAPS, &[], true).unwrap();
    let code = in_child(|| {
        // Read back before the filter: capget is not among its calls.
        if s.drop_privileges().is_err() || caps::effective().ok() != Some(KEPT_CAPS) {
            return 10;
        }
        if s.enter_filter().is_err() {
            return 13;
        }
        // SAFETY: open with a NUL-terminated path; checked below.
        let fd = unsafe { libc::open(etc.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
            return 11;
        }
        let argv = [sh.as_ptr(), std::ptr::null()];
        // SAFETY: execve with NUL-terminated path and argv; it fails here.
        unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), std::ptr::null()) };
        if io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
            return 12;
        }
        0
    });
    assert_eq!(code, 0);
    // The parent connects (the child cannot: no connect, no AF_UNIX
    // socket), then a sandboxed child accepts and receives a descriptor.
    let c = crate::process::host::listen::connect(&path).unwrap();
    let (r, w) = std::io::pipe().unwrap();
    crate::process::host::wire::send(
        std::os::fd::AsFd::as_fd(&c),
        b"HELLO",
        &[std::os::fd::AsRawFd::as_raw_fd(&w)],
    )
    .unwrap();
    drop(w);
    let code = in_child(|| {
        if s.enter().is_err() {
            return 20;
        }
        let mut conn = None;
        for _ in 0..200 {
            conn = listener.accept();
            if conn.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let Some(conn) = conn else { return 21 };
        match crate::process::host::wire::recv(std::os::fd::AsFd::as_fd(&conn), true) {
            Ok(crate::process::host::wire::Received::Msg(m, fds)) if m == b"HELLO" => {
                if fds.len() != 1 {
                    return 22;
                }
            }
            _ => return 23,
        }
        0
    });
    assert_eq!(code, 0);
    drop((c, r, listener));
    let _ = std::fs::remove_dir_all(&dir);
}
