/* discovery/disc_k8s.h -- the kubernetes provider's parts (disc_k8s*.c); nothing outside
 * discovery/ and its tests includes it. docs/kubernetes.md describes the behaviour.
 *
 *   disc_k8s.c         the provider: watches to run, coalesced view publication, secrets
 *   disc_k8s_config.c  kubeconfig / in-cluster settings (include/weir/disc_kube.h)
 *   disc_k8s_watch.c   list then watch of one kind in one namespace: pages, the event stream,
 *                      resourceVersion, bookmarks, 410 Gone, back-off
 *   disc_k8s_store.c   the object cache: objects trimmed to what the view needs, by kind
 *   disc_k8s_view.c    Services (annotations) -> clusters, routes, rollouts, certificates
 *   disc_k8s_ingress.c Ingress objects -> routes (and the clusters they name)
 *   disc_k8s_lease.c   leader election (coordination.k8s.io Lease) and Ingress status
 *
 * Everything runs on the provider's loop (the control thread).
 */
#ifndef WEIR_DISC_K8S_H
#define WEIR_DISC_K8S_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include <weir/disc_kube.h>
#include <weir/wr.h>

#include "disc_priv.h"

#define K8S_CONTROLLER "weir.io/ingress-controller"

/* ---- kinds and the object cache (disc_k8s_store.c) ---------------------------------------- */

enum k8s_kind {
    K8S_SERVICES = 0,
    K8S_SLICES,    /* discovery.k8s.io/v1 EndpointSlices */
    K8S_INGRESSES, /* networking.k8s.io/v1 */
    K8S_CLASSES,   /* networking.k8s.io/v1 IngressClasses (cluster-scoped) */
    K8S_SECRETS,   /* one watch per referenced Secret */
    K8S_KINDS
};

struct k8s_kind_info {
    const char *name;   /* "services" (the plural, also the resource for RBAC) */
    const char *prefix; /* "/api/v1", "/apis/discovery.k8s.io/v1" */
    bool namespaced;
    /* A new object holding what the view needs of <obj> (a reference handed over), or NULL
     * when the object does not matter at all (an EndpointSlice of no Service). */
    json_t *(*trim)(json_t *obj);
};

extern const struct k8s_kind_info k8s__kinds[K8S_KINDS];

/* "namespace/name" of <obj> (or "name" for cluster-scoped ones) into <buf>; false when the
 * object has no name. */
bool k8s__obj_key(json_t *obj, char *buf, size_t len);

/* metadata.resourceVersion of <obj>, or NULL. */
const char *k8s__obj_rv(json_t *obj);

/* The cache of one kind: "ns/name" -> trimmed object. Sets *changed when it changed in a way
 * the view can see, and adds to <dirty> (may be NULL) the "ns/svc" of the Service whose
 * clusters must be built again. <obj> is handed over (trimmed here). */
void k8s__store_put(json_t *store, enum k8s_kind kind, json_t *obj, json_t *dirty, bool *changed);
void k8s__store_del(json_t *store, enum k8s_kind kind, const char *key, json_t *dirty,
                    bool *changed);

/* The secrets as the view needs them: {"type", "cert_pem", "key_pem"} when the Secret is a
 * valid kubernetes.io/tls Secret whose key matches its certificate, else {"error": "..."}. */
json_t *k8s__trim_secret(json_t *obj);

/* ---- the view (disc_k8s_view.c, disc_k8s_ingress.c) --------------------------------------- */

struct k8s_view_in {
    json_t *const *stores;     /* [K8S_KINDS], "ns/name" -> trimmed object */
    const char *ingress_class; /* the configured class name */
    json_t *secrets_known;     /* "ns/name" -> true: Secrets whose watch has listed at least
                                * once, so their absence is a fact (NULL: none) */
    /* Clusters built by earlier builds, reused while their Service and its EndpointSlices did
     * not change: "ns/svc" -> {"<port>\x01<hc path>": {"c": cluster, "p": problem}}. The
     * caller drops the entries of the Services k8s__store_put() marked dirty. NULL: none. */
    json_t *cluster_cache;
};

struct k8s_view_out {
    json_t *view;      /* {"clusters", "routes", "rollouts", "certificates"} */
    json_t *secrets;   /* "ns/name" -> true: the Secrets the view wants */
    json_t *ingresses; /* "ns/name" -> true: the Ingresses weir serves (for their status) */
    json_t *problems;  /* "line" -> true: one line per object (or part) skipped */
};

/* Builds the view from the cache. Pure: no I/O, no logging. The caller disposes <out>. */
void k8s__view_build(const struct k8s_view_in *in, struct k8s_view_out *out);
void k8s__view_dispose(struct k8s_view_out *out);

/* The builder's state shared between disc_k8s_view.c and disc_k8s_ingress.c. */
struct k8s_build {
    const struct k8s_view_in *in;
    struct k8s_view_out *out;
    json_t *slices_by_svc; /* "ns/svc" -> [slices] */
    json_t *clusters;      /* name -> cluster object */
    json_t *certs;         /* "ns/secret" -> certificate entry (hosts merged) */
    json_t *routes, *rollouts;
};

void k8s__problem(struct k8s_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ensures the cluster of port <want> (a name or a number; NULL: the Service's own choice, see
 * the doc) of Service <ns>/<svc>, and returns its name (borrowed from b->clusters), or NULL
 * after a problem line. <hc_path>: a health check path when the Service has none of its own. */
const char *k8s__cluster(struct k8s_build *b, const char *ns, const char *svc, const char *want,
                         const char *hc_path, const char *who);
/* Adds the certificate of Secret <ns>/<name> for <hosts> (merged with other users of it). */
void k8s__cert(struct k8s_build *b, const char *ns, const char *name, json_t *hosts,
               const char *who);
/* Host names as xds/ accepts them: "shop.example.com" or "*.example.com" (lower-cased in
 * place; a trailing dot dropped). */
bool k8s__host_ok(char *host);
bool k8s__path_ok(const char *path);
/* The Ingress part of the view. */
void k8s__ingresses(struct k8s_build *b);

/* ---- watches (disc_k8s_watch.c) ----------------------------------------------------------- */

struct k8s;

enum k8s_watch_state {
    K8S_W_IDLE = 0,
    K8S_W_LISTING,
    K8S_W_WATCHING,
    K8S_W_WAITING, /* back-off before the next attempt */
};

/* One list+watch of one kind: in one namespace or all (ns NULL), or of one object (name). */
struct k8s_watch {
    struct k8s *k;
    enum k8s_kind kind;
    char *ns;   /* NULL: every namespace (or a cluster-scoped kind) */
    char *name; /* fieldSelector=metadata.name=<name>; NULL: all */
    char *rv;   /* where the next watch starts (NULL: list first) */
    enum k8s_watch_state state;
    bool synced; /* a list completed at least once */
    bool tried;  /* the first list was answered, or failed */
    bool used;   /* secrets: still referenced by the last view */
    bool relist; /* the next attempt lists first */
    struct disc_http_req *req;
    uv_timer_t timer;
    bool timer_open;
    uint32_t backoff_ms;
    struct wr_sbuf line; /* a part of the event stream not yet ending in '\n' */
    json_t *page_keys;   /* the keys a list (all of its pages) returned so far */
    char *cont;          /* the list's continue token */
    uint32_t events;     /* events of the current watch (for tests and logs) */
    uint64_t started_ns; /* when the current watch started */
    int stream_error;    /* enum disc_reason + 1 of an event that ended the stream; 0: none */
    struct k8s_watch *next;
};

/* What one watch event (or a stream chunk) means for the watch. */
enum k8s_ev {
    K8S_EV_OK = 0, /* applied (or a bookmark) */
    K8S_EV_GONE,   /* 410: the resourceVersion is too old, list again */
    K8S_EV_ERROR,  /* an ERROR event or a line that is not an event */
};

/* Applies the event stream bytes <data> (any split) to the watch's cache. Stops at the first
 * line that is not OK and returns its verdict; *changed is set when the cache changed. */
enum k8s_ev k8s__watch_feed(struct k8s_watch *w, const char *data, size_t len, bool *changed);
/* Applies one list page (the body of a list answer). Returns 0 when the list is complete, 1
 * when another page must be fetched (w->cont), -1 on an answer that is not a list. */
int k8s__watch_page(struct k8s_watch *w, const char *body, size_t len, bool *changed);

struct k8s_watch *k8s__watch_new(struct k8s *k, enum k8s_kind kind, const char *ns,
                                 const char *name);
void k8s__watch_start(struct k8s_watch *w);
/* Cancels the request and closes the timer; frees <w> once closed (the loop must run). */
void k8s__watch_close(struct k8s_watch *w);
/* The URL path (and query) of the list or watch request of <w>, for tests and the bench. */
char *k8s__watch_url(const struct k8s_watch *w, bool watch, uint32_t timeout_s);

/* ---- leader election and Ingress status (disc_k8s_lease.c) -------------------------------- */

struct k8s_lease;
struct k8s_lease *k8s__lease_new(struct k8s *k);
void k8s__lease_start(struct k8s_lease *l);
/* The Ingresses weir serves (k->ingresses) or the address to publish may have changed: writes
 * the status that differs, if this replica leads. */
void k8s__lease_sync(struct k8s_lease *l);
void k8s__lease_close(struct k8s_lease *l);
bool k8s__lease_leading(const struct k8s_lease *l);

/* ---- the provider (disc_k8s.c) ------------------------------------------------------------ */

struct k8s {
    struct disc_provider *p;
    struct disc_kube kube;
    struct disc_http *http;
    json_t *stores[K8S_KINDS];
    struct k8s_watch *watches; /* every watch, secrets and the publish_service one included */
    uv_timer_t publish_timer, boot_timer;
    bool timer_open, dirty, published, closing;
    uint32_t watch_timeout_s; /* timeoutSeconds of watches (minimum; randomised up to 2x) */
    json_t *last_view;        /* the last view handed over */
    json_t *last_problems;    /* the problems logged last ("line" -> true) */
    json_t *ingresses;        /* the Ingresses of the last view */
    json_t *dirty_svcs;       /* "ns/svc" -> true: Services whose clusters changed */
    json_t *cluster_cache;    /* see struct k8s_view_in */
    struct k8s_lease *lease;
    unsigned open_handles;
    uint64_t rng;
};

/* The cache changed: schedules a view build (coalesced). */
void k8s__changed(struct k8s *k);
/* The API server answered (a list, events, a bookmark, a watch ending on time): the view is
 * current, so the provider is not stale (stale_after_ms) even when nothing changes for long. */
void k8s__alive(struct k8s *k);
/* A watch ended in an error of <reason> (logged and counted). */
void k8s__watch_error(struct k8s_watch *w, enum disc_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Starts an HTTP request to the API server with the current token. NULL after an error. */
struct disc_http_req *k8s__request(struct k8s *k, struct disc_http_opts *o, const char *path);
/* A handle of the provider was closed (counts down to disc__closed()). */
void k8s__handle_closed(struct k8s *k);

#endif /* WEIR_DISC_K8S_H */
