//! The storage layer's error type and the one place where sqlx errors are sorted into it.
//!
//! The sorting matters beyond messages: [`StorageError::Unavailable`] means "the database could
//! not be reached or did not answer in time" — the HTTP layer answers 503 and clients retry, and
//! the group-commit writer fails a whole batch with it instead of retrying op by op. Everything
//! else is a property of the request or a bug, and retrying it unchanged will not help — except
//! [`StorageError::Overloaded`], which the database never produces: the bridge's queue was full
//! and the command was not taken at all.

use sqlx::error::ErrorKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The database is unreachable, refused us, or did not answer within the command timeout.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The bridge's queue was full: the command was not sent, nothing happened; retry shortly.
    #[error("storage overloaded: its queue is full")]
    Overloaded,
    /// The write contradicts data already stored (for example a unique key).
    #[error("storage conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// A bug or a database in a state we do not expect; not worth retrying.
    #[error("storage internal error: {0}")]
    Internal(String),
}

impl StorageError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable(_) | StorageError::Overloaded
        )
    }

    pub(crate) fn bridge_stopped() -> StorageError {
        StorageError::Unavailable("storage bridge stopped".to_owned())
    }

    pub(crate) fn timed_out() -> StorageError {
        StorageError::Unavailable(format!(
            "no answer within {} s",
            super::COMMAND_TIMEOUT.as_secs()
        ))
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> StorageError {
        use sqlx::Error as E;
        match &error {
            // Losing or not getting a connection, or a connection speaking garbage: all mean
            // "the database is not there for us right now".
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::BeginFailed => StorageError::Unavailable(error.to_string()),
            E::RowNotFound => StorageError::NotFound,
            E::Database(db) => {
                if is_transient(db.as_ref()) {
                    StorageError::Unavailable(error.to_string())
                } else if matches!(db.kind(), ErrorKind::UniqueViolation) {
                    StorageError::Conflict(db.message().to_owned())
                } else {
                    StorageError::Internal(error.to_string())
                }
            }
            _ => StorageError::Internal(error.to_string()),
        }
    }
}

/// Whether a database error says "not now" rather than "not this". SQLSTATEs and SQLite result
/// codes overlap as strings (both can be all digits), so the engine is told apart by type first.
fn is_transient(error: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        pg_code_is_transient(&code)
    } else if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        sqlite_code_is_transient(&code)
    } else {
        false
    }
}

/// Lost connections (class 08), server shutting down (57P01–57P03), exhausted resources
/// (class 53), serialization failures and deadlocks (40001, 40P01), a lock not granted in
/// time (55P03) and a statement cancelled by a timeout (57014). Everything else — data
/// exceptions (class 22, NUL in text among them), integrity violations (class 23), syntax and
/// schema errors — fails the same way again.
fn pg_code_is_transient(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || matches!(
            sqlstate,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "57014"
        )
}

/// BUSY and LOCKED (primary result codes 5 and 6). sqlx reports the extended result code, whose
/// low byte is the primary one.
fn sqlite_code_is_transient(code: &str) -> bool {
    code.parse::<u32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_unavailable_and_retryable() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            let mapped = StorageError::from(error);
            assert!(matches!(mapped, StorageError::Unavailable(_)), "{mapped:?}");
            assert!(mapped.is_retryable());
        }
    }

    #[test]
    fn row_not_found_is_not_found_and_not_retryable() {
        let mapped = StorageError::from(sqlx::Error::RowNotFound);
        assert_eq!(mapped, StorageError::NotFound);
        assert!(!mapped.is_retryable());
    }

    #[test]
    fn postgres_transient_sqlstates() {
        assert!(pg_code_is_transient("08006")); // connection_failure
        assert!(pg_code_is_transient("57P01")); // admin_shutdown
        assert!(pg_code_is_transient("53300")); // too_many_connections
        assert!(pg_code_is_transient("40P01")); // deadlock_detected
        assert!(pg_code_is_transient("40001")); // serialization_failure
        assert!(pg_code_is_transient("55P03")); // lock_not_available
        assert!(pg_code_is_transient("57014")); // query_canceled (statement timeout)
        assert!(!pg_code_is_transient("23505")); // unique_violation
        assert!(!pg_code_is_transient("42P01")); // undefined_table
    }

    #[test]
    fn postgres_data_and_integrity_errors_are_permanent() {
        for sqlstate in [
            "22021", // character_not_in_repertoire: NUL in a text value
            "22001", // string_data_right_truncation
            "22P02", // invalid_text_representation
            "23502", // not_null_violation
            "23503", // foreign_key_violation
            "23514", // check_violation
            "25P02", // in_failed_sql_transaction
            "P0001", // raise_exception (a trigger)
        ] {
            assert!(!pg_code_is_transient(sqlstate), "{sqlstate}");
        }
    }

    #[test]
    fn sqlite_transient_result_codes() {
        assert!(sqlite_code_is_transient("5")); // SQLITE_BUSY
        assert!(sqlite_code_is_transient("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_code_is_transient("6")); // SQLITE_LOCKED
        assert!(!sqlite_code_is_transient("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!sqlite_code_is_transient("1")); // SQLITE_ERROR
        assert!(!sqlite_code_is_transient("19")); // SQLITE_CONSTRAINT
        assert!(!sqlite_code_is_transient("1811")); // SQLITE_CONSTRAINT_TRIGGER
        assert!(!sqlite_code_is_transient("787")); // SQLITE_CONSTRAINT_FOREIGNKEY
    }
}
