#!/usr/bin/env bash
# Gateway overhead: the same OpenAI chat completion sent (a) straight to the
# mock upstream, (b) through nginx as a plain reverse proxy to the same mock
# (the floor: what any proxy on this path costs) and (c) through vel's
# OpenAI-compatible gateway (`/v1/chat/completions`, authenticated with a vel
# API key, forwarded by the `openai-compatible` plugin to the same mock), at
# concurrency 1 (latency) and 32 (throughput), plain and streamed, all with
# an independent load generator (`oha`) in one run. Then the same plain
# requests with the project's own load generator (`vel-bench`, to compare
# the two); through vel with a hard monthly budget on the organization
# (every call reserved and settled); and, the budget removed, with rate
# limits on the organization and the key wide enough never to refuse. Prints
# Markdown tables with the latency vel and nginx add, what the budget check
# and the rate limits add, and vel's resident memory.
#
# Usage: bench/gateway.sh [sqlite|postgres]   (vel's database, default sqlite;
#        postgres needs psql and a server on 127.0.0.1:5432, trust auth, user
#        postgres: a fresh database is created and dropped)
# Environment: SECS (seconds per oha row, default 5), N1 and N32 (vel-bench
# requests at concurrency 1 and 32, defaults 5000 / 50000), WARMUP (per
# vel-bench run, default 500), BENCH_THREADS (vel-bench threads, default 1),
# OHA, NGINX (the binaries; installed when missing: `cargo install oha`,
# `apt-get install nginx-light`), BENCH_NO_BUILD=1 to skip
# `cargo build --release`.
# Requires: curl, jq, python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
SECS="${SECS:-5}"
N1="${N1:-5000}"
N32="${N32:-50000}"
WARMUP="${WARMUP:-500}"
THREADS="${BENCH_THREADS:-1}"
# The gateway does not use the response cache: every request through vel
# reaches the upstream (the mock counts them).
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}'
need_oha
need_nginx

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work=$TMP_DIR

start_gateway "$work" "$DB"
start_nginx "$work" "$MOCK_URL"

# One request each way first, so a broken set-up fails with its error body.
api POST "$MOCK_URL/v1/chat/completions" "" "$BODY" >/dev/null
api POST "$VEL_URL/v1/chat/completions" "$KEY" "$BODY" >/dev/null
api POST "$NGINX_URL/v1/chat/completions" "" "$BODY" >/dev/null
RSS_BEFORE="$(proc_kib "$VEL_PID" VmRSS)"
AUTH="authorization: Bearer $KEY"

oha_run() { # URL CONCURRENCY BODY: oha's JSON summary of SECS seconds
    log "oha: $1 at concurrency $2 for ${SECS}s"
    # A short warm-up (new connections, caches), then the measured run.
    "$OHA" --no-tui -n 500 -c "$2" -m POST -H 'content-type: application/json' \
        -H "$AUTH" -d "$3" "$1" >/dev/null
    "$OHA" --no-tui --output-format json -z "${SECS}s" -c "$2" -m POST \
        -H 'content-type: application/json' -H "$AUTH" -d "$3" "$1"
}
OD1="$(oha_run "$MOCK_URL/v1/chat/completions" 1 "$BODY")"
ON1="$(oha_run "$NGINX_URL/v1/chat/completions" 1 "$BODY")"
OV1="$(oha_run "$VEL_URL/v1/chat/completions" 1 "$BODY")"
OD32="$(oha_run "$MOCK_URL/v1/chat/completions" 32 "$BODY")"
ON32="$(oha_run "$NGINX_URL/v1/chat/completions" 32 "$BODY")"
OV32="$(oha_run "$VEL_URL/v1/chat/completions" 32 "$BODY")"
SD1="$(oha_run "$MOCK_URL/v1/chat/completions" 1 "$STREAM_BODY")"
SN1="$(oha_run "$NGINX_URL/v1/chat/completions" 1 "$STREAM_BODY")"
SV1="$(oha_run "$VEL_URL/v1/chat/completions" 1 "$STREAM_BODY")"
SD32="$(oha_run "$MOCK_URL/v1/chat/completions" 32 "$STREAM_BODY")"
SN32="$(oha_run "$NGINX_URL/v1/chat/completions" 32 "$STREAM_BODY")"
SV32="$(oha_run "$VEL_URL/v1/chat/completions" 32 "$STREAM_BODY")"
RSS_OHA="$(proc_kib "$VEL_PID" VmRSS)"

run() { # URL CONCURRENCY REQUESTS [HEADER [get]]
    local extra=(--body "$BODY")
    [ "${5:-}" = get ] && extra=()
    [ -n "${4:-}" ] && extra+=(-H "$4")
    log "$1 at concurrency $2 ($3 requests)"
    local report
    report="$("$BIN/vel-bench" --threads "$THREADS" http --json --url "$1" \
        -c "$2" -n "$3" --warmup "$WARMUP" "${extra[@]}")" || die "run failed: $report"
    echo "$report"
}
D1="$(run "$MOCK_URL/v1/chat/completions" 1 "$N1")"
V1="$(run "$VEL_URL/v1/chat/completions" 1 "$N1" "$AUTH")"
D32="$(run "$MOCK_URL/v1/chat/completions" 32 "$N32")"
V32="$(run "$VEL_URL/v1/chat/completions" 32 "$N32" "$AUTH")"
# For reference: authentication and the model catalogue alone, no upstream call.
M1="$(run "$VEL_URL/v1/models" 1 "$N1" "$AUTH" get)"
# The same through a hard budget wide enough never to refuse.
ORG_ID="$(api GET "$VEL_URL/api/users/me" "$ADMIN_TOKEN" | jq -er .org_id)"
api PUT "$VEL_URL/api/budgets/organization/$ORG_ID/month" "$ADMIN_TOKEN" \
    '{"limit_usd": 1000000, "hard": true}' >/dev/null
B1="$(run "$VEL_URL/v1/chat/completions" 1 "$N1" "$AUTH")"
B32="$(run "$VEL_URL/v1/chat/completions" 32 "$N32" "$AUTH")"
SPENT="$(api GET "$VEL_URL/api/budgets/organization/$ORG_ID/month" "$ADMIN_TOKEN" | jq -r .spent_usd)"
# The same without the budget, through rate limits wide enough never to refuse.
api DELETE "$VEL_URL/api/budgets/organization/$ORG_ID/month" "$ADMIN_TOKEN" >/dev/null
WIDE='{"requests_per_minute": 1000000, "requests_per_hour": 100000000, "tasks_per_hour": 100000000, "tokens_per_minute": 1000000000}'
KEY_ID="$(api GET "$VEL_URL/api/api-keys" "$ADMIN_TOKEN" | jq -er '.items[] | select(.name == "bench") | .id')"
api PUT "$VEL_URL/api/organizations/$ORG_ID/rate-limits" "$ADMIN_TOKEN" "$WIDE" >/dev/null
api PUT "$VEL_URL/api/api-keys/$KEY_ID/rate-limits" "$ADMIN_TOKEN" "$WIDE" >/dev/null
L1="$(run "$VEL_URL/v1/chat/completions" 1 "$N1" "$AUTH")"
L32="$(run "$VEL_URL/v1/chat/completions" 32 "$N32" "$AUTH")"
# The limits lifted, the plain path again: the rate limits are judged against
# this run, next to it in time and on a database as full (every request is
# recorded as a task, so later runs write to larger tables).
api PUT "$VEL_URL/api/organizations/$ORG_ID/rate-limits" "$ADMIN_TOKEN" '{}' >/dev/null
api PUT "$VEL_URL/api/api-keys/$KEY_ID/rate-limits" "$ADMIN_TOKEN" '{}' >/dev/null
A1="$(run "$VEL_URL/v1/chat/completions" 1 "$N1" "$AUTH")"
A32="$(run "$VEL_URL/v1/chat/completions" 32 "$N32" "$AUTH")"
HWM="$(proc_kib "$VEL_PID" VmHWM)"
RSS="$(proc_kib "$VEL_PID" VmRSS)"

orow() { # LABEL CONCURRENCY OHA_JSON
    jq -r --arg l "$1" --arg c "$2" '
        [$l, $c, (((.statusCodeDistribution | to_entries | map(select(.key | startswith("2")) | .value) | add // 0) / ([.statusCodeDistribution[]] | add // 1)) * 100 | round | tostring) + " %",
         (.latencyPercentiles.p50 * 1e6 | round | tostring),
         (.latencyPercentiles.p99 * 1e6 | round | tostring),
         (.summary.requestsPerSec | round | tostring)] | "| " + join(" | ") + " |"' <<<"$3"
}
oadded() { # THROUGH DIRECT PERCENTILE: microseconds added at that percentile
    jq -rn --argjson t "$1" --argjson d "$2" --arg p "$3" \
        '(($t.latencyPercentiles[$p] - $d.latencyPercentiles[$p]) * 1e6) | round'
}
oshare() { # A B: A's throughput as a percentage of B's
    jq -rn --argjson a "$1" --argjson b "$2" '$a.summary.requestsPerSec / $b.summary.requestsPerSec * 1000 | round / 10'
}
row() { # LABEL CONCURRENCY REPORT
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$(field "$3" count)" \
        "$(field "$3" p50_us)" "$(field "$3" p99_us)" "$(field "$3" requests_per_sec)"
}
delta() { # KEY
    jq -rn --argjson v "$V1" --argjson d "$D1" --arg k "$1" '($v[$k] - $d[$k]) * 10 | round / 10'
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "Machine: $(machine); vel on $DB; $("$OHA" --version); $("$NGINX" -v 2>&1)"
echo
echo "oha, ${SECS} s per row:"
echo
echo "| path | concurrency | 2xx | p50 µs | p99 µs | req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
orow "mock upstream, direct" 1 "$OD1"
orow "nginx → mock (the floor)" 1 "$ON1"
orow "vel gateway → mock" 1 "$OV1"
orow "mock upstream, direct" 32 "$OD32"
orow "nginx → mock (the floor)" 32 "$ON32"
orow "vel gateway → mock" 32 "$OV32"
orow "streamed: mock upstream, direct" 1 "$SD1"
orow "streamed: nginx → mock" 1 "$SN1"
orow "streamed: vel gateway → mock" 1 "$SV1"
orow "streamed: mock upstream, direct" 32 "$SD32"
orow "streamed: nginx → mock" 32 "$SN32"
orow "streamed: vel gateway → mock" 32 "$SV32"
echo
echo "Added at concurrency 1 (oha): vel p50 $(oadded "$OV1" "$OD1" p50) µs, p99 $(oadded "$OV1" "$OD1" p99) µs;" \
    "nginx p50 $(oadded "$ON1" "$OD1" p50) µs, p99 $(oadded "$ON1" "$OD1" p99) µs;" \
    "streamed: vel p50 $(oadded "$SV1" "$SD1" p50) µs, nginx p50 $(oadded "$SN1" "$SD1" p50) µs"
echo "Throughput at concurrency 32 (oha): vel $(oshare "$OV32" "$ON32") % of nginx's; streamed $(oshare "$SV32" "$SN32") %"
echo
echo "vel-bench (the project's load generator; the same plain request):"
echo
echo "| path | concurrency | requests | p50 µs | p99 µs | req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
row "mock upstream, direct" 1 "$D1"
row "through vel" 1 "$V1"
row "mock upstream, direct" 32 "$D32"
row "through vel" 32 "$V32"
row "through vel, hard budget" 1 "$B1"
row "through vel, hard budget" 32 "$B32"
row "through vel, rate limits" 1 "$L1"
row "through vel, rate limits" 32 "$L32"
row "through vel, again (limits lifted)" 1 "$A1"
row "through vel, again (limits lifted)" 32 "$A32"
row "vel \`GET /v1/models\` (no upstream call)" 1 "$M1"
echo
echo "Added by vel at concurrency 1 (vel-bench): p50 $(delta p50_us) µs, p99 $(delta p99_us) µs"
echo "Added by the budget check at concurrency 1: p50 $(jq -rn --argjson b "$B1" --argjson v "$V1" '($b.p50_us - $v.p50_us) * 10 | round / 10') µs;" \
    "throughput at concurrency 32 with it: $(jq -rn --argjson b "$B32" --argjson v "$V32" '$b.requests_per_sec / $v.requests_per_sec * 1000 | round / 10') % of without;" \
    "spend recorded against it: \$$SPENT"
echo "Added by the rate limits at concurrency 1: p50 $(jq -rn --argjson l "$L1" --argjson v "$A1" '($l.p50_us - $v.p50_us) * 10 | round / 10') µs;" \
    "throughput at concurrency 32 with them: $(jq -rn --argjson l "$L32" --argjson v "$A32" '$l.requests_per_sec / $v.requests_per_sec * 1000 | round / 10') % of without (both against the run after them, limits lifted)"
echo "vel resident memory: VmRSS $(mib "$RSS_BEFORE") MiB before, $(mib "$RSS_OHA") MiB after the oha runs, $(mib "$RSS") MiB at the end; VmHWM $(mib "$HWM") MiB"
