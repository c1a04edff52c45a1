//! A workflow definition: its steps and how they connect, parsed and
//! checked once, when the workflow is created. Every problem is reported
//! under the path of the field it is about (`steps.review.rules[1].condition`);
//! a definition that passes runs without further shape checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{Reference, references};
use crate::auth::Role;
use crate::orchestrator::sampling::Sampling;
use crate::validation::{FieldErrors, Invalid};

/// Steps a workflow runs when its definition sets no `max_steps`.
pub const DEFAULT_MAX_STEPS: u32 = 100;
/// Largest `max_steps` a definition may set.
pub const MAX_STEPS_LIMIT: u32 = 10_000;
/// Most steps a definition may declare.
pub const MAX_DECLARED_STEPS: usize = 200;
/// Most branches a parallel step runs at once (the product's limit).
pub const MAX_PARALLEL: u32 = 5;
/// Most attempts a step's `retry` may ask for.
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest back-off a step's `retry` may start from.
pub const MAX_BASE_MS: u64 = 600_000;
/// Longest approval timeout.
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest template (prompt, message, output), in characters.
pub const MAX_TEMPLATE: usize = 100_000;

/// A checked workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// What the workflow is called.
    pub name: String,
    /// JSON Schema the input must satisfy (kept with the definition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// The first step.
    pub start: String,
    /// Steps by id.
    pub steps: BTreeMap<String, Step>,
    /// Steps a run may start before it fails with `step_limit`.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
}

fn default_max_steps() -> u32 {
    DEFAULT_MAX_STEPS
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Ask a model; the answer is the step's output.
    Task(TaskStep),
    /// Decide where to go next with condition plugins.
    Choice(ChoiceStep),
    /// Run several chains of steps side by side.
    Parallel(ParallelStep),
    /// Wait for a person's decision.
    Approval(ApprovalStep),
    /// End the workflow as completed.
    Succeed(SucceedStep),
    /// End the workflow as failed.
    Fail(FailStep),
}

impl Step {
    /// The kind's name, as written in definitions.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Task(_) => "task",
            Step::Choice(_) => "choice",
            Step::Parallel(_) => "parallel",
            Step::Approval(_) => "approval",
            Step::Succeed(_) => "succeed",
            Step::Fail(_) => "fail",
        }
    }

    /// Its retry policy, for the kinds that can fail.
    pub fn retry(&self) -> Option<&Retry> {
        match self {
            Step::Task(s) => s.retry.as_ref(),
            Step::Choice(s) => s.retry.as_ref(),
            _ => None,
        }
    }

    /// Its catch rules.
    pub fn catch(&self) -> &[Catch] {
        match self {
            Step::Task(s) => &s.catch,
            Step::Choice(s) => &s.catch,
            Step::Parallel(s) => &s.catch,
            Step::Approval(s) => &s.catch,
            Step::Succeed(_) | Step::Fail(_) => &[],
        }
    }

    /// Every template of this step, with the field holding it.
    pub fn templates(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = Vec::new();
        match self {
            Step::Task(t) => {
                if let Some(p) = &t.prompt {
                    out.push(("prompt".into(), p));
                }
                for (i, m) in t.messages.iter().flatten().enumerate() {
                    out.push((format!("messages[{i}].content"), &m.content));
                }
            }
            Step::Choice(c) => out.extend(c.input.as_deref().map(|t| ("input".into(), t))),
            Step::Approval(a) => out.extend(a.message.as_deref().map(|t| ("message".into(), t))),
            Step::Succeed(s) => out.extend(s.output.as_deref().map(|t| ("output".into(), t))),
            Step::Fail(f) => out.extend(f.message.as_deref().map(|t| ("message".into(), t))),
            Step::Parallel(_) => {}
        }
        out
    }

    /// Every step id this step may go to, with the field naming it.
    pub fn targets(&self) -> Vec<(String, &str)> {
        fn push<'s>(out: &mut Vec<(String, &'s str)>, field: String, target: &'s Option<String>) {
            if let Some(t) = target {
                out.push((field, t.as_str()));
            }
        }
        let mut out: Vec<(String, &str)> = Vec::new();
        match self {
            Step::Task(s) => push(&mut out, "next".into(), &s.next),
            Step::Choice(s) => {
                for (i, r) in s.rules.iter().enumerate() {
                    push(&mut out, format!("rules[{i}].next"), &r.next);
                    for (label, target) in &r.branches {
                        out.push((format!("rules[{i}].branches.{label}"), target.as_str()));
                    }
                }
                push(&mut out, "default".into(), &s.default);
            }
            Step::Parallel(s) => push(&mut out, "next".into(), &s.next),
            Step::Approval(s) => {
                push(&mut out, "next".into(), &s.next);
                push(&mut out, "on_timeout".into(), &s.on_timeout);
            }
            Step::Succeed(_) | Step::Fail(_) => {}
        }
        for (i, c) in self.catch().iter().enumerate() {
            out.push((format!("catch[{i}].next"), c.next.as_str()));
        }
        out
    }
}

/// A `task` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStep {
    /// The user message, templated; or use `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The conversation, each content templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageTemplate>>,
    /// The agent whose settings apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Kind of work (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// `model` or `integration/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature, 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// `balanced`, `cost` or `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer: Option<String>,
    /// `json`: the answer is parsed so later steps can read its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse: Option<Parse>,
    /// A JSON object passed to the router and provider with the task (as
    /// a task's `metadata`; the engine adds `workflow_id` and `step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The step after it; none ends the workflow as completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Run it again when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Where to go when it fails for good.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

impl TaskStep {
    /// Its sampling parameters.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            model: self.model.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            prefer: self.prefer.clone(),
        }
    }
}

/// One message of a `task` step's conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Templated text.
    pub content: String,
}

/// How a `task` step's answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parse {
    /// As a JSON document.
    Json,
}

/// A `choice` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceStep {
    /// The text conditions judge, templated (default: the previous step's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Evaluated in order; the first that decides wins.
    pub rules: Vec<Rule>,
    /// Where to go when no rule decides; without it the step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Evaluate again when a condition fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Where to go when it fails for good (`condition_failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

/// One rule of a `choice` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Condition plugin name (the organization's own, else the platform's).
    pub condition: String,
    /// The condition's arguments.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Where to go when the condition matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where to go by the outcome's branch label; checked before `next`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branches: BTreeMap<String, String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A `parallel` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelStep {
    /// Each branch: a chain of steps of its own.
    pub branches: Vec<Branch>,
    /// Branches running at once, 1–5.
    #[serde(default = "max_parallel")]
    pub max_concurrency: u32,
    /// What a failed branch does to the others.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The step after the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where to go when the group fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

fn max_parallel() -> u32 {
    MAX_PARALLEL
}

/// One branch of a `parallel` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// Its first step.
    pub start: String,
    /// Its steps, by id (ids are unique across the whole definition).
    pub steps: BTreeMap<String, Step>,
}

/// What a failed branch does to its group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The others stop and the group fails.
    #[default]
    Abort,
    /// The others go on; the group's result records the failure.
    Continue,
}

/// An `approval` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// What the approver is asked, templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Least role that may decide (default `agent_manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// ISO 8601 duration (`PT30M`, `P1D`) after which the wait ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Where to go when the wait times out; without it the step is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// Where to go once approved; none ends the workflow as completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where to go when rejected (`rejected`) or timed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catch: Vec<Catch>,
}

impl ApprovalStep {
    /// The least role that may decide.
    pub fn role(&self) -> Role {
        self.role
            .as_deref()
            .and_then(Role::parse)
            .unwrap_or(Role::AgentManager)
    }

    /// How long the wait lasts, if bounded.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(parse_iso_duration)
    }
}

/// A `succeed` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SucceedStep {
    /// The workflow's output, templated (default: the last step's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A `fail` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailStep {
    /// Error code (default `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For people, templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Run a failed step again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (2–10).
    pub max_attempts: u32,
    /// How the wait between attempts grows.
    #[serde(default)]
    pub backoff: Backoff,
    /// The first wait, in milliseconds.
    #[serde(default = "default_base_ms")]
    pub base_ms: u64,
    /// Categories retried (default `retryable` and `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorCategory>>,
}

fn default_base_ms() -> u64 {
    1000
}

impl Retry {
    /// Whether a failure of `category` is retried.
    pub fn covers(&self, category: ErrorCategory) -> bool {
        match &self.errors {
            Some(list) => list.iter().any(|c| c.covers(category)),
            None => matches!(
                category,
                ErrorCategory::Retryable | ErrorCategory::Timeout | ErrorCategory::ConditionFailed
            ),
        }
    }

    /// The wait before attempt `next` (2 for the first retry).
    pub fn delay(&self, next: u32) -> Duration {
        let ms = match self.backoff {
            Backoff::Fixed => self.base_ms,
            Backoff::Exponential => self
                .base_ms
                .saturating_mul(1u64 << next.saturating_sub(2).min(20)),
        };
        Duration::from_millis(ms.min(MAX_BASE_MS * 8))
    }
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same each time.
    Fixed,
    /// Doubling each time.
    #[default]
    Exponential,
}

/// Go to `next` when a step fails for good with one of `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catch {
    /// Categories caught; `all` catches every one.
    pub errors: Vec<ErrorCategory>,
    /// The step to go to.
    pub next: String,
}

/// Why a step failed, as `retry` and `catch` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// Every category.
    All,
    /// Worth trying again (providers failed, a worker was lost).
    Retryable,
    /// Trying again gives the same (invalid request, refused content, no provider).
    Terminal,
    /// Took too long.
    Timeout,
    /// A condition plugin failed or no rule decided.
    ConditionFailed,
    /// The answer was not the JSON the step asked for.
    ParseFailed,
    /// A spending limit stopped it.
    BudgetExceeded,
    /// Its task was cancelled.
    Cancelled,
    /// An approver said no, or the wait timed out.
    Rejected,
}

impl ErrorCategory {
    /// The name as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::All => "all",
            ErrorCategory::Retryable => "retryable",
            ErrorCategory::Terminal => "terminal",
            ErrorCategory::Timeout => "timeout",
            ErrorCategory::ConditionFailed => "condition_failed",
            ErrorCategory::ParseFailed => "parse_failed",
            ErrorCategory::BudgetExceeded => "budget_exceeded",
            ErrorCategory::Cancelled => "cancelled",
            ErrorCategory::Rejected => "rejected",
        }
    }

    /// Whether this name in a list covers a failure of `category`.
    pub fn covers(self, category: ErrorCategory) -> bool {
        self == ErrorCategory::All || self == category
    }
}

/// Parse and check a definition; `is_condition` says whether a plugin name
/// is a condition this organization may use.
pub fn parse(body: &Value, is_condition: &dyn Fn(&str) -> bool) -> Result<Definition, Invalid> {
    let mut errors = FieldErrors::new();
    let Some(obj) = body.as_object() else {
        return Err(Invalid::field("definition", "must be a JSON object"));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "name" | "input_schema" | "start" | "steps" | "max_steps"
        ) {
            errors.add(key, "unknown field");
        }
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) => {
            crate::validation::check_text(&mut errors, "name", s, 200);
            s.trim().to_string()
        }
        _ => {
            errors.add("name", "is required: a string");
            String::new()
        }
    };
    let input_schema = match obj.get("input_schema") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Object(_) | Value::Bool(_))) => match jsonschema::validator_for(v) {
            Ok(_) => Some(v.clone()),
            Err(e) => {
                errors.add("input_schema", &format!("not a usable JSON Schema: {e}"));
                None
            }
        },
        Some(_) => {
            errors.add("input_schema", "must be a JSON Schema (an object)");
            None
        }
    };
    let start = match obj.get("start") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            errors.add("start", "is required: a step id");
            String::new()
        }
    };
    let max_steps = match obj.get("max_steps") {
        None => DEFAULT_MAX_STEPS,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_STEPS_LIMIT)).contains(&n) => n as u32,
            _ => {
                errors.add("max_steps", &format!("must be 1–{MAX_STEPS_LIMIT}"));
                DEFAULT_MAX_STEPS
            }
        },
    };
    let mut steps = BTreeMap::new();
    match obj.get("steps") {
        Some(Value::Object(map)) if !map.is_empty() => {
            for (id, raw) in map {
                if let Some(step) = parse_step(&format!("steps.{id}"), raw, &mut errors) {
                    steps.insert(id.clone(), step);
                }
            }
        }
        _ => errors.add("steps", "is required: an object of step id → step"),
    }
    let definition = Definition {
        name,
        input_schema,
        start,
        steps,
        max_steps,
    };
    check(&definition, is_condition, &mut errors);
    errors.finish()?;
    Ok(definition)
}

/// One step from JSON, its shape errors recorded under `path`.
fn parse_step(path: &str, raw: &Value, errors: &mut FieldErrors) -> Option<Step> {
    match raw.get("kind").and_then(Value::as_str) {
        Some("task" | "choice" | "parallel" | "approval" | "succeed" | "fail") => {}
        Some(other) => {
            errors.add(
                &format!("{path}.kind"),
                &format!("`{other}` is not one of task, choice, parallel, approval, succeed, fail"),
            );
            return None;
        }
        None => {
            errors.add(&format!("{path}.kind"), "is required");
            return None;
        }
    }
    match serde_path_to_error::deserialize::<_, Step>(raw) {
        Ok(step) => Some(step),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}").replace(".[", "[")
            };
            errors.add(&field, &e.inner().to_string());
            None
        }
    }
}

/// Every id a definition declares, with the path that declares it; branch
/// steps are declared inside their parallel step.
fn declared(definition: &Definition) -> Vec<(String, String, &Step)> {
    let mut out = Vec::new();
    for (id, step) in &definition.steps {
        out.push((id.clone(), format!("steps.{id}"), step));
        if let Step::Parallel(p) = step {
            for (b, branch) in p.branches.iter().enumerate() {
                for (bid, bstep) in &branch.steps {
                    out.push((
                        bid.clone(),
                        format!("steps.{id}.branches[{b}].steps.{bid}"),
                        bstep,
                    ));
                }
            }
        }
    }
    out
}

/// The checks across steps: ids, targets, plugins, limits.
fn check(definition: &Definition, is_condition: &dyn Fn(&str) -> bool, errors: &mut FieldErrors) {
    let all = declared(definition);
    if all.len() > MAX_DECLARED_STEPS {
        errors.add(
            "steps",
            &format!("at most {MAX_DECLARED_STEPS} steps, branches included"),
        );
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, path, _) in &all {
        if !valid_id(id) {
            errors.add(
                path,
                "step ids are 1–64 letters, digits, `_` or `-`, starting with a letter",
            );
        }
        if let Some(first) = seen.insert(id.as_str(), path.as_str()) {
            errors.add(path, &format!("the id `{id}` is already used by {first}"));
        }
    }
    if !definition.start.is_empty() && !definition.steps.contains_key(&definition.start) {
        errors.add(
            "start",
            &format!("no step `{}` at the top level", definition.start),
        );
    }
    let ids: Vec<&str> = all.iter().map(|(id, _, _)| id.as_str()).collect();
    for (id, step) in &definition.steps {
        let path = format!("steps.{id}");
        check_step(&path, step, &definition.steps, &ids, is_condition, errors);
        if let Step::Parallel(p) = step {
            for (b, branch) in p.branches.iter().enumerate() {
                let bpath = format!("{path}.branches[{b}]");
                if !branch.steps.contains_key(&branch.start) {
                    errors.add(
                        &format!("{bpath}.start"),
                        &format!("no step `{}` in this branch", branch.start),
                    );
                }
                for (bid, bstep) in &branch.steps {
                    let spath = format!("{bpath}.steps.{bid}");
                    if matches!(bstep, Step::Parallel(_) | Step::Approval(_)) {
                        errors.add(
                            &format!("{spath}.kind"),
                            "a branch runs task, choice, succeed and fail steps",
                        );
                    }
                    check_step(&spath, bstep, &branch.steps, &ids, is_condition, errors);
                }
            }
        }
    }
}

/// Refuse `input` unless it satisfies `schema`; each problem is named by
/// its path in the input (`input.topic`).
pub fn check_input_schema(schema: &Value, input: &Value) -> Result<(), Invalid> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| Invalid::field("input_schema", format!("not a usable JSON Schema: {e}")))?;
    let mut errors = FieldErrors::new();
    for e in validator.iter_errors(input).take(20) {
        let pointer = e.instance_path().to_string();
        let field = pointer
            .split('/')
            .skip(1)
            .fold(String::from("input"), |path, key| format!("{path}.{key}"));
        errors.add(&field, &e.to_string());
    }
    errors.finish()
}

/// Refuse a template that does not parse or names a step no definition
/// declares.
fn check_template(path: &str, template: &str, ids: &[&str], errors: &mut FieldErrors) {
    match references(template) {
        Ok(refs) => {
            for r in refs {
                if let Reference::Step(id) = r
                    && !ids.contains(&id)
                {
                    errors.add(path, &format!("`{{{{steps.{id}…}}}}` names no step"));
                }
            }
        }
        Err(e) => errors.add(path, &e.to_string()),
    }
}

/// Checks of one step; its targets must be ids of `scope`.
fn check_step(
    path: &str,
    step: &Step,
    scope: &BTreeMap<String, Step>,
    ids: &[&str],
    is_condition: &dyn Fn(&str) -> bool,
    errors: &mut FieldErrors,
) {
    for (field, template) in step.templates() {
        check_template(&format!("{path}.{field}"), template, ids, errors);
    }
    for (field, target) in step.targets() {
        if !scope.contains_key(target) {
            errors.add(
                &format!("{path}.{field}"),
                &format!("no step `{target}` here"),
            );
        }
    }
    for (i, c) in step.catch().iter().enumerate() {
        errors.check(
            !c.errors.is_empty(),
            &format!("{path}.catch[{i}].errors"),
            "must name at least one category",
        );
    }
    if let Some(r) = step.retry() {
        errors.check(
            (2..=MAX_ATTEMPTS).contains(&r.max_attempts),
            &format!("{path}.retry.max_attempts"),
            &format!("must be 2–{MAX_ATTEMPTS}"),
        );
        errors.check(
            r.base_ms <= MAX_BASE_MS,
            &format!("{path}.retry.base_ms"),
            &format!("must be at most {MAX_BASE_MS}"),
        );
    }
    match step {
        Step::Task(t) => {
            match (&t.prompt, &t.messages) {
                (Some(p), None) => crate::validation::check_text(
                    errors,
                    &format!("{path}.prompt"),
                    p,
                    MAX_TEMPLATE,
                ),
                (None, Some(m)) if !m.is_empty() => {
                    for (i, msg) in m.iter().enumerate() {
                        errors.check(
                            matches!(msg.role.as_str(), "system" | "user" | "assistant"),
                            &format!("{path}.messages[{i}].role"),
                            "must be system, user or assistant",
                        );
                        crate::validation::check_text(
                            errors,
                            &format!("{path}.messages[{i}].content"),
                            &msg.content,
                            MAX_TEMPLATE,
                        );
                    }
                }
                _ => errors.add(path, "needs either `prompt` or a non-empty `messages`"),
            }
            if let Some(tt) = &t.task_type {
                errors.check(
                    crate::orchestrator::catalog::parse_task_type(tt).is_some(),
                    &format!("{path}.task_type"),
                    "must be reasoning, code_generation, research, light or general",
                );
            }
            t.sampling().check(&format!("{path}."), errors);
            if let Some(m) = &t.metadata {
                errors.check(
                    m.is_object() && m.to_string().len() <= MAX_TEMPLATE,
                    &format!("{path}.metadata"),
                    &format!("must be a JSON object of at most {MAX_TEMPLATE} bytes"),
                );
            }
        }
        Step::Choice(c) => {
            if c.rules.is_empty() {
                errors.add(&format!("{path}.rules"), "must have at least one rule");
            }
            for (i, r) in c.rules.iter().enumerate() {
                if !is_condition(&r.condition) {
                    errors.add(
                        &format!("{path}.rules[{i}].condition"),
                        &format!("`{}` is not a condition plugin live here", r.condition),
                    );
                }
                errors.check(
                    r.args.is_object(),
                    &format!("{path}.rules[{i}].args"),
                    "must be a JSON object",
                );
                errors.check(
                    r.next.is_some() || !r.branches.is_empty(),
                    &format!("{path}.rules[{i}]"),
                    "needs `next` or `branches`",
                );
            }
        }
        Step::Parallel(p) => {
            errors.check(
                (1..=MAX_PARALLEL).contains(&p.max_concurrency),
                &format!("{path}.max_concurrency"),
                &format!("must be 1–{MAX_PARALLEL}"),
            );
            errors.check(
                !p.branches.is_empty(),
                &format!("{path}.branches"),
                "must have at least one branch",
            );
        }
        Step::Approval(a) => {
            if let Some(role) = &a.role {
                errors.check(
                    Role::parse(role).is_some_and(|r| r != Role::Admin),
                    &format!("{path}.role"),
                    "must be org_admin, agent_manager, task_executor or viewer",
                );
            }
            if let Some(t) = &a.timeout {
                errors.check(
                    parse_iso_duration(t)
                        .is_some_and(|d| !d.is_zero() && d <= MAX_APPROVAL_TIMEOUT),
                    &format!("{path}.timeout"),
                    "must be an ISO 8601 duration (PT30M, P1D) of at most 30 days",
                );
            }
        }
        Step::Succeed(_) | Step::Fail(_) => {}
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// An ISO 8601 duration of days, hours, minutes and seconds (`P1DT2H`,
/// `PT30M`, `PT1.5S`); years, months and weeks are refused (their length
/// varies).
pub fn parse_iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        let mut last = 0usize;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let i = units.iter().position(|(u, _)| *u == c)?;
            if i < last || number.is_empty() {
                return None;
            }
            last = i + 1;
            secs += number.parse::<f64>().ok()? * units[i].1;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        take(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    (any && secs.is_finite() && secs < 1e10).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conditions(name: &str) -> bool {
        matches!(name, "text-match" | "threshold" | "sentiment")
    }

    fn fields(body: Value) -> Vec<String> {
        match parse(&body, &conditions) {
            Ok(_) => Vec::new(),
            Err(Invalid(map)) => map.into_keys().collect(),
        }
    }

    #[test]
    fn a_good_definition_parses() {
        let d = parse(
            &json!({
                "name": "review",
                "start": "draft",
                "steps": {
                    "draft": {"kind": "task", "prompt": "Write about {{input.topic}}", "next": "check"},
                    "check": {"kind": "choice", "rules": [
                        {"condition": "text-match", "args": {"pattern": "ok"}, "next": "done"}
                    ], "default": "draft"},
                    "done": {"kind": "succeed"}
                }
            }),
            &conditions,
        )
        .unwrap();
        assert_eq!(d.max_steps, DEFAULT_MAX_STEPS);
        assert_eq!(d.steps["check"].kind(), "choice");
    }

    #[test]
    fn every_bad_path_is_named() {
        let bad = fields(json!({
            "name": "x",
            "start": "nowhere",
            "steps": {
                "a": {"kind": "task", "prompt": "hi", "next": "b", "temperature": 9},
                "b": {"kind": "choice", "rules": [
                    {"condition": "text-match", "next": "a"},
                    {"condition": "no-such", "next": "ghost"}
                ]},
                "c": {"kind": "parallel", "max_concurrency": 6, "branches": [
                    {"start": "c1", "steps": {"c1": {"kind": "succeed"}}}
                ]},
                "d": {"kind": "loop"},
                "e": {"kind": "task", "prompt": "x", "bogus": 1}
            }
        }));
        for want in [
            "start",
            "steps.a.temperature",
            "steps.b.rules[1].condition",
            "steps.b.rules[1].next",
            "steps.c.max_concurrency",
            "steps.d.kind",
            "steps.e",
        ] {
            assert!(bad.iter().any(|f| f == want), "{want} not in {bad:?}");
        }
    }

    #[test]
    fn ids_are_unique_across_branches() {
        let bad = fields(json!({
            "name": "x", "start": "a",
            "steps": {
                "a": {"kind": "parallel", "branches": [
                    {"start": "a", "steps": {"a": {"kind": "succeed"}}}
                ]}
            }
        }));
        assert!(
            bad.contains(&"steps.a.branches[0].steps.a".to_string()),
            "{bad:?}"
        );
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT30M"), Some(Duration::from_secs(1800)));
        assert_eq!(
            parse_iso_duration("P1DT1H"),
            Some(Duration::from_secs(90_000))
        );
        assert_eq!(
            parse_iso_duration("PT0.5S"),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "P", "PT", "30M", "P1M", "PT1H1H", "PTM", "P1W"] {
            assert_eq!(parse_iso_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_backoff_grows() {
        let r = Retry {
            max_attempts: 4,
            backoff: Backoff::Exponential,
            base_ms: 100,
            errors: None,
        };
        assert_eq!(r.delay(2), Duration::from_millis(100));
        assert_eq!(r.delay(3), Duration::from_millis(200));
        assert!(r.covers(ErrorCategory::Retryable));
        assert!(!r.covers(ErrorCategory::Terminal));
    }
}
