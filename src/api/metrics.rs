//! `/metrics` in the Prometheus text exposition format (version 0.0.4). Per-shard counters are
//! gathered over the shard mesh, so a scrape sees the whole process whichever shard it lands on.
//!
//! The text is written by `prometheus-client`'s encoder (HELP/TYPE lines, label escaping, the
//! `_total` suffix of counters and `_info` of info metrics, number formatting). Its metric types
//! are not used for counting: they are atomics behind `Arc`s, made for state shared between
//! threads, while each shard counts in plain `Cell`s of its own (see `runtime::shard`). So every
//! scrape hands the gathered snapshots to the encoder as one [`Collector`] of constant values.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{App, HandlerFuture, RequestCtx};
use crate::build_info;
use crate::histogram::Histogram;
use crate::http::Response;
use crate::runtime::service::Service;
use crate::runtime::stats::{CLOSE_REASONS, RouteStats, STATUS_CLASSES, ShardStatsSnapshot};
use crate::storage::StorageStats;

/// One per-shard series: name, Prometheus type, help text, and how to read it from a snapshot.
/// Counter names are given without `_total`: the encoder appends it (and refuses a doubled one).
type ShardSeries = (
    &'static str,
    MetricType,
    &'static str,
    fn(&ShardStatsSnapshot) -> u64,
);

const PER_SHARD: [ShardSeries; 16] = [
    (
        "openchat_http_requests",
        MetricType::Counter,
        "HTTP requests answered.",
        |s| s.requests,
    ),
    (
        "openchat_http_connections_accepted",
        MetricType::Counter,
        "TCP connections accepted.",
        |s| s.connections_accepted,
    ),
    (
        "openchat_http_connections_open",
        MetricType::Gauge,
        "TCP connections open now.",
        |s| s.connections_open,
    ),
    (
        "openchat_http_protocol_errors",
        MetricType::Counter,
        "Requests rejected by the HTTP parser or timed out.",
        |s| s.protocol_errors,
    ),
    (
        "openchat_panics",
        MetricType::Counter,
        "Panics caught while serving a connection.",
        |s| s.panics,
    ),
    (
        "openchat_realtime_sockets",
        MetricType::Gauge,
        "Realtime WebSockets open now.",
        |s| s.realtime_sockets,
    ),
    (
        "openchat_voice_participants",
        MetricType::Gauge,
        "Participants in the voice rooms this shard owns.",
        |s| s.voice_participants,
    ),
    (
        "openchat_voice_rooms",
        MetricType::Gauge,
        "Voice rooms with participants that this shard owns.",
        |s| s.voice_rooms,
    ),
    (
        "openchat_media_connections",
        MetricType::Gauge,
        "Peer connections of this shard's SFU.",
        |s| s.media_connections,
    ),
    (
        "openchat_media_datagrams_received",
        MetricType::Counter,
        "UDP datagrams a peer connection took in (RTP, RTCP, STUN, DTLS).",
        |s| s.media_packets_in,
    ),
    (
        "openchat_media_datagrams_sent",
        MetricType::Counter,
        "UDP datagrams the SFU's peer connections gave out to send.",
        |s| s.media_packets_out,
    ),
    (
        "openchat_media_frames_forwarded",
        MetricType::Counter,
        "Media frames the SFU wrote to subscribers.",
        |s| s.media_forwarded,
    ),
    (
        "openchat_media_datagrams_dropped_in",
        MetricType::Counter,
        "UDP datagrams no connection accepted (strangers, garbage).",
        |s| s.media_dropped_in,
    ),
    (
        "openchat_media_datagrams_dropped_out",
        MetricType::Counter,
        "UDP datagrams the kernel refused to send (full send buffer).",
        |s| s.media_dropped_out,
    ),
    (
        "openchat_relay_updates_dropped",
        MetricType::Counter,
        "Typing and media-state updates not relayed: over a socket's rate, or unreadable.",
        |s| s.relay_dropped,
    ),
    (
        "openchat_mesh_messages_dropped",
        MetricType::Counter,
        "Messages to other shards dropped: the peer's queue was full, or it was gone.",
        |s| s.mesh_dropped,
    ),
];

pub fn metrics<'a>(ctx: &'a RequestCtx<'a>) -> HandlerFuture<'a> {
    Box::pin(async move {
        let shards = ctx.shard.collect_stats().await;
        let storage = ctx.app.storage.stats();
        let process = Process {
            authority_queue: ctx.app.authority.queue_depth() as u64,
            resident_bytes: crate::runtime::process::resident_bytes(),
            open_fds: crate::runtime::process::open_fds(),
            cluster: ctx.app.cluster.as_ref().map(|c| ClusterGauges {
                bus_connected: c.bus_connected(),
                leases_held: c.leases_held(std::time::Instant::now()) as u64,
            }),
        };
        Ok(Response::bytes(
            200,
            prometheus_text::CONTENT_TYPE,
            exposition(shards, storage, process),
        ))
    })
}

/// The exposition text of one scrape.
fn exposition(
    shards: Vec<(usize, Option<ShardStatsSnapshot>)>,
    storage: StorageStats,
    process: Process,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        shards,
        storage,
        process,
    }));
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail, and every value here is an integer or a known label.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// What one scrape gathered: each shard's snapshot (`None`: it did not answer in time) and the
/// storage writer's counters.
#[derive(Debug)]
struct Scrape {
    shards: Vec<(usize, Option<ShardStatsSnapshot>)>,
    storage: StorageStats,
    process: Process,
}

/// The process-wide gauges of one scrape (`None`: the kernel did not say).
#[derive(Debug)]
struct Process {
    authority_queue: u64,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    /// `None`: a single node.
    cluster: Option<ClusterGauges>,
}

/// A cluster node's view of the bus and its leases.
#[derive(Debug)]
struct ClusterGauges {
    bus_connected: bool,
    leases_held: u64,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "openchat_build",
                "Build metadata of this binary.",
                None,
                MetricType::Info,
            )?
            .encode_info(&[
                ("version", build_info::VERSION),
                ("commit", build_info::COMMIT),
            ])?;
        for (name, kind, help, read) in PER_SHARD {
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (shard, snapshot) in &self.shards {
                let Some(s) = snapshot else { continue };
                let labels = [("shard", *shard)];
                let series = metric.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(read(s)).encode(series)?,
                    _ => ConstGauge::new(read(s)).encode(series)?,
                }
            }
        }
        self.encode_routes(&mut encoder)?;
        self.encode_socket_closes(&mut encoder)?;
        self.encode_media_quality(&mut encoder)?;
        let unanswered = self.shards.iter().filter(|(_, s)| s.is_none()).count();
        ConstGauge::new(unanswered as u64).encode(encoder.encode_descriptor(
            "openchat_shards_unresponsive",
            "Shards that did not answer this scrape in time.",
            None,
            MetricType::Gauge,
        )?)?;
        let storage_series = [
            (
                "openchat_storage_write_batches",
                "Group-commit transactions committed.",
                self.storage.write_batches,
            ),
            (
                "openchat_storage_writes_committed",
                "Writes acknowledged after commit.",
                self.storage.writes_committed,
            ),
            (
                "openchat_storage_writes_failed",
                "Writes answered with an error (the database refused them or was unreachable).",
                self.storage.writes_failed,
            ),
        ];
        for (name, help, value) in storage_series {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        encode_histogram(
            &mut encoder,
            "openchat_storage_commit_duration_seconds",
            "Time to commit one group-commit batch, retries included.",
            &self.storage.commit_seconds,
        )?;
        self.encode_pool(&mut encoder)?;
        let gauges = [
            (
                "openchat_storage_largest_batch",
                "Writes in the largest group commit so far.",
                Some(self.storage.largest_batch),
            ),
            (
                "openchat_authority_queue_depth",
                "Commands and reads waiting for the authority thread.",
                Some(self.process.authority_queue),
            ),
            (
                "openchat_process_resident_memory_bytes",
                "Resident memory of the process.",
                self.process.resident_bytes,
            ),
            (
                "openchat_process_open_fds",
                "Open file descriptors of the process (connections, sockets, files).",
                self.process.open_fds,
            ),
        ];
        let cluster = self.process.cluster.as_ref();
        let gauges = gauges.into_iter().chain([
            (
                "openchat_cluster_bus_connected",
                "1 while this cluster node's NATS connection is up (absent on a single node).",
                cluster.map(|c| u64::from(c.bus_connected)),
            ),
            (
                "openchat_cluster_leases_held",
                "Community and voice-room leases this cluster node may serve now.",
                cluster.map(|c| c.leases_held),
            ),
        ]);
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

impl Scrape {
    /// The snapshots of the shards that answered.
    fn answered(&self) -> impl Iterator<Item = &ShardStatsSnapshot> {
        self.shards.iter().filter_map(|(_, s)| s.as_ref())
    }

    /// HTTP responses per route class and status class, and their latency per route class,
    /// summed over the shards (a shard label would multiply the series by the core count).
    fn encode_routes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut routes: Vec<RouteStats> = Vec::new();
        for snapshot in self.answered() {
            if routes.is_empty() {
                routes = snapshot.routes.clone();
                continue;
            }
            for (sum, shard) in routes.iter_mut().zip(&snapshot.routes) {
                for (a, b) in sum.by_status.iter_mut().zip(shard.by_status) {
                    *a += b;
                }
                sum.latency.merge(&shard.latency);
            }
        }
        let labels = <App as Service>::ROUTE_CLASSES;
        let mut metric = encoder.encode_descriptor(
            "openchat_http_responses",
            "HTTP responses by route class and status class (WebSocket upgrades are 1xx).",
            None,
            MetricType::Counter,
        )?;
        for (route, stats) in labels.iter().zip(&routes) {
            for (status, count) in STATUS_CLASSES.iter().zip(stats.by_status) {
                if count == 0 {
                    continue;
                }
                let labels = [("route", *route), ("status", *status)];
                ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "openchat_http_request_duration_seconds",
            "Time from a complete request to its response, by route class.",
            None,
            MetricType::Histogram,
        )?;
        for (route, stats) in labels.iter().zip(&routes) {
            if stats.latency.count() == 0 {
                continue;
            }
            let labels = [("route", *route)];
            encode_histogram_series(metric.encode_family(&labels)?, &stats.latency)?;
        }
        Ok(())
    }

    /// Realtime and signaling sockets closed, by reason; `slow_consumer` is the outbox drop.
    fn encode_socket_closes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut closes = [0u64; CLOSE_REASONS.len()];
        for snapshot in self.answered() {
            for (sum, n) in closes.iter_mut().zip(snapshot.socket_closes) {
                *sum += n;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "openchat_realtime_socket_closes",
            "Realtime and signaling WebSockets closed, by reason (slow_consumer: the outbox overflowed and the socket was dropped).",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in CLOSE_REASONS.iter().zip(closes) {
            let labels = [("reason", *reason)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Round-trip time and loss as the SFU's peer connections report them, summed over shards.
    fn encode_media_quality(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut quality = crate::sfu::Quality::default();
        for snapshot in self.answered() {
            quality.rtt.merge(&snapshot.media_quality.rtt);
            quality.loss_in.merge(&snapshot.media_quality.loss_in);
            quality.loss_out.merge(&snapshot.media_quality.loss_out);
        }
        encode_histogram(
            encoder,
            "openchat_media_rtt_seconds",
            "Round-trip times of the SFU's media lines from RTCP reports, one per media line per report (every 5 s).",
            &quality.rtt,
        )?;
        let mut metric = encoder.encode_descriptor(
            "openchat_media_loss_ratio",
            "Packet loss fraction per media line per report (every 5 s): in = from publishers as the SFU measures it, out = to subscribers as their receiver reports say.",
            None,
            MetricType::Histogram,
        )?;
        for (direction, histogram) in [("in", &quality.loss_in), ("out", &quality.loss_out)] {
            let labels = [("direction", direction)];
            encode_histogram_series(metric.encode_family(&labels)?, histogram)?;
        }
        Ok(())
    }

    fn encode_pool(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(pool) = self.storage.pool else {
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "openchat_storage_pool_connections",
            "Database connections the pool holds now, busy or idle.",
            None,
            MetricType::Gauge,
        )?;
        let busy = u64::from(pool.size.saturating_sub(pool.idle));
        for (state, count) in [("busy", busy), ("idle", u64::from(pool.idle))] {
            let labels = [("state", state)];
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        ConstGauge::new(u64::from(pool.max)).encode(encoder.encode_descriptor(
            "openchat_storage_pool_max_connections",
            "The most connections the pool opens (OPENCHAT_DB_MAX_CONNECTIONS).",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// One unlabelled histogram metric.
fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    encode_histogram_series(metric, histogram)
}

fn encode_histogram_series(
    mut series: MetricEncoder<'_>,
    histogram: &Histogram,
) -> Result<(), std::fmt::Error> {
    series.encode_histogram::<NoLabelSet>(
        histogram.sum(),
        histogram.count(),
        &histogram.buckets(),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ShardStatsSnapshot, StorageStats, Process) {
        let mut routes = vec![RouteStats::default(); <App as Service>::ROUTE_CLASSES.len()];
        routes[0].by_status = [0, 5, 0, 1, 0];
        routes[0].latency.observe(0.0002);
        routes[0].latency.observe(0.003);
        let mut quality = crate::sfu::Quality::default();
        quality.rtt.observe(0.04);
        quality.loss_out.observe(0.0);
        quality.loss_out.observe(0.03);
        let shard0 = ShardStatsSnapshot {
            shard: 0,
            requests: 7,
            connections_accepted: 3,
            connections_open: 1,
            protocol_errors: 2,
            panics: 0,
            routes,
            realtime_sockets: 4,
            socket_closes: [1, 0, 0, 0, 0, 2, 0, 0, 0],
            voice_rooms: 16,
            voice_participants: 5,
            media_connections: 6,
            media_forwarded: 1_000_000,
            media_dropped_in: 8,
            media_dropped_out: 9,
            media_packets_in: 17,
            media_packets_out: 18,
            media_quality: quality,
            relay_dropped: 10,
            mesh_dropped: 11,
        };
        let mut commit_seconds = Histogram::new(crate::histogram::LATENCY_SECONDS);
        commit_seconds.observe(0.0007);
        let storage = StorageStats {
            write_batches: 12,
            writes_committed: 13,
            writes_failed: 19,
            largest_batch: 99,
            commit_seconds,
            pool: Some(crate::storage::PoolStats {
                size: 4,
                idle: 3,
                max: 16,
            }),
        };
        let process = Process {
            authority_queue: 14,
            resident_bytes: Some(15),
            open_fds: None,
            cluster: None,
        };
        (shard0, storage, process)
    }

    /// Every series with its HELP and TYPE lines, as dashboards and the end-to-end tests read
    /// them: names, types, label sets and values.
    #[test]
    fn exposition_keeps_the_names_types_and_labels() {
        let (shard0, storage, process) = sample();
        let text = exposition(vec![(0, Some(shard0)), (1, None)], storage, process);
        let build = format!(
            "# HELP openchat_build_info Build metadata of this binary.\n\
             # TYPE openchat_build_info gauge\n\
             openchat_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            build_info::VERSION,
            build_info::COMMIT
        );
        assert!(text.starts_with(&build), "{text}");
        let per_shard = [
            (
                "openchat_http_requests_total",
                "counter",
                "HTTP requests answered.",
                7,
            ),
            (
                "openchat_http_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                3,
            ),
            (
                "openchat_http_connections_open",
                "gauge",
                "TCP connections open now.",
                1,
            ),
            (
                "openchat_http_protocol_errors_total",
                "counter",
                "Requests rejected by the HTTP parser or timed out.",
                2,
            ),
            (
                "openchat_panics_total",
                "counter",
                "Panics caught while serving a connection.",
                0,
            ),
            (
                "openchat_realtime_sockets",
                "gauge",
                "Realtime WebSockets open now.",
                4,
            ),
            (
                "openchat_voice_participants",
                "gauge",
                "Participants in the voice rooms this shard owns.",
                5,
            ),
            (
                "openchat_voice_rooms",
                "gauge",
                "Voice rooms with participants that this shard owns.",
                16,
            ),
            (
                "openchat_media_connections",
                "gauge",
                "Peer connections of this shard's SFU.",
                6,
            ),
            (
                "openchat_media_datagrams_received_total",
                "counter",
                "UDP datagrams a peer connection took in (RTP, RTCP, STUN, DTLS).",
                17,
            ),
            (
                "openchat_media_datagrams_sent_total",
                "counter",
                "UDP datagrams the SFU's peer connections gave out to send.",
                18,
            ),
            (
                "openchat_media_frames_forwarded_total",
                "counter",
                "Media frames the SFU wrote to subscribers.",
                1_000_000,
            ),
            (
                "openchat_media_datagrams_dropped_in_total",
                "counter",
                "UDP datagrams no connection accepted (strangers, garbage).",
                8,
            ),
            (
                "openchat_media_datagrams_dropped_out_total",
                "counter",
                "UDP datagrams the kernel refused to send (full send buffer).",
                9,
            ),
            (
                "openchat_relay_updates_dropped_total",
                "counter",
                "Typing and media-state updates not relayed: over a socket's rate, or unreadable.",
                10,
            ),
            (
                "openchat_mesh_messages_dropped_total",
                "counter",
                "Messages to other shards dropped: the peer's queue was full, or it was gone.",
                11,
            ),
        ];
        for (name, kind, help, value) in per_shard {
            let block = format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{shard=\"0\"}} {value}\n"
            );
            assert!(text.contains(&block), "{block} missing from\n{text}");
        }
        for block in [
            "# HELP openchat_shards_unresponsive Shards that did not answer this scrape in time.\n\
             # TYPE openchat_shards_unresponsive gauge\n\
             openchat_shards_unresponsive 1\n",
            "# TYPE openchat_storage_write_batches_total counter\nopenchat_storage_write_batches_total 12\n",
            "# TYPE openchat_storage_writes_committed_total counter\nopenchat_storage_writes_committed_total 13\n",
            "# TYPE openchat_storage_writes_failed_total counter\nopenchat_storage_writes_failed_total 19\n",
            "# TYPE openchat_storage_largest_batch gauge\nopenchat_storage_largest_batch 99\n",
            "# TYPE openchat_authority_queue_depth gauge\nopenchat_authority_queue_depth 14\n",
            "# TYPE openchat_process_resident_memory_bytes gauge\nopenchat_process_resident_memory_bytes 15\n",
            "# TYPE openchat_storage_pool_connections gauge\n\
             openchat_storage_pool_connections{state=\"busy\"} 1\n\
             openchat_storage_pool_connections{state=\"idle\"} 3\n",
            "# TYPE openchat_storage_pool_max_connections gauge\nopenchat_storage_pool_max_connections 16\n",
            "# TYPE openchat_http_responses_total counter\n\
             openchat_http_responses_total{route=\"probe\",status=\"2xx\"} 5\n\
             openchat_http_responses_total{route=\"probe\",status=\"4xx\"} 1\n#",
            "openchat_realtime_socket_closes_total{reason=\"peer_closed\"} 1\n",
            "openchat_realtime_socket_closes_total{reason=\"slow_consumer\"} 2\n",
            "openchat_realtime_socket_closes_total{reason=\"failed\"} 0\n",
            "openchat_media_rtt_seconds_bucket{le=\"0.05\"} 1\n",
            "openchat_media_loss_ratio_bucket{direction=\"out\",le=\"0\"} 1\n",
            "openchat_media_loss_ratio_bucket{direction=\"out\",le=\"0.05\"} 2\n",
            "openchat_media_loss_ratio_count{direction=\"in\"} 0\n",
            "openchat_storage_commit_duration_seconds_bucket{le=\"0.001\"} 1\n",
        ] {
            assert!(text.contains(block), "{block} missing from\n{text}");
        }
        // Absent values leave their series out; nothing is sent for a shard that did not answer.
        assert!(!text.contains("openchat_process_open_fds"));
        assert!(!text.contains("shard=\"1\""));
    }

    /// A histogram's whole text: cumulative buckets ending with +Inf, then sum and count.
    #[test]
    fn a_route_latency_histogram_is_cumulative() {
        let (shard0, storage, process) = sample();
        let text = exposition(vec![(0, Some(shard0))], storage, process);
        let start = text
            .find("openchat_http_request_duration_seconds_sum")
            .expect("the probe class has a histogram");
        let sum_line = text[start..].lines().next().unwrap();
        assert_eq!(
            sum_line,
            format!(
                "openchat_http_request_duration_seconds_sum{{route=\"probe\"}} {}",
                0.0002 + 0.003
            )
        );
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("openchat_http_request_duration_seconds_bucket{route=\"probe\"")
            })
            .collect();
        assert_eq!(buckets.len(), crate::histogram::LATENCY_SECONDS.len());
        assert!(buckets[0].ends_with("le=\"0.0005\"} 1"), "{buckets:?}");
        assert!(buckets[2].ends_with("le=\"0.0025\"} 1"), "{buckets:?}");
        assert!(buckets[3].ends_with("le=\"0.005\"} 2"), "{buckets:?}");
        assert!(
            buckets.last().unwrap().ends_with("le=\"+Inf\"} 2"),
            "{buckets:?}"
        );
        assert!(text.contains("openchat_http_request_duration_seconds_count{route=\"probe\"} 2\n"));
        // Classes with no requests have no histogram.
        assert!(!text.contains("openchat_http_request_duration_seconds_count{route=\"keys\"}"));
    }

    #[test]
    fn label_values_are_escaped() {
        // The build's version and commit come from the environment at build time; the encoder
        // must escape them as the exposition format requires.
        let mut registry = Registry::default();
        #[derive(Debug)]
        struct Odd;
        impl Collector for Odd {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encoder
                    .encode_descriptor("x", "h.", None, MetricType::Info)?
                    .encode_info(&[("v", "a\"b\\c\nd")])
            }
        }
        registry.register_collector(Box::new(Odd));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("x_info{v=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }
}
