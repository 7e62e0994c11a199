#!/usr/bin/python3
"""`weirctl rollout ... --consul URL` end to end: weirctl writes the KV key weir/rollouts/NAME
of the fake Consul agent, and a weir with the Consul provider shifts its traffic from it."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))

from consul_fake import FakeConsul  # noqa: E402
from harness import *  # noqa: E402,F403

TEST_TIMEOUT = 120
BLUE = GREEN = WEB = None


def setup_module():
    global BLUE, GREEN, WEB
    WEB, BLUE, GREEN = (Origin(n).start() for n in ("web", "blue", "green"))


class _Fake:
    def __init__(self, **kw):
        self.f = FakeConsul(**kw).start()

    def stop(self):
        self.f.close()


def fake(**kw):
    from harness import _register
    fk = _Fake(**kw)
    _register(fk)
    return fk.f


def weirctl(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([WEIRCTL_BIN] + list(args), capture_output=True, text=True, timeout=60,
                       env=e)
    return p.returncode, p.stdout + p.stderr


def setup_consul(token=None):
    f = fake(tokens={token: "write"}) if token else fake()
    f.register("web", id="web-1", node="n1", address=WEB.host, port=WEB.port,
               tags=["weir.expose=true", "weir.host=shop.test"])
    f.register("web-blue", id="b-1", node="n1", address=BLUE.host, port=BLUE.port, tags=[])
    f.register("web-green", id="g-1", node="n1", address=GREEN.host, port=GREEN.port, tags=[])
    f.kv_put("weir/rollouts/web", json.dumps({"blue": "web-blue", "green": "web-green",
                                              "green_weight": 0}))
    return f


def consul_weir(f, token_file=None):
    d = {"type": "consul", "address": f.url, "wait_ms": 2000}
    w = Weir({"routes": [], "clusters": [], "discovery": [d]})
    if token_file:
        d["token_file"] = token_file
    w.start()
    wait_for(lambda: w.config_version() != "1", timeout=10, what="the first Consul view")
    return w


def shares(w, n=100):
    seen = {}
    for _ in range(n):
        r = w.http("GET", "/", headers={"Host": "shop.test"})
        check_eq(r.status, 200, "GET through the rollout")
        seen[r.header("X-Origin")] = seen.get(r.header("X-Origin"), 0) + 1
    return seen


def kv(f):
    v = f.kv_get("weir/rollouts/web")
    return json.loads(v.decode() if isinstance(v, bytes) else v)


def test_set_promote_rollback_through_kv():
    f = setup_consul()
    w = consul_weir(f)
    wait_for(lambda: shares(w, 10) == {"blue": 10}, timeout=5, what="all blue at 0")
    rc, out = weirctl("rollout", "set", "web", "--green", "50", "--consul", f.url)
    check_eq(rc, 0, "set --consul: %s" % out)
    check_eq(kv(f), {"blue": "web-blue", "green": "web-green", "green_weight": 50},
             "KV value after set (blue/green kept)")
    wait_for(lambda: set(shares(w, 20)) == {"blue", "green"}, timeout=5, what="split traffic")
    s = shares(w, 200)
    check(60 <= s.get("green", 0) <= 140, "green share at 50%%: %r" % s)
    rc, out = weirctl("--consul", f.url, "rollout", "promote", "web")
    check_eq(rc, 0, "promote --consul: %s" % out)
    wait_for(lambda: shares(w, 10) == {"green": 10}, timeout=5, what="all green")
    rc, out = weirctl("rollout", "rollback", "web", "--consul=" + f.url)
    check_eq(rc, 0, "rollback --consul: %s" % out)
    wait_for(lambda: shares(w, 10) == {"blue": 10}, timeout=5, what="all blue after rollback")
    rc, out = weirctl("rollout", "status", "web", "--consul", f.url, "--json")
    check_eq(rc, 0, "status --consul: %s" % out)
    check('"green_weight": 0' in out or '"green_weight":0' in out, "status shows 0: %s" % out)


def test_missing_key_and_token():
    f = setup_consul(token="s3cret")
    tf = os.path.join(tmpdir(), "token")
    write_file(tf, "s3cret\n")
    w = consul_weir(f, token_file=tf)
    rc, out = weirctl("rollout", "set", "nope", "--green", "10", "--consul", f.url,
                      "--token-file", tf)
    check_eq(rc, 1, "a missing KV key fails: %s" % out)
    bad = os.path.join(tmpdir(), "bad")
    write_file(bad, "wrong\n")
    rc, out = weirctl("rollout", "set", "web", "--green", "10", "--consul", f.url,
                      "--token-file", bad)
    check_eq(rc, 1, "a wrong token fails: %s" % out)
    check_eq(kv(f)["green_weight"], 0, "nothing written with a wrong token")
    rc, out = weirctl("rollout", "set", "web", "--green", "100", "--consul", f.url,
                      "--token-file", tf)
    check_eq(rc, 0, "the right token: %s" % out)
    wait_for(lambda: shares(w, 10) == {"green": 10}, timeout=5, what="all green with ACLs")


if __name__ == "__main__":
    run()
