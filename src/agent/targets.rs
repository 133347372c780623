//! What to probe: images of the node's pods (containers, init and ephemeral containers)
//! plus the config's images, deduplicated into one probe per distinct (endpoints,
//! repository, reference, credential source), and one path check per (registry host,
//! credential source).
//!
//! No Kubernetes types here: `k8s::pods` turns a Pod into a [`PodInfo`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::reference::ImageRef;
pub use crate::report::records::{PodInfo, PodRef};

/// Which credentials a probe uses: the node's own (kubelet config.json, credential
/// providers, runtime config) or a pod's pull secrets (tried first by the kubelet, then
/// the node's). Pull secrets are distinguished only when fetching them is enabled.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredRef {
    Node,
    PullSecrets {
        namespace: String,
        names: Vec<String>,
    },
}

impl CredRef {
    pub fn is_node(&self) -> bool {
        matches!(self, CredRef::Node)
    }
}

impl std::fmt::Display for CredRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredRef::Node => f.write_str("node"),
            CredRef::PullSecrets { namespace, names } => {
                write!(f, "pull-secrets:{namespace}/{}", names.join(","))
            }
        }
    }
}

/// Dedup key of an image probe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TargetKey {
    /// Identity of the endpoint list the node would use (see [`plan_key`]).
    pub plan: String,
    pub repository: String,
    pub reference: String,
    pub cred: CredRef,
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}{}{} [{}]",
            self.repository, sep, self.reference, self.cred
        )
    }
}

/// One image probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageTarget {
    pub key: TargetKey,
    #[serde(serialize_with = "ser_display")]
    pub image: ImageRef,
    /// The registry domain as written in references (`docker.io`): budget and metrics key.
    pub registry: String,
    pub pods: Vec<PodRef>,
    pub from_config: bool,
}

/// One per-node path check: a registry's endpoint list (plan) with the node's own
/// credentials, probed through a representative image. A pod's pull secrets do not make
/// their own path checks: reaching the registry is the node's question, the secret's
/// acceptance is the pod's (its image check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostCheck {
    pub registry: String,
    pub representative: TargetKey,
    #[serde(serialize_with = "ser_display")]
    pub image: ImageRef,
}

/// An image string from a pod that does not parse (a workload problem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidImage {
    pub image: String,
    pub pod: Option<PodRef>,
    pub error: String,
}

/// Which cap left a pod's image unchecked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `tenancy.max_images_per_pod`.
    ImagesPerPod(usize),
    /// `tenancy.max_targets_per_namespace`.
    TargetsPerNamespace(usize),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::ImagesPerPod(n) => write!(
                f,
                "the pod has more than {n} images (tenancy.max_images_per_pod)"
            ),
            Limit::TargetsPerNamespace(n) => write!(
                f,
                "the namespace's pods already use {n} images (tenancy.max_targets_per_namespace)"
            ),
        }
    }
}

/// Images of a pod left unchecked by a cap: one record per pod and cap, with a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub pod: PodRef,
    pub limit: Limit,
    pub images: usize,
}

/// The caps on what pods can make the agent probe; pods of trusted namespaces and the
/// config's images are not capped.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub images_per_pod: usize,
    pub targets_per_namespace: usize,
    pub trusted_namespaces: BTreeSet<String>,
}

impl Limits {
    /// No caps (unit tests, the CLI).
    pub fn none() -> Limits {
        Limits {
            images_per_pod: usize::MAX,
            targets_per_namespace: usize::MAX,
            trusted_namespaces: BTreeSet::new(),
        }
    }
}

/// The deduplicated targets of one cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSet {
    pub images: BTreeMap<TargetKey, ImageTarget>,
    /// Keyed by plan key.
    pub hosts: BTreeMap<String, HostCheck>,
    pub invalid: Vec<InvalidImage>,
    /// Pods whose images a cap left unchecked.
    pub over_limit: Vec<OverLimit>,
    /// Registry domains used by pods of trusted namespaces.
    pub trusted_registries: BTreeSet<String>,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The registry host alone as the plan key: the key without a node config (unit tests).
pub fn host_key(image: &ImageRef) -> String {
    image.registry_host()
}

impl TargetSet {
    /// Build the set. `pull_secrets` = fetching pull secrets is enabled; otherwise every
    /// probe uses the node's credentials and pods' secrets do not split targets.
    /// `key` names the endpoint list of an image ([`plan_key`] or [`plan_key_of`]).
    pub fn build(
        pods: &[PodInfo],
        config_images: &[String],
        pull_secrets: bool,
        key: &dyn Fn(&ImageRef) -> String,
    ) -> TargetSet {
        Self::build_limited(pods, config_images, pull_secrets, key, &Limits::none())
    }

    /// [`TargetSet::build`] with the tenancy caps applied to pods of untrusted namespaces.
    pub fn build_limited(
        pods: &[PodInfo],
        config_images: &[String],
        pull_secrets: bool,
        key: &dyn Fn(&ImageRef) -> String,
        limits: &Limits,
    ) -> TargetSet {
        let mut set = TargetSet::default();
        for image in config_images {
            set.add(image, None, CredRef::Node, key);
        }
        // Pods in a stable order, so the same pods win a namespace's cap every cycle.
        let mut pods: Vec<&PodInfo> = pods.iter().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
        let mut per_ns: BTreeMap<&str, BTreeSet<TargetKey>> = BTreeMap::new();
        for pod in pods {
            set.add_pod(pod, pull_secrets, key, limits, &mut per_ns);
        }
        for t in set.images.values_mut() {
            t.pods.sort();
            t.pods.dedup();
        }
        // One path check per plan: the first image in key order represents it, so the
        // choice is stable from cycle to cycle (a 404 for it still proves the path).
        for (key, t) in &set.images {
            set.hosts
                .entry(key.plan.clone())
                .or_insert_with(|| HostCheck {
                    registry: t.registry.clone(),
                    representative: key.clone(),
                    image: t.image.clone(),
                });
        }
        set
    }

    fn add_pod<'p>(
        &mut self,
        pod: &'p PodInfo,
        pull_secrets: bool,
        key: &dyn Fn(&ImageRef) -> String,
        limits: &Limits,
        per_ns: &mut BTreeMap<&'p str, BTreeSet<TargetKey>>,
    ) {
        let pod_ref = PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            pull_secrets: pod.pull_secrets.clone(),
        };
        let cred = if pull_secrets && !pod.pull_secrets.is_empty() {
            let mut names = pod.pull_secrets.clone();
            names.sort();
            names.dedup();
            CredRef::PullSecrets {
                namespace: pod.namespace.clone(),
                names,
            }
        } else {
            CredRef::Node
        };
        let trusted = limits.trusted_namespaces.contains(&pod.namespace);
        let mut skipped: BTreeMap<Limit, usize> = BTreeMap::new();
        for (i, image) in pod.images.iter().enumerate() {
            if !trusted && i >= limits.images_per_pod {
                *skipped
                    .entry(Limit::ImagesPerPod(limits.images_per_pod))
                    .or_default() += 1;
                continue;
            }
            let Some(k) = self.add(image, Some(&pod_ref), cred.clone(), key) else {
                continue;
            };
            if trusted {
                self.trusted_registries
                    .insert(self.images[&k].registry.clone());
                continue;
            }
            let ns = per_ns.entry(pod.namespace.as_str()).or_default();
            if ns.contains(&k) || ns.len() < limits.targets_per_namespace {
                ns.insert(k);
                continue;
            }
            // Over the namespace's cap: undo this pod's use of the target.
            self.unuse(&k, &pod_ref);
            *skipped
                .entry(Limit::TargetsPerNamespace(limits.targets_per_namespace))
                .or_default() += 1;
        }
        for (limit, images) in skipped {
            self.over_limit.push(OverLimit {
                pod: pod_ref.clone(),
                limit,
                images,
            });
        }
    }

    /// Take `pod` off the target `k`; a target no one uses any more goes.
    fn unuse(&mut self, k: &TargetKey, pod: &PodRef) {
        if let Some(t) = self.images.get_mut(k) {
            t.pods.retain(|p| p != pod);
            if t.pods.is_empty() && !t.from_config {
                self.images.remove(k);
            }
        }
    }

    fn add(
        &mut self,
        image: &str,
        pod: Option<&PodRef>,
        cred: CredRef,
        plan: &dyn Fn(&ImageRef) -> String,
    ) -> Option<TargetKey> {
        let parsed = match ImageRef::parse(image) {
            Ok(r) => r,
            Err(e) => {
                self.invalid.push(InvalidImage {
                    image: crate::redact::text_max(image, INVALID_IMAGE_MAX),
                    pod: pod.cloned(),
                    error: e.to_string(),
                });
                return None;
            }
        };
        let key = TargetKey {
            plan: plan(&parsed),
            repository: parsed.repository(),
            reference: parsed.reference().to_string(),
            cred,
        };
        let entry = self
            .images
            .entry(key.clone())
            .or_insert_with(|| ImageTarget {
                key: key.clone(),
                registry: parsed.domain.clone(),
                image: parsed,
                pods: Vec::new(),
                from_config: false,
            });
        match pod {
            Some(p) => entry.pods.push(p.clone()),
            None => entry.from_config = true,
        }
        Some(key)
    }
}

/// Longest invalid image string kept (it comes from any pod and ends up in Events).
const INVALID_IMAGE_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, images: &[&str], secrets: &[&str]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            images: images.iter().map(|s| s.to_string()).collect(),
            pull_secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn spellings_of_one_image_dedup_into_one_probe() {
        let pods = vec![
            pod("a", "p1", &["nginx", "busybox:1.36"], &[]),
            pod(
                "b",
                "p2",
                &[
                    "docker.io/library/nginx:latest",
                    "index.docker.io/library/nginx",
                ],
                &[],
            ),
        ];
        let set = TargetSet::build(&pods, &["nginx:latest".to_string()], false, &host_key);
        assert_eq!(set.images.len(), 2);
        let nginx = set
            .images
            .values()
            .find(|t| t.key.repository == "docker.io/library/nginx")
            .unwrap();
        assert_eq!(nginx.pods.len(), 2);
        assert!(nginx.from_config);
        // Both images are on one registry host with one credential source: one path check.
        assert_eq!(set.hosts.len(), 1);
        let h = set.hosts.values().next().unwrap();
        assert_eq!(h.registry, "docker.io");
    }

    #[test]
    fn tag_and_digest_are_distinct_targets() {
        let d = format!("sha256:{}", "a".repeat(64));
        let pods = vec![pod(
            "a",
            "p",
            &[
                "quay.io/x/y:1",
                &format!("quay.io/x/y@{d}"),
                "quay.io/x/y:2",
            ],
            &[],
        )];
        let set = TargetSet::build(&pods, &[], false, &host_key);
        assert_eq!(set.images.len(), 3);
        assert_eq!(set.hosts.len(), 1);
    }

    #[test]
    fn pull_secrets_split_credential_sources_only_when_enabled() {
        let pods = vec![
            pod("a", "p1", &["reg.example/app:1"], &["s2", "s1"]),
            pod("a", "p2", &["reg.example/app:1"], &["s1", "s2", "s1"]),
            pod("b", "p3", &["reg.example/app:1"], &["s1"]),
            pod("c", "p4", &["reg.example/app:1"], &[]),
        ];
        let off = TargetSet::build(&pods, &[], false, &host_key);
        assert_eq!(off.images.len(), 1);
        assert_eq!(off.hosts.len(), 1);
        let on = TargetSet::build(&pods, &[], true, &host_key);
        // (a: s1,s2), (b: s1), node: three image checks, but one path check with the
        // node's own credentials.
        assert_eq!(on.images.len(), 3);
        assert_eq!(on.hosts.len(), 1);
    }

    #[test]
    fn hosts_get_one_path_check_each() {
        let pods = vec![pod(
            "a",
            "p",
            &[
                "a.example/x:1",
                "a.example/y:1",
                "b.example:5000/z:1",
                "localhost:5000/w:1",
                "busybox",
            ],
            &[],
        )];
        let set = TargetSet::build(&pods, &[], false, &host_key);
        assert_eq!(set.images.len(), 5);
        let hosts: Vec<&str> = set.hosts.keys().map(String::as_str).collect();
        assert_eq!(
            hosts,
            vec![
                "a.example",
                "b.example:5000",
                "localhost:5000",
                "registry-1.docker.io"
            ]
        );
        // The representative is stable: the first image of the host in key order.
        assert_eq!(
            set.hosts["a.example"].representative.repository,
            "a.example/x"
        );
    }

    #[test]
    fn invalid_images_are_reported_not_probed() {
        let pods = vec![pod("a", "p", &["Bad Image!", "ok:1"], &[])];
        let set = TargetSet::build(&pods, &[], false, &host_key);
        assert_eq!(set.images.len(), 1);
        assert_eq!(set.invalid.len(), 1);
        assert_eq!(set.invalid[0].pod.as_ref().unwrap().name, "p");
    }
}
