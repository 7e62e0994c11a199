"""Load balancing through the proxy: weighted round robin, empty clusters, refused endpoints
(retry and failure accounting), all endpoints down, the other policies."""

from harness import *


def counts_over(w, n, path="/", headers=None):
    c = w.conn()
    counts = {}
    for _ in range(n):
        r = get_on(c, "GET", path, headers)
        check_eq(r.status, 200, "GET %s" % path)
        k = r.header("X-Origin")
        counts[k] = counts.get(k, 0) + 1
    c.close()
    return counts


def endpoint(w, cname, address):
    for c in w.clusters()["clusters"]:
        if c["name"] == cname:
            for e in c["endpoints"]:
                if e["address"] == address:
                    return e
    raise AssertionError("endpoint %s of %s not in /clusters" % (address, cname))


def test_round_robin_weights_1_3():
    a, b = Origin("a").start(), Origin("b").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", (a, 1), (b, 3))]}).start()
    counts = counts_over(w, 400)
    check(abs(counts.get("a", 0) - 100) <= 20 and abs(counts.get("b", 0) - 300) <= 20,
          "weights 1:3 over 400 requests: %r" % counts)
    wait_for(lambda: endpoint(w, "c", b.address)["requests"] >= counts["b"], timeout=5,
             what="/clusters to count the requests")
    check_eq(endpoint(w, "c", b.address)["requests"], counts["b"], "/clusters requests of b")


def test_round_robin_state_survives_snapshot_swaps():
    """A snapshot swap that does not change a cluster keeps its balancer state: round robin
    over two equal endpoints stays exactly alternating while a rollout elsewhere changes
    weight between every request (it used to restart at the first endpoint each swap)."""
    a, b, g = Origin("a").start(), Origin("b").start(), Origin("g").start()
    w = Weir({"routes": [route("all", "c"), route("ro", host="ro.test", rollout="ro")],
              "clusters": [cluster("c", a, b), cluster("blue", g), cluster("green", g)],
              "rollouts": [{"name": "ro", "blue": "blue", "green": "green"}]}).start()
    c = w.conn()
    counts = {}
    for i in range(100):
        check_eq(w.admin("PUT", "/rollouts/ro", {"green_weight": i % 101}).status, 200, "PUT")
        r = get_on(c, "GET", "/")
        counts[r.header("X-Origin")] = counts.get(r.header("X-Origin"), 0) + 1
    c.close()
    check_eq(counts, {"a": 50, "b": 50}, "round robin across 100 swaps")


def test_round_robin_two_workers():
    a, b = Origin("a").start(), Origin("b").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", (a, 1), (b, 3))]}, workers=2).start()
    counts = {}
    for _ in range(200):
        k = w.http("GET", "/").header("X-Origin")  # new connections spread over workers
        counts[k] = counts.get(k, 0) + 1
    check(abs(counts.get("b", 0) - 150) <= 20, "weights 1:3 with two workers: %r" % counts)


def test_empty_endpoints_503():
    w = Weir({"routes": [route("all", "empty")],
              "clusters": [{"name": "empty", "endpoints": []}]}).start()
    r = w.http("GET", "/")
    check_eq(r.status, 503, "cluster with endpoints: []")
    check(len(r.body) < 1000, "short body")


def test_refused_endpoint_retried():
    a = Origin("a").start()
    dead = dead_address()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", a, dead)]}).start()
    for i in range(20):
        r = w.http("GET", "/")
        check_eq(r.status, 200, "GET %d with one refusing endpoint (retry elsewhere)" % i)
        check_eq(r.header("X-Origin"), "a")
    wait_for(lambda: endpoint(w, "c", dead)["failures"] >= 1, timeout=5,
             what="failures of the refusing endpoint")
    check_eq(endpoint(w, "c", a.address)["failures"], 0, "no failures on the good one")
    v = metric(w.metrics(), "weir_upstream_connect_failures_total", cluster="c")
    check(v is not None and v >= 1, "weir_upstream_connect_failures_total{cluster=c}: %r" % v)


def test_all_endpoints_down_502():
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", dead_address(), dead_address())]}).start()
    for _ in range(3):
        r = w.http("GET", "/")
        check_eq(r.status, 502, "all endpoints refuse")
    r = w.http("POST", "/", body=b"abc")
    check_eq(r.status, 502, "POST with all endpoints refusing")


def test_retries_zero_no_retry():
    a = Origin("a").start()
    dead = dead_address()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", dead, a, retries=0)]}).start()
    statuses = [w.http("GET", "/").status for _ in range(10)]
    check(502 in statuses and 200 in statuses,
          "with retries 0 a refused connect is answered 502: %r" % statuses)


def test_upstream_5xx_counted_as_failure():
    a = Origin("a").start()
    w = Weir({"routes": [route("all", "c")], "clusters": [cluster("c", a)]}).start()
    r = w.http("GET", "/status/503")
    check_eq(r.status, 503, "origin's 503 passes through")
    wait_for(lambda: endpoint(w, "c", a.address)["failures"] >= 1, timeout=5,
             what="the 503 to count as a failure of the endpoint")
    e = endpoint(w, "c", a.address)
    check(e["requests"] >= 1, "requests: %r" % e)


def test_least_request_uses_all():
    os_ = [Origin("lr%d" % i).start() for i in range(3)]
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", *os_, lb_policy="least_request")]}).start()
    counts = counts_over(w, 150)
    check_eq(sorted(counts), ["lr0", "lr1", "lr2"], "every endpoint used: %r" % counts)


def test_random_uses_all():
    os_ = [Origin("r%d" % i).start() for i in range(2)]
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", *os_, lb_policy="random")]}).start()
    counts = counts_over(w, 200)
    check(min(counts.get("r0", 0), counts.get("r1", 0)) >= 50, "random spread: %r" % counts)


def test_ring_hash_header_sticky():
    os_ = [Origin("h%d" % i).start() for i in range(3)]
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", *os_, lb_policy="ring_hash",
                                   hash_on={"header": "x-user"})]}).start()
    c = w.conn()
    seen = {}
    for u in range(40):
        got = {get_on(c, "GET", "/", {"x-user": "user%d" % u}).header("X-Origin")
               for _ in range(5)}
        check_eq(len(got), 1, "user%d sticks to one endpoint: %r" % (u, got))
        seen[got.pop()] = True
    c.close()
    check(len(seen) >= 2, "different keys spread over endpoints: %r" % seen)


def test_ring_hash_source_ip():
    os_ = [Origin("s%d" % i).start() for i in range(3)]
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", *os_, lb_policy="ring_hash",
                                   hash_on="source_ip")]}).start()
    got = {w.http("GET", "/").header("X-Origin") for _ in range(10)}
    check_eq(len(got), 1, "one client IP, one endpoint: %r" % got)


if __name__ == "__main__":
    run()
