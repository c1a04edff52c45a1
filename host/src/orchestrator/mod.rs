//! Task orchestration: the task state machine, retry and back-off, circuit
//! breakers and cost accounting; the dispatcher that plans a request with a
//! router plugin and runs it through provider plugins; the durable queue
//! whose workers claim items (tasks, workflows) and hand them to a runner;
//! the task runner; tool servers (MCP integrations) and their calls; and
//! the executor that starts the queues.

pub mod breaker;
pub mod cancel;
pub mod catalog;
pub mod cost;
pub mod dispatch;
pub mod executor;
mod fallback;
pub mod observed;
pub mod queue;
mod relay;
pub mod request;
pub mod retry;
pub mod sampling;
pub mod shares;
pub mod signals;
pub mod state;
pub mod submit;
pub mod task_runner;
pub mod tool_loop;
pub mod tools;
pub mod usage;
