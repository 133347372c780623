//! Reading the node's files through an injected host root (`/` on the node, `/host` in
//! the DaemonSet, a fixture tree in tests).
//!
//! Symlinks are resolved by hand *inside* the root: an absolute link such as
//! `/etc/ssl/certs/ca-certificates.crt -> /etc/pki/...` must point into the mounted host
//! tree, not into the agent's own filesystem. A loop, an unreadable file or an oversized
//! file is an error value, never a panic or a hang.
//!
//! The DaemonSet mounts the node's paths one by one under its host root (manifests/), so a path
//! outside every mount is not missing from the node: the agent cannot see it. Such a path reads
//! as [`ReadError::NotMounted`] (which names the reason), found from this process's own mount
//! table; a root that is itself a mount point, or has none below it (`--host-root /` on the
//! node, a fixture directory), shows everything.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS` = 40).
const MAX_SYMLINKS: usize = 40;
/// No node config file we read is anywhere near this; a bigger one is hostile or wrong.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Why a file under the host root could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("does not exist")]
    NotFound,
    #[error(
        "is not mounted into the agent's container (add a mount: docs/operate.md \"Node layouts\")"
    )]
    NotMounted,
    #[error("too many levels of symbolic links (symlink loop)")]
    SymlinkLoop,
    #[error("is a directory, not a file")]
    IsDirectory,
    #[error("is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// Not there as far as this process can tell: missing, or outside every mount. Optional
    /// lookups treat both alike; a file that must exist reports the error's own text.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound | ReadError::NotMounted)
    }
}

/// The node paths mounted under a host root, relative to it; `None` shows everything.
type Mounts = Option<Arc<Vec<PathBuf>>>;

/// Largest mount table read (a container has a few dozen lines).
const MAX_MOUNTINFO_BYTES: u64 = 1024 * 1024;

/// The host root is unusable: the only error that makes loading fail as a whole.
#[derive(Debug, thiserror::Error)]
#[error("host root {path}: {why}")]
pub struct HostRootError {
    pub path: PathBuf,
    pub why: String,
}

/// A directory holding the node's filesystem.
#[derive(Clone, Debug)]
pub struct HostRoot {
    root: PathBuf,
    mounts: Mounts,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Result<HostRoot, HostRootError> {
        let root = root.into();
        let mountinfo = read_bounded(Path::new("/proc/self/mountinfo")).unwrap_or_default();
        Self::with_mountinfo(root, &mountinfo)
    }

    /// [`HostRoot::new`] with this mount table (`/proc/self/mountinfo` text) instead of the
    /// process's own.
    pub fn with_mountinfo(
        root: impl Into<PathBuf>,
        mountinfo: &str,
    ) -> Result<HostRoot, HostRootError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {
                let canonical = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
                let mounts = mounts_below(&canonical, mountinfo);
                Ok(HostRoot { root, mounts })
            }
            Ok(_) => Err(HostRootError {
                path: root,
                why: "is not a directory".into(),
            }),
            Err(e) => Err(HostRootError {
                path: root,
                why: e.to_string(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lexical join of a node path (absolute or not) under the root, no symlinks followed.
    pub fn host_path(&self, node_path: &Path) -> PathBuf {
        let mut out = self.root.clone();
        for c in node_path.components() {
            if let Component::Normal(n) = c {
                out.push(n);
            }
        }
        out
    }

    /// The real location (on the agent's filesystem) of `node_path`, with every symlink
    /// resolved inside the root. `NotFound` when some component does not exist.
    pub fn resolve(&self, node_path: &Path) -> Result<PathBuf, ReadError> {
        let mut pending: VecDeque<OsString> = normal_components(node_path).into();
        let mut current: Vec<OsString> = Vec::new();
        let mut links = 0usize;
        while let Some(comp) = pending.pop_front() {
            if comp == ".." {
                current.pop();
                continue;
            }
            let mut candidate = self.root.clone();
            candidate.extend(current.iter());
            candidate.push(&comp);
            let meta = match std::fs::symlink_metadata(&candidate) {
                Ok(m) => m,
                // ENOTDIR (20): a file where a directory was expected.
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                    current.push(comp);
                    return Err(self.missing(&current));
                }
                Err(e) => return Err(ReadError::Io(e)),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ReadError::SymlinkLoop);
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    current.clear();
                }
                let mut next: VecDeque<OsString> = normal_components(&target).into();
                next.extend(pending);
                pending = next;
            } else {
                current.push(comp);
            }
        }
        let mut out = self.root.clone();
        out.extend(current.iter());
        Ok(out)
    }

    /// Why `rel` (relative to the root) is not there: outside every mount, or missing.
    fn missing(&self, rel: &[OsString]) -> ReadError {
        let rel: PathBuf = rel.iter().collect();
        match &self.mounts {
            Some(m) if !m.iter().any(|m| rel.starts_with(m)) => ReadError::NotMounted,
            _ => ReadError::NotFound,
        }
    }

    pub fn exists(&self, node_path: &Path) -> bool {
        self.resolve(node_path).is_ok()
    }

    pub fn is_dir(&self, node_path: &Path) -> bool {
        self.resolve(node_path)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_dir())
    }

    pub fn is_file(&self, node_path: &Path) -> bool {
        self.resolve(node_path)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file())
    }

    /// Bytes of a regular file, bounded by [`MAX_FILE_BYTES`].
    pub fn read(&self, node_path: &Path) -> Result<Vec<u8>, ReadError> {
        use std::io::Read;
        let real = self.resolve(node_path)?;
        let meta = std::fs::metadata(&real)?;
        if meta.is_dir() {
            return Err(ReadError::IsDirectory);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge);
        }
        let f = std::fs::File::open(&real)?;
        let mut buf = Vec::new();
        // `take` guards against files that grow (or lie about their size, like /proc).
        f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge);
        }
        Ok(buf)
    }

    pub fn read_to_string(&self, node_path: &Path) -> Result<String, ReadError> {
        String::from_utf8(self.read(node_path)?).map_err(|_| ReadError::NotUtf8)
    }

    /// The real path of a node path: resolved through the node's own symlinks when it
    /// exists, else the plain join (so a later read reports the missing file by name).
    pub fn real_path(&self, node_path: &Path) -> PathBuf {
        self.resolve(node_path)
            .unwrap_or_else(|_| self.host_path(node_path))
    }

    /// Read a config file, recording why it could not be read as a problem naming the
    /// file. A missing file is only a problem when it was explicitly configured.
    pub fn read_or_report(
        &self,
        node_path: &Path,
        missing_is_problem: bool,
        problems: &mut Vec<crate::problem::ConfigProblem>,
    ) -> Option<String> {
        match self.read_to_string(node_path) {
            Ok(t) => Some(t),
            Err(e) if e.is_not_found() && !missing_is_problem => None,
            Err(e) => {
                problems.push(crate::problem::ConfigProblem::new(
                    node_path,
                    None,
                    crate::problem::ProblemKind::Unreadable,
                    e.to_string(),
                ));
                None
            }
        }
    }

    /// Entry names of a directory, sorted (the order Go's `os.ReadDir` returns), with
    /// whether each is a directory (symlinks followed inside the root).
    pub fn read_dir(&self, node_path: &Path) -> Result<Vec<DirEntry>, ReadError> {
        let real = self.resolve(node_path)?;
        let rd = std::fs::read_dir(&real)?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let node_child = node_path.join(&name);
            let is_dir = self.is_dir(&node_child);
            out.push(DirEntry { name, is_dir });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// One directory entry from [`HostRoot::read_dir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// A path on this machine as the node sees it: `p` without the host root `root`
/// (`/host/etc/containerd/certs.d/x` → `/etc/containerd/certs.d/x`); unchanged when the
/// root is `/` or `p` is not under it. For what a fix or `plan` tells the operator to edit.
pub fn shown_on_node(root: Option<&Path>, p: &Path) -> String {
    match root.and_then(|r| p.strip_prefix(r).ok().filter(|_| r != Path::new("/"))) {
        Some(rel) => format!("/{}", rel.display()),
        None => p.display().to_string(),
    }
}

/// The mount points strictly below `root` in a mount table (`/proc/self/mountinfo`: the fifth
/// field, octal escapes undone), relative to it; `None` when `root` is itself a mount point or
/// has none below it.
fn mounts_below(root: &Path, mountinfo: &str) -> Mounts {
    let mut below = Vec::new();
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        if point == root {
            return None;
        }
        if let Ok(rel) = point.strip_prefix(root) {
            below.push(rel.to_path_buf());
        }
    }
    (!below.is_empty()).then(|| Arc::new(below))
}

/// `\ooo` octal escapes of the kernel's mount table (space, tab, newline, backslash).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A small text file (`/proc`), bounded.
fn read_bounded(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(MAX_MOUNTINFO_BYTES)
        .read_to_string(&mut s)?;
    Ok(s)
}

fn normal_components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_are_shown_as_the_node_sees_them() {
        let p = Path::new("/host/etc/containerd/certs.d/r/ca.crt");
        assert_eq!(
            shown_on_node(Some(Path::new("/host")), p),
            "/etc/containerd/certs.d/r/ca.crt"
        );
        assert_eq!(
            shown_on_node(Some(Path::new("/")), p),
            p.display().to_string()
        );
        assert_eq!(shown_on_node(None, p), p.display().to_string());
        assert_eq!(
            shown_on_node(Some(Path::new("/other")), p),
            p.display().to_string()
        );
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/pki")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/ssl/certs")).unwrap();
        std::fs::write(d.path().join("etc/pki/bundle.pem"), "X").unwrap();
        symlink("/etc/pki/bundle.pem", d.path().join("etc/ssl/certs/ca.crt")).unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        assert_eq!(
            hr.resolve(Path::new("/etc/ssl/certs/ca.crt")).unwrap(),
            d.path().join("etc/pki/bundle.pem")
        );
        assert_eq!(
            hr.read_to_string(Path::new("/etc/ssl/certs/ca.crt"))
                .unwrap(),
            "X"
        );
    }

    #[test]
    fn relative_symlink_and_dotdot_cannot_escape() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("resolv.conf"), "nameserver 1.1.1.1").unwrap();
        symlink("../../../../resolv.conf", d.path().join("etc/resolv.conf")).unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        assert_eq!(
            hr.resolve(Path::new("/etc/resolv.conf")).unwrap(),
            d.path().join("resolv.conf")
        );
    }

    #[test]
    fn symlink_loop_is_an_error_not_a_hang() {
        let d = tempfile::tempdir().unwrap();
        symlink("b", d.path().join("a")).unwrap();
        symlink("a", d.path().join("b")).unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        assert!(matches!(
            hr.read(Path::new("/a")),
            Err(ReadError::SymlinkLoop)
        ));
        assert!(!hr.exists(Path::new("/a")));
    }

    #[test]
    fn missing_and_directory_and_not_a_dir_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("file"), "x").unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        assert!(hr.read(Path::new("/nope")).unwrap_err().is_not_found());
        assert!(hr
            .read(Path::new("/file/below"))
            .unwrap_err()
            .is_not_found());
        assert!(matches!(
            hr.read(Path::new("/dir")),
            Err(ReadError::IsDirectory)
        ));
        assert!(HostRoot::new(d.path().join("file")).is_err());
        assert!(HostRoot::new(d.path().join("missing")).is_err());
    }

    /// A DaemonSet's view: `/host` is not a mount point, node paths are mounted below it one by
    /// one. A path outside every mount is NotMounted, a missing one inside a mount NotFound;
    /// both are "not found" to optional lookups.
    #[test]
    fn paths_outside_every_mount_are_not_mounted() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
        // The runtime creates every mount point, so each exists under the root.
        std::fs::create_dir_all(root.join("var/lib/my dir")).unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        let r = root.display();
        let table = format!(
            "22 1 0:21 / / rw - overlay overlay rw\n\
             30 22 8:1 /etc/containerd {r}/etc/containerd ro - ext4 /dev/sda1 rw\n\
             31 22 8:1 /etc/resolv.conf {r}/etc/resolv.conf ro - ext4 /dev/sda1 rw\n\
             32 22 8:1 /data/my\\040dir {r}/var/lib/my\\040dir ro - ext4 /dev/sda1 rw\n"
        );
        let hr = HostRoot::with_mountinfo(&root, &table).unwrap();
        assert_eq!(
            hr.read_to_string(Path::new("/etc/resolv.conf")).unwrap(),
            "nameserver 10.0.0.1\n"
        );
        let missing = hr
            .read(Path::new("/etc/containerd/config.toml"))
            .unwrap_err();
        assert!(matches!(missing, ReadError::NotFound), "{missing}");
        for p in [
            "/etc/shadow",
            "/var/lib/kubelet/config.json",
            "/var/lib/my dir/x",
        ] {
            let e = hr.read(Path::new(p)).unwrap_err();
            let want_mounted = p.starts_with("/var/lib/my dir");
            assert_eq!(matches!(e, ReadError::NotFound), want_mounted, "{p}: {e}");
            assert!(e.is_not_found(), "{p}");
        }
        assert!(hr
            .read(Path::new("/etc/shadow"))
            .unwrap_err()
            .to_string()
            .contains("not mounted into the agent's container"));
        // The root a mount point itself, or nothing mounted below it: everything is visible.
        for table in [
            format!("40 1 8:1 / {r} ro - ext4 /dev/sda1 rw\n"),
            String::new(),
        ] {
            let hr = HostRoot::with_mountinfo(&root, &table).unwrap();
            assert!(matches!(
                hr.read(Path::new("/etc/shadow")),
                Err(ReadError::NotFound)
            ));
        }
    }

    #[test]
    fn read_dir_is_sorted() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b.crt", "a.cert", "c"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let names: Vec<_> = hr
            .read_dir(Path::new("/"))
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.cert".to_string(), false),
                ("b.crt".to_string(), false),
                ("c".to_string(), false),
                ("sub".to_string(), true)
            ]
        );
    }
}
