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
