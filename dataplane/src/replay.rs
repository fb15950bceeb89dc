//! Sliding-window replay protection for transport-message counters.
//!
//! The same algorithm as the Linux kernel's `counter_validate`
//! (drivers/net/wireguard/receive.c), itself RFC 6479: a ring of 64-bit words
//! covering [`REPLAY_WINDOW_BITS`] counters, where moving the window forward
//! only zeroes the words it skips over instead of shifting the whole bitmap.
//! One word of the ring is always partly "ahead" of the highest counter, so the
//! usable window is `REPLAY_WINDOW_BITS - 64` counters: a counter `c` is fresh
//! enough iff `c + WINDOW_SIZE >= highest`. Matching the kernel exactly matters
//! because a peer's reordering tolerance should not depend on which
//! implementation sits at the other end.
//!
//! The check is split in two so the worker can drop replays before paying for
//! the AEAD ([`ReplayWindow::would_accept`]) and commit only counters whose tag
//! verified ([`ReplayWindow::accept`]); committing unauthenticated counters
//! would let an attacker slide the window past real traffic.

use crate::consts::{REJECT_AFTER_MESSAGES, REPLAY_WINDOW_BITS};

const WORD_BITS: u64 = u64::BITS as u64;
const WORDS: usize = (REPLAY_WINDOW_BITS / WORD_BITS) as usize;
// Ring indices wrap with a mask, which needs a power of two.
const _: () = assert!(WORDS.is_power_of_two());
const WORD_MASK: u64 = WORDS as u64 - 1;

/// How far behind the highest accepted counter a counter may still be accepted
/// (the kernel's `COUNTER_WINDOW_SIZE`).
pub const WINDOW_SIZE: u64 = REPLAY_WINDOW_BITS - WORD_BITS;

/// Replay window for one receiving session key.
///
/// `repr(C)` and plain integers, all-zero meaning empty, because the data
/// plane keeps these in shared memory so they survive a process restart.
#[derive(Clone)]
#[repr(C)]
pub struct ReplayWindow {
    /// Highest accepted counter plus one, so that 0 means "nothing accepted yet"
    /// and counter 0 needs no special case (the kernel stores it the same way).
    next: u64,
    /// Bit `n % 64` of word `(n / 64) % WORDS` is set once counter `n - 1` was
    /// accepted, for the `n` still inside the window.
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    // 128 words of bitmap would drown every log line that includes a session.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest())
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below [`REJECT_AFTER_MESSAGES`] is acceptable once.
    pub const fn new() -> Self {
        Self {
            next: 0,
            bitmap: [0; WORDS],
        }
    }

    /// The highest counter accepted so far, `None` before the first.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Whether [`accept`](Self::accept) would take `counter` now, without
    /// changing anything: the cheap filter run before decryption.
    pub fn would_accept(&self, counter: u64) -> bool {
        let Some(n) = Self::shifted(counter) else {
            return false;
        };
        if WINDOW_SIZE + n < self.next {
            return false;
        }
        if n > self.next {
            // Bits above the highest counter are always clear, or are cleared
            // by the slide, so a new highest counter is never a duplicate.
            return true;
        }
        let (word, bit) = Self::position(n);
        self.bitmap[word] & bit == 0
    }

    /// Records `counter` as received. Returns `false`, leaving the window
    /// untouched, for a duplicate, a counter too far behind the highest, or one
    /// at or past [`REJECT_AFTER_MESSAGES`]. Call only after the tag verified.
    pub fn accept(&mut self, counter: u64) -> bool {
        let Some(n) = Self::shifted(counter) else {
            return false;
        };
        if WINDOW_SIZE + n < self.next {
            return false;
        }
        if n > self.next {
            let current = self.next / WORD_BITS;
            // Jumping by more than the ring clears it entirely; the cap keeps a
            // huge jump from costing more than one pass.
            let skipped = (n / WORD_BITS - current).min(WORDS as u64);
            for i in 1..=skipped {
                self.bitmap[((current + i) & WORD_MASK) as usize] = 0;
            }
            self.next = n;
        }
        let (word, bit) = Self::position(n);
        let seen = self.bitmap[word] & bit != 0;
        self.bitmap[word] |= bit;
        !seen
    }

    /// Forgets everything, as for a fresh key.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// The counter plus one, or `None` for counters a key must never accept.
    /// Below the limit the addition and `WINDOW_SIZE + n` cannot overflow.
    fn shifted(counter: u64) -> Option<u64> {
        (counter < REJECT_AFTER_MESSAGES).then(|| counter + 1)
    }

    fn position(n: u64) -> (usize, u64) {
        (
            ((n / WORD_BITS) & WORD_MASK) as usize,
            1u64 << (n % WORD_BITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Runs one step on both entry points so every test also checks that
    /// `would_accept` predicts `accept`.
    fn check(w: &mut ReplayWindow, counter: u64, expect: bool, step: &str) {
        assert_eq!(w.would_accept(counter), expect, "would_accept, {step}");
        assert_eq!(w.accept(counter), expect, "accept, {step}");
    }

    #[test]
    fn window_geometry_matches_kernel() {
        assert_eq!(WORDS, 128);
        assert_eq!(WINDOW_SIZE, 8128);
    }

    #[test]
    fn starts_empty() {
        let w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        assert!(w.would_accept(0));
        assert!(w.would_accept(REJECT_AFTER_MESSAGES - 1));
        assert!(!w.would_accept(REJECT_AFTER_MESSAGES));
        assert!(!w.would_accept(u64::MAX));
        assert_eq!(format!("{:?}", ReplayWindow::default()), format!("{w:?}"));
    }

    #[test]
    fn counter_zero_once() {
        let mut w = ReplayWindow::new();
        check(&mut w, 0, true, "first");
        check(&mut w, 0, false, "second");
        assert_eq!(w.highest(), Some(0));
    }

    #[test]
    fn would_accept_changes_nothing() {
        let mut w = ReplayWindow::new();
        assert!(w.would_accept(5));
        assert!(w.would_accept(5));
        assert_eq!(w.highest(), None);
        assert!(w.accept(5));
        assert!(!w.would_accept(5));
    }

    #[test]
    fn out_of_order_inside_window() {
        let mut w = ReplayWindow::new();
        check(&mut w, 10_000, true, "high");
        check(&mut w, 10_000 - WINDOW_SIZE, true, "oldest still inside");
        check(&mut w, 10_000 - WINDOW_SIZE - 1, false, "just outside");
        check(&mut w, 9_999, true, "one below");
        check(&mut w, 9_999, false, "one below again");
        check(&mut w, 10_001, true, "next");
        check(&mut w, 10_000 - WINDOW_SIZE, false, "duplicate of oldest");
    }

    #[test]
    fn big_jump_clears_stale_bits() {
        let mut w = ReplayWindow::new();
        for c in 0..200 {
            check(&mut w, c, true, "fill");
        }
        // Lands on ring words that held counters 0..200 before the jump.
        let far = 200 + REPLAY_WINDOW_BITS * 3;
        check(&mut w, far, true, "jump");
        for c in far - 150..far {
            check(&mut w, c, true, "behind the jump");
        }
        check(&mut w, 199, false, "too old after jump");
    }

    #[test]
    fn reset_forgets() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(3));
        w.reset();
        assert!(w.accept(3));
    }

    /// drivers/net/wireguard/selftest/counter.c, step for step.
    #[test]
    fn kernel_selftest() {
        const T_LIM: u64 = WINDOW_SIZE + 1;
        let mut w = ReplayWindow::new();
        let steps: [(u64, bool); 34] = [
            (0, true),
            (1, true),
            (1, false),
            (9, true),
            (8, true),
            (7, true),
            (7, false),
            (T_LIM, true),
            (T_LIM - 1, true),
            (T_LIM - 1, false),
            (T_LIM - 2, true),
            (2, true),
            (2, false),
            (T_LIM + 16, true),
            (3, false),
            (T_LIM + 16, false),
            (T_LIM * 4, true),
            (T_LIM * 4 - (T_LIM - 1), true),
            (10, false),
            (T_LIM * 4 - T_LIM, false),
            (T_LIM * 4 - (T_LIM + 1), false),
            (T_LIM * 4 - (T_LIM - 2), true),
            (T_LIM * 4 + 1 - T_LIM, false),
            (0, false),
            (REJECT_AFTER_MESSAGES, false),
            (REJECT_AFTER_MESSAGES - 1, true),
            (REJECT_AFTER_MESSAGES, false),
            (REJECT_AFTER_MESSAGES - 1, false),
            (REJECT_AFTER_MESSAGES - 2, true),
            (REJECT_AFTER_MESSAGES + 1, false),
            (REJECT_AFTER_MESSAGES + 2, false),
            (REJECT_AFTER_MESSAGES - 2, false),
            (REJECT_AFTER_MESSAGES - 3, true),
            (0, false),
        ];
        for (i, (counter, expect)) in steps.into_iter().enumerate() {
            check(&mut w, counter, expect, &format!("step {}", i + 1));
        }

        let mut w = ReplayWindow::new();
        for i in 1..=WINDOW_SIZE {
            check(&mut w, i, true, "ascending from 1");
        }
        check(&mut w, 0, true, "0 at the edge");
        check(&mut w, 0, false, "0 again");

        let mut w = ReplayWindow::new();
        for i in 2..=WINDOW_SIZE + 1 {
            check(&mut w, i, true, "ascending from 2");
        }
        check(&mut w, 1, true, "1 at the edge");
        check(&mut w, 0, false, "0 past the edge");

        let mut w = ReplayWindow::new();
        for i in (0..=WINDOW_SIZE).rev() {
            check(&mut w, i, true, "descending to 0");
        }

        let mut w = ReplayWindow::new();
        for i in (1..=WINDOW_SIZE + 1).rev() {
            check(&mut w, i, true, "descending to 1");
        }
        check(&mut w, 0, false, "0 past the edge");

        let mut w = ReplayWindow::new();
        for i in (1..=WINDOW_SIZE).rev() {
            check(&mut w, i, true, "descending from window size");
        }
        check(&mut w, WINDOW_SIZE + 1, true, "new highest");
        check(&mut w, 0, false, "0 pushed out");

        let mut w = ReplayWindow::new();
        for i in (1..=WINDOW_SIZE).rev() {
            check(&mut w, i, true, "descending from window size");
        }
        check(&mut w, 0, true, "0 first");
        check(&mut w, WINDOW_SIZE + 1, true, "then new highest");
    }

    /// The window's specification: counter `c` is accepted iff it is below
    /// REJECT_AFTER_MESSAGES, was never accepted, and either nothing was
    /// accepted yet or `c + WINDOW_SIZE >= max` (max = highest accepted).
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        max: Option<u64>,
    }

    impl Model {
        fn would_accept(&self, c: u64) -> bool {
            c < REJECT_AFTER_MESSAGES
                && !self.seen.contains(&c)
                && self.max.is_none_or(|m| c + WINDOW_SIZE >= m)
        }

        fn accept(&mut self, c: u64) -> bool {
            let ok = self.would_accept(c);
            if ok {
                self.seen.insert(c);
                self.max = self.max.max(Some(c));
            }
            ok
        }
    }

    /// Counters as offsets from a base, mostly small steps around the window
    /// edges so duplicates, reordering and slides all happen often.
    fn counter_ops() -> impl Strategy<Value = (u64, Vec<i64>)> {
        let base = prop_oneof![
            Just(0u64),
            Just(REJECT_AFTER_MESSAGES - 3 * REPLAY_WINDOW_BITS),
            any::<u64>().prop_map(|b| b % (REJECT_AFTER_MESSAGES / 2)),
        ];
        let delta = prop_oneof![
            4 => -70i64..70,
            2 => -(WINDOW_SIZE as i64) - 70..-(WINDOW_SIZE as i64) + 70,
            2 => -(REPLAY_WINDOW_BITS as i64 * 3)..(REPLAY_WINDOW_BITS as i64 * 3),
            1 => Just(WINDOW_SIZE as i64),
            1 => Just(REPLAY_WINDOW_BITS as i64 * 5),
        ];
        (base, prop::collection::vec(delta, 1..400))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_model((base, deltas) in counter_ops()) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            // Deltas move a cursor, so runs of steps walk the window forward
            // and back like a reordering network would.
            let mut cursor = base;
            for d in deltas {
                cursor = cursor.saturating_add_signed(d);
                let c = cursor;
                prop_assert_eq!(w.would_accept(c), m.would_accept(c), "would_accept({})", c);
                prop_assert_eq!(w.accept(c), m.accept(c), "accept({})", c);
                prop_assert_eq!(w.highest(), m.max);
            }
        }
    }
}
