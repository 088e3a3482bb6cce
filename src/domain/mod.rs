//! The domain layer (sans-IO): the entities of an instance, the rules that decide every read and
//! write (membership, roles, history visibility), and the records they produce for storage.
//! Nothing here touches a socket, a file, a runtime, the clock or the OS's randomness: the
//! authority (see `crate::authority`) drives it, passes "now" into every command and seeds the
//! [`entropy`] ids and tokens come from. Refusals are [`error::DomainError`] values; how they are
//! answered over HTTP is decided by `crate::api::error`. [`history`] is the in-memory reference
//! store of messages: the executable definition of the history queries both storage engines
//! implement.

pub mod community;
pub mod entropy;
pub mod error;
pub mod history;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod model;
pub mod rate;
pub mod records;
pub mod text;
pub mod views;
