#!/usr/bin/env bash
# Batches: throughput of one large batch, and a neighbour's wait while it
# runs.
#
# 1. Organization B submits a batch of SIZE quick tasks (the offline
#    `mock` provider's `echo` model) with its default concurrency (20);
#    throughput is SIZE over the batch's own `created_at` → `finished_at`.
# 2. Organization A submits one quick task at a time and waits for it,
#    first with the server idle, then while B runs a second batch, of
#    LOAD × SIZE tasks (long enough to outlast A's samples): each sample is
#    the server's own queue wait (`created_at` → `started_at`) and submit →
#    completed. The row shows how much of B's batch was still to run when
#    A's phase ended (more than zero: A was measured under the load
#    throughout).
#
# Usage: bench/batches.sh [sqlite|postgres]   (default postgres)
# Environment: SIZE (tasks per batch, default 10000), N (A's samples per
# phase, default 100), WARMUP (default 5), LOAD (default 3), WORKERS
# (VEL_TASK_WORKERS, default 32: the batch's 20 and room for others),
# BENCH_NO_BUILD=1 to skip the release build.
# Requires: curl, jq, and for PostgreSQL psql and a server on 127.0.0.1:5432
# (trust auth, user postgres); a fresh database is created and dropped.
set -euo pipefail
shopt -s inherit_errexit
source "$(dirname "$0")/lib.sh"

DB="${1:-postgres}"
SIZE="${SIZE:-10000}"
N="${N:-100}"
WARMUP="${WARMUP:-5}"
WORKERS="${WORKERS:-32}"
LOAD="${LOAD:-3}"
case "$DB" in
    sqlite | postgres) ;;
    *) die "usage: $0 [sqlite|postgres]" ;;
esac

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
start_neighbours "$DB" "$WORKERS" batcher VEL_BATCH_MAX_TASKS="$((SIZE * LOAD))"
work=$WORK
BATCHER=$BUSY

# The JSON Lines uploads: SIZE quick tasks, and LOAD × SIZE.
lines() {
    seq 1 "$1" | jq -c '{description: "row \(.)", task_type: "light", prompt: "row \(.)",
        cache: false, parameters: {model: "mock/echo"}, custom_id: "row-\(.)"}'
}
lines "$SIZE" >"$work/batch.jsonl"
lines "$((SIZE * LOAD))" >"$work/load.jsonl"

# submit_batch FILE: B's batch of FILE's tasks; prints its id.
submit_batch() {
    curl -sS --fail-with-body -X POST -H "authorization: Bearer $BATCHER" \
        -H 'content-type: application/x-ndjson' --data-binary "@$1" \
        "$VEL_URL/api/batches?description=bench" | jq -er .id
}

# batch ID: the batch as the API shows it.
batch() {
    api GET "$VEL_URL/api/batches/$1" "$BATCHER"
}

# wait_batch ID: until the batch has ended; prints it.
wait_batch() {
    local b
    for _ in $(seq 1 36000); do
        b="$(batch "$1")"
        [ "$(jq -r .status <<<"$b")" != running ] && { echo "$b"; return 0; }
        sleep 0.1
    done
    die "batch $1 did not end within an hour"
}

# phase LABEL: N samples of A's quick task (after WARMUP unmeasured ones);
# prints the row.
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
    local left="—"
    [ -n "${2:-}" ] && left="$(batch "$2" | jq -r '"\(.total - .ended) of \(.total)"')"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$N" \
        "$(percentile 50 "$work/$label.queue")" "$(percentile 95 "$work/$label.queue")" \
        "$(percentile 50 "$work/$label.total")" "$(percentile 95 "$work/$label.total")" "$left"
}

log "throughput: one batch of $SIZE"
id="$(submit_batch "$work/batch.jsonl")"
done_batch="$(wait_batch "$id")"
throughput="$(jq -r "$JQ_MS"'
    ((.finished_at | ms) - (.created_at | ms)) as $d
    | "\(.counts.completed) completed, \(.counts.failed) failed in \($d / 1000) s: \(.total * 1000 / $d | floor) tasks/s"' \
    <<<"$done_batch")"
[ "$(jq -r .counts.completed <<<"$done_batch")" = "$SIZE" ] ||
    die "not every task completed: $done_batch"

log "idle: $N samples"
ROWS=("$(phase idle)")
log "batch: $N samples while B runs a batch of $((SIZE * LOAD))"
id="$(submit_batch "$work/load.jsonl")"
ROWS+=("$(phase batch "$id")")
wait_batch "$id" >/dev/null

echo
echo "Machine: $(machine); vel on $DB, $WORKERS workers"
echo
echo "Throughput: $throughput"
echo
echo "| A's phase | samples | queue wait p50 ms | p95 ms | submit → completed p50 ms | p95 ms | B's batch left at the end |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
