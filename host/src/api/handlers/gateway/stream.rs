//! A streamed answer: the dispatch runs in its own task, and its progress
//! becomes `chat.completion.chunk` events, ending with the finish reason,
//! the usage when asked for, and `data: [DONE]` (or a final error event).
//! An agent's tool loop streams the same way, its server tools' calls
//! kept from the client: while they run the stream carries SSE comments
//! (`: …`, which clients skip) and no chunk.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::error::{GatewayError, dispatch_error, stream_error_event};
use super::recording::Recording;
use super::wire::{ChoiceLogprobs, CompletionUsage};
use super::{
    PROVIDER, ROUTER, TASK_ID, answer, completed, finish_reason, logprobs_out, secs, usage_of,
};
use crate::api::error::ApiError;
use crate::orchestrator::dispatch::{Answer, DispatchError, Job, Progress, RouterTrace};
use crate::orchestrator::request::AgentTools;
use crate::orchestrator::usage::Outcome;
use crate::state::AppState;
use crate::store::tasks::Attempt;
use vel_runtime::types::ToolCallDelta;

/// The fixed part of every chunk of one stream.
struct Chunks {
    id: String,
    created: i64,
    model: String,
}

impl Chunks {
    fn chunk(&self, delta: serde_json::Value, finish_reason: Option<&str>) -> Bytes {
        self.chunk_with_logprobs(delta, finish_reason, None)
    }

    /// A chunk carrying log probabilities: the finishing chunk carries
    /// those of the whole answer, since providers hand the host text
    /// deltas only (`stream.emit`) and the log probabilities with the
    /// final response.
    fn chunk_with_logprobs(
        &self,
        delta: serde_json::Value,
        finish_reason: Option<&str>,
        logprobs: Option<&ChoiceLogprobs>,
    ) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason }],
        }))
    }

    fn usage(&self, usage: CompletionUsage) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }))
    }
}

/// How often a stream whose server tools are running says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Sent when a server tool starts (an SSE comment: clients skip it).
const TOOL_RUNNING: Bytes = Bytes::from_static(b": running a tool\n\n");
/// Sent every [`KEEP_ALIVE`] while server tools run.
const STILL_RUNNING: Bytes = Bytes::from_static(b": keep-alive\n\n");

fn sse(value: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising a JSON value cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Start the dispatch in its own task and answer once its first content
/// exists: the first text streamed by an attempt, or the whole answer of
/// one that did not stream. Until then the response is held back, so an
/// attempt that fails before sending text falls back as a plain request
/// does, unseen, and a dispatch that finds no answer at all is an ordinary
/// error response; after it, the stream carries the rest.
pub(super) async fn streamed(
    state: AppState,
    job: Job,
    agent_tools: Option<AgentTools>,
    requested: String,
    include_usage: bool,
    recording: Recording,
) -> Result<Response, GatewayError> {
    let (out, body) = mpsc::channel::<Bytes>(64);
    let (started, first) = oneshot::channel();
    let task_id = job.id.clone();
    tokio::spawn(
        drive(
            state,
            job,
            agent_tools,
            requested,
            include_usage,
            recording,
            started,
            out,
        )
        .instrument(tracing::Span::current()),
    );
    let (provider, router) = match first.await {
        Ok(Ok(begun)) => begun,
        Ok(Err(e)) => return Err(dispatch_error(&e, Some(task_id))),
        Err(_) => {
            return Err(ApiError::internal("the gateway stream stopped before starting").into());
        }
    };
    let mut body = body;
    let stream =
        futures::stream::poll_fn(move |cx| body.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&task_id) {
        h.insert(TASK_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&provider) {
        h.insert(PROVIDER, v);
    }
    if let Some(v) = router.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(ROUTER, v);
    }
    Ok(resp)
}

/// How a stream's dispatch ended.
#[expect(
    clippy::large_enum_variant,
    reason = "one per stream, built once and matched at once"
)]
enum Ended {
    Done(Result<Answer, DispatchError>),
    ClientGone,
}

/// What a stream's start tells the handler: the integration that sent the
/// first content and the `x-vel-router` value.
type Begun = (String, Option<String>);

/// A stream in progress.
struct Streaming {
    out: mpsc::Sender<Bytes>,
    chunks: Chunks,
    /// Tells the handler the stream has begun, with the integration that
    /// sent its first content and the `x-vel-router` value (or that it
    /// failed before it did).
    started: Option<oneshot::Sender<Result<Begun, DispatchError>>>,
    /// The `x-vel-router` value, once the run is planned.
    router: Option<String>,
    /// The integration of the attempt in flight.
    provider: String,
    /// Text sent to the client.
    partial: String,
    /// Text of the current attempt.
    current: String,
    /// Attempts reported so far.
    attempts: Vec<Attempt>,
    /// Whether pieces of tool calls were sent.
    tool_calls_sent: bool,
    /// Whether this is an agent's tool loop: its tool calls are not
    /// streamed piece by piece (those of the server tools are vel's, and
    /// the client's come whole with the answer).
    looping: bool,
    /// Whether server tools are running (since a tool call started, until
    /// the next attempt).
    tools_running: bool,
}

impl Streaming {
    /// Send a chunk; false when the client has gone.
    async fn send(&self, bytes: Bytes) -> bool {
        self.out.send(bytes).await.is_ok()
    }

    /// Let the handler answer 200 and send the role chunk; called with
    /// the first content, which follows at once.
    async fn begin(&mut self) -> bool {
        match self.started.take() {
            Some(tx) => {
                let _ = tx.send(Ok((self.provider.clone(), self.router.clone())));
                self.send(
                    self.chunks
                        .chunk(json!({ "role": "assistant", "content": "" }), None),
                )
                .await
            }
            None => true,
        }
    }

    /// Turn one progress report into chunks; false when the client has gone.
    async fn on_progress(&mut self, p: Progress) -> bool {
        match p {
            Progress::Planned {
                router,
                router_version,
                fallback,
                ..
            } => {
                let trace = RouterTrace {
                    name: router,
                    version: router_version,
                    fallback,
                };
                self.router = Some(trace.header_value());
                true
            }
            Progress::AttemptStarted {
                seq,
                model,
                provider,
            } => {
                if !self.current.is_empty() {
                    tracing::info!(
                        attempt = seq,
                        "falling back after partial output was streamed"
                    );
                }
                self.current.clear();
                self.tools_running = false;
                self.chunks.model = model;
                self.provider = provider;
                true
            }
            Progress::Delta { text, .. } => {
                if text.is_empty() {
                    return true;
                }
                if !self.begin().await {
                    return false;
                }
                self.partial.push_str(&text);
                self.current.push_str(&text);
                let chunk = self.chunks.chunk(json!({ "content": text }), None);
                self.send(chunk).await
            }
            Progress::ToolCall { .. } if self.looping => true,
            Progress::ToolCall { delta, .. } => {
                if !self.begin().await {
                    return false;
                }
                self.tool_calls_sent = true;
                let chunk = self
                    .chunks
                    .chunk(json!({ "tool_calls": [tool_call_delta(&delta)] }), None);
                self.send(chunk).await
            }
            Progress::AttemptFinished(a) => {
                self.attempts.push(a);
                true
            }
            // A server tool: the stream begins (if it has not) and says
            // only that it is alive.
            Progress::ToolStarted(_) => {
                if !self.begin().await {
                    return false;
                }
                self.tools_running = true;
                self.send(TOOL_RUNNING).await
            }
            Progress::ToolFinished(_) => true,
        }
    }
}

/// One piece of a tool call in OpenAI's chunk format: the first piece of a
/// call carries its id, type and name; every piece its arguments so far.
fn tool_call_delta(delta: &ToolCallDelta) -> serde_json::Value {
    let mut function = serde_json::Map::new();
    if let Some(name) = &delta.name {
        function.insert("name".into(), json!(name));
    }
    function.insert("arguments".into(), json!(delta.arguments));
    let mut call = serde_json::Map::new();
    call.insert("index".into(), json!(delta.index));
    if let Some(id) = &delta.id {
        call.insert("id".into(), json!(id));
        call.insert("type".into(), json!("function"));
    }
    call.insert("function".into(), serde_json::Value::Object(function));
    serde_json::Value::Object(call)
}

/// Run the dispatch (or `agent_tools`' tool loop), turning its progress
/// into chunks on `out`.
#[expect(
    clippy::too_many_arguments,
    reason = "the stream's parts, handed over once to its task"
)]
async fn drive(
    state: AppState,
    job: Job,
    agent_tools: Option<AgentTools>,
    requested: String,
    include_usage: bool,
    recording: Recording,
    started: oneshot::Sender<Result<Begun, DispatchError>>,
    out: mpsc::Sender<Bytes>,
) {
    let mut s = Streaming {
        out,
        chunks: Chunks {
            id: format!("chatcmpl-{}", job.id),
            created: secs(recording.template.as_ref().map_or(0, |f| f.created_at)),
            model: requested,
        },
        started: Some(started),
        router: None,
        provider: String::new(),
        partial: String::new(),
        current: String::new(),
        attempts: Vec::new(),
        tool_calls_sent: false,
        looping: agent_tools.is_some(),
        tools_running: false,
    };
    let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
    let ended = {
        let run = answer(
            &state.dispatcher,
            &job,
            agent_tools.as_ref(),
            true,
            Some(&ptx),
        );
        tokio::pin!(run);
        let closed = s.out.clone();
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(p) = prx.recv() => {
                    if !s.on_progress(p).await {
                        break Ended::ClientGone;
                    }
                }
                _ = keep_alive.tick(), if s.tools_running => {
                    if !s.send(STILL_RUNNING).await {
                        break Ended::ClientGone;
                    }
                }
                result = &mut run => break Ended::Done(result),
                () = closed.closed() => break Ended::ClientGone,
            }
        }
    };
    // Everything the run reported is queued by now (the run awaits its
    // delta forwarder before returning).
    if let Ended::Done(_) = ended {
        while let Ok(p) = prx.try_recv() {
            if !s.on_progress(p).await {
                break;
            }
        }
    }
    let partial_output = (!s.partial.is_empty()).then(|| s.partial.clone());
    match ended {
        Ended::ClientGone => {
            // The tool calls cut off are audited before the record.
            state.dispatcher.cut_off().settle(&job.id).await;
            recording
                .finish(Outcome::Cancelled { partial_output }, s.attempts)
                .await;
        }
        Ended::Done(Ok(answer)) => {
            s.provider.clone_from(&answer.provider);
            s.begin().await;
            s.chunks.model = answer.response.model.clone();
            // A provider that answered without streaming: send its text
            // whole (after what earlier attempts sent, which it continued).
            let text = &answer.response.text;
            let rest = text.strip_prefix(s.partial.as_str()).unwrap_or(text);
            if s.current.is_empty() && !rest.is_empty() {
                let chunk = s.chunks.chunk(json!({ "content": rest }), None);
                s.send(chunk).await;
            }
            // Tool calls of a provider that did not stream them: each whole.
            if !s.tool_calls_sent && !answer.response.tool_calls.is_empty() {
                let calls: Vec<serde_json::Value> = answer
                    .response
                    .tool_calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        tool_call_delta(&ToolCallDelta {
                            index: u32::try_from(i).unwrap_or(u32::MAX),
                            id: Some(c.id.clone()),
                            name: Some(c.name.clone()),
                            arguments: c.arguments.clone(),
                        })
                    })
                    .collect();
                let chunk = s.chunks.chunk(json!({ "tool_calls": calls }), None);
                s.send(chunk).await;
            }
            let logprobs = answer.response.logprobs.as_deref().map(logprobs_out);
            let last = s.chunks.chunk_with_logprobs(
                json!({}),
                Some(finish_reason(&answer)),
                logprobs.as_ref(),
            );
            s.send(last).await;
            let usage = usage_of(&answer);
            let outcome = completed(&answer);
            recording.finish(outcome, answer.attempts).await;
            if include_usage {
                s.send(s.chunks.usage(usage)).await;
            }
            s.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        }
        Ended::Done(Err(e)) => {
            let outcome = Outcome::Failed {
                kind: e.kind.to_string(),
                message: e.message.clone(),
                partial_output,
            };
            let attempts = e.attempts.clone();
            match s.started.take() {
                // Nothing was sent: the handler answers with an error status.
                Some(tx) => {
                    let _ = tx.send(Err(e));
                }
                None => {
                    s.send(sse(&stream_error_event(&e))).await;
                    s.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
                }
            }
            recording.finish(outcome, attempts).await;
        }
    }
}
