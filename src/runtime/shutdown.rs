//! One shutdown signal for the whole process. SIGTERM/SIGINT (or a test calling
//! [`Shutdown::trigger`]) flips a watch channel; every shard stops accepting, lets in-flight
//! requests finish, closes idle connections, and exits within the configured grace time.

use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Shutdown { tx: Arc::new(tx) }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
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

    /// Starts a thread that triggers shutdown on SIGTERM or SIGINT.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "shutdown requested; draining connections");
                    this.trigger();
                }
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
}
