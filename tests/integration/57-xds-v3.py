"""xDS v3 REST-JSON on the admin API: POST /v3/discovery:{listeners,routes,clusters,endpoints}
(INTERFACES §3, docs/xds.md).

Every answer is checked against the schema of Envoy's real protos (envoy_v3_check.py: field
names, JSON types, Any, oneofs, validate rules). With WEIR_ENVOY_DESC=<descriptor set of the
protos> (docs/xds.md, "Checking the output") and python3-protobuf, the answers also go through
protobuf's own strict JSON parser.
"""

import os

from envoy_v3_check import check_discovery_response, check_message_json
from harness import *

TYPES = {
    "listeners": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "routes": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "clusters": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "endpoints": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
}

W = None
A = None
DEAD = None


def setup_module():
    global W, A, DEAD
    A = Origin("a").start()
    DEAD = dead_address()
    d = tmpdir()
    crt, key = make_cert(d, "localhost")
    ports = [free_port() for _ in range(4)]
    cfg = {
        "listeners": [
            {"name": "web", "address": "127.0.0.1:%d" % ports[0]},
            {"name": "secure", "address": "127.0.0.1:%d" % ports[1],
             "tls": {"certificates": [{"cert_file": crt, "key_file": key}], "min_version": "1.3"}},
            {"name": "pp", "address": "127.0.0.1:%d" % ports[2], "proxy_protocol": True},
            {"name": "clear2", "address": "[::1]:%d" % ports[3], "h2c": True},
        ],
        "routes": [
            route("shop", host="shop.example.com", rollout="shop", redirect_https=True,
                  hsts={"max_age_s": 600, "include_subdomains": True}),
            route("api", "api", host="*.example.com", path_prefix="/api/",
                  headers=[{"name": "x-beta", "exact": "1"}, {"name": "x-p", "prefix": "a"},
                           {"name": "x-s", "suffix": "z", "invert": True},
                           {"name": "x-c", "contains": "m"}, {"name": "x-r", "regex": "[0-9]+"},
                           {"name": "x-no", "present": False}, {"name": "x-yes"}]),
            route("exact", "lr", path_exact="/exact"),
            route("re", "hash-h", path_regex="/r/[0-9]+", timeout_ms=1500),
            route("cookie", "hash-c", path_prefix="/c/"),
            route("src", "hash-s", path_prefix="/s/"),
            route("split", path_prefix="/split/",
                  weighted_clusters=[{"cluster": "api", "weight": 90},
                                     {"cluster": "rnd", "weight": 10}]),
            route("dead", "dead", path_prefix="/dead/"),
            {"name": "all", "cluster": "api"},
        ],
        "clusters": [
            cluster("api", A, health_check={"type": "http", "path": "/healthz",
                                            "interval_ms": 200, "timeout_ms": 500,
                                            "expected_statuses": [[200, 299], 302],
                                            "body_contains": "ok"},
                    outlier_detection={}),
            cluster("lr", A, lb_policy="least_request", panic_percent=0),
            cluster("rnd", A, lb_policy="random", protocol="h2c"),
            cluster("hash-h", lb_policy="ring_hash", hash_on={"header": "X-User"}, protocol="h2",
                    tls={"sni": "localhost", "ca_file": crt}),
            cluster("hash-c", lb_policy="ring_hash", hash_on={"cookie": "sid"},
                    tls={"verify": False}),
            cluster("hash-s", lb_policy="ring_hash", hash_on="source_ip",
                    health_check={"type": "tcp", "send": "PING", "expect": "PONG"}),
            cluster("shop-blue", A, health_check={"type": "tcp", "interval_ms": 200}),
            cluster("shop-green", health_check={"type": "grpc", "service": "svc"},
                    outlier_detection={"consecutive_5xx": 3, "base_ejection_ms": 1500}),
            cluster("dead", DEAD, retries=0,
                    health_check={"type": "http", "path": "/healthz", "interval_ms": 100,
                                  "timeout_ms": 200, "unhealthy_threshold": 1}),
            {"name": "template"},
        ],
        "rollouts": [{"name": "shop", "blue": "shop-blue", "green": "shop-green",
                      "green_weight": 20, "sticky": True}],
    }
    W = Weir(cfg).start()


def post(w, typ, body, token=None):
    text = body if isinstance(body, str) else json.dumps(body)
    return w.admin("POST", "/v3/discovery:" + typ, text, token=token,
                   headers={"Content-Type": "application/json"})


def discover(typ, body=None, w=None, token=None):
    """POSTs a DiscoveryRequest; checks the 200 answer against the schema; returns its JSON."""
    r = post(w or W, typ, body if body is not None else {}, token=token)
    check_eq(r.status, 200, "POST /v3/discovery:%s status (%s)" % (typ, r.body[:200]))
    check_eq(r.header("Content-Type"), "application/json", "Content-Type")
    errs = check_discovery_response(r.text())
    check(not errs, "%s answer is not valid Envoy v3 JSON:\n  %s" % (typ, "\n  ".join(errs[:20])))
    strict_parse(r.text())
    return r.json()


_pool = None


def strict_parse(text):
    """With WEIR_ENVOY_DESC set: protobuf's strict JSON parser over the real descriptors."""
    global _pool
    desc = os.environ.get("WEIR_ENVOY_DESC")
    if not desc:
        return
    from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
    if _pool is None:
        _pool = descriptor_pool.DescriptorPool()
        for f in descriptor_pb2.FileDescriptorSet.FromString(open(desc, "rb").read()).file:
            _pool.Add(f)
    d = _pool.FindMessageTypeByName("envoy.service.discovery.v3.DiscoveryResponse")
    cls = (message_factory.GetMessageClass(d) if hasattr(message_factory, "GetMessageClass")
           else message_factory.MessageFactory(_pool).GetPrototype(d))
    json_format.Parse(text, cls(), ignore_unknown_fields=False, descriptor_pool=_pool)


def by_name(resources, name, key="name"):
    for r in resources:
        if r.get(key) == name:
            return r
    raise AssertionError("no resource %s among %r" % (name, [r.get(key) for r in resources]))


def wc_weights(routes_json):
    vh = by_name(routes_json["resources"][0]["virtual_hosts"], "shop.example.com")
    base = by_name(vh["routes"], "shop")
    return {c["name"]: c["weight"] for c in base["route"]["weighted_clusters"]["clusters"]}


# ---- the checker itself must be able to fail ---------------------------------------------------

def test_checker_rejects_invalid_envoy_json():
    ok_listener = ('{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", '
                   '"port_value": 80}}}')
    check_eq(check_message_json(ok_listener, "envoy.config.listener.v3.Listener"), [],
             "a valid Listener")
    check_eq(check_message_json('{"name": "l", "stat_prefix": "x", "statPrefix": "y"}',
                                "envoy.config.listener.v3.Listener") != [], True,
             "the same field by both names")
    bad = [
        ('{"name": "l", "adress": {}}', "envoy.config.listener.v3.Listener"),  # unknown field
        ('{"name": 7}', "envoy.config.listener.v3.Listener"),  # wrong JSON type
        ('{"socket_address": {"address": "a", "port_value": 70000000000}}',
         "envoy.config.core.v3.Address"),  # uint32 out of range
        ('{"name": "c", "connect_timeout": "1.5s"}', "envoy.config.cluster.v3.Cluster"),
        ('{"name": "c", "connect_timeout": 1}', "envoy.config.cluster.v3.Cluster"),
        ('{"name": "c", "connect_timeout": "0s"}', "envoy.config.cluster.v3.Cluster"),  # gt 0
        ('{"name": "c", "lb_policy": "FASTEST"}', "envoy.config.cluster.v3.Cluster"),  # enum
        ('{"name": "c", "lb_policy": 1}', "envoy.config.cluster.v3.Cluster"),  # enum as number
        ('{"name": ""}', "envoy.config.cluster.v3.Cluster"),  # min_len
        ('{"start": 200, "end": 300}', "envoy.type.v3.Int64Range"),  # int64 as numbers
        ('{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1}',
         "envoy.config.core.v3.HealthCheck"),  # healthy_threshold required, checker oneof
        ('{"name": "v", "domains": [], "routes": []}', "envoy.config.route.v3.VirtualHost"),
        ('{"match": {"prefix": "/", "path": "/x"}, "route": {"cluster": "c"}}',
         "envoy.config.route.v3.Route"),  # two members of a oneof
        ('{"match": {"prefix": "/"}}', "envoy.config.route.v3.Route"),  # required oneof action
        ('{"name": "f", "typed_config": {"stat_prefix": "x", "@type": "type.googleapis.com/'
         'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"}}',
         "envoy.config.listener.v3.Filter"),  # @type not first
        ('{"name": "f", "typed_config": {"@type": "type.googleapis.com/nope.Nope"}}',
         "envoy.config.listener.v3.Filter"),
        ('{"name": "l", "use_original_dst": null}', "envoy.config.listener.v3.Listener"),
        ('{"name": "c", "type": "EDS", "hosts": []}', "envoy.config.cluster.v3.Cluster"),
        ('{"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {}, '
         '"load_balancing_weight": 0}]}]}', "envoy.config.endpoint.v3.ClusterLoadAssignment"),
    ]
    for text, name in bad:
        check(check_message_json(text, name) != [], "the checker accepted %s as %s" % (text, name))


# ---- the answers ---------------------------------------------------------------------------

def test_every_type_is_valid_envoy_json():
    version = W.config_version()
    for typ, url in TYPES.items():
        j = discover(typ)
        check_eq(j["type_url"], url, "%s type_url" % typ)
        if typ != "endpoints":  # endpoints carry the health digest (test_endpoint_health)
            check_eq(j["version_info"], version, "%s version_info == /config version" % typ)
        check(j["version_info"].startswith(version), "version of %s" % typ)
        check(j["nonce"], "%s nonce" % typ)
        check(j["resources"], "%s resources" % typ)
        for r in j["resources"]:
            check_eq(next(iter(r)), "@type", "first key of a %s resource" % typ)
            check_eq(r["@type"], url, "@type of a %s resource" % typ)
    check_eq(len(discover("listeners")["resources"]), 4, "one Listener per listener")
    check_eq(len(discover("clusters")["resources"]), 10, "one Cluster per cluster")
    check_eq(len(discover("endpoints")["resources"]), 10, "one ClusterLoadAssignment each")
    check_eq(len(discover("routes")["resources"]), 1, "one RouteConfiguration")


def test_nonce_unique():
    nonces = {discover("listeners")["nonce"] for _ in range(5)}
    check_eq(len(nonces), 5, "five answers, five nonces")


def test_mapping_spot_checks():
    ls = discover("listeners")["resources"]
    secure = by_name(ls, "secure")
    ts = secure["filter_chains"][0]["transport_socket"]["typed_config"]
    check_eq(ts["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"], "TLSv1_3",
             "TLS 1.3 minimum")
    hcm = by_name(ls, "web")["filter_chains"][0]["filters"][0]["typed_config"]
    check_eq(hcm["rds"]["route_config_name"], "weir", "RDS name")
    check_eq(by_name(ls, "pp")["listener_filters"][0]["name"],
             "envoy.filters.listener.proxy_protocol", "PROXY protocol listener filter")
    check_eq(by_name(ls, "clear2")["address"]["socket_address"]["address"], "::1", "IPv6")
    rc = discover("routes")["resources"][0]
    check_eq(rc["name"], "weir", "RouteConfiguration name")
    names = sorted(v["name"] for v in rc["virtual_hosts"])
    check_eq(names, ["*", "*.example.com", "shop.example.com"], "virtual hosts")
    anyhost = [r["name"] for r in by_name(rc["virtual_hosts"], "*")["routes"]]
    check_eq(anyhost, ["exact", "split", "dead", "cookie", "src", "re", "all"],
             "weir's precedence: exact, longest prefix, regex, catch-all")
    shop = [r["name"] for r in by_name(rc["virtual_hosts"], "shop.example.com")["routes"]]
    check_eq(shop, ["shop/redirect-https", "shop/track-blue", "shop/track-green", "shop"],
             "redirect and colour-forcing routes before the rollout route")
    cs = discover("clusters")["resources"]
    check_eq({c["name"]: c["lb_policy"] for c in cs if c["name"] in ("api", "lr", "rnd",
                                                                      "hash-h")},
             {"api": "ROUND_ROBIN", "lr": "LEAST_REQUEST", "rnd": "RANDOM",
              "hash-h": "RING_HASH"}, "lb policies")
    st = by_name(cs, "api")["health_checks"][0]["http_health_check"]["expected_statuses"]
    check_eq(st, [{"start": "200", "end": "300"}, {"start": "302", "end": "303"}],
             "expected statuses with an exclusive end")


def test_not_modified_on_current_version():
    v = W.config_version()
    for typ in ("listeners", "routes", "clusters"):
        r = post(W, typ, {"version_info": v})
        check_eq(r.status, 304, "%s with the current version" % typ)
        check_eq(r.body, b"", "304 has no body")
        check_eq(r.header("Content-Length"), None, "304 has no Content-Length")
        r = post(W, typ, {"version_info": v + "0"})
        check_eq(r.status, 200, "%s with another version" % typ)
    # The connection stays usable after a 304 (keep-alive, no body to skip).
    c = http.client.HTTPConnection("127.0.0.1", W.admin_port, timeout=10)
    for want in (304, 200, 304):
        body = json.dumps({"version_info": v if want == 304 else ""})
        c.request("POST", "/v3/discovery:routes", body=body)
        resp = c.getresponse()
        resp.read()
        check_eq(resp.status, want, "status on a kept-alive connection")
    c.close()


def test_envoy_style_request_and_filter():
    """What Envoy's REST client sends: lowerCamelCase names, a node, the type URL."""
    body = {"versionInfo": "", "node": {"id": "envoy-1", "cluster": "edge"},
            "resourceNames": ["api", "dead", "nope"], "typeUrl": TYPES["endpoints"],
            "responseNonce": ""}
    j = discover("endpoints", body)
    check_eq(sorted(r["cluster_name"] for r in j["resources"]), ["api", "dead"],
             "resource_names filter")
    j = discover("clusters", {"resource_names": ["*"]})
    check_eq(len(j["resources"]), 10, "\"*\" is the wildcard")
    j = discover("listeners", {"resource_names": ["secure"]})
    check_eq([r["name"] for r in j["resources"]], ["secure"], "one listener by name")


def test_bad_requests():
    cases = [
        ("listeners", "not json", 400),
        ("listeners", "", 400),
        ("listeners", '{"version_info": 3}', 400),
        ("listeners", '{"resourceNames": "a"}', 400),
        ("listeners", '{"bogus": 1}', 400),
        ("listeners", json.dumps({"type_url": TYPES["clusters"]}), 400),
        ("secrets", "{}", 404),
        ("", "{}", 404),
    ]
    for typ, body, want in cases:
        r = post(W, typ, body)
        check_eq(r.status, want, "POST /v3/discovery:%s %r" % (typ, body))
        if want == 400:
            check("error" in r.json(), "400 answers carry {\"error\": ...}")
    r = W.admin("GET", "/v3/discovery:listeners")
    check_eq(r.status, 405, "GET is not allowed")
    check_eq(r.header("Allow"), "POST", "Allow header")


def test_rollout_weight_change_is_a_new_version():
    v1 = W.config_version()
    j = discover("routes")
    check_eq(j["version_info"], v1, "routes version")
    check_eq(wc_weights(j), {"shop-blue": 80, "shop-green": 20}, "weights before")
    r = W.admin("PUT", "/rollouts/shop", {"green_weight": 65})
    check_eq(r.status, 200, "PUT /rollouts/shop")
    v2 = r.json()["version"]
    check(v2 != v1, "a new version after the weight change")
    # A client at the old version is sent the new weights and the new version...
    j = discover("routes", {"version_info": v1})
    check_eq(j["version_info"], v2, "new version_info")
    check_eq(wc_weights(j), {"shop-blue": 35, "shop-green": 65}, "weights after")
    # ...and then polls with it: 304 until the next change.
    check_eq(post(W, "routes", {"version_info": v2}).status, 304, "304 at the new version")
    r = W.admin("POST", "/rollouts/shop/promote", "")
    check_eq(r.status, 200, "promote")
    j = discover("routes", {"version_info": v2})
    check_eq(wc_weights(j), {"shop-green": 100}, "blue at 0 is left out")


def test_endpoint_health_is_reflected():
    # "dead" has an active check on an address nobody listens to: it turns unhealthy.
    wait_health(W, "dead", DEAD, "unhealthy")
    j = discover("endpoints", {"resource_names": ["dead", "api"]})
    dead = by_name(j["resources"], "dead", "cluster_name")
    ep = dead["endpoints"][0]["lb_endpoints"][0]
    check_eq(ep["health_status"], "UNHEALTHY", "health of the dead endpoint")
    api = by_name(j["resources"], "api", "cluster_name")
    check_eq(api["endpoints"][0]["lb_endpoints"][0]["health_status"], "HEALTHY", "api endpoint")
    v = j["version_info"]
    check(v.startswith(W.config_version() + "/"), "EDS version carries a health digest: %r" % v)
    # Health stays put (the address stays dead): polling with that version gets 304.
    check_eq(post(W, "endpoints", {"version_info": v, "resource_names": ["dead", "api"]}).status,
             304, "304 while health is unchanged")
    # The healthy cluster alone is at the plain snapshot version.
    check_eq(post(W, "endpoints", {"version_info": W.config_version(),
                                   "resource_names": ["api"]}).status, 304,
             "304 for healthy clusters at the snapshot version")


def test_token_rule():
    d = tmpdir()
    tok = "xds-t0ken"
    write_file(os.path.join(d, "token"), tok + "\n")
    w = Weir(simple_config(A))
    w.cfg["admin"]["token_file"] = os.path.join(d, "token")
    w.start()
    check_eq(post(w, "listeners", {}).status, 401, "no token")
    check_eq(post(w, "listeners", {}, token="wrong").status, 401, "wrong token")
    j = discover("listeners", w=w, token=tok)
    check_eq(len(j["resources"]), 1, "with the token")
    check_eq(post(w, "nope", {}).status, 401, "401 before 404 without a token")
    w.stop()


if __name__ == "__main__":
    run()
