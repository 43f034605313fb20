//! The connection seam: how a node accepts connections on its client and
//! peer ports and how it opens connections to peers. keeld uses TCP; an
//! in-process cluster (tests, simulation) uses [`MemNetwork`], whose
//! connections are in-memory pipes between nodes of one process.
//!
//! ```text
//!  server: Incoming (a stream of Conn) ──► tonic serve_with_incoming_shutdown (TLS on top when configured)
//!  client: PeerChannels ──► Connector::connect(addr) ──► Conn ──► tonic connect_with_connector (TLS on top)
//!  Conn = Tcp(TcpStream) | Mem(DuplexStream)
//! ```
//!
//! Everything above the seam — gRPC, TLS, the member-certificate check, the
//! peer protocol — is the same code whichever side of it the bytes travel.

use crate::limits::{MEM_ACCEPT_QUEUE_MAX, MEM_CONN_BUFFER_BYTES, TCP_KEEPALIVE_MS};
use futures::Stream;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// One connection, over TCP or in memory.
#[derive(Debug)]
pub enum Conn {
    /// A TCP connection.
    Tcp(TcpStream),
    /// One end of an in-memory pipe.
    Mem(DuplexStream),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Mem(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Mem(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Mem(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Mem(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Tcp(stream) => stream.connect_info(),
            Conn::Mem(_) => TcpConnectInfo { local_addr: None, remote_addr: None },
        }
    }
}

/// Connections accepted on one port.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// Accepted TCP connections with TCP_NODELAY (gRPC frames are small and
/// latency bound; Nagle's algorithm adds ~40 ms stalls) and TCP keep-alive.
pub fn tcp_incoming(listener: TcpListener) -> Incoming {
    use futures::StreamExt as _;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_millis(TCP_KEEPALIVE_MS)));
    Box::pin(incoming.map(|accepted| accepted.map(Conn::Tcp)))
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

/// Opens connections to `host:port` addresses.
pub trait Connector: std::fmt::Debug + Send + Sync + 'static {
    /// A connection to `addr`.
    fn connect(&self, addr: &str) -> ConnectFuture;
}

/// Addresses in one process: each listening address has a queue of
/// incoming in-memory connections. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct MemNetwork {
    listeners: Arc<Mutex<HashMap<String, tokio::sync::mpsc::Sender<Conn>>>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::mpsc::Sender<Conn>>> {
        self.listeners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Listens on `addr` (any name: nothing is bound); replaces an earlier
    /// listener there.
    pub fn listen(&self, addr: &str) -> Incoming {
        let (sender, receiver) = tokio::sync::mpsc::channel(MEM_ACCEPT_QUEUE_MAX);
        self.lock().insert(addr.to_owned(), sender);
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver).map_ok())
    }

    /// Stops listening on `addr`: new connections are refused (those open
    /// stay open until either side drops them).
    pub fn close(&self, addr: &str) {
        self.lock().remove(addr);
    }
}

/// `Ok` for every accepted connection.
trait MapOk: Stream<Item = Conn> + Sized {
    fn map_ok(self) -> futures::stream::Map<Self, fn(Conn) -> io::Result<Conn>> {
        futures::StreamExt::map(self, Ok)
    }
}

impl<S: Stream<Item = Conn>> MapOk for S {}

impl Connector for MemNetwork {
    fn connect(&self, addr: &str) -> ConnectFuture {
        let listener = self.lock().get(addr).cloned();
        let addr = addr.to_owned();
        Box::pin(async move {
            let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, format!("nothing listens on {addr}"));
            let listener = listener.ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(MEM_CONN_BUFFER_BYTES);
            listener.send(Conn::Mem(theirs)).await.map_err(|_| refused())?;
            Ok(Conn::Mem(ours))
        })
    }
}

/// The host:port of a URI tonic hands a connector.
pub fn uri_addr(uri: &http::Uri) -> io::Result<String> {
    let authority = uri.authority().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?;
    Ok(authority.as_str().to_owned())
}

/// A tonic connector (a `tower::Service<Uri>`) over `connector`.
pub fn tonic_connector(
    connector: Arc<dyn Connector>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<Conn>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<hyper_util::rt::TokioIo<Conn>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        let connector = Arc::clone(&connector);
        async move {
            let addr = uri_addr(&uri)?;
            connector.connect(&addr).await.map(hyper_util::rt::TokioIo::new)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn in_memory_connections_carry_bytes_both_ways_and_closed_addresses_refuse() -> io::Result<()> {
        let network = MemNetwork::new();
        let mut incoming = network.listen("node-1:7401");
        let mut client = network.connect("node-1:7401").await?;
        let mut server = incoming.next().await.ok_or_else(|| io::Error::other("no connection"))??;
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await?;
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        network.close("node-1:7401");
        let refused = network.connect("node-1:7401").await.expect_err("closed");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        Ok(())
    }
}
