/* ingress/ing_upstream.c -- upstream connections: connect, the per-worker keep-alive pool of
 * each endpoint, timeouts and failure reporting back to the request.
 *
 * Pool rules: each worker keeps its own idle connections per endpoint (in the endpoint's
 * per-worker slice of struct xds_ep_state, so pools survive config reloads), most recently used
 * first, at most the cluster's max_idle, closed after idle_timeout_ms. An idle connection keeps
 * reading, so an upstream that closes it is noticed (and the socket freed) before it is leased
 * again; the rare close that races with a lease is covered by the retry of idempotent requests.
 */
#include <stdlib.h>
#include <string.h>

#include "ing_priv.h"

static void up_close(struct ing_up *u);
static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void count_connect_failure(struct ing_req *r, struct ing_up *u);
static void up_tls_fail(struct ing_up *u);

static void on_up_closed(uv_handle_t *h)
{
    struct ing_up *u = WR_CONTAINER_OF(h, struct ing_up, tcp);

    ing__buf_release(u->w, &u->in);
    ing__tls_free(u->tls);
    xds_ep_state_unref(u->st);
    free(u);
}

static void up_close(struct ing_up *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    if (u->state == ING_U_IDLE && u->st != NULL) {
        wr_list_remove(&u->idle_link);
        u->st->w[u->w->idx].n_idle--;
    }
    u->state = ING_U_CLOSING;
    ing__tq_del(&u->tn);
    wr_list_remove(&u->wlink);
    if (u->tls != NULL)
        ing__tls_shutdown(u->tls);
    uv_close((uv_handle_t *)&u->tcp, on_up_closed);
}

/* ---- reading ---- */

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ing_up *u = WR_CONTAINER_OF(h, struct ing_up, tcp);

    if (u->tls != NULL) {
        ing__tls_alloc(u->tls, buf);
        return;
    }
    if (u->in.base == NULL) {
        u->in.base = ing__upblock_get(u->w);
        u->in.cap = u->in.base ? ING_UPBLOCK_SIZE : 0;
        u->in.off = u->in.len = 0;
    } else if (u->in.off == u->in.len) {
        u->in.off = u->in.len = 0;
    } else if (u->in.len == u->in.cap && u->in.off > 0) {
        /* Only reached when no write references the buffer (reads stop while one does). */
        memmove(u->in.base, u->in.base + u->in.off, u->in.len - u->in.off);
        u->in.len -= u->in.off;
        u->in.off = 0;
    }
    buf->base = u->in.base ? u->in.base + u->in.len : NULL;
    buf->len = u->in.base ? u->in.cap - u->in.len : 0;
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ing_up *u = WR_CONTAINER_OF(s, struct ing_up, tcp);

    if (nread == 0)
        return;
    if (nread > 0 && u->tls != NULL) {
        ing__tls_cin(u->tls)->len += (uint32_t)nread;
        ing__tls_read(u->tls, 0); /* decrypts into u->in, then up_tls_input() */
        return;
    }
    if (u->state == ING_U_HANDSHAKE) {
        up_tls_fail(u); /* closed or reset during the handshake */
        return;
    }
    if (u->state != ING_U_ACTIVE || u->req == NULL) {
        /* Idle: data or EOF means the upstream is done with this connection. */
        up_close(u);
        return;
    }
    if (nread > 0) {
        u->in.len += (uint32_t)nread;
        if (u->in.len == u->in.cap)
            ing__up_read_stop(u);
    } else if (nread == UV_ENOBUFS) {
        ing__up_read_stop(u);
        return;
    } else {
        u->eof = 1;
        ing__up_read_stop(u);
    }
    ing__req_response_data(u->req);
}

void ing__up_read_start(struct ing_up *u)
{
    if (u->tls != NULL && !u->closing && u->state == ING_U_ACTIVE)
        ing__tls_resume(u->tls); /* what OpenSSL holds needs no new socket data */
    if (u->reading || u->eof || u->closing)
        return;
    if (u->in.base != NULL && u->in.len == u->in.cap && u->in.off == 0)
        return; /* full: the client must take some first */
    if (u->req != NULL && u->req->cl_writing)
        return; /* its bytes are being written from this buffer */
    if (uv_read_start((uv_stream_t *)&u->tcp, on_up_alloc, on_up_read) == 0)
        u->reading = 1;
}

void ing__up_read_stop(struct ing_up *u)
{
    if (!u->reading)
        return;
    uv_read_stop((uv_stream_t *)&u->tcp);
    u->reading = 0;
}

/* ---- connecting ---- */

static void count_connect_failure(struct ing_req *r, struct ing_up *u)
{
    unsigned wi = u->w->idx;

    if (u->st != NULL)
        xds_ctr_add(&u->st->w[wi].connect_failures, 1);
    if (r != NULL && r->cluster != NULL && r->cluster->stats != NULL)
        xds_ctr_add(&xds_counters_w(r->cluster->stats, wi)[XDS_CS_CONNECT_FAILURES], 1);
}

/* ---- TLS callbacks of an upstream connection ---- */

static void up_tls_fail(struct ing_up *u)
{
    struct ing_req *r = u->req;

    if (u->state == ING_U_HANDSHAKE) {
        wr_warn("upstream %s: TLS handshake failed", r ? r->ep_addr : "?");
        count_connect_failure(r, u);
        if (r != NULL) {
            ing__req_upstream_failed(r, 502, true); /* releases u */
            return;
        }
        up_close(u);
        return;
    }
    if (r == NULL || u->state != ING_U_ACTIVE) {
        up_close(u);
        return;
    }
    u->eof = 1; /* a TLS error mid-exchange reads as a reset */
    ing__up_read_stop(u);
    ing__req_response_data(r);
}

static void up_tls_input_cb(void *owner, long n)
{
    struct ing_up *u = owner;

    if (n == -2)
        u->eof = 1;
    if (u->state != ING_U_ACTIVE || u->req == NULL) {
        if (n != 0)
            up_close(u); /* data or close_notify on an idle connection */
        return;
    }
    if (u->in.len == u->in.cap)
        ing__up_read_stop(u);
    if (n != 0)
        ing__req_response_data(u->req);
}

static void up_tls_fail_cb(void *owner)
{
    up_tls_fail(owner);
}

static int up_tls_handshake_cb(void *owner)
{
    struct ing_up *u = owner;
    struct ing_req *r = u->req;

    u->state = ING_U_ACTIVE;
    ing__tq_del(&u->tn);
    if (r != NULL) {
        r->up_used = 1;
        ing__req_upstream_ready(r);
    }
    return 0;
}

static const struct ing_tls_ops up_tls_ops = {up_tls_input_cb, up_tls_fail_cb, up_tls_handshake_cb};

static void on_connect(uv_connect_t *creq, int status)
{
    struct ing_up *u = WR_CONTAINER_OF(creq, struct ing_up, connect);
    struct ing_req *r = u->req;

    if (status == UV_ECANCELED || u->closing)
        return;
    if (status < 0) {
        wr_debug("upstream %s: connect failed: %s", r ? r->ep_addr : "?", uv_strerror(status));
        count_connect_failure(r, u);
        if (r != NULL)
            ing__req_upstream_failed(r, 502, true); /* releases u */
        else
            up_close(u);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    if (r != NULL && r->cluster->tls.ssl_ctx != NULL) {
        /* The connect timeout covers the handshake too. */
        u->tls = ing__tls_new(r->cluster->tls.ssl_ctx, false, r->cluster->tls.sni, u->w,
                              (uv_stream_t *)&u->tcp, &u->in, &up_tls_ops, u);
        if (u->tls == NULL) {
            up_tls_fail(u);
            return;
        }
        u->state = ING_U_HANDSHAKE;
        if (uv_read_start((uv_stream_t *)&u->tcp, on_up_alloc, on_up_read) == 0)
            u->reading = 1;
        ing__tls_connect(u->tls);
        return;
    }
    u->state = ING_U_ACTIVE;
    ing__tq_del(&u->tn);
    if (r != NULL) {
        r->up_used = 1;
        ing__req_upstream_ready(r);
    }
}

static void attach(struct ing_req *r, struct ing_up *u)
{
    r->up = u;
    u->req = r;
    if (u->st != NULL)
        xds_ctr_add(&u->st->w[u->w->idx].active, 1);
}

void ing__up_acquire(struct ing_req *r, const struct xds_endpoint *ep)
{
    struct ing_worker *w = r->sr_worker;
    struct xds_ep_state *st = ep->st;
    struct ing_up *u;

    /* Idle connections are at the head of the list; HTTP/2 sessions (of a cluster that was
     * "h2" before a reload) at its tail. */
    if (st != NULL && !wr_list_empty(&st->w[w->idx].idle) &&
        !WR_CONTAINER_OF(st->w[w->idx].idle.next, struct ing_up, idle_link)->is_h2) {
        struct xds_ep_wstate *ws = &st->w[w->idx];
        u = WR_CONTAINER_OF(ws->idle.next, struct ing_up, idle_link);
        wr_list_remove(&u->idle_link);
        ws->n_idle--;
        ing__tq_del(&u->tn);
        /* It keeps reading: stopping and restarting would cost two epoll_ctl calls. */
        u->state = ING_U_ACTIVE;
        attach(r, u);
        r->up_used = 1;
        ing__req_upstream_ready(r);
        return;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        ing__req_upstream_failed(r, 502, false);
        return;
    }
    u->w = w;
    u->st = st != NULL ? xds_ep_state_ref(st) : NULL;
    u->idle_ms = r->cluster->idle_timeout_ms;
    u->max_idle = r->cluster->max_idle;
    u->state = ING_U_CONNECTING;
    wr_list_init(&u->tn.link);
    wr_list_init(&u->idle_link);
    wr_list_insert_tail(&w->ups, &u->wlink);
    uv_tcp_init(&w->loop, &u->tcp);
    attach(r, u);
    int rc = uv_tcp_connect(&u->connect, &u->tcp, (const struct sockaddr *)&ep->ss, on_connect);
    if (rc < 0) {
        count_connect_failure(r, u);
        ing__req_upstream_failed(r, 502, true);
        return;
    }
    ing__tq_add(w, &u->tn, ING_TQ_UP_CONNECT, r->cluster->connect_timeout_ms);
}

/* Detaches <u> from its request; keeps it in the pool when <keep> allows, else closes it. */
void ing__up_release(struct ing_up *u, bool keep)
{
    struct ing_worker *w = u->w;
    struct ing_req *r = u->req;

    if (r != NULL) {
        if (u->st != NULL)
            xds_ctr_add(&u->st->w[w->idx].active, (uint64_t)-1);
        if (r->up_writing)
            keep = false;
        u->req = NULL;
    }
    ing__tq_del(&u->tn);
    if (keep && u->st != NULL && !w->draining && u->state == ING_U_ACTIVE && !u->eof &&
        u->in.off == u->in.len && u->st->w[w->idx].n_idle < u->max_idle &&
        !(atomic_load_explicit(&u->st->flags, memory_order_relaxed) & XDS_EPF_DRAINING)) {
        struct xds_ep_wstate *ws = &u->st->w[w->idx];
        ing__buf_release(w, &u->in);
        u->state = ING_U_IDLE;
        u->reused = 1;
        u->nreqs++;
        wr_list_insert_head(&ws->idle, &u->idle_link);
        ws->n_idle++;
        ing__tq_add(w, &u->tn, ING_TQ_UP_IDLE, u->idle_ms);
        ing__up_read_start(u);
        return;
    }
    up_close(u);
}

void ing__up_timeout(struct ing_up *u, uint8_t kind)
{
    struct ing_req *r = u->req;

    if (u->is_h2) {
        ing__h2up_timeout(u, kind);
        return;
    }
    if (r == NULL || kind == ING_TQ_UP_IDLE) {
        up_close(u);
        return;
    }
    if (kind == ING_TQ_UP_CONNECT) {
        wr_debug("upstream %s: connect timed out", r->ep_addr);
        count_connect_failure(r, u);
        ing__req_upstream_failed(r, 504, true);
        return;
    }
    wr_debug("upstream %s: response timed out", r->ep_addr);
    ing__req_upstream_failed(r, 504, false);
}

void ing__up_close_idle_all(struct ing_worker *w)
{
    for (struct wr_list *n = w->ups.next, *nx; n != &w->ups; n = nx) {
        nx = n->next;
        struct ing_up *u = WR_CONTAINER_OF(n, struct ing_up, wlink);
        if (u->is_h2)
            ing__h2up_close_idle(u); /* closes it unless it still carries streams */
        else if (u->req == NULL)
            up_close(u);
    }
}

/* Closes the idle pooled connections of endpoints that are draining (removed from the config,
 * or terminating): run when a worker adopts a snapshot. */
void ing__up_close_idle_draining(struct ing_worker *w)
{
    for (struct wr_list *n = w->ups.next, *nx; n != &w->ups; n = nx) {
        nx = n->next;
        struct ing_up *u = WR_CONTAINER_OF(n, struct ing_up, wlink);
        bool draining =
            u->st != NULL &&
            (atomic_load_explicit(&u->st->flags, memory_order_relaxed) & XDS_EPF_DRAINING);
        if (draining && u->is_h2)
            ing__h2up_close_idle(u); /* no new stream; closes once its last one ended */
        else if (draining && u->state == ING_U_IDLE)
            up_close(u);
    }
}
