//! The bounded queue of frames waiting to be written to one socket. Fan-out never waits for a
//! socket: it pushes and moves on, and a socket whose queue is full is a slow consumer that gets
//! disconnected (architecture, "Fan-out"), so one slow reader never slows anyone else and never
//! holds more than [`OUTBOX_MAX_BYTES`] of memory.

use std::collections::VecDeque;

use bytes::Bytes;

/// Frames queued for one socket before it counts as a slow consumer.
pub const OUTBOX_MAX_FRAMES: usize = 1024;
/// Bytes queued for one socket before it counts as a slow consumer.
pub const OUTBOX_MAX_BYTES: usize = 1024 * 1024;

/// An emptied queue keeps an allocation of at most this many slots, so idle sockets hold
/// almost nothing after a burst.
const IDLE_SLOTS: usize = 4;

/// The queue is full: the socket reads too slowly and is to be disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox overflow: the socket reads too slowly")]
pub struct Overflow;

#[derive(Debug)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(OUTBOX_MAX_FRAMES, OUTBOX_MAX_BYTES)
    }
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            frames: VecDeque::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    /// Queues `frame`, or refuses it (queuing nothing) when either bound would be exceeded.
    pub fn push(&mut self, frame: Bytes) -> Result<(), Overflow> {
        if self.frames.len() >= self.max_frames || self.bytes + frame.len() > self.max_bytes {
            return Err(Overflow);
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        Ok(())
    }

    /// The oldest queued frame.
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        if self.frames.is_empty() && self.frames.capacity() > IDLE_SLOTS {
            self.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Drops everything queued (the socket is going away).
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn frames_come_out_in_order() {
        let mut outbox = Outbox::default();
        for i in 0..10u8 {
            outbox.push(Bytes::from(vec![i])).unwrap();
        }
        assert_eq!(outbox.len(), 10);
        assert_eq!(outbox.bytes(), 10);
        for i in 0..10u8 {
            assert_eq!(outbox.pop().unwrap()[..], [i]);
        }
        assert_eq!(outbox.pop(), None);
        assert!(outbox.is_empty());
        assert_eq!(outbox.bytes(), 0);
    }

    #[test]
    fn the_frame_bound_overflows() {
        let mut outbox = Outbox::new(3, 1 << 20);
        for _ in 0..3 {
            outbox.push(frame(1)).unwrap();
        }
        assert_eq!(outbox.push(frame(1)), Err(Overflow));
        assert_eq!(outbox.len(), 3, "the refused frame is not queued");
        outbox.pop();
        assert!(outbox.push(frame(1)).is_ok(), "room again after a pop");
    }

    #[test]
    fn the_byte_bound_overflows() {
        let mut outbox = Outbox::new(100, 10);
        outbox.push(frame(6)).unwrap();
        outbox.push(frame(4)).unwrap();
        assert_eq!(outbox.push(frame(1)), Err(Overflow));
        assert_eq!(outbox.bytes(), 10);
        let mut big = Outbox::new(100, 10);
        assert_eq!(
            big.push(frame(11)),
            Err(Overflow),
            "a frame over the bound never fits"
        );
    }

    #[test]
    fn defaults_match_the_published_bounds() {
        let mut outbox = Outbox::default();
        for _ in 0..OUTBOX_MAX_FRAMES {
            outbox.push(frame(1)).unwrap();
        }
        assert_eq!(outbox.push(frame(1)), Err(Overflow));
        let mut outbox = Outbox::default();
        outbox.push(frame(OUTBOX_MAX_BYTES)).unwrap();
        assert_eq!(outbox.push(frame(1)), Err(Overflow));
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let mut outbox = Outbox::default();
        for _ in 0..100 {
            outbox.push(frame(1)).unwrap();
        }
        while outbox.pop().is_some() {}
        assert!(outbox.frames.capacity() <= IDLE_SLOTS);
        outbox.push(frame(5)).unwrap();
        outbox.clear();
        assert_eq!((outbox.len(), outbox.bytes()), (0, 0));
    }
}
