/* xds/xds_v3_route.c -- weir's routes as one Envoy v3 RouteConfiguration (RDS).
 *
 * weir's routes are global, not per listener, so there is one RouteConfiguration, named
 * XDS__V3_ROUTE_CONFIG, that every Listener's RDS refers to. Its virtual hosts are weir's host
 * groups (one per exact host, one per "*.suffix", "*" for the routes without a host), and the
 * routes of each are listed in weir's precedence order, which the group index already holds
 * (xds_router.c): Envoy takes the first route that matches, so the same request picks the
 * same route.
 *
 * Three weir behaviours need more than one Envoy route. Each extra route repeats the weir
 * route's match plus one header condition and comes right before it; a request it matches
 * would match the weir route too, so no other route's precedence changes:
 *   - redirect_https (only plain-HTTP requests are redirected): a route that also requires
 *     x-forwarded-proto "http", which the HttpConnectionManager sets from the connection
 *     (use_remote_address), redirects; the route after it serves the TLS requests;
 *   - the rollout header "x-weir-track: blue|green" (any case) forces a colour: one route per
 *     colour straight to that cluster, ahead of the weighted route.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

static void set(json_t *o, const char *key, json_t *v)
{
    json_object_set_new(o, key, v);
}

/* An extra header condition of a route variant (see the top of the file). */
struct v3_extra {
    const char *name, *value;
    bool ignore_case;
};

static json_t *v3_string_match(const char *kind, const char *value, bool ignore_case)
{
    json_t *m = json_pack("{s:s}", kind, value);

    if (ignore_case)
        set(m, "ignore_case", json_true());
    return m;
}

/* envoy.config.route.v3.HeaderMatcher. Envoy's prefix, suffix and contains matchers (and
 * regexes) refuse an empty value: an empty prefix, suffix or substring is met by any value,
 * which is "present", and an empty regex meets the empty value only, which is exact "". */
static json_t *v3_header(const struct xds_header_match *h)
{
    static const char *const kinds[] = {
        [XDS_HDR_EXACT] = "exact",       [XDS_HDR_PREFIX] = "prefix", [XDS_HDR_SUFFIX] = "suffix",
        [XDS_HDR_CONTAINS] = "contains", [XDS_HDR_REGEX] = "regex",
    };
    json_t *o = json_pack("{s:s}", "name", h->name);

    if (h->kind == XDS_HDR_PRESENT ||
        (h->value_len == 0 && h->kind != XDS_HDR_EXACT && h->kind != XDS_HDR_REGEX))
        set(o, "present_match", json_true());
    else if (h->kind == XDS_HDR_REGEX && h->value_len > 0)
        set(o, "string_match", json_pack("{s:{s:s}}", "safe_regex", "regex", h->value));
    else
        set(o, "string_match",
            v3_string_match(h->kind == XDS_HDR_REGEX ? "exact" : kinds[h->kind], h->value, false));
    if (h->invert)
        set(o, "invert_match", json_true());
    return o;
}

static json_t *v3_match(const struct xds_route *r, const struct v3_extra *extra)
{
    json_t *m = json_object();

    switch (r->path_kind) {
    case XDS_PATH_EXACT:
        set(m, "path", json_string(r->path));
        break;
    case XDS_PATH_PREFIX:
        set(m, "prefix", json_string(r->path));
        break;
    case XDS_PATH_REGEX:
        set(m, "safe_regex", json_pack("{s:s}", "regex", r->path));
        break;
    default:
        set(m, "prefix", json_string("/")); /* Envoy needs a path condition: every path */
        break;
    }
    if (r->n_hdrs > 0 || extra != NULL) {
        json_t *a = json_array();
        for (uint32_t i = 0; i < r->n_hdrs; i++)
            json_array_append_new(a, v3_header(&r->hdrs[i]));
        if (extra != NULL)
            json_array_append_new(
                a, json_pack("{s:s, s:o}", "name", extra->name, "string_match",
                             v3_string_match("exact", extra->value, extra->ignore_case)));
        set(m, "headers", a);
    }
    return m;
}

/* RouteAction.HashPolicy of a ring_hash cluster. */
static json_t *v3_hash_policy(const struct xds_cluster *c)
{
    switch (c->hash_on) {
    case XDS_HASH_HEADER:
        return json_pack("{s:{s:s}}", "header", "header_name", c->hash_name);
    case XDS_HASH_COOKIE:
        return json_pack("{s:{s:s}}", "cookie", "name", c->hash_name);
    default:
        return json_pack("{s:{s:b}}", "connection_properties", "source_ip", 1);
    }
}

static bool v3_same_hash(const struct xds_cluster *a, const struct xds_cluster *b)
{
    return a->hash_on == b->hash_on &&
           (a->hash_name == b->hash_name || (a->hash_name != NULL && b->hash_name != NULL &&
                                             strcmp(a->hash_name, b->hash_name) == 0));
}

/* Hash policies for the ring_hash clusters among the route's targets wc[from, to): the hash
 * policy is the route's in Envoy, the cluster's in weir. Each distinct policy is listed once. */
static void v3_add_hash_policies(json_t *action, const struct xds_route *r, uint32_t from,
                                 uint32_t to)
{
    json_t *a = NULL;

    for (uint32_t i = from; i < to; i++) {
        const struct xds_cluster *c = r->wc[i].cluster;
        bool dup = false;
        if (c->lb_policy != XDS_LB_RING_HASH)
            continue;
        for (uint32_t j = from; j < i && !dup; j++)
            dup = r->wc[j].cluster->lb_policy == XDS_LB_RING_HASH &&
                  v3_same_hash(r->wc[j].cluster, c);
        if (dup)
            continue;
        if (a == NULL)
            a = json_array();
        json_array_append_new(a, v3_hash_policy(c));
    }
    if (a != NULL)
        set(action, "hash_policy", a);
}

static json_t *v3_weighted(const struct xds_route *r)
{
    json_t *a = json_array();

    for (uint32_t i = 0; i < r->n_wc; i++) {
        uint32_t w = r->wc[i].weight;
        if (r->action == XDS_ACT_ROLLOUT) /* wc[0] blue, wc[1] green: the live weight */
            w = i == 1 ? r->rollout->green_weight : 100 - r->rollout->green_weight;
        /* A colour at 0 gets no request: leave it out rather than rely on zero weights. */
        if (w > 0)
            json_array_append_new(
                a, json_pack("{s:s, s:i}", "name", r->wc[i].cluster->name, "weight", (int)w));
    }
    return json_pack("{s:o}", "clusters", a);
}

/* RouteAction to all the route's targets (<only> < 0) or to target wc[<only>] alone. */
static json_t *v3_route_action(const struct xds_route *r, int only)
{
    json_t *o = json_object();

    if (only >= 0)
        set(o, "cluster", json_string(r->wc[only].cluster->name));
    else if (r->action == XDS_ACT_CLUSTER)
        set(o, "cluster", json_string(r->wc[0].cluster->name));
    else
        set(o, "weighted_clusters", v3_weighted(r));
    set(o, "timeout", xds__v3_duration(r->timeout_ms));
    if (only >= 0)
        v3_add_hash_policies(o, r, (uint32_t)only, (uint32_t)only + 1);
    else
        v3_add_hash_policies(o, r, 0, r->n_wc);
    return o;
}

/* The port of the first TLS listener, which weir's redirects point to (443 if none). */
static unsigned v3_tls_port(const struct xds_snapshot *s)
{
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        const struct xds_listener *l = &s->listeners[i];
        if (l->tls == NULL)
            continue;
        if (l->ss.ss_family == AF_INET6)
            return ntohs(((const struct sockaddr_in6 *)&l->ss)->sin6_port);
        return ntohs(((const struct sockaddr_in *)&l->ss)->sin_port);
    }
    return 443;
}

enum v3_variant { V3_BASE = -1, V3_BLUE = 0, V3_GREEN = 1, V3_REDIRECT = 2 };

static json_t *v3_route(const struct xds_snapshot *s, const struct xds_route *r, enum v3_variant v)
{
    static const struct v3_extra extras[] = {
        [V3_BLUE] = {"x-weir-track", "blue", true},
        [V3_GREEN] = {"x-weir-track", "green", true},
        [V3_REDIRECT] = {"x-forwarded-proto", "http", false},
    };
    static const char *const suffixes[] = {
        [V3_BLUE] = "/track-blue", [V3_GREEN] = "/track-green", [V3_REDIRECT] = "/redirect-https"};
    json_t *o = json_object();

    set(o, "name",
        v == V3_BASE ? json_string(r->name) : json_sprintf("%s%s", r->name, suffixes[v]));
    set(o, "match", v3_match(r, v == V3_BASE ? NULL : &extras[v]));
    if (v == V3_REDIRECT) {
        /* The port is always given: without it Envoy would keep the request's own port. */
        set(o, "redirect",
            json_pack("{s:b, s:i, s:s}", "https_redirect", 1, "port_redirect", (int)v3_tls_port(s),
                      "response_code", "PERMANENT_REDIRECT"));
        return o;
    }
    set(o, "route", v3_route_action(r, (int)v));
    /* weir sends HSTS on TLS responses only; Envoy would send it on plain HTTP ones too,
     * where user agents ignore it (RFC 6797 §8.1). */
    if (r->hsts.enabled)
        set(o, "response_headers_to_add",
            json_pack("[{s:{s:s, s:s}, s:s}]", "header", "key", "strict-transport-security",
                      "value", r->hsts.header_value, "append_action",
                      "OVERWRITE_IF_EXISTS_OR_ADD"));
    return o;
}

static json_t *v3_vhost(const struct xds_snapshot *s, const char *host,
                        const struct xds_route_group *g)
{
    json_t *routes = json_array();

    for (uint32_t i = 0; i < g->n; i++) {
        const struct xds_route *r = g->routes[i];
        if (r->redirect_https)
            json_array_append_new(routes, v3_route(s, r, V3_REDIRECT));
        if (r->action == XDS_ACT_ROLLOUT) {
            json_array_append_new(routes, v3_route(s, r, V3_BLUE));
            json_array_append_new(routes, v3_route(s, r, V3_GREEN));
        }
        json_array_append_new(routes, v3_route(s, r, V3_BASE));
    }
    /* Virtual host names must be unique, and so are weir's host groups. */
    return json_pack("{s:s, s:[s], s:o}", "name", host, "domains", host, "routes", routes);
}

json_t *xds__v3_route_config(const struct xds_snapshot *s)
{
    json_t *o = xds__v3_any("envoy.config.route.v3.RouteConfiguration");
    json_t *vhosts = json_array();
    const struct xds_vhost_index *v = s->vhosts;

    set(o, "name", json_string(XDS__V3_ROUTE_CONFIG));
    /* Every group holds at least one route, and all its routes have the group's host. */
    for (uint32_t i = 0; v != NULL && i < v->n_groups; i++)
        json_array_append_new(vhosts, v3_vhost(s, v->groups[i].routes[0]->host, &v->groups[i]));
    if (v != NULL && v->any.n > 0)
        json_array_append_new(vhosts, v3_vhost(s, "*", &v->any));
    set(o, "virtual_hosts", vhosts);
    /* weir ignores the port of the Host value when it picks the host group. */
    set(o, "ignore_port_in_host_matching", json_true());
    return o;
}
