//! The record of one gateway request: queued with its outcome when the
//! answer ends, or as cancelled when the request is dropped mid-way.

use crate::orchestrator::shares::Slot;
use crate::orchestrator::usage::{Finished, Outcome, UsageRecorder};
use crate::store::tasks::Attempt;

/// What a finished request is recorded with.
pub(super) struct Recording {
    pub(super) usage: UsageRecorder,
    pub(super) template: Option<Finished>,
    /// The request's place in its credential's and organization's shares,
    /// held until the answer (or the stream) ends.
    pub(super) _slot: Slot,
}

impl Recording {
    /// Queue the record with its outcome and attempts.
    pub(super) async fn finish(mut self, outcome: Outcome, attempts: Vec<Attempt>) {
        if let Some(mut f) = self.template.take() {
            f.outcome = outcome;
            f.attempts = attempts;
            f.end();
            self.usage.record(f).await;
        }
    }
}

impl Drop for Recording {
    /// The request was dropped mid-way (the client went away): record it
    /// as cancelled, without waiting.
    fn drop(&mut self) {
        if let Some(mut f) = self.template.take() {
            f.end();
            let usage = self.usage.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { usage.record(f).await });
            }
        }
    }
}
