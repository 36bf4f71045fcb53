//! Response bodies in OpenAI's shapes: errors in its envelope, completion objects, stream chunks.

use serde_json::{Value, json};

/// An error answered as `{"error": {"message", "type", "code"}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, code }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "invalid_request_error", "invalid_request", message)
    }
    pub fn unauthorized() -> ApiError {
        Self::new(
            401,
            "authentication_error",
            "invalid_api_key",
            "Invalid API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`",
        )
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(404, "invalid_request_error", "not_found", message)
    }
    pub fn model_not_found(asked: &str, served: &str) -> ApiError {
        Self::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!("model `{asked}` is not served here; this server serves `{served}`"),
        )
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(413, "invalid_request_error", "request_too_large", message)
    }
    pub fn context_exceeded(needed: usize, n_ctx: usize) -> ApiError {
        Self::new(
            413,
            "invalid_request_error",
            "context_length_exceeded",
            format!(
                "the prompt needs {needed} positions but the context holds {n_ctx}; shorten it (or start the server with a larger -c)"
            ),
        )
    }
    pub fn loading() -> ApiError {
        Self::new(503, "unavailable_error", "loading", "Loading model")
    }
    pub fn busy() -> ApiError {
        Self::new(503, "unavailable_error", "server_busy", "every slot and the queue are full; retry shortly")
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "server_error", "internal_error", message)
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code, "param": null}})
    }
}

/// Why generation ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End-of-generation token or a stop string.
    Stop,
    /// max_tokens or the context.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The fields every object of one response shares.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Chat (`chat.completion`) or text completion (`text_completion`).
    pub chat: bool,
}

impl Envelope {
    fn object(&self, object: &str, choices: Value) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }

    /// The whole answer of a non-streamed request.
    pub fn whole(&self, text: &str, finish: Finish, usage: Usage) -> Value {
        let choice = match self.chat {
            true => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish.as_str()})
            }
            false => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()}),
        };
        let mut v = self.object(if self.chat { "chat.completion" } else { "text_completion" }, json!([choice]));
        v["usage"] = usage.json();
        v
    }

    /// One streamed chunk: `role` only on a chat's first, `finish` only on the last.
    pub fn chunk(&self, text: &str, first: bool, finish: Option<Finish>) -> Value {
        let finish = finish.map(Finish::as_str);
        let choice = match self.chat {
            true => {
                let delta = match (first, text.is_empty() && finish.is_some()) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, true) => json!({}),
                    (false, false) => json!({"content": text}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            false => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        };
        self.object(self.chunk_object(), json!([choice]))
    }

    /// The chunk `stream_options.include_usage` asks for: no choices, the usage.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        let mut v = self.object(self.chunk_object(), json!([]));
        v["usage"] = usage.json();
        v
    }

    fn chunk_object(&self) -> &'static str {
        if self.chat { "chat.completion.chunk" } else { "text_completion" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(chat: bool) -> Envelope {
        Envelope { id: "x".into(), created: 1, model: "m".into(), chat }
    }

    #[test]
    fn chat_chunks_carry_role_first_and_finish_last() {
        let e = env(true);
        assert_eq!(e.chunk("", true, None)["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(e.chunk("hi", false, None)["choices"][0]["delta"], json!({"content": "hi"}));
        let last = e.chunk("", false, Some(Finish::Length));
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert_eq!(last["object"], "chat.completion.chunk");
        let u = e.usage_chunk(Usage { prompt_tokens: 3, completion_tokens: 2 });
        assert_eq!((u["choices"].clone(), u["usage"]["total_tokens"].clone()), (json!([]), json!(5)));
    }

    #[test]
    fn whole_answers_and_errors() {
        let w = env(false).whole("t", Finish::Stop, Usage { prompt_tokens: 1, completion_tokens: 1 });
        assert_eq!((w["object"].clone(), w["choices"][0]["text"].clone()), (json!("text_completion"), json!("t")));
        let e = ApiError::unauthorized().body();
        assert_eq!(
            (e["error"]["type"].clone(), e["error"]["code"].clone()),
            (json!("authentication_error"), json!("invalid_api_key"))
        );
    }
}
