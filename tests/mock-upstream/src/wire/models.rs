//! `GET /v1/models` in OpenAI's and Anthropic's shapes.

use bytes::Bytes;
use serde_json::json;

use super::error::ErrorShape;

/// The models the mock lists. Completion requests accept any model name.
pub const MODELS: [&str; 6] = [
    "gpt-4o",
    "gpt-4o-mini",
    "llama-3.1-70b-versatile",
    "mixtral-8x7b-32768",
    "sonar",
    "claude-3-5-sonnet-latest",
];

/// The models list body.
pub(crate) fn render(shape: ErrorShape) -> Bytes {
    let body = match shape {
        ErrorShape::OpenAi => json!({
            "object": "list",
            "data": MODELS.iter().map(|id| json!({
                "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "vel-mock"
            })).collect::<Vec<_>>(),
        }),
        ErrorShape::Anthropic => json!({
            "data": MODELS.iter().map(|id| json!({
                "type": "model", "id": id, "display_name": id, "created_at": "2024-01-01T00:00:00Z"
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": MODELS.first(),
            "last_id": MODELS.last(),
        }),
    };
    Bytes::from(body.to_string())
}
