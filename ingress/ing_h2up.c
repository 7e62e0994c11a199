/* ingress/ing_h2up.c -- HTTP/2 to upstreams: clusters with protocol "h2" (TLS, ALPN h2) or
 * "h2c" (cleartext, prior knowledge), for HTTP/1.1 and HTTP/2 clients alike.
 *
 * Sessions. Each worker keeps its own multiplexed sessions per endpoint, in the endpoint's
 * per-worker list (struct xds_ep_wstate.idle: HTTP/1.1 idle connections at its head, sessions
 * at its tail), so they survive reloads like the HTTP/1.1 pool. A request picks its endpoint
 * with the load balancer as always, then opens a stream on a session to that endpoint with a
 * free slot (the peer's SETTINGS_MAX_CONCURRENT_STREAMS, at most ING_H2UP_MAX_STREAMS), or
 * on a new session: connect (the cluster's connect_timeout_ms), TLS handshake for "h2" (ALPN
 * must select h2), then the preface. A session without streams closes after the cluster's
 * idle_timeout_ms; after the upstream's GOAWAY it takes no new stream and closes when its
 * last one ended; a session that dies fails its streams (a request that got no response is
 * retried like an HTTP/1.1 one: idempotent and bodiless, once).
 *
 * Streams. A request's stream (struct ing_h2s) belongs to the request and may outlive its
 * stream on the session: a response received whole is still taken by a slow client after the
 * upstream closed the stream, or the session.
 *
 * Flow control. Response DATA lands in the stream's ring of ING_H2UP_WINDOW bytes, which is
 * the stream's receive window: the window reopens (nghttp2_session_consume) only as the client
 * takes bytes out of the ring. A slow client so holds at most one window per stream, and never
 * stalls the other streams of the session (its connection window exceeds all stream windows
 * together). The request body goes through a data provider that takes bytes from the client's
 * buffers only when nghttp2 can send them (DEFERRED when there is none, resumed when more
 * comes); the client's reads or its stream window reopen only as they are taken.
 *
 * Re-entrancy. nghttp2's callbacks only record what happened (ring, headers, flags) and queue
 * the stream on the worker's notify list; requests hear about it once nghttp2 returned, at the
 * end of the libuv callback that fed the session (session_settle). Calls the other way, from
 * request code, never enter a session either: they queue a flush that runs at the end of the
 * current settle or from the worker's idle callback. No nghttp2 session is thus ever entered
 * from inside another one, or from inside itself.
 *
 * Timeouts. The session's timer node (in its struct ing_up) is in turn its connect timeout,
 * its idle timeout and, while streams are open, the inactivity sweep of its streams: a
 * stream's deadline moves with every byte either way (the route's timeout_ms is an inactivity
 * timeout, so a long gRPC stream making progress lives on) and the node fires at the earliest.
 */
#include <arpa/inet.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "ing_priv.h"

#define ING_H2UP_MAX_STREAMS 128        /* per session, whatever the peer allows */
#define ING_H2UP_CONN_WINDOW (16 << 20) /* above ING_H2UP_MAX_STREAMS * ING_H2UP_WINDOW */
#define ING_H2UP_OUT_BATCH   16384
#define ING_H2UP_MAX_ACKS    1000

/* One HTTP/2 connection to an upstream endpoint. */
struct ing_h2up {
    struct ing_up up; /* the connection: socket, TLS, input buffer, timer node, endpoint */
    nghttp2_session *ses;
    struct ing_buf out; /* frames waiting for the socket */
    uv_write_t wreq;
    struct wr_list streams; /* struct ing_h2s.link */
    struct wr_list flink;   /* w->h2_flushq */
    SSL_CTX *ssl_ctx;       /* "h2": held until the handshake starts */
    char *sni;
    char addr[64]; /* for the log */
    uint32_t n_streams;
    uint8_t proto; /* enum xds_protocol */
    uint8_t tkind; /* what the timer node counts: enum ing_tq_kind */
    bool writing;
    bool busy;     /* inside nghttp2_session_mem_recv/mem_send */
    bool settling; /* inside session_settle() */
    bool want_flush;
    bool goaway;   /* takes no new stream: GOAWAY, stream ids spent, draining */
    bool settings; /* the peer's SETTINGS arrived */
    bool dead;     /* failed: its streams were failed */
};

static void session_settle(struct ing_h2up *s);
static void session_close(struct ing_h2up *s, bool graceful);
static void session_fail(struct ing_h2up *s, uint16_t status, const char *why);
static void session_maybe_idle(struct ing_h2up *s);
static void stream_closed(struct ing_h2up *s, struct ing_h2s *hs, bool failed, uint16_t status,
                          bool retryable);

/* ---- deferred work of the worker ---- */

static void on_idle(uv_idle_t *h);

static void worker_init(struct ing_worker *w)
{
    if (w->h2_idle_ready)
        return;
    uv_idle_init(&w->loop, &w->h2_idle);
    wr_list_init(&w->h2_flushq);
    wr_list_init(&w->h2_dflushq);
    wr_list_init(&w->h2_notifyq);
    w->h2_idle_ready = true;
}

/* Runs the queued flushes from the worker's idle callback (next loop turn). */
void ing__h2_defer_schedule(struct ing_worker *w)
{
    worker_init(w);
    uv_idle_start(&w->h2_idle, on_idle);
}

static void run_notify(struct ing_worker *w);

static void on_idle(uv_idle_t *h)
{
    struct ing_worker *w = WR_CONTAINER_OF(h, struct ing_worker, h2_idle);

    uv_idle_stop(h);
    ing__h2_run_deferred(w);
    while (!wr_list_empty(&w->h2_flushq)) {
        struct ing_h2up *s = WR_CONTAINER_OF(w->h2_flushq.next, struct ing_h2up, flink);
        wr_list_remove(&s->flink);
        session_settle(s);
    }
    run_notify(w);
}

/* Asks for a flush of <s>: at the end of the settle under way, else from the idle callback. */
static void kick(struct ing_h2up *s)
{
    struct ing_worker *w = s->up.w;

    if (s->up.closing)
        return;
    if (s->settling) {
        s->want_flush = true;
        return;
    }
    if (wr_list_empty(&s->flink)) {
        ing__h2_defer_schedule(w);
        wr_list_insert_tail(&w->h2_flushq, &s->flink);
    }
}

/* ---- small buffers: header blocks and trailer records ---- */

/* Appends <n> bytes to <b> (a pool block first, then malloc'd twice as large); returns their
 * offset, or -1 past <limit> or on OOM. */
static long blk_add(struct ing_worker *w, struct ing_buf *b, const void *p, size_t n,
                    uint32_t limit)
{
    if (b->len + n > limit)
        return -1;
    if (b->base == NULL) {
        b->base = ing__block_get(w);
        if (b->base == NULL)
            return -1;
        b->cap = ING_BLOCK_SIZE;
        b->off = b->len = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = (size_t)b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        char *nb = malloc(cap);
        if (nb == NULL)
            return -1;
        memcpy(nb, b->base, b->len);
        uint32_t len = b->len;
        ing__buf_release(w, b);
        b->base = nb;
        b->cap = (uint32_t)cap;
        b->len = len;
    }
    memcpy(b->base + b->len, p, n);
    long off = b->len;
    b->len += (uint32_t)n;
    return off;
}

/* Fields a trailer section must not carry, whichever way it goes (RFC 9110 §6.5.1): hop-by-hop
 * and framing fields, routing, authentication, request modifiers, response control data and
 * content metadata. Matched case-insensitively; pseudo-headers are refused too. */
bool ing__trl_forbidden(const char *name, size_t len)
{
    static const char *const names[] = {
        "age",
        "authorization",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-range",
        "content-type",
        "cookie",
        "date",
        "expect",
        "expires",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "keep-alive",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "retry-after",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "vary",
        "warning",
        "www-authenticate",
    };

    if (len == 0 || name[0] == ':')
        return true;
    for (size_t i = 0; i < WR_ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return true;
    return false;
}

/* Trailer fields are kept as records: u16 name length, u32 value length, name, value. Forbidden
 * fields (ing__trl_forbidden) are dropped here. */
bool ing__trl_add(struct ing_worker *w, struct ing_buf *b, const void *name, size_t nl,
                  const void *value, size_t vl, uint32_t limit)
{
    uint16_t n16 = (uint16_t)nl;
    uint32_t v32 = (uint32_t)vl;

    if (ing__trl_forbidden(name, nl))
        return true;
    if (nl > UINT16_MAX || b->len + 6 + nl + vl > limit)
        return false;
    return blk_add(w, b, &n16, 2, limit) >= 0 && blk_add(w, b, &v32, 4, limit) >= 0 &&
           blk_add(w, b, name, nl, limit) >= 0 && blk_add(w, b, value, vl, limit) >= 0;
}

unsigned ing__trl_list(const struct ing_buf *b, struct wr_str *names, struct wr_str *values,
                       unsigned max)
{
    unsigned n = 0;
    uint32_t off = 0;

    while (b->base != NULL && off + 6 <= b->len && n < max) {
        uint16_t nl;
        uint32_t vl;
        memcpy(&nl, b->base + off, 2);
        memcpy(&vl, b->base + off + 2, 4);
        names[n] = (struct wr_str){b->base + off + 6, nl};
        values[n] = (struct wr_str){b->base + off + 6 + nl, vl};
        off += 6 + nl + vl;
        n++;
    }
    return n;
}

/* ---- output ---- */

static void on_written(uv_write_t *wr, int status);

/* Serializes what nghttp2 has to send and writes it; one write at a time, so the data
 * providers are asked for request body only as fast as the upstream takes it. */
static void flush(struct ing_h2up *s)
{
    struct ing_up *u = &s->up;
    struct ing_worker *w = u->w;

    while (!s->writing && !u->closing && !s->dead && u->state == ING_U_ACTIVE) {
        for (;;) {
            const uint8_t *data;
            s->busy = true;
            ssize_t n = nghttp2_session_mem_send(s->ses, &data);
            s->busy = false;
            if (n < 0) {
                session_fail(s, 502, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (blk_add(w, &s->out, data, (size_t)n, UINT32_MAX / 2) < 0) {
                session_fail(s, 502, "out of memory");
                return;
            }
            if (s->out.len >= ING_H2UP_OUT_BATCH)
                break;
        }
        if (s->out.base == NULL || s->out.len == 0)
            break;
        uv_buf_t b = uv_buf_init(s->out.base, s->out.len);
        int rc = u->tls != NULL ? ing__tls_write(u->tls, &s->wreq, &b, 1, on_written)
                                : ing__send((uv_stream_t *)&u->tcp, &s->wreq, &b, 1, on_written);
        if (rc < 0) {
            session_fail(s, 502, uv_strerror(rc));
            return;
        }
        if (rc == 0) {
            s->writing = true;
            return;
        }
        ing__buf_release(w, &s->out);
    }
    if (!u->closing && !s->dead && !s->writing && u->state == ING_U_ACTIVE &&
        !nghttp2_session_want_read(s->ses) && !nghttp2_session_want_write(s->ses))
        session_fail(s, 502, "session ended"); /* GOAWAY both ways and nothing left */
}

static void on_written(uv_write_t *wr, int status)
{
    struct ing_h2up *s = WR_CONTAINER_OF(wr, struct ing_h2up, wreq);

    s->writing = false;
    ing__buf_release(s->up.w, &s->out);
    if (s->up.closing)
        return;
    if (status < 0)
        session_fail(s, 502, uv_strerror(status));
    session_settle(s);
}

/* ---- telling the requests ---- */

static void notify(struct ing_h2s *hs)
{
    struct ing_worker *w = hs->r->sr_worker;

    if (wr_list_empty(&hs->nlink))
        wr_list_insert_tail(&w->h2_notifyq, &hs->nlink);
}

/* Tells the request of <hs> what its stream has for it (outside nghttp2's callbacks). The
 * request may release <hs> meanwhile: it is not touched after the call. */
static void deliver(struct ing_h2s *hs)
{
    struct ing_req *r = hs->r;

    if (!r->resp_started && hs->failed) {
        /* Nothing went to the client yet: it gets an error of ours (or a retry). */
        ing__req_upstream_failed(r, hs->fail_status ? hs->fail_status : 502,
                                 hs->retryable && !hs->head_ready);
        return;
    }
    ing__req_response_data(r);
}

static void run_notify(struct ing_worker *w)
{
    while (w->h2_idle_ready && !wr_list_empty(&w->h2_notifyq)) {
        struct ing_h2s *hs = WR_CONTAINER_OF(w->h2_notifyq.next, struct ing_h2s, nlink);
        wr_list_remove(&hs->nlink);
        deliver(hs);
    }
}

/* The end of every libuv callback of a session: tell the requests, then send what they and
 * nghttp2 produced, until neither has more. */
static void session_settle(struct ing_h2up *s)
{
    struct ing_worker *w = s->up.w;

    if (s->settling) {
        s->want_flush = true;
        return;
    }
    s->settling = true;
    for (int i = 0; i < 64; i++) {
        run_notify(w);
        s->want_flush = false;
        flush(s);
        if (!s->want_flush && wr_list_empty(&w->h2_notifyq))
            break;
    }
    s->settling = false;
    if (s->want_flush)
        kick(s);
    session_maybe_idle(s);
}

/* ---- timers ---- */

static void timer_set(struct ing_h2up *s, uint8_t kind, uint32_t ms)
{
    s->tkind = kind;
    ing__tq_add(s->up.w, &s->up.tn, kind, ms);
}

/* A duration of the sweep queue: the largest of 16 ms * 4^k not above <left>, so the node
 * never fires late by more than 16 ms, using only seven timeout queues. */
static uint32_t sweep_ms(uint64_t left)
{
    uint32_t ms = 16;

    while ((uint64_t)ms * 4 <= left && ms < 65536)
        ms *= 4;
    return ms;
}

static void stream_activity(struct ing_h2s *hs)
{
    struct ing_req *r = hs->r;

    hs->deadline = uv_now(&r->sr_worker->loop) + r->route->timeout_ms;
}

/* The stream of <hs> runs on a connected session: count it, start its inactivity clock. */
static void stream_live(struct ing_h2up *s, struct ing_h2s *hs)
{
    struct ing_req *r = hs->r;
    struct ing_up *u = &s->up;

    if (!hs->counted && u->st != NULL)
        xds_ctr_add(&u->st->w[u->w->idx].requests, 1);
    hs->counted = 1;
    stream_activity(hs);
    if (s->tkind != ING_TQ_UP_RESPONSE || wr_list_empty(&u->tn.link) ||
        u->tn.deadline > hs->deadline)
        timer_set(s, ING_TQ_UP_RESPONSE, r->route->timeout_ms);
}

/* No stream left: close the session when it will take no more, else start its idle clock. */
static void session_maybe_idle(struct ing_h2up *s)
{
    struct ing_up *u = &s->up;

    if (s->n_streams > 0 || u->closing || s->busy)
        return; /* busy: session_settle() comes back here once nghttp2 returned */
    if (s->goaway || s->dead || u->w->draining) {
        session_close(s, !s->dead);
        return;
    }
    if (u->state == ING_U_ACTIVE)
        timer_set(s, ING_TQ_UP_IDLE, u->idle_ms);
}

/* Times out the streams whose upstream made no progress within their route's timeout; a
 * stream whose bytes wait for its client is not the upstream's fault and lives on. */
static void sweep(struct ing_h2up *s)
{
    uint64_t now = uv_now(&s->up.w->loop), next = 0;

    for (struct wr_list *n = s->streams.next, *nx; n != &s->streams; n = nx) {
        nx = n->next;
        struct ing_h2s *hs = WR_CONTAINER_OF(n, struct ing_h2s, link);
        if (hs->deadline <= now) {
            if (hs->rlen > 0 || hs->r->cl_writing) {
                stream_activity(hs);
            } else {
                wr_debug("upstream %s: stream %d timed out", s->addr, hs->id);
                if (hs->id > 0)
                    nghttp2_submit_rst_stream(s->ses, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_CANCEL);
                stream_closed(s, hs, true, 504, false);
                continue;
            }
        }
        if (next == 0 || hs->deadline < next)
            next = hs->deadline;
    }
    if (next != 0)
        timer_set(s, ING_TQ_UP_RESPONSE, sweep_ms(next - now));
    else
        session_maybe_idle(s);
}

void ing__h2up_timeout(struct ing_up *u, uint8_t kind)
{
    struct ing_h2up *s = WR_CONTAINER_OF(u, struct ing_h2up, up);

    if (u->closing)
        return;
    switch (kind) {
    case ING_TQ_UP_CONNECT:
        session_fail(s, 504, "connect timed out");
        break;
    case ING_TQ_UP_IDLE:
        if (s->n_streams == 0)
            session_close(s, true);
        break;
    default:
        sweep(s);
        break;
    }
    session_settle(s);
}

/* ---- streams ---- */

/* Takes <hs> off its session: the stream ended there (or the session died). The bytes still
 * in its ring give their connection window back now; the client takes them later. */
static void stream_detach(struct ing_h2up *s, struct ing_h2s *hs)
{
    struct ing_up *u = &s->up;

    if (hs->id > 0 && !s->dead) {
        nghttp2_session_set_stream_user_data(s->ses, hs->id, NULL);
        if (hs->rlen > 0)
            nghttp2_session_consume_connection(s->ses, hs->rlen);
    }
    wr_list_remove(&hs->link);
    hs->s = NULL;
    s->n_streams--;
    if (u->st != NULL)
        xds_ctr_add(&u->st->w[u->w->idx].active, (uint64_t)-1);
}

static void stream_closed(struct ing_h2up *s, struct ing_h2s *hs, bool failed, uint16_t status,
                          bool retryable)
{
    struct ing_up *u = &s->up;

    stream_detach(s, hs);
    if (failed) {
        hs->failed = 1;
        hs->fail_status = hs->fail_status ? hs->fail_status : status;
        hs->retryable = retryable;
        if (hs->r->resp_started && u->st != NULL)
            xds_ctr_add(&u->st->w[u->w->idx].failures, 1); /* a truncated response */
    }
    notify(hs);
    session_maybe_idle(s);
}

/* The request header list for the upstream: pseudo-headers, the forwarding headers the proxy
 * adds (as for HTTP/1.1), then the client's headers less the hop-by-hop ones (nghttp2
 * lower-cases the names as it copies them). Composite values go to r->head_out. */
static size_t request_nv(struct ing_h2up *s, struct ing_req *r, nghttp2_nv *nv, size_t max)
{
    struct ing_h1_msg *m = &r->msg;
    struct wr_str host = ing__req_host(r), rid = ing__req_id(r), path = m->target;
    char ip[INET6_ADDRSTRLEN];
    size_t xff_len = 0, n = 0;

    ing__client_ip(r->c, ip, sizeof(ip));
    for (unsigned i = 0; i < m->n_hdrs; i++)
        if (m->hdrs[i].id == ING_H1_H_X_FORWARDED_FOR)
            xff_len += m->hdrs[i].value_len + 2;
    size_t need = xff_len + strlen(ip) + m->path.len + m->query.len + 32;
    struct ing_buf *b = &r->head_out;
    ing__buf_release(r->sr_worker, b);
    b->base = need <= ING_BLOCK_SIZE ? ing__block_get(r->sr_worker) : malloc(need);
    if (b->base == NULL)
        return 0;
    b->cap = need <= ING_BLOCK_SIZE ? ING_BLOCK_SIZE : (uint32_t)need;
    char *p = b->base, *xff = p;
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        if (m->hdrs[i].id == ING_H1_H_X_FORWARDED_FOR) {
            memcpy(p, m->hdrs[i].value, m->hdrs[i].value_len);
            p += m->hdrs[i].value_len;
            *p++ = ',';
            *p++ = ' ';
        }
    }
    p += sprintf(p, "%s", ip);
    size_t xff_n = (size_t)(p - xff);
    if (m->flags & ING_H1_F_ABSOLUTE_FORM) {
        path.p = p;
        memcpy(p, m->path.p, m->path.len);
        p += m->path.len;
        if (m->query.p != NULL) {
            *p++ = '?';
            memcpy(p, m->query.p, m->query.len);
            p += m->query.len;
        }
        path.len = (size_t)(p - path.p);
    }
    char *cl = p;
    if (m->body == ING_H1_BODY_LENGTH)
        p += sprintf(p, "%llu", (unsigned long long)m->content_length);

#define NV(name, v, vl)                                                                            \
    (nv[n++] = (nghttp2_nv){(uint8_t *)(name), (uint8_t *)(v), sizeof(name) - 1, (vl),             \
                            NGHTTP2_NV_FLAG_NONE})
    NV(":method", m->method.p, m->method.len);
    NV(":scheme", s->proto == XDS_PROTO_H2 ? "https" : "http", s->proto == XDS_PROTO_H2 ? 5 : 4);
    if (host.len > 0)
        NV(":authority", host.p, host.len);
    NV(":path", path.p, path.len);
    NV("x-forwarded-for", xff, xff_n);
    if (r->c->lst->is_tls)
        NV("x-forwarded-proto", "https", 5);
    else
        NV("x-forwarded-proto", "http", 4);
    NV("x-forwarded-host", host.p, host.len);
    NV("x-request-id", rid.p, rid.len);
    if (m->flags & ING_H1_F_TE_TRAILERS)
        NV("te", "trailers", 8); /* gRPC needs it; the only TE HTTP/2 allows (§8.2.2) */
    if (m->body == ING_H1_BODY_LENGTH)
        NV("content-length", cl, (size_t)(p - cl));
#undef NV
    for (unsigned i = 0; i < m->n_hdrs && n < max; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];
        if (!ing__hdr_forwarded(h))
            continue;
        nv[n++] = (nghttp2_nv){(uint8_t *)h->name, (uint8_t *)h->value, h->name_len, h->value_len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    return n;
}

/* The request body's data provider: bytes from the client's buffers (ing__req_body_take), the
 * client's trailers after the last of them. */
static ssize_t body_read(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct ing_h2s *hs = nghttp2_session_get_stream_user_data(ses, id);
    bool eof = false;

    if (hs == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the request is gone: reset */
    struct ing_req *r = hs->r;
    long n = ing__req_body_take(r, (char *)buf, len, &eof);
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (n > 0)
        stream_activity(hs);
    if (eof) {
        struct wr_str names[ING_MAX_HDRS], values[ING_MAX_HDRS];
        nghttp2_nv nv[ING_MAX_HDRS];
        unsigned k = ing__trl_list(&r->h2trl, names, values, ING_MAX_HDRS);
        for (unsigned i = 0; i < k; i++)
            nv[i] = (nghttp2_nv){(uint8_t *)names[i].p, (uint8_t *)values[i].p, names[i].len,
                                 values[i].len, NGHTTP2_NV_FLAG_NONE};
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (k > 0 && nghttp2_submit_trailer(ses, id, nv, k) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return n;
    }
    if (n == 0) {
        hs->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

/* Opens the stream of <r> on <s> (queued by nghttp2 until the session is connected).
 * Returns 0, or a negative nghttp2 error with <r> untouched. */
static int stream_start(struct ing_h2up *s, struct ing_req *r)
{
    struct ing_up *u = &s->up;
    nghttp2_nv nv[ING_MAX_HDRS + 16];
    size_t n = request_nv(s, r, nv, WR_ARRAY_LEN(nv));
    struct ing_h2s *hs = n > 0 ? calloc(1, sizeof(*hs)) : NULL;

    if (hs == NULL)
        return NGHTTP2_ERR_NOMEM;
    hs->r = r;
    wr_list_init(&hs->nlink);
    nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(s->ses, NULL, nv, n, r->req_done ? NULL : &prd, hs);
    if (id < 0) {
        free(hs);
        return id;
    }
    hs->id = id;
    hs->s = s;
    r->h2s = hs;
    u->idle_ms = r->cluster->idle_timeout_ms; /* the latest configuration's */
    r->up_used = 1;
    wr_list_insert_tail(&s->streams, &hs->link);
    s->n_streams++;
    if (u->st != NULL)
        xds_ctr_add(&u->st->w[u->w->idx].active, 1);
    if (u->state == ING_U_ACTIVE)
        stream_live(s, hs);
    kick(s);
    return 0;
}

/* ---- nghttp2 callbacks: record, queue, never call out ---- */

static struct ing_h2s *stream_of(nghttp2_session *ses, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ses, id);
}

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct ing_h2s *hs = stream_of(ses, f->hd.stream_id);

    if (hs == NULL)
        return 0;
    hs->hbytes = 0;
    if (!hs->head_ready) {
        /* A new response head (after a 1xx, the previous one is dropped). */
        struct ing_h1_msg *m = &hs->r->rmsg;
        hs->hdr.len = 0;
        m->n_hdrs = 0;
        m->status = 0;
        m->flags = 0;
        m->content_length = 0;
    }
    return 0;
}

static const char *reason_phrase(unsigned status)
{
    static const struct {
        uint16_t status;
        const char *reason;
    } t[] = {{200, "OK"},
             {201, "Created"},
             {202, "Accepted"},
             {204, "No Content"},
             {206, "Partial Content"},
             {301, "Moved Permanently"},
             {302, "Found"},
             {303, "See Other"},
             {304, "Not Modified"},
             {307, "Temporary Redirect"},
             {308, "Permanent Redirect"},
             {400, "Bad Request"},
             {401, "Unauthorized"},
             {403, "Forbidden"},
             {404, "Not Found"},
             {405, "Method Not Allowed"},
             {409, "Conflict"},
             {410, "Gone"},
             {412, "Precondition Failed"},
             {413, "Content Too Large"},
             {415, "Unsupported Media Type"},
             {429, "Too Many Requests"},
             {500, "Internal Server Error"},
             {501, "Not Implemented"},
             {502, "Bad Gateway"},
             {503, "Service Unavailable"},
             {504, "Gateway Timeout"}};

    for (size_t i = 0; i < WR_ARRAY_LEN(t); i++)
        if (t[i].status == status)
            return t[i].reason;
    return ""; /* RFC 9112 §4: the reason phrase may be empty */
}

/* Refuses the header block of <hs>: the stream is reset and its request gets 502. */
static int bad_head(struct ing_h2s *hs, const char *why)
{
    wr_warn("upstream %s: %s", hs->r->ep_addr, why);
    hs->fail_status = 502;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* Response headers are copied into hs->hdr; r->rmsg.hdrs hold offsets into it until the
 * block is complete (the buffer may move as it grows). Trailers become records in hs->trl. */
static int on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    struct ing_h2s *hs = stream_of(ses, f->hd.stream_id);

    if (hs == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct ing_req *r = hs->r;
    struct ing_worker *w = r->sr_worker;
    uint32_t limit = r->sr->snap->max_header_bytes;
    struct ing_h1_msg *m = &r->rmsg;
    hs->hbytes += (uint32_t)(nl + vl + 32); /* RFC 9113 §6.5.2's size of a field */
    if (hs->hbytes > limit)
        return bad_head(hs, "response header list over max_header_bytes");
    if (hs->head_ready) {
        if (!ing__trl_add(w, &hs->trl, name, nl, value, vl, limit))
            return bad_head(hs, "response trailers over max_header_bytes");
        return 0;
    }
    if (nl > 0 && name[0] == ':') {
        if (nl == 7 && memcmp(name, ":status", 7) == 0 && vl == 3)
            m->status = (uint16_t)((value[0] - '0') * 100 + (value[1] - '0') * 10 +
                                   (value[2] - '0')); /* nghttp2 checked the digits */
        return 0;
    }
    if (m->n_hdrs >= ING_MAX_HDRS)
        return bad_head(hs, "more than 128 response header fields");
    long noff = blk_add(w, &hs->hdr, name, nl, UINT32_MAX / 2);
    long voff = noff >= 0 ? blk_add(w, &hs->hdr, value, vl, UINT32_MAX / 2) : -1;
    if (voff < 0)
        return bad_head(hs, "out of memory for a response head");
    struct ing_h1_hdr *h = &m->hdrs[m->n_hdrs++];
    h->name = (const char *)(uintptr_t)noff;
    h->value = (const char *)(uintptr_t)voff;
    h->name_len = (uint16_t)nl;
    h->value_len = (uint32_t)vl;
    h->flags = 0;
    h->id = ING_H1_H_OTHER;
    if (nl == 14 && memcmp(name, "content-length", 14) == 0) {
        h->id = ING_H1_H_CONTENT_LENGTH;
        uint64_t v = 0;
        for (size_t i = 0; i < vl; i++)
            v = v * 10 + (uint64_t)(value[i] - '0'); /* nghttp2 checked it */
        m->content_length = v;
        m->flags |= ING_H1_F_CONTENT_LENGTH;
    }
    return 0;
}

/* A final response head is complete: r->rmsg becomes a message the client side can send. */
static void head_complete(struct ing_h2s *hs)
{
    struct ing_h1_msg *m = &hs->r->rmsg;
    size_t bytes = 0;

    for (unsigned i = 0; i < m->n_hdrs; i++) {
        m->hdrs[i].name = hs->hdr.base + (uintptr_t)m->hdrs[i].name;
        m->hdrs[i].value = hs->hdr.base + (uintptr_t)m->hdrs[i].value;
        bytes += m->hdrs[i].name_len + m->hdrs[i].value_len + 4;
    }
    const char *reason = reason_phrase(m->status);
    m->reason = (struct wr_str){reason, strlen(reason)};
    m->minor = 1;
    m->head_len = (uint32_t)(bytes + 64);
    hs->head_ready = 1;
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct ing_h2up *s = ud;
    struct ing_h2s *hs;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        hs = stream_of(ses, f->hd.stream_id);
        if (hs == NULL)
            return 0;
        if (!hs->head_ready && hs->r->rmsg.status >= 200) {
            head_complete(hs);
            notify(hs);
        }
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            hs->remote_end = 1;
            notify(hs);
        }
        return 0;
    case NGHTTP2_DATA:
        hs = stream_of(ses, f->hd.stream_id);
        if (hs != NULL && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            hs->remote_end = 1;
            notify(hs);
        }
        return 0;
    case NGHTTP2_SETTINGS:
        s->settings = true;
        return 0;
    case NGHTTP2_GOAWAY:
        /* Streams above last_stream_id are closed by nghttp2 (REFUSED_STREAM: retryable);
         * the others finish. No new stream goes to this session. */
        wr_debug("upstream %s: GOAWAY (last stream %d, error %u)", s->addr,
                 f->goaway.last_stream_id, f->goaway.error_code);
        s->goaway = true;
        wr_list_remove(&s->up.idle_link);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct ing_h2s *hs = stream_of(ses, id);

    if (hs == NULL) {
        nghttp2_session_consume(ses, id, len); /* nobody wants it: reopen the window */
        return 0;
    }
    if (hs->ring == NULL)
        hs->ring = malloc(ING_H2UP_WINDOW);
    if (hs->ring == NULL || hs->rlen + len > ING_H2UP_WINDOW) {
        /* Out of memory, or more than the window we gave (nghttp2 enforces it: unreachable). */
        hs->fail_status = 502;
        nghttp2_session_consume(ses, id, len);
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    uint32_t at = (hs->rhead + hs->rlen) % ING_H2UP_WINDOW;
    size_t first = WR_MIN(len, (size_t)(ING_H2UP_WINDOW - at));
    memcpy(hs->ring + at, data, first);
    memcpy(hs->ring, data + first, len - first);
    hs->rlen += (uint32_t)len;
    stream_activity(hs);
    notify(hs);
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t err, void *ud)
{
    struct ing_h2up *s = ud;
    struct ing_h2s *hs = stream_of(ses, id);

    if (hs == NULL)
        return 0;
    if (!hs->remote_end)
        wr_debug("upstream %s: stream %d closed (%s)", s->addr, id, nghttp2_http2_strerror(err));
    /* REFUSED_STREAM (also for the streams a GOAWAY left out) means not processed at all. */
    stream_closed(s, hs, !hs->remote_end, 502, err == NGHTTP2_REFUSED_STREAM);
    return 0;
}

/* ---- the request side's calls ---- */

/* The request let go of its stream (done, failed or aborted): an open stream is reset (the
 * response was complete: NO_ERROR, else CANCEL), and the stream is freed. */
void ing__h2up_release(struct ing_req *r)
{
    struct ing_h2s *hs = r->h2s;

    if (hs == NULL)
        return;
    r->h2s = NULL;
    wr_list_remove(&hs->nlink);
    struct ing_h2up *s = hs->s;
    if (s != NULL) {
        if (hs->id > 0 && !s->dead)
            nghttp2_submit_rst_stream(s->ses, NGHTTP2_FLAG_NONE, hs->id,
                                      hs->remote_end ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
        stream_detach(s, hs);
        kick(s);
        session_maybe_idle(s);
    }
    free(hs->ring);
    ing__buf_release(r->sr_worker, &hs->hdr);
    ing__buf_release(r->sr_worker, &hs->trl);
    ing__buf_release(r->sr_worker, &hs->tail);
    free(hs);
}

/* More request body is ready (or its end): wake the data provider up. */
void ing__h2up_body_more(struct ing_req *r)
{
    struct ing_h2s *hs = r->h2s;

    if (hs == NULL || hs->s == NULL)
        return;
    if (hs->deferred) {
        hs->deferred = 0;
        nghttp2_session_resume_data(hs->s->ses, hs->id);
    }
    kick(hs->s);
}

/* The response body bytes the ring holds, as up to two pieces. */
unsigned ing__h2up_peek(struct ing_req *r, uv_buf_t *pieces)
{
    struct ing_h2s *hs = r->h2s;
    uint32_t first = WR_MIN(hs->rlen, ING_H2UP_WINDOW - hs->rhead);
    unsigned n = 0;

    if (first > 0)
        pieces[n++] = uv_buf_init(hs->ring + hs->rhead, first);
    if (hs->rlen > first)
        pieces[n++] = uv_buf_init(hs->ring, hs->rlen - first);
    return n;
}

/* The client took <n> bytes from the ring: give the upstream as much window back. */
void ing__h2up_taken(struct ing_req *r, uint32_t n)
{
    struct ing_h2s *hs = r->h2s;

    hs->rhead = (hs->rhead + n) % ING_H2UP_WINDOW;
    hs->rlen -= n;
    if (hs->rlen == 0)
        hs->rhead = 0;
    if (hs->s != NULL) {
        nghttp2_session_consume(hs->s->ses, hs->id, n);
        stream_activity(hs);
        kick(hs->s);
    }
}

/* For an HTTP/2 client's data provider: copies up to <max> body bytes; *eof once the response
 * is complete; -1 once the stream ended without a complete response (and nothing is left). */
long ing__h2up_take(struct ing_req *r, char *dst, size_t max, bool *eof)
{
    struct ing_h2s *hs = r->h2s;
    uv_buf_t pieces[2];
    unsigned np = ing__h2up_peek(r, pieces);
    size_t n = 0;

    for (unsigned i = 0; i < np && n < max; i++) {
        size_t k = WR_MIN(pieces[i].len, max - n);
        memcpy(dst + n, pieces[i].base, k);
        n += k;
    }
    if (n > 0)
        ing__h2up_taken(r, (uint32_t)n);
    *eof = hs->remote_end && hs->rlen == 0;
    if (n == 0 && hs->failed && !*eof)
        return -1;
    return (long)n;
}

unsigned ing__h2up_trailers(struct ing_req *r, struct wr_str *names, struct wr_str *values,
                            unsigned max)
{
    return r->h2s != NULL ? ing__trl_list(&r->h2s->trl, names, values, max) : 0;
}

/* The end of a chunked body for an HTTP/1.1 client: the last chunk, the trailers, CRLF. */
const char *ing__h2up_tail(struct ing_req *r, uint32_t *len)
{
    struct ing_h2s *hs = r->h2s;
    struct wr_str names[ING_MAX_HDRS], values[ING_MAX_HDRS];
    unsigned n = ing__trl_list(&hs->trl, names, values, ING_MAX_HDRS);
    struct ing_buf *b = &hs->tail;
    uint32_t lim = UINT32_MAX / 2;
    bool ok = blk_add(r->sr_worker, b, "0\r\n", 3, lim) >= 0;

    for (unsigned i = 0; i < n && ok; i++)
        ok = blk_add(r->sr_worker, b, names[i].p, names[i].len, lim) >= 0 &&
             blk_add(r->sr_worker, b, ": ", 2, lim) >= 0 &&
             blk_add(r->sr_worker, b, values[i].p, values[i].len, lim) >= 0 &&
             blk_add(r->sr_worker, b, "\r\n", 2, lim) >= 0;
    if (!ok || blk_add(r->sr_worker, b, "\r\n", 2, lim) < 0)
        return NULL;
    *len = b->len;
    return b->base;
}

/* ---- the connection ---- */

static void on_session_closed(uv_handle_t *h)
{
    struct ing_up *u = WR_CONTAINER_OF(h, struct ing_up, tcp);
    struct ing_h2up *s = WR_CONTAINER_OF(u, struct ing_h2up, up);

    nghttp2_session_del(s->ses);
    ing__buf_release(u->w, &s->out);
    ing__buf_release(u->w, &u->in);
    ing__tls_free(u->tls);
    SSL_CTX_free(s->ssl_ctx);
    free(s->sni);
    xds_ep_state_unref(u->st);
    free(s);
}

/* Closes <s>, which has no stream left; <graceful> sends GOAWAY first when it can. */
static void session_close(struct ing_h2up *s, bool graceful)
{
    struct ing_up *u = &s->up;

    if (u->closing)
        return;
    if (graceful && !s->dead && u->state == ING_U_ACTIVE && !s->writing && !s->busy) {
        s->goaway = true;
        nghttp2_session_terminate_session(s->ses, NGHTTP2_NO_ERROR);
        flush(s); /* best effort; it closes the session itself once GOAWAY is out */
        if (u->closing)
            return;
    }
    u->closing = 1;
    u->state = ING_U_CLOSING;
    ing__tq_del(&u->tn);
    wr_list_remove(&u->idle_link);
    wr_list_remove(&u->wlink);
    wr_list_remove(&s->flink);
    if (u->tls != NULL)
        ing__tls_shutdown(u->tls);
    uv_close((uv_handle_t *)&u->tcp, on_session_closed);
}

/* The session is unusable (connect failure or timeout, reset, protocol error): its streams
 * fail (<status> for those without a response yet), and it closes. */
static void session_fail(struct ing_h2up *s, uint16_t status, const char *why)
{
    struct ing_up *u = &s->up;
    bool connecting = u->state == ING_U_CONNECTING || u->state == ING_U_HANDSHAKE;

    if (s->dead || u->closing)
        return;
    if (connecting) {
        wr_debug("upstream %s: %s", s->addr, why);
        if (u->st != NULL)
            xds_ctr_add(&u->st->w[u->w->idx].connect_failures, 1);
        if (!wr_list_empty(&s->streams)) {
            struct ing_h2s *hs = WR_CONTAINER_OF(s->streams.next, struct ing_h2s, link);
            const struct xds_cluster *cl = hs->r->cluster;
            if (cl != NULL && cl->stats != NULL)
                xds_ctr_add(&xds_counters_w(cl->stats, u->w->idx)[XDS_CS_CONNECT_FAILURES], 1);
        }
    } else if (s->n_streams > 0) {
        wr_warn("upstream %s: HTTP/2 session failed: %s", s->addr, why);
    }
    s->goaway = true;
    s->dead = true; /* nghttp2 is not called any more: the session is deleted as it closes */
    while (!wr_list_empty(&s->streams)) {
        struct ing_h2s *hs = WR_CONTAINER_OF(s->streams.next, struct ing_h2s, link);
        stream_closed(s, hs, !hs->remote_end, status, true);
    }
    session_close(s, false);
}

/* Connected (and TLS done): the queued streams go out with the preface. */
static void session_ready(struct ing_h2up *s)
{
    struct ing_up *u = &s->up;

    u->state = ING_U_ACTIVE;
    ing__tq_del(&u->tn);
    s->tkind = 0;
    for (struct wr_list *n = s->streams.next; n != &s->streams; n = n->next)
        stream_live(s, WR_CONTAINER_OF(n, struct ing_h2s, link));
    session_maybe_idle(s);
}

/* Feeds what the connection received to nghttp2. */
static void session_input(struct ing_h2up *s, bool eof)
{
    struct ing_up *u = &s->up;
    size_t avail = u->in.base != NULL ? u->in.len - u->in.off : 0;

    if (avail > 0 && !s->dead && !u->closing) {
        s->busy = true;
        ssize_t n =
            nghttp2_session_mem_recv(s->ses, (const uint8_t *)u->in.base + u->in.off, avail);
        s->busy = false;
        if (n < 0)
            session_fail(s, 502, nghttp2_strerror((int)n));
    }
    ing__buf_release(u->w, &u->in);
    if (eof)
        session_fail(s, 502, "connection closed by the upstream");
    else if (u->tls != NULL && !u->closing)
        ing__tls_resume(u->tls); /* the plaintext buffer may have been full */
    session_settle(s);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct ing_up *u = WR_CONTAINER_OF(h, struct ing_up, tcp);

    if (u->tls != NULL) {
        ing__tls_alloc(u->tls, buf);
        return;
    }
    if (u->in.base == NULL) {
        u->in.base = ing__block_get(u->w);
        u->in.cap = u->in.base ? ING_BLOCK_SIZE : 0;
        u->in.off = u->in.len = 0;
    }
    buf->base = u->in.base ? u->in.base + u->in.len : NULL;
    buf->len = u->in.base ? u->in.cap - u->in.len : 0;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct ing_up *u = WR_CONTAINER_OF(st, struct ing_up, tcp);
    struct ing_h2up *s = WR_CONTAINER_OF(u, struct ing_h2up, up);

    if (nread == 0 || u->closing)
        return;
    if (nread > 0 && u->tls != NULL) {
        ing__tls_cin(u->tls)->len += (uint32_t)nread;
        ing__tls_read(u->tls, 0); /* decrypts into u->in, then tls_input() */
        return;
    }
    if (nread > 0) {
        u->in.len += (uint32_t)nread;
        session_input(s, false);
        return;
    }
    session_fail(s, 502,
                 nread == UV_EOF ? "connection closed by the upstream" : uv_strerror((int)nread));
    session_settle(s);
}

static void tls_input(void *owner, long n)
{
    session_input(owner, n == -2);
}

static void tls_fail(void *owner)
{
    struct ing_h2up *s = owner;

    session_fail(s, 502, s->up.state == ING_U_HANDSHAKE ? "TLS handshake failed" : "TLS error");
    session_settle(s);
}

static int tls_handshake(void *owner)
{
    struct ing_h2up *s = owner;

    if (!ing__tls_alpn_h2(s->up.tls)) {
        wr_warn("upstream %s: TLS without ALPN \"h2\" for a cluster with protocol \"h2\"", s->addr);
        return -1;
    }
    session_ready(s);
    return 0;
}

static const struct ing_tls_ops tls_ops = {tls_input, tls_fail, tls_handshake};

static void on_connect(uv_connect_t *creq, int status)
{
    struct ing_up *u = WR_CONTAINER_OF(creq, struct ing_up, connect);
    struct ing_h2up *s = WR_CONTAINER_OF(u, struct ing_h2up, up);

    if (status == UV_ECANCELED || u->closing)
        return;
    if (status < 0) {
        session_fail(s, 502, uv_strerror(status));
        session_settle(s);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    if (uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read) == 0)
        u->reading = 1;
    if (s->ssl_ctx != NULL) {
        /* The connect timeout covers the handshake too. */
        u->tls = ing__tls_new(s->ssl_ctx, false, s->sni, u->w, (uv_stream_t *)&u->tcp, &u->in,
                              &tls_ops, s);
        SSL_CTX_free(s->ssl_ctx);
        s->ssl_ctx = NULL;
        if (u->tls == NULL) {
            session_fail(s, 502, "cannot set up TLS");
            session_settle(s);
            return;
        }
        u->state = ING_U_HANDSHAKE;
        ing__tls_connect(u->tls);
        return;
    }
    session_ready(s);
    session_settle(s);
}

static nghttp2_session_callbacks *cbs; /* shared by all sessions: they copy it */
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;

static void cbs_init(void)
{
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}

static nghttp2_session_callbacks *callbacks(void)
{
    pthread_once(&cbs_once, cbs_init);
    return cbs;
}

/* A new session to <ep> for the cluster of <r>, connecting; NULL when it cannot be made.
 * Until the peer's SETTINGS arrive, it assumes <peer_max> concurrent streams (what another
 * session to the endpoint learned, else nghttp2's 100), so a burst of requests does not send
 * more streams than the peer takes before it could say so. */
static struct ing_h2up *session_new(struct ing_req *r, const struct xds_endpoint *ep,
                                    uint32_t peer_max)
{
    struct ing_worker *w = r->sr_worker;
    const struct xds_cluster *cl = r->cluster;
    struct ing_h2up *s = calloc(1, sizeof(*s));
    nghttp2_option *opt;

    if (s == NULL || callbacks() == NULL || nghttp2_option_new(&opt) != 0) {
        free(s);
        return NULL;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, ING_H2UP_MAX_ACKS);
    if (peer_max > 0)
        nghttp2_option_set_peer_max_concurrent_streams(opt, peer_max);
    int rc = nghttp2_session_client_new2(&s->ses, callbacks(), s, opt);
    nghttp2_option_del(opt);
    if (rc != 0) {
        free(s);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, ING_H2UP_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, r->sr->snap->max_header_bytes},
    };
    nghttp2_submit_settings(s->ses, NGHTTP2_FLAG_NONE, iv, WR_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(s->ses, NGHTTP2_FLAG_NONE, 0, ING_H2UP_CONN_WINDOW);
    struct ing_up *u = &s->up;
    u->w = w;
    u->is_h2 = 1;
    u->st = ep->st != NULL ? xds_ep_state_ref(ep->st) : NULL;
    u->idle_ms = cl->idle_timeout_ms;
    u->state = ING_U_CONNECTING;
    wr_list_init(&u->tn.link);
    wr_list_init(&u->idle_link);
    wr_list_init(&s->streams);
    wr_list_init(&s->flink);
    wr_list_insert_tail(&w->ups, &u->wlink);
    s->proto = cl->protocol;
    snprintf(s->addr, sizeof(s->addr), "%s", ep->address);
    if (cl->protocol == XDS_PROTO_H2 && cl->tls.ssl_ctx != NULL) {
        s->ssl_ctx = cl->tls.ssl_ctx;
        SSL_CTX_up_ref(s->ssl_ctx);
        s->sni = cl->tls.sni != NULL ? wr_xstrdup(cl->tls.sni) : NULL;
    }
    uv_tcp_init(&w->loop, &u->tcp);
    if (u->st != NULL)
        wr_list_insert_tail(&u->st->w[w->idx].idle, &u->idle_link);
    rc = uv_tcp_connect(&u->connect, &u->tcp, (const struct sockaddr *)&ep->ss, on_connect);
    if (rc < 0) {
        wr_debug("upstream %s: connect failed: %s", s->addr, uv_strerror(rc));
        if (u->st != NULL)
            xds_ctr_add(&u->st->w[w->idx].connect_failures, 1);
        s->dead = true;
        session_close(s, false);
        return NULL;
    }
    timer_set(s, ING_TQ_UP_CONNECT, cl->connect_timeout_ms);
    return s;
}

/* Whether <s> may take one more stream of a request to cluster <cl>. */
static bool session_usable(struct ing_h2up *s, const struct xds_cluster *cl)
{
    uint32_t max = ING_H2UP_MAX_STREAMS;
    uint32_t peer =
        nghttp2_session_get_remote_settings(s->ses, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

    if (s->goaway || s->dead || s->up.closing || s->proto != cl->protocol)
        return false;
    if (!nghttp2_session_check_request_allowed(s->ses)) {
        s->goaway = true; /* stream ids spent, or GOAWAY sent */
        return false;
    }
    return s->n_streams < WR_MIN(max, peer);
}

/* Gives <r> a stream to endpoint <ep>: on a session of this worker with room, else on a new
 * one. On failure the request is failed (502, retryable when no connection could be made). */
void ing__h2up_acquire(struct ing_req *r, const struct xds_endpoint *ep)
{
    struct ing_worker *w = r->sr_worker;
    struct xds_ep_state *st = ep->st;

    worker_init(w);
    for (int attempt = 0; attempt < 2; attempt++) {
        struct ing_h2up *s = NULL;
        uint32_t peer_max = 0;
        if (st != NULL) {
            struct wr_list *head = &st->w[w->idx].idle;
            for (struct wr_list *n = head->prev; n != head && s == NULL; n = n->prev) {
                struct ing_up *u = WR_CONTAINER_OF(n, struct ing_up, idle_link);
                if (!u->is_h2)
                    break; /* HTTP/1.1 idle connections: the sessions are all behind */
                struct ing_h2up *c = WR_CONTAINER_OF(u, struct ing_h2up, up);
                if (session_usable(c, r->cluster))
                    s = c;
                else if (c->settings && !c->dead)
                    peer_max = nghttp2_session_get_remote_settings(
                        c->ses, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
            }
        }
        bool fresh = s == NULL;
        if (fresh && (s = session_new(r, ep, peer_max)) == NULL) {
            ing__req_upstream_failed(r, 502, true);
            return;
        }
        int rc = stream_start(s, r);
        if (rc == 0) {
            ing__req_forward(r); /* a body the client sent with its head */
            return;
        }
        wr_debug("upstream %s: cannot open a stream: %s", s->addr, nghttp2_strerror(rc));
        s->goaway = true;
        session_maybe_idle(s);
        if (fresh || rc == NGHTTP2_ERR_NOMEM)
            break;
    }
    ing__req_upstream_failed(r, 502, false);
}

/* Drain / stop: closes <u>'s session now if it carries no stream, else once its last ended. */
void ing__h2up_close_idle(struct ing_up *u)
{
    struct ing_h2up *s = WR_CONTAINER_OF(u, struct ing_h2up, up);

    if (u->closing)
        return;
    s->goaway = true;
    wr_list_remove(&u->idle_link);
    if (s->n_streams == 0)
        session_close(s, true);
}
