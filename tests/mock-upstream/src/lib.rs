//! A fault-injecting mock of the upstream AI provider HTTP APIs, for vel's
//! tests (in process, as a library) and benchmarks (as the
//! `vel-mock-upstream` binary).
//!
//! It speaks, plain and streamed (SSE):
//! - OpenAI chat completions: `POST /v1/chat/completions`;
//! - Groq: `POST /openai/v1/chat/completions` (same format);
//! - Perplexity: `POST /chat/completions` (same format plus `citations`);
//! - Anthropic Messages: `POST /v1/messages` (requires `anthropic-version`);
//! - OpenAI embeddings: `POST /v1/embeddings` (also `/openai/v1/embeddings`),
//!   deterministic vectors (see [`expected_embedding`]);
//! - `GET /v1/models` (also `/openai/v1/models`, `/models`);
//! - a hostile MCP server (Streamable HTTP) at `/mcp/huge`, `/mcp/endless`,
//!   `/mcp/invalid`, `/mcp/stall` and `/mcp/rpc-error` (see `wire::mcp`);
//! - `GET /__mock/stats`: the [`Stats`] as JSON (not counted, not recorded).
//!
//! Answers are deterministic: the text is [`expected_answer`] of the last user
//! message (`echo: <message>`), streamed one word per delta; input tokens are
//! the [`count_tokens`] of every message (and Anthropic's `system`), output
//! tokens those of the answer. `max_tokens` cuts the answer to that many words
//! (finish reason `length` / `max_tokens`); stop sequences cut it before the
//! earliest match. On the Anthropic wire, a conversation ending with an
//! assistant message the answer begins with is continued, as assistant
//! prefill does: only the rest of the answer is given. The OpenAI-format
//! wires have no prefill (a trailing assistant message gets the whole
//! answer again, as a real model would repeat itself), but on every wire a
//! conversation ending with an assistant message and then a user message
//! asking to continue (containing "continue") is continued the same way.
//! Any model name is accepted.
//!
//! Tools: a request offering tools is answered with a call of the first
//! (or the one `tool_choice` names), its arguments an instance of the
//! tool's schema built from the last user message (strings get the
//! message, numbers its word count, booleans `true`), plain or streamed in
//! pieces, in the wire's own shape (OpenAI `tool_calls`, Anthropic
//! `tool_use` blocks); a conversation ending with tool results is answered
//! with text (on the Anthropic wire unless `tool_choice` names a tool). The Anthropic wire checks `tools`, `tool_choice` and the
//! placement of `tool_use` / `tool_result` blocks as the API does.
//!
//! Logprobs (OpenAI wires, `logprobs: true`): each chunk of the answer is a
//! token with log probability `-(i + 1) / 10` for the `i`-th, its
//! `top_logprobs` the token itself and then `alt1`, `alt2`… at one less
//! each; streamed, each content chunk carries its token's.
//!
//! Completion requests get a [`Fault`] each (see [`MockUpstream`]'s script
//! methods); models-list requests always succeed.
//!
//! ```no_run
//! # async fn demo() {
//! use vel_mock_upstream::{Fault, MockUpstream};
//! let mock = MockUpstream::start().await;
//! mock.push(Fault::RateLimited { retry_after_secs: 1 });
//! // … point a client at mock.base_url() …
//! mock.wait_for_requests(1).await;
//! assert_eq!(mock.requests()[0].bearer_token(), Some("sk-test"));
//! # }
//! ```

mod answer;
mod fault;
mod record;
mod server;
mod stats;
mod wire;

pub use answer::{count_tokens, expected_answer};
pub use fault::Fault;
pub use record::RecordedRequest;
pub use server::{MockUpstream, WAIT_LIMIT};
pub use stats::Stats;
pub use wire::embeddings::expected_embedding;
pub use wire::models::MODELS;
pub use wire::openai::PERPLEXITY_CITATIONS;
