"""The test tools themselves: weir-test-origin and the harness's raw client, without weir.
If these fail, every other result is suspect."""

from harness import *

O = None


def setup_module():
    global O
    O = Origin("o1").start()


def test_default_route_and_identity_headers():
    r = http_request(O.port, "GET", "/anything")
    check_eq(r.status, 200)
    check_eq(r.body, b"hello from o1\n")
    check_eq(r.header("X-Origin"), "o1")
    check(int(r.header("X-Origin-Conn")) >= 1, "X-Origin-Conn is a serial")


def test_keepalive_same_conn_serial():
    c = http.client.HTTPConnection("127.0.0.1", O.port, timeout=10)
    a = get_on(c, "GET", "/a")
    b = get_on(c, "GET", "/b")
    c.close()
    check_eq(a.header("X-Origin-Conn"), b.header("X-Origin-Conn"), "serial on one connection")
    check_eq(b.header("X-Origin-Req"), "2")


def test_echo_json():
    r = http_request(O.port, "POST", "/echo/x?q=1", {"X-A": "b", "Content-Length": "3"}, b"abc")
    j = r.json()
    check_eq(j["method"], "POST")
    check_eq(j["path"], "/echo/x")
    check_eq(j["query"], "q=1")
    check_eq(j["body_len"], 3)
    check_eq(j["body"], "abc")
    check(["X-A", "b"] in j["headers"], "headers listed")


def test_pipelined_chunked_and_cl_bodies():
    c = Raw(O.port)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: y\r\n\r\n"
           b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwxyz"
           b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n")
    r1 = c.read_response()
    r2 = c.read_response()
    r3 = c.read_response()
    check_eq(r1.json()["body_len"], 8)
    check_eq(r2.json()["body"], "wxyz")
    check_eq(r3.status, 204)
    check_eq(r3.body, b"")
    c.close()


def test_bytes_pattern_cl_and_chunked():
    want = ((b"x" * 63 + b"\n") * 3000)[:150001]
    for q in ("", "?chunked=1"):
        r = http_request(O.port, "GET", "/bytes/150001" + q)
        check_eq(len(r.body), 150001, "length " + q)
        check(r.body == want, "pattern " + q)


def test_die_truncates():
    c = Raw(O.port)
    c.send(b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check(r.truncated, "body must be truncated")
    check_eq(r.body, b"0123456789")


def test_garbage_and_close():
    c = Raw(O.port)
    c.send(b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_until_close(), b"HTTP/1.1 2OO OK\r\n\r\n")
    c = Raw(O.port)
    c.send(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq(r.header("connection"), "close")
    check(c.is_closed(), "closed after /close")


def test_ws_echo():
    c = Raw(O.port)
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 101)
    c.send(b"ping-123")
    got = b""
    while len(got) < 8:
        c._fill()
        got, c.buf = got + c.buf, b""
    check_eq(got, b"ping-123")


def test_slow_and_interim():
    t0 = time.monotonic()
    r = http_request(O.port, "GET", "/slow/300")
    check_eq(r.body, b"slow\n")
    check(time.monotonic() - t0 >= 0.25, "waited")
    c = Raw(O.port)
    c.send(b"GET /status/103 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq([i.status for i in r.interim], [103])
    check_eq(r.status, 200)


def test_expect_100_continue():
    c = Raw(O.port)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    r = c.read_head()
    check_eq(r.status, 100)
    c.send(b"abc")
    check_eq(c.read_response().json()["body_len"], 3)


def test_request_log_lines():
    # The log is read by a thread: a line of an earlier test may land after the count is taken,
    # so wait for this request's own line rather than for "one more line".
    http_request(O.port, "GET", "/logged")
    wait_for(lambda: any("GET /logged" in line for line in list(O.requests)),
             what="request line of GET /logged")


def test_evil_origin_records():
    e = EvilOrigin().start()
    r = http_request(e.port, "GET", "/x")
    check_eq(r.body, b"evil\n")
    check(e.all_received().startswith(b"GET /x HTTP/1.1"), "recorded")


def test_ipv6_origin():
    try:
        o = Origin("v6", host="::1").start()
    except OSError:
        return  # no IPv6 loopback on this machine
    r = http_request(o.port, "GET", "/", host="::1")
    check_eq(r.body, b"hello from v6\n")


if __name__ == "__main__":
    run()
