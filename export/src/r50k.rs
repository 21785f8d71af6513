//! GPT-2's tokenizer tables, rebuilt offline from tiktoken-rs's compiled-in `r50k_base`.
//!
//! tiktoken stores GPT-2's BPE as a rank per byte string (rank = token id). GPT-2's own files,
//! `encoder.json` and `vocab.bpe`, hold the same information as a vocabulary plus ranked merges.
//! The merges are recovered from the ranks: a token of rank r is the merge of the two pieces that
//! byte-level BPE produces for its bytes when only merges of rank below r are allowed. Running
//! that for every token in rank order gives GPT-2's 50,000 merges in their original order.
//! A test encodes a varied corpus with both tiktoken and the rebuilt tables to prove they agree.

use std::collections::HashMap;

use gpt2_weights::TokenizerData;
use gpt2_weights::tokenizer::bytes_to_token_string;

/// GPT-2's vocabulary size, end-of-text included.
pub const GPT2_VOCAB_SIZE: u32 = 50257;
/// GPT-2's end-of-text id.
pub const GPT2_EOT_ID: u32 = 50256;

/// Raw bytes of every GPT-2 token, indexed by id (50,257 entries).
pub fn gpt2_token_bytes() -> Vec<Vec<u8>> {
    let bpe = tiktoken_rs::r50k_base_singleton();
    (0..GPT2_VOCAB_SIZE)
        .map(|id| {
            // r50k_base decodes every id below 50257 (50256 through its special-token table),
            // so an error here means a broken tiktoken-rs build, not bad user input.
            bpe.decode_bytes(&[id])
                .unwrap_or_else(|e| panic!("tiktoken-rs r50k_base cannot decode id {id}: {e:?}"))
        })
        .collect()
}

/// GPT-2's tokenizer tables (`encoder.json` + `vocab.bpe` content).
pub fn gpt2_tokenizer_data() -> TokenizerData {
    let token_bytes = gpt2_token_bytes();
    let rank: HashMap<&[u8], u32> = token_bytes
        .iter()
        .enumerate()
        .map(|(id, b)| (b.as_slice(), id as u32))
        .collect();
    let mut merges = Vec::with_capacity(token_bytes.len());
    for (id, bytes) in token_bytes.iter().enumerate() {
        if id as u32 == GPT2_EOT_ID || bytes.len() < 2 {
            continue;
        }
        let (a, b) = split_by_lower_ranks(bytes, id as u32, &rank);
        merges.push((bytes_to_token_string(a), bytes_to_token_string(b)));
    }
    TokenizerData {
        tokens: token_bytes
            .iter()
            .map(|b| bytes_to_token_string(b))
            .collect(),
        merges,
        eot_id: GPT2_EOT_ID,
    }
}

/// Runs byte-level BPE on `bytes` using only merges whose result ranks below `max_rank`, and
/// returns the two pieces that remain: the merge that creates the token of rank `max_rank`.
fn split_by_lower_ranks<'a>(
    bytes: &'a [u8],
    max_rank: u32,
    rank: &HashMap<&[u8], u32>,
) -> (&'a [u8], &'a [u8]) {
    // Piece boundaries as byte offsets; pieces are bytes[bounds[i]..bounds[i + 1]].
    let mut bounds: Vec<usize> = (0..=bytes.len()).collect();
    loop {
        let best = (0..bounds.len() - 2)
            .filter_map(|i| {
                rank.get(&bytes[bounds[i]..bounds[i + 2]])
                    .filter(|&&r| r < max_rank)
                    .map(|&r| (r, i))
            })
            .min();
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    assert_eq!(
        bounds.len(),
        3,
        "r50k token {max_rank} is not the merge of two lower-ranked tokens"
    );
    (&bytes[bounds[0]..bounds[1]], &bytes[bounds[1]..bounds[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt2_weights::Gpt2Tokenizer;

    #[test]
    fn tables_have_gpt2_sizes() {
        let data = gpt2_tokenizer_data();
        assert_eq!(data.tokens.len(), 50257);
        assert_eq!(data.merges.len(), 50000);
        assert_eq!(data.tokens[50256], "<|endoftext|>");
        // The first merges of GPT-2's vocab.bpe.
        assert_eq!(data.merges[0], ("Ġ".to_string(), "t".to_string()));
        assert_eq!(data.merges[1], ("Ġ".to_string(), "a".to_string()));
        assert_eq!(data.tokens[15496], "Hello");
        assert_eq!(data.tokens[995], "Ġworld");
    }

    /// The rebuilt tables, run through the `tokenizers` crate, must give tiktoken's ids.
    #[test]
    fn rebuilt_tokenizer_matches_tiktoken() {
        let tok = Gpt2Tokenizer::from_data(&gpt2_tokenizer_data()).unwrap();
        let reference = tiktoken_rs::r50k_base_singleton();
        let cases = [
            "Hello world",
            "The meaning of life is",
            "  leading spaces and    repeated   spaces ",
            "line one\nline two\r\n\ttabbed\n\n\n",
            "naïve café, Zürich, Ελληνικά, русский, 日本語のテキスト, 한국어",
            "emoji 😀 family 👨‍👩‍👧‍👦 flags 🇫🇷 and skin tones 👍🏽",
            "numbers 1234567890 3.14159 -42 1e-5 0x1F",
            "contractions: don't, I'm, we'll, they've, she's, it'd",
            "code: fn main() { println!(\"{}\", a[i] + b->c); } // ok",
            "<|endoftext|> is ordinary text here",
            "",
        ];
        for text in cases {
            let ids = tok.encode(text).unwrap();
            assert_eq!(ids, reference.encode_ordinary(text), "{text:?}");
            assert_eq!(tok.decode(&ids), text, "round trip of {text:?}");
        }
        assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    }

    #[test]
    fn decoding_a_token_that_splits_a_character() {
        let tok = Gpt2Tokenizer::from_data(&gpt2_tokenizer_data()).unwrap();
        let ids = tok.encode("😀").unwrap();
        assert!(ids.len() > 1, "the emoji spans several byte-level tokens");
        let mut d = gpt2_weights::StreamDecoder::new();
        let first = d.push(tok.token_bytes(ids[0]).unwrap());
        assert_eq!(first, "", "half a character is held back");
        let rest: String = ids[1..]
            .iter()
            .map(|&id| d.push(tok.token_bytes(id).unwrap()))
            .collect();
        assert_eq!(rest, "😀");
    }
}
