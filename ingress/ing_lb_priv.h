/* ingress/ing_lb_priv.h -- what the ing_lb*.c files share: the per-worker balancer state and
 * the candidate rules of include/weir/lb.h.
 *
 * Every policy picks in two steps. The fast step draws as if all endpoints were healthy and
 * accepts the draw when it is healthy and not excluded: such an endpoint is a candidate in
 * every mode, so no scan is needed. Only when the draw is rejected does the policy pay the
 * O(n) scan (ing__lb_scan()) that decides panic mode and whether the exclude set can be
 * honoured, then looks at its draw again under the real rules before falling back. Looking
 * again is what keeps the result exact: a weighted draw kept when it is a candidate and
 * redrawn among the candidates otherwise is distributed exactly by the candidates' weights.
 *
 * The scan copies each flags word once into the worker's own lb->flags, and everything after
 * it reads the copy: health/ may flip a flag at any time, and a pick that decided on one view
 * and walked on another could find no candidate in a cluster that has some.
 */
#ifndef WEIR_ING_LB_PRIV_H
#define WEIR_ING_LB_PRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <weir/lb.h>
#include <weir/xds.h>

/* One point of the hash ring: the high 32 bits of a point hash and the endpoint it leads to. */
struct ing__lb_point {
    uint32_t hash;
    uint32_t ep;
};

struct ing_lb {
    uint8_t policy;     /* enum xds_lb_policy */
    bool equal_weights; /* draws can skip the prefix sums */
    uint32_t n_eps;
    uint64_t total;             /* sum of the weights */
    uint32_t *flags;            /* the flags as the last ing__lb_scan() read them */
    uint64_t *cum;              /* random, least_request: cum[i] = weight[0] + ... + weight[i] */
    int64_t *cur;               /* round_robin: nginx's current_weight per endpoint */
    struct ing__lb_point *ring; /* ring_hash: sorted by hash, then by endpoint */
    uint32_t n_ring;
    uint32_t *bucket;   /* bucket[j]: first point whose hash >> ring_shift is >= j */
    uint8_t ring_shift; /* 32 - log2(number of buckets) */
};

/* The candidate set of one pick, as decided by ing__lb_scan(). */
struct ing__lb_set {
    uint32_t bad;     /* flags that rule an endpoint out: all of them, or only DRAINING (panic) */
    bool use_exclude; /* ctx->exclude leaves at least one candidate, so it is honoured */
};

static inline uint32_t ing__lb_flags(const struct xds_endpoint *ep)
{
    /* Endpoints without a state entry (unit tests) are healthy. An endpoint its source says is
     * draining (a terminating Kubernetes endpoint) takes no new requests, like a removed one. */
    uint32_t f = ep->st != NULL ? atomic_load_explicit(&ep->st->flags, memory_order_relaxed) : 0;
    return ep->draining ? f | XDS_EPF_DRAINING : f;
}

/* Weights are >= 1 once validated; a 0 would make an endpoint unreachable by some policies and
 * not by others, so it counts as 1 everywhere. */
static inline uint32_t ing__lb_weight(const struct xds_endpoint *ep)
{
    return ep->weight != 0 ? ep->weight : 1;
}

static inline bool ing__lb_excluded(const struct ing_lb_ctx *ctx, uint32_t i)
{
    return ctx->exclude != NULL && ctx->exclude[i] != 0;
}

/* True when endpoint <i> is a candidate whatever the scan would decide: healthy, not excluded.
 * Clusters with priority levels always scan (the level that serves depends on all of them). */
static inline bool ing__lb_sure(const struct xds_cluster *c, const struct ing_lb_ctx *ctx,
                                uint32_t i)
{
    return !c->has_priorities && ing__lb_flags(&c->eps[i]) == 0 && !ing__lb_excluded(ctx, i);
}

/* True when endpoint <i> belongs to the candidate set <s> of the last scan. */
static inline bool ing__lb_is_cand(const struct ing_lb *lb, const struct ing__lb_set *s,
                                   const struct ing_lb_ctx *ctx, uint32_t i)
{
    return (lb->flags[i] & s->bad) == 0 && !(s->use_exclude && ing__lb_excluded(ctx, i));
}

/* Uniform integer in [0, n) from a 64-bit random word (multiply-high: no division, and it uses
 * the high bits, the better ones of xorshift). */
static inline uint64_t ing__lb_below(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/* ing_lb.c: decides the candidate set of a pick from the endpoints' flags (copied into
 * lb->flags), panic_percent and ctx->exclude. Returns false when there is no candidate at all
 * (the pick answers -1). O(n). */
bool ing__lb_scan(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx,
                  struct ing__lb_set *s);

/* ing_lb_random.c: prefix sums for ing__lb_draw() (random and least_request). */
void ing__lb_weights_init(struct ing_lb *lb, const struct xds_cluster *c);
/* Draws an endpoint index by weight, ignoring health. O(log n), O(1) for equal weights. */
uint32_t ing__lb_draw(const struct ing_lb *lb, const struct ing_lb_ctx *ctx);
/* Draws a candidate of <s> (not empty) by weight. O(n). */
uint32_t ing__lb_draw_cand(const struct ing_lb *lb, const struct xds_cluster *c,
                           const struct ing_lb_ctx *ctx, const struct ing__lb_set *s);
int ing__lb_random_pick(struct ing_lb *lb, const struct xds_cluster *c,
                        const struct ing_lb_ctx *ctx);

/* ing_lb_rr.c */
void ing__lb_rr_init(struct ing_lb *lb, const struct xds_cluster *c);
int ing__lb_rr_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx);

/* ing_lb_lr.c */
int ing__lb_lr_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx);

/* ing_lb_hash.c */
void ing__lb_ring_init(struct ing_lb *lb, const struct xds_cluster *c);
int ing__lb_ring_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx);

#endif /* WEIR_ING_LB_PRIV_H */
