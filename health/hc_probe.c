/* health/hc_probe.c -- one active check on one connection: connect, optional TLS (OpenSSL over
 * memory BIOs, driven by libuv reads and writes), then the check protocol (hc_http.c,
 * hc_grpc.c, or the TCP check below) until it gives a verdict, then close -- or, after a pass
 * whose protocol says the connection can carry another request (HTTP/1.1 keep-alive), keep it.
 *
 * Kept connections. A probe kept after its check is parked in its record (rec->idle,
 * p->owner): it gives its slot back (an idle connection does not count against
 * HC_MAX_INFLIGHT), keeps reading so that a close by the server is noticed at once, and is
 * closed if the server sends anything while idle. The record's next check takes it back
 * (hc__probe_start), with a fresh snapshot reference, the TLS session as it was, and the slot
 * again. If that connection turns out dead before any answer (write error, EOF or reset before
 * a response byte: the server closed it while idle), the check is retried once on a new
 * connection within the same check and timeout, so an idle timeout on the server never makes a
 * check fail. The record closes its kept connection when its check settings change, when it
 * is removed and when the manager closes (rec_stop()); any failure or timeout closes the
 * connection it happened on.
 *
 * A probe owns one handle (its uv_tcp_t) and is freed in its close callback. It holds a
 * reference on the snapshot it started under, so the check settings and the address it reads
 * stay valid whatever reloads happen meanwhile. Its timeout is its record's timer (hc_manager.c):
 * a probe that outlives its record's interest is cancelled, which closes it without a verdict.
 * Received bytes are read into the manager's one read buffer: libuv calls the read callback
 * right after the allocation callback, and every protocol consumes or copies the bytes before
 * it returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "hc_priv.h"

struct hc_wreq {
    uv_write_t req;
    struct hc_probe *p;
    char data[];
};

/* Step result of a check on a reused connection found dead before any answer: retry. */
enum { HC_RETRY = HC_FAIL + 1 };

static void probe_close(struct hc_probe *p);
static struct hc_probe *probe_connect(struct hc_manager *m, struct hc_ep *rec, SSL_CTX *ctx,
                                      char *why, size_t whylen);

static void on_probe_closed(uv_handle_t *h)
{
    struct hc_probe *p = WR_CONTAINER_OF(h, struct hc_probe, tcp);
    struct hc_manager *m = p->m;
    bool slot = p->holds_slot;

    p->ops->dispose(p);
    SSL_free(p->ssl);
    xds_snapshot_unref(p->snap);
    free(p);
    if (slot)
        hc__manager_slot_freed(m);
    hc__manager_handle_closed(m);
}

/* A connection whose check is over is closed with a reset (SO_LINGER 0), as HAProxy does for
 * its checks: no FIN exchange and no TIME_WAIT socket left behind for each check, which at a
 * thousand checks a second is most of their cost. Only when bytes we sent may not have arrived
 * yet (a TCP check that sends and expects nothing) is the close graceful, because a reset
 * would discard them. */
static void probe_close(struct hc_probe *p)
{
    if (p->closing)
        return;
    p->closing = true;
    if (p->connected && !p->unconfirmed &&
        uv_tcp_close_reset(&p->tcp, (uv_close_cb)on_probe_closed) == 0)
        return;
    uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
}

/* The verdict: reported to the record (if it still waits for one), then the probe closes, or
 * is kept idle in the record when the check passed and its protocol allows another request. */
static void finish(struct hc_probe *p, bool ok)
{
    struct hc_ep *rec = p->rec;

    if (p->done)
        return;
    p->done = true;
    p->rec = NULL;
    if (rec == NULL) {
        probe_close(p);
        return;
    }
    rec->probe = NULL;
    if (ok && p->ops->reusable != NULL && p->ops->reusable(p) && !p->m->closing &&
        rec->idle == NULL) {
        p->owner = rec;
        rec->idle = p;
        p->holds_slot = false;
        hc__manager_slot_freed(p->m);
    } else {
        probe_close(p);
    }
    hc__ep_probe_done(rec, ok, ok ? "" : p->why);
}

/* The kept connection <p> died before answering this check: close it and run the check again
 * on a new connection, which takes over its slot (the record's timeout keeps running). */
static void retry(struct hc_probe *p)
{
    struct hc_ep *rec = p->rec;
    struct hc_manager *m = p->m;
    char why[160];

    SSL_CTX *ctx = p->ssl != NULL ? SSL_get_SSL_CTX(p->ssl) : NULL; /* the same settings */

    p->done = true;
    p->rec = NULL;
    p->holds_slot = false;
    m->inflight--; /* taken again by probe_connect() at once: no queued check can slip in */
    if (rec == NULL) {
        probe_close(p);
        return;
    }
    rec->probe = NULL;
    probe_close(p); /* p and its SSL (holding ctx) are freed in the close callback, later */
    if (probe_connect(m, rec, ctx, why, sizeof(why)) == NULL)
        hc__ep_probe_done(rec, false, why);
}

static void step(struct hc_probe *p, int rc)
{
    if (rc == HC_RETRY)
        retry(p);
    else if (rc != HC_MORE)
        finish(p, rc == HC_PASS);
}

/* A read or write error, or the end of the stream before the protocol's own end: a reused
 * connection that did not answer this check yet is retried, anything else fails. */
static int dead(struct hc_probe *p)
{
    return p->reused && !p->answered ? HC_RETRY : HC_FAIL;
}

void hc__probe_cancel(struct hc_probe *p)
{
    p->rec = NULL;
    p->done = true;
    probe_close(p);
}

void hc__probe_drop_idle(struct hc_ep *rec)
{
    struct hc_probe *p = rec->idle;

    if (p == NULL)
        return;
    rec->idle = NULL;
    p->owner = NULL;
    probe_close(p);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void on_write(uv_write_t *w, int status)
{
    struct hc_wreq *r = WR_CONTAINER_OF(w, struct hc_wreq, req);
    struct hc_probe *p = r->p;

    free(r);
    if (status < 0 && status != UV_ECANCELED && !p->done) {
        snprintf(p->why, sizeof(p->why), "write: %s", uv_strerror(status));
        step(p, dead(p));
    }
}

/* Writes at once what the socket takes, and queues a copy of the rest. */
static int raw_write(struct hc_probe *p, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&p->tcp, &b, 1);

    if (n == (int)len)
        return 0;
    if (n < 0 && n != UV_EAGAIN) {
        snprintf(p->why, sizeof(p->why), "write: %s", uv_strerror(n));
        return -1;
    }
    n = WR_MAX(n, 0);
    struct hc_wreq *r = wr_xmalloc(sizeof(*r) + len - (size_t)n);
    r->p = p;
    memcpy(r->data, data + n, len - (size_t)n);
    b = uv_buf_init(r->data, (unsigned)(len - (size_t)n));
    int rc = uv_write(&r->req, (uv_stream_t *)&p->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(r);
        snprintf(p->why, sizeof(p->why), "write: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void tls_why(struct hc_probe *p, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    long vr = SSL_get_verify_result(p->ssl);

    if (vr != X509_V_OK)
        snprintf(p->why, sizeof(p->why), "%s: certificate: %s", what,
                 X509_verify_cert_error_string(vr));
    else if (e != 0)
        snprintf(p->why, sizeof(p->why), "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(p->why, sizeof(p->why), "%s failed", what);
    ERR_clear_error();
}

/* Moves what OpenSSL produced to the socket. */
static int tls_flush(struct hc_probe *p)
{
    BIO *wbio = SSL_get_wbio(p->ssl);
    char buf[16384];
    int n;

    while (BIO_ctrl_pending(wbio) > 0 && (n = BIO_read(wbio, buf, sizeof(buf))) > 0)
        if (raw_write(p, buf, (size_t)n) < 0)
            return -1;
    return 0;
}

int hc__probe_send(struct hc_probe *p, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    p->unconfirmed = true;
    if (p->ssl == NULL)
        return raw_write(p, data, len);
    ERR_clear_error();
    if (SSL_write(p->ssl, data, (int)len) <= 0) {
        tls_why(p, "TLS write");
        return -1;
    }
    return tls_flush(p);
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Feeds ciphertext; runs the handshake, then hands plaintext to the protocol. */
static int tls_input(struct hc_probe *p, const char *d, size_t n)
{
    char *buf = p->m->rbuf;
    int rc;

    if (n > 0 && BIO_write(SSL_get_rbio(p->ssl), d, (int)n) != (int)n) {
        snprintf(p->why, sizeof(p->why), "TLS: out of memory");
        return HC_FAIL;
    }
    ERR_clear_error();
    if (!p->tls_done) {
        rc = SSL_do_handshake(p->ssl);
        if (rc != 1) {
            if (SSL_get_error(p->ssl, rc) != SSL_ERROR_WANT_READ) {
                tls_why(p, "TLS handshake");
                return HC_FAIL;
            }
            return tls_flush(p) < 0 ? HC_FAIL : HC_MORE;
        }
        p->tls_done = true;
        if (tls_flush(p) < 0)
            return HC_FAIL;
        if ((rc = p->ops->start(p)) != HC_MORE)
            return rc;
    }
    for (;;) {
        int k = SSL_read(p->ssl, buf, HC_READ_BUF);
        if (k > 0) {
            p->answered = true;
            if ((rc = p->ops->data(p, buf, (size_t)k)) != HC_MORE)
                return rc;
            continue;
        }
        int e = SSL_get_error(p->ssl, k);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN)
            return p->reused && !p->answered ? HC_RETRY : p->ops->eof(p);
        tls_why(p, "TLS read");
        return HC_FAIL;
    }
    return tls_flush(p) < 0 ? HC_FAIL : HC_MORE;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct hc_probe *p = WR_CONTAINER_OF(h, struct hc_probe, tcp);

    *buf = uv_buf_init(p->m->rbuf, HC_READ_BUF);
}

/* Bytes on a kept idle connection: TLS records that carry no data (TLS 1.3 session tickets)
 * are taken in; anything else (data, close_notify, EOF, an error) ends the connection. */
static bool idle_input(struct hc_probe *p, ssize_t nread, const char *d)
{
    if (nread <= 0 || p->ssl == NULL)
        return false;
    if (BIO_write(SSL_get_rbio(p->ssl), d, (int)nread) != (int)nread)
        return false;
    ERR_clear_error();
    int k = SSL_read(p->ssl, p->m->rbuf, HC_READ_BUF);
    bool keep = k <= 0 && SSL_get_error(p->ssl, k) == SSL_ERROR_WANT_READ;
    ERR_clear_error();
    return keep && tls_flush(p) == 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hc_probe *p = WR_CONTAINER_OF(s, struct hc_probe, tcp);

    if (nread == 0)
        return;
    if (p->owner != NULL) {
        if (!idle_input(p, nread, buf->base))
            hc__probe_drop_idle(p->owner);
        return;
    }
    if (p->done)
        return;
    if (nread > 0) {
        p->unconfirmed = false; /* the peer answers: it read what it answers to */
        if (p->ssl != NULL) {
            step(p, tls_input(p, buf->base, (size_t)nread));
            return;
        }
        p->answered = true;
        step(p, p->ops->data(p, buf->base, (size_t)nread));
        return;
    }
    if (nread == UV_EOF && (p->ssl == NULL || p->tls_done)) {
        step(p, p->reused && !p->answered ? HC_RETRY : p->ops->eof(p));
        return;
    }
    if (nread == UV_EOF)
        snprintf(p->why, sizeof(p->why), "TLS handshake: connection closed");
    else
        snprintf(p->why, sizeof(p->why), "read: %s", uv_strerror((int)nread));
    step(p, dead(p));
}

/* ---- connecting ----------------------------------------------------------------------------- */

static void on_connect(uv_connect_t *creq, int status)
{
    struct hc_probe *p = WR_CONTAINER_OF(creq, struct hc_probe, creq);

    if (status == UV_ECANCELED || p->done)
        return;
    if (status < 0) {
        snprintf(p->why, sizeof(p->why), "connect: %s", uv_strerror(status));
        finish(p, false);
        return;
    }
    p->connected = true;
    if (uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read) < 0) {
        snprintf(p->why, sizeof(p->why), "cannot read");
        finish(p, false);
        return;
    }
    step(p, p->ssl != NULL ? tls_input(p, NULL, 0) : p->ops->start(p));
}

const char *hc__probe_server_name(const struct hc_probe *p)
{
    if (p->c->tls.sni != NULL)
        return p->c->tls.sni;
    if (p->hc->type == XDS_HC_HTTP && p->hc->host != NULL)
        return p->hc->host;
    return NULL;
}

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];

    return uv_inet_pton(AF_INET, s, tmp) == 0 || uv_inet_pton(AF_INET6, s, tmp) == 0;
}

/* The endpoint's IP as text, for certificate checks when no name is configured. */
static void endpoint_ip(const struct hc_probe *p, char *out, size_t outlen)
{
    const struct sockaddr *sa = (const struct sockaddr *)&p->ep->ss;

    out[0] = '\0';
    if (sa->sa_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)sa, out, outlen);
    else if (sa->sa_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)sa, out, outlen);
}

static void tls_setup(struct hc_probe *p, SSL_CTX *ctx)
{
    const char *name = hc__probe_server_name(p);
    bool verify = SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE;
    char ip[64];

    p->ssl = SSL_new(ctx);
    if (p->ssl == NULL)
        abort();
    SSL_set_bio(p->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(p->ssl);
    if (name != NULL && !is_ip_literal(name))
        SSL_set_tlsext_host_name(p->ssl, name);
    if (p->hc->type == XDS_HC_GRPC)
        SSL_set_alpn_protos(p->ssl, (const unsigned char *)"\x02h2", 3);
    else if (p->hc->type == XDS_HC_HTTP)
        SSL_set_alpn_protos(p->ssl, (const unsigned char *)"\x08http/1.1", 9);
    if (!verify)
        return;
    if (name == NULL) {
        endpoint_ip(p, ip, sizeof(ip));
        name = ip;
    }
    if (is_ip_literal(name))
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(p->ssl), name);
    else
        SSL_set1_host(p->ssl, name);
}

SSL_CTX *hc__tls_ctx(struct hc_manager *m, const struct xds_cluster *c, char *why, size_t whylen)
{
    const char *ca = (c->tls.enabled && c->tls.verify) ? c->tls.ca_file : NULL;
    struct hc_tlsctx *t;

    for (t = m->tls; t != NULL; t = t->next)
        if (ca == NULL ? t->ca_file == NULL : (t->ca_file != NULL && strcmp(ca, t->ca_file) == 0))
            return t->ctx;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        abort();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, ca != NULL ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (ca != NULL && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        /* Not cached: a fixed file is picked up by the next check. */
        snprintf(why, whylen, "TLS: cannot load ca_file %s", ca);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    t = wr_xcalloc(1, sizeof(*t));
    t->ca_file = ca != NULL ? wr_xstrdup(ca) : NULL;
    t->ctx = ctx;
    t->next = m->tls;
    m->tls = t;
    return ctx;
}

/* Takes <rec>'s kept connection for a new check: the current snapshot's settings, a fresh
 * protocol state, the slot again, and the request sent at once. Returns false when it cannot
 * even send (the connection is dead): then it is closed and the caller connects anew. */
static bool probe_reuse(struct hc_manager *m, struct hc_ep *rec)
{
    struct hc_probe *p = rec->idle;
    struct xds_snapshot *old = p->snap;

    rec->idle = NULL;
    p->owner = NULL;
    p->ops->dispose(p);
    memset(&p->u, 0, sizeof(p->u));
    p->snap = xds_snapshot_ref(m->snap);
    xds_snapshot_unref(old);
    p->c = rec->c; /* same check settings as its last check: a change drops the connection */
    p->ep = rec->ep;
    p->hc = &rec->c->hc;
    p->done = false;
    p->reused = true;
    p->answered = false;
    p->why[0] = '\0';
    p->holds_slot = true;
    m->inflight++;
    if (p->ops->start(p) != HC_MORE) {
        /* Nothing reached the server: close it; the new connection takes over the slot. */
        p->done = true;
        p->holds_slot = false;
        m->inflight--;
        probe_close(p);
        return false;
    }
    p->rec = rec;
    rec->probe = p;
    return true;
}

int hc__probe_start(struct hc_manager *m, struct hc_ep *rec, char *why, size_t whylen)
{
    const struct xds_cluster *c = rec->c;
    SSL_CTX *ctx = NULL;

    if (rec->idle != NULL && probe_reuse(m, rec))
        return 0;
    /* The check speaks TLS when it says so, and also when the cluster does: a plain check of a
     * TLS port could only fail. */
    if ((c->hc.tls || c->tls.enabled) && (ctx = hc__tls_ctx(m, c, why, whylen)) == NULL)
        return -1;
    return probe_connect(m, rec, ctx, why, whylen) != NULL ? 0 : -1;
}

/* A check on a new connection (TLS with <ctx> when not NULL). */
static struct hc_probe *probe_connect(struct hc_manager *m, struct hc_ep *rec, SSL_CTX *ctx,
                                      char *why, size_t whylen)
{
    const struct xds_cluster *c = rec->c;
    struct hc_probe *p = wr_xcalloc(1, sizeof(*p));

    p->m = m;
    p->snap = xds_snapshot_ref(m->snap);
    p->c = c;
    p->ep = rec->ep;
    p->hc = &c->hc;
    p->ops = c->hc.type == XDS_HC_HTTP   ? &hc__proto_http
             : c->hc.type == XDS_HC_GRPC ? &hc__proto_grpc
                                         : &hc__proto_tcp;
    if (ctx != NULL)
        tls_setup(p, ctx);
    uv_tcp_init(m->loop, &p->tcp);
    p->holds_slot = true;
    m->inflight++;
    m->handles++;
    int rc = uv_tcp_connect(&p->creq, &p->tcp, (const struct sockaddr *)&p->ep->ss, on_connect);
    if (rc < 0) {
        snprintf(why, whylen, "connect: %s", uv_strerror(rc));
        p->done = true;
        probe_close(p);
        return NULL;
    }
    p->rec = rec;
    rec->probe = p;
    return p;
}

/* ---- the TCP check -------------------------------------------------------------------------- */

/* Passes once connected (and the TLS handshake done) when nothing is expected, else once the
 * expected bytes arrived, wherever they are in the stream. */
static int tcp_start(struct hc_probe *p)
{
    struct hc_tcp_check *t = &p->u.tcp;

    if (p->hc->expect != NULL) {
        t->want = true;
        hc__match_init(&t->mt, p->hc->expect, strlen(p->hc->expect));
    }
    if (p->hc->send != NULL && hc__probe_send(p, p->hc->send, strlen(p->hc->send)) < 0)
        return HC_FAIL;
    return t->want ? HC_MORE : HC_PASS;
}

static int tcp_data(struct hc_probe *p, const char *d, size_t n)
{
    return hc__match_feed(&p->u.tcp.mt, d, n) ? HC_PASS : HC_MORE;
}

static int tcp_eof(struct hc_probe *p)
{
    snprintf(p->why, sizeof(p->why), "connection closed before \"%.40s\" was received",
             p->hc->expect);
    return HC_FAIL;
}

static void tcp_dispose(struct hc_probe *p)
{
    hc__match_dispose(&p->u.tcp.mt);
}

const struct hc_proto hc__proto_tcp = {tcp_start, tcp_data, tcp_eof, tcp_dispose, NULL};
