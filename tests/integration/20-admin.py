"""Admin API: /live, /ready, /config, /clusters, /metrics, bearer token (INTERFACES §3)."""

from harness import *

W = None
A = B = None
DEAD = None


def setup_module():
    global W, A, B, DEAD
    A, B = Origin("a").start(), Origin("b").start()
    DEAD = dead_address()
    cfg = {
        "routes": [route("dead", "deadc", path_prefix="/dead/"), route("all", "c")],
        "clusters": [cluster("c", A, B), cluster("deadc", DEAD, retries=0)],
    }
    W = Weir(cfg).start()


def send(n, path="/x"):
    c = W.conn()
    for _ in range(n):
        r = get_on(c, "GET", path)
        check_eq(r.status, 200, "GET %s through weir" % path)
    c.close()


def cluster_view(name):
    for c in W.clusters()["clusters"]:
        if c["name"] == name:
            return c
    raise AssertionError("cluster %s not in /clusters" % name)


def test_live_and_ready():
    check_eq(W.admin("GET", "/live").status, 200, "/live")
    check_eq(W.admin("GET", "/ready").status, 200, "/ready")


def test_config_has_version():
    r = W.admin("GET", "/config")
    check_eq(r.status, 200, "/config")
    j = r.json()
    check(isinstance(j.get("version"), str) and j["version"], "version string in %r" % j)


def test_clusters_exact_shape():
    j = W.clusters()
    check_eq(sorted(j.keys()), ["clusters", "version"], "/clusters top-level keys")
    check_eq(j["version"], W.config_version(), "/clusters version == /config version")
    names = sorted(c["name"] for c in j["clusters"])
    check("c" in names and "deadc" in names, "clusters listed: %r" % names)
    for c in j["clusters"]:
        check_eq(sorted(c.keys()), ["endpoints", "lb_policy", "name", "source"],
                 "keys of cluster %s" % c["name"])
        check_eq(c["source"], "static", "source of %s" % c["name"])
        check_eq(c["lb_policy"], "round_robin", "lb_policy of %s" % c["name"])
        for e in c["endpoints"]:
            check_eq(sorted(e.keys()), ["active_requests", "address", "failures", "health",
                                        "requests", "weight"], "endpoint keys")
            for k in ("active_requests", "failures", "requests", "weight"):
                check(isinstance(e[k], int), "%s is an integer: %r" % (k, e))
    c = cluster_view("c")
    check_eq(sorted(e["address"] for e in c["endpoints"]), sorted([A.address, B.address]),
             "endpoint addresses")
    for e in c["endpoints"]:
        check_eq(e["health"], "healthy", "health of %s" % e["address"])
        check_eq(e["weight"], 1, "weight")


def test_clusters_count_requests():
    before = {e["address"]: e["requests"] for e in cluster_view("c")["endpoints"]}
    send(10)

    def deltas():
        after = {e["address"]: e["requests"] for e in cluster_view("c")["endpoints"]}
        return {k: after[k] - before[k] for k in after}
    wait_for(lambda: sum(deltas().values()) >= 10, timeout=5, what="10 requests counted")
    delta = deltas()
    check_eq(sum(delta.values()), 10, "requests counted over the cluster (%r)" % delta)
    check_eq(delta, {A.address: 5, B.address: 5}, "round robin 1:1 per endpoint")
    wait_for(lambda: all(e["active_requests"] == 0 for e in cluster_view("c")["endpoints"]),
             timeout=5, what="active_requests back to 0")
    for e in cluster_view("c")["endpoints"]:
        check_eq(e["failures"], 0, "no failures on a healthy origin")


def test_clusters_count_failures():
    before = cluster_view("deadc")["endpoints"][0]["failures"]
    r = W.http("GET", "/dead/x")
    check_eq(r.status, 502, "request to a refused endpoint")
    wait_for(lambda: cluster_view("deadc")["endpoints"][0]["failures"] > before, timeout=5,
             what="failures to grow on connect refusal")


def test_metrics_requests_total():
    m0 = metric(W.metrics(), "weir_requests_total", route="all", cluster="c", code="2xx") or 0
    send(7)

    def delta():
        m = metric(W.metrics(), "weir_requests_total", route="all", cluster="c", code="2xx")
        return None if m is None else m - m0
    # Counters are bumped when a request is finished, which may be a moment after the client
    # has its last byte: wait briefly for them to settle, then demand the exact number.
    wait_for(lambda: delta() is not None and delta() >= 7, timeout=5,
             what="weir_requests_total{route=all,cluster=c,code=2xx} to count 7 requests")
    check_eq(delta(), 7, "weir_requests_total increase")


def test_metrics_5xx_code_label():
    W.http("GET", "/dead/y")
    wait_for(lambda: (metric(W.metrics(), "weir_requests_total", route="dead", cluster="deadc",
                             code="5xx") or 0) >= 1, timeout=5,
             what="weir_requests_total{route=dead,cluster=deadc,code=5xx} >= 1")


def test_metrics_duration_histogram():
    send(3)
    wait_for(lambda: (metric(W.metrics(), "weir_request_duration_seconds_count", route="all")
                      or 0) >= 3, timeout=5, what="histogram count")
    s = W.metrics()
    buckets = [(l, v) for n, l, v in s
               if n == "weir_request_duration_seconds_bucket" and l.get("route") == "all"]
    check(buckets, "weir_request_duration_seconds_bucket{route=all} present")
    check(all("le" in l for l, _ in buckets), "buckets have le")
    inf = [v for l, v in buckets if l["le"] == "+Inf"]
    check(inf and inf[0] >= 3, "+Inf bucket counts the requests: %r" % inf)
    cnt = metric(s, "weir_request_duration_seconds_count", route="all")
    check(cnt is not None and cnt == inf[0], "_count equals the +Inf bucket")
    vals = [v for l, v in sorted(buckets, key=lambda lv: float(lv[0]["le"]))]
    check(vals == sorted(vals), "buckets are cumulative")


def test_metrics_active_connections():
    c = W.conn()
    get_on(c, "GET", "/x")
    v = metric(W.metrics(), "weir_active_connections", listener="web")
    c.close()
    check(v is not None and v >= 1, "weir_active_connections{listener=web} >= 1 with one open: %r"
          % v)


def test_metrics_connect_failures():
    W.http("GET", "/dead/z")
    v = metric(W.metrics(), "weir_upstream_connect_failures_total", cluster="deadc")
    check(v is not None and v >= 1, "weir_upstream_connect_failures_total{cluster=deadc}: %r" % v)


def test_metrics_config_version_info():
    v = W.config_version()
    check_eq(metric(W.metrics(), "weir_config_version_info", version=v), 1.0,
             "weir_config_version_info{version=%s}" % v)


def test_metrics_endpoint_healthy():
    s = W.metrics()
    for o in (A, B):
        check_eq(metric(s, "weir_endpoint_healthy", cluster="c", endpoint=o.address), 1.0,
                 "weir_endpoint_healthy{cluster=c,endpoint=%s}" % o.address)


def test_unknown_admin_path_404():
    check_eq(W.admin("GET", "/no-such-thing").status, 404, "unknown admin path")


def test_admin_token():
    d = tmpdir()
    tok = "s3cr3t-token"
    write_file(os.path.join(d, "token"), tok + "\n")
    cfg = simple_config(A)
    w = Weir(cfg)
    w.cfg["admin"]["token_file"] = os.path.join(d, "token")
    w.start()
    check_eq(w.admin("GET", "/live").status, 200, "/live needs no token")
    check_eq(w.admin("GET", "/ready").status, 200, "/ready needs no token")
    check_eq(w.admin("GET", "/config").status, 401, "/config without a token")
    check_eq(w.admin("GET", "/config", token="wrong").status, 401, "/config with a wrong token")
    check_eq(w.admin("GET", "/config", headers={"Authorization": "Basic " + tok}).status, 401,
             "/config with a non-bearer scheme")
    check_eq(w.admin("GET", "/clusters").status, 401, "/clusters without a token")
    check_eq(w.admin("GET", "/metrics").status, 401, "/metrics without a token")
    r = w.admin("GET", "/config", token=tok)
    check_eq(r.status, 200, "/config with the right token")
    check("version" in r.json(), "config body")
    check(tok not in r.text(), "the token is not shown in /config")
    check_eq(w.admin("GET", "/clusters", token=tok).status, 200, "/clusters with the token")


if __name__ == "__main__":
    run()
