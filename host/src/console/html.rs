//! The pages' HTML: one escaping function every value passes through, the
//! frame (navigation, who is signed in, sign out), error pages and small
//! pieces the pages share.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

use super::session::{CSRF_FIELD, Session};
use super::{Failed, enc};

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

/// The pages in the navigation: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/console", "Overview"),
    ("/console/tasks", "Tasks"),
    ("/console/workflows", "Workflows"),
    ("/console/plugins", "Plugins"),
    ("/console/alerts", "Alerts"),
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
                .map(|(href, label)| {
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
<div class="who"><span id="who" title="{who}">{who}</span>{logout}</div>"#,
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
}
