//! Where a workflow and each run of its steps are in their lives, typed at
//! the store boundary (as [`TaskStatus`](crate::orchestrator::state::TaskStatus)
//! is for tasks) so a misspelt status cannot be written or matched.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A status name that is not one of its kind's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status `{name}`")]
pub struct UnknownStatus {
    /// `workflow` or `step run`.
    pub kind: &'static str,
    /// The name read.
    pub name: String,
}

/// A status enum with its stored names, parsing and display (the caller
/// has [`UnknownStatus`] in scope).
macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, [$($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every status.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in the API and the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|status| status.as_str() == s)
                    .ok_or_else(|| UnknownStatus { kind: $kind, name: s.to_owned() })
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownStatus;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

/// Other status enums (batches) are declared the same way.
pub(crate) use status_enum;

status_enum!(
    /// Where a workflow is.
    WorkflowStatus, "workflow", [
        /// Moving, or waiting for a step's task or a back-off.
        Running = "running",
        /// Waiting for an approver.
        AwaitingApproval = "awaiting_approval",
        /// Ended with an output.
        Completed = "completed",
        /// Ended with an error.
        Failed = "failed",
        /// Stopped by a user.
        Cancelled = "cancelled",
    ]
);

impl WorkflowStatus {
    /// True once nothing more happens to the workflow (until a retry from
    /// a step).
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            WorkflowStatus::Running | WorkflowStatus::AwaitingApproval
        )
    }
}

status_enum!(
    /// Where a run of a step is.
    StepRunStatus, "step run", [
        /// Its task runs, or (a parallel step) its branches do.
        Running = "running",
        /// An approval waits for a decision.
        Waiting = "waiting",
        /// Ended as the step succeeding.
        Completed = "completed",
        /// Ended as the step failing.
        Failed = "failed",
        /// Stopped with its workflow, or by a parallel step's abort.
        Cancelled = "cancelled",
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in WorkflowStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkflowStatus>(), Ok(*s));
        }
        for s in StepRunStatus::ALL {
            assert_eq!(s.to_string().parse::<StepRunStatus>(), Ok(*s));
        }
        assert!("pending".parse::<WorkflowStatus>().is_err());
        assert!(WorkflowStatus::Cancelled.is_finished());
        assert!(!WorkflowStatus::AwaitingApproval.is_finished());
    }
}
