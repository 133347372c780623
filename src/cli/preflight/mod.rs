//! `pullprobe preflight [IMAGE…] [-f FILE…] [--workload KIND/NAME]` (also `kubectl pullprobe
//! preflight`): create an `ImagePreflight` per workload ([`objects`]), wait for the controller
//! to answer as `kubectl wait` does, and print the matrix of their statuses ([`merge`]) with
//! the one renderer. Nothing is sent to an agent and no token leaves this machine but to the
//! API server: creating the object is all the caller needs (`edit` has it).

pub mod merge;
pub mod objects;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use self::objects::{Common, ObjectError, Planned};
use super::check::parse_duration;
use crate::api::ImagePreflight;
use crate::k8s::{preflights, K8sError};
use crate::preflight::render::{self, Format};
use crate::preflight::{self, object, Options, PreflightError};

/// Exit code when the controller did not answer in time (no failure known).
pub const TIMED_OUT: i32 = 3;
/// Exit code when interrupted while waiting (the shell's 128 + SIGINT).
pub const INTERRUPTED: i32 = 130;

#[derive(Args, Debug)]
pub struct PreflightArgs {
    /// Image references to check (besides those of the manifests).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Manifests (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List;
    /// multi-document YAML or JSON); `-` reads stdin. Repeatable. One pre-flight per
    /// workload, on the nodes it could land on.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// A workload in the namespace (`deployment/web`, `cronjob/nightly`): the controller
    /// reads its pod template (images, pull secrets, scheduling constraints).
    #[arg(long, value_name = "KIND/NAME")]
    pub workload: Option<String>,
    /// Namespace of the pre-flights (and of objects that name none).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Pull secret of the command line's images, in the namespace (repeatable).
    #[arg(long = "pull-secret", value_name = "NAME")]
    pub pull_secrets: Vec<String>,
    /// Service account of the command line's images (its imagePullSecrets apply when no
    /// --pull-secret is given) [default: default].
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,

    /// Only nodes matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR", help_heading = "Nodes")]
    pub selector: Option<String>,
    /// Every node (matching -l), ignoring nodeSelector, affinity, taints and cordons.
    #[arg(long, help_heading = "Nodes")]
    pub all_nodes: bool,

    /// Kubeconfig [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, value_name = "FILE", help_heading = "Objects")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for the controller's answer (as `kubectl wait --timeout`); past it,
    /// exit 3 naming the object.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration, help_heading = "Objects")]
    pub timeout: Duration,
    /// Leave the ImagePreflight objects in place (default: delete them after printing).
    #[arg(long, help_heading = "Objects")]
    pub keep: bool,
    /// Leave them for the controller to delete this long after they finished
    /// (`ttlSecondsAfterFinished`; implies --keep).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Objects")]
    pub ttl: Option<Duration>,

    /// Output format.
    #[arg(
        short,
        long,
        value_enum,
        default_value = "table",
        help_heading = "Output"
    )]
    pub output: Format,
    /// Count `degraded` (worked only after earlier endpoints failed) as not ready.
    #[arg(long, help_heading = "Output")]
    pub strict: bool,
}

/// Why a pre-flight could not be run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Input(#[from] PreflightError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("you need `create imagepreflights.pullprobe.io` in namespace {namespace} (the edit role has it): the API server refused it (HTTP 403)")]
    Forbidden { namespace: String },
    #[error("the API server does not serve imagepreflights.pullprobe.io (HTTP 404): install pullprobe's CRDs and controller (kubectl apply -k manifests/)")]
    NotInstalled,
    #[error(transparent)]
    Kube(#[from] K8sError),
}

/// The objects the command line asks for.
fn plan(a: &PreflightArgs) -> Result<Vec<Planned>, CliError> {
    let common = Common {
        selector: a.selector.clone(),
        all_nodes: a.all_nodes,
        strict: a.strict,
        ttl: a
            .ttl
            .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)),
    };
    let mut out = Vec::new();
    if !a.images.is_empty() || !a.files.is_empty() {
        let o = Options {
            images: a.images.clone(),
            files: a.files.clone(),
            namespace: a.namespace.clone(),
            pull_secrets: a.pull_secrets.clone(),
            service_account: a.service_account.clone(),
        };
        let (workloads, warnings) = preflight::workloads(&o)?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        for w in workloads.iter().filter(|w| !w.images.is_empty()) {
            out.push(objects::for_workload(w, &common)?);
        }
    }
    if let Some(given) = &a.workload {
        out.push(objects::for_workload_ref(given, &a.namespace, &common)?);
    }
    if out.is_empty() {
        return Err(PreflightError::NoImages.into());
    }
    Ok(out)
}

/// A created object: where it came from, its namespace and name.
struct Created {
    source: String,
    namespace: String,
    name: String,
}

async fn create_all(
    client: &kube::Client,
    planned: Vec<Planned>,
) -> Result<Vec<Created>, CliError> {
    let mut created: Vec<Created> = Vec::new();
    for p in planned {
        match preflights::create(client, &p.namespace, &p.object).await {
            Ok(o) => {
                let name = o.metadata.name.unwrap_or_default();
                eprintln!(
                    "imagepreflight.pullprobe.io/{name} created in namespace {} ({})",
                    p.namespace, p.source
                );
                created.push(Created {
                    source: p.source,
                    namespace: p.namespace,
                    name,
                });
            }
            Err(e) => {
                delete_all(client, &created).await;
                return Err(match e.status() {
                    Some(403) => CliError::Forbidden {
                        namespace: p.namespace,
                    },
                    Some(404) => CliError::NotInstalled,
                    _ => e.into(),
                });
            }
        }
    }
    Ok(created)
}

async fn delete_all(client: &kube::Client, created: &[Created]) {
    for c in created {
        if let Err(e) = preflights::delete(client, &c.namespace, &c.name).await {
            eprintln!(
                "warning: imagepreflight {}/{} not deleted: {e}",
                c.namespace, c.name
            );
        }
    }
}

/// Resolves on SIGINT; never when it could not be registered.
async fn interrupted(sigint: &mut Option<tokio::signal::unix::Signal>) {
    match sigint {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Run; the exit code: 0 every selected node can pull every image, 1 some cannot, 3 no
/// failure but some nodes unknown or the controller did not answer within --timeout, 2 (as
/// `Err`) usage or configuration error.
pub async fn run(args: PreflightArgs) -> Result<i32, CliError> {
    let planned = plan(&args)?;
    let client = crate::k8s::client(args.kubeconfig.as_deref()).await?;
    // Registered before anything is created, so an interrupt from now on cleans up.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let created = create_all(&client, planned).await?;
    let keep = args.keep || args.ttl.is_some();
    let waits = created
        .iter()
        .map(|c| preflights::wait_finished(&client, &c.namespace, &c.name, args.timeout));
    // Interrupted (Ctrl-C in a terminal, SIGINT from CI): the objects go with it.
    let answers = tokio::select! {
        a = futures::future::join_all(waits) => a,
        _ = interrupted(&mut sigint) => {
            if !keep {
                delete_all(&client, &created).await;
            }
            return Ok(INTERRUPTED);
        }
    };
    let mut done: Vec<ImagePreflight> = Vec::new();
    let mut late = Vec::new();
    let mut failed = None;
    for (c, a) in created.iter().zip(answers) {
        match a {
            Ok(Some(o)) => done.push(o),
            Ok(None) => late.push(c),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        if !keep {
            delete_all(&client, &created).await;
        }
        return Err(e.into());
    }
    if !late.is_empty() {
        for c in &late {
            eprintln!(
                "pullprobe preflight: timed out after {} waiting for imagepreflight/{} in namespace {} ({}): no answer from the pullprobe controller (kubectl -n {} get deployment pullprobe-controller; kubectl -n {} describe imagepreflight {}){}",
                humantime::format_duration(args.timeout),
                c.name,
                c.namespace,
                c.source,
                preflight::AGENT_NAMESPACE,
                c.namespace,
                c.name,
                if keep { "" } else { "; deleted (--keep leaves it)" },
            );
        }
        if !keep {
            delete_all(&client, &created).await;
        }
        return Ok(TIMED_OUT);
    }
    let parts = done
        .iter()
        .map(|o| object::to_matrix(&o.status.clone().unwrap_or_default(), o.spec.degraded_fails))
        .collect();
    let m = merge::merge(parts, args.strict);
    super::emit(&render::render(&m, args.output));
    // The table ends with the summary; for the machine formats it also goes to stderr.
    if matches!(args.output, Format::Json | Format::Yaml | Format::Html) {
        eprintln!("{}", m.summary.line);
    }
    if keep {
        for c in &created {
            eprintln!(
                "imagepreflight.pullprobe.io/{} kept in namespace {}",
                c.name, c.namespace
            );
        }
    } else {
        delete_all(&client, &created).await;
    }
    Ok(m.exit_code())
}
