/* tests/tools/loadgen.c -- weir-test-load: a small load generator that checks every answer.
 *
 *   weir-test-load --connect 127.0.0.1:PORT [--host NAME] [--path /P] [--header "N: V"]...
 *                  [--keepalive N] [--close N] [--h2 N --streams M]
 *                  [--rate R] [--requests N] [--duration-ms D] [--origins a,b]
 *                  [--commands] [--tag] [--any-body]
 *
 * Three kinds of clients run at once on one libuv loop: HTTP/1.1 keep-alive connections
 * (--keepalive N, one request at a time each), HTTP/1.1 clients that open a new connection
 * for every request and send "Connection: close" (--close N; the server must answer with
 * "Connection: close" and close first), and HTTP/2 prior-knowledge (h2c) connections with up
 * to M streams each (--h2 N --streams M, nghttp2). --rate R paces the total to R requests/s
 * (0: as fast as the clients go); the run ends after --requests N requests were started or
 * --duration-ms D passed, whichever comes first, then waits for the requests in flight (at
 * most 10 s; those left count as "unfinished").
 *
 * Every answer is checked, the way weir-test-origin tells who answered: a 2xx must carry
 * exactly one X-Origin header, its value among --origins (when given), and the body
 * "hello from NAME\n" of that same origin (--any-body: any body, for routes such as
 * /slow/MS). Anything else is an identity error; a non-2xx status, a refused or reset
 * connection, a premature EOF, an HTTP/2 RST_STREAM or a refused stream count as failures of
 * their own.
 *
 * --commands reads lines on stdin: "mark NAME" starts a new phase; "marked NAME" is printed on
 * stdout once every request of the earlier phases has ended. Requests are counted in the
 * phase in which they started, so every request of a phase started after whatever the
 * caller did before sending "mark NAME", and ended before whatever the caller does after
 * reading "marked" for the next mark. "stop" ends the run early. --tag appends
 * "lgphase=NAME&lgseq=N" to each request's query, so origin logs can be matched up.
 *
 * At the end one JSON document goes to stdout on one line: {"elapsed_s", "connections",
 * "connect_errors", "idle_closes", "goaways", "phases": [{"name", "started", "ok", "non2xx",
 * "conn_errors", "identity_errors", "unfinished", "by_kind", "by_origin", "by_kind_origin",
 * "statuses", "errors"}], "total"}. "errors" keeps the first few failure descriptions. The
 * exit code is 0 unless the arguments were wrong or the loop failed: judging the figures is
 * the caller's business.
 */
#include <sys/socket.h>

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#define LG_MAX_PHASES  256
#define LG_MAX_NAMES   16
#define LG_MAX_ERRS    8
#define LG_MAX_HEADERS 16
#define LG_MAX_HEAD    65536 /* a response head larger than that is an error */
#define LG_READ_MIN    16384
#define LG_BODY_KEEP   256 /* body bytes kept for the identity check */
#define LG_GRACE_MS    10000
#define LG_TICK_MS     1

enum lg_kind { K_KEEPALIVE, K_CLOSE, K_H2, K_N };

static const char *const kind_name[K_N] = {"h1_keepalive", "h1_close", "h2c"};

struct lg_stats {
    uint64_t started, ok, non2xx, conn_errors, identity_errors, unfinished;
    uint64_t ok_by_kind[K_N];
    uint64_t by_name[K_N][LG_MAX_NAMES];
    uint64_t status[600];
    unsigned n_errs;
    char errs[LG_MAX_ERRS][160];
};

struct lg_phase {
    char name[64];
    struct lg_stats st;
    uint64_t inflight; /* requests of this phase not answered yet */
};

/* What one answer carried, for check_answer(). */
struct lg_answer {
    int status;
    unsigned n_origin;
    char origin[64];
    char body[LG_BODY_KEEP];
    size_t body_len;
};

/* An HTTP/2 request in flight (stream user data). */
struct lg_h2req {
    struct lg_h2req *next, *prev;
    unsigned phase;
    struct lg_answer a;
};

struct lg_client {
    enum lg_kind kind;
    uv_tcp_t tcp;
    uv_connect_t connect;
    bool open; /* tcp initialised and not closed */
    bool connected;
    bool closing;
    bool busy;      /* HTTP/1.1: a request is in flight */
    bool await_eof; /* HTTP/1.1 close client: answer read, waiting for the server's FIN */
    unsigned phase; /* HTTP/1.1: the phase the request in flight started in */
    char *in;       /* HTTP/1.1 received bytes */
    size_t in_len, in_cap;
    nghttp2_session *ses; /* HTTP/2 */
    unsigned streams;     /* HTTP/2 streams in flight */
    bool goaway;
    struct lg_h2req reqs; /* HTTP/2 list head of the requests in flight */
};

struct lg_write {
    uv_write_t req;
    char data[];
};

#define WRITE_OF(r) ((struct lg_write *)(void *)((char *)(r)-offsetof(struct lg_write, req)))

static struct {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    const char *host, *path;
    bool tag;        /* --tag */
    bool body_check; /* not --any-body */
    uint64_t seq;    /* --tag serial */
    const char *hdr_name[LG_MAX_HEADERS], *hdr_value[LG_MAX_HEADERS];
    unsigned n_hdrs;
    char *req_keep, *req_close; /* prebuilt HTTP/1.1 requests */
    size_t req_keep_len, req_close_len;
    unsigned n_names;
    char *names[LG_MAX_NAMES];
    bool names_fixed; /* --origins given: other names are identity errors */
    struct lg_client *clients;
    unsigned n_clients, rr, max_streams;
    double rate, credit;
    uint64_t max_requests, duration_ms, started, inflight, connections, connect_errors;
    uint64_t idle_closes, goaways;
    uint64_t t0, last_tick;
    bool stopping, done;
    bool ack_pending; /* a "mark" waits for the requests of the earlier phases to end */
    uv_timer_t tick, grace;
    uv_pipe_t in;
    bool in_open;
    char cmd[256];
    size_t cmd_len;
    struct lg_phase phases[LG_MAX_PHASES];
    unsigned n_phases;
} g;

static void client_close(struct lg_client *c);
static void dispatch(void);
static void maybe_finish(void);

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        fprintf(stderr, "weir-test-load: out of memory\n");
        abort();
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL) {
        fprintf(stderr, "weir-test-load: out of memory\n");
        abort();
    }
    return p;
}

/* ---- accounting ---- */

static void add_err(struct lg_stats *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_err(struct lg_stats *st, const char *fmt, ...)
{
    va_list ap;

    if (st->n_errs >= LG_MAX_ERRS)
        return;
    va_start(ap, fmt);
    vsnprintf(st->errs[st->n_errs++], sizeof(st->errs[0]), fmt, ap);
    va_end(ap);
}

static unsigned start_request(void)
{
    g.started++;
    g.inflight++;
    g.phases[g.n_phases - 1].st.started++;
    g.phases[g.n_phases - 1].inflight++;
    return g.n_phases - 1;
}

/* Acknowledges the last "mark" once no request of an earlier phase is in flight any more. */
static void ack_mark(void)
{
    if (!g.ack_pending)
        return;
    for (unsigned i = 0; i + 1 < g.n_phases; i++)
        if (g.phases[i].inflight > 0)
            return;
    g.ack_pending = false;
    printf("marked %s\n", g.phases[g.n_phases - 1].name);
    fflush(stdout);
}

static void end_request(unsigned phase)
{
    g.inflight--;
    g.phases[phase].inflight--;
    ack_mark();
}

static void conn_error(unsigned phase, enum lg_kind kind, const char *what)
{
    struct lg_stats *st = &g.phases[phase].st;

    st->conn_errors++;
    add_err(st, "%s: %s", kind_name[kind], what);
    end_request(phase);
}

static int name_index(const char *name)
{
    for (unsigned i = 0; i < g.n_names; i++)
        if (strcmp(g.names[i], name) == 0)
            return (int)i;
    if (g.names_fixed || g.n_names >= LG_MAX_NAMES)
        return -1;
    g.names[g.n_names] = strdup(name);
    return (int)g.n_names++;
}

/* Judges one complete answer: 2xx from exactly one known origin, with its own body. */
static void check_answer(unsigned phase, enum lg_kind kind, const struct lg_answer *a)
{
    struct lg_stats *st = &g.phases[phase].st;
    char want[128];

    end_request(phase);
    if (a->status >= 100 && a->status < 600)
        st->status[a->status]++;
    if (a->status < 200 || a->status > 299) {
        st->non2xx++;
        add_err(st, "%s: status %d", kind_name[kind], a->status);
        return;
    }
    if (a->n_origin != 1) {
        st->identity_errors++;
        add_err(st, "%s: %u X-Origin headers", kind_name[kind], a->n_origin);
        return;
    }
    int idx = name_index(a->origin);
    if (idx < 0) {
        st->identity_errors++;
        add_err(st, "%s: unexpected X-Origin \"%s\"", kind_name[kind], a->origin);
        return;
    }
    int n = snprintf(want, sizeof(want), "hello from %s\n", a->origin);
    if (g.body_check && ((size_t)n != a->body_len || memcmp(want, a->body, a->body_len) != 0)) {
        st->identity_errors++;
        add_err(st, "%s: X-Origin %s but body \"%.*s\"", kind_name[kind], a->origin,
                (int)(a->body_len > 40 ? 40 : a->body_len), a->body);
        return;
    }
    st->ok++;
    st->ok_by_kind[kind]++;
    st->by_name[kind][idx]++;
}

/* ---- output ---- */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_stats(const struct lg_stats *st)
{
    printf("\"started\": %llu, \"ok\": %llu, \"non2xx\": %llu, \"conn_errors\": %llu, "
           "\"identity_errors\": %llu, \"unfinished\": %llu, \"by_kind\": {",
           (unsigned long long)st->started, (unsigned long long)st->ok,
           (unsigned long long)st->non2xx, (unsigned long long)st->conn_errors,
           (unsigned long long)st->identity_errors, (unsigned long long)st->unfinished);
    for (unsigned k = 0; k < K_N; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", kind_name[k],
               (unsigned long long)st->ok_by_kind[k]);
    printf("}, \"by_origin\": {");
    for (unsigned i = 0; i < g.n_names; i++) {
        uint64_t n = 0;
        for (unsigned k = 0; k < K_N; k++)
            n += st->by_name[k][i];
        printf("%s", i ? ", " : "");
        json_str(g.names[i]);
        printf(": %llu", (unsigned long long)n);
    }
    printf("}, \"by_kind_origin\": {");
    for (unsigned k = 0; k < K_N; k++) {
        printf("%s\"%s\": {", k ? ", " : "", kind_name[k]);
        for (unsigned i = 0; i < g.n_names; i++) {
            printf("%s", i ? ", " : "");
            json_str(g.names[i]);
            printf(": %llu", (unsigned long long)st->by_name[k][i]);
        }
        printf("}");
    }
    printf("}, \"statuses\": {");
    bool first = true;
    for (unsigned s = 0; s < 600; s++) {
        if (st->status[s] == 0)
            continue;
        printf("%s\"%u\": %llu", first ? "" : ", ", s, (unsigned long long)st->status[s]);
        first = false;
    }
    printf("}, \"errors\": [");
    for (unsigned i = 0; i < st->n_errs; i++) {
        printf("%s", i ? ", " : "");
        json_str(st->errs[i]);
    }
    printf("]");
}

static void stats_add(struct lg_stats *t, const struct lg_stats *s)
{
    t->started += s->started;
    t->ok += s->ok;
    t->non2xx += s->non2xx;
    t->conn_errors += s->conn_errors;
    t->identity_errors += s->identity_errors;
    t->unfinished += s->unfinished;
    for (unsigned k = 0; k < K_N; k++)
        t->ok_by_kind[k] += s->ok_by_kind[k];
    for (unsigned k = 0; k < K_N; k++)
        for (unsigned i = 0; i < LG_MAX_NAMES; i++)
            t->by_name[k][i] += s->by_name[k][i];
    for (unsigned i = 0; i < 600; i++)
        t->status[i] += s->status[i];
    for (unsigned i = 0; i < s->n_errs && t->n_errs < LG_MAX_ERRS; i++)
        memcpy(t->errs[t->n_errs++], s->errs[i], sizeof(t->errs[0]));
}

static void report(void)
{
    struct lg_stats total = {0};

    printf("{\"elapsed_s\": %.3f, \"connections\": %llu, \"connect_errors\": %llu, "
           "\"idle_closes\": %llu, \"goaways\": %llu, \"phases\": [",
           (double)(uv_hrtime() - g.t0) / 1e9, (unsigned long long)g.connections,
           (unsigned long long)g.connect_errors, (unsigned long long)g.idle_closes,
           (unsigned long long)g.goaways);
    for (unsigned i = 0; i < g.n_phases; i++) {
        printf("%s{\"name\": ", i ? ", " : "");
        json_str(g.phases[i].name);
        printf(", ");
        print_stats(&g.phases[i].st);
        printf("}");
        stats_add(&total, &g.phases[i].st);
    }
    printf("], \"total\": {");
    print_stats(&total);
    printf("}}\n");
    fflush(stdout);
}

/* ---- connections ---- */

static void on_closed(uv_handle_t *h)
{
    struct lg_client *c = h->data;

    c->open = c->closing = c->connected = false;
    c->await_eof = c->goaway = false;
    c->in_len = 0;
    if (c->ses != NULL) {
        nghttp2_session_del(c->ses);
        c->ses = NULL;
    }
    if (g.stopping)
        maybe_finish();
    else
        dispatch();
}

/* Fails whatever is in flight on <c> with <what> and closes it. */
static void client_fail(struct lg_client *c, const char *what)
{
    if (c->busy) {
        c->busy = false;
        conn_error(c->phase, c->kind, what);
    }
    while (c->reqs.next != &c->reqs) {
        struct lg_h2req *r = c->reqs.next;
        r->next->prev = r->prev;
        r->prev->next = r->next;
        conn_error(r->phase, K_H2, what);
        free(r);
        c->streams--;
    }
    client_close(c);
}

static void client_close(struct lg_client *c)
{
    if (!c->open || c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status)
{
    struct lg_write *w = WRITE_OF(req);
    struct lg_client *c = req->data;

    free(w);
    if (status < 0 && status != UV_ECANCELED)
        client_fail(c, uv_strerror(status));
}

static void client_write(struct lg_client *c, const void *data, size_t len)
{
    struct lg_write *w = xmalloc(sizeof(*w) + len);

    memcpy(w->data, data, len);
    w->req.data = c;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(w);
        client_fail(c, "write failed");
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct lg_client *c = h->data;

    if (c->in_cap - c->in_len < LG_READ_MIN) {
        c->in_cap = c->in_cap ? c->in_cap * 2 : LG_READ_MIN * 2;
        char *p = realloc(c->in, c->in_cap);
        if (p == NULL)
            abort();
        c->in = p;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

/* ---- HTTP/1.1 ---- */

static bool header_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

static bool value_has_close(const char *v, size_t n)
{
    for (size_t i = 0; i + 5 <= n; i++)
        if (strncasecmp(v + i, "close", 5) == 0)
            return true;
    return false;
}

/* Parses one answer at the start of c->in. Returns its length when complete (filling <a> and
 * *close), 0 when more bytes are needed, -1 on a framing error (with <why>). */
static long h1_parse(struct lg_client *c, struct lg_answer *a, bool *close, const char **why)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);

    if (end == NULL) {
        if (c->in_len > LG_MAX_HEAD) {
            *why = "response head too large";
            return -1;
        }
        return 0;
    }
    size_t head_len = (size_t)(end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.", 7) != 0) {
        *why = "bad status line";
        return -1;
    }
    memset(a, 0, sizeof(*a));
    a->status = atoi(c->in + 9);
    long long cl = -1;
    *close = false;
    const char *p = memchr(c->in, '\n', head_len) + 1;
    while (p < c->in + head_len - 2) {
        const char *eol = memchr(p, '\r', (size_t)(c->in + head_len - p));
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL) {
            *why = "header line without a colon";
            return -1;
        }
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        size_t nlen = (size_t)(colon - p), vlen = (size_t)(eol - v);
        if (header_is(p, nlen, "content-length")) {
            cl = atoll(v);
        } else if (header_is(p, nlen, "transfer-encoding")) {
            *why = "transfer-encoding in the answer (not supported here)";
            return -1;
        } else if (header_is(p, nlen, "connection")) {
            *close = *close || value_has_close(v, vlen);
        } else if (header_is(p, nlen, "x-origin")) {
            if (a->n_origin++ == 0)
                snprintf(a->origin, sizeof(a->origin), "%.*s", (int)vlen, v);
        }
        p = eol + 2;
    }
    if (cl < 0) {
        *why = "answer without content-length";
        return -1;
    }
    if (c->in_len < head_len + (size_t)cl)
        return 0;
    a->body_len = (size_t)cl < LG_BODY_KEEP ? (size_t)cl : LG_BODY_KEEP;
    memcpy(a->body, c->in + head_len, a->body_len);
    return (long)(head_len + (size_t)cl);
}

static void h1_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct lg_client *c = s->data;
    struct lg_answer a;
    const char *why = NULL;
    bool close;

    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->await_eof) {
            c->await_eof = false;
        } else if (!c->busy) {
            g.idle_closes++;
        }
        client_fail(c, nread == UV_EOF ? "EOF before the answer" : uv_strerror((int)nread));
        return;
    }
    c->in_len += (size_t)nread;
    if (c->await_eof) {
        client_fail(c, "bytes after a Connection: close answer");
        return;
    }
    if (!c->busy) {
        client_fail(c, "unsolicited bytes");
        return;
    }
    long n = h1_parse(c, &a, &close, &why);
    if (n == 0)
        return;
    if (n < 0) {
        client_fail(c, why);
        return;
    }
    memmove(c->in, c->in + n, c->in_len - (size_t)n);
    c->in_len -= (size_t)n;
    c->busy = false;
    if (c->kind == K_CLOSE && !close) {
        conn_error(c->phase, c->kind, "no Connection: close on a Connection: close request");
        client_close(c);
        return;
    }
    check_answer(c->phase, c->kind, &a);
    if (c->in_len > 0) {
        client_fail(c, "bytes after the answer");
    } else if (close) {
        c->await_eof = true; /* the server closes first: its FIN ends the connection */
    }
    dispatch();
}

/* Queues <len> bytes (copied) on <c>; a failure fails the client. */
static void client_write(struct lg_client *c, const void *data, size_t len);

/* The request target: --path, plus with --tag the phase and a serial number, so that the
 * origins' request logs can be matched with the generator's phases. */
static const char *target(unsigned phase, char *buf, size_t len)
{
    if (!g.tag)
        return g.path;
    snprintf(buf, len, "%s%clgphase=%s&lgseq=%llu", g.path, strchr(g.path, '?') ? '&' : '?',
             g.phases[phase].name, (unsigned long long)g.seq++);
    return buf;
}

static void h1_send(struct lg_client *c)
{
    char buf[1024], tbuf[512];

    if (!g.tag) {
        if (c->kind == K_CLOSE)
            client_write(c, g.req_close, g.req_close_len);
        else
            client_write(c, g.req_keep, g.req_keep_len);
        return;
    }
    /* The prebuilt request with the tagged target in place of the path. */
    const char *req = c->kind == K_CLOSE ? g.req_close : g.req_keep;
    const char *rest = req + 4 + strlen(g.path);
    int n = snprintf(buf, sizeof(buf), "GET %s%s", target(c->phase, tbuf, sizeof(tbuf)), rest);
    client_write(c, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* ---- HTTP/2 ---- */

static void h2_flush(struct lg_client *c)
{
    const uint8_t *data;
    ssize_t n;

    while ((n = nghttp2_session_mem_send(c->ses, &data)) > 0) {
        client_write(c, data, (size_t)n);
        if (c->closing)
            return;
    }
    if (n < 0)
        client_fail(c, nghttp2_strerror((int)n));
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                        size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct lg_h2req *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

    if (r == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        r->a.status = atoi((const char *)value);
    } else if (nlen == 8 && memcmp(name, "x-origin", 8) == 0) {
        if (r->a.n_origin++ == 0)
            snprintf(r->a.origin, sizeof(r->a.origin), "%.*s", (int)vlen, (const char *)value);
    }
    return 0;
}

static int h2_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t len, void *arg)
{
    struct lg_h2req *r = nghttp2_session_get_stream_user_data(s, sid);

    if (r == NULL)
        return 0;
    size_t room = LG_BODY_KEEP - r->a.body_len;
    memcpy(r->a.body + r->a.body_len, data, len < room ? len : room);
    r->a.body_len += len < room ? len : room;
    return 0;
}

static int h2_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *arg)
{
    struct lg_client *c = arg;
    struct lg_h2req *r = nghttp2_session_get_stream_user_data(s, sid);
    char what[64];

    if (r == NULL)
        return 0;
    r->next->prev = r->prev;
    r->prev->next = r->next;
    c->streams--;
    if (code != NGHTTP2_NO_ERROR) {
        snprintf(what, sizeof(what), "stream reset: %s", nghttp2_http2_strerror(code));
        conn_error(r->phase, K_H2, what);
    } else {
        check_answer(r->phase, K_H2, &r->a);
    }
    free(r);
    return 0;
}

static int h2_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct lg_client *c = arg;

    if (f->hd.type == NGHTTP2_GOAWAY && !c->goaway) {
        c->goaway = true;
        g.goaways++;
    }
    return 0;
}

static void h2_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct lg_client *c = s->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->streams == 0 && !c->goaway)
            g.idle_closes++;
        client_fail(c, nread == UV_EOF ? "EOF with streams open" : uv_strerror((int)nread));
        return;
    }
    ssize_t rc = nghttp2_session_mem_recv(c->ses, (const uint8_t *)c->in, (size_t)nread);
    if (rc < 0) {
        client_fail(c, nghttp2_strerror((int)rc));
        return;
    }
    h2_flush(c);
    if (c->open && !c->closing && c->goaway && c->streams == 0)
        client_close(c);
    dispatch();
}

static void h2_start(struct lg_client *c)
{
    nghttp2_session_callbacks *cb;

    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2_on_frame);
    nghttp2_session_client_new(&c->ses, cb, c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->ses, NGHTTP2_FLAG_NONE, iv, 2);
    h2_flush(c);
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value)
{
    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void h2_request(struct lg_client *c)
{
    nghttp2_nv nv[4 + LG_MAX_HEADERS];
    struct lg_h2req *r = xcalloc(1, sizeof(*r));
    char tbuf[512];

    r->phase = start_request();
    nv_set(&nv[0], ":method", "GET");
    nv_set(&nv[1], ":scheme", "http");
    nv_set(&nv[2], ":authority", g.host);
    nv_set(&nv[3], ":path", target(r->phase, tbuf, sizeof(tbuf)));
    for (unsigned i = 0; i < g.n_hdrs; i++)
        nv_set(&nv[4 + i], g.hdr_name[i], g.hdr_value[i]);
    if (nghttp2_submit_request(c->ses, NULL, nv, 4 + g.n_hdrs, NULL, r) < 0) {
        conn_error(r->phase, K_H2, "nghttp2_submit_request failed");
        free(r);
        return;
    }
    r->next = &c->reqs;
    r->prev = c->reqs.prev;
    r->prev->next = r;
    c->reqs.prev = r;
    c->streams++;
    h2_flush(c);
}

/* ---- dispatch ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct lg_client *c = req->data;

    if (c->closing)
        return;
    if (status < 0) {
        g.connect_errors++;
        client_fail(c, uv_strerror(status));
        return;
    }
    c->connected = true;
    g.connections++;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, c->kind == K_H2 ? h2_on_read : h1_on_read);
    if (c->kind == K_H2)
        h2_start(c);
    else if (c->busy)
        h1_send(c);
    dispatch();
}

static void client_connect(struct lg_client *c)
{
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    c->open = true;
    int rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&g.addr, on_connect);
    if (rc < 0)
        client_fail(c, uv_strerror(rc));
}

/* Starts one request on <c> if it can take one now; returns true if it did. */
static bool client_try(struct lg_client *c)
{
    if (c->closing)
        return false;
    if (c->kind == K_H2) {
        if (!c->open && !c->closing)
            client_connect(c);
        if (!c->connected || c->goaway || c->streams >= g.max_streams)
            return false;
        h2_request(c);
        return true;
    }
    if (c->busy || c->await_eof)
        return false;
    c->busy = true;
    c->phase = start_request();
    if (!c->open)
        client_connect(c); /* the request goes out once connected */
    else
        h1_send(c);
    return true;
}

static bool may_start(void)
{
    if (g.stopping)
        return false;
    if (g.max_requests > 0 && g.started >= g.max_requests)
        return false;
    return g.rate <= 0 || g.credit >= 1.0;
}

/* Starts requests on the clients in turn while the pace allows and one is free. */
static void dispatch(void)
{
    unsigned idle = 0;

    if (g.stopping) {
        maybe_finish();
        return;
    }
    while (may_start() && idle < g.n_clients) {
        struct lg_client *c = &g.clients[g.rr];
        g.rr = (g.rr + 1) % g.n_clients;
        if (client_try(c)) {
            idle = 0;
            if (g.rate > 0)
                g.credit -= 1.0;
        } else {
            idle++;
        }
    }
}

static void on_grace(uv_timer_t *t)
{
    /* Whatever is still in flight will not be waited for any longer. */
    for (unsigned i = 0; i < g.n_clients; i++) {
        struct lg_client *c = &g.clients[i];
        if (c->busy) {
            c->busy = false;
            g.phases[c->phase].st.unfinished++;
            end_request(c->phase);
        }
        while (c->reqs.next != &c->reqs) {
            struct lg_h2req *r = c->reqs.next;
            r->next->prev = r->prev;
            r->prev->next = r->next;
            g.phases[r->phase].st.unfinished++;
            end_request(r->phase);
            free(r);
            c->streams--;
        }
    }
    maybe_finish();
}

/* Once stopping and nothing is in flight: close everything; report after the last close. */
static void maybe_finish(void)
{
    if (g.inflight > 0 || g.done)
        return;
    bool any_open = false;
    for (unsigned i = 0; i < g.n_clients; i++) {
        if (g.clients[i].open) {
            any_open = true;
            client_close(&g.clients[i]);
        }
    }
    if (any_open)
        return; /* on_closed() calls back */
    g.done = true;
    uv_timer_stop(&g.grace);
    uv_close((uv_handle_t *)&g.grace, NULL);
    uv_close((uv_handle_t *)&g.tick, NULL);
    if (g.in_open) {
        g.in_open = false;
        uv_close((uv_handle_t *)&g.in, NULL);
    }
    report();
}

static void stop(void)
{
    if (g.stopping)
        return;
    g.stopping = true;
    uv_timer_stop(&g.tick);
    uv_timer_start(&g.grace, on_grace, LG_GRACE_MS, 0);
    if (g.in_open)
        uv_read_stop((uv_stream_t *)&g.in);
    maybe_finish();
}

static void on_tick(uv_timer_t *t)
{
    uint64_t now = uv_hrtime();

    if (g.duration_ms > 0 && now - g.t0 >= g.duration_ms * 1000000ull) {
        stop();
        return;
    }
    if (g.rate > 0) {
        /* At most 50 ms of backlog: a stalled server gets a burst, not the whole debt. */
        double cap = g.rate * 0.05 + 1.0;
        g.credit += g.rate * (double)(now - g.last_tick) / 1e9;
        if (g.credit > cap)
            g.credit = cap;
    }
    g.last_tick = now;
    dispatch();
    if (g.max_requests > 0 && g.started >= g.max_requests)
        stop();
}

/* ---- commands on stdin ---- */

static void command(const char *line)
{
    if (strncmp(line, "mark ", 5) == 0) {
        if (g.n_phases >= LG_MAX_PHASES) {
            fprintf(stderr, "weir-test-load: too many phases\n");
            return;
        }
        snprintf(g.phases[g.n_phases].name, sizeof(g.phases[0].name), "%.63s", line + 5);
        g.n_phases++;
        g.ack_pending = true;
        ack_mark();
    } else if (strcmp(line, "stop") == 0) {
        stop();
    } else if (line[0] != '\0') {
        fprintf(stderr, "weir-test-load: unknown command \"%s\"\n", line);
    }
}

static void on_cmd_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    *buf = uv_buf_init(g.cmd + g.cmd_len, (unsigned)(sizeof(g.cmd) - 1 - g.cmd_len));
}

static void on_cmd(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        uv_read_stop(s); /* the caller went away: the duration bound still ends the run */
        return;
    }
    g.cmd_len += (size_t)nread;
    char *nl;
    while ((nl = memchr(g.cmd, '\n', g.cmd_len)) != NULL) {
        *nl = '\0';
        command(g.cmd);
        size_t used = (size_t)(nl - g.cmd) + 1;
        memmove(g.cmd, nl + 1, g.cmd_len - used);
        g.cmd_len -= used;
    }
    if (g.cmd_len == sizeof(g.cmd) - 1)
        g.cmd_len = 0; /* an overlong line: dropped */
}

/* ---- setup ---- */

static void usage(void)
{
    fprintf(stderr, "usage: weir-test-load --connect HOST:PORT [--host NAME] [--path /P] "
                    "[--header 'N: V']... [--keepalive N] [--close N] [--h2 N] [--streams M] "
                    "[--rate R] [--requests N] [--duration-ms D] [--origins a,b] [--commands] "
                    "[--tag] [--any-body]\n");
    exit(2);
}

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(s, ':');

    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    int port = atoi(colon + 1);
    if (s[0] == '[') {
        snprintf(host, sizeof(host), "%.*s", (int)(colon - s - 2), s + 1);
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

static char *build_request(bool close)
{
    size_t cap = 256 + strlen(g.path) + strlen(g.host);
    for (unsigned i = 0; i < g.n_hdrs; i++)
        cap += strlen(g.hdr_name[i]) + strlen(g.hdr_value[i]) + 4;
    char *p = xmalloc(cap);
    int n = snprintf(p, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n", g.path, g.host);
    for (unsigned i = 0; i < g.n_hdrs; i++)
        n += snprintf(p + n, cap - (size_t)n, "%s: %s\r\n", g.hdr_name[i], g.hdr_value[i]);
    snprintf(p + n, cap - (size_t)n, "%s\r\n", close ? "Connection: close\r\n" : "");
    return p;
}

static void add_header(const char *arg)
{
    const char *colon = strchr(arg, ':');

    if (colon == NULL || g.n_hdrs >= LG_MAX_HEADERS)
        usage();
    char *name = strndup(arg, (size_t)(colon - arg));
    for (char *p = name; *p != '\0'; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p); /* HTTP/2 wants lower case */
    const char *v = colon + 1;
    while (*v == ' ')
        v++;
    g.hdr_name[g.n_hdrs] = name;
    g.hdr_value[g.n_hdrs++] = v;
}

static void add_origins(const char *arg)
{
    char *list = strdup(arg);

    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save))
        if (g.n_names < LG_MAX_NAMES)
            g.names[g.n_names++] = strdup(tok);
    g.names_fixed = true;
    free(list);
}

int main(int argc, char **argv)
{
    unsigned n_kind[K_N] = {0};
    const char *connect = NULL;
    bool commands = false;

    g.host = "localhost";
    g.body_check = true;
    g.path = "/";
    g.max_streams = 1;
    g.duration_ms = 60000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--commands") == 0) {
            commands = true;
            continue;
        }
        if (strcmp(a, "--tag") == 0) {
            g.tag = true;
            continue;
        }
        if (strcmp(a, "--any-body") == 0) {
            g.body_check = false;
            continue;
        }
        if (v == NULL)
            usage();
        i++;
        if (strcmp(a, "--connect") == 0)
            connect = v;
        else if (strcmp(a, "--host") == 0)
            g.host = v;
        else if (strcmp(a, "--path") == 0)
            g.path = v;
        else if (strcmp(a, "--header") == 0)
            add_header(v);
        else if (strcmp(a, "--keepalive") == 0)
            n_kind[K_KEEPALIVE] = (unsigned)atoi(v);
        else if (strcmp(a, "--close") == 0)
            n_kind[K_CLOSE] = (unsigned)atoi(v);
        else if (strcmp(a, "--h2") == 0)
            n_kind[K_H2] = (unsigned)atoi(v);
        else if (strcmp(a, "--streams") == 0)
            g.max_streams = (unsigned)atoi(v);
        else if (strcmp(a, "--rate") == 0)
            g.rate = atof(v);
        else if (strcmp(a, "--requests") == 0)
            g.max_requests = strtoull(v, NULL, 10);
        else if (strcmp(a, "--duration-ms") == 0)
            g.duration_ms = strtoull(v, NULL, 10);
        else if (strcmp(a, "--origins") == 0)
            add_origins(v);
        else
            usage();
    }
    g.n_clients = n_kind[K_KEEPALIVE] + n_kind[K_CLOSE] + n_kind[K_H2];
    if (connect == NULL || parse_addr(connect, &g.addr) != 0 || g.n_clients == 0 ||
        g.max_streams == 0 || (g.duration_ms == 0 && g.max_requests == 0))
        usage();

    signal(SIGPIPE, SIG_IGN);
    g.loop = uv_default_loop();
    g.req_keep = build_request(false);
    g.req_keep_len = strlen(g.req_keep);
    g.req_close = build_request(true);
    g.req_close_len = strlen(g.req_close);
    /* Interleave the kinds so that the pacing spreads requests over all of them. */
    g.clients = xcalloc(g.n_clients, sizeof(*g.clients));
    unsigned left[K_N] = {n_kind[0], n_kind[1], n_kind[2]}, n = 0;
    while (n < g.n_clients)
        for (unsigned k = 0; k < K_N; k++)
            if (left[k] > 0) {
                left[k]--;
                g.clients[n].kind = (enum lg_kind)k;
                g.clients[n].reqs.next = g.clients[n].reqs.prev = &g.clients[n].reqs;
                n++;
            }
    snprintf(g.phases[0].name, sizeof(g.phases[0].name), "start");
    g.n_phases = 1;
    uv_timer_init(g.loop, &g.tick);
    uv_timer_init(g.loop, &g.grace);
    if (commands) {
        uv_pipe_init(g.loop, &g.in, 0);
        if (uv_pipe_open(&g.in, 0) < 0 ||
            uv_read_start((uv_stream_t *)&g.in, on_cmd_alloc, on_cmd) < 0) {
            fprintf(stderr, "weir-test-load: --commands needs stdin to be a pipe\n");
            return 2;
        }
        g.in_open = true;
    }
    g.t0 = g.last_tick = uv_hrtime();
    g.credit = 1.0;
    uv_timer_start(&g.tick, on_tick, LG_TICK_MS, LG_TICK_MS);
    fprintf(stderr, "weir-test-load: running\n");
    uv_run(g.loop, UV_RUN_DEFAULT);
    return g.done ? 0 : 1;
}
