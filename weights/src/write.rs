//! Writing a weight file, safely.
//!
//! [`WeightWriter`] streams tensors one at a time (peak memory is one tensor, not the model) into
//! a temporary file created next to the destination, then fills in the checksums, flushes to disk
//! and renames the temporary file over the destination. So an export that fails or is
//! interrupted never leaves a partial file at the destination and never damages a file already
//! there; a reader that has the old file mapped keeps its (old) inode.
//!
//! Every file the two programs write (weight files, reports, charts, history) goes through this
//! module: [`check_output`] refuses a destination that the final rename would wrongly replace (a
//! symbolic link, FIFO, device or directory, or one of the run's own inputs), [`PartialFile`]
//! is the temporary file beside it, and temporary files and directories are registered
//! ([`CleanupGuard`]) so that a handler for terminating signals can remove them
//! ([`remove_registered`]).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::NamedTempFile;
use xxhash_rust::xxh3::Xxh3;

use crate::dtype::{self, Dtype};
use crate::error::{FormatError, Result, WeightsError};
use crate::format::{
    self, Config, FORMAT_VERSION, PREAMBLE_LEN, Preamble, Provenance, TensorInfo, TensorSpec,
    align_up,
};
use crate::tokenizer::TokenizerData;

/// Temporary files and directories in use, so that a signal handler can remove them
/// ([`remove_registered`]): a process ended by a signal runs no destructors, and
/// `std::process::exit` runs none either.
static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn registered() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a list that is still valid.
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a temporary path on the list [`remove_registered`] deletes, until dropped.
#[derive(Debug)]
pub struct CleanupGuard {
    path: PathBuf,
}

/// Set (under the registry's lock) once [`remove_registered`] has run: the process is exiting,
/// and nothing new may be created that it would no longer remove.
static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl CleanupGuard {
    /// Creates a temporary file or directory with `create` and registers the path `path_of`
    /// gives, both under the registry's lock: a signal handler removing the registered paths
    /// waits for the creation to be registered, so nothing is created in between that it would
    /// miss, and after it ran nothing more is created.
    pub fn create<T>(
        create: impl FnOnce() -> std::io::Result<T>,
        path_of: impl FnOnce(&T) -> &Path,
    ) -> std::io::Result<(T, CleanupGuard)> {
        let mut list = registered();
        if EXITING.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the process is exiting after a signal",
            ));
        }
        let item = create()?;
        let path = path_of(&item).to_path_buf();
        list.push(path.clone());
        Ok((item, CleanupGuard { path }))
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let mut list = registered();
        if let Some(i) = list.iter().position(|p| p == &self.path) {
            list.swap_remove(i);
        }
    }
}

/// Deletes every registered temporary file and directory (for a signal handler: call it, then
/// exit). Returns how many were removed.
pub fn remove_registered() -> usize {
    let mut list = registered();
    EXITING.store(true, std::sync::atomic::Ordering::Relaxed);
    list.drain(..)
        .filter(|p| {
            if p.is_dir() {
                // Another thread may still be renaming a finished file into it: try again.
                (0..3).any(|_| std::fs::remove_dir_all(p).is_ok())
            } else {
                std::fs::remove_file(p).is_ok()
            }
        })
        .count()
}

/// A temporary directory that is removed when dropped and on a terminating signal.
#[derive(Debug)]
pub struct TempDir {
    // Field order: the guard is dropped (unregistered) after the directory is deleted.
    dir: tempfile::TempDir,
    _guard: CleanupGuard,
}

impl TempDir {
    /// In the system's temporary directory.
    pub fn new() -> std::io::Result<Self> {
        let (dir, _guard) = CleanupGuard::create(
            || tempfile::Builder::new().prefix("gpt2-bench-").tempdir(),
            |d| d.path(),
        )?;
        Ok(TempDir { dir, _guard })
    }

    /// In `parent`, hidden (for intermediate files as large as the output, which belong on the
    /// output's file system rather than in a RAM-backed /tmp).
    pub fn new_in(parent: &Path) -> std::io::Result<Self> {
        let (dir, _guard) = CleanupGuard::create(
            || {
                tempfile::Builder::new()
                    .prefix(".gpt2-bench-")
                    .tempdir_in(parent)
            },
            |d| d.path(),
        )?;
        Ok(TempDir { dir, _guard })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether two existing paths are the same file (same device and inode on Unix).
fn same_file(a: &std::fs::Metadata, b: &Path) -> bool {
    let Ok(b) = std::fs::metadata(b) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// Checks that writing `dest` by renaming a finished file over it destroys nothing it should
/// not: `dest` must not exist, or be a regular file (not a symbolic link, FIFO, device or
/// directory, which the rename would replace with a regular file), and must not be one of
/// `inputs`, the files this run reads. The message says why, for an error naming `dest`.
pub fn check_output(dest: &Path, inputs: &[&Path]) -> std::result::Result<(), String> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot check the output path: {e}")),
    };
    if !meta.file_type().is_file() {
        return Err(format!(
            "is {}; an output must be a new path or a regular file (it is replaced as a whole), \
             so this one is left alone: give another path",
            crate::input::kind_of(&meta)
        ));
    }
    if let Some(input) = inputs.iter().find(|i| same_file(&meta, i)) {
        return Err(format!(
            "is also an input of this run ({}); writing it would destroy what is being read: \
             give another output path",
            input.display()
        ));
    }
    Ok(())
}

/// A temporary file `<prefix>XXXXXX.partial` beside a destination, registered for removal on a
/// terminating signal, to be renamed over the destination once complete. Created with mode
/// 0666 less the umask, like any file a program creates, rather than tempfile's private 0600:
/// the renamed file is ordinary output, and a report or chart readable only by its creator
/// would surprise whoever shares the directory.
#[derive(Debug)]
pub struct PartialFile {
    // Field order: the file is deleted (if never persisted) before the guard unregisters it.
    tmp: NamedTempFile,
    _guard: CleanupGuard,
}

impl PartialFile {
    pub fn new_in(dir: &Path, prefix: &str) -> std::io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix).suffix(".partial");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let (tmp, _guard) = CleanupGuard::create(|| builder.tempfile_in(dir), |t| t.path())?;
        Ok(PartialFile { tmp, _guard })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes to disk and renames over `dest`, after checking `dest` once more (see
    /// [`check_output`]; `inputs` as there).
    pub fn persist(self, dest: &Path, inputs: &[&Path]) -> std::io::Result<()> {
        check_output(dest, inputs).map_err(std::io::Error::other)?;
        let PartialFile { tmp, _guard } = self;
        tmp.as_file().sync_all()?;
        tmp.persist(dest).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The directory a destination's temporary file goes in: the destination's own.
pub fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `dest` through a temporary file in the same directory and a rename, after
/// [`check_output`]: an interrupted write leaves no partial file, and nothing that is not a
/// regular file, nor any of `inputs`, is replaced.
pub fn write_atomically(dest: &Path, bytes: &[u8], inputs: &[&Path]) -> std::io::Result<()> {
    check_output(dest, inputs).map_err(std::io::Error::other)?;
    let mut tmp = PartialFile::new_in(parent_dir(dest), ".gpt2-bench-")?;
    tmp.file_mut().write_all(bytes)?;
    tmp.persist(dest, inputs)
}

/// Writes one weight file; see the module docs.
pub struct WeightWriter {
    dest: PathBuf,
    /// `None` once [`WeightWriter::finish`] has renamed it into place.
    tmp: Option<PartialFile>,
    header_block: Vec<u8>,
    data_offset: u64,
    plan: Vec<TensorInfo>,
    /// The logical shape and role of each tensor of `plan`.
    specs: Vec<TensorSpec>,
    data_len: u64,
    next: usize,
    written: u64,
    hasher: Xxh3,
    /// Files the export reads, which the destination must not be.
    inputs: Vec<PathBuf>,
}

impl std::fmt::Debug for WeightWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightWriter")
            .field("dest", &self.dest)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl WeightWriter {
    /// Starts a file for `config` at `dest`, each tensor in the dtype `dtypes` gives it (one per
    /// tensor of [`Config::expected_tensors`]; [`Config::tensor_dtypes`] makes the usual list).
    /// Checks the config, dtypes and tokenizer, that `dest` may be replaced ([`check_output`]:
    /// not a special file, not one of `inputs`, the files the export reads) and that a file can
    /// be created in its directory, before any tensor is produced.
    pub fn create(
        dest: impl AsRef<Path>,
        config: &Config,
        provenance: &Provenance,
        tokenizer: &TokenizerData,
        inputs: &[&Path],
        dtypes: &[Dtype],
    ) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let invalid = |e: FormatError| WeightsError::format(&dest, e);
        config.validate().map_err(invalid)?;
        let (plan, data_len) = format::plan_tensors(config, dtypes).map_err(invalid)?;
        if tokenizer.tokens.len() != config.vocab_size as usize {
            return Err(invalid(FormatError::InvalidConfig(format!(
                "the tokenizer has {} tokens but vocab_size is {}",
                tokenizer.tokens.len(),
                config.vocab_size
            ))));
        }
        if tokenizer.eot_id >= config.vocab_size {
            return Err(invalid(FormatError::InvalidConfig(format!(
                "end-of-text id {} is outside the vocabulary",
                tokenizer.eot_id
            ))));
        }
        // Every run builds this tokenizer first: a file whose tokenizer cannot be built could
        // never run, so none is written. The tables came from the export's input; when there is
        // one, the error names it (callers with several inputs check before, naming the file).
        crate::tokenizer::validate(tokenizer).map_err(|source| WeightsError::TokenizerIn {
            path: match inputs {
                [input] => input.to_path_buf(),
                _ => dest.clone(),
            },
            source,
        })?;
        if dest.is_dir() {
            return Err(WeightsError::Write {
                path: dest,
                message: "is a directory; give a file name such as weights/gpt2.bin".into(),
            });
        }
        check_output(&dest, inputs).map_err(|message| WeightsError::Write {
            path: dest.clone(),
            message,
        })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(WeightsError::Write {
                path: dest,
                message: format!(
                    "the directory {} does not exist; create it first",
                    dir.display()
                ),
            });
        }
        let mut tmp =
            PartialFile::new_in(&dir, ".gpt2-export-").map_err(|e| WeightsError::Write {
                path: dest.clone(),
                message: format!("cannot create a file in {}: {e}", dir.display()),
            })?;

        let header_block = format::encode_header_block(config, provenance, tokenizer, &plan);
        let data_offset = align_up((PREAMBLE_LEN + header_block.len()) as u64);
        // I/O errors name the destination (what the user asked for), not the hidden temp file.
        let io = |e| WeightsError::io(&dest, e);
        // The preamble is written last, once the checksums are known; reserve its bytes now.
        let file = tmp.file_mut();
        file.write_all(&[0u8; PREAMBLE_LEN]).map_err(io)?;
        file.write_all(&header_block).map_err(io)?;
        let pad = data_offset as usize - PREAMBLE_LEN - header_block.len();
        file.write_all(&vec![0u8; pad]).map_err(io)?;

        Ok(WeightWriter {
            dest,
            tmp: Some(tmp),
            header_block,
            data_offset,
            plan,
            specs: config.expected_tensors(),
            data_len,
            next: 0,
            written: 0,
            hasher: Xxh3::new(),
            inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        })
    }

    /// The tensors still to write, in the order the `write_*` methods expect, with their
    /// logical shapes.
    pub fn remaining(&self) -> &[TensorSpec] {
        &self.specs[self.next..]
    }

    /// The dtype the next tensor is stored in.
    pub fn next_dtype(&self) -> Option<Dtype> {
        self.plan.get(self.next).map(|t| t.dtype)
    }

    /// Appends the next tensor, given as f32 values in its logical layout
    /// ([`Config::expected_tensors`]): converted to its planned dtype (transposed first where that
    /// dtype is stored `[out, in]`). Every value must be finite and representable in the dtype.
    /// A non-finite value is an error naming the destination; an exporter that reads the values
    /// from a file should check them there first (naming that file and the value's index in it),
    /// or call [`write_tensor_from`](Self::write_tensor_from).
    pub fn write_tensor(&mut self, name: &str, data: &[f32]) -> Result<()> {
        self.write_values(None, name, data)
    }

    /// [`write_tensor`](Self::write_tensor) for values read from the file `source`, in the
    /// order given (a checkpoint's tensor): a non-finite value is a
    /// [`WeightsError::NonFinite`] naming `source`, the file the user has to replace, rather
    /// than the destination.
    pub fn write_tensor_from(&mut self, source: &Path, name: &str, data: &[f32]) -> Result<()> {
        self.write_values(Some(source), name, data)
    }

    fn write_values(&mut self, source: Option<&Path>, name: &str, data: &[f32]) -> Result<()> {
        let (info, spec) = self.next_planned(name)?;
        let logical: u64 = spec.shape.iter().product();
        if data.len() as u64 != logical {
            return Err(self.write_error(format!(
                "tensor {name} has {} values; its shape {:?} needs {logical}",
                data.len(),
                spec.shape
            )));
        }
        // A NaN or infinity in the weights makes every logit NaN, and greedy decoding then picks
        // id 0 forever on every backend alike: refused here, once, for every exporter.
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            let found = dtype::NonFinite {
                index: i,
                value: data[i],
                q8_0_scale: false,
            };
            return Err(self.non_finite(source, name, found));
        }
        let dtype = info.dtype;
        let transposed = spec.transposed(dtype);
        let (rows, cols) = (
            spec.shape[0] as usize,
            *spec.shape.last().unwrap_or(&1) as usize,
        );
        let stored_values;
        let stored: &[f32] = if transposed {
            stored_values = dtype::transpose(data, rows, cols);
            &stored_values
        } else {
            data
        };
        let row_len = spec.stored_row_len(dtype) as usize;
        let mut bytes = Vec::with_capacity(info.byte_len as usize);
        dtype::encode(stored, row_len, dtype, &mut bytes).map_err(|mut e| {
            if transposed {
                // Name the value by its index in the logical (in, out) layout, as given.
                let (o, i) = (e.index / rows, e.index % rows);
                e.index = i * cols + o;
            }
            self.write_error(format!("tensor {name} cannot be stored as {dtype}: {e}"))
        })?;
        self.append(&bytes)
    }

    /// Appends the next tensor as the bytes it is stored as: its planned dtype and stored layout
    /// (for exact copies, e.g. converting a file to the dtype a tensor already has). The values
    /// are checked as [`write_tensor`](Self::write_tensor) checks them (no NaN, no infinity,
    /// finite q8_0 scales).
    pub fn write_encoded(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let (info, _) = self.next_planned(name)?;
        if bytes.len() as u64 != info.byte_len {
            return Err(self.write_error(format!(
                "tensor {name} is {} bytes; {:?} in {} needs {}",
                bytes.len(),
                info.shape,
                info.dtype,
                info.byte_len
            )));
        }
        if let Some(found) = dtype::first_non_finite(bytes, info.dtype) {
            return Err(self.non_finite(None, name, found));
        }
        self.append(bytes)
    }

    /// The error for a non-finite value of tensor `name`: naming `source`, the file it came
    /// from, when known; else the destination, as what could not be written.
    fn non_finite(
        &self,
        source: Option<&Path>,
        name: &str,
        found: dtype::NonFinite,
    ) -> WeightsError {
        match source {
            Some(path) => WeightsError::NonFinite {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                found,
            },
            None => self.write_error(format!(
                "tensor {name} was given {found}; refusing to write weights that would make \
                 every output NaN"
            )),
        }
    }

    /// The next planned tensor, which must be `name`.
    fn next_planned(&self, name: &str) -> Result<(TensorInfo, TensorSpec)> {
        let Some(info) = self.plan.get(self.next) else {
            return Err(self.write_error(format!("tensor {name} is one more than the model has")));
        };
        if info.name != name {
            return Err(self.write_error(format!(
                "tensor {name} written out of order; expected {}",
                info.name
            )));
        }
        Ok((info.clone(), self.specs[self.next].clone()))
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let info = &self.plan[self.next];
        let (offset, byte_len) = (info.offset, info.byte_len);
        let pad = vec![0u8; (offset - self.written) as usize];
        self.hasher.update(&pad);
        self.hasher.update(bytes);
        let path = &self.dest;
        let Some(tmp) = self.tmp.as_mut() else {
            return Err(WeightsError::Write {
                path: path.clone(),
                message: "write after finish()".into(),
            });
        };
        let file = tmp.file_mut();
        file.write_all(&pad)
            .and_then(|_| file.write_all(bytes))
            .map_err(|e| WeightsError::io(path, e))?;
        self.written = offset + byte_len;
        self.next += 1;
        Ok(())
    }

    /// Fills in the preamble, flushes to disk and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.next != self.plan.len() {
            return Err(self.write_error(format!(
                "export stopped after {} of {} tensors",
                self.next,
                self.plan.len()
            )));
        }
        debug_assert_eq!(self.written, self.data_len);
        let preamble = Preamble {
            version: FORMAT_VERSION,
            header_len: self.header_block.len() as u64,
            data_offset: self.data_offset,
            data_len: self.data_len,
            file_len: self.data_offset + self.data_len,
            data_checksum: self.hasher.digest(),
            header_checksum: format::checksum(&self.header_block),
        };
        let io_path = self.dest.clone();
        let Some(mut tmp) = self.tmp.take() else {
            return Err(self.write_error("finish() called twice".into()));
        };
        let file: &mut File = tmp.file_mut();
        let io = |e| WeightsError::io(&io_path, e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&format::encode_preamble(&preamble))
            .map_err(io)?;
        let dest = self.dest.clone();
        let inputs: Vec<&Path> = self.inputs.iter().map(PathBuf::as_path).collect();
        tmp.persist(&dest, &inputs)
            .map_err(|e| WeightsError::Write {
                path: dest.clone(),
                message: format!("cannot move the finished file into place: {e}"),
            })?;
        Ok(dest)
    }

    fn write_error(&self, message: String) -> WeightsError {
        WeightsError::Write {
            path: self.dest.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TokenizerError;
    use crate::tokenizer::bytes_to_unicode;

    fn config() -> Config {
        Config {
            n_layer: 1,
            n_head: 2,
            n_embd: 32,
            vocab_size: 257,
            n_ctx: 4,
            mlp_hidden: 32,
            layer_norm_eps: 1e-5,
            tied_output: true,
        }
    }

    /// The 256 byte-level characters and `<|endoftext|>`, no merges.
    fn tokenizer() -> TokenizerData {
        let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        tokens.push("<|endoftext|>".into());
        TokenizerData {
            tokens,
            merges: vec![],
            eot_id: 256,
        }
    }

    fn create(dest: &Path, tokenizer: &TokenizerData, inputs: &[&Path]) -> Result<WeightWriter> {
        let c = config();
        let dtypes = c.tensor_dtypes(Dtype::F16);
        WeightWriter::create(dest, &c, &Provenance::default(), tokenizer, inputs, &dtypes)
    }

    /// Writes every tensor (0.25 everywhere) and finishes.
    fn write_all(mut w: WeightWriter) -> PathBuf {
        for spec in w.remaining().to_vec() {
            let n = spec.shape.iter().product::<u64>() as usize;
            w.write_tensor(&spec.name, &vec![0.25; n]).unwrap();
        }
        w.finish().unwrap()
    }

    /// A tokenizer that could not be built is refused before anything is written, naming the
    /// export's one input (where the tables came from), else the destination.
    #[test]
    fn a_tokenizer_that_cannot_be_built_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let input = dir.path().join("in.gguf");
        let mut bad = tokenizer();
        bad.merges.push(("a".into(), "b".into()));
        let e = create(&dest, &bad, &[&input]).unwrap_err();
        match &e {
            WeightsError::TokenizerIn { path, source } => {
                assert_eq!(path, &input);
                assert!(
                    matches!(source, TokenizerError::MergeResultNotAToken { rank: 0, .. }),
                    "{source:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(text.starts_with(&input.display().to_string()), "{text}");
        assert!(
            text.contains("merge 0 (\"a\" \"b\") makes \"ab\""),
            "{text}"
        );
        bad = tokenizer();
        bad.tokens[10] = bad.tokens[11].clone();
        let e = create(&dest, &bad, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&dest.display().to_string()) && e.contains("token 11"),
            "{e}"
        );
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A non-finite value names the file it came from when the caller says which
    /// (`write_tensor_from`), else the destination; raw copies are checked as well.
    #[test]
    fn non_finite_values_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let shard = dir.path().join("model.safetensors");
        let n = 257 * 32;
        let mut values = vec![0.5f32; n];
        values[70] = f32::INFINITY;

        let mut w = create(&dest, &tokenizer(), &[&shard]).unwrap();
        let e = w
            .write_tensor_from(&shard, "wte.weight", &values)
            .unwrap_err();
        match &e {
            WeightsError::NonFinite {
                path,
                tensor,
                found,
            } => {
                assert_eq!((path, tensor.as_str()), (&shard, "wte.weight"));
                assert_eq!((found.index, found.value), (70, f32::INFINITY));
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.starts_with(&shard.display().to_string())
                && text.contains("a non-finite value (inf) at index 70")
                && text.contains("sound copy"),
            "{text}"
        );

        let mut w = create(&dest, &tokenizer(), &[]).unwrap();
        let e = w
            .write_tensor("wte.weight", &values)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&dest.display().to_string()), "{e}");
        assert!(e.contains("at index 70"), "{e}");

        let mut w = create(&dest, &tokenizer(), &[]).unwrap();
        let mut bytes = vec![0u8; 2 * n];
        bytes[2 * 5..2 * 6].copy_from_slice(&0x7e00u16.to_le_bytes());
        let e = w
            .write_encoded("wte.weight", &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(NaN) at index 5"), "{e}");
        drop(w);
        assert!(!dest.exists());
    }

    /// `check_runnable` (what `inspect` runs) finds a NaN that a recomputed checksum hides, and
    /// a tokenizer that cannot be built, naming the file, the tensor and the index.
    #[test]
    fn check_runnable_finds_what_the_writer_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let dest = write_all(create(&dir.path().join("ok.bin"), &tokenizer(), &[]).unwrap());
        let file = crate::WeightFile::open_verified(&dest).unwrap();
        file.check_runnable().unwrap();
        file.tokenizer().unwrap();
        let (data_offset, info) = (
            file.header().preamble.data_offset,
            file.header().tensors[4].clone(),
        );
        assert_eq!(
            (info.name.as_str(), info.dtype),
            ("h.0.attn.c_attn.weight", Dtype::F16)
        );
        drop(file);

        let mut bytes = std::fs::read(&dest).unwrap();
        let at = (data_offset + info.offset) as usize + 2 * 9;
        bytes[at..at + 2].copy_from_slice(&0xfc00u16.to_le_bytes());
        let sum = format::checksum(&bytes[data_offset as usize..]);
        bytes[48..56].copy_from_slice(&sum.to_le_bytes());
        let bad = dir.path().join("nan.bin");
        std::fs::write(&bad, &bytes).unwrap();
        let file = crate::WeightFile::open_verified(&bad).unwrap();
        let e = file.check_runnable().unwrap_err().to_string();
        assert!(
            e.starts_with(&bad.display().to_string())
                && e.contains(
                    "tensor h.0.attn.c_attn.weight holds a non-finite value (-inf) at index 9"
                ),
            "{e}"
        );
        assert!(file.check_finite("h.0.ln_1.weight").is_ok());
    }

    /// A finished file gets the same mode as one made by `File::create` in the same directory
    /// (0666 less the umask), not tempfile's owner-only 0600.
    #[cfg(unix)]
    #[test]
    fn renamed_partial_files_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ordinary = dir.path().join("ordinary");
        File::create(&ordinary).unwrap();
        let tmp = PartialFile::new_in(dir.path(), ".test-").unwrap();
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(".test-") && name.ends_with(".partial"),
            "{name}"
        );
        let done = dir.path().join("done");
        tmp.persist(&done, &[]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&done), mode(&ordinary));
    }
}
