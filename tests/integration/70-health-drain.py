"""Draining: an endpoint removed from the configuration gets no new requests, its in-flight
requests finish, its idle pooled connections are closed at once (not after idle_timeout_ms),
and it serves normally again when it comes back."""

from harness import *


def cfg_with(*origins, **opts):
    return {"routes": [route("all", "c")], "clusters": [cluster("c", *origins, **opts)]}


def test_idle_pooled_connections_closed_on_removal():
    a = ToggleOrigin("a").start()
    b = ToggleOrigin("b").start()
    w = Weir(cfg_with(a, b, idle_timeout_ms=60000)).start()
    c = w.conn()
    for _ in range(10):
        check_eq(get_on(c, "GET", "/").status, 200, "GET")
    c.close()
    check(a.connections >= 1, "a has a pooled connection")
    time.sleep(0.2)
    check_eq(a.closed, 0, "pooled connections of a stay open (idle_timeout_ms 60 s)")
    w.reload_and_wait(cfg_with(b, idle_timeout_ms=60000))
    wait_for(lambda: a.closed == a.connections, timeout=5,
             what="weir to close its idle connections to the removed endpoint")
    hits = a.hits
    c = w.conn()
    for _ in range(10):
        r = get_on(c, "GET", "/")
        check_eq(r.header("X-Origin"), "b", "origin after a was removed")
    c.close()
    check_eq(a.hits, hits, "requests to the removed endpoint")
    check_eq(b.closed, 0, "b keeps its pooled connections")
    # It comes back: not draining any more, traffic again.
    w.reload_and_wait(cfg_with(a, b, idle_timeout_ms=60000))
    check_eq(endpoint_health(w, "c", a.address), "healthy", "a back")
    seen = set()
    c = w.conn()
    for _ in range(10):
        seen.add(get_on(c, "GET", "/").header("X-Origin"))
    c.close()
    check_eq(seen, {"a", "b"}, "origins once a is back")


def test_in_flight_request_finishes_on_removal():
    a = Origin("a").start()
    b = Origin("b").start()
    w = Weir(cfg_with(a)).start()
    result = {}

    def slow():
        result["r"] = w.http("GET", "/slow/1500")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: cluster_endpoint(w, "c", a.address)["active_requests"] == 1,
             what="the slow request in flight")
    w.reload_and_wait(cfg_with(b))
    check_eq(w.http("GET", "/").header("X-Origin"), "b", "new request after the removal")
    t.join(15 * SLOW)
    check(not t.is_alive(), "slow request finished")
    check_eq(result["r"].status, 200, "in-flight request to the removed endpoint")
    check_eq(result["r"].body, b"slow\n", "its body")


def test_removed_endpoint_of_health_checked_cluster():
    a = ToggleOrigin("a").start()
    b = ToggleOrigin("b").start()
    hc = {"type": "http", "path": "/healthz", "interval_ms": 100, "timeout_ms": 250,
          "healthy_threshold": 1, "unhealthy_threshold": 1}
    w = Weir(cfg_with(a, b, health_check=hc)).start()
    wait_for(lambda: a.health_hits >= 2, what="checks of a")
    w.reload_and_wait(cfg_with(b, health_check=hc))
    time.sleep(0.3)  # a check that was already running may still land
    hits = a.health_hits
    time.sleep(0.5)
    check_eq(a.health_hits, hits, "no more checks of the removed endpoint")
    check(b.health_hits >= 2, "b still checked")


if __name__ == "__main__":
    run()
