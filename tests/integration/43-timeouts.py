"""Client and upstream timeouts: slow-loris head (408), silent connections, idle keep-alive,
upstream idle pool expiry, connect timeout."""

from harness import *

W = None
O = None


def setup_module():
    global W, O
    O = Origin("o").start()
    W = Weir(simple_config(O, client_header_timeout_ms=1000, client_idle_timeout_ms=1000)).start()


def test_slow_loris_408():
    c = W.raw(timeout=15)
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
    t0 = time.monotonic()
    r = c.read_response()
    check_eq(r.status, 408, "incomplete head past client_header_timeout_ms")
    check(time.monotonic() - t0 >= 0.5, "not before the timeout")
    check(c.is_closed(), "closed after 408")


def test_trickled_head_still_times_out():
    # One byte every 200 ms never completes the head in time: the timeout covers the whole
    # head, not the gap between bytes.
    c = W.raw(timeout=15)
    data = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: " + b"a" * 200
    got = b""
    deadline = time.monotonic() + 12 * SLOW
    for b in data:
        try:
            c.send(bytes([b]))
        except OSError:
            break
        try:
            c._fill(0.2)
            got = c.buf
            break
        except socket.timeout:
            pass
        if time.monotonic() > deadline:
            break
    got += c.read_until_close(10)
    check(got != b"", "weir answered the trickling client")
    check_eq(status_of(got), 408, "status for a trickled head")


def test_silent_connection_closed_without_answer():
    c = W.raw(timeout=15)
    data = c.read_until_close(10)
    check_eq(data, b"", "a connection that sent nothing is closed without a response")


def test_idle_keepalive_closed():
    c = W.raw(timeout=15)
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    check_eq(c.read_response().status, 200)
    check(c.is_closed(10), "idle keep-alive connection closed after client_idle_timeout_ms")


def test_keepalive_survives_short_pause():
    c = W.raw(timeout=15)
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    check_eq(c.read_response().status, 200)
    time.sleep(0.3)
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    check_eq(c.read_response().status, 200, "second request after 0.3 s idle")


def test_slow_upstream_not_cut_by_client_timeouts():
    # The client timeouts cover reading the head and idling, not waiting for the origin.
    r = W.http("GET", "/slow/2500")
    check_eq(r.status, 200, "a 2.5 s origin answer with 1 s client timeouts")


def test_slow_body_upload_not_cut_by_header_timeout():
    c = W.raw(timeout=15)
    c.send(b"POST /sink HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n")
    for _ in range(5):
        time.sleep(0.3)
        c.send(b"ab")
    r = c.read_response()
    check_eq(r.status, 200, "body trickled over 1.5 s after a complete head")
    check_eq(r.json()["body_len"], 10)


def test_upstream_idle_pool_expiry():
    o = Origin("p").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", o, idle_timeout_ms=300)]}).start()
    a = w.http("GET", "/").header("X-Origin-Conn")
    b = w.http("GET", "/").header("X-Origin-Conn")
    check_eq(a, b, "pooled connection reused at once")
    time.sleep(1.5)
    c = w.http("GET", "/").header("X-Origin-Conn")
    check(c != a, "pooled connection closed after idle_timeout_ms (same serial %s)" % a)


def test_max_idle_zero_disables_pool():
    o = Origin("p").start()
    w = Weir({"routes": [route("all", "c")],
              "clusters": [cluster("c", o, max_idle=0)]}).start()
    conns = {w.http("GET", "/").header("X-Origin-Conn") for _ in range(4)}
    check_eq(len(conns), 4, "max_idle 0: a new upstream connection each time: %r" % conns)


def test_connect_timeout():
    # A listener whose accept queue is full and never accepted: SYNs go unanswered.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect(("127.0.0.1", port))
        blackhole = False
    except (socket.timeout, OSError):
        blackhole = True
    probe.close()
    try:
        if not blackhole:
            return  # this kernel still completes handshakes: cannot build a black hole here
        w = Weir({"routes": [route("all", "c", timeout_ms=30000)],
                  "clusters": [cluster("c", "127.0.0.1:%d" % port, connect_timeout_ms=500,
                                       retries=0)]}).start()
        t0 = time.monotonic()
        r = w.http("GET", "/")
        check_in(r.status, (502, 504), "connect timeout answer")
        check(time.monotonic() - t0 < 20 * SLOW, "connect_timeout_ms applied, not timeout_ms")
    finally:
        for s in fillers:
            s.close()
        ls.close()


if __name__ == "__main__":
    run()
