/* include/weir/hc.h -- active health checks, passive outlier detection, draining (health/).
 *
 * The health manager runs on the control loop. It follows the published snapshots: every
 * endpoint state entry (struct xds_ep_state, keyed "cluster|address", so it survives reloads)
 * linked by the current snapshot gets a record; the record owns the entry's active checks and
 * its outlier ejections. Verdicts reach the data path through the entry's atomic flags word
 * (XDS_EPF_UNHEALTHY, XDS_EPF_EJECTED, XDS_EPF_DRAINING), which every worker's load balancer
 * reads on every pick: no snapshot is rebuilt for a health change.
 *
 * Thread rules: hc_manager_* are control-thread only. hc_outlier_report() is the one entry
 * point of the workers; it touches only the calling worker's own slice of the entry on the
 * common path (no lock, no atomic read-modify-write).
 */
#ifndef WEIR_HC_H
#define WEIR_HC_H

#include <stdatomic.h>
#include <stdint.h>

#include <weir/xds.h>

struct hc_manager;
struct uv_loop_s;

/* Creates the manager on <loop> (the control loop). It does nothing until the first
 * hc_manager_update(). Never NULL (aborts on OOM). */
struct hc_manager *hc_manager_new(struct uv_loop_s *loop);

/* Adopts <s> (a new reference is taken; the previous snapshot's is dropped). Call it at boot
 * with the first snapshot and after every successful reload, BEFORE publishing <s> to the
 * workers, so that a worker adopting <s> already sees its flags:
 *  - endpoints new to the manager start in their cluster's initial_state and get their first
 *    check at a random point of the first interval (checks do not align);
 *  - endpoints that stay keep their health, streaks, ejection and schedule; a changed check
 *    configuration restarts their checks (health kept, streaks reset);
 *  - an entry the new snapshot no longer links gets XDS_EPF_DRAINING and is forgotten; an entry
 *    that comes back loses DRAINING;
 *  - a cluster without health_check has XDS_EPF_UNHEALTHY cleared, one without
 *    outlier_detection XDS_EPF_EJECTED.
 * Snapshots built without a stats registry (no xds_ep_state) are ignored. */
void hc_manager_update(struct hc_manager *m, struct xds_snapshot *s);

/* Cancels every check, closes every handle and frees the manager once the last one closed
 * (the control loop must keep running until then). Flags are left as they are. Call it only
 * after the worker threads have been joined: a worker reporting an outlier after this would
 * wake a closed handle. NULL is a no-op. */
void hc_manager_close(struct hc_manager *m);

/* ---- passive outlier detection (worker threads) ---------------------------------------- */

/* What a finished upstream exchange says about its endpoint (hc_outlier_report <kind>). */
enum hc_outlier_kind {
    HC_OUTLIER_SUCCESS = 0, /* a response below 500: both streaks end */
    HC_OUTLIER_5XX,         /* the upstream answered 5xx: counts toward consecutive_5xx */
    HC_OUTLIER_GATEWAY,     /* connect error or timeout, reset, response timeout: counts toward
                               consecutive_gateway_failure and consecutive_5xx (the client gets
                               a 502/504 for it) */
};

#define HC_SUSPECT_5XX     0x1u
#define HC_SUSPECT_GATEWAY 0x2u

/* Out of line: marks <st> suspect with <bits> and wakes the control thread (rare path: once
 * per threshold crossing). */
void hc_outlier_suspect(struct xds_ep_state *st, unsigned bits);

/* Reports the outcome of one upstream exchange with the endpoint of <st>, from worker <worker>
 * (its index in st->w[]). Streaks are counted per worker; when one reaches its cluster's
 * threshold the entry is handed to the control thread, which decides on the ejection. Costs
 * two relaxed loads when outlier detection is off for the cluster. */
static inline void hc_outlier_report(struct xds_ep_state *st, unsigned worker, int kind)
{
    uint32_t max5 = atomic_load_explicit(&st->od_5xx_max, memory_order_relaxed);
    uint32_t maxgw = atomic_load_explicit(&st->od_gw_max, memory_order_relaxed);
    struct xds_ep_wstate *w = &st->w[worker];
    uint32_t epoch;
    unsigned bits = 0;

    if (max5 == 0 && maxgw == 0)
        return;
    epoch = atomic_load_explicit(&st->od_epoch, memory_order_relaxed);
    if (w->od_epoch != epoch) {
        w->od_epoch = epoch;
        w->od_5xx = w->od_gw = 0;
    }
    if (kind == HC_OUTLIER_SUCCESS) {
        w->od_5xx = w->od_gw = 0;
        return;
    }
    if (kind == HC_OUTLIER_GATEWAY) {
        if (++w->od_gw >= maxgw && maxgw != 0) {
            bits |= HC_SUSPECT_GATEWAY;
            w->od_gw = 0;
        }
    } else {
        w->od_gw = 0; /* the upstream answered: the gateway streak is over */
    }
    if (++w->od_5xx >= max5 && max5 != 0) {
        bits |= HC_SUSPECT_5XX;
        w->od_5xx = 0;
    }
    if (bits != 0)
        hc_outlier_suspect(st, bits);
}

#endif /* WEIR_HC_H */
