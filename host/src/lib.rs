//! vel: a multi-provider AI task orchestration server whose providers,
//! routing policies and workflow conditions are sandboxed WebAssembly
//! components.
//!
//! One module per concern; start at [`cli`] to follow a command, or at
//! [`api`] to follow a request: [`auth`] says who is calling, [`store`]
//! reads and writes the database, [`audit`] records what happened.

pub mod agents;
pub mod alerts;
pub mod analytics;
pub mod api;
pub mod audit;
pub mod auth;
pub mod batches;
pub mod benchmarks;
pub mod budgets;
pub mod cli;
pub mod config;
pub mod console;
pub mod expiring_cache;
pub mod health;
pub mod limits;
pub mod money;
pub mod notify;
pub mod orchestrator;
pub mod plugins;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod single_flight;
pub mod state;
pub mod store;
pub mod validation;
pub mod webhooks;
pub mod workflows;
