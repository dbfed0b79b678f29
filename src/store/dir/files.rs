//! The object files: one JSON file per domain, challenge and certificate, plus the ACME account and
//! budget. Written only by the checkpoint (temp file, data sync, rename; the directory synced once per
//! checkpoint), read at start-up and when a follower resyncs.

use super::faults::Fs;
use crate::model::{CertRecord, Challenge, Change, Domain};
use crate::store::{Snapshot, StoreError};
use serde::de::DeserializeOwned;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const DOMAINS: &str = "domains";
pub const CHALLENGES: &str = "challenges";
pub const CERTS: &str = "certs";
pub const ACME: &str = "acme";
pub const SUBDIRS: [&str; 4] = [DOMAINS, CHALLENGES, CERTS, ACME];
const TMP: &str = ".tmp-";

/// Where each object lives under the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn domain(&self, host: &str) -> PathBuf {
        // `*` is awkward in shells; `_` cannot occur in a validated host.
        self.root
            .join(DOMAINS)
            .join(format!("{}.json", host.replace('*', "_")))
    }

    pub fn challenge(&self, token: &str) -> PathBuf {
        self.root.join(CHALLENGES).join(format!("{token}.json"))
    }

    pub fn cert(&self, host: &str) -> PathBuf {
        self.root
            .join(CERTS)
            .join(format!("{}.json", host.replace('*', "_")))
    }

    fn acme(&self, name: &str) -> PathBuf {
        self.root.join(ACME).join(name)
    }

    /// Write the object a change leaves behind (or remove it). The directory entry is made durable
    /// later, once for the whole checkpoint (`sync_dirs`).
    pub fn write_change(&self, fs: &Fs, c: &Change) -> Result<(), StoreError> {
        match c {
            Change::PutDomain(d) => write_json(fs, &self.domain(&d.host), d, 0o644),
            Change::DeleteDomain { host } => remove_entry(fs, &self.domain(host)),
            Change::PutChallenge(ch) => write_json(fs, &self.challenge(&ch.token), ch, 0o644),
            Change::DeleteChallenge { token } => remove_entry(fs, &self.challenge(token)),
            // Holds the private key: 0600.
            Change::PutCertificate(c) => write_json(fs, &self.cert(&c.host), c, 0o600),
            Change::DeleteCertificate { host } => remove_entry(fs, &self.cert(host)),
            // The account key is a secret: 0600.
            Change::PutAcmeAccount(a) => write_json(fs, &self.acme("account.json"), a, 0o600),
            Change::PutAcmeBudget(b) => write_json(fs, &self.acme("budget.json"), b, 0o644),
        }
    }

    pub fn sync_dirs(&self, fs: &Fs) -> Result<(), StoreError> {
        for sub in SUBDIRS {
            let dir = self.root.join(sub);
            fs.sync_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        Ok(())
    }

    /// Create the directories a writer needs (a reader never creates anything).
    pub fn create(&self) -> Result<(), StoreError> {
        for sub in SUBDIRS {
            let p = self.root.join(sub);
            fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        Ok(())
    }

    /// Temp files of writes cut short by a crash; only the writer calls this.
    pub fn sweep_temp_files(&self) {
        for sub in SUBDIRS {
            for entry in fs::read_dir(self.root.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.file_name().to_string_lossy().starts_with(TMP) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The object files as they are. A missing directory is empty (nothing was ever written).
    pub fn read_objects(&self) -> Result<Snapshot, StoreError> {
        let domains = read_all(&self.root.join(DOMAINS), |d: &Domain, p| {
            (self.domain(&d.host) == p)
                .then_some(())
                .ok_or("host does not match the file name")
        })?;
        let challenges = read_all(&self.root.join(CHALLENGES), |c: &Challenge, p| {
            (self.challenge(&c.token) == p)
                .then_some(())
                .ok_or("token does not match the file name")
        })?;
        let certificates = read_all(&self.root.join(CERTS), |c: &CertRecord, p| {
            (self.cert(&c.host) == p)
                .then_some(())
                .ok_or("host does not match the file name")
        })?;
        Ok(Snapshot {
            domains,
            challenges,
            certificates,
            acme_account: read_optional(&self.acme("account.json"))?,
            acme_budget: read_optional(&self.acme("budget.json"))?,
        })
    }
}

fn read_optional<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => parse_json(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Read every `*.json` in `dir`; `check` verifies the object belongs at its path.
fn read_all<T: DeserializeOwned>(
    dir: &Path,
    check: impl Fn(&T, &Path) -> Result<(), &'static str>,
) -> Result<Vec<T>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(TMP) {
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

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    parse_json(path, &bytes)
}

fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_json<T: serde::Serialize + ?Sized>(
    fs: &Fs,
    path: &Path,
    value: &T,
    mode: u32,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).expect("state objects always serialize");
    write_file(fs, path, &bytes, mode)
}

/// Temp file, write, data sync, rename over `path`. The directory entry is not synced here.
pub fn write_file(fs: &Fs, path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().expect("state files live in a directory");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!("{TMP}{name}-{}", std::process::id()));
    let io = |e| StoreError::io(path, e);
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(mode);
    let mut f = fs.open(&tmp, &opts).map_err(io)?;
    let written = fs
        .write_all(&mut f, &tmp, bytes)
        .and_then(|()| fs.sync_data(&f, &tmp));
    drop(f);
    if let Err(e) = written.and_then(|()| fs.rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Remove `path` (already gone is fine); its directory is synced by the caller.
pub fn remove_entry(fs: &Fs, path: &Path) -> Result<(), StoreError> {
    match fs.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Atomically and durably replace `path` (a secret file: the admin token): temp file, sync, rename,
/// directory sync.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let fs = Fs::default();
    write_file(&fs, path, bytes, mode)?;
    let dir = path.parent().expect("a file lives in a directory");
    fs.sync_dir(dir).map_err(|e| StoreError::io(dir, e))
}
