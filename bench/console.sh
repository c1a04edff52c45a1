#!/usr/bin/env bash
# The web console's first loads over N tasks: `GET /console` (the overview)
# and `GET /console/tasks` (the first page of 50, with the total), vel on
# SQLite or PostgreSQL. One task is run through the built-in `mock`
# provider, then copied N-1 times straight in the database, and its usage
# usage rows written as N tasks over the last 24 hours leave them: the past
# hours rolled up into hour rows, the current hour's tasks as minute rows
# (UNROLLED=1: all N as minute rows, as if the roll-up had not run for a day).
# Prints the time of each page's first load and the slowest of the next 5.
#
# Usage: bench/console.sh [sqlite|postgres]   (default sqlite)
# Environment: N (tasks, default 100000); PROFILE=debug (default) measures
# the dev build (`cargo build -p vel`), PROFILE=release the optimised one.
# Requires: curl, jq, and sqlite3, or psql and a PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N="${N:-100000}"
DB="${1:-sqlite}"
PROFILE="${PROFILE:-debug}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
[ "${BENCH_NO_BUILD:-}" = 1 ] || (cd "$ROOT" && if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p vel; else cargo build --locked -p vel; fi)
new_tmp_dir
work="$TMP_DIR"
case "$DB" in
    sqlite) start_vel "$work" ;;
    postgres) create_pg_db; start_vel "$work" DATABASE_URL="$PG_URL" ;;
    *) die "usage: $0 [sqlite|postgres]" ;;
esac
token="$(login "$VEL_URL")"
id="$(api POST "$VEL_URL/api/tasks" "$token" \
    '{"description":"console","prompt":"hello","task_type":"light","parameters":{"model":"mock/echo"}}' |
    jq -er .id)"
for _ in $(seq 1 100); do
    status="$(api GET "$VEL_URL/api/tasks/$id" "$token" | jq -er .status)"
    [ "$status" = completed ] && break
    sleep 0.1
done
[ "$status" = completed ] || die "the seed task did not complete"
sql() {
    case "$DB" in
        sqlite) sqlite3 -cmd ".timeout 10000" "$work/vel.db" "$1" ;;
        postgres) psql -Atq "$PG_URL" -c "$1" ;;
    esac
}
log "copying it to $N tasks and $N usage rows"
case "$DB" in
    sqlite) cols="$(sql "SELECT group_concat(name, ', ') FROM pragma_table_info('tasks')")"
        ucols="$(sql "SELECT group_concat(name, ', ') FROM pragma_table_info('usage_buckets')")"
        numbers="WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < $N - 1)"
        from="tasks, n"; ufrom="usage_buckets, n" ;;
    postgres) cols="$(sql "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_name = 'tasks'")"
        ucols="$(sql "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_name = 'usage_buckets'")"
        numbers=""
        from="tasks, generate_series(1, $N - 1) AS n(x)"; ufrom="usage_buckets, generate_series(1, $N - 1) AS n(x)" ;;
esac
select="$(echo "$cols" | sed -e "s/^id,/id || '-' || x,/" -e "s/created_at,/created_at - x,/")"
sql "$numbers INSERT INTO tasks ($cols) SELECT $select FROM $from WHERE tasks.id = '$id';" >/dev/null
has_id="$(echo "$ucols" | grep -c '^id,' || true)"
[ "$has_id" = 0 ] || die "usage_buckets has an id column: adapt the copy"
if [ "${UNROLLED:-}" = 1 ]; then
    # Every task's usage row a minute row, spread over the last day: as if
    # the roll-up had not run for a day (the most rows the overview merges).
    uselect="$(echo "$ucols" | sed -e "s/\bbucket_start\b/bucket_start - (x % 1440) * 60000/")"
    sql "$numbers INSERT INTO usage_buckets ($ucols) SELECT $uselect FROM $ufrom
         WHERE usage_buckets.resolution = 'minute';" >/dev/null
else
    # N tasks evenly over the last day, the roll-up keeping up: the past
    # hours as one hour row each (per provider and model), the current
    # hour's N/24 tasks as minute rows.
    hselect="$(echo "$ucols" | sed -e "s/\bresolution\b/'hour'/" \
        -e "s/\bbucket_start\b/(bucket_start \/ 3600000 - x) * 3600000/")"
    sql "$numbers INSERT INTO usage_buckets ($ucols) SELECT $hselect FROM $ufrom
         WHERE usage_buckets.resolution = 'minute' AND x < 24;" >/dev/null
    uselect="$(echo "$ucols" | sed -e "s/\bbucket_start\b/bucket_start - (x % 60) * 60000/")"
    sql "$numbers INSERT INTO usage_buckets ($ucols) SELECT $uselect FROM $ufrom
         WHERE usage_buckets.resolution = 'minute' AND x < $N / 24;" >/dev/null
fi
sql "ANALYZE" >/dev/null
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; vel ($PROFILE build) on $DB"
echo "tasks: $(sql "SELECT COUNT(*) FROM tasks"), usage rows: $(sql "SELECT COUNT(*) FROM usage_buckets")"
echo
echo "| page | first load (ms) | slowest of the next 5 (ms) | bytes |"
echo "| --- | --- | --- | --- |"
load() {
    curl -sS -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
        -H "cookie: vel_session=$token" "$VEL_URL$1"
}
for page in /console /console/tasks; do
    read -r code first bytes <<<"$(load "$page")"
    [ "$code" = 200 ] || die "$page -> $code"
    worst=0
    for _ in 1 2 3 4 5; do
        read -r _ t _ <<<"$(load "$page")"
        worst="$(echo "if ($t > $worst) $t else $worst" | bc -l)"
    done
    printf '| `%s` | %.0f | %.0f | %s |\n' "$page" "$(echo "$first * 1000" | bc -l)" \
        "$(echo "$worst * 1000" | bc -l)" "$bytes"
done
