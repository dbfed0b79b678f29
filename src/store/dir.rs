//! State-directory backend: one JSON file per domain, challenge and certificate, plus a write-ahead log.
//! A write (one change, a batch, or a group of requests committed together) is durable once appended as
//! one line to `journal.log` and that file `fdatasync`ed: one sync per write whatever its size, and the
//! cheapest kind (no inode to create, no directory to update: creating and renaming a file per change
//! cost several times more kernel time, on the proxy's CPU). The object files are written later, by a
//! checkpoint: when the log passes `CHECKPOINT_BYTES` it is renamed `journal.old`, writes go on into a
//! fresh log, and a background thread writes the latest version of every object in `journal.old` (read
//! back from the file, so it holds whatever any process appended), syncs them (each file's data, each
//! directory once) and deletes it.
//!
//! The state is the files with `journal.old` then `journal.log` applied on top, complete lines in order,
//! so a write is all or nothing; a torn last line (the process died while appending a write it never
//! acknowledged) is dropped. Loading only reads (a graceful upgrade's new process and `-t` load while
//! another process writes), and retries if a checkpoint rotated the logs meanwhile. Writing needs an
//! exclusive `flock` on `lock`, taken at the first write and held until exit: during an upgrade, the new
//! process's first write waits until the old process has exited.

use super::{Change, Snapshot, Store, StoreError};
use crate::challenges::Challenge;
use crate::domain::Domain;
use crate::tls::CertRecord;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const DOMAINS: &str = "domains";
const CHALLENGES: &str = "challenges";
const CERTS: &str = "certs";
const ACME: &str = "acme";
/// The batch journal of earlier versions, replayed if found.
const JOURNAL: &str = "journal.json";
const LOG: &str = "journal.log";
const OLD_LOG: &str = "journal.old";
/// Log size that starts a checkpoint: a few thousand changes.
const CHECKPOINT_BYTES: u64 = 1 << 20;

const LOCK: &str = "lock";

#[derive(Clone)]
pub struct DirStore {
    root: Arc<PathBuf>,
    writer: Arc<Mutex<Writer>>,
}

/// This process's right to write: the lock, once taken, and the log it appends to.
struct Writer {
    /// The locked file and the open log; `None` until the first write.
    open: Option<(File, File)>,
    len: u64,
    /// A checkpoint thread is writing `journal.old`'s objects.
    checkpointing: bool,
    checkpoint_bytes: u64,
}

impl DirStore {
    /// Open (creating if needed) a state directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in [DOMAINS, CHALLENGES, CERTS, ACME] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        Ok(DirStore {
            root: Arc::new(root),
            writer: Arc::new(Mutex::new(Writer {
                open: None,
                len: 0,
                checkpointing: false,
                checkpoint_bytes: CHECKPOINT_BYTES,
            })),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn domain_path(&self, host: &str) -> PathBuf {
        // `*` is awkward in shells; `_` cannot occur in a validated host.
        self.root
            .join(DOMAINS)
            .join(format!("{}.json", host.replace('*', "_")))
    }

    fn challenge_path(&self, token: &str) -> PathBuf {
        self.root.join(CHALLENGES).join(format!("{token}.json"))
    }

    fn cert_path(&self, host: &str) -> PathBuf {
        self.root
            .join(CERTS)
            .join(format!("{}.json", host.replace('*', "_")))
    }

    fn apply_one(&self, c: &Change, flush: Flush) -> Result<(), StoreError> {
        match c {
            Change::PutDomain(d) => write_json_with(&self.domain_path(&d.host), d, flush),
            Change::DeleteDomain { host } => remove_with(&self.domain_path(host), flush),
            Change::PutChallenge(ch) => write_json_with(&self.challenge_path(&ch.token), ch, flush),
            Change::DeleteChallenge { token } => remove_with(&self.challenge_path(token), flush),
            // Holds the private key: 0600.
            Change::PutCertificate(c) => write_json_mode(&self.cert_path(&c.host), c, 0o600, flush),
            Change::DeleteCertificate { host } => remove_with(&self.cert_path(host), flush),
            // The account key is a secret: 0600.
            Change::PutAcmeAccount(a) => {
                write_json_mode(&self.root.join(ACME).join("account.json"), a, 0o600, flush)
            }
            Change::PutAcmeBudget(b) => {
                write_json_mode(&self.root.join(ACME).join("budget.json"), b, 0o644, flush)
            }
        }
    }

    fn writer_lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the directory's write lock (waiting for another process to let go of it), finish a
    /// checkpoint that process left behind, and open the log.
    fn open_writer(&self, w: &mut Writer) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        let path = self.root.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let flock = |op| {
            // SAFETY: `lock` is an open file descriptor for the duration of the call.
            (unsafe { libc::flock(lock.as_raw_fd(), op) } == 0)
                .then_some(())
                .ok_or_else(std::io::Error::last_os_error)
        };
        if flock(libc::LOCK_EX | libc::LOCK_NB).is_err() {
            log::warn!(
                "{} is locked by another edgeward process (a graceful upgrade?); writes wait until it exits",
                path.display()
            );
            flock(libc::LOCK_EX).map_err(|e| StoreError::io(&path, e))?;
        }
        // Temp files of writes cut short by a crash: nobody else writes here now.
        for sub in [DOMAINS, CHALLENGES, CERTS, ACME] {
            for entry in fs::read_dir(self.root.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let old = self.root.join(OLD_LOG);
        if old.exists() {
            self.checkpoint_file(&old)?;
        }
        let log_path = self.root.join(LOG);
        let log = open_log(&log_path)?;
        w.len = log
            .metadata()
            .map_err(|e| StoreError::io(&log_path, e))?
            .len();
        w.open = Some((lock, log));
        Ok(())
    }

    fn apply_sync(&self, changes: &[Change]) -> Result<(), StoreError> {
        let path = self.root.join(LOG);
        let io = |e| StoreError::io(&path, e);
        let mut guard = self.writer_lock();
        let w = &mut *guard;
        if w.open.is_none() {
            self.open_writer(w)?;
        }
        let mut line = serde_json::to_vec(changes).expect("changes always serialize");
        line.push(b'\n');
        let (_, log) = w.open.as_mut().expect("opened above");
        if let Err(e) = log.write_all(&line).and_then(|()| log.sync_data()) {
            // Do not leave a torn line for the next write to follow.
            let _ = log.set_len(w.len);
            return Err(io(e));
        }
        w.len += line.len() as u64;
        if w.len >= w.checkpoint_bytes && !w.checkpointing {
            self.start_checkpoint(w)?;
        }
        Ok(())
    }

    /// Rotate the log and write its objects in the background. Writes never wait for the files.
    fn start_checkpoint(&self, w: &mut Writer) -> Result<(), StoreError> {
        self.start_rotation(w)?;
        w.checkpointing = true;
        let old = self.root.join(OLD_LOG);
        let me = self.clone();
        std::thread::Builder::new()
            .name("state-checkpoint".into())
            .spawn(move || {
                // Background work: the proxy threads of this process come first on a shared CPU.
                // SAFETY: setpriority on this thread's own id; no memory is involved.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 19);
                }
                let mut delay = std::time::Duration::from_secs(1);
                while let Err(e) = me.checkpoint_file(&old) {
                    log::error!("state checkpoint failed, retrying in {delay:?}: {e}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_secs(60));
                }
                me.writer_lock().checkpointing = false;
            })
            .map_err(|e| StoreError::io(self.root.join(OLD_LOG), e))?;
        Ok(())
    }

    /// `journal.log` becomes `journal.old`; writes go on into a new, empty log.
    fn start_rotation(&self, w: &mut Writer) -> Result<(), StoreError> {
        let (path, old) = (self.root.join(LOG), self.root.join(OLD_LOG));
        fs::rename(&path, &old).map_err(|e| StoreError::io(&old, e))?;
        let log = open_log(&path)?;
        sync_dir(&self.root)?;
        w.open.as_mut().expect("writer is open").1 = log;
        w.len = 0;
        Ok(())
    }

    /// Write the latest version of every object a rotated log holds, make the files durable, delete it.
    fn checkpoint_file(&self, log: &Path) -> Result<(), StoreError> {
        let mut latest: HashMap<(&'static str, String), Change> = HashMap::new();
        for c in read_log(log)? {
            let (kind, key) = c.key();
            latest.insert((kind, key.to_string()), c);
        }
        for c in latest.values() {
            self.apply_one(c, Flush::DirLater)?;
        }
        for sub in [DOMAINS, CHALLENGES, CERTS, ACME] {
            sync_dir(&self.root.join(sub))?;
        }
        remove(log)
    }

    /// Write every logged change into the object files and empty the logs, now (waits for the write
    /// lock). Afterwards the files alone are the state.
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut guard = self.writer_lock();
        let w = &mut *guard;
        if w.open.is_none() {
            self.open_writer(w)?;
        }
        if w.checkpointing {
            return Err(StoreError::Unavailable(
                "a checkpoint is running; try again".into(),
            ));
        }
        self.start_rotation(w)?;
        self.checkpoint_file(&self.root.join(OLD_LOG))
    }

    fn load_sync(&self) -> Result<Snapshot, StoreError> {
        let journal = self.root.join(JOURNAL);
        if journal.exists() {
            let pending: Vec<Change> = read_json(&journal)?;
            log::warn!(
                "replaying {} changes of an interrupted batch from {}",
                pending.len(),
                journal.display()
            );
            self.apply_sync(&pending)?;
            remove(&journal)?;
        }
        self.read_only_snapshot()
    }

    /// The state, read without writing anything: the object files with the logs applied on top in
    /// memory. Read again if a checkpoint rotated or removed a log meanwhile.
    pub fn read_only_snapshot(&self) -> Result<Snapshot, StoreError> {
        let logs = || {
            [OLD_LOG, LOG].map(|name| {
                use std::os::unix::fs::MetadataExt;
                fs::metadata(self.root.join(name)).map_or(0, |m| m.ino())
            })
        };
        loop {
            let before = logs();
            let mut snap = self.read_objects()?;
            for name in [OLD_LOG, LOG] {
                for c in read_log(&self.root.join(name))? {
                    overlay(&mut snap, c);
                }
            }
            if logs() == before {
                return Ok(snap);
            }
        }
    }

    /// The object files as they are.
    fn read_objects(&self) -> Result<Snapshot, StoreError> {
        let domains: Vec<Domain> = read_all(&self.root.join(DOMAINS), |d: &Domain, p| {
            (self.domain_path(&d.host) == p)
                .then_some(())
                .ok_or("host does not match the file name")
        })?;
        let challenges: Vec<Challenge> =
            read_all(&self.root.join(CHALLENGES), |c: &Challenge, p| {
                (self.challenge_path(&c.token) == p)
                    .then_some(())
                    .ok_or("token does not match the file name")
            })?;
        let certificates: Vec<CertRecord> =
            read_all(&self.root.join(CERTS), |c: &CertRecord, p| {
                (self.cert_path(&c.host) == p)
                    .then_some(())
                    .ok_or("host does not match the file name")
            })?;
        let optional = |name: &str| {
            let p = self.root.join(ACME).join(name);
            p.exists().then_some(p)
        };
        let acme_account = optional("account.json")
            .map(|p| read_json(&p))
            .transpose()?;
        let acme_budget = optional("budget.json").map(|p| read_json(&p)).transpose()?;
        Ok(Snapshot {
            domains,
            challenges,
            certificates,
            acme_account,
            acme_budget,
        })
    }
}

#[async_trait]
impl Store for DirStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let me = self.clone();
        blocking(move || me.load_sync()).await
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        let me = self.clone();
        let changes = changes.to_vec();
        blocking(move || me.apply_sync(&changes)).await
    }
}

/// Apply one change to a snapshot in memory.
fn overlay(snap: &mut Snapshot, c: Change) {
    match c {
        Change::PutDomain(d) => {
            snap.domains.retain(|x| x.host != d.host);
            snap.domains.push(d);
        }
        Change::DeleteDomain { host } => snap.domains.retain(|x| x.host != host),
        Change::PutChallenge(ch) => {
            snap.challenges.retain(|x| x.token != ch.token);
            snap.challenges.push(ch);
        }
        Change::DeleteChallenge { token } => snap.challenges.retain(|x| x.token != token),
        Change::PutCertificate(r) => {
            snap.certificates.retain(|x| x.host != r.host);
            snap.certificates.push(r);
        }
        Change::DeleteCertificate { host } => snap.certificates.retain(|x| x.host != host),
        Change::PutAcmeAccount(a) => snap.acme_account = Some(a),
        Change::PutAcmeBudget(b) => snap.acme_budget = Some(b),
    }
}

fn open_log(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600) // holds private keys, like the certificate files
        .open(path)
        .map_err(|e| StoreError::io(path, e))
}

/// The changes of a log's complete lines, in order. A missing log is empty; a torn last line is dropped.
fn read_log(path: &Path) -> Result<Vec<Change>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
        log::warn!(
            "{}: dropping a torn last write (never acknowledged)",
            path.display()
        );
        lines.pop();
    }
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let changes: Vec<Change> =
            serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })?;
        out.extend(changes);
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))))
}

/// Read every `*.json` in `dir`; `check` verifies the object belongs at its path. Leftover temp files
/// from a crash are removed.
fn read_all<T: DeserializeOwned>(
    dir: &Path,
    check: impl Fn(&T, &Path) -> Result<(), &'static str>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(".tmp-") {
            continue; // a write in progress, or left by a crash: the writer sweeps those
        }
        if !name.ends_with(".json") {
            return Err(StoreError::Corrupt {
                path,
                message: "unexpected file in the state directory".into(),
            });
        }
        let v: T = match read_json(&path) {
            // Deleted by a checkpoint since the listing: the logs read after say why.
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            other => other?,
        };
        check(&v, &path).map_err(|m| StoreError::Corrupt {
            path: path.clone(),
            message: m.into(),
        })?;
        out.push(v);
    }
    Ok(out)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// How a file write is made durable: the file's data is always synced before the rename; its directory
/// entry either at once, or once for the whole checkpoint (`DirLater`). Not `syncfs`: it walks every
/// inode of the filesystem, and on a busy host that took the proxy's CPU for over a second.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    Each,
    DirLater,
}

/// Atomically and durably replace `path` with the JSON of `value`.
#[cfg(test)]
fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_json_with(path, value, Flush::Each)
}

fn write_json_with<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    flush: Flush,
) -> Result<(), StoreError> {
    write_json_mode(path, value, 0o644, flush)
}

fn write_json_mode<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
    mode: u32,
    flush: Flush,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state objects always serialize");
    write_file(path, &bytes, mode, flush)
}

/// temp file, write, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    write_file(path, bytes, mode, Flush::Each)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, flush: Flush) -> Result<(), StoreError> {
    let dir = path.parent().expect("state files live in a directory");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let io = |e| StoreError::io(path, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_data().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    match flush {
        Flush::Each => sync_dir(dir),
        Flush::DirLater => Ok(()),
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    remove_with(path, Flush::Each)
}

fn remove_with(path: &Path, flush: Flush) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) if flush == Flush::Each => {
            sync_dir(path.parent().expect("state files live in a directory"))
        }
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_domain as domain;

    #[test]
    fn round_trip_and_interrupted_batch_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        s.apply_sync(&[
            Change::PutDomain(domain("*.a.com")),
            Change::PutDomain(domain("b.com")),
        ])
        .unwrap();
        s.apply_sync(&[Change::DeleteDomain {
            host: "b.com".into(),
        }])
        .unwrap();
        // A batch that died after its journal was written but before its files were.
        write_json(
            &dir.path().join(JOURNAL),
            &vec![Change::PutDomain(domain("c.com"))],
        )
        .unwrap();
        let snap = s.load_sync().unwrap();
        let mut hosts: Vec<_> = snap.domains.iter().map(|d| d.host.clone()).collect();
        hosts.sort();
        assert_eq!(hosts, ["*.a.com", "c.com"]);
        assert!(!dir.path().join(JOURNAL).exists());
    }

    fn hosts(s: &DirStore) -> Vec<String> {
        let mut hosts: Vec<_> = s
            .load_sync()
            .unwrap()
            .domains
            .into_iter()
            .map(|d| d.host)
            .collect();
        hosts.sort();
        hosts
    }

    fn append(path: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn line(c: Change) -> Vec<u8> {
        let mut v = serde_json::to_vec(&vec![c]).unwrap();
        v.push(b'\n');
        v
    }

    /// Poll until no checkpoint is running (bounded).
    fn checkpoint_done(s: &DirStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while s.writer_lock().checkpointing || s.root.join(OLD_LOG).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "checkpoint never ended"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_log_is_the_state_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        s.apply_sync(&[Change::PutDomain(domain("a.com"))]).unwrap();
        s.apply_sync(&[
            Change::PutDomain(domain("b.com")),
            Change::PutDomain(domain("c.com")),
        ])
        .unwrap();
        s.apply_sync(&[Change::DeleteDomain {
            host: "a.com".into(),
        }])
        .unwrap();
        // Durable in the log only: no object file yet, and loading writes none.
        assert!(!s.domain_path("b.com").exists());
        // The process died in the middle of appending a write it never acknowledged.
        let torn = line(Change::PutDomain(domain("d.com")));
        append(&dir.path().join(LOG), &torn[..torn.len() / 2]);
        assert_eq!(
            hosts(&DirStore::open(dir.path()).unwrap()),
            ["b.com", "c.com"]
        );
        assert!(!s.domain_path("b.com").exists());
    }

    #[test]
    fn checkpoints_write_what_any_process_logged_and_replay_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirStore::open(dir.path()).unwrap();
        first
            .apply_sync(&[Change::PutDomain(domain("a.com"))])
            .unwrap();
        // A second process (a graceful upgrade's new one) opens the directory and reads it meanwhile.
        let second = DirStore::open(dir.path()).unwrap();
        assert_eq!(hosts(&second), ["a.com"]);
        // The first one writes again after that, then exits (its lock goes with it).
        first
            .apply_sync(&[Change::PutDomain(domain("b.com"))])
            .unwrap();
        drop(first);
        // The second's writes rotate and checkpoint the log: the first's lines reach the files too.
        second.writer_lock().checkpoint_bytes = 4096;
        for i in 0..100 {
            second
                .apply_sync(&[Change::PutDomain(domain(&format!("h{i}.com")))])
                .unwrap();
        }
        checkpoint_done(&second);
        assert!(second.domain_path("a.com").exists() && second.domain_path("b.com").exists());
        assert_eq!(hosts(&DirStore::open(dir.path()).unwrap()).len(), 102);
        // A crash during a checkpoint leaves both logs: the old one is applied first.
        append(
            &dir.path().join(OLD_LOG),
            &line(Change::PutDomain(domain("x.com"))),
        );
        append(
            &dir.path().join(LOG),
            &line(Change::DeleteDomain {
                host: "x.com".into(),
            }),
        );
        append(
            &dir.path().join(OLD_LOG),
            &line(Change::PutDomain(domain("y.com"))),
        );
        let hosts = hosts(&DirStore::open(dir.path()).unwrap());
        assert!(hosts.contains(&"y.com".to_string()) && !hosts.contains(&"x.com".to_string()));
        // The next writer finishes the interrupted checkpoint before it writes.
        drop(second);
        let third = DirStore::open(dir.path()).unwrap();
        third
            .apply_sync(&[Change::PutDomain(domain("z.com"))])
            .unwrap();
        assert!(!dir.path().join(OLD_LOG).exists() && third.domain_path("y.com").exists());
    }

    #[test]
    fn a_corrupt_log_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        s.apply_sync(&[Change::PutDomain(domain("a.com"))]).unwrap();
        append(&dir.path().join(LOG), b"{garbage}\n");
        let err = s.load_sync().unwrap_err().to_string();
        assert!(
            err.contains("journal.log") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path()).unwrap();
        let bad = dir.path().join(DOMAINS).join("x.com.json");
        fs::write(&bad, b"{not json").unwrap();
        let err = s.load_sync().unwrap_err().to_string();
        assert!(err.contains(&*bad.to_string_lossy()), "{err}");
        write_json(&bad, &domain("y.com")).unwrap();
        let err = s.load_sync().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}
