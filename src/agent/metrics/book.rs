//! Bounded label values and the per-registry state behind `pullprobe_registry_ready` and
//! `pullprobe_registry_reason`.
//!
//! - A registry domain gets its own `registry` label value while fewer than `max_registries`
//!   are in use; later ones share `registry="other"`. A registry that leaves the node's targets
//!   ([`Book::retain`]) frees its slot.
//! - The state of a label is that of the node's pull paths to the registries behind it, as the
//!   agent's cycle decided them (`CycleOutcome::paths`): ready when every one of them works,
//!   else the reason of the first failing one (in name order, so it is stable from cycle to
//!   cycle). Each cycle hands over the complete set ([`Book::set_paths`]); registries that are
//!   no longer in it leave, with their TLS endpoints.

use std::collections::{BTreeMap, BTreeSet};

pub const OTHER: &str = "other";

/// What a label shows: ready, or the reason it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelState {
    pub ready: bool,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct Book {
    max_registries: usize,
    max_endpoints: usize,
    /// registry domain → its label (the domain itself, or `other`).
    registries: BTreeMap<String, String>,
    /// TLS endpoint `host:port` → (registry label, endpoint label).
    endpoints: BTreeMap<String, (String, String)>,
}

impl Book {
    pub fn new(max_registries: usize, max_endpoints: usize) -> Book {
        Book {
            max_registries,
            max_endpoints,
            registries: BTreeMap::new(),
            endpoints: BTreeMap::new(),
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

    /// The cycle's pull paths, (registry, `None` if it works or the reason it does not), replace
    /// the previous ones. Returns the labels no registry uses any more (their series are to be
    /// removed), the (registry label, endpoint label) pairs of TLS endpoints that went with them,
    /// and the state of every label in use.
    pub fn set_paths(&mut self, paths: &[(String, Option<String>)]) -> Retained {
        let keep: BTreeSet<String> = paths.iter().map(|(r, _)| r.clone()).collect();
        let before: BTreeSet<String> = self.registries.values().cloned().collect();
        self.registries.retain(|r, _| keep.contains(r));
        let mut sorted: Vec<&(String, Option<String>)> = paths.iter().collect();
        sorted.sort();
        let mut states: BTreeMap<String, LabelState> = BTreeMap::new();
        for (registry, reason) in sorted {
            let label = self.registry_label(registry);
            let s = states.entry(label).or_insert(LabelState {
                ready: true,
                reason: None,
            });
            if s.ready && reason.is_some() {
                *s = LabelState {
                    ready: false,
                    reason: reason.clone(),
                };
            }
        }
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
        Retained {
            gone,
            gone_endpoints,
            states: states.into_iter().collect(),
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

    fn p(r: &str, reason: Option<&str>) -> (String, Option<String>) {
        (r.to_string(), reason.map(str::to_string))
    }

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
        let r = b.set_paths(&[p("b", None)]);
        assert_eq!(r.gone, ["a".to_string(), OTHER.to_string()].into());
        assert_eq!(b.registry_label("d"), "d", "a's slot is free again");
    }

    #[test]
    fn a_label_is_ready_only_when_every_path_behind_it_works() {
        let mut b = Book::new(8, 8);
        let r = b.set_paths(&[
            p("r", None),
            p("r", Some("AuthCredentialsRejected")),
            p("s", None),
        ]);
        let st: BTreeMap<String, LabelState> = r.states.into_iter().collect();
        assert!(!st["r"].ready);
        assert_eq!(st["r"].reason.as_deref(), Some("AuthCredentialsRejected"));
        assert!(st["s"].ready && st["s"].reason.is_none());
        // Overflowed registries share `other`: one failing is enough; the first reason in name
        // order wins.
        let mut b = Book::new(1, 1);
        let r = b.set_paths(&[
            p("a", None),
            p("c", Some("TLSUnknownAuthority")),
            p("b", Some("ConnectRefused")),
        ]);
        let st: BTreeMap<String, LabelState> = r.states.into_iter().collect();
        assert_eq!(st[OTHER].reason.as_deref(), Some("ConnectRefused"));
        assert!(st["a"].ready);
    }
}
