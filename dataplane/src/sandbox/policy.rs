//! What the data plane may still do once it forwards: the system calls of
//! its workers' loop (TUN reads and writes, UDP and AF_XDP I/O, netlink
//! route and neighbour queries, the key and event rings), of its
//! supervisor's (polling addresses and the MTU, rebinding the UDP sockets
//! on a new listen port, the XDP maps, watching control) and of exiting
//! (removing a dead control's region). Taken from `strace -f` of running
//! data planes on both backends. Nothing here opens a file, starts a
//! process or thread, or reaches another process.

use super::seccomp::{Cond, Rule};

// Arguments, by position.
const A0: u8 = 0;
const A1: u8 = 1;
const A2: u8 = 2;

/// `SOCK_TYPE_MASK`: the type without SOCK_NONBLOCK / SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;

// bpf(2) commands on maps the data plane already holds: the XDP program's
// port, socket and counter maps. Loading programs or creating maps is not
// among them.
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;

/// The allow-list. `region_dir` is the descriptor of the directory the
/// region lives in, the only one `unlinkat` may act in; `pid` is ours, the
/// only process `tgkill` may signal (abort()).
pub fn rules(region_dir: Option<i32>, pid: i32) -> Vec<Rule> {
    use libc::*;
    let mut v: Vec<Rule> = [
        // Packets: TUN (readv/writev with the virtio-net header), UDP
        // (recvmmsg/sendmmsg, sendmsg with a source address), AF_XDP
        // (sendto wakes the kernel), netlink (sendto/recvfrom/recvmsg),
        // the eventfd that wakes control and the log (write).
        SYS_read,
        SYS_readv,
        SYS_write,
        SYS_writev,
        SYS_recvfrom,
        SYS_recvmsg,
        SYS_recvmmsg,
        SYS_sendto,
        SYS_sendmsg,
        SYS_sendmmsg,
        SYS_ppoll,
        SYS_close,
        // New UDP sockets for a new listen port, netlink sockets.
        SYS_bind,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_setsockopt,
        SYS_fcntl,
        // Memory, time, locks, threads ending, signals delivered.
        SYS_brk,
        SYS_munmap,
        SYS_mremap,
        SYS_madvise,
        // Which key slots of the region have memory (see
        // `Region::key_slots_in_use`): read-only, of our own mappings.
        SYS_mincore,
        SYS_futex,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_sched_yield,
        SYS_getpid,
        SYS_gettid,
        SYS_getrandom,
        SYS_rt_sigreturn,
        SYS_rt_sigprocmask,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
        // Whether control is alive (a pidfd is readable once it exited):
        // no kill(2), which could signal any process of ours.
        SYS_pidfd_open,
        // Removing a dead control's region: lock, compare, unlink.
        SYS_flock,
        SYS_newfstatat,
        SYS_fstat,
    ]
    .into_iter()
    .map(Rule::any)
    .collect();
    #[cfg(target_arch = "x86_64")]
    v.push(Rule::any(SYS_poll));
    // Sockets: UDP over IPv4/IPv6, and rtnetlink (getifaddrs, routes and
    // neighbours). No raw, packet or Unix sockets.
    v.push(Rule::when(
        SYS_socket,
        &[
            Cond::AnyOf(A0, &[AF_INET as u32, AF_INET6 as u32]),
            Cond::Masked(A1, SOCK_TYPE_MASK, SOCK_DGRAM as u32),
        ],
    ));
    v.push(Rule::when(
        SYS_socket,
        &[
            Cond::Eq(A0, AF_NETLINK as u32),
            Cond::Eq(A2, NETLINK_ROUTE as u32),
        ],
    ));
    // Interface index and MTU of the TUN, asked on a UDP socket, and the
    // name a queue's device has now (TUNGETIFF, read-only: how the data
    // plane follows its interface's MTU without CAP_NET_ADMIN, see
    // process::iface_watch); nothing that sets anything.
    v.push(Rule::when(
        SYS_ioctl,
        &[Cond::AnyOf(
            A1,
            &[SIOCGIFINDEX as u32, SIOCGIFMTU as u32, TUNGETIFF as u32],
        )],
    ));
    v.push(Rule::when(
        SYS_bpf,
        &[Cond::AnyOf(
            A0,
            &[
                BPF_MAP_LOOKUP_ELEM,
                BPF_MAP_UPDATE_ELEM,
                BPF_MAP_DELETE_ELEM,
                BPF_MAP_GET_NEXT_KEY,
            ],
        )],
    ));
    // Memory, never executable: no code can be written and then run.
    for nr in [SYS_mmap, SYS_mprotect] {
        v.push(Rule::when(nr, &[Cond::Masked(A2, PROT_EXEC as u32, 0)]));
    }
    v.push(Rule::when(SYS_tgkill, &[Cond::Eq(A0, pid as u32)]));
    if let Some(fd) = region_dir {
        // The path is beyond seccomp's sight: an absolute one would ignore
        // the directory. The flags at least rule out removing directories.
        v.push(Rule::when(
            SYS_unlinkat,
            &[Cond::Eq(A0, fd as u32), Cond::Eq(A2, 0)],
        ));
    }
    v
}

/// The host data plane's allow-list (`process::host`): the per-interface
/// one, which its lanes and supervisor share, and what taking tenants for
/// its whole life adds: accepting attach connections (their descriptors
/// come with `recvmsg`, replies go with `sendmsg`, both allowed already),
/// checking a region's owner, the namespace a tenant's interface is
/// watched from, turning a tenant's TUN offloads on, and
/// removing its socket file from
/// `dirs`, directories opened at start. Still no `open`: regions, eventfds
/// and TUN queues all come as descriptors.
pub fn host_rules(dirs: &[i32], pid: i32) -> Vec<Rule> {
    use libc::*;
    let mut v = rules(None, pid);
    v.push(Rule::any(SYS_accept4));
    // A handed-over region must be ours (`Region::from_fd` compares its
    // owner with our uid).
    v.push(Rule::any(SYS_geteuid));
    // A tenant's interface is watched from our own namespace, which is
    // read as the inode of /proc/thread-self/ns/net: std stats with statx,
    // no more than the newfstatat the per-interface list has.
    v.push(Rule::any(SYS_statx));
    v.push(Rule::when(SYS_ioctl, &[Cond::Eq(A1, TUNSETOFFLOAD as u32)]));
    for &fd in dirs {
        v.push(Rule::when(
            SYS_unlinkat,
            &[Cond::Eq(A0, fd as u32), Cond::Eq(A2, 0)],
        ));
    }
    v
}
