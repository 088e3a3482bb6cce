//! Storage on either engine for the storage tests: an embedded SQLite file in a temp dir, or a
//! fresh Postgres database ([`super::pg`]), and what it takes to start storage on the same data
//! again.

use openchatd::storage::{BridgeHandle, Engine, Storage, StorageConfig};

use super::{TempDir, pg};

pub struct StorageHarness {
    pub data_dir: TempDir,
    pub postgres: Option<pg::TestDb>,
}

impl StorageHarness {
    pub fn sqlite() -> StorageHarness {
        StorageHarness {
            data_dir: TempDir::new(),
            postgres: None,
        }
    }

    pub fn postgres() -> StorageHarness {
        StorageHarness {
            data_dir: TempDir::new(),
            postgres: Some(pg::fresh_database()),
        }
    }

    pub fn engine_name(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub fn config(&self) -> StorageConfig {
        let engine = match &self.postgres {
            Some(db) => Engine::Postgres { url: db.url() },
            None => Engine::Sqlite {
                path: self.data_dir.path().join("openchat.sqlite3"),
            },
        };
        StorageConfig {
            engine,
            data_dir: self.data_dir.path().join("data"),
            max_connections: 4,
        }
    }

    pub fn start(&self) -> (Storage, BridgeHandle) {
        Storage::start(self.config()).expect("storage starts")
    }
}

/// The wall clock in milliseconds, as the domain counts time.
pub fn now() -> openchatd::domain::model::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as openchatd::domain::model::Millis
}

/// Commits `records` as one write and checks it was done.
pub fn apply(storage: &Storage, records: Vec<openchatd::domain::records::Record>) {
    use openchatd::storage::{WriteOp, WriteOutcome};
    assert_eq!(
        super::block_on(storage.write(WriteOp::Apply(records))),
        Ok(WriteOutcome::Done)
    );
}
