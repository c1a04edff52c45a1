//! Task orchestration: the task state machine, retry and back-off, circuit
//! breakers and cost accounting. The queue and the executor that tie them to
//! storage and plugins build on these pieces.

pub mod breaker;
pub mod cost;
pub mod retry;
pub mod state;
