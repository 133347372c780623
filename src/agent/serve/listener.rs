//! Accepting connections on the agent's listeners (main, plain or TLS, and health), so that
//! slow or many clients cannot grow the agent's memory: hyper's HTTP/1 with a header-read
//! timeout (hyper starts it again whenever a kept-alive connection goes idle, so it is also
//! the idle timeout), a TLS handshake timeout, an age cap per connection, a read buffer
//! bounded to what one request head needs, and connection caps — global (more connections
//! wait in the kernel's accept queue) and per client address (more are closed at once, so
//! one client cannot take the global cap from the others, the kubelet's probes included).
//!
//! Measured before these bounds (axum's `serve`, none of them): 4,000 clients trickling an
//! unfinished request head into the health listener took the agent from 9 to 86 MiB in 30 s
//! (`tests/agent_listeners.rs` holds it under 40 MiB now).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::HttpError;

/// A request head must arrive within this long, and a kept-alive connection is closed after
/// this long idle (Prometheus opens one per scrape when its interval is longer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished its TLS handshake by then is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection at most: a request head with the longest bearer token
/// accepted (`auth::MAX_TOKEN_LEN`, 8 KiB) fits; a longer head is answered 431.
const MAX_READ_BUFFER: usize = 32 * 1024;
/// After a failed `accept` (out of file descriptors, say), wait this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connection caps of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (TLS handshakes included); more wait in the accept queue.
    pub max_connections: usize,
    /// Connections open at once from one client address; more are closed when accepted.
    pub max_per_client: usize,
    /// After this long a connection takes no new request (hyper's graceful shutdown: an idle
    /// one closes at once)…
    pub max_age: Duration,
    /// …and the request in flight then gets this long to finish: the longest a request may
    /// take. A client that sends its body or reads its answer slowly is cut there.
    pub max_request: Duration,
}

impl Limits {
    /// The health listener: the kubelet's probes, a few at a time from the node's address.
    pub const HEALTH: Limits = Limits {
        max_connections: 64,
        max_per_client: 8,
        max_age: Duration::from_secs(30),
        max_request: Duration::from_secs(5),
    };

    /// The main listener: Prometheus and operators (through the API server's pod proxy
    /// every caller comes from the API server's address).
    pub const MAIN: Limits = Limits {
        max_connections: 256,
        max_per_client: 32,
        max_age: Duration::from_secs(60),
        max_request: Duration::from_secs(35),
    };
}

/// Bind `addr` now (so a port conflict fails the start), serve `app` on it in the
/// background within `limits`; over TLS when `tls` is given. Each request carries the
/// client's address as [`ConnectInfo`].
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let handle = tokio::spawn(accept_loop(listener, app, tls, limits));
    Ok((local, handle))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(Clients::new(limits.max_per_client));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(target: "pullprobe::http", error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Over its cap, the client's connection is closed at once (and the permit freed).
        let Some(slot) = clients.take(peer.ip()) else {
            continue;
        };
        let conn = Connection {
            peer,
            app: app.clone(),
            _held: (permit, slot),
        };
        tokio::spawn(conn.run(tcp, tls.clone(), limits));
    }
}

/// One accepted connection and the caps it holds until it closes.
struct Connection {
    peer: SocketAddr,
    app: Router,
    _held: (OwnedSemaphorePermit, ClientSlot),
}

impl Connection {
    async fn run(
        self,
        tcp: tokio::net::TcpStream,
        tls: Option<tokio_rustls::TlsAcceptor>,
        limits: Limits,
    ) {
        let Some(acceptor) = tls else {
            return self.http(tcp, limits).await;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
        if let Ok(Ok(stream)) = handshake.await {
            self.http(stream, limits).await;
        }
    }

    /// HTTP/1.1 on an accepted stream until the client, a timeout or the connection's age
    /// ends it.
    async fn http<S>(&self, stream: S, limits: Limits)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, peer) = (self.app.clone(), self.peer);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .max_buf_size(MAX_READ_BUFFER);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(limits.max_age) => conn.as_mut().graceful_shutdown(),
        }
        let _ = tokio::time::timeout(limits.max_request, conn).await;
    }
}

/// Open connections per client address. An address has an entry only while one of its
/// connections is open, so the map never holds more than the listener's global cap.
#[derive(Debug)]
struct Clients {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client; closing it (drop) frees the slot.
#[derive(Debug)]
struct ClientSlot {
    ip: IpAddr,
    clients: Arc<Clients>,
}

impl Clients {
    fn new(max: usize) -> Clients {
        Clients {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, unless it has `max` open already.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            ip,
            clients: self.clone(),
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_slots_are_capped_and_freed() {
        let c = Arc::new(Clients::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.take(a).unwrap();
        let s2 = c.take(mapped).expect("a second slot (the same client)");
        assert!(c.take(a).is_none(), "third connection of one client");
        let s3 = c.take(b).expect("another client is not affected");
        drop(s1);
        let s4 = c.take(a).expect("a closed connection frees its slot");
        drop((s2, s3, s4));
        assert_eq!(c.tracked(), 0, "no entry outlives its connections");
    }
}
