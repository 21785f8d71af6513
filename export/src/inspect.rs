//! The `inspect` report: what a weight file holds, whether its checksum verifies, and whether it
//! can run (a tokenizer that builds, no NaN or infinite weight).

use std::fmt::Write;
use std::time::Instant;

use gpt2_weights::{Dtype, WeightFile};

/// Verifies `file`'s data checksum, checks that it can run ([`WeightFile::check_runnable`]) and
/// formats the report. Returns the text and whether both held (a failure is reported in the text
/// and must make the caller exit non-zero).
pub fn report(file: &WeightFile, list_tensors: bool) -> (String, bool) {
    let h = file.header();
    let c = &h.config;
    let mut s = String::new();
    let mb = |b: u64| b as f64 / 1e6;
    let _ = writeln!(
        s,
        "file:        {} ({:.1} MB)",
        file.path().display(),
        mb(file.file_len())
    );
    let _ = writeln!(
        s,
        "format:      gpt2-bench weights, version {}",
        h.preamble.version
    );
    // Provenance strings are whatever the file says: escaped, so a file cannot drive the terminal.
    let shown = gpt2_weights::input::printable;
    let _ = writeln!(s, "model:       {}", shown(&h.provenance.model_name));
    let _ = writeln!(s, "source:      {}", shown(&h.provenance.source));
    let _ = writeln!(s, "exporter:    {}", shown(&h.provenance.exporter));
    let _ = writeln!(
        s,
        "config:      {} layers, {} heads of {}, n_embd {}, MLP {}, context {}, vocab {}, \
         layer-norm eps {:e}, output layer {}",
        c.n_layer,
        c.n_head,
        c.head_dim(),
        c.n_embd,
        c.mlp_hidden,
        c.n_ctx,
        c.vocab_size,
        c.layer_norm_eps,
        if c.tied_output {
            "tied to wte"
        } else {
            "separate lm_head"
        }
    );
    let params = c.parameter_count();
    let _ = writeln!(
        s,
        "parameters:  {} ({:.1}M)",
        group_digits(params),
        params as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "tokenizer:   GPT-2 byte-level BPE, {} tokens, {} merges, end-of-text id {}",
        h.tokenizer.tokens.len(),
        h.tokenizer.merges.len(),
        h.tokenizer.eot_id
    );
    let _ = writeln!(
        s,
        "tensors:     {}, data {:.1} MB at offset {}",
        h.tensors.len(),
        mb(h.preamble.data_len),
        h.preamble.data_offset
    );
    // Per dtype: how many tensors and bytes, and the layout of its linear weights.
    for dtype in Dtype::ALL {
        let of: Vec<_> = h.tensors.iter().filter(|t| t.dtype == dtype).collect();
        if of.is_empty() {
            continue;
        }
        let bytes: u64 = of.iter().map(|t| t.byte_len).sum();
        let specs = c.expected_tensors();
        let has_linear = h
            .tensors
            .iter()
            .zip(&specs)
            .any(|(t, s)| t.dtype == dtype && s.role == gpt2_weights::Role::Linear);
        let layout = match (dtype, has_linear) {
            (Dtype::F32, true) => "linear weights stored [in, out]",
            (Dtype::F32, false) => "norms, biases, position embeddings",
            (Dtype::Q8_0, _) => "blocks of 32 along each row; linear weights stored [out, in]",
            _ => "linear weights stored [out, in]",
        };
        let _ = writeln!(
            s,
            "  {:<5} {:>4} tensors, {:>8.1} MB ({layout})",
            dtype.name(),
            of.len(),
            mb(bytes)
        );
    }
    let _ = writeln!(
        s,
        "read/token:  {:.1} MB (weight bytes a decode step reads once per token: every tensor but \
         wpe, the tied embedding once)",
        mb(file.bytes_per_token())
    );
    if list_tensors {
        for t in &h.tensors {
            let _ = writeln!(
                s,
                "  {:<28} {:<5} {:<14} offset {:>12}  {:>12} bytes",
                t.name,
                t.dtype.name(),
                format!("{:?}", t.shape),
                t.offset,
                t.byte_len
            );
        }
    }
    let start = Instant::now();
    let ok = match file.verify_checksum() {
        Ok(()) => {
            let secs = start.elapsed().as_secs_f64();
            let _ = writeln!(
                s,
                "checksum:    xxh3-64 {:016x} OK (verified {:.1} MB in {:.2} s)",
                h.preamble.data_checksum,
                mb(h.preamble.data_len),
                secs
            );
            true
        }
        Err(e) => {
            let _ = writeln!(s, "checksum:    FAILED: {e}");
            false
        }
    };
    // A checksum only says the bytes are the ones written; a file written by another tool (or
    // damaged under a recomputed checksum) can still hold a NaN or a tokenizer no run can build.
    // The same checks the exporters run on their inputs.
    let runnable = match file.check_runnable() {
        Ok(()) => {
            let _ = writeln!(
                s,
                "runnable:    yes (the tokenizer builds, every weight is finite)"
            );
            true
        }
        Err(e) => {
            let _ = writeln!(s, "runnable:    NO: {e}");
            false
        }
    };
    (s, ok && runnable)
}

/// 124439808 -> "124,439,808".
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits() {
        assert_eq!(super::group_digits(124_439_808), "124,439,808");
        assert_eq!(super::group_digits(999), "999");
        assert_eq!(super::group_digits(1000), "1,000");
    }
}
