//! A snapshot arriving from the leader, chunk by chunk, kept in memory until its last chunk
//! installs it. The core hands chunks over in order from offset 0 (it tracks the offset it
//! expects); anything else is a bug, reported rather than patched over.

use crate::core::SnapshotMeta;

#[derive(Debug, Default)]
pub struct SnapshotStaging {
    staged: Option<(SnapshotMeta, Vec<u8>)>,
}

impl SnapshotStaging {
    pub fn write(&mut self, meta: &SnapshotMeta, offset: u64, data: &[u8]) -> Result<(), String> {
        if offset == 0 {
            self.staged = Some((meta.clone(), Vec::new()));
        }
        match self.staged.as_mut() {
            Some((staged, bytes)) if staged == meta && bytes.len() as u64 == offset => {
                bytes.extend_from_slice(data);
                Ok(())
            }
            _ => Err(format!(
                "snapshot {meta:?}: chunk at {offset} does not follow what was staged"
            )),
        }
    }

    /// The whole snapshot `meta`, taken out to be installed.
    pub fn take(&mut self, meta: &SnapshotMeta) -> Result<Vec<u8>, String> {
        match self.staged.take() {
            Some((staged, bytes)) if staged == *meta => Ok(bytes),
            _ => Err(format!(
                "installing snapshot {meta:?}, which was not received"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            ..SnapshotMeta::default()
        }
    }

    #[test]
    fn chunks_in_order_make_the_snapshot_and_a_gap_or_another_snapshot_is_refused() {
        let mut staging = SnapshotStaging::default();
        staging.write(&meta(5), 0, b"ab").unwrap();
        staging.write(&meta(5), 2, b"cd").unwrap();
        assert!(staging.write(&meta(5), 9, b"x").is_err(), "a gap");
        assert!(
            staging.write(&meta(6), 4, b"x").is_err(),
            "another snapshot"
        );
        assert!(staging.take(&meta(6)).is_err());
        staging.write(&meta(5), 0, b"ab").unwrap();
        staging.write(&meta(5), 2, b"cd").unwrap();
        assert_eq!(staging.take(&meta(5)).unwrap(), b"abcd");
        assert!(staging.take(&meta(5)).is_err(), "taken once");
    }
}
