/* ingress/ing_lb.c -- load balancing: policy dispatch and the candidate rules shared by all
 * policies (health flags, panic mode, the retry exclude set). The policies themselves live in
 * ing_lb_rr.c, ing_lb_lr.c, ing_lb_hash.c and ing_lb_random.c.
 */
#include <stdlib.h>

#include <weir/lb.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "ing_lb_priv.h"

/* Seed of ing_lb_hash_key(). Fixed, so that every worker, every restart and every weir
 * instance in front of the same endpoints maps a key to the same endpoint. */
#define ING_LB_KEY_SEED 0x6c62686173686b79ull

/* Builds the per-worker state for <c>. Called by the worker that will use it; never NULL
 * (aborts on OOM: the sizes come from the validated config, not from a peer). */
struct ing_lb *ing_lb_new(const struct xds_cluster *c)
{
    struct ing_lb *lb = wr_xcalloc(1, sizeof(*lb));

    lb->policy = c->lb_policy;
    lb->n_eps = c->n_eps;
    if (c->n_eps == 0)
        return lb;
    lb->flags = wr_xcalloc(c->n_eps, sizeof(*lb->flags));
    switch (lb->policy) {
    case XDS_LB_LEAST_REQUEST:
    case XDS_LB_RANDOM:
        ing__lb_weights_init(lb, c);
        break;
    case XDS_LB_RING_HASH:
        ing__lb_ring_init(lb, c);
        break;
    default:
        lb->policy = XDS_LB_ROUND_ROBIN;
        ing__lb_rr_init(lb, c);
        break;
    }
    return lb;
}

void ing_lb_free(struct ing_lb *lb)
{
    if (lb == NULL)
        return;
    free(lb->flags);
    free(lb->cum);
    free(lb->cur);
    free(lb->ring);
    free(lb->bucket);
    free(lb);
}

/* Picks an endpoint of <c> (see lb.h). Worker thread only; no allocation. */
int ing_lb_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx)
{
    if (c->n_eps == 0)
        return -1;
    switch (lb->policy) {
    case XDS_LB_LEAST_REQUEST:
        return ing__lb_lr_pick(lb, c, ctx);
    case XDS_LB_RING_HASH:
        return ing__lb_ring_pick(lb, c, ctx);
    case XDS_LB_RANDOM:
        return ing__lb_random_pick(lb, c, ctx);
    default:
        return ing__lb_rr_pick(lb, c, ctx);
    }
}

uint64_t ing_lb_hash_key(const void *data, size_t len)
{
    return wr_hash64(data, len, ING_LB_KEY_SEED);
}

/* The rules of lb.h, in one pass over the flags. Panic mode compares the healthy endpoints with
 * those not draining, not with all of them: draining endpoints are on their way out and are
 * not part of the capacity the threshold protects, so 2 healthy + 1 failing + 3 draining
 * endpoints (a rolling update) must not send traffic to the failing one. Envoy leaves its
 * excluded hosts out of the denominator for the same reason (arch_overview/upstream/
 * load_balancing/excluded). A panic_percent of 0 disables panic mode. */
/* Priority levels (DNS SRV priorities, endpoint "priority"): the lowest level that has a
 * healthy endpoint serves alone; when no level has one, the lowest level that has an endpoint
 * not draining does (and panic mode applies within it). The other levels' endpoints are ruled
 * out in the flags copy as if they were draining. */
static void scan_levels(struct ing_lb *lb, const struct xds_cluster *c)
{
    uint32_t best_healthy = UINT32_MAX, best_serving = UINT32_MAX;

    for (uint32_t i = 0; i < c->n_eps; i++) {
        uint32_t f = lb->flags[i] = ing__lb_flags(&c->eps[i]);
        uint32_t p = c->eps[i].priority;
        if (f == 0 && p < best_healthy)
            best_healthy = p;
        if (!(f & XDS_EPF_DRAINING) && p < best_serving)
            best_serving = p;
    }
    uint32_t level = best_healthy != UINT32_MAX ? best_healthy : best_serving;
    for (uint32_t i = 0; i < c->n_eps; i++)
        if (c->eps[i].priority != level)
            lb->flags[i] |= XDS_EPF_DRAINING;
}

bool ing__lb_scan(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx,
                  struct ing__lb_set *s)
{
    uint32_t healthy = 0, healthy_untried = 0, serving = 0, serving_untried = 0;

    if (c->has_priorities)
        scan_levels(lb, c);
    for (uint32_t i = 0; i < c->n_eps; i++) {
        uint32_t f = c->has_priorities ? lb->flags[i] : (lb->flags[i] = ing__lb_flags(&c->eps[i]));
        bool untried = !ing__lb_excluded(ctx, i);

        if (f & XDS_EPF_DRAINING)
            continue;
        serving++;
        serving_untried += untried;
        if (f == 0) {
            healthy++;
            healthy_untried += untried;
        }
    }
    if ((uint64_t)healthy * 100 < (uint64_t)c->panic_percent * serving) {
        s->bad = XDS_EPF_DRAINING;
        s->use_exclude = serving_untried > 0;
        return serving > 0;
    }
    s->bad = UINT32_MAX;
    s->use_exclude = healthy_untried > 0;
    return healthy > 0;
}
