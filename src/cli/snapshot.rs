//! `ravel snapshot save|restore|status` (etcdctl's `snapshot`): back a running cluster up to a
//! file, check a file, and seed a new cluster's first node from one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;

use super::{ClientArgs, ExitCode, WriteOut};
use crate::client::ClientError;
use crate::kv::KvStateMachine;
use crate::server::restore::{restore_backup, RestoreError};
use crate::storage::{read_backup, BackupError, BackupHeader, BackupWriter};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of the running cluster to FILE, taken at its leader: it holds
    /// every write acknowledged before the command started. FILE must not exist; it appears
    /// only once complete and synced, with a checksum.
    Save {
        /// Where to write the backup.
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify a backup (header, length, checksum, that its image decodes) and print what it
    /// holds; exit 1 if it is damaged.
    Status {
        /// The backup file.
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
    },
    /// Seed a new data directory from a backup: the first node of a new cluster (a new cluster
    /// id, this node its only voter), which `ravel node --id ID --data-dir DIR` then starts and
    /// other nodes join with --join. Writes nothing unless the backup verifies.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new node's data directory: absent or empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The new node's id.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// The new cluster's id [default: drawn at random].
        #[arg(long)]
        cluster_id: Option<u64>,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Table)]
        write_out: WriteOut,
    },
}

pub async fn run(command: SnapshotCommand) -> ExitCode {
    match command {
        SnapshotCommand::Save {
            file,
            write_out,
            client,
        } => save(&file, write_out, &client).await,
        SnapshotCommand::Status { file, write_out } => status(&file, write_out),
        SnapshotCommand::Restore {
            file,
            data_dir,
            id,
            cluster_id,
            write_out,
        } => restore(&file, &data_dir, id, cluster_id, write_out),
    }
}

/// Why a save failed, and the exit code that goes with it.
enum SaveError {
    Client(ClientError),
    File(BackupError),
    Stream(String),
}

async fn save(file: &Path, write_out: WriteOut, args: &ClientArgs) -> ExitCode {
    let started = Instant::now();
    match save_to(file, args).await {
        Ok((header, crc, bytes)) => {
            let seconds = started.elapsed().as_secs_f64();
            match write_out {
                WriteOut::Json => println!(
                    "{:#}",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "cluster_id": header.cluster_id,
                        "leader": header.node_id,
                        "index": header.index,
                        "term": header.term,
                        "bytes": bytes,
                        "crc32": crc,
                        "seconds": seconds,
                    })
                ),
                WriteOut::Table => println!(
                    "saved {}: index {} (term {}) of cluster {} from node {}, {bytes} bytes, \
                     crc32 {crc:08x}, in {seconds:.2} s",
                    file.display(),
                    header.index,
                    header.term,
                    header.cluster_id,
                    header.node_id
                ),
            }
            ExitCode::Success
        }
        Err(SaveError::Client(error)) => {
            eprintln!("error: {error}");
            ExitCode::of(&error)
        }
        Err(SaveError::File(error)) => {
            eprintln!("error: {error}");
            ExitCode::Failure
        }
        Err(SaveError::Stream(reason)) => {
            eprintln!(
                "error: the snapshot stream failed ({reason}); nothing was saved, run the command \
                 again"
            );
            ExitCode::Unavailable
        }
    }
}

/// Streams the leader's snapshot into `file`; the file appears only once its checksum agrees
/// with the leader's.
async fn save_to(file: &Path, args: &ClientArgs) -> Result<(BackupHeader, u32, u64), SaveError> {
    if file.exists() {
        return Err(SaveError::File(BackupError::Exists {
            path: file.to_path_buf(),
        }));
    }
    let mut client = args.client();
    let mut stream = client.backup().await.map_err(SaveError::Client)?;
    let mut writer: Option<BackupWriter> = None;
    let outcome = loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Err(SaveError::Stream("it ended before its last chunk".into())),
            Err(status) => break Err(SaveError::Stream(status.message().to_string())),
        };
        if let Some(header) = chunk.header {
            if writer.is_some() {
                break Err(SaveError::Stream("a second header arrived".into()));
            }
            let header = BackupHeader {
                cluster_id: header.cluster_id,
                node_id: header.node_id,
                index: header.index,
                term: header.term,
            };
            match BackupWriter::create(file, header) {
                Ok(created) => writer = Some(created),
                Err(error) => break Err(SaveError::File(error)),
            }
        }
        let Some(open) = writer.as_mut() else {
            break Err(SaveError::Stream("data arrived before the header".into()));
        };
        if let Err(error) = open.append(&chunk.data) {
            break Err(SaveError::File(error));
        }
        if chunk.last {
            let (crc, bytes) = open.checksum();
            if (crc, bytes) != (chunk.crc32, chunk.total_bytes) {
                break Err(SaveError::Stream(format!(
                    "received {bytes} bytes with crc32 {crc:08x}, the leader sent {} with {:08x}",
                    chunk.total_bytes, chunk.crc32
                )));
            }
            break Ok(());
        }
    };
    let Some(writer) = writer else {
        return Err(outcome
            .err()
            .unwrap_or(SaveError::Stream("no header".into())));
    };
    if let Err(error) = outcome {
        writer.abandon();
        return Err(error);
    }
    let (crc, bytes) = writer.checksum();
    let header = writer.header();
    writer.finish().map_err(SaveError::File)?;
    Ok((header, crc, bytes))
}

fn status(file: &Path, write_out: WriteOut) -> ExitCode {
    let verified = read_backup(file)
        .map_err(|error| error.to_string())
        .and_then(|(header, image)| {
            let machine = KvStateMachine::restore(&image).map_err(|error| {
                format!("{}: the image does not decode: {error}", file.display())
            })?;
            Ok((header, image.len(), crc32fast::hash(&image), machine))
        });
    let (header, bytes, crc, machine) = match verified {
        Ok(verified) => verified,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::Failure;
        }
    };
    match write_out {
        WriteOut::Json => println!(
            "{:#}",
            serde_json::json!({
                "file": file.display().to_string(),
                "sound": true,
                "cluster_id": header.cluster_id,
                "leader": header.node_id,
                "index": header.index,
                "term": header.term,
                "bytes": bytes,
                "crc32": crc,
                "keys": machine.client_keys(),
                "sharded": machine.is_sharded(),
            })
        ),
        WriteOut::Table => {
            println!("backup:   {}", file.display());
            println!(
                "taken:    index {} (term {}) of cluster {} at node {}",
                header.index, header.term, header.cluster_id, header.node_id
            );
            println!(
                "image:    {bytes} bytes, crc32 {crc:08x}, {} keys",
                machine.client_keys()
            );
            println!("verdict:  sound: `ravel snapshot restore` can seed a cluster from it");
        }
    }
    ExitCode::Success
}

fn restore(
    file: &Path,
    data_dir: &Path,
    id: u64,
    cluster_id: Option<u64>,
    write_out: WriteOut,
) -> ExitCode {
    match restore_backup(file, data_dir, id, cluster_id) {
        Ok(restored) => {
            match write_out {
                WriteOut::Json => println!(
                    "{:#}",
                    serde_json::json!({
                        "data_dir": data_dir.display().to_string(),
                        "node_id": restored.node_id,
                        "cluster_id": restored.cluster_id,
                        "index": restored.backup.index,
                        "keys": restored.keys,
                    })
                ),
                WriteOut::Table => {
                    println!(
                        "restored {} keys (index {} of cluster {}) into {} as node {} of new \
                         cluster {}",
                        restored.keys,
                        restored.backup.index,
                        restored.backup.cluster_id,
                        data_dir.display(),
                        restored.node_id,
                        restored.cluster_id
                    );
                    println!(
                        "start it with: ravel node --id {} --data-dir {} --listen ADDR; other \
                         nodes join it with --join ADDR",
                        restored.node_id,
                        data_dir.display()
                    );
                }
            }
            ExitCode::Success
        }
        Err(RestoreError::Refused(reason)) => {
            eprintln!("error: {reason}");
            ExitCode::Refused
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::Failure
        }
    }
}
