//! `/metrics` in the Prometheus text exposition format. Per-shard counters are gathered over the
//! shard mesh, so a scrape sees the whole process whichever shard it lands on.

use std::fmt::Write;

use super::{HandlerFuture, RequestCtx};
use crate::build_info;
use crate::http::Response;
use crate::runtime::mesh::ShardStatsSnapshot;

/// One per-shard series: name, Prometheus type, help text, and how to read it from a snapshot.
type ShardSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStatsSnapshot) -> u64,
);

pub fn metrics<'a>(ctx: &'a RequestCtx<'a>) -> HandlerFuture<'a> {
    Box::pin(async move {
        let shards = ctx.shard.collect_stats().await;
        let storage = ctx.app.storage.stats();
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP openchat_build_info Build metadata of this binary."
        );
        let _ = writeln!(out, "# TYPE openchat_build_info gauge");
        let _ = writeln!(
            out,
            "openchat_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            label(build_info::VERSION),
            label(build_info::COMMIT)
        );
        let per_shard: [ShardSeries; 13] = [
            (
                "openchat_http_requests_total",
                "counter",
                "HTTP requests answered.",
                |s| s.requests,
            ),
            (
                "openchat_http_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                |s| s.connections_accepted,
            ),
            (
                "openchat_http_connections_open",
                "gauge",
                "TCP connections open now.",
                |s| s.connections_open,
            ),
            (
                "openchat_http_protocol_errors_total",
                "counter",
                "Requests rejected by the HTTP parser or timed out.",
                |s| s.protocol_errors,
            ),
            (
                "openchat_panics_total",
                "counter",
                "Panics caught while serving a connection.",
                |s| s.panics,
            ),
            (
                "openchat_realtime_sockets",
                "gauge",
                "Realtime WebSockets open now.",
                |s| s.realtime_sockets,
            ),
            (
                "openchat_voice_participants",
                "gauge",
                "Participants in the voice rooms this shard owns.",
                |s| s.voice_participants,
            ),
            (
                "openchat_media_connections",
                "gauge",
                "Peer connections of this shard's SFU.",
                |s| s.media_connections,
            ),
            (
                "openchat_media_frames_forwarded_total",
                "counter",
                "Media frames the SFU wrote to subscribers.",
                |s| s.media_forwarded,
            ),
            (
                "openchat_media_datagrams_dropped_in_total",
                "counter",
                "UDP datagrams no connection accepted (strangers, garbage).",
                |s| s.media_dropped_in,
            ),
            (
                "openchat_media_datagrams_dropped_out_total",
                "counter",
                "UDP datagrams the kernel refused to send (full send buffer).",
                |s| s.media_dropped_out,
            ),
            (
                "openchat_relay_updates_dropped_total",
                "counter",
                "Typing and media-state updates not relayed: over a socket's rate, or unreadable.",
                |s| s.relay_dropped,
            ),
            (
                "openchat_mesh_messages_dropped_total",
                "counter",
                "Messages to other shards dropped: the peer's queue was full, or it was gone.",
                |s| s.mesh_dropped,
            ),
        ];
        for (name, kind, help, read) in per_shard {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (shard, snapshot) in &shards {
                if let Some(s) = snapshot {
                    let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", read(s));
                }
            }
        }
        let unanswered = shards.iter().filter(|(_, s)| s.is_none()).count();
        let _ = writeln!(
            out,
            "# HELP openchat_shards_unresponsive Shards that did not answer this scrape in time."
        );
        let _ = writeln!(out, "# TYPE openchat_shards_unresponsive gauge");
        let _ = writeln!(out, "openchat_shards_unresponsive {unanswered}");
        let storage_series = [
            (
                "openchat_storage_write_batches_total",
                "Group-commit transactions committed.",
                storage.write_batches,
            ),
            (
                "openchat_storage_writes_committed_total",
                "Writes acknowledged after commit.",
                storage.writes_committed,
            ),
        ];
        for (name, help, value) in storage_series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        Ok(Response::bytes(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            out,
        ))
    })
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
