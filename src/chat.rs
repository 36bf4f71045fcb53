//! Chat templates: the Jinja program a GGUF ships in `tokenizer.chat_template`, which turns a list
//! of messages into the prompt text the model was trained on.
//!
//! Templates are written for Hugging Face transformers, which runs them in Python's Jinja2 with
//! `trim_blocks` and `lstrip_blocks` on, the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token` (plus `tools` etc. when used), and the helpers `raise_exception`,
//! `strftime_now` and a `tojson` filter that is Python's `json.dumps(ensure_ascii=False)`. The same
//! environment is rebuilt here on minijinja; Python string methods (`.strip()`, `.split()`,
//! `.startswith()`) come from minijinja-contrib's `pycompat`.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::Result;
use crate::error::Error;
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// ChatML (`<|im_start|>role\n…<|im_end|>\n`), used when a file has no template, as llama.cpp does.
pub const CHATML: &str = "{%- for message in messages -%}\
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\
    {%- endfor -%}\
    {%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
    /// Clock for `strftime_now`, seconds since the Unix epoch; `None` = the real time.
    fixed_time: Option<i64>,
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = format!("chat template: {e}");
    if let Some(detail) = e.detail()
        && !msg.contains(detail)
    {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    Error::msg(msg)
}

impl ChatTemplate {
    /// The file's `tokenizer.chat_template`, with its BOS/EOS token texts; `None` without one.
    pub fn from_gguf(f: &GgufFile) -> Result<Option<ChatTemplate>> {
        let Some(src) = f.get_str("tokenizer.chat_template") else { return Ok(None) };
        let (bos, eos) = special_texts(f);
        Ok(Some(ChatTemplate::from_source(src, &bos, &eos)?))
    }

    /// The file's template, or ChatML when it has none.
    pub fn from_gguf_or_chatml(f: &GgufFile) -> Result<ChatTemplate> {
        match ChatTemplate::from_gguf(f)? {
            Some(t) => Ok(t),
            None => {
                let (bos, eos) = special_texts(f);
                ChatTemplate::from_source(CHATML, &bos, &eos)
            }
        }
    }

    pub fn chatml() -> ChatTemplate {
        ChatTemplate::from_source(CHATML, "", "").expect("ChatML template compiles")
    }

    /// Compile a template (syntax errors are reported here, not at render time).
    pub fn from_source(src: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("tojson", tojson);
        env.template_from_str(src).map_err(template_error)?;
        Ok(ChatTemplate { env, source: src.to_string(), bos: bos.to_string(), eos: eos.to_string(), fixed_time: None })
    }

    /// Make `strftime_now` report this time (seconds since the Unix epoch, UTC): for tests.
    pub fn with_fixed_time(mut self, unix_seconds: i64) -> ChatTemplate {
        self.fixed_time = Some(unix_seconds);
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt for `messages`; `add_generation_prompt` appends the header of the assistant's
    /// reply (e.g. `<|im_start|>assistant\n`).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, Value::UNDEFINED)
    }

    /// The prompt ready for `tok.encode(prompt, true, true)`: as llama.cpp does, a BOS text the
    /// template wrote at the start is removed when the tokenizer adds BOS itself (likewise EOS at
    /// the end), so the model never sees it twice.
    pub fn render_for(&self, tok: &Tokenizer, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut out = self.render(messages, add_generation_prompt)?;
        if tok.add_bos() && !self.bos.is_empty() && out.starts_with(&self.bos) {
            out.drain(..self.bos.len());
        }
        if tok.add_eos() && !self.eos.is_empty() && out.ends_with(&self.eos) {
            out.truncate(out.len() - self.eos.len());
        }
        Ok(out)
    }

    /// [`Self::render`] with extra template variables (a map: `tools`, `enable_thinking`, …).
    pub fn render_with(&self, messages: &[Message], add_generation_prompt: bool, extra: Value) -> Result<String> {
        let now = self.fixed_time.unwrap_or_else(|| {
            let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            d.as_secs() as i64
        });
        let base = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
            strftime_now => Value::from_function(move |fmt: String| strftime(&fmt, now)),
        };
        let ctx = if extra.is_undefined() {
            base
        } else {
            minijinja::context! { ..extra, ..base }
        };
        let tmpl = self.env.template_from_str(&self.source).map_err(template_error)?;
        tmpl.render(ctx).map_err(template_error)
    }
}

/// BOS and EOS token texts from the vocabulary (empty when absent).
fn special_texts(f: &GgufFile) -> (String, String) {
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap_or(&[]);
    let text = |key: &str| {
        f.get_u64(key).and_then(|id| tokens.get(id as usize)).and_then(|v| v.as_str()).unwrap_or("").to_string()
    };
    (text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id"))
}

/// `tojson` as in transformers: `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) -> Result<(), minijinja::Error> {
    // With an indent Python puts each item on its own line and uses "," between items.
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let f = f64::try_from(v.clone())?;
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    out.push_str(&f.to_string());
                }
            }
        }
        ValueKind::String => write_json_str(v.as_str().unwrap_or(""), out),
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                match k.as_str() {
                    Some(s) => write_json_str(s, out),
                    None => write_json_str(&k.to_string(), out),
                }
                out.push_str(": ");
                write_json(&v.get_item(k)?, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                write_json(item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        _ => write_json_str(&v.to_string(), out),
    }
    Ok(())
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A small `strftime` for `strftime_now`, in UTC: %Y %y %m %d %e %b %B %a %A %H %M %S %j %%.
fn strftime(fmt: &str, unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let days = unix_seconds.div_euclid(86400);
    let secs = unix_seconds.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        // 2024-07-26 12:34:56 UTC, a Friday, day 208.
        let t = 1_721_997_296;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %A %B %j %%", t), "2024-07-26 12:34:56 Fri Friday July 208 %");
        assert_eq!(strftime("%d %b %Y", 951_782_400), "29 Feb 2000");
        for days in [-1000, 0, 59, 11_016, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn json_like_python() {
        let t = ChatTemplate::from_source(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'a\"\\n\u{e9}' | tojson }}|{{ [] | tojson }}",
            "",
            "",
        )
        .unwrap();
        let out = t
            .render_with(&[], false, minijinja::context! { x => minijinja::context! { a => 1, b => vec![Value::from(true), Value::from(())], c => 1.5 } })
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": 1, \"b\": [true, null], \"c\": 1.5}|{\n  \"a\": 1,\n  \"b\": [\n    true,\n    null\n  ],\n  \"c\": 1.5\n}|\"a\\\"\\n\u{e9}\"|[]"
        );
    }

    #[test]
    fn chatml_fallback_and_errors() {
        let t = ChatTemplate::chatml();
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let t = ChatTemplate::from_source("{{ raise_exception('no system role') }}", "", "").unwrap();
        let e = t.render(&[], false).unwrap_err();
        assert!(e.message().contains("no system role"), "{e}");
        assert!(ChatTemplate::from_source("{% if %}", "", "").is_err());
    }
}
