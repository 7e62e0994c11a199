/* include/weir/wr.h -- the dependency-free base library (ingress/base/, prefix wr_).
 *
 * Allocation that aborts on control-path OOM, string slices, intrusive lists, logging and
 * error codes. Nothing here may include another weir header.
 */
#ifndef WEIR_WR_H
#define WEIR_WR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WEIR_VERSION "0.1.0"

#define WR_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define WR_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define WR_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define WR_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define wr_likely(x)                       __builtin_expect(!!(x), 1)
#define wr_unlikely(x)                     __builtin_expect(!!(x), 0)

/* Error codes: 0 = ok, < 0 = -errno, plus these. */
#define WR_EAGAIN    (-11)   /* call again with more input */
#define WR_EDECLINED (-1001) /* not mine */
#define WR_EINVAL    (-22)
#define WR_ENOMEM    (-12)

/* Allocation for fixed-size, control-path objects: aborts on OOM. Sizes a peer controls
 * must use plain malloc() and fail the request instead. */
void *wr_xmalloc(size_t n);
void *wr_xcalloc(size_t n, size_t size);
void *wr_xrealloc(void *p, size_t n);
char *wr_xstrdup(const char *s);
char *wr_xstrndup(const char *s, size_t n);
/* Formats into a new string; the caller frees it. */
char *wr_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define wr_free(pp)                                                                                \
    do {                                                                                           \
        free(*(pp));                                                                               \
        *(pp) = NULL;                                                                              \
    } while (0)

/* A borrowed byte range; never NUL-terminated unless said so. */
struct wr_str {
    const char *p;
    size_t len;
};

#define WR_STR_LIT(s) ((struct wr_str){(s), sizeof(s) - 1})

static inline bool wr_str_eq(struct wr_str a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.p, b, blen) == 0;
}

/* ASCII case-insensitive comparison of <a> with the lower-case literal <lower>. */
bool wr_str_ieq(struct wr_str a, const char *lower, size_t lower_len);

static inline char wr_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
}

/* Intrusive doubly linked list (circular, with a head node). */
struct wr_list {
    struct wr_list *prev, *next;
};

static inline void wr_list_init(struct wr_list *h)
{
    h->prev = h->next = h;
}

static inline bool wr_list_empty(const struct wr_list *h)
{
    return h->next == h;
}

static inline void wr_list_insert_tail(struct wr_list *h, struct wr_list *n)
{
    n->next = h;
    n->prev = h->prev;
    h->prev->next = n;
    h->prev = n;
}

static inline void wr_list_insert_head(struct wr_list *h, struct wr_list *n)
{
    n->prev = h;
    n->next = h->next;
    h->next->prev = n;
    h->next = n;
}

/* Unlinks <n> and makes it self-linked, so removing it twice is harmless. */
static inline void wr_list_remove(struct wr_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Logging to stderr. The level is set once at boot, before any thread starts. */
enum wr_log_level { WR_LOG_ERROR = 0, WR_LOG_WARN, WR_LOG_INFO, WR_LOG_DEBUG };
extern enum wr_log_level wr_log_max;
void wr_log_write(enum wr_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define wr_log(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= wr_log_max)                                                                   \
            wr_log_write((lvl), __VA_ARGS__);                                                      \
    } while (0)
#define wr_err(...)   wr_log(WR_LOG_ERROR, __VA_ARGS__)
#define wr_warn(...)  wr_log(WR_LOG_WARN, __VA_ARGS__)
#define wr_info(...)  wr_log(WR_LOG_INFO, __VA_ARGS__)
#define wr_debug(...) wr_log(WR_LOG_DEBUG, __VA_ARGS__)

/* A growable byte buffer for control-path text (JSON, metrics, error lists). Aborts on OOM. */
struct wr_sbuf {
    char *p;
    size_t len, cap;
};

void wr_sbuf_add(struct wr_sbuf *b, const void *data, size_t n);
void wr_sbuf_addstr(struct wr_sbuf *b, const char *s);
void wr_sbuf_printf(struct wr_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wr_sbuf_dispose(struct wr_sbuf *b);

/* Parses "host:port" / "[v6]:port" into <ss>; host must be a numeric address or "localhost"
 * or "*"/"0.0.0.0". Returns 0, or WR_EINVAL with *err set to a static message. */
struct sockaddr_storage;
int wr_parse_address(const char *s, struct sockaddr_storage *ss, unsigned *sslen, const char **err);
/* Formats <sa> as "1.2.3.4:80" or "[::1]:80" into <out> (at least 64 bytes). */
void wr_format_address(const void *sa, char *out, size_t outlen);

/* Fast thread-local-free PRNG: each owner keeps its own state. */
static inline uint64_t wr_rand_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* 64-bit hash of a byte string (xxhash-like mixing, not cryptographic). */
uint64_t wr_hash64(const void *data, size_t len, uint64_t seed);

/* Wall-clock milliseconds since the epoch, and monotonic nanoseconds. */
uint64_t wr_wall_ms(void);
uint64_t wr_mono_ns(void);

#endif /* WEIR_WR_H */
