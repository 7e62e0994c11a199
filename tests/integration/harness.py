"""Integration test harness for weir: a tiny test runner, processes under test, origins and
raw-socket HTTP helpers.

Each tests/integration/NN-name.py is a standalone script:

    from harness import *

    def setup_module():      # optional: objects started here live until teardown
        ...
    def test_something():
        w = Weir(simple_config(origin))
        w.start()
        r = w.http("GET", "/")
        check_eq(r.status, 200)

    if __name__ == "__main__":
        run()

`run()` calls every `test_*` function in definition order (or those named on the command
line), prints `ok NAME` / `FAIL NAME: message`, stops whatever a test left running (a weir
stopped this way is still checked: exit code 0 and a clean sanitizer log), and ends with
`N passed, N failed`, exiting non-zero on any failure.

Environment: WEIR_BIN, WEIRCTL_BIN, WEIR_ORIGIN_BIN (else looked up under WEIR_BUILD_DIR,
default /tmp/build-it); WEIR_TEST_VALGRIND=1 runs weir under valgrind (longer waits).
All traffic stays on 127.0.0.1 / ::1.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# ---- binaries -------------------------------------------------------------------------------

BUILD_DIR = os.environ.get("WEIR_BUILD_DIR", "/tmp/build-it")


def _bin(env, *candidates):
    if os.environ.get(env):
        return os.environ[env]
    for c in candidates:
        p = os.path.join(BUILD_DIR, c)
        if os.path.exists(p):
            return p
    return os.path.join(BUILD_DIR, candidates[0])


WEIR_BIN = _bin("WEIR_BIN", "weir")
WEIRCTL_BIN = _bin("WEIRCTL_BIN", "weirctl")
ORIGIN_BIN = _bin("WEIR_ORIGIN_BIN", "tests/weir-test-origin", "weir-test-origin")
VALGRIND = os.environ.get("WEIR_TEST_VALGRIND") == "1"
# Slower machines and valgrind get proportionally more patience; never assert speed.
SLOW = 10 if VALGRIND else 1

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer", "ThreadSanitizer")

def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when this test process dies, so a killed or timed-out
    test never leaves weir or an origin behind."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ---- runner -----------------------------------------------------------------------------------

_live = []          # objects started by the current test (stopped after it)
_module_live = []   # objects started by setup_module (stopped at the end)
_in_setup = [False]


class TestTimeout(Exception):
    pass


def _register(obj):
    (_module_live if _in_setup[0] else _live).append(obj)


def _unregister(obj):
    for lst in (_live, _module_live):
        if obj in lst:
            lst.remove(obj)


def _cleanup(objs):
    """Stops objects in reverse start order; returns the first error message, if any."""
    err = None
    while objs:
        obj = objs.pop()
        try:
            obj.stop()
        except BaseException as e:  # noqa: BLE001 - report, keep cleaning
            if err is None:
                err = "cleanup of %r: %s" % (obj, e)
    return err


def _alarm(signum, frame):
    raise TestTimeout("test timed out")


def run(timeout=180):
    """Runs the calling module's test_* functions; exits with the result."""
    main = sys.modules["__main__"]
    names = [n for n, f in vars(main).items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        names = [n for n in names if n in wanted or n[5:] in wanted]
    per_test = getattr(main, "TEST_TIMEOUT", timeout) * SLOW
    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = 0
    setup = getattr(main, "setup_module", None)
    if setup is not None:
        _in_setup[0] = True
        try:
            signal.alarm(int(120 * SLOW))
            setup()
            signal.alarm(0)
        except BaseException as e:  # noqa: BLE001
            signal.alarm(0)
            print("FAIL setup_module: %s" % _describe(e), flush=True)
            traceback.print_exc()
            _cleanup(_module_live)
            print("0 passed, %d failed" % max(1, len(names)), flush=True)
            sys.exit(1)
        finally:
            _in_setup[0] = False
    for name in names:
        fn = getattr(main, name)
        t0 = time.monotonic()
        err = None
        try:
            signal.alarm(int(per_test))
            fn()
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            err = _describe(e)
            if not isinstance(e, AssertionError):
                err += "\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)[-4:])
        finally:
            signal.alarm(0)
        if err is not None and "reports in weir's log" not in err:
            err += _weir_logs()
        try:
            signal.alarm(int(120 * SLOW))
            cerr = _cleanup(_live)
        except TestTimeout:
            cerr = "cleanup timed out"
        finally:
            signal.alarm(0)
        if err is None and cerr is not None:
            err = cerr
        dt = time.monotonic() - t0
        if err is None:
            passed += 1
            print("ok   %s (%.1fs)" % (name, dt), flush=True)
        else:
            failed += 1
            print("FAIL %s (%.1fs): %s" % (name, dt, err), flush=True)
    teardown = getattr(main, "teardown_module", None)
    try:
        if teardown is not None:
            teardown()
        cerr = _cleanup(_module_live)
    except BaseException as e:  # noqa: BLE001
        cerr = _describe(e)
    if cerr is not None:
        failed += 1
        print("FAIL teardown_module: %s" % cerr, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


def _weir_logs():
    """The tail of the log of every weir still running, to explain a failure."""
    out = ""
    for obj in _live + _module_live:
        if isinstance(obj, Weir) and obj.proc is not None:
            rep = obj.sanitizer_report()
            out += "\n    --- %r stderr (%s), %s:\n    " % (
                obj, obj.log_path, "sanitizer report" if rep else "last lines")
            out += "\n    ".join((rep or obj.log_tail(12)).splitlines())
    return out


def _describe(e):
    msg = str(e) or type(e).__name__
    if not isinstance(e, AssertionError):
        msg = "%s: %s" % (type(e).__name__, msg)
    return msg


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def check_eq(got, want, what="value"):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def check_in(got, allowed, what="value"):
    if got not in allowed:
        raise AssertionError("%s: expected one of %r, got %r" % (what, allowed, got))


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls <pred> until it returns a truthy value (returned), or fails after <timeout> s."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while True:
        try:
            last = pred()
            if last:
                return last
        except (OSError, http.client.HTTPException) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))
        time.sleep(interval)


# ---- ports and files --------------------------------------------------------------------------

_given_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port that was free on <host> a moment ago, never the same one twice per process."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.bind((host, 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port")


_tmp_root = [None]


def tmpdir():
    """A fresh temporary directory (removed when the process exits)."""
    if _tmp_root[0] is None:
        _tmp_root[0] = tempfile.TemporaryDirectory(prefix="weir-it-")
    return tempfile.mkdtemp(dir=_tmp_root[0].name)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- origins ----------------------------------------------------------------------------------

class Origin:
    """The C test origin (weir-test-origin). `requests` collects the lines it prints, one per
    request answered: "request conn=C req=R METHOD TARGET body_len=N"."""

    def __init__(self, name="origin", host="127.0.0.1", port=None):
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.proc = None
        self.requests = []
        self._lock = threading.Lock()

    @property
    def address(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else \
            "%s:%d" % (self.host, self.port)

    def start(self):
        self.proc = subprocess.Popen([ORIGIN_BIN, "--listen", self.address, "--name", self.name],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        _register(self)
        ready = threading.Event()

        def reader():
            for line in self.proc.stdout:
                line = line.decode("utf-8", "replace").rstrip("\n")
                if line == "listening":
                    ready.set()
                elif line.startswith("request "):
                    with self._lock:
                        self.requests.append(line)

        threading.Thread(target=reader, daemon=True).start()
        if not ready.wait(10):
            raise AssertionError("origin %s did not start (rc=%r)" % (self.name, self.proc.poll()))
        return self

    def request_count(self):
        with self._lock:
            return len(self.requests)

    def clear(self):
        with self._lock:
            self.requests.clear()

    def stop(self):
        _unregister(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __repr__(self):
        return "Origin(%s@%s)" % (self.name, self.address)


def start_origins(*names):
    return [Origin(n).start() for n in names]


class EvilOrigin:
    """A raw-socket origin in Python, for what the C origin cannot produce. It records every
    connection and every byte received. <respond>(conn, data) is called with the bytes read so
    far on a connection each time more arrive; it returns None to read more, or
    (bytes_to_send, close) to answer; after answering, the buffer is cleared. The default
    answers each request head with a small 200."""

    def __init__(self, respond=None, host="127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.respond = respond or EvilOrigin.ok_each_head
        self.connections = 0
        self.received = []          # bytes per connection, in accept order
        self._lock = threading.Lock()
        self._stop = False
        self._sock = None
        self._conns = []

    @staticmethod
    def ok_each_head(conn_index, data):
        if b"\r\n\r\n" not in data:
            return None
        return (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Origin: evil\r\n\r\nevil\n", False)

    @property
    def address(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else \
            "%s:%d" % (self.host, self.port)

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(fam, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept_loop, daemon=True).start()
        _register(self)
        return self

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                idx = self.connections
                self.connections += 1
                self.received.append(b"")
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c, idx), daemon=True).start()

    def _serve(self, c, idx):
        buf = b""
        c.settimeout(0.2)
        try:
            while not self._stop:
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    continue
                if not d:
                    return
                with self._lock:
                    self.received[idx] += d
                buf += d
                while True:
                    out = self.respond(idx, buf)
                    if out is None:
                        break
                    data, close = out
                    if data:
                        c.sendall(data)
                    buf = b""
                    if close:
                        return
                    break
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def total_bytes(self):
        with self._lock:
            return sum(len(b) for b in self.received)

    def all_received(self):
        with self._lock:
            return b"".join(self.received)

    def reset(self):
        with self._lock:
            self.connections = 0
            self.received = []

    def stop(self):
        _unregister(self)
        self._stop = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass
            self._conns = []

    def __repr__(self):
        return "EvilOrigin(%s)" % self.address


def dead_address():
    """An address where nothing listens (connections are refused)."""
    return "127.0.0.1:%d" % free_port()


# ---- weir ---------------------------------------------------------------------------------------

def cluster(name, *origins, **opts):
    """A static cluster over <origins> (Origin/EvilOrigin objects, or "host:port" strings, or
    (address, weight) tuples)."""
    eps = []
    for o in origins:
        if isinstance(o, tuple):
            addr, weight = o
            addr = addr if isinstance(addr, str) else addr.address
            eps.append({"address": addr, "weight": weight})
        else:
            eps.append({"address": o if isinstance(o, str) else o.address, "weight": 1})
    c = {"name": name, "lb_policy": "round_robin", "endpoints": eps}
    c.update(opts)
    return c


def route(name, cluster_name=None, **match_and_opts):
    """route("r", "c", path_prefix="/", host="x") -> a route dict; keys that belong to
    `match` (host, path_prefix, path_exact, path_regex, headers) go there."""
    match = {}
    r = {"name": name}
    for k, v in match_and_opts.items():
        if k in ("host", "path_prefix", "path_exact", "path_regex", "headers"):
            match[k] = v
        else:
            r[k] = v
    if not any(k in match for k in ("path_prefix", "path_exact", "path_regex")):
        match["path_prefix"] = "/"
    r["match"] = match
    if cluster_name is not None:
        r["cluster"] = cluster_name
    return r


def simple_config(*origins, **top):
    """One listener, one route "all" (prefix /) to cluster "c" over <origins>."""
    cfg = {"routes": [route("all", "c")], "clusters": [cluster("c", *origins)]}
    cfg.update(top)
    return cfg


class Resp:
    """An HTTP response: status, reason, version, headers [(name, value)], body bytes."""

    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version
        self.interim = []       # 1xx responses before this one (raw client only)
        self.truncated = False  # the connection closed before the declared body ended

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r" % (e, self.body[:300]))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "Resp(%d, %r)" % (self.status, self.body[:120])


class Weir:
    """A weir process with a config written to a temp dir. Missing listeners/admin/access_log
    are filled in: one listener "web" on a free port, admin on a free port, access_log null,
    workers 1. `port` and `admin_port` are the chosen ports."""

    def __init__(self, cfg, workers=1):
        self.dir = tmpdir()
        self.cfg_path = os.path.join(self.dir, "weir.json")
        self.log_path = os.path.join(self.dir, "weir.stderr")
        self.out_path = os.path.join(self.dir, "weir.stdout")
        self.proc = None
        self.exit_code = None
        self.cfg = dict(cfg)
        self.cfg.setdefault("workers", workers)
        if "listeners" not in self.cfg:
            self.port = free_port()
            self.cfg["listeners"] = [{"name": "web", "address": "127.0.0.1:%d" % self.port}]
        else:
            a = self.cfg["listeners"][0]["address"]
            self.port = int(a.rsplit(":", 1)[1])
        if "admin" not in self.cfg:
            self.admin_port = free_port()
            self.cfg["admin"] = {"address": "127.0.0.1:%d" % self.admin_port}
        else:
            self.admin_port = int(self.cfg["admin"]["address"].rsplit(":", 1)[1])
        self.cfg.setdefault("access_log", None)
        self.token = None

    # -- process --

    def write_config(self, cfg=None, raw_text=None):
        """Writes <cfg> (or the current config, or <raw_text> verbatim). Keys <cfg> lacks among
        workers, listeners, admin and access_log are kept from the current config."""
        if cfg is not None:
            cfg = dict(cfg)
            for k in ("workers", "listeners", "admin", "access_log"):
                if k in self.cfg:
                    cfg.setdefault(k, self.cfg[k])
            self.cfg = cfg
        with open(self.cfg_path, "w") as f:
            f.write(raw_text if raw_text is not None else json.dumps(self.cfg, indent=2))

    def start(self, wait_ready=True):
        self.write_config()
        argv = [WEIR_BIN, "-c", self.cfg_path]
        if VALGRIND:
            argv = ["valgrind", "--leak-check=full", "--error-exitcode=99",
                    "--errors-for-leak-kinds=definite", "--log-file=%s.valgrind" % self.log_path
                    ] + argv
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._log = open(self.log_path, "wb")
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, env=env,
                                     preexec_fn=_die_with_parent)
        _register(self)
        if wait_ready:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout * (6 if VALGRIND else 1)
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("weir exited with %d before ready; log:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            try:
                r = self.admin("GET", "/ready", timeout=2)
                if r.status == 200:
                    return
                last = r.status
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("weir not ready after %ds (last: %r); log:\n%s"
                             % (timeout, last, self.log_tail()))

    def reload(self, cfg=None, raw_text=None):
        """Writes the new config (if given) and sends SIGHUP."""
        if cfg is not None or raw_text is not None:
            self.write_config(cfg, raw_text)
        self.proc.send_signal(signal.SIGHUP)

    def reload_and_wait(self, cfg):
        """Valid reload: SIGHUP, then wait until /config shows a new version."""
        before = self.config_version()
        self.reload(cfg)
        return wait_for(lambda: self.config_version() != before and self.config_version(),
                        timeout=10, what="config version change after SIGHUP")

    def config_version(self):
        return self.admin("GET", "/config").json()["version"]

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout=None):
        if timeout is None:
            timeout = (self.cfg.get("drain_timeout_ms", 15000) +
                       self.cfg.get("drain_delay_ms", 0)) / 1000.0 + 15
        timeout *= SLOW
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("weir did not exit within %.0fs of SIGTERM" % timeout)
        self.check_log_clean()
        return self.exit_code

    def stop(self, expect_code=0):
        """SIGTERM, wait for the drain, assert exit code and a clean sanitizer log."""
        _unregister(self)
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.terminate()
        code = self.wait_exit()
        self._log.close()
        self._out.close()
        self.check_log_clean()
        if expect_code is not None and code != expect_code:
            raise AssertionError("weir exit code: expected %d, got %d; log tail:\n%s"
                                 % (expect_code, code, self.log_tail()))

    def log(self):
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        vg = self.log_path + ".valgrind"
        if os.path.exists(vg):
            with open(vg, "rb") as f:
                text += f.read().decode("utf-8", "replace")
        return text

    def log_tail(self, n=30):
        return "\n".join(self.log().splitlines()[-n:])

    def sanitizer_report(self, n=40):
        """The first <n> lines of the first sanitizer report in the log, or ""."""
        lines = self.log().splitlines()
        for i, l in enumerate(lines):
            if any(m in l for m in SANITIZER_MARKERS):
                return "\n".join(lines[max(0, i - 2):i + n])
        return ""

    def check_log_clean(self):
        bad = [l for l in self.log().splitlines() if any(m in l for m in SANITIZER_MARKERS)]
        if VALGRIND:
            bad += [l for l in self.log().splitlines()
                    if "definitely lost" in l and "definitely lost: 0 bytes" not in l]
            bad += [l for l in self.log().splitlines()
                    if "ERROR SUMMARY" in l and "ERROR SUMMARY: 0 errors" not in l]
        if bad:
            raise AssertionError("sanitizer/valgrind reports in weir's log (%s):\n%s\n---\n%s"
                                 % (self.log_path, "\n".join(bad[:10]),
                                    self.sanitizer_report() or self.log_tail(60)))

    def rss_kib(self, field="VmRSS"):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s for pid %d" % (field, self.proc.pid))

    # -- requests --

    def http(self, method, path, headers=None, body=None, port=None, timeout=30):
        return http_request(port or self.port, method, path, headers, body, timeout)

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def raw(self, timeout=10):
        return Raw(self.port, timeout=timeout)

    def admin(self, method, path, body=None, token=None, headers=None, timeout=10):
        h = dict(headers or {})
        tok = token if token is not None else self.token
        if tok:
            h["Authorization"] = "Bearer " + tok
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        return http_request(self.admin_port, method, path, h, body, timeout)

    def clusters(self):
        r = self.admin("GET", "/clusters")
        check_eq(r.status, 200, "GET /clusters status")
        return r.json()

    def metrics(self):
        r = self.admin("GET", "/metrics")
        check_eq(r.status, 200, "GET /metrics status")
        return parse_metrics(r.text())

    def __repr__(self):
        return "Weir(:%d)" % self.port


def http_request(port, method, path, headers=None, body=None, timeout=30, host="127.0.0.1"):
    """One request on a fresh connection with http.client; returns a Resp."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data,
                    "HTTP/1.1" if r.version == 11 else "HTTP/1.0")
    finally:
        c.close()


def get_on(conn, method, path, headers=None, body=None):
    """A request on an existing http.client connection (keep-alive); returns a Resp."""
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return Resp(r.status, r.reason, r.getheaders(), data)


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            raise AssertionError("bad metrics line: %r" % line)
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric(samples, name, **labels):
    """The value of the first sample named <name> whose labels include <labels>, or None."""
    for n, l, v in samples:
        if n == name and all(l.get(k) == str(val) for k, val in labels.items()):
            return v
    return None


# ---- raw sockets ----------------------------------------------------------------------------------

class Raw:
    """A raw TCP client: send bytes, read HTTP/1.x responses or everything until close."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.timeout = timeout * SLOW
        self.buf = b""
        self.eof = False
        _register(self)

    def stop(self):
        _unregister(self)
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)
        return self

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, timeout=None):
        """Reads more into buf; returns False on EOF. Raises socket.timeout on timeout."""
        if self.eof:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed while reading a line (got %r)" % self.buf[:200])
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                data, self.buf = self.buf, b""
                raise EOFError(data)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self):
        """Reads one response head; returns a Resp with an empty body."""
        line = self._line().decode("latin-1")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", line)
        if not m:
            raise AssertionError("bad status line %r (rest %r)" % (line, self.buf[:200]))
        headers = []
        while True:
            h = self._line().decode("latin-1")
            if h == "":
                break
            k, _, v = h.partition(":")
            headers.append((k.strip(), v.strip()))
        return Resp(int(m.group(2)), m.group(3) or "", headers, b"", m.group(1))

    def read_response(self, method="GET", keep_interim=True):
        """Reads one final response (interim 1xx ones, except 101, go to .interim)."""
        interim = []
        while True:
            r = self.read_head()
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        r.interim = interim
        if method == "HEAD" or r.status in (101, 204, 304):
            return r
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        try:
            if "chunked" in te:
                body = b""
                while True:
                    size = int(self._line().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self._line() != b"":
                            pass
                        break
                    body += self._take(size)
                    self._take(2)
                r.body = body
            elif cl is not None:
                r.body = self._take(int(cl))
            else:
                r.body = self.read_until_close()
        except EOFError as e:
            r.truncated = True
            r.body = e.args[0] if e.args and isinstance(e.args[0], bytes) else b""
        return r

    def read_until_close(self, timeout=None):
        """Everything until the peer closes; raises AssertionError if it does not within
        <timeout> s."""
        t = (timeout or self.timeout) * (SLOW if timeout else 1)
        deadline = time.monotonic() + t
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection not closed within %.1fs" % t)
            try:
                self._fill(left)
            except socket.timeout:
                raise AssertionError("connection not closed within %.1fs (got %r)"
                                     % (t, self.buf[:200]))
        data, self.buf = self.buf, b""
        return data

    def is_closed(self, timeout=5):
        """True if the peer closes (EOF or reset) within <timeout> s with nothing more sent."""
        try:
            extra = self.read_until_close(timeout)
        except AssertionError:
            return False
        return extra == b""

    def stays_open(self, wait=0.5):
        """True if nothing arrives and the connection is not closed during <wait> s."""
        try:
            self._fill(wait)
        except socket.timeout:
            return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raw_exchange(port, data, timeout=10):
    """Sends <data> on a new connection and returns (first Resp or None, bytes after it,
    closed-by-peer flag). Used for requests the proxy must reject."""
    c = Raw(port, timeout=timeout)
    try:
        c.send(data)
        try:
            r = c.read_response()
        except EOFError:
            return None, c.buf, True
        closed = c.is_closed(timeout)
        return r, c.buf, closed
    finally:
        c.close()


def status_of(data):
    """The status code of the first status line in <data>, or None."""
    m = re.match(rb"^HTTP/\d\.\d (\d{3})", data)
    return int(m.group(1)) if m else None


def run_cmd(argv, timeout=60, **kw):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout * SLOW,
                          stdin=subprocess.DEVNULL, **kw)


# ---- HTTP/2: an h2/h2c origin, an h2 client, certificates (Debian's python3-h2) ---------------

def make_cert(directory, name="localhost"):
    """A self-signed certificate for <name> and 127.0.0.1 made with the openssl CLI; returns
    (cert_path, key_path). The certificate is its own CA (use it as ca_file)."""
    crt = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    r = run_cmd(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=" + name,
                 "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % name,
                 "-keyout", key, "-out", crt])
    check(r.returncode == 0, "openssl req failed: %s" % r.stderr)
    return crt, key


class H2Origin:
    """An HTTP/2 origin (h2c with prior knowledge, or h2 over TLS with ALPN when <tls> is a
    (cert, key) pair), one thread per connection, honouring flow control. It counts its
    connections (`connections`) and records each request (`requests`: dicts with method,
    path, authority, scheme, headers (list of (name, value)), body, conn). Routes:
      /echo...            JSON of the request (method, path, headers, body_len, body_md5)
      /mirror             the request body back (no content-length)
      /bytes/N[?nocl=1]   N bytes (a repeating pattern), with content-length unless nocl
      /trailers           "hello" then trailers grpc-status: 0, grpc-message: fine
      /slow/MS            "slow" after MS milliseconds
      /status/N           status N, body "status N"
      /goaway/N           N bytes: half, then GOAWAY (last stream = this one), the rest 0.5 s later
      /die/N              the head and N bytes of a longer body, then the connection closes
      /rst                RST_STREAM (INTERNAL_ERROR) instead of an answer
      /rst-mid            the head and 1000 bytes, then RST_STREAM 0.3 s later
      /bigheader/N        a response header of N bytes
      /badheader          a malformed response head (a connection-specific header)
    <max_streams> is announced as SETTINGS_MAX_CONCURRENT_STREAMS."""

    def __init__(self, tls=None, max_streams=None, host="127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.tls = tls
        self.max_streams = max_streams
        self.connections = 0
        self.requests = []
        self.max_active = 0      # most streams open at once on one connection
        self._lock = threading.Lock()
        self._stop = False
        self._sock = None
        self._socks = []

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self._ctx = None
        if self.tls:
            import ssl
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(self.tls[0], self.tls[1])
            self._ctx.set_alpn_protocols(["h2"])
        threading.Thread(target=self._accept_loop, daemon=True).start()
        _register(self)
        return self

    def stop(self):
        _unregister(self)
        self._stop = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass

    def __repr__(self):
        return "H2Origin(%s%s)" % (self.address, " tls" if self.tls else "")

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                idx = self.connections
                self.connections += 1
                self._socks.append(c)
            threading.Thread(target=self._serve, args=(c, idx), daemon=True).start()

    def _serve(self, sock, idx):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        import hashlib
        if self._ctx is not None:
            try:
                sock.settimeout(5)
                sock = self._ctx.wrap_socket(sock, server_side=True)
            except OSError:
                sock.close()
                return
        sock.settimeout(0.02)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False,
            validate_outbound_headers=False, normalize_outbound_headers=False))
        conn.initiate_connection()
        if self.max_streams:
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                                  self.max_streams})
        streams = {}   # id -> request dict
        out = {}       # id -> {"data": bytes, "trailers": list|None, "after": [(t, fn)]}
        timers = []    # (time, fn)
        open_ids = set()
        dead = [False]

        def respond(sid, status, headers, body=b"", trailers=None, cl=True):
            h = [(":status", str(status))] + headers
            if cl and trailers is None:
                h.append(("content-length", str(len(body))))
            conn.send_headers(sid, h, end_stream=(not body and trailers is None))
            if body or trailers is not None:
                out[sid] = {"data": body, "trailers": trailers}
            else:
                open_ids.discard(sid)

        def raw_goaway(last):
            import hyperframe.frame
            f = hyperframe.frame.GoAwayFrame(0)
            f.last_stream_id = last
            f.error_code = 0
            sock.sendall(f.serialize())

        def handle(sid):
            req = streams[sid]
            path = req["path"]
            with self._lock:
                self.requests.append(req)
            hdr = [("x-h2-conn", str(idx)), ("x-h2-stream", str(sid))]
            if path.startswith("/echo"):
                info = {"method": req["method"], "path": path, "authority": req["authority"],
                        "scheme": req["scheme"], "headers": req["headers"],
                        "body_len": len(req["body"]),
                        "body_md5": hashlib.md5(req["body"]).hexdigest(), "conn": idx}
                respond(sid, 200, hdr + [("content-type", "application/json")],
                        json.dumps(info).encode())
            elif path.startswith("/mirror"):
                respond(sid, 200, hdr, bytes(req["body"]), cl=False)
            elif path.startswith("/bytes/"):
                n = int(path.split("/")[2].split("?")[0])
                body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
                respond(sid, 200, hdr, body, cl="nocl=1" not in path)
            elif path.startswith("/trailers"):
                respond(sid, 200, hdr, b"hello",
                        trailers=[("grpc-status", "0"), ("grpc-message", "fine")])
            elif path.startswith("/slow/"):
                ms = int(path.split("/")[2])
                timers.append((time.monotonic() + ms / 1000.0,
                               lambda: respond(sid, 200, hdr, b"slow")))
            elif path.startswith("/status/"):
                st = int(path.split("/")[2])
                respond(sid, st, hdr, b"" if st in (204, 304) else b"status %d" % st,
                        cl=st not in (204, 304))
            elif path.startswith("/goaway/"):
                n = int(path.split("/")[2])
                body = (b"0123456789abcdef" * (n // 16 + 1))[:n]
                conn.send_headers(sid, [(":status", "200"), ("content-length", str(n))] + hdr)
                out[sid] = {"data": body[:n // 2], "trailers": None, "hold": True,
                            "rest": body[n // 2:]}

                def later():
                    raw_goaway(sid)
                    timers.append((time.monotonic() + 0.5, lambda: release(sid)))
                timers.append((time.monotonic() + 0.2, later))
            elif path.startswith("/die/"):
                n = int(path.split("/")[2])
                conn.send_headers(sid, [(":status", "200"), ("content-length", str(n * 4))] + hdr)
                out[sid] = {"data": b"x" * n, "trailers": None, "die": True}
            elif path.startswith("/rst-mid"):
                conn.send_headers(sid, [(":status", "200")] + hdr)
                out[sid] = {"data": b"y" * 1000, "trailers": None, "rst": True, "hold": True}
                timers.append((time.monotonic() + 0.3, lambda: out[sid].update(hold=False)))
            elif path.startswith("/rst"):
                conn.reset_stream(sid, error_code=2)
                open_ids.discard(sid)
            elif path.startswith("/badheader"):
                respond(sid, 200, hdr + [("connection", "close")], b"bad")
            elif path.startswith("/bigheader/"):
                n = int(path.split("/")[2])
                respond(sid, 200, hdr + [("x-big", "b" * n)], b"big")
            else:
                respond(sid, 404, hdr, b"no such route")

        def per_stream(fn, sid):
            # A stream the proxy reset (its client went away) makes sends on it fail: that
            # ends this stream only, never the connection.
            try:
                fn()
            except (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError):
                out.pop(sid, None)
                open_ids.discard(sid)

        def release(sid):
            o = out.get(sid)
            if o is not None:
                o["data"] = bytes(o["data"]) + o.pop("rest", b"")
                o["hold"] = False

        def pump():
            for sid in list(out):
                o = out[sid]
                while o["data"]:
                    try:
                        win = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                        out.pop(sid, None)
                        break
                    if win <= 0:
                        break
                    if not isinstance(o["data"], memoryview):
                        o["data"] = memoryview(bytes(o["data"]))  # O(1) slices
                    chunk, o["data"] = bytes(o["data"][:win]), o["data"][win:]
                    per_stream(lambda: conn.send_data(sid, chunk), sid)
                if sid not in out or o["data"] or o.get("hold"):
                    continue
                if o.get("die"):
                    sock.sendall(conn.data_to_send())
                    dead[0] = True
                    return
                if o.get("rst"):
                    per_stream(lambda: conn.reset_stream(sid, error_code=2), sid)
                elif o["trailers"] is not None:
                    per_stream(lambda: conn.send_headers(sid, o["trailers"], end_stream=True), sid)
                else:
                    per_stream(lambda: conn.end_stream(sid), sid)
                out.pop(sid, None)
                open_ids.discard(sid)

        try:
            sock.sendall(conn.data_to_send())
            while not self._stop and not dead[0]:
                try:
                    data = sock.recv(65536)
                    if not data:
                        break
                except (socket.timeout, TimeoutError):
                    data = None
                except OSError:
                    break
                if data is None:
                    try:
                        import ssl
                        if isinstance(sock, ssl.SSLSocket) and sock.pending():
                            data = sock.recv(65536)
                    except OSError:
                        pass
                events = conn.receive_data(data) if data else []
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        h = dict(ev.headers)
                        streams[ev.stream_id] = {
                            "method": h.get(":method"), "path": h.get(":path"),
                            "authority": h.get(":authority"), "scheme": h.get(":scheme"),
                            "headers": [(k, v) for k, v in ev.headers if not k.startswith(":")],
                            "body": bytearray(), "conn": idx, "trailers": None}
                        open_ids.add(ev.stream_id)
                        with self._lock:
                            self.max_active = max(self.max_active, len(open_ids))
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id]["body"] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        streams[ev.stream_id]["trailers"] = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamEnded):
                        streams[ev.stream_id]["body"] = bytes(streams[ev.stream_id]["body"])
                        per_stream(lambda: handle(ev.stream_id), ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        out.pop(ev.stream_id, None)
                        open_ids.discard(ev.stream_id)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        dead[0] = True
                now = time.monotonic()
                for t in [t for t in timers if t[0] <= now]:
                    timers.remove(t)
                    per_stream(t[1], None)
                pump()
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass


class H2Response:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = b""
        self.trailers = []
        self.reset = None        # RST_STREAM error code, if the stream was reset
        self.ended = False       # END_STREAM seen

    def header(self, name, default=None):
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def trailer(self, name, default=None):
        for k, v in self.trailers:
            if k == name:
                return v
        return default

    def __repr__(self):
        return "H2Response(%r, %r, trailers=%r, reset=%r)" % (self.status, self.body[:100],
                                                               self.trailers, self.reset)


class H2Client:
    """A blocking HTTP/2 client (python3-h2) over one connection: h2c with prior knowledge,
    or TLS with ALPN h2 when <tls> is true. request() sends one request and waits for its
    end; requests() sends several at once on the same connection."""

    def __init__(self, port, tls=False, host="127.0.0.1", timeout=30):
        import h2.config
        import h2.connection
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        if tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
            check(self.sock.selected_alpn_protocol() == "h2", "ALPN did not select h2")
        self.timeout = timeout * SLOW
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_inbound_headers=False))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.resp = {}
        self.goaway = None
        _register(self)

    def stop(self):
        _unregister(self)
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method, path, headers=None, body=None, end=True, authority="localhost"):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method), (":scheme", "http"), (":authority", authority),
             (":path", path)] + list(headers or [])
        self.conn.send_headers(sid, h, end_stream=end and not body)
        self.resp[sid] = H2Response()
        if body:
            self.send_data(sid, body, end=end)
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def send_data(self, sid, data, end=False, trailers=None):
        """Sends <data> on stream <sid> within the flow-control windows, reading meanwhile."""
        while data:
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.sock.sendall(self.conn.data_to_send())
                self._read_once()
                continue
            self.conn.send_data(sid, data[:win])
            data = data[win:]
            self.sock.sendall(self.conn.data_to_send())
        if trailers:
            self.conn.send_headers(sid, trailers, end_stream=True)
        elif end:
            self.conn.end_stream(sid)
        self.sock.sendall(self.conn.data_to_send())

    def _read_once(self):
        import h2.events
        self.sock.settimeout(self.timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        for ev in self.conn.receive_data(data):
            r = self.resp.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                r.headers = list(ev.headers)
                r.status = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                r.body += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                r.trailers = list(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                r.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                if r is not None:
                    r.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        pending = self.conn.data_to_send()
        if pending:
            self.sock.sendall(pending)

    def wait(self, *sids):
        deadline = time.monotonic() + self.timeout
        while not all(self.resp[s].ended or self.resp[s].reset is not None for s in sids):
            if time.monotonic() > deadline:
                raise AssertionError("h2 streams %r did not end" % (sids,))
            self._read_once()
        return [self.resp[s] for s in sids]

    def request(self, method, path, headers=None, body=None, **kw):
        return self.wait(self.send(method, path, headers, body, **kw))[0]


# ---- health checks (tests/integration/70-health-*.py) -------------------------------------------

class ToggleOrigin:
    """A Python HTTP/1.1 origin (keep-alive, one thread per connection) whose health can be
    switched: GET /healthz answers 200 "ok" while `healthy` is True, else 503; every other path
    answers `status` (default 200) with "hello from NAME\\n". Every answer carries X-Origin:
    NAME. `health_hits` counts /healthz requests and `hits` the others; `connections` counts
    accepted connections and `closed` those that ended."""

    def __init__(self, name="toggle", host="127.0.0.1", port=None):
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.healthy = True
        self.status = 200
        self.health_hits = 0
        self.hits = 0
        self.connections = 0
        self.closed = 0
        self._lock = threading.Lock()
        self._sock = None
        self._stop = False
        self._conns = []

    @property
    def address(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else \
            "%s:%d" % (self.host, self.port)

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(fam, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(256)
        self._sock.settimeout(0.2)
        self._stop = False
        threading.Thread(target=self._accept_loop, daemon=True).start()
        _register(self)
        return self

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _answer(self, head):
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        path = parts[1] if len(parts) > 1 else "/"
        close = b"connection: close" in head.lower()
        if path.split("?")[0].endswith("/healthz"):
            with self._lock:
                self.health_hits += 1
            status, body = (200, b"ok") if self.healthy else (503, b"unhealthy")
        else:
            with self._lock:
                self.hits += 1
            status, body = self.status, ("hello from %s\n" % self.name).encode()
        reason = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable"}
        out = ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-Origin: %s\r\n%s\r\n"
               % (status, reason.get(status, "Status"), len(body), self.name,
                  "Connection: close\r\n" if close else "")).encode() + body
        return out, close

    def _serve(self, c):
        buf = b""
        c.settimeout(0.5)
        try:
            while not self._stop:
                while b"\r\n\r\n" not in buf:
                    try:
                        d = c.recv(65536)
                    except socket.timeout:
                        if self._stop:
                            return
                        continue
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                out, close = self._answer(head)
                c.sendall(out)
                if close:
                    return
        except OSError:
            pass
        finally:
            with self._lock:
                self.closed += 1
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        _unregister(self)
        self._stop = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._conns = []

    def __repr__(self):
        return "ToggleOrigin(%s@%s)" % (self.name, self.address)


_GRPC_HEALTH_SERVER = r'''
import sys, threading
from concurrent import futures
import grpc

state = {"status": 1}  # SERVING

def check(request, context):
    # HealthCheckRequest {string service = 1}: only the empty service and "weir.test" exist.
    service = b""
    if request[:1] == b"\x0a":
        n = request[1]
        service = request[2:2 + n]
    if service not in (b"", b"weir.test"):
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return b"\x08" + bytes([state["status"]])  # HealthCheckResponse {status = 1}

handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(
        check, request_deserializer=lambda b: b, response_serializer=lambda b: b)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
if server.add_insecure_port(sys.argv[1]) == 0:
    sys.exit(2)
server.start()
print("listening", flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "SERVING":
        state["status"] = 1
    elif word == "NOT_SERVING":
        state["status"] = 2
    print("ok " + word, flush=True)
server.stop(0)
'''


class GrpcHealthServer:
    """A grpc.health.v1 server (python3-grpcio, h2c) in a child process. set_serving(False)
    makes Check answer NOT_SERVING. Services "" and "weir.test" exist; others get NOT_FOUND."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.proc = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        path = os.path.join(tmpdir(), "grpc_health_server.py")
        write_file(path, _GRPC_HEALTH_SERVER)
        self.proc = subprocess.Popen(["/usr/bin/python3", path, self.address],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=_die_with_parent)
        _register(self)
        line = self.proc.stdout.readline().strip()
        if line != "listening":
            raise AssertionError("gRPC health server did not start (%r, rc=%r)"
                                 % (line, self.proc.poll()))
        return self

    def set_serving(self, serving):
        word = "SERVING" if serving else "NOT_SERVING"
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        check_eq(self.proc.stdout.readline().strip(), "ok " + word, "gRPC health server reply")

    def stop(self):
        _unregister(self)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __repr__(self):
        return "GrpcHealthServer(%s)" % self.address


def cluster_endpoint(w, cname, address):
    """The /clusters entry of endpoint <address> of cluster <cname>."""
    for c in w.clusters()["clusters"]:
        if c["name"] == cname:
            for e in c["endpoints"]:
                if e["address"] == address:
                    return e
    raise AssertionError("endpoint %s of %s not in /clusters" % (address, cname))


def endpoint_health(w, cname, address):
    return cluster_endpoint(w, cname, address)["health"]


def wait_health(w, cname, address, state, timeout=15.0, interval=0.02):
    """Polls /clusters until endpoint <address> of <cname> shows <state>; returns the seconds
    it took."""
    t0 = time.monotonic()
    wait_for(lambda: endpoint_health(w, cname, address) == state, timeout=timeout,
             interval=interval, what="%s %s to be %s" % (cname, address, state))
    return time.monotonic() - t0


class Background:
    """A helper process (a load generator, a fleet of listeners, ...) stopped with the test.
    By default its stdout and stderr are piped together and communicate() waits for them;
    with interactive=True, stdin and stdout are pipes for send() and line()."""

    def __init__(self, argv, interactive=False, **kw):
        if interactive:
            kw.update(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        else:
            kw.update(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
        self.proc = subprocess.Popen(argv, text=True, preexec_fn=_die_with_parent, **kw)
        _register(self)

    def communicate(self, timeout):
        out, _ = self.proc.communicate(timeout=timeout * SLOW)
        return out

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def line(self):
        return self.proc.stdout.readline()

    @property
    def returncode(self):
        return self.proc.returncode

    def stop(self):
        _unregister(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# ---- TLS and HTTP/2 (issue 3) ------------------------------------------------------------------
# Test certificates are made with the openssl CLI at test time (never committed); TLS clients
# use the ssl module or `openssl s_client`; HTTP/2 clients are handcrafted frames (H2Raw, with
# Debian's python3-hpack) for exact control, or the h2/httpx libraries in the tests themselves.

import ssl  # noqa: E402


def weir_sanitized():
    """True when WEIR_BIN is an AddressSanitizer build (memory figures are less exact)."""
    try:
        out = subprocess.run(["ldd", WEIR_BIN], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if "libasan" in out:
        return True
    try:
        with open(WEIR_BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def origin_bytes(n):
    """The body weir-test-origin sends for /bytes/N: byte i is '\\n' when i % 64 == 63."""
    unit = b"x" * 63 + b"\n"
    return (unit * (n // 64 + 1))[:n]


class TestCert:
    """A certificate and its key, as files; `der` is the certificate in DER form."""

    def __init__(self, name, cert, key, dns, kind):
        self.name, self.cert, self.key, self.dns, self.kind = name, cert, key, dns, kind
        with open(cert) as f:
            self.der = ssl.PEM_cert_to_DER_cert(f.read())

    def entry(self):
        return {"cert_file": self.cert, "key_file": self.key}

    def __repr__(self):
        return "TestCert(%s %s %s)" % (self.name, self.kind, ",".join(self.dns))


class Certs:
    """A throw-away CA (EC P-256) and leaf certificates it signs, made with the openssl CLI in a
    fresh temp dir."""

    def __init__(self):
        self.dir = tmpdir()
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.ca_cert = os.path.join(self.dir, "ca.crt")
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", self.ca_key)
        self._openssl("req", "-x509", "-new", "-key", self.ca_key, "-out", self.ca_cert,
                      "-days", "30", "-subj", "/CN=weir test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._serial = 1000

    def _openssl(self, *args):
        r = run_cmd(["openssl"] + list(args), timeout=60)
        if r.returncode != 0:
            raise AssertionError("openssl %s failed: %s" % (" ".join(args), r.stderr[-2000:]))
        return r

    def leaf(self, name, dns, kind="ec", cn=None):
        """A leaf certificate for the DNS names <dns> (its subjectAltName; the CN is <cn> or the
        first name). kind: "ec" (P-256) or "rsa" (2048 bits). Files: <name>.crt / <name>.key."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".crt")
        ext = os.path.join(self.dir, name + ".ext")
        if kind == "rsa":
            self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                          "-out", key)
        else:
            self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-out", key)
        self._openssl("req", "-new", "-key", key, "-out", csr,
                      "-subj", "/CN=%s" % (cn or dns[0]))
        write_file(ext, "subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                   "basicConstraints=CA:FALSE\n" % ",".join("DNS:" + d for d in dns))
        self._serial += 1
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                      "-set_serial", str(self._serial), "-days", "30", "-sha256",
                      "-extfile", ext, "-out", crt)
        return TestCert(name, crt, key, list(dns), kind)


def install_cert(src, cert_path, key_path):
    """Copies the files of TestCert <src> over <cert_path>/<key_path> (each replaced by a
    rename, as cert-manager does)."""
    for s, d in ((src.cert, cert_path), (src.key, key_path)):
        with open(s, "rb") as f:
            data = f.read()
        with open(d + ".tmp", "wb") as f:
            f.write(data)
        os.replace(d + ".tmp", d)


def tls_listener(port, certs, name="secure", host="127.0.0.1", **tls_opts):
    """A listener dict with TLS over <certs> (TestCert objects or {cert_file, key_file})."""
    t = {"certificates": [c.entry() if isinstance(c, TestCert) else c for c in certs]}
    t.update(tls_opts)
    addr = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return {"name": name, "address": addr, "tls": t}


def tls_client_ctx(alpn=None, min_version=None, max_version=None, ciphers=None, ca=None):
    """A client SSLContext; no verification unless <ca> (a CA file) is given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


class TlsRaw(Raw):
    """Raw over TLS: the same send/read helpers, on an ssl-wrapped socket. <sni> None sends no
    server name. `ssl` is the SSLSocket (version(), selected_alpn_protocol(), session...)."""

    def __init__(self, port, sni=None, alpn=None, ctx=None, session=None, host="127.0.0.1",
                 timeout=10):
        Raw.__init__(self, port, host=host, timeout=timeout)
        self.ctx = ctx or tls_client_ctx(alpn=alpn)
        try:
            self.sock = self.ctx.wrap_socket(self.sock, server_hostname=sni, session=session)
        except BaseException:
            self.stop()
            raise
        self.ssl = self.sock

    def _fill(self, timeout=None):
        try:
            return Raw._fill(self, timeout)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, BrokenPipeError):
            self.eof = True
            return False
        except ssl.SSLError as e:
            if "timed out" in str(e):
                raise socket.timeout(str(e))
            self.eof = True
            return False

    def shutdown_write(self):
        raise AssertionError("no half-close over TLS")

    def peer_cert(self):
        return self.sock.getpeercert(binary_form=True)


def served_cert(port, sni=None, ctx=None, host="127.0.0.1", timeout=10):
    """The DER certificate weir serves to a client sending <sni> (None: no SNI)."""
    c = TlsRaw(port, sni=sni, ctx=ctx, host=host, timeout=timeout)
    try:
        return c.peer_cert()
    finally:
        c.stop()


class _SNIHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, sni=None, **kw):
        http.client.HTTPSConnection.__init__(self, host, port, **kw)
        self._sni = sni

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


def https_conn(port, sni=None, ctx=None, timeout=30, host="127.0.0.1"):
    """An http.client HTTPS connection (keep-alive with get_on); no verification."""
    return _SNIHTTPSConnection(host, port, sni=sni, context=ctx or tls_client_ctx(),
                               timeout=timeout * SLOW)


def https_request(port, method, path, headers=None, body=None, sni=None, ctx=None, timeout=30,
                  host="127.0.0.1"):
    """One request over a fresh TLS connection; returns a Resp."""
    c = https_conn(port, sni=sni, ctx=ctx, timeout=timeout, host=host)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data,
                    "HTTP/1.1" if r.version == 11 else "HTTP/1.0")
    finally:
        c.close()


class SClient:
    """The outcome of one `openssl s_client` run: ok (handshake completed), protocol, cipher,
    alpn, cert (DER of the server certificate), reused, out (all output)."""

    def __init__(self, rc, out):
        self.rc, self.out = rc, out
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
        self.protocol = m.group(1) if m else None
        m = re.search(r"^(New|Reused), (\S+), Cipher is (\S+)", out, re.M)
        self.reused = bool(m) and m.group(1) == "Reused"
        self.cipher = m.group(3) if m else None
        if m and self.protocol is None:
            self.protocol = m.group(2)
        self.ok = m is not None and self.cipher not in (None, "(NONE)")
        m = re.search(r"^ALPN protocol: (\S+)", out, re.M)
        self.alpn = m.group(1) if m else None
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
        self.cert = ssl.PEM_cert_to_DER_cert(m.group(0)) if m else None
        m = re.search(r"^Peer signature type: (\S+)", out, re.M)
        self.sigtype = m.group(1) if m else None

    def __repr__(self):
        return "SClient(ok=%r %s %s alpn=%s reused=%r rc=%d)" % (
            self.ok, self.protocol, self.cipher, self.alpn, self.reused, self.rc)


def s_client(port, *args, sni=None, data=b"", host="127.0.0.1", timeout=20):
    """Runs `openssl s_client -connect host:port [args]` (with -servername <sni>, else
    -noservername), sending <data> then EOF; returns an SClient."""
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (host, port)]
    argv += ["-servername", sni] if sni else ["-noservername"]
    argv += list(args)
    try:
        p = subprocess.run(argv, input=data, capture_output=True, timeout=timeout * SLOW)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("openssl s_client %r timed out: %r" % (args, e.stdout))
    return SClient(p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace"))


# ---- HTTP/2 frames -------------------------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_PRIORITY, H2_RST_STREAM, H2_SETTINGS, H2_PUSH_PROMISE, H2_PING, \
    H2_GOAWAY, H2_WINDOW_UPDATE, H2_CONTINUATION = range(10)
H2_END_STREAM, H2_ACK, H2_END_HEADERS, H2_PADDED, H2_PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
             4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR",
             7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR",
             11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
H2_NO_ERROR, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM, H2_CANCEL, H2_ENHANCE_YOUR_CALM = 0, 1, 7, 8, 11
H2_SETTINGS_HEADER_TABLE_SIZE, H2_SETTINGS_ENABLE_PUSH, H2_SETTINGS_MAX_CONCURRENT_STREAMS, \
    H2_SETTINGS_INITIAL_WINDOW_SIZE, H2_SETTINGS_MAX_FRAME_SIZE, \
    H2_SETTINGS_MAX_HEADER_LIST_SIZE = range(1, 7)


def h2_frame(ftype, flags, sid, payload=b""):
    """One HTTP/2 frame's bytes."""
    n = len(payload)
    return bytes([(n >> 16) & 255, (n >> 8) & 255, n & 255, ftype, flags]) + \
        (sid & 0x7fffffff).to_bytes(4, "big") + payload


def h2_settings_payload(settings):
    return b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in dict(settings).items())


class H2Stream:
    """What a client stream received: status, headers [(name, value)], body, ended (END_STREAM
    seen), reset (the RST_STREAM error code, or None), trailers."""

    def __init__(self, sid):
        self.sid = sid
        self.status = None
        self.headers = []
        self.trailers = []
        self.body = b""
        self.ended = False
        self.reset = None
        self.interim = []

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r" % (e, self.body[:300]))

    def __repr__(self):
        return "H2Stream(%d status=%r ended=%r reset=%r body=%r)" % (
            self.sid, self.status, self.ended, self.reset, self.body[:80])


class H2Raw:
    """A handcrafted HTTP/2 client over a plain (h2c prior knowledge) or TLS (ALPN h2) socket.
    It sends the preface and a SETTINGS frame (<settings>), acknowledges the server's SETTINGS
    and PINGs (auto_ack), and reopens receive windows as DATA is read (auto_window). Every frame
    received is kept in `frames` as (type, flags, stream id, payload); header blocks are decoded
    with one HPACK decoder, per stream into `streams`. `goaway` is (last stream id, error code)
    once a GOAWAY arrived; `eof` once the server closed."""

    def __init__(self, port, tls=False, sni=None, host="127.0.0.1", timeout=10, settings=None,
                 preface=True, auto_ack=True, auto_window=True, ctx=None):
        import hpack
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.timeout = timeout * SLOW
        _register(self)
        if tls:
            ctx = ctx or tls_client_ctx(alpn=["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname=sni)
            if self.sock.selected_alpn_protocol() != "h2":
                self.stop()
                raise AssertionError("ALPN: expected h2, got %r"
                                     % self.sock.selected_alpn_protocol())
        self.tls = tls
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder(max_header_list_size=1 << 24)
        self.buf = b""
        self.frames = []
        self.streams = {}
        self.server_settings = {}
        self.server_settings_seen = False
        self.goaway = None
        self.eof = False
        self.send_error = None
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.next_sid = 1
        self._hblock = None  # (stream id, fragment so far) while a header block continues
        if preface:
            self.send(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, h2_settings_payload(settings or {})))

    def stop(self):
        _unregister(self)
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- sending --

    def send(self, data):
        """Sends bytes; returns False (and keeps the error in send_error) if the server closed."""
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError) as e:
            self.send_error = e
            return False

    def frame(self, ftype, flags, sid, payload=b""):
        return self.send(h2_frame(ftype, flags, sid, payload))

    def encode(self, headers):
        return self.enc.encode([(k.encode("latin-1") if isinstance(k, str) else k,
                                 v.encode("latin-1") if isinstance(v, str) else v)
                                for k, v in headers], huffman=True)

    def request_headers(self, path="/", method="GET", authority="a.test", headers=(),
                        scheme=None):
        h = [(":method", method), (":scheme", scheme or ("https" if self.tls else "http")),
             (":path", path)]
        if authority is not None:
            h.append((":authority", authority))
        return h + list(headers)

    def headers_frame(self, sid, headers, end_stream=True, end_headers=True):
        """HEADERS (+ CONTINUATION frames when the block exceeds 16 KiB) for <headers>;
        end_headers=False leaves the block open for the caller's CONTINUATION frames."""
        block = self.encode(headers)
        pieces = [block[i:i + 16384] for i in range(0, max(len(block), 1), 16384)]
        out = b""
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            flags = H2_END_HEADERS if (last and end_headers) else 0
            if i == 0:
                flags |= H2_END_STREAM if end_stream else 0
            out += h2_frame(H2_HEADERS if i == 0 else H2_CONTINUATION, flags, sid, piece)
        return out

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = H2Stream(sid)
        return sid

    def request(self, path="/", method="GET", authority="a.test", headers=(), body=None,
                end_stream=None):
        """Opens a stream with a request; <body> (bytes) is sent in DATA frames of at most 16 KiB
        (it must fit the server's windows: up to 64 KiB); end_stream=False leaves the stream
        open after it. Returns the stream id."""
        sid = self.new_sid()
        if end_stream is None:
            end_stream = True
        self.send(self.headers_frame(sid, self.request_headers(path, method, authority, headers),
                                     end_stream=end_stream and body is None))
        if body is not None:
            self.data(sid, body, end_stream=end_stream)
        return sid

    def data(self, sid, body, end_stream=True):
        out = b""
        for i in range(0, max(len(body), 1), 16384):
            piece = body[i:i + 16384]
            last = i + 16384 >= len(body)
            out += h2_frame(H2_DATA, H2_END_STREAM if (last and end_stream) else 0, sid, piece)
        return self.send(out)

    def rst(self, sid, code=H2_CANCEL):
        return self.frame(H2_RST_STREAM, 0, sid, code.to_bytes(4, "big"))

    def ping(self, data=b"12345678", ack=False):
        return self.frame(H2_PING, H2_ACK if ack else 0, 0, data)

    def settings(self, settings=None, ack=False):
        return self.frame(H2_SETTINGS, H2_ACK if ack else 0, 0,
                          b"" if ack else h2_settings_payload(settings or {}))

    def window_update(self, sid, inc):
        return self.frame(H2_WINDOW_UPDATE, 0, sid, inc.to_bytes(4, "big"))

    # -- receiving --

    def _fill(self, timeout):
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            d = b""
        except ssl.SSLError as e:
            if "timed out" in str(e):
                raise socket.timeout(str(e))
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_frame(self, timeout=None):
        """The next frame (type, flags, sid, payload), handled; None at EOF. Raises socket.timeout
        when nothing complete arrives within <timeout> s."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    f = (ftype, flags, sid, payload)
                    self.frames.append(f)
                    self._handle(f)
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete frame within %.1fs" % t)
            if not self._fill(left):
                return None

    def _stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = H2Stream(sid)
        return self.streams[sid]

    def _headers_done(self, sid, block, end_stream):
        hs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.dec.decode(block, raw=True)]
        s = self._stream(sid)
        status = dict(hs).get(":status")
        if status is not None:
            st = int(status)
            if 100 <= st < 200:
                s.interim.append(st)
            else:
                s.status = st
                s.headers = hs
        else:
            s.trailers = hs
        if end_stream:
            s.ended = True

    def _handle(self, f):
        ftype, flags, sid, p = f
        if ftype == H2_SETTINGS and not flags & H2_ACK:
            for i in range(0, len(p) - 5, 6):
                self.server_settings[int.from_bytes(p[i:i + 2], "big")] = \
                    int.from_bytes(p[i + 2:i + 6], "big")
            self.server_settings_seen = True
            if self.auto_ack:
                self.settings(ack=True)
        elif ftype == H2_PING and not flags & H2_ACK:
            if self.auto_ack:
                self.ping(p, ack=True)
        elif ftype == H2_GOAWAY:
            self.goaway = (int.from_bytes(p[:4], "big") & 0x7fffffff,
                           int.from_bytes(p[4:8], "big"))
        elif ftype == H2_RST_STREAM:
            self._stream(sid).reset = int.from_bytes(p[:4], "big")
        elif ftype == H2_DATA:
            body = p
            if flags & H2_PADDED:
                body = p[1:len(p) - p[0]]
            s = self._stream(sid)
            s.body += body
            if flags & H2_END_STREAM:
                s.ended = True
            if self.auto_window and len(p) > 0:
                self.send(h2_frame(H2_WINDOW_UPDATE, 0, 0, len(p).to_bytes(4, "big")) +
                          (h2_frame(H2_WINDOW_UPDATE, 0, sid, len(p).to_bytes(4, "big"))
                           if not flags & H2_END_STREAM else b""))
        elif ftype == H2_HEADERS:
            block = p
            if flags & H2_PADDED:
                block = block[1:len(block) - block[0]]
            if flags & H2_PRIORITY_FLAG:
                block = block[5:]
            if flags & H2_END_HEADERS:
                self._headers_done(sid, block, flags & H2_END_STREAM)
            else:
                self._hblock = (sid, block, flags & H2_END_STREAM)
        elif ftype == H2_CONTINUATION and self._hblock is not None:
            hsid, block, es = self._hblock
            block += p
            if flags & H2_END_HEADERS:
                self._hblock = None
                self._headers_done(hsid, block, es)
            else:
                self._hblock = (hsid, block, es)

    def pump(self, wait=0.0):
        """Reads and handles whatever arrives within <wait> s (at least what is there now)."""
        deadline = time.monotonic() + wait
        while not self.eof:
            try:
                if self.read_frame(max(0.001, deadline - time.monotonic())) is None:
                    break
            except socket.timeout:
                break

    def wait(self, pred, timeout=None, what="condition"):
        """Reads frames until pred() holds; fails at EOF or after <timeout> s."""
        t = self.timeout if timeout is None else timeout * SLOW
        deadline = time.monotonic() + t
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("h2: timed out waiting for %s" % what)
            try:
                f = self.read_frame(left)
            except socket.timeout:
                continue
            if f is None and not pred():
                raise AssertionError("h2: connection closed while waiting for %s (goaway=%r)"
                                     % (what, self.goaway))
        return True

    def response(self, sid, timeout=None):
        """Waits until stream <sid> ended or was reset; returns its H2Stream."""
        self.wait(lambda: self._stream(sid).done, timeout, "the end of stream %d" % sid)
        return self.streams[sid]

    def wait_settings(self, timeout=None):
        self.wait(lambda: self.server_settings_seen, timeout, "the server's SETTINGS")
        return self.server_settings

    def wait_goaway_or_close(self, timeout=10):
        """Reads until a GOAWAY arrived and the connection closed, or <timeout> s; returns
        (goaway, closed)."""
        deadline = time.monotonic() + timeout * SLOW
        while not self.eof and time.monotonic() < deadline:
            try:
                self.read_frame(max(0.01, deadline - time.monotonic()))
            except socket.timeout:
                pass
        return self.goaway, self.eof

    def get(self, path="/", **kw):
        """One request, waits for its response (H2Stream)."""
        return self.response(self.request(path, **kw))

    def __repr__(self):
        return "H2Raw(%s)" % ("tls" if self.tls else "h2c")


def h2_get(port, path="/", tls=False, sni=None, timeout=15, **kw):
    """One request on a fresh HTTP/2 connection; returns the H2Stream."""
    c = H2Raw(port, tls=tls, sni=sni, timeout=timeout)
    try:
        return c.get(path, **kw)
    finally:
        c.stop()
