//! The seam between the state directory and the file system: every write-side operation (open, write,
//! sync, directory sync, rename, unlink, truncate) goes through `Fs`, which can be told to fail chosen
//! calls. Tests use it to drive each failure path of the journal and the checkpoint through the real
//! binary on a real file system: no mock of the OS, only an error returned where the OS could return
//! it. Off unless `EDGEWARD_FAULTS` is set (a warning is logged then), and then one relaxed atomic load
//! per call.
//!
//! `EDGEWARD_FAULTS` is a comma-separated list of rules `OP:PATH_SUFFIX:ERRNO[:TIMES[:AFTER]]`: the
//! operation `OP` (`open`, `write`, `sync`, `dirsync`, `rename`, `unlink`, `truncate`) on a path ending
//! with `PATH_SUFFIX` (`*` for any; for `rename`, either path) fails with `ERRNO` (`EIO`, `ENOSPC`,
//! `EMFILE`, `EACCES`, `EROFS`, `EDQUOT`) `TIMES` times (default 1, 0 for always) after letting `AFTER`
//! matching calls through (default 0). Example: `rename:journal.old:EIO:1,dirsync:domains:ENOSPC:0`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const ENV: &str = "EDGEWARD_FAULTS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Write,
    Sync,
    DirSync,
    Rename,
    Unlink,
    Truncate,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "open" => Op::Open,
            "write" => Op::Write,
            "sync" => Op::Sync,
            "dirsync" => Op::DirSync,
            "rename" => Op::Rename,
            "unlink" => Op::Unlink,
            "truncate" => Op::Truncate,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct Rule {
    op: Op,
    suffix: String,
    errno: i32,
    /// Failures left; `None`: always.
    times: Option<u32>,
    /// Matching calls still let through before failing.
    after: u32,
}

/// The file operations of the state directory, with the faults to inject (none by default).
#[derive(Clone, Default)]
pub struct Fs {
    active: Arc<AtomicBool>,
    rules: Arc<Mutex<Vec<Rule>>>,
    injected: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("faults", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

fn errno(name: &str) -> Option<i32> {
    Some(match name {
        "EIO" => libc::EIO,
        "ENOSPC" => libc::ENOSPC,
        "EMFILE" => libc::EMFILE,
        "EACCES" => libc::EACCES,
        "EROFS" => libc::EROFS,
        "EDQUOT" => libc::EDQUOT,
        _ => return None,
    })
}

impl Fs {
    /// The faults `EDGEWARD_FAULTS` asks for; a malformed value is an error naming the rule.
    pub fn from_env() -> Result<Fs, String> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.trim().is_empty() => {
                let fs = Fs::parse(&spec)?;
                log::warn!("{ENV} is set: injecting file system faults ({spec})");
                Ok(fs)
            }
            _ => Ok(Fs::default()),
        }
    }

    pub fn parse(spec: &str) -> Result<Fs, String> {
        let mut rules = Vec::new();
        for raw in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = || format!("{ENV}: `{raw}` is not OP:PATH_SUFFIX:ERRNO[:TIMES[:AFTER]]");
            let parts: Vec<&str> = raw.split(':').collect();
            if !(3..=5).contains(&parts.len()) {
                return Err(bad());
            }
            let op = Op::parse(parts[0]).ok_or_else(bad)?;
            let errno = errno(parts[2]).ok_or_else(bad)?;
            let num = |i: usize, default: u32| match parts.get(i) {
                Some(n) => n.parse::<u32>().map_err(|_| bad()),
                None => Ok(default),
            };
            let times = num(3, 1)?;
            rules.push(Rule {
                op,
                suffix: if parts[1] == "*" {
                    String::new()
                } else {
                    parts[1].to_string()
                },
                errno,
                times: (times > 0).then_some(times),
                after: num(4, 0)?,
            });
        }
        Ok(Fs {
            active: Arc::new(AtomicBool::new(!rules.is_empty())),
            rules: Arc::new(Mutex::new(rules)),
            injected: Default::default(),
        })
    }

    /// The error to return for this call, if a rule says so.
    fn check(&self, op: Op, paths: &[&Path]) -> io::Result<()> {
        if !self.active.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for r in rules.iter_mut() {
            let hit = r.op == op
                && paths
                    .iter()
                    .any(|p| p.to_string_lossy().ends_with(r.suffix.as_str()));
            if !hit || r.times == Some(0) {
                continue;
            }
            if r.after > 0 {
                r.after -= 1;
                continue;
            }
            if let Some(t) = r.times.as_mut() {
                *t -= 1;
            }
            log::warn!(
                "{ENV}: failing {op:?} on {} with errno {}",
                paths[0].display(),
                r.errno
            );
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(r.errno));
        }
        Ok(())
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::Relaxed)
    }

    pub fn open(&self, path: &Path, opts: &OpenOptions) -> io::Result<File> {
        self.check(Op::Open, &[path])?;
        opts.open(path)
    }

    pub fn write_all(&self, file: &mut File, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check(Op::Write, &[path])?;
        file.write_all(bytes)
    }

    /// The file's data (and the size it needs) on disk.
    pub fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(Op::Sync, &[path])?;
        file.sync_data()
    }

    /// A directory's entries on disk (after a create, rename or unlink in it).
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::DirSync, &[dir])?;
        File::open(dir).and_then(|d| d.sync_all())
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, &[to, from])?;
        std::fs::rename(from, to)
    }

    pub fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Unlink, &[path])?;
        std::fs::remove_file(path)
    }

    pub fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.check(Op::Truncate, &[path])?;
        file.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_count_skip_and_match_suffixes() {
        let fs = Fs::parse("rename:journal.old:EIO:2:1, sync:*:ENOSPC:0").unwrap();
        let old = Path::new("/s/journal.old");
        let log = Path::new("/s/journal.log");
        let rename = |to: &Path| {
            fs.check(Op::Rename, &[to, log])
                .map_err(|e| e.raw_os_error())
        };
        assert_eq!(
            rename(old),
            Ok(()),
            "the first matching call is let through"
        );
        assert_eq!(rename(old), Err(Some(libc::EIO)));
        assert_eq!(rename(old), Err(Some(libc::EIO)));
        assert_eq!(rename(old), Ok(()), "two failures, then it works again");
        assert_eq!(
            fs.check(Op::Rename, &[Path::new("/s/other"), Path::new("/s/x")])
                .map_err(|e| e.raw_os_error()),
            Ok(())
        );
        for _ in 0..3 {
            assert_eq!(
                fs.check(Op::Sync, &[log]).map_err(|e| e.raw_os_error()),
                Err(Some(libc::ENOSPC)),
                "times 0: always"
            );
        }
        assert!(Fs::default().check(Op::Sync, &[log]).is_ok());
    }

    #[test]
    fn malformed_rules_are_refused_by_name() {
        for bad in [
            "rename:x",
            "chmod:x:EIO",
            "sync:x:EWHAT",
            "sync:x:EIO:-1",
            "a:b:c:d:e:f",
        ] {
            let e = Fs::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(Fs::parse("").unwrap().rules.lock().unwrap().is_empty());
    }
}
