/* xds/xds_config.c -- the JSON config file (INTERFACES.md §2) to a validated snapshot.
 *
 * Validation never stops at the first error: every check reports one line
 * "NAME: json.path: message" and goes on with a default, so that `weir --check` lists every
 * mistake of the file at once. The snapshot is only finished (stats linked, virtual hosts
 * indexed, GET /config rendered) when no check failed; otherwise it is freed and NULL
 * returned.
 *
 * The order of the passes follows the references: clusters, then rollouts (which name
 * clusters), then routes (which name both).
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

#define MAX_WORKERS      1024
#define MAX_CONFIG_BYTES (64u << 20)
#define MAX_TOKEN_BYTES  4096

static void lower(char *s)
{
    for (; s != NULL && *s != '\0'; s++)
        *s = wr_lower(*s);
}

/* Checks that <key> of <obj> holds a unique name: adds it to <ix> with <idx>. */
static bool unique_name(struct xds__cfg *c, json_t *obj, struct xds_name_index *ix, uint32_t idx,
                        char **out)
{
    uint32_t old;

    if (!xds__cfg_str(c, obj, "name", XDS__REQUIRED | XDS__NONEMPTY, NULL, out) || *out == NULL)
        return false;
    if (!xds__index_add(ix, *out, strlen(*out), idx, &old)) {
        xds__cfg_err(c, "name", "duplicate name \"%s\"", *out);
        return false;
    }
    return true;
}

/* Iterates the objects of array <arr>, entering each element's path around <body>. */
#define FOR_EACH_OBJECT(c, arr, i, o, ...)                                                         \
    for (size_t i = 0; i < json_array_size(arr); i++) {                                            \
        json_t *o = json_array_get(arr, i);                                                        \
        size_t mark_ = xds__cfg_enter_idx(c, i);                                                   \
        if (!json_is_object(o)) {                                                                  \
            xds__cfg_err(c, NULL, "must be an object");                                            \
        } else {                                                                                   \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        xds__cfg_leave(c, mark_);                                                                  \
    }

/* ---- process settings --------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
        return true;
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
}

/* Reads the admin token: the whole file less trailing white space. */
static char *read_token(struct xds__cfg *c, const char *path)
{
    char buf[MAX_TOKEN_BYTES + 1];
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        xds__cfg_err(c, "token_file", "cannot read \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf), f);
    bool failed = ferror(f);
    fclose(f);
    if (failed || n > MAX_TOKEN_BYTES) {
        xds__cfg_err(c, "token_file", failed ? "cannot read \"%s\"" : "\"%s\" is too large", path);
        return NULL;
    }
    while (n > 0 && strchr(" \t\r\n", buf[n - 1]) != NULL)
        n--;
    if (n == 0 || memchr(buf, '\0', n) != NULL) {
        xds__cfg_err(c, "token_file", n == 0 ? "\"%s\" is empty" : "\"%s\" is not a text file",
                     path);
        return NULL;
    }
    char *tok = wr_xstrndup(buf, n);
    explicit_bzero(buf, sizeof(buf));
    return tok;
}

static void parse_admin(struct xds__cfg *c, json_t *root)
{
    struct xds_snapshot *s = c->s;
    const char *const keys[] = {"address", "token_file", NULL};
    bool ok;
    json_t *o = xds__cfg_obj(c, root, "admin", 0, &ok);
    const char *why;

    s->admin_address = wr_xstrdup("127.0.0.1:9901");
    if (o == NULL) {
        wr_parse_address(s->admin_address, &s->admin_ss, &s->admin_sslen, &why);
        return;
    }
    size_t mark = xds__cfg_enter(c, "admin");
    xds__cfg_keys(c, o, keys);
    free(s->admin_address);
    bool addr_ok =
        xds__cfg_str(c, o, "address", XDS__NONEMPTY, "127.0.0.1:9901", &s->admin_address);
    if (addr_ok && wr_parse_address(s->admin_address, &s->admin_ss, &s->admin_sslen, &why) != 0) {
        xds__cfg_err(c, "address", "%s", why);
        addr_ok = false;
    }
    if (xds__cfg_file(c, o, "token_file", XDS__NULLABLE, true, &s->admin_token_file) &&
        s->admin_token_file != NULL)
        s->admin_token = read_token(c, s->admin_token_file);
    else if (s->admin_token_file == NULL && addr_ok && !is_loopback(&s->admin_ss))
        xds__cfg_err(c, "address", "must be a loopback address unless admin.token_file is set");
    xds__cfg_leave(c, mark);
}

static void parse_process(struct xds__cfg *c, json_t *root)
{
    struct xds_snapshot *s = c->s;
    uint32_t workers = 0;

    if (xds__cfg_u32(c, root, "workers", 0, 0, XDS__NOLIMIT, &workers) && workers > MAX_WORKERS)
        xds__cfg_err(c, "workers", "must be at most %d", MAX_WORKERS);
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (uint32_t)WR_MIN(n, MAX_WORKERS) : 1;
    }
    s->workers = workers;
    xds__cfg_u32(c, root, "drain_timeout_ms", 15000, 0, XDS__NOLIMIT, &s->drain_timeout_ms);
    xds__cfg_u32(c, root, "drain_delay_ms", 0, 0, XDS__NOLIMIT, &s->drain_delay_ms);
    if (xds__cfg_str(c, root, "access_log", XDS__NULLABLE | XDS__NONEMPTY, NULL, &s->access_log) &&
        s->access_log != NULL && strcmp(s->access_log, "-") != 0)
        s->access_log = xds__cfg_resolve(c, s->access_log);
    xds__cfg_u32(c, root, "client_header_timeout_ms", 10000, 1, XDS__NOLIMIT,
                 &s->client_header_timeout_ms);
    xds__cfg_u32(c, root, "client_idle_timeout_ms", 60000, 1, XDS__NOLIMIT,
                 &s->client_idle_timeout_ms);
    xds__cfg_u32(c, root, "max_header_bytes", 65536, 1024, 1048576, &s->max_header_bytes);
    xds__cfg_u32(c, root, "max_target_bytes", 8192, 256, 1048576, &s->max_target_bytes);
    parse_admin(c, root);
}

/* ---- listeners ---------------------------------------------------------------------------- */

static bool strv_has(char **v, uint32_t n, const char *s)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static void parse_alpn(struct xds__cfg *c, json_t *o, struct xds_listener_tls *t)
{
    bool ok;
    json_t *a = xds__cfg_arr(c, o, "alpn", 0, &ok);
    size_t n = a != NULL ? json_array_size(a) : 2;

    t->alpn = wr_xcalloc(n + 1, sizeof(*t->alpn));
    if (a == NULL) {
        t->alpn[t->n_alpn++] = wr_xstrdup("h2");
        t->alpn[t->n_alpn++] = wr_xstrdup("http/1.1");
        return;
    }
    size_t mark = xds__cfg_enter(c, "alpn");
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_array_get(a, i));
        size_t m = xds__cfg_enter_idx(c, i);
        if (v == NULL || (strcmp(v, "h2") != 0 && strcmp(v, "http/1.1") != 0))
            xds__cfg_err(c, NULL, "must be \"h2\" or \"http/1.1\"");
        else if (strv_has(t->alpn, t->n_alpn, v))
            xds__cfg_err(c, NULL, "\"%s\" is listed twice", v);
        else
            t->alpn[t->n_alpn++] = wr_xstrdup(v);
        xds__cfg_leave(c, m);
    }
    xds__cfg_leave(c, mark);
}

/* The cache key of a listener's TLS: its settings and every view certificate. */
static char *tls_key(struct xds__cfg *c, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = 0x9e3779b97f4a7c15ull;

    for (uint32_t i = 0; c->merged != NULL && i < c->merged->n_certs; i++) {
        const struct xds__vcert *v = &c->merged->certs[i];
        char *hosts = json_dumps(v->hosts, JSON_COMPACT);
        h = wr_hash64(hosts, strlen(hosts), h);
        h = wr_hash64(v->cert_pem, strlen(v->cert_pem), h);
        h = wr_hash64(v->key_pem, strlen(v->key_pem), h);
        free(hosts);
    }
    char *key = wr_xasprintf("%s|%u|%016llx", text ? text : "", c->merged ? c->merged->n_certs : 0,
                             (unsigned long long)h);
    free(text);
    return key;
}

static void parse_listener_tls(struct xds__cfg *c, json_t *o, struct xds_listener *l)
{
    const char *const keys[] = {"certificates", "alpn", "min_version", NULL};
    const char *const cert_keys[] = {"cert_file", "key_file", NULL};
    struct xds_listener_tls *t;
    bool ok;
    char *minv = NULL;
    char *key = c->cache != NULL ? tls_key(c, o) : NULL;

    if (key != NULL && (l->tls = xds__cache_tls_get(c->cache, key)) != NULL) {
        xds__tls_listener_notes(c, l->tls);
        free(key);
        return;
    }
    t = wr_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    l->tls = t;
    unsigned errors_before = c->n_errors;
    xds__cfg_keys(c, o, keys);
    json_t *certs = xds__cfg_arr(c, o, "certificates", XDS__REQUIRED, &ok);
    if (certs != NULL && json_array_size(certs) == 0)
        xds__cfg_err(c, "certificates", "must have at least one certificate");
    t->certs = wr_xcalloc(json_array_size(certs) + 1, sizeof(*t->certs));
    size_t mark = xds__cfg_enter(c, "certificates");
    FOR_EACH_OBJECT(c, certs, i, co, {
        struct xds_tls_cert *tc = &t->certs[t->n_certs++];
        xds__cfg_keys(c, co, cert_keys);
        xds__cfg_file(c, co, "cert_file", XDS__REQUIRED, true, &tc->cert_file);
        xds__cfg_file(c, co, "key_file", XDS__REQUIRED, true, &tc->key_file);
    })
    xds__cfg_leave(c, mark);
    parse_alpn(c, o, t);
    t->min_version = 2;
    if (xds__cfg_str(c, o, "min_version", 0, "1.2", &minv)) {
        if (strcmp(minv, "1.3") == 0)
            t->min_version = 3;
        else if (strcmp(minv, "1.2") != 0)
            xds__cfg_err(c, "min_version", "must be \"1.2\" or \"1.3\"");
    }
    free(minv);
    /* Load the certificates only when their settings are valid: one error per mistake. */
    if (c->n_errors == errors_before)
        xds__tls_listener_build(c, t);
    if (key != NULL && c->n_errors == errors_before)
        xds__cache_tls_put(c->cache, key, t);
    free(key);
}

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void parse_listener(struct xds__cfg *c, json_t *o, struct xds_name_index *names)
{
    const char *const keys[] = {"name", "address", "tls", "h2c", "proxy_protocol", NULL};
    struct xds_snapshot *s = c->s;
    struct xds_listener *l = &s->listeners[s->n_listeners++];
    const char *why;
    bool ok;

    xds__cfg_keys(c, o, keys);
    unique_name(c, o, names, s->n_listeners - 1, &l->name);
    if (xds__cfg_str(c, o, "address", XDS__REQUIRED | XDS__NONEMPTY, NULL, &l->address) &&
        l->address != NULL) {
        if (wr_parse_address(l->address, &l->ss, &l->sslen, &why) != 0) {
            xds__cfg_err(c, "address", "%s", why);
        } else {
            for (uint32_t i = 0; i + 1 < s->n_listeners; i++)
                if (s->listeners[i].sslen != 0 && same_address(&s->listeners[i].ss, &l->ss))
                    xds__cfg_err(c, "address", "listeners[%u] has the same address", i);
        }
    }
    xds__cfg_bool(c, o, "h2c", false, &l->h2c);
    xds__cfg_bool(c, o, "proxy_protocol", false, &l->proxy_protocol);
    json_t *tls = xds__cfg_obj(c, o, "tls", XDS__NULLABLE, &ok);
    if (tls != NULL) {
        size_t mark = xds__cfg_enter(c, "tls");
        parse_listener_tls(c, tls, l);
        xds__cfg_leave(c, mark);
        if (l->h2c)
            xds__cfg_err(c, "h2c", "only applies to listeners without tls");
    }
}

static void parse_listeners(struct xds__cfg *c, json_t *root)
{
    struct xds_snapshot *s = c->s;
    bool ok;
    json_t *a = xds__cfg_arr(c, root, "listeners", XDS__REQUIRED, &ok);
    struct xds_name_index *names = xds__index_new(json_array_size(a));

    if (a != NULL && json_array_size(a) == 0)
        xds__cfg_err(c, "listeners", "must have at least one listener");
    s->listeners = wr_xcalloc(json_array_size(a) + 1, sizeof(*s->listeners));
    size_t mark = xds__cfg_enter(c, "listeners");
    FOR_EACH_OBJECT(c, a, i, o, parse_listener(c, o, names));
    xds__cfg_leave(c, mark);
    xds__index_free(names);
}

/* ---- rollouts ----------------------------------------------------------------------------- */

static struct xds_cluster *cluster_ref(struct xds__cfg *c, json_t *o, const char *key)
{
    char *name = NULL;
    struct xds_cluster *cl = NULL;

    if (xds__cfg_str(c, o, key, XDS__REQUIRED | XDS__NONEMPTY, NULL, &name) && name != NULL) {
        cl = (struct xds_cluster *)xds_cluster_find(c->s, name);
        if (cl == NULL)
            xds__cfg_err(c, key, "unknown cluster \"%s\"", name);
    }
    free(name);
    return cl;
}

static void parse_rollout(struct xds__cfg *c, json_t *o)
{
    const char *const keys[] = {"name", "blue", "green", "green_weight", "sticky", NULL};
    struct xds_snapshot *s = c->s;
    struct xds_rollout *ro = &s->rollouts[s->n_rollouts];

    ro->idx = s->n_rollouts++;
    xds__cfg_keys(c, o, keys);
    unique_name(c, o, s->rollout_index, ro->idx, &ro->name);
    ro->blue = cluster_ref(c, o, "blue");
    ro->green = cluster_ref(c, o, "green");
    if (ro->blue != NULL && ro->blue == ro->green)
        xds__cfg_err(c, "green", "must differ from \"blue\"");
    xds__cfg_u32(c, o, "green_weight", 0, 0, 100, &ro->green_weight);
    xds__cfg_bool(c, o, "sticky", false, &ro->sticky);
}

#define FOR_EACH_ITEM(c, items, n, o, ...)                                                         \
    for (uint32_t i_ = 0; i_ < (n); i_++) {                                                        \
        json_t *o = (items)[i_].obj;                                                               \
        struct xds__item_mark m_ = xds__cfg_item_enter(c, &(items)[i_]);                           \
        if (!json_is_object(o))                                                                    \
            xds__cfg_err(c, NULL, "must be an object");                                            \
        else {                                                                                     \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        xds__cfg_item_leave(c, m_);                                                                \
    }

static void parse_rollouts(struct xds__cfg *c, const struct xds__merged *m)
{
    struct xds_snapshot *s = c->s;

    s->rollout_index = xds__index_new(m->n_rollouts);
    s->rollouts = wr_xcalloc(m->n_rollouts + 1, sizeof(*s->rollouts));
    FOR_EACH_ITEM(c, m->rollouts, m->n_rollouts, o, parse_rollout(c, o));
}

/* ---- routes ------------------------------------------------------------------------------- */

/* Compiles <pattern> for a full match of the subject; reports a syntax error at <key>. */
static void *compile_re(struct xds__cfg *c, const char *key, const char *pattern)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_ANCHORED | PCRE2_ENDANCHORED, &code, &off, NULL);

    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        xds__cfg_err(c, key, "invalid regex at offset %zu: %s", (size_t)off, (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT, the interpreter is used */
    return re;
}

static const char *const hdr_kinds[] = {"exact", "prefix",  "suffix", "contains",
                                        "regex", "present", NULL};

static void parse_header_match(struct xds__cfg *c, json_t *o, struct xds_header_match *h)
{
    const char *const keys[] = {"name",  "exact",   "prefix", "suffix", "contains",
                                "regex", "present", "invert", NULL};
    unsigned n_kinds = 0;
    bool present = true;

    xds__cfg_keys(c, o, keys);
    if (xds__cfg_str(c, o, "name", XDS__REQUIRED, NULL, &h->name) && h->name != NULL &&
        !xds__cfg_token(h->name))
        xds__cfg_err(c, "name", "must be a header name");
    lower(h->name);
    h->name_len = h->name != NULL ? strlen(h->name) : 0;
    h->kind = XDS_HDR_PRESENT; /* no condition: the header must be present (as in Envoy) */
    for (unsigned k = 0; hdr_kinds[k] != NULL; k++)
        if (json_object_get(o, hdr_kinds[k]) != NULL && n_kinds++ == 0)
            h->kind = (uint8_t)k;
    if (n_kinds > 1)
        xds__cfg_err(c, NULL,
                     "must have only one of \"exact\", \"prefix\", \"suffix\", "
                     "\"contains\", \"regex\", \"present\"");
    xds__cfg_bool(c, o, "invert", false, &h->invert);
    if (h->kind == XDS_HDR_PRESENT) {
        xds__cfg_bool(c, o, "present", true, &present);
        h->invert = h->invert != !present; /* "present": false == the header is absent */
        return;
    }
    if (!xds__cfg_str(c, o, hdr_kinds[h->kind], 0, NULL, &h->value) || h->value == NULL)
        return;
    h->value_len = strlen(h->value);
    if (h->kind == XDS_HDR_REGEX)
        h->re = compile_re(c, "regex", h->value);
}

static void parse_headers(struct xds__cfg *c, json_t *m, struct xds_route *r)
{
    bool ok;
    json_t *a = xds__cfg_arr(c, m, "headers", 0, &ok);

    r->hdrs = wr_xcalloc(json_array_size(a) + 1, sizeof(*r->hdrs));
    size_t mark = xds__cfg_enter(c, "headers");
    FOR_EACH_OBJECT(c, a, i, o, parse_header_match(c, o, &r->hdrs[r->n_hdrs++]));
    xds__cfg_leave(c, mark);
}

/* "shop.example.com" or "*.example.com", lower-cased, one trailing dot dropped. */
static void parse_host(struct xds__cfg *c, json_t *m, struct xds_route *r)
{
    if (!xds__cfg_str(c, m, "host", 0, NULL, &r->host) || r->host == NULL)
        return;
    lower(r->host);
    size_t len = strlen(r->host);
    if (len > 1 && r->host[len - 1] == '.')
        r->host[--len] = '\0';
    const char *name = strncmp(r->host, "*.", 2) == 0 ? r->host + 2 : r->host;
    if (!xds__cfg_host_name(name, strlen(name)))
        xds__cfg_err(c, "host", "must be a host name or *.suffix");
}

static void parse_match(struct xds__cfg *c, json_t *m, struct xds_route *r)
{
    const char *const keys[] = {"host", "path_exact", "path_prefix", "path_regex", "headers", NULL};
    const char *const kinds[] = {NULL, "path_exact", "path_prefix", "path_regex"};
    unsigned n = 0;

    xds__cfg_keys(c, m, keys);
    parse_host(c, m, r);
    for (unsigned k = XDS_PATH_EXACT; k <= XDS_PATH_REGEX; k++)
        if (json_object_get(m, kinds[k]) != NULL && n++ == 0)
            r->path_kind = (uint8_t)k;
    if (n > 1)
        xds__cfg_err(c, NULL,
                     "must have at most one of \"path_exact\", \"path_prefix\", "
                     "\"path_regex\"");
    if (r->path_kind != XDS_PATH_ANY) {
        const char *key = kinds[r->path_kind];
        if (xds__cfg_str(c, m, key, XDS__NONEMPTY, NULL, &r->path) && r->path != NULL) {
            r->path_len = strlen(r->path);
            if (r->path_kind == XDS_PATH_REGEX)
                r->re = compile_re(c, key, r->path);
            else if (r->path[0] != '/')
                xds__cfg_err(c, key, "must start with \"/\"");
        }
    }
    parse_headers(c, m, r);
}

static void parse_weighted(struct xds__cfg *c, json_t *a, struct xds_route *r)
{
    const char *const keys[] = {"cluster", "weight", NULL};
    uint64_t total = 0;

    if (json_array_size(a) == 0)
        xds__cfg_err(c, NULL, "must not be empty");
    r->wc = wr_xcalloc(json_array_size(a) + 1, sizeof(*r->wc));
    FOR_EACH_OBJECT(c, a, i, o, {
        struct xds_weighted *w = &r->wc[r->n_wc];
        xds__cfg_keys(c, o, keys);
        w->cluster = cluster_ref(c, o, "cluster");
        for (uint32_t j = 0; w->cluster != NULL && j < r->n_wc; j++)
            if (r->wc[j].cluster == w->cluster)
                xds__cfg_err(c, "cluster", "cluster \"%s\" is listed twice", w->cluster->name);
        if (json_object_get(o, "weight") == NULL)
            xds__cfg_err(c, "weight", "is required");
        xds__cfg_u32(c, o, "weight", 1, 1, 1000000, &w->weight);
        total += w->weight;
        r->n_wc++;
    })
    r->wc_total = (uint32_t)total;
}

static void parse_action(struct xds__cfg *c, json_t *o, struct xds_route *r)
{
    const char *const actions[] = {NULL, "cluster", "weighted_clusters", "rollout"};
    unsigned n = 0;
    char *name = NULL;

    for (unsigned k = XDS_ACT_CLUSTER; k <= XDS_ACT_ROLLOUT; k++)
        if (json_object_get(o, actions[k]) != NULL && n++ == 0)
            r->action = (uint8_t)k;
    if (n != 1) {
        xds__cfg_err(c, NULL,
                     "must have exactly one of \"cluster\", \"weighted_clusters\", "
                     "\"rollout\"");
        r->action = XDS_ACT_NONE;
        return;
    }
    if (r->action == XDS_ACT_CLUSTER) {
        struct xds_cluster *cl = cluster_ref(c, o, "cluster");
        r->wc = wr_xcalloc(1, sizeof(*r->wc));
        r->wc[0] = (struct xds_weighted){cl, 1, NULL};
        r->n_wc = r->wc_total = 1;
    } else if (r->action == XDS_ACT_WEIGHTED) {
        bool ok;
        json_t *a = xds__cfg_arr(c, o, "weighted_clusters", 0, &ok);
        size_t mark = xds__cfg_enter(c, "weighted_clusters");
        parse_weighted(c, a, r);
        xds__cfg_leave(c, mark);
    } else if (xds__cfg_str(c, o, "rollout", XDS__NONEMPTY, NULL, &name) && name != NULL) {
        r->rollout = (struct xds_rollout *)xds_rollout_find(c->s, name);
        if (r->rollout == NULL) {
            xds__cfg_err(c, "rollout", "unknown rollout \"%s\"", name);
        } else {
            uint32_t gw = r->rollout->green_weight;
            r->wc = wr_xcalloc(2, sizeof(*r->wc));
            r->wc[0] = (struct xds_weighted){r->rollout->blue, 100 - gw, NULL};
            r->wc[1] = (struct xds_weighted){r->rollout->green, gw, NULL};
            r->n_wc = 2;
            r->wc_total = 100;
        }
    }
    free(name);
}

static void parse_hsts(struct xds__cfg *c, json_t *o, struct xds_route *r)
{
    const char *const keys[] = {"max_age_s", "include_subdomains", "preload", NULL};
    struct xds_hsts *h = &r->hsts;
    bool ok;
    json_t *ho = xds__cfg_obj(c, o, "hsts", XDS__NULLABLE, &ok);

    if (ho == NULL)
        return;
    size_t mark = xds__cfg_enter(c, "hsts");
    xds__cfg_keys(c, ho, keys);
    h->enabled = true;
    if (json_object_get(ho, "max_age_s") == NULL)
        xds__cfg_err(c, "max_age_s", "is required");
    xds__cfg_u64(c, ho, "max_age_s", 0, 0, XDS__NOLIMIT, &h->max_age_s);
    xds__cfg_bool(c, ho, "include_subdomains", false, &h->include_subdomains);
    xds__cfg_bool(c, ho, "preload", false, &h->preload);
    h->header_value = wr_xasprintf("max-age=%llu%s%s", (unsigned long long)h->max_age_s,
                                   h->include_subdomains ? "; includeSubDomains" : "",
                                   h->preload ? "; preload" : "");
    xds__cfg_leave(c, mark);
}

static void parse_route(struct xds__cfg *c, json_t *o, struct xds_name_index *names)
{
    const char *const keys[] = {"name",    "match",      "cluster",        "weighted_clusters",
                                "rollout", "timeout_ms", "max_body_bytes", "redirect_https",
                                "hsts",    NULL};
    struct xds_snapshot *s = c->s;
    struct xds_route *r = &s->routes[s->n_routes];
    bool ok;

    r->idx = s->n_routes++;
    xds__cfg_keys(c, o, keys);
    unique_name(c, o, names, r->idx, &r->name);
    json_t *m = xds__cfg_obj(c, o, "match", 0, &ok);
    if (m != NULL) {
        size_t mark = xds__cfg_enter(c, "match");
        parse_match(c, m, r);
        xds__cfg_leave(c, mark);
    }
    parse_action(c, o, r);
    xds__cfg_u32(c, o, "timeout_ms", 15000, 1, XDS__NOLIMIT, &r->timeout_ms);
    xds__cfg_u64(c, o, "max_body_bytes", 0, 0, XDS__NOLIMIT, &r->max_body_bytes);
    xds__cfg_bool(c, o, "redirect_https", false, &r->redirect_https);
    parse_hsts(c, o, r);
}

static void parse_routes(struct xds__cfg *c, const struct xds__merged *m)
{
    struct xds_snapshot *s = c->s;
    struct xds_name_index *names = xds__index_new(m->n_routes);

    s->routes = wr_xcalloc(m->n_routes + 1, sizeof(*s->routes));
    FOR_EACH_ITEM(c, m->routes, m->n_routes, o, parse_route(c, o, names));
    xds__index_free(names);
}

/* ---- discovery ---------------------------------------------------------------------------- */

static char **parse_strv(struct xds__cfg *c, json_t *o, const char *key, uint32_t *n, bool address)
{
    bool ok;
    json_t *a = xds__cfg_arr(c, o, key, 0, &ok);
    char **v = wr_xcalloc(json_array_size(a) + 1, sizeof(*v));
    struct sockaddr_storage ss;
    unsigned sslen;
    const char *why;

    size_t mark = xds__cfg_enter(c, key);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *s = json_string_value(json_array_get(a, i));
        size_t m = xds__cfg_enter_idx(c, i);
        if (s == NULL || s[0] == '\0')
            xds__cfg_err(c, NULL, "must be a non-empty string");
        else if (address && wr_parse_address(s, &ss, &sslen, &why) != 0)
            xds__cfg_err(c, NULL, "%s", why);
        else
            v[(*n)++] = wr_xstrdup(s);
        xds__cfg_leave(c, m);
    }
    xds__cfg_leave(c, mark);
    return v;
}

/* kubernetes "publish_address": "203.0.113.10,lb.example.com" (IPs and host names) or
 * "publish_service": "namespace/name"; at most one. */
static void parse_publish(struct xds__cfg *c, json_t *o, struct xds_discovery *d)
{
    if (xds__cfg_str(c, o, "publish_address", XDS__NULLABLE | XDS__NONEMPTY, NULL,
                     &d->publish_address) &&
        d->publish_address != NULL) {
        char *copy = wr_xstrdup(d->publish_address), *save = NULL;
        unsigned char ip[16];
        for (char *a = strtok_r(copy, ",", &save); a != NULL; a = strtok_r(NULL, ",", &save)) {
            if (inet_pton(AF_INET, a, ip) != 1 && inet_pton(AF_INET6, a, ip) != 1 &&
                !xds__cfg_host_name(a, strlen(a))) {
                xds__cfg_err(c, "publish_address",
                             "\"%s\" must be an IP address or a host name (comma-separated)", a);
                break;
            }
        }
        free(copy);
    }
    if (xds__cfg_str(c, o, "publish_service", XDS__NULLABLE | XDS__NONEMPTY, NULL,
                     &d->publish_service) &&
        d->publish_service != NULL) {
        const char *slash = strchr(d->publish_service, '/');
        if (slash == NULL || slash == d->publish_service || slash[1] == '\0' ||
            strchr(slash + 1, '/') != NULL)
            xds__cfg_err(c, "publish_service", "must be \"namespace/name\"");
    }
    if (d->publish_address != NULL && d->publish_service != NULL)
        xds__cfg_err(c, "publish_service", "must not be set with \"publish_address\"");
}

static void parse_provider(struct xds__cfg *c, json_t *o, struct xds_discovery *d)
{
    static const char *const types[] = {"file", "dns_srv", "consul", "kubernetes", NULL};
    static const char *const keys[][8] = {
        {"type", "path", "stale_after_ms", NULL},
        {"type", "name", "cluster", "resolvers", "stale_after_ms", NULL},
        {"type", "address", "token_file", "ca_file", "datacenter", "wait_ms", "stale_after_ms",
         NULL},
        {"type", "kubeconfig", "ingress_class", "namespaces", "stale_after_ms", "publish_address",
         "publish_service", NULL},
    };
    char *type = NULL;
    unsigned t = 0;

    if (!xds__cfg_str(c, o, "type", XDS__REQUIRED, NULL, &type) || type == NULL)
        return;
    while (types[t] != NULL && strcmp(types[t], type) != 0)
        t++;
    free(type);
    if (types[t] == NULL) {
        xds__cfg_err(c, "type", "must be \"file\", \"dns_srv\", \"consul\" or \"kubernetes\"");
        return;
    }
    d->type = (uint8_t)(XDS_SRC_FILE + t);
    xds__cfg_keys(c, o, keys[t]);
    xds__cfg_u32(c, o, "stale_after_ms", 0, 0, UINT32_MAX, &d->stale_after_ms);
    switch (d->type) {
    case XDS_SRC_FILE:
        xds__cfg_file(c, o, "path", XDS__REQUIRED, false, &d->path);
        break;
    case XDS_SRC_DNS_SRV:
        xds__cfg_str(c, o, "name", XDS__REQUIRED | XDS__NONEMPTY, NULL, &d->name);
        if (xds__cfg_str(c, o, "cluster", XDS__REQUIRED | XDS__NONEMPTY, NULL, &d->cluster) &&
            d->cluster != NULL && strchr(d->cluster, '|') != NULL)
            xds__cfg_err(c, "cluster", "must not contain \"|\"");
        d->resolvers = parse_strv(c, o, "resolvers", &d->n_resolvers, true);
        break;
    case XDS_SRC_CONSUL:
        if (xds__cfg_str(c, o, "address", XDS__REQUIRED | XDS__NONEMPTY, NULL, &d->address) &&
            d->address != NULL && strncmp(d->address, "http://", 7) != 0 &&
            strncmp(d->address, "https://", 8) != 0)
            xds__cfg_err(c, "address", "must be an http:// or https:// URL");
        xds__cfg_file(c, o, "token_file", XDS__NULLABLE, false, &d->token_file);
        xds__cfg_file(c, o, "ca_file", XDS__NULLABLE, true, &d->ca_file);
        xds__cfg_str(c, o, "datacenter", XDS__NULLABLE | XDS__NONEMPTY, NULL, &d->datacenter);
        xds__cfg_u32(c, o, "wait_ms", 30000, 1000, 600000, &d->wait_ms);
        break;
    default:
        xds__cfg_file(c, o, "kubeconfig", XDS__NULLABLE, false, &d->kubeconfig);
        xds__cfg_str(c, o, "ingress_class", XDS__NONEMPTY, "weir", &d->ingress_class);
        d->namespaces = parse_strv(c, o, "namespaces", &d->n_namespaces, false);
        parse_publish(c, o, d);
        break;
    }
}

static void parse_discovery(struct xds__cfg *c, json_t *root)
{
    struct xds_snapshot *s = c->s;
    bool ok;
    json_t *a = xds__cfg_arr(c, root, "discovery", 0, &ok);

    s->discovery = wr_xcalloc(json_array_size(a) + 1, sizeof(*s->discovery));
    size_t mark = xds__cfg_enter(c, "discovery");
    FOR_EACH_OBJECT(c, a, i, o, {
        struct xds_discovery *d = &s->discovery[s->n_discovery++];
        parse_provider(c, o, d);
        for (uint32_t j = 0; d->cluster != NULL && j + 1 < s->n_discovery; j++)
            if (s->discovery[j].cluster != NULL && strcmp(s->discovery[j].cluster, d->cluster) == 0)
                xds__cfg_err(c, "cluster", "cluster \"%s\" is already filled by discovery[%u]",
                             d->cluster, j);
    })
    xds__cfg_leave(c, mark);
}

/* ---- finishing ---------------------------------------------------------------------------- */

static struct xds_counters *counters(struct xds_stats_reg *reg, unsigned n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static struct xds_counters *counters(struct xds_stats_reg *reg, unsigned n, const char *fmt, ...)
{
    char *key = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&key, fmt, ap) < 0)
        abort();
    va_end(ap);
    struct xds_counters *k = xds_stats_counters(reg, key, n);
    free(key);
    return k;
}

/* Links the shared counters of every object; the registry keeps them across snapshots. */
static void link_stats(struct xds_snapshot *s, struct xds_stats_reg *reg)
{
    for (uint32_t i = 0; i < s->n_listeners; i++)
        s->listeners[i].stats = counters(reg, 2, "listener|%s", s->listeners[i].name);
    xds__cfg_cluster_stats(s, reg);
    for (uint32_t i = 0; i < s->n_rollouts; i++)
        s->rollouts[i].stats = counters(reg, 10, "rollout|%s", s->rollouts[i].name);
    for (uint32_t i = 0; i < s->n_routes; i++) {
        struct xds_route *r = &s->routes[i];
        for (uint32_t j = 0; j < r->n_wc; j++)
            r->wc[j].stats = counters(reg, 5, "rc|%s|%s", r->name, r->wc[j].cluster->name);
        r->hist = counters(reg, XDS_HIST_BUCKETS + 2, "hist|%s", r->name);
    }
}

struct xds__item_mark xds__cfg_item_enter(struct xds__cfg *c, const struct xds__item *it)
{
    struct xds__item_mark m = {.name = c->name};

    c->name = it->name;
    m.mark = xds__cfg_enter(c, it->section);
    xds__cfg_enter_idx(c, it->idx);
    return m;
}

void xds__cfg_item_leave(struct xds__cfg *c, struct xds__item_mark m)
{
    xds__cfg_leave(c, m.mark);
    c->name = m.name;
}

static struct xds_snapshot *build(struct xds__cfg *c, json_t *root, const struct xds_build_args *a)
{
    struct xds_stats_reg *reg = a->reg;
    uint64_t version = a->version;
    struct xds__merged merged;
    const char *const keys[] = {"workers",
                                "drain_timeout_ms",
                                "drain_delay_ms",
                                "access_log",
                                "admin",
                                "listeners",
                                "routes",
                                "clusters",
                                "rollouts",
                                "discovery",
                                "client_header_timeout_ms",
                                "client_idle_timeout_ms",
                                "max_header_bytes",
                                "max_target_bytes",
                                NULL};
    struct xds_snapshot *s = wr_xcalloc(1, sizeof(*s));
    bool ok;

    atomic_init(&s->refs, 1);
    s->version = version;
    snprintf(s->version_str, sizeof(s->version_str), "%llu", (unsigned long long)version);
    s->reg = reg;
    c->s = s;
    xds__cfg_keys(c, root, keys);
    parse_process(c, root);
    /* type checks of the file's own arrays (the merge skips what is not an array) */
    xds__cfg_arr(c, root, "clusters", 0, &ok);
    xds__cfg_arr(c, root, "rollouts", 0, &ok);
    xds__cfg_arr(c, root, "routes", 0, &ok);
    xds__merge(c, root, a->views, a->n_views, &merged);
    c->merged = &merged;
    c->nworkers = xds__reg_nworkers(reg);
    c->cache = reg != NULL ? a->cache : NULL;
    parse_listeners(c, root);
    xds__cfg_clusters(c, merged.clusters, merged.n_clusters);
    parse_rollouts(c, &merged);
    parse_routes(c, &merged);
    parse_discovery(c, root);
    c->merged = NULL;
    s->conflicts = merged.conflicts;
    s->n_conflicts = merged.n_conflicts;
    merged.conflicts = NULL;
    merged.n_conflicts = 0;
    xds__merged_free(&merged);
    if (c->n_errors == 0) {
        if (reg != NULL)
            link_stats(s, reg);
        xds__cfg_cluster_cache(c);
    }
    for (uint32_t i = 0; c->cluster_keys != NULL && i < s->n_clusters; i++)
        free(c->cluster_keys[i]);
    wr_free(&c->cluster_keys);
    wr_free(&c->cluster_srcs);
    if (c->n_errors > 0) {
        xds__snapshot_free(s);
        return NULL;
    }
    xds__vhost_build(s);
    return s;
}

static struct xds_snapshot *parse(const char *text, size_t len, const char *name,
                                  const char *base_dir, const struct xds_build_args *a,
                                  struct wr_sbuf *errors)
{
    struct xds__cfg c = {.name = name, .base_dir = base_dir, .errors = errors};
    struct xds_snapshot *s = NULL;
    json_error_t jerr;
    /* The same text as the last build (a rollout weight change, a discovery update): its parsed
     * tree is reused, and with it the identity of its objects (xds_config_cluster.c). */
    json_t *root = a->reg != NULL ? xds__cache_root(a->cache, text, len) : NULL;

    if (root == NULL && (root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)) != NULL &&
        a->reg != NULL)
        xds__cache_root_put(a->cache, text, len, root);
    if (root == NULL) {
        wr_sbuf_printf(errors, "%s: line %d column %d: %s\n", name, jerr.line, jerr.column,
                       jerr.text);
        return NULL;
    }
    if (!json_is_object(root))
        wr_sbuf_printf(errors, "%s: must be a JSON object\n", name);
    else
        s = build(&c, root, a);
    json_decref(root);
    wr_sbuf_dispose(&c.path);
    return s;
}

struct xds_snapshot *xds_config_parse(const char *text, size_t len, const char *name,
                                      struct xds_stats_reg *reg, uint64_t version,
                                      struct wr_sbuf *errors)
{
    struct xds_build_args a = {.path = name, .reg = reg, .version = version};
    return parse(text, len, name, NULL, &a, errors);
}

static char *read_file(const char *path, size_t *len, struct wr_sbuf *errors)
{
    struct wr_sbuf b = {0};
    char chunk[65536];
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        wr_sbuf_printf(errors, "%s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len <= MAX_CONFIG_BYTES)
        wr_sbuf_add(&b, chunk, n);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || b.len > MAX_CONFIG_BYTES) {
        wr_sbuf_printf(errors, "%s: %s\n", path, failed ? "cannot read" : "file is too large");
        wr_sbuf_dispose(&b);
        return NULL;
    }
    *len = b.len;
    return b.p != NULL ? b.p : wr_xstrdup("");
}

/* Relative paths in the file (certificates, token file, access log, discovery files) are taken
 * relative to the directory of the config file, as nginx does for its conf directory. */
struct xds_snapshot *xds_config_load(const char *path, struct xds_stats_reg *reg, uint64_t version,
                                     struct wr_sbuf *errors)
{
    return xds_config_load_ex(path, NULL, 0, NULL, reg, version, errors);
}

struct xds_snapshot *xds_config_load_ex(const char *path, const char *text, size_t len,
                                        char **text_out, struct xds_stats_reg *reg,
                                        uint64_t version, struct wr_sbuf *errors)
{
    struct xds_build_args a = {.path = path,
                               .text = text,
                               .len = len,
                               .text_out = text_out,
                               .reg = reg,
                               .version = version};
    return xds_config_build(&a, errors);
}

struct xds_snapshot *xds_config_build(const struct xds_build_args *a, struct wr_sbuf *errors)
{
    const char *path = a->path, *text = a->text;
    size_t len = a->len;
    char **text_out = a->text_out;
    char *owned = NULL;
    const char *slash = strrchr(path, '/');
    char *dir = NULL;

    if (text == NULL) {
        owned = read_file(path, &len, errors);
        if (owned == NULL)
            return NULL;
        text = owned;
    }
    if (slash != NULL)
        dir = wr_xstrndup(path, (size_t)(slash - path)); /* "" for "/weir.json": "" + "/" + p */
    struct xds_snapshot *s = parse(text, len, path, dir, a, errors);
    free(dir);
    if (s != NULL && text_out != NULL && owned != NULL) {
        *text_out = owned;
        owned = NULL;
    }
    free(owned);
    return s;
}

int xds_rollout_set_weight(struct xds_snapshot *s, const char *name, uint32_t green_weight)
{
    const struct xds_rollout *found = xds_rollout_find(s, name);

    if (found == NULL || green_weight > 100)
        return WR_EINVAL;
    struct xds_rollout *ro = &s->rollouts[found->idx];
    ro->green_weight = green_weight;
    for (uint32_t i = 0; i < s->n_routes; i++) {
        struct xds_route *rt = &s->routes[i];
        if (rt->action != XDS_ACT_ROLLOUT || rt->rollout != ro || rt->n_wc < 2)
            continue;
        rt->wc[0].weight = 100 - green_weight;
        rt->wc[1].weight = green_weight;
        rt->wc_total = 100;
    }
    return 0;
}
