//! Server-sent events as OpenAI clients read them: `data: {json}` then a blank line, `: text`
//! comments (ignored by clients; they keep idle connections and proxies alive), `data: [DONE]`.

use bytes::Bytes;
use serde_json::Value;

pub fn data(v: &Value) -> Bytes {
    // serde_json never writes a raw newline inside a value, so one `data:` line holds it.
    Bytes::from(format!("data: {v}\n\n"))
}

pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

pub fn comment(text: &str) -> Bytes {
    let one_line = text.replace(['\r', '\n'], " ");
    Bytes::from(format!(": {one_line}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_line_and_a_blank_line() {
        let d = data(&serde_json::json!({"t": "a\nb"}));
        assert_eq!(&d[..], b"data: {\"t\":\"a\\nb\"}\n\n");
        assert_eq!(&done()[..], b"data: [DONE]\n\n");
        assert_eq!(&comment("prompt\n3/9")[..], b": prompt 3/9\n\n");
    }
}
