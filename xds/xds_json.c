/* xds/xds_json.c -- a snapshot rendered back as JSON, for GET /config.
 *
 * The output is the config in the file's own schema with every default filled in, plus a
 * leading "version" (a string). Secrets are redacted by construction: the admin token is
 * never rendered, only the path of its file. Relative file paths appear resolved.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static void set(json_t *o, const char *key, json_t *v)
{
    json_object_set_new(o, key, v);
}

static json_t *strv(char *const *v, uint32_t n)
{
    json_t *a = json_array();

    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *listener_json(const struct xds_listener *l)
{
    json_t *o = json_object();

    set(o, "name", json_string(l->name));
    set(o, "address", json_string(l->address));
    set(o, "h2c", json_boolean(l->h2c));
    set(o, "proxy_protocol", json_boolean(l->proxy_protocol));
    if (l->tls != NULL) {
        json_t *t = json_object(), *certs = json_array();
        for (uint32_t i = 0; i < l->tls->n_certs; i++)
            json_array_append_new(certs,
                                  json_pack("{s:s, s:s}", "cert_file", l->tls->certs[i].cert_file,
                                            "key_file", l->tls->certs[i].key_file));
        set(t, "certificates", certs);
        set(t, "alpn", strv(l->tls->alpn, l->tls->n_alpn));
        set(t, "min_version", json_string(l->tls->min_version == 3 ? "1.3" : "1.2"));
        set(o, "tls", t);
    }
    return o;
}

static json_t *header_json(const struct xds_header_match *h)
{
    static const char *const kinds[] = {"exact",    "prefix", "suffix",
                                        "contains", "regex",  "present"};
    json_t *o = json_object();

    set(o, "name", json_string(h->name));
    if (h->kind == XDS_HDR_PRESENT)
        set(o, "present", json_true());
    else
        set(o, kinds[h->kind], json_string(h->value));
    set(o, "invert", json_boolean(h->invert));
    return o;
}

static json_t *match_json(const struct xds_route *r)
{
    static const char *const kinds[] = {NULL, "path_exact", "path_prefix", "path_regex"};
    json_t *m = json_object();

    if (r->host != NULL)
        set(m, "host", json_string(r->host));
    if (r->path_kind != XDS_PATH_ANY)
        set(m, kinds[r->path_kind], json_string(r->path));
    if (r->n_hdrs > 0) {
        json_t *a = json_array();
        for (uint32_t i = 0; i < r->n_hdrs; i++)
            json_array_append_new(a, header_json(&r->hdrs[i]));
        set(m, "headers", a);
    }
    return m;
}

static json_t *route_json(const struct xds_route *r)
{
    json_t *o = json_object();

    set(o, "name", json_string(r->name));
    set(o, "match", match_json(r));
    if (r->action == XDS_ACT_CLUSTER) {
        set(o, "cluster", json_string(r->wc[0].cluster->name));
    } else if (r->action == XDS_ACT_ROLLOUT) {
        set(o, "rollout", json_string(r->rollout->name));
    } else {
        json_t *a = json_array();
        for (uint32_t i = 0; i < r->n_wc; i++)
            json_array_append_new(a, json_pack("{s:s, s:I}", "cluster", r->wc[i].cluster->name,
                                               "weight", (json_int_t)r->wc[i].weight));
        set(o, "weighted_clusters", a);
    }
    set(o, "timeout_ms", json_integer(r->timeout_ms));
    set(o, "max_body_bytes", json_integer((json_int_t)r->max_body_bytes));
    set(o, "redirect_https", json_boolean(r->redirect_https));
    if (r->hsts.enabled)
        set(o, "hsts",
            json_pack("{s:I, s:b, s:b}", "max_age_s", (json_int_t)r->hsts.max_age_s,
                      "include_subdomains", r->hsts.include_subdomains, "preload",
                      r->hsts.preload));
    return o;
}

static json_t *hash_on_json(const struct xds_cluster *c)
{
    if (c->hash_on == XDS_HASH_SOURCE_IP)
        return json_string("source_ip");
    return json_pack("{s:s}", c->hash_on == XDS_HASH_HEADER ? "header" : "cookie", c->hash_name);
}

static json_t *health_check_json(const struct xds_health_check *h)
{
    static const char *const types[] = {NULL, "http", "tcp", "grpc"};
    json_t *o = json_object();

    set(o, "type", json_string(types[h->type]));
    if (h->type == XDS_HC_HTTP) {
        json_t *st = json_array();
        set(o, "path", json_string(h->path));
        set(o, "method", json_string(h->method));
        set(o, "host", str_or_null(h->host));
        for (uint32_t i = 0; i < h->n_expected; i++)
            json_array_append_new(st, json_pack("[i, i]", h->expected[i][0], h->expected[i][1]));
        set(o, "expected_statuses", st);
        set(o, "body_contains", str_or_null(h->body_contains));
    } else if (h->type == XDS_HC_TCP) {
        set(o, "send", str_or_null(h->send));
        set(o, "expect", str_or_null(h->expect));
    } else {
        set(o, "service", json_string(h->service));
    }
    set(o, "interval_ms", json_integer(h->interval_ms));
    set(o, "unhealthy_interval_ms", json_integer(h->unhealthy_interval_ms));
    set(o, "timeout_ms", json_integer(h->timeout_ms));
    set(o, "healthy_threshold", json_integer(h->healthy_threshold));
    set(o, "unhealthy_threshold", json_integer(h->unhealthy_threshold));
    set(o, "jitter_percent", json_integer(h->jitter_percent));
    set(o, "initial_state", json_string(h->initial_healthy ? "healthy" : "unhealthy"));
    set(o, "tls", json_boolean(h->tls));
    return o;
}

static json_t *outlier_json(const struct xds_outlier *od)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "consecutive_5xx",
                     (json_int_t)od->consecutive_5xx, "consecutive_gateway_failure",
                     (json_int_t)od->consecutive_gateway_failure, "base_ejection_ms",
                     (json_int_t)od->base_ejection_ms, "max_ejection_ms",
                     (json_int_t)od->max_ejection_ms, "max_ejection_percent",
                     (json_int_t)od->max_ejection_percent);
}

static json_t *cluster_json(const struct xds_cluster *c)
{
    static const char *const protocols[] = {"http1", "h2", "h2c"};
    json_t *o = json_object();

    set(o, "name", json_string(c->name));
    if (c->source != XDS_SRC_STATIC)
        set(o, "source", json_string(xds_source_name(c->source)));
    set(o, "lb_policy", json_string(xds_lb_policy_name(c->lb_policy)));
    if (c->lb_policy == XDS_LB_RING_HASH)
        set(o, "hash_on", hash_on_json(c));
    if (!c->is_template) { /* a template has no "endpoints" key, and keeps none */
        json_t *a = json_array();
        for (uint32_t i = 0; i < c->n_eps; i++) {
            json_t *e = json_pack("{s:s, s:I}", "address", c->eps[i].address, "weight",
                                  (json_int_t)c->eps[i].weight);
            if (c->eps[i].priority > 0)
                set(e, "priority", json_integer(c->eps[i].priority));
            if (c->eps[i].draining)
                set(e, "health", json_string("draining"));
            json_array_append_new(a, e);
        }
        set(o, "endpoints", a);
    }
    set(o, "protocol", json_string(protocols[c->protocol]));
    if (c->tls.enabled)
        set(o, "tls",
            json_pack("{s:o, s:o, s:b}", "sni", str_or_null(c->tls.sni), "ca_file",
                      str_or_null(c->tls.ca_file), "verify", c->tls.verify));
    set(o, "panic_percent", json_integer(c->panic_percent));
    if (c->outlier.enabled)
        set(o, "outlier_detection", outlier_json(&c->outlier));
    if (c->hc.type != XDS_HC_NONE)
        set(o, "health_check", health_check_json(&c->hc));
    set(o, "connect_timeout_ms", json_integer(c->connect_timeout_ms));
    set(o, "idle_timeout_ms", json_integer(c->idle_timeout_ms));
    set(o, "max_idle", json_integer(c->max_idle));
    set(o, "retries", json_integer(c->retries));
    return o;
}

static json_t *discovery_json(const struct xds_discovery *d)
{
    json_t *o = json_object();

    set(o, "type", json_string(xds_source_name(d->type)));
    switch (d->type) {
    case XDS_SRC_FILE:
        set(o, "path", json_string(d->path));
        break;
    case XDS_SRC_DNS_SRV:
        set(o, "name", json_string(d->name));
        set(o, "cluster", json_string(d->cluster));
        set(o, "resolvers", strv(d->resolvers, d->n_resolvers));
        break;
    case XDS_SRC_CONSUL:
        set(o, "address", json_string(d->address));
        set(o, "token_file", str_or_null(d->token_file));
        set(o, "ca_file", str_or_null(d->ca_file));
        set(o, "datacenter", str_or_null(d->datacenter));
        set(o, "wait_ms", json_integer(d->wait_ms));
        break;
    default:
        set(o, "kubeconfig", str_or_null(d->kubeconfig));
        set(o, "ingress_class", json_string(d->ingress_class));
        set(o, "namespaces", strv(d->namespaces, d->n_namespaces));
        if (d->publish_address != NULL)
            set(o, "publish_address", json_string(d->publish_address));
        if (d->publish_service != NULL)
            set(o, "publish_service", json_string(d->publish_service));
        break;
    }
    set(o, "stale_after_ms", json_integer(d->stale_after_ms));
    return o;
}

static json_t *rollout_json(const struct xds_rollout *r)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:b}", "name", r->name, "blue", r->blue->name, "green",
                     r->green->name, "green_weight", (json_int_t)r->green_weight, "sticky",
                     r->sticky);
}

#define SET_ARRAY(o, key, fn, items, n)                                                            \
    do {                                                                                           \
        json_t *a_ = json_array();                                                                 \
        for (uint32_t i_ = 0; i_ < (n); i_++)                                                      \
            json_array_append_new(a_, fn(&(items)[i_]));                                           \
        set((o), (key), a_);                                                                       \
    } while (0)

char *xds__config_json(const struct xds_snapshot *s)
{
    json_t *o = json_object();

    set(o, "version", json_string(s->version_str));
    set(o, "workers", json_integer(s->workers));
    set(o, "drain_timeout_ms", json_integer(s->drain_timeout_ms));
    set(o, "drain_delay_ms", json_integer(s->drain_delay_ms));
    set(o, "access_log", str_or_null(s->access_log));
    set(o, "admin",
        json_pack("{s:s, s:o}", "address", s->admin_address, "token_file",
                  str_or_null(s->admin_token_file)));
    set(o, "client_header_timeout_ms", json_integer(s->client_header_timeout_ms));
    set(o, "client_idle_timeout_ms", json_integer(s->client_idle_timeout_ms));
    set(o, "max_header_bytes", json_integer(s->max_header_bytes));
    set(o, "max_target_bytes", json_integer(s->max_target_bytes));
    SET_ARRAY(o, "listeners", listener_json, s->listeners, s->n_listeners);
    SET_ARRAY(o, "routes", route_json, s->routes, s->n_routes);
    json_t *cl = json_array();
    for (uint32_t i = 0; i < s->n_clusters; i++)
        json_array_append_new(cl, cluster_json(s->clusters[i]));
    set(o, "clusters", cl);
    SET_ARRAY(o, "rollouts", rollout_json, s->rollouts, s->n_rollouts);
    SET_ARRAY(o, "discovery", discovery_json, s->discovery, s->n_discovery);
    /* Only when there are some: the rendering of a file-only config stays a valid config. */
    if (s->n_conflicts > 0) {
        json_t *conflicts = json_array();
        for (uint32_t i = 0; i < s->n_conflicts; i++)
            json_array_append_new(conflicts, json_string(s->conflicts[i]));
        set(o, "conflicts", conflicts);
    }
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (text == NULL)
        abort(); /* jansson fails only on OOM here */
    /* json_dumps() allocates with jansson's allocator, which is malloc() unless replaced. */
    return text;
}
