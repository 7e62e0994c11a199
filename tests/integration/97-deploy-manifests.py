"""deploy/: the Kubernetes manifests and the image recipe (docs/deploy.md).

Renders the kustomization with `kubectl kustomize deploy/` and checks what a cluster would rely
on: 2 replicas, probes on /live and /ready at weir.json's admin port, a drain without a preStop
hook whose grace period outlasts drain_delay_ms + drain_timeout_ms, non-root and read-only
containers, consistent selectors, the PDB, the IngressClass controller, and RBAC rules that are
exactly the expected (group, resource, verb) set. weir.json (after weir-init prepared its files)
passes `weir --check`, and a weir booted from it (on loopback ports) answers the probes without
a token, refuses the rest without one and follows the drain sequence. The kinds the fake API
server knows are applied to it with --dry-run=server. deploy/Dockerfile's package lists are
checked against tools/install-deps.sh and the libraries weir and weirctl really link.

Skips (exit 0, with a note) only when kubectl is not installed."""

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse

import harness
from harness import *

try:
    import yaml
except ImportError:
    print("FAIL: PyYAML is missing (tools/install-deps.sh --test installs python3-yaml)")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "fakes"))
import kube_apiserver  # noqa: E402

KUBECTL = shutil.which("kubectl")
if not os.environ.get("WEIR_BIN") and not os.path.exists(harness.WEIR_BIN):
    harness.WEIR_BIN = os.path.join(TOP, "build", "weir")
WEIR = harness.WEIR_BIN

LABELS = {"app.kubernetes.io/name": "weir", "app.kubernetes.io/component": "ingress-controller"}

# What the Kubernetes provider requests (INTERFACES.md §4; the provider's own test compares the
# rules with the requests it records on the fake API server). (group, resource) -> verbs.
EXPECTED_CLUSTER_RULES = {
    ("", "services"): {"list", "watch"},
    ("", "secrets"): {"list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    ("networking.k8s.io", "ingresses"): {"list", "watch"},
    ("networking.k8s.io", "ingressclasses"): {"list", "watch"},
    ("networking.k8s.io", "ingresses/status"): {"patch"},
}
EXPECTED_NAMESPACE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}

OBJS = None       # the rendered objects
CFG = None        # weir.json from the rendered ConfigMap


def setup_module():
    global OBJS, CFG
    out = subprocess.run([KUBECTL, "kustomize", os.path.join(TOP, "deploy")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120 * SLOW)
    if out.returncode != 0:
        raise AssertionError("kubectl kustomize deploy/: %s" % out.stderr.decode())
    OBJS = [o for o in yaml.safe_load_all(out.stdout) if o]
    CFG = json.loads(configmap()["data"]["weir.json"])


# ---- helpers ------------------------------------------------------------------------------------

def objs(kind):
    return [o for o in OBJS if o["kind"] == kind]


def one(kind, name=None):
    found = [o for o in objs(kind) if name is None or o["metadata"]["name"] == name]
    check_eq(len(found), 1, "number of %s objects%s" % (kind, " named " + name if name else ""))
    return found[0]


def deployment():
    return one("Deployment", "weir")


def pod_spec():
    return deployment()["spec"]["template"]["spec"]


def configmap():
    """The ConfigMap the Deployment mounts at /etc/weir (its name carries kustomize's hash)."""
    spec = deployment()["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(spec, "weir")["volumeMounts"]}
    check("/etc/weir" in mounts, "the weir container mounts /etc/weir")
    name = vols[mounts["/etc/weir"]]["configMap"]["name"]
    return one("ConfigMap", name)


def container(spec, name):
    found = [c for c in spec["containers"] if c["name"] == name]
    check_eq(len(found), 1, "containers named " + name)
    return found[0]


def all_containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def selects(selector, labels):
    """True when the matchLabels <selector> selects pods labelled <labels>."""
    check(set(selector) <= {"matchLabels"}, "selector uses matchLabels only: %r" % selector)
    ml = selector["matchLabels"]
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def named_port(c, name):
    for p in c["ports"]:
        if p["name"] == name:
            return p["containerPort"]
    raise AssertionError("container %s has no port named %s" % (c["name"], name))


def rule_table(role):
    """{(group, resource): verbs} of a Role or ClusterRole, checking the plain form rbac.yaml
    promises: one API group per rule, no wildcards, no resourceNames, no nonResourceURLs."""
    table = {}
    for r in role["rules"]:
        check_eq(sorted(r), ["apiGroups", "resources", "verbs"], "keys of an RBAC rule")
        check_eq(len(r["apiGroups"]), 1, "API groups in one rule (%r)" % r)
        for v in r["apiGroups"] + r["resources"] + r["verbs"]:
            check("*" not in v, "no wildcard in RBAC rules: %r" % r)
        for res in r["resources"]:
            key = (r["apiGroups"][0], res)
            check(key not in table, "%r is in one rule only" % (key,))
            table[key] = set(r["verbs"])
    return table


def request_verb(method, path, query):
    """(group, resource, namespace, verb) of one API request, or None for a non-resource URL
    (discovery, /version), which every authenticated user may read."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    watch = False
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    ns = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    resource = rest[0] + ("/" + rest[2] if len(rest) >= 3 else "")
    named = len(rest) >= 2
    q = urllib.parse.parse_qs(query or "")
    if q.get("watch", [""])[0] in ("1", "true"):
        watch = True
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}.get(method)
    if method == "GET":
        verb = "watch" if watch else ("get" if named else "list")
    return group, resource, ns, verb


# ---- the rendered objects ---------------------------------------------------------------------

def test_render_kinds_and_namespace():
    kinds = sorted(o["kind"] for o in OBJS)
    check_eq(kinds, sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Role", "RoleBinding", "ConfigMap", "Deployment",
                            "PodDisruptionBudget", "Service", "IngressClass"]),
             "kinds rendered from deploy/")
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}
    for o in OBJS:
        md = o["metadata"]
        if o["kind"] in cluster_scoped:
            check("namespace" not in md, "%s %s has no namespace" % (o["kind"], md["name"]))
        else:
            check_eq(md.get("namespace"), "weir", "namespace of %s %s" % (o["kind"], md["name"]))
        if o["kind"] != "Namespace":
            for k, v in LABELS.items():
                check_eq(md.get("labels", {}).get(k), v, "label %s of %s" % (k, o["kind"]))
    check_eq(one("Namespace")["metadata"]["name"], "weir", "namespace")
    check_eq(one("Namespace")["metadata"]["labels"].get("pod-security.kubernetes.io/enforce"),
             "restricted", "Pod Security level enforced on the namespace")


def test_deployment_replicas_selectors_spread():
    d = deployment()
    check_eq(d["spec"]["replicas"], 2, "replicas")
    labels = d["spec"]["template"]["metadata"]["labels"]
    check(selects(d["spec"]["selector"], labels), "the Deployment selects its own pods")
    check_eq(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
             "rolling update: a new pod is ready before an old one drains")
    spec = pod_spec()
    check_eq(spec["serviceAccountName"], one("ServiceAccount")["metadata"]["name"],
             "the pods run as the ServiceAccount")
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", t) for t in
             anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) +
             anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    spread = spec.get("topologySpreadConstraints", [])
    check(terms or spread, "pod anti-affinity or topology spread constraints")
    for t in terms:
        check_eq(t["topologyKey"], "kubernetes.io/hostname", "anti-affinity topology")
        check(selects(t["labelSelector"], labels), "anti-affinity selects weir's pods")
    for t in spread:
        check(selects(t["labelSelector"], labels), "topology spread selects weir's pods")


def test_probes_reach_the_admin_api():
    c = container(pod_spec(), "weir")
    admin_port = port_of(CFG["admin"]["address"])
    for kind, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        g = c[kind]["httpGet"]
        check_eq(g["path"], path, kind + " path")
        port = named_port(c, g["port"]) if isinstance(g["port"], str) else g["port"]
        check_eq(port, admin_port, kind + " port = weir.json admin.address port")
    # The kubelet probes from the node: a loopback-only admin API would never answer.
    check(not CFG["admin"]["address"].startswith("127."), "admin API reachable from the node")
    check(CFG["admin"].get("token_file"), "admin token_file set (weir requires it off loopback)")


def test_drain_without_prestop():
    spec = pod_spec()
    for c in all_containers(spec):
        check("lifecycle" not in c, "container %s has no lifecycle hook (preStop sleep)"
              % c["name"])
    delay, timeout = CFG.get("drain_delay_ms", 0), CFG.get("drain_timeout_ms", 15000)
    check(delay > 0, "drain_delay_ms is set (endpoints are withdrawn before listeners close)")
    grace = spec["terminationGracePeriodSeconds"]
    check(grace * 1000 > delay + timeout, "terminationGracePeriodSeconds %d > (%d + %d) ms"
          % (grace, delay, timeout))


def test_security_context_and_resources():
    spec = pod_spec()
    check(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"),
          "no host namespaces")
    psc = spec["securityContext"]
    check_eq(psc.get("runAsNonRoot"), True, "pod runAsNonRoot")
    check(psc.get("runAsUser", 0) != 0, "pod runAsUser is not root")
    check_eq(psc.get("seccompProfile", {}).get("type"), "RuntimeDefault", "seccomp profile")
    for c in all_containers(spec):
        sc = c["securityContext"]
        what = "container %s: " % c["name"]
        check_eq(sc.get("allowPrivilegeEscalation"), False, what + "allowPrivilegeEscalation")
        check_eq(sc.get("readOnlyRootFilesystem"), True, what + "readOnlyRootFilesystem")
        check_eq(sc.get("capabilities", {}).get("drop"), ["ALL"], what + "capabilities.drop")
        check(not sc.get("capabilities", {}).get("add"), what + "no capability added")
        check(not sc.get("privileged"), what + "not privileged")
        check(sc.get("runAsUser", psc["runAsUser"]) != 0, what + "not root")
        for p in c.get("ports", []):
            check(p["containerPort"] > 1024, what + "port %d > 1024" % p["containerPort"])
            check("hostPort" not in p, what + "no hostPort")
        for k in ("requests", "limits"):
            for r in ("cpu", "memory"):
                check(r in c.get("resources", {}).get(k, {}), what + "resources.%s.%s" % (k, r))
    # One worker per CPU of the limit (workers 0 would count the node's cores, not the limit).
    cpu = container(spec, "weir")["resources"]["limits"]["cpu"]
    limit = int(cpu[:-1]) / 1000 if str(cpu).endswith("m") else float(cpu)
    check(1 <= CFG["workers"] <= max(1, limit), "workers %r fits the CPU limit %s"
          % (CFG["workers"], cpu))


def test_listeners_ports_service():
    c = container(pod_spec(), "weir")
    listeners = {l["name"]: port_of(l["address"]) for l in CFG["listeners"]}
    check_eq(listeners, {"web": 8080, "secure": 8443}, "weir.json listeners")
    check("tls" in [l for l in CFG["listeners"] if l["name"] == "secure"][0], "8443 is TLS")
    check_eq(named_port(c, "http"), 8080, "container port http")
    check_eq(named_port(c, "https"), 8443, "container port https")
    svc = one("Service", "weir")
    check_eq(svc["spec"]["type"], "LoadBalancer", "Service type")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    check(svc["spec"]["selector"] and all(labels.get(k) == v
                                          for k, v in svc["spec"]["selector"].items()),
          "the Service selects weir's pods")
    got = {}
    for p in svc["spec"]["ports"]:
        t = p["targetPort"]
        got[p["port"]] = named_port(c, t) if isinstance(t, str) else t
    check_eq(got, {80: 8080, 443: 8443}, "Service ports -> container ports")


def test_pdb():
    pdb = one("PodDisruptionBudget", "weir")
    check_eq(pdb["apiVersion"], "policy/v1", "PDB apiVersion")
    check_eq(pdb["spec"].get("minAvailable"), 1, "PDB minAvailable")
    check(pdb["spec"]["minAvailable"] < deployment()["spec"]["replicas"],
          "the PDB lets one pod go at a time")
    check(selects(pdb["spec"]["selector"], deployment()["spec"]["template"]["metadata"]["labels"]),
          "the PDB selects weir's pods")


def test_ingressclass_and_provider():
    ic = one("IngressClass", "weir")
    check_eq(ic["spec"]["controller"], "weir.io/ingress-controller", "IngressClass controller")
    kube = [p for p in CFG["discovery"] if p["type"] == "kubernetes"]
    check_eq(len(kube), 1, "kubernetes discovery providers in weir.json")
    check_eq(kube[0].get("ingress_class", "weir"), "weir", "provider ingress_class")
    check_eq(kube[0].get("kubeconfig"), None, "in-cluster configuration (kubeconfig null)")


def test_rbac_exact():
    cr = one("ClusterRole", "weir")
    check_eq(rule_table(cr), EXPECTED_CLUSTER_RULES, "ClusterRole weir rules")
    role = one("Role")
    check_eq(role["metadata"]["namespace"], "weir", "the Role lives in weir's namespace")
    check_eq(rule_table(role), EXPECTED_NAMESPACE_RULES, "Role rules (leases)")
    sa = one("ServiceAccount")["metadata"]
    for kind, ref in (("ClusterRoleBinding", cr), ("RoleBinding", role)):
        b = one(kind)
        check_eq(b["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": ref["kind"],
                                "name": ref["metadata"]["name"]}, kind + " roleRef")
        check_eq(b["subjects"], [{"kind": "ServiceAccount", "name": sa["name"],
                                  "namespace": sa["namespace"]}], kind + " subjects")
    # Every rule lives in deploy/base/rbac.yaml, and that file alone.
    base = os.path.join(TOP, "deploy", "base")
    for f in sorted(os.listdir(base)):
        if f.endswith(".yaml") and f != "rbac.yaml":
            with open(os.path.join(base, f)) as fh:
                for o in yaml.safe_load_all(fh):
                    check(not (o and o.get("kind") in ("Role", "ClusterRole")),
                          "RBAC rules only in rbac.yaml, not in " + f)
    with open(os.path.join(base, "rbac.yaml")) as fh:
        check_eq(sorted(o["kind"] for o in yaml.safe_load_all(fh) if o),
                 ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"], "rbac.yaml")


def test_init_container_prepares_the_files():
    """weir-init writes every file weir.json names under /run/weir, into a volume both
    containers mount (the init container writable, weir read-only)."""
    spec = pod_spec()
    inits = spec.get("initContainers", [])
    check_eq([c["command"] for c in inits], [["weir-init"]], "init containers")
    run = lambda c: {m["mountPath"]: m for m in c["volumeMounts"]}.get("/run/weir")
    check(run(inits[0]) and not run(inits[0]).get("readOnly"), "init mounts /run/weir rw")
    check(run(container(spec, "weir")) and run(container(spec, "weir")).get("readOnly"),
          "weir mounts /run/weir read-only")
    vol = {v["name"]: v for v in spec["volumes"]}[run(inits[0])["name"]]
    check_eq(vol.get("emptyDir", {}).get("medium"), "Memory", "/run/weir is a memory volume")
    for v in spec["volumes"]:
        if "secret" in v:
            check_eq(v["secret"].get("optional"), True, "Secret %s is optional (apply -k works "
                     "without creating it)" % v["secret"]["secretName"])


# ---- weir.json, for real ----------------------------------------------------------------------

def prepared_config():
    """weir.json with /run/weir replaced by a temp folder that weir-init filled in."""
    d = tmpdir()
    env = dict(os.environ, WEIR_INIT_OUT=os.path.join(d, "run"),
               WEIR_INIT_SECRETS=os.path.join(d, "no-secrets"))
    r = subprocess.run(["sh", os.path.join(TOP, "deploy", "weir-init.sh")], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60 * SLOW)
    check_eq(r.returncode, 0, "weir-init exit code (%s)" % r.stdout.decode())
    text = configmap()["data"]["weir.json"]
    check("/run/weir/" in text, "weir.json names files under /run/weir")
    path = os.path.join(d, "weir.json")
    write_file(path, text.replace("/run/weir/", os.path.join(d, "run") + "/"))
    return d, path


def test_config_passes_check():
    _, path = prepared_config()
    r = subprocess.run([WEIR, "--check", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60 * SLOW)
    check_eq(r.returncode, 0, "weir --check of the ConfigMap's weir.json (%s)"
             % r.stdout.decode().strip())


def test_weir_init_uses_secrets_when_mounted():
    d = tmpdir()
    sec = os.path.join(d, "secrets")
    os.makedirs(os.path.join(sec, "admin"))
    write_file(os.path.join(sec, "admin", "token"), "shared-token\n")
    certs = Certs()
    leaf = certs.leaf("default", ["weir.example"])
    os.makedirs(os.path.join(sec, "default-tls"))
    shutil.copyfile(leaf.cert, os.path.join(sec, "default-tls", "tls.crt"))
    shutil.copyfile(leaf.key, os.path.join(sec, "default-tls", "tls.key"))
    out = os.path.join(d, "run")
    r = subprocess.run(["sh", os.path.join(TOP, "deploy", "weir-init.sh")],
                       env=dict(os.environ, WEIR_INIT_OUT=out, WEIR_INIT_SECRETS=sec),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60 * SLOW)
    check_eq(r.returncode, 0, "weir-init exit code (%s)" % r.stdout.decode())
    with open(os.path.join(out, "admin", "token")) as f:
        check_eq(f.read(), "shared-token\n", "token copied from the Secret")
    with open(os.path.join(out, "tls", "default.crt"), "rb") as a, open(leaf.cert, "rb") as b:
        check_eq(a.read(), b.read(), "default certificate copied from the Secret")
    check_eq(os.stat(os.path.join(out, "admin", "token")).st_mode & 0o077, 0,
             "the token is readable by its owner only")


def test_boot_probes_token_and_drain():
    """A weir started from the ConfigMap's weir.json (listeners and admin moved to loopback
    ports, the Kubernetes provider pointed at the fake API server as in a pod): probes need no
    token, the rest does; SIGTERM turns /ready to 503 at once, the listeners keep answering for
    drain_delay_ms, then weir exits 0 well within the grace period."""
    d, path = prepared_config()
    with open(path) as f:
        cfg = json.load(f)
    cfg["listeners"][0]["address"] = "127.0.0.1:%d" % free_port()
    cfg["listeners"][1]["address"] = "127.0.0.1:%d" % free_port()
    cfg["admin"]["address"] = "127.0.0.1:%d" % free_port()
    with open(cfg["admin"]["token_file"]) as f:
        token = f.read().strip()

    k = kube_apiserver.FakeKube().start()
    harness._register(k)
    k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weir"}})
    sa = k.write_serviceaccount(os.path.join(d, "serviceaccount"), namespace="weir")
    u = urllib.parse.urlsplit(k.url)
    saved = dict(os.environ)
    os.environ.update(KUBERNETES_SERVICE_HOST=u.hostname, KUBERNETES_SERVICE_PORT=str(u.port),
                      WEIR_K8S_SERVICEACCOUNT_DIR=sa)
    try:
        w = Weir(cfg)
        w.start(wait_ready=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # /ready waits up to 5 s for the provider's first view (with stale_after_ms: until it).
    w.wait_ready(timeout=30)
    check_eq(w.admin("GET", "/live", token="").status, 200, "/live without a token")
    check_eq(w.admin("GET", "/ready", token="").status, 200, "/ready without a token")
    check_eq(w.admin("GET", "/config", token="").status, 401, "/config without a token")
    check_eq(w.admin("GET", "/config", token="wrong").status, 401, "/config, wrong token")
    check_eq(w.admin("GET", "/config", token=token).status, 200, "/config with weir-init's token")

    # Requests weir made to the API server (none while the provider is not built) must all be
    # allowed by rbac.yaml.
    allowed = {}
    for role in objs("ClusterRole") + objs("Role"):
        ns = role["metadata"].get("namespace")
        for key, verbs in rule_table(role).items():
            allowed.setdefault(key, []).append((ns, verbs))
    seen = 0
    for req in k.request_log():
        rv = request_verb(req["method"], req["path"], req["query"])
        if rv is None:
            continue
        seen += 1
        group, resource, ns, verb = rv
        ok = any(verb in verbs and (rns is None or rns == ns)
                 for rns, verbs in allowed.get((group, resource), []))
        check(ok, "rbac.yaml allows weir's %s %s?%s" % (req["method"], req["path"], req["query"]))
    print("info: weir made %d API requests to the fake, all allowed by rbac.yaml" % seen)

    rss = w.rss_kib()
    t0 = time.monotonic()
    w.terminate()
    wait_for(lambda: w.admin("GET", "/ready", token="").status == 503, timeout=5 * SLOW,
             what="/ready 503 right after SIGTERM")
    r = w.http("GET", "/", timeout=10)
    check(r.status in (404, 503), "the listener still answers during drain_delay_ms (got %d)"
          % r.status)
    code = w.wait_exit(timeout=pod_spec()["terminationGracePeriodSeconds"])
    elapsed = time.monotonic() - t0
    check_eq(code, 0, "exit code after the drain")
    check(elapsed >= CFG["drain_delay_ms"] / 1000.0 * 0.95,
          "weir kept serving for drain_delay_ms (exited after %.1f s)" % elapsed)
    print("info: SIGTERM to exit %.1f s (drain_delay_ms %d, grace period %d s); idle RSS %d KiB"
          % (elapsed, CFG["drain_delay_ms"], pod_spec()["terminationGracePeriodSeconds"], rss))


# ---- against the fake API server --------------------------------------------------------------

FAKE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Service", "IngressClass"}


def test_server_dry_run_on_fake_apiserver():
    """`kubectl apply --dry-run=server` of the kinds the fake serves (it has no apps, policy or
    rbac groups). The namespace must exist first, as on a real cluster."""
    k = kube_apiserver.FakeKube().start()
    harness._register(k)
    d = tmpdir()
    env = dict(os.environ, KUBECONFIG=k.kubeconfig, KUBECACHEDIR=os.path.join(d, "cache"),
               HOME=d)
    k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weir"}})
    docs = [o for o in OBJS if o["kind"] in FAKE_KINDS]
    path = os.path.join(d, "subset.yaml")
    write_file(path, yaml.safe_dump_all(docs))
    r = subprocess.run([KUBECTL, "apply", "--dry-run=server", "-f", path], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120 * SLOW)
    out = r.stdout.decode()
    check_eq(r.returncode, 0, "kubectl apply --dry-run=server (%s)" % r.stderr.decode())
    check_eq(out.count("(server dry run)"), len(docs), "objects dry-run applied:\n" + out)
    check(k.get("Service", "weir", "weir") is None, "a dry run stores nothing")


def doc_commands(prefix):
    """The shell commands of docs/deploy.md that start with <prefix>, continuation lines
    joined, split into words."""
    import shlex
    with open(os.path.join(TOP, "docs", "deploy.md")) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    return [shlex.split(l.strip()) for l in text.splitlines() if l.strip().startswith(prefix)]


def test_walkthrough_commands_on_fake_apiserver():
    """docs/deploy.md's `kubectl annotate` and `kubectl create ingress` commands, run against
    deploy/examples/shop.yaml's Services on the fake API server, give the annotations of
    INTERFACES.md §4 and an Ingress of class weir."""
    k = kube_apiserver.FakeKube().start()
    harness._register(k)
    d = tmpdir()
    env = dict(os.environ, KUBECONFIG=k.kubeconfig, KUBECACHEDIR=os.path.join(d, "cache"),
               HOME=d)
    with open(os.path.join(TOP, "deploy", "examples", "shop.yaml")) as f:
        example = [o for o in yaml.safe_load_all(f) if o]
    services = {o["metadata"]["name"] for o in example if o["kind"] == "Service"}
    check_eq(services, {"shop", "shop-blue", "shop-green"}, "the example's Services")
    for o in example:
        check(not o["metadata"].get("annotations"), "the example starts without annotations")
    path = os.path.join(d, "shop.yaml")
    write_file(path, yaml.safe_dump_all([o for o in example if o["kind"] in FAKE_KINDS]))

    def kubectl(argv):
        r = subprocess.run([KUBECTL] + argv, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120 * SLOW)
        check_eq(r.returncode, 0, "kubectl %s (%s)" % (" ".join(argv), r.stderr.decode()))

    kubectl(["apply", "-f", path])
    annotate = doc_commands("kubectl -n shop annotate service shop")
    check_eq(len(annotate), 2, "annotate commands in docs/deploy.md")
    for argv in annotate:
        kubectl(argv[1:])
    ann = k.get("Service", "shop", "shop")["metadata"]["annotations"]
    ann = {a: v for a, v in ann.items() if a.startswith("weir.io/")}
    check_eq(ann, {"weir.io/expose": "true", "weir.io/host": "shop.example.com",
                   "weir.io/path": "/", "weir.io/blue": "shop-blue",
                   "weir.io/green": "shop-green", "weir.io/green-weight": "0"},
             "annotations of Service shop after the walk-through")
    check({ann["weir.io/blue"], ann["weir.io/green"]} <= services,
          "blue and green are Services of the same namespace")
    ingress = doc_commands("kubectl -n shop create ingress")
    check_eq(len(ingress), 1, "create ingress commands in docs/deploy.md")
    kubectl(ingress[0][1:])
    ing = k.get("Ingress", "shop", "shop")
    check_eq(ing["spec"]["ingressClassName"], "weir", "the Ingress's class")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    check_eq((backend["name"], backend["port"]["number"]), ("shop-blue", 80), "Ingress backend")


# ---- the image recipe -------------------------------------------------------------------------

def dockerfile_stages():
    """[(FROM line, [packages apt-get installs])] of deploy/Dockerfile."""
    with open(os.path.join(TOP, "deploy", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append((line, [], []))
        elif stages and line:
            stages[-1][2].append(line)
            for m in re.finditer(r"apt-get install ([^&]*)", line):
                stages[-1][1].extend(w for w in m.group(1).split() if not w.startswith("-"))
    return stages


def test_dockerfile():
    stages = dockerfile_stages()
    check_eq([s[0].split()[1] for s in stages], ["debian:bookworm", "debian:bookworm-slim"],
             "base images")
    build, runtime = stages
    with open(os.path.join(TOP, "tools", "install-deps.sh")) as f:
        deps = re.search(r"pkgs=\(([^)]*)\)", f.read()).group(1).split()
    need = {p for p in deps if p not in ("curl", "ca-certificates")} | {"libyaml-dev"}
    check(need <= set(build[1]), "build stage lacks %s" % sorted(need - set(build[1])))
    check(not [p for p in runtime[1] if p.endswith("-dev")], "no -dev package at run time")
    body = "\n".join(build[2])
    check("CMAKE_BUILD_TYPE=RelWithDebInfo" in body and "-G Ninja" in body, "RelWithDebInfo, ninja")
    rt = "\n".join(runtime[2])
    check(re.search(r"^USER 65532(:65532)?$", rt, re.M), "runs as uid 65532")
    check(re.search(r'^ENTRYPOINT \["weir", "-c", "/etc/weir/weir.json"\]$', rt, re.M),
          "ENTRYPOINT weir -c /etc/weir/weir.json")
    expose = re.search(r"^EXPOSE (.*)$", rt, re.M)
    check(expose and {"8080", "8443", "9901"} <= set(expose.group(1).split()), "EXPOSE")
    check("weir-init" in body, "weir-init is installed into the image")


def test_runtime_packages_cover_linked_libraries():
    """Every shared library weir and weirctl link directly comes from a package the runtime
    stage installs (or libc6, which bookworm-slim has)."""
    if not all(shutil.which(t) for t in ("dpkg", "ldd", "readelf")):
        print("note: no dpkg, ldd or readelf here; runtime library check skipped")
        return
    runtime = set(dockerfile_stages()[1][1]) | {"libc6"}
    weirctl = os.environ.get("WEIRCTL_BIN") or os.path.join(os.path.dirname(WEIR), "weirctl")
    libs = {}  # library path -> the binary that loads it
    for binary in (WEIR, weirctl):
        # The binary's own NEEDED entries: the libraries those load in turn come with their
        # packages' dependencies.
        dyn = subprocess.run(["readelf", "-d", binary], stdout=subprocess.PIPE,
                             timeout=30).stdout.decode()
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, timeout=30).stdout.decode()
        where = dict(re.findall(r"^\s*(\S+) => (/\S+)", out, re.M))
        check(needed, "readelf found the libraries %s needs" % binary)
        # A sanitizer build (CI's ASan run) links the sanitizer runtimes; the image's Release
        # build does not.
        needed = [n for n in needed if not re.match(r"lib(asan|ubsan|lsan|tsan)\.so", n)]
        for soname in needed:
            check(soname in where, "ldd resolves %s of %s" % (soname, binary))
            libs.setdefault(where[soname], os.path.basename(binary))
    # dpkg knows a file by the path its package installed, which may be the /usr one (merged
    # /usr) or the symlink's target.
    names = {}
    for lib in libs:
        real = os.path.realpath(lib)
        names[lib] = {lib, real, real if real.startswith("/usr/") else "/usr" + real}
    r = subprocess.run(["dpkg", "-S"] + sorted(set().union(*names.values())),
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    owners = {}
    for line in r.stdout.decode().splitlines():
        pkgs, _, path = line.partition(": ")
        owners.setdefault(path.strip(), set()).update(
            p.strip().split(":")[0] for p in pkgs.split(","))
    for lib, binary in sorted(libs.items()):
        pkgs = set().union(*(owners.get(n, set()) for n in names[lib]))
        check(pkgs, "dpkg knows which package has %s" % lib)
        check(pkgs & runtime, "%s (loaded by %s, from %s) is installed at run time"
              % (lib, binary, sorted(pkgs)))

if __name__ == "__main__":
    if KUBECTL is None:
        print("skip: kubectl is not installed")
        sys.exit(0)
    run()
