/* xds/xds_merge.c -- the file and the discovery views merged into one list of clusters,
 * rollouts and routes (INTERFACES.md §2), before validation.
 *
 * Precedence is the order of the sources: the file first, then the views in the order of the
 * "discovery" array. The rules:
 * - clusters: a view cluster named like a static template (a static cluster without an
 *   "endpoints" key) fills it: the template's settings win, the view brings the endpoints (and
 *   settings the template leaves out). A static cluster WITH endpoints wins over a discovered
 *   one of the same name. Between views the first one wins.
 * - rollouts and routes: a name already taken by an earlier source is a conflict.
 * - routes of different sources that would serve the same requests (same host, same path
 *   condition, same header conditions) are a conflict: the earlier source keeps them. Routes
 *   of one source are never in conflict with each other (the file may legitimately list
 *   overlapping routes; precedence settles them).
 * Every conflict drops the later object and is reported once per build in s->conflicts (which
 * GET /config shows and the server logs when the list changes).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "xds_priv.h"

struct merge {
    struct xds__cfg *c;
    struct xds__merged *m;
    json_t *cluster_names; /* name -> item index (json integer) */
    json_t *rollout_names; /* name -> source label */
    json_t *route_names;   /* name -> source label */
    json_t *route_keys;    /* host+path+headers -> "label\x01route name" */
    uint32_t cap_clusters, cap_routes, cap_rollouts;
};

static void add_line(struct xds__merged *m, bool once, const char *fmt, va_list ap)
{
    char *line = NULL;

    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    /* Notes come once per TLS listener for the same view certificate: keep one. */
    for (uint32_t i = 0; once && i < m->n_conflicts; i++) {
        if (strcmp(m->conflicts[i], line) == 0) {
            free(line);
            return;
        }
    }
    m->conflicts = realloc(m->conflicts, (m->n_conflicts + 1) * sizeof(char *));
    if (m->conflicts == NULL)
        abort();
    m->conflicts[m->n_conflicts++] = line;
}

void xds__merge_note(struct xds__merged *m, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    add_line(m, true, fmt, ap);
    va_end(ap);
}

static void conflict(struct merge *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conflict(struct merge *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    add_line(g->m, false, fmt, ap);
    va_end(ap);
}

/* View certificates: {"hosts": [names], "cert_pem": PEM, "key_pem": PEM}. A malformed entry
 * is an error of the view (it does not build); one whose PEM does not load is dropped later
 * with a note (xds_tls.c). */
static void view_certs(struct merge *g, const struct xds_view *v, json_t *a)
{
    struct xds__merged *m = g->m;

    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        json_t *hosts = json_object_get(o, "hosts");
        const char *cert = json_string_value(json_object_get(o, "cert_pem"));
        const char *key = json_string_value(json_object_get(o, "key_pem"));
        bool ok = json_is_array(hosts) && json_array_size(hosts) > 0 && cert && key;
        for (size_t k = 0; ok && k < json_array_size(hosts); k++) {
            const char *h = json_string_value(json_array_get(hosts, k));
            ok = h != NULL &&
                 (xds__cfg_host_name(h, strlen(h)) ||
                  (h[0] == '*' && h[1] == '.' && xds__cfg_host_name(h + 2, strlen(h + 2))));
        }
        if (!ok) {
            wr_sbuf_printf(g->c->errors,
                           "%s: certificates[%zu]: must be {\"hosts\": [host names], \"cert_pem\": "
                           "PEM, \"key_pem\": PEM}\n",
                           v->label, i);
            g->c->n_errors++;
            continue;
        }
        m->certs = realloc(m->certs, (m->n_certs + 1) * sizeof(*m->certs));
        if (m->certs == NULL)
            abort();
        m->certs[m->n_certs++] = (struct xds__vcert){
            .label = v->label, .hosts = hosts, .cert_pem = cert, .key_pem = key};
    }
}

static struct xds__item *push(struct xds__item **v, uint32_t *n, uint32_t *cap)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = realloc(*v, *cap * sizeof(**v));
        if (*v == NULL)
            abort();
    }
    struct xds__item *it = &(*v)[(*n)++];
    memset(it, 0, sizeof(*it));
    return it;
}

static const char *obj_name(json_t *o)
{
    return json_is_object(o) ? json_string_value(json_object_get(o, "name")) : NULL;
}

/* One header condition as a string that is equal for conditions that match the same requests:
 * the name without case, the kind and value as xds_config.c reads them (the first kind key
 * present; none means "present"), and whether it is inverted ("present": false inverts). */
static char *header_key(json_t *h)
{
    static const char *const kinds[] = {"exact", "prefix",  "suffix", "contains",
                                        "regex", "present", NULL};
    const char *name = json_string_value(json_object_get(h, "name"));
    const char *kind = "present", *value = "";
    bool invert = json_is_true(json_object_get(h, "invert"));
    char *key = NULL;

    if (name == NULL) /* not valid: the build reports it; any stable text will do */
        return json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    for (unsigned k = 0; kinds[k] != NULL; k++) {
        json_t *v = json_object_get(h, kinds[k]);
        if (v == NULL)
            continue;
        kind = kinds[k];
        if (k == 5)
            invert = invert != json_is_false(v);
        else
            value = json_is_string(v) ? json_string_value(v) : "\x02";
        break;
    }
    if (asprintf(&key, "%s\x02%s\x02%s\x02%d", name, kind, value, invert) < 0)
        abort();
    for (char *p = key; *p != '\x02'; p++) /* header names compare without case */
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return key;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The header conditions of a route, in an order of their own (all must hold, so the order in
 * the file does not matter). */
static void headers_key(struct wr_sbuf *b, json_t *hdrs)
{
    size_t n = json_array_size(hdrs);
    char **keys = wr_xcalloc(n + 1, sizeof(*keys));

    if (hdrs != NULL && !json_is_array(hdrs)) { /* invalid: reported by the build */
        char *raw = json_dumps(hdrs, JSON_COMPACT | JSON_ENCODE_ANY);
        wr_sbuf_printf(b, "%s", raw ? raw : "");
        free(raw);
    }
    for (size_t i = 0; i < n; i++)
        keys[i] = header_key(json_array_get(hdrs, i));
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (size_t i = 0; i < n; i++) {
        wr_sbuf_printf(b, "%s\x03", keys[i] ? keys[i] : "");
        free(keys[i]);
    }
    free(keys);
}

/* The requests a route serves, as a string: equal keys serve the same requests. Normalized as
 * the route is when built (xds_config.c, xds_router.c): the host without case and without one
 * trailing dot; no path condition is path_prefix "/" (every path starts with "/"; without this
 * a view's prefix "/" would outrank the file's route with no path and take its requests). */
static char *route_key(json_t *route)
{
    json_t *m = json_object_get(route, "match");
    const char *host = json_string_value(json_object_get(m, "host"));
    static const char *const kinds[] = {"path_exact", "path_prefix", "path_regex"};
    const char *kind = "path_prefix", *path = "/";
    struct wr_sbuf b = {0};

    for (unsigned i = 0; i < 3; i++) {
        json_t *p = json_object_get(m, kinds[i]);
        if (p != NULL) {
            kind = kinds[i];
            path = json_is_string(p) ? json_string_value(p) : "\x02";
            break;
        }
    }
    size_t hlen = host != NULL ? strlen(host) : 0;
    if (hlen > 1 && host[hlen - 1] == '.')
        hlen--;
    for (size_t i = 0; i < hlen; i++) {
        char c = wr_lower(host[i]);
        wr_sbuf_add(&b, &c, 1);
    }
    wr_sbuf_printf(&b, "\x01%s\x01%s\x01", kind, path);
    headers_key(&b, json_object_get(m, "headers"));
    return b.p != NULL ? b.p : wr_xstrdup("");
}

static void add_static(struct merge *g, json_t *root, const char *section, struct xds__item **v,
                       uint32_t *n, uint32_t *cap)
{
    json_t *a = json_object_get(root, section);

    for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        struct xds__item *it = push(v, n, cap);
        it->obj = json_incref(o);
        it->name = g->c->name;
        it->section = section;
        it->idx = (uint32_t)i;
        it->source = XDS_SRC_STATIC;
        it->label = "the file";
        const char *name = obj_name(o);
        if (name == NULL)
            continue;
        if (v == &g->m->clusters)
            json_object_set_new(g->cluster_names, name, json_integer(*n - 1));
        else if (v == &g->m->rollouts)
            json_object_set_new(g->rollout_names, name, json_string("the file"));
        else {
            json_object_set_new(g->route_names, name, json_string("the file"));
            char *key = route_key(o);
            if (json_object_get(g->route_keys, key) == NULL)
                json_object_set_new(g->route_keys, key, json_sprintf("the file\x01%s", name));
            free(key);
        }
    }
}

/* A view cluster that fills the static template <t>: the template's keys win. */
static json_t *fill_template(json_t *t, json_t *vc)
{
    json_t *o = json_copy(vc);
    const char *k;
    json_t *val;

    json_object_foreach(t, k, val)
    {
        json_object_set(o, k, val);
    }
    return o;
}

static void view_clusters(struct merge *g, const struct xds_view *v, json_t *a)
{
    struct xds__merged *m = g->m;

    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        const char *name = obj_name(o);
        json_t *at = name ? json_object_get(g->cluster_names, name) : NULL;

        if (at == NULL) {
            struct xds__item *it = push(&m->clusters, &m->n_clusters, &g->cap_clusters);
            it->obj = json_incref(o);
            it->name = v->label;
            it->section = "clusters";
            it->idx = (uint32_t)i;
            it->source = v->source;
            it->label = v->label;
            if (name != NULL)
                json_object_set_new(g->cluster_names, name, json_integer(m->n_clusters - 1));
            continue;
        }
        struct xds__item *prev = &m->clusters[json_integer_value(at)];
        if (prev->source != XDS_SRC_STATIC || prev->filled) {
            conflict(g, "cluster %s of %s: already defined by %s", name, v->label, prev->label);
        } else if (json_object_get(prev->obj, "endpoints") != NULL) {
            conflict(g, "cluster %s of %s: the file's cluster with endpoints wins", name, v->label);
        } else {
            json_t *filled = fill_template(prev->obj, o);
            json_decref(prev->obj);
            prev->obj = filled;
            prev->source = v->source;
            prev->label = v->label;
            prev->filled = true;
            /* errors in the result are still reported at the file's template */
        }
    }
}

static void view_named(struct merge *g, const struct xds_view *v, json_t *a, const char *section,
                       json_t *names, struct xds__item **items, uint32_t *n, uint32_t *cap)
{
    bool routes = items == &g->m->routes;

    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        const char *name = obj_name(o);
        json_t *owner = name ? json_object_get(names, name) : NULL;
        char *key = NULL;

        if (owner != NULL) {
            conflict(g, "%s %s of %s: the name is taken by %s", routes ? "route" : "rollout", name,
                     v->label, json_string_value(owner));
            continue;
        }
        if (routes && name != NULL) {
            key = route_key(o);
            json_t *k = json_object_get(g->route_keys, key);
            if (k != NULL) {
                const char *who = json_string_value(k);
                const char *sep = strchr(who, '\x01');
                if (strncmp(who, v->label, (size_t)(sep - who)) != 0 ||
                    strlen(v->label) != (size_t)(sep - who)) {
                    conflict(g,
                             "route %s of %s: serves the same host, path and headers as route "
                             "%s of %.*s, which wins",
                             name, v->label, sep + 1, (int)(sep - who), who);
                    free(key);
                    continue;
                }
            } else {
                json_object_set_new(g->route_keys, key, json_sprintf("%s\x01%s", v->label, name));
            }
        }
        free(key);
        struct xds__item *it = push(items, n, cap);
        it->obj = json_incref(o);
        it->name = v->label;
        it->section = section;
        it->idx = (uint32_t)i;
        it->source = v->source;
        it->label = v->label;
        if (name != NULL)
            json_object_set_new(names, name, json_string(v->label));
    }
}

static json_t *view_array(struct xds__cfg *c, const struct xds_view *v, const char *key)
{
    json_t *a = json_object_get(v->view, key);

    if (a == NULL || json_is_array(a))
        return a;
    wr_sbuf_printf(c->errors, "%s: %s: must be an array\n", v->label, key);
    c->n_errors++;
    return NULL;
}

void xds__merge(struct xds__cfg *c, json_t *root, const struct xds_view *views, unsigned n_views,
                struct xds__merged *m)
{
    struct merge g = {
        .c = c,
        .m = m,
        .cluster_names = json_object(),
        .rollout_names = json_object(),
        .route_names = json_object(),
        .route_keys = json_object(),
    };

    memset(m, 0, sizeof(*m));
    add_static(&g, root, "clusters", &m->clusters, &m->n_clusters, &g.cap_clusters);
    add_static(&g, root, "rollouts", &m->rollouts, &m->n_rollouts, &g.cap_rollouts);
    add_static(&g, root, "routes", &m->routes, &m->n_routes, &g.cap_routes);
    for (unsigned i = 0; i < n_views; i++) {
        const struct xds_view *v = &views[i];
        if (!json_is_object(v->view)) {
            wr_sbuf_printf(c->errors, "%s: the view must be a JSON object\n", v->label);
            c->n_errors++;
            continue;
        }
        view_clusters(&g, v, view_array(c, v, "clusters"));
        view_named(&g, v, view_array(c, v, "rollouts"), "rollouts", g.rollout_names, &m->rollouts,
                   &m->n_rollouts, &g.cap_rollouts);
        view_named(&g, v, view_array(c, v, "routes"), "routes", g.route_names, &m->routes,
                   &m->n_routes, &g.cap_routes);
        view_certs(&g, v, view_array(c, v, "certificates"));
    }
    json_decref(g.cluster_names);
    json_decref(g.rollout_names);
    json_decref(g.route_names);
    json_decref(g.route_keys);
}

void xds__merged_free(struct xds__merged *m)
{
    for (uint32_t i = 0; i < m->n_clusters; i++)
        json_decref(m->clusters[i].obj);
    for (uint32_t i = 0; i < m->n_rollouts; i++)
        json_decref(m->rollouts[i].obj);
    for (uint32_t i = 0; i < m->n_routes; i++)
        json_decref(m->routes[i].obj);
    free(m->clusters);
    free(m->rollouts);
    free(m->routes);
    free(m->certs);
    for (uint32_t i = 0; i < m->n_conflicts; i++)
        free(m->conflicts[i]);
    free(m->conflicts);
    memset(m, 0, sizeof(*m));
}
