"""Access log: JSON lines to a file (flushed at least once a second) or to stdout."""

from harness import *

KEYS = ["time", "client", "method", "host", "path", "status", "bytes_in", "bytes_out",
        "duration_ms", "upstream", "upstream_ms", "request_id", "route", "cluster"]


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in f.read().splitlines() if l.strip()]


def parse(lines):
    out = []
    for l in lines:
        try:
            out.append(json.loads(l))
        except ValueError:
            raise AssertionError("access log line is not JSON: %r" % l)
    return out


def test_access_log_file():
    o = Origin("o").start()
    d = tmpdir()
    path = os.path.join(d, "access.log")
    w = Weir({"routes": [route("only", "c", host="log.test")], "clusters": [cluster("c", o)],
              "access_log": path}).start()
    r1 = w.http("GET", "/echo?a=1", {"Host": "log.test"})
    rid = [v for k, v in r1.json()["headers"] if k.lower() == "x-request-id"][0]
    w.http("POST", "/sink", {"Host": "log.test"}, b"p" * 1234)
    w.http("GET", "/nothing", {"Host": "other.test"})   # 404: no route
    lines = wait_for(lambda: len(read_lines(path)) >= 3 and read_lines(path), timeout=5,
                     what="3 access log lines within the flush interval")
    recs = parse(lines)
    check_eq(len(recs), 3, "one line per request")
    for rec in recs:
        for k in KEYS:
            check(k in rec, "key %s in %r" % (k, rec))
    a, b, c = recs
    check_eq((a["method"], a["status"], a["host"]), ("GET", 200, "log.test"), "first line")
    # "path" may carry the query (like nginx's $request_uri) or not; both are documented forms.
    check_in(a["path"], ("/echo", "/echo?a=1"), "path of the first line")
    check_eq(a["request_id"], rid, "request_id is the X-Request-Id the origin saw")
    check_eq((a["route"], a["cluster"]), ("only", "c"), "route and cluster names")
    check_eq(a["upstream"], o.address, "upstream address")
    check(a["bytes_out"] >= len(r1.body), "bytes_out counts the body")
    check(a["client"].startswith("127.0.0.1"), "client address: %r" % a["client"])
    check(isinstance(a["duration_ms"], (int, float)) and a["duration_ms"] >= 0, "duration_ms")
    check_eq((b["method"], b["path"], b["status"]), ("POST", "/sink", 200), "second line")
    check(b["bytes_in"] >= 1234, "bytes_in counts the request body: %r" % b["bytes_in"])
    check_eq((c["path"], c["status"]), ("/nothing", 404), "404 logged")
    check(c["upstream"] in (None, "", "-"), "no upstream for a 404: %r" % c["upstream"])


def test_access_log_flushed_while_running():
    o = Origin("o").start()
    path = os.path.join(tmpdir(), "access.log")
    w = Weir(simple_config(o, access_log=path)).start()
    w.http("GET", "/one")
    t0 = time.monotonic()
    wait_for(lambda: read_lines(path), timeout=5, what="the line to be flushed")
    check(time.monotonic() - t0 < 5 * SLOW, "flushed without shutdown")
    check(w.proc.poll() is None, "flushed while running")


def test_access_log_stdout():
    o = Origin("o").start()
    w = Weir(simple_config(o, access_log="-")).start()
    w.http("GET", "/stdout-line")
    wait_for(lambda: "/stdout-line" in open(w.out_path).read(), timeout=5,
             what="the access line on stdout")
    recs = parse([l for l in open(w.out_path).read().splitlines() if "/stdout-line" in l])
    check_eq(recs[0]["status"], 200)


def test_access_log_rejected_request():
    o = Origin("o").start()
    path = os.path.join(tmpdir(), "access.log")
    w = Weir(simple_config(o, access_log=path)).start()
    raw_exchange(w.port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    w.http("GET", "/after")
    lines = wait_for(lambda: any("/after" in l for l in read_lines(path)) and read_lines(path),
                     timeout=5, what="access lines")
    check(any(r.get("status") == 400 for r in parse(lines)), "400 answers are logged too")


def test_no_access_log_when_null():
    o = Origin("o").start()
    w = Weir(simple_config(o, access_log=None)).start()
    w.http("GET", "/quiet")
    time.sleep(1.5)
    check("/quiet" not in open(w.out_path).read(), "nothing on stdout with access_log null")


if __name__ == "__main__":
    run()
