# Shared helpers of bench/*.sh (sourced, not run).
#
# Every process a script starts is recorded and killed by the EXIT trap, every
# temporary directory is removed, and every PostgreSQL database it created is
# dropped. Servers bind 127.0.0.1:0 (a free port chosen by the kernel) and
# announce their address on their first stdout line, so no port can collide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
ADMIN_EMAIL="admin@bench.local"
ADMIN_PASSWORD="BenchPassw0rd12"

BENCH_PIDS=()
BENCH_DIRS=()
BENCH_PG_DBS=()

bench_cleanup() {
    local status=$?
    local pid db
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ] && [ "${#BENCH_DIRS[@]}" -gt 0 ]; then
        # Show what the servers said before their logs are removed.
        local f
        while IFS= read -r f; do
            echo "--- last lines of $f" >&2
            tail -n 20 "$f" >&2
        done < <(find "${BENCH_DIRS[@]}" -name '*.err' -o -name 'stderr.log')
    fi
    for db in "${BENCH_PG_DBS[@]}"; do
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if [ "${#BENCH_DIRS[@]}" -gt 0 ]; then
        rm -rf "${BENCH_DIRS[@]}"
    fi
    exit "$status"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# new_tmp_dir: create a temporary directory removed at exit, in TMP_DIR.
# (Not meant for `$(...)`: the registration must happen in this shell.)
new_tmp_dir() {
    TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/vel-bench.XXXXXX")"
    BENCH_DIRS+=("$TMP_DIR")
}

# build_release: the binaries every bench needs, optimised.
build_release() {
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked -p vel -p vel-mock-upstream -p vel-bench)
}

# need_oha: the independent load generator, in OHA (default `oha` on PATH,
# else ~/.cargo/bin/oha); installed with `cargo install oha --locked` when
# missing.
need_oha() {
    OHA="${OHA:-oha}"
    command -v "$OHA" >/dev/null && return 0
    OHA="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
    [ -x "$OHA" ] && return 0
    log "installing oha (cargo install oha)"
    cargo install oha --locked >&2 || die "cannot install oha (set OHA to an oha binary)"
}

# need_nginx: nginx, the floor for a proxy on the gateway's path, in NGINX
# (default `nginx` on PATH, else /usr/sbin/nginx); installed from Debian's
# `nginx-light` when missing.
need_nginx() {
    NGINX="${NGINX:-nginx}"
    command -v "$NGINX" >/dev/null && return 0
    NGINX=/usr/sbin/nginx
    [ -x "$NGINX" ] && return 0
    log "installing nginx (apt-get install nginx-light)"
    { apt-get install -y -q nginx-light || { apt-get update -q && apt-get install -y -q nginx-light; }; } >&2 ||
        die "cannot install nginx (set NGINX to an nginx binary)"
}

# start_nginx WORK_DIR UPSTREAM_URL: nginx as a plain reverse proxy to
# UPSTREAM_URL (two workers, keep-alive connections to the upstream), the
# floor any proxy on this path costs. Sets NGINX_URL.
start_nginx() {
    local work=$1 upstream=$2 port
    need_nginx
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    upstream up { server ${upstream#http://}; keepalive 64; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
    "$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    BENCH_PIDS+=("$!")
    NGINX_URL="http://127.0.0.1:$port"
    local i
    for i in $(seq 1 100); do
        curl -s -o /dev/null "$NGINX_URL/" && return 0
        sleep 0.1
    done
    die "nginx did not start: $(cat "$work/nginx/error.log")"
}

# start_server NAME OUT_FILE ERR_FILE CMD...: start CMD in the background,
# wait (up to 120 s, the first start compiles the plugins) for its
# `listening on http://ADDR` line, and set STARTED_PID and STARTED_URL.
start_server() {
    local name=$1 out=$2 err=$3
    shift 3
    "$@" >"$out" 2>"$err" &
    STARTED_PID=$!
    BENCH_PIDS+=("$STARTED_PID")
    local i line
    for i in $(seq 1 1200); do
        line="$(head -n 1 "$out" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            case "$line" in
                "listening on "*) STARTED_URL="${line#listening on }"; return 0 ;;
                *) die "$name: unexpected first line: $line" ;;
            esac
        fi
        kill -0 "$STARTED_PID" 2>/dev/null || { cat "$err" >&2; die "$name exited during start-up"; }
        sleep 0.1
    done
    cat "$err" >&2
    die "$name did not announce its address"
}

# start_vel DATA_DIR [VAR=VALUE...]: `vel serve` with a temp data dir and
# the bench admin, allowed to call the mock upstream on loopback; extra
# environment (e.g. DATABASE_URL) as arguments.
# Sets VEL_PID and VEL_URL.
start_vel() {
    local data=$1
    shift
    start_server vel "$data/stdout.log" "$data/stderr.log" \
        env VEL_LISTEN=127.0.0.1:0 VEL_DATA_DIR="$data" \
        VEL_ADMIN_EMAIL="$ADMIN_EMAIL" VEL_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        VEL_PLUGIN_CACHE_DIR="${VEL_PLUGIN_CACHE_DIR:-$ROOT/target/bench-plugin-cache}" \
        VEL_LOG="${VEL_LOG:-warn}" \
        VEL_OUTBOUND_ALLOW_PRIVATE="${VEL_OUTBOUND_ALLOW_PRIVATE:-127.0.0.0/8,::1/128}" "$@" \
        "$BIN/vel" serve
    VEL_PID=$STARTED_PID
    VEL_URL=$STARTED_URL
}

# start_gateway WORK_DIR DB: the gateway benchmarks' set-up. Starts the mock
# upstream (one thread, no recording) and vel on DB (`sqlite`, or `postgres`
# on a fresh database) with an `openai` integration (`openai-compatible`
# plugin, base URL the mock) and a task_executor API key.
# Sets MOCK_URL, VEL_URL, VEL_PID, KEY and ADMIN_TOKEN.
start_gateway() {
    local work=$1 db=$2
    log "starting the mock upstream"
    start_server mock "$work/mock.out" "$work/mock.err" \
        "$BIN/vel-mock-upstream" --listen 127.0.0.1:0 --threads 1 --no-record
    MOCK_URL=$STARTED_URL
    log "starting vel ($db)"
    mkdir -p "$work/vel"
    # GATEWAY_ENV (an array, optional): more settings for vel.
    local env=(VEL_DEMO_MOCK=false ${GATEWAY_ENV[@]+"${GATEWAY_ENV[@]}"})
    case "$db" in
        sqlite) ;;
        postgres) create_pg_db; env+=(DATABASE_URL="$PG_URL") ;;
        *) die "unknown database $db (sqlite or postgres)" ;;
    esac
    start_vel "$work/vel" "${env[@]}"
    ADMIN_TOKEN="$(login "$VEL_URL")"
    api POST "$VEL_URL/api/integrations" "$ADMIN_TOKEN" "$(jq -nc --arg u "$MOCK_URL/v1" '{
        name: "openai", provider: "openai", plugin: "openai-compatible", base_url: $u,
        api_key: "sk-test", default_model: "gpt-4o-mini"}')" >/dev/null
    KEY="$(api POST "$VEL_URL/api/api-keys" "$ADMIN_TOKEN" '{"name":"bench","role":"task_executor"}' |
        jq -er .key)"
}

# start_neighbours DB WORKERS NAME [VAR=VALUE...]: the neighbour benchmarks'
# set-up. Starts vel on DB (`sqlite`, or `postgres` on a fresh database)
# with WORKERS task workers and the extra settings, and two organizations,
# `quiet` and NAME, each with an offline `mock` integration. Sets WORK (a
# temporary directory), VEL_URL, VEL_PID, ADMIN, QUIET and BUSY (the two
# organizations' admin tokens).
start_neighbours() {
    local db=$1 workers=$2 name=$3
    shift 3
    new_tmp_dir
    WORK=$TMP_DIR
    local env=(VEL_DEMO_MOCK=false VEL_TASK_WORKERS="$workers" "$@")
    case "$db" in
        sqlite) ;;
        postgres) create_pg_db; env+=(DATABASE_URL="$PG_URL") ;;
        *) die "unknown database $db (sqlite or postgres)" ;;
    esac
    log "starting vel ($db, $workers workers)"
    start_vel "$WORK" "${env[@]}"
    ADMIN="$(login "$VEL_URL")"
    QUIET="$(tenant "$VEL_URL" "$ADMIN" quiet)"
    BUSY="$(tenant "$VEL_URL" "$ADMIN" "$name")"
    local token
    for token in "$QUIET" "$BUSY"; do
        api POST "$VEL_URL/api/integrations" "$token" '{"name":"mock","provider":"mock"}' >/dev/null
    done
}

# api METHOD URL TOKEN [JSON]: call the API, fail on a non-2xx status,
# print the body.
api() {
    local method=$1 url=$2 token=$3 body=${4:-}
    local args=(-sS -X "$method" -w '\n%{http_code}' -H 'content-type: application/json')
    [ -n "$token" ] && args+=(-H "authorization: Bearer $token")
    [ -n "$body" ] && args+=(--data "$body")
    local out code
    out="$(curl "${args[@]}" "$url")"
    code="${out##*$'\n'}"
    out="${out%$'\n'*}"
    case "$code" in
        2??) echo "$out" ;;
        *) die "$method $url -> $code: $out" ;;
    esac
}

# tenant BASE ADMIN_TOKEN NAME: a new organization NAME with an org_admin
# (owner@NAME.bench, the bench password); prints that admin's token.
tenant() {
    local base=$1 admin=$2 name=$3 org
    org="$(api POST "$base/api/organizations" "$admin" "$(jq -nc --arg n "$name" '{name:$n}')" | jq -er .id)"
    api POST "$base/api/users" "$admin" "$(jq -nc --arg e "owner@$name.bench" --arg p "$ADMIN_PASSWORD" \
        --arg o "$org" '{email:$e, password:$p, role:"org_admin", org_id:$o}')" >/dev/null
    api POST "$base/api/auth/login" "" "$(jq -nc --arg e "owner@$name.bench" --arg p "$ADMIN_PASSWORD" \
        '{email:$e, password:$p}')" | jq -er .token
}

# login BASE: the bench admin's access token.
login() {
    api POST "$1/api/auth/login" "" \
        "$(jq -nc --arg e "$ADMIN_EMAIL" --arg p "$ADMIN_PASSWORD" '{email:$e,password:$p}')" |
        jq -er .token
}

# create_pg_db: a fresh PostgreSQL database dropped at exit; its URL in PG_URL.
create_pg_db() {
    local name
    name="vel_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $name" >/dev/null ||
        die "cannot create a database on $PG_ADMIN_URL (PostgreSQL on 127.0.0.1:5432, trust auth, user postgres)"
    BENCH_PG_DBS+=("$name")
    PG_URL="${PG_ADMIN_URL%/*}/$name"
}

# proc_kib PID FIELD: a /proc/PID/status field (VmRSS, VmHWM) in KiB.
proc_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# bench_json ARGS...: run `vel-bench http --json ARGS`; prints its report.
bench_json() {
    "$BIN/vel-bench" http --json "$@"
}

# field JSON KEY: a number from a report, rounded to 1 decimal.
field() {
    jq -r --arg k "$2" '.[$k] | if type == "number" then (. * 10 | round / 10) else . end' <<<"$1"
}

# machine: one line describing the CPU, core count, kernel and the load
# average at the end of the run (other work on the machine skews figures).
machine() {
    local cpu
    cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "$cpu, $(nproc) cores, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# JQ_MS: a jq function, `ms`, turning one of the API's times
# (`2026-12-07T21:43:25.117Z`) into milliseconds since the epoch; put it
# before a jq program: `jq "$JQ_MS ..."`.
JQ_MS='def ms: (.[0:19] + "Z" | fromdateiso8601) * 1000 + (.[20:23] | tonumber);'

# quick_task BASE TOKEN PROMPT: submit one quick task (the offline mock's
# `echo`), wait on its event stream until it ends, and print "queue_ms
# total_ms": its `created_at` to `started_at` (queue wait) and to
# `finished_at` (submit to completed), the server's own timestamps.
quick_task() {
    local base=$1 token=$2 id task
    id="$(api POST "$base/api/tasks" "$token" "$(jq -nc --arg p "$3" \
        '{description: "quick", task_type: "light", prompt: $p, cache: false, parameters: {model: "mock/echo"}}')" |
        jq -er .id)"
    # The event stream ends after the task's terminal status.
    curl -sS -N --max-time 120 -o /dev/null -H "authorization: Bearer $token" \
        "$base/api/tasks/$id/stream" || die "the stream of task $id failed"
    task="$(api GET "$base/api/tasks/$id" "$token")"
    jq -er "$JQ_MS"'
        if .status != "completed" then error("task \(.id) is \(.status)") else . end
        | "\((.started_at | ms) - (.created_at | ms)) \((.finished_at | ms) - (.created_at | ms))"' \
        <<<"$task" || die "task $id did not complete: $task"
}

# percentile Q FILE: the Q-th percentile (nearest rank) of a column of numbers.
percentile() {
    sort -n "$2" | awk -v q="$1" '{ v[NR] = $1 } END {
        r = int(q / 100 * NR); if (r < q / 100 * NR) r++; if (r < 1) r = 1; print v[r] }'
}
