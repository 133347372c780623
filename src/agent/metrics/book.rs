//! Bounded label values and the per-registry state behind `pullprobe_registry_ready` and
//! `pullprobe_registry_reason`.
//!
//! - A registry domain gets its own `registry` label value while fewer than `max_registries`
//!   are in use; later ones share `registry="other"`. A registry that leaves the node's targets
//!   ([`Book::retain`]) frees its slot.
//! - The state of a label is that of the node's latest path check of each (registry,
//!   credential) behind it: ready when every one of them would pull, else the reason of the
//!   first failing one (in name order, so it is stable from cycle to cycle).

use std::collections::{BTreeMap, BTreeSet};

pub const OTHER: &str = "other";

/// The latest path check of one registry with one credential source.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    label: String,
    /// `None` = it would pull.
    reason: Option<&'static str>,
}

/// What a label shows: ready, or the reason it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelState {
    pub ready: bool,
    pub reason: Option<&'static str>,
}

#[derive(Debug)]
pub struct Book {
    max_registries: usize,
    max_endpoints: usize,
    /// registry domain → its label (the domain itself, or `other`).
    registries: BTreeMap<String, String>,
    /// TLS endpoint `host:port` → (registry label, endpoint label).
    endpoints: BTreeMap<String, (String, String)>,
    /// (registry domain, credential source) → latest path check.
    entries: BTreeMap<(String, String), Entry>,
}

impl Book {
    pub fn new(max_registries: usize, max_endpoints: usize) -> Book {
        Book {
            max_registries,
            max_endpoints,
            registries: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            entries: BTreeMap::new(),
        }
    }

    /// The bounded label of a registry domain (admitting it if there is room).
    pub fn registry_label(&mut self, registry: &str) -> String {
        if let Some(l) = self.registries.get(registry) {
            return l.clone();
        }
        let own = self.registries.values().filter(|l| *l != OTHER).count();
        let label = if own < self.max_registries && registry != OTHER {
            registry.to_string()
        } else {
            OTHER.to_string()
        };
        self.registries.insert(registry.to_string(), label.clone());
        label
    }

    /// The bounded label of a TLS endpoint of a registry label.
    pub fn endpoint_label(&mut self, registry_label: &str, endpoint: &str) -> String {
        if let Some((_, l)) = self.endpoints.get(endpoint) {
            return l.clone();
        }
        let own = self.endpoints.values().filter(|(_, l)| l != OTHER).count();
        let label = if own < self.max_endpoints && registry_label != OTHER {
            endpoint.to_string()
        } else {
            OTHER.to_string()
        };
        self.endpoints.insert(
            endpoint.to_string(),
            (registry_label.to_string(), label.clone()),
        );
        label
    }

    /// Records a path check; returns the label's new state.
    pub fn record_path(
        &mut self,
        registry: &str,
        credential: &str,
        reason: Option<&'static str>,
    ) -> (String, LabelState) {
        let label = self.registry_label(registry);
        self.entries.insert(
            (registry.to_string(), credential.to_string()),
            Entry {
                label: label.clone(),
                reason,
            },
        );
        let state = self.state(&label);
        (label, state)
    }

    /// The state of a label; `None` when no path check is behind it.
    fn state(&self, label: &str) -> LabelState {
        let mut reason = None;
        for e in self.entries.values().filter(|e| e.label == label) {
            if reason.is_none() {
                reason = e.reason;
            }
        }
        LabelState {
            ready: reason.is_none(),
            reason,
        }
    }

    /// Keeps only the registries in `keep`. Returns the labels that no registry uses any more
    /// (their series are to be removed), the (registry label, endpoint label) pairs of TLS
    /// endpoints that went with them, and the new state of the labels that remain in use.
    pub fn retain(&mut self, keep: &BTreeSet<String>) -> Retained {
        let before: BTreeSet<String> = self.registries.values().cloned().collect();
        self.registries.retain(|r, _| keep.contains(r));
        self.entries.retain(|(r, _), _| keep.contains(r));
        let after: BTreeSet<String> = self.registries.values().cloned().collect();
        let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
        let mut gone_endpoints = Vec::new();
        self.endpoints.retain(|_, (reg, ep)| {
            let keep = !gone.contains(reg);
            if !keep {
                gone_endpoints.push((reg.clone(), ep.clone()));
            }
            keep
        });
        let states = after
            .iter()
            .filter(|l| self.entries.values().any(|e| &e.label == *l))
            .map(|l| (l.clone(), self.state(l)))
            .collect();
        Retained {
            gone,
            gone_endpoints,
            states,
        }
    }
}

#[derive(Debug, Default)]
pub struct Retained {
    pub gone: BTreeSet<String>,
    pub gone_endpoints: Vec<(String, String)>,
    pub states: Vec<(String, LabelState)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_overflow_into_other_and_slots_are_freed() {
        let mut b = Book::new(2, 2);
        assert_eq!(b.registry_label("a"), "a");
        assert_eq!(b.registry_label("b"), "b");
        assert_eq!(b.registry_label("c"), OTHER);
        assert_eq!(b.registry_label("a"), "a", "stable");
        // A registry literally named "other" never gets a label of its own.
        let mut b2 = Book::new(5, 5);
        assert_eq!(b2.registry_label(OTHER), OTHER);
        let r = b.retain(&["b".to_string()].into());
        assert_eq!(r.gone, ["a".to_string(), OTHER.to_string()].into());
        assert_eq!(b.registry_label("d"), "d", "a's slot is free again");
    }

    #[test]
    fn a_label_is_ready_only_when_every_credential_pulls() {
        let mut b = Book::new(8, 8);
        let (_, s) = b.record_path("r", "node", None);
        assert!(s.ready);
        let (_, s) = b.record_path("r", "pull-secrets:ns/x", Some("AuthCredentialsRejected"));
        assert_eq!(s.reason, Some("AuthCredentialsRejected"));
        assert!(!s.ready);
        let (_, s) = b.record_path("r", "pull-secrets:ns/x", None);
        assert!(s.ready);
        // Overflowed registries share `other`: one failing is enough.
        let mut b = Book::new(1, 1);
        b.record_path("a", "", None);
        b.record_path("b", "", None);
        let (l, s) = b.record_path("c", "", Some("ConnectRefused"));
        assert_eq!((l.as_str(), s.ready), (OTHER, false));
    }
}
