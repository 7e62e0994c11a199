/* ingress/ing_h1.c -- strict, zero-copy HTTP/1.1 head parser and chunked-body scanner.
 *
 * This is the smuggling boundary: whatever we accept here is forwarded, so every message whose
 * framing two implementations could read differently is rejected (RFC 9112 §11.2). The parser
 * never allocates and never copies; all results point into the caller's buffer, except the
 * static "/" used as the path of an absolute-form target without one.
 *
 * The head is handled in two steps. find_end() looks for the blank line with memchr('\n') and
 * resumes where the previous call stopped, rejecting a bare LF as soon as it shows up. Once the
 * head is complete, one pass over it validates and splits the start line and the fields with
 * table-driven character classes; the line grammar itself guarantees that every loop stops at
 * the final CRLF CRLF, so the inner loops need no bounds checks.
 */
#include <arpa/inet.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <weir/h1.h>
#include <weir/wr.h>

#define DEFAULT_MAX_HEAD   65536
#define DEFAULT_MAX_TARGET 8192
#define MAX_METHOD         32    /* longer valid tokens get 501 */
#define CHUNK_LINE_MAX     4096  /* chunk size line, extensions included, CRLF excluded */
#define CHUNK_TRAILER_MAX  65536 /* whole trailer section, final CRLF included */
#define MAX_63             ((uint64_t)INT64_MAX)

/* Character classes, one table lookup per byte. */
#define CT_TOKEN  0x01 /* tchar (RFC 9110 §5.6.2) */
#define CT_TARGET 0x02 /* what a request target may hold: visible ASCII */
#define CT_VALUE  0x04 /* field-vchar, SP, HTAB (RFC 9110 §5.5); also reason-phrase */
#define CT_HEX    0x08
#define CT_HOST   0x10 /* unreserved (RFC 3986 §2.3): see authority_ok() for why not sub-delims */
#define CT_DIGIT  0x20
#define CT_QDTEXT 0x40 /* qdtext (RFC 9110 §5.6.4) */
#define CT_OWS    0x80

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_HEX(c)   (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define IS_VCHAR(c) ((c) >= 0x21 && (c) <= 0x7e)
#define IS_OWS(c)   ((c) == ' ' || (c) == '\t')
#define IS_TCHAR(c)                                                                                \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' ||         \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||          \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_UNRESERVED(c)                                                                           \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~')
#define IS_QDTEXT(c)                                                                               \
    (IS_OWS(c) || (c) == 0x21 || ((c) >= 0x23 && (c) <= 0x5b) || ((c) >= 0x5d && (c) <= 0x7e) ||   \
     (c) >= 0x80)

#define CLS(c)                                                                                     \
    ((IS_TCHAR(c) ? CT_TOKEN : 0) | (IS_VCHAR(c) ? CT_TARGET : 0) |                                \
     ((IS_VCHAR(c) || IS_OWS(c) || (c) >= 0x80) ? CT_VALUE : 0) | (IS_HEX(c) ? CT_HEX : 0) |       \
     (IS_UNRESERVED(c) ? CT_HOST : 0) | (IS_DIGIT(c) ? CT_DIGIT : 0) |                             \
     (IS_QDTEXT(c) ? CT_QDTEXT : 0) | (IS_OWS(c) ? CT_OWS : 0))
#define R4(b)  CLS(b), CLS((b) + 1), CLS((b) + 2), CLS((b) + 3)
#define R16(b) R4(b), R4((b) + 4), R4((b) + 8), R4((b) + 12)
#define R64(b) R16(b), R16((b) + 16), R16((b) + 32), R16((b) + 48)

static const uint8_t cls[256] = {R64(0), R64(64), R64(128), R64(192)};

#define IS(c, ct) (cls[(uint8_t)(c)] & (ct))

/* Eight bytes at once ("Bit Twiddling Hacks"): nonzero iff some byte of <w> is below <n>
 * (n <= 128), or above <n> (n <= 127). Borrows and carries can only add false positives next to
 * a true one, so both are exact as "is there any". */
#define ONES  0x0101010101010101u
#define HIGHS 0x8080808080808080u

static inline uint64_t has_less(uint64_t w, uint64_t n)
{
    return (w - ONES * n) & ~w & HIGHS;
}

static inline uint64_t has_more(uint64_t w, uint64_t n)
{
    return ((w + ONES * (127 - n)) | w) & HIGHS;
}

/* Message-level facts gathered while walking the fields, judged once all are seen. */
struct fields {
    bool response;
    uint8_t n_host;
    bool has_cl;
    bool has_te;
    bool te_chunked;      /* "chunked" was listed */
    bool te_last_chunked; /* ... and it was the last coding so far */
    bool te_other;        /* some other coding was listed */
    bool has_upgrade;
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool conn_other; /* Connection names some other field: see nominate() */
};

static inline uint8_t lower(uint8_t c)
{
    return (uint8_t)(c | ((unsigned)(c - 'A') < 26u) << 5);
}

/* Compares <n> bytes of <s> case-insensitively with the literal <lit>, made of lower-case
 * letters, digits and "-:/". Setting bit 5 folds only letters onto those characters, except
 * for bytes below 0x20, and those never get here: <s> is always validated head content. */
static bool ieq(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((s[i] | 0x20) != lit[i])
            return false;
    return true;
}

#define IEQ(s, n, lit) ((n) == sizeof(lit) - 1 && ieq((s), (lit), sizeof(lit) - 1))

static unsigned hexval(uint8_t c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static struct wr_str trim(const char *s, const char *e)
{
    while (s < e && IS_OWS(*s))
        s++;
    while (e > s && IS_OWS(e[-1]))
        e--;
    return (struct wr_str){s, (size_t)(e - s)};
}

/* Splits the next element off the comma-separated list at *<pos> (NULL once exhausted) into
 * <el>, OWS trimmed. Empty elements are returned too: each caller decides whether it tolerates
 * them (RFC 9110 §5.6.1). */
static bool list_next(const char **pos, const char *end, struct wr_str *el)
{
    const char *s = *pos, *comma;

    if (s == NULL)
        return false;
    comma = memchr(s, ',', (size_t)(end - s));
    *el = trim(s, comma ? comma : end);
    *pos = comma ? comma + 1 : NULL;
    return true;
}

/* Validates "host[:port]": a reg-name or IPv4 address made of unreserved characters and
 * pct-encodings, or an IPv6 literal in brackets, then an optional 1-5 digit port. RFC 3986 also
 * allows sub-delims ("!$&'()*+,;=") in a reg-name, but no DNS name or address contains them,
 * and a Host copied into X-Forwarded-Host or Forwarded would let ',' ';' '=' inject list
 * elements or parameters, so they are refused. IPvFuture and zone ids are refused as well. */
static bool authority_ok(const char *s, size_t len, bool *has_port)
{
    size_t i = 0;

    if (len == 0)
        return false;
    if (s[0] == '[') {
        char tmp[64];
        unsigned char addr[16];

        while (++i < len && (IS(s[i], CT_HEX) || s[i] == ':' || s[i] == '.'))
            ;
        if (i >= len || s[i] != ']' || i - 1 >= sizeof(tmp))
            return false;
        memcpy(tmp, s + 1, i - 1);
        tmp[i - 1] = '\0';
        if (inet_pton(AF_INET6, tmp, addr) != 1)
            return false;
        i++;
    } else {
        for (; i < len; i++) {
            if (IS(s[i], CT_HOST))
                continue;
            if (s[i] != '%' || i + 2 >= len || !IS(s[i + 1], CT_HEX) || !IS(s[i + 2], CT_HEX))
                break;
            i += 2;
        }
        if (i == 0)
            return false;
    }
    *has_port = i < len;
    if (i == len)
        return true;
    if (s[i] != ':' || len - i - 1 == 0 || len - i - 1 > 5)
        return false;
    unsigned port = 0;
    for (i++; i < len; i++) {
        if (!IS(s[i], CT_DIGIT))
            return false;
        port = port * 10 + (unsigned)(s[i] - '0');
    }
    return port <= 65535;
}

/* Finds the end of the head in buf[0..len), resuming at *<scan>. Returns the head length, 0
 * when the blank line has not arrived yet, -400 on a bare LF, or -431 when the head cannot end
 * within <max_head> (the caller refines that into 414).
 *
 * Requests may start with empty lines (RFC 9112 §2.2), which must not be mistaken for the
 * blank line that ends the head. *scan records which side of them we are on by its parity:
 * while only CRLF pairs have been seen it holds their (even) length; once the start line has
 * begun it is kept odd, stepping back one byte when needed, which merely re-checks that byte.
 * This keeps the search O(n) over any sequence of calls without a second state word. */
static long find_end(const char *buf, size_t len, size_t *scan, size_t max_head, bool request)
{
    size_t end = len < max_head ? len : max_head, pos = *scan;
    const char *p;

    if (request && (pos & 1) == 0) {
        while (pos + 1 < end && buf[pos] == '\r' && buf[pos + 1] == '\n')
            pos += 2;
        if (pos == end || (pos + 1 == end && buf[pos] == '\r')) {
            *scan = pos;
            return len > max_head ? -431 : ING_H1_INCOMPLETE;
        }
    }
    p = buf + pos;
    while ((p = memchr(p, '\n', (size_t)(buf + end - p))) != NULL) {
        size_t i = (size_t)(p - buf);

        /* A request never gets here with i < 2: its leading CRLFs were skipped above. */
        if (i < 2 || buf[i - 1] != '\r')
            return -400;
        if (buf[i - 2] == '\n')
            return (long)i + 1;
        p++;
    }
    if (len > max_head)
        return -431;
    *scan = request && (end & 1) == 0 ? end - 1 : end;
    return ING_H1_INCOMPLETE;
}

/* A request head that outgrew max_head: answers 414 rather than 431 when the request line has
 * not ended and its target alone is already longer than max_target. */
static int too_large(const char *buf, size_t len, const struct ing_h1_limits *lim)
{
    size_t i = 0, n = len < lim->max_head ? len : lim->max_head;
    const char *sp, *t, *te;

    while (i + 1 < n && buf[i] == '\r' && buf[i + 1] == '\n')
        i += 2;
    if (memchr(buf + i, '\n', n - i) != NULL || (sp = memchr(buf + i, ' ', n - i)) == NULL)
        return -431;
    t = sp + 1;
    te = memchr(t, ' ', (size_t)(buf + n - t));
    if ((size_t)((te ? te : buf + n) - t) > lim->max_target)
        return -414;
    return -431;
}

static uint8_t method_id(const char *s, size_t n)
{
    switch (n) {
    case 3:
        return !memcmp(s, "GET", 3) ? ING_H1_M_GET : !memcmp(s, "PUT", 3) ? ING_H1_M_PUT : 0;
    case 4:
        return !memcmp(s, "HEAD", 4) ? ING_H1_M_HEAD : !memcmp(s, "POST", 4) ? ING_H1_M_POST : 0;
    case 5:
        return !memcmp(s, "PATCH", 5)   ? ING_H1_M_PATCH
               : !memcmp(s, "TRACE", 5) ? ING_H1_M_TRACE
                                        : 0;
    case 6:
        return !memcmp(s, "DELETE", 6) ? ING_H1_M_DELETE : 0;
    case 7:
        return !memcmp(s, "CONNECT", 7)   ? ING_H1_M_CONNECT
               : !memcmp(s, "OPTIONS", 7) ? ING_H1_M_OPTIONS
                                          : 0;
    }
    return ING_H1_M_OTHER;
}

static uint8_t header_id(const char *s, size_t n)
{
    if (n >= 6 && ieq(s, "proxy-", 6))
        return ING_H1_H_PROXY_X;
    switch (n) {
    case 2:
        return ieq(s, "te", 2) ? ING_H1_H_TE : 0;
    case 4:
        return ieq(s, "host", 4) ? ING_H1_H_HOST : ieq(s, "date", 4) ? ING_H1_H_DATE : 0;
    case 6:
        return ieq(s, "cookie", 6)   ? ING_H1_H_COOKIE
               : ieq(s, "expect", 6) ? ING_H1_H_EXPECT
               : ieq(s, "server", 6) ? ING_H1_H_SERVER
                                     : 0;
    case 7:
        return ieq(s, "trailer", 7)   ? ING_H1_H_TRAILER
               : ieq(s, "upgrade", 7) ? ING_H1_H_UPGRADE
                                      : 0;
    case 10:
        return ieq(s, "connection", 10)   ? ING_H1_H_CONNECTION
               : ieq(s, "keep-alive", 10) ? ING_H1_H_KEEP_ALIVE
                                          : 0;
    case 12:
        return ieq(s, "x-request-id", 12) ? ING_H1_H_X_REQUEST_ID : 0;
    case 14:
        return ieq(s, "content-length", 14) ? ING_H1_H_CONTENT_LENGTH : 0;
    case 15:
        return ieq(s, "x-forwarded-for", 15) ? ING_H1_H_X_FORWARDED_FOR : 0;
    case 16:
        return ieq(s, "x-forwarded-host", 16) ? ING_H1_H_X_FORWARDED_HOST : 0;
    case 17:
        return ieq(s, "transfer-encoding", 17)   ? ING_H1_H_TRANSFER_ENCODING
               : ieq(s, "x-forwarded-proto", 17) ? ING_H1_H_X_FORWARDED_PROTO
                                                 : 0;
    }
    return ING_H1_H_OTHER;
}

/* Parses "HTTP/1.0" or "HTTP/1.1" at <p>, followed by <term>; <end> bounds the head. Returns the
 * minor version, -505 for another well-formed version ("HTTP/" 1*DIGIT ["." 1*DIGIT]), or -400. */
static int parse_version(const char *p, const char *end, char term)
{
    if (end - p >= 9 && !memcmp(p, "HTTP/1.", 7) && (p[7] == '1' || p[7] == '0') && p[8] == term)
        return p[7] - '0';
    if (end - p < 6 || memcmp(p, "HTTP/", 5) != 0 || !IS(p[5], CT_DIGIT))
        return -400;
    for (p += 6; IS(*p, CT_DIGIT); p++)
        ;
    if (*p == '.' && IS(p[1], CT_DIGIT))
        for (p += 2; IS(*p, CT_DIGIT); p++)
            ;
    if (*p != term || (term == '\r' && p[1] != '\n'))
        return -400;
    return -505;
}

/* Sets path and query from an origin-form <t> (or the path part of an absolute-form one). */
static void split_path(struct ing_h1_msg *m, const char *t, size_t n)
{
    const char *q = memchr(t, '?', n);

    m->path = (struct wr_str){t, q ? (size_t)(q - t) : n};
    if (q != NULL)
        m->query = (struct wr_str){q + 1, n - (size_t)(q - t) - 1};
}

/* Classifies the request target by its form (RFC 9112 §3.2) and splits it. */
static int parse_target(struct ing_h1_msg *m)
{
    const char *t = m->target.p, *a, *ae, *end = t + m->target.len;
    bool port;

    if (m->method_id == ING_H1_M_CONNECT) {
        if (!authority_ok(t, m->target.len, &port) || !port)
            return -400;
        m->authority = m->target;
        return 0;
    }
    if (t[0] == '/') {
        split_path(m, t, m->target.len);
        return 0;
    }
    if (t[0] == '*') {
        if (m->target.len != 1 || m->method_id != ING_H1_M_OPTIONS)
            return -400;
        m->path = m->target;
        return 0;
    }
    if (m->target.len > 7 && ieq(t, "http://", 7))
        a = t + 7;
    else if (m->target.len > 8 && ieq(t, "https://", 8))
        a = t + 8;
    else
        return -400;
    for (ae = a; ae < end && *ae != '/' && *ae != '?'; ae++)
        ;
    if (!authority_ok(a, (size_t)(ae - a), &port))
        return -400;
    m->authority = (struct wr_str){a, (size_t)(ae - a)};
    m->flags |= ING_H1_F_ABSOLUTE_FORM;
    if (ae < end && *ae == '/') {
        split_path(m, ae, (size_t)(end - ae));
    } else {
        m->path = WR_STR_LIT("/");
        if (ae < end)
            m->query = (struct wr_str){ae + 1, (size_t)(end - ae - 1)};
    }
    return 0;
}

/* Returns the first byte at or after <p> that cannot be in a target (visible ASCII), a word
 * at a time while <end> allows: long URLs are common. */
static const char *skip_target(const char *p, const char *end)
{
    uint64_t w;

    while (end - p >= 8) {
        memcpy(&w, p, 8);
        if (has_less(w, 0x21) | has_more(w, 0x7e))
            break;
        p += 8;
    }
    while (IS(*p, CT_TARGET))
        p++;
    return p;
}

/* Parses "method SP request-target SP HTTP-version CRLF" at *<pp>, advancing it. */
static int parse_request_line(struct ing_h1_msg *m, const char **pp, const char *end,
                              const struct ing_h1_limits *lim)
{
    const char *p = *pp, *s = p;
    int v;

    while (IS(*p, CT_TOKEN))
        p++;
    if (p == s || *p != ' ')
        return -400;
    if (p - s > MAX_METHOD)
        return -501;
    m->method = (struct wr_str){s, (size_t)(p - s)};
    m->method_id = method_id(s, m->method.len);
    p = skip_target(s = p + 1, end);
    if (p == s || *p != ' ')
        return -400;
    if ((size_t)(p - s) > lim->max_target)
        return -414;
    m->target = (struct wr_str){s, (size_t)(p - s)};
    if ((v = parse_version(++p, end, '\r')) < 0)
        return v;
    m->minor = (uint8_t)v;
    if (p[9] != '\n')
        return -400;
    *pp = p + 10;
    return parse_target(m);
}

/* Parses "HTTP-version SP 3DIGIT SP [reason-phrase] CRLF". The SP after the code may be
 * missing when the reason is empty, as some servers send "HTTP/1.1 200\r\n". */
static int parse_status_line(struct ing_h1_msg *m, const char **pp, const char *end)
{
    const char *p = *pp, *r;
    int v = parse_version(p, end, ' ');

    /* The shortest head, "HTTP/1.1 200\r\n\r\n", makes p[0..13] safe to read. */
    if (v < 0 || end - p < 16 || !IS(p[9], CT_DIGIT) || !IS(p[10], CT_DIGIT) ||
        !IS(p[11], CT_DIGIT))
        return -502;
    m->minor = (uint8_t)v;
    m->status = (uint16_t)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
    if (m->status < 100 || m->status > 599)
        return -502;
    p += 12;
    if (*p == ' ')
        p++;
    else if (*p != '\r')
        return -502;
    for (r = p; IS(*p, CT_VALUE); p++)
        ;
    if (p[0] != '\r' || p[1] != '\n')
        return -502;
    m->reason = (struct wr_str){r, (size_t)(p - r)};
    *pp = p + 2;
    return 0;
}

/* Content-Length = 1*DIGIT; a list of identical values is tolerated (RFC 9110 §8.6). */
static int on_content_length(struct ing_h1_msg *m, struct fields *f, const struct ing_h1_hdr *h)
{
    const char *pos = h->value, *end = h->value + h->value_len;
    struct wr_str el;

    while (list_next(&pos, end, &el)) {
        uint64_t v = 0;

        if (el.len == 0)
            return -400;
        for (size_t i = 0; i < el.len; i++) {
            unsigned d = (unsigned)(el.p[i] - '0');

            if (d > 9 || v > (MAX_63 - d) / 10)
                return -400;
            v = v * 10 + d;
        }
        if (f->has_cl && v != m->content_length)
            return -400;
        f->has_cl = true;
        m->flags |= ING_H1_F_CONTENT_LENGTH;
        m->content_length = v;
    }
    return 0;
}

/* Transfer-Encoding = #transfer-coding, accumulated over every TE field line in order. Only a
 * bare, single, final "chunked" is usable; the verdict is given in finish(). */
static int on_transfer_encoding(struct fields *f, const struct ing_h1_hdr *h)
{
    const char *pos = h->value, *end = h->value + h->value_len;
    struct wr_str el;

    f->has_te = true;
    while (list_next(&pos, end, &el)) {
        if (el.len == 0)
            return -400;
        if (IEQ(el.p, el.len, "chunked")) {
            if (f->te_chunked) /* applied twice: RFC 9112 §6.1 */
                return -400;
            f->te_chunked = f->te_last_chunked = true;
            continue;
        }
        /* A coding with parameters is as unsupported as an unknown one; only its name needs
         * to be a token for the message to be well-formed. */
        const char *semi = memchr(el.p, ';', el.len);
        struct wr_str name = trim(el.p, semi ? semi : el.p + el.len);

        if (!ing_h1_is_token(name.p, name.len))
            return -400;
        f->te_other = true;
        f->te_last_chunked = false;
    }
    return 0;
}

static int on_connection(struct fields *f, const struct ing_h1_hdr *h)
{
    const char *pos = h->value, *end = h->value + h->value_len;
    struct wr_str el;

    while (list_next(&pos, end, &el)) {
        if (el.len == 0) /* empty list elements are legal and ignored */
            continue;
        if (!ing_h1_is_token(el.p, el.len))
            return -400;
        if (IEQ(el.p, el.len, "close"))
            f->conn_close = true;
        else if (IEQ(el.p, el.len, "keep-alive"))
            f->conn_keep_alive = true;
        else if (IEQ(el.p, el.len, "upgrade"))
            f->conn_upgrade = true;
        else
            f->conn_other = true;
    }
    return 0;
}

static bool lists(const struct ing_h1_hdr *h, const char *lit, size_t n)
{
    const char *pos = h->value, *end = h->value + h->value_len;
    struct wr_str el;

    while (list_next(&pos, end, &el))
        if (el.len == n && ieq(el.p, lit, n))
            return true;
    return false;
}

/* Acts on one field line of a known kind. */
static int on_field(struct ing_h1_msg *m, struct fields *f, struct ing_h1_hdr *h)
{
    bool port;

    switch (h->id) {
    case ING_H1_H_HOST:
        if (f->response)
            return 0;
        if (++f->n_host > 1 || !authority_ok(h->value, h->value_len, &port))
            return -400;
        m->host = (struct wr_str){h->value, h->value_len};
        return 0;
    case ING_H1_H_CONTENT_LENGTH:
        return on_content_length(m, f, h);
    case ING_H1_H_TRANSFER_ENCODING:
        h->flags |= ING_H1_HF_HOP;
        return on_transfer_encoding(f, h);
    case ING_H1_H_CONNECTION:
        h->flags |= ING_H1_HF_HOP;
        return on_connection(f, h);
    case ING_H1_H_UPGRADE:
        f->has_upgrade = true;
        /* fall through */
    case ING_H1_H_KEEP_ALIVE:
    case ING_H1_H_TRAILER:
    case ING_H1_H_PROXY_X:
        h->flags |= ING_H1_HF_HOP;
        return 0;
    case ING_H1_H_TE:
        h->flags |= ING_H1_HF_HOP;
        if (!f->response && lists(h, "trailers", 8))
            m->flags |= ING_H1_F_TE_TRAILERS;
        return 0;
    case ING_H1_H_EXPECT:
        /* RFC 9110 §10.1.1: ignored in an HTTP/1.0 request. */
        if (!f->response && m->minor == 1 && IEQ(h->value, h->value_len, "100-continue"))
            m->flags |= ING_H1_F_EXPECT_CONTINUE;
        return 0;
    }
    return 0;
}

/* Returns the first byte at or after <p> that is not field content; the head ends with CRLF
 * before <end>, so there is one. Values are most of a head's bytes (cookies, user agents), so
 * they are checked a word at a time: it is all field-vchar/SP/obs-text when no byte is below
 * 0x20 and none is DEL. Words with HTAB or the end of the value go through the table. */
static const char *skip_value(const char *p, const char *end)
{
    uint64_t w;

    while (end - p >= 8) {
        memcpy(&w, p, 8);
        if (has_less(w, 0x20) | has_less(w ^ ONES * 0x7f, 1))
            break;
        p += 8;
    }
    while (IS(*p, CT_VALUE))
        p++;
    return p;
}

/* Parses the field lines up to and including the blank line. Each line is checked against
 * the character classes: a name that is not a token or not followed by ':' covers obs-fold,
 * whitespace before the colon and empty names; a value that stops anywhere but at CRLF covers
 * NUL, other controls, DEL and bare CR. */
static int parse_fields(struct ing_h1_msg *m, struct fields *f, const char *p, const char *end)
{
    while (*p != '\r') {
        const char *name = p, *colon, *v, *ve;
        struct ing_h1_hdr *h;
        int r;

        while (IS(*p, CT_TOKEN))
            p++;
        if (p == name || *p != ':')
            return -400;
        if (p - name > UINT16_MAX || m->n_hdrs >= m->max_hdrs)
            return -431;
        for (colon = p++; IS_OWS(*p); p++)
            ;
        p = skip_value(v = p, end);
        if (p[0] != '\r' || p[1] != '\n')
            return -400;
        for (ve = p; ve > v && IS_OWS(ve[-1]); ve--)
            ;
        p += 2;
        h = &m->hdrs[m->n_hdrs++];
        h->name = name;
        h->name_len = (uint16_t)(colon - name);
        h->value = v;
        h->value_len = (uint32_t)(ve - v);
        h->id = header_id(name, h->name_len);
        h->flags = 0;
        if (h->id != ING_H1_H_OTHER && (r = on_field(m, f, h)) < 0)
            return r;
    }
    return p[1] == '\n' ? 0 : -400;
}

/* Marks every field named by a Connection option as hop-by-hop (RFC 9110 §7.6.1). Host and
 * Content-Length are exempt: a client must not be able to strip the routing key or the framing
 * of what we forward by naming them, and neither is a connection option anyone needs. */
static void nominate(struct ing_h1_msg *m)
{
    for (unsigned c = 0; c < m->n_hdrs; c++) {
        const struct ing_h1_hdr *ch = &m->hdrs[c];
        const char *pos = ch->value, *end = ch->value + ch->value_len;
        struct wr_str el;

        if (ch->id != ING_H1_H_CONNECTION)
            continue;
        while (list_next(&pos, end, &el)) {
            for (unsigned i = 0; i < m->n_hdrs; i++) {
                struct ing_h1_hdr *h = &m->hdrs[i];

                if (h->name_len != el.len || h->id == ING_H1_H_HOST ||
                    h->id == ING_H1_H_CONTENT_LENGTH)
                    continue;
                size_t k = 0;
                while (k < el.len && lower((uint8_t)h->name[k]) == lower((uint8_t)el.p[k]))
                    k++;
                if (k == el.len)
                    h->flags |= ING_H1_HF_HOP;
            }
        }
    }
}

/* Judges the framing of a request once all fields are known (RFC 9112 §6.1, §6.3). */
static int finish_request(struct ing_h1_msg *m, const struct fields *f)
{
    if (m->minor == 1 && f->n_host == 0)
        return -400;
    if (f->has_te) {
        if (f->has_cl || m->minor == 0)
            return -400;
        if (f->te_other || !f->te_last_chunked)
            return -501;
        m->body = ING_H1_BODY_CHUNKED;
    } else if (f->has_cl) {
        m->body = ING_H1_BODY_LENGTH;
    }
    if (m->minor == 1 ? !f->conn_close : f->conn_keep_alive && !f->conn_close)
        m->flags |= ING_H1_F_KEEP_ALIVE;
    /* RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored. */
    if (f->conn_upgrade && f->has_upgrade && m->minor == 1)
        m->flags |= ING_H1_F_UPGRADE;
    return 0;
}

static int finish_response(struct ing_h1_msg *m, const struct fields *f, int req_method)
{
    /* TE with CL, or TE in HTTP/1.0, is framing two readers can disagree on (§6.1): refuse. */
    if (f->has_te && (f->has_cl || m->minor == 0))
        return -502;
    /* A transfer coding other than chunked (gzip, ...) would be lost when weir re-frames the
     * body, and weir does not decode it: refuse rather than pass on mangled content. */
    if (f->te_other)
        return -502;
    if (m->status < 200 || m->status == 204 || m->status == 304 || req_method == ING_H1_M_HEAD ||
        (req_method == ING_H1_M_CONNECT && m->status < 300))
        m->body = ING_H1_BODY_NONE;
    else if (f->has_te)
        m->body = f->te_last_chunked ? ING_H1_BODY_CHUNKED : ING_H1_BODY_EOF;
    else if (f->has_cl)
        m->body = ING_H1_BODY_LENGTH;
    else
        m->body = ING_H1_BODY_EOF;
    if ((m->minor == 1 ? !f->conn_close : f->conn_keep_alive && !f->conn_close) &&
        m->body != ING_H1_BODY_EOF)
        m->flags |= ING_H1_F_KEEP_ALIVE;
    if (f->conn_upgrade && f->has_upgrade)
        m->flags |= ING_H1_F_UPGRADE;
    return 0;
}

static struct ing_h1_limits limits(const struct ing_h1_limits *lim)
{
    struct ing_h1_limits l = {DEFAULT_MAX_HEAD, DEFAULT_MAX_TARGET};

    if (lim != NULL && lim->max_head != 0)
        l.max_head = lim->max_head < INT32_MAX ? lim->max_head : INT32_MAX;
    if (lim != NULL && lim->max_target != 0)
        l.max_target = lim->max_target;
    return l;
}

static void reset(struct ing_h1_msg *m)
{
    struct ing_h1_hdr *hdrs = m->hdrs;
    uint16_t max_hdrs = m->max_hdrs;

    memset(m, 0, sizeof(*m));
    m->hdrs = hdrs;
    m->max_hdrs = max_hdrs;
}

/* See h1.h. Thread-safe: touches only <m>, <scan> and the stack. */
int ing_h1_parse_request(struct ing_h1_msg *m, const char *buf, size_t len, size_t *scan,
                         const struct ing_h1_limits *lim)
{
    struct ing_h1_limits l = limits(lim);
    struct fields f = {0};
    long n = find_end(buf, len, scan, l.max_head, true);
    const char *p = buf;
    int r;

    if (n == -431)
        return too_large(buf, len, &l);
    if (n <= 0)
        return (int)n;
    while (p[0] == '\r' && p[1] == '\n')
        p += 2;
    reset(m);
    if ((r = parse_request_line(m, &p, buf + n, &l)) < 0 ||
        (r = parse_fields(m, &f, p, buf + n)) < 0 || (r = finish_request(m, &f)) < 0)
        return r;
    if (f.conn_other)
        nominate(m);
    if (f.conn_close)
        m->flags |= ING_H1_F_CONN_CLOSE;
    m->head_len = (uint32_t)n;
    return (int)n;
}

/* See h1.h; every failure maps to 502, as the client is not at fault. */
int ing_h1_parse_response(struct ing_h1_msg *m, const char *buf, size_t len, size_t *scan,
                          const struct ing_h1_limits *lim, int req_method)
{
    struct ing_h1_limits l = limits(lim);
    struct fields f = {.response = true};
    long n = find_end(buf, len, scan, l.max_head, false);
    const char *p = buf;

    if (n == 0)
        return ING_H1_INCOMPLETE;
    if (n < 0)
        return -502;
    reset(m);
    if (parse_status_line(m, &p, buf + n) < 0 || parse_fields(m, &f, p, buf + n) < 0 ||
        finish_response(m, &f, req_method) < 0)
        return -502;
    if (f.conn_other)
        nominate(m);
    if (f.conn_close)
        m->flags |= ING_H1_F_CONN_CLOSE;
    m->head_len = (uint32_t)n;
    return (int)n;
}

/* See h1.h. <lower_lit> must be lower case. */
bool ing_h1_name_is(const struct ing_h1_hdr *h, const char *lower_lit, size_t len)
{
    if (h->name_len != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (lower((uint8_t)h->name[i]) != (uint8_t)lower_lit[i])
            return false;
    return true;
}

/* See h1.h. */
bool ing_h1_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!IS(s[i], CT_TOKEN))
            return false;
    return true;
}

/* Chunked scanner states (RFC 9112 §7.1). The size line is
 *   chunk-size *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF
 * and whitespace is only accepted where BWS is: never before the CRLF. */
enum {
    CK_SIZE0 = 0,   /* first hex digit of a size */
    CK_SIZE,        /* more hex digits */
    CK_EXT_WS,      /* BWS before ";" */
    CK_EXT_PRE,     /* BWS after ";", then an ext-name */
    CK_EXT_NAME,    /* ext-name */
    CK_EXT_NAME_WS, /* BWS after the name: "=" or ";" next */
    CK_EXT_VAL_PRE, /* BWS after "=" */
    CK_EXT_VAL,     /* token value */
    CK_EXT_QS,      /* inside a quoted-string */
    CK_EXT_QS_ESC,  /* after a backslash in it */
    CK_EXT_QS_END,  /* after its closing quote */
    CK_SIZE_LF,     /* LF ending the size line */
    CK_DATA,        /* chunk data */
    CK_DATA_CR,     /* CRLF after the data */
    CK_DATA_LF,
    CK_TRL_START, /* start of a trailer line, or of the final CRLF */
    CK_TRL_NAME,
    CK_TRL_VAL,
    CK_TRL_LF,
    CK_END_LF,
};

/* One byte of a size line. Returns the next state, or -1 when the byte is not allowed. */
static int size_line(struct ing_h1_chunked *c, uint8_t ch)
{
    switch (c->state) {
    case CK_SIZE0:
    case CK_SIZE:
        if (IS(ch, CT_HEX)) {
            if (c->remaining > (MAX_63 >> 4))
                return -1;
            c->remaining = c->remaining << 4 | hexval(ch);
            return CK_SIZE;
        }
        if (c->state == CK_SIZE0)
            return -1;
        return ch == '\r' ? CK_SIZE_LF : ch == ';' ? CK_EXT_PRE : IS_OWS(ch) ? CK_EXT_WS : -1;
    case CK_EXT_WS:
        return IS_OWS(ch) ? CK_EXT_WS : ch == ';' ? CK_EXT_PRE : -1;
    case CK_EXT_PRE:
        return IS_OWS(ch) ? CK_EXT_PRE : IS(ch, CT_TOKEN) ? CK_EXT_NAME : -1;
    case CK_EXT_NAME:
        if (IS(ch, CT_TOKEN))
            return CK_EXT_NAME;
        /* fall through */
    case CK_EXT_NAME_WS:
        if (ch == '\r' && c->state == CK_EXT_NAME)
            return CK_SIZE_LF;
        return IS_OWS(ch)  ? CK_EXT_NAME_WS
               : ch == '=' ? CK_EXT_VAL_PRE
               : ch == ';' ? CK_EXT_PRE
                           : -1;
    case CK_EXT_VAL_PRE:
        return IS_OWS(ch)         ? CK_EXT_VAL_PRE
               : ch == '"'        ? CK_EXT_QS
               : IS(ch, CT_TOKEN) ? CK_EXT_VAL
                                  : -1;
    case CK_EXT_VAL:
        if (IS(ch, CT_TOKEN))
            return CK_EXT_VAL;
        /* fall through */
    case CK_EXT_QS_END:
        return ch == '\r' ? CK_SIZE_LF : ch == ';' ? CK_EXT_PRE : IS_OWS(ch) ? CK_EXT_WS : -1;
    case CK_EXT_QS:
        return ch == '"'           ? CK_EXT_QS_END
               : ch == '\\'        ? CK_EXT_QS_ESC
               : IS(ch, CT_QDTEXT) ? CK_EXT_QS
                                   : -1;
    case CK_EXT_QS_ESC:
        return IS(ch, CT_VALUE) ? CK_EXT_QS : -1;
    case CK_SIZE_LF:
        if (ch != '\n')
            return -1;
        c->line_len = 0;
        return c->remaining ? CK_DATA : CK_TRL_START;
    }
    return -1;
}

/* One byte after the data of a chunk, or of the trailer section. */
static int after_data(struct ing_h1_chunked *c, uint8_t ch)
{
    switch (c->state) {
    case CK_DATA_CR:
        return ch == '\r' ? CK_DATA_LF : -1;
    case CK_DATA_LF:
        return ch == '\n' ? CK_SIZE0 : -1;
    case CK_TRL_START:
        return ch == '\r' ? CK_END_LF : IS(ch, CT_TOKEN) ? CK_TRL_NAME : -1;
    case CK_TRL_NAME:
        return IS(ch, CT_TOKEN) ? CK_TRL_NAME : ch == ':' ? CK_TRL_VAL : -1;
    case CK_TRL_VAL:
        return IS(ch, CT_VALUE) ? CK_TRL_VAL : ch == '\r' ? CK_TRL_LF : -1;
    case CK_TRL_LF:
        return ch == '\n' ? CK_TRL_START : -1;
    case CK_END_LF:
        if (ch != '\n')
            return -1;
        c->done = 1;
        return CK_END_LF;
    }
    return -1;
}

/* See h1.h. One state-machine step per framing byte; data runs are skipped (or handed to
 * <data_cb>) in one step each. */
long ing_h1_chunked_scan(struct ing_h1_chunked *c, const char *buf, size_t len,
                         ing_h1_data_cb data_cb, void *arg)
{
    size_t i = 0;

    while (i < len && !c->done) {
        int next;

        if (c->state == CK_DATA) {
            size_t n = len - i < c->remaining ? len - i : (size_t)c->remaining;

            if (data_cb != NULL)
                data_cb(arg, buf + i, n);
            c->remaining -= n;
            c->data_bytes += n;
            i += n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        uint8_t ch = (uint8_t)buf[i++];

        if (c->state < CK_SIZE_LF) {
            if (++c->line_len > CHUNK_LINE_MAX + 1) /* + the CR */
                return -400;
            next = size_line(c, ch);
        } else if (c->state == CK_SIZE_LF) {
            next = size_line(c, ch);
        } else {
            if (c->state >= CK_TRL_START && ++c->trailer_len > CHUNK_TRAILER_MAX)
                return -400;
            next = after_data(c, ch);
        }
        if (next < 0)
            return -400;
        c->state = (uint8_t)next;
    }
    return (long)i;
}
