//! The write-ahead log's format: one record per line, each a JSON array of changes written as one
//! `write` and made durable with one `fdatasync`. A record is complete when its `\n` is on disk; a last
//! line without one was being appended when the process died (never acknowledged) and is a torn tail.
//! Replaying is linear in the log's length: changes land in hash maps (`Overlay`), one probe each.

use crate::model::{AccountRecord, Budget, CertRecord, Challenge, Change, Domain};
use crate::store::{Snapshot, StoreError};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const LOG: &str = "journal.log";
pub const OLD_LOG: &str = "journal.old";
/// The batch journal of versions before the log, replayed if found.
pub const LEGACY: &str = "journal.json";

/// One record: the changes as a JSON array and its `\n`.
pub fn encode(changes: &[Change]) -> Vec<u8> {
    let mut line = serde_json::to_vec(changes).expect("changes always serialize");
    line.push(b'\n');
    line
}

/// The complete records at the start of `bytes`: their changes, in order, and how many bytes and
/// lines they take. `first_line` numbers the first line (for the error naming a corrupt one).
pub fn parse_complete(path: &Path, bytes: &[u8], first_line: usize) -> Result<Parsed, StoreError> {
    let mut out = Parsed::default();
    let mut rest = bytes;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let (line, after) = rest.split_at(nl + 1);
        let changes: Vec<Change> =
            serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", first_line + out.lines),
            })?;
        out.changes.extend(changes);
        out.bytes += line.len();
        out.lines += 1;
        rest = after;
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub changes: Vec<Change>,
    pub bytes: usize,
    pub lines: usize,
}

/// Everything from `offset` to the end of `file`, read by position (the file may be renamed meanwhile).
pub fn read_from(file: &File, offset: u64) -> std::io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let mut buf = vec![0; len.saturating_sub(offset) as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break, // truncated meanwhile
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// The changes of a log's complete lines, in order. A missing log is empty; a torn last line is
/// dropped with a warning.
pub fn read_log(path: &Path) -> Result<Vec<Change>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let parsed = parse_complete(path, &bytes, 1)?;
    warn_torn(path, bytes.len() - parsed.bytes);
    Ok(parsed.changes)
}

pub fn warn_torn(path: &Path, torn: usize) {
    if torn > 0 {
        log::warn!(
            "{}: ignoring a torn last write of {torn} bytes (never acknowledged)",
            path.display()
        );
    }
}

/// The length of the complete records of an open log (the end of its last `\n`) and its size.
/// Reads backwards from the end, so a long log costs one short read.
pub fn complete_len(file: &File) -> std::io::Result<(u64, u64)> {
    let size = file.metadata()?.len();
    let mut end = size;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok((start + i as u64 + 1, size));
        }
        end = start;
    }
    Ok((0, size))
}

/// A snapshot being replayed: each object under its key, so a change costs one map operation.
#[derive(Default)]
pub struct Overlay {
    domains: HashMap<String, Domain>,
    challenges: HashMap<String, Challenge>,
    certs: HashMap<String, CertRecord>,
    account: Option<AccountRecord>,
    budget: Option<Budget>,
}

impl Overlay {
    pub fn new(s: Snapshot) -> Self {
        Overlay {
            domains: s.domains.into_iter().map(|d| (d.host.clone(), d)).collect(),
            challenges: s
                .challenges
                .into_iter()
                .map(|c| (c.token.clone(), c))
                .collect(),
            certs: s
                .certificates
                .into_iter()
                .map(|c| (c.host.clone(), c))
                .collect(),
            account: s.acme_account,
            budget: s.acme_budget,
        }
    }

    pub fn apply(&mut self, c: Change) {
        match c {
            Change::PutDomain(d) => {
                self.domains.insert(d.host.clone(), d);
            }
            Change::DeleteDomain { host } => {
                self.domains.remove(&host);
            }
            Change::PutChallenge(ch) => {
                self.challenges.insert(ch.token.clone(), ch);
            }
            Change::DeleteChallenge { token } => {
                self.challenges.remove(&token);
            }
            Change::PutCertificate(r) => {
                self.certs.insert(r.host.clone(), r);
            }
            Change::DeleteCertificate { host } => {
                self.certs.remove(&host);
            }
            Change::PutAcmeAccount(a) => self.account = Some(a),
            Change::PutAcmeBudget(b) => self.budget = Some(b),
        }
    }

    pub fn into_snapshot(self) -> Snapshot {
        Snapshot {
            domains: self.domains.into_values().collect(),
            challenges: self.challenges.into_values().collect(),
            certificates: self.certs.into_values().collect(),
            acme_account: self.account,
            acme_budget: self.budget,
        }
    }
}
