//! `openchatd`: read the configuration, start storage and the shards, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use openchatd::build_info;
use openchatd::config::{self, AuthMode, Config};
use openchatd::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!("openchatd {} ({})", build_info::VERSION, build_info::COMMIT);
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "openchatd: unknown argument {other:?}; configuration is read from OPENCHAT_* variables (see openchatd --help)"
            );
            return ExitCode::from(2);
        }
        None => {}
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("openchatd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        openchatd::logging::install(&config.log_filter, config.log_format, std::io::stderr, true)
    {
        eprintln!(
            "openchatd: configuration error: OPENCHAT_LOG: invalid filter {:?}: {e}; expected a tracing filter such as `info` or `openchatd=debug,info`",
            config.log_filter
        );
        return ExitCode::from(2);
    }
    tracing::info!(
        version = build_info::VERSION,
        commit = build_info::COMMIT,
        build_time = build_info::BUILD_TIME,
        vcs_modified = build_info::VCS_MODIFIED,
        "openchatd starting"
    );
    if config.auth_mode == AuthMode::Headers {
        tracing::warn!(
            "OPENCHAT_AUTH_MODE=headers: identities are taken from X-OpenChat-User-UID headers without proof; use only for trusted desktop-client setups"
        );
    }
    if config.rtc.ticket_secret.is_none() {
        tracing::warn!(
            "OPENCHAT_RTC_TICKET_SECRET is unset: voice join tickets are signed with a random secret of this process; several nodes need the same secret"
        );
    }
    raise_descriptor_limit();
    let memlock = raise_memlock_limit();
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("start failed: {e:#}");
            eprintln!("openchatd: start failed: {e:#}");
            if let Some(limit) = memlock {
                eprintln!(
                    "openchatd: the locked-memory limit is {} KiB; if io_uring (one ring per shard) could not start, raise it: `ulimit -l unlimited`, Docker `--ulimit memlock=-1`, systemd `LimitMEMLOCK=infinity`, or on Kubernetes a node/runtime default (containerd `LimitMEMLOCK`)",
                    limit / 1024
                );
            }
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server
        .shutdown_handle()
        .listen_for_signals(server.app().config.shutdown_drain_delay)
    {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::from(1);
    }
    tracing::info!(
        addr = %server.local_addr(),
        shards = server.app().config.shards,
        storage = server.app().storage.engine_name(),
        default_server_id = %server.app().default_server_id,
        "listening"
    );
    match server.wait() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Locked memory below which io_uring cannot start a shard (the README's minimum; the usual
/// 8 MiB default is enough, since recent kernels charge the rings to the memory cgroup).
const MEMLOCK_WANTED: u64 = 512 * 1024;

/// io_uring's rings and registered buffers count against locked memory: raise the soft limit
/// to the hard one, and say so when even that is low. Returns the limit now in force
/// (`None`: unlimited or unreadable).
fn raise_memlock_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    let now = if soft < hard && setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard).is_ok() {
        tracing::debug!(from = soft, to = hard, "raised the locked-memory limit");
        hard
    } else {
        soft
    };
    if now == RLIM_INFINITY {
        return None;
    }
    if now < MEMLOCK_WANTED {
        tracing::warn!(
            limit_kib = now / 1024,
            "the locked-memory limit is low for io_uring; if the shards fail to start, raise it (ulimit -l unlimited, Docker --ulimit memlock=-1, systemd LimitMEMLOCK=infinity)"
        );
    }
    Some(now)
}

/// Every realtime socket is a descriptor; the usual soft limit (1024) would cap an instance at
/// about a thousand members online. Raise it to the hard limit the operator allows.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
        Err(error) => tracing::warn!(
            soft,
            %error,
            "could not raise the open-file limit; realtime sockets are capped by it"
        ),
    }
}
