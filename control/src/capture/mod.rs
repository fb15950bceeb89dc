//! `wirespeed capture`: a pcap file of the frames the data plane's AF_XDP
//! sockets receive and send, which `tcpdump -i UPLINK` on this host cannot
//! see. It attaches to the interface's shared region, turns capture on with
//! its filter (see `dataplane::shm::capture`), drains the workers' capture
//! rings into the file, and turns capture off again after `--count`
//! frames, on SIGINT/SIGTERM, or when the data plane exits.

pub mod pcap;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::shm::capture::{self, Filter};
use dataplane::shm::layout::{
    CaptureRecord, BACKEND_XDP, CAPTURE_DATA_MAX, CAPTURE_RX, CAPTURE_TX,
};
use dataplane::shm::{pid_alive, region_path, stats, Region};

use pcap::PcapWriter;

pub const USAGE: &str =
    "usage: wirespeed capture INTERFACE -w FILE [-i UPLINK] [-c COUNT] [-s SNAPLEN]
                 [--direction rx|tx|both] [--host ADDR] [--port PORT]

Writes the frames that INTERFACE's data plane receives and sends on its AF_XDP
sockets (invisible to tcpdump on this host) to FILE in pcap format (- for
standard output), until COUNT frames are written or it is interrupted.
Run it as root in the network namespace where INTERFACE was created.
  -w FILE            where to write (- : standard output, e.g. | tcpdump -r -)
  -i, --uplink NAME  only frames of this uplink (default: every uplink)
  -c, --count N      stop after N frames (default: until SIGINT/SIGTERM)
  -s, --snaplen N    keep at most N bytes of each frame (default and most: 4064)
  --direction D      rx, tx or both (default)
  --host ADDR        only frames from or to this IP address
  --port PORT        only frames from or to this UDP port";

/// What `wirespeed capture` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub iface: String,
    /// None: standard output.
    pub out: Option<PathBuf>,
    pub uplink: Option<String>,
    pub count: Option<u64>,
    pub snaplen: u32,
    pub directions: u32,
    pub host: Option<IpAddr>,
    pub port: u16,
}

impl Args {
    /// Parses the arguments after `capture`.
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut a = Args {
            iface: String::new(),
            out: None,
            uplink: None,
            count: None,
            snaplen: CAPTURE_DATA_MAX as u32,
            directions: CAPTURE_RX | CAPTURE_TX,
            host: None,
            port: 0,
        };
        let mut out = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |what: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs {what}"))
            };
            match arg.as_str() {
                "-w" => out = Some(value("a file name")?),
                "-i" | "--uplink" => a.uplink = Some(value("an interface name")?),
                "-c" | "--count" => {
                    a.count = Some(
                        value("a number")?
                            .parse()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| format!("{arg} needs a positive number"))?,
                    )
                }
                "-s" | "--snaplen" => {
                    // tcpdump's -s 0 means "whole frames".
                    a.snaplen = match value("a number")?.parse::<u32>() {
                        Ok(0) => CAPTURE_DATA_MAX as u32,
                        Ok(n) => n.min(CAPTURE_DATA_MAX as u32),
                        Err(_) => return Err(format!("{arg} needs a number")),
                    }
                }
                "--direction" => {
                    a.directions = match value("rx, tx or both")?.as_str() {
                        "rx" | "in" => CAPTURE_RX,
                        "tx" | "out" => CAPTURE_TX,
                        "both" | "inout" => CAPTURE_RX | CAPTURE_TX,
                        d => return Err(format!("--direction: {d:?} is not rx, tx or both")),
                    }
                }
                "--host" => {
                    let v = value("an IP address")?;
                    a.host = Some(
                        v.parse()
                            .map_err(|_| format!("--host: {v:?} is not an IP address"))?,
                    );
                }
                "--port" => {
                    let v = value("a port")?;
                    a.port = v
                        .parse()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| format!("--port: {v:?} is not a port"))?;
                }
                s if s.starts_with('-') && s != "-" => return Err(format!("unknown option {s}")),
                s if a.iface.is_empty() => a.iface = s.to_string(),
                s => return Err(format!("unexpected argument {s:?}")),
            }
        }
        if a.iface.is_empty() {
            return Err("which interface?".into());
        }
        match out {
            None => return Err("-w FILE is needed (- for standard output)".into()),
            Some(f) if f == "-" => {}
            Some(f) => a.out = Some(f.into()),
        }
        Ok(a)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What a capture ended with, as tcpdump reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub captured: u64,
    /// Frames that matched but found their worker's capture ring full.
    pub dropped: u64,
}

/// Runs the capture described by `args`; progress and problems go to
/// standard error.
pub fn run(args: &Args) -> io::Result<Summary> {
    let path = region_path(&args.iface)?;
    let region = Region::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no wirespeed data plane for {} in this network namespace ({}: {e})",
                args.iface,
                path.display()
            ),
        )
    })?;
    let ifindex = match &args.uplink {
        None => 0,
        Some(name) => uplink_index(&region, name)?,
    };
    let filter = Filter {
        snaplen: args.snaplen,
        directions: args.directions,
        ifindex,
        host: args.host,
        port: args.port,
    };
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(File::create(p)?),
        None => Box::new(io::stdout().lock()),
    };
    let mut pcap = PcapWriter::new(BufWriter::new(out), filter.snaplen)?;
    pcap.flush()?;
    if region.header().backend.load(Ordering::Acquire) != BACKEND_XDP {
        eprintln!(
            "wirespeed capture: {} uses no AF_XDP socket now (its traffic is on UDP sockets, \
             where tcpdump -i UPLINK sees it); waiting in case one is attached",
            args.iface
        );
    }
    // SAFETY: async-signal-safe handlers that only store an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let me = std::process::id();
    let dropped_before = dropped(&region);
    let session = capture::start(&region, &filter, me)?;
    eprintln!(
        "wirespeed capture: listening on {} ({}), snapshot length {} bytes",
        args.iface,
        args.uplink.as_deref().unwrap_or("every uplink"),
        filter.snaplen
    );
    let result = drain_until_done(&region, session, args.count, &mut pcap);
    capture::stop(&region, me);
    let summary = Summary {
        captured: result?,
        dropped: dropped(&region).saturating_sub(dropped_before),
    };
    pcap.flush()?;
    eprintln!(
        "{} packets captured\n{} packets dropped by the capture buffer",
        summary.captured, summary.dropped
    );
    Ok(summary)
}

/// The uplink's interface index: from the data plane's own table (right
/// whatever namespace this runs in), else this namespace's interface.
fn uplink_index(region: &Region, name: &str) -> io::Result<u32> {
    let known = stats::uplinks(region);
    if let Some(u) = known.iter().find(|u| u.name == name) {
        return Ok(u.ifindex);
    }
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no uplink {name} (the data plane's AF_XDP uplinks: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known
                        .iter()
                        .map(|u| u.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        )),
        i => Ok(i),
    }
}

fn dropped(region: &Region) -> u64 {
    (0..region.workers())
        .map(|w| region.capture_ring(w).dropped())
        .sum()
}

/// Drains the rings into `pcap` until `count` frames are written, a signal
/// came, the capture was taken away or the data plane is gone. Returns the
/// frames written.
fn drain_until_done<W: Write>(
    region: &Region,
    session: u64,
    count: Option<u64>,
    pcap: &mut PcapWriter<W>,
) -> io::Result<u64> {
    let mut written = 0u64;
    let mut batch: Vec<(CaptureRecord, Vec<u8>)> = Vec::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut idle = 0u32;
    loop {
        let stopping = STOP.load(Ordering::Relaxed);
        for w in 0..region.workers() {
            let ring = region.capture_ring(w);
            loop {
                let mut buf = spare.pop().unwrap_or_default();
                match ring.pop(&mut buf) {
                    Some(rec) if rec.session == session => batch.push((rec, buf)),
                    // Left by an earlier capture's last batch.
                    Some(_) => spare.push(buf),
                    None => {
                        spare.push(buf);
                        break;
                    }
                }
            }
        }
        // Workers fill their rings independently: in time order per drain.
        batch.sort_by_key(|(rec, _)| rec.realtime_ns);
        let busy = !batch.is_empty();
        for (rec, buf) in batch.drain(..) {
            if count.is_none_or(|c| written < c) {
                pcap.write(rec.realtime_ns, rec.orig_len, &buf)?;
                written += 1;
            }
            spare.push(buf);
        }
        pcap.flush()?;
        if stopping || count.is_some_and(|c| written >= c) {
            return Ok(written);
        }
        let ctl = region.capture_control();
        if ctl.owner_pid.load(Ordering::Acquire) != std::process::id() {
            eprintln!("wirespeed capture: the capture was turned off by someone else");
            return Ok(written);
        }
        if busy {
            // Rings that had frames are likely to fill again at once.
            continue;
        }
        idle += 1;
        if idle.is_multiple_of(200) {
            let dp = region.header().dataplane_pid.load(Ordering::Acquire);
            if !pid_alive(dp) {
                eprintln!("wirespeed capture: the data plane exited");
                return Ok(written);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests;
