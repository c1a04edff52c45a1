//! The providers' wire formats: parsing requests, rendering answers and errors.

pub(crate) mod anthropic;
pub(crate) mod body;
pub(crate) mod embeddings;
pub(crate) mod error;
pub(crate) mod mcp;
pub(crate) mod models;
pub(crate) mod openai;
pub(crate) mod request;

use bytes::Bytes;

use request::{Completion, Provider};

/// Parses a completion request for `provider`.
pub(crate) fn parse(
    provider: Provider,
    body: &[u8],
    seq: u64,
    created: u64,
) -> Result<Completion, String> {
    match provider {
        Provider::Anthropic => anthropic::parse(body, seq, created),
        Provider::OpenAi | Provider::Groq | Provider::Perplexity => {
            openai::parse(provider, body, seq, created)
        }
    }
}

/// The plain JSON answer.
pub(crate) fn render_plain(c: &Completion) -> Bytes {
    match c.provider {
        Provider::Anthropic => anthropic::render_plain(c),
        _ => openai::render_plain(c),
    }
}

/// The streamed answer's frames and the count of frames before the first delta.
pub(crate) fn render_stream(c: &Completion) -> (Vec<Bytes>, usize) {
    match c.provider {
        Provider::Anthropic => anthropic::render_stream(c),
        _ => openai::render_stream(c),
    }
}

/// The provider's error event in the middle of a stream.
pub(crate) fn stream_error(c: &Completion) -> Bytes {
    match c.provider {
        Provider::Anthropic => anthropic::stream_error(),
        _ => openai::stream_error(),
    }
}
