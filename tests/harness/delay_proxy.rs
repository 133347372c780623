//! Delaying TCP proxy (the kernel here has no netem): listens on 127.0.0.1:random and forwards to
//! `target`, delaying every chunk in each direction, or hanging / resetting connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::BgServer;

#[derive(Clone, Copy, Debug)]
pub enum ProxyMode {
    /// Forward, sleeping this long before writing each chunk, in each direction (one-way delay; an
    /// RTT of 50 ms is `Delay(25 ms)`).
    Delay(Duration),
    /// Accept and never answer nor forward (connect succeeds, then silence).
    Hang,
    /// Accept, wait for the client's first bytes (a TLS ClientHello), then close with RST
    /// (SO_LINGER 0): a reset mid-handshake, never racing the client's connect().
    Reset,
    /// Forward `n` bytes of the server's answer, then close the connection.
    TruncateAfter(usize),
}

pub struct DelayProxy {
    server: BgServer,
    connections: Arc<AtomicUsize>,
}

impl DelayProxy {
    pub fn start(target: SocketAddr, mode: ProxyMode) -> DelayProxy {
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let server = BgServer::start("127.0.0.1:0".parse().expect("addr"), move |l| async move {
            loop {
                let Ok((client, _)) = l.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(client, target, mode));
            }
        });
        DelayProxy {
            server,
            connections,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }
    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.server.addr().port())
    }
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

// Latency, not a bandwidth cap: a reader stamps each chunk on arrival and a writer releases it at
// arrival + delay, so chunks in flight overlap as on a long link.
async fn pump<R, W>(mut r: R, mut w: W, delay: Duration, limit: Option<usize>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let mut left = limit;
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at + delay).await;
        let n = match left {
            Some(l) => chunk.len().min(l),
            None => chunk.len(),
        };
        if w.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        if let Some(l) = left.as_mut() {
            *l -= n;
            if *l == 0 {
                break;
            }
        }
    }
    reader.abort();
    let _ = w.shutdown().await;
}

async fn handle(mut client: tokio::net::TcpStream, target: SocketAddr, mode: ProxyMode) {
    match mode {
        ProxyMode::Hang => {
            let _keep = client;
            std::future::pending::<()>().await;
        }
        ProxyMode::Reset => {
            let mut first = [0u8; 1];
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut client, &mut first),
            )
            .await;
            let _ = client.set_zero_linger();
            drop(client);
        }
        ProxyMode::Delay(_) | ProxyMode::TruncateAfter(_) => {
            let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                let _ = client.set_zero_linger();
                return;
            };
            let (delay, limit) = match mode {
                ProxyMode::Delay(d) => (d, None),
                ProxyMode::TruncateAfter(n) => (Duration::ZERO, Some(n)),
                _ => (Duration::ZERO, None),
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let up = pump(cr, uw, delay, None);
            let down = pump(ur, cw, delay, limit);
            if limit.is_some() {
                // Truncation: stop both directions once the answer is cut.
                tokio::select! { _ = up => {}, _ = down => {} }
            } else {
                tokio::join!(up, down);
            }
        }
    }
}
