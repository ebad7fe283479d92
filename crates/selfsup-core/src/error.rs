//! The one error type of selfsup: every failure names the file, field or step it is about.

use std::path::{Path, PathBuf};

/// Result alias used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant saying what to look at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data file is malformed (wrong magic number, truncated, undecodable image).
    #[error("{path}: {msg}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A configuration value is unknown or out of range.
    #[error("config field `{field}`: {msg}")]
    Config {
        /// Dotted path of the field, for example `optimizer.lr`.
        field: String,
        /// What is wrong and what is allowed.
        msg: String,
    },
    /// The loss or a gradient stopped being finite.
    #[error(
        "step {step}: {what} is not finite ({value}). Likely cause: {hint}. The run folder keeps its last checkpoint: change the config and continue with --resume, or set train.skip_nonfinite = true to skip such steps"
    )]
    NonFinite {
        /// Global optimizer step at which it happened (0-based).
        step: usize,
        /// Which quantity (`simclr loss`, `dino gradient norm`).
        what: String,
        /// The value seen.
        value: f64,
        /// What usually causes it for this method ([`crate::Objective::divergence_hint`]).
        hint: String,
    },
    /// A checkpoint is missing, incomplete or does not match the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Any other invalid input, with a message that says what to do.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A format error about `path`.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A configuration error about `field`.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// A checkpoint error about `path`.
    pub fn checkpoint(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}
