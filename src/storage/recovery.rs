//! Reading a segment back on start: every whole, checksummed record in order; a torn tail is
//! reported so the caller can cut it off; anything else that does not read is corruption.

use super::codec::{self, Frame, WalRecord};

/// What scanning one segment found.
#[derive(Debug)]
pub struct Scan {
    /// The records with the byte offset each starts at and its framed length.
    pub records: Vec<(u64, u32, WalRecord)>,
    /// Bytes that hold whole records; anything after is a torn tail.
    pub valid_len: u64,
}

/// Why a segment cannot be trusted.
#[derive(Debug)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// Scans `bytes`. Zeros after the records are the space filled ahead of them (in an earlier
/// segment, a close a crash interrupted). In the last segment a bad record with nothing valid
/// after it is a torn write (the crash cut it); with a valid record after it, or in any earlier
/// segment, it is damage.
pub fn scan(bytes: &[u8], is_last_segment: bool) -> Result<Scan, Damage> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let problem = match codec::read_frame(&bytes[offset..]) {
            Frame::Valid { body, len } => match codec::decode::<WalRecord>(body) {
                Ok(record) => {
                    records.push((offset as u64, len as u32, record));
                    offset += len;
                    continue;
                }
                Err(error) => format!("a record with a valid checksum does not decode: {error}"),
            },
            Frame::Incomplete => "the segment ends inside a record".to_string(),
            Frame::Corrupt => "a record's checksum does not match".to_string(),
        };
        let zeros = bytes[offset..].iter().all(|&byte| byte == 0);
        if zeros {
            break;
        }
        if is_last_segment && !has_valid_record_after(bytes, offset) {
            break;
        }
        return Err(Damage {
            offset: offset as u64,
            reason: problem,
        });
    }
    Ok(Scan {
        records,
        valid_len: offset as u64,
    })
}

/// Whether a whole, decodable record starts anywhere after `offset`: if so, the bad bytes at
/// `offset` were not the last write, so they are damage, not a torn tail.
fn has_valid_record_after(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len()).any(|start| match codec::read_frame(&bytes[start..]) {
        Frame::Valid { body, .. } => codec::decode::<WalRecord>(body).is_ok(),
        _ => false,
    })
}
