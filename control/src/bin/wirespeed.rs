//! `wirespeed [-f|--foreground] [-v|--verbose] IFACE`: a drop-in for
//! `wireguard-go IFACE`. Creates the TUN interface and the UAPI socket
//! /var/run/wireguard/IFACE.sock, starts the data plane process, and
//! detaches once all of it is ready (unless -f or WG_PROCESS_FOREGROUND=1).
//! `wirespeed --detach IFACE` makes the control process of IFACE leave
//! without tearing anything down, for a restart that loses no packet.
//! `wirespeed capture IFACE -w FILE ...` writes a running interface's
//! AF_XDP traffic to a pcap file (see `control::capture`).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use control::daemon::{detach, Daemon, LogLevel, Options};
use dataplane::sdnotify;

const USAGE: &str = "usage: wirespeed [-f|--foreground] [-v|--verbose] [--workers N] [--backend B]
                 [--metrics ADDR:PORT] INTERFACE
       wirespeed --detach INTERFACE
       wirespeed --host-dataplane [-v|--verbose] [--workers N] [--backend B]
                 [--exit-when-idle]
       wirespeed capture INTERFACE -w FILE [OPTIONS]   (see wirespeed capture --help)
       wirespeed --version

Creates INTERFACE (a TUN device) and its UAPI socket /var/run/wireguard/INTERFACE.sock,
then runs in the background; configure it with wg(8) or wg-quick(8).
  -f, --foreground   stay in the foreground (also WG_PROCESS_FOREGROUND=1)
  -v, --verbose      log every handshake decision (also LOG_LEVEL=debug)
  --workers N        data plane worker threads (default: one per core)
  --backend B        auto (default), xdp or udp (also WIRESPEED_BACKEND): auto uses
                     AF_XDP on the Ethernet uplinks when it can and says why not
  --metrics ADDR:PORT  serve Prometheus metrics at http://ADDR:PORT/metrics (also
                     WIRESPEED_METRICS); off unless asked for
  --detach           make the running control process of INTERFACE exit and leave
                     the interface, data plane and sessions running (SIGUSR2 does
                     the same); `wirespeed INTERFACE` re-attaches
  --host-dataplane   run one data plane for every wirespeed interface of this network
                     namespace, in the foreground, listening for control processes on
                     /run/wirespeed/dataplane.sock (root only; WIRESPEED_DATAPLANE_SOCKET
                     names another). `wirespeed INTERFACE` attaches to the one that
                     answers there and starts one if none does (WIRESPEED_DATAPLANE=own:
                     a data plane of the interface's own instead). Its tenants use UDP
                     sockets, or AF_XDP (--backend xdp or auto) on the uplinks that
                     WIRESPEED_XDP_IFACES names or, without it, on those the tenants'
                     peers are reached through; an XDP attacher process attaches them,
                     so the host data plane keeps its whole sandbox
  --exit-when-idle   with --host-dataplane: exit once the last tenant is gone (the
                     one a control starts does)";

fn log_level(verbose: bool) -> LogLevel {
    let env = std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("WIRESPEED_LOG"))
        .unwrap_or_default();
    match env.as_str() {
        _ if verbose => LogLevel::Debug,
        "debug" | "verbose" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "error" | "silent" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// Forks; the parent waits until the child reports readiness (one byte 0)
/// or an error message, and exits with the matching status.
fn detach() -> Result<Option<OwnedFd>, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: called before any thread is started, so the child holds the
    // only thread and may continue running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if pid > 0 {
        drop(w);
        let mut msg = Vec::new();
        let _ = std::fs::File::from(r).read_to_end(&mut msg);
        if msg.first() == Some(&0) {
            std::process::exit(0);
        }
        let text = String::from_utf8_lossy(&msg);
        eprintln!(
            "{}",
            if text.is_empty() {
                "wirespeed: the daemon died during start-up"
            } else {
                &text
            }
        );
        std::process::exit(1);
    }
    drop(r);
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    Ok(Some(w))
}

fn quiet_stdio(keep_stderr: bool) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        let n = null.as_raw_fd();
        // SAFETY: dup2 onto the standard descriptors, which stay open.
        unsafe {
            libc::dup2(n, 0);
            libc::dup2(n, 1);
            if !keep_stderr {
                libc::dup2(n, 2);
            }
        }
    }
}

fn main() -> ExitCode {
    // First of all, in both modes (the data plane is this binary again, and
    // exec makes a process dumpable anew): no key of ours in a core file or
    // in reach of ptrace and /proc/PID/mem.
    if let Err(e) = dataplane::coredump::forbid_core_dumps() {
        eprintln!("wirespeed: cannot disable core dumps: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--dataplane") {
        return dataplane_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--host-dataplane") {
        return host_dataplane_main(&args[1..]);
    }
    // `wirespeed capture` alone still starts an interface named "capture"
    // (wg-quick passes nothing but the name).
    if args.first().map(String::as_str) == Some("capture") && args.len() > 1 {
        return capture_main(&args[1..]);
    }
    let mut foreground = std::env::var("WG_PROCESS_FOREGROUND").as_deref() == Ok("1");
    let mut verbose = false;
    let mut workers = 0usize;
    let mut backend = std::env::var("WIRESPEED_BACKEND").unwrap_or_else(|_| "auto".into());
    // wg-quick starts us with only the interface name: the environment is
    // how it asks for metrics. An empty value means off.
    let mut metrics = match std::env::var("WIRESPEED_METRICS") {
        Ok(v) if !v.trim().is_empty() => match control::metrics::parse_addr(&v) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("wirespeed: WIRESPEED_METRICS: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let mut iface = None;
    let mut hand_over = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" => {
                println!("wirespeed {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-f" | "--foreground" => foreground = true,
            "--detach" => hand_over = true,
            "--backend" => match it.next() {
                Some(b) if b.parse::<dataplane::process::BackendChoice>().is_ok() => {
                    backend = b.clone()
                }
                _ => {
                    eprintln!("wirespeed: --backend takes auto, xdp or udp\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--metrics" => match it.next().map(|a| control::metrics::parse_addr(a)) {
                Some(Ok(a)) => metrics = Some(a),
                Some(Err(e)) => {
                    eprintln!("wirespeed: --metrics: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("wirespeed: --metrics needs ADDR:PORT\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-v" | "--verbose" => verbose = true,
            "--workers" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => workers = n,
                None => {
                    eprintln!("wirespeed: --workers needs a number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            s if s.starts_with('-') => {
                eprintln!("wirespeed: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            s if iface.is_none() => iface = Some(s.to_string()),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(iface) = iface else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if hand_over {
        return detach_main(&iface);
    }
    let log = log_level(verbose);
    let ready_pipe = if foreground {
        None
    } else {
        match detach() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("wirespeed: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let started = Daemon::start(Options {
        iface: iface.clone(),
        log,
        workers,
        backend,
        metrics,
    });
    match started {
        Ok((daemon, uapi)) => {
            if let Some(w) = ready_pipe {
                let _ = std::fs::File::from(w).write_all(&[0]);
                quiet_stdio(log >= LogLevel::Debug || std::env::var_os("LOG_LEVEL").is_some());
            } else if let Err(e) = sdnotify::ready() {
                // The unit's start then times out, and says why.
                eprintln!("wirespeed({iface}): cannot notify the service manager: {e}");
            }
            match daemon.run(uapi) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wirespeed({iface}): {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            let msg = format!("wirespeed: cannot start {iface}: {e}");
            match ready_pipe {
                Some(w) => {
                    let _ = std::fs::File::from(w).write_all(msg.as_bytes());
                }
                None => eprintln!("{msg}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `wirespeed --detach IFACE`: succeeds once control has left and the
/// interface is still there.
fn detach_main(iface: &str) -> ExitCode {
    match detach::request(iface, std::time::Duration::from_secs(10)) {
        Ok(pid) if detach::interface_exists(iface) => {
            println!(
                "wirespeed: control process {pid} of {iface} detached; the interface and its \
                 data plane keep running, `wirespeed {iface}` re-attaches"
            );
            ExitCode::SUCCESS
        }
        Ok(pid) => {
            eprintln!(
                "wirespeed: control process {pid} of {iface} had no data plane to hand over \
                 and stopped; the interface is gone"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wirespeed: cannot detach {iface}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wirespeed --host-dataplane [-v] [--workers N] [--backend B]`: the
/// host data plane, in the foreground (systemd or a control process that
/// started it detaches it).
fn host_dataplane_main(args: &[String]) -> ExitCode {
    let mut verbose = false;
    let mut exit_when_idle = false;
    let mut workers = 0usize;
    let mut backend = std::env::var("WIRESPEED_BACKEND").unwrap_or_else(|_| "auto".into());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-v" | "--verbose" => verbose = true,
            "--exit-when-idle" => exit_when_idle = true,
            "--workers" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => workers = n,
                None => {
                    eprintln!("wirespeed: --workers needs a number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--backend" => match it.next() {
                Some(b) => backend = b.clone(),
                None => {
                    eprintln!("wirespeed: --backend takes auto, xdp or udp\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("wirespeed: --host-dataplane: unexpected {a}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let backend = match backend.parse::<dataplane::process::BackendChoice>() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wirespeed --host-dataplane: {e}");
            return ExitCode::from(2);
        }
    };
    dataplane::logger::init(dataplane::logger::level_from_name(
        log_level(verbose).name(),
    ));
    if workers == 0 {
        workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    let opts = dataplane::process::host::HostOptions {
        socket: dataplane::process::host::socket_path(),
        workers,
        backend,
        exit_when_idle,
    };
    match dataplane::process::host::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wirespeed --host-dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `a,b,c` as descriptor numbers; `-` or empty for none.
fn parse_fd_list(list: &str) -> Option<Vec<i32>> {
    if list.is_empty() || list == "-" {
        return Some(Vec::new());
    }
    list.split(',')
        .map(|f| f.parse::<i32>().ok().filter(|&n| n > 2))
        .collect()
}

/// `wirespeed capture ...`.
fn capture_main(args: &[String]) -> ExitCode {
    use control::capture::{Args, USAGE};
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wirespeed capture: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match control::capture::run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wirespeed capture: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `wirespeed --dataplane IFACE SHM WORKERS WAKE_FD [BACKEND [TUN_FDS [LOG_LEVEL]]]`,
/// started by the daemon (which passes the level it runs with: `-v` or
/// LOG_LEVEL; without one, LOG_LEVEL as control reads it).
fn dataplane_main(args: &[String]) -> ExitCode {
    let level = match args.get(6) {
        Some(l) => l.clone(),
        None => std::env::var("LOG_LEVEL")
            .or_else(|_| std::env::var("WIRESPEED_LOG"))
            .unwrap_or_default(),
    };
    dataplane::logger::init(dataplane::logger::level_from_name(&level));
    let backend = match args.get(4).map(|b| b.parse()) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            eprintln!("wirespeed --dataplane: {e}");
            return ExitCode::from(2);
        }
        None => dataplane::process::BackendChoice::Auto,
    };
    let (Some(iface), Some(shm), Some(workers), Some(wake)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("wirespeed --dataplane: internal mode, started by the daemon");
        return ExitCode::from(2);
    };
    // Comma-separated numbers of the inherited TUN queues, if any.
    let tun_fds = match args.get(5).map(|l| parse_fd_list(l)) {
        Some(Some(v)) => v,
        Some(None) => {
            eprintln!("wirespeed --dataplane: bad TUN queue list {:?}", args[5]);
            return ExitCode::from(2);
        }
        None => Vec::new(),
    };
    let opts = dataplane::process::Options {
        iface: iface.clone(),
        shm_path: shm.into(),
        workers: workers.parse().unwrap_or(1),
        wake_fd: wake.parse().ok(),
        backend,
        tun_fds,
    };
    match dataplane::process::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wirespeed-dataplane({iface}): {e}");
            ExitCode::FAILURE
        }
    }
}
