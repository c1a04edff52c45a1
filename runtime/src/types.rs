//! The WIT types plugins exchange with the host, re-exported from the
//! generated bindings under short names. All derive serde (see
//! [`crate::bindings`] for the JSON shape).

pub use crate::bindings::condition::exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Outcome,
};
pub use crate::bindings::embedder::exports::vel::plugins::embeddings::{
    EmbeddingError, EmbeddingInput, EmbeddingModel, EmbeddingRequest, EmbeddingResponse,
};
pub use crate::bindings::provider::exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, FinishReason, JsonSchemaFormat,
    ModelInfo, ProviderError, ProviderInfo, ResponseFormat, TokenLogprob, ToolChoice,
    ToolDefinition, TopLogprob,
};
pub use crate::bindings::provider::vel::plugins::log::Level as LogLevel;
pub use crate::bindings::provider::vel::plugins::stream::ToolCallDelta;
pub use crate::bindings::provider::vel::plugins::types::{
    CircuitState, Features, Message, Priority, Role, TaskType, ToolCall, Usage,
};
pub use crate::bindings::tool_server::exports::vel::plugins::tools::{
    CredentialHeader as ToolCredentialHeader, Tool, ToolError, ToolResult, ToolServerInfo,
};

/// The WIT names of the flags set in `features`, e.g. `["tools", "json-schema"]`.
pub fn feature_names(features: Features) -> Vec<&'static str> {
    crate::bindings::FEATURE_NAMES
        .iter()
        .filter(|(_, flag)| features.contains(*flag))
        .map(|(name, _)| *name)
        .collect()
}

impl Message {
    /// A plain text message: no tool calls, no tool-call id, no name.
    pub fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

impl CompletionRequest {
    /// What answering this request needs beyond plain text: `tools` when
    /// it offers tools, sets a tool choice or carries tool calls or tool
    /// results; `json-mode` / `json-schema` for those response formats;
    /// `logprobs` when it asks for them. A `seed` is best effort, as
    /// providers promise it, and needs nothing.
    pub fn required_features(&self) -> Features {
        required_features(RequestNeeds {
            messages: &self.messages,
            tools: !self.tools.is_empty(),
            tool_choice: self.tool_choice.is_some(),
            response_format: &self.response_format,
            logprobs: self.logprobs || self.top_logprobs.is_some(),
        })
    }
}

/// What decides a request's required features (see
/// [`CompletionRequest::required_features`]), borrowed from wherever the
/// request's parts live.
#[derive(Debug, Clone, Copy)]
pub struct RequestNeeds<'a> {
    /// The conversation.
    pub messages: &'a [Message],
    /// Whether tools are offered.
    pub tools: bool,
    /// Whether a tool choice is set.
    pub tool_choice: bool,
    /// The response format.
    pub response_format: &'a ResponseFormat,
    /// Whether logprobs are asked for.
    pub logprobs: bool,
}

/// The features a request with these parts needs.
pub fn required_features(parts: RequestNeeds<'_>) -> Features {
    let mut needs = Features::empty();
    // A bare `tool` message (no call id) is plain text, as before 0.2.0.
    let tool_history = parts
        .messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some());
    if parts.tools || parts.tool_choice || tool_history {
        needs |= Features::TOOLS;
    }
    match parts.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => needs |= Features::JSON_MODE,
        ResponseFormat::JsonSchema(_) => needs |= Features::JSON_SCHEMA,
    }
    if parts.logprobs {
        needs |= Features::LOGPROBS;
    }
    needs
}
pub use crate::bindings::router::exports::vel::plugins::routing::{
    Attempt, Candidate, Plan, Preference, RouteError, RouterInfo, TaskInfo,
};
