//! The OpenAI chat-completions wire format: the request vel reads and the
//! answers and model list it writes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `stop`: one sequence or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopSequences {
    /// One sequence.
    One(String),
    /// Up to 4 sequences.
    Many(Vec<String>),
}

/// Streaming options.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and empty `choices`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// A part of an array-form message content; only `text` parts are supported.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// Message content: a string, or an array of `{type: "text", text}` parts
/// (their texts are joined).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// A message of the conversation. Other fields (`name`, …) are accepted and ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputChatMessage {
    /// `system`, `developer` (treated as `system`), `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (`null` is taken as empty).
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// An OpenAI chat-completions request. Fields vel does not use are accepted
/// and ignored (OpenAI SDKs send more than these).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// `auto` (the router chooses), `integration/model` (that integration)
    /// or a model (preferred by the router); see `GET /v1/models`.
    pub model: String,
    /// The conversation, oldest first (1–500 messages).
    pub messages: Vec<InputChatMessage>,
    /// 0–2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Accepted and ignored.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Completion token cap, 1–1,000,000 (`max_completion_tokens` wins when both are given).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Completion token cap, 1–1,000,000.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Up to 4 stop sequences.
    #[serde(default)]
    pub stop: Option<StopSequences>,
    /// Answer as Server-Sent Events of `chat.completion.chunk` objects.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// End-user id, passed to the router and providers as metadata
    /// (`user`).
    #[serde(default)]
    pub user: Option<String>,
    /// OpenAI's request metadata: up to 16 pairs, keys up to 64
    /// characters, values up to 512. Passed to the router (`task-info`'s
    /// `metadata`) and the providers as the metadata object's entries,
    /// `user` (from the `user` field) overriding a key of that name.
    #[serde(default)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer.
    pub content: String,
}

/// The one choice.
#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length`, `content_filter` or `tool_calls`.
    pub finish_reason: &'static str,
}

/// Token counts of the answering call.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CompletionUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// An OpenAI `chat.completion`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<task id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model that answered.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Tokens of the answering call.
    pub usage: CompletionUsage,
}

/// A model of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelEntry {
    /// `integration/model`, a bare model, or `auto`.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds (the integration's creation).
    pub created: i64,
    /// The integration's name (`vel` for `auto`).
    pub owned_by: String,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelEntry>,
}
