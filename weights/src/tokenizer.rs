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

use crate::error::{Result, TokenizerError, WeightsError};

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

/// Checks that a GPT-2 tokenizer can be built from `data`: every token is spelled in GPT-2's
/// byte-level alphabet and appears once; every merge joins two tokens into a third (the BPE
/// builder of the `tokenizers` crate refuses a merge whose parts or result are not tokens, and
/// panics instead on a result longer than every token); the end-of-text id is a token. The first
/// problem is named by token id or merge rank.
///
/// The one definition of a runnable tokenizer: [`Gpt2Tokenizer::from_data`] (every run's
/// loader), [`crate::WeightWriter::create`] (so no file written here has a tokenizer that cannot
/// run), [`crate::WeightFile::check_runnable`] (`inspect`) and gpt2-export's GGUF import all call
/// it.
pub fn validate(data: &TokenizerData) -> Result<(), TokenizerError> {
    check(data).map(|_| ())
}

/// What [`check`] finds on the way that the loader needs next: each token's id, and its raw
/// bytes (indexed by id).
type Checked<'a> = (HashMap<&'a str, u32>, Vec<Vec<u8>>);

/// [`validate`], returning [`Checked`].
fn check(data: &TokenizerData) -> Result<Checked<'_>, TokenizerError> {
    let shown = crate::input::printable;
    let to_byte = unicode_to_bytes();
    let mut token_bytes = Vec::with_capacity(data.tokens.len());
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(data.tokens.len());
    for (id, token) in data.tokens.iter().enumerate() {
        // The end-of-text token is spelled `<|endoftext|>`, all printable ASCII, so it maps too.
        let bytes: Option<Vec<u8>> = token.chars().map(|c| to_byte.get(&c).copied()).collect();
        let bytes = bytes.ok_or_else(|| TokenizerError::NotByteLevel {
            id,
            token: shown(token),
        })?;
        token_bytes.push(bytes);
        if let Some(first) = vocab.insert(token, id as u32) {
            return Err(TokenizerError::DuplicateToken {
                id,
                first: first as usize,
                token: shown(token),
            });
        }
    }
    let mut joined = String::new();
    for (rank, (a, b)) in data.merges.iter().enumerate() {
        if let Some(part) = [a, b].into_iter().find(|p| !vocab.contains_key(p.as_str())) {
            return Err(TokenizerError::UnknownMergePart {
                rank,
                a: shown(a),
                b: shown(b),
                part: shown(part),
            });
        }
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        if !vocab.contains_key(joined.as_str()) {
            return Err(TokenizerError::MergeResultNotAToken {
                rank,
                a: shown(a),
                b: shown(b),
                result: shown(&joined),
            });
        }
    }
    if data.eot_id as usize >= data.tokens.len() {
        return Err(TokenizerError::EotOutOfRange {
            eot_id: data.eot_id,
            tokens: data.tokens.len(),
        });
    }
    Ok((vocab, token_bytes))
}

impl Gpt2Tokenizer {
    /// Builds the tokenizer from stored tables; fails as [`validate`] says.
    pub fn from_data(data: &TokenizerData) -> Result<Self> {
        let (vocab, token_bytes) = check(data)?;
        let model = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .map(|(token, id)| (token.to_string(), id))
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

    /// A vocabulary of the 256 byte-level characters, `Ġt`, `he`, `Ġthe` and `<|endoftext|>`,
    /// with the merges that make the three words.
    fn small() -> TokenizerData {
        let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        tokens.extend(["Ġt", "he", "Ġthe", "<|endoftext|>"].map(String::from));
        let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec();
        TokenizerData {
            tokens,
            merges,
            eot_id: 259,
        }
    }

    #[test]
    fn valid_tables_build_and_encode() {
        let data = small();
        assert_eq!(validate(&data), Ok(()));
        let tok = Gpt2Tokenizer::from_data(&data).unwrap();
        assert_eq!(tok.encode(" the").unwrap(), vec![258]);
    }

    /// Each problem is named by its token id or merge rank, and `from_data` (the loader) refuses
    /// exactly what `validate` refuses, with the same text.
    #[test]
    fn rejects_bad_tables_naming_the_token_or_merge() {
        type Change = fn(&mut TokenizerData);
        let cases: [(Change, TokenizerError); 6] = [
            (
                |d| d.tokens[257] = "Ġt".into(),
                TokenizerError::DuplicateToken {
                    id: 257,
                    first: 256,
                    token: "Ġt".into(),
                },
            ),
            (
                |d| d.tokens[3] = "a\n\u{1b}".into(),
                TokenizerError::NotByteLevel {
                    id: 3,
                    token: "a\\n\\u{1b}".into(),
                },
            ),
            (
                |d| d.merges[1] = ("h".into(), "zz".into()),
                TokenizerError::UnknownMergePart {
                    rank: 1,
                    a: "h".into(),
                    b: "zz".into(),
                    part: "zz".into(),
                },
            ),
            (
                |d| d.merges[0] = ("<|".into(), "t".into()),
                TokenizerError::UnknownMergePart {
                    rank: 0,
                    a: "<|".into(),
                    b: "t".into(),
                    part: "<|".into(),
                },
            ),
            (
                |d| d.merges.push(("t".into(), "h".into())),
                TokenizerError::MergeResultNotAToken {
                    rank: 3,
                    a: "t".into(),
                    b: "h".into(),
                    result: "th".into(),
                },
            ),
            (
                |d| d.eot_id = 260,
                TokenizerError::EotOutOfRange {
                    eot_id: 260,
                    tokens: 260,
                },
            ),
        ];
        for (change, want) in cases {
            let mut data = small();
            change(&mut data);
            assert_eq!(validate(&data), Err(want.clone()));
            let loaded = Gpt2Tokenizer::from_data(&data).unwrap_err().to_string();
            assert_eq!(loaded, format!("tokenizer: {want}"));
        }
        // Escaped, so a token cannot reach a terminal as control characters.
        let mut data = small();
        data.tokens[3] = "a\n\u{1b}".into();
        let text = validate(&data).unwrap_err().to_string();
        assert!(!text.chars().any(char::is_control), "{text}");
    }

    /// A merge longer than every token used to reach the BPE builder, which panics on it
    /// (it copies the merge into a buffer the length of the longest token).
    #[test]
    fn a_merge_longer_than_every_token_is_an_error_not_a_panic() {
        let mut data = small();
        data.merges.push(("Ġthe".into(), "Ġthe".into()));
        let e = Gpt2Tokenizer::from_data(&data).unwrap_err().to_string();
        assert!(e.contains("merge 3") && e.contains("ĠtheĠthe"), "{e}");
    }
}
