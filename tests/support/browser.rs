//! Headless Chromium for tests: a page served from a small HTTP server on loopback runs in a
//! real browser (the engine the OpenChat desktop client is built on) and posts what it found
//! back as JSON. Chromium is found at `OPENCHATD_TEST_CHROMIUM`, else as `chromium`,
//! `chromium-browser` or `google-chrome` on the PATH; without it the test fails and says how to
//! install it (`.ci/run` installs Debian's `chromium`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::TempDir;
use super::json::{Json, parse};

/// The Chromium binary to run.
pub fn chromium() -> String {
    if let Ok(path) = std::env::var("OPENCHATD_TEST_CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
            .unwrap_or(false);
        if found {
            return name.to_owned();
        }
    }
    panic!(
        "the browser tests need Chromium: `apt-get install chromium` (Debian), or set \
         OPENCHATD_TEST_CHROMIUM to a Chromium or Chrome binary"
    );
}

/// Serves `page` at `/page.html` and takes the JSON the page posts to `/result`.
pub struct PageServer {
    pub addr: SocketAddr,
    results: mpsc::Receiver<Json>,
}

impl PageServer {
    pub fn new(page: &'static str) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let addr = listener.local_addr().unwrap();
        let (tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, page, &tx));
            }
        });
        PageServer { addr, results }
    }

    /// The JSON the page posted, waiting at most `within`.
    pub fn result(&self, within: Duration) -> Option<Json> {
        self.results.recv_timeout(within).ok()
    }
}

fn serve(stream: TcpStream, page: &str, results: &mpsc::Sender<Json>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut stream = reader.into_inner();
    let reply = if request_line.starts_with("GET /page.html") {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
    } else if request_line.starts_with("POST /result") {
        let _ = results.send(parse(&body));
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// A headless Chromium, killed with all its processes on drop.
pub struct Browser {
    child: Child,
    _profile: TempDir,
}

impl Browser {
    /// Opens `url` with fake camera and microphone devices that need no permission prompt.
    pub fn open(url: &str) -> Browser {
        let profile = TempDir::new();
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop takes the renderer and GPU processes too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromium()));
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: signals the process group this Browser started; no memory is involved.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
