//! The WIT types plugins exchange with the host, re-exported from the
//! generated bindings under short names. All derive serde (see
//! [`crate::bindings`] for the JSON shape).

pub use crate::bindings::condition::exports::vel::plugins::evaluation::{
    ConditionError, ConditionInfo, ConditionInput, Outcome,
};
pub use crate::bindings::provider::exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, CredentialHeader, Features, FinishReason, ModelInfo,
    ProviderError, ProviderInfo,
};
pub use crate::bindings::provider::vel::plugins::log::Level as LogLevel;
pub use crate::bindings::provider::vel::plugins::types::{
    CircuitState, Message, Priority, Role, TaskType, Usage,
};
pub use crate::bindings::router::exports::vel::plugins::routing::{
    Attempt, Candidate, Plan, Preference, RouteError, RouterInfo, TaskInfo,
};
