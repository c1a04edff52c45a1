#!/usr/bin/env bash
# Where vel's CPU goes on the gateway path: oha sends the gateway bench's
# chat completion at concurrency C for SECS seconds while `perf record`
# samples vel (cpu-clock, so it works without hardware counters) with DWARF
# call graphs; prints vel's CPU time per request (from /proc/PID/stat), the
# flat profile by shared object and symbol, and the inclusive profile of
# the symbols whose names match FOCUS. perf.data is left in OUT.
#
# Usage: bench/profile_gateway.sh [sqlite|postgres]
# Environment: C (concurrency, default 32), SECS (default 10), OUT (default
# target/profile-gateway), FOCUS (a regular expression, default
# `vel|wasmtime|hyper|tokio|sqlx`), BENCH_NO_BUILD=1 to skip
# `cargo build --release`.
# Requires: curl, jq, perf, oha (installed when missing).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
C="${C:-32}"
SECS="${SECS:-10}"
OUT="${OUT:-$ROOT/target/profile-gateway}"
FOCUS="${FOCUS:-vel|wasmtime|hyper|tokio|sqlx}"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
command -v perf >/dev/null || die "perf not found (Debian's linux-perf)"
need_oha
[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
start_gateway "$TMP_DIR" "$DB"
mkdir -p "$OUT"

AUTH="authorization: Bearer $KEY"
"$OHA" --no-tui -n 2000 -c "$C" -m POST -H 'content-type: application/json' -H "$AUTH" \
    -d "$BODY" "$VEL_URL/v1/chat/completions" >/dev/null
ticks() { awk '{ print $14 + $15 }' "/proc/$VEL_PID/stat"; }
HZ="$(getconf CLK_TCK)"
"$OHA" --no-tui --output-format json -z "$((SECS + 2))s" -c "$C" -m POST \
    -H 'content-type: application/json' -H "$AUTH" -d "$BODY" \
    "$VEL_URL/v1/chat/completions" >"$OUT/oha.json" &
LOAD=$!
BENCH_PIDS+=("$LOAD")
sleep 1
T0="$(ticks)"
perf record -q -e cpu-clock -F 997 --call-graph dwarf,16384 -p "$VEL_PID" -o "$OUT/perf.data" \
    -- sleep "$SECS" 2>"$OUT/perf-record.log"
T1="$(ticks)"
wait "$LOAD"
RPS="$(jq -r '.summary.requestsPerSec' "$OUT/oha.json")"

echo "Machine: $(machine); vel on $DB; concurrency $C"
awk -v t="$((T1 - T0))" -v hz="$HZ" -v s="$SECS" -v r="$RPS" 'BEGIN {
    printf "oha: %.0f req/s; vel CPU: %.2f cores, %.0f µs per request\n", r, t / hz / s, t / hz / s / r * 1e6 }'
echo
echo "Flat profile (self time):"
perf report -i "$OUT/perf.data" --no-children --no-inline --sort dso,sym --stdio --percent-limit 0.7 -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep '%' | head -60
echo
echo "Inclusive time of the symbols matching /$FOCUS/:"
perf report -i "$OUT/perf.data" --children --no-inline --sort sym --stdio --percent-limit 2 -g none 2>/dev/null |
    grep -v '^#' | grep '%' | grep -E "$FOCUS" | head -60
