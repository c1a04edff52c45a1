#!/usr/bin/env bash
# The usage recorder's batching, compared in one run: the gateway benchmark's
# chat request through vel (`/v1/chat/completions` to the mock upstream) with
# the recorder writing (a) every 50 ms, at most 256 records a batch (the
# settings before session 18) and (b) vel's defaults (a second, 2,048
# records). Each setting gets a fresh vel and database; the runs alternate
# (a, b, a, b, …) so a change in the machine's speed hits both alike.
# Prints the latency at concurrency 1, the throughput at 32, and vel's
# resident memory after each run.
#
# Usage: bench/usage_recorder.sh [sqlite|postgres]   (default postgres)
# Environment: N1 (requests at concurrency 1, default 10000), N32 (at 32,
# default 40000), ROUNDS (default 2), BENCH_NO_BUILD=1 to skip the build.
# Requires: curl, jq; for postgres, psql and a server on 127.0.0.1:5432.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-postgres}"
N1="${N1:-10000}"
N32="${N32:-40000}"
ROUNDS="${ROUNDS:-2}"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
case "$DB" in sqlite | postgres) ;; *) die "usage: $0 [sqlite|postgres]" ;; esac

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work=$TMP_DIR
start_server mock "$work/mock.out" "$work/mock.err" \
    "$BIN/vel-mock-upstream" --listen 127.0.0.1:0 --threads 1 --no-record
MOCK_URL=$STARTED_URL

# load ARGS...: one `vel-bench http` run on one thread, as bench/gateway.sh.
load() { "$BIN/vel-bench" --threads 1 http --json "$@"; }

# measure LABEL VAR=VALUE...: a fresh vel with that environment; one table row.
measure() {
    local label=$1 dir
    shift
    dir="$(mktemp -d "$work/vel.XXXXXX")"
    local env=(VEL_DEMO_MOCK=false "$@")
    if [ "$DB" = postgres ]; then
        create_pg_db
        env+=(DATABASE_URL="$PG_URL")
    fi
    start_vel "$dir" "${env[@]}"
    local token key
    token="$(login "$VEL_URL")"
    api POST "$VEL_URL/api/integrations" "$token" "$(jq -nc --arg u "$MOCK_URL/v1" '{
        name: "openai", provider: "openai", plugin: "openai-compatible", base_url: $u,
        api_key: "sk-test", default_model: "gpt-4o-mini"}')" >/dev/null
    key="$(api POST "$VEL_URL/api/api-keys" "$token" '{"name":"bench","role":"task_executor"}' | jq -er .key)"
    local c1 c32
    c1="$(load --url "$VEL_URL/v1/chat/completions" -c 1 -n "$N1" --warmup 500 \
        --body "$BODY" -H "authorization: Bearer $key")" || die "run failed: $c1"
    c32="$(load --url "$VEL_URL/v1/chat/completions" -c 32 -n "$N32" --warmup 500 \
        --body "$BODY" -H "authorization: Bearer $key")" || die "run failed: $c32"
    local rss
    rss="$(proc_kib "$VEL_PID" VmRSS)"
    kill "$VEL_PID"
    wait "$VEL_PID" 2>/dev/null || true
    printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$(field "$c1" p50_us)" \
        "$(field "$c1" p95_us)" "$(field "$c1" p99_us)" "$(field "$c32" requests_per_sec)" \
        "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
}

echo
echo "Machine: $(machine); vel on $DB; $N1 requests at concurrency 1, $N32 at 32"
echo
echo "| recorder | c1 p50 µs | c1 p95 µs | c1 p99 µs | c32 req/s | VmRSS MiB after |"
echo "| --- | --- | --- | --- | --- | --- |"
for _ in $(seq 1 "$ROUNDS"); do
    measure "every 50 ms, ≤ 256" VEL_USAGE_LINGER_MS=50 VEL_USAGE_BATCH=256
    measure "defaults (1 s, ≤ 2,048)"
done
