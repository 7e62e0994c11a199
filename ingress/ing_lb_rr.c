/* ingress/ing_lb_rr.c -- round_robin: nginx's smooth weighted round robin
 * (ngx_http_upstream_get_peer()).
 *
 * Every pick adds each candidate's weight to its current weight, takes the candidate with the
 * highest current weight and lowers that one by the sum of the weights. Over any run of
 * sum(weights) picks each endpoint gets exactly its weight, and the heavy ones are spread out
 * instead of sent in bursts: weights 5, 1, 1 give a a b a c a a. The state is per worker
 * (lb->cur), so no two workers share a cache line; O(n) per pick, as in nginx.
 *
 * An endpoint that stops being a candidate keeps its current weight frozen and resumes from it
 * when it comes back, which is also what nginx does with a peer that is down.
 */
#include <weir/lb.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "ing_lb_priv.h"

void ing__lb_rr_init(struct ing_lb *lb, const struct xds_cluster *c)
{
    lb->cur = wr_xcalloc(c->n_eps, sizeof(*lb->cur));
}

/* The weight walk needs the candidate set up front, so round robin always scans: one O(n) pass
 * copies the flags, the walk reads the copy (hot in cache) instead of each endpoint's state. */
int ing__lb_rr_pick(struct ing_lb *lb, const struct xds_cluster *c, const struct ing_lb_ctx *ctx)
{
    struct ing__lb_set s;
    int64_t total = 0;
    int best = -1;

    if (!ing__lb_scan(lb, c, ctx, &s))
        return -1;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (!ing__lb_is_cand(lb, &s, ctx, i))
            continue;
        int64_t w = ing__lb_weight(&c->eps[i]);

        lb->cur[i] += w;
        total += w;
        if (best < 0 || lb->cur[i] > lb->cur[best])
            best = (int)i;
    }
    lb->cur[best] -= total; /* best >= 0: the scan found a candidate in the same copy */
    return best;
}
