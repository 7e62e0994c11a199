"""HTTP/2 to upstreams (cluster protocol "h2c" and "h2"): HTTP/1.1 and HTTP/2 clients, request
headers, bodies both ways (with and without content-length, 20 MB), trailers, multiplexing on
few connections, GOAWAY, upstream death and resets, limits, timeouts, idle sessions, reloads.
The upstream is the Python H2Origin of harness.py (Debian's python3-h2)."""

import concurrent.futures
import hashlib

from harness import *


def weir_h2c(origin, workers=1, cluster_opts=None, listener_opts=None, top=None, **route_opts):
    opts = {"protocol": "h2c"}
    opts.update(cluster_opts or {})
    cfg = {"routes": [route("all", "c", **route_opts)], "clusters": [cluster("c", origin, **opts)]}
    cfg.update(top or {})
    port = free_port()
    lst = {"name": "web", "address": "127.0.0.1:%d" % port, "h2c": True}
    lst.update(listener_opts or {})
    cfg["listeners"] = [lst]
    return Weir(cfg, workers=workers).start()


def endpoint_stats(w):
    return w.clusters()["clusters"][0]["endpoints"][0]


def md5(b):
    return hashlib.md5(b).hexdigest()


# ---- requests and headers ----------------------------------------------------------------------

def test_h1_client_headers_to_h2c():
    o = H2Origin().start()
    w = weir_h2c(o)
    r = w.http("GET", "/echo/a?b=1", headers={"X-Forwarded-For": "10.0.0.1", "Connection": "x-hop",
                                              "X-Hop": "1", "Keep-Alive": "timeout=5",
                                              "X-Custom": "Yes", "Host": "Shop.Example:8080"})
    check_eq(r.status, 200, "status")
    info = r.json()
    check_eq(info["method"], "GET")
    check_eq(info["path"], "/echo/a?b=1")
    check_eq(info["scheme"], "http")
    check_eq(info["authority"], "Shop.Example:8080", ":authority from Host")
    h = dict(info["headers"])
    check_eq(h.get("x-forwarded-for"), "10.0.0.1, 127.0.0.1")
    check_eq(h.get("x-forwarded-proto"), "http")
    check_eq(h.get("x-forwarded-host"), "Shop.Example:8080")
    check_eq(h.get("x-custom"), "Yes", "end-to-end header, name lower-cased")
    check(len(h.get("x-request-id", "")) == 32, "x-request-id added: %r" % h)
    for hop in ("connection", "x-hop", "keep-alive", "host", "te"):
        check(hop not in h, "hop-by-hop %r not forwarded: %r" % (hop, h))
    check_eq(r.header("x-h2-stream"), "1")


def test_h1_client_te_trailers_kept_head_and_status():
    o = H2Origin().start()
    w = weir_h2c(o)
    r = w.http("GET", "/echo", headers={"TE": "trailers"})
    check_eq(dict(r.json()["headers"]).get("te"), "trailers", "te: trailers kept for HTTP/2")
    r = w.http("HEAD", "/bytes/1000")
    check_eq(r.status, 200, "HEAD")
    check_eq(r.body, b"")
    r = w.http("GET", "/status/404")
    check_eq((r.status, r.body), (404, b"status 404"))
    r = w.http("GET", "/status/204")
    check_eq((r.status, r.body), (204, b""))
    raw = w.raw()
    raw.send(b"GET /bytes/3000?nocl=1 HTTP/1.0\r\n\r\n")
    r = raw.read_response()
    check_eq((r.status, len(r.body), r.header("transfer-encoding")), (200, 3000, None),
             "HTTP/1.0 client: the body ends with the connection")


def test_h2_client_to_h2c():
    o = H2Origin().start()
    w = weir_h2c(o)
    c = H2Client(w.port)
    r = c.request("GET", "/echo/h2?q=1", headers=[("x-a", "1"), ("te", "trailers")],
                  authority="api.example")
    check_eq(r.status, 200)
    info = json.loads(r.body)
    check_eq(info["authority"], "api.example")
    check_eq(info["path"], "/echo/h2?q=1")
    h = dict(info["headers"])
    check_eq(h.get("x-a"), "1")
    check_eq(h.get("te"), "trailers")
    check_eq(h.get("x-forwarded-host"), "api.example")
    r = c.request("GET", "/bytes/70000")
    check_eq(len(r.body), 70000)
    check_eq(r.body[:16], b"0123456789abcdef")
    out = run_cmd(["curl", "-s", "--http2-prior-knowledge", "http://127.0.0.1:%d/bytes/1234" % w.port])
    check_eq(len(out.stdout), 1234, "curl --http2-prior-knowledge")


def test_h2_tls_upstream_and_tls_listener():
    d = tmpdir()
    crt, key = make_cert(d, "localhost")
    o = H2Origin(tls=(crt, key)).start()
    port = free_port()
    cfg = {"listeners": [{"name": "tls", "address": "127.0.0.1:%d" % port,
                          "tls": {"certificates": [{"cert_file": crt, "key_file": key}]}}],
           "routes": [route("all", "c")],
           "clusters": [cluster("c", o, protocol="h2",
                                tls={"ca_file": crt, "sni": "localhost"})]}
    w = Weir(cfg).start()
    out = run_cmd(["curl", "-sk", "--http1.1", "https://127.0.0.1:%d/echo/t" % port])
    info = json.loads(out.stdout)
    check_eq(info["scheme"], "https", ":scheme for an h2 (TLS) cluster")
    check_eq(dict(info["headers"]).get("x-forwarded-proto"), "https")
    out = run_cmd(["curl", "-sk", "--http2", "-w", "%{http_version}",
                   "https://127.0.0.1:%d/bytes/50000" % port])
    check_eq(out.stdout[-1:], "2", "curl negotiated HTTP/2 with weir")
    check_eq(len(out.stdout) - 1, 50000, "body over h2 -> weir -> h2 (TLS)")
    c = H2Client(port, tls=True)
    r = c.request("GET", "/trailers")
    check_eq((r.status, r.body), (200, b"hello"))
    check_eq(r.trailer("grpc-status"), "0", "trailers over TLS: %r" % r)
    check_eq(o.connections, 1, "one TLS session to the upstream for all of it")


def test_h2_tls_upstream_bad_certificate_502():
    d = tmpdir()
    crt, key = make_cert(d, "localhost")
    other, _ = make_cert(tmpdir(), "other")
    o = H2Origin(tls=(crt, key)).start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", o, protocol="h2",
                                   tls={"ca_file": other, "sni": "localhost"})]}).start()
    r = w.http("GET", "/echo")
    check_eq(r.status, 502, "certificate not signed by ca_file")


# ---- bodies ----------------------------------------------------------------------------------------

def test_post_bodies_arrive_whole():
    o = H2Origin().start()
    w = weir_h2c(o)
    body = os.urandom(1 << 20)
    r = w.http("POST", "/echo", body=body)
    info = r.json()
    check_eq((info["body_len"], info["body_md5"]), (len(body), md5(body)), "Content-Length body")
    check_eq(dict(info["headers"]).get("content-length"), str(len(body)))
    # chunked from an HTTP/1.1 client: de-chunked, no content-length
    raw = w.raw()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 70000]), body[i:i + 70000])
                      for i in range(0, len(body), 70000))
    raw.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks +
             b"0\r\n\r\n")
    r = raw.read_response()
    info = json.loads(r.body)
    check_eq((info["body_len"], info["body_md5"]), (len(body), md5(body)), "chunked body")
    check("content-length" not in dict(info["headers"]), "no content-length for a chunked body")
    # the same connection goes on (keep-alive), and pipelined requests work
    raw.send(b"POST /mirror HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
             b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n")
    r1 = raw.read_response()
    r2 = raw.read_response()
    check_eq((r1.status, r1.body, r2.status), (200, b"abc", 201), "pipelined after chunked")
    # HTTP/2 client, with and without content-length
    c = H2Client(w.port)
    for hdrs in ([], [("content-length", str(len(body)))]):
        r = c.request("POST", "/echo", headers=hdrs, body=body)
        info = json.loads(r.body)
        check_eq((info["body_len"], info["body_md5"]), (len(body), md5(body)),
                 "h2 client body (%r)" % hdrs)
    sid = c.send("POST", "/echo", end=False)
    c.send_data(sid, b"part1-", end=False)
    c.send_data(sid, b"part2", trailers=[("x-checksum", "abc")])
    r = c.wait(sid)[0]
    check_eq(json.loads(r.body)["body_len"], 11, "body then trailers")
    check_eq(o.requests[-1]["trailers"], [("x-checksum", "abc")], "request trailers forwarded")


def test_20mb_response_streams():
    o = H2Origin().start()
    w = weir_h2c(o)
    n = 20 * 1000 * 1000
    rss0 = w.rss_kib()
    for path in ("/bytes/%d" % n, "/bytes/%d?nocl=1" % n):
        r = w.http("GET", path, timeout=120)
        check_eq(len(r.body), n, "HTTP/1.1 client " + path)
        check(r.body[-16:] == (b"0123456789abcdef" * (n // 16 + 1))[:n][-16:], "content")
        if "nocl" in path:
            check_eq(r.header("transfer-encoding"), "chunked", "unknown length: chunked")
    c = H2Client(w.port, timeout=120)
    r = c.request("GET", "/bytes/%d" % n)
    check_eq(len(r.body), n, "HTTP/2 client")
    growth = w.rss_kib() - rss0
    check(growth < 32 * 1024, "weir's RSS grew by %d KiB for 20 MB responses" % growth)


def test_slow_client_does_not_stall_others():
    """A client that stops reading a big response holds one stream window; other streams on
    the same upstream session go on."""
    o = H2Origin().start()
    w = weir_h2c(o)
    stalled = Raw(w.port)
    stalled.send(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (50 * 1000 * 1000))
    time.sleep(0.5)
    for _ in range(5):
        r = w.http("GET", "/bytes/300000", timeout=10)
        check_eq(len(r.body), 300000, "a stream next to a stalled one")
    check_eq(o.connections, 1, "the same session")
    stalled.close()


# ---- trailers ------------------------------------------------------------------------------------

def test_trailers_reach_clients():
    o = H2Origin().start()
    w = weir_h2c(o)
    c = H2Client(w.port)
    r = c.request("GET", "/trailers")
    check_eq((r.status, r.body), (200, b"hello"))
    check_eq((r.trailer("grpc-status"), r.trailer("grpc-message")), ("0", "fine"),
             "trailing HEADERS: %r" % r)
    raw = w.raw()
    raw.send(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    head = raw.read_head()
    check_eq(head.header("transfer-encoding"), "chunked")
    while not (raw.buf.endswith(b"\r\n\r\n") and b"0\r\n" in raw.buf):
        check(raw._fill(), "connection closed early: %r" % raw.buf)
    data = raw.buf
    check(b"grpc-status: 0\r\n" in data and b"grpc-message: fine\r\n" in data,
          "chunked trailers: %r" % data)
    out = run_cmd(["nghttp", "-v", "http://127.0.0.1:%d/trailers" % w.port])
    check("grpc-status: 0" in out.stdout, "nghttp shows the trailers:\n%s" % out.stdout[-800:])


# ---- multiplexing ------------------------------------------------------------------------------

def test_concurrent_requests_share_a_connection():
    o = H2Origin().start()
    w = weir_h2c(o)
    with concurrent.futures.ThreadPoolExecutor(40) as ex:
        res = list(ex.map(lambda i: w.http("GET", "/slow/400"), range(40)))
    check(all(r.status == 200 and r.body == b"slow" for r in res), "all answered")
    check_eq(o.connections, 1, "upstream connections for 40 concurrent requests")
    check(o.max_active > 10, "streams were multiplexed (max %d at once)" % o.max_active)
    st = endpoint_stats(w)
    check_eq(st["requests"], 40, "endpoint requests counter")
    check_eq(st["active_requests"], 0, "active_requests back to 0")


def test_max_concurrent_streams_opens_more_connections():
    o = H2Origin(max_streams=4).start()
    w = weir_h2c(o)
    w.http("GET", "/echo")  # the session learns the limit
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        res = list(ex.map(lambda i: w.http("GET", "/slow/500"), range(16)))
    check(all(r.status == 200 for r in res), "all answered")
    check(2 <= o.connections <= 6, "connections with 4 streams each: %d" % o.connections)
    check(o.max_active <= 4, "the peer's limit was respected (%d)" % o.max_active)


def test_session_survives_reload_then_idles_out():
    o = H2Origin().start()
    w = weir_h2c(o, cluster_opts={"idle_timeout_ms": 60000})
    check_eq(w.http("GET", "/echo").json()["conn"], 0)
    cfg = dict(w.cfg)
    cfg["routes"] = [route("all", "c", timeout_ms=9000)]
    w.reload_and_wait(cfg)
    check_eq(w.http("GET", "/echo").json()["conn"], 0, "same session after a reload")
    cfg["clusters"] = [cluster("c", o, protocol="h2c", idle_timeout_ms=300)]
    w.reload_and_wait(cfg)
    check_eq(w.http("GET", "/echo").json()["conn"], 0, "same session, new idle timeout ahead")
    time.sleep(1.0)
    check_eq(w.http("GET", "/echo").json()["conn"], 1, "the idle session was closed")


# ---- failures ----------------------------------------------------------------------------------

def test_goaway_finishes_inflight_new_ones_elsewhere():
    o = H2Origin().start()
    w = weir_h2c(o)
    n = 400000
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: w.http("GET", "/goaway/%d" % n))
        time.sleep(0.45)  # the GOAWAY went out 0.2 s after the head
        r2 = w.http("GET", "/echo")
        r1 = fut.result()
    check_eq((r1.status, len(r1.body)), (200, n), "the in-flight stream finished")
    check_eq(r2.status, 200, "a request after GOAWAY")
    check_eq(r2.json()["conn"], 1, "it went on a new connection")
    check_eq(w.http("GET", "/echo").json()["conn"], 1)


def test_upstream_death_mid_stream():
    o = H2Origin().start()
    w = weir_h2c(o)
    r = w.http("GET", "/echo")
    check_eq(r.status, 200)
    raw = w.raw()
    raw.send(b"GET /die/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = raw.read_response()
    check_eq(r.status, 200)
    check(r.truncated and len(r.body) < 20000, "a truncated body, not a clean end")
    check(raw.is_closed(), "client connection closed")
    c = H2Client(w.port)
    r = c.request("GET", "/die/5000")
    check(r.reset is not None and not r.ended, "h2 client: stream reset (%r)" % r)
    check_eq(w.http("GET", "/echo").status, 200, "a new session afterwards")
    check(endpoint_stats(w)["failures"] >= 2, "failures counted")


def test_upstream_reset_502_or_truncation():
    o = H2Origin().start()
    w = weir_h2c(o)
    check_eq(w.http("GET", "/rst").status, 502, "RST_STREAM before the head")
    c = H2Client(w.port)
    check_eq(c.request("GET", "/rst").status, 502, "h2 client: 502")
    raw = w.raw()
    raw.send(b"GET /rst-mid HTTP/1.1\r\nHost: x\r\n\r\n")
    r = raw.read_response()
    check(r.truncated or raw.is_closed(), "reset mid-body: truncated")
    r = c.request("GET", "/rst-mid")
    check(r.reset is not None, "h2 client: stream reset after the head: %r" % r)
    check_eq(w.http("GET", "/echo").json()["conn"], 0, "the session survived the resets")


def test_malformed_response_head_502():
    o = H2Origin().start()
    w = weir_h2c(o)
    check_eq(w.http("GET", "/badheader").status, 502, "Connection header in an h2 response")
    check_eq(w.http("GET", "/echo").status, 200, "the session goes on")


def test_retry_on_another_endpoint():
    o = H2Origin().start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", dead_address(), o, protocol="h2c")]}).start()
    for i in range(4):
        check_eq(w.http("GET", "/echo").status, 200, "GET %d, retried past the dead endpoint" % i)
    eps = w.clusters()["clusters"][0]["endpoints"]
    check(eps[0]["failures"] >= 1 and eps[1]["requests"] == 4, "per-endpoint counters: %r" % eps)


def test_upload_then_half_close():
    o = H2Origin().start()
    w = weir_h2c(o)
    body = os.urandom(200000)
    raw = w.raw()
    raw.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    raw.shutdown_write()
    r = raw.read_response()
    check_eq((r.status, json.loads(r.body)["body_md5"]), (200, md5(body)),
             "a body sent whole before the client's FIN")


def test_response_header_limit_502():
    o = H2Origin().start()
    w = weir_h2c(o, top={"max_header_bytes": 4096})
    check_eq(w.http("GET", "/bigheader/1000").status, 200, "under the limit")
    check_eq(w.http("GET", "/bigheader/8000").status, 502, "over max_header_bytes")
    check_eq(w.http("GET", "/echo").status, 200, "the session goes on")


def test_timeout_connect_failure_and_no_endpoint():
    o = H2Origin().start()
    w = weir_h2c(o, timeout_ms=300)
    check_eq(w.http("GET", "/slow/3000").status, 504, "inactivity timeout")
    check_eq(w.http("GET", "/echo").status, 200, "the session goes on")
    cfg = {"routes": [route("dead", "d", path_prefix="/dead"), route("none", "n")],
           "clusters": [cluster("d", dead_address(), protocol="h2c"),
                        cluster("n", protocol="h2c")]}
    w.reload_and_wait(cfg)
    check_eq(w.http("GET", "/dead").status, 502, "connect refused")
    check_eq(w.http("GET", "/x").status, 503, "no endpoint")


if __name__ == "__main__":
    run()
