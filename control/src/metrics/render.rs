//! The shared region as Prometheus text (exposition format 0.0.4): a
//! [`Snapshot`] read from the region, and [`format`], a pure function from
//! a snapshot to text.
//!
//! Every family is written once, `# HELP` and `# TYPE` first, then all its
//! samples; counters end in `_total`; label values are escaped (`\`, `"`,
//! newline). Per-peer byte counters are exactly `wg show`'s transfer figures
//! (control's handshake bytes plus the data plane's transport bytes).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use dataplane::shm::layout::{BACKEND_UDP, BACKEND_XDP, DROP_REASONS, MAX_WORKERS};
use dataplane::shm::stats::{self, DropReason, UplinkFigures, WorkerFigures};
use dataplane::shm::Region;

use crate::keys::encode_base64_key;

/// One peer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerFigures {
    /// Base64, as `wg` prints it.
    pub public_key: String,
    /// `wg show` transfer: handshake and transport messages (UDP payload).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Transport messages only.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped: u64,
    /// Seconds since the Unix epoch; 0: no handshake yet.
    pub last_handshake_unix_s: u64,
}

/// Everything the endpoint reports, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The WireGuard interface (`wg0`).
    pub interface: String,
    pub version: String,
    /// "xdp", "udp", or "starting" before a data plane has chosen.
    pub backend: String,
    /// Sorted by public key.
    pub peers: Vec<PeerFigures>,
    /// Index = worker id.
    pub workers: Vec<WorkerFigures>,
    pub uplinks: Vec<UplinkFigures>,
    /// Control's commands that found every command ring full: dropped
    /// (handshake datagrams), and kept to be sent again (flushes).
    pub commands_dropped: u64,
    pub commands_deferred: u64,
}

impl Snapshot {
    /// Reads the region (never writes it).
    pub fn read(region: &Region, interface: &str) -> Snapshot {
        let h = region.header();
        let backend = match h.backend.load(Ordering::Acquire) {
            BACKEND_XDP => "xdp",
            BACKEND_UDP => "udp",
            _ => "starting",
        };
        let mut peers = Vec::new();
        for i in 0..region.peer_slots() {
            let slot = region.peer(i);
            if !slot.is_active() {
                continue;
            }
            let Some(info) = region.peer_info(i).figures() else {
                continue;
            };
            if info.public_key == [0; 32] {
                continue; // being added or removed right now
            }
            let c = slot.counters();
            peers.push(PeerFigures {
                public_key: encode_base64_key(&info.public_key),
                rx_bytes: info.control_rx_bytes.wrapping_add(c.rx_bytes),
                tx_bytes: info.control_tx_bytes.wrapping_add(c.tx_bytes),
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                dropped: c.dropped,
                last_handshake_unix_s: info.last_handshake_unix_ns / 1_000_000_000,
            });
        }
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        let n = (h.workers.load(Ordering::Acquire) as usize).min(MAX_WORKERS);
        Snapshot {
            interface: interface.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.to_string(),
            peers,
            workers: (0..n).map(|w| region.worker_stats(w).figures()).collect(),
            uplinks: stats::uplinks(region),
            commands_dropped: h.commands_dropped.load(Ordering::Relaxed),
            commands_deferred: h.commands_deferred.load(Ordering::Relaxed),
        }
    }
}

/// The region as Prometheus text.
pub fn render(region: &Region, interface: &str) -> String {
    format(&Snapshot::read(region, interface))
}

/// Appends `v` escaped as a label value.
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

enum Kind {
    Counter,
    Gauge,
}

/// Writes one family: HELP, TYPE, then one sample per entry of `rows`.
fn family<T>(
    out: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    rows: impl IntoIterator<Item = T>,
    sample: impl Fn(&T) -> (Vec<(&'static str, String)>, u64),
) {
    debug_assert!(matches!(kind, Kind::Gauge) || name.ends_with("_total"));
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return;
    }
    // HELP text escapes only backslash and newline.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for row in rows {
        let (labels, value) = sample(&row);
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label(v, out);
                out.push('"');
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

/// The snapshot as Prometheus text, version 0.0.4.
pub fn format(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + 1024 * s.peers.len());
    let iface = || ("interface", s.interface.clone());
    let o = &mut out;

    family(
        o,
        "wirespeed_info",
        Kind::Gauge,
        "Always 1: the interface, the data plane's backend and the version.",
        [()],
        |_| {
            (
                vec![
                    iface(),
                    ("backend", s.backend.clone()),
                    ("version", s.version.clone()),
                ],
                1,
            )
        },
    );
    family(
        o,
        "wirespeed_workers",
        Kind::Gauge,
        "Data plane worker threads.",
        [()],
        |_| (vec![iface()], s.workers.len() as u64),
    );
    family(
        o,
        "wirespeed_peers",
        Kind::Gauge,
        "Configured peers.",
        [()],
        |_| (vec![iface()], s.peers.len() as u64),
    );
    family(
        o,
        "wirespeed_control_commands_dropped_total",
        Kind::Counter,
        "Handshake datagrams the control process dropped because every data plane \
         command ring was full.",
        [()],
        |_| (vec![iface()], s.commands_dropped),
    );
    family(
        o,
        "wirespeed_control_commands_deferred_total",
        Kind::Counter,
        "Flushes of staged packets (and drops of them) that found every command ring \
         full and were sent again later.",
        [()],
        |_| (vec![iface()], s.commands_deferred),
    );

    let peer = |p: &&PeerFigures| vec![iface(), ("public_key", p.public_key.clone())];
    type PeerField = fn(&PeerFigures) -> u64;
    let peer_families: [(&str, Kind, &str, PeerField); 6] = [
        (
            "wirespeed_peer_receive_bytes_total",
            Kind::Counter,
            "Bytes received from the peer as wg show counts them: UDP payload of \
             authenticated transport and handshake messages.",
            |p| p.rx_bytes,
        ),
        (
            "wirespeed_peer_transmit_bytes_total",
            Kind::Counter,
            "Bytes sent to the peer as wg show counts them: UDP payload of transport \
             and handshake messages.",
            |p| p.tx_bytes,
        ),
        (
            "wirespeed_peer_receive_packets_total",
            Kind::Counter,
            "Transport messages received from the peer that authenticated.",
            |p| p.rx_packets,
        ),
        (
            "wirespeed_peer_transmit_packets_total",
            Kind::Counter,
            "Transport messages sent to the peer, keepalives included.",
            |p| p.tx_packets,
        ),
        (
            "wirespeed_peer_dropped_packets_total",
            Kind::Counter,
            "Packets of the peer dropped by the data plane (inner packet malformed or \
             from a source outside its AllowedIPs, no endpoint to send to).",
            |p| p.dropped,
        ),
        (
            "wirespeed_peer_last_handshake_seconds",
            Kind::Gauge,
            "Time of the last completed handshake, seconds since the Unix epoch (0: none).",
            |p| p.last_handshake_unix_s,
        ),
    ];
    for (name, kind, help, field) in peer_families {
        family(o, name, kind, help, s.peers.iter(), |p| (peer(p), field(p)));
    }

    let workers = || s.workers.iter().enumerate();
    let worker = |w: usize| vec![iface(), ("worker", w.to_string())];
    type WorkerField = fn(&WorkerFigures) -> u64;
    let worker_families: [(&str, &str, WorkerField); 8] = [
        (
            "wirespeed_worker_receive_packets_total",
            "Transport messages the worker received that authenticated.",
            |w| w.rx_packets,
        ),
        (
            "wirespeed_worker_receive_bytes_total",
            "UDP payload bytes of the transport messages counted in \
             wirespeed_worker_receive_packets_total.",
            |w| w.rx_bytes,
        ),
        (
            "wirespeed_worker_transmit_packets_total",
            "Transport messages the worker sealed and sent, keepalives included.",
            |w| w.tx_packets,
        ),
        (
            "wirespeed_worker_transmit_bytes_total",
            "UDP payload bytes of the transport messages counted in \
             wirespeed_worker_transmit_packets_total.",
            |w| w.tx_bytes,
        ),
        (
            "wirespeed_worker_handshake_messages_total",
            "Handshake messages the worker received and passed to the control process.",
            |w| w.handshake_rx,
        ),
        (
            "wirespeed_worker_events_deferred_total",
            "Events for the control process (session confirmed, endpoint moved, handshake \
             needed) that found the worker's event ring full and were sent again later.",
            |w| w.events_deferred,
        ),
        (
            "wirespeed_worker_events_lost_total",
            "Events for the control process that could not wait (one naming no peer slot of \
             the region; each peer's events always have room).",
            |w| w.events_lost,
        ),
        (
            "wirespeed_worker_udp_gso_refusals_total",
            "UDP segmentation trains the kernel refused: their datagrams were sent again one \
             per message, and that destination gets no more trains.",
            |w| w.udp_gso_refusals,
        ),
    ];
    for (name, help, field) in worker_families {
        family(o, name, Kind::Counter, help, workers(), |(i, w)| {
            (worker(*i), field(w))
        });
    }
    family(
        o,
        "wirespeed_worker_dropped_packets_total",
        Kind::Counter,
        "Packets the worker dropped, by reason.",
        workers().flat_map(|(i, w)| (0..DROP_REASONS).map(move |r| (i, r, w.drops[r]))),
        |(i, r, v)| {
            let mut l = worker(*i);
            l.push(("reason", DropReason::ALL[*r].name().to_string()));
            (l, *v)
        },
    );

    let xsk = || workers().filter(|(_, w)| w.xsk.sockets > 0);
    let xsk_families: [(&str, &str, WorkerField); 6] = [
        (
            "wirespeed_worker_xsk_rx_dropped_total",
            "Frames the kernel dropped on the worker's AF_XDP sockets (XDP_STATISTICS rx_dropped).",
            |w| w.xsk.rx_dropped,
        ),
        (
            "wirespeed_worker_xsk_rx_invalid_descriptors_total",
            "Fill ring descriptors the kernel refused (rx_invalid_descs).",
            |w| w.xsk.rx_invalid_descs,
        ),
        (
            "wirespeed_worker_xsk_rx_ring_full_total",
            "Frames dropped because the worker's rx ring was full (rx_ring_full).",
            |w| w.xsk.rx_ring_full,
        ),
        (
            "wirespeed_worker_xsk_rx_fill_ring_empty_total",
            "Times the kernel found the worker's fill ring empty (rx_fill_ring_empty_descs).",
            |w| w.xsk.rx_fill_ring_empty,
        ),
        (
            "wirespeed_worker_xsk_tx_invalid_descriptors_total",
            "Tx ring descriptors the kernel refused (tx_invalid_descs).",
            |w| w.xsk.tx_invalid_descs,
        ),
        (
            "wirespeed_worker_xsk_tx_ring_empty_total",
            "Times the kernel found the worker's tx ring empty when woken (tx_ring_empty_descs).",
            |w| w.xsk.tx_ring_empty,
        ),
    ];
    for (name, help, field) in xsk_families {
        family(o, name, Kind::Counter, help, xsk(), |(i, w)| {
            (worker(*i), field(w))
        });
    }

    let uplink = |u: &&UplinkFigures| vec![iface(), ("uplink", u.name.clone())];
    type UplinkField = fn(&UplinkFigures) -> u64;
    let xdp_families: [(&str, &str, UplinkField); 4] = [
        (
            "wirespeed_xdp_steered_packets_total",
            "Transport messages the XDP program redirected to an AF_XDP socket.",
            |u| u.xdp.steered,
        ),
        (
            "wirespeed_xdp_passed_packets_total",
            "Packets the XDP program passed to the kernel (handshakes, other traffic).",
            |u| u.xdp.passed,
        ),
        (
            "wirespeed_xdp_malformed_packets_total",
            "Packets the XDP program passed to the kernel with truncated or invalid headers.",
            |u| u.xdp.malformed,
        ),
        (
            "wirespeed_xdp_no_socket_packets_total",
            "Transport messages passed to the kernel because their rx queue had no AF_XDP socket.",
            |u| u.xdp.no_socket,
        ),
    ];
    for (name, help, field) in xdp_families {
        family(o, name, Kind::Counter, help, s.uplinks.iter(), |u| {
            (uplink(u), field(u))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use dataplane::shm::stats::{XdpFigures, XskFigures};

    fn sample() -> Snapshot {
        let mut w0 = WorkerFigures {
            rx_packets: 3,
            rx_bytes: 300,
            tx_packets: 4,
            tx_bytes: 400,
            handshake_rx: 1,
            events_deferred: 6,
            udp_gso_refusals: 11,
            ..Default::default()
        };
        w0.drops[DropReason::Replay.index()] = 2;
        w0.drops[DropReason::EventRingFull.index()] = 7;
        w0.xsk = XskFigures {
            rx_ring_full: 5,
            sockets: 1,
            ..Default::default()
        };
        Snapshot {
            interface: "wg0".into(),
            version: "0.1.0".into(),
            backend: "xdp".into(),
            peers: vec![PeerFigures {
                public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
                rx_bytes: 392,
                tx_bytes: 548,
                rx_packets: 3,
                tx_packets: 4,
                dropped: 1,
                last_handshake_unix_s: 1_700_000_000,
            }],
            workers: vec![w0, WorkerFigures::default()],
            uplinks: vec![UplinkFigures {
                name: "eth0".into(),
                ifindex: 2,
                xdp: XdpFigures {
                    steered: 3,
                    passed: 9,
                    malformed: 0,
                    no_socket: 0,
                },
            }],
            commands_dropped: 8,
            commands_deferred: 9,
        }
    }

    /// A strict reader of the text format: every sample belongs to the
    /// family declared just before it, each family is declared once with
    /// HELP then TYPE, counters end in `_total`, values parse. Returns
    /// "name{labels}" -> value.
    fn parse(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with('\n'), "ends with a newline");
        let mut seen = std::collections::HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut help: Option<String> = None;
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "{name} declared twice");
                help = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap(), it.next().unwrap());
                assert_eq!(help.take().as_deref(), Some(name), "HELP before TYPE");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name}");
                }
                current = Some((name.to_string(), kind.to_string()));
            } else {
                let (series, value) = line.rsplit_once(' ').expect("NAME VALUE");
                let name = series.split('{').next().unwrap();
                let (fam, _) = current.as_ref().expect("sample after TYPE");
                assert_eq!(name, fam, "sample outside its family: {line}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                    "{name}"
                );
                let v: f64 = value.parse().expect("numeric value");
                assert!(
                    samples.insert(series.to_string(), v).is_none(),
                    "duplicate series {series}"
                );
            }
        }
        samples
    }

    #[test]
    fn renders_every_family_well_formed() {
        let text = format(&sample());
        let m = parse(&text);
        let pk = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        assert_eq!(
            m[r#"wirespeed_info{interface="wg0",backend="xdp",version="0.1.0"}"#],
            1.0
        );
        assert_eq!(m[r#"wirespeed_workers{interface="wg0"}"#], 2.0);
        assert_eq!(
            m[r#"wirespeed_control_commands_dropped_total{interface="wg0"}"#],
            8.0
        );
        assert_eq!(
            m[r#"wirespeed_control_commands_deferred_total{interface="wg0"}"#],
            9.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_events_deferred_total{interface="wg0",worker="0"}"#],
            6.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_udp_gso_refusals_total{interface="wg0",worker="0"}"#],
            11.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_dropped_packets_total{interface="wg0",worker="0",reason="event_ring_full"}"#],
            7.0
        );
        assert_eq!(
            m[&format!(
                r#"wirespeed_peer_receive_bytes_total{{interface="wg0",public_key="{pk}"}}"#
            )],
            392.0
        );
        assert_eq!(
            m[&format!(
                r#"wirespeed_peer_last_handshake_seconds{{interface="wg0",public_key="{pk}"}}"#
            )],
            1_700_000_000.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_receive_bytes_total{interface="wg0",worker="0"}"#],
            300.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_dropped_packets_total{interface="wg0",worker="0",reason="replay"}"#],
            2.0
        );
        assert_eq!(
            m[r#"wirespeed_worker_dropped_packets_total{interface="wg0",worker="1",reason="tx_full"}"#],
            0.0
        );
        // Only workers with AF_XDP sockets report their figures.
        assert_eq!(
            m[r#"wirespeed_worker_xsk_rx_ring_full_total{interface="wg0",worker="0"}"#],
            5.0
        );
        assert!(!text
            .contains(r#"wirespeed_worker_xsk_rx_ring_full_total{interface="wg0",worker="1"}"#));
        assert_eq!(
            m[r#"wirespeed_xdp_steered_packets_total{interface="wg0",uplink="eth0"}"#],
            3.0
        );
        let drops = m
            .keys()
            .filter(|k| k.starts_with("wirespeed_worker_dropped_packets_total"))
            .count();
        assert_eq!(drops, 2 * DROP_REASONS, "every reason of every worker");
    }

    #[test]
    fn empty_families_are_left_out() {
        let s = Snapshot {
            interface: "wg0".into(),
            version: "0.1.0".into(),
            backend: "udp".into(),
            ..Default::default()
        };
        let text = format(&s);
        let m = parse(&text);
        assert_eq!(m[r#"wirespeed_peers{interface="wg0"}"#], 0.0);
        assert!(!text.contains("wirespeed_peer_receive_bytes_total"));
        assert!(!text.contains("wirespeed_xdp_"));
        assert!(!text.contains("wirespeed_worker_xsk_"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample();
        s.interface = "we\"ird\\na\nme".into();
        s.uplinks[0].name = "e\"th".into();
        let text = format(&s);
        parse(&text);
        assert!(text.contains(r#"interface="we\"ird\\na\nme""#), "{text}");
        assert!(text.contains(r#"uplink="e\"th""#));
        assert!(!text.contains("a\nme"), "no raw newline inside a label");
        let mut out = String::new();
        escape_label(r#"a\b"c"#, &mut out);
        assert_eq!(out, r#"a\\b\"c"#);
    }

    #[test]
    fn reads_peers_workers_and_uplinks_from_a_region() {
        let dir = std::env::temp_dir().join(format!(
            "wirespeed-test-metrics-render-{}",
            std::process::id()
        ));
        let r = Region::create_exclusive(&dir.join("wg0.region")).unwrap();
        let h = r.header();
        h.workers.store(2, Ordering::Release);
        h.backend.store(BACKEND_XDP, Ordering::Release);
        let key = [0x11; 32];
        r.peer_info(4).activate(&key);
        r.peer_info(4)
            .set_control_figures(1_700_000_001_999_999_999, 92, 148);
        r.peer(4).activate();
        r.peer(4).note_rx(96, 1, true);
        r.peer(4).note_tx(128, 1, true);
        r.peer(4).note_drop();
        // Slot 5 was released: not reported.
        r.peer_info(5).activate(&[0x22; 32]);
        r.worker_stats(1).rx(96);
        r.worker_stats(1).drop_packet(DropReason::SourceNotAllowed);
        stats::set_uplinks(&r, [("veth0", 3)]);
        r.uplink(0).set_xdp(&XdpFigures {
            steered: 1,
            ..Default::default()
        });
        let s = Snapshot::read(&r, "wg0");
        assert_eq!(s.backend, "xdp");
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!(p.public_key, encode_base64_key(&key));
        assert_eq!((p.rx_bytes, p.tx_bytes), (92 + 96, 148 + 128));
        assert_eq!((p.rx_packets, p.tx_packets, p.dropped), (1, 1, 1));
        assert_eq!(p.last_handshake_unix_s, 1_700_000_001);
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.workers[1].rx_bytes, 96);
        assert_eq!(s.workers[1].dropped(DropReason::SourceNotAllowed), 1);
        assert_eq!(s.uplinks[0].name, "veth0");
        let m = parse(&render(&r, "wg0"));
        assert_eq!(
            m[r#"wirespeed_worker_dropped_packets_total{interface="wg0",worker="1",reason="source_not_allowed"}"#],
            1.0
        );
        drop(r);
        std::fs::remove_dir(dir).unwrap();
    }
}
