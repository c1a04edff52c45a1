//! The OpenAI embeddings wire format (`POST {base-url}/embeddings`),
//! spoken by OpenAI and the servers compatible with it.

use serde::{Deserialize, Serialize};

use crate::completion::ProviderError;
use crate::embeddings::{EmbeddingError, EmbeddingInput, EmbeddingRequest, EmbeddingResponse};
use crate::http::{self, Post};
use crate::settings::Settings;
use crate::types::Usage;

/// Largest answer read (a 2,048-input batch of 3,072 floats as JSON text).
const MAX_BODY: usize = 128 * 1024 * 1024;

/// The request as OpenAI takes it.
#[derive(Debug, Serialize)]
struct Body<'a> {
    model: &'a str,
    input: Vec<Input<'a>>,
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

/// One input: text, or token ids.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Input<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

/// The answer as OpenAI sends it.
#[derive(Debug, Deserialize)]
struct Answer {
    data: Vec<Item>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<AnswerUsage>,
}

#[derive(Debug, Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct AnswerUsage {
    #[serde(default)]
    prompt_tokens: u32,
}

/// Embeds `request`'s inputs upstream, in one call, asking for floats.
pub fn embed(
    settings: &Settings,
    request: &EmbeddingRequest,
) -> Result<EmbeddingResponse, EmbeddingError> {
    let body = Body {
        model: &request.model,
        input: request
            .inputs
            .iter()
            .map(|input| match input {
                EmbeddingInput::Text(text) => Input::Text(text),
                EmbeddingInput::Tokens(ids) => Input::Tokens(ids),
            })
            .collect(),
        encoding_format: "float",
        dimensions: request.dimensions,
        user: request.user.as_deref(),
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| EmbeddingError::Other(format!("could not encode the request: {e}")))?;
    let url = format!("{}/embeddings", settings.base_url);
    let mut response = http::post(&Post {
        url: &url,
        headers: vec![
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body: &bytes,
        timeout: settings.timeout,
    })
    .and_then(http::Response::error_for_status)
    .map_err(from_provider_error)?;
    let bytes = response
        .read_to_end(MAX_BODY)
        .map_err(from_provider_error)?;
    parse(&bytes, request)
}

/// The answer's vectors in the inputs' order.
fn parse(bytes: &[u8], request: &EmbeddingRequest) -> Result<EmbeddingResponse, EmbeddingError> {
    let answer: Answer = serde_json::from_slice(bytes).map_err(|e| {
        EmbeddingError::Other(format!("the upstream's answer is not embeddings: {e}"))
    })?;
    let expected = request.inputs.len();
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in answer.data {
        let slot = vectors.get_mut(item.index).ok_or_else(|| {
            EmbeddingError::Other(format!(
                "the upstream answered for input {} of {expected}",
                item.index
            ))
        })?;
        *slot = Some(item.embedding);
    }
    let vectors = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| EmbeddingError::Other(format!("the upstream left out input {i}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EmbeddingResponse {
        model: answer.model.unwrap_or_else(|| request.model.clone()),
        vectors,
        usage: Usage {
            input_tokens: answer.usage.map_or(0, |u| u.prompt_tokens),
            output_tokens: 0,
        },
    })
}

/// A completion error as the embeddings interface names it (the HTTP
/// client and the status mapping are shared with completions).
pub fn from_provider_error(e: ProviderError) -> EmbeddingError {
    match e {
        ProviderError::RateLimited(ms) => EmbeddingError::RateLimited(ms),
        ProviderError::Unavailable(m) => EmbeddingError::Unavailable(m),
        ProviderError::Timeout => EmbeddingError::Timeout,
        ProviderError::InvalidRequest(m) | ProviderError::ContentFiltered(m) => {
            EmbeddingError::InvalidRequest(m)
        }
        ProviderError::Auth(m) => EmbeddingError::Auth(m),
        ProviderError::Other(m) => EmbeddingError::Other(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> EmbeddingRequest {
        EmbeddingRequest {
            model: "text-embedding-3-small".into(),
            inputs: (0..n)
                .map(|i| EmbeddingInput::Text(format!("t{i}")))
                .collect(),
            dimensions: None,
            user: None,
        }
    }

    #[test]
    fn vectors_come_back_in_the_inputs_order() {
        let body = br#"{"object":"list","model":"m","data":[
            {"object":"embedding","index":1,"embedding":[2.0]},
            {"object":"embedding","index":0,"embedding":[1.0]}],
            "usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let r = parse(body, &request(2)).unwrap();
        assert_eq!(r.vectors, vec![vec![1.0], vec![2.0]]);
        assert_eq!((r.model.as_str(), r.usage.input_tokens), ("m", 4));
    }

    #[test]
    fn a_missing_or_stray_vector_is_an_error() {
        let short = br#"{"data":[{"index":0,"embedding":[1.0]}]}"#;
        assert!(matches!(
            parse(short, &request(2)),
            Err(EmbeddingError::Other(_))
        ));
        let stray = br#"{"data":[{"index":5,"embedding":[1.0]}]}"#;
        assert!(matches!(
            parse(stray, &request(1)),
            Err(EmbeddingError::Other(_))
        ));
    }
}
