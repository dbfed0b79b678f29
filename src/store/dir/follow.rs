//! Reading the state while another process writes it: a consistent snapshot, then what the writer
//! appends after it. A `Tail` keeps the log files it reads open and reads them by offset, so a rotation
//! (`journal.log` renamed `journal.old`, a new `journal.log`) is followed without rereading anything:
//! the old file is read to its end, then the new one from its start. If the tail can no longer prove
//! it saw every log in between (a whole log rotated and checkpointed between two polls), or if a record
//! it applied was cut again (a write whose sync failed, answered as failed), it reads a fresh snapshot
//! instead (`Followed::Resync`). Nothing here writes.

use super::files::Layout;
use super::journal::{self, Overlay, LEGACY, LOG, OLD_LOG};
use crate::model::Change;
use crate::store::{Snapshot, StoreError};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// What a poll of the tail found.
#[derive(Debug)]
pub enum Followed {
    /// The changes appended since the last poll, in order.
    Changes(Vec<Change>),
    /// A gap could not be ruled out: the whole state, read again; memory should become equal to it.
    Resync(Snapshot),
}

/// A log file being followed.
#[derive(Debug)]
struct Tailed {
    file: File,
    /// Its name now (`journal.log` until a rotation is seen, then `journal.old`), for errors.
    name: &'static str,
    ino: u64,
    /// End of the last complete record read.
    offset: u64,
    /// Number of the next line (for errors).
    line: usize,
    /// The last record read, as it was read: a writer cuts a record whose write failed, which a
    /// follower may have read before the cut (it reads what is written, synced or not).
    last: Option<Consumed>,
}

/// Enough of a consumed record to tell whether its bytes are still in the file: all of a record up
/// to `SAMPLE` bytes, else its first and last `SAMPLE` bytes.
#[derive(Debug)]
struct Consumed {
    start: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

const SAMPLE: usize = 4096;

impl Consumed {
    fn of(start: u64, record: &[u8]) -> Consumed {
        let n = record.len().min(SAMPLE);
        Consumed {
            start,
            head: record[..n].to_vec(),
            tail: record[record.len() - n..].to_vec(),
        }
    }
}

/// What reading a followed log found.
enum Read {
    Records(Vec<Change>, usize),
    /// Bytes already applied are no longer there (a failed write was cut): follow from a snapshot.
    Rewritten,
}

impl Tailed {
    fn open(root: &Path, name: &'static str) -> Result<Option<Tailed>, StoreError> {
        let path = root.join(name);
        match File::open(&path) {
            Ok(file) => {
                let ino = file.metadata().map_err(|e| StoreError::io(&path, e))?.ino();
                Ok(Some(Tailed {
                    file,
                    name,
                    ino,
                    offset: 0,
                    line: 1,
                    last: None,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// The complete records appended since the last read; a partial last line waits for its end.
    fn read_new(&mut self, root: &Path) -> Result<Read, StoreError> {
        let path = &root.join(self.name);
        let io = |e| StoreError::io(path, e);
        if !self.still_there().map_err(io)? {
            return Ok(Read::Rewritten);
        }
        let bytes = journal::read_from(&self.file, self.offset).map_err(io)?;
        let parsed = journal::parse_complete(path, &bytes, self.line)?;
        if parsed.lines > 0 {
            let complete = &bytes[..parsed.bytes];
            let start = complete[..complete.len() - 1]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            self.last = Some(Consumed::of(self.offset + start as u64, &complete[start..]));
        }
        self.offset += parsed.bytes as u64;
        self.line += parsed.lines;
        Ok(Read::Records(parsed.changes, bytes.len() - parsed.bytes))
    }

    /// Are the bytes read so far still in the file, as they were read?
    fn still_there(&self) -> std::io::Result<bool> {
        if self.file.metadata()?.len() < self.offset {
            return Ok(false);
        }
        let Some(last) = &self.last else {
            return Ok(true);
        };
        let len = (self.offset - last.start) as usize;
        let mut head = vec![0; last.head.len()];
        let mut tail = vec![0; last.tail.len()];
        let tail_at = last.start + (len - tail.len()) as u64;
        self.file.read_exact_at(&mut head, last.start)?;
        self.file.read_exact_at(&mut tail, tail_at)?;
        Ok(head == last.head && tail == last.tail)
    }

    fn len(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }
}

/// The inode a name points to now, if any.
fn ino_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A position in the logs: what has been read, and the open files to read the rest from.
#[derive(Debug)]
pub struct Tail {
    layout: Layout,
    /// Oldest first: at most `journal.old` (while its writer may still append to it) and `journal.log`.
    files: Vec<Tailed>,
}

/// The state as it is now (the object files, then `journal.json`, `journal.old` and `journal.log` on
/// top, complete records only), and the tail positioned right after what it read.
pub fn snapshot(layout: &Layout) -> Result<(Snapshot, Tail), StoreError> {
    let (old_path, log_path) = (layout.root.join(OLD_LOG), layout.root.join(LOG));
    loop {
        // Open the logs first: whatever a checkpoint writes into the objects meanwhile comes from
        // them, and they are read after the objects.
        let old = Tailed::open(&layout.root, OLD_LOG)?;
        let log = Tailed::open(&layout.root, LOG)?;
        let mut overlay = Overlay::new(layout.read_objects()?);
        let legacy = layout.root.join(LEGACY);
        if legacy.exists() {
            let pending: Vec<Change> = super::files::read_json(&legacy)?;
            pending.into_iter().for_each(|c| overlay.apply(c));
        }
        let before = (old.as_ref().map(|t| t.ino), log.as_ref().map(|t| t.ino));
        let mut tail = Tail {
            layout: layout.clone(),
            files: old.into_iter().chain(log).collect(),
        };
        for t in tail.files.iter_mut() {
            if let Read::Records(changes, torn) = t.read_new(&layout.root)? {
                journal::warn_torn(&layout.root.join(t.name), torn);
                changes.into_iter().for_each(|c| overlay.apply(c));
            }
        }
        let after = (ino_of(&old_path), ino_of(&log_path));
        if after == before {
            return Ok((overlay.into_snapshot(), tail));
        }
        // One rotation while the objects were read is common at high change rates: the log we read
        // became `journal.old`; read the new log too. Anything else: read again.
        if before.1.is_some() && after.0 == before.1 {
            if tail.files.len() == 2 {
                // The `journal.old` read above was checkpointed away before the rotation: final.
                tail.files.remove(0);
            }
            tail.files[0].name = OLD_LOG;
            match tail.poll()? {
                Followed::Changes(more) => {
                    more.into_iter().for_each(|c| overlay.apply(c));
                    return Ok((overlay.into_snapshot(), tail));
                }
                // The tail read the whole state again itself.
                Followed::Resync(snap) => return Ok((snap, tail)),
            }
        }
        log::info!("the state directory's logs rotated twice while it was read; reading it again");
    }
}

impl Tail {
    /// A tail at the current end of the logs, for a process that just stopped writing them.
    pub fn at_end(layout: &Layout) -> Result<Tail, StoreError> {
        let mut files = Vec::new();
        for name in [OLD_LOG, LOG] {
            if let Some(mut t) = Tailed::open(&layout.root, name)? {
                let (complete, _) = journal::complete_len(&t.file)
                    .map_err(|e| StoreError::io(layout.root.join(name), e))?;
                t.offset = complete;
                files.push(t);
            }
        }
        Ok(Tail {
            layout: layout.clone(),
            files,
        })
    }

    /// What the writer appended since the last poll (following rotations), or a resync.
    pub fn poll(&mut self) -> Result<Followed, StoreError> {
        let (old_path, log_path) = (self.layout.root.join(OLD_LOG), self.layout.root.join(LOG));
        let mut out = Vec::new();
        loop {
            // Measured before the older file is read: once the newest log holds a record, its writer
            // has stopped appending to the older one, so what is read from it now is all of it.
            let newest_len = self.files.last().map_or(0, Tailed::len);
            for t in self.files.iter_mut() {
                match t.read_new(&self.layout.root)? {
                    Read::Records(changes, _) => out.extend(changes),
                    Read::Rewritten => return self.resync(),
                }
            }
            if self.files.len() == 2 && newest_len > 0 {
                self.files.remove(0);
            }
            let log_ino = ino_of(&log_path);
            let newest = self.files.last().map(|t| t.ino);
            if log_ino.is_none() || log_ino == newest {
                // Unchanged, or between a rename and the new log's creation: nothing more yet.
                return Ok(Followed::Changes(out));
            }
            // `journal.log` is a file this tail does not know: the log it followed must now be
            // `journal.old`, or a whole log came and went unseen.
            let old_ino = ino_of(&old_path);
            let continuous = match newest {
                Some(ours) => old_ino == Some(ours),
                None => old_ino.is_none(),
            };
            if !continuous {
                return self.resync();
            }
            if self.files.len() == 2 {
                // The older one was checkpointed away before this rotation: it was final.
                self.files.remove(0);
            }
            if let Some(ours) = self.files.last_mut() {
                ours.name = OLD_LOG;
            }
            match Tailed::open(&self.layout.root, LOG)? {
                Some(t) if Some(t.ino) == log_ino => self.files.push(t),
                // Rotated again between the check and the open: look again.
                _ => continue,
            }
        }
    }

    fn resync(&mut self) -> Result<Followed, StoreError> {
        log::warn!(
            "{}: a log may have rotated unseen; reading the whole state again",
            self.layout.root.display()
        );
        crate::metrics::STATE_FOLLOW_RESYNCS.inc();
        let (snap, tail) = snapshot(&self.layout)?;
        *self = tail;
        Ok(Followed::Resync(snap))
    }
}
