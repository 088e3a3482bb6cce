//! Boots a real `openchatd` in this process: two shards on a free port, on embedded SQLite in a
//! fresh folder or on a fresh Postgres database.

use std::net::SocketAddr;

use openchatd::api::Handler;
use openchatd::config::Config;
use openchatd::http::Router;
use openchatd::server::Server;

use super::TempDir;
use super::pg::{TestDb, fresh_database};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub data_dir: Option<TempDir>,
    pub db: Option<TestDb>,
}

/// Where a test server keeps its data: an engine plus the folder and database it owns.
pub struct Place {
    pub data_dir: TempDir,
    pub db: Option<TestDb>,
}

impl Place {
    pub fn new(engine: Engine) -> Place {
        let db = (engine == Engine::Postgres).then(fresh_database);
        Place {
            data_dir: TempDir::new(),
            db,
        }
    }
}

pub fn config_for(place: &Place, database_url: Option<&str>, extra: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        ("OPENCHAT_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("OPENCHAT_RTC_UDP_PORT".into(), "0".into()),
        ("OPENCHAT_SHARDS".into(), "2".into()),
        (
            "OPENCHAT_DATA_DIR".into(),
            place.data_dir.path().display().to_string(),
        ),
        ("OPENCHAT_LOG".into(), "warn".into()),
        ("OPENCHAT_SHUTDOWN_TIMEOUT_MS".into(), "3000".into()),
        // Tests post in bursts; the limit itself has its own tests (set it in `extra`).
        ("OPENCHAT_RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
        // Every test client is 127.0.0.1 and some open thousands of sockets; the caps have
        // their own tests (set them in `extra`).
        ("OPENCHAT_MAX_CONNECTIONS".into(), "1000000".into()),
        ("OPENCHAT_MAX_CONNECTIONS_PER_ADDR".into(), "1000000".into()),
    ];
    let url = database_url
        .map(str::to_string)
        .or_else(|| place.db.as_ref().map(|db| db.url()));
    if let Some(url) = url {
        vars.push(("OPENCHAT_DATABASE_URL".into(), url));
    }
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    Config::from_vars(vars, 2).expect("test configuration is valid")
}

pub fn start(engine: Engine) -> TestServer {
    start_with(engine, &[], |_| {})
}

/// Starts a server; `routes` may add test-only endpoints (a handler that panics, one that is slow).
pub fn start_with(
    engine: Engine,
    extra: &[(&str, &str)],
    routes: fn(&mut Router<Handler>),
) -> TestServer {
    start_in(Place::new(engine), None, extra, routes)
}

pub fn start_in(
    place: Place,
    database_url: Option<&str>,
    extra: &[(&str, &str)],
    routes: fn(&mut Router<Handler>),
) -> TestServer {
    let config = config_for(&place, database_url, extra);
    let server = Server::start_with_routes(config, routes).expect("server starts");
    let addr = server.local_addr();
    TestServer {
        server: Some(server),
        addr,
        data_dir: Some(place.data_dir),
        db: place.db,
    }
}

impl TestServer {
    /// Stops the server and gives back its data folder and database for a restart.
    pub fn stop(mut self) -> Place {
        if let Some(server) = self.server.take() {
            server.stop().expect("clean stop");
        }
        Place {
            data_dir: self.data_dir.take().expect("data dir kept until stop"),
            db: self.db.take(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
    }
}

/// `OPENCHAT_PUBLIC_BASE_URL` of community test servers: the origin sessions are signed for and
/// the prefix of every attachment and avatar URL.
pub const PUBLIC_BASE_URL: &str = "http://chat.test";

/// A server for the community API: headers mode (the desktop client's), the test base URL, no
/// rate limit in the way; `extra` adds or overrides variables.
pub fn start_community(engine: Engine, extra: &[(&str, &str)]) -> TestServer {
    let mut vars: Vec<(&str, &str)> = COMMUNITY_VARS.to_vec();
    vars.extend_from_slice(extra);
    start_with(engine, &vars, |_| {})
}

/// The variables of [`start_community`] (before its `extra` ones).
pub const COMMUNITY_VARS: &[(&str, &str)] = &[
    ("OPENCHAT_AUTH_MODE", "headers"),
    ("OPENCHAT_PUBLIC_BASE_URL", PUBLIC_BASE_URL),
    ("OPENCHAT_RATE_LIMIT_PER_MINUTE", "1000000"),
];

/// Stops a [`start_community`] server (without extra variables) and starts it again on the
/// same data: what it acknowledged must be there.
pub fn restart_community(server: TestServer) -> TestServer {
    let place: Place = server.stop();
    start_in(place, None, COMMUNITY_VARS, |_| {})
}

impl TestServer {
    /// Runs `sql` on the server's own database, beside the server (reads, or a write the
    /// server will only see after a restart); the first column of each row, as text.
    pub fn sql(&self, sql: &str) -> Vec<String> {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`TestServer::sql`], with the database's refusal as the error.
    pub fn try_sql(&self, sql: &str) -> Result<Vec<String>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::{Connection, Row};
            let rows = match &self.db {
                Some(db) => {
                    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
                    let rows = sqlx::query(sql).fetch_all(&mut conn).await;
                    rows.map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
                }
                None => {
                    let file = self.data_dir.as_ref().unwrap().path().join("openchat.db");
                    let url = format!("sqlite://{}", file.display());
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    let rows = sqlx::query(sql).fetch_all(&mut conn).await;
                    rows.map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
                }
            };
            rows.map_err(|e| e.to_string())
        })
    }
}
