//! `fanout`: N realtime sockets subscribed to one channel; a few senders post at a fixed total
//! rate, open-loop (message `seq` is due at `start + seq / rate` whatever the earlier answers
//! did; a sender whose connections are all busy opens another). Every message body is
//! `load:<seq>/<run>`. The sender stores t_send just before writing the request and t_ack when
//! the 201 is read; each subscriber takes its receive instant right when its socket turns
//! readable, then looks the times up: send→frame and 201→frame (clamped at 0 when the frame
//! beats the 201). The senders have a thread and runtime of their own; the subscribers share
//! the main runtime.

#[path = "fanout/sender.rs"]
mod sender;
#[path = "fanout/subscriber.rs"]
mod subscriber;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::api::{self, Population};
use crate::args::FanoutArgs;
use crate::hist::{self, Histogram, Latency};
use sender::{Sender, run_senders};
use subscriber::Subscriber;

/// How long to wait for the presence snapshots once every socket is connected.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub mode: &'static str,
    pub url: String,
    pub server_id: String,
    pub channel_id: String,
    pub subscribers: usize,
    pub subscribers_connected: usize,
    pub subscriber_failures: usize,
    pub first_failure: Option<String>,
    /// Subscribers that got their `chat.presence.snapshot` before sending started.
    pub snapshots: usize,
    pub source_ips: usize,
    pub senders: usize,
    pub rate_target: f64,
    pub duration_s: f64,
    pub messages_scheduled: usize,
    pub messages_committed: u64,
    /// Non-201 answers to the posts, by status.
    pub post_statuses: BTreeMap<String, u64>,
    pub post_errors: u64,
    pub first_post_error: Option<String>,
    /// Connections senders opened beyond their first because all were busy.
    pub extra_sender_connections: u64,
    /// Committed messages / time from the first due send to the last send.
    pub send_rate_achieved: f64,
    pub frames_expected: u64,
    pub frames_received: u64,
    pub frames_missing: u64,
    pub subscribers_missing_frames: usize,
    pub duplicate_frames: u64,
    /// Frames of this run for messages that got no 201.
    pub unexpected_frames: u64,
    pub subscribers_disconnected: usize,
    pub first_disconnect: Option<String>,
    pub pings_answered: u64,
    pub drain_s: f64,
    /// From just before the request was written to the frame read by a subscriber.
    pub send_to_frame: Latency,
    /// From the 201 read by the sender to the frame read by a subscriber, clamped at 0.
    pub ack_to_frame: Latency,
    /// Request written to 201 read.
    pub post_latency: Latency,
    /// How late the senders wrote requests against the schedule.
    pub schedule_lag: Latency,
    #[serde(skip)]
    pub missing_examples: Vec<String>,
}

/// What the senders and subscribers share. Times are nanoseconds since `base`, plus 1 so that
/// 0 means "not yet".
struct Shared {
    base: Instant,
    run: String,
    t_send: Vec<AtomicU64>,
    t_ack: Vec<AtomicU64>,
    send_to_frame: Histogram,
    ack_to_frame: Histogram,
    post_latency: Histogram,
    schedule_lag: Histogram,
    connected: AtomicUsize,
    failed: AtomicUsize,
    snapshots: AtomicUsize,
}

impl Shared {
    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    /// A subscriber read the frame of `seq` at `at`.
    fn frame(&self, seq: usize, at: Instant) {
        let received = self.stamp(at);
        let sent = self.t_send[seq].load(Ordering::Acquire);
        if sent != 0 {
            self.send_to_frame
                .record_nanos(received.saturating_sub(sent));
        }
        let acked = self.t_ack[seq].load(Ordering::Acquire);
        // Not acknowledged yet: the frame beat the 201.
        let after_ack = if acked == 0 {
            0
        } else {
            received.saturating_sub(acked)
        };
        self.ack_to_frame.record_nanos(after_ack);
    }

    /// Frames of this run received so far (each records exactly one 201→frame sample).
    fn frames(&self) -> u64 {
        self.ack_to_frame.count()
    }
}

pub async fn run(args: &FanoutArgs) -> Result<FanoutReport, String> {
    let (connector, authority, place) = api::prepare(
        &args.common,
        Population::FanoutSender,
        args.subscribers + args.senders * 8,
        args.channel.as_deref(),
    )
    .await?;
    let total = (args.rate * args.duration.as_secs_f64()).floor() as usize;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        run: api::run_tag(),
        t_send: (0..total).map(|_| AtomicU64::new(0)).collect(),
        t_ack: (0..total).map(|_| AtomicU64::new(0)).collect(),
        send_to_frame: Histogram::default(),
        ack_to_frame: Histogram::default(),
        post_latency: Histogram::default(),
        schedule_lag: Histogram::default(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        snapshots: AtomicUsize::new(0),
    });

    // 1. subscribers
    eprintln!(
        "fanout: channel {} of server {}; opening {} subscriber sockets",
        place.channel_id, place.server_id, args.subscribers
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.common.connect_concurrency));
    let subscriber_tasks: Vec<_> = (0..args.subscribers)
        .map(|index| {
            let subscriber = Subscriber {
                index,
                shared: shared.clone(),
                connector: connector.clone(),
                authority: authority.clone(),
                server_id: place.server_id.clone(),
                channel_id: place.channel_id.clone(),
                permits: permits.clone(),
                limit: args.common.timeout,
                total,
            };
            tokio::spawn(subscriber.run(stop_rx.clone()))
        })
        .collect();
    let mut last_report = Instant::now();
    loop {
        let (c, f) = (
            shared.connected.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
        );
        if c + f >= args.subscribers {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("fanout: {c} connected, {f} failed of {}", args.subscribers);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = shared.connected.load(Ordering::Relaxed);
    let snapshot_deadline = Instant::now() + SNAPSHOT_WAIT;
    while shared.snapshots.load(Ordering::Relaxed) < connected && Instant::now() < snapshot_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshots = shared.snapshots.load(Ordering::Relaxed);
    eprintln!(
        "fanout: {connected} subscribers connected ({} failed, {snapshots} presence snapshots); \
         {} senders posting {total} messages at {}/s",
        shared.failed.load(Ordering::Relaxed),
        args.senders,
        args.rate
    );

    // 2. senders
    let path: Arc<str> = format!("/v1/channels/{}/messages", place.channel_id).into();
    let senders: Vec<_> = (0..args.senders)
        .map(|index| Sender {
            index,
            senders: args.senders,
            shared: shared.clone(),
            connector: connector.clone(),
            authority: authority.clone(),
            path: path.clone(),
            rate: args.rate,
            total,
            limit: args.common.timeout,
        })
        .collect();
    let (sent, start) = match run_senders(senders).await {
        Ok(done) => done,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let last_send = (0..total)
        .filter_map(|s| match shared.t_send[s].load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        })
        .max()
        .unwrap_or(0);
    // n sends spaced 1/rate apart span (n - 1)/rate: count one more interval
    let sending_s = (last_send as f64 / 1e9 - start.duration_since(shared.base).as_secs_f64())
        .max(0.0)
        + 1.0 / args.rate;

    // 3. drain: wait for the frames still in flight
    let acked: Vec<bool> = (0..total)
        .map(|s| shared.t_ack[s].load(Ordering::Acquire) != 0)
        .collect();
    let committed = acked.iter().filter(|a| **a).count() as u64;
    let expected = committed * connected as u64;
    let drain_start = Instant::now();
    while shared.frames() < expected && drain_start.elapsed() < args.drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_s = hist::seconds(drain_start.elapsed());
    let _ = stop_tx.send(true);

    // 4. account per subscriber
    let mut report = FanoutReport {
        mode: "fanout",
        url: format!("http://{authority}"),
        server_id: place.server_id,
        channel_id: place.channel_id,
        subscribers: args.subscribers,
        subscribers_connected: connected,
        subscriber_failures: 0,
        first_failure: None,
        snapshots,
        source_ips: connector.sources().len().max(1),
        senders: args.senders,
        rate_target: args.rate,
        duration_s: args.duration.as_secs_f64(),
        messages_scheduled: total,
        messages_committed: committed,
        post_statuses: sent
            .statuses
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect(),
        post_errors: sent.errors,
        first_post_error: sent.first_error,
        extra_sender_connections: sent.extra_connections,
        send_rate_achieved: hist::per_second(committed, sending_s),
        frames_expected: expected,
        frames_received: 0,
        frames_missing: 0,
        subscribers_missing_frames: 0,
        duplicate_frames: 0,
        unexpected_frames: 0,
        subscribers_disconnected: 0,
        first_disconnect: None,
        pings_answered: 0,
        drain_s,
        send_to_frame: shared.send_to_frame.summary(),
        ack_to_frame: shared.ack_to_frame.summary(),
        post_latency: shared.post_latency.summary(),
        schedule_lag: shared.schedule_lag.summary(),
        missing_examples: Vec::new(),
    };
    for (index, task) in subscriber_tasks.into_iter().enumerate() {
        let end = task.await.map_err(|e| e.to_string())?;
        report.pings_answered += end.pings;
        report.duplicate_frames += end.duplicates;
        if !end.connected {
            report.subscriber_failures += 1;
            report.first_failure = report.first_failure.or(end.error);
            continue;
        }
        if let Some(e) = end.error {
            report.subscribers_disconnected += 1;
            report.first_disconnect.get_or_insert(e);
        }
        let mut missing = Vec::new();
        for (seq, acked) in acked.iter().enumerate() {
            if end.seen.contains(seq) {
                if *acked {
                    report.frames_received += 1;
                } else {
                    report.unexpected_frames += 1;
                }
            } else if *acked {
                missing.push(seq);
            }
        }
        if !missing.is_empty() {
            report.frames_missing += missing.len() as u64;
            report.subscribers_missing_frames += 1;
            if report.missing_examples.len() < 5 {
                let shown: Vec<_> = missing.iter().take(10).map(|s| s.to_string()).collect();
                report.missing_examples.push(format!(
                    "subscriber {index} missed {} frame(s): seq {}{}",
                    missing.len(),
                    shown.join(", "),
                    if missing.len() > 10 { ", …" } else { "" }
                ));
            }
        }
    }
    Ok(report)
}

impl FanoutReport {
    pub fn failed(&self) -> bool {
        self.frames_missing > 0
            || self.subscriber_failures > 0
            || self.subscribers_disconnected > 0
            || self.messages_committed < self.messages_scheduled as u64
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "fanout: {} subscribers ({} connected, {} failed, {} presence snapshots), {} source address(es), against {}\n\
             \x20 channel {} on server {}\n\
             \x20 senders {}: {} messages scheduled at {}/s over {:.1} s; {} committed (201), achieved {:.1}/s; \
             {} extra sender connections\n",
            self.subscribers,
            self.subscribers_connected,
            self.subscriber_failures,
            self.snapshots,
            self.source_ips,
            self.url,
            self.channel_id,
            self.server_id,
            self.senders,
            self.messages_scheduled,
            self.rate_target,
            self.duration_s,
            self.messages_committed,
            self.send_rate_achieved,
            self.extra_sender_connections,
        );
        if !self.post_statuses.is_empty() || self.post_errors > 0 {
            out.push_str(&format!(
                "  post failures: statuses {:?}, errors {}{}\n",
                self.post_statuses,
                self.post_errors,
                self.first_post_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "  frames: expected {}, received {}, missing {}, duplicates {}, unexpected {} (drain {:.2} s); pings answered {}\n\
             \x20 send → frame: {}\n\
             \x20 201  → frame: {}\n\
             \x20 post (201):   {}\n\
             \x20 schedule lag: {}\n",
            self.frames_expected,
            self.frames_received,
            self.frames_missing,
            self.duplicate_frames,
            self.unexpected_frames,
            self.drain_s,
            self.pings_answered,
            self.send_to_frame.line(true),
            self.ack_to_frame.line(true),
            self.post_latency.line(false),
            self.schedule_lag.line(false),
        ));
        if let Some(e) = &self.first_failure {
            out.push_str(&format!(
                "  FAILED: {} subscriber(s) could not connect (first: {e})\n",
                self.subscriber_failures
            ));
        }
        if let Some(e) = &self.first_disconnect {
            out.push_str(&format!(
                "  FAILED: {} subscriber(s) were disconnected during the run (first: {e})\n",
                self.subscribers_disconnected
            ));
        }
        if self.frames_missing > 0 {
            out.push_str(&format!(
                "  !!! FAILED: {} of {} expected frames MISSING at {} subscriber(s)\n",
                self.frames_missing, self.frames_expected, self.subscribers_missing_frames
            ));
            for example in &self.missing_examples {
                out.push_str(&format!("  !!!   {example}\n"));
            }
        }
        if self.messages_committed < self.messages_scheduled as u64 {
            out.push_str(&format!(
                "  FAILED: {} of {} messages were not committed\n",
                self.messages_scheduled as u64 - self.messages_committed,
                self.messages_scheduled
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_from_the_shared_table() {
        let base = Instant::now();
        let shared = Shared {
            base,
            run: "r".into(),
            t_send: (0..2).map(|_| AtomicU64::new(0)).collect(),
            t_ack: (0..2).map(|_| AtomicU64::new(0)).collect(),
            send_to_frame: Histogram::default(),
            ack_to_frame: Histogram::default(),
            post_latency: Histogram::default(),
            schedule_lag: Histogram::default(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            snapshots: AtomicUsize::new(0),
        };
        let ms = |n: u64| base + Duration::from_millis(n);
        // seq 0: sent at 10 ms, acked at 12 ms, frame at 15 ms
        shared.t_send[0].store(shared.stamp(ms(10)), Ordering::Release);
        shared.t_ack[0].store(shared.stamp(ms(12)), Ordering::Release);
        shared.frame(0, ms(15));
        // seq 1: sent at 20 ms, frame at 21 ms before the 201 arrived
        shared.t_send[1].store(shared.stamp(ms(20)), Ordering::Release);
        shared.frame(1, ms(21));
        assert_eq!(shared.frames(), 2);
        assert_eq!(shared.send_to_frame.summary().max_us, 5_000.0);
        let p50 = shared.send_to_frame.percentile_nanos(50.0);
        assert!((990_000..=1_010_000).contains(&p50), "{p50}");
        let ack = shared.ack_to_frame.summary();
        assert_eq!(ack.max_us, 3_000.0);
        assert_eq!(
            shared.ack_to_frame.percentile_nanos(50.0),
            0,
            "clamped at 0"
        );
    }
}
