//! The run's trace: a hash over every input and action (so two runs of a seed can be compared
//! bit for bit) and, when replaying a seed, a readable line per event.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// FNV-1a, 64 bits, taking eight bytes (or one integer) per step rather than one: stable
/// across Rust versions and platforms, unlike `DefaultHasher`, and fast enough to hash every
/// input and action of a run (byte-at-a-time FNV took a tenth of the simulator's time).
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Fnv64 {
    const PRIME: u64 = 0x0100_0000_01b3;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::PRIME);
    }
}

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
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        for byte in words.remainder() {
            self.mix(u64::from(*byte));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.mix(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }
}

#[derive(Debug, Default)]
pub struct Trace {
    hasher: Fnv64,
    /// Print every event as it happens.
    pub verbose: bool,
    /// Keep every line, stamped with simulated microseconds (for `--explain` and timelines);
    /// shared with whoever asked, so that a run that panics still leaves its lines.
    recorded: Option<Recording>,
}

impl Trace {
    pub fn new(verbose: bool) -> Self {
        Trace {
            hasher: Fnv64::default(),
            verbose,
            recorded: None,
        }
    }

    /// From now on, keep every line in `recording` as well.
    pub fn record_into(&mut self, recording: Recording) {
        self.recorded = Some(recording);
    }

    pub fn hash(&mut self, value: &impl Hash) {
        value.hash(&mut self.hasher);
    }

    /// Prints a line stamped with simulated time when verbose, keeps it when recording.
    pub fn line(&mut self, now_us: u64, text: impl FnOnce() -> String) {
        if !self.verbose && self.recorded.is_none() {
            return;
        }
        let text = text();
        if self.verbose {
            println!("{}", stamped(now_us, &text));
        }
        if let Some(recorded) = &self.recorded {
            recorded.push(now_us, text);
        }
    }

    pub fn digest(&self) -> u64 {
        self.hasher.finish()
    }
}

/// A trace line as `--replay` prints it: `[   123.456 ms] text`.
pub fn stamped(now_us: u64, text: &str) -> String {
    format!("[{:>6}.{:03} ms] {}", now_us / 1000, now_us % 1000, text)
}

/// Trace lines kept as a run makes them: (simulated µs, text).
#[derive(Clone, Debug, Default)]
pub struct Recording(Arc<Mutex<Vec<(u64, String)>>>);

impl Recording {
    fn push(&self, now_us: u64, text: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((now_us, text));
    }

    /// Every line kept so far.
    pub fn take(&self) -> Vec<(u64, String)> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}
