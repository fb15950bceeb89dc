//! Property tests: written configs parse back equal, and no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::keys::{encode_base64_key, PresharedKey, PrivateKey, PublicKey};

fn ip_cidr() -> impl Strategy<Value = IpCidr> {
    any::<IpAddr>().prop_flat_map(|addr| {
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).prop_map(move |cidr| IpCidr { addr, cidr })
    })
}

/// Labels start with a letter, so a name never reads as an IPv4 address.
fn host_name() -> impl Strategy<Value = String> {
    "[a-zA-Z]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?(\\.[a-zA-Z0-9_]{1,8}){0,3}\\.?"
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (any::<Ipv4Addr>(), 1..=u16::MAX)
            .prop_map(|(ip, port)| Endpoint::Addr(SocketAddr::new(IpAddr::V4(ip), port))),
        // Flow info is not part of the text form, so it stays 0.
        (
            any::<Ipv6Addr>(),
            1..=u16::MAX,
            prop_oneof![Just(0u32), any::<u32>()]
        )
            .prop_map(|(ip, port, scope)| Endpoint::Addr(SocketAddr::V6(
                SocketAddrV6::new(ip, port, 0, scope)
            ))),
        (host_name(), 1..=u16::MAX).prop_map(|(host, port)| Endpoint::Host { host, port }),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    prop_oneof![
        Just(Table::Off),
        Just(Table::Auto),
        any::<u32>().prop_map(Table::Id),
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,12}"
            .prop_filter("off and auto are not names", |n| {
                !n.eq_ignore_ascii_case("off") && !n.eq_ignore_ascii_case("auto")
            })
            .prop_map(Table::Name),
    ]
}

/// What parse keeps of a hook: no `#`, no line breaks, no surrounding space.
fn hook() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        9 => "[^#\\s\\p{C}]([^#\\p{C}]{0,30}[^#\\s\\p{C}])?",
    ]
}

fn hooks() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(hook(), 0..3)
}

fn interface() -> impl Strategy<Value = InterfaceConfig> {
    let wg = (
        proptest::option::of(any::<[u8; 32]>().prop_map(PrivateKey::from_bytes)),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u32>()),
    );
    let wg_quick = (
        prop::collection::vec(ip_cidr(), 0..4),
        prop::collection::vec(any::<IpAddr>(), 0..3),
        prop::collection::vec(host_name(), 0..3),
        proptest::option::of(68..=u16::MAX),
        proptest::option::of(table()),
        (hooks(), hooks(), hooks(), hooks()),
        proptest::option::of(any::<bool>()),
    );
    (wg, wg_quick).prop_map(
        |(
            (private_key, listen_port, fwmark),
            (
                address,
                dns,
                dns_search,
                mtu,
                table,
                (pre_up, post_up, pre_down, post_down),
                save_config,
            ),
        )| InterfaceConfig {
            private_key,
            listen_port,
            fwmark,
            address,
            dns,
            dns_search,
            mtu,
            table,
            pre_up,
            post_up,
            pre_down,
            post_down,
            save_config,
        },
    )
}

fn peer() -> impl Strategy<Value = PeerConfig> {
    (
        any::<[u8; 32]>().prop_map(PublicKey),
        proptest::option::of(any::<[u8; 32]>().prop_map(PresharedKey::from_bytes)),
        prop::collection::vec(ip_cidr(), 0..5),
        proptest::option::of(endpoint()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(
            |(public_key, preshared_key, allowed_ips, endpoint, persistent_keepalive)| PeerConfig {
                public_key,
                preshared_key,
                allowed_ips,
                endpoint,
                persistent_keepalive,
            },
        )
}

fn config() -> impl Strategy<Value = Config> {
    (interface(), prop::collection::vec(peer(), 0..6)).prop_map(|(interface, mut peers)| {
        // A file may not name a peer twice.
        let mut seen = std::collections::HashSet::new();
        peers.retain(|p| seen.insert(p.public_key));
        Config { interface, peers }
    })
}

fn noisy_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<[u8; 32]>().prop_map(|b| encode_base64_key(&b)),
        6 => select(vec![
            "off", "0", "0x10", "65535", "65536", "10.0.0.1/24", "::/0", "10.0.0.0/33",
            "1.2.3.4:5", "[::1]:5", "[fe80::1%2]:5", "host.example:1", "true", "auto",
            "1420", "1.1.1.1, lan", "echo %i", "a, b,,c", "",
        ])
        .prop_map(String::from),
        1 => "[0-9a-fx:./,\\[\\]% =]{0,24}",
        1 => "\\PC{0,16}",
    ]
}

/// Lines of one section: mostly its own keys, sometimes anything.
fn noisy_lines(own: Section) -> impl Strategy<Value = String> {
    let own_keys: Vec<String> = Key::ALL
        .iter()
        .filter(|k| k.section() == own)
        .flat_map(|k| [k.name().to_string(), k.name().to_lowercase()])
        .collect();
    let any_key: Vec<String> = Key::ALL
        .iter()
        .map(|k| k.name().to_string())
        .chain(["BOGUS", "Allowed IPs", ""].map(String::from))
        .collect();
    let key = prop_oneof![9 => select(own_keys), 1 => select(any_key)];
    let line = prop_oneof![
        1 => select(vec!["", "# c", "[Peer", "[Nope]"]).prop_map(String::from),
        12 => (key, noisy_value(), select(vec!["", " # c", "#"]))
            .prop_map(|(k, v, c)| format!("{k} = {v}{c}")),
        1 => "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n"))
}

/// Files that are often almost right, so parsing gets past line one and
/// a fair share come out valid, with peers.
fn noisy_file() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        3 => noisy_lines(Section::Interface).prop_map(|l| format!("[Interface]\n{l}")),
        4 => (any::<[u8; 32]>(), noisy_lines(Section::Peer)).prop_map(|(k, l)| {
            format!("[Peer]\nPublicKey = {}\n{l}", encode_base64_key(&k))
        }),
        1 => noisy_lines(Section::Peer).prop_map(|l| format!("[peer]\n{l}")),
        1 => "\\PC{0,30}",
    ];
    prop::collection::vec(section, 0..5).prop_map(|sections| sections.join("\n"))
}

proptest! {
    #[test]
    fn written_configs_parse_back_equal(config in config()) {
        let text = config.to_string();
        let parsed = parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&config), "{}", text);
        // The wg view of it is what wg setconf would accept.
        let stripped = config.strip();
        prop_assert_eq!(parse_with_mode(&stripped.to_string(), ParseMode::Wg), Ok(stripped));
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
        let _ = parse_with_mode(&text, ParseMode::Wg);
    }

    #[test]
    fn noisy_files_never_panic_and_what_parses_round_trips(text in noisy_file()) {
        if let Ok(config) = parse(&text) {
            let written = config.to_string();
            prop_assert_eq!(parse(&written), Ok(config), "{}\n----\n{}", text, written);
        }
        if let Err(e) = parse_with_mode(&text, ParseMode::Wg) {
            // Every error points at a line of the file.
            prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{}", e);
        }
    }
}
