/* tests/fuzz/fuzz_h1_response.c -- libFuzzer driver for ing_h1_parse_response().
 *
 * The input is one response stream, parsed as the answer to GET, HEAD and CONNECT, whole and
 * in pieces (byte by byte, and at split points derived from the input) from fresh exact-size
 * copies; all ways must agree, and accepted heads must satisfy the framing invariants. */
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
    char *buf;
    int r;
};

static const struct ing_h1_limits lims[] = {{65536, 8192}, {160, 40}};
static const int methods[] = {ING_H1_M_GET, ING_H1_M_HEAD, ING_H1_M_CONNECT};

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

static void check_accepted(const struct run *x, size_t len, const struct ing_h1_limits *lim,
                           int method)
{
    const struct ing_h1_msg *m = &x->m;
    size_t n = (size_t)x->r;

    CHECK(n <= len && n == m->head_len && n <= lim->max_head && n >= 16);
    CHECK(memcmp(x->buf, "HTTP/1.", 7) == 0 && memcmp(x->buf + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(m->status >= 100 && m->status <= 599 && m->minor <= 1 && m->n_hdrs <= NHDRS);
    CHECK(m->method.p == NULL && m->target.p == NULL && m->host.p == NULL);
    CHECK(in(x->buf, n, m->reason.p, m->reason.len));
    CHECK(m->body <= ING_H1_BODY_EOF);
    if (method == ING_H1_M_HEAD || m->status < 200 || m->status == 204 || m->status == 304)
        CHECK(m->body == ING_H1_BODY_NONE);
    if (method == ING_H1_M_CONNECT && m->status / 100 == 2)
        CHECK(m->body == ING_H1_BODY_NONE);
    if (m->body == ING_H1_BODY_EOF)
        CHECK(!(m->flags & ING_H1_F_KEEP_ALIVE));
    if (m->body == ING_H1_BODY_CHUNKED)
        CHECK(m->minor == 1);
    CHECK(!((m->flags & ING_H1_F_KEEP_ALIVE) && (m->flags & ING_H1_F_CONN_CLOSE)));
    for (unsigned i = 0; i < m->n_hdrs; i++) {
        const struct ing_h1_hdr *h = &m->hdrs[i];

        CHECK(in(x->buf, n, h->name, h->name_len) && ing_h1_is_token(h->name, h->name_len));
        CHECK(in(x->buf, n, h->value, h->value_len) && h->name[h->name_len] == ':');
        for (size_t k = 0; k < h->value_len; k++)
            CHECK(h->value[k] != '\r' && h->value[k] != '\n' && h->value[k] != 0);
        if (h->id == ING_H1_H_TRANSFER_ENCODING)
            CHECK((h->flags & ING_H1_HF_HOP) && m->minor == 1);
    }
}

static void parse(struct run *x, const uint8_t *data, size_t len, const struct ing_h1_limits *lim,
                  int method, const size_t *cuts, size_t ncuts, bool copy)
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
        x->m.max_hdrs = NHDRS;
        x->r = ing_h1_parse_response(&x->m, p, k, &scan, lim, method);
        if (x->r != 0 && x->buf == NULL) {
            x->buf = dup(data, k);
            CHECK(ing_h1_parse_response(&x->m, x->buf, k, &again, lim, method) == x->r);
        }
        if (x->r != 0 || i == ncuts) {
            if (x->r > 0)
                check_accepted(x, k, lim, method);
            else
                CHECK(x->r == 0 || x->r == -502);
            if (x->r == 0)
                CHECK(k <= lim->max_head);
            return;
        }
    }
}

static void same(const struct run *a, const struct run *b)
{
    CHECK(a->r == b->r);
    if (a->r <= 0)
        return;
    CHECK(a->m.status == b->m.status && a->m.minor == b->m.minor && a->m.body == b->m.body);
    CHECK(a->m.flags == b->m.flags && a->m.content_length == b->m.content_length);
    CHECK(a->m.head_len == b->m.head_len && a->m.n_hdrs == b->m.n_hdrs);
    CHECK(a->m.reason.p - a->buf == b->m.reason.p - b->buf && a->m.reason.len == b->m.reason.len);
    for (unsigned i = 0; i < a->m.n_hdrs; i++) {
        CHECK(a->hdrs[i].name - a->buf == b->hdrs[i].name - b->buf);
        CHECK(a->hdrs[i].value - a->buf == b->hdrs[i].value - b->buf);
        CHECK(a->hdrs[i].value_len == b->hdrs[i].value_len);
        CHECK(a->hdrs[i].name_len == b->hdrs[i].name_len);
        CHECK(a->hdrs[i].id == b->hdrs[i].id && a->hdrs[i].flags == b->hdrs[i].flags);
    }
}

static void one(const uint8_t *data, size_t len, const struct ing_h1_limits *lim, int method)
{
    static struct run whole, piece;
    static size_t cuts[4096];
    size_t n = 0;
    uint64_t h = 0xcbf29ce484222325u ^ len;

    parse(&whole, data, len, lim, method, NULL, 0, true);
    for (size_t k = 0; k < len && n < sizeof(cuts) / sizeof(cuts[0]); k++)
        cuts[n++] = k;
    parse(&piece, data, len, lim, method, cuts, n, len <= 512);
    same(&whole, &piece);
    free(piece.buf);
    for (size_t k = 0; k < len; k++)
        h = (h ^ data[k]) * 0x100000001b3u;
    for (int round = 0; round < 2 && len > 1; round++) {
        h = h * 6364136223846793005u + 1442695040888963407u;
        cuts[0] = (size_t)(h % len);
        parse(&piece, data, len, lim, method, cuts, 1, true);
        same(&whole, &piece);
        free(piece.buf);
    }
    free(whole.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++)
        for (size_t j = 0; j < sizeof(methods) / sizeof(methods[0]); j++)
            one(data, len, &lims[i], methods[j]);
    return 0;
}
