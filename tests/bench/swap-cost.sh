#!/usr/bin/env bash
# tests/bench/swap-cost.sh -- what rollout weight changes cost the data path: the same load
# (wrk / h2load from ../shared/bench's kit, one weir worker) with an idle control plane and
# with a background loop sending PUT /rollouts/ro 100 times a second (each answered once the
# worker serves the new snapshot), alternating the two arms, ROUNDS rounds each; prints every
# run, the medians and the ratios (swaps / idle).
#
#   tests/bench/swap-cost.sh                         # small (h1 keep-alive) and h2c, 3 rounds
#   SCENARIOS=small ROUNDS=5 DURATION=5 tests/bench/swap-cost.sh
#
# Pinning as peer-bench.sh's default: weir (all its threads) and the origin on CPU 0, the load
# generator and the swap loop on CPU 1, so whatever a swap costs weir (the control thread
# rebuilding the snapshot, the worker adopting it) competes with the requests on CPU 0. The
# route is a rollout whose blue and green clusters both point at the bench origin, and the
# loop alternates green_weight 40 and 60, so the swaps change nothing but the snapshot.
# The peer-bench harness itself takes one command per candidate and cannot run a control
# plane beside the load, hence this script (see docs/rollout-tests.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HERE=${WEIR_BENCH_KIT:-/work/shared/bench} # lib.sh wants HERE = the kit's folder
BIN=${WEIR_BENCH_BIN:-$here/../../build/weir}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
SWAP_RATE=${SWAP_RATE:-100}
SCENARIOS=${SCENARIOS:-small h2c}
# Below the ephemeral range (32768-60999 here): a port in it may be taken by any outgoing
# connection, and a connect to it with nothing listening can even connect to itself.
ORIGIN_PORT=${ORIGIN_PORT:-19180}
LISTEN_PORT=${LISTEN_PORT:-19184}
ADMIN_PORT=${ADMIN_PORT:-19191}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/swap-cost.XXXXXX)}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/swap-cost-w.XXXXXX)
# shellcheck source=/dev/null
. "$HERE/lib.sh"

[ -x "$BIN" ] || die "no weir binary at $BIN (build first, or set WEIR_BENCH_BIN)"
ensure_tools wrk h2load gcc python3 taskset curl
for p in $ORIGIN_PORT $LISTEN_PORT $ADMIN_PORT; do
    port_open "$p" && die "port $p is in use; set ORIGIN_PORT/LISTEN_PORT/ADMIN_PORT"
done

ORIGIN_PID="" WEIR_PID="" SWAP_PID=""
cleanup() {
    [ -n "$SWAP_PID" ] && stop_pid "$SWAP_PID"
    [ -n "$WEIR_PID" ] && stop_pid "$WEIR_PID"
    [ -n "$ORIGIN_PID" ] && stop_pid "$ORIGIN_PID"
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_origin
taskset -c "$PROXY_CPU" "$W/origin-srv" "$ORIGIN_PORT" 2>"$W/origin.stderr" &
ORIGIN_PID=$!
for _ in $(seq 1 50); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/" && break
    kill -0 "$ORIGIN_PID" 2>/dev/null || die "the origin exited: $(cat "$W/origin.stderr")"
    sleep 0.1
done

cat >"$W/weir.json" <<JSON
{
  "workers": 1,
  "access_log": null,
  "admin": { "address": "127.0.0.1:$ADMIN_PORT" },
  "listeners": [ { "name": "web", "address": "127.0.0.1:$LISTEN_PORT", "h2c": true } ],
  "routes": [ { "name": "ro", "match": { "path_prefix": "/" }, "rollout": "ro" } ],
  "clusters": [
    { "name": "blue", "max_idle": 2048, "endpoints": [ { "address": "127.0.0.1:$ORIGIN_PORT" } ] },
    { "name": "green", "max_idle": 2048, "endpoints": [ { "address": "127.0.0.1:$ORIGIN_PORT" } ] }
  ],
  "rollouts": [ { "name": "ro", "blue": "blue", "green": "green", "green_weight": 50 } ]
}
JSON
taskset -c "$PROXY_CPU" "$BIN" -c "$W/weir.json" 2>"$OUT/weir.stderr" &
WEIR_PID=$!
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$LISTEN_PORT/")" = 200 ] && break
    kill -0 "$WEIR_PID" 2>/dev/null || die "weir exited at start: $(tail -5 "$OUT/weir.stderr")"
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$LISTEN_PORT/")" = 200 ] ||
    die "weir does not answer 200 through the origin: $(tail -5 "$OUT/weir.stderr")"

# The swap loop: paced PUTs on one keep-alive admin connection until SIGTERM (or 10 min);
# prints "started" once running, then "puts non200 seconds" on exit.
cat >"$W/swapper.py" <<'PY'
import http.client, json, signal, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
n = bad = 0
t0 = time.monotonic()
print("started", flush=True)
while not stop and time.monotonic() - t0 < 600:
    delay = t0 + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    c.request("PUT", "/rollouts/ro", body=json.dumps({"green_weight": 40 + 20 * (n % 2)}))
    r = c.getresponse()
    r.read()
    bad += r.status != 200
    n += 1
print(n, bad, "%.3f" % (time.monotonic() - t0))
PY

swapper_start() {
    taskset -c "$LOAD_CPU" python3 "$W/swapper.py" "$ADMIN_PORT" "$SWAP_RATE" >"$W/swapper.out" &
    SWAP_PID=$!
    for _ in $(seq 1 300); do
        grep -q started "$W/swapper.out" && return 0
        sleep 0.1
    done
    die "the swap loop did not start"
}

swapper_stop() { # -> sets n bad secs
    kill -TERM "$SWAP_PID"
    wait "$SWAP_PID" || true
    SWAP_PID=""
    read -r n bad secs < <(tail -1 "$W/swapper.out")
}

# The configuration version weir serves: each swap adds one.
version() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/config" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])'
}

load() { # SCENARIO SECONDS OUTFILE
    case $1 in
    small) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$2s" --latency "http://127.0.0.1:$LISTEN_PORT/" ;;
    close) taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$2s" --latency -H 'Connection: close' \
               "http://127.0.0.1:$LISTEN_PORT/" ;;
    h2c) taskset -c "$LOAD_CPU" h2load -t1 -c"$CONNS" -m"$STREAMS" -D "$2" --log-file="$3.log" \
             "http://127.0.0.1:$LISTEN_PORT/" ;;
    *) die "unknown scenario $1 (small, close, h2c)" ;;
    esac >"$3" 2>&1 || true
}

# parse OUTFILE -> "rps p99_ms errors"
parse() {
    python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps, p99, err = float("nan"), float("nan"), 0
m = re.search(r"Requests/sec:\s+([\d.]+)", t) or re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t)
if m:
    rps = float(m.group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
if m:
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
try:  # h2load: per-request log, third column = microseconds
    lat = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1] + ".log") if l.count("\t") >= 2)
    if lat:
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000.0
except OSError:
    pass
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
if m:
    err += sum(int(x) for x in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if m:
    err += int(m.group(1))
m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored", t)
if m:
    err += int(m.group(1)) + int(m.group(2))
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
if m:
    err += int(m.group(3)) + int(m.group(4))
print("%.1f %.2f %d" % (rps, p99, err))
PY
}

HZ=$(getconf CLK_TCK)

# CPU time of every user-space process outside this script's tree, per pid: the noise of a
# run is the sum of the per-pid differences over the time between the two readings, in % of
# one core (a process that exits during the run is missed, rather than making the sum go
# negative as a plain total would).
cat >"$W/noise.py" <<'PY'
import json, os, sys, time
ours = set(sys.argv[2].split())
def ticks():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid in ours:
            continue
        try:
            s = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pid == "2" or s[1] == "2":
            continue  # kernel threads
        out[pid] = int(s[11]) + int(s[12])
    return out
if sys.argv[1] == "snap":
    json.dump({"t": time.monotonic(), "ticks": ticks()}, sys.stdout)
else:  # percent of one core over the time since the snapshot
    before = json.load(open(sys.argv[3]))
    now = ticks()
    busy = sum(t - before["ticks"].get(p, 0) for p, t in now.items())
    hz = os.sysconf("SC_CLK_TCK")
    print("%.0f" % (busy / hz / (time.monotonic() - before["t"]) * 100))
PY
noise_snap() { python3 "$W/noise.py" snap "$(tree_pids $$ | tr '\n' ' ')" >"$W/noise.json"; }
noise_pct() { python3 "$W/noise.py" diff "$(tree_pids $$ | tr '\n' ' ')" "$W/noise.json"; }
RAW=$OUT/raw.tsv
printf 'scenario\tround\tarm\trps\tp99_ms\terrors\tweir_us_per_req\tswaps_per_s\tswap_non200\tnoise_pct\n' >"$RAW"

run() { # SCENARIO ROUND ARM
    local sc=$1 round=$2 arm=$3 of="$OUT/$1-$2-$3.txt" swaps="-" bad="-"
    [ "$arm" = swaps ] && swapper_start
    load "$sc" "$WARMUP" "$of.warmup"
    local c0 c1
    noise_snap
    c0=$(cpu_ticks "$WEIR_PID")
    load "$sc" "$DURATION" "$of"
    c1=$(cpu_ticks "$WEIR_PID")
    noise=$(noise_pct)
    if [ -n "$SWAP_PID" ]; then
        swapper_stop
        swaps=$(python3 -c "print('%.1f' % ($n / $secs))")
    fi
    read -r rps p99 err < <(parse "$of")
    local usreq
    usreq=$(python3 -c "r=$rps; print('%.2f' % (($c1 - $c0) / $HZ / (r * $DURATION) * 1e6) if r > 0 else 'nan')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$round" "$arm" "$rps" "$p99" "$err" \
        "$usreq" "$swaps" "$bad" "$noise" >>"$RAW"
    log "$sc round $round $arm: $rps req/s, p99 $p99 ms, errors $err, weir $usreq us/req," \
        "swaps/s $swaps (non-200 $bad), other processes $noise % of a core"
}

log "weir $BIN, pid $WEIR_PID; results in $OUT"
for sc in $SCENARIOS; do
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which arm goes first, so that a drift in the machine's load hits both.
        if [ $((round % 2)) = 1 ]; then arms="idle swaps"; else arms="swaps idle"; fi
        for arm in $arms; do run "$sc" "$round" "$arm"; done
    done
done

# The control plane alone: weir's CPU time per swap with no traffic at all (CPU time, so far
# less sensitive to the machine's noise than req/s).
swapper_start
v0=$(version) c0=$(cpu_ticks "$WEIR_PID") t0=$(date +%s.%N)
sleep "$DURATION"
v1=$(version) c1=$(cpu_ticks "$WEIR_PID") t1=$(date +%s.%N)
swapper_stop
python3 -c "
swaps, secs = $v1 - $v0, $t1 - $t0
print('swaps alone: %d swaps in %.1f s (%.1f/s, %d non-200 in the loop); weir CPU %.2f %% of a core, %.0f us per swap'
      % (swaps, secs, swaps / secs, $bad, ($c1 - $c0) / $HZ / secs * 100, ($c1 - $c0) / $HZ / swaps * 1e6))
" | tee "$OUT/swaps-alone.txt"

python3 - "$RAW" <<'PY' | tee "$OUT/summary.md"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(xs):
    return statistics.median(xs) if xs else float("nan")
print("| scenario | arm | req/s median (min-max) | weir us/req median | p99 ms median | errors | swaps/s | other procs % core |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
out = {}
for sc in dict.fromkeys(r["scenario"] for r in rows):
    for arm in ("idle", "swaps"):
        rs = [r for r in rows if r["scenario"] == sc and r["arm"] == arm]
        rps = [float(r["rps"]) for r in rs]
        us = [float(r["weir_us_per_req"]) for r in rs]
        p99 = [float(r["p99_ms"]) for r in rs]
        sw = [float(r["swaps_per_s"]) for r in rs if r["swaps_per_s"] != "-"]
        out[sc, arm] = (med(rps), med(us))
        print("| %s | %s | %.0f (%.0f-%.0f) | %.2f | %.2f | %d | %s | %s |" % (
            sc, arm, med(rps), min(rps), max(rps), med(us), med(p99),
            sum(int(r["errors"]) for r in rs), "%.1f" % med(sw) if sw else "-",
            "/".join(r["noise_pct"] for r in rs)))
print()
for sc in dict.fromkeys(r["scenario"] for r in rows):
    pairs = []
    for rnd in dict.fromkeys(r["round"] for r in rows if r["scenario"] == sc):
        a = {r["arm"]: r for r in rows if r["scenario"] == sc and r["round"] == rnd}
        pairs.append(float(a["swaps"]["rps"]) / float(a["idle"]["rps"]))
    (ri, ui), (rs_, us_) = out[sc, "idle"], out[sc, "swaps"]
    print("%s: swaps/idle req/s %.3f (per round %s), weir us/req %.3f" % (
        sc, rs_ / ri, ", ".join("%.3f" % p for p in pairs), us_ / ui))
PY
