#!/usr/bin/python3
"""The kubernetes discovery provider against the fake API server (tests/fakes/
kube_apiserver.py), driven the operator's way with the REAL kubectl (apply, annotate, patch,
create secret tls): an annotated Service becomes routable, EndpointSlice changes (ready,
terminating, removed), Ingress objects and classes, TLS from Secrets (SNI), namespaces,
in-cluster settings with a rotating token, a rolling update under load with zero failed
requests, the API server down for 10 s and a watch ended by 410 Gone, leader election for
the Ingress status, and the RBAC the code needs (every request weir made, recorded by the fake,
against the rules of the manifests in deploy/). Skips (exit 0) only without kubectl."""

import glob
import os
import signal
import ssl
import subprocess
import threading
import time

import harness
from harness import check, check_eq, free_port, metric, run, tmpdir, wait_for, write_file
from k8s_common import (REQUESTS, SLOW, Kube, cluster_of, endpoint, endpoints_of, get_host,
                        origins, service, skip_without_kubectl, slice_, wait_routed, weir_for)

TEST_TIMEOUT = 120

skip_without_kubectl()


# ---- an annotated Service ------------------------------------------------------------------

def test_annotate_makes_a_service_routable():
    kube = Kube()
    port, (o1, o2) = origins(2)
    kube.apply(service("shop"),
               slice_("shop-1", "shop", port, [endpoint("127.0.0.2"), endpoint("127.0.0.3")]))
    w = weir_for(kube)
    check_eq(get_host(w, "shop.example.com")[0], 404, "not exposed yet")
    kube.kubectl("annotate", "service", "shop", "weir.io/expose=true",
                 "weir.io/host=shop.example.com")
    dt = wait_routed(w, "shop.example.com")
    print("info: kubectl annotate -> routable in %.0f ms (target < 1 s)" % (dt * 1000))
    check(dt < 5 * SLOW, "routable only after %.2f s" % dt)
    seen = {get_host(w, "shop.example.com")[1] for _ in range(20)}
    check_eq(seen, {"o1", "o2"}, "both endpoints serve")
    c = cluster_of(w, "default/shop:80")
    check(c is not None, "cluster default/shop:80 in /clusters")
    check_eq(c["source"], "kubernetes")
    # path annotation: only /api/ now
    kube.kubectl("annotate", "--overwrite", "service", "shop", "weir.io/path=/api/")
    wait_routed(w, "shop.example.com", "/echo", want=404)
    check_eq(get_host(w, "shop.example.com", "/api/echo")[0], 200)
    # un-exposing removes the route
    kube.kubectl("annotate", "service", "shop", "weir.io/expose-")
    wait_routed(w, "shop.example.com", "/api/echo", want=404)


def test_bad_annotation_is_logged_and_skips_only_that_service():
    kube = Kube()
    port, (o1,) = origins(1)
    kube.apply(service("good", annotations={"weir.io/expose": "true",
                                            "weir.io/host": "good.example.com"}),
               service("bad", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "bad_host!"}),
               slice_("good-1", "good", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube)
    wait_routed(w, "good.example.com")
    wait_for(lambda: "weir.io/host \"bad_host!\" is not a host name" in w.log(), timeout=5,
             what="a log line for the bad Service")
    check_eq(w.log().count("bad_host!"), 1, "one log line, not one per build")
    # more changes do not repeat the line
    kube.kubectl("annotate", "service", "good", "weir.io/path=/")
    time.sleep(0.3)
    check_eq(w.log().count("bad_host!"), 1, "still one log line")


# ---- EndpointSlices ------------------------------------------------------------------------

def test_endpointslice_changes():
    kube = Kube()
    port, (o1, o2, o3) = origins(3)
    kube.apply(service("web", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "web.example.com"}),
               slice_("web-1", "web", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube)
    wait_routed(w, "web.example.com")
    a2, a3, a4 = ("127.0.0.%d:%d" % (i, port) for i in (2, 3, 4))
    check_eq(endpoints_of(w, "default/web:80"), [(a2, "healthy")])

    # a second slice adds an endpoint; a not-ready endpoint is left out
    kube.apply(slice_("web-2", "web", port, [endpoint("127.0.0.3"),
                                              endpoint("127.0.0.4", ready=False)]))
    wait_for(lambda: endpoints_of(w, "default/web:80") == [(a2, "healthy"), (a3, "healthy")],
             timeout=5, what="two endpoints")
    # terminating: draining, no new requests
    kube.apply(slice_("web-1", "web", port, [endpoint("127.0.0.2", ready=False,
                                                       terminating=True)]))
    wait_for(lambda: endpoints_of(w, "default/web:80") == [(a2, "draining"), (a3, "healthy")],
             timeout=5, what="127.0.0.2 draining")
    seen = {get_host(w, "web.example.com")[1] for _ in range(10)}
    check_eq(seen, {"o2"}, "only the ready endpoint gets requests")
    # deleted slice: gone
    kube.kubectl("delete", "endpointslice", "web-1")
    wait_for(lambda: endpoints_of(w, "default/web:80") == [(a3, "healthy")], timeout=5,
             what="web-1 gone")
    # no endpoint at all: 503, the cluster stays
    kube.kubectl("delete", "endpointslice", "web-2")
    wait_routed(w, "web.example.com", want=503)


def test_port_annotation_picks_the_slice_port_by_name():
    kube = Kube()
    port, (o1,) = origins(1)
    admin_port = free_port()
    kube.apply(service("multi", annotations={"weir.io/expose": "true",
                                             "weir.io/host": "multi.example.com",
                                             "weir.io/port": "web"},
                       ports=[{"name": "admin", "port": 9000, "targetPort": 9000},
                              {"name": "web", "port": 80, "targetPort": "http"}]),
               {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "multi-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "multi"}},
                "addressType": "IPv4", "endpoints": [endpoint("127.0.0.2")],
                "ports": [{"name": "admin", "port": admin_port, "protocol": "TCP"},
                          {"name": "web", "port": port, "protocol": "TCP"}]})
    w = weir_for(kube)
    wait_routed(w, "multi.example.com")
    check_eq(endpoints_of(w, "default/multi:80"), [("127.0.0.2:%d" % port, "healthy")])
    check(cluster_of(w, "default/multi:9000") is None, "the admin port is not exposed")


# ---- Ingress -------------------------------------------------------------------------------

def ingress(name, rules, cls="weir", tls=None, ns="default", annotations=None):
    spec = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if tls is not None:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": spec}


def rule(host, *paths):
    return {"host": host, "http": {"paths": [
        {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": n}}}}
        for (p, t, s, n) in paths]}}


def test_ingress_objects():
    kube = Kube()
    port, (o1, o2) = origins(2)
    kube.apply(service("api"), service("web"),
               slice_("api-1", "api", port, [endpoint("127.0.0.2")]),
               slice_("web-1", "web", port, [endpoint("127.0.0.3")]))
    w = weir_for(kube)
    kube.apply(ingress("shop", [rule("shop.example.com",
                                     ("/api", "Prefix", "api", 80),
                                     ("/", "Prefix", "web", 80))]),
               ingress("other", [rule("other.example.com", ("/", "Prefix", "web", 80))],
                       cls="nginx"))
    wait_routed(w, "shop.example.com", "/api/echo")
    check_eq(get_host(w, "shop.example.com", "/api/echo")[1], "o1")
    check_eq(get_host(w, "shop.example.com", "/api")[1], "o1", "Prefix /api matches /api")
    check_eq(get_host(w, "shop.example.com", "/apix/echo")[1], "o2",
             "Prefix is element-wise: /apix is not under /api")
    check_eq(get_host(w, "shop.example.com", "/echo")[1], "o2")
    check_eq(get_host(w, "other.example.com")[0], 404, "another class is not weir's")
    # an IngressClass of weir's controller makes "nginx" weir's
    kube.apply({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "nginx"},
                "spec": {"controller": "weir.io/ingress-controller"}})
    wait_routed(w, "other.example.com")
    # the backend port by name
    kube.kubectl("patch", "ingress", "shop", "--type=json", "-p",
                 '[{"op": "replace", "path": "/spec/rules/0/http/paths/0/backend/service/port",'
                 ' "value": {"name": "http"}}]')
    time.sleep(0.2)
    check_eq(get_host(w, "shop.example.com", "/api/echo")[1], "o1")
    kube.kubectl("delete", "ingress", "shop")
    wait_routed(w, "shop.example.com", "/api/echo", want=404)


# ---- TLS from Secrets ----------------------------------------------------------------------

def make_cert(d, cn):
    crt, key = os.path.join(d, cn + ".crt"), os.path.join(d, cn + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt, "-days", "2",
                    "-subj", "/CN=" + cn, "-addext", "subjectAltName=DNS:" + cn],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def curl_sni(port, host, cafile, path="/echo"):
    p = subprocess.run(["curl", "-sS", "--max-time", "5", "--resolve",
                        "%s:%d:127.0.0.1" % (host, port), "--cacert", cafile,
                        "-o", "/dev/null", "-w", "%{http_code}",
                        "https://%s:%d%s" % (host, port, path)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.stdout.decode().strip(), p.stderr.decode()


def test_tls_from_secrets():
    kube = Kube()
    d = tmpdir()
    port, (o1,) = origins(1)
    dcrt, dkey = make_cert(d, "default.test")
    scrt, skey = make_cert(d, "shop.example.com")
    icrt, ikey = make_cert(d, "ing.example.com")
    tls_port = free_port()
    kube.apply(service("shop", annotations={"weir.io/expose": "true",
                                            "weir.io/host": "shop.example.com",
                                            "weir.io/tls-secret": "shop-tls"}),
               service("web"),
               slice_("shop-1", "shop", port, [endpoint("127.0.0.2")]),
               slice_("web-1", "web", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube, extra={"listeners": [
        {"name": "web", "address": "127.0.0.1:%d" % free_port()},
        {"name": "secure", "address": "127.0.0.1:%d" % tls_port,
         "tls": {"certificates": [{"cert_file": dcrt, "key_file": dkey}]}}]})
    wait_routed(w, "shop.example.com")
    code, err = curl_sni(tls_port, "shop.example.com", scrt)
    check(code != "200", "no Secret yet: the default certificate (curl: %s %s)" % (code, err))
    kube.kubectl("create", "secret", "tls", "shop-tls", "--cert", scrt, "--key", skey)
    wait_for(lambda: curl_sni(tls_port, "shop.example.com", scrt)[0] == "200", timeout=5 * SLOW,
             what="shop.example.com served with the Secret's certificate")
    # an Ingress's tls section
    kube.kubectl("create", "secret", "tls", "ing-tls", "--cert", icrt, "--key", ikey)
    kube.apply(ingress("ing", [rule("ing.example.com", ("/", "Prefix", "web", 80))],
                       tls=[{"hosts": ["ing.example.com"], "secretName": "ing-tls"}]))
    wait_for(lambda: curl_sni(tls_port, "ing.example.com", icrt)[0] == "200", timeout=5 * SLOW,
             what="ing.example.com served with the Ingress Secret's certificate")
    # a Secret replaced by a bad one: logged, the route keeps working
    kube.kubectl("create", "secret", "generic", "bad-tls", "--from-literal=tls.crt=x",
                 "--from-literal=tls.key=y")
    kube.kubectl("annotate", "--overwrite", "service", "shop", "weir.io/tls-secret=bad-tls")
    wait_for(lambda: "Secret default/bad-tls is not of type kubernetes.io/tls" in w.log(),
             timeout=5, what="the bad Secret reported")
    check_eq(get_host(w, "shop.example.com")[0], 200)
    # weir watched only the Secrets it needed, each by name (watches are logged when they end)
    kube.k.close_watches()
    wait_for(lambda: any("/secrets" in r["path"] and "watch=1" in r["query"]
                         for r in kube.weir_requests()), timeout=5, what="a Secret watch")
    names = {r["query"] for r in kube.weir_requests() if "/secrets" in r["path"]}
    check(names and all("fieldSelector=metadata.name" in q for q in names),
          "Secrets are read by name only: %r" % names)


# ---- namespaces ----------------------------------------------------------------------------

def test_only_the_configured_namespaces():
    kube = Kube()
    port, (o1,) = origins(1)
    kube.kubectl("create", "namespace", "team-a")
    kube.kubectl("create", "namespace", "team-b")
    for ns in ("team-a", "team-b"):
        kube.apply(service("app", ns=ns, annotations={"weir.io/expose": "true",
                                                      "weir.io/host": ns + ".example.com"}),
                   slice_("app-1", "app", port, [endpoint("127.0.0.2")], ns=ns))
    w = weir_for(kube, namespaces=["team-a"])
    wait_routed(w, "team-a.example.com")
    check_eq(get_host(w, "team-b.example.com")[0], 404)
    paths = {r["path"] for r in kube.weir_requests()}
    check(not any(p.startswith("/api/v1/services") for p in paths),
          "no cluster-wide Service watch: %r" % sorted(paths))


# ---- in-cluster ----------------------------------------------------------------------------

def test_in_cluster_settings_and_a_rotated_token():
    kube = Kube()
    port, (o1,) = origins(1)
    sa = kube.k.write_serviceaccount()
    kube.apply(service("shop", annotations={"weir.io/expose": "true",
                                            "weir.io/host": "shop.example.com"}),
               slice_("shop-1", "shop", port, [endpoint("127.0.0.2")]))
    u = kube.k.url.rsplit(":", 1)
    w = weir_for(kube, kubeconfig=None,
                 env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": u[1],
                      "WEIR_K8S_SERVICEACCOUNT_DIR": sa})
    wait_routed(w, "shop.example.com")
    # the token rotates: the file is replaced, the API server accepts only the new one
    write_file(os.path.join(sa, "token.new"), "rotated-token")
    os.rename(os.path.join(sa, "token.new"), os.path.join(sa, "token"))
    kube.k.token = "rotated-token"
    kube.k.close_watches()  # watches reconnect (as after timeoutSeconds)
    kube.kubectl("--token", "rotated-token", "annotate", "--overwrite", "service", "shop",
                 "weir.io/host=rotated.example.com")
    wait_routed(w, "rotated.example.com")
    check("Unauthorized" not in w.log() and "HTTP 401" not in w.log(),
          "the rotated token was used at once")


# ---- a rolling update under load -----------------------------------------------------------

class Load:
    """GET requests in a loop (bounded in time and count) on keep-alive connections."""

    def __init__(self, w, host, max_s=60, max_n=200000):
        self.w, self.host, self.max_s, self.max_n = w, host, max_s, max_n
        self.ok = self.failed = 0
        self.errors = []
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        t0 = time.monotonic()
        conn = None
        while not self.stop_ev.is_set() and time.monotonic() - t0 < self.max_s and \
                self.ok + self.failed < self.max_n:
            try:
                if conn is None:
                    conn = self.w.conn(timeout=10)
                conn.request("GET", "/echo", headers={"Host": self.host})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(r.status)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001
                self.failed += 1
                self.errors.append(repr(e))
                conn = None

    def start(self):
        self.th.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.th.join(30)


def test_rolling_update_under_load_has_no_failed_request():
    kube = Kube()
    port, olds = origins(2, first=2, name="old")
    _, news = origins(2, first=4, name="new")
    # the new origins share the old ones' port number on other addresses
    for o in news:
        o.stop()
    news = [harness.Origin("new%d" % i, host="127.0.0.%d" % (4 + i), port=port).start()
            for i in range(2)]
    kube.apply(service("app", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "app.example.com"}),
               slice_("app-1", "app", port, [endpoint("127.0.0.2"), endpoint("127.0.0.3")]))
    w = weir_for(kube, workers=2)
    wait_routed(w, "app.example.com")
    loads = [Load(w, "app.example.com").start() for _ in range(3)]
    try:
        time.sleep(0.5)
        # surge: the new pods become ready
        kube.apply(slice_("app-1", "app", port, [endpoint("127.0.0.2"), endpoint("127.0.0.3"),
                                                 endpoint("127.0.0.4"), endpoint("127.0.0.5")]))
        time.sleep(0.5)
        # the old pods terminate: not ready, terminating (they still answer while draining)
        kube.apply(slice_("app-1", "app", port, [
            endpoint("127.0.0.2", ready=False, terminating=True),
            endpoint("127.0.0.3", ready=False, terminating=True),
            endpoint("127.0.0.4"), endpoint("127.0.0.5")]))
        time.sleep(1.0)
        # then they are gone from the slice, and then they exit
        kube.apply(slice_("app-1", "app", port, [endpoint("127.0.0.4"), endpoint("127.0.0.5")]))
        time.sleep(0.5)
        for o in olds:
            o.stop()
        time.sleep(1.0)
    finally:
        for ld in loads:
            ld.stop()
    ok = sum(ld.ok for ld in loads)
    failed = sum(ld.failed for ld in loads)
    print("info: rolling update: %d requests, %d failed" % (ok + failed, failed))
    check(ok > 100, "the load ran (%d requests)" % ok)
    check_eq(failed, 0, "failed requests (%r)" % [e for ld in loads for e in ld.errors][:5])
    seen = {get_host(w, "app.example.com")[1] for _ in range(10)}
    check_eq(seen, {"new0", "new1"}, "only the new pods serve")


# ---- the API server fails ------------------------------------------------------------------

def test_api_server_down_then_back_and_410_gone():
    kube = Kube()
    port, (o1, o2) = origins(2)
    kube.apply(service("app", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "app.example.com"}),
               slice_("app-1", "app", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube)
    wait_routed(w, "app.example.com")
    version = w.config_version()
    load = Load(w, "app.example.com", max_s=30).start()
    try:
        kube.k.down(10, mode="refuse")
        time.sleep(10.5)
        wait_for(lambda: not kube.k.is_down(), timeout=5, what="the fake back up")
        check_eq(w.config_version(), version, "nothing was published during the outage")
        # a change after the outage applies (the watches came back, from their RV or a list)
        kube.apply(slice_("app-1", "app", port, [endpoint("127.0.0.2"), endpoint("127.0.0.3")]))
        wait_for(lambda: len(endpoints_of(w, "default/app:80")) == 2, timeout=40 * SLOW,
                 what="a change after the outage")
        # a watch ended by 410 Gone: weir lists again; later changes still apply
        kube.k.compact(expire_watches=True)
        kube.kubectl("annotate", "--overwrite", "service", "app",
                     "weir.io/host=app.example.com,app2.example.com")
        wait_routed(w, "app2.example.com", timeout=10)
    finally:
        load.stop()
    check_eq(load.failed, 0, "requests failed while the API server was away (%r)"
             % load.errors[:5])
    check(load.ok > 50, "the load ran")
    gone = metric(w.metrics(), "weir_discovery_errors_total", reason="gone")
    check(gone is not None and gone >= 1, "weir_discovery_errors_total{reason=gone}: %r" % gone)


def test_hung_api_server_keeps_the_view():
    kube = Kube()
    port, (o1,) = origins(1)
    kube.apply(service("app", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "app.example.com"}),
               slice_("app-1", "app", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube)
    wait_routed(w, "app.example.com")
    kube.k.down(4, mode="hang")
    time.sleep(1)
    check_eq(get_host(w, "app.example.com")[0], 200, "serving during the partition")
    kube.k.up()
    kube.kubectl("annotate", "service", "app", "weir.io/path=/p/")
    wait_routed(w, "app.example.com", "/p/echo", timeout=40)


def test_a_quiet_cluster_is_not_stale():
    # stale_after_ms: nothing changes for longer, but the watches' bookmarks (every second
    # here) keep confirming the view, so /ready stays 200
    kube = Kube(bookmark_interval=0.5)
    port, (o1,) = origins(1)
    kube.apply(service("app", annotations={"weir.io/expose": "true",
                                           "weir.io/host": "app.example.com"}),
               slice_("app-1", "app", port, [endpoint("127.0.0.2")]))
    w = weir_for(kube, stale_after_ms=2000)
    wait_routed(w, "app.example.com")
    time.sleep(4)
    check_eq(w.admin("GET", "/ready").status, 200, "/ready after 4 s without a change")
    check_eq(metric(w.metrics(), "weir_discovery_stale"), 0, "weir_discovery_stale")
    # the API server away for longer than stale_after_ms: stale, and still serving
    kube.k.down(4, mode="refuse")
    wait_for(lambda: w.admin("GET", "/ready").status == 503, timeout=10, what="stale")
    check_eq(get_host(w, "app.example.com")[0], 200, "serving while stale")
    wait_for(lambda: w.admin("GET", "/ready").status == 200, timeout=40 * SLOW,
             what="fresh again after the outage")


# ---- leader election -----------------------------------------------------------------------

def lease_holder(kube):
    try:
        return kube.get("lease", "weir-leader")["spec"].get("holderIdentity")
    except AssertionError:
        return None


def ingress_ips(kube, name):
    st = kube.get("ingress", name).get("status", {}).get("loadBalancer", {})
    return [e.get("ip") or e.get("hostname") for e in st.get("ingress") or []]


def test_leader_election_writes_ingress_status_once():
    kube = Kube()
    port, (o1,) = origins(1)
    kube.apply(service("web"), slice_("web-1", "web", port, [endpoint("127.0.0.2")]),
               ingress("shop", [rule("shop.example.com", ("/", "Prefix", "web", 80))]))
    ws = {}
    for name in ("weir-a", "weir-b"):
        ws[name] = weir_for(kube, env={"POD_NAME": name},
                            publish_address="203.0.113.10,lb.example.com")
    wait_for(lambda: lease_holder(kube) in ws, timeout=20, what="a leader")
    leader = lease_holder(kube)
    other = [n for n in ws if n != leader][0]
    wait_for(lambda: ingress_ips(kube, "shop") == ["203.0.113.10", "lb.example.com"],
             timeout=20, what="the Ingress status written")
    writers = {r["user_agent"] for r in kube.weir_requests()
               if r["path"].endswith("/status") and r["method"] == "PATCH"}
    check_eq(len(writers), 1, "one writer kind")
    patches = [r for r in kube.weir_requests() if r["path"].endswith("/status")]
    check_eq(len(patches), 1, "the status was written once (%r)" % patches)
    # the leader dies without a word; the other takes over once the lease runs out
    ws[leader].proc.send_signal(signal.SIGKILL)
    ws[leader].proc.wait()
    t0 = time.monotonic()
    wait_for(lambda: lease_holder(kube) == other, timeout=40, what="the other weir leading")
    print("info: leader take-over after %.1f s (lease 15 s, retry 5 s)" % (time.monotonic() - t0))
    # proof that the new leader writes: the status is cleared and comes back
    kube.kubectl("patch", "ingress", "shop", "--subresource=status", "--type=merge", "-p",
                 '{"status": {"loadBalancer": {"ingress": null}}}')
    wait_for(lambda: ingress_ips(kube, "shop") == ["203.0.113.10", "lb.example.com"],
             timeout=20, what="the new leader writing the status")
    patches = [r for r in kube.weir_requests() if r["path"].endswith("/status")]
    check_eq(len(patches), 2, "status writes: one per leader (%r)" % patches)
    ws[leader].exit_code = -9  # killed on purpose: the runner must not expect exit 0
    harness._unregister(ws[leader])


# ---- RBAC ----------------------------------------------------------------------------------

# What weir needs, as (verb, group, resource): the rules deploy/ must grant, no more, no less.
EXPECTED_RBAC = {
    ("list", "", "services"), ("watch", "", "services"),
    ("list", "discovery.k8s.io", "endpointslices"), ("watch", "discovery.k8s.io", "endpointslices"),
    ("list", "networking.k8s.io", "ingresses"), ("watch", "networking.k8s.io", "ingresses"),
    ("list", "networking.k8s.io", "ingressclasses"),
    ("watch", "networking.k8s.io", "ingressclasses"),
    ("list", "", "secrets"), ("watch", "", "secrets"),
    ("patch", "networking.k8s.io", "ingresses/status"),
    ("get", "coordination.k8s.io", "leases"), ("create", "coordination.k8s.io", "leases"),
    ("update", "coordination.k8s.io", "leases"),
}


def verb_of(r):
    """(verb, group, resource[/subresource]) of a request, as the API server authorizes it."""
    path, q, m = r["path"], r["query"], r["method"]
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0]
    named = len(rest) > 1
    if len(rest) > 2:
        resource += "/" + rest[2]
    if m == "GET":
        verb = "watch" if "watch=1" in q or "watch=true" in q else ("get" if named else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[m]
    return verb, group, resource


def manifest_rules():
    """(verb, group, resource) granted by the ClusterRoles and Roles under deploy/, or None
    when there is no manifest yet."""
    try:
        import yaml
    except ImportError:
        return None
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy")
    granted, found = set(), False
    for path in glob.glob(os.path.join(root, "**", "*.y*ml"), recursive=True):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not isinstance(doc, dict) or doc.get("kind") not in ("ClusterRole", "Role"):
                    continue
                found = True
                for rl in doc.get("rules") or []:
                    for g in rl.get("apiGroups") or [""]:
                        for res in rl.get("resources") or []:
                            for v in rl.get("verbs") or []:
                                granted.add((v, g, res))
    return granted if found else None


def test_rbac_grants_exactly_what_weir_asked_for():
    # every request weir made in the tests above (the fakes recorded them as they stopped)
    asked = {verb_of(r) for r in REQUESTS if r["user_agent"].startswith("weir/")}
    if not asked:
        print("info: no recorded request (run the whole file for this check)")
        return
    for t in sorted(asked):
        print("info: weir asked for %s %s %s" % (t[0], t[1] or "core", t[2]))
    check(asked <= EXPECTED_RBAC, "weir asked for more than expected: %r"
          % sorted(asked - EXPECTED_RBAC))
    if len(REQUESTS) > 0 and asked != EXPECTED_RBAC:
        print("info: not exercised in this run: %r" % sorted(EXPECTED_RBAC - asked))
    granted = manifest_rules()
    if granted is None:
        print("info: no ClusterRole/Role under deploy/ yet; the rules it needs are the "
              "expected set above")
        return
    check_eq(granted, EXPECTED_RBAC, "the rules of deploy/ (verb, group, resource)")


if __name__ == "__main__":
    run()
