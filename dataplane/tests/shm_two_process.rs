//! The shared-memory contract exercised by two real processes: this test
//! re-executes its own binary as the "data plane" side.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use dataplane::shm::events::{ToControl, ToDataplane};
use dataplane::shm::keys::{slot_of_index, KeyMaterial};
use dataplane::shm::layout::RECORD_SIZE;
use dataplane::shm::{allowed, Region};
use zeroize::Zeroizing;

const ROLE: &str = "WIRESPEED_SHM_TEST_ROLE";
const PATH: &str = "WIRESPEED_SHM_TEST_PATH";

fn material(gen: u8, index: u32) -> KeyMaterial {
    KeyMaterial {
        local_index: index,
        peer: gen as u32,
        remote_index: !index,
        initiator: gen.is_multiple_of(2),
        created_ns: gen as u64,
        send_key: Zeroizing::new([gen; 32]),
        recv_key: Zeroizing::new([gen.wrapping_add(1); 32]),
    }
}

/// The child: reads torn-free keys while the parent republishes, then
/// answers a command with an event.
fn child(path: PathBuf) {
    let r = Region::open(&path).expect("child opens region");
    let slot = r.key(slot_of_index(0x1234_0007));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reads = 0u64;
    let mut max_gen = 0u8;
    while max_gen < 200 && Instant::now() < deadline {
        if let Some((k, _)) = slot.read() {
            // Every field must come from the same publication.
            let g = k.send_key[0];
            assert!(k.send_key.iter().all(|&b| b == g), "torn send key");
            assert!(
                k.recv_key.iter().all(|&b| b == g.wrapping_add(1)),
                "torn recv key"
            );
            assert_eq!(k.peer, g as u32, "torn peer");
            assert_eq!(k.initiator, g % 2 == 0);
            max_gen = max_gen.max(g);
            reads += 1;
        }
    }
    assert!(
        reads > 0 && max_gen >= 200,
        "child saw publications up to {max_gen}"
    );
    // Wait for the parent's command and reply with an event.
    let mut rec = [0u8; RECORD_SIZE];
    let cmd = loop {
        if let Some(n) = r.ring_to_dataplane(0).pop(&mut rec) {
            break ToDataplane::decode(&rec[..n]).expect("valid command");
        }
        assert!(Instant::now() < deadline, "no command");
        std::thread::yield_now();
    };
    let ToDataplane::Flush { peer, .. } = cmd else {
        panic!("unexpected {cmd:?}")
    };
    let (table, _) = allowed::read_table(&r).expect("table");
    assert_eq!(table.len(), 2);
    let (k, seq) = slot.read().unwrap();
    let first = slot.reserve_counters(seq, 5).unwrap();
    r.peer(peer as usize).note_tx(148, 1, true);
    let ev = ToControl::SessionConfirmed {
        peer,
        local_index: k.local_index + first as u32,
    };
    assert!(r.ring_to_control(0).push(&ev.encode().unwrap()));
}

#[test]
fn two_processes_share_keys_tables_counters_and_rings() {
    if let Ok(role) = std::env::var(ROLE) {
        assert_eq!(role, "child");
        child(PathBuf::from(std::env::var(PATH).unwrap()));
        return;
    }
    // A private directory of the test's own: regions refuse shared ones.
    let dir = std::env::temp_dir().join(format!("wirespeed-shm-2p-{}", std::process::id()));
    let path = dir.join("wg0.region");
    let r = Region::create_exclusive(&path).unwrap();
    let index = 0x1234_0007;
    r.key(slot_of_index(index)).publish(&material(1, index));
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_share_keys_tables_counters_and_rings",
            "--nocapture",
        ])
        .env(ROLE, "child")
        .env(PATH, &path)
        .spawn()
        .unwrap();
    // Republish as fast as possible while the child reads.
    for g in 2..=200u8 {
        r.key(slot_of_index(index)).publish(&material(g, index));
        std::thread::sleep(Duration::from_micros(200));
    }
    allowed::write_table(
        &r,
        &[
            ("10.0.0.0".parse().unwrap(), 8, 3),
            ("::".parse().unwrap(), 0, 4),
        ],
    )
    .unwrap();
    r.peer(3).activate();
    assert!(r.ring_to_dataplane(0).push(
        &ToDataplane::Flush {
            peer: 3,
            keepalive: false
        }
        .encode()
        .unwrap()
    ));
    let mut rec = [0u8; RECORD_SIZE];
    let deadline = Instant::now() + Duration::from_secs(30);
    let ev = loop {
        if let Some(n) = r.ring_to_control(0).pop(&mut rec) {
            break ToControl::decode(&rec[..n]).unwrap();
        }
        assert!(Instant::now() < deadline, "no event from child");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(
        ev,
        ToControl::SessionConfirmed {
            peer: 3,
            local_index: index
        }
    );
    assert_eq!(r.peer(3).counters().tx_bytes, 148);
    assert_eq!(r.key(slot_of_index(index)).send_counter(), 5);
    assert!(kid.wait().unwrap().success(), "child process failed");
    drop(r);
    assert!(!path.exists(), "the creator removes its region");
    std::fs::remove_dir(dir).unwrap();
}
