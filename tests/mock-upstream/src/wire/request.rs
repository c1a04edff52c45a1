//! Request pieces shared by the wire formats, and the parsed, provider-neutral
//! [`Completion`] every format renders its answer from.

use std::borrow::Cow;

use serde::Deserialize;

use super::error::ErrorShape;
use crate::answer::Answer;

/// Which API a completion request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /openai/v1/chat/completions`.
    Groq,
    /// `POST /chat/completions`; adds `citations`.
    Perplexity,
    /// `POST /v1/messages`.
    Anthropic,
}

impl Provider {
    pub(crate) fn error_shape(self) -> ErrorShape {
        match self {
            Provider::Anthropic => ErrorShape::Anthropic,
            Provider::OpenAi | Provider::Groq | Provider::Perplexity => ErrorShape::OpenAi,
        }
    }
}

/// A chat message; `content` is text or an array of parts.
#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) content: Option<Content>,
}

/// Message (or Anthropic `system`) content: a string or `[{type, text}]` parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One content part; non-text parts have no `text`. Anthropic's
/// `tool_use` parts have `id` and `input` (and a `name`, not read), its `tool_result` parts
/// `tool_use_id` and `content`.
#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) input: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) tool_use_id: Option<String>,
    #[serde(default)]
    pub(crate) content: Option<Box<Content>>,
}

impl Content {
    /// The parts (none for plain text).
    pub(crate) fn parts(&self) -> &[Part] {
        match self {
            Content::Text(_) => &[],
            Content::Parts(parts) => parts,
        }
    }

    /// The text content; text parts joined by newlines.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Parts(parts) => {
                let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.as_deref()).collect();
                Cow::Owned(texts.join("\n"))
            }
        }
    }
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(one) => vec![one],
            Stop::Many(many) => many,
        }
    }
}

/// Total words of the conversation, the text of the user message it
/// answers, and the assistant's partial turn it continues (empty when
/// none). With `prefill` (Anthropic), a conversation ending with an
/// assistant message continues it; on every wire, one ending with an
/// assistant message and then a user message asking to continue (its text
/// contains "continue", in any case) continues that assistant message
/// and answers the user message before it. Without `prefill`, a trailing
/// assistant message is not continued: the answer is the whole answer
/// again, as a model without prefill would repeat itself.
pub(crate) fn conversation(
    messages: &[Message],
    system: Option<&Content>,
    prefill: bool,
) -> (u64, String, String) {
    let mut input_tokens = system.map_or(0, |s| crate::count_tokens(&s.text()));
    for content in messages.iter().filter_map(|m| m.content.as_ref()) {
        input_tokens += crate::count_tokens(&content.text());
    }
    let text = |m: &Message| m.content.as_ref().map(|c| c.text().into_owned());
    let is = |m: &Message, role: &str| m.role == role && m.content.is_some();
    // How many trailing messages are the continuation's, and the partial turn.
    let (tail, partial) = match messages {
        [.., last] if prefill && is(last, "assistant") => (1, text(last)),
        [.., turn, ask]
            if is(turn, "assistant")
                && is(ask, "user")
                && text(ask).is_some_and(|t| t.to_ascii_lowercase().contains("continue")) =>
        {
            (2, text(turn))
        }
        _ => (0, None),
    };
    let last_user = messages[..messages.len() - tail]
        .iter()
        .rev()
        .find(|m| is(m, "user"))
        .and_then(text)
        .unwrap_or_default();
    (input_tokens, last_user, partial.unwrap_or_default())
}

/// A valid completion request, with its answer already computed.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) provider: Provider,
    /// Response id, unique per mock (`chatcmpl-mock-N` / `msg_mock_N`).
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// OpenAI/Groq `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) answer: Answer,
    pub(crate) created: u64,
    /// The tool call answered instead of text, when the request offered
    /// tools and its last message is not a tool result (Anthropic: or the
    /// tool choice names a tool).
    pub(crate) tool_call: Option<ToolCall>,
    /// OpenAI/Groq `logprobs: true`: per-chunk log probabilities, with
    /// this many `top_logprobs` each.
    pub(crate) logprobs: Option<u8>,
}

/// A tool call the mock makes: the first offered tool (or the one
/// `tool_choice` names), its arguments a [`crate::answer::instance`] of its
/// parameters for the last user message.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    /// `call_mock_<seq>`.
    pub(crate) id: String,
    /// The tool's name.
    pub(crate) name: String,
    /// The arguments' JSON text.
    pub(crate) arguments: String,
}
