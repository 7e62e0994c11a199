/* include/weir/xds.h -- the configuration model and its immutable snapshots (xds/).
 *
 * A snapshot is built on the control thread from the JSON config file, validated as a whole
 * and then published to the workers. Once built it never changes: the structs below are
 * public so the data path reads them without calls, but every field is read-only for
 * everybody outside xds/. The only words that change under a snapshot are the _Atomic
 * counters and health flags in the shared stats entries (struct xds_ep_state,
 * struct xds_counters), which outlive snapshots: a new snapshot re-links the entry of the same
 * key, so counters and health survive reloads.
 *
 * Thread rules: build/load and the stats registry are control-thread only. ref/unref, lookups
 * and route matching may be called from any thread.
 */
#ifndef WEIR_XDS_H
#define WEIR_XDS_H

#include <sys/socket.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <weir/wr.h>

struct xds_stats_reg;
struct xds_vhost_index; /* private to xds/ */
struct xds_name_index;  /* private to xds/ */

/* ---- shared counters that survive snapshots -------------------------------------------- */

/* Single-writer counter increment: each worker owns its own counter words, the control thread
 * only reads them. Compiles to a plain load/add/store (no lock prefix). */
static inline void xds_ctr_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t xds_ctr_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Endpoint health flags (0 = healthy and serving). Written by health/, read by LBs. */
#define XDS_EPF_UNHEALTHY 0x1u /* failed active health checks */
#define XDS_EPF_EJECTED   0x2u /* ejected by outlier detection */
#define XDS_EPF_DRAINING  0x4u /* removed or draining: no new requests */

/* Per-worker slice of an endpoint's state; only worker <i> writes w[i]. */
struct xds_ep_wstate {
    _Atomic uint64_t requests; /* proxied requests sent to the endpoint */
    _Atomic uint64_t failures; /* 5xx answers + connect/reset/timeout failures */
    _Atomic uint64_t active;   /* requests in flight */
    _Atomic uint64_t connect_failures;
    struct wr_list idle; /* this worker's idle pooled upstream connections (ingress/) */
    uint32_t n_idle;
    /* Outlier detection streaks of this worker (health/ hc_outlier_report()): plain words,
     * nobody else reads or writes them. od_epoch is the copy of xds_ep_state.od_epoch they
     * were counted under; a different value there means "start counting again". */
    uint32_t od_5xx, od_gw, od_epoch;
} __attribute__((aligned(64)));

struct xds_ep_state;

/* How a worker hands an endpoint that crossed an outlier threshold over to health/ on the
 * control thread without a lock: a lock-free stack of entries linked through od_next (pushed
 * by workers, taken whole by the control thread), and a wake-up that health/ implements with
 * uv_async_send(). Owned by health/ (struct hc_manager). */
struct xds_ep_sink {
    _Atomic(struct xds_ep_state *) head;
    void (*wake)(struct xds_ep_sink *sink);
};

/* State of one endpoint, keyed by "cluster|address"; refcounted (the registry, every snapshot
 * that links it, and every pooled upstream connection to it hold a reference). */
struct xds_ep_state {
    _Atomic uint32_t refs;
    _Atomic uint32_t flags; /* XDS_EPF_* */
    /* Outlier detection, written by health/ on the control thread and read by the workers:
     * thresholds (0 = detection off), the streak epoch (bumped at each ejection and
     * un-ejection so that streaks counted before do not count after), the suspect bits
     * (HC_SUSPECT_*) a worker sets before pushing the entry to od_sink. */
    _Atomic uint32_t od_5xx_max, od_gw_max;
    _Atomic uint32_t od_epoch;
    _Atomic uint32_t od_suspect;
    char *key;
    unsigned nworkers;
    _Atomic(struct xds_ep_state *) od_next; /* link in od_sink->head while suspect */
    _Atomic(struct xds_ep_sink *) od_sink;  /* NULL: nobody listens (no health manager) */
    /* Counters written by the control thread only (health/), read by the admin API. */
    _Atomic uint64_t hc_ok, hc_fail; /* active health checks passed / failed */
    _Atomic uint64_t od_ejections;   /* outlier ejections */
    struct xds_ep_wstate w[];        /* nworkers entries */
};

/* A block of <ncounters> counters per worker, keyed by "<kind>|<key>"; refcounted like
 * struct xds_ep_state. Used for route, route×cluster and rollout metrics. */
struct xds_counters {
    _Atomic uint32_t refs;
    unsigned ncounters;
    unsigned stride; /* counters per worker, rounded up to a cache line */
    unsigned nworkers;
    char *key;
    /* nworkers * stride; aligned so that each worker's block starts a cache line */
    _Atomic uint64_t c[] __attribute__((aligned(64)));
};

static inline _Atomic uint64_t *xds_counters_w(struct xds_counters *k, unsigned worker)
{
    return &k->c[(size_t)worker * k->stride];
}

/* Sums counter <i> over all workers. */
uint64_t xds_counters_sum(struct xds_counters *k, unsigned i);

struct xds_ep_state *xds_ep_state_ref(struct xds_ep_state *st);
void xds_ep_state_unref(struct xds_ep_state *st); /* NULL is a no-op */

/* The registry: control thread only. */
struct xds_stats_reg *xds_stats_reg_new(unsigned nworkers);
void xds_stats_reg_free(struct xds_stats_reg *r);
/* Returns a new reference to the entry of <key>, creating it when absent. */
struct xds_ep_state *xds_stats_ep(struct xds_stats_reg *r, const char *key);
struct xds_counters *xds_stats_counters(struct xds_stats_reg *r, const char *key,
                                        unsigned ncounters);
void xds_counters_unref(struct xds_counters *k);
/* Frees entries nobody but the registry references any more. */
void xds_stats_reg_sweep(struct xds_stats_reg *r);

/* ---- the model ---------------------------------------------------------------------------- */

enum xds_lb_policy {
    XDS_LB_ROUND_ROBIN = 0,
    XDS_LB_LEAST_REQUEST,
    XDS_LB_RING_HASH,
    XDS_LB_RANDOM,
};

enum xds_hash_on {
    XDS_HASH_NONE = 0,
    XDS_HASH_HEADER,
    XDS_HASH_COOKIE,
    XDS_HASH_SOURCE_IP,
};

enum xds_protocol {
    XDS_PROTO_HTTP1 = 0,
    XDS_PROTO_H2,
    XDS_PROTO_H2C,
};

enum xds_source {
    XDS_SRC_STATIC = 0,
    XDS_SRC_FILE,
    XDS_SRC_DNS_SRV,
    XDS_SRC_CONSUL,
    XDS_SRC_KUBERNETES,
};

const char *xds_source_name(enum xds_source s);
const char *xds_lb_policy_name(enum xds_lb_policy p);

struct xds_tls_cert {
    char *cert_file;
    char *key_file;
};

struct xds_listener_tls {
    _Atomic uint32_t refs; /* shared by the snapshots that did not change it */
    struct xds_tls_cert *certs;
    uint32_t n_certs;
    char **alpn; /* NULL-terminated */
    uint32_t n_alpn;
    uint8_t min_version;     /* 2 = TLS 1.2, 3 = TLS 1.3 */
    bool h2_enabled;         /* "h2" may be selected by ALPN (false until the h2 codec serves it) */
    void *ssl_ctx;           /* SSL_CTX * of the first certificate; SNI switches from it */
    struct xds_tls_sni *sni; /* private to xds/xds_tls.c */
};

/* A listener's TLS settings and contexts are shared by the snapshots that did not change them
 * and pinned by whoever still uses their SSL_CTX (a worker's listener, a connection in its
 * handshake: SNI switches contexts through state that lives here). Any thread. */
static inline struct xds_listener_tls *xds_listener_tls_ref(struct xds_listener_tls *t)
{
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void xds_listener_tls_unref(struct xds_listener_tls *t); /* NULL is a no-op */

/* Replaces the process-wide session-ticket keys (the previous key still decrypts). Called at
 * boot by the first TLS listener and then periodically by the control thread. */
void xds_tls_rotate_ticket_keys(void);

struct xds_listener {
    char *name;
    char *address; /* as configured */
    struct sockaddr_storage ss;
    unsigned sslen;
    bool h2c;
    bool proxy_protocol;
    struct xds_listener_tls *tls; /* NULL: plain */
    /* counter 0: active client connections (a gauge: each worker adds and subtracts its own
     * word; sum as int64); counter 1: accepted connections */
    struct xds_counters *stats;
};

struct xds_endpoint {
    char *address; /* "127.0.0.1:9001" / "[::1]:9001": as /clusters shows it */
    struct sockaddr_storage ss;
    unsigned sslen;
    uint32_t weight;   /* >= 1 */
    uint32_t priority; /* 0 = first; a level serves only while all lower ones have no healthy
                          endpoint (DNS SRV priorities; "priority" in the config) */
    bool draining;     /* the source says so ("health": "draining", e.g. a terminating
                          Kubernetes endpoint): no new requests */
    struct xds_ep_state *st;
};

/* A per-worker slot in a shared object: worker <i> alone creates and uses slots[i].p; whoever
 * frees the object calls free_fn(p) (the object is then unreachable from every snapshot). */
struct xds_wslot {
    void *p;
    void (*free_fn)(void *p);
} __attribute__((aligned(16)));

enum xds_hc_type {
    XDS_HC_NONE = 0,
    XDS_HC_HTTP,
    XDS_HC_TCP,
    XDS_HC_GRPC,
};

/* Active health check settings (used by health/). */
struct xds_health_check {
    uint8_t type; /* enum xds_hc_type */
    bool initial_healthy;
    bool tls;
    char *path, *method, *host, *body_contains; /* http */
    uint16_t (*expected)[2];                    /* inclusive status ranges */
    uint32_t n_expected;
    char *send, *expect; /* tcp */
    char *service;       /* grpc */
    uint32_t interval_ms, unhealthy_interval_ms, timeout_ms;
    uint32_t healthy_threshold, unhealthy_threshold, jitter_percent;
};

struct xds_outlier {
    bool enabled;
    uint32_t consecutive_5xx, consecutive_gateway_failure;
    uint32_t base_ejection_ms, max_ejection_ms, max_ejection_percent;
};

struct xds_upstream_tls {
    bool enabled;
    char *sni;
    char *ca_file;
    bool verify;
    void *ssl_ctx; /* SSL_CTX * (client side), built with the snapshot */
};

/* Clusters are shared between snapshots: a build reuses the cluster object of the previous one
 * when its settings and endpoints are the same (so one endpoint change in a 1,000-service view
 * builds one cluster), hence the reference count and no per-snapshot index. */
struct xds_cluster {
    _Atomic uint32_t refs;
    char *name;
    uint8_t lb_policy; /* enum xds_lb_policy */
    uint8_t hash_on;   /* enum xds_hash_on */
    uint8_t protocol;  /* enum xds_protocol */
    uint8_t source;    /* enum xds_source */
    bool is_template;  /* declared without an "endpoints" key */
    char *hash_name;   /* header (lower-cased) or cookie name for ring_hash */
    struct xds_endpoint *eps;
    uint32_t n_eps;
    uint32_t total_weight;
    uint32_t panic_percent;      /* default 50 */
    uint32_t connect_timeout_ms; /* default 2000 */
    uint32_t idle_timeout_ms;    /* upstream idle pooled connection lifetime, default 30000 */
    uint32_t max_idle;           /* idle pooled connections per endpoint per worker, 1024 */
    uint32_t retries;            /* retries for idempotent requests, default 1 */
    struct xds_health_check hc;  /* type XDS_HC_NONE: none */
    struct xds_outlier outlier;
    struct xds_upstream_tls tls;
    struct xds_counters *stats; /* cluster counters: XDS_CS_* */
    bool has_priorities;        /* some endpoint has priority > 0 */
    /* The ingress workers' load-balancing state, one slot per worker (NULL for --check). */
    struct xds_wslot *wslots;
    unsigned n_wslots;
};

/* Cluster counters (struct xds_cluster.stats). */
enum { XDS_CS_CONNECT_FAILURES = 0, XDS_CS_RETRIES, XDS_CS_COUNT };

struct xds_rollout {
    char *name;
    uint32_t idx;
    struct xds_cluster *blue, *green;
    uint32_t green_weight; /* 0..100 */
    bool sticky;
    /* per colour (0 blue, 1 green) × code class (0 = 1xx ... 4 = 5xx): XDS_RS_IDX() */
    struct xds_counters *stats;
};

#define XDS_RS_IDX(colour, cls) ((colour)*5 + (cls))

enum xds_path_kind {
    XDS_PATH_ANY = 0, /* no path condition */
    XDS_PATH_EXACT,
    XDS_PATH_PREFIX,
    XDS_PATH_REGEX,
};

enum xds_hdr_kind {
    XDS_HDR_EXACT = 0,
    XDS_HDR_PREFIX,
    XDS_HDR_SUFFIX,
    XDS_HDR_CONTAINS,
    XDS_HDR_REGEX,
    XDS_HDR_PRESENT,
};

struct xds_header_match {
    char *name; /* lower-cased */
    size_t name_len;
    uint8_t kind; /* enum xds_hdr_kind */
    bool invert;  /* match when the condition does NOT hold */
    char *value;
    size_t value_len;
    void *re; /* pcre2_code * for XDS_HDR_REGEX */
};

enum xds_action {
    XDS_ACT_NONE = 0,
    XDS_ACT_CLUSTER,
    XDS_ACT_WEIGHTED,
    XDS_ACT_ROLLOUT,
};

struct xds_weighted {
    struct xds_cluster *cluster;
    uint32_t weight;
    struct xds_counters *stats; /* weir_requests_total{route,cluster,code}: 5 code classes */
};

struct xds_hsts {
    bool enabled;
    uint64_t max_age_s;
    bool include_subdomains;
    bool preload;
    char *header_value; /* prebuilt "max-age=...; includeSubDomains" */
};

struct xds_route {
    char *name;
    uint32_t idx;
    char *host;        /* as configured (lower-cased), NULL: any host */
    uint8_t path_kind; /* enum xds_path_kind */
    char *path;
    size_t path_len;
    void *re; /* pcre2_code * for XDS_PATH_REGEX */
    struct xds_header_match *hdrs;
    uint32_t n_hdrs;
    uint8_t action; /* enum xds_action */
    /* XDS_ACT_CLUSTER: wc[0] with weight 1; XDS_ACT_WEIGHTED: all; XDS_ACT_ROLLOUT: wc[0] blue,
     * wc[1] green, so per-cluster counters exist for every action */
    struct xds_weighted *wc;
    uint32_t n_wc;
    uint32_t wc_total;
    struct xds_rollout *rollout;
    uint32_t timeout_ms;     /* upstream response timeout, default 15000 */
    uint64_t max_body_bytes; /* 0 = unlimited */
    bool redirect_https;
    struct xds_hsts hsts;
    /* weir_request_duration_seconds{route}: XDS_HIST_BUCKETS bucket counters, then the sum in
     * microseconds, then the count */
    struct xds_counters *hist;
};

/* A discovery provider declared in the config file (validated; run by discovery/). */
struct xds_discovery {
    uint8_t type; /* enum xds_source: XDS_SRC_FILE ... XDS_SRC_KUBERNETES */
    char *path;   /* file: the services file */
    /* dns_srv: the SRV name, the cluster it fills, resolvers ("host:port"; none: system's) */
    char *name, *cluster;
    char **resolvers;
    uint32_t n_resolvers;
    char *address, *token_file; /* consul: base URL, token file (NULL: none; not read) */
    char *ca_file, *datacenter; /* consul: CA for https (NULL: system's), dc (NULL: agent's) */
    uint32_t wait_ms;           /* consul: blocking query wait (default 30000) */
    uint32_t stale_after_ms;    /* all: /ready fails when no view came for this long (0: never) */
    /* kubernetes: kubeconfig (NULL: in-cluster), IngressClass name, namespaces (none: all) */
    char *kubeconfig, *ingress_class;
    char **namespaces;
    uint32_t n_namespaces;
    /* kubernetes (extension, docs/kubernetes.md): the address written to the status of the
     * Ingresses weir serves, by the elected replica: a comma-separated list of IPs and host
     * names, or the "namespace/name" of a Service whose status.loadBalancer is copied. At most
     * one of the two; none: no status is written and no leader is elected. */
    char *publish_address, *publish_service;
};

/* A deep copy of <src> into <dst> (discovery/ keeps its provider's settings past the snapshot),
 * and the release of one. */
void xds_discovery_copy(struct xds_discovery *dst, const struct xds_discovery *src);
void xds_discovery_dispose(struct xds_discovery *d);

/* RFC 1123 host name (dot-separated labels of letters, digits and inner '-', 1-63 bytes each,
 * 253 in all), as the config's "host" fields accept it; providers check what they route with it. */
bool xds_host_name_valid(const char *s, size_t len);

#define XDS_HIST_BUCKETS 14
extern const double xds_hist_bounds[XDS_HIST_BUCKETS]; /* seconds, upper bounds ("le") */

struct xds_snapshot {
    _Atomic uint32_t refs;
    uint64_t version;
    char version_str[32];
    /* process */
    unsigned workers; /* resolved: never 0 */
    uint32_t drain_timeout_ms, drain_delay_ms;
    char *access_log; /* NULL: none; "-": stdout; else a path */
    char *admin_address;
    struct sockaddr_storage admin_ss;
    unsigned admin_sslen;
    char *admin_token_file;
    char *admin_token; /* read from admin_token_file at load; NULL: no token */
    /* client-side limits and timeouts (extensions, documented in README) */
    uint32_t client_header_timeout_ms; /* default 10000 */
    uint32_t client_idle_timeout_ms;   /* default 60000 */
    uint32_t max_header_bytes;         /* default 65536 */
    uint32_t max_target_bytes;         /* default 8192 */
    struct xds_listener *listeners;
    uint32_t n_listeners;
    struct xds_route *routes; /* config order */
    uint32_t n_routes;
    struct xds_cluster **clusters; /* shared objects (see struct xds_cluster) */
    uint32_t n_clusters;
    struct xds_rollout *rollouts;
    uint32_t n_rollouts;
    struct xds_vhost_index *vhosts; /* private */
    char *config_json_;             /* xds_snapshot_config_json()'s cache: use that function */
    struct xds_stats_reg *reg;
    struct xds_discovery *discovery; /* config order */
    uint32_t n_discovery;
    struct xds_name_index *cluster_index, *rollout_index; /* private: name lookups */
    /* What the merge of the file with the discovery views dropped, one line each ("routes
     * consul:web: host+path shop.example.com/ already served by static route shop"). */
    char **conflicts;
    uint32_t n_conflicts;
};

/* Loads and validates <path>, building a snapshot with <version>. On any error returns NULL
 * and appends one line per error to <errors> as "FILE: json.path: message\n". <reg> links the
 * shared counters (may be NULL for --check: then no stats entries are linked). "workers": 0
 * resolves to the number of online CPUs. */
struct xds_snapshot *xds_config_load(const char *path, struct xds_stats_reg *reg, uint64_t version,
                                     struct wr_sbuf *errors);

/* Like xds_config_load(), but parses <text> (when not NULL) as if it were the content of <path>
 * (relative paths resolve against its folder). When <text> is NULL the file is read, and on
 * success its text is handed to *text_out (if not NULL; the caller frees it). */
struct xds_snapshot *xds_config_load_ex(const char *path, const char *text, size_t len,
                                        char **text_out, struct xds_stats_reg *reg,
                                        uint64_t version, struct wr_sbuf *errors);

/* ---- building from the file and the discovery views ---- */

/* One provider's view (see include/weir/disc.h for its schema). */
struct xds_view {
    const char *label; /* for error lines and conflict reports: "consul:http://..." */
    uint8_t source;    /* enum xds_source */
    json_t *view;      /* borrowed */
};

/* Built clusters kept between builds (control thread only): a build reuses the cluster object
 * of the previous build whose JSON, source and worker count are the same. */
struct xds_cache;
struct xds_cache *xds_cache_new(void);
void xds_cache_free(struct xds_cache *c); /* NULL is a no-op */
/* Forgets every entry (the next build re-reads CA files and re-validates everything). */
void xds_cache_clear(struct xds_cache *c);

struct xds_build_args {
    const char *path; /* the config file (error lines, base folder of relative paths) */
    const char *text; /* its text; NULL: read <path> */
    size_t len;
    char **text_out; /* when <text> is NULL and the build succeeds: the text read */
    const struct xds_view *views;
    unsigned n_views;
    struct xds_stats_reg *reg; /* NULL: validation only */
    uint64_t version;
    struct xds_cache *cache; /* NULL: build every cluster */
};

/* Builds a snapshot from the file merged with the views (INTERFACES.md §2): view clusters fill
 * templates of the same name or are added; a static cluster with endpoints wins over a
 * discovered one; routes that would serve the same host+path (+headers) as an earlier source's
 * (the file first, then the views in order) and objects whose name is taken are dropped and
 * listed in s->conflicts. Errors as xds_config_load(), view errors named by the view label. */
struct xds_snapshot *xds_config_build(const struct xds_build_args *a, struct wr_sbuf *errors);

/* Sets the green weight of rollout <name> in <s>, which must not be published yet (it is the
 * only write to a snapshot after its build). Returns 0, or WR_EINVAL for an unknown name or a
 * weight over 100. */
int xds_rollout_set_weight(struct xds_snapshot *s, const char *name, uint32_t green_weight);

/* Same, from a JSON text in memory; <name> is used in error messages. */
struct xds_snapshot *xds_config_parse(const char *text, size_t len, const char *name,
                                      struct xds_stats_reg *reg, uint64_t version,
                                      struct wr_sbuf *errors);

/* The GET /config body (secrets redacted, "version" included), rendered on first use: a
 * discovery update that swaps snapshots many times a second does not pay for a rendering
 * nobody asks for. Control thread only. */
const char *xds_snapshot_config_json(struct xds_snapshot *s);

static inline struct xds_snapshot *xds_snapshot_ref(struct xds_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

/* Drops a reference; the last one frees the snapshot (any thread). NULL is a no-op. */
void xds_snapshot_unref(struct xds_snapshot *s);

const struct xds_cluster *xds_cluster_find(const struct xds_snapshot *s, const char *name);
const struct xds_rollout *xds_rollout_find(const struct xds_snapshot *s, const char *name);

/* Request header lookup for route matching: returns true and sets *value when the request has
 * the header named <lname> (lower-case, <len> bytes). Several fields of one name are seen as
 * their comma-joined value by the matcher only if the callback joins them; the default is the
 * first one. */
typedef bool (*xds_header_get_cb)(void *arg, const char *lname, size_t len, struct wr_str *value);

/* Selects the route for a request (INTERFACES.md §2 "Route selection"): <host> is the Host
 * value as received (case and port are handled here), <path> excludes the query. Returns NULL
 * when no route matches (answer 404). Thread-safe, allocation-free. */
const struct xds_route *xds_route_match(const struct xds_snapshot *s, struct wr_str host,
                                        struct wr_str path, xds_header_get_cb get, void *arg);

/* ---- xDS v3 REST-JSON ---------------------------------------------------------------------- */

/* Answers `POST /v3/discovery:<type>` (<type>: "listeners", "routes", "clusters" or
 * "endpoints") with the resources of <s> as Envoy v3 resources (docs/xds.md). <req> is the
 * DiscoveryRequest body, <len> bytes of JSON. Returns an HTTP status:
 *   200  *resp is the DiscoveryResponse JSON (malloc'd; the caller frees it);
 *   304  the request's version_info is current: nothing to send (*resp is NULL);
 *   400  the request is not a DiscoveryRequest of that type; 404 unknown <type>.
 * On 400 and 404 a one-line reason is appended to <err>. Any thread; reads the endpoints'
 * live health flags. */
int xds_v3_discovery(const struct xds_snapshot *s, const char *type, const char *req, size_t len,
                     char **resp, struct wr_sbuf *err);

#endif /* WEIR_XDS_H */
