//! End-to-end tests of the storage bridge against real engines: every test in the shared suite
//! runs once on an embedded SQLite file and once on a fresh Postgres database (see
//! [`on_both_engines!`]). Callers drive the futures from plain OS threads with no tokio runtime,
//! the way glommio shards do. Postgres-only tests at the bottom cut the database off through a
//! TCP proxy.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openchatd::storage::{
    BlobId, BridgeHandle, Engine, Storage, StorageConfig, StorageError, WriteOp, WriteOutcome,
};
use sqlx::Connection;
use support::proxy::Proxy;
use support::{TempDir, block_on, join_all, pg};

/// An engine under test plus what it takes to start storage on the same data again.
struct Harness {
    data_dir: TempDir,
    postgres: Option<pg::TestDb>,
}

impl Harness {
    fn sqlite() -> Harness {
        Harness {
            data_dir: TempDir::new(),
            postgres: None,
        }
    }

    fn postgres() -> Harness {
        Harness {
            data_dir: TempDir::new(),
            postgres: Some(pg::fresh_database()),
        }
    }

    fn sqlite_path(&self) -> std::path::PathBuf {
        // A not-yet-existing subfolder: start must create it.
        self.data_dir.path().join("db").join("openchat.sqlite3")
    }

    fn config(&self) -> StorageConfig {
        let engine = match &self.postgres {
            Some(db) => Engine::Postgres { url: db.url() },
            None => Engine::Sqlite {
                path: self.sqlite_path(),
            },
        };
        StorageConfig {
            engine,
            data_dir: self.data_dir.path().join("data"),
            max_connections: 4,
        }
    }

    fn start(&self) -> (Storage, BridgeHandle) {
        Storage::start(self.config()).expect("storage starts")
    }

    /// Runs `sql` (returning one text column) on a connection of our own, bypassing the bridge.
    fn query_strings(&self, sql: &str) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            match &self.postgres {
                Some(db) => {
                    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
                    sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
                }
                None => {
                    let options =
                        sqlx::sqlite::SqliteConnectOptions::new().filename(self.sqlite_path());
                    let mut conn = sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap();
                    sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
                }
            }
        })
    }
}

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::PutMeta {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn insert_if_absent(key: &str, value: &str) -> WriteOp {
    WriteOp::InsertMetaIfAbsent {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

// ---- the shared suite ------------------------------------------------------------------------

fn migrations_are_applied(h: Harness) {
    let (storage, handle) = h.start();
    let applied = h.query_strings(
        "SELECT CAST(version AS TEXT) FROM _sqlx_migrations WHERE success ORDER BY _sqlx_migrations.version",
    );
    assert_eq!(
        applied,
        vec![
            "1".to_owned(),
            "2".to_owned(),
            "3".to_owned(),
            "4".to_owned(),
            "5".to_owned(),
            "6".to_owned(),
            "7".to_owned(),
            "8".to_owned(),
            "9".to_owned(),
            "10".to_owned(),
        ]
    );
    let columns = h.query_strings(if h.postgres.is_some() {
        "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
         WHERE table_name = 'instance_meta' ORDER BY column_name"
    } else {
        "SELECT name FROM pragma_table_info('instance_meta') ORDER BY name"
    });
    assert_eq!(columns, vec!["key", "updated_at", "value"]);
    // The bridge sees the table too.
    assert_eq!(block_on(storage.get_meta("nothing here")), Ok(None));
    handle.shutdown();
}

fn ping_answers_and_engine_is_named(h: Harness) {
    let (storage, handle) = h.start();
    let expected = if h.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(storage.engine_name(), expected);
    assert_eq!(block_on(storage.ping()), Ok(()));
    handle.shutdown();
}

fn put_meta_is_read_back_and_overwritten(h: Harness) {
    let (storage, handle) = h.start();
    assert_eq!(block_on(storage.get_meta("instance.name")), Ok(None));
    assert_eq!(
        block_on(storage.write(put("instance.name", "first"))),
        Ok(WriteOutcome::Done)
    );
    assert_eq!(
        block_on(storage.get_meta("instance.name")),
        Ok(Some("first".to_owned()))
    );
    assert_eq!(
        block_on(storage.write(put("instance.name", "second"))),
        Ok(WriteOutcome::Done)
    );
    assert_eq!(
        block_on(storage.get_meta("instance.name")),
        Ok(Some("second".to_owned()))
    );
    let stamps = h.query_strings(
        "SELECT CAST(updated_at AS TEXT) FROM instance_meta WHERE key = 'instance.name'",
    );
    assert_eq!(stamps.len(), 1);
    assert!(!stamps[0].is_empty());
    handle.shutdown();
}

fn insert_meta_if_absent_first_writer_wins(h: Harness) {
    let (storage, handle) = h.start();
    assert_eq!(
        block_on(storage.write(insert_if_absent("instance.id", "first"))),
        Ok(WriteOutcome::Done)
    );
    assert_eq!(
        block_on(storage.write(insert_if_absent("instance.id", "second"))),
        Ok(WriteOutcome::Existing("first".to_owned()))
    );
    assert_eq!(
        block_on(storage.get_meta("instance.id")),
        Ok(Some("first".to_owned()))
    );

    // Racing claims from several threads (some landing in the same batch): exactly one wins and
    // everyone else is told the winner's value.
    let racers: Vec<_> = (0..8)
        .map(|thread| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                let claims = (0..5)
                    .map(|i| storage.write(insert_if_absent("race", &format!("t{thread}-{i}"))))
                    .collect();
                let outcomes = block_on(join_all(claims));
                (0..5)
                    .map(|i| format!("t{thread}-{i}"))
                    .zip(outcomes)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<_> = racers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let winners: Vec<&String> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == Ok(WriteOutcome::Done))
        .map(|(value, _)| value)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].clone();
    for (_, outcome) in &outcomes {
        assert!(
            *outcome == Ok(WriteOutcome::Done)
                || *outcome == Ok(WriteOutcome::Existing(winner.clone())),
            "{outcome:?}"
        );
    }
    assert_eq!(block_on(storage.get_meta("race")), Ok(Some(winner)));
    handle.shutdown();
}

fn concurrent_writes_are_group_committed(h: Harness) {
    const THREADS: usize = 8;
    const WRITES_PER_THREAD: usize = 25;
    let (storage, handle) = h.start();
    let before = storage.stats();

    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let storage = storage.clone();
            std::thread::spawn(move || {
                let writes = (0..WRITES_PER_THREAD)
                    .map(|i| {
                        storage.write(put(&format!("k-{thread}-{i}"), &format!("v-{thread}-{i}")))
                    })
                    .collect();
                block_on(join_all(writes))
            })
        })
        .collect();
    for writer in writers {
        for result in writer.join().unwrap() {
            assert_eq!(result, Ok(WriteOutcome::Done));
        }
    }

    let total = (THREADS * WRITES_PER_THREAD) as u64;
    let stats = storage.stats();
    let batches = stats.write_batches - before.write_batches;
    eprintln!(
        "[{}] {total} concurrent writes committed in {batches} batches (largest batch {})",
        storage.engine_name(),
        stats.largest_batch
    );
    assert_eq!(stats.writes_committed - before.writes_committed, total);
    assert!(batches < total, "no grouping: {stats:?}");
    assert!(stats.largest_batch > 1, "no grouping: {stats:?}");

    for thread in 0..THREADS {
        for i in 0..WRITES_PER_THREAD {
            assert_eq!(
                block_on(storage.get_meta(&format!("k-{thread}-{i}"))),
                Ok(Some(format!("v-{thread}-{i}")))
            );
        }
    }
    handle.shutdown();
}

fn blobs_round_trip(h: Harness) {
    let (storage, handle) = h.start();
    let content = Bytes::from_static(b"an avatar, pretend it is a PNG");
    let id = block_on(storage.put_blob(content.clone())).unwrap();
    assert_eq!(id, BlobId::of_content(&content));
    assert_eq!(BlobId::parse(id.as_str()), Some(id.clone()));
    assert_eq!(block_on(storage.get_blob(&id)), Ok(Some(content.clone())));
    // Idempotent: same bytes, same id, still readable.
    assert_eq!(block_on(storage.put_blob(content.clone())), Ok(id.clone()));
    assert_eq!(block_on(storage.get_blob(&id)), Ok(Some(content)));
    let on_disk = h
        .config()
        .data_dir
        .join("blobs")
        .join(&id.as_str()[..2])
        .join(id.as_str());
    assert!(on_disk.is_file(), "{} missing", on_disk.display());
    assert_eq!(
        block_on(storage.get_blob(&BlobId::of_content(b"never stored"))),
        Ok(None)
    );
    handle.shutdown();
}

fn shutdown_drains_pending_writes(h: Harness) {
    const WRITES: usize = 100;
    let (storage, handle) = h.start();
    let mut pending: Vec<Pin<Box<dyn Future<Output = _>>>> = (0..WRITES)
        .map(|i| {
            Box::pin(storage.write(put(&format!("drain-{i}"), &format!("{i}"))))
                as Pin<Box<dyn Future<Output = _>>>
        })
        .collect();
    // The first poll sends each command; none has been answered yet in any meaningful sense.
    let mut early = vec![None; WRITES];
    block_on(async {
        for (slot, write) in early.iter_mut().zip(pending.iter_mut()) {
            *slot = futures_lite::future::poll_once(write.as_mut()).await;
        }
    });
    handle.shutdown();

    // Everything sent before shutdown was answered, and answered Ok.
    for (i, (write, early)) in pending.into_iter().zip(early).enumerate() {
        let result = early.unwrap_or_else(|| block_on(write));
        assert_eq!(result, Ok(WriteOutcome::Done), "write {i}");
    }
    // After shutdown the handle reports the bridge as gone instead of hanging.
    assert_eq!(
        block_on(storage.ping()),
        Err(StorageError::Unavailable(
            "storage bridge stopped".to_owned()
        ))
    );
    assert!(
        block_on(storage.write(put("late", "x")))
            .unwrap_err()
            .is_retryable()
    );

    let (reopened, handle) = h.start();
    for i in 0..WRITES {
        assert_eq!(
            block_on(reopened.get_meta(&format!("drain-{i}"))),
            Ok(Some(format!("{i}")))
        );
    }
    handle.shutdown();
}

fn data_persists_across_restart(h: Harness) {
    let (storage, handle) = h.start();
    block_on(storage.write(put("persist", "yes"))).unwrap();
    let blob = block_on(storage.put_blob(Bytes::from_static(b"kept"))).unwrap();
    handle.shutdown();

    let (storage, handle) = h.start();
    assert_eq!(
        block_on(storage.get_meta("persist")),
        Ok(Some("yes".to_owned()))
    );
    assert_eq!(
        block_on(storage.get_blob(&blob)),
        Ok(Some(Bytes::from_static(b"kept")))
    );
    // Migrations are not re-applied (or duplicated) on a second start.
    let applied = h.query_strings(
        "SELECT CAST(version AS TEXT) FROM _sqlx_migrations ORDER BY _sqlx_migrations.version",
    );
    assert_eq!(
        applied,
        vec![
            "1".to_owned(),
            "2".to_owned(),
            "3".to_owned(),
            "4".to_owned(),
            "5".to_owned(),
            "6".to_owned(),
            "7".to_owned(),
            "8".to_owned(),
            "9".to_owned(),
            "10".to_owned(),
        ]
    );
    handle.shutdown();
}

fn dropping_the_handle_shuts_down_cleanly(h: Harness) {
    let (storage, handle) = h.start();
    let write = storage.write(put("dropped", "still committed"));
    let mut write = Box::pin(write);
    let early = block_on(futures_lite::future::poll_once(write.as_mut()));
    drop(handle);
    assert_eq!(
        early.unwrap_or_else(|| block_on(write)),
        Ok(WriteOutcome::Done)
    );
    let (reopened, handle) = h.start();
    assert_eq!(
        block_on(reopened.get_meta("dropped")),
        Ok(Some("still committed".to_owned()))
    );
    handle.shutdown();
}

// Generates `sqlite::<test>` and `postgres::<test>` for each function of the shared suite.
support::on_both_engines!(
    harness Harness:
    migrations_are_applied,
    ping_answers_and_engine_is_named,
    put_meta_is_read_back_and_overwritten,
    insert_meta_if_absent_first_writer_wins,
    concurrent_writes_are_group_committed,
    blobs_round_trip,
    shutdown_drains_pending_writes,
    data_persists_across_restart,
    dropping_the_handle_shuts_down_cleanly,
);

// ---- engine-specific -------------------------------------------------------------------------

#[test]
fn sqlite_file_uses_wal_and_is_created_with_its_folder() {
    let h = Harness::sqlite();
    assert!(!h.sqlite_path().exists());
    let (_storage, handle) = h.start();
    assert!(h.sqlite_path().is_file());
    assert_eq!(h.query_strings("PRAGMA journal_mode"), vec!["wal"]);
    handle.shutdown();
}

/// The acceptance bound for "database gone": an answer, not a hang.
const OUTAGE_ANSWER_BOUND: Duration = Duration::from_secs(7);
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn postgres_outage_is_reported_fast_and_recovers_without_restart() {
    let db = pg::fresh_database();
    let mut proxy = Proxy::start(db.server_addr());
    let data_dir = TempDir::new();
    let (storage, handle) = Storage::start(StorageConfig {
        engine: Engine::Postgres {
            url: db.url_via(proxy.addr()),
        },
        data_dir: data_dir.path().to_owned(),
        max_connections: 4,
    })
    .expect("storage starts through the proxy");
    assert_eq!(block_on(storage.ping()), Ok(()));
    assert_eq!(
        block_on(storage.write(put("before", "1"))),
        Ok(WriteOutcome::Done)
    );

    proxy.stop();
    let started = Instant::now();
    let ping = block_on(storage.ping());
    let elapsed = started.elapsed();
    assert!(
        matches!(ping, Err(StorageError::Unavailable(_))),
        "{ping:?}"
    );
    assert!(elapsed < OUTAGE_ANSWER_BOUND, "ping took {elapsed:?}");
    eprintln!("[postgres] ping during outage answered {ping:?} after {elapsed:?}");

    let started = Instant::now();
    let write = block_on(storage.write(put("during", "1")));
    let elapsed = started.elapsed();
    assert!(
        matches!(write, Err(StorageError::Unavailable(_))),
        "{write:?}"
    );
    assert!(elapsed < OUTAGE_ANSWER_BOUND, "write took {elapsed:?}");
    eprintln!("[postgres] write during outage answered {write:?} after {elapsed:?}");

    proxy.restart();
    let restarted = Instant::now();
    let deadline = restarted + RECOVERY_DEADLINE;
    loop {
        match block_on(storage.ping()) {
            Ok(()) => {
                eprintln!(
                    "[postgres] ping succeeded {:?} after the proxy came back",
                    restarted.elapsed()
                );
                break;
            }
            Err(error) if Instant::now() < deadline => {
                assert!(error.is_retryable(), "{error:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => panic!("storage did not recover within {RECOVERY_DEADLINE:?}: {error}"),
        }
    }
    assert_eq!(
        block_on(storage.write(put("after", "1"))),
        Ok(WriteOutcome::Done)
    );
    assert_eq!(
        block_on(storage.get_meta("before")),
        Ok(Some("1".to_owned()))
    );
    assert_eq!(
        block_on(storage.get_meta("after")),
        Ok(Some("1".to_owned()))
    );
    handle.shutdown();
}

#[test]
fn postgres_start_fails_when_nothing_listens() {
    let db = pg::fresh_database();
    let mut proxy = Proxy::start(db.server_addr());
    proxy.stop();
    let data_dir = TempDir::new();
    let started = Instant::now();
    let result = Storage::start(StorageConfig {
        engine: Engine::Postgres {
            url: db.url_via(proxy.addr()),
        },
        data_dir: data_dir.path().to_owned(),
        max_connections: 2,
    });
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(StorageError::Unavailable(_))),
        "{:?}",
        result.err()
    );
    assert!(elapsed < Duration::from_secs(15), "start took {elapsed:?}");
}

#[test]
fn postgres_start_fails_at_once_for_a_missing_database() {
    let db = pg::fresh_database();
    let url = db.url().replace(db.name(), "openchat_test_does_not_exist");
    let data_dir = TempDir::new();
    let started = Instant::now();
    let result = Storage::start(StorageConfig {
        engine: Engine::Postgres { url },
        data_dir: data_dir.path().to_owned(),
        max_connections: 2,
    });
    assert!(
        matches!(result, Err(StorageError::Internal(_))),
        "{:?}",
        result.err()
    );
    // Not worth waiting for: no retry loop.
    assert!(started.elapsed() < Duration::from_secs(2));
}
