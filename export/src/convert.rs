//! Converting an existing gpt2-bench file to another dtype (`gpt2-export --from FILE --dtype D`).
//!
//! The source is opened with its data checksum verified (every byte read is checked), then each
//! tensor goes to the output in the dtype [`Config::tensor_dtypes`] gives it: a tensor already in
//! that dtype is copied byte for byte (so q8_0 to q8_0 or f16 to f16 never requantizes or rounds
//! again), any other is dequantized to f32 in its logical layout and converted once. Tokenizer,
//! config and model name are carried over; the source records where the file came from. A
//! tokenizer that cannot be built or a NaN or infinite value is refused naming the source file.
//!
//! [`Config::tensor_dtypes`]: gpt2_weights::Config::tensor_dtypes

use std::path::{Path, PathBuf};

use gpt2_weights::{Dtype, Provenance, WeightFile, WeightWriter};

use crate::error::ExportError;

/// Writes `src` with its matrices in `dtype` (`None`: each tensor in its own dtype, a verified
/// copy) to `out`; returns the path written.
pub fn convert_file(
    src: &Path,
    dtype: Option<Dtype>,
    out: &Path,
    progress: &dyn Fn(usize, usize),
) -> Result<PathBuf, ExportError> {
    let file = WeightFile::open_verified(src)?;
    // The tokenizer and the values come from `src`: checked there first, so that a refusal names
    // `src` (and a value's index as stored in it), the file to replace, not the output.
    file.check_tokenizer()?;
    let header = file.header();
    let config = header.config;
    let provenance = Provenance {
        model_name: header.provenance.model_name.clone(),
        source: format!(
            "{} (converted from {})",
            header.provenance.source,
            src.display()
        ),
        exporter: crate::exporter_id(),
    };
    let dtypes = match dtype {
        Some(d) => config.tensor_dtypes(d),
        None => header.tensors.iter().map(|t| t.dtype).collect(),
    };
    let mut writer = WeightWriter::create(
        out,
        &config,
        &provenance,
        &header.tokenizer,
        &[src],
        &dtypes,
    )?;
    let names: Vec<String> = writer.remaining().iter().map(|s| s.name.clone()).collect();
    for (i, (name, &want)) in names.iter().zip(&dtypes).enumerate() {
        file.check_finite(name)?;
        let (bytes, have) = file.raw(name)?;
        if have == want {
            writer.write_encoded(name, bytes)?;
        } else {
            writer.write_tensor(name, &file.logical_f32(name)?)?;
        }
        progress(i + 1, names.len());
    }
    Ok(writer.finish()?)
}
