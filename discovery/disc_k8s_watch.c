/* discovery/disc_k8s_watch.c -- list then watch, the Kubernetes way, for one kind of object in
 * one namespace (or all of them), or for one named object.
 *
 *   list   GET <prefix>[/namespaces/NS]/<kind>?limit=500[&continue=C]   (pages until no C)
 *          -> the cache of this scope becomes the list (what it lacks is deleted), and the
 *             list's metadata.resourceVersion is where the watch starts
 *   watch  GET ...?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=T
 *          -> one JSON event per line, split anywhere across chunks: ADDED/MODIFIED/DELETED
 *             update the cache and RV, BOOKMARK moves RV, ERROR 410 (or HTTP 410) lists again
 *
 * A watch the server ends normally (timeoutSeconds) starts again from its RV without a list.
 * A failure (connection, HTTP status, a stalled stream) retries after the provider's back-off,
 * from the RV when there is one (so an API server restart costs no list when its history
 * still covers RV), else with a list. Nothing is ever removed from the cache because of a
 * failure: the last good state stays until a list or an event says otherwise.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "disc_k8s.h"

#define LIST_LIMIT    500
#define LIST_TIMEOUT  60000
#define MAX_LINE      (16u << 20) /* one event; a larger one is an error */
#define MAX_ERROR_BUF 65536

static void start_list(struct k8s_watch *w);
static void start_watch(struct k8s_watch *w);

/* ---- URLs --------------------------------------------------------------------------------- */

static void urlenc(struct wr_sbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            wr_sbuf_add(b, s, 1);
        else
            wr_sbuf_printf(b, "%%%02X", c);
    }
}

char *k8s__watch_url(const struct k8s_watch *w, bool watch, uint32_t timeout_s)
{
    const struct k8s_kind_info *ki = &k8s__kinds[w->kind];
    struct wr_sbuf b = {0};

    wr_sbuf_addstr(&b, ki->prefix);
    if (ki->namespaced && w->ns != NULL) {
        wr_sbuf_addstr(&b, "/namespaces/");
        urlenc(&b, w->ns);
    }
    wr_sbuf_printf(&b, "/%s?", ki->name);
    if (watch) {
        wr_sbuf_addstr(&b, "watch=1&allowWatchBookmarks=true&resourceVersion=");
        urlenc(&b, w->rv);
        wr_sbuf_printf(&b, "&timeoutSeconds=%u", timeout_s);
    } else {
        wr_sbuf_printf(&b, "limit=%d", LIST_LIMIT);
        if (w->cont != NULL) {
            wr_sbuf_addstr(&b, "&continue=");
            urlenc(&b, w->cont);
        }
    }
    if (w->name != NULL) {
        wr_sbuf_addstr(&b, "&fieldSelector=");
        urlenc(&b, "metadata.name=");
        urlenc(&b, w->name);
    }
    return b.p;
}

static const char *describe(const struct k8s_watch *w, char *buf, size_t len)
{
    if (w->name != NULL)
        snprintf(buf, len, "%s %s/%s", w->kind == K8S_SECRETS ? "Secret" : k8s__kinds[w->kind].name,
                 w->ns, w->name);
    else if (!k8s__kinds[w->kind].namespaced)
        snprintf(buf, len, "%s", k8s__kinds[w->kind].name);
    else if (w->ns != NULL)
        snprintf(buf, len, "%s in namespace %s", k8s__kinds[w->kind].name, w->ns);
    else
        snprintf(buf, len, "%s in all namespaces", k8s__kinds[w->kind].name);
    return buf;
}

/* ---- applying what the server says (no I/O: unit-tested) ---------------------------------- */

static void set_rv(struct k8s_watch *w, const char *rv)
{
    if (rv == NULL || rv[0] == '\0')
        return;
    free(w->rv);
    w->rv = wr_xstrdup(rv);
}

/* Is cache key <key> within the scope of <w>? */
static bool in_scope(const struct k8s_watch *w, const char *key)
{
    size_t n;

    if (w->name != NULL) {
        n = strlen(w->ns);
        return strncmp(key, w->ns, n) == 0 && key[n] == '/' && strcmp(key + n + 1, w->name) == 0;
    }
    if (w->ns == NULL || !k8s__kinds[w->kind].namespaced)
        return true;
    n = strlen(w->ns);
    return strncmp(key, w->ns, n) == 0 && key[n] == '/';
}

static enum k8s_ev apply_event(struct k8s_watch *w, json_t *ev, bool *changed)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    char key[512];

    if (type == NULL || !json_is_object(obj))
        return K8S_EV_ERROR;
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(obj, "code"));
        return code == 410 ? K8S_EV_GONE : K8S_EV_ERROR;
    }
    const char *rv = k8s__obj_rv(obj);
    if (strcmp(type, "BOOKMARK") == 0) {
        set_rv(w, rv);
        return K8S_EV_OK;
    }
    bool del = strcmp(type, "DELETED") == 0;
    if (!del && strcmp(type, "ADDED") != 0 && strcmp(type, "MODIFIED") != 0)
        return K8S_EV_ERROR;
    set_rv(w, rv);
    w->events++;
    if (!k8s__obj_key(obj, key, sizeof(key)) || !in_scope(w, key))
        return K8S_EV_OK; /* not ours to keep (a server that ignored a selector) */
    json_t *store = w->k->stores[w->kind];
    if (del)
        k8s__store_del(store, w->kind, key, w->k->dirty_svcs, changed);
    else
        k8s__store_put(store, w->kind, json_incref(obj), w->k->dirty_svcs, changed);
    return K8S_EV_OK;
}

enum k8s_ev k8s__watch_feed(struct k8s_watch *w, const char *data, size_t len, bool *changed)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl != NULL ? (size_t)(nl - data) : len;
        if (w->line.len + take > MAX_LINE)
            return K8S_EV_ERROR;
        if (nl == NULL) {
            wr_sbuf_add(&w->line, data, take);
            return K8S_EV_OK;
        }
        const char *line = data;
        size_t line_len = take;
        if (w->line.len > 0) { /* the rest of a line split across chunks */
            wr_sbuf_add(&w->line, data, take);
            line = w->line.p;
            line_len = w->line.len;
        }
        data += take + 1;
        len -= take + 1;
        while (line_len > 0 && (line[line_len - 1] == '\r' || line[line_len - 1] == ' '))
            line_len--;
        if (line_len == 0) {
            w->line.len = 0;
            continue;
        }
        json_t *ev = json_loadb(line, line_len, 0, NULL);
        w->line.len = 0;
        enum k8s_ev r = ev != NULL ? apply_event(w, ev, changed) : K8S_EV_ERROR;
        json_decref(ev);
        if (r != K8S_EV_OK)
            return r;
    }
    return K8S_EV_OK;
}

int k8s__watch_page(struct k8s_watch *w, const char *body, size_t len, bool *changed)
{
    json_t *root = json_loadb(body, len, 0, NULL), *items = json_object_get(root, "items"), *it;
    json_t *md = json_object_get(root, "metadata"), *store = w->k->stores[w->kind];
    const char *rv = json_string_value(json_object_get(md, "resourceVersion"));
    const char *cont = json_string_value(json_object_get(md, "continue"));
    char key[512];
    size_t i;

    if (!json_is_array(items) || rv == NULL) {
        json_decref(root);
        return -1;
    }
    if (w->page_keys == NULL)
        w->page_keys = json_object();
    json_array_foreach(items, i, it)
    {
        if (!k8s__obj_key(it, key, sizeof(key)) || !in_scope(w, key))
            continue;
        json_object_set_new(w->page_keys, key, json_true());
        k8s__store_put(store, w->kind, json_incref(it), w->k->dirty_svcs, changed);
    }
    free(w->cont);
    w->cont = cont != NULL && cont[0] != '\0' ? wr_xstrdup(cont) : NULL;
    if (w->cont != NULL) {
        json_decref(root);
        return 1;
    }
    /* The list is complete: what it did not return is gone. */
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(store, tmp, k, v)
    {
        if (in_scope(w, k) && json_object_get(w->page_keys, k) == NULL)
            k8s__store_del(store, w->kind, k, w->k->dirty_svcs, changed);
    }
    json_decref(w->page_keys);
    w->page_keys = NULL;
    set_rv(w, rv);
    json_decref(root);
    return 0;
}

/* ---- requests ----------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    k8s__watch_start(t->data);
}

/* Tries again after the back-off; <relist>: with a list rather than a watch from w->rv. */
static void retry(struct k8s_watch *w, bool relist)
{
    w->state = K8S_W_WAITING;
    if (relist || w->rv == NULL) {
        w->relist = true;
        json_decref(w->page_keys);
        w->page_keys = NULL;
        wr_free(&w->cont);
    }
    if (w->k->closing)
        return;
    uv_timer_start(&w->timer, on_timer, disc__backoff_step(w->k->p, &w->backoff_ms), 0);
}

static enum disc_reason reason_of(const struct disc_http_result *res)
{
    if (res->curl_code == CURLE_OPERATION_TIMEDOUT)
        return DISC_ERR_TIMEOUT;
    if (res->curl_code != 0)
        return DISC_ERR_CONNECT;
    if (res->status == 401 || res->status == 403)
        return DISC_ERR_AUTH;
    if (res->status == 410)
        return DISC_ERR_GONE;
    return DISC_ERR_HTTP;
}

/* "410 Expired: too old resource version" from a Status body, or curl's error. */
static void explain(const struct disc_http_result *res, const char *body, size_t len, char *buf,
                    size_t blen)
{
    if (res->curl_code != 0) {
        /* curl's own words for the code, not its detailed message ("after 3 ms"): the same
         * failure of many watches then makes one log line */
        snprintf(buf, blen, "%s", curl_easy_strerror((CURLcode)res->curl_code));
        return;
    }
    json_t *st = json_loadb(body, len, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));
    snprintf(buf, blen, "HTTP %ld%s%s", res->status, msg ? ": " : "", msg ? msg : "");
    json_decref(st);
}

static void list_done(void *arg, const struct disc_http_result *res)
{
    struct k8s_watch *w = arg;
    bool changed = false;
    char d[600], why[512];

    w->req = NULL;
    if (res->curl_code != 0 || res->status != 200) {
        enum disc_reason r = reason_of(res);
        explain(res, res->body, res->body_len, why, sizeof(why));
        w->tried = true;
        if (r == DISC_ERR_CONNECT || r == DISC_ERR_TIMEOUT)
            k8s__watch_error(w, r, "the API server: %s; retrying with back-off", why);
        else
            k8s__watch_error(w, r, "listing %s: %s", describe(w, d, sizeof(d)), why);
        if (r == DISC_ERR_GONE && w->cont != NULL) { /* the continue token expired: at once */
            wr_free(&w->cont);
            json_decref(w->page_keys);
            w->page_keys = NULL;
            start_list(w);
        } else {
            retry(w, true);
        }
        k8s__changed(w->k);
        return;
    }
    int rc = k8s__watch_page(w, res->body, res->body_len, &changed);
    if (rc < 0) {
        w->tried = true;
        k8s__watch_error(w, DISC_ERR_PARSE, "listing %s: the answer is not a list",
                         describe(w, d, sizeof(d)));
        retry(w, true);
        k8s__changed(w->k);
        return;
    }
    if (rc == 1) {
        start_list(w);
        if (changed)
            k8s__changed(w->k);
        return;
    }
    w->synced = w->tried = true;
    w->relist = false;
    w->backoff_ms = 0;
    k8s__alive(w->k);
    k8s__changed(w->k); /* also when nothing changed: the first publication waits for lists */
    start_watch(w);
}

static void start_list(struct k8s_watch *w)
{
    char *url = k8s__watch_url(w, false, 0);
    struct disc_http_opts o = {
        .timeout_ms = LIST_TIMEOUT,
        .max_body = 256u << 20,
        .on_done = list_done,
        .arg = w,
    };

    w->state = K8S_W_LISTING;
    w->req = k8s__request(w->k, &o, url);
    free(url);
    if (w->req == NULL) {
        w->tried = true;
        retry(w, true);
    }
}

static int on_stream(void *arg, const char *data, size_t len)
{
    struct k8s_watch *w = arg;
    bool changed = false;

    if (disc_http_status(w->req) != 200) { /* keep the Status body for watch_done */
        if (w->line.len + len <= MAX_ERROR_BUF)
            wr_sbuf_add(&w->line, data, len);
        return 0;
    }
    enum k8s_ev r = k8s__watch_feed(w, data, len, &changed);
    if (changed)
        k8s__changed(w->k);
    if (r == K8S_EV_OK) {
        k8s__alive(w->k); /* events or bookmarks: the server is there and we are current */
        return 0;
    }
    w->relist = true;
    w->stream_error = 1 + (r == K8S_EV_GONE ? DISC_ERR_GONE : DISC_ERR_PARSE);
    return -1; /* ends the transfer: watch_done lists again */
}

static void watch_done(void *arg, const struct disc_http_result *res)
{
    struct k8s_watch *w = arg;
    char d[600], why[512];
    uint64_t lived_ms = (wr_mono_ns() - w->started_ns) / 1000000u;

    w->req = NULL;
    if (w->stream_error != 0) {
        enum disc_reason r = (enum disc_reason)(w->stream_error - 1);
        w->stream_error = 0;
        w->line.len = 0;
        k8s__watch_error(w, r, "watching %s: %s", describe(w, d, sizeof(d)),
                         r == DISC_ERR_GONE ? "410 Gone (the resourceVersion is too old); "
                                              "listing again"
                                            : "an event that cannot be understood; listing again");
        if (r == DISC_ERR_GONE) { /* the normal way to catch up: list at once */
            w->relist = true;
            start_list(w);
        } else {
            retry(w, true);
        }
        return;
    }
    if (res->curl_code == 0 && res->status == 200) {
        w->line.len = 0;
        /* Ended by timeoutSeconds: go on from RV. A server that ends every watch at once
         * (a misbehaving proxy) gets the back-off rather than a busy loop. */
        if (lived_ms < 1000 && w->events == 0) {
            retry(w, false);
            return;
        }
        w->backoff_ms = 0;
        k8s__alive(w->k);
        start_watch(w);
        return;
    }
    enum disc_reason r = reason_of(res);
    explain(res, w->line.p, w->line.len, why, sizeof(why));
    w->line.len = 0;
    if (r == DISC_ERR_CONNECT || r == DISC_ERR_TIMEOUT) /* one line for all the watches */
        k8s__watch_error(w, r, "the API server: %s; retrying with back-off", why);
    else
        k8s__watch_error(w, r, "watching %s: %s", describe(w, d, sizeof(d)), why);
    if (r == DISC_ERR_GONE) {
        w->relist = true;
        start_list(w);
        return;
    }
    retry(w, false);
}

static void start_watch(struct k8s_watch *w)
{
    struct k8s *k = w->k;
    uint32_t t = k->watch_timeout_s + (uint32_t)(wr_rand_next(&k->rng) % (k->watch_timeout_s + 1));
    char *url = k8s__watch_url(w, true, t);
    struct disc_http_opts o = {
        /* the server ends the watch after t seconds; a stream silent for longer is stalled */
        .timeout_ms = (t + 30) * 1000u,
        .on_data = on_stream,
        .on_done = watch_done,
        .arg = w,
    };

    w->state = K8S_W_WATCHING;
    w->events = 0;
    w->line.len = 0;
    w->started_ns = wr_mono_ns();
    w->req = k8s__request(k, &o, url);
    free(url);
    if (w->req == NULL)
        retry(w, false);
}

/* ---- life --------------------------------------------------------------------------------- */

struct k8s_watch *k8s__watch_new(struct k8s *k, enum k8s_kind kind, const char *ns,
                                 const char *name)
{
    struct k8s_watch *w = wr_xcalloc(1, sizeof(*w));

    w->k = k;
    w->kind = kind;
    w->ns = ns != NULL ? wr_xstrdup(ns) : NULL;
    w->name = name != NULL ? wr_xstrdup(name) : NULL;
    w->relist = true;
    if (k->p != NULL) {
        uv_timer_init(k->p->loop, &w->timer);
        w->timer.data = w;
        w->timer_open = true;
        k->open_handles++;
    }
    w->next = k->watches;
    k->watches = w;
    return w;
}

void k8s__watch_start(struct k8s_watch *w)
{
    if (w->k->closing || w->req != NULL)
        return;
    if (w->relist || w->rv == NULL)
        start_list(w);
    else
        start_watch(w);
}

static void watch_free(struct k8s_watch *w)
{
    free(w->ns);
    free(w->name);
    free(w->rv);
    free(w->cont);
    json_decref(w->page_keys);
    wr_sbuf_dispose(&w->line);
    free(w);
}

static void on_closed(uv_handle_t *h)
{
    struct k8s_watch *w = h->data;
    struct k8s *k = w->k;

    watch_free(w);
    k8s__handle_closed(k);
}

void k8s__watch_close(struct k8s_watch *w)
{
    for (struct k8s_watch **pp = &w->k->watches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    disc_http_cancel(w->req);
    w->req = NULL;
    if (w->timer_open)
        uv_close((uv_handle_t *)&w->timer, on_closed);
    else
        watch_free(w);
}
