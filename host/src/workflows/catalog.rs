//! The workflow template catalog: definitions saved for reuse, with typed
//! variables, immutable versions and a visibility, so that a proven
//! process is started again by name instead of being pasted whole (the
//! product's "templates" and their marketplace).
//!
//! # Variables
//! A template declares `variables`: name → `{"type": string | number |
//! integer | boolean | object | array, "default"?, "description"?}`. Its
//! definition refers to them as `{{vars.name}}` in any string value (not in
//! object keys). `vars.` is a namespace of its own: the run-time references
//! `{{input.…}}`, `{{steps.…}}` and `{{state.…}}` are left as they are and
//! resolved by the engine when the workflow runs. When a workflow is
//! started from a template, a string that is exactly one reference
//! (`"{{vars.threshold}}"`, spaces inside the braces allowed) becomes the
//! variable's value with its JSON type (a number stays a number); a
//! reference inside longer text is replaced by the value's text (strings as
//! they are, other values as compact JSON). Substitution is one pass: a
//! value's own `{{…}}` text is not substituted again.
//!
//! # Checks
//! At creation every referenced variable must be declared (`steps.x.prompt`
//! names the string), every declaration well formed (`variables.x.type`),
//! and the definition, with each variable's default or a placeholder of its
//! type, must pass the ordinary definition check. At instantiation each
//! missing, undeclared or ill-typed variable is named (`variables.topic`),
//! and the substituted definition goes through the ordinary check again.
//!
//! # Visibility
//! `private` (the default: its creator only), `organization` (its
//! organization) and `public` (every organization may list, read, start
//! and copy it, never change it). Publishing `public` takes an
//! organization admin or a platform admin: a public template is shown to
//! every tenant, so it is the organization's word, not one member's. Each
//! version sets the template's visibility. Anything a caller may not see
//! is 404 to it. The built-in templates are public templates of the
//! platform. Roles: task_executor creates templates and starts workflows
//! from them (as for workflows), viewer reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::service::{self, WorkflowError};
use crate::audit::{self, ClientInfo};
use crate::auth::{Forbidden, Permission, Principal};
use crate::state::AppState;
use crate::store::workflow_templates::{
    self as templates, NewVersion, Template, TemplateVersion, Viewer, Visibility,
};
use crate::store::workflows::Workflow;
use crate::store::{Db, is_unique_violation};
use crate::validation::{FieldErrors, Invalid, check_text};

/// Longest template name, in characters.
pub const MAX_NAME: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Most variables a template may declare.
pub const MAX_VARIABLES: usize = 50;
/// Largest definition, in bytes of JSON.
pub const MAX_DEFINITION_BYTES: usize = 512 * 1024;

/// The type a variable's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A whole JSON number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl VariableType {
    fn parse(s: &str) -> Option<VariableType> {
        Some(match s {
            "string" => VariableType::String,
            "number" => VariableType::Number,
            "integer" => VariableType::Integer,
            "boolean" => VariableType::Boolean,
            "object" => VariableType::Object,
            "array" => VariableType::Array,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            VariableType::String => "a string",
            VariableType::Number => "a number",
            VariableType::Integer => "an integer",
            VariableType::Boolean => "a boolean",
            VariableType::Object => "an object",
            VariableType::Array => "an array",
        }
    }

    /// Whether `value` has this type.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            VariableType::String => value.is_string(),
            VariableType::Number => value.is_number(),
            VariableType::Integer => value.is_i64() || value.is_u64(),
            VariableType::Boolean => value.is_boolean(),
            VariableType::Object => value.is_object(),
            VariableType::Array => value.is_array(),
        }
    }

    /// A value of this type that stands in for a variable without a
    /// default when a template is checked at creation.
    fn placeholder(self) -> Value {
        match self {
            VariableType::String => json!("placeholder"),
            VariableType::Number => json!(1.0),
            VariableType::Integer => json!(1),
            VariableType::Boolean => json!(false),
            VariableType::Object => json!({}),
            VariableType::Array => json!([]),
        }
    }
}

/// A declared variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: VariableType,
    /// Used when instantiation gives none; without it the variable is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Declared variables by name.
pub type Variables = BTreeMap<String, Variable>;

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse `variables` (absent: none), each problem under `variables.<name>…`.
pub fn parse_variables(raw: Option<&Value>, errors: &mut FieldErrors) -> Variables {
    let mut out = Variables::new();
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return out;
    };
    let Some(map) = raw.as_object() else {
        errors.add(
            "variables",
            "must be an object of name → {type, default?, description?}",
        );
        return out;
    };
    if map.len() > MAX_VARIABLES {
        errors.add("variables", &format!("at most {MAX_VARIABLES} variables"));
    }
    for (name, decl) in map {
        let path = format!("variables.{name}");
        if !valid_variable_name(name) {
            errors.add(
                &path,
                "variable names are 1–64 letters, digits or `_`, starting with a letter",
            );
        }
        let Some(decl) = decl.as_object() else {
            errors.add(&path, "must be an object {type, default?, description?}");
            continue;
        };
        for key in decl.keys() {
            if !matches!(key.as_str(), "type" | "default" | "description") {
                errors.add(&format!("{path}.{key}"), "unknown field");
            }
        }
        let kind = decl
            .get("type")
            .and_then(Value::as_str)
            .and_then(VariableType::parse);
        let Some(kind) = kind else {
            errors.add(
                &format!("{path}.type"),
                "must be string, number, integer, boolean, object or array",
            );
            continue;
        };
        let default = decl.get("default").cloned();
        if let Some(d) = &default
            && !kind.admits(d)
        {
            errors.add(
                &format!("{path}.default"),
                &format!("must be {}", kind.name()),
            );
        }
        let description = match decl.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION => Some(s.clone()),
            Some(_) => {
                errors.add(
                    &format!("{path}.description"),
                    &format!("must be a string of at most {MAX_DESCRIPTION} characters"),
                );
                None
            }
        };
        out.insert(
            name.clone(),
            Variable {
                kind,
                default,
                description,
            },
        );
    }
    out
}

/// The `{{…}}` references of `text`: (whole match, trimmed inside).
fn braces(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = text[at..].find("{{") {
        let start = at + open;
        let Some(close) = text[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + close + 2;
        out.push((start..end, text[start + 2..end - 2].trim()));
        at = end;
    }
    out
}

/// The variable a reference's inside names, if it is a `vars.` reference.
fn variable_of(inside: &str) -> Option<&str> {
    inside
        .strip_prefix("vars.")
        .map(str::trim)
        .or_else(|| (inside == "vars").then_some(""))
}

/// Every `{{vars.name}}` in the string values of `value`, with the path of
/// the string (`steps.draft.prompt`, `steps.gate.rules[0].args.value`).
pub fn references(value: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) => {
                for (_, inside) in braces(s) {
                    if let Some(name) = variable_of(inside) {
                        out.push((path.to_string(), name.to_string()));
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// `definition` with every `{{vars.name}}` replaced from `values` (see the
/// module documentation); references to names not in `values` stay.
pub fn substitute(definition: &Value, values: &BTreeMap<String, Value>) -> Value {
    match definition {
        Value::String(s) => {
            let refs = braces(s);
            if let [(range, inside)] = refs.as_slice()
                && range.start == 0
                && range.end == s.len()
                && let Some(v) = variable_of(inside).and_then(|n| values.get(n))
            {
                return v.clone();
            }
            let mut out = String::with_capacity(s.len());
            let mut at = 0;
            for (range, inside) in refs {
                if let Some(v) = variable_of(inside).and_then(|n| values.get(n)) {
                    out.push_str(&s[at..range.start]);
                    match v {
                        Value::String(text) => out.push_str(text),
                        other => out.push_str(&other.to_string()),
                    }
                    at = range.end;
                }
            }
            out.push_str(&s[at..]);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, values)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The values to substitute: those `given` (a JSON object, absent: none)
/// and the defaults of the rest. Each missing, undeclared or ill-typed
/// variable is named (`variables.topic`).
pub fn resolve(
    declared: &Variables,
    given: Option<&Value>,
) -> Result<BTreeMap<String, Value>, Invalid> {
    let mut errors = FieldErrors::new();
    let empty = serde_json::Map::new();
    let given = match given {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Invalid::field(
                "variables",
                "must be a JSON object of name → value",
            ));
        }
    };
    for name in given.keys() {
        if !declared.contains_key(name) {
            errors.add(
                &format!("variables.{name}"),
                "is not a variable of this template",
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, var) in declared {
        let path = format!("variables.{name}");
        match given.get(name).or(var.default.as_ref()) {
            None => errors.add(&path, "is required (it has no default)"),
            Some(v) if !var.kind.admits(v) => {
                errors.add(&path, &format!("must be {}", var.kind.name()));
            }
            Some(v) => {
                out.insert(name.clone(), v.clone());
            }
        }
    }
    errors.finish()?;
    Ok(out)
}

/// Check a template's definition against its variables for `org_id`:
/// every reference declared, and the definition with defaults (or
/// placeholders) substituted a valid definition there.
pub fn check_template(
    state: &AppState,
    org_id: &str,
    definition: &Value,
    variables: &Variables,
    mut errors: FieldErrors,
) -> Result<(), Invalid> {
    if !definition.is_object() {
        errors.add("definition", "must be a JSON object");
    } else if definition.to_string().len() > MAX_DEFINITION_BYTES {
        errors.add(
            "definition",
            &format!("must be at most {MAX_DEFINITION_BYTES} bytes of JSON"),
        );
    }
    for (path, name) in references(definition) {
        if !variables.contains_key(&name) {
            errors.add(
                &path,
                &format!("`{{{{vars.{name}}}}}` names no variable declared in `variables`"),
            );
        }
    }
    errors.finish()?;
    let values = variables
        .iter()
        .map(|(name, v)| {
            let value = v.default.clone().unwrap_or_else(|| v.kind.placeholder());
            (name.clone(), value)
        })
        .collect();
    service::check_definition(state, org_id, &substitute(definition, &values)).map(|_| ())
}

/// Why a template operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Bad fields, each named.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller's role is too weak.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No such template (or version, or workflow) the caller may see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Someone else's private template holds the name, or a version was
    /// added meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// Another organization's public template, or a built-in: read-only.
    #[error("{0}")]
    ReadOnly(&'static str),
    /// Starting the workflow failed.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// Where a new template's content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A definition given as is.
    Definition(Value),
    /// The definition of a workflow of the caller's organization.
    Workflow(String),
    /// A copy of a template the caller may see (latest version unless given).
    Template(String, Option<i64>),
}

/// A template (or its next version) to create.
#[derive(Debug, Clone)]
pub struct TemplateRequest {
    /// Its name (default: the source's).
    pub name: Option<String>,
    /// What it is for (default: the copied template's, else empty).
    pub description: Option<String>,
    /// Its content.
    pub source: Source,
    /// Declared variables (default: the copied template's, else none).
    pub variables: Option<Value>,
    /// Who may see it (default `private`).
    pub visibility: Option<String>,
}

/// Create a template in the caller's organization, or add the next
/// version of the one with that name. Checked in full first; nothing is
/// stored unless it passes.
pub async fn create(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    req: TemplateRequest,
) -> Result<(Template, TemplateVersion), TemplateError> {
    who.require(Permission::ExecuteTask)?;
    let mut errors = FieldErrors::new();
    let visibility = match req.visibility.as_deref() {
        None => Visibility::Private,
        Some(v) => Visibility::parse(v).unwrap_or_else(|| {
            errors.add("visibility", "must be private, organization or public");
            Visibility::Private
        }),
    };
    if visibility == Visibility::Public {
        who.require(Permission::ManageOrganization)?;
    }
    // The source's definition, name, description and variables.
    let viewer = Viewer {
        org_id: &who.org_id,
        user_id: &who.user_id,
    };
    let (definition, source_name, description, source_vars, source) = match req.source {
        Source::Definition(d) => {
            let name = d.get("name").and_then(Value::as_str).map(str::to_string);
            (d, name, None, None, None)
        }
        Source::Workflow(id) => {
            let mut tx = state.db.tenant_read(&who.org_id).await?;
            let wf = crate::store::workflows::get(&mut tx, &who.org_id, &id).await?;
            tx.commit().await?;
            let wf = wf.ok_or(TemplateError::NotFound("workflow"))?;
            let d: Value = serde_json::from_str(&wf.definition)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            (
                d,
                Some(wf.name),
                None,
                None,
                Some(json!({ "workflow_id": id })),
            )
        }
        Source::Template(id, version) => {
            let mut tx = state.db.tenant_read(&who.org_id).await?;
            let found = read_version(&mut tx, viewer, &id, version).await;
            tx.commit().await?;
            let (t, v) = found?;
            let d: Value = serde_json::from_str(&v.definition)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let vars: Value =
                serde_json::from_str(&v.variables).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let source = json!({ "template_id": t.id, "version": v.version });
            (
                d,
                Some(t.name),
                Some(v.description),
                Some(vars),
                Some(source),
            )
        }
    };
    let name = req.name.or(source_name).unwrap_or_default();
    check_text(&mut errors, "name", &name, MAX_NAME);
    let description = req.description.or(description).unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        errors.add(
            "description",
            &format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
    let raw_vars = req.variables.or(source_vars);
    let variables = parse_variables(raw_vars.as_ref(), &mut errors);
    check_template(state, &who.org_id, &definition, &variables, errors)?;

    let new = NewVersion {
        org_id: Some(who.org_id.clone()),
        name: name.clone(),
        created_by: Some(who.user_id.clone()),
        description,
        definition: definition.to_string(),
        // Serialising parsed declarations cannot fail.
        variables: serde_json::to_string(&variables).unwrap_or_default(),
        visibility,
        source: source.map(|s| s.to_string()),
        builtin: false,
    };
    let mut tx = state.db.tenant(&who.org_id).await?;
    let existing = templates::by_name(&mut tx, Some(&who.org_id), &name).await?;
    let written = match existing {
        None => match templates::insert(&mut tx, &new).await {
            Ok(w) => w,
            Err(e) if is_unique_violation(&e) => {
                return Err(TemplateError::Conflict(format!(
                    "the template `{name}` was created meanwhile; post again for its next version"
                )));
            }
            Err(e) => return Err(e.into()),
        },
        Some(t) => {
            if t.visibility == Visibility::Private && t.owner_id.as_deref() != Some(&who.user_id) {
                return Err(TemplateError::Conflict(format!(
                    "another member's private template is named `{name}`; choose another name"
                )));
            }
            templates::add_version(&mut tx, &t, &new)
                .await?
                .ok_or_else(|| {
                    TemplateError::Conflict(format!(
                        "a version of `{name}` was added meanwhile; post again"
                    ))
                })?
        }
    };
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_template_created",
        json!({
            "template_id": written.0.id,
            "name": name,
            "version": written.1.version,
            "visibility": visibility.as_str(),
            "source": source_value(&written.1),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(written)
}

/// The organization's template `id` as `who` may change it: visible to
/// them (else 404), their organization's (else read-only), and, when
/// public, changed by an org_admin only.
async fn editable(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    id: &str,
) -> Result<Template, TemplateError> {
    let viewer = Viewer {
        org_id: &who.org_id,
        user_id: &who.user_id,
    };
    let t = templates::get(conn, viewer, id)
        .await?
        .ok_or(TemplateError::NotFound("workflow template"))?;
    if t.org_id.as_deref() != Some(who.org_id.as_str()) {
        return Err(TemplateError::ReadOnly(
            "another organization's or a built-in template is read-only; copy it with from_template",
        ));
    }
    if t.visibility == Visibility::Public {
        who.require(Permission::ManageOrganization)?;
    }
    Ok(t)
}

/// Change the visibility of the organization's template `id` (as for
/// creating one: task_executor or above, and org_admin when the template
/// is or becomes public), audited. Its versions are unchanged; a template
/// made private is its creator's.
pub async fn set_visibility(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
    visibility: &str,
) -> Result<Template, TemplateError> {
    who.require(Permission::ExecuteTask)?;
    let visibility = Visibility::parse(visibility)
        .ok_or_else(|| Invalid::field("visibility", "must be private, organization or public"))?;
    if visibility == Visibility::Public {
        who.require(Permission::ManageOrganization)?;
    }
    let mut tx = state.db.tenant(&who.org_id).await?;
    let before = editable(&mut tx, who, id).await?;
    let t = templates::set_visibility(&mut tx, &who.org_id, id, visibility)
        .await?
        .ok_or(TemplateError::NotFound("workflow template"))?;
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_template_visibility_changed",
        json!({
            "template_id": t.id,
            "name": t.name,
            "from": before.visibility.as_str(),
            "to": visibility.as_str(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(t)
}

/// Delete the organization's template `id` and its versions (permissions
/// as for [`set_visibility`]), audited. Workflows started from it keep
/// running on their own copy of its definition and keep its id.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    id: &str,
) -> Result<(), TemplateError> {
    who.require(Permission::ExecuteTask)?;
    let mut tx = state.db.tenant(&who.org_id).await?;
    let t = editable(&mut tx, who, id).await?;
    if !templates::delete(&mut tx, &who.org_id, id).await? {
        return Err(TemplateError::NotFound("workflow template"));
    }
    audit::record(
        &mut tx,
        who,
        client,
        "workflow_template_deleted",
        json!({
            "template_id": t.id,
            "name": t.name,
            "latest_version": t.latest_version,
            "visibility": t.visibility.as_str(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn source_value(v: &TemplateVersion) -> Value {
    v.source
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// A template `viewer` may see and one of its versions (the latest by
/// default).
pub async fn read_version(
    conn: &mut sqlx::AnyConnection,
    viewer: Viewer<'_>,
    id: &str,
    version: Option<i64>,
) -> Result<(Template, TemplateVersion), TemplateError> {
    let t = templates::get(conn, viewer, id)
        .await?
        .ok_or(TemplateError::NotFound("workflow template"))?;
    let v = templates::version(conn, &t.id, version.unwrap_or(t.latest_version))
        .await?
        .ok_or(TemplateError::NotFound("workflow template version"))?;
    Ok((t, v))
}

/// Start a workflow from a template version (the latest by default) the
/// caller may see, with `variables` substituted, through the ordinary
/// start (its checks, limit and audit); the workflow records the template
/// and version.
pub async fn start(
    state: &AppState,
    who: &Principal,
    client: &ClientInfo,
    template_id: &str,
    version: Option<i64>,
    variables: Option<&Value>,
    input: Value,
) -> Result<Workflow, TemplateError> {
    who.require(Permission::ExecuteTask)?;
    let viewer = Viewer {
        org_id: &who.org_id,
        user_id: &who.user_id,
    };
    let mut tx = state.db.tenant_read(&who.org_id).await?;
    let found = read_version(&mut tx, viewer, template_id, version).await;
    tx.commit().await?;
    let (t, v) = found?;
    let declared: Variables =
        serde_json::from_str(&v.variables).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let definition: Value =
        serde_json::from_str(&v.definition).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let values = resolve(&declared, variables)?;
    let definition = substitute(&definition, &values);
    let wf = service::start_as(
        state,
        who,
        client,
        &definition,
        input,
        Some((t.id.as_str(), v.version)),
    )
    .await?;
    Ok(wf)
}

/// A template that ships with the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Builtin {
    /// Its name (unique among the platform's templates).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Declared variables.
    #[serde(default)]
    pub variables: Value,
    /// The definition.
    pub definition: Value,
}

/// The built-in templates' sources, shipped in the binary.
const BUILTIN_SOURCES: [(&str, &str); 2] = [
    (
        "sentiment-routing.json",
        include_str!("builtin/sentiment-routing.json"),
    ),
    (
        "confidence-threshold.json",
        include_str!("builtin/confidence-threshold.json"),
    ),
];

/// The built-in templates (the product's story 2.2 examples). A source
/// that does not parse is left out with a warning; the unit tests make
/// sure none does.
pub fn builtins() -> Vec<Builtin> {
    BUILTIN_SOURCES
        .iter()
        .filter_map(|(file, text)| match serde_json::from_str(text) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(file, error = %e, "built-in workflow template left out");
                None
            }
        })
        .collect()
}

/// Record the built-in templates as public templates of the platform: the
/// first start writes version 1, and a start whose shipped content differs
/// from the latest stored version adds the next version.
pub async fn sync_builtins(db: &Db) -> Result<(), sqlx::Error> {
    for b in builtins() {
        // Two instances starting together may race to insert: the loser
        // sees the winner's rows on its second try.
        match sync_builtin(db, &b).await {
            Err(e) if is_unique_violation(&e) => sync_builtin(db, &b).await?,
            other => other?,
        }
    }
    Ok(())
}

async fn sync_builtin(db: &Db, b: &Builtin) -> Result<(), sqlx::Error> {
    let new = NewVersion {
        org_id: None,
        name: b.name.clone(),
        created_by: None,
        description: b.description.clone(),
        definition: b.definition.to_string(),
        variables: b.variables.to_string(),
        visibility: Visibility::Public,
        source: Some(json!({ "builtin": true }).to_string()),
        builtin: true,
    };
    let mut tx = db.platform().await?;
    match templates::by_name(&mut tx, None, &b.name).await? {
        None => {
            templates::insert(&mut tx, &new).await?;
        }
        Some(t) => {
            let latest = templates::version(&mut tx, &t.id, t.latest_version).await?;
            let same = latest.is_some_and(|v| {
                v.description == b.description
                    && serde_json::from_str::<Value>(&v.definition).ok().as_ref()
                        == Some(&b.definition)
                    && serde_json::from_str::<Value>(&v.variables).ok().as_ref()
                        == Some(&b.variables)
            });
            if !same {
                templates::add_version(&mut tx, &t, &new).await?;
            }
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflows::definition;

    fn conditions(name: &str) -> bool {
        matches!(name, "text-match" | "threshold" | "sentiment")
    }

    fn vars(v: Value) -> Variables {
        let mut errors = FieldErrors::new();
        let out = parse_variables(Some(&v), &mut errors);
        errors.finish().unwrap();
        out
    }

    #[test]
    fn whole_references_keep_their_type_and_inner_ones_become_text() {
        let values: BTreeMap<String, Value> = [
            ("n".to_string(), json!(0.8)),
            ("topic".to_string(), json!("owls")),
            ("tags".to_string(), json!(["a", "b"])),
        ]
        .into();
        let out = substitute(
            &json!({
                "a": "{{ vars.n }}",
                "b": "About {{vars.topic}} and {{input.x}}: {{vars.tags}}",
                "c": ["{{vars.topic}}", 3, "{{vars.missing}}"],
                "{{vars.topic}}": "keys stay"
            }),
            &values,
        );
        assert_eq!(
            out,
            json!({
                "a": 0.8,
                "b": "About owls and {{input.x}}: [\"a\",\"b\"]",
                "c": ["owls", 3, "{{vars.missing}}"],
                "{{vars.topic}}": "keys stay"
            })
        );
    }

    #[test]
    fn references_are_found_with_their_paths() {
        let refs = references(&json!({
            "steps": {"a": {"prompt": "x {{vars.topic}} {{input.y}}",
                            "rules": [{"args": {"value": "{{vars.min}}"}}]}}
        }));
        assert_eq!(
            refs,
            [
                ("steps.a.prompt".to_string(), "topic".to_string()),
                ("steps.a.rules[0].args.value".to_string(), "min".to_string())
            ]
        );
    }

    #[test]
    fn resolve_names_each_missing_undeclared_and_ill_typed_variable() {
        let declared = vars(json!({
            "topic": {"type": "string"},
            "n": {"type": "integer", "default": 3},
            "flag": {"type": "boolean"}
        }));
        let Err(Invalid(bad)) = resolve(
            &declared,
            Some(&json!({"n": 2.5, "flag": "yes", "extra": 1})),
        ) else {
            panic!("accepted");
        };
        assert_eq!(
            bad.keys().collect::<Vec<_>>(),
            [
                "variables.extra",
                "variables.flag",
                "variables.n",
                "variables.topic"
            ]
        );
        let ok = resolve(&declared, Some(&json!({"topic": "owls", "flag": true}))).unwrap();
        assert_eq!(ok["n"], json!(3));
    }

    #[test]
    fn bad_declarations_are_named() {
        let mut errors = FieldErrors::new();
        parse_variables(
            Some(&json!({
                "ok": {"type": "string"},
                "t": {"type": "text"},
                "d": {"type": "number", "default": "x"},
                "1bad": {"type": "string"},
                "u": {"type": "string", "other": 1}
            })),
            &mut errors,
        );
        let Err(Invalid(bad)) = errors.finish() else {
            panic!("accepted");
        };
        assert_eq!(
            bad.keys().collect::<Vec<_>>(),
            [
                "variables.1bad",
                "variables.d.default",
                "variables.t.type",
                "variables.u.other"
            ]
        );
    }

    #[test]
    fn the_builtins_are_valid_templates() {
        let all = builtins();
        assert_eq!(all.len(), BUILTIN_SOURCES.len());
        for b in all {
            let mut errors = FieldErrors::new();
            let declared = parse_variables(Some(&b.variables), &mut errors);
            errors.finish().unwrap();
            for (path, name) in references(&b.definition) {
                assert!(declared.contains_key(&name), "{}: {path}", b.name);
            }
            let values = resolve(&declared, None).unwrap();
            definition::parse(&substitute(&b.definition, &values), &conditions)
                .unwrap_or_else(|e| panic!("{}: {e:?}", b.name));
        }
    }
}
