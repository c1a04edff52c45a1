//! Hostile router: its `info()`, which the host reads when it loads the
//! plugin, sleeps for an hour. Loading must give up on it quickly and
//! never hold up anything else (the server's start-up above all).

wit_bindgen::generate!({ path: "../../../wit", world: "router" });

use exports::vel::plugins::routing::{Candidate, Guest, Plan, RouteError, RouterInfo, TaskInfo};

struct Hostile;

impl Guest for Hostile {
    fn info() -> RouterInfo {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        RouterInfo {
            name: "hostile-slow-info".to_string(),
            version: "0.1.0".to_string(),
            description: "Sleeps in info()".to_string(),
        }
    }

    fn route(task: TaskInfo, candidates: Vec<Candidate>) -> Result<Plan, RouteError> {
        let _ = (task, candidates);
        Err(RouteError::NoCandidate("never reached".to_string()))
    }
}

export!(Hostile);
