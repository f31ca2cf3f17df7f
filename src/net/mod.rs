//! Sockets: the stream types clients and servers are reached over. Re-exports only.

pub mod frame;
mod stream;
mod tcp;
#[cfg(test)]
mod test_tls;
pub mod tls;
mod tls_legacy;

pub use frame::{read_frame, read_startup, read_with, ReadError};
pub use stream::{PeerAddr, Stream};
pub use tcp::{set_socket_buffer, TcpOptions};
pub use tls::{ClientTls, ServerTls};
