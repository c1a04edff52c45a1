#!/usr/bin/env bash
# A neighbour's task wait under a task flood: organization A submits one
# quick task at a time (the offline `mock` provider's `echo` model) and
# waits for it, first alone, then while organization B has flooded the
# queue with slow tasks (`mock/slow`, DELAY_MS each) — far more than the
# workers can run. Claims go to the organization with the fewest running
# tasks first, so A's task should take the next free worker instead of
# waiting behind B's backlog.
#
# Each sample's latency is the server's own: the task's `created_at` to
# its `started_at` (queue wait) and to its `finished_at` (submit to
# completed), in milliseconds. Prints one Markdown row per phase with p50,
# p99 and the maximum, and for the flood how many of B's tasks were still
# pending when the phase ended (more than zero: the flood lasted).
#
# Usage: bench/fairness.sh [sqlite|postgres]   (default sqlite)
# Environment: N (samples per phase, default 100), WARMUP (default 5),
# FLOOD (B's tasks, default 1000), DELAY_MS (each of B's tasks, default
# 1000), WORKERS (VEL_TASK_WORKERS, default 16), BENCH_NO_BUILD=1 to skip
# the release build.
# Requires: curl, jq, and for PostgreSQL psql and a server on 127.0.0.1:5432
# (trust auth, user postgres); a fresh database is created and dropped.
set -euo pipefail
# A failure inside `$(...)` (a phase's row) ends the script too.
shopt -s inherit_errexit
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
N="${N:-100}"
WARMUP="${WARMUP:-5}"
FLOOD="${FLOOD:-1000}"
DELAY_MS="${DELAY_MS:-1000}"
WORKERS="${WORKERS:-16}"
case "$DB" in
    sqlite | postgres) ;;
    *) die "usage: $0 [sqlite|postgres]" ;;
esac

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
start_neighbours "$DB" "$WORKERS" flooder VEL_MAX_UNFINISHED_TASKS=1000000
work=$WORK
FLOODER=$BUSY

# count TOKEN STATUS: how many of the organization's tasks have STATUS.
count() {
    api GET "$VEL_URL/api/tasks?status=$2&limit=1" "$1" | jq -er .total
}

# phase LABEL: N samples (after WARMUP unmeasured ones); prints the row.
phase() {
    local label=$1 i times
    : >"$work/$label.queue"
    : >"$work/$label.total"
    for i in $(seq 1 "$((WARMUP + N))"); do
        times="$(quick_task "$VEL_URL" "$QUIET" "$label $i")"
        if [ "$i" -gt "$WARMUP" ]; then
            echo "${times% *}" >>"$work/$label.queue"
            echo "${times#* }" >>"$work/$label.total"
        fi
    done
    local pending="—"
    [ "$label" = flood ] && pending="$(count "$FLOODER" pending) of $FLOOD"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$N" \
        "$(percentile 50 "$work/$label.queue")" "$(percentile 99 "$work/$label.queue")" \
        "$(percentile 50 "$work/$label.total")" "$(percentile 99 "$work/$label.total")" \
        "$(percentile 100 "$work/$label.total")" "$pending"
}

log "alone: $N samples"
ROWS=("$(phase alone)")

log "flood: organization B submits $FLOOD tasks of $DELAY_MS ms"
"$BIN/vel-bench" http --json --url "$VEL_URL/api/tasks" -c 8 -n "$FLOOD" --expect-status 201 \
    -H "authorization: Bearer $FLOODER" \
    --body "$(jq -nc --argjson d "$DELAY_MS" '{description: "flood", task_type: "light",
        prompt: "flood {{n}}", parameters: {model: "mock/slow"}, metadata: {"delay-ms": $d}}')" \
    >"$work/flood.json" || die "the flood was refused: $(cat "$work/flood.json")"
# Every worker busy with B's tasks before A's first sample.
for _ in $(seq 1 600); do
    [ "$(count "$FLOODER" in_progress)" -ge "$WORKERS" ] && break
    sleep 0.05
done
[ "$(count "$FLOODER" in_progress)" -ge "$WORKERS" ] || die "the flood never occupied every worker"
log "flood: $N samples"
ROWS+=("$(phase flood)")
[ "$(count "$FLOODER" pending)" -gt 0 ] ||
    log "warning: B's backlog ran out during the phase; raise FLOOD or DELAY_MS"

echo
echo "Machine: $(machine); vel on $DB, $WORKERS workers; B's tasks: $FLOOD × $DELAY_MS ms"
echo
echo "| phase | A's samples | queue wait p50 ms | p99 ms | submit → completed p50 ms | p99 ms | max ms | B's tasks pending at the end |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
