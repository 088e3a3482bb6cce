//! A throwaway Postgres database per test.
//!
//! [`fresh_database`] creates `openchat_test_<random hex>` through the admin URL
//! (`OPENCHATD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/openchat_test`) and the
//! returned [`TestDb`] drops it again, forcibly, so a failed test leaves nothing behind. If the
//! server cannot be reached the helper panics with instructions: a Postgres test that silently
//! skips is a test that can never fail.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/openchat_test";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("OPENCHATD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    name: String,
    admin_url: String,
}

/// Creates a uniquely named, empty database. Panics if Postgres is unreachable.
pub fn fresh_database() -> TestDb {
    let admin_url = admin_url();
    let name = format!("openchat_test_{:016x}", rand::random::<u64>());
    admin_execute(&admin_url, &format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|error| panic!("{}", unreachable_message(&admin_url, &error)));
    TestDb { name, admin_url }
}

impl TestDb {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL of this database on the server itself.
    pub fn url(&self) -> String {
        UrlParts::parse(&self.admin_url)
            .with_database(&self.name)
            .to_string()
    }

    /// URL of this database reached through `addr` instead (a proxy in front of the server).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        UrlParts::parse(&self.admin_url)
            .with_database(&self.name)
            .with_host_port(&addr.to_string())
            .to_string()
    }

    /// Where the server listens, for pointing a proxy at it.
    pub fn server_addr(&self) -> SocketAddr {
        let parts = UrlParts::parse(&self.admin_url);
        let host_port = if parts.host_port.contains(':') {
            parts.host_port.clone()
        } else {
            format!("{}:5432", parts.host_port)
        };
        host_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("cannot resolve Postgres address {host_port}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // FORCE ends sessions a test left open (a storage bridge that was never shut down).
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(error) = admin_execute(&self.admin_url, &sql) {
            eprintln!(
                "warning: could not drop test database {}: {error}",
                self.name
            );
        }
    }
}

/// Runs one statement on a fresh admin connection, on a throwaway runtime so callers need none.
fn admin_execute(admin_url: &str, sql: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let work = async {
            let mut conn = PgConnection::connect(admin_url).await?;
            sqlx::query(sql).execute(&mut conn).await?;
            conn.close().await
        };
        match tokio::time::timeout(ADMIN_TIMEOUT, work).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {ADMIN_TIMEOUT:?}")),
        }
    })
}

fn unreachable_message(admin_url: &str, error: &str) -> String {
    format!(
        "PostgreSQL is required for this test but is not usable at {url}: {error}\n\
         Start the local server with:\n    \
         pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
         or set OPENCHATD_TEST_POSTGRES_URL to a server where that user may CREATE DATABASE.",
        url = openchatd::storage::redact_url(admin_url)
    )
}

/// Just enough URL handling to swap the database name and the host: `scheme://[userinfo@]host[:port][/db][?query]`.
#[derive(Clone)]
struct UrlParts {
    prefix: String, // scheme and userinfo, e.g. "postgres://user:pw@"
    host_port: String,
    database: String,
    query: String, // "" or "?..."
}

impl UrlParts {
    fn parse(url: &str) -> UrlParts {
        let (scheme, rest) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {}", openchatd::storage::redact_url(url)));
        let (rest, query) = match rest.find('?') {
            Some(at) => (&rest[..at], rest[at..].to_owned()),
            None => (rest, String::new()),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (format!("{userinfo}@"), host_port),
            None => (String::new(), authority),
        };
        UrlParts {
            prefix: format!("{scheme}://{userinfo}"),
            host_port: host_port.to_owned(),
            database: database.to_owned(),
            query,
        }
    }

    fn with_database(mut self, database: &str) -> UrlParts {
        self.database = database.to_owned();
        self
    }

    fn with_host_port(mut self, host_port: &str) -> UrlParts {
        self.host_port = host_port.to_owned();
        self
    }
}

impl std::fmt::Display for UrlParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}/{}{}",
            self.prefix, self.host_port, self.database, self.query
        )
    }
}
