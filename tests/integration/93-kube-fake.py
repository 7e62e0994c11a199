"""The fake Kubernetes API server (tests/fakes/kube_apiserver.py), proven with the real kubectl
and a raw list/watch client: discovery, get/list -o json, create and apply from YAML,
annotate, merge/strategic/JSON patches, get -w, delete, 409 on a stale update, 410 Gone on a
watch from a compacted resourceVersion, bookmarks, auth failure, outages, 1,000-object lists.
Skips (exit 0) only when kubectl is not installed."""

import base64
import os
import shutil
import ssl
import sys
import urllib.parse

import harness
from harness import *

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
import kube_apiserver  # noqa: E402

FIXTURES = os.environ.get("WEIR_K8S_FIXTURES", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "fixtures", "k8s"))
if not os.path.isdir(FIXTURES):
    FIXTURES = "/work/shared/fixtures/k8s"
KUBECTL = shutil.which("kubectl")

K = None          # the FakeKube
ENV = None        # kubectl's environment


def setup_module():
    global K, ENV
    K = kube_apiserver.FakeKube(http=True, bookmark_interval=0.3)
    K.start()
    harness._register(K)
    d = tmpdir()
    ENV = dict(os.environ, KUBECONFIG=K.kubeconfig, KUBECACHEDIR=os.path.join(d, "cache"),
               HOME=d)


# ---- helpers ------------------------------------------------------------------------------------

def kubectl(*args, ok=True, stdin=None, env=None, timeout=60):
    p = subprocess.run([KUBECTL] + list(args), input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env or ENV, timeout=timeout * SLOW)
    out, err = p.stdout.decode(), p.stderr.decode()
    if ok and p.returncode != 0:
        raise AssertionError("kubectl %s: rc=%d\n%s%s" % (" ".join(args), p.returncode, out, err))
    if ok is False and p.returncode == 0:
        raise AssertionError("kubectl %s succeeded; expected a failure:\n%s"
                             % (" ".join(args), out))
    return out, err


def kjson(*args):
    return json.loads(kubectl(*args, "-o", "json")[0])


def api(method, path, body=None, ctype="application/json", token=None, tls=True,
        headers=None):
    """One request to the fake; returns (status, decoded JSON or bytes, headers)."""
    if tls:
        ctx = ssl.create_default_context(cafile=K.ca_file)
        u = urllib.parse.urlsplit(K.url)
        c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    else:
        u = urllib.parse.urlsplit(K.http_url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Authorization": "Bearer " + (token or K.token), "Accept": "application/json"}
    if body is not None:
        h["Content-Type"] = ctype
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data), r
    except ValueError:
        return r.status, data, r


class WatchStream:
    """A raw watch: events are read line by line from the chunked answer."""

    def __init__(self, path):
        ctx = ssl.create_default_context(cafile=K.ca_file)
        u = urllib.parse.urlsplit(K.url)
        self.c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=15 * SLOW)
        self.c.request("GET", path, headers={"Authorization": "Bearer " + K.token})
        self.r = self.c.getresponse()
        check_eq(self.r.status, 200, "watch status")
        check_eq(self.r.getheader("Transfer-Encoding"), "chunked", "watch framing")

    def next(self, skip_bookmarks=True):
        while True:
            line = self.r.readline()
            if not line:
                return None
            ev = json.loads(line)
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            return ev

    def close(self):
        self.c.close()


def svc_yaml(name, port=80, extra=""):
    return ("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n%s"
            "spec:\n  selector: {app: %s}\n  ports:\n  - {name: http, port: %d}\n"
            % (name, extra, name, port)).encode()


def rv_now():
    return K.store.rv


# ---- tests --------------------------------------------------------------------------------------

def test_version_and_discovery():
    v = json.loads(kubectl("version", "-o", "json")[0])
    check_eq(v["serverVersion"]["gitVersion"], kube_apiserver.SERVER_VERSION["gitVersion"])
    out = kubectl("api-resources", "-o", "name")[0].split()
    for r in ("services", "secrets", "namespaces", "endpointslices.discovery.k8s.io",
              "ingresses.networking.k8s.io", "ingressclasses.networking.k8s.io",
              "leases.coordination.k8s.io"):
        check(r in out, "%s in kubectl api-resources: %r" % (r, out))
    # Plain discovery answers too (what a client without aggregated discovery asks for).
    st, body, _ = api("GET", "/apis/discovery.k8s.io/v1")
    check_eq(st, 200)
    check_eq([r["name"] for r in body["resources"]], ["endpointslices"])
    st, body, _ = api("GET", "/apis/networking.k8s.io/v1")
    check("ingresses/status" in [r["name"] for r in body["resources"]], "ingress status sub")


def test_auth_failure():
    st, body, _ = api("GET", "/api/v1/services", token="wrong")
    check_eq(st, 401)
    check_eq((body["kind"], body["reason"], body["code"]), ("Status", "Unauthorized", 401))
    bad = K.write_kubeconfig(os.path.join(tmpdir(), "kubeconfig"))
    write_file(bad, open(bad).read().replace(K.token, "wrong"))
    env = dict(ENV, KUBECONFIG=bad, KUBECACHEDIR=os.path.join(tmpdir(), "c"))
    _, err = kubectl("get", "svc", ok=False, env=env)
    # kubectl 1.2x words a 401 met during discovery as "provide credentials".
    check("You must be logged in to the server" in err, "kubectl reports a 401: %r" % err[-300:])


def test_kubeconfig_variants_and_client_cert():
    """Block-YAML kubeconfigs as kubectl writes them, with each credential and CA form; a
    client certificate signed by the CA authenticates without a token."""
    text = open(K.kubeconfig).read()
    check(text.startswith("apiVersion: v1\nclusters:\n- cluster:\n"), "block YAML: %r"
          % text[:80])
    check("\n    token: %s\n" % K.token in text, "the token in the kubeconfig")
    try:
        import yaml
        check_eq(yaml.safe_load(text)["users"][0]["user"]["token"], K.token)
    except ImportError:
        pass
    for auth, ca in (("cert", "data"), ("cert-file", "file"), ("token-file", "insecure")):
        path = K.write_kubeconfig(auth=auth, ca=ca)
        env = dict(ENV, KUBECONFIG=path, KUBECACHEDIR=os.path.join(tmpdir(), "c"))
        out = kubectl("get", "ns", "default", "-o", "name", env=env)[0]
        check_eq(out.strip(), "namespace/default", "kubeconfig %s/%s" % (auth, ca))
    sa = K.write_serviceaccount()
    check_eq(open(os.path.join(sa, "token")).read(), K.token)
    check_eq(open(os.path.join(sa, "ca.crt")).read(), open(K.ca_file).read())


def test_fixtures_list_and_get_json():
    n = K.load_file(os.path.join(FIXTURES, "service_02_ServiceList.json"))
    n += K.load_file(os.path.join(FIXTURES, "endpointslice_02_EndpointSliceList.json"))
    n += K.load_file(os.path.join(FIXTURES, "ingress_02_IngressList.json"))
    check_eq(n, 4, "objects loaded")
    svcs = kjson("get", "svc", "-A")
    dns = [s for s in svcs["items"] if s["metadata"]["name"] == "kube-dns"]
    check_eq(len(dns), 1, "kube-dns listed")
    check_eq([p["port"] for p in dns[0]["spec"]["ports"]], [53, 53, 9153])
    check_eq(dns[0]["metadata"]["labels"]["k8s-app"], "kube-dns")
    es = kjson("get", "endpointslices", "-n", "kube-system", "-l",
               "kubernetes.io/service-name=kube-dns")
    check_eq([e["metadata"]["name"] for e in es["items"]], ["kube-dns-22mvb"])
    check_eq(es["items"][0]["endpoints"][0]["conditions"]["ready"], True)
    ing = kjson("get", "ingress", "test-ingress")
    check_eq(ing["spec"]["defaultBackend"]["service"],
             {"name": "testsvc", "port": {"number": 80}}, "legacy backend converted to v1")
    check_eq(ing["spec"]["ingressClassName"], "foo-class")
    # The raw list: kind/apiVersion on the list, not on items; the list's resourceVersion.
    st, lst, _ = api("GET", "/apis/discovery.k8s.io/v1/endpointslices")
    check_eq(st, 200)
    check_eq((lst["kind"], lst["apiVersion"]), ("EndpointSliceList", "discovery.k8s.io/v1"))
    check_eq(lst["metadata"]["resourceVersion"], str(rv_now()))
    check("kind" not in lst["items"][0], "list items carry no kind, as the real server's")
    st, one, _ = api("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/"
                     "kubernetes")
    check_eq((one["kind"], one["apiVersion"]), ("EndpointSlice", "discovery.k8s.io/v1"))
    # Field selector metadata.name, and a label selector with set syntax.
    st, lst, _ = api("GET", "/api/v1/services?fieldSelector=metadata.name%3Dkube-dns")
    check_eq([s["metadata"]["name"] for s in lst["items"]], ["kube-dns"])
    st, lst, _ = api("GET", "/api/v1/services?labelSelector=k8s-app+in+(kube-dns,x),"
                     "!nothere")
    check_eq(len(lst["items"]), 1)
    st, body, _ = api("GET", "/api/v1/services?fieldSelector=spec.type%3DClusterIP")
    check_eq((st, body["reason"]), (400, "BadRequest"), "unsupported field label")
    # kubectl's table output comes from the server's Table.
    out = kubectl("get", "svc", "-n", "kube-system")[0]
    check("CLUSTER-IP" in out and "10.96.0.10" in out and "53/UDP,53/TCP,9153/TCP" in out,
          "table: %r" % out)


def test_create_and_apply_from_yaml():
    kubectl("create", "-f", "-", stdin=svc_yaml("shop"))
    _, err = kubectl("create", "-f", "-", stdin=svc_yaml("shop"), ok=False)
    check("AlreadyExists" in err, "second create: %r" % err)
    kubectl("apply", "-f", "-", stdin=svc_yaml("cart"))
    s = kjson("get", "svc", "cart")
    check("kubectl.kubernetes.io/last-applied-configuration" in s["metadata"]["annotations"],
          "apply records last-applied")
    check(s["spec"]["clusterIP"].startswith("10.96."), "clusterIP allocated")
    rv1 = int(s["metadata"]["resourceVersion"])
    out = kubectl("apply", "-f", "-", stdin=svc_yaml("cart", 8080))[0]
    check("configured" in out, out)
    s = kjson("get", "svc", "cart")
    check_eq([p["port"] for p in s["spec"]["ports"]], [8080], "apply replaced the port")
    check(int(s["metadata"]["resourceVersion"]) > rv1, "resourceVersion moved")
    out = kubectl("apply", "-f", "-", stdin=svc_yaml("cart", 8080))[0]
    check("unchanged" in out, "re-applying the same file: %r" % out)
    # A TLS secret and an EndpointSlice from YAML too.
    kubectl("apply", "-f", "-", stdin=b"""
apiVersion: v1
kind: Secret
metadata: {name: shop-tls}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shop-abc12
  labels: {kubernetes.io/service-name: shop}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true, serving: true, terminating: false}
""")
    check_eq(kjson("get", "secret", "shop-tls")["type"], "kubernetes.io/tls")
    _, err = kubectl("apply", "-f", "-", ok=False, stdin=b"""
apiVersion: v1
kind: Secret
metadata: {name: bad-tls}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==}
""")
    check("data[tls.key]: Required value" in err, "tls secret validation: %r" % err)


def test_kubectl_create_generators():
    """kubectl's typed generators send protobuf bodies; the fake decodes those kinds."""
    d = tmpdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", d + "/k.pem", "-out",
                    d + "/c.pem", "-subj", "/CN=shop.example.com", "-days", "1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kubectl("create", "namespace", "team-a")
    kubectl("create", "-n", "team-a", "secret", "tls", "shop-cert", "--cert", d + "/c.pem",
            "--key", d + "/k.pem")
    kubectl("create", "-n", "team-a", "service", "clusterip", "web", "--tcp=80:8080",
            "--tcp=443:https")
    sec = kjson("get", "-n", "team-a", "secret", "shop-cert")
    check_eq(sec["type"], "kubernetes.io/tls")
    check_eq(base64.b64decode(sec["data"]["tls.crt"]), open(d + "/c.pem", "rb").read())
    svc = kjson("get", "-n", "team-a", "svc", "web")
    check_eq([(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
             [(80, 8080), (443, "https")])
    check_eq(svc["spec"]["selector"], {"app": "web"})
    kubectl("create", "-n", "team-a", "ingress", "shop", "--class=weir",
            "--rule=shop.example.com/*=web:80,tls=shop-cert")
    ing = kjson("get", "-n", "team-a", "ingress", "shop")
    check_eq(ing["spec"]["ingressClassName"], "weir")
    check_eq(ing["spec"]["tls"], [{"hosts": ["shop.example.com"], "secretName": "shop-cert"}])
    check_eq(ing["spec"]["rules"][0]["http"]["paths"][0],
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": "web", "port": {"number": 80}}}})


def test_annotate_overwrite():
    kubectl("annotate", "svc", "shop", "weir.io/green-weight=20")
    _, err = kubectl("annotate", "svc", "shop", "weir.io/green-weight=30", ok=False)
    check("already has a value" in err, err)
    kubectl("annotate", "svc", "shop", "weir.io/green-weight=30", "--overwrite")
    check_eq(kjson("get", "svc", "shop")["metadata"]["annotations"]["weir.io/green-weight"],
             "30")
    kubectl("annotate", "svc", "shop", "weir.io/green-weight-")
    check("weir.io/green-weight" not in
          kjson("get", "svc", "shop")["metadata"].get("annotations", {}), "annotation removed")


def test_patch_merge_strategic_json():
    kubectl("patch", "svc", "shop", "--type", "merge", "-p",
            '{"metadata":{"labels":{"tier":"web"}},"spec":{"selector":{"v":"2"}}}')
    s = kjson("get", "svc", "shop")
    check_eq(s["metadata"]["labels"], {"tier": "web"})
    check_eq(s["spec"]["selector"], {"app": "shop", "v": "2"}, "merge patch merges maps")
    # Strategic: spec.ports merges by its key "port" (a merge patch would replace the list).
    kubectl("patch", "svc", "shop", "-p", '{"spec":{"ports":[{"name":"https","port":443}]}}')
    check_eq([p["port"] for p in kjson("get", "svc", "shop")["spec"]["ports"]], [80, 443])
    kubectl("patch", "svc", "shop", "-p",
            '{"spec":{"ports":[{"port":80,"$patch":"delete"}]}}')
    check_eq([p["port"] for p in kjson("get", "svc", "shop")["spec"]["ports"]], [443])
    kubectl("patch", "svc", "shop", "--type", "merge", "-p",
            '{"spec":{"ports":[{"name":"http","port":80}]}}')
    check_eq([p["port"] for p in kjson("get", "svc", "shop")["spec"]["ports"]], [80],
             "merge patch replaces lists")
    kubectl("patch", "svc", "shop", "--type", "json", "-p",
            '[{"op":"add","path":"/metadata/annotations","value":{"a":"1"}},'
            '{"op":"replace","path":"/spec/selector/v","value":"3"}]')
    s = kjson("get", "svc", "shop")
    check_eq((s["metadata"]["annotations"], s["spec"]["selector"]["v"]), ({"a": "1"}, "3"))
    _, err = kubectl("patch", "svc", "shop", "--type", "json", "-p",
                     '[{"op":"test","path":"/spec/selector/v","value":"nope"}]', ok=False)
    check("Invalid" in err or "test" in err, "failed JSON-patch test op: %r" % err)
    _, err = kubectl("patch", "svc", "nosuch", "-p", '{"metadata":{"labels":{"a":"b"}}}',
                     ok=False)
    check("NotFound" in err, err)
    # Ingress status through its subresource; the main resource ignores status.
    kubectl("apply", "-f", "-", stdin=b"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  ingressClassName: weir
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}
""")
    st, ing, _ = api("PATCH", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/shop/"
                     "status", {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}},
                     "application/merge-patch+json")
    check_eq(st, 200)
    check_eq(ing["status"]["loadBalancer"]["ingress"], [{"ip": "127.0.0.9"}])
    gen = ing["metadata"]["generation"]
    st, ing, _ = api("PATCH", "/apis/networking.k8s.io/v1/namespaces/default/ingresses/shop",
                     {"status": {"loadBalancer": {}}, "spec": {"ingressClassName": "other"}},
                     "application/merge-patch+json")
    check_eq(ing["status"]["loadBalancer"]["ingress"], [{"ip": "127.0.0.9"}],
             "status kept by a main-resource patch")
    check_eq(ing["metadata"]["generation"], gen + 1, "generation counts spec changes")


def test_get_watch_sees_change():
    p = subprocess.Popen([KUBECTL, "get", "svc", "shop", "-w", "-o", "json",
                          "--output-watch-events"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)
    try:
        dec = json.JSONDecoder()
        buf = ""
        events = []

        def read_event():
            nonlocal buf
            while True:
                s = buf.lstrip()
                if s:
                    try:
                        obj, n = dec.raw_decode(s)
                        buf = s[n:]
                        return obj
                    except ValueError:
                        pass
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("kubectl get -w ended: %r" % p.stderr.read()[-300:])
                buf += chunk.decode()

        events.append(read_event())
        check_eq(events[0]["type"], "ADDED")
        kubectl("annotate", "svc", "shop", "weir.io/green-weight=20", "--overwrite")
        ev = read_event()
        check_eq(ev["type"], "MODIFIED")
        check_eq(ev["object"]["metadata"]["annotations"]["weir.io/green-weight"], "20")
        check(int(ev["object"]["metadata"]["resourceVersion"]) >
              int(events[0]["object"]["metadata"]["resourceVersion"]), "rv grows")
    finally:
        p.terminate()
        p.wait(10)
    # The watch ends on the server once kubectl has gone.
    wait_for(lambda: not K.watches, 10, what="the watch to be forgotten")


def test_stale_update_conflict_409():
    s = kjson("get", "svc", "shop")
    stale = json.loads(json.dumps(s))
    kubectl("annotate", "svc", "shop", "bump=1")
    stale["metadata"]["labels"] = {"stale": "yes"}
    _, err = kubectl("replace", "-f", "-", stdin=json.dumps(stale).encode(), ok=False)
    check("Conflict" in err and "the object has been modified" in err, err)
    st, body, _ = api("PUT", "/api/v1/namespaces/default/services/shop", stale)
    check_eq((st, body["reason"], body["details"]["name"]), (409, "Conflict", "shop"))
    # Leases: create, renew with the right resourceVersion, conflict with a stale one.
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "weir-leader"},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    st, l1, _ = api("POST", path, lease)
    check_eq(st, 201)
    st, body, _ = api("POST", path, lease)
    check_eq((st, body["reason"]), (409, "AlreadyExists"))
    l1["spec"]["holderIdentity"] = "b"
    st, l2, _ = api("PUT", path + "/weir-leader", l1)
    check_eq(st, 200)
    l1["spec"]["holderIdentity"] = "c"          # still carries the old resourceVersion
    st, body, _ = api("PUT", path + "/weir-leader", l1)
    check_eq((st, body["reason"]), (409, "Conflict"))
    check_eq(kjson("get", "lease", "weir-leader")["spec"]["holderIdentity"], "b")


def test_list_then_watch_from_rv():
    st, lst, _ = api("GET", "/api/v1/namespaces/default/services")
    rv = lst["metadata"]["resourceVersion"]
    w = WatchStream("/api/v1/namespaces/default/services?watch=1&resourceVersion=%s" % rv)
    try:
        kubectl("create", "-f", "-", stdin=svc_yaml("w1"))
        kubectl("label", "svc", "w1", "role=x")
        kubectl("delete", "svc", "w1")
        evs = [w.next() for _ in range(3)]
        check_eq([e["type"] for e in evs], ["ADDED", "MODIFIED", "DELETED"])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        check(rvs == sorted(rvs) and rvs[0] > int(rv), "ordered resourceVersions %r" % rvs)
        check_eq(evs[0]["object"]["kind"], "Service", "watch objects carry kind")
    finally:
        w.close()
    # A label-selected watch sees an object leave the selection as DELETED.
    kubectl("create", "-f", "-", stdin=svc_yaml("w2", extra="  labels: {sel: 'yes'}\n"))
    w = WatchStream("/api/v1/namespaces/default/services?watch=true&labelSelector=sel%3Dyes")
    try:
        ev = w.next()
        check_eq((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w2"),
                 "initial state without resourceVersion")
        kubectl("label", "svc", "w2", "sel=no", "--overwrite")
        ev = w.next()
        check_eq((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "w2"))
    finally:
        w.close()


def test_bookmarks_and_timeout():
    w = WatchStream("/apis/discovery.k8s.io/v1/endpointslices?watch=1&allowWatchBookmarks=true"
                    "&timeoutSeconds=3&resourceVersion=%d" % rv_now())
    try:
        ev = w.next(skip_bookmarks=False)
        check_eq(ev["type"], "BOOKMARK")
        check_eq(ev["object"]["kind"], "EndpointSlice")
        check_eq(ev["object"]["metadata"]["resourceVersion"], str(rv_now()))
        t0 = time.monotonic()
        while w.next(skip_bookmarks=False) is not None:
            check(time.monotonic() - t0 < 20 * SLOW, "watch did not end at timeoutSeconds")
    finally:
        w.close()
    # Without allowWatchBookmarks there are none.
    w = WatchStream("/apis/discovery.k8s.io/v1/endpointslices?watch=1&timeoutSeconds=1"
                    "&resourceVersion=%d" % rv_now())
    try:
        check_eq(w.next(skip_bookmarks=False), None, "no events, no bookmarks")
    finally:
        w.close()
    # kubectl's own raw GET sees the same stream.
    out = kubectl("get", "--raw", "/api/v1/services?watch=1&allowWatchBookmarks=true"
                  "&timeoutSeconds=1&resourceVersion=%d" % rv_now())[0]
    check('"type":"BOOKMARK"' in out, out[:300])


def test_gone_410_after_compaction():
    old = rv_now()
    kubectl("annotate", "svc", "shop", "c=1", "--overwrite")
    kubectl("annotate", "svc", "shop", "c=2", "--overwrite")
    # Before compaction the history serves a watch from <old>.
    w = WatchStream("/api/v1/services?watch=1&resourceVersion=%d" % old)
    try:
        check_eq(w.next()["type"], "MODIFIED")
    finally:
        w.close()
    # An open watch is expired by the compaction: ERROR 410 then the end.
    live = WatchStream("/api/v1/services?watch=1&resourceVersion=%d" % rv_now())
    wait_for(lambda: K.watches, 5, what="the watch to be registered")
    K.compact()
    ev = live.next()
    check_eq(ev["type"], "ERROR")
    check_eq((ev["object"]["code"], ev["object"]["reason"]), (410, "Expired"))
    check_eq(live.next(), None, "the stream ends after the ERROR")
    live.close()
    # A new watch from the compacted resourceVersion: 200, then ERROR 410 Expired.
    w = WatchStream("/api/v1/services?watch=1&resourceVersion=%d" % old)
    try:
        ev = w.next()
        check_eq(ev["type"], "ERROR")
        st = ev["object"]
        check_eq((st["kind"], st["code"], st["reason"]), ("Status", 410, "Expired"))
        check(st["message"].startswith("too old resource version: %d (" % old), st["message"])
        check_eq(w.next(), None)
    finally:
        w.close()
    out = kubectl("get", "--raw", "/api/v1/services?watch=1&resourceVersion=%d" % old)[0]
    check('"code":410' in out and '"type":"ERROR"' in out, out)
    # LIST: an Exact read of a compacted resourceVersion is 410 as an HTTP status.
    st, body, _ = api("GET", "/api/v1/services?resourceVersion=%d&resourceVersionMatch=Exact"
                      % old)
    check_eq((st, body["reason"]), (410, "Expired"))
    _, err = kubectl("get", "--raw", "/api/v1/services?resourceVersion=%d"
                     "&resourceVersionMatch=Exact" % old, ok=False)
    check("Expired" in err or "too old" in err, err)
    # resourceVersion=0 (any) and a recent NotOlderThan are served.
    st, body, _ = api("GET", "/api/v1/services?resourceVersion=0")
    check_eq(st, 200)
    st, body, _ = api("GET", "/api/v1/services?resourceVersion=%d" % old)
    check_eq((st, body["metadata"]["resourceVersion"]), (200, str(rv_now())))


def test_limit_continue_and_exact_snapshot():
    for i in range(5):
        K.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm%d" % i}})
    st, p1, _ = api("GET", "/api/v1/namespaces/default/configmaps?limit=2")
    check_eq(len(p1["items"]), 2)
    check_eq(p1["metadata"]["remainingItemCount"], 3)
    K.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm9"}})
    names = [i["metadata"]["name"] for i in p1["items"]]
    cont = p1["metadata"]["continue"]
    while cont:
        st, p, _ = api("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue=" + cont)
        check_eq(st, 200)
        check_eq(p["metadata"]["resourceVersion"], p1["metadata"]["resourceVersion"],
                 "pages are one snapshot")
        names += [i["metadata"]["name"] for i in p["items"]]
        cont = p["metadata"].get("continue")
    check_eq(names, ["cm%d" % i for i in range(5)], "cm9 came after the snapshot")
    K.compact(expire_watches=False)
    st, body, _ = api("GET", "/api/v1/namespaces/default/configmaps?limit=2&continue="
                      + p1["metadata"]["continue"])
    check_eq((st, body["reason"]), (410, "Expired"), "continue after compaction")


def test_delete():
    out = kubectl("delete", "svc", "cart")[0]
    check('service "cart" deleted' in out, out)
    _, err = kubectl("get", "svc", "cart", ok=False)
    check("NotFound" in err, err)
    st, body, _ = api("DELETE", "/api/v1/namespaces/default/services/cart")
    check_eq((st, body["reason"], body["details"]["kind"]), (404, "NotFound", "services"))
    # Deleting a namespace deletes what is in it (DELETED events for each).
    kubectl("create", "-f", "-", stdin=b"apiVersion: v1\nkind: Namespace\nmetadata: {name: tmp}\n")
    kubectl("apply", "-n", "tmp", "-f", "-", stdin=svc_yaml("x"))
    w = WatchStream("/api/v1/namespaces/tmp/services?watch=1&resourceVersion=%d" % rv_now())
    try:
        kubectl("delete", "ns", "tmp")
        ev = w.next()
        check_eq((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "x"))
    finally:
        w.close()
    _, err = kubectl("get", "svc", "-n", "tmp", "x", ok=False)
    check("NotFound" in err, err)


def test_down_refuse_then_up():
    w = WatchStream("/api/v1/services?watch=1&resourceVersion=%d" % rv_now())
    K.down(60, "refuse")
    check_eq(w.next(), None, "open watch closed by the outage")
    w.close()
    _, err = kubectl("get", "svc", ok=False, timeout=30)
    check("refused" in err, "kubectl during the outage: %r" % err[-300:])
    K.up()
    check(not K.is_down(), "the outage ended")
    wait_for(lambda: api("GET", "/api/v1/services")[0] == 200, 10, what="the API")
    K.down(0.5, "refuse")
    wait_for(lambda: not K.is_down(), 10, what="the outage to end on its timer")
    wait_for(lambda: api("GET", "/api/v1/services")[0] == 200, 10, what="the API")
    kubectl("get", "svc")
    K.down(10, "503")
    st, body, _ = api("GET", "/api/v1/services")
    check_eq((st, body["reason"]), (503, "ServiceUnavailable"))
    K.up()
    check_eq(api("GET", "/api/v1/services")[0], 200)
    K.fail_next(500, count=1, path_regex="/services$")
    check_eq(api("GET", "/api/v1/services")[0], 500, "injected failure")
    check_eq(api("GET", "/api/v1/services")[0], 200, "only once")


def test_latency_and_hang():
    K.set_latency(300, path_regex="/configmaps")
    try:
        t0 = time.monotonic()
        check_eq(api("GET", "/api/v1/configmaps")[0], 200)
        check(time.monotonic() - t0 >= 0.3, "injected latency applied")
    finally:
        K.set_latency(0)
    w = WatchStream("/api/v1/namespaces/default/services?watch=1&resourceVersion=%d"
                    % rv_now())
    K.down(60, "hang")
    K.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "during-hang"},
              "spec": {"ports": [{"port": 80}]}})
    ctx = ssl.create_default_context(cafile=K.ca_file)
    u = urllib.parse.urlsplit(K.url)
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=0.5)
    try:
        c.request("GET", "/version")
        c.getresponse()
        raise AssertionError("a request was answered during the hang")
    except (socket.timeout, TimeoutError, ssl.SSLError, OSError):
        pass
    finally:
        c.close()
    # The frozen watch delivers nothing and is closed when the outage ends.
    K.up()
    check_eq(w.next(), None, "nothing delivered by a hung watch")
    w.close()
    wait_for(lambda: api("GET", "/version")[0] == 200, 10, what="the API after the hang")
    check(K.get("Service", "during-hang") is not None, "the write made during the hang")


def test_plain_http_and_control_api():
    st, body, _ = api("GET", "/api/v1/namespaces", tls=False)
    check_eq(st, 200)
    u = urllib.parse.urlsplit(K.control_url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("POST", "/_fake/load", json.dumps(
        {"path": os.path.join(FIXTURES, "api_watcher_10_object.json"), "kind": "Service"}))
    r = c.getresponse()
    check_eq(r.status, 200)
    check_eq(json.loads(r.read())["loaded"], 1)
    c.request("GET", "/_fake/state")
    st = json.loads(c.getresponse().read())
    check_eq(st["resourceVersion"], rv_now())
    c.close()
    check(K.get("Service", "another-service-1") is not None, "fixture object loaded")


def test_subprocess_form():
    p = kube_apiserver.FakeKubeProcess(load=[os.path.join(FIXTURES,
                                                          "service_02_ServiceList.json")])
    p.start()
    try:
        env = dict(ENV, KUBECONFIG=p.kubeconfig, KUBECACHEDIR=os.path.join(tmpdir(), "c"))
        out = kubectl("get", "svc", "-n", "kube-system", "-o", "name", env=env)[0]
        check_eq(out.split(), ["service/kube-dns"])
        check_eq(p.control("POST", "/_fake/compact", {})["compactedTo"],
                 p.control("GET", "/_fake/state")["resourceVersion"])
    finally:
        p.stop()


def test_thousand_services_and_slices():
    objs = []
    for i in range(1000):
        name = "svc-%04d" % i
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "scale",
                                  "annotations": {"weir.io/host": "%s.example.com" % name}},
                     "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                              "selector": {"app": name}}})
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": name + "-abcde", "namespace": "scale",
                                  "labels": {"kubernetes.io/service-name": name}},
                     "addressType": "IPv4",
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                     "endpoints": [{"addresses": ["10.%d.%d.%d" % (i // 250, i % 250, e)],
                                    "conditions": {"ready": True, "serving": True,
                                                   "terminating": False},
                                    "nodeName": "node-1"} for e in range(1, 11)]})
    t0 = time.monotonic()
    check_eq(K.load_objects(objs), 2000)
    t_load = time.monotonic() - t0
    timings = {}
    for path in ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices"):
        t0 = time.monotonic()
        st, lst, _ = api("GET", path)
        timings[path] = time.monotonic() - t0
        check_eq(st, 200)
        check(len(lst["items"]) >= 1000, "%s: %d items" % (path, len(lst["items"])))
    sl = [s for s in lst["items"] if s["metadata"]["namespace"] == "scale"]
    check_eq(len(sl), 1000)
    check_eq(sum(len(s["endpoints"]) for s in sl), 10000)
    st, _, r = api("GET", "/apis/discovery.k8s.io/v1/endpointslices",
                   headers={"Accept-Encoding": "gzip"})
    check_eq(r.getheader("Content-Encoding"), "gzip", "large lists are gzipped on request")
    # kubectl pages through them with limit=500 and continue.
    out = kubectl("get", "svc", "-n", "scale", "-o", "name")[0].split()
    check_eq(len(out), 1000)
    print("    info: load 2000 objects %.2fs; LIST services %.3fs, LIST endpointslices %.3fs"
          % (t_load, timings["/api/v1/services"],
             timings["/apis/discovery.k8s.io/v1/endpointslices"]), flush=True)


if __name__ == "__main__":
    if KUBECTL is None:
        print("skip: kubectl is not installed (the fake Kubernetes API needs it to be proven)")
        print("0 passed, 0 failed")
        sys.exit(0)
    run()
