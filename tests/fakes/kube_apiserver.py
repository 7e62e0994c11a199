#!/usr/bin/python3
"""A fake Kubernetes API server for weir's tests, faithful at the protocol level.

It speaks the REST protocol of kube-apiserver well enough that the real `kubectl` drives it
(discovery, tables, get/-w/-o json, create, apply, annotate, patch, delete) and that a
list-then-watch client sees the real semantics: one global resourceVersion counter like etcd,
list metadata.resourceVersion, watch from a resourceVersion, BOOKMARK events, timeoutSeconds,
410 Expired as an ERROR event when the start point is older than the kept history, optimistic
concurrency (409 Conflict), label and field selectors, limit/continue.

Standard library only (PyYAML is used for YAML fixtures when it is importable). Run with
Debian's /usr/bin/python3.

In-process:

    from kube_apiserver import FakeKube
    k = FakeKube().start()           # HTTPS on 127.0.0.1, a kubeconfig in k.dir
    k.kubeconfig, k.url, k.token, k.ca_file, k.control_url
    k.load_file("/work/shared/fixtures/k8s/service_02_ServiceList.json")
    k.create({"apiVersion": "v1", "kind": "Service", ...})
    k.compact(); k.down(3, mode="refuse"); k.set_latency(200)
    k.stop()

As a subprocess (the same control API over HTTP):

    p = FakeKubeProcess(http=True).start()      # runs this file, reads its ready line
    p.kubeconfig, p.url, p.http_url, p.token, p.control_url
    p.control("POST", "/_fake/compact", {})
    p.stop()

Command line: kube_apiserver.py [--port N] [--http-port N] [--control-port N] [--dir D]
[--token T] [--load FILE]... prints one JSON line {"url", "http_url", "control_url",
"kubeconfig", "token", "ca_file", "dir"} on stdout when it is ready. See docs/kube-fake.md.
"""

import argparse
import base64
import copy
import datetime
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler

try:
    import yaml  # python3-yaml; only for YAML fixture files
except ImportError:  # pragma: no cover - JSON fixtures still work
    yaml = None

SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-weir-fake",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc",
    "platform": "linux/amd64",
}

# Responses larger than this are gzip-compressed when the client accepts it, as the real
# apiserver does (APIResponseCompression, 128 KiB threshold, level 1).
GZIP_THRESHOLD = 128 * 1024

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

# ---- errors --------------------------------------------------------------------------------------


def status_obj(code, reason, message, details=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason}
    if details is not None:
        s["details"] = details
    s["code"] = code
    return s


class ApiError(Exception):
    """An error answered as a metav1.Status with its HTTP code."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)
        self.code = code
        self.headers = headers or []


def _details(rt, name=None, causes=None, kind=None):
    d = {}
    if name:
        d["name"] = name
    if rt is not None and rt.group:
        d["group"] = rt.group
    d["kind"] = kind or (rt.plural if rt is not None else "")
    if causes:
        d["causes"] = causes
    return d


def err_not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qualified, name),
                    _details(rt, name))


def err_already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified, name),
                    _details(rt, name))


def err_conflict(rt, name):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                    % (rt.qualified, name), _details(rt, name))


def err_bad_request(message):
    return ApiError(400, "BadRequest", message)


def err_invalid(rt, name, causes):
    """causes: [(field, reason, message)] -> 422 Invalid, as field.ErrorList renders."""
    msgs = ["%s: %s" % (f, m) for f, _, m in causes]
    text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (rt.kind, name, text),
                    _details(rt, name, [{"reason": r, "message": m, "field": f}
                                        for f, r, m in causes], kind=rt.kind))


def err_expired(message):
    return ApiError(410, "Expired", message)


NOT_FOUND_PATH = ApiError(404, "NotFound", "the server could not find the requested resource",
                          {})

# ---- time ----------------------------------------------------------------------------------------


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s):
    if not isinstance(s, str) or not s:
        return None
    try:
        s2 = re.sub(r"\.\d+", "", s).replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(s2).timestamp()
    except ValueError:
        return None


def human_duration(seconds):
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return "%ds" % s
    minutes = s // 60
    if minutes < 10:
        sec = s % 60
        return "%dm" % minutes if sec == 0 else "%dm%ds" % (minutes, sec)
    if minutes < 180:
        return "%dm" % minutes
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return "%dh" % hours if m == 0 else "%dh%dm" % (hours, m)
    if hours < 48:
        return "%dh" % hours
    if hours < 24 * 8:
        h = hours % 24
        return "%dd" % (hours // 24) if h == 0 else "%dd%dh" % (hours // 24, h)
    if hours < 24 * 365 * 2:
        return "%dd" % (hours // 24)
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return "%dy" % (hours // 24 // 365) if dy == 0 else "%dy%dd" % (hours // 24 // 365, dy)
    return "%dy" % (hours // 24 // 365)


def age_of(obj):
    t = parse_rfc3339(obj.get("metadata", {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(time.time() - t)

# ---- resource types ------------------------------------------------------------------------------


class RType:
    """One API resource: where it lives, how it is shown, how it is patched."""

    def __init__(self, group, version, kind, plural, namespaced, short=(), status=False,
                 generation=False, create_on_update=False, fields=(), smp=None,
                 columns=None, cells=None, categories=()):
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.singular = kind.lower()
        self.namespaced = namespaced
        self.short = list(short)
        self.status = status                  # has a /status subresource
        self.generation = generation          # metadata.generation counts spec changes
        self.create_on_update = create_on_update
        self.fields = ("metadata.name",) + (("metadata.namespace",) if namespaced else ()) + \
            tuple(fields)
        self.smp = smp or {}                  # strategic merge: "a.b" -> merge key ("" = set)
        self.columns = columns or []
        self.cells = cells
        self.categories = list(categories)

    @property
    def gv(self):
        return self.version if not self.group else "%s/%s" % (self.group, self.version)

    @property
    def key(self):
        return (self.group, self.plural)

    @property
    def qualified(self):
        return self.plural if not self.group else "%s.%s" % (self.plural, self.group)

    def path_prefix(self):
        return "/api/v1" if not self.group else "/apis/%s/%s" % (self.group, self.version)


def _col(name, typ="string", fmt="", desc="", priority=0):
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


COL_NAME = _col("Name", fmt="name", desc="Name must be unique within a namespace. Is required "
                "when creating resources, although some resources may allow a client to request "
                "the generation of an appropriate name automatically.")
COL_AGE = _col("Age", desc="CreationTimestamp is a timestamp representing the server time when "
               "this object was created.")


def _svc_ports(svc):
    out = []
    for p in svc.get("spec", {}).get("ports") or []:
        s = str(p.get("port"))
        if p.get("nodePort"):
            s += ":%s" % p["nodePort"]
        out.append("%s/%s" % (s, p.get("protocol", "TCP")))
    return ",".join(out) or "<none>"


def _svc_cells(o):
    spec = o.get("spec", {})
    typ = spec.get("type", "ClusterIP")
    ext = "<none>"
    if typ == "ExternalName":
        ext = spec.get("externalName", "<none>")
    elif typ == "LoadBalancer":
        ips = [i.get("ip") or i.get("hostname") for i in
               (o.get("status", {}).get("loadBalancer", {}).get("ingress") or [])]
        ext = ",".join(x for x in ips if x) or "<pending>"
    elif spec.get("externalIPs"):
        ext = ",".join(spec["externalIPs"])
    sel = spec.get("selector")
    sel_s = ",".join("%s=%s" % kv for kv in sorted(sel.items())) if sel else "<none>"
    return [typ, spec.get("clusterIP") or "<none>", ext, _svc_ports(o), age_of(o), sel_s]


def _slice_cells(o):
    ports = ",".join(str(p.get("port")) for p in (o.get("ports") or []) if "port" in p) or \
        "<unset>"
    addrs = [a for e in (o.get("endpoints") or []) for a in (e.get("addresses") or [])]
    eps = ",".join(addrs[:3]) + (" + %d more..." % (len(addrs) - 3) if len(addrs) > 3 else "")
    return [o.get("addressType", ""), ports, eps or "<unset>", age_of(o)]


def _ep_cells(o):
    out = []
    for ss in o.get("subsets") or []:
        for a in ss.get("addresses") or []:
            for p in ss.get("ports") or [{}]:
                out.append("%s:%s" % (a.get("ip"), p.get("port")) if p.get("port") else
                           a.get("ip"))
    s = ",".join(out[:3]) + (" + %d more..." % (len(out) - 3) if len(out) > 3 else "")
    return [s or "<none>", age_of(o)]


def _ing_cells(o):
    spec = o.get("spec", {})
    hosts = ",".join(r.get("host") for r in spec.get("rules") or [] if r.get("host")) or "*"
    addr = ",".join(i.get("ip") or i.get("hostname", "") for i in
                    (o.get("status", {}).get("loadBalancer", {}).get("ingress") or []))
    ports = "80, 443" if spec.get("tls") else "80"
    return [spec.get("ingressClassName") or "<none>", hosts, addr, ports, age_of(o)]


RESOURCES = [
    RType("", "v1", "Namespace", "namespaces", False, short=("ns",), status=True,
          columns=[_col("Status", desc="The status of the namespace")],
          cells=lambda o: [o.get("status", {}).get("phase", ""), age_of(o)]),
    RType("", "v1", "Service", "services", True, short=("svc",), status=True,
          smp={"spec.ports": "port"}, categories=("all",),
          columns=[_col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)")],
          cells=_svc_cells),
    RType("", "v1", "Endpoints", "endpoints", True, short=("ep",), create_on_update=True,
          columns=[_col("Endpoints")], cells=_ep_cells),
    RType("", "v1", "Secret", "secrets", True, fields=("type",),
          columns=[_col("Type"), _col("Data", typ="string")],
          cells=lambda o: [o.get("type", "Opaque"), len(o.get("data") or {}), age_of(o)]),
    RType("", "v1", "ConfigMap", "configmaps", True, short=("cm",),
          columns=[_col("Data", typ="string")],
          cells=lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                           age_of(o)]),
    RType("", "v1", "ServiceAccount", "serviceaccounts", True, short=("sa",),
          smp={"secrets": "name", "imagePullSecrets": "name"},
          columns=[_col("Secrets", typ="string")],
          cells=lambda o: [len(o.get("secrets") or []), age_of(o)]),
    RType("", "v1", "Pod", "pods", True, short=("po",), status=True,
          fields=("spec.nodeName", "status.phase", "status.podIP"), categories=("all",),
          smp={"spec.containers": "name", "spec.initContainers": "name",
               "spec.containers.ports": "containerPort", "spec.containers.env": "name",
               "spec.containers.volumeMounts": "mountPath", "spec.volumes": "name",
               "spec.imagePullSecrets": "name", "status.conditions": "type"},
          columns=[_col("Status"), _col("IP", priority=1)],
          cells=lambda o: [o.get("status", {}).get("phase", ""), age_of(o),
                           o.get("status", {}).get("podIP", "<none>")]),
    RType("", "v1", "Node", "nodes", False, short=("no",), status=True,
          smp={"status.addresses": "type", "status.conditions": "type"},
          columns=[_col("Status")],
          cells=lambda o: ["Ready", age_of(o)]),
    RType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True, generation=True,
          create_on_update=True,
          columns=[_col("AddressType"), _col("Ports"), _col("Endpoints")], cells=_slice_cells),
    RType("networking.k8s.io", "v1", "Ingress", "ingresses", True, short=("ing",), status=True,
          generation=True,
          columns=[_col("Class"), _col("Hosts"), _col("Address"), _col("Ports")],
          cells=_ing_cells),
    RType("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False, generation=True,
          columns=[_col("Controller"), _col("Parameters")],
          cells=lambda o: [o.get("spec", {}).get("controller", ""),
                           "<none>" if not o.get("spec", {}).get("parameters") else
                           json.dumps(o["spec"]["parameters"]), age_of(o)]),
    RType("coordination.k8s.io", "v1", "Lease", "leases", True, create_on_update=True,
          columns=[_col("Holder")],
          cells=lambda o: [o.get("spec", {}).get("holderIdentity", ""), age_of(o)]),
]
# The columns list holds what comes between Name and Age, then extra (priority>0) columns.
for _rt in RESOURCES:
    main = [c for c in _rt.columns if c["priority"] == 0]
    extra = [c for c in _rt.columns if c["priority"] > 0]
    if _rt.kind == "Service":
        extra = [_col("Selector", priority=1)]
    _rt.columns = [COL_NAME] + main + [COL_AGE] + extra

BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCES}
BY_KIND = {(rt.group, rt.kind): rt for rt in RESOURCES}
GROUPS = []
for _rt in RESOURCES:
    if _rt.group and _rt.group not in GROUPS:
        GROUPS.append(_rt.group)
METADATA_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
                  "generation", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
                  "finalizers", "managedFields"]
COMMON_SMP = {"metadata.ownerReferences": "uid", "metadata.finalizers": ""}

# ---- selectors -----------------------------------------------------------------------------------

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def parse_label_selector(text):
    """Parses the labelSelector syntax into [(key, op, values)]; op: = != in notin exists !."""
    reqs = []
    s = text or ""
    i = 0
    n = len(s)

    def skip_ws():
        nonlocal i
        while i < n and s[i] == " ":
            i += 1

    def ident():
        nonlocal i
        skip_ws()
        j = i
        while i < n and s[i] not in " ,=!()":
            i += 1
        return s[j:i]

    while True:
        skip_ws()
        if i >= n:
            break
        neg = False
        if s[i] == "!":
            neg = True
            i += 1
        key = ident()
        if not key or not _LABEL_KEY.match(key):
            raise err_bad_request("unable to parse requirement: invalid label key %r" % key)
        skip_ws()
        if neg:
            reqs.append((key, "!", None))
        elif i >= n or s[i] == ",":
            reqs.append((key, "exists", None))
        elif s.startswith("==", i) or s.startswith("!=", i):
            op = "=" if s[i] == "=" else "!="
            i += 2
            reqs.append((key, op, [ident()]))
        elif s[i] == "=":
            i += 1
            reqs.append((key, "=", [ident()]))
        else:
            word = ident()
            if word not in ("in", "notin"):
                raise err_bad_request("unable to parse requirement: found '%s', expected: in, "
                                      "notin, =, ==, !=, gt, lt" % word)
            skip_ws()
            if i >= n or s[i] != "(":
                raise err_bad_request("unable to parse requirement: expected '('")
            i += 1
            vals = []
            while True:
                v = ident()
                vals.append(v)
                skip_ws()
                if i < n and s[i] == ",":
                    i += 1
                    continue
                if i < n and s[i] == ")":
                    i += 1
                    break
                raise err_bad_request("unable to parse requirement: expected ')'")
            reqs.append((key, word, vals))
        skip_ws()
        if i < n:
            if s[i] != ",":
                raise err_bad_request("unable to parse requirement: found '%s'" % s[i:])
            i += 1
    return reqs


def label_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
        if op == "=" and (not has or v != vals[0]):
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and (not has or v not in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
    return True


def parse_field_selector(rt, text):
    reqs = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise err_bad_request("invalid selector: '%s'; can't understand '%s'" % (text, part))
        field, op, val = m.group(1), m.group(2), m.group(3)
        if field not in rt.fields:
            raise err_bad_request('field label not supported: %s' % field)
        reqs.append((field, "!=" if op == "!=" else "=", val))
    return reqs


def field_value(obj, field):
    cur = obj
    for part in field.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if field == "type" and cur is None and obj.get("kind") == "Secret":
        return "Opaque"
    return "" if cur is None else str(cur)


def field_match(reqs, obj):
    for field, op, val in reqs:
        v = field_value(obj, field)
        if (op == "=") != (v == val):
            return False
    return True

# ---- patches -------------------------------------------------------------------------------------


def json_merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = json_merge_patch(result.get(k), v)
    return result


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError("JSON pointer %r does not start with /" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise ValueError("missing value at %r" % p)
            cur = cur[p]
        elif isinstance(cur, list):
            idx = int(p)
            if idx < 0 or idx >= len(cur):
                raise ValueError("index %d out of range" % idx)
            cur = cur[idx]
        else:
            raise ValueError("cannot descend into a scalar at %r" % p)
    return cur


def json_patch(doc, ops):
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError("operation lacks op or path: %r" % (op,))
        kind = op["op"]
        parts = _pointer(op["path"])

        def add(d, parts, value):
            if not parts:
                return value
            parent = _resolve(d, parts[:-1])
            last = parts[-1]
            if isinstance(parent, dict):
                parent[last] = value
            elif isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                else:
                    idx = int(last)
                    if idx < 0 or idx > len(parent):
                        raise ValueError("index %d out of range" % idx)
                    parent.insert(idx, value)
            else:
                raise ValueError("cannot add to a scalar")
            return d

        def remove(d, parts):
            if not parts:
                raise ValueError("cannot remove the root")
            parent = _resolve(d, parts[:-1])
            last = parts[-1]
            if isinstance(parent, dict):
                if last not in parent:
                    raise ValueError("unable to remove nonexistent key: %s" % last)
                return parent.pop(last)
            if isinstance(parent, list):
                idx = int(last)
                if idx < 0 or idx >= len(parent):
                    raise ValueError("index %d out of range" % idx)
                return parent.pop(idx)
            raise ValueError("cannot remove from a scalar")

        if kind == "add":
            doc = add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(doc, parts)
        elif kind == "replace":
            _resolve(doc, parts)
            if parts:
                remove(doc, parts)
            doc = add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            val = copy.deepcopy(_resolve(doc, src))
            if kind == "move":
                remove(doc, src)
            doc = add(doc, parts, val)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise ValueError("testing value %s failed" % op["path"])
        else:
            raise ValueError("unexpected kind: %s" % kind)
    return doc


def strategic_merge_patch(rt, original, patch):
    """Strategic merge patch with the merge keys of <rt>: maps merge, null deletes, lists
    listed in rt.smp merge by key (or as sets), other lists are replaced; the directives
    $patch (replace/delete/merge), $retainKeys, $deleteFromPrimitiveList/ and
    $setElementOrder/ are honoured."""
    keys = dict(COMMON_SMP)
    keys.update(rt.smp)
    return _smp_map(original if isinstance(original, dict) else {}, patch, "", keys)


def _smp_map(orig, patch, path, keys):
    if not isinstance(patch, dict):
        raise ValueError("strategic merge patch: expected a map at %r" % (path or "."))
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        result = {k: v for k, v in result.items() if k in keep}
    orders = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in (v or [])]
            continue
        sub = k if not path else path + "." + k
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = _smp_map(result.get(k), v, sub, keys)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list) and sub in keys:
            result[k] = _smp_list(result.get(k) if isinstance(result.get(k), list) else [],
                                  v, sub, keys[sub], keys)
        else:
            result[k] = copy.deepcopy(v)
    for field, order in orders.items():
        if isinstance(result.get(field), list) and isinstance(order, list):
            mk = keys.get(field if not path else path + "." + field, "")
            result[field] = _reorder(result[field], order, mk)
    return result


def _ident(item, mk):
    return item.get(mk) if mk and isinstance(item, dict) else json.dumps(item, sort_keys=True)


def _reorder(items, order, mk):
    rank = {_ident(x, mk): i for i, x in enumerate(order)}
    known = sorted((x for x in items if _ident(x, mk) in rank), key=lambda x: rank[_ident(x, mk)])
    return known + [x for x in items if _ident(x, mk) not in rank]


def _smp_list(orig, patch, path, mk, keys):
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch
                if not (isinstance(x, dict) and x.get("$patch") == "replace")]
    result = copy.deepcopy(orig)
    if not mk:  # a set of primitives
        for x in patch:
            if x not in result:
                result.append(copy.deepcopy(x))
        return result
    for item in patch:
        if not isinstance(item, dict) or mk not in item:
            raise ValueError("map: %r does not contain declared merge key: %s" % (item, mk))
        idx = next((i for i, x in enumerate(result)
                    if isinstance(x, dict) and x.get(mk) == item[mk]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[idx] = _smp_map(result[idx], item, path, keys)
    return result

# ---- validation and defaults ---------------------------------------------------------------------


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_decodable(rt, obj):
    """Type errors the Go decoder would refuse with 400 before any validation."""
    if not isinstance(obj, dict):
        raise err_bad_request("the body of the request is not a JSON object")
    md = obj.get("metadata", {})
    if md is None:
        md = obj["metadata"] = {}
    if not isinstance(md, dict):
        raise err_bad_request("json: cannot unmarshal %s into Go struct field %s.metadata of "
                              "type v1.ObjectMeta" % (type(md).__name__, rt.kind))
    for f in ("labels", "annotations"):
        v = md.get(f)
        if v is None:
            continue
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise err_bad_request("json: cannot unmarshal into Go struct field ObjectMeta."
                                  "metadata.%s of type map[string]string" % f)
    for f in ("name", "namespace", "generateName", "resourceVersion", "uid"):
        if f in md and md[f] is not None and not isinstance(md[f], str):
            raise err_bad_request("json: cannot unmarshal into Go struct field ObjectMeta."
                                  "metadata.%s of type string" % f)


def validate(rt, obj, old=None):
    name = obj["metadata"].get("name", "")
    causes = []
    if rt.kind in ("Service", "Namespace"):
        rx, what, limit = ((_DNS1035_LABEL, "RFC 1035 label", 63) if rt.kind == "Service" else
                           (_DNS1123_LABEL, "RFC 1123 label", 63))
    else:
        rx, what, limit = _DNS1123_SUBDOMAIN, "RFC 1123 subdomain", 253
    if not rx.match(name) or len(name) > limit:
        causes.append(("metadata.name", "FieldValueInvalid",
                       'Invalid value: "%s": a lowercase %s must consist of lower case '
                       "alphanumeric characters or '-'" % (name, what)))
    for k, v in (obj["metadata"].get("labels") or {}).items():
        if not _LABEL_KEY.match(k):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           'Invalid value: "%s": name part must consist of alphanumeric '
                           "characters, '-', '_' or '.'" % k))
        if len(v) > 63 or (v and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", v)):
            causes.append(("metadata.labels", "FieldValueInvalid",
                           'Invalid value: "%s": a valid label must be an empty string or '
                           "consist of alphanumeric characters, '-', '_' or '.'" % v))
    if rt.kind == "Service":
        spec = obj.get("spec") or {}
        ports = spec.get("ports") or []
        if spec.get("type", "ClusterIP") != "ExternalName" and not ports and \
                spec.get("clusterIP") != "None":
            causes.append(("spec.ports", "FieldValueRequired", "Required value"))
        for i, p in enumerate(ports):
            if not isinstance(p.get("port"), int) or not 0 < p["port"] < 65536:
                causes.append(("spec.ports[%d].port" % i, "FieldValueInvalid",
                               "Invalid value: %r: must be between 1 and 65535, inclusive"
                               % (p.get("port"),)))
        if old is not None:
            oc = (old.get("spec") or {}).get("clusterIP")
            nc = spec.get("clusterIP")
            if oc and nc and oc != nc and (old.get("spec") or {}).get("type") != "ExternalName":
                causes.append(("spec.clusterIPs[0]", "FieldValueInvalid",
                               'Invalid value: []string{"%s"}: may not change once set' % nc))
    if rt.kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            try:
                base64.b64decode(v, validate=True)
            except (ValueError, TypeError):
                raise err_bad_request("illegal base64 data in Secret data[%s]" % k)
        if obj.get("type") == "kubernetes.io/tls":
            for k in ("tls.crt", "tls.key"):
                if k not in (obj.get("data") or {}):
                    causes.append(("data[%s]" % k, "FieldValueRequired", "Required value"))
        if old is not None and old.get("type", "Opaque") != obj.get("type", "Opaque"):
            causes.append(("type", "FieldValueInvalid",
                           'Invalid value: "%s": field is immutable' % obj.get("type")))
    if rt.kind == "EndpointSlice":
        if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
            causes.append(("addressType", "FieldValueRequired", "Required value"))
    if rt.kind == "Ingress":
        spec = obj.get("spec") or {}
        if not spec.get("rules") and not spec.get("defaultBackend"):
            causes.append(("spec.rules", "FieldValueRequired", "either `defaultBackend` or "
                           "`rules` must be specified"))
    if causes:
        raise err_invalid(rt, name, causes)


def default_obj(rt, obj, store):
    """The defaults the real apiserver fills in, for the fields tests look at."""
    if rt.kind == "Service":
        spec = obj.setdefault("spec", {})
        typ = spec.setdefault("type", "ClusterIP")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            if "targetPort" not in p and "port" in p:
                p["targetPort"] = p["port"]
            if typ in ("NodePort", "LoadBalancer") and "nodePort" not in p:
                p["nodePort"] = store.alloc_node_port()
        if typ != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = store.alloc_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            if spec["clusterIP"] != "None":
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("sessionAffinity", "None")
        obj.setdefault("status", {"loadBalancer": {}})
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")
        sd = obj.pop("stringData", None)
        if sd:
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
    elif rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": obj.get("status", {}).get("phase", "Active")}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
    elif rt.kind == "EndpointSlice":
        for p in obj.get("ports") or []:
            p.setdefault("protocol", "TCP")
    elif rt.kind == "Ingress":
        for r in (obj.get("spec") or {}).get("rules") or []:
            for p in ((r.get("http") or {}).get("paths") or []):
                p.setdefault("pathType", "ImplementationSpecific")
        obj.setdefault("status", {"loadBalancer": {}})


def convert_legacy_ingress(obj):
    """extensions/v1beta1 (and networking.k8s.io/v1beta1) Ingress shapes -> networking/v1."""
    def backend(b):
        if not isinstance(b, dict) or "serviceName" not in b:
            return b
        port = b.get("servicePort")
        return {"service": {"name": b["serviceName"],
                            "port": {"number": port} if isinstance(port, int) else
                            {"name": port}}}
    spec = obj.get("spec") or {}
    if "backend" in spec:
        spec["defaultBackend"] = backend(spec.pop("backend"))
    for r in spec.get("rules") or []:
        for p in ((r.get("http") or {}).get("paths") or []):
            if "backend" in p:
                p["backend"] = backend(p["backend"])
    obj["apiVersion"] = "networking.k8s.io/v1"
    return obj


def normalize(obj):
    """Key order as the Go structs serialize it: kind, apiVersion, metadata first; metadata
    fields in ObjectMeta order."""
    md = obj.get("metadata") or {}
    nmd = {k: md[k] for k in METADATA_ORDER if k in md}
    nmd.update({k: v for k, v in md.items() if k not in nmd})
    out = {}
    for k in ("kind", "apiVersion"):
        if k in obj:
            out[k] = obj[k]
    out["metadata"] = nmd
    for k, v in obj.items():
        if k not in out:
            out[k] = v
    if "status" in out:  # status is serialized last
        out["status"] = out.pop("status")
    return out


def dumps(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode()

# ---- the store -----------------------------------------------------------------------------------


class Entry:
    """A stored object: the dict (never mutated once stored), its JSON with kind/apiVersion
    (GET, watch) and without them (list items, as the real apiserver serializes lists)."""
    __slots__ = ("obj", "full", "item")

    def __init__(self, obj):
        self.obj = obj
        self.full = dumps(obj)
        self.item = dumps({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})


class Event:
    __slots__ = ("rv", "type", "rt", "ns", "name", "obj", "prev", "full")

    def __init__(self, rv, typ, rt, ns, name, obj, prev, full):
        self.rv, self.type, self.rt, self.ns, self.name = rv, typ, rt, ns, name
        self.obj, self.prev, self.full = obj, prev, full


class Store:
    """All objects, the global resourceVersion counter and the bounded event history.
    Events for resourceVersions (hist_start, rv] are kept; a watch from an older one is
    answered 410 Expired."""

    def __init__(self, history=10000):
        self.cond = threading.Condition(threading.RLock())
        self.rv = 0
        self.hist_start = 0
        self.history = history
        self.events = []             # Event, contiguous: events[i].rv == hist_start + 1 + i
        self.data = {rt.key: {} for rt in RESOURCES}   # key -> {(ns, name): Entry}
        self.sorted_keys = {}        # key -> sorted list of (ns, name), built lazily
        self._ip = 1
        self._node_port = 30000
        self.generation_counter = 0  # bumped on compaction/reset so watches can notice

    def alloc_cluster_ip(self):
        self._ip += 1
        return "10.96.%d.%d" % (self._ip // 250, self._ip % 250 + 1)

    def alloc_node_port(self):
        self._node_port += 1
        return self._node_port

    # -- reading --

    def get(self, rt, ns, name):
        with self.cond:
            return self.data[rt.key].get((ns, name))

    def keys_sorted(self, rt):
        ks = self.sorted_keys.get(rt.key)
        if ks is None:
            ks = self.sorted_keys[rt.key] = sorted(self.data[rt.key])
        return ks

    def snapshot(self, rt, at_rv=None):
        """[(key, Entry)] of <rt> in key order, at the current rv or, rebuilt from the kept
        history, at <at_rv> (410 Expired if it is older than the history)."""
        with self.cond:
            cur = self.data[rt.key]
            if at_rv is None or at_rv >= self.rv:
                return [(k, cur[k]) for k in self.keys_sorted(rt)], self.rv
            if at_rv < self.hist_start:
                raise err_expired("too old resource version: %d (%d)" % (at_rv, self.hist_start))
            state = dict(cur)
            for ev in reversed(self.events[at_rv - self.hist_start:]):
                if ev.rt is not rt:
                    continue
                key = (ev.ns, ev.name)
                if ev.type == "ADDED":
                    state.pop(key, None)
                else:
                    state[key] = Entry(ev.prev)
            return [(k, state[k]) for k in sorted(state)], at_rv

    # -- writing --

    def _commit(self, rt, typ, ns, name, obj, prev):
        """Called with the lock held; <obj> already carries the new resourceVersion."""
        key = (ns, name)
        entry = Entry(obj)
        if typ == "DELETED":
            self.data[rt.key].pop(key, None)
            self.sorted_keys.pop(rt.key, None)
        else:
            if key not in self.data[rt.key]:
                self.sorted_keys.pop(rt.key, None)
            self.data[rt.key][key] = entry
        self.events.append(Event(self.rv, typ, rt, ns, name, obj, prev, entry.full))
        if len(self.events) > self.history:
            drop = len(self.events) - self.history
            del self.events[:drop]
            self.hist_start += drop
        self.cond.notify_all()
        return entry

    def next_rv(self):
        self.rv += 1
        return self.rv

    def compact(self, upto=None):
        """Forgets the history up to <upto> (default: all of it)."""
        with self.cond:
            upto = self.rv if upto is None else max(self.hist_start, min(int(upto), self.rv))
            drop = upto - self.hist_start
            del self.events[:drop]
            self.hist_start = upto
            self.generation_counter += 1
            self.cond.notify_all()
            return upto

# ---- watches -------------------------------------------------------------------------------------


class Watch:
    """One open watch stream; the handler thread runs it."""

    def __init__(self, server, rt, ns, params, path):
        self.server = server
        self.rt = rt
        self.ns = ns
        self.path = path
        self.params = params
        self.closed = False     # end the stream cleanly (timeout-like)
        self.expire = False     # send ERROR 410 then end
        self.started = time.time()

    def describe(self):
        return {"path": self.path, "params": self.params, "resource": self.rt.qualified,
                "namespace": self.ns, "age_seconds": round(time.time() - self.started, 3)}


# ---- the server ----------------------------------------------------------------------------------


class _Listener:
    """A listening socket with its accept thread; it can be closed and reopened on the same
    port (API server down / up)."""

    def __init__(self, server, host, port, tls, api):
        self.server, self.host, self.port, self.tls, self.api = server, host, port, tls, api
        self.sock = None
        self.thread = None
        self.stopping = False

    def open(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self.sock = s
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, args=(s,), daemon=True,
                                       name="kube-fake-accept-%d" % self.port)
        self.thread.start()

    def close(self):
        self.stopping = True
        s, self.sock = self.sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(2)

    def _loop(self, s):
        s.settimeout(0.2)
        while not self.stopping:
            try:
                conn, addr = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self.server._serve_conn, args=(conn, addr, self),
                             daemon=True).start()

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, h, self.port)


def _make_certs(d):
    """A self-signed CA and a server certificate for 127.0.0.1, ::1 and localhost."""
    def run(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=d, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("openssl %s: %s" % (args[0], r.stderr.decode(errors="replace")))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=weir-fake-kube-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kube-apiserver")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext")
    # A client certificate as kind's kubeconfigs carry (user weir-test, group system:masters).
    run("req", "-new", *ec, "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/O=system:masters/CN=weir-test")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.crt", "-days", "3650", "-extfile", "client.ext")
    return os.path.join(d, "ca.crt"), os.path.join(d, "server.crt"), os.path.join(d, "server.key")


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if s == "" or re.search(r"[:#\[\]{},&*!|>'\"%@`]|^[-?\s]|\s$", s) or \
            s.lower() in ("true", "false", "null", "yes", "no", "on", "off", "~") or \
            re.match(r"^[-+.\d]", s):
        return json.dumps(s)
    return s


def to_block_yaml(v, indent=0):
    """Block-style YAML as kubectl writes kubeconfigs (maps with sorted keys, "- " lists)."""
    pad = " " * indent
    lines = []
    if isinstance(v, dict):
        if not v:
            return pad + "{}\n"
        for k in sorted(v):
            x = v[k]
            if isinstance(x, dict) and x:
                lines.append("%s%s:\n%s" % (pad, k, to_block_yaml(x, indent + 2)))
            elif isinstance(x, list) and x:
                lines.append("%s%s:\n%s" % (pad, k, to_block_yaml(x, indent)))
            else:
                lines.append("%s%s: %s\n" % (pad, k, "{}" if x == {} else "[]" if x == []
                                              else _yaml_scalar(x)))
        return "".join(lines)
    if isinstance(v, list):
        for x in v:
            if isinstance(x, (dict, list)) and x:
                body = to_block_yaml(x, indent + 2)
                lines.append(pad + "- " + body[indent + 2:])
            else:
                lines.append("%s- %s\n" % (pad, _yaml_scalar(x)))
        return "".join(lines)
    return pad + _yaml_scalar(v) + "\n"


class FakeKube:
    """The fake API server, in this process (threads)."""

    def __init__(self, host="127.0.0.1", port=0, tls=True, http=False, http_port=0,
                 control_port=0, token=None, directory=None, history=10000,
                 bookmark_interval=60.0, watch_timeout=1800, gzip_responses=True,
                 namespaces=DEFAULT_NAMESPACES, verbose=False):
        self.host = host
        self.token = token or "weir-fake-" + uuid.uuid4().hex
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="kube-fake-")
        os.makedirs(self.dir, exist_ok=True)
        self.store = Store(history)
        self.bookmark_interval = float(bookmark_interval)
        self.watch_timeout = watch_timeout
        self.gzip_responses = gzip_responses
        self.verbose = verbose
        self.ssl_ctx = None
        self.ca_file = None
        self.listeners = []
        self.api_listeners = []
        if tls:
            self.ca_file, crt, key = _make_certs(self.dir)
            self.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_ctx.load_cert_chain(crt, key)
            # Client certificates signed by the CA authenticate too (optional, as x509 auth
            # in kube-apiserver: a client without one is asked for a token instead).
            self.ssl_ctx.verify_mode = ssl.CERT_OPTIONAL
            self.ssl_ctx.load_verify_locations(self.ca_file)
            self.ssl_ctx.set_alpn_protocols(["http/1.1"])
            self.api_listeners.append(_Listener(self, host, port, True, True))
        if http or not tls:
            self.api_listeners.append(_Listener(self, host, http_port, False, True))
        self.control_listener = _Listener(self, host, control_port, False, False)
        self.listeners = self.api_listeners + [self.control_listener]
        self.lock = threading.Lock()
        self.conns = {}                  # socket -> listener, for open API connections
        self.watches = set()
        self.down_until = 0.0
        self.down_mode = None
        self.down_timer = None
        self.latency = 0.0
        self.latency_rx = None
        self.failures = []               # [{"code", "count", "rx", "method"}]
        self.requests = []               # request log (bounded)
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.reopen_error = None
        self.started = False
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # -- life --

    def start(self):
        for lst in self.listeners:
            lst.open()
        self._write_kubeconfig()
        self.started = True
        return self

    def stop(self):
        for lst in self.listeners:
            lst.close()
        self._close_all(conns=True)
        if self.down_timer is not None:
            self.down_timer.cancel()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    @property
    def url(self):
        return self.api_listeners[0].url

    @property
    def http_url(self):
        for lst in self.api_listeners:
            if not lst.tls:
                return lst.url
        return None

    @property
    def control_url(self):
        return self.control_listener.url

    def info(self):
        return {"url": self.url, "http_url": self.http_url, "control_url": self.control_url,
                "kubeconfig": self.kubeconfig, "token": self.token, "ca_file": self.ca_file,
                "dir": self.dir}

    def _write_kubeconfig(self):
        self.write_kubeconfig(self.kubeconfig)

    def write_kubeconfig(self, path=None, auth="token", ca="data", server=None,
                         namespace="default", fmt="yaml"):
        """Writes a kubeconfig (block YAML, as kubectl writes them) and returns its path.
        auth: "token" (inline bearer token), "token-file" (tokenFile: a file next to it),
        "cert" (client-certificate-data/client-key-data, as kind writes), "cert-file"
        (client-certificate/client-key paths) or "none". ca: "data"
        (certificate-authority-data), "file" (certificate-authority: path) or "insecure"
        (insecure-skip-tls-verify). server: default the HTTPS URL. fmt "json" writes JSON."""
        path = path or os.path.join(self.dir, "kubeconfig-%s-%s" % (auth, ca))
        cluster = {"server": server or self.url}
        if ca == "data" and self.ca_file:
            with open(self.ca_file, "rb") as f:
                cluster["certificate-authority-data"] = base64.b64encode(f.read()).decode()
        elif ca == "file" and self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        elif ca == "insecure":
            cluster["insecure-skip-tls-verify"] = True
        user = {}
        if auth == "token":
            user["token"] = self.token
        elif auth == "token-file":
            tf = os.path.join(self.dir, "token")
            with open(tf, "w") as f:
                f.write(self.token)
            user["tokenFile"] = tf
        elif auth in ("cert", "cert-file"):
            crt, key = os.path.join(self.dir, "client.crt"), os.path.join(self.dir, "client.key")
            if auth == "cert-file":
                user["client-certificate"], user["client-key"] = crt, key
            else:
                for k, fn in (("client-certificate-data", crt), ("client-key-data", key)):
                    with open(fn, "rb") as f:
                        user[k] = base64.b64encode(f.read()).decode()
        cfg = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "fake", "cluster": cluster}],
               "users": [{"name": "fake", "user": user}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                         "namespace": namespace}}],
               "current-context": "fake"}
        with open(path, "w") as f:
            f.write(json.dumps(cfg, indent=2) + "\n" if fmt == "json" else to_block_yaml(cfg))
        os.chmod(path, 0o600)
        return path

    def write_serviceaccount(self, directory=None, namespace="default"):
        """The in-cluster files (token, ca.crt, namespace) as a pod finds them under
        /var/run/secrets/kubernetes.io/serviceaccount; returns the directory. In-cluster
        clients also need KUBERNETES_SERVICE_HOST=127.0.0.1 and KUBERNETES_SERVICE_PORT."""
        d = directory or os.path.join(self.dir, "serviceaccount")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "token"), "w") as f:
            f.write(self.token)
        with open(os.path.join(d, "namespace"), "w") as f:
            f.write(namespace)
        if self.ca_file:
            shutil.copyfile(self.ca_file, os.path.join(d, "ca.crt"))
        return d

    # -- object operations (also used by the HTTP handlers) --

    def _rt_for(self, obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
            raise err_bad_request("Object 'Kind' is missing in %r" % (str(obj)[:200],))
        api = obj.get("apiVersion") or ""
        group = api.split("/", 1)[0] if "/" in api else ""
        if obj["kind"] == "Ingress" and group in ("extensions", "networking.k8s.io") and \
                api != "networking.k8s.io/v1":
            convert_legacy_ingress(obj)
            group = "networking.k8s.io"
        rt = BY_KIND.get((group, obj["kind"]))
        if rt is None:
            raise err_bad_request('no kind "%s" is registered for version "%s"'
                                  % (obj["kind"], api))
        return rt

    def create(self, obj, namespace=None, dry_run=False, rt=None, ensure_namespace=False):
        """Creates <obj> as a POST would; returns the stored object."""
        obj = copy.deepcopy(obj)
        if rt is None:
            rt = self._rt_for(obj)
        check_decodable(rt, obj)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.gv
        md = obj["metadata"]
        if rt.namespaced:
            ns = md.get("namespace") or namespace or "default"
            if namespace and md.get("namespace") and md["namespace"] != namespace:
                raise err_bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
            ns = ""
        if not md.get("name"):
            if md.get("generateName"):
                md["name"] = md["generateName"] + "".join(
                    random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            else:
                raise err_invalid(rt, "", [("metadata.name", "FieldValueRequired",
                                            "Required value: name or generateName is required")])
        name = md["name"]
        with self.store.cond:
            if rt.namespaced:
                nse = self.store.get(BY_KIND[("", "Namespace")], "", ns)
                if nse is None:
                    if ensure_namespace:
                        self.create({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": ns}})
                    else:
                        raise err_not_found(BY_KIND[("", "Namespace")], ns)
                elif nse.obj.get("status", {}).get("phase") == "Terminating":
                    raise ApiError(403, "Forbidden", '%s "%s" is forbidden: unable to create new '
                                   "content in namespace %s because it is being terminated"
                                   % (rt.qualified, name, ns), _details(rt, name))
            if self.store.get(rt, ns, name) is not None:
                raise err_already_exists(rt, name)
            default_obj(rt, obj, self.store)
            validate(rt, obj)
            for f in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                md.pop(f, None)
            md.setdefault("uid", str(uuid.uuid4()))
            md["creationTimestamp"] = md.get("creationTimestamp") or now_rfc3339()
            if rt.generation:
                md["generation"] = 1
            else:
                md.pop("generation", None)
            if dry_run:
                md["resourceVersion"] = str(self.store.rv)
                return normalize(obj)
            md["resourceVersion"] = str(self.store.next_rv())
            obj = normalize(obj)
            self.store._commit(rt, "ADDED", ns, name, obj, None)
            return obj

    def _update_locked(self, rt, ns, name, new, subresource=None, dry_run=False,
                       check_rv=True):
        """Replaces the object with <new> as a PUT would (lock held)."""
        cur = self.store.get(rt, ns, name)
        check_decodable(rt, new)
        new = copy.deepcopy(new)
        md = new["metadata"]
        if md.get("name", name) != name:
            raise err_bad_request("the name of the object (%s) does not match the name on the "
                                  "URL (%s)" % (md.get("name"), name))
        if rt.namespaced and md.get("namespace", ns) != ns:
            raise err_bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
        if cur is None:
            if rt.create_on_update and subresource is None:
                md["name"] = name
                return self.create(new, namespace=ns or None, dry_run=dry_run, rt=rt), True
            raise err_not_found(rt, name)
        old = cur.obj
        want_rv = md.get("resourceVersion")
        if check_rv and want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise err_conflict(rt, name)
        if md.get("uid") and md["uid"] != old["metadata"]["uid"]:
            raise ApiError(409, "Conflict", 'Precondition failed: UID in precondition: %s, UID '
                           "in object meta: %s" % (md["uid"], old["metadata"]["uid"]),
                           _details(rt, name))
        new["kind"], new["apiVersion"] = rt.kind, rt.gv
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if rt.status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            md = new["metadata"]
            for f in ("uid", "creationTimestamp", "deletionTimestamp", "generateName"):
                if f in old["metadata"]:
                    md[f] = old["metadata"][f]
            md["name"] = name
            if rt.namespaced:
                md["namespace"] = ns
            else:
                md.pop("namespace", None)
            if "managedFields" not in md and "managedFields" in old["metadata"]:
                md["managedFields"] = old["metadata"]["managedFields"]
            default_obj(rt, new, self.store)
            if rt.kind == "Namespace":
                new["status"] = copy.deepcopy(old.get("status", {}))
        validate(rt, new, old)
        md = new["metadata"]
        if rt.generation:
            gen = old["metadata"].get("generation", 1)
            strip = ("metadata", "status", "kind", "apiVersion")
            changed = {k: v for k, v in new.items() if k not in strip} != \
                {k: v for k, v in old.items() if k not in strip}
            md["generation"] = gen + 1 if changed and subresource is None else gen
        md["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = normalize(new)
        if new == old or dry_run:   # a no-op update keeps the resourceVersion, as in etcd
            return (new if dry_run else old), False
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store._commit(rt, "MODIFIED", ns, name, new, old)
        return new, False

    def update(self, obj, namespace=None, subresource=None, dry_run=False):
        """PUT semantics (409 on a stale metadata.resourceVersion)."""
        rt = self._rt_for(obj)
        md = obj.get("metadata") or {}
        ns = (md.get("namespace") or namespace or "default") if rt.namespaced else ""
        with self.store.cond:
            return self._update_locked(rt, ns, md.get("name", ""), obj, subresource,
                                       dry_run)[0]

    def patch(self, rt, ns, name, patch_type, body, subresource=None, dry_run=False,
              field_manager=None):
        with self.store.cond:
            cur = self.store.get(rt, ns, name)
            if patch_type == "application/apply-patch+yaml":
                applied = _load_body(body, yaml_ok=True)
                if not isinstance(applied, dict):
                    raise err_bad_request("apply patch is not an object")
                if cur is None:
                    applied.setdefault("metadata", {})["name"] = name
                    return self.create(applied, namespace=ns or None, dry_run=dry_run,
                                       rt=rt), True
                applied.setdefault("metadata", {}).pop("resourceVersion", None)
                new = strategic_merge_patch(rt, cur.obj, applied)
                return self._update_locked(rt, ns, name, new, subresource, dry_run)
            if cur is None:
                raise err_not_found(rt, name)
            try:
                p = json.loads(body or b"null")
            except ValueError as e:
                raise err_bad_request("error decoding patch: %s" % e)
            old = copy.deepcopy(cur.obj)
            try:
                if patch_type == "application/merge-patch+json":
                    if not isinstance(p, dict):
                        raise ValueError("a merge patch must be a JSON object")
                    new = json_merge_patch(old, p)
                elif patch_type == "application/strategic-merge-patch+json":
                    new = strategic_merge_patch(rt, old, p)
                elif patch_type == "application/json-patch+json":
                    new = json_patch(old, p)
                else:
                    raise ApiError(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - accepted "
                                   "media types include: application/json-patch+json, "
                                   "application/merge-patch+json, "
                                   "application/apply-patch+yaml, "
                                   "application/strategic-merge-patch+json")
            except ValueError as e:
                if patch_type == "application/json-patch+json":
                    raise ApiError(422, "Invalid", str(e))
                raise err_bad_request(str(e))
            if not isinstance(new, dict):
                raise err_bad_request("the patch did not produce an object")
            # A resourceVersion in the patch is a precondition, as in the real server.
            md = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
            check = isinstance(p, dict) and isinstance(p.get("metadata"), dict) and \
                "resourceVersion" in p["metadata"]
            if not check and patch_type == "application/json-patch+json":
                check = any(isinstance(o, dict) and o.get("path") ==
                            "/metadata/resourceVersion" for o in p)
            if not check:
                md["resourceVersion"] = cur.obj["metadata"]["resourceVersion"]
            return self._update_locked(rt, ns, name, new, subresource, dry_run)

    def delete(self, rt, ns, name, preconditions=None, dry_run=False):
        with self.store.cond:
            cur = self.store.get(rt, ns, name)
            if cur is None:
                raise err_not_found(rt, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != cur.obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", 'Precondition failed: UID in precondition: %s, '
                               "UID in object meta: %s" % (pre["uid"],
                                                           cur.obj["metadata"]["uid"]),
                               _details(rt, name))
            if pre.get("resourceVersion") and \
                    pre["resourceVersion"] != cur.obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion in "
                               "precondition: %s, ResourceVersion in object meta: %s"
                               % (pre["resourceVersion"], cur.obj["metadata"]["resourceVersion"]),
                               _details(rt, name))
            if dry_run:
                return cur.obj
            if rt.kind == "Namespace":
                return self._delete_namespace(rt, name, cur)
            return self._delete_locked(rt, ns, name, cur)

    def _delete_locked(self, rt, ns, name, cur):
        gone = copy.deepcopy(cur.obj)
        gone["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store._commit(rt, "DELETED", ns, name, gone, cur.obj)
        return gone

    def _delete_namespace(self, rt, name, cur):
        """Terminating (MODIFIED), every object in it DELETED, then the namespace DELETED:
        the namespace controller's work, done at once."""
        term = copy.deepcopy(cur.obj)
        term["metadata"]["deletionTimestamp"] = now_rfc3339()
        term["status"] = {"phase": "Terminating"}
        term = normalize(term)
        term["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store._commit(rt, "MODIFIED", "", name, term, cur.obj)
        for other in RESOURCES:
            if not other.namespaced:
                continue
            for key in [k for k in self.store.data[other.key] if k[0] == name]:
                self._delete_locked(other, key[0], key[1], self.store.data[other.key][key])
        cur2 = self.store.get(rt, "", name)
        self._delete_locked(rt, "", name, cur2)
        return term

    def get(self, kind_or_rt, name, namespace=None, api_version=None):
        """The stored object (a copy) or None."""
        rt = kind_or_rt if isinstance(kind_or_rt, RType) else self._rt_for(
            {"kind": kind_or_rt, "apiVersion": api_version or _default_api_version(kind_or_rt)})
        e = self.store.get(rt, (namespace or "default") if rt.namespaced else "", name)
        return None if e is None else copy.deepcopy(e.obj)

    def put_object(self, obj, namespace=None):
        """Creates or replaces <obj> (no resourceVersion check); for test setup."""
        obj = copy.deepcopy(obj)
        rt = self._rt_for(obj)
        check_decodable(rt, obj)
        md = obj["metadata"]
        ns = (md.get("namespace") or namespace or "default") if rt.namespaced else ""
        with self.store.cond:
            if self.store.get(rt, ns, md.get("name", "")) is None:
                return self.create(obj, namespace=ns or None, ensure_namespace=True)
            md.pop("resourceVersion", None)
            if rt.status and "status" in obj:
                self._update_locked(rt, ns, md["name"], obj, "status", check_rv=False)
            return self._update_locked(rt, ns, md["name"], obj, check_rv=False)[0]

    def load_objects(self, objs, namespace=None, kind=None, api_version=None):
        """Loads objects, List objects or arrays of them (the fixture shapes): items of a
        List get the List's kind minus "List" and its apiVersion. Existing objects are
        replaced; objects without a kind get <kind> (and <api_version>). Returns the number
        of objects stored."""
        n = 0
        if isinstance(objs, list):
            for o in objs:
                n += self.load_objects(o, namespace, kind, api_version)
            return n
        if not isinstance(objs, dict):
            raise err_bad_request("not an object: %r" % (str(objs)[:100],))
        lkind = objs.get("kind", "")
        if "items" in objs and (lkind.endswith("List") or not lkind):
            if not isinstance(objs["items"], list):
                raise err_bad_request("items is not a list")
            item_kind = lkind[:-4] if lkind.endswith("List") and lkind != "List" else kind
            for it in objs["items"]:
                if not isinstance(it, dict):
                    raise err_bad_request("list item is not an object")
                it = dict(it)
                if item_kind and "kind" not in it:
                    it["kind"] = item_kind
                if "apiVersion" not in it and (objs.get("apiVersion") or api_version):
                    it["apiVersion"] = objs.get("apiVersion") or api_version
                n += self.load_objects(it, namespace, kind, api_version)
            return n
        if kind and "kind" not in objs:
            objs = dict(objs, kind=kind)
            objs.setdefault("apiVersion", api_version or _default_api_version(kind))
        self.put_object(objs, namespace)
        return n + 1

    def load_file(self, path, namespace=None, kind=None, api_version=None):
        with open(path, "rb") as f:
            data = f.read()
        docs = _load_body(data, yaml_ok=True, multi=True)
        return self.load_objects([d for d in docs if d is not None], namespace, kind,
                                 api_version)

    # -- test controls --

    def compact(self, resource_version=None, expire_watches=True):
        """Forgets the event history (up to <resource_version>, default all): a watch or an
        Exact/continued list from an older resourceVersion then gets 410 Expired. With
        <expire_watches>, every open watch also gets an ERROR 410 event and ends, as a watcher
        the apiserver dropped would."""
        upto = self.store.compact(resource_version)
        if expire_watches:
            with self.lock:
                ws = list(self.watches)
            for w in ws:
                w.expire = True
            with self.store.cond:
                self.store.cond.notify_all()
        return upto

    def close_watches(self):
        """Ends every open watch stream cleanly (as timeoutSeconds would)."""
        with self.lock:
            ws = list(self.watches)
        for w in ws:
            w.closed = True
        with self.store.cond:
            self.store.cond.notify_all()
        return len(ws)

    def down(self, seconds, mode="refuse"):
        """Makes the API unavailable for <seconds>: mode "refuse" closes the listening sockets
        (connections refused) and every open connection; "hang" accepts but never answers
        and freezes open watches (closed when it ends); "503" answers every request 503 and
        closes open watches. The control port stays up."""
        if mode not in ("refuse", "hang", "503"):
            raise err_bad_request("mode is refuse, hang or 503")
        with self.lock:
            self.down_mode = mode
            self.down_until = time.monotonic() + float(seconds)
            if self.down_timer is not None:
                self.down_timer.cancel()
            self.down_timer = threading.Timer(float(seconds), self.up)
            self.down_timer.daemon = True
            self.down_timer.start()
        if mode == "refuse":
            for lst in self.api_listeners:
                lst.close()
            self._close_all(conns=True)
        elif mode == "503":
            self._close_all(conns=True)
        with self.store.cond:
            self.store.cond.notify_all()

    def up(self):
        """Ends a down() period early (or on its timer)."""
        if self.down_mode == "hang":
            self._close_all(conns=True)   # hung requests and frozen watches just end
        with self.lock:
            mode, self.down_mode = self.down_mode, None
            self.down_until = 0.0
            if self.down_timer is not None:
                self.down_timer.cancel()
                self.down_timer = None
        if mode == "refuse":
            for lst in self.api_listeners:
                for _ in range(50):
                    try:
                        lst.open()
                        self.reopen_error = None
                        break
                    except OSError as e:
                        self.reopen_error = "cannot listen again on port %d: %s" % (lst.port, e)
                        time.sleep(0.1)
                if self.reopen_error:
                    sys.stderr.write("kube-fake: %s\n" % self.reopen_error)
        with self.store.cond:
            self.store.cond.notify_all()

    def is_down(self):
        return self.down_mode is not None

    def set_latency(self, ms, path_regex=None):
        """Delays every API answer by <ms> (only paths matching <path_regex> if given)."""
        self.latency = float(ms) / 1000.0
        self.latency_rx = re.compile(path_regex) if path_regex else None

    def fail_next(self, code=500, count=1, path_regex=None, method=None, retry_after=None):
        """The next <count> API requests (matching) are answered <code> with a Status."""
        with self.lock:
            self.failures.append({"code": int(code), "count": int(count),
                                  "rx": re.compile(path_regex) if path_regex else None,
                                  "method": method, "retry_after": retry_after})

    def reset(self):
        """Back to the start: only the default namespaces, watches closed. The
        resourceVersion counter keeps going (a client's old RV gets 410)."""
        self.close_watches()
        with self.store.cond:
            for rt in RESOURCES:
                for key in list(self.store.data[rt.key]):
                    if rt.kind == "Namespace" and key[1] in DEFAULT_NAMESPACES:
                        continue
                    self._delete_locked(rt, key[0], key[1], self.store.data[rt.key][key])
        self.compact(expire_watches=False)

    def state(self):
        with self.store.cond:
            counts = {rt.qualified: len(self.store.data[rt.key]) for rt in RESOURCES}
            st = {"resourceVersion": self.store.rv, "historyStart": self.store.hist_start,
                  "historySize": len(self.store.events), "historyLimit": self.store.history,
                  "objects": counts}
        with self.lock:
            st["watches"] = [w.describe() for w in self.watches]
            st["down"] = self.down_mode
            st["reopen_error"] = self.reopen_error
            st["latency_ms"] = self.latency * 1000.0
            st["bookmark_interval"] = self.bookmark_interval
        return st

    def request_log(self, clear=False):
        with self.lock:
            out = list(self.requests)
            if clear:
                self.requests.clear()
        return out

    def _close_all(self, conns=False):
        with self.lock:
            ws = list(self.watches)
            cs = list(self.conns) if conns else []
        for w in ws:
            w.closed = True
        for c in cs:
            try:
                socket.socket.shutdown(c, socket.SHUT_RDWR)
            except OSError:
                pass
        with self.store.cond:
            self.store.cond.notify_all()

    # -- connections --

    def _serve_conn(self, conn, addr, listener):
        raw = conn
        if listener.api and self.down_mode == "hang":
            # A partition: the connection is there but nothing ever comes back, not even the
            # TLS handshake. It is dropped when the outage ends.
            while self.down_mode == "hang":
                time.sleep(0.05)
            conn.close()
            return
        try:
            if listener.tls:
                conn.settimeout(10)
                conn = self.ssl_ctx.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
        except (OSError, ssl.SSLError):
            try:
                raw.close()
            except OSError:
                pass
            return
        if listener.api:
            with self.lock:
                self.conns[conn] = listener
        try:
            _Handler(conn, addr, (self, listener))
        except (OSError, ssl.SSLError, ValueError):
            pass
        except Exception:  # noqa: BLE001 - a bug in the fake must not kill the process
            if self.verbose:
                traceback.print_exc()
        finally:
            with self.lock:
                self.conns.pop(conn, None)
            try:
                conn.close()
            except OSError:
                pass


def _default_api_version(kind):
    for rt in RESOURCES:
        if rt.kind == kind:
            return rt.gv
    return "v1"


def _load_body(data, yaml_ok=False, multi=False):
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    s = data.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            v = json.loads(s)
            return [v] if multi else v
        except ValueError as e:
            if not (yaml_ok and yaml):
                raise err_bad_request("error decoding JSON: %s" % e)
    if not yaml_ok or yaml is None:
        raise err_bad_request("the body is not JSON")
    try:
        docs = list(yaml.safe_load_all(s))
    except yaml.YAMLError as e:
        raise err_bad_request("error decoding YAML: %s" % e)
    return docs if multi else (docs[0] if docs else None)

# ---- protobuf request bodies ---------------------------------------------------------------------
#
# kubectl's typed generators (`kubectl create namespace|secret|configmap|service ...`) send
# application/vnd.kubernetes.protobuf: the magic "k8s\0", then a runtime.Unknown
# {typeMeta=1 {apiVersion=1, kind=2}, raw=2}. raw is decoded with the field numbers of
# k8s.io/api generated.proto for the kinds below; zero values are dropped (JSON omitempty).
# Answers are always JSON, which clients accept whatever they asked for.

_PB = {
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"),
                   5: ("uid", "s"), 6: ("resourceVersion", "s"), 7: ("generation", "i"),
                   11: ("labels", "map"), 12: ("annotations", "map"),
                   14: ("finalizers", "[s]")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec")},
    "ServiceSpec": {1: ("ports", "[ServicePort]"), 2: ("selector", "map"),
                    3: ("clusterIP", "s"), 4: ("type", "s"), 5: ("externalIPs", "[s]"),
                    7: ("sessionAffinity", "s"), 8: ("loadBalancerIP", "s"),
                    9: ("loadBalancerSourceRanges", "[s]"), 10: ("externalName", "s"),
                    11: ("externalTrafficPolicy", "s"), 12: ("healthCheckNodePort", "i"),
                    13: ("publishNotReadyAddresses", "b"), 17: ("ipFamilyPolicy", "s"),
                    18: ("clusterIPs", "[s]"), 19: ("ipFamilies", "[s]"),
                    20: ("allocateLoadBalancerNodePorts", "b"),
                    21: ("loadBalancerClass", "s"), 22: ("internalTrafficPolicy", "s")},
    "ServicePort": {1: ("name", "s"), 2: ("protocol", "s"), 3: ("port", "i"),
                    4: ("targetPort", "intstr"), 5: ("nodePort", "i"),
                    6: ("appProtocol", "s")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "mapbytes"), 3: ("type", "s"),
               4: ("stringData", "map"), 5: ("immutable", "b")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"),
                  3: ("binaryData", "mapbytes"), 4: ("immutable", "b")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[s]")},
    "Ingress": {1: ("metadata", "ObjectMeta"), 2: ("spec", "IngressSpec")},
    "IngressSpec": {1: ("defaultBackend", "IngressBackend"), 2: ("tls", "[IngressTLS]"),
                    3: ("rules", "[IngressRule]"), 4: ("ingressClassName", "s")},
    "IngressBackend": {3: ("resource", "TypedLocalObjectReference"),
                       4: ("service", "IngressServiceBackend")},
    "TypedLocalObjectReference": {1: ("apiGroup", "s"), 2: ("kind", "s"), 3: ("name", "s")},
    "IngressServiceBackend": {1: ("name", "s"), 2: ("port", "ServiceBackendPort")},
    "ServiceBackendPort": {1: ("name", "s"), 2: ("number", "i")},
    "IngressTLS": {1: ("hosts", "[s]"), 2: ("secretName", "s")},
    "IngressRule": {1: ("host", "s"), 2: ("", "IngressRuleValue")},   # inlined in JSON
    "IngressRuleValue": {1: ("http", "HTTPIngressRuleValue")},
    "HTTPIngressRuleValue": {1: ("paths", "[HTTPIngressPath]")},
    "HTTPIngressPath": {1: ("path", "s"), 2: ("backend", "IngressBackend"),
                        3: ("pathType", "s")},
}
_PB_KINDS = {("v1", "Service"), ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Namespace"),
             ("networking.k8s.io/v1", "Ingress")}


def _pb_varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _pb_fields(buf):
    """[(field number, value)]: ints for varints, bytes for length-delimited fields."""
    out = []
    i = 0
    while i < len(buf):
        key, i = _pb_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _pb_varint(buf, i)
        elif wt == 2:
            n, i = _pb_varint(buf, i)
            v = bytes(buf[i:i + n])
            if len(v) != n:
                raise ValueError("truncated field %d" % num)
            i += n
        elif wt == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.append((num, v))
    return out


def _pb_message(buf, msg):
    schema = _PB[msg]
    out = {}
    for num, v in _pb_fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if typ == "s":
            if v:
                out[name] = v.decode("utf-8")
        elif typ == "i":
            v = v - (1 << 64) if v >= 1 << 63 else v
            if v:
                out[name] = v
        elif typ == "b":
            out[name] = bool(v)
        elif typ == "[s]":
            out.setdefault(name, []).append(v.decode("utf-8"))
        elif typ in ("map", "mapbytes"):
            entry = dict(_pb_fields(v))
            val = entry.get(2, b"")
            out.setdefault(name, {})[entry.get(1, b"").decode("utf-8")] = \
                base64.b64encode(val).decode() if typ == "mapbytes" else val.decode("utf-8")
        elif typ == "intstr":
            f = dict(_pb_fields(v))
            out[name] = f.get(3, b"").decode("utf-8") if f.get(1) == 1 else f.get(2, 0)
        elif typ.startswith("["):
            out.setdefault(name, []).append(_pb_message(v, typ[1:-1]))
        else:
            sub = _pb_message(v, typ)
            if not name:
                out.update(sub)
            elif sub:
                out[name] = sub
    return out


def decode_k8s_protobuf(body):
    if not body.startswith(b"k8s\x00"):
        raise err_bad_request("protobuf body without the k8s magic prefix")
    try:
        env = dict(_pb_fields(body[4:]))
        tm = dict(_pb_fields(env.get(1, b"")))
        api, kind = tm.get(1, b"").decode(), tm.get(2, b"").decode()
        if (api, kind) not in _PB_KINDS:
            raise ApiError(415, "UnsupportedMediaType", "this fake decodes protobuf bodies of "
                           "%s only (got %s %s); send JSON"
                           % (", ".join(sorted("%s %s" % k for k in _PB_KINDS)), api, kind))
        obj = {"kind": kind, "apiVersion": api}
        obj.update(_pb_message(env.get(2, b""), kind))
        return obj
    except (ValueError, UnicodeDecodeError) as e:
        raise err_bad_request("error decoding protobuf: %s" % e)

# ---- discovery -----------------------------------------------------------------------------------


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_list(group, version):
    res = []
    for rt in RESOURCES:
        if rt.group != group or rt.version != version:
            continue
        r = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
             "kind": rt.kind, "verbs": VERBS if rt.kind != "Namespace" else
             [v for v in VERBS if v != "deletecollection"]}
        if rt.short:
            r["shortNames"] = rt.short
        if rt.categories:
            r["categories"] = rt.categories
        res.append(r)
        if rt.status:
            res.append({"name": rt.plural + "/status", "singularName": "",
                        "namespaced": rt.namespaced, "kind": rt.kind,
                        "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": version if not group else "%s/%s" % (group, version),
            "resources": res}


def _aggregated(legacy, dv):
    items = []
    groups = [""] if legacy else GROUPS
    for g in groups:
        rs = []
        for rt in RESOURCES:
            if rt.group != g:
                continue
            r = {"resource": rt.plural,
                 "responseKind": {"group": g, "version": rt.version, "kind": rt.kind},
                 "scope": "Namespaced" if rt.namespaced else "Cluster",
                 "singularResource": rt.singular,
                 "verbs": VERBS if rt.kind != "Namespace" else
                 [v for v in VERBS if v != "deletecollection"]}
            if rt.short:
                r["shortNames"] = rt.short
            if rt.categories:
                r["categories"] = rt.categories
            if rt.status:
                r["subresources"] = [{"subresource": "status", "responseKind":
                                      {"group": g, "version": rt.version, "kind": rt.kind},
                                      "verbs": ["get", "patch", "update"]}]
            rs.append(r)
        items.append({"metadata": {"name": g, "creationTimestamp": None},
                      "versions": [{"version": "v1", "resources": rs, "freshness": "Current"}]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/" + dv,
            "metadata": {}, "items": items}


def _openapi_v3_root():
    paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=FAKE0001"}}
    for g in GROUPS:
        paths["apis/%s/v1" % g] = {"serverRelativeURL": "/openapi/v3/apis/%s/v1?hash=FAKE0001"
                                   % g}
    return {"paths": paths}


def _openapi_v3_gv(group, version):
    """Just enough OpenAPI v3 for kubectl: each PATCH operation names its GVK and takes the
    fieldValidation parameter, so kubectl leaves validation to the server. It lists no
    strategic-merge-patch body, so kubectl apply computes patches from its compiled-in
    types (exact for built-in kinds) instead of from schemas this fake does not carry."""
    paths = {}
    for rt in RESOURCES:
        if rt.group != group or rt.version != version:
            continue
        gvk = {"group": group, "version": version, "kind": rt.kind}
        base = rt.path_prefix() + ("/namespaces/{namespace}" if rt.namespaced else "") + \
            "/" + rt.plural
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]
        body = {"content": {t: {"schema": {"type": "object"}} for t in
                            ("application/json-patch+json", "application/merge-patch+json",
                             "application/apply-patch+yaml")}}
        op = {"operationId": "patch" + rt.kind, "parameters": params, "requestBody": body,
              "responses": {"200": {"description": "OK"}},
              "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}
        post = {"operationId": "create" + rt.kind, "parameters": params,
                "responses": {"201": {"description": "Created"}},
                "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk}
        paths[base + "/{name}"] = {"patch": op}
        paths[base] = {"post": post}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}

# ---- tables --------------------------------------------------------------------------------------


def _partial(obj):
    md = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}


def _table_row(rt, obj, include):
    cells = [obj["metadata"].get("name", "")]
    try:
        cells += rt.cells(obj) if rt.cells else [age_of(obj)]
    except Exception:  # noqa: BLE001 - malformed fixtures still print
        cells += ["<error>"] * (len(rt.columns) - 1)
    row = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = _partial(obj)
    return row


def _table(rt, objs, rv, include, cont=None, remaining=None):
    md = {"resourceVersion": str(rv)}
    if cont:
        md["continue"] = cont
    if remaining:
        md["remainingItemCount"] = remaining
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
            "columnDefinitions": rt.columns,
            "rows": [_table_row(rt, o, include) for o in objs]}

# ---- HTTP ----------------------------------------------------------------------------------------


def _want_table(accept):
    return "as=Table" in (accept or "")


def _want_partial(accept):
    return "as=PartialObjectMetadata" in (accept or "")


def _bool(v):
    return v in ("1", "true", "True")


class _Writer:
    """An unbuffered writer that always writes everything (sendall)."""

    def __init__(self, sock):
        self.sock = sock

    def write(self, data):
        self.sock.sendall(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-fake"
    sys_version = ""

    def __init__(self, request, client_address, owner):
        self.kube, self.listener = owner
        self.rfile = None
        super().__init__(request, client_address, None)

    def setup(self):
        self.connection = self.request
        self.rfile = self.connection.makefile("rb", -1)
        self.wfile = _Writer(self.connection)

    def log_message(self, fmt, *args):
        if self.kube.verbose:
            sys.stderr.write("kube-fake: %s\n" % (fmt % args))

    # Every method goes through _dispatch.
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- plumbing --

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code, body, ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = dumps(body)
        enc = None
        if self.kube.gzip_responses and len(body) > GZIP_THRESHOLD and \
                "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=1)
            enc = "gzip"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", "fake")
        if enc:
            self.send_header("Content-Encoding", enc)
            self.send_header("Vary", "Accept-Encoding")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = code

    def _send_error(self, e):
        self._send(e.code, e.status, headers=e.headers)

    def _log(self, code):
        with self.kube.lock:
            self.kube.requests.append({"method": self.command, "path": self._path,
                                       "query": self._query_string, "status": code,
                                       "time": time.time(),
                                       "user_agent": self.headers.get("User-Agent", ""),
                                       "accept": self.headers.get("Accept", "")})
            if len(self.kube.requests) > 20000:
                del self.kube.requests[:10000]

    def _dispatch(self):
        self._status = 0
        u = urllib.parse.urlsplit(self.path)
        self._path = u.path
        self._query_string = u.query
        q = {}
        for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
            q[k] = v
        self._q = q
        kube = self.kube
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if u.path.startswith("/_fake/"):
            try:
                self._control(u.path, q, body)
            except ApiError as e:
                self._send_error(e)
            except Exception as e:  # noqa: BLE001
                self._send(500, status_obj(500, "InternalError", "control: %s" % e))
            return
        if not self.listener.api:
            self._send_error(NOT_FOUND_PATH)
            return
        # Outages and injected faults come first, as a network or a dying server would.
        if kube.down_mode == "hang":
            while kube.down_mode == "hang":
                time.sleep(0.05)
            self.close_connection = True
            return
        if kube.down_mode == "refuse":
            self.close_connection = True
            return
        if kube.down_mode == "503":
            self._send(503, status_obj(503, "ServiceUnavailable", "the server is currently "
                                       "unable to handle the request"))
            self._log(503)
            return
        if kube.latency > 0 and (kube.latency_rx is None or kube.latency_rx.search(u.path)):
            time.sleep(kube.latency)
        with kube.lock:
            fail = None
            for f in kube.failures:
                if f["count"] > 0 and (f["rx"] is None or f["rx"].search(u.path)) and \
                        (f["method"] is None or f["method"] == self.command):
                    f["count"] -= 1
                    fail = f
                    break
            kube.failures = [f for f in kube.failures if f["count"] > 0]
        if fail is not None:
            reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                       504: "Timeout", 410: "Expired", 403: "Forbidden", 401: "Unauthorized"}
            hdrs = [("Retry-After", str(fail["retry_after"]))] if fail["retry_after"] else []
            self._send(fail["code"], status_obj(fail["code"], reasons.get(fail["code"],
                                                                          "InternalError"),
                                                "injected failure"), headers=hdrs)
            self._log(fail["code"])
            return
        auth = self.headers.get("Authorization") or ""
        if auth != "Bearer " + kube.token and not (self.listener.tls and not auth and
                                                   self._client_cert()):
            self._send(401, status_obj(401, "Unauthorized", "Unauthorized"))
            self._log(401)
            return
        try:
            self._api(u.path, q, body)
        except ApiError as e:
            if not self._status:
                self._send_error(e)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001
            if kube.verbose:
                traceback.print_exc()
            if not self._status:
                self._send(500, status_obj(500, "InternalError", "fake: %s" % e))
        self._log(self._status)

    # -- the API --

    def _api(self, path, q, body):
        accept = self.headers.get("Accept") or ""
        m = self.command
        if path in ("/healthz", "/livez", "/readyz"):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version":
            self._send(200, dumps(SERVER_VERSION))
            return
        if path in ("/api", "/apis"):
            dv = "v2" if "apidiscovery.k8s.io;v=v2;" in accept or \
                accept.endswith("apidiscovery.k8s.io;v=v2") else \
                ("v2beta1" if "v=v2beta1" in accept else None)
            if dv:
                self._send(200, _aggregated(path == "/api", dv),
                           "application/json;g=apidiscovery.k8s.io;v=%s;as=APIGroupDiscoveryList"
                           % dv)
            elif path == "/api":
                self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": [
                                     {"clientCIDR": "0.0.0.0/0",
                                      "serverAddress": "%s:%d" % (self.listener.host,
                                                                  self.listener.port)}]})
            else:
                groups = []
                for g in GROUPS:
                    gv = {"groupVersion": g + "/v1", "version": "v1"}
                    groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
                self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            return
        if path == "/openapi/v3":
            self._send(200, _openapi_v3_root())
            return
        if path.startswith("/openapi/v3/"):
            gvpath = path[len("/openapi/v3/"):]
            if gvpath == "api/v1":
                self._send(200, _openapi_v3_gv("", "v1"))
                return
            parts = gvpath.split("/")
            if len(parts) == 3 and parts[0] == "apis" and parts[1] in GROUPS and \
                    parts[2] == "v1":
                self._send(200, _openapi_v3_gv(parts[1], "v1"))
                return
            raise NOT_FOUND_PATH
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "apis" and parts[1] in GROUPS:
            if len(parts) == 2:
                gv = {"groupVersion": parts[1] + "/v1", "version": "v1"}
                self._send(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                                 "versions": [gv], "preferredVersion": gv})
                return
            group, version, rest = parts[1], parts[2], parts[3:]
        elif len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            raise NOT_FOUND_PATH
        if version != "v1":
            raise NOT_FOUND_PATH
        if not rest:
            if m != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            self._send(200, _resource_list(group, version))
            return
        watch_path = False
        if rest[0] == "watch":
            watch_path = True
            rest = rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces" and \
                (group, version, rest[2]) in BY_PATH:
            ns = rest[1]
            rest = rest[2:]
        rt = BY_PATH.get((group, version, rest[0])) if rest else None
        if rt is None or len(rest) > 3:
            raise NOT_FOUND_PATH
        if ns is not None and not rt.namespaced:
            raise NOT_FOUND_PATH
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and (sub != "status" or not rt.status):
            raise NOT_FOUND_PATH
        if rt.namespaced and name is not None and ns is None:
            raise NOT_FOUND_PATH
        nsk = (ns or "") if rt.namespaced else ""
        dry = q.get("dryRun") == "All"
        if name is None:
            if m == "GET" or m == "HEAD":
                if watch_path or _bool(q.get("watch", "")):
                    self._watch(rt, ns, q, accept)
                else:
                    self._list(rt, ns, q, accept)
            elif m == "POST" and not watch_path:
                obj = self._decode(body, rt)
                if rt.namespaced and ns is None:
                    raise NOT_FOUND_PATH
                if obj.get("kind") and obj.get("kind") != rt.kind:
                    raise err_bad_request("the API version in the data (%s) does not match the "
                                          "expected API version (%s)"
                                          % (obj.get("apiVersion"), rt.gv))
                out = self.kube.create(obj, namespace=ns, dry_run=dry, rt=rt)
                self._send(201, self._render(rt, out, accept))
            elif m == "DELETE" and not watch_path:
                self._delete_collection(rt, ns, q)
            else:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            return
        if watch_path:
            # /watch/.../NAME: a watch with a metadata.name field selector.
            q = dict(q)
            q["fieldSelector"] = ",".join(x for x in (q.get("fieldSelector"),
                                                      "metadata.name=" + name) if x)
            self._watch(rt, ns, q, accept)
            return
        if m in ("GET", "HEAD"):
            e = self.kube.store.get(rt, nsk, name)
            if e is None:
                raise err_not_found(rt, name)
            if _want_table(accept):
                self._send(200, _table(rt, [e.obj], e.obj["metadata"]["resourceVersion"],
                                       q.get("includeObject", "Metadata")),
                           "application/json;as=Table;v=v1;g=meta.k8s.io")
            elif _want_partial(accept):
                self._send(200, _partial(e.obj))
            else:
                self._send(200, e.full)
        elif m == "PUT":
            obj = self._decode(body, rt)
            with self.kube.store.cond:
                out, created = self.kube._update_locked(rt, nsk, name, obj, sub, dry)
            self._send(201 if created else 200, self._render(rt, out, accept))
        elif m == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            with self.kube.store.cond:
                out, created = self.kube.patch(rt, nsk, name, ctype, body, sub, dry,
                                               q.get("fieldManager"))
            self._send(201 if created else 200, self._render(rt, out, accept))
        elif m == "DELETE" and sub is None:
            opts = {}
            if body.strip():
                try:
                    opts = json.loads(body)
                except ValueError as e:
                    raise err_bad_request("error decoding DeleteOptions: %s" % e)
            out = self.kube.delete(rt, nsk, name, (opts or {}).get("preconditions"), dry)
            self._send(200, self._render(rt, out, accept))
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on "
                           "the requested resource")

    def _client_cert(self):
        try:
            return self.connection.getpeercert()
        except (ValueError, OSError):
            return None

    def _peer_gone(self):
        """True when the client closed its end (or sent anything: an HTTP/1.1 client does
        not pipeline behind a streaming answer, so bytes mean a TLS close_notify)."""
        try:
            d = socket.socket.recv(self.connection, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return d is not None

    def _decode(self, body, rt):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":
            return decode_k8s_protobuf(body)
        if ctype not in ("application/json", "application/yaml", "*/*", ""):
            raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an '
                           'unknown format - accepted media types include: application/json, '
                           'application/yaml, application/vnd.kubernetes.protobuf')
        obj = _load_body(body, yaml_ok=(ctype == "application/yaml"))
        if not isinstance(obj, dict):
            raise err_bad_request("the body of the request is not a JSON object")
        return obj

    def _render(self, rt, obj, accept):
        if _want_table(accept):
            return _table(rt, [obj], obj["metadata"]["resourceVersion"], "Metadata")
        return dumps(obj)

    def _selectors(self, rt, q):
        return (parse_label_selector(q.get("labelSelector", "")),
                parse_field_selector(rt, q.get("fieldSelector", "")))

    def _list(self, rt, ns, q, accept):
        lsel, fsel = self._selectors(rt, q)
        rv_param = q.get("resourceVersion", "")
        match = q.get("resourceVersionMatch", "")
        limit = int(q.get("limit") or 0)
        cont = q.get("continue", "")
        at = None
        start_after = None
        store = self.kube.store
        if match and match not in ("Exact", "NotOlderThan"):
            raise err_invalid(rt, "", [("resourceVersionMatch", "FieldValueNotSupported",
                                        'Unsupported value: "%s"' % match)])
        if match and not rv_param:
            raise err_invalid(rt, "", [("resourceVersionMatch", "FieldValueForbidden",
                                        "Forbidden: resourceVersionMatch is forbidden unless "
                                        "resourceVersion is provided")])
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont + "=" * (-len(cont) % 4)))
                at = int(tok["rv"])
                start_after = tuple(str(tok["start"]).split("/", 1))
            except (ValueError, KeyError, TypeError):
                raise err_bad_request("continue key is not valid: incorrect encoded start "
                                      "resourceVersion (version meta.k8s.io/v1)")
            if rv_param:
                raise err_bad_request('specifying resource version is not allowed when using '
                                      'continue')
            if at < store.hist_start:
                raise err_expired("The provided continue parameter is too old to display a "
                                  "consistent list result. You can start a new list without "
                                  "the continue parameter, or use the continue token in this "
                                  "response to retrieve the remainder of the results. "
                                  "Continuing with the provided token results in an "
                                  "inconsistent list - objects that were created, modified, "
                                  "or deleted between the time the first chunk was returned "
                                  "and now may show up in the list.")
        elif rv_param and rv_param != "0":
            try:
                want = int(rv_param)
            except ValueError:
                raise err_bad_request("invalid resource version: %s" % rv_param)
            if match == "Exact":
                if want > store.rv:
                    raise ApiError(504, "Timeout", "Timeout: Too large resource version: %d, "
                                   "current: %d" % (want, store.rv),
                                   {"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}],
                                    "retryAfterSeconds": 1})
                if want < store.hist_start:
                    raise err_expired("The resourceVersion for the provided list is too old.")
                at = want
            else:  # NotOlderThan: wait (3 s, as the watch cache) for it to be reached
                deadline = time.monotonic() + 3.0
                with store.cond:
                    while store.rv < want and time.monotonic() < deadline:
                        store.cond.wait(deadline - time.monotonic())
                    if store.rv < want:
                        raise ApiError(504, "Timeout", "Timeout: Too large resource version: "
                                       "%d, current: %d" % (want, store.rv),
                                       {"causes": [{"reason": "ResourceVersionTooLarge",
                                                    "message": "Too large resource version"}],
                                        "retryAfterSeconds": 1})
        pairs, list_rv = store.snapshot(rt, at)
        filtering = bool(lsel or fsel)
        out = []
        next_key = None
        remaining = 0
        for key, e in pairs:
            if ns is not None and key[0] != ns:
                continue
            if start_after is not None and key <= start_after:
                continue
            if filtering and not (label_match(lsel, e.obj["metadata"].get("labels"))
                                  and field_match(fsel, e.obj)):
                continue
            if limit and len(out) >= limit:
                remaining += 1
                continue
            out.append(e)
            next_key = "/".join(key)
        md = {"resourceVersion": str(list_rv)}
        if remaining:
            md["continue"] = base64.urlsafe_b64encode(dumps(
                {"v": "meta.k8s.io/v1", "rv": list_rv, "start": next_key})).decode().rstrip("=")
            if not filtering:
                md["remainingItemCount"] = remaining
        if _want_table(accept):
            t = _table(rt, [e.obj for e in out], list_rv, q.get("includeObject", "Metadata"),
                       md.get("continue"), md.get("remainingItemCount"))
            self._send(200, t, "application/json;as=Table;v=v1;g=meta.k8s.io")
            return
        if _want_partial(accept):
            self._send(200, {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                             "metadata": md, "items": [_partial(e.obj) for e in out]})
            return
        head = dumps({"kind": rt.kind + "List", "apiVersion": rt.gv, "metadata": md})
        body = head[:-1] + b',"items":[' + b",".join(e.item for e in out) + b"]}"
        self._send(200, body)

    def _delete_collection(self, rt, ns, q):
        lsel, fsel = self._selectors(rt, q)
        store = self.kube.store
        deleted = []
        with store.cond:
            for key in list(store.keys_sorted(rt)):
                e = store.data[rt.key].get(key)
                if e is None or (ns is not None and key[0] != ns):
                    continue
                if label_match(lsel, e.obj["metadata"].get("labels")) and \
                        field_match(fsel, e.obj):
                    deleted.append(self.kube.delete(rt, key[0], key[1],
                                                    dry_run=q.get("dryRun") == "All"))
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in deleted]
        self._send(200, {"kind": rt.kind + "List", "apiVersion": rt.gv,
                         "metadata": {"resourceVersion": str(store.rv)}, "items": items})

    # -- watch --

    def _watch(self, rt, ns, q, accept):
        kube = self.kube
        store = kube.store
        lsel, fsel = self._selectors(rt, q)
        rv_param = q.get("resourceVersion", "")
        bookmarks = _bool(q.get("allowWatchBookmarks", ""))
        initial = q.get("sendInitialEvents")
        timeout = q.get("timeoutSeconds")
        table = _want_table(accept)
        include = q.get("includeObject", "Metadata")
        try:
            timeout = float(timeout) if timeout else float(kube.watch_timeout)
        except ValueError:
            raise err_bad_request("invalid timeoutSeconds")
        if initial is not None:
            if q.get("resourceVersionMatch") != "NotOlderThan":
                raise err_invalid(rt, "", [("resourceVersionMatch", "FieldValueForbidden",
                                            "Forbidden: sendInitialEvents requires setting "
                                            "resourceVersionMatch to NotOlderThan")])
            if not bookmarks and _bool(initial):
                raise err_invalid(rt, "", [("allowWatchBookmarks", "FieldValueRequired",
                                            "Required value: allowWatchBookmarks must be set "
                                            "when sendInitialEvents is set")])
        initial = _bool(initial) if initial is not None else None

        def matches(obj):
            if ns is not None and obj["metadata"].get("namespace") != ns:
                return False
            return label_match(lsel, obj["metadata"].get("labels")) and field_match(fsel, obj)

        w = Watch(kube, rt, ns, q, self._path)
        first = []          # initial events: (type, obj or full bytes)
        error = None
        with store.cond:
            send_initial = (rv_param in ("", "0")) if initial is None else initial
            if send_initial:
                pos = store.rv
                if rv_param not in ("", "0"):
                    try:
                        pos = max(int(rv_param), pos)
                    except ValueError:
                        raise err_bad_request("invalid resource version: %s" % rv_param)
                for key, e in store.snapshot(rt)[0]:
                    if matches(e.obj):
                        first.append(("ADDED", e))
            else:
                try:
                    pos = int(rv_param)
                except ValueError:
                    raise err_bad_request("invalid resource version: %s" % rv_param)
                if pos < store.hist_start:
                    error = status_obj(410, "Expired", "too old resource version: %d (%d)"
                                       % (pos, store.hist_start))
                elif pos > store.rv:
                    deadline = time.monotonic() + 3.0
                    while store.rv < pos and time.monotonic() < deadline:
                        store.cond.wait(deadline - time.monotonic())
                    if store.rv < pos:
                        error = status_obj(504, "Timeout", "Timeout: Too large resource "
                                           "version: %d, current: %d" % (pos, store.rv),
                                           {"causes": [{"reason": "ResourceVersionTooLarge",
                                                        "message": "Too large resource "
                                                        "version"}],
                                            "retryAfterSeconds": 1})
        # The answer starts: 200, chunked, one JSON document per line.
        self.send_response(200)
        self.send_header("Content-Type", "application/json;as=Table;v=v1;g=meta.k8s.io"
                         if table else "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._status = 200
        self.wfile.flush()

        def chunk(data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def event_bytes(typ, entry=None, obj=None):
            if table:
                o = obj if obj is not None else entry.obj
                t = _table(rt, [o], o["metadata"]["resourceVersion"], include)
                return dumps({"type": typ, "object": t}) + b"\n"
            full = entry.full if obj is None else dumps(obj)
            return b'{"type":"' + typ.encode() + b'","object":' + full + b"}\n"

        def bookmark(rv, initial_end=False):
            md = {"resourceVersion": str(rv)}
            if initial_end:
                md["annotations"] = {"k8s.io/initial-events-end": "true"}
            return dumps({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.gv,
                                                         "metadata": md}}) + b"\n"

        if error is not None:
            try:
                chunk(dumps({"type": "ERROR", "object": error}) + b"\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
            return
        with kube.lock:
            kube.watches.add(w)
        try:
            for typ, e in first:
                chunk(event_bytes(typ, e))
            if initial and bookmarks:
                chunk(bookmark(pos, True))
            deadline = time.monotonic() + timeout
            next_bm = time.monotonic() + kube.bookmark_interval
            while True:
                batch = []
                expired = False
                if self._peer_gone():
                    self.close_connection = True
                    return
                check_at = time.monotonic() + 1.0
                with store.cond:
                    while True:
                        now = time.monotonic()
                        if w.closed or w.expire or kube.down_mode in ("refuse", "503"):
                            break
                        if kube.down_mode == "hang":
                            store.cond.wait(0.1)
                            continue
                        if store.rv > pos or now >= deadline or now >= check_at or \
                                (bookmarks and now >= next_bm):
                            break
                        store.cond.wait(min(deadline, check_at,
                                            next_bm if bookmarks else deadline) - now)
                    if w.expire:
                        expired = True
                    elif pos < store.hist_start:
                        expired = True   # the history moved past this watcher
                    else:
                        batch = store.events[pos - store.hist_start:]
                        pos = store.rv
                    cur_rv = store.rv
                if w.closed or kube.down_mode in ("refuse", "503"):
                    break
                if expired:
                    chunk(dumps({"type": "ERROR", "object": status_obj(
                        410, "Expired", "too old resource version: %d (%d)"
                        % (pos, store.hist_start))}) + b"\n")
                    break
                for ev in batch:
                    if ev.rt is not rt:
                        continue
                    now_m = matches(ev.obj) if ev.type != "DELETED" else False
                    was_m = matches(ev.prev) if ev.prev is not None else False
                    if ev.type == "ADDED" and now_m:
                        chunk(event_bytes("ADDED", obj=ev.obj) if table else
                              b'{"type":"ADDED","object":' + ev.full + b"}\n")
                    elif ev.type == "MODIFIED":
                        if now_m and was_m:
                            chunk(event_bytes("MODIFIED", obj=ev.obj) if table else
                                  b'{"type":"MODIFIED","object":' + ev.full + b"}\n")
                        elif now_m:
                            chunk(event_bytes("ADDED", obj=ev.obj) if table else
                                  b'{"type":"ADDED","object":' + ev.full + b"}\n")
                        elif was_m:
                            gone = copy.deepcopy(ev.prev)
                            gone["metadata"]["resourceVersion"] = str(ev.rv)
                            chunk(event_bytes("DELETED", obj=gone))
                    elif ev.type == "DELETED" and was_m:
                        chunk(event_bytes("DELETED", obj=ev.obj) if table else
                              b'{"type":"DELETED","object":' + ev.full + b"}\n")
                now = time.monotonic()
                if bookmarks and now >= next_bm:
                    chunk(bookmark(cur_rv))
                    next_bm = now + kube.bookmark_interval
                if now >= deadline:
                    break
            if not (w.closed and kube.down_mode in ("refuse", "503")):
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            with kube.lock:
                kube.watches.discard(w)
        if kube.down_mode is not None:
            self.close_connection = True

    # -- control API --

    def _control(self, path, q, body):
        kube = self.kube
        args = {}
        if body.strip():
            try:
                args = json.loads(body)
            except ValueError:
                args = {}
        args.update(q)
        m = self.command
        if path == "/_fake/state" and m == "GET":
            self._send(200, kube.state())
        elif path == "/_fake/info" and m == "GET":
            self._send(200, kube.info())
        elif path == "/_fake/load" and m == "POST":
            if "path" in args:
                n = kube.load_file(args["path"], args.get("namespace"), args.get("kind"),
                                   args.get("apiVersion"))
            else:
                n = kube.load_objects(args.get("objects", args), args.get("namespace"),
                                      args.get("kind"), args.get("apiVersion"))
            self._send(200, {"loaded": n, "resourceVersion": kube.store.rv})
        elif path == "/_fake/objects" and m in ("POST", "PUT"):
            out = kube.put_object(args, args.get("namespace"))
            self._send(200, out)
        elif path == "/_fake/compact" and m == "POST":
            upto = kube.compact(args.get("resourceVersion"),
                                _bool(str(args.get("expire_watches", "true")).lower()))
            self._send(200, {"compactedTo": upto, "resourceVersion": kube.store.rv})
        elif path == "/_fake/close-watches" and m == "POST":
            self._send(200, {"closed": kube.close_watches()})
        elif path == "/_fake/down" and m == "POST":
            kube.down(float(args.get("seconds", 5)), args.get("mode", "refuse"))
            self._send(200, {"down": kube.down_mode})
        elif path == "/_fake/up" and m == "POST":
            kube.up()
            self._send(200, {"down": None})
        elif path == "/_fake/latency" and m == "POST":
            kube.set_latency(float(args.get("ms", 0)), args.get("path_regex"))
            self._send(200, {"latency_ms": kube.latency * 1000})
        elif path == "/_fake/fail" and m == "POST":
            kube.fail_next(args.get("code", 500), args.get("count", 1), args.get("path_regex"),
                           args.get("method"), args.get("retry_after"))
            self._send(200, {"ok": True})
        elif path == "/_fake/config" and m == "POST":
            if "bookmark_interval" in args:
                kube.bookmark_interval = float(args["bookmark_interval"])
            if "history" in args:
                kube.store.history = int(args["history"])
            if "watch_timeout" in args:
                kube.watch_timeout = float(args["watch_timeout"])
            with kube.store.cond:
                kube.store.cond.notify_all()
            self._send(200, kube.state())
        elif path == "/_fake/reset" and m == "POST":
            kube.reset()
            self._send(200, kube.state())
        elif path == "/_fake/requests":
            self._send(200, kube.request_log(clear=(m == "DELETE")))
        else:
            raise NOT_FOUND_PATH


# ---- the subprocess form -------------------------------------------------------------------------


class FakeKubeProcess:
    """The fake in a child process (python3 this-file), controlled over its control port.
    Attributes after start(): url, http_url, control_url, kubeconfig, token, ca_file, dir."""

    def __init__(self, http=False, token=None, history=None, bookmark_interval=None,
                 load=(), extra_args=(), python="/usr/bin/python3"):
        self.args = [python, os.path.abspath(__file__)]
        if http:
            self.args += ["--http"]
        if token:
            self.args += ["--token", token]
        if history:
            self.args += ["--history", str(history)]
        if bookmark_interval is not None:
            self.args += ["--bookmark-interval", str(bookmark_interval)]
        for f in load:
            self.args += ["--load", f]
        self.args += list(extra_args)
        self.proc = None
        self.info = None

    def start(self, timeout=30):
        def pdeath():   # the child gets SIGTERM when the test process dies
            try:
                import ctypes
                ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
            except OSError:
                pass
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=pdeath)
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("kube fake did not start (rc=%r)" % self.proc.poll())
            c = self.proc.stdout.read1(4096) if hasattr(self.proc.stdout, "read1") else \
                self.proc.stdout.read(1)
            line += c
        self.info = json.loads(line.decode())
        for k, v in self.info.items():
            setattr(self, k, v)
        return self

    def control(self, method, path, body=None):
        """Calls the control API; returns the decoded JSON answer."""
        import http.client
        u = urllib.parse.urlsplit(self.control_url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read()
        c.close()
        if r.status >= 300:
            raise RuntimeError("control %s %s: %d %s" % (method, path, r.status, out[:300]))
        return json.loads(out) if out else None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake Kubernetes API server for weir's tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="HTTPS port (0: any free one)")
    ap.add_argument("--http", action="store_true", help="also serve plain HTTP")
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--no-tls", action="store_true", help="plain HTTP only")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--dir", help="where certificates and the kubeconfig go (default: temp)")
    ap.add_argument("--token")
    ap.add_argument("--history", type=int, default=10000, help="events kept for watches")
    ap.add_argument("--bookmark-interval", type=float, default=60.0)
    ap.add_argument("--load", action="append", default=[], help="a fixture file (JSON/YAML)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    k = FakeKube(host=a.host, port=a.port, tls=not a.no_tls, http=a.http or a.no_tls,
                 http_port=a.http_port, control_port=a.control_port, token=a.token,
                 directory=a.dir, history=a.history, bookmark_interval=a.bookmark_interval,
                 verbose=a.verbose)
    for f in a.load:
        k.load_file(f)
    k.start()
    sys.stdout.write(json.dumps(k.info()) + "\n")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    signal.signal(signal.SIGINT, lambda *x: stop.set())
    while not stop.wait(1):
        pass
    k.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
