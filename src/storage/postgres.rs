//! The Postgres engine: pool settings, migrations, and the SQL for each command.
//!
//! Adding a [`WriteOp`] variant means adding one arm to [`apply`] here and one to
//! `sqlite::apply`; batching, transactions and retries live in `group_commit`.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{ACQUIRE_TIMEOUT, StorageError, WriteOp, WriteOutcome};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Builds the pool without connecting: the caller decides how long to wait for the server.
pub(super) fn lazy_pool(url: &str, max_connections: u32) -> Result<PgPool, StorageError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| StorageError::Internal(format!("invalid Postgres URL: {error}")))?
        .application_name("openchatd");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection that sat idle while the server restarted (or a proxy dropped it) is dead
        // but looks fine; pinging it before use lets the pool replace it instead of failing a
        // command, so service resumes by itself when the database is back.
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

pub(super) async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

pub(super) async fn get_meta(pool: &PgPool, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Runs `ops` in one transaction; either all of them commit or none does.
pub(super) async fn commit(
    pool: &PgPool,
    ops: &[WriteOp],
) -> Result<Vec<WriteOutcome>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(apply(&mut tx, op).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn apply(conn: &mut PgConnection, op: &WriteOp) -> Result<WriteOutcome, sqlx::Error> {
    match op {
        WriteOp::PutMeta { key, value } => {
            sqlx::query(
                "INSERT INTO instance_meta (key, value, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::InsertMetaIfAbsent { key, value } => {
            let inserted = sqlx::query(
                "INSERT INTO instance_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(WriteOutcome::Done);
            }
            // ON CONFLICT DO NOTHING waited for any competing insert to commit, so under
            // READ COMMITTED this statement sees the row that won.
            let existing: String =
                sqlx::query_scalar("SELECT value FROM instance_meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(WriteOutcome::Existing(existing))
        }
    }
}

/// `url` with any password replaced by `***`, for logs and `Debug`. Covers the password in the
/// userinfo (`postgres://user:secret@host/db`) and as a query parameter (`?password=secret`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_password_in_userinfo() {
        assert_eq!(
            redact_url("postgres://chat:s3cr%40t@db.example:5432/openchat"),
            "postgres://chat:***@db.example:5432/openchat"
        );
    }

    #[test]
    fn redacts_password_query_parameter() {
        assert_eq!(
            redact_url("postgresql://chat@db/openchat?sslmode=require&password=hunter2"),
            "postgresql://chat@db/openchat?sslmode=require&password=***"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(redact_url(url), url);
        assert_eq!(redact_url("postgres://localhost"), "postgres://localhost");
    }

    #[test]
    fn password_containing_at_sign_does_not_leak() {
        // Unencoded '@' is invalid in a URL, but must still not leak if someone writes it.
        let redacted = redact_url("postgres://chat:p@ss@db/openchat");
        assert!(!redacted.contains("p@ss"), "{redacted}");
    }
}
