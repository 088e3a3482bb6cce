//! `idle`: N realtime sockets that only answer pings, to measure what an idle socket costs the
//! server (VmRSS of `--server-pid` before and after) and that it keeps them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;

use crate::api::{self, Population};
use crate::args::IdleArgs;
use crate::hist;
use crate::http;
use crate::net::{self, Connector};
use crate::ws::{self, WsClient};

/// Initial codec read buffer of an idle socket (pings are a few bytes; it grows when needed).
const IDLE_READ_BUFFER: usize = 1024;

#[derive(Debug, Serialize, Default)]
pub struct IdleReport {
    pub mode: &'static str,
    pub url: String,
    pub server_id: String,
    pub sockets: usize,
    pub opened: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    pub open_s: f64,
    pub hold_s: f64,
    pub settle_s: f64,
    /// Sockets the server closed (or that broke) while held.
    pub closed_during_hold: usize,
    pub first_close: Option<String>,
    pub pings_answered: u64,
    pub source_ips: usize,
    pub nofile_limit: u64,
    pub server_pid: Option<u32>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_open_kib: Option<u64>,
    pub server_rss_settled_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    /// (settled − before) / opened.
    pub server_kib_per_socket: Option<f64>,
    /// This process's growth per socket, for comparison.
    pub client_kib_per_socket: Option<f64>,
}

struct Counters {
    opened: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    pings: AtomicU64,
}

fn rss(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    match net::vm_rss_kib(pid) {
        Ok(kib) => Some(kib),
        Err(e) => {
            eprintln!("idle: cannot read the memory of process {pid}: {e}");
            None
        }
    }
}

fn per_socket(before: Option<u64>, after: Option<u64>, sockets: usize) -> Option<f64> {
    let (before, after) = (before?, after?);
    (sockets > 0).then(|| ((after as f64 - before as f64) / sockets as f64 * 100.0).round() / 100.0)
}

pub async fn run(args: &IdleArgs, nofile_limit: u64) -> Result<IdleReport, String> {
    let target = args.common.url.resolve()?;
    let connector = Arc::new(Connector::planned(
        target,
        args.sockets,
        args.common.source_ips,
    ));
    let authority = args.common.url.authority.clone();
    let caps = http::get(
        &connector,
        &authority,
        "/v1/client/capabilities",
        &[],
        args.common.timeout,
    )
    .await?;
    let server_id = api::server_id_of(caps)?;
    if (args.sockets as u64) + 64 > nofile_limit {
        eprintln!(
            "idle: warning: {} sockets but the descriptor limit is {nofile_limit}",
            args.sockets
        );
    }
    let me = std::process::id();
    let mut report = IdleReport {
        mode: "idle",
        url: format!("http://{authority}"),
        server_id: server_id.clone(),
        sockets: args.sockets,
        hold_s: args.hold.as_secs_f64(),
        settle_s: args.settle.min(args.hold).as_secs_f64(),
        source_ips: connector.sources().len().max(1),
        nofile_limit,
        server_pid: args.server_pid,
        server_rss_before_kib: rss(args.server_pid),
        ..IdleReport::default()
    };
    let client_before = rss(Some(me));

    eprintln!(
        "idle: opening {} sockets to server {server_id} from {} source address(es)",
        args.sockets, report.source_ips
    );
    let counters = Arc::new(Counters {
        opened: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        pings: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.common.connect_concurrency));
    let opening = Instant::now();
    let tasks: Vec<_> = (0..args.sockets)
        .map(|index| {
            let (connector, counters, permits) =
                (connector.clone(), counters.clone(), permits.clone());
            let (authority, mut stop) = (authority.clone(), stop_rx.clone());
            let path = ws::realtime_path(
                &server_id,
                &api::uid(Population::Idle, index),
                &api::device(Population::Idle, index),
            );
            let limit = args.common.timeout;
            tokio::spawn(async move {
                let opened = {
                    let _permit = permits.acquire().await;
                    timeout(
                        limit,
                        WsClient::connect(&connector, &authority, &path, IDLE_READ_BUFFER),
                    )
                    .await
                };
                let mut client = match opened {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => {
                        counters.failed.fetch_add(1, Relaxed);
                        return Some(e.to_string());
                    }
                    Err(_) => {
                        counters.failed.fetch_add(1, Relaxed);
                        return Some("handshake timed out".into());
                    }
                };
                counters.opened.fetch_add(1, Relaxed);
                match client.serve(&mut stop, |_, _| {}).await {
                    Ok(pings) => {
                        counters.pings.fetch_add(pings, Relaxed);
                        None
                    }
                    Err((e, pings)) => {
                        counters.pings.fetch_add(pings, Relaxed);
                        counters.closed.fetch_add(1, Relaxed);
                        Some(format!("closed while held: {e}"))
                    }
                }
            })
        })
        .collect();

    let mut last_report = Instant::now();
    loop {
        let (o, f) = (counters.opened.load(Relaxed), counters.failed.load(Relaxed));
        if o + f >= args.sockets {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("idle: {o} open, {f} failed of {}", args.sockets);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.open_s = hist::seconds(opening.elapsed());
    report.opened = counters.opened.load(Relaxed);
    report.failed = counters.failed.load(Relaxed);
    report.server_rss_open_kib = rss(args.server_pid);
    eprintln!(
        "idle: {} open, {} failed in {:.1} s; holding for {:.1} s",
        report.opened, report.failed, report.open_s, report.hold_s
    );

    // Nothing to hold when nothing opened.
    let hold = if report.opened == 0 {
        Duration::ZERO
    } else {
        args.hold
    };
    let held = Instant::now();
    tokio::time::sleep(args.settle.min(hold)).await;
    report.server_rss_settled_kib = rss(args.server_pid);
    let client_settled = rss(Some(me));
    tokio::time::sleep(hold.saturating_sub(held.elapsed())).await;
    report.server_rss_end_kib = rss(args.server_pid);
    let _ = stop_tx.send(true);

    for task in tasks {
        if let Some(e) = task.await.map_err(|e| e.to_string())? {
            if e.starts_with("closed while held") {
                report.first_close.get_or_insert(e);
            } else {
                report.first_failure.get_or_insert(e);
            }
        }
    }
    report.closed_during_hold = counters.closed.load(Relaxed);
    report.pings_answered = counters.pings.load(Relaxed);
    report.server_kib_per_socket = per_socket(
        report.server_rss_before_kib,
        report.server_rss_settled_kib,
        report.opened,
    );
    report.client_kib_per_socket = per_socket(client_before, client_settled, report.opened);
    Ok(report)
}

impl IdleReport {
    pub fn failed(&self) -> bool {
        self.failed > 0 || self.closed_during_hold > 0 || self.opened == 0
    }

    pub fn human(&self) -> String {
        let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} KiB"));
        let mut out = format!(
            "idle: {} sockets to server {} at {} ({} source address(es), descriptor limit {})\n\
             \x20 opened {} in {:.1} s, failed {}; held {:.1} s, closed while held {}, pings answered {}\n",
            self.sockets,
            self.server_id,
            self.url,
            self.source_ips,
            self.nofile_limit,
            self.opened,
            self.open_s,
            self.failed,
            self.hold_s,
            self.closed_during_hold,
            self.pings_answered,
        );
        match self.server_pid {
            Some(pid) => out.push_str(&format!(
                "  server {pid} VmRSS: before {}, all open {}, after {:.1} s settle {}, end of hold {}\n\
                 \x20 server memory per socket: {}\n",
                kib(self.server_rss_before_kib),
                kib(self.server_rss_open_kib),
                self.settle_s,
                kib(self.server_rss_settled_kib),
                kib(self.server_rss_end_kib),
                self.server_kib_per_socket
                    .map_or("-".to_string(), |v| format!("{v:.2} KiB")),
            )),
            None => out.push_str("  (no --server-pid: server memory not measured)\n"),
        }
        if let Some(v) = self.client_kib_per_socket {
            out.push_str(&format!("  load generator memory per socket: {v:.2} KiB\n"));
        }
        if let Some(e) = &self.first_failure {
            out.push_str(&format!(
                "  FAILED: {} socket(s) did not open (first: {e})\n",
                self.failed
            ));
        }
        if let Some(e) = &self.first_close {
            out.push_str(&format!(
                "  FAILED: {} socket(s) closed while held (first: {e})\n",
                self.closed_during_hold
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_socket_memory() {
        assert_eq!(per_socket(Some(100_000), Some(140_000), 10_000), Some(4.0));
        assert_eq!(per_socket(Some(100_000), Some(99_000), 1_000), Some(-1.0));
        assert_eq!(per_socket(None, Some(1), 1), None);
        assert_eq!(per_socket(Some(1), Some(2), 0), None);
    }
}
