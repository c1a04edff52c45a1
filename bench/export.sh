#!/usr/bin/env bash
# Task history export: the memory and time of `GET /api/tasks?format=csv`
# (and `format=jsonl`) over N tasks, vel on SQLite or PostgreSQL. One task is run through
# the built-in `mock` provider, then copied N-1 times straight in the
# database (the export reads rows; how they got there does not matter).
# Prints the rows exported, the time, and vel's resident memory before and
# its peak (VmHWM) after each export: an export streams page by page, so its
# peak should not grow with N.
#
# Usage: bench/export.sh [sqlite|postgres]   (default sqlite)
# Environment: N (tasks, default 100000), BENCH_NO_BUILD=1 to skip
# `cargo build --release`.
# Requires: curl, jq, and sqlite3, or psql and a PostgreSQL on 127.0.0.1:5432
# (trust auth, user postgres; a fresh database is created and dropped).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N="${N:-100000}"
DB="${1:-sqlite}"
[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work="$TMP_DIR"
case "$DB" in
    sqlite) start_vel "$work" ;;
    postgres) create_pg_db; start_vel "$work" DATABASE_URL="$PG_URL" ;;
    *) die "usage: $0 [sqlite|postgres]" ;;
esac
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
# sql STATEMENT: run it on the database vel uses; prints what it returns.
sql() {
    case "$DB" in
        sqlite) sqlite3 -cmd ".timeout 10000" "$work/vel.db" "$1" ;;
        postgres) psql -Atq "$PG_URL" -c "$1" ;;
    esac
}
case "$DB" in
    sqlite) cols="$(sql "SELECT group_concat(name, ', ') FROM pragma_table_info('tasks')")"
        numbers="WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $N - 1)"
        from="tasks, n" ;;
    postgres) cols="$(sql "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_name = 'tasks'")"
        numbers=""
        from="tasks, generate_series(1, $N - 1) AS n(x)" ;;
esac
select="$(echo "$cols" | sed -e "s/^id,/id || '-' || x,/" -e "s/created_at,/created_at - x,/")"
sql "$numbers INSERT INTO tasks ($cols) SELECT $select FROM $from WHERE tasks.id = '$id';" >/dev/null
# The statistics a table that grew over time would have (autovacuum's
# analyze may not have run yet after one bulk insert).
sql "ANALYZE tasks" >/dev/null
rss() { awk -v k="$1:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$VEL_PID/status"; }
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; vel on $DB, $N tasks"
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
