#!/usr/bin/env bash
# What one tenant's attack costs another: a well-behaved organization sends
# gateway requests (`vel-bench http`, concurrency 4, the built-in
# `openai-compatible` plugin to the mock upstream) first alone, then while
# another organization runs each attack with `oha` for the same time:
#   - hog:   its own provider (`plugins/hostile/host-memory`) fills host
#            memory with header fields (stopped at its memory limit);
#   - flood: its own provider (`plugins/hostile/empty-deltas`) streams empty
#            deltas (stopped at its delta limit);
#   - hang:  512 concurrent requests to an upstream that answers after 30 s
#            (held to its gateway share, 429 beyond it).
# Prints one Markdown row per phase: the neighbour's success, p50, p99 and
# req/s, and the statuses the attacker got.
#
# Usage: bench/neighbours.sh [sqlite|postgres]
# Environment: N (neighbour requests per phase, default 2000), OHA (default
# `oha`; `cargo install oha`), BENCH_NO_BUILD=1 to skip the release build.
# Requires: curl, jq, oha, and the hostile components the test build makes
# (`cargo test --no-run` puts them in target/wasm-plugins/).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
N="${N:-2000}"
WASM="${CARGO_TARGET_DIR:-$ROOT/target}/wasm-plugins/wasm32-wasip2/wasm"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
need_oha
for c in host_memory empty_deltas; do
    [ -f "$WASM/vel_hostile_$c.wasm" ] || die "no $WASM/vel_hostile_$c.wasm: run cargo test --no-run first"
done

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work=$TMP_DIR
start_gateway "$work" "$DB"
ADMIN="$(login "$VEL_URL")"

log "starting an upstream that answers after 30 s"
start_server slow "$work/slow.out" "$work/slow.err" \
    "$BIN/vel-mock-upstream" --listen 127.0.0.1:0 --threads 1 --no-record --latency-ms 30000
SLOW_URL=$STARTED_URL

# hostile_tenant NAME COMPONENT: an organization whose only integration
# runs hostile provider COMPONENT (`hostile-<component>` 0.1.0); prints a
# gateway key of it.
hostile_tenant() {
    local owner plugin="hostile-${2//_/-}"
    owner="$(tenant "$VEL_URL" "$ADMIN" "$1")"
    curl -sSf -o /dev/null -H "authorization: Bearer $owner" \
        -F "component=@$WASM/vel_hostile_$2.wasm;filename=plugin.wasm" \
        -F "manifest=name = \"$plugin\"
version = \"0.1.0\"
kind = \"provider\"
description = \"bench\"" "$VEL_URL/api/plugins?activate=true" || die "upload of $plugin refused"
    api POST "$VEL_URL/api/integrations" "$owner" "$(jq -nc --arg p "$plugin" \
        '{name:"hostile", provider:"mock", plugin:$p, default_model:"gpt-4o-mini"}')" >/dev/null
    api POST "$VEL_URL/api/api-keys" "$owner" '{"name":"attack","role":"task_executor"}' | jq -er .key
}

log "setting up the attackers"
HOG_KEY="$(hostile_tenant evil-hog host_memory)"
FLOOD_KEY="$(hostile_tenant evil-flood empty_deltas)"
HANG_OWNER="$(tenant "$VEL_URL" "$ADMIN" evil-hang)"
api POST "$VEL_URL/api/integrations" "$HANG_OWNER" "$(jq -nc --arg u "$SLOW_URL/v1" '{
    name: "slow", provider: "openai", plugin: "openai-compatible", base_url: $u,
    api_key: "sk-test", default_model: "gpt-4o-mini", timeout_ms: 60000}')" >/dev/null
HANG_KEY="$(api POST "$VEL_URL/api/api-keys" "$HANG_OWNER" '{"name":"attack","role":"task_executor"}' | jq -er .key)"
api POST "$VEL_URL/v1/chat/completions" "$KEY" "$BODY" >/dev/null

# neighbour: the well-behaved organization's run; its JSON report.
neighbour() {
    "$BIN/vel-bench" http --json --url "$VEL_URL/v1/chat/completions" -c 4 -n "$N" \
        --warmup 100 --body "$BODY" -H "authorization: Bearer $KEY" || true
}

# phase LABEL [KEY CONCURRENCY BODY]: the neighbour's run, alone or while
# the attacker sends with oha until it ends; prints the row.
phase() {
    local label=$1 report statuses="—"
    if [ $# -gt 1 ]; then
        log "$label: attacking"
        "$OHA" --no-tui --output-format json -z 600s -c "$3" -m POST -t 90s \
            -H 'content-type: application/json' -H "authorization: Bearer $2" -d "$4" \
            "$VEL_URL/v1/chat/completions" >"$work/$label.oha" 2>/dev/null &
        local attacker=$!
        BENCH_PIDS+=("$attacker")
        # Let the attack reach full strength before measuring.
        sleep 3
        report="$(neighbour)"
        kill -INT "$attacker" 2>/dev/null || true
        wait "$attacker" 2>/dev/null || true
        statuses="$(jq -r '.statusCodeDistribution // {} | to_entries | map("\(.key): \(.value)") | join(", ")' \
            "$work/$label.oha" 2>/dev/null || echo "?")"
    else
        log "$label"
        report="$(neighbour)"
    fi
    jq -r --arg l "$label" --arg s "$statuses" --argjson n "$N" '
        [$l, ((.ok - .warmup) | tostring) + " / " + ($n | tostring),
         (.p50_us | round | tostring), (.p99_us | round | tostring),
         (.requests_per_sec | round | tostring), $s] | "| " + join(" | ") + " |"' <<<"$report"
}

FLOOD_BODY='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"flood"}]}'
ROWS=("$(phase alone)")
ROWS+=("$(phase hog "$HOG_KEY" 4 "$BODY")")
ROWS+=("$(phase flood "$FLOOD_KEY" 4 "$FLOOD_BODY")")
ROWS+=("$(phase hang "$HANG_KEY" 512 "$BODY")")

echo
echo "Machine: $(machine); vel on $DB; attacker: $("$OHA" --version)"
echo
echo "| attack | neighbour's answers (200) | p50 µs | p99 µs | req/s | attacker's statuses |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo
echo "vel resident memory after the run: VmRSS $(proc_kib "$VEL_PID" VmRSS) KiB, VmHWM $(proc_kib "$VEL_PID" VmHWM) KiB"
