//! Unit tests: every key, every error with its line, the slides' configs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::*;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};

// Real pairs from `wg genkey | tee /dev/stderr | wg pubkey`, and `wg genpsk`.
const S1_PRIV: &str = "kJBBMxNQkejbXAAEm2Swht2VjXfGKA+6zFHvZnhnKXU=";
const S1_PUB: &str = "Zu8sVzWIKNz3voQUGJnOK4uEE2SR0+YpIsOZMQ2V7Dc=";
const S2_PRIV: &str = "yI7wldfCqTnycm12fY9tBX7sOaq3T0nFNmgRtFIZRnI=";
const S2_PUB: &str = "v1KqVcDxjZqcbZiabQGzyjZRz564InKWRMb00EeaFWY=";
const CL_PRIV: &str = "ODFUQWTUAXbVtQm+wZuu9W6l5ZoIL66nnEzTaOBEUW0=";
const CL_PUB: &str = "l91o8UinAEOGgdDXjmKBtuiKyzangSnjjIGqzwlwvx8=";
const PSK: &str = "cmVrALK/TEGXiH7DPmm+89m3DJnLV2LQQlck12qzqf4=";

// The slides wrap these over three lines; in a real file each is one line.
const SLIDE_POST_UP: &str = "iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE; iptables -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";
const SLIDE_POST_DOWN: &str = "iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE; iptables -D FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";

fn server1() -> String {
    format!(
        "[Interface]

Address = 192.168.42.1/24

PostUp = {SLIDE_POST_UP}

PostDown = {SLIDE_POST_DOWN}

ListenPort = 1194

PrivateKey = {S1_PRIV}

[Peer]

PublicKey = {S2_PUB}

AllowedIPs = 192.168.42.2/32, 192.168.42.0/24

Endpoint = wgserver2.example.com:1194

PersistentKeepalive = 25

[Peer]

PublicKey = {CL_PUB}

AllowedIPs = 192.168.42.100/32
"
    )
}

fn server2() -> String {
    format!(
        "[Interface]
Address = 192.168.42.2/24
PostUp = {SLIDE_POST_UP}
PostDown = {SLIDE_POST_DOWN}
ListenPort = 1194
PrivateKey = {S2_PRIV}

[Peer]
PublicKey = {S1_PUB}
AllowedIPs = 192.168.42.1/32, 192.168.42.0/24
Endpoint = wgserver1.example.com:1194

[Peer]
PublicKey = {CL_PUB}
AllowedIPs = 192.168.42.100/32
"
    )
}

fn client() -> String {
    format!(
        "[Interface]
Address = 192.168.42.100/24
DNS = 1.1.1.1
PrivateKey = {CL_PRIV}

[Peer]
PublicKey = {S1_PUB}
AllowedIPs = 0.0.0.0/0
Endpoint = wgserver1.example.com:1194

[Peer]
PublicKey = {S2_PUB}
AllowedIPs = 192.168.42.2/32, 192.168.42.0/24
Endpoint = wgserver2.example.com:1194
"
    )
}

fn pk(s: &str) -> PublicKey {
    PublicKey::from_base64(s).unwrap()
}

fn cidr(s: &str) -> IpCidr {
    let (addr, len) = s.split_once('/').unwrap();
    IpCidr::new(addr.parse().unwrap(), len.parse().unwrap()).unwrap()
}

fn host(h: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint::Host {
        host: h.to_string(),
        port,
    })
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("refused: {e}\n{text}"),
    }
}

/// Parses `body` as the whole `[Interface]` section.
fn iface(body: &str) -> InterfaceConfig {
    ok(&format!("[Interface]\n{body}\n")).interface
}

/// Parses `body` as the rest of a `[Peer]` that has a PublicKey.
fn peer(body: &str) -> PeerConfig {
    let mut c = ok(&format!("[Peer]\nPublicKey = {S1_PUB}\n{body}\n"));
    assert_eq!(c.peers.len(), 1);
    c.peers.remove(0)
}

/// Asserts the refusal: line, key and the whole message.
#[track_caller]
fn refused(text: &str, line: usize, key: Option<&str>, message: &str) -> ConfigError {
    refused_in(ParseMode::WgQuick, text, line, key, message)
}

#[track_caller]
fn refused_in(
    mode: ParseMode,
    text: &str,
    line: usize,
    key: Option<&str>,
    message: &str,
) -> ConfigError {
    let e = match parse_with_mode(text, mode) {
        Ok(c) => panic!("accepted {text:?} as {c:?}"),
        Err(e) => e,
    };
    assert_eq!(e.to_string(), message, "for {text:?}");
    assert_eq!(e.line, line, "for {text:?}");
    assert_eq!(e.key.as_deref(), key, "for {text:?}");
    e
}

/// The reason part of a refused `[Interface]` value on line 2.
#[track_caller]
fn iface_refused(body: &str, key: &str, reason: &str) {
    refused(
        &format!("[Interface]\n{body}\n"),
        2,
        Some(key),
        &format!("line 2: {key}: {reason}"),
    );
}

/// The reason part of a refused `[Peer]` value on line 3.
#[track_caller]
fn peer_refused(body: &str, key: &str, reason: &str) {
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\n{body}\n"),
        3,
        Some(key),
        &format!("line 3: {key}: {reason}"),
    );
}

#[test]
fn slide_keys_are_real_pairs() {
    for (private, public) in [(S1_PRIV, S1_PUB), (S2_PRIV, S2_PUB), (CL_PRIV, CL_PUB)] {
        assert_eq!(
            PrivateKey::from_base64(private).unwrap().public_key(),
            pk(public)
        );
    }
}

#[test]
fn slide_server1_every_field() {
    let c = ok(&server1());
    let i = &c.interface;
    assert_eq!(
        i.private_key,
        Some(PrivateKey::from_base64(S1_PRIV).unwrap())
    );
    assert_eq!(i.listen_port, Some(1194));
    assert_eq!(i.fwmark, None);
    assert_eq!(i.address, vec![cidr("192.168.42.1/24")]);
    assert!(i.dns.is_empty());
    assert!(i.dns_search.is_empty());
    assert_eq!(i.mtu, None);
    assert_eq!(i.table, None);
    assert!(i.pre_up.is_empty() && i.pre_down.is_empty());
    assert_eq!(i.post_up, vec![SLIDE_POST_UP.to_string()]);
    assert_eq!(i.post_down, vec![SLIDE_POST_DOWN.to_string()]);
    assert_eq!(i.save_config, None);

    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert_eq!(p.public_key, pk(S2_PUB));
    assert_eq!(p.preshared_key, None);
    assert_eq!(
        p.allowed_ips,
        vec![cidr("192.168.42.2/32"), cidr("192.168.42.0/24")]
    );
    assert_eq!(p.endpoint, host("wgserver2.example.com", 1194));
    assert_eq!(p.persistent_keepalive, Some(25));
    let p = &c.peers[1];
    assert_eq!(p.public_key, pk(CL_PUB));
    assert_eq!(p.preshared_key, None);
    assert_eq!(p.allowed_ips, vec![cidr("192.168.42.100/32")]);
    assert_eq!(p.endpoint, None);
    assert_eq!(p.persistent_keepalive, None);
}

#[test]
fn slide_server2_every_field() {
    let c = ok(&server2());
    let i = &c.interface;
    assert_eq!(
        i.private_key,
        Some(PrivateKey::from_base64(S2_PRIV).unwrap())
    );
    assert_eq!(i.listen_port, Some(1194));
    assert_eq!(i.fwmark, None);
    assert_eq!(i.address, vec![cidr("192.168.42.2/24")]);
    assert!(i.dns.is_empty() && i.dns_search.is_empty());
    assert_eq!((i.mtu, &i.table, i.save_config), (None, &None, None));
    assert!(i.pre_up.is_empty() && i.pre_down.is_empty());
    assert_eq!(i.post_up, vec![SLIDE_POST_UP.to_string()]);
    assert_eq!(i.post_down, vec![SLIDE_POST_DOWN.to_string()]);

    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert_eq!(p.public_key, pk(S1_PUB));
    assert_eq!(p.preshared_key, None);
    assert_eq!(
        p.allowed_ips,
        vec![cidr("192.168.42.1/32"), cidr("192.168.42.0/24")]
    );
    assert_eq!(p.endpoint, host("wgserver1.example.com", 1194));
    assert_eq!(p.persistent_keepalive, None);
    let p = &c.peers[1];
    assert_eq!(p.public_key, pk(CL_PUB));
    assert_eq!(p.allowed_ips, vec![cidr("192.168.42.100/32")]);
    assert_eq!((&p.endpoint, p.persistent_keepalive), (&None, None));
}

#[test]
fn slide_client_every_field() {
    let c = ok(&client());
    let i = &c.interface;
    assert_eq!(
        i.private_key,
        Some(PrivateKey::from_base64(CL_PRIV).unwrap())
    );
    assert_eq!((i.listen_port, i.fwmark), (None, None));
    assert_eq!(i.address, vec![cidr("192.168.42.100/24")]);
    assert_eq!(i.dns, vec![IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))]);
    assert!(i.dns_search.is_empty());
    assert_eq!((i.mtu, &i.table, i.save_config), (None, &None, None));
    assert!(i.pre_up.is_empty() && i.post_up.is_empty());
    assert!(i.pre_down.is_empty() && i.post_down.is_empty());

    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert_eq!(p.public_key, pk(S1_PUB));
    assert_eq!(p.preshared_key, None);
    assert_eq!(p.allowed_ips, vec![cidr("0.0.0.0/0")]);
    assert_eq!(p.endpoint, host("wgserver1.example.com", 1194));
    assert_eq!(p.persistent_keepalive, None);
    let p = &c.peers[1];
    assert_eq!(p.public_key, pk(S2_PUB));
    assert_eq!(
        p.allowed_ips,
        vec![cidr("192.168.42.2/32"), cidr("192.168.42.0/24")]
    );
    assert_eq!(p.endpoint, host("wgserver2.example.com", 1194));
    assert_eq!(p.persistent_keepalive, None);
}

#[test]
fn slide_configs_round_trip() {
    for text in [server1(), server2(), client()] {
        let c = ok(&text);
        assert_eq!(ok(&c.to_string()), c);
    }
}

#[test]
fn slide_servers_need_stripping_for_wg_setconf() {
    // Line 3 is Address: the blank line 2 counts.
    refused_in(
        ParseMode::Wg,
        &server1(),
        3,
        Some("Address"),
        "line 3: Address: only wg-quick understands this key, not wg setconf (strip it first)",
    );
    let full = ok(&server1());
    assert!(full.has_wg_quick_keys());
    let stripped = full.strip();
    assert!(!stripped.has_wg_quick_keys());
    let text = stripped.to_string();
    assert!(
        !text.contains("PostUp") && !text.contains("Address"),
        "{text}"
    );
    let wg = parse_with_mode(&text, ParseMode::Wg).unwrap();
    assert_eq!(wg, stripped);
    assert_eq!(wg.peers, full.peers);
    assert_eq!(wg.interface.listen_port, Some(1194));
    // The client only has wg-quick keys in [Interface] too.
    assert!(parse_with_mode(&client(), ParseMode::Wg).is_err());
    assert!(parse_with_mode(&ok(&client()).strip().to_string(), ParseMode::Wg).is_ok());
}

#[test]
fn slide_hook_copied_with_its_line_breaks_is_refused() {
    let text = "[Interface]\nPostUp = iptables -A FORWARD -i %i -j ACCEPT;\niptables -t nat -A POSTROUTING -o eth0 -j\n";
    refused(
        text,
        3,
        None,
        "line 3: expected \"Key = Value\" or a [Section] header",
    );
}

#[test]
fn private_key() {
    let key = PrivateKey::from_base64(S1_PRIV).unwrap();
    assert_eq!(
        iface(&format!("PrivateKey = {S1_PRIV}")).private_key,
        Some(key.clone())
    );
    // wg reads keys with whitespace removed.
    let spaced = format!("{} {}", &S1_PRIV[..20], &S1_PRIV[20..]);
    assert_eq!(
        iface(&format!("PrivateKey = {spaced}")).private_key,
        Some(key)
    );
    assert_eq!(iface("").private_key, None);
}

#[test]
fn listen_port() {
    assert_eq!(iface("ListenPort = 51820").listen_port, Some(51820));
    assert_eq!(iface("ListenPort = 0").listen_port, Some(0));
    assert_eq!(iface("ListenPort = 65535").listen_port, Some(65535));
    assert_eq!(iface("ListenPort = 051820").listen_port, Some(51820));
    assert_eq!(iface("ListenPort = 51 820").listen_port, Some(51820));
    for bad in [
        "65536",
        "-1",
        "+1",
        "0x10",
        "port",
        "99999999999999999999999",
    ] {
        iface_refused(
            &format!("ListenPort = {bad}"),
            "ListenPort",
            &format!("\"{bad}\" is not a port number from 0 to 65535"),
        );
    }
}

#[test]
fn fwmark() {
    assert_eq!(iface("FwMark = 51820").fwmark, Some(51820));
    assert_eq!(iface("FwMark = 0x1f").fwmark, Some(0x1f));
    assert_eq!(iface("FwMark = 0xFFFFFFFF").fwmark, Some(u32::MAX));
    assert_eq!(iface("FwMark = 4294967295").fwmark, Some(u32::MAX));
    assert_eq!(iface("FwMark = 0").fwmark, Some(0));
    assert_eq!(iface("FwMark = off").fwmark, Some(0));
    assert_eq!(iface("FwMark = OFF").fwmark, Some(0));
    // wg reads a leading zero as decimal, not octal.
    assert_eq!(iface("FwMark = 010").fwmark, Some(10));
    assert_eq!(iface("").fwmark, None);
    for bad in [
        "0x",
        "0x100000000",
        "4294967296",
        "0X10",
        "-1",
        "+1",
        "0xg",
        "on",
    ] {
        iface_refused(
            &format!("FwMark = {bad}"),
            "FwMark",
            &format!("\"{bad}\" is neither off nor a number from 0 to 0xffffffff"),
        );
    }
}

#[test]
fn address() {
    let i = iface(
        "Address = 10.0.0.1/24, fd00::1/64\nAddress = 10.0.1.1\naddress = fd01::1 10.0.2.1/32,,\nAddress =",
    );
    assert_eq!(
        i.address,
        vec![
            cidr("10.0.0.1/24"),
            cidr("fd00::1/64"),
            cidr("10.0.1.1/32"),
            cidr("fd01::1/128"),
            cidr("10.0.2.1/32"),
        ]
    );
    iface_refused(
        "Address = 10.0.0.1/33",
        "Address",
        "\"10.0.0.1/33\" is not a valid prefix",
    );
    iface_refused(
        "Address = 10.0.0.1/24, fd00::1/129",
        "Address",
        "\"fd00::1/129\" is not a valid prefix",
    );
    iface_refused(
        "Address = 10.0.0.256",
        "Address",
        "\"10.0.0.256\" is not a valid prefix",
    );
    iface_refused(
        "Address = 10.0.0.1/",
        "Address",
        "\"10.0.0.1/\" is not a valid prefix",
    );
    iface_refused("Address = /24", "Address", "\"/24\" is not a valid prefix");
}

#[test]
fn dns() {
    let i =
        iface("DNS = 1.1.1.1, 2606:4700:4700::1111, corp.example.com\nDNS = lan 9.9.9.9\nDNS =");
    assert_eq!(
        i.dns,
        vec![
            IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
            "2606:4700:4700::1111".parse::<IpAddr>().unwrap(),
            IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
        ]
    );
    assert_eq!(
        i.dns_search,
        vec!["corp.example.com".to_string(), "lan".to_string()]
    );
    iface_refused("DNS = 1.1.1", "DNS", "\"1.1.1\" is not a valid IP address");
    iface_refused(
        "DNS = fe80::1%eth0",
        "DNS",
        "\"fe80::1%eth0\" is not a valid IP address",
    );
    iface_refused(
        "DNS = bad/domain",
        "DNS",
        "\"bad/domain\" is neither an IP address nor a search domain",
    );
}

#[test]
fn mtu() {
    assert_eq!(iface("MTU = 1420").mtu, Some(1420));
    assert_eq!(iface("MTU = 68").mtu, Some(68));
    assert_eq!(iface("MTU = 65535").mtu, Some(65535));
    for bad in ["0", "67", "65536", "1420 bytes", "auto"] {
        iface_refused(
            &format!("MTU = {bad}"),
            "MTU",
            &format!("\"{bad}\" is not an MTU from 68 to 65535"),
        );
    }
}

#[test]
fn table() {
    assert_eq!(iface("Table = off").table, Some(Table::Off));
    assert_eq!(iface("Table = Off").table, Some(Table::Off));
    assert_eq!(iface("Table = auto").table, Some(Table::Auto));
    assert_eq!(iface("Table = 1234").table, Some(Table::Id(1234)));
    assert_eq!(iface("Table = 4294967295").table, Some(Table::Id(u32::MAX)));
    assert_eq!(
        iface("Table = main").table,
        Some(Table::Name("main".into()))
    );
    assert_eq!(
        iface("Table = vpn_2.b-c").table,
        Some(Table::Name("vpn_2.b-c".into()))
    );
    for bad in ["4294967296", "my table", "a/b"] {
        iface_refused(
            &format!("Table = {bad}"),
            "Table",
            &format!("\"{bad}\" is neither off, auto, a table number nor a table name"),
        );
    }
}

#[test]
fn hooks_keep_order_and_text() {
    let i = iface(
        "PreUp = echo  one %i\nPostUp = a=b; c\nPreUp = echo two\nPreDown = x\nPostDown = ip rule del table 51820 || true\npostup = second, with comma\nPreDown =",
    );
    assert_eq!(
        i.pre_up,
        vec!["echo  one %i".to_string(), "echo two".to_string()]
    );
    assert_eq!(
        i.post_up,
        vec!["a=b; c".to_string(), "second, with comma".to_string()]
    );
    assert_eq!(i.pre_down, vec!["x".to_string(), String::new()]);
    assert_eq!(
        i.post_down,
        vec!["ip rule del table 51820 || true".to_string()]
    );
}

#[test]
fn save_config() {
    assert_eq!(iface("SaveConfig = true").save_config, Some(true));
    assert_eq!(iface("SaveConfig = FALSE").save_config, Some(false));
    for bad in ["yes", "1", "truee"] {
        iface_refused(
            &format!("SaveConfig = {bad}"),
            "SaveConfig",
            &format!("\"{bad}\" is neither true nor false"),
        );
    }
}

#[test]
fn public_and_preshared_key() {
    let p = peer(&format!("PresharedKey = {PSK}"));
    assert_eq!(p.public_key, pk(S1_PUB));
    assert_eq!(
        p.preshared_key,
        Some(PresharedKey::from_base64(PSK).unwrap())
    );
    assert_eq!(peer("").preshared_key, None);
}

#[test]
fn allowed_ips() {
    let p = peer("AllowedIPs = 10.0.0.1/8, 192.168.1.7\nallowedips=fd00::1/64,::/0 , 2001:db8::5\nAllowedIPs = 10.0.0.1/8");
    assert_eq!(
        p.allowed_ips,
        vec![
            // Host bits stay as written; so do repeats.
            cidr("10.0.0.1/8"),
            cidr("192.168.1.7/32"),
            cidr("fd00::1/64"),
            cidr("::/0"),
            cidr("2001:db8::5/128"),
            cidr("10.0.0.1/8"),
        ]
    );
    assert_eq!(
        peer("AllowedIPs = 0.0.0.0/0").allowed_ips,
        vec![cidr("0.0.0.0/0")]
    );
    assert_eq!(
        peer("AllowedIPs = 10.0.0.0 / 24").allowed_ips,
        vec![cidr("10.0.0.0/24")]
    );
    assert_eq!(
        peer("AllowedIPs = ::ffff:1.2.3.4/128").allowed_ips,
        vec![cidr("::ffff:1.2.3.4/128")]
    );
    peer_refused(
        "AllowedIPs = 10.0.0.0/33",
        "AllowedIPs",
        "\"10.0.0.0/33\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = ::/129",
        "AllowedIPs",
        "\"::/129\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = 10.0.0.0/-1",
        "AllowedIPs",
        "\"10.0.0.0/-1\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = 10.0.0.0/+8",
        "AllowedIPs",
        "\"10.0.0.0/+8\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = 10.0.0.0/300",
        "AllowedIPs",
        "\"10.0.0.0/300\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = 10.0.0.0/8/8",
        "AllowedIPs",
        "\"10.0.0.0/8/8\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = 10.0.0.1/32,",
        "AllowedIPs",
        "\"\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = fe80::1%2/128",
        "AllowedIPs",
        "\"fe80::1%2/128\" is not a valid prefix",
    );
    peer_refused(
        "AllowedIPs = example.com/32",
        "AllowedIPs",
        "\"example.com/32\" is not a valid prefix",
    );
}

#[test]
fn endpoint_addresses_and_brackets() {
    let v4 = |s: &str| peer(&format!("Endpoint = {s}")).endpoint;
    assert_eq!(
        v4("1.2.3.4:51820"),
        Some(Endpoint::Addr("1.2.3.4:51820".parse().unwrap()))
    );
    assert_eq!(
        v4("[2001:db8::1]:51820"),
        Some(Endpoint::Addr(SocketAddr::new(
            IpAddr::V6("2001:db8::1".parse().unwrap()),
            51820
        )))
    );
    assert_eq!(
        v4("[fe80::1%3]:1"),
        Some(Endpoint::Addr(SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse::<Ipv6Addr>().unwrap(),
            1,
            0,
            3
        ))))
    );
    assert_eq!(
        v4("[::ffff:1.2.3.4]:5"),
        Some(Endpoint::Addr(SocketAddr::new(
            IpAddr::V6("::ffff:1.2.3.4".parse().unwrap()),
            5
        )))
    );
    // wg ignores whitespace inside the value.
    assert_eq!(
        v4(" [ ::1 ] : 7 "),
        Some(Endpoint::Addr("[::1]:7".parse().unwrap()))
    );
}

#[test]
fn endpoint_host_names_stay_unresolved() {
    let e = |s: &str| peer(&format!("Endpoint = {s}")).endpoint;
    assert_eq!(e("vpn.example.com:51820"), host("vpn.example.com", 51820));
    assert_eq!(e("VPN.Example.COM.:1"), host("VPN.Example.COM.", 1));
    assert_eq!(e("localhost:65535"), host("localhost", 65535));
    assert_eq!(e("a_b-c.d1:2"), host("a_b-c.d1", 2));
}

#[test]
fn endpoint_refusals() {
    let cases = [
        (
            "1.2.3.4",
            "has no port (expected host:port or [IPv6 address]:port)",
        ),
        (
            "vpn.example.com",
            "has no port (expected host:port or [IPv6 address]:port)",
        ),
        (
            "[::1]",
            "has no port (expected host:port or [IPv6 address]:port)",
        ),
        (
            "[::1]51820",
            "has no port (expected host:port or [IPv6 address]:port)",
        ),
        ("[::1:51820", "has no ']' after the IPv6 address"),
        ("1.2.3.4:", "does not end in a port from 1 to 65535"),
        ("1.2.3.4:0", "does not end in a port from 1 to 65535"),
        ("1.2.3.4:65536", "does not end in a port from 1 to 65535"),
        ("1.2.3.4:+1", "does not end in a port from 1 to 65535"),
        ("host:https", "does not end in a port from 1 to 65535"),
        ("[::1]:0", "does not end in a port from 1 to 65535"),
        (
            "::1:51820",
            "has an IPv6 address without brackets (write [address]:port)",
        ),
        ("1.2.3.256:1", "does not hold a valid IPv4 address"),
        ("1234:1", "does not hold a valid IPv4 address"),
        (
            "[1.2.3.4]:5",
            "does not hold an IPv6 address in its brackets",
        ),
        (
            "[vpn.example.com]:5",
            "does not hold an IPv6 address in its brackets",
        ),
        ("[fe80::1%eth0]:5", "has a scope id that is not a number"),
        (":51820", "does not hold a valid host name"),
        ("bad!host:1", "does not hold a valid host name"),
        ("-bad.example:1", "does not hold a valid host name"),
        ("a..b:1", "does not hold a valid host name"),
    ];
    for (value, reason) in cases {
        peer_refused(
            &format!("Endpoint = {value}"),
            "Endpoint",
            &format!("\"{value}\" {reason}"),
        );
    }
}

#[test]
fn persistent_keepalive() {
    let k = |s: &str| peer(&format!("PersistentKeepalive = {s}")).persistent_keepalive;
    assert_eq!(k("25"), Some(25));
    assert_eq!(k("1"), Some(1));
    assert_eq!(k("65535"), Some(65535));
    assert_eq!(k("0"), Some(0));
    assert_eq!(k("off"), Some(0));
    assert_eq!(k("Off"), Some(0));
    assert_eq!(peer("").persistent_keepalive, None);
    for bad in ["65536", "-1", "25s", "never"] {
        peer_refused(
            &format!("PersistentKeepalive = {bad}"),
            "PersistentKeepalive",
            &format!("\"{bad}\" is neither off nor a number of seconds from 0 to 65535"),
        );
    }
}

#[test]
fn comments_and_blank_lines() {
    let text = format!(
        "# a file comment
   # indented comment

[Interface] # the device
PrivateKey = {S1_PRIV} # trailing
ListenPort = 51820#no space
PostUp = echo hi # comment, not part of the command
PostUp = # only a comment

[Peer]
# PublicKey = {S2_PUB}
PublicKey = {S1_PUB}
AllowedIPs = 10.0.0.0/8 # , 11.0.0.0/8
"
    );
    let c = ok(&text);
    assert_eq!(c.interface.listen_port, Some(51820));
    assert_eq!(
        c.interface.post_up,
        vec!["echo hi".to_string(), String::new()]
    );
    assert_eq!(c.peers.len(), 1);
    assert_eq!(c.peers[0].public_key, pk(S1_PUB));
    assert_eq!(c.peers[0].allowed_ips, vec![cidr("10.0.0.0/8")]);
}

#[test]
fn keys_and_sections_are_case_insensitive() {
    let text = format!(
        "[INTERFACE]\nprivatekey = {S1_PRIV}\nLISTENPORT = 1\nfwmark = OFF\naddress = 10.0.0.1/24\ndns = 1.1.1.1\nmtu = 1280\ntable = AUTO\npreup = a\nPOSTUP = b\npredown = c\npostdown = d\nsaveconfig = True\n\
         [peer]\npublickey = {S2_PUB}\npresharedkey = {PSK}\nallowedips = 10.0.0.2/32\nENDPOINT = h:1\npersistentkeepalive = OFF\n"
    );
    let c = ok(&text);
    let canonical = format!(
        "[Interface]\nPrivateKey = {S1_PRIV}\nListenPort = 1\nFwMark = off\nAddress = 10.0.0.1/24\nDNS = 1.1.1.1\nMTU = 1280\nTable = auto\nPreUp = a\nPostUp = b\nPreDown = c\nPostDown = d\nSaveConfig = true\n\
         [Peer]\nPublicKey = {S2_PUB}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.0.2/32\nEndpoint = h:1\nPersistentKeepalive = off\n"
    );
    assert_eq!(c, ok(&canonical));
    assert_eq!(c.interface.fwmark, Some(0));
    assert_eq!(c.interface.save_config, Some(true));
    assert_eq!(c.peers[0].persistent_keepalive, Some(0));
}

#[test]
fn whitespace_line_endings_and_bom() {
    let text = format!(
        "\u{feff}  [ Interface ]  \r\n\tListenPort\t=\t7\t\r\n\r\n[Peer]\r\n  PublicKey=   {S1_PUB}\r\nEndpoint=[::1]:2"
    );
    let c = ok(&text);
    assert_eq!(c.interface.listen_port, Some(7));
    assert_eq!(c.peers[0].public_key, pk(S1_PUB));
    assert_eq!(
        c.peers[0].endpoint,
        Some(Endpoint::Addr("[::1]:2".parse().unwrap()))
    );
}

#[test]
fn empty_and_peer_only_files() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("\n# nothing\n\n"), Config::default());
    assert_eq!(ok("[Interface]"), Config::default());
    assert_eq!(Config::default().to_string(), "[Interface]\n");
    let c = ok(&format!(
        "[Peer]\nPublicKey = {S1_PUB}\n[Peer]\nPublicKey = {S2_PUB}"
    ));
    assert_eq!(c.interface, InterfaceConfig::default());
    assert_eq!(
        c.peers.iter().map(|p| p.public_key).collect::<Vec<_>>(),
        vec![pk(S1_PUB), pk(S2_PUB)]
    );
    // [Interface] may come after the peers, as wg allows.
    let c = ok(&format!(
        "[Peer]\nPublicKey = {S1_PUB}\n[Interface]\nListenPort = 3"
    ));
    assert_eq!((c.peers.len(), c.interface.listen_port), (1, Some(3)));
}

fn full_config() -> Config {
    Config {
        interface: InterfaceConfig {
            private_key: Some(PrivateKey::from_base64(S1_PRIV).unwrap()),
            listen_port: Some(51820),
            fwmark: Some(0xca6c),
            address: vec![cidr("10.0.0.1/24"), cidr("fd00::1/64")],
            dns: vec![
                "1.1.1.1".parse().unwrap(),
                "2606:4700:4700::1111".parse().unwrap(),
            ],
            dns_search: vec!["example.com".into()],
            mtu: Some(1420),
            table: Some(Table::Name("vpn".into())),
            pre_up: vec!["echo pre %i".into()],
            post_up: vec!["ip rule add fwmark 1 table 2".into(), "echo up=%i".into()],
            pre_down: vec!["echo down".into()],
            post_down: vec!["true".into()],
            save_config: Some(false),
        },
        peers: vec![
            PeerConfig {
                public_key: pk(S2_PUB),
                preshared_key: Some(PresharedKey::from_base64(PSK).unwrap()),
                allowed_ips: vec![
                    cidr("10.0.0.2/32"),
                    cidr("fd00::2/128"),
                    cidr("10.9.0.1/16"),
                ],
                endpoint: Some(Endpoint::Addr("[2001:db8::1]:51820".parse().unwrap())),
                persistent_keepalive: Some(25),
            },
            PeerConfig {
                public_key: pk(CL_PUB),
                preshared_key: None,
                allowed_ips: vec![],
                endpoint: host("vpn.example.com", 443),
                persistent_keepalive: Some(0),
            },
            PeerConfig {
                public_key: pk(S1_PUB),
                preshared_key: None,
                allowed_ips: vec![cidr("0.0.0.0/0"), cidr("::/0")],
                endpoint: Some(Endpoint::Addr("192.0.2.1:1".parse().unwrap())),
                persistent_keepalive: None,
            },
        ],
    }
}

#[test]
fn writer_is_canonical_and_round_trips() {
    let c = full_config();
    let expected = format!(
        "[Interface]
Address = 10.0.0.1/24, fd00::1/64
DNS = 1.1.1.1, 2606:4700:4700::1111, example.com
MTU = 1420
Table = vpn
PreUp = echo pre %i
PostUp = ip rule add fwmark 1 table 2
PostUp = echo up=%i
PreDown = echo down
PostDown = true
SaveConfig = false
ListenPort = 51820
FwMark = 0xca6c
PrivateKey = {S1_PRIV}

[Peer]
PublicKey = {S2_PUB}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.2/32, fd00::2/128, 10.9.0.1/16
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {CL_PUB}
Endpoint = vpn.example.com:443
PersistentKeepalive = off

[Peer]
PublicKey = {S1_PUB}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 192.0.2.1:1
"
    );
    assert_eq!(c.to_string(), expected);
    assert_eq!(ok(&expected), c);
    // Written twice, the same text: the format is a fixed point.
    assert_eq!(ok(&expected).to_string(), expected);
}

#[test]
fn writer_keeps_explicit_zeros_distinct_from_unset() {
    let c = ok("[Interface]\nListenPort = 0\nFwMark = 0\nTable = off\n[Peer]\nPublicKey = Zu8sVzWIKNz3voQUGJnOK4uEE2SR0+YpIsOZMQ2V7Dc=\nPersistentKeepalive = 0\nEndpoint = [fe80::1%2]:9");
    let text = c.to_string();
    assert!(text.contains("ListenPort = 0\n"), "{text}");
    assert!(text.contains("FwMark = off\n"), "{text}");
    assert!(text.contains("Table = off\n"), "{text}");
    assert!(text.contains("PersistentKeepalive = off\n"), "{text}");
    assert!(text.contains("Endpoint = [fe80::1%2]:9\n"), "{text}");
    assert_eq!(ok(&text), c);
}

#[test]
fn display_of_parts() {
    assert_eq!(cidr("10.0.0.1/8").to_string(), "10.0.0.1/8");
    assert_eq!(Table::Id(7).to_string(), "7");
    assert_eq!(Table::Auto.to_string(), "auto");
    assert_eq!(host("h", 1).unwrap().to_string(), "h:1");
    assert_eq!(IpCidr::new("10.0.0.0".parse().unwrap(), 33), None);
    assert_eq!(IpCidr::new("::".parse().unwrap(), 129), None);
    assert!(IpCidr::new("::".parse().unwrap(), 128).is_some());
}

#[test]
fn key_table() {
    for key in Key::ALL {
        assert_eq!(Key::from_name(key.name()), Some(key));
        assert_eq!(Key::from_name(&key.name().to_lowercase()), Some(key));
        assert_eq!(Key::ALL[key.index()], key);
    }
    assert_eq!(Key::from_name("Allowed IPs"), None);
    let wg_quick: Vec<_> = Key::ALL
        .into_iter()
        .filter(|k| k.is_wg_quick_only())
        .map(Key::name)
        .collect();
    assert_eq!(
        wg_quick,
        [
            "Address",
            "DNS",
            "MTU",
            "Table",
            "PreUp",
            "PostUp",
            "PreDown",
            "PostDown",
            "SaveConfig"
        ]
    );
    let peer_keys: Vec<_> = Key::ALL
        .into_iter()
        .filter(|k| k.section() == Section::Peer)
        .map(Key::name)
        .collect();
    assert_eq!(
        peer_keys,
        [
            "PublicKey",
            "PresharedKey",
            "AllowedIPs",
            "Endpoint",
            "PersistentKeepalive"
        ]
    );
}

#[test]
fn strip_keeps_only_wg_keys() {
    let c = full_config();
    let s = c.strip();
    assert_eq!(s.peers, c.peers);
    assert_eq!(s.interface.private_key, c.interface.private_key);
    assert_eq!(s.interface.listen_port, Some(51820));
    assert_eq!(s.interface.fwmark, Some(0xca6c));
    assert!(!s.has_wg_quick_keys());
    assert_eq!(parse_with_mode(&s.to_string(), ParseMode::Wg).unwrap(), s);
    for body in [
        "Address = 10.0.0.1",
        "DNS = 1.1.1.1",
        "DNS = lan",
        "MTU = 1280",
        "Table = off",
        "PreUp = x",
        "PostUp = x",
        "PreDown = x",
        "PostDown = x",
        "SaveConfig = false",
    ] {
        assert!(iface(body).has_wg_quick_keys(), "{body}");
        assert!(!iface(body).strip().has_wg_quick_keys(), "{body}");
    }
}

// ---- refusals, each with its line ----

#[test]
fn syntax_errors() {
    refused(
        "[Interface]\nListenPort 51820",
        2,
        None,
        "line 2: expected \"Key = Value\" or a [Section] header",
    );
    refused(
        "\n\n[Interface\n",
        3,
        None,
        "line 3: section header has no closing ']'",
    );
    refused(
        "[Interface]\n = 5",
        2,
        None,
        "line 2: expected \"Key = Value\" or a [Section] header",
    );
}

#[test]
fn unknown_sections_and_keys() {
    refused(
        "# x\n[Device]",
        2,
        None,
        "line 2: unknown section \"[Device]\" (expected [Interface] or [Peer])",
    );
    refused(
        "[]",
        1,
        None,
        "line 1: unknown section \"[]\" (expected [Interface] or [Peer])",
    );
    refused(
        "[Interface] [Peer]",
        1,
        None,
        "line 1: unknown section \"[Interface] [Peer]\" (expected [Interface] or [Peer])",
    );
    refused(
        "[Interface]\nListenPort = 1\nListenPorts = 2",
        3,
        Some("ListenPorts"),
        "line 3: ListenPorts: unknown key in [Interface]",
    );
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\n\nKeepalive = 25"),
        4,
        Some("Keepalive"),
        "line 4: Keepalive: unknown key in [Peer]",
    );
    // A key that wg-quick would read as two words is still unknown here.
    refused(
        "[Interface]\nPost Up = x",
        2,
        Some("Post Up"),
        "line 2: Post Up: unknown key in [Interface]",
    );
}

#[test]
fn keys_outside_any_section() {
    refused(
        &format!("PrivateKey = {S1_PRIV}\n[Interface]"),
        1,
        Some("PrivateKey"),
        "line 1: PrivateKey: appears before any [Interface] or [Peer] section",
    );
    refused(
        "\n# c\nFoo = bar",
        3,
        Some("Foo"),
        "line 3: Foo: appears before any [Interface] or [Peer] section",
    );
}

#[test]
fn keys_in_the_wrong_section() {
    refused(
        &format!("[Interface]\nPublicKey = {S1_PUB}"),
        2,
        Some("PublicKey"),
        "line 2: PublicKey: belongs in [Peer], not [Interface]",
    );
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\nAddress = 10.0.0.1/32"),
        3,
        Some("Address"),
        "line 3: Address: belongs in [Interface], not [Peer]",
    );
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\nListenPort = 1"),
        3,
        Some("ListenPort"),
        "line 3: ListenPort: belongs in [Interface], not [Peer]",
    );
}

#[test]
fn wg_mode_refuses_every_wg_quick_key() {
    for key in Key::ALL.into_iter().filter(|k| k.is_wg_quick_only()) {
        let text = format!(
            "[Interface]\nListenPort = 1\n{} = x\n",
            key.name().to_lowercase()
        );
        refused_in(
            ParseMode::Wg,
            &text,
            3,
            Some(key.name()),
            &format!("line 3: {key}: only wg-quick understands this key, not wg setconf (strip it first)"),
        );
    }
    let wg_only = format!("[Interface]\nPrivateKey = {S1_PRIV}\nListenPort = 1\nFwMark = 1\n[Peer]\nPublicKey = {S1_PUB}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.0.0/8\nEndpoint = h:1\nPersistentKeepalive = 1");
    assert_eq!(
        parse_with_mode(&wg_only, ParseMode::Wg).unwrap(),
        ok(&wg_only)
    );
}

#[test]
fn duplicate_single_valued_keys() {
    let iface_cases = [
        ("PrivateKey", S1_PRIV, S2_PRIV),
        ("ListenPort", "1", "2"),
        ("FwMark", "1", "1"),
        ("MTU", "1280", "1420"),
        ("Table", "off", "auto"),
        ("SaveConfig", "true", "true"),
    ];
    for (key, a, b) in iface_cases {
        let text = format!(
            "[Interface]\n{key} = {a}\n# between\n{} = {b}\n",
            key.to_uppercase()
        );
        refused(
            &text,
            4,
            Some(key),
            &format!("line 4: {key}: already set on line 2"),
        );
    }
    let peer_cases = [
        ("PresharedKey", PSK, PSK),
        ("Endpoint", "h:1", "h:2"),
        ("PersistentKeepalive", "1", "off"),
    ];
    for (key, a, b) in peer_cases {
        let text = format!("[Peer]\nPublicKey = {S1_PUB}\n{key} = {a}\n{key} = {b}\n");
        refused(
            &text,
            4,
            Some(key),
            &format!("line 4: {key}: already set on line 3"),
        );
    }
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\nPublicKey = {S2_PUB}"),
        3,
        Some("PublicKey"),
        "line 3: PublicKey: already set on line 2",
    );
    // The same key in two different peers is fine.
    ok(&format!("[Peer]\nPublicKey = {S1_PUB}\nEndpoint = h:1\n[Peer]\nPublicKey = {S2_PUB}\nEndpoint = h:1"));
}

#[test]
fn duplicate_interface_section() {
    refused(
        "[Interface]\nListenPort = 1\n[Peer]\nPublicKey = Zu8sVzWIKNz3voQUGJnOK4uEE2SR0+YpIsOZMQ2V7Dc=\n[interface]\nFwMark = 1",
        5,
        None,
        "line 5: second [Interface] section (the first is on line 1)",
    );
}

#[test]
fn empty_values() {
    for key in [
        "PrivateKey",
        "ListenPort",
        "FwMark",
        "MTU",
        "Table",
        "SaveConfig",
    ] {
        refused(
            &format!("[Interface]\n{key} ="),
            2,
            Some(key),
            &format!("line 2: {key}: has no value"),
        );
    }
    refused(
        "[Peer]\nPublicKey =  # none",
        2,
        Some("PublicKey"),
        "line 2: PublicKey: has no value",
    );
    for key in [
        "PresharedKey",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
    ] {
        refused(
            &format!("[Peer]\nPublicKey = {S1_PUB}\n{key} ="),
            3,
            Some(key),
            &format!("line 3: {key}: has no value"),
        );
    }
}

#[test]
fn bad_keys_are_never_quoted() {
    let reason = "key is not 32 bytes of base64 (44 characters ending in '=')";
    let leaked = &S1_PRIV[..43];
    let e = refused(
        &format!("[Interface]\nPrivateKey = {leaked}"),
        2,
        Some("PrivateKey"),
        &format!("line 2: PrivateKey: {reason}"),
    );
    assert!(!format!("{e:?}").contains(leaked));
    assert!(std::error::Error::source(&e).is_some());
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}x"),
        2,
        Some("PublicKey"),
        &format!("line 2: PublicKey: {reason}"),
    );
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\nPresharedKey = not-a-key"),
        3,
        Some("PresharedKey"),
        &format!("line 3: PresharedKey: {reason}"),
    );
}

#[test]
fn peer_without_public_key() {
    refused(
        "[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n",
        3,
        None,
        "line 3: [Peer] section has no PublicKey",
    );
    // Reported when the section ends, at its header: before a later error.
    refused(
        &format!("[Peer]\nPublicKey = {S1_PUB}\n[Peer]\n[Peer]\nPublicKey = {S1_PUB}"),
        3,
        None,
        "line 3: [Peer] section has no PublicKey",
    );
    refused("[Peer]", 1, None, "line 1: [Peer] section has no PublicKey");
}

#[test]
fn duplicate_peers() {
    refused(
        &format!(
            "[Peer]\nPublicKey = {S1_PUB}\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\npublickey = {S1_PUB}"
        ),
        6,
        Some("PublicKey"),
        "line 6: PublicKey: the same peer is already defined on line 2",
    );
}

#[test]
fn first_error_wins_and_nothing_partial_comes_back() {
    let text = format!("[Interface]\nListenPort = 1\n[Peer]\nPublicKey = {S1_PUB}\nAllowedIPs = 10.0.0.0/33\nEndpoint = nope\n");
    let e = refused(
        &text,
        5,
        Some("AllowedIPs"),
        "line 5: AllowedIPs: \"10.0.0.0/33\" is not a valid prefix",
    );
    assert!(matches!(e.kind, ErrorKind::InvalidValue { .. }));
}

#[test]
fn error_text_is_escaped_and_short() {
    let e = refused(
        "[Interface]\nBad\u{1b}[2J\u{202e} = 1",
        2,
        Some("Bad\\u{1b}[2J\\u{202e}"),
        "line 2: Bad\\u{1b}[2J\\u{202e}: unknown key in [Interface]",
    );
    assert!(!e.to_string().contains('\u{1b}'));
    let long = "9".repeat(1000);
    let e = parse(&format!("[Interface]\nListenPort = {long}")).unwrap_err();
    let shown = e.to_string();
    assert!(shown.len() < 200, "{shown}");
    assert!(shown.contains("99..."), "{shown}");
    let e = parse("[Interface]\nMTU = \"1\"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2: MTU: \"\\\"1\\\"\" is not an MTU from 68 to 65535"
    );
}

#[test]
fn strip_matches_wg_quick_strip() {
    let text = format!(
        "[Interface]
Address = 192.168.42.1/24
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
ListenPort = 1194
FwMark = 0x10
PrivateKey = {S1_PRIV}

[Peer]
PublicKey = {S2_PUB}
AllowedIPs = 192.168.42.2/32, 192.168.42.0/24
Endpoint = wgserver2.example.com:1194
PersistentKeepalive = 25
"
    );
    // What `wg-quick strip` (wireguard-tools v1.0.20210914) prints for it.
    let wg_quick_strip = format!(
        "[Interface]
ListenPort = 1194
FwMark = 0x10
PrivateKey = {S1_PRIV}

[Peer]
PublicKey = {S2_PUB}
AllowedIPs = 192.168.42.2/32, 192.168.42.0/24
Endpoint = wgserver2.example.com:1194
PersistentKeepalive = 25
"
    );
    assert_eq!(ok(&text).strip().to_string(), wg_quick_strip);
}
