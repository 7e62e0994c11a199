/* ingress/ing_discovery.c -- the control thread's side of discovery.
 *
 * Runs the providers the config names (discovery/), keeps each one's last ACCEPTED view and
 * rebuilds the snapshot when a view changes. A new view is accepted only if the snapshot built
 * with it is valid; otherwise its errors are logged and the provider's previous view stays
 * (the same rule as an invalid file on SIGHUP). Views arriving close together are coalesced:
 * the rebuild runs on a short timer, so 1,000 answers in one loop turn cost one build.
 *
 * Providers survive reloads when their settings did not change (their view stays with them);
 * a provider whose entry changed or went away is closed, and its view with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/disc.h>

#include "ing_priv.h"

#define COALESCE_MS 2

struct ing_disc_slot {
    struct disc_provider *p;
    char *settings;  /* identity of the config entry */
    uint8_t source;  /* enum xds_source */
    json_t *view;    /* the last accepted view (NULL: none yet) */
    json_t *pending; /* a view waiting for the next rebuild */
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

    wr_sbuf_printf(&b, "%u\x01%u\x01%u\x01", d->type, d->wait_ms, d->stale_after_ms);
    add_str(&b, d->path);
    add_str(&b, d->name);
    add_str(&b, d->cluster);
    for (uint32_t i = 0; i < d->n_resolvers; i++)
        add_str(&b, d->resolvers[i]);
    add_str(&b, d->address);
    add_str(&b, d->token_file);
    add_str(&b, d->ca_file);
    add_str(&b, d->datacenter);
    add_str(&b, d->kubeconfig);
    add_str(&b, d->ingress_class);
    for (uint32_t i = 0; i < d->n_namespaces; i++)
        add_str(&b, d->namespaces[i]);
    add_str(&b, d->publish_address);
    add_str(&b, d->publish_service);
    return b.p;
}

/* The views to build with: accepted ones, or for slot <with> its pending one. */
unsigned ing__disc_views(struct ing_server *srv, struct xds_view *out, int with)
{
    struct ing_disc *d = srv->disc;
    unsigned n = 0;

    for (unsigned i = 0; d != NULL && i < d->n; i++) {
        struct ing_disc_slot *sl = &d->slots[i];
        json_t *v = (int)i == with && sl->pending != NULL ? sl->pending : sl->view;
        if (v == NULL)
            continue;
        struct disc_status st;
        disc_provider_status(sl->p, &st);
        out[n++] = (struct xds_view){.label = st.label, .source = sl->source, .view = v};
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

static void on_rebuild(uv_timer_t *t)
{
    struct ing_disc *d = t->data;
    struct ing_server *srv = d->srv;
    uint64_t t0 = wr_mono_ns();

    /* One build per pending view: the common case is one; a view that does not build is
     * rejected alone, without holding back another provider's good one. */
    for (unsigned i = 0; i < d->n; i++) {
        struct ing_disc_slot *sl = &d->slots[i];
        if (sl->pending == NULL)
            continue;
        struct wr_sbuf errors = {0};
        struct xds_snapshot *s = ing__server_build(srv, (int)i, &errors);
        if (s == NULL) {
            struct disc_status st;
            disc_provider_status(sl->p, &st);
            ing__log_errors(&errors);
            wr_err("discovery[%u] %s: the new view does not build; its previous view stays", i,
                   st.label);
            json_decref(sl->pending);
            sl->pending = NULL;
            wr_sbuf_dispose(&errors);
            continue;
        }
        wr_sbuf_dispose(&errors);
        json_decref(sl->view);
        sl->view = sl->pending;
        sl->pending = NULL;
        ing__server_publish(srv, s);
        wr_info("discovery[%u]: configuration version %s published (%u clusters, %u routes, "
                "%.1f ms)",
                i, s->version_str, s->n_clusters, s->n_routes, (double)(wr_mono_ns() - t0) / 1e6);
    }
}

static void on_view(void *arg, struct disc_provider *p, json_t *view)
{
    struct ing_disc *d = arg;
    unsigned i = disc_provider_index(p);

    if (i >= d->n || d->slots[i].p != p || atomic_load(&d->srv->state) == ING_STATE_DRAINING) {
        json_decref(view);
        return;
    }
    json_decref(d->slots[i].pending);
    d->slots[i].pending = view;
    if (!uv_is_active((uv_handle_t *)&d->timer))
        uv_timer_start(&d->timer, on_rebuild, COALESCE_MS, 0);
}

/* Makes the running providers match s->discovery (boot, and after each successful reload).
 * Returns true when a provider was closed (its view left: the caller rebuilds). */
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

    for (uint32_t i = 0; i < s->n_discovery; i++) {
        char *key = settings_key(&s->discovery[i]);
        for (unsigned j = 0; j < d->n; j++) {
            if (kept[j] || d->slots[j].p == NULL || strcmp(d->slots[j].settings, key) != 0 ||
                j != i) /* the index is the provider's identity in callbacks */
                continue;
            slots[i] = d->slots[j];
            kept[j] = true;
            break;
        }
        if (slots[i].p == NULL) {
            slots[i].settings = key;
            slots[i].source = s->discovery[i].type;
            slots[i].p = disc_provider_new(srv->loop, &s->discovery[i], i, NULL, on_view, d);
            created[i] = slots[i].p != NULL;
        } else {
            free(key);
        }
    }
    for (unsigned j = 0; j < d->n; j++) {
        if (kept[j])
            continue;
        disc_provider_close(d->slots[j].p);
        dropped |= d->slots[j].view != NULL;
        json_decref(d->slots[j].view);
        json_decref(d->slots[j].pending);
        free(d->slots[j].settings);
    }
    free(kept);
    free(d->slots);
    d->slots = slots;
    d->n = s->n_discovery;
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
        json_decref(d->slots[i].view);
        json_decref(d->slots[i].pending);
        free(d->slots[i].settings);
    }
    free(d->slots);
    free(d->last_conflicts);
    srv->disc = NULL;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

/* ---- admin: /ready and /metrics ---- */

bool ing__disc_stale(struct ing_server *srv, const char **why)
{
    struct ing_disc *d = srv->disc;

    for (unsigned i = 0; d != NULL && i < d->n; i++) {
        struct disc_status st;
        if (d->slots[i].p == NULL)
            continue;
        disc_provider_status(d->slots[i].p, &st);
        if (st.stale) {
            *why = "a discovery provider is stale";
            return true;
        }
    }
    return false;
}

bool ing__disc_waiting(struct ing_server *srv, const char **why)
{
    struct ing_disc *d = srv->disc;

    for (unsigned i = 0; d != NULL && i < d->n; i++) {
        struct disc_status st;
        if (d->slots[i].p == NULL)
            continue;
        disc_provider_status(d->slots[i].p, &st);
        if (st.updates == 0) {
            *why = "waiting for the first view of a discovery provider";
            return true;
        }
    }
    return false;
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
                    esc(b, st.label);
                    wr_sbuf_printf(b, "\",reason=\"%s\"} %llu\n", disc_reason_name(r),
                                   (unsigned long long)st.errors[r]);
                }
                continue;
            }
            wr_sbuf_printf(b, "%s{provider=\"", m[k].name);
            esc(b, st.label);
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
