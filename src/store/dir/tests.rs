//! The state directory against a real file system: the log is the state, torn tails are cut, failed
//! writes leave nothing behind, rotation and checkpoint failures (through the `Fs` seam) never fail a
//! durable write nor unlink unwritten data, and a tail follows another writer across rotations.

use super::journal::{LEGACY, LOG, OLD_LOG};
use super::*;
use crate::model::domain::test_domain as domain;
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

fn put(host: &str) -> Change {
    Change::PutDomain(domain(host))
}

fn hosts_of(snap: &Snapshot) -> BTreeSet<String> {
    snap.domains.iter().map(|d| d.host.clone()).collect()
}

fn stored_hosts(root: &Path) -> BTreeSet<String> {
    hosts_of(
        &DirStore::with_fs(root, Fs::default())
            .read_only_snapshot()
            .unwrap(),
    )
}

fn writer(root: &Path, fs: Fs) -> DirStore {
    let s = DirStore::with_fs(root, fs);
    s.take_writer().unwrap();
    s
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

/// Poll `done` until true, failing after a deadline.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn checkpoint_done(s: &DirStore) {
    eventually("the checkpoint ends", || {
        !s.checkpoint_running() && !s.root().join(OLD_LOG).exists()
    });
}

#[test]
fn reading_creates_nothing_and_writing_needs_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let reader = DirStore::with_fs(&root, Fs::default());
    assert!(reader.read_only_snapshot().unwrap().domains.is_empty());
    assert!(!root.exists(), "a reader created the directory");
    let err = reader.apply_sync(&[put("a.com")]).unwrap_err().to_string();
    assert!(err.contains("lock"), "{err}");
    let w = writer(&root, Fs::default());
    assert!(
        reader.try_lock().unwrap().is_none(),
        "the writer holds the lock"
    );
    w.apply_sync(&[put("a.com")]).unwrap();
    assert_eq!(stored_hosts(&root), BTreeSet::from(["a.com".to_string()]));
    w.release().unwrap();
    assert!(!w.is_writer());
    assert!(
        w.apply_sync(&[put("b.com")]).is_err(),
        "no writes after release"
    );
    assert!(reader.try_lock().unwrap().is_some(), "released");
}

#[test]
fn the_log_is_the_state_and_a_torn_tail_is_dropped_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let s = writer(dir.path(), Fs::default());
    s.apply_sync(&[put("a.com")]).unwrap();
    s.apply_sync(&[put("b.com"), put("c.com")]).unwrap();
    s.apply_sync(&[Change::DeleteDomain {
        host: "a.com".into(),
    }])
    .unwrap();
    // Durable in the log only: no object file yet, and loading writes none.
    let layout = Layout {
        root: dir.path().into(),
    };
    assert!(!layout.domain("b.com").exists());
    let torn = journal::encode(&[put("d.com")]);
    append(&dir.path().join(LOG), &torn[..torn.len() / 2]);
    assert_eq!(
        stored_hosts(dir.path()),
        BTreeSet::from(["b.com".into(), "c.com".into()])
    );
    assert!(!layout.domain("b.com").exists());
}

/// The bug of the issue: a crash mid-append left a fragment, the next write followed it, and the
/// start after that failed on a corrupt line.
#[test]
fn a_torn_tail_is_cut_before_the_next_write_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = writer(dir.path(), Fs::default());
    s.apply_sync(&[put("a.com")]).unwrap();
    s.release().unwrap();
    let log = dir.path().join(LOG);
    let good = std::fs::read(&log).unwrap();
    let record = journal::encode(&[put("torn.com"), put("torn2.com")]);
    for cut in 1..record.len() {
        std::fs::write(&log, [&good[..], &record[..cut]].concat()).unwrap();
        let s = writer(dir.path(), Fs::default());
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            good.len() as u64,
            "cut {cut}: the fragment is gone before the first write"
        );
        s.apply_sync(&[put("after.com")]).unwrap();
        s.release().unwrap();
        assert_eq!(
            stored_hosts(dir.path()),
            BTreeSet::from(["a.com".into(), "after.com".into()]),
            "cut {cut}"
        );
        std::fs::write(&log, &good).unwrap();
    }
}

#[test]
fn a_corrupt_line_before_the_tail_stops_loading_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let s = writer(dir.path(), Fs::default());
    s.apply_sync(&[put("a.com")]).unwrap();
    append(&dir.path().join(LOG), b"{garbage}\n");
    let err = s.read_only_snapshot().unwrap_err().to_string();
    assert!(
        err.contains("journal.log") && err.contains("line 2"),
        "{err}"
    );
    // A complete but corrupt last line is corruption too, not a torn write.
    s.release().unwrap();
    let err = DirStore::with_fs(dir.path(), Fs::default())
        .take_writer()
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn corrupt_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = writer(dir.path(), Fs::default());
    let bad = dir.path().join(files::DOMAINS).join("x.com.json");
    std::fs::write(&bad, b"{not json").unwrap();
    let err = s.read_only_snapshot().unwrap_err().to_string();
    assert!(err.contains(&*bad.to_string_lossy()), "{err}");
    std::fs::write(&bad, serde_json::to_vec(&domain("y.com")).unwrap()).unwrap();
    let err = s.read_only_snapshot().unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn the_batch_journal_of_earlier_versions_is_read_then_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join(LEGACY),
        serde_json::to_vec(&vec![put("c.com")]).unwrap(),
    )
    .unwrap();
    assert!(
        stored_hosts(dir.path()).contains("c.com"),
        "readers apply it"
    );
    assert!(dir.path().join(LEGACY).exists(), "readers leave it");
    let s = writer(dir.path(), Fs::default());
    assert!(
        !dir.path().join(LEGACY).exists(),
        "the writer carries it over"
    );
    s.apply_sync(&[put("d.com")]).unwrap();
    assert_eq!(
        stored_hosts(dir.path()),
        BTreeSet::from(["c.com".into(), "d.com".into()])
    );
}

#[test]
fn a_failed_append_is_cut_off_and_answered_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The record is written, its sync fails; then the cut itself fails twice before it works.
    let fs = Fs::parse("sync:journal.log:EIO:1:1,truncate:journal.log:EIO:2").unwrap();
    let s = writer(dir.path(), fs.clone());
    s.apply_sync(&[put("a.com")]).unwrap();
    let len = std::fs::metadata(dir.path().join(LOG)).unwrap().len();
    let err = s.apply_sync(&[put("failed.com")]).unwrap_err().to_string();
    assert!(err.contains("journal.log"), "{err}");
    assert_eq!(
        std::fs::metadata(dir.path().join(LOG)).unwrap().len(),
        len,
        "nothing of the failed record is left"
    );
    assert_eq!(fs.injected(), 3, "one failed sync, two failed cuts");
    s.apply_sync(&[put("b.com")]).unwrap();
    assert_eq!(
        stored_hosts(dir.path()),
        BTreeSet::from(["a.com".into(), "b.com".into()])
    );
    // ENOSPC on the write itself: same outcome.
    let s2 = {
        s.release().unwrap();
        writer(dir.path(), Fs::parse("write:journal.log:ENOSPC:1").unwrap())
    };
    assert!(s2.apply_sync(&[put("full.com")]).is_err());
    s2.apply_sync(&[put("c.com")]).unwrap();
    assert!(!stored_hosts(dir.path()).contains("full.com"));
}

/// Every failure a rotation or a checkpoint can meet: each write is durable and answered `Ok`, the
/// data stays in `journal.old` until it is in the object files, and everything is there in the end.
#[test]
fn rotation_and_checkpoint_failures_never_fail_or_lose_a_write() {
    for rule in [
        "rename:journal.old:EIO:3",
        "open:journal.log:EMFILE:3:1",
        "dirsync:ROOT:EIO:3",
        "rename:.json:ENOSPC:2",
        "open:.json-PID:EMFILE:2",
        "dirsync:domains:EIO:2",
        "unlink:journal.old:EIO:2",
        "write:.json-PID:ENOSPC:2",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("st");
        let rule = rule
            .replace("ROOT", "/st")
            .replace("PID", &std::process::id().to_string());
        let fs = Fs::parse(&rule).unwrap();
        let s = writer(&root, fs.clone());
        s.set_checkpoint_bytes(2048);
        let mut expected = BTreeSet::new();
        for i in 0..120 {
            let host = format!("h{i}.com");
            s.apply_sync(&[put(&host)])
                .unwrap_or_else(|e| panic!("{rule}: write {i} failed: {e}"));
            expected.insert(host);
            // Whatever the writer is doing, a reader finds every acknowledged write.
            if i % 10 == 0 {
                assert_eq!(stored_hosts(&root), expected, "{rule}, after write {i}");
            }
        }
        checkpoint_done(&s);
        assert!(fs.injected() > 0, "{rule}: the fault never happened");
        assert_eq!(stored_hosts(&root), expected, "{rule}");
        // The object files alone hold what the finished checkpoints wrote.
        s.release().unwrap();
        DirStore::with_fs(&root, Fs::default()).compact().unwrap();
        let objects = Layout { root: root.clone() }.read_objects().unwrap();
        assert_eq!(hosts_of(&objects), expected, "{rule}: object files");
    }
}

#[test]
fn a_checkpoint_that_cannot_write_keeps_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = writer(dir.path(), Fs::parse("rename:.json:ENOSPC:0").unwrap());
    s.set_checkpoint_bytes(512);
    for i in 0..20 {
        s.apply_sync(&[put(&format!("k{i}.com"))]).unwrap();
    }
    let old = dir.path().join(OLD_LOG);
    eventually("a rotation", || old.exists());
    // The checkpoint keeps failing: journal.old must stay, it is the only copy.
    let first = Instant::now();
    while first.elapsed() < Duration::from_millis(300) {
        assert!(
            old.exists(),
            "journal.old deleted before its objects were written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stored_hosts(dir.path()).len(), 20);
}

/// A follower applies what the writer appends, in order, across rotations, including a rotation
/// stuck between rename and directory sync (records still going to `journal.old`).
#[test]
fn a_tail_follows_the_writer_across_rotations() {
    for rule in ["", "dirsync:/fl:EIO:4"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fl");
        let fs = Fs::parse(rule).unwrap();
        let w = writer(&root, fs.clone());
        w.set_checkpoint_bytes(1024);
        w.apply_sync(&[put("first.com")]).unwrap();
        let reader = DirStore::with_fs(&root, Fs::default());
        let (snap, mut tail) = reader.snapshot().unwrap();
        let mut model = journal::Overlay::new(snap);
        let mut expected = BTreeSet::from(["first.com".to_string()]);
        for i in 0..300 {
            let host = format!("f{i}.com");
            let change = if i % 7 == 3 {
                let gone = format!("f{}.com", i - 1);
                expected.remove(&gone);
                Change::DeleteDomain { host: gone }
            } else {
                expected.insert(host.clone());
                put(&host)
            };
            w.apply_sync(&[change]).unwrap();
            if i % 3 == 0 {
                match tail.poll().unwrap() {
                    Followed::Changes(c) => c.into_iter().for_each(|c| model.apply(c)),
                    Followed::Resync(s) => model = journal::Overlay::new(s),
                }
            }
        }
        match tail.poll().unwrap() {
            Followed::Changes(c) => c.into_iter().for_each(|c| model.apply(c)),
            Followed::Resync(s) => model = journal::Overlay::new(s),
        }
        assert_eq!(hosts_of(&model.into_snapshot()), expected, "rule {rule:?}");
        assert_eq!(fs.injected(), if rule.is_empty() { 0 } else { 4 }, "{rule}");
    }
}

#[test]
fn a_tail_that_missed_a_whole_log_reads_the_state_again() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), Fs::default());
    w.set_checkpoint_bytes(512);
    let (_, mut tail) = DirStore::with_fs(dir.path(), Fs::default())
        .snapshot()
        .unwrap();
    // Two rotations and their checkpoints, unseen by the tail.
    for round in 0..2 {
        for i in 0..10 {
            w.apply_sync(&[put(&format!("r{round}-{i}.com"))]).unwrap();
        }
        checkpoint_done(&w);
    }
    w.apply_sync(&[put("last.com")]).unwrap();
    match tail.poll().unwrap() {
        Followed::Resync(snap) => assert_eq!(hosts_of(&snap).len(), 21),
        Followed::Changes(c) => panic!("expected a resync, got {} changes", c.len()),
    }
    // And it follows on from there.
    w.apply_sync(&[put("next.com")]).unwrap();
    match tail.poll().unwrap() {
        Followed::Changes(c) => assert_eq!(c, vec![put("next.com")]),
        other => panic!("{other:?}"),
    }
}

/// The upgrade: the old writer releases, the follower takes over with the last records, and the old
/// process follows the new one.
#[test]
fn the_writer_role_passes_from_one_process_to_the_next_and_back_to_reading() {
    let dir = tempfile::tempdir().unwrap();
    let old = writer(dir.path(), Fs::default());
    old.apply_sync(&[put("a.com")]).unwrap();
    let new = DirStore::with_fs(dir.path(), Fs::default());
    let (snap, mut tail) = new.snapshot().unwrap();
    assert_eq!(hosts_of(&snap).len(), 1);
    assert!(new.try_lock().unwrap().is_none());
    old.apply_sync(&[put("b.com")]).unwrap();
    // A fragment the old process was writing when it died is never read as a record.
    let mut old_tail = old.release().unwrap();
    let lock = new.try_lock().unwrap().expect("released");
    match new.take_over(lock, &mut tail).unwrap() {
        Followed::Changes(c) => assert_eq!(c, vec![put("b.com")]),
        other => panic!("{other:?}"),
    }
    new.apply_sync(&[put("c.com")]).unwrap();
    match old_tail.poll().unwrap() {
        Followed::Changes(c) => assert_eq!(c, vec![put("c.com")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_crash_in_the_middle_of_a_rotation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cr");
    // The directory sync after the rename always fails: records stay in the renamed file.
    let fs = Fs::parse("dirsync:/cr:EIO:0").unwrap();
    let w = writer(&root, fs.clone());
    w.set_checkpoint_bytes(256);
    let mut expected = BTreeSet::new();
    for i in 0..30 {
        let h = format!("c{i}.com");
        w.apply_sync(&[put(&h)]).unwrap();
        expected.insert(h);
    }
    assert!(root.join(OLD_LOG).exists() && root.join(LOG).exists());
    assert!(fs.injected() > 0);
    drop(w); // a crash: nothing more is done
    let next = writer(&root, Fs::default());
    next.apply_sync(&[put("after.com")]).unwrap();
    expected.insert("after.com".into());
    checkpoint_done(&next);
    assert_eq!(stored_hosts(&root), expected);
}

/// A follower reads records before they are synced. If the writer cuts one again (its sync failed,
/// the write was answered as failed), the follower reads the state again instead of keeping it.
#[test]
fn a_record_cut_after_a_follower_read_it_is_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), Fs::default());
    w.apply_sync(&[put("a.com")]).unwrap();
    let log = dir.path().join(LOG);
    let (_, mut tail) = DirStore::with_fs(dir.path(), Fs::default())
        .snapshot()
        .unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    let cut = || {
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    let changes = |f: Followed| match f {
        Followed::Changes(c) => c,
        other => panic!("expected changes, got {other:?}"),
    };
    let resynced = |f: Followed| match f {
        Followed::Resync(s) => hosts_of(&s),
        other => panic!("expected a resync, got {other:?}"),
    };
    // The failed append, read before the cut; then cut with nothing after it.
    append(&log, &journal::encode(&[put("failed.com")]));
    assert_eq!(changes(tail.poll().unwrap()), vec![put("failed.com")]);
    cut();
    assert_eq!(
        resynced(tail.poll().unwrap()),
        BTreeSet::from(["a.com".into()])
    );
    // Cut, and the writer's next record written where it was.
    append(&log, &journal::encode(&[put("failed2.com")]));
    assert_eq!(changes(tail.poll().unwrap()), vec![put("failed2.com")]);
    cut();
    w.apply_sync(&[put("b.com")]).unwrap();
    assert_eq!(
        resynced(tail.poll().unwrap()),
        BTreeSet::from(["a.com".into(), "b.com".into()])
    );
    // The same bytes written again in place (a retry of the same request): nothing to take back.
    let len = std::fs::metadata(&log).unwrap().len();
    let same = journal::encode(&[put("same.com")]);
    append(&log, &same);
    assert_eq!(changes(tail.poll().unwrap()), vec![put("same.com")]);
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len)
        .unwrap();
    append(&log, &same);
    assert_eq!(changes(tail.poll().unwrap()), vec![]);
}
