//! Helpers shared by the end-to-end tests: scratch directories, driving futures from plain OS
//! threads (as a glommio shard would, with no tokio runtime around), a throwaway Postgres
//! database per test ([`pg`]) and a TCP proxy that can make the database vanish ([`proxy`]);
//! for the community API a client per identity ([`api`]), a realtime client ([`ws`]), JSON
//! paths for assertions ([`json`]), form bodies ([`multipart`]), test images ([`media`]),
//! voice callers ([`call`]), headless Chromium ([`browser`]) and a private nats-server
//! ([`nats`]).
//!
//! Each test binary uses a subset, hence the `dead_code` allowances.

#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod call;
pub mod e2ee;
pub mod http;
pub mod json;
pub mod logs;
pub mod media;
pub mod mls_client;
pub mod multipart;
pub mod nats;
pub mod pg;
pub mod proxy;
pub mod server;
pub mod storage;
pub mod ws;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path =
            std::env::temp_dir().join(format!("openchat-test-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a future to completion on the current thread, without any async runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    futures_lite::future::block_on(future)
}

/// Polls all `futures` concurrently and returns their outputs in order — enough to put many
/// requests in flight from one thread without pulling in an executor.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

/// Runs each test body once per storage engine: `name => |engine| { ... };` becomes a module
/// `name` with a `sqlite` and a `postgres` test. Use it as `support::on_both_engines! { ... }`.
#[allow(unused_macros)]
macro_rules! on_both_engines {
    // `on_both_engines!(harness H: test_a, test_b)`: each `fn test_a(h: H)` runs as
    // `sqlite::test_a` with `H::sqlite()` and `postgres::test_a` with `H::postgres()` (the
    // storage tests, whose harness opens one engine's storage).
    (harness $harness:ident: $($test:ident),+ $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test(super::$harness::sqlite()); } )+
        }
        mod postgres {
            $( #[test] fn $test() { super::$test(super::$harness::postgres()); } )+
        }
    };
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                ($body)($crate::support::server::Engine::Sqlite)
            }
            #[test]
            fn postgres() {
                ($body)($crate::support::server::Engine::Postgres)
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both_engines;
