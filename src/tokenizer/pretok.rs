//! Pre-tokenizers: split text into words before BPE merges run inside each word.
//!
//! llama.cpp describes each pre-tokenizer as a list of regexes applied one after the other, each
//! splitting every piece left by the previous one (matches and the text between them both become
//! pieces). The regexes are written out here as hand-made scanners over `char`s; each scanner's
//! comment gives the regex it implements. `\p{L}`, `\p{N}`, `\p{P}` are Unicode general categories
//! looked up in [`unicode_table`](super::unicode_table); `\s` is `char::is_whitespace` (the same 25
//! code points as llama.cpp's whitespace set).
//!
//! A piece is a range of char indices into the text; scanners never look outside their piece, so a
//! lookahead like `(?!\S)` sees the piece's end as end of text, as with llama.cpp.

use std::ops::Range;

use crate::{Result, bail};

/// Unicode general category, first letter only (`L`, `N`, …); `U` for unassigned code points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cat {
    U,
    N,
    L,
    Z,
    M,
    P,
    S,
    C,
}

pub fn category(c: char) -> Cat {
    let cp = c as u32;
    let table = &super::unicode_table::RANGES;
    let i = table.partition_point(|&(start, _)| start <= cp);
    table[i - 1].1
}

/// Which regex list to apply; named after llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// Qwen2: the Llama 3 regex with single digits, `\p{N}` instead of `\p{N}{1,3}`.
    Qwen2,
    /// Qwen3.5: Qwen2 with marks beside letters: `[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+`,
    /// ` ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*`.
    Qwen35,
    /// DeepSeek LLM: `[\r\n]`, `\s?[Latin, Greek, Cyrillic, … letters]+`, `\s?[ASCII and
    /// full-width punctuation]+`, `\s+$`, `[CJK, Hangul]+`, `\p{N}+`.
    DeepseekLlm,
    /// DeepSeek Coder: `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, `[CJK, Hangul]+`, `\p{N}`.
    DeepseekCoder,
    /// Falcon: `[\p{P}\$\+<=>\^~\|`]+`, GPT-2, `[0-9][0-9][0-9]`.
    Falcon,
    /// SmolLM, StarCoder: `\p{N}`, then the GPT-2 regex.
    Smollm,
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// llama.cpp's fallback: `[\p{P}\$\+<=>\^~\|]+`, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]`.
    Default,
}

/// Settings that come with a `tokenizer.ggml.pre` name in llama.cpp.
pub struct PreConfig {
    pub kind: PreTokenizer,
    /// Take a whole word as one token when it is in the vocabulary, without running merges.
    pub ignore_merges: bool,
    /// Default for `add_bos` before the file's `tokenizer.ggml.add_bos_token` overrides it.
    pub add_bos: bool,
}

impl PreConfig {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value. An absent value means "default", as in
    /// llama.cpp (which warns that quality degrades); an unknown one is an error, as in llama.cpp.
    pub fn from_name(name: Option<&str>) -> Result<PreConfig> {
        use PreTokenizer::*;
        let (kind, ignore_merges, add_bos) = match name.unwrap_or("default") {
            "default" => (Default, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
                (Llama3, true, true)
            }
            "dbrx" | "smaug-bpe" => (Llama3, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez" => (Qwen2, false, false),
            "qwen35" => (Qwen35, false, false),
            "deepseek-llm" => (DeepseekLlm, false, false),
            "deepseek-coder" => (DeepseekCoder, false, false),
            "falcon" => (Falcon, false, false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                (Smollm, false, false)
            }
            // "gpt2" is not a name llama.cpp knows, but it is what people mean by "gpt-2".
            "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" | "exaone4" | "trillion" => (Gpt2, false, false),
            other => bail!(
                "unknown pre-tokenizer `tokenizer.ggml.pre = {other}`: prima supports llama-bpe/llama3, qwen2, \
                 qwen35, deepseek-r1-qwen, deepseek-llm, deepseek-coder, falcon, smollm, starcoder, refact, \
                 command-r, gpt-2, mpt and default"
            ),
        };
        Ok(PreConfig { kind, ignore_merges, add_bos })
    }
}

/// Split `text` into pre-tokenizer words (ranges of char indices into `chars`).
pub fn split(kind: PreTokenizer, chars: &[char]) -> Vec<Range<usize>> {
    let whole: Vec<Range<usize>> = std::iter::once(0..chars.len()).collect();
    match kind {
        PreTokenizer::Llama3 => apply(chars, whole, |c, s, o| scan_llama3(c, s, o, 3, false)),
        PreTokenizer::Qwen2 => apply(chars, whole, |c, s, o| scan_llama3(c, s, o, 1, false)),
        PreTokenizer::Qwen35 => apply(chars, whole, |c, s, o| scan_llama3(c, s, o, 1, true)),
        PreTokenizer::DeepseekLlm => {
            let p = apply(chars, whole, |c, s, o| split_runs(c, s, o, is_newline, 1, 1));
            let p = apply(chars, p, |c, s, o| split_space_runs(c, s, o, is_deepseek_letter));
            let p = apply(chars, p, |c, s, o| split_space_runs(c, s, o, is_deepseek_punct));
            let p = apply(chars, p, split_trailing_space);
            let p = apply(chars, p, |c, s, o| split_runs(c, s, o, is_cjk, 1, usize::MAX));
            apply(chars, p, |c, s, o| split_runs(c, s, o, is_number, 1, usize::MAX))
        }
        PreTokenizer::DeepseekCoder => {
            let p = apply(chars, whole, |c, s, o| split_runs(c, s, o, is_newline, 1, 1));
            let p = apply(chars, p, |c, s, o| split_space_runs(c, s, o, |ch| category(ch) == Cat::L));
            let p = apply(chars, p, |c, s, o| split_space_runs(c, s, o, |ch| category(ch) == Cat::P));
            let p = apply(chars, p, |c, s, o| split_runs(c, s, o, is_cjk, 1, usize::MAX));
            apply(chars, p, |c, s, o| split_runs(c, s, o, is_number, 1, 1))
        }
        PreTokenizer::Falcon => {
            let p = apply(chars, whole, |c, s, o| {
                split_runs(c, s, o, |ch| ch == '`' || is_default_punct(ch), 1, usize::MAX)
            });
            let p = apply(chars, p, scan_gpt2);
            apply(chars, p, |c, s, o| split_runs(c, s, o, |ch| ch.is_ascii_digit(), 3, 3))
        }
        PreTokenizer::Gpt2 => apply(chars, whole, scan_gpt2),
        PreTokenizer::Smollm => {
            let digits = apply(chars, whole, |c, s, o| split_runs(c, s, o, is_number, 1, 1));
            apply(chars, digits, scan_gpt2)
        }
        PreTokenizer::Default => {
            let p = apply(chars, whole, |c, s, o| split_runs(c, s, o, is_default_punct, 1, usize::MAX));
            let p = apply(chars, p, scan_gpt2);
            let p = apply(chars, p, |c, s, o| split_runs(c, s, o, is_number, 1, usize::MAX));
            apply(chars, p, |c, s, o| split_runs(c, s, o, |ch| ch.is_ascii_digit(), 3, 3))
        }
    }
}

fn apply(
    chars: &[char],
    pieces: Vec<Range<usize>>,
    scan: impl Fn(&[char], Range<usize>, &mut Vec<Range<usize>>),
) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        scan(chars, piece, &mut out);
    }
    out
}

fn is_number(c: char) -> bool {
    category(c) == Cat::N
}

/// `[\p{P}\$\+<=>\^~\|]`: punctuation and eight ASCII symbols (not the backtick).
fn is_default_punct(c: char) -> bool {
    matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|') || (!c.is_whitespace() && category(c) == Cat::P)
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// `[一-龥ࠀ-一가-퟿]`: CJK ideographs, U+0800..U+4E00 and Hangul (DeepSeek's class, as written).
fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fa5}' | '\u{0800}'..='\u{4dff}' | '\u{ac00}'..='\u{d7ff}')
}

/// DeepSeek LLM's letter class, copied from llama.cpp's regex (`a-b` ranges and single chars).
const DEEPSEEK_LETTERS: &str = "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃";
/// DeepSeek LLM's punctuation class: ASCII punctuation (and `:-~`), full-width forms, quotes, CJK punctuation.
const DEEPSEEK_PUNCT: &str = "!-/:-~！-／：-～‘-‟\u{3000}-。";

/// Membership in a regex character class written as `a-b` ranges and single chars.
fn in_class(class: &str, c: char) -> bool {
    let mut it = class.chars();
    while let Some(a) = it.next() {
        let mut ahead = it.clone();
        if ahead.next() == Some('-')
            && let Some(b) = ahead.next()
        {
            if (a..=b).contains(&c) {
                return true;
            }
            it = ahead;
        } else if a == c {
            return true;
        }
    }
    false
}

fn is_deepseek_letter(c: char) -> bool {
    in_class(DEEPSEEK_LETTERS, c)
}

fn is_deepseek_punct(c: char) -> bool {
    in_class(DEEPSEEK_PUNCT, c)
}

/// `\s?X+` for a one-char class X, as a splitter (like [`split_runs`]).
fn split_space_runs(chars: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>, class: impl Fn(char) -> bool) {
    let mut gap = piece.start;
    let mut p = piece.start;
    while p < piece.end {
        let start = p;
        let lead = usize::from(chars[p].is_whitespace() && p + 1 < piece.end && class(chars[p + 1]));
        if lead == 0 && !class(chars[p]) {
            p += 1;
            continue;
        }
        p += lead;
        while p < piece.end && class(chars[p]) {
            p += 1;
        }
        if gap < start {
            out.push(gap..start);
        }
        out.push(start..p);
        gap = p;
    }
    if gap < piece.end {
        out.push(gap..piece.end);
    }
}

/// `\s+$`: the whitespace at the piece's end becomes a piece of its own.
fn split_trailing_space(chars: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut cut = piece.end;
    while cut > piece.start && chars[cut - 1].is_whitespace() {
        cut -= 1;
    }
    if cut > piece.start {
        out.push(piece.start..cut);
    }
    if cut < piece.end {
        out.push(cut..piece.end);
    }
}

/// The regex `X{min,max}` for a one-char class X, as a splitter: every leftmost match becomes a
/// piece, and so does the text between matches.
fn split_runs(
    chars: &[char],
    piece: Range<usize>,
    out: &mut Vec<Range<usize>>,
    class: impl Fn(char) -> bool,
    min: usize,
    max: usize,
) {
    let mut gap = piece.start;
    let mut p = piece.start;
    while p < piece.end {
        if !class(chars[p]) {
            p += 1;
            continue;
        }
        let mut q = p;
        while q < piece.end && q - p < max && class(chars[q]) {
            q += 1;
        }
        if q - p >= min {
            if gap < p {
                out.push(gap..p);
            }
            out.push(p..q);
            gap = q;
        }
        p = q;
    }
    if gap < piece.end {
        out.push(gap..piece.end);
    }
}

/// What the scanners ask about a position: its char's class, or nothing past the piece's end.
#[derive(Clone, Copy, Default)]
struct Flags {
    inside: bool,
    letter: bool,
    mark: bool,
    number: bool,
    space: bool,
}

/// A cursor over one piece, emitting words as the scan advances.
struct Scan<'a> {
    chars: &'a [char],
    end: usize,
    word_start: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Scan<'_> {
    fn char_at(&self, p: usize) -> Option<char> {
        if p < self.end { Some(self.chars[p]) } else { None }
    }
    fn flags(&self, p: usize) -> Flags {
        match self.char_at(p) {
            None => Flags::default(),
            Some(c) => {
                let cat = category(c);
                Flags {
                    inside: true,
                    letter: cat == Cat::L,
                    mark: cat == Cat::M,
                    number: cat == Cat::N,
                    space: c.is_whitespace(),
                }
            }
        }
    }
    fn is_newline(&self, p: usize) -> bool {
        matches!(self.char_at(p), Some('\r' | '\n'))
    }
    /// End the current word at `end`.
    fn emit(&mut self, end: usize) {
        if end > self.word_start {
            self.out.push(self.word_start..end);
        }
        self.word_start = end;
    }
    /// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `p`, or 0.
    fn contraction(&self, p: usize, ignore_case: bool) -> usize {
        if self.char_at(p) != Some('\'') || p + 1 >= self.end {
            return 0;
        }
        let lower = |c: char| if ignore_case { c.to_ascii_lowercase() } else { c };
        let c1 = lower(self.chars[p + 1]);
        if matches!(c1, 's' | 't' | 'm' | 'd') {
            return 2;
        }
        if p + 2 < self.end {
            let c2 = lower(self.chars[p + 2]);
            if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return 3;
            }
        }
        0
    }
    /// A whitespace run at `p`: its length, and the end of its last `\r`/`\n` (0 if none).
    fn whitespace_run(&self, p: usize) -> (usize, usize) {
        let mut n = 0;
        let mut last_newline_end = 0;
        while self.flags(p + n).space {
            if self.is_newline(p + n) {
                last_newline_end = p + n + 1;
            }
            n += 1;
        }
        (n, last_newline_end)
    }
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn scan_gpt2(chars: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>) {
    let mut s = Scan { chars, end: piece.end, word_start: piece.start, out };
    let mut pos = piece.start;
    while pos < s.end {
        let c = chars[pos];
        let n = s.contraction(pos, false);
        if n > 0 {
            pos += n;
            s.emit(pos);
            continue;
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
        let skip = usize::from(c == ' ');
        let f = s.flags(pos + skip);
        let other = |f: Flags| f.inside && !(f.space || f.letter || f.number);
        let class: Option<fn(Flags) -> bool> = if f.letter {
            Some(|f| f.letter)
        } else if f.number {
            Some(|f| f.number)
        } else if other(f) {
            Some(other)
        } else {
            None
        };
        if let Some(class) = class {
            pos += skip;
            while class(s.flags(pos)) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        let (n, _) = s.whitespace_run(pos);
        if n > 1 && s.char_at(pos + n).is_some() {
            // `\s+(?!\S)`: leave the last space to start the next word.
            pos += n - 1;
        } else if n > 0 {
            pos += n;
        } else {
            pos += 1;
        }
        s.emit(pos);
    }
}

/// Llama 3 (`digits` = 3) and Qwen2 (`digits` = 1):
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
/// with `marks` (Qwen3.5) `\p{L}` is `[\p{L}\p{M}]` in the letter and punctuation branches.
fn scan_llama3(chars: &[char], piece: Range<usize>, out: &mut Vec<Range<usize>>, digits: usize, marks: bool) {
    let mut s = Scan { chars, end: piece.end, word_start: piece.start, out };
    let letter = |f: Flags| f.letter || (marks && f.mark);
    let mut pos = piece.start;
    while pos < s.end {
        let c = chars[pos];
        let f = s.flags(pos);
        let n = s.contraction(pos, true);
        if n > 0 {
            pos += n;
            s.emit(pos);
            continue;
        }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(c == '\r' || c == '\n' || f.number) && (letter(f) || letter(s.flags(pos + 1))) {
            pos += 1;
            while letter(s.flags(pos)) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        // `\p{N}{1,digits}`: a digit run cut into groups of `digits`.
        if f.number {
            let mut group = pos;
            while s.flags(pos).number {
                pos += 1;
                if pos - group >= digits {
                    s.emit(pos);
                    group = pos;
                }
            }
            s.emit(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. As in llama.cpp, a lone space at the piece's end also
        // takes this branch (the class test sees "nothing", which is none of \s, \p{L}, \p{N}).
        let skip = usize::from(c == ' ');
        let f2 = s.flags(pos + skip);
        if !(f2.space || letter(f2) || f2.number) {
            pos += skip;
            loop {
                let g = s.flags(pos);
                if !g.inside || g.space || letter(g) || g.number {
                    break;
                }
                pos += 1;
            }
            while s.is_newline(pos) {
                pos += 1;
            }
            s.emit(pos);
            continue;
        }
        let (n, last_newline_end) = s.whitespace_run(pos);
        if last_newline_end > 0 {
            // `\s*[\r\n]+`: up to and including the run's last newline.
            pos = last_newline_end;
        } else if n > 1 && s.char_at(pos + n).is_some() {
            // `\s+(?!\S)`
            pos += n - 1;
        } else if n > 0 {
            pos += n;
        } else {
            pos += 1;
        }
        s.emit(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreTokenizer, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        split(kind, &chars).into_iter().map(|r| chars[r].iter().collect()).collect()
    }

    #[test]
    fn categories() {
        assert_eq!(category('a'), Cat::L);
        assert_eq!(category('7'), Cat::N);
        assert_eq!(category('Ⅻ'), Cat::N);
        assert_eq!(category('½'), Cat::N);
        assert_eq!(category('ǅ'), Cat::L);
        assert_eq!(category(' '), Cat::Z);
        assert_eq!(category('\n'), Cat::C);
        assert_eq!(category('\u{301}'), Cat::M);
        assert_eq!(category('🦀'), Cat::S);
        assert_eq!(category('.'), Cat::P);
        assert_eq!(category('$'), Cat::S);
    }

    #[test]
    fn llama3_words() {
        let w = words(PreTokenizer::Llama3, "Hello world's 12345 DON'T  x\n\n  y !!\n");
        assert_eq!(w, ["Hello", " world", "'s", " ", "123", "45", " DON", "'T", " ", " x", "\n\n", " ", " y", " !!\n"]);
        assert_eq!(words(PreTokenizer::Llama3, "a "), ["a", " "]);
        assert_eq!(words(PreTokenizer::Llama3, "a   "), ["a", "   "]);
    }

    #[test]
    fn qwen2_words() {
        assert_eq!(words(PreTokenizer::Qwen2, "x=123"), ["x", "=", "1", "2", "3"]);
    }

    #[test]
    fn gpt2_and_smollm_words() {
        assert_eq!(words(PreTokenizer::Gpt2, "I'm  ok 42!"), ["I", "'m", " ", " ok", " 42", "!"]);
        assert_eq!(words(PreTokenizer::Smollm, "I'm  ok 42!"), ["I", "'m", " ", " ok", " ", "4", "2", "!"]);
        assert_eq!(words(PreTokenizer::Gpt2, "DON'T"), ["DON", "'", "T"]);
    }

    #[test]
    fn default_words() {
        assert_eq!(words(PreTokenizer::Default, "a+=b 12345"), ["a", "+=", "b", " ", "123", "45"]);
    }
}
