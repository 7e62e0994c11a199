"""Graceful drain on SIGTERM/SIGINT (INTERFACES §3 "Draining"): /ready 503 at once, listeners
accept during drain_delay_ms, in-flight requests finish with Connection: close, idle
keep-alive connections close, drain_timeout_ms bounds the wait, exit code 0."""

from harness import *

O = None


def setup_module():
    global O
    O = Origin("o").start()


def test_ready_503_and_accepts_during_delay():
    w = Weir(simple_config(O, drain_delay_ms=3000, drain_timeout_ms=5000)).start()
    w.terminate()
    t0 = time.monotonic()
    wait_for(lambda: w.admin("GET", "/ready", timeout=2).status == 503, timeout=2,
             what="/ready 503 right after SIGTERM")
    check(w.proc.poll() is None, "still running during drain_delay_ms")
    r = w.http("GET", "/hello", {"Connection": "close"})
    check_eq(r.status, 200, "a new connection during drain_delay_ms is served")
    check(time.monotonic() - t0 < 3, "that was inside the delay")
    check_eq(w.wait_exit(), 0, "exit code after drain")
    w.stop()


def test_listener_closes_after_delay():
    w = Weir(simple_config(O, drain_delay_ms=500, drain_timeout_ms=10000)).start()
    c = w.raw()   # keep one in-flight request so the process stays up past the delay
    c.send(b"GET /slow/3000 HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.2)
    w.terminate()
    time.sleep(1.5)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", w.port), timeout=2).close()
            return False
        except OSError:
            return True
    check(w.proc.poll() is None, "still running while a request is in flight")
    check(wait_for(refused, timeout=5, what="listener closed"), "listener closed after delay")
    r = c.read_response()
    check_eq(r.status, 200, "in-flight request completed")
    check_eq(w.wait_exit(), 0, "exit code")
    w.stop()


def test_inflight_completes_with_connection_close():
    w = Weir(simple_config(O, drain_timeout_ms=10000)).start()
    c = w.raw()
    c.send(b"GET /slow/1500 HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.3)
    w.terminate()
    r = c.read_response()
    check_eq(r.status, 200, "in-flight request finishes during drain")
    check_eq(r.body, b"slow\n")
    check_eq((r.header("connection") or "").lower(), "close", "Connection: close on the last response")
    check(c.is_closed(), "connection closed after it")
    check_eq(w.wait_exit(), 0, "exit code")
    w.stop()


def test_inflight_upload_completes():
    w = Weir(simple_config(O, drain_timeout_ms=10000)).start()
    c = w.raw()
    c.send(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" + b"a" * 1000)
    time.sleep(0.3)
    w.terminate()
    time.sleep(0.3)
    c.send(b"a" * 199000)
    r = c.read_response()
    check_eq(r.status, 200, "upload in flight at SIGTERM completes")
    check_eq(r.json()["body_len"], 200000)
    check_eq(w.wait_exit(), 0)
    w.stop()


def test_idle_keepalive_closed_on_drain():
    w = Weir(simple_config(O, drain_timeout_ms=10000)).start()
    c = w.raw()
    c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
    check_eq(c.read_response().status, 200)
    w.terminate()
    check(c.is_closed(10), "idle keep-alive connection closed by the drain")
    check_eq(w.wait_exit(), 0, "exit code")
    w.stop()


def test_drain_timeout_bounds_wait():
    w = Weir(simple_config(O, drain_timeout_ms=1000)).start()
    c = w.raw(timeout=30)
    c.send(b"GET /slow/60000 HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    w.terminate()
    check_eq(w.wait_exit(timeout=20), 0, "exit code after drain_timeout_ms")
    check(time.monotonic() - t0 < 20, "did not wait for the 60 s request")
    try:
        data = c.read_until_close(10)
    except AssertionError:
        raise AssertionError("client connection not closed after the process exited")
    check(status_of(data) in (None, 502, 503, 504), "no success for the cut request: %r"
          % data[:100])
    w.stop()


def test_sigint_drains_too():
    w = Weir(simple_config(O)).start()
    check_eq(w.http("GET", "/hello").status, 200)
    w.proc.send_signal(signal.SIGINT)
    check_eq(w.wait_exit(timeout=20), 0, "exit code on SIGINT")
    w.stop()


def test_exit_zero_when_idle():
    w = Weir(simple_config(O)).start()
    for _ in range(5):
        w.http("GET", "/hello")
    t0 = time.monotonic()
    w.stop()
    check(time.monotonic() - t0 < 15 * SLOW, "an idle weir exits without waiting the drain timeout")


if __name__ == "__main__":
    run()
