//! Build metadata: `BUILD_VERSION` / `BUILD_COMMIT` / `BUILD_TIME` from the environment (the
//! Dockerfile passes them), else from git, else `unknown`. `vcs_modified` says whether the work
//! tree had uncommitted changes when built from git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn from_env(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn main() {
    // Rebuild the metadata when HEAD moves or the index changes, not on every source edit.
    for path in [".git/HEAD", ".git/index", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = from_env("BUILD_COMMIT")
        .or_else(|| git(&["rev-parse", "--verify", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let version = from_env("BUILD_VERSION")
        .or_else(|| git(&["describe", "--tags", "--always"]))
        .unwrap_or_else(|| "unknown".into());
    let build_time = from_env("BUILD_TIME")
        .or_else(|| git(&["log", "-1", "--format=%cI"]))
        .unwrap_or_else(|| "unknown".into());
    let vcs_modified = if from_env("BUILD_COMMIT").is_some() {
        "false".to_string()
    } else {
        match Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
        {
            Ok(out) if out.status.success() => (!out.stdout.is_empty()).to_string(),
            _ => "unknown".to_string(),
        }
    };
    println!("cargo:rustc-env=OPENCHATD_BUILD_VERSION={version}");
    println!("cargo:rustc-env=OPENCHATD_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=OPENCHATD_BUILD_TIME={build_time}");
    println!("cargo:rustc-env=OPENCHATD_BUILD_VCS_MODIFIED={vcs_modified}");
}
