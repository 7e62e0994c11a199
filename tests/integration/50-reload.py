"""SIGHUP reloads: established connections keep working and are routed by the new config,
invalid files are logged and ignored, versions change, listeners can be added and removed."""

from harness import *

A = B = None


def setup_module():
    global A, B
    A, B = Origin("a").start(), Origin("b").start()


def cfg_to(name, **extra):
    c = {"routes": [route("all", name)], "clusters": [cluster("a", A), cluster("b", B)]}
    c.update(extra)
    return c


def start(name="a", workers=1):
    w = Weir(cfg_to(name), workers=workers)
    w.start()
    return w


def new_cfg(w, name, **extra):
    c = dict(w.cfg)
    c.update(cfg_to(name, **extra))
    return c


def ask(c, path="/"):
    c.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: r.test\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "GET %s" % path)
    return r.header("X-Origin")


def test_keepalive_conn_routed_by_new_config():
    w = start("a")
    c = w.raw()
    check_eq(ask(c), "a", "before reload")
    w.reload_and_wait(new_cfg(w, "b"))
    check_eq(ask(c), "b", "same connection after reload, routed by the new config")
    check_eq(ask(c), "b", "and again")
    check_eq(w.http("GET", "/").header("X-Origin"), "b", "new connection after reload")


def test_all_workers_get_new_config():
    w = start("a", workers=2)
    conns = [w.raw() for _ in range(6)]
    for c in conns:
        check_eq(ask(c), "a")
    w.reload_and_wait(new_cfg(w, "b"))
    for i, c in enumerate(conns):
        check_eq(ask(c), "b", "old connection %d after reload" % i)
    got = {w.http("GET", "/").header("X-Origin") for _ in range(20)}
    check_eq(got, {"b"}, "new connections on every worker")


def test_version_changes_and_clusters_follow():
    w = start("a")
    v1 = w.config_version()
    v2 = w.reload_and_wait(new_cfg(w, "b"))
    check(v1 != v2, "version changed")
    check_eq(w.clusters()["version"], v2, "/clusters version follows /config")
    v = metric(w.metrics(), "weir_config_version_info", version=v2)
    check_eq(v, 1.0, "weir_config_version_info for the new version")


def test_invalid_json_keeps_old_config():
    w = start("a")
    v1 = w.config_version()
    log_before = len(w.log())
    w.reload(raw_text='{"routes": [ this is not json')
    wait_for(lambda: len(w.log()) > log_before, timeout=10, what="a log line about the reload")
    time.sleep(0.5)
    check_eq(w.config_version(), v1, "version unchanged after an invalid reload")
    check_eq(w.http("GET", "/").header("X-Origin"), "a", "old config still serving")
    check(w.proc.poll() is None, "weir still running")
    check_eq(w.admin("GET", "/ready").status, 200, "still ready")
    w.reload_and_wait(new_cfg(w, "b"))
    check_eq(w.http("GET", "/").header("X-Origin"), "b", "a later valid reload applies")


def test_invalid_config_keeps_old_config():
    w = start("a")
    v1 = w.config_version()
    bad = new_cfg(w, "b")
    bad["routes"][0]["cluster"] = "no-such-cluster"
    bad["wokers"] = 3
    check("wokers" not in w.log() and "no-such-cluster" not in w.log(), "clean log before")
    w.reload(bad)
    # The whole log is searched: under valgrind its own lines interleave with weir's.
    wait_for(lambda: "reload of" in w.log() and "failed" in w.log(), timeout=10,
             what="a reload error in the log")
    log = w.log()
    check("wokers" in log and "no-such-cluster" in log,
          "the log names both problems: %r" % log[-800:])
    check_eq(w.config_version(), v1, "version unchanged")
    check_eq(w.http("GET", "/").header("X-Origin"), "a", "old config serving")


def test_in_flight_request_survives_reload():
    w = start("a")
    out = {}

    def slow():
        r = w.http("GET", "/slow/1500")
        out["r"] = r

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    w.reload_and_wait(new_cfg(w, "b"))
    t.join(30)
    check("r" in out, "in-flight request finished")
    check_eq(out["r"].status, 200, "in-flight request across a reload")
    check_eq(out["r"].header("X-Origin"), "a", "served by the config it started with")


def test_websocket_survives_reload():
    w = start("a")
    c = w.raw()
    c.send(b"GET /ws HTTP/1.1\r\nHost: r.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    check_eq(c.read_response().status, 101)
    w.reload_and_wait(new_cfg(w, "b"))
    c.send(b"after-reload")
    got = c.buf
    c.buf = b""
    while len(got) < 12:
        check(c._fill(), "tunnel closed by the reload")
        got, c.buf = got + c.buf, b""
    check_eq(got, b"after-reload", "echo after reload")


def test_add_and_remove_listener():
    w = start("a")
    port2 = free_port()
    cfg = new_cfg(w, "a")
    cfg["listeners"] = w.cfg["listeners"] + [{"name": "extra", "address": "127.0.0.1:%d" % port2}]
    w.reload_and_wait(cfg)
    r = wait_for(lambda: http_request(port2, "GET", "/", timeout=5), timeout=10,
                 what="the new listener")
    check_eq(r.status, 200, "request on the added listener")
    keep = Raw(port2)
    check_eq(ask(keep), "a")
    cfg = new_cfg(w, "a")
    cfg["listeners"] = [l for l in cfg["listeners"] if l["name"] != "extra"]
    w.reload_and_wait(cfg)
    check(keep.is_closed(20), "connection of a removed listener closed (gracefully)")

    def refused():
        try:
            socket.create_connection(("127.0.0.1", port2), timeout=2).close()
            return False
        except OSError:
            return True
    wait_for(refused, timeout=10, what="removed listener to stop accepting")
    check_eq(w.http("GET", "/").status, 200, "the other listener still serves")


def test_reload_new_cluster_endpoints():
    w = start("a")
    c3 = Origin("c3").start()
    cfg = new_cfg(w, "a")
    cfg["clusters"] = [cluster("a", c3), cluster("b", B)]
    w.reload_and_wait(cfg)
    check_eq(w.http("GET", "/").header("X-Origin"), "c3", "endpoints of a changed cluster")
    addrs = [e["address"] for c in w.clusters()["clusters"] if c["name"] == "a"
             for e in c["endpoints"]]
    check_eq(addrs, [c3.address], "/clusters shows the new endpoints")


def test_many_reloads_under_traffic():
    w = start("a", workers=2)
    stop = threading.Event()
    errors = []
    done = [0]

    def load():
        c = w.conn()
        while not stop.is_set() and done[0] < 5000:
            try:
                r = get_on(c, "GET", "/")
                if r.status != 200:
                    errors.append(r.status)
                done[0] += 1
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                c.close()
                c = w.conn()
        c.close()

    ts = [threading.Thread(target=load) for _ in range(2)]
    for t in ts:
        t.start()
    try:
        for i in range(10):
            w.reload_and_wait(new_cfg(w, "b" if i % 2 == 0 else "a"))
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    check_eq(errors, [], "errors under reloads")
    check(done[0] > 0, "traffic flowed")


if __name__ == "__main__":
    run()
