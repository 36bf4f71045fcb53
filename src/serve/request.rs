//! OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`) read into checked
//! generation parameters. Unknown fields are ignored, as OpenAI's own server does; a known field
//! with a wrong type or value is a 400 that names it.

use serde_json::{Map, Value};

use super::response::ApiError;
use crate::chat::Message;
use crate::sampler::SamplerConfig;

/// What the model is asked to continue.
#[derive(Debug, PartialEq)]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
    Tokens(Vec<u32>),
}

/// A checked request.
#[derive(Debug)]
pub struct GenRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    pub stream: bool,
    /// `stream_options.include_usage`: one more chunk with empty choices and the usage.
    pub include_usage: bool,
    /// None: until the context is full or the model ends its reply.
    pub max_tokens: Option<usize>,
    pub sampling: SamplerConfig,
    pub penalties: Penalties,
    pub stop: Vec<String>,
}

/// OpenAI's additive penalties, over the same recent tokens as the repetition penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Penalties {
    pub presence: f32,
    pub frequency: f32,
}

const MAX_STOPS: usize = 16;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Parse a request body; `chat` selects `messages` (chat) or `prompt` (completions).
pub fn parse(body: &[u8], chat: bool) -> Result<GenRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else { return Err(bad("the request body must be a JSON object")) };
    if let Some(n) = o.get("n").filter(|n| !n.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(bad(format!("n = {n}: only one choice per request is supported (n = 1)")));
    }
    if o.get("logprobs").and_then(Value::as_bool).unwrap_or(false) || o.get("logprobs").is_some_and(Value::is_number) {
        return Err(bad("logprobs are not supported"));
    }
    let prompt = if chat { Prompt::Chat(messages(&o)?) } else { prompt(&o)? };
    let model = opt_str(&o, "model")?;
    let stream = opt_bool(&o, "stream")?.unwrap_or(false);
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => opt_bool(so, "include_usage")?.unwrap_or(false),
        Some(_) => return Err(bad("stream_options must be an object")),
    };
    let max_tokens = match opt_num(&o, "max_completion_tokens")?.or(opt_num(&o, "max_tokens")?) {
        None => None,
        Some(m) if m >= 1.0 && m.fract() == 0.0 => Some(m.min(u32::MAX as f64) as usize),
        Some(m) => return Err(bad(format!("max_tokens = {m}: use a whole number of at least 1"))),
    };
    let d = SamplerConfig::default();
    let temperature = ranged(&o, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = ranged(&o, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    let min_p = ranged(&o, "min_p", 0.0, 1.0)?.unwrap_or(d.min_p as f64);
    let top_k = match ranged(&o, "top_k", 0.0, 1e9)? {
        Some(k) if k.fract() != 0.0 => return Err(bad(format!("top_k = {k}: use a whole number (0 turns it off)"))),
        k => k.map_or(d.top_k, |k| k as usize),
    };
    let repeat_penalty = match ranged(&o, "repetition_penalty", 0.0, 10.0)?.or(ranged(&o, "repeat_penalty", 0.0, 10.0)?)
    {
        Some(p) if p <= 0.0 => return Err(bad("repetition_penalty must be above 0 (1 turns it off)")),
        p => p.unwrap_or(1.0),
    };
    let seed = match o.get("seed") {
        None | Some(Value::Null) => fresh_seed(),
        Some(s) => s.as_u64().or(s.as_i64().map(|i| i as u64)).ok_or_else(|| bad("seed must be an integer"))?,
    };
    let sampling = SamplerConfig {
        temperature: temperature as f32,
        top_k,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repeat_penalty: repeat_penalty as f32,
        seed,
        ..d
    };
    let penalties = Penalties {
        presence: ranged(&o, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency: ranged(&o, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
    };
    let stop = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let s: Option<Vec<String>> = a.iter().map(|s| s.as_str().map(str::to_string)).collect();
            s.ok_or_else(|| bad("stop must be a string or a list of strings"))?
        }
        Some(_) => return Err(bad("stop must be a string or a list of strings")),
    };
    if stop.len() > MAX_STOPS {
        return Err(bad(format!("{} stop strings: at most {MAX_STOPS}", stop.len())));
    }
    Ok(GenRequest { model, prompt, stream, include_usage, max_tokens, sampling, penalties, stop })
}

fn messages(o: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let Some(Value::Array(list)) = o.get("messages") else {
        return Err(bad("`messages` is required: a list of {\"role\", \"content\"} objects"));
    };
    if list.is_empty() {
        return Err(bad("`messages` is empty: give at least one message"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role =
                m.get("role").and_then(Value::as_str).ok_or_else(|| bad(format!("messages[{i}] has no role")))?;
            // "developer" is OpenAI's newer name for the system role; templates know "system".
            let role = if role == "developer" { "system" } else { role };
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                // Content parts: the text ones, concatenated (images cannot be served).
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(bad(format!(
                                    "messages[{i}]: content part of type {} is not supported (text only)",
                                    kind.unwrap_or("?")
                                )));
                            }
                        }
                    }
                    text
                }
                Some(_) => return Err(bad(format!("messages[{i}].content must be a string or a list of text parts"))),
            };
            Ok(Message::new(role, &content))
        })
        .collect()
}

fn prompt(o: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let as_tokens = |a: &[Value]| -> Option<Vec<u32>> { a.iter().map(|t| t.as_u64().map(|t| t as u32)).collect() };
    match o.get("prompt") {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => Ok(Prompt::Text(a[0].as_str().unwrap().into())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => as_tokens(a[0].as_array().unwrap())
            .map(Prompt::Tokens)
            .ok_or_else(|| bad("prompt: token lists hold integers")),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            as_tokens(a).map(Prompt::Tokens).ok_or_else(|| bad("prompt: token lists hold integers"))
        }
        Some(Value::Array(a)) if a.len() > 1 => Err(bad("one prompt per request is supported, not a list of several")),
        _ => Err(bad("`prompt` is required: a string")),
    }
}

fn opt_str(o: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{k} must be a string"))),
    }
}

fn opt_bool(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{k} must be true or false"))),
    }
}

fn opt_num(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| bad(format!("{k} must be a number"))),
    }
}

fn ranged(o: &Map<String, Value>, k: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match opt_num(o, k)? {
        Some(x) if !(lo..=hi).contains(&x) => Err(bad(format!("{k} = {x}: use a value from {lo} to {hi}"))),
        x => Ok(x),
    }
}

/// A seed for requests without one: different every request.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str, chat: bool) -> ApiError {
        parse(body.as_bytes(), chat).unwrap_err()
    }

    #[test]
    fn chat_request_with_every_parameter() {
        let r = parse(
            br#"{"model":"m","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":7,"temperature":0,
                "top_p":0.5,"top_k":3,"min_p":0.1,"seed":9,"stop":"x","presence_penalty":0.5,"frequency_penalty":-1,
                "repetition_penalty":1.1,"n":1,"user":"ignored"}"#,
            true,
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![Message::new("system", "be brief"), Message::new("user", "hi")]));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!((r.sampling.temperature, r.sampling.top_p, r.sampling.top_k, r.sampling.seed), (0.0, 0.5, 3, 9));
        assert_eq!(r.sampling.repeat_penalty, 1.1);
        assert_eq!(r.penalties, Penalties { presence: 0.5, frequency: -1.0 });
        assert_eq!(r.stop, vec!["x".to_string()]);
    }

    #[test]
    fn completion_prompts() {
        assert_eq!(parse(br#"{"prompt":"abc"}"#, false).unwrap().prompt, Prompt::Text("abc".into()));
        assert_eq!(parse(br#"{"prompt":["abc"]}"#, false).unwrap().prompt, Prompt::Text("abc".into()));
        assert_eq!(parse(br#"{"prompt":[1,2]}"#, false).unwrap().prompt, Prompt::Tokens(vec![1, 2]));
        assert_eq!(parse(br#"{"prompt":"a","stop":["x","y"]}"#, false).unwrap().stop.len(), 2);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        assert!(err("{nope", true).message.contains("not valid JSON"));
        assert!(err("[1]", true).message.contains("JSON object"));
        assert!(err(r#"{"messages":[]}"#, true).message.contains("empty"));
        assert!(err(r#"{"prompt":"a"}"#, true).message.contains("messages"));
        assert!(err(r#"{"messages":[{"role":"user","content":"a"}],"n":2}"#, true).message.contains("n = 2"));
        assert!(err(r#"{"prompt":"a","temperature":3}"#, false).message.contains("temperature"));
        assert!(err(r#"{"prompt":"a","max_tokens":0}"#, false).message.contains("max_tokens"));
        assert!(err(r#"{"prompt":"a","stop":5}"#, false).message.contains("stop"));
        assert!(err(r#"{"prompt":["a","b"]}"#, false).message.contains("one prompt"));
        assert!(err(r#"{"prompt":"a","stream":"yes"}"#, false).message.contains("stream"));
        assert_eq!(err(r#"{"prompt":"a","top_k":-1}"#, false).status, 400);
    }
}
