"""Command line: weir --version / --check, weirctl --version / check / usage errors
(INTERFACES §1, §5)."""

from harness import *

GOOD = {
    "workers": 1,
    "admin": {"address": "127.0.0.1:9901"},
    "listeners": [{"name": "web", "address": "127.0.0.1:8080"}],
    "routes": [
        {"name": "api", "match": {"host": "*.example.com", "path_prefix": "/api/"},
         "cluster": "api"},
        {"name": "split", "match": {"path_prefix": "/split/"},
         "weighted_clusters": [{"cluster": "api", "weight": 90}, {"cluster": "b", "weight": 10}]},
    ],
    "clusters": [
        {"name": "api", "lb_policy": "round_robin",
         "endpoints": [{"address": "127.0.0.1:9001", "weight": 1},
                       {"address": "127.0.0.1:9002", "weight": 3}]},
        {"name": "b", "endpoints": []},
    ],
}


def check_file(cfg, name="bad.json", raw=None, prog=None):
    d = tmpdir()
    write_file(os.path.join(d, name), raw if raw is not None else json.dumps(cfg))
    argv = (prog or [WEIR_BIN, "--check"]) + ["-c", name]
    return run_cmd(argv, cwd=d)


def mutate(fn):
    cfg = json.loads(json.dumps(GOOD))
    fn(cfg)
    return cfg


def error_lines(p):
    return [l for l in p.stderr.splitlines() if l.strip()]


def expect_error(p, path, name="bad.json"):
    """Exit 1 and a stderr line `NAME: PATH: message`."""
    check_eq(p.returncode, 1, "exit code of --check on an invalid file (stderr: %r)" % p.stderr)
    want = "%s: %s: " % (name, path)
    lines = error_lines(p)
    check(any(l.startswith(want) and len(l) > len(want) for l in lines),
          "no stderr line starting with %r; got %r" % (want, lines))


def test_weir_version():
    p = run_cmd([WEIR_BIN, "--version"])
    check_eq(p.returncode, 0, "weir --version exit code")
    check(re.search(r"\d+\.\d+", p.stdout + p.stderr), "a version number in %r" % p.stdout)


def test_check_good_config():
    p = check_file(GOOD, name="good.json")
    check_eq(p.returncode, 0, "--check on a valid file (stderr: %r)" % p.stderr)


def test_check_bad_route_host():
    cfg = mutate(lambda c: c["routes"][0]["match"].__setitem__("host", "bad host!"))
    expect_error(check_file(cfg), "routes[0].match.host")


def test_check_top_level_key_is_bare():
    cfg = mutate(lambda c: c.__setitem__("workers", -1))
    expect_error(check_file(cfg), "workers")


def test_check_unknown_top_level_key():
    cfg = mutate(lambda c: c.__setitem__("wokers", 1))
    expect_error(check_file(cfg), "wokers")


def test_check_unknown_nested_key():
    cfg = mutate(lambda c: c["clusters"][0].__setitem__("lb_polcy", "random"))
    expect_error(check_file(cfg), "clusters[0].lb_polcy")


def test_check_reports_every_error():
    def m(c):
        c["workers"] = -1
        c["routes"][1]["match"]["host"] = "bad host!"
    p = check_file(mutate(m))
    expect_error(p, "workers")
    expect_error(p, "routes[1].match.host")


def test_check_route_needs_exactly_one_target():
    cfg = mutate(lambda c: c["routes"][0].__setitem__("rollout", "shop"))
    p = check_file(cfg)
    check_eq(p.returncode, 1, "route with cluster and rollout (stderr %r)" % p.stderr)
    check(any(l.startswith("bad.json: routes[0]") for l in error_lines(p)),
          "error names routes[0]: %r" % error_lines(p))


def test_check_route_without_target():
    cfg = mutate(lambda c: c["routes"][0].pop("cluster"))
    p = check_file(cfg)
    check_eq(p.returncode, 1, "route without any target (stderr %r)" % p.stderr)
    check(any(l.startswith("bad.json: routes[0]") for l in error_lines(p)), error_lines(p))


def test_check_unknown_cluster_reference():
    cfg = mutate(lambda c: c["routes"][0].__setitem__("cluster", "nope"))
    p = check_file(cfg)
    check_eq(p.returncode, 1, "route to an undefined cluster (stderr %r)" % p.stderr)
    check(any(l.startswith("bad.json: routes[0].cluster") for l in error_lines(p)),
          error_lines(p))


def test_check_bad_lb_policy_and_address():
    def m(c):
        c["clusters"][0]["lb_policy"] = "fastest"
        c["clusters"][0]["endpoints"][1]["address"] = "not-an-address"
    p = check_file(mutate(m))
    expect_error(p, "clusters[0].lb_policy")
    expect_error(p, "clusters[0].endpoints[1].address")


def test_check_duration_type():
    cfg = mutate(lambda c: c.__setitem__("drain_timeout_ms", "15s"))
    expect_error(check_file(cfg), "drain_timeout_ms")


def test_check_invalid_json():
    p = check_file(None, raw='{"workers": 1,,}')
    check_eq(p.returncode, 1, "--check on broken JSON")
    check(any(l.startswith("bad.json:") for l in error_lines(p)),
          "error line names the file: %r" % error_lines(p))


def test_check_missing_file():
    d = tmpdir()
    p = run_cmd([WEIR_BIN, "--check", "-c", "missing.json"], cwd=d)
    check_eq(p.returncode, 1, "--check on a missing file")
    check("missing.json" in p.stderr, "names the file: %r" % p.stderr)


def test_run_with_invalid_config_fails():
    d = tmpdir()
    write_file(os.path.join(d, "bad.json"), json.dumps(mutate(lambda c: c.update(wokers=1))))
    p = run_cmd([WEIR_BIN, "-c", "bad.json"], cwd=d, timeout=30)
    check(p.returncode != 0, "weir -c with an invalid file must not start (rc %d)" % p.returncode)


def _busy_port_config(busy, admin):
    cfg = mutate(lambda c: None)
    cfg["admin"]["address"] = "127.0.0.1:%d" % admin
    cfg["listeners"][0]["address"] = "127.0.0.1:%d" % busy
    return cfg


def test_run_with_busy_ports_fails_cleanly():
    """A listener or admin port already taken: a clear error, exit 1, no crash."""
    for which in ("listener", "admin"):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        other = free_port()
        cfg = _busy_port_config(taken, other) if which == "listener" else \
            _busy_port_config(other, taken)
        d = tmpdir()
        write_file(os.path.join(d, "w.json"), json.dumps(cfg))
        p = run_cmd([WEIR_BIN, "-c", "w.json"], cwd=d, timeout=30)
        holder.close()
        check_eq(p.returncode, 1, "%s port in use: exit code (stderr %r)" % (which, p.stderr[-300:]))
        check("in use" in p.stderr, "%s port in use is named: %r" % (which, p.stderr[-300:]))


def test_weirctl_version():
    p = run_cmd([WEIRCTL_BIN, "--version"])
    check_eq(p.returncode, 0, "weirctl --version")
    check(re.search(r"\d+\.\d+", p.stdout + p.stderr), "a version in %r" % p.stdout)


def test_weirctl_check():
    p = check_file(GOOD, name="good.json", prog=[WEIRCTL_BIN, "check"])
    check_eq(p.returncode, 0, "weirctl check on a valid file (stderr %r)" % p.stderr)
    bad = mutate(lambda c: c.__setitem__("wokers", 1))
    p = check_file(bad, prog=[WEIRCTL_BIN, "check"])
    expect_error(p, "wokers")


def test_weirctl_unknown_command():
    p = run_cmd([WEIRCTL_BIN, "frobnicate"])
    check_eq(p.returncode, 2, "weirctl unknown command")


def test_weirctl_unknown_option():
    p = run_cmd([WEIRCTL_BIN, "rollout", "status", "shop", "--bogus"])
    check_eq(p.returncode, 2, "weirctl unknown option")


def test_weirctl_percent_out_of_range():
    p = run_cmd([WEIRCTL_BIN, "rollout", "set", "shop", "--green", "101",
                 "--admin", "http://127.0.0.1:%d" % free_port()])
    check_eq(p.returncode, 2, "weirctl rollout set --green 101")


if __name__ == "__main__":
    run()
