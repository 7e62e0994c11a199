/* discovery/disc_consul.c -- the "consul" provider: services tagged weir.expose=true become
 * routes to the instances that pass their checks, and KV rollouts split them (INTERFACES.md
 * §4b; docs/consul.md). Reading answers and writing the view is disc_consul_view.c.
 *
 * Watches. Everything is a blocking query (developer.hashicorp.com/consul/api-docs/features/
 * blocking) kept going by a struct consul_watch:
 *   - /v1/catalog/services: which services exist and their tags; its answers start and stop
 *     the health watches (reconcile());
 *   - /v1/health/service/NAME?passing, one per exposed service and per blue/green service of a
 *     KV rollout;
 *   - /v1/kv/weir/rollouts/?recurse: the rollouts.
 * Each query sends the last X-Consul-Index as `index` with `wait`; the HTTP timeout is wait +
 * wait/16 (the most jitter Consul adds) + a margin. The index rules of Consul's "Implementation
 * details" are in consul__next_index(): an index that goes backwards restarts the loop from 0,
 * and an index below 1 is used as 1. The loop is rate-limited rather than slept: queries of one
 * watch start at least MIN_INTERVAL_MS apart, and answers that come back at once with an
 * unchanged index (a misbehaving agent) stretch that gap exponentially up to 10 s. Queries that
 * do not block (first reads) are at most MAX_FETCHES out at once; the others wait in c->queued.
 *
 * Failures. An error of one query (a 403 on one service, an answer that does not parse) backs
 * that watch off on its own schedule. An error that concerns every query alike (no connection,
 * a timeout, a 5xx or 429, a 403 "ACL not found" for the token) parks the watch instead: while
 * Consul is down a single probe, the oldest parked watch, retries on the provider's back-off
 * (disc__backoff_next()), rather than every watch hammering an agent on its way back up. The
 * first answer to a query sent since the failure wakes the parked watches, each after a random
 * part of its own back-off, so they come back spread out. Nothing is published meanwhile: the
 * last good view stays.
 *
 * Publishing. Answers only change the provider's tables; a change arms a FLUSH_MS timer that
 * renders and publishes the whole view, so the answers that arrive together make one view. The
 * first view waits until the catalog answered and every watch it started (and the KV one) had
 * its first answer or error, so a start does not publish 1,000 partial views.
 *
 * ACL token: read from token_file, which is checked every second (stat) and read again when it
 * changed, so a rotated token is used from the next query on and watches failing meanwhile are
 * retried at once. Without a readable token no query is sent: an anonymous query would answer
 * an empty catalog, which would withdraw every route.
 */
#include "disc_consul.h"

#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define MIN_INTERVAL_MS    100   /* between two queries of one watch */
#define MAX_EARLY_GAP_MS   10000 /* the longest gap for a watch that does not block */
#define FLUSH_MS           2     /* answers arriving together make one view */
#define TOKEN_CHECK_MS     1000
#define HTTP_MARGIN_MS     5000 /* over wait + wait/16 */
#define CONNECT_TIMEOUT_MS 5000
#define FETCH_TIMEOUT_MS   15000 /* a query that does not block */
#define MAX_FETCHES        64    /* queries that do not block, out at once */

enum { M_EXPOSE = 1, M_COLOUR = 2 };

static uint64_t now_ms(void)
{
    return wr_mono_ns() / 1000000u;
}

static void watch_query(struct consul_watch *w, bool probe);
static void on_svc_closed(uv_handle_t *h);
static void on_probe(uv_timer_t *t);

static struct consul_svc *svc_of(struct consul_watch *w)
{
    return WR_CONTAINER_OF(w, struct consul_svc, w);
}

static const char *watch_name(struct consul_watch *w, char *buf, size_t len)
{
    if (w->kind == CW_CATALOG)
        return "catalog";
    if (w->kind == CW_KV)
        return "KV weir/rollouts/";
    snprintf(buf, len, "service %s", svc_of(w)->name);
    return buf;
}

/* ---- publishing ------------------------------------------------------------------------------ */

static void on_flush(uv_timer_t *t)
{
    struct consul *c = t->data;

    if (!c->dirty || c->closing)
        return;
    c->dirty = false;
    uint64_t t0 = wr_mono_ns();
    json_t *view = consul__render(c);
    /* Some changes do not show (a rollout whose green has not answered yet): publish only a
     * view that differs from the last one. */
    if (c->last_view != NULL && consul__same_view(view, c->last_view)) {
        json_decref(view);
        return;
    }
    json_decref(c->last_view);
    c->last_view = json_incref(view);
    wr_debug("discovery[%u] %s: view rendered in %.2f ms", c->p->index, c->p->label,
             (double)(wr_mono_ns() - t0) / 1e6);
    disc__publish(c->p, view);
}

static void mark_dirty(struct consul *c)
{
    c->dirty = true;
    if (c->synced && !uv_is_active((uv_handle_t *)&c->flush))
        uv_timer_start(&c->flush, on_flush, FLUSH_MS, 0);
}

/* The first view goes out once everything started has had its first outcome. */
static void maybe_synced(struct consul *c)
{
    if (c->synced || !c->catalog.answered || !c->kv.attempted)
        return;
    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b]; s != NULL; s = s->next)
            if ((s->exposed || s->in_rollout) && !s->w.attempted)
                return;
    c->synced = true;
    mark_dirty(c);
}

/* ---- watches: scheduling ------------------------------------------------------------------- */

static void on_watch_timer(uv_timer_t *t)
{
    struct consul_watch *w = t->data;

    w->state = CW_IDLE;
    watch_query(w, false);
}

static void watch_wait(struct consul_watch *w, uint64_t delay_ms)
{
    w->state = CW_WAITING;
    uv_timer_start(&w->timer, on_watch_timer, delay_ms, 0);
}

/* Starts the next query of <w> as soon as its rate limit allows. */
static void watch_kick(struct consul_watch *w)
{
    if (w->c->closing || w->state != CW_IDLE)
        return;
    uint64_t gap = MIN_INTERVAL_MS;
    if (w->early > 0)
        gap = WR_MIN((uint64_t)MIN_INTERVAL_MS << WR_MIN(w->early, 10u), MAX_EARLY_GAP_MS);
    uint64_t now = now_ms();
    if (w->started_ms != 0 && now < w->started_ms + gap)
        watch_wait(w, w->started_ms + gap - now);
    else
        watch_query(w, false);
}

static void on_probe(uv_timer_t *t)
{
    struct consul *c = t->data;

    if (wr_list_empty(&c->parked)) {
        c->agent_down = false;
        return;
    }
    struct consul_watch *w = WR_CONTAINER_OF(c->parked.next, struct consul_watch, link);
    wr_list_remove(&w->link);
    w->state = CW_IDLE;
    watch_query(w, true);
}

/* Consul looks unreachable: <w> waits for a probe to get through. */
static void watch_park(struct consul_watch *w)
{
    struct consul *c = w->c;

    w->state = CW_PARKED;
    if (w->kind == CW_CATALOG) /* the cheapest and most telling probe */
        wr_list_insert_head(&c->parked, &w->link);
    else
        wr_list_insert_tail(&c->parked, &w->link);
    if (!uv_is_active((uv_handle_t *)&c->probe_timer))
        uv_timer_start(&c->probe_timer, on_probe, disc__backoff_next(c->p), 0);
}

/* Consul answered: the parked watches go again, each after a random part of its own back-off,
 * so that they do not all arrive in the same instant. */
static void agent_up(struct consul *c)
{
    if (!c->agent_down)
        return;
    c->agent_down = false;
    disc__backoff_reset(c->p);
    uv_timer_stop(&c->probe_timer);
    while (!wr_list_empty(&c->parked)) {
        struct consul_watch *w = WR_CONTAINER_OF(c->parked.next, struct consul_watch, link);
        wr_list_remove(&w->link);
        uint64_t spread = WR_MAX(w->backoff_ms, 250u);
        watch_wait(w, MIN_INTERVAL_MS + wr_rand_next(&c->p->rng) % spread);
    }
}

static void watch_failed(struct consul_watch *w, enum disc_reason reason, bool agent_level,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void watch_failed(struct consul_watch *w, enum disc_reason reason, bool agent_level,
                         const char *fmt, ...)
{
    struct consul *c = w->c;
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    disc__error(c->p, reason, "%s; the last good view stays", msg);
    w->failing = true;
    w->attempted = true;
    maybe_synced(c);
    uint32_t delay = disc__backoff_step(c->p, &w->backoff_ms);
    if (agent_level) {
        if (!c->agent_down)
            c->down_since_ms = now_ms();
        c->agent_down = true;
        watch_park(w);
    } else
        watch_wait(w, delay);
}

/* Watches that failed are tried again now (the token changed). */
static void retry_failed(struct consul *c)
{
    struct consul_watch *fixed[] = {&c->catalog, &c->kv};

    for (unsigned i = 0; i < WR_ARRAY_LEN(fixed); i++)
        if (fixed[i]->failing && fixed[i]->state == CW_WAITING) {
            uv_timer_stop(&fixed[i]->timer);
            fixed[i]->state = CW_IDLE;
            watch_kick(fixed[i]);
        }
    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b]; s != NULL; s = s->next)
            if (s->w.failing && s->w.state == CW_WAITING) {
                uv_timer_stop(&s->w.timer);
                s->w.state = CW_IDLE;
                watch_kick(&s->w);
            }
}

/* ---- the ACL token -------------------------------------------------------------------------- */

static void token_problem(struct consul *c, const char *msg)
{
    if (c->token_problem != NULL && strcmp(c->token_problem, msg) == 0)
        return;
    free(c->token_problem);
    c->token_problem = wr_xstrdup(msg);
    disc__error(c->p, DISC_ERR_AUTH, "%s", msg);
}

/* Reads the token file again if it changed. */
static void token_refresh(struct consul *c)
{
    const char *path = c->p->cfg.token_file;
    struct stat st;
    char msg[512];

    if (path == NULL)
        return;
    if (stat(path, &st) != 0) {
        snprintf(msg, sizeof(msg), "token file %s: %s%s", path, strerror(errno),
                 c->token ? "; using the token read before" : "");
        token_problem(c, msg);
        return;
    }
    struct stat_sig sig = {(long long)st.st_ino, (long long)st.st_size,
                           (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
    if (c->token != NULL && memcmp(&sig, &c->token_sig, sizeof(sig)) == 0)
        return;
    size_t len;
    char *tok = disc__read_file(path, &len, true);
    if (tok == NULL || len == 0) {
        snprintf(msg, sizeof(msg), "token file %s: %s", path, tok ? "empty" : strerror(errno));
        free(tok);
        token_problem(c, msg);
        return;
    }
    c->token_sig = sig;
    wr_free(&c->token_problem);
    if (c->token != NULL && strcmp(c->token, tok) == 0) {
        free(tok);
        return;
    }
    if (c->token != NULL)
        wr_info("discovery[%u] %s: the ACL token changed; using it from now on", c->p->index,
                c->p->label);
    free(c->token);
    c->token = tok;
    retry_failed(c);
    if (c->agent_down && !wr_list_empty(&c->parked)) /* parked by a refused token: try now */
        uv_timer_start(&c->probe_timer, on_probe, 0, 0);
}

static void on_token_timer(uv_timer_t *t)
{
    token_refresh(t->data);
}

/* ---- watches: queries ------------------------------------------------------------------------ */

static char *watch_url(struct consul_watch *w)
{
    struct consul *c = w->c;
    struct wr_sbuf u = {0};

    wr_sbuf_addstr(&u, c->base);
    switch (w->kind) {
    case CW_CATALOG:
        wr_sbuf_addstr(&u, "/v1/catalog/services?");
        break;
    case CW_KV:
        wr_sbuf_addstr(&u, "/v1/kv/weir/rollouts/?recurse=1&");
        break;
    default: /* names are checked by consul__name_ok(): nothing to escape */
        wr_sbuf_printf(&u, "/v1/health/service/%s?passing=1&", svc_of(w)->name);
        break;
    }
    if (w->index > 0)
        wr_sbuf_printf(&u, "index=%llu&wait=%ums&", (unsigned long long)w->index, c->wait_ms);
    wr_sbuf_addstr(&u, c->dc_param);
    u.p[--u.len] = '\0'; /* the last '&' or '?' */
    return u.p;
}

static void on_watch_header(void *arg, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    struct consul_watch *w = arg;
    char buf[32];

    if (name_len == 14 && strncasecmp(name, "X-Consul-Index", 14) == 0 && value_len > 0 &&
        value_len < sizeof(buf)) {
        memcpy(buf, value, value_len);
        buf[value_len] = '\0';
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        w->hdr_has_index = *end == '\0' && errno == 0 && buf[0] != '-';
        w->hdr_index = w->hdr_has_index ? v : 0;
    } else if (name_len == 33 && strncasecmp(name, "X-Consul-Results-Filtered-By-ACLs", 33) == 0)
        w->hdr_filtered = value_len == 4 && strncasecmp(value, "true", 4) == 0;
}

static void on_watch_done(void *arg, const struct disc_http_result *res);

static void watch_query(struct consul_watch *w, bool probe)
{
    struct consul *c = w->c;
    char nb[300];

    if (c->closing)
        return;
    if (c->agent_down && !probe) {
        watch_park(w);
        return;
    }
    if (c->p->cfg.token_file != NULL && c->token == NULL) {
        token_refresh(c);
        if (c->token == NULL) {
            watch_failed(w, DISC_ERR_AUTH, false, "%s: no ACL token to send (token file %s)",
                         watch_name(w, nb, sizeof(nb)), c->p->cfg.token_file);
            return;
        }
    }
    if (w->index == 0 && !probe && c->fetching >= MAX_FETCHES) {
        w->state = CW_QUEUED;
        wr_list_insert_tail(&c->queued, &w->link);
        return;
    }
    char *url = watch_url(w);
    struct disc_http_opts o = {
        .url = url,
        .token = c->token,
        .token_header = "X-Consul-Token",
        .ca_file = c->p->cfg.ca_file,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .timeout_ms =
            w->index > 0 ? c->wait_ms + c->wait_ms / 16 + HTTP_MARGIN_MS : FETCH_TIMEOUT_MS,
        .on_header = on_watch_header,
        .on_done = on_watch_done,
        .arg = w,
    };
    w->hdr_has_index = w->hdr_filtered = false;
    w->hdr_index = 0;
    w->sent_index = w->index;
    w->started_ms = now_ms();
    w->req = disc_http_start(c->http, &o);
    free(url);
    if (w->req == NULL) {
        watch_failed(w, DISC_ERR_CONNECT, false, "%s: cannot start a query",
                     watch_name(w, nb, sizeof(nb)));
        return;
    }
    w->state = CW_INFLIGHT;
    w->fetching = w->index == 0;
    c->fetching += w->fetching;
}

/* Sends the queued queries that now have a place. */
static void fetch_next(struct consul *c)
{
    while (c->fetching < MAX_FETCHES && !wr_list_empty(&c->queued) && !c->closing) {
        struct consul_watch *w = WR_CONTAINER_OF(c->queued.next, struct consul_watch, link);
        wr_list_remove(&w->link);
        w->state = CW_IDLE;
        watch_query(w, false);
    }
}

/* ---- answers ----------------------------------------------------------------------------------
 */

static void svc_report(struct consul *c, struct consul_svc *s, char **slot, const char *problem)
{
    if (problem == NULL) {
        wr_free(slot);
        return;
    }
    if (*slot != NULL && strcmp(*slot, problem) == 0)
        return;
    free(*slot);
    *slot = wr_xstrdup(problem);
    for (const char *line = problem; *line != '\0';) { /* one log line per problem */
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        wr_warn("discovery[%u] %s: consul:%s: %.*s", c->p->index, c->p->label, s->name, len, line);
        line += len + (nl != NULL);
    }
}

static void reconcile(struct consul *c);

static int on_catalog(struct consul *c, const char *body, size_t len, char **err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);

    if (root == NULL || !json_is_object(root)) {
        *err = root ? wr_xstrdup("the answer is not a JSON object")
                    : wr_xasprintf("bad JSON at line %d: %s", jerr.line, jerr.text);
        json_decref(root);
        return -1;
    }
    json_decref(c->catalog_json);
    c->catalog_json = root;
    reconcile(c);
    return 0;
}

static int on_kv(struct consul *c, const char *body, size_t len, char **err)
{
    struct consul_rollout *ro;
    uint32_t n;
    char *problems;

    if (consul__parse_rollouts(body, len, &ro, &n, &problems, err) != 0)
        return -1;
    if (problems == NULL)
        wr_free(&c->kv_problems);
    else if (c->kv_problems == NULL || strcmp(c->kv_problems, problems) != 0) {
        for (const char *line = problems; *line != '\0';) {
            const char *nl = strchr(line, '\n');
            int l = nl ? (int)(nl - line) : (int)strlen(line);
            disc__error(c->p, DISC_ERR_PARSE, "rollout left out: %.*s", l, line);
            line += l + (nl != NULL);
        }
        free(c->kv_problems);
        c->kv_problems = problems;
        problems = NULL;
    }
    free(problems);
    if (c->kv.answered && consul__rollouts_equal(ro, n, c->rollouts, c->n_rollouts)) {
        consul__rollouts_free(ro, n);
        return 0;
    }
    consul__rollouts_free(c->rollouts, c->n_rollouts);
    c->rollouts = ro;
    c->n_rollouts = n;
    if (c->catalog.answered)
        reconcile(c);
    mark_dirty(c);
    return 0;
}

static int on_health(struct consul_svc *s, const char *body, size_t len, char **err)
{
    struct consul *c = s->w.c;
    struct consul_ep *eps;
    uint32_t n;
    char *skipped;

    if (consul__parse_health(body, len, &eps, &n, &skipped, err) != 0)
        return -1;
    svc_report(c, s, &s->ep_problem, skipped);
    free(skipped);
    if (s->w.answered && consul__eps_equal(eps, n, s->eps, s->n_eps)) {
        consul__eps_free(eps, n);
        return 0;
    }
    consul__eps_free(s->eps, s->n_eps);
    s->eps = eps;
    s->n_eps = n;
    consul__svc_forget(s, true, false);
    mark_dirty(c);
    return 0;
}

static void watch_done(struct consul_watch *w, const struct disc_http_result *res)
{
    struct consul *c = w->c;
    char nb[300], *err = NULL;
    const char *what = watch_name(w, nb, sizeof(nb));

    if (res->curl_code != CURLE_OK) {
        /* Consul-wide, so the message names no query: a thousand watches failing together
         * then log one line. curl's detail is kept where it helps (TLS) and dropped where it
         * varies from one query to the next ("after 3 ms"). */
        int cc = res->curl_code;
        bool tls = cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION ||
                   cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_CACERT_BADFILE ||
                   cc == CURLE_SSL_CIPHER || cc == CURLE_SSL_ISSUER_ERROR;
        watch_failed(w, cc == CURLE_OPERATION_TIMEDOUT ? DISC_ERR_TIMEOUT : DISC_ERR_CONNECT, true,
                     "cannot reach Consul: %s", tls ? res->error : curl_easy_strerror(cc));
        return;
    }
    bool kv_none = w->kind == CW_KV && res->status == 404;
    if (res->status != 200 && !kv_none) {
        bool auth = res->status == 401 || res->status == 403;
        char body[160];
        snprintf(body, sizeof(body), "%.*s", (int)WR_MIN(res->body_len, sizeof(body) - 1),
                 res->body);
        for (char *q = body; *q; q++)
            if (*q == '\n' || *q == '\r')
                *q = ' ';
        if (auth)
            token_refresh(c);
        if (auth && strstr(body, "ACL not found") != NULL) /* the token itself: every query */
            watch_failed(w, DISC_ERR_AUTH, true, "Consul does not know the ACL token: HTTP %ld: %s",
                         res->status, body);
        else if (!auth && (res->status == 429 || res->status >= 500))
            watch_failed(w, DISC_ERR_HTTP, true, "Consul answers HTTP %ld: %s", res->status, body);
        else
            watch_failed(w, auth ? DISC_ERR_AUTH : DISC_ERR_HTTP, false, "%s: HTTP %ld: %s", what,
                         res->status, body);
        return;
    }
    if (!w->hdr_has_index) {
        watch_failed(w, DISC_ERR_PARSE, false, "%s: the answer has no X-Consul-Index", what);
        return;
    }
    if (w->hdr_filtered && !c->warned_filtered) {
        c->warned_filtered = true;
        wr_warn("discovery[%u] %s: Consul left out results the ACL token may not read; check "
                "its policy (service:read, node:read, key:read on weir/rollouts/)",
                c->p->index, c->p->label);
    }
    int rc = w->kind == CW_CATALOG ? on_catalog(c, res->body, res->body_len, &err)
             : w->kind == CW_KV    ? on_kv(c, kv_none ? NULL : res->body, res->body_len, &err)
                                   : on_health(svc_of(w), res->body, res->body_len, &err);
    if (rc != 0) {
        watch_failed(w, DISC_ERR_PARSE, false, "%s: %s", what, err);
        free(err);
        return;
    }
    /* An answer at once with the index we sent means the query did not block. */
    bool early = w->sent_index > 0 && w->hdr_index == w->sent_index &&
                 now_ms() - w->started_ms < c->wait_ms / 2;
    w->early = early ? w->early + 1 : 0;
    w->index = consul__next_index(w->index, w->hdr_index);
    w->answered = w->attempted = true;
    w->failing = false;
    w->backoff_ms = 0;
    disc__alive(c->p);
    /* Only a query sent since Consul failed proves it works again: an older blocking query
     * may still end well (its wait ran out) while new ones are refused. */
    if (w->started_ms >= c->down_since_ms)
        agent_up(c);
    maybe_synced(c);
    watch_kick(w);
}

static void on_watch_done(void *arg, const struct disc_http_result *res)
{
    struct consul_watch *w = arg;
    struct consul *c = w->c;

    w->req = NULL;
    w->state = CW_IDLE;
    if (w->fetching) {
        w->fetching = false;
        c->fetching--;
    }
    watch_done(w, res);
    fetch_next(c);
}

/* ---- services ----------------------------------------------------------------------------------
 */

static struct consul_svc *svc_get(struct consul *c, const char *name)
{
    struct consul_svc *s = consul__svc_find(c, name);

    if (s != NULL)
        return s;
    s = wr_xcalloc(1, sizeof(*s));
    s->name = wr_xstrdup(name);
    s->w.c = c;
    s->w.kind = CW_HEALTH;
    wr_list_init(&s->w.link);
    uv_timer_init(c->p->loop, &s->w.timer);
    s->w.timer.data = &s->w;
    c->open_handles++;
    consul__svc_insert(c, s);
    return s;
}

/* Stops the watch of <s> and forgets what it saw. */
static void svc_unwatch(struct consul *c, struct consul_svc *s)
{
    disc_http_cancel(s->w.req);
    s->w.req = NULL;
    if (s->w.fetching) {
        s->w.fetching = false;
        c->fetching--;
    }
    uv_timer_stop(&s->w.timer);
    wr_list_remove(&s->w.link);
    s->w.state = CW_IDLE;
    s->w.answered = s->w.attempted = s->w.failing = false;
    s->w.index = 0;
    s->w.backoff_ms = 0;
    s->w.early = 0;
    consul__eps_free(s->eps, s->n_eps);
    s->eps = NULL;
    s->n_eps = 0;
    consul__svc_forget(s, true, true);
}

static void svc_free(struct consul_svc *s)
{
    consul__svc_forget(s, true, true);
    consul__tags_dispose(&s->tags);
    consul__eps_free(s->eps, s->n_eps);
    free(s->problem);
    free(s->ep_problem);
    free(s->name);
    free(s);
}

static void svc_remove(struct consul *c, struct consul_svc *s)
{
    svc_unwatch(c, s);
    consul__svc_unlink(c, s);
    uv_close((uv_handle_t *)&s->w.timer, on_svc_closed);
}

static bool has_expose_tag(const json_t *tags)
{
    size_t i;
    const json_t *v;

    json_array_foreach(tags, i, v)
    {
        const char *t = json_string_value(v);
        if (t != NULL && strncmp(t, "weir.expose", 11) == 0)
            return true;
    }
    return false;
}

/* Reads <s>'s tags from the catalog; true when anything that shapes the view changed. */
static bool svc_update_tags(struct consul *c, struct consul_svc *s, bool want_expose)
{
    struct consul_tags nt = {0};
    char *problem = NULL;
    const json_t *tags = json_object_get(c->catalog_json, s->name);
    bool ok;

    if (!consul__name_ok(s->name)) {
        problem = wr_xstrdup("the service name has characters other than letters, digits, "
                             "'-', '_' and '.'; not routed");
        ok = false;
    } else
        ok = consul__parse_tags(tags, &nt, &problem);
    if (!ok && problem != NULL && want_expose) {
        char *p2 = wr_xasprintf("%s; not routed", problem);
        free(problem);
        problem = p2;
    }
    svc_report(c, s, &s->problem, problem);
    free(problem);
    bool exposed = want_expose && ok && nt.expose;
    bool changed = exposed != s->exposed || !consul__tags_equal(&nt, &s->tags);
    if (changed)
        consul__svc_forget(s, true, true);
    consul__tags_dispose(&s->tags);
    s->tags = nt;
    s->exposed = exposed;
    return changed;
}

/* Brings the set of watched services in line with the catalog and the rollouts. */
static void reconcile(struct consul *c)
{
    const char *name;
    json_t *tags;
    bool changed = false;

    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b]; s != NULL; s = s->next)
            s->mark = 0;
    json_object_foreach(c->catalog_json, name, tags)
    {
        if (has_expose_tag(tags))
            svc_get(c, name)->mark |= M_EXPOSE;
    }
    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b]; s != NULL; s = s->next)
            if (s->mark & M_EXPOSE)
                changed |= svc_update_tags(c, s, true);
    for (uint32_t i = 0; i < c->n_rollouts; i++) {
        struct consul_svc *base = consul__svc_find(c, c->rollouts[i].service);
        if (base == NULL || !base->exposed)
            continue;
        svc_get(c, c->rollouts[i].blue)->mark |= M_COLOUR;
        svc_get(c, c->rollouts[i].green)->mark |= M_COLOUR;
    }
    for (uint32_t b = 0; b < c->n_buckets; b++) {
        struct consul_svc *s = c->buckets[b], *next;
        for (; s != NULL; s = next) {
            next = s->next;
            if (s->mark == 0) {
                changed |= s->w.answered;
                svc_remove(c, s);
                continue;
            }
            if (!(s->mark & M_EXPOSE))
                changed |= svc_update_tags(c, s, false);
            bool colour = (s->mark & M_COLOUR) != 0;
            changed |= colour != s->in_rollout;
            s->in_rollout = colour;
            bool wanted = s->exposed || s->in_rollout;
            if (wanted && s->w.state == CW_IDLE && !s->w.answered && !s->w.attempted)
                watch_kick(&s->w);
            else if (!wanted && (s->w.state != CW_IDLE || s->w.attempted)) {
                changed |= s->w.answered;
                svc_unwatch(c, s);
            }
        }
    }
    if (changed)
        mark_dirty(c);
    fetch_next(c);
}

/* ---- the provider --------------------------------------------------------------------------- */

static void consul_free(struct consul *c)
{
    struct disc_provider *p = c->p;

    json_decref(c->catalog_json);
    json_decref(c->last_view);
    consul__rollouts_free(c->rollouts, c->n_rollouts);
    free(c->buckets);
    free(c->kv_problems);
    free(c->token);
    free(c->token_problem);
    free(c->base);
    free(c->dc_param);
    free(c);
    disc__closed(p);
}

/* Close callback of the provider's own timers (their data is the provider by then). */
static void on_handle_closed(uv_handle_t *h)
{
    struct consul *c = h->data;

    if (--c->open_handles == 0 && c->closing)
        consul_free(c);
}

static void on_svc_closed(uv_handle_t *h)
{
    struct consul_svc *s = WR_CONTAINER_OF((uv_timer_t *)h, struct consul_svc, w.timer);
    struct consul *c = s->w.c;

    svc_free(s);
    if (--c->open_handles == 0 && c->closing)
        consul_free(c);
}

static void close_timer(struct consul *c, uv_timer_t *t)
{
    t->data = c;
    uv_close((uv_handle_t *)t, on_handle_closed);
}

static void on_http_closed(void *arg)
{
    struct consul *c = arg;

    if (--c->open_handles == 0)
        consul_free(c);
}

/* "&dc=NAME" with NAME percent-encoded (RFC 3986 unreserved characters kept). */
static char *dc_param(const char *dc)
{
    struct wr_sbuf b = {0};

    wr_sbuf_addstr(&b, "");
    if (dc == NULL)
        return b.p;
    wr_sbuf_addstr(&b, "dc=");
    for (const char *q = dc; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch) != NULL)
            wr_sbuf_add(&b, q, 1);
        else
            wr_sbuf_printf(&b, "%%%02X", ch);
    }
    wr_sbuf_addstr(&b, "&");
    return b.p;
}

static int consul_init(struct disc_provider *p)
{
    struct consul *c = wr_xcalloc(1, sizeof(*c));

    c->p = p;
    c->base = wr_xstrdup(p->cfg.address);
    size_t len = strlen(c->base);
    while (len > 0 && c->base[len - 1] == '/')
        c->base[--len] = '\0';
    c->dc_param = dc_param(p->cfg.datacenter);
    c->wait_ms = p->cfg.wait_ms ? p->cfg.wait_ms : 30000;
    c->catalog.c = c->kv.c = c;
    c->catalog.kind = CW_CATALOG;
    c->kv.kind = CW_KV;
    wr_list_init(&c->catalog.link);
    wr_list_init(&c->kv.link);
    wr_list_init(&c->parked);
    wr_list_init(&c->queued);
    p->impl = c;
    return 0;
}

static void timer_open(struct consul *c, uv_timer_t *t, void *data)
{
    uv_timer_init(c->p->loop, t);
    t->data = data;
    c->open_handles++;
}

static int consul_start(struct disc_provider *p)
{
    struct consul *c = p->impl;

    c->http = disc_http_new(p->loop);
    if (c->http == NULL)
        return WR_ENOMEM;
    c->open_handles = 1; /* the HTTP client */
    c->started = true;
    timer_open(c, &c->flush, c);
    timer_open(c, &c->probe_timer, c);
    timer_open(c, &c->token_timer, c);
    timer_open(c, &c->catalog.timer, &c->catalog);
    timer_open(c, &c->kv.timer, &c->kv);
    if (p->cfg.token_file != NULL) {
        token_refresh(c);
        uv_timer_start(&c->token_timer, on_token_timer, TOKEN_CHECK_MS, TOKEN_CHECK_MS);
    }
    watch_kick(&c->catalog);
    watch_kick(&c->kv);
    return 0;
}

static void consul_close(struct disc_provider *p)
{
    struct consul *c = p->impl;

    c->closing = true;
    if (!c->started) {
        consul_free(c);
        return;
    }
    /* Cancels every query without calling back. */
    disc_http_close(c->http, on_http_closed, c);
    c->catalog.req = c->kv.req = NULL;
    close_timer(c, &c->flush);
    close_timer(c, &c->probe_timer);
    close_timer(c, &c->token_timer);
    close_timer(c, &c->catalog.timer);
    close_timer(c, &c->kv.timer);
    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b], *next; s != NULL; s = next) {
            next = s->next;
            s->w.req = NULL;
            uv_close((uv_handle_t *)&s->w.timer, on_svc_closed);
        }
    c->n_buckets = 0; /* the services are freed by their timers' close callbacks */
}

const struct disc_ops disc__consul_ops = {
    .type = "consul",
    .init = consul_init,
    .start = consul_start,
    .close = consul_close,
};
