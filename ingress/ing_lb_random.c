/* ingress/ing_lb_random.c -- weighted random, and the weighted draws least_request builds on.
 *
 * A draw maps a random word onto the prefix sums of the weights (binary search, O(log n));
 * clusters whose endpoints all weigh the same, the common case, skip the search.
 */
#include <stdlib.h>

#include <weir/lb.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "ing_lb_priv.h"

void ing__lb_weights_init(struct ing_lb *lb, const struct xds_cluster *c)
{
    uint64_t sum = 0;

    lb->cum = wr_xmalloc(c->n_eps * sizeof(*lb->cum));
    lb->equal_weights = true;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        uint32_t w = ing__lb_weight(&c->eps[i]);

        sum += w;
        lb->cum[i] = sum;
        if (w != ing__lb_weight(&c->eps[0]))
            lb->equal_weights = false;
    }
    lb->total = sum;
}

/* Returns the index of an endpoint drawn with probability weight / total, health ignored. */
uint32_t ing__lb_draw(const struct ing_lb *lb, const struct ing_lb_ctx *ctx)
{
    uint64_t r = wr_rand_next(ctx->rng);

    if (lb->equal_weights)
        return (uint32_t)ing__lb_below(r, lb->n_eps);

    /* The first endpoint whose prefix sum exceeds x owns x. */
    uint64_t x = ing__lb_below(r, lb->total);
    uint32_t lo = 0, hi = lb->n_eps - 1;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (lb->cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Draws among the candidates of <s> by weight: one pass to sum their weights, one to find
 * the drawn one. Both read the scan's copy of the flags, so they agree. */
uint32_t ing__lb_draw_cand(const struct ing_lb *lb, const struct xds_cluster *c,
                           const struct ing_lb_ctx *ctx, const struct ing__lb_set *s)
{
    uint64_t sum = 0;
    uint32_t last = 0;

    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (ing__lb_is_cand(lb, s, ctx, i))
            sum += ing__lb_weight(&c->eps[i]);
    }

    uint64_t x = ing__lb_below(wr_rand_next(ctx->rng), sum);

    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (!ing__lb_is_cand(lb, s, ctx, i))
            continue;
        uint32_t w = ing__lb_weight(&c->eps[i]);

        if (x < w)
            return i;
        x -= w;
        last = i;
    }
    return last; /* not reached: x < sum */
}

/* Weighted random among the candidates: a draw over all endpoints is kept when it is a
 * candidate, otherwise (after the scan) redrawn among the candidates only, which makes the
 * result exactly proportional to the candidates' weights (see ing_lb_priv.h). */
int ing__lb_random_pick(struct ing_lb *lb, const struct xds_cluster *c,
                        const struct ing_lb_ctx *ctx)
{
    uint32_t i = ing__lb_draw(lb, ctx);
    struct ing__lb_set s;

    if (wr_likely(ing__lb_sure(c, ctx, i)))
        return (int)i;
    if (!ing__lb_scan(lb, c, ctx, &s))
        return -1;
    if (ing__lb_is_cand(lb, &s, ctx, i))
        return (int)i;
    return (int)ing__lb_draw_cand(lb, c, ctx, &s);
}
