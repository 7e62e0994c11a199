"""Streaming: 1 GiB down and up through weir (Content-Length and chunked) while weir's memory
stays flat (peak RSS grows by less than 16 MiB). Byte counts are verified end to end."""

from harness import *

TEST_TIMEOUT = 400
GIB = 1 << 30
LIMIT_KIB = 16 * 1024
PIECE = 256 * 1024

W = None
O = None


def setup_module():
    global W, O
    O = Origin("big").start()
    W = Weir(simple_config(O, client_idle_timeout_ms=120000), workers=1).start()
    # Warm up: allocate what every request allocates before taking the baseline.
    for _ in range(20):
        W.http("GET", "/bytes/300000")
        W.http("POST", "/sink", body=b"w" * 300000)


class RssWatch:
    """Samples weir's VmRSS in a thread; .peak_growth() in KiB over the starting value, taking
    VmHWM into account too."""

    def __init__(self, w):
        self.w = w
        self.start_rss = w.rss_kib("VmRSS")
        self.start_hwm = w.rss_kib("VmHWM")
        self.max_rss = self.start_rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.2):
            try:
                self.max_rss = max(self.max_rss, self.w.rss_kib("VmRSS"))
            except (OSError, AssertionError):
                return

    def stop(self):
        self._stop.set()
        self._t.join(5)
        hwm = self.w.rss_kib("VmHWM")
        growth = max(self.max_rss - self.start_rss, hwm - max(self.start_hwm, self.start_rss))
        return growth


def check_memory(watch, what):
    growth = watch.stop()
    check(growth < LIMIT_KIB, "%s: weir RSS grew by %d KiB (limit %d KiB)"
          % (what, growth, LIMIT_KIB))


def download(path):
    c = W.raw(timeout=120)
    c.send(b"GET " + path + b" HTTP/1.1\r\nHost: big.test\r\n\r\n")
    r = c.read_head()
    check_eq(r.status, 200, "download status")
    chunked = (r.header("transfer-encoding") or "").lower() == "chunked"
    total = 0
    deadline = time.monotonic() + 170 * SLOW
    if not chunked:
        want = int(r.header("content-length"))
        total = len(c.buf)
        c.buf = b""
        sock = c.sock
        sock.settimeout(60)
        while total < want:
            d = sock.recv(1 << 20)
            check(d, "connection closed after %d of %d bytes" % (total, want))
            total += len(d)
            check(time.monotonic() < deadline, "download too slow to finish")
        check_eq(total, want, "bytes received")
        return total
    # chunked: parse sizes, skip data without keeping it
    while True:
        size = int(c._line().split(b";")[0], 16)
        if size == 0:
            while c._line() != b"":
                pass
            return total
        left = size
        while left > 0:
            if not c.buf:
                check(c._fill(60), "closed mid-chunk after %d bytes" % total)
            k = min(left, len(c.buf))
            c.buf = c.buf[k:]
            left -= k
            total += k
        check_eq(c._take(2), b"\r\n", "chunk terminator")
        check(time.monotonic() < deadline, "download too slow to finish")


def upload(chunked):
    c = W.raw(timeout=120)
    head = b"POST /sink HTTP/1.1\r\nHost: big.test\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % GIB
    c.send(head)
    block = b"u" * PIECE
    framed = (b"%x\r\n" % PIECE) + block + b"\r\n"
    deadline = time.monotonic() + 170 * SLOW
    sock = c.sock
    sock.settimeout(60)
    for i in range(GIB // PIECE):
        sock.sendall(framed if chunked else block)
        if i % 256 == 0:
            check(time.monotonic() < deadline, "upload too slow to finish")
    if chunked:
        sock.sendall(b"0\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "upload status")
    check_eq(r.json()["body_len"], GIB, "bytes the origin received")


def test_download_1g_content_length():
    w = RssWatch(W)
    check_eq(download(b"/bytes/%d" % GIB), GIB, "1 GiB download")
    check_memory(w, "1 GiB download (Content-Length)")


def test_download_1g_chunked():
    w = RssWatch(W)
    check_eq(download(b"/bytes/%d?chunked=1" % GIB), GIB, "1 GiB chunked download")
    check_memory(w, "1 GiB download (chunked)")


def test_upload_1g_content_length():
    w = RssWatch(W)
    upload(chunked=False)
    check_memory(w, "1 GiB upload (Content-Length)")


def test_upload_1g_chunked():
    w = RssWatch(W)
    upload(chunked=True)
    check_memory(w, "1 GiB upload (chunked)")


def test_slow_reader_backpressure():
    # A client that does not read: weir must stop reading from the origin rather than buffer
    # the whole response.
    w = RssWatch(W)
    c = W.raw(timeout=60)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: big.test\r\n\r\n" % (256 << 20))
    time.sleep(3)
    check_memory(w, "256 MiB response to a client that reads nothing for 3 s")
    c.close()
    time.sleep(0.5)
    check_eq(W.http("GET", "/hello").status, 200, "weir serves after the aborted download")


if __name__ == "__main__":
    run()
