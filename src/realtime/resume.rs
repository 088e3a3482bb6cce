//! The resume window of one server (wire-contract B.3): the last [`RESUME_WINDOW_EVENTS`]
//! event frames, so a client that reconnects with `since_event_id=N` gets what it missed, or
//! learns that it must resync because part of it is no longer kept.
//!
//! Event ids are per server and increase; they need not be consecutive. The ring remembers the
//! highest id it has let go of, so it can tell "nothing was missed" from "something was dropped"
//! even across gaps.
//!
//! An entry is a frame, or a frame with what the reader's rights are checked against
//! ([`EventRing::since_where`]): a replay holds only what its reader could read (B.3), and
//! which events those are is the caller's rule, not the ring's.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::domain::model::EventId;

/// Events kept per server for resuming.
pub const RESUME_WINDOW_EVENTS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume<T = Bytes> {
    /// The entries after the requested id, oldest first (empty when the client is up to date).
    Events(Vec<T>),
    /// Events after the requested id are no longer all kept, or the id was never issued.
    ResyncRequired,
}

#[derive(Debug)]
pub struct EventRing<T = Bytes> {
    events: VecDeque<(EventId, T)>,
    capacity: usize,
    /// Highest event id issued so far (0: none).
    latest: EventId,
    /// Highest event id no longer kept (0: none dropped).
    forgotten: EventId,
}

impl<T: Clone> Default for EventRing<T> {
    fn default() -> Self {
        EventRing::new(RESUME_WINDOW_EVENTS)
    }
}

impl<T: Clone> EventRing<T> {
    /// A ring for a server whose events start after id 0.
    pub fn new(capacity: usize) -> EventRing<T> {
        EventRing {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            latest: EventId::NONE,
            forgotten: EventId::NONE,
        }
    }

    /// A ring for a server that has already issued events up to `last_event_id` (after a
    /// restart): those are not kept, so resuming from before it requires a resync.
    pub fn starting_after(last_event_id: EventId, capacity: usize) -> EventRing<T> {
        EventRing {
            latest: last_event_id,
            forgotten: last_event_id,
            ..EventRing::new(capacity)
        }
    }

    /// Keeps the frame of event `event_id`, dropping the oldest one when full. Ids must
    /// increase; a stale or repeated id is refused (returns false) and not kept.
    pub fn push(&mut self, event_id: EventId, frame: T) -> bool {
        if event_id <= self.latest {
            return false;
        }
        if self.events.len() == self.capacity
            && let Some((dropped, _)) = self.events.pop_front()
        {
            self.forgotten = dropped;
        }
        self.events.push_back((event_id, frame));
        self.latest = event_id;
        true
    }

    /// What a client that has seen everything up to `event_id` missed.
    pub fn since(&self, event_id: EventId) -> Resume<T> {
        self.since_where(event_id, |_| true)
    }

    /// Like [`EventRing::since`], keeping only the entries `keep` accepts. Whether a resync is
    /// required does not depend on `keep`: a window with a hole is a hole for every reader.
    pub fn since_where(&self, event_id: EventId, mut keep: impl FnMut(&T) -> bool) -> Resume<T> {
        if event_id > self.latest || event_id < self.forgotten {
            return Resume::ResyncRequired;
        }
        // Ids increase along the ring: skip the prefix the client already has.
        let start = self.events.partition_point(|(id, _)| *id <= event_id);
        Resume::Events(
            self.events
                .range(start..)
                .filter(|(_, entry)| keep(entry))
                .map(|(_, entry)| entry.clone())
                .collect(),
        )
    }

    /// Highest event id issued so far (0 before the first).
    pub fn latest(&self) -> EventId {
        self.latest
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64) -> Bytes {
        Bytes::from(format!("event-{id}"))
    }

    fn events(ids: impl IntoIterator<Item = u64>) -> Resume {
        Resume::Events(ids.into_iter().map(frame).collect())
    }

    fn filled(capacity: usize, ids: impl IntoIterator<Item = u64>) -> EventRing<Bytes> {
        let mut ring = EventRing::new(capacity);
        for id in ids {
            assert!(ring.push(EventId(id), frame(id)));
        }
        ring
    }

    #[test]
    fn replays_what_came_after() {
        let ring = filled(10, 1..=5);
        assert_eq!(ring.since(EventId(0)), events(1..=5));
        assert_eq!(ring.since(EventId(3)), events(4..=5));
        assert_eq!(
            ring.since(EventId(5)),
            events([]),
            "up to date: nothing to replay"
        );
        assert_eq!(
            ring.since(EventId(6)),
            Resume::ResyncRequired,
            "a future id"
        );
        assert_eq!(ring.latest(), EventId(5));
    }

    #[test]
    fn a_filter_keeps_what_the_reader_may_have_and_not_the_resync_rule() {
        let ring = filled(3, 1..=6);
        let even = |f: &Bytes| f.ends_with(b"4") || f.ends_with(b"6");
        assert_eq!(ring.since_where(EventId(3), even), events([4, 6]));
        assert_eq!(ring.since_where(EventId(5), even), events([6]));
        assert_eq!(ring.since_where(EventId(3), |_| false), events([]));
        // 3 was dropped: a resync, whatever the filter says.
        assert_eq!(
            ring.since_where(EventId(2), |_| false),
            Resume::ResyncRequired
        );
    }

    #[test]
    fn a_fresh_ring_is_up_to_date_at_zero() {
        let ring = EventRing::<Bytes>::default();
        assert_eq!(ring.since(EventId(0)), events([]));
        assert_eq!(ring.since(EventId(1)), Resume::ResyncRequired);
        assert!(ring.is_empty());
    }

    #[test]
    fn beyond_the_window_requires_a_resync() {
        let ring = filled(3, 1..=10);
        assert_eq!(ring.len(), 3);
        // 8, 9, 10 are kept; 7 was dropped.
        assert_eq!(
            ring.since(EventId(7)),
            events(8..=10),
            "7 seen, nothing missing"
        );
        assert_eq!(
            ring.since(EventId(6)),
            Resume::ResyncRequired,
            "7 was dropped"
        );
        assert_eq!(ring.since(EventId(0)), Resume::ResyncRequired);
        assert_eq!(ring.since(EventId(10)), events([]));
    }

    #[test]
    fn the_default_window_holds_a_thousand_events() {
        let ring = filled(RESUME_WINDOW_EVENTS, 1..=1500);
        assert_eq!(ring.len(), RESUME_WINDOW_EVENTS);
        assert_eq!(ring.since(EventId(500)), events(501..=1500));
        assert_eq!(ring.since(EventId(499)), Resume::ResyncRequired);
    }

    #[test]
    fn gaps_in_ids_are_not_mistaken_for_losses() {
        let ring = filled(2, [10, 20, 30, 40]);
        // 10 and 20 were dropped; 30 and 40 are kept.
        assert_eq!(ring.since(EventId(20)), events([30, 40]));
        assert_eq!(
            ring.since(EventId(25)),
            events([30, 40]),
            "no event had an id in 21..30"
        );
        assert_eq!(
            ring.since(EventId(19)),
            Resume::ResyncRequired,
            "20 was missed"
        );
    }

    #[test]
    fn stale_ids_are_refused() {
        let mut ring = filled(5, [1, 2, 3]);
        assert!(!ring.push(EventId(3), frame(3)));
        assert!(!ring.push(EventId(2), frame(2)));
        assert_eq!(ring.since(EventId(0)), events([1, 2, 3]));
    }

    #[test]
    fn after_a_restart_older_ids_need_a_resync() {
        let mut ring = EventRing::starting_after(EventId(100), 10);
        assert_eq!(ring.since(EventId(100)), events([]));
        assert_eq!(ring.since(EventId(99)), Resume::ResyncRequired);
        ring.push(EventId(101), frame(101));
        assert_eq!(ring.since(EventId(100)), events([101]));
        assert!(!ring.push(EventId(50), frame(50)));
    }
}
