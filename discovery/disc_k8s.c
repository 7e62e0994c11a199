/* discovery/disc_k8s.c -- the "kubernetes" provider (INTERFACES.md §2 and §4).
 *
 * It runs one list+watch per kind and namespace (disc_k8s_watch.c) into an object cache
 * (disc_k8s_store.c), and builds the view from the whole cache (disc_k8s_view.c) on a short
 * timer after any change, so that a burst of events (a list of a thousand Services, a rolling
 * update) costs one build and one publication, and a single change is published within a few
 * milliseconds. A view equal to the last one is not published again.
 *
 * Watched: Services, EndpointSlices and Ingresses in each configured namespace (or in all,
 * with one cluster-wide watch each), IngressClasses (cluster-scoped), and each Secret that the
 * view references, alone (fieldSelector=metadata.name=NAME): weir never reads the other
 * Secrets, and RBAC may narrow its access to them by resourceNames.
 *
 * The first view waits until every watch has listed once (and every referenced Secret was
 * asked for), so weir never serves a half-known cluster. Afterwards a failure of the API
 * server changes nothing: the cache and the last view stay, and the watches retry with
 * back-off.
 */
#include "disc_k8s.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COALESCE_MS     1
#define WATCH_TIMEOUT_S 300 /* minimum; each watch asks for 1x..2x this (as client-go) */

static void boot(struct k8s *k);
static void on_publish(uv_timer_t *t);

/* ---- requests ----------------------------------------------------------------------------- */

struct disc_http_req *k8s__request(struct k8s *k, struct disc_http_opts *o, const char *path)
{
    static const char *const json_accept[] = {"Accept: application/json", NULL};
    char *err = NULL;
    const char *token = disc_kube_token(&k->kube, &err);

    if (err != NULL) {
        disc__error(k->p, DISC_ERR_AUTH, "%s", err);
        free(err);
        return NULL;
    }
    char *url = wr_xasprintf("%s%s", k->kube.server, path);
    o->url = url;
    if (o->headers == NULL)
        o->headers = json_accept;
    o->token = token;
    o->ca_file = k->kube.ca_file;
    o->cert_file = k->kube.cert_file;
    o->key_file = k->kube.key_file;
    o->insecure = k->kube.insecure;
    if (o->connect_timeout_ms == 0)
        o->connect_timeout_ms = 5000;
    struct disc_http_req *r = disc_http_start(k->http, o);
    free(url);
    return r;
}

void k8s__alive(struct k8s *k)
{
    if (k->p != NULL)
        disc__alive(k->p);
}

void k8s__watch_error(struct k8s_watch *w, enum disc_reason reason, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (w->k->p != NULL)
        disc__error(w->k->p, reason, "%s", msg);
}

/* ---- publication -------------------------------------------------------------------------- */

void k8s__changed(struct k8s *k)
{
    k->dirty = true;
    if (k->timer_open && !k->closing && !uv_is_active((uv_handle_t *)&k->publish_timer))
        uv_timer_start(&k->publish_timer, on_publish, COALESCE_MS, 0);
}

/* May a view be published now? Not before every watch listed once, nor in the middle of a
 * paged list (half of the objects would be new and half old). */
static bool ready(const struct k8s *k)
{
    for (const struct k8s_watch *w = k->watches; w != NULL; w = w->next) {
        if (w->cont != NULL)
            return false;
        if (k->published)
            continue;
        if (w->kind == K8S_SECRETS ? !w->tried : !w->synced)
            return false;
    }
    return true;
}

static struct k8s_watch *find_secret(struct k8s *k, const char *key)
{
    for (struct k8s_watch *w = k->watches; w != NULL; w = w->next) {
        size_t n = w->ns != NULL ? strlen(w->ns) : 0;
        if (w->kind == K8S_SECRETS && strncmp(key, w->ns, n) == 0 && key[n] == '/' &&
            strcmp(key + n + 1, w->name) == 0)
            return w;
    }
    return NULL;
}

/* Starts a watch for each Secret <wanted> names and stops those it no longer names. Returns
 * true when a new one started. */
static bool sync_secrets(struct k8s *k, json_t *wanted)
{
    const char *key;
    json_t *v;
    bool started = false;

    for (struct k8s_watch *w = k->watches; w != NULL; w = w->next)
        w->used = false;
    json_object_foreach(wanted, key, v)
    {
        struct k8s_watch *w = find_secret(k, key);
        if (w == NULL) {
            const char *slash = strchr(key, '/');
            char *ns = wr_xstrndup(key, (size_t)(slash - key));
            w = k8s__watch_new(k, K8S_SECRETS, ns, slash + 1);
            free(ns);
            k8s__watch_start(w);
            started = true;
        }
        w->used = true;
    }
    for (struct k8s_watch *w = k->watches, *next; w != NULL; w = next) {
        next = w->next;
        if (w->kind != K8S_SECRETS || w->used)
            continue;
        char skey[512];
        bool changed = false;
        snprintf(skey, sizeof(skey), "%s/%s", w->ns, w->name);
        k8s__store_del(k->stores[K8S_SECRETS], K8S_SECRETS, skey, NULL, &changed);
        k8s__watch_close(w);
    }
    return started;
}

static void log_problems(struct k8s *k, json_t *problems)
{
    const char *line;
    json_t *v;

    json_object_foreach(problems, line, v)
    {
        if (json_object_get(k->last_problems, line) == NULL)
            wr_warn("discovery[%u] %s: %s", k->p->index, k->p->label, line);
    }
    json_decref(k->last_problems);
    k->last_problems = json_incref(problems);
}

static void build_and_publish(struct k8s *k)
{
    json_t *known = json_object();
    struct k8s_view_out out;

    for (struct k8s_watch *w = k->watches; w != NULL; w = w->next) {
        if (w->kind != K8S_SECRETS || !w->synced)
            continue;
        char key[512];
        snprintf(key, sizeof(key), "%s/%s", w->ns, w->name);
        json_object_set_new(known, key, json_true());
    }
    struct k8s_view_in in = {
        .stores = k->stores,
        .ingress_class = k->p->cfg.ingress_class ? k->p->cfg.ingress_class : "weir",
        .secrets_known = known,
        .cluster_cache = k->cluster_cache,
    };
    const char *svc;
    json_t *v;
    json_object_foreach(k->dirty_svcs, svc, v)
    {
        json_object_del(k->cluster_cache, svc);
    }
    json_object_clear(k->dirty_svcs);
    uint64_t t0 = wr_mono_ns();
    k8s__view_build(&in, &out);
    uint64_t t1 = wr_mono_ns();
    json_decref(known);
    log_problems(k, out.problems);
    bool new_secrets = sync_secrets(k, out.secrets);
    if (k->lease != NULL) {
        json_decref(k->ingresses);
        k->ingresses = json_incref(out.ingresses);
        k8s__lease_sync(k->lease);
    }
    if (new_secrets && !k->published) { /* the first view waits for its certificates */
        k8s__view_dispose(&out);
        return;
    }
    bool same = k->last_view != NULL && json_equal(k->last_view, out.view);
    wr_debug("discovery[%u]: view built in %.1f ms (compared in %.1f ms)", k->p->index,
             (double)(t1 - t0) / 1e6, (double)(wr_mono_ns() - t1) / 1e6);
    if (same) {
        disc__alive(k->p);
        k8s__view_dispose(&out);
        return;
    }
    json_decref(k->last_view);
    k->last_view = json_incref(out.view);
    k->published = true;
    disc__backoff_reset(k->p);
    disc__publish(k->p, json_incref(out.view));
    k8s__view_dispose(&out);
}

static void on_publish(uv_timer_t *t)
{
    struct k8s *k = t->data;

    if (!k->dirty || k->closing || !ready(k))
        return; /* a list that completes calls k8s__changed() again */
    k->dirty = false;
    build_and_publish(k);
}

/* ---- life --------------------------------------------------------------------------------- */

static void add_watches(struct k8s *k)
{
    const struct xds_discovery *c = &k->p->cfg;

    static const enum k8s_kind namespaced[] = {K8S_SERVICES, K8S_SLICES, K8S_INGRESSES};

    bool covered = c->n_namespaces == 0;

    k8s__watch_new(k, K8S_CLASSES, NULL, NULL);
    for (unsigned i = 0; i < WR_ARRAY_LEN(namespaced); i++) {
        if (c->n_namespaces == 0)
            k8s__watch_new(k, namespaced[i], NULL, NULL);
        for (uint32_t j = 0; j < c->n_namespaces; j++)
            k8s__watch_new(k, namespaced[i], c->namespaces[j], NULL);
    }
    if (c->publish_service != NULL) { /* its status.loadBalancer is copied to Ingresses */
        const char *slash = strchr(c->publish_service, '/');
        char *ns = wr_xstrndup(c->publish_service, (size_t)(slash - c->publish_service));
        for (uint32_t j = 0; j < c->n_namespaces; j++)
            covered |= strcmp(c->namespaces[j], ns) == 0;
        if (!covered)
            k8s__watch_new(k, K8S_SERVICES, ns, slash + 1);
        free(ns);
    }
}

static void on_boot_timer(uv_timer_t *t)
{
    boot(t->data);
}

/* Reads the settings (kubeconfig or in-cluster) and starts the watches; retried with back-off
 * while the settings cannot be read (a kubeconfig or token mounted late). */
static void boot(struct k8s *k)
{
    char *err = NULL;

    if (k->closing)
        return;
    if (disc_kube_load(&k->kube, k->p->cfg.kubeconfig, NULL, &err) != 0) {
        disc__error(k->p, DISC_ERR_AUTH, "%s", err);
        free(err);
        uv_timer_start(&k->boot_timer, on_boot_timer, disc__backoff_next(k->p), 0);
        return;
    }
    wr_info("discovery[%u]: Kubernetes API %s (%s), %s", k->p->index, k->kube.server,
            k->kube.source,
            k->p->cfg.n_namespaces ? "the configured namespaces" : "all namespaces");
    add_watches(k);
    if (k->p->cfg.publish_address != NULL || k->p->cfg.publish_service != NULL) {
        k->lease = k8s__lease_new(k);
        k8s__lease_start(k->lease);
    }
    for (struct k8s_watch *w = k->watches; w != NULL; w = w->next)
        k8s__watch_start(w);
}

static int k8s_init(struct disc_provider *p)
{
    struct k8s *k = wr_xcalloc(1, sizeof(*k));

    k->p = p;
    for (unsigned i = 0; i < K8S_KINDS; i++)
        k->stores[i] = json_object();
    k->watch_timeout_s = WATCH_TIMEOUT_S;
    k->rng = p->rng ^ 0x6b38735f77617463ull;
    k->last_problems = json_object();
    k->dirty_svcs = json_object();
    k->cluster_cache = json_object();
    p->impl = k;
    return 0;
}

static int k8s_start(struct disc_provider *p)
{
    struct k8s *k = p->impl;

    k->http = disc_http_new(p->loop);
    if (k->http == NULL)
        return WR_ENOMEM;
    k->open_handles = 3; /* the HTTP client and two timers */
    uv_timer_init(p->loop, &k->publish_timer);
    uv_timer_init(p->loop, &k->boot_timer);
    k->publish_timer.data = k->boot_timer.data = k;
    k->timer_open = true;
    boot(k);
    return 0;
}

static void k8s_free(struct k8s *k)
{
    struct disc_provider *p = k->p;

    for (unsigned i = 0; i < K8S_KINDS; i++)
        json_decref(k->stores[i]);
    json_decref(k->last_view);
    json_decref(k->last_problems);
    json_decref(k->ingresses);
    json_decref(k->dirty_svcs);
    json_decref(k->cluster_cache);
    disc_kube_dispose(&k->kube);
    free(k);
    disc__closed(p);
}

void k8s__handle_closed(struct k8s *k)
{
    if (--k->open_handles == 0)
        k8s_free(k);
}

static void on_timer_closed(uv_handle_t *h)
{
    k8s__handle_closed(h->data);
}

static void on_http_closed(void *arg)
{
    k8s__handle_closed(arg);
}

static void k8s_close(struct disc_provider *p)
{
    struct k8s *k = p->impl;

    k->closing = true;
    if (!k->timer_open) { /* never started */
        k8s_free(k);
        return;
    }
    /* Everything that holds a request goes first; the client closes last. */
    while (k->watches != NULL)
        k8s__watch_close(k->watches);
    if (k->lease != NULL)
        k8s__lease_close(k->lease);
    uv_close((uv_handle_t *)&k->publish_timer, on_timer_closed);
    uv_close((uv_handle_t *)&k->boot_timer, on_timer_closed);
    disc_http_close(k->http, on_http_closed, k);
}

const struct disc_ops disc__k8s_ops = {
    .type = "kubernetes",
    .init = k8s_init,
    .start = k8s_start,
    .close = k8s_close,
};
