"""Passive outlier detection through the real binary: consecutive 5xx and consecutive gateway
failures eject an endpoint, ejections back off (base x times ejected, capped), at most
max(1, floor(n x max_ejection_percent / 100)) endpoints of a cluster are out at once, ejected
endpoints show as "ejected" in /clusters and count in weir_outlier_ejections_total."""

from harness import *


def od(**kw):
    o = {"consecutive_5xx": 3, "consecutive_gateway_failure": 3, "base_ejection_ms": 1000,
         "max_ejection_ms": 2500, "max_ejection_percent": 50}
    o.update(kw)
    return o


def drive(w, until, what, limit=2000):
    """GETs on one connection until <until>() holds (at most <limit> requests)."""
    c = w.conn()
    try:
        for _ in range(limit):
            get_on(c, "GET", "/")
            if until():
                return
    finally:
        c.close()
    raise AssertionError("%s: not after %d requests" % (what, limit))


def test_consecutive_5xx_ejection_and_backoff():
    bad = ToggleOrigin("bad").start()
    bad.status = 500
    good = Origin("good").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", bad, good, outlier_detection=od())]}).start()
    lengths = []
    for round_ in range(3):
        drive(w, lambda: endpoint_health(w, "c", bad.address) == "ejected",
              "ejection %d" % (round_ + 1))
        t_ej = time.monotonic()
        hits = bad.hits
        # While ejected, nothing goes to it.
        c = w.conn()
        for _ in range(20):
            r = get_on(c, "GET", "/")
            check_eq(r.header("X-Origin"), "good", "origin while bad is ejected")
        c.close()
        check_eq(bad.hits, hits, "requests that reached the ejected endpoint")
        wait_health(w, "c", bad.address, "healthy", timeout=30, interval=0.01)
        lengths.append(time.monotonic() - t_ej)
    print("    ejections lasted %s s (base 1 s, cap 2.5 s)" % ", ".join("%.2f" % x for x in lengths))
    # base x 1, base x 2, then capped at 2.5 s (polling adds a little to each).
    check(0.9 <= lengths[0] <= 1.8 * SLOW, "first ejection %.2f s, configured 1 s" % lengths[0])
    check(1.9 <= lengths[1] <= 2.8 * SLOW, "second ejection %.2f s, configured 2 s" % lengths[1])
    check(2.4 <= lengths[2] <= 3.3 * SLOW, "third ejection %.2f s, capped at 2.5 s" % lengths[2])
    v = metric(w.metrics(), "weir_outlier_ejections_total", cluster="c", endpoint=bad.address)
    check_eq(v, 3, "weir_outlier_ejections_total of bad")
    check_eq(metric(w.metrics(), "weir_outlier_ejections_total", cluster="c",
                    endpoint=good.address), 0, "no ejection of good")


def test_gateway_failures_eject_refusing_endpoint():
    good = Origin("good").start()
    dead = dead_address()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", good, dead, outlier_detection=od(
                  consecutive_5xx=100, consecutive_gateway_failure=2,
                  base_ejection_ms=60000, max_ejection_ms=60000))]}).start()
    c = w.conn()
    for i in range(20):
        r = get_on(c, "GET", "/")
        check_eq(r.status, 200, "GET %d (connect failures are retried elsewhere)" % i)
    c.close()
    check_eq(endpoint_health(w, "c", dead), "ejected", "refusing endpoint")
    fails = cluster_endpoint(w, "c", dead)["failures"]
    cf = metric(w.metrics(), "weir_upstream_connect_failures_total", cluster="c")
    for _ in range(50):
        check_eq(w.http("GET", "/").status, 200, "GET while ejected")
    check_eq(cluster_endpoint(w, "c", dead)["failures"], fails, "no new attempt on it")
    check_eq(metric(w.metrics(), "weir_upstream_connect_failures_total", cluster="c"), cf,
             "no new connect failure")


def test_max_ejection_percent():
    bads = [ToggleOrigin(n).start() for n in ("a", "b", "c", "d")]
    for b in bads:
        b.status = 500
    good = [Origin(n).start() for n in ("e", "f", "g", "h")]
    eps = bads + good
    # 8 endpoints x 25 % = 2 at most, whatever happens.
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", *eps, outlier_detection=od(
                  base_ejection_ms=600, max_ejection_ms=600, max_ejection_percent=25))]},
             workers=2).start()
    most = 0
    seen = set()
    t_end = time.monotonic() + 4 * SLOW
    conns = [w.conn() for _ in range(4)]
    while time.monotonic() < t_end:
        for c in conns:
            get_on(c, "GET", "/")
        out = [e["address"] for e in w.clusters()["clusters"][0]["endpoints"]
               if e["health"] == "ejected"]
        most = max(most, len(out))
        seen.update(out)
    for c in conns:
        c.close()
    print("    at most %d ejected at once; %d different endpoints ejected" % (most, len(seen)))
    check(most <= 2, "%d endpoints ejected at once; max(1, floor(8 x 25 / 100)) = 2" % most)
    check_eq(most, 2, "the budget is used")
    check(seen <= set(b.address for b in bads), "only failing endpoints ejected: %r" % seen)


def test_small_cluster_ejects_one():
    bad1 = ToggleOrigin("x").start()
    bad2 = ToggleOrigin("y").start()
    bad1.status = bad2.status = 500
    # 2 x 10 % = 0.2: max(1, 0) = 1 may still be ejected.
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", bad1, bad2, outlier_detection=od(
                  max_ejection_percent=10, base_ejection_ms=30000,
                  max_ejection_ms=30000))]}).start()
    drive(w, lambda: any(e["health"] == "ejected"
                         for e in w.clusters()["clusters"][0]["endpoints"]), "one ejection")
    c = w.conn()
    for _ in range(30):
        get_on(c, "GET", "/")
    c.close()
    states = sorted(e["health"] for e in w.clusters()["clusters"][0]["endpoints"])
    check_eq(states, ["ejected", "healthy"], "one of two ejected, never both")


def test_success_resets_streak():
    flaky = ToggleOrigin("flaky").start()
    good = Origin("good").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", flaky, good, lb_policy="round_robin",
                                   outlier_detection=od(consecutive_5xx=3))]}).start()
    # flaky alternates 500 and 200 answers: never three 5xx in a row.
    c = w.conn()
    for i in range(60):
        flaky.status = 500 if (flaky.hits % 2) == 0 else 200
        get_on(c, "GET", "/")
    c.close()
    check_eq(endpoint_health(w, "c", flaky.address), "healthy", "alternating 5xx")
    check_eq(metric(w.metrics(), "weir_outlier_ejections_total", cluster="c",
                    endpoint=flaky.address), 0, "ejections")


if __name__ == "__main__":
    run()
