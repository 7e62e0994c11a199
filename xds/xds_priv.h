/* xds/xds_priv.h -- struct bodies and helpers shared only inside xds/.
 *
 * Nothing outside xds/ may include this file: the data path reads the public structs of
 * <weir/xds.h> and calls the functions declared there.
 */
#ifndef WEIR_XDS_PRIV_H
#define WEIR_XDS_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

/* ---- name index (xds_snapshot.c) ---------------------------------------------------------- */

/* A fixed-capacity open-addressing table from borrowed strings to uint32 values, built once on
 * the control thread and then read-only (any thread). The hash folds ASCII case so that the
 * same table serves case-sensitive lookups (cluster names) and case-insensitive ones (host
 * names, whose keys are stored lower-case). */
struct xds_name_slot {
    const char *key; /* NULL: empty slot; borrowed from the snapshot */
    uint32_t len;
    uint32_t val;
    uint64_t hash;
};

struct xds_name_index {
    struct xds_name_slot *slots;
    uint32_t mask; /* capacity - 1; capacity is a power of two >= 2 * expected */
    uint32_t n;
};

uint64_t xds__hash_ci(const char *p, size_t len);
/* Sized for at most <expected> keys; adding more aborts. */
struct xds_name_index *xds__index_new(size_t expected);
void xds__index_free(struct xds_name_index *ix); /* NULL is a no-op */
/* Adds <key> -> <val> and returns true, or returns false and sets *old when <key> is present. */
bool xds__index_add(struct xds_name_index *ix, const char *key, size_t len, uint32_t val,
                    uint32_t *old);
/* Case-sensitive lookup. */
bool xds__index_get(const struct xds_name_index *ix, const char *key, size_t len, uint32_t *val);
/* ASCII case-insensitive lookup: the stored keys must be lower-case. */
bool xds__index_get_ci(const struct xds_name_index *ix, const char *key, size_t len, uint32_t *val);

/* Frees a snapshot whatever its refcount, including a partially built one (every pointer is
 * either NULL or owned). */
void xds__snapshot_free(struct xds_snapshot *s);

/* ---- virtual hosts (xds_router.c) --------------------------------------------------------- */

/* The routes of one host group, sorted by match precedence (see xds_router.c). */
struct xds_route_group {
    const struct xds_route **routes;
    uint32_t n;
};

struct xds_vhost_index {
    struct xds_name_index *exact; /* "shop.example.com" -> groups[] index */
    struct xds_name_index *wild;  /* ".example.com" (from "*.example.com") -> groups[] index */
    struct xds_route_group *groups;
    uint32_t n_groups;
    struct xds_route_group any; /* routes without a host */
};

/* Builds s->vhosts from s->routes (control thread, once the routes are final). */
void xds__vhost_build(struct xds_snapshot *s);
void xds__vhost_free(struct xds_vhost_index *v); /* NULL is a no-op */

/* ---- config loading (xds_config*.c, helpers in xds_config_util.c)
 * -------------------------------------------------------- */

/* The state of one validation run: every check reports into <errors> and goes on, so that one
 * run lists every error of the file. <path> is the JSON path of the value being checked. */
struct xds__cfg {
    const char *name;     /* file name, as given, for error lines */
    const char *base_dir; /* relative file paths are resolved against it; NULL: kept as given */
    struct wr_sbuf *errors;
    unsigned n_errors;
    struct wr_sbuf path;
    struct xds_snapshot *s;
    struct xds_cache *cache;    /* NULL: no reuse */
    struct xds__merged *merged; /* the file + views, once merged */
    char **cluster_keys;        /* per s->clusters entry: its cache key (NULL: not cacheable) */
    json_t **cluster_srcs;      /* per s->clusters entry: the view object it came from as is
                                   (borrowed; NULL for a filled template) */
    unsigned nworkers;          /* per-worker slots of new clusters (0: none) */
};

/* Flags of the typed getters. */
#define XDS__REQUIRED 0x1u /* absent is an error ("is required") */
#define XDS__NULLABLE 0x2u /* JSON null is accepted and means absent */
#define XDS__NONEMPTY 0x4u /* "" is an error */
#define XDS__NOLIMIT  UINT64_MAX

/* Appends "NAME: path.key: message\n"; <key> NULL names the current path itself. */
void xds__cfg_err(struct xds__cfg *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Descends into member <key> / element <i>; returns the length to hand back to _leave(). */
size_t xds__cfg_enter(struct xds__cfg *c, const char *key);
size_t xds__cfg_enter_idx(struct xds__cfg *c, size_t i);
void xds__cfg_leave(struct xds__cfg *c, size_t mark);
/* Reports every member of <obj> not in the NULL-terminated <allowed> as "unknown key". */
void xds__cfg_keys(struct xds__cfg *c, json_t *obj, const char *const *allowed);

/* Typed getters for member <key> of object <obj>. Each returns false after reporting an error
 * (wrong type, out of range, missing and required) and leaves *out at the default when the
 * member is absent. Strings are returned as new heap copies (NULL when absent and no default). */
json_t *xds__cfg_obj(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool *ok);
json_t *xds__cfg_arr(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool *ok);
bool xds__cfg_str(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, const char *def,
                  char **out);
bool xds__cfg_u32(struct xds__cfg *c, json_t *obj, const char *key, uint32_t def, uint64_t min,
                  uint64_t max, uint32_t *out);
bool xds__cfg_u64(struct xds__cfg *c, json_t *obj, const char *key, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t *out);
bool xds__cfg_bool(struct xds__cfg *c, json_t *obj, const char *key, bool def, bool *out);
/* A string that names a file: resolved against c->base_dir when relative, and when <readable>
 * checked to be a readable regular file. */
bool xds__cfg_file(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool readable,
                   char **out);
/* Resolves the relative path <p> (owned, replaced) against c->base_dir. */
char *xds__cfg_resolve(struct xds__cfg *c, char *p);
/* Checks <s> as a host name (RFC 1123 labels); true when valid. */
bool xds__cfg_host_name(const char *s, size_t len);
/* Checks <s> as an HTTP header field name (RFC 9110 token). */
bool xds__cfg_token(const char *s);

/* The number of workers the registry counts for (0 for NULL). */
unsigned xds__reg_nworkers(const struct xds_stats_reg *r);

/* ---- the merge of the file with the discovery views (xds_merge.c) ---- */

/* One object to validate: where it comes from decides the name of its error lines
 * ("<name>: <section>[<idx>].key: message"). */
struct xds__item {
    json_t *obj;      /* a reference */
    const char *name; /* file name or view label, for error lines */
    const char *section;
    uint32_t idx;
    uint8_t source;    /* enum xds_source */
    bool filled;       /* a static template filled by a view */
    const char *label; /* the source, for conflict lines */
};

/* A certificate a view brings (a Kubernetes TLS Secret): served by every TLS listener for its
 * hosts, after the file's own certificates (which win for the names they cover). */
struct xds__vcert {
    const char *label;    /* the view's */
    json_t *hosts;        /* borrowed: array of strings */
    const char *cert_pem; /* borrowed */
    const char *key_pem;
};

struct xds__merged {
    struct xds__item *clusters, *rollouts, *routes;
    uint32_t n_clusters, n_rollouts, n_routes;
    struct xds__vcert *certs;
    uint32_t n_certs;
    char **conflicts;
    uint32_t n_conflicts;
};

/* Adds a line to m->conflicts (something of a view that was dropped). */
void xds__merge_note(struct xds__merged *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void xds__merge(struct xds__cfg *c, json_t *root, const struct xds_view *views, unsigned n_views,
                struct xds__merged *m);
void xds__merged_free(struct xds__merged *m);

/* Enters the error path of <it> (and its name); returns what xds__cfg_item_leave() needs. */
struct xds__item_mark {
    const char *name;
    size_t mark;
};
struct xds__item_mark xds__cfg_item_enter(struct xds__cfg *c, const struct xds__item *it);
void xds__cfg_item_leave(struct xds__cfg *c, struct xds__item_mark m);

/* Parses the "clusters" array into c->s->clusters and builds c->s->cluster_index
 * (xds_config_cluster.c). A cluster whose settings are wrong keeps its name, so references to
 * it do not add "unknown cluster" errors. */
void xds__cfg_clusters(struct xds__cfg *c, const struct xds__item *items, uint32_t n);
/* The parsed config tree of <text> when the cache holds it (a new reference), else NULL; and
 * the remembering of one (the cache takes its own reference). Either accepts a NULL cache. */
json_t *xds__cache_root(struct xds_cache *cache, const char *text, size_t len);
void xds__cache_root_put(struct xds_cache *cache, const char *text, size_t len, json_t *root);
/* Once a build succeeded: the cache (if any) now holds exactly this build's clusters. */
void xds__cfg_cluster_cache(struct xds__cfg *c);
void xds__cluster_unref(struct xds_cluster *cl); /* NULL is a no-op */
/* Links cluster and endpoint stats entries (only called for a valid config with a registry). */
void xds__cfg_cluster_stats(struct xds_snapshot *s, struct xds_stats_reg *reg);

/* Renders the normalized config of <s> for GET /config (xds_json.c). */
char *xds__config_json(const struct xds_snapshot *s);

/* ---- TLS (xds_tls.c) ---- */

/* Builds t->ssl_ctx and the SNI table from t->certs and the views' certificates
 * (c->merged->certs); reports errors at the current path. */
void xds__tls_listener_build(struct xds__cfg *c, struct xds_listener_tls *t);
void xds__tls_listener_free(struct xds_listener_tls *t);
/* Adds to c->merged the notes the build of <t> made (a view certificate that did not load):
 * for a <t> taken from the cache, whose build ran for an earlier snapshot. */
void xds__tls_listener_notes(struct xds__cfg *c, const struct xds_listener_tls *t);
/* Listener TLS settings are shared between snapshots like clusters (the cache keys them by
 * their JSON and the views' certificates). */
struct xds_listener_tls *xds__cache_tls_get(struct xds_cache *cache, const char *key);
void xds__cache_tls_put(struct xds_cache *cache, const char *key, struct xds_listener_tls *t);
void xds__listener_tls_unref(struct xds_listener_tls *t); /* NULL is a no-op */
/* Builds cl->tls.ssl_ctx, the client context for TLS to the cluster's endpoints. */
void xds__tls_cluster_build(struct xds__cfg *c, struct xds_cluster *cl);
void xds__tls_cluster_free(struct xds_cluster *cl);

/* ---- xDS v3 REST-JSON (xds_v3.c, xds_v3_route.c) ---- */

#define XDS__V3_ROUTE_CONFIG "weir"     /* the one RouteConfiguration every listener uses */
#define XDS__V3_XDS_CLUSTER  "weir_xds" /* the Envoy bootstrap cluster that reaches weir */

json_t *xds__v3_any(const char *type_name); /* {"@type": "type.googleapis.com/<type_name>"} */
json_t *xds__v3_duration(uint64_t ms);      /* google.protobuf.Duration: "1.500s" */
json_t *xds__v3_config_source(void);        /* the ConfigSource of RDS and EDS references */
json_t *xds__v3_route_config(const struct xds_snapshot *s);

#endif /* WEIR_XDS_PRIV_H */
