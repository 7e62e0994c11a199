"""The dns_srv discovery provider through the real binary, against a real DNS server: unbound,
unprivileged on 127.0.0.1:<free port>, serving the zone example.internal. from a zone file
(auth-zone) that the tests rewrite and reload at run time with `unbound-control
auth_zone_reload`.

What is checked: a template cluster gets its endpoints from SRV records and routes traffic to
real origins with the SRV weights; a record change applies within TTL + 1 s (measured and
printed, asserted with a wide margin); a removed record gets no more traffic; an AAAA target
on ::1; priority fail-over when the priority-0 endpoints fail their health check, and
fail-back; a resolver that stops answering for 10 s (SIGSTOP) changes nothing for the
traffic, and changes converge once it is back; NXDOMAIN keeps the endpoints while an answer
without SRV records (NODATA) empties the cluster (docs/dns-srv.md); a reload that changes the
name replaces the provider.

Needs /usr/sbin/unbound and unbound-control (tools/install-deps.sh --test); skipped without.
"""

import os
import random
import signal
import socket
import struct

from harness import *
from harness import _die_with_parent, _register, _unregister

UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"
ZONE = "example.internal"
SRV_NAME = "_http._tcp.search." + ZONE


def free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1 (unbound listens on both)."""
    for _ in range(100):
        port = free_port()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise RuntimeError("no free UDP+TCP port")


def dns_query(port, name, qtype, timeout=1.0):
    """One UDP query to 127.0.0.1:<port>; returns the answer's RCODE (None: no answer)."""
    qid = random.randint(0, 0xffff)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    except OSError:
        return None
    finally:
        s.close()
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != qid:
        return None
    return data[3] & 0x0f


class Unbound:
    """unbound serving the zone example.internal. from a file. `set_records(lines)` rewrites
    the zone (an atomic rename) and reloads it; pause()/resume() stop and continue the
    process (SIGSTOP/SIGCONT), so queries get no answer at all."""

    def __init__(self):
        self.dir = tmpdir()
        self.port = free_udp_tcp_port()
        self.conf = os.path.join(self.dir, "unbound.conf")
        self.zonefile = os.path.join(self.dir, ZONE + ".zone")
        self.serial = 1
        self.proc = None
        self.paused = False

    def _write_conf(self):
        write_file(self.conf, """server:
    interface: 127.0.0.1@%(port)d
    port: %(port)d
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "%(dir)s"
    pidfile: ""
    logfile: ""
    use-syslog: no
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    auto-trust-anchor-file: ""
remote-control:
    control-enable: yes
    control-interface: "%(dir)s/control.sock"
    control-use-cert: no
auth-zone:
    name: "%(zone)s."
    zonefile: "%(zonefile)s"
    for-downstream: yes
    for-upstream: no
    fallback-enabled: no
""" % {"port": self.port, "dir": self.dir, "zone": ZONE, "zonefile": self.zonefile})

    def _write_zone(self, lines):
        """Every record carries its own TTL: unbound's zone files take an omitted TTL from the
        record before, not from $TTL."""
        text = ["$ORIGIN %s." % ZONE,
                "@ 60 IN SOA ns.%s. admin.%s. %d 60 60 600 2" % (ZONE, ZONE, self.serial),
                "@ 60 IN NS ns.%s." % ZONE,
                "ns 60 IN A 127.0.0.1"]
        tmp = self.zonefile + ".tmp"
        write_file(tmp, "\n".join(text + list(lines)) + "\n")
        os.rename(tmp, self.zonefile)
        self.serial += 1

    def start(self, lines):
        self._write_conf()
        self._write_zone(lines)
        self.log_path = os.path.join(self.dir, "unbound.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        _register(self)
        wait_for(lambda: self.proc.poll() is None and dns_query(self.port, ZONE, 6) == 0,
                 timeout=10, what="unbound answering (log: %s)" % self.log_path)
        return self

    def set_records(self, lines):
        self._write_zone(lines)
        r = subprocess.run([UNBOUND_CONTROL, "-c", self.conf, "auth_zone_reload", ZONE + "."],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 0 and "ok" in r.stdout,
              "unbound-control auth_zone_reload: rc=%d %s %s"
              % (r.returncode, r.stdout, r.stderr))

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        _unregister(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __repr__(self):
        return "Unbound(127.0.0.1:%d)" % self.port


def srv(ttl, prio, weight, port, target, name="_http._tcp.search"):
    return "%s %d IN SRV %d %d %d %s" % (name, ttl, prio, weight, port, target)


def a(name, ttl, ip):
    return "%s %d IN %s %s" % (name, ttl, "AAAA" if ":" in ip else "A", ip)


def dns_config(dns, template=None):
    """Route "all" to the template cluster "search", filled by the dns_srv provider."""
    t = {"name": "search", "lb_policy": "round_robin"}
    t.update(template or {})
    return {"routes": [route("all", "search")],
            "clusters": [t],
            "discovery": [{"type": "dns_srv", "name": SRV_NAME, "cluster": "search",
                           "resolvers": ["127.0.0.1:%d" % dns.port]}]}


def search_endpoints(w):
    """{address: endpoint object} of cluster "search" in /clusters."""
    for c in w.clusters()["clusters"]:
        if c["name"] == "search":
            return {e["address"]: e for e in c["endpoints"]}
    return {}


def wait_endpoints(w, addresses, timeout=15.0):
    """Waits until cluster "search" has exactly <addresses>; returns the seconds it took."""
    t0 = time.monotonic()
    want = set(addresses)
    wait_for(lambda: set(search_endpoints(w)) == want, timeout=timeout, interval=0.02,
             what="endpoints of search to be %s" % sorted(want))
    return time.monotonic() - t0


def origins_seen(w, n):
    """X-Origin of <n> requests on one keep-alive connection ({name: count}, non-200 as
    "status N")."""
    c = w.conn()
    seen = {}
    for _ in range(n):
        r = get_on(c, "GET", "/")
        k = r.header("X-Origin") if r.status == 200 else "status %d" % r.status
        seen[k] = seen.get(k, 0) + 1
        if r.header("Connection", "").lower() == "close":
            c.close()
            c = w.conn()
    c.close()
    return seen


def test_srv_endpoints_and_weights():
    oa, ob = Origin("a").start(), Origin("b").start()
    dns = Unbound().start([srv(30, 0, 30, oa.port, "a"), srv(30, 0, 10, ob.port, "b"),
                           a("a", 30, "127.0.0.1"), a("b", 30, "127.0.0.1")])
    w = Weir(dns_config(dns)).start()
    wait_endpoints(w, [oa.address, ob.address])
    eps = search_endpoints(w)
    check_eq(eps[oa.address]["weight"], 30, "weight of a (SRV weight 30)")
    check_eq(eps[ob.address]["weight"], 10, "weight of b (SRV weight 10)")
    src = [c["source"] for c in w.clusters()["clusters"] if c["name"] == "search"]
    check_eq(src, ["dns_srv"], "source of cluster search")
    seen = origins_seen(w, 200)
    print("    200 requests: %r (weights 30:10)" % seen)
    check_eq(set(seen), {"a", "b"}, "origins that answered")
    ratio = seen["a"] / float(seen["b"])
    check(2.0 <= ratio <= 4.5, "a:b = %.2f, SRV weights say 3" % ratio)


def test_record_change_within_ttl_and_removed_record():
    TTL = 2
    oa, ob, oc = Origin("a").start(), Origin("b").start(), Origin("c").start()
    dns = Unbound().start([srv(TTL, 0, 1, oa.port, "a"), srv(TTL, 0, 1, ob.port, "b"),
                           a("a", TTL, "127.0.0.1"), a("b", TTL, "127.0.0.1")])
    w = Weir(dns_config(dns)).start()
    wait_endpoints(w, [oa.address, ob.address])
    check_eq(set(origins_seen(w, 20)), {"a", "b"}, "origins before the change")

    # b's record is replaced by c's.
    dns.set_records([srv(TTL, 0, 1, oa.port, "a"), srv(TTL, 0, 1, oc.port, "c"),
                     a("a", TTL, "127.0.0.1"), a("c", TTL, "127.0.0.1")])
    took = wait_endpoints(w, [oa.address, oc.address], timeout=TTL + 15)
    print("    record change applied after %.2f s (TTL %d s, bound TTL + 1 s)" % (took, TTL))
    check(took <= TTL + 1 + 2 * SLOW, "change applied after %.2f s; TTL is %d s" % (took, TTL))

    ob.clear()
    seen = origins_seen(w, 40)
    check_eq(set(seen), {"a", "c"}, "origins after the change")
    check_eq(ob.request_count(), 0, "requests that reached the removed record's origin")


def test_aaaa_target_on_ipv6_loopback():
    o6 = Origin("v6", host="::1").start()
    o4 = Origin("v4").start()
    dns = Unbound().start([srv(30, 0, 1, o6.port, "six"), srv(30, 0, 1, o4.port, "four"),
                           a("six", 30, "::1"), a("four", 30, "127.0.0.1")])
    w = Weir(dns_config(dns)).start()
    wait_endpoints(w, ["[::1]:%d" % o6.port, o4.address])
    seen = origins_seen(w, 20)
    check_eq(set(seen), {"v6", "v4"}, "origins that answered")


def test_priority_failover_and_failback():
    hc = {"type": "http", "path": "/healthz", "interval_ms": 300, "timeout_ms": 250,
          "healthy_threshold": 1, "unhealthy_threshold": 2}
    p0, p1 = ToggleOrigin("p0").start(), ToggleOrigin("p1").start()
    dns = Unbound().start([srv(30, 0, 1, p0.port, "a"), srv(30, 1, 1, p1.port, "a"),
                           a("a", 30, "127.0.0.1")])
    w = Weir(dns_config(dns, {"health_check": hc})).start()
    wait_endpoints(w, [p0.address, p1.address])
    eps = search_endpoints(w)
    if "priority" in eps[p0.address]:
        check_eq((eps[p0.address]["priority"], eps[p1.address]["priority"]), (0, 1),
                 "priorities in /clusters")
    wait_health(w, "search", p0.address, "healthy")
    wait_health(w, "search", p1.address, "healthy")
    check_eq(origins_seen(w, 20), {"p0": 20}, "traffic while priority 0 is healthy")

    p0.healthy = False
    took = wait_health(w, "search", p0.address, "unhealthy")
    print("    priority 0 unhealthy after %.2f s" % took)
    check_eq(origins_seen(w, 20), {"p1": 20}, "traffic while priority 0 is unhealthy")

    p0.healthy = True
    took = wait_health(w, "search", p0.address, "healthy")
    print("    priority 0 healthy again after %.2f s" % took)
    check_eq(origins_seen(w, 20), {"p0": 20}, "traffic after fail-back")


def test_resolver_stops_answering_for_10s():
    TTL = 1
    oa, ob, oc = Origin("a").start(), Origin("b").start(), Origin("c").start()
    dns = Unbound().start([srv(TTL, 0, 1, oa.port, "a"), srv(TTL, 0, 1, ob.port, "a"),
                           a("a", TTL, "127.0.0.1")])
    w = Weir(dns_config(dns)).start()
    wait_endpoints(w, [oa.address, ob.address])

    dns.pause()
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() - t0 < 10:
        check_eq(set(origins_seen(w, 4)), {"a", "b"}, "origins while the resolver is silent")
        check_eq(set(search_endpoints(w)), {oa.address, ob.address},
                 "endpoints while the resolver is silent")
        rounds += 1
        time.sleep(0.5)
    errors = sum(v for n, labels, v in w.metrics()
                 if n == "weir_discovery_errors_total" and "dns_srv" in labels.get("provider", ""))
    print("    10 s without answers: %d rounds of requests served; discovery errors: %r"
          % (rounds, errors))
    dns.resume()

    dns.set_records([srv(TTL, 0, 1, oa.port, "a"), srv(TTL, 0, 1, oc.port, "a"),
                     a("a", TTL, "127.0.0.1")])
    took = wait_endpoints(w, [oa.address, oc.address], timeout=40)
    print("    converged %.2f s after the resolver came back" % took)
    check_eq(set(origins_seen(w, 20)), {"a", "c"}, "origins after convergence")


def test_nxdomain_keeps_endpoints_nodata_empties():
    TTL = 1
    oa = Origin("a").start()
    dns = Unbound().start([srv(TTL, 0, 1, oa.port, "a"), a("a", TTL, "127.0.0.1")])
    w = Weir(dns_config(dns)).start()
    wait_endpoints(w, [oa.address])

    # The SRV name no longer exists (NXDOMAIN): a failure, the endpoints stay.
    dns.set_records([a("a", TTL, "127.0.0.1")])
    check_eq(dns_query(dns.port, SRV_NAME, 33), 3, "RCODE of the SRV query (NXDOMAIN)")
    time.sleep(4 * TTL + 1)
    check_eq(set(search_endpoints(w)), {oa.address}, "endpoints after NXDOMAIN")
    check_eq(origins_seen(w, 5), {"a": 5}, "traffic after NXDOMAIN")
    check("NXDOMAIN" in w.log(), "the NXDOMAIN is logged")

    # The name exists without SRV records (NODATA): a real, empty answer.
    dns.set_records(['_http._tcp.search %d IN TXT "no service"' % TTL, a("a", TTL, "127.0.0.1")])
    check_eq(dns_query(dns.port, SRV_NAME, 33), 0, "RCODE of the SRV query (NODATA)")
    wait_endpoints(w, [], timeout=15)
    check_eq(w.http("GET", "/").status, 503, "status with no endpoint")


def test_reload_follows_a_new_name():
    """SIGHUP with another SRV name: the provider is replaced (the old one closed mid-life,
    which the sanitizer build checks) and the cluster follows the new name."""
    oa, ob = Origin("a").start(), Origin("b").start()
    dns = Unbound().start([srv(30, 0, 1, oa.port, "a"), a("a", 30, "127.0.0.1"),
                           srv(30, 0, 1, ob.port, "a", name="_other._tcp.search")])
    cfg = dns_config(dns)
    w = Weir(cfg).start()
    wait_endpoints(w, [oa.address])
    cfg = json.loads(json.dumps(cfg))
    cfg["discovery"][0]["name"] = "_other._tcp.search." + ZONE
    w.reload(cfg)
    wait_endpoints(w, [ob.address])
    check_eq(origins_seen(w, 5), {"b": 5}, "traffic after the reload")


if __name__ == "__main__":
    if not (os.access(UNBOUND, os.X_OK) and os.access(UNBOUND_CONTROL, os.X_OK)):
        print("skip: %s not installed (tools/install-deps.sh --test)" % UNBOUND)
        sys.exit(0)
    run()
