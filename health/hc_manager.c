/* health/hc_manager.c -- the health manager: one record per endpoint state entry of the current
 * snapshot, the check schedule of each (interval, jitter, timeout, bounded concurrency), the
 * verdicts, and the snapshot changes (new endpoints, removed ones, changed settings).
 *
 * Records are keyed by the entry's address (struct xds_ep_state *), which the stats registry
 * keeps for the same "cluster|address" across reloads: that is how health, streaks, ejections
 * and schedules survive a reload, and how a removed endpoint is noticed (its entry is no longer
 * linked). A record's timer is either the wait for its next check or, while a probe runs, that
 * probe's timeout. At most HC_MAX_INFLIGHT probes run at once; records that are due meanwhile
 * wait in a FIFO queue, so a burst (a thousand endpoints added at once) is smoothed, never
 * dropped. The control loop is the only thread here; the workers see nothing but the flags.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hc_priv.h"

static void rec_start(struct hc_ep *rec);

/* ---- record map: open addressing keyed by the entry pointer -------------------------------- */

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;

    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

static struct hc_ep **map_slot(struct hc_ep **map, size_t cap, const struct xds_ep_state *st)
{
    size_t i = ptr_hash(st) & (cap - 1);

    while (map[i] != NULL && map[i]->st != st)
        i = (i + 1) & (cap - 1);
    return &map[i];
}

struct hc_ep *hc__map_find(struct hc_manager *m, const struct xds_ep_state *st)
{
    return m->map != NULL ? *map_slot(m->map, m->map_cap, st) : NULL;
}

/* ---- flags ---------------------------------------------------------------------------------- */

static void set_flag(struct xds_ep_state *st, uint32_t flag, bool on)
{
    if (on)
        atomic_fetch_or(&st->flags, flag);
    else
        atomic_fetch_and(&st->flags, ~flag);
}

bool hc__ep_checked(const struct hc_ep *rec)
{
    return rec->c->hc.type != XDS_HC_NONE;
}

/* ---- handles and the manager's lifetime ---------------------------------------------------- */

static void manager_free(struct hc_manager *m)
{
    while (m->tls != NULL) {
        struct hc_tlsctx *t = m->tls;
        m->tls = t->next;
        SSL_CTX_free(t->ctx);
        free(t->ca_file);
        free(t);
    }
    nghttp2_session_callbacks_del(m->h2cbs);
    free(m->groups);
    free(m->map);
    xds_snapshot_unref(m->snap);
    free(m);
}

void hc__manager_handle_closed(struct hc_manager *m)
{
    if (--m->handles == 0 && m->closing)
        manager_free(m);
}

static void on_manager_handle_closed(uv_handle_t *h)
{
    hc__manager_handle_closed(h->data);
}

void hc__manager_slot_freed(struct hc_manager *m)
{
    m->inflight--;
    while (!m->closing && m->inflight < HC_MAX_INFLIGHT && !wr_list_empty(&m->queue)) {
        struct hc_ep *rec = WR_CONTAINER_OF(m->queue.next, struct hc_ep, qlink);
        wr_list_remove(&rec->qlink);
        rec_start(rec);
    }
}

/* ---- the schedule of one record ------------------------------------------------------------ */

static void on_rec_timer(uv_timer_t *t);

static void rec_arm(struct hc_ep *rec, uint64_t delay_ms)
{
    struct hc_manager *m = rec->m;

    if (!rec->timer_init) {
        uv_timer_init(m->loop, &rec->timer);
        rec->timer_init = true;
        m->handles++;
    }
    rec->phase = HC_EP_IDLE;
    uv_timer_start(&rec->timer, on_rec_timer, delay_ms, 0);
}

/* Stops whatever the record was doing: running probe, kept connection, queue slot, timer. */
static void rec_stop(struct hc_ep *rec)
{
    if (rec->probe != NULL) {
        hc__probe_cancel(rec->probe);
        rec->probe = NULL;
    }
    hc__probe_drop_idle(rec);
    wr_list_remove(&rec->qlink);
    if (rec->timer_init)
        uv_timer_stop(&rec->timer);
    rec->phase = HC_EP_OFF;
}

/* Records a check result and schedules the next check: <interval> (or unhealthy_interval_ms)
 * after the start of this one, jittered, so the rate holds whatever the probes' duration. */
static void rec_result(struct hc_ep *rec, bool ok, const char *why)
{
    struct hc_manager *m = rec->m;
    const struct xds_health_check *hc = &rec->c->hc;
    int flip = hc__verdict_add(&rec->v, ok, hc->healthy_threshold, hc->unhealthy_threshold);

    xds_ctr_add(ok ? &rec->st->hc_ok : &rec->st->hc_fail, 1);
    if (flip == HC_BECAME_UNHEALTHY) {
        set_flag(rec->st, XDS_EPF_UNHEALTHY, true);
        wr_info("health: cluster %s endpoint %s is unhealthy after %u failed checks (last: %s)",
                rec->c->name, rec->ep->address, hc->unhealthy_threshold, why);
    } else if (flip == HC_BECAME_HEALTHY) {
        set_flag(rec->st, XDS_EPF_UNHEALTHY, false);
        wr_info("health: cluster %s endpoint %s is healthy after %u passed checks", rec->c->name,
                rec->ep->address, hc->healthy_threshold);
    } else if (!ok) {
        wr_debug("health: cluster %s endpoint %s: check failed: %s", rec->c->name, rec->ep->address,
                 why);
    }
    uint64_t now = uv_now(m->loop);
    uint32_t interval = hc__interval(hc, rec->v.healthy);
    uint64_t due = rec->probe_start + hc__jitter(interval, hc->jitter_percent, &m->rng);
    rec_arm(rec, hc__align(now, due > now ? due - now : 0, interval));
}

/* The timeout timer is not stopped here: rec_result() re-arms the same timer for the next
 * check, and uv_timer_start() takes a running timer out of the heap itself. */
void hc__ep_probe_done(struct hc_ep *rec, bool ok, const char *why)
{
    rec_result(rec, ok, why);
}

static void rec_start(struct hc_ep *rec)
{
    struct hc_manager *m = rec->m;
    char why[160];

    rec->phase = HC_EP_RUNNING;
    rec->probe_start = uv_now(m->loop);
    if (hc__probe_start(m, rec, why, sizeof(why)) < 0) {
        rec_result(rec, false, why);
        return;
    }
    uv_timer_start(&rec->timer, on_rec_timer, rec->c->hc.timeout_ms, 0);
}

static void on_rec_timer(uv_timer_t *t)
{
    struct hc_ep *rec = WR_CONTAINER_OF(t, struct hc_ep, timer);
    struct hc_manager *m = rec->m;
    char why[64];

    if (rec->phase == HC_EP_RUNNING) {
        if (rec->probe != NULL)
            hc__probe_cancel(rec->probe);
        rec->probe = NULL;
        snprintf(why, sizeof(why), "timed out after %u ms", rec->c->hc.timeout_ms);
        rec_result(rec, false, why);
        return;
    }
    if (rec->phase != HC_EP_IDLE)
        return;
    if (m->inflight >= HC_MAX_INFLIGHT) {
        rec->phase = HC_EP_QUEUED;
        wr_list_insert_tail(&m->queue, &rec->qlink);
        return;
    }
    rec_start(rec);
}

/* ---- records --------------------------------------------------------------------------------- */

static struct hc_ep *rec_new(struct hc_manager *m, struct xds_ep_state *st)
{
    struct hc_ep *rec = wr_xcalloc(1, sizeof(*rec));

    rec->m = m;
    rec->st = xds_ep_state_ref(st);
    wr_list_init(&rec->qlink);
    wr_list_init(&rec->elink);
    hc__verdict_init(&rec->v, true);
    return rec;
}

static void rec_free(struct hc_ep *rec)
{
    xds_ep_state_unref(rec->st);
    free(rec);
}

static void on_rec_closed(uv_handle_t *h)
{
    struct hc_ep *rec = WR_CONTAINER_OF((uv_timer_t *)h, struct hc_ep, timer);
    struct hc_manager *m = rec->m;

    rec_free(rec);
    hc__manager_handle_closed(m);
}

/* Stops listening to the workers about this entry. */
static void rec_unhook(struct hc_ep *rec)
{
    atomic_store(&rec->st->od_5xx_max, 0);
    atomic_store(&rec->st->od_gw_max, 0);
    atomic_store(&rec->st->od_sink, NULL);
}

static void rec_close(struct hc_ep *rec)
{
    rec_stop(rec);
    if (rec->ejected) {
        wr_list_remove(&rec->elink);
        rec->ejected = false;
    }
    if (rec->timer_init)
        uv_close((uv_handle_t *)&rec->timer, on_rec_closed);
    else
        rec_free(rec);
}

/* The entry left the configuration: no new requests (the workers close its idle pooled
 * connections when they adopt the snapshot), in-flight ones finish. */
static void rec_drop(struct hc_ep *rec)
{
    set_flag(rec->st, XDS_EPF_DRAINING, true);
    set_flag(rec->st, XDS_EPF_EJECTED, false);
    rec_unhook(rec);
    wr_debug("health: cluster %s endpoint %s removed: draining", rec->c->name, rec->ep->address);
    rec_close(rec);
}

static bool str_same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether the checks of <a> and <b> are the same (a change restarts the endpoint's checks). */
static bool hc_same(const struct xds_cluster *a, const struct xds_cluster *b)
{
    const struct xds_health_check *x = &a->hc, *y = &b->hc;

    return x->type == y->type && x->tls == y->tls && str_same(x->path, y->path) &&
           str_same(x->method, y->method) && str_same(x->host, y->host) &&
           str_same(x->body_contains, y->body_contains) && x->n_expected == y->n_expected &&
           (x->n_expected == 0 ||
            memcmp(x->expected, y->expected, x->n_expected * sizeof(*x->expected)) == 0) &&
           str_same(x->send, y->send) && str_same(x->expect, y->expect) &&
           str_same(x->service, y->service) && x->interval_ms == y->interval_ms &&
           x->unhealthy_interval_ms == y->unhealthy_interval_ms && x->timeout_ms == y->timeout_ms &&
           x->jitter_percent == y->jitter_percent && a->tls.enabled == b->tls.enabled &&
           a->tls.verify == b->tls.verify && str_same(a->tls.sni, b->tls.sni) &&
           str_same(a->tls.ca_file, b->tls.ca_file);
}

/* Applies the record's (new) cluster settings. <old_c> is its cluster in the previous snapshot
 * (NULL for an endpoint new to the manager). */
static void rec_configure(struct hc_ep *rec, const struct xds_cluster *old_c)
{
    struct hc_manager *m = rec->m;
    const struct xds_health_check *hc = &rec->c->hc;
    bool had = old_c != NULL && old_c->hc.type != XDS_HC_NONE;

    if (hc->type == XDS_HC_NONE) {
        rec_stop(rec);
        hc__verdict_init(&rec->v, true);
        set_flag(rec->st, XDS_EPF_UNHEALTHY, false);
        return;
    }
    if (old_c == NULL) {
        /* New endpoint: the configured initial state, first check somewhere in the first
         * interval so that a thousand new endpoints are not checked in the same millisecond. */
        hc__verdict_init(&rec->v, hc->initial_healthy);
        set_flag(rec->st, XDS_EPF_UNHEALTHY, !hc->initial_healthy);
    } else if (!had) {
        /* Checks added to a serving endpoint: it stays in rotation until they say otherwise. */
        hc__verdict_init(&rec->v, true);
        set_flag(rec->st, XDS_EPF_UNHEALTHY, false);
    } else if (hc_same(old_c, rec->c)) {
        return; /* keep the schedule; a running probe finishes under its own snapshot */
    } else {
        rec->v.ok_streak = rec->v.fail_streak = 0;
    }
    rec_stop(rec);
    uint32_t interval = hc__interval(hc, rec->v.healthy);
    rec_arm(rec, hc__align(uv_now(m->loop), hc__first_delay(interval, &m->rng), interval));
}

/* Outlier detection settings of the record's cluster, as the workers read them. */
static void rec_hook(struct hc_ep *rec)
{
    const struct xds_outlier *od = &rec->c->outlier;

    atomic_store(&rec->st->od_5xx_max, od->enabled ? WR_MAX(od->consecutive_5xx, 1u) : 0);
    atomic_store(&rec->st->od_gw_max,
                 od->enabled ? WR_MAX(od->consecutive_gateway_failure, 1u) : 0);
    atomic_store(&rec->st->od_sink, od->enabled ? &rec->m->sink : NULL);
}

/* ---- the manager ------------------------------------------------------------------------------
 */

struct hc_manager *hc_manager_new(uv_loop_t *loop)
{
    struct hc_manager *m = wr_xcalloc(1, sizeof(*m));

    m->loop = loop;
    wr_list_init(&m->queue);
    wr_list_init(&m->ejected);
    m->rng = wr_mono_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)m;
    if (m->rng == 0)
        m->rng = 0x9e3779b97f4a7c15ull;
    m->h2cbs = hc__grpc_callbacks();
    hc__od_init(m);
    return m;
}

static size_t count_entries(const struct xds_snapshot *s)
{
    size_t n = 0;

    for (uint32_t i = 0; i < s->n_clusters; i++)
        n += s->clusters[i]->n_eps;
    return n;
}

/* Links every entry of <s> to a record in the new <map>: the record it had (found in m->map),
 * or a new one. Records carried over are marked with the current generation. */
static void adopt(struct hc_manager *m, struct xds_snapshot *s, struct hc_ep **map, size_t cap,
                  struct hc_group *groups)
{
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        const struct xds_cluster *c = s->clusters[i];
        groups[i].c = c;
        for (uint32_t j = 0; j < c->n_eps; j++) {
            struct xds_ep_state *st = c->eps[j].st;
            struct hc_ep **slot, *rec;
            if (st == NULL || *(slot = map_slot(map, cap, st)) != NULL)
                continue;
            rec = hc__map_find(m, st);
            const struct xds_cluster *old_c = rec != NULL ? rec->c : NULL;
            if (rec == NULL) {
                rec = rec_new(m, st);
                /* The entry may be a leftover still held by a pooled connection or an old
                 * snapshot: nothing of its previous life applies to the new endpoint. */
                set_flag(st, XDS_EPF_EJECTED, false);
            }
            rec->gen = m->gen;
            if (rec->ejected && !c->outlier.enabled)
                hc__od_uneject(m, rec, "outlier detection is off"); /* in its old group */
            else if (rec->ejected)
                groups[i].n_ejected++;
            rec->c = c;
            rec->ep = &c->eps[j];
            rec->g = &groups[i];
            set_flag(st, XDS_EPF_DRAINING, false);
            rec_hook(rec);
            *slot = rec;
            rec_configure(rec, old_c);
        }
    }
}

void hc_manager_update(struct hc_manager *m, struct xds_snapshot *s)
{
    struct xds_snapshot *old = m->snap;
    size_t cap = 16;

    if (m->closing || s == NULL || s->reg == NULL)
        return;
    while (cap < 2 * count_entries(s) + 2)
        cap *= 2;
    struct hc_ep **map = wr_xcalloc(cap, sizeof(*map));
    struct hc_group *groups = wr_xcalloc(WR_MAX(s->n_clusters, 1u), sizeof(*groups));
    struct hc_group *old_groups = m->groups;

    /* Cached TLS contexts are rebuilt on demand, so a reload picks up a changed ca_file. */
    while (m->tls != NULL) {
        struct hc_tlsctx *t = m->tls;
        m->tls = t->next;
        SSL_CTX_free(t->ctx);
        free(t->ca_file);
        free(t);
    }
    m->snap = xds_snapshot_ref(s);
    m->gen++;
    adopt(m, s, map, cap, groups);
    /* What the old map holds and adopt() did not mark is no longer linked by <s>. */
    for (size_t i = 0; m->map != NULL && i < m->map_cap; i++)
        if (m->map[i] != NULL && m->map[i]->gen != m->gen)
            rec_drop(m->map[i]);
    free(m->map);
    m->map = map;
    m->map_cap = cap;
    m->groups = groups;
    m->n_groups = s->n_clusters;
    free(old_groups);
    hc__od_rearm(m);
    xds_snapshot_unref(old);
}

void hc_manager_close(struct hc_manager *m)
{
    if (m == NULL || m->closing)
        return;
    m->closing = true;
    for (size_t i = 0; m->map != NULL && i < m->map_cap; i++) {
        if (m->map[i] == NULL)
            continue;
        rec_unhook(m->map[i]);
        rec_close(m->map[i]);
    }
    wr_free(&m->map);
    hc__od_drain_sink(m);
    uv_close((uv_handle_t *)&m->async, on_manager_handle_closed);
    uv_close((uv_handle_t *)&m->od_timer, on_manager_handle_closed);
}
