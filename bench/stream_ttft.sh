#!/usr/bin/env bash
# Time to first token of a streamed chat completion, sent (a) straight to the
# mock upstream and (b) through vel's gateway (`/v1/chat/completions`,
# `stream: true`, forwarded by the `openai-compatible` plugin to the same
# mock), one request at a time on a keep-alive connection. "First token" is
# the first `data:` chunk whose delta carries text: through vel that includes
# the hold-back of the response until the first text exists (issue 33), so
# the difference is what a streaming client waits longer. Prints a Markdown
# table (p50 / p95 / p99 in ms, and what vel adds).
#
# Usage: bench/stream_ttft.sh [sqlite|postgres]   (vel's database, default sqlite)
# Environment: N (timed requests each way, default 1000), WARMUP (default 100),
# BENCH_NO_BUILD=1 to skip `cargo build --release`, BENCH_DEBUG=1 to use the
# debug binaries in target/debug instead (figures then say little about a
# release build).
# Requires: curl, jq, python3.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${1:-sqlite}"
N="${N:-1000}"
WARMUP="${WARMUP:-100}"
if [ "${BENCH_DEBUG:-}" = 1 ]; then
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
elif [ "${BENCH_NO_BUILD:-}" != 1 ]; then
    build_release
fi
new_tmp_dir
start_gateway "$TMP_DIR" "$DB"

MEASURE='
import http.client, json, sys, time, urllib.parse
url, key, n, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                   "messages": [{"role": "user", "content": "time to the first token"}]})
headers = {"content-type": "application/json"}
if key:
    headers["authorization"] = "Bearer " + key
times = []
for i in range(warmup + n):
    start = time.perf_counter()
    conn.request("POST", u.path, body, headers)
    r = conn.getresponse()
    if r.status != 200:
        sys.exit(f"status {r.status}: {r.read()[:200]!r}")
    first = None
    for line in iter(r.readline, b""):
        if first is None and line.startswith(b"data: {"):
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - start
    r.read()
    if first is None:
        sys.exit("a stream without text")
    if i >= warmup:
        times.append(first * 1000)
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(json.dumps({"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99)}))
'
measure() { # URL KEY
    log "time to first token: $1 ($N requests)"
    python3 -c "$MEASURE" "$1" "$2" "$N" "$WARMUP"
}
DIRECT="$(measure "$MOCK_URL/v1/chat/completions" "")"
VEL="$(measure "$VEL_URL/v1/chat/completions" "$KEY")"

f() { jq -r --arg k "$2" '.[$k] | . * 1000 | round / 1000' <<<"$1"; }
added() { jq -rn --argjson a "$(f "$VEL" "$1")" --argjson b "$(f "$DIRECT" "$1")" '($a - $b) * 1000 | round / 1000'; }
echo "| path | p50 ms | p95 ms | p99 ms |"
echo "|---|---|---|---|"
echo "| mock upstream, direct | $(f "$DIRECT" p50) | $(f "$DIRECT" p95) | $(f "$DIRECT" p99) |"
echo "| through vel ($DB) | $(f "$VEL" p50) | $(f "$VEL" p95) | $(f "$VEL" p99) |"
echo "| added by vel | $(added p50) | $(added p95) | $(added p99) |"
