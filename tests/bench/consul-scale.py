"""What the Consul provider does at scale: 1,000 services x 10 instances in the fake Consul
agent (tests/fakes/consul_fake.py, its own process), every service exposed with its own host.

Measured and printed:
  - initial sync: from the provider's start ("discovery[0]: starting" in weir's log) to the
    snapshot that holds all 1,000 clusters and routes ("configuration version N published
    (1000 clusters, 1000 routes, ...)"), both on weir's clock; and from the process spawn to
    all services answering through weir (the first, middle and last host);
  - a single instance change (one check going critical, then passing again), ten times: from
    just before the fake applies it to the log line of the snapshot that carries it (weir's log
    clock against this script's wall clock, same machine, 1 ms resolution);
  - weir's RSS (VmRSS and its peak VmHWM) after the sync and after the changes, and the CPU
    time weir spent on the sync.
Targets (issue): sync < 2 s, single change < 50 ms, RSS < 100 MiB. They are printed, not
asserted: only a regression by a wide margin fails, and only on a plain build.

    cd tests/integration && WEIR_BUILD_DIR=$PWD/../../build /usr/bin/python3 ../bench/consul-scale.py
"""

import calendar
import json
import os
import statistics
import sys as _sys
import urllib.request

_HERE = os.path.dirname(os.path.abspath(__file__))
_sys.path.insert(0, os.path.join(_HERE, "..", "integration"))
from harness import *  # noqa: E402,F403

SERVICES = int(os.environ.get("CONSUL_SCALE_SERVICES", "1000"))
INSTANCES = 10
CHANGES = 10
TEST_TIMEOUT = 300

FAKE = os.path.join(_HERE, "..", "fakes", "consul_fake.py")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*"
                      r"configuration version (\d+) published \((\d+) clusters, (\d+) routes, "
                      r"([\d.]+) ms\)")
START_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*discovery\[0\]: starting")


def log_time(date, ms):
    return calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


class FakeProcess:
    """The fake Consul agent in its own process, driven through its control port."""

    def __init__(self):
        self.bg = Background(["/usr/bin/python3", FAKE, "--port", "0", "--control-port", "0"],
                             interactive=True)
        info = json.loads(self.bg.line())
        self.url = "http://" + info["address"]
        self.control_url = "http://" + info["control"]

    def call(self, method, **kw):
        req = urllib.request.Request(self.control_url + "/_fake/" + method,
                                     data=json.dumps(kw).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())


def publications(w):
    """[(log time, version, clusters, routes, build ms)] from weir's log."""
    out = []
    for line in w.log().splitlines():
        m = LOG_LINE.match(line)
        if m:
            out.append((log_time(m.group(1), m.group(2)), int(m.group(3)), int(m.group(4)),
                        int(m.group(5)), float(m.group(6))))
    return out


def start_time(w):
    for line in w.log().splitlines():
        m = START_LINE.match(line)
        if m:
            return log_time(m.group(1), m.group(2))
    return None


def rss(w):
    return w.rss_kib("VmRSS") / 1024.0, w.rss_kib("VmHWM") / 1024.0


def svc(i):
    return "svc%04d" % i


def routable(w, i):
    r = w.http("GET", "/", headers={"Host": svc(i) + ".test"}, timeout=10)
    return r.status == 200


DRIVER = os.environ.get("WEIR_DISC_DRIVER_BIN") or os.path.join(BUILD_DIR, "tests",
                                                                  "weir-test-disc-driver")


def provider_alone(fake):
    """The same changes seen by the provider alone (weir-test-disc-driver prints each view it
    publishes): what the provider adds to a change, without the snapshot build."""
    d = tmpdir()
    path = write_file(os.path.join(d, "cfg.json"), json.dumps({
        "listeners": [{"name": "l", "address": "127.0.0.1:%d" % free_port()}],
        "discovery": [{"type": "consul", "address": fake.url}]}))
    bg = Background([DRIVER, "--summary", path], interactive=True)
    t0 = time.monotonic()
    first = json.loads(bg.line())
    print("    provider alone: first view after %.2f s (%d clusters, %d endpoints), driver CPU "
          "%.2f s" % (time.monotonic() - t0, first["summary"]["clusters"],
                      first["summary"]["endpoints"], cpu_seconds(bg.proc.pid)))
    lat = []
    for n in range(CHANGES):
        for status in ("critical", "passing"):
            time.sleep(0.3)
            t = time.monotonic()
            fake.call("set_check", id="%s-%d" % (svc(n), 0), node="node0", status=status)
            bg.line()
            lat.append((time.monotonic() - t) * 1000.0)
    print("    provider alone: change to view median %.1f ms, max %.1f ms (the fake's answer "
          "included)" % (statistics.median(lat), max(lat)))
    bg.stop()


def test_1000_services_x_10_instances():
    origins = [Origin("o%d" % k).start() for k in range(INSTANCES)]
    fake = FakeProcess()
    t0 = time.monotonic()
    regs = []
    for i in range(SERVICES):
        for k, o in enumerate(origins):
            host, port = o.address.rsplit(":", 1)
            regs.append({"service": svc(i), "id": "%s-%d" % (svc(i), k), "node": "node%d" % k,
                         "node_address": host, "address": host, "port": int(port),
                         "tags": ["weir.expose=true", "weir.host=%s.test" % svc(i)]})
    fake.call("register_many", instances=regs)
    print("    fake Consul: %d services x %d instances registered in %.1f s"
          % (SERVICES, INSTANCES, time.monotonic() - t0))

    w = Weir({"routes": [], "clusters": [],
              "discovery": [{"type": "consul", "address": fake.url}]})
    spawn = time.monotonic()
    w.start(wait_ready=False)
    wait_for(lambda: any(p[2] == SERVICES and p[3] == SERVICES for p in publications(w)),
             timeout=60, interval=0.01, what="a snapshot with every service")
    check(all(routable(w, i) for i in (0, SERVICES // 2, SERVICES - 1)), "services answer")
    routable_s = time.monotonic() - spawn
    cpu_sync = cpu_seconds(w.pid)
    pubs = publications(w)
    full = next(p for p in pubs if p[2] == SERVICES)
    sync_s = full[0] - start_time(w)
    rss_sync, hwm_sync = rss(w)
    print("    initial sync: %.3f s from the provider's start to the full snapshot (%d snapshots "
          "before it; its build %.1f ms); %.2f s from spawn to routable; weir CPU %.2f s"
          % (sync_s, sum(1 for p in pubs if p[1] < full[1]) - 0, full[4], routable_s, cpu_sync))
    print("    RSS after sync: %.1f MiB (peak %.1f MiB)" % (rss_sync, hwm_sync))

    lat = []
    builds = []
    for n in range(CHANGES):
        i = (n * 97 + 13) % SERVICES
        for status in ("critical", "passing"):
            time.sleep(0.3)  # let the watch's next blocking query reach the fake
            last = publications(w)[-1][1]
            t_change = time.time()
            fake.call("set_check", id="%s-%d" % (svc(i), n % INSTANCES),
                      node="node%d" % (n % INSTANCES), status=status)
            wait_for(lambda: publications(w)[-1][1] > last, timeout=10, interval=0.002,
                     what="the change published")
            p = next(p for p in publications(w) if p[1] > last)
            lat.append((p[0] - t_change) * 1000.0)
            builds.append(p[4])
    eps = {c["name"]: len(c["endpoints"]) for c in w.clusters()["clusters"]}
    check_eq(sum(eps.values()), SERVICES * INSTANCES, "endpoints after the changes")
    rss_end, hwm_end = rss(w)
    print("    single change to published snapshot: median %.0f ms, max %.0f ms over %d changes "
          "(snapshot build median %.1f ms)" % (statistics.median(lat), max(lat), len(lat),
                                                statistics.median(builds)))
    print("    RSS after the changes: %.1f MiB (peak %.1f MiB)" % (rss_end, hwm_end))
    print("    targets: sync < 2 s: %s; change < 50 ms: %s; RSS < 100 MiB: %s"
          % ("met" if sync_s < 2 else "MISSED", "met" if statistics.median(lat) < 50 else
             "MISSED", "met" if hwm_end < 100 else "MISSED"))
    w.stop()
    provider_alone(fake)
    if SLOW == 1 and not os.environ.get("WEIR_TEST_SLOW") and SERVICES == 1000:
        check(sync_s < 10, "initial sync %.2f s" % sync_s)
        check(statistics.median(lat) < 500, "single change %.0f ms" % statistics.median(lat))
        check(hwm_end < 200, "RSS %.0f MiB" % hwm_end)


if __name__ == "__main__":
    run()
