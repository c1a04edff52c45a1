//! Black-box tests of the HTTP API: the real `vel` binary over real HTTP,
//! every test on SQLite and on PostgreSQL (`NAME::sqlite`, `NAME::postgres`).
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod agent_test;
mod agents;
mod analytics;
mod api_keys;
mod audit;
mod auth;
mod batches;
mod benchmarks;
mod budgets;
mod client;
mod connections;
mod connectivity;
mod console;
mod containment;
mod credentials;
mod edges;
mod embeddings;
mod fairness;
mod gateway;
mod gateway_errors;
mod health;
mod integrations;
mod mcp;
mod money;
mod nul;
mod operations;
mod organizations;
mod permissions;
mod plugin_cli;
mod plugin_langs;
mod plugin_limits;
mod plugins;
mod rate_limits;
mod rotation;
mod search;
mod ssrf;
mod storage;
mod tasks;
mod tool_calls;
mod tool_loop;
mod users;
mod webhooks;
mod workflow_templates;
mod workflows;
