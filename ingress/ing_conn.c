/* ingress/ing_conn.c -- the client side of HTTP/1.1: accept, read, parse, route, proxy the
 * request and stream the response back, with keep-alive, pipelining and backpressure.
 *
 * Buffers: an idle keep-alive connection holds no buffer. A request's head stays in c->in
 * (parsed in place, never copied) until the request ends; body bytes stream through the space
 * after it and are written to the upstream straight from there. While a write is pending the
 * other side's reads stop, so at most one buffer per direction is ever held.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <weir/hc.h>

#include "ing_priv.h"

static void conn_process(struct ing_conn *c);
static void req_forward_body(struct ing_req *r);
static void req_finish(struct ing_req *r);
static void req_abort(struct ing_req *r);
static void client_read_start(struct ing_conn *c);
static void client_read_stop(struct ing_conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- canned answers ---- */

struct canned {
    uint16_t status;
    const char *reason;
};

static const struct canned canned[] = {
    {400, "Bad Request"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

static inline unsigned code_class(unsigned status)
{
    unsigned k = status / 100;

    return k >= 1 && k <= 5 ? k - 1 : 4;
}

/* ---- connection lifetime ---- */

static void on_conn_closed(uv_handle_t *h)
{
    struct ing_conn *c = WR_CONTAINER_OF(h, struct ing_conn, tcp);
    struct ing_worker *w = c->w;

    ing__buf_release(w, &c->in);
    ing__h2_free(c);
    ing__tls_free(c->tls);
    ing__listener_conn_closed(c->lst);
    free(c);
    w->n_conns--;
    ing__worker_maybe_exit(w);
}

/* The single close path of a client connection. A request still attached is aborted first. */
void ing__conn_close(struct ing_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->state = ING_C_CLOSING;
    if (c->req != NULL)
        req_abort(c->req);
    ing__h2_close_streams(c);
    ing__tq_del(&c->tn);
    wr_list_remove(&c->link);
    if (c->lst->stats != NULL) {
        _Atomic uint64_t *k = xds_counters_w(c->lst->stats, c->w->idx);
        xds_ctr_add(&k[0], (uint64_t)-1);
    }
    if (c->tls != NULL && !c->lingering)
        ing__tls_shutdown(c->tls);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- lingering close ----
 *
 * Closing a socket whose receive queue holds unread bytes makes the kernel send a reset, and a
 * reset can destroy the response the client has not read yet. So when a connection closes after
 * a response while the client may still be sending (an unread request body, pipelined requests),
 * weir sends close_notify (TLS), half-closes, and reads and drops what comes until the client's
 * FIN, for at most LINGER_MS and LINGER_MAX_BYTES (nginx's lingering_close does the same). */

#define LINGER_MS        5000
#define LINGER_MAX_BYTES (1u << 20)

static void on_linger_shutdown(uv_shutdown_t *sr, int status)
{
    struct ing_conn *c = sr->data;

    free(sr);
    if (status < 0 && status != UV_ECANCELED)
        ing__conn_close(c);
}

static void conn_linger(struct ing_conn *c)
{
    uv_shutdown_t *sr = malloc(sizeof(*sr));

    if (sr == NULL) {
        ing__conn_close(c);
        return;
    }
    c->lingering = 1;
    c->state = ING_C_CLOSING;
    c->linger_bytes = 0;
    if (c->tls != NULL)
        ing__tls_shutdown(c->tls);
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_linger_shutdown) != 0) {
        free(sr);
        ing__conn_close(c);
        return;
    }
    ing__buf_release(c->w, &c->in);
    ing__tq_add(c->w, &c->tn, ING_TQ_CLIENT_SEND, LINGER_MS);
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

/* Whether the client may still be sending when the connection closes after <r>. */
static bool conn_should_linger(const struct ing_conn *c, const struct ing_req *r)
{
    if (c->eof || c->closing || c->state == ING_C_TUNNEL || c->w->draining)
        return false;
    if (!r->req_done || c->in.off < c->in.len)
        return true;
    if (c->tls != NULL) {
        const struct ing_buf *cin = ing__tls_cin(c->tls);
        return cin->off < cin->len;
    }
    return false;
}

/* ---- TLS callbacks of a client connection ---- */

static void conn_tls_input(void *owner, long n)
{
    struct ing_conn *c = owner;

    if (n == -2)
        c->eof = 1;
    if (n > 0 && c->req != NULL)
        c->req->bytes_in += (uint64_t)n;
    if (n == 0 && c->in.base != NULL && c->in.len == c->in.off && c->req == NULL &&
        c->state == ING_C_IDLE) {
        ing__buf_release(c->w, &c->in); /* keep idle connections bufferless */
        return;
    }
    if (n != 0)
        conn_process(c);
}

static void conn_tls_fail(void *owner)
{
    ing__conn_close(owner);
}

static int conn_tls_handshake(void *owner)
{
    struct ing_conn *c = owner;

    return ing__tls_alpn_h2(c->tls) ? ing__h2_start(c) : 0;
}

static const struct ing_tls_ops conn_tls_ops = {conn_tls_input, conn_tls_fail, conn_tls_handshake};

void ing__conn_accept(struct ing_listener *l)
{
    struct ing_worker *w = l->w;
    struct ing_conn *c = calloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);

    if (c == NULL) {
        wr_err("listener %s: out of memory accepting a connection", l->name);
        return;
    }
    c->w = w;
    c->lst = l;
    l->n_conns++;
    wr_list_init(&c->tn.link);
    uv_tcp_init(&w->loop, &c->tcp);
    w->n_conns++;
    wr_list_insert_tail(&w->conns, &c->link);
    if (l->stats != NULL) {
        _Atomic uint64_t *k = xds_counters_w(l->stats, w->idx);
        xds_ctr_add(&k[0], 1);
        xds_ctr_add(&k[1], 1);
    }
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) < 0) {
        ing__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        c->peer_family = (uint8_t)ss.ss_family;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
            memcpy(c->peer, &in4->sin_addr, 4);
            c->peer_port = ntohs(in4->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            memcpy(c->peer, &in6->sin6_addr, 16);
            c->peer_port = ntohs(in6->sin6_port);
        }
    }
    c->state = ING_C_IDLE;
    c->proxy_pending = l->proxy_protocol;
    if (w->draining)
        c->close_after = 1;
    if (l->is_tls && (l->ssl_ctx == NULL ||
                      (c->tls = ing__tls_new(l->ssl_ctx, true, NULL, w, (uv_stream_t *)&c->tcp,
                                             &c->in, &conn_tls_ops, c)) == NULL)) {
        wr_warn("listener %s: cannot set up TLS for a connection", l->name);
        ing__conn_close(c);
        return;
    }
    if (c->tls != NULL)
        ing__tls_pin(c->tls, l->tls_cfg);
    ing__tq_add(w, &c->tn, ING_TQ_CLIENT_HEAD, w->cur->snap->client_header_timeout_ms);
    client_read_start(c);
}

void ing__client_ip(const struct ing_conn *c, char *out, size_t len)
{
    if (c->peer_family == AF_INET6)
        inet_ntop(AF_INET6, c->peer, out, (socklen_t)len);
    else if (c->peer_family == AF_INET)
        inet_ntop(AF_INET, c->peer, out, (socklen_t)len);
    else
        snprintf(out, len, "unknown");
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ing_conn *c = WR_CONTAINER_OF(h, struct ing_conn, tcp);

    if (c->tls != NULL && !c->lingering) {
        ing__tls_alloc(c->tls, buf);
        return;
    }
    if (c->in.base == NULL) {
        c->in.base = ing__block_get(c->w);
        c->in.cap = c->in.base ? ING_BLOCK_SIZE : 0;
        c->in.off = c->in.len = 0;
    }
    buf->base = c->in.base ? c->in.base + c->in.len : NULL;
    buf->len = c->in.base ? c->in.cap - c->in.len : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ing_conn *c = WR_CONTAINER_OF(s, struct ing_conn, tcp);

    if (c->lingering) { /* drop what comes; close at EOF, error or the byte limit */
        if (nread > 0)
            c->linger_bytes += (uint32_t)WR_MIN((size_t)nread, LINGER_MAX_BYTES);
        c->in.off = c->in.len = 0;
        if (nread < 0 || c->linger_bytes >= LINGER_MAX_BYTES)
            ing__conn_close(c);
        return;
    }
    if (nread > 0 && c->tls != NULL) {
        struct ing_buf *cin = ing__tls_cin(c->tls);
        cin->len += (uint32_t)nread;
        /* The PROXY header precedes the TLS handshake. */
        if (c->proxy_pending && !ing__conn_proxy_header(c, cin))
            return;
        ing__tls_read(c->tls, 0);
        return;
    }
    if (nread > 0) {
        c->in.len += (uint32_t)nread;
        if (c->req != NULL)
            c->req->bytes_in += (uint64_t)nread;
        conn_process(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) { /* buffer full: the request in progress drains it */
        client_read_stop(c);
        return;
    }
    if (nread == UV_EOF) {
        c->eof = 1;
        client_read_stop(c);
        conn_process(c);
        return;
    }
    /* ECONNRESET and friends: the client is gone. */
    ing__conn_close(c);
}

static void client_read_start(struct ing_conn *c)
{
    if (c->eof || c->closing)
        return;
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    if (c->tls != NULL)
        ing__tls_resume(c->tls); /* bytes OpenSSL still holds need no new socket data */
}

void ing__conn_input(struct ing_conn *c)
{
    conn_process(c);
}

/* Writes to the client, through TLS when the connection has it (see ing__send). */
int ing__conn_send(struct ing_conn *c, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    if (c->tls != NULL)
        return ing__tls_write(c->tls, req, bufs, n, cb);
    return ing__send((uv_stream_t *)&c->tcp, req, bufs, n, cb);
}

static void client_read_stop(struct ing_conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

/* ---- writing to the client ---- */

static void after_client_write(struct ing_req *r);

static void req_try_free(struct ing_req *r);

static void on_client_written(uv_write_t *wr, int status)
{
    struct ing_req *r = WR_CONTAINER_OF(wr, struct ing_req, cl_wr);

    r->cl_writing = 0;
    if (r->c == NULL) { /* aborted meanwhile */
        req_try_free(r);
        return;
    }
    if (status < 0) {
        ing__conn_close(r->c);
        return;
    }
    after_client_write(r);
}

/* Writes <bufs> to the client; <consumed> bytes of the upstream buffer are released once they
 * are written. Continues in after_client_write(). */
static void client_write(struct ing_req *r, uv_buf_t *bufs, unsigned n, uint32_t consumed)
{
    struct ing_conn *c = r->c;

    for (unsigned i = 0; i < n; i++)
        r->bytes_out += bufs[i].len;
    r->cl_wr_len = consumed;
    int rc = ing__conn_send(c, &r->cl_wr, bufs, n, on_client_written);
    if (rc < 0) {
        ing__conn_close(c);
        return;
    }
    if (rc == 0) {
        r->cl_writing = 1;
        if (r->up != NULL)
            ing__up_read_stop(r->up);
        ing__tq_add(c->w, &c->tn, ING_TQ_CLIENT_SEND, c->w->cur->snap->client_idle_timeout_ms);
        return;
    }
    after_client_write(r);
}

static bool get_header(void *arg, const char *lname, size_t len, struct wr_str *value);

/* gRPC status for an answer of ours with HTTP <status>: gRPC's HTTP-to-status table
 * (doc/http-grpc-status-mapping.md), extended to the statuses weir makes. 504 (no upstream
 * progress within the route's timeout) is UNAVAILABLE like 502/503, not DEADLINE_EXCEEDED,
 * which gRPC keeps for the client's own deadline; 429 (a limit of ours) is
 * RESOURCE_EXHAUSTED, like 413 and 431. */
static unsigned grpc_status(int status)
{
    switch (status) {
    case 400:
    case 500:
        return 13; /* INTERNAL */
    case 401:
        return 16; /* UNAUTHENTICATED */
    case 403:
        return 7; /* PERMISSION_DENIED */
    case 404:
    case 405:
    case 501:
        return 12; /* UNIMPLEMENTED */
    case 408:
        return 4; /* DEADLINE_EXCEEDED */
    case 413:
    case 429:
    case 431:
        return 8; /* RESOURCE_EXHAUSTED */
    case 502:
    case 503:
    case 504:
        return 14; /* UNAVAILABLE */
    default:
        return 2; /* UNKNOWN */
    }
}

/* A gRPC request ("content-type: application/grpc[+proto|;...]") gets our errors as gRPC
 * statuses: HTTP 200 with a trailers-only answer (gRPC over HTTP/2, "Responses"). */
static bool req_is_grpc(struct ing_req *r)
{
    struct wr_str v;

    if (!get_header(r, "content-type", 12, &v) || v.len < 16)
        return false;
    if (!wr_str_ieq((struct wr_str){v.p, 16}, "application/grpc", 16))
        return false;
    return v.len == 16 || v.p[16] == '+' || v.p[16] == ';';
}

static void req_error_grpc(struct ing_req *r, int status, const char *reason, bool close)
{
    unsigned code = grpc_status(status);
    char msg[64];

    snprintf(msg, sizeof(msg), "weir: %d %s", status, reason);
    r->status = 200;
    r->resp_started = 1;
    if (r->h2 != NULL) {
        if (ing__h2_respond_grpc(r, code, msg) != 0)
            req_abort(r);
        return;
    }
    if (!r->req_done || close)
        r->client_keep = 0;
    r->resp_done = 1;
    struct ing_buf *b = &r->resp_out;
    ing__buf_release(r->sr_worker, b);
    b->base = ing__block_get(r->sr_worker);
    if (b->base == NULL) {
        req_abort(r);
        return;
    }
    b->cap = ING_BLOCK_SIZE;
    b->len = (uint32_t)snprintf(b->base, b->cap,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                                "Grpc-Status: %u\r\nGrpc-Message: %s\r\nContent-Length: 0\r\n"
                                "%s\r\n",
                                code, msg, r->client_keep ? "" : "Connection: close\r\n");
    uv_buf_t ub = uv_buf_init(b->base, b->len);
    client_write(r, &ub, 1, 0);
}

/* Sends a short error answer and ends the request. <close> forces the connection to close
 * (malformed input, unread body). */
static void req_error(struct ing_req *r, int status, bool close)
{
    static char text[WR_ARRAY_LEN(canned)][2][192];
    static uint16_t text_len[WR_ARRAY_LEN(canned)][2];
    size_t i = 0;

    while (i < WR_ARRAY_LEN(canned) && canned[i].status != status)
        i++;
    if (i == WR_ARRAY_LEN(canned)) {
        status = 500;
        for (i = 0; canned[i].status != 500; i++)
            ;
    }
    if (r->up != NULL) {
        ing__up_release(r->up, false);
        r->up = NULL;
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    if (req_is_grpc(r)) {
        req_error_grpc(r, status, canned[i].reason, close);
        return;
    }
    if (r->h2 != NULL) {
        r->req_done = 1; /* the rest of the body is dropped (its window reopened) */
        r->status = (uint16_t)status;
        r->resp_started = 1;
        r->canned = canned[i].reason;
        r->canned_len = (uint32_t)strlen(canned[i].reason);
        if (ing__h2_respond(r, canned[i].status, NULL, r->msg.method_id != ING_H1_M_HEAD) != 0)
            req_abort(r);
        return;
    }
    if (!r->req_done)
        close = true;
    if (close)
        r->client_keep = 0;
    r->status = (uint16_t)status;
    r->resp_started = 1;
    r->resp_done = 1;
    /* The canned texts are built once per process; every worker computes the same bytes, so the
     * benign race on first use writes identical content. */
    int k = close ? 1 : 0;
    if (text_len[i][k] == 0) {
        int n = snprintf(text[i][k], sizeof(text[i][k]),
                         "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "%s\r\n%u %s\n",
                         canned[i].status, canned[i].reason, strlen(canned[i].reason) + 5,
                         close ? "Connection: close\r\n" : "", canned[i].status, canned[i].reason);
        text_len[i][k] = (uint16_t)n;
    }
    uv_buf_t b = uv_buf_init(text[i][k], text_len[i][k]);
    if (r->msg.method_id == ING_H1_M_HEAD)
        b.len = (size_t)(strstr(text[i][k], "\r\n\r\n") + 4 - text[i][k]);
    client_write(r, &b, 1, 0);
}

/* ---- request objects ---- */

static void req_try_free(struct ing_req *r)
{
    if (r->c != NULL || r->up != NULL || r->h2s != NULL || r->cl_writing || r->up_writing)
        return;
    struct ing_worker *w = r->sr_worker;
    if (r->sr != NULL)
        ing__snap_unpin(w, r->sr);
    r->sr = NULL;
    ing__buf_release(w, &r->h2trl);
    ing__buf_release(w, &r->rtrl);
    ing__req_put(w, r);
}

/* Detaches <r> from both connections after a failure that leaves no way to answer cleanly. */
static void req_abort(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    if (r->h2 != NULL || (c != NULL && c->h2 != NULL)) {
        ing__req_abort_h2(r);
        return;
    }
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        r->up = NULL;
        ing__up_release(u, false);
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    if (c != NULL) {
        c->req = NULL;
        r->c = NULL;
        if (!c->closing)
            ing__conn_close(c);
    }
    req_try_free(r);
}

/* ---- routing ---- */

static bool get_header(void *arg, const char *lname, size_t len, struct wr_str *value)
{
    struct ing_req *r = arg;

    for (unsigned i = 0; i < r->msg.n_hdrs; i++) {
        struct ing_h1_hdr *h = &r->msg.hdrs[i];
        if (h->name_len == len && ing_h1_name_is(h, lname, len)) {
            value->p = h->value;
            value->len = h->value_len;
            return true;
        }
    }
    return false;
}

/* Finds cookie <name> in the request's Cookie headers. Each ';'-separated crumb is looked at
 * on its own: browsers send a nameless cookie (document.cookie = "x") as a crumb without '=',
 * which must not hide the crumbs after it. */
static bool get_cookie(struct ing_req *r, const char *name, size_t nlen, struct wr_str *out)
{
    for (unsigned i = 0; i < r->msg.n_hdrs; i++) {
        struct ing_h1_hdr *h = &r->msg.hdrs[i];
        if (h->id != ING_H1_H_COOKIE)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *ce = memchr(p, ';', (size_t)(end - p));
            if (ce == NULL)
                ce = end;
            const char *eq = memchr(p, '=', (size_t)(ce - p));
            if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0) {
                out->p = eq + 1;
                out->len = (size_t)(ce - eq - 1);
                return true;
            }
            p = ce;
        }
    }
    return false;
}

/* Picks the weighted-cluster / rollout colour entry of the route. */
static int pick_target(struct ing_req *r, const struct xds_route *rt)
{
    struct ing_worker *w = r->sr_worker;

    if (rt->action == XDS_ACT_ROLLOUT) {
        const struct xds_rollout *ro = rt->rollout;
        struct wr_str v;
        int colour = -1;
        if (get_header(r, "x-weir-track", 12, &v)) {
            if (wr_str_ieq(v, "blue", 4))
                colour = 0;
            else if (wr_str_ieq(v, "green", 5))
                colour = 1;
        }
        if (colour < 0 && ro->sticky && get_cookie(r, "weir-track", 10, &v)) {
            if (wr_str_eq(v, "blue", 4) && ro->green_weight < 100)
                colour = 0;
            else if (wr_str_eq(v, "green", 5) && ro->green_weight > 0)
                colour = 1;
            else
                r->set_track = 1;
        } else if (colour < 0 && ro->sticky) {
            r->set_track = 1;
        }
        if (colour < 0)
            colour = (wr_rand_next(&w->rng) % 100) < ro->green_weight ? 1 : 0;
        r->colour = colour;
        return colour;
    }
    if (rt->n_wc == 1)
        return 0;
    uint64_t x = wr_rand_next(&w->rng) % rt->wc_total;
    for (uint32_t i = 0; i < rt->n_wc; i++) {
        if (x < rt->wc[i].weight)
            return (int)i;
        x -= rt->wc[i].weight;
    }
    return (int)rt->n_wc - 1;
}

/* Chooses an endpoint of r->cluster, skipping those already tried. */
static int pick_endpoint(struct ing_req *r)
{
    struct ing_worker *w = r->sr_worker;
    const struct xds_cluster *cl = r->cluster;
    struct ing_lb_ctx ctx = {.worker = w->idx, .rng = &w->rng};
    struct wr_str v;

    if (cl->lb_policy == XDS_LB_RING_HASH) {
        if (cl->hash_on == XDS_HASH_HEADER &&
            get_header(r, cl->hash_name, strlen(cl->hash_name), &v))
            ctx.has_hash = true;
        else if (cl->hash_on == XDS_HASH_COOKIE &&
                 get_cookie(r, cl->hash_name, strlen(cl->hash_name), &v))
            ctx.has_hash = true;
        else if (cl->hash_on == XDS_HASH_SOURCE_IP) {
            v.p = (const char *)r->c->peer;
            v.len = r->c->peer_family == AF_INET6 ? 16 : 4;
            ctx.has_hash = true;
        }
        if (ctx.has_hash)
            ctx.hash = ing_lb_hash_key(v.p, v.len);
    }
    if (r->retried && cl->n_eps <= sizeof(r->exclude))
        ctx.exclude = r->exclude;
    return ing_lb_pick(ing__snap_lb(r->sr, cl), cl, &ctx);
}

/* ---- the upstream request head ---- */

static bool hdr_skip_upstream(const struct ing_h1_hdr *h)
{
    if (h->flags & ING_H1_HF_HOP)
        return true;
    switch (h->id) {
    case ING_H1_H_HOST:
    case ING_H1_H_X_FORWARDED_FOR:
    case ING_H1_H_X_FORWARDED_PROTO:
    case ING_H1_H_X_FORWARDED_HOST:
    case ING_H1_H_X_REQUEST_ID:
    case ING_H1_H_EXPECT:
    case ING_H1_H_CONTENT_LENGTH: /* written once, from the parsed value */
        return true;
    default:
        return false;
    }
}

static inline char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTLIT(p, s) put((p), (s), sizeof(s) - 1)

static void make_request_id(struct ing_worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = wr_rand_next(&w->rng), b = wr_rand_next(&w->rng);

    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (i * 4)) & 15];
        out[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    out[32] = '\0';
}

/* Whether request header <h> is passed on as it is (both upstream protocols): not hop-by-hop,
 * and not one of those the proxy writes itself. */
bool ing__hdr_forwarded(const struct ing_h1_hdr *h)
{
    return !hdr_skip_upstream(h);
}

/* The request's host: the absolute-form target's authority, else Host (:authority for an
 * HTTP/2 client); "" when there is none. */
struct wr_str ing__req_host(struct ing_req *r)
{
    struct ing_h1_msg *m = &r->msg;
    struct wr_str host = (m->flags & ING_H1_F_ABSOLUTE_FORM) ? m->authority : m->host;

    return host.p != NULL ? host : WR_STR_LIT("");
}

/* The X-Request-Id to forward: the client's, passed on whole, else one of ours that stays the
 * same across retries. Its first 32 characters are kept in r->request_id for the log. */
struct wr_str ing__req_id(struct ing_req *r)
{
    struct ing_h1_msg *m = &r->msg;

    for (unsigned i = 0; i < m->n_hdrs; i++) {
        if (m->hdrs[i].id == ING_H1_H_X_REQUEST_ID) {
            struct wr_str rid = {m->hdrs[i].value, m->hdrs[i].value_len};
            size_t n = WR_MIN(rid.len, (size_t)32);
            memcpy(r->request_id, rid.p, n);
            r->request_id[n] = '\0';
            return rid;
        }
    }
    if (r->request_id[0] == '\0')
        make_request_id(r->sr_worker, r->request_id);
    return (struct wr_str){r->request_id, 32};
}

/* Serializes the request head for the upstream into r->head_out. Returns false on OOM. */
static bool build_upstream_head(struct ing_req *r, struct wr_str host)
{
    struct ing_h1_msg *m = &r->msg;
    struct ing_conn *c = r->c;
    char ip[INET6_ADDRSTRLEN];
    struct wr_str rid = ing__req_id(r);
    size_t xff_len = 0;

    ing__client_ip(c, ip, sizeof(ip));
    for (unsigned i = 0; i < m->n_hdrs; i++)
        if (m->hdrs[i].id == ING_H1_H_X_FORWARDED_FOR)
            xff_len += m->hdrs[i].value_len + 2;
    size_t need = m->head_len + xff_len + host.len * 2 + rid.len + strlen(ip) + 256;
    struct ing_buf *b = &r->head_out;
    if (need <= ING_BLOCK_SIZE) {
        b->base = ing__block_get(r->sr_worker);
        b->cap = ING_BLOCK_SIZE;
    } else {
        b->base = malloc(need);
        b->cap = (uint32_t)need;
    }
    if (b->base == NULL) {
        b->cap = 0;
        return false;
    }
    char *p = b->base;
    p = put(p, m->method.p, m->method.len);
    *p++ = ' ';
    if (m->flags & ING_H1_F_ABSOLUTE_FORM) {
        p = put(p, m->path.p, m->path.len);
        if (m->query.p != NULL) {
            *p++ = '?';
            p = put(p, m->query.p, m->query.len);
        }
    } else {
        p = put(p, m->target.p, m->target.len);
    }
    p = PUTLIT(p, " HTTP/1.1\r\nHost: ");
    p = put(p, host.p, host.len);
    p = PUTLIT(p, "\r\n");
    bool xff = false;
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];
        if (h->id == ING_H1_H_X_FORWARDED_FOR) {
            p = xff ? PUTLIT(p, ", ") : PUTLIT(p, "X-Forwarded-For: ");
            p = put(p, h->value, h->value_len);
            xff = true;
        }
    }
    p = xff ? PUTLIT(p, ", ") : PUTLIT(p, "X-Forwarded-For: ");
    p = put(p, ip, strlen(ip));
    p = c->lst->is_tls ? PUTLIT(p, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ")
                       : PUTLIT(p, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ");
    p = put(p, host.p, host.len);
    p = PUTLIT(p, "\r\nX-Request-Id: ");
    p = put(p, rid.p, rid.len);
    p = PUTLIT(p, "\r\n");
    bool cookie = false;
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];
        if (hdr_skip_upstream(h) || h->id == ING_H1_H_COOKIE)
            continue;
        p = put(p, h->name, h->name_len);
        p = PUTLIT(p, ": ");
        p = put(p, h->value, h->value_len);
        p = PUTLIT(p, "\r\n");
    }
    /* One Cookie field for HTTP/1.1: HTTP/2 clients split cookies (RFC 9113 §8.2.3). */
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];
        if (h->id != ING_H1_H_COOKIE || (h->flags & ING_H1_HF_HOP))
            continue;
        p = cookie ? PUTLIT(p, "; ") : PUTLIT(p, "Cookie: ");
        p = put(p, h->value, h->value_len);
        cookie = true;
    }
    if (cookie)
        p = PUTLIT(p, "\r\n");
    if (m->body == ING_H1_BODY_CHUNKED) {
        p = PUTLIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (m->body == ING_H1_BODY_LENGTH) {
        /* One Content-Length of our own: a client's "5, 5" list is never passed on. */
        p = PUTLIT(p, "Content-Length: ");
        p += sprintf(p, "%llu\r\n", (unsigned long long)m->content_length);
    }
    if (r->upgrade) {
        for (unsigned i = 0; i < m->n_hdrs; i++) {
            const struct ing_h1_hdr *h = &m->hdrs[i];
            if (h->id == ING_H1_H_UPGRADE) {
                p = PUTLIT(p, "Connection: upgrade\r\nUpgrade: ");
                p = put(p, h->value, h->value_len);
                p = PUTLIT(p, "\r\n");
                break;
            }
        }
    }
    if (r->h2_xconnect) {
        /* RFC 8441 §5: HTTP/2 clients send no key; the HTTP/1.1 handshake needs one. */
        unsigned char key[16];
        if (RAND_bytes(key, sizeof(key)) != 1)
            return false;
        p = PUTLIT(p, "Sec-WebSocket-Key: ");
        p += EVP_EncodeBlock((unsigned char *)p, key, sizeof(key));
        p = PUTLIT(p, "\r\n");
    }
    p = PUTLIT(p, "\r\n");
    b->len = (uint32_t)(p - b->base);
    b->off = 0;
    return true;
}

/* ---- starting a request ---- */

static bool method_idempotent(int m)
{
    return m == ING_H1_M_GET || m == ING_H1_M_HEAD || m == ING_H1_M_OPTIONS ||
           m == ING_H1_M_TRACE || m == ING_H1_M_PUT || m == ING_H1_M_DELETE;
}

static void send_redirect(struct ing_req *r, struct wr_str host)
{
    const struct xds_snapshot *s = r->sr->snap;
    struct ing_h1_msg *m = &r->msg;
    unsigned port = 443;
    size_t hl = host.len;

    for (uint32_t i = 0; i < s->n_listeners; i++) {
        if (s->listeners[i].tls != NULL) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&s->listeners[i].ss;
            port = ntohs(in->sin_port); /* sin_port and sin6_port share their offset */
            break;
        }
    }
    /* Strip the port of the Host value (but not the brackets of an IPv6 literal). */
    for (size_t i = hl; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            hl = i - 1;
            break;
        }
        if (host.p[i - 1] == ']' || host.p[i - 1] < '0' || host.p[i - 1] > '9')
            break;
    }
    struct ing_buf *b = &r->resp_out;
    size_t need = hl + m->path.len + m->query.len + 256;
    b->base = need <= ING_BLOCK_SIZE ? ing__block_get(r->sr_worker) : malloc(need);
    b->cap = need <= ING_BLOCK_SIZE ? ING_BLOCK_SIZE : (uint32_t)need;
    if (b->base == NULL) {
        b->cap = 0;
        req_error(r, 500, true);
        return;
    }
    char portbuf[16] = "";
    if (port != 443)
        snprintf(portbuf, sizeof(portbuf), ":%u", port);
    if (r->h2 != NULL) {
        snprintf(b->base, b->cap, "https://%.*s%s%.*s%s%.*s", (int)hl, host.p, portbuf,
                 (int)m->path.len, m->path.p, m->query.p ? "?" : "", (int)m->query.len,
                 m->query.p ? m->query.p : "");
        r->status = 308;
        r->resp_started = 1;
        if (ing__h2_respond(r, 308, b->base, false) != 0)
            req_abort(r);
        return;
    }
    int n = snprintf(b->base, b->cap,
                     "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://%.*s%s%.*s%s%.*s\r\n"
                     "Content-Length: 0\r\n%s\r\n",
                     (int)hl, host.p, portbuf, (int)m->path.len, m->path.p, m->query.p ? "?" : "",
                     (int)m->query.len, m->query.p ? m->query.p : "",
                     r->client_keep ? "" : "Connection: close\r\n");
    b->len = (uint32_t)n;
    r->status = 308;
    r->resp_started = 1;
    r->resp_done = 1;
    uv_buf_t ub = uv_buf_init(b->base, b->len);
    client_write(r, &ub, 1, 0);
}

/* Connects the request to an endpoint of r->cluster, or answers 503. */
static void req_dispatch(struct ing_req *r)
{
    int idx = pick_endpoint(r);

    if (idx < 0) {
        req_error(r, 503, false);
        return;
    }
    r->ep_idx = idx;
    const struct xds_endpoint *ep = &r->cluster->eps[idx];
    memcpy(r->ep_addr, ep->address, WR_MIN(strlen(ep->address) + 1, sizeof(r->ep_addr)));
    r->ep_addr[sizeof(r->ep_addr) - 1] = '\0';
    if ((unsigned)idx < sizeof(r->exclude))
        r->exclude[idx] = 1;
    r->t_up_ns = wr_mono_ns();
    if (r->cluster->protocol != XDS_PROTO_HTTP1)
        ing__h2up_acquire(r, ep);
    else
        ing__up_acquire(r, ep);
}

/* Routes the request whose head is complete and sends it on its way (both HTTP versions). */
static void req_route(struct ing_req *r)
{
    struct ing_conn *c = r->c;
    struct ing_h1_msg *m = &r->msg;
    struct wr_str host = (m->flags & ING_H1_F_ABSOLUTE_FORM) ? m->authority : m->host;

    if (host.p == NULL)
        host = WR_STR_LIT("");
    const struct xds_snapshot *s = r->sr->snap;
    const struct xds_route *rt = xds_route_match(s, host, m->path, get_header, r);
    if (rt == NULL) {
        req_error(r, 404, false);
        return;
    }
    r->route = rt;
    if (rt->redirect_https && !c->lst->is_tls) {
        send_redirect(r, host);
        return;
    }
    if (rt->max_body_bytes > 0 && m->body == ING_H1_BODY_LENGTH &&
        m->content_length > rt->max_body_bytes) {
        req_error(r, 413, true);
        return;
    }
    r->upgrade = (m->flags & ING_H1_F_UPGRADE) != 0;
    r->wc_idx = pick_target(r, rt);
    r->cluster = rt->wc[r->wc_idx].cluster;
    if (r->cluster->protocol != XDS_PROTO_HTTP1) {
        /* HTTP/2 upstream: the header list is made when the stream is submitted. CONNECT
         * would need RFC 9113 §8.5 tunnels, and HTTP/2 has no Upgrade (§8.6): an upgrade
         * request goes on as the plain request it also is. */
        if (m->method_id == ING_H1_M_CONNECT || r->h2_xconnect) {
            req_error(r, 501, true);
            return;
        }
        r->upgrade = 0;
        ing__req_id(r);
    } else if (!build_upstream_head(r, host)) {
        req_error(r, 500, true);
        return;
    }
    if (r->h2 == NULL && (m->flags & ING_H1_F_EXPECT_CONTINUE) && !r->req_done && m->minor == 1) {
        /* Like nginx: we answer 100 ourselves as soon as we are ready to read the body, and
         * do not forward Expect, so an upstream that ignores it cannot stall the client. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
        if (c->tls != NULL ? ing__tls_write(c->tls, NULL, &b, 1, NULL) < 0
                           : uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != (int)b.len) {
            req_error(r, 400, true); /* a client that cannot take 25 bytes now is not worth it */
            return;
        }
    }
    req_dispatch(r);
}

static void start_request(struct ing_conn *c, struct ing_req *r)
{
    struct ing_worker *w = c->w;
    struct ing_h1_msg *m = &r->msg;

    ing__tq_del(&c->tn);
    c->state = ING_C_PROXY;
    c->nreqs++;
    r->sr = ing__snap_pin(w);
    r->body_off = c->in.off + m->head_len;
    r->reqb.kind = m->body;
    r->reqb.remaining = m->content_length;
    r->req_done =
        m->body == ING_H1_BODY_NONE || (m->body == ING_H1_BODY_LENGTH && m->content_length == 0);
    r->client_keep = (m->flags & ING_H1_F_KEEP_ALIVE) && !c->close_after && !w->draining;
    req_route(r);
}

/* An HTTP/2 stream's head is complete (ing_h2.c); <status> != 0 answers it at once. */
void ing__req_start_h2(struct ing_req *r, int status)
{
    struct ing_h1_msg *m = &r->msg;

    r->c->nreqs++;
    r->sr = ing__snap_pin(r->sr_worker);
    r->reqb.kind = m->body;
    r->reqb.remaining = m->content_length;
    r->req_done = !r->h2_xconnect && (m->body == ING_H1_BODY_NONE ||
                                      (m->body == ING_H1_BODY_LENGTH && m->content_length == 0));
    r->client_keep = 1;
    if (status != 0) {
        req_error(r, status, false);
        return;
    }
    req_route(r);
}

/* More request body (or its end) arrived on an HTTP/2 stream. */
void ing__req_body_more(struct ing_req *r)
{
    if (r->route != NULL && r->route->max_body_bytes > 0 &&
        r->h2_body_total > r->route->max_body_bytes && !r->req_done) {
        if (!r->resp_started)
            req_error(r, 413, false);
        else
            req_abort(r);
        return;
    }
    req_forward_body(r);
}

/* ---- the request head ---- */

/* The HTTP/2 connection preface (RFC 9113 §3.4) on an "h2c" listener: prior knowledge. */
static int h2c_preface(struct ing_conn *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t avail = c->in.len - c->in.off, n = WR_MIN(avail, sizeof(preface) - 1);

    if (memcmp(c->in.base + c->in.off, preface, n) != 0)
        return 0; /* HTTP/1.1 */
    if (n < sizeof(preface) - 1)
        return -1; /* wait for the rest */
    return 1;
}

/* Consumes the PROXY header at the start of <b>. Returns false when the connection must wait
 * for more bytes or was closed. */
bool ing__conn_proxy_header(struct ing_conn *c, struct ing_buf *b)
{
    int n = ing__proxyproto_parse(c, b->base + b->off, b->len - b->off);

    if (n < 0) {
        wr_debug("listener %s: connection without a valid PROXY header", c->lst->name);
        ing__conn_close(c);
        return false;
    }
    if (n == 0) {
        if (c->eof)
            ing__conn_close(c);
        return false;
    }
    b->off += (uint32_t)n;
    c->proxy_pending = 0;
    return true;
}

/* HTTP/2 upstream: the whole request body is in c->in, waiting for the stream's data
 * provider to take it (so a client that half-closes after it is not cut off). */
static bool req_body_received(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    if (r->h2s == NULL || r->h2 != NULL)
        return false;
    if (r->reqb.kind == ING_H1_BODY_LENGTH)
        return c->in.len - r->body_off >= r->reqb.remaining;
    return r->reqb.kind == ING_H1_BODY_CHUNKED && r->reqb.ck.done;
}

static void conn_process(struct ing_conn *c)
{
    struct ing_worker *w = c->w;

    if (c->lingering)
        return;
    if (c->proxy_pending && (c->in.len == c->in.off || !ing__conn_proxy_header(c, &c->in)))
        return;
    if (c->h2 != NULL) {
        ing__h2_input(c);
        return;
    }
    if (c->lst->h2c && c->nreqs == 0 && c->req == NULL && c->in.len > c->in.off) {
        int p = h2c_preface(c);
        if (p < 0) {
            if (c->eof)
                ing__conn_close(c);
            return;
        }
        if (p > 0) {
            if (ing__h2_start(c) != 0) {
                ing__conn_close(c);
                return;
            }
            ing__h2_input(c);
            return;
        }
    }
    while (!c->closing) {
        struct ing_req *r = c->req;
        if (r != NULL && c->state == ING_C_PROXY) {
            if (c->eof && !r->req_done && !req_body_received(r)) {
                req_abort(r); /* the client gave up before its body was complete */
                return;
            }
            if (c->eof)
                c->close_after = 1;
            req_forward_body(r);
            /* Pipelined bytes wait in the buffer; stop reading when it is full. */
            if (c->req == r && c->in.len == c->in.cap)
                client_read_stop(c);
            return;
        }
        if (c->state == ING_C_TUNNEL) {
            if (r == NULL)
                return;
            req_forward_body(r);
            /* Either side closing ends the tunnel once what it sent is delivered. */
            if (c->req == r && c->eof && c->in.len == r->body_off && !r->up_writing)
                req_abort(r);
            return;
        }
        size_t avail = c->in.len - c->in.off;
        if (avail == 0) {
            if (c->eof) {
                ing__conn_close(c);
                return;
            }
            /* Nothing buffered: give the buffer back while idle. */
            ing__buf_release(w, &c->in);
            return;
        }
        if (r == NULL) {
            r = ing__req_get(w);
            if (r == NULL) {
                ing__conn_close(c);
                return;
            }
            r->c = c;
            r->sr_worker = w;
            r->t_start_ns = wr_mono_ns();
            r->bytes_in = avail;
            c->req = r;
            if (c->state == ING_C_IDLE) {
                c->state = ING_C_HEAD;
                ing__tq_add(w, &c->tn, ING_TQ_CLIENT_HEAD, w->cur->snap->client_header_timeout_ms);
            }
        }
        const struct xds_snapshot *s = w->cur->snap;
        struct ing_h1_limits lim = {s->max_header_bytes, s->max_target_bytes};
        int rc = ing_h1_parse_request(&r->msg, c->in.base + c->in.off, avail, &r->scan, &lim);
        if (rc == ING_H1_INCOMPLETE) {
            if (c->eof) {
                /* A partial head then FIN: answer 400 only if something meaningful came. */
                ing__conn_close(c);
                return;
            }
            if (c->in.len == c->in.cap) {
                if (c->in.off > 0) {
                    memmove(c->in.base, c->in.base + c->in.off, avail);
                    c->in.len = (uint32_t)avail;
                    c->in.off = 0;
                    continue;
                }
                /* The head outgrew a block: move it to a buffer of the configured limit (plus
                 * room for the body to stream through). */
                size_t cap = (size_t)s->max_header_bytes + ING_BLOCK_SIZE;
                if (c->in.cap >= cap) {
                    req_error(r, 431, true);
                    return;
                }
                char *big = malloc(cap);
                if (big == NULL) {
                    req_error(r, 431, true);
                    return;
                }
                memcpy(big, c->in.base, c->in.len);
                ing__buf_release(w, &c->in);
                c->in.base = big;
                c->in.cap = (uint32_t)cap;
                c->in.len = (uint32_t)avail;
            }
            client_read_start(c);
            return;
        }
        if (rc < 0) {
            r->sr = ing__snap_pin(w);
            r->req_done = 0;
            req_error(r, -rc, true);
            return;
        }
        start_request(c, r);
        return;
    }
}

/* ---- the request body: client -> upstream ---- */

static void on_upstream_written(uv_write_t *wr, int status);

/* Appends <n> bytes to the malloc'd buffer <b> (its capacity doubles from 256). */
static bool buf_add(struct ing_worker *w, struct ing_buf *b, const char *p, uint32_t n)
{
    if (b->len + n > b->cap) {
        uint32_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *nb = malloc(cap);
        if (nb == NULL)
            return false;
        if (b->len > 0)
            memcpy(nb, b->base, b->len);
        uint32_t len = b->len;
        ing__buf_release(w, b);
        *b = (struct ing_buf){.base = nb, .cap = cap, .len = len};
    }
    memcpy(b->base + b->len, p, n);
    b->len += n;
    return true;
}

/* The HTTP/2 client's trailers (records in r->h2trl) as the last chunk of an HTTP/1.1 chunked
 * body: "0" CRLF, the fields, CRLF. The text replaces the records in r->h2trl. Returns false
 * when there are none (or no memory: they are dropped then). */
static bool h2_trailers_chunk(struct ing_req *r)
{
    struct wr_str names[ING_MAX_HDRS], values[ING_MAX_HDRS];
    unsigned k = ing__trl_list(&r->h2trl, names, values, ING_MAX_HDRS);
    size_t len = 5;

    if (k == 0)
        return false;
    for (unsigned i = 0; i < k; i++)
        len += names[i].len + values[i].len + 4;
    char *out = malloc(len), *p = out;
    if (out == NULL)
        return false;
    p = PUTLIT(p, "0\r\n");
    for (unsigned i = 0; i < k; i++) {
        p = put(p, names[i].p, names[i].len);
        p = PUTLIT(p, ": ");
        p = put(p, values[i].p, values[i].len);
        p = PUTLIT(p, "\r\n");
    }
    p = PUTLIT(p, "\r\n");
    ing__buf_release(r->sr_worker, &r->h2trl);
    r->h2trl = (struct ing_buf){.base = out, .cap = (uint32_t)len, .len = (uint32_t)(p - out)};
    return true;
}

/* The body of an HTTP/2 stream, for the HTTP/1.1 upstream: fixed length as it is, unknown
 * length (or one with trailers) re-framed as chunked, the trailers in the last chunk. Fills
 * bufs[*n...] and returns the source bytes taken. */
static uint32_t h2_body_slice(struct ing_req *r, uv_buf_t *bufs, unsigned *n)
{
    static char crlf_end[] = "\r\n0\r\n\r\n";
    struct ing_buf *b = &r->h2body;
    uint32_t avail = b->base ? b->len - b->off : 0, body = 0;

    if (r->req_done)
        return 0;
    if (r->h2_xconnect) { /* WebSocket bytes, as they are */
        if (avail > 0)
            bufs[(*n)++] = uv_buf_init(b->base + b->off, avail);
        if (r->h2_end_stream)
            r->req_done = 1;
        return avail;
    }
    if (r->reqb.kind == ING_H1_BODY_LENGTH) {
        body = (uint32_t)WR_MIN((uint64_t)avail, r->reqb.remaining);
        r->reqb.remaining -= body;
        if (r->reqb.remaining == 0)
            r->req_done = 1;
        if (body > 0)
            bufs[(*n)++] = uv_buf_init(b->base + b->off, body);
        return body;
    }
    /* chunked: "<hex>\r\n" data "\r\n", and "0\r\n\r\n" once the client ended the stream */
    bool end = r->h2_end_stream;
    bool trl = end && h2_trailers_chunk(r);
    if (avail > 0) {
        int hl = snprintf(r->chunk_hdr, sizeof(r->chunk_hdr), "%x\r\n", avail);
        bufs[(*n)++] = uv_buf_init(r->chunk_hdr, (unsigned)hl);
        bufs[(*n)++] = uv_buf_init(b->base + b->off, avail);
        bufs[(*n)++] = uv_buf_init(crlf_end, end && !trl ? sizeof(crlf_end) - 1 : 2);
        body = avail;
    } else if (end && !trl) {
        bufs[(*n)++] = uv_buf_init(crlf_end + 2, sizeof(crlf_end) - 3);
    }
    if (trl)
        bufs[(*n)++] = uv_buf_init(r->h2trl.base, r->h2trl.len);
    if (end)
        r->req_done = 1;
    return body;
}

static void dechunk_cb(void *arg, const char *data, size_t len);

/* HTTP/2 upstream: makes the request body buffered in c->in ready for the stream's data
 * provider (ing__req_body_take): a fixed-length body as it is, a chunked one de-chunked in
 * place, so the decoded bytes are always the first r->body_ready bytes at body_off. */
static void req_h2up_body(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    if (r->h2 == NULL && r->reqb.kind == ING_H1_BODY_CHUNKED && !r->reqb.ck.done) {
        char *raw = c->in.base + r->body_off + r->body_ready;
        uint32_t avail = c->in.len - (r->body_off + r->body_ready);
        char *out = raw;
        long k = avail > 0 ? ing_h1_chunked_scan(&r->reqb.ck, raw, avail, dechunk_cb, &out) : 0;
        if (k < 0) {
            if (!r->resp_started)
                req_error(r, 400, true);
            else
                req_abort(r);
            return;
        }
        if (r->route->max_body_bytes > 0 && r->reqb.ck.data_bytes > r->route->max_body_bytes) {
            if (!r->resp_started)
                req_error(r, 413, true);
            else
                req_abort(r);
            return;
        }
        uint32_t dec = (uint32_t)(out - raw);
        /* Close the gap between the decoded bytes and what follows the scanned ones (the next
         * pipelined request, or the rest of this body). */
        memmove(raw + dec, raw + k, avail - (uint32_t)k);
        c->in.len -= (uint32_t)k - dec;
        r->body_ready += dec;
    }
    ing__h2up_body_more(r);
}

/* Copies up to <max> request body bytes into <dst> for the HTTP/2 upstream stream's data
 * provider and releases them: the client's buffer slides (HTTP/1.1) or its stream window
 * reopens (HTTP/2), so the client sends more only as the upstream takes it. Sets *eof once
 * the whole body was taken. */
long ing__req_body_take(struct ing_req *r, char *dst, size_t max, bool *eof)
{
    struct ing_conn *c = r->c;
    uint32_t n;

    *eof = false;
    if (c == NULL)
        return -1;
    if (r->h2 != NULL) {
        struct ing_buf *b = &r->h2body;
        n = (uint32_t)WR_MIN((size_t)(b->base ? b->len - b->off : 0), max);
        if (n > 0)
            memcpy(dst, b->base + b->off, n);
        b->off += n;
        if (b->off == b->len)
            b->off = b->len = 0;
        *eof = r->h2_end_stream && b->len == 0;
        if (n > 0)
            ing__h2_consumed_later(r, n);
    } else {
        uint32_t avail = r->body_ready;
        if (r->reqb.kind == ING_H1_BODY_LENGTH)
            avail = (uint32_t)WR_MIN((uint64_t)(c->in.len - r->body_off), r->reqb.remaining);
        n = (uint32_t)WR_MIN((size_t)avail, max);
        char *p = c->in.base + r->body_off;
        memcpy(dst, p, n);
        memmove(p, p + n, c->in.len - r->body_off - n);
        c->in.len -= n;
        if (r->reqb.kind == ING_H1_BODY_LENGTH) {
            r->reqb.remaining -= n;
            *eof = r->reqb.remaining == 0;
        } else {
            r->body_ready -= n;
            *eof = r->reqb.ck.done && r->body_ready == 0;
        }
        if (!*eof)
            client_read_start(c);
    }
    if (*eof)
        r->req_done = 1;
    return n;
}

/* The request has its upstream stream (ing_h2up.c): forward what the client sent already. */
void ing__req_forward(struct ing_req *r)
{
    req_forward_body(r);
}

/* Sends what is buffered of the request (head first) to the upstream, respecting framing. */
static void req_forward_body(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    if (r->h2s != NULL) {
        req_h2up_body(r);
        return;
    }
    while (r->up != NULL && r->up->state == ING_U_ACTIVE && !r->up_writing && c != NULL) {
        uv_buf_t bufs[5];
        unsigned n = 0;
        uint32_t body = 0;
        if (!r->head_sent) {
            bufs[n++] = uv_buf_init(r->head_out.base, r->head_out.len);
        }
        if (r->h2 != NULL) {
            body = h2_body_slice(r, bufs, &n);
            if (n == 0)
                return;
            goto send;
        }
        uint32_t avail = c->in.len - r->body_off;
        if (c->state == ING_C_TUNNEL) {
            body = avail;
        } else if (!r->req_done && avail > 0) {
            if (r->reqb.kind == ING_H1_BODY_LENGTH) {
                body = (uint32_t)WR_MIN((uint64_t)avail, r->reqb.remaining);
                r->reqb.remaining -= body;
                if (r->reqb.remaining == 0)
                    r->req_done = 1;
            } else {
                long k =
                    ing_h1_chunked_scan(&r->reqb.ck, c->in.base + r->body_off, avail, NULL, NULL);
                if (k < 0) {
                    if (!r->resp_started)
                        req_error(r, 400, true);
                    else
                        req_abort(r);
                    return;
                }
                body = (uint32_t)k;
                if (r->reqb.ck.done)
                    r->req_done = 1;
                if (r->route->max_body_bytes > 0 &&
                    r->reqb.ck.data_bytes > r->route->max_body_bytes) {
                    if (!r->resp_started)
                        req_error(r, 413, true);
                    else
                        req_abort(r);
                    return;
                }
            }
        }
        if (body > 0)
            bufs[n++] = uv_buf_init(c->in.base + r->body_off, body);
        if (n == 0) {
            if (!r->req_done || c->state == ING_C_TUNNEL)
                client_read_start(c);
            return;
        }
    send:
        r->up_wr_len = body;
        int rc = ing__up_write(r->up, bufs, n);
        if (rc < 0) {
            ing__req_upstream_failed(r, 502, !r->head_sent);
            return;
        }
        if (rc == 0) {
            r->up_writing = 1;
            if (r->h2 == NULL)
                client_read_stop(c);
            return;
        }
        ing__req_upstream_written(r);
    }
}

/* Called when a write to the upstream completed: release the forwarded body bytes. */
void ing__req_upstream_written(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    r->head_sent = 1;
    if (c == NULL)
        return;
    /* Upload progress counts as activity: the response timeout is an inactivity timeout. */
    if (r->up != NULL && !r->resp_started && c->state != ING_C_TUNNEL)
        ing__tq_add(r->sr_worker, &r->up->tn, ING_TQ_UP_RESPONSE, r->route->timeout_ms);
    if (r->h2 != NULL) {
        uint32_t n = r->up_wr_len;
        r->up_wr_len = 0;
        r->h2body.off += n;
        if (r->h2body.off == r->h2body.len)
            r->h2body.off = r->h2body.len = 0;
        ing__h2_consumed(r, n);
        return;
    }
    if (r->up_wr_len > 0) {
        uint32_t end = r->body_off + r->up_wr_len;
        uint32_t rest = c->in.len - end;
        /* Keep the head where it is; slide what follows the forwarded bytes down to body_off. */
        if (rest > 0)
            memmove(c->in.base + r->body_off, c->in.base + end, rest);
        c->in.len = r->body_off + rest;
        r->up_wr_len = 0;
    }
    if (!r->req_done || c->state == ING_C_TUNNEL)
        client_read_start(c);
}

static void on_upstream_written(uv_write_t *wr, int status)
{
    struct ing_req *r = WR_CONTAINER_OF(wr, struct ing_req, up_wr);

    r->up_writing = 0;
    if (r->c == NULL || r->up == NULL) {
        req_try_free(r);
        return;
    }
    if (status < 0) {
        ing__req_upstream_failed(r, 502, !r->got_resp_byte);
        return;
    }
    ing__req_upstream_written(r);
    req_forward_body(r);
}

int ing__up_write(struct ing_up *u, uv_buf_t *bufs, unsigned n)
{
    if (u->tls != NULL)
        return ing__tls_write(u->tls, &u->req->up_wr, bufs, n, on_upstream_written);
    return ing__send((uv_stream_t *)&u->tcp, &u->req->up_wr, bufs, n, on_upstream_written);
}

/* ---- upstream events ---- */

void ing__req_upstream_ready(struct ing_req *r)
{
    struct xds_ep_state *st = r->up->st;

    if (st != NULL)
        xds_ctr_add(&st->w[r->sr_worker->idx].requests, 1);
    ing__up_read_start(r->up);
    ing__tq_add(r->sr_worker, &r->up->tn, ING_TQ_UP_RESPONSE, r->route->timeout_ms);
    req_forward_body(r);
}

/* Counts a failure against the endpoint of <r>: <kind> is HC_OUTLIER_5XX for a 5xx the upstream
 * sent, HC_OUTLIER_GATEWAY for a connect error, reset, timeout or cut body. */
static void count_failure_kind(struct ing_req *r, int kind)
{
    const struct xds_endpoint *ep;

    if (r->cluster == NULL || r->ep_idx < 0)
        return;
    ep = &r->cluster->eps[r->ep_idx];
    if (ep->st != NULL) {
        xds_ctr_add(&ep->st->w[r->sr_worker->idx].failures, 1);
        hc_outlier_report(ep->st, r->sr_worker->idx, kind);
    }
}

static void count_failure(struct ing_req *r)
{
    count_failure_kind(r, HC_OUTLIER_GATEWAY);
}

/* An upstream answered below 500: its outlier streaks end. */
static void count_success(struct ing_req *r)
{
    if (r->cluster == NULL || r->ep_idx < 0 || (unsigned)r->ep_idx >= r->cluster->n_eps)
        return;
    struct xds_ep_state *st = r->cluster->eps[r->ep_idx].st;
    if (st != NULL)
        hc_outlier_report(st, r->sr_worker->idx, HC_OUTLIER_SUCCESS);
}

void ing__req_upstream_failed(struct ing_req *r, int status, bool may_retry)
{
    /* A pooled connection the upstream had already closed (the keep-alive race) is not the
     * endpoint's failure: it is retried and must not count toward an ejection. */
    if (!(may_retry && r->up != NULL && r->up->reused && !r->got_resp_byte))
        count_failure(r);
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        r->up = NULL;
        ing__up_release(u, false);
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    if (r->resp_started) {
        req_abort(r);
        return;
    }
    bool body_replayable = r->msg.body == ING_H1_BODY_NONE ||
                           (r->msg.body == ING_H1_BODY_LENGTH && r->msg.content_length == 0);
    if (may_retry && !r->retried && r->cluster->retries > 0 && body_replayable &&
        method_idempotent(r->msg.method_id) && !r->upgrade) {
        r->retried = 1;
        r->head_sent = 0;
        if (r->cluster->stats != NULL)
            xds_ctr_add(&xds_counters_w(r->cluster->stats, r->sr_worker->idx)[XDS_CS_RETRIES], 1);
        req_dispatch(r);
        return;
    }
    req_error(r, status, false);
}

/* ---- the response: upstream -> client ---- */

static bool hdr_skip_downstream(const struct ing_h1_hdr *h)
{
    return (h->flags & ING_H1_HF_HOP) != 0 || h->id == ING_H1_H_CONTENT_LENGTH;
}

/* Serializes the client-facing response head into r->resp_out. */
static bool build_response_head(struct ing_req *r)
{
    struct ing_h1_msg *m = &r->rmsg;
    struct ing_buf *b = &r->resp_out;
    size_t need = m->head_len + 256;
    const struct xds_route *rt = r->route;

    if (r->c->close_after || r->sr_worker->draining)
        r->client_keep = 0; /* draining: the last response says so */
    if (rt != NULL && rt->hsts.enabled && r->c->lst->is_tls)
        need += strlen(rt->hsts.header_value) + 40;
    if (b->base == NULL) {
        b->base = need <= ING_BLOCK_SIZE ? ing__block_get(r->sr_worker) : malloc(need);
        b->cap = need <= ING_BLOCK_SIZE ? ING_BLOCK_SIZE : (uint32_t)need;
        if (b->base == NULL) {
            b->cap = 0;
            return false;
        }
    }
    char *p = b->base;
    p = PUTLIT(p, "HTTP/1.1 ");
    char st[8];
    int sl = snprintf(st, sizeof(st), "%u ", m->status);
    p = put(p, st, (size_t)sl);
    p = put(p, m->reason.p, m->reason.len);
    p = PUTLIT(p, "\r\n");
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];
        if (hdr_skip_downstream(h))
            continue;
        p = put(p, h->name, h->name_len);
        p = PUTLIT(p, ": ");
        p = put(p, h->value, h->value_len);
        p = PUTLIT(p, "\r\n");
    }
    if (m->status == 101) {
        for (unsigned i = 0; i < m->n_hdrs; i++) {
            const struct ing_h1_hdr *h = &m->hdrs[i];
            if (h->id == ING_H1_H_UPGRADE) {
                p = PUTLIT(p, "Connection: upgrade\r\nUpgrade: ");
                p = put(p, h->value, h->value_len);
                p = PUTLIT(p, "\r\n");
            }
        }
    } else {
        if (m->body == ING_H1_BODY_CHUNKED && !r->dechunk)
            p = PUTLIT(p, "Transfer-Encoding: chunked\r\n");
        if (m->flags & ING_H1_F_CONTENT_LENGTH)
            p += sprintf(p, "Content-Length: %llu\r\n", (unsigned long long)m->content_length);
        if (!r->client_keep)
            p = PUTLIT(p, "Connection: close\r\n");
        else if (r->msg.minor == 0)
            p = PUTLIT(p, "Connection: keep-alive\r\n");
    }
    if (rt != NULL && rt->hsts.enabled && r->c->lst->is_tls) {
        p = PUTLIT(p, "Strict-Transport-Security: ");
        p = put(p, rt->hsts.header_value, strlen(rt->hsts.header_value));
        p = PUTLIT(p, "\r\n");
    }
    if (r->set_track && r->colour >= 0)
        p = r->colour ? PUTLIT(p, "Set-Cookie: weir-track=green; Path=/; HttpOnly\r\n")
                      : PUTLIT(p, "Set-Cookie: weir-track=blue; Path=/; HttpOnly\r\n");
    p = PUTLIT(p, "\r\n");
    b->len = (uint32_t)(p - b->base);
    b->off = 0;
    return true;
}

/* Parses the response head in u->in. Returns 1 when a final head is ready in resp_out, 0 when
 * more bytes are needed, -1 when the request was ended (error answered or aborted). */
static int parse_response_head(struct ing_req *r)
{
    struct ing_up *u = r->up;
    const struct xds_snapshot *s = r->sr->snap;
    struct ing_h1_limits lim = {s->max_header_bytes, s->max_target_bytes};

    for (;;) {
        size_t avail = u->in.len - u->in.off;
        int rc = ing_h1_parse_response(&r->rmsg, u->in.base + u->in.off, avail, &r->rscan, &lim,
                                       r->msg.method_id);
        if (rc == ING_H1_INCOMPLETE) {
            if (u->eof) {
                /* Died before any answer: an idempotent, bodiless request may go elsewhere
                 * (RFC 9110 §9.2.2), whether the connection was fresh or reused. */
                ing__req_upstream_failed(r, 502, avail == 0);
                return -1;
            }
            if (u->in.len == u->in.cap) {
                if (u->in.off == 0) {
                    wr_warn("upstream %s: response head larger than %u bytes", r->ep_addr,
                            u->in.cap);
                    ing__req_upstream_failed(r, 502, false);
                    return -1;
                }
                memmove(u->in.base, u->in.base + u->in.off, avail);
                u->in.len = (uint32_t)avail;
                u->in.off = 0;
                continue;
            }
            return 0;
        }
        if (rc < 0) {
            wr_warn("upstream %s: malformed response", r->ep_addr);
            ing__req_upstream_failed(r, 502, false);
            return -1;
        }
        if (r->rmsg.status >= 100 && r->rmsg.status < 200 && r->rmsg.status != 101) {
            /* Interim answers: 100 was already sent by us; drop the others. */
            u->in.off += (uint32_t)rc;
            r->rscan = 0;
            continue;
        }
        if (r->rmsg.status == 101 && !r->upgrade) {
            ing__req_upstream_failed(r, 502, false);
            return -1;
        }
        u->in.off += (uint32_t)rc;
        r->got_resp_byte = 1;
        r->status = r->rmsg.status;
        r->respb.kind = r->rmsg.body;
        r->respb.remaining = r->rmsg.content_length;
        r->respb.done = r->rmsg.body == ING_H1_BODY_NONE ||
                        (r->rmsg.body == ING_H1_BODY_LENGTH && r->rmsg.content_length == 0);
        r->upstream_keep = (r->rmsg.flags & ING_H1_F_KEEP_ALIVE) && r->rmsg.body != ING_H1_BODY_EOF;
        if (r->rmsg.body == ING_H1_BODY_EOF || r->rmsg.status == 101)
            r->client_keep = 0;
        if (r->h2 != NULL && r->h2_xconnect && r->rmsg.status == 101) {
            /* The WebSocket is up: the upstream's bytes until it closes, no timeout. */
            r->respb.kind = ING_H1_BODY_EOF;
            r->respb.done = 0;
            r->upstream_keep = 0;
            ing__tq_del(&u->tn);
        }
        if (r->h2 != NULL) {
            r->dechunk = r->rmsg.body == ING_H1_BODY_CHUNKED; /* HTTP/2 has no chunks */
            r->resp_started = 1;
            r->t_up_done_ns = wr_mono_ns();
            return 1;
        }
        if (r->rmsg.body == ING_H1_BODY_CHUNKED && r->msg.minor == 0) {
            r->dechunk = 1;
            r->client_keep = 0;
        }
        if (!r->req_done && !r->upgrade)
            r->client_keep = 0; /* answered before the body ended: we will not read the rest */
        if (!build_response_head(r)) {
            req_abort(r);
            return -1;
        }
        r->resp_started = 1;
        r->resp_head_pending = 1;
        r->t_up_done_ns = wr_mono_ns();
        return 1;
    }
}

static void dechunk_cb(void *arg, const char *data, size_t len)
{
    char **out = arg;

    memmove(*out, data, len);
    *out += len;
}

/* Moves as much of the response as possible from the upstream buffer to the client. */
static void response_data_h2(struct ing_req *r)
{
    if (!r->resp_started) {
        if (parse_response_head(r) <= 0)
            return;
        if (ing__h2_respond(r, 0, NULL, !r->respb.done) != 0)
            req_abort(r);
        return;
    }
    ing__h2_resume(r);
}

/* HTTP/2 upstream: the response head in r->rmsg (ing_h2up.c filled it) decides the framing
 * for an HTTP/1.1 client: the upstream's Content-Length, else chunked (with the trailers), or
 * the end of the connection for an HTTP/1.0 client. */
static bool h2up_response_head(struct ing_req *r)
{
    struct ing_h1_msg *m = &r->rmsg;
    struct ing_h2s *hs = r->h2s;

    if (r->msg.method_id == ING_H1_M_HEAD || m->status == 204 || m->status == 304) {
        m->body = ING_H1_BODY_NONE;
    } else if (m->flags & ING_H1_F_CONTENT_LENGTH) {
        m->body = ING_H1_BODY_LENGTH;
    } else if (hs->remote_end && hs->rlen == 0 && hs->trl.len == 0) {
        m->body = ING_H1_BODY_LENGTH; /* complete already: say it is empty */
        m->content_length = 0;
        m->flags |= ING_H1_F_CONTENT_LENGTH;
    } else if (r->msg.minor == 0) {
        m->body = ING_H1_BODY_EOF;
        r->client_keep = 0;
    } else {
        m->body = ING_H1_BODY_CHUNKED;
    }
    r->respb.kind = m->body;
    r->respb.done = m->body == ING_H1_BODY_NONE;
    r->status = m->status;
    r->got_resp_byte = 1;
    if (!r->req_done)
        r->client_keep = 0; /* answered before the body ended: we will not read the rest */
    if (!build_response_head(r))
        return false;
    r->resp_started = 1;
    r->resp_head_pending = 1;
    r->t_up_done_ns = wr_mono_ns();
    return true;
}

/* HTTP/2 upstream -> HTTP/1.1 client: writes the head, then what the stream buffered, straight
 * from its ring; the ring (and so the upstream's window) is released once written. */
static void response_h2up_h1(struct ing_req *r)
{
    static char crlf[] = "\r\n";

    while (r->h2s != NULL && !r->cl_writing && r->c != NULL) {
        struct ing_h2s *hs = r->h2s;
        if (!r->resp_started) {
            if (!hs->head_ready)
                return;
            if (!h2up_response_head(r)) {
                req_abort(r);
                return;
            }
        }
        uv_buf_t *bufs = r->iov;
        unsigned n = 0;
        uint32_t take = 0;
        if (r->resp_head_pending) {
            bufs[n++] = uv_buf_init(r->resp_out.base, r->resp_out.len);
            r->resp_head_pending = 0;
        }
        if (!r->respb.done) {
            uv_buf_t pieces[2];
            unsigned np = ing__h2up_peek(r, pieces);
            for (unsigned i = 0; i < np; i++)
                take += (uint32_t)pieces[i].len;
            bool chunked = r->respb.kind == ING_H1_BODY_CHUNKED;
            if (take > 0 && chunked) {
                int hl = snprintf(r->chunk_hdr, sizeof(r->chunk_hdr), "%x\r\n", take);
                bufs[n++] = uv_buf_init(r->chunk_hdr, (unsigned)hl);
            }
            for (unsigned i = 0; i < np; i++)
                bufs[n++] = pieces[i];
            if (take > 0 && chunked)
                bufs[n++] = uv_buf_init(crlf, 2);
            if (hs->remote_end && hs->rlen == take) {
                r->respb.done = 1;
                uint32_t tl;
                const char *tail = chunked ? ing__h2up_tail(r, &tl) : NULL;
                if (chunked && tail == NULL) {
                    req_abort(r);
                    return;
                }
                if (tail != NULL)
                    bufs[n++] = uv_buf_init((char *)tail, tl);
            }
        }
        if (r->respb.done)
            r->resp_done = 1;
        if (n == 0) {
            if (r->resp_done) {
                req_finish(r);
                return;
            }
            if (hs->failed) {
                /* The stream ended without a complete response: the client must see a
                 * truncated one (short body, missing last chunk, or a close), never a clean
                 * end. */
                req_abort(r);
            }
            return;
        }
        client_write(r, bufs, n, take);
        return;
    }
}

/* HTTP/2 upstream -> HTTP/2 client: the head now, the body pulled by the client's data
 * provider (ing__resp_take). */
static void response_h2up_h2(struct ing_req *r)
{
    struct ing_h2s *hs = r->h2s;

    if (r->resp_started) {
        ing__h2_resume(r);
        return;
    }
    if (!hs->head_ready)
        return;
    r->status = r->rmsg.status;
    r->got_resp_byte = 1;
    r->resp_started = 1;
    r->t_up_done_ns = wr_mono_ns();
    bool body = !(hs->remote_end && hs->rlen == 0 && hs->trl.len == 0);
    if (ing__h2_respond(r, 0, NULL, body) != 0)
        req_abort(r);
}

void ing__req_response_data(struct ing_req *r)
{
    if (r->h2s != NULL) {
        if (r->h2 != NULL)
            response_h2up_h2(r);
        else if (r->c != NULL)
            response_h2up_h1(r);
        return;
    }
    if (r->h2 != NULL) {
        if (r->up != NULL)
            response_data_h2(r);
        return;
    }
    while (r->up != NULL && !r->cl_writing && r->c != NULL) {
        struct ing_up *u = r->up;
        if (!r->resp_started) {
            int rc = parse_response_head(r);
            if (rc <= 0)
                return;
        }
        uv_buf_t bufs[2];
        unsigned n = 0;
        if (r->resp_head_pending) {
            bufs[n++] = uv_buf_init(r->resp_out.base, r->resp_out.len);
            r->resp_head_pending = 0;
        }
        uint32_t avail = u->in.len - u->in.off, take = 0, send = 0;
        char *start = u->in.base + u->in.off;
        if (r->rmsg.status == 101) {
            take = send = avail;
        } else if (!r->respb.done && avail > 0) {
            switch (r->respb.kind) {
            case ING_H1_BODY_LENGTH:
                take = send = (uint32_t)WR_MIN((uint64_t)avail, r->respb.remaining);
                r->respb.remaining -= take;
                r->respb.done = r->respb.remaining == 0;
                break;
            case ING_H1_BODY_CHUNKED: {
                char *out = start;
                long k = ing_h1_chunked_scan(&r->respb.ck, start, avail,
                                             r->dechunk ? dechunk_cb : NULL, &out);
                if (k < 0) {
                    wr_warn("upstream %s: malformed chunked body", r->ep_addr);
                    count_failure(r);
                    req_abort(r);
                    return;
                }
                take = (uint32_t)k;
                send = r->dechunk ? (uint32_t)(out - start) : take;
                r->respb.done = r->respb.ck.done;
                break;
            }
            default: /* EOF-delimited */
                take = send = avail;
                break;
            }
        }
        if (r->respb.kind == ING_H1_BODY_EOF && u->eof && take == avail)
            r->respb.done = 1;
        if (send > 0)
            bufs[n++] = uv_buf_init(start, send);
        if (r->respb.done && r->rmsg.status != 101)
            r->resp_done = 1;
        if (n == 0) {
            if (take > 0) {
                u->in.off += take;
                continue;
            }
            if (r->resp_done) {
                req_finish(r);
                return;
            }
            if (u->eof) {
                /* The upstream closed before the body was complete: the client must see a
                 * truncated response, never a clean end. */
                count_failure(r);
                req_abort(r);
                return;
            }
            ing__up_read_start(u);
            return;
        }
        client_write(r, bufs, n, take);
        return;
    }
}

static void after_client_write(struct ing_req *r)
{
    struct ing_conn *c = r->c;

    if (c->state != ING_C_TUNNEL)
        ing__tq_del(&c->tn);
    if (r->h2s != NULL) {
        uint32_t n = r->cl_wr_len;
        r->cl_wr_len = 0;
        if (n > 0)
            ing__h2up_taken(r, n);
        if (r->resp_done)
            req_finish(r);
        else
            ing__req_response_data(r);
        return;
    }
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        u->in.off += r->cl_wr_len;
        r->cl_wr_len = 0;
        if (u->in.off == u->in.len)
            u->in.off = u->in.len = 0;
        if (r->rmsg.status == 101 && c->state != ING_C_TUNNEL && r->resp_started) {
            /* The 101 head is out: from now on bytes flow both ways untouched. */
            c->state = ING_C_TUNNEL;
            r->req_done = 1;
            ing__tq_del(&u->tn);
            req_forward_body(r);
            if (r->c == NULL)
                return;
        }
    }
    if (r->resp_done) {
        req_finish(r);
        return;
    }
    if (r->up == NULL) {
        req_abort(r);
        return;
    }
    if (c->state != ING_C_TUNNEL)
        ing__tq_add(c->w, &r->up->tn, ING_TQ_UP_RESPONSE, r->route->timeout_ms);
    ing__up_read_start(r->up);
    ing__req_response_data(r);
}

/* ---- ending a request ---- */

static void account(struct ing_req *r)
{
    struct ing_worker *w = r->sr_worker;
    const struct xds_route *rt = r->route;
    unsigned cls = code_class(r->status);

    if (rt == NULL)
        return;
    if (r->got_resp_byte && r->status < 500)
        count_success(r);
    if (r->wc_idx >= 0 && rt->wc[r->wc_idx].stats != NULL)
        xds_ctr_add(&xds_counters_w(rt->wc[r->wc_idx].stats, w->idx)[cls], 1);
    if (rt->rollout != NULL && r->colour >= 0 && rt->rollout->stats != NULL)
        xds_ctr_add(&xds_counters_w(rt->rollout->stats, w->idx)[XDS_RS_IDX(r->colour, cls)], 1);
    if (rt->hist != NULL) {
        uint64_t us = (wr_mono_ns() - r->t_start_ns) / 1000;
        double sec = (double)us / 1e6;
        unsigned b = 0;
        while (b < XDS_HIST_BUCKETS && sec > xds_hist_bounds[b])
            b++;
        _Atomic uint64_t *k = xds_counters_w(rt->hist, w->idx);
        if (b < XDS_HIST_BUCKETS)
            xds_ctr_add(&k[b], 1);
        xds_ctr_add(&k[XDS_HIST_BUCKETS], us);
        xds_ctr_add(&k[XDS_HIST_BUCKETS + 1], 1);
    }
    if (r->status >= 500 && r->got_resp_byte && r->ep_idx >= 0)
        count_failure_kind(r, HC_OUTLIER_5XX); /* our own 5xx were counted as they arose */
}

static void req_finish(struct ing_req *r)
{
    struct ing_conn *c = r->c;
    struct ing_worker *w = r->sr_worker;

    account(r);
    if (r->sr->snap->access_log != NULL)
        ing__log_request(w, r);
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        bool keep = r->upstream_keep && r->req_done && r->respb.done && u->in.off == u->in.len &&
                    r->rmsg.status != 101;
        r->up = NULL;
        ing__up_release(u, keep);
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    bool keep = r->client_keep && r->req_done && !c->close_after && !w->draining &&
                c->state != ING_C_TUNNEL;
    /* Drop the finished request's head and body from the buffer; pipelined bytes stay. */
    if (c->state == ING_C_PROXY && r->body_off >= c->in.off)
        c->in.off = r->body_off;
    c->req = NULL;
    r->c = NULL;
    if (!keep && conn_should_linger(c, r)) {
        req_try_free(r);
        conn_linger(c);
        return;
    }
    req_try_free(r);
    if (!keep) {
        ing__conn_close(c);
        return;
    }
    c->state = ING_C_IDLE;
    if (c->in.off == c->in.len) {
        ing__buf_release(w, &c->in);
        ing__tq_add(w, &c->tn, ING_TQ_CLIENT_IDLE, w->cur->snap->client_idle_timeout_ms);
        client_read_start(c);
        return;
    }
    client_read_start(c);
    conn_process(c);
}

/* ---- timeouts and drain ---- */

void ing__conn_timeout(struct ing_conn *c, uint8_t kind)
{
    struct ing_req *r = c->req;

    if (c->h2 != NULL && kind == ING_TQ_CLIENT_IDLE && !wr_list_empty(&c->w->conns) &&
        ing__h2_busy(c))
        return; /* streams are active: the idle timer was stale */

    if (kind == ING_TQ_CLIENT_HEAD && r != NULL && c->state == ING_C_HEAD && !r->cl_writing) {
        /* Slow-loris: part of a head came, but not all of it in time. */
        r->sr = ing__snap_pin(c->w);
        req_error(r, 408, true);
        return;
    }
    ing__conn_close(c);
}

void ing__conn_drain(struct ing_conn *c)
{
    c->close_after = 1;
    if (c->h2 != NULL) {
        ing__h2_drain(c);
        return;
    }
    if ((c->state == ING_C_IDLE && c->req == NULL) || c->lingering)
        ing__conn_close(c);
}

/* ---- HTTP/2 streams: the end of a request ---- */

struct take_ctx {
    char *out;
};

static void take_cb(void *arg, const char *data, size_t len)
{
    struct take_ctx *t = arg;

    memcpy(t->out, data, len);
    t->out += len;
}

/* Copies up to <max> response body bytes into <dst> for nghttp2's data provider: the canned
 * body of an error of ours, or the upstream's body with its HTTP/1.1 framing removed. Sets
 * *eof at the end of the body; returns -1 when the upstream body was cut short or malformed. */
long ing__resp_take(struct ing_req *r, char *dst, size_t max, bool *eof)
{
    if (r->canned != NULL) {
        size_t n = WR_MIN(max, (size_t)(r->canned_len - r->canned_off));
        memcpy(dst, r->canned + r->canned_off, n);
        r->canned_off += (uint32_t)n;
        *eof = r->canned_off == r->canned_len;
        return (long)n;
    }
    if (r->h2s != NULL)
        return ing__h2up_take(r, dst, max, eof);
    struct ing_up *u = r->up;
    if (u == NULL)
        return -1;
    long sent = 0;
    while (!r->respb.done) {
        uint32_t avail = u->in.len - u->in.off;
        uint32_t in = (uint32_t)WR_MIN((size_t)avail, max - (size_t)sent);
        char *start = u->in.base + u->in.off;
        uint32_t take = 0, n = 0;
        if (in == 0)
            break;
        switch (r->respb.kind) {
        case ING_H1_BODY_LENGTH:
            take = n = (uint32_t)WR_MIN((uint64_t)in, r->respb.remaining);
            memcpy(dst + sent, start, n);
            r->respb.remaining -= take;
            r->respb.done = r->respb.remaining == 0;
            break;
        case ING_H1_BODY_CHUNKED: {
            struct take_ctx t = {dst + sent};
            uint32_t trl0 = r->respb.ck.trailer_len;
            long k = ing_h1_chunked_scan(&r->respb.ck, start, in, take_cb, &t);
            if (k < 0) {
                count_failure(r);
                return -1;
            }
            take = (uint32_t)k;
            /* The trailer section is the last thing in a chunked body: the bytes the scanner
             * counted as trailer in this call are the last it took. Kept for the HTTP/2
             * client (ing_h2.c sends them as a HEADERS frame after the data). */
            uint32_t tn = r->respb.ck.trailer_len - trl0;
            if (tn > 0 && !buf_add(r->sr_worker, &r->rtrl, start + take - tn, tn)) {
                count_failure(r);
                return -1;
            }
            n = (uint32_t)(t.out - (dst + sent));
            r->respb.done = r->respb.ck.done;
            break;
        }
        default:
            take = n = in;
            memcpy(dst + sent, start, n);
            break;
        }
        u->in.off += take;
        sent += n;
        if (take == 0 || (size_t)sent == max)
            break;
    }
    if (u->in.off == u->in.len)
        u->in.off = u->in.len = 0;
    if (r->respb.kind == ING_H1_BODY_EOF && u->eof && u->in.off == u->in.len)
        r->respb.done = 1;
    if (r->respb.done) {
        *eof = true;
        return sent;
    }
    if (sent == 0 && u->eof) {
        count_failure(r); /* the upstream closed before the body was complete */
        return -1;
    }
    if (!(r->h2_xconnect && r->rmsg.status == 101))
        ing__tq_add(r->sr_worker, &u->tn, ING_TQ_UP_RESPONSE, r->route->timeout_ms);
    ing__up_read_start(u); /* there is room again */
    return sent;
}

/* The last frame of the stream's response went out. */
void ing__req_finish_h2(struct ing_req *r)
{
    struct ing_worker *w = r->sr_worker;

    account(r);
    if (r->sr->snap->access_log != NULL)
        ing__log_request(w, r);
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        bool keep = r->upstream_keep && r->req_done && r->respb.done && u->in.off == u->in.len;
        r->up = NULL;
        ing__up_release(u, keep);
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    if (!r->h2_end_stream && !r->h2_closed)
        ing__h2_reset(r, NGHTTP2_NO_ERROR); /* answered: the rest of the body is not needed */
    else
        ing__h2_detach(r);
    r->c = NULL;
    req_try_free(r);
}

void ing__req_abort_h2(struct ing_req *r)
{
    if (r->up != NULL) {
        struct ing_up *u = r->up;
        r->up = NULL;
        ing__up_release(u, false);
    }
    if (r->h2s != NULL)
        ing__h2up_release(r);
    if (r->h2 != NULL)
        ing__h2_reset(r, NGHTTP2_INTERNAL_ERROR);
    r->c = NULL;
    req_try_free(r);
}
