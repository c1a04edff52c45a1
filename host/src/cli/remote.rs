//! `vel plugin publish|list|show|activate|rollback|approve`: the plugin
//! registry of a running server from the command line, over its HTTP API
//! (`/api/plugins`, `/api/plugin-approvals`).
//!
//! The server comes from `--server` / `VEL_SERVER`, the credential from
//! `--api-key` / `VEL_API_KEY`. The key is only ever sent as a sensitive
//! `Authorization` header: it is never printed, and any text the CLI shows
//! is scrubbed of it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, ValueEnum};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where `vel serve` listens unless configured otherwise (see README).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Length of a raw (binary) ed25519 signature.
const RAW_SIGNATURE_BYTES: usize = 64;

/// Longest slice of a non-JSON error body quoted in an error message.
const MAX_QUOTED_BODY: usize = 300;

/// An API key, kept out of `Debug` output so a dump of the parsed command
/// line cannot leak it.
#[derive(Clone)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> ApiKey {
        ApiKey(key)
    }
}

/// How to reach the server: shared by every remote subcommand.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Base URL of the vel server.
    #[arg(long, env = "VEL_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API key (`vel_…`) or token to authenticate with (prefer the
    /// environment variable: command lines are visible to other users).
    #[arg(long, env = "VEL_API_KEY", hide_env_values = true, value_parser = clap::value_parser!(ApiKey))]
    pub api_key: Option<ApiKey>,
    /// Print the server's JSON instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
}

/// Which registry a plugin belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    /// The platform's (platform admins; visible to every organization).
    Platform,
    /// The caller's organization's.
    Organization,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Platform => "platform",
            Scope::Organization => "organization",
        }
    }
}

/// Arguments of `vel plugin publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The component (`.wasm`) to upload.
    pub file: PathBuf,
    /// Its manifest (`vel-plugin.toml`).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Make the new version the active one at once.
    #[arg(long)]
    pub activate: bool,
    /// A detached ed25519 signature of the component: 64 raw bytes, or
    /// base64 / hex text.
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Publish to the platform's registry or the organization's (default:
    /// platform for platform admins, else organization).
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
    /// The server and credentials.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments naming one plugin (`show`, `rollback`).
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Plugin name.
    pub name: String,
    /// Mean the platform's plugin even if the organization has one of the
    /// same name (or force the organization's).
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
    /// The server and credentials.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `vel plugin activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// Plugin name.
    pub name: String,
    /// The uploaded version to make active.
    pub version: String,
    /// Mean the platform's plugin even if the organization has one of the
    /// same name (or force the organization's).
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
    /// The server and credentials.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `vel plugin approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Plugin name (without it: list the versions awaiting approval).
    pub name: Option<String>,
    /// The version whose outbound hosts to approve.
    #[arg(requires = "name")]
    pub version: Option<String>,
    /// The organization that uploaded it, when several uploaded a plugin
    /// of this name and version.
    #[arg(long, value_name = "ORG_ID")]
    pub organization: Option<String>,
    /// The server and credentials.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// A request's body.
enum Payload {
    /// `multipart/form-data` (an upload).
    Form(reqwest::multipart::Form),
    /// A JSON object.
    Json(Value),
}

/// Arguments of `vel plugin reject`.
#[derive(Debug, Args)]
pub struct RejectArgs {
    /// Plugin name.
    pub name: String,
    /// The version whose outbound hosts to reject.
    pub version: String,
    /// The organization that uploaded it, when several uploaded a plugin
    /// of this name and version.
    #[arg(long, value_name = "ORG_ID")]
    pub organization: Option<String>,
    /// Why (shown to the organization).
    #[arg(long)]
    pub reason: Option<String>,
    /// The server and credentials.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Why a remote command failed. No variant's text contains the API key.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Neither `--api-key` nor `VEL_API_KEY` was given.
    #[error("no API key: pass --api-key or set VEL_API_KEY")]
    MissingApiKey,
    /// The key cannot be sent in an HTTP header.
    #[error("the API key is empty or contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    /// `--server` is not an http(s) URL.
    #[error("--server `{url}` is not a usable http(s) URL: {reason}")]
    BadServer {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local file could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not text.
    #[error("the manifest {} is not valid UTF-8 text", path.display())]
    ManifestNotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The signature file is neither 64 raw bytes nor text.
    #[error(
        "the signature {} is neither a 64-byte binary ed25519 signature nor base64/hex text",
        path.display()
    )]
    BadSignature {
        /// The file.
        path: PathBuf,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The request did not get an answer.
    #[error("no answer from {server}: {reason}")]
    Transport {
        /// The server's base URL.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{code} (HTTP {status}): {message}{details}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's machine-readable code.
        code: String,
        /// The server's message.
        message: String,
        /// `; details: {…}` when the server gave any, else empty.
        details: String,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected answer (HTTP {status}) from the server: {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
}

/// A client for one server and credential.
struct Client {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    key: String,
}

impl Client {
    fn new(remote: &RemoteArgs) -> Result<Client, RemoteError> {
        let key = remote
            .api_key
            .as_ref()
            .map(|k| k.0.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or(RemoteError::MissingApiKey)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| RemoteError::InvalidApiKey)?;
        auth.set_sensitive(true);
        let base = parse_server(&remote.server)?;
        // reqwest is built without a default rustls provider; https needs one.
        // An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("vel-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        Ok(Client {
            http,
            base,
            auth,
            key,
        })
    }

    /// The URL of `/api/plugins/<segments…>` with `query` pairs.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        self.url_under("plugins", segments, query)
    }

    /// The URL of `/api/<collection>/<segments…>` with `query` pairs.
    fn url_under(&self, collection: &str, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["api", collection])
                .extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Send a request and decode the JSON answer, or the server's error.
    async fn send(
        &self,
        method: Method,
        url: Url,
        payload: Option<Payload>,
    ) -> Result<Value, RemoteError> {
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        match payload {
            Some(Payload::Form(form)) => req = req.multipart(form),
            Some(Payload::Json(body)) => req = req.json(&body),
            None => {}
        }
        let transport = |e: reqwest::Error| RemoteError::Transport {
            server: self.base.to_string(),
            reason: self.scrub(&error_chain(&e)),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return body.ok_or_else(|| RemoteError::Unexpected {
                status: status.as_u16(),
                body: self.quote(&bytes),
            });
        }
        match body.as_ref().and_then(|b| b.get("error")) {
            Some(error) => {
                let text = |field: &str| error.get(field).and_then(Value::as_str).unwrap_or("");
                let details = match error.get("details") {
                    Some(Value::Object(map)) if !map.is_empty() => {
                        format!("; details: {}", Value::Object(map.clone()))
                    }
                    _ => String::new(),
                };
                Err(RemoteError::Api {
                    status: status.as_u16(),
                    code: self.scrub(text("code")),
                    message: self.scrub(text("message")),
                    details: self.scrub(&details),
                })
            }
            None => Err(RemoteError::Unexpected {
                status: status.as_u16(),
                body: self.quote(&bytes),
            }),
        }
    }

    /// `text` with every occurrence of the key masked.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.key, "<redacted>")
    }

    /// The start of a body, as text, scrubbed.
    fn quote(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let mut cut: String = text.chars().take(MAX_QUOTED_BODY).collect();
        if cut.len() < text.len() {
            cut.push('…');
        }
        let cut = self.scrub(cut.trim());
        if cut.is_empty() {
            "(empty body)".into()
        } else {
            cut
        }
    }
}

/// The server URL, checked: http(s), usable as a base.
fn parse_server(server: &str) -> Result<Url, RemoteError> {
    let bad = |reason: String| RemoteError::BadServer {
        url: server.to_string(),
        reason,
    };
    let url = Url::parse(server.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("the scheme is `{}`", url.scheme())));
    }
    if url.cannot_be_a_base() {
        return Err(bad("it cannot be a base URL".into()));
    }
    Ok(url)
}

/// An error with its causes (reqwest's top-level text is terse).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read(path: &Path) -> Result<Vec<u8>, RemoteError> {
    std::fs::read(path).map_err(|source| RemoteError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The `signature` part: base64 of a raw 64-byte signature (base64 or
/// hex text of one is longer), else the file's trimmed text, which the
/// server decodes.
fn signature_text(path: &Path, bytes: Vec<u8>) -> Result<String, RemoteError> {
    if bytes.len() == RAW_SIGNATURE_BYTES {
        return Ok(base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
    match std::str::from_utf8(&bytes).map(str::trim) {
        Ok(text) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(RemoteError::BadSignature {
            path: path.to_path_buf(),
        }),
    }
}

/// `vel plugin publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let component = read(&args.file)?;
    let manifest =
        String::from_utf8(read(&args.manifest)?).map_err(|_| RemoteError::ManifestNotUtf8 {
            path: args.manifest.clone(),
        })?;
    let signature = match &args.signature {
        Some(path) => Some(signature_text(path, read(path)?)?),
        None => None,
    };
    let file_name = args.file.file_name().map_or_else(
        || "plugin.wasm".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let component = reqwest::multipart::Part::bytes(component)
        .file_name(file_name)
        .mime_str("application/wasm")
        .map_err(|e| RemoteError::Client(e.to_string()))?;
    let mut form = reqwest::multipart::Form::new()
        .part("component", component)
        .text("manifest", manifest);
    if let Some(signature) = signature {
        form = form.text("signature", signature);
    }
    let mut query = Vec::new();
    if args.activate {
        query.push(("activate", "true"));
    }
    if let Some(scope) = args.scope {
        query.push(("scope", scope.as_str()));
    }
    let url = client.url(&[], &query);
    let body = client
        .send(Method::POST, url, Some(Payload::Form(form)))
        .await?;
    if args.remote.json {
        return print_json(&body);
    }
    let v: VersionOut = decode(body)?;
    println!(
        "published {} {} ({} {}, {} bytes, sha256 {})",
        v.plugin, v.version, v.scope, v.kind, v.size_bytes, v.sha256
    );
    if v.signed {
        println!("signature verified");
    }
    if !v.hosts_approved {
        println!(
            "awaiting approval: a platform admin approves its outbound hosts ({}) with: vel plugin approve {} {}",
            v.outbound_hosts.join(", "),
            v.plugin,
            v.version
        );
    }
    if v.active {
        println!("{} {} is now active", v.plugin, v.version);
    } else if !v.hosts_approved {
        println!(
            "not active; once approved, activate it with: vel plugin activate {} {}",
            v.plugin, v.version
        );
    } else {
        println!(
            "not active; activate it with: vel plugin activate {} {}",
            v.plugin, v.version
        );
    }
    Ok(())
}

/// `vel plugin list`.
pub async fn list(remote: RemoteArgs) -> anyhow::Result<()> {
    let client = Client::new(&remote)?;
    let body = client.send(Method::GET, client.url(&[], &[]), None).await?;
    if remote.json {
        return print_json(&body);
    }
    let list: ListOut = decode(body)?;
    if list.items.is_empty() {
        println!("no plugins");
        return Ok(());
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "KIND".into(),
        "SCOPE".into(),
        "STATUS".into(),
        "ACTIVE".into(),
        "PREVIOUS".into(),
    ]];
    for p in &list.items {
        let scope = if p.builtin {
            format!("{} (builtin)", p.scope)
        } else {
            p.scope.clone()
        };
        rows.push([
            p.name.clone(),
            p.kind.clone(),
            scope,
            p.status.clone(),
            dash(&p.active_version),
            dash(&p.previous_version),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `vel plugin show`.
pub async fn show(args: NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let url = client.url(&[&args.name], &scope_query(args.scope));
    let body = client.send(Method::GET, url, None).await?;
    if args.remote.json {
        return print_json(&body);
    }
    let p: PluginOut = decode(body)?;
    print_plugin(&p);
    if p.versions.is_empty() {
        println!("versions: none");
        return Ok(());
    }
    println!("versions:");
    for v in &p.versions {
        let marker = if v.active { "*" } else { " " };
        let mut notes = Vec::new();
        if v.signed {
            notes.push("signed".to_string());
        }
        if !v.hosts_approved {
            notes.push("hosts awaiting approval".to_string());
        }
        if !v.outbound_hosts.is_empty() {
            notes.push(format!("hosts {}", v.outbound_hosts.join(",")));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join("; "))
        };
        println!(
            " {marker} {}  {} bytes  sha256 {}  uploaded {}{notes}",
            v.version, v.size_bytes, v.sha256, v.uploaded_at
        );
    }
    Ok(())
}

/// `vel plugin activate`.
pub async fn activate(args: ActivateArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let url = client.url(
        &[&args.name, "versions", &args.version, "activate"],
        &scope_query(args.scope),
    );
    let body = client.send(Method::POST, url, None).await?;
    if args.remote.json {
        return print_json(&body);
    }
    let p: PluginOut = decode(body)?;
    println!(
        "{}: active version {} (previous {})",
        p.name,
        dash(&p.active_version),
        dash(&p.previous_version)
    );
    Ok(())
}

/// `vel plugin rollback`.
pub async fn rollback(args: NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let url = client.url(&[&args.name, "rollback"], &scope_query(args.scope));
    let body = client.send(Method::POST, url, None).await?;
    if args.remote.json {
        return print_json(&body);
    }
    let p: PluginOut = decode(body)?;
    println!(
        "{}: rolled back to {} (previous {})",
        p.name,
        dash(&p.active_version),
        dash(&p.previous_version)
    );
    Ok(())
}

/// `vel plugin approve`: list what awaits approval, or approve one version.
pub async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let body = client
        .send(
            Method::GET,
            client.url_under("plugin-approvals", &[], &[]),
            None,
        )
        .await?;
    if let (Some(name), None) = (&args.name, &args.version) {
        anyhow::bail!("give the version to approve too: vel plugin approve {name} VERSION");
    }
    let (Some(name), Some(version)) = (&args.name, &args.version) else {
        if args.remote.json {
            return print_json(&body);
        }
        let pending: PendingOut = decode(body)?;
        if pending.items.is_empty() {
            println!("no plugin versions await approval");
            return Ok(());
        }
        let mut rows = vec![[
            "NAME".to_string(),
            "VERSION".into(),
            "ORGANIZATION".into(),
            "HOSTS".into(),
        ]];
        for v in &pending.items {
            rows.push([
                v.plugin.clone(),
                v.version.clone(),
                dash(&v.organization_id),
                v.outbound_hosts.join(","),
            ]);
        }
        print_table(&rows);
        return Ok(());
    };
    let pending: PendingOut = decode(body)?;
    let v = awaiting(
        &pending,
        name,
        version,
        args.organization.as_ref(),
        "approve",
    )?;
    let url = client.url_under("plugin-approvals", &[&v.id, "approve"], &[]);
    let body = client.send(Method::POST, url, None).await?;
    if args.remote.json {
        return print_json(&body);
    }
    let v: VersionOut = decode(body)?;
    println!(
        "approved the outbound hosts of {} {} ({}): {}; the organization may activate it now",
        v.plugin,
        v.version,
        dash(&v.organization_id),
        v.outbound_hosts.join(", ")
    );
    Ok(())
}

/// The one version `name` `version` (of `organization`, when given) among
/// those awaiting approval; `verb` names the command in the errors.
fn awaiting<'a>(
    pending: &'a PendingOut,
    name: &str,
    version: &str,
    organization: Option<&String>,
    verb: &str,
) -> anyhow::Result<&'a VersionOut> {
    let matching: Vec<&VersionOut> = pending
        .items
        .iter()
        .filter(|v| v.plugin == name && v.version == version)
        .filter(|v| organization.is_none_or(|org| v.organization_id.as_ref() == Some(org)))
        .collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => anyhow::bail!(
            "no version {name} {version} awaits approval (`vel plugin approve` lists those that do)"
        ),
        several => anyhow::bail!(
            "{} organizations uploaded {name} {version} ({}); choose one with `vel plugin {verb} --organization`",
            several.len(),
            several
                .iter()
                .map(|v| dash(&v.organization_id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `vel plugin reject`: reject one version awaiting approval, with an
/// optional reason; it can then never be approved or activated.
pub async fn reject(args: RejectArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.remote)?;
    let body = client
        .send(
            Method::GET,
            client.url_under("plugin-approvals", &[], &[]),
            None,
        )
        .await?;
    let pending: PendingOut = decode(body)?;
    let v = awaiting(
        &pending,
        &args.name,
        &args.version,
        args.organization.as_ref(),
        "reject",
    )?;
    let url = client.url_under("plugin-approvals", &[&v.id, "reject"], &[]);
    let body = client
        .send(
            Method::POST,
            url,
            Some(Payload::Json(serde_json::json!({ "reason": args.reason }))),
        )
        .await?;
    if args.remote.json {
        return print_json(&body);
    }
    let v: VersionOut = decode(body)?;
    println!(
        "rejected {} {} ({}); it can never be activated",
        v.plugin,
        v.version,
        dash(&v.organization_id),
    );
    Ok(())
}

fn scope_query(scope: Option<Scope>) -> Vec<(&'static str, &'static str)> {
    scope.map(|s| ("scope", s.as_str())).into_iter().collect()
}

fn print_json(body: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(body)?);
    Ok(())
}

fn decode<T: DeserializeOwned>(body: Value) -> Result<T, RemoteError> {
    let text = body.to_string();
    serde_json::from_value(body).map_err(|e| RemoteError::Unexpected {
        status: 200,
        body: format!(
            "{e}: {}",
            text.chars().take(MAX_QUOTED_BODY).collect::<String>()
        ),
    })
}

fn dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn print_plugin(p: &PluginOut) {
    println!("name:     {}", p.name);
    println!("kind:     {}", p.kind);
    match &p.organization_id {
        Some(org) => println!("scope:    {} ({org})", p.scope),
        None => println!("scope:    {}", p.scope),
    }
    println!("status:   {}", p.status);
    println!("active:   {}", dash(&p.active_version));
    println!("previous: {}", dash(&p.previous_version));
    if p.builtin {
        println!("builtin:  yes");
    }
}

/// Left-aligned columns, two spaces apart.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// The fields of a plugin the human output uses.
#[derive(Debug, Deserialize)]
struct PluginOut {
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    active_version: Option<String>,
    #[serde(default)]
    previous_version: Option<String>,
    #[serde(default)]
    builtin: bool,
    #[serde(default)]
    versions: Vec<VersionOut>,
}

/// The fields of a plugin version the human output uses.
#[derive(Debug, Deserialize)]
struct VersionOut {
    #[serde(default)]
    id: String,
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    organization_id: Option<String>,
    version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    size_bytes: i64,
    #[serde(default)]
    outbound_hosts: Vec<String>,
    #[serde(default = "yes")]
    hosts_approved: bool,
    #[serde(default)]
    signed: bool,
    #[serde(default)]
    uploaded_at: String,
    #[serde(default)]
    active: bool,
}

fn yes() -> bool {
    true
}

/// `GET /api/plugin-approvals`.
#[derive(Debug, Deserialize)]
struct PendingOut {
    items: Vec<VersionOut>,
}

/// `GET /api/plugins`.
#[derive(Debug, Deserialize)]
struct ListOut {
    items: Vec<PluginOut>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(&RemoteArgs {
            server: server.into(),
            api_key: Some(ApiKey("vel_secret".into())),
            json: false,
        })
        .expect("client")
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let c = client("https://example.com/vel/");
        assert_eq!(
            c.url(&["a b", "rollback"], &[("scope", "platform")])
                .as_str(),
            "https://example.com/vel/api/plugins/a%20b/rollback?scope=platform"
        );
        let c = client("http://127.0.0.1:8080");
        assert_eq!(
            c.url(&[], &[]).as_str(),
            "http://127.0.0.1:8080/api/plugins"
        );
    }

    #[test]
    fn bad_inputs_are_refused_without_the_key() {
        let args = |server: &str, key: Option<&str>| RemoteArgs {
            server: server.into(),
            api_key: key.map(|k| ApiKey(k.into())),
            json: false,
        };
        assert!(matches!(
            Client::new(&args(DEFAULT_SERVER, None)),
            Err(RemoteError::MissingApiKey)
        ));
        assert!(matches!(
            Client::new(&args(DEFAULT_SERVER, Some("  "))),
            Err(RemoteError::MissingApiKey)
        ));
        let err = Client::new(&args(DEFAULT_SERVER, Some("vel_a\nb")))
            .err()
            .expect("refused");
        assert!(!err.to_string().contains("vel_a"));
        assert!(matches!(
            Client::new(&args("ftp://x", Some("k"))),
            Err(RemoteError::BadServer { .. })
        ));
        assert!(!format!("{:?}", args(DEFAULT_SERVER, Some("vel_zzz"))).contains("vel_zzz"));
    }

    #[test]
    fn signatures_are_sent_as_text() {
        let p = Path::new("sig");
        let raw = vec![0xffu8; 64];
        assert_eq!(
            signature_text(p, raw.clone()).expect("raw"),
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        assert_eq!(
            signature_text(p, b" abcd==\n".to_vec()).expect("text"),
            "abcd=="
        );
        let hex = "ab".repeat(64);
        assert_eq!(
            signature_text(p, hex.clone().into_bytes()).expect("hex"),
            hex
        );
        assert!(signature_text(p, b"\n".to_vec()).is_err());
        assert!(signature_text(p, vec![0xff; 10]).is_err());
    }
}
