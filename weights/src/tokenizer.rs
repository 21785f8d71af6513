//! GPT-2's byte-level BPE tokenizer, built from the tables stored in every weight file.
//!
//! A weight file stores the tokenizer the way GPT-2 shipped it: the vocabulary (`encoder.json`:
//! one string per id, written in GPT-2's byte-level alphabet, where each of the 256 byte values
//! is mapped to a printable character) and the ranked merges (`vocab.bpe`). From those:
//! - encoding runs the `tokenizers` crate's BPE with GPT-2's ByteLevel pre-tokenizer (no prefix
//!   space), which gives GPT-2's exact ids ("Hello world" -> [15496, 995]);
//! - decoding maps each id back to its raw bytes with our own table, so it is exact and can be
//!   streamed: [`StreamDecoder`] holds back the bytes of a UTF-8 character that a token split.
//!
//! The text `<|endoftext|>` in a prompt is encoded as ordinary text (like tiktoken's
//! `encode_ordinary`), whatever the source of the tables; the end-of-text id is only ever
//! produced by the model.

use std::collections::HashMap;

use crate::error::{Result, WeightsError};

/// The tokenizer tables as stored in a weight file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenizerData {
    /// Token strings in id order, in GPT-2's byte-level alphabet (see [`bytes_to_unicode`]).
    pub tokens: Vec<String>,
    /// BPE merges, highest priority first (rank 0 first), as in `vocab.bpe`.
    pub merges: Vec<(String, String)>,
    /// The end-of-text id (50256 for GPT-2).
    pub eot_id: u32,
}

/// GPT-2's map from byte value to the printable character that stands for it in token strings.
///
/// Printable Latin-1 bytes map to themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD)
/// map to U+0100 onwards, in byte order. So a space is `Ġ` (U+0120) and a newline `Ċ` (U+010A).
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next_extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next_extra += 1;
            char::from_u32(255 + next_extra).unwrap_or('\0')
        };
    }
    map
}

/// The inverse of [`bytes_to_unicode`].
pub fn unicode_to_bytes() -> HashMap<char, u8> {
    bytes_to_unicode()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// Writes raw bytes in GPT-2's byte-level alphabet (how `encoder.json` spells a token).
pub fn bytes_to_token_string(bytes: &[u8]) -> String {
    let map = bytes_to_unicode();
    bytes.iter().map(|&b| map[b as usize]).collect()
}

/// GPT-2's tokenizer: exact encoding and byte-exact decoding.
pub struct Gpt2Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// Raw bytes of every token, indexed by id.
    token_bytes: Vec<Vec<u8>>,
    eot_id: u32,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer")
            .field("vocab_size", &self.token_bytes.len())
            .field("eot_id", &self.eot_id)
            .finish()
    }
}

impl Gpt2Tokenizer {
    /// Builds the tokenizer from stored tables. Fails if a token string uses a character outside
    /// the byte-level alphabet, a token appears twice, or a merge names an unknown token.
    pub fn from_data(data: &TokenizerData) -> Result<Self> {
        let to_byte = unicode_to_bytes();
        let mut token_bytes = Vec::with_capacity(data.tokens.len());
        let mut vocab = HashMap::with_capacity(data.tokens.len());
        for (id, token) in data.tokens.iter().enumerate() {
            let bytes: Option<Vec<u8>> = token.chars().map(|c| to_byte.get(&c).copied()).collect();
            // The end-of-text token is spelled `<|endoftext|>`, all printable ASCII, so it maps too.
            let bytes = bytes.ok_or_else(|| {
                WeightsError::Tokenizer(format!(
                    "token {id} ({:?}) has a character outside GPT-2's byte-level alphabet",
                    crate::input::printable(token)
                ))
            })?;
            token_bytes.push(bytes);
            if vocab.insert(token.clone(), id as u32).is_some() {
                return Err(WeightsError::Tokenizer(format!(
                    "token {:?} appears twice in the vocabulary",
                    crate::input::printable(token)
                )));
            }
        }
        for (rank, (a, b)) in data.merges.iter().enumerate() {
            if !vocab.contains_key(a) || !vocab.contains_key(b) {
                return Err(WeightsError::Tokenizer(format!(
                    "merge {rank} ({} {}) names a token that is not in the vocabulary",
                    crate::input::printable(a),
                    crate::input::printable(b)
                )));
            }
        }
        let model = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                data.merges.clone(),
            )
            .build()
            .map_err(|e| {
                WeightsError::Tokenizer(format!(
                    "cannot build BPE: {}",
                    crate::input::printable(&e.to_string())
                ))
            })?;
        let mut bpe = tokenizers::Tokenizer::new(model);
        bpe.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::default().add_prefix_space(false),
        ));
        Ok(Gpt2Tokenizer {
            bpe,
            token_bytes,
            eot_id: data.eot_id,
        })
    }

    /// Encodes text to token ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .bpe
            .encode(text, false)
            .map_err(|e| WeightsError::Tokenizer(format!("cannot encode the prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes of one token, or `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(Vec::as_slice)
    }

    /// Concatenated bytes of `ids`; ids outside the vocabulary are skipped.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter_map(|&id| self.token_bytes(id))
            .flatten()
            .copied()
            .collect()
    }

    /// Decodes to text; bytes that are not valid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn eot_id(&self) -> u32 {
        self.eot_id
    }
}

/// Turns a stream of token bytes into text without ever splitting a UTF-8 character.
///
/// GPT-2 tokens are byte sequences: an emoji is often two or three tokens, none of which is valid
/// UTF-8 alone. `push` returns only whole characters and keeps an incomplete tail for the next
/// token; bytes that can never become valid UTF-8 are emitted as U+FFFD.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that no continuation can make valid.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left at the end of the stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let map = bytes_to_unicode();
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
        assert_eq!(map[b'A' as usize], 'A');
        assert_eq!(unicode_to_bytes().len(), 256);
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let s = "é😀";
        let b = s.as_bytes();
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        for byte in b {
            out.push_str(&d.push(std::slice::from_ref(byte)));
        }
        out.push_str(&d.finish());
        assert_eq!(out, s);

        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&b[..1]), "");
        assert_eq!(d.push(&b[1..4]), "é");
        assert_eq!(d.push(&b[4..]), "😀");
    }

    #[test]
    fn stream_decoder_replaces_invalid_bytes() {
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push(&[0xF0, 0x9F]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[test]
    fn rejects_bad_tables() {
        let data = TokenizerData {
            tokens: vec!["a".into(), "a".into()],
            merges: vec![],
            eot_id: 1,
        };
        assert!(Gpt2Tokenizer::from_data(&data).is_err());
        let data = TokenizerData {
            tokens: vec!["a".into(), "b".into()],
            merges: vec![("a".into(), "z".into())],
            eot_id: 1,
        };
        let err = Gpt2Tokenizer::from_data(&data).unwrap_err().to_string();
        assert!(err.contains("merge 0"), "{err}");
    }
}
