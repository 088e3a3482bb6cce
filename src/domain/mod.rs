//! The domain: chat rules that need no runtime, sockets or storage.

pub mod text;
