//! The realtime core (wire-contract A.7 and B.3), sans-IO: it imports no executor and no
//! socket, reads no clock, and is tested in microseconds.
//!
//! - the frames themselves (client frames in, server frames out) are `crate::wire::realtime`,
//!   re-exported here for the realtime core's callers;
//! - [`presence`]: per-channel subscribers, presence and typing, held by the shard that owns the
//!   channel; its methods return [`Delivery`]s for the caller to route;
//! - [`outbox`]: the bounded per-socket queue whose overflow disconnects a slow consumer;
//! - [`resume`]: the per-server window of recent events for `since_event_id`;
//! - [`rate`]: the per-socket token bucket of relayed frames (typing here, media state in
//!   `rtc::room`).
//!
//! The driver that owns the sockets is `runtime::websocket::RealtimeSocket`.

pub mod outbox;
pub mod presence;
pub mod rate;
pub mod resume;

pub use outbox::{OUTBOX_MAX_BYTES, OUTBOX_MAX_FRAMES, Outbox, Overflow};
pub use presence::{
    Delivery, FrameContext, MAX_SUBSCRIPTIONS_PER_SOCKET, Member, Presence, PresenceError,
    SocketRef, TYPING_RELAY_MIN_INTERVAL, TYPING_TIMEOUT, TYPING_UPDATES_PER_SECOND,
};
pub use resume::{EventRing, RESUME_WINDOW_EVENTS, Resume};
