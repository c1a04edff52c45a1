//! The mock's embedding model, `embed`: deterministic vectors from the
//! inputs' words, with no network.

use crate::Mock;
use crate::exports::vel::plugins::embeddings::{
    EmbeddingError, EmbeddingInput, EmbeddingModel, EmbeddingRequest, EmbeddingResponse, Guest,
};
use crate::vel::plugins::types::Usage;

/// The model's id.
const MODEL: &str = "embed";
/// Vector length when the request asks for none.
const DIMENSIONS: u32 = 8;
/// The longest vector it makes.
const MAX_DIMENSIONS: u32 = 256;

impl Guest for Mock {
    fn models() -> Vec<EmbeddingModel> {
        vec![EmbeddingModel {
            id: MODEL.to_string(),
            input_price_per_1k: 0.00002,
            dimensions: DIMENSIONS,
        }]
    }

    fn embed(request: EmbeddingRequest) -> Result<EmbeddingResponse, EmbeddingError> {
        if request.model != MODEL {
            return Err(EmbeddingError::InvalidRequest(format!(
                "model `{}` does not make embeddings (try `{MODEL}`)",
                request.model
            )));
        }
        let dimensions = request.dimensions.unwrap_or(DIMENSIONS);
        if dimensions == 0 || dimensions > MAX_DIMENSIONS {
            return Err(EmbeddingError::InvalidRequest(format!(
                "dimensions must be between 1 and {MAX_DIMENSIONS}"
            )));
        }
        let mut tokens = 0u32;
        let vectors = request
            .inputs
            .iter()
            .map(|input| {
                let pieces: Vec<u64> = match input {
                    EmbeddingInput::Text(text) => text.split_whitespace().map(fnv1a).collect(),
                    EmbeddingInput::Tokens(ids) => ids.iter().map(|id| u64::from(*id)).collect(),
                };
                tokens = tokens.saturating_add(u32::try_from(pieces.len()).unwrap_or(u32::MAX));
                vector(&pieces, dimensions)
            })
            .collect();
        Ok(EmbeddingResponse {
            model: MODEL.to_string(),
            vectors,
            usage: Usage {
                input_tokens: tokens,
                output_tokens: 0,
            },
        })
    }
}

/// Each piece adds one to the component its hash picks; the sum is scaled
/// to length 1 (all zeros for no pieces).
fn vector(pieces: &[u64], dimensions: u32) -> Vec<f32> {
    let mut v = vec![0f32; dimensions as usize];
    for piece in pieces {
        let slot = usize::try_from(piece % u64::from(dimensions)).unwrap_or(0);
        v[slot] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// FNV-1a of a word's lowercase bytes.
fn fnv1a(word: &str) -> u64 {
    word.to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_gives_the_same_unit_vector() {
        let a = vector(
            &"hello world"
                .split_whitespace()
                .map(fnv1a)
                .collect::<Vec<_>>(),
            8,
        );
        let b = vector(
            &"Hello  WORLD"
                .split_whitespace()
                .map(fnv1a)
                .collect::<Vec<_>>(),
            8,
        );
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert_eq!(vector(&[], 4), vec![0.0; 4]);
    }
}
