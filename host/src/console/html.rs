//! The pages' HTML: one escaping function every value passes through, the
//! frame (navigation, who is signed in, sign out), error pages and small
//! pieces the pages share.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

use super::session::{CSRF_FIELD, Session};
use super::{Failed, enc};
use crate::auth::Permission;

/// `s` escaped for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as text: strings bare, null as a dash, numbers as written.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An amount of US dollars as a plain decimal (no exponent), up to the
/// nano-dollar the API counts in.
pub(crate) fn money(v: &Value) -> String {
    match v.as_f64() {
        Some(f) => {
            let s = format!("{f:.9}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        None => text(v),
    }
}

/// The header a live fragment's version travels in.
pub(crate) const FRAGMENT_VERSION: &str = "x-fragment-version";

/// A short digest of a live fragment: the page's script replaces the
/// fragment only when it changed (an event stream first replays what
/// happened before the page loaded, and a form being filled in must not be
/// replaced by the same form).
pub(crate) fn version(fragment: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(fragment.as_bytes())[..8])
}

/// A live fragment's response: the HTML and its version.
pub(crate) fn fragment(html: String) -> Response {
    let tag = version(&html);
    let mut resp = Html(html).into_response();
    if let Ok(value) = http::HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(FRAGMENT_VERSION, value);
    }
    resp
}

/// [`text`], escaped.
pub(crate) fn t(v: &Value) -> String {
    esc(&text(v))
}

/// A status as a badge.
pub(crate) fn status(s: &Value) -> String {
    let s = text(s);
    format!(
        r#"<span class="status status-{}">{}</span>"#,
        esc(&s.replace(|c: char| !c.is_ascii_alphanumeric(), "_")),
        esc(&s)
    )
}

/// A JSON value pretty-printed in a `<pre>`.
pub(crate) fn json_block(v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    format!("<pre>{}</pre>", esc(&pretty))
}

/// A one-button form posting to `action` with the session's CSRF token
/// and `fields` (name, value) hidden.
pub(crate) fn button(
    session: &Session,
    action: &str,
    label: &str,
    class: &str,
    fields: &[(&str, &str)],
) -> String {
    let hidden: String = fields
        .iter()
        .map(|(n, v)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                esc(n),
                esc(v)
            )
        })
        .collect();
    format!(
        r#"<form method="post" action="{}" class="inline"><input type="hidden" name="{CSRF_FIELD}" value="{}">{hidden}<button type="submit" class="{}">{}</button></form>"#,
        esc(action),
        esc(session.csrf()),
        esc(class),
        esc(label)
    )
}

/// What kind of control a form field is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control<'a> {
    /// An `<input>` of this type (`text`, `password`, `number`, `email`,
    /// `file`…).
    Input(&'a str),
    /// A `<textarea>`.
    TextArea,
    /// A `<select>` of (value, label) options.
    Select(&'a [(&'a str, &'a str)]),
}

/// A form field: its label and control, `id` unique on the page, `value`
/// filled in (or the option selected).
pub(crate) fn field(
    id: &str,
    name: &str,
    label: &str,
    control: Control<'_>,
    value: &str,
    required: bool,
) -> String {
    let req = if required { " required" } else { "" };
    let input = match control {
        Control::Input(kind) => format!(
            r#"<input id="{id}" name="{name}" type="{kind}" value="{value}"{req}>"#,
            id = esc(id),
            name = esc(name),
            kind = esc(kind),
            value = esc(value),
        ),
        Control::TextArea => format!(
            r#"<textarea id="{id}" name="{name}" rows="4"{req}>{value}</textarea>"#,
            id = esc(id),
            name = esc(name),
            value = esc(value),
        ),
        Control::Select(options) => {
            let options: String = options
                .iter()
                .map(|(v, l)| {
                    let selected = if *v == value { " selected" } else { "" };
                    format!(
                        r#"<option value="{}"{selected}>{}</option>"#,
                        esc(v),
                        esc(l)
                    )
                })
                .collect();
            format!(
                r#"<select id="{id}" name="{name}"{req}>{options}</select>"#,
                id = esc(id),
                name = esc(name),
            )
        }
    };
    format!(
        r#"<div><label for="{}">{}</label>{input}</div>"#,
        esc(id),
        esc(label)
    )
}

/// A form posting `fields` (from [`field`]) to `action` with the
/// session's CSRF token; its submit button is `#{id}-submit`. `multipart`
/// for a file upload.
pub(crate) fn form(
    session: &Session,
    action: &str,
    id: &str,
    fields: &str,
    submit: &str,
    multipart: bool,
) -> String {
    let enctype = if multipart {
        r#" enctype="multipart/form-data""#
    } else {
        ""
    };
    format!(
        r#"<form method="post" action="{action}" id="{id}" class="edit"{enctype}><input type="hidden" name="{CSRF_FIELD}" value="{csrf}">{fields}<div><button type="submit" id="{id}-submit">{submit}</button></div></form>"#,
        action = esc(action),
        id = esc(id),
        csrf = esc(session.csrf()),
        submit = esc(submit),
    )
}

/// An object's page heading: a link back to its list, then `title`
/// (escaped here).
pub(crate) fn heading(back: &str, list: &str, title: &Value) -> String {
    format!(
        r#"<p><a href="{}">← {}</a></p><h1>{}</h1>"#,
        esc(back),
        esc(list),
        t(title)
    )
}

/// A list of facts: (term, value as HTML already escaped).
pub(crate) fn facts(pairs: &[(&str, String)]) -> String {
    let items: String = pairs
        .iter()
        .map(|(term, value)| format!("<dt>{}</dt><dd>{value}</dd>", esc(term)))
        .collect();
    format!(r#"<dl class="facts">{items}</dl>"#)
}

/// A table `id` with (label, class) column heads around `rows` (its
/// `<tr>`s, already escaped).
pub(crate) fn table(id: &str, heads: &[(&str, &str)], rows: &str) -> String {
    let heads: String = heads
        .iter()
        .map(|(label, class)| {
            let class = if class.is_empty() {
                String::new()
            } else {
                format!(r#" class="{}""#, esc(class))
            };
            format!(r#"<th scope="col"{class}>{}</th>"#, esc(label))
        })
        .collect();
    format!(
        r#"<div class="table-wrap"><table id="{}"><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table></div>"#,
        esc(id)
    )
}

/// A page's part that says something happened (a secret shown once, an
/// outcome): `html` already escaped.
pub(crate) fn notice(id: &str, html: &str) -> String {
    format!(
        r#"<div class="notice" id="{}" role="status">{html}</div>"#,
        esc(id)
    )
}

/// A secret the API shows only once (a new API key, an invitation's
/// token): `intro` (HTML, already escaped) and the secret in
/// `<code id="{code_id}">`.
pub(crate) fn shown_once(id: &str, intro: &str, code_id: &str, secret: &Value) -> String {
    notice(
        id,
        &format!(
            r#"<p>{intro} It is shown this once and cannot be shown again.</p><p><code id="{}">{}</code></p>"#,
            esc(code_id),
            t(secret)
        ),
    )
}

/// A table a page shows and exports as CSV from the same rows: what the
/// file holds is what the page showed.
#[derive(Debug, Clone)]
pub(crate) struct Sheet {
    /// Its id (the table's, and the `table=` of its CSV link).
    pub(crate) id: &'static str,
    /// Its heading.
    pub(crate) title: &'static str,
    /// Column heads: (label, class of the column's cells).
    pub(crate) heads: Vec<(&'static str, &'static str)>,
    /// Rows of plain text, one cell per head.
    pub(crate) rows: Vec<Vec<String>>,
}

impl Sheet {
    /// The heading, the table (or a line saying it is empty) and, given
    /// `csv`, a link to its CSV (`csv` with `&table=` its id appended).
    pub(crate) fn html(&self, csv: Option<&str>) -> String {
        let mut out = format!("<h2>{}</h2>", esc(self.title));
        if self.rows.is_empty() {
            out.push_str("<p>Nothing in this range.</p>");
            return out;
        }
        let rows: String = self
            .rows
            .iter()
            .map(|row| {
                let cells: String = row
                    .iter()
                    .zip(&self.heads)
                    .map(|(cell, (_, class))| {
                        if class.is_empty() {
                            format!("<td>{}</td>", esc(cell))
                        } else {
                            format!(r#"<td class="{class}">{}</td>"#, esc(cell))
                        }
                    })
                    .collect();
                format!("<tr>{cells}</tr>")
            })
            .collect();
        out.push_str(&table(self.id, &self.heads, &rows));
        if let Some(csv) = csv {
            out.push_str(&format!(
                r#"<p><a href="{}" download>Export “{}” as CSV</a></p>"#,
                esc(&format!("{csv}&table={}", self.id)),
                esc(self.title)
            ));
        }
        out
    }

    /// The rows as CSV (RFC 4180), heads first.
    pub(crate) fn csv(&self) -> String {
        let line = |cells: Vec<&str>| {
            let cells: Vec<String> = cells.into_iter().map(csv_cell).collect();
            format!("{}\r\n", cells.join(","))
        };
        let mut out = line(self.heads.iter().map(|(label, _)| *label).collect());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// One CSV cell: quoted when it must be; a text a spreadsheet would take
/// for a formula is prefixed with `'`.
fn csv_cell(cell: &str) -> String {
    let cell = if cell.starts_with(['=', '+', '@', '\t']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    };
    if cell.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

/// The pages in the navigation: (path, label, the permission without
/// which the page could only say no).
const NAV: &[(&str, &str, Option<Permission>)] = &[
    ("/console", "Overview", None),
    (
        "/console/performance",
        "Performance",
        Some(Permission::ViewAnalytics),
    ),
    ("/console/costs", "Costs", Some(Permission::ViewAnalytics)),
    (
        "/console/benchmarks",
        "Benchmarks",
        Some(Permission::ViewAnalytics),
    ),
    ("/console/tasks", "Tasks", None),
    ("/console/workflows", "Workflows", None),
    ("/console/agents", "Agents", None),
    ("/console/integrations", "Integrations", None),
    ("/console/plugins", "Plugins", None),
    ("/console/alerts", "Alerts", None),
    (
        "/console/api-keys",
        "API keys",
        Some(Permission::ManageApiKeys),
    ),
    ("/console/members", "Members", Some(Permission::ManageUsers)),
];

/// A whole page: the frame around `body`, `active` naming the navigation
/// entry to mark.
pub(crate) fn page(
    session: Option<&Session>,
    title: &str,
    active: &str,
    body: &str,
) -> Html<String> {
    let nav = match session {
        Some(session) => {
            let links: String = NAV
                .iter()
                .filter(|(_, _, needs)| needs.is_none_or(|p| session.can(p)))
                .map(|(href, label, _)| {
                    let current = if *label == active {
                        r#" aria-current="page""#
                    } else {
                        ""
                    };
                    format!(r#"<li><a href="{href}"{current}>{label}</a></li>"#)
                })
                .collect();
            let p = &session.principal;
            let who = format!("{} · {}", p.holding.role_names().join(", "), p.org_id);
            format!(
                r#"<nav aria-label="Main"><ul>{links}</ul></nav>
<div class="who"><span id="who" title="{who}">{who}</span><a href="/console/organizations">Organizations</a>{logout}</div>"#,
                who = esc(&who),
                logout = button(session, "/console/logout", "Sign out", "link", &[]),
            )
        }
        None => String::new(),
    };
    Html(format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · vel</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/console">vel</a>{nav}</header>
<div id="live-error" class="error" role="alert" hidden></div>
<main id="main">
{body}
</main>
</body>
</html>"##,
        title = esc(title),
    ))
}

/// An error page with `status` and a message for people.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"<h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/console">Back to the overview</a></p>"#,
        esc(status.canonical_reason().unwrap_or("Error")),
        esc(message)
    );
    (status, page(None, "Error", "", &body)).into_response()
}

/// The page of an API call that failed: its status and the API's own
/// words.
pub(crate) fn failed_page(failed: &Failed) -> Response {
    let mut message = failed.message.clone();
    if !failed.details.is_empty() {
        message = format!("{message} ({})", failed.details.join("; "));
    }
    error_page(failed.status, &message)
}

/// The API's failure shown inside a page (a part that could not load).
pub(crate) fn failed_inline(failed: &Failed) -> String {
    let mut message = failed.message.clone();
    if !failed.details.is_empty() {
        message = format!("{message} ({})", failed.details.join("; "));
    }
    format!(
        r#"<p class="error" role="alert">{} — {}</p>"#,
        esc(failed.status.canonical_reason().unwrap_or("Error")),
        esc(&message)
    )
}

/// A link to `base` with the query `pairs` (empty values left out).
pub(crate) fn href(base: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(text(&Value::Null), "—");
        assert_eq!(text(&serde_json::json!("s")), "s");
        assert!(status(&serde_json::json!("<x>")).contains("&lt;x&gt;"));
        assert_eq!(href("/p", &[("a", "1 2"), ("b", "")]), "/p?a=1%202");
    }

    #[test]
    fn sheets_as_csv() {
        let sheet = Sheet {
            id: "t",
            title: "T",
            heads: vec![("Name", ""), ("Cost", "num")],
            rows: vec![
                vec!["a,b".into(), "1".into()],
                vec!["=SUM(A1)".into(), "say \"hi\"".into()],
            ],
        };
        assert_eq!(
            sheet.csv(),
            "Name,Cost\r\n\"a,b\",1\r\n'=SUM(A1),\"say \"\"hi\"\"\"\r\n"
        );
        assert!(
            sheet
                .html(Some("/x.csv?range=day"))
                .contains("/x.csv?range=day&amp;table=t")
        );
    }
}
