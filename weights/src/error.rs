//! Errors of the weight-file reader and writer.
//!
//! Two layers: [`FormatError`] says what is wrong with a byte string, with no idea where the bytes
//! came from (so the parser can be tested and fuzzed on plain slices); [`WeightsError`] adds the
//! path and is what callers see. Every message is one line that names the file and says what to do.

use std::path::PathBuf;

/// What is wrong with the bytes of a weight file, independent of where they came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a gpt2-bench weight file (the first 8 bytes are not the magic \"GPT2BNCH\")")]
    BadMagic,
    #[error(
        "a GGUF file (llama.cpp's format), not a gpt2-bench weight file: import it once with \
         `{export} --from FILE.gguf --out weights/NAME.bin` (bit-exact) and run that",
        export = crate::hint::export_command()
    )]
    Gguf,
    #[error(
        "unsupported weight-format version {found} (this build reads versions 1 to {supported}); \
         re-export the model with this build's gpt2-export"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error(
        "file is truncated: the header says it is {expected} bytes but it is {actual} bytes; \
         the export was interrupted or the copy is incomplete, export it again"
    )]
    Truncated { expected: u64, actual: u64 },
    #[error("file is {actual} bytes but its header says {expected}; it was modified after export")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("corrupt header: {0}")]
    Corrupt(String),
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    #[error(
        "checksum mismatch in {region} (stored {stored:016x}, computed {computed:016x}); \
         the file is damaged, export it again"
    )]
    ChecksumMismatch {
        region: &'static str,
        stored: u64,
        computed: u64,
    },
}

/// Errors of this crate, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
    /// A NaN or infinite weight. `path` is the file that holds it (the input of an export, not
    /// its output): that file is what the user has to replace.
    #[error(
        "{path}: tensor {tensor} holds {found}; NaN or infinite weights make every output NaN: \
         replace the file with a sound copy, or export it again from its source"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        found: crate::dtype::NonFinite,
    },
    /// Tokenizer tables no tokenizer can be built from ([`crate::tokenizer::validate`]).
    #[error("tokenizer: {0}")]
    InvalidTokenizer(#[from] TokenizerError),
    /// The same, in the file at `path`.
    #[error(
        "{path}: its tokenizer cannot be built: {source}; export the model again from a source \
         with a sound GPT-2 tokenizer"
    )]
    TokenizerIn {
        path: PathBuf,
        #[source]
        source: TokenizerError,
    },
    /// Encoding failed at run time.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Why a vocabulary and merge list cannot make GPT-2's byte-level BPE tokenizer: what the loader
/// ([`crate::Gpt2Tokenizer::from_data`]) refuses, found by [`crate::tokenizer::validate`].
/// Token strings are escaped with [`crate::input::printable`]; ids and merge ranks count from 0.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenizerError {
    #[error("token {id} (\"{token}\") has a character outside GPT-2's byte-level alphabet")]
    NotByteLevel { id: usize, token: String },
    #[error("token {id} (\"{token}\") appears twice in the vocabulary, first as token {first}")]
    DuplicateToken {
        id: usize,
        first: usize,
        token: String,
    },
    #[error(
        "merge {rank} (\"{a}\" \"{b}\") names \"{part}\", which is not a token of the vocabulary"
    )]
    UnknownMergePart {
        rank: usize,
        a: String,
        b: String,
        part: String,
    },
    #[error(
        "merge {rank} (\"{a}\" \"{b}\") makes \"{result}\", which is not a token of the vocabulary"
    )]
    MergeResultNotAToken {
        rank: usize,
        a: String,
        b: String,
        result: String,
    },
    #[error("the end-of-text id {eot_id} is outside the vocabulary of {tokens} tokens")]
    EotOutOfRange { eot_id: u32, tokens: usize },
}

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WeightsError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, source: FormatError) -> Self {
        WeightsError::Format {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = WeightsError> = std::result::Result<T, E>;
