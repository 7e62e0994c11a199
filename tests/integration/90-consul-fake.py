#!/usr/bin/python3
"""The fake Consul agent (tests/fakes/consul_fake.py) checked by an independent client,
Debian's python3-consul: catalog and health answers, blocking queries (index + wait, wake-up
on change, wait jitter bounds), KV with check-and-set, ACL tokens, the catalog write API,
and the faults the weir tests rely on (index going backwards, stop/start). No weir here."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))

import consul  # noqa: E402  (python3-consul)
import requests  # noqa: E402
from consul_fake import FakeConsul, parse_duration  # noqa: E402
from harness import check, check_eq, run  # noqa: E402

TEST_TIMEOUT = 60

for var in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL"):
    os.environ.pop(var, None)


class Fake:
    """A FakeConsul that the runner stops after the test."""

    def __init__(self, **kw):
        self.f = FakeConsul(**kw).start()

    def stop(self):
        self.f.close()

    def client(self, token=None):
        return consul.Consul(host="127.0.0.1", port=self.f.port, token=token)


def fake(**kw):
    from harness import _register
    fk = Fake(**kw)
    _register(fk)
    return fk.f, fk.client


def in_thread(fn):
    """Runs fn() in a thread; returns (thread, box) where box gets "result"/"error"/"t"."""
    box = {}

    def body():
        t0 = time.monotonic()
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001
            box["error"] = e
        box["t"] = time.monotonic() - t0

    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th, box


def test_durations():
    check_eq(parse_duration("10s"), 10.0)
    check_eq(parse_duration("1m30s"), 90.0)
    check_eq(parse_duration("250ms"), 0.25)
    check_eq(parse_duration("30000ms"), 30.0)
    for bad in ("10", "s", "1x", "1s2"):
        try:
            parse_duration(bad)
            check(False, "%r accepted" % bad)
        except ValueError:
            pass


def test_catalog_and_health_shapes():
    f, client = fake()
    f.register("web", id="web-1", address="10.0.0.1", port=8080, tags=["a", "weir.expose=true"],
               weights={"Passing": 3, "Warning": 1})
    f.register("web", id="web-2", node="node2", node_address="10.0.1.2", port=8081, tags=["b"])
    f.register("db", id="db-1", address="10.0.0.9", port=5432)
    c = client()
    idx, services = c.catalog.services()
    check(int(idx) > 0, "X-Consul-Index %r" % idx)
    check_eq(sorted(services), ["consul", "db", "web"], "services")
    check_eq(sorted(services["web"]), ["a", "b", "weir.expose=true"], "merged tags")
    idx, nodes = c.health.service("web")
    check_eq(len(nodes), 2)
    e = nodes[0]
    check_eq(e["Node"]["Node"], "node1")
    check_eq(e["Node"]["Datacenter"], "dc1")
    check_eq(e["Service"]["ID"], "web-1")
    check_eq(e["Service"]["Service"], "web")
    check_eq(e["Service"]["Address"], "10.0.0.1")
    check_eq(e["Service"]["Port"], 8080)
    check_eq(e["Service"]["Weights"], {"Passing": 3, "Warning": 1})
    check_eq([ck["CheckID"] for ck in e["Checks"]], ["serfHealth", "service:web-1"])
    check_eq(nodes[1]["Service"]["Address"], "", "empty service address")
    check_eq(nodes[1]["Node"]["Address"], "10.0.1.2", "node address")
    idx, cat = c.catalog.service("web")
    check_eq([(x["ServiceID"], x["ServicePort"]) for x in cat], [("web-1", 8080), ("web-2", 8081)])


def test_passing_filter():
    f, client = fake()
    f.register("web", id="web-1", address="10.0.0.1", port=80)
    f.register("web", id="web-2", address="10.0.0.2", port=80, node="node2")
    c = client()
    f.set_check("web-1", "critical")
    _, all_nodes = c.health.service("web")
    _, passing = c.health.service("web", passing=True)
    check_eq(len(all_nodes), 2)
    check_eq([n["Service"]["ID"] for n in passing], ["web-2"])
    f.set_check("web-1", "warning")  # passing means passing: warning is filtered out too
    _, passing = c.health.service("web", passing=True)
    check_eq([n["Service"]["ID"] for n in passing], ["web-2"])
    f.set_node_health("node2", "critical")
    _, passing = c.health.service("web", passing=True)
    check_eq(passing, [], "a critical node check fails its instances")


def test_blocking_catalog_wakes_on_change():
    f, client = fake()
    f.register("web", port=80)
    c = client()
    idx, _ = c.catalog.services()
    th, box = in_thread(lambda: c.catalog.services(index=idx, wait="20s"))
    time.sleep(0.3)
    check(th.is_alive(), "the blocking query returned before a change")
    f.register("api", port=81)
    th.join(5)
    check(not th.is_alive(), "the blocking query did not wake up")
    nidx, services = box["result"]
    check(int(nidx) > int(idx), "index did not move: %s -> %s" % (idx, nidx))
    check("api" in services)
    check(box["t"] < 3, "took %.2fs" % box["t"])


def test_blocking_wait_expires_with_jitter_bounds():
    f, client = fake()
    f.register("web", port=80)
    c = client()
    idx, _ = c.health.service("web")
    t0 = time.monotonic()
    nidx, _ = c.health.service("web", index=idx, wait="1s")
    dt = time.monotonic() - t0
    check_eq(nidx, idx, "index after a quiet wait")
    check(1.0 <= dt < 1.0 + 1.0 / 16 + 0.5, "wait 1s took %.3fs" % dt)


def test_health_blocking_ignores_other_services():
    f, client = fake()
    f.register("web", id="web-1", port=80)
    f.register("db", id="db-1", port=81)
    c = client()
    idx, _ = c.health.service("web")
    th, box = in_thread(lambda: c.health.service("web", index=idx, wait="2s", passing=True))
    time.sleep(0.2)
    f.set_check("db-1", "critical")  # another service: no wake-up
    time.sleep(0.3)
    check(th.is_alive(), "a change of db woke a query on web")
    f.set_check("web-1", "critical")
    th.join(5)
    nidx, nodes = box["result"]
    check(int(nidx) > int(idx))
    check_eq(nodes, [], "web-1 is critical")
    check(box["t"] < 1.5, "took %.2fs" % box["t"])


def test_kv_cas_recurse_and_blocking():
    f, client = fake()
    c = client()
    idx, val = c.kv.get("weir/rollouts/", recurse=True)
    check(val is None, "empty prefix")
    check(int(idx) >= 1, "index on a 404: %r" % idx)
    check(c.kv.put("weir/rollouts/shop", '{"blue": "a"}'), "put")
    _, e = c.kv.get("weir/rollouts/shop")
    check_eq(e["Value"], b'{"blue": "a"}', "base64 round trip")
    mi = e["ModifyIndex"]
    check(e["CreateIndex"] == mi)
    check_eq(c.kv.put("weir/rollouts/shop", "x", cas=0), False, "cas=0 on an existing key")
    check_eq(c.kv.put("weir/rollouts/shop", "x", cas=mi + 100), False, "cas with a stale index")
    check_eq(c.kv.put("weir/rollouts/shop", "v2", cas=mi), True, "cas with the right index")
    check_eq(c.kv.put("weir/rollouts/new", "n", cas=0), True, "cas=0 on a new key")
    idx, items = c.kv.get("weir/rollouts/", recurse=True)
    check_eq([i["Key"] for i in items], ["weir/rollouts/new", "weir/rollouts/shop"])
    check_eq(int(idx), max(i["ModifyIndex"] for i in items), "prefix index")
    th, box = in_thread(lambda: c.kv.get("weir/rollouts/", recurse=True, index=idx, wait="10s"))
    time.sleep(0.2)
    check(th.is_alive())
    check(c.kv.delete("weir/rollouts/new"), "delete")
    th.join(5)
    nidx, items = box["result"]
    check(int(nidx) > int(idx), "a delete moves the prefix index (tombstone)")
    check_eq([i["Key"] for i in items], ["weir/rollouts/shop"])


def test_acl_tokens():
    f, client = fake(tokens={"secret": "write", "reader": "read"})
    f.register("web", port=80)
    try:
        client(token="wrong").catalog.services()
        check(False, "an unknown token was accepted")
    except consul.ACLPermissionDenied as e:
        check("ACL not found" in str(e), str(e))
    _, services = client().catalog.services()  # anonymous: filtered, not refused
    check_eq(services, {}, "anonymous read")
    r = requests.get(f.url + "/v1/catalog/services")
    check_eq(r.headers.get("X-Consul-Results-Filtered-By-ACLs"), "true")
    r = requests.get(f.url + "/v1/catalog/services", headers={"X-Consul-Token": "secret"})
    check("web" in r.json(), "X-Consul-Token header")
    r = requests.get(f.url + "/v1/catalog/services", headers={"Authorization": "Bearer secret"})
    check("web" in r.json(), "Authorization: Bearer")
    try:
        client().kv.put("k", "v")
        check(False, "anonymous write accepted")
    except consul.ACLPermissionDenied as e:
        check("Permission denied" in str(e), str(e))
    try:
        client(token="reader").kv.put("k", "v")
        check(False, "read token wrote")
    except consul.ACLPermissionDenied:
        pass
    check(client(token="secret").kv.put("k", "v"))
    _, services = client(token="secret").catalog.services()
    check("web" in services)


def test_catalog_register_api():
    f, client = fake()
    c = client()
    check(c.catalog.register("node9", "10.9.9.9",
                             service={"Service": "pay", "ID": "pay-1", "Port": 7000,
                                      "Tags": ["weir.expose=true"]},
                             check={"Node": "node9", "CheckID": "service:pay-1", "Name": "pay",
                                    "Status": "passing", "ServiceID": "pay-1"}))
    _, nodes = c.health.service("pay", passing=True)
    check_eq([(n["Node"]["Node"], n["Node"]["Address"], n["Service"]["Port"]) for n in nodes],
             [("node9", "10.9.9.9", 7000)])
    check(c.catalog.deregister("node9", service_id="pay-1"))
    _, nodes = c.health.service("pay")
    check_eq(nodes, [])


def test_index_backwards_releases_blocked_queries():
    f, client = fake()
    for i in range(20):
        f.register("web", id="web-%d" % i, port=8000 + i)
    c = client()
    idx, _ = c.health.service("web")
    th, box = in_thread(lambda: c.health.service("web", index=idx, wait="20s"))
    time.sleep(0.2)
    f.rewind(3)
    th.join(5)
    check(not th.is_alive(), "a restore did not release the blocked query")
    nidx, nodes = box["result"]
    check(int(nidx) < int(idx), "index did not go backwards: %s -> %s" % (idx, nidx))
    check_eq(len(nodes), 20, "the data survives the restore")
    f.register("web", id="web-new", port=9000)
    idx2, _ = c.health.service("web")
    check(int(idx2) == 4, "the next change gets the next index: %s" % idx2)


def test_stop_refuses_then_start_again():
    f, client = fake()
    f.register("web", port=80)
    c = client()
    idx, _ = c.catalog.services()
    th, box = in_thread(lambda: c.catalog.services(index=idx, wait="20s"))
    time.sleep(0.2)
    f.stop()
    th.join(5)
    check(not th.is_alive(), "a blocked query survived stop()")
    check("error" in box, "a blocked query got an answer from a stopped agent")
    try:
        requests.get(f.url + "/v1/catalog/services", timeout=2)
        check(False, "a stopped agent answered")
    except requests.exceptions.ConnectionError:
        pass
    f.start()
    _, services = c.catalog.services()
    check("web" in services, "the state survives stop/start")


def test_pause_holds_answers():
    f, client = fake()
    f.register("web", port=80)
    c = client()
    f.pause()
    th, box = in_thread(lambda: c.catalog.services())
    time.sleep(0.5)
    check(th.is_alive(), "a paused agent answered")
    f.register("api", port=81)  # writes from the test still work while paused
    f.resume()
    th.join(5)
    check("api" in box["result"][1])


def test_injected_failure():
    f, client = fake()
    f.fail(500, "No cluster leader")
    try:
        client().catalog.services()
        check(False, "no error")
    except consul.ConsulException as e:
        check("No cluster leader" in str(e), str(e))
    f.fail(None)
    client().catalog.services()


if __name__ == "__main__":
    run()
