"""Memory across snapshot swaps: 100,000 rollout weight changes (PUT /rollouts/NAME, each
answered once every worker serves the new snapshot, sent one after the other as fast as the
admin answers) while traffic keeps keep-alive connections busy, and /slow requests keep a few
snapshots pinned for half a second each. weir's VmRSS (and RssAnon, VmHWM) from
/proc/PID/status is sampled every 10,000 swaps; the series and the growth are printed. A
swap that leaked its old snapshot would cost its whole size each time (the configuration
here has ROUTES extra routes and clusters: with the default 50, one snapshot is about 105 KiB,
measured by leaking them on purpose).

    cd tests/bench && WEIR_BUILD_DIR=$PWD/../../build /usr/bin/python3 swap-memory.py
    SWAPS=20000 EVERY=2000 /usr/bin/python3 swap-memory.py     # shorter

Not a ctest. The one assertion (plain builds only) is a wide guard: growth from the first
sample to the last under 8 MiB, i.e. under ~90 bytes per swap. Figures:
docs/rollout-tests.md."""

import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import *  # noqa: E402,F403
from loadgen import Load, failures  # noqa: E402

SWAPS = int(os.environ.get("SWAPS", "100000"))
EVERY = int(os.environ.get("EVERY", "10000"))
ROUTES = int(os.environ.get("ROUTES", "50"))
WORKERS = int(os.environ.get("WORKERS", "2"))
TEST_TIMEOUT = 3600


def proc_status(pid, *fields):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in fields:
                out[k] = int(v.split()[0])
    return out


class QuietOrigin(Origin):
    """weir-test-origin whose request log is counted, not kept (hundreds of thousands of
    lines here)."""

    def start(self):
        import subprocess
        self.proc = subprocess.Popen([ORIGIN_BIN, "--listen", self.address, "--name", self.name],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.count = 0
        if self.proc.stdout.readline().strip() != b"listening":
            raise AssertionError("origin %s did not start" % self.name)

        def drain():
            for _ in self.proc.stdout:
                self.count += 1

        threading.Thread(target=drain, daemon=True).start()
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def config(blue, green):
    routes = [{"name": "ro", "match": {"host": "ro.test", "path_prefix": "/"}, "rollout": "ro"}]
    clusters = [cluster("blue", blue), cluster("green", green)]
    for i in range(ROUTES):
        routes.append(route("r%d" % i, "c%d" % i, host="h%d.test" % i, path_prefix="/p%d/" % i,
                            headers=[{"name": "x-tenant", "exact": "t%d" % i}]))
        clusters.append(cluster("c%d" % i, blue, lb_policy="least_request"))
    return {"listeners": [{"name": "web", "address": "127.0.0.1:%d" % free_port(), "h2c": True}],
            "routes": routes, "clusters": clusters,
            "rollouts": [{"name": "ro", "blue": "blue", "green": "green", "green_weight": 0,
                          "sticky": True}]}


def sample(w, swaps, t0):
    st = proc_status(w.pid, "VmRSS", "RssAnon", "VmHWM")
    st["swaps"] = swaps
    st["t"] = time.monotonic() - t0
    return st


def test_rss_over_swaps():
    blue, green = QuietOrigin("blue").start(), QuietOrigin("green").start()
    try:
        run_swaps(blue, green)
    finally:
        blue.stop()
        green.stop()


def run_swaps(blue, green):
    w = Weir(config(blue, green), workers=WORKERS).start()
    traffic = Load(w.port, keepalive=16, h2=2, streams=8, rate=1000, host="ro.test",
                   duration_ms=3600 * 1000, origins=["blue", "green"]).start()
    pinned = Load(w.port, keepalive=8, host="ro.test", path="/slow/500", any_body=True,
                  duration_ms=3600 * 1000, origins=["blue", "green"]).start()
    admin = http.client.HTTPConnection("127.0.0.1", w.admin_port, timeout=30)

    def put(weight):
        admin.request("PUT", "/rollouts/ro", body=json.dumps({"green_weight": weight}),
                      headers={"Content-Type": "application/json"})
        r = admin.getresponse()
        body = r.read()
        check_eq(r.status, 200, "PUT: %r" % body[:200])

    t0 = time.monotonic()
    warm = min(2000, EVERY)
    for i in range(warm):
        put(i % 101)
    series = [sample(w, 0, t0)]
    print("    %8s %8s %10s %10s %10s" % ("swaps", "s", "VmRSS KiB", "RssAnon", "VmHWM"),
          flush=True)

    def show(s):
        print("    %8d %8.1f %10d %10d %10d" % (s["swaps"], s["t"], s["VmRSS"], s["RssAnon"],
                                              s["VmHWM"]), flush=True)

    show(series[0])
    for i in range(1, SWAPS + 1):
        put((i * 37) % 101)
        if i % EVERY == 0:
            series.append(sample(w, i, t0))
            show(series[-1])
    admin.close()
    res_t, res_p = traffic.finish(), pinned.finish()
    time.sleep(1)
    idle = sample(w, SWAPS, t0)
    rates = SWAPS / (series[-1]["t"] - series[0]["t"])
    growth = series[-1]["VmRSS"] - series[0]["VmRSS"]
    growth_mid = series[-1]["VmRSS"] - series[len(series) // 2]["VmRSS"]
    print("    %d swaps at %.0f/s; traffic %d requests (%d to /slow), failures %d + %d"
          % (SWAPS, rates, res_t.total["ok"], res_p.total["ok"], failures(res_t.total),
             failures(res_p.total)), flush=True)
    print("    VmRSS growth first->last sample: %+d KiB (%.1f bytes/swap); second half: %+d KiB;"
          " after the traffic stopped: %d KiB (VmHWM %d KiB)"
          % (growth, growth * 1024.0 / SWAPS, growth_mid, idle["VmRSS"], idle["VmHWM"]),
          flush=True)
    w.stop()
    check(failures(res_t.total) == 0 and failures(res_p.total) == 0,
          "requests failed during the swaps: %r %r" % (res_t.total["errors"],
                                                        res_p.total["errors"]))
    if SLOW == 1 and not os.environ.get("WEIR_TEST_SLOW"):
        check(growth < 8 * 1024, "VmRSS grew %d KiB over %d swaps" % (growth, SWAPS))


if __name__ == "__main__":
    run()
