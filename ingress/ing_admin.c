/* ingress/ing_admin.c -- the admin API server (INTERFACES.md §3), control thread only.
 *
 * A small HTTP/1.1 server on the control loop: keep-alive and pipelining, request bodies framed
 * by Content-Length only (at most ADMIN_MAX_BODY bytes), ADMIN_MAX_CONNS connections at once,
 * idle connections closed after ADMIN_IDLE_MS. Every answer is built in memory in one go, so a
 * connection is only ever reading a request or writing answers, and its whole state is a byte
 * buffer plus a few flags.
 *
 * The one exception is a rollout change (PUT /rollouts/NAME, .../promote, .../rollback): its
 * answer promises that every worker already routes with the new weight, so it waits until the
 * workers report the new snapshot version (see wait_start()). While it waits, the connection
 * reads nothing more: pipelined requests stay in the buffer or the socket and are answered
 * after it, in order.
 *
 * The snapshot to serve is asked from the hooks at each request, so a reload shows at once. The
 * listener itself is bound once, from the snapshot given to ing_admin_start(): a reload that
 * changes admin.address takes effect at the next restart (moving a listening socket under
 * running scripts and probes would be more surprising than useful). The token, on the other
 * hand, is read from the current snapshot at each request, so rotating the token file and
 * sending SIGHUP works.
 *
 * Lifetime (libuv handle rules): a connection owns three handles, its socket and two timers. It
 * is closed through conn_close() only, which is idempotent, and its memory is freed in the close
 * callback of the last of them; an answer waiting for the workers lives in the connection, so
 * closing it (or the whole admin) ends the wait too. The ing_admin itself counts every handle
 * it is responsible for (listener, connections, refused sockets) and frees itself when the last
 * one has closed.
 */
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <uv.h>

#include <weir/h1.h>
#include <weir/ing.h>
#include <weir/wr.h>
#include <weir/xds.h>

#define ADMIN_MAX_CONNS  256
#define ADMIN_IDLE_MS    30000 /* no request under way and nothing sent for that long: close */
#define ADMIN_LINGER_MS  2000  /* after the last answer, wait that long for the peer's FIN */
#define ADMIN_MAX_HEAD   16384
#define ADMIN_MAX_TARGET 8192
#define ADMIN_MAX_BODY   65536
#define ADMIN_MAX_HDRS   64
#define ADMIN_BUF_MAX    (ADMIN_MAX_HEAD + ADMIN_MAX_BODY)
#define ADMIN_READ_MIN   4096
#define ADMIN_WQ_HIGH    (256 * 1024) /* unsent answer bytes above which we stop reading */
#define ADMIN_WQ_LOW     (64 * 1024)
#define ADMIN_CONFIRM_MS 10000 /* bound on waiting for the workers to serve a rollout change */
#define ADMIN_POLL_MS    1     /* how often the workers' served version is read meanwhile */
#define ADMIN_MAX_NAME   256

struct ing_admin {
    uv_loop_t *loop;
    uv_tcp_t tcp; /* the listener */
    struct ing_admin_hooks hooks;
    struct wr_list conns;
    unsigned n_conns;
    unsigned handles; /* listener + connections + refused sockets not yet closed */
    bool loopback;    /* the listener is bound to a loopback address */
};

/* A rollout change whose answer waits until the workers serve its snapshot (wait_start()). */
struct admin_wait {
    uint64_t version; /* answer once every worker serves this snapshot version */
    uint64_t since;   /* uv_now() when the wait began */
    bool keep;        /* keep-alive of the request that waits */
    char name[ADMIN_MAX_NAME];
};

struct admin_conn {
    struct ing_admin *a;
    uv_tcp_t tcp;
    uv_timer_t timer;   /* idle timeout, then linger timeout */
    uv_timer_t confirm; /* polls the workers' served version while an answer waits */
    uv_shutdown_t shutdown;
    struct wr_list link;
    char *buf; /* received bytes not yet consumed: the request under way, and any pipelined */
    size_t len, cap;
    size_t scan;        /* ing_h1_parse_request() resume offset */
    unsigned writes;    /* uv_write()s in flight */
    unsigned pending;   /* handles whose close callback has not run yet */
    bool closed;        /* conn_close() was called */
    bool last_queued;   /* the last answer is queued: discard input, then close */
    bool eof;           /* the peer has shut down its side */
    bool paused;        /* reading stopped until the peer reads our answers */
    bool continue_sent; /* "100 Continue" sent for the request under way */
    bool waiting;       /* a rollout change waits for the workers (<wait>); reading is stopped */
    struct admin_wait wait;
};

struct admin_write {
    uv_write_t req;
    struct admin_conn *c;
    char *data;
};

/* One answer, before serialisation; <body> is malloc'd and owned. */
struct admin_resp {
    int status;
    const char *ctype;
    const char *headers; /* extra header lines, each ending in CRLF; static */
    char *body;
    size_t body_len;
};

static void conn_close(struct admin_conn *c);
static void process(struct admin_conn *c);

/* ---- lifetime -------------------------------------------------------------------------------- */

static void admin_unhold(struct ing_admin *a)
{
    if (--a->handles == 0)
        free(a);
}

static void on_listener_closed(uv_handle_t *h)
{
    admin_unhold(WR_CONTAINER_OF(h, struct ing_admin, tcp));
}

static void on_refused_closed(uv_handle_t *h)
{
    struct ing_admin *a = h->data;

    free(h);
    admin_unhold(a);
}

/* Shared by the connection's three handles, hence h->data. */
static void on_conn_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;

    if (--c->pending > 0)
        return;
    struct ing_admin *a = c->a;
    free(c->buf);
    free(c);
    admin_unhold(a);
}

/* The single close path of a connection; idempotent. Writes still queued are cancelled by
 * libuv (their callbacks run with UV_ECANCELED before on_conn_closed). */
static void conn_close(struct admin_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    wr_list_remove(&c->link);
    c->a->n_conns--;
    c->pending = 3;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close((uv_handle_t *)&c->confirm, on_conn_closed);
}

static void on_timer(uv_timer_t *t)
{
    conn_close(t->data);
}

static void arm_timer(struct admin_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- output ------------------------------------------------------------------------------ */

static const char *reason(int status)
{
    static const struct {
        int status;
        const char *text;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {431, "Request Header Fields Too Large"},
        {501, "Not Implemented"},
        {503, "Service Unavailable"},
        {505, "HTTP Version Not Supported"},
    };

    for (size_t i = 0; i < WR_ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Error";
}

/* Once the last answer has left: half-close, then keep reading (and discarding) until the peer
 * closes too or ADMIN_LINGER_MS pass. Closing at once while the peer is still sending (a body we
 * refused with 413, say) would reset the connection and could destroy our answer in flight. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct admin_conn *c = WR_CONTAINER_OF(req, struct admin_conn, shutdown);

    if (status < 0)
        conn_close(c); /* UV_ECANCELED when already closing: a no-op */
}

static void linger(struct admin_conn *c)
{
    if (c->eof || uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    arm_timer(c, ADMIN_LINGER_MS);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status)
{
    struct admin_write *w = WR_CONTAINER_OF(req, struct admin_write, req);
    struct admin_conn *c = w->c;

    free(w->data);
    free(w);
    c->writes--;
    if (c->closed)
        return;
    if (status < 0) {
        conn_close(c);
    } else if (c->last_queued) {
        if (c->writes == 0)
            linger(c);
    } else if (c->paused && c->tcp.write_queue_size < ADMIN_WQ_LOW) {
        c->paused = false;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
        process(c); /* requests that arrived while paused */
    }
}

/* Queues <len> bytes of <data>, taking ownership of it. */
static void send_bytes(struct admin_conn *c, char *data, size_t len)
{
    struct admin_write *w = wr_xmalloc(sizeof(*w));
    uv_buf_t b = uv_buf_init(data, (unsigned)len);

    w->c = c;
    w->data = data;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(data);
        free(w);
        conn_close(c);
        return;
    }
    c->writes++;
}

/* Serialises <r> (taking its body) and queues it. HEAD gets the headers of the GET answer. */
static void send_resp(struct admin_conn *c, struct admin_resp *r, bool head, bool keep)
{
    struct wr_sbuf b = {0};
    char date[64];
    time_t now = time(NULL);
    struct tm tm;

    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    wr_sbuf_printf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: weir\r\n", r->status,
                   reason(r->status), date);
    /* A 304 has no content, and no Content-Length that would describe another answer's
     * (RFC 9110 §15.4.5). */
    if (r->status != 304)
        wr_sbuf_printf(&b, "Content-Type: %s\r\nContent-Length: %zu\r\n", r->ctype, r->body_len);
    wr_sbuf_printf(&b, "Cache-Control: no-store\r\n%s%s\r\n", r->headers != NULL ? r->headers : "",
                   keep ? "" : "Connection: close\r\n");
    if (!head && r->status != 304)
        wr_sbuf_add(&b, r->body, r->body_len);
    wr_free(&r->body);
    if (!keep) {
        c->last_queued = true;
        c->len = 0;
    }
    send_bytes(c, b.p, b.len);
}

static void resp_set(struct admin_resp *r, int status, const char *ctype, char *body)
{
    r->status = status;
    r->ctype = ctype;
    r->body = body;
    r->body_len = strlen(body);
}

static void resp_json(struct admin_resp *r, int status, char *body)
{
    resp_set(r, status, "application/json", body);
}

/* {"<key>": "<value>"}; <value> is plain ASCII without quotes or backslashes. */
static void resp_msg(struct admin_resp *r, int status, const char *key, const char *value)
{
    resp_json(r, status, wr_xasprintf("{\"%s\":\"%s\"}", key, value));
}

static void resp_error(struct admin_resp *r, int status, const char *msg)
{
    resp_msg(r, status, "error", msg);
}

static char *dump(json_t *j);

/* {"error": <msg>} for any text: quotes and control characters are escaped. Text that is not
 * valid UTF-8 (a parser's excerpt of a client's bytes, say) falls back to a generic message. */
static void resp_error_text(struct admin_resp *r, int status, const char *msg)
{
    json_t *j = json_pack("{s:s}", "error", msg);

    if (j == NULL)
        j = json_pack("{s:s}", "error", "invalid request");
    resp_json(r, status, dump(j));
}

/* Answers a request we could not parse or will not read, and closes the connection: the
 * framing of what follows is unknown. */
static void fail(struct admin_conn *c, int status)
{
    struct admin_resp r = {0};
    char msg[64];
    size_t n = 0;

    for (const char *p = reason(status); *p != '\0' && n + 1 < sizeof(msg); p++)
        msg[n++] = wr_lower(*p);
    msg[n] = '\0';
    resp_error(&r, status, msg);
    send_resp(c, &r, false, false);
}

/* ---- routing ----------------------------------------------------------------------------- */

enum admin_route {
    RT_NONE = 0,
    RT_LIVE,
    RT_READY,
    RT_CONFIG,
    RT_CLUSTERS,
    RT_METRICS,
    RT_ROLLOUTS,
    RT_ROLLOUT,  /* /rollouts/NAME */
    RT_PROMOTE,  /* /rollouts/NAME/promote */
    RT_ROLLBACK, /* /rollouts/NAME/rollback */
    RT_XDS,      /* /v3/discovery:TYPE (the type in <name>) */
};

struct admin_req {
    const struct ing_h1_msg *m;
    struct wr_str body;
    enum admin_route route;
    char name[ADMIN_MAX_NAME]; /* rollout name, percent-decoded; RT_XDS: the xDS type */
    struct xds_snapshot *snap;
    uint64_t defer; /* > 0: a rollout change, to answer once the workers serve this version */
};

static bool ends_with(struct wr_str s, const char *suffix, size_t n)
{
    return s.len >= n && memcmp(s.p + s.len - n, suffix, n) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = wr_lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Percent-decodes <s> into <out> (NUL-terminated). Returns false when it is empty, too long,
 * badly encoded or decodes to a NUL. */
static bool decode_name(struct wr_str s, char *out, size_t outlen)
{
    size_t n = 0;

    for (size_t i = 0; i < s.len; i++) {
        int ch = (unsigned char)s.p[i];
        if (ch == '%') {
            int hi = i + 2 < s.len ? hexval(s.p[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s.p[i + 2]) : -1;
            if (lo < 0)
                return false;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || n + 1 >= outlen)
            return false;
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    return n > 0;
}

/* Names with a '/' work either percent-encoded or not: the action suffix is matched first and
 * the name is whatever lies between. */
static enum admin_route route_rollout(struct wr_str p, struct admin_req *q)
{
    static const char prefix[] = "/rollouts/";
    enum admin_route rt = RT_ROLLOUT;

    p.p += sizeof(prefix) - 1;
    p.len -= sizeof(prefix) - 1;
    if (ends_with(p, "/promote", 8)) {
        rt = RT_PROMOTE;
        p.len -= 8;
    } else if (ends_with(p, "/rollback", 9)) {
        rt = RT_ROLLBACK;
        p.len -= 9;
    }
    return decode_name(p, q->name, sizeof(q->name)) ? rt : RT_NONE;
}

static enum admin_route route_of(struct wr_str p, struct admin_req *q)
{
    static const struct {
        const char *path;
        enum admin_route rt;
    } fixed[] = {
        {"/live", RT_LIVE},         {"/ready", RT_READY},     {"/config", RT_CONFIG},
        {"/clusters", RT_CLUSTERS}, {"/metrics", RT_METRICS}, {"/rollouts", RT_ROLLOUTS},
    };

    for (size_t i = 0; i < WR_ARRAY_LEN(fixed); i++)
        if (wr_str_eq(p, fixed[i].path, strlen(fixed[i].path)))
            return fixed[i].rt;
    if (p.len > 10 && memcmp(p.p, "/rollouts/", 10) == 0)
        return route_rollout(p, q);
    if (p.len > 14 && p.len - 14 < sizeof(q->name) && memcmp(p.p, "/v3/discovery:", 14) == 0) {
        memcpy(q->name, p.p + 14, p.len - 14);
        q->name[p.len - 14] = '\0';
        return RT_XDS;
    }
    return RT_NONE;
}

/* Returns the Allow header line of <rt>, and whether <method> is one of them. */
static bool method_allowed(enum admin_route rt, int method, const char **allow)
{
    bool get = method == ING_H1_M_GET || method == ING_H1_M_HEAD;

    switch (rt) {
    case RT_ROLLOUT:
        *allow = "Allow: GET, HEAD, PUT\r\n";
        return get || method == ING_H1_M_PUT;
    case RT_PROMOTE:
    case RT_ROLLBACK:
    case RT_XDS:
        *allow = "Allow: POST\r\n";
        return method == ING_H1_M_POST;
    default:
        *allow = "Allow: GET, HEAD\r\n";
        return get;
    }
}

/* Compares in time that depends on the token's length only, not on where a guess differs. */
static bool token_eq(const char *token, const char *p, size_t len)
{
    size_t tlen = strlen(token);
    unsigned char diff = len != tlen;

    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)token[i] ^ (unsigned char)(i < len ? p[i] : 0);
    return diff == 0;
}

/* RFC 6750 §2.1: "Authorization: Bearer <token>", the scheme case-insensitively. A listener on a
 * non-loopback address whose current snapshot lost its token (a reload removed token_file)
 * refuses everything rather than serving the world unauthenticated. */
static bool authorized(const struct ing_admin *a, const struct admin_req *q)
{
    const char *token = q->snap->admin_token;

    if (token == NULL)
        return a->loopback;
    for (uint16_t i = 0; i < q->m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &q->m->hdrs[i];
        if (!ing_h1_name_is(h, "authorization", 13))
            continue;
        struct wr_str v = {h->value, h->value_len};
        if (v.len < 7 || !wr_str_ieq((struct wr_str){v.p, 7}, "bearer ", 7))
            return false;
        size_t off = 7;
        while (off < v.len && v.p[off] == ' ')
            off++;
        return token_eq(token, v.p + off, v.len - off);
    }
    return false;
}

/* ---- handlers ---------------------------------------------------------------------------- */

static json_t *jstr(const char *s)
{
    json_t *j = s != NULL ? json_string(s) : NULL;

    return j != NULL ? j : json_null();
}

static json_t *colour_stats(struct xds_counters *k, unsigned colour)
{
    uint64_t requests = 0, e5xx = 0;

    for (unsigned cls = 0; k != NULL && cls < 5 && XDS_RS_IDX(colour, cls) < k->ncounters; cls++)
        requests += xds_counters_sum(k, XDS_RS_IDX(colour, cls));
    if (k != NULL && XDS_RS_IDX(colour, 4) < k->ncounters)
        e5xx = xds_counters_sum(k, XDS_RS_IDX(colour, 4));
    return json_pack("{s:I,s:I}", "requests", (json_int_t)WR_MIN(requests, (uint64_t)INT64_MAX),
                     "errors_5xx", (json_int_t)WR_MIN(e5xx, (uint64_t)INT64_MAX));
}

static json_t *rollout_json(const struct xds_rollout *ro)
{
    json_t *o = json_object();

    json_object_set_new(o, "name", jstr(ro->name));
    json_object_set_new(o, "blue", jstr(ro->blue != NULL ? ro->blue->name : NULL));
    json_object_set_new(o, "green", jstr(ro->green != NULL ? ro->green->name : NULL));
    json_object_set_new(o, "green_weight", json_integer(ro->green_weight));
    json_object_set_new(o, "sticky", json_boolean(ro->sticky));
    json_object_set_new(o, "stats",
                        json_pack("{s:o,s:o}", "blue", colour_stats(ro->stats, 0), "green",
                                  colour_stats(ro->stats, 1)));
    return o;
}

static char *dump(json_t *j)
{
    char *out = json_dumps(j, JSON_COMPACT);

    json_decref(j);
    if (out == NULL) {
        fprintf(stderr, "weir: out of memory building an admin answer\n");
        abort();
    }
    return out;
}

static char *rollouts_json(struct xds_snapshot *s)
{
    json_t *arr = json_array();

    for (uint32_t i = 0; i < s->n_rollouts; i++)
        json_array_append_new(arr, rollout_json(&s->rollouts[i]));
    return dump(json_pack("{s:o}", "rollouts", arr));
}

static void handle_ready(struct ing_admin *a, struct admin_resp *r)
{
    enum ing_state st = a->hooks.state != NULL ? a->hooks.state(a->hooks.arg) : ING_STATE_STARTING;

    const char *why = NULL;
    if (st == ING_STATE_READY && a->hooks.not_ready != NULL &&
        a->hooks.not_ready(a->hooks.arg, &why))
        resp_msg(r, 503, "status", why);
    else if (st == ING_STATE_READY)
        resp_msg(r, 200, "status", "ready");
    else
        resp_msg(r, 503, "status", st == ING_STATE_DRAINING ? "draining" : "starting");
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "a number";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* Checks a parsed PUT body: an object whose only key is "green_weight", an integer 0-100.
 * Returns the weight, or -1 with *msg set (malloc'd). */
static int weight_of(json_t *root, char **msg)
{
    const char *key;
    json_t *v;

    if (!json_is_object(root)) {
        *msg = wr_xasprintf("the body must be a JSON object {\"green_weight\": N}, not %s",
                            json_type_name(root));
        return -1;
    }
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "green_weight") != 0) {
            *msg = wr_xasprintf("unknown key \"%s\": the body takes \"green_weight\" only", key);
            return -1;
        }
    }
    v = json_object_get(root, "green_weight");
    if (v == NULL) {
        *msg = wr_xstrdup("missing \"green_weight\": send {\"green_weight\": N}, N from 0 to 100");
        return -1;
    }
    if (!json_is_integer(v)) {
        *msg = wr_xasprintf("green_weight must be an integer from 0 to 100, not %s",
                            json_type_name(v));
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > 100) {
        *msg = wr_xasprintf(
            "green_weight must be an integer from 0 to 100, not %" JSON_INTEGER_FORMAT, n);
        return -1;
    }
    return (int)n;
}

/* Parses the body of PUT /rollouts/NAME: exactly {"green_weight": N} (INTERFACES.md §3), so
 * that a typo in the key or a "20" in quotes is an error rather than a silent no-op. Duplicate
 * keys are refused too: which of them would win is not obvious to the client. Returns the
 * weight, or -1 with the 400 answer in <r>. */
static int parse_weight(struct wr_str body, struct admin_resp *r)
{
    json_error_t jerr;
    char *msg = NULL;
    int weight = -1;

    if (body.len == 0) {
        resp_error_text(r, 400, "missing body: send {\"green_weight\": N}, N from 0 to 100");
        return -1;
    }
    json_t *root = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL)
        msg = wr_xasprintf("cannot parse the body as JSON: %s (line %d, column %d)", jerr.text,
                           jerr.line, jerr.column);
    else
        weight = weight_of(root, &msg);
    json_decref(root);
    if (weight < 0)
        resp_error_text(r, 400, msg);
    free(msg);
    return weight;
}

/* Asks the control thread to publish a snapshot with rollout <q->name> at <weight>. On success
 * the answer is deferred (q->defer) until the workers serve it; otherwise <r> gets the error. */
static void change_rollout(struct ing_admin *a, struct admin_req *q, unsigned weight,
                           struct admin_resp *r)
{
    const char *err = NULL;
    int64_t v;

    if (a->hooks.set_rollout == NULL) {
        resp_error(r, 501, "changing rollouts is not available");
        return;
    }
    v = a->hooks.set_rollout(a->hooks.arg, q->name, weight, &err);
    if (v == 0)
        resp_error(r, 404, "no such rollout");
    else if (v < 0)
        resp_error_text(r, 503, err != NULL ? err : "the rollout could not be changed");
    else
        q->defer = (uint64_t)v;
}

/* GET shows rollout <q->name>; PUT, promote and rollback change its green weight. The name is
 * checked before the body, so that a typo in it gets its 404 whatever the body. */
static void handle_rollout(struct ing_admin *a, struct admin_req *q, struct admin_resp *r)
{
    const struct xds_rollout *ro = xds_rollout_find(q->snap, q->name);
    int weight;

    if (ro == NULL) {
        resp_error(r, 404, "no such rollout");
        return;
    }
    if (q->route == RT_ROLLOUT && q->m->method_id != ING_H1_M_PUT) {
        resp_json(r, 200, dump(rollout_json(ro)));
        return;
    }
    if (q->route == RT_PROMOTE)
        weight = 100;
    else if (q->route == RT_ROLLBACK)
        weight = 0;
    else if ((weight = parse_weight(q->body, r)) < 0)
        return;
    change_rollout(a, q, (unsigned)weight, r);
}

/* The answer to a rollout change once the workers serve it: the rollout as GET /rollouts shows
 * it, from the snapshot now published (which may already be newer than the change, after a
 * reload), plus that snapshot's version string. */
static void confirmed_answer(struct ing_admin *a, const char *name, struct admin_resp *r)
{
    struct xds_snapshot *s = a->hooks.snapshot(a->hooks.arg);
    const struct xds_rollout *ro = s != NULL ? xds_rollout_find(s, name) : NULL;

    if (ro == NULL) {
        resp_error(r, 404, "no such rollout"); /* a reload removed it meanwhile */
        return;
    }
    json_t *o = rollout_json(ro);
    json_object_set_new(o, "version", json_string(s->version_str));
    resp_json(r, 200, dump(o));
}

/* POST /v3/discovery:TYPE: xDS v3 REST-JSON (xds_v3_discovery(), docs/xds.md). */
static void handle_xds(struct admin_req *q, struct admin_resp *r)
{
    struct wr_sbuf err = {0};
    char *body = NULL;
    int status = xds_v3_discovery(q->snap, q->name, q->body.p, q->body.len, &body, &err);

    if (status == 200)
        resp_json(r, 200, body);
    else if (status == 304)
        resp_set(r, 304, "application/json", wr_xstrdup(""));
    else
        resp_error_text(r, status, err.p != NULL ? err.p : "bad request");
    wr_sbuf_dispose(&err);
}

static void handle_snapshot_route(struct ing_admin *a, struct admin_req *q, struct admin_resp *r)
{
    switch (q->route) {
    case RT_CONFIG:
        resp_json(r, 200, wr_xstrdup(xds_snapshot_config_json(q->snap)));
        break;
    case RT_CLUSTERS:
        resp_json(r, 200, ing_admin_clusters_json(q->snap));
        break;
    case RT_METRICS:
        if (a->hooks.extra_metrics != NULL) {
            struct wr_sbuf b = {0};
            char *text = ing_admin_metrics_text(q->snap);
            wr_sbuf_addstr(&b, text);
            free(text);
            a->hooks.extra_metrics(a->hooks.arg, &b);
            resp_set(r, 200, "text/plain; version=0.0.4", b.p);
        } else {
            resp_set(r, 200, "text/plain; version=0.0.4", ing_admin_metrics_text(q->snap));
        }
        break;
    case RT_ROLLOUTS:
        resp_json(r, 200, rollouts_json(q->snap));
        break;
    case RT_XDS:
        handle_xds(q, r);
        break;
    default:
        handle_rollout(a, q, r);
        break;
    }
}

/* Decides the answer to a complete request. Authorization comes before 404 and 405 so that
 * an unauthenticated client learns nothing about which paths exist. */
static void handle(struct ing_admin *a, struct admin_req *q, struct admin_resp *r)
{
    const char *allow;

    q->route = route_of(q->m->path, q);
    if (q->route == RT_LIVE || q->route == RT_READY) {
        if (!method_allowed(q->route, q->m->method_id, &allow)) {
            r->headers = allow;
            resp_error(r, 405, "method not allowed");
        } else if (q->route == RT_LIVE) {
            resp_msg(r, 200, "status", "live");
        } else {
            handle_ready(a, r);
        }
        return;
    }
    q->snap = a->hooks.snapshot(a->hooks.arg);
    if (q->snap == NULL) {
        resp_error(r, 503, "no configuration loaded yet");
    } else if (!authorized(a, q)) {
        r->headers = "WWW-Authenticate: Bearer\r\n";
        resp_error(r, 401, "unauthorized");
    } else if (q->route == RT_NONE) {
        resp_error(r, 404, "not found");
    } else if (!method_allowed(q->route, q->m->method_id, &allow)) {
        r->headers = allow;
        resp_error(r, 405, "method not allowed");
    } else {
        handle_snapshot_route(a, q, r);
    }
}

/* ---- input ------------------------------------------------------------------------------- */

static void consume(struct admin_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->scan = 0;
    c->continue_sent = false;
}

/* Sends the answer that waited for the workers and reads again: the pipelined requests, or
 * the peer's FIN after a last answer (see linger()). process() checks the write queue before
 * it answers, so <c> cannot be paused here. */
static void wait_finish(struct admin_conn *c, struct admin_resp *r)
{
    uv_timer_stop(&c->confirm);
    c->waiting = false;
    send_resp(c, r, false, c->wait.keep);
    if (c->closed)
        return;
    arm_timer(c, ADMIN_IDLE_MS);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    process(c);
}

static void on_confirm(uv_timer_t *t)
{
    struct admin_conn *c = WR_CONTAINER_OF(t, struct admin_conn, confirm);
    struct ing_admin *a = c->a;
    struct admin_resp r = {0};

    if (a->hooks.served_version != NULL &&
        a->hooks.served_version(a->hooks.arg) < c->wait.version) {
        if (uv_now(t->loop) - c->wait.since < ADMIN_CONFIRM_MS)
            return;
        wr_warn("admin: rollout %s: the workers did not serve version %llu within %d ms",
                c->wait.name, (unsigned long long)c->wait.version, ADMIN_CONFIRM_MS);
        resp_error(&r, 503, "workers did not confirm the new version");
    } else {
        confirmed_answer(a, c->wait.name, &r);
    }
    wait_finish(c, &r);
}

/* Defers the answer to the rollout change <q> until every worker serves version q->defer,
 * polling the hook every ADMIN_POLL_MS, for ADMIN_CONFIRM_MS at most. A worker swaps snapshots
 * between two turns of its own loop, which is a matter of microseconds, so polling costs
 * little and needs nothing from the workers. The first look happens on the next loop turn, not
 * here: the caller is still in the middle of process(). Reading stops meanwhile, which keeps
 * pipelined requests in order and the buffer bounded; the idle timer stops as well, as the
 * wait has its own bound. */
static void wait_start(struct admin_conn *c, const struct admin_req *q, bool keep)
{
    c->waiting = true;
    c->wait.version = q->defer;
    c->wait.since = uv_now(c->a->loop);
    c->wait.keep = keep;
    memcpy(c->wait.name, q->name, sizeof(c->wait.name));
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->confirm, on_confirm, 0, ADMIN_POLL_MS);
}

static void answer(struct admin_conn *c, const struct ing_h1_msg *m)
{
    struct admin_req q = {.m = m, .body = {c->buf + m->head_len, m->content_length}};
    struct admin_resp r = {0};
    bool keep = (m->flags & ING_H1_F_KEEP_ALIVE) && !(m->flags & ING_H1_F_CONN_CLOSE);

    handle(c->a, &q, &r);
    if (q.defer > 0)
        wait_start(c, &q, keep);
    else
        send_resp(c, &r, m->method_id == ING_H1_M_HEAD, keep);
}

/* Looks at the head of the request under way. Returns the bytes it spans with its body when
 * all of them are here (and fills <m>), 0 when more bytes are needed, -1 when it answered an
 * error and the connection is closing. */
static long frame(struct admin_conn *c, struct ing_h1_msg *m)
{
    static const struct ing_h1_limits lim = {ADMIN_MAX_HEAD, ADMIN_MAX_TARGET};
    int rc = ing_h1_parse_request(m, c->buf, c->len, &c->scan, &lim);

    if (rc == ING_H1_INCOMPLETE && c->len >= ADMIN_MAX_HEAD)
        rc = -431;
    if (rc == ING_H1_INCOMPLETE)
        return 0;
    if (rc < 0 || m->body == ING_H1_BODY_CHUNKED || m->content_length > ADMIN_MAX_BODY) {
        fail(c, rc < 0 ? -rc : m->body == ING_H1_BODY_CHUNKED ? 411 : 413);
        return -1;
    }
    size_t need = (size_t)m->head_len + (size_t)m->content_length;
    if (c->len >= need)
        return (long)need;
    /* The head is complete but not the body: parse the head again from scratch next time,
     * rather than relying on how the parser treats a resumed complete head. */
    c->scan = 0;
    if ((m->flags & ING_H1_F_EXPECT_CONTINUE) && !c->continue_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->continue_sent = true;
        send_bytes(c, wr_xstrdup(cont), sizeof(cont) - 1);
    }
    return 0;
}

/* Answers every complete request in the buffer, in order, until one is incomplete, the
 * connection closes, an answer waits for the workers, or the peer must read what we wrote
 * first. */
static void process(struct admin_conn *c)
{
    while (!c->closed && !c->last_queued && !c->waiting && c->len > 0) {
        if (c->tcp.write_queue_size > ADMIN_WQ_HIGH) {
            c->paused = true;
            uv_read_stop((uv_stream_t *)&c->tcp);
            return;
        }
        struct ing_h1_hdr hdrs[ADMIN_MAX_HDRS];
        struct ing_h1_msg m = {.hdrs = hdrs, .max_hdrs = ADMIN_MAX_HDRS};
        long n = frame(c, &m);
        if (n <= 0)
            return;
        answer(c, &m);
        if (c->closed || c->last_queued)
            return;
        consume(c, (size_t)n);
        if (!c->waiting)
            arm_timer(c, ADMIN_IDLE_MS);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *out)
{
    struct admin_conn *c = WR_CONTAINER_OF(h, struct admin_conn, tcp);

    if (c->cap - c->len < ADMIN_READ_MIN && c->cap < ADMIN_BUF_MAX) {
        size_t cap = WR_MIN(WR_MAX(c->cap * 2, c->len + ADMIN_READ_MIN), ADMIN_BUF_MAX);
        char *p = realloc(c->buf, cap); /* peer-driven: fail the connection, not the process */
        if (p != NULL) {
            c->buf = p;
            c->cap = cap;
        }
    }
    /* A zero-length buffer makes libuv report UV_ENOBUFS, which closes the connection. Framing
     * answers (431, 413) before the buffer can fill, so that only happens on OOM. */
    *out = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = WR_CONTAINER_OF(s, struct admin_conn, tcp);

    if (nread == 0)
        return;
    if (nread < 0) {
        /* A peer that sends its requests then shuts down its side still gets the answers. */
        c->eof = true;
        uv_read_stop(s);
        if (nread != UV_EOF || c->writes == 0)
            conn_close(c);
        else
            c->last_queued = true;
        return;
    }
    if (c->last_queued) {
        c->len = 0; /* after the last answer: discard */
        return;
    }
    if (c->len == 0)
        arm_timer(c, ADMIN_IDLE_MS); /* a new request: it gets the whole idle period */
    c->len += (size_t)nread;
    process(c);
}

static void refuse(struct ing_admin *a)
{
    uv_tcp_t *t = wr_xmalloc(sizeof(*t));

    uv_tcp_init(a->loop, t);
    t->data = a;
    a->handles++;
    uv_accept((uv_stream_t *)&a->tcp, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_refused_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct ing_admin *a = WR_CONTAINER_OF(server, struct ing_admin, tcp);

    if (status < 0) {
        wr_warn("admin: accept: %s", uv_strerror(status));
        return;
    }
    /* Over the limit, accept and close at once: leaving the connection in the backlog would
     * stop libuv from accepting until we took it. */
    if (a->n_conns >= ADMIN_MAX_CONNS) {
        wr_warn("admin: %d connections open, refusing one more", ADMIN_MAX_CONNS);
        refuse(a);
        return;
    }
    struct admin_conn *c = wr_xcalloc(1, sizeof(*c));
    c->a = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    uv_timer_init(a->loop, &c->confirm);
    c->tcp.data = c->timer.data = c->confirm.data = c;
    wr_list_insert_tail(&a->conns, &c->link);
    a->n_conns++;
    a->handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    arm_timer(c, ADMIN_IDLE_MS);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

/* Binds the admin listener of <s> on <loop> (see ing.h). The address is taken from <s> once:
 * changing admin.address needs a restart (see the top of this file). On failure returns NULL
 * with *err set to static text; the handle that failed to bind closes on the next loop turn,
 * so the loop must still be run before uv_loop_close(). */
struct ing_admin *ing_admin_start(uv_loop_t *loop, const struct xds_snapshot *s,
                                  const struct ing_admin_hooks *hooks, const char **err)
{
    if (s->admin_sslen == 0) {
        *err = "no admin address";
        return NULL;
    }
    bool loopback = is_loopback(&s->admin_ss);
    if (!loopback && s->admin_token == NULL) {
        *err = "admin.token_file is required to bind the admin API to a non-loopback address";
        return NULL;
    }
    struct ing_admin *a = wr_xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->hooks = *hooks;
    a->loopback = loopback;
    wr_list_init(&a->conns);
    int rc = uv_tcp_init(loop, &a->tcp);
    if (rc < 0) {
        free(a);
        *err = uv_strerror(rc);
        return NULL;
    }
    a->handles = 1;
    /* libuv sets SO_REUSEADDR on every TCP socket it binds (Unix), so a restart does not wait
     * for the old listener's TIME_WAIT connections. Bind errors may surface at uv_listen. */
    rc = uv_tcp_bind(&a->tcp, (const struct sockaddr *)&s->admin_ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->tcp, 128, on_connection);
    if (rc < 0) {
        *err = uv_strerror(rc);
        uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
        return NULL;
    }
    return a;
}

/* Stops accepting and closes every connection, answers in flight included (see ing.h). <a>
 * is freed once the loop has run the close callbacks: do not use it afterwards. NULL is a
 * no-op. */
void ing_admin_close(struct ing_admin *a)
{
    if (a == NULL)
        return;
    uv_close((uv_handle_t *)&a->tcp, on_listener_closed);
    while (!wr_list_empty(&a->conns))
        conn_close(WR_CONTAINER_OF(a->conns.next, struct admin_conn, link));
}
