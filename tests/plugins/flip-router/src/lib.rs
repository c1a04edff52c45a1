//! `flip-router`: a test-only router that the registry's end-to-end tests
//! upload to a running server (it is not a built-in).
//!
//! Version 1.0.0 (the default build) orders the usable candidates by
//! provider name ascending; version 2.0.0 (the `v2` cargo feature) orders
//! them descending. A test can therefore tell from a task's first attempt,
//! and from the plan's reason, which uploaded version routed it.

// Native builds (for unit tests) leave the component export out, so the
// exported type looks unused there; wasm builds check dead code for real.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod order;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "router",
});

use exports::vel::plugins::routing::{Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo};
use vel::plugins::log::{Level, log};

/// The component's export.
struct FlipRouter;

impl Guest for FlipRouter {
    fn info() -> RouterInfo {
        RouterInfo {
            name: order::NAME.to_string(),
            version: order::VERSION.to_string(),
            description: format!(
                "Test fixture: usable candidates by provider name, {}",
                order::DIRECTION
            ),
        }
    }

    fn route(task: TaskInfo, candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        let result = order::plan(&candidates);
        if let Err(RouteError::NoCandidate(why) | RouteError::InvalidInput(why)) = &result {
            log(Level::Debug, &format!("task {}: no plan: {why}", task.id));
        }
        result
    }
}

// Only wasm builds export the component ABI (native builds run the unit tests;
// the export names are not valid native symbol names).
#[cfg(target_arch = "wasm32")]
export!(FlipRouter);
