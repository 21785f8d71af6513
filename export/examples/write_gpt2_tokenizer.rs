//! Writes GPT-2's `vocab.json` and `merges.txt`, rebuilt offline from tiktoken-rs's r50k_base
//! tables, into a directory: the tokenizer files of a Hugging Face GPT-2 checkpoint.
//!
//! Used by `export/tests/fixtures/make_golden.py` to give its small transformers-made checkpoint
//! GPT-2's real tokenizer without a download: `cargo run -p gpt2-export --example
//! write_gpt2_tokenizer -- DIR`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let data = gpt2_export::r50k::gpt2_tokenizer_data();
    let vocab: serde_json::Map<String, serde_json::Value> = data
        .tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), serde_json::Value::from(id)))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_string(&vocab).map_err(std::io::Error::other)?,
    )?;
    let mut merges = String::from("#version: 0.2\n");
    for (a, b) in &data.merges {
        merges.push_str(a);
        merges.push(' ');
        merges.push_str(b);
        merges.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), merges)?;
    eprintln!("wrote {0}/vocab.json and {0}/merges.txt", dir.display());
    Ok(())
}
