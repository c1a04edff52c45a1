//! The task statuses: `pending → in_progress → completed | failed |
//! cancelled` (a pending task may also be cancelled). The store's
//! statements guard each change in the database itself — a claim takes only
//! a pending task, finishing only a task still in progress and held by the
//! caller, cancelling only one not yet terminal — so concurrent workers and
//! instances cannot make an invalid change.
//!
//! Also the other names a task row carries: where a task came from
//! ([`TaskSource`]) and how each of its provider calls ended
//! ([`AttemptOutcome`]). The store converts all three from and to their
//! stored text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting in the queue.
    Pending,
    /// Claimed by a worker and running.
    InProgress,
    /// Finished with a result.
    Completed,
    /// Finished without a result.
    Failed,
    /// Stopped by a user.
    Cancelled,
}

/// A status name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status `{0}`")]
pub struct UnknownStatus(pub String);

impl TaskStatus {
    /// Every status, in life order.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::InProgress,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// True once nothing more can happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl TryFrom<String> for TaskStatus {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Where a task was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSource {
    /// The task API (`POST /api/tasks`, or a workflow's step).
    Api,
    /// The OpenAI-compatible gateway.
    Gateway,
}

/// A source name that is neither `api` nor `gateway`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task source `{0}` (expected api or gateway)")]
pub struct UnknownSource(pub String);

impl TaskSource {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Api => "api",
            TaskSource::Gateway => "gateway",
        }
    }
}

impl fmt::Display for TaskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskSource {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "api" => Ok(TaskSource::Api),
            "gateway" => Ok(TaskSource::Gateway),
            other => Err(UnknownSource(other.to_owned())),
        }
    }
}

/// How one provider call of a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The provider answered.
    Ok,
    /// The call failed.
    Error,
    /// The task was cancelled during the call.
    Cancelled,
    /// The provider was not called (its circuit breaker was open).
    Skipped,
}

/// An outcome name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attempt outcome `{0}` (expected ok, error, cancelled or skipped)")]
pub struct UnknownOutcome(pub String);

impl AttemptOutcome {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Skipped => "skipped",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptOutcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(AttemptOutcome::Ok),
            "error" => Ok(AttemptOutcome::Error),
            "cancelled" => Ok(AttemptOutcome::Cancelled),
            "skipped" => Ok(AttemptOutcome::Skipped),
            other => Err(UnknownOutcome(other.to_owned())),
        }
    }
}

impl TryFrom<String> for AttemptOutcome {
    type Error = UnknownOutcome;

    fn try_from(s: String) -> Result<Self, UnknownOutcome> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus::{self, *};
    use super::{AttemptOutcome, TaskSource};

    #[test]
    fn only_the_three_ends_are_terminal() {
        let terminal: Vec<_> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, vec![Completed, Failed, Cancelled]);
    }

    #[test]
    fn names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn sources_and_outcomes_round_trip() {
        for source in [TaskSource::Api, TaskSource::Gateway] {
            assert_eq!(source.as_str().parse::<TaskSource>(), Ok(source));
        }
        for outcome in [
            AttemptOutcome::Ok,
            AttemptOutcome::Error,
            AttemptOutcome::Cancelled,
            AttemptOutcome::Skipped,
        ] {
            assert_eq!(outcome.as_str().parse::<AttemptOutcome>(), Ok(outcome));
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
        assert!("cli".parse::<TaskSource>().is_err());
        assert!("done".parse::<AttemptOutcome>().is_err());
    }
}
