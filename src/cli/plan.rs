//! `pullprobe plan IMAGE...`: what the node's runtime would do for an image — the
//! endpoints in order with their TLS, headers, proxy and credential sources — without
//! sending anything to a registry.

use std::path::PathBuf;

use clap::Args;

use super::check::{CheckError, NodeArgs, RuntimeArg};
use super::exit;
use crate::reference::ImageRef;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Image references.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Which runtime's rules (`auto`: detected under --host-root).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    #[command(flatten)]
    pub node: NodeArgs,
    /// One JSON object per image per line.
    #[arg(long)]
    pub json: bool,
}

/// Run `plan`; returns the exit code (0, or 2 on usage/config errors).
pub async fn run(mut args: PlanArgs) -> Result<i32, CheckError> {
    let mut parsed = Vec::new();
    for image in &args.images {
        parsed.push(
            ImageRef::parse(image).map_err(|source| CheckError::Reference {
                image: image.clone(),
                source,
            })?,
        );
    }
    if args.node.host_root.is_none() {
        // Without a host root, plan for this machine.
        args.node.host_root = Some(PathBuf::from("/"));
    }
    let Some(nc) = args.node.load(args.runtime)? else {
        return Ok(exit::USAGE);
    };
    let mut out = String::new();
    for image in &parsed {
        let plan = nc.plan(image);
        // Credential sources only (plugins run locally; nothing goes to a registry).
        let (creds, problems) = nc.credentials(image, &[]).await;
        let sources: Vec<String> = creds.iter().map(|c| c.source.to_string()).collect();
        if args.json {
            let mut v = serde_json::to_value(&plan).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("credential_sources".into(), sources.into());
                obj.insert(
                    "credential_problems".into(),
                    problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            out.push_str(&v.to_string());
            out.push('\n');
        } else {
            out.push_str(&crate::nodeconfig::render_plan_text(&plan));
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
            out.push('\n');
        }
    }
    super::emit(&out);
    Ok(exit::READY)
}
