//! `default-router`: vel's default routing policy, as a router component.
//!
//! The policy (from the original specification): complex reasoning goes to
//! GPT-4o, code generation to Groq's Llama 3.1 70B, research to Perplexity
//! Sonar, light work to GPT-4o-mini, and anything else is balanced between
//! price, latency and reliability. Every other usable candidate follows as
//! the fallback chain. See [`policy`] for the rules and [`scoring`] for the
//! figures they sort by.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod policy;
mod scoring;

wit_bindgen::generate!({
    path: "../../wit",
    world: "router",
});

use exports::vel::plugins::routing::{Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo};
use vel::plugins::log::{Level, log};

/// The component's export.
struct DefaultRouter;

impl Guest for DefaultRouter {
    fn info() -> RouterInfo {
        RouterInfo {
            name: "default-router".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Task-type policy (reasoning→gpt-4o, code→llama-3.1-70b, research→sonar, \
                          light→gpt-4o-mini) with a fallback chain that skips open circuits"
                .to_string(),
        }
    }

    fn route(task: TaskInfo, candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        let result = policy::plan(&task, &candidates);
        if let Err(RouteError::NoCandidate(why) | RouteError::InvalidInput(why)) = &result {
            log(Level::Debug, &format!("task {}: no plan: {why}", task.id));
        }
        result
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(DefaultRouter);
