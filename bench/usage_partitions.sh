#!/usr/bin/env bash
# Usage buckets on PostgreSQL: is partitioning the minute rows by day worth
# it? Three layouts of `usage_buckets` (migration 0014) side by side in one
# scratch database, each holding the same rows: DAYS days of minute rows
# (SERIES series per minute: organization × provider × model × agent ×
# source) and 90 days of hour rows.
#   plain    the table as migrated: one index (org_id, resolution, bucket_start)
#   indexed  plain, plus an index (resolution, bucket_start) for the work
#            that reads across organizations (the roll-up, retention)
#   daily    indexed, LIST-partitioned by resolution, the minute partition
#            RANGE-partitioned by day (one partition per day)
# Each statement vel runs on the table is timed with pgbench (one client,
# TIME seconds, average latency in ms):
#   write      the usage writer's batch: 500 rows of the current minute
#   org day    one organization's minute rows over the last 24 hours (analytics)
#   roll-up    every organization's minute rows of one hour (the hourly roll-up)
#   retention  one roll-up pass's delete of the minute rows past retention
#              (a minute's worth: the pass runs every 60 s)
# and, once, what a day of retention costs at once: the DELETE of a day's
# minute rows followed by the VACUUM that reclaims them, against dropping
# that day's partition.
#
# Usage: bench/usage_partitions.sh
# Environment: DAYS (default 8), SERIES (default 200), TIME (default 10).
# Requires: psql and pgbench, a PostgreSQL on 127.0.0.1:5432 (trust auth,
# user postgres; a fresh database is created and dropped).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DAYS="${DAYS:-8}"
SERIES="${SERIES:-200}"
TIME="${TIME:-10}"
DAY_MS=86400000
create_pg_db
new_tmp_dir
sql() { psql -Atq -v ON_ERROR_STOP=1 "$PG_URL" -c "$1"; }

# The newest minute of the data, on a day boundary plus 12 hours.
NOW_MS=$(( ($(date +%s) / 86400) * DAY_MS + DAY_MS / 2 ))
FIRST_DAY_MS=$(( (NOW_MS / DAY_MS - DAYS + 1) * DAY_MS ))

COLUMNS="org_id TEXT NOT NULL, resolution TEXT NOT NULL CHECK (resolution IN ('minute', 'hour', 'day')),
    bucket_start BIGINT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, agent_id TEXT NOT NULL,
    source TEXT NOT NULL, requests BIGINT NOT NULL, completed BIGINT NOT NULL, failed BIGINT NOT NULL,
    cancelled BIGINT NOT NULL, fallbacks BIGINT NOT NULL, cache_hits BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cost_nanos BIGINT NOT NULL,
    latency BYTEA NOT NULL, created_at BIGINT NOT NULL"

# rows RESOLUTION FROM_MS COUNT STEP_MS: a SELECT of COUNT buckets of SERIES
# rows each, starting at FROM_MS, STEP_MS apart (a 120-byte sketch each).
rows() {
    echo "SELECT 'org-' || (s % 40), '$1', $2 + b::bigint * $4, 'p' || (s % 3), 'm' || (s % 5), '',
        CASE WHEN s % 2 = 0 THEN 'api' ELSE 'gateway' END, 10, 9, 1, 0, 0, 1, 500, 200, 12345,
        decode(repeat('ab', 120), 'hex'), $2 + b::bigint * $4
      FROM generate_series(0, $3 - 1) AS b, generate_series(0, $SERIES - 1) AS s"
}

log "creating the three layouts"
sql "CREATE SCHEMA plain; CREATE SCHEMA indexed; CREATE SCHEMA daily;
     CREATE TABLE plain.usage_buckets ($COLUMNS);
     CREATE INDEX ON plain.usage_buckets (org_id, resolution, bucket_start);
     CREATE TABLE indexed.usage_buckets ($COLUMNS);
     CREATE INDEX ON indexed.usage_buckets (org_id, resolution, bucket_start);
     CREATE INDEX ON indexed.usage_buckets (resolution, bucket_start);
     CREATE TABLE daily.usage_buckets ($COLUMNS) PARTITION BY LIST (resolution);
     CREATE INDEX ON daily.usage_buckets (org_id, resolution, bucket_start);
     CREATE INDEX ON daily.usage_buckets (resolution, bucket_start);
     CREATE TABLE daily.usage_minutes PARTITION OF daily.usage_buckets
         FOR VALUES IN ('minute') PARTITION BY RANGE (bucket_start);
     CREATE TABLE daily.usage_rest PARTITION OF daily.usage_buckets FOR VALUES IN ('hour', 'day');"
for d in $(seq 0 "$DAYS"); do
    from=$(( FIRST_DAY_MS + d * DAY_MS ))
    sql "CREATE TABLE daily.usage_minutes_$d PARTITION OF daily.usage_minutes
         FOR VALUES FROM ($from) TO ($(( from + DAY_MS )))"
done

log "loading $DAYS days × 1,440 minutes × $SERIES series, and 90 days of hours"
minutes=$(( (NOW_MS - FIRST_DAY_MS) / 60000 ))
for schema in plain indexed daily; do
    sql "INSERT INTO $schema.usage_buckets $(rows minute "$FIRST_DAY_MS" "$minutes" 60000);
         INSERT INTO $schema.usage_buckets $(rows hour $(( NOW_MS - 90 * DAY_MS )) $(( 90 * 24 )) 3600000);"
    sql "VACUUM ANALYZE $schema.usage_buckets"
done
total="$(sql "SELECT count(*) FROM plain.usage_buckets")"

# bench SCHEMA SCRIPT: pgbench's average latency in ms for SCRIPT.
bench() {
    local f="$TMP_DIR/$1.sql"
    printf '%s\n' "$2" >"$f"
    pgbench -n -M simple -c 1 -T "$TIME" -f "$f" "$PG_URL" 2>/dev/null |
        awk '/latency average/ { print $4 }'
}

org_day="SELECT * FROM SCHEMA.usage_buckets WHERE org_id = 'org-7' AND resolution = 'minute'
    AND bucket_start >= $(( NOW_MS - DAY_MS )) AND bucket_start < $NOW_MS ORDER BY bucket_start;"
rollup="\\set h random(0, 23)
SELECT * FROM SCHEMA.usage_buckets WHERE resolution = 'minute'
    AND bucket_start >= $(( NOW_MS - DAY_MS )) + :h * 3600000
    AND bucket_start < $(( NOW_MS - DAY_MS )) + (:h + 1) * 3600000;"
write="INSERT INTO SCHEMA.usage_buckets $(rows minute "$NOW_MS" 1 60000 | sed "s/generate_series(0, $SERIES - 1)/generate_series(0, 499)/");"
# Retention: each pass deletes the minute rows older than its cutoff, one
# minute later than the last pass's (the oldest day, minute by minute).
retention="UPDATE SCHEMA.cutoff SET at = at + 60000 RETURNING at \\gset
DELETE FROM SCHEMA.usage_buckets WHERE resolution = 'minute' AND bucket_start < :at;"

declare -A R
for schema in plain indexed daily; do
    log "timing $schema"
    sql "CREATE TABLE $schema.cutoff (at BIGINT); INSERT INTO $schema.cutoff VALUES ($FIRST_DAY_MS)"
    R[$schema.org]="$(bench "$schema-org" "${org_day//SCHEMA/$schema}")"
    R[$schema.rollup]="$(bench "$schema-rollup" "${rollup//SCHEMA/$schema}")"
    R[$schema.retention]="$(bench "$schema-retention" "${retention//SCHEMA/$schema}")"
    R[$schema.write]="$(bench "$schema-write" "${write//SCHEMA/$schema}")"
done

# A whole day at once: the second day's minute rows (the first was eaten
# into by the retention runs above).
day_from=$(( FIRST_DAY_MS + DAY_MS ))
timed() { # SQL: wall time in ms
    local start end
    start=$(date +%s%N)
    sql "$1" >/dev/null
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
log "one day of retention at once"
day_rows="$(sql "SELECT count(*) FROM plain.usage_buckets WHERE resolution = 'minute'
    AND bucket_start < $(( day_from + DAY_MS ))")"
for schema in plain indexed; do
    R[$schema.day_delete]="$(timed "DELETE FROM $schema.usage_buckets WHERE resolution = 'minute' AND bucket_start < $(( day_from + DAY_MS ))")"
    R[$schema.day_vacuum]="$(timed "VACUUM $schema.usage_buckets")"
done
R[daily.day_delete]="$(timed "DROP TABLE daily.usage_minutes_0, daily.usage_minutes_1")"
R[daily.day_vacuum]="—"

echo "Machine: $(machine)"
echo "PostgreSQL $(sql "SHOW server_version"); $total rows ($DAYS days of $SERIES minute series, 90 days of hours); pgbench, 1 client, ${TIME} s per figure; average latency"
echo
echo "| layout | write 500 rows | one org's day | hourly roll-up read | retention pass | the oldest days' DELETE ($day_rows rows) | then VACUUM |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for schema in plain indexed daily; do
    drop=""
    [ "$schema" = daily ] && drop=" (DROP partition)"
    echo "| $schema | ${R[$schema.write]} ms | ${R[$schema.org]} ms | ${R[$schema.rollup]} ms | ${R[$schema.retention]} ms | ${R[$schema.day_delete]} ms$drop | ${R[$schema.day_vacuum]} ms |"
done
