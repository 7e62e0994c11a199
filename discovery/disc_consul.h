/* discovery/disc_consul.h -- what the two halves of the Consul provider share: disc_consul.c
 * (the blocking-query watches and their life cycle) and disc_consul_view.c (reading Consul's
 * answers and tags, and writing the view). Nothing outside these two files includes it.
 */
#ifndef WEIR_DISC_CONSUL_H
#define WEIR_DISC_CONSUL_H

#include "disc_priv.h"

/* One instance that passes its checks, as it goes into the view. */
struct consul_ep {
    char *key;     /* "node/service-id": the instance's identity in Consul */
    char *address; /* "10.0.0.1:8080" or "[fd00::1]:8080" */
    uint32_t weight;
};

/* What a service's weir.* tags ask for (INTERFACES.md §4b). */
struct consul_tags {
    bool expose;  /* weir.expose=true */
    char **hosts; /* weir.host (lower-case, may be "*.suffix"); none: any host */
    uint32_t n_hosts;
    char *path;        /* weir.path; NULL: "/" */
    char *health_path; /* weir.health-path; NULL: no active check */
};

/* A KV rollout: the routes of the exposed service <service> split between <blue> and <green>. */
struct consul_rollout {
    char *service;
    char *blue, *green;
    uint32_t green_weight;
    int sticky; /* -1: not said (the config's default), else 0/1 */
};

enum consul_watch_kind { CW_CATALOG = 0, CW_KV, CW_HEALTH };

enum consul_watch_state {
    CW_IDLE = 0, /* nothing scheduled (not started, or being stopped) */
    CW_WAITING,  /* its timer will start the next query */
    CW_INFLIGHT, /* a query is out */
    CW_PARKED,   /* Consul is unreachable: waits for a probe to succeed */
    CW_QUEUED,   /* a query that does not block waits for one of MAX_FETCHES places */
};

/* One blocking query kept going: the catalog, the rollouts prefix, or one service's health. */
struct consul_watch {
    struct consul *c;
    uint8_t kind;   /* enum consul_watch_kind */
    uint8_t state;  /* enum consul_watch_state */
    bool answered;  /* one answer was understood */
    bool attempted; /* the first query ended, whatever its outcome */
    bool failing;   /* the last query failed */
    struct disc_http_req *req;
    uv_timer_t timer;
    struct wr_list link; /* in c->parked while CW_PARKED, in c->queued while CW_QUEUED */
    bool fetching;       /* the query out does not block (it holds one of MAX_FETCHES) */
    uint64_t index;      /* the index of the next query (0: a query that does not block) */
    uint64_t sent_index; /* the index the query out carries */
    uint64_t hdr_index;  /* X-Consul-Index of the answer being received */
    bool hdr_has_index;
    bool hdr_filtered; /* X-Consul-Results-Filtered-By-ACLs: true */
    uint64_t started_ms;
    uint32_t backoff_ms; /* this watch's own back-off after an error of its own */
    uint32_t early;      /* answers in a row that came back at once with an unchanged index */
};

/* A service weir routes to (exposed) or needs (the blue or green of a KV rollout). */
struct consul_svc {
    char *name;
    struct consul_svc *next; /* hash chain */
    bool exposed;            /* weir.expose=true in the catalog and a usable name and tags */
    bool in_rollout;         /* the blue or green of a rollout of an exposed service */
    struct consul_tags tags;
    char *problem;    /* the last tag problem logged (NULL: none) */
    char *ep_problem; /* the last instance problem logged */
    struct consul_watch w;
    struct consul_ep *eps;
    uint32_t n_eps;
    bool shown; /* consul__render(): its cluster is in the view */
    /* The parts of the view rendered for this service, reused while it does not change
     * (never modified once made: views share them) */
    json_t *cluster_json;
    json_t *routes_json; /* array */
    bool routes_rollout; /* routes_json was made for a rollout */
    uint8_t mark;        /* reconcile(): M_EXPOSE and/or M_COLOUR this time (0: not wanted) */
};

struct consul {
    struct disc_provider *p;
    struct disc_http *http;
    char *base;     /* the address without a trailing '/' */
    char *dc_param; /* "&dc=..." or "" */
    uint32_t wait_ms;
    /* the ACL token, re-read when its file changes (a 1 s stat) */
    char *token;
    bool token_ok;

    struct stat_sig {
        long long ino, size, mtime_ns;
    } token_sig;

    char *token_problem;
    uv_timer_t token_timer;
    /* watches */
    struct consul_watch catalog, kv;
    json_t *catalog_json;            /* the last catalog answer: {name: [tags]} */
    struct consul_rollout *rollouts; /* sorted by service */
    uint32_t n_rollouts;
    char *kv_problems; /* the rollout problems last logged, one per line */
    struct consul_svc **buckets;
    uint32_t n_buckets, n_svcs;
    /* outage handling: see disc_consul.c */
    bool agent_down;
    uint64_t down_since_ms; /* when agent_down was last set */
    struct wr_list parked;
    struct wr_list queued; /* watches waiting to send a query that does not block */
    unsigned fetching;     /* such queries out */
    uv_timer_t probe_timer;
    /* publishing */
    bool started;
    bool warned_filtered; /* the ACL filter warning was logged */
    bool synced;          /* the first complete view went out */
    bool dirty;
    json_t *last_view; /* the last view published (shared with its owner, never modified) */
    uv_timer_t flush;
    unsigned open_handles;
    bool closing;
};

/* ---- disc_consul_view.c ---------------------------------------------------------------- */

/* Consul service names weir accepts: letters, digits, '-', '_' and '.', 1 to 255 bytes (they
 * go into URLs and cluster names unescaped). */
bool consul__name_ok(const char *name);

/* Reads the weir.* tags of a service from its catalog tag array into <t> (disposed first).
 * Returns true, or false with *problem (allocated) naming the first bad tag: the service is
 * then not routed. */
bool consul__parse_tags(const json_t *tags, struct consul_tags *t, char **problem);
void consul__tags_dispose(struct consul_tags *t);
bool consul__tags_equal(const struct consul_tags *a, const struct consul_tags *b);

/* Parses a /v1/health/service answer into passing endpoints, sorted by key, one per address.
 * Instances that cannot be used (no IP address, no port) are left out and described in
 * *skipped (allocated, one per line; NULL when none). Returns 0, or -1 with *err (allocated). */
int consul__parse_health(const char *body, size_t len, struct consul_ep **eps, uint32_t *n,
                         char **skipped, char **err);
void consul__eps_free(struct consul_ep *eps, uint32_t n);
bool consul__eps_equal(const struct consul_ep *a, uint32_t na, const struct consul_ep *b,
                       uint32_t nb);

/* Parses a /v1/kv/weir/rollouts/?recurse answer (<body> NULL: a 404, no key) into rollouts
 * sorted by service. Bad keys are left out and described in *problems (allocated, one per
 * line). Returns 0, or -1 with *err when the answer itself is not understood. */
int consul__parse_rollouts(const char *body, size_t len, struct consul_rollout **out, uint32_t *n,
                           char **problems, char **err);
void consul__rollouts_free(struct consul_rollout *r, uint32_t n);
bool consul__rollouts_equal(const struct consul_rollout *a, uint32_t na,
                            const struct consul_rollout *b, uint32_t nb);
const struct consul_rollout *consul__rollout_find(const struct consul *c, const char *service);

/* The index for the next blocking query after an answer carrying <got>, following Consul's
 * rules for blocking queries: an index that went backwards restarts from 0 (a query that does
 * not block), and an index below 1 is used as 1. */
uint64_t consul__next_index(uint64_t prev, uint64_t got);

/* The whole view from the provider's state (a new reference). Unchanged services bring the
 * same JSON objects as in the previous view. */
json_t *consul__render(struct consul *c);
/* True when <a> and <b>, both from consul__render(), are the same view: the same objects in
 * the same order (and equal rollouts). Exact as long as <b> is still referenced, since the
 * parts are never modified and an object replaced by a new one is a change. */
bool consul__same_view(json_t *a, json_t *b);
/* Drops the rendered parts of <s> that its change made stale. */
void consul__svc_forget(struct consul_svc *s, bool cluster, bool routes);

/* Services by name (disc_consul_view.c). */
struct consul_svc *consul__svc_find(const struct consul *c, const char *name);
void consul__svc_insert(struct consul *c, struct consul_svc *s);
void consul__svc_unlink(struct consul *c, struct consul_svc *s);

#endif /* WEIR_DISC_CONSUL_H */
