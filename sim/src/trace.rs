//! The run's trace: a hash over every input and action (so two runs of a seed can be compared
//! bit for bit) and, when replaying a seed, a readable line per event.

use std::hash::{Hash, Hasher};

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[derive(Debug, Default)]
pub struct Trace {
    hasher: Fnv64,
    /// Print every event as it happens.
    pub verbose: bool,
}

impl Trace {
    pub fn new(verbose: bool) -> Self {
        Trace {
            hasher: Fnv64::default(),
            verbose,
        }
    }

    pub fn hash(&mut self, value: &impl Hash) {
        value.hash(&mut self.hasher);
    }

    /// Prints a line stamped with simulated time, only when verbose.
    pub fn line(&self, now_us: u64, text: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>6}.{:03} ms] {}", now_us / 1000, now_us % 1000, text());
        }
    }

    pub fn digest(&self) -> u64 {
        self.hasher.finish()
    }
}
