#!/usr/bin/env bash
# Task history export: the memory and time of `GET /api/tasks?format=csv`
# (and `format=jsonl`) over N tasks, vel on SQLite. One task is run through
# the built-in `mock` provider, then copied N-1 times straight in the
# database (the export reads rows; how they got there does not matter).
# Prints the rows exported, the time, and vel's resident memory before and
# its peak (VmHWM) after each export: an export streams page by page, so its
# peak should not grow with N.
#
# Usage: bench/export.sh
# Environment: N (tasks, default 100000), BENCH_NO_BUILD=1 to skip
# `cargo build --release`.
# Requires: curl, jq, sqlite3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N="${N:-100000}"
[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work="$TMP_DIR"
start_vel "$work"
token="$(login "$VEL_URL")"
id="$(api POST "$VEL_URL/api/tasks" "$token" \
    '{"description":"export, \"quoted\"","prompt":"hello","task_type":"light","parameters":{"model":"mock/echo"}}' |
    jq -er .id)"
for _ in $(seq 1 100); do
    status="$(api GET "$VEL_URL/api/tasks/$id" "$token" | jq -er .status)"
    [ "$status" = completed ] && break
    sleep 0.1
done
[ "$status" = completed ] || die "the seed task did not complete"
log "copying it to $N tasks"
cols="$(sqlite3 "$work/vel.db" "SELECT group_concat(name, ', ') FROM pragma_table_info('tasks')")"
select="$(echo "$cols" | sed -e "s/^id,/id || '-' || x,/" -e "s/created_at,/created_at - x,/")"
sqlite3 "$work/vel.db" "PRAGMA busy_timeout = 10000;
    WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $N - 1)
    INSERT INTO tasks ($cols) SELECT $select FROM tasks, n WHERE tasks.id = '$id';" >/dev/null
rss() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$VEL_PID/status"; }
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; vel on sqlite, $N tasks"
echo
echo "| export | rows | seconds | rows/s | VmRSS before (MiB) | VmHWM before / after (MiB) |"
echo "| --- | --- | --- | --- | --- | --- |"
for format in csv jsonl; do
    before="$(rss VmRSS)"
    peak="$(rss VmHWM)"
    start=$(date +%s.%N)
    rows="$(curl -sS -H "authorization: Bearer $token" "$VEL_URL/api/tasks?format=$format" | wc -l)"
    end=$(date +%s.%N)
    secs="$(echo "$end - $start" | bc -l)"
    [ "$format" = csv ] && rows=$((rows - 1))
    printf '| %s | %d | %.2f | %.0f | %s | %s / %s |\n' "$format" "$rows" "$secs" \
        "$(echo "$rows / $secs" | bc -l)" "$before" "$peak" "$(rss VmHWM)"
done
