/* include/weir/lb.h -- load-balancing policies (ingress/ing_lb*.c, prefix ing_lb_).
 *
 * One struct ing_lb per (worker, cluster, snapshot): built lazily by the worker the first time
 * it picks from a cluster of a snapshot, used only by that worker (no locks, no atomics beyond
 * relaxed reads of the shared endpoint state), freed when the worker retires the snapshot.
 */
#ifndef WEIR_LB_H
#define WEIR_LB_H

#include <stdbool.h>
#include <stdint.h>

#include <weir/wr.h>
#include <weir/xds.h>

struct ing_lb;

/* What a pick may use from the request. */
struct ing_lb_ctx {
    unsigned worker;        /* index of the calling worker (for xds_ep_state.w[]) */
    uint64_t *rng;          /* the worker's PRNG state (wr_rand_next) */
    uint64_t hash;          /* ring_hash: the request's key hash (ing_lb_hash_key()) */
    bool has_hash;          /* false: ring_hash falls back to a random pick */
    const uint8_t *exclude; /* NULL, or n_eps flags: endpoints not to pick (already tried) */
};

/* Builds the per-worker state for <c> (ring_hash builds its ring here). Never NULL. */
struct ing_lb *ing_lb_new(const struct xds_cluster *c);
void ing_lb_free(struct ing_lb *lb); /* NULL is a no-op */

/* Picks an endpoint of <c>: returns its index in c->eps, or -1 when the cluster has none to
 * offer (answer 503). Only endpoints whose state flags are 0 are candidates, unless fewer than
 * c->panic_percent % of the endpoints are healthy: then all endpoints not draining are (panic
 * mode). Endpoints flagged in ctx->exclude are skipped while another candidate exists. */
int ing_lb_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx);

/* Hash of a ring_hash key (header value, cookie value or client address bytes). */
uint64_t ing_lb_hash_key(const void *data, size_t len);

#endif /* WEIR_LB_H */
