//! What a shard counts for `/metrics`, in plain `Cell`s of its own (one thread), and the snapshot
//! of them a scrape gathers over the mesh.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::histogram::{Histogram, LATENCY_SECONDS};

/// Status classes, by the first digit of the status: `1xx` … `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests of one route class: how many per status class, and how long they took to answer
/// (from the complete request to the response handed to the writer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteStats {
    pub by_status: [u64; STATUS_CLASSES.len()],
    pub latency: Histogram,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            by_status: [0; STATUS_CLASSES.len()],
            latency: Histogram::new(LATENCY_SECONDS),
        }
    }
}

/// Why realtime and signaling sockets closed, counted per reason (see
/// `websocket::CloseReason::label`). `slow_consumer` is the outbox drop: a socket that read too
/// slowly for what was sent to it.
pub const CLOSE_REASONS: [&str; 9] = [
    "peer_closed",
    "idle",
    "shutdown",
    "too_large",
    "protocol",
    "slow_consumer",
    "write_stalled",
    "requested",
    "failed",
];

/// One counter per [`CLOSE_REASONS`] entry, shared (`Rc`) with the shard's sockets.
pub type SocketCloses = Rc<[Cell<u64>; CLOSE_REASONS.len()]>;

pub struct ShardStats {
    pub requests: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    pub connections_open: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub panics: Cell<u64>,
    /// Per route class of the service (`Service::ROUTE_CLASSES`).
    routes: RefCell<Vec<RouteStats>>,
    pub socket_closes: SocketCloses,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

impl ShardStats {
    /// Counters for a service with `route_classes` classes.
    pub fn new(route_classes: usize) -> ShardStats {
        ShardStats {
            requests: Cell::default(),
            connections_accepted: Cell::default(),
            connections_open: Cell::default(),
            protocol_errors: Cell::default(),
            panics: Cell::default(),
            routes: RefCell::new(vec![RouteStats::default(); route_classes.max(1)]),
            socket_closes: Rc::default(),
        }
    }

    pub fn count_accept(&self) {
        bump(&self.connections_accepted);
    }
    pub fn count_protocol_error(&self) {
        bump(&self.protocol_errors);
    }
    pub fn count_panic(&self) {
        bump(&self.panics);
    }

    /// One answered request of route class `class` (out of range: the last class) with
    /// `status`; `took` is `None` for a WebSocket upgrade, whose session has no answer time.
    pub fn count_request(&self, class: usize, status: u16, took: Option<Duration>) {
        bump(&self.requests);
        let mut routes = self.routes.borrow_mut();
        let last = routes.len() - 1;
        let route = &mut routes[class.min(last)];
        let status_class = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        route.by_status[status_class] += 1;
        if let Some(took) = took {
            route.latency.observe(took.as_secs_f64());
        }
    }

    pub fn routes(&self) -> Vec<RouteStats> {
        self.routes.borrow().clone()
    }

    pub fn closes(&self) -> [u64; CLOSE_REASONS.len()] {
        std::array::from_fn(|i| self.socket_closes[i].get())
    }
}

/// Counters of one shard at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStatsSnapshot {
    pub shard: usize,
    pub requests: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub protocol_errors: u64,
    pub panics: u64,
    /// Per route class, in the order of the service's classes.
    pub routes: Vec<RouteStats>,
    pub realtime_sockets: u64,
    /// Sockets closed, per [`CLOSE_REASONS`] entry.
    pub socket_closes: [u64; CLOSE_REASONS.len()],
    /// Voice: rooms and participants this shard owns, peer connections, media frames
    /// forwarded, datagrams dropped on receive (strangers, garbage) and on send (full buffer).
    pub voice_rooms: u64,
    pub voice_participants: u64,
    pub media_connections: u64,
    pub media_forwarded: u64,
    pub media_dropped_in: u64,
    pub media_dropped_out: u64,
    /// RTP packets the SFU received from publishers and sent to subscribers (str0m's counts,
    /// retransmissions included, as of the connections' last stats).
    pub media_packets_in: u64,
    pub media_packets_out: u64,
    pub media_quality: crate::sfu::Quality,
    /// Typing and media-state updates not relayed (over a socket's rate, or unreadable).
    pub relay_dropped: u64,
    /// Messages to other shards dropped (their queue full, or the peer gone).
    pub mesh_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_class_and_status_and_time() {
        let stats = ShardStats::new(3);
        stats.count_request(0, 200, Some(Duration::from_micros(300)));
        stats.count_request(0, 204, Some(Duration::from_millis(20)));
        stats.count_request(1, 404, Some(Duration::from_millis(1)));
        stats.count_request(2, 101, None);
        // Out of range goes to the last class; a nonsense status to the nearest class.
        stats.count_request(9, 999, Some(Duration::ZERO));
        stats.count_request(1, 42, None);
        let routes = stats.routes();
        assert_eq!(stats.requests.get(), 6);
        assert_eq!(routes[0].by_status, [0, 2, 0, 0, 0]);
        assert_eq!(routes[0].latency.count(), 2);
        assert_eq!(routes[0].latency.buckets()[0], (0.0005, 1));
        assert_eq!(routes[1].by_status, [1, 0, 0, 1, 0]);
        assert_eq!(routes[2].by_status, [1, 0, 0, 0, 1]);
        assert_eq!(routes[2].latency.count(), 1);
    }
}
