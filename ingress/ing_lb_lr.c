/* ingress/ing_lb_lr.c -- least_request: the power of two choices (Mitzenmacher), as Envoy does
 * it. Two endpoints are drawn by weight and the one with fewer requests in flight on this
 * worker wins; O(1) or O(log n), and without the herd a global minimum causes when every
 * worker sees the same idle endpoint.
 *
 * Requests in flight are compared per unit of weight (active / weight, cross-multiplied), as
 * HAProxy's weighted leastconn keys its servers: an endpoint of weight 3 holding 3 requests is
 * as busy as one of weight 1 holding 1. A tie keeps the first draw, so when all endpoints carry
 * the same load per unit of weight, idle ones included, the picks follow the weights exactly.
 */
#include <weir/lb.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "ing_lb_priv.h"

static uint64_t active(const struct xds_cluster *c, const struct ing_lb_ctx *ctx, uint32_t i)
{
    const struct xds_ep_state *st = c->eps[i].st;

    return st != NULL ? atomic_load_explicit(&st->w[ctx->worker].active, memory_order_relaxed) : 0;
}

/* Returns whichever of <a> and <b> carries fewer requests per unit of weight, <a> on a tie. */
static uint32_t lighter(const struct xds_cluster *c, const struct ing_lb_ctx *ctx, uint32_t a,
                        uint32_t b)
{
    if (a == b)
        return a;
    unsigned __int128 load_a = (unsigned __int128)active(c, ctx, a) * ing__lb_weight(&c->eps[b]);
    unsigned __int128 load_b = (unsigned __int128)active(c, ctx, b) * ing__lb_weight(&c->eps[a]);

    return load_b < load_a ? b : a;
}

int ing__lb_lr_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx)
{
    uint32_t a = ing__lb_draw(lb, ctx), b = ing__lb_draw(lb, ctx);
    struct ing__lb_set s;

    if (wr_likely(ing__lb_sure(c, ctx, a) && ing__lb_sure(c, ctx, b)))
        return (int)lighter(c, ctx, a, b);
    if (!ing__lb_scan(lb, c, ctx, &s))
        return -1;

    /* Each draw is kept if it is a candidate and redrawn among the candidates otherwise, so
     * both stay weighted draws over the candidates (see ing_lb_priv.h). */
    if (!ing__lb_is_cand(lb, &s, ctx, a))
        a = ing__lb_draw_cand(lb, c, ctx, &s);
    if (!ing__lb_is_cand(lb, &s, ctx, b))
        b = ing__lb_draw_cand(lb, c, ctx, &s);
    return (int)lighter(c, ctx, a, b);
}
