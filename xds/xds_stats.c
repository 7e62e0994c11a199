/* xds/xds_stats.c -- the registry of shared counters that survive snapshots.
 *
 * Endpoint states and counter blocks are keyed by strings ("cluster|address", "rc|route|
 * cluster", ...) in two hash maps, one per entry type, so that a cluster named "listener"
 * cannot collide with a listener. The registry holds one reference on every entry; each
 * snapshot that links an entry holds another, and so do pooled upstream connections. An entry
 * whose only reference is the registry's is garbage: xds_stats_reg_sweep() frees it, after
 * which the same key gets fresh zeroed counters.
 *
 * The maps are touched by the control thread only. Entries are refcounted with atomics
 * because workers drop their references (snapshot retirement, closing a pooled connection).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>
#include <weir/xds.h>

#define CACHE_LINE 64

/* Open addressing with linear probing over entry pointers; entries keep their own key. */
struct stats_map {
    void **slots;
    size_t cap, n; /* cap is a power of two */
};

struct xds_stats_reg {
    unsigned nworkers;
    struct stats_map eps;      /* struct xds_ep_state * */
    struct stats_map counters; /* struct xds_counters * */
};

static const char *entry_key(void *e, bool is_ep)
{
    return is_ep ? ((struct xds_ep_state *)e)->key : ((struct xds_counters *)e)->key;
}

static void *xaligned(size_t size)
{
    void *p = NULL;

    size = (size + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
    if (posix_memalign(&p, CACHE_LINE, size) != 0) {
        fprintf(stderr, "weir: out of memory allocating %zu bytes\n", size);
        abort();
    }
    memset(p, 0, size);
    return p;
}

/* Returns the slot holding <key>, or the empty slot where it belongs. */
static void **map_slot(struct stats_map *m, const char *key, bool is_ep)
{
    size_t len = strlen(key);
    size_t i = (size_t)wr_hash64(key, len, 0) & (m->cap - 1);

    while (m->slots[i] != NULL && strcmp(entry_key(m->slots[i], is_ep), key) != 0)
        i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

static void map_init(struct stats_map *m, size_t cap)
{
    m->slots = wr_xcalloc(cap, sizeof(*m->slots));
    m->cap = cap;
    m->n = 0;
}

/* Rebuilds <m> with the entries <keep> accepts; the others are handed to <drop>. Also used to
 * grow the map (keep everything, larger capacity). */
static void map_rebuild(struct stats_map *m, bool is_ep, size_t cap, bool (*keep)(void *),
                        void (*drop)(void *))
{
    struct stats_map old = *m;

    map_init(m, cap);
    for (size_t i = 0; i < old.cap; i++) {
        void *e = old.slots[i];
        if (e == NULL)
            continue;
        if (keep != NULL && !keep(e)) {
            drop(e);
            continue;
        }
        *map_slot(m, entry_key(e, is_ep), is_ep) = e;
        m->n++;
    }
    free(old.slots);
}

/* Makes room for one more entry, keeping the load factor under 1/2. */
static void map_reserve(struct stats_map *m, bool is_ep)
{
    if ((m->n + 1) * 2 > m->cap)
        map_rebuild(m, is_ep, m->cap * 2, NULL, NULL);
}

unsigned xds__reg_nworkers(const struct xds_stats_reg *r)
{
    return r != NULL ? r->nworkers : 0;
}

struct xds_stats_reg *xds_stats_reg_new(unsigned nworkers)
{
    struct xds_stats_reg *r = wr_xcalloc(1, sizeof(*r));

    r->nworkers = nworkers ? nworkers : 1;
    map_init(&r->eps, 64);
    map_init(&r->counters, 64);
    return r;
}

/* Drops the registry's references: entries still linked by a snapshot or a connection stay
 * alive until their last holder lets go. */
void xds_stats_reg_free(struct xds_stats_reg *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->eps.cap; i++)
        xds_ep_state_unref(r->eps.slots[i]);
    for (size_t i = 0; i < r->counters.cap; i++)
        if (r->counters.slots[i] != NULL)
            xds_counters_unref(r->counters.slots[i]);
    free(r->eps.slots);
    free(r->counters.slots);
    free(r);
}

/* ---- endpoint states ---------------------------------------------------------------------- */

struct xds_ep_state *xds_ep_state_ref(struct xds_ep_state *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
    return st;
}

void xds_ep_state_unref(struct xds_ep_state *st)
{
    if (st == NULL || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(st->key);
    free(st);
}

static struct xds_ep_state *ep_new(const char *key, unsigned nworkers)
{
    _Static_assert(offsetof(struct xds_ep_state, w) % CACHE_LINE == 0, "w[] is cache aligned");
    struct xds_ep_state *st =
        xaligned(sizeof(*st) + (size_t)nworkers * sizeof(struct xds_ep_wstate));

    atomic_init(&st->refs, 1); /* the registry's */
    atomic_init(&st->flags, 0);
    st->key = wr_xstrdup(key);
    st->nworkers = nworkers;
    for (unsigned i = 0; i < nworkers; i++)
        wr_list_init(&st->w[i].idle);
    return st;
}

struct xds_ep_state *xds_stats_ep(struct xds_stats_reg *r, const char *key)
{
    map_reserve(&r->eps, true);
    void **slot = map_slot(&r->eps, key, true);

    if (*slot == NULL) {
        *slot = ep_new(key, r->nworkers);
        r->eps.n++;
    }
    return xds_ep_state_ref(*slot);
}

/* ---- counter blocks ----------------------------------------------------------------------- */

void xds_counters_unref(struct xds_counters *k)
{
    if (k == NULL || atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(k->key);
    free(k);
}

static struct xds_counters *counters_new(const char *key, unsigned ncounters, unsigned nworkers)
{
    const unsigned per_line = CACHE_LINE / sizeof(uint64_t);
    unsigned stride = (ncounters + per_line - 1) / per_line * per_line;
    struct xds_counters *k;

    _Static_assert(offsetof(struct xds_counters, c) % CACHE_LINE == 0, "c[] is cache aligned");
    if (stride == 0)
        stride = per_line;
    k = xaligned(sizeof(*k) + (size_t)nworkers * stride * sizeof(uint64_t));
    atomic_init(&k->refs, 1); /* the registry's */
    k->ncounters = ncounters;
    k->stride = stride;
    k->nworkers = nworkers;
    k->key = wr_xstrdup(key);
    return k;
}

/* The counter count is fixed by the key's kind, so an entry found with another count is a
 * leftover of an older layout: it is replaced (its holders keep the old block until they let
 * go). */
struct xds_counters *xds_stats_counters(struct xds_stats_reg *r, const char *key,
                                        unsigned ncounters)
{
    map_reserve(&r->counters, false);
    void **slot = map_slot(&r->counters, key, false);
    struct xds_counters *k = *slot;

    if (k != NULL && k->ncounters != ncounters) {
        xds_counters_unref(k);
        k = NULL;
        r->counters.n--;
    }
    if (k == NULL) {
        k = counters_new(key, ncounters, r->nworkers);
        *slot = k;
        r->counters.n++;
    }
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
}

uint64_t xds_counters_sum(struct xds_counters *k, unsigned i)
{
    uint64_t sum = 0;

    for (unsigned w = 0; w < k->nworkers; w++)
        sum += xds_ctr_get(&xds_counters_w(k, w)[i]);
    return sum;
}

/* ---- sweeping ----------------------------------------------------------------------------- */

/* Only the control thread takes new references (through the registry), so an entry seen with
 * a single reference cannot be resurrected while it is being freed. */
static bool ep_in_use(void *e)
{
    return atomic_load_explicit(&((struct xds_ep_state *)e)->refs, memory_order_acquire) > 1;
}

static bool counters_in_use(void *e)
{
    return atomic_load_explicit(&((struct xds_counters *)e)->refs, memory_order_acquire) > 1;
}

static void ep_drop(void *e)
{
    xds_ep_state_unref(e);
}

static void counters_drop(void *e)
{
    xds_counters_unref(e);
}

void xds_stats_reg_sweep(struct xds_stats_reg *r)
{
    map_rebuild(&r->eps, true, r->eps.cap, ep_in_use, ep_drop);
    map_rebuild(&r->counters, false, r->counters.cap, counters_in_use, counters_drop);
}
