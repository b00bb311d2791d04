//! Snapshot files, and writing one away from the write-ahead log.
//!
//! A snapshot file is a framed, checksummed header (what the snapshot covers), the CRC-32 of the
//! data, then the data:
//!
//! ```text
//! [len u32][crc32c u32][header]  [crc32 of data u32]  [data ...]
//! ```
//!
//! A snapshot is written in two steps so that a large one never delays the log's fsyncs: a
//! [`SnapshotWriter`] streams the image into a temporary file on a thread of its own (the image is
//! encoded straight into the file, never whole in memory) and fsyncs it; the storage worker then
//! *adopts* the finished file (rename, directory fsync, log compaction), which takes
//! milliseconds whatever the snapshot's size.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::{self, SnapshotHeader};
use super::error::StorageError;
use crate::core::{LogIndex, SnapshotMeta, Term};

/// The file name of the snapshot at `index`, `term`.
pub fn snapshot_name(index: LogIndex, term: Term) -> String {
    format!("{index:020}-{term:020}.snap")
}

/// The suffix of snapshot files being written; any found on start are left from a crash.
const UNFINISHED_SUFFIX: &str = ".tmp";

/// Where a store's snapshots may be written from another thread.
#[derive(Clone, Debug)]
pub enum SnapshotWriter {
    /// Into memory, for the store to take whole when it adopts the snapshot (simulated disks).
    Memory,
    /// Into a temporary file in this directory, fsynced, for the store to rename.
    Directory(PathBuf),
}

/// A snapshot written by a [`SnapshotWriter`], waiting to be adopted by its store.
#[derive(Debug)]
pub struct WrittenSnapshot {
    pub meta: SnapshotMeta,
    /// The size of its data.
    pub bytes: u64,
    pub(super) body: WrittenBody,
}

#[derive(Debug)]
pub(super) enum WrittenBody {
    Memory(Vec<u8>),
    /// A complete, fsynced snapshot file under its temporary name.
    File(PathBuf),
}

impl WrittenSnapshot {
    /// Its data, if it was written into memory (a file is removed).
    pub(super) fn into_memory(self) -> Option<Vec<u8>> {
        match self.body {
            WrittenBody::Memory(data) => Some(data),
            WrittenBody::File(_) => {
                self.discard();
                None
            }
        }
    }

    /// Drops a written snapshot the store does not want (an older one than it holds).
    pub(super) fn discard(self) {
        if let WrittenBody::File(path) = self.body {
            // Best effort: a leftover is removed on the next start.
            let _ = fs::remove_file(path);
        }
    }
}

impl SnapshotWriter {
    /// Writes snapshot `meta`, its data produced by `fill` into the writer it is given.
    pub fn write(
        &self,
        meta: SnapshotMeta,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<WrittenSnapshot, StorageError> {
        let (body, bytes) = match self {
            SnapshotWriter::Memory => {
                let mut data = Vec::new();
                fill(&mut data).map_err(|error| StorageError::io(Path::new("memory"), error))?;
                let bytes = data.len() as u64;
                (WrittenBody::Memory(data), bytes)
            }
            SnapshotWriter::Directory(dir) => {
                let temporary = dir.join(format!(
                    "{}{UNFINISHED_SUFFIX}",
                    snapshot_name(meta.index, meta.term)
                ));
                let written = write_file(&temporary, &meta, fill);
                if written.is_err() {
                    let _ = fs::remove_file(&temporary);
                }
                (WrittenBody::File(temporary), written?)
            }
        };
        Ok(WrittenSnapshot { meta, bytes, body })
    }
}

/// Writes a whole snapshot file at `path` and fsyncs it: the header, a slot for the data's
/// checksum, the data streamed through a hasher, then the checksum into its slot. Returns the
/// data's size.
fn write_file(
    path: &Path,
    meta: &SnapshotMeta,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64, StorageError> {
    let io = |error| StorageError::io(path, error);
    let file = File::create(path).map_err(io)?;
    let mut head = Vec::with_capacity(64);
    codec::frame_into(&mut head, &codec::encode(&SnapshotHeader::from(meta)));
    let checksum_at = head.len() as u64;
    head.extend_from_slice(&[0; 4]);
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, WriteBack::new(&file)),
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    out.inner.write_all(&head).map_err(io)?;
    fill(&mut out).map_err(io)?;
    let HashingWriter {
        mut inner,
        hasher,
        written,
    } = out;
    inner.flush().map_err(io)?;
    drop(inner);
    let checksum = hasher.finalize();
    file.write_all_at(&checksum.to_le_bytes(), checksum_at)
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    Ok(written)
}

/// Writes to a file and starts writing it back to the disk every [`WriteBack::EVERY`] bytes,
/// so the page cache never holds much of it dirty: a final fsync of a large file would
/// otherwise flush it all at once, and the log's fsyncs on the same disk would wait behind it.
struct WriteBack<'a> {
    file: &'a File,
    written: u64,
    started_to: u64,
}

impl<'a> WriteBack<'a> {
    const EVERY: u64 = 4 << 20;

    fn new(file: &'a File) -> Self {
        WriteBack {
            file,
            written: 0,
            started_to: 0,
        }
    }
}

impl Write for WriteBack<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = (&mut &*self.file).write(bytes)?;
        self.written += written as u64;
        if self.written - self.started_to >= Self::EVERY {
            start_write_back(self.file, self.started_to, self.written - self.started_to);
            self.started_to = self.written;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to the disk, without
/// waiting (a hint: the fsync at the end is what makes the file durable).
fn start_write_back(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a system call on a file descriptor this function borrows; no memory passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Passes bytes through to `inner`, hashing them on the way.
struct HashingWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Removes snapshot files a crash left unfinished in `snapshots`.
pub fn remove_unfinished(snapshots: &Path) -> Result<(), StorageError> {
    for item in fs::read_dir(snapshots).map_err(|error| StorageError::io(snapshots, error))? {
        let path = item
            .map_err(|error| StorageError::io(snapshots, error))?
            .path();
        let unfinished = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(UNFINISHED_SUFFIX));
        if unfinished {
            fs::remove_file(&path).map_err(|error| StorageError::io(&path, error))?;
        }
    }
    Ok(())
}

/// Snapshot files in `snapshots` by the index and term in their names, oldest first.
pub fn snapshot_files(snapshots: &Path) -> Result<Vec<(LogIndex, Term, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    for item in fs::read_dir(snapshots).map_err(|error| StorageError::io(snapshots, error))? {
        let path = item
            .map_err(|error| StorageError::io(snapshots, error))?
            .path();
        let Some(stem) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".snap"))
        else {
            continue;
        };
        let Some((index, term)) = stem.split_once('-') else {
            continue;
        };
        if let (Ok(index), Ok(term)) = (index.parse(), term.parse()) {
            found.push((index, term, path));
        }
    }
    found.sort_by_key(|(index, _, _)| *index);
    Ok(found)
}

/// The newest snapshot in `snapshots`, verified whole (a block at a time); a damaged newest
/// snapshot is corruption.
pub fn latest_snapshot(snapshots: &Path) -> Result<Option<SnapshotMeta>, StorageError> {
    let Some((index, term, path)) = snapshot_files(snapshots)?.pop() else {
        return Ok(None);
    };
    let (stored, _, _) = verify_snapshot_file(&path)?;
    if (stored.index, stored.term) != (index, term) {
        return Err(StorageError::Corrupt {
            path,
            offset: 0,
            reason: format!(
                "the file name says index {index} term {term} but it holds index {} term {}",
                stored.index, stored.term
            ),
        });
    }
    Ok(Some(stored))
}

/// A whole snapshot file's header and data, checked against both checksums.
pub fn parse_snapshot<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SnapshotMeta, &'a [u8]), StorageError> {
    let (meta, start) = parse_head(path, bytes)?;
    let data = &bytes[start as usize..];
    let checksum = u32::from_le_bytes(
        bytes[start as usize - 4..start as usize]
            .try_into()
            .expect("four bytes"),
    );
    if crc32fast::hash(data) != checksum {
        return Err(corrupt(
            path,
            start,
            "the snapshot data does not match its checksum",
        ));
    }
    Ok((meta, data))
}

/// Checks a snapshot file against its checksums a block at a time (never whole in memory): what
/// it covers, where its data starts and how long it is.
pub fn verify_snapshot_file(path: &Path) -> Result<(SnapshotMeta, u64, u64), StorageError> {
    const BLOCK: usize = 1 << 20;
    let io = |error| StorageError::io(path, error);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    // The header frame and the data's checksum come first; a header is far below a block
    // unless the file is corrupt.
    let mut head = vec![0u8; size.min(BLOCK as u64) as usize];
    file.read_exact(&mut head).map_err(io)?;
    let (meta, start) = parse_head(path, &head)?;
    let checksum = u32::from_le_bytes(
        head[start as usize - 4..start as usize]
            .try_into()
            .expect("four bytes"),
    );
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[start as usize..]);
    let mut block = vec![0u8; BLOCK];
    loop {
        let read = file.read(&mut block).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&block[..read]);
    }
    if hasher.finalize() != checksum {
        return Err(corrupt(
            path,
            start,
            "the snapshot data does not match its checksum",
        ));
    }
    Ok((meta, start, size - start))
}

/// The header at the front of `bytes` and where the data starts (after the data's checksum).
fn parse_head(path: &Path, bytes: &[u8]) -> Result<(SnapshotMeta, u64), StorageError> {
    let codec::Frame::Valid { body, len } = codec::read_frame(bytes) else {
        return Err(corrupt(
            path,
            0,
            "the snapshot header does not match its checksum",
        ));
    };
    let header =
        SnapshotHeader::decode(body).map_err(|error| corrupt(path, 0, &error.to_string()))?;
    if bytes.len() < len + 4 {
        return Err(corrupt(
            path,
            len as u64,
            "the snapshot ends before its data checksum",
        ));
    }
    Ok((SnapshotMeta::from(header), len as u64 + 4))
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    }
}
