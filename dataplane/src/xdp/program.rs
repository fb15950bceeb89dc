//! Loader for the XDP steering program (`ebpf/xdp_steer.c`).
//!
//! [`XdpSteering::attach`] loads the embedded object with aya, fills the
//! `PORTS` map, removes a stale XDP program that a crashed earlier instance
//! of *ours* left on the interface, and attaches in native (driver) mode,
//! falling back to generic (SKB) mode. The returned handle owns the program,
//! its maps and its attachment; dropping it detaches the program.
//!
//! # Other programs on the interface
//!
//! An interface has one XDP attach point. A program that is not ours (an
//! administrator's firewall, libxdp's dispatcher, anything `xdp-loader` or
//! `ip link set ... xdp` put there) is never detached: `attach` fails with an
//! error that [`foreign_program`] recognises, and the caller leaves that
//! uplink to the UDP sockets. Ours is recognised by what the kernel reports
//! of the attached program: its name is [`PROGRAM_NAME`] and its maps include
//! [`PORTS_MAP`] and [`XSKS_MAP`]. We do not chain behind other programs
//! (libxdp's multi-program dispatcher protocol is not implemented).
//!
//! # Lifetime of the attachment
//!
//! On kernels with XDP `bpf_link` support (5.9+) aya attaches through a
//! `bpf_link`, whose only reference is a file descriptor held by this
//! process: when the process exits -- cleanly, by panic or by `SIGKILL` -- the
//! kernel closes the fd and the program is detached. Only a netlink-attached
//! program (older kernels, or other tools such as `ip link set ... xdp obj`)
//! outlives its process; that is the "stale" program `attach` removes.
//! A program attached through a *live* `bpf_link` is never removed: the kernel
//! refuses (`EBUSY`) and `attach` reports that another process owns the
//! interface.

use std::{
    collections::HashSet,
    error::Error as StdError,
    ffi::CString,
    fmt, io,
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, XskMap},
    programs::{loaded_programs, xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf,
};

/// The object file built by `build.rs` from `ebpf/xdp_steer.c`.
///
/// aya parses the ELF in place and needs it 8-byte aligned; `include_bytes!`
/// alone only guarantees byte alignment.
#[repr(C, align(8))]
struct Aligned<Bytes: ?Sized>(Bytes);

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/xdp_steer.o")));

/// The embedded ELF object (for tests that load it another way).
#[cfg(test)]
pub(crate) fn object_bytes() -> &'static [u8] {
    &OBJECT.0
}

/// Name of the program (its C function and ELF symbol).
pub const PROGRAM_NAME: &str = "xdp_steer";
/// Hash map of steered UDP ports, key `u16` in network byte order, value `u8`.
pub const PORTS_MAP: &str = "PORTS";
/// XSKMAP of AF_XDP sockets indexed by rx queue.
pub const XSKS_MAP: &str = "XSKS";
/// Per-CPU `u64` counters indexed by the `STAT_*` constants.
pub const STATS_MAP: &str = "STATS";
/// Hash map of this host's IPv4 addresses (key: the 4 address bytes as they
/// are on the wire, value `u8`): only transport messages to them are steered.
pub const LOCAL4_MAP: &str = "LOCAL4";
/// As [`LOCAL4_MAP`], for IPv6 (key: the 16 address bytes).
pub const LOCAL6_MAP: &str = "LOCAL6";

/// `STATS` index: transport messages redirected into an AF_XDP socket.
pub const STAT_STEERED: u32 = 0;
/// `STATS` index: well-formed packets that are not ours (XDP_PASS).
pub const STAT_PASSED: u32 = 1;
/// `STATS` index: packets whose headers are truncated or invalid (XDP_PASS).
pub const STAT_MALFORMED: u32 = 2;
/// `STATS` index: transport messages for a queue with no socket in `XSKS`
/// (passed to the kernel's UDP socket instead).
pub const STAT_NO_SOCKET: u32 = 3;
/// `STATS` index: transport-shaped datagrams to a steered port but not to
/// one of this host's addresses (forwarded traffic), passed to the kernel.
pub const STAT_NOT_LOCAL: u32 = 4;
const STAT_COUNT: u32 = 5;

/// Entries in `XSKS`: the highest rx queue index that can be steered, plus one.
pub const MAX_QUEUES: u32 = 64;

/// Value stored in `PORTS` for a port this handle added. The program only
/// tests for presence; the value is free for the loader's bookkeeping.
const PORT_TAG: u8 = 1;

/// The mode the program got attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpAttachMode {
    /// Native / driver mode (`XDP_FLAGS_DRV_MODE`): runs in the driver before
    /// an skb exists.
    Driver,
    /// Generic / SKB mode (`XDP_FLAGS_SKB_MODE`): runs in the stack after skb
    /// allocation; works on any device, slower, AF_XDP in copy mode only.
    Skb,
    /// Hardware offload (only ever reported for a stale program).
    Hardware,
}

impl XdpAttachMode {
    const fn netlink_flag(self) -> u32 {
        match self {
            Self::Skb => 1 << 1,
            Self::Driver => 1 << 2,
            Self::Hardware => 1 << 3,
        }
    }
}

impl fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "native (driver)",
            Self::Skb => "generic (skb)",
            Self::Hardware => "hardware offload",
        })
    }
}

/// Counters of the program, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Transport data messages redirected into an AF_XDP socket.
    pub steered: u64,
    /// Packets passed to the kernel because they are not steerable
    /// (other protocols and ports, handshakes, fragments, short messages).
    pub passed: u64,
    /// Packets passed to the kernel with truncated or invalid headers.
    pub malformed: u64,
    /// Transport data messages passed to the kernel because the rx queue they
    /// arrived on has no AF_XDP socket in the map.
    pub no_socket: u64,
    /// Transport-shaped datagrams to a steered port whose destination is not
    /// a local address (traffic this host forwards), passed to the kernel.
    pub not_local: u64,
}

/// An XDP program found on the interface: one of ours detached before
/// attaching (see [`XdpSteering::removed_stale`]), or another one that made
/// the attach fail and was left alone (see [`foreign_program`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleProgram {
    /// Kernel program id.
    pub id: u32,
    /// Program name as the kernel reports it (empty if unknown).
    pub name: String,
    /// The mode it was attached in.
    pub mode: XdpAttachMode,
}

/// The loaded and attached steering program. Detaches on drop.
pub struct XdpSteering {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    ports: HashMap<MapData, u16, u8>,
    xsks: XskMap<MapData>,
    stats: PerCpuArray<MapData, u64>,
    local4: HashMap<MapData, u32, u8>,
    local6: HashMap<MapData, [u8; 16], u8>,
    /// What `local4` / `local6` hold, so an update touches only the changes.
    locals: HashSet<IpAddr>,
    iface: String,
    ifindex: u32,
    mode: XdpAttachMode,
    driver_error: Option<String>,
    removed: Vec<StaleProgram>,
}

impl fmt::Debug for XdpSteering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpSteering")
            .field("iface", &self.iface)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("attached", &self.link.is_some())
            .field("driver_error", &self.driver_error)
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

/// An OS error with context: keeps the errno (see [`errno_of`]) while the
/// message says what was being done.
#[derive(Debug)]
struct Detailed {
    errno: i32,
    text: String,
}

impl fmt::Display for Detailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.text,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl StdError for Detailed {}

fn os_error(errno: i32, text: String) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(errno).kind(),
        Detailed { errno, text },
    )
}

/// The errno behind an error returned by this module, if it came from the
/// kernel (e.g. `EBUSY` when a live process holds the interface's XDP link).
pub fn errno_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error()
        .or_else(|| err.get_ref()?.downcast_ref::<Detailed>().map(|d| d.errno))
}

/// Prefixes `err` with `context`, keeping its kind and errno.
fn context(err: io::Error, context: impl fmt::Display) -> io::Error {
    let text = match err.get_ref().and_then(|e| e.downcast_ref::<Detailed>()) {
        Some(d) => format!("{context}: {}", d.text),
        None => format!("{context}: {err}"),
    };
    match errno_of(&err) {
        Some(errno) => os_error(errno, text),
        None => io::Error::new(err.kind(), text),
    }
}

/// Converts an aya (or any) error into an `io::Error`, keeping the kind and
/// errno of the innermost `io::Error` in its source chain and the whole
/// chain's text.
fn to_io(context: &str, err: impl StdError + 'static) -> io::Error {
    let mut kind = io::ErrorKind::Other;
    let mut errno = None;
    let mut text = format!("{context}: {err}");
    let top: &(dyn StdError + 'static) = &err;
    let mut source = Some(top);
    let mut first = true;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            kind = io.kind();
            errno = errno_of(io).or(errno);
        }
        if !first {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
        }
        first = false;
        source = cause.source();
    }
    match errno {
        Some(errno) => os_error(errno, text),
        None => io::Error::new(kind, text),
    }
}

fn map_errno(err: &MapError) -> Option<i32> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        source = cause.source();
    }
    None
}

/// Resolves an interface name in the calling thread's network namespace.
pub fn ifindex_of(iface: &str) -> io::Result<u32> {
    let name = CString::new(iface).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {iface:?} contains NUL"),
        )
    })?;
    // SAFETY: `name` is a valid NUL-terminated C string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("interface {iface:?}: {err}"),
        ));
    }
    Ok(index)
}

impl XdpSteering {
    /// Loads the program, steers `ports` (UDP destination ports, host order)
    /// and attaches it to `iface`: native mode first, generic mode if the
    /// driver refuses. A stale netlink-attached program of ours on `iface`
    /// (one left behind by a crashed data plane) is detached first; see
    /// [`XdpSteering::removed_stale`]. Any other program on `iface` is left
    /// attached and the attach fails ([`foreign_program`] recognises that).
    pub fn attach(iface: &str, ports: &[u16]) -> io::Result<Self> {
        let ifindex = ifindex_of(iface)?;
        // Load (and verify) before touching the interface, so a program that
        // does not load never costs the interface its current program.
        let mut this = Self::load(ports)?;
        this.iface = iface.to_owned();
        this.ifindex = ifindex;
        this.removed = remove_stale_programs(iface, ifindex).map_err(|e| {
            if foreign_program(&e).is_some() {
                e // already names the interface; keeps its type for the caller
            } else {
                context(e, iface)
            }
        })?;

        let program = this.program_mut()?;
        match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link) => {
                this.link = Some(link);
                this.mode = XdpAttachMode::Driver;
            }
            Err(driver_err) => {
                let driver_err = to_io("native mode", driver_err);
                match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                    Ok(link) => {
                        this.link = Some(link);
                        this.mode = XdpAttachMode::Skb;
                        this.driver_error = Some(driver_err.to_string());
                    }
                    Err(skb_err) => {
                        let skb_err = to_io("generic mode", skb_err);
                        let hint = if errno_of(&skb_err) == Some(libc::EBUSY) {
                            " (another live process holds an XDP link on this interface)"
                        } else {
                            ""
                        };
                        return Err(context(
                            skb_err,
                            format_args!("attaching XDP program to {iface}: {driver_err}; {hint}"),
                        ));
                    }
                }
            }
        }
        Ok(this)
    }

    /// Loads and verifies the program and fills `PORTS`, without attaching.
    pub(crate) fn load(ports: &[u16]) -> io::Result<Self> {
        let mut ebpf = Ebpf::load(&OBJECT.0).map_err(|e| to_io("loading the XDP object", e))?;
        {
            let program: &mut Xdp = ebpf
                .program_mut(PROGRAM_NAME)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "xdp_steer missing from the object")
                })?
                .try_into()
                .map_err(|e| to_io("xdp_steer", e))?;
            program
                .load()
                .map_err(|e| to_io("verifying xdp_steer", e))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("map {name} missing from the object"),
                )
            })
        };
        let ports_map = HashMap::try_from(take(PORTS_MAP)?).map_err(|e| to_io(PORTS_MAP, e))?;
        let xsks = XskMap::try_from(take(XSKS_MAP)?).map_err(|e| to_io(XSKS_MAP, e))?;
        let stats = PerCpuArray::try_from(take(STATS_MAP)?).map_err(|e| to_io(STATS_MAP, e))?;
        let local4 = HashMap::try_from(take(LOCAL4_MAP)?).map_err(|e| to_io(LOCAL4_MAP, e))?;
        let local6 = HashMap::try_from(take(LOCAL6_MAP)?).map_err(|e| to_io(LOCAL6_MAP, e))?;
        let mut this = Self {
            ebpf,
            link: None,
            ports: ports_map,
            xsks,
            stats,
            local4,
            local6,
            locals: HashSet::new(),
            iface: String::new(),
            ifindex: 0,
            mode: XdpAttachMode::Driver,
            driver_error: None,
            removed: Vec::new(),
        };
        for &port in ports {
            this.add_port(port)?;
        }
        Ok(this)
    }

    fn program_mut(&mut self) -> io::Result<&mut Xdp> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "xdp_steer missing"))?
            .try_into()
            .map_err(|e| to_io("xdp_steer", e))
    }

    fn program(&self) -> io::Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "xdp_steer missing"))?
            .try_into()
            .map_err(|e| to_io("xdp_steer", e))
    }

    /// The interface the program is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode the program got: [`XdpAttachMode::Driver`] or [`XdpAttachMode::Skb`].
    pub fn mode(&self) -> XdpAttachMode {
        self.mode
    }

    /// Why native mode was refused, when the program fell back to SKB mode.
    pub fn driver_error(&self) -> Option<&str> {
        self.driver_error.as_deref()
    }

    /// The stale programs detached from the interface before attaching.
    pub fn removed_stale(&self) -> &[StaleProgram] {
        &self.removed
    }

    /// The kernel id of the loaded program (as `ip link` and `bpftool` show it).
    pub fn program_id(&self) -> io::Result<u32> {
        let info = self
            .program()?
            .info()
            .map_err(|e| to_io("program info", e))?;
        Ok(info.id())
    }

    /// Registers the AF_XDP socket `xsk_fd` for rx queue `queue`: transport
    /// messages arriving on that queue are redirected to it. The socket must
    /// be bound to this interface and queue, or the kernel drops the frames.
    pub fn set_socket(&mut self, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        self.xsks
            .set(queue, xsk_fd, 0)
            .map_err(|e| to_io(&format!("XSKS[{queue}] = fd {xsk_fd}"), e))
    }

    /// Removes the socket for `queue`; its transport messages go to the
    /// kernel's UDP socket again. Idempotent.
    pub fn clear_socket(&mut self, queue: u32) -> io::Result<()> {
        match self.xsks.unset(queue) {
            Ok(()) => Ok(()),
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
            Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
            Err(e) => Err(to_io(&format!("clearing XSKS[{queue}]"), e)),
        }
    }

    /// Steers transport messages to UDP destination port `port` (host order).
    pub fn add_port(&mut self, port: u16) -> io::Result<()> {
        self.ports
            .insert(port.to_be(), PORT_TAG, 0)
            .map_err(|e| to_io(&format!("adding port {port}"), e))
    }

    /// Stops steering `port` (host order). Idempotent.
    pub fn remove_port(&mut self, port: u16) -> io::Result<()> {
        match self.ports.remove(&port.to_be()) {
            Ok(()) => Ok(()),
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
            Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
            Err(e) => Err(to_io(&format!("removing port {port}"), e)),
        }
    }

    /// The steered ports, host order, sorted.
    pub fn ports(&self) -> io::Result<Vec<u16>> {
        let mut ports = self
            .ports
            .keys()
            .map(|k| k.map(u16::from_be))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| to_io("listing ports", e))?;
        ports.sort_unstable();
        Ok(ports)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> io::Result<XdpStats> {
        let mut totals = [0u64; STAT_COUNT as usize];
        for (index, total) in (0..STAT_COUNT).zip(totals.iter_mut()) {
            let per_cpu = self
                .stats
                .get(&index, 0)
                .map_err(|e| to_io(&format!("reading STATS[{index}]"), e))?;
            *total = per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
        }
        Ok(XdpStats {
            steered: totals[STAT_STEERED as usize],
            passed: totals[STAT_PASSED as usize],
            malformed: totals[STAT_MALFORMED as usize],
            no_socket: totals[STAT_NO_SOCKET as usize],
            not_local: totals[STAT_NOT_LOCAL as usize],
        })
    }

    /// Makes `addrs` the set of local addresses transport messages are
    /// steered for. New addresses go in before gone ones go out, so an
    /// address present throughout is never missing in between. An address
    /// that does not fit (the maps hold 4,096 of each family) is left out
    /// and reported in the error: its traffic then takes the kernel's UDP
    /// socket, which is slower but correct.
    pub fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> io::Result<()> {
        let want: HashSet<IpAddr> = addrs.iter().map(|a| a.to_canonical()).collect();
        let mut first_err = None;
        for &addr in want.difference(&self.locals.clone()) {
            let res = match addr {
                IpAddr::V4(a) => self.local4.insert(u32::from_ne_bytes(a.octets()), 1, 0),
                IpAddr::V6(a) => self.local6.insert(a.octets(), 1, 0),
            };
            match res {
                Ok(()) => {
                    self.locals.insert(addr);
                }
                Err(e) => {
                    first_err
                        .get_or_insert_with(|| to_io(&format!("adding local address {addr}"), e));
                }
            }
        }
        let gone: Vec<IpAddr> = self.locals.difference(&want).copied().collect();
        for addr in gone {
            let res = match addr {
                IpAddr::V4(a) => self.local4.remove(&u32::from_ne_bytes(a.octets())),
                IpAddr::V6(a) => self.local6.remove(&a.octets()),
            };
            match res {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {
                    self.locals.remove(&addr);
                }
                Err(e) if map_errno(&e) == Some(libc::ENOENT) => {
                    self.locals.remove(&addr);
                }
                Err(e) => {
                    first_err
                        .get_or_insert_with(|| to_io(&format!("removing local address {addr}"), e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The local addresses steered for, sorted.
    pub fn local_addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.locals.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (rx queue 0)
    /// and returns the XDP action. Frames shorter than an Ethernet header are
    /// refused by the kernel (`EINVAL`) before the program runs.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        let result = self
            .program()?
            .test_run(opts)
            .map_err(|e| to_io("BPF_PROG_TEST_RUN", e))?;
        Ok(result.return_value)
    }

    /// Detaches the program now (dropping the handle does the same).
    pub fn detach(&mut self) -> io::Result<()> {
        if let Some(link) = self.link.take() {
            self.program_mut()?
                .detach(link)
                .map_err(|e| to_io("detaching", e))?;
        }
        Ok(())
    }
}

impl Drop for XdpSteering {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the link fd is closed with
        // `ebpf` regardless, which detaches a bpf_link attachment.
        let _ = self.detach();
    }
}

/// XDP actions as returned by the program.
pub mod action {
    /// `XDP_ABORTED`
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`
    pub const DROP: u32 = 1;
    /// `XDP_PASS`
    pub const PASS: u32 = 2;
    /// `XDP_TX`
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`
    pub const REDIRECT: u32 = 4;
}

// ---------------------------------------------------------------------------
// Stale program removal over rtnetlink.

/// The error `attach` returns when another program, not ours, is attached
/// to the interface; it was left as it was.
#[derive(Debug)]
struct ForeignProgram {
    iface: String,
    program: StaleProgram,
}

impl fmt::Display for ForeignProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.program;
        let name = if p.name.is_empty() {
            "name unknown: no CAP_SYS_ADMIN to look it up"
        } else {
            &p.name
        };
        write!(
            f,
            "{}: another XDP program is attached (id {}, {name}, {} mode); \
             it is not ours, so it is left alone",
            self.iface, p.id, p.mode
        )
    }
}

impl StdError for ForeignProgram {}

/// The program that made [`XdpSteering::attach`] fail because it is not ours
/// and was left attached; `None` for any other error.
pub fn foreign_program(err: &io::Error) -> Option<&StaleProgram> {
    err.get_ref()?
        .downcast_ref::<ForeignProgram>()
        .map(|f| &f.program)
}

/// What the kernel says of program `id`: its name, whether it is ours (see
/// the module documentation), and an fd of it when it could be opened.
/// Looking a program up by id needs CAP_SYS_ADMIN; without it nothing is
/// known and the program counts as not ours.
fn identify(id: u32) -> (String, bool, Option<aya::programs::ProgramFd>) {
    let Some(info) = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
    else {
        return (String::new(), false, None);
    };
    let name = info.name_as_str().unwrap_or_default().to_owned();
    let map_names: Vec<String> = info
        .map_ids()
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| aya::maps::MapInfo::from_id(m).ok())
        .filter_map(|m| m.name_as_str().map(str::to_owned))
        .collect();
    let ours = name == PROGRAM_NAME
        && [PORTS_MAP, XSKS_MAP]
            .iter()
            .all(|want| map_names.iter().any(|m| m == want));
    (name, ours, info.fd().ok())
}

/// Detaches the stale programs of ours attached to `ifindex` through netlink
/// (in SKB or driver mode) and returns them. Fails, detaching nothing, when
/// any attached program is not ours ([`foreign_program`] tells), and with
/// `EBUSY` when one of ours is held by a live `bpf_link` (another running
/// data plane).
fn remove_stale_programs(iface: &str, ifindex: u32) -> io::Result<Vec<StaleProgram>> {
    let socket = netlink::Socket::open()?;
    let attached = socket.xdp_programs(ifindex)?;
    let mut ours = Vec::new();
    for (mode, id) in attached {
        if mode == XdpAttachMode::Hardware {
            continue; // offloaded programs do not conflict with ours
        }
        let (name, is_ours, fd) = identify(id);
        let program = StaleProgram { id, name, mode };
        if !is_ours {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                ForeignProgram {
                    iface: iface.to_owned(),
                    program,
                },
            ));
        }
        ours.push((program, fd));
    }
    let mut removed = Vec::new();
    for (program, fd) in ours {
        let StaleProgram { id, ref name, mode } = program;
        // Detach with the program's fd as the expected one, so the detach is
        // compare-and-swap: it removes this program, never one that another
        // tool attached since we looked.
        let expected = fd.as_ref().map(|fd| fd.as_fd().as_raw_fd());
        match socket.detach_xdp(ifindex, mode, expected) {
            Ok(()) => removed.push(program),
            Err(e) if errno_of(&e) == Some(libc::EBUSY) => {
                return Err(context(
                    e,
                    format_args!(
                        "XDP program {id} ({name}) in {mode} mode is held by a live bpf_link \
                         (another running process); refusing to replace it"
                    ),
                ));
            }
            Err(e) => {
                return Err(context(
                    e,
                    format_args!("detaching XDP program {id} ({name}, {mode} mode)"),
                ))
            }
        }
    }
    Ok(removed)
}

mod netlink {
    use super::*;
    // The attribute walk and alignment the route/neighbour client uses.
    use crate::netlink::{align4, attrs_of as attrs};

    const NETLINK_ROUTE: libc::c_int = 0;
    const NETLINK_CAP_ACK: libc::c_int = 10;
    const NETLINK_EXT_ACK: libc::c_int = 11;

    const NLMSG_HDRLEN: usize = 16;
    const IFINFOMSG_LEN: usize = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const RTM_SETLINK: u16 = 19;
    const NLA_F_NESTED: u16 = 1 << 15;

    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_FD: u16 = 1;
    const IFLA_XDP_FLAGS: u16 = 3;
    const IFLA_XDP_DRV_PROG_ID: u16 = 5;
    const IFLA_XDP_SKB_PROG_ID: u16 = 6;
    const IFLA_XDP_HW_PROG_ID: u16 = 7;
    const IFLA_XDP_EXPECTED_FD: u16 = 8;
    const XDP_FLAGS_REPLACE: u32 = 1 << 4;

    /// Appends one attribute (header + payload, padded to 4 bytes).
    fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(align4(buf.len()), 0);
    }

    fn u32_of(payload: &[u8]) -> Option<u32> {
        Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
    }

    pub(super) struct Socket {
        fd: OwnedFd,
        seq: std::cell::Cell<u32>,
    }

    impl Socket {
        pub(super) fn open() -> io::Result<Self> {
            // SAFETY: plain socket(2) call with constant arguments.
            let raw = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    NETLINK_ROUTE,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
                let one: libc::c_int = 1;
                // SAFETY: `one` is a valid c_int for the duration of the call and
                // its size is passed; failure (old kernels) is harmless.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_NETLINK,
                        opt,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
            Ok(Self {
                fd,
                seq: std::cell::Cell::new(1),
            })
        }

        fn message(&self, kind: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> (u32, Vec<u8>) {
            let seq = self.seq.get();
            self.seq.set(seq.wrapping_add(1));
            let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attrs.len();
            let mut buf = Vec::with_capacity(len);
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&flags.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel
                                                        // struct ifinfomsg { family, pad, type, index, flags, change }
            buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
            buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(attrs);
            (seq, buf)
        }

        /// Sends `msg` and returns the payload of the first reply with `seq`
        /// (for an ack: empty). Netlink errors become `io::Error`s carrying
        /// the errno and the kernel's extended-ack text.
        fn transact(&self, seq: u32, msg: &[u8]) -> io::Result<Vec<u8>> {
            // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
            let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // SAFETY: `msg` and `kernel` are valid for the given lengths for
            // the duration of the call.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe {
                    libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n < 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
                let mut rest = &buf[..n as usize];
                while rest.len() >= NLMSG_HDRLEN {
                    let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                    if len < NLMSG_HDRLEN || len > rest.len() {
                        break;
                    }
                    let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                    let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                    let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                    let body = &rest[NLMSG_HDRLEN..len];
                    rest = &rest[align4(len).min(rest.len())..];
                    if msg_seq != seq {
                        continue;
                    }
                    match kind {
                        NLMSG_ERROR => return ack_result(flags, body),
                        NLMSG_DONE => return Ok(Vec::new()),
                        _ => return Ok(body.to_vec()),
                    }
                }
            }
        }

        /// The XDP programs attached to `ifindex`, by mode.
        pub(super) fn xdp_programs(&self, ifindex: u32) -> io::Result<Vec<(XdpAttachMode, u32)>> {
            let (seq, msg) = self.message(RTM_GETLINK, NLM_F_REQUEST, ifindex, &[]);
            let body = self.transact(seq, &msg)?;
            let mut found = Vec::new();
            if body.len() < IFINFOMSG_LEN {
                return Ok(found);
            }
            for (kind, payload) in attrs(&body[IFINFOMSG_LEN..]) {
                if kind != IFLA_XDP {
                    continue;
                }
                for (xkind, xpayload) in attrs(payload) {
                    let mode = match xkind {
                        IFLA_XDP_SKB_PROG_ID => XdpAttachMode::Skb,
                        IFLA_XDP_DRV_PROG_ID => XdpAttachMode::Driver,
                        IFLA_XDP_HW_PROG_ID => XdpAttachMode::Hardware,
                        _ => continue,
                    };
                    if let Some(id) = u32_of(xpayload).filter(|&id| id != 0) {
                        found.push((mode, id));
                    }
                }
            }
            Ok(found)
        }

        /// Detaches the XDP program attached to `ifindex` in `mode`; with
        /// `expected`, only if that is still the program attached.
        pub(super) fn detach_xdp(
            &self,
            ifindex: u32,
            mode: XdpAttachMode,
            expected: Option<RawFd>,
        ) -> io::Result<()> {
            let mut nested = Vec::new();
            put_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
            let mut flags = mode.netlink_flag();
            if let Some(fd) = expected {
                flags |= XDP_FLAGS_REPLACE;
                put_attr(&mut nested, IFLA_XDP_EXPECTED_FD, &fd.to_ne_bytes());
            }
            put_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
            let mut attrs_buf = Vec::new();
            put_attr(&mut attrs_buf, IFLA_XDP | NLA_F_NESTED, &nested);
            let (seq, msg) =
                self.message(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex, &attrs_buf);
            self.transact(seq, &msg).map(drop)
        }
    }

    /// Interprets the body of an NLMSG_ERROR message.
    fn ack_result(flags: u16, body: &[u8]) -> io::Result<Vec<u8>> {
        let code = body
            .get(..4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
            .unwrap_or(-libc::EPROTO);
        if code == 0 {
            return Ok(Vec::new());
        }
        let errno = -code;
        let mut text = String::from("rtnetlink");
        if flags & NLM_F_ACK_TLVS != 0 {
            // error code, then the echoed request header (payload capped).
            let orig_len = body
                .get(4..8)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize)
                .unwrap_or(0);
            let echoed = if flags & 0x100 != 0 {
                NLMSG_HDRLEN
            } else {
                align4(orig_len)
            };
            if let Some(tlvs) = body.get(4 + echoed..) {
                for (kind, payload) in attrs(tlvs) {
                    if kind == NLMSGERR_ATTR_MSG {
                        let msg = payload.split(|&b| b == 0).next().unwrap_or_default();
                        text = format!("{text}: {}", String::from_utf8_lossy(msg));
                    }
                }
            }
        }
        Err(os_error(errno, text))
    }

    // RTM_NEWLINK is the expected GETLINK reply type; kept for readers.
    const _: u16 = RTM_NEWLINK;
}
