//! Fan-out senders: open-loop, paced by the clock, each on a pool of keep-alive connections,
//! all on a thread and runtime of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::Shared;
use crate::api::{self, Population};
use crate::http::{self, HttpConn};
use crate::net::Connector;

/// Requests one sender may have in flight before it waits (then the schedule lag shows it).
const MAX_IN_FLIGHT_PER_SENDER: usize = 512;

#[derive(Default)]
pub(super) struct SenderEnd {
    pub(super) statuses: BTreeMap<u16, u64>,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) extra_connections: u64,
}

enum PostEnd {
    Status(u16),
    Error(String),
}

pub(super) struct Sender {
    pub(super) index: usize,
    pub(super) senders: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) connector: Arc<Connector>,
    pub(super) authority: String,
    pub(super) path: Arc<str>,
    pub(super) rate: f64,
    pub(super) total: usize,
    pub(super) limit: Duration,
}

impl Sender {
    fn identity(&self) -> (String, String) {
        (
            api::uid(Population::FanoutSender, self.index),
            api::device(Population::FanoutSender, self.index),
        )
    }

    /// Opens the first connection and posts a warm-up message (which also makes the sender a
    /// member), so neither lands in the measurement.
    async fn warm_up(&self) -> Result<HttpConn, String> {
        let (uid, device) = self.identity();
        let body = format!(r#"{{"body":"load:warmup/{}"}}"#, self.shared.run);
        let request = http::request(
            "POST",
            &self.path,
            &self.authority,
            &http::identity(&uid, &device),
            Some(body.as_bytes()),
        );
        let attempt = async {
            let mut conn = HttpConn::connect(&self.connector)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let exchange = conn
                .exchange(&request, |_| {})
                .await
                .map_err(|e| e.to_string())?;
            if exchange.response.status != 201 || exchange.response.close {
                return Err(format!(
                    "status {} {}",
                    exchange.response.status,
                    String::from_utf8_lossy(
                        &exchange.response.body[..exchange.response.body.len().min(300)]
                    )
                ));
            }
            Ok(conn)
        };
        timeout(self.limit, attempt)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| format!("sender {} warm-up POST {}: {e}", self.index, self.path))
    }

    async fn run(self, first: HttpConn, start: Instant) -> SenderEnd {
        let this = Arc::new(self);
        let mut end = SenderEnd::default();
        let (give_back, mut returned) = mpsc::unbounded_channel::<HttpConn>();
        let mut idle = vec![first];
        let mut in_flight: JoinSet<PostEnd> = JoinSet::new();
        let mut seq = this.index;
        while seq < this.total {
            let due = start + Duration::from_secs_f64(seq as f64 / this.rate);
            tokio::time::sleep_until(due.into()).await;
            while in_flight.len() >= MAX_IN_FLIGHT_PER_SENDER {
                if let Some(done) = in_flight.join_next().await {
                    end.note(done);
                }
            }
            while let Some(done) = in_flight.try_join_next() {
                end.note(done);
            }
            while let Ok(conn) = returned.try_recv() {
                idle.push(conn);
            }
            let conn = idle.pop();
            if conn.is_none() {
                end.extra_connections += 1;
            }
            this.shared
                .schedule_lag
                .record(Instant::now().saturating_duration_since(due));
            let (this2, give_back) = (this.clone(), give_back.clone());
            in_flight.spawn(async move { this2.post(seq, conn, give_back).await });
            seq += this.senders;
        }
        while let Some(done) = in_flight.join_next().await {
            end.note(done);
        }
        end
    }

    /// Posts message `seq` on `conn` (or a new connection), and hands the connection back.
    async fn post(
        &self,
        seq: usize,
        conn: Option<HttpConn>,
        give_back: mpsc::UnboundedSender<HttpConn>,
    ) -> PostEnd {
        let (uid, device) = self.identity();
        let body = format!(r#"{{"body":"load:{seq}/{}"}}"#, self.shared.run);
        let request = http::request(
            "POST",
            &self.path,
            &self.authority,
            &http::identity(&uid, &device),
            Some(body.as_bytes()),
        );
        let shared = &self.shared;
        let attempt = async {
            let mut conn = match conn {
                Some(conn) => conn,
                None => HttpConn::connect(&self.connector)
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            };
            let exchange = conn
                .exchange(&request, |at| {
                    shared.t_send[seq].store(shared.stamp(at), Ordering::Release)
                })
                .await
                .map_err(|e| e.to_string())?;
            if exchange.response.status == 201 {
                shared.t_ack[seq].store(shared.stamp(exchange.received_at), Ordering::Release);
                shared
                    .post_latency
                    .record(exchange.received_at - exchange.sent_at);
            }
            if !exchange.response.close {
                let _ = give_back.send(conn);
            }
            Ok::<_, String>(exchange.response.status)
        };
        match timeout(self.limit, attempt).await {
            Ok(Ok(status)) => PostEnd::Status(status),
            Ok(Err(e)) => PostEnd::Error(e),
            Err(_) => PostEnd::Error("timed out".into()),
        }
    }
}

impl SenderEnd {
    fn note(&mut self, done: Result<PostEnd, tokio::task::JoinError>) {
        match done {
            Ok(PostEnd::Status(201)) => {}
            Ok(PostEnd::Status(code)) => *self.statuses.entry(code).or_default() += 1,
            Ok(PostEnd::Error(e)) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// Runs the senders on a thread and runtime of their own, so the pacing and the send and 201
/// instants do not queue behind the subscribers' work. Returns their tally and the instant
/// message 0 was due.
pub(super) async fn run_senders(senders: Vec<Sender>) -> Result<(SenderEnd, Instant), String> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("openchat-load-senders".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    let mut firsts = Vec::new();
                    for sender in &senders {
                        firsts.push(sender.warm_up().await?);
                    }
                    let start = Instant::now() + Duration::from_millis(50);
                    let tasks: Vec<_> = senders
                        .into_iter()
                        .zip(firsts)
                        .map(|(sender, first)| tokio::spawn(sender.run(first, start)))
                        .collect();
                    let mut sent = SenderEnd::default();
                    for task in tasks {
                        let end = task.await.map_err(|e| e.to_string())?;
                        for (code, n) in end.statuses {
                            *sent.statuses.entry(code).or_default() += n;
                        }
                        sent.errors += end.errors;
                        sent.extra_connections += end.extra_connections;
                        if sent.first_error.is_none() {
                            sent.first_error = end.first_error;
                        }
                    }
                    Ok((sent, start))
                }),
                Err(e) => Err(format!("sender runtime: {e}")),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| format!("sender thread: {e}"))?;
    done_rx
        .await
        .map_err(|_| "the sender thread died".to_string())?
}
