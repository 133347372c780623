//! connect phase: TCP to each resolved address in order, falling back to the next on
//! failure (as Go's dialer does across the addresses of a host).

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::outcome::{Failure, Reason};

/// Connect to the first address that accepts. `timeout` bounds the whole phase; each
/// address gets an equal share of what is left, but at least one second, so a
/// blackholed first address does not starve a working second one.
pub async fn connect(
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut errors: Vec<(SocketAddr, Reason, String)> = Vec::new();
    for (i, ip) in addrs.iter().enumerate() {
        let addr = SocketAddr::new(*ip, port);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let remaining_addrs = (addrs.len() - i) as u32;
        let share = (left / remaining_addrs)
            .max(Duration::from_secs(1))
            .min(left);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Small request/response exchanges: do not wait for Nagle.
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => {
                let reason = match e.kind() {
                    ErrorKind::ConnectionRefused => Reason::ConnectRefused,
                    ErrorKind::TimedOut => Reason::ConnectTimeout,
                    ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                        Reason::ConnectUnreachable
                    }
                    _ => match e.raw_os_error() {
                        // EHOSTUNREACH / ENETUNREACH / EADDRNOTAVAIL on Linux.
                        Some(113) | Some(101) | Some(99) => Reason::ConnectUnreachable,
                        _ => Reason::ConnectUnreachable,
                    },
                };
                errors.push((addr, reason, crate::text::io_words(&e)));
            }
            Err(_) => errors.push((
                addr,
                Reason::ConnectTimeout,
                format!("no answer within {}", crate::text::human_duration(share)),
            )),
        }
    }
    if errors.is_empty() {
        return Err(Failure::new(
            Reason::ConnectTimeout,
            format!(
                "no address could be tried within {}",
                crate::text::human_duration(timeout)
            ),
        ));
    }
    // Report the most telling reason: a refusal proves the host is there, a timeout
    // suggests filtering; if every address failed the same way, that is the reason.
    let reason = if errors.iter().all(|(_, r, _)| *r == errors[0].1) {
        errors[0].1
    } else if errors.iter().any(|(_, r, _)| *r == Reason::ConnectTimeout) {
        Reason::ConnectTimeout
    } else {
        errors[errors.len() - 1].1
    };
    let detail = errors
        .iter()
        .map(|(a, _, m)| format!("{a}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Failure::new(reason, format!("TCP connect to {detail}")))
}
