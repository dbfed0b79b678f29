//! State-directory backend: one JSON file per domain and per challenge, each written atomically (temp
//! file, fsync, rename, fsync dir). A batch of several changes is first written whole to `journal.json`
//! and replayed from there at start-up if the process died half way, so batches are all or nothing; its
//! files are then written without a sync each and flushed together by one `syncfs` before the journal
//! goes, so a batch of 10k changes costs one flush, not 20k.

use super::{Change, Snapshot, Store, StoreError};
use crate::challenges::Challenge;
use crate::domain::Domain;
use crate::tls::CertRecord;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const DOMAINS: &str = "domains";
const CHALLENGES: &str = "challenges";
const CERTS: &str = "certs";
const ACME: &str = "acme";
const JOURNAL: &str = "journal.json";

#[derive(Clone)]
pub struct DirStore {
    root: Arc<PathBuf>,
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

    fn apply_sync(&self, changes: &[Change]) -> Result<(), StoreError> {
        if let [one] = changes {
            return self.apply_one(one, Flush::Each);
        }
        let journal = self.root.join(JOURNAL);
        // May hold private keys: 0600 like the certificate files.
        write_json_mode(&journal, &changes, 0o600, Flush::Each)?;
        for c in changes {
            self.apply_one(c, Flush::Later)?;
        }
        syncfs(&self.root)?;
        remove(&journal)
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
            for c in &pending {
                self.apply_one(c, Flush::Later)?;
            }
            syncfs(&self.root)?;
            remove(&journal)?;
        }
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
            let _ = fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            return Err(StoreError::Corrupt {
                path,
                message: "unexpected file in the state directory".into(),
            });
        }
        let v: T = read_json(&path)?;
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

/// Whether a write is flushed on its own or later, with the whole batch, by one `syncfs`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    Each,
    Later,
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
    if flush == Flush::Each {
        f.sync_all().map_err(io)?;
    }
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    match flush {
        Flush::Each => sync_dir(dir),
        Flush::Later => Ok(()),
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

/// Flush every dirty page and inode of the filesystem holding `dir` (one call for a whole batch).
fn syncfs(dir: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    // SAFETY: `d` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(StoreError::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChallengeMode, TlsMode};

    fn domain(host: &str) -> Domain {
        Domain {
            host: host.into(),
            upstreams: vec!["127.0.0.1:1".parse().unwrap()],
            tls: TlsMode::Off,
            redirect_https: false,
            acme_challenges: ChallengeMode::Intercept,
        }
    }

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
