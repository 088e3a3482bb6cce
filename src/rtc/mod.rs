//! Voice and video pieces that need no runtime (sans-IO): join tickets ([`ticket`]) and
//! ephemeral TURN credentials ([`turn`]). The SFU core and the signaling protocol come next
//! (wire contract A.8).

pub mod room;
pub mod ticket;
pub mod turn;
