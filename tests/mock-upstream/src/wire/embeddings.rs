//! OpenAI's embeddings wire (`POST /v1/embeddings`, Groq's
//! `/openai/v1/embeddings`): deterministic vectors a test can predict.
//!
//! Input `i` with text `t` gets `[count_tokens(t), chars(t), i, 0.5]`,
//! cut or padded with `0.125` to the request's `dimensions` (default 4);
//! token-id inputs count their ids as tokens and chars. `prompt_tokens`
//! is the sum of the inputs' tokens.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::answer::count_tokens;

/// A parsed embeddings request.
#[derive(Debug, Clone)]
pub(crate) struct Embeddings {
    pub(crate) model: String,
    inputs: Vec<Input>,
    dimensions: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct Body {
    model: String,
    input: Inputs,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(Input),
    Many(Vec<Input>),
}

/// Checks and reads the request as OpenAI would (400 messages otherwise).
pub(crate) fn parse(body: &[u8]) -> Result<Embeddings, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))?;
    let inputs = match body.input {
        Inputs::One(input) => vec![input],
        Inputs::Many(inputs) => inputs,
    };
    if inputs.is_empty() {
        return Err("'$.input' is invalid: it must not be empty".into());
    }
    if inputs
        .iter()
        .any(|i| matches!(i, Input::Text(t) if t.is_empty()))
    {
        return Err("'$.input' is invalid: an input is an empty string".into());
    }
    if let Some(format) = body.encoding_format.as_deref()
        && format != "float"
        && format != "base64"
    {
        return Err(format!("unknown encoding_format {format}"));
    }
    Ok(Embeddings {
        model: body.model,
        inputs,
        dimensions: body.dimensions.unwrap_or(4),
    })
}

/// The expected vector of `text` at `index`, `dimensions` long.
pub fn expected_embedding(text: &str, index: usize, dimensions: usize) -> Vec<f32> {
    vector(count_tokens(text), text.chars().count(), index, dimensions)
}

fn vector(tokens: u64, chars: usize, index: usize, dimensions: usize) -> Vec<f32> {
    #[allow(clippy::cast_precision_loss)] // small test figures
    let mut v = vec![tokens as f32, chars as f32, index as f32, 0.5];
    v.resize(dimensions, 0.125);
    v
}

/// The answer, always as floats.
pub(crate) fn render(e: &Embeddings) -> Bytes {
    let mut total = 0u64;
    let data: Vec<_> = e
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let (tokens, chars) = match input {
                Input::Text(t) => (count_tokens(t), t.chars().count()),
                Input::Tokens(ids) => (ids.len() as u64, ids.len()),
            };
            total += tokens;
            json!({"object": "embedding", "index": i,
                   "embedding": vector(tokens, chars, i, e.dimensions)})
        })
        .collect();
    Bytes::from(
        json!({
            "object": "list",
            "data": data,
            "model": e.model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        })
        .to_string(),
    )
}
