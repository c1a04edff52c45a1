//! One way in for a unit of work: the caller's conversation and sampling
//! parameters, merged with its agent's settings into the canonical request
//! ([`prepare`]); queued work is then stored, idempotent and within the
//! submitter's limit of unfinished tasks, audited and announced to the
//! workers ([`submit`]). The gateway prepares its requests here too and
//! runs them at once.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::dispatch::StreamFailover;
use super::request::{ChatMessage, TaskRequest, ToolInvocation};
use super::sampling::Sampling;
use super::signals::WorkKind;
use super::state::TaskSource;
use crate::agents::AgentConfig;
use crate::audit;
use crate::audit::ClientInfo;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::{
    self, Db,
    tasks::{Inserted, NewTask, Task},
};
use crate::validation::Invalid;

/// Longest message content, in characters.
pub const MAX_MESSAGE: usize = 200_000;
/// Most messages in one unit of work.
pub const MAX_MESSAGES: usize = 500;

/// Urgency: higher runs first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskPriority {
    /// Runs after the others.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Runs first.
    High,
}

impl TaskPriority {
    /// Its rank as stored: 0, 1 or 2.
    pub fn rank(self) -> i64 {
        match self {
            TaskPriority::Low => 0,
            TaskPriority::Medium => 1,
            TaskPriority::High => 2,
        }
    }

    /// The name of a stored rank.
    pub fn name(rank: i64) -> &'static str {
        match rank {
            i64::MIN..=0 => "low",
            1 => "medium",
            _ => "high",
        }
    }
}

/// What the caller asks, before its agent's settings apply; every field
/// already checked.
#[derive(Debug, Clone)]
pub struct Work {
    /// Kind of work (`reasoning`, `code_generation`, …).
    pub task_type: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// The caller's sampling parameters.
    pub sampling: Sampling,
    /// The agent whose settings fill what the caller left open.
    pub agent_id: Option<String>,
    /// JSON object for the router and providers.
    pub metadata: Value,
}

/// A unit of work to queue.
#[derive(Debug, Clone)]
pub struct Submission {
    /// What it is for (trimmed when stored).
    pub description: String,
    /// Urgency.
    pub priority: TaskPriority,
    /// The request.
    pub work: Work,
    /// Publish token deltas on its event stream.
    pub stream: bool,
    /// May be answered from the response cache.
    pub use_cache: bool,
    /// Replays with the same key return the first task.
    pub idempotency_key: Option<String>,
    /// What its stream does when a provider fails after sending text, when
    /// the request chose (else the organization's setting at run time).
    pub stream_failover: Option<StreamFailover>,
    /// A tool to call instead of asking a model (the work then has no
    /// messages).
    pub tool: Option<ToolInvocation>,
}

/// What [`submit`] did.
#[derive(Debug)]
pub enum Submitted {
    /// A new pending task.
    Created(Box<Task>),
    /// The idempotency key was used for the same request: that task.
    Replayed(Box<Task>),
}

/// Why work was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The agent is missing or not active.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The idempotency key was used for another request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// The submitter has as many unfinished tasks as allowed.
    #[error("at most {limit} unfinished tasks per user; wait for some to finish")]
    TooManyUnfinished {
        /// The limit.
        limit: u32,
    },
    /// The submitter's organization has as many unfinished tasks as its
    /// `concurrent_tasks` rate limit allows.
    #[error("at most {limit} unfinished tasks in the organization; wait for some to finish")]
    OrganizationBusy {
        /// The limit.
        limit: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// The canonical request of `work` in the caller's organization: its
/// agent's settings (which must be active) fill what the caller left open.
pub async fn prepare(db: &Db, org_id: &str, work: Work) -> Result<TaskRequest, SubmitError> {
    if work.agent_id.is_none() {
        return Ok(request(work, None));
    }
    let mut tx = db.tenant_read(org_id).await?;
    let prepared = prepare_on(&mut tx, org_id, work).await?;
    tx.commit().await?;
    Ok(prepared)
}

/// [`prepare`], reading the agent on `conn` (a transaction the caller
/// holds open).
pub async fn prepare_on(
    conn: &mut sqlx::AnyConnection,
    org_id: &str,
    work: Work,
) -> Result<TaskRequest, SubmitError> {
    let agent = match &work.agent_id {
        Some(id) => agent_settings(conn, org_id, id).await?,
        None => None,
    };
    Ok(request(work, agent.as_ref()))
}

/// The settings of agent `agent_id`, which must exist in the organization
/// and be active (else an error on `agent_id`).
pub async fn agent_settings(
    conn: &mut sqlx::AnyConnection,
    org_id: &str,
    agent_id: &str,
) -> Result<Option<AgentConfig>, SubmitError> {
    let agent = store::agents::get(conn, org_id, agent_id)
        .await?
        .ok_or_else(|| Invalid::field("agent_id", "no such agent"))?;
    if agent.status != "active" {
        return Err(Invalid::field(
            "agent_id",
            format!("the agent is {}, not active", agent.status),
        )
        .into());
    }
    Ok(AgentConfig::parse(&agent.config))
}

/// `work` as a canonical request, with `agent`'s settings where the caller
/// set nothing: model, temperature, token cap, a system prompt when the
/// conversation has none, routing policy and provider.
pub fn request(work: Work, agent: Option<&AgentConfig>) -> TaskRequest {
    let Work {
        task_type,
        mut messages,
        sampling,
        agent_id,
        metadata,
    } = work;
    if let Some(system) = agent.and_then(|a| a.system_prompt.as_deref())
        && !messages.iter().any(|m| m.role == "system")
    {
        messages.insert(
            0,
            ChatMessage {
                role: "system".into(),
                content: system.to_string(),
                ..ChatMessage::default()
            },
        );
    }
    TaskRequest {
        task_type,
        messages,
        model: sampling.model.or_else(|| agent.map(|a| a.model.clone())),
        temperature: sampling
            .temperature
            .or_else(|| agent.and_then(|a| a.temperature))
            .map(|t| t as f32),
        max_tokens: sampling
            .max_tokens
            .or_else(|| agent.and_then(|a| a.max_tokens)),
        stop: sampling.stop.unwrap_or_default(),
        prefer: sampling.prefer,
        // The organization's policy is applied when the task runs.
        router: agent.and_then(|a| a.routing_policy.clone()),
        provider: agent.map(|a| a.provider.clone()),
        agent_id,
        metadata,
        stream_failover: None,
        tooling: Default::default(),
        tool: None,
        agent_tools: agent.and_then(AgentConfig::agent_tools),
    }
}

/// Where new unfinished work of a user is stored: a transaction serialised
/// per organization when it has a `concurrent_tasks` cap (every user's
/// work counts against it), else per user, so concurrent submissions
/// cannot overshoot either limit, even across instances.
pub struct Admission {
    /// The transaction to store the work in.
    pub tx: store::Tx,
    /// The user's limit of unfinished tasks, workflows and batches.
    pub limit: u32,
    /// The organization's cap, when its unfinished work already reaches it.
    pub organization_full: Option<i64>,
}

/// Begin storing new unfinished work (a task, a workflow, a batch) of
/// `who`, with the limits that apply to it (see [`Admission`]).
pub async fn admission(state: &AppState, who: &Principal) -> Result<Admission, sqlx::Error> {
    let caps = state.limits.task_caps(who).await?;
    let limit = caps.user_limit(state.config.tasks.max_unfinished_per_user);
    let serial = match caps.organization {
        Some(_) => who.org_id.as_str(),
        None => who.user_id.as_str(),
    };
    let mut tx = state.db.tenant_serialised(&who.org_id, serial).await?;
    let mut organization_full = None;
    if let Some(cap) = caps.organization
        && store::tasks::count_unfinished_in_org(&mut tx, &who.org_id).await? >= cap
    {
        organization_full = Some(cap);
    }
    Ok(Admission {
        tx,
        limit,
        organization_full,
    })
}

/// Queue `submission` for `who`: its canonical request is stored as a
/// pending task (or the earlier task of the same idempotency key is
/// returned), the creation audited, and the workers woken.
pub async fn submit(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    submission: Submission,
) -> Result<Submitted, SubmitError> {
    let mut request = prepare(&state.db, &who.org_id, submission.work).await?;
    request.stream_failover = submission.stream_failover;
    request.tool = submission.tool;
    let new = NewTask {
        org_id: who.org_id.clone(),
        user_id: Some(who.user_id.clone()),
        agent_id: request.agent_id.clone(),
        source: TaskSource::Api,
        description: submission.description.trim().to_string(),
        task_type: request.task_type.clone(),
        priority: submission.priority.rank(),
        request: request.to_json(),
        stream: submission.stream,
        use_cache: submission.use_cache,
        idempotency_key: submission.idempotency_key,
        request_hash: request.hash(&who.org_id),
        workflow_id: None,
        api_key_id: who.api_key_id().map(str::to_string),
    };
    let Admission {
        mut tx,
        limit,
        organization_full,
    } = admission(state, who).await?;
    if let Some(cap) = organization_full
        && !store::tasks::is_replay(&mut tx, &new).await?
    {
        return Err(SubmitError::OrganizationBusy { limit: cap });
    }
    let task = match store::tasks::insert(&mut tx, &new, limit).await? {
        Inserted::Existing(task) => {
            tx.commit().await?;
            if task.request_hash != new.request_hash {
                return Err(SubmitError::IdempotencyConflict);
            }
            return Ok(Submitted::Replayed(task));
        }
        Inserted::TooManyUnfinished => return Err(SubmitError::TooManyUnfinished { limit }),
        Inserted::Created(task) => task,
    };
    audit::record(
        &mut tx,
        who,
        client,
        "task_created",
        json!({ "task_id": task.id, "task_type": task.task_type, "agent_id": task.agent_id,
                "priority": TaskPriority::name(task.priority) }),
    )
    .await?;
    tx.commit().await?;
    state.signals.publish_due(WorkKind::Tasks);
    Ok(Submitted::Created(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(sampling: Sampling, messages: &[(&str, &str)]) -> Work {
        Work {
            task_type: "general".into(),
            messages: messages
                .iter()
                .map(|(role, content)| ChatMessage {
                    role: (*role).into(),
                    content: (*content).into(),
                    ..ChatMessage::default()
                })
                .collect(),
            sampling,
            agent_id: Some("agent".into()),
            metadata: json!({}),
        }
    }

    fn agent() -> AgentConfig {
        AgentConfig {
            provider: "beta".into(),
            model: "echo".into(),
            temperature: Some(0.5),
            max_tokens: Some(64),
            system_prompt: Some("be brief".into()),
            routing_policy: Some("cost-router".into()),
            tools: Vec::new(),
            max_tool_rounds: None,
        }
    }

    #[test]
    fn an_agents_tools_go_with_the_request() {
        let plain = request(work(Sampling::default(), &[("user", "hi")]), Some(&agent()));
        assert_eq!(plain.agent_tools, None);
        let mut with_tools = agent();
        with_tools.tools = vec!["tm".into()];
        let r = request(
            work(Sampling::default(), &[("user", "hi")]),
            Some(&with_tools),
        );
        assert_ne!(r.hash("org"), plain.hash("org"));
        let tools = r.agent_tools.expect("the agent's tools");
        assert_eq!(tools.integrations, ["tm"]);
        assert_eq!(tools.max_rounds, 8);
    }

    #[test]
    fn the_agent_fills_what_the_caller_left_open() {
        let r = request(work(Sampling::default(), &[("user", "hi")]), Some(&agent()));
        assert_eq!(r.model.as_deref(), Some("echo"));
        assert_eq!(r.temperature, Some(0.5));
        assert_eq!(r.max_tokens, Some(64));
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.messages[0].content, "be brief");
        assert_eq!(r.router.as_deref(), Some("cost-router"));
        assert_eq!(r.provider.as_deref(), Some("beta"));
    }

    #[test]
    fn the_callers_parameters_win() {
        let own = Sampling {
            model: Some("alpha/echo".into()),
            temperature: Some(1.5),
            max_tokens: Some(8),
            stop: Some(vec!["END".into()]),
            prefer: Some("cost".into()),
        };
        let r = request(
            work(own, &[("system", "mine"), ("user", "hi")]),
            Some(&agent()),
        );
        assert_eq!(r.model.as_deref(), Some("alpha/echo"));
        assert_eq!(r.temperature, Some(1.5));
        assert_eq!(r.max_tokens, Some(8));
        assert_eq!(r.stop, ["END"]);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[0].content, "mine");
    }

    #[test]
    fn without_an_agent_nothing_is_added() {
        let r = request(work(Sampling::default(), &[("user", "hi")]), None);
        assert_eq!(r.model, None);
        assert_eq!(r.provider, None);
        assert_eq!(r.router, None);
        assert_eq!(r.messages.len(), 1);
    }
}
