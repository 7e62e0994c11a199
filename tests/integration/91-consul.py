#!/usr/bin/python3
"""The Consul provider with the real weir against the fake Consul agent (tests/fakes/):
services exposed by tags become routable, instance and check changes reach traffic (the
latency is printed), KV rollouts split traffic and move with KV writes, an outage (refused,
hung, 5xx) keeps the routes serving and converges after, an index that goes backwards, an
agent that does not block, ACL tokens (required, wrong, rotated), TLS, the datacenter, IPv6
and node addresses, staleness, and a bad tag that only skips its service."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))

from consul_fake import FakeConsul  # noqa: E402
from harness import *  # noqa: E402,F403

TEST_TIMEOUT = 120
WAIT_MS = 2000  # blocking-query wait: short, so timeouts and index resets play out quickly

A = B = C = D = None


def setup_module():
    global A, B, C, D
    A, B, C, D = (Origin(n).start() for n in ("a", "b", "c", "d"))


class _Fake:
    def __init__(self, **kw):
        self.f = FakeConsul(**kw).start()

    def stop(self):
        self.f.close()


def fake(**kw):
    from harness import _register
    fk = _Fake(**kw)
    _register(fk)
    return fk.f


def hp(origin):
    return origin.host, origin.port


def add(f, service, origin, id=None, tags=("weir.expose=true",), node="node1", **kw):
    host, port = hp(origin)
    f.register(service, id=id or "%s-%s" % (service, origin.name), node=node, address=host,
               port=port, tags=list(tags), **kw)


def consul_weir(f, wait_ready=True, token=None, **opts):
    """weir with one consul provider on <f>; <token>: written to the token file first."""
    d = {"type": "consul", "address": f.url, "wait_ms": WAIT_MS}
    d.update(opts)
    w = Weir({"routes": [], "clusters": [], "discovery": [d]})
    if d.get("token_file"):
        d["token_file"] = os.path.join(w.dir, d["token_file"])
        if token is not None:
            write_file(d["token_file"], token)
    w.start(wait_ready=wait_ready)
    if wait_ready:
        wait_first_view(w)
    return w


def wait_first_view(w, timeout=10):
    """/ready turns 200 when the provider delivered its first view, which may be a moment
    before the snapshot built from it is published (version 1 is the file alone)."""
    w.wait_ready(timeout=timeout)
    wait_for(lambda: w.config_version() != "1", timeout=5, what="the first Consul view")


def origin_of(w, host="shop.test", path="/"):
    try:
        r = w.http("GET", path, headers={"Host": host}, timeout=5)
    except OSError:
        return None, None
    return r.status, r.header("X-Origin")


def origins_seen(w, n=30, host="shop.test", path="/"):
    seen = {}
    for _ in range(n):
        st, o = origin_of(w, host, path)
        key = o if st == 200 else st
        seen[key] = seen.get(key, 0) + 1
    return seen


def time_until(pred, timeout=10.0, interval=0.005, what="condition"):
    """Seconds until pred() holds (polling fast, to measure change-to-traffic latency)."""
    t0 = time.monotonic()
    wait_for(pred, timeout=timeout, interval=interval, what=what)
    return time.monotonic() - t0


def clusters_by_name(w):
    return {c["name"]: c for c in w.clusters()["clusters"]}


def discovery_errors(w):
    out = {}
    for name, labels, v in w.metrics():
        if name == "weir_discovery_errors_total":
            out[labels["reason"]] = out.get(labels["reason"], 0) + v
    return out


# ---- tests ------------------------------------------------------------------------------------

def test_exposed_service_routable():
    f = fake()
    add(f, "web", A, tags=["weir.expose=true", "weir.host=shop.test,www.shop.test",
                           "weir.path=/shop/"], weights={"Passing": 7, "Warning": 1})
    add(f, "hidden", B, tags=["other"])
    w = consul_weir(f)
    check_eq(origin_of(w, "shop.test", "/shop/x"), (200, "a"))
    check_eq(origin_of(w, "www.shop.test", "/shop/"), (200, "a"), "second host")
    check_eq(origin_of(w, "shop.test", "/other")[0], 404, "outside weir.path")
    cl = clusters_by_name(w)
    check("consul:hidden" not in cl, "a service without weir.expose=true got a cluster")
    web = cl["consul:web"]
    check_eq(web["source"], "consul")
    check_eq([(e["address"], e["weight"]) for e in web["endpoints"]], [(A.address, 7)],
             "endpoints with Weights.Passing")
    routes = {r["name"] for r in w.admin("GET", "/config").json()["routes"]}
    check({"consul:web@shop.test", "consul:web@www.shop.test"} <= routes, "routes %r" % routes)


def test_instance_added_and_removed_latency():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    check_eq(origin_of(w), (200, "a"))
    add(f, "web", B)
    took_add = time_until(lambda: "b" in origins_seen(w, 4), what="instance b serving")
    f.deregister("web-a")
    took_rm = time_until(lambda: origins_seen(w, 6) == {"b": 6}, what="instance a gone")
    print("  consul change to traffic: add %.0f ms, remove %.0f ms" % (took_add * 1e3,
                                                                       took_rm * 1e3))
    # the target is well under a second; asserted generously for a busy 2-core machine
    check(took_add < 3 and took_rm < 3, "add %.2fs remove %.2fs" % (took_add, took_rm))
    f.set_check("web-b", "critical")
    wait_for(lambda: origin_of(w)[0] == 503, timeout=5, what="503 with no instance passing")
    check_eq(clusters_by_name(w)["consul:web"]["endpoints"], [], "an empty cluster stays")
    f.deregister("web-b")  # the last instance: the service leaves the catalog, and its routes
    wait_for(lambda: origin_of(w)[0] == 404, timeout=5, what="404 once the service is gone")
    check("consul:web" not in clusters_by_name(w))


def test_check_critical_removes_instance():
    f = fake()
    add(f, "web", A)
    add(f, "web", B, node="node2")
    w = consul_weir(f)
    wait_for(lambda: set(origins_seen(w, 6)) == {"a", "b"}, timeout=5, what="a and b")
    f.set_check("web-a", "critical")
    took = time_until(lambda: origins_seen(w, 6) == {"b": 6}, what="a withdrawn")
    print("  check critical to traffic: %.0f ms" % (took * 1e3))
    f.set_check("web-a", "warning")  # ?passing: warning does not serve either
    time.sleep(0.3)
    check_eq(origins_seen(w, 6), {"b": 6}, "a warning instance got traffic")
    f.set_check("web-a", "passing")
    wait_for(lambda: set(origins_seen(w, 6)) == {"a", "b"}, timeout=5, what="a back")
    f.set_node_health("node2", "critical")  # the node's serfHealth check fails b
    wait_for(lambda: origins_seen(w, 6) == {"a": 6}, timeout=5, what="b's node down")


def test_kv_rollout_splits_and_shifts():
    f = fake()
    add(f, "web", A)
    add(f, "web-blue", B, tags=[])  # blue and green need no weir.expose tag
    add(f, "web-green", C, tags=[])
    w = consul_weir(f)
    check_eq(origin_of(w), (200, "a"))
    f.kv_put("weir/rollouts/web", json.dumps({"blue": "web-blue", "green": "web-green",
                                              "green_weight": 20}))
    wait_for(lambda: origin_of(w)[1] in ("b", "c"), timeout=5, what="rollout active")
    seen = origins_seen(w, 200)
    print("  rollout 20%%: %r" % seen)
    check(set(seen) <= {"b", "c"}, "traffic outside the rollout: %r" % seen)
    check(20 <= seen.get("c", 0) <= 65, "green share %r of 200 at 20%%" % seen.get("c"))
    ro = {r["name"]: r for r in w.admin("GET", "/rollouts").json()["rollouts"]}
    check_eq((ro["consul:web"]["blue"], ro["consul:web"]["green"],
              ro["consul:web"]["green_weight"]), ("consul:web-blue", "consul:web-green", 20))
    f.kv_put("weir/rollouts/web", json.dumps({"blue": "web-blue", "green": "web-green",
                                              "green_weight": 100}))
    took = time_until(lambda: origins_seen(w, 10) == {"c": 10}, what="all green")
    print("  KV weight change to traffic: %.0f ms" % (took * 1e3))
    f.kv_put("weir/rollouts/web", "not json")  # a bad value: logged, the rollout left out
    wait_for(lambda: origin_of(w) == (200, "a"), timeout=5, what="bad rollout dropped")
    check("rollout left out" in w.log(), "the bad KV value was not reported")
    f.kv_put("weir/rollouts/web", json.dumps({"blue": "web-blue", "green": "web-green",
                                              "green_weight": 0}))
    wait_for(lambda: origins_seen(w, 10) == {"b": 10}, timeout=5, what="all blue")
    f.kv_delete("weir/rollouts/web")
    wait_for(lambda: origins_seen(w, 10) == {"a": 10}, timeout=5, what="rollout removed")


def _outage(f, w, down, up, seconds=10.0):
    check_eq(origin_of(w), (200, "a"))
    down()
    add(f, "web", B)  # a change while Consul is unreachable
    t_end = time.monotonic() + seconds
    served = failed = 0
    while time.monotonic() < t_end:
        st = origin_of(w)
        if st == (200, "a"):
            served += 1
        else:
            failed += 1
        time.sleep(0.05)
    check_eq(failed, 0, "requests that failed during the outage (served %d)" % served)
    v0 = w.config_version()
    up()
    took = time_until(lambda: "b" in origins_seen(w, 6), timeout=45, interval=0.05,
                      what="converged after the outage")
    print("  outage %.0fs: %d requests served, converged %.1f s after" % (seconds, served, took))
    check(w.config_version() != v0)


def test_consul_refusing_for_10s_keeps_serving():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    _outage(f, w, f.stop, f.start)
    errs = discovery_errors(w)
    check(errs.get("connect", 0) >= 1, "connect errors not counted: %r" % errs)
    check(w.log().count("Connection refused") <= 10, "the outage flooded the log")


def test_consul_hanging_for_10s_keeps_serving():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    _outage(f, w, f.pause, f.resume)


def test_consul_errors_5xx_keep_serving():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    _outage(f, w, lambda: f.fail(500, "No cluster leader"), lambda: f.fail(None), seconds=4)
    check(discovery_errors(w).get("http", 0) >= 1)


def test_index_going_backwards():
    f = fake()
    for i in range(30):
        f.kv_put("noise/%d" % i, "x")  # push the index up
    add(f, "web", A)
    # A long wait: a client that kept its (now too high) index would see the next change only
    # when that wait runs out; one that restarts from 0 sees it at once.
    w = consul_weir(f, wait_ms=15000)
    check_eq(origin_of(w), (200, "a"))
    time.sleep(0.3)
    f.rewind(5)  # a snapshot restore: every index lower than what weir holds
    t0 = time.monotonic()
    time.sleep(0.5)
    add(f, "web", B)
    took = time_until(lambda: "b" in origins_seen(w, 6), timeout=10,
                      what="a change after the index went backwards")
    n = len(f.requests_for("/v1/health/service/web", since=t0))
    print("  after the index went backwards: change served in %.0f ms, %d health queries"
          % (took * 1e3, n))
    check(n < 20, "%d health queries in %.1f s: the watch spins" % (n, time.monotonic() - t0))
    check(took < 7.5, "the change took %.1f s: the index was not reset" % took)


def test_agent_that_does_not_block_is_rate_limited():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    f.blocking = False  # answers at once with the same index
    t0 = time.monotonic()
    time.sleep(3)
    n = len(f.requests_for("/v1/health/service/web", since=t0))
    print("  non-blocking agent: %d health queries in 3 s" % n)
    check(n <= 20, "%d queries in 3 s: the loop is not rate-limited" % n)
    check_eq(origin_of(w), (200, "a"))
    f.blocking = True


def test_acl_token_required_and_rotated():
    f = fake(tokens={"secret": "write", "secret2": "write"})
    add(f, "web", A)
    w = consul_weir(f, wait_ready=False, token_file="token", token="wrong\n")
    time.sleep(1.5)
    r = w.admin("GET", "/ready")
    check_eq(r.status, 503, "ready without a single answer from Consul")
    check(discovery_errors(w).get("auth", 0) >= 1, "403 not counted as auth")
    check("ACL not found" in w.log(), "the 403 body was not logged")
    write_file(os.path.join(w.dir, "token"), "secret\n")
    wait_first_view(w)
    check_eq(origin_of(w), (200, "a"))
    # rotation: the old token is revoked, the file gets the new one
    f.tokens = {"secret2": "write"}
    add(f, "web", B)  # wakes the blocked queries, which now get 403
    wait_for(lambda: discovery_errors(w).get("auth", 0) >= 2, timeout=10, what="403 after revoke")
    check_eq(origin_of(w)[0], 200, "the routes serve while the token is refused")
    write_file(os.path.join(w.dir, "token"), "secret2")
    wait_for(lambda: "b" in origins_seen(w, 6), timeout=10, what="recovered with the new token")


def test_missing_token_file_sends_nothing_anonymous():
    f = fake(tokens={"secret": "write"})
    add(f, "web", A)
    w = consul_weir(f, wait_ready=False, token_file="absent-token")
    time.sleep(1.5)
    check_eq(w.admin("GET", "/ready").status, 503)
    check_eq([r for r in f.requests if r["path"].startswith("/v1/")], [],
             "queries sent without the token")
    write_file(os.path.join(w.dir, "absent-token"), "secret")
    wait_first_view(w)
    check_eq(origin_of(w), (200, "a"))


def test_bad_tag_skips_only_that_service():
    f = fake()
    add(f, "good", A, tags=["weir.expose=true", "weir.host=good.test"])
    add(f, "bad", B, tags=["weir.expose=true", "weir.host=bad_host.test"])
    add(f, "badpath", C, tags=["weir.expose=true", "weir.path=nope"])
    w = consul_weir(f)
    check_eq(origin_of(w, "good.test"), (200, "a"))
    check("consul:bad" not in clusters_by_name(w))
    log = w.log()
    lines = log.splitlines()
    check_eq(sum("bad_host.test" in l for l in lines), 1, "log lines for the bad host tag")
    check_eq(sum("weir.path=nope" in l for l in lines), 1, "log lines for the bad path tag")
    add(f, "good", D)  # the good service's changes still flow
    wait_for(lambda: "d" in origins_seen(w, 6, "good.test"), timeout=5, what="d serving")
    add(f, "bad", B, tags=["weir.expose=true", "weir.host=bad.test"])  # fixed
    wait_for(lambda: origin_of(w, "bad.test") == (200, "b"), timeout=5, what="fixed service")


def test_health_path_tag_adds_check():
    f = fake()
    add(f, "web", A, tags=["weir.expose=true", "weir.health-path=/healthz"])
    w = consul_weir(f)
    cl = [c for c in w.admin("GET", "/config").json()["clusters"] if c["name"] == "consul:web"]
    check_eq(cl[0]["health_check"]["type"], "http")
    check_eq(cl[0]["health_check"]["path"], "/healthz")
    wait_for(lambda: endpoint_health(w, "consul:web", A.address) == "healthy", timeout=10,
             what="a checked healthy")


def test_tls_with_ca_file():
    d = tmpdir()
    crt, key = make_cert(d, "consul.test")
    f = fake(tls=(crt, key))
    add(f, "web", A)
    w = consul_weir(f, ca_file=crt)
    check(f.url.startswith("https://"))
    check_eq(origin_of(w), (200, "a"))
    add(f, "web", B)
    wait_for(lambda: "b" in origins_seen(w, 6), timeout=5, what="a change over TLS")


def test_tls_with_wrong_ca_is_refused():
    d = tmpdir()
    crt, key = make_cert(d, "consul.test")
    other, _ = make_cert(d, "other.test")
    f = fake(tls=(crt, key))
    add(f, "web", A)
    w = consul_weir(f, wait_ready=False, ca_file=other)
    wait_for(lambda: discovery_errors(w).get("connect", 0) >= 1, timeout=10, what="TLS error")
    check_eq(w.admin("GET", "/ready").status, 503, "ready with an unverified Consul")
    check("certificate" in w.log(), "the TLS error detail was not logged")


def test_datacenter_parameter():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f, datacenter="dc1")
    check_eq(origin_of(w), (200, "a"))
    check(all(r["query"].get("dc") == "dc1" for r in f.requests if r["path"].startswith("/v1/")),
          "a query without dc=dc1")
    w2 = consul_weir(f, wait_ready=False, datacenter="elsewhere")  # Consul: 500 No path to dc
    wait_for(lambda: discovery_errors(w2).get("http", 0) >= 1, timeout=10, what="500 counted")
    check("No path to datacenter" in w2.log())


def test_ipv6_instances_and_node_address():
    v6 = Origin("v6", host="::1").start()
    f = fake()
    host, port = hp(v6)
    f.register("web", id="web-v6", address=host, port=port, tags=["weir.expose=true"])
    # no service address: the node's address is used
    f.register("web", id="web-node", node="node2", node_address=A.host, address="",
               port=A.port, tags=["weir.expose=true"])
    w = consul_weir(f)
    eps = sorted(e["address"] for e in clusters_by_name(w)["consul:web"]["endpoints"])
    check_eq(eps, sorted(["[::1]:%d" % port, A.address]), "endpoints")
    wait_for(lambda: set(origins_seen(w, 6)) == {"v6", "a"}, timeout=5, what="both serving")


def test_quiet_consul_is_not_stale_but_a_silent_one_is():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f, wait_ms=1000, stale_after_ms=2500)
    time.sleep(4)  # nothing changes: blocking queries come back empty-handed every second
    check_eq(w.admin("GET", "/ready").status, 200, "ready while Consul answers")
    f.stop()
    wait_for(lambda: w.admin("GET", "/ready").status == 503, timeout=10,
             what="not ready once Consul stopped answering")
    check_eq(origin_of(w), (200, "a"), "the routes still serve")
    f.start()
    wait_for(lambda: w.admin("GET", "/ready").status == 200, timeout=40, what="ready again")


def test_keepalive_connection_survives_changes():
    f = fake()
    add(f, "web", A)
    w = consul_weir(f)
    conn = w.conn()
    check_eq(get_on(conn, "GET", "/", headers={"Host": "shop.test"}).header("X-Origin"), "a")
    add(f, "web", B)
    f.deregister("web-a")
    wait_for(lambda: origins_seen(w, 4) == {"b": 4}, timeout=5, what="b only")
    r = get_on(conn, "GET", "/", headers={"Host": "shop.test"})
    check_eq((r.status, r.header("X-Origin")), (200, "b"), "the old connection, re-routed")


if __name__ == "__main__":
    run()
