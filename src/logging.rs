//! Where log lines go and what they may carry: the one subscriber of the process, with the
//! operator's `OPENCHAT_LOG` filter and, whatever that filter says, a ceiling on the
//! dependencies that print secrets below some level. The binary installs it on stderr; tests
//! install it on a buffer to read what an operator would see.

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Dependencies that print secrets below a level, and the most they may log whatever
/// `OPENCHAT_LOG` says: tungstenite prints every WebSocket message at `trace` (join tickets,
/// SDP with ICE passwords and DTLS fingerprints), the ICE agent (`is`) prints ICE credentials
/// at `debug`, openmls and its crypto provider print MLS messages and ciphertexts at `trace`
/// (and key material with their `crypto-debug` feature, which we never enable).
pub const SECRET_BEARING_LOG_TARGETS: &[(&str, tracing::Level)] = &[
    ("tungstenite", tracing::Level::DEBUG),
    ("is", tracing::Level::INFO),
    ("openmls", tracing::Level::WARN),
    ("openmls_rust_crypto", tracing::Level::WARN),
    ("openmls_memory_storage", tracing::Level::WARN),
    ("hpke_rs", tracing::Level::WARN),
    ("hpke_rs_rust_crypto", tracing::Level::WARN),
];

/// Installs the process's subscriber writing to `writer`, with the `log` crate's records
/// (openmls logs through it) routed into it too; with `panic_hook`, panics are logged as one
/// error line. Fails on a filter `tracing_subscriber::EnvFilter` cannot parse, or when a
/// subscriber is already installed.
pub fn install<W>(
    log_filter: &str,
    format: LogFormat,
    writer: W,
    panic_hook: bool,
) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter).map_err(|e| e.to_string())?;
    let caps = Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_targets(SECRET_BEARING_LOG_TARGETS.iter().copied());
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(caps)))
        .try_init()
        .map_err(|e| e.to_string())?;
    if panic_hook {
        std::panic::set_hook(Box::new(|info| {
            tracing::error!(panic = %info, "panic");
        }));
    }
    Ok(())
}
