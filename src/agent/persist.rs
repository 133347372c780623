//! What the agent keeps across restarts (`state_dir/state.json`): each registry plan's
//! backoff, so a restart (an OOM kill, a node drain) does not send a burst of probes to
//! registries that were failing, and the registries reached from this node before, which
//! decide whether a failure is the node's (`scope.rs`).
//!
//! The file is the agent's own but lives on a volume: it is read bounded ([`MAX_BYTES`],
//! [`MAX_BACKOFFS`] entries, plan keys of at most [`MAX_KEY`] bytes), and a file that does
//! not parse is reported by path only and replaced; it never stops the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::scope::ReachedBefore;

/// Largest state file read.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Backoff entries kept at most (the plans in use are far fewer).
pub const MAX_BACKOFFS: usize = 2048;
/// Longest plan key kept.
pub const MAX_KEY: usize = 1024;
const FILE: &str = "state.json";
const VERSION: u32 = 1;

/// One plan's backoff, on the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBackoff {
    pub failures: u32,
    /// Unix seconds until which the plan is not probed.
    pub until: u64,
}

/// Everything kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saved {
    pub version: u32,
    pub backoff: BTreeMap<String, SavedBackoff>,
    pub reached: ReachedBefore,
}

impl Saved {
    /// Drop what is out of bounds: long keys, expired backoffs, entries over the caps.
    pub fn bounded(mut self, now: SystemTime) -> Saved {
        let now_s = unix(now);
        self.backoff
            .retain(|k, b| k.len() <= MAX_KEY && b.until > now_s);
        while self.backoff.len() > MAX_BACKOFFS {
            let last = self.backoff.keys().next_back().cloned();
            match last {
                Some(k) => self.backoff.remove(&k),
                None => break,
            };
        }
        self.reached.bound(now);
        self
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `until` (Unix seconds) as a wall-clock time.
pub fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// Why the state could not be read or written. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read the agent's state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's state file {path} is larger than {MAX_BYTES} bytes; starting afresh")]
    TooLarge { path: PathBuf },
    #[error("the agent's state file {path} is not valid state (line {line}); starting afresh")]
    Invalid { path: PathBuf, line: usize },
    #[error("cannot write the agent's state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state file of one agent.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// What was last written (or read), so an unchanged state is not rewritten.
    last: Option<Vec<u8>>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            path: dir.join(FILE),
            last: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kept state; a missing file is an empty state.
    pub fn load(&mut self, now: SystemTime) -> Result<Saved, PersistError> {
        use std::io::Read;
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(source) => {
                return Err(PersistError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| PersistError::Read {
                path: self.path.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(PersistError::TooLarge {
                path: self.path.clone(),
            });
        }
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| PersistError::Invalid {
            path: self.path.clone(),
            line: e.line(),
        })?;
        self.last = Some(bytes);
        Ok(saved.bounded(now))
    }

    /// Write `saved` when it differs from what the file holds: to a temporary file in the
    /// same directory, then renamed over the old one, so a crash leaves one or the other.
    pub fn save(&mut self, saved: &Saved) -> Result<bool, PersistError> {
        let mut s = saved.clone();
        s.version = VERSION;
        let bytes = serde_json::to_vec(&s).unwrap_or_default();
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        let tmp = self.path.with_extension("json.tmp");
        let write = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &self.path));
        write.map_err(|source| PersistError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.last = Some(bytes);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        from_unix(s)
    }

    #[test]
    fn saves_only_changes_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let mut store = Store::new(d.path());
        let mut s = Saved::default();
        s.backoff.insert(
            "reg.example".into(),
            SavedBackoff {
                failures: 3,
                until: 2_000,
            },
        );
        s.reached.reached("reg.example", at(500));
        assert!(store.save(&s).unwrap());
        assert!(!store.save(&s).unwrap());
        let mut again = Store::new(d.path());
        let back = again.load(at(1_000)).unwrap();
        assert_eq!(back.backoff["reg.example"].failures, 3);
        assert!(back
            .reached
            .qualifies("reg.example", at(1_000), Duration::from_secs(100)));
        // Expired backoffs are not restored.
        assert!(again.load(at(3_000)).unwrap().backoff.is_empty());
    }

    #[test]
    fn a_bad_file_is_named_not_quoted_and_a_big_one_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut store = Store::new(d.path());
        std::fs::write(store.path(), b"{\"backoff\": \"canary-state-77\"").unwrap();
        let e = store.load(at(0)).unwrap_err().to_string();
        assert!(e.contains("state.json") && !e.contains("canary"), "{e}");
        std::fs::write(store.path(), vec![b' '; MAX_BYTES as usize + 10]).unwrap();
        assert!(matches!(
            store.load(at(0)),
            Err(PersistError::TooLarge { .. })
        ));
        assert_eq!(
            Store::new(&d.path().join("missing")).load(at(0)).unwrap(),
            Saved::default()
        );
    }

    #[test]
    fn bounds_drop_long_keys_and_excess() {
        let mut s = Saved::default();
        s.backoff.insert(
            "x".repeat(MAX_KEY + 1),
            SavedBackoff {
                failures: 1,
                until: 10,
            },
        );
        for i in 0..(MAX_BACKOFFS + 5) {
            s.backoff.insert(
                format!("r{i:05}"),
                SavedBackoff {
                    failures: 1,
                    until: 10,
                },
            );
        }
        let b = s.bounded(at(5));
        assert_eq!(b.backoff.len(), MAX_BACKOFFS);
        assert!(b.backoff.keys().all(|k| k.len() <= MAX_KEY));
    }
}
