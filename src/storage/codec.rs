//! How log records, hard states and snapshot metadata are laid out on disk: a version byte, then
//! bincode 2. A frame around each record adds its length and a CRC-32C so that a torn or
//! corrupted record is detected before it is decoded. Decoding never panics on bad bytes.

use bincode::{Decode, Encode};
use bytes::Bytes;
use thiserror::Error;

use crate::core::{
    Admission, Entry, EntryPayload, HardState, LogIndex, Membership, SnapshotMeta, Term,
};

/// The format of every record written by this build. Bump it when the layout changes, and keep
/// reading the old one.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of a frame header: length (u32) and checksum (u32), little-endian.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest record accepted, so a corrupted length cannot make recovery allocate gigabytes.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// One record of the write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum WalRecord {
    /// An entry; it replaces any stored entry at or after its index.
    Entry {
        term: Term,
        index: LogIndex,
        /// `None` for a leader's no-op.
        command: Option<Vec<u8>>,
    },
    HardState {
        term: Term,
        vote: Option<u64>,
        commit: LogIndex,
    },
    /// An entry carrying a configuration; like `Entry`, it replaces what follows.
    MembershipEntry {
        term: Term,
        index: LogIndex,
        membership: MembershipRecord,
    },
    /// An entry carrying a configuration made for a joiner's request (`core::Admission`). A
    /// variant of its own, after the others, so logs written before it read as they did.
    AdmittingMembershipEntry {
        term: Term,
        index: LogIndex,
        membership: MembershipRecord,
        node: u64,
        nonce: u64,
    },
}

/// A configuration as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct MembershipRecord {
    pub voters: Vec<u64>,
    pub outgoing_voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl From<&Membership> for MembershipRecord {
    fn from(membership: &Membership) -> Self {
        MembershipRecord {
            voters: membership.voters.iter().copied().collect(),
            outgoing_voters: membership.outgoing_voters.iter().copied().collect(),
            learners: membership.learners.iter().copied().collect(),
        }
    }
}

impl From<MembershipRecord> for Membership {
    fn from(record: MembershipRecord) -> Self {
        Membership {
            voters: record.voters.into_iter().collect(),
            outgoing_voters: record.outgoing_voters.into_iter().collect(),
            learners: record.learners.into_iter().collect(),
        }
    }
}

impl WalRecord {
    pub fn from_entry(entry: &Entry) -> Self {
        let (term, index) = (entry.term, entry.index);
        match &entry.payload {
            EntryPayload::Noop => WalRecord::Entry {
                term,
                index,
                command: None,
            },
            EntryPayload::Command(command) => WalRecord::Entry {
                term,
                index,
                command: Some(command.to_vec()),
            },
            EntryPayload::Membership(membership, None) => WalRecord::MembershipEntry {
                term,
                index,
                membership: membership.into(),
            },
            EntryPayload::Membership(membership, Some(admission)) => {
                WalRecord::AdmittingMembershipEntry {
                    term,
                    index,
                    membership: membership.into(),
                    node: admission.node,
                    nonce: admission.nonce,
                }
            }
        }
    }

    /// The entry this record holds, if it holds one.
    pub fn into_entry(self) -> Option<Entry> {
        match self {
            WalRecord::Entry {
                term,
                index,
                command,
            } => Some(to_entry(term, index, command)),
            WalRecord::MembershipEntry {
                term,
                index,
                membership,
            } => Some(Entry {
                term,
                index,
                payload: EntryPayload::Membership(membership.into(), None),
            }),
            WalRecord::AdmittingMembershipEntry {
                term,
                index,
                membership,
                node,
                nonce,
            } => Some(Entry {
                term,
                index,
                payload: EntryPayload::Membership(
                    membership.into(),
                    Some(Admission { node, nonce }),
                ),
            }),
            WalRecord::HardState { .. } => None,
        }
    }

    pub fn from_hard_state(hard_state: &HardState) -> Self {
        WalRecord::HardState {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        }
    }
}

/// Converts a decoded entry record back into an entry.
pub fn to_entry(term: Term, index: LogIndex, command: Option<Vec<u8>>) -> Entry {
    Entry {
        term,
        index,
        payload: match command {
            None => EntryPayload::Noop,
            Some(command) => EntryPayload::Command(Bytes::from(command)),
        },
    }
}

/// What a data directory belongs to; written once, checked on every start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
}

/// Where a node stands in its cluster, recorded durably beside its identity: set when its data
/// directory is new, and moved from `Joining` to `Admitted` when the leader says the join is
/// complete. A restart reads it: a founder's data cannot be carried into another cluster with
/// `--join`, and a node that was joining (its log perhaps partial, perhaps holding
/// configurations in which it was a voter before it lost its disk) joins again instead of
/// resuming as a voter — the core's contract for `Input::Admitted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Standing {
    /// Bootstrapped a new cluster.
    Founder,
    /// Entering a cluster through the join workflow, not admitted yet.
    Joining,
    /// Joined a cluster and was admitted.
    Admitted,
    /// Was removed from its cluster: it comes back only through the join workflow.
    Removed,
}

/// The header of a snapshot file: what it covers.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotHeader {
    pub index: LogIndex,
    pub term: Term,
    pub membership: MembershipRecord,
    /// (node, nonce) of each admitted member's latest join request; see
    /// [`SnapshotMeta::admissions`].
    pub admissions: Vec<(u64, u64)>,
}

/// The header as written before it carried admissions. Such a header ends where the new one's
/// admissions begin, so each layout decodes only as itself.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
struct SnapshotHeaderBeforeAdmissions {
    index: LogIndex,
    term: Term,
    membership: MembershipRecord,
}

impl SnapshotHeader {
    /// Decodes a header in either layout (one without admissions reads as having none).
    pub fn decode(bytes: &[u8]) -> Result<SnapshotHeader, CodecError> {
        decode::<SnapshotHeader>(bytes).or_else(|error| {
            let old: SnapshotHeaderBeforeAdmissions = decode(bytes).map_err(|_| error)?;
            Ok(SnapshotHeader {
                index: old.index,
                term: old.term,
                membership: old.membership,
                admissions: Vec::new(),
            })
        })
    }
}

impl From<&SnapshotMeta> for SnapshotHeader {
    fn from(meta: &SnapshotMeta) -> Self {
        SnapshotHeader {
            index: meta.index,
            term: meta.term,
            membership: (&meta.membership).into(),
            admissions: (meta.admissions.iter())
                .map(|admission| (admission.node, admission.nonce))
                .collect(),
        }
    }
}

impl From<SnapshotHeader> for SnapshotMeta {
    fn from(header: SnapshotHeader) -> Self {
        SnapshotMeta {
            index: header.index,
            term: header.term,
            membership: header.membership.into(),
            admissions: (header.admissions.into_iter())
                .map(|(node, nonce)| Admission { node, nonce })
                .collect(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record format version {0} is unknown; this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("record does not decode: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the record")]
    TrailingBytes(usize),
}

/// How much memory decoding may claim per byte of input. bincode reserves a vector's declared
/// length before reading its elements, so a corrupted length (or a peer's crafted snapshot)
/// would otherwise ask for exabytes and abort the process; under a limit it is an error. A
/// legitimate value claims at most 18 bytes per encoded byte: a key-value pair takes 48 bytes
/// in memory and at least 3 encoded, plus its bytes once read and once copied.
const CLAIM_PER_INPUT_BYTE: usize = 32;

/// The smallest limit, enough for any record of the log (one entry with a 1 MiB value).
const CLAIM_MIN_SHIFT: u32 = 26;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Version byte then bincode.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    bincode::encode_into_std_write(value, &mut out, config())
        .expect("writing to a Vec cannot fail");
    out
}

/// As [`encode`], into a vector of exactly the encoded size, measured first: for a large value
/// (a snapshot), growing the vector by doubling would claim up to twice its size, and copy it.
pub fn encode_exact<T: Encode>(value: &T) -> Vec<u8> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(value, &mut size, config()).expect("measuring cannot fail");
    let mut out = Vec::with_capacity(1 + size.bytes_written);
    out.push(FORMAT_VERSION);
    bincode::encode_into_std_write(value, &mut out, config())
        .expect("writing to a Vec cannot fail");
    debug_assert_eq!(out.len(), 1 + size.bytes_written);
    out
}

/// The bytes [`encode`] returns, written to `out` as they are encoded.
pub fn encode_to_writer<T: Encode>(
    value: &T,
    mut out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    out.write_all(&[FORMAT_VERSION])?;
    bincode::encode_into_std_write(value, &mut out, config())
        .map(|_| ())
        .map_err(|error| match error {
            bincode::error::EncodeError::Io { inner, .. } => inner,
            other => std::io::Error::other(other.to_string()),
        })
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, read) =
        decode_limited(body).map_err(|error| CodecError::Malformed(error.to_string()))?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

/// Decodes under a limit proportional to the input (bincode's limit is a constant: the smallest
/// power of four that fits is picked at run time, so a corrupted input claims at most 128 bytes
/// of memory per byte it has).
fn decode_limited<T: Decode<()>>(body: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    let wanted = body.len().saturating_mul(CLAIM_PER_INPUT_BYTE);
    let shift = (usize::BITS - wanted.leading_zeros()).max(CLAIM_MIN_SHIFT);
    macro_rules! under_limit {
        ($($shift:literal)*) => {
            match shift {
                $(s if s <= $shift => {
                    bincode::decode_from_slice(body, config().with_limit::<{ 1usize << $shift }>())
                })*
                _ => bincode::decode_from_slice(body, config().with_limit::<{ usize::MAX }>()),
            }
        };
    }
    under_limit!(26 28 30 32 34 36 38 40 42 44)
}

/// Appends `body` to `out` framed with its length and CRC-32C.
pub fn frame_into(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The result of reading one frame from the front of `bytes`.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame with a matching checksum, and the bytes it took.
    Valid { body: &'a [u8], len: usize },
    /// The bytes end inside the frame: a write that did not finish.
    Incomplete,
    /// The frame is whole but its checksum or length is wrong.
    Corrupt,
}

pub fn read_frame(bytes: &[u8]) -> Frame<'_> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let checksum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    // No record is empty (there is at least the version byte): a zero length is the zero fill
    // a file system may leave after a crash.
    if len == 0 || len > RECORD_BYTES_MAX {
        return Frame::Corrupt;
    }
    let Some(body) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Frame::Incomplete;
    };
    if crc32c(body) != checksum {
        return Frame::Corrupt;
    }
    Frame::Valid {
        body,
        len: FRAME_HEADER_BYTES + len,
    }
}

fn crc32c(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = WalRecord> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
            )
                .prop_map(|(term, index, command)| WalRecord::Entry {
                    term,
                    index,
                    command
                }),
            (
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                any::<u64>()
            )
                .prop_map(|(term, vote, commit)| WalRecord::HardState {
                    term,
                    vote,
                    commit
                }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(1..10u64, 1..4),
                proptest::option::of((1..10u64, any::<u64>()))
            )
                .prop_map(|(term, index, voters, admission)| {
                    let membership = MembershipRecord {
                        voters,
                        ..MembershipRecord::default()
                    };
                    match admission {
                        None => WalRecord::MembershipEntry {
                            term,
                            index,
                            membership,
                        },
                        Some((node, nonce)) => WalRecord::AdmittingMembershipEntry {
                            term,
                            index,
                            membership,
                            node,
                            nonce,
                        },
                    }
                }),
        ]
    }

    /// A configuration entry keeps the join it admits through the log, and one without keeps
    /// none.
    #[test]
    fn a_configuration_entry_keeps_its_admission() {
        for admission in [None, Some(Admission { node: 4, nonce: 99 })] {
            let entry = Entry {
                term: 3,
                index: 7,
                payload: EntryPayload::Membership(Membership::with_voters([1, 4]), admission),
            };
            let record: WalRecord =
                decode(&encode(&WalRecord::from_entry(&entry))).expect("decodes");
            assert_eq!(record.into_entry(), Some(entry));
        }
    }

    /// A snapshot header keeps the members' admissions, and a header written before it carried
    /// them still reads (with none): snapshot files from earlier builds stay readable.
    #[test]
    fn a_snapshot_header_keeps_its_admissions_and_reads_the_older_layout() {
        let meta = SnapshotMeta {
            index: 40,
            term: 3,
            membership: Membership::with_voters([1, 2, 3]),
            admissions: vec![Admission { node: 3, nonce: 99 }],
        };
        let bytes = encode(&SnapshotHeader::from(&meta));
        assert_eq!(
            SnapshotHeader::decode(&bytes).map(SnapshotMeta::from),
            Ok(meta.clone())
        );
        let older = encode(&SnapshotHeaderBeforeAdmissions {
            index: 40,
            term: 3,
            membership: (&meta.membership).into(),
        });
        let read = SnapshotHeader::decode(&older).map(SnapshotMeta::from);
        assert_eq!(
            read,
            Ok(SnapshotMeta {
                admissions: Vec::new(),
                ..meta
            })
        );
        assert!(SnapshotHeader::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A snapshot header whose voter list claims 2^60 entries (a flipped length, say): without a
    /// decoding limit, bincode reserves that much memory up front and the process aborts.
    #[test]
    fn a_corrupted_length_is_an_error_not_an_abort() {
        let mut bytes = vec![FORMAT_VERSION, 7, 2, 0xfd];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode::<SnapshotHeader>(&bytes),
            Err(CodecError::Malformed(_))
        ));
    }

    /// The densest legitimate input, a long list of pairs of one-byte keys and empty values
    /// (a snapshot image's shape: 48 bytes of memory per pair for 3 encoded), decodes under
    /// the limit, beyond the smallest one (it claims about 100 MiB for 6 MB of input).
    #[test]
    fn the_densest_input_fits_the_limit() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000_000u32)
            .map(|i| (vec![i as u8 | 1], Vec::new()))
            .collect();
        let bytes = encode(&pairs);
        assert!(
            bytes.len() * 48 / 3 > 64 << 20,
            "claims more than the smallest limit"
        );
        assert_eq!(decode::<Vec<(Vec<u8>, Vec<u8>)>>(&bytes), Ok(pairs));
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            prop_assert_eq!(decode::<WalRecord>(&encode(&record)), Ok(record));
        }

        /// Measured first, the exact encoding is the same bytes in a vector of its size.
        #[test]
        fn an_exact_encoding_is_the_encoding_without_slack(record in record()) {
            let exact = encode_exact(&record);
            prop_assert_eq!(&exact, &encode(&record));
            prop_assert_eq!(exact.capacity(), exact.len());
        }

        /// Also abort-free: see `a_corrupted_length_is_an_error_not_an_abort`.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<WalRecord>(&bytes);
            let _ = decode::<Identity>(&bytes);
            let _ = decode::<SnapshotHeader>(&bytes);
            let _ = read_frame(&bytes);
        }

        #[test]
        fn a_flipped_bit_is_caught_by_the_frame(record in record(), bit in any::<usize>()) {
            let mut framed = Vec::new();
            frame_into(&mut framed, &encode(&record));
            let bit = bit % ((framed.len() - 4) * 8) + 32; // anywhere but the length field
            framed[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(read_frame(&framed), Frame::Corrupt);
        }

        #[test]
        fn a_cut_frame_is_incomplete(record in record(), cut in any::<usize>()) {
            let mut framed = Vec::new();
            frame_into(&mut framed, &encode(&record));
            let cut = cut % framed.len();
            prop_assert_eq!(read_frame(&framed[..cut]), Frame::Incomplete);
        }
    }

    #[test]
    fn unknown_versions_are_refused_by_name() {
        let mut bytes = encode(&SnapshotHeader {
            index: 1,
            term: 1,
            membership: MembershipRecord::default(),
            admissions: Vec::new(),
        });
        bytes[0] = 9;
        assert_eq!(
            decode::<SnapshotHeader>(&bytes),
            Err(CodecError::UnknownVersion(9))
        );
    }
}
