//! Workflows: start one from a definition, read it with every step run and
//! its graph, read any state version, list, cancel, approve or reject.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, ClientInfo};
use crate::api::handlers::tasks::parse_time;
use crate::api::pagination;
use crate::api::sse::{self, EventLog};
use crate::auth::{Principal, Role};
use crate::money::Usd;
use crate::state::AppState;
use crate::store::workflows::{StepRun, Workflow, WorkflowFilter};
use crate::store::{self, to_rfc3339};
use crate::workflows::definition::{Definition, Step};
use crate::workflows::service;
use crate::workflows::status::{StepRunStatus, WorkflowStatus};

/// A new workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// The definition: `name`, `start`, `steps`, optional `input_schema`
    /// and `max_steps`.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The input, a JSON object (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

/// A workflow with its step runs and graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    /// Id.
    pub id: String,
    /// The definition's name.
    pub name: String,
    /// `running`, `awaiting_approval`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Who started it.
    pub user_id: Option<String>,
    /// The step running or next (none once finished).
    pub current_step: Option<String>,
    /// Every step running or next: the current step and, while a parallel
    /// step runs (on `GET /api/workflows/{id}`), each of its branches'
    /// steps running or due (empty once finished).
    pub current_steps: Vec<String>,
    /// Attempt of the current step.
    pub attempt: i64,
    /// Steps started so far.
    pub steps_run: i64,
    /// Latest state version.
    pub state_version: i64,
    /// The input.
    #[schema(value_type = Object)]
    pub input: Value,
    /// The output, once completed.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Kind, category, message and step, once failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// US dollars spent by its tasks, an exact decimal.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// Every step run, in order (only on `GET /api/workflows/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepRunView>>,
    /// The approval it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub awaiting: Option<Value>,
    /// Steps and transitions with their status (only on `GET /api/workflows/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<Graph>,
    /// The definition as stored (only on `GET /api/workflows/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// The template it was started from (`POST /api/workflows/from-template/{id}`).
    pub template_id: Option<String>,
    /// That template's version.
    pub template_version: Option<i64>,
}

/// One run of a step.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepRunView {
    /// 1-based order.
    pub seq: i64,
    /// The step's id.
    pub step: String,
    /// The step's kind.
    pub kind: String,
    /// 1-based attempt.
    pub attempt: i64,
    /// `running`, `waiting`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Its task.
    pub task_id: Option<String>,
    /// The state version it read.
    pub state_version: i64,
    /// Its output (a task's answer, a succeed step's output).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The branch label a choice took.
    pub branch: Option<String>,
    /// The step the workflow went to next.
    pub next: Option<String>,
    /// A choice's verdicts: plugin@version, matched, branch, score, explanation.
    #[schema(value_type = Option<Vec<Object>>)]
    pub evaluations: Option<Value>,
    /// An approval's decision: approved, by, comment, at.
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    /// Why it failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// US dollars spent by its task.
    #[schema(value_type = f64)]
    pub cost_usd: Usd,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Milliseconds from start to end.
    pub duration_ms: Option<i64>,
    /// For a step inside a parallel step's branch: the `seq` of the
    /// parallel step's run.
    pub group_seq: Option<i64>,
    /// For a step inside a parallel step's branch: the branch, 0-based.
    pub branch_index: Option<i64>,
}

/// The definition as a graph, with what this run did on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Graph {
    /// Steps.
    pub nodes: Vec<GraphNode>,
    /// Transitions.
    pub edges: Vec<GraphEdge>,
}

/// A step in the graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNode {
    /// Step id.
    pub id: String,
    /// Step kind.
    pub kind: String,
    /// Its latest run's status, `pending` when it never ran.
    pub status: String,
    /// Times it ran.
    pub runs: usize,
    /// Whether the workflow is at this step now.
    pub current: bool,
    /// For a step inside a parallel step's branch: the parallel step.
    pub parent: Option<String>,
    /// For a step inside a parallel step's branch: the branch, 0-based.
    pub branch_index: Option<usize>,
}

/// A transition in the graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    /// From this step.
    pub from: String,
    /// To this step.
    pub to: String,
    /// The field that names it (`next`, `rules[0].next`, `default`,
    /// `catch[0].next`, `branches[0]` from a parallel step to a branch's
    /// first step, …).
    pub label: String,
    /// Whether this run took it.
    pub taken: bool,
}

/// A page of workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Workflows, newest first.
    pub items: Vec<WorkflowView>,
    /// All matching.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

/// Query of `GET /api/workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WorkflowQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// Rows to skip.
    pub offset: Option<i64>,
    /// Only this status.
    pub status: Option<String>,
    /// Only workflows of this definition name.
    pub name: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
    /// Only workflows started from this template id.
    pub template: Option<String>,
}

/// Query of `GET /api/workflows/{id}/state`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The version (default: the latest).
    pub version: Option<i64>,
}

/// One state version.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    /// Its number (0: the input).
    pub version: i64,
    /// The state: `input`, `steps.<id>` and `last`.
    #[schema(value_type = Object)]
    pub state: Value,
}

/// Query of `GET /api/workflows/{id}/graph`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// `json` (default) or `mermaid`.
    pub format: Option<String>,
}

/// An approver's word.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (at most 2000 characters).
    #[serde(default)]
    pub comment: Option<String>,
}

fn parse_json(text: &Option<String>) -> Option<Value> {
    text.as_deref().and_then(|s| serde_json::from_str(s).ok())
}

impl From<&Workflow> for WorkflowView {
    fn from(w: &Workflow) -> Self {
        let finished = w.status.is_finished();
        WorkflowView {
            id: w.id.clone(),
            name: w.name.clone(),
            status: w.status.to_string(),
            user_id: w.user_id.clone(),
            current_step: (!finished).then(|| w.current_step.clone()).flatten(),
            current_steps: (!finished)
                .then(|| w.current_step.clone())
                .flatten()
                .into_iter()
                .collect(),
            attempt: w.attempt,
            steps_run: w.steps_run,
            state_version: w.state_version,
            input: serde_json::from_str(&w.input).unwrap_or(Value::Null),
            output: parse_json(&w.output),
            error: parse_json(&w.error),
            cost_usd: w.cost_nanos.usd(),
            steps: None,
            awaiting: None,
            graph: None,
            definition: None,
            created_at: to_rfc3339(w.created_at),
            updated_at: to_rfc3339(w.updated_at),
            finished_at: w.finished_at.map(to_rfc3339),
            template_id: w.template_id.clone(),
            template_version: w.template_version,
        }
    }
}

impl From<&StepRun> for StepRunView {
    fn from(r: &StepRun) -> Self {
        StepRunView {
            seq: r.seq,
            step: r.step_id.clone(),
            kind: r.kind.clone(),
            attempt: r.attempt,
            status: r.status.to_string(),
            task_id: r.task_id.clone(),
            state_version: r.state_version,
            output: parse_json(&r.output),
            branch: r.branch.clone(),
            next: r.next_step.clone(),
            evaluations: parse_json(&r.evaluations),
            decision: parse_json(&r.decision),
            error: parse_json(&r.error),
            cost_usd: r.cost_nanos.usd(),
            started_at: to_rfc3339(r.started_at),
            finished_at: r.finished_at.map(to_rfc3339),
            duration_ms: r.finished_at.map(|f| f - r.started_at),
            group_seq: None,
            branch_index: r.lane,
        }
    }
}

/// The step runs of a workflow as views: a branch step's run names its
/// parallel step's run by `seq`.
fn run_views(runs: &[StepRun]) -> Vec<StepRunView> {
    runs.iter()
        .map(|r| {
            let mut view = StepRunView::from(r);
            view.group_seq = r
                .parent_run
                .as_ref()
                .and_then(|p| runs.iter().find(|g| &g.id == p))
                .map(|g| g.seq);
            view
        })
        .collect()
}

/// The steps a running workflow is at: its current step and, while a
/// parallel step runs, each branch's step running or due next.
fn current_steps(wf: &Workflow, runs: &[StepRun]) -> Vec<String> {
    if wf.status.is_finished() {
        return Vec::new();
    }
    let mut out: Vec<String> = wf.current_step.iter().cloned().collect();
    let mut lanes: BTreeMap<i64, &StepRun> = BTreeMap::new();
    for r in runs {
        if r.parent_run.is_some()
            && r.parent_run == wf.current_run
            && let Some(lane) = r.lane
        {
            lanes.insert(lane, r);
        }
    }
    for r in lanes.values() {
        match (r.status, &r.next_step) {
            (StepRunStatus::Running | StepRunStatus::Waiting, _) => out.push(r.step_id.clone()),
            (StepRunStatus::Failed, Some(next)) => out.push(next.clone()),
            _ => {}
        }
    }
    out
}

/// A step of a definition, with the parallel step and branch it is in.
type Placed<'d> = (&'d String, &'d Step, Option<(&'d String, usize)>);

/// The graph of `def` with what `runs` did on it: a parallel step's
/// branch steps are nodes naming it as their parent, with an edge from it
/// to each branch's first step.
fn graph(def: &Definition, runs: &[StepRun], current: &[String]) -> Graph {
    let mut latest: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for r in runs {
        let entry = latest.entry(r.step_id.as_str()).or_insert(("", 0));
        *entry = (r.status.as_str(), entry.1 + 1);
    }
    let mut steps: Vec<Placed> = Vec::new();
    for (id, step) in &def.steps {
        steps.push((id, step, None));
        if let Step::Parallel(p) = step {
            for (i, branch) in p.branches.iter().enumerate() {
                for (bid, bstep) in &branch.steps {
                    steps.push((bid, bstep, Some((id, i))));
                }
            }
        }
    }
    let nodes = steps
        .iter()
        .map(|(id, step, parent)| {
            let (status, count) = latest.get(id.as_str()).copied().unwrap_or(("pending", 0));
            GraphNode {
                id: id.to_string(),
                kind: step.kind().to_string(),
                status: status.to_string(),
                runs: count,
                current: current.iter().any(|c| c == *id),
                parent: parent.map(|(p, _)| p.clone()),
                branch_index: parent.map(|(_, i)| i),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (id, step, _) in &steps {
        for (label, to) in step.targets() {
            let taken = runs
                .iter()
                .any(|r| &r.step_id == *id && r.next_step.as_deref() == Some(to));
            edges.push(GraphEdge {
                from: id.to_string(),
                to: to.to_string(),
                label,
                taken,
            });
        }
        if let Step::Parallel(p) = step {
            for (i, branch) in p.branches.iter().enumerate() {
                let taken = runs.iter().any(|r| {
                    r.step_id == branch.start
                        && r.lane == i64::try_from(i).ok()
                        && r.parent_run
                            .as_ref()
                            .is_some_and(|g| runs.iter().any(|x| &x.id == g && &x.step_id == *id))
                });
                edges.push(GraphEdge {
                    from: id.to_string(),
                    to: branch.start.clone(),
                    label: format!("branches[{i}]"),
                    taken,
                });
            }
        }
    }
    Graph { nodes, edges }
}

/// `graph` as a Mermaid flowchart: one node per step (its kind and
/// status), one arrow per transition, taken ones thick.
fn mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart TD\n");
    let node = |n: &GraphNode, indent: &str| {
        let mark = if n.current { " ◀" } else { "" };
        format!(
            "{indent}{}[\"{} ({}, {}){mark}\"]:::{}\n",
            node_id(&n.id),
            n.id,
            n.kind,
            n.status,
            n.status
        )
    };
    for n in graph.nodes.iter().filter(|n| n.parent.is_none()) {
        out.push_str(&node(n, "    "));
    }
    // Each branch of a parallel step as a subgraph of its steps.
    let mut branches: BTreeMap<(&str, usize), Vec<&GraphNode>> = BTreeMap::new();
    for n in &graph.nodes {
        if let (Some(p), Some(i)) = (&n.parent, n.branch_index) {
            branches.entry((p.as_str(), i)).or_default().push(n);
        }
    }
    for ((parent, i), nodes) in branches {
        out.push_str(&format!(
            "    subgraph {}_b{i}[\"{parent} branch {i}\"]\n",
            node_id(parent)
        ));
        for n in nodes {
            out.push_str(&node(n, "        "));
        }
        out.push_str("    end\n");
    }
    for e in &graph.edges {
        let arrow = if e.taken { "==>" } else { "-->" };
        out.push_str(&format!(
            "    {} {arrow}|{}| {}\n",
            node_id(&e.from),
            e.label.replace('|', "/"),
            node_id(&e.to)
        ));
    }
    for (status, style) in [
        ("completed", "fill:#d4f7d4"),
        ("running", "fill:#d4e6f7"),
        ("waiting", "fill:#f7f2d4"),
        ("failed", "fill:#f7d4d4"),
        ("cancelled", "fill:#e6e6e6"),
        ("pending", "fill:#ffffff"),
    ] {
        out.push_str(&format!("    classDef {status} {style}\n"));
    }
    out
}

/// A Mermaid-safe node id for a step id (ids are letters, digits, `_`, `-`).
fn node_id(id: &str) -> String {
    format!("s_{}", id.replace('-', "_"))
}

/// Start a workflow (task_executor or above). 201 with the workflow; 422
/// naming every bad path of the definition or input, and nothing stored.
#[utoipa::path(post, path = "/api/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = WorkflowView), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiJson(req): ApiJson<CreateWorkflow>,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    let input = req.input.unwrap_or_else(|| json!({}));
    let wf = service::start(&state, &p, &client, &req.definition, input).await?;
    Ok((StatusCode::CREATED, Json(WorkflowView::from(&wf))))
}

/// Read a workflow, its runs and its graph, in the caller's organization.
async fn load(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(Workflow, Vec<StepRun>), ApiError> {
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let wf = store::workflows::get(&mut tx, &p.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let runs = store::workflows::runs(&mut tx, &p.org_id, id).await?;
    tx.commit().await?;
    Ok((wf, runs))
}

/// One workflow with every step run, the approval it awaits, and its graph.
#[utoipa::path(get, path = "/api/workflows/{id}", tag = "workflows", params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let (wf, runs) = load(&state, &p, &id).await?;
    let def: Option<Definition> = serde_json::from_str(&wf.definition).ok();
    let mut view = WorkflowView::from(&wf);
    if wf.status == WorkflowStatus::AwaitingApproval
        && let Some(run) = runs.last().filter(|r| r.status == StepRunStatus::Waiting)
    {
        let role = match def.as_ref().and_then(|d| d.steps.get(&run.step_id)) {
            Some(Step::Approval(a)) => a.role().as_str(),
            _ => Role::AgentManager.as_str(),
        };
        view.awaiting = Some(json!({
            "step": run.step_id,
            "role": role,
            "message": parse_json(&run.output).and_then(|o| o.get("message").cloned()),
            "deadline": run.deadline.map(to_rfc3339),
            "approve_url": format!("/api/workflows/{}/approve", wf.id),
            "reject_url": format!("/api/workflows/{}/reject", wf.id),
        }));
    }
    view.current_steps = current_steps(&wf, &runs);
    if let Some(def) = &def {
        view.graph = Some(graph(def, &runs, &view.current_steps));
    }
    view.definition = serde_json::from_str(&wf.definition).ok();
    view.steps = Some(run_views(&runs));
    Ok(Json(view))
}

/// The organization's workflows, newest first, 20 per page by default.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows", params(WorkflowQuery),
    responses((status = 200, body = WorkflowList), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<WorkflowQuery>,
) -> Result<Json<WorkflowList>, ApiError> {
    let (limit, offset) = pagination::bounds(q.limit, q.offset)?;
    if let Some(status) = &q.status
        && status.parse::<WorkflowStatus>().is_err()
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`status` must be running, awaiting_approval, completed, failed or cancelled",
        ));
    }
    let filter = WorkflowFilter {
        status: q.status.clone(),
        name: q.name.clone(),
        from: parse_time("from", &q.from)?,
        to: parse_time("to", &q.to)?,
        template: q.template.clone(),
    };
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let (rows, total) = store::workflows::page(&mut tx, &p.org_id, &filter, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(WorkflowList {
        items: rows.iter().map(Into::into).collect(),
        total,
        limit,
        offset,
    }))
}

/// A state version of a workflow (the latest by default). Versions are
/// immutable: version 0 holds the input, each finished step adds one.
#[utoipa::path(get, path = "/api/workflows/{id}/state", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), StateQuery),
    responses((status = 200, body = StateView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn state(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StateQuery>,
) -> Result<Json<StateView>, ApiError> {
    if q.version.is_some_and(|v| v < 0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`version` must not be negative",
        ));
    }
    let mut tx = state.db.tenant_read(&p.org_id).await?;
    let found = store::workflows::state(&mut tx, &p.org_id, &id, q.version).await?;
    tx.commit().await?;
    let (version, text) = found.ok_or_else(|| ApiError::not_found("workflow state"))?;
    Ok(Json(StateView {
        version,
        state: serde_json::from_str(&text).unwrap_or(Value::Null),
    }))
}

/// The workflow's graph: JSON nodes and edges, or Mermaid text
/// (`?format=mermaid`).
#[utoipa::path(get, path = "/api/workflows/{id}/graph", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), GraphQuery),
    responses((status = 200, description = "The graph as JSON, or as Mermaid text with `format=mermaid`",
               content((Graph = "application/json"), (String = "text/plain"))),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn graph_of(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GraphQuery>,
) -> Result<Response, ApiError> {
    let mermaid_wanted = match q.format.as_deref() {
        None | Some("json") => false,
        Some("mermaid") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`format` must be json or mermaid",
            ));
        }
    };
    let (wf, runs) = load(&state, &p, &id).await?;
    let def: Definition = serde_json::from_str(&wf.definition).map_err(ApiError::internal)?;
    let g = graph(&def, &runs, &current_steps(&wf, &runs));
    if mermaid_wanted {
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            mermaid(&g),
        )
            .into_response());
    }
    Ok(Json(g).into_response())
}

/// Cancel a running or waiting workflow (task_executor or above): it ends
/// as cancelled and its running step's task (every running branch's task,
/// in a parallel step) is cancelled. 409 when it
/// already ended.
#[utoipa::path(post, path = "/api/workflows/{id}/cancel", tag = "workflows", params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    for task_id in service::cancel(&state, &p, &client, &id).await? {
        state.executor.cancel_local(&task_id, CANCEL_WAIT).await;
    }
    let (wf, runs) = load(&state, &p, &id).await?;
    let mut view = WorkflowView::from(&wf);
    view.steps = Some(run_views(&runs));
    Ok(Json(view))
}

/// How long a cancel waits for a local task run to stop.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest approval comment, in characters.
const MAX_COMMENT: usize = 2000;

async fn decide(
    state: &AppState,
    p: &Principal,
    client: &ClientInfo,
    id: &str,
    approved: bool,
    req: Decision,
) -> Result<Json<WorkflowView>, ApiError> {
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT)
    {
        return Err(crate::validation::Invalid::field(
            "comment",
            format!("must be at most {MAX_COMMENT} characters"),
        )
        .into());
    }
    service::decide(state, p, client, id, approved, req.comment).await?;
    let (wf, runs) = load(state, p, id).await?;
    let mut view = WorkflowView::from(&wf);
    view.steps = Some(run_views(&runs));
    Ok(Json(view))
}

/// Approve the step a workflow waits on (the step's role, default
/// agent_manager); the workflow goes on. 409 when it awaits no approval.
#[utoipa::path(post, path = "/api/workflows/{id}/approve", tag = "workflows", params(("id" = String, Path, description = "Workflow id")),
    request_body = Decision,
    responses((status = 200, body = WorkflowView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<Decision>,
) -> Result<Json<WorkflowView>, ApiError> {
    decide(&state, &p, &client, &id, true, req).await
}

/// Reject the step a workflow waits on: the step fails as `rejected`
/// (which its `catch` may route). 409 when it awaits no approval.
#[utoipa::path(post, path = "/api/workflows/{id}/reject", tag = "workflows", params(("id" = String, Path, description = "Workflow id")),
    request_body = Decision,
    responses((status = 200, body = WorkflowView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reject(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<Decision>,
) -> Result<Json<WorkflowView>, ApiError> {
    decide(&state, &p, &client, &id, false, req).await
}

/// Run an ended workflow again from one of its steps, with the state that
/// step read when it last ran; later state versions stay as history. 409
/// while it runs (cancel it first) or when the step never ran.
#[utoipa::path(post, path = "/api/workflows/{id}/retry-from-step/{step_id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"), ("step_id" = String, Path, description = "Step id")),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_from_step(
    State(state): State<AppState>,
    p: Principal,
    client: ClientInfo,
    ApiPath((id, step_id)): ApiPath<(String, String)>,
) -> Result<Json<WorkflowView>, ApiError> {
    service::retry_from_step(&state, &p, &client, &id, &step_id).await?;
    let (wf, runs) = load(&state, &p, &id).await?;
    let mut view = WorkflowView::from(&wf);
    view.steps = Some(run_views(&runs));
    Ok(Json(view))
}

/// Watch a workflow as Server-Sent Events: `status`, `step_started`,
/// `step_completed`, `step_failed`, `branch_taken`, `awaiting_approval`
/// and `decision` events, each with its number as the SSE id;
/// `Last-Event-ID` resumes after that number. The stream ends after the
/// terminal status; a finished workflow's stream sends what follows
/// `Last-Event-ID` and closes, or answers 204 when nothing does.
#[utoipa::path(get, path = "/api/workflows/{id}/stream", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event number")),
    responses((status = 200, description = "text/event-stream of the workflow's events", content_type = "text/event-stream", body = String),
              (status = 204, description = "The workflow is finished and no event follows Last-Event-ID"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    sse::watch(state, &p.org_id, EventLog::Workflow, id, &headers).await
}
