//! The one error type of the core. Every message names the file, tensor or field it is about and, where there is
//! one, the expected and the found value, so a user can fix the input without reading the code.

use thiserror::Error;

/// Everything that can go wrong in the core. User input never panics; it ends up here.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read or written (native edges only).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (config, index, recipe, token ids) did not parse.
    #[error("{what}: invalid JSON: {message}")]
    Json { what: String, message: String },
    /// A config field (`config.json`, or GGUF metadata) holds a value we do not support or that contradicts
    /// another field.
    #[error("config: unsupported {field} = {value}: {reason}")]
    Unsupported {
        field: String,
        value: String,
        reason: String,
    },
    /// A config field is missing or malformed.
    #[error("config: field {field}: {reason}")]
    Config { field: String, reason: String },
    /// A safetensors file is truncated, has a garbled header or an inconsistent index.
    #[error("{file}: invalid safetensors: {message}")]
    Safetensors { file: String, message: String },
    /// A tensor the config requires is absent from every weight file.
    #[error("missing tensor {name} (expected shape {expected:?}); the weight files hold no tensor of that name")]
    MissingTensor { name: String, expected: Vec<usize> },
    /// A weight file holds a tensor the config does not account for.
    #[error("unexpected tensor {name} with shape {shape:?}: the config describes no such weight")]
    UnexpectedTensor { name: String, shape: Vec<usize> },
    /// Two entries of the weights name one tensor (a repeated name, or two spellings of one weight).
    #[error("tensor {name} appears twice in the weights: which one is meant is ambiguous")]
    DuplicateTensor { name: String },
    /// A GGUF file is malformed or uses something we do not read.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// A tensor's shape disagrees with the config.
    #[error(
        "tensor {name}: shape {found:?} disagrees with the config, which implies {expected:?}"
    )]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor is stored in a data type we cannot convert to f32.
    #[error("tensor {name}: unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    Dtype { name: String, dtype: String },
    /// The tokenizer file is unusable or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Evaluation or calibration text (or token ids) is unusable: empty, too short, out of vocabulary.
    #[error("text: {0}")]
    Text(String),
    /// An argument or recipe value is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The requested backend is not compiled in or has no device.
    #[error("backend: {0}")]
    Backend(String),
    /// The user stopped the run.
    #[error("cancelled")]
    Cancelled,
    /// Reading a tensor back from the device failed.
    #[error("reading a tensor back from the device failed: {0}")]
    Readback(String),
}

impl Error {
    /// [`Error::Unsupported`]: `field` holds `value`, which prunelab does not support, for `reason`.
    pub fn unsupported(field: &str, value: impl ToString, reason: &str) -> Self {
        Error::Unsupported {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Whether the error is the user's input (CLI exit code 2: a path, file or value to fix) rather than a
    /// failure of the machine or of prunelab (exit code 1: a full disk, a device that failed).
    pub fn is_bad_input(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Error::Readback(_) | Error::Backend(_) => false,
            Error::Io { source, .. } => matches!(
                source.kind(),
                K::NotFound
                    | K::PermissionDenied
                    | K::AlreadyExists
                    | K::NotADirectory
                    | K::IsADirectory
                    | K::DirectoryNotEmpty
                    | K::ReadOnlyFilesystem
                    | K::InvalidInput
                    | K::InvalidData
                    | K::InvalidFilename
                    | K::UnexpectedEof
            ),
            _ => true,
        }
    }
}

/// Result with the core's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `bytes` parsed as JSON into `T`; an error names the document (`what`) when they are not JSON of that shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Json {
        what: what.into(),
        message: e.to_string(),
    })
}
