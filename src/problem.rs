//! A node file that could not be used: which file, which field, why. Every reader of node
//! files (`nodeconfig`, `credentials`) reports these, so they live below both.

use std::fmt;
use std::path::{Path, PathBuf};

/// Stable kinds of configuration problems (for reasons and metric labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Missing where it must exist, unreadable, a symlink loop, too large.
    Unreadable,
    /// Syntax error, wrong type, unknown value.
    Invalid,
    /// A file the config refers to (CA, client cert, plugin binary) is missing or bad.
    MissingReference,
    /// A credential provider plugin failed.
    Plugin,
}

/// Something that could not be loaded: which file, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct ConfigProblem {
    /// Node path of the file (or plugin name for plugin problems).
    pub file: PathBuf,
    /// Key path inside the file, when one is at fault.
    pub field: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(
        file: &Path,
        field: Option<&str>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> ConfigProblem {
        ConfigProblem {
            file: file.to_path_buf(),
            field: field.map(str::to_string),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}: {}", self.file.display(), field, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}
