/* xds/xds_config_cluster.c -- the "clusters" section of the config file (INTERFACES.md §2):
 * load balancing, endpoints, upstream TLS, outlier detection and health checks.
 *
 * Part of the loader in xds_config.c: same rules (every error reported, one line each, and
 * the walk goes on with defaults).
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

#define MAX_EP_WEIGHT 10000

static const char *const hc_types[] = {NULL, "http", "tcp", "grpc", NULL};

static void lower(char *s)
{
    for (; s != NULL && *s != '\0'; s++)
        *s = wr_lower(*s);
}

/* Returns the index of <v> in the NULL-terminated <names> starting at <from>, or -1. */
static int lookup(const char *const *names, int from, const char *v)
{
    for (int i = from; names[i] != NULL; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

/* ---- load balancing ----------------------------------------------------------------------- */

/* "source_ip" | {"header": NAME} | {"cookie": NAME}; required for ring_hash, refused otherwise. */
static void parse_hash_on(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    json_t *h = json_object_get(o, "hash_on");
    const char *name;
    json_t *v;

    if (cl->lb_policy != XDS_LB_RING_HASH) {
        if (h != NULL)
            xds__cfg_err(c, "hash_on", "only applies to lb_policy \"ring_hash\"");
        return;
    }
    if (h == NULL) {
        xds__cfg_err(c, "hash_on", "is required for lb_policy \"ring_hash\"");
        return;
    }
    if (json_is_string(h) && strcmp(json_string_value(h), "source_ip") == 0) {
        cl->hash_on = XDS_HASH_SOURCE_IP;
        return;
    }
    if (json_is_object(h) && json_object_size(h) == 1) {
        json_object_foreach(h, name, v)
        {
            bool header = strcmp(name, "header") == 0;
            if ((header || strcmp(name, "cookie") == 0) && json_is_string(v) &&
                xds__cfg_token(json_string_value(v))) {
                cl->hash_on = header ? XDS_HASH_HEADER : XDS_HASH_COOKIE;
                cl->hash_name = wr_xstrdup(json_string_value(v));
                if (header)
                    lower(cl->hash_name);
                return;
            }
        }
    }
    xds__cfg_err(c, "hash_on", "must be \"source_ip\", {\"header\": NAME} or {\"cookie\": NAME}");
}

static void parse_lb(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    static const char *const policies[] = {"round_robin", "least_request", "ring_hash", "random",
                                           NULL};
    char *v = NULL;

    if (xds__cfg_str(c, o, "lb_policy", 0, "round_robin", &v)) {
        int p = lookup(policies, 0, v);
        if (p < 0)
            xds__cfg_err(c, "lb_policy",
                         "must be \"round_robin\", \"least_request\", "
                         "\"ring_hash\" or \"random\"");
        cl->lb_policy = (uint8_t)(p < 0 ? 0 : p);
    }
    free(v);
    parse_hash_on(c, o, cl);
}

/* ---- endpoints ---------------------------------------------------------------------------- */

static unsigned port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void parse_endpoint(struct xds__cfg *c, json_t *o, struct xds_cluster *cl,
                           struct xds_name_index *seen)
{
    const char *const keys[] = {"address", "weight", "priority", "health", NULL};
    struct xds_endpoint *ep = &cl->eps[cl->n_eps];
    char *addr = NULL, *health = NULL, canon[64];
    const char *why = NULL;
    uint32_t other;

    xds__cfg_keys(c, o, keys);
    xds__cfg_u32(c, o, "weight", 1, 1, MAX_EP_WEIGHT, &ep->weight);
    xds__cfg_u32(c, o, "priority", 0, 0, 127, &ep->priority);
    if (xds__cfg_str(c, o, "health", 0, NULL, &health) && health != NULL) {
        if (strcmp(health, "draining") == 0)
            ep->draining = true;
        else if (strcmp(health, "healthy") != 0)
            xds__cfg_err(c, "health", "must be \"healthy\" or \"draining\"");
        free(health);
    }
    if (!xds__cfg_str(c, o, "address", XDS__REQUIRED | XDS__NONEMPTY, NULL, &addr) || addr == NULL)
        return;
    if (wr_parse_address(addr, &ep->ss, &ep->sslen, &why) == 0 && port_of(&ep->ss) == 0)
        why = "port must be a number from 1 to 65535";
    free(addr);
    if (why != NULL) {
        xds__cfg_err(c, "address", "%s", why);
        return;
    }
    /* The canonical form, as GET /clusters and the metrics labels show it. */
    wr_format_address(&ep->ss, canon, sizeof(canon));
    ep->address = wr_xstrdup(canon);
    if (!xds__index_add(seen, ep->address, strlen(ep->address), cl->n_eps, &other)) {
        xds__cfg_err(c, "address", "duplicate endpoint \"%s\"", ep->address);
        wr_free(&ep->address);
        return;
    }
    cl->total_weight += ep->weight;
    cl->has_priorities |= ep->priority > 0;
    cl->n_eps++;
}

/* A cluster without an "endpoints" key is a template: a discovery provider fills it. */
static void parse_endpoints(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    bool ok;
    json_t *a = xds__cfg_arr(c, o, "endpoints", 0, &ok);
    struct xds_name_index *seen = xds__index_new(json_array_size(a));

    cl->is_template = json_object_get(o, "endpoints") == NULL;
    cl->eps = wr_xcalloc(json_array_size(a) + 1, sizeof(*cl->eps));
    size_t mark = xds__cfg_enter(c, "endpoints");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        size_t m = xds__cfg_enter_idx(c, i);
        if (json_is_object(e))
            parse_endpoint(c, e, cl, seen);
        else
            xds__cfg_err(c, NULL, "must be an object");
        xds__cfg_leave(c, m);
    }
    xds__cfg_leave(c, mark);
    /* The index borrowed the addresses; it is only needed to spot duplicates. */
    xds__index_free(seen);
}

/* ---- upstream TLS and protocol ------------------------------------------------------------ */

static void parse_protocol(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    static const char *const protocols[] = {"http1", "h2", "h2c", NULL};
    const char *const tls_keys[] = {"sni", "ca_file", "verify", NULL};
    char *v = NULL;
    bool ok;

    if (xds__cfg_str(c, o, "protocol", 0, "http1", &v)) {
        int p = lookup(protocols, 0, v);
        if (p < 0)
            xds__cfg_err(c, "protocol", "must be \"http1\", \"h2\" or \"h2c\"");
        cl->protocol = (uint8_t)(p < 0 ? 0 : p);
    }
    free(v);
    cl->tls.verify = true;
    /* "h2" is HTTP/2 over TLS: it implies TLS even without a "tls" object. */
    cl->tls.enabled = cl->protocol == XDS_PROTO_H2;
    json_t *t = xds__cfg_obj(c, o, "tls", XDS__NULLABLE, &ok);
    if (t == NULL) {
        if (cl->tls.enabled)
            xds__tls_cluster_build(c, cl);
        return;
    }
    if (cl->protocol == XDS_PROTO_H2C)
        xds__cfg_err(c, "tls", "does not apply to protocol \"h2c\" (cleartext)");
    cl->tls.enabled = true;
    size_t mark = xds__cfg_enter(c, "tls");
    xds__cfg_keys(c, t, tls_keys);
    xds__cfg_str(c, t, "sni", XDS__NULLABLE | XDS__NONEMPTY, NULL, &cl->tls.sni);
    xds__cfg_file(c, t, "ca_file", XDS__NULLABLE, true, &cl->tls.ca_file);
    xds__cfg_bool(c, t, "verify", true, &cl->tls.verify);
    xds__tls_cluster_build(c, cl);
    xds__cfg_leave(c, mark);
}

/* ---- outlier detection -------------------------------------------------------------------- */

static void parse_outlier(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    const char *const keys[] = {"consecutive_5xx",      "consecutive_gateway_failure",
                                "base_ejection_ms",     "max_ejection_ms",
                                "max_ejection_percent", NULL};
    struct xds_outlier *od = &cl->outlier;
    bool ok;
    json_t *j = xds__cfg_obj(c, o, "outlier_detection", XDS__NULLABLE, &ok);

    if (j == NULL)
        return;
    size_t mark = xds__cfg_enter(c, "outlier_detection");
    xds__cfg_keys(c, j, keys);
    od->enabled = true;
    xds__cfg_u32(c, j, "consecutive_5xx", 5, 1, XDS__NOLIMIT, &od->consecutive_5xx);
    xds__cfg_u32(c, j, "consecutive_gateway_failure", 5, 1, XDS__NOLIMIT,
                 &od->consecutive_gateway_failure);
    bool base_ok =
        xds__cfg_u32(c, j, "base_ejection_ms", 30000, 1, XDS__NOLIMIT, &od->base_ejection_ms);
    if (xds__cfg_u32(c, j, "max_ejection_ms", 300000, 1, XDS__NOLIMIT, &od->max_ejection_ms) &&
        base_ok && od->max_ejection_ms < od->base_ejection_ms)
        xds__cfg_err(c, "max_ejection_ms", "must be >= base_ejection_ms");
    xds__cfg_u32(c, j, "max_ejection_percent", 10, 0, 100, &od->max_ejection_percent);
    xds__cfg_leave(c, mark);
}

/* ---- health checks ------------------------------------------------------------------------ */

/* [[200, 399], 404]: inclusive ranges, a lone status standing for itself. */
static void parse_statuses(struct xds__cfg *c, json_t *hc, struct xds_health_check *h)
{
    bool ok;
    json_t *a = xds__cfg_arr(c, hc, "expected_statuses", 0, &ok);

    if (a == NULL) {
        h->expected = wr_xcalloc(1, sizeof(*h->expected));
        h->expected[0][0] = 200;
        h->expected[0][1] = 399;
        h->n_expected = 1;
        return;
    }
    size_t mark = xds__cfg_enter(c, "expected_statuses");
    if (json_array_size(a) == 0)
        xds__cfg_err(c, NULL, "must not be empty");
    h->expected = wr_xcalloc(json_array_size(a) + 1, sizeof(*h->expected));
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        json_t *lo = json_is_array(e) ? json_array_get(e, 0) : e;
        json_t *hi = json_is_array(e) ? json_array_get(e, 1) : e;
        json_int_t l = json_integer_value(lo), u = json_integer_value(hi);
        size_t m = xds__cfg_enter_idx(c, i);
        if ((json_is_array(e) && json_array_size(e) != 2) || !json_is_integer(lo) ||
            !json_is_integer(hi) || l < 100 || u > 599 || l > u) {
            xds__cfg_err(c, NULL, "must be [LOW, HIGH] with 100 <= LOW <= HIGH <= 599");
        } else {
            h->expected[h->n_expected][0] = (uint16_t)l;
            h->expected[h->n_expected][1] = (uint16_t)u;
            h->n_expected++;
        }
        xds__cfg_leave(c, m);
    }
    xds__cfg_leave(c, mark);
}

static void parse_hc_http(struct xds__cfg *c, json_t *hc, struct xds_health_check *h)
{
    if (xds__cfg_str(c, hc, "path", XDS__REQUIRED, NULL, &h->path) && h->path != NULL &&
        h->path[0] != '/')
        xds__cfg_err(c, "path", "must start with \"/\"");
    if (xds__cfg_str(c, hc, "method", 0, "GET", &h->method) && !xds__cfg_token(h->method))
        xds__cfg_err(c, "method", "must be an HTTP method");
    if (xds__cfg_str(c, hc, "host", XDS__NULLABLE | XDS__NONEMPTY, NULL, &h->host) &&
        h->host != NULL && strpbrk(h->host, " \t\r\n/") != NULL)
        xds__cfg_err(c, "host", "must be a host name");
    xds__cfg_str(c, hc, "body_contains", XDS__NULLABLE, NULL, &h->body_contains);
    parse_statuses(c, hc, h);
}

/* Reports the keys of <hc> that belong to a check type other than <type>. */
static void hc_keys(struct xds__cfg *c, json_t *hc, int type)
{
    static const char *const common[] = {"type",
                                         "interval_ms",
                                         "unhealthy_interval_ms",
                                         "timeout_ms",
                                         "healthy_threshold",
                                         "unhealthy_threshold",
                                         "jitter_percent",
                                         "initial_state",
                                         "tls",
                                         NULL};
    static const char *const own[][6] = {
        [XDS_HC_HTTP] = {"path", "method", "host", "expected_statuses", "body_contains", NULL},
        [XDS_HC_TCP] = {"send", "expect", NULL},
        [XDS_HC_GRPC] = {"service", NULL},
    };
    const char *key;
    json_t *v;

    json_object_foreach(hc, key, v)
    {
        int t = XDS_HC_HTTP;
        if (lookup(common, 0, key) >= 0)
            continue;
        while (t <= XDS_HC_GRPC && lookup(own[t], 0, key) < 0)
            t++;
        if (t > XDS_HC_GRPC)
            xds__cfg_err(c, key, "unknown key");
        else if (t != type && type > 0)
            xds__cfg_err(c, key, "only applies to type \"%s\"", hc_types[t]);
    }
}

static void parse_hc_common(struct xds__cfg *c, json_t *hc, struct xds_health_check *h)
{
    char *state = NULL;

    xds__cfg_u32(c, hc, "interval_ms", 5000, 1, XDS__NOLIMIT, &h->interval_ms);
    xds__cfg_u32(c, hc, "unhealthy_interval_ms", h->interval_ms, 1, XDS__NOLIMIT,
                 &h->unhealthy_interval_ms);
    xds__cfg_u32(c, hc, "timeout_ms", 1000, 1, XDS__NOLIMIT, &h->timeout_ms);
    xds__cfg_u32(c, hc, "healthy_threshold", 1, 1, XDS__NOLIMIT, &h->healthy_threshold);
    xds__cfg_u32(c, hc, "unhealthy_threshold", 3, 1, XDS__NOLIMIT, &h->unhealthy_threshold);
    xds__cfg_u32(c, hc, "jitter_percent", 10, 0, 100, &h->jitter_percent);
    xds__cfg_bool(c, hc, "tls", false, &h->tls);
    h->initial_healthy = true;
    if (xds__cfg_str(c, hc, "initial_state", 0, "healthy", &state)) {
        if (strcmp(state, "unhealthy") == 0)
            h->initial_healthy = false;
        else if (strcmp(state, "healthy") != 0)
            xds__cfg_err(c, "initial_state", "must be \"healthy\" or \"unhealthy\"");
    }
    free(state);
}

static void parse_health_check(struct xds__cfg *c, json_t *o, struct xds_cluster *cl)
{
    struct xds_health_check *h = &cl->hc;
    char *type = NULL;
    bool ok;
    json_t *hc = xds__cfg_obj(c, o, "health_check", XDS__NULLABLE, &ok);

    if (hc == NULL)
        return;
    size_t mark = xds__cfg_enter(c, "health_check");
    int t = -1;
    if (xds__cfg_str(c, hc, "type", XDS__REQUIRED, NULL, &type) && type != NULL &&
        (t = lookup(hc_types, 1, type)) < 0)
        xds__cfg_err(c, "type", "must be \"http\", \"tcp\" or \"grpc\"");
    free(type);
    hc_keys(c, hc, t);
    parse_hc_common(c, hc, h);
    h->type = (uint8_t)(t > 0 ? t : XDS_HC_NONE);
    if (h->type == XDS_HC_HTTP) {
        parse_hc_http(c, hc, h);
    } else if (h->type == XDS_HC_TCP) {
        xds__cfg_str(c, hc, "send", XDS__NULLABLE, NULL, &h->send);
        xds__cfg_str(c, hc, "expect", XDS__NULLABLE, NULL, &h->expect);
    } else if (h->type == XDS_HC_GRPC) {
        xds__cfg_str(c, hc, "service", 0, "", &h->service);
    }
    xds__cfg_leave(c, mark);
}

/* ---- clusters ----------------------------------------------------------------------------- */

static struct xds_cluster *parse_cluster(struct xds__cfg *c, json_t *o, uint8_t source)
{
    const char *const keys[] = {"name",
                                "lb_policy",
                                "hash_on",
                                "endpoints",
                                "protocol",
                                "tls",
                                "panic_percent",
                                "outlier_detection",
                                "health_check",
                                "connect_timeout_ms",
                                "idle_timeout_ms",
                                "max_idle",
                                "retries",
                                NULL};
    struct xds_cluster *cl = wr_xcalloc(1, sizeof(*cl));

    atomic_init(&cl->refs, 1);
    cl->source = source;
    xds__cfg_keys(c, o, keys);
    if (xds__cfg_str(c, o, "name", XDS__REQUIRED | XDS__NONEMPTY, NULL, &cl->name) &&
        cl->name != NULL && strchr(cl->name, '|') != NULL)
        xds__cfg_err(c, "name", "must not contain \"|\"");
    parse_lb(c, o, cl);
    parse_endpoints(c, o, cl);
    parse_protocol(c, o, cl);
    xds__cfg_u32(c, o, "panic_percent", 50, 0, 100, &cl->panic_percent);
    parse_outlier(c, o, cl);
    parse_health_check(c, o, cl);
    xds__cfg_u32(c, o, "connect_timeout_ms", 2000, 1, XDS__NOLIMIT, &cl->connect_timeout_ms);
    xds__cfg_u32(c, o, "idle_timeout_ms", 30000, 1, XDS__NOLIMIT, &cl->idle_timeout_ms);
    xds__cfg_u32(c, o, "max_idle", 1024, 0, XDS__NOLIMIT, &cl->max_idle);
    xds__cfg_u32(c, o, "retries", 1, 0, 5, &cl->retries);
    if (c->nworkers > 0) {
        cl->n_wslots = c->nworkers;
        cl->wslots = wr_xcalloc(c->nworkers, sizeof(*cl->wslots));
    }
    return cl;
}

static void free_cluster(struct xds_cluster *c)
{
    free(c->name);
    free(c->hash_name);
    for (uint32_t i = 0; c->eps != NULL && i < c->n_eps; i++) {
        free(c->eps[i].address);
        xds_ep_state_unref(c->eps[i].st);
    }
    free(c->eps);
    free(c->hc.path);
    free(c->hc.method);
    free(c->hc.host);
    free(c->hc.body_contains);
    free(c->hc.expected);
    free(c->hc.send);
    free(c->hc.expect);
    free(c->hc.service);
    xds__tls_cluster_free(c);
    free(c->tls.sni);
    free(c->tls.ca_file);
    xds_counters_unref(c->stats);
    for (unsigned i = 0; i < c->n_wslots; i++)
        if (c->wslots[i].p != NULL && c->wslots[i].free_fn != NULL)
            c->wslots[i].free_fn(c->wslots[i].p);
    free(c->wslots);
    free(c);
}

void xds__cluster_unref(struct xds_cluster *cl)
{
    if (cl != NULL && atomic_fetch_sub_explicit(&cl->refs, 1, memory_order_acq_rel) == 1)
        free_cluster(cl);
}

/* ---- the cache of built clusters ----
 *
 * Keyed by the cluster's JSON (compact, sorted keys) and its source: the same text builds the
 * same cluster, so the object of the previous build is reused as it is (validation, address
 * parsing, TLS context, stats links and the workers' balancer state included). */

struct xds_cache {
    struct xds_name_index *ix; /* key -> ents[] */

    struct xds_name_index *pix; /* source object pointer + source -> ents[] */

    struct cache_ent {
        char *key;
        struct xds_cluster *cl; /* a reference */
        json_t *src;            /* a reference: the object it was built from, or NULL */
        char pkey[sizeof(void *) + 1];
    } * ents;

    uint32_t n;

    struct tls_ent {
        char *key;
        struct xds_listener_tls *t; /* a reference */
    } * tls;

    uint32_t n_tls;
    char *root_text; /* the config text whose parsed tree <root> is */
    size_t root_len;
    json_t *root;
};

json_t *xds__cache_root(struct xds_cache *c, const char *text, size_t len)
{
    if (c == NULL || c->root == NULL || c->root_len != len || memcmp(c->root_text, text, len) != 0)
        return NULL;
    return json_incref(c->root);
}

void xds__cache_root_put(struct xds_cache *c, const char *text, size_t len, json_t *root)
{
    if (c == NULL)
        return;
    free(c->root_text);
    json_decref(c->root);
    c->root_text = wr_xmalloc(len + 1);
    memcpy(c->root_text, text, len);
    c->root_text[len] = '\0';
    c->root_len = len;
    c->root = json_incref(root);
}

struct xds_listener_tls *xds__cache_tls_get(struct xds_cache *c, const char *key)
{
    for (uint32_t i = 0; c != NULL && i < c->n_tls; i++) {
        if (strcmp(c->tls[i].key, key) == 0) {
            atomic_fetch_add_explicit(&c->tls[i].t->refs, 1, memory_order_relaxed);
            return c->tls[i].t;
        }
    }
    return NULL;
}

void xds__cache_tls_put(struct xds_cache *c, const char *key, struct xds_listener_tls *t)
{
    c->tls = wr_xrealloc(c->tls, (c->n_tls + 1) * sizeof(*c->tls));
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    c->tls[c->n_tls++] = (struct tls_ent){.key = wr_xstrdup(key), .t = t};
}

/* Keeps only the TLS entries the listeners of <s> use. */
static void cache_tls_prune(struct xds_cache *c, const struct xds_snapshot *s)
{
    uint32_t kept = 0;

    for (uint32_t i = 0; i < c->n_tls; i++) {
        bool used = false;
        for (uint32_t j = 0; j < s->n_listeners && !used; j++)
            used = s->listeners[j].tls == c->tls[i].t;
        if (used) {
            c->tls[kept++] = c->tls[i];
        } else {
            free(c->tls[i].key);
            xds__listener_tls_unref(c->tls[i].t);
        }
    }
    c->n_tls = kept;
}

struct xds_cache *xds_cache_new(void)
{
    return wr_xcalloc(1, sizeof(struct xds_cache));
}

void xds_cache_clear(struct xds_cache *c)
{
    if (c == NULL)
        return;
    for (uint32_t i = 0; i < c->n; i++) {
        free(c->ents[i].key);
        xds__cluster_unref(c->ents[i].cl);
        json_decref(c->ents[i].src);
    }
    free(c->ents);
    xds__index_free(c->ix);
    xds__index_free(c->pix);
    c->pix = NULL;
    c->ents = NULL;
    c->ix = NULL;
    c->n = 0;
    for (uint32_t i = 0; i < c->n_tls; i++) {
        free(c->tls[i].key);
        xds__listener_tls_unref(c->tls[i].t);
    }
    free(c->tls);
    c->tls = NULL;
    c->n_tls = 0;
    free(c->root_text);
    json_decref(c->root);
    c->root_text = NULL;
    c->root = NULL;
    c->root_len = 0;
}

void xds_cache_free(struct xds_cache *c)
{
    xds_cache_clear(c);
    free(c);
}

static struct xds_cluster *cache_get(struct xds_cache *c, const char *key)
{
    uint32_t i;

    if (c == NULL || c->ix == NULL || !xds__index_get(c->ix, key, strlen(key), &i))
        return NULL;
    atomic_fetch_add_explicit(&c->ents[i].cl->refs, 1, memory_order_relaxed);
    return c->ents[i].cl;
}

/* The pointer key of a view object: its address and its source. Views hand their objects over
 * and never change them afterwards (include/weir/disc.h), and the cache holds a reference, so
 * the address cannot be reused for another object while the entry lives. */
static void pointer_key(char *out, const json_t *o, uint8_t source)
{
    memcpy(out, &o, sizeof(o));
    out[sizeof(o)] = (char)source;
}

static struct cache_ent *cache_get_ptr(struct xds_cache *c, const json_t *o, uint8_t source)
{
    char pk[sizeof(void *) + 1];
    uint32_t i;

    if (c == NULL || c->pix == NULL)
        return NULL;
    pointer_key(pk, o, source);
    if (!xds__index_get(c->pix, pk, sizeof(pk), &i))
        return NULL;
    atomic_fetch_add_explicit(&c->ents[i].cl->refs, 1, memory_order_relaxed);
    return &c->ents[i];
}

static void cache_take(struct xds_cache *cache, struct xds_snapshot *s, char **keys, json_t **srcs)
{
    struct xds_cache fresh = {0};
    uint32_t other;

    fresh.ix = xds__index_new(s->n_clusters);
    fresh.pix = xds__index_new(s->n_clusters);
    fresh.ents = wr_xcalloc(s->n_clusters + 1, sizeof(*fresh.ents));
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        if (keys[i] == NULL)
            continue;
        struct cache_ent *e = &fresh.ents[fresh.n];
        if (!xds__index_add(fresh.ix, keys[i], strlen(keys[i]), fresh.n, &other))
            continue;
        e->key = keys[i];
        keys[i] = NULL;
        e->cl = s->clusters[i];
        atomic_fetch_add_explicit(&e->cl->refs, 1, memory_order_relaxed);
        if (srcs[i] != NULL) {
            pointer_key(e->pkey, srcs[i], s->clusters[i]->source);
            if (xds__index_add(fresh.pix, e->pkey, sizeof(e->pkey), fresh.n, &other))
                e->src = json_incref(srcs[i]);
        }
        fresh.n++;
    }
    /* keep the TLS entries and the parsed text: move them over before clearing the old
     * cluster entries */
    fresh.tls = cache->tls;
    fresh.n_tls = cache->n_tls;
    cache->tls = NULL;
    cache->n_tls = 0;
    fresh.root_text = cache->root_text;
    fresh.root_len = cache->root_len;
    fresh.root = cache->root;
    cache->root_text = NULL;
    cache->root = NULL;
    xds_cache_clear(cache);
    *cache = fresh;
    cache_tls_prune(cache, s);
}

static char *cluster_key(json_t *o, uint8_t source, unsigned nworkers)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    char *key = wr_xasprintf("%u|%u|%s", (unsigned)source, nworkers, text ? text : "");
    free(text);
    return key;
}

void xds__cfg_clusters(struct xds__cfg *c, const struct xds__item *items, uint32_t n)
{
    struct xds_snapshot *s = c->s;
    uint32_t other;

    s->cluster_index = xds__index_new(n);
    s->clusters = wr_xcalloc(n + 1, sizeof(*s->clusters));
    c->cluster_keys = wr_xcalloc(n + 1, sizeof(*c->cluster_keys));
    c->cluster_srcs = wr_xcalloc(n + 1, sizeof(*c->cluster_srcs));
    for (uint32_t i = 0; i < n; i++) {
        const struct xds__item *it = &items[i];
        struct xds__item_mark m = xds__cfg_item_enter(c, it);
        struct xds_cluster *cl = NULL;
        char *key = NULL;

        if (!json_is_object(it->obj)) {
            xds__cfg_err(c, NULL, "must be an object");
            xds__cfg_item_leave(c, m);
            continue;
        }
        /* The same object a view handed over last time (a provider that re-renders only
         * what changed): reused without even rendering its key. */
        struct cache_ent *e = NULL;
        if (c->cache != NULL && !it->filled && (e = cache_get_ptr(c->cache, it->obj, it->source)))
            cl = e->cl;
        if (e != NULL) {
            key = wr_xstrdup(e->key);
        } else if (c->cache != NULL) {
            key = cluster_key(it->obj, it->source, c->nworkers);
            cl = cache_get(c->cache, key);
        }
        if (cl == NULL)
            cl = parse_cluster(c, it->obj, it->source);
        c->cluster_srcs[s->n_clusters] = it->filled ? NULL : it->obj;
        c->cluster_keys[s->n_clusters] = key;
        s->clusters[s->n_clusters++] = cl;
        /* Registered even when invalid, so that references do not add "unknown" errors. */
        if (cl->name != NULL && !xds__index_add(s->cluster_index, cl->name, strlen(cl->name),
                                                s->n_clusters - 1, &other))
            xds__cfg_err(c, "name", "duplicate name \"%s\"", cl->name);
        xds__cfg_item_leave(c, m);
    }
}

void xds__cfg_cluster_stats(struct xds_snapshot *s, struct xds_stats_reg *reg)
{
    struct wr_sbuf key = {0};

    for (uint32_t i = 0; i < s->n_clusters; i++) {
        struct xds_cluster *cl = s->clusters[i];
        if (cl->stats != NULL) /* reused from an earlier build: linked then */
            continue;
        key.len = 0;
        wr_sbuf_printf(&key, "cluster|%s", cl->name);
        cl->stats = xds_stats_counters(reg, key.p, XDS_CS_COUNT);
        for (uint32_t j = 0; j < cl->n_eps; j++) {
            key.len = 0;
            wr_sbuf_printf(&key, "%s|%s", cl->name, cl->eps[j].address);
            cl->eps[j].st = xds_stats_ep(reg, key.p);
        }
    }
    wr_sbuf_dispose(&key);
}

/* Called once the build succeeded: the cache now holds this build's clusters. */
void xds__cfg_cluster_cache(struct xds__cfg *c)
{
    if (c->cache != NULL)
        cache_take(c->cache, c->s, c->cluster_keys, c->cluster_srcs);
}
