//! The canonical form of a completion request, as stored with a task and
//! as built by the gateway: plain names, resolved agent settings, and a
//! stable hash that keys idempotency checks and the response cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vel_runtime::types::{FinishReason, Message, Preference, Priority, Role, TaskType};

use super::catalog::{parse_task_type, task_type_name};
use super::dispatch::{Job, StreamFailover};
use crate::budgets::Spender;

/// One message, with its role by name (`system`, `user`, `assistant`, `tool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Role name.
    pub role: String,
    /// Text.
    pub content: String,
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
