//! Templates in step fields: `{{input.topic}}`, `{{steps.draft.output}}`,
//! `{{steps.draft.output.title}}` (dot paths into the workflow state) and
//! `{{state./steps/draft/output}}` (a JSON pointer). Strings are inserted
//! as they are, other values as compact JSON; a reference to nothing
//! inserts nothing (a step skipped by a branch has no output).

use serde_json::Value;

/// A template's references, checked when the definition is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `input.…`
    Input,
    /// `steps.<id>…`
    Step(&'a str),
    /// `state.<pointer>`
    Pointer,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("`{{{{` at byte {0} is not closed")]
    Unclosed(usize),
    /// A reference that names none of `input`, `steps`, `state`.
    #[error("`{{{{{0}}}}}` must start with input., steps.<id> or state./")]
    Unknown(String),
}

/// The references of `template`, in order.
pub fn references(template: &str) -> Result<Vec<Reference<'_>>, TemplateError> {
    let mut out = Vec::new();
    for part in parts(template) {
        if let Part::Reference(r) = part? {
            out.push(classify(r)?);
        }
    }
    Ok(out)
}

/// `template` with its references replaced from `state`.
pub fn render(template: &str, state: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    for part in parts(template) {
        match part {
            Ok(Part::Text(t)) => out.push_str(t),
            Ok(Part::Reference(r)) => {
                if let Some(v) = lookup(r, state) {
                    match v {
                        Value::String(s) => out.push_str(s),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
            // Checked when stored; an unclosed tail is kept as text.
            Err(TemplateError::Unclosed(at)) => out.push_str(&template[at..]),
            Err(TemplateError::Unknown(_)) => {}
        }
    }
    out
}

/// The value `reference` names in `state`.
pub fn lookup<'v>(reference: &str, state: &'v Value) -> Option<&'v Value> {
    let reference = reference.trim();
    if let Some(pointer) = reference.strip_prefix("state.") {
        return state.pointer(pointer);
    }
    let mut node = state;
    for key in reference.split('.') {
        node = match node {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

enum Part<'a> {
    Text(&'a str),
    Reference(&'a str),
}

fn parts(template: &str) -> impl Iterator<Item = Result<Part<'_>, TemplateError>> {
    let mut rest = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || rest >= template.len() {
            return None;
        }
        let tail = &template[rest..];
        match tail.find("{{") {
            Some(0) => match tail.find("}}") {
                Some(end) => {
                    rest += end + 2;
                    Some(Ok(Part::Reference(&tail[2..end])))
                }
                None => {
                    done = true;
                    Some(Err(TemplateError::Unclosed(rest)))
                }
            },
            Some(at) => {
                rest += at;
                Some(Ok(Part::Text(&tail[..at])))
            }
            None => {
                rest = template.len();
                Some(Ok(Part::Text(tail)))
            }
        }
    })
}

fn classify(reference: &str) -> Result<Reference<'_>, TemplateError> {
    let r = reference.trim();
    if r == "input" || r.starts_with("input.") {
        return Ok(Reference::Input);
    }
    if r.starts_with("state./") || r == "state." {
        return Ok(Reference::Pointer);
    }
    if let Some(path) = r.strip_prefix("steps.") {
        let id = path.split('.').next().unwrap_or_default();
        if !id.is_empty() {
            return Ok(Reference::Step(id));
        }
    }
    Err(TemplateError::Unknown(r.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_paths_and_pointers() {
        let state = json!({
            "input": {"topic": "owls", "n": 3},
            "steps": {"draft": {"output": {"title": "Owls", "tags": ["a", "b"]}}}
        });
        assert_eq!(
            render(
                "{{input.topic}} x{{ input.n }}: {{steps.draft.output.title}} {{state./steps/draft/output/tags/1}}",
                &state
            ),
            "owls x3: Owls b"
        );
        assert_eq!(
            render("[{{steps.draft.output.tags}}]", &state),
            "[[\"a\",\"b\"]]"
        );
        assert_eq!(render("{{steps.missing.output}}!", &state), "!");
    }

    #[test]
    fn references_are_checked() {
        assert_eq!(
            references("a {{steps.x.output}} {{input.y}}").unwrap(),
            [Reference::Step("x"), Reference::Input]
        );
        assert_eq!(
            references("{{oops}}"),
            Err(TemplateError::Unknown("oops".into()))
        );
        assert_eq!(references("ok {{input"), Err(TemplateError::Unclosed(3)));
    }
}
