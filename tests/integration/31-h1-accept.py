"""HTTP/1.1 requests weir must accept and proxy correctly: methods, keep-alive, pipelining,
100-continue, bodiless responses, HTTP/1.0, chunked both ways, header rewriting, WebSocket."""

from harness import *

W = None
O = None


def setup_module():
    global W, O
    O = Origin("o").start()
    W = Weir(simple_config(O)).start()


def echo(headers=None, method="GET", body=None, path="/echo"):
    r = W.http(method, path, headers, body)
    check_eq(r.status, 200, "%s %s" % (method, path))
    return r.json()


def hdrs(j, name):
    return [v for k, v in j["headers"] if k.lower() == name.lower()]


def test_get():
    r = W.http("GET", "/hello")
    check_eq(r.status, 200, "GET /hello")
    check_eq(r.body, b"hello from o\n")
    check_eq(r.header("X-Origin"), "o", "response headers pass through")


def test_head_has_no_body():
    c = W.raw()
    c.send(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: a.test\r\n\r\n"
           b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r = c.read_response(method="HEAD")
    check_eq(r.status, 200, "HEAD")
    check_in(r.header("content-length"), (None, "1000"), "HEAD Content-Length")
    r2 = c.read_response()
    check_eq(r2.body, b"hello from o\n", "the response after HEAD is intact (no body leaked)")


def test_post_body():
    j = echo({"Content-Type": "text/plain"}, "POST", b"posted-body" * 100)
    check_eq(j["method"], "POST")
    check_eq(j["body_len"], 1100)
    check_eq(j["body"], "posted-body" * 100)


def test_put_and_delete_and_other_methods():
    for m in ("PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"):
        j = echo(method=m, body=b"x" if m in ("PUT", "PATCH") else None)
        check_eq(j["method"], m, "method forwarded")


def test_path_and_query_forwarded_verbatim():
    j = echo(path="/echo/a%2Fb/c?x=1&y=%20z")
    check_eq(j["target"], "/echo/a%2Fb/c?x=1&y=%20z", "request target unchanged")


def test_keepalive_client_and_upstream_reuse():
    c = W.conn()
    conns = []
    for i in range(8):
        r = get_on(c, "GET", "/hello")
        check_eq(r.status, 200, "request %d on one keep-alive connection" % i)
        conns.append(r.header("X-Origin-Conn"))
    c.close()
    check(len(set(conns)) < len(conns),
          "upstream connections must be reused; X-Origin-Conn per request: %r" % conns)


def test_upstream_reuse_across_client_connections():
    conns = [W.http("GET", "/hello").header("X-Origin-Conn") for _ in range(6)]
    check(len(set(conns)) < len(conns), "pooled upstream connection reused: %r" % conns)


def test_pipelining_in_order():
    c = W.raw()
    c.send(b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i for i in (1, 2, 3)))
    got = [c.read_response().json()["query"] for _ in range(3)]
    check_eq(got, ["n=1", "n=2", "n=3"], "pipelined responses in order")
    c.close()


def test_pipelining_with_bodies():
    c = W.raw()
    c.send(b"POST /echo?n=1 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc"
           b"POST /echo?n=2 HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"2\r\nde\r\n0\r\n\r\n"
           b"GET /echo?n=3 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    got = [c.read_response().json() for _ in range(3)]
    check_eq([(j["query"], j["body"]) for j in got], [("n=1", "abc"), ("n=2", "de"), ("n=3", "")],
             "pipelined requests with bodies")


def test_pipelining_slow_first_keeps_order():
    c = W.raw()
    c.send(b"GET /slow/500 HTTP/1.1\r\nHost: a.test\r\n\r\n"
           b"GET /echo?n=2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r1, r2 = c.read_response(), c.read_response()
    check_eq(r1.body, b"slow\n", "first (slow) response first")
    check_eq(r2.json()["query"], "n=2", "second response second")


def test_pipelining_burst_100():
    c = W.raw(timeout=30)
    c.send(b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i
                    for i in range(100)))
    got = [c.read_response().json()["query"] for _ in range(100)]
    check_eq(got, ["n=%d" % i for i in range(100)], "100 pipelined responses in order")


def test_pipelined_after_connection_close_ignored():
    c = W.raw()
    c.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
           b"GET /echo?n=2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r = c.read_response()
    check_eq(r.json()["query"], "n=1")
    rest = c.read_until_close(10)
    check_eq(rest, b"", "nothing is answered after a Connection: close request")


def test_head_and_body_byte_by_byte():
    c = W.raw()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = (b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n")
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.002)
    j = c.read_response().json()
    check_eq(j["body"], "abc0123456789abcdef", "body sent one byte per segment")


def test_many_tiny_chunks():
    c = W.raw(timeout=30)
    body = b"1\r\nq\r\n" * 20000 + b"0\r\n\r\n"
    c.send(b"POST /sink HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check_eq(c.read_response().json()["body_len"], 20000, "20000 one-byte chunks")


def test_expect_100_continue():
    c = W.raw()
    c.send(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
           b"Expect: 100-continue\r\n\r\n")
    first = c.read_head()
    if first.status == 100:
        c.send(b"hello")
        r = c.read_response()
    else:
        # A final answer without 100 is allowed, but then it must be the real answer.
        check_eq(first.status, 200, "final status instead of 100")
        c.send(b"hello")
        r = first
        r.body = c._take(int(first.header("content-length")))
    check_eq(r.status, 200, "final status after 100-continue")
    check_eq(r.json()["body"], "hello", "body delivered after 100-continue")


def test_expect_100_body_sent_without_waiting():
    c = W.raw()
    c.send(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
           b"Expect: 100-continue\r\n\r\nhello")
    r = c.read_response()
    check_eq(r.status, 200)
    check_eq(r.json()["body_len"], 5, "body delivered")


def test_204_and_304_no_body():
    c = W.raw()
    c.send(b"GET /status/204 HTTP/1.1\r\nHost: a.test\r\n\r\n"
           b"GET /status/304 HTTP/1.1\r\nHost: a.test\r\n\r\n"
           b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    check_eq((r1.status, r1.body), (204, b""), "204")
    check(r1.header("transfer-encoding") is None, "no Transfer-Encoding on 204")
    check_eq((r2.status, r2.body), (304, b""), "304")
    check_eq(r3.body, b"hello from o\n", "next response intact after 204/304")


def test_status_passthrough():
    for st in (201, 302, 404, 500, 503):
        r = W.http("GET", "/status/%d" % st)
        check_eq(r.status, st, "origin status passes through")


def test_interim_1xx_then_final():
    c = W.raw()
    c.send(b"GET /status/103 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "final response after an interim 103")
    check_eq(c.read_response().body, b"hello from o\n", "next response intact")


def test_http10_without_host_closes():
    c = W.raw()
    c.send(b"GET /hello HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "HTTP/1.0 without Host")
    check(r.version in ("HTTP/1.0", "HTTP/1.1"), "HTTP/1.x answer: %s" % r.version)
    check_eq(r.body, b"hello from o\n")
    check(c.is_closed(), "HTTP/1.0 connection closed after the response")


def test_http10_keepalive():
    c = W.raw()
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200)
    check(r.header("content-length") is not None, "HTTP/1.0 keep-alive needs a length")
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    check_eq(c.read_response().status, 200, "second request on the HTTP/1.0 keep-alive conn")


def test_http10_chunked_origin_response_is_delimited():
    # HTTP/1.0 clients do not understand chunked: weir must de-chunk or close-delimit.
    c = W.raw()
    c.send(b"GET /bytes/70000?chunked=1 HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200)
    check(r.header("transfer-encoding") is None, "no chunked to an HTTP/1.0 client")
    check_eq(len(r.body), 70000, "body length")


def test_connection_close_from_client():
    c = W.raw()
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200)
    check(c.is_closed(), "closed after Connection: close")


def test_client_half_close_still_answered():
    c = W.raw()
    c.send(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    c.shutdown_write()
    r = c.read_response()
    check_eq(r.status, 200, "request followed by a half-close (SHUT_WR)")
    check_eq(r.json()["method"], "GET")


def test_post_content_length_zero():
    j = echo({"Content-Length": "0"}, "POST", b"")
    check_eq(j["body_len"], 0)


def test_chunked_upload():
    c = W.raw()
    pieces = [b"a" * 1000, b"b" * 70000, b"c" * 5]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    c.send(b"POST /sink HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check_eq(c.read_response().json()["body_len"], 71005, "chunked upload length at the origin")
    c.send(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")
    check_eq(c.read_response().json()["body"], "abcde", "chunked upload content")


def test_chunked_download():
    want = ((b"x" * 63 + b"\n") * 8000)[:300001]
    r = W.http("GET", "/bytes/300001?chunked=1")
    check_eq(r.status, 200)
    check_eq(len(r.body), 300001, "chunked download length")
    check(r.body == want, "chunked download content")


def test_large_download_cl():
    r = W.http("GET", "/bytes/5000000")
    check_eq(len(r.body), 5000000, "5 MB download")
    check(r.body == ((b"x" * 63 + b"\n") * 80000)[:5000000], "content")


def test_hop_by_hop_removed():
    j = echo({"Connection": "x-foo, keep-alive", "X-Foo": "1", "Keep-Alive": "timeout=5",
              "TE": "trailers", "Proxy-Authorization": "Basic Zm9vOmJhcg==",
              "Proxy-Connection": "keep-alive", "X-Keep": "yes"})
    names = [k.lower() for k, _ in j["headers"]]
    for h in ("x-foo", "keep-alive", "te", "proxy-authorization", "proxy-connection"):
        check(h not in names, "hop-by-hop header %s forwarded: %r" % (h, j["headers"]))
    check_eq(hdrs(j, "x-keep"), ["yes"], "end-to-end header kept")


def test_x_forwarded_for_appended():
    j = echo({"X-Forwarded-For": "1.2.3.4"})
    check_eq(hdrs(j, "x-forwarded-for"), ["1.2.3.4, 127.0.0.1"], "X-Forwarded-For")


def test_x_forwarded_for_set_when_absent():
    check_eq(hdrs(echo(), "x-forwarded-for"), ["127.0.0.1"], "X-Forwarded-For")


def test_x_forwarded_proto_and_host_replaced():
    j = echo({"Host": "shop.example.test", "X-Forwarded-Proto": "https",
              "X-Forwarded-Host": "evil.test"})
    check_eq(hdrs(j, "x-forwarded-proto"), ["http"], "X-Forwarded-Proto")
    check_eq(hdrs(j, "x-forwarded-host"), ["shop.example.test"], "X-Forwarded-Host")
    check_eq(hdrs(j, "host"), ["shop.example.test"], "Host forwarded unchanged")


def test_x_request_id_generated():
    a = hdrs(echo(), "x-request-id")
    b = hdrs(echo(), "x-request-id")
    check(len(a) == 1 and a[0], "one generated X-Request-Id: %r" % a)
    check(a != b, "request ids differ between requests: %r %r" % (a, b))


def test_x_request_id_passed_unchanged():
    check_eq(hdrs(echo({"X-Request-Id": "abc-123"}), "x-request-id"), ["abc-123"],
             "client X-Request-Id")


def test_websocket_upgrade_echo():
    c = W.raw()
    c.send(b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 101, "upgrade answer")
    check_eq((r.header("upgrade") or "").lower(), "websocket", "Upgrade header")
    for msg in (b"ping-1", b"\x00\x01binary\xff", b"z" * 300000):
        c.send(msg)
        got = c.buf
        c.buf = b""
        while len(got) < len(msg):
            check(c._fill(), "upgraded connection closed early")
            got, c.buf = got + c.buf, b""
        check(got == msg, "echo of %d bytes through the tunnel" % len(msg))
    c.close()


def test_ws_without_upgrade_header_is_plain_request():
    r = W.http("GET", "/ws")
    check_eq(r.status, 426, "origin answers 426 without Upgrade")


def test_large_header_under_limit():
    j = echo({"X-Big": "v" * 20000})
    check_eq(len(hdrs(j, "x-big")[0]), 20000, "20 KB header forwarded")


def test_many_headers_order_kept():
    h = [("X-Multi", "1"), ("X-Multi", "2"), ("X-Multi", "3")]
    c = W.raw()
    c.send(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n" +
           b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in h) + b"\r\n")
    j = c.read_response().json()
    check_eq(",".join(v.replace(" ", "") for v in hdrs(j, "x-multi")).split(","), ["1", "2", "3"],
             "repeated headers kept in order")


def test_ipv6_listener_and_origin():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        return  # no IPv6 loopback here: nothing to test
    o6 = Origin("v6", host="::1").start()
    port = free_port("::1")
    w = Weir({"listeners": [{"name": "v6", "address": "[::1]:%d" % port}],
              "routes": [route("all", "c")], "clusters": [cluster("c", o6)]}).start()
    r = http_request(port, "GET", "/hello", host="::1")
    check_eq(r.body, b"hello from v6\n", "IPv6 listener to IPv6 origin")
    w.stop()


if __name__ == "__main__":
    run()
