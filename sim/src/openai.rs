//! OpenAI-compatible request and response bodies as vLLM shapes them.
//!
//! Owns: reading `prompt`/`messages`/`max_tokens`/`model`/`stream` from a request, counting
//! prompt tokens, and building completion, chat-completion and streaming-chunk bodies.
//! Does not own: timing (see [`crate::engine`]) or HTTP.

use serde::Deserialize;
use serde_json::{json, Value};

/// vLLM's default `max_tokens` for the completions API.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// Tokens a chat template adds per message (role markers, separators); Llama-3 templates
/// add 4–5, so 4 keeps chat prompts a little longer than their words, as in vLLM.
pub const CHAT_TEMPLATE_TOKENS_PER_MESSAGE: u32 = 4;

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// The fields the simulator reads; everything else is accepted and ignored, as vLLM ignores
/// sampling parameters that do not change the shape of the answer.
#[derive(Debug, Clone, Deserialize)]
pub struct RawRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub messages: Option<Vec<Value>>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stream: bool,
}

/// A request reduced to what the engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: Option<String>,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    pub stream: bool,
}

/// Why a body cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Completions without `prompt`, or chat without `messages`.
    #[error("field required: {0}")]
    MissingField(&'static str),
    /// `prompt` is neither a string, a list of token ids, nor a one-element list.
    #[error("vllm-sim accepts one prompt per request (a string or a list of token ids)")]
    UnsupportedPrompt,
    /// `max_tokens` of 0.
    #[error("max_tokens must be at least 1, got 0")]
    ZeroMaxTokens,
}

/// Whitespace-separated words, at least one: the stand-in for a tokenizer.
pub fn count_tokens(text: &str) -> u32 {
    let words = text.split_whitespace().count();
    u32::try_from(words).unwrap_or(u32::MAX).max(1)
}

fn prompt_tokens(prompt: &Value) -> Result<u32, RequestError> {
    match prompt {
        Value::String(text) => Ok(count_tokens(text)),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            Ok(u32::try_from(items.len()).unwrap_or(u32::MAX))
        }
        Value::Array(items) if items.len() == 1 => prompt_tokens(&items[0]),
        _ => Err(RequestError::UnsupportedPrompt),
    }
}

fn message_tokens(message: &Value) -> u32 {
    let content = match message.get("content") {
        Some(Value::String(text)) => count_tokens(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(count_tokens)
            .sum(),
        _ => 0,
    };
    content + CHAT_TEMPLATE_TOKENS_PER_MESSAGE
}

impl RawRequest {
    /// Validates a request for `api`.
    pub fn resolve(self, api: Api) -> Result<Request, RequestError> {
        let prompt_tokens = match api {
            Api::Completions => prompt_tokens(
                self.prompt
                    .as_ref()
                    .ok_or(RequestError::MissingField("prompt"))?,
            )?,
            Api::Chat => self
                .messages
                .as_ref()
                .ok_or(RequestError::MissingField("messages"))?
                .iter()
                .map(message_tokens)
                .sum::<u32>()
                .max(1),
        };
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(RequestError::ZeroMaxTokens);
        }
        Ok(Request {
            model: self.model,
            prompt_tokens,
            max_tokens,
            stream: self.stream,
        })
    }
}

/// The dummy text of token `index`: a space-led word, as BPE tokens of English usually are.
pub fn token_text(index: u32) -> &'static str {
    const WORDS: [&str; 8] = [
        " the",
        " model",
        " is",
        " simulated",
        " by",
        " a",
        " stand-in",
        " engine",
    ];
    WORDS[index as usize % WORDS.len()]
}

/// `tokens` dummy tokens joined.
pub fn generated_text(tokens: u32) -> String {
    (0..tokens).map(token_text).collect()
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": null,
    })
}

/// The non-streaming response body.
pub fn response_body(
    api: Api,
    id: &str,
    created: u64,
    model: &str,
    prompt_tokens: u32,
    completion_tokens: u32,
    finish_reason: &str,
) -> Value {
    let text = generated_text(completion_tokens);
    match api {
        Api::Completions => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_reason,
                "stop_reason": null,
                "prompt_logprobs": null,
            }],
            "service_tier": null,
            "system_fingerprint": null,
            "usage": usage(prompt_tokens, completion_tokens),
            "kv_transfer_params": null,
        }),
        Api::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": null,
                    "annotations": null,
                    "audio": null,
                    "function_call": null,
                    "tool_calls": [],
                    "reasoning_content": null,
                },
                "logprobs": null,
                "finish_reason": finish_reason,
                "stop_reason": null,
            }],
            "service_tier": null,
            "system_fingerprint": null,
            "usage": usage(prompt_tokens, completion_tokens),
            "prompt_logprobs": null,
            "kv_transfer_params": null,
        }),
    }
}

/// One streaming chunk carrying token `index`; `finish_reason` on the last one.
pub fn stream_chunk(
    api: Api,
    id: &str,
    created: u64,
    model: &str,
    index: u32,
    finish_reason: Option<&str>,
) -> Value {
    let text = token_text(index);
    match api {
        Api::Completions => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_reason,
                "stop_reason": null,
            }],
        }),
        Api::Chat => {
            let delta = if index == 0 {
                json!({"role": "assistant", "content": text})
            } else {
                json!({"content": text})
            };
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                    "stop_reason": null,
                }],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: Value) -> RawRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn completion_prompt_is_counted_in_words() {
        let request = raw(json!({"model": "m", "prompt": "San Francisco is a", "max_tokens": 7}))
            .resolve(Api::Completions)
            .unwrap();
        assert_eq!((request.prompt_tokens, request.max_tokens), (4, 7));
        let ids = raw(json!({"prompt": [1, 2, 3]}))
            .resolve(Api::Completions)
            .unwrap();
        assert_eq!((ids.prompt_tokens, ids.max_tokens), (3, DEFAULT_MAX_TOKENS));
    }

    #[test]
    fn chat_adds_template_tokens_per_message() {
        let request = raw(json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there you"}]},
        ]}))
        .resolve(Api::Chat)
        .unwrap();
        assert_eq!(request.prompt_tokens, 2 + 3 + 2 * 4);
    }

    #[test]
    fn malformed_requests_are_named() {
        assert_eq!(
            raw(json!({})).resolve(Api::Completions),
            Err(RequestError::MissingField("prompt"))
        );
        assert_eq!(
            raw(json!({"prompt": ["a", "b"]})).resolve(Api::Completions),
            Err(RequestError::UnsupportedPrompt)
        );
        assert_eq!(
            raw(json!({"prompt": "a", "max_tokens": 0})).resolve(Api::Completions),
            Err(RequestError::ZeroMaxTokens)
        );
    }

    #[test]
    fn generated_text_has_one_word_per_token() {
        assert_eq!(count_tokens(&generated_text(16)), 16);
    }
}
