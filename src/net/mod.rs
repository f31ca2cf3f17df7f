//! Sockets: the stream types clients and servers are reached over. Re-exports only.

mod stream;

pub use stream::{PeerAddr, Stream};
