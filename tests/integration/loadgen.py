"""Python side of weir-test-load (tests/tools/loadgen.c): a load generator in C that mixes
HTTP/1.1 keep-alive clients, HTTP/1.1 new-connection clients and HTTP/2 (h2c) connections,
and checks that every answer is a 2xx from exactly one weir-test-origin (one X-Origin header
and that origin's own "hello from NAME" body).

    load = Load(w.port, keepalive=6, close=3, h2=3, streams=4, rate=4000,
                origins=["blue", "green"]).start()
    load.mark("swaps")          # requests started from now on count in phase "swaps"
    ...
    res = load.finish()         # stops it and returns the parsed report
    res.phase("swaps")["ok"]

Used by tests/integration/55-*.py and tests/bench/*.py; not a test itself (the CMake glob
only registers NN-*.py)."""

import json
import os
import select
import subprocess
import time

from harness import BUILD_DIR, SLOW, _bin, _die_with_parent, _register, _unregister  # noqa: F401

LOAD_BIN = _bin("WEIR_LOAD_BIN", "tests/weir-test-load", "weir-test-load")


class LoadResult:
    """The report of one run: `raw` (the JSON document), `total`, `phase(name)`."""

    def __init__(self, raw):
        self.raw = raw
        self.total = raw["total"]
        self.phases = {p["name"]: p for p in raw["phases"]}

    def phase(self, name):
        if name not in self.phases:
            raise AssertionError("load: no phase %r in %r" % (name, list(self.phases)))
        return self.phases[name]

    def __getitem__(self, key):
        return self.raw[key]


def failures(st):
    """Every way a request can fail, summed (0 means each request started got a good 2xx)."""
    return st["non2xx"] + st["conn_errors"] + st["identity_errors"] + st["unfinished"]


class Load:
    """weir-test-load against 127.0.0.1:<port>; see tests/tools/loadgen.c for the options."""

    def __init__(self, port, keepalive=0, close=0, h2=0, streams=1, rate=0, requests=0,
                 duration_ms=60000, origins=None, host=None, path=None, headers=(),
                 commands=True, connect_host="127.0.0.1", any_body=False, tag=False):
        self.argv = [LOAD_BIN, "--connect", "%s:%d" % (connect_host, port),
                     "--keepalive", str(keepalive), "--close", str(close), "--h2", str(h2),
                     "--streams", str(streams), "--rate", str(rate),
                     "--requests", str(requests), "--duration-ms", str(int(duration_ms))]
        if origins:
            self.argv += ["--origins", ",".join(origins)]
        if host:
            self.argv += ["--host", host]
        if path:
            self.argv += ["--path", path]
        for h in headers:
            self.argv += ["--header", h]
        if commands:
            self.argv.append("--commands")
        if any_body:
            self.argv.append("--any-body")
        if tag:
            self.argv.append("--tag")
        self.commands = commands
        self._out = b""  # stdout read by mark()
        self.proc = None
        self.result = None

    def start(self):
        stdin = subprocess.PIPE if self.commands else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        _register(self)
        return self

    def _send(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise AssertionError("load generator exited early (rc=%r)" % self.proc.poll())

    def mark(self, name, timeout=10):
        """Starts phase <name> and returns once the generator has it in force: every request
        of the phase started after what the caller did before mark(), and before what the
        caller does after it returns."""
        self._send("mark " + name)
        want = ("marked %s\n" % name).encode()
        deadline = time.monotonic() + timeout * SLOW
        fd = self.proc.stdout.fileno()
        while want not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError("load generator did not acknowledge mark %r" % name)
            data = os.read(fd, 65536)
            if not data:
                raise AssertionError("load generator exited (rc=%r)" % self.proc.poll())
            self._out += data

    def finish(self, timeout=60):
        """Stops starting requests (with commands; else lets the run end by its own bounds),
        waits for those in flight and returns
        the LoadResult."""
        if self.commands and self.proc.poll() is None:
            try:
                self._send("stop")
            except AssertionError:
                pass
        try:
            out, err = self.proc.communicate(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("load generator did not finish within %ds" % timeout)
        _unregister(self)
        if self.proc.returncode != 0:
            raise AssertionError("load generator failed (rc=%d): %s"
                                 % (self.proc.returncode, err.decode(errors="replace")[-500:]))
        out = self._out + out
        lines = [l for l in out.decode(errors="replace").splitlines() if l.startswith("{")]
        if not lines:
            raise AssertionError("load generator printed no report: %r" % out[-300:])
        self.result = LoadResult(json.loads(lines[-1]))
        return self.result

    def stop(self):
        _unregister(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __repr__(self):
        return "Load(%s)" % " ".join(self.argv[1:])
