//! Scoring and labelling, free of bindings calls so it runs in native tests.

use crate::exports::vel::plugins::evaluation::{ConditionError, ConditionInput, Outcome};
use crate::lexicon::{INTENSIFIERS, NEGATIVE, NEGATORS, POSITIVE};
use serde::Deserialize;

/// JSON Schema of the arguments, returned by `info()`.
pub const ARGS_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.2},
    "expect": {"enum": ["positive", "negative", "neutral"]}
  }
}"#;

/// How many words may sit between a negator and the word it flips.
const NEGATION_WINDOW: usize = 3;
/// Weight of a sentiment word after an intensifier.
const INTENSIFIED: f64 = 1.5;

/// The three labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Positive,
    Negative,
    Neutral,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::Positive => "positive",
            Label::Negative => "negative",
            Label::Neutral => "neutral",
        }
    }
}

/// The condition's arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default = "default_threshold")]
    threshold: f64,
    #[serde(default)]
    expect: Option<Label>,
}

fn default_threshold() -> f64 {
    0.2
}

/// Judge the input's output text.
pub fn evaluate(input: &ConditionInput) -> Result<Outcome, ConditionError> {
    // Empty or null arguments mean "all defaults".
    let raw = input.args.trim();
    let args: Args = if raw.is_empty() || raw == "null" {
        Args {
            threshold: default_threshold(),
            expect: None,
        }
    } else {
        parse_args(raw)?
    };
    if !(0.0..=1.0).contains(&args.threshold) {
        return Err(ConditionError::InvalidArgs(format!(
            "threshold: {} is outside 0..1",
            args.threshold
        )));
    }
    let analysis = analyse(&input.output);
    let label = label(analysis.score, args.threshold);
    let matched = match args.expect {
        Some(expect) => label == expect,
        None => analysis.score >= args.threshold,
    };
    let rule = match args.expect {
        Some(expect) => format!("expected {}", expect.as_str()),
        None => format!("score >= {}", args.threshold),
    };
    Ok(Outcome {
        matched,
        branch: Some(label.as_str().to_string()),
        score: Some(analysis.score),
        explanation: format!(
            "sentiment {} ({:+.2}; {} positive, {} negative words); {rule}: {}",
            label.as_str(),
            analysis.score,
            analysis.positive,
            analysis.negative,
            if matched { "matched" } else { "not matched" }
        ),
    })
}

/// Parses the arguments; the error names the field at fault (`value: invalid type…`).
fn parse_args<T: serde::de::DeserializeOwned>(args: &str) -> Result<T, ConditionError> {
    vel_guest_condition::parse_args(args).map_err(|e| ConditionError::InvalidArgs(e.0))
}

/// What the lexicon found in a text.
#[derive(Debug, PartialEq)]
pub struct Analysis {
    /// Mean tone of the sentiment words, in [-1, 1]; 0 when there are none.
    pub score: f64,
    /// Sentiment words counted positive (after negation).
    pub positive: u32,
    /// Sentiment words counted negative (after negation).
    pub negative: u32,
}

/// Scores `text`: each sentiment word counts ±1 (±1.5 after an intensifier),
/// flipped by a negator up to three words before it; the score is the sum
/// over the number of sentiment words, clamped to [-1, 1].
pub fn analyse(text: &str) -> Analysis {
    let mut sum = 0.0;
    let (mut positive, mut negative) = (0u32, 0u32);
    let mut since_negator: Option<usize> = None;
    let mut intensify = false;
    for word in words(text) {
        let w = word.as_str();
        if NEGATORS.contains(&w) || w.ends_with("n't") {
            since_negator = Some(0);
            continue;
        }
        if INTENSIFIERS.contains(&w) {
            intensify = true;
            continue;
        }
        let tone = if POSITIVE.contains(&w) {
            1.0
        } else if NEGATIVE.contains(&w) {
            -1.0
        } else {
            since_negator = since_negator
                .map(|n| n + 1)
                .filter(|n| *n <= NEGATION_WINDOW);
            intensify = false;
            continue;
        };
        let mut tone = if intensify { tone * INTENSIFIED } else { tone };
        if since_negator.is_some() {
            tone = -tone;
            since_negator = None;
        }
        intensify = false;
        if tone > 0.0 {
            positive += 1;
        } else {
            negative += 1;
        }
        sum += tone;
    }
    let hits = positive + negative;
    let score = if hits == 0 {
        0.0
    } else {
        (sum / f64::from(hits)).clamp(-1.0, 1.0)
    };
    Analysis {
        score,
        positive,
        negative,
    }
}

/// Positive at or above `threshold`, negative at or below `-threshold`.
pub fn label(score: f64, threshold: f64) -> Label {
    if score >= threshold && score > 0.0 {
        Label::Positive
    } else if score <= -threshold && score < 0.0 {
        Label::Negative
    } else {
        Label::Neutral
    }
}

/// Lower-case words; apostrophes kept so "isn't" stays one word.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('’', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(output: &str, args: &str) -> Result<Outcome, ConditionError> {
        evaluate(&ConditionInput {
            output: output.into(),
            state: "{}".into(),
            args: args.into(),
        })
    }

    #[test]
    fn scores_and_labels() {
        let a = analyse("This is great, I love it!");
        assert_eq!(a.score, 1.0);
        assert_eq!((a.positive, a.negative), (2, 0));
        assert_eq!(analyse("Terrible. It crashed again.").score, -1.0);
        assert_eq!(analyse("The meeting is on Tuesday.").score, 0.0);
        let mixed = analyse("good but slow");
        assert_eq!(mixed.score, 0.0);
        assert_eq!(label(mixed.score, 0.2), Label::Neutral);
    }

    #[test]
    fn negation_flips() {
        assert!(analyse("not good").score < 0.0);
        assert!(analyse("This isn't bad at all").score > 0.0);
        assert!(analyse("I don't think it is good").score < 0.0);
        // The window ends: "not" is too far from "good".
        assert!(analyse("not that I mind, the result is good").score > 0.0);
    }

    #[test]
    fn intensifiers_weigh_more() {
        let a = analyse("very good, slightly bad");
        assert!(a.score > 0.0 && a.score < 1.0, "{a:?}");
    }

    #[test]
    fn outcome_uses_expect_or_threshold() {
        let out = eval("Excellent work, thanks!", "{}").unwrap();
        assert!(out.matched);
        assert_eq!(out.branch.as_deref(), Some("positive"));
        let out = eval("Excellent work, thanks!", r#"{"expect": "negative"}"#).unwrap();
        assert!(!out.matched);
        let out = eval("It failed with an error", r#"{"expect": "negative"}"#).unwrap();
        assert!(out.matched);
        assert_eq!(out.score, Some(-1.0));
        let out = eval("Nothing to report.", "").unwrap();
        assert_eq!(out.branch.as_deref(), Some("neutral"));
        assert!(!out.matched);
    }

    #[test]
    fn bad_args() {
        assert!(
            matches!(eval("x", r#"{"expect": "happy"}"#), Err(ConditionError::InvalidArgs(m)) if m.contains("happy"))
        );
        assert!(
            matches!(eval("x", r#"{"threshold": 2}"#), Err(ConditionError::InvalidArgs(m)) if m.contains("threshold"))
        );
        assert!(
            matches!(eval("x", r#"{"thresh": 0.1}"#), Err(ConditionError::InvalidArgs(m)) if m.contains("thresh"))
        );
    }
}
