//! Tokenizers built from a GGUF's `tokenizer.ggml.*` metadata, matching llama.cpp token for token.
//!
//! ```text
//!  text ──► special-token partition ──► text fragments ──► SPM  (spm.rs: ▁ spaces, score merges)
//!            (parse_special: <|im_end|>      │          └─► BPE  (pretok.rs words → bpe.rs merges)
//!             etc. become single tokens)     └── special tokens pass through
//! ```
//!
//! Decoding maps each id to its bytes ([`Tokenizer::token_to_piece`]); a piece may be part of a
//! UTF-8 character, so streaming output goes through [`StreamDecoder`].

mod bpe;
mod pretok;
mod spm;
mod strings;
mod unicode_table;

use std::collections::HashSet;

use crate::gguf::GgufFile;
use crate::{Result, bail};
pub use pretok::PreTokenizer;

// Token attributes, as llama.cpp derives them from `tokenizer.ggml.token_type`.
const ATTR_UNKNOWN: u8 = 1 << 0;
const ATTR_UNUSED: u8 = 1 << 1;
const ATTR_NORMAL: u8 = 1 << 2;
const ATTR_CONTROL: u8 = 1 << 3;
const ATTR_USER_DEFINED: u8 = 1 << 4;
const ATTR_BYTE: u8 = 1 << 5;

/// `tokenizer.ggml.token_type` values (gguf-py's `TokenType`) to attributes.
fn attr_of_type(t: i64) -> u8 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0, // undefined
    }
}

/// Token texts that end generation (llama.cpp's list, by text, for files whose metadata only names
/// the EOS token: e.g. ChatML's `<|im_end|>` while EOS is `<|endoftext|>`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// Texts of end-of-turn, fill-in-the-middle pad/repo/file-separator tokens; llama.cpp makes the
/// first one found of each kind end generation too and forces it to be a control token.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Fill-in-the-middle prefix/suffix/middle tokens: not EOG, but forced to be control tokens too.
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];

enum Model {
    /// SentencePiece (`llama`).
    Spm,
    /// Byte-level BPE (`gpt2`).
    Bpe { pre: PreTokenizer, ignore_merges: bool, merges: bpe::Merges },
}

pub struct Tokenizer {
    model: Model,
    /// The vocabulary's texts, found by id and by text (a repeated text maps to its last id).
    tokens: strings::StrTable,
    scores: Vec<f32>,
    attrs: Vec<u8>,
    /// GPT-2's byte spelling (byte-level BPE only).
    bytes: bpe::ByteMap,
    /// Each token's bytes with special tokens rendered (llama.cpp's piece cache).
    pieces: strings::Packed,
    /// Control, user-defined and unknown tokens, longest text first: matched in this order.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: HashSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl Tokenizer {
    /// Build the tokenizer from GGUF metadata (tensors are not needed: vocab-only files work).
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let model_name = f.get_str("tokenizer.ggml.model").unwrap_or("");
        let Some(list) = f.get_array("tokenizer.ggml.tokens") else {
            bail!("no tokenizer in this file: missing `tokenizer.ggml.tokens`");
        };
        let n = list.len();
        if let Some(i) = list.iter().position(|v| v.as_str().is_none()) {
            bail!("`tokenizer.ggml.tokens` entry {i} is not a string");
        }
        let texts = list.iter().enumerate().map(|(i, v)| match v.as_str().unwrap_or("") {
            "" => std::borrow::Cow::Owned(format!("[EMPTY_{i}]")),
            s => std::borrow::Cow::Borrowed(s),
        });
        let tokens = strings::StrTable::new(texts, strings::Repeated::Last)?;
        let scores = match f.get_array("tokenizer.ggml.scores") {
            Some(a) if a.len() >= n => a.iter().take(n).map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
            Some(a) => bail!("`tokenizer.ggml.scores` has {} entries for {n} tokens", a.len()),
            None => vec![0.0; n],
        };
        let mut attrs: Vec<u8> = match f.get_array("tokenizer.ggml.token_type") {
            Some(a) if a.len() >= n => a.iter().take(n).map(|v| attr_of_type(v.as_i64().unwrap_or(0))).collect(),
            Some(a) => bail!("`tokenizer.ggml.token_type` has {} entries for {n} tokens", a.len()),
            None => vec![ATTR_NORMAL; n],
        };

        // Model, its default special ids and flags (overridden by metadata below).
        let (model, mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix) = match model_name {
            "llama" => (Model::Spm, Some(1), Some(2), Some(0), true, true),
            "gpt2" => {
                let pre = pretok::PreConfig::from_name(f.get_str("tokenizer.ggml.pre"))?;
                let Some(lines) = f.get_array("tokenizer.ggml.merges") else {
                    bail!("BPE tokenizer without `tokenizer.ggml.merges`");
                };
                let merges = bpe::Merges::new(lines.iter().map(|v| v.as_str().unwrap_or("")))?;
                let model = Model::Bpe { pre: pre.kind, ignore_merges: pre.ignore_merges, merges };
                (model, Some(11), Some(11), None, pre.add_bos, false)
            }
            "" => bail!("missing `tokenizer.ggml.model`"),
            other => {
                bail!("unsupported tokenizer model `tokenizer.ggml.model = {other}` (prima supports llama and gpt2)")
            }
        };
        if let Some(v) = f.get_bool("tokenizer.ggml.add_space_prefix") {
            add_space_prefix = v;
        }
        let read_id = |key: &str, default: Option<u32>| -> Option<u32> {
            let default = default.filter(|&d| (d as usize) < n);
            match f.get_u64(key) {
                Some(id) if (id as usize) < n => Some(id as u32),
                _ => default,
            }
        };
        bos = read_id("tokenizer.ggml.bos_token_id", bos);
        eos = read_id("tokenizer.ggml.eos_token_id", eos);
        unk = read_id("tokenizer.ggml.unknown_token_id", unk);
        let mut eot = read_id("tokenizer.ggml.eot_token_id", None);
        let mut eom = read_id("tokenizer.ggml.eom_token_id", None);
        let pad = read_id("tokenizer.ggml.padding_token_id", None);
        let mut fim_pad = read_id("tokenizer.ggml.fim_pad_token_id", None);
        let mut fim_rep = read_id("tokenizer.ggml.fim_rep_token_id", None);
        let mut fim_sep = read_id("tokenizer.ggml.fim_sep_token_id", None);
        let mut fim_pre = read_id("tokenizer.ggml.fim_pre_token_id", read_id("tokenizer.ggml.prefix_token_id", None));
        let mut fim_suf = read_id("tokenizer.ggml.fim_suf_token_id", read_id("tokenizer.ggml.suffix_token_id", None));
        let mut fim_mid = read_id("tokenizer.ggml.fim_mid_token_id", read_id("tokenizer.ggml.middle_token_id", None));
        if let Some(v) = f.get_bool("tokenizer.ggml.add_bos_token") {
            add_bos = v;
        }
        let add_eos = f.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);

        // Recognise end-of-turn and similar tokens by their text, as llama.cpp does; whatever is
        // found is forced to be a control token. (llama.cpp walks a hash map, so "first" is
        // unspecified there; here it is the lowest id.)
        let find = |texts: &[&str]| texts.iter().filter_map(|t| tokens.find(t)).min();
        for (slot, texts) in [
            (&mut eot, EOT_TEXTS),
            (&mut eom, EOM_TEXTS),
            (&mut fim_pad, FIM_PAD_TEXTS),
            (&mut fim_rep, FIM_REP_TEXTS),
            (&mut fim_sep, FIM_SEP_TEXTS),
            (&mut fim_pre, FIM_PRE_TEXTS),
            (&mut fim_suf, FIM_SUF_TEXTS),
            (&mut fim_mid, FIM_MID_TEXTS),
        ] {
            if slot.is_none() {
                *slot = find(texts);
                if let Some(id) = *slot {
                    attrs[id as usize] |= ATTR_CONTROL;
                }
            }
        }
        let mut eog: HashSet<u32> = [fim_pad, fim_rep, fim_sep, eos, eot, eom].into_iter().flatten().collect();
        for id in EOG_TEXTS.iter().filter_map(|t| tokens.find(t)) {
            eog.insert(id);
            attrs[id as usize] |= ATTR_CONTROL;
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0)
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens.get(i as usize).map_or(0, str::len)));

        let mut tok = Tokenizer {
            model,
            tokens,
            scores,
            attrs,
            bytes: bpe::ByteMap::new(),
            pieces: strings::Packed::default(),
            specials,
            bos,
            eos,
            eot,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        };
        let mut pieces = strings::Packed::default();
        for id in 0..n as u32 {
            pieces.push(&tok.render_piece(id));
        }
        tok.pieces = pieces;
        Ok(tok)
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn token (`<|im_end|>`, `<|eot_id|>`, …) when the vocabulary has one.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Does this token end generation (EOS, end of turn, …)?
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// All end-of-generation tokens, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eog.iter().copied().collect();
        v.sort_unstable();
        v
    }
    /// Is this a control token (`<|im_start|>`, BOS, …), hidden unless special tokens are rendered?
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs.get(id as usize).is_some_and(|a| a & ATTR_CONTROL != 0)
    }
    /// The vocabulary entry's raw text (byte-level BPE tokens are in GPT-2's byte spelling).
    pub fn piece_str(&self, id: u32) -> &str {
        self.tokens.get(id as usize).unwrap_or("")
    }
    /// The id of a vocabulary entry's exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.find(text)
    }
    pub fn model_name(&self) -> &'static str {
        match self.model {
            Model::Spm => "llama (SentencePiece)",
            Model::Bpe { .. } => "gpt2 (byte-level BPE)",
        }
    }

    /// Text to token ids. `add_special` adds BOS/EOS as the vocabulary asks (`add_bos`/`add_eos`);
    /// `parse_special` turns the text of control tokens (`<|im_start|>`) into those tokens, where
    /// otherwise it is tokenized as plain text. User-defined tokens always match.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut prev_special = true; // SPM: a leading space goes before the first text fragment
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(range) => {
                    let piece = &text[range];
                    match &self.model {
                        Model::Spm => {
                            let mut s = String::with_capacity(piece.len() + 4);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(piece);
                            spm::encode(self, &s.replace(' ', "▁"), &mut out);
                        }
                        Model::Bpe { pre, ignore_merges, merges } => {
                            self.encode_bpe(piece, *pre, *ignore_merges, merges, &mut out)
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn encode_bpe(&self, text: &str, pre: PreTokenizer, ignore_merges: bool, merges: &bpe::Merges, out: &mut Vec<u32>) {
        let chars: Vec<char> = text.chars().collect();
        let mut word_text = String::new();
        let mut encoded = String::new();
        let mut symbols = Vec::new();
        for word in pretok::split(pre, &chars) {
            word_text.clear();
            word_text.extend(&chars[word]);
            encoded.clear();
            self.bytes.encode(&word_text, &mut encoded);
            if ignore_merges && let Some(id) = self.token_id(&encoded) {
                out.push(id);
                continue;
            }
            symbols.clear();
            merges.apply(&encoded, &mut symbols);
            for sym in &symbols {
                let s = &encoded[sym.clone()];
                match self.token_id(s) {
                    Some(id) => out.push(id),
                    // A symbol outside the vocabulary: llama.cpp looks up each of its bytes as a
                    // one-byte token (which only ASCII bytes can be) and drops the rest.
                    None => out.extend(s.bytes().filter_map(|b| {
                        if b.is_ascii() { self.token_id(std::str::from_utf8(&[b]).unwrap()) } else { None }
                    })),
                }
            }
        }
    }

    /// SPM byte fallback: `<0xXX>`, else the byte itself as a token, else UNK.
    fn byte_token(&self, b: u8) -> Option<u32> {
        self.token_id(&format!("<0x{b:02X}>"))
            .or_else(|| if b.is_ascii() { self.token_id(std::str::from_utf8(&[b]).unwrap()) } else { None })
            .or(self.unk)
    }

    /// Cut the text at occurrences of special tokens (llama.cpp's `tokenizer_st_partition`): each
    /// special token in turn, longest first, is found in every remaining text fragment.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0..text.len()));
        for &id in &self.specials {
            if !parse_special && self.attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let pat = self.piece_str(id);
            if !text.contains(pat) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(range) = frag else {
                    next.push(frag);
                    continue;
                };
                let mut start = range.start;
                while let Some(i) = text[start..range.end].find(pat) {
                    if i > 0 {
                        next.push(Fragment::Text(start..start + i));
                    }
                    next.push(Fragment::Token(id));
                    start += i + pat.len();
                }
                if start < range.end {
                    next.push(Fragment::Text(start..range.end));
                }
            }
            frags = next;
        }
        frags
    }

    /// A token's bytes: byte-level BPE tokens are decoded back to bytes, SPM `▁` becomes a space,
    /// `<0xXX>` byte tokens become that byte. Control tokens (and UNK) are empty unless
    /// `render_special`. The bytes may be part of a UTF-8 character.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Vec<u8> {
        self.piece_bytes(id, render_special).to_vec()
    }

    /// [`Self::token_to_piece`] without the copy.
    pub fn piece_bytes(&self, id: u32, render_special: bool) -> &[u8] {
        let Some(&attr) = self.attrs.get(id as usize) else { return &[] };
        if !render_special && attr & (ATTR_UNKNOWN | ATTR_CONTROL) != 0 {
            return &[];
        }
        self.pieces.get(id as usize).unwrap_or(&[])
    }

    fn render_piece(&self, id: u32) -> Vec<u8> {
        let attr = self.attrs[id as usize];
        let text = self.piece_str(id);
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if attr & ATTR_NORMAL != 0 {
            return match &self.model {
                Model::Spm => text.replace('▁', " ").into_bytes(),
                Model::Bpe { .. } => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match self.bytes.byte_of(c) {
                            Some(b) => out.push(b),
                            None => {
                                // llama.cpp's marker for a char outside the byte map.
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                for b in c.encode_utf8(&mut buf).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if attr & ATTR_BYTE != 0 {
            // `<0xXX>`
            return text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()).into_iter().collect();
        }
        Vec::new() // unused and undefined tokens render as nothing
    }

    /// Token ids to text: the pieces concatenated, invalid UTF-8 replaced by U+FFFD. For SPM
    /// vocabularies the space that encoding put before the text is removed (after a leading BOS).
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut strip_space = self.add_space_prefix;
        for (i, &id) in ids.iter().enumerate() {
            let mut piece = self.piece_bytes(id, render_special);
            if i == 0 && Some(id) == self.bos {
                bytes.extend_from_slice(piece);
                continue;
            }
            if strip_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            strip_space = false;
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pre = match &self.model {
            Model::Spm => None,
            Model::Bpe { pre, .. } => Some(*pre),
        };
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name())
            .field("pre", &pre)
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog_ids())
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

/// Split text into the words a pre-tokenizer hands to BPE (for inspection and tests).
pub fn pre_tokenize(kind: PreTokenizer, text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    pretok::split(kind, &chars).into_iter().map(|r| chars[r].iter().collect()).collect()
}

enum Fragment {
    Text(std::ops::Range<usize>),
    Token(u32),
}

/// Streams generated tokens to text, holding back incomplete UTF-8 sequences until the tokens that
/// complete them arrive.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    render_special: bool,
}

impl StreamDecoder {
    /// Control tokens (`<|im_end|>`, …) print as nothing, as in llama-cli's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Control tokens print as their text.
    pub fn rendering_special() -> Self {
        StreamDecoder { pending: Vec::new(), render_special: true }
    }

    /// Add one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.piece_bytes(id, self.render_special));
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
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap());
                    match e.error_len() {
                        // Incomplete sequence at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// End of stream: whatever is still held back, with U+FFFD for an incomplete character.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
