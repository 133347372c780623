//! `pullprobe plan IMAGE...`: what the node's runtime would do for an image — the
//! endpoints in order with their TLS, headers, proxy and credential sources, and the
//! kubelet settings they come from — without sending anything to a registry.

use std::path::PathBuf;

use clap::Args;

use super::args::{EndpointArgs, NodeArgs};
use super::check::{parse_images, warn_problems, CheckError};
use super::exit;
use crate::nodeconfig::kubelet::KubeletSettings;
use crate::pipeline::{Creds, Pipeline, Spec};

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Image references.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    #[command(flatten, next_help_heading = "Node config")]
    pub node: NodeArgs,
    #[command(flatten, next_help_heading = "Endpoints and TLS")]
    pub endpoints: EndpointArgs,
    /// One JSON object per image per line.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

/// Run `plan`; returns the exit code (0, or 2 on usage/config errors).
pub async fn run(args: PlanArgs) -> Result<i32, CheckError> {
    let parsed = parse_images(&args.images)?;
    args.node.validate()?;
    args.endpoints.validate()?;
    let mut spec = Spec::default();
    args.node.apply(&mut spec);
    args.endpoints.apply(&mut spec);
    // Without a host root, plan for this machine.
    spec.host_root.get_or_insert_with(|| PathBuf::from("/"));
    let pipeline = Pipeline::load(spec)?;
    for image in &parsed {
        pipeline.validate(image)?;
    }
    warn_problems(&pipeline);
    let Some(nc) = pipeline.node() else {
        return Ok(exit::USAGE);
    };
    let mut out = String::new();
    if !args.json {
        out.push_str(&render_kubelet(&nc.kubelet, &nc.runtime_reason));
    }
    for (given, image) in args.images.iter().zip(&parsed) {
        let Some(plan) = pipeline.plan(image) else {
            continue;
        };
        // Credential sources only (plugins run locally; nothing goes to a registry).
        let (target, problems) = pipeline.inputs(image, given, Creds::Node).await;
        let sources: Vec<String> = target
            .credentials
            .iter()
            .map(|c| c.source.to_string())
            .collect();
        if args.json {
            let mut v = serde_json::to_value(&plan).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("credential_sources".into(), sources.into());
                if let Some(sn) = nc.crio_short_name(given) {
                    obj.insert("crio_short_name".into(), sn.to_string().into());
                }
                obj.insert(
                    "cached_image".into(),
                    serde_json::to_value(nc.kubelet.cached_images.cached_image(image))
                        .unwrap_or_default(),
                );
                let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                obj.insert("credential_problems".into(), problems.into());
                obj.insert(
                    "kubelet".into(),
                    serde_json::to_value(&nc.kubelet).unwrap_or_default(),
                );
            }
            out.push_str(&v.to_string());
            out.push('\n');
            continue;
        }
        out.push_str(&crate::nodeconfig::render_plan_text_under(
            &plan,
            nc.host_root.root(),
        ));
        if let Some(sn) = nc.crio_short_name(given) {
            out.push_str(&format!("CRI-O short name {given}: {sn}\n"));
        }
        if sources.is_empty() {
            out.push_str("credentials: none (anonymous)\n");
        } else {
            out.push_str("credentials (kubelet order, each a separate attempt):\n");
            for s in &sources {
                out.push_str(&format!("  - {s}\n"));
            }
        }
        for p in &problems {
            out.push_str(&format!("credential problem: {p}\n"));
        }
        out.push_str(&format!(
            "cached copy (KEP-2535): {}\n",
            nc.kubelet.cached_images.cached_image(image)
        ));
        out.push('\n');
    }
    super::emit(&out);
    Ok(exit::READY)
}

/// The kubelet settings in effect and where each was found.
pub fn render_kubelet(k: &KubeletSettings, runtime_reason: &str) -> String {
    let mut s = String::from("kubelet (as the node runs it):\n");
    match &k.unit {
        Some(u) => s.push_str(&format!("  unit: {}\n", u.display())),
        None => s.push_str("  unit: none found (read the usual environment files)\n"),
    }
    s.push_str(&format!(
        "  --root-dir: {} ({})\n",
        k.root_dir.value.display(),
        k.root_dir.source
    ));
    let opt = |name: &str, v: &Option<crate::nodeconfig::kubelet::Setting<PathBuf>>| match v {
        Some(v) => format!("  {name}: {} ({})\n", v.value.display(), v.source),
        None => format!("  {name}: not set\n"),
    };
    s.push_str(&opt(
        "--image-credential-provider-config",
        &k.credential_provider_config,
    ));
    s.push_str(&opt(
        "--image-credential-provider-bin-dir",
        &k.credential_provider_bin_dir,
    ));
    s.push_str(&k.cached_images.to_string());
    s.push_str(&format!("  runtime: {runtime_reason}\n\n"));
    s
}
