/* xds/xds_router.c -- virtual hosts and route selection (INTERFACES.md §2 "Route selection").
 *
 * At load, the routes are split into host groups: one per exact host, one per "*.suffix"
 * wildcard and one for the routes without a host. Each group's routes are sorted by match
 * precedence, so that matching a request is: pick the group (one hash lookup for the exact
 * host, then one per label for the wildcards, longest suffix first), then return the first
 * route of the group whose conditions hold. Matching allocates nothing (see match_data()).
 *
 * Precedence inside a group, from the contract, plus one decision of ours for routes without
 * a path condition (which the contract leaves open): they rank below path_regex routes, so a
 * catch-all route never hides a more specific regex route. In full:
 *   1. path_exact,
 *   2. path_prefix, longest prefix first,
 *   3. path_regex,
 *   4. no path condition;
 * at equal rank (same class, and same prefix length for prefixes) the route with more header
 * conditions first, then the earlier route in the config.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

/* ---- building ----------------------------------------------------------------------------- */

static int path_rank(const struct xds_route *r)
{
    switch (r->path_kind) {
    case XDS_PATH_EXACT:
        return 0;
    case XDS_PATH_PREFIX:
        return 1;
    case XDS_PATH_REGEX:
        return 2;
    default:
        return 3;
    }
}

static int cmp_precedence(const void *pa, const void *pb)
{
    const struct xds_route *a = *(const struct xds_route *const *)pa;
    const struct xds_route *b = *(const struct xds_route *const *)pb;
    int ra = path_rank(a), rb = path_rank(b);

    if (ra != rb)
        return ra - rb;
    if (a->path_kind == XDS_PATH_PREFIX && a->path_len != b->path_len)
        return a->path_len > b->path_len ? -1 : 1;
    if (a->n_hdrs != b->n_hdrs)
        return a->n_hdrs > b->n_hdrs ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static void group_add(struct xds_route_group *g, const struct xds_route *r)
{
    /* Groups are built once per load; growing by powers of two keeps it linear. */
    if ((g->n & (g->n - 1)) == 0)
        g->routes = wr_xrealloc(g->routes, (g->n ? g->n * 2 : 1) * sizeof(*g->routes));
    g->routes[g->n++] = r;
}

/* Returns the group of <key> in <ix>, creating it. */
static struct xds_route_group *group_of(struct xds_vhost_index *v, struct xds_name_index *ix,
                                        const char *key)
{
    uint32_t gi = v->n_groups;

    if (xds__index_add(ix, key, strlen(key), gi, &gi))
        v->n_groups++;
    return &v->groups[gi];
}

void xds__vhost_build(struct xds_snapshot *s)
{
    struct xds_vhost_index *v = wr_xcalloc(1, sizeof(*v));

    v->exact = xds__index_new(s->n_routes);
    v->wild = xds__index_new(s->n_routes);
    v->groups = wr_xcalloc(s->n_routes ? s->n_routes : 1, sizeof(*v->groups));
    for (uint32_t i = 0; i < s->n_routes; i++) {
        const struct xds_route *r = &s->routes[i];
        struct xds_route_group *g;

        if (r->host == NULL)
            g = &v->any;
        else if (r->host[0] == '*')
            g = group_of(v, v->wild, r->host + 1); /* "*.example.com" -> ".example.com" */
        else
            g = group_of(v, v->exact, r->host);
        group_add(g, r);
    }
    for (uint32_t i = 0; i < v->n_groups; i++)
        qsort(v->groups[i].routes, v->groups[i].n, sizeof(*v->groups[i].routes), cmp_precedence);
    if (v->any.n > 0)
        qsort(v->any.routes, v->any.n, sizeof(*v->any.routes), cmp_precedence);
    s->vhosts = v;
}

void xds__vhost_free(struct xds_vhost_index *v)
{
    if (v == NULL)
        return;
    for (uint32_t i = 0; i < v->n_groups; i++)
        free(v->groups[i].routes);
    free(v->groups);
    free(v->any.routes);
    xds__index_free(v->exact);
    xds__index_free(v->wild);
    free(v);
}

/* ---- matching ----------------------------------------------------------------------------- */

/* pcre2 match data is written by every match, so each thread has its own, created on its first
 * regex match and freed when the thread exits. One ovector pair is enough: we only ask
 * whether the whole subject matches (pcre2_match() returns 0, still a match, when a pattern
 * has more groups than that). */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static __thread pcre2_match_data *md_cache;

static void md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void md_key_init(void)
{
    pthread_key_create(&md_key, md_free);
}

static pcre2_match_data *match_data(void)
{
    if (wr_unlikely(md_cache == NULL)) {
        pthread_once(&md_once, md_key_init);
        md_cache = pcre2_match_data_create(1, NULL);
        if (md_cache == NULL)
            return NULL;
        pthread_setspecific(md_key, md_cache);
    }
    return md_cache;
}

/* The regexes are compiled anchored at both ends (PCRE2_ANCHORED | PCRE2_ENDANCHORED), so a
 * match is a full match. Out of memory counts as no match. */
static bool re_match(const void *re, const char *p, size_t len)
{
    pcre2_match_data *md = match_data();

    return md != NULL && pcre2_match(re, (PCRE2_SPTR)(p ? p : ""), len, 0, 0, md, NULL) >= 0;
}

static bool contains(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    return nlen == 0 || (hlen >= nlen && memmem(hay, hlen, needle, nlen) != NULL);
}

/* Evaluates one header condition. A missing header fails every condition but "present", before
 * "invert" applies (so an inverted condition holds on a missing header, as in Envoy). */
static bool header_holds(const struct xds_header_match *h, xds_header_get_cb get, void *arg)
{
    struct wr_str v = {NULL, 0};
    bool have = get != NULL && get(arg, h->name, h->name_len, &v);
    bool ok = have;

    if (have && v.p == NULL)
        v = (struct wr_str){"", 0};
    if (have) {
        switch (h->kind) {
        case XDS_HDR_EXACT:
            ok = wr_str_eq(v, h->value, h->value_len);
            break;
        case XDS_HDR_PREFIX:
            ok = v.len >= h->value_len && memcmp(v.p, h->value, h->value_len) == 0;
            break;
        case XDS_HDR_SUFFIX:
            ok = v.len >= h->value_len &&
                 memcmp(v.p + v.len - h->value_len, h->value, h->value_len) == 0;
            break;
        case XDS_HDR_CONTAINS:
            ok = contains(v.p, v.len, h->value, h->value_len);
            break;
        case XDS_HDR_REGEX:
            ok = re_match(h->re, v.p, v.len);
            break;
        default: /* XDS_HDR_PRESENT */
            break;
        }
    }
    return ok != h->invert;
}

static bool path_holds(const struct xds_route *r, struct wr_str path)
{
    if (path.p == NULL)
        path = (struct wr_str){"", 0};
    switch (r->path_kind) {
    case XDS_PATH_EXACT:
        return wr_str_eq(path, r->path, r->path_len);
    case XDS_PATH_PREFIX:
        return path.len >= r->path_len && memcmp(path.p, r->path, r->path_len) == 0;
    case XDS_PATH_REGEX:
        return re_match(r->re, path.p, path.len);
    default:
        return true;
    }
}

static bool route_holds(const struct xds_route *r, struct wr_str path, xds_header_get_cb get,
                        void *arg)
{
    if (!path_holds(r, path))
        return false;
    for (uint32_t i = 0; i < r->n_hdrs; i++)
        if (!header_holds(&r->hdrs[i], get, arg))
            return false;
    return true;
}

/* Reduces a Host value to the name to look up: drops ":port" (after "]" for "[v6]:port") and
 * one trailing dot. Case is left alone: the lookups fold it. */
static struct wr_str host_name(struct wr_str h)
{
    const char *end;

    if (h.len == 0)
        return h;
    if (h.p[0] == '[') {
        end = memchr(h.p, ']', h.len);
        h.len = end != NULL ? (size_t)(end - h.p) + 1 : h.len;
    } else if ((end = memchr(h.p, ':', h.len)) != NULL) {
        h.len = (size_t)(end - h.p);
    }
    if (h.len > 0 && h.p[h.len - 1] == '.')
        h.len--;
    return h;
}

static const struct xds_route_group *pick_group(const struct xds_vhost_index *v, struct wr_str h)
{
    uint32_t gi;

    if (h.len == 0)
        return &v->any;
    if (xds__index_get_ci(v->exact, h.p, h.len, &gi))
        return &v->groups[gi];
    /* The leftmost dot gives the longest suffix; a wildcard needs a non-empty first label. */
    if (v->wild->n > 0)
        for (size_t i = 1; i < h.len; i++)
            if (h.p[i] == '.' && xds__index_get_ci(v->wild, h.p + i, h.len - i, &gi))
                return &v->groups[gi];
    return &v->any;
}

const struct xds_route *xds_route_match(const struct xds_snapshot *s, struct wr_str host,
                                        struct wr_str path, xds_header_get_cb get, void *arg)
{
    const struct xds_route_group *g = pick_group(s->vhosts, host_name(host));

    for (uint32_t i = 0; i < g->n; i++)
        if (route_holds(g->routes[i], path, get, arg))
            return g->routes[i];
    return NULL;
}
