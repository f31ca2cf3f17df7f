//! Sockets: the stream types clients and servers are reached over. Re-exports only.

mod stream;
mod tcp;

pub use stream::{PeerAddr, Stream};
pub use tcp::TcpOptions;
