//! What this binary was built from. `build.rs` fills these in at compile time; the start-up log
//! line and the capabilities document (`build_version`, `build_commit`) read them from here.
//! The variables build.rs sets are named `OPENCHATD_BUILD_*`, not `OPENCHAT_*`: `cargo run` passes
//! them to the process too, and every `OPENCHAT_*` name must be a configuration variable.

/// Release name: `BUILD_VERSION`, else `git describe`, else `unknown`.
pub const VERSION: &str = env!("OPENCHATD_BUILD_VERSION");
/// Full commit hash: `BUILD_COMMIT`, else `git rev-parse HEAD`, else `unknown`.
pub const COMMIT: &str = env!("OPENCHATD_BUILD_COMMIT");
/// `BUILD_TIME`, else the commit time from git, else `unknown`.
pub const BUILD_TIME: &str = env!("OPENCHATD_BUILD_TIME");
/// `true` when built from a git work tree with uncommitted changes, `unknown` without git.
pub const VCS_MODIFIED: &str = env!("OPENCHATD_BUILD_VCS_MODIFIED");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_never_empty() {
        for value in [VERSION, COMMIT, BUILD_TIME, VCS_MODIFIED] {
            assert!(!value.is_empty());
        }
        assert!(matches!(VCS_MODIFIED, "true" | "false" | "unknown"));
    }
}
