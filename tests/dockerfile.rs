//! The Dockerfile cannot be built here (no Docker engine on these machines), so these tests
//! check what can be checked without one: the stages, the required BUILD_COMMIT guard (run
//! through `sh` exactly as `docker build` would), the non-root user, the exposed ports, and that
//! everything it copies exists in the repository.

use std::process::Command;

fn dockerfile() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap()
}

/// Instructions with their continuation lines joined.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile().lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(stripped) = trimmed.strip_suffix('\\') {
            current.push_str(stripped);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

#[test]
fn multi_stage_with_a_non_root_runtime() {
    let ins = instructions();
    let froms: Vec<_> = ins.iter().filter(|i| i.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(ins.iter().any(|i| i.starts_with("COPY --from=build")));
    let user = ins
        .iter()
        .rev()
        .find(|i| i.starts_with("USER "))
        .expect("USER set");
    assert!(
        !user.contains("root") && !user.starts_with("USER 0"),
        "{user}"
    );
    assert!(ins.iter().any(|i| i == "EXPOSE 8080/tcp"));
    assert!(
        ins.iter()
            .any(|i| i.starts_with("EXPOSE 50000-") && i.ends_with("/udp"))
    );
    for arg in ["ARG BUILD_COMMIT", "ARG BUILD_VERSION", "ARG BUILD_TIME"] {
        assert!(ins.iter().any(|i| i.starts_with(arg)), "{arg}");
    }
    assert!(
        ins.iter()
            .any(|i| i.contains("BUILD_COMMIT=${BUILD_COMMIT}")),
        "passed to build.rs"
    );
}

#[test]
fn build_commit_is_required() {
    let guard = instructions()
        .into_iter()
        .find(|i| i.starts_with("RUN ") && i.contains("BUILD_COMMIT build argument is required"))
        .expect("a RUN guard on BUILD_COMMIT");
    let script = guard.trim_start_matches("RUN ");
    let without = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("BUILD_COMMIT", "")
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("BUILD_COMMIT"));
    let with = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("BUILD_COMMIT", "abc123")
        .output()
        .unwrap();
    assert!(with.status.success());
}

#[test]
fn everything_copied_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for ins in instructions()
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
    {
        let parts: Vec<&str> = ins.split_whitespace().skip(1).collect();
        for source in &parts[..parts.len() - 1] {
            assert!(root.join(source).exists(), "COPY source {source} missing");
        }
    }
}
