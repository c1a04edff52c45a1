//! Batches: many tasks submitted at once run at most `max_concurrency` at a
//! time, partial success is counted, results download as JSON, JSON Lines
//! and CSV in order; JSON Lines uploads; cancellation stops the rest; a
//! batch counts once against the submitter's limit; a SIGKILL mid-batch
//! loses and repeats no task; `batch.completed` reaches a webhook; bad
//! batches are refused whole and store nothing; on PostgreSQL the workers'
//! signals are relayed after their commits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Server};

/// The offline `mock` provider as an integration.
async fn mock(s: &Server, token: &str) {
    s.mock_integration(token, "mock").await;
}

/// A task on the `slow` mock model answering after `ms`.
fn slow(prompt: &str, ms: u64) -> Value {
    json!({ "description": prompt, "prompt": prompt, "cache": false,
            "parameters": { "model": "mock/slow" },
            "metadata": { "delay-ms": ms, "word-delay-ms": 0 } })
}

/// Post batch `body` as `token` and expect it created: its id and the
/// batch as the answer shows it.
async fn create_batch(s: &Server, token: &str, body: Value) -> (String, Value) {
    let created = s.post("/api/batches", token, body).await.expect(201);
    let id = created.body["id"].as_str().expect("a batch id").to_string();
    (id, created.body)
}

/// Batch `id` once it has left `running`.
async fn finished(s: &Server, token: &str, id: &str) -> Value {
    when(s, token, id, |b| b["status"] != "running").await
}

/// Batch `id` once `ready` holds for it, polled for up to 60 s (each poll
/// a real request).
async fn when(s: &Server, token: &str, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = s
            .get(&format!("/api/batches/{id}"), token)
            .await
            .expect(200)
            .body;
        if ready(&b) {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn download(s: &Server, token: &str, path: &str) -> (String, String) {
    let resp = s
        .http
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
    (kind, resp.text().await.unwrap())
}

/// The most tasks running at once, from their recorded start and end (a
/// task claimed in the millisecond its predecessor's end committed may be
/// stamped a little before that end: overlaps under 5 ms are not counted).
fn most_at_once(results: &[Value]) -> usize {
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let spans: Vec<(i64, i64)> = results
        .iter()
        .filter(|r| !r["started_at"].is_null())
        .map(|r| (ms(&r["started_at"]), ms(&r["finished_at"])))
        .collect();
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start + 5 < *e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn batch_runs_within_its_concurrency(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let mut tasks: Vec<Value> = (0..24)
        .map(|i| {
            let mut t = slow(&format!("item {i}"), 40);
            t["custom_id"] = json!(format!("row-{i}"));
            t
        })
        .collect();
    // Three fail; a comma and quotes test the CSV's quoting.
    for i in [5, 11, 17] {
        tasks[i] = json!({ "custom_id": format!("row-{i}"), "description": "doomed",
                           "prompt": "x", "parameters": { "model": "mock/error" } });
    }
    tasks[2]["prompt"] = json!("say \"hi\", twice");
    let (id, created) = create_batch(
        &s,
        &admin,
        json!({ "description": "nightly", "max_concurrency": 3, "tasks": tasks }),
    )
    .await;
    assert_eq!(created["status"], "running");
    assert_eq!(created["total"], 24);
    assert_eq!(created["max_concurrency"], 3);
    assert!(created["counts"]["running"].as_i64().unwrap() <= 3);

    // Never more than three of its tasks unfinished, as the batch counts.
    let done = when(&s, &admin, &id, |b| {
        assert!(b["counts"]["running"].as_i64().unwrap() <= 3, "{b}");
        b["status"] != "running"
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], "24/24");
    assert_eq!(done["counts"]["completed"], 21);
    assert_eq!(done["counts"]["failed"], 3);
    assert_eq!(done["counts"]["queued"], 0);
    assert_eq!(done["counts"]["running"], 0);
    assert!(done["finished_at"].is_string());
    assert!(done["cost_usd"].is_number());

    // JSON: every task in order, with its outcome.
    let (kind, text) = download(&s, &admin, &format!("/api/batches/{id}/results")).await;
    assert!(kind.starts_with("application/json"));
    let results: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(results.len(), 24);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["custom_id"], format!("row-{i}"));
        if [5, 11, 17].contains(&i) {
            assert_eq!(r["status"], "failed", "{r}");
            assert!(r["error"]["kind"].is_string(), "{r}");
        } else {
            assert_eq!(r["status"], "completed", "{r}");
            assert!(r["output"].as_str().unwrap().starts_with("echo: "), "{r}");
        }
    }
    assert!(
        most_at_once(&results) <= 3,
        "more than 3 ran at once: {results:?}"
    );
    // Each task is an ordinary task that names its batch.
    let task_id = results[0]["task_id"].as_str().unwrap();
    let task = s
        .get(&format!("/api/tasks/{task_id}"), &admin)
        .await
        .expect(200);
    assert_eq!(task.body["batch_id"], id.as_str());
    assert_eq!(task.body["status"], "completed");

    // JSON Lines and CSV carry the same rows.
    let (kind, text) = download(
        &s,
        &admin,
        &format!("/api/batches/{id}/results?format=jsonl"),
    )
    .await;
    assert_eq!(kind, "application/x-ndjson");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, results);
    let resp = s
        .http
        .get(s.url(&format!("/api/batches/{id}/results")))
        .header("accept", "text/csv")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv_text = resp.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        header[..5],
        ["index", "custom_id", "task_id", "status", "output"]
    );
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 24);
    assert_eq!(&records[2][4], "echo: say \"hi\", twice");
    assert_eq!(&records[5][3], "failed");

    // Listed, and filtered by status.
    let list = s
        .get("/api/batches?status=completed", &admin)
        .await
        .expect(200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    let list = s
        .get("/api/batches?status=running", &admin)
        .await
        .expect(200);
    assert_eq!(list.body["total"], 0);
    s.get("/api/batches?status=done", &admin)
        .await
        .expect_error(400, "invalid_query");
    // Another organization sees none of it.
    let (_, other) = s.tenant(&admin, "elsewhere").await;
    s.get(&format!("/api/batches/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    s.get(&format!("/api/batches/{id}/results"), &other)
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        s.get("/api/batches", &other).await.expect(200).body["total"],
        0
    );
}

async fn json_lines_upload(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let body = "{\"description\":\"a\",\"prompt\":\"one\",\"parameters\":{\"model\":\"mock/echo\"}}\n\
                \n\
                {\"description\":\"b\",\"prompt\":\"two\",\"parameters\":{\"model\":\"mock/echo\"},\"custom_id\":\"second\"}\r\n\
                {\"description\":\"c\",\"prompt\":\"three\",\"parameters\":{\"model\":\"mock/echo\"}}";
    let created = s
        .raw(
            reqwest::Method::POST,
            "/api/batches?description=lines&max_concurrency=2",
            Some(&admin),
            "application/x-ndjson",
            body.as_bytes().to_vec(),
        )
        .await
        .expect(201);
    assert_eq!(created.body["total"], 3);
    assert_eq!(created.body["description"], "lines");
    assert_eq!(created.body["max_concurrency"], 2);
    let id = created.body["id"].as_str().unwrap();
    let done = finished(&s, &admin, id).await;
    assert_eq!(done["counts"]["completed"], 3, "{done}");
    let (_, text) = download(
        &s,
        &admin,
        &format!("/api/batches/{id}/results?format=jsonl"),
    )
    .await;
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[1]["custom_id"], "second");
    assert_eq!(rows[2]["output"], "echo: three");

    // A malformed line refuses the upload, naming the line.
    let bad = s
        .raw(
            reqwest::Method::POST,
            "/api/batches",
            Some(&admin),
            "application/x-ndjson",
            b"{\"description\":\"a\",\"prompt\":\"one\"}\n{oops\n".to_vec(),
        )
        .await
        .expect_error(400, "invalid_json");
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{}",
        bad.body
    );
    assert_eq!(
        s.get("/api/batches", &admin).await.expect(200).body["total"],
        1
    );
}

async fn cancel_stops_the_rest_and_a_batch_counts_once(b: Backend) {
    let s = Server::start_with(b, &[("VEL_MAX_UNFINISHED_TASKS", "2")]).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let (_, user) = s
        .member(&admin, "batcher@test.local", "task_executor")
        .await;
    let tasks: Vec<Value> = (0..20)
        .map(|i| slow(&format!("long {i}"), 30_000))
        .collect();
    let (id, _) = create_batch(&s, &user, json!({ "max_concurrency": 2, "tasks": tasks })).await;
    when(&s, &user, &id, |b| b["counts"]["running"] == 2).await;

    // Two of its tasks run, yet the batch counts once: one more task fits,
    // then the limit of two is reached.
    s.post("/api/tasks", &user, slow("single", 30_000))
        .await
        .expect(201);
    s.post("/api/tasks", &user, slow("one too many", 30_000))
        .await
        .expect_error(429, "rate_limited");
    s.post("/api/batches", &user, json!({ "tasks": [slow("x", 1)] }))
        .await
        .expect_error(429, "rate_limited");

    let cancelled = s
        .post(&format!("/api/batches/{id}/cancel"), &user, json!({}))
        .await
        .expect(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        cancelled.body["counts"]["cancelled"], 20,
        "{}",
        cancelled.body
    );
    assert_eq!(cancelled.body["counts"]["running"], 0);
    assert_eq!(cancelled.body["progress"], "20/20");
    s.post(&format!("/api/batches/{id}/cancel"), &user, json!({}))
        .await
        .expect_error(409, "conflict");

    let (_, text) = download(&s, &user, &format!("/api/batches/{id}/results")).await;
    let results: Vec<Value> = serde_json::from_str(&text).unwrap();
    let status = |want: &str| results.iter().filter(|r| r["status"] == want).count();
    assert_eq!(status("cancelled"), 2, "{results:?}");
    assert_eq!(status("not_run"), 18);
    // No task was released after the cancellation: the two and the single.
    let tasks = s.get("/api/tasks?limit=100", &user).await.expect(200);
    assert_eq!(tasks.body["total"], 3);
    // The batch no longer counts.
    s.post("/api/tasks", &user, slow("now it fits", 1))
        .await
        .expect(201);
}

async fn a_crash_loses_and_repeats_nothing(b: Backend) {
    let mut s = Server::start_with(b, &[("VEL_TASK_LEASE_MS", "1000")]).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let tasks: Vec<Value> = (0..16).map(|i| slow(&format!("t{i}"), 150)).collect();
    let (id, _) = create_batch(&s, &admin, json!({ "max_concurrency": 4, "tasks": tasks })).await;
    when(&s, &admin, &id, |b| b["ended"].as_i64().unwrap() >= 4).await;
    s.kill();
    s.restart();
    let admin = s.admin_token().await;
    let done = finished(&s, &admin, &id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["counts"]["completed"], 16, "{done}");
    let (_, text) = download(&s, &admin, &format!("/api/batches/{id}/results")).await;
    let results: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(results.iter().all(|r| r["status"] == "completed"));
    // One task per item: none lost, none run as a second task.
    let tasks = s.get("/api/tasks?limit=100", &admin).await.expect(200);
    assert_eq!(tasks.body["total"], 16);
}

async fn bad_batches_change_nothing(b: Backend) {
    let s = Server::start_with(
        b,
        &[
            ("VEL_BATCH_MAX_TASKS", "5"),
            ("VEL_BATCH_MAX_BYTES", "4096"),
        ],
    )
    .await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let good =
        json!({ "description": "ok", "prompt": "hi", "parameters": { "model": "mock/echo" } });
    let details = |r: &crate::support::Resp| r.body["error"]["details"].clone();

    let r = s
        .post("/api/batches", &admin, json!({ "tasks": [] }))
        .await
        .expect(422);
    assert!(details(&r)["tasks"].is_array(), "{}", r.body);
    let r = s
        .post(
            "/api/batches",
            &admin,
            json!({ "tasks": [good, { "description": "no prompt" }, { "prompt": "p", "description": "d", "colour": "red" },
                              { "custom_id": "a", "prompt": "p", "description": "d" },
                              { "custom_id": "a", "prompt": "p", "description": "d" }] }),
        )
        .await
        .expect(422);
    let d = details(&r);
    assert!(d["tasks[1].prompt"].is_array(), "{d}");
    assert!(d["tasks[2].colour"].is_array(), "{d}");
    assert!(d["tasks[4].custom_id"].is_array(), "{d}");
    assert!(
        d.get("tasks[0]").is_none() && d.get("tasks[3].custom_id").is_none(),
        "{d}"
    );
    let r = s
        .post(
            "/api/batches",
            &admin,
            json!({ "tasks": [good, { "description": "d", "prompt": "p", "agent_id": "no-such-agent" }] }),
        )
        .await
        .expect(422);
    assert!(details(&r)["tasks[1].agent_id"].is_array(), "{}", r.body);
    for n in [0, 21] {
        let r = s
            .post(
                "/api/batches",
                &admin,
                json!({ "max_concurrency": n, "tasks": [good] }),
            )
            .await
            .expect(422);
        assert!(details(&r)["max_concurrency"].is_array(), "{}", r.body);
    }
    let six: Vec<Value> = (0..6).map(|_| good.clone()).collect();
    let r = s
        .post("/api/batches", &admin, json!({ "tasks": six }))
        .await
        .expect(422);
    assert!(details(&r)["tasks"].is_array(), "{}", r.body);
    let r = s
        .post(
            "/api/batches",
            &admin,
            json!({ "tasks": [{ "description": "d", "prompt": "a\u{0}b" }] }),
        )
        .await
        .expect(422);
    assert!(details(&r)["tasks[0].prompt"].is_array(), "{}", r.body);
    s.post(
        "/api/batches",
        &admin,
        json!({ "tasks": [{ "description": "big", "prompt": "x".repeat(5000) }] }),
    )
    .await
    .expect_error(413, "payload_too_large");
    s.raw(
        reqwest::Method::POST,
        "/api/batches",
        Some(&admin),
        "text/plain",
        b"hello".to_vec(),
    )
    .await
    .expect(415);
    s.raw(
        reqwest::Method::POST,
        "/api/batches",
        Some(&admin),
        "application/json",
        b"{\"tasks\": [".to_vec(),
    )
    .await
    .expect_error(400, "invalid_json");
    s.post(
        "/api/batches/00000000-0000-4000-8000-000000000000/cancel",
        &admin,
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    s.get(
        "/api/batches/00000000-0000-4000-8000-000000000000/results?format=xml",
        &admin,
    )
    .await
    .expect_error(400, "invalid_query");
    assert_eq!(
        s.get("/api/batches", &admin).await.expect(200).body["total"],
        0
    );
    assert_eq!(
        s.get("/api/tasks", &admin).await.expect(200).body["total"],
        0
    );

    // The same Idempotency-Key: the same batch for the same request, 409
    // for another.
    let send = |body: Value| {
        s.http
            .post(s.url("/api/batches"))
            .bearer_auth(&admin)
            .header("idempotency-key", "nightly-1")
            .json(&body)
            .send()
    };
    let first = send(json!({ "tasks": [good] })).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(json!({ "tasks": [good] })).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = send(json!({ "tasks": [good, good] })).await.unwrap();
    assert_eq!(other.status(), 409);
    assert_eq!(
        s.get("/api/batches", &admin).await.expect(200).body["total"],
        1
    );
}

async fn batch_completed_reaches_a_webhook(b: Backend) {
    use crate::webhooks::{Answer, LOCAL, next, receiver, signature_valid, webhook};
    let s = Server::start_with(b, &LOCAL).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let (url, mut rx) = receiver(Answer::FailFirst(0)).await;
    let (_, secret) = webhook(&s, &admin, &url, &["batch.completed"]).await;
    let tasks = json!([
        { "description": "a", "prompt": "one", "parameters": { "model": "mock/echo" } },
        { "description": "b", "prompt": "two", "parameters": { "model": "mock/error" } },
        { "description": "c", "prompt": "three", "parameters": { "model": "mock/echo" } },
    ]);
    let (id, _) = create_batch(
        &s,
        &admin,
        json!({ "description": "hooked", "max_concurrency": 2, "tasks": tasks }),
    )
    .await;
    // Only the batch's end is subscribed to: the first delivery is it.
    let got = next(&mut rx, 30).await;
    assert_eq!(got.event, "batch.completed");
    assert!(signature_valid(&secret, &got.signature, &got.body));
    let body = got.json();
    assert_eq!(body["data"]["batch_id"], id);
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["description"], "hooked");
    assert_eq!(
        (
            body["data"]["total"].as_i64(),
            body["data"]["completed"].as_i64(),
            body["data"]["failed"].as_i64()
        ),
        (Some(3), Some(2), Some(1)),
        "{body}"
    );
    let done = finished(&s, &admin, &id).await;
    assert_eq!(done["progress"], "3/3");
}

/// Cancelling one task of a running batch ends it as cancelled and
/// releases the next item of its lane; the batch still completes.
async fn a_cancelled_task_releases_the_next(b: Backend) {
    let s = Server::start(b).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let tasks = json!([slow("stuck", 30_000), slow("next", 10)]);
    let (id, _) = create_batch(&s, &admin, json!({ "max_concurrency": 1, "tasks": tasks })).await;
    let (_, text) = download(&s, &admin, &format!("/api/batches/{id}/results")).await;
    let results: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(results[1]["status"], "queued");
    let first = results[0]["task_id"].as_str().unwrap();
    s.post(&format!("/api/tasks/{first}/cancel"), &admin, json!({}))
        .await
        .expect(200);
    let done = finished(&s, &admin, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["cancelled"], 1);
    assert_eq!(done["counts"]["completed"], 1);
}

dual_backend_tests!(
    batch_completed_reaches_a_webhook,
    a_cancelled_task_releases_the_next,
    batch_runs_within_its_concurrency,
    json_lines_upload,
    cancel_stops_the_rest_and_a_batch_counts_once,
    a_crash_loses_and_repeats_nothing,
    bad_batches_change_nothing,
);

/// On PostgreSQL a task worker's claims and ends notify nothing inside
/// their transactions; the worker relays the same signals after its
/// commits, naming its instance: the events of a task that only a release
/// created, and the release itself ("a task was queued"), reach a listener
/// as any other instance's would.
#[tokio::test]
async fn postgres_relays_a_workers_signals() {
    let s = Server::start(Backend::Postgres).await;
    let admin = s.admin_token().await;
    mock(&s, &admin).await;
    let mut listener = sqlx::postgres::PgListener::connect(&s.database_url)
        .await
        .expect("connect the listener");
    listener
        .listen_all(["vel_task_queue", "vel_task_events"])
        .await
        .expect("listen");
    let tasks = json!([slow("first", 10), slow("second", 10)]);
    let (id, _) = create_batch(&s, &admin, json!({ "max_concurrency": 1, "tasks": tasks })).await;
    let done = finished(&s, &admin, &id).await;
    assert_eq!(done["counts"]["completed"], 2, "{done}");
    let (_, text) = download(&s, &admin, &format!("/api/batches/{id}/results")).await;
    let results: Vec<Value> = serde_json::from_str(&text).unwrap();
    // The second task exists only because the first one's end released it.
    let second = results[1]["task_id"].as_str().unwrap().to_string();

    let mut queued = 0;
    let mut second_heard = false;
    while queued < 2 || !second_heard {
        let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("within 30 s: {queued} queue signals, second task heard: {second_heard}")
            })
            .expect("receive a notification");
        let (origin, payload) = note.payload().split_once(' ').unwrap();
        assert!(!origin.is_empty(), "names its instance: {}", note.payload());
        match note.channel() {
            // The batch's creation queued the first; the first's end the second.
            "vel_task_queue" => queued += 1,
            _ => second_heard |= payload == second,
        }
    }
}
