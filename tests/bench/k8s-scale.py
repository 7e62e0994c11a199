"""The kubernetes provider at scale: 1,000 exposed Services, each with an EndpointSlice of 10
endpoints, served by the fake API server (tests/fakes/kube_apiserver.py). Measured:

  - initial sync: from weir's start to /ready answering 200 with all 1,000 clusters routed
    (targets: < 2 s);
  - one endpoint changed in one EndpointSlice (an apply through the fake's own API, as
    kubectl's PUT would do) until a request reaches the new endpoint (target: < 50 ms), over
    several rounds: median and worst;
  - weir's RSS after the sync and after the rounds (target: < 100 MiB).

One Service ("probe") has 10 live origins on 127.0.0.2-11; the round replaces one of them by
another origin and sends requests (round robin over 10 endpoints) until the new one answers.
The other 999 Services' endpoints (loopback addresses, a closed port) are never contacted
(no health checks). The figures are
printed; only generous bounds are asserted (this is a measurement, not a test)."""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import Origin, Weir, check, free_port, run, wait_for  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))
import kube_apiserver  # noqa: E402

N_SERVICES = int(os.environ.get("K8S_SCALE_SERVICES", "1000"))
N_EPS = 10
ROUNDS = 10
TEST_TIMEOUT = 600


def objects(port, dead_port):
    objs = []
    for i in range(N_SERVICES):
        name = "svc-%04d" % i
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "default",
                                  "annotations": {"weir.io/expose": "true",
                                                  "weir.io/host": name + ".example.com"}},
                     "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        objs.append(slice_obj(name, ["127.%d.%d.%d" % (1 + i // 250, (i % 250), j + 1)
                                     for j in range(N_EPS)], dead_port))
    objs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "probe", "namespace": "default",
                              "annotations": {"weir.io/expose": "true",
                                              "weir.io/host": "probe.example.com"}},
                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    objs.append(slice_obj("probe", ["127.0.0.%d" % (2 + j) for j in range(N_EPS)], port))
    return objs


def slice_obj(svc, addrs, port):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": svc + "-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addrs],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


def origin_of(w, host):
    try:
        r = w.http("GET", "/echo", headers={"Host": host}, timeout=5)
        return r.status, r.header("X-Origin")
    except OSError:
        return 0, None


def test_scale():
    port = free_port()
    # 12 origins: the probe's 10 endpoints and the two that rounds swap in
    for j in range(N_EPS + 2):
        Origin("o%d" % (2 + j), host="127.0.0.%d" % (2 + j), port=port).start()
    k = kube_apiserver.FakeKube(bookmark_interval=30).start()
    harness._register(k)
    t0 = time.monotonic()
    k.load_objects(objects(port, free_port()))
    print("info: fake loaded %d objects in %.1f s" % (2 * (N_SERVICES + 1), time.monotonic() - t0))

    w = Weir({"discovery": [{"type": "kubernetes", "kubeconfig": k.kubeconfig}]}, workers=2)
    t0 = time.monotonic()
    w.start(wait_ready=False)
    # the first view holds every Service (it waits for every list): the probe answering
    # means all of them are routed
    wait_for(lambda: origin_of(w, "probe.example.com")[0] == 200, timeout=60, interval=0.005,
             what="every Service routed")
    sync = time.monotonic() - t0
    w.wait_ready()
    n = len(w.clusters()["clusters"])
    check(n == N_SERVICES + 1, "%d clusters" % n)
    rss_sync = w.rss_kib()
    print("info: initial sync of %d Services x %d endpoints: %.0f ms (target < 2000 ms)"
          % (N_SERVICES, N_EPS, sync * 1000))
    print("info: RSS after the sync: %.1f MiB (target < 100 MiB)" % (rss_sync / 1024))

    # rounds: one endpoint of the probe's slice is replaced by another live origin
    lat = []
    addrs = ["127.0.0.%d" % (2 + j) for j in range(N_EPS)]
    spare = ["127.0.0.%d" % (2 + N_EPS), "127.0.0.%d" % (3 + N_EPS)]
    for r in range(ROUNDS):
        slot = r % N_EPS
        new = spare[r % 2]
        old = addrs[slot]
        if new in addrs:
            new = spare[(r + 1) % 2]
        addrs[slot] = new
        spare[spare.index(new)] = old
        want = "o" + new.rsplit(".", 1)[1]
        time.sleep(0.2)
        t0 = time.monotonic()
        k.put_object(slice_obj("probe", list(addrs), port))
        tries = 0
        while True:
            tries += 1
            if origin_of(w, "probe.example.com")[1] == want:
                break
            if time.monotonic() - t0 > 10:
                raise AssertionError("round %d: %s never answered" % (r, want))
        lat.append((time.monotonic() - t0) * 1000)
    rss_end = w.rss_kib()
    print("info: one endpoint changed -> serving: median %.1f ms, worst %.1f ms over %d rounds "
          "(target < 50 ms; includes the fake's write and up to %d probe requests)"
          % (statistics.median(lat), max(lat), ROUNDS, N_EPS))
    print("info: RSS after the rounds: %.1f MiB, peak %.1f MiB"
          % (rss_end / 1024, w.rss_kib("VmHWM") / 1024))
    builds = [line for line in w.log().splitlines() if "published (" in line]
    print("info: last snapshot build: %s" % (builds[-1].split("published ")[-1] if builds else "?"))
    check(sync < 30, "initial sync under 30 s")
    check(rss_end < 400 * 1024, "RSS under 400 MiB")


if __name__ == "__main__":
    run()
