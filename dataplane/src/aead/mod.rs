//! Batched ChaCha20-Poly1305 for transport messages (RFC 8439 AEAD with
//! WireGuard's nonce: 32 zero bits, then the 64-bit little-endian counter;
//! empty AAD).
//!
//! A worker queues every message of a receive or transmit batch, has the
//! batch compute what they need in one go, then opens or seals each message
//! where it lies. Messages are queued before their bytes are touched, so a
//! batch can span AF_XDP frames and socket buffers that are never borrowed
//! together.
//!
//! Short messages are where per-message AEAD cost is mostly fixed overhead
//! (a whole ChaCha20 block for the Poly1305 key, setup, a short final
//! block), so `generate` computes the keystream of every short message of
//! the batch at once, eight blocks per AVX2 pass regardless of which message
//! or key each block belongs to; `open`/`seal` then only run Poly1305 and an
//! XOR. Long messages go, one at a time, to the AVX-512 path (`avx512`:
//! sixteen ChaCha20 blocks a pass, Poly1305 with IFMA) where the CPU has
//! AVX-512 with IFMA, and to ring's stitched AVX2 ChaCha20-Poly1305
//! elsewhere: both are faster than the batch once the fixed costs are
//! amortised.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod chacha;
mod poly1305;

use ring::aead::{Aad, LessSafeKey, Tag};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::messages::TAG_LEN;
use crate::transport::{counter_nonce, OpenError, SessionKey};
use poly1305::Poly1305;

/// Longest plaintext the batch computes itself; longer ones go to ring.
/// Measured with `cargo bench -p wirespeed-bench --bench transport -- aead`
/// (32 messages, 4 keys, SHORT_MAX raised past 1,420 so every size took the
/// batch path; 2-core AMD EPYC (Zen 3) VM, AVX2; ns per message, two runs):
///
/// | bytes | batch seal | ring seal | batch open | ring open |
/// |------:|-----------:|----------:|-----------:|----------:|
/// |    64 |    114-119 |   187-188 |        121 |   193-195 |
/// |   128 |    167-200 |   208-213 |    175-215 |       227 |
/// |   256 |    322-338 |   274     |    296-357 |   288-289 |
/// |   512 |    509-529 |   419-439 |    520-551 |   494-511 |
/// |   768 |    766-803 |   506-544 |    730-779 |   564-612 |
/// |  1420 |  1268-1273 |   865-874 |  1300-1399 |   839-915 |
///
/// The batch saves ring's fixed per-message cost (~150 ns) but pays more
/// per byte (~0.75 vs ~0.5 ns: scalar Poly1305 against ring's stitched
/// AVX2), so they cross between 160 and 192 bytes (a run at 160: 210 vs
/// 229 seal; at 192: 269 vs 252).
const SHORT_MAX: usize = 128;

/// Fewest leftover blocks worth a full eight-lane AVX2 pass rather than
/// one scalar block each (eight AVX2 lanes ~185 ns, one scalar block
/// ~150 ns).
const TAIL_X8_MIN: usize = 2;

/// One queued message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobId(usize);

struct Job {
    /// A short job's key as ChaCha20 state words, which is also cheaper to
    /// wipe (zero for a long job).
    key: [u32; 8],
    /// A long job's key: a copy of the session's ring key, since building
    /// one per message costs ring 30-40 ns. Like the session's own, ring
    /// cannot wipe it.
    ring: Option<LessSafeKey>,
    counter: u64,
    text_len: usize,
    /// Index of this job's first keystream block (block 0) in the scratch,
    /// once `generate` has computed it; blocks 1.. follow.
    ks: Option<usize>,
}

/// The messages of one batch and what was computed for them.
pub struct AeadBatch {
    jobs: Vec<Job>,
    /// Keystream blocks of the generated short jobs, as little-endian
    /// 64-bit words: wiping it a word rather than a byte at a time keeps
    /// `clear` cheap. Kept across batches so a steady stream of batches
    /// does not allocate.
    scratch: Vec<[u64; 8]>,
    /// Blocks of `scratch` holding keystream (to wipe in `clear`).
    ks_used: usize,
    /// Jobs before this index have been through `generate`.
    generated: usize,
    /// Long messages go to the AVX-512 path rather than to ring.
    wide: bool,
}

impl Default for AeadBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl AeadBatch {
    pub fn new() -> Self {
        AeadBatch {
            jobs: Vec::with_capacity(64),
            scratch: Vec::new(),
            ks_used: 0,
            generated: 0,
            wide: wide(),
        }
    }

    /// A batch that gives long messages to ring whatever the CPU, so the
    /// tests cover that path on machines with AVX-512 too.
    #[cfg(test)]
    fn ring_for_long() -> Self {
        let mut b = Self::new();
        b.wide = false;
        b
    }

    /// Queues a message of `text_len` bytes (tag excluded) under `key` and
    /// the transport `counter`.
    pub fn push(&mut self, key: &SessionKey, counter: u64, text_len: usize) -> JobId {
        if self.jobs.len() == self.jobs.capacity() {
            self.grow_jobs();
        }
        let to_ring = text_len > SHORT_MAX && !self.wide;
        self.jobs.push(Job {
            key: if to_ring {
                [0; 8]
            } else {
                chacha::key_words(key.raw())
            },
            ring: to_ring.then(|| key.ring().clone()),
            counter,
            text_len,
            ks: None,
        });
        JobId(self.jobs.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Does the work every queued message needs before its bytes are
    /// opened or sealed. Call once after the last `push`.
    pub fn generate(&mut self) {
        let start = self.generated;
        let mut end = self.ks_used;
        for j in &mut self.jobs[start..] {
            if j.text_len <= SHORT_MAX {
                j.ks = Some(end);
                end += 1 + blocks(j.text_len);
            }
        }
        let short_end = end;
        for j in &mut self.jobs[start..] {
            if j.text_len > SHORT_MAX && j.ring.is_none() && paired_tail(j.text_len) {
                // Blocks 16 .. 24 of a full-size message: two such tails
                // make one pass (see `tails`).
                j.ks = Some(end);
                end += 8;
            }
        }
        self.reserve_scratch(end);
        if end > short_end {
            self.tails(start);
        }

        // Jobs' blocks are laid out in the order they are queued here, so
        // each pass fills consecutive scratch blocks.
        let mut lanes = Lanes {
            input: [[0; 16]; 8],
            n: 0,
            at: self.ks_used,
        };
        for j in &self.jobs[start..] {
            if j.ks.is_none() || j.text_len > SHORT_MAX {
                continue;
            }
            let mut s = chacha::state(&j.key, nonce_words(j.counter));
            for b in 0..=blocks(j.text_len) {
                s[12] = b as u32;
                lanes.input[lanes.n] = s;
                lanes.n += 1;
                if lanes.n == 8 {
                    lanes.flush(&mut self.scratch);
                }
            }
            s.zeroize();
        }
        lanes.flush(&mut self.scratch);
        lanes.input.zeroize();
        debug_assert_eq!(lanes.at, short_end);
        self.generated = self.jobs.len();
        self.ks_used = end;
    }

    /// Computes the keystream tails of the long jobs from `start` on that
    /// `generate` gave scratch room to, two jobs a pass: the rounds are a
    /// chain of dependent steps, so a pass costs the same with eight lanes
    /// as with sixteen, and a 1,420-byte message needs 24 blocks, one and a
    /// half passes.
    #[cfg(target_arch = "x86_64")]
    fn tails(&mut self, start: usize) {
        let mut waiting: Option<usize> = None;
        for i in start..self.jobs.len() {
            let j = &self.jobs[i];
            if j.ring.is_some() || j.text_len <= SHORT_MAX || j.ks.is_none() {
                continue;
            }
            let Some(w) = waiting.take() else {
                waiting = Some(i);
                continue;
            };
            let (a, b) = (&self.jobs[w], &self.jobs[i]);
            let (at, bt) = (a.ks.expect("set above"), b.ks.expect("set above"));
            let mut out = [[0u64; 8]; 16];
            // SAFETY: long jobs without a ring key exist only in a batch
            // made with wide() true.
            unsafe {
                avx512::tails_x2(
                    (&a.key, nonce_words(a.counter)),
                    Some((&b.key, nonce_words(b.counter))),
                    &mut out,
                )
            };
            self.scratch[at..at + 8].copy_from_slice(&out[..8]);
            self.scratch[bt..bt + 8].copy_from_slice(&out[8..]);
            out.zeroize();
        }
        if let Some(w) = waiting {
            let a = &self.jobs[w];
            let at = a.ks.expect("set above");
            // SAFETY: as above.
            unsafe {
                avx512::tails_x2(
                    (&a.key, nonce_words(a.counter)),
                    None,
                    &mut self.scratch[at..at + 8],
                )
            };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn tails(&mut self, _start: usize) {}

    /// Opens `job` in place: `body` is its ciphertext followed by the tag.
    /// Returns the plaintext; on failure the bytes are garbage.
    pub fn open<'b>(&self, job: JobId, body: &'b mut [u8]) -> Result<&'b mut [u8], OpenError> {
        let j = self.jobs.get(job.0).ok_or(OpenError)?;
        if j.text_len.checked_add(TAG_LEN) != Some(body.len()) {
            return Err(OpenError);
        }
        if let Some(k) = &j.ring {
            return k
                .open_in_place(counter_nonce(j.counter), Aad::empty(), body)
                .map_err(|_| OpenError);
        }
        let (text, tag) = body.split_at_mut(j.text_len);
        #[cfg(target_arch = "x86_64")]
        if j.text_len > SHORT_MAX {
            // SAFETY: a long job has no ring key only when the batch was
            // made with wide() true: the CPU has what the AVX-512 path needs.
            let ok =
                unsafe { avx512::open(&j.key, nonce_words(j.counter), text, tag, self.tail(j)) };
            return if bool::from(ok) {
                Ok(text)
            } else {
                Err(OpenError)
            };
        }
        let ok = match j.ks {
            Some(at) => {
                let ks = &self.scratch[at..=at + blocks(j.text_len)];
                let ok = tag_eq(&aead_tag(otk(&ks[0]), text), tag);
                if bool::from(ok) {
                    xor(text, ks[1..].as_flattened());
                }
                ok
            }
            None => {
                let (mut s, mut b0) = block0(j);
                let ok = tag_eq(&aead_tag(otk(&b0), text), tag);
                if bool::from(ok) {
                    chacha::xor_stream(&s, 1, text);
                }
                s.zeroize();
                b0.zeroize();
                ok
            }
        };
        if bool::from(ok) {
            Ok(text)
        } else {
            Err(OpenError)
        }
    }

    /// Seals `job` in place: `body` is its plaintext followed by room for
    /// the tag. False (and nothing written) if `body` is not that long.
    pub fn seal(&self, job: JobId, body: &mut [u8]) -> bool {
        let Some(j) = self.jobs.get(job.0) else {
            return false;
        };
        if j.text_len.checked_add(TAG_LEN) != Some(body.len()) {
            return false;
        }
        let (text, tag_out) = body.split_at_mut(j.text_len);
        if let Some(k) = &j.ring {
            let tag: Tag = k
                .seal_in_place_separate_tag(counter_nonce(j.counter), Aad::empty(), text)
                .expect("transport messages are within ChaCha20-Poly1305 limits");
            tag_out.copy_from_slice(tag.as_ref());
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if j.text_len > SHORT_MAX {
            // SAFETY: as in open.
            let tag = unsafe { avx512::seal(&j.key, nonce_words(j.counter), text, self.tail(j)) };
            tag_out.copy_from_slice(&tag);
            return true;
        }
        let tag = match j.ks {
            Some(at) => {
                let ks = &self.scratch[at..=at + blocks(j.text_len)];
                xor(text, ks[1..].as_flattened());
                aead_tag(otk(&ks[0]), text)
            }
            None => {
                let (mut s, mut b0) = block0(j);
                chacha::xor_stream(&s, 1, text);
                let tag = aead_tag(otk(&b0), text);
                s.zeroize();
                b0.zeroize();
                tag
            }
        };
        tag_out.copy_from_slice(&tag);
        true
    }

    /// A long job's precomputed keystream tail, if `generate` made one.
    fn tail(&self, j: &Job) -> Option<&[[u64; 8]]> {
        j.ks.map(|at| &self.scratch[at..at + 8])
    }

    /// Forgets every job, wiping the keys and the keystream.
    pub fn clear(&mut self) {
        for j in &mut self.jobs {
            j.key.zeroize();
        }
        self.jobs.clear();
        for b in &mut self.scratch[..self.ks_used] {
            b.zeroize();
        }
        self.ks_used = 0;
        self.generated = 0;
    }

    /// Doubles the job list by hand: `Vec::push` would free the old buffer
    /// with the keys still in it.
    fn grow_jobs(&mut self) {
        let mut bigger = Vec::with_capacity((self.jobs.capacity() * 2).max(16));
        bigger.extend(self.jobs.iter().map(|j| Job {
            ring: j.ring.clone(),
            ..*j
        }));
        for j in &mut self.jobs {
            j.key.zeroize();
        }
        self.jobs = bigger;
    }

    /// Makes the scratch at least `end` blocks, keeping (and wiping from
    /// the old buffer) the keystream already there.
    fn reserve_scratch(&mut self, end: usize) {
        if self.scratch.len() >= end {
            return;
        }
        let mut bigger = vec![[0u64; 8]; end.max(2 * self.scratch.len())];
        bigger[..self.ks_used].copy_from_slice(&self.scratch[..self.ks_used]);
        for b in &mut self.scratch[..self.ks_used] {
            b.zeroize();
        }
        self.scratch = bigger;
    }
}

impl Drop for AeadBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Blocks queued for one eight-lane pass; their output goes to the scratch
/// from block `at` on.
struct Lanes {
    input: [[u32; 16]; 8],
    n: usize,
    at: usize,
}

impl Lanes {
    fn flush(&mut self, scratch: &mut [[u64; 8]]) {
        let n = self.n;
        let out = &mut scratch[self.at..self.at + n];
        if n == 8 || (n >= TAIL_X8_MIN && chacha::have_x8()) {
            // Lanes past n hold stale (or zero) states; their output is
            // computed and dropped.
            chacha::blocks_x8(&self.input, out);
        } else {
            for (i, o) in self.input.iter().zip(out) {
                chacha::block_words(i, o);
            }
        }
        self.at += n;
        self.n = 0;
    }
}

/// Whether a long message's keystream past the first AVX-512 pass is
/// computed by `generate`, two messages a pass.
fn paired_tail(text_len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::has_paired_tail(text_len);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether long messages go to the AVX-512 path rather than to ring.
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Keystream blocks after block 0 that `text_len` bytes use.
fn blocks(text_len: usize) -> usize {
    text_len.div_ceil(64)
}

fn nonce_words(counter: u64) -> [u32; 3] {
    [0, counter as u32, (counter >> 32) as u32]
}

/// The ChaCha20 state of `j` and its block 0 (the Poly1305 key source), for
/// a short job whose keystream was not generated.
fn block0(j: &Job) -> ([u32; 16], [u64; 8]) {
    let s = chacha::state(&j.key, nonce_words(j.counter));
    let mut b0 = [0u64; 8];
    chacha::block_words(&s, &mut b0);
    (s, b0)
}

/// The Poly1305 one-time key: the first 32 bytes of block 0.
fn otk(block0: &[u64; 8]) -> &[u64; 4] {
    block0[..4].try_into().expect("4 of 8 words")
}

/// The AEAD tag of `ct` with empty AAD.
fn aead_tag(otk: &[u64; 4], ct: &[u8]) -> [u8; 16] {
    Poly1305::aead_tag(otk, &[], ct)
}

/// Constant-time tag comparison, two words at a time (subtle compares a
/// slice byte by byte, each behind an optimisation barrier).
fn tag_eq(want: &[u8; 16], got: &[u8]) -> subtle::Choice {
    let w = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    w(&want[..8]).ct_eq(&w(&got[..8])) & w(&want[8..]).ct_eq(&w(&got[8..16]))
}

/// XORs the keystream words `ks` (little-endian) into `text`.
fn xor(text: &mut [u8], ks: &[u64]) {
    let whole = text.len() / 8;
    let (head, tail) = text.split_at_mut(whole * 8);
    for (t, k) in head.chunks_exact_mut(8).zip(ks) {
        let v = u64::from_le_bytes(t.try_into().expect("8 bytes")) ^ k;
        t.copy_from_slice(&v.to_le_bytes());
    }
    if !tail.is_empty() {
        for (t, k) in tail.iter_mut().zip(ks[whole].to_le_bytes()) {
            *t ^= k;
        }
    }
}

#[cfg(test)]
mod tests;
