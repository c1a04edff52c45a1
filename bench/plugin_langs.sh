#!/usr/bin/env bash
# Per-call cost of a router in Rust, JavaScript and Python, measured the same
# way: `vel plugin new NAME --kind router --lang L` (the template's cheapest-
# first router), built with the template's command, then `vel plugin test`
# on a fixture of N identical cases (the template's two-candidate input,
# under the tenant limits of the plugin's class). Each case is one fresh
# instance plus one `route` call; `vel plugin test` prints each call's
# duration, of which this prints p50/p90/p99. Also prints each component's
# size and the time of `vel plugin check` (compile without a cache, the
# first instantiation and `info()`).
#
# Usage: bench/plugin_langs.sh
# Environment: N (cases, default 500); VEL (the vel binary, default
# target/debug/vel: a dev build, so the figures are upper ones); the
# toolchains .ci/run installs: componentize-qjs in target/js-tools,
# componentize-py in target/py.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-500}"
VEL="${VEL:-$PWD/target/debug/vel}"
QJS="$PWD/target/js-tools/node_modules/.bin/componentize-qjs"
PY="$PWD/target/py/bin/python"
[ -x "$VEL" ] || { echo "no vel binary at $VEL: cargo build -p vel" >&2; exit 1; }
[ -x "$QJS" ] || { echo "no componentize-qjs: npm install --prefix target/js-tools --no-save componentize-qjs@0.4.5" >&2; exit 1; }
[ -x "$PWD/target/py/bin/componentize-py" ] || { echo "no componentize-py: target/py/bin/pip install componentize-py==0.25.1" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for lang in rust js python; do
    dir="$work/$lang-router"
    "$VEL" plugin new "$lang-router" --kind router --lang "$lang" --dir "$dir" >/dev/null
    case "$lang" in
        rust)
            (cd "$dir" && CARGO_TARGET_DIR="$PWD/../rust-target" cargo build --release --offline -q)
            wasm="$work/rust-target/wasm32-wasip2/release/rust_router.wasm" ;;
        js)
            (cd "$dir" && COMPONENTIZE_QJS="$QJS" node build.mjs >/dev/null)
            wasm="$dir/dist/js-router.wasm" ;;
        python)
            (cd "$dir" && "$PY" build.py >/dev/null)
            wasm="$dir/dist/python-router.wasm" ;;
    esac
    # N copies of the template's first case.
    "$PY" - "$dir/tests/cases.json" "$wasm" "$N" >"$dir/bench.json" <<'EOF'
import json, sys
fixture = json.load(open(sys.argv[1]))
case = fixture["cases"][0]
fixture["component"] = sys.argv[2]
fixture["manifest"] = "vel-plugin.toml"
fixture["tenant"] = True
fixture["cases"] = [dict(case, name=f"call {i}") for i in range(int(sys.argv[3]))]
print(json.dumps(fixture))
EOF
    start=$(date +%s%N)
    "$VEL" plugin check "$wasm" --manifest "$dir/vel-plugin.toml" >/dev/null
    check=$(( ($(date +%s%N) - start) / 1000000 ))
    (cd "$dir" && "$VEL" plugin test bench.json) >"$dir/out.txt"
    "$PY" - "$lang" "$wasm" "$check" "$dir/out.txt" <<'EOF'
import os, re, sys
lang, wasm, check, out = sys.argv[1:]
ms = sorted(float(m) for m in re.findall(r"^ok .*\(([\d.]+) ms\)$", open(out).read(), re.M))
pct = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
print(f"{lang:7} {os.path.getsize(wasm)/1e6:6.2f} MB  check {int(check)/1000:6.2f} s  "
      f"calls {len(ms)}  p50 {pct(0.5):.3f} ms  p90 {pct(0.9):.3f} ms  p99 {pct(0.99):.3f} ms")
EOF
done
