/* discovery/disc_http.c -- an asynchronous HTTP client on one libcurl multi handle driven by
 * libuv (the API and its rules are in disc_priv.h).
 *
 * The glue follows curl's "multi_socket" design (docs/examples/multi-uv.c): curl announces the
 * sockets it wants watched and for what (on_socket -> one uv_poll_t per socket, remembered with
 * curl_multi_assign()), and the one timeout it wants (on_timer -> one uv_timer_t); every event
 * is handed back with curl_multi_socket_action(), after which finished transfers are collected
 * with curl_multi_info_read(). There is no curl_multi_perform() loop and nothing blocks.
 *
 * curl refuses most multi calls from inside its own callbacks (CURLM_RECURSIVE_API_CALL), and
 * the user's on_header/on_data run there. So while curl is on the stack (h->depth > 0), a new
 * request waits on h->pending and a cancelled one on h->cancelled; both lists are settled as
 * soon as curl returns (settle()). A cancelled request is marked at once, so none of its
 * callbacks runs afterwards even if curl still delivers data for it in the same call.
 *
 * Lifetimes: a request is freed when it completes or is cancelled; a socket context when its
 * uv_poll_t is closed; the client when its last uv handle is closed after disc_http_close().
 * A socket number can be reused by a new connection before the old poll handle's close
 * callback ran: that is harmless, since uv_close() of a poll handle stops watching the
 * descriptor at once and the new socket gets a new context.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "disc_priv.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY           ((size_t)64 << 20)

struct disc_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct wr_list socks;     /* struct http_sock */
    struct wr_list reqs;      /* requests handed to curl */
    struct wr_list pending;   /* started from inside curl: added by settle() */
    struct wr_list cancelled; /* cancelled from inside curl: removed by settle() */
    unsigned depth;           /* > 0 while curl_multi_socket_action() runs */
    unsigned open_handles;    /* uv handles not yet closed: the timer and the sockets */
    unsigned active;          /* requests started, not yet done or cancelled */
    bool closing;
    bool torn_down;
    void (*closed)(void *arg);
    void *closed_arg;
};

struct http_sock {
    uv_poll_t poll;
    struct disc_http *h;
    curl_socket_t fd;
    struct wr_list link;
};

struct disc_http_req {
    struct disc_http *h;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    struct wr_sbuf buf; /* the response body when there is no on_data */
    size_t max_body;
    bool too_large;
    bool cancelled;
    bool in_multi; /* added to h->multi */
    disc_http_header_cb on_header;
    disc_http_data_cb on_data;
    disc_http_done_cb on_done;
    void *arg;
    struct wr_list link; /* in h->reqs, h->pending or h->cancelled */
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- requests ------------------------------------------------------------------------------ */

static void req_free(struct disc_http_req *r)
{
    wr_list_remove(&r->link);
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    wr_sbuf_dispose(&r->buf);
    free(r);
}

/* Takes <r> out of curl (outside curl's callbacks only) and frees it. */
static void req_drop(struct disc_http_req *r)
{
    if (r->in_multi)
        curl_multi_remove_handle(r->h->multi, r->easy);
    req_free(r);
}

static size_t on_curl_header(char *data, size_t size, size_t n, void *userp)
{
    struct disc_http_req *r = userp;
    size_t len = size * n, name_len, v = 0;

    if (r->cancelled || r->h->closing)
        return 0; /* aborts the transfer */
    if (r->on_header == NULL)
        return len;
    const char *colon = memchr(data, ':', len);
    if (colon == NULL)
        return len; /* the status line or the empty line */
    name_len = (size_t)(colon - data);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    while (v < value_len && (value[v] == ' ' || value[v] == '\t'))
        v++;
    value += v;
    value_len -= v;
    while (value_len > 0 && (value[value_len - 1] == '\r' || value[value_len - 1] == '\n' ||
                             value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;
    r->on_header(r->arg, data, name_len, value, value_len);
    return len;
}

static size_t on_curl_data(char *data, size_t size, size_t n, void *userp)
{
    struct disc_http_req *r = userp;
    size_t len = size * n;

    if (r->cancelled || r->h->closing)
        return 0;
    if (r->on_data != NULL)
        return r->on_data(r->arg, data, len) < 0 ? 0 : len;
    if (r->buf.len + len > r->max_body) {
        r->too_large = true;
        return 0;
    }
    wr_sbuf_add(&r->buf, data, len);
    return len;
}

static void complete(struct disc_http_req *r, CURLcode code)
{
    struct disc_http_result res = {.curl_code = (int)code, .error = ""};

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    if (code != CURLE_OK) {
        res.error = r->too_large   ? "response body too large"
                    : r->errbuf[0] ? r->errbuf
                                   : curl_easy_strerror(code);
    }
    wr_sbuf_add(&r->buf, "", 1); /* a NUL after the body (and a buffer when it is empty) */
    r->buf.len--;
    res.body = r->buf.p;
    res.body_len = r->buf.len;
    curl_multi_remove_handle(r->h->multi, r->easy);
    r->in_multi = false;
    if (!r->cancelled) {
        r->h->active--;
        wr_list_remove(&r->link);
        r->on_done(r->arg, &res);
    }
    req_free(r);
}

/* Collects finished transfers. Stops when on_done closed the client. */
static void collect(struct disc_http *h)
{
    CURLMsg *msg;
    int left;

    while (!h->closing && (msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode code = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        complete((struct disc_http_req *)priv, code);
    }
}

static void teardown(struct disc_http *h);

/* Applies what was deferred while curl was on the stack. */
static void settle(struct disc_http *h)
{
    if (h->depth > 0)
        return;
    if (h->closing) {
        teardown(h);
        return;
    }
    while (!wr_list_empty(&h->cancelled))
        req_drop(WR_CONTAINER_OF(h->cancelled.next, struct disc_http_req, link));
    while (!wr_list_empty(&h->pending)) {
        struct disc_http_req *r = WR_CONTAINER_OF(h->pending.next, struct disc_http_req, link);
        wr_list_remove(&r->link);
        wr_list_insert_tail(&h->reqs, &r->link);
        CURLMcode mc = curl_multi_add_handle(h->multi, r->easy);
        if (mc == CURLM_OK) {
            r->in_multi = true;
            continue;
        }
        /* A request that cannot be added fails like a transfer, in its on_done. */
        struct disc_http_result res = {
            .curl_code = CURLE_FAILED_INIT, .error = curl_multi_strerror(mc), .body = ""};
        h->active--;
        wr_list_remove(&r->link);
        r->on_done(r->arg, &res);
        req_free(r);
        if (h->closing) {
            teardown(h);
            return;
        }
    }
}

static void socket_action(struct disc_http *h, curl_socket_t fd, int flags)
{
    int running;

    h->depth++;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    h->depth--;
    collect(h);
    settle(h);
}

/* ---- curl <-> libuv ------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *handle)
{
    struct disc_http *h = handle->data;

    if (handle->type == UV_POLL)
        free(WR_CONTAINER_OF((uv_poll_t *)handle, struct http_sock, poll));
    if (--h->open_handles > 0 || !h->torn_down)
        return;
    if (h->closed != NULL)
        h->closed(h->closed_arg);
    free(h);
}

static void sock_close(struct http_sock *s)
{
    wr_list_remove(&s->link);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct http_sock *s = WR_CONTAINER_OF(poll, struct http_sock, poll);
    int flags = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    socket_action(s->h, s->fd, flags);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct disc_http *h = userp;
    struct http_sock *s = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            if (!h->closing) /* no multi call while curl_multi_cleanup() runs */
                curl_multi_assign(h->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (h->closing)
        return -1; /* nothing new once closing */
    if (s == NULL) {
        s = wr_xcalloc(1, sizeof(*s));
        int rc = uv_poll_init_socket(h->loop, &s->poll, fd);
        if (rc != 0) {
            wr_err("discovery: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s);
            return -1; /* curl fails the transfer */
        }
        s->h = h;
        s->fd = fd;
        s->poll.data = h;
        h->open_handles++;
        wr_list_insert_tail(&h->socks, &s->link);
        curl_multi_assign(h->multi, fd, s);
    }
    int events =
        ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    socket_action(WR_CONTAINER_OF(t, struct disc_http, timer), CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct disc_http *h = userp;

    if (timeout_ms < 0 || h->closing)
        uv_timer_stop(&h->timer);
    else /* 0 means "as soon as possible": the next loop iteration, never from inside curl */
        uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- public --------------------------------------------------------------------------------- */

struct disc_http *disc_http_new(uv_loop_t *loop)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        wr_err("discovery: curl_global_init: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    struct disc_http *h = wr_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->multi = curl_multi_init();
    if (h->multi == NULL) {
        wr_err("discovery: curl_multi_init failed");
        free(h);
        return NULL;
    }
    wr_list_init(&h->socks);
    wr_list_init(&h->reqs);
    wr_list_init(&h->pending);
    wr_list_init(&h->cancelled);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open_handles = 1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

static bool set_headers(struct disc_http_req *r, const struct disc_http_opts *o)
{
    struct curl_slist *l = NULL, *n;

    for (unsigned i = 0; o->headers != NULL && o->headers[i] != NULL; i++) {
        if ((n = curl_slist_append(l, o->headers[i])) == NULL)
            goto fail;
        l = n;
    }
    if (o->token != NULL) {
        char *line = o->token_header != NULL ? wr_xasprintf("%s: %s", o->token_header, o->token)
                                             : wr_xasprintf("Authorization: Bearer %s", o->token);
        n = curl_slist_append(l, line);
        free(line);
        if (n == NULL)
            goto fail;
        l = n;
    }
    r->headers = l;
    return true;
fail:
    curl_slist_free_all(l);
    return false;
}

static void set_options(struct disc_http_req *r, const struct disc_http_opts *o)
{
    CURL *e = r->easy;

    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "weir/" WEIR_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(
        e, CURLOPT_CONNECTTIMEOUT_MS,
        (long)(o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS));
    if (o->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->idle_timeout_ms > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((o->idle_timeout_ms + 999) / 1000));
    }
    if (r->headers != NULL)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    if (o->body != NULL) {
        r->body = wr_xmalloc(o->body_len + 1);
        memcpy(r->body, o->body, o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    }
    if (o->method != NULL && strcmp(o->method, "GET") != 0 &&
        !(o->body != NULL && strcmp(o->method, "POST") == 0))
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    if (o->method != NULL && strcmp(o->method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    /* Over TLS the server may speak HTTP/2: let a burst of requests wait to share the first
     * connection rather than each open its own (Consul's agent limits connections per client). */
    if (strncmp(o->url, "https://", 8) == 0)
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    if (o->ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
    if (o->cert_file != NULL)
        curl_easy_setopt(e, CURLOPT_SSLCERT, o->cert_file);
    if (o->key_file != NULL)
        curl_easy_setopt(e, CURLOPT_SSLKEY, o->key_file);
    if (o->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

struct disc_http_req *disc_http_start(struct disc_http *h, const struct disc_http_opts *o)
{
    if (h->closing || o->url == NULL || o->on_done == NULL)
        return NULL;
    struct disc_http_req *r = wr_xcalloc(1, sizeof(*r));
    r->h = h;
    r->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
    r->on_header = o->on_header;
    r->on_data = o->on_data;
    r->on_done = o->on_done;
    r->arg = o->arg;
    wr_list_init(&r->link);
    r->easy = curl_easy_init();
    if (r->easy == NULL || !set_headers(r, o)) {
        wr_err("discovery: cannot set up a request to %s (out of memory)", o->url);
        req_free(r);
        return NULL;
    }
    set_options(r, o);
    h->active++;
    if (h->depth > 0) { /* inside a curl callback: curl takes it once it returns */
        wr_list_insert_tail(&h->pending, &r->link);
        return r;
    }
    CURLMcode mc = curl_multi_add_handle(h->multi, r->easy);
    if (mc != CURLM_OK) {
        wr_err("discovery: cannot start a request to %s: %s", o->url, curl_multi_strerror(mc));
        h->active--;
        req_free(r);
        return NULL;
    }
    r->in_multi = true;
    wr_list_insert_tail(&h->reqs, &r->link);
    return r;
}

long disc_http_status(const struct disc_http_req *r)
{
    long status = 0;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

void disc_http_cancel(struct disc_http_req *r)
{
    if (r == NULL || r->cancelled)
        return;
    struct disc_http *h = r->h;
    r->cancelled = true;
    h->active--;
    if (!r->in_multi) { /* still pending: curl never saw it */
        req_free(r);
        return;
    }
    if (h->depth > 0) {
        wr_list_remove(&r->link);
        wr_list_insert_tail(&h->cancelled, &r->link);
        return;
    }
    req_drop(r);
}

unsigned disc_http_active(const struct disc_http *h)
{
    return h->active;
}

static void drop_all(struct wr_list *l)
{
    while (!wr_list_empty(l))
        req_drop(WR_CONTAINER_OF(l->next, struct disc_http_req, link));
}

static void teardown(struct disc_http *h)
{
    if (h->torn_down)
        return;
    drop_all(&h->pending);
    drop_all(&h->cancelled);
    drop_all(&h->reqs);
    h->active = 0;
    /* Closing the cached connections may still report sockets to on_socket (REMOVE). */
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    h->torn_down = true;
    while (!wr_list_empty(&h->socks))
        sock_close(WR_CONTAINER_OF(h->socks.next, struct http_sock, link));
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
}

void disc_http_close(struct disc_http *h, void (*closed)(void *arg), void *arg)
{
    if (h == NULL || h->closing)
        return;
    h->closing = true;
    h->closed = closed;
    h->closed_arg = arg;
    settle(h); /* tears down now, or once curl returns */
}
