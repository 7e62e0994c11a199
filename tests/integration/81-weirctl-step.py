"""weirctl rollout step (INTERFACES §5) against a real weir with steady background traffic:
a green that fails once it gets 25 % is rolled back to 0 (exit 1, the reason printed); a
healthy green reaches 100 (exit 0); a green without a healthy endpoint is rolled back, mid-run
or before the first step; --max-error-rate is honoured; SIGINT rolls back; a weight changed by
someone else stops the run without touching it."""

from harness import *
from harness import _die_with_parent

W = None
BLUE = None
GREEN = None
TEST_TIMEOUT = 90
HC = {"type": "http", "path": "/healthz", "interval_ms": 100, "timeout_ms": 500,
      "healthy_threshold": 1, "unhealthy_threshold": 1}


class Green:
    """The green origin: answers 500 to requests while `fail`, 503 to /healthz while `sick`."""

    def __init__(self):
        self.fail = False
        self.sick = False
        self.served = 0
        self.origin = EvilOrigin(self.respond).start()

    def respond(self, conn, data):
        if b"\r\n\r\n" not in data:
            return None
        line = data.split(b"\r\n", 1)[0]
        if b" /healthz " in line:
            status = 503 if self.sick else 200
        else:
            self.served += 1
            status = 500 if self.fail else 200
        return (b"HTTP/1.1 %d X\r\nContent-Length: 6\r\nX-Origin: green\r\n\r\ngreen\n" % status,
                False)


def setup_module():
    global W, BLUE, GREEN
    BLUE = Origin("blue").start()
    GREEN = Green()
    W = Weir({
        "routes": [{"name": "shop", "match": {"host": "shop.test", "path_prefix": "/"},
                    "rollout": "shop"}],
        "clusters": [cluster("shop-blue", BLUE),
                     cluster("shop-green", GREEN.origin, health_check=HC)],
        "rollouts": [{"name": "shop", "blue": "shop-blue", "green": "shop-green",
                      "green_weight": 0, "sticky": False}],
    }).start()


def weight():
    for ro in W.admin("GET", "/rollouts").json()["rollouts"]:
        if ro["name"] == "shop":
            return ro["green_weight"]
    raise AssertionError("rollout shop missing")


def green_health():
    for c in W.clusters()["clusters"]:
        if c["name"] == "shop-green":
            return c["endpoints"][0]["health"]
    raise AssertionError("cluster shop-green missing")


def reset(sick=False):
    """Weight 0, green answering well (or failing its health check), in that state in weir."""
    check_eq(W.admin("PUT", "/rollouts/shop", {"green_weight": 0}).status, 200, "reset weight")
    GREEN.fail = False
    GREEN.sick = sick
    want = "unhealthy" if sick else "healthy"
    wait_for(lambda: green_health() == want, timeout=10, what="green %s" % want)


class Watch:
    """Background: steady client traffic to the rollout, and a poller of /rollouts that records
    every weight seen and, once the weight reaches <at>, calls <trigger>. Bounded in time and
    count."""

    def __init__(self, at=None, trigger=None, seconds=60):
        self.at, self.trigger = at, trigger
        self.seen = []
        self.requests = 0
        self.stop_flag = threading.Event()
        self.deadline = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self.poll, daemon=True),
                        threading.Thread(target=self.traffic, daemon=True)]

    def running(self):
        return not self.stop_flag.is_set() and time.monotonic() < self.deadline

    def poll(self):
        fired = False
        while self.running():
            try:
                w = weight()
            except (OSError, http.client.HTTPException):
                continue
            if not self.seen or self.seen[-1] != w:
                self.seen.append(w)
            if not fired and self.at is not None and w >= self.at:
                self.trigger()
                fired = True
            time.sleep(0.02)

    def traffic(self):
        c = W.conn(timeout=10)
        while self.running() and self.requests < 50000:
            try:
                get_on(c, "GET", "/", {"Host": "shop.test"})
            except (OSError, http.client.HTTPException):
                c.close()
                c = W.conn(timeout=10)
            self.requests += 1
            time.sleep(0.003)
        c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_for(lambda: self.requests > 20 and self.seen, timeout=10, what="traffic and poller")
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)

    def max_seen(self):
        return max(self.seen)


def step(*args, timeout=60):
    argv = [WEIRCTL_BIN, "rollout", "step", "shop", "--admin",
            "http://127.0.0.1:%d" % W.admin_port] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    check_clean(p.stderr)
    return p


def check_clean(stderr):
    check(not any(m in stderr for m in SANITIZER_MARKERS),
          "sanitizer report from weirctl:\n%s" % stderr)


def test_failing_green_is_rolled_back_at_25():
    reset()

    def fail():
        GREEN.fail = True

    with Watch(at=25, trigger=fail) as w:
        p = step("--steps", "10,25,50,100", "--interval", "1s")
    out = p.stdout + p.stderr
    check_eq(p.returncode, 1, "exit code of a rolled-back step (output %r)" % out)
    check("5xx rate" in p.stderr and "exceeds --max-error-rate 0.01" in p.stderr,
          "the reason is printed: %r" % p.stderr)
    check("step 2/4" in p.stdout and "step 3/4" not in p.stdout, "stopped at 25: %r" % p.stdout)
    check("rolled back" in p.stdout and "green_weight 0" in p.stdout, p.stdout)
    check_eq(weight(), 0, "/rollouts after the rollback")
    check_eq(w.max_seen(), 25, "the weight never went past 25 (seen %r)" % w.seen)


def test_healthy_green_reaches_100():
    reset()
    served = GREEN.served
    with Watch() as w:
        p = step("--steps", "10,50,100", "--interval", "1s", "--max-error-rate", "0.05")
    check_eq(p.returncode, 0, "exit code (stdout %r stderr %r)" % (p.stdout, p.stderr))
    check("reached green_weight 100" in p.stdout, p.stdout)
    for i, n in enumerate((10, 50, 100)):
        check("step %d/3: rollout shop: green_weight %d" % (i + 1, n) in p.stdout, p.stdout)
    check_eq(weight(), 100, "/rollouts at the end")
    check_eq([x for x in w.seen if x in (10, 50, 100)], [10, 50, 100],
             "weights in order (seen %r)" % w.seen)
    check(GREEN.served > served, "green got traffic")


def test_green_losing_its_health_is_rolled_back():
    reset()

    def sicken():
        GREEN.sick = True

    with Watch(at=25, trigger=sicken) as w:
        p = step("--steps", "10,25,50,100", "--interval", "2s")
    check_eq(p.returncode, 1, "exit code (stdout %r stderr %r)" % (p.stdout, p.stderr))
    check("no healthy endpoint" in p.stderr, "the reason is printed: %r" % p.stderr)
    check_eq(weight(), 0, "/rollouts after the rollback")
    check_in(w.max_seen(), (25, 50), "rolled back soon after green turned sick (seen %r)" % w.seen)
    reset()


def test_unhealthy_green_gets_no_step():
    reset(sick=True)
    with Watch() as w:
        p = step("--steps", "10,100", "--interval", "1s")
    check_eq(p.returncode, 1, "exit code (stdout %r stderr %r)" % (p.stdout, p.stderr))
    check("no healthy endpoint" in p.stderr, p.stderr)
    check("step 1/" not in p.stdout, "no step applied: %r" % p.stdout)
    check_eq(weight(), 0, "/rollouts")
    check_eq(w.max_seen(), 0, "green never got a weight (seen %r)" % w.seen)
    reset()


def test_max_error_rate_is_honoured():
    reset()
    GREEN.fail = True
    with Watch():
        p = step("--steps", "20,100", "--interval", "1s", "--max-error-rate", "1")
    check_eq(p.returncode, 0, "a 5xx share of 1 never exceeds --max-error-rate 1 (stderr %r)"
             % p.stderr)
    check_eq(weight(), 100, "/rollouts")
    reset()


def _start_step(*args):
    argv = [WEIRCTL_BIN, "rollout", "step", "shop", "--admin",
            "http://127.0.0.1:%d" % W.admin_port] + list(args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent)


def test_sigint_rolls_back():
    reset()
    with Watch():
        proc = _start_step("--steps", "10,100", "--interval", "60s")
        wait_for(lambda: weight() == 10, timeout=10, what="step 1 applied")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    check_clean(err)
    check_eq(proc.returncode, 1, "exit code after SIGINT (stdout %r stderr %r)" % (out, err))
    check("interrupted" in err, err)
    check_eq(weight(), 0, "/rollouts after SIGINT")


def test_weight_changed_elsewhere_stops_without_touching_it():
    reset()
    with Watch():
        proc = _start_step("--steps", "10,100", "--interval", "60s")
        wait_for(lambda: weight() == 10, timeout=10, what="step 1 applied")
        check_eq(W.admin("PUT", "/rollouts/shop", {"green_weight": 5}).status, 200, "PUT 5")
        out, err = proc.communicate(timeout=20)
    check_clean(err)
    check_eq(proc.returncode, 1, "exit code (stdout %r stderr %r)" % (out, err))
    check("someone else" in err and "stopping" in err, err)
    check_eq(weight(), 5, "the other change stays")
    reset()


if __name__ == "__main__":
    run()
