#!/usr/bin/python3
"""Rollouts through the Kubernetes API: a Service annotated weir.io/blue, weir.io/green and
weir.io/green-weight is a rollout in every weir watching the cluster. `weirctl rollout
set/promote/rollback/status/step --kubernetes` and `kubectl weir ...` (PATH with a kubectl-weir
symlink to weirctl, the operator's way) patch the annotation, and two weir processes shift
their traffic within a second. A weight set through one weir's admin API lasts until the
annotation changes (INTERFACES.md §2). Runs against the fake API server with the real kubectl;
skips (exit 0) only without kubectl."""

import json
import os
import subprocess
import time

from harness import WEIRCTL_BIN, check, check_eq, run, tmpdir, wait_for
from k8s_common import (KUBECTL, SLOW, Kube, endpoint, get_host, origins, service,
                        skip_without_kubectl, slice_, wait_routed, weir_for)

TEST_TIMEOUT = 120

skip_without_kubectl()

ROLLOUT = "default/shop"


def setup(kube, weight=None, sticky=None, green_ready=True):
    """Services shop (the rollout), shop-blue and shop-green, each colour with one origin."""
    port, _ = origins(2)  # o1 on 127.0.0.2 is blue, o2 on 127.0.0.3 is green
    ann = {"weir.io/expose": "true", "weir.io/host": "shop.example.com",
           "weir.io/blue": "shop-blue", "weir.io/green": "shop-green"}
    if weight is not None:
        ann["weir.io/green-weight"] = str(weight)
    if sticky is not None:
        ann["weir.io/sticky"] = sticky
    kube.apply(service("shop", annotations=ann), service("shop-blue"), service("shop-green"),
               slice_("shop-blue-1", "shop-blue", port, [endpoint("127.0.0.2")]),
               slice_("shop-green-1", "shop-green", port,
                      [endpoint("127.0.0.3", ready=green_ready)]))
    return port


def rollout_of(w, name=ROLLOUT):
    for r in w.admin("GET", "/rollouts").json()["rollouts"]:
        if r["name"] == name:
            return r
    return None


def weight_of(w):
    r = rollout_of(w)
    return r["green_weight"] if r else None


def green_share(w, n=200):
    """Share of n requests (on fresh connections, no cookie) answered by the green origin."""
    g = 0
    for _ in range(n):
        st, origin = get_host(w, "shop.example.com")
        check_eq(st, 200, "status")
        g += origin == "o2"
    return g / n


def ctl(kube, *args, argv0=None, extra_env=None):
    env = dict(kube.env)
    env.update(extra_env or {})
    return subprocess.run([argv0 or WEIRCTL_BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=120 * SLOW, text=True)


def two_weirs(kube):
    ws = [weir_for(kube) for _ in range(2)]
    for w in ws:
        wait_for(lambda: rollout_of(w) is not None, timeout=10 * SLOW, what="the rollout")
        wait_routed(w, "shop.example.com")
    return ws


def test_annotations_make_a_rollout():
    kube = Kube()
    setup(kube, weight=20)
    w = weir_for(kube)
    wait_for(lambda: rollout_of(w) is not None, timeout=10 * SLOW, what="the rollout")
    r = rollout_of(w)
    check_eq((r["blue"], r["green"], r["green_weight"]),
             ("default/shop-blue:80", "default/shop-green:80", 20))
    share = green_share(w)
    check(0.08 <= share <= 0.35, "green share %.2f for weight 20" % share)


def test_weirctl_set_shifts_two_weirs_within_a_second():
    kube = Kube()
    setup(kube)
    ws = two_weirs(kube)
    check_eq([weight_of(w) for w in ws], [0, 0], "weights before")
    check_eq(green_share(ws[0], 50), 0.0, "no green request at weight 0")
    t0 = time.monotonic()
    p = ctl(kube, "rollout", "set", "shop", "--green", "20", "--kubernetes")
    check_eq(p.returncode, 0, "weirctl rc (stderr %r)" % p.stderr)
    t1 = time.monotonic()
    check("green_weight 20" in p.stdout, p.stdout)
    wait_for(lambda: all(weight_of(w) == 20 for w in ws), timeout=5 * SLOW, interval=0.005,
             what="both weirs at 20")
    print("info: weirctl rollout set --kubernetes: %.0f ms for weirctl, both weirs serving "
          "%.0f ms after it returned (target < 1 s)"
          % ((t1 - t0) * 1000, (time.monotonic() - t1) * 1000))
    check(time.monotonic() - t1 < 3 * SLOW, "converged late")
    for w in ws:
        share = green_share(w)
        check(0.08 <= share <= 0.35, "green share %.2f for weight 20" % share)
    ann = kube.get("service", "shop")["metadata"]["annotations"]
    check_eq(ann["weir.io/green-weight"], "20", "the annotation")


def test_kubectl_weir_plugin():
    kube = Kube()
    setup(kube, weight=10)
    ws = two_weirs(kube)
    bindir = tmpdir()
    os.symlink(WEIRCTL_BIN, os.path.join(bindir, "kubectl-weir"))
    env = {"PATH": bindir + ":" + os.environ.get("PATH", "")}
    p = kube_plugin(kube, env, "rollout", "promote", "shop", "--kubernetes")
    check_eq(p.returncode, 0, "kubectl weir promote (stderr %r)" % p.stderr)
    wait_for(lambda: all(weight_of(w) == 100 for w in ws), timeout=5 * SLOW, interval=0.005,
             what="both weirs at 100")
    check_eq(green_share(ws[1], 50), 1.0, "only green at 100")
    p = kube_plugin(kube, env, "rollout", "set", "shop", "--green", "30", "--kubernetes",
                    "--namespace", "default")
    check_eq(p.returncode, 0, "kubectl weir set (stderr %r)" % p.stderr)
    wait_for(lambda: all(weight_of(w) == 30 for w in ws), timeout=5 * SLOW, what="30")
    # run as the kubectl plugin, the cluster is the default target
    p = kube_plugin(kube, env, "rollout", "rollback", "shop")
    check_eq(p.returncode, 0, "kubectl weir rollback without --kubernetes (%r)" % p.stderr)
    wait_for(lambda: all(weight_of(w) == 0 for w in ws), timeout=5 * SLOW, what="0")
    p = kube_plugin(kube, env, "rollout", "status", "shop", "--kubernetes", "--json",
                    "--sample", "0")
    check_eq(p.returncode, 0, "kubectl weir status (stderr %r)" % p.stderr)
    st = json.loads(p.stdout)
    check_eq(st.get("green_weight"), 0, "status green_weight (%r)" % st)
    check(json.dumps(st).count("shop-green") >= 1, "status names the green Service: %r" % st)


def kube_plugin(kube, env, *args):
    e = dict(kube.env)
    e.update(env)
    return subprocess.run([KUBECTL, "weir"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=e, timeout=120 * SLOW, text=True)


def test_status_shows_the_annotations_and_endpoint_health():
    kube = Kube()
    setup(kube, weight=25, sticky="true")
    p = ctl(kube, "rollout", "status", "shop", "--kubernetes", "--sample", "0")
    check_eq(p.returncode, 0, "status rc (stderr %r)" % p.stderr)
    out = p.stdout
    for want in ("shop-blue", "shop-green", "25"):
        check(want in out, "%r in the status output:\n%s" % (want, out))
    p = ctl(kube, "rollout", "status", "shop", "--kubernetes", "--json", "--sample", "0")
    st = json.loads(p.stdout)
    check_eq(st["green_weight"], 25, "json green_weight")


def test_step_rolls_back_when_green_has_no_ready_endpoint():
    kube = Kube()
    setup(kube, green_ready=False)
    w = weir_for(kube)
    wait_for(lambda: rollout_of(w) is not None, timeout=10 * SLOW, what="the rollout")
    p = ctl(kube, "rollout", "step", "shop", "--steps", "10,50", "--interval", "1s",
            "--kubernetes")
    check_eq(p.returncode, 1, "step rolled back (stdout %r, stderr %r)" % (p.stdout, p.stderr))
    check_eq(kube.get("service", "shop")["metadata"]["annotations"].get("weir.io/green-weight"),
             "0", "annotation back to 0")
    wait_for(lambda: weight_of(w) == 0, timeout=5 * SLOW, what="weir back at 0")


def test_step_reaches_the_last_step_with_a_healthy_green():
    kube = Kube()
    setup(kube)
    w = weir_for(kube)
    wait_for(lambda: rollout_of(w) is not None, timeout=10 * SLOW, what="the rollout")
    p = ctl(kube, "rollout", "step", "shop", "--steps", "10,40", "--interval", "1s",
            "--kubernetes")
    check_eq(p.returncode, 0, "step rc (stdout %r, stderr %r)" % (p.stdout, p.stderr))
    wait_for(lambda: weight_of(w) == 40, timeout=5 * SLOW, what="weir at 40")


def test_a_service_that_is_no_rollout_is_refused():
    kube = Kube()
    kube.apply(service("plain"))
    p = ctl(kube, "rollout", "set", "plain", "--green", "20", "--kubernetes")
    check_eq(p.returncode, 1, "rc")
    check("not a rollout" in p.stderr, p.stderr)
    check("weir.io/green-weight" not in kube.get("service", "plain")["metadata"].get(
        "annotations", {}), "not annotated")
    p = ctl(kube, "rollout", "set", "missing", "--green", "20", "--kubernetes", "-n", "default")
    check_eq(p.returncode, 1, "rc")
    check("no Service default/missing" in p.stderr, p.stderr)


def test_admin_weight_lasts_until_the_annotation_changes():
    kube = Kube()
    setup(kube, weight=10)
    ws = two_weirs(kube)
    r = ws[0].admin("PUT", "/rollouts/" + ROLLOUT.replace("/", "%2F"), {"green_weight": 70})
    check_eq(r.status, 200, "PUT /rollouts (%r)" % r.body)
    check_eq((weight_of(ws[0]), weight_of(ws[1])), (70, 10), "one weir changed")
    # an unrelated change of the Service: the annotation did not change, the live weight stays
    kube.kubectl("annotate", "service", "shop", "example.com/unrelated=1")
    kube.kubectl("annotate", "--overwrite", "service", "shop", "weir.io/path=/")
    time.sleep(0.5)
    check_eq(weight_of(ws[0]), 70, "live weight kept")
    # the annotation changes: both converge to it
    p = ctl(kube, "rollout", "set", "shop", "--green", "40", "--kubernetes")
    check_eq(p.returncode, 0, "weirctl rc (stderr %r)" % p.stderr)
    wait_for(lambda: [weight_of(w) for w in ws] == [40, 40], timeout=5 * SLOW,
             what="both at the annotation's 40")


if __name__ == "__main__":
    run()
