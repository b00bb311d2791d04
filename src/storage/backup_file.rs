//! A backup file: one consistent image of a key-value store, as `ravel snapshot save` writes it
//! and `ravel snapshot restore` seeds a new cluster from.
//!
//! ```text
//! "RAVELBAK" version(u8) cluster_id node_id index term (u64 each) crc32(u32)   header, 45 bytes
//! data                                                                           the image
//! data_bytes(u64) crc32(u32) "RAVELEND"                                         trailer, 20 bytes
//! ```
//!
//! Little-endian; the header's CRC covers its bytes before it, the trailer's covers the data.
//! The file is written under a temporary name, synced, renamed and its directory synced, so a
//! crash leaves either the whole backup or none under the name asked for; a file cut short or
//! changed after is refused by [`read_backup`], saying what is wrong.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

const MAGIC: &[u8; 8] = b"RAVELBAK";
const END_MAGIC: &[u8; 8] = b"RAVELEND";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 8 + 1 + 4 * 8 + 4;
const TRAILER_BYTES: usize = 8 + 4 + 8;

/// Where an image comes from and what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    pub cluster_id: u64,
    /// The node (the leader) that took it.
    pub node_id: u64,
    /// The log index the image holds every entry up to.
    pub index: u64,
    /// The leader's term when it was taken.
    pub term: u64,
}

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a Ravel backup: {reason}")]
    NotABackup { path: PathBuf, reason: String },
    #[error("{path} is damaged: {reason}; take the backup again (`ravel snapshot save`)")]
    Damaged { path: PathBuf, reason: String },
    #[error("{path} exists already; choose another name or remove it first")]
    Exists { path: PathBuf },
}

impl BackupHeader {
    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8] = VERSION;
        for (slot, value) in [self.cluster_id, self.node_id, self.index, self.term]
            .into_iter()
            .enumerate()
        {
            out[9 + slot * 8..17 + slot * 8].copy_from_slice(&value.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[..HEADER_BYTES - 4]);
        out[HEADER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Self, BackupError> {
        let not_a_backup = |reason: &str| BackupError::NotABackup {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if bytes.len() < HEADER_BYTES + TRAILER_BYTES || &bytes[..8] != MAGIC {
            return Err(not_a_backup("it does not start with Ravel's backup header"));
        }
        if bytes[8] != VERSION {
            return Err(not_a_backup(&format!(
                "format version {} is not {VERSION}, the one this ravel reads",
                bytes[8]
            )));
        }
        let stored_crc = u32_at(bytes, HEADER_BYTES - 4);
        if crc32fast::hash(&bytes[..HEADER_BYTES - 4]) != stored_crc {
            return Err(BackupError::Damaged {
                path: path.to_path_buf(),
                reason: "its header does not match its checksum".to_string(),
            });
        }
        Ok(BackupHeader {
            cluster_id: u64_at(bytes, 9),
            node_id: u64_at(bytes, 17),
            index: u64_at(bytes, 25),
            term: u64_at(bytes, 33),
        })
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// A backup being written: the data is appended as it arrives, and [`BackupWriter::finish`]
/// makes the file durable under its name.
pub struct BackupWriter {
    header: BackupHeader,
    file: File,
    temporary: PathBuf,
    path: PathBuf,
    crc: crc32fast::Hasher,
    data_bytes: u64,
}

impl BackupWriter {
    /// Starts `path` (refused if it exists: a backup is never overwritten by accident).
    pub fn create(path: &Path, header: BackupHeader) -> Result<Self, BackupError> {
        if path.exists() {
            return Err(BackupError::Exists {
                path: path.to_path_buf(),
            });
        }
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".part");
        let temporary = path.with_file_name(name);
        let io_error = |source| BackupError::Io {
            path: temporary.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(io_error)?;
        file.write_all(&header.encode()).map_err(io_error)?;
        Ok(BackupWriter {
            header,
            file,
            temporary,
            path: path.to_path_buf(),
            crc: crc32fast::Hasher::new(),
            data_bytes: 0,
        })
    }

    pub fn append(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.crc.update(data);
        self.data_bytes += data.len() as u64;
        self.file.write_all(data).map_err(|source| BackupError::Io {
            path: self.temporary.clone(),
            source,
        })
    }

    pub fn header(&self) -> BackupHeader {
        self.header
    }

    /// The CRC-32 of the data appended so far, and its length.
    pub fn checksum(&self) -> (u32, u64) {
        (self.crc.clone().finalize(), self.data_bytes)
    }

    /// Writes the trailer, syncs, and renames the file to its name (syncing the directory).
    pub fn finish(mut self) -> Result<PathBuf, BackupError> {
        let (crc, data_bytes) = self.checksum();
        let mut trailer = Vec::with_capacity(TRAILER_BYTES);
        trailer.extend_from_slice(&data_bytes.to_le_bytes());
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(END_MAGIC);
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Io { path, source }
        };
        self.file
            .write_all(&trailer)
            .map_err(io_error(&self.temporary))?;
        self.file.sync_all().map_err(io_error(&self.temporary))?;
        fs::rename(&self.temporary, &self.path).map_err(io_error(&self.path))?;
        let dir = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&dir))?;
        Ok(self.path.clone())
    }

    /// Removes the unfinished file (the stream failed).
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

/// Reads and verifies a whole backup: its header, its length and its checksum.
pub fn read_backup(path: &Path) -> Result<(BackupHeader, Vec<u8>), BackupError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let header = BackupHeader::decode(&bytes, path)?;
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let trailer_at = bytes.len() - TRAILER_BYTES;
    if &bytes[trailer_at + 12..] != END_MAGIC {
        return Err(damaged(
            "it does not end with the backup trailer (cut short, or written only in part)"
                .to_string(),
        ));
    }
    let data_bytes = u64_at(&bytes, trailer_at);
    let found = (trailer_at - HEADER_BYTES) as u64;
    if data_bytes != found {
        return Err(damaged(format!(
            "it holds {found} bytes of data where its trailer says {data_bytes}"
        )));
    }
    let crc = crc32fast::hash(&bytes[HEADER_BYTES..trailer_at]);
    if crc != u32_at(&bytes, trailer_at + 8) {
        return Err(damaged("its data does not match its checksum".to_string()));
    }
    bytes.truncate(trailer_at);
    bytes.drain(..HEADER_BYTES);
    Ok((header, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            cluster_id: 7,
            node_id: 2,
            index: 1234,
            term: 5,
        }
    }

    fn written(dir: &Path, data: &[u8]) -> PathBuf {
        let mut writer = BackupWriter::create(&dir.join("backup"), header()).unwrap();
        for piece in data.chunks(3) {
            writer.append(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), b"the state machine's image");
        let (read, data) = read_backup(&path).unwrap();
        assert_eq!(read, header());
        assert_eq!(data, b"the state machine's image");
        assert!(!dir.path().join("backup.part").exists());
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), b"0123456789");
        let good = fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            fs::write(&path, &bad).unwrap();
            assert!(read_backup(&path).is_err(), "a flip at byte {at} passed");
        }
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            assert!(read_backup(&path).is_err(), "a cut to {len} bytes passed");
        }
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), b"first");
        let again = BackupWriter::create(&path, header());
        assert!(matches!(again, Err(BackupError::Exists { .. })));
        assert_eq!(read_backup(&path).unwrap().1, b"first");
    }
}
