/* ingress/ing_tls.c -- TLS over libuv streams with OpenSSL and a custom BIO, for client
 * connections (server side) and upstream connections (client side) alike.
 *
 * Ciphertext read from the socket lands in t->cin; the BIO's read callback hands it to OpenSSL
 * (one copy, into OpenSSL's record buffer), and SSL_read decrypts straight into the owner's
 * plaintext buffer (*t->plain), where the HTTP code parses it as it would a plain
 * connection's bytes. Writes encrypt into t->cout, which goes to the socket with uv_try_write
 * and, when the socket is full, one uv_write; ciphertext produced meanwhile waits in t->cnext.
 *
 * Decrypting more is deferred to an idle callback (the worker's pump queue) whenever it is asked
 * for from inside request processing, so the HTTP code is never re-entered.
 *
 * Memory: buffers are taken only while bytes are in them; OpenSSL's own record buffers are
 * released between records (SSL_MODE_RELEASE_BUFFERS), so an idle TLS connection keeps only the
 * SSL object.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ing_priv.h"

struct ing_tls {
    SSL *ssl;
    struct ing_worker *w;
    uv_stream_t *stream;
    struct ing_buf *plain; /* where decrypted bytes go (the owner's input buffer) */
    const struct ing_tls_ops *ops;
    void *owner;
    struct xds_listener_tls *pin; /* server side: the listener TLS its SSL_CTX belongs to */
    struct ing_buf cin;           /* ciphertext received, not yet given to OpenSSL */
    struct ing_buf cout;          /* ciphertext being written */
    struct ing_buf cnext;         /* ciphertext produced while cout is being written */
    uv_write_t *wreq;             /* only while a write is queued: idle connections stay small */
    uv_write_t *user_req;         /* a caller's write waiting for its bytes to be flushed */
    uv_write_cb user_cb;
    struct wr_list pump_link; /* w->tls_pumpq */
    bool writing;
    bool handshake_done;
    bool failed;
};

/* ---- the BIO ---- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *b, char *out, int len)
{
    struct ing_tls *t = BIO_get_data(b);
    uint32_t avail = t->cin.len - t->cin.off;

    BIO_clear_retry_flags(b);
    if (avail == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    uint32_t n = WR_MIN(avail, (uint32_t)len);
    memcpy(out, t->cin.base + t->cin.off, n);
    t->cin.off += n;
    return (int)n;
}

static bool buf_append(struct ing_worker *w, struct ing_buf *b, const void *data, size_t n)
{
    if (b->base == NULL) {
        size_t cap = n <= ING_BLOCK_SIZE ? ING_BLOCK_SIZE : n + ING_BLOCK_SIZE;
        b->base = cap == ING_BLOCK_SIZE ? ing__block_get(w) : malloc(cap);
        if (b->base == NULL)
            return false;
        b->cap = (uint32_t)cap;
        b->off = b->len = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = (size_t)b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        char *nb = malloc(cap);
        uint32_t len = b->len, off = b->off;
        if (nb == NULL)
            return false;
        memcpy(nb, b->base, len);
        ing__buf_release(w, b);
        b->base = nb;
        b->len = len;
        b->off = off;
        b->cap = (uint32_t)cap;
    }
    memcpy(b->base + b->len, data, n);
    b->len += (uint32_t)n;
    return true;
}

static int bio_write(BIO *b, const char *data, int len)
{
    struct ing_tls *t = BIO_get_data(b);
    struct ing_buf *dst = t->writing ? &t->cnext : &t->cout;

    BIO_clear_retry_flags(b);
    if (!buf_append(t->w, dst, data, (size_t)len)) {
        t->failed = true;
        return -1;
    }
    return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "weir-uv");
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

/* ---- writing ciphertext ---- */

static void flush(struct ing_tls *t);

static void on_tls_written(uv_write_t *wr, int status)
{
    struct ing_tls *t = wr->data;
    struct ing_worker *w = t->w;

    ing__wreq_put(w, t->wreq);
    t->wreq = NULL;
    t->writing = false;
    ing__buf_release(w, &t->cout);
    if (status < 0) {
        t->failed = true;
        if (status != UV_ECANCELED)
            t->ops->fail(t->owner);
    } else {
        t->cout = t->cnext;
        memset(&t->cnext, 0, sizeof(t->cnext));
        flush(t);
    }
    if (!t->writing && t->user_cb != NULL) {
        uv_write_cb cb = t->user_cb;
        uv_write_t *req = t->user_req;
        t->user_cb = NULL;
        t->user_req = NULL;
        cb(req, t->failed ? UV_ECONNRESET : 0);
    }
}

/* Sends t->cout: synchronously when the socket takes it, else with one uv_write. */
static void flush(struct ing_tls *t)
{
    struct ing_worker *w = t->w;

    if (t->writing || t->cout.base == NULL)
        return;
    uv_buf_t b = uv_buf_init(t->cout.base + t->cout.off, t->cout.len - t->cout.off);
    if (t->wreq == NULL) {
        t->wreq = ing__wreq_get(w);
        if (t->wreq == NULL) {
            t->failed = true;
            ing__buf_release(w, &t->cout);
            return;
        }
        t->wreq->data = t;
    }
    int rc = ing__send(t->stream, t->wreq, &b, 1, on_tls_written);
    if (rc != 0) { /* not queued: the request is free again */
        ing__wreq_put(w, t->wreq);
        t->wreq = NULL;
    }
    if (rc < 0) {
        t->failed = true;
        ing__buf_release(w, &t->cout);
        return;
    }
    if (rc == 0) {
        t->writing = true;
        return;
    }
    ing__buf_release(w, &t->cout);
}

int ing__tls_write(struct ing_tls *t, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len == 0)
            continue;
        int k = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        if (k <= 0 || t->failed) {
            ERR_clear_error();
            return UV_EPROTO;
        }
    }
    flush(t);
    if (t->failed)
        return UV_ECONNRESET;
    if (!t->writing)
        return 1;
    t->user_req = req;
    t->user_cb = cb;
    return 0;
}

/* ---- reading ---- */

void ing__tls_alloc(struct ing_tls *t, uv_buf_t *buf)
{
    if (t->cin.base == NULL) {
        t->cin.base = ing__block_get(t->w);
        t->cin.cap = t->cin.base ? ING_BLOCK_SIZE : 0;
        t->cin.off = t->cin.len = 0;
    } else if (t->cin.off == t->cin.len) {
        t->cin.off = t->cin.len = 0;
    } else if (t->cin.len == t->cin.cap && t->cin.off > 0) {
        memmove(t->cin.base, t->cin.base + t->cin.off, t->cin.len - t->cin.off);
        t->cin.len -= t->cin.off;
        t->cin.off = 0;
    }
    buf->base = t->cin.base ? t->cin.base + t->cin.len : NULL;
    buf->len = t->cin.base ? t->cin.cap - t->cin.len : 0;
}

struct ing_buf *ing__tls_cin(struct ing_tls *t)
{
    return &t->cin;
}

/* Server side, TLS 1.3 resumption: issues one new ticket, as a full handshake does. The ticket
 * callback (xds_tls.c) renews only tickets of a retired key, so without this a resumed
 * connection sends none, and a client that keeps its sessions in an OpenSSL client cache (wrk,
 * curl) falls back to a full handshake on every other connection: OpenSSL's client drops a
 * TLS 1.3 session from its cache once it has been used (tickets are meant to be used once). */
static void renew_ticket(struct ing_tls *t)
{
    if (!SSL_is_server(t->ssl) || !SSL_session_reused(t->ssl) ||
        SSL_version(t->ssl) < TLS1_3_VERSION)
        return;
    if (SSL_new_session_ticket(t->ssl) == 1)
        SSL_do_handshake(t->ssl); /* writes the ticket now, ahead of the response */
    ERR_clear_error();
}

/* Decrypts what is buffered into *t->plain. Returns the plaintext bytes added (>= 0), -1 when
 * the connection must close (handshake or record error), -2 at close_notify. */
static long decrypt(struct ing_tls *t)
{
    struct ing_buf *in = t->plain;
    long got = 0;

    if (!t->handshake_done) {
        int rc = SSL_do_handshake(t->ssl);
        flush(t);
        if (rc != 1) {
            int e = SSL_get_error(t->ssl, rc);
            ERR_clear_error();
            return e == SSL_ERROR_WANT_READ && !t->failed ? 0 : -1;
        }
        t->handshake_done = true;
        renew_ticket(t);
        if (t->ops->handshake(t->owner) != 0)
            return -1;
    }
    for (;;) {
        if (in->base == NULL) {
            in->base = ing__block_get(t->w);
            if (in->base == NULL)
                return -1;
            in->cap = ING_BLOCK_SIZE;
            in->off = in->len = 0;
        }
        if (in->len == in->cap)
            break; /* the HTTP side must consume first */
        int n = SSL_read(t->ssl, in->base + in->len, (int)(in->cap - in->len));
        if (n > 0) {
            in->len += (uint32_t)n;
            got += n;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        ERR_clear_error();
        flush(t); /* a read may produce output (tickets, key updates, alerts) */
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN)
            return got ? got : -2;
        return -1;
    }
    flush(t);
    return t->failed ? -1 : got;
}

/* After new ciphertext or freed plaintext space: decrypt and hand the bytes to the owner. */
static void pump(struct ing_tls *t)
{
    long rc = decrypt(t);

    if (t->cin.base != NULL && t->cin.off == t->cin.len)
        ing__buf_release(t->w, &t->cin);
    if (rc == -1) {
        t->ops->fail(t->owner);
        return;
    }
    t->ops->input(t->owner, rc);
}

void ing__tls_read(struct ing_tls *t, ssize_t nread)
{
    t->cin.len += (uint32_t)nread;
    pump(t);
}

/* ---- deferred pumping ---- */

static void on_pump_idle(uv_idle_t *h)
{
    struct ing_worker *w = WR_CONTAINER_OF(h, struct ing_worker, tls_pump);

    while (!wr_list_empty(&w->tls_pumpq)) {
        struct ing_tls *t = WR_CONTAINER_OF(w->tls_pumpq.next, struct ing_tls, pump_link);
        wr_list_remove(&t->pump_link);
        if (!uv_is_closing((uv_handle_t *)t->stream))
            pump(t);
    }
    uv_idle_stop(h);
}

/* Called when the owner made room: decrypt what OpenSSL or t->cin still hold. */
void ing__tls_resume(struct ing_tls *t)
{
    if ((t->cin.base == NULL || t->cin.off == t->cin.len) && SSL_pending(t->ssl) == 0)
        return;
    if (!wr_list_empty(&t->pump_link))
        return;
    wr_list_insert_tail(&t->w->tls_pumpq, &t->pump_link);
    uv_idle_start(&t->w->tls_pump, on_pump_idle);
}

/* ---- lifetime ---- */

struct ing_tls *ing__tls_new(void *ssl_ctx, bool server, const char *sni, struct ing_worker *w,
                             uv_stream_t *stream, struct ing_buf *plain,
                             const struct ing_tls_ops *ops, void *owner)
{
    struct ing_tls *t = calloc(1, sizeof(*t));

    pthread_once(&bio_once, bio_method_init);
    if (t == NULL)
        return NULL;
    t->w = w;
    t->stream = stream;
    t->plain = plain;
    t->ops = ops;
    t->owner = owner;
    wr_list_init(&t->pump_link);
    t->ssl = SSL_new(ssl_ctx);
    BIO *bio = t->ssl ? BIO_new(bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio);
    if (server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (sni != NULL) {
            SSL_set_tlsext_host_name(t->ssl, sni);
            if (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER)
                SSL_set1_host(t->ssl, sni);
        }
    }
    return t;
}

/* Client side: sends the ClientHello (the handshake then goes on as bytes arrive). */
void ing__tls_connect(struct ing_tls *t)
{
    pump(t);
}

/* Sends close_notify if it can without waiting (best effort, before the socket closes). */
void ing__tls_shutdown(struct ing_tls *t)
{
    if (t == NULL || !t->handshake_done || t->failed || t->writing)
        return;
    if (SSL_shutdown(t->ssl) >= 0)
        flush(t);
    ERR_clear_error();
}

void ing__tls_free(struct ing_tls *t)
{
    if (t == NULL)
        return;
    wr_list_remove(&t->pump_link);
    if (t->wreq != NULL)
        ing__wreq_put(t->w, t->wreq);
    ing__buf_release(t->w, &t->cin);
    ing__buf_release(t->w, &t->cout);
    ing__buf_release(t->w, &t->cnext);
    SSL_free(t->ssl);
    xds_listener_tls_unref(t->pin);
    free(t);
}

void ing__tls_pin(struct ing_tls *t, struct xds_listener_tls *cfg)
{
    t->pin = xds_listener_tls_ref(cfg);
}

bool ing__tls_alpn_h2(struct ing_tls *t)
{
    const unsigned char *p;
    unsigned int n;

    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

void *ing__tls_ssl(struct ing_tls *t)
{
    return t->ssl;
}
