//! Provider benchmarks: prompts run on several targets (`integration/model`)
//! a number of times each, compared on latency, cost and people's ratings.
//!
//! A benchmark's runs are the items of a batch ([`crate::batches`]), each an
//! ordinary task pinned to its target and kept out of the response cache:
//! they are queued, routed, budgeted, rate-limited, costed and audited as
//! any task, and a benchmark needs no worker of its own. The runs are laid
//! out so that the targets take turns ([`Layout`]), and the batch's
//! concurrency bounds how many run at once. What a benchmark found is
//! computed from its tasks when it is read ([`report`]), with the
//! statistics of [`stats`].

pub mod report;
pub mod service;
pub mod stats;

/// Most repetitions of each prompt on each target.
pub const MAX_REPETITIONS: u32 = 20;
/// Most runs (prompts × targets × repetitions) in one benchmark.
pub const MAX_RUNS: usize = 500;
/// Most targets in one benchmark.
pub const MAX_TARGETS: usize = 10;
/// Most prompts in one benchmark.
pub const MAX_PROMPTS: usize = 50;

/// A built-in suite of prompts: its name, its task type and its prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// Name, as a request gives it.
    pub name: &'static str,
    /// The task type its runs have.
    pub task_type: &'static str,
    /// Its prompts.
    pub prompts: &'static [&'static str],
}

/// The built-in suites.
pub const SUITES: [Suite; 3] = [
    Suite {
        name: "code_generation",
        task_type: "code_generation",
        prompts: &[
            "Write a Python function that returns the n-th Fibonacci number iteratively.",
            "Write a Rust function that reverses the words of a sentence, keeping punctuation.",
            "Write a SQL query returning each customer's three most recent orders.",
            "Write a JavaScript debounce function with a cancel method.",
        ],
    },
    Suite {
        name: "reasoning",
        task_type: "reasoning",
        prompts: &[
            "A bat and a ball cost $1.10 together; the bat costs $1.00 more than the ball. What does the ball cost? Explain.",
            "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Explain.",
            "Three boxes are labelled apples, oranges and mixed, all wrongly. Drawing one fruit from one box, how do you relabel them?",
            "A train leaves at 9:00 at 80 km/h; another follows at 10:00 at 120 km/h. When does the second catch up?",
        ],
    },
    Suite {
        name: "research",
        task_type: "research",
        prompts: &[
            "Summarise the main trade-offs between row-oriented and column-oriented databases.",
            "What are the known causes of the replication crisis in psychology?",
            "Compare the energy density of lithium-ion, sodium-ion and solid-state batteries.",
        ],
    },
];

/// The built-in suite called `name`.
pub fn suite(name: &str) -> Option<&'static Suite> {
    SUITES.iter().find(|s| s.name == name)
}

/// Where each run of a benchmark sits: run `i` is target `i % targets`,
/// prompt `(i / targets) % prompts`, repetition `i / (targets × prompts)`,
/// so that every target answers each prompt before the next repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Targets.
    pub targets: usize,
    /// Prompts.
    pub prompts: usize,
    /// Repetitions.
    pub repetitions: usize,
}

/// One run's place: indexes of its target and prompt, and its repetition
/// (all from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Index of its target.
    pub target: usize,
    /// Index of its prompt.
    pub prompt: usize,
    /// Its repetition.
    pub repetition: usize,
}

impl Layout {
    /// Runs in all.
    pub fn runs(&self) -> usize {
        self.targets * self.prompts * self.repetitions
    }

    /// The place of run `i` (`None` past the last, or for an empty layout).
    pub fn place(&self, i: usize) -> Option<Place> {
        if i >= self.runs() {
            return None;
        }
        Some(Place {
            target: i % self.targets,
            prompt: (i / self.targets) % self.prompts,
            repetition: i / (self.targets * self.prompts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_turns() {
        let l = Layout {
            targets: 2,
            prompts: 3,
            repetitions: 2,
        };
        assert_eq!(l.runs(), 12);
        let places: Vec<(usize, usize, usize)> = (0..12)
            .map(|i| l.place(i).unwrap())
            .map(|p| (p.target, p.prompt, p.repetition))
            .collect();
        assert_eq!(&places[..4], [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]);
        assert_eq!(places[6], (0, 0, 1));
        assert_eq!(places[11], (1, 2, 1));
        assert_eq!(l.place(12), None);
    }

    #[test]
    fn suites_are_found_by_name() {
        for s in SUITES {
            assert_eq!(suite(s.name), Some(&s));
            assert!(!s.prompts.is_empty() && s.prompts.len() <= MAX_PROMPTS);
            assert!(crate::orchestrator::catalog::parse_task_type(s.task_type).is_some());
        }
        assert_eq!(suite("poetry"), None);
    }
}
