//! OCI image layouts built in Rust (no Docker engine), pushed with `skopeo copy --all
//! --preserve-digests oci:DIR:TAG docker://HOST:PORT/REPO:TAG`, so the digests computed here are the
//! digests in the registry.
//!
//! Each platform gets its own small tar.gz layer (a file whose content names the platform and the
//! optional salt), an OCI config and an OCI manifest; `multi_platform` adds an OCI index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tempfile::TempDir;

use super::pki::Pki;
use super::registry::Registry;
use super::sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One platform image inside the layout.
#[derive(Clone, Debug)]
pub struct PlatformManifest {
    pub os: String,
    pub architecture: String,
    pub digest: String,
    pub size: usize,
    pub media_type: String,
    pub config_digest: String,
    pub config_size: usize,
    pub layer_digest: String,
    pub layer_size: usize,
}

/// An OCI image layout on disk (removed on Drop).
pub struct OciImage {
    dir: TempDir,
    pub tag: String,
    pub manifests: Vec<PlatformManifest>,
    /// Digest/media type/size of what the tag points at (the index, or the single manifest).
    pub digest: String,
    pub media_type: String,
    pub size: usize,
}

/// Result of a push.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// `HOST:PORT/REPO:TAG`.
    pub reference: String,
    /// Digest of the tag's target as stored by the registry.
    pub digest: String,
    pub media_type: String,
}

/// skopeo destination options.
#[derive(Clone, Debug, Default)]
pub struct PushOpts {
    pub tls_verify: bool,
    pub cert_dir: Option<PathBuf>,
    pub creds: Option<(String, String)>,
    /// `--format v2s2` (Docker schema2; digests change, read back from the registry).
    pub docker_format: bool,
}

impl PushOpts {
    /// Plain HTTP or TLS without verification.
    pub fn insecure() -> Self {
        Self::default()
    }
    /// TLS verified against the PKI's CA.
    pub fn tls(pki: &Pki) -> Self {
        PushOpts {
            tls_verify: true,
            cert_dir: Some(pki.skopeo_cert_dir(false)),
            ..Default::default()
        }
    }
    /// TLS verified, presenting the PKI's client certificate.
    pub fn mtls(pki: &Pki) -> Self {
        PushOpts {
            tls_verify: true,
            cert_dir: Some(pki.skopeo_cert_dir(true)),
            ..Default::default()
        }
    }
    pub fn creds(mut self, user: &str, pass: &str) -> Self {
        self.creds = Some((user.into(), pass.into()));
        self
    }
    pub fn docker_format(mut self) -> Self {
        self.docker_format = true;
        self
    }
}

/// skopeo source options for `skopeo_inspect_raw`.
pub type InspectOpts = PushOpts;

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).expect("write blob");
    digest
}

fn layer_tar_gz(content: &[u8]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", content)
        .expect("tar append");
    let tar = tar.into_inner().expect("tar finish");
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip finish"), diff_id)
}

/// A file of a [`OciImage::from_files`] layer.
#[derive(Clone, Debug)]
pub struct ImageFile {
    /// Absolute path inside the image (`/pullprobe`, `/lib64/ld-linux-x86-64.so.2`).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// One gzip tar layer holding `files` (and their parent directories, mode 0755).
fn files_layer_tar_gz(files: &[ImageFile]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        let rel = f.path.trim_start_matches('/');
        let mut parent = Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{}/", d.display()), std::io::empty())
            .expect("tar dir");
    }
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.data.len() as u64);
        h.set_mode(f.mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, f.path.trim_start_matches('/'), f.data.as_slice())
            .expect("tar append");
    }
    let tar = tar.into_inner().expect("tar finish");
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip finish"), diff_id)
}

impl OciImage {
    /// A runnable linux/amd64 image: one layer holding `files`, config `Entrypoint`
    /// `entrypoint` (e.g. a pause image from a static busybox, or an agent image).
    pub fn from_files(tag: &str, files: &[ImageFile], entrypoint: &[&str]) -> OciImage {
        let dir = tempfile::Builder::new()
            .prefix("oci-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("blobs/sha256")).expect("mkdir blobs");
        std::fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let (layer, diff_id) = files_layer_tar_gz(files);
        let layer_digest = write_blob(d, &layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .expect("config json");
        let config_digest = write_blob(d, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest json");
        let digest = write_blob(d, &manifest);
        let top = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(d.join("index.json"), top.to_string()).expect("index.json");
        let pm = PlatformManifest {
            os: "linux".into(),
            architecture: "amd64".into(),
            digest: digest.clone(),
            size: manifest.len(),
            media_type: OCI_MANIFEST.into(),
            config_digest,
            config_size: config.len(),
            layer_digest,
            layer_size: layer.len(),
        };
        OciImage {
            dir,
            tag: tag.into(),
            manifests: vec![pm],
            digest,
            media_type: OCI_MANIFEST.into(),
            size: manifest.len(),
        }
    }

    /// Single linux/amd64 image (the tag points at an OCI manifest).
    pub fn single(tag: &str) -> OciImage {
        Self::build(tag, &[("linux", "amd64")], false, "", 0)
    }
    /// OCI index with one manifest per `(os, architecture)`.
    pub fn multi_platform(tag: &str, platforms: &[(&str, &str)]) -> OciImage {
        Self::build(tag, platforms, true, "", 0)
    }
    /// Full control: `salt` changes every digest; `extra_layer_bytes` pads the layer file with
    /// pseudo-random (incompressible) bytes, for large-blob tests.
    pub fn build(
        tag: &str,
        platforms: &[(&str, &str)],
        index: bool,
        salt: &str,
        extra_layer_bytes: usize,
    ) -> OciImage {
        assert!(!platforms.is_empty(), "at least one platform");
        let dir = tempfile::Builder::new()
            .prefix("oci-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("blobs/sha256")).expect("mkdir blobs");
        std::fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        let mut manifests = Vec::new();
        for (os, arch) in platforms {
            let mut content = format!("hello from {os}/{arch} {salt}\n").into_bytes();
            // xorshift: deterministic, incompressible padding.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (content.len() as u64);
            for _ in 0..extra_layer_bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                content.push(x as u8);
            }
            let (layer, diff_id) = layer_tar_gz(&content);
            let layer_digest = write_blob(d, &layer);
            let config = serde_json::to_vec(&json!({
                "architecture": arch,
                "os": os,
                "config": {"Cmd": ["/hello"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": format!("pullprobe harness {salt}")}],
            }))
            .expect("config json");
            let config_digest = write_blob(d, &config);
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
            }))
            .expect("manifest json");
            let digest = write_blob(d, &manifest);
            manifests.push(PlatformManifest {
                os: os.to_string(),
                architecture: arch.to_string(),
                digest,
                size: manifest.len(),
                media_type: OCI_MANIFEST.into(),
                config_digest,
                config_size: config.len(),
                layer_digest,
                layer_size: layer.len(),
            });
        }
        let (digest, media_type, size) = if index {
            let idx = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": manifests.iter().map(|m| json!({
                    "mediaType": m.media_type, "digest": m.digest, "size": m.size,
                    "platform": {"architecture": m.architecture, "os": m.os},
                })).collect::<Vec<_>>(),
            }))
            .expect("index json");
            (write_blob(d, &idx), OCI_INDEX.to_string(), idx.len())
        } else {
            let m = &manifests[0];
            (m.digest.clone(), m.media_type.clone(), m.size)
        };
        let top = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(d.join("index.json"), top.to_string()).expect("index.json");
        OciImage {
            dir,
            tag: tag.into(),
            manifests,
            digest,
            media_type,
            size,
        }
    }

    pub fn layout_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pushes to `reg` as `REPO:self.tag`.
    pub fn push(&self, reg: &Registry, repo: &str, opts: &PushOpts) -> Pushed {
        self.push_to(&format!("{}/{repo}:{}", reg.host_port(), self.tag), opts)
    }

    /// Pushes to `HOST:PORT/REPO:TAG`.
    pub fn push_to(&self, reference: &str, opts: &PushOpts) -> Pushed {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "--quiet"]);
        if !opts.docker_format {
            cmd.arg("--preserve-digests");
        } else {
            cmd.args(["--format", "v2s2"]);
        }
        cmd.arg(format!("--dest-tls-verify={}", opts.tls_verify));
        if let Some(d) = &opts.cert_dir {
            cmd.arg("--dest-cert-dir").arg(d);
        }
        if let Some((u, p)) = &opts.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{}", self.dir.path().display(), self.tag));
        cmd.arg(format!("docker://{reference}"));
        let out = cmd.output().expect("run skopeo copy");
        assert!(
            out.status.success(),
            "skopeo copy to {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if opts.docker_format {
            let raw = skopeo_inspect_raw(reference, opts);
            let v: serde_json::Value = serde_json::from_slice(&raw).expect("manifest json");
            Pushed {
                reference: reference.into(),
                digest: sha256_digest(&raw),
                media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            }
        } else {
            Pushed {
                reference: reference.into(),
                digest: self.digest.clone(),
                media_type: self.media_type.clone(),
            }
        }
    }
}

/// `skopeo inspect --raw docker://REFERENCE` (reference `HOST:PORT/REPO:TAG` or `…@sha256:…`).
pub fn skopeo_inspect_raw(reference: &str, opts: &InspectOpts) -> Vec<u8> {
    let out = skopeo_inspect_raw_result(reference, opts);
    match out {
        Ok(b) => b,
        Err(e) => panic!("skopeo inspect {reference} failed: {e}"),
    }
}

/// Like `skopeo_inspect_raw`, returning skopeo's stderr on failure.
pub fn skopeo_inspect_raw_result(reference: &str, opts: &InspectOpts) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "inspect", "--raw"]);
    cmd.arg(format!("--tls-verify={}", opts.tls_verify));
    if let Some(d) = &opts.cert_dir {
        cmd.arg("--cert-dir").arg(d);
    }
    match &opts.creds {
        Some((u, p)) => {
            cmd.arg("--creds").arg(format!("{u}:{p}"));
        }
        None => {
            cmd.arg("--no-creds");
        }
    }
    cmd.arg(format!("docker://{reference}"));
    let out = cmd.output().expect("run skopeo inspect");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An OCI index of `n` entries, every one the manifest `m` under a platform no node has
/// (`linux/hostileN`); `salt` (an annotation) makes each such index its own digest.
pub fn huge_index(m: &PlatformManifest, n: usize, salt: usize) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({
                "mediaType": m.media_type, "digest": m.digest, "size": m.size,
                "platform": {"os": "linux", "architecture": format!("hostile{i}")},
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
        "annotations": {"salt": salt.to_string()},
    }))
    .expect("index json")
}
