#!/usr/bin/env bash
# Resident memory under sustained mixed load: for DURATION seconds vel
# serves, all at once, plain gateway requests (oha, concurrency 16), streamed
# gateway requests (oha, concurrency 4), queued tasks submitted through
# `POST /api/tasks` (oha, at most 50 a second over 8 connections) and clients that submit a task and
# follow its Server-Sent Events until it ends (two, one after another).
# Every request goes through the `openai-compatible` plugin to the mock
# upstream. vel's VmRSS is sampled every 10 s; prints the samples' table,
# the peak, the value at the end of the load and 10 s after it. On SQLite
# every sample also reads the database file and its WAL's size, and from
# `/metrics` how long writers waited for SQLite's write gate and held it
# (per writing transaction, over the last 10 s).
#
# Usage: bench/soak.sh [sqlite|postgres]   (vel's database, default sqlite)
# Environment: DURATION (seconds of load, default 600), OHA (installed when
# missing), BENCH_NO_BUILD=1 to skip `cargo build --release`.
# Requires: curl, jq, python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
DURATION="${DURATION:-600}"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}'
TASK_BODY='{"description":"soak","task_type":"light","prompt":"hello","cache":false,"parameters":{"model":"openai/gpt-4o-mini"}}'
need_oha
[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work=$TMP_DIR
# Tasks run as fast as they are submitted; no per-user limit stops the load.
GATEWAY_ENV=(VEL_MAX_UNFINISHED_TASKS=100000)
start_gateway "$work" "$DB"
api POST "$VEL_URL/v1/chat/completions" "$KEY" "$BODY" >/dev/null
api POST "$VEL_URL/api/tasks" "$KEY" "$TASK_BODY" >/dev/null

FOLLOW='
import http.client, json, sys, time, urllib.parse
url, key, body, until = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
u = urllib.parse.urlparse(url)
h = {"content-type": "application/json", "authorization": "Bearer " + key}
done = 0
while time.time() < until:
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("POST", "/api/tasks", body, h)
    r = c.getresponse()
    task = json.loads(r.read())
    if r.status != 202 and r.status != 201:
        sys.exit(f"submit: {r.status} {task}")
    c.request("GET", "/api/tasks/" + task["id"] + "/stream", headers=h)
    r = c.getresponse()
    while r.read(4096):
        pass
    c.close()
    done += 1
print(done)
'

log "mixed load for ${DURATION}s"
until=$(($(date +%s) + DURATION))
RSS_START="$(proc_kib "$VEL_PID" VmRSS)"
AUTH="authorization: Bearer $KEY"
"$OHA" --no-tui --output-format json -z "${DURATION}s" -c 16 -m POST -H 'content-type: application/json' \
    -H "$AUTH" -d "$BODY" "$VEL_URL/v1/chat/completions" >"$work/plain.json" &
P1=$!
"$OHA" --no-tui --output-format json -z "${DURATION}s" -c 4 -m POST -H 'content-type: application/json' \
    -H "$AUTH" -d "$STREAM_BODY" "$VEL_URL/v1/chat/completions" >"$work/stream.json" &
P2=$!
"$OHA" --no-tui --output-format json -z "${DURATION}s" -c 8 -q 50 -m POST -H 'content-type: application/json' \
    -H "$AUTH" -d "$TASK_BODY" "$VEL_URL/api/tasks" >"$work/tasks.json" &
P3=$!
python3 -c "$FOLLOW" "$VEL_URL" "$KEY" "$TASK_BODY" "$until" >"$work/follow1.txt" &
P4=$!
python3 -c "$FOLLOW" "$VEL_URL" "$KEY" "$TASK_BODY" "$until" >"$work/follow2.txt" &
P5=$!
BENCH_PIDS+=("$P1" "$P2" "$P3" "$P4" "$P5")

: >"$work/rss.txt"
: >"$work/gate.txt"
# gate_sample: seconds since the start, database and WAL MiB, and the
# write gate's counters (writers, wait and hold sums in seconds).
gate_sample() {
    local m
    m="$(curl -sS -H "authorization: Bearer $ADMIN_TOKEN" "$VEL_URL/metrics")"
    awk -v t="$(($(date +%s) - start))" \
        -v db="$(stat -c %s "$work"/vel/*.db 2>/dev/null | head -1)" \
        -v wal="$(stat -c %s "$work"/vel/*.db-wal 2>/dev/null | head -1)" '
        $1 == "vel_db_write_gate_wait_seconds_count" { n = $2 }
        $1 == "vel_db_write_gate_wait_seconds_sum" { w = $2 }
        $1 == "vel_db_write_gate_hold_seconds_sum" { h = $2 }
        END { printf "%s %.1f %.1f %d %f %f\n", t, db / 1048576, wal / 1048576, n, w, h }' <<<"$m"
}
start=$(date +%s)
[ "$DB" = sqlite ] && gate_sample >>"$work/gate.txt"
while [ "$(date +%s)" -lt "$until" ]; do
    sleep 10
    echo "$(($(date +%s) - start)) $(proc_kib "$VEL_PID" VmRSS)" >>"$work/rss.txt"
    [ "$DB" = sqlite ] && gate_sample >>"$work/gate.txt"
done
for p in "$P1" "$P2" "$P3" "$P4" "$P5"; do wait "$p" || die "a load generator failed"; done
RSS_END="$(proc_kib "$VEL_PID" VmRSS)"
sleep 10
RSS_AFTER="$(proc_kib "$VEL_PID" VmRSS)"
HWM="$(proc_kib "$VEL_PID" VmHWM)"

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
summary() { # LABEL OHA_JSON
    jq -r --arg l "$1" '[$l, (.summary.requestsPerSec | round | tostring),
        (((.statusCodeDistribution | to_entries | map(select(.key | startswith("2")) | .value) | add // 0) / ([.statusCodeDistribution[]] | add // 1)) * 100 | round | tostring) + " %",
        (.latencyPercentiles.p50 * 1e6 | round | tostring),
        (.latencyPercentiles.p99 * 1e6 | round | tostring)] | "| " + join(" | ") + " |"' "$2"
}
echo
echo "Machine: $(machine); vel on $DB; ${DURATION}s of mixed load; $("$OHA" --version)"
echo
echo "| load | req/s | 2xx | p50 µs | p99 µs |"
echo "| --- | --- | --- | --- | --- |"
summary "gateway, plain, c=16" "$work/plain.json"
summary "gateway, streamed, c=4" "$work/stream.json"
summary "tasks submitted, at most 50/s" "$work/tasks.json"
echo
echo "Tasks followed to their end over SSE: $(($(cat "$work/follow1.txt") + $(cat "$work/follow2.txt")))"
echo
echo "VmRSS (MiB) every 10 s: $(awk '{ printf "%s%.0f", (NR > 1 ? ", " : ""), $2 / 1024 }' "$work/rss.txt")"
echo "VmRSS: $(mib "$RSS_START") MiB at the start, $(mib "$RSS_END") MiB at the end of the load, $(mib "$RSS_AFTER") MiB 10 s later; VmHWM $(mib "$HWM") MiB"
if [ "$DB" = sqlite ]; then
    echo
    echo "SQLite every 10 s: the file and its WAL, and per writing transaction the wait for the write gate and the hold"
    echo
    echo "| s | db MiB | WAL MiB | writers | wait ms | hold ms |"
    echo "| --- | --- | --- | --- | --- | --- |"
    awk 'NR > 1 && $4 > n { printf "| %s | %s | %s | %d | %.1f | %.2f |\n", $1, $2, $3, $4 - n,
            ($5 - w) * 1000 / ($4 - n), ($6 - h) * 1000 / ($4 - n) }
         { n = $4; w = $5; h = $6 }' "$work/gate.txt"
fi
