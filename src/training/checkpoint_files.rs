//! Crash-safe training checkpoints on burn-train's file checkpointer.
//!
//! burn-train writes an epoch's checkpoint as three files (`model-N.mpk`, `optim-N.mpk`,
//! `scheduler-N.mpk`), each from its own background thread, straight to the final name, and
//! deletes old epochs as soon as its strategy says so. A job killed at the wrong moment could
//! leave a truncated file under a final name, taken for a checkpoint on resume, with the older
//! one already gone. Here:
//!
//! - [`AtomicRecorder`] writes each file to a hidden temporary name, fsyncs it, renames it into
//!   place, fsyncs the folder, and only then records the file's size and CRC-32 in the epoch's
//!   manifest (`manifest-N.json`, itself replaced atomically). An epoch's checkpoint exists when
//!   its manifest lists all three files; it is *verified* when each file still has that size and
//!   checksum.
//! - [`DeferredDeletes`] wraps the checkpointing strategy: an epoch the strategy drops is deleted
//!   only once a newer epoch's checkpoint is complete, its manifest first (so a half-deleted
//!   checkpoint is never taken for one).
//! - [`newest_checkpoint`] is the newest epoch that verifies: what `--resume` continues from.
//!
//! For tests, `PHI_ZOO_CHECKPOINT_CRASH=K` aborts the process at the K-th of the points where a
//! crash matters (part of a file written; file synced but not renamed; renamed but not in the
//! manifest; manifest written), counted over all files the process saves: a kill at exactly
//! that moment, on demand.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::serde::{Serialize, de::DeserializeOwned};
use burn::tensor::backend::Backend;
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use serde_json::{Value, json};

/// The files that make one epoch's checkpoint, by burn-train's names.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// The records' format: burn's default named MessagePack, so files stay readable by burn.
type Format = NamedMpkFileRecorder<FullPrecisionSettings>;

const EXTENSION: &str = "mpk";

/// burn's default file recorder, writing each file atomically and recording it in its epoch's
/// manifest. The three checkpointers share one (cloned) recorder, and so one manifest lock.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder {
    format: Format,
    manifest_lock: Arc<Mutex<()>>,
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        EXTENSION
    }
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            RecorderError::Unknown(format!("{}: {what}: {e}", file.display()))
        };
        let final_path = file.with_extension(EXTENSION);
        let (dir, name) = split(&final_path).map_err(|e| fail("not a checkpoint file", &e))?;
        let (part, epoch) = part_and_epoch(&name)
            .ok_or_else(|| fail("not a checkpoint file", &"expected <part>-<epoch>"))?;
        let partial = dir.join(format!(".{name}.partial"));

        let mut out = Tally::new(BufWriter::new(
            File::create(&partial).map_err(|e| fail("create", &e))?,
        ));
        rmp_serde::encode::write_named(&mut out, &item).map_err(|e| fail("write", &e))?;
        let (writer, bytes, crc32) = out.finish();
        let file_handle = writer
            .into_inner()
            .map_err(|e| fail("write", &e.into_error()))?;
        crash_point("data written to the temporary file, not synced");
        file_handle.sync_all().map_err(|e| fail("sync", &e))?;
        drop(file_handle);
        crash_point("temporary file synced, not renamed");
        std::fs::rename(&partial, &final_path).map_err(|e| fail("rename", &e))?;
        sync_dir(&dir).map_err(|e| fail("sync the folder", &e))?;
        crash_point("renamed, not in the manifest");

        let _guard = self
            .manifest_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut manifest = Manifest::read(&dir, epoch).unwrap_or_default();
        manifest.files.insert(
            part.to_owned(),
            FileEntry {
                name: name.clone(),
                bytes,
                crc32,
            },
        );
        manifest
            .write(&dir, epoch)
            .map_err(|e| fail("write the manifest", &e))?;
        crash_point("manifest written");
        Ok(())
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        <Format as Recorder<B>>::load_item(&self.format, file)
    }
}

/// One file of a checkpoint as written.
#[derive(Clone, Debug, PartialEq)]
struct FileEntry {
    name: String,
    bytes: u64,
    crc32: u32,
}

/// What is known to be durably written of one epoch's checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
struct Manifest {
    /// Part (`model`, `optim`, `scheduler`) → its file.
    files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    fn path(dir: &Path, epoch: usize) -> PathBuf {
        dir.join(format!("manifest-{epoch}.json"))
    }

    fn read(dir: &Path, epoch: usize) -> Result<Self, String> {
        let path = Self::path(dir, epoch);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let files = value["files"]
            .as_object()
            .ok_or_else(|| format!("{}: no `files` object", path.display()))?;
        let mut manifest = Manifest::default();
        for (part, entry) in files {
            let field = |key: &str| {
                entry[key]
                    .as_u64()
                    .ok_or_else(|| format!("{}: files.{part}.{key}", path.display()))
            };
            manifest.files.insert(
                part.clone(),
                FileEntry {
                    name: entry["name"]
                        .as_str()
                        .filter(|n| !n.contains(['/', '\\']))
                        .ok_or_else(|| format!("{}: files.{part}.name", path.display()))?
                        .to_owned(),
                    bytes: field("bytes")?,
                    crc32: u32::try_from(field("crc32")?)
                        .map_err(|_| format!("{}: files.{part}.crc32", path.display()))?,
                },
            );
        }
        Ok(manifest)
    }

    fn write(&self, dir: &Path, epoch: usize) -> std::io::Result<()> {
        let files: serde_json::Map<String, Value> = self
            .files
            .iter()
            .map(|(part, f)| {
                (
                    part.clone(),
                    json!({"name": f.name, "bytes": f.bytes, "crc32": f.crc32}),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({"epoch": epoch, "files": files}))?;
        let path = Self::path(dir, epoch);
        let partial = dir.join(format!(".manifest-{epoch}.json.partial"));
        let mut file = File::create(&partial)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&partial, &path)?;
        sync_dir(dir)
    }

    /// Every part of a checkpoint is recorded.
    fn is_complete(&self) -> bool {
        PARTS.iter().all(|p| self.files.contains_key(*p))
    }

    /// Complete, and each file still has the size and checksum it was written with.
    fn verify(&self, dir: &Path) -> Result<(), String> {
        if !self.is_complete() {
            return Err("the manifest does not list every part".into());
        }
        for entry in self.files.values() {
            let path = dir.join(&entry.name);
            let (bytes, crc32) = checksum(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if (bytes, crc32) != (entry.bytes, entry.crc32) {
                return Err(format!(
                    "{}: {bytes} bytes with CRC-32 {crc32:08x}, written as {} bytes with {:08x}",
                    path.display(),
                    entry.bytes,
                    entry.crc32
                ));
            }
        }
        Ok(())
    }
}

/// The epochs with a manifest in `dir`, newest first.
fn manifest_epochs(dir: &Path) -> Vec<usize> {
    let mut epochs: Vec<usize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("manifest-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs
}

/// The newest epoch of `run_dir/checkpoint` whose checkpoint verifies (every file present with
/// the size and checksum its manifest records): what `--resume` continues from. Newer epochs
/// that do not verify (a run killed while writing them) are reported on stderr and skipped.
pub fn newest_checkpoint(run_dir: &Path) -> Option<usize> {
    let dir = run_dir.join("checkpoint");
    for epoch in manifest_epochs(&dir) {
        match Manifest::read(&dir, epoch).and_then(|m| m.verify(&dir)) {
            Ok(()) => return Some(epoch),
            Err(why) => eprintln!("checkpoint of epoch {epoch} is incomplete, skipped: {why}"),
        }
    }
    None
}

/// Before a run starts after `epoch` (0: a fresh run), forgets every later checkpoint and any
/// temporary file a killed run left, so that nothing stale is ever listed beside new files.
pub(crate) fn clear_after(run_dir: &Path, epoch: usize) -> std::io::Result<()> {
    let dir = run_dir.join("checkpoint");
    for stale in manifest_epochs(&dir).into_iter().filter(|&e| e > epoch) {
        std::fs::remove_file(Manifest::path(&dir, stale))?;
    }
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".partial") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A checkpointing strategy whose deletions wait until a newer checkpoint is complete: the
/// inner strategy decides what to keep, this decides when it is safe to let go.
pub struct DeferredDeletes<S> {
    inner: S,
    dir: PathBuf,
    /// Epochs the inner strategy dropped that are still on disk.
    pending: Arc<Mutex<Vec<usize>>>,
}

impl<S: CheckpointingStrategy> DeferredDeletes<S> {
    /// `run_dir`: the run's folder (checkpoints in `run_dir/checkpoint`).
    pub fn new(inner: S, run_dir: &Path) -> Self {
        Self {
            inner,
            dir: run_dir.join("checkpoint"),
            pending: Arc::default(),
        }
    }

    /// The epochs still waiting for deletion, shared with the strategy once it is handed over.
    pub(crate) fn pending(&self) -> Arc<Mutex<Vec<usize>>> {
        self.pending.clone()
    }
}

/// The pending epochs that a newer complete checkpoint makes safe to delete; each one's
/// manifest is removed here, before its files, and it leaves `pending`.
fn release(dir: &Path, pending: &mut Vec<usize>) -> Vec<usize> {
    let newest_complete = manifest_epochs(dir)
        .into_iter()
        .filter(|e| !pending.contains(e))
        .find(|&e| Manifest::read(dir, e).is_ok_and(|m| m.is_complete()));
    let Some(newest) = newest_complete else {
        return vec![];
    };
    let (released, kept): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&e| e < newest);
    *pending = kept;
    for &epoch in &released {
        // Gone or not, the epoch must never count again: a missing manifest is the aim.
        let _ = std::fs::remove_file(Manifest::path(dir, epoch));
    }
    released
}

/// After a run, deletes the checkpoints its strategy dropped and that a newer complete
/// checkpoint now covers.
pub(crate) fn delete_released(run_dir: &Path, pending: &Mutex<Vec<usize>>) -> std::io::Result<()> {
    let dir = run_dir.join("checkpoint");
    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
    for epoch in release(&dir, &mut pending) {
        for part in PARTS {
            let path = dir.join(format!("{part}-{epoch}.{EXTENSION}"));
            if path.exists() {
                std::fs::remove_file(path)?;
            }
        }
    }
    Ok(())
}

impl<S: CheckpointingStrategy> CheckpointingStrategy for DeferredDeletes<S> {
    fn checkpointing(
        &mut self,
        epoch: usize,
        collector: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let mut actions = Vec::new();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for action in self.inner.checkpointing(epoch, collector) {
            match action {
                CheckpointingAction::Delete(old) => pending.push(old),
                save => actions.push(save),
            }
        }
        // The epoch being saved now is not complete yet; earlier saves are (burn-train's
        // checkpointer threads take a new file only after finishing the last).
        let released = release(&self.dir, &mut pending);
        actions.extend(released.into_iter().map(CheckpointingAction::Delete));
        actions
    }
}

/// `dir` and file name of a path.
fn split(path: &Path) -> Result<(PathBuf, String), String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no file name")?
        .to_owned();
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    Ok((dir, name))
}

/// `("model", 3)` from `model-3.mpk`.
fn part_and_epoch(name: &str) -> Option<(&str, usize)> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
    let (part, epoch) = stem.rsplit_once('-')?;
    Some((part, epoch.parse().ok()?))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing on every platform; where they can, the rename
    // is only durable once the folder is synced.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Size and CRC-32 of a file's contents.
fn checksum(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((bytes, hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
}

/// A writer that counts and checksums what passes through it.
struct Tally<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Tally<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, u64, u32) {
        (self.inner, self.bytes, self.hasher.finalize())
    }
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes >= 4096 && self.bytes - (n as u64) < 4096 {
            // Part of the file on disk, the rest still to come.
            self.inner.flush()?;
            crash_point("part of the data written");
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Test hook: aborts the process at the `PHI_ZOO_CHECKPOINT_CRASH`-th crash point reached.
fn crash_point(stage: &str) {
    static TARGET: OnceLock<Option<usize>> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let Some(target) = *TARGET.get_or_init(|| {
        std::env::var("PHI_ZOO_CHECKPOINT_CRASH")
            .ok()
            .and_then(|v| v.parse().ok())
    }) else {
        return;
    };
    let reached = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if reached == target {
        eprintln!("PHI_ZOO_CHECKPOINT_CRASH={target}: aborting at crash point {reached} ({stage})");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(part_and_epoch("model-3.mpk"), Some(("model", 3)));
        assert_eq!(part_and_epoch("optim-12.mpk"), Some(("optim", 12)));
        assert_eq!(part_and_epoch("model.mpk"), None);
    }
}
