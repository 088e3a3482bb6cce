//! `/metrics` in the Prometheus text exposition format (version 0.0.4). Per-shard counters are
//! gathered over the shard mesh, so a scrape sees the whole process whichever shard it lands on.
//!
//! The text is written by `prometheus-client`'s encoder (HELP/TYPE lines, label escaping, the
//! `_total` suffix of counters and `_info` of info metrics, number formatting). Its metric types
//! are not used for counting: they are atomics behind `Arc`s, made for state shared between
//! threads, while each shard counts in plain `Cell`s of its own (see `runtime::shard`). So every
//! scrape hands the gathered snapshots to the encoder as one [`Collector`] of constant values.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{HandlerFuture, RequestCtx};
use crate::build_info;
use crate::http::Response;
use crate::runtime::mesh::ShardStatsSnapshot;
use crate::storage::StorageStats;

/// One per-shard series: name, Prometheus type, help text, and how to read it from a snapshot.
/// Counter names are given without `_total`: the encoder appends it (and refuses a doubled one).
type ShardSeries = (
    &'static str,
    MetricType,
    &'static str,
    fn(&ShardStatsSnapshot) -> u64,
);

const PER_SHARD: [ShardSeries; 13] = [
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
        "openchat_media_connections",
        MetricType::Gauge,
        "Peer connections of this shard's SFU.",
        |s| s.media_connections,
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
        ];
        for (name, help, value) in storage_series {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the hand-written encoder produced for these values, byte for byte: dashboards
    /// and the end-to-end tests read these names, types and label sets.
    #[test]
    fn exposition_keeps_the_names_types_and_labels() {
        let shard0 = ShardStatsSnapshot {
            shard: 0,
            requests: 7,
            connections_accepted: 3,
            connections_open: 1,
            protocol_errors: 2,
            panics: 0,
            realtime_sockets: 4,
            voice_participants: 5,
            media_connections: 6,
            media_forwarded: 1_000_000,
            media_dropped_in: 8,
            media_dropped_out: 9,
            relay_dropped: 10,
            mesh_dropped: 11,
        };
        let storage = StorageStats {
            write_batches: 12,
            writes_committed: 13,
            largest_batch: 99,
        };
        let process = Process {
            authority_queue: 14,
            resident_bytes: Some(15),
            open_fds: None,
        };
        let text = exposition(vec![(0, Some(shard0)), (1, None)], storage, process);
        let mut expected = format!(
            "# HELP openchat_build_info Build metadata of this binary.\n\
             # TYPE openchat_build_info gauge\n\
             openchat_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
            build_info::VERSION,
            build_info::COMMIT
        );
        for (name, kind, help, value) in [
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
                "openchat_media_connections",
                "gauge",
                "Peer connections of this shard's SFU.",
                6,
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
        ] {
            expected += &format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{shard=\"0\"}} {value}\n"
            );
        }
        expected += "# HELP openchat_shards_unresponsive Shards that did not answer this scrape in time.\n\
                     # TYPE openchat_shards_unresponsive gauge\n\
                     openchat_shards_unresponsive 1\n\
                     # HELP openchat_storage_write_batches_total Group-commit transactions committed.\n\
                     # TYPE openchat_storage_write_batches_total counter\n\
                     openchat_storage_write_batches_total 12\n\
                     # HELP openchat_storage_writes_committed_total Writes acknowledged after commit.\n\
                     # TYPE openchat_storage_writes_committed_total counter\n\
                     openchat_storage_writes_committed_total 13\n\
                     # HELP openchat_storage_largest_batch Writes in the largest group commit so far.\n\
                     # TYPE openchat_storage_largest_batch gauge\n\
                     openchat_storage_largest_batch 99\n\
                     # HELP openchat_authority_queue_depth Commands and reads waiting for the authority thread.\n\
                     # TYPE openchat_authority_queue_depth gauge\n\
                     openchat_authority_queue_depth 14\n\
                     # HELP openchat_process_resident_memory_bytes Resident memory of the process.\n\
                     # TYPE openchat_process_resident_memory_bytes gauge\n\
                     openchat_process_resident_memory_bytes 15\n";
        assert_eq!(text, expected);
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
