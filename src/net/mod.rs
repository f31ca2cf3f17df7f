//! Sockets: the stream types clients and servers are reached over. Re-exports only.

pub mod frame;
mod stream;
mod tcp;
pub mod tls;

pub use frame::{read_frame, ReadError};
pub use stream::{PeerAddr, Stream};
pub use tcp::TcpOptions;
pub use tls::{ClientTls, ServerTls};
