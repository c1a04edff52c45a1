//! What the mock does with a request: the [`Fault`] behaviours and the
//! [`Script`] that picks one per request, deterministically.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// One request's behaviour. Tests script these to reproduce provider failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally (`echo: <last user message>`).
    Ok,
    /// Answer with this HTTP status and the provider's error body
    /// (OpenAI `{"error":{…}}` or Anthropic `{"type":"error",…}`).
    /// A code outside 100..=999 is answered as 500.
    Status(u16),
    /// Answer 429 with a `Retry-After: <secs>` header and a rate-limit error body.
    RateLimited {
        /// Seconds put in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Never answer; the request ends only when the client goes away
    /// (which the mock counts in [`crate::Stats::dropped`]).
    Hang,
    /// Streaming: send the preamble and `after_chunks` content deltas, then close
    /// the connection without the terminator (`[DONE]` / `message_stop`).
    /// Plain requests get the response headers and half of the body, then the cut.
    CutStream {
        /// Content deltas sent before the cut.
        after_chunks: usize,
    },
    /// Streaming: send the preamble and `after_chunks` content deltas, then the
    /// provider's mid-stream error event (OpenAI `data: {"error":{…}}`,
    /// Anthropic `event: error`) and end the body. Plain requests get a 500.
    ErrorMidStream {
        /// Content deltas sent before the error.
        after_chunks: usize,
    },
    /// Streaming: send the preamble and `after_chunks` content deltas, then go
    /// silent with the connection open until the client goes away (partial
    /// output followed by a hang). Plain requests behave as [`Fault::Hang`].
    StallStream {
        /// Content deltas sent before the stall.
        after_chunks: usize,
    },
}

/// Picks the behaviour of each completion request. Order of precedence:
/// 1. a per-model override (the request's `model` is in the map);
/// 2. the next scripted fault in the queue;
/// 3. "every Nth completion request fails with status S";
/// 4. the default behaviour.
#[derive(Debug)]
pub(crate) struct Script {
    queue: VecDeque<Fault>,
    default: Fault,
    per_model: HashMap<String, Fault>,
    fail_every: Option<(u64, u16)>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            default: Fault::Ok,
            per_model: HashMap::new(),
            fail_every: None,
        }
    }
}

impl Script {
    /// The behaviour for the completion request numbered `seq` (1-based) for `model`.
    pub(crate) fn next(&mut self, seq: u64, model: &str) -> Fault {
        if !self.per_model.is_empty()
            && let Some(fault) = self.per_model.get(model)
        {
            return fault.clone();
        }
        if let Some(fault) = self.queue.pop_front() {
            return fault;
        }
        if let Some((every, status)) = self.fail_every
            && seq.is_multiple_of(every)
        {
            return Fault::Status(status);
        }
        self.default.clone()
    }

    pub(crate) fn push(&mut self, fault: Fault) {
        self.queue.push_back(fault);
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
    }

    pub(crate) fn set_default(&mut self, fault: Fault) {
        self.default = fault;
    }

    /// `every == 0` switches the rule off.
    pub(crate) fn fail_every(&mut self, every: u64, status: u16) {
        self.fail_every = (every > 0).then_some((every, status));
    }

    pub(crate) fn set_model_fault(&mut self, model: String, fault: Option<Fault>) {
        match fault {
            Some(fault) => {
                self.per_model.insert(model, fault);
            }
            None => {
                self.per_model.remove(&model);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_model_then_queue_then_every_then_default() {
        let mut script = Script::default();
        script.set_default(Fault::Delay(Duration::from_millis(1)));
        script.fail_every(2, 503);
        script.push(Fault::Hang);
        script.set_model_fault("bad".into(), Some(Fault::Status(500)));

        assert_eq!(script.next(1, "bad"), Fault::Status(500));
        assert_eq!(script.next(2, "good"), Fault::Hang);
        assert_eq!(script.next(4, "good"), Fault::Status(503));
        assert_eq!(
            script.next(5, "good"),
            Fault::Delay(Duration::from_millis(1))
        );
        script.fail_every(0, 503);
        script.set_model_fault("bad".into(), None);
        assert_eq!(
            script.next(6, "bad"),
            Fault::Delay(Duration::from_millis(1))
        );
    }
}
