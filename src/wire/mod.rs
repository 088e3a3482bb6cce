//! The frames of the two WebSocket protocols, sans-IO: what a client may send, parsed into typed
//! requests, and every server frame, encoded. Bytes in, values out and values in, bytes out;
//! the sockets, their WebSocket framing (`runtime::websocket`) and what a request does
//! (`api::realtime`, `api::signaling`) are elsewhere.
//!
//! - [`realtime`]: the realtime socket (wire contract A.7): [`realtime::parse_client_frame`] in,
//!   [`realtime::encode_frame`] / [`realtime::error_frame`] out (`{type, payload, event_id,
//!   server_id, timestamp}`, encoded once and shared by every recipient);
//! - [`signaling`]: the voice signaling socket (A.8): [`signaling::parse_signaling_frame`] in,
//!   [`signaling::frame`] / [`signaling::error_frame`] out (`{type, payload}`).
//!
//! One module for both so that a frame shape is written down once: the realtime core, the
//! voice rooms, the authority's event frames and the endpoints all encode through here.

pub mod realtime;
pub mod signaling;
