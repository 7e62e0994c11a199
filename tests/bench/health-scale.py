"""What health checking costs: 1,000 endpoints (1,000 loopback listeners of one asyncio
process on 127.0.0.1) checked every second, with TCP checks and then with HTTP checks.
weir's CPU time (user + system, from /proc) is measured over 20 s once every endpoint has been
checked, and compared with the same configuration without checks. Issue 4 asks for under 5 %
of one core; the figures are printed.

CPU time, not wall time, is measured; a wide regression bound is only asserted on plain
builds (sanitizers and valgrind cost several times more)."""

import json
import os

import sys as _sys
_sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import *  # noqa: E402

N = 1000
MEASURE_S = 20
TEST_TIMEOUT = 240

_ORIGINS = r'''
import asyncio, json, resource, sys

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
N = int(sys.argv[1])
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
conns = [0]
requests = [0]

async def handle(reader, writer):
    # Counts connections (a TCP check only connects) and HTTP requests, answered keep-alive
    # as real servers do (weir's HTTP checks reuse their connection).
    conns[0] += 1
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            requests[0] += 1
            writer.write(RESP)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()

async def report():
    while True:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        print(conns[0], requests[0], flush=True)

async def main():
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=128)
               for _ in range(N)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    await report()

asyncio.run(main())
'''


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / float(tick)  # utime + stime


class Listeners:
    """N listeners on 127.0.0.1 in one asyncio process; checks() counts the connections they
    accepted (TCP checks) or the HTTP requests they answered (HTTP checks)."""

    def __init__(self, n):
        path = os.path.join(tmpdir(), "origins.py")
        write_file(path, _ORIGINS)
        self.bg = Background(["/usr/bin/python3", path, str(n)], interactive=True)
        self.ports = json.loads(self.bg.line())
        check_eq(len(self.ports), n, "listeners")

    def counts(self):
        self.bg.send("\n")
        return [int(x) for x in self.bg.line().split()]

    def checks(self, check_type):
        conns, requests = self.counts()
        return requests if check_type == "http" else conns


def config(ports, check_type=None):
    opts = {}
    if check_type is not None:
        opts["health_check"] = {"type": check_type, "interval_ms": 1000, "timeout_ms": 1000,
                                "healthy_threshold": 1, "unhealthy_threshold": 2}
        if check_type == "http":
            opts["health_check"]["path"] = "/healthz"
    return {"routes": [route("all", "c")],
            "clusters": [cluster("c", *["127.0.0.1:%d" % p for p in ports], **opts)]}


def measure(w, seconds):
    c0 = cpu_seconds(w.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(w.pid) - c0) / (time.monotonic() - t0)


def cost_of(check_type, origins, ports):
    """weir's CPU share with <check_type> checks of every endpoint, and the checks it ran."""
    w = Weir(config(ports, check_type), workers=1).start()
    first = origins.checks(check_type)
    wait_for(lambda: origins.checks(check_type) - first >= N, timeout=30,
             what="a first check of every endpoint")
    time.sleep(2)
    c0 = origins.checks(check_type)
    conns0 = origins.counts()[0]
    share = measure(w, MEASURE_S)
    checks = origins.checks(check_type) - c0
    conns = origins.counts()[0] - conns0
    m = w.metrics()
    unhealthy = sum(1 for n, l, v in m if n == "weir_endpoint_healthy" and v == 0)
    w.stop()
    check_eq(unhealthy, 0, "endpoints unhealthy (%s checks)" % check_type)
    check(checks >= N * MEASURE_S * 0.8,
          "%s checks ran at about one per endpoint per second (%d)" % (check_type, checks))
    print("    %s checks: %d in %d s (%.0f/s) over %d new connections, weir CPU %.2f %% of one core"
          % (check_type, checks, MEASURE_S, checks / float(MEASURE_S), conns, share * 100))
    return share


def strict():
    return SLOW == 1 and not os.environ.get("WEIR_TEST_SLOW")


def test_cpu_of_1000_endpoints_at_1s():
    origins = Listeners(N)
    ports = origins.ports
    base = Weir(config(ports), workers=1).start()
    time.sleep(2)
    idle = measure(base, 5)
    base.stop()
    print("    without checks: weir CPU %.2f %% of one core" % (idle * 100))
    tcp = cost_of("tcp", origins, ports)
    http = cost_of("http", origins, ports)
    # The figures go to the report (health/README.md); the assertion only guards against a
    # regression by a wide margin, because CPU time still grows when other processes fight
    # for the same cores (cache misses, interrupts): issue 4 asks for < 5 %.
    if strict():
        check(tcp - idle < 0.10, "TCP checks cost %.2f %% of a core" % ((tcp - idle) * 100))
        check(http - idle < 0.15, "HTTP checks cost %.2f %% of a core" % ((http - idle) * 100))


if __name__ == "__main__":
    run()
