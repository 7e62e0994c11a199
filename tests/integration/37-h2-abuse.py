"""HTTP/2 abuse (issue 3 "Protection"): rapid reset (CVE-2023-44487), CONTINUATION floods
(CVE-2024-27316), SETTINGS and PING floods, oversized header lists and an HPACK bomb, more than
128 concurrent streams, zero-window stalls (memory stays flat and comes back), nghttp2's own
protocol checks, and idle connections. Raw frames over h2c and TLS; after every case a normal
request to weir must still succeed."""

from harness import *

TEST_TIMEOUT = 240

C = None
O = None
W = None           # W.port: h2c listener; TLS_PORT: TLS listener
TLS_PORT = None


def setup_module():
    global C, O, W, TLS_PORT
    C = Certs()
    O = Origin("o").start()
    TLS_PORT = free_port()
    W = Weir(config(free_port(), TLS_PORT)).start()


def config(port, tls_port, **top):
    cfg = {"listeners": [{"name": "web", "address": "127.0.0.1:%d" % port, "h2c": True},
                         tls_listener(tls_port, [C.leaf("site-%d" % tls_port, ["site.test"])])],
           "routes": [route("all", "c")], "clusters": [cluster("c", O)]}
    cfg.update(top)
    return cfg


def assert_alive(w=None, what=""):
    """weir still answers HTTP/1.1, h2c and h2 over TLS (fresh connections)."""
    w = w or W
    check(w.proc.poll() is None, "weir exited (%r) %s" % (w.proc.returncode, what))
    check_eq(w.http("GET", "/hello").status, 200, "HTTP/1.1 request after %s" % what)
    tport = int(w.cfg["listeners"][1]["address"].rsplit(":", 1)[1])
    for tls, port in ((False, w.port), (True, tport)):
        s = h2_get(port, "/hello", tls=tls)
        check_eq((s.status, s.body), (200, b"hello from o\n"),
                 "%s request after %s" % ("h2" if tls else "h2c", what))


def origin_saw(tag):
    """How many requests whose target contains <tag> the origin answered (tags keep late
    lines of earlier requests out of the count)."""
    with O._lock:
        return sum(1 for r in O.requests if tag in r)


def both():
    return ((False, W.port), (True, TLS_PORT))


def expect_goaway_close(c, codes, what, timeout=10):
    goaway, closed = c.wait_goaway_or_close(timeout)
    check(goaway is not None, "%s: no GOAWAY received (closed=%r, send error %r)"
          % (what, closed, c.send_error))
    check(goaway[1] in codes, "%s: GOAWAY error %s, expected one of %s" % (
        what, H2_ERRORS.get(goaway[1], goaway[1]), [H2_ERRORS[x] for x in codes]))
    check(closed, "%s: connection not closed after GOAWAY" % what)
    return goaway


# ---- settings -------------------------------------------------------------------------------------

def test_server_settings():
    for tls, port in both():
        c = H2Raw(port, tls=tls)
        st = c.wait_settings()
        check_eq(st.get(H2_SETTINGS_MAX_CONCURRENT_STREAMS), 128, "SETTINGS_MAX_CONCURRENT_STREAMS")
        check_eq(st.get(H2_SETTINGS_MAX_HEADER_LIST_SIZE), 65536,
                 "SETTINGS_MAX_HEADER_LIST_SIZE = max_header_bytes (default)")
        c.stop()
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, max_header_bytes=8192)).start()
    c = H2Raw(port)
    check_eq(c.wait_settings().get(H2_SETTINGS_MAX_HEADER_LIST_SIZE), 8192,
             "SETTINGS_MAX_HEADER_LIST_SIZE follows max_header_bytes")
    c.stop()
    w.stop()


# ---- rapid reset ---------------------------------------------------------------------------------

def test_rapid_reset():
    for tls, port in both():
        c = H2Raw(port, tls=tls)
        c.wait_settings()
        pairs = 0
        for _ in range(50):   # at most 5000 HEADERS + RST_STREAM pairs
            out = b""
            for _ in range(100):
                sid = c.next_sid
                c.next_sid += 2
                out += c.headers_frame(sid, c.request_headers("/hello")) + \
                    h2_frame(H2_RST_STREAM, 0, sid, H2_CANCEL.to_bytes(4, "big"))
            if not c.send(out):
                break
            pairs += 100
            c.pump(0)
            if c.goaway is not None or c.eof:
                break
        expect_goaway_close(c, (H2_ENHANCE_YOUR_CALM,), "rapid reset (%d pairs sent, %s)"
                            % (pairs, "TLS" if tls else "h2c"))
        check(pairs < 5000, "the limit hit well before 5000 resets (%d)" % pairs)
        c.stop()
    check("rapid reset" in W.log(), "a log line about the rapid reset")
    assert_alive(what="rapid reset")


def test_some_resets_are_fine():
    # Below the limit: a client cancelling 100 streams keeps its connection.
    c = H2Raw(W.port)
    for _ in range(100):
        sid = c.request("/slow/1000")
        c.rst(sid)
    s = c.get("/hello")
    check_eq(s.status, 200, "request after 100 cancelled streams")
    check(c.goaway is None, "no GOAWAY for 100 resets: %r" % (c.goaway,))
    c.stop()


# ---- CONTINUATION -------------------------------------------------------------------------------

def _continuations(c, sid, n, payload=None, end=True):
    """HEADERS (END_STREAM, no END_HEADERS) + n CONTINUATION frames; the last one ends the block
    when <end>. Returns how many were sent before the server closed."""
    c.send(h2_frame(H2_HEADERS, H2_END_STREAM, sid, c.encode(c.request_headers("/echo"))))
    sent = 0
    for i in range(n):
        p = c.encode([("x-c%d" % i, "v")]) if payload is None else payload
        flags = H2_END_HEADERS if (end and i == n - 1) else 0
        if not c.frame(H2_CONTINUATION, flags, sid, p):
            break
        sent += 1
        if i % 20 == 19:
            c.pump(0)
            if c.goaway is not None or c.eof:
                break
    return sent


def test_a_few_continuations_are_fine():
    for tls, port in both():
        c = H2Raw(port, tls=tls)
        sid = c.new_sid()
        _continuations(c, sid, 5)
        s = c.response(sid)
        check_eq(s.status, 200, "HEADERS + 5 CONTINUATION frames")
        names = [k.lower() for k, _ in s.json()["headers"]]
        check(all("x-c%d" % i in names for i in range(5)), "headers from every fragment")
        c.stop()


def test_continuation_flood():
    for tls, port in both():
        for payload, what in ((None, "1-header fragments"), (b"", "empty fragments")):
            c = H2Raw(port, tls=tls)
            c.wait_settings()
            sid = c.new_sid()
            sent = _continuations(c, sid, 2000, payload, end=False)
            expect_goaway_close(c, (H2_ENHANCE_YOUR_CALM, H2_PROTOCOL_ERROR),
                                "CONTINUATION flood of %s (%d sent)" % (what, sent))
            check(sent < 2000, "stopped before 2000 CONTINUATION frames (%d)" % sent)
            check(c.streams[sid].status is None, "the flooding request was not served")
            c.stop()
    assert_alive(what="CONTINUATION floods")


# ---- SETTINGS and PING floods ----------------------------------------------------------------------

def _acks(c, ftype):
    return sum(1 for f in c.frames if f[0] == ftype and f[1] & H2_ACK)


def _paced_flood(c, ftype, frame):
    """Sends <frame> in batches of 20, each only once the previous ones were acknowledged (so
    no pile of unsent acks builds up): at most 3000 frames."""
    base = _acks(c, ftype)
    sent = 0
    for _ in range(150):
        if not c.send(frame * 20):
            break
        sent += 20
        try:
            c.wait(lambda: _acks(c, ftype) - base >= sent or c.goaway is not None,
                   timeout=10, what="acknowledgements")
        except AssertionError:
            break
        if c.goaway is not None or c.eof:
            break
    return sent


FLOODS = (("SETTINGS", H2_SETTINGS, h2_frame(H2_SETTINGS, 0, 0, b"")),
          ("PING", H2_PING, h2_frame(H2_PING, 0, 0, b"pingpong")),
          ("SETTINGS with values", H2_SETTINGS,
           h2_frame(H2_SETTINGS, 0, 0, h2_settings_payload({H2_SETTINGS_ENABLE_PUSH: 0}))))


def test_settings_and_ping_floods_paced():
    # Read as fast as weir answers: weir's own rate limit (> 500/s) must fire.
    for tls, port in both():
        for name, ftype, frame in FLOODS:
            c = H2Raw(port, tls=tls)
            c.wait_settings()
            sent = _paced_flood(c, ftype, frame)
            expect_goaway_close(c, (H2_ENHANCE_YOUR_CALM,), "paced %s flood (%d sent, %s)"
                                % (name, sent, "TLS" if tls else "h2c"))
            check(sent < 3000, "stopped before 3000 frames (%d)" % sent)
            c.stop()
    check("flood of SETTINGS/PING" in W.log(), "a log line about the flood")
    assert_alive(what="paced SETTINGS/PING floods")


def test_settings_and_ping_floods_burst():
    # All at once, never reading: the acks pile up; GOAWAY (weir's limit or nghttp2's
    # outbound-ack limit) and close.
    for tls, port in both():
        for name, ftype, frame in FLOODS:
            c = H2Raw(port, tls=tls, auto_ack=False)
            sent = 0
            for _ in range(10):
                if not c.send(frame * 500):
                    break
                sent += 500
            expect_goaway_close(c, (H2_ENHANCE_YOUR_CALM, H2_PROTOCOL_ERROR),
                                "burst %s flood (%d sent)" % (name, sent))
            c.stop()
    assert_alive(what="burst SETTINGS/PING floods")


# ---- header lists --------------------------------------------------------------------------------

def test_header_list_over_limit():
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, max_header_bytes=8192)).start()
    for tls, p in ((False, port), (True, tport)):
        c = H2Raw(p, tls=tls)
        # Each block stays under 16 KiB on the wire (36-h2.py covers bigger bursts over TLS).
        cases = [("one 12 KB header", [("x-big", "v" * 12000)]),
                 ("100 headers of 100 bytes", [("x-h%d" % i, "v" * 100) for i in range(100)]),
                 ("300 small headers", [("x-s%d" % i, "1") for i in range(300)])]
        for what, hs in cases:
            s = c.get("/echo?oversized", headers=hs)
            check(s.status == 431 or (s.reset is not None and s.status is None) or
                  c.goaway is not None,
                  "%s over max_header_bytes 8192: expected 431, RST_STREAM or GOAWAY, got %r"
                  % (what, s))
            if c.goaway is not None:
                check(c.wait_goaway_or_close(10)[1], "closed after GOAWAY")
                c.stop()
                c = H2Raw(p, tls=tls)
        check_eq(origin_saw("oversized"), 0, "oversized requests that reached the origin")
        s = c.get("/echo", headers=[("x-ok", "v" * 3000)])
        check_eq(s.status, 200, "a request under the limit (same connection unless closed)")
        c.stop()
    assert_alive(w, "oversized header lists")
    w.stop()


def test_hpack_bomb():
    # One 4000-byte header put into the HPACK dynamic table, then referenced 4000 times
    # (1 byte each): a 16 MB header list from a 8 KB block.
    for tls, port in both():
        rss0 = W.rss_kib()
        c = H2Raw(port, tls=tls)
        c.wait_settings()
        sid = c.new_sid()
        block = c.encode(c.request_headers("/echo?bomb") + [("x-bomb", "b" * 4000)])
        entries = list(c.enc.header_table.dynamic_entries)
        idx = 62 + [k for k, _ in entries].index(b"x-bomb")
        ref = bytes([0x80 | idx]) if idx < 127 else bytes([0xff, idx - 127])
        block += ref * 4000
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = b""
        for i, p in enumerate(pieces):
            flags = (H2_END_STREAM if i == 0 else 0) | \
                (H2_END_HEADERS if i == len(pieces) - 1 else 0)
            out += h2_frame(H2_HEADERS if i == 0 else H2_CONTINUATION, flags, sid, p)
        c.send(out)
        c.wait(lambda: c.streams[sid].done or c.goaway is not None, timeout=20,
               what="an answer to the HPACK bomb")
        s = c.streams[sid]
        check(s.status in (None, 431), "HPACK bomb answered %r" % s)
        check_eq(origin_saw("bomb"), 0, "the bomb did not reach the origin")
        if c.goaway is None:
            check_eq(c.get("/hello").status, 200, "the connection still works")
        c.stop()
        grew = W.rss_kib() - rss0
        check(grew < rss_margin_kib(), "RSS grew %d KiB for an HPACK bomb" % grew)
    assert_alive(what="HPACK bombs")


# ---- concurrency ------------------------------------------------------------------------------------

def test_more_than_128_concurrent_streams():
    for ack in (True, False):
        tag = "?many-%s-" % ack
        c = H2Raw(W.port, auto_ack=ack, timeout=30)
        c.wait_settings()
        if ack:
            c.wait(lambda: any(f[0] == H2_SETTINGS and f[1] & H2_ACK for f in c.frames),
                   what="the ACK of our SETTINGS")
        sids = [c.new_sid() for _ in range(140)]
        c.send(b"".join(c.headers_frame(s, c.request_headers("/slow/1500%s%d" % (tag, i)))
                        for i, s in enumerate(sids)))
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline and not c.eof and \
                not all(c.streams[s].done for s in sids):
            c.pump(0.2)
        served = [s for s in sids if c.streams[s].status == 200]
        check(len(served) <= 128, "at most 128 streams served at once, got %d" % len(served))
        check(all(c.streams[s].status is None for s in sids[128:]),
              "streams beyond the 128th must not be served: %r" % [c.streams[s] for s in sids[128:]])
        refused = [c.streams[s].reset for s in sids[128:]]
        if c.goaway is None:
            check(all(r in (H2_REFUSED_STREAM, H2_PROTOCOL_ERROR) for r in refused),
                  "excess streams refused with RST_STREAM: %r" % refused)
            check_eq(len(served), 128, "the first 128 streams are served")
        else:
            check(c.goaway[1] in (H2_PROTOCOL_ERROR, H2_REFUSED_STREAM, H2_ENHANCE_YOUR_CALM),
                  "GOAWAY error code %r" % (c.goaway,))
            check(c.goaway[0] <= sids[127], "GOAWAY last stream id %d within the first 128"
                  % c.goaway[0])
        check(origin_saw(tag) <= 128, "origin saw %d requests" % origin_saw(tag))
        c.stop()
    # A client that honours the limit: python3-h2 stops at 128 on its own.
    import h2.config
    import h2.connection
    import h2.exceptions
    sock = socket.create_connection(("127.0.0.1", W.port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 10 * SLOW
    while conn.remote_settings.max_concurrent_streams != 128 and time.monotonic() < deadline:
        conn.receive_data(sock.recv(65536))
        sock.sendall(conn.data_to_send())
    check_eq(conn.remote_settings.max_concurrent_streams, 128, "h2 library sees 128")
    hdrs = [(":method", "GET"), (":scheme", "http"), (":path", "/slow/500"),
            (":authority", "a.test")]
    for _ in range(128):
        conn.send_headers(conn.get_next_available_stream_id(), hdrs, end_stream=True)
    try:
        conn.send_headers(conn.get_next_available_stream_id(), hdrs, end_stream=True)
        check(False, "the 129th stream must be refused by the client's own accounting")
    except h2.exceptions.TooManyStreamsError:
        pass
    sock.close()
    assert_alive(what="too many streams")


# ---- flow control ---------------------------------------------------------------------------------

def rss_margin_kib():
    return (48 if weir_sanitized() else 8) * 1024


def test_zero_window_stall_memory():
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport)).start()
    for i in range(10):   # warm up pools and buffers
        check_eq(h2_get(port, "/bytes/300000").status, 200)
        check_eq(h2_get(tport, "/bytes/300000", tls=True).status, 200)
    base = w.rss_kib()
    for rnd in range(3):
        conns = []
        for i in range(6):
            tls = i % 3 == 2
            c = H2Raw(tport if tls else port, tls=tls, auto_window=False,
                      settings={H2_SETTINGS_INITIAL_WINDOW_SIZE: 0} if i % 2 else None)
            for _ in range(8):
                c.request("/bytes/500000000")   # 500 MB each, never read past the window
            conns.append(c)
        peak = 0
        for _ in range(6):
            time.sleep(0.5)
            for c in conns:
                c.pump(0)
            peak = max(peak, w.rss_kib() - base)
        check(peak < rss_margin_kib(),
              "round %d: RSS grew %d KiB with 48 stalled 500 MB streams" % (rnd, peak))
        for c in conns:
            got = sum(len(s.body) for s in c.streams.values())
            check(got <= 65535, "no more DATA than the windows allow (%d bytes)" % got)
        # Other clients are served meanwhile, also a full-speed download.
        check_eq(w.http("GET", "/hello").status, 200, "HTTP/1.1 during the stall")
        s = h2_get(port, "/bytes/2000000")
        check(s.ended and s.body == origin_bytes(2000000), "h2c download during the stall")
        s = h2_get(tport, "/hello", tls=True)
        check_eq(s.status, 200, "h2 request during the stall")
        for c in conns:
            c.stop()
        wait_for(lambda: w.rss_kib() - base < rss_margin_kib(), timeout=10,
                 what="RSS back near the baseline after the stalled clients left")
    final = w.rss_kib() - base
    check(final < rss_margin_kib(), "after 3 rounds RSS is %d KiB over the baseline" % final)
    assert_alive(w, "zero-window stalls")
    w.stop()


def test_window_update_then_download_completes():
    # A client that opens its window late gets the whole body.
    c = H2Raw(W.port, auto_window=False, settings={H2_SETTINGS_INITIAL_WINDOW_SIZE: 0})
    sid = c.request("/bytes/1000000")
    c.wait(lambda: c.streams[sid].status is not None, timeout=10, what="response head")
    c.pump(0.5)
    check_eq(len(c.streams[sid].body), 0, "no DATA with a zero window")
    c.auto_window = True
    c.settings({H2_SETTINGS_INITIAL_WINDOW_SIZE: 65535})
    c.window_update(0, 1 << 20)
    c.window_update(sid, 65535)
    s = c.response(sid, timeout=30)
    check(s.ended and s.body == origin_bytes(1000000), "the whole body once the window opened")
    c.stop()


# ---- protocol errors and idle connections -----------------------------------------------------------

def test_protocol_errors_close_with_goaway():
    cases = [
        ("DATA on stream 0", h2_frame(H2_DATA, 0, 0, b"x")),
        ("SETTINGS with a bad length", h2_frame(H2_SETTINGS, 0, 0, b"\x00\x01\x00")),
        ("WINDOW_UPDATE overflow", h2_frame(H2_WINDOW_UPDATE, 0, 0, (0x7fffffff).to_bytes(4, "big"))),
        ("HEADERS on an even stream id", None),
        ("a frame over SETTINGS_MAX_FRAME_SIZE", h2_frame(H2_DATA, 0, 1, b"x" * 20000)),
        ("undecodable HPACK", h2_frame(H2_HEADERS, H2_END_HEADERS | H2_END_STREAM, 1,
                                       b"\xff\xff\xff\xff\xff\xff")),
        ("PING with a bad length", h2_frame(H2_PING, 0, 0, b"1234")),
    ]
    for tls, port in both():
        for what, data in cases:
            c = H2Raw(port, tls=tls)
            c.wait_settings()
            if data is None:
                data = c.headers_frame(2, c.request_headers("/hello"))
            c.send(data)
            goaway, closed = c.wait_goaway_or_close(10)
            check(goaway is not None and goaway[1] != H2_NO_ERROR,
                  "%s: expected GOAWAY with an error, got %r" % (what, goaway))
            check(closed, "%s: connection closed" % what)
            c.stop()
    # Broken prefaces on the h2c listener: an HTTP/1.1 error (or just a close), never a hang.
    for data in (H2_PREFACE[:10] + b"garbage that is no preface\r\n\r\n",
                 b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"):
        c = Raw(W.port)
        c.send(data)
        got = c.read_until_close(10)
        check(got == b"" or status_of(got) in (400, 505), "broken preface %r: got %r"
              % (data[:30], got[:100]))
        c.stop()
    # The preface followed by something other than SETTINGS: GOAWAY PROTOCOL_ERROR.
    c = H2Raw(W.port, preface=False)
    c.send(H2_PREFACE + h2_frame(H2_PING, 0, 0, b"12345678"))
    goaway, closed = c.wait_goaway_or_close(10)
    check(goaway is not None and goaway[1] == H2_PROTOCOL_ERROR and closed,
          "no SETTINGS after the preface: GOAWAY PROTOCOL_ERROR and close, got %r" % (goaway,))
    c.stop()
    assert_alive(what="protocol errors")


def test_idle_h2_connections_closed():
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, client_idle_timeout_ms=1000, client_header_timeout_ms=1000))
    w.start()
    t0 = time.monotonic()
    idle = H2Raw(port)
    check_eq(idle.get("/hello").status, 200)
    silent = H2Raw(port, preface=False)
    silent.send(H2_PREFACE)   # the preface, then nothing (not even SETTINGS)
    tls_idle = H2Raw(tport, tls=True)
    for c, what in ((idle, "idle h2c connection"), (silent, "preface-only connection"),
                    (tls_idle, "idle h2 TLS connection")):
        c.wait_goaway_or_close(15)
        check(c.eof, "%s closed by the idle timeout" % what)
        check(time.monotonic() - t0 > 0.9, "%s closed before its timeout" % what)
        c.stop()
    # A connection with a stream in flight is not idle.
    busy = H2Raw(port)
    s = busy.get("/slow/2500")
    check_eq((s.status, s.body), (200, b"slow\n"), "a 2.5 s stream outlives the 1 s idle timeout")
    busy.stop()
    assert_alive(w, "idle connections")
    w.stop()


if __name__ == "__main__":
    run()
