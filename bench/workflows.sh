#!/usr/bin/env bash
# Workflow engine: on SQLite and/or PostgreSQL, with the built-in offline
# `mock` provider answering (no network), five-step workflows (task → choice
# decided by `text-match` → task → task → succeed). Reports
#   - engine overhead per step, with one workflow at a time (SEQ of them):
#     from one task step's task finishing to the next task step's first
#     provider call. That span holds the choice between them, the wake-up,
#     the next step's start and its task's claim. p50 and p99 in ms (the
#     API's times have millisecond resolution);
#   - the same steps in three parts, means in ms: the task finishing to
#     the next task's insert (the task's end and the workflow's moves),
#     that insert to the next task's claim, and the claim to its provider
#     call;
#   - the choice's condition evaluation inside the engine (its recorded
#     `elapsed_us`) over the same workflows, p50 and p99 in µs;
#   - throughput: N workflows started over 8 connections, timed until every
#     one is completed, as steps per second (5 steps per workflow);
#   - a parallel group of five branches of one 200 ms `slow` step, side by
#     side (max_concurrency 5) and the same five one after another
#     (max_concurrency 1), PAR groups each, one at a time: the parallel
#     step's run duration (its start to its end, gathering included), p50
#     and max in ms.
# Prints Markdown tables.
#
# Usage: bench/workflows.sh [sqlite|postgres|both]   (default both)
# Environment: N (workflows, default 1000), SEQ (default 30), PAR (default 20),
# BENCH_THREADS (load generator threads, default 1), BENCH_NO_BUILD=1 to
# skip `cargo build --release`.
# Requires: curl, jq, and for PostgreSQL psql and a server on 127.0.0.1:5432.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# wait_workflow BASE TOKEN ID: wait on the workflow's event stream, which
# ends after its terminal status, then print that status. (Polling its
# status in a loop of curl and jq would take a core from the server.)
wait_workflow() {
    curl -sS -N --max-time 300 -o /dev/null -H "authorization: Bearer $2" \
        "$1/api/workflows/$3/stream" || die "the stream of workflow $3 failed"
    api GET "$1/api/workflows/$3" "$2" | jq -r .status
}

WHICH="${1:-both}"
N="${N:-1000}"
SEQ="${SEQ:-30}"
PAR="${PAR:-20}"
THREADS="${BENCH_THREADS:-1}"
case "$WHICH" in
    sqlite) BACKENDS=(sqlite) ;;
    postgres) BACKENDS=(postgres) ;;
    both) BACKENDS=(sqlite postgres) ;;
    *) die "usage: $0 [sqlite|postgres|both]" ;;
esac

# The workflow; {{n}} (vel-bench's request number) makes every prompt differ.
BODY="$(jq -nc '{
  definition: {
    name: "bench",
    start: "draft",
    steps: {
      draft:  {kind: "task", prompt: "draft {{n}}", model: "mock/echo", next: "check"},
      check:  {kind: "choice", rules: [{condition: "text-match",
                 args: {mode: "contains", pattern: "draft"}, next: "refine"}], default: "done"},
      refine: {kind: "task", prompt: "refine {{steps.draft.output}}", model: "mock/echo", next: "polish"},
      polish: {kind: "task", prompt: "polish {{steps.refine.output}}", model: "mock/echo", next: "done"},
      done:   {kind: "succeed"}
    }
  },
  input: {}
}')"

# A parallel group of five branches, each one 200 ms `slow` task step,
# MAX of them at once.
group_body() { # MAX
    jq -nc --argjson max "$1" '{
      definition: {
        name: "fan",
        start: "fan",
        steps: {
          fan: {kind: "parallel", max_concurrency: $max, on_failure: "abort",
                branches: [range(5) | {start: "b\(.)", steps: {("b\(.)"): {
                  kind: "task", prompt: "slow", model: "mock/slow", metadata: {"delay-ms": 200}}}}]}
        }
      },
      input: {}
    }'
}

bench() {
    local out
    out="$("$BIN/vel-bench" --threads "$THREADS" "$@")" || die "vel-bench $1 failed: $out"
    echo "$out"
}

# percentile P: the P-th percentile of the numbers on stdin.
percentile() {
    sort -n | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "-" } else { i = int((NR - 1) * p / 100) + 1; print v[i] } }'
}

ROWS=()
PART_ROWS=()
GROUP_ROWS=()

measure() { # BACKEND
    local backend=$1
    new_tmp_dir
    local data=$TMP_DIR
    local env=(VEL_MAX_UNFINISHED_TASKS=100000 VEL_WORKFLOW_WORKERS=8)
    if [ "$backend" = postgres ]; then
        create_pg_db
        env+=(DATABASE_URL="$PG_URL")
    fi
    log "$backend: starting vel"
    start_vel "$data" "${env[@]}"
    local base=$VEL_URL token auth
    token="$(login "$base")"
    auth="authorization: Bearer $token"
    if ! api GET "$base/api/integrations" "$token" | jq -e '.items[] | select(.name == "mock")' >/dev/null; then
        api POST "$base/api/integrations" "$token" '{"name":"mock","provider":"mock","plugin":"mock"}' >/dev/null
    fi

    log "$backend: $SEQ workflows one at a time"
    : >"$data/seq-ids"
    local i id status
    for i in $(seq 1 "$SEQ"); do
        id="$(api POST "$base/api/workflows" "$token" "${BODY//\{\{n\}\}/seq $i}" | jq -r .id)"
        echo "$id" >>"$data/seq-ids"
        status="$(wait_workflow "$base" "$token" "$id")"
        [ "$status" = completed ] || die "$backend: workflow $id ended $status"
    done
    : >"$data/gaps"
    : >"$data/parts"
    : >"$data/evals"
    for id in $(cat "$data/seq-ids"); do
        local wf
        wf="$(api GET "$base/api/workflows/$id" "$token")"
        jq -r '.steps[] | select(.kind == "choice") | .evaluations[].elapsed_us' <<<"$wf" >>"$data/evals"
        local tasks=() t
        mapfile -t tasks < <(jq -r '.steps[] | select(.kind == "task") | .task_id' <<<"$wf")
        local prev_end="" times created claimed called ended
        for t in "${tasks[@]}"; do
            # created, claimed, first provider call, finished: ms since the epoch.
            times="$(api GET "$base/api/tasks/$t" "$token" | jq -r "$JQ_MS"'
                [.created_at, .started_at, .attempts[0].started_at, .finished_at] | map(ms) | join(" ")')"
            read -r created claimed called ended <<<"$times"
            if [ -n "$prev_end" ]; then
                echo "$((called - prev_end))" >>"$data/gaps"
                echo "$((created - prev_end)) $((claimed - created)) $((called - claimed))" >>"$data/parts"
            fi
            prev_end=$ended
        done
    done
    local part
    PART_ROWS+=("$(printf '| %s |' "$backend"; for part in 1 2 3; do
        printf ' %s |' "$(awk -v f="$part" '{ s += $f } END { if (NR) printf "%.1f", s / NR; else print "-" }' "$data/parts")"
    done)")

    log "$backend: $PAR parallel groups of five 200 ms branches, side by side and one at a time"
    local max body
    for max in 5 1; do
        : >"$data/group-$max"
        body="$(group_body "$max")"
        for i in $(seq 1 "$PAR"); do
            id="$(api POST "$base/api/workflows" "$token" "$body" | jq -r .id)"
            status="$(wait_workflow "$base" "$token" "$id")"
            [ "$status" = completed ] || die "$backend: workflow $id ended $status"
            api GET "$base/api/workflows/$id" "$token" \
                | jq -r '.steps[] | select(.kind == "parallel") | .duration_ms' >>"$data/group-$max"
        done
    done
    GROUP_ROWS+=("$(printf '| %s | %s | %s | %s | %s |' "$backend" \
        "$(percentile 50 <"$data/group-5")" "$(percentile 100 <"$data/group-5")" \
        "$(percentile 50 <"$data/group-1")" "$(percentile 100 <"$data/group-1")")")

    log "$backend: $N five-step workflows over 8 connections, until all completed"
    local started run
    started="$(date +%s%3N)"
    bench http --json --url "$base/api/workflows" -H "$auth" --body "$BODY" \
        -c 8 -n "$N" --expect-status 201 --ids-out "$data/ids" >"$data/submit.json"
    run="$(bench wait --json --url-template "$base/api/workflows/{id}" --ids-file "$data/ids" \
        -H "$auth" --fail-on failed --fail-on cancelled --started-at-ms "$started")"
    local elapsed steps_per_s
    elapsed="$(field "$run" elapsed_s)"
    steps_per_s="$(jq -n --argjson n "$N" --argjson e "$elapsed" '($n * 5 / $e) | round')"
    ROWS+=("$(printf '| %s | %s | %s | %s | %s | %s | %s s | %s |' "$backend" \
        "$(percentile 50 <"$data/gaps")" "$(percentile 99 <"$data/gaps")" \
        "$(percentile 50 <"$data/evals")" "$(percentile 99 <"$data/evals")" \
        "$N" "$elapsed" "$steps_per_s")")
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
echo "| database | step-to-step p50 ms | p99 ms | condition p50 µs | p99 µs | workflows | all completed in | steps/s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo
echo "Where the one-at-a-time steps' time went (means in ms, from the API's millisecond times):"
echo
echo "| database | task finished → next task created | created → claimed | claimed → provider call |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${PART_ROWS[@]}"
echo
echo "A parallel group of five branches of a 200 ms \`slow\` step ($PAR groups each, one at a time):"
echo
echo "| database | side by side p50 ms | max ms | one after another p50 ms | max ms |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${GROUP_ROWS[@]}"
