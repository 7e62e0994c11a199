"""weirctl rollout status / set / promote / rollback against a real weir (INTERFACES §5):
output contents (table and --json), changes visible in /rollouts and in traffic, options
anywhere, the admin token (--token-file, WEIR_ADMIN_TOKEN, wrong token), usage errors exit 2
without touching weir."""

from harness import *

W = None          # weir with rollout "shop": blue (origin + a dead endpoint), green
WT = None         # weir with admin.token_file
TOKEN = "s3cret-token"
O = {}
HC = {"type": "http", "path": "/healthz", "interval_ms": 100, "timeout_ms": 500,
      "healthy_threshold": 1, "unhealthy_threshold": 1, "initial_state": "unhealthy"}


def rollout_config(green_weight=0):
    return {
        "routes": [{"name": "shop", "match": {"host": "shop.test", "path_prefix": "/"},
                    "rollout": "shop"}],
        "clusters": [cluster("shop-blue", O["blue"], dead_address(), health_check=HC),
                     cluster("shop-green", O["green"], health_check=HC)],
        "rollouts": [{"name": "shop", "blue": "shop-blue", "green": "shop-green",
                      "green_weight": green_weight, "sticky": False}],
    }


def healthy_counts(w):
    out = {}
    for c in w.clusters()["clusters"]:
        out[c["name"]] = sum(1 for e in c["endpoints"] if e["health"] == "healthy")
    return out


def setup_module():
    global W, WT
    O["blue"] = Origin("blue").start()
    O["green"] = Origin("green").start()
    W = Weir(rollout_config()).start()
    d = tmpdir()
    tf = write_file(os.path.join(d, "admin.token"), TOKEN + "\n")
    cfg = rollout_config()
    cfg["admin"] = {"address": "127.0.0.1:%d" % free_port(), "token_file": tf}
    WT = Weir(cfg)
    WT.token = TOKEN
    WT.start()
    for w in (W, WT):
        wait_for(lambda: healthy_counts(w) == {"shop-blue": 1, "shop-green": 1}, timeout=10,
                 what="health checks: blue 1 of 2 healthy, green 1 of 1")


def admin_url(w=None):
    return "http://127.0.0.1:%d" % (w or W).admin_port


def ctl(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("WEIR_ADMIN_TOKEN", None)
    e.update(env or {})
    p = subprocess.run([WEIRCTL_BIN] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=e)
    check(not any(m in p.stderr for m in SANITIZER_MARKERS),
          "sanitizer report from weirctl %r:\n%s" % (args, p.stderr))
    return p


def weight(w=None):
    for ro in (w or W).admin("GET", "/rollouts").json()["rollouts"]:
        if ro["name"] == "shop":
            return ro["green_weight"]
    raise AssertionError("rollout shop missing")


def put_weight(n, w=None):
    check_eq((w or W).admin("PUT", "/rollouts/shop", {"green_weight": n}).status, 200,
             "PUT green_weight %d" % n)


def colours(n=30, w=None):
    c = (w or W).conn()
    got = {}
    for _ in range(n):
        r = get_on(c, "GET", "/echo", {"Host": "shop.test"})
        got[r.header("X-Origin")] = got.get(r.header("X-Origin"), 0) + 1
    c.close()
    return got


class Traffic:
    """Background client: blue forced with /echo (never 5xx), green forced alternating /echo
    and /status/500 (half 5xx). Bounded in time and count."""

    def __init__(self, seconds=20, max_requests=20000):
        self.stop_flag = threading.Event()
        self.deadline = time.monotonic() + seconds
        self.max_requests = max_requests
        self.sent = 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        c = W.conn(timeout=10)
        i = 0
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline and \
                self.sent < self.max_requests:
            colour = "blue" if i % 2 == 0 else "green"
            path = "/status/500" if colour == "green" and i % 4 == 1 else "/echo"
            try:
                get_on(c, "GET", path, {"Host": "shop.test", "x-weir-track": colour})
            except (OSError, http.client.HTTPException):
                c.close()
                c = W.conn(timeout=10)
            i += 1
            self.sent += 1
            time.sleep(0.002)  # a steady trickle, not a load test
        c.close()

    def __enter__(self):
        self.t.start()
        wait_for(lambda: self.sent > 20, timeout=10, what="background traffic")
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.t.join(15)


ROW = re.compile(r"^(blue|green)\s+(\S+)\s+(\d+)%\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def table_rows(out):
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = m.groups()[1:]
    return rows


def test_status_table():
    put_weight(30)
    with Traffic():
        p = ctl("rollout", "status", "shop", "--admin", admin_url())
    check_eq(p.returncode, 0, "status exit code (stderr %r)" % p.stderr)
    check("rollout shop" in p.stdout, "names the rollout: %r" % p.stdout)
    check("config version %s" % W.config_version() in p.stdout, "the version: %r" % p.stdout)
    rows = table_rows(p.stdout)
    check_eq(sorted(rows), ["blue", "green"], "a row per colour in %r" % p.stdout)
    cl, w, healthy, req_s, err_s, frac = rows["blue"]
    check_eq((cl, w, healthy), ("shop-blue", "70", "1/2"), "blue row %r" % (rows["blue"],))
    check(float(req_s) > 0, "blue request rate > 0: %r" % p.stdout)
    check_eq((err_s, frac), ("0.0", "0.00%"), "blue has no 5xx: %r" % p.stdout)
    cl, w, healthy, req_s, err_s, frac = rows["green"]
    check_eq((cl, w, healthy), ("shop-green", "30", "1/1"), "green row %r" % (rows["green"],))
    check(float(req_s) > 0 and float(err_s) > 0, "green rates > 0: %r" % p.stdout)
    pct = float(frac.rstrip("%"))
    check(0 < pct < 100, "green 5xx share between 0 and 100 %%: %r" % p.stdout)
    put_weight(0)


def test_status_json():
    put_weight(40)
    with Traffic():
        p = ctl("rollout", "status", "shop", "--json", "--sample", "500ms",
                "--admin", admin_url())
    check_eq(p.returncode, 0, "status --json (stderr %r)" % p.stderr)
    j = json.loads(p.stdout)
    check_eq((j["name"], j["target"], j["green_weight"], j["sticky"]), ("shop", "admin", 40, False))
    check_eq(j["version"], W.config_version(), "version is /config's")
    check(0.4 <= j["sample_seconds"] < 30, "sample_seconds %r" % j["sample_seconds"])
    b, g = j["blue"], j["green"]
    check_eq((b["cluster"], b["weight"], b["healthy"], b["endpoints"]), ("shop-blue", 60, 1, 2))
    check_eq((g["cluster"], g["weight"], g["healthy"], g["endpoints"]), ("shop-green", 40, 1, 1))
    ro = [r for r in W.admin("GET", "/rollouts").json()["rollouts"] if r["name"] == "shop"][0]
    check(0 < b["requests"] <= ro["stats"]["blue"]["requests"], "blue requests %r" % b)
    check(b["request_rate"] > 0 and b["errors_5xx_rate"] == 0 and b["errors_5xx_ratio"] == 0, b)
    check(g["request_rate"] > 0 and g["errors_5xx_rate"] > 0, g)
    check(0 < g["errors_5xx_ratio"] < 1, "green 5xx ratio %r" % g)
    p = ctl("rollout", "status", "shop", "--json", "--sample=0", "--admin", admin_url())
    j = json.loads(p.stdout)
    check(j["sample_seconds"] is None and j["green"]["request_rate"] is None,
          "--sample 0: no rates: %r" % j)
    put_weight(0)


def test_set_promote_rollback_change_traffic():
    put_weight(0)
    p = ctl("rollout", "set", "shop", "--green", "100", "--admin", admin_url())
    check_eq(p.returncode, 0, "set exit code (stderr %r)" % p.stderr)
    check("green_weight 100" in p.stdout, "prints the weight: %r" % p.stdout)
    check("config version %s" % W.config_version() in p.stdout, "prints the version: %r" % p.stdout)
    check_eq(weight(), 100, "/rollouts after set 100")
    check_eq(colours(), {"green": 30}, "traffic after set 100")

    p = ctl("rollout", "rollback", "shop", "--admin", admin_url())
    check_eq(p.returncode, 0, "rollback (stderr %r)" % p.stderr)
    check("green_weight 0" in p.stdout, p.stdout)
    check_eq(weight(), 0, "/rollouts after rollback")
    check_eq(colours(), {"blue": 30}, "traffic after rollback")

    p = ctl("rollout", "promote", "shop", "--admin", admin_url())
    check_eq(p.returncode, 0, "promote (stderr %r)" % p.stderr)
    check("green_weight 100" in p.stdout, p.stdout)
    check_eq(weight(), 100, "/rollouts after promote")
    check_eq(colours(), {"green": 30}, "traffic after promote")

    p = ctl("rollout", "set", "shop", "--green", "50", "--admin", admin_url())
    check_eq((p.returncode, weight()), (0, 50), "set 50")
    got = colours(200)
    check(got.get("blue", 0) > 40 and got.get("green", 0) > 40, "50/50 split: %r" % got)
    put_weight(0)


def test_set_json():
    p = ctl("rollout", "set", "shop", "--green", "7", "--json", "--admin", admin_url())
    check_eq(p.returncode, 0, "set --json (stderr %r)" % p.stderr)
    j = json.loads(p.stdout)
    check_eq((j["name"], j["green_weight"], j["blue"], j["green"], j["target"]),
             ("shop", 7, "shop-blue", "shop-green", "admin"))
    check_eq(j["version"], W.config_version(), "version")
    check_eq(weight(), 7, "/rollouts")
    put_weight(0)


def test_options_anywhere():
    url = admin_url()
    for n, argv in enumerate([
            ["--admin", url, "rollout", "set", "shop", "--green", "11"],
            ["rollout", "set", "shop", "--green", "12", "--admin", url],
            ["rollout", "--admin=" + url, "set", "--green=13", "shop"],
            ["--green", "14", "rollout", "set", "shop", "--admin=" + url]]):
        p = ctl(*argv)
        check_eq(p.returncode, 0, "%r (stderr %r)" % (argv, p.stderr))
        check_eq(weight(), 11 + n, "weight after %r" % argv)
    p = ctl("--admin", url, "rollout", "rollback", "shop")
    check_eq((p.returncode, weight()), (0, 0), "rollback with the option first")


def test_default_admin_url_is_used():
    # Nothing listens on 127.0.0.1:9901 in this test run unless another weir does; either
    # way the command must try that address (named in the error) or succeed there.
    p = ctl("rollout", "status", "nosuch-rollout-xyz", "--sample", "0")
    check_eq(p.returncode, 1, "status of a rollout that does not exist (stderr %r)" % p.stderr)
    check("127.0.0.1:9901" in p.stderr, "the default admin address is used: %r" % p.stderr)


def test_http_errors_exit_1_with_weirs_message():
    p = ctl("rollout", "set", "nope", "--green", "5", "--admin", admin_url())
    check_eq(p.returncode, 1, "unknown rollout")
    check("404" in p.stderr and "no such rollout" in p.stderr, "weir's error shown: %r" % p.stderr)
    p = ctl("rollout", "status", "nope", "--admin", admin_url())
    check_eq(p.returncode, 1, "status of an unknown rollout")
    check("nope" in p.stderr, p.stderr)
    p = ctl("rollout", "promote", "shop", "--admin", "http://127.0.0.1:%d" % free_port())
    check_eq(p.returncode, 1, "admin not reachable")
    check(p.stderr.startswith("weirctl: "), p.stderr)


def test_token_file_and_env():
    url = admin_url(WT)
    d = tmpdir()
    good = write_file(os.path.join(d, "good"), TOKEN + "\n")
    bad = write_file(os.path.join(d, "bad"), "wrong\n")
    p = ctl("rollout", "set", "shop", "--green", "20", "--admin", url, "--token-file", good)
    check_eq(p.returncode, 0, "--token-file with the right token (stderr %r)" % p.stderr)
    check_eq(weight(WT), 20, "weight set with --token-file")
    p = ctl("rollout", "set", "shop", "--green", "30", "--admin", url,
            env={"WEIR_ADMIN_TOKEN": TOKEN})
    check_eq(p.returncode, 0, "WEIR_ADMIN_TOKEN (stderr %r)" % p.stderr)
    check_eq(weight(WT), 30, "weight set with WEIR_ADMIN_TOKEN")
    p = ctl("rollout", "status", "shop", "--sample", "0", "--json", "--admin", url,
            env={"WEIR_ADMIN_TOKEN": TOKEN})
    check_eq((p.returncode, json.loads(p.stdout or "{}").get("green_weight")), (0, 30),
             "status with the token (stderr %r)" % p.stderr)
    for args, env, what in [
            (["--token-file", bad], None, "wrong token in the file"),
            ([], {"WEIR_ADMIN_TOKEN": "wrong"}, "wrong token in the environment"),
            ([], None, "no token"),
            (["--token-file", bad], {"WEIR_ADMIN_TOKEN": TOKEN}, "the file wins over the env"),
            (["--token-file", os.path.join(d, "missing")], None, "missing token file")]:
        p = ctl("rollout", "set", "shop", "--green", "40", "--admin", url, *args, env=env)
        check_eq(p.returncode, 1, "%s (stderr %r)" % (what, p.stderr))
        check(p.stderr.strip() != "", "%s: an error message" % what)
        if what != "missing token file":
            check("401" in p.stderr, "%s: 401 shown: %r" % (what, p.stderr))
        check_eq(weight(WT), 30, "%s: weight unchanged" % what)
    put_weight(0, WT)


def test_kubernetes_target_without_a_kubeconfig():
    # the target itself is tested against the fake API server in 96-kubernetes-rollout.py
    p = ctl("rollout", "set", "shop", "--green", "20", "--kubernetes", "--namespace", "shop",
            "--kubeconfig", "/nonexistent")
    check_eq(p.returncode, 1, "--kubernetes (stderr %r)" % p.stderr)
    check("kubeconfig /nonexistent: No such file" in p.stderr, p.stderr)


def test_usage_errors_exit_2_and_touch_nothing():
    put_weight(3)
    url = admin_url()
    cases = [
        ["frobnicate"],
        ["rollout"],
        ["rollout", "bogus", "shop"],
        ["rollout", "status"],
        ["rollout", "set", "--green", "20"],
        ["rollout", "promote"],
        ["rollout", "rollback"],
        ["rollout", "step", "--steps", "10,100", "--interval", "1s"],
        ["rollout", "status", "shop", "extra"],
        ["rollout", "status", "shop", "--bogus"],
        ["rollout", "set", "shop", "--green", "101"],
        ["rollout", "set", "shop", "--green", "-1"],
        ["rollout", "set", "shop", "--green", "abc"],
        ["rollout", "set", "shop", "--green", "20.5"],
        ["rollout", "set", "shop", "--green", ""],
        ["rollout", "set", "shop"],
        ["rollout", "set", "shop", "--green"],
        ["rollout", "status", "shop", "--green", "20"],
        ["rollout", "promote", "shop", "--steps", "10"],
        ["rollout", "status", "shop", "--sample", "soon"],
        ["rollout", "step", "shop", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "10,100"],
        ["rollout", "step", "shop", "--steps", "50,25", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "10,10", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "10,101", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "10,,20", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "a", "--interval", "1s"],
        ["rollout", "step", "shop", "--steps", "10", "--interval", "0"],
        ["rollout", "step", "shop", "--steps", "10", "--interval", "5q"],
        ["rollout", "step", "shop", "--steps", "10", "--interval", "-1s"],
        ["rollout", "step", "shop", "--steps", "10", "--interval", "1s",
         "--max-error-rate", "2"],
        ["rollout", "step", "shop", "--steps", "10", "--interval", "1s",
         "--max-error-rate", "x"],
        ["rollout", "set", "shop", "--green", "20", "--consul", "http://127.0.0.1:1"],
        ["rollout", "set", "shop", "--green", "20", "--kubernetes"],
        ["rollout", "set", "shop", "--green", "20", "--namespace", "x"],
        ["rollout", "set", "shop", "--green", "20", "--json=yes"],
        ["rollout", "set", "shop", "--green", "20", "--green", "30"],
        ["rollout", "set", "shop", "--green", "20", "--admin", "127.0.0.1:9901"],
        ["check", "-c", "x.json", "--green", "20"],
    ]
    for argv in cases:
        full = argv if "--admin" in argv else argv + ["--admin", url]
        p = ctl(*full)
        check_eq(p.returncode, 2, "usage error for %r (stdout %r stderr %r)"
                 % (argv, p.stdout, p.stderr))
        check(p.stderr.startswith("weirctl: "), "a message for %r: %r" % (argv, p.stderr))
        check("usage:" in p.stderr, "usage shown for %r: %r" % (argv, p.stderr))
    check_eq(weight(), 3, "no usage error changed the weight")
    put_weight(0)


def test_help_per_command():
    for sub, opt in [("status", "--sample"), ("set", "--green"), ("promote", "--admin"),
                     ("rollback", "--token-file"), ("step", "--max-error-rate")]:
        p = ctl("rollout", sub, "--help")
        check_eq(p.returncode, 0, "rollout %s --help" % sub)
        check("weirctl rollout %s" % sub in p.stdout and opt in p.stdout,
              "help of %s names %s: %r" % (sub, opt, p.stdout))
    p = ctl("rollout", "--help")
    check_eq(p.returncode, 0, "rollout --help")
    check("rollout step" in p.stdout, p.stdout)
    p = ctl("--help")
    check_eq(p.returncode, 0, "--help")
    check("check -c FILE" in p.stdout and "rollout status" in p.stdout, p.stdout)


if __name__ == "__main__":
    run()
