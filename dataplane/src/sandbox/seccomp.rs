//! A classic-BPF seccomp filter built from an allow-list: each rule names a
//! system call and, optionally, conditions on its integer arguments; a call
//! no rule allows fails with `EPERM` (it is not killed, so an unforeseen
//! call shows up as an error in the log, not as a dead tunnel). The filter
//! is installed on every thread of the process at once (`TSYNC`).

use std::io;

/// One condition on the low 32 bits of argument `arg` (every argument the
/// rules look at is a C `int`, which is all the kernel reads of it).
#[derive(Clone, Copy, Debug)]
pub enum Cond {
    /// Equal to the value.
    Eq(u8, u32),
    /// One of the values.
    AnyOf(u8, &'static [u32]),
    /// `arg & mask == value`.
    Masked(u8, u32, u32),
}

/// The call `nr` is allowed when every condition holds; several rules for
/// one call are alternatives.
#[derive(Clone, Debug)]
pub struct Rule {
    pub nr: libc::c_long,
    pub conds: Vec<Cond>,
}

impl Rule {
    pub fn any(nr: libc::c_long) -> Rule {
        Rule {
            nr,
            conds: Vec::new(),
        }
    }

    pub fn when(nr: libc::c_long, conds: &[Cond]) -> Rule {
        Rule {
            nr,
            conds: conds.to_vec(),
        }
    }
}

// Classic BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO | errno

// struct seccomp_data: nr, arch, instruction_pointer, args[6].
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg_low(arg: u8) -> u32 {
    // Little-endian: the low word of each 64-bit argument comes first.
    16 + 8 * u32::from(arg)
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e); // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7); // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Whether this build knows its architecture's seccomp identity.
pub fn supported() -> bool {
    AUDIT_ARCH.is_some()
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A jump target inside a rule's block, resolved once the block is laid out.
#[derive(Clone, Copy)]
enum To {
    Next,
    Skip(u8),
    Fail,
}

/// One rule as: load nr; not ours -> next rule; each condition -> next
/// rule when false; allow.
fn block(rule: &Rule) -> io::Result<Vec<libc::sock_filter>> {
    let mut code: Vec<(u16, To, To, u32)> = vec![
        (LD_W_ABS, To::Next, To::Next, OFF_NR),
        (JEQ_K, To::Next, To::Fail, rule.nr as u32),
    ];
    for c in &rule.conds {
        match *c {
            Cond::Eq(arg, v) => {
                code.push((LD_W_ABS, To::Next, To::Next, off_arg_low(arg)));
                code.push((JEQ_K, To::Next, To::Fail, v));
            }
            Cond::Masked(arg, mask, v) => {
                code.push((LD_W_ABS, To::Next, To::Next, off_arg_low(arg)));
                code.push((AND_K, To::Next, To::Next, mask));
                code.push((JEQ_K, To::Next, To::Fail, v));
            }
            Cond::AnyOf(arg, vs) => {
                code.push((LD_W_ABS, To::Next, To::Next, off_arg_low(arg)));
                for (i, &v) in vs.iter().enumerate() {
                    let left = vs.len() - i - 1;
                    if left == 0 {
                        code.push((JEQ_K, To::Next, To::Fail, v));
                    } else {
                        let skip = u8::try_from(left).map_err(|_| too_long())?;
                        code.push((JEQ_K, To::Skip(skip), To::Next, v));
                    }
                }
            }
        }
    }
    code.push((RET_K, To::Next, To::Next, RET_ALLOW));
    // A failed check jumps past the block's final `ret ALLOW`.
    let len = code.len();
    let resolve = |i: usize, t: To| -> io::Result<u8> {
        match t {
            To::Next => Ok(0),
            To::Skip(n) => Ok(n),
            To::Fail => u8::try_from(len - i - 1).map_err(|_| too_long()),
        }
    };
    code.iter()
        .enumerate()
        .map(|(i, &(op, jt, jf, k))| Ok(insn(op, resolve(i, jt)?, resolve(i, jf)?, k)))
        .collect()
}

fn too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "seccomp rule too long")
}

/// The whole filter: the architecture must be ours (a 32-bit or x32 system
/// call has other numbers), then the rules, then `EPERM`.
pub fn build(rules: &[Rule]) -> io::Result<Vec<libc::sock_filter>> {
    let Some(arch) = AUDIT_ARCH else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no seccomp filter for this architecture",
        ));
    };
    let deny = RET_ERRNO | libc::EPERM as u32;
    let mut f = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, arch),
        insn(RET_K, 0, 0, deny),
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 system calls: the x86_64 numbers with bit 30 set.
        f.push(insn(LD_W_ABS, 0, 0, OFF_NR));
        f.push(insn(JGE_K, 0, 1, 0x4000_0000));
        f.push(insn(RET_K, 0, 0, deny));
    }
    for r in rules {
        f.extend(block(r)?);
    }
    f.push(insn(RET_K, 0, 0, deny));
    if f.len() > 4096 {
        return Err(too_long());
    }
    Ok(f)
}

/// Installs `filter` on every thread of the process. The calling thread
/// must have `no_new_privs` set (the kernel sets it on the others). Each
/// refused call is also written to the kernel log (`FLAG_LOG`, where
/// `kernel.seccomp.actions_logged` has `errno`: "audit: type=1326 ...
/// syscall=NR"), so an unforeseen one can be named. Allocation-free, for
/// the forked-child tests.
pub fn install(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| too_long())?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    let tsync = libc::SECCOMP_FILTER_FLAG_TSYNC;
    match set_filter(&prog, tsync | libc::SECCOMP_FILTER_FLAG_LOG) {
        // FLAG_LOG is Linux 4.14; without it, refusals are only errors.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set_filter(&prog, tsync),
        r => r,
    }
}

fn set_filter(prog: &libc::sock_fprog, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: seccomp(2) copies the program `prog` points at during the
    // call; the instructions outlive it and are not written through it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            prog as *const libc::sock_fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(io::Error::other(format!(
            "thread {r} could not take the seccomp filter"
        ))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Runs `filter` on one system call the way the kernel would and returns
/// its verdict: the tests check the rules without installing them.
#[cfg(test)]
pub fn run(filter: &[libc::sock_filter], arch: u32, nr: libc::c_long, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = filter[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
            }
            AND_K => acc &= i.k,
            JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
            RET_K => return i.k,
            op => panic!("opcode {op:#x} not expected in our filters"),
        }
    }
}

#[cfg(test)]
pub(super) const TEST_ARCH: u32 = match AUDIT_ARCH {
    Some(a) => a,
    None => 0,
};
#[cfg(test)]
pub(super) const ALLOW: u32 = RET_ALLOW;
#[cfg(test)]
pub(super) const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
