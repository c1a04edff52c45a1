//! Hostile router: `route()` panics. The host must report a panic with the
//! guest's message, not crash or hang.

wit_bindgen::generate!({ path: "../../../wit", world: "router" });

use exports::vel::plugins::routing::{Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo};

struct Panics;

impl Guest for Panics {
    fn info() -> RouterInfo {
        RouterInfo {
            name: "hostile-panic".to_string(),
            version: "0.1.0".to_string(),
            description: "Panics when asked to route".to_string(),
        }
    }

    fn route(task: TaskInfo, _candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        panic!("hostile router gave up on task {}", task.id);
    }
}

export!(Panics);
