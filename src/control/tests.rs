use super::*;
use crate::model::domain::test_domain as domain;
use crate::model::Change;
use crate::store::{DirStore, Snapshot};
use std::time::Duration;

fn control_on(store: Arc<dyn Store>) -> Arc<Control> {
    let c = Arc::new(Control::new(store, Pools::new(Duration::from_secs(1))));
    c.open_writes();
    c
}

fn dir_writer(dir: &tempfile::TempDir) -> Arc<DirStore> {
    Arc::new(DirStore::open_writer(dir.path()).unwrap())
}

/// Concurrent requests share writes, yet each is checked on its own and answered for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_answers_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_writer(&dir);
    let control = control_on(store.clone());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = control.clone();
        tasks.push(tokio::spawn(async move {
            let host = format!("h{i}.test");
            c.apply(vec![Change::PutDomain(domain(&host))]).await?;
            // Same key as the previous request of this task: must see it committed.
            c.apply(vec![Change::DeleteDomain { host: host.clone() }])
                .await?;
            // Gone now, so a second delete is refused, alone.
            match c.apply(vec![Change::DeleteDomain { host }]).await {
                Err(ApplyError::NotFound(_)) => {}
                other => panic!("expected NotFound, got {other:?}"),
            }
            c.apply(vec![Change::PutDomain(domain(&format!("k{i}.test")))])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(control.state.routes.len(), 200);
    let mut stored: Vec<_> = store
        .load()
        .await
        .unwrap()
        .domains
        .into_iter()
        .map(|d| d.host)
        .collect();
    stored.sort();
    let mut expected: Vec<_> = (0..200).map(|i| format!("k{i}.test")).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

/// A delete is checked against the ops before it in the same batch.
#[tokio::test]
async fn batch_checks_see_earlier_ops() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_on(dir_writer(&dir));
    let ok = vec![
        Change::PutDomain(domain("a.test")),
        Change::DeleteDomain {
            host: "a.test".into(),
        },
    ];
    control.apply(ok).await.unwrap();
    let bad = vec![
        Change::PutDomain(domain("b.test")),
        Change::DeleteDomain {
            host: "b.test".into(),
        },
        Change::DeleteDomain {
            host: "b.test".into(),
        },
    ];
    match control.apply(bad).await {
        Err(ApplyError::NotFound(m)) => assert!(m.starts_with("ops[2]"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(control.domain("b.test").is_none(), "nothing of the batch");
}

/// A real state directory that reports a small atomic limit, and records each write's size.
struct Limited {
    inner: Arc<DirStore>,
    sizes: std::sync::Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl Store for Limited {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn apply(&self, changes: &[Change]) -> Result<crate::store::Revision, StoreError> {
        self.sizes.lock().unwrap().push(changes.len());
        self.inner.apply(changes).await
    }
    fn atomic_limit(&self) -> usize {
        2
    }
}

/// Requests are grouped up to the store's atomic limit, never beyond; a larger batch goes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_respect_the_store_atomic_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Limited {
        inner: dir_writer(&dir),
        sizes: Default::default(),
    });
    let control = control_on(store.clone());
    let mut tasks = Vec::new();
    for i in 0..100 {
        let c = control.clone();
        tasks.push(tokio::spawn(async move {
            c.apply(vec![Change::PutDomain(domain(&format!("g{i}.test")))])
                .await
        }));
    }
    let batch: Vec<_> = (0..3)
        .map(|i| Change::PutDomain(domain(&format!("b{i}.test"))))
        .collect();
    control.apply(batch).await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(control.state.routes.len(), 103);
    let sizes = store.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 103);
    assert!(sizes.iter().all(|&n| n <= 2 || n == 3), "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&n| n == 3).count(), 1, "{sizes:?}");
}

/// A caller that stops waiting (here: a zero timeout) neither loses its write nor strands the
/// requests grouped with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_does_not_strand_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_on(dir_writer(&dir));
    let mut waited = Vec::new();
    for i in 0..100 {
        let c = control.clone();
        let change = vec![Change::PutDomain(domain(&format!("c{i}.test")))];
        if i % 3 == 0 {
            // Polled once (the gate is open): far enough to queue the write.
            let _ = tokio::time::timeout(Duration::ZERO, c.apply(change)).await;
        } else {
            waited.push(tokio::spawn(async move { c.apply(change).await }));
        }
    }
    for t in waited {
        t.await.unwrap().unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while control.state.routes.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned writes never landed"
        );
        tokio::task::yield_now().await;
    }
}

/// Writes wait while the gate is `Waiting`, go through once it opens, and are refused once it closed;
/// `close_writes` lets the write in progress finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_holds_writes_until_open_and_refuses_them_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let control = Arc::new(Control::new(
        dir_writer(&dir),
        Pools::new(Duration::from_secs(1)),
    ));
    let c = control.clone();
    let early =
        tokio::spawn(async move { c.apply(vec![Change::PutDomain(domain("early.test"))]).await });
    assert!(matches!(
        control.wait_writable(Duration::from_millis(50)).await,
        Err(ApplyError::NotWriter(_))
    ));
    assert!(
        control.domain("early.test").is_none(),
        "written before the gate opened"
    );
    control.open_writes();
    early.await.unwrap().unwrap();
    assert!(control.domain("early.test").is_some());
    control.close_writes().await;
    match control
        .apply(vec![Change::PutDomain(domain("late.test"))])
        .await
    {
        Err(ApplyError::NotWriter(m)) => assert!(m.contains("successor"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(control.domain("late.test").is_none());
}

/// Writes that wait for the gate are committed in the order they arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_waiting_for_the_gate_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_writer(&dir);
    let control = Arc::new(Control::new(
        store.clone(),
        Pools::new(Duration::from_secs(1)),
    ));
    let put = |port: u16| {
        let mut d = domain("same.test");
        d.upstreams = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        Change::PutDomain(d)
    };
    for port in 1..=20 {
        // Polled once: queued now; the write itself runs in its own task.
        let _ = tokio::time::timeout(Duration::ZERO, control.apply(vec![put(port)])).await;
    }
    control.open_writes();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while control
        .domain("same.test")
        .is_none_or(|d| d.upstreams[0].port() != 20)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the last write never landed"
        );
        tokio::task::yield_now().await;
    }
    let log = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
    let ports: Vec<u16> = log
        .lines()
        .map(|l| {
            let changes: Vec<Change> = serde_json::from_str(l).unwrap();
            match &changes[0] {
                Change::PutDomain(d) => d.upstreams[0].port(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(ports, (1..=20).collect::<Vec<_>>());
}

/// While the gate stays shut, every waiting write is answered within the wait bound, however many
/// are queued (each waits on its own, none behind another's wait): writes to one key cannot share a
/// group, so each is a commit of its own.
#[tokio::test(start_paused = true)]
async fn writes_behind_a_shut_gate_are_answered_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let control = Arc::new(Control::new(
        dir_writer(&dir),
        Pools::new(Duration::from_secs(1)),
    ));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = control.clone();
        tasks.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = c
                .apply(vec![Change::PutDomain(domain(&format!(
                    "same{}.test",
                    i % 2
                )))])
                .await;
            (r, started.elapsed())
        }));
    }
    for t in tasks {
        let (r, waited) = t.await.unwrap();
        assert!(matches!(r, Err(ApplyError::NotWriter(_))), "{r:?}");
        assert!(
            waited <= commit::GATE_WAIT + Duration::from_millis(100),
            "waited {waited:?}"
        );
    }
    assert_eq!(control.state.routes.len(), 0);
}
