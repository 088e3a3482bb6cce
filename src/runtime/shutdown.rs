//! One shutdown signal for the whole process, in two steps. SIGTERM/SIGINT first starts the
//! drain ([`Shutdown::begin_draining`]): `/readyz` answers 503 `draining` while everything is
//! still served, for `OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS`, so a load balancer (Kubernetes'
//! endpoints) stops sending new connections before the listener closes. Then (or at once on a
//! second signal, or when a test calls [`Shutdown::trigger`]) a watch channel flips; every
//! shard stops accepting, lets in-flight requests finish, closes idle connections, and exits
//! within the configured grace time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// How often the drain delay looks for a second signal.
const SECOND_SIGNAL_POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    draining: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops accepting and drains (readiness is false from here on too).
    pub fn trigger(&self) {
        self.draining.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }

    /// Readiness turns false; requests are still accepted and served until [`Shutdown::trigger`].
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the process is on its way out: `/readyz` then answers 503.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// A future that completes once shutdown has been triggered (immediately if it already was).
    /// Works on any executor: the watch channel only uses atomics and wakers.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Starts a thread that, on SIGTERM or SIGINT, begins draining, waits `drain_delay` (cut
    /// short by a second signal), then triggers shutdown.
    pub fn listen_for_signals(&self, drain_delay: Duration) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let Some(signal) = signals.forever().next() else {
                    return;
                };
                this.begin_draining();
                if !drain_delay.is_zero() {
                    tracing::info!(
                        signal,
                        delay_ms = drain_delay.as_millis() as u64,
                        "shutdown requested; not ready, still serving until the drain delay ends"
                    );
                    let end = std::time::Instant::now() + drain_delay;
                    while std::time::Instant::now() < end {
                        if signals.pending().next().is_some() {
                            tracing::info!("second signal: stopping now");
                            break;
                        }
                        std::thread::sleep(SECOND_SIGNAL_POLL);
                    }
                }
                tracing::info!(signal, "shutdown requested; draining connections");
                this.trigger();
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_wake_on_trigger_and_late_waiters_pass_at_once() {
        let shutdown = Shutdown::new();
        let waiter = shutdown.wait();
        let s2 = shutdown.clone();
        let t = std::thread::spawn(move || futures_lite::future::block_on(waiter));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished());
        s2.trigger();
        t.join().unwrap();
        assert!(shutdown.is_triggered());
        futures_lite::future::block_on(shutdown.wait());
    }

    #[test]
    fn draining_comes_before_the_trigger_and_with_it() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_draining());
        shutdown.begin_draining();
        assert!(shutdown.is_draining() && !shutdown.is_triggered());
        let other = Shutdown::new();
        other.trigger();
        assert!(other.is_draining() && other.is_triggered());
    }
}
