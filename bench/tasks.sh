#!/usr/bin/env bash
# Task API: on SQLite and/or PostgreSQL, with the built-in offline `mock`
# provider answering (no network), measure
#   (a) latency of `POST /api/tasks` (sequential submissions),
#   (b) latency of `GET /api/tasks/{id}` of a completed task,
#   (c) end-to-end throughput: submit N tasks over 8 connections as fast as
#       the server accepts them, and time until every one is `completed`.
# Prints a Markdown table.
#
# Usage: bench/tasks.sh [sqlite|postgres|both]   (default both)
# Environment: N_POST (default 2000), N_GET (default 5000), N_E2E (default
# 2000), WARMUP (default 200), BENCH_THREADS (load generator threads,
# default 1), BENCH_NO_BUILD=1 to skip `cargo build --release`.
# Requires: curl, jq, and for PostgreSQL psql and a server on 127.0.0.1:5432
# (trust auth, user postgres); a fresh database is created and dropped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WHICH="${1:-both}"
N_POST="${N_POST:-2000}"
N_GET="${N_GET:-5000}"
N_E2E="${N_E2E:-2000}"
WARMUP="${WARMUP:-200}"
THREADS="${BENCH_THREADS:-1}"
case "$WHICH" in
    sqlite) BACKENDS=(sqlite) ;;
    postgres) BACKENDS=(postgres) ;;
    both) BACKENDS=(sqlite postgres) ;;
    *) die "usage: $0 [sqlite|postgres|both]" ;;
esac

# A task body; PREFIX keeps phases apart and {{n}} makes every prompt
# differ, so that no task is answered from the response cache.
task_body() {
    jq -nc --arg p "$1 {{n}}" \
        '{description: "bench", task_type: "light", prompt: $p, agent_id: null}'
}

# bench SUBCOMMAND ARGS...: vel-bench; on failure its report goes to stderr.
bench() {
    local out
    out="$("$BIN/vel-bench" --threads "$THREADS" "$@")" || die "vel-bench $1 failed: $out"
    echo "$out"
}

ROWS=()

measure() { # BACKEND
    local backend=$1
    new_tmp_dir
    local data=$TMP_DIR
    local env=(VEL_MAX_UNFINISHED_TASKS=100000)
    if [ "$backend" = postgres ]; then
        create_pg_db
        env+=(DATABASE_URL="$PG_URL")
    fi
    log "$backend: starting vel"
    start_vel "$data" "${env[@]}"
    local base=$VEL_URL token auth
    token="$(login "$base")"
    auth="authorization: Bearer $token"

    # The offline mock provider must be available to the organization (the
    # first start creates one unless VEL_DEMO_MOCK=false).
    if ! api GET "$base/api/integrations" "$token" | jq -e '.items[] | select(.provider == "mock")' >/dev/null; then
        api POST "$base/api/integrations" "$token" '{"name":"mock","provider":"mock","plugin":"mock"}' >/dev/null
    fi

    log "$backend: (a) POST /api/tasks, $N_POST sequential submissions"
    local post
    post="$(bench http --json --url "$base/api/tasks" -H "$auth" --body "$(task_body post)" \
        -c 1 -n "$N_POST" --warmup "$WARMUP" --expect-status 201 --ids-out "$data/post-ids")"
    # Let the submitted tasks finish before measuring reads, so that the
    # workers running them do not share the CPU with the next phase.
    bench wait --json --url-template "$base/api/tasks/{id}" --ids-file "$data/post-ids" \
        -H "$auth" --fail-on failed --fail-on cancelled >/dev/null

    local id
    id="$(head -n 1 "$data/post-ids")"
    log "$backend: (b) GET /api/tasks/{id}, $N_GET sequential reads"
    local get
    get="$(bench http --json --url "$base/api/tasks/$id" -H "$auth" \
        -c 1 -n "$N_GET" --warmup "$WARMUP")"

    log "$backend: (c) $N_E2E tasks submitted over 8 connections, until all completed"
    local started e2e
    started="$(date +%s%3N)"
    bench http --json --url "$base/api/tasks" -H "$auth" --body "$(task_body e2e)" \
        -c 8 -n "$N_E2E" --expect-status 201 --ids-out "$data/e2e-ids" >"$data/e2e-submit.json"
    e2e="$(bench wait --json --url-template "$base/api/tasks/{id}" --ids-file "$data/e2e-ids" \
        -H "$auth" --fail-on failed --fail-on cancelled --started-at-ms "$started")"
    # A sample task must have been answered by the mock provider.
    api GET "$base/api/tasks/$(tail -n 1 "$data/e2e-ids")" "$token" |
        jq -e '.status == "completed" and (.result | type == "object")' >/dev/null ||
        die "$backend: the last task has no result"

    ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s (%s s for %s, submission %s/s) |' "$backend" \
        "$(field "$post" p50_us)" "$(field "$post" p95_us)" \
        "$(field "$get" p50_us)" "$(field "$get" p95_us)" \
        "$(field "$e2e" per_sec)" "$(field "$e2e" elapsed_s)" "$N_E2E" \
        "$(field "$(cat "$data/e2e-submit.json")" requests_per_sec)")")
    kill "$VEL_PID"
    wait "$VEL_PID" 2>/dev/null || true
}

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
for b in "${BACKENDS[@]}"; do
    measure "$b"
done

echo
echo "Machine: $(machine)"
echo
echo "| database | POST p50 µs | POST p95 µs | GET p50 µs | GET p95 µs | completed tasks/s |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
