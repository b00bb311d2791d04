//! A simulated disk: writes land in a volatile cache until a sync makes them durable. A crash
//! keeps only a prefix of the unsynced writes (in order), and may tear the last one: a prefix of
//! its records survives, as a checksummed log would recover it.

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ravel::core::{Entry, HardState, PersistId, Recovered};

/// One `Persist` action as the disk received it.
#[derive(Debug)]
struct Write {
    id: PersistId,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

#[derive(Debug, Default)]
pub struct SimDisk {
    hard_state: HardState,
    entries: Vec<Entry>,
    /// Written but not yet synced, oldest first.
    cache: VecDeque<Write>,
    /// The last write made durable.
    pub synced_id: PersistId,
    /// The last write received (so a message can wait for it).
    pub written_id: PersistId,
}

impl SimDisk {
    pub fn write(&mut self, id: PersistId, hard_state: Option<HardState>, entries: Vec<Entry>) {
        self.written_id = id;
        self.cache.push_back(Write {
            id,
            hard_state,
            entries,
        });
    }

    pub fn has_unsynced(&self) -> bool {
        !self.cache.is_empty()
    }

    /// Makes the cached writes up to `up_to` durable (those issued before the sync began).
    pub fn sync_up_to(&mut self, up_to: PersistId) {
        while self.cache.front().is_some_and(|write| write.id <= up_to) {
            let write = self.cache.pop_front().expect("checked non-empty");
            self.make_durable(write.hard_state, &write.entries);
            self.synced_id = write.id;
        }
    }

    fn make_durable(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.entries.truncate((first.index - 1) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state;
        }
    }

    /// Power loss: a random prefix of the cached writes survives; the last of them may be torn
    /// (entries are written before the hard state, so a torn write keeps a prefix of its entries
    /// and loses its hard state). Returns how many writes survived whole.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng) -> usize {
        let cached: Vec<Write> = self.cache.drain(..).collect();
        let survivors = rng.random_range(0..=cached.len());
        for (position, write) in cached.into_iter().enumerate() {
            if position < survivors {
                self.make_durable(write.hard_state, &write.entries);
            } else if position == survivors && !write.entries.is_empty() && rng.random_bool(0.5) {
                let kept = rng.random_range(0..write.entries.len());
                self.make_durable(None, &write.entries[..kept]);
                break;
            } else {
                break;
            }
        }
        // Persist ids are handles of one incarnation of the core: the next one starts again at 1.
        self.synced_id = 0;
        self.written_id = 0;
        survivors
    }

    /// What a restarting node reads back.
    pub fn recover(&self) -> Recovered {
        // No clamping of the commit index: it is written with or after the entries it covers, and
        // a core that broke that rule should fail loudly on restart.
        Recovered {
            hard_state: self.hard_state,
            entries: self.entries.clone(),
        }
    }

    pub fn durable_entries(&self) -> &[Entry] {
        &self.entries
    }
}
