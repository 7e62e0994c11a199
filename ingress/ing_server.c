/* ingress/ing_server.c -- the control thread: boot order, signals, reload, drain, shutdown.
 *
 * Boot: validate the file, create the stats registry for the worker count, build the first
 * snapshot, open the access log, bind the admin API, start the workers (each binds its own
 * SO_REUSEPORT sockets before its thread starts, so a bind failure stops the boot), then
 * report ready. Reload (SIGHUP): build a new snapshot; on success publish it to every worker,
 * on failure log every error and keep the old one. Drain (SIGTERM/SIGINT): INTERFACES.md §3.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weir/disc.h>
#include <weir/hc.h>

#include "ing_priv.h"

static struct xds_snapshot *hook_snapshot(void *arg)
{
    return ((struct ing_server *)arg)->snap;
}

static enum ing_state hook_state(void *arg)
{
    return (enum ing_state)atomic_load(&((struct ing_server *)arg)->state);
}

void ing__log_errors(const struct wr_sbuf *errors)
{
    const char *p = errors->p;

    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        wr_err("config: %.*s", (int)n, p);
        p = nl ? nl + 1 : NULL;
    }
}

/* ---- rollout weights set through the admin API ----
 *
 * A weight set with PUT /rollouts/NAME lives until that rollout changes in its source: it is
 * re-applied to every snapshot built from the file as long as the file still says what it said
 * when the weight was set (INTERFACES.md §2). */

struct ing_override {
    char *name;
    uint32_t weight;      /* the live weight */
    uint32_t file_weight; /* what the file said when it was set */
};

static struct ing_override *override_find(struct ing_server *srv, const char *name)
{
    for (unsigned i = 0; i < srv->n_overrides; i++)
        if (strcmp(srv->overrides[i].name, name) == 0)
            return &srv->overrides[i];
    return NULL;
}

static void override_drop(struct ing_server *srv, struct ing_override *o)
{
    free(o->name);
    *o = srv->overrides[--srv->n_overrides];
}

/* Applies the live weights to <s> (not yet published); forgets those whose source changed. */
static void overrides_apply(struct ing_server *srv, struct xds_snapshot *s)
{
    for (unsigned i = 0; i < srv->n_overrides;) {
        struct ing_override *o = &srv->overrides[i];
        const struct xds_rollout *ro = xds_rollout_find(s, o->name);
        if (ro == NULL || ro->green_weight != o->file_weight) {
            wr_info("rollout %s: the configuration changed it; the live weight %u is dropped",
                    o->name, o->weight);
            override_drop(srv, o);
            continue;
        }
        xds_rollout_set_weight(s, o->name, o->weight);
        i++;
    }
}

static void publish(struct ing_server *srv, struct xds_snapshot *s);

/* Builds from <text> (NULL: read the file; the text read is kept on success) and the views. */
static struct xds_snapshot *build(struct ing_server *srv, bool read_file, int with_pending,
                                  struct wr_sbuf *errors)
{
    unsigned n = ing__disc_count(srv);
    struct xds_view *views = wr_xcalloc(n + 1, sizeof(*views));
    char *text = NULL;
    struct xds_build_args a = {
        .path = srv->config_path,
        .text = read_file ? NULL : srv->config_text,
        .len = read_file ? 0 : strlen(srv->config_text),
        .text_out = read_file ? &text : NULL,
        .views = views,
        .n_views = ing__disc_views(srv, views, with_pending),
        .reg = srv->reg,
        .version = srv->next_version,
        .cache = srv->cache,
    };
    struct xds_snapshot *s = xds_config_build(&a, errors);

    free(views);
    if (s == NULL)
        return NULL;
    srv->next_version++;
    if (text != NULL) {
        free(srv->config_text);
        srv->config_text = text;
    }
    overrides_apply(srv, s);
    ing__disc_built(srv, s);
    return s;
}

struct xds_snapshot *ing__server_build(struct ing_server *srv, int with_pending,
                                       struct wr_sbuf *errors)
{
    return build(srv, false, with_pending, errors);
}

void ing__server_publish(struct ing_server *srv, struct xds_snapshot *s)
{
    publish(srv, s);
}

/* Hands <s> (one reference, ours) to every worker and makes it the current snapshot. */
static void publish(struct ing_server *srv, struct xds_snapshot *s)
{
    /* Health first: a worker adopting <s> must already see the flags of its endpoints (new
     * ones in their initial state, removed ones draining). */
    hc_manager_update(srv->hc, s);
    for (unsigned i = 0; i < srv->nworkers; i++)
        ing__worker_publish(&srv->workers[i], s);
    xds_snapshot_unref(srv->snap);
    srv->snap = s;
}

static void reload(struct ing_server *srv)
{
    struct wr_sbuf errors = {0};
    struct xds_snapshot *s;

    if (atomic_load(&srv->state) == ING_STATE_DRAINING)
        return;
    /* A reload re-reads everything: certificates and CA files of clusters too. It builds with
     * an empty cache, which replaces the old one only if the reload succeeds: after a failed
     * reload, discovery updates keep reusing what the running snapshot was built from. */
    struct xds_cache *old_cache = srv->cache;
    srv->cache = xds_cache_new();
    s = build(srv, true, -1, &errors);
    if (s == NULL) {
        xds_cache_free(srv->cache);
        srv->cache = old_cache;
        ing__log_errors(&errors);
        wr_err("reload of %s failed: the running configuration (version %s) stays",
               srv->config_path, srv->snap->version_str);
        wr_sbuf_dispose(&errors);
        return;
    }
    xds_cache_free(old_cache);
    wr_sbuf_dispose(&errors);
    if (ing__disc_sync(srv, s)) {
        /* A provider went away with the file's discovery entry: build without its view. */
        struct xds_snapshot *again = build(srv, false, -1, &errors);
        if (again != NULL) {
            xds_snapshot_unref(s);
            s = again;
        } else {
            ing__log_errors(&errors);
        }
        wr_sbuf_dispose(&errors);
    }
    if (s->workers != srv->nworkers)
        wr_warn("reload: \"workers\" changed to %u; the running %u workers stay until a restart",
                s->workers, srv->nworkers);
    if (strcmp(s->admin_address, srv->snap->admin_address) != 0)
        wr_warn("reload: admin.address changed; it takes effect at the next restart");
    ing__alog_open(srv, s->access_log); /* also reopens the file after log rotation */
    publish(srv, s);
    wr_info("configuration version %s loaded from %s", s->version_str, srv->config_path);
}

static int64_t hook_set_rollout(void *arg, const char *name, unsigned weight, const char **err)
{
    struct ing_server *srv = arg;
    struct wr_sbuf errors = {0};
    const struct xds_rollout *cur = xds_rollout_find(srv->snap, name);

    if (cur == NULL)
        return 0;
    if (atomic_load(&srv->state) == ING_STATE_DRAINING) {
        *err = "draining";
        return -1;
    }
    /* The live weight first, then the build applies it like every other override. A new
     * override remembers what the source said (no override of this name exists yet, so the
     * current snapshot shows the source's own value). */
    struct ing_override *o = override_find(srv, name);
    bool created = o == NULL;
    uint32_t before = 0;
    if (created) {
        srv->overrides = wr_xrealloc(srv->overrides, (srv->n_overrides + 1) * sizeof(*o));
        o = &srv->overrides[srv->n_overrides++];
        o->name = wr_xstrdup(name);
        o->file_weight = cur->green_weight;
    } else {
        before = o->weight;
    }
    o->weight = weight;
    /* Rebuild from the text of the last load, not the file: edits not yet reloaded with
     * SIGHUP must not slip in with a weight change. */
    struct xds_snapshot *s = build(srv, false, -1, &errors);
    if (s == NULL) {
        ing__log_errors(&errors);
        wr_sbuf_dispose(&errors);
        if (created)
            override_drop(srv, o);
        else
            o->weight = before;
        *err = "cannot rebuild the configuration";
        return -1;
    }
    wr_sbuf_dispose(&errors);
    publish(srv, s);
    wr_info("rollout %s: green weight %u (configuration version %s)", name, weight, s->version_str);
    return (int64_t)s->version;
}

/* /ready waits for each discovery provider's first view (at most INITIAL_SYNC_MS after boot, so
 * that a source that is down does not keep a weir with a working file out of service), and
 * fails while a provider with stale_after_ms is stale. */
#define INITIAL_SYNC_MS 5000

static bool hook_not_ready(void *arg, const char **why)
{
    struct ing_server *srv = arg;

    if (srv->disc == NULL)
        return false;
    return ing__disc_not_ready(srv, wr_mono_ns() / 1000000u - srv->boot_ms < INITIAL_SYNC_MS, why);
}

static void hook_extra_metrics(void *arg, struct wr_sbuf *b)
{
    ing__disc_metrics(arg, b);
}

static uint64_t hook_served_version(void *arg)
{
    struct ing_server *srv = arg;
    uint64_t v = UINT64_MAX;

    for (unsigned i = 0; i < srv->nworkers; i++) {
        uint64_t w = atomic_load_explicit(&srv->workers[i].served_version, memory_order_acquire);
        if (w < v)
            v = w;
    }
    return srv->nworkers ? v : 0;
}

/* ---- drain ---- */

static void on_drain_timer(uv_timer_t *t)
{
    struct ing_server *srv = WR_CONTAINER_OF(t, struct ing_server, drain_timer);

    if (srv->drain_phase == 1) {
        /* drain_delay_ms is over: stop accepting, close idle connections, finish busy ones. */
        srv->drain_phase = 2;
        for (unsigned i = 0; i < srv->nworkers; i++)
            ing__worker_command(&srv->workers[i], ING_CMD_DRAIN);
        uv_timer_start(&srv->drain_timer, on_drain_timer, srv->snap->drain_timeout_ms, 0);
        return;
    }
    if (srv->drain_phase == 2) {
        wr_warn("drain timeout: closing the connections still open");
        srv->drain_phase = 3;
        for (unsigned i = 0; i < srv->nworkers; i++)
            ing__worker_command(&srv->workers[i], ING_CMD_STOP);
    }
}

static void start_drain(struct ing_server *srv, const char *why)
{
    if (atomic_load(&srv->state) == ING_STATE_DRAINING) {
        if (srv->drain_phase < 3) {
            wr_warn("%s again: stopping now", why);
            srv->drain_phase = 3;
            for (unsigned i = 0; i < srv->nworkers; i++)
                ing__worker_command(&srv->workers[i], ING_CMD_STOP);
        }
        return;
    }
    atomic_store(&srv->state, ING_STATE_DRAINING);
    wr_info("%s: draining (delay %u ms, timeout %u ms)", why, srv->snap->drain_delay_ms,
            srv->snap->drain_timeout_ms);
    srv->drain_phase = 1;
    uv_timer_start(&srv->drain_timer, on_drain_timer, srv->snap->drain_delay_ms, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct ing_server *srv = h->data;

    if (signum == SIGHUP)
        reload(srv);
    else
        start_drain(srv, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- shutdown ---- */

static void on_exit_async(uv_async_t *h)
{
    struct ing_server *srv = WR_CONTAINER_OF(h, struct ing_server, exit_async);

    if (atomic_load(&srv->workers_exited) < srv->nworkers || srv->workers_joined)
        return;
    srv->workers_joined = true;
    for (unsigned i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].thread_started)
            uv_thread_join(&srv->workers[i].thread);
    uv_close((uv_handle_t *)&srv->exit_async, NULL);
    uv_close((uv_handle_t *)&srv->drain_timer, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
    ing__disc_close(srv);
    hc_manager_close(srv->hc); /* after the workers are joined: none reports any more */
    srv->hc = NULL;
    if (srv->admin != NULL)
        ing_admin_close(srv->admin);
    srv->admin = NULL;
    ing__alog_close(srv);
}

static void on_sweep(uv_timer_t *t)
{
    struct ing_server *srv = WR_CONTAINER_OF(t, struct ing_server, sweep_timer);

    xds_stats_reg_sweep(srv->reg);
    /* Session-ticket keys rotate every two hours (OpenSSL's default ticket lifetime); the
     * previous key still decrypts, so no ticket is refused inside its lifetime. */
    srv->ticket_age_ms += 10000;
    if (srv->ticket_age_ms >= 2 * 3600 * 1000) {
        srv->ticket_age_ms = 0;
        xds_tls_rotate_ticket_keys();
    }
}

/* Called by a worker thread right before it returns. */
void ing__server_worker_exited(struct ing_server *srv)
{
    atomic_fetch_add(&srv->workers_exited, 1);
    uv_async_send(&srv->exit_async);
}

static int boot_fail(struct ing_server *srv, int code)
{
    for (unsigned i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].thread_started)
            ing__worker_command(&srv->workers[i], ING_CMD_STOP);
    return code;
}

int ing_server_run(const struct ing_server_opts *opts)
{
    struct ing_server *srv = wr_xcalloc(1, sizeof(*srv));
    struct wr_sbuf errors = {0};
    struct xds_snapshot *probe;
    const char *err = NULL;
    uv_loop_t loop;
    int rc = 0;

    signal(SIGPIPE, SIG_IGN);
    srv->config_path = opts->config_path;
    probe = xds_config_load(opts->config_path, NULL, 0, &errors);
    if (probe == NULL) {
        fputs(errors.p ? errors.p : "config: cannot load\n", stderr);
        wr_sbuf_dispose(&errors);
        free(srv);
        return 1;
    }
    srv->nworkers = probe->workers;
    xds_snapshot_unref(probe);
    srv->reg = xds_stats_reg_new(srv->nworkers);
    srv->cache = xds_cache_new();
    srv->next_version = 1;
    srv->snap = build(srv, true, -1, &errors);
    if (srv->snap == NULL) {
        fputs(errors.p ? errors.p : "config: cannot load\n", stderr);
        wr_sbuf_dispose(&errors);
        xds_cache_free(srv->cache);
        xds_stats_reg_free(srv->reg);
        free(srv);
        return 1;
    }
    wr_sbuf_dispose(&errors);
    srv->boot_ms = wr_mono_ns() / 1000000u;
    uv_loop_init(&loop);
    srv->loop = &loop;
    uv_timer_init(&loop, &srv->drain_timer);
    uv_timer_init(&loop, &srv->sweep_timer);
    uv_async_init(&loop, &srv->exit_async, on_exit_async);
    ing__alog_init(srv);
    if (ing__alog_open(srv, srv->snap->access_log) < 0)
        wr_warn("access log disabled until a reload opens it");
    uv_signal_init(&loop, &srv->sig_hup);
    uv_signal_init(&loop, &srv->sig_term);
    uv_signal_init(&loop, &srv->sig_int);
    srv->sig_hup.data = srv->sig_term.data = srv->sig_int.data = srv;
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    struct ing_admin_hooks hooks = {.snapshot = hook_snapshot,
                                    .state = hook_state,
                                    .set_rollout = hook_set_rollout,
                                    .served_version = hook_served_version,
                                    .not_ready = hook_not_ready,
                                    .extra_metrics = hook_extra_metrics,
                                    .arg = srv};
    srv->admin = ing_admin_start(&loop, srv->snap, &hooks, &err);
    if (srv->admin == NULL) {
        wr_err("admin API: cannot listen on %s: %s", srv->snap->admin_address, err);
        rc = 1;
    }
    srv->hc = hc_manager_new(&loop);
    hc_manager_update(srv->hc, srv->snap);
    srv->workers = wr_xcalloc(srv->nworkers, sizeof(*srv->workers));
    for (unsigned i = 0; i < srv->nworkers && rc == 0; i++) {
        srv->workers[i].idx = i;
        srv->workers[i].srv = srv;
        if (ing__worker_start(&srv->workers[i]) != 0) {
            wr_err("worker %u: cannot start (see above)", i);
            rc = 1;
        } else {
            srv->workers[i].thread_started = true;
        }
    }
    if (rc != 0) {
        boot_fail(srv, rc);
        atomic_store(&srv->state, ING_STATE_DRAINING);
        /* Workers that never started count as exited. */
        for (unsigned i = 0; i < srv->nworkers; i++)
            if (!srv->workers[i].thread_started)
                ing__server_worker_exited(srv);
    } else {
        uv_timer_start(&srv->sweep_timer, on_sweep, 10000, 10000);
        ing__disc_sync(srv, srv->snap);
        atomic_store(&srv->state, ING_STATE_READY);
        wr_info("weir %s ready: configuration version %s, %u workers, %u listeners", WEIR_VERSION,
                srv->snap->version_str, srv->nworkers, srv->snap->n_listeners);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        wr_warn("control loop closed with handles left");
    for (unsigned i = 0; i < srv->nworkers; i++)
        ing__worker_dispose(&srv->workers[i]);
    free(srv->workers);
    xds_snapshot_unref(srv->snap);
    xds_cache_free(srv->cache);
    while (srv->n_overrides > 0)
        override_drop(srv, &srv->overrides[0]);
    free(srv->overrides);
    free(srv->config_text);
    xds_stats_reg_sweep(srv->reg);
    xds_stats_reg_free(srv->reg);
    if (rc == 0)
        wr_info("drained, exiting");
    free(srv);
    return rc;
}
