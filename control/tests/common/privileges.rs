//! A process's threads' privileges from /proc/PID/task/*/status, for the
//! sandbox suites (a data plane of its own and the host's).

use super::util::children_of;

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13): what a data plane keeps.
pub const KEPT: u64 = (1 << 10) | (1 << 13);
/// What the XDP attacher keeps besides: CAP_NET_ADMIN (12), CAP_IPC_LOCK
/// (14), CAP_PERFMON (38) and CAP_BPF (39).
pub const XDP_ATTACH: u64 = KEPT | (1 << 12) | (1 << 14) | (1 << 38) | (1 << 39);

#[derive(Debug, PartialEq, Eq)]
pub struct Privileges {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: u32,
    pub seccomp: u32,
}

/// Exactly `caps`, with no_new_privs and seccomp mode `seccomp`.
pub fn with_caps(caps: u64, seccomp: u32) -> Privileges {
    Privileges {
        inheritable: 0,
        permitted: caps,
        effective: caps,
        bounding: caps,
        ambient: 0,
        no_new_privs: 1,
        seccomp,
    }
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in\n{status}"))
        .trim()
        .to_string()
}

/// The privileges in one /proc status file.
pub fn privileges(status: &str) -> Privileges {
    let hex = |name: &str| u64::from_str_radix(&field(status, name), 16).unwrap();
    Privileges {
        inheritable: hex("CapInh"),
        permitted: hex("CapPrm"),
        effective: hex("CapEff"),
        bounding: hex("CapBnd"),
        ambient: hex("CapAmb"),
        no_new_privs: field(status, "NoNewPrivs").parse().unwrap(),
        seccomp: field(status, "Seccomp").parse().unwrap(),
    }
}

/// Every thread's privileges, by thread name.
pub fn threads_of(pid: u32) -> Vec<(String, Privileges)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        v.push((field(&status, "Name"), privileges(&status)));
    }
    v
}

/// The XDP attacher of data plane `pid`: its only child, which keeps what
/// attaching takes and no more, with no_new_privs and (parsing nothing
/// from the network) no filter. Its pid.
pub fn assert_attacher_of(pid: u32) -> u32 {
    let kids = children_of(pid);
    assert_eq!(kids.len(), 1, "one attacher child of {pid}: {kids:?}");
    let (name, p) = &threads_of(kids[0])[0];
    assert_eq!(name, "xdp-attacher");
    assert_eq!(*p, with_caps(XDP_ATTACH, 0), "the XDP attacher");
    kids[0]
}
