/* include/weir/disc.h -- discovery providers (discovery/).
 *
 * A provider watches one source (a services file, DNS SRV records, Consul, the Kubernetes API)
 * and reports what it sees as a *view*: a JSON object in the config file's own schema, that
 * xds/ merges with the static file into the next snapshot (xds_config_build()). Providers run
 * on the control thread's libuv loop and never block it (libcurl multi and c-ares are driven by
 * uv_poll/uv_timer handles on that loop).
 *
 * The view (owned by the callee once handed over; build it with jansson):
 *
 *   { "clusters":     [ cluster objects as in the file, "endpoints" included ],
 *     "routes":       [ route objects ],
 *     "rollouts":     [ rollout objects ],
 *     "certificates": [ { "hosts": ["shop.example.com"], "cert_pem": "...", "key_pem": "..." } ] }
 *
 * Every key is optional. Names are qualified by the provider as INTERFACES.md §2 says
 * (`consul:web`, `ns/svc:port`, the configured `cluster` for DNS SRV; route and rollout names
 * likewise), so two providers never collide by name. In a view only, an endpoint object may
 * carry "health": "healthy" | "draining" (the source's own verdict, e.g. an EndpointSlice
 * condition); "draining" endpoints get no new requests, like removed ones.
 *
 * A view and everything in it is never changed after it is handed over: a provider may hand the
 * same cluster objects over again in its next view for what did not change (json_incref), and
 * the build then reuses the built cluster by identity, without even rendering it.
 *
 * Failure rule: a provider that cannot reach its source keeps its last good view (it simply
 * does not call back) and retries with capped exponential back-off and jitter.
 *
 * Thread rules: everything here runs on the loop given to disc_provider_new().
 */
#ifndef WEIR_DISC_H
#define WEIR_DISC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include <weir/wr.h>
#include <weir/xds.h>

struct disc_provider; /* opaque */

/* Called with a provider's complete new view (a new reference, handed over). */
typedef void (*disc_view_cb)(void *arg, struct disc_provider *p, json_t *view);

/* Error reasons counted per provider (weir_discovery_errors_total{provider,reason}). */
enum disc_reason {
    DISC_ERR_CONNECT = 0, /* the source could not be reached */
    DISC_ERR_HTTP,        /* an HTTP status that is not success */
    DISC_ERR_PARSE,       /* an answer that could not be understood */
    DISC_ERR_TIMEOUT,     /* no answer in time */
    DISC_ERR_AUTH,        /* 401/403, or a token that cannot be read */
    DISC_ERR_GONE,        /* Kubernetes 410 Gone: the watch restarts with a new list */
    DISC_ERR_DNS,         /* a DNS failure (SERVFAIL, NXDOMAIN, no resolver answered) */
    DISC_ERR_COUNT
};

const char *disc_reason_name(enum disc_reason r);

/* Counters and freshness of one provider, read by the admin API on the control thread. */
struct disc_status {
    const char *label;    /* "file:services.json", "consul:http://...", ... */
    const char *type;     /* "file", "dns_srv", "consul", "kubernetes" */
    double last_update_s; /* unix time of the last view delivered (0: none yet) */
    uint64_t updates;     /* views delivered */
    uint64_t errors[DISC_ERR_COUNT];
    uint64_t restarts; /* watches/queries started again after an error */
    bool stale;        /* older than its stale_after_ms (false when that is 0) */
};

/* Creates provider <index> of the config (its settings are copied; <base_dir> resolves relative
 * paths). Returns NULL after logging when the settings cannot be used (an unreadable token file
 * is NOT such a case: it is retried like any other source error). Nothing runs before
 * disc_provider_start(). */
struct disc_provider *disc_provider_new(uv_loop_t *loop, const struct xds_discovery *cfg,
                                        unsigned index, const char *base_dir, disc_view_cb cb,
                                        void *arg);
int disc_provider_start(struct disc_provider *p);
/* Stops every request and timer and frees the provider once its handles are closed (the loop
 * must run for that). No callback is made after this call. */
void disc_provider_close(struct disc_provider *p);

unsigned disc_provider_index(const struct disc_provider *p);
/* A provider kept across a reload whose entry moved in the "discovery" array (one was inserted
 * or removed before it) takes its new index: the index is its identity in callbacks and logs. */
void disc_provider_set_index(struct disc_provider *p, unsigned index);
/* stale_after_ms only decides what /ready says: a reload changes it without a restart. */
void disc_provider_set_stale_after(struct disc_provider *p, uint32_t ms);
/* Fills <st> (the strings stay owned by the provider). */
void disc_provider_status(const struct disc_provider *p, struct disc_status *st);

#endif /* WEIR_DISC_H */
