//! The canonical form of a completion request, as stored with a task and
//! as built by the gateway: plain names, resolved agent settings, and a
//! stable hash that keys idempotency checks and the response cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vel_runtime::types::{
    FinishReason, JsonSchemaFormat, Message, Preference, Priority, ResponseFormat, Role, TaskType,
    ToolCall, ToolChoice, ToolDefinition,
};

use super::catalog::{parse_task_type, task_type_name};
use super::dispatch::{Job, StreamFailover};
use crate::budgets::Spender;

/// One message, with its role by name (`system`, `user`, `assistant`, `tool`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Role name.
    pub role: String,
    /// Text.
    pub content: String,
    /// An assistant turn's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallRecord>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant's (or, for a `tool` message, the tool's) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A tool call the model made, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The call's id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments' JSON text, as the model wrote it.
    pub arguments: String,
}

impl From<&ToolCallRecord> for ToolCall {
    fn from(c: &ToolCallRecord) -> Self {
        ToolCall {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        }
    }
}

impl From<&ToolCall> for ToolCallRecord {
    fn from(c: &ToolCall) -> Self {
        ToolCallRecord {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        }
    }
}

/// A tool the model may call, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default)]
    pub parameters: serde_json::Value,
    /// Hold the arguments strictly to the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Whether and which tool the model must call, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceSpec {
    /// The model decides.
    Auto,
    /// No tool.
    None,
    /// At least one tool.
    Required,
    /// This tool.
    Tool(String),
}

/// The form of the answer, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormatSpec {
    /// Free text.
    Text,
    /// A JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// What the answer is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The JSON Schema.
        #[serde(default)]
        schema: serde_json::Value,
        /// Follow it exactly.
        #[serde(default)]
        strict: bool,
    },
}

/// Tool calling, structured output and the other `vel:plugins@0.2.0`
/// request options; all absent in a plain request (and then left out of
/// its JSON and hash, so requests stored before them hash as they did).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tooling {
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Whether and which tool to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceSpec>,
    /// Whether several tools may be called in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The form of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatSpec>,
    /// Reproducible sampling (best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Return token log probabilities.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// With `logprobs`: this many most likely tokens per position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
}

impl Tooling {
    /// The tools in the contract's types.
    pub fn tool_definitions(&self) -> Vec<ToolDefinition> {
        self.tools
            .iter()
            .map(|t| ToolDefinition {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: if t.parameters.is_null() {
                    "{}".to_string()
                } else {
                    t.parameters.to_string()
                },
                strict: t.strict,
            })
            .collect()
    }

    /// The tool choice in the contract's types.
    pub fn tool_choice(&self) -> Option<ToolChoice> {
        self.tool_choice.as_ref().map(|c| match c {
            ToolChoiceSpec::Auto => ToolChoice::Auto,
            ToolChoiceSpec::None => ToolChoice::None,
            ToolChoiceSpec::Required => ToolChoice::Required,
            ToolChoiceSpec::Tool(name) => ToolChoice::Named(name.clone()),
        })
    }

    /// The response format in the contract's types.
    pub fn response_format(&self) -> ResponseFormat {
        match &self.response_format {
            None | Some(ResponseFormatSpec::Text) => ResponseFormat::Text,
            Some(ResponseFormatSpec::JsonObject) => ResponseFormat::JsonObject,
            Some(ResponseFormatSpec::JsonSchema {
                name,
                description,
                schema,
                strict,
            }) => ResponseFormat::JsonSchema(JsonSchemaFormat {
                name: name.clone(),
                description: description.clone(),
                schema: schema.to_string(),
                strict: *strict,
            }),
        }
    }
}

/// A tool a task calls directly, on a tool-server integration, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInvocation {
    /// The tool-server integration's name (`mcp` or `taskmaster` kind).
    pub integration: String,
    /// The tool's name on that server.
    pub name: String,
    /// Its arguments, a JSON object.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// The tool servers an agent's task may call in its tool loop, as stored
/// with the request (the agent's `tools` and `max_tool_rounds` when it
/// was submitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTools {
    /// Names of the organization's tool-server integrations.
    pub integrations: Vec<String>,
    /// Most rounds of tool calls.
    pub max_rounds: u32,
}

/// Everything that decides the answer to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Kind of work (`reasoning`, `code_generation`, `research`, `light`, `general`).
    pub task_type: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// `model` or `integration/model`; none lets the router choose.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Completion token cap.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// `balanced`, `cost` or `latency`.
    #[serde(default)]
    pub prefer: Option<String>,
    /// Router plugin (the agent's or the organization's policy).
    #[serde(default)]
    pub router: Option<String>,
    /// The provider the agent runs on (an integration name or provider
    /// kind): the router chooses among the integrations it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The agent the task runs for.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Free-form JSON object for the router and providers.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// What a streamed run does when an attempt fails after sending text,
    /// when the request chose (`X-Vel-Stream-Failover`); when absent, the
    /// organization's setting at run time, else `fail`. Left out of the
    /// hash: it does not change the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_failover: Option<StreamFailover>,
    /// Tools, tool choice, response format, seed and logprobs.
    #[serde(flatten)]
    pub tooling: Tooling,
    /// A tool the task calls instead of asking a model (then there are no
    /// messages); absent otherwise, and then left out of the JSON and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolInvocation>,
    /// The agent's tool servers: the task runs the tool loop over them;
    /// absent otherwise, and then left out of the JSON and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tools: Option<AgentTools>,
}

impl TaskRequest {
    /// sha256 (hex) of the organization and the canonical JSON: equal
    /// requests of one organization hash equally, and nothing else does.
    pub fn hash(&self, org_id: &str) -> String {
        let mut h = Sha256::new();
        h.update(org_id.as_bytes());
        h.update([0]);
        // What a stream does on a failure does not change the answer.
        let canonical = if self.stream_failover.is_none() {
            serde_json::to_vec(self)
        } else {
            serde_json::to_vec(&TaskRequest {
                stream_failover: None,
                ..self.clone()
            })
        };
        // Serialising a struct of plain fields cannot fail.
        h.update(canonical.unwrap_or_default());
        hex::encode(h.finalize())
    }

    /// The canonical JSON, as stored with a task.
    pub fn to_json(&self) -> String {
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The job the dispatcher runs for task `id`.
    pub fn to_job(&self, id: &str, org_id: &str, priority: i64, first_attempt_seq: i64) -> Job {
        Job {
            id: id.to_string(),
            org_id: org_id.to_string(),
            task_type: parse_task_type(&self.task_type).unwrap_or(TaskType::General),
            priority: match priority {
                i64::MIN..=0 => Priority::Low,
                1 => Priority::Medium,
                _ => Priority::High,
            },
            requested_model: self.model.clone(),
            messages: self
                .messages
                .iter()
                .map(|m| Message {
                    role: parse_role(&m.role).unwrap_or(Role::User),
                    content: m.content.clone(),
                    tool_calls: m.tool_calls.iter().map(ToolCall::from).collect(),
                    tool_call_id: m.tool_call_id.clone(),
                    name: m.name.clone(),
                })
                .collect(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            router: self.router.clone(),
            provider: self.provider.clone(),
            prefer: match self.prefer.as_deref() {
                Some("cost") => Preference::Cost,
                Some("latency") => Preference::Latency,
                _ => Preference::Balanced,
            },
            metadata: if self.metadata.is_object() {
                self.metadata.clone()
            } else {
                serde_json::json!({})
            },
            first_attempt_seq,
            stream_failover: self.stream_failover,
            tools: self.tooling.tool_definitions(),
            tool_choice: self.tooling.tool_choice(),
            parallel_tool_calls: self.tooling.parallel_tool_calls,
            response_format: self.tooling.response_format(),
            seed: self.tooling.seed,
            logprobs: self.tooling.logprobs,
            top_logprobs: self.tooling.top_logprobs,
            spender: Spender {
                agent_id: self.agent_id.clone(),
                ..Spender::default()
            },
        }
    }

    /// How long an answer to this request may be reused.
    pub fn cache_ttl(&self, default: Duration, research: Duration) -> Duration {
        if self.task_type == task_type_name(TaskType::Research) {
            research
        } else {
            default
        }
    }
}

/// A role by name.
pub fn parse_role(name: &str) -> Option<Role> {
    match name {
        "system" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "tool" => Some(Role::Tool),
        _ => None,
    }
}

/// A finish reason's name, as OpenAI spells it.
pub fn finish_reason_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: &str) -> TaskRequest {
        TaskRequest {
            task_type: "light".into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: prompt.into(),
                ..ChatMessage::default()
            }],
            model: None,
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
            prefer: None,
            router: None,
            provider: None,
            agent_id: None,
            metadata: serde_json::json!({}),
            stream_failover: None,
            tooling: Tooling::default(),
            tool: None,
            agent_tools: None,
        }
    }

    #[test]
    fn equal_requests_hash_equally_per_organization() {
        assert_eq!(request("a").hash("org"), request("a").hash("org"));
        assert_ne!(request("a").hash("org"), request("b").hash("org"));
        assert_ne!(request("a").hash("org"), request("a").hash("other"));
    }

    #[test]
    fn research_answers_live_longer() {
        let mut r = request("a");
        let (default, research) = (Duration::from_secs(60), Duration::from_secs(600));
        assert_eq!(r.cache_ttl(default, research), default);
        r.task_type = "research".into();
        assert_eq!(r.cache_ttl(default, research), research);
    }
}
