/* tests/unit/ingress/ing_h1_test.c -- the HTTP/1.1 parser: every rejection with its exact
 * status, every accepted form, incremental parsing and the chunked scanner. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weir/h1.h>

#include "test.h"

#define NHDRS 32

struct parsed {
    struct ing_h1_msg m;
    struct ing_h1_hdr hdrs[NHDRS];
    char *buf; /* a private, exact-size copy: ASan catches reads past the end */
    size_t len;
};

static const struct ing_h1_limits dflt = {65536, 8192};

static int parse_n(struct parsed *p, const char *s, size_t n, const struct ing_h1_limits *lim,
                   int resp_method)
{
    size_t scan = 0;

    free(p->buf);
    memset(p, 0, sizeof(*p));
    p->buf = malloc(n ? n : 1);
    memcpy(p->buf, s, n);
    p->len = n;
    p->m.hdrs = p->hdrs;
    p->m.max_hdrs = NHDRS;
    if (resp_method < 0)
        return ing_h1_parse_request(&p->m, p->buf, n, &scan, lim);
    return ing_h1_parse_response(&p->m, p->buf, n, &scan, lim, resp_method);
}

static int req(struct parsed *p, const char *s)
{
    return parse_n(p, s, strlen(s), &dflt, -1);
}

static int resp(struct parsed *p, const char *s, int method)
{
    return parse_n(p, s, strlen(s), &dflt, method);
}

/* Request status for a one-off string. */
static int rq(const char *s)
{
    struct parsed p = {0};
    int r = req(&p, s);

    free(p.buf);
    return r;
}

static int rs(const char *s, int method)
{
    struct parsed p = {0};
    int r = resp(&p, s, method);

    free(p.buf);
    return r;
}

/* Request with "Host: h" added after the request line. */
static int rqh(const char *line, const char *fields)
{
    char tmp[4096];

    snprintf(tmp, sizeof(tmp), "%s\r\nHost: h\r\n%s\r\n", line, fields);
    return rq(tmp);
}

/* Feeds <s> one byte more per call, each time from a fresh exact-size copy, keeping <scan>. */
static int bytewise(struct parsed *p, const char *s, size_t n, const struct ing_h1_limits *lim,
                    int resp_method)
{
    size_t scan = 0;
    int r = 0;

    for (size_t k = 0; k <= n; k++) {
        free(p->buf);
        p->buf = malloc(k ? k : 1);
        memcpy(p->buf, s, k);
        p->len = k;
        p->m.hdrs = p->hdrs;
        p->m.max_hdrs = NHDRS;
        r = resp_method < 0 ? ing_h1_parse_request(&p->m, p->buf, k, &scan, lim)
                            : ing_h1_parse_response(&p->m, p->buf, k, &scan, lim, resp_method);
        if (r != 0)
            return r;
    }
    return r;
}

#define OFF(pr, sl) ((sl).p ? (long)((sl).p - (pr)->buf) : -1L)

static void same_slice(const struct parsed *a, struct wr_str x, const struct parsed *b,
                       struct wr_str y)
{
    ASSERT_EQ(x.len, y.len);
    ASSERT((x.p == NULL) == (y.p == NULL));
    if (x.p != NULL && x.len != 0)
        ASSERT(memcmp(x.p, y.p, x.len) == 0);
}

static void same_msg(const struct parsed *a, const struct parsed *b)
{
    const struct ing_h1_msg *x = &a->m, *y = &b->m;

    same_slice(a, x->method, b, y->method);
    same_slice(a, x->target, b, y->target);
    same_slice(a, x->path, b, y->path);
    same_slice(a, x->query, b, y->query);
    same_slice(a, x->authority, b, y->authority);
    same_slice(a, x->reason, b, y->reason);
    same_slice(a, x->host, b, y->host);
    ASSERT_EQ(OFF(a, x->target), OFF(b, y->target));
    ASSERT_EQ(x->status, y->status);
    ASSERT_EQ(x->method_id, y->method_id);
    ASSERT_EQ(x->minor, y->minor);
    ASSERT_EQ(x->body, y->body);
    ASSERT_EQ(x->flags, y->flags);
    ASSERT_EQ(x->content_length, y->content_length);
    ASSERT_EQ(x->head_len, y->head_len);
    ASSERT_EQ(x->n_hdrs, y->n_hdrs);
    for (unsigned i = 0; i < x->n_hdrs; i++) {
        ASSERT_EQ(x->hdrs[i].name - a->buf, y->hdrs[i].name - b->buf);
        ASSERT_EQ(x->hdrs[i].value - a->buf, y->hdrs[i].value - b->buf);
        ASSERT_EQ(x->hdrs[i].value_len, y->hdrs[i].value_len);
        ASSERT_EQ(x->hdrs[i].name_len, y->hdrs[i].name_len);
        ASSERT_EQ(x->hdrs[i].id, y->hdrs[i].id);
        ASSERT_EQ(x->hdrs[i].flags, y->hdrs[i].flags);
    }
}

static const struct ing_h1_hdr *find(const struct parsed *p, const char *lower_name)
{
    for (unsigned i = 0; i < p->m.n_hdrs; i++)
        if (ing_h1_name_is(&p->m.hdrs[i], lower_name, strlen(lower_name)))
            return &p->m.hdrs[i];
    FAIL("no header %s", lower_name);
    return NULL;
}

/* ---- request line ------------------------------------------------------------------------ */

TEST(simple_get)
{
    struct parsed p = {0};
    const char *s = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

    ASSERT_EQ(req(&p, s), strlen(s));
    ASSERT_SLICE(p.m.method.p, p.m.method.len, "GET");
    ASSERT_EQ(p.m.method_id, ING_H1_M_GET);
    ASSERT_SLICE(p.m.target.p, p.m.target.len, "/index.html");
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/index.html");
    ASSERT(p.m.query.p == NULL);
    ASSERT(p.m.authority.p == NULL);
    ASSERT_SLICE(p.m.host.p, p.m.host.len, "example.com");
    ASSERT_EQ(p.m.minor, 1);
    ASSERT_EQ(p.m.n_hdrs, 2);
    ASSERT_EQ(p.m.head_len, strlen(s));
    ASSERT_EQ(p.m.body, ING_H1_BODY_NONE);
    ASSERT_EQ(p.m.flags, ING_H1_F_KEEP_ALIVE);
    ASSERT_EQ(p.m.hdrs[0].id, ING_H1_H_HOST);
    ASSERT_SLICE(p.m.hdrs[1].name, p.m.hdrs[1].name_len, "Accept");
    ASSERT_SLICE(p.m.hdrs[1].value, p.m.hdrs[1].value_len, "*/*");
    ASSERT_EQ(p.m.hdrs[1].id, ING_H1_H_OTHER);
    free(p.buf);
}

TEST(query_split)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET /a/b?x=1&y=2?z HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/a/b");
    ASSERT_SLICE(p.m.query.p, p.m.query.len, "x=1&y=2?z");
    ASSERT(req(&p, "GET /a? HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/a");
    ASSERT(p.m.query.p != NULL);
    ASSERT_EQ(p.m.query.len, 0);
    free(p.buf);
}

TEST(absolute_form)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET http://Example.com:8080/p/q?x=y HTTP/1.1\r\nHost: other\r\n\r\n") > 0);
    ASSERT(p.m.flags & ING_H1_F_ABSOLUTE_FORM);
    ASSERT_SLICE(p.m.authority.p, p.m.authority.len, "Example.com:8080");
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/p/q");
    ASSERT_SLICE(p.m.query.p, p.m.query.len, "x=y");
    ASSERT_SLICE(p.m.host.p, p.m.host.len, "other");
    ASSERT(req(&p, "GET HTTPS://[::1]:443 HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_SLICE(p.m.authority.p, p.m.authority.len, "[::1]:443");
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/");
    ASSERT(p.m.query.p == NULL);
    ASSERT(req(&p, "GET http://h?k=v HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "/");
    ASSERT_SLICE(p.m.query.p, p.m.query.len, "k=v");
    free(p.buf);
}

TEST(absolute_form_rejected)
{
    ASSERT_EQ(rq("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET http://user@h/x HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET http:/h/x HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET http://h:x/ HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("CONNECT http://h:443/ HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
}

TEST(asterisk_form)
{
    struct parsed p = {0};

    ASSERT(req(&p, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_EQ(p.m.method_id, ING_H1_M_OPTIONS);
    ASSERT_SLICE(p.m.path.p, p.m.path.len, "*");
    ASSERT_EQ(rq("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    free(p.buf);
}

TEST(authority_form)
{
    struct parsed p = {0};

    ASSERT(req(&p, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") > 0);
    ASSERT_EQ(p.m.method_id, ING_H1_M_CONNECT);
    ASSERT_SLICE(p.m.authority.p, p.m.authority.len, "example.com:443");
    ASSERT_EQ(p.m.body, ING_H1_BODY_NONE);
    ASSERT(req(&p, "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT_EQ(rq("CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("CONNECT a@h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    free(p.buf);
}

TEST(other_target_forms_rejected)
{
    ASSERT_EQ(rqh("GET a/b HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET ?a HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET #x HTTP/1.1", ""), -400);
}

TEST(method_ids)
{
    static const struct {
        const char *name;
        int id;
    } t[] = {
        {"GET", ING_H1_M_GET},        {"HEAD", ING_H1_M_HEAD},      {"POST", ING_H1_M_POST},
        {"PUT", ING_H1_M_PUT},        {"DELETE", ING_H1_M_DELETE},  {"OPTIONS", ING_H1_M_OPTIONS},
        {"TRACE", ING_H1_M_TRACE},    {"PATCH", ING_H1_M_PATCH},    {"get", ING_H1_M_OTHER},
        {"M-SEARCH", ING_H1_M_OTHER}, {"PROPFIND", ING_H1_M_OTHER}, {"GETS", ING_H1_M_OTHER}};
    struct parsed p = {0};
    char tmp[128];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        snprintf(tmp, sizeof(tmp), "%s / HTTP/1.1\r\nHost: h\r\n\r\n", t[i].name);
        ASSERT(req(&p, tmp) > 0);
        ASSERT_EQ(p.m.method_id, t[i].id);
        ASSERT_SLICE(p.m.method.p, p.m.method.len, t[i].name);
    }
    free(p.buf);
}

TEST(method_invalid)
{
    ASSERT_EQ(rqh("G(T / HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh(" / HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET\t/ HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET", ""), -400);
    ASSERT_EQ(rqh("G\x80T / HTTP/1.1", ""), -400);
}

TEST(method_too_long)
{
    ASSERT(rqh("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345 / HTTP/1.1", "") > 0);       /* 32 */
    ASSERT_EQ(rqh("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456 / HTTP/1.1", ""), -501); /* 33 */
}

TEST(version_505)
{
    ASSERT_EQ(rqh("GET / HTTP/2.0", ""), -505);
    ASSERT_EQ(rqh("GET / HTTP/1.2", ""), -505);
    ASSERT_EQ(rqh("GET / HTTP/3", ""), -505);
    ASSERT_EQ(rqh("GET / HTTP/0.9", ""), -505);
    ASSERT_EQ(rqh("GET / HTTP/1.10", ""), -505);
}

TEST(version_400)
{
    ASSERT_EQ(rqh("GET / HTTX/1.1", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1 ", ""), -400);
    ASSERT_EQ(rqh("GET / http/1.1", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1x", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP/", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP", ""), -400);
    ASSERT_EQ(rqh("GET /", ""), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\rX\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/2.0\rX\r\nHost: h\r\n\r\n"), -400);
}

TEST(target_spaces_rejected)
{
    ASSERT_EQ(rqh("GET /a b HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET  / HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET /  HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET /\tHTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1 HTTP/1.1", ""), -400);
}

TEST(target_bytes_rejected)
{
    ASSERT_EQ(rqh("GET /\x7f HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET /\x80 HTTP/1.1", ""), -400);
    ASSERT_EQ(rqh("GET /\x01 HTTP/1.1", ""), -400);
}

TEST(target_nul_rejected)
{
    static const char s[] = "GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n";
    struct parsed p = {0};

    ASSERT_EQ(parse_n(&p, s, sizeof(s) - 1, &dflt, -1), -400);
    free(p.buf);
}

TEST(target_too_long)
{
    struct ing_h1_limits lim = {65536, 16};
    struct parsed p = {0};
    const char *ok = "GET /234567890123456 HTTP/1.1\r\nHost: h\r\n\r\n"; /* 16 */
    const char *big = "GET /2345678901234567 HTTP/1.1\r\nHost: h\r\n\r\n";

    ASSERT(parse_n(&p, ok, strlen(ok), &lim, -1) > 0);
    ASSERT_EQ(parse_n(&p, big, strlen(big), &lim, -1), -414);
    free(p.buf);
}

TEST(target_too_long_before_end)
{
    struct ing_h1_limits lim = {64, 16};
    struct parsed p = {0};
    char s[200];

    /* The request line has not ended when the head outgrows max_head: 414. */
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', sizeof(s) - 5);
    ASSERT_EQ(parse_n(&p, s, sizeof(s), &lim, -1), -414);
    ASSERT_EQ(bytewise(&p, s, sizeof(s), &lim, -1), -414);
    /* A long header instead: 431. */
    snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nX: %0150d", 0);
    ASSERT_EQ(parse_n(&p, s, strlen(s), &lim, -1), -431);
    free(p.buf);
}

TEST(head_too_large)
{
    struct ing_h1_limits lim = {64, 16};
    struct parsed p = {0};
    char s[256];

    /* Exactly max_head bytes is fine; one more is not. */
    snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: h\r\nX: %032d\r\n\r\n", 0);
    ASSERT_EQ(strlen(s), 64);
    ASSERT_EQ(parse_n(&p, s, strlen(s), &lim, -1), 64);
    snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: h\r\nX: %033d\r\n\r\n", 0);
    ASSERT_EQ(parse_n(&p, s, strlen(s), &lim, -1), -431);
    ASSERT_EQ(bytewise(&p, s, strlen(s), &lim, -1), -431);
    /* A head within the limit followed by a body beyond it is fine. */
    snprintf(s, sizeof(s), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n%0100d", 0);
    ASSERT_EQ(parse_n(&p, s, strlen(s), &lim, -1), strlen(s) - 100);
    free(p.buf);
}

TEST(leading_crlf_flood_is_431)
{
    struct ing_h1_limits lim = {64, 16};
    struct parsed p = {0};
    char s[100];

    for (size_t i = 0; i < sizeof(s); i += 2)
        memcpy(s + i, "\r\n", 2);
    ASSERT_EQ(parse_n(&p, s, 64, &lim, -1), 0);
    ASSERT_EQ(parse_n(&p, s, sizeof(s), &lim, -1), -431);
    free(p.buf);
}

TEST(too_many_headers)
{
    struct parsed p = {0};
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";

    ASSERT(req(&p, s) > 0);
    p.m.max_hdrs = 2;
    size_t scan = 0;
    ASSERT_EQ(ing_h1_parse_request(&p.m, p.buf, p.len, &scan, NULL), -431);
    p.m.max_hdrs = 3;
    scan = 0;
    ASSERT(ing_h1_parse_request(&p.m, p.buf, p.len, &scan, NULL) > 0);
    free(p.buf);
}

/* ---- line endings and bytes -------------------------------------------------------------- */

TEST(bare_lf_rejected)
{
    ASSERT_EQ(rq("GET / HTTP/1.1\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\r\n\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n"), -400);
    ASSERT_EQ(rq("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    /* Caught before the head is complete. */
    ASSERT_EQ(rq("GET / HTTP/1.1\nHost"), -400);
}

TEST(bare_cr_rejected)
{
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\rX: b\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: h\r\nX\r: b\r\n\r\n"), -400);
}

TEST(control_bytes_in_values)
{
    static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    struct parsed p = {0};

    ASSERT_EQ(parse_n(&p, nul, sizeof(nul) - 1, &dflt, -1), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X: a\x01"
                                    "b\r\n"),
              -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X: a\x7f\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X: \x1b[0m\r\n"), -400);
    /* HTAB and obs-text are field content. */
    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nX: a\tb \xe9\xff\r\n\r\n") > 0);
    ASSERT_SLICE(p.m.hdrs[1].value, p.m.hdrs[1].value_len, "a\tb \xe9\xff");
    free(p.buf);
}

/* Every byte value at every offset of long values and targets, which are checked a word at a
 * time: the word-wide test must agree with the byte classes. */
TEST(every_byte_everywhere)
{
    struct parsed p = {0};
    char s[256];

    for (int c = 0; c < 256; c++) {
        bool value_ok = c == '\t' || (c >= 0x20 && c != 0x7f);
        bool target_ok = c > 0x20 && c < 0x7f;

        for (int off = 0; off < 20; off++) {
            int n = snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: h\r\nX: a%-28s\r\n\r\n", "");

            s[30 + off] = (char)c;
            int r = parse_n(&p, s, (size_t)n, &dflt, -1);
            if ((r > 0) != value_ok && !(c == '\r' || c == '\n'))
                FAIL("value byte 0x%02x at %d: %d", c, off, r);
            n = snprintf(s, sizeof(s), "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n",
                         "abcdefghijklmnopqrstuvwxyz0123");
            s[6 + off] = (char)c;
            r = parse_n(&p, s, (size_t)n, &dflt, -1);
            if ((r > 0) != target_ok && !(c == '\r' || c == '\n'))
                FAIL("target byte 0x%02x at %d: %d", c, off, r);
        }
    }
    free(p.buf);
}

TEST(obs_fold_rejected)
{
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X: a\r\n b\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X: a\r\n\tb\r\n"), -400);
    /* Whitespace between the start line and the first field (RFC 9112 §2.2). */
    ASSERT_EQ(rq("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), -400);
}

TEST(field_name_rejected)
{
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X : a\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X\t: a\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", ": a\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X(y: a\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X y: a\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "Xy\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "X\x80: a\r\n"), -400);
}

TEST(ows_trimmed)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost:h\r\nA: \t v a l \t \r\nB:\r\nC:   \r\n\r\n") > 0);
    ASSERT_SLICE(p.m.host.p, p.m.host.len, "h");
    ASSERT_SLICE(find(&p, "a")->value, find(&p, "a")->value_len, "v a l");
    ASSERT_EQ(find(&p, "b")->value_len, 0);
    ASSERT_EQ(find(&p, "c")->value_len, 0);
    free(p.buf);
}

/* ---- fields the proxy acts on ------------------------------------------------------------ */

TEST(header_ids)
{
    static const struct {
        const char *name;
        int id;
    } t[] = {
        {"content-LENGTH", ING_H1_H_CONTENT_LENGTH},
        {"Connection", ING_H1_H_CONNECTION},
        {"KEEP-ALIVE", ING_H1_H_KEEP_ALIVE},
        {"te", ING_H1_H_TE},
        {"Trailer", ING_H1_H_TRAILER},
        {"Upgrade", ING_H1_H_UPGRADE},
        {"Proxy-Connection", ING_H1_H_PROXY_X},
        {"proxy-authorization", ING_H1_H_PROXY_X},
        {"Expect", ING_H1_H_EXPECT},
        {"X-Forwarded-For", ING_H1_H_X_FORWARDED_FOR},
        {"x-forwarded-proto", ING_H1_H_X_FORWARDED_PROTO},
        {"X-Forwarded-Host", ING_H1_H_X_FORWARDED_HOST},
        {"X-Request-ID", ING_H1_H_X_REQUEST_ID},
        {"Cookie", ING_H1_H_COOKIE},
        {"Date", ING_H1_H_DATE},
        {"Server", ING_H1_H_SERVER},
        {"Hosts", ING_H1_H_OTHER},
        {"Proxy", ING_H1_H_OTHER},
        {"Content-Lengthx", ING_H1_H_OTHER},
        {"X-Forwarded-Fur", ING_H1_H_OTHER},
    };
    struct parsed p = {0};
    char tmp[256];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        snprintf(tmp, sizeof(tmp), "GET / HTTP/1.1\r\nHost: h\r\n%s: 1\r\n\r\n", t[i].name);
        ASSERT(req(&p, tmp) > 0);
        ASSERT_EQ(p.m.hdrs[1].id, t[i].id);
    }
    free(p.buf);
}

TEST(hop_by_hop_marked)
{
    struct parsed p = {0};

    ASSERT(req(&p,
               "POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n"
               "TE: trailers\r\nTrailer: X\r\nUpgrade: ws\r\nProxy-Connection: x\r\n"
               "Transfer-Encoding: chunked\r\nCookie: c\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n") > 0);
    for (unsigned i = 0; i < p.m.n_hdrs; i++) {
        int id = p.m.hdrs[i].id;
        bool hop = id == ING_H1_H_CONNECTION || id == ING_H1_H_KEEP_ALIVE || id == ING_H1_H_TE ||
                   id == ING_H1_H_TRAILER || id == ING_H1_H_UPGRADE || id == ING_H1_H_PROXY_X ||
                   id == ING_H1_H_TRANSFER_ENCODING;
        ASSERT_EQ(!!(p.m.hdrs[i].flags & ING_H1_HF_HOP), hop);
    }
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n") > 0);
    ASSERT_EQ(find(&p, "content-length")->flags, 0);
    free(p.buf);
}

TEST(connection_nominates_fields)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET / HTTP/1.1\r\nX-Foo: 1\r\nConnection: x-foo, X-BAR,,\r\nHost: h\r\n"
                   "x-bar: 2\r\nX-Baz: 3\r\nConnection: Close\r\n\r\n") > 0);
    ASSERT(find(&p, "x-foo")->flags & ING_H1_HF_HOP);
    ASSERT(find(&p, "x-bar")->flags & ING_H1_HF_HOP);
    ASSERT_EQ(find(&p, "x-baz")->flags, 0);
    ASSERT_EQ(find(&p, "host")->flags, 0);
    ASSERT(p.m.flags & ING_H1_F_CONN_CLOSE);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    free(p.buf);
}

TEST(connection_cannot_strip_host_or_length)
{
    struct parsed p = {0};

    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                   "Connection: host, content-length\r\n\r\n") > 0);
    ASSERT_EQ(find(&p, "host")->flags, 0);
    ASSERT_EQ(find(&p, "content-length")->flags, 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_LENGTH);
    free(p.buf);
}

TEST(connection_invalid_token)
{
    ASSERT_EQ(rqh("GET / HTTP/1.1", "Connection: a b\r\n"), -400);
    ASSERT_EQ(rqh("GET / HTTP/1.1", "Connection: close;x\r\n"), -400);
    ASSERT(rqh("GET / HTTP/1.1", "Connection: , close ,\r\n") > 0);
}

TEST(keep_alive_rules)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n") > 0);
    ASSERT_EQ(p.m.flags & (ING_H1_F_KEEP_ALIVE | ING_H1_F_CONN_CLOSE), ING_H1_F_CONN_CLOSE);
    ASSERT(req(&p, "GET / HTTP/1.0\r\n\r\n") > 0);
    ASSERT_EQ(p.m.minor, 0);
    ASSERT(p.m.host.p == NULL);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    ASSERT(req(&p, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
    ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    ASSERT(req(&p, "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    free(p.buf);
}

TEST(host_required_once)
{
    ASSERT_EQ(rq("GET / HTTP/1.1\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -400);
    ASSERT_EQ(rq("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), -400);
    ASSERT(rq("GET / HTTP/1.0\r\nHost: a\r\n\r\n") > 0);
}

TEST(host_invalid)
{
    static const char *const bad[] = {
        "a b",  "a/b",  "a@b",     "",       "h:",  "h:99999", "h:8x",  "h:123456",
        "[::1", "[]",   "[zz::1]", "[::1]x", "a,b", ":80",     "a:1:2", "[v1.x]",
        "a%2",  "a%zz", "a\"b",    "a;b",    "a=b", "*",       "a\\b",  "a?b",
    };
    char tmp[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tmp, sizeof(tmp), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        if (rq(tmp) != -400)
            FAIL("Host: \"%s\" accepted", bad[i]);
    }
}

TEST(host_valid)
{
    static const char *const good[] = {
        "example.com",
        "EXAMPLE.com.",
        "a-b_c~d",
        "1.2.3.4:80",
        "[::1]",
        "[2001:db8::1]:8080",
        "[::ffff:1.2.3.4]",
        "xn--bcher-kva.example",
        "h%41",
        "h:0",
        "h:65535",
    };
    struct parsed p = {0};
    char tmp[128];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(tmp, sizeof(tmp), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        if (req(&p, tmp) <= 0)
            FAIL("Host: \"%s\" refused", good[i]);
        ASSERT_SLICE(p.m.host.p, p.m.host.len, good[i]);
    }
    free(p.buf);
}

TEST(content_length)
{
    struct parsed p = {0};
    const char *s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n";

    ASSERT_EQ(req(&p, s), strlen(s));
    ASSERT_EQ(p.m.body, ING_H1_BODY_LENGTH);
    ASSERT_EQ(p.m.content_length, 42);
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n") > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_LENGTH);
    ASSERT_EQ(p.m.content_length, 0);
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n") >
           0);
    ASSERT_EQ(p.m.content_length, INT64_MAX);
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n") > 0);
    ASSERT_EQ(p.m.content_length, 7);
    free(p.buf);
}

TEST(content_length_invalid)
{
    static const char *const bad[] = {
        "-1",
        "+1",
        "1 2",
        "",
        "0x10",
        "1.0",
        "1e3",
        "\t",
        "9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999",
        "1,",
        ",1",
        "1,,1",
        "1;1",
        "١",
    };
    char tmp[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tmp, sizeof(tmp), "Content-Length: %s\r\n", bad[i]);
        if (rqh("POST / HTTP/1.1", tmp) != -400)
            FAIL("Content-Length: \"%s\" accepted", bad[i]);
    }
}

TEST(content_length_duplicates)
{
    struct parsed p = {0};

    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n") >
           0);
    ASSERT_EQ(p.m.content_length, 5);
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 , 5,5\r\n\r\n") > 0);
    ASSERT_EQ(p.m.content_length, 5);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Content-Length: 5\r\nContent-Length: 6\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Content-Length: 5, 6\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Content-Length: 5\r\nContent-Length: 5, 50\r\n"), -400);
    free(p.buf);
}

TEST(transfer_encoding_chunked)
{
    struct parsed p = {0};

    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n") > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_CHUNKED);
    ASSERT(find(&p, "transfer-encoding")->flags & ING_H1_HF_HOP);
    ASSERT(req(&p, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  chunked \r\n\r\n") > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_CHUNKED);
    free(p.buf);
}

TEST(transfer_encoding_with_length)
{
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Content-Length: 0\r\nTransfer-Encoding: gzip\r\n"), -400);
}

TEST(transfer_encoding_http10)
{
    ASSERT_EQ(rq("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400);
}

TEST(transfer_encoding_unsupported)
{
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: gzip\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked, gzip\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: identity\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: xchunked\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked;a=b\r\n"), -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
              -501);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
              -501);
}

TEST(transfer_encoding_malformed)
{
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked, chunked\r\n"), -400);
    ASSERT_EQ(
        rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chunked,\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: ,chunked\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding:\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: chu nked\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding: \"chunked\"\r\n"), -400);
    ASSERT_EQ(rqh("POST / HTTP/1.1", "Transfer-Encoding : chunked\r\n"), -400);
}

TEST(expect_continue)
{
    struct parsed p = {0};

    ASSERT(req(&p, "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                   "Content-Length: 1\r\n\r\n") > 0);
    ASSERT(p.m.flags & ING_H1_F_EXPECT_CONTINUE);
    ASSERT(req(&p, "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continued\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_EXPECT_CONTINUE));
    ASSERT(req(&p, "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_EXPECT_CONTINUE));
    free(p.buf);
}

TEST(te_trailers)
{
    struct parsed p = {0};

    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nTE: deflate;q=0.5, Trailers\r\n\r\n") > 0);
    ASSERT(p.m.flags & ING_H1_F_TE_TRAILERS);
    ASSERT(find(&p, "te")->flags & ING_H1_HF_HOP);
    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nTE: gzip\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_TE_TRAILERS));
    free(p.buf);
}

TEST(upgrade_flag)
{
    struct parsed p = {0};

    ASSERT(
        req(&p, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") >
        0);
    ASSERT(p.m.flags & ING_H1_F_UPGRADE);
    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_UPGRADE));
    ASSERT(req(&p, "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_UPGRADE));
    ASSERT(req(&p, "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n") > 0);
    ASSERT(!(p.m.flags & ING_H1_F_UPGRADE));
    free(p.buf);
}

/* ---- message boundaries and incremental parsing ----------------------------------------- */

TEST(leading_empty_lines)
{
    struct parsed p = {0};
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";

    ASSERT_EQ(req(&p, s), strlen(s));
    ASSERT_EQ(p.m.head_len, strlen(s));
    ASSERT_SLICE(p.m.method.p, p.m.method.len, "GET");
    ASSERT_EQ(bytewise(&p, s, strlen(s), &dflt, -1), strlen(s));
    ASSERT_SLICE(p.m.method.p, p.m.method.len, "GET");
    ASSERT_EQ(rq("\r\n"), 0);
    ASSERT_EQ(rq("\r\n\r\n\r"), 0);
    free(p.buf);
}

TEST(pipelined)
{
    const char *s = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                    "GET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\n";
    struct ing_h1_hdr hdrs[8];
    struct ing_h1_msg m = {.hdrs = hdrs, .max_hdrs = 8};
    size_t scan = 0, off;
    int r;

    r = ing_h1_parse_request(&m, s, strlen(s), &scan, NULL);
    ASSERT(r > 0);
    ASSERT_SLICE(m.path.p, m.path.len, "/a");
    ASSERT_EQ(m.content_length, 3);
    off = (size_t)r + m.content_length;
    scan = 0;
    r = ing_h1_parse_request(&m, s + off, strlen(s) - off, &scan, NULL);
    ASSERT(r > 0);
    ASSERT_SLICE(m.path.p, m.path.len, "/b");
    off += (size_t)r;
    scan = 0;
    ASSERT_EQ(ing_h1_parse_request(&m, s + off, strlen(s) - off, &scan, NULL), 0);
}

static const char *const corpus[] = {
    "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "\r\nGET /x?y HTTP/1.1\r\nHost: [::1]:80\r\nConnection: x-a, close\r\nX-A: 1\r\n\r\n",
    "POST http://h/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
    "PUT /u HTTP/1.0\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\nX:  v  \r\n\r\nbody!",
    "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: basic x\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX : b\r\n\r\n",
    "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "\r\n\r\n\r\n",
};

TEST(bytewise_equals_whole_request)
{
    for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        struct parsed a = {0}, b = {0};
        size_t n = strlen(corpus[i]);
        int ra = parse_n(&a, corpus[i], n, &dflt, -1);
        int rb = bytewise(&b, corpus[i], n, &dflt, -1);

        ASSERT_EQ(ra, rb);
        if (ra > 0)
            same_msg(&a, &b);
        free(a.buf);
        free(b.buf);
    }
}

TEST(incomplete_prefixes)
{
    const char *s = "GET /p HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
    struct parsed p = {0};

    for (size_t k = 0; k < strlen(s); k++)
        ASSERT_EQ(parse_n(&p, s, k, &dflt, -1), 0);
    ASSERT_EQ(parse_n(&p, s, strlen(s), &dflt, -1), strlen(s));
    free(p.buf);
}

TEST(scan_advances)
{
    const char *s = "GET /p HTTP/1.1\r\nHost: h\r\nA: b\r\n";
    struct ing_h1_hdr hdrs[4];
    struct ing_h1_msg m = {.hdrs = hdrs, .max_hdrs = 4};
    size_t scan = 0;

    /* The next call must not search again from the start: O(n) over a trickled head. */
    ASSERT_EQ(ing_h1_parse_request(&m, s, strlen(s), &scan, NULL), 0);
    ASSERT(scan + 1 >= strlen(s));
    ASSERT(scan <= strlen(s));
    scan = 0;
    ASSERT_EQ(ing_h1_parse_response(&m, "HTTP/1.1 200 OK\r\nA: b", 21, &scan, NULL, 0), 0);
    ASSERT_EQ(scan, 21);
}

/* ---- responses ---------------------------------------------------------------------------- */

TEST(response_basic)
{
    struct parsed p = {0};
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello world!";

    ASSERT_EQ(resp(&p, s, ING_H1_M_GET), strlen(s) - 12);
    ASSERT_EQ(p.m.status, 200);
    ASSERT_EQ(p.m.minor, 1);
    ASSERT_SLICE(p.m.reason.p, p.m.reason.len, "OK");
    ASSERT_EQ(p.m.body, ING_H1_BODY_LENGTH);
    ASSERT_EQ(p.m.content_length, 12);
    ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    ASSERT_EQ(find(&p, "server")->id, ING_H1_H_SERVER);
    ASSERT(resp(&p, "HTTP/1.1 404 Not  Found\t!\r\nContent-Length: 0\r\n\r\n", 1) > 0);
    ASSERT_SLICE(p.m.reason.p, p.m.reason.len, "Not  Found\t!");
    free(p.buf);
}

TEST(response_empty_reason)
{
    struct parsed p = {0};

    ASSERT(resp(&p, "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.status, 200);
    ASSERT_EQ(p.m.reason.len, 0);
    ASSERT(resp(&p, "HTTP/1.0 200 \r\nContent-Length: 0\r\n\r\n", ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.reason.len, 0);
    ASSERT_EQ(p.m.minor, 0);
    free(p.buf);
}

TEST(response_status_line_rejected)
{
    static const char *const bad[] = {
        "HTTP/1.1 99 X",   "HTTP/1.1 600 X",    "HTTP/1.1 2000 X",
        "HTTP/1.1 20x X",  "HTTP/2 200 X",      "HTTP/1.2 200 X",
        "HTTP/1.1  200 X", "HTTP/1.1 200X",     "http/1.1 200 X",
        "HTTP/1.1",        "HTTP/1.1 200 \x01", "HTTP/1.1 200 a\x7f",
        "ICY 200 OK",      "HTTP/1.1 -20 X",    "",
    };
    char tmp[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(tmp, sizeof(tmp), "%s\r\nContent-Length: 0\r\n\r\n", bad[i]);
        if (rs(tmp, ING_H1_M_GET) != -502)
            FAIL("status line \"%s\" accepted", bad[i]);
    }
}

TEST(response_malformed_is_502)
{
    ASSERT_EQ(rs("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n x\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("\r\nHTTP/1.1 200 OK\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,,\r\n\r\n", 1), -502);
}

TEST(response_too_large_is_502)
{
    struct ing_h1_limits lim = {32, 16};
    struct parsed p = {0};
    const char *s = "HTTP/1.1 200 OK\r\nX: 0123456789abcdef\r\n";

    ASSERT_EQ(parse_n(&p, s, strlen(s), &lim, ING_H1_M_GET), -502);
    free(p.buf);
}

TEST(response_eof_framing)
{
    struct parsed p = {0};

    ASSERT(resp(&p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_EOF);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    /* Other transfer codings are refused: weir would drop them when re-framing. */
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ING_H1_M_GET), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 1), -502);
    free(p.buf);
}

TEST(response_chunked)
{
    struct parsed p = {0};

    ASSERT(resp(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_CHUNKED);
    ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    ASSERT(resp(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 1) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_CHUNKED);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 1), -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 1), -502);
    free(p.buf);
}

TEST(response_te_with_length_or_http10)
{
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 1),
              -502);
    ASSERT_EQ(rs("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
              -502);
    ASSERT_EQ(rs("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1), -502);
}

TEST(response_no_body_statuses)
{
    static const char *const heads[] = {
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", /* answering HEAD, below */
    };
    struct parsed p = {0};

    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        int method = i == 5 ? ING_H1_M_HEAD : ING_H1_M_GET;

        ASSERT_EQ(resp(&p, heads[i], method), strlen(heads[i]));
        ASSERT_EQ(p.m.body, ING_H1_BODY_NONE);
        ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    }
    ASSERT(resp(&p, heads[1], ING_H1_M_GET) > 0);
    ASSERT(p.m.flags & ING_H1_F_UPGRADE);
    ASSERT(resp(&p, heads[4], ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.content_length, 100);
    free(p.buf);
}

TEST(response_to_connect)
{
    struct parsed p = {0};

    ASSERT(resp(&p, "HTTP/1.1 200 Connection Established\r\n\r\n", ING_H1_M_CONNECT) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_NONE);
    ASSERT(resp(&p, "HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\n", ING_H1_M_CONNECT) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_LENGTH);
    ASSERT(resp(&p, "HTTP/1.1 200 OK\r\n\r\n", ING_H1_M_GET) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_EOF);
    free(p.buf);
}

TEST(response_http10_keep_alive)
{
    struct parsed p = {0};

    ASSERT(resp(&p, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", 1) >
           0);
    ASSERT(p.m.flags & ING_H1_F_KEEP_ALIVE);
    ASSERT(resp(&p, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 1) > 0);
    ASSERT_EQ(p.m.body, ING_H1_BODY_EOF);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    ASSERT(resp(&p, "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 1) > 0);
    ASSERT(!(p.m.flags & ING_H1_F_KEEP_ALIVE));
    ASSERT(resp(&p, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", 1) > 0);
    ASSERT_EQ(p.m.flags & (ING_H1_F_KEEP_ALIVE | ING_H1_F_CONN_CLOSE), ING_H1_F_CONN_CLOSE);
    free(p.buf);
}

TEST(response_ignores_host_and_request_flags)
{
    struct parsed p = {0};

    ASSERT(resp(&p,
                "HTTP/1.1 200 OK\r\nHost: a b\r\nHost: c\r\nExpect: 100-continue\r\n"
                "Content-Length: 0\r\n\r\n",
                ING_H1_M_GET) > 0);
    ASSERT(p.m.host.p == NULL);
    ASSERT(!(p.m.flags & ING_H1_F_EXPECT_CONTINUE));
    free(p.buf);
}

TEST(bytewise_equals_whole_response)
{
    static const char *const rcorpus[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-a\r\nX-A: 1\r\n\r\nhello",
        "HTTP/1.1 204\r\n\r\n",
        "HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof(rcorpus) / sizeof(rcorpus[0]); i++) {
        struct parsed a = {0}, b = {0};
        size_t n = strlen(rcorpus[i]);
        int ra = parse_n(&a, rcorpus[i], n, &dflt, ING_H1_M_GET);
        int rb = bytewise(&b, rcorpus[i], n, &dflt, ING_H1_M_GET);

        ASSERT_EQ(ra, rb);
        if (ra > 0)
            same_msg(&a, &b);
        free(a.buf);
        free(b.buf);
    }
}

/* ---- helpers ------------------------------------------------------------------------------ */

TEST(name_is_and_is_token)
{
    struct ing_h1_hdr h = {.name = "X-Forwarded-For", .name_len = 15};

    ASSERT(ing_h1_name_is(&h, "x-forwarded-for", 15));
    ASSERT(!ing_h1_name_is(&h, "x-forwarded-fo", 14));
    ASSERT(!ing_h1_name_is(&h, "x-forwarded-fox", 15));
    ASSERT(ing_h1_is_token("GET", 3));
    ASSERT(ing_h1_is_token("!#$%&'*+-.^_`|~09azAZ", 21));
    ASSERT(!ing_h1_is_token("", 0));
    ASSERT(!ing_h1_is_token("a b", 3));
    ASSERT(!ing_h1_is_token("a:b", 3));
    ASSERT(!ing_h1_is_token("a\"", 2));
    ASSERT(!ing_h1_is_token("\x80", 1));
}

/* ---- chunked ------------------------------------------------------------------------------ */

struct sink {
    char data[1 << 17];
    size_t len;
    unsigned calls;
};

static void collect(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;

    ASSERT(len > 0);
    ASSERT(s->len + len <= sizeof(s->data));
    memcpy(s->data + s->len, data, len);
    s->len += len;
    s->calls++;
}

/* Scans <s> whole from an exact-size copy; returns the scanner's result. */
static long chunked(struct ing_h1_chunked *c, const char *s, size_t n, struct sink *out)
{
    char *copy = malloc(n ? n : 1);
    long r;

    memcpy(copy, s, n);
    memset(c, 0, sizeof(*c));
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    r = ing_h1_chunked_scan(c, copy, n, out ? collect : NULL, out);
    free(copy);
    return r;
}

static long ck(const char *s)
{
    struct ing_h1_chunked c;

    return chunked(&c, s, strlen(s), NULL);
}

TEST(chunked_simple)
{
    struct ing_h1_chunked c;
    struct sink *out = calloc(1, sizeof(*out));
    const char *s = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";

    ASSERT_EQ(chunked(&c, s, strlen(s), out), strlen(s));
    ASSERT_EQ(c.done, 1);
    ASSERT_EQ(c.data_bytes, 12);
    ASSERT_SLICE(out->data, out->len, "hello, world");
    ASSERT_EQ(ing_h1_chunked_scan(&c, "x", 1, NULL, NULL), 0);
    free(out);
}

TEST(chunked_stops_at_end)
{
    struct ing_h1_chunked c;
    const char *s = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";

    ASSERT_EQ(chunked(&c, s, strlen(s), NULL), strlen("3\r\nabc\r\n0\r\n\r\n"));
    ASSERT_EQ(c.done, 1);
    ASSERT_EQ(c.data_bytes, 3);
}

TEST(chunked_incomplete)
{
    struct ing_h1_chunked c;
    const char *s = "5\r\nhel";

    ASSERT_EQ(chunked(&c, s, strlen(s), NULL), strlen(s));
    ASSERT_EQ(c.done, 0);
    ASSERT_EQ(c.data_bytes, 3);
    ASSERT_EQ(c.remaining, 2);
}

TEST(chunked_hex_sizes)
{
    struct ing_h1_chunked c;
    struct sink *out = calloc(1, sizeof(*out));
    char s[256];

    snprintf(s, sizeof(s), "a\r\n0123456789\r\nB\r\n0123456789a\r\n0001f\r\n%031d\r\n00\r\n\r\n",
             0);
    ASSERT_EQ(chunked(&c, s, strlen(s), out), strlen(s));
    ASSERT_EQ(c.done, 1);
    ASSERT_EQ(c.data_bytes, 10 + 11 + 31);
    ASSERT_EQ(out->len, 52);
    free(out);
}

TEST(chunked_extensions)
{
    static const char *const good[] = {
        "5;a\r\nhello\r\n0\r\n\r\n",
        "5;a=b\r\nhello\r\n0\r\n\r\n",
        "5;a=b;c;d=e\r\nhello\r\n0;last\r\n\r\n",
        "5 ; a = b\r\nhello\r\n0\r\n\r\n",
        "5\t;a\t=\t\"q s\\\"x;\"\r\nhello\r\n0\r\n\r\n",
        "5;a=\"\"\r\nhello\r\n0\r\n\r\n",
        "5;a=\"\xe9\"  ;b\r\nhello\r\n0\r\n\r\n",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (ck(good[i]) != (long)strlen(good[i]))
            FAIL("extension refused: %s", good[i]);
}

TEST(chunked_bad_extensions)
{
    static const char *const bad[] = {
        "5;\r\nhello\r\n",         "5;a=\r\nhello\r\n",         "5 \r\nhello\r\n",
        "5;a=b \r\nhello\r\n",     "5;a \r\nhello\r\n",         "5;a=\"x\r\nhello\r\n",
        "5;a b\r\nhello\r\n",      "5;=b\r\nhello\r\n",         "5;a=b=c\r\nhello\r\n",
        "5;a=\"x\"y\r\nhello\r\n", "5;a=\"\x01\"\r\nhello\r\n", "5;a=\"\\\x01\"\r\nhello\r\n",
        "5;a\x80\r\nhello\r\n",    "5,a\r\nhello\r\n",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ck(bad[i]) != -400)
            FAIL("extension accepted: %s", bad[i]);
}

TEST(chunked_line_too_long)
{
    char *s = malloc(8192);
    size_t n;

    /* "1;" + name: 4096 bytes before the CR is the limit. */
    memcpy(s, "1;", 2);
    memset(s + 2, 'x', 4094);
    memcpy(s + 4096, "\r\na\r\n0\r\n\r\n", 11);
    n = strlen(s);
    ASSERT_EQ(ck(s), n);
    memcpy(s, "1;", 2);
    memset(s + 2, 'x', 4095);
    memcpy(s + 4097, "\r\na\r\n0\r\n\r\n", 11);
    ASSERT_EQ(ck(s), -400);
    memset(s, '0', 5000);
    s[5000] = '\0';
    ASSERT_EQ(ck(s), -400);
    free(s);
}

TEST(chunked_size_overflow)
{
    struct ing_h1_chunked c;
    const char *max = "7fffffffffffffff\r\n";
    const char *zeros = "000000000000000000000001\r\nx\r\n0\r\n\r\n";

    ASSERT_EQ(chunked(&c, max, strlen(max), NULL), strlen(max));
    ASSERT_EQ(c.remaining, INT64_MAX);
    ASSERT_EQ(ck("8000000000000000\r\n"), -400);
    ASSERT_EQ(ck("ffffffffffffffff\r\n"), -400);
    ASSERT_EQ(ck("10000000000000000\r\n"), -400);
    ASSERT_EQ(ck("7fffffffffffffff0\r\n"), -400);
    ASSERT_EQ(ck(zeros), strlen(zeros));
}

TEST(chunked_bad_size)
{
    static const char *const bad[] = {
        "-5\r\nhello\r\n",  "+5\r\nhello\r\n", "x\r\n",     "\r\n", " 5\r\nhello\r\n",
        "0x5\r\nhello\r\n", "5g\r\nhello\r\n", ";a\r\n",    "\n",   "5\r\r\nhello\r\n",
        "5\n\nhello\r\n",   "\xff\r\n",        "5\x01\r\n",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ck(bad[i]) != -400)
            FAIL("size accepted: %s", bad[i]);
}

TEST(chunked_bad_crlf)
{
    ASSERT_EQ(ck("5\nhello\r\n0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhelloX\r\n0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhelloX\n0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\n\n0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\n0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\r\r0\r\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\r\n0\r\n\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\r\n0\n\r\n"), -400);
    ASSERT_EQ(ck("5\r\nhello\r\n0\r\n\rX"), -400);
    ASSERT_EQ(ck("5\r\nhello world\r\n0\r\n\r\n"), -400);
}

TEST(chunked_trailers)
{
    struct ing_h1_chunked c;
    const char *s = "1\r\nx\r\n0\r\nExpires: never\r\nX-Sum:abc \t d\r\nEmpty:\r\n\r\n";

    ASSERT_EQ(chunked(&c, s, strlen(s), NULL), strlen(s));
    ASSERT_EQ(c.done, 1);
    ASSERT_EQ(c.data_bytes, 1);
    ASSERT_EQ(ck("0\r\nA: b\r\n c\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\n A: b\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\nA : b\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\nA\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\n: b\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\nA: b\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\nA: b\rc\r\n\r\n"), -400);
    ASSERT_EQ(ck("0\r\nA: \x7f\r\n\r\n"), -400);
    static const char nul[] = "0\r\nA: \0\r\n\r\n";
    ASSERT_EQ(chunked(&c, nul, sizeof(nul) - 1, NULL), -400);
}

TEST(chunked_trailer_too_large)
{
    size_t n = 70000;
    char *s = malloc(n + 1);
    struct ing_h1_chunked c;

    memcpy(s, "0\r\nX: ", 6);
    memset(s + 6, 'v', n - 6);
    s[n] = '\0';
    ASSERT_EQ(chunked(&c, s, n, NULL), -400);
    /* Just under the limit, in many lines, is fine. */
    size_t off = 3;
    memcpy(s, "0\r\n", 3);
    while (off + 1000 < 65000) {
        memcpy(s + off, "X: ", 3);
        memset(s + off + 3, 'v', 995);
        memcpy(s + off + 998, "\r\n", 2);
        off += 1000;
    }
    memcpy(s + off, "\r\n", 2);
    off += 2;
    ASSERT_EQ(chunked(&c, s, off, NULL), off);
    ASSERT_EQ(c.done, 1);
    free(s);
}

static const char chunked_body[] = "3;ext=\"a;b\"\r\nabc\r\n10\r\n0123456789abcdef\r\n1\r\n\n\r\n"
                                   "0;end\r\nTrailer-A: 1\r\nB: two words\r\n\r\n";

TEST(chunked_split_at_every_offset)
{
    size_t n = sizeof(chunked_body) - 1;
    struct sink *whole = calloc(1, sizeof(*whole)), *part = calloc(1, sizeof(*part));
    struct ing_h1_chunked a, b;

    ASSERT_EQ(chunked(&a, chunked_body, n, whole), n);
    ASSERT_EQ(a.done, 1);
    ASSERT_EQ(a.data_bytes, 3 + 16 + 1);
    ASSERT_SLICE(whole->data, whole->len, "abc0123456789abcdef\n");
    for (size_t k = 0; k <= n; k++) {
        char *x = malloc(k ? k : 1), *y = malloc(n - k ? n - k : 1);
        long r1, r2;

        memcpy(x, chunked_body, k);
        memcpy(y, chunked_body + k, n - k);
        memset(&b, 0, sizeof(b));
        memset(part, 0, sizeof(*part));
        r1 = ing_h1_chunked_scan(&b, x, k, collect, part);
        r2 = ing_h1_chunked_scan(&b, y, n - k, collect, part);
        ASSERT_EQ(r1, k);
        ASSERT_EQ(r1 + r2, n);
        ASSERT_EQ(b.done, 1);
        ASSERT_EQ(b.data_bytes, a.data_bytes);
        ASSERT_EQ(part->len, whole->len);
        ASSERT(memcmp(part->data, whole->data, whole->len) == 0);
        free(x);
        free(y);
    }
    free(whole);
    free(part);
}

TEST(chunked_bytewise)
{
    size_t n = sizeof(chunked_body) - 1;
    struct sink *out = calloc(1, sizeof(*out));
    struct ing_h1_chunked c = {0};

    for (size_t i = 0; i < n; i++) {
        char ch = chunked_body[i];

        ASSERT_EQ(ing_h1_chunked_scan(&c, &ch, 1, collect, out), 1);
        ASSERT_EQ(c.done, i == n - 1);
    }
    ASSERT_EQ(c.data_bytes, 20);
    ASSERT_SLICE(out->data, out->len, "abc0123456789abcdef\n");
    free(out);
}

TEST(chunked_error_at_every_split)
{
    /* A bad CRLF after data is caught whichever way the bytes arrive. */
    const char *s = "3\r\nabc\r\n2\r\nxyZ\r\n0\r\n\r\n";
    size_t n = strlen(s);

    for (size_t k = 0; k <= n; k++) {
        struct ing_h1_chunked c = {0};
        long r1 = ing_h1_chunked_scan(&c, s, k, NULL, NULL), r2 = 0;

        if (r1 >= 0)
            r2 = ing_h1_chunked_scan(&c, s + k, n - k, NULL, NULL);
        ASSERT(r1 == -400 || r2 == -400);
    }
}

TEST(chunked_large_chunk_data_bytes)
{
    struct ing_h1_chunked c = {0};
    char *blk = malloc(65536);
    uint64_t total = 0;

    memset(blk, 'z', 65536);
    ASSERT_EQ(ing_h1_chunked_scan(&c, "100000\r\n", 8, NULL, NULL), 8);
    ASSERT_EQ(c.remaining, 0x100000);
    for (int i = 0; i < 16; i++) {
        ASSERT_EQ(ing_h1_chunked_scan(&c, blk, 65536, NULL, NULL), 65536);
        total += 65536;
        ASSERT_EQ(c.data_bytes, total);
    }
    ASSERT_EQ(c.remaining, 0);
    ASSERT_EQ(ing_h1_chunked_scan(&c, "\r\n0\r\n\r\n", 7, NULL, NULL), 7);
    ASSERT_EQ(c.done, 1);
    free(blk);
}
