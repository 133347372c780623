//! The node's container runtime and the platform it pulls for. Every layer shares these
//! facts — the node-config rules (`nodeconfig`), the probe's request sequence (`probe`),
//! the agent and the CLI — so they live below all of them, once.

use std::fmt;

/// Which runtime the node runs: its config rules and its request sequence.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// containerd (also k3s/rke2): HEAD the manifest first and react to the 401; OAuth2
    /// POST for tokens with credentials; `hosts.toml` mirrors.
    #[default]
    Containerd,
    /// CRI-O (containers/image): `GET /v2/` ping first, GET manifests; `registries.conf`.
    Crio,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A containerd release: from `--containerd-version`, the Node's `containerRuntimeVersion`
/// (`containerd://1.7.24`) or the node's dpkg status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ContainerdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ContainerdVersion {
    /// Accepts `1.6.20`, `v2.1.4`, `containerd://1.7.27`, `1.6.20~ds1-1`, `2.2.0-rc.1`.
    pub fn parse(s: &str) -> Option<ContainerdVersion> {
        let s = s.trim();
        let s = s.rsplit("://").next().unwrap_or(s);
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut it = s.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let patch = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        Some(ContainerdVersion {
            major,
            minor,
            patch,
        })
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Whose pull rules apply: the runtime and, for containerd, its release when known (an
/// unknown release gets the 1.x rules pullprobe was first proven against; `plan` says so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuntimeRules {
    pub runtime: Runtime,
    pub containerd: Option<ContainerdVersion>,
}

impl From<Runtime> for RuntimeRules {
    fn from(runtime: Runtime) -> RuntimeRules {
        RuntimeRules {
            runtime,
            containerd: None,
        }
    }
}

impl RuntimeRules {
    /// containerd at `major.minor` or later (false for CRI-O or an unknown release).
    pub fn containerd_at_least(&self, major: u32, minor: u32) -> bool {
        self.runtime == Runtime::Containerd
            && self.containerd.is_some_and(|v| v.at_least(major, minor))
    }
}

/// `os/arch[/variant]`, in OCI spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A `--platform` value that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {given:?}: expected os/arch[/variant], lowercase")]
pub struct PlatformError {
    given: String,
}

impl Platform {
    /// This machine's platform — the node's, when the agent runs on it — as containerd's
    /// `platforms.DefaultSpec()` spells it (arm64 implies v8, arm defaults to v7).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let platform = |os: &str, arch: &str, variant: Option<&str>| Platform {
            os: os.to_string(),
            architecture: normalize_arch(arch).to_string(),
            variant: variant.map(str::to_string),
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(platform(os, arch, None)),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(platform(os, arch, Some(variant)))
            }
            _ => Err(PlatformError {
                given: s.chars().take(64).collect(),
            }),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{}/{}", self.os, self.architecture, v),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

/// containerd's `platforms.Normalize` architecture spellings.
pub(crate) fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm/v6").unwrap().to_string(),
            "linux/arm/v6"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("Linux/AMD64").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        let e = Platform::parse(&"x".repeat(500)).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn versions() {
        for (s, want) in [
            ("1.6.20", (1, 6, 20)),
            ("v2.1.4", (2, 1, 4)),
            ("containerd://1.7.27", (1, 7, 27)),
            ("1.6.20~ds1-1+deb12u1", (1, 6, 20)),
            ("2.2.0-rc.1", (2, 2, 0)),
        ] {
            let v = ContainerdVersion::parse(s).unwrap();
            assert_eq!((v.major, v.minor, v.patch), want, "{s}");
        }
        assert!(ContainerdVersion::parse("garbage").is_none());
    }

    #[test]
    fn host_platform_is_oci_spelled() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert_ne!(h.architecture, "x86_64");
        assert_ne!(h.architecture, "aarch64");
    }
}
