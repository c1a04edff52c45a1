#!/usr/bin/env bash
# Horizontal scaling (docs/scaling.md): two `vel serve` instances on one
# PostgreSQL database, the same secret key, one mock upstream; 1,000
# concurrent gateway requests (`/v1/chat/completions` with one API key),
# half on each instance, each worker on its own keep-alive connection. The
# run fails on any error or unexpected status. Before it, a token, an API
# key and an integration made on one instance are used on the other; after
# it, the completed gateway requests are read from each instance's /metrics.
# Prints a Markdown table.
#
# Usage: bench/scale.sh
# Environment: CONCURRENCY (in total, split over the two instances, default
# 1000), REQUESTS (in total, default 20000), WARMUP (per instance, default
# 1000), BENCH_THREADS (load generator threads per instance, default 1),
# BENCH_NO_BUILD=1 to skip `cargo build --release`, BENCH_BIN_DIR to take
# the binaries from another directory (e.g. target/debug for a small check:
# `cargo build -p vel -p vel-mock-upstream -p vel-bench`, then
# `BENCH_NO_BUILD=1 BENCH_BIN_DIR=target/debug CONCURRENCY=100 REQUESTS=1000 bench/scale.sh`).
# Requires: curl, jq, psql and PostgreSQL on 127.0.0.1:5432 (trust auth,
# user postgres; a fresh database is created and dropped).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CONCURRENCY="${CONCURRENCY:-1000}"
REQUESTS="${REQUESTS:-20000}"
WARMUP="${WARMUP:-1000}"
THREADS="${BENCH_THREADS:-1}"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello {{n}}"}]}'
[ $((CONCURRENCY % 2)) -eq 0 ] || die "CONCURRENCY must be even (split over two instances)"
PER_C=$((CONCURRENCY / 2))
PER_N=$((REQUESTS / 2))
[ "$PER_N" -ge "$PER_C" ] || die "REQUESTS must be at least CONCURRENCY"

# Every connection is a file descriptor, on the client and on the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((CONCURRENCY * 2 + 256)) ] ||
    die "open-file limit $(ulimit -n) is too low for $CONCURRENCY connections (ulimit -n)"

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
BIN="${BENCH_BIN_DIR:+$(cd "$BENCH_BIN_DIR" && pwd)}"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
new_tmp_dir
work=$TMP_DIR

SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
# What every instance of a deployment shares: the database and the key
# ring. The per-instance gateway shares are raised so that one API key may
# hold its half of the connections in flight on each instance (the
# defaults, 64 per key and 192 per organization, keep one tenant from
# taking an instance; here one client is the whole load), and each
# instance's connection cap is set above its half.
GATEWAY_ENV=(
    VEL_SECRET_KEY="$SECRET"
    VEL_GATEWAY_IN_FLIGHT_PER_KEY=$((PER_C + 16)) VEL_GATEWAY_IN_FLIGHT_PER_ORG=$((PER_C + 16))
    VEL_MAX_CONNECTIONS=$((PER_C + 64)) VEL_DB_MAX_CONNECTIONS="${VEL_DB_MAX_CONNECTIONS:-10}"
)
# Instance A with the mock upstream, a fresh database, an integration and an API key.
start_gateway "$work" postgres
A_URL=$VEL_URL
log "starting instance B (same database and key)"
mkdir -p "$work/b"
start_vel "$work/b" DATABASE_URL="$PG_URL" VEL_DEMO_MOCK=false "${GATEWAY_ENV[@]}"
B_URL=$VEL_URL

# What one instance wrote the other serves: the token, the key, the integration.
api GET "$B_URL/api/integrations" "$ADMIN_TOKEN" | jq -e '.items | length == 1' >/dev/null ||
    die "instance B does not see the integration created on A"
api POST "$B_URL/v1/chat/completions" "$KEY" "$BODY" >/dev/null

run() { # URL OUT
    "$BIN/vel-bench" --threads "$THREADS" http --json --url "$1/v1/chat/completions" \
        -c "$PER_C" -n "$PER_N" --warmup "$WARMUP" --body "$BODY" \
        -H "authorization: Bearer $KEY" >"$2"
}
log "$CONCURRENCY concurrent requests ($REQUESTS measured, $PER_C connections on each instance)"
STARTED=$(date +%s.%N)
run "$A_URL" "$work/a.json" &
A_LOAD=$!
run "$B_URL" "$work/b.json" &
B_LOAD=$!
A_STATUS=0
B_STATUS=0
wait "$A_LOAD" || A_STATUS=$?
wait "$B_LOAD" || B_STATUS=$?
ELAPSED="$(awk -v s="$STARTED" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')"
A="$(cat "$work/a.json")"
B="$(cat "$work/b.json")"
for r in "$A" "$B"; do
    [ -n "$r" ] || die "a load generator produced no report"
done

# Completed gateway requests as each instance's /metrics counts them (the
# usage recorder counts a request shortly after it ends).
recorded() { # URL
    curl -sS -H "authorization: Bearer $ADMIN_TOKEN" "$1/metrics" |
        awk '/^vel_requests_total\{/ && /source="gateway"/ && /status="completed"/ { s += $NF } END { print s + 0 }'
}
EXPECTED=$((REQUESTS + 2 * WARMUP + 1))
for _ in $(seq 1 100); do
    A_COUNT="$(recorded "$A_URL")"
    B_COUNT="$(recorded "$B_URL")"
    [ $((A_COUNT + B_COUNT)) -ge "$EXPECTED" ] && break
    sleep 0.1
done

row() { # LABEL REPORT
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$2" ok)" \
        "$(jq -c .unexpected <<<"$2")" "$(field "$2" errors)" "$(field "$2" p50_us)" \
        "$(field "$2" p99_us)" "$(field "$2" requests_per_sec)"
}
echo
echo "Machine: $(machine); two instances on one PostgreSQL ($CONCURRENCY connections, $REQUESTS measured requests, $WARMUP warm-up each)"
echo
echo "| instance | 200 (warm-up included) | other statuses | errors | p50 µs | p99 µs | req/s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row "A" "$A"
row "B" "$B"
echo
echo "Wall-clock of both runs: ${ELAPSED} s; completed gateway requests counted in /metrics: $A_COUNT on A + $B_COUNT on B (sent: $EXPECTED, warm-up and the check included)"
[ "$A_STATUS" -eq 0 ] && [ "$B_STATUS" -eq 0 ] || die "some requests failed (see the table)"
echo "No errors: every request answered 200."
