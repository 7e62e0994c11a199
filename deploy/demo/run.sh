#!/usr/bin/env bash
# The demo: installs what is missing, builds weir, starts two small origins ("blue" and
# "green") and weir in front of them on 127.0.0.1, prints curl lines to try, and runs until
# Ctrl-C. No cluster needed.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build weir weirctl weir-test-origin

work=$(mktemp -d /tmp/weir-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

build/tests/weir-test-origin --listen 127.0.0.1:19001 --name blue >/dev/null & pids+=($!)
build/tests/weir-test-origin --listen 127.0.0.1:19002 --name green >/dev/null & pids+=($!)
sed "s#@ACCESS_LOG@#$work/access.log#" deploy/demo/weir.json > "$work/weir.json"
build/weir -c "$work/weir.json" 2> "$work/weir.log" & pids+=($!)

for _ in $(seq 1 50); do
    curl -fs http://127.0.0.1:19901/ready >/dev/null 2>&1 && break
    sleep 0.1
done
if ! curl -fs http://127.0.0.1:19901/ready >/dev/null; then
    echo "weir did not become ready; its log:" >&2
    cat "$work/weir.log" >&2
    exit 1
fi

cat <<TXT

weir is running on http://127.0.0.1:18000 in front of two origins (blue :19001, green :19002).
Try, in another terminal:

  curl -i http://127.0.0.1:18000/                          # round robin over blue and green
  curl -i -H 'Host: shop.example.com' http://127.0.0.1:18000/   # a blue/green rollout, 20% green
  curl -i -H 'Host: shop.example.com' -H 'x-weir-track: green' http://127.0.0.1:18000/
  curl -i http://127.0.0.1:18000/echo                      # what the origin received (X-Forwarded-*)
  curl -s http://127.0.0.1:19901/clusters                  # endpoints, health, counters
  curl -s http://127.0.0.1:19901/metrics | grep weir_requests_total
  build/weirctl check -c deploy/demo/weir.json
  kill -HUP $(pgrep -f "build/weir -c") # reload the config

Access log: $work/access.log   weir's log: $work/weir.log
Press Ctrl-C to stop.
TXT
wait "${pids[2]}"
