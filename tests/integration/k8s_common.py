"""Shared by the Kubernetes integration tests (95-kubernetes.py, 96-kubernetes-rollout.py):
the fake API server driven by the REAL kubectl, weir with a "kubernetes" discovery entry,
object builders, and the record of every request weir made (for the RBAC check)."""

import json
import os
import shutil
import subprocess
import sys
import time

import harness
from harness import Origin, Weir, check, free_port, tmpdir, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
import kube_apiserver  # noqa: E402

KUBECTL = shutil.which("kubectl")
SLOW = 6 if os.environ.get("WEIR_TEST_VALGRIND") else 1

# (method, path, query, user_agent) of every API request of every fake, gathered when a fake
# stops: the RBAC test compares what weir asked for with the manifests' rules.
REQUESTS = []


class Kube:
    """A FakeKube for one test, with kubectl set up for it; stopped by the runner."""

    def __init__(self, **kw):
        kw.setdefault("bookmark_interval", 1.0)
        self.k = kube_apiserver.FakeKube(**kw).start()
        d = tmpdir()
        self.env = dict(os.environ, KUBECONFIG=self.k.kubeconfig,
                        KUBECACHEDIR=os.path.join(d, "cache"), HOME=d)
        harness._register(self)

    def stop(self):
        REQUESTS.extend(self.k.request_log())
        self.k.stop()

    def kubectl(self, *args, stdin=None, ok=True):
        p = subprocess.run([KUBECTL] + list(args), input=stdin.encode() if stdin else None,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                           timeout=60 * SLOW)
        out, err = p.stdout.decode(), p.stderr.decode()
        if ok and p.returncode != 0:
            raise AssertionError("kubectl %s: rc=%d\n%s%s" % (" ".join(args), p.returncode,
                                                             out, err))
        return out

    def apply(self, *objs):
        """kubectl apply -f - of the objects (a stream of JSON documents)."""
        return self.kubectl("apply", "-f", "-",
                            stdin="\n".join(json.dumps(o) for o in objs))

    def get(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def weir_requests(self):
        return [r for r in self.k.request_log() if r["user_agent"].startswith("weir/")]


def service(name, ns="default", annotations=None, ports=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"selector": {"app": name},
                     "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint(ip, ready=True, terminating=False):
    return {"addresses": [ip],
            "conditions": {"ready": ready, "serving": ready or terminating,
                           "terminating": terminating}}


def slice_(name, svc, port, endpoints, ns="default", port_name="http"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}


def origins(n, first=2, name="o"):
    """<n> test origins on 127.0.0.<first>.. sharing one port (one EndpointSlice port)."""
    port = free_port()
    out = []
    for i in range(n):
        o = Origin("%s%d" % (name, i + 1), host="127.0.0.%d" % (first + i), port=port).start()
        out.append(o)
    return port, out


def weir_for(kube, workers=1, extra=None, env=None, **disc):
    """A weir whose only source is the kubernetes provider of <kube>."""
    d = {"type": "kubernetes", "kubeconfig": kube.k.kubeconfig}
    d.update(disc)
    cfg = {"discovery": [d]}
    cfg.update(extra or {})
    w = Weir(cfg, workers=workers)
    old = {}
    for k, v in (env or {}).items():
        old[k] = os.environ.get(k)
        os.environ[k] = v
    try:
        w.start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return w


def get_host(w, host, path="/echo", timeout=5):
    """(status, X-Origin) of GET <path> with Host <host>; (0, None) on a connection error."""
    try:
        r = w.http("GET", path, headers={"Host": host}, timeout=timeout)
        return r.status, r.header("X-Origin")
    except OSError:
        return 0, None


def wait_routed(w, host, path="/echo", timeout=10, want=200):
    """Waits until <host><path> answers <want>; returns the seconds it took."""
    t0 = time.monotonic()
    wait_for(lambda: get_host(w, host, path, timeout=2)[0] == want, timeout=timeout * SLOW,
             interval=0.005, what="%s%s answering %d" % (host, path, want))
    return time.monotonic() - t0


def cluster_of(w, name):
    for c in w.clusters()["clusters"]:
        if c["name"] == name:
            return c
    return None


def endpoints_of(w, name):
    c = cluster_of(w, name)
    return sorted((e["address"], e["health"]) for e in c["endpoints"]) if c else None


def skip_without_kubectl():
    if KUBECTL is None:
        print("skip: kubectl is not installed")
        sys.exit(0)


def require(cond, msg):
    check(cond, msg)
