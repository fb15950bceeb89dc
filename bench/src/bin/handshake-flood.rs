//! handshake-flood: handshake initiations with a valid (or broken) mac1 from
//! spoofed IPv4 sources at a fixed rate, through a raw socket (root). Meant
//! to run inside the flooder namespace of `bench/scripts/handshake-flood.sh`,
//! whose only route leads to the server under test.
//!
//!   handshake-flood --target IP:PORT --pubkey BASE64 [--rate 50000]
//!       [--secs 10] [--first-source 198.18.0.0] [--sources 65536]
//!       [--invalid-mac1 1]

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use control::keys::PublicKey;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use wirespeed_bench::handshake_flood::{run, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match go(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handshake-flood: {e}");
            ExitCode::FAILURE
        }
    }
}

fn go(args: &[String]) -> Result<(), String> {
    let mut flags = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let k = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected a --flag, got {k:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
        flags.insert(k.to_string(), v.clone());
    }
    let get = |k: &str| flags.get(k).ok_or_else(|| format!("--{k} is required"));
    let num = |k: &str, d: u64| -> Result<u64, String> {
        flags.get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|e| format!("--{k} {v:?}: {e}"))
        })
    };
    let o = Options {
        target: get("target")?
            .parse()
            .map_err(|e| format!("--target: {e}"))?,
        server_public: *PublicKey::from_base64(get("pubkey")?)
            .map_err(|e| format!("--pubkey: {e:?}"))?
            .as_bytes(),
        invalid_mac1: num("invalid-mac1", 0)? != 0,
        first_source: flags
            .get("first-source")
            .map_or("198.18.0.0", String::as_str)
            .parse()
            .map_err(|e| format!("--first-source: {e}"))?,
        sources: num("sources", 65536)?.clamp(1, u32::MAX as u64) as u32,
        rate: num("rate", 50_000)?.clamp(1, u32::MAX as u64) as u32,
        duration: Duration::from_secs(num("secs", 10)?),
    };
    let mut rng = ChaCha20Rng::from_entropy();
    let r = run(&o, &mut rng).map_err(|e| e.to_string())?;
    println!(
        "sent={} secs={:.2} rate={:.0}",
        r.sent,
        r.elapsed.as_secs_f64(),
        r.sent as f64 / r.elapsed.as_secs_f64()
    );
    Ok(())
}
