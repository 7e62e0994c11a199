/* tests/tools/origin.c -- weir-test-origin: a small HTTP/1.1 origin for the integration tests.
 *
 *   weir-test-origin --listen 127.0.0.1:PORT [--name NAME]      ([::1]:PORT for IPv6)
 *
 * Prints "listening" on stdout once bound, then one line per request it answers
 * ("request conn=C req=R METHOD TARGET body_len=N"), so a test can see what reached it.
 * One thread, one libuv loop. Keep-alive and pipelining: requests on a connection are
 * answered strictly one after the other; while a response streams or waits, the connection
 * is not read (backpressure on the client instead of buffering). Request bodies
 * (Content-Length or chunked) are consumed as they arrive and never stored whole.
 *
 * Every response carries X-Origin: NAME, X-Origin-Conn: <serial of the connection, from 1>
 * and X-Origin-Req: <request number on that connection, from 1>. Routes (a keyword may
 * follow any prefix, so /api/echo echoes and /split/bytes/10 streams):
 *
 *   .../echo...          200 JSON {name, method, target, path, query, version, headers,
 *                        body_len, body (first 64 KiB, bytes >= 0x80 as \u00XX), conn, req}
 *   .../status/N         status N with a short body (none for 204/304); a 1xx N is sent as an
 *                        interim response followed by a 200
 *   .../bytes/N[?chunked=1]  N body bytes, 64 KiB pieces, each written after the previous
 *                        ones completed; byte i is '\n' when i % 64 == 63, else 'x'
 *   .../sink             reads the body, answers {"body_len": N}
 *   .../slow/MS          waits MS milliseconds, then 200 "slow\n"
 *   .../die[?rst=1]      200 head with Content-Length: 1000, 10 body bytes, then FIN (or RST)
 *   .../garbage          "HTTP/1.1 2OO OK\r\n\r\n", then close
 *   .../ws               101 on Connection: Upgrade + Upgrade: websocket, then echoes bytes
 *   .../healthz          200 "ok"
 *   .../close            200 with Connection: close, then close
 *   anything else        200 "hello from NAME\n"
 */
#include <sys/socket.h>

#include <ctype.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#define ORG_PIECE       (64 * 1024)   /* streamed body piece */
#define ORG_READ_SIZE   (64 * 1024)   /* read buffer growth step */
#define ORG_MAX_HEAD    (1024 * 1024) /* larger request heads get 431 */
#define ORG_MAX_HEADERS 512
#define ORG_MAX_LINE    4096 /* chunk-size and trailer lines */
#define ORG_ECHO_BODY   (64 * 1024)
#define ORG_INFLIGHT    2 /* writes in flight while streaming */

enum org_state {
    ST_HEAD = 0,  /* waiting for a request head */
    ST_BODY_CL,   /* reading <body_left> bytes */
    ST_CHUNK_LEN, /* reading a chunk-size line */
    ST_CHUNK_DATA,
    ST_CHUNK_CRLF,
    ST_TRAILERS,
    ST_ECHO, /* after a 101: raw byte echo */
};

struct org_header {
    char *name;
    char *value;
};

/* The request being read or answered; strings point into <head> (NUL-terminated in place). */
struct org_req {
    char *head;
    char *method;
    char *target;
    char *path; /* own copy: target without query (and without scheme://authority) */
    char *query;
    char *version;
    struct org_header headers[ORG_MAX_HEADERS];
    unsigned nheaders;
    bool keep_alive;
    bool head_only;    /* HEAD: no body in the answer */
    uint64_t body_len; /* bytes of body read so far */
    char *body;        /* first ORG_ECHO_BODY bytes, for /echo */
    size_t body_stored;
    bool store_body;
};

struct org_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uint64_t serial;
    unsigned nreq;
    char *buf; /* unparsed input */
    size_t len, cap;
    enum org_state state;
    uint64_t body_left; /* Content-Length or chunk bytes still to read */
    struct org_req req;
    bool busy; /* a response is streaming or waiting: do not parse further input */
    bool reading;
    bool eof;
    bool want_close;  /* close once every queued write has completed */
    bool close_reset; /* ... with RST instead of FIN */
    bool closing;
    bool in_parse; /* conn_parse() is on the stack: it goes on with the next request itself */
    int pending_closes;
    unsigned writes;     /* writes in flight */
    uint64_t bytes_left; /* /bytes streaming state */
    bool bytes_chunked;
    bool bytes_active;
};

struct org_write {
    uv_write_t req;
    char *owned; /* freed when the write completes */
};

/* A growable string for building answers. Allocation failures abort: this is a test tool. */
struct org_str {
    char *p;
    size_t len, cap;
};

static const char *g_name = "origin";
static uint64_t g_serial;
static uv_loop_t *g_loop;
static char g_pattern[ORG_PIECE];

static void conn_process(struct org_conn *c);
static void conn_finish(struct org_conn *c);

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        fprintf(stderr, "weir-test-origin: out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "weir-test-origin: out of memory\n");
        abort();
    }
    return p;
}

static void str_reserve(struct org_str *s, size_t extra)
{
    if (s->len + extra + 1 <= s->cap)
        return;
    while (s->len + extra + 1 > s->cap)
        s->cap = s->cap ? s->cap * 2 : 256;
    s->p = xrealloc(s->p, s->cap);
}

static void str_add(struct org_str *s, const char *p, size_t n)
{
    str_reserve(s, n);
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void str_printf(struct org_str *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void str_printf(struct org_str *s, const char *fmt, ...)
{
    char probe[1];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(probe, sizeof(probe), fmt, ap);
    va_end(ap);
    str_reserve(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* Appends <p, n> as a JSON string. Bytes >= 0x80 are escaped as \u00XX (read as Latin-1) so
 * the document stays valid UTF-8 whatever the client sent. */
static void str_json(struct org_str *s, const char *p, size_t n)
{
    str_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];

        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            str_add(s, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            str_printf(s, "\\u%04x", ch);
        } else {
            str_add(s, (const char *)&ch, 1);
        }
    }
    str_add(s, "\"", 1);
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* ---- connection lifetime -------------------------------------------------------------- */

static void req_reset(struct org_req *r)
{
    free(r->head);
    free(r->path);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static void on_handle_closed(uv_handle_t *h)
{
    struct org_conn *c = h->data;

    if (--c->pending_closes > 0)
        return;
    req_reset(&c->req);
    free(c->buf);
    free(c);
}

/* The single close path: idempotent; memory is released in on_handle_closed only. */
static void conn_close(struct org_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->close_reset && uv_tcp_close_reset(&c->tcp, on_handle_closed) == 0)
        return;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

/* Closes once the queued writes are out (uv_close would cancel them). */
static void conn_finish(struct org_conn *c)
{
    c->want_close = true;
    if (c->writes == 0)
        conn_close(c);
}

static void bytes_pump(struct org_conn *c);

static void on_written(uv_write_t *req, int status)
{
    struct org_write *w = (struct org_write *)req;
    struct org_conn *c = req->data;

    free(w->owned);
    free(w);
    c->writes--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->bytes_active) {
        bytes_pump(c);
        return;
    }
    if (c->want_close && c->writes == 0) {
        conn_close(c);
        return;
    }
    if (c->state == ST_ECHO && !c->reading && c->writes < ORG_INFLIGHT)
        conn_process(c);
}

/* Queues <bufs>; <owned> (may be NULL) is freed when the write completes. */
static void conn_send(struct org_conn *c, uv_buf_t *bufs, unsigned nbufs, char *owned)
{
    if (c->closing) {
        free(owned);
        return;
    }
    struct org_write *w = xmalloc(sizeof(*w));
    w->owned = owned;
    w->req.data = c;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_written) != 0) {
        free(owned);
        free(w);
        conn_close(c);
        return;
    }
    c->writes++;
}

static void conn_send_str(struct org_conn *c, struct org_str *s)
{
    uv_buf_t b = uv_buf_init(s->p, (unsigned)s->len);

    conn_send(c, &b, 1, s->p);
    s->p = NULL;
}

/* Starts a response head with the origin's identity headers; the caller adds its own headers
 * and the blank line. */
static void head_begin(struct org_conn *c, struct org_str *s, int status)
{
    str_printf(s, "HTTP/1.1 %d %s\r\nX-Origin: %s\r\nX-Origin-Conn: %" PRIu64 "\r\n", status,
               reason(status), g_name, c->serial);
    str_printf(s, "X-Origin-Req: %u\r\n", c->nreq);
}

/* Sends a complete answer with a Content-Length body and ends the request. */
static void respond(struct org_conn *c, int status, const char *ctype, const char *body,
                    size_t body_len, const char *extra)
{
    struct org_str s = {0};
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);

    head_begin(c, &s, status);
    if (!no_body)
        str_printf(&s, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, body_len);
    if (extra != NULL)
        str_add(&s, extra, strlen(extra));
    if (!c->req.keep_alive)
        str_add(&s, "Connection: close\r\n", 19);
    str_add(&s, "\r\n", 2);
    if (!no_body && !c->req.head_only)
        str_add(&s, body, body_len);
    conn_send_str(c, &s);
}

/* The current request is answered: go on with the next one, or close. */
static void request_done(struct org_conn *c)
{
    bool keep = c->req.keep_alive;

    c->busy = false;
    c->state = ST_HEAD;
    req_reset(&c->req);
    if (!keep || c->eof) {
        conn_finish(c);
        return;
    }
    if (!c->in_parse)
        conn_process(c);
}

static void respond_error(struct org_conn *c, int status, const char *body)
{
    c->req.keep_alive = false;
    c->req.head_only = false;
    respond(c, status, "text/plain", body, strlen(body), NULL);
    conn_finish(c);
}

/* ---- routes ------------------------------------------------------------------------------ */

static const char *header_get(const struct org_req *r, const char *name)
{
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

/* True when the comma-separated header <name> lists <token> (case-insensitive). */
static bool header_has_token(const struct org_req *r, const char *name, const char *token)
{
    size_t tlen = strlen(token);

    for (unsigned i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) != 0)
            continue;
        const char *p = r->headers[i].value;
        while (*p != '\0') {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *e = p;
            while (*e != '\0' && *e != ',')
                e++;
            const char *t = e;
            while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
                t--;
            if ((size_t)(t - p) == tlen && strncasecmp(p, token, tlen) == 0)
                return true;
            p = e;
        }
    }
    return false;
}

static bool path_ends_with(const char *path, const char *kw)
{
    size_t pl = strlen(path), kl = strlen(kw);

    return pl >= kl && strcmp(path + pl - kl, kw) == 0;
}

/* Returns the text after <kw> (e.g. "/bytes/") in <path>, or NULL. */
static const char *path_arg(const char *path, const char *kw)
{
    const char *p = strstr(path, kw);

    return p != NULL ? p + strlen(kw) : NULL;
}

static bool query_has(const struct org_req *r, const char *param)
{
    const char *q = r->query;
    size_t n = strlen(param);

    while (q != NULL && *q != '\0') {
        if (strncmp(q, param, n) == 0 && (q[n] == '\0' || q[n] == '&'))
            return true;
        q = strchr(q, '&');
        if (q != NULL)
            q++;
    }
    return false;
}

static void route_echo(struct org_conn *c)
{
    struct org_req *r = &c->req;
    struct org_str s = {0};

    str_add(&s, "{\"name\": ", 9);
    str_json(&s, g_name, strlen(g_name));
    str_add(&s, ", \"method\": ", 12);
    str_json(&s, r->method, strlen(r->method));
    str_add(&s, ", \"target\": ", 12);
    str_json(&s, r->target, strlen(r->target));
    str_add(&s, ", \"path\": ", 10);
    str_json(&s, r->path, strlen(r->path));
    str_add(&s, ", \"query\": ", 11);
    str_json(&s, r->query, strlen(r->query));
    str_add(&s, ", \"version\": ", 13);
    str_json(&s, r->version, strlen(r->version));
    str_add(&s, ", \"headers\": [", 14);
    for (unsigned i = 0; i < r->nheaders; i++) {
        str_add(&s, i ? ", [" : "[", i ? 3 : 1);
        str_json(&s, r->headers[i].name, strlen(r->headers[i].name));
        str_add(&s, ", ", 2);
        str_json(&s, r->headers[i].value, strlen(r->headers[i].value));
        str_add(&s, "]", 1);
    }
    str_printf(&s, "], \"body_len\": %" PRIu64 ", \"body\": ", r->body_len);
    str_json(&s, r->body ? r->body : "", r->body_stored);
    str_printf(&s, ", \"conn\": %" PRIu64 ", \"req\": %u}\n", c->serial, c->nreq);
    respond(c, 200, "application/json", s.p, s.len, NULL);
    free(s.p);
    request_done(c);
}

static void bytes_pump(struct org_conn *c)
{
    while (c->bytes_left > 0 && c->writes < ORG_INFLIGHT && !c->closing) {
        size_t n = c->bytes_left < ORG_PIECE ? (size_t)c->bytes_left : ORG_PIECE;

        c->bytes_left -= n;
        if (c->bytes_chunked) {
            char *hdr = xmalloc(32);
            int hl = snprintf(hdr, 32, "%zx\r\n", n);
            uv_buf_t b[3] = {uv_buf_init(hdr, (unsigned)hl), uv_buf_init(g_pattern, (unsigned)n),
                             uv_buf_init("\r\n", 2)};
            conn_send(c, b, 3, hdr);
        } else {
            uv_buf_t b = uv_buf_init(g_pattern, (unsigned)n);
            conn_send(c, &b, 1, NULL);
        }
    }
    if (c->bytes_left > 0 || c->closing)
        return;
    c->bytes_active = false;
    if (c->bytes_chunked && !c->req.head_only) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        conn_send(c, &b, 1, NULL);
    }
    request_done(c);
}

static void route_bytes(struct org_conn *c, const char *arg)
{
    char *end;
    unsigned long long n = strtoull(arg, &end, 10);
    struct org_str s = {0};

    if (end == arg || (*end != '\0' && *end != '/')) {
        respond_error(c, 400, "bad byte count\n");
        return;
    }
    c->bytes_chunked = query_has(&c->req, "chunked=1");
    head_begin(c, &s, 200);
    str_add(&s, "Content-Type: application/octet-stream\r\n", 40);
    if (c->bytes_chunked)
        str_add(&s, "Transfer-Encoding: chunked\r\n", 28);
    else
        str_printf(&s, "Content-Length: %llu\r\n", n);
    if (!c->req.keep_alive)
        str_add(&s, "Connection: close\r\n", 19);
    str_add(&s, "\r\n", 2);
    conn_send_str(c, &s);
    c->bytes_left = c->req.head_only ? 0 : n;
    c->bytes_active = true;
    c->busy = true;
    bytes_pump(c);
}

static void on_slow_timer(uv_timer_t *t)
{
    struct org_conn *c = t->data;

    respond(c, 200, "text/plain", "slow\n", 5, NULL);
    request_done(c);
}

static void route_slow(struct org_conn *c, const char *arg)
{
    char *end;
    unsigned long ms = strtoul(arg, &end, 10);

    if (end == arg) {
        respond_error(c, 400, "bad delay\n");
        return;
    }
    c->busy = true;
    uv_timer_start(&c->timer, on_slow_timer, ms, 0);
}

static void route_status(struct org_conn *c, const char *arg)
{
    int status = atoi(arg);
    char body[64];

    if (status < 100 || status > 999) {
        respond_error(c, 400, "bad status\n");
        return;
    }
    if (status < 200 && status != 101) {
        struct org_str s = {0};
        /* An interim answer, then the final one: a lone 1xx would leave the client hanging. */
        head_begin(c, &s, status);
        str_add(&s, "\r\n", 2);
        conn_send_str(c, &s);
        status = 200;
    }
    int n = snprintf(body, sizeof(body), "status %d\n", status);
    respond(c, status, "text/plain", body, (size_t)n, NULL);
    request_done(c);
}

static void route_die(struct org_conn *c)
{
    struct org_str s = {0};

    head_begin(c, &s, 200);
    str_add(&s, "Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n0123456789", 60);
    conn_send_str(c, &s);
    c->close_reset = query_has(&c->req, "rst=1");
    c->busy = true;
    conn_finish(c);
}

static void route_garbage(struct org_conn *c)
{
    static char garbage[] = "HTTP/1.1 2OO OK\r\n\r\n";
    uv_buf_t b = uv_buf_init(garbage, sizeof(garbage) - 1);

    conn_send(c, &b, 1, NULL);
    c->busy = true;
    conn_finish(c);
}

static void route_ws(struct org_conn *c)
{
    struct org_str s = {0};

    if (!header_has_token(&c->req, "connection", "upgrade") ||
        !header_has_token(&c->req, "upgrade", "websocket")) {
        respond(c, 426, "text/plain", "upgrade required\n", 17, NULL);
        request_done(c);
        return;
    }
    head_begin(c, &s, 101);
    str_add(&s, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 43);
    conn_send_str(c, &s);
    req_reset(&c->req);
    c->state = ST_ECHO;
    if (!c->in_parse)
        conn_process(c);
}

static void route_default(struct org_conn *c)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "hello from %s\n", g_name);

    respond(c, 200, "text/plain", body, (size_t)n, NULL);
    request_done(c);
}

/* The request (head and body) has been read: answer it. */
static void dispatch(struct org_conn *c)
{
    struct org_req *r = &c->req;
    const char *path = r->path;
    const char *arg;

    printf("request conn=%" PRIu64 " req=%u %s %s body_len=%" PRIu64 "\n", c->serial, c->nreq,
           r->method, r->target, r->body_len);
    if (strstr(path, "/echo") != NULL) {
        route_echo(c);
    } else if ((arg = path_arg(path, "/status/")) != NULL) {
        route_status(c, arg);
    } else if ((arg = path_arg(path, "/bytes/")) != NULL) {
        route_bytes(c, arg);
    } else if ((arg = path_arg(path, "/slow/")) != NULL) {
        route_slow(c, arg);
    } else if (path_ends_with(path, "/sink")) {
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"body_len\": %" PRIu64 "}\n", r->body_len);
        respond(c, 200, "application/json", body, (size_t)n, NULL);
        request_done(c);
    } else if (path_ends_with(path, "/die")) {
        route_die(c);
    } else if (path_ends_with(path, "/garbage")) {
        route_garbage(c);
    } else if (path_ends_with(path, "/ws")) {
        route_ws(c);
    } else if (path_ends_with(path, "/healthz")) {
        respond(c, 200, "text/plain", "ok", 2, NULL);
        request_done(c);
    } else if (path_ends_with(path, "/close")) {
        r->keep_alive = false;
        respond(c, 200, "text/plain", "closing\n", 8, NULL);
        request_done(c);
    } else {
        route_default(c);
    }
}

/* ---- request parsing ----------------------------------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    return isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static char *split_path(const char *target, char **query)
{
    const char *p = target;

    /* absolute-form: skip scheme://authority */
    const char *scheme = strstr(p, "://");
    if (p[0] != '/' && scheme != NULL) {
        p = strchr(scheme + 3, '/');
        if (p == NULL)
            p = "/";
    }
    size_t n = strcspn(p, "?");
    char *path = xmalloc(n + 1);
    memcpy(path, p, n);
    path[n] = '\0';
    *query = p[n] == '?' ? (char *)p + n + 1 : (char *)p + n;
    return path;
}

/* Splits header lines of <head> (from <p>) in place. Returns 0, or -1 on a malformed line. */
static int parse_headers(struct org_req *r, char *p)
{
    while (*p != '\0') {
        char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            return -1;
        *eol = '\0';
        char *colon = strchr(p, ':');
        if (colon == NULL || colon == p || r->nheaders == ORG_MAX_HEADERS)
            return -1;
        *colon = '\0';
        for (char *n = p; *n != '\0'; n++) {
            if (!is_tchar((unsigned char)*n))
                return -1;
        }
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        r->headers[r->nheaders].name = p;
        r->headers[r->nheaders].value = v;
        r->nheaders++;
        p = eol + 2;
    }
    return 0;
}

/* Parses the head (<n> bytes, ending with CRLF CRLF) into c->req. Returns 0, or an HTTP
 * status to answer with. */
static int parse_head(struct org_conn *c, const char *data, size_t n)
{
    struct org_req *r = &c->req;

    req_reset(r);
    r->head = xmalloc(n + 1);
    memcpy(r->head, data, n);
    r->head[n - 2] = '\0'; /* keep one CRLF so every line ends in CRLF */
    if (memchr(data, '\0', n) != NULL)
        return 400;
    char *eol = strstr(r->head, "\r\n");
    *eol = '\0';
    r->method = r->head;
    r->target = strchr(r->method, ' ');
    if (r->target == NULL)
        return 400;
    *r->target++ = '\0';
    r->version = strchr(r->target, ' ');
    if (r->version == NULL)
        return 400;
    *r->version++ = '\0';
    if (*r->method == '\0' || *r->target == '\0' || strncmp(r->version, "HTTP/1.", 7) != 0)
        return 400;
    if (parse_headers(r, eol + 2) != 0)
        return 400;
    r->path = split_path(r->target, &r->query);
    r->head_only = strcmp(r->method, "HEAD") == 0;
    if (strcmp(r->version, "HTTP/1.0") == 0)
        r->keep_alive = header_has_token(r, "connection", "keep-alive");
    else
        r->keep_alive = !header_has_token(r, "connection", "close");
    r->store_body = strstr(r->path, "/echo") != NULL;
    return 0;
}

/* Chooses the body state from the parsed head. Returns 0, or a status to answer with. */
static int body_begin(struct org_conn *c)
{
    struct org_req *r = &c->req;
    const char *te = header_get(r, "transfer-encoding");
    const char *cl = header_get(r, "content-length");

    if (te != NULL) {
        if (cl != NULL || strcasecmp(te, "chunked") != 0)
            return 400;
        c->state = ST_CHUNK_LEN;
        return 0;
    }
    if (cl != NULL) {
        char *end;
        if (!isdigit((unsigned char)cl[0]))
            return 400;
        c->body_left = strtoull(cl, &end, 10);
        if (*end != '\0')
            return 400;
        c->state = c->body_left > 0 ? ST_BODY_CL : ST_HEAD;
        return 0;
    }
    c->state = ST_HEAD;
    return 0;
}

static void body_store(struct org_req *r, const char *p, size_t n)
{
    r->body_len += n;
    if (!r->store_body || r->body_stored >= ORG_ECHO_BODY)
        return;
    if (r->body == NULL)
        r->body = xmalloc(ORG_ECHO_BODY);
    size_t k = n < ORG_ECHO_BODY - r->body_stored ? n : ORG_ECHO_BODY - r->body_stored;
    memcpy(r->body + r->body_stored, p, k);
    r->body_stored += k;
}

/* Consumes chunked-body bytes from <p, n>. Returns bytes used, or -1 on a framing error. Sets
 * c->state to ST_HEAD when the body (with its trailers) is complete. */
static long chunked_feed(struct org_conn *c, const char *p, size_t n)
{
    const char *eol;

    switch (c->state) {
    case ST_CHUNK_LEN: {
        eol = memmem(p, n, "\r\n", 2);
        if (eol == NULL)
            return n > ORG_MAX_LINE ? -1 : 0;
        uint64_t v = 0;
        const char *q = p;
        for (; q < eol && isxdigit((unsigned char)*q); q++) {
            if (v >> 60)
                return -1;
            v = v * 16 +
                (uint64_t)(isdigit((unsigned char)*q) ? *q - '0' : (tolower(*q) - 'a' + 10));
        }
        if (q == p || (q < eol && *q != ';' && *q != ' ' && *q != '\t'))
            return -1;
        c->body_left = v;
        c->state = v > 0 ? ST_CHUNK_DATA : ST_TRAILERS;
        return eol + 2 - p;
    }
    case ST_CHUNK_DATA: {
        size_t k = n < c->body_left ? n : (size_t)c->body_left;
        body_store(&c->req, p, k);
        c->body_left -= k;
        if (c->body_left == 0)
            c->state = ST_CHUNK_CRLF;
        return (long)k;
    }
    case ST_CHUNK_CRLF:
        if (n < 2)
            return 0;
        if (p[0] != '\r' || p[1] != '\n')
            return -1;
        c->state = ST_CHUNK_LEN;
        return 2;
    case ST_TRAILERS:
        eol = memmem(p, n, "\r\n", 2);
        if (eol == NULL)
            return n > ORG_MAX_LINE ? -1 : 0;
        if (eol == p)
            c->state = ST_HEAD;
        return eol + 2 - p;
    default:
        return -1;
    }
}

/* Consumes request bytes from c->buf until a request is answered asynchronously, more input
 * is needed, or the connection closes. */
static void conn_parse(struct org_conn *c)
{
    size_t off = 0;

    if (c->buf == NULL)
        return;
    c->in_parse = true;
    while (!c->busy && !c->closing && !c->want_close && off < c->len) {
        const char *p = c->buf + off;
        size_t n = c->len - off;

        if (c->state == ST_ECHO) {
            if (c->writes >= 8 * ORG_INFLIGHT)
                break;
            char *copy = xmalloc(n);
            memcpy(copy, p, n);
            uv_buf_t b = uv_buf_init(copy, (unsigned)n);
            conn_send(c, &b, 1, copy);
            off += n;
        } else if (c->state == ST_HEAD) {
            const char *end = memmem(p, n, "\r\n\r\n", 4);
            if (end == NULL) {
                if (n > ORG_MAX_HEAD)
                    respond_error(c, 431, "request head too large\n");
                break;
            }
            size_t hl = (size_t)(end + 4 - p);
            off += hl;
            c->nreq++;
            int st = parse_head(c, p, hl);
            if (st == 0)
                st = body_begin(c);
            if (st != 0) {
                respond_error(c, st, "bad request\n");
                break;
            }
            if (c->state != ST_HEAD && header_has_token(&c->req, "expect", "100-continue")) {
                struct org_str s = {0};
                str_add(&s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                conn_send_str(c, &s);
            }
            if (c->state == ST_HEAD)
                dispatch(c);
        } else if (c->state == ST_BODY_CL) {
            size_t k = n < c->body_left ? n : (size_t)c->body_left;
            body_store(&c->req, p, k);
            c->body_left -= k;
            off += k;
            if (c->body_left == 0) {
                c->state = ST_HEAD;
                dispatch(c);
            }
        } else {
            long used = chunked_feed(c, p, n);
            if (used < 0) {
                respond_error(c, 400, "bad chunked body\n");
                break;
            }
            if (used == 0)
                break;
            off += (size_t)used;
            if (c->state == ST_HEAD)
                dispatch(c);
        }
    }
    c->in_parse = false;
    if (c->closing)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct org_conn *c = h->data;

    if (c->cap - c->len < ORG_READ_SIZE) {
        c->cap = c->len + ORG_READ_SIZE;
        c->buf = xrealloc(c->buf, c->cap);
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct org_conn *c = s->data;

    if (nread == UV_EOF) {
        c->eof = true;
        uv_read_stop(s);
        c->reading = false;
        if (!c->busy)
            conn_finish(c);
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    conn_process(c);
}

/* Parses what is buffered, then reads more only if nothing is in progress. */
static void conn_process(struct org_conn *c)
{
    conn_parse(c);
    if (c->closing || c->want_close)
        return;
    bool want = !c->busy && !c->eof && (c->state != ST_ECHO || c->writes < 8 * ORG_INFLIGHT);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct org_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(g_loop, &c->tcp);
    uv_timer_init(g_loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    c->serial = ++g_serial;
    uv_tcp_nodelay(&c->tcp, 1);
    conn_process(c);
}

/* ---- main ---------------------------------------------------------------------------------- */

static int parse_listen(const char *s, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon;
    const char *hs = s;
    size_t hl;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return -1;
        hs = s + 1;
        hl = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    int port = atoi(colon + 1);
    if (port < 0 || port > 65535)
        return -1;
    if (s[0] == '[')
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

static void usage(void)
{
    fprintf(stderr, "usage: weir-test-origin --listen HOST:PORT [--name NAME]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen_addr = NULL;
    struct sockaddr_storage ss;
    uv_tcp_t server;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_addr = argv[++i];
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            g_name = argv[++i];
        else
            usage();
    }
    if (listen_addr == NULL || parse_listen(listen_addr, &ss) != 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof(g_pattern); i++)
        g_pattern[i] = i % 64 == 63 ? '\n' : 'x';

    g_loop = uv_default_loop();
    uv_tcp_init(g_loop, &server);
    int rc = uv_tcp_bind(&server, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, 511, on_connection);
    if (rc != 0) {
        fprintf(stderr, "weir-test-origin: %s: %s\n", listen_addr, uv_strerror(rc));
        return 1;
    }
    printf("listening\n");
    return uv_run(g_loop, UV_RUN_DEFAULT);
}
