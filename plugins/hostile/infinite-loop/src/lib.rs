//! Hostile router: `route()` never returns. The host must stop it with its
//! fuel budget (or its CPU-time deadline when no fuel is metered).

wit_bindgen::generate!({ path: "../../../wit", world: "router" });

use exports::vel::plugins::routing::{Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo};

struct InfiniteLoop;

impl Guest for InfiniteLoop {
    fn info() -> RouterInfo {
        RouterInfo {
            name: "hostile-infinite-loop".to_string(),
            version: "0.1.0".to_string(),
            description: "Loops forever".to_string(),
        }
    }

    fn route(_task: TaskInfo, _candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        let mut counter: u64 = 0;
        loop {
            counter = core::hint::black_box(counter.wrapping_add(1));
        }
    }
}

export!(InfiniteLoop);
