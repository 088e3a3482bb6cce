//! A private nats-server with JetStream per test: its own free port and store directory, killed
//! on drop. It can be killed and started again on the same port and store (the bus going down
//! and coming back).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "openchat-nats-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("store dir");
        // A free port: bind to port 0, read it, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let mut server = NatsServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        server.restart();
        server
    }

    /// Starts the server process (again) on the same port and store; waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .expect("log file");
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{NATS_SERVER} (apt-get install nats-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}; see {}",
                self.addr,
                self.dir.join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server process (SIGKILL): the bus is gone until [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
