//! The deterministic answer and token counts, so tests can assert on text,
//! usage and cost without guessing.

use serde_json::{Value, json};

/// Counts tokens the way the mock does: whitespace-separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The answer the mock gives (when not cut by `max_tokens` or a stop
/// sequence) to a conversation whose last user message is `last_user_message`.
pub fn expected_answer(last_user_message: &str) -> String {
    format!("{ECHO_PREFIX}{last_user_message}")
}

const ECHO_PREFIX: &str = "echo: ";

/// A JSON value that fits `schema` (the simple schemas tests use), the
/// arguments of the tool calls the mock makes: objects get each property,
/// strings the prompt (or an enum's first value), numbers the prompt's
/// word count, booleans `true`, arrays one item.
pub(crate) fn instance(schema: &Value, prompt: &str) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or(
        if schema.get("properties").is_some() {
            "object"
        } else {
            "string"
        },
    );
    match kind {
        "object" => Value::Object(
            schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(name, prop)| (name.clone(), instance(prop, prompt)))
                .collect(),
        ),
        "integer" | "number" => json!(count_tokens(prompt)),
        "boolean" => json!(true),
        "array" => json!([instance(
            schema.get("items").unwrap_or(&Value::Null),
            prompt
        )]),
        "null" => Value::Null,
        _ => json!(prompt),
    }
}

/// Why the answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The whole answer was given.
    Complete,
    /// Cut at this stop sequence.
    StopSequence(String),
    /// Cut at `max_tokens` words.
    Length,
}

/// A computed answer: its text, its streaming chunks and its usage.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) text: String,
    /// Byte offsets where each streaming chunk ends; chunk `i` is
    /// `text[ends[i-1]..ends[i]]`. One chunk per word, each carrying the
    /// whitespace before it, so the chunks concatenate to `text` exactly.
    ends: Vec<usize>,
    pub(crate) finish: Finish,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
}

impl Answer {
    /// Builds the answer to `last_user_message`, applying stop sequences, then `max_tokens`.
    pub(crate) fn compose(
        last_user_message: &str,
        input_tokens: u64,
        stops: &[String],
        max_tokens: Option<u64>,
    ) -> Self {
        let mut text = expected_answer(last_user_message);
        let mut finish = Finish::Complete;
        // Stop sequences are looked for in the echoed message only, so a stop
        // like "o" does not cut the fixed "echo: " prefix.
        let echoed = &text[ECHO_PREFIX.len()..];
        let earliest_stop = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| echoed.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = earliest_stop {
            finish = Finish::StopSequence(stop.clone());
            text.truncate(ECHO_PREFIX.len() + at);
        }
        let mut ends = chunk_ends(&text);
        if let Some(max) = max_tokens
            && (ends.len() as u64) > max
        {
            let keep = usize::try_from(max).unwrap_or(usize::MAX);
            ends.truncate(keep);
            text.truncate(ends.last().copied().unwrap_or(0));
            finish = Finish::Length;
        }
        let output_tokens = count_tokens(&text);
        Self {
            text,
            ends,
            finish,
            input_tokens,
            output_tokens,
        }
    }

    /// The rest of the answer after `prefill`, the assistant's partial
    /// turn, when the answer begins with it (as a provider with assistant
    /// prefill continues it); the whole answer otherwise.
    pub(crate) fn continuing(mut self, prefill: &str) -> Self {
        if !prefill.is_empty() && self.text.starts_with(prefill) {
            self.text.drain(..prefill.len());
            self.ends = chunk_ends(&self.text);
            self.output_tokens = count_tokens(&self.text);
        }
        self
    }

    /// The streaming chunks, in order.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let chunk = &self.text[start..end];
            start = end;
            chunk
        })
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.ends.len()
    }
}

/// End offsets of word chunks: a chunk ends where whitespace follows a word
/// and more words come; trailing whitespace stays with the last chunk.
fn chunk_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut prev_word = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && prev_word {
            ends.push(i);
        }
        prev_word = !ws;
    }
    if text[ends.last().copied().unwrap_or(0)..].trim().is_empty() {
        ends.pop();
    }
    if !text.is_empty() {
        ends.push(text.len());
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_assistant_turn_is_continued() {
        let answer = Answer::compose("alpha beta gamma", 3, &[], None).continuing("echo: alpha");
        assert_eq!(answer.text, " beta gamma");
        assert_eq!(answer.chunks().collect::<Vec<_>>(), [" beta", " gamma"]);
        assert_eq!(answer.output_tokens, 2);
        // Text the answer does not begin with is not a prefill of it.
        let whole = Answer::compose("alpha", 1, &[], None).continuing("something else");
        assert_eq!(whole.text, "echo: alpha");
    }

    #[test]
    fn chunks_concatenate_to_the_answer_one_per_word() {
        let answer = Answer::compose("hello  big\nworld", 3, &[], None);
        assert_eq!(answer.text, "echo: hello  big\nworld");
        let chunks: Vec<_> = answer.chunks().collect();
        assert_eq!(chunks, ["echo:", " hello", "  big", "\nworld"]);
        assert_eq!(answer.output_tokens, 4);
        assert_eq!(answer.finish, Finish::Complete);
    }

    #[test]
    fn max_tokens_cuts_at_a_word() {
        let answer = Answer::compose("a b c d", 4, &[], Some(2));
        assert_eq!(answer.text, "echo: a");
        assert_eq!(answer.output_tokens, 2);
        assert_eq!(answer.finish, Finish::Length);
        assert_eq!(
            Answer::compose("", 0, &[], None)
                .chunks()
                .collect::<Vec<_>>(),
            ["echo: "]
        );
        assert_eq!(answer.chunks().count(), 2);
    }

    #[test]
    fn earliest_stop_sequence_wins() {
        let stops = vec!["c".to_string(), "b".to_string(), "o".to_string()];
        let answer = Answer::compose("a b c", 3, &stops, None);
        assert_eq!(answer.text, "echo: a ");
        assert_eq!(answer.finish, Finish::StopSequence("b".into()));
        assert_eq!(answer.output_tokens, 2);
        assert_eq!(answer.chunks().collect::<String>(), answer.text);
    }
}
