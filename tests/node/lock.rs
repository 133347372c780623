//! One cluster at a time on this machine: an exclusive `flock` on a file in the temp dir, held
//! for the life of the [`super::Node`] (each cluster is heavy: 2 cores are shared).

use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

/// The lock file, shared by every worktree and test binary on the machine.
pub fn lock_path() -> PathBuf {
    std::env::temp_dir().join("pullprobe-node-cluster.lock")
}

/// Holds the lock until dropped (closing the file releases it, also when the process dies).
pub struct ClusterLock {
    _file: File,
}

impl ClusterLock {
    /// Blocks until no other cluster runs; says so on stderr when it had to wait.
    pub fn acquire() -> ClusterLock {
        let path = lock_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        if file.try_lock().is_err() {
            let t = Instant::now();
            eprintln!(
                "node harness: waiting for another one-node cluster to finish ({})",
                path.display()
            );
            file.lock()
                .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
            eprintln!("node harness: waited {:.1?}", t.elapsed());
        }
        ClusterLock { _file: file }
    }
}
