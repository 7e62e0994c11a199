/* xds/xds_v3.c -- the snapshot as Envoy xDS v3 REST-JSON (LDS, CDS, EDS and the transport).
 *
 * xds_v3_discovery() answers one `POST /v3/discovery:<type>` the way Envoy's REST transport
 * and go-control-plane's REST gateway do: a DiscoveryRequest in, a DiscoveryResponse out at
 * once, or "304 Not Modified" when the request's version_info is already current. The
 * resources are rendered from the snapshot on every request (no cache: they are small next
 * to the cost of a poll, and the endpoints' health is live).
 *
 * The JSON follows the protobuf JSON mapping of Envoy's v3 API, so that a strict parser of
 * those protos accepts it: proto field names (snake_case, as Envoy's own docs and
 * go-control-plane's gateway write them), enums as their names, 64-bit integers as strings,
 * Durations as "1.500s", wrapper types as plain values, "@type" first in every Any, and no
 * field the protos do not have. The mapping and the decisions behind it are in docs/xds.md;
 * RouteConfiguration lives in xds_v3_route.c.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

/* The one place that knows how the snapshot stores its clusters (an array of structs today;
 * change this line if it becomes an array of pointers). */
#define V3_CLUSTER(s, i) ((s)->clusters[i])

#define V3_TYPE_PREFIX "type.googleapis.com/"
#define V3_HCM         "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define V3_HTTP_OPTS   "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define V3_TLS_SOCKET  "envoy.transport_sockets.tls"

static const struct v3_type {
    const char *path; /* the part after "/v3/discovery:" */
    const char *type_url;
} v3_types[] = {
    {"listeners", V3_TYPE_PREFIX "envoy.config.listener.v3.Listener"},
    {"routes", V3_TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration"},
    {"clusters", V3_TYPE_PREFIX "envoy.config.cluster.v3.Cluster"},
    {"endpoints", V3_TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment"},
};

enum { V3_LDS = 0, V3_RDS, V3_CDS, V3_EDS };

/* ---- helpers shared with xds_v3_route.c --------------------------------------------------- */

static void set(json_t *o, const char *key, json_t *v)
{
    json_object_set_new(o, key, v);
}

json_t *xds__v3_any(const char *type_name)
{
    json_t *o = json_object();

    set(o, "@type", json_sprintf(V3_TYPE_PREFIX "%s", type_name));
    return o;
}

/* google.protobuf.Duration in JSON: seconds with 0, 3, 6 or 9 fractional digits and an "s". */
json_t *xds__v3_duration(uint64_t ms)
{
    if (ms % 1000 == 0)
        return json_sprintf("%llus", (unsigned long long)(ms / 1000));
    return json_sprintf("%llu.%03llus", (unsigned long long)(ms / 1000),
                        (unsigned long long)(ms % 1000));
}

/* Where an Envoy fleet fetches the RDS and EDS resources that a Listener or Cluster refers to:
 * from weir's REST endpoints again, through a bootstrap cluster named XDS__V3_XDS_CLUSTER.
 * ADS cannot be used (it is gRPC only), nor "self" (not implemented by Envoy). */
json_t *xds__v3_config_source(void)
{
    return json_pack("{s:{s:s, s:s, s:[s], s:s}, s:s}", "api_config_source", "api_type", "REST",
                     "transport_api_version", "V3", "cluster_names", XDS__V3_XDS_CLUSTER,
                     "refresh_delay", "1s", "resource_api_version", "V3");
}

/* envoy.config.core.v3.Address of a numeric socket address. */
static json_t *v3_address(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN] = "";
    unsigned port = 0;

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    } else {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        port = ntohs(in4->sin_port);
    }
    return json_pack("{s:{s:s, s:i}}", "socket_address", "address", host, "port_value", port);
}

/* envoy.config.core.v3.HealthCheck.Payload: "text" is the payload in hex (never empty: the
 * callers leave an empty payload out, which means the same to weir). */
static json_t *v3_payload(const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    char *p = wr_xmalloc(2 * n + 1);

    for (size_t i = 0; i < n; i++) {
        p[2 * i] = hex[(unsigned char)s[i] >> 4];
        p[2 * i + 1] = hex[(unsigned char)s[i] & 15];
    }
    p[2 * n] = '\0';
    json_t *o = json_pack("{s:s}", "text", p);
    free(p);
    return o;
}

/* ---- Listener ----------------------------------------------------------------------------- */

/* The HttpConnectionManager of every listener: routes by RDS from the one RouteConfiguration,
 * with weir's client-side limits. */
static json_t *v3_hcm(const struct xds_snapshot *s, const struct xds_listener *l)
{
    json_t *o = xds__v3_any(V3_HCM);
    /* Plain listeners speak HTTP/1.1 only, unless h2c (prior knowledge) is on; on TLS, ALPN
     * decides. AUTO detects the HTTP/2 preface on cleartext. */
    const char *codec = (l->tls == NULL && !l->h2c) ? "HTTP1" : "AUTO";

    set(o, "stat_prefix", json_string(l->name));
    set(o, "codec_type", json_string(codec));
    set(o, "rds",
        json_pack("{s:o, s:s}", "config_source", xds__v3_config_source(), "route_config_name",
                  XDS__V3_ROUTE_CONFIG));
    set(o, "http_filters",
        json_pack("[{s:s, s:o}]", "name", "envoy.filters.http.router", "typed_config",
                  xds__v3_any("envoy.extensions.filters.http.router.v3.Router")));
    set(o, "common_http_protocol_options",
        json_pack("{s:o}", "idle_timeout", xds__v3_duration(s->client_idle_timeout_ms)));
    /* Envoy counts in KiB, at most 8192. */
    set(o, "max_request_headers_kb",
        json_integer(WR_MIN((s->max_header_bytes + 1023) / 1024, 8192)));
    set(o, "request_headers_timeout", xds__v3_duration(s->client_header_timeout_ms));
    /* weir appends the client's address to X-Forwarded-For and sets X-Forwarded-Proto from
     * the connection, which is what use_remote_address does. */
    set(o, "use_remote_address", json_true());
    return o;
}

/* DownstreamTlsContext of a TLS listener (certificates by file name). */
static json_t *v3_downstream_tls(const struct xds_listener_tls *t)
{
    json_t *ctx = xds__v3_any("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext");
    json_t *common = json_object(), *certs = json_array(), *alpn = json_array();

    set(common, "tls_params",
        json_pack("{s:s}", "tls_minimum_protocol_version",
                  t->min_version == 3 ? "TLSv1_3" : "TLSv1_2"));
    for (uint32_t i = 0; i < t->n_certs; i++)
        json_array_append_new(certs, json_pack("{s:{s:s}, s:{s:s}}", "certificate_chain",
                                               "filename", t->certs[i].cert_file, "private_key",
                                               "filename", t->certs[i].key_file));
    set(common, "tls_certificates", certs);
    for (uint32_t i = 0; i < t->n_alpn; i++)
        json_array_append_new(alpn, json_string(t->alpn[i]));
    set(common, "alpn_protocols", alpn);
    set(ctx, "common_tls_context", common);
    return json_pack("{s:s, s:o}", "name", V3_TLS_SOCKET, "typed_config", ctx);
}

static json_t *v3_listener(const struct xds_snapshot *s, const struct xds_listener *l)
{
    json_t *o = xds__v3_any("envoy.config.listener.v3.Listener");
    json_t *chain = json_object();

    set(o, "name", json_string(l->name));
    set(o, "address", v3_address(&l->ss));
    set(chain, "filters",
        json_pack("[{s:s, s:o}]", "name", "envoy.filters.network.http_connection_manager",
                  "typed_config", v3_hcm(s, l)));
    if (l->tls != NULL)
        set(chain, "transport_socket", v3_downstream_tls(l->tls));
    set(o, "filter_chains", json_pack("[o]", chain));
    if (l->proxy_protocol)
        set(o, "listener_filters",
            json_pack(
                "[{s:s, s:o}]", "name", "envoy.filters.listener.proxy_protocol", "typed_config",
                xds__v3_any("envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol")));
    return o;
}

/* ---- Cluster ------------------------------------------------------------------------------ */

/* envoy.config.core.v3.RequestMethod names the methods Envoy's HTTP checks can send; any
 * other method is left out (Envoy then sends GET). */
static const char *v3_method(const char *m)
{
    static const char *const known[] = {"GET",    "HEAD",    "POST",  "PUT",
                                        "DELETE", "OPTIONS", "TRACE", "PATCH"};

    for (size_t i = 0; m != NULL && i < WR_ARRAY_LEN(known); i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return NULL;
}

static json_t *v3_http_check(const struct xds_health_check *h)
{
    json_t *o = json_object(), *st = json_array();
    const char *method = v3_method(h->method);

    if (h->host != NULL)
        set(o, "host", json_string(h->host));
    set(o, "path", json_string(h->path));
    if (h->body_contains != NULL && h->body_contains[0] != '\0')
        set(o, "receive", json_pack("[o]", v3_payload(h->body_contains)));
    /* weir's ranges are inclusive, Int64Range's end is exclusive; int64 is a JSON string. */
    for (uint32_t i = 0; i < h->n_expected; i++)
        json_array_append_new(st, json_pack("{s:o, s:o}", "start",
                                            json_sprintf("%u", h->expected[i][0]), "end",
                                            json_sprintf("%u", h->expected[i][1] + 1u)));
    set(o, "expected_statuses", st);
    if (method != NULL)
        set(o, "method", json_string(method));
    return o;
}

static json_t *v3_health_check(const struct xds_health_check *h)
{
    json_t *o = json_object(), *tcp;

    set(o, "timeout", xds__v3_duration(h->timeout_ms));
    set(o, "interval", xds__v3_duration(h->interval_ms));
    set(o, "interval_jitter_percent", json_integer(h->jitter_percent));
    set(o, "unhealthy_threshold", json_integer(h->unhealthy_threshold));
    set(o, "healthy_threshold", json_integer(h->healthy_threshold));
    switch (h->type) {
    case XDS_HC_HTTP:
        set(o, "http_health_check", v3_http_check(h));
        break;
    case XDS_HC_TCP:
        tcp = json_object();
        if (h->send != NULL && h->send[0] != '\0')
            set(tcp, "send", v3_payload(h->send));
        if (h->expect != NULL && h->expect[0] != '\0')
            set(tcp, "receive", json_pack("[o]", v3_payload(h->expect)));
        set(o, "tcp_health_check", tcp);
        break;
    default:
        set(o, "grpc_health_check",
            h->service != NULL && h->service[0] != '\0'
                ? json_pack("{s:s}", "service_name", h->service)
                : json_object());
        break;
    }
    set(o, "unhealthy_interval", xds__v3_duration(h->unhealthy_interval_ms));
    return o;
}

/* weir's outlier detection is consecutive errors only: Envoy's success-rate detection (on by
 * default) is switched off, gateway failures are enforced (off by default in Envoy), and at
 * least one endpoint may be ejected whatever the percentage, as weir does. */
static json_t *v3_outlier(const struct xds_outlier *od)
{
    json_t *o = json_object();

    set(o, "consecutive_5xx", json_integer(od->consecutive_5xx));
    set(o, "base_ejection_time", xds__v3_duration(od->base_ejection_ms));
    set(o, "max_ejection_percent", json_integer(od->max_ejection_percent));
    set(o, "enforcing_consecutive_5xx", json_integer(100));
    set(o, "enforcing_success_rate", json_integer(0));
    set(o, "consecutive_gateway_failure", json_integer(od->consecutive_gateway_failure));
    set(o, "enforcing_consecutive_gateway_failure", json_integer(100));
    set(o, "max_ejection_time", xds__v3_duration(od->max_ejection_ms));
    set(o, "always_eject_one_host", json_true());
    return o;
}

static json_t *v3_upstream_tls(const struct xds_cluster *c)
{
    json_t *ctx = xds__v3_any("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    json_t *common = json_object();

    if (c->tls.sni != NULL)
        set(ctx, "sni", json_string(c->tls.sni));
    set(common, "tls_params", json_pack("{s:s}", "tls_minimum_protocol_version", "TLSv1_2"));
    if (c->tls.verify) {
        json_t *v = json_object();
        if (c->tls.ca_file != NULL)
            set(v, "trusted_ca", json_pack("{s:s}", "filename", c->tls.ca_file));
        else
            set(v, "system_root_certs", json_object());
        /* weir checks the certificate against the SNI name (SSL_set1_host). */
        if (c->tls.sni != NULL)
            set(v, "match_typed_subject_alt_names",
                json_pack("[{s:s, s:{s:s}}]", "san_type", "DNS", "matcher", "exact", c->tls.sni));
        set(common, "validation_context", v);
    }
    set(common, "alpn_protocols",
        json_pack("[s]", c->protocol == XDS_PROTO_H2 ? "h2" : "http/1.1"));
    set(ctx, "common_tls_context", common);
    return json_pack("{s:s, s:o}", "name", V3_TLS_SOCKET, "typed_config", ctx);
}

static json_t *v3_http_options(const struct xds_cluster *c)
{
    json_t *o = xds__v3_any(V3_HTTP_OPTS);
    const char *proto =
        c->protocol == XDS_PROTO_HTTP1 ? "http_protocol_options" : "http2_protocol_options";

    set(o, "common_http_protocol_options",
        json_pack("{s:o}", "idle_timeout", xds__v3_duration(c->idle_timeout_ms)));
    set(o, "explicit_http_config", json_pack("{s:{}}", proto));
    return json_pack("{s:o}", V3_HTTP_OPTS, o);
}

static json_t *v3_cluster(const struct xds_cluster *c)
{
    static const char *const policies[] = {
        [XDS_LB_ROUND_ROBIN] = "ROUND_ROBIN",
        [XDS_LB_LEAST_REQUEST] = "LEAST_REQUEST",
        [XDS_LB_RING_HASH] = "RING_HASH",
        [XDS_LB_RANDOM] = "RANDOM",
    };
    json_t *o = xds__v3_any("envoy.config.cluster.v3.Cluster");

    set(o, "name", json_string(c->name));
    set(o, "type", json_string("EDS"));
    set(o, "eds_cluster_config", json_pack("{s:o}", "eds_config", xds__v3_config_source()));
    set(o, "connect_timeout", xds__v3_duration(c->connect_timeout_ms));
    set(o, "lb_policy",
        json_string(c->lb_policy < WR_ARRAY_LEN(policies) ? policies[c->lb_policy]
                                                          : "ROUND_ROBIN"));
    if (c->hc.type != XDS_HC_NONE)
        set(o, "health_checks", json_pack("[o]", v3_health_check(&c->hc)));
    set(o, "typed_extension_protocol_options", v3_http_options(c));
    if (c->outlier.enabled)
        set(o, "outlier_detection", v3_outlier(&c->outlier));
    set(o, "common_lb_config",
        json_pack("{s:{s:f}}", "healthy_panic_threshold", "value", (double)c->panic_percent));
    if (c->tls.enabled)
        set(o, "transport_socket", v3_upstream_tls(c));
    return o;
}

/* ---- ClusterLoadAssignment ---------------------------------------------------------------- */

/* envoy.config.core.v3.HealthStatus from the live flags. Outlier ejection is left out: it is
 * this weir's local verdict from its own traffic, and each Envoy runs its own detection from
 * the cluster's outlier_detection. */
static const char *v3_health(const struct xds_endpoint *ep)
{
    uint32_t f = ep->st != NULL ? atomic_load_explicit(&ep->st->flags, memory_order_relaxed) : 0;

    if ((f & XDS_EPF_DRAINING) || ep->draining)
        return "DRAINING";
    return (f & XDS_EPF_UNHEALTHY) ? "UNHEALTHY" : "HEALTHY";
}

/* FNV-1a, to fold the endpoints' health into the EDS version. */
static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (h ^ 0xff) * 0x100000001b3ull;
}

struct v3_eds_digest {
    uint64_t h;
    bool all_healthy;
};

static json_t *v3_load_assignment(const struct xds_cluster *c, struct v3_eds_digest *d)
{
    json_t *o = xds__v3_any("envoy.config.endpoint.v3.ClusterLoadAssignment");
    json_t *localities = json_array();

    set(o, "cluster_name", json_string(c->name));
    d->h = fnv(d->h, c->name);
    /* One LocalityLbEndpoints per priority level, in increasing order (weir has no zones):
     * Envoy's priority levels mean what weir's endpoint "priority" means, but Envoy wants them
     * numbered 0, 1, 2... without gaps, so the levels are renumbered by rank (SRV priorities
     * 10 and 20 become 0 and 1). */
    uint32_t prio = UINT32_MAX, rank = 0;
    for (uint32_t i = 0; i < c->n_eps; i++)
        prio = WR_MIN(prio, c->eps[i].priority);
    for (; c->n_eps > 0;) {
        uint32_t next = UINT32_MAX;
        json_t *lbs = json_array();
        for (uint32_t i = 0; i < c->n_eps; i++) {
            const struct xds_endpoint *ep = &c->eps[i];
            if (ep->priority > prio && ep->priority < next)
                next = ep->priority;
            if (ep->priority != prio)
                continue;
            const char *health = v3_health(ep);
            json_array_append_new(lbs, json_pack("{s:{s:o}, s:s, s:i}", "endpoint", "address",
                                                 v3_address(&ep->ss), "health_status", health,
                                                 "load_balancing_weight", (int)ep->weight));
            d->h = fnv(fnv(d->h, ep->address), health);
            d->all_healthy &= strcmp(health, "HEALTHY") == 0;
        }
        if (json_array_size(lbs) > 0) {
            json_t *loc = json_pack("{s:o}", "lb_endpoints", lbs);
            if (rank > 0)
                set(loc, "priority", json_integer(rank));
            rank++;
            json_array_append_new(localities, loc);
        } else {
            json_decref(lbs);
        }
        if (next == UINT32_MAX)
            break;
        prio = next;
    }
    set(o, "endpoints", localities);
    return o;
}

/* ---- the DiscoveryRequest ----------------------------------------------------------------- */

/* Fields of envoy.service.discovery.v3.DiscoveryRequest, by proto name and JSON name: a
 * protobuf JSON parser accepts either, and Envoy's REST client sends the JSON (lowerCamel)
 * names. */
enum v3_kind { K_STRING, K_STRINGS, K_ARRAY, K_OBJECT };

static const struct v3_field {
    const char *name, *json_name;
    enum v3_kind kind;
} v3_req_fields[] = {
    /* the three fields weir reads come first, in this order: see v3_req_member() */
    {"version_info", "versionInfo", K_STRING},
    {"resource_names", "resourceNames", K_STRINGS},
    {"type_url", "typeUrl", K_STRING},
    {"node", "node", K_OBJECT},
    {"resource_locators", "resourceLocators", K_ARRAY},
    {"response_nonce", "responseNonce", K_STRING},
    {"error_detail", "errorDetail", K_OBJECT},
};

struct v3_req {
    const char *version; /* NULL: none */
    const char *type_url;
    json_t *names; /* borrowed; NULL: none */
};

static bool v3_kind_ok(json_t *v, enum v3_kind k)
{
    size_t i;
    json_t *e;

    switch (k) {
    case K_STRING:
        return json_is_string(v);
    case K_OBJECT:
        return json_is_object(v);
    case K_ARRAY:
        return json_is_array(v);
    default:
        if (!json_is_array(v))
            return false;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e))
                return false;
        }
        return true;
    }
}

static const char *const v3_kind_text[] = {"a string", "an array of strings", "an array",
                                           "an object"};

/* Checks one member of the request. JSON null stands for the default value, as in the
 * protobuf JSON mapping. */
static bool v3_req_member(const char *key, json_t *v, const struct v3_field **seen,
                          struct v3_req *q, struct wr_sbuf *err)
{
    for (size_t i = 0; i < WR_ARRAY_LEN(v3_req_fields); i++) {
        const struct v3_field *f = &v3_req_fields[i];
        if (strcmp(key, f->name) != 0 && strcmp(key, f->json_name) != 0)
            continue;
        if (seen[i] != NULL) {
            wr_sbuf_printf(err, "DiscoveryRequest: field %s is given twice", f->name);
            return false;
        }
        seen[i] = f;
        if (json_is_null(v))
            return true;
        if (!v3_kind_ok(v, f->kind)) {
            wr_sbuf_printf(err, "DiscoveryRequest: %s must be %s", key, v3_kind_text[f->kind]);
            return false;
        }
        if (i == 0)
            q->version = json_string_value(v);
        else if (i == 1)
            q->names = v;
        else if (i == 2)
            q->type_url = json_string_value(v);
        return true;
    }
    wr_sbuf_printf(err, "DiscoveryRequest: unknown field \"%s\"", key);
    return false;
}

/* Parses <body> as a DiscoveryRequest of <want_type>. Returns the JSON root (owned) or NULL
 * with <err> set. */
static json_t *v3_parse_request(const char *body, size_t len, const char *want_type,
                                struct v3_req *q, struct wr_sbuf *err)
{
    const struct v3_field *seen[WR_ARRAY_LEN(v3_req_fields)] = {0};
    json_error_t jerr;
    const char *key;
    json_t *v;

    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        wr_sbuf_printf(err,
                       "DiscoveryRequest: cannot parse the body as JSON: %s (line %d, column %d)",
                       jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        wr_sbuf_addstr(err, "DiscoveryRequest: the body must be a JSON object");
        goto bad;
    }
    json_object_foreach(root, key, v)
    {
        if (!v3_req_member(key, v, seen, q, err))
            goto bad;
    }
    /* go-control-plane's gateway takes the type from the path; a request that names another
     * type has the wrong URL, so it is refused rather than answered with the path's type. */
    if (q->type_url != NULL && q->type_url[0] != '\0' && strcmp(q->type_url, want_type) != 0) {
        wr_sbuf_printf(err, "DiscoveryRequest: type_url \"%s\" does not match this endpoint (%s)",
                       q->type_url, want_type);
        goto bad;
    }
    return root;
bad:
    json_decref(root);
    return NULL;
}

/* ---- the DiscoveryResponse ---------------------------------------------------------------- */

/* The requested names, looked up by resource name: none (or "*", the explicit wildcard of
 * the xDS protocol) means every resource. Names that match no resource are ignored, as Envoy's
 * management servers do. */
struct v3_filter {
    struct xds_name_index *ix; /* NULL: all */
};

static void v3_filter_init(struct v3_filter *f, json_t *names)
{
    size_t i, n = names != NULL ? json_array_size(names) : 0;
    json_t *e;
    uint32_t old;

    f->ix = NULL;
    json_array_foreach(names, i, e)
    {
        if (strcmp(json_string_value(e), "*") == 0)
            return;
    }
    if (n == 0)
        return;
    f->ix = xds__index_new(n);
    json_array_foreach(names, i, e)
    {
        xds__index_add(f->ix, json_string_value(e), json_string_length(e), (uint32_t)i, &old);
    }
}

static bool v3_wanted(const struct v3_filter *f, const char *name)
{
    uint32_t v;

    return f->ix == NULL || xds__index_get(f->ix, name, strlen(name), &v);
}

/* Builds the resources of <type>; <version> gets the version_info they are current at. */
static json_t *v3_resources(const struct xds_snapshot *s, int type, const struct v3_filter *f,
                            char *version, size_t vlen)
{
    json_t *a = json_array();
    struct v3_eds_digest d = {0xcbf29ce484222325ull, true};

    snprintf(version, vlen, "%s", s->version_str);
    switch (type) {
    case V3_LDS:
        for (uint32_t i = 0; i < s->n_listeners; i++)
            if (v3_wanted(f, s->listeners[i].name))
                json_array_append_new(a, v3_listener(s, &s->listeners[i]));
        break;
    case V3_RDS:
        if (v3_wanted(f, XDS__V3_ROUTE_CONFIG))
            json_array_append_new(a, xds__v3_route_config(s));
        break;
    case V3_CDS:
        for (uint32_t i = 0; i < s->n_clusters; i++)
            if (v3_wanted(f, V3_CLUSTER(s, i)->name))
                json_array_append_new(a, v3_cluster(V3_CLUSTER(s, i)));
        break;
    default:
        for (uint32_t i = 0; i < s->n_clusters; i++)
            if (v3_wanted(f, V3_CLUSTER(s, i)->name))
                json_array_append_new(a, v3_load_assignment(V3_CLUSTER(s, i), &d));
        /* Health changes under a snapshot without a new version: while any endpoint is not
         * healthy, the version carries a digest of the health states, so that a client
         * polling with the previous version is sent the change instead of a 304. */
        if (!d.all_healthy)
            snprintf(version, vlen, "%s/%016llx", s->version_str, (unsigned long long)d.h);
        break;
    }
    return a;
}

static _Atomic uint64_t v3_nonce_seq; /* control path only; makes each nonce unique */

int xds_v3_discovery(const struct xds_snapshot *s, const char *type, const char *req, size_t len,
                     char **resp, struct wr_sbuf *err)
{
    struct v3_req q = {0};
    struct v3_filter f;
    char version[64];
    int t = -1;

    *resp = NULL;
    for (size_t i = 0; i < WR_ARRAY_LEN(v3_types); i++)
        if (strcmp(type, v3_types[i].path) == 0)
            t = (int)i;
    if (t < 0) {
        wr_sbuf_printf(err, "unknown xDS type \"%s\": use listeners, routes, clusters or endpoints",
                       type);
        return 404;
    }
    json_t *root = v3_parse_request(req, len, v3_types[t].type_url, &q, err);
    if (root == NULL)
        return 400;
    v3_filter_init(&f, q.names);
    json_t *res = v3_resources(s, t, &f, version, sizeof(version));
    xds__index_free(f.ix);
    if (q.version != NULL && strcmp(q.version, version) == 0) {
        json_decref(res);
        json_decref(root);
        return 304;
    }
    uint64_t n = atomic_fetch_add_explicit(&v3_nonce_seq, 1, memory_order_relaxed) + 1;
    json_t *o = json_pack("{s:s, s:o, s:s, s:o, s:{s:s}}", "version_info", version, "resources",
                          res, "type_url", v3_types[t].type_url, "nonce",
                          json_sprintf("%s-%llx", s->version_str, (unsigned long long)n),
                          "control_plane", "identifier", "weir");
    json_decref(root);
    *resp = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (*resp == NULL)
        abort(); /* jansson fails only on OOM here */
    return 200;
}
