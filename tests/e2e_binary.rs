//! The `openchatd` binary as an operator meets it: `--help`, configuration errors, the start-up
//! log line with build metadata, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The README's start command, as a newcomer runs it: `cargo run` passes the build script's
/// variables to the process, which must not trip the unknown-variable check.
#[test]
fn starts_under_cargo_run_environment() {
    let data = std::env::temp_dir().join(format!("openchat-run-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = openchatd();
    // Cargo gives test processes the build script's `rustc-env` variables too: pass them on.
    let from_build_script: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.contains("_BUILD_"))
        .collect();
    assert!(
        !from_build_script.is_empty(),
        "cargo passed no build-script variables"
    );
    cmd.envs(from_build_script);
    let mut child = cmd
        .env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("OPENCHAT_RTC_UDP_PORT", "0")
        .env("OPENCHAT_DATA_DIR", &data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .any(|l| l.contains("listening"));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(listening, "did not start");
    assert!(status.success(), "{status:?}");
}

fn openchatd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openchatd"));
    // Only what each test sets: an inherited OPENCHAT_* variable must not change the outcome.
    for (key, _) in std::env::vars() {
        if key.starts_with("OPENCHAT_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let out = openchatd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for var in openchatd::config::VARIABLES {
        assert!(text.contains(var.name), "--help misses {}", var.name);
    }
    assert!(text.contains("stun:stun.l.google.com:19302"));
}

#[test]
fn every_variable_is_documented_in_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for var in openchatd::config::VARIABLES {
        assert!(
            readme.contains(&format!("`{}`", var.name)),
            "README misses {}",
            var.name
        );
    }
}

#[test]
fn bad_configuration_stops_the_start_with_one_line_naming_the_variable() {
    let cases = [
        ("OPENCHAT_SHARDS", "abc"),
        ("OPENCHAT_HTTP_ADDR", "nowhere"),
        ("OPENCHAT_AUTH_MODE", "magic"),
        ("OPENCHAT_DATABASE_URL", "mysql://localhost/db"),
        ("OPENCHAT_RTC_TURN_URLS", "turn:turn.example.org:3478"),
        (
            "OPENCHAT_RTC_SUBSCRIBE_MAX_VIDEO_TRACKS_BY_SERVER",
            "srv=many",
        ),
        ("OPENCHAT_TYPO_VARIABLE", "1"),
    ];
    for (var, value) in cases {
        let out = openchatd()
            .env(var, value)
            .env("OPENCHAT_DATA_DIR", "/nonexistent/never-created")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        assert!(
            lines[0].contains(var)
                || (var == "OPENCHAT_RTC_TURN_URLS" && lines[0].contains("OPENCHAT_RTC_TURN_")),
            "{var}: {stderr}"
        );
        assert!(!std::path::Path::new("/nonexistent/never-created").exists());
    }
}

#[test]
fn starts_with_build_metadata_serves_and_stops_on_sigterm() {
    let data = std::env::temp_dir().join(format!("openchat-bin-{}", uuid::Uuid::new_v4().simple()));
    let mut child = openchatd()
        .env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("OPENCHAT_RTC_UDP_PORT", "0")
        .env("OPENCHAT_SHARDS", "2")
        .env("OPENCHAT_DATA_DIR", &data)
        .env("OPENCHAT_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut start_line = None;
    let mut addr = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while addr.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("openchatd starting") {
            start_line = Some(line.clone());
        }
        if line.contains("listening") {
            let mut bytes = line.clone().into_bytes();
            let v = simd_json::to_owned_value(&mut bytes).unwrap();
            use simd_json::prelude::*;
            addr = v
                .get("fields")
                .and_then(|f| f.get("addr"))
                .and_then(|a| a.as_str())
                .map(str::to_string);
        }
    }
    let start_line = start_line.expect("start-up line");
    for field in ["version", "commit", "build_time", "vcs_modified"] {
        assert!(
            start_line.contains(&format!("\"{field}\"")),
            "{field} missing in {start_line}"
        );
    }
    assert!(start_line.contains(openchatd::build_info::COMMIT));
    let addr: std::net::SocketAddr = addr
        .expect("listening line with the address")
        .parse()
        .unwrap();
    assert!(
        data.join("openchat.db").exists(),
        "embedded SQLite is the default"
    );

    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&data);
}

/// The drain an orchestrator needs: after SIGTERM, `/readyz` answers 503 `draining` (retryable)
/// at once while `/healthz` and new connections are still served, for
/// `OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS`; then the listener closes and the process exits 0.
#[test]
fn sigterm_turns_readiness_off_and_keeps_serving_for_the_drain_delay() {
    use std::io::{Read, Write};
    let data =
        std::env::temp_dir().join(format!("openchat-drain-{}", uuid::Uuid::new_v4().simple()));
    let mut child = openchatd()
        .env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("OPENCHAT_RTC_UDP_PORT", "0")
        .env("OPENCHAT_SHARDS", "2")
        .env("OPENCHAT_DATA_DIR", &data)
        .env("OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS", "1500")
        .env("OPENCHAT_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines
        .by_ref()
        .take(100)
        .map_while(Result::ok)
        .find_map(|l| {
            if !l.contains("listening") {
                return None;
            }
            let mut bytes = l.into_bytes();
            let v = simd_json::to_owned_value(&mut bytes).ok()?;
            use simd_json::prelude::*;
            v.get("fields")?.get("addr")?.as_str()?.parse().ok()
        })
        .expect("the listening line names the address");
    // Keep reading stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let get = |path: &str| -> Option<String> {
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some(reply)
    };
    assert!(get("/readyz").unwrap().starts_with("HTTP/1.1 200 "));

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let draining = loop {
        let reply = get("/readyz").expect("still accepting while draining");
        if reply.starts_with("HTTP/1.1 503 ") {
            break reply;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "readiness still on: {reply}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(draining.contains("\"code\":\"draining\""), "{draining}");
    assert!(draining.contains("\"retryable\":true"), "{draining}");
    // Still serving, on new connections, for most of the delay.
    while signalled.elapsed() < Duration::from_millis(1000) {
        let reply = get("/healthz").expect("a new connection during the drain delay");
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "did not stop after the drain delay"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        stopped >= Duration::from_millis(1500),
        "stopped {stopped:?} after SIGTERM, before the delay"
    );
    assert!(get("/healthz").is_none(), "the listener is closed");
    let _ = std::fs::remove_dir_all(&data);
}
