//! The byte encoding of KV commands in log entries: a version byte, an operation byte, then
//! length-prefixed fields. Hand-rolled because it sits on the hot path of every write and must
//! decode without copying; decoding untrusted bytes returns an error, never panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

const VERSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_COMPARE_AND_SWAP: u8 = 3;
const OP_CLAIM: u8 = 4;
const OP_MOVE: u8 = 5;
const MOVE_FREEZE: u8 = 1;
const MOVE_UNFREEZE: u8 = 2;
const MOVE_DROP: u8 = 3;
const MOVE_INGEST: u8 = 4;
const MOVE_ACTIVATE: u8 = 5;
const MOVE_DISCARD: u8 = 6;
/// Partitions one claim names, at most (a key space has at most 2^16 partitions).
const CLAIMED_MAX: usize = 1 << 16;
/// Pairs one ingested chunk carries, at most.
pub const CHUNK_PAIRS_MAX: usize = 1 << 16;

/// A change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Sets `key` to `new` if its current value is `expected` (`None`: the key is absent).
    CompareAndSwap {
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    },
    /// A data group of a sharded store takes these partitions of the admin's first table, in a
    /// key space of `partitions` (see `kv::shard`).
    Claim {
        partitions: u32,
        claimed: Vec<u32>,
    },
    /// A step of moving `partition` to the epoch `epoch` between two groups (see `kv::shard`).
    Move {
        partition: u32,
        epoch: u64,
        step: MoveStep,
    },
}

/// One group's step of a move, in that group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// Source: stop writes to the partition.
    Freeze,
    /// Source: the move was rolled back; take writes again.
    Unfreeze,
    /// Source: the move is committed; remove the partition's keys, send requests to `to`.
    Drop { to: u64 },
    /// Destination: chunk `chunk` of the partition's pairs (`last`: no more follow).
    Ingest {
        chunk: u32,
        last: bool,
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// Destination: the move is committed; serve the partition.
    Activate,
    /// Destination: the move was rolled back; remove what came in.
    Discard,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("command is empty")]
    Empty,
    #[error("command format version {0} is unknown; this build reads version {VERSION}")]
    UnknownVersion(u8),
    #[error("unknown operation code {0}")]
    UnknownOperation(u8),
    #[error("command is truncated: a field needs {needed} bytes, {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("{0} trailing bytes after the command")]
    TrailingBytes(usize),
    #[error("a claim names {0} partitions; at most {CLAIMED_MAX}")]
    TooManyClaimed(usize),
    #[error("unknown move step {0}")]
    UnknownMoveStep(u8),
    #[error("an ingested chunk carries {0} pairs; at most {CHUNK_PAIRS_MAX}")]
    TooManyPairs(usize),
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        out.put_u8(VERSION);
        match self {
            Command::Put { key, value } => {
                out.put_u8(OP_PUT);
                put_field(&mut out, key);
                put_field(&mut out, value);
            }
            Command::Delete { key } => {
                out.put_u8(OP_DELETE);
                put_field(&mut out, key);
            }
            Command::CompareAndSwap { key, expected, new } => {
                out.put_u8(OP_COMPARE_AND_SWAP);
                put_field(&mut out, key);
                match expected {
                    None => out.put_u8(0),
                    Some(expected) => {
                        out.put_u8(1);
                        put_field(&mut out, expected);
                    }
                }
                put_field(&mut out, new);
            }
            Command::Claim {
                partitions,
                claimed,
            } => {
                out.put_u8(OP_CLAIM);
                out.put_u32_le(*partitions);
                out.put_u32_le(claimed.len() as u32);
                for partition in claimed {
                    out.put_u32_le(*partition);
                }
            }
            Command::Move {
                partition,
                epoch,
                step,
            } => {
                out.put_u8(OP_MOVE);
                out.put_u32_le(*partition);
                out.put_u64_le(*epoch);
                match step {
                    MoveStep::Freeze => out.put_u8(MOVE_FREEZE),
                    MoveStep::Unfreeze => out.put_u8(MOVE_UNFREEZE),
                    MoveStep::Drop { to } => {
                        out.put_u8(MOVE_DROP);
                        out.put_u64_le(*to);
                    }
                    MoveStep::Ingest { chunk, last, pairs } => {
                        out.put_u8(MOVE_INGEST);
                        out.put_u32_le(*chunk);
                        out.put_u8(u8::from(*last));
                        out.put_u32_le(pairs.len() as u32);
                        for (key, value) in pairs {
                            put_field(&mut out, key);
                            put_field(&mut out, value);
                        }
                    }
                    MoveStep::Activate => out.put_u8(MOVE_ACTIVATE),
                    MoveStep::Discard => out.put_u8(MOVE_DISCARD),
                }
            }
        }
        out.freeze()
    }

    fn encoded_len(&self) -> usize {
        2 + match self {
            Command::Put { key, value } => 8 + key.len() + value.len(),
            Command::Delete { key } => 4 + key.len(),
            Command::CompareAndSwap { key, expected, new } => {
                9 + key.len()
                    + expected.as_ref().map_or(0, |expected| 4 + expected.len())
                    + new.len()
            }
            Command::Claim { claimed, .. } => 8 + 4 * claimed.len(),
            Command::Move { step, .. } => {
                13 + match step {
                    MoveStep::Drop { .. } => 8,
                    MoveStep::Ingest { pairs, .. } => {
                        9 + pairs
                            .iter()
                            .map(|(key, value)| 8 + key.len() + value.len())
                            .sum::<usize>()
                    }
                    _ => 0,
                }
            }
        }
    }

    /// Decodes without copying: keys and values share `bytes`' buffer.
    pub fn decode(bytes: &Bytes) -> Result<Command, DecodeError> {
        let mut input = bytes.clone();
        let version = take_u8(&mut input).map_err(|_| DecodeError::Empty)?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let command = match take_u8(&mut input)? {
            OP_PUT => Command::Put {
                key: take_field(&mut input)?,
                value: take_field(&mut input)?,
            },
            OP_DELETE => Command::Delete {
                key: take_field(&mut input)?,
            },
            OP_COMPARE_AND_SWAP => {
                let key = take_field(&mut input)?;
                let expected = match take_u8(&mut input)? {
                    0 => None,
                    _ => Some(take_field(&mut input)?),
                };
                Command::CompareAndSwap {
                    key,
                    expected,
                    new: take_field(&mut input)?,
                }
            }
            OP_CLAIM => {
                let partitions = take_u32(&mut input)?;
                let count = take_u32(&mut input)? as usize;
                if count > CLAIMED_MAX {
                    return Err(DecodeError::TooManyClaimed(count));
                }
                let claimed = (0..count)
                    .map(|_| take_u32(&mut input))
                    .collect::<Result<Vec<u32>, DecodeError>>()?;
                Command::Claim {
                    partitions,
                    claimed,
                }
            }
            OP_MOVE => {
                let partition = take_u32(&mut input)?;
                let epoch = take_u64(&mut input)?;
                let step = match take_u8(&mut input)? {
                    MOVE_FREEZE => MoveStep::Freeze,
                    MOVE_UNFREEZE => MoveStep::Unfreeze,
                    MOVE_DROP => MoveStep::Drop {
                        to: take_u64(&mut input)?,
                    },
                    MOVE_INGEST => {
                        let chunk = take_u32(&mut input)?;
                        let last = take_u8(&mut input)? != 0;
                        let count = take_u32(&mut input)? as usize;
                        if count > CHUNK_PAIRS_MAX {
                            return Err(DecodeError::TooManyPairs(count));
                        }
                        let mut pairs = Vec::with_capacity(count.min(1024));
                        for _ in 0..count {
                            pairs.push((take_field(&mut input)?, take_field(&mut input)?));
                        }
                        MoveStep::Ingest { chunk, last, pairs }
                    }
                    MOVE_ACTIVATE => MoveStep::Activate,
                    MOVE_DISCARD => MoveStep::Discard,
                    other => return Err(DecodeError::UnknownMoveStep(other)),
                };
                Command::Move {
                    partition,
                    epoch,
                    step,
                }
            }
            other => return Err(DecodeError::UnknownOperation(other)),
        };
        if input.has_remaining() {
            return Err(DecodeError::TrailingBytes(input.remaining()));
        }
        Ok(command)
    }

    /// The key the command changes (none for a claim, which changes no key).
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key }
            | Command::CompareAndSwap { key, .. } => Some(key),
            Command::Claim { .. } | Command::Move { .. } => None,
        }
    }
}

fn put_field(out: &mut BytesMut, field: &[u8]) {
    out.put_u32_le(field.len() as u32);
    out.put_slice(field);
}

fn take_u8(input: &mut Bytes) -> Result<u8, DecodeError> {
    if input.remaining() < 1 {
        return Err(DecodeError::Truncated {
            needed: 1,
            available: 0,
        });
    }
    Ok(input.get_u8())
}

fn take_u32(input: &mut Bytes) -> Result<u32, DecodeError> {
    if input.remaining() < 4 {
        return Err(DecodeError::Truncated {
            needed: 4,
            available: input.remaining(),
        });
    }
    Ok(input.get_u32_le())
}

fn take_u64(input: &mut Bytes) -> Result<u64, DecodeError> {
    if input.remaining() < 8 {
        return Err(DecodeError::Truncated {
            needed: 8,
            available: input.remaining(),
        });
    }
    Ok(input.get_u64_le())
}

fn take_field(input: &mut Bytes) -> Result<Bytes, DecodeError> {
    if input.remaining() < 4 {
        return Err(DecodeError::Truncated {
            needed: 4,
            available: input.remaining(),
        });
    }
    let len = input.get_u32_le() as usize;
    if input.remaining() < len {
        return Err(DecodeError::Truncated {
            needed: len,
            available: input.remaining(),
        });
    }
    Ok(input.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (bytes(), bytes()).prop_map(|(key, value)| Command::Put { key, value }),
            bytes().prop_map(|key| Command::Delete { key }),
            (bytes(), proptest::option::of(bytes()), bytes())
                .prop_map(|(key, expected, new)| Command::CompareAndSwap { key, expected, new }),
            (any::<u32>(), proptest::collection::vec(any::<u32>(), 0..20)).prop_map(
                |(partitions, claimed)| Command::Claim {
                    partitions,
                    claimed
                }
            ),
            (any::<u32>(), any::<u64>(), move_step()).prop_map(|(partition, epoch, step)| {
                Command::Move {
                    partition,
                    epoch,
                    step,
                }
            }),
        ]
    }

    fn move_step() -> impl Strategy<Value = MoveStep> {
        prop_oneof![
            Just(MoveStep::Freeze),
            Just(MoveStep::Unfreeze),
            any::<u64>().prop_map(|to| MoveStep::Drop { to }),
            (
                any::<u32>(),
                any::<bool>(),
                proptest::collection::vec((bytes(), bytes()), 0..4)
            )
                .prop_map(|(chunk, last, pairs)| MoveStep::Ingest {
                    chunk,
                    last,
                    pairs
                }),
            Just(MoveStep::Activate),
            Just(MoveStep::Discard),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(command in command()) {
            let encoded = command.encode();
            prop_assert_eq!(encoded.len(), command.encoded_len());
            prop_assert_eq!(Command::decode(&encoded), Ok(command));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Command::decode(&Bytes::from(raw));
        }

        #[test]
        fn every_strict_prefix_is_rejected(command in command()) {
            let encoded = command.encode();
            for cut in 0..encoded.len() {
                prop_assert!(Command::decode(&encoded.slice(..cut)).is_err());
            }
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(Command::decode(&Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Command::decode(&Bytes::from_static(&[9, 1])),
            Err(DecodeError::UnknownVersion(9))
        );
        assert_eq!(
            Command::decode(&Bytes::from_static(&[1, 7])),
            Err(DecodeError::UnknownOperation(7))
        );
        let mut padded = Command::Delete {
            key: Bytes::from_static(b"k"),
        }
        .encode()
        .to_vec();
        padded.push(0);
        assert_eq!(
            Command::decode(&Bytes::from(padded)),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}
