//! Bounded label values and the per-registry state behind `pullprobe_registry_ready` and
//! `pullprobe_registry_reason`.
//!
//! - A registry domain gets its own `registry` label value while fewer than `max_registries`
//!   are in use; later ones share `registry="other"`. A registry that leaves the node's targets
//!   ([`Book::set_scoped_paths`]) frees its slot.
//! - The node's own registries (scope `node`, `agent/scope.rs`) come first: each cycle they
//!   take free slots in name order before tenants' registries, and tenants' registries hold
//!   at most half of the slots (a tenant naming 64 hosts cannot fold the node's registries
//!   into `other`, whatever order they were first seen in after a restart).
//! - The state of a label is that of the node's pull paths to the registries behind it, as the
//!   agent's cycle decided them (`CycleOutcome::paths`): ready when every one of them works,
//!   else the reason of the first failing one (in name order, so it is stable from cycle to
//!   cycle). Each cycle hands over the complete set ([`Book::set_scoped_paths`]); registries that are
//!   no longer in it leave, with their TLS endpoints.

use std::collections::{BTreeMap, BTreeSet};

pub const OTHER: &str = "other";

/// What a label shows: ready, or the reason it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelState {
    pub ready: bool,
    pub reason: Option<String>,
    /// A registry of the node's own scope is behind the label.
    pub node: bool,
}

#[derive(Debug)]
pub struct Book {
    max_registries: usize,
    max_endpoints: usize,
    /// registry domain → its label (the domain itself, or `other`).
    registries: BTreeMap<String, String>,
    /// TLS endpoint `host:port` → (registry label, endpoint label).
    endpoints: BTreeMap<String, (String, String)>,
    /// Registries only tenants use, as of the last [`Book::set_scoped_paths`] (a registry
    /// not seen there yet counts as the node's).
    workload: BTreeSet<String>,
}

impl Book {
    pub fn new(max_registries: usize, max_endpoints: usize) -> Book {
        Book {
            max_registries,
            max_endpoints,
            registries: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            workload: BTreeSet::new(),
        }
    }

    /// The bounded label of a registry domain (admitting it if there is room: any free slot
    /// for the node's registries, at most half of them for the others).
    pub fn registry_label(&mut self, registry: &str) -> String {
        if let Some(l) = self.registries.get(registry) {
            return l.clone();
        }
        let label = if registry != OTHER && self.has_room(!self.workload.contains(registry)) {
            registry.to_string()
        } else {
            OTHER.to_string()
        };
        self.registries.insert(registry.to_string(), label.clone());
        label
    }

    fn has_room(&self, node: bool) -> bool {
        let own = |node_scope: bool| {
            self.registries
                .iter()
                .filter(|(r, l)| *l != OTHER && self.workload.contains(*r) != node_scope)
                .count()
        };
        let all = own(true) + own(false);
        all < self.max_registries && (node || own(false) < self.max_registries / 2)
    }

    /// Tenants' registries over half of the slots fold into `other` (the last in name order
    /// first); then the node's registries folded into `other` get a slot where there is room.
    fn rebalance(&mut self) {
        let tenants: Vec<String> = self
            .registries
            .iter()
            .filter(|(r, l)| *l != OTHER && self.workload.contains(*r))
            .map(|(r, _)| r.clone())
            .collect();
        for r in tenants.iter().skip(self.max_registries / 2) {
            self.registries.insert(r.clone(), OTHER.to_string());
        }
        let folded: Vec<String> = self
            .registries
            .iter()
            .filter(|(r, l)| *l == OTHER && !self.workload.contains(*r) && r.as_str() != OTHER)
            .map(|(r, _)| r.clone())
            .collect();
        for r in folded {
            if !self.has_room(true) {
                break;
            }
            self.registries.insert(r.clone(), r);
        }
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
    #[cfg(test)]
    pub fn set_paths(&mut self, paths: &[(String, Option<String>)]) -> Retained {
        let scoped: Vec<(String, Option<String>, bool)> = paths
            .iter()
            .map(|(r, why)| (r.clone(), why.clone(), true))
            .collect();
        self.set_scoped_paths(&scoped)
    }

    /// The cycle's pull paths with each registry's scope (`true`: the node's own). States say
    /// which labels are the node's (any registry behind them is).
    pub fn set_scoped_paths(&mut self, paths: &[(String, Option<String>, bool)]) -> Retained {
        let keep: BTreeSet<String> = paths.iter().map(|(r, _, _)| r.clone()).collect();
        let before: BTreeSet<String> = self.registries.values().cloned().collect();
        self.registries.retain(|r, _| keep.contains(r));
        self.workload = paths
            .iter()
            .filter(|(_, _, node)| !*node)
            .map(|(r, _, _)| r.clone())
            .collect();
        self.rebalance();
        // The node's registries first, each group in name order.
        let mut sorted: Vec<&(String, Option<String>, bool)> = paths.iter().collect();
        sorted.sort_by(|a, b| (!a.2, &a.0, &a.1).cmp(&(!b.2, &b.0, &b.1)));
        let mut states: BTreeMap<String, LabelState> = BTreeMap::new();
        for (registry, reason, node) in sorted {
            let label = self.registry_label(registry);
            let s = states.entry(label).or_insert(LabelState {
                ready: true,
                reason: None,
                node: *node,
            });
            s.node |= *node;
            if s.ready && reason.is_some() {
                s.ready = false;
                s.reason = reason.clone();
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

    fn scoped(r: &str, node: bool) -> (String, Option<String>, bool) {
        (r.to_string(), None, node)
    }

    #[test]
    fn the_nodes_registries_get_slots_before_tenants() {
        let mut b = Book::new(4, 4);
        // After a restart tenants' registries are seen first (their probes finish first).
        for t in ["t1", "t2", "t3", "t4"] {
            b.registry_label(t);
        }
        let r = b.set_scoped_paths(&[
            scoped("t1", false),
            scoped("t2", false),
            scoped("t3", false),
            scoped("t4", false),
            scoped("z-node", true),
            scoped("y-node", true),
        ]);
        let st: BTreeMap<String, LabelState> = r.states.into_iter().collect();
        assert!(st["y-node"].node && st["z-node"].node, "{st:?}");
        let own_tenants = ["t1", "t2", "t3", "t4"]
            .iter()
            .filter(|t| st.contains_key(**t))
            .count();
        assert_eq!(own_tenants, 2, "tenants hold at most half: {st:?}");
        assert!(!st[OTHER].node);
        // A tenant's new registry gets no slot of its own.
        b.workload.insert("t5".into());
        assert_eq!(b.registry_label("t5"), OTHER);
    }
}
