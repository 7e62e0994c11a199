/* ingress/ing_discovery.c -- the control thread's side of discovery.
 *
 * Runs the providers the config names (discovery/), keeps each one's last ACCEPTED view and
 * rebuilds the snapshot when a view changes. A new view is accepted only if the snapshot built
 * with it is valid; otherwise its errors are logged and the provider's previous view stays
 * (the same rule as an invalid file on SIGHUP). Views arriving close together are coalesced:
 * the rebuild runs on a short timer, so 1,000 answers in one loop turn cost one build.
 *
 * Providers survive reloads when their settings did not change, wherever their entry moved in
 * the "discovery" array (their view stays with them; a provider takes its new index);
 * stale_after_ms is changed in place. A provider whose entry went away is closed and its view
 * dropped. One whose entry changed is restarted; when it still watches the same source (the
 * same label: a new token file, CA file, wait or namespace list), its last view serves until
 * the new provider's first one, so that the restart does not take its routes away.
 *
 * A view equal to the accepted one builds nothing; one equal to the view rejected last is not
 * built (nor logged) again, but it is retried after each reload, which may have brought what
 * it lacked.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/disc.h>

#include "ing_priv.h"

#define COALESCE_MS 2

/* ing__disc_views(<with>): every provider's pending view, if any, instead of its accepted one */
#define WITH_ALL_PENDING (-2)

struct ing_disc_slot {
    struct disc_provider *p;
    char *settings;   /* identity of the config entry */
    char *label;      /* the provider's label, made unique among the providers ("#2" ...) */
    uint8_t source;   /* enum xds_source */
    json_t *view;     /* the last accepted view (NULL: none yet) */
    json_t *pending;  /* a view waiting for the next rebuild */
    json_t *rejected; /* the last view that did not build */
};

struct ing_disc {
    struct ing_server *srv;
    struct ing_disc_slot *slots;
    unsigned n;
    uv_timer_t timer;
    bool timer_init;
    char *last_conflicts; /* the conflicts logged last, to log only changes */
};

static void add_str(struct wr_sbuf *b, const char *s)
{
    wr_sbuf_printf(b, "%s\x01", s ? s : "\x02");
}

static char *settings_key(const struct xds_discovery *d)
{
    struct wr_sbuf b = {0};

    /* not stale_after_ms: it is changed in place (disc_provider_set_stale_after()) */
    wr_sbuf_printf(&b, "%u\x01%u\x01", d->type, d->wait_ms);
    add_str(&b, d->path);
    add_str(&b, d->name);
    add_str(&b, d->cluster);
    wr_sbuf_printf(&b, "%u\x01", d->n_resolvers);
    for (uint32_t i = 0; i < d->n_resolvers; i++)
        add_str(&b, d->resolvers[i]);
    add_str(&b, d->address);
    add_str(&b, d->token_file);
    add_str(&b, d->ca_file);
    add_str(&b, d->datacenter);
    add_str(&b, d->kubeconfig);
    add_str(&b, d->ingress_class);
    wr_sbuf_printf(&b, "%u\x01", d->n_namespaces);
    for (uint32_t i = 0; i < d->n_namespaces; i++)
        add_str(&b, d->namespaces[i]);
    add_str(&b, d->publish_address);
    add_str(&b, d->publish_service);
    return b.p;
}

/* The views to build with: accepted ones, or for slot <with> its pending one (every slot's for
 * WITH_ALL_PENDING). */
unsigned ing__disc_views(struct ing_server *srv, struct xds_view *out, int with)
{
    struct ing_disc *d = srv->disc;
    unsigned n = 0;

    for (unsigned i = 0; d != NULL && i < d->n; i++) {
        struct ing_disc_slot *sl = &d->slots[i];
        bool mine = (int)i == with || with == WITH_ALL_PENDING;
        json_t *v = mine && sl->pending != NULL ? sl->pending : sl->view;
        if (v == NULL)
            continue;
        out[n++] = (struct xds_view){.label = sl->label, .source = sl->source, .view = v};
    }
    return n;
}

unsigned ing__disc_count(struct ing_server *srv)
{
    return srv->disc != NULL ? srv->disc->n : 0;
}

static void log_conflicts(struct ing_disc *d, const struct xds_snapshot *s)
{
    struct wr_sbuf b = {0};

    for (uint32_t i = 0; i < s->n_conflicts; i++)
        wr_sbuf_printf(&b, "%s\n", s->conflicts[i]);
    const char *now = b.p ? b.p : "";
    if (strcmp(now, d->last_conflicts ? d->last_conflicts : "") != 0) {
        for (uint32_t i = 0; i < s->n_conflicts; i++)
            wr_warn("discovery conflict: %s", s->conflicts[i]);
        free(d->last_conflicts);
        d->last_conflicts = wr_xstrdup(now);
    }
    wr_sbuf_dispose(&b);
}

void ing__disc_built(struct ing_server *srv, const struct xds_snapshot *s)
{
    if (srv->disc != NULL)
        log_conflicts(srv->disc, s);
}

static void published(struct ing_server *srv, const char *who, struct xds_snapshot *s, uint64_t t0)
{
    ing__server_publish(srv, s);
    wr_info("discovery[%s]: configuration version %s published (%u clusters, %u routes, %.1f ms)",
            who, s->version_str, s->n_clusters, s->n_routes, (double)(wr_mono_ns() - t0) / 1e6);
}

static void accept_pending(struct ing_disc_slot *sl)
{
    json_decref(sl->view);
    sl->view = sl->pending;
    sl->pending = NULL;
    json_decref(sl->rejected);
    sl->rejected = NULL;
}

/* Several views waiting: one build with all of them, the common case being that they all
 * build. Returns false (nothing changed) when that build fails. */
static bool rebuild_all(struct ing_disc *d, uint64_t t0)
{
    struct wr_sbuf errors = {0}, who = {0};
    unsigned n = 0;

    for (unsigned i = 0; i < d->n; i++)
        n += d->slots[i].pending != NULL;
    if (n < 2)
        return false;
    struct xds_snapshot *s = ing__server_build(d->srv, WITH_ALL_PENDING, &errors);
    wr_sbuf_dispose(&errors);
    if (s == NULL)
        return false; /* one at a time, to tell which view does not build */
    for (unsigned i = 0; i < d->n; i++) {
        if (d->slots[i].pending == NULL)
            continue;
        wr_sbuf_printf(&who, "%s%u", who.len ? "," : "", i);
        accept_pending(&d->slots[i]);
    }
    published(d->srv, who.p, s, t0);
    wr_sbuf_dispose(&who);
    return true;
}

static void on_rebuild(uv_timer_t *t)
{
    struct ing_disc *d = t->data;
    struct ing_server *srv = d->srv;
    uint64_t t0 = wr_mono_ns();

    if (rebuild_all(d, t0))
        return;
    /* One build per pending view: a view that does not build is rejected alone, without
     * holding back another provider's good one. */
    for (unsigned i = 0; i < d->n; i++) {
        struct ing_disc_slot *sl = &d->slots[i];
        if (sl->pending == NULL)
            continue;
        struct wr_sbuf errors = {0};
        struct xds_snapshot *s = ing__server_build(srv, (int)i, &errors);
        if (s == NULL) {
            ing__log_errors(&errors);
            wr_err("discovery[%u] %s: the new view does not build; its previous view stays", i,
                   sl->label);
            json_decref(sl->rejected);
            sl->rejected = sl->pending;
            sl->pending = NULL;
            wr_sbuf_dispose(&errors);
            continue;
        }
        wr_sbuf_dispose(&errors);
        accept_pending(sl);
        char who[16];
        snprintf(who, sizeof(who), "%u", i);
        published(srv, who, s, t0);
    }
}

static void schedule(struct ing_disc *d)
{
    if (!uv_is_active((uv_handle_t *)&d->timer))
        uv_timer_start(&d->timer, on_rebuild, COALESCE_MS, 0);
}

static void on_view(void *arg, struct disc_provider *p, json_t *view)
{
    struct ing_disc *d = arg;
    unsigned i = disc_provider_index(p);

    if (i >= d->n || d->slots[i].p != p || atomic_load(&d->srv->state) == ING_STATE_DRAINING) {
        json_decref(view);
        return;
    }
    struct ing_disc_slot *sl = &d->slots[i];
    /* What serves already, or what was refused already: nothing to build (a Consul or
     * Kubernetes answer that changed nothing, a file written again as it was). */
    if ((sl->view != NULL && json_equal(view, sl->view)) ||
        (sl->rejected != NULL && json_equal(view, sl->rejected))) {
        json_decref(sl->pending); /* the newest view is that one */
        sl->pending = NULL;
        json_decref(view);
        return;
    }
    json_decref(sl->pending);
    sl->pending = view;
    schedule(d);
}

static void slot_free(struct ing_disc_slot *sl)
{
    json_decref(sl->view);
    json_decref(sl->pending);
    json_decref(sl->rejected);
    free(sl->settings);
    free(sl->label);
}

/* Gives every slot its label, unique among the providers: two entries may watch the same source
 * (one Consul agent, two datacenters), and the metrics need one series each. */
static void set_labels(struct ing_disc *d)
{
    for (unsigned i = 0; i < d->n; i++) {
        struct ing_disc_slot *sl = &d->slots[i];
        struct disc_status st;
        unsigned same = 0;
        if (sl->p == NULL)
            continue;
        disc_provider_status(sl->p, &st);
        for (unsigned j = 0; j < i; j++) {
            struct disc_status o;
            if (d->slots[j].p == NULL)
                continue;
            disc_provider_status(d->slots[j].p, &o);
            same += strcmp(o.label, st.label) == 0;
        }
        free(sl->label);
        sl->label = same ? wr_xasprintf("%s#%u", st.label, same + 1) : wr_xstrdup(st.label);
    }
}

/* Makes the running providers match s->discovery (boot, and after each successful reload).
 * Returns true when a view left with its provider (the caller rebuilds). */
bool ing__disc_sync(struct ing_server *srv, const struct xds_snapshot *s)
{
    struct ing_disc *d = srv->disc;
    bool dropped = false;

    if (d == NULL) {
        if (s->n_discovery == 0)
            return false;
        d = srv->disc = wr_xcalloc(1, sizeof(*d));
        d->srv = srv;
        uv_timer_init(srv->loop, &d->timer);
        d->timer.data = d;
        d->timer_init = true;
    }
    struct ing_disc_slot *slots = wr_xcalloc(s->n_discovery + 1, sizeof(*slots));
    bool *kept = wr_xcalloc(d->n + 1, sizeof(*kept));
    bool *created = wr_xcalloc(s->n_discovery + 1, sizeof(*created));

    /* Unchanged entries keep their provider, wherever they moved: the same index first (two
     * identical entries stay in place), then any. */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < s->n_discovery; i++) {
            if (slots[i].p != NULL)
                continue;
            char *key = settings_key(&s->discovery[i]);
            for (unsigned j = 0; j < d->n; j++) {
                if (kept[j] || d->slots[j].p == NULL || (pass == 0 && j != i) ||
                    strcmp(d->slots[j].settings, key) != 0)
                    continue;
                slots[i] = d->slots[j];
                kept[j] = true;
                disc_provider_set_index(slots[i].p, i);
                disc_provider_set_stale_after(slots[i].p, s->discovery[i].stale_after_ms);
                /* a view refused before this reload may build with what it brought */
                if (slots[i].pending == NULL && slots[i].rejected != NULL) {
                    slots[i].pending = slots[i].rejected;
                    slots[i].rejected = NULL;
                    schedule(d);
                }
                break;
            }
            free(key);
        }
    }
    for (uint32_t i = 0; i < s->n_discovery; i++) {
        if (slots[i].p != NULL)
            continue;
        slots[i].settings = settings_key(&s->discovery[i]);
        slots[i].source = s->discovery[i].type;
        slots[i].p = disc_provider_new(srv->loop, &s->discovery[i], i, NULL, on_view, d);
        created[i] = slots[i].p != NULL;
        if (slots[i].p == NULL)
            continue;
        /* A changed entry that still watches the same source: its view serves until the
         * restarted provider's first one. */
        struct disc_status st, o;
        disc_provider_status(slots[i].p, &st);
        for (unsigned j = 0; j < d->n; j++) {
            if (kept[j] || d->slots[j].p == NULL || d->slots[j].view == NULL ||
                d->slots[j].source != slots[i].source)
                continue;
            disc_provider_status(d->slots[j].p, &o);
            if (strcmp(o.label, st.label) != 0)
                continue;
            slots[i].view = d->slots[j].view;
            d->slots[j].view = NULL;
            break;
        }
    }
    for (unsigned j = 0; j < d->n; j++) {
        if (kept[j])
            continue;
        disc_provider_close(d->slots[j].p);
        dropped |= d->slots[j].view != NULL;
        slot_free(&d->slots[j]);
    }
    free(kept);
    free(d->slots);
    d->slots = slots;
    d->n = s->n_discovery;
    set_labels(d);
    for (unsigned i = 0; i < d->n; i++)
        if (created[i] && disc_provider_start(d->slots[i].p) != 0)
            wr_err("discovery[%u]: cannot start; it will not deliver views", i);
    free(created);
    return dropped;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void ing__disc_close(struct ing_server *srv)
{
    struct ing_disc *d = srv->disc;

    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->n; i++) {
        disc_provider_close(d->slots[i].p);
        slot_free(&d->slots[i]);
    }
    free(d->slots);
    free(d->last_conflicts);
    srv->disc = NULL;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

/* ---- admin: /ready and /metrics ---- */

/* One pass over the providers for /ready: a stale provider wins over one still waiting for its
 * first view, which counts only while <booting>. */
bool ing__disc_not_ready(struct ing_server *srv, bool booting, const char **why)
{
    struct ing_disc *d = srv->disc;
    bool waiting = false;

    for (unsigned i = 0; d != NULL && i < d->n; i++) {
        struct disc_status st;
        if (d->slots[i].p == NULL)
            continue;
        disc_provider_status(d->slots[i].p, &st);
        if (st.stale) {
            *why = "a discovery provider is stale";
            return true;
        }
        /* Delivered is not enough: until it is built and published (or rejected), traffic
         * would still meet the snapshot without it. */
        waiting |= st.updates == 0 || (d->slots[i].view == NULL && d->slots[i].rejected == NULL);
    }
    if (booting && waiting)
        *why = "waiting for the first view of a discovery provider";
    return booting && waiting;
}

static void esc(struct wr_sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            wr_sbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            wr_sbuf_addstr(b, "\\n");
        else
            wr_sbuf_add(b, s, 1);
    }
}

void ing__disc_metrics(struct ing_server *srv, struct wr_sbuf *b)
{
    struct ing_disc *d = srv->disc;

    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"weir_discovery_last_update_seconds", "gauge",
         "Unix time of the provider's last view (0: none yet)"},
        {"weir_discovery_updates_total", "counter", "Views delivered by the provider"},
        {"weir_discovery_errors_total", "counter", "Provider errors by reason"},
        {"weir_discovery_restarts_total", "counter",
         "Queries or watches started again after an error"},
        {"weir_discovery_stale", "gauge", "1 when the provider is older than stale_after_ms"},
    };

    if (d == NULL || d->n == 0)
        return;
    for (size_t k = 0; k < WR_ARRAY_LEN(m); k++) {
        wr_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name,
                       m[k].type);
        for (unsigned i = 0; i < d->n; i++) {
            struct disc_status st;
            if (d->slots[i].p == NULL)
                continue;
            disc_provider_status(d->slots[i].p, &st);
            if (k == 2) {
                for (unsigned r = 0; r < DISC_ERR_COUNT; r++) {
                    wr_sbuf_printf(b, "%s{provider=\"", m[k].name);
                    esc(b, d->slots[i].label);
                    wr_sbuf_printf(b, "\",reason=\"%s\"} %llu\n", disc_reason_name(r),
                                   (unsigned long long)st.errors[r]);
                }
                continue;
            }
            wr_sbuf_printf(b, "%s{provider=\"", m[k].name);
            esc(b, d->slots[i].label);
            wr_sbuf_addstr(b, "\"} ");
            if (k == 0)
                wr_sbuf_printf(b, "%.3f\n", st.last_update_s);
            else if (k == 1)
                wr_sbuf_printf(b, "%llu\n", (unsigned long long)st.updates);
            else if (k == 3)
                wr_sbuf_printf(b, "%llu\n", (unsigned long long)st.restarts);
            else
                wr_sbuf_printf(b, "%d\n", st.stale ? 1 : 0);
        }
    }
}
