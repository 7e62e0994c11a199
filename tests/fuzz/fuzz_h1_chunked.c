/* tests/fuzz/fuzz_h1_chunked.c -- libFuzzer driver for ing_h1_chunked_scan().
 *
 * The input is a chunked body (and maybe what follows it). It is scanned whole, byte by byte
 * and in pieces split where the input says, each piece from a fresh exact-size copy; all ways
 * must consume the same bytes, decode the same data (compared by length and hash) and agree on
 * done and errors. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weir/h1.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

struct run {
    struct ing_h1_chunked c;
    const char *lo, *hi; /* the piece being scanned, to check where data_cb points */
    uint64_t hash, decoded, calls;
    long consumed; /* total, or -400 */
};

static void on_data(void *arg, const char *data, size_t len)
{
    struct run *x = arg;

    CHECK(len > 0 && data >= x->lo && data + len <= x->hi);
    for (size_t i = 0; i < len; i++)
        x->hash = (x->hash ^ (uint8_t)data[i]) * 0x100000001b3u;
    x->decoded += len;
    x->calls++;
}

/* Scans data[0..len) in pieces ending at <cuts> (ascending), then the rest. */
static void scan(struct run *x, const uint8_t *data, size_t len, const size_t *cuts, size_t ncuts)
{
    size_t off = 0;

    memset(x, 0, sizeof(*x));
    x->hash = 0xcbf29ce484222325u;
    for (size_t i = 0; i <= ncuts && !x->c.done; i++) {
        size_t end = i < ncuts ? cuts[i] : len, n = end - off;
        char *p = malloc(n ? n : 1);
        long r;

        memcpy(p, data + off, n);
        x->lo = p;
        x->hi = p + n;
        r = ing_h1_chunked_scan(&x->c, p, n, on_data, x);
        free(p);
        if (r < 0) {
            CHECK(r == -400);
            x->consumed = -400;
            return;
        }
        CHECK((size_t)r <= n);
        CHECK((size_t)r == n || x->c.done);
        off += (size_t)r;
    }
    x->consumed = (long)off;
    CHECK(x->decoded == x->c.data_bytes && x->c.data_bytes <= off);
    if (x->c.done) {
        CHECK(off >= 5 && memcmp(data + off - 2, "\r\n", 2) == 0);
        CHECK(ing_h1_chunked_scan(&x->c, "\r\n", 2, on_data, x) == 0);
    }
}

static void same(const struct run *a, const struct run *b)
{
    CHECK(a->consumed == b->consumed);
    if (a->consumed < 0)
        return;
    CHECK(a->c.done == b->c.done && a->c.data_bytes == b->c.data_bytes);
    CHECK(a->hash == b->hash && a->c.remaining == b->c.remaining && a->c.state == b->c.state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    static size_t cuts[8192];
    struct run whole, piece;
    size_t n = 0;
    uint64_t h = 0x9e3779b97f4a7c15u ^ len;

    scan(&whole, data, len, NULL, 0);
    for (size_t k = 1; k < len && n < sizeof(cuts) / sizeof(cuts[0]); k++)
        cuts[n++] = k;
    scan(&piece, data, len, cuts, n);
    same(&whole, &piece);
    for (size_t k = 0; k < len; k++)
        h = (h ^ data[k]) * 0x100000001b3u;
    for (int round = 0; round < 4 && len > 2; round++) {
        size_t a, b;

        h = h * 6364136223846793005u + 1442695040888963407u;
        a = (size_t)(h % len);
        b = (size_t)((h >> 32) % len);
        cuts[0] = a < b ? a : b;
        cuts[1] = a < b ? b : a;
        scan(&piece, data, len, cuts, 2);
        same(&whole, &piece);
    }
    return 0;
}
