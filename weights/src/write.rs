//! Writing a weight file, safely.
//!
//! [`WeightWriter`] streams tensors one at a time (peak memory is one tensor, not the model) into
//! a temporary file created next to the destination, then fills in the checksums, flushes to disk
//! and renames the temporary file over the destination. So an export that fails or is
//! interrupted never leaves a partial file at the destination and never damages a file already
//! there; a reader that has the old file mapped keeps its (old) inode.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::NamedTempFile;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{FormatError, Result, WeightsError};
use crate::format::{
    self, Config, FORMAT_VERSION, PREAMBLE_LEN, Preamble, Provenance, TensorInfo, align_up,
};
use crate::tokenizer::TokenizerData;

/// Temporary files of exports in progress, so that an interrupt handler can remove them
/// ([`remove_partial_files`]): a process killed by a signal runs no destructors.
static PARTIAL_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn partial_files() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a list that is still valid.
    PARTIAL_FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deletes the temporary file of every export still in progress. For a Ctrl-C handler: call it,
/// then exit. Returns how many files were removed.
pub fn remove_partial_files() -> usize {
    partial_files()
        .drain(..)
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// A temporary file `<prefix>XXXXXX.partial` in `dir`, to be renamed over a destination once
/// complete. Created with mode 0666 less the umask, like any file a program creates, rather
/// than tempfile's private 0600: the renamed file is ordinary output, and a report or chart
/// readable only by its creator would surprise whoever shares the directory.
pub fn partial_file_in(dir: &Path, prefix: &str) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes one weight file; see the module docs.
pub struct WeightWriter {
    dest: PathBuf,
    /// `None` once [`WeightWriter::finish`] has renamed it into place.
    tmp: Option<NamedTempFile>,
    tmp_path: PathBuf,
    header_block: Vec<u8>,
    data_offset: u64,
    plan: Vec<TensorInfo>,
    data_len: u64,
    next: usize,
    written: u64,
    hasher: Xxh3,
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
    /// Starts a file for `config` at `dest`. Checks the config and tokenizer, and that a file can
    /// be created in the destination directory, before any tensor is produced.
    pub fn create(
        dest: impl AsRef<Path>,
        config: &Config,
        provenance: &Provenance,
        tokenizer: &TokenizerData,
    ) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let invalid = |e: FormatError| WeightsError::format(&dest, e);
        config.validate().map_err(invalid)?;
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
        if dest.is_dir() {
            return Err(WeightsError::Write {
                path: dest,
                message: "is a directory; give a file name such as weights/gpt2.bin".into(),
            });
        }
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
        let mut tmp = partial_file_in(&dir, ".gpt2-export-").map_err(|e| WeightsError::Write {
            path: dest.clone(),
            message: format!("cannot create a file in {}: {e}", dir.display()),
        })?;
        let tmp_path = tmp.path().to_path_buf();
        partial_files().push(tmp_path.clone());

        let (plan, data_len) = format::plan_tensors(config);
        let header_block = format::encode_header_block(config, provenance, tokenizer, &plan);
        let data_offset = align_up((PREAMBLE_LEN + header_block.len()) as u64);
        // I/O errors name the destination (what the user asked for), not the hidden temp file.
        let io = |e| WeightsError::io(&dest, e);
        // The preamble is written last, once the checksums are known; reserve its bytes now.
        let file = tmp.as_file_mut();
        file.write_all(&[0u8; PREAMBLE_LEN]).map_err(io)?;
        file.write_all(&header_block).map_err(io)?;
        let pad = data_offset as usize - PREAMBLE_LEN - header_block.len();
        file.write_all(&vec![0u8; pad]).map_err(io)?;

        Ok(WeightWriter {
            dest,
            tmp: Some(tmp),
            tmp_path,
            header_block,
            data_offset,
            plan,
            data_len,
            next: 0,
            written: 0,
            hasher: Xxh3::new(),
        })
    }

    /// The tensors still to write, in the order [`write_tensor`](Self::write_tensor) expects.
    pub fn remaining(&self) -> &[TensorInfo] {
        &self.plan[self.next..]
    }

    /// Appends the next tensor. Tensors must come in [`Config::expected_tensors`] order, each with
    /// exactly the number of elements its shape implies.
    pub fn write_tensor(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let Some(info) = self.plan.get(self.next) else {
            return Err(self.write_error(format!("tensor {name} is one more than the model has")));
        };
        if info.name != name {
            return Err(self.write_error(format!(
                "tensor {name} written out of order; expected {}",
                info.name
            )));
        }
        if data.len() as u64 * 4 != info.byte_len {
            return Err(self.write_error(format!(
                "tensor {name} has {} values; its shape {:?} needs {}",
                data.len(),
                info.shape,
                info.byte_len / 4
            )));
        }
        let (offset, byte_len) = (info.offset, info.byte_len);
        let pad = vec![0u8; (offset - self.written) as usize];
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.hasher.update(&pad);
        self.hasher.update(bytes);
        let path = &self.dest;
        let Some(tmp) = self.tmp.as_mut() else {
            return Err(WeightsError::Write {
                path: path.clone(),
                message: "write after finish()".into(),
            });
        };
        let file = tmp.as_file_mut();
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
        let file: &mut File = tmp.as_file_mut();
        let io = |e| WeightsError::io(&io_path, e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&format::encode_preamble(&preamble))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        let dest = self.dest.clone();
        tmp.persist(&dest).map_err(|e| WeightsError::Write {
            path: dest.clone(),
            message: format!("cannot move the finished file into place: {}", e.error),
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

impl Drop for WeightWriter {
    fn drop(&mut self) {
        // The temporary file is gone now: renamed into place by finish(), or deleted by the
        // NamedTempFile's own destructor right after this.
        partial_files().retain(|p| p != &self.tmp_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished file gets the same mode as one made by `File::create` in the same directory
    /// (0666 less the umask), not tempfile's owner-only 0600.
    #[cfg(unix)]
    #[test]
    fn renamed_partial_files_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ordinary = dir.path().join("ordinary");
        File::create(&ordinary).unwrap();
        let tmp = partial_file_in(dir.path(), ".test-").unwrap();
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
        tmp.persist(&done).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&done), mode(&ordinary));
    }
}
