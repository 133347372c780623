//! `pullprobe check IMAGE...`: probe images once through the node's pull path (or this
//! workstation's) and print a verdict per image.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::args::{EndpointArgs, NodeArgs};
use super::exit;
use crate::credentials::{Credential, CredentialSource, Secret, SourcedCredential};
use crate::pipeline::{Creds, MirrorError, Pipeline, PipelineError, Spec};
use crate::probe::{Depth, Timeouts, Verdict};
use crate::reference::ImageRef;
use crate::report::{Format, TableStyle};
use crate::runtime::{Platform, PlatformError};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Image references (`nginx`, `registry.example:5000/team/app:1.2`, `...@sha256:...`).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,

    #[command(flatten, next_help_heading = "Node config")]
    pub node: NodeArgs,
    #[command(flatten, next_help_heading = "Endpoints and TLS")]
    pub endpoints: EndpointArgs,
    #[command(flatten, next_help_heading = "Auth")]
    pub auth: AuthArgs,

    /// Target platform `os/arch[/variant]` (this machine's by default).
    #[arg(long, value_name = "PLATFORM", default_value_t = Platform::host().to_string(), help_heading = "Probe")]
    pub platform: String,
    /// Skip the blob phase.
    #[arg(long, help_heading = "Probe")]
    pub no_blob: bool,

    #[command(flatten, next_help_heading = "Timeouts")]
    pub timeouts: TimeoutArgs,

    /// Output format: table, wide, json (one object per line), yaml, name.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        help_heading = "Output"
    )]
    pub output: Format,
    /// Same as `-o json`.
    #[arg(long, conflicts_with = "output", help_heading = "Output")]
    pub json: bool,
    /// Leave out the table header.
    #[arg(long, help_heading = "Output")]
    pub no_headers: bool,
    /// Show every phase and endpoint.
    #[arg(short, long, help_heading = "Output")]
    pub verbose: bool,
    /// Count `degraded` (worked only after earlier endpoints failed) as not ready.
    #[arg(long, help_heading = "Probe")]
    pub strict: bool,
    /// Images probed at the same time.
    #[arg(long, default_value_t = 4, help_heading = "Probe")]
    pub concurrency: usize,
}

/// Credentials given on the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// Registry user name (the password is read from stdin with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Docker config.json with `auths` for a workstation check [default:
    /// $DOCKER_CONFIG/config.json, then ~/.docker/config.json].
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
}

/// Per-phase timeouts and the overall deadline.
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// DNS phase timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout_dns: Duration,
    /// TCP connect phase timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout_connect: Duration,
    /// TLS handshake timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout_tls: Duration,
    /// Timeout of one HTTP request/response.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout_http: Duration,
    /// Overall deadline per image.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl TimeoutArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            dns: self.timeout_dns,
            connect: self.timeout_connect,
            tls: self.timeout_tls,
            http: self.timeout_http,
            overall: self.timeout,
        }
    }
}

/// A duration as the config accepts it: `5s`, `500ms`, `1m30s`, or bare seconds (`5`).
/// At most a day: timeouts are added to the clock, and `--timeout 500000000000y` overflowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(t)
            .map_err(|_| "expected a duration such as 5s, 500ms or 2m".to_string())?,
    };
    if d > Duration::from_secs(24 * 3600) {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("invalid image reference {image:?}: {source}")]
    Reference {
        image: String,
        source: crate::reference::ReferenceError,
    },
    #[error("--platform: {0}")]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("reading the password from stdin: {0}")]
    PasswordStdin(std::io::Error),
    #[error("the password on stdin is empty")]
    EmptyPassword,
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Args(#[from] super::args::ArgsError),
}

/// Parse every image reference first: a bad one is a usage error before any probe.
pub fn parse_images(images: &[String]) -> Result<Vec<ImageRef>, CheckError> {
    images
        .iter()
        .map(|image| {
            ImageRef::parse(image).map_err(|source| CheckError::Reference {
                image: image.clone(),
                source,
            })
        })
        .collect()
}

fn command_line_credential(a: &AuthArgs) -> Result<Option<SourcedCredential>, CheckError> {
    let (Some(user), true) = (&a.username, a.password_stdin) else {
        return Ok(None);
    };
    let mut pw = String::new();
    std::io::stdin()
        .read_to_string(&mut pw)
        .map_err(CheckError::PasswordStdin)?;
    let pw = pw.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        return Err(CheckError::EmptyPassword);
    }
    Ok(Some(SourcedCredential {
        source: CredentialSource::CommandLine,
        credential: Credential::Basic {
            username: user.clone(),
            password: Secret::new(pw),
        },
    }))
}

/// The pipeline `check` walks: the node's under `--host-root`, else this workstation's.
fn spec(args: &CheckArgs) -> Result<Spec, CheckError> {
    args.node.validate()?;
    args.endpoints.validate()?;
    let mut spec = Spec::default();
    args.node.apply(&mut spec);
    args.endpoints.apply(&mut spec);
    spec.credential = command_line_credential(&args.auth)?;
    spec.auth_file = args.auth.auth_file.clone();
    spec.platform = Some(Platform::parse(&args.platform)?);
    spec.timeouts = args.timeouts.timeouts();
    spec.no_blob = args.no_blob;
    Ok(spec)
}

/// Print each node-file problem once, at start (the rest of the node's config applies).
pub fn warn_problems(pipeline: &Pipeline) {
    if let Some(missing) = pipeline.node().and_then(|n| n.missing_runtime_config()) {
        tracing::warn!(%missing, "no runtime configuration found");
        eprintln!("pullprobe: warning: {missing}");
    }
    for p in pipeline.problems() {
        tracing::warn!(problem = %p, "node configuration problem (skipped)");
        eprintln!("pullprobe: warning: {p}");
    }
}

/// Run `check`; returns the process exit code.
pub async fn run(args: CheckArgs) -> Result<i32, CheckError> {
    let parsed = parse_images(&args.images)?;
    let pipeline = Arc::new(Pipeline::load(spec(&args)?)?);
    for image in &parsed {
        pipeline.validate(image)?;
    }
    warn_problems(&pipeline);
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut handles = Vec::new();
    for (given, image) in args.images.iter().cloned().zip(parsed) {
        let pipeline = pipeline.clone();
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            pipeline
                .check(&image, &given, Creds::Node, Depth::Image)
                .await
        }));
    }
    let mut reports = Vec::new();
    for h in handles {
        match h.await {
            Ok(c) => {
                for p in &c.problems {
                    eprintln!("pullprobe: warning: {p}");
                }
                reports.push(c.report);
            }
            Err(e) => tracing::error!(error = %e, "probe task failed"),
        }
    }
    let format = if args.json { Format::Json } else { args.output };
    let style = TableStyle {
        verbose: args.verbose,
        no_headers: args.no_headers,
        colour: TableStyle::detect_colour(),
        ..TableStyle::default()
    };
    let text = crate::report::render(&reports, format, &style);
    super::emit(&text);
    let all_ok = reports.len() == args.images.len()
        && reports
            .iter()
            .all(|r| r.verdict.pulls() && !(args.strict && r.verdict == Verdict::Degraded));
    Ok(if all_ok { exit::READY } else { exit::NOT_READY })
}
