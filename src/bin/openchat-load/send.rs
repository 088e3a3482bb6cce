//! `send`: closed-loop message posting. Each connection posts back-to-back on one keep-alive
//! HTTP/1.1 connection as its own user; the figure is committed messages (201) per second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::api::{self, Population};
use crate::args::SendArgs;
use crate::hist::{self, Histogram, Latency};
use crate::http::{self, HttpConn};
use crate::net::Connector;

#[derive(Debug, Serialize)]
pub struct SendReport {
    pub mode: &'static str,
    pub url: String,
    pub server_id: String,
    pub channel_id: String,
    pub connections: usize,
    pub connected: usize,
    pub users: usize,
    pub source_ips: usize,
    pub duration_s: f64,
    /// 201 answers received inside the measured window.
    pub committed: u64,
    pub committed_per_s: f64,
    /// 201s completed in each second of the window (the last one may be partial).
    pub per_second: Vec<u64>,
    /// Other statuses by code.
    pub statuses: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    pub reconnects: u64,
    pub first_error: Option<String>,
    /// Latency of the 201 answers (request written to response read).
    pub latency: Latency,
}

#[derive(Default)]
struct ConnStats {
    per_second: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    reconnects: u64,
    first_error: Option<String>,
}

impl ConnStats {
    fn error(&mut self, e: String) {
        self.transport_errors += 1;
        self.first_error.get_or_insert(e);
    }
}

pub async fn run(args: &SendArgs) -> Result<SendReport, String> {
    let (connector, authority, place) = api::prepare(
        &args.common,
        Population::Send,
        args.connections + 2,
        args.channel.as_deref(),
    )
    .await?;
    eprintln!(
        "send: channel {} of server {}; opening {} connections",
        place.channel_id, place.server_id, args.connections
    );

    let permits = Arc::new(Semaphore::new(args.common.connect_concurrency));
    let opening: Vec<_> = (0..args.connections)
        .map(|_| {
            let (connector, permits, limit) =
                (connector.clone(), permits.clone(), args.common.timeout);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                match timeout(limit, HttpConn::connect(&connector)).await {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("connect timed out".to_string()),
                }
            })
        })
        .collect();
    let mut conns = Vec::new();
    let mut first_error = None;
    for (i, task) in opening.into_iter().enumerate() {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(conn) => conns.push((i, conn)),
            Err(e) => {
                first_error.get_or_insert(format!("connect: {e}"));
            }
        }
    }
    if conns.is_empty() {
        return Err(format!(
            "send: no connection could be opened ({})",
            first_error.unwrap_or_default()
        ));
    }

    let latency = Arc::new(Histogram::default());
    let seconds = args.duration.as_secs_f64().ceil() as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + args.duration;
    let path: Arc<str> = format!("/v1/channels/{}/messages", place.channel_id).into();
    let run = api::run_tag();
    let connected = conns.len();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(i, conn)| {
            let user = i % args.users;
            let worker = Worker {
                index: i,
                uid: api::uid(Population::Send, user),
                device: api::device(Population::Send, i),
                path: path.clone(),
                authority: authority.clone(),
                run: run.clone(),
                connector: connector.clone(),
                latency: latency.clone(),
                request_timeout: args.common.timeout,
            };
            tokio::spawn(worker.post_until(conn, start, deadline, seconds))
        })
        .collect();

    let mut total = ConnStats {
        per_second: vec![0; seconds],
        first_error,
        ..ConnStats::default()
    };
    for task in tasks {
        let stats = task.await.map_err(|e| e.to_string())?;
        for (sum, n) in total.per_second.iter_mut().zip(&stats.per_second) {
            *sum += n;
        }
        for (code, n) in stats.statuses {
            *total.statuses.entry(code).or_default() += n;
        }
        total.transport_errors += stats.transport_errors;
        total.timeouts += stats.timeouts;
        total.reconnects += stats.reconnects;
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
    }
    let committed: u64 = total.per_second.iter().sum();
    Ok(SendReport {
        mode: "send",
        url: format!("http://{authority}"),
        server_id: place.server_id,
        channel_id: place.channel_id,
        connections: args.connections,
        connected,
        users: args.users.min(args.connections),
        source_ips: connector.sources().len().max(1),
        duration_s: args.duration.as_secs_f64(),
        committed,
        committed_per_s: hist::per_second(committed, args.duration.as_secs_f64()),
        per_second: total.per_second,
        statuses: total
            .statuses
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect(),
        transport_errors: total.transport_errors,
        timeouts: total.timeouts,
        reconnects: total.reconnects,
        first_error: total.first_error,
        latency: latency.summary(),
    })
}

struct Worker {
    index: usize,
    uid: String,
    device: String,
    path: Arc<str>,
    authority: String,
    run: String,
    connector: Arc<Connector>,
    latency: Arc<Histogram>,
    request_timeout: Duration,
}

impl Worker {
    async fn post_until(
        self,
        conn: HttpConn,
        start: Instant,
        deadline: Instant,
        seconds: usize,
    ) -> ConnStats {
        let mut stats = ConnStats {
            per_second: vec![0; seconds],
            ..ConnStats::default()
        };
        let mut conn = Some(conn);
        tokio::time::sleep_until(start.into()).await;
        let identity = http::identity(&self.uid, &self.device);
        let mut n = 0u64;
        while Instant::now() < deadline {
            let mut current = match conn.take() {
                Some(c) => c,
                None => {
                    stats.reconnects += 1;
                    match timeout(self.request_timeout, HttpConn::connect(&self.connector)).await {
                        Ok(Ok(c)) => c,
                        failed => {
                            let e = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".into(),
                            };
                            stats.error(format!("reconnect: {e}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
            };
            let body = format!(r#"{{"body":"load:send/{}/{n}/{}"}}"#, self.index, self.run);
            n += 1;
            let request = http::request(
                "POST",
                &self.path,
                &self.authority,
                &identity,
                Some(body.as_bytes()),
            );
            match timeout(self.request_timeout, current.exchange(&request, |_| {})).await {
                Ok(Ok(exchange)) => {
                    let status = exchange.response.status;
                    if status == 201 {
                        self.latency.record(exchange.received_at - exchange.sent_at);
                        if exchange.received_at < deadline {
                            let second = (exchange.received_at.saturating_duration_since(start))
                                .as_secs() as usize;
                            if let Some(slot) = stats.per_second.get_mut(second) {
                                *slot += 1;
                            }
                        }
                    } else {
                        *stats.statuses.entry(status).or_default() += 1;
                    }
                    if !exchange.response.close {
                        conn = Some(current);
                    }
                }
                Ok(Err(e)) => stats.error(format!("POST: {e}")),
                Err(_) => stats.timeouts += 1,
            }
        }
        stats
    }
}

impl SendReport {
    pub fn failed(&self) -> bool {
        self.committed == 0
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "send: {} connections ({} connected, {} users, {} source address(es)) for {:.1} s against {}\n\
             \x20 channel {} on server {}\n\
             \x20 committed (201): {} in the window = {:.1} messages/s\n\
             \x20 per second: {:?}\n",
            self.connections,
            self.connected,
            self.users,
            self.source_ips,
            self.duration_s,
            self.url,
            self.channel_id,
            self.server_id,
            self.committed,
            self.committed_per_s,
            self.per_second,
        );
        if self.statuses.is_empty() {
            out.push_str("  other statuses: none\n");
        } else {
            let list: Vec<_> = self
                .statuses
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect();
            out.push_str(&format!("  other statuses: {}\n", list.join(", ")));
        }
        out.push_str(&format!(
            "  transport errors {}, timeouts {}, reconnects {}{}\n  latency (201): {}\n",
            self.transport_errors,
            self.timeouts,
            self.reconnects,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            self.latency.line(false)
        ));
        if self.failed() {
            out.push_str("  FAILED: no message was committed\n");
        }
        out
    }
}
