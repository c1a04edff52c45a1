//! `POST /v1/embeddings`: OpenAI's embeddings endpoint, served by the
//! organization's providers that have the embedding model (a provider
//! plugin built against the `embedding-provider` world), through the
//! dispatcher ([`crate::orchestrator::dispatch::EmbedJob`]): fallback among
//! the integrations serving the same model, breakers, budgets and token
//! limits as for completions. Vectors come as floats or, with
//! `encoding_format: "base64"` (the OpenAI SDKs' default), as the base64 of
//! little-endian `f32`s. Each request is recorded as a gateway task, like a
//! chat completion (its inputs as the messages, `metadata.endpoint`
//! `embeddings`), so its cost reaches analytics and budgets.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;
use utoipa::ToSchema;
use vel_runtime::types::EmbeddingInput;

use super::error::{dispatch_error, model_not_found};
use super::recording::Recording;
use super::{GatewayError, OpenAiErrorBody, answered_by, failed};
use crate::api::error::{ApiError, FieldErrors};
use crate::api::extract::{ApiJson, ClientInfo};
use crate::auth::{Credential, Principal};
use crate::orchestrator::dispatch::{EmbedJob, embedding_targets, totals};
use crate::orchestrator::request::ChatMessage;
use crate::orchestrator::sampling::Sampling;
use crate::orchestrator::state::TaskSource;
use crate::orchestrator::submit::{self, MAX_MESSAGE, Work};
use crate::orchestrator::usage::{Finished, Outcome};
use crate::state::AppState;
use crate::store::{new_id, now_ms};

/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;
/// Most tokens in one token-id input.
const MAX_INPUT_TOKENS: usize = 65_536;
/// Longest `user`.
const MAX_USER: usize = 200;

/// The body of `POST /v1/embeddings`, as OpenAI takes it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// An embedding model as `GET /v1/models` lists it: `integration/model`
    /// or a bare model.
    pub model: String,
    /// A text, a list of texts, a list of token ids, or a list of lists of
    /// token ids.
    pub input: EmbeddingsInput,
    /// `float` (the default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Shorter vectors, where the model supports it.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// An id of the end user, passed to the provider.
    #[serde(default)]
    pub user: Option<String>,
}

/// What `input` may be.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingsInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One input as token ids.
    Tokens(Vec<u32>),
    /// Several inputs as token ids.
    TokenLists(Vec<Vec<u32>>),
}

impl EmbeddingsInput {
    /// The inputs a provider's `embed` takes, one per text or token list.
    pub(crate) fn into_inputs(self) -> Vec<EmbeddingInput> {
        match self {
            EmbeddingsInput::Text(t) => vec![EmbeddingInput::Text(t)],
            EmbeddingsInput::Texts(ts) => ts.into_iter().map(EmbeddingInput::Text).collect(),
            EmbeddingsInput::Tokens(ids) => vec![EmbeddingInput::Tokens(ids)],
            EmbeddingsInput::TokenLists(lists) => {
                lists.into_iter().map(EmbeddingInput::Tokens).collect()
            }
        }
    }
}

/// The answer: one vector per input, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: &'static str,
    /// The vectors.
    pub data: Vec<EmbeddingItem>,
    /// The model that answered.
    pub model: String,
    /// Tokens read.
    pub usage: EmbeddingUsage,
}

/// One input's vector.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingItem {
    /// `embedding`.
    pub object: &'static str,
    /// The input's position.
    pub index: usize,
    /// Floats, or the base64 of little-endian `f32`s.
    pub embedding: EmbeddingVector,
}

/// A vector as the request's `encoding_format` asked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `float`.
    Floats(Vec<f32>),
    /// `base64`.
    Base64(String),
}

/// Tokens read by an embeddings request.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// The same (embeddings write no tokens).
    pub total_tokens: u64,
}

/// A request that passed validation.
struct Checked {
    inputs: Vec<EmbeddingInput>,
    base64: bool,
}

/// Checks the body, naming every bad field as OpenAI does.
fn check(body: &mut EmbeddingsRequest) -> Result<Checked, ApiError> {
    let mut errors = FieldErrors::new();
    body.model = body.model.trim().to_string();
    errors.check(!body.model.is_empty(), "model", "must not be empty");
    let input = std::mem::replace(&mut body.input, EmbeddingsInput::Texts(Vec::new()));
    let inputs = input.into_inputs();
    errors.check(!inputs.is_empty(), "input", "must not be empty");
    errors.check(
        inputs.len() <= MAX_INPUTS,
        "input",
        "must hold at most 2048 inputs",
    );
    for (i, input) in inputs.iter().enumerate().take(MAX_INPUTS) {
        match input {
            EmbeddingInput::Text(t) => {
                errors.check(!t.is_empty(), &format!("input[{i}]"), "must not be empty");
                errors.check(
                    t.chars().count() <= MAX_MESSAGE,
                    &format!("input[{i}]"),
                    "must be at most 200000 characters",
                );
                errors.check(
                    !t.contains('\0'),
                    &format!("input[{i}]"),
                    "must not contain NUL characters",
                );
            }
            EmbeddingInput::Tokens(ids) => {
                errors.check(!ids.is_empty(), &format!("input[{i}]"), "must not be empty");
                errors.check(
                    ids.len() <= MAX_INPUT_TOKENS,
                    &format!("input[{i}]"),
                    "must hold at most 65536 tokens",
                );
            }
        }
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            errors.add("encoding_format", "must be float or base64");
            false
        }
    };
    if let Some(d) = body.dimensions {
        errors.check(d >= 1, "dimensions", "must be at least 1");
    }
    if let Some(user) = &body.user {
        errors.check(
            user.chars().count() <= MAX_USER,
            "user",
            "must be at most 200 characters",
        );
    }
    errors.finish()?;
    Ok(Checked { inputs, base64 })
}

/// The base64 of `v`'s little-endian `f32`s, as OpenAI encodes them.
fn base64_of(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inputs as the recorded task's messages.
fn recorded_messages(inputs: &[EmbeddingInput]) -> Vec<ChatMessage> {
    inputs
        .iter()
        .map(|input| ChatMessage {
            role: "user".into(),
            content: match input {
                EmbeddingInput::Text(t) => t.clone(),
                EmbeddingInput::Tokens(ids) => format!("[{} token ids]", ids.len()),
            },
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        })
        .collect()
}

/// Create embeddings (task_executor or above): one vector per input.
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway", request_body = EmbeddingsRequest,
    responses(
        (status = 200, body = EmbeddingList,
         headers(("x-vel-provider" = String, description = "Integration that answered"),
                 ("x-vel-cost-usd" = String, description = "Cost of all attempts in US dollars"),
                 ("x-vel-task-id" = String, description = "The task recording this request"))),
        (status = 400, description = "Malformed body or an invalid field (`param` names it), or the provider refused the request (`invalid_request`)", body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody),
        (status = 402, description = "`budget_exceeded`", body = OpenAiErrorBody),
        (status = 403, body = OpenAiErrorBody),
        (status = 404, description = "`model_not_found`: no active integration serves the embedding model", body = OpenAiErrorBody),
        (status = 429, description = "`rate_limited` (with `Retry-After`): the credential's share is in use, a rate limit is reached, or every provider of the model is throttling", body = OpenAiErrorBody),
        (status = 502, description = "`all_attempts_failed`: every provider of the model failed", body = OpenAiErrorBody),
        (status = 503, description = "`no_candidate`: every provider of the model has its circuit open", body = OpenAiErrorBody)),
    security(("bearer" = [])))]
pub async fn embeddings(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(mut body): ApiJson<EmbeddingsRequest>,
) -> Result<Response, GatewayError> {
    let created_at = now_ms();
    let started = Instant::now();
    let credential = match &p.credential {
        Credential::ApiKey { id } => id.as_str(),
        Credential::Token { .. } => p.user_id.as_str(),
    };
    let slot = state
        .shares
        .take(credential, &p.org_id)
        .map_err(|full| ApiError::too_many_requests(full.to_string(), 1))?;
    state.limits.admit_task(&p).await.map_err(ApiError::from)?;
    let Checked { inputs, base64 } = check(&mut body)?;
    let catalog = state
        .dispatcher
        .catalog(&p.org_id)
        .await
        .map_err(|e| dispatch_error(&e, None))?;
    if embedding_targets(&catalog, &body.model).is_empty() {
        return Err(model_not_found(&body.model));
    }
    let id = new_id();
    let job = EmbedJob {
        id: id.clone(),
        org_id: p.org_id.clone(),
        spender: crate::budgets::Spender {
            user_id: Some(p.user_id.clone()),
            agent_id: None,
            api_key_id: p.api_key_id().map(str::to_string),
        },
        model: body.model.clone(),
        inputs,
        dimensions: body.dimensions,
        user: body.user.clone(),
    };
    let request = submit::request(
        Work {
            task_type: "general".into(),
            messages: recorded_messages(&job.inputs),
            sampling: Sampling {
                model: Some(body.model.clone()),
                ..Sampling::default()
            },
            agent_id: None,
            metadata: json!({ "endpoint": "embeddings", "dimensions": body.dimensions }),
        },
        None,
    );
    let recording = Recording {
        _slot: slot,
        usage: state.usage.clone(),
        template: Some(Finished {
            id: id.clone(),
            org_id: p.org_id.clone(),
            user_id: p.user_id.clone(),
            source: TaskSource::Gateway,
            request,
            stream: false,
            outcome: Outcome::Cancelled {
                partial_output: None,
            },
            attempts: Vec::new(),
            created_at,
            finished_at: created_at,
            started,
            latency: Duration::ZERO,
            ip_address: client.ip,
            user_agent: client.user_agent,
            audit_action: "gateway_request",
        }),
    };
    let span = tracing::info_span!("gateway_embeddings", task_id = %id, model = %body.model, inputs = job.inputs.len());
    let result = state.dispatcher.embed(&job).instrument(span).await;
    match result {
        Ok(done) => {
            let (input_tokens, _, cost) = totals(&done.attempts);
            let tokens = u64::try_from(input_tokens).unwrap_or(0);
            let count = done.response.vectors.len();
            let answer = EmbeddingList {
                object: "list",
                data: done
                    .response
                    .vectors
                    .iter()
                    .enumerate()
                    .map(|(index, v)| EmbeddingItem {
                        object: "embedding",
                        index,
                        embedding: if base64 {
                            EmbeddingVector::Base64(base64_of(v))
                        } else {
                            EmbeddingVector::Floats(v.clone())
                        },
                    })
                    .collect(),
                model: done.response.model.clone(),
                usage: EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            };
            let mut resp = Json(answer).into_response();
            answered_by(resp.headers_mut(), &done.provider, cost, &id);
            let outcome = Outcome::Completed {
                text: format!("{count} embeddings"),
                finish_reason: "stop",
                model: done.response.model,
                provider: done.provider,
                input_tokens: done.response.usage.input_tokens,
                output_tokens: 0,
            };
            recording.finish(outcome, done.attempts).await;
            Ok(resp)
        }
        Err(e) => Err(failed(recording, e, &id).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> EmbeddingsRequest {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn every_input_shape_is_read() {
        for (input, n) in [
            (json!("a"), 1),
            (json!(["a", "b"]), 2),
            (json!([1, 2, 3]), 1),
            (json!([[1, 2], [3]]), 2),
        ] {
            let mut b = body(json!({ "model": "m", "input": input }));
            assert_eq!(check(&mut b).expect("valid").inputs.len(), n);
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        for input in [json!([]), json!(["a", ""]), json!([[]])] {
            let mut b = body(json!({ "model": "m", "input": input }));
            assert!(check(&mut b).is_err(), "{b:?}");
        }
        let mut b = body(json!({ "model": "m", "input": "a", "encoding_format": "hex" }));
        assert!(check(&mut b).is_err());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = base64_of(&[1.0, -0.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
        );
    }
}
