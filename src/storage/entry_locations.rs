//! Where each entry of the log lies on disk, for reading entries back.
//!
//! The log keeps one location per entry it holds, and it holds up to the retention behind each
//! snapshot (a million entries by default), so the size of one location is what the retention
//! costs in memory. A location named its segment, offset and length in 24 bytes: 24 MB per node
//! once the retention filled. Entries lie in segments in index order, so the segment changes
//! only at a few indexes: each entry keeps only its offset and length (8 bytes), and a short
//! list says from which entry on the segment changes.

use super::error::StorageError;

/// Where one entry's record lives, as the log reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    pub sequence: u64,
    pub offset: u64,
    pub len: u32,
}

/// A record within its segment. Offsets fit in 32 bits because segments are cut long before
/// 4 GiB (see `SEGMENT_BYTES_LIMIT`).
#[derive(Clone, Copy, Debug)]
struct Record {
    offset: u32,
    len: u32,
}

/// The locations of consecutive entries, the first at position 0.
#[derive(Debug, Default)]
pub(super) struct EntryLocations {
    records: Vec<Record>,
    /// `(position, sequence)`: the entries from `position` on lie in segment `sequence`, up to
    /// the next pair's position. Positions strictly grow, the first is 0, and no position is
    /// past the last record (empty when there are no records).
    segments: Vec<(usize, u64)>,
}

impl EntryLocations {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.segments.clear();
    }

    /// Keeps the first `len` locations.
    pub fn truncate(&mut self, len: usize) {
        self.records.truncate(len);
        while self
            .segments
            .last()
            .is_some_and(|&(position, _)| position >= len)
        {
            self.segments.pop();
        }
    }

    /// Adds the location of the next entry. An offset past 4 GiB is refused: no segment this
    /// log writes grows that far, so only a damaged or foreign one could hold it.
    pub fn push(&mut self, location: Location) -> Result<(), u64> {
        let offset = u32::try_from(location.offset).map_err(|_| location.offset)?;
        if self
            .segments
            .last()
            .is_none_or(|&(_, sequence)| sequence != location.sequence)
        {
            debug_assert!(
                self.segments
                    .last()
                    .is_none_or(|&(_, sequence)| sequence < location.sequence),
                "entries lie in segments in index order"
            );
            self.segments.push((self.records.len(), location.sequence));
        }
        self.records.push(Record {
            offset,
            len: location.len,
        });
        Ok(())
    }

    /// The location at `position` (below `len()`).
    pub fn get(&self, position: usize) -> Location {
        let record = self.records[position];
        let run = self
            .segments
            .partition_point(|&(start, _)| start <= position);
        Location {
            sequence: self.segments[run - 1].1,
            offset: u64::from(record.offset),
            len: record.len,
        }
    }

    /// The locations at `from..=to`, in order.
    pub fn range(&self, from: usize, to: usize) -> Vec<Location> {
        (from..=to).map(|position| self.get(position)).collect()
    }

    /// The position of the last entry lying in one of `sequences`, if any.
    pub fn last_in(&self, sequences: &[u64]) -> Option<usize> {
        let run = self
            .segments
            .iter()
            .rposition(|(_, sequence)| sequences.contains(sequence))?;
        let end = self
            .segments
            .get(run + 1)
            .map_or(self.records.len(), |&(position, _)| position);
        Some(end - 1)
    }

    /// Forgets the first `count` locations; the rest move down by `count`.
    pub fn drain_front(&mut self, count: usize) {
        self.records.drain(..count);
        let first_kept = self
            .segments
            .partition_point(|&(start, _)| start <= count)
            .saturating_sub(1);
        self.segments.drain(..first_kept);
        if self.records.is_empty() {
            self.segments.clear();
        }
        for (position, _) in &mut self.segments {
            *position = position.saturating_sub(count);
        }
    }
}

/// The error for a record past 4 GiB into `path`'s segment.
pub(super) fn offset_too_large(path: &std::path::Path, offset: u64) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: "a record lies past 4 GiB into its segment; this log cuts segments long \
                 before that, so the file is damaged or was not written by it"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One thing the log does to its locations; each is done to the compact form and to the
    /// plain vector of full locations it replaced, which must then agree.
    #[derive(Debug, Clone)]
    enum Step {
        Push { next_segment: bool, len: u32 },
        Truncate(usize),
        DrainFront(usize),
        Clear,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (any::<bool>(), 1..100u32).prop_map(|(next_segment, len)| Step::Push { next_segment, len }),
            1 => (0..40usize).prop_map(Step::Truncate),
            1 => (0..40usize).prop_map(Step::DrainFront),
            1 => Just(Step::Clear),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_vector_of_full_locations(steps in proptest::collection::vec(step(), 0..200)) {
            let mut compact = EntryLocations::default();
            let mut plain: Vec<Location> = Vec::new();
            let (mut sequence, mut offset) = (1u64, 0u64);
            for step in steps {
                match step {
                    Step::Push { next_segment, len } => {
                        if next_segment {
                            sequence += 1;
                            offset = 0;
                        }
                        let location = Location { sequence, offset, len };
                        offset += u64::from(len);
                        compact.push(location).unwrap();
                        plain.push(location);
                    }
                    Step::Truncate(len) => {
                        compact.truncate(len);
                        plain.truncate(len);
                    }
                    Step::DrainFront(count) => {
                        let count = count.min(plain.len());
                        compact.drain_front(count);
                        plain.drain(..count);
                    }
                    Step::Clear => {
                        compact.clear();
                        plain.clear();
                    }
                }
                prop_assert_eq!(compact.len(), plain.len());
                for (position, location) in plain.iter().enumerate() {
                    prop_assert_eq!(compact.get(position), *location);
                }
                if !plain.is_empty() {
                    prop_assert_eq!(compact.range(0, plain.len() - 1), plain.clone());
                }
                for dead in [vec![sequence], vec![sequence.saturating_sub(1)], vec![1, 2, 3]] {
                    let expected = plain.iter().rposition(|l| dead.contains(&l.sequence));
                    prop_assert_eq!(compact.last_in(&dead), expected);
                }
            }
        }
    }

    #[test]
    fn an_offset_past_4_gib_is_refused() {
        let mut locations = EntryLocations::default();
        let too_far = 1u64 << 32;
        let refused = locations.push(Location {
            sequence: 1,
            offset: too_far,
            len: 10,
        });
        assert_eq!(refused, Err(too_far));
        assert_eq!(locations.len(), 0);
    }

    #[test]
    fn a_location_takes_8_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 8);
    }
}
