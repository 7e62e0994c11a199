/* ingress/base/wr_util.c -- strings, growable text buffers, addresses, hashing, clocks. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weir/wr.h>

bool wr_str_ieq(struct wr_str a, const char *lower, size_t lower_len)
{
    if (a.len != lower_len)
        return false;
    for (size_t i = 0; i < lower_len; i++)
        if (wr_lower(a.p[i]) != lower[i])
            return false;
    return true;
}

void wr_sbuf_add(struct wr_sbuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = wr_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void wr_sbuf_addstr(struct wr_sbuf *b, const char *s)
{
    wr_sbuf_add(b, s, strlen(s));
}

void wr_sbuf_printf(struct wr_sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        wr_sbuf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = wr_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    wr_sbuf_add(b, big, (size_t)n);
    free(big);
}

void wr_sbuf_dispose(struct wr_sbuf *b)
{
    wr_free(&b->p);
    b->len = b->cap = 0;
}

int wr_parse_address(const char *s, struct sockaddr_storage *ss, unsigned *sslen, const char **err)
{
    char host[256];
    const char *colon, *hs, *he;

    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        he = strchr(s, ']');
        if (he == NULL || he[1] != ':') {
            *err = "must be host:port or [ipv6]:port";
            return WR_EINVAL;
        }
        hs = s + 1;
        colon = he + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL) {
            *err = "must be host:port or [ipv6]:port";
            return WR_EINVAL;
        }
        hs = s;
        he = colon;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof(host)) {
        *err = "must be host:port or [ipv6]:port";
        return WR_EINVAL;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    const char *ps = colon + 1;
    char *end;
    long port = strtol(ps, &end, 10);
    if (*ps == '\0' || *end != '\0' || port < 0 || port > 65535 || ps[0] == '+' || ps[0] == '-') {
        *err = "port must be a number from 0 to 65535";
        return WR_EINVAL;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (strcmp(host, "*") == 0)
        strcpy(host, "0.0.0.0");
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (s[0] != '[' && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*in4);
        return 0;
    }
    if (s[0] == '[' && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*in6);
        return 0;
    }
    *err = "host must be a numeric IPv4 address, [IPv6] address or localhost";
    return WR_EINVAL;
}

void wr_format_address(const void *sa, char *out, size_t outlen)
{
    const struct sockaddr *s = sa;
    char ip[INET6_ADDRSTRLEN];

    if (s->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = sa;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(in4->sin_port));
    } else if (s->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outlen, "unknown");
    }
}

/* A 64-bit hash with wyhash-style multiply-fold mixing; good dispersion for ring keys. */
static inline uint64_t mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

uint64_t wr_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ 0x9e3779b97f4a7c15ull ^ (len * 0xff51afd7ed558ccdull);

    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = mix(h ^ v, 0xa0761d6478bd642full);
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t)p[i] << (8 * i);
    h = mix(h ^ tail ^ 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull);
    return mix(h, 0x589965cc75374cc3ull);
}

uint64_t wr_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t wr_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
