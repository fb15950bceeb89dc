//! The metrics endpoint of a running daemon: a wirespeed tunnel on the
//! AF_XDP backend carries pings, then `/metrics` is fetched over TCP inside
//! each namespace and compared with `wg show` and with itself.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{assert_ping, Impl, Netns, Side, Tunnel};

const WIRESPEED: &str = env!("CARGO_BIN_EXE_wirespeed");
const METRICS: &str = "127.0.0.1:9586";

/// One HTTP exchange inside `ns`: (status line, headers, body).
fn http(ns: &Netns, addr: &str, request: &str) -> (String, String, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = ns
        .tcp_connect(addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Series ("name{labels}") -> value, checking the lines' shape on the way.
fn parse(text: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `series value`: {line:?}"));
        let v: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not an integer: {line:?}"));
        assert!(m.insert(series.to_string(), v).is_none(), "twice: {series}");
    }
    m
}

struct Metrics {
    text: String,
    m: HashMap<String, u64>,
}

impl Metrics {
    fn fetch(side: &Side) -> Metrics {
        let (status, headers, body) = http(
            &side.ns,
            METRICS,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
        assert!(
            headers
                .lines()
                .any(|h| h.starts_with("Content-Type: text/plain; version=0.0.4")),
            "exposition content type: {headers}"
        );
        Metrics {
            m: parse(&body),
            text: body,
        }
    }

    fn get(&self, series: &str) -> u64 {
        *self
            .m
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    fn peer(&self, side: &Side, name: &str, peer_key: &str) -> u64 {
        self.get(&format!(
            "{name}{{interface=\"{}\",public_key=\"{peer_key}\"}}",
            side.iface
        ))
    }

    /// A family summed over every series (all workers, all reasons...).
    fn sum(&self, name: &str) -> u64 {
        self.m
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }

    fn count(&self, name: &str) -> usize {
        self.m
            .keys()
            .filter(|k| k.split('{').next() == Some(name))
            .count()
    }
}

/// Whether `d` bytes are what a few handshake messages add up to
/// (initiations 148, responses 92): the part of `wg show` transfer that
/// control counts and the data plane's workers do not.
fn handshake_bytes(d: u64) -> bool {
    (0..=8u64).any(|a| (0..=8u64).any(|b| a + b > 0 && 148 * a + 92 * b == d))
}

/// A tunnel on the AF_XDP backend, both daemons serving metrics (from the
/// environment, as under wg-quick), pings both ways, then quiet.
fn tunnel_with_traffic() -> Tunnel {
    // Both daemons inherit it; each binds the loopback of its own namespace.
    std::env::set_var("WIRESPEED_METRICS", METRICS);
    let t = Tunnel::new(Impl::Wirespeed, Impl::Wirespeed);
    std::env::remove_var("WIRESPEED_METRICS");
    // Every transport message is to go through AF_XDP: start the traffic
    // once both uplinks have the program.
    for side in [&t.a, &t.b] {
        assert!(
            side.wait_xdp_on("veth0", Duration::from_secs(5)),
            "{}",
            side.daemon.log()
        );
    }
    assert_ping(&t.a.ns, &t.b.tunnel_ip.to_string(), 5);
    assert_ping(&t.b.ns, &t.a.tunnel_ip.to_string(), 3);
    t.quiesce(Duration::from_secs(5));
    // The supervisor copies the XDP counters and the workers publish their
    // sockets' figures once a second.
    std::thread::sleep(Duration::from_millis(1500));
    t
}

#[test]
fn metrics_match_wg_show_and_the_xdp_program() {
    let Some(_serial) = common::netns_test("metrics_wg_show") else {
        return;
    };
    let t = tunnel_with_traffic();
    for (me, other) in [(&t.a, &t.b), (&t.b, &t.a)] {
        let log = me.daemon.log();
        assert!(
            log.contains(&format!("metrics on http://{METRICS}/metrics")),
            "{log}"
        );
        let wg = me.peer();
        let m = Metrics::fetch(me);
        let key = &other.keys.public;
        let info = format!(
            "wirespeed_info{{interface=\"{}\",backend=\"xdp\",version=\"{}\"}}",
            me.iface,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(m.get(&info), 1);
        assert_eq!(
            m.get(&format!("wirespeed_peers{{interface=\"{}\"}}", me.iface)),
            1
        );
        // Exactly wg show's transfer figures and handshake time.
        let rx = m.peer(me, "wirespeed_peer_receive_bytes_total", key);
        let tx = m.peer(me, "wirespeed_peer_transmit_bytes_total", key);
        let hs = m.peer(me, "wirespeed_peer_last_handshake_seconds", key);
        assert_eq!(
            (rx, tx, Some(hs)),
            (wg.rx, wg.tx, wg.latest_handshake),
            "{}: metrics vs wg show {wg:?}",
            me.iface
        );
        let rx_packets = m.peer(me, "wirespeed_peer_receive_packets_total", key);
        let tx_packets = m.peer(me, "wirespeed_peer_transmit_packets_total", key);
        assert!(rx_packets >= 8 && tx_packets >= 8, "{}", m.text);
        assert_eq!(m.peer(me, "wirespeed_peer_dropped_packets_total", key), 0);
        // Every transport message this side authenticated came in through
        // AF_XDP, so the program on veth0 steered at least that many.
        let uplink = format!("{{interface=\"{}\",uplink=\"veth0\"}}", me.iface);
        let steered = m.get(&format!("wirespeed_xdp_steered_packets_total{uplink}"));
        assert!(
            steered >= rx_packets,
            "steered {steered} < received {rx_packets}:\n{}",
            m.text
        );
        assert!(m.get(&format!("wirespeed_xdp_passed_packets_total{uplink}")) > 0);
        assert_eq!(
            m.get(&format!("wirespeed_xdp_malformed_packets_total{uplink}")),
            0
        );
        // Every worker is there, with a series per drop reason.
        let workers = m.get(&format!("wirespeed_workers{{interface=\"{}\"}}", me.iface));
        assert!(workers >= 1);
        assert_eq!(
            m.count("wirespeed_worker_receive_packets_total"),
            workers as usize
        );
        assert_eq!(
            m.count("wirespeed_worker_dropped_packets_total"),
            workers as usize * dataplane::shm::layout::DROP_REASONS
        );
    }
    // Anything but GET/HEAD /metrics is refused; the endpoint stays up.
    let (status, _, _) = http(&t.a.ns, METRICS, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http(&t.a.ns, METRICS, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _, body) = http(&t.a.ns, METRICS, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
}

/// Needs the worker's calls into `dataplane::process::Stats`.
#[test]
fn worker_counters_add_up_to_the_peers() {
    let Some(_serial) = common::netns_test("metrics_workers") else {
        return;
    };
    let t = tunnel_with_traffic();
    for (me, other) in [(&t.a, &t.b), (&t.b, &t.a)] {
        let wg = me.peer();
        let m = Metrics::fetch(me);
        let key = &other.keys.public;
        let rx_packets = m.sum("wirespeed_worker_receive_packets_total");
        let rx_bytes = m.sum("wirespeed_worker_receive_bytes_total");
        let tx_packets = m.sum("wirespeed_worker_transmit_packets_total");
        let tx_bytes = m.sum("wirespeed_worker_transmit_bytes_total");
        assert!(
            rx_packets > 0 && rx_bytes > 0 && tx_packets > 0,
            "{}: the workers counted nothing (are the data plane's workers \
             counting into process::Stats?):\n{}",
            me.iface,
            m.text
        );
        // The workers count the transport messages the peer slots count...
        assert_eq!(
            rx_packets,
            m.peer(me, "wirespeed_peer_receive_packets_total", key),
            "{}",
            m.text
        );
        assert_eq!(
            tx_packets,
            m.peer(me, "wirespeed_peer_transmit_packets_total", key),
            "{}",
            m.text
        );
        // ...and their bytes: wg show adds the handshake messages control saw.
        assert!(
            wg.rx > rx_bytes && handshake_bytes(wg.rx - rx_bytes),
            "{}: wg show rx {} vs workers' {rx_bytes}",
            me.iface,
            wg.rx
        );
        assert!(
            wg.tx > tx_bytes && handshake_bytes(wg.tx - tx_bytes),
            "{}: wg show tx {} vs workers' {tx_bytes}",
            me.iface,
            wg.tx
        );
        // This side received one handshake message at least (an initiation
        // or a response), through the kernel socket of a worker.
        assert!(m.sum("wirespeed_worker_handshake_messages_total") >= 1);
        // No drops on a clean link, but for the kernel's own IPv6 chatter
        // on the new interface (router solicitations...), which no peer routes.
        let drops: u64 =
            m.m.iter()
                .filter(|(k, _)| {
                    k.starts_with("wirespeed_worker_dropped_packets_total{")
                        && !k.contains("reason=\"no_route\"")
                })
                .map(|(_, v)| v)
                .sum();
        assert_eq!(drops, 0, "{}", m.text);
        // Nothing was lost: the XDP program steered exactly what the
        // workers took in.
        let steered = m.get(&format!(
            "wirespeed_xdp_steered_packets_total{{interface=\"{}\",uplink=\"veth0\"}}",
            me.iface
        ));
        assert_eq!(steered, rx_packets, "{}", m.text);
        // The workers published their AF_XDP sockets' kernel figures.
        assert!(
            m.count("wirespeed_worker_xsk_rx_ring_full_total") >= 1,
            "{}",
            m.text
        );
        assert_eq!(m.sum("wirespeed_worker_xsk_rx_dropped_total"), 0);
    }
}

/// `--metrics` on the command line, with the daemon detaching: the endpoint
/// is up when the command returns; a bad address is refused before anything
/// is created.
#[test]
fn metrics_flag_on_a_detached_daemon() {
    let Some(_serial) = common::netns_test("metrics_flag") else {
        return;
    };
    let out = std::process::Command::new(WIRESPEED)
        .args(["--metrics", "not-an-address", "wsbogus0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADDR:PORT"));
    let ns = Netns::new();
    let iface = format!("wsm{}", std::process::id() % 100_000);
    let st = ns
        .cmd(WIRESPEED)
        .args(["--backend", "udp", "--metrics", "127.0.0.1:9587", &iface])
        .status()
        .unwrap();
    assert!(st.success());
    let (status, _, body) = http(&ns, "127.0.0.1:9587", "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let m = parse(&body);
    let info = format!(
        "wirespeed_info{{interface=\"{iface}\",backend=\"udp\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&info), Some(&1), "{body}");
    assert_eq!(
        m.get(&format!("wirespeed_peers{{interface=\"{iface}\"}}")),
        Some(&0)
    );
    assert!(
        !body.contains("wirespeed_xdp_"),
        "no XDP on the UDP backend"
    );
    // A second daemon cannot take the same port: it says so and fails.
    let other = format!("wsn{}", std::process::id() % 100_000);
    let out = ns
        .cmd(WIRESPEED)
        .args(["--backend", "udp", "--metrics", "127.0.0.1:9587", &other])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics endpoint on 127.0.0.1:9587"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ns.has_link(&other), "nothing left behind");
    ns.ip(&["link", "del", &iface]);
    assert!(common::util::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || !Path::new(&format!("/var/run/wireguard/{iface}.sock")).exists()
    ));
}
