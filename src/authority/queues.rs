//! The authority's bounded ways out to the shards and in from their sockets, apart from the
//! command queue itself (a bounded channel, see the module above).
//!
//! - [`Fanout`]: committed events and notices go to each shard over a bounded channel of
//!   [`SHARD_EVENT_QUEUE`] places. An event must not be dropped (a socket would miss it, with no
//!   `chat.resync_required` to tell it) and the authority must not wait in its loop, so a shard
//!   whose channel is full gets the rest in order from a backlog; while any shard has a backlog
//!   the authority takes no new command (the command queue fills, shards answer 503
//!   `overloaded`), so the backlog holds at most the events of commands already under way.
//! - [`SocketLedger`]: realtime sockets opening and closing are counted, not queued: each shard
//!   adds its `+1`/`-1` to a shared map of net changes per (server, user), which the authority
//!   folds into the state before every batch of commands. The map has at most one entry per
//!   (server, user) with sockets that changed since, however fast sockets come and go, and no
//!   count is ever lost to a full queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::Broadcast;

/// Events and notices that may wait for one shard's hub. A shard takes them as fast as it runs
/// its event loop; one that falls this far behind pauses the authority (see [`Fanout`]).
pub const SHARD_EVENT_QUEUE: usize = 16_384;

/// A shard's receiver of committed events and notices.
pub type Broadcasts = mpsc::Receiver<Broadcast>;

/// The authority's senders to the shards, each with the events it could not take yet (generic
/// so that its tests need no domain values; the authority sends [`Broadcast`]s).
pub(super) struct Fanout<T = Broadcast> {
    shards: Vec<mpsc::Sender<T>>,
    backlogs: Vec<VecDeque<T>>,
}

impl<T: Clone> Fanout<T> {
    /// A fanout to `shards` shards, with their receivers in shard order.
    pub(super) fn new(shards: usize, capacity: usize) -> (Fanout<T>, Vec<mpsc::Receiver<T>>) {
        let (senders, receivers) = (0..shards).map(|_| mpsc::channel(capacity)).unzip();
        let fanout = Fanout {
            shards: senders,
            backlogs: (0..shards).map(|_| VecDeque::new()).collect(),
        };
        (fanout, receivers)
    }

    /// Sends `broadcast` to every shard, behind what each has waiting.
    pub(super) fn send(&mut self, broadcast: T) {
        for i in 0..self.shards.len() {
            self.send_to(i, broadcast.clone());
        }
    }

    fn send_to(&mut self, shard: usize, broadcast: T) {
        if !self.backlogs[shard].is_empty() {
            self.backlogs[shard].push_back(broadcast);
            return;
        }
        match self.shards[shard].try_send(broadcast) {
            Ok(()) => {}
            Err(TrySendError::Full(broadcast)) => {
                tracing::warn!(
                    shard,
                    "a shard falls behind on events; new commands wait until it caught up"
                );
                self.backlogs[shard].push_back(broadcast);
            }
            // The shard has stopped: nobody is left to tell.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// A shard with events waiting, and a sender to wait on for room in its channel.
    pub(super) fn lagging(&self) -> Option<(usize, mpsc::Sender<T>)> {
        let shard = self.backlogs.iter().position(|b| !b.is_empty())?;
        Some((shard, self.shards[shard].clone()))
    }

    /// Whether every shard has taken everything sent to it (into its channel).
    pub(super) fn caught_up(&self) -> bool {
        self.backlogs.iter().all(VecDeque::is_empty)
    }

    /// `shard` has room again (`permit`, or `None` when it stopped): moves as much of its
    /// backlog into its channel as fits.
    pub(super) fn resume(&mut self, shard: usize, permit: Option<mpsc::OwnedPermit<T>>) {
        let backlog = &mut self.backlogs[shard];
        let Some(permit) = permit else {
            backlog.clear();
            return;
        };
        let Some(first) = backlog.pop_front() else {
            return;
        };
        permit.send(first);
        while let Some(next) = backlog.pop_front() {
            match self.shards[shard].try_send(next) {
                Ok(()) => {}
                Err(TrySendError::Full(next)) => {
                    backlog.push_front(next);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    backlog.clear();
                    return;
                }
            }
        }
    }
}

/// Net socket openings per (server, user) since the authority last looked.
#[derive(Debug, Default)]
pub(super) struct SocketLedger {
    changes: Mutex<HashMap<(String, String), i64>>,
}

impl SocketLedger {
    /// Adds `delta` (`+1` opened, `-1` closed) for `uid`'s sockets on `server_id`.
    pub(super) fn record(&self, server_id: String, uid: String, delta: i64) {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (server_id, uid);
        let net = changes.get(&key).copied().unwrap_or(0) + delta;
        if net == 0 {
            changes.remove(&key);
        } else {
            changes.insert(key, net);
        }
    }

    /// The net changes recorded so far, leaving the ledger empty.
    pub(super) fn take(&self) -> HashMap<(String, String), i64> {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if changes.is_empty() {
            HashMap::new()
        } else {
            std::mem::take(&mut *changes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<u32>) -> Vec<u32> {
        let mut seen = Vec::new();
        while let Ok(n) = rx.try_recv() {
            seen.push(n);
        }
        seen
    }

    /// Waits for room on `fanout`'s first lagging shard and resumes it.
    fn resume_first(fanout: &mut Fanout<u32>) -> usize {
        let (shard, sender) = fanout.lagging().expect("a shard lags");
        let permit = futures_lite::future::block_on(sender.reserve_owned()).ok();
        fanout.resume(shard, permit);
        shard
    }

    #[test]
    fn a_full_shard_gets_the_rest_in_order_once_it_has_room() {
        let (mut fanout, mut rx) = Fanout::new(2, 2);
        for n in 0..5 {
            fanout.send(n);
        }
        assert!(!fanout.caught_up());
        assert_eq!(drain(&mut rx[0]), [0, 1]);
        assert_eq!(resume_first(&mut fanout), 0);
        assert_eq!(drain(&mut rx[0]), [2, 3]);
        assert_eq!(resume_first(&mut fanout), 0);
        assert_eq!(drain(&mut rx[0]), [4]);
        // Shard 1 was not read meanwhile: its backlog waited for it alone.
        assert_eq!(drain(&mut rx[1]), [0, 1]);
        assert_eq!(resume_first(&mut fanout), 1);
        assert_eq!(drain(&mut rx[1]), [2, 3]);
        assert_eq!(resume_first(&mut fanout), 1);
        assert_eq!(drain(&mut rx[1]), [4]);
        assert!(fanout.caught_up());
        assert!(fanout.lagging().is_none());
    }

    #[test]
    fn later_events_queue_behind_a_backlog_even_when_there_is_room() {
        let (mut fanout, mut rx) = Fanout::new(1, 1);
        fanout.send(0);
        fanout.send(1);
        assert_eq!(drain(&mut rx[0]), [0]);
        // Room now, but 1 is waiting: 2 must not overtake it.
        fanout.send(2);
        assert!(drain(&mut rx[0]).is_empty());
        resume_first(&mut fanout);
        assert_eq!(drain(&mut rx[0]), [1]);
        resume_first(&mut fanout);
        assert_eq!(drain(&mut rx[0]), [2]);
        assert!(fanout.caught_up());
    }

    #[test]
    fn a_stopped_shard_is_not_waited_for() {
        let (mut fanout, rx) = Fanout::new(1, 1);
        fanout.send(0u32);
        fanout.send(1);
        drop(rx);
        resume_first(&mut fanout);
        assert!(fanout.caught_up());
        fanout.send(2);
        assert!(fanout.caught_up());
    }

    #[test]
    fn the_ledger_keeps_net_changes_per_server_and_user() {
        let ledger = SocketLedger::default();
        let key = |s: &str, u: &str| (s.to_owned(), u.to_owned());
        ledger.record("srv".into(), "alice".into(), 1);
        ledger.record("srv".into(), "alice".into(), 1);
        ledger.record("srv".into(), "bob".into(), 1);
        ledger.record("srv".into(), "bob".into(), -1);
        ledger.record("other".into(), "alice".into(), -1);
        let taken = ledger.take();
        assert_eq!(taken.len(), 2, "{taken:?}");
        assert_eq!(taken[&key("srv", "alice")], 2);
        assert_eq!(taken[&key("other", "alice")], -1);
        assert!(ledger.take().is_empty());
    }

    #[test]
    fn the_ledger_stays_small_however_often_sockets_come_and_go() {
        let ledger = SocketLedger::default();
        for _ in 0..10_000 {
            ledger.record("srv".into(), "alice".into(), 1);
            ledger.record("srv".into(), "alice".into(), -1);
        }
        assert!(ledger.take().is_empty());
    }
}
