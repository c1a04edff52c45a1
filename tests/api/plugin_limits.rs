//! What an upload may cost the server: refused uploads leave no compiled
//! code in the compile cache and no row; the compiler's input is bounded
//! (code size, checked before compiling); an organization's stored
//! components are bounded by its quota; the whole request body is bounded.
//! (The compile slots and timeout are tested deterministically in the
//! runtime: `runtime/src/slots.rs`, `runtime/tests/uploads.rs`.)

use std::path::{Path, PathBuf};

use crate::support::guests::{FLIP_ROUTER, build_guest, manifest};
use crate::support::{Backend, Server, plugin_cache_dir};

fn router(version: &str) -> Vec<u8> {
    build_guest(FLIP_ROUTER, if version == "2.0.0" { &["v2"] } else { &[] })
}

fn router_manifest(version: &str) -> String {
    manifest("flip-router", version, "router", "")
}

fn hostile(name: &str) -> Vec<u8> {
    let path = vel_plugin_artifacts::hostile_path(name)
        .unwrap_or_else(|| panic!("no hostile component {name}"));
    std::fs::read(path).expect("hostile component")
}

/// The files of a compile cache directory, by name.
fn cache_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    names
}

/// A server with a compile cache of its own (seeded with the suite's
/// compiled built-ins only, so it does not compile them again) and `env`.
async fn server_with_own_cache(b: Backend, env: &[(&str, &str)]) -> (Server, PathBuf) {
    use sha2::Digest;
    let dir =
        std::env::temp_dir().join(format!("vel-test-cache-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("cache dir");
    let builtins: Vec<String> = vel_plugin_artifacts::BUILTINS
        .iter()
        .map(|b| hex::encode(sha2::Sha256::digest(b.bytes)))
        .collect();
    if let Ok(entries) = std::fs::read_dir(plugin_cache_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let builtin = builtins.iter().any(|sha| name.starts_with(sha.as_str()));
            if builtin && name.ends_with(".cwasm") {
                let _ = std::fs::copy(entry.path(), dir.join(&name));
            }
        }
    }
    let dir_text = dir.display().to_string();
    let mut all: Vec<(&str, &str)> = vec![("VEL_PLUGIN_CACHE_DIR", &dir_text)];
    all.extend_from_slice(env);
    let s = Server::start_with(b, &all).await;
    (s, dir)
}

/// How many `plugin_uploaded` entries `token`'s organization has.
async fn uploads_audited(s: &Server, token: &str) -> usize {
    s.get("/api/audit-logs?action=plugin_uploaded", token)
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .expect("items")
        .len()
}

async fn test_refused_uploads_leave_no_compiled_code_and_no_row(b: Backend) {
    let (s, cache) = server_with_own_cache(b, &[]).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;
    let before = cache_files(&cache);
    let v1 = router("1.0.0");

    let refusals = [
        // Compiled, then refused: the manifest does not match its info().
        (
            v1.clone(),
            manifest("other-router", "1.0.0", "router", ""),
            "manifest_mismatch",
        ),
        (v1.clone(), router_manifest("1.2.0"), "manifest_mismatch"),
        // Refused before compiling.
        (
            v1.clone(),
            manifest("flip-router", "1.0.0", "condition", ""),
            "wrong_world",
        ),
        (
            hostile("wrong-world"),
            router_manifest("1.0.0"),
            "wrong_world",
        ),
        (hostile("impostor"), router_manifest("1.0.0"), "wrong_world"),
        (
            hostile("router-http"),
            router_manifest("1.0.0"),
            "forbidden_import",
        ),
        (
            v1.clone(),
            manifest(
                "flip-router",
                "1.0.0",
                "router",
                "[limits]\nmemory_bytes = 1099511627776\n",
            ),
            "limits_above_maximum",
        ),
    ];
    for (bytes, manifest, code) in refusals {
        let r = s
            .upload_plugin(&owner, "", bytes, &manifest)
            .await
            .expect_error(400, code);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
    }
    assert_eq!(
        cache_files(&cache),
        before,
        "a refused upload leaves nothing in the compile cache"
    );
    s.get("/api/plugins/flip-router", &owner)
        .await
        .expect_error(404, "not_found");
    assert_eq!(uploads_audited(&s, &owner).await, 0);

    // The same component with its own manifest is stored, and only then
    // does its compiled code enter this server's cache.
    s.upload_plugin(&owner, "", v1, &router_manifest("1.0.0"))
        .await
        .expect(201);
    let after = cache_files(&cache);
    assert_eq!(
        after.len(),
        before.len() + 1,
        "one compiled file for the stored version: {after:?}"
    );
    assert_eq!(uploads_audited(&s, &owner).await, 1);
    drop(s);
    let _ = std::fs::remove_dir_all(&cache);
}

async fn test_code_over_the_compile_limits_is_refused_before_compiling(b: Backend) {
    let (s, cache) = server_with_own_cache(b, &[("VEL_PLUGIN_MAX_FUNCTION_BYTES", "1024")]).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;
    let before = cache_files(&cache);
    let r = s
        .upload_plugin(&owner, "", router("1.0.0"), &router_manifest("1.0.0"))
        .await
        .expect_error(422, "compile_limit_exceeded");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1024"), "{message}");
    assert_eq!(cache_files(&cache), before);
    assert_eq!(uploads_audited(&s, &owner).await, 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&cache);
}

async fn test_an_organization_over_its_quota_is_refused(b: Backend) {
    let (v1, v2) = (router("1.0.0"), router("2.0.0"));
    // Room for either version, not both.
    let quota = (v1.len() + v2.len() - 1).to_string();
    let (s, cache) = server_with_own_cache(b, &[("VEL_PLUGIN_ORG_QUOTA_BYTES", &quota)]).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;

    s.upload_plugin(&owner, "", v1.clone(), &router_manifest("1.0.0"))
        .await
        .expect(201);
    let before = cache_files(&cache);
    let r = s
        .upload_plugin(&owner, "", v2.clone(), &router_manifest("2.0.0"))
        .await
        .expect_error(413, "plugin_quota_exceeded");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("quota") && message.contains(&quota),
        "{message}"
    );
    assert_eq!(cache_files(&cache), before, "refused before compiling");
    let shown = s.get("/api/plugins/flip-router", &owner).await.expect(200);
    assert_eq!(
        shown.body["versions"].as_array().map(Vec::len),
        Some(1),
        "{}",
        shown.body
    );

    // Another organization has a quota of its own.
    let (_other, other_owner) = s.tenant(&admin, "globex").await;
    s.upload_plugin(&other_owner, "", v2.clone(), &router_manifest("2.0.0"))
        .await
        .expect(201);
    // Deleting a version frees its share.
    s.delete("/api/plugins/flip-router/versions/1.0.0", &owner)
        .await
        .expect(204);
    s.upload_plugin(&owner, "", v2, &router_manifest("2.0.0"))
        .await
        .expect(201);
    drop(s);
    let _ = std::fs::remove_dir_all(&cache);
}

async fn test_an_upload_body_over_the_total_cap_gets_413(b: Backend) {
    // A 64 KiB component limit: the whole form may be 64 KiB plus room for
    // a manifest, a signature and the form's framing.
    let s = Server::start_with(b, &[("VEL_PLUGIN_MAX_UPLOAD_BYTES", "65536")]).await;
    let admin = s.admin_token().await;
    let (_org, owner) = s.tenant(&admin, "acme").await;
    // Every part is within its own cap; together they are not. The
    // refusal comes from the declared length, before the body is read, so
    // only the head is sent: a client still writing the body would race the
    // server's close after its answer.
    let declared = 60 * 1024 * 5 + 1024;
    let head = format!(
        "POST /api/plugins HTTP/1.1\r\nhost: vel\r\nauthorization: Bearer {owner}\r\n\
         content-type: multipart/form-data; boundary=x\r\ncontent-length: {declared}\r\n\r\n"
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut socket, head.as_bytes())
        .await
        .expect("send the head");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer),
    )
    .await
    .expect("the server answers and closes")
    .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(json).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    // Refused up front, from the declared length, naming the limit.
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("148480")),
        "{body}"
    );
    // The server goes on serving.
    s.get("/api/plugins", &owner).await.expect(200);
    assert_eq!(uploads_audited(&s, &owner).await, 0);
}

crate::dual_backend_tests!(
    test_refused_uploads_leave_no_compiled_code_and_no_row,
    test_code_over_the_compile_limits_is_refused_before_compiling,
    test_an_organization_over_its_quota_is_refused,
    test_an_upload_body_over_the_total_cap_gets_413,
);
