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

/// A message of the conversation. Other fields are accepted and ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputChatMessage {
    /// `system`, `developer` (treated as `system`), `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (`null` is taken as empty).
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// An `assistant` message: the tool calls the model made.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallOut>>,
    /// A `tool` message: the id of the call whose result it carries.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A participant's name (up to 200 characters).
    #[serde(default)]
    pub name: Option<String>,
}

/// The function of a tool.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionDefinition {
    /// Its name: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object schema); absent for none.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// Hold the arguments strictly to the schema (providers that support it).
    #[serde(default)]
    pub strict: Option<bool>,
}

/// A tool the model may call: `{"type": "function", "function": {…}}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ToolIn {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

/// The function a named tool choice names.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionName {
    /// The tool's name.
    pub name: String,
}

/// A named tool choice: `{"type": "function", "function": {"name": …}}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NamedToolChoice {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tool.
    pub function: FunctionName,
}

/// `tool_choice`: `auto`, `none`, `required`, or a named tool.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ToolChoiceIn {
    /// `auto`, `none` or `required`.
    Mode(String),
    /// That tool.
    Named(NamedToolChoice),
}

/// The schema of a `json_schema` response format.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct JsonSchemaIn {
    /// Its name: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// What the answer is, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON Schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    /// Follow the schema exactly (default false).
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {…}}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ResponseFormatIn {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `json_schema`: the schema.
    #[serde(default)]
    pub json_schema: Option<JsonSchemaIn>,
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
    /// Tools the model may call (at most 128). Only models whose provider
    /// plugin supports tool calling are used; when none is offered, 400.
    #[serde(default)]
    pub tools: Option<Vec<ToolIn>>,
    /// `auto` (default with tools), `none`, `required`, or
    /// `{"type": "function", "function": {"name": …}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<ToolChoiceIn>,
    /// Whether the model may call several tools in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `{"type": "text"}`, `{"type": "json_object"}` (JSON mode) or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`
    /// (structured output). Only models that support it are used.
    #[serde(default)]
    pub response_format: Option<ResponseFormatIn>,
    /// Sample reproducibly, where the provider supports it (best effort).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Return the log probability of each output token (plain answers;
    /// only models that support it are used).
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// With `logprobs`: also the 0–20 most likely tokens at each position.
    #[serde(default)]
    pub top_logprobs: Option<u8>,
}

/// The function of a tool call: its name and arguments.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionCall {
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text the model wrote.
    #[serde(default)]
    pub arguments: String,
}

/// A tool call: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolCallOut {
    /// The call's id; the `tool` message with its result names it.
    pub id: String,
    /// `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function called.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_string()
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer; `null` when the model only called tools.
    pub content: Option<String>,
    /// The tools the model asked for (finish reason `tool_calls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// One likely token at a position.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopLogprobOut {
    /// The token.
    pub token: String,
    /// Its log probability.
    pub logprob: f64,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// The log probability of one output token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenLogprobOut {
    /// The token.
    pub token: String,
    /// Its log probability.
    pub logprob: f64,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at its position.
    pub top_logprobs: Vec<TopLogprobOut>,
}

/// A choice's `logprobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChoiceLogprobs {
    /// One entry per output token.
    pub content: Vec<TokenLogprobOut>,
}

/// The one choice.
#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// With `logprobs: true`: per-token log probabilities; else `null`.
    pub logprobs: Option<ChoiceLogprobs>,
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
