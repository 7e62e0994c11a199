/* xds/xds_snapshot.c -- snapshot lifetime, name lookups and the small name tables.
 *
 * A snapshot owns every string and array hanging off it, its compiled regexes and one
 * reference on each stats entry it links. The last xds_snapshot_unref() (from any thread)
 * frees all of that; the stats entries themselves live on in the registry until swept.
 */
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

const double xds_hist_bounds[XDS_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

const char *xds_source_name(enum xds_source s)
{
    static const char *const names[] = {"static", "file", "dns_srv", "consul", "kubernetes"};

    return (unsigned)s < WR_ARRAY_LEN(names) ? names[s] : "unknown";
}

const char *xds_lb_policy_name(enum xds_lb_policy p)
{
    static const char *const names[] = {"round_robin", "least_request", "ring_hash", "random"};

    return (unsigned)p < WR_ARRAY_LEN(names) ? names[p] : "unknown";
}

/* ---- name index --------------------------------------------------------------------------- */

/* FNV-1a over ASCII-lower-cased bytes: keys are short names and the table is read-only once
 * built, so a peer cannot grow a chain by sending hosts. */
uint64_t xds__hash_ci(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)wr_lower(p[i]);
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

struct xds_name_index *xds__index_new(size_t expected)
{
    struct xds_name_index *ix = wr_xcalloc(1, sizeof(*ix));
    size_t cap = 8;

    while (cap < expected * 2)
        cap *= 2;
    ix->slots = wr_xcalloc(cap, sizeof(*ix->slots));
    ix->mask = (uint32_t)(cap - 1);
    return ix;
}

void xds__index_free(struct xds_name_index *ix)
{
    if (ix == NULL)
        return;
    free(ix->slots);
    free(ix);
}

bool xds__index_add(struct xds_name_index *ix, const char *key, size_t len, uint32_t val,
                    uint32_t *old)
{
    uint64_t h = xds__hash_ci(key, len);
    uint32_t i = (uint32_t)h & ix->mask;

    if ((ix->n + 1) * 2 > ix->mask + 1)
        abort(); /* sized by the caller: a bug, not an input error */
    for (; ix->slots[i].key != NULL; i = (i + 1) & ix->mask) {
        struct xds_name_slot *sl = &ix->slots[i];
        if (sl->hash == h && sl->len == len && memcmp(sl->key, key, len) == 0) {
            *old = sl->val;
            return false;
        }
    }
    ix->slots[i] = (struct xds_name_slot){key, (uint32_t)len, val, h};
    ix->n++;
    return true;
}

static bool eq_ci(const char *a, const char *lower, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (wr_lower(a[i]) != lower[i])
            return false;
    return true;
}

static bool index_get(const struct xds_name_index *ix, const char *key, size_t len, bool ci,
                      uint32_t *val)
{
    uint64_t h = xds__hash_ci(key, len);

    if (ix == NULL)
        return false;
    for (uint32_t i = (uint32_t)h & ix->mask; ix->slots[i].key != NULL; i = (i + 1) & ix->mask) {
        const struct xds_name_slot *sl = &ix->slots[i];
        if (sl->hash != h || sl->len != len)
            continue;
        if (ci ? eq_ci(key, sl->key, len) : memcmp(sl->key, key, len) == 0) {
            *val = sl->val;
            return true;
        }
    }
    return false;
}

bool xds__index_get(const struct xds_name_index *ix, const char *key, size_t len, uint32_t *val)
{
    return index_get(ix, key, len, false, val);
}

bool xds__index_get_ci(const struct xds_name_index *ix, const char *key, size_t len, uint32_t *val)
{
    return index_get(ix, key, len, true, val);
}

const struct xds_cluster *xds_cluster_find(const struct xds_snapshot *s, const char *name)
{
    uint32_t i;

    return xds__index_get(s->cluster_index, name, strlen(name), &i) ? s->clusters[i] : NULL;
}

const struct xds_rollout *xds_rollout_find(const struct xds_snapshot *s, const char *name)
{
    uint32_t i;

    return xds__index_get(s->rollout_index, name, strlen(name), &i) ? &s->rollouts[i] : NULL;
}

/* ---- freeing ------------------------------------------------------------------------------ */

static void free_strv(char **v, uint32_t n)
{
    for (uint32_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

void xds__listener_tls_unref(struct xds_listener_tls *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    xds__tls_listener_free(t);
    for (uint32_t i = 0; t->certs != NULL && i < t->n_certs; i++) {
        free(t->certs[i].cert_file);
        free(t->certs[i].key_file);
    }
    free(t->certs);
    free_strv(t->alpn, t->n_alpn);
    free(t);
}

void xds_listener_tls_unref(struct xds_listener_tls *t)
{
    xds__listener_tls_unref(t);
}

static void free_listener(struct xds_listener *l)
{
    free(l->name);
    free(l->address);
    xds__listener_tls_unref(l->tls);
    xds_counters_unref(l->stats);
}

static void free_route(struct xds_route *r)
{
    free(r->name);
    free(r->host);
    free(r->path);
    pcre2_code_free(r->re);
    for (uint32_t i = 0; r->hdrs != NULL && i < r->n_hdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
        pcre2_code_free(r->hdrs[i].re);
    }
    free(r->hdrs);
    for (uint32_t i = 0; r->wc != NULL && i < r->n_wc; i++)
        xds_counters_unref(r->wc[i].stats);
    free(r->wc);
    free(r->hsts.header_value);
    xds_counters_unref(r->hist);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? wr_xstrdup(s) : NULL;
}

static char **dup_strv(char *const *v, uint32_t n)
{
    char **out = wr_xcalloc(n + 1, sizeof(*out));
    for (uint32_t i = 0; i < n; i++)
        out[i] = wr_xstrdup(v[i]);
    return out;
}

void xds_discovery_copy(struct xds_discovery *d, const struct xds_discovery *s)
{
    *d = *s;
    d->path = dup_or_null(s->path);
    d->name = dup_or_null(s->name);
    d->cluster = dup_or_null(s->cluster);
    d->resolvers = dup_strv(s->resolvers, s->n_resolvers);
    d->address = dup_or_null(s->address);
    d->token_file = dup_or_null(s->token_file);
    d->ca_file = dup_or_null(s->ca_file);
    d->datacenter = dup_or_null(s->datacenter);
    d->kubeconfig = dup_or_null(s->kubeconfig);
    d->ingress_class = dup_or_null(s->ingress_class);
    d->namespaces = dup_strv(s->namespaces, s->n_namespaces);
    d->publish_address = dup_or_null(s->publish_address);
    d->publish_service = dup_or_null(s->publish_service);
}

void xds_discovery_dispose(struct xds_discovery *d)
{
    free(d->path);
    free(d->name);
    free(d->cluster);
    free_strv(d->resolvers, d->n_resolvers);
    free(d->address);
    free(d->token_file);
    free(d->ca_file);
    free(d->datacenter);
    free(d->kubeconfig);
    free(d->ingress_class);
    free_strv(d->namespaces, d->n_namespaces);
    free(d->publish_address);
    free(d->publish_service);
}

void xds__snapshot_free(struct xds_snapshot *s)
{
    for (uint32_t i = 0; s->listeners != NULL && i < s->n_listeners; i++)
        free_listener(&s->listeners[i]);
    for (uint32_t i = 0; s->routes != NULL && i < s->n_routes; i++)
        free_route(&s->routes[i]);
    for (uint32_t i = 0; s->clusters != NULL && i < s->n_clusters; i++)
        xds__cluster_unref(s->clusters[i]);
    for (uint32_t i = 0; i < s->n_conflicts; i++)
        free(s->conflicts[i]);
    free(s->conflicts);
    for (uint32_t i = 0; s->rollouts != NULL && i < s->n_rollouts; i++) {
        free(s->rollouts[i].name);
        xds_counters_unref(s->rollouts[i].stats);
    }
    for (uint32_t i = 0; s->discovery != NULL && i < s->n_discovery; i++)
        xds_discovery_dispose(&s->discovery[i]);
    free(s->listeners);
    free(s->routes);
    free(s->clusters);
    free(s->rollouts);
    free(s->discovery);
    xds__vhost_free(s->vhosts);
    xds__index_free(s->cluster_index);
    xds__index_free(s->rollout_index);
    free(s->access_log);
    free(s->admin_address);
    free(s->admin_token_file);
    if (s->admin_token != NULL) {
        explicit_bzero(s->admin_token, strlen(s->admin_token));
        free(s->admin_token);
    }
    free(s->config_json_);
    free(s);
}

void xds_snapshot_unref(struct xds_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    xds__snapshot_free(s);
}

const char *xds_snapshot_config_json(struct xds_snapshot *s)
{
    if (s->config_json_ == NULL)
        s->config_json_ = xds__config_json(s);
    return s->config_json_;
}
