"""HTTP/2 downstream (issue 3): ALPN h2 over TLS and h2c prior knowledge on an `"h2c": true`
listener (which still serves HTTP/1.1), with real clients (curl, nghttp, h2load, Python h2 and
httpx) and handcrafted frames; h2 -> HTTP/1.1 translation (bodies with and without length,
:authority -> Host, trailers, cookies, big headers, big responses), weir's own answers as HTTP/2
responses, redirects and HSTS, many streams on one connection, reload and drain."""

from harness import *

TEST_TIMEOUT = 240

C = None
CERT = None
O = None
W = None          # W.port: cleartext listener with h2c; TLS_PORT: TLS listener
TLS_PORT = None


def setup_module():
    global C, CERT, O, W, TLS_PORT
    C = Certs()
    CERT = C.leaf("site", ["site.test", "*.site.test"])
    O = Origin("o").start()
    TLS_PORT = free_port()
    W = Weir(config(free_port(), TLS_PORT)).start()


def config(plain_port, tls_port, cluster_origin=None, **top):
    cfg = {
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % plain_port, "h2c": True},
                      tls_listener(tls_port, [CERT])],
        "routes": [
            route("only", "c", host="only.test", path_prefix="/only/"),
            route("secure", "c", path_prefix="/secure/", redirect_https=True),
            route("hsts", "c", path_prefix="/hsts/",
                  hsts={"max_age_s": 600, "include_subdomains": False, "preload": False}),
            route("dead", "dead", path_prefix="/nowhere/"),
            route("empty", "empty", path_prefix="/empty/"),
            route("limited", "c", path_prefix="/limited/", max_body_bytes=1000),
            route("all", "c"),
        ],
        "clusters": [cluster("c", cluster_origin or O), cluster("dead", dead_address()),
                     {"name": "empty", "endpoints": []}],
    }
    cfg.update(top)
    return cfg


def echo_headers(j, name):
    return [v for k, v in j["headers"] if k.lower() == name.lower()]


# ---- the Python h2 library as a client ----------------------------------------------------------

class H2Lib:
    """A client on python3-h2's state machine: flow control (both ways) is the library's."""

    def __init__(self, port, tls=False, authority="a.test", timeout=60):
        import h2.config
        import h2.connection
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = tls_client_ctx(alpn=["h2"]).wrap_socket(self.sock)
            check_eq(self.sock.selected_alpn_protocol(), "h2", "ALPN")
        self.tls = tls
        self.authority = authority
        self.timeout = timeout
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024)
        self.sock.sendall(self.conn.data_to_send())
        self.resp = {}      # sid -> dict(status, headers, body, ended, reset)
        self.pending = {}   # sid -> [bytes left to send, end_stream]
        self.terminated = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def request(self, path, method="GET", headers=(), body=None, content_length=True,
                authority=None, trailers=None):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method), (":scheme", "https" if self.tls else "http"),
             (":path", path), (":authority", authority or self.authority)] + list(headers)
        if body is not None and content_length:
            h.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, h, end_stream=body is None)
        self.resp[sid] = {"status": None, "headers": [], "body": bytearray(), "ended": False,
                          "reset": None, "trailers": None}
        if body is not None:
            self.pending[sid] = [memoryview(body), trailers or True]
        self._flush()
        return sid

    def _flush(self):
        for sid, p in list(self.pending.items()):
            while len(p[0]) > 0:
                n = min(len(p[0]), self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size)
                if n <= 0:
                    break
                self.conn.send_data(sid, p[0][:n].tobytes())
                p[0] = p[0][n:]
            if len(p[0]) == 0:
                if isinstance(p[1], list):
                    self.conn.send_headers(sid, p[1], end_stream=True)  # trailers
                elif p[1]:
                    self.conn.end_stream(sid)
                del self.pending[sid]
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self, sids=None, timeout=None):
        """Exchanges frames until the streams <sids> (default: all) ended or were reset."""
        import h2.events
        sids = list(self.resp) if sids is None else list(sids)
        deadline = time.monotonic() + (timeout or self.timeout) * SLOW
        while not all(self.resp[s]["ended"] or self.resp[s]["reset"] is not None for s in sids):
            left = deadline - time.monotonic()
            check(left > 0, "h2 library client: timed out; pending %r" % [
                s for s in sids if not self.resp[s]["ended"]][:10])
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            check(data, "h2 library client: connection closed (terminated=%r)" % self.terminated)
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    r = self.resp[ev.stream_id]
                    r["headers"] = list(ev.headers)
                    r["status"] = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    self.resp[ev.stream_id]["body"] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    self.resp[ev.stream_id]["trailers"] = list(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.resp[ev.stream_id]["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    if ev.stream_id in self.resp:
                        self.resp[ev.stream_id]["reset"] = ev.error_code
                    self.pending.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.terminated = ev
            self._flush()
        return [self.resp[s] for s in sids]

    def get(self, path, **kw):
        return self.run([self.request(path, **kw)])[0]


def lib_json(r, what):
    """The JSON body of an H2Lib response that must be a complete 200."""
    check(r["status"] == 200 and r["ended"],
          "%s: expected a complete 200, got status %r, reset %r, %d body bytes"
          % (what, r["status"], r["reset"], len(r["body"])))
    return json.loads(bytes(r["body"]))


# ---- real clients ---------------------------------------------------------------------------------

def curl(*args, timeout=60):
    p = run_cmd(["curl", "-sS", "--max-time", str(timeout * SLOW)] + list(args) +
                ["-w", "\n%{http_version} %{http_code}"], timeout=timeout + 10)
    body, _, tail = p.stdout.rpartition("\n")
    ver, _, code = tail.partition(" ")
    return p.returncode, body, ver, code, p.stderr


def test_curl_http2_over_tls():
    rc, body, ver, code, err = curl("-k", "--http2", "https://127.0.0.1:%d/hello" % TLS_PORT)
    check_eq(rc, 0, "curl exit (stderr %r)" % err)
    check_eq((ver, code, body), ("2", "200", "hello from o\n"), "curl --http2 over TLS")
    rc, body, ver, code, err = curl("-k", "--http2", "--data-binary", "x" * 100000,
                                    "https://127.0.0.1:%d/sink" % TLS_PORT)
    check_eq((ver, code), ("2", "200"), "curl --http2 POST of 100000 bytes over TLS")
    check_eq(json.loads(body)["body_len"], 100000, "POST body length at the origin")


def test_curl_h2c_prior_knowledge():
    rc, body, ver, code, err = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/hello" % W.port)
    check_eq(rc, 0, "curl exit (stderr %r)" % err)
    check_eq((ver, code, body), ("2", "200", "hello from o\n"), "curl --http2-prior-knowledge")


def test_http11_still_served_on_h2c_listener():
    r = W.http("GET", "/hello")
    check_eq((r.status, r.body, r.version), (200, b"hello from o\n", "HTTP/1.1"), "HTTP/1.1")
    c = W.raw()
    c.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\n\r\n")
    check_eq([c.read_response().json()["query"] for _ in range(2)], ["n=1", "n=2"],
             "pipelined HTTP/1.1 on the h2c listener")
    c.stop()
    # A request line that starts like the preface but is not it stays HTTP/1.1.
    r = W.http("PRI", "/hello")
    check(r.status != 101, "no upgrade: %r" % r)
    # curl --http2 on http:// asks for Upgrade: h2c; weir answers over HTTP/1.1.
    rc, body, ver, code, err = curl("--http2", "http://127.0.0.1:%d/hello" % W.port)
    check_eq((code, body), ("200", "hello from o\n"), "Upgrade: h2c request answered")
    check_in(ver, ("1.1", "2"), "version")
    c = W.raw()
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    check_eq(c.read_response().status, 101, "WebSocket on the h2c listener")
    c.send(b"ws-bytes")
    got = c.buf
    while len(got) < 8 and c._fill():
        got = c.buf
    check_eq(got, b"ws-bytes", "WebSocket echo")
    c.stop()


def test_nghttp():
    for url in ("https://127.0.0.1:%d/hello" % TLS_PORT, "http://127.0.0.1:%d/hello" % W.port):
        p = run_cmd(["nghttp", "-nv", url], timeout=60)
        check_eq(p.returncode, 0, "nghttp exit for %s (stderr %r)" % (url, p.stderr[-500:]))
        check(re.search(r"recv \(stream_id=\d+\) :status: 200", p.stdout),
              "nghttp shows :status 200 for %s: %s" % (url, p.stdout[-1500:]))
        check("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):128" in p.stdout,
              "server SETTINGS advertise 128 streams")
        check(re.search(r"recv DATA frame <length=13, flags=0x01", p.stdout),
              "the 13-byte body with END_STREAM")


def _h2load(url, n, c, m):
    p = run_cmd(["h2load", "-n", str(n), "-c", str(c), "-m", str(m), url], timeout=240)
    check_eq(p.returncode, 0, "h2load exit (%s)" % p.stderr[-500:])
    want = "requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored, " \
           "0 timeout" % (n, n, n, n)
    check(want in p.stdout, "h2load %s: %s" % (url, p.stdout[-900:]))
    check("status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx" % n in p.stdout,
          "all 2xx: %s" % p.stdout[-900:])


def test_h2load_tls_and_h2c():
    _h2load("https://127.0.0.1:%d/hello" % TLS_PORT, 2000, 4, 10)
    _h2load("http://127.0.0.1:%d/hello" % W.port, 1000, 2, 10)
    check(W.proc.poll() is None, "weir alive")


def test_python_h2_library():
    for tls, port in ((True, TLS_PORT), (False, W.port)):
        c = H2Lib(port, tls=tls)
        sids = [c.request("/echo?n=%d" % i) for i in range(40)]
        sids += [c.request("/bytes/%d" % (70000 + i)) for i in range(10)]
        post = c.request("/echo", method="POST", body=b"posted" * 1000)
        res = c.run()
        for i, sid in enumerate(sids[:40]):
            check_eq(lib_json(res[i], "stream %d" % sid)["query"], "n=%d" % i, "stream %d" % sid)
        for i in range(10):
            check(bytes(res[40 + i]["body"]) == origin_bytes(70000 + i), "/bytes body %d" % i)
        j = lib_json(c.resp[post], "POST")
        check_eq((j["method"], j["body_len"]), ("POST", 6000), "POST over h2 lib")
        c.close()


def test_httpx_http2():
    import httpx
    with httpx.Client(http2=True, verify=False, timeout=60) as cl:
        for i in range(3):
            r = cl.get("https://127.0.0.1:%d/echo?i=%d" % (TLS_PORT, i))
            check_eq((r.http_version, r.status_code), ("HTTP/2", 200), "httpx over TLS")
            check_eq(r.json()["query"], "i=%d" % i)
        r = cl.post("https://127.0.0.1:%d/sink" % TLS_PORT, content=b"p" * 300000)
        check_eq((r.http_version, r.status_code), ("HTTP/2", 200), "httpx POST of 300000 bytes")
        check_eq(r.json()["body_len"], 300000, "httpx POST body at the origin")
        r = cl.get("https://127.0.0.1:%d/bytes/1000000" % TLS_PORT)
        check(r.content == origin_bytes(1000000), "httpx 1 MB body")
    with httpx.Client(http1=False, http2=True, timeout=60) as cl:
        r = cl.get("http://127.0.0.1:%d/echo" % W.port)
        check_eq((r.http_version, r.status_code), ("HTTP/2", 200), "httpx h2c prior knowledge")


# ---- h2 -> HTTP/1.1 translation ------------------------------------------------------------------

def test_request_body_with_content_length():
    c = H2Raw(W.port)
    s = c.get("/echo", method="POST", body=b"abcde" * 1000, headers=[("content-length", "5000")])
    j = s.json()
    check_eq((s.status, j["body_len"], j["body"]), (200, 5000, "abcde" * 1000), "echo body")
    check_eq(echo_headers(j, "content-length"), ["5000"], "Content-Length forwarded")
    check_eq(echo_headers(j, "transfer-encoding"), [], "no chunked when the length is known")
    c.stop()
    c = H2Lib(TLS_PORT, tls=True)
    r = c.get("/sink", method="POST", body=b"L" * 3000000)
    check_eq(lib_json(r, "3 MB upload over h2+TLS")["body_len"], 3000000,
             "3 MB body with content-length")
    c.close()


def test_request_body_without_content_length_is_chunked():
    c = H2Raw(W.port)
    sid = c.request("/echo", method="POST", end_stream=False)
    for piece in (b"one-", b"two-", b"three"):
        c.data(sid, piece, end_stream=False)
        time.sleep(0.05)
    c.data(sid, b"", end_stream=True)
    s = c.response(sid)
    j = s.json()
    check_eq((s.status, j["body"]), (200, "one-two-three"), "streamed body")
    check_eq([v.lower() for v in echo_headers(j, "transfer-encoding")], ["chunked"],
             "the origin sees chunked")
    check_eq(echo_headers(j, "content-length"), [], "no Content-Length")
    # Empty body, no length: still a valid (empty chunked) request.
    sid = c.request("/echo", method="POST", end_stream=False)
    c.data(sid, b"", end_stream=True)
    check_eq(c.response(sid).json()["body_len"], 0, "empty streamed body")
    c.stop()
    c = H2Lib(TLS_PORT, tls=True)
    r = c.get("/sink", method="POST", body=b"S" * 5000001, content_length=False)
    check_eq(lib_json(r, "5 MB streamed upload over h2+TLS")["body_len"], 5000001,
             "5 MB streamed body reaches /sink whole")
    c.close()


def test_tls_uploads_do_not_stall():
    # Request bodies over h2 + TLS: each upload must complete once the client sent it all,
    # also when its last bytes arrive in one burst that does not fit one plaintext buffer.
    for i in range(16):
        c = H2Lib(TLS_PORT, tls=True, timeout=20)
        n = 100000 + 50000 * (i % 4)
        try:
            r = c.get("/sink", method="POST", body=b"T" * n, content_length=bool(i % 2))
        except (socket.timeout, AssertionError) as e:
            raise AssertionError("upload %d (%d bytes over h2+TLS, content-length %s): no "
                                 "response after the whole body was sent (%s)"
                                 % (i, n, bool(i % 2), e))
        finally:
            c.close()
        check_eq(lib_json(r, "upload %d" % i)["body_len"], n, "upload %d" % i)


def test_tls_large_header_blocks_do_not_stall():
    # A request whose header block is bigger than 16 KiB arrives in one burst over TLS; with
    # max_header_bytes 8192 weir must answer 431 every time (never hang).
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, max_header_bytes=8192)).start()
    got = []
    for i in range(30):
        c = H2Raw(tport, tls=True, timeout=5)
        try:
            s = c.get("/echo", headers=[("x-big", "v" * 20000)])
            got.append(s.status if s.status is not None else "RST %r" % s.reset)
        except AssertionError:
            got.append("no answer")
        c.stop()
    check_eq(got, [431] * 30, "20 KB header blocks over h2+TLS, 30 connections")
    w.stop()


def test_request_trailers():
    c = H2Raw(W.port)
    sid = c.request("/echo", method="POST", body=b"abc", end_stream=False)
    c.send(c.headers_frame(sid, [("x-checksum", "123")], end_stream=True))
    s = c.response(sid)
    check_eq((s.status, s.json()["body"]), (200, "abc"), "body before trailers delivered")
    check_eq(c.get("/hello").status, 200, "connection fine after a request with trailers")
    c.stop()


# ---- trailers between HTTP/2 clients and HTTP/1.1 upstreams --------------------------------------

def _parse_chunked(rest):
    """(body, trailer lines) of a complete chunked body in <rest>, or None if incomplete."""
    body, p = b"", rest
    while True:
        i = p.find(b"\r\n")
        if i < 0:
            return None
        size = int(p[:i].split(b";")[0], 16)
        p = p[i + 2:]
        if size == 0:
            break
        if len(p) < size + 2:
            return None
        body, p = body + p[:size], p[size + 2:]
    end = p.find(b"\r\n\r\n") if p[:2] != b"\r\n" else -2
    if end == -1:
        return None
    lines = [] if end == -2 else p[:end].split(b"\r\n")
    return body, [ln.decode() for ln in lines]


def trailer_origin(idx, data):
    """An HTTP/1.1 origin that reports the request's framing, body and trailers in a JSON body,
    sent chunked with trailers of its own (some that must not pass)."""
    if b"\r\n\r\n" not in data:
        return None
    head, rest = data.split(b"\r\n\r\n", 1)
    fields = [ln.split(b":", 1) for ln in head.split(b"\r\n")[1:]]
    hdrs = {k.strip().lower().decode(): v.strip().decode() for k, v in fields}
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        got = _parse_chunked(rest)
        if got is None:
            return None
        body, trailers = got
    else:
        n = int(hdrs.get("content-length", "0"))
        if len(rest) < n:
            return None
        body, trailers = rest[:n], []
    j = json.dumps({"te": hdrs.get("transfer-encoding"), "cl": hdrs.get("content-length"),
                    "trailer_hdr": hdrs.get("trailer"), "body": body.decode(),
                    "trailers": trailers}).encode()
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: X-Resp-Sum, Grpc-Status\r\n\r\n" +
            b"%x\r\n%s\r\n" % (len(j), j) +
            b"0\r\nX-Resp-Sum: abc123\r\nGrpc-Status:  0 \r\nContent-Length: 99\r\n"
            b"Set-Cookie: s=1\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n")
    return resp, False


def _trailer_weir():
    o = EvilOrigin(trailer_origin).start()
    port, tport = free_port(), free_port()
    return Weir(config(port, tport, cluster_origin=o)).start(), tport


def test_request_trailers_to_http11_upstream_chunked():
    w, tport = _trailer_weir()
    c = H2Lib(tport, tls=True)
    # No content-length: chunked towards the HTTP/1.1 upstream; trailers in the last chunk, the
    # forbidden ones (framing, routing, authentication, content metadata) dropped.
    r = c.get("/t", method="POST", body=b"hello", content_length=False,
              trailers=[("x-checksum", "sha256=1"), ("x-two", "b"), ("host", "evil.test"),
                        ("authorization", "Bearer x"), ("content-type", "text/evil")])
    j = lib_json(r, "request with trailers")
    check_eq((j["te"], j["cl"], j["body"]), ("chunked", None, "hello"), "framing and body")
    check_eq(j["trailers"], ["x-checksum: sha256=1", "x-two: b"], "trailers the origin got")
    c.close()
    w.stop()


def test_request_trailers_announced_with_content_length():
    # With a content-length, the body goes chunked only when a Trailer field announces
    # trailers (HTTP/1.1 carries trailers only in a chunked body).
    w, tport = _trailer_weir()
    c = H2Lib(tport, tls=True)
    r = c.get("/t", method="POST", body=b"abcdef", headers=[("trailer", "x-checksum")],
              trailers=[("x-checksum", "42")])
    j = lib_json(r, "announced trailers")
    check_eq((j["te"], j["cl"], j["body"], j["trailer_hdr"]),
             ("chunked", None, "abcdef", "x-checksum"), "framing, body, Trailer field")
    check_eq(j["trailers"], ["x-checksum: 42"], "trailers the origin got")
    # Without the announcement, the length is kept (and late trailers cannot follow).
    r = c.get("/t", method="POST", body=b"xyz", trailers=[("x-checksum", "7")])
    j = lib_json(r, "unannounced trailers")
    check_eq((j["te"], j["cl"], j["body"], j["trailers"]), (None, "3", "xyz", []),
             "content-length kept, trailers dropped")
    c.close()
    w.stop()


def test_response_trailers_from_http11_upstream():
    w, tport = _trailer_weir()
    c = H2Lib(tport, tls=True)
    r = c.get("/t")
    j = lib_json(r, "response with trailers")
    check_eq(j["body"], "", "GET body")
    check_eq(r["trailers"], [("x-resp-sum", "abc123"), ("grpc-status", "0")],
             "trailers the HTTP/2 client got (names lower-cased, forbidden ones dropped)")
    # Many streams at once, each with its trailers.
    sids = [c.request("/t", method="POST", body=b"s%d" % i) for i in range(20)]
    got = c.run(sids)
    check_eq([x["trailers"] for x in got],
             [[("x-resp-sum", "abc123"), ("grpc-status", "0")]] * 20, "trailers on 20 streams")
    c.close()
    w.stop()


# ---- extended CONNECT (RFC 8441): WebSockets over HTTP/2 ----------------------------------------

def ws_origin(state):
    """An HTTP/1.1 WebSocket origin: records the handshake head, answers 101 with an accept
    value, then echoes every byte back prefixed with "echo:"; closes on "bye"."""
    def respond(idx, data):
        if idx not in state:
            if b"\r\n\r\n" not in data:
                return None
            head, rest = data.split(b"\r\n\r\n", 1)
            state[idx] = head.decode("latin-1")
            out = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   b"Sec-WebSocket-Protocol: chat\r\n\r\n")
            return out + (b"echo:" + rest if rest else b""), False
        if data.endswith(b"bye"):
            return b"echo:" + data, True
        return b"echo:" + data, False
    return respond


def _ws_weir():
    state = {}
    o = EvilOrigin(ws_origin(state)).start()
    port, tport = free_port(), free_port()
    cfg = config(port, tport)
    cfg["routes"][:0] = [route("h2up", "h2c-up", path_prefix="/h2up/"),
                         route("ws", "ws", path_prefix="/chat")]
    cfg["clusters"] += [cluster("h2c-up", o, protocol="h2c"), cluster("ws", o)]
    return Weir(cfg).start(), state


def test_extended_connect_websocket():
    w, state = _ws_weir()
    c = H2Raw(w.port)
    c.wait_settings()
    check_eq(c.server_settings.get(8), 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")
    sid = c.new_sid()
    c.send(c.headers_frame(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                 (":scheme", "http"), (":path", "/chat?room=1"),
                                 (":authority", "ws.test"), ("sec-websocket-version", "13"),
                                 ("sec-websocket-protocol", "chat")], end_stream=False))
    st = c.streams[sid]
    c.wait(lambda: st.status is not None or st.done, what="the answer to the CONNECT")
    check_eq(st.status, 200, "the upstream's 101 becomes 200")
    check_eq(st.header("sec-websocket-protocol"), "chat", "sub-protocol passed back")
    check_eq((st.header("sec-websocket-accept"), st.header("upgrade"), st.header("connection")),
             (None, None, None), "no HTTP/1.1 handshake fields over HTTP/2")
    check(not st.ended, "the stream stays open")
    head = state[0]
    lines = head.split("\r\n")
    check_eq(lines[0], "GET /chat?room=1 HTTP/1.1", "the upstream's request line")
    fields = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in lines[1:]}
    check_eq((fields.get("upgrade"), fields.get("connection", "").lower(),
              fields.get("sec-websocket-version"), fields.get("host")),
             ("websocket", "upgrade", "13", "ws.test"), "handshake fields")
    check(len(fields.get("sec-websocket-key", "")) == 24,
          "a Sec-WebSocket-Key made by weir: %r" % fields.get("sec-websocket-key"))
    check("content-length" not in fields and "transfer-encoding" not in fields,
          "no body framing: %r" % head)
    # Bytes both ways, several rounds, on a connection that also serves plain requests.
    for i in range(3):
        c.data(sid, b"ping%d" % i, end_stream=False)
        want = b"echo:ping%d" % i
        c.wait(lambda: st.body.endswith(want), what="echo %d" % i)
    other = c.get("/hello")
    check_eq(other.status, 200, "another stream meanwhile")
    c.data(sid, b"bye", end_stream=False)
    c.wait(lambda: st.done, what="the stream ends when the upstream closes")
    check(st.ended and st.reset is None, "ended cleanly: %r" % st.reset)
    check(st.body.endswith(b"echo:bye"), "last bytes before the end: %r" % st.body[-20:])
    c.stop()
    w.stop()


def test_extended_connect_refused_cases():
    w, state = _ws_weir()
    c = H2Raw(w.port)
    # Plain CONNECT (no :protocol) stays refused; an HTTP/2 upstream cannot take a WebSocket.
    sid = c.new_sid()
    c.send(c.headers_frame(sid, [(":method", "CONNECT"), (":authority", "x.test:443")],
                           end_stream=False))
    s = c.response(sid)
    check_eq(s.status if s.status is not None else "reset", 400, "CONNECT without :protocol")
    sid = c.new_sid()
    c.send(c.headers_frame(sid, [(":method", "CONNECT"), (":protocol", "websocket"),
                                 (":scheme", "http"), (":path", "/h2up/x"),
                                 (":authority", "ws.test")], end_stream=False))
    check_eq(c.response(sid).status, 501, "extended CONNECT to an HTTP/2 cluster")
    check_eq(c.get("/hello").status, 200, "connection fine after them")
    check_eq(state, {}, "nothing reached the origin")
    c.stop()
    w.stop()


def test_authority_becomes_host():
    c = H2Raw(W.port)
    j = c.get("/echo", authority="shop.test:8443").json()
    check_eq(echo_headers(j, "host"), ["shop.test:8443"], "Host from :authority")
    check_eq(echo_headers(j, "x-forwarded-host"), ["shop.test:8443"], "X-Forwarded-Host")
    j = c.get("/echo", authority=None, headers=[("host", "hosthdr.test")]).json()
    check_eq(echo_headers(j, "host"), ["hosthdr.test"], "Host header without :authority")
    j = c.get("/echo", authority="auth.test", headers=[("host", "auth.test")]).json()
    check_eq(echo_headers(j, "host"), ["auth.test"], "one Host when both are sent")
    # Routing uses it: only.test has its own host group.
    check_eq(c.get("/only/x", authority="only.test").status, 200, "routed by :authority")
    check_eq(c.get("/only/x", authority="other.test").status, 200, "catch-all for others")
    c.stop()


def test_cookie_headers_joined_for_http11():
    # RFC 9113 §8.2.3: split cookie fields MUST be joined with "; " for an HTTP/1.1 hop.
    c = H2Raw(W.port)
    j = c.get("/echo", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]).json()
    check_eq(echo_headers(j, "cookie"), ["a=1; b=2; c=3"], "one Cookie header at the origin")
    c.stop()


def test_large_header_under_limit():
    # A 20 KB header (under max_header_bytes 65536), as 31-h1-accept does for HTTP/1.1. Own
    # weir: a memory error here must not take the shared one down.
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport)).start()
    for tls, p in ((False, port), (True, tport)):
        c = H2Raw(p, tls=tls)
        s = c.get("/echo", headers=[("x-big", "v" * 20000)])
        check_eq(s.status, 200, "20 KB header over h2")
        check_eq(len(echo_headers(s.json(), "x-big")[0]), 20000, "forwarded whole")
        s = c.get("/echo", headers=[("x-h%d" % i, "w" * 400) for i in range(100)])
        check_eq(s.status, 200, "100 headers of 400 bytes")
        check_eq(len(s.json()["headers"]), 105, "all forwarded")
        c.stop()
    check_eq(w.http("GET", "/hello").status, 200, "weir alive")
    w.stop()


def test_large_response_over_h2():
    n = 20000000
    c = H2Lib(TLS_PORT, tls=True)
    r = c.get("/bytes/%d" % n)
    check_eq(r["status"], 200)
    check_eq(len(r["body"]), n, "20 MB over h2")
    check(bytes(r["body"]) == origin_bytes(n), "content")
    r = c.get("/bytes/%d?chunked=1" % 3000001)
    check(bytes(r["body"]) == origin_bytes(3000001), "chunked origin response de-chunked")
    check("transfer-encoding" not in dict(r["headers"]), "no Transfer-Encoding in HTTP/2")
    c.close()
    p = run_cmd(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                 "%{http_version} %{size_download}", "http://127.0.0.1:%d/bytes/%d"
                 % (W.port, n)], timeout=120)
    check_eq(p.stdout, "2 %d" % n, "curl h2c 20 MB")


def test_many_concurrent_streams_one_connection():
    c = H2Lib(W.port)
    sids = [c.request("/bytes/%d" % (100000 + i)) for i in range(120)]
    res = c.run(sids)
    check_eq([r["status"] for r in res], [200] * 120, "120 streams")
    for i, r in enumerate(res):
        check(bytes(r["body"]) == origin_bytes(100000 + i), "body of stream %d" % sids[i])
    sids = [c.request("/slow/300?%d" % i) for i in range(100)]
    res = c.run(sids)
    check_eq([bytes(r["body"]) for r in res], [b"slow\n"] * 100, "100 concurrent slow streams")
    c.close()


def test_headers_translated_back():
    c = H2Raw(TLS_PORT, tls=True)
    s = c.get("/close")  # the origin answers with Connection: close
    check_eq(s.status, 200)
    names = [k for k, _ in s.headers]
    for bad in ("connection", "keep-alive", "transfer-encoding", "upgrade"):
        check(bad not in names, "connection-specific header %s in an h2 response: %r"
              % (bad, s.headers))
    check(all(k == k.lower() for k in names), "lower-case names: %r" % names)
    check_eq(s.header("x-origin"), "o", "end-to-end headers kept")
    for st in (201, 302, 404, 500, 503):
        check_eq(c.get("/status/%d" % st).status, st, "status %d passes through" % st)
    s = c.get("/bytes/1000", method="HEAD")
    check_eq((s.status, s.body), (200, b""), "HEAD: no body")
    s = c.get("/status/204")
    check_eq((s.status, s.body, s.ended), (204, b"", True), "204")
    s = c.get("/status/304")
    check_eq((s.status, s.body), (304, b""), "304")
    s = c.get("/status/103")
    check_eq(s.status, 200, "a final 200 after an interim 103")
    check_eq(c.get("/hello").body, b"hello from o\n", "connection fine")
    c.stop()


def test_truncated_upstream_body_resets_stream():
    c = H2Raw(W.port)
    s = c.get("/die")
    check(not s.ended and s.reset is not None,
          "a response cut short by the origin must end in RST_STREAM, not END_STREAM: %r" % s)
    check_eq(c.get("/hello").status, 200, "other streams unaffected")
    c.stop()


def test_weir_errors_as_h2_responses():
    for tls, port in ((False, W.port), (True, TLS_PORT)):
        c = H2Raw(port, tls=tls)
        s = c.get("/other", authority="only.test")
        check_eq((s.status, s.ended), (404, True), "no route -> 404 over h2")
        check(len(s.body) > 0, "404 with a short body")
        s = c.get("/nowhere/x")
        check_eq((s.status, s.ended), (502, True), "dead upstream -> 502 over h2")
        s = c.get("/empty/x")
        check_eq(s.status, 503, "no endpoints -> 503 over h2")
        # HEADERS and DATA in one write, with and without content-length; repeated because
        # the body racing the 413 is what matters.
        for i in range(10):
            h = [("content-length", "5000")] if i % 2 else []
            sid = c.new_sid()
            c.send(c.headers_frame(sid, c.request_headers("/limited/x", "POST", "a.test", h),
                                   end_stream=False) +
                   h2_frame(H2_DATA, H2_END_STREAM, sid, b"z" * 5000))
            s = c.response(sid)
            check_eq((s.status, s.reset), (413, None),
                     "5000-byte body over max_body_bytes 1000 (try %d, content-length %s): "
                     "(status, RST_STREAM code)" % (i, bool(i % 2)))
        s = c.get("/limited/x", method="POST", body=b"z" * 500)
        check_eq(s.status, 200, "under max_body_bytes")
        s = c.get("/hello", method="CONNECT", headers=[])
        check(s.status in (400, 405, 501) or s.reset is not None, "CONNECT refused: %r" % s)
        check_eq(c.get("/hello").status, 200, "connection still usable after errors")
        c.stop()


def test_redirect_and_hsts_over_h2():
    c = H2Raw(W.port)
    s = c.get("/secure/p?x=1", authority="shop.test:%d" % W.port)
    check_eq(s.status, 308, "h2c request to a redirect_https route")
    check_eq(s.header("location"), "https://shop.test:%d/secure/p?x=1" % TLS_PORT, "Location")
    check_eq(c.get("/hsts/x").header("strict-transport-security"), None, "no HSTS on h2c")
    c.stop()
    c = H2Raw(TLS_PORT, tls=True)
    check_eq(c.get("/secure/p").status, 200, "redirect route served over TLS h2")
    check_eq(c.get("/hsts/x").header_all("strict-transport-security"), ["max-age=600"],
             "HSTS on h2 over TLS")
    check_eq(c.get("/hello").header("strict-transport-security"), None, "only where asked")
    c.stop()


def test_forwarded_headers_over_h2():
    for tls, port, proto in ((True, TLS_PORT, "https"), (False, W.port, "http")):
        c = H2Raw(port, tls=tls)
        j = c.get("/echo", headers=[("x-forwarded-proto", "evil"),
                                    ("x-forwarded-for", "1.2.3.4")]).json()
        check_eq(echo_headers(j, "x-forwarded-proto"), [proto], "X-Forwarded-Proto")
        check_eq(echo_headers(j, "x-forwarded-for"), ["1.2.3.4, 127.0.0.1"], "X-Forwarded-For")
        check_eq(len(echo_headers(j, "x-request-id")), 1, "X-Request-Id")
        c.stop()


def test_client_reset_stream_others_continue():
    c = H2Raw(W.port)
    slow = c.request("/slow/1000")
    big = c.request("/bytes/5000000")
    ok = c.request("/echo")
    time.sleep(0.2)
    c.rst(slow)
    c.rst(big)
    check_eq(c.response(ok).status, 200, "stream next to reset ones")
    check_eq(c.get("/slow/200").body, b"slow\n", "new stream after resets")
    c.stop()
    check_eq(W.http("GET", "/hello").status, 200)


def test_reload_keeps_h2_connection_and_reroutes():
    a, b = Origin("a").start(), Origin("b").start()
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, cluster_origin=a)).start()
    conns = [H2Raw(port), H2Raw(tport, tls=True)]
    for c in conns:
        check_eq(c.get("/hello").header("x-origin"), "a", "before reload")
    w.reload_and_wait(config(port, tport, cluster_origin=b))
    for c in conns:
        check_eq(c.get("/hello").header("x-origin"), "b", "same h2 connection after reload")
        check(c.goaway is None, "no GOAWAY on reload")
        c.stop()
    w.stop()


def test_drain_goaway_and_inflight_streams_complete():
    port, tport = free_port(), free_port()
    w = Weir(config(port, tport, drain_timeout_ms=10000)).start()
    conns = [H2Raw(port), H2Raw(tport, tls=True)]
    sids = []
    for c in conns:
        check_eq(c.get("/hello").status, 200)
        sids.append((c.request("/slow/1500"), c.request("/bytes/3000000")))
    time.sleep(0.3)
    w.terminate()
    for c, (slow, big) in zip(conns, sids):
        c.wait(lambda: c.goaway is not None, timeout=10, what="GOAWAY after SIGTERM")
        check_eq(c.goaway[1], H2_NO_ERROR, "graceful GOAWAY")
        check(c.goaway[0] >= big, "GOAWAY last stream id %d covers in-flight stream %d"
              % (c.goaway[0], big))
        s = c.response(slow, timeout=20)
        check_eq((s.status, s.body, s.ended), (200, b"slow\n", True), "in-flight slow stream")
        s = c.response(big, timeout=30)
        check(s.ended and s.body == origin_bytes(3000000), "in-flight 3 MB stream complete")
        check(c.wait_goaway_or_close(15)[1], "connection closed after its last stream")
        c.stop()
    check_eq(w.wait_exit(), 0, "exit code after drain")
    w.stop()


if __name__ == "__main__":
    run()
