//! packet-rate: the generator and the no-crypto forwarder of the packet-rate
//! bench. `bench/scripts/packet-rate.sh` sets up the namespaces and runs
//! both; see there for a whole run.
//!
//!   packet-rate forward --iface VETH --tun NAME --port P [--cpus 0,1]
//!   packet-rate generate --counter SYSFS --netns PATH --target IP:PORT
//!       --bind IP [--uapi SOCK] [--peers N] [--size B] [--count M]
//!       [--cpus 1] [--warmup-ms 500] [--duration-ms 3000]
//!       [--watch-pid PID --watch-threads NAME_PREFIX]

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use wirespeed_bench::packet_rate::busy::Threads;
use wirespeed_bench::packet_rate::{forward, generate};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packet-rate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = args
        .split_first()
        .ok_or("usage: packet-rate forward|generate ...")?;
    let mut flags = HashMap::new();
    let mut it = rest.iter();
    while let Some(k) = it.next() {
        let k = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected a --flag, got {k:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
        flags.insert(k.to_string(), v.clone());
    }
    let get = |k: &str| {
        flags
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required"))
    };
    let num = |k: &str, d: u64| -> Result<u64, String> {
        flags.get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|e| format!("--{k} {v:?}: {e}"))
        })
    };
    let cpus = flags
        .get("cpus")
        .map(|s| {
            s.split(',')
                .map(|c| {
                    c.trim()
                        .parse::<usize>()
                        .map_err(|e| format!("--cpus {s:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    match cmd.as_str() {
        "forward" => forward::run(&forward::Options {
            iface: get("iface")?,
            tun: get("tun")?,
            port: num("port", 51820)? as u16,
            cpus,
        })
        .map_err(|e| e.to_string()),
        "generate" => {
            let o = generate::Options {
                counter: get("counter")?,
                netns: get("netns")?,
                uapi: flags.get("uapi").cloned(),
                target: get("target")?
                    .parse()
                    .map_err(|e| format!("--target: {e}"))?,
                bind: get("bind")?.parse().map_err(|e| format!("--bind: {e}"))?,
                peers: num("peers", 1)?.max(1) as usize,
                size: num("size", 64)? as usize,
                count: num("count", 1_000_000)? as usize,
                cpus,
                warmup: Duration::from_millis(num("warmup-ms", 500)?),
                duration: Duration::from_millis(num("duration-ms", 3000)?),
                watch: match flags.get("watch-pid") {
                    Some(p) => Some(Threads::new(
                        p.parse().map_err(|e| format!("--watch-pid {p:?}: {e}"))?,
                        flags.get("watch-threads").map_or("", String::as_str),
                    )),
                    None => None,
                },
            };
            let r = generate::run(&o).map_err(|e| e.to_string())?;
            // One line for the script: delivered and offered Mpps, the
            // receiving threads' busy CPUs, the window.
            println!(
                "delivered_mpps={:.4} offered_mpps={:.4} busy_cores={:.3} window_s={:.2}",
                r.delivered_pps / 1e6,
                r.offered_pps / 1e6,
                r.busy_cores.unwrap_or(0.0),
                r.window.as_secs_f64()
            );
            Ok(())
        }
        other => Err(format!("unknown command {other:?} (forward or generate)")),
    }
}
