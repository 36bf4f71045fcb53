use prima::gguf::{GgufFile, Value, ValueType, write::GgufWriter};
use prima::tokenizer::{StreamDecoder, Tokenizer};
use serde_json::Value as Json;

use crate::common;

fn vocab(name: &str) -> Tokenizer {
    let f = GgufFile::open(common::fixtures().join("vocab").join(name)).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn smollm() -> Tokenizer {
    vocab("smollm2-135m.vocab-only.gguf")
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Python's `bytes.decode('utf-8', 'backslashreplace')`, as the goldens were written.
fn backslashreplace(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).unwrap());
                let bad = e.error_len().unwrap_or(bytes.len() - valid);
                for b in &bytes[valid..valid + bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                bytes = &bytes[valid + bad..];
            }
        }
    }
}

fn render(tok: &Tokenizer, ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_to_piece(id, true)).collect();
    backslashreplace(&bytes)
}

/// Every case of a `golden/*.tokenizer.json`; returns the failures.
fn check_tokenizer_golden(golden: &str) -> Vec<String> {
    let g = common::golden(golden);
    let tok = vocab(g["vocab_file"].as_str().unwrap());
    assert_eq!(tok.n_vocab() as u64, g["n_vocab"].as_u64().unwrap());
    assert_eq!(tok.add_bos(), g["add_bos"].as_bool().unwrap());
    assert_eq!(tok.bos().map(u64::from), g["bos"].as_u64());
    assert_eq!(tok.eos().map(u64::from), g["eos"].as_u64());
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 42);
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let mut check = |what: &str, got: String, want: String| {
            if got != want {
                failures.push(format!("{golden} {what} {text:?}\n  got  {got}\n  want {want}"));
            }
        };
        let plain = tok.encode(text, false, false);
        let special = tok.encode(text, false, true);
        let with_bos = tok.encode(text, tok.add_bos(), true);
        check("tokens", format!("{plain:?}"), format!("{:?}", ids(&c["tokens"])));
        check("tokens_special", format!("{special:?}"), format!("{:?}", ids(&c["tokens_special"])));
        check("tokens_with_bos", format!("{with_bos:?}"), format!("{:?}", ids(&c["tokens_with_bos"])));
        let pieces: Vec<String> = special.iter().map(|&id| render(&tok, &[id])).collect();
        let want_pieces: Vec<&str> =
            c["pieces_special"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        check("pieces_special", format!("{pieces:?}"), format!("{want_pieces:?}"));
        check("detokenized_special", render(&tok, &special), c["detokenized_special"].as_str().unwrap().into());
        // Round trips: byte-level BPE loses nothing.
        check("round trip", tok.decode(&plain, true), text.into());
        check("round trip special", tok.decode(&special, true), text.into());
    }
    failures
}

#[test]
fn golden_smollm2_135m() {
    let f = check_tokenizer_golden("smollm2-135m.vocab-only.tokenizer.json");
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

#[test]
fn golden_tiny_8192() {
    let f = check_tokenizer_golden("tiny-8192.vocab-only.tokenizer.json");
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

#[test]
fn golden_c_2048() {
    let f = check_tokenizer_golden("c-2048.vocab-only.tokenizer.json");
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

/// `prompt_tokens` and `tokenizer_cases` of every model golden.
#[test]
fn golden_model_prompts() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(common::fixtures().join("golden")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".golden.json") {
            continue;
        }
        let g = common::golden(&name);
        // A deqf32 golden names the (unstored) F32 copy; its tokenizer is that of the source.
        let model = g.get("dequantized_from").unwrap_or(&g["model"]).as_str().unwrap();
        let path = common::model(model);
        // SmolLM2-135M itself is not stored; its vocab-only copy has the same tokenizer metadata.
        let path = if path.exists() {
            path
        } else {
            assert!(model.starts_with("smollm2-135m"), "{model} missing");
            common::fixtures().join("vocab/smollm2-135m.vocab-only.gguf")
        };
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        assert_eq!(tok.n_vocab() as u64, g["n_vocab"].as_u64().unwrap(), "{name}");
        for c in g["cases"].as_array().unwrap() {
            let prompt = c["prompt"].as_str().unwrap();
            let add_bos = c["add_bos"].as_bool().unwrap();
            let parse_special = c["parse_special"].as_bool().unwrap();
            let got = tok.encode(prompt, add_bos, parse_special);
            if got != ids(&c["prompt_tokens"]) {
                failures.push(format!("{name} prompt {prompt:?}: {got:?}"));
            }
            let pieces: Vec<String> = got.iter().map(|&id| render(&tok, &[id])).collect();
            let want: Vec<&str> = c["prompt_pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            if pieces != want {
                failures.push(format!("{name} pieces {prompt:?}: {pieces:?}"));
            }
            let greedy = ids(&c["greedy_tokens"]);
            if render(&tok, &greedy) != c["greedy_text"].as_str().unwrap() {
                failures.push(format!("{name} greedy_text {prompt:?}"));
            }
            checked += 1;
        }
        for c in g["tokenizer_cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let plain = tok.encode(text, false, false);
            if plain != ids(&c["tokens"]) || tok.encode(text, false, true) != ids(&c["tokens_special"]) {
                failures.push(format!("{name} tokenizer case {text:?}: {plain:?}"));
            }
            if render(&tok, &plain) != c["detokenized"].as_str().unwrap() {
                failures.push(format!("{name} detokenized {text:?}"));
            }
        }
    }
    assert!(checked >= 6 * 50, "only {checked} prompts checked");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn smollm_special_tokens() {
    let tok = smollm();
    snapshot("tokenizer_smollm_debug", &format!("{tok:?}"));
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let endoftext = tok.token_id("<|endoftext|>").unwrap();
    assert!(tok.is_eog(im_end));
    assert!(tok.is_eog(endoftext));
    assert!(tok.is_eog(tok.eos().unwrap()));
    assert!(!tok.is_eog(tok.token_id("Hello").unwrap()));
    assert_eq!(tok.piece_str(im_end), "<|im_end|>");
    // Control tokens are hidden unless rendered.
    assert_eq!(tok.token_to_piece(im_end, false), b"");
    assert_eq!(tok.token_to_piece(im_end, true), b"<|im_end|>");
    assert_eq!(tok.decode(&tok.encode("<|im_start|>hi<|im_end|>", false, true), false), "hi");
}

#[test]
fn long_input_is_not_quadratic() {
    let tok = smollm();
    let para = std::fs::read_to_string(common::fixtures().join("calibration.txt")).unwrap();
    let text = para.repeat(8); // ~42 KB, ~9k tokens
    let start = std::time::Instant::now();
    let ids = tok.encode(&text, false, true);
    let elapsed = start.elapsed();
    assert!(ids.len() > 8000);
    assert_eq!(tok.decode(&ids, true), text);
    // One long word (no spaces) goes through a single merge queue.
    let blob = "ab".repeat(20000);
    let ids = tok.encode(&blob, false, false);
    assert_eq!(tok.decode(&ids, true), blob);
    assert!(start.elapsed().as_secs_f64() < 5.0, "encoding took {elapsed:?}");
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let tok = smollm();
    // "🦀" has no token of its own here: it is spelled as several byte-level tokens.
    let text = "crab 🦀 and café 日本";
    let ids = tok.encode(text, false, false);
    let mut dec = StreamDecoder::new();
    let mut out = String::new();
    let mut saw_partial = false;
    for &id in &ids {
        let s = dec.push(&tok, id);
        let piece = tok.token_to_piece(id, true);
        saw_partial |= std::str::from_utf8(&piece).is_err();
        // Every chunk is whole characters: nothing half-decoded leaks as U+FFFD.
        assert!(!s.contains('\u{FFFD}'), "{s:?}");
        out.push_str(&s);
    }
    out.push_str(&dec.finish());
    assert!(saw_partial, "test needs a token that is part of a character");
    assert_eq!(out, text);

    // Control tokens show only when asked for.
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(StreamDecoder::new().push(&tok, im_end), "");
    assert_eq!(StreamDecoder::rendering_special().push(&tok, im_end), "<|im_end|>");

    // A sequence cut short is flushed as U+FFFD by finish().
    let crab = ids.iter().position(|&id| tok.token_to_piece(id, true).starts_with(b" \xf0")).unwrap();
    let mut dec = StreamDecoder::new();
    assert_eq!(dec.push(&tok, ids[crab]), " ");
    assert_eq!(dec.finish(), "\u{FFFD}");
}

fn edge_case_report(tok: &Tokenizer, texts: &[&str]) -> String {
    let mut out = String::new();
    for text in texts {
        for parse_special in [false, true] {
            let ids = tok.encode(text, false, parse_special);
            let pieces: Vec<String> = ids.iter().map(|&id| render(tok, &[id])).collect();
            out.push_str(&format!("{text:?} parse_special={parse_special}\n  {ids:?}\n  {pieces:?}\n"));
            assert_eq!(tok.decode(&ids, true), *text);
        }
    }
    out
}

#[test]
fn smollm_edge_cases() {
    let tok = smollm();
    let report = edge_case_report(
        &tok,
        &[
            "",
            " ",
            "   ",
            "\t \n",
            "🦀",
            "👍🏽",
            "<|im_start|",
            "<|im_start|><|im_start|>",
            "<|im_end|>x<|unknown|>",
            "<|IM_END|>",
            "<<|im_end|>>",
            "a<|endoftext|>b",
        ],
    );
    insta::with_settings!({snapshot_path => "../../snapshots"}, {
        insta::assert_snapshot!("tokenizer_smollm_edge_cases", report);
    });
}

// --- SentencePiece on a small synthetic vocabulary ---------------------------------------------

/// A tiny SPM vocabulary: specials, byte tokens for every byte, and a few scored pieces.
fn spm_tokenizer(add_space_prefix: bool) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let pieces: &[(&str, f32)] = &[
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.0),
        ("he", -3.0),
        ("ll", -3.5),
        ("hell", -4.0),
        ("hello", -4.5),
        ("▁hello", -5.0),
        ("lo", -3.0),
        ("wor", -6.0),
        ("wo", -5.5),
        ("▁w", -5.0),
        ("▁wor", -5.2),
        ("▁world", -6.0),
        ("ab", -1.5),
        ("bc", -1.5),
        ("é", -2.0),
    ];
    let mut scores = vec![0.0f32; tokens.len()];
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(*s);
    }
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::Str("llama".into()));
    w.kv("tokenizer.ggml.tokens", prima::gguf::write::str_array(&tokens));
    w.kv("tokenizer.ggml.scores", Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()));
    w.kv("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()));
    w.kv("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.kv("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.kv("tokenizer.ggml.unknown_token_id", Value::U32(0));
    w.kv("tokenizer.ggml.add_space_prefix", Value::Bool(add_space_prefix));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn spm_pieces(tok: &Tokenizer, text: &str, add_special: bool) -> Vec<String> {
    tok.encode(text, add_special, true).iter().map(|&id| tok.piece_str(id).to_string()).collect()
}

#[test]
fn spm_segmentations() {
    let tok = spm_tokenizer(true);
    assert!(tok.add_bos());
    assert_eq!(tok.bos(), Some(1));
    // ▁ h e l l o: pairs in the vocabulary are he(-3), ll(-3.5), lo(-3). he and lo tie: the
    // leftmost, he, merges first; then lo; ll is stale (its right l was absorbed). No "hel",
    // "llo" or "▁he": done. SPM is greedy by score, so "hello" (-4.5) is never reached.
    assert_eq!(spm_pieces(&tok, "hello", false), ["▁", "he", "l", "lo"]);
    // With BOS.
    assert_eq!(spm_pieces(&tok, "hello", true), ["<s>", "▁", "he", "l", "lo"]);
    // ▁ w o r l d: ▁w(-5) beats wo(-5.5), which is then stale; no "▁wo", "or", "rl", "ld".
    assert_eq!(spm_pieces(&tok, "world", false), ["▁w", "o", "r", "l", "d"]);
    // ab and bc tie at -1.5: the leftmost pair wins.
    assert_eq!(spm_pieces(&tok, "abc", false), ["▁", "ab", "c"]);
    // Chars outside the vocabulary become byte tokens; é is in it.
    assert_eq!(spm_pieces(&tok, "é€", false), ["▁", "é", "<0xE2>", "<0x82>", "<0xAC>"]);
    // Spaces become ▁; a special token in the text resets the space prefix.
    assert_eq!(spm_pieces(&tok, "a b</s>c", false), ["▁", "a", "▁", "b", "</s>", "▁", "c"]);
    // No prefix when the vocabulary says so.
    assert_eq!(spm_pieces(&spm_tokenizer(false), "ab c", false), ["ab", "▁", "c"]);
}

#[test]
fn spm_round_trip() {
    let tok = spm_tokenizer(true);
    for text in ["hello world", "  two  spaces ", "é€ and 🦀", "abc", "", "x</s>y"] {
        for add_special in [false, true] {
            let ids = tok.encode(text, add_special, false);
            assert_eq!(tok.decode(&ids, false), text, "{ids:?}");
        }
    }
    let ids = tok.encode("hello", true, false);
    assert_eq!(tok.decode(&ids, true), "<s>hello");
}

// --- Chat templates ----------------------------------------------------------------------------

use prima::chat::{ChatTemplate, Message};

fn chat_template(name: &str, bos: &str, eos: &str) -> ChatTemplate {
    let path = common::fixtures().join("chat_templates").join(name);
    let src = std::fs::read_to_string(&path).unwrap();
    ChatTemplate::from_source(&src, bos, eos).unwrap()
}

/// A system prompt and two user turns with an assistant reply between them.
fn two_turns() -> Vec<Message> {
    vec![
        Message::new("system", "You are a concise assistant."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4"),
        Message::new("user", "And 3+3?"),
    ]
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => "../../snapshots"}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn chat_smollm2_from_gguf() {
    let f = GgufFile::open(common::fixtures().join("vocab/smollm2-135m.vocab-only.gguf")).unwrap();
    let t = ChatTemplate::from_gguf(&f).unwrap().expect("SmolLM2 ships a template");
    let out = t.render(&two_turns(), true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Without a system message the template inserts its own.
    let out = t.render(&two_turns()[1..], false).unwrap();
    snapshot("chat_smollm2_no_system", &out);
    // The golden ChatML prompt is exactly this template's rendering of one user turn.
    let golden = common::golden("c-llama-f32.golden.json");
    let chatml_case = golden["cases"].as_array().unwrap().iter().find(|c| c["parse_special"] == true).unwrap();
    let t = ChatTemplate::chatml();
    let out = t.render(&[Message::new("user", "What is 2+2?")], true).unwrap();
    assert_eq!(out, chatml_case["prompt"].as_str().unwrap());
    // A file without a template falls back to ChatML.
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::Str("llama".into()));
    let bare = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(ChatTemplate::from_gguf(&bare).unwrap().is_none());
    assert_eq!(ChatTemplate::from_gguf_or_chatml(&bare).unwrap().render(&two_turns()[1..2], true).unwrap(), out);
}

#[test]
fn chat_qwen25() {
    let t = chat_template("qwen2.5-instruct.jinja", "", "<|im_end|>");
    let out = t.render(&two_turns(), true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Default system prompt when none is given.
    snapshot("chat_qwen25_default_system", &t.render(&two_turns()[1..], true).unwrap());
    // The tools section.
    let tool = minijinja::context! {
        type => "function",
        function => minijinja::context! {
            name => "get_weather",
            description => "Weather for a city",
            parameters => minijinja::context! {
                type => "object",
                properties => minijinja::context! { city => minijinja::context! { type => "string" } },
                required => vec!["city"],
            },
        },
    };
    let extra = minijinja::context! { tools => vec![tool] };
    let out = t.render_with(&two_turns()[1..2], true, extra).unwrap();
    assert!(out.contains("<tools>\n{\""), "{out}");
    snapshot("chat_qwen25_tools", &out);
}

#[test]
fn chat_llama3() {
    let t = chat_template("llama-3.1-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
    let out = t.render(&two_turns(), true).unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
         You are a concise assistant.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Llama 3.2 asks for today's date through strftime_now.
    let t = chat_template("llama-3.2-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>").with_fixed_time(1_740_787_200);
    let out = t.render(&two_turns(), true).unwrap();
    assert!(out.contains("Today Date: 01 Mar 2025\n"), "{out}");
    snapshot("chat_llama32", &out);
}

#[test]
fn chat_deepseek_r1_distill() {
    let t = chat_template("deepseek-r1-distill.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>");
    let mut messages = two_turns();
    // Earlier reasoning is dropped from the history: only the text after </think> is kept.
    messages[2].content = "<think>\nTwo plus two.\n</think>\n\n4".into();
    let out = t.render(&messages, true).unwrap();
    assert_eq!(
        out,
        "<｜begin▁of▁sentence｜>You are a concise assistant.<｜User｜>What is 2+2?\
         <｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\n"
    );
    snapshot("chat_deepseek_r1_distill", &out);

    // With a tokenizer that adds BOS itself, the template's BOS text is dropped: one BOS in the end.
    let bos_text = "<｜begin▁of▁sentence｜>";
    let extra = [("tokenizer.ggml.bos_token_id", Value::U32(256))];
    let tok = bpe_tokenizer(Some("llama-bpe"), &[], &[bos_text, "<｜User｜>", "<｜Assistant｜>"], &extra).unwrap();
    assert!(tok.add_bos());
    let prompt = t.render_for(&tok, &messages[1..2], true).unwrap();
    assert_eq!(prompt, "<｜User｜>What is 2+2?<｜Assistant｜><think>\n");
    let ids = tok.encode(&prompt, true, true);
    assert_eq!(&ids[..2], [256, 257]);
    assert_eq!(ids.iter().filter(|&&id| id == 256).count(), 1);
}

// --- Pre-tokenizers ----------------------------------------------------------------------------

/// Word splits of every pre-tokenizer on tricky text. During development the scanners were also
/// compared with the original regexes (Python's `regex` module) on 4000 random strings over
/// letters, digits, Unicode numbers, spaces, newlines, punctuation, marks, emoji and
/// contractions: no difference.
#[test]
fn pre_tokenizer_words() {
    use prima::tokenizer::{PreTokenizer, pre_tokenize};
    let texts = [
        "Hello world! It's 2024, isn't it?",
        "DON'T shout; we'LL see\n\n\n  indented\r\n\tTabbed",
        "x=12345678 ½ Ⅻ ٣٤ 3.14",
        "  leading, trailing  ",
        "café naïve ǅ 日本語 🦀🦀 a\u{301}",
        "$100 + <tag> | `code` ~~",
    ];
    let mut report = String::new();
    for (name, kind) in [
        ("llama3", PreTokenizer::Llama3),
        ("qwen2", PreTokenizer::Qwen2),
        ("smollm", PreTokenizer::Smollm),
        ("gpt2", PreTokenizer::Gpt2),
        ("default", PreTokenizer::Default),
    ] {
        report.push_str(&format!("== {name}\n"));
        for t in texts {
            let words = pre_tokenize(kind, t);
            assert_eq!(words.concat(), t);
            report.push_str(&format!("{words:?}\n"));
        }
    }
    snapshot("pre_tokenizer_words", &report);
}

// --- Synthetic byte-level BPE vocabularies -----------------------------------------------------

/// GPT-2's byte spelling of one byte.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// 256 byte tokens, the given merges (each adding its token), then `specials` as control tokens.
fn bpe_tokenizer(
    pre: Option<&str>,
    merges: &[&str],
    specials: &[&str],
    extra: &[(&str, Value)],
) -> prima::Result<Tokenizer> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![6i32; 0];
    types.resize(256, 1);
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    for s in specials {
        tokens.push(s.to_string());
        types.push(3);
    }
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::Str("gpt2".into()));
    if let Some(pre) = pre {
        w.kv("tokenizer.ggml.pre", Value::Str(pre.into()));
    }
    w.kv("tokenizer.ggml.tokens", prima::gguf::write::str_array(&tokens));
    w.kv("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()));
    w.kv("tokenizer.ggml.merges", prima::gguf::write::str_array(merges));
    for (k, v) in extra {
        w.kv(k, v.clone());
    }
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap())
}

#[test]
fn bpe_llama3_style_vocab() {
    let specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>"];
    let merges = ["Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "H e", "He l", "Hel l", "Hell o"];
    let n_base = 256 + merges.len() as u32;
    let extra =
        [("tokenizer.ggml.bos_token_id", Value::U32(n_base)), ("tokenizer.ggml.eos_token_id", Value::U32(n_base + 1))];
    let tok = bpe_tokenizer(Some("llama-bpe"), &merges, &specials, &extra).unwrap();
    // llama-bpe adds BOS unless the file says otherwise.
    assert!(tok.add_bos());
    let hello = tok.token_id("Hello").unwrap();
    let world = tok.token_id("Ġworld").unwrap();
    assert_eq!(tok.encode("Hello world", true, false), [n_base, hello, world]);
    // End of generation: EOS and, by text, <|eot_id|>; not the header token.
    assert!(tok.is_eog(n_base + 1));
    assert!(tok.is_eog(n_base + 2));
    assert!(!tok.is_eog(n_base + 3));
    // <|end_of_text|> and <|eot_id|> both look like end-of-turn; the lowest id is taken.
    assert_eq!(tok.eot(), Some(n_base + 1));
    assert_eq!(tok.eog_ids(), [n_base + 1, n_base + 2]);
    // Special tokens: parsed only when asked.
    let ids = tok.encode("<|start_header_id|>Hello<|eot_id|>", false, true);
    assert_eq!(ids, [n_base + 3, hello, n_base + 2]);
    assert!(tok.encode("<|start_header_id|>", false, false).len() > 1);
    assert_eq!(tok.decode(&ids, false), "Hello");
    assert_eq!(tok.decode(&ids, true), "<|start_header_id|>Hello<|eot_id|>");

    // The file can turn BOS off.
    let mut extra = extra.to_vec();
    extra.push(("tokenizer.ggml.add_bos_token", Value::Bool(false)));
    let tok = bpe_tokenizer(Some("llama-bpe"), &merges, &specials, &extra).unwrap();
    assert_eq!(tok.encode("Hello world", true, false), [hello, world]);
}

#[test]
fn bpe_pre_tokenizer_names() {
    // DeepSeek's end-of-sentence token ends generation even when EOS names another token.
    let tok = bpe_tokenizer(Some("deepseek-r1-qwen"), &[], &["<｜end▁of▁sentence｜>", "<|im_end|>"], &[]).unwrap();
    assert!(tok.is_eog(256) && tok.is_eog(257));
    assert!(!tok.add_bos());
    // Missing `pre`: llama.cpp's default pre-tokenizer.
    assert!(bpe_tokenizer(None, &[], &[], &[]).is_ok());
    // Unknown `pre`: an error that names it.
    let e = bpe_tokenizer(Some("klingon-bpe"), &[], &[], &[]).err().unwrap();
    assert!(e.message().contains("klingon-bpe"), "{e}");
    for name in [
        "llama3",
        "qwen2",
        "qwen35",
        "smollm",
        "gpt-2",
        "gpt2",
        "default",
        "starcoder",
        "stablelm2",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
    ] {
        assert!(bpe_tokenizer(Some(name), &[], &[], &[]).is_ok(), "{name}");
    }
}

#[test]
fn unsupported_tokenizer_model_is_an_error() {
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", Value::Str("bert".into()));
    w.kv("tokenizer.ggml.tokens", prima::gguf::write::str_array(&["[PAD]"]));
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).err().unwrap();
    assert!(e.message().contains("bert"), "{e}");
    let w = GgufWriter::new();
    assert!(Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).is_err());
}

// --- llama.cpp's own vocabulary tests ------------------------------------------------------------

/// One of llama.cpp's `models/ggml-vocab-NAME.gguf` (gzipped here) with its `.inp` cases and `.out`
/// expected ids, read as `tests/test-tokenizer-0.cpp` reads them; returns the number of cases and
/// the failures. llama.cpp tokenizes with `add_special = false`, `parse_special = false`.
fn check_llama_cpp_vocab(name: &str) -> (usize, Vec<String>) {
    use std::io::Read;
    let dir = common::fixtures().join("vocab/llama.cpp");
    let stem = format!("ggml-vocab-{name}.gguf");
    let mut bytes = Vec::new();
    let gz = std::fs::File::open(dir.join(format!("{stem}.gz"))).unwrap();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut bytes).unwrap();
    let tok = match Tokenizer::from_gguf(&GgufFile::from_bytes(bytes).unwrap()) {
        Ok(t) => t,
        Err(e) => return (0, vec![format!("{name}: {e}")]),
    };
    let inp = std::fs::read_to_string(dir.join(format!("{stem}.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("{stem}.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let texts: Vec<&str> = inp.strip_suffix(sep).unwrap_or(&inp).split(sep).collect();
    let expected: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), expected.len(), "{name}: .inp and .out disagree on the number of cases");
    let mut failures = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{name} {text:?}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    (texts.len(), failures)
}

/// Every vocabulary of llama.cpp's tokenizer test whose pre-tokenizer prima supports: token ids
/// equal llama.cpp's expected ids for every case.
#[test]
fn llama_cpp_vocabularies() {
    let names = [
        "llama-bpe",
        "llama-spm",
        "qwen2",
        "qwen35",
        "gpt-2",
        "phi-3",
        "starcoder",
        "mpt",
        "command-r",
        "refact",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
    ];
    let mut failures = Vec::new();
    let mut cases = 0;
    for name in names {
        let (n, f) = check_llama_cpp_vocab(name);
        eprintln!("{name}: {n} cases, {} differ", f.len());
        cases += n;
        failures.extend(f);
    }
    assert!(failures.is_empty(), "{} of {cases} cases differ:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(cases, 13 * 46 + 4);
}

/// llama.cpp's `models/templates/*.jinja`, rendered by Python's jinja2 in transformers' environment
/// for a fixed conversation (see `chat_templates/llama.cpp/render_goldens.py`): prima's renderer
/// gives the same text, with and without the generation prompt, and fails where Python fails.
#[test]
fn chat_llama_cpp_templates() {
    let dir = common::fixtures().join("chat_templates/llama.cpp");
    let g: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    let messages: Vec<Message> = g["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(messages.len(), 4);
    let now = g["strftime_now_unix"].as_i64().unwrap();
    let cases = g["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let name = c["template"].as_str().unwrap();
        let with_prompt = c["add_generation_prompt"].as_bool().unwrap();
        let src = std::fs::read_to_string(dir.join(name)).unwrap();
        let got = ChatTemplate::from_source(&src, c["bos"].as_str().unwrap(), c["eos"].as_str().unwrap())
            .map(|t| t.with_fixed_time(now))
            .and_then(|t| t.render(&messages, with_prompt));
        match (got, c["expected"].as_str()) {
            (Ok(got), Some(want)) if got == want => {}
            (Err(_), None) => {}
            (got, want) => {
                failures.push(format!("{name} (generation prompt: {with_prompt})\n  got  {got:?}\n  want {want:?}"))
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} renderings differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 50, "{}", cases.len());
}
