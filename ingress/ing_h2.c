/* ingress/ing_h2.c -- HTTP/2 on a client connection (nghttp2), over TLS (ALPN "h2") or
 * cleartext with prior knowledge (listener "h2c": true).
 *
 * Each stream is one struct ing_req and goes through the same router, load balancer, pools and
 * upstream code as an HTTP/1.1 request: the request head is copied once out of nghttp2's
 * callbacks into the request's header block and presented as a struct ing_h1_msg, so the
 * upstream side cannot tell the difference. Request bodies arrive in DATA frames into a
 * per-stream buffer; flow-control windows are reopened (nghttp2_session_consume) only once the
 * bytes reached the upstream, so a slow upstream throttles its own client stream and nothing
 * else. Response bodies are pulled by nghttp2's data provider from the upstream buffer, so a
 * client that does not open its window stops that one upstream connection's reads.
 *
 * Abuse limits (answered with GOAWAY and the connection closed, or RST_STREAM):
 * max concurrent streams (128), the header list size (max_header_bytes), rapid reset
 * (CVE-2023-44487: more than ING_H2_MAX_RESETS client resets per second), CONTINUATION floods
 * (more than ING_H2_MAX_CONTINUATIONS frames in one header block), SETTINGS/PING floods
 * (more than ING_H2_MAX_CONTROL per second), and at most ING_H2_MAX_OUTBOUND_ACK queued acks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "ing_priv.h"

#define ING_H2_MAX_STREAMS       128
#define ING_H2_MAX_RESETS        200 /* client RST_STREAM per second */
#define ING_H2_MAX_CONTROL       500 /* SETTINGS + PING frames per second */
#define ING_H2_MAX_CONTINUATIONS 32
#define ING_H2_MAX_OUTBOUND_ACK  100
#define ING_H2_CONN_WINDOW       (1 << 20)
#define ING_H2_OUT_BATCH         16384

struct ing_h2conn {
    nghttp2_session *ses;
    struct ing_conn *c;
    struct ing_buf out; /* serialized frames waiting for the socket */
    uv_write_t wreq;
    struct wr_list streams; /* active requests (ing_req.link) */
    struct wr_list dlink;   /* w->h2_dflushq: a flush asked for from an upstream session */
    unsigned n_streams;
    bool writing;
    bool goaway_sent;
    bool in_recv; /* inside nghttp2_session_mem_recv */
    bool in_send; /* inside nghttp2_session_mem_send */
    /* abuse accounting, per second of loop time */
    uint64_t window_start;
    uint32_t resets, controls, continuations;
};

/* ---- output ---- */

static void on_h2_written(uv_write_t *wr, int status);

static void conn_fail(struct ing_h2conn *h)
{
    ing__conn_close(h->c);
}

void ing__h2_flush(struct ing_conn *c)
{
    struct ing_h2conn *h = c->h2;

    /* nghttp2 must not be re-entered: what callbacks submit goes out when the outer call
     * returns and flushes. */
    if (h == NULL || h->in_recv || h->in_send)
        return;
    while (!h->writing && !c->closing) {
        for (;;) {
            const uint8_t *data;
            h->in_send = true;
            ssize_t n = nghttp2_session_mem_send(h->ses, &data);
            h->in_send = false;
            if (n < 0) {
                wr_debug("h2: mem_send: %s", nghttp2_strerror((int)n));
                conn_fail(h);
                return;
            }
            if (n == 0)
                break;
            if (h->out.base == NULL) {
                h->out.base = ing__block_get(c->w);
                if (h->out.base == NULL) {
                    conn_fail(h);
                    return;
                }
                h->out.cap = ING_BLOCK_SIZE;
                h->out.off = h->out.len = 0;
            }
            if (h->out.len + (size_t)n > h->out.cap) {
                size_t cap = h->out.cap;
                while (cap < h->out.len + (size_t)n)
                    cap *= 2;
                char *nb = malloc(cap);
                if (nb == NULL) {
                    conn_fail(h);
                    return;
                }
                memcpy(nb, h->out.base, h->out.len);
                uint32_t len = h->out.len;
                ing__buf_release(c->w, &h->out);
                h->out.base = nb;
                h->out.cap = (uint32_t)cap;
                h->out.len = len;
            }
            memcpy(h->out.base + h->out.len, data, (size_t)n);
            h->out.len += (uint32_t)n;
            if (h->out.len >= ING_H2_OUT_BATCH)
                break;
        }
        if (h->out.base == NULL || h->out.len == 0)
            break;
        uv_buf_t b = uv_buf_init(h->out.base, h->out.len);
        int rc = ing__conn_send(c, &h->wreq, &b, 1, on_h2_written);
        if (rc < 0) {
            conn_fail(h);
            return;
        }
        if (rc == 0) {
            h->writing = true;
            ing__tq_add(c->w, &c->tn, ING_TQ_CLIENT_SEND, c->w->cur->snap->client_idle_timeout_ms);
            return;
        }
        ing__buf_release(c->w, &h->out);
    }
    if (c->closing || h->writing)
        return;
    if ((h->goaway_sent && h->n_streams == 0 && !nghttp2_session_want_write(h->ses)) ||
        (!nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses)))
        ing__conn_close(c); /* GOAWAY sent and every stream answered, or nothing left */
}

static void on_h2_written(uv_write_t *wr, int status)
{
    struct ing_h2conn *h = WR_CONTAINER_OF(wr, struct ing_h2conn, wreq);
    struct ing_conn *c = h->c;

    h->writing = false;
    ing__buf_release(c->w, &h->out);
    if (status < 0) {
        if (status != UV_ECANCELED)
            ing__conn_close(c);
        return;
    }
    if (h->n_streams == 0 && !c->closing)
        ing__tq_add(c->w, &c->tn, ING_TQ_CLIENT_IDLE, c->w->cur->snap->client_idle_timeout_ms);
    else
        ing__tq_del(&c->tn);
    ing__h2_flush(c);
}

/* ---- abuse limits ---- */

static bool rate_exceeded(struct ing_h2conn *h, uint32_t *counter, uint32_t limit)
{
    uint64_t now = uv_now(&h->c->w->loop);

    if (now - h->window_start >= 1000) {
        h->window_start = now;
        h->resets = h->controls = 0;
    }
    return ++*counter > limit;
}

static void enhance_your_calm(struct ing_h2conn *h, const char *why)
{
    wr_warn("h2: %s from a client: closing its connection", why);
    nghttp2_session_terminate_session(h->ses, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* ---- streams ---- */

static struct ing_req *stream_req(struct ing_h2conn *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->ses, id);
}

/* Appends <n> bytes to the request's header block; returns the offset or -1. */
static long hblock_add(struct ing_req *r, const void *p, size_t n, uint32_t limit)
{
    struct ing_buf *b = &r->h2hdr;

    if (b->base == NULL) {
        b->base = ing__block_get(r->sr_worker);
        if (b->base == NULL)
            return -1;
        b->cap = ING_BLOCK_SIZE;
        b->len = 0;
    }
    if (b->len + n > limit)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = (size_t)b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        char *nb = malloc(cap);
        if (nb == NULL)
            return -1;
        memcpy(nb, b->base, b->len);
        uint32_t len = b->len;
        ing__buf_release(r->sr_worker, b);
        b->base = nb;
        b->cap = (uint32_t)cap;
        b->len = len;
    }
    memcpy(b->base + b->len, p, n);
    long off = b->len;
    b->len += (uint32_t)n;
    return off;
}

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct ing_h2conn *h = ud;
    struct ing_conn *c = h->c;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h->continuations = 0;
    if (c->w->draining || h->goaway_sent) {
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct ing_req *r = ing__req_get(c->w);
    if (r == NULL) {
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    r->c = c;
    r->h2 = h;
    r->sr_worker = c->w;
    r->stream_id = f->hd.stream_id;
    r->t_start_ns = wr_mono_ns();
    wr_list_insert_tail(&h->streams, &r->link);
    h->n_streams++;
    ing__tq_del(&c->tn);
    nghttp2_session_set_stream_user_data(ses, f->hd.stream_id, r);
    return 0;
}

/* Header ids the proxy acts on (names arrive lower-case in HTTP/2). */
static uint8_t header_id(const uint8_t *n, size_t len)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(n, s, len) == 0)
    if (IS("host"))
        return ING_H1_H_HOST;
    if (IS("content-length"))
        return ING_H1_H_CONTENT_LENGTH;
    if (IS("cookie"))
        return ING_H1_H_COOKIE;
    if (IS("te"))
        return ING_H1_H_TE;
    if (IS("x-forwarded-for"))
        return ING_H1_H_X_FORWARDED_FOR;
    if (IS("x-forwarded-proto"))
        return ING_H1_H_X_FORWARDED_PROTO;
    if (IS("x-forwarded-host"))
        return ING_H1_H_X_FORWARDED_HOST;
    if (IS("x-request-id"))
        return ING_H1_H_X_REQUEST_ID;
    if (IS("expect"))
        return ING_H1_H_EXPECT;
    if (IS("upgrade"))
        return ING_H1_H_UPGRADE;
    if (len > 6 && memcmp(n, "proxy-", 6) == 0)
        return ING_H1_H_PROXY_X;
    return ING_H1_H_OTHER;
#undef IS
}

/* While headers arrive, hdrs[] hold offsets into r->h2hdr (the block may move as it grows);
 * they become pointers once the block is complete. */
static int on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct ing_h2conn *h = ud;
    struct ing_req *r = stream_req(h, f->hd.stream_id);
    uint32_t limit = h->c->w->cur->snap->max_header_bytes;

    if (r != NULL && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_HEADERS &&
        r->h2_head_done) {
        /* Trailers (nghttp2 checked there is no pseudo-header): passed on after the body, as
         * the trailers of an HTTP/2 upstream's stream or in the last chunk of an HTTP/1.1
         * upstream's chunked body. Over the limit, the rest is dropped. */
        ing__trl_add(r->sr_worker, &r->h2trl, name, namelen, value, valuelen, limit);
        return 0;
    }
    if (r == NULL || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST ||
        r->h2_bad)
        return 0;
    if (namelen == 9 && memcmp(name, ":protocol", 9) == 0) {
        /* Extended CONNECT (nghttp2 checked it comes with CONNECT, :scheme and :path): kept
         * as the Upgrade field of the HTTP/1.1 request it becomes (ing__req_start_h2). */
        name = (const uint8_t *)"upgrade";
        namelen = 7;
        r->h2_xconnect = 1;
    } else if (namelen > 0 && name[0] == ':') {
        long off = hblock_add(r, value, valuelen, limit);
        if (off < 0) {
            r->h2_bad = 431;
            return 0;
        }
        struct wr_str *dst = NULL;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            dst = &r->msg.method;
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            dst = &r->msg.target;
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            dst = &r->msg.authority;
        if (dst != NULL) {
            dst->p = (const char *)(uintptr_t)(off + 1); /* offset + 1: 0 means absent */
            dst->len = valuelen;
        }
        return 0;
    }
    if (r->msg.n_hdrs >= ING_MAX_HDRS) {
        r->h2_bad = 431;
        return 0;
    }
    long noff = hblock_add(r, name, namelen, limit);
    long voff = noff >= 0 ? hblock_add(r, value, valuelen, limit) : -1;
    if (voff < 0) {
        r->h2_bad = 431;
        return 0;
    }
    struct ing_h1_hdr *hd = &r->msg.hdrs[r->msg.n_hdrs++];
    hd->name = (const char *)(uintptr_t)noff;
    hd->value = (const char *)(uintptr_t)voff;
    hd->name_len = (uint16_t)namelen;
    hd->value_len = (uint32_t)valuelen;
    hd->id = header_id(name, namelen);
    /* TE (only "trailers" is legal in HTTP/2) is hop-by-hop for the HTTP/1.1 upstream; so is
     * the Upgrade field made from :protocol (the upstream head writes its own). */
    hd->flags = hd->id == ING_H1_H_TE || hd->id == ING_H1_H_PROXY_X || hd->id == ING_H1_H_UPGRADE
                    ? ING_H1_HF_HOP
                    : 0;
    return 0;
}

static void fix_slice(struct ing_req *r, struct wr_str *s)
{
    if (s->p != NULL)
        s->p = r->h2hdr.base + ((uintptr_t)s->p - 1);
}

static int method_id(struct wr_str m)
{
    static const struct {
        const char *s;
        int id;
    } t[] = {
        {"GET", ING_H1_M_GET},         {"HEAD", ING_H1_M_HEAD},     {"POST", ING_H1_M_POST},
        {"PUT", ING_H1_M_PUT},         {"DELETE", ING_H1_M_DELETE}, {"CONNECT", ING_H1_M_CONNECT},
        {"OPTIONS", ING_H1_M_OPTIONS}, {"TRACE", ING_H1_M_TRACE},   {"PATCH", ING_H1_M_PATCH}};

    for (size_t i = 0; i < WR_ARRAY_LEN(t); i++)
        if (wr_str_eq(m, t[i].s, strlen(t[i].s)))
            return t[i].id;
    return ING_H1_M_OTHER;
}

/* The request head is complete: build the message the HTTP/1.1 side expects, then start. */
static void request_ready(struct ing_h2conn *h, struct ing_req *r, bool end_stream)
{
    struct ing_h1_msg *m = &r->msg;
    bool te_trailers = false, trailer = false;

    fix_slice(r, &m->method);
    fix_slice(r, &m->target);
    fix_slice(r, &m->authority);
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        m->hdrs[i].name = r->h2hdr.base + (uintptr_t)m->hdrs[i].name;
        m->hdrs[i].value = r->h2hdr.base + (uintptr_t)m->hdrs[i].value;
        if (m->hdrs[i].id == ING_H1_H_TE)
            te_trailers =
                wr_str_eq((struct wr_str){m->hdrs[i].value, m->hdrs[i].value_len}, "trailers", 8);
        if (m->hdrs[i].name_len == 7 && memcmp(m->hdrs[i].name, "trailer", 7) == 0)
            trailer = true;
        if (m->hdrs[i].id == ING_H1_H_HOST && m->host.p == NULL) {
            m->host.p = m->hdrs[i].value;
            m->host.len = m->hdrs[i].value_len;
        }
        if (m->hdrs[i].id == ING_H1_H_CONTENT_LENGTH) {
            uint64_t v = 0;
            for (uint32_t k = 0; k < m->hdrs[i].value_len; k++)
                v = v * 10 + (uint64_t)(m->hdrs[i].value[k] - '0'); /* nghttp2 checked it */
            m->content_length = v;
            m->body = ING_H1_BODY_LENGTH;
        }
    }
    if (m->authority.p != NULL)
        m->host = m->authority; /* :authority wins over Host (RFC 9113 §8.3.1) */
    m->method_id = (uint8_t)method_id(m->method);
    m->minor = 1;
    m->flags = ING_H1_F_KEEP_ALIVE | (te_trailers ? ING_H1_F_TE_TRAILERS : 0);
    if (m->target.p != NULL) {
        const char *q = memchr(m->target.p, '?', m->target.len);
        m->path.p = m->target.p;
        m->path.len = q ? (size_t)(q - m->target.p) : m->target.len;
        if (q != NULL) {
            m->query.p = q + 1;
            m->query.len = m->target.len - m->path.len - 1;
        }
    }
    if (end_stream) {
        m->body = ING_H1_BODY_NONE;
        r->h2_end_stream = 1;
    } else if (m->body != ING_H1_BODY_LENGTH || trailer) {
        /* Length unknown, or trailers announced (RFC 9110 §6.6.2 "Trailer"): chunked towards an
         * HTTP/1.1 upstream, where only the last chunk can carry trailers. nghttp2 still holds
         * the DATA frames to a content-length the client sent. */
        m->body = ING_H1_BODY_CHUNKED;
        m->content_length = 0;
    }
    if (r->h2_xconnect && m->method_id == ING_H1_M_CONNECT) {
        /* RFC 8441 §5: an HTTP/1.1 WebSocket handshake towards the upstream (GET with
         * Upgrade); its 101 becomes our 200, then the stream's DATA carry the bytes both ways
         * until either side ends. */
        m->method = (struct wr_str){"GET", 3};
        m->method_id = ING_H1_M_GET;
        m->flags |= ING_H1_F_UPGRADE;
        m->body = ING_H1_BODY_NONE;
        m->content_length = 0;
    }
    r->h2_head_done = 1;
    /* What the head takes once serialized as HTTP/1.1 ("name: value\r\n" per field, the
     * request line): the upstream head is sized from it. */
    m->head_len = (uint32_t)(r->h2hdr.len + 4u * m->n_hdrs + m->target.len + 64);
    if (r->h2_bad) {
        ing__req_start_h2(r, r->h2_bad);
        return;
    }
    if (m->target.p == NULL || m->method.p == NULL || m->method_id == ING_H1_M_CONNECT ||
        m->target.len == 0 || m->target.p[0] != '/') {
        ing__req_start_h2(r, 400);
        return;
    }
    ing__req_start_h2(r, 0);
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct ing_h2conn *h = ud;
    struct ing_req *r;

    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        r = stream_req(h, f->hd.stream_id);
        if (r == NULL)
            return 0;
        if (!r->h2_head_done && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            request_ready(h, r, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
            return 0;
        }
        /* Trailers (on_header kept them): they end the body. */
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            r->h2_end_stream = 1;
            ing__req_body_more(r);
        }
        return 0;
    case NGHTTP2_DATA:
        r = stream_req(h, f->hd.stream_id);
        if (r != NULL && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            r->h2_end_stream = 1;
            ing__req_body_more(r);
        }
        return 0;
    case NGHTTP2_RST_STREAM:
        if (rate_exceeded(h, &h->resets, ING_H2_MAX_RESETS))
            enhance_your_calm(h, "a flood of RST_STREAM (rapid reset)");
        return 0;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && rate_exceeded(h, &h->controls, ING_H2_MAX_CONTROL))
            enhance_your_calm(h, "a flood of SETTINGS/PING frames");
        return 0;
    default:
        return 0;
    }
}

static int on_begin_frame(nghttp2_session *ses, const nghttp2_frame_hd *hd, void *ud)
{
    struct ing_h2conn *h = ud;

    if (hd->type == NGHTTP2_CONTINUATION && ++h->continuations > ING_H2_MAX_CONTINUATIONS) {
        enhance_your_calm(h, "a CONTINUATION flood");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct ing_h2conn *h = ud;
    struct ing_req *r = stream_req(h, id);

    if (r == NULL || r->req_done) {
        nghttp2_session_consume(ses, id, len); /* nobody wants it: reopen the window */
        return 0;
    }
    struct ing_buf *b = &r->h2body;
    if (b->base == NULL) {
        /* The stream window (64 KiB) bounds what can be buffered per stream. */
        b->cap = 65536 + 1024;
        b->base = malloc(b->cap);
        if (b->base == NULL) {
            b->cap = 0;
            nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
            return 0;
        }
        b->off = b->len = 0;
    }
    if (b->off > 0 && b->len + len > b->cap) {
        memmove(b->base, b->base + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + len > b->cap) {
        nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        return 0;
    }
    memcpy(b->base + b->len, data, len);
    b->len += (uint32_t)len;
    r->h2_body_total += len;
    r->bytes_in += len;
    ing__req_body_more(r);
    return 0;
}

static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *f, void *ud)
{
    struct ing_h2conn *h = ud;

    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct ing_req *r = stream_req(h, f->hd.stream_id);
        if (r != NULL && r->resp_done)
            ing__req_finish_h2(r);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t err, void *ud)
{
    struct ing_h2conn *h = ud;
    struct ing_req *r = stream_req(h, id);

    if (r != NULL) {
        nghttp2_session_set_stream_user_data(ses, id, NULL);
        r->h2_closed = 1;
        ing__req_abort_h2(r); /* closed before our response ended: client reset or error */
    }
    return 0;
}

/* ---- the response ---- */

/* Splits the trailer section of an HTTP/1.1 chunked response (raw "name: value" CRLF lines,
 * checked by the chunked scanner, then the final CRLF) into fields, lower-casing the names in
 * place for HTTP/2 and dropping forbidden ones. Returns how many were kept. */
static unsigned h1_trailers(struct ing_buf *raw, struct wr_str *names, struct wr_str *values,
                            unsigned max)
{
    char *p = raw->base, *end = raw->base ? raw->base + raw->len : NULL;
    unsigned n = 0;

    while (p != NULL && p < end && n < max) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            break;
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon != NULL && colon > p) {
            char *v = colon + 1, *ve = eol;
            if (ve > v && ve[-1] == '\r')
                ve--;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            for (char *k = p; k < colon; k++)
                if (*k >= 'A' && *k <= 'Z')
                    *k = (char)(*k - 'A' + 'a');
            if (!ing__trl_forbidden(p, (size_t)(colon - p))) {
                names[n] = (struct wr_str){p, (size_t)(colon - p)};
                values[n++] = (struct wr_str){v, (size_t)(ve - v)};
            }
        }
        p = eol + 1;
    }
    return n;
}

/* Sends the upstream's trailers of <r>, if it sent any: an HTTP/2 upstream's (grpc-status...),
 * or the trailer section of an HTTP/1.1 upstream's chunked body. */
static bool submit_trailers(nghttp2_session *ses, struct ing_req *r)
{
    struct wr_str names[ING_MAX_HDRS], values[ING_MAX_HDRS];
    nghttp2_nv nv[ING_MAX_HDRS];
    unsigned n = r->h2s != NULL ? ing__h2up_trailers(r, names, values, ING_MAX_HDRS)
                                : h1_trailers(&r->rtrl, names, values, ING_MAX_HDRS);

    for (unsigned i = 0; i < n; i++)
        nv[i] = (nghttp2_nv){(uint8_t *)names[i].p, (uint8_t *)values[i].p, names[i].len,
                             values[i].len, NGHTTP2_NV_FLAG_NONE};
    return n > 0 && nghttp2_submit_trailer(ses, r->stream_id, nv, n) == 0;
}

static ssize_t data_read(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct ing_req *r = src->ptr;
    bool eof = false;
    long n = ing__resp_take(r, (char *)buf, len, &eof);

    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        r->resp_done = 1;
        if ((r->h2s != NULL || r->rtrl.len > 0) && submit_trailers(ses, r))
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers' HEADERS end it */
        return n;
    }
    if (n == 0) {
        r->h2_deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

static void nv_add(nghttp2_nv *nv, size_t *n, const char *name, size_t nl, const char *v, size_t vl)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)v, nl, vl, NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

/* Sends the response head (from the upstream's, or a canned one when <status> is not 0). */
int ing__h2_respond(struct ing_req *r, int status, const char *location, bool body)
{
    struct ing_h2conn *h = r->h2;
    struct ing_h1_msg *m = &r->rmsg;
    nghttp2_nv nv[ING_MAX_HDRS + 8];
    size_t n = 0;
    char st[8];
    const struct xds_route *rt = r->route;

    bool ws = status == 0 && r->h2_xconnect && m->status == 101;
    snprintf(st, sizeof(st), "%03u", ws ? 200u : (status ? (unsigned)status : m->status) % 1000);
    nv_add(nv, &n, ":status", 7, st, 3);
    if (status == 0) {
        for (unsigned i = 0; i < m->n_hdrs && n < WR_ARRAY_LEN(nv) - 6; i++) {
            struct ing_h1_hdr *hd = &m->hdrs[i];
            if ((hd->flags & ING_H1_HF_HOP) || hd->id == ING_H1_H_TRANSFER_ENCODING ||
                hd->id == ING_H1_H_UPGRADE)
                continue;
            if (ws && hd->name_len == 20 && strncasecmp(hd->name, "sec-websocket-accept", 20) == 0)
                continue;                   /* RFC 8441 §5: not used over HTTP/2 */
            char *lname = (char *)hd->name; /* the upstream buffer is ours: lower-case in place */
            for (uint16_t k = 0; k < hd->name_len; k++)
                lname[k] = wr_lower(lname[k]);
            nv_add(nv, &n, hd->name, hd->name_len, hd->value, hd->value_len);
        }
    } else {
        nv_add(nv, &n, "content-type", 12, "text/plain", 10);
        if (location != NULL)
            nv_add(nv, &n, "location", 8, location, strlen(location));
    }
    if (rt != NULL && rt->hsts.enabled && r->c->lst->is_tls)
        nv_add(nv, &n, "strict-transport-security", 25, rt->hsts.header_value,
               strlen(rt->hsts.header_value));
    if (r->set_track && r->colour >= 0)
        nv_add(nv, &n, "set-cookie", 10,
               r->colour ? "weir-track=green; Path=/; HttpOnly"
                         : "weir-track=blue; Path=/; HttpOnly",
               r->colour ? 34 : 33);
    nghttp2_data_provider prd = {.source.ptr = r, .read_callback = data_read};
    int rc = nghttp2_submit_response(h->ses, r->stream_id, nv, n, body ? &prd : NULL);
    if (rc != 0)
        return -1;
    if (!body)
        r->resp_done = 1;
    ing__h2_flush(r->c);
    return 0;
}

/* Answers a gRPC request with an error of ours: a trailers-only response (HEADERS with
 * END_STREAM) carrying <code> as grpc-status and <msg> as grpc-message. */
int ing__h2_respond_grpc(struct ing_req *r, unsigned code, const char *msg)
{
    struct ing_h2conn *h = r->h2;
    char st[12];
    nghttp2_nv nv[5];
    size_t n = 0;

    snprintf(st, sizeof(st), "%u", code);
    nv_add(nv, &n, ":status", 7, "200", 3);
    nv_add(nv, &n, "content-type", 12, "application/grpc", 16);
    nv_add(nv, &n, "grpc-status", 11, st, strlen(st));
    nv_add(nv, &n, "grpc-message", 12, msg, strlen(msg));
    if (nghttp2_submit_response(h->ses, r->stream_id, nv, n, NULL) != 0)
        return -1;
    r->resp_done = 1;
    ing__h2_flush(r->c);
    return 0;
}

/* More response bytes are in the upstream buffer. */
void ing__h2_resume(struct ing_req *r)
{
    if (r->h2_deferred) {
        r->h2_deferred = 0;
        nghttp2_session_resume_data(r->h2->ses, r->stream_id);
    }
    ing__h2_flush(r->c);
}

/* <n> request body bytes reached the upstream: let the client send as many more. */
void ing__h2_consumed(struct ing_req *r, size_t n)
{
    struct ing_h2conn *h = r->h2;

    if (n == 0)
        return;
    nghttp2_session_consume(h->ses, r->stream_id, n);
    if (!h->in_recv)
        ing__h2_flush(r->c);
}

/* Like ing__h2_consumed(), from inside an upstream session's callbacks: the WINDOW_UPDATE
 * goes out from the worker's idle callback, so this session is not entered from there. */
void ing__h2_consumed_later(struct ing_req *r, size_t n)
{
    struct ing_h2conn *h = r->h2;
    struct ing_worker *w = r->sr_worker;

    if (h == NULL || n == 0)
        return;
    nghttp2_session_consume(h->ses, r->stream_id, n);
    if (wr_list_empty(&h->dlink)) {
        ing__h2_defer_schedule(w);
        wr_list_insert_tail(&w->h2_dflushq, &h->dlink);
    }
}

/* Flushes the connections ing__h2_consumed_later() queued (the worker's idle callback). */
void ing__h2_run_deferred(struct ing_worker *w)
{
    while (!wr_list_empty(&w->h2_dflushq)) {
        struct ing_h2conn *h = WR_CONTAINER_OF(w->h2_dflushq.next, struct ing_h2conn, dlink);
        wr_list_remove(&h->dlink);
        if (!h->c->closing)
            ing__h2_flush(h->c);
    }
}

/* Ends the stream of <r> early (error or abort). */
void ing__h2_reset(struct ing_req *r, uint32_t code)
{
    struct ing_h2conn *h = r->h2;

    if (!r->h2_closed)
        nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, r->stream_id, code);
    ing__h2_detach(r);
    if (!h->in_recv)
        ing__h2_flush(r->c);
}

/* Forgets the stream: the request may be freed after this. */
void ing__h2_detach(struct ing_req *r)
{
    struct ing_h2conn *h = r->h2;

    if (h == NULL)
        return;
    if (!r->h2_closed)
        nghttp2_session_set_stream_user_data(h->ses, r->stream_id, NULL);
    wr_list_remove(&r->link);
    h->n_streams--;
    r->h2 = NULL;
    if (h->n_streams == 0 && !h->c->closing) {
        if (h->c->close_after || h->c->w->draining)
            ing__conn_drain(h->c);
        else
            ing__tq_add(h->c->w, &h->c->tn, ING_TQ_CLIENT_IDLE,
                        h->c->w->cur->snap->client_idle_timeout_ms);
    }
}

/* ---- the connection ---- */

int ing__h2_start(struct ing_conn *c)
{
    struct ing_h2conn *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;

    if (h == NULL)
        return -1;
    h->c = c;
    wr_list_init(&h->streams);
    wr_list_init(&h->dlink);
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(h);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, ING_H2_MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(opt, 64);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    int rc = nghttp2_session_server_new2(&h->ses, cbs, h, opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0) {
        free(h);
        return -1;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, ING_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->w->cur->snap->max_header_bytes},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441: WebSockets over streams */
    };
    nghttp2_submit_settings(h->ses, NGHTTP2_FLAG_NONE, iv, WR_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(h->ses, NGHTTP2_FLAG_NONE, 0, ING_H2_CONN_WINDOW);
    h->window_start = uv_now(&c->w->loop);
    c->h2 = h;
    c->state = ING_C_H2;
    /* From now on the connection times out only while it has no stream. */
    ing__tq_add(c->w, &c->tn, ING_TQ_CLIENT_IDLE, c->w->cur->snap->client_idle_timeout_ms);
    return 0;
}

/* Feeds what c->in holds to nghttp2 (it keeps what it needs), then sends what it produced. */
void ing__h2_input(struct ing_conn *c)
{
    struct ing_h2conn *h = c->h2;
    size_t avail = c->in.len - c->in.off;

    if (avail > 0) {
        h->in_recv = true;
        ssize_t n =
            nghttp2_session_mem_recv(h->ses, (const uint8_t *)c->in.base + c->in.off, avail);
        h->in_recv = false;
        if (c->closing)
            return;
        if (n < 0) {
            wr_debug("h2: %s", nghttp2_strerror((int)n));
            if (n != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                nghttp2_session_terminate_session(h->ses, NGHTTP2_PROTOCOL_ERROR);
            ing__h2_flush(c);
            ing__conn_close(c);
            return;
        }
    }
    c->in.off = c->in.len = 0;
    ing__buf_release(c->w, &c->in);
    if (c->eof) {
        ing__conn_close(c);
        return;
    }
    if (c->tls != NULL)
        ing__tls_resume(c->tls); /* ciphertext left when the plaintext buffer was full */
    ing__h2_flush(c);
}

/* Drain: GOAWAY now; the connection closes when its last stream ended. */
void ing__h2_drain(struct ing_conn *c)
{
    struct ing_h2conn *h = c->h2;

    if (!h->goaway_sent) {
        h->goaway_sent = true;
        nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h->ses), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    /* Inside nghttp2's callbacks the flush waits for the outer call; either way the connection
     * closes from ing__h2_flush once the GOAWAY and the last responses are out. */
    ing__h2_flush(c);
}

/* The connection is closing: abort every stream (their upstream connections close). */
void ing__h2_close_streams(struct ing_conn *c)
{
    struct ing_h2conn *h = c->h2;

    if (h == NULL)
        return;
    while (!wr_list_empty(&h->streams)) {
        struct ing_req *r = WR_CONTAINER_OF(h->streams.next, struct ing_req, link);
        r->h2_closed = 1;
        ing__req_abort_h2(r);
    }
}

/* Frees the session, from the connection's close callback (after any write callback). */
void ing__h2_free(struct ing_conn *c)
{
    struct ing_h2conn *h = c->h2;

    if (h == NULL)
        return;
    ing__h2_close_streams(c);
    wr_list_remove(&h->dlink);
    nghttp2_session_del(h->ses);
    ing__buf_release(c->w, &h->out);
    c->h2 = NULL;
    free(h);
}

bool ing__h2_busy(struct ing_conn *c)
{
    return c->h2 != NULL && c->h2->n_streams > 0;
}

bool ing__h2_writing(struct ing_conn *c)
{
    return c->h2 != NULL && c->h2->writing;
}
