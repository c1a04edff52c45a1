#!/usr/bin/env bash
# Independent check of the gateway figures: the same chat completion sent
# with oha (not our load generator) (a) straight to the mock upstream,
# (b) through nginx as a plain reverse proxy to the same mock (the floor:
# what any proxy on this path costs), and (c) through vel's
# `/v1/chat/completions` (API key, `openai-compatible` plugin, same mock),
# at concurrency 1 and 32, in one run. Prints a Markdown table.
#
# Usage: bench/crosscheck.sh [sqlite|postgres]
# Environment: N1 (requests at concurrency 1, default 5000), N32 (default
# 50000), OHA (the oha binary, default `oha` on PATH; `cargo install oha`),
# NGINX (default `nginx`), BENCH_NO_BUILD=1 to skip `cargo build --release`.
# Requires: curl, jq, oha, nginx.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
N1="${N1:-5000}"
N32="${N32:-50000}"
OHA="${OHA:-oha}"
NGINX="${NGINX:-nginx}"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
command -v "$OHA" >/dev/null || die "oha not found (cargo install oha, or set OHA)"
command -v "$NGINX" >/dev/null || die "nginx not found (set NGINX)"

[ "${BENCH_NO_BUILD:-}" = 1 ] || build_release
new_tmp_dir
work=$TMP_DIR

start_gateway "$work" "$DB"

log "starting nginx in front of the mock"
NGINX_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    upstream mock { server ${MOCK_URL#http://}; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
BENCH_PIDS+=("$!")
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 1 50); do curl -sf -o /dev/null -X POST -d "$BODY" "$NGINX_URL/v1/chat/completions" && break; sleep 0.1; done

api POST "$VEL_URL/v1/chat/completions" "$KEY" "$BODY" >/dev/null

oha_run() { # URL CONCURRENCY REQUESTS: oha's JSON summary
    log "oha: $1 at concurrency $2 ($3 requests)"
    # A short warm-up, then the measured run.
    "$OHA" --no-tui -n 200 -c "$2" -m POST -H 'content-type: application/json' \
        -H "authorization: Bearer $KEY" -d "$BODY" "$1" >/dev/null
    "$OHA" --no-tui --output-format json -n "$3" -c "$2" -m POST \
        -H 'content-type: application/json' -H "authorization: Bearer $KEY" -d "$BODY" "$1"
}
row() { # LABEL CONCURRENCY JSON
    jq -r --arg l "$1" --arg c "$2" '
        [$l, $c, (.summary.successRate * 100 | tostring) + " %",
         (.latencyPercentiles.p50 * 1e6 | round | tostring),
         (.latencyPercentiles.p99 * 1e6 | round | tostring),
         (.summary.requestsPerSec | round | tostring)] | "| " + join(" | ") + " |"' <<<"$3"
}
D1="$(oha_run "$MOCK_URL/v1/chat/completions" 1 "$N1")"
N1R="$(oha_run "$NGINX_URL/v1/chat/completions" 1 "$N1")"
V1="$(oha_run "$VEL_URL/v1/chat/completions" 1 "$N1")"
D32="$(oha_run "$MOCK_URL/v1/chat/completions" 32 "$N32")"
N32R="$(oha_run "$NGINX_URL/v1/chat/completions" 32 "$N32")"
V32="$(oha_run "$VEL_URL/v1/chat/completions" 32 "$N32")"

echo
echo "Machine: $(machine); vel on $DB; load generator: $("$OHA" --version)"
echo
echo "| path | concurrency | success | p50 µs | p99 µs | req/s |"
echo "| --- | --- | --- | --- | --- | --- |"
row "mock upstream, direct" 1 "$D1"
row "nginx → mock (the floor)" 1 "$N1R"
row "vel gateway → mock" 1 "$V1"
row "mock upstream, direct" 32 "$D32"
row "nginx → mock (the floor)" 32 "$N32R"
row "vel gateway → mock" 32 "$V32"
