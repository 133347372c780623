//! Where a registry's answer may send a probe. The agent runs in the node's network
//! namespace (`hostNetwork`), so a token realm or a redirect's `Location` naming
//! `127.0.0.1`, `169.254.169.254` (a cloud's metadata service) or one of the node's own
//! addresses would make it call the node's local services on a tenant's behalf. Such a
//! target is refused unless the endpoint itself (the registry or mirror the runtime is
//! configured for) is in that same class: a registry on `127.0.0.1` may redirect to
//! `127.0.0.1`. Names are checked after resolution, on the addresses actually dialled.
//!
//! The runtimes follow such redirects (Go's `http.Client` has no such rule), so a refusal
//! is pullprobe's own verdict, with its own reasons ([`Reason::RedirectRefused`],
//! [`Reason::AuthRealmRefused`]).

use std::net::IpAddr;

use super::outcome::{Failure, Reason};

/// The address classes a registry answer may not reach on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// `127.0.0.0/8`, `::1`, and the unspecified `0.0.0.0` / `::` (which reach the host).
    Loopback,
    /// `169.254.0.0/16` (cloud metadata services live there), `fe80::/10`.
    LinkLocal,
    /// An address of one of the node's own interfaces.
    Node,
}

impl Class {
    fn words(self) -> &'static str {
        match self {
            Class::Loopback => "loopback",
            Class::LinkLocal => "link-local",
            Class::Node => "one of the node's own addresses",
        }
    }
}

/// The class of `ip` given the node's own addresses; `None` for any other address.
pub fn classify(ip: IpAddr, node: &[IpAddr]) -> Option<Class> {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if ip.is_loopback() || ip.is_unspecified() {
        Some(Class::Loopback)
    } else if link_local {
        Some(Class::LinkLocal)
    } else if node.contains(&ip) {
        Some(Class::Node)
    } else {
        None
    }
}

/// The node's own interface addresses (the network namespace the process runs in).
/// Unreadable interfaces leave the list empty: loopback and link-local still apply.
pub fn node_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// What one attempt has learnt: the classes its endpoint's own addresses are in, and
/// (once needed) the node's addresses.
#[derive(Debug, Default)]
pub struct Guard {
    endpoint_classes: Vec<Class>,
    node: Option<Vec<IpAddr>>,
}

impl Guard {
    /// The endpoint's host resolved to `addrs`: their classes become allowed targets.
    pub fn endpoint_resolved(&mut self, addrs: &[IpAddr]) {
        for a in addrs {
            let node = self.node.get_or_insert_with(node_addresses);
            if let Some(c) = classify(*a, node) {
                if !self.endpoint_classes.contains(&c) {
                    self.endpoint_classes.push(c);
                }
            }
        }
    }

    /// Of the addresses `host` (not the endpoint) resolved to, those a request may be
    /// sent to; a failure when none is left.
    pub fn screen(&mut self, host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, Failure> {
        let node = self.node.get_or_insert_with(node_addresses);
        let mut refused = None;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| match classify(*a, node) {
                Some(c) if !self.endpoint_classes.contains(&c) => {
                    refused.get_or_insert((*a, c));
                    false
                }
                _ => true,
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some((addr, class))) => Err(Failure::new(
                Reason::RedirectRefused,
                format!(
                    "{} resolves to {addr}, {}, and the registry is not there: a registry's answer may not send the node's requests to it",
                    crate::redact::text_max(host, 256),
                    class.words()
                ),
            )),
            _ => Ok(allowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        let node = [ip("10.0.0.5"), ip("fd00::5")];
        for (a, want) in [
            ("127.0.0.1", Some(Class::Loopback)),
            ("127.9.9.9", Some(Class::Loopback)),
            ("::1", Some(Class::Loopback)),
            ("0.0.0.0", Some(Class::Loopback)),
            ("::ffff:127.0.0.1", Some(Class::Loopback)),
            ("169.254.169.254", Some(Class::LinkLocal)),
            ("::ffff:169.254.169.254", Some(Class::LinkLocal)),
            ("fe80::1", Some(Class::LinkLocal)),
            ("febf::1", Some(Class::LinkLocal)),
            ("10.0.0.5", Some(Class::Node)),
            ("fd00::5", Some(Class::Node)),
            ("10.0.0.6", None),
            ("fec0::1", None),
            ("93.184.216.34", None),
        ] {
            assert_eq!(classify(ip(a), &node), want, "{a}");
        }
    }

    #[test]
    fn a_target_in_the_endpoints_class_is_allowed_others_refused() {
        let mut g = Guard {
            node: Some(vec![ip("10.0.0.5")]),
            ..Guard::default()
        };
        g.endpoint_resolved(&[ip("10.99.0.1")]);
        let f = g
            .screen("metadata.example", vec![ip("169.254.169.254")])
            .unwrap_err();
        assert_eq!(f.reason, Reason::RedirectRefused);
        assert!(f.message.contains("link-local"), "{}", f.message);
        assert!(g.screen("lo", vec![ip("127.0.0.1")]).is_err());
        assert!(g.screen("node", vec![ip("10.0.0.5")]).is_err());
        // A name resolving to a refused and an allowed address: only the allowed is dialled.
        assert_eq!(
            g.screen("mixed", vec![ip("127.0.0.1"), ip("10.99.0.2")])
                .unwrap(),
            vec![ip("10.99.0.2")]
        );
        // A registry on loopback may send its clients to loopback.
        let mut g = Guard {
            node: Some(Vec::new()),
            ..Guard::default()
        };
        g.endpoint_resolved(&[ip("127.0.0.1")]);
        assert!(g.screen("cdn", vec![ip("127.0.0.2")]).is_ok());
        assert!(g.screen("md", vec![ip("169.254.169.254")]).is_err());
    }
}
