#!/usr/bin/python3
"""A protocol-faithful fake Consul agent for weir's tests (Python standard library only).

It speaks the parts of Consul's HTTP API that service discovery uses, with the answer shapes,
headers and status codes of the real agent (developer.hashicorp.com/consul/api-docs):

  GET  /v1/catalog/services                  {name: [tags]}, blocking
  GET  /v1/catalog/service/NAME              [{Node, Address, ServiceID, ServiceName, ...}], blocking
  GET  /v1/health/service/NAME[?passing]     [{Node, Service, Checks}], blocking
  PUT  /v1/catalog/register, /v1/catalog/deregister   (the real catalog write API)
  GET  /v1/kv/KEY[?recurse][?keys][?raw]     [{Key, Value (base64), Flags, CreateIndex, ...}], blocking
  PUT  /v1/kv/KEY[?cas=N][&flags=F]          true/false
  DELETE /v1/kv/KEY[?recurse][?cas=N]        true/false
  GET  /v1/status/leader, /v1/agent/self     enough for clients that look before they leap

Blocking queries are real: `index` (> 0) with `wait` (Go duration, default 5m, at most 10m)
holds the request until the index of what was asked changes, or until wait plus a random
jitter of up to wait/16 has passed, as Consul does. Indexes come from one Raft-like counter:
the catalog's is the services table's, a service's health index moves when one of its
instances or their checks change, a KV prefix's is the highest ModifyIndex (or tombstone)
under it. Every answer carries X-Consul-Index, X-Consul-KnownLeader and X-Consul-LastContact.

ACLs: with tokens configured, a token comes from X-Consul-Token, `Authorization: Bearer` or
?token=. An unknown token gets 403 "ACL not found"; no token is the anonymous token, whose
reads are filtered (empty answers with X-Consul-Results-Filtered-By-ACLs: true) and whose
writes get 403 "Permission denied", like a default-deny agent; a "read" token may not write.

Faults for tests: stop() closes the port (connection refused) and resets open connections;
start() opens it again; pause() holds every answer until resume(); fail(status, body) answers
everything with that error; `blocking = False` answers blocking queries at once with an
unchanged index (a misbehaving agent); rewind(index) restores an "older snapshot": every
index drops to at most <index> and blocked queries return at once, as after a Consul snapshot
restore.

Use it in-process (thread-safe):

    from consul_fake import FakeConsul
    f = FakeConsul(tokens={"secret": "write"}).start()
    f.register("web", port=8080, address="127.0.0.1", tags=["weir.expose=true"])
    f.set_check("web-1", "critical") ...; f.kv_put("weir/rollouts/web", '{"blue": ...}')

or as a program, with a control API on a second port (POST /_fake/METHOD, JSON keyword
arguments, JSON answer), for tools in other languages:

    consul_fake.py --port 8500 --control-port 8501 [--token T] [--tls CERT KEY]
"""

import _thread
import base64
import json
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text):
    """Go's time.ParseDuration for the forms Consul accepts ("10s", "1m30s", "250ms")."""
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(text)
    return total


def _ci(obj):
    """A JSON object with lower-cased keys (Go's encoding/json matches fields that way)."""
    return {k.lower(): v for k, v in obj.items()}


class _Instance:
    """One registered service instance on one node."""

    def __init__(self, node, sid, name, tags, address, port, weights, meta, idx):
        self.node, self.id, self.name = node, sid, name
        self.tags, self.address, self.port = list(tags), address, port
        self.weights = dict(weights or {"Passing": 1, "Warning": 1})
        self.meta = dict(meta or {})
        self.create_index = self.modify_index = idx
        self.checks = {}  # CheckID -> dict

    def service_json(self):
        tagged = {}
        if self.address:
            kind = "ipv6" if ":" in self.address else "ipv4"
            tagged = {"lan_" + kind: {"Address": self.address, "Port": self.port},
                      "wan_" + kind: {"Address": self.address, "Port": self.port}}
        return {"ID": self.id, "Service": self.name, "Tags": list(self.tags),
                "Address": self.address, "TaggedAddresses": tagged, "Meta": dict(self.meta),
                "Port": self.port, "Weights": dict(self.weights), "EnableTagOverride": False,
                "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {},
                "PeerName": "", "CreateIndex": self.create_index,
                "ModifyIndex": self.modify_index}


class FakeConsul:
    def __init__(self, host="127.0.0.1", port=0, tokens=None, datacenter="dc1", jitter=True,
                 tls=None):
        self.host, self.port = host, port
        self.tls = tls  # (cert_file, key_file): serve HTTPS
        # token -> "read" | "write"; None: ACLs disabled (everything allowed)
        self.tokens = dict(tokens) if tokens is not None else None
        self.datacenter = datacenter
        self.jitter = jitter
        self.blocking = True  # False: a broken agent that answers at once, ignoring `index`
        self._lock = threading.Lock()
        self._conds = {}  # topic -> Condition on _lock
        self._index = 10
        self._abandon = 0  # bumped by rewind(): blocked queries return at once
        self._nodes = {}  # name -> {"ID", "Address", "CreateIndex", "ModifyIndex", "serf": status}
        self._instances = {}  # (node, service id) -> _Instance
        self._by_name = {}  # service name -> {(node, service id)}
        self._cache = {}  # (what, name, passing) -> (state key, encoded answer)
        self._svc_index = {}  # service name -> index of its last change (kept after removal)
        self._catalog_index = 1
        self._kv = {}  # key -> {"Value": bytes, "Flags", "CreateIndex", "ModifyIndex", "LockIndex"}
        self._tombstones = {}  # key -> index of its deletion
        self._kv_index = 1
        self._running = threading.Event()
        self._running.set()
        self._failure = None  # (status, body)
        self._server = None
        self._thread = None
        self._conns = set()
        self._stopped = False
        self.requests = deque(maxlen=200000)  # arrivals: {"t", "method", "path", "query"}
        self._control = None

    # ---- life cycle ---------------------------------------------------------------------------

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def url(self):
        return ("https://" if self.tls else "http://") + self.address

    def start(self):
        """Opens the port (again after stop(): the same port)."""
        fake = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 4096

            def handle_error(self, request, client_address):
                pass  # a client that went away (weir timing out, a failed TLS handshake)

            def process_request(self, request, client_address):
                # ThreadingMixIn's Thread.start() waits for the new thread to run, which takes
                # a GIL hand-off (up to 5 ms on a busy machine): that would cap the accept loop
                # at ~200 connections a second, and weir opens one per watched service.
                _thread.start_new_thread(self.process_request_thread, (request, client_address))

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            # the handshake runs in the connection's thread (setup()), not in the accept loop
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._stopped = False
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Closes the port and every open connection: clients see refusals and resets."""
        if self._server is None:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            conns = list(self._conns)
            for c in self._conds.values():
                c.notify_all()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def close(self):
        self.stop()
        self.resume()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
            self._control = None

    def pause(self):
        """Holds every answer (and every new request) until resume()."""
        self._running.clear()

    def resume(self):
        self._running.set()

    def fail(self, status=None, body="No cluster leader"):
        """Answers every API request with <status> (None: back to normal)."""
        with self._lock:
            self._failure = (status, body) if status else None

    # ---- indexes ------------------------------------------------------------------------------

    def _bump(self):
        self._index += 1
        return self._index

    def _notify(self, *topics):
        for t in topics:
            c = self._conds.get(t)
            if c is not None:
                c.notify_all()

    @property
    def index(self):
        with self._lock:
            return self._index

    def rewind(self, index):
        """Restores an older snapshot: every index drops to at most <index>, and every blocked
        query returns at once with the (lower) index, as after `consul snapshot restore`."""
        with self._lock:
            self._index = index
            self._catalog_index = min(self._catalog_index, index)
            self._kv_index = min(self._kv_index, index)
            for k in self._svc_index:
                self._svc_index[k] = min(self._svc_index[k], index)
            for inst in self._instances.values():
                inst.create_index = min(inst.create_index, index)
                inst.modify_index = min(inst.modify_index, index)
                for ck in inst.checks.values():
                    ck["CreateIndex"] = min(ck["CreateIndex"], index)
                    ck["ModifyIndex"] = min(ck["ModifyIndex"], index)
            for e in self._kv.values():
                e["CreateIndex"] = min(e["CreateIndex"], index)
                e["ModifyIndex"] = min(e["ModifyIndex"], index)
            for k in self._tombstones:
                self._tombstones[k] = min(self._tombstones[k], index)
            self._abandon += 1
            for c in self._conds.values():
                c.notify_all()

    # ---- catalog writes -----------------------------------------------------------------------

    def _unindex(self, name, key):
        keys = self._by_name.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_name[name]

    def _of(self, name):
        return sorted((self._instances[k] for k in self._by_name.get(name, ())),
                      key=lambda i: (i.node, i.id))

    def _cached(self, what, name, passing, build):
        """An encoded answer, built again only when anything changed since (any index)."""
        state = (self._index, self._abandon)
        hit = self._cache.get((what, name, passing))
        if hit is not None and hit[0] == state:
            return hit[1]
        body = json.dumps(build()).encode()
        if len(self._cache) > 100000:
            self._cache.clear()
        self._cache[(what, name, passing)] = (state, body)
        return body

    def _touch_service(self, name, idx):
        self._svc_index[name] = idx
        self._catalog_index = idx
        self._notify("health:" + name, "catalog")

    def _ensure_node(self, node, address, idx):
        n = self._nodes.get(node)
        if n is None:
            n = {"ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)), "Address": address,
                 "CreateIndex": idx, "ModifyIndex": idx, "serf": "passing"}
            self._nodes[node] = n
        elif address and n["Address"] != address:
            n["Address"], n["ModifyIndex"] = address, idx
        return n

    def _register(self, service, sid, node, address, port, tags, weights, meta, node_address,
                  check, idx):
        if weights:
            w = _ci(weights)
            weights = {"Passing": w.get("passing", 1), "Warning": w.get("warning", 1)}
        self._ensure_node(node, node_address, idx)
        sid = sid or service
        inst = self._instances.get((node, sid))
        if inst is None:
            inst = _Instance(node, sid, service, tags, address, port, weights, meta, idx)
            self._instances[(node, sid)] = inst
            self._by_name.setdefault(service, set()).add((node, sid))
        else:
            old_name = inst.name
            if old_name != service:
                self._unindex(old_name, (node, sid))
                self._by_name.setdefault(service, set()).add((node, sid))
            inst.name, inst.tags, inst.address, inst.port = service, list(tags), address, port
            inst.weights = dict(weights or {"Passing": 1, "Warning": 1})
            inst.meta = dict(meta or {})
            inst.modify_index = idx
            if old_name != service:
                self._touch_service(old_name, idx)
        if check is not None:
            cid = "service:" + sid
            ck = inst.checks.get(cid)
            if ck is None:
                ck = {"CheckID": cid, "Name": "Service '%s' check" % service, "Type": "http",
                      "CreateIndex": idx}
                inst.checks[cid] = ck
            ck["Status"], ck["ModifyIndex"] = check, idx
        self._touch_service(service, idx)

    def register(self, service, id=None, node="node1", address="", port=0, tags=(), weights=None,
                 meta=None, node_address="127.0.0.1", check="passing"):
        """Registers (or updates) instance <id> (default: the service name) of <service> on
        <node>. <check>: the status of its service check ("passing", "warning", "critical"),
        or None for an instance without checks."""
        with self._lock:
            self._register(service, id, node, address, port, tags, weights, meta, node_address,
                           check, self._bump())

    def register_many(self, instances):
        """Registers many instances (dicts of register()'s arguments) as ONE change: a single
        index for all of them, as one Raft transaction would give."""
        with self._lock:
            idx = self._bump()
            for kw in instances:
                kw = dict(kw)
                self._register(kw.pop("service"), kw.pop("id", None), kw.pop("node", "node1"),
                               kw.pop("address", ""), kw.pop("port", 0), kw.pop("tags", ()),
                               kw.pop("weights", None), kw.pop("meta", None),
                               kw.pop("node_address", "127.0.0.1"), kw.pop("check", "passing"),
                               idx)
                if kw:
                    raise TypeError("unknown keys %r" % sorted(kw))

    def deregister(self, id, node="node1"):
        """Removes instance <id> from <node>; False when there is none."""
        with self._lock:
            inst = self._instances.pop((node, id), None)
            if inst is None:
                return False
            self._unindex(inst.name, (node, id))
            self._touch_service(inst.name, self._bump())
            return True

    def deregister_node(self, node):
        with self._lock:
            idx = self._bump()
            for key in [k for k in self._instances if k[0] == node]:
                inst = self._instances.pop(key)
                self._unindex(inst.name, key)
                self._touch_service(inst.name, idx)
            self._nodes.pop(node, None)

    def set_check(self, id, status, node="node1"):
        """Sets the status of instance <id>'s service check (adds one if it had none)."""
        with self._lock:
            inst = self._instances[(node, id)]
            idx = self._bump()
            cid = "service:" + id
            ck = inst.checks.setdefault(cid, {"CheckID": cid, "Name": "Service '%s' check"
                                              % inst.name, "Type": "http", "CreateIndex": idx})
            ck["Status"], ck["ModifyIndex"] = status, idx
            self._svc_index[inst.name] = idx  # a check change does not touch the services table
            self._notify("health:" + inst.name)

    def set_node_health(self, node, status):
        """Sets the node's serfHealth check: "critical" fails every instance on the node."""
        with self._lock:
            idx = self._bump()
            self._nodes[node]["serf"] = status
            self._nodes[node]["ModifyIndex"] = idx
            for inst in self._instances.values():
                if inst.node == node:
                    self._svc_index[inst.name] = idx
                    self._notify("health:" + inst.name)

    def services(self):
        with self._lock:
            return sorted({i.name for i in self._instances.values()})

    # ---- KV writes ----------------------------------------------------------------------------

    def _kv_put(self, key, value, cas=None, flags=0):
        e = self._kv.get(key)
        if cas is not None:
            if cas == 0 and e is not None:
                return False
            if cas != 0 and (e is None or e["ModifyIndex"] != cas):
                return False
        idx = self._bump()
        if e is None:
            e = {"CreateIndex": idx, "LockIndex": 0}
            self._kv[key] = e
        e.update({"Value": value, "Flags": flags, "ModifyIndex": idx})
        self._tombstones.pop(key, None)
        self._kv_index = idx
        self._notify("kv")
        return True

    def kv_put(self, key, value, cas=None, flags=0):
        if isinstance(value, str):
            value = value.encode()
        with self._lock:
            return self._kv_put(key, value, cas, flags)

    def _kv_delete(self, key, recurse=False, cas=None):
        keys = [k for k in self._kv if k.startswith(key)] if recurse else [key]
        if cas is not None and not recurse:
            e = self._kv.get(key)
            if e is None or (cas != 0 and e["ModifyIndex"] != cas):
                return False
        idx = self._bump()
        for k in keys:
            if self._kv.pop(k, None) is not None:
                self._tombstones[k] = idx
        self._kv_index = idx
        self._notify("kv")
        return True

    def kv_delete(self, key, recurse=False):
        with self._lock:
            return self._kv_delete(key, recurse)

    def kv_get(self, key):
        with self._lock:
            e = self._kv.get(key)
            return None if e is None else e["Value"]

    # ---- reads (with the lock held) -------------------------------------------------------------

    def _health_index(self, name):
        return self._svc_index.get(name, self._catalog_index)

    def _instance_checks(self, inst):
        node = self._nodes[inst.node]
        checks = [{"Node": inst.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                   "Status": node["serf"], "Notes": "", "Output": "Agent alive and reachable",
                   "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                   "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
                   "CreateIndex": node["CreateIndex"], "ModifyIndex": node["ModifyIndex"]}]
        for ck in inst.checks.values():
            checks.append({"Node": inst.node, "CheckID": ck["CheckID"], "Name": ck["Name"],
                           "Status": ck["Status"], "Notes": "", "Output": "",
                           "ServiceID": inst.id, "ServiceName": inst.name,
                           "ServiceTags": list(inst.tags), "Type": ck["Type"], "Interval": "10s",
                           "Timeout": "1s", "ExposedPort": 0, "Definition": {},
                           "CreateIndex": ck["CreateIndex"], "ModifyIndex": ck["ModifyIndex"]})
        return checks

    def _node_json(self, name):
        n = self._nodes[name]
        return {"ID": n["ID"], "Node": name, "Address": n["Address"],
                "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": n["Address"], "lan_ipv4": n["Address"],
                                    "wan": n["Address"], "wan_ipv4": n["Address"]},
                "Meta": {"consul-network-segment": ""}, "PeerName": "",
                "CreateIndex": n["CreateIndex"], "ModifyIndex": n["ModifyIndex"]}

    def _health(self, name, passing):
        out = []
        for inst in self._of(name):
            checks = self._instance_checks(inst)
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": self._node_json(inst.node), "Service": inst.service_json(),
                        "Checks": checks})
        return out

    def _catalog_service(self, name):
        out = []
        for inst in self._of(name):
            n = self._nodes[inst.node]
            s = inst.service_json()
            out.append({"ID": n["ID"], "Node": inst.node, "Address": n["Address"],
                        "Datacenter": self.datacenter, "TaggedAddresses": {"lan": n["Address"]},
                        "NodeMeta": {}, "ServiceKind": "", "ServiceID": s["ID"],
                        "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                        "ServiceAddress": s["Address"], "ServiceWeights": s["Weights"],
                        "ServiceMeta": s["Meta"], "ServicePort": s["Port"],
                        "ServiceEnableTagOverride": False, "CreateIndex": s["CreateIndex"],
                        "ModifyIndex": s["ModifyIndex"]})
        return out

    def _catalog_services(self):
        out = {"consul": []}
        for inst in self._instances.values():
            tags = out.setdefault(inst.name, [])
            for t in inst.tags:
                if t not in tags:
                    tags.append(t)
        return out

    def _kv_entry(self, key, e):
        v = e["Value"]
        return {"LockIndex": e["LockIndex"], "Key": key, "Flags": e["Flags"],
                "Value": None if v is None else base64.b64encode(v).decode(),
                "CreateIndex": e["CreateIndex"], "ModifyIndex": e["ModifyIndex"]}

    def _kv_prefix_index(self, prefix):
        idx = 0
        for k, e in self._kv.items():
            if k.startswith(prefix):
                idx = max(idx, e["ModifyIndex"])
        for k, t in self._tombstones.items():
            if k.startswith(prefix):
                idx = max(idx, t)
        return idx or self._kv_index

    # ---- control API --------------------------------------------------------------------------

    def start_control(self, port=0):
        """A second port for tools outside this process: POST /_fake/METHOD with a JSON object
        of keyword arguments calls that method and answers its result as JSON."""
        fake = self

        class Control(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                name = self.path.rsplit("/", 1)[-1]
                n = int(self.headers.get("Content-Length") or 0)
                args = json.loads(self.rfile.read(n) or b"{}")
                allowed = {"register", "register_many", "deregister", "deregister_node",
                           "set_check", "set_node_health", "kv_put", "kv_delete", "rewind",
                           "pause", "resume", "fail", "stop", "start", "stats", "services"}
                try:
                    if name not in allowed:
                        raise AttributeError(name)
                    res = getattr(fake, name)(**args)
                    body, status = json.dumps(res if not isinstance(res, FakeConsul) else True), 200
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    body, status = json.dumps({"error": repr(e)}), 400
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._control = Server((self.host, port), Control)
        threading.Thread(target=self._control.serve_forever, daemon=True).start()
        return self._control.server_address[1]

    def stats(self, path_prefix=""):
        """Counts of the requests received, by path (those starting with <path_prefix>)."""
        out = {}
        for r in list(self.requests):
            if r["path"].startswith(path_prefix):
                out[r["path"]] = out.get(r["path"], 0) + 1
        return out

    def requests_for(self, path, since=0.0):
        return [r for r in list(self.requests) if r["path"] == path and r["t"] >= since]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Go's net/http (Consul) sets TCP_NODELAY; without it, the body written after the head
    # waits for the client's delayed ACK (40 ms) on every answer.
    disable_nagle_algorithm = True
    fake = None  # set per server

    def log_message(self, *a):
        pass

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError):
                pass  # handle() then sees a dead connection
            self.request.settimeout(None)
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.fake._lock:
                self.fake._conns.discard(self.connection)

    # ---- plumbing -----------------------------------------------------------------------------

    def _send(self, status, body, index=None, ctype="application/json", filtered=False):
        f = self.fake
        f._running.wait()
        if f._stopped:
            self.close_connection = True
            return
        fail = f._failure
        if fail is not None and status < 400:  # an answer held by a blocking query, too
            status, body, index, ctype, filtered = fail[0], fail[1], None, "text/plain", False
        if not isinstance(body, bytes):
            body = (json.dumps(body) if ctype == "application/json" else str(body)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Vary", "Accept-Encoding")
            if index is not None:
                self.send_header("X-Consul-Index", str(index))
                self.send_header("X-Consul-KnownLeader", "true")
                self.send_header("X-Consul-LastContact", "0")
                self.send_header("X-Consul-Effective-Consistency", "leader")
                self.send_header("X-Consul-Query-Backend", "blocking-query")
            if f.tokens is not None:
                self.send_header("X-Consul-Default-ACL-Policy", "deny")
            if filtered:
                self.send_header("X-Consul-Results-Filtered-By-ACLs", "true")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _token(self):
        t = self.headers.get("X-Consul-Token")
        if t:
            return t
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:].strip()
        return self._query.get("token")

    def _acl(self, write):
        """None when allowed, else "filter" (anonymous read) or the 403 already sent."""
        tokens = self.fake.tokens
        if tokens is None:
            return None
        tok = self._token()
        if not tok:
            if write:
                self._send(403, "Permission denied", ctype="text/plain")
                return "denied"
            return "filter"
        level = tokens.get(tok)
        if level is None:
            self._send(403, "ACL not found", ctype="text/plain")
            return "denied"
        if write and level != "write":
            self._send(403, "Permission denied", ctype="text/plain")
            return "denied"
        return None

    def _blocking(self, current, topic):
        """Waits as a blocking query does; returns False when the server stopped meanwhile."""
        f = self.fake
        q = self._query
        if "index" not in q:
            return True
        try:
            min_index = int(q["index"])
        except ValueError:
            self._send(400, "Invalid index", ctype="text/plain")
            return False
        try:
            wait = parse_duration(q.get("wait", "")) if q.get("wait") else DEFAULT_WAIT
        except ValueError:
            self._send(400, "Invalid wait time", ctype="text/plain")
            return False
        if min_index <= 0 or not f.blocking:
            return True
        wait = min(wait, MAX_WAIT)
        if f.jitter:
            wait += random.uniform(0, wait / 16)
        deadline = time.monotonic() + wait
        with f._lock:
            cond = f._conds.get(topic)
            if cond is None:
                cond = f._conds[topic] = threading.Condition(f._lock)
            abandon = f._abandon
            while current() <= min_index and f._abandon == abandon and not f._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                cond.wait(left)
        return not f._stopped

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _parse(self):
        u = urllib.parse.urlsplit(self.path)
        self._path = urllib.parse.unquote(u.path)
        self._query = {k: (v[-1] if v else "") for k, v in
                       urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}

    def _pre(self):
        """Common entry: pause, stopped, injected failure. True when the request goes on."""
        f = self.fake
        self._parse()
        f.requests.append({"t": time.monotonic(), "method": self.command, "path": self._path,
                           "query": self._query})
        f._running.wait()
        if f._stopped:
            self.close_connection = True
            return False
        fail = f._failure
        if fail is not None:
            self._read_body()
            self._send(fail[0], fail[1], ctype="text/plain")
            return False
        return True

    # ---- methods ------------------------------------------------------------------------------

    def do_GET(self):
        if not self._pre():
            return
        f, p = self.fake, self._path
        dc = self._query.get("dc")
        if dc is not None and dc != f.datacenter:
            self._send(500, "No path to datacenter", ctype="text/plain")
            return
        if p == "/v1/status/leader":
            self._send(200, "127.0.0.1:8300")
            return
        if p == "/v1/agent/self":
            self._send(200, {"Config": {"Datacenter": f.datacenter, "NodeName": "fake",
                                        "Version": "1.17.0"}, "Member": {"Name": "fake"}})
            return
        acl = self._acl(write=False)
        if acl == "denied":
            return
        filtered = acl == "filter"
        if p == "/v1/catalog/services":
            if not self._blocking(lambda: f._catalog_index, "catalog"):
                return
            with f._lock:
                body = b"{}" if filtered else f._cached("catalog", "", False,
                                                        f._catalog_services)
                idx = f._catalog_index
            self._send(200, body, max(idx, 1), filtered=filtered)
        elif p.startswith("/v1/health/service/") or p.startswith("/v1/catalog/service/"):
            health = p.startswith("/v1/health/")
            name = p.split("/", 4)[4]
            if not name:
                self._send(400, "Missing service name", ctype="text/plain")
                return
            if not self._blocking(lambda: f._health_index(name), "health:" + name):
                return
            passing = "passing" in self._query
            with f._lock:
                if filtered:
                    body = b"[]"
                elif health:
                    body = f._cached("health", name, passing, lambda: f._health(name, passing))
                else:
                    body = f._cached("service", name, False, lambda: f._catalog_service(name))
                idx = f._health_index(name)
            self._send(200, body, max(idx, 1), filtered=filtered)
        elif p.startswith("/v1/kv/"):
            self._kv_get(p[len("/v1/kv/"):], filtered)
        else:
            self._send(404, "Not found", ctype="text/plain")

    def _kv_get(self, key, filtered):
        f, q = self.fake, self._query
        prefix = "recurse" in q or "keys" in q
        if prefix:
            current = lambda: f._kv_prefix_index(key)  # noqa: E731
        else:
            current = lambda: (f._kv[key]["ModifyIndex"] if key in f._kv  # noqa: E731
                               else f._tombstones.get(key, f._kv_index))
        if not self._blocking(current, "kv"):
            return
        # Answer built under the lock, sent without it (a paused server must not hold it).
        status, ctype, body = 200, "application/json", None
        with f._lock:
            idx = max(current(), 1)
            if filtered:
                keys = []
            elif prefix:
                keys = sorted(k for k in f._kv if k.startswith(key))
            else:
                keys = [key] if key in f._kv else []
            if not keys:
                status, body = 404, b""
            elif "keys" in q:
                body = keys
            elif "raw" in q and not prefix:
                ctype, body = "application/octet-stream", f._kv[key]["Value"] or b""
            else:
                body = [f._kv_entry(k, f._kv[k]) for k in keys]
        self._send(status, body, idx, ctype=ctype, filtered=filtered)

    def do_PUT(self):
        if not self._pre():
            return
        f, p = self.fake, self._path
        body = self._read_body()
        if self._acl(write=True) == "denied":
            return
        if p.startswith("/v1/kv/"):
            try:
                cas = int(self._query["cas"]) if "cas" in self._query else None
                flags = int(self._query.get("flags", 0))
            except ValueError:
                self._send(400, "Invalid cas or flags", ctype="text/plain")
                return
            with f._lock:
                ok = f._kv_put(p[len("/v1/kv/"):], body, cas, flags)
            self._send(200, ok)
        elif p == "/v1/catalog/register":
            self._catalog_register(body)
        elif p == "/v1/catalog/deregister":
            self._catalog_deregister(body)
        else:
            self._send(404, "Not found", ctype="text/plain")

    def _catalog_register(self, body):
        # Consul decodes JSON into Go structs: field names match case-insensitively
        # (python-consul sends {"node": ..., "service": {...}}).
        f = self.fake
        try:
            req = _ci(json.loads(body))
            node, addr = req["node"], req.get("address", "")
            svc = _ci(req["service"]) if req.get("service") else None
            checks = req.get("checks") or ([req["check"]] if req.get("check") else [])
            checks = [_ci(ck) for ck in checks]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._send(400, "Request decode failed: %s" % e, ctype="text/plain")
            return
        with f._lock:
            idx = f._bump()
            f._ensure_node(node, addr, idx)
            if svc:
                sid = svc.get("id") or svc["service"]
                status = None
                for ck in checks:
                    if ck.get("serviceid") in (sid, None, ""):
                        status = ck.get("status", "critical")
                f._register(svc["service"], sid, node, svc.get("address", ""),
                            svc.get("port", 0), svc.get("tags") or [], svc.get("weights"),
                            svc.get("meta"), addr, status, idx)
        self._send(200, True)

    def _catalog_deregister(self, body):
        f = self.fake
        try:
            req = _ci(json.loads(body))
            node = req["node"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._send(400, "Request decode failed: %s" % e, ctype="text/plain")
            return
        sid = req.get("serviceid")
        if sid:
            f.deregister(sid, node=node)
        else:
            f.deregister_node(node)
        self._send(200, True)

    def do_DELETE(self):
        if not self._pre():
            return
        f, p = self.fake, self._path
        self._read_body()
        if self._acl(write=True) == "denied":
            return
        if not p.startswith("/v1/kv/"):
            self._send(404, "Not found", ctype="text/plain")
            return
        cas = int(self._query["cas"]) if "cas" in self._query else None
        with f._lock:
            ok = f._kv_delete(p[len("/v1/kv/"):], "recurse" in self._query, cas)
        self._send(200, ok)


def main():
    import argparse
    import signal
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8500)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--token", action="append", help="a token with write access (repeatable)")
    ap.add_argument("--no-jitter", action="store_true")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    a = ap.parse_args()
    tokens = {t: "write" for t in a.token} if a.token else None
    f = FakeConsul(a.host, a.port, tokens=tokens, jitter=not a.no_jitter,
                   tls=tuple(a.tls) if a.tls else None).start()
    cport = f.start_control(a.control_port)
    print(json.dumps({"address": f.address, "url": f.url, "control": "%s:%d" % (a.host, cport)}),
          flush=True)
    signal.sigwait([signal.SIGINT, signal.SIGTERM])
    f.close()


if __name__ == "__main__":
    main()
