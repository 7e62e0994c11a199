/* health/hc_outlier.c -- passive outlier detection: the hand-off from the workers, ejections,
 * their back-off and their end.
 *
 * Workers count streaks in their own slice of the endpoint state (hc_outlier_report() in
 * include/weir/hc.h). A worker whose streak reaches the threshold marks the entry suspect and
 * pushes it on the manager's lock-free stack (struct xds_ep_sink), then wakes the control loop
 * with uv_async_send(). Only the first suspect mark pushes: until the control thread takes the
 * entry, other reports only add their bits. The control thread takes the whole stack at once
 * (no ABA: nobody pops single entries), and decides: eject for base_ejection_ms x times ejected
 * (capped at max_ejection_ms), unless max(1, floor(n x max_ejection_percent / 100)) endpoints
 * of the cluster are already out. One timer, armed for the earliest end of an ejection, brings
 * them back. Each ejection and return bumps the entry's streak epoch, so that failures counted
 * before do not count after.
 */
#include <inttypes.h>

#include "hc_priv.h"

/* ---- worker side --------------------------------------------------------------------------- */

void hc_outlier_suspect(struct xds_ep_state *st, unsigned bits)
{
    struct xds_ep_sink *sink = atomic_load_explicit(&st->od_sink, memory_order_acquire);
    struct xds_ep_state *head;

    if (sink == NULL)
        return;
    if (atomic_fetch_or_explicit(&st->od_suspect, bits, memory_order_acq_rel) != 0)
        return;           /* already on the stack: the control thread sees the new bits too */
    xds_ep_state_ref(st); /* the stack's: the entry must outlive its stay there */
    head = atomic_load_explicit(&sink->head, memory_order_relaxed);
    do
        atomic_store_explicit(&st->od_next, head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&sink->head, &head, st, memory_order_release,
                                                  memory_order_relaxed));
    sink->wake(sink);
}

/* ---- control side -------------------------------------------------------------------------- */

static void sink_wake(struct xds_ep_sink *sink)
{
    uv_async_send(&WR_CONTAINER_OF(sink, struct hc_manager, sink)->async);
}

static void bump_epoch(struct xds_ep_state *st)
{
    atomic_store(&st->od_epoch, atomic_load(&st->od_epoch) + 1);
}

/* Takes every entry off the stack; hands each to <fn> (unless NULL), then drops the stack's
 * reference. The link is read before the suspect bits are cleared: from then on a worker may
 * push the entry again, which rewrites it. */
static void take_all(struct hc_manager *m,
                     void (*fn)(struct hc_manager *, struct xds_ep_state *, unsigned))
{
    struct xds_ep_state *st = atomic_exchange_explicit(&m->sink.head, NULL, memory_order_acquire);

    while (st != NULL) {
        struct xds_ep_state *next = atomic_load_explicit(&st->od_next, memory_order_relaxed);
        unsigned bits = atomic_exchange_explicit(&st->od_suspect, 0, memory_order_acq_rel);
        if (fn != NULL)
            fn(m, st, bits);
        xds_ep_state_unref(st);
        st = next;
    }
}

static void suspect(struct hc_manager *m, struct xds_ep_state *st, unsigned bits)
{
    struct hc_ep *rec = hc__map_find(m, st);

    if (rec != NULL)
        hc__od_suspect(m, rec, bits);
}

static void on_async(uv_async_t *a)
{
    struct hc_manager *m = WR_CONTAINER_OF(a, struct hc_manager, async);

    if (!m->closing)
        take_all(m, suspect);
}

void hc__od_drain_sink(struct hc_manager *m)
{
    take_all(m, NULL);
}

void hc__od_suspect(struct hc_manager *m, struct hc_ep *rec, unsigned bits)
{
    const struct xds_outlier *od = &rec->c->outlier;
    uint64_t now = uv_now(m->loop);

    if (!od->enabled || rec->ejected || bits == 0)
        return;
    uint32_t limit = hc__max_ejected(rec->c->n_eps, od->max_ejection_percent);
    if (rec->g->n_ejected >= limit) {
        wr_debug("outlier detection: cluster %s endpoint %s not ejected: %u of %u endpoints "
                 "already are (max_ejection_percent %u)",
                 rec->c->name, rec->ep->address, rec->g->n_ejected, rec->c->n_eps,
                 od->max_ejection_percent);
        return;
    }
    uint64_t quiet = rec->times_ejected > 0 ? now - rec->unejected_at : 0;
    uint64_t ms = hc__ejection_ms(od, &rec->times_ejected, quiet);
    rec->ejected = true;
    rec->eject_until = now + ms;
    rec->g->n_ejected++;
    wr_list_insert_tail(&m->ejected, &rec->elink);
    atomic_fetch_or(&rec->st->flags, XDS_EPF_EJECTED);
    bump_epoch(rec->st);
    xds_ctr_add(&rec->st->od_ejections, 1);
    wr_info("outlier detection: cluster %s endpoint %s ejected for %" PRIu64 " ms (%s)",
            rec->c->name, rec->ep->address, ms,
            (bits & HC_SUSPECT_GATEWAY) ? "consecutive gateway failures" : "consecutive 5xx");
    hc__od_rearm(m);
}

void hc__od_uneject(struct hc_manager *m, struct hc_ep *rec, const char *why)
{
    if (!rec->ejected)
        return;
    rec->ejected = false;
    wr_list_remove(&rec->elink);
    if (rec->g != NULL && rec->g->n_ejected > 0)
        rec->g->n_ejected--;
    rec->unejected_at = uv_now(m->loop);
    atomic_fetch_and(&rec->st->flags, ~XDS_EPF_EJECTED);
    bump_epoch(rec->st);
    wr_info("outlier detection: cluster %s endpoint %s back in rotation (%s)", rec->c->name,
            rec->ep->address, why);
}

static void on_od_timer(uv_timer_t *t)
{
    struct hc_manager *m = WR_CONTAINER_OF(t, struct hc_manager, od_timer);
    uint64_t now = uv_now(m->loop);

    for (struct wr_list *n = m->ejected.next, *nx; n != &m->ejected; n = nx) {
        struct hc_ep *rec = WR_CONTAINER_OF(n, struct hc_ep, elink);
        nx = n->next;
        if (rec->eject_until <= now)
            hc__od_uneject(m, rec, "ejection time over");
    }
    hc__od_rearm(m);
}

void hc__od_rearm(struct hc_manager *m)
{
    uint64_t first = UINT64_MAX, now = uv_now(m->loop);

    if (m->closing)
        return;
    for (struct wr_list *n = m->ejected.next; n != &m->ejected; n = n->next)
        first = WR_MIN(first, WR_CONTAINER_OF(n, struct hc_ep, elink)->eject_until);
    if (first == UINT64_MAX)
        uv_timer_stop(&m->od_timer);
    else
        uv_timer_start(&m->od_timer, on_od_timer, first > now ? first - now : 0, 0);
}

void hc__od_init(struct hc_manager *m)
{
    uv_async_init(m->loop, &m->async, on_async);
    uv_timer_init(m->loop, &m->od_timer);
    m->async.data = m;
    m->od_timer.data = m;
    m->handles += 2;
    m->sink.wake = sink_wake;
}
