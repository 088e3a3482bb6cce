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
        let mut server = NatsServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        // A free port: bind to port 0, read it, close. Another process of the test run may take
        // it before nats-server binds it; then the server exits and another port is tried.
        for _ in 0..10 {
            server.addr.set_port(
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("free port")
                    .port(),
            );
            if server.try_start() {
                return server;
            }
        }
        panic!(
            "nats-server did not start; see {}",
            server.dir.join("nats.log").display()
        );
    }

    /// Starts the server process (again) on the same port and store; waits until it is ready.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "nats-server did not start again on {}",
            self.addr
        );
    }

    /// Starts the process and waits until it says it is ready; false if it exited first (its
    /// port was taken) or took over 10 s.
    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        let log_path = self.dir.join("nats.log");
        let _ = std::fs::remove_file(&log_path);
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(NATS_SERVER)
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let ready = std::fs::read_to_string(&log_path)
                .is_ok_and(|text| text.contains("Server is ready"));
            if ready && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
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
