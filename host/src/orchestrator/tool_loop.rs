//! The agent tool loop: a task (or `/v1` request) of an agent that lists
//! tool servers in its `tools` offers the model their tools; when the
//! model answers with tool calls, vel calls the servers (through
//! [`ToolServers`], under each integration's timeout and concurrency
//! limit), appends the assistant's tool-call turn and one `tool` message
//! per call, and asks again, until the model answers without tools or
//! asks for tools after `max_tool_rounds` rounds, which fails the run with
//! [`DispatchKind::ToolRoundsExceeded`] (the last answer asked for more
//! work, so it is not an answer to keep).
//!
//! Names: the model sees each tool as `<integration>__<tool>` (the
//! integration's name is a unique lower-case slug within the
//! organization, so two servers' tools never collide), with characters
//! OpenAI does not allow in a tool name replaced by `_`; a name longer than
//! 64 characters, or one that collides after that replacement, is cut and
//! given an 8-hex-digit hash of the full name. The loop maps the name back
//! to its server and the server's own tool name.
//!
//! A tool's own failure (MCP `isError`, an unknown tool, arguments the
//! server refuses, arguments that are not a JSON object) is fed back to
//! the model as the tool message (`error: …`); a server that cannot be
//! reached, times out or breaks the protocol fails the run
//! ([`DispatchKind::ToolServerFailed`]). Every model call is an attempt
//! (numbered on across rounds, its cost counted with the others); every
//! tool call is reported ([`Progress::ToolStarted`], [`Progress::ToolFinished`])
//! and audited (`tool_call`: integration, tool, ok, milliseconds, error
//! kind; never the arguments); a call cut off because the loop was
//! dropped (the task cancelled, the client gone) is audited as failed
//! with the kind `cancelled` ([`CutOff`]). The answer's usage is every
//! round's tokens summed, and its text every round's text, each that went
//! before tool calls followed by [`ROUND_BREAK`]: what a streamed loop
//! sent, so the client, the plain answer and the record read the same. Tools the caller sent itself (the
//! gateway's client tools) are offered too; a call of one ends the loop,
//! and the answer carries only those calls for the caller to run.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use vel_runtime::types::{Message, Role, ToolCall, ToolDefinition};

use super::dispatch::{Answer, DispatchError, DispatchKind, Dispatcher, Job, Progress};
use super::tools::{ToolCallError, ToolServer, ToolServers};
use crate::audit::{self, ClientInfo};
use crate::store::Db;
use crate::store::tasks::Attempt;

/// Rounds of tool calls an agent gets when its `max_tool_rounds` is unset.
pub const DEFAULT_MAX_TOOL_ROUNDS: u32 = 8;
/// The most `max_tool_rounds` may be.
pub const MAX_TOOL_ROUNDS: u32 = 32;
/// Between an integration's name and its tool's in the name the model sees.
pub const SEPARATOR: &str = "__";
/// Longest tool name OpenAI (and so most models) accept.
const MAX_NAME: usize = 64;
/// After each round's text that went before tool calls, in the answer
/// and in a streamed loop (so the answer is exactly what was streamed).
pub const ROUND_BREAK: &str = "\n\n";
/// Longest tool result handed to the model, in characters (the rest is cut).
const MAX_RESULT_CHARS: usize = 100_000;
/// Longest tool result text shown in a `tool_result` event.
const MAX_EVENT_TEXT: usize = 2_000;

/// One tool offered to the model.
#[derive(Debug, Clone)]
struct Offered {
    /// Index of its server in [`Toolbox::servers`].
    server: usize,
    /// Its name on that server.
    tool: String,
}

/// The tools of an agent's tool servers, as offered to the model.
#[derive(Debug, Clone, Default)]
pub struct Toolbox {
    servers: Vec<ToolServer>,
    /// By the name the model sees.
    offered: HashMap<String, Offered>,
    definitions: Vec<ToolDefinition>,
}

impl Toolbox {
    /// The tools of the organization's tool-server integrations named
    /// `integrations`, listed from the servers now. A server that cannot
    /// be used or listed fails with [`DispatchKind::ToolServerFailed`].
    pub async fn open(
        servers: &ToolServers,
        org_id: &str,
        integrations: &[String],
    ) -> Result<Toolbox, DispatchError> {
        let mut toolbox = Toolbox::default();
        for name in integrations {
            let server = servers
                .by_name(org_id, name)
                .await
                .map_err(|e| server_failed(name, &e, Vec::new()))?;
            let tools = servers
                .list(&server)
                .await
                .map_err(|e| server_failed(name, &e, Vec::new()))?;
            let index = toolbox.servers.len();
            for tool in tools {
                let exposed = toolbox.free_name(name, &tool.name);
                toolbox.definitions.push(ToolDefinition {
                    name: exposed.clone(),
                    description: tool.description.clone(),
                    parameters: if tool.input_schema.trim().is_empty() {
                        r#"{"type":"object","properties":{}}"#.to_string()
                    } else {
                        tool.input_schema.clone()
                    },
                    strict: None,
                });
                toolbox.offered.insert(
                    exposed,
                    Offered {
                        server: index,
                        tool: tool.name,
                    },
                );
            }
            toolbox.servers.push(server);
        }
        Ok(toolbox)
    }

    /// The tools in the contract's types, as the model sees them.
    pub fn definitions(&self) -> &[ToolDefinition] {
        &self.definitions
    }

    /// Whether the model sees a tool called `name` here.
    pub fn offers(&self, name: &str) -> bool {
        self.offered.contains_key(name)
    }

    /// The name tool `tool` of integration `integration` is offered as:
    /// [`exposed_name`], or its hashed form when that is taken.
    fn free_name(&self, integration: &str, tool: &str) -> String {
        let name = exposed_name(integration, tool);
        if !self.offered.contains_key(&name) {
            return name;
        }
        hashed_name(&name, &format!("{integration}{SEPARATOR}{tool}"))
    }
}

/// The name the model sees for tool `tool` of integration `integration`:
/// `integration__tool`, characters outside `a-zA-Z0-9_-` replaced by `_`,
/// cut to 64 characters with a hash of the full name when longer.
pub fn exposed_name(integration: &str, tool: &str) -> String {
    let full = format!("{integration}{SEPARATOR}{tool}");
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_NAME {
        clean
    } else {
        hashed_name(&clean, &full)
    }
}

/// `clean` cut so that `_` and 8 hex digits of sha256(`full`) fit in 64.
fn hashed_name(clean: &str, full: &str) -> String {
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let keep = clean.len().min(MAX_NAME - 9);
    format!("{}_{}", &clean[..keep], &digest[..8])
}

/// A tool call the loop is making, as the `tool_call` event shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolStarted {
    /// The round (1-based).
    pub round: u32,
    /// The model's id of the call.
    pub id: String,
    /// The name the model used.
    pub name: String,
    /// The integration called (absent when the name is no offered tool).
    pub integration: Option<String>,
    /// The tool's name on that server.
    pub tool: Option<String>,
    /// The arguments, as the model wrote them (parsed when they parse).
    pub arguments: Value,
}

/// How a tool call of the loop ended, as the `tool_result` event shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFinished {
    /// The round (1-based).
    pub round: u32,
    /// The model's id of the call.
    pub id: String,
    /// The name the model used.
    pub name: String,
    /// The integration called.
    pub integration: Option<String>,
    /// The tool's name on that server.
    pub tool: Option<String>,
    /// Whether the tool answered without an error.
    pub ok: bool,
    /// How long the call took, in milliseconds.
    pub ms: i64,
    /// The error's kind, when not `ok` (`tool_error`, `unknown_tool`,
    /// `invalid_arguments`, or the server's failure).
    pub error: Option<String>,
    /// What the model is given (its first 2,000 characters).
    pub text: String,
    /// Whether `text` was cut here.
    pub truncated: bool,
}

/// What a tool call gave the model, or the failure that ends the run.
enum Outcome {
    /// Its text (an error's too, prefixed `error: `) and the event.
    Fed(String, ToolFinished),
    /// The server failed.
    Failed(ToolCallError, ToolFinished),
}

impl Dispatcher {
    /// Run `job` as a tool loop over `toolbox` (see the module's doc): at
    /// most `max_rounds` rounds of tool calls; `progress` gets every
    /// attempt, delta and tool call. The answer's attempts are every
    /// round's; so are a failure's. `source` (`task` or `gateway`) is
    /// what the audit rows say ran the loop.
    pub async fn run_tool_loop(
        &self,
        job: &Job,
        toolbox: &Toolbox,
        max_rounds: u32,
        stream: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        source: &'static str,
    ) -> Result<Answer, DispatchError> {
        let report = |p: Progress| {
            if let Some(tx) = progress {
                let _ = tx.send(p);
            }
        };
        let client_tools: HashSet<String> = job.tools.iter().map(|t| t.name.clone()).collect();
        let mut job = job.clone();
        job.tools.extend(toolbox.definitions().iter().cloned());
        let mut attempts = Vec::new();
        // Every round's tokens: the answer's usage is the loop's.
        let (mut input_tokens, mut output_tokens) = (0u32, 0u32);
        let mut round = 0;
        // The text of the rounds before this one, each followed by
        // [`ROUND_BREAK`]: what a streamed loop has shown so far.
        let mut said = String::new();
        loop {
            let (result, streamed) = self.run_round(&job, stream, progress).await;
            let mut answer = match result {
                Ok(answer) => answer,
                Err(mut e) => {
                    attempts.append(&mut e.attempts);
                    e.attempts = attempts;
                    return Err(e);
                }
            };
            if let Some(last) = answer.attempts.iter().map(|a| a.seq).max() {
                job.first_attempt_seq = last;
            }
            attempts.extend(answer.attempts.iter().cloned());
            let usage = &mut answer.response.usage;
            input_tokens = input_tokens.saturating_add(usage.input_tokens);
            output_tokens = output_tokens.saturating_add(usage.output_tokens);
            usage.input_tokens = input_tokens;
            usage.output_tokens = output_tokens;
            let calls = std::mem::take(&mut answer.response.tool_calls);
            let for_client: Vec<ToolCall> = calls
                .iter()
                .filter(|c| client_tools.contains(&c.name))
                .cloned()
                .collect();
            if calls.is_empty() || !for_client.is_empty() {
                // The answer, or calls the caller runs: the server tools
                // asked for in the same turn are not run.
                answer.response.tool_calls = for_client;
                answer.response.text.insert_str(0, &said);
                answer.attempts = attempts;
                return Ok(answer);
            }
            if round >= max_rounds {
                return Err(DispatchError {
                    kind: DispatchKind::ToolRoundsExceeded,
                    message: format!(
                        "the model still asked for tools after {max_rounds} rounds of tool \
                         calls (the agent's max_tool_rounds)"
                    ),
                    attempts,
                    retry_after: None,
                });
            }
            round += 1;
            let text = &answer.response.text;
            if !text.is_empty() {
                // Shown to a streamed loop's client as it was said: the
                // text a provider did not stream is sent whole.
                if stream && streamed.is_empty() {
                    report(Progress::Delta {
                        seq: job.first_attempt_seq,
                        text: text.clone(),
                    });
                }
                if stream {
                    report(Progress::Delta {
                        seq: job.first_attempt_seq,
                        text: ROUND_BREAK.to_string(),
                    });
                }
                said.push_str(text);
                said.push_str(ROUND_BREAK);
            }
            job.messages.push(Message {
                role: Role::Assistant,
                content: answer.response.text.clone(),
                tool_calls: calls.clone(),
                tool_call_id: None,
                name: None,
            });
            let runs = calls.iter().map(|call| {
                let event = started(toolbox, round, call);
                report(Progress::ToolStarted(event.clone()));
                self.call_one(toolbox, &job, source, event)
            });
            let outcomes = futures::future::join_all(runs).await;
            for (call, outcome) in calls.iter().zip(outcomes) {
                match outcome {
                    Outcome::Fed(text, finished) => {
                        report(Progress::ToolFinished(finished));
                        job.messages.push(Message {
                            role: Role::Tool,
                            content: text,
                            tool_calls: Vec::new(),
                            tool_call_id: Some(call.id.clone()),
                            name: None,
                        });
                    }
                    Outcome::Failed(e, finished) => {
                        report(Progress::ToolFinished(finished.clone()));
                        let integration = finished.integration.unwrap_or_default();
                        return Err(server_failed(&integration, &e, attempts));
                    }
                }
            }
        }
    }

    /// One round's model call, its progress passed on to `progress`;
    /// also returns the text it streamed.
    async fn run_round(
        &self,
        job: &Job,
        stream: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> (Result<Answer, DispatchError>, String) {
        let Some(progress) = progress else {
            return (self.run(job, stream, None).await, String::new());
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = async move {
            let result = self.run(job, stream, Some(&tx)).await;
            drop(tx);
            result
        };
        let forward = async {
            let mut streamed = String::new();
            while let Some(p) = rx.recv().await {
                if let Progress::Delta { text, .. } = &p {
                    streamed.push_str(text);
                }
                let _ = progress.send(p);
            }
            streamed
        };
        tokio::join!(run, forward)
    }

    /// Make one call of the loop and audit it.
    async fn call_one(
        &self,
        toolbox: &Toolbox,
        job: &Job,
        source: &'static str,
        call: ToolStarted,
    ) -> Outcome {
        let clock = Instant::now();
        // Audits the call should it be cut off (the loop dropped).
        let mut in_flight = InFlight {
            dispatcher: self,
            source,
            job,
            call: Some(call.clone()),
            clock,
        };
        let result = match toolbox.offered.get(&call.name) {
            None => Err(ToolCallError {
                kind: "unknown_tool",
                message: format!("no tool is called `{}`", call.name),
            }),
            Some(_) if !call.arguments.is_object() => Err(ToolCallError {
                kind: "invalid_arguments",
                message: "the arguments must be a JSON object".into(),
            }),
            Some(offered) => {
                let server = &toolbox.servers[offered.server];
                self.tools()
                    .call(server, &offered.tool, &call.arguments, None)
                    .await
            }
        };
        in_flight.call = None;
        let ms = elapsed_ms(clock);
        let (text, error) = match &result {
            Ok(output) => {
                let text = output.text();
                let text = if text.is_empty() {
                    output
                        .structured_content
                        .as_ref()
                        .unwrap_or(&output.content)
                        .to_string()
                } else {
                    text
                };
                (text, None)
            }
            Err(e) => (format!("error: {}", e.message), Some(e.kind)),
        };
        let text = cut(&text, MAX_RESULT_CHARS);
        let shown = cut(&text, MAX_EVENT_TEXT);
        let finished = ToolFinished {
            round: call.round,
            truncated: shown.len() < text.len(),
            id: call.id,
            name: call.name,
            integration: call.integration,
            tool: call.tool,
            ok: result.is_ok(),
            ms,
            error: error.map(str::to_string),
            text: shown,
        };
        audit_call(self.db(), source, job, &finished).await;
        match result {
            Err(e) if !fed_back(&e) => Outcome::Failed(e, finished),
            _ => Outcome::Fed(text, finished),
        }
    }
}

/// Milliseconds since `clock`.
fn elapsed_ms(clock: Instant) -> i64 {
    i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A tool call under way: dropped before it ends (the task was
/// cancelled, the client went away), it writes the call's audit row as
/// failed with the error kind `cancelled`, by a task of its own that
/// [`CutOff::settle`] awaits.
struct InFlight<'a> {
    dispatcher: &'a Dispatcher,
    source: &'static str,
    job: &'a Job,
    /// The call, until it ends.
    call: Option<ToolStarted>,
    clock: Instant,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        // No runtime (the process is stopping): nothing can be written.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let finished = ToolFinished {
            round: call.round,
            id: call.id,
            name: call.name,
            integration: call.integration,
            tool: call.tool,
            ok: false,
            ms: elapsed_ms(self.clock),
            error: Some("cancelled".into()),
            text: String::new(),
            truncated: false,
        };
        let write = runtime.spawn(audit_write(
            self.dispatcher.db(),
            self.source,
            self.job,
            &finished,
        ));
        self.dispatcher.cut_off().push(&self.job.id, write);
    }
}

/// The audit writes of tool calls cut off, by the id of the task (or
/// gateway request) whose loop made them, so that what records the
/// cancellation can wait for them first.
#[derive(Debug, Default)]
pub struct CutOff(Mutex<HashMap<String, Vec<JoinHandle<()>>>>);

impl CutOff {
    fn push(&self, job_id: &str, write: JoinHandle<()>) {
        let mut writes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the writes that are done (nobody waited for them).
        writes.retain(|_, handles| {
            handles.retain(|h| !h.is_finished());
            !handles.is_empty()
        });
        writes.entry(job_id.to_string()).or_default().push(write);
    }

    /// Wait until the audit rows of `job_id`'s cut-off tool calls are
    /// written.
    pub async fn settle(&self, job_id: &str) {
        let writes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(job_id)
            .unwrap_or_default();
        for write in writes {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "the audit write of a cut-off tool call stopped");
            }
        }
    }
}

/// The `tool_call` report of `call` in `round`.
fn started(toolbox: &Toolbox, round: u32, call: &ToolCall) -> ToolStarted {
    let offered = toolbox.offered.get(&call.name);
    let arguments = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.arguments)
            .unwrap_or_else(|_| Value::String(call.arguments.clone()))
    };
    ToolStarted {
        round,
        id: call.id.clone(),
        name: call.name.clone(),
        integration: offered.map(|o| toolbox.servers[o.server].integration.name.clone()),
        tool: offered.map(|o| o.tool.clone()),
        arguments,
    }
}

/// Whether the model is told of `e` (its own mistake, or the tool's),
/// rather than the run failing.
fn fed_back(e: &ToolCallError) -> bool {
    matches!(e.kind, "tool_error" | "unknown_tool" | "invalid_arguments")
}

/// The first `max` characters of `text`.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// The run's failure when tool server `integration` failed with `e`.
fn server_failed(integration: &str, e: &ToolCallError, attempts: Vec<Attempt>) -> DispatchError {
    DispatchError {
        kind: DispatchKind::ToolServerFailed,
        message: format!(
            "tool server `{integration}` failed ({}): {}",
            e.kind, e.message
        ),
        attempts,
        retry_after: None,
    }
}

/// The `tool_call` audit row of a finished call: who, which tool, whether
/// it answered, how long it took; never its arguments or result. A
/// failure to write it is logged, not the run's. It is written by a task
/// of its own, awaited: the task runner polls the loop inside a `select!`
/// whose other branches write too, and on SQLite a write transaction
/// held by an unpolled future would keep them waiting on each other.
async fn audit_call(db: &Db, source: &str, job: &Job, call: &ToolFinished) {
    if let Err(e) = tokio::spawn(audit_write(db, source, job, call)).await {
        tracing::warn!(error = %e, "the audit write of a tool call stopped");
    }
}

/// The write of `call`'s audit row, to run as a task of its own.
fn audit_write(
    db: &Db,
    source: &str,
    job: &Job,
    call: &ToolFinished,
) -> impl Future<Output = ()> + Send + 'static {
    let payload = json!({
        "source": source,
        "task_id": job.id,
        "agent_id": job.spender.agent_id,
        "integration": call.integration,
        "tool": call.tool.as_deref().unwrap_or(&call.name),
        "round": call.round,
        "ok": call.ok,
        "ms": call.ms,
        "error": call.error,
    });
    let db = db.clone();
    let org_id = job.org_id.clone();
    let user_id = job.spender.user_id.clone();
    async move {
        let write = async {
            let mut tx = db.tenant(&org_id).await?;
            audit::record_for(
                &mut tx,
                Some(&org_id),
                user_id.as_deref(),
                &ClientInfo::default(),
                "tool_call",
                payload,
            )
            .await?;
            tx.commit().await
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, "cannot record a tool call in the audit log");
        }
    }
    .in_current_span()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced_clean_and_bounded() {
        assert_eq!(exposed_name("everything", "echo"), "everything__echo");
        assert_eq!(exposed_name("tm", "get.tasks/all"), "tm__get_tasks_all");
        let long = exposed_name("tm", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert_ne!(long, exposed_name("tm", &"x".repeat(101)));
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn colliding_names_get_a_hash() {
        let mut toolbox = Toolbox::default();
        let first = toolbox.free_name("tm", "a.b");
        toolbox.offered.insert(
            first.clone(),
            Offered {
                server: 0,
                tool: "a.b".into(),
            },
        );
        let second = toolbox.free_name("tm", "a_b");
        assert_eq!(first, "tm__a_b");
        assert_ne!(second, first);
        assert!(second.starts_with("tm__a_b_"));
    }

    #[test]
    fn only_the_models_mistakes_are_fed_back() {
        let e = |kind| ToolCallError {
            kind,
            message: String::new(),
        };
        assert!(fed_back(&e("tool_error")));
        assert!(fed_back(&e("invalid_arguments")));
        assert!(!fed_back(&e("unavailable")));
        assert!(!fed_back(&e("timeout")));
        assert_eq!(cut("héllo", 2), "hé");
    }
}
