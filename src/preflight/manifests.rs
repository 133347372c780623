//! Manifests → the pods a rollout would create: Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job, CronJob (and `List`s of them), in multi-document
//! YAML or JSON, from files or stdin (`helm template … | pullprobe preflight -f -`). Every
//! container, init and ephemeral container image and every image volume the kubelet would
//! pull (KEP-4639, [`crate::k8s::pods::image_volumes`]), with the pod's pull secrets,
//! service account and scheduling constraints. Other kinds are skipped with a warning.
//!
//! Errors name the input and the document, never quote its content.

use std::path::Path;

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;

/// Largest input read (a rendered chart is usually well below 1 MiB).
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;
/// Most documents (and `List` items) read from all inputs together.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Which list of a pod spec a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerKind {
    Init,
    Container,
    Ephemeral,
    /// An image volume (`volumes[].image`); `container` is the volume's name.
    ImageVolume,
}

/// One container's image (or an image volume's reference).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContainerImage {
    pub container: String,
    pub kind: ContainerKind,
    pub image: String,
}

/// The pods one manifest object would create (one template).
#[derive(Clone, Debug)]
pub struct Workload {
    /// `FILE#N Kind namespace/name` (or `command line`).
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub images: Vec<ContainerImage>,
    pub pull_secrets: Vec<String>,
    pub service_account: String,
    pub spec: PodSpec,
}

impl Workload {
    /// DaemonSet pods get the DaemonSet controller's tolerations.
    pub fn is_daemonset(&self) -> bool {
        self.kind == "DaemonSet"
    }
}

/// Why manifests cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{input}: cannot read: {source}")]
    Read {
        input: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{input}: larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge { input: String },
    #[error("{input}: not valid YAML or JSON (line {line}, column {column})")]
    Syntax {
        input: String,
        line: u64,
        column: u64,
    },
    #[error("{input}: more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments { input: String },
    #[error("{source_}: {message}")]
    Invalid { source_: String, message: String },
}

/// What reading the manifests gave: workloads, and warnings (skipped kinds).
#[derive(Debug, Default)]
pub struct Loaded {
    pub workloads: Vec<Workload>,
    pub warnings: Vec<String>,
}

/// Read `inputs` (`-` = stdin) with `default_ns` for objects without a namespace.
pub fn load(inputs: &[String], default_ns: &str) -> Result<Loaded, ManifestError> {
    let mut out = Loaded::default();
    let mut count = 0usize;
    for input in inputs {
        let text = read_input(input)?;
        parse_text(input, &text, default_ns, &mut out, &mut count)?;
    }
    Ok(out)
}

/// The pods one API object would create (e.g. the object of an AdmissionReview), `None` for
/// a kind without a pod template. `at` names it in errors.
pub fn workload_of(
    at: &str,
    doc: Value,
    default_ns: &str,
) -> Result<Option<Workload>, ManifestError> {
    let mut out = Loaded::default();
    let mut count = 0usize;
    object(at, doc, default_ns, &mut out, &mut count, 0)?;
    Ok(out.workloads.pop())
}

fn read_input(input: &str) -> Result<String, ManifestError> {
    use std::io::Read;
    let err = |source| ManifestError::Read {
        input: input.to_string(),
        source,
    };
    let mut buf = Vec::new();
    let limit = MAX_INPUT_BYTES + 1;
    if input == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(err)?;
    } else {
        std::fs::File::open(Path::new(input))
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .map_err(err)?;
    }
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(ManifestError::TooLarge {
            input: input.to_string(),
        });
    }
    String::from_utf8(buf).map_err(|_| ManifestError::Syntax {
        input: input.to_string(),
        line: 0,
        column: 0,
    })
}

/// Parse one input's documents into `out`.
pub fn parse_text(
    input: &str,
    text: &str,
    default_ns: &str,
    out: &mut Loaded,
    count: &mut usize,
) -> Result<(), ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ManifestError::Syntax {
            input: input.to_string(),
            line,
            column,
        }
    })?;
    for (i, doc) in docs.into_iter().enumerate() {
        let at = format!("{input}#{}", i + 1);
        object(&at, doc, default_ns, out, count, 0)?;
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// The items of a `List` (up to 4 deep).
fn list(
    at: &str,
    doc: &Value,
    default_ns: &str,
    out: &mut Loaded,
    count: &mut usize,
    depth: usize,
) -> Result<(), ManifestError> {
    let invalid = |message: &str| ManifestError::Invalid {
        source_: at.to_string(),
        message: message.to_string(),
    };
    if depth >= 4 {
        return Err(invalid("Lists nested more than 4 deep"));
    }
    let items = match doc.get("items") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(invalid("`items` of a List is not a list")),
    };
    for (j, item) in items.into_iter().enumerate() {
        object(
            &format!("{at}.items[{j}]"),
            item,
            default_ns,
            out,
            count,
            depth + 1,
        )?;
    }
    Ok(())
}

/// One object (or a `List` of them, up to 4 deep).
fn object(
    at: &str,
    doc: Value,
    default_ns: &str,
    out: &mut Loaded,
    count: &mut usize,
    depth: usize,
) -> Result<(), ManifestError> {
    if doc.is_null() {
        return Ok(());
    }
    *count += 1;
    if *count > MAX_DOCUMENTS {
        return Err(ManifestError::TooManyDocuments {
            input: at.to_string(),
        });
    }
    let invalid = |message: &str| ManifestError::Invalid {
        source_: at.to_string(),
        message: message.to_string(),
    };
    if !doc.is_object() {
        return Err(invalid("not a Kubernetes object (a mapping with `kind`)"));
    }
    let kind = str_at(&doc, &["kind"]).unwrap_or("").to_string();
    if kind == "List" || (kind.ends_with("List") && doc.get("items").is_some()) {
        return list(at, &doc, default_ns, out, count, depth);
    }
    let template: &[&str] = match kind.as_str() {
        "Pod" => &["spec"],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        "" => return Err(invalid("no `kind`")),
        _ => {
            out.warnings.push(format!(
                "{at}: kind {} has no pod template: skipped",
                sanitize(&kind)
            ));
            return Ok(());
        }
    };
    let name = str_at(&doc, &["metadata", "name"]).unwrap_or("");
    let namespace = str_at(&doc, &["metadata", "namespace"])
        .filter(|n| !n.is_empty())
        .unwrap_or(default_ns)
        .to_string();
    let source = format!("{at} {kind} {}/{}", sanitize(&namespace), sanitize(name));
    let spec_value = template
        .iter()
        .try_fold(&doc, |v, k| v.get(*k))
        .cloned()
        .ok_or_else(|| ManifestError::Invalid {
            source_: source.clone(),
            message: format!("no pod template at `{}`", template.join(".")),
        })?;
    let spec: PodSpec = serde_json::from_value(spec_value).map_err(|e| ManifestError::Invalid {
        source_: source.clone(),
        message: format!(
            "the pod template does not match the Pod schema ({})",
            unquoted(&e.to_string())
        ),
    })?;
    out.workloads.push(workload(source, kind, namespace, spec)?);
    Ok(())
}

fn workload(
    source: String,
    kind: String,
    namespace: String,
    spec: PodSpec,
) -> Result<Workload, ManifestError> {
    let mut images = Vec::new();
    type Named = Vec<(String, Option<String>)>;
    let lists: [(ContainerKind, Named); 3] = [
        (
            ContainerKind::Init,
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone()))
                .collect(),
        ),
        (
            ContainerKind::Container,
            spec.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone()))
                .collect(),
        ),
        (
            ContainerKind::Ephemeral,
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone()))
                .collect(),
        ),
    ];
    for (kind, list) in lists {
        for (container, image) in list {
            let image =
                image
                    .filter(|i| !i.trim().is_empty())
                    .ok_or_else(|| ManifestError::Invalid {
                        source_: source.clone(),
                        message: format!("container {} has no image", sanitize(&container)),
                    })?;
            images.push(ContainerImage {
                container,
                kind,
                image,
            });
        }
    }
    images.extend(
        crate::k8s::pods::image_volumes(&spec).map(|v| ContainerImage {
            container: v.name.to_string(),
            kind: ContainerKind::ImageVolume,
            image: v.reference.to_string(),
        }),
    );
    let pull_secrets = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    let service_account = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    Ok(Workload {
        source,
        kind,
        namespace,
        images,
        pull_secrets,
        service_account,
        spec,
    })
}

/// A name from the input, made safe to print: at most 253 characters, no control
/// characters.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(253).collect()
}

/// An error text without what it quotes (`invalid type: string "…"` → `invalid type: string`).
fn unquoted(s: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' | '`' => quoted = !quoted,
            _ if !quoted => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ManifestError> {
        let mut out = Loaded::default();
        let mut n = 0;
        parse_text("t.yaml", text, "default", &mut out, &mut n).map(|_| out)
    }

    #[test]
    fn every_kind_and_every_container_list() {
        let text = include_str!("../../tests/fixtures/preflight/workloads.yaml");
        let l = parse(text).unwrap();
        let kinds: Vec<&str> = l.workloads.iter().map(|w| w.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Pod",
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "ReplicaSet",
                "Job",
                "CronJob",
                "Deployment"
            ]
        );
        let pod = &l.workloads[0];
        let imgs: Vec<(&str, ContainerKind)> = pod
            .images
            .iter()
            .map(|c| (c.image.as_str(), c.kind))
            .collect();
        assert_eq!(
            imgs,
            [
                ("registry.test/init:1", ContainerKind::Init),
                ("registry.test/app:1", ContainerKind::Container),
                ("registry.test/debug:1", ContainerKind::Ephemeral)
            ]
        );
        assert_eq!(pod.pull_secrets, ["regcred"]);
        assert_eq!(pod.service_account, "builder");
        assert_eq!(pod.namespace, "apps");
        // Default namespace and service account; the List's item is read.
        assert_eq!(l.workloads[1].namespace, "default");
        assert_eq!(l.workloads[1].service_account, "default");
        assert_eq!(l.workloads[6].images[0].image, "registry.test/cron:1");
        assert_eq!(
            l.workloads[7].source,
            "t.yaml#9.items[0] Deployment default/in-list"
        );
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("ConfigMap"), "{:?}", l.warnings);
    }

    /// KEP-4639: image volumes are pulled like container images, with the pod's pull
    /// secrets; `pullPolicy: Never` ones are never pulled.
    #[test]
    fn image_volumes_are_images_of_the_pod() {
        let l = parse(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: m, namespace: ml}\nspec:\n  template:\n    spec:\n      imagePullSecrets: [{name: regcred}]\n      containers: [{name: s, image: \"registry.test/server:1\", volumeMounts: [{name: w, mountPath: /w}]}]\n      volumes:\n      - {name: w, image: {reference: \"registry.test/weights:3b\"}}\n      - {name: p, image: {reference: \"registry.test/plugins:1\", pullPolicy: Always}}\n      - {name: nv, image: {reference: \"registry.test/local:1\", pullPolicy: Never}}\n      - {name: e, emptyDir: {}}\n",
        )
        .unwrap();
        let w = &l.workloads[0];
        let imgs: Vec<(&str, &str, ContainerKind)> = w
            .images
            .iter()
            .map(|c| (c.container.as_str(), c.image.as_str(), c.kind))
            .collect();
        assert_eq!(
            imgs,
            [
                ("s", "registry.test/server:1", ContainerKind::Container),
                ("w", "registry.test/weights:3b", ContainerKind::ImageVolume),
                ("p", "registry.test/plugins:1", ContainerKind::ImageVolume),
            ]
        );
        assert_eq!(w.pull_secrets, ["regcred"]);
    }

    #[test]
    fn bad_input_is_named_never_quoted() {
        let e = parse(
            "kind: Pod\nspec: {containers: [{name: a, image: x}\n  password: hunter2-canary: :\n",
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::Syntax { .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse("kind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: a, image: 7, ports: [{containerPort: \"hunter2-canary\"}]}]}}}\n").unwrap_err();
        assert!(e.to_string().contains("Deployment default/d"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e =
            parse("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n").unwrap_err();
        assert!(e.to_string().contains("container a has no image"), "{e}");
        let e = parse("- 1\n- 2\n").unwrap_err();
        assert!(e.to_string().contains("not a Kubernetes object"), "{e}");
        let e = parse("metadata: {name: x}\n").unwrap_err();
        assert!(e.to_string().contains("no `kind`"), "{e}");
    }

    #[test]
    fn empty_documents_are_nothing() {
        let l = parse("---\n---\n# only a comment\n").unwrap();
        assert!(l.workloads.is_empty());
    }
}
