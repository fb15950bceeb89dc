//! A sysfs counter read again and again through one open file: opened in the
//! receiving namespace before the bench moves into the sending one, it keeps
//! reading the receiving side's interface.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub struct Counter(File);

impl Counter {
    pub fn open(path: &str) -> io::Result<Counter> {
        File::open(path).map(Counter)
    }

    /// The current value (sysfs regenerates it on every read from offset 0).
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 32];
        let n = self.0.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| io::Error::other("counter is not a number"))
    }
}
