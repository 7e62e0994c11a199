/* tests/fuzz/fuzz_h1_request.c -- libFuzzer driver for ing_h1_parse_request().
 *
 * The input is one request stream. It is parsed whole and then again in pieces (byte by byte,
 * and at split points derived from the input), each piece from a fresh exact-size copy so that
 * ASan sees any read past the bytes received so far; all ways must agree. Accepted heads are
 * checked against the invariants the proxy relies on, and whatever follows a head is parsed as
 * the next pipelined request. Two limit sets run: the defaults and tight ones that reach the
 * 414/431 paths. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weir/h1.h>

#define NHDRS 64

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

struct run {
    struct ing_h1_msg m;
    struct ing_h1_hdr hdrs[NHDRS];
    char *buf; /* the copy the final call parsed: slices point into it */
    int r;
};

struct conf {
    struct ing_h1_limits lim;
    uint16_t max_hdrs;
};

static const struct conf confs[] = {{{65536, 8192}, NHDRS}, {{200, 40}, 4}};

static char *dup(const uint8_t *data, size_t n)
{
    char *p = malloc(n ? n : 1);

    memcpy(p, data, n);
    return p;
}

static bool in(const char *buf, size_t n, const char *p, size_t len)
{
    return p >= buf && p + len <= buf + n;
}

static void check_slice(const struct run *x, struct wr_str s, bool may_be_null)
{
    if (s.p == NULL) {
        CHECK(may_be_null && s.len == 0);
        return;
    }
    CHECK(in(x->buf, (size_t)x->r, s.p, s.len));
}

static bool is_token(const char *s, size_t n)
{
    return ing_h1_is_token(s, n);
}

/* What every accepted request head must satisfy. */
static void check_accepted(const struct run *x, size_t len, const struct conf *c)
{
    const struct ing_h1_msg *m = &x->m;
    size_t n = (size_t)x->r;

    CHECK(n <= len && n == m->head_len && n <= c->lim.max_head && n >= 4);
    CHECK(memcmp(x->buf + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(m->n_hdrs <= c->max_hdrs && m->minor <= 1 && m->status == 0);
    check_slice(x, m->method, false);
    CHECK(is_token(m->method.p, m->method.len) && m->method.len <= 32);
    check_slice(x, m->target, false);
    CHECK(m->target.len <= c->lim.max_target);
    for (size_t i = 0; i < m->target.len; i++)
        CHECK(m->target.p[i] > 0x20 && m->target.p[i] < 0x7f);
    if (m->path.p != NULL && !in(x->buf, n, m->path.p, m->path.len))
        CHECK(m->path.len == 1 && m->path.p[0] == '/' && (m->flags & ING_H1_F_ABSOLUTE_FORM));
    check_slice(x, m->query, true);
    check_slice(x, m->authority, true);
    check_slice(x, m->host, true);
    if (m->method_id == ING_H1_M_CONNECT)
        CHECK(m->authority.len == m->target.len && m->path.p == NULL);
    else
        CHECK(m->path.len >= 1);
    if (m->flags & ING_H1_F_ABSOLUTE_FORM)
        CHECK(m->authority.len > 0);
    CHECK(m->minor == 0 || m->host.p != NULL);
    CHECK(!((m->flags & ING_H1_F_KEEP_ALIVE) && (m->flags & ING_H1_F_CONN_CLOSE)));
    CHECK(m->body <= ING_H1_BODY_CHUNKED);
    CHECK(m->body != ING_H1_BODY_CHUNKED || m->minor == 1);
    CHECK(m->content_length == 0 || m->body == ING_H1_BODY_LENGTH);
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];

        CHECK(in(x->buf, n, h->name, h->name_len) && is_token(h->name, h->name_len));
        CHECK(h->name[h->name_len] == ':');
        CHECK(in(x->buf, n, h->value, h->value_len));
        for (size_t k = 0; k < h->value_len; k++)
            CHECK(h->value[k] != '\r' && h->value[k] != '\n' && h->value[k] != 0);
        if (h->value_len > 0)
            CHECK(h->value[0] != ' ' && h->value[0] != '\t' && h->value[h->value_len - 1] != ' ' &&
                  h->value[h->value_len - 1] != '\t');
        if (h->id == ING_H1_H_TRANSFER_ENCODING || h->id == ING_H1_H_CONNECTION)
            CHECK(h->flags & ING_H1_HF_HOP);
        if (h->id == ING_H1_H_CONTENT_LENGTH || h->id == ING_H1_H_HOST)
            CHECK(!(h->flags & ING_H1_HF_HOP));
        if (h->id == ING_H1_H_TRANSFER_ENCODING)
            CHECK(m->body == ING_H1_BODY_CHUNKED);
    }
}

static void check_result(const struct run *x, size_t len, const struct conf *c)
{
    if (x->r > 0)
        check_accepted(x, len, c);
    else
        CHECK(x->r == 0 || x->r == -400 || x->r == -414 || x->r == -431 || x->r == -501 ||
              x->r == -505);
    if (x->r == 0)
        CHECK(len <= c->lim.max_head);
}

/* Parses data[0..len) fed in the pieces ending at <cuts> (ascending, < len), then whole. With
 * <copy> every piece is a fresh exact-size copy; without, only the last one is (cheaper for
 * long inputs fed byte by byte). */
static void parse(struct run *x, const uint8_t *data, size_t len, const struct conf *c,
                  const size_t *cuts, size_t ncuts, bool copy)
{
    size_t scan = 0;

    memset(&x->m, 0, sizeof(x->m));
    x->buf = NULL;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t k = i < ncuts ? cuts[i] : len, again = 0;
        const char *p = (const char *)data;

        free(x->buf);
        x->buf = NULL;
        if (copy || i == ncuts)
            p = x->buf = dup(data, k);
        x->m.hdrs = x->hdrs;
        x->m.max_hdrs = c->max_hdrs;
        x->r = ing_h1_parse_request(&x->m, p, k, &scan, &c->lim);
        if (x->r != 0 && x->buf == NULL) { /* so that the slices point into x->buf */
            x->buf = dup(data, k);
            CHECK(ing_h1_parse_request(&x->m, x->buf, k, &again, &c->lim) == x->r);
        }
        if (x->r != 0 || i == ncuts) {
            check_result(x, k, c);
            return;
        }
    }
}

#define SAME(a, b, f) CHECK((a)->m.f == (b)->m.f)
#define SAME_OFF(a, b, s)                                                                          \
    CHECK((a)->m.s.len == (b)->m.s.len && ((a)->m.s.p == NULL) == ((b)->m.s.p == NULL) &&          \
          ((a)->m.s.p == NULL || !memcmp((a)->m.s.p, (b)->m.s.p, (a)->m.s.len)))

static void same(const struct run *a, const struct run *b)
{
    CHECK(a->r == b->r);
    if (a->r <= 0)
        return;
    SAME(a, b, method_id);
    SAME(a, b, minor);
    SAME(a, b, body);
    SAME(a, b, flags);
    SAME(a, b, content_length);
    SAME(a, b, head_len);
    SAME(a, b, n_hdrs);
    SAME_OFF(a, b, method);
    SAME_OFF(a, b, target);
    SAME_OFF(a, b, path);
    SAME_OFF(a, b, query);
    SAME_OFF(a, b, authority);
    SAME_OFF(a, b, host);
    CHECK(a->m.target.p - a->buf == b->m.target.p - b->buf);
    for (unsigned i = 0; i < a->m.n_hdrs; i++) {
        CHECK(a->hdrs[i].name - a->buf == b->hdrs[i].name - b->buf);
        CHECK(a->hdrs[i].value - a->buf == b->hdrs[i].value - b->buf);
        CHECK(a->hdrs[i].value_len == b->hdrs[i].value_len);
        CHECK(a->hdrs[i].name_len == b->hdrs[i].name_len);
        CHECK(a->hdrs[i].id == b->hdrs[i].id && a->hdrs[i].flags == b->hdrs[i].flags);
    }
}

static void one(const uint8_t *data, size_t len, const struct conf *c)
{
    static struct run whole, piece;
    static size_t cuts[4096];
    size_t n = 0;
    uint64_t h = 0x9e3779b97f4a7c15u ^ len;

    parse(&whole, data, len, c, NULL, 0, true);

    /* Byte by byte: from private copies while that stays cheap. */
    for (size_t k = 0; k < len && n < sizeof(cuts) / sizeof(cuts[0]); k++)
        cuts[n++] = k;
    parse(&piece, data, len, c, cuts, n, len <= 512);
    same(&whole, &piece);
    free(piece.buf);

    /* A few arbitrary splits. */
    for (size_t k = 0; k < len; k++)
        h = (h ^ data[k]) * 0x100000001b3u;
    for (int round = 0; round < 3 && len > 1; round++) {
        size_t a = (size_t)(h % len), b;

        h = h * 6364136223846793005u + 1442695040888963407u;
        b = (size_t)(h % len);
        cuts[0] = a < b ? a : b;
        cuts[1] = a < b ? b : a;
        parse(&piece, data, len, c, cuts, cuts[0] == cuts[1] ? 1 : 2, true);
        same(&whole, &piece);
        free(piece.buf);
    }

    /* The head alone parses the same, and whatever follows is the next request. */
    if (whole.r > 0) {
        parse(&piece, data, (size_t)whole.r, c, NULL, 0, true);
        same(&whole, &piece);
        free(piece.buf);
        if ((size_t)whole.r < len) {
            parse(&piece, data + whole.r, len - (size_t)whole.r, c, NULL, 0, true);
            free(piece.buf);
        }
    }
    free(whole.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < sizeof(confs) / sizeof(confs[0]); i++)
        one(data, len, &confs[i]);
    return 0;
}
