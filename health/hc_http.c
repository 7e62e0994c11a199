/* health/hc_http.c -- the HTTP check: a keep-alive HTTP/1.1 request, and a reader for the
 * response.
 *
 * health/ may not depend on ingress/ (the proxy's strict parser lives there), so this is a
 * reader of its own, and a deliberately small one: a check only needs the status and, with
 * body_contains, the body. It is strict where a mistake would give a wrong verdict (the status
 * line, Content-Length, chunk sizes) and lenient where it would not (a bare LF as line end, any
 * header it does not use). Interim 1xx responses are skipped. The verdict comes as soon as it
 * is known: a status outside the expected ranges, or in them without body_contains, decides at
 * the end of the head; body_contains decides when the text is seen (searched across reads and
 * chunk boundaries) or fails at the end of the body.
 *
 * Connection reuse: after a pass, the reader goes on through the rest of what was read to see
 * whether the response ends exactly there (h->reusable). Only then, and only for an HTTP/1.1
 * answer without "Connection: close" whose end is known (Content-Length, chunked, or no body),
 * may the probe keep the connection for the next check (hc_probe.c). A body that is not all in
 * yet is not waited for: the verdict does not wait, and that connection is closed as before.
 * A failure never keeps its connection, so only passes need to know where the response ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc_priv.h"

enum { PH_HEAD = 0, PH_BODY_LENGTH, PH_BODY_CHUNKED, PH_BODY_EOF, PH_DONE };

enum { CK_SIZE = 0, CK_EXT, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER };

char *hc__http_request(const struct xds_health_check *hc, const char *default_host, size_t *len)
{
    const char *method = hc->method != NULL ? hc->method : "GET";
    const char *path = hc->path != NULL ? hc->path : "/";
    const char *host = hc->host != NULL ? hc->host : default_host;
    char *req = wr_xasprintf("%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " HC_USER_AGENT
                             "\r\nAccept: */*\r\n\r\n",
                             method, path, host);

    *len = strlen(req);
    return req;
}

void hc__http_init(struct hc_http *h, const struct xds_health_check *hc)
{
    memset(h, 0, sizeof(*h));
    h->hc = hc;
    h->head_only = hc->method != NULL && strcmp(hc->method, "HEAD") == 0;
    h->want_body = hc->body_contains != NULL;
    if (h->want_body)
        hc__match_init(&h->mt, hc->body_contains, strlen(hc->body_contains));
}

void hc__http_dispose(struct hc_http *h)
{
    wr_free(&h->head);
    hc__match_dispose(&h->mt);
}

static int fail(char *why, size_t whylen, const char *text)
{
    snprintf(why, whylen, "%s", text);
    return HC_FAIL;
}

/* Returns the length of the head in h->head (end of the empty line), or 0 if not complete. */
static size_t head_end(struct hc_http *h)
{
    for (size_t i = h->scan; i < h->head_len; i++) {
        if (h->head[i] != '\n')
            continue;
        if (i >= 1 && h->head[i - 1] == '\n')
            return i + 1;
        if (i >= 2 && h->head[i - 1] == '\r' && h->head[i - 2] == '\n')
            return i + 1;
    }
    h->scan = h->head_len > 2 ? h->head_len - 2 : 0;
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "HTTP/1.x SSS[ reason]". */
static bool parse_status_line(const char *p, size_t n, unsigned *status)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || !is_digit(p[7]) || p[8] != ' ' ||
        !is_digit(p[9]) || !is_digit(p[10]) || !is_digit(p[11]) || (n > 12 && p[12] != ' '))
        return false;
    *status = (unsigned)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
    return *status >= 100;
}

static bool header_is(const char *p, size_t n, const char *lname)
{
    size_t ln = strlen(lname);

    if (n < ln + 1 || p[ln] != ':')
        return false;
    for (size_t i = 0; i < ln; i++)
        if (wr_lower(p[i]) != lname[i])
            return false;
    return true;
}

/* The value of the header line p[0..n) whose name has <skip> bytes (colon included), trimmed. */
static struct wr_str header_value(const char *p, size_t n, size_t skip)
{
    struct wr_str v = {p + skip, n - skip};

    while (v.len > 0 && (v.p[0] == ' ' || v.p[0] == '\t')) {
        v.p++;
        v.len--;
    }
    while (v.len > 0 && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
        v.len--;
    return v;
}

static bool parse_length(struct wr_str v, uint64_t *out)
{
    uint64_t x = 0;

    if (v.len == 0 || v.len > 18)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        if (!is_digit(v.p[i]))
            return false;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = x;
    return true;
}

/* Whether the last transfer coding of a Transfer-Encoding value is "chunked". */
static bool te_chunked(struct wr_str v)
{
    size_t end = v.len;

    while (end > 0 && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t' || v.p[end - 1] == ','))
        end--;
    size_t start = end;
    while (start > 0 && v.p[start - 1] != ',' && v.p[start - 1] != ' ')
        start--;
    struct wr_str last = {v.p + start, end - start};
    return wr_str_ieq(last, "chunked", 7);
}

/* Whether the comma-separated list <v> holds the token <tok> (case-insensitive). */
static bool has_token(struct wr_str v, const char *tok)
{
    size_t tl = strlen(tok), i = 0;

    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t start = i;
        while (i < v.len && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        struct wr_str t = {v.p + start, i - start};
        if (t.len == tl && wr_str_ieq(t, tok, tl))
            return true;
    }
    return false;
}

/* Parses a complete head h->head[0..len): status and body framing. */
static int parse_head(struct hc_http *h, size_t len, char *why, size_t whylen)
{
    const char *p = h->head, *end = h->head + len;
    bool have_cl = false, chunked = false, have_te = false;
    uint64_t cl = 0;
    bool first = true;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)(nl - p);
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (first) {
            if (!parse_status_line(p, n, &h->status))
                return fail(why, whylen, "malformed HTTP status line");
            h->keep_alive = p[7] == '1'; /* HTTP/1.0 closes unless negotiated: not reused */
            first = false;
        } else if (n == 0) {
            break;
        } else if (header_is(p, n, "content-length")) {
            uint64_t v;
            if (!parse_length(header_value(p, n, 15), &v) || (have_cl && v != cl))
                return fail(why, whylen, "malformed Content-Length");
            have_cl = true;
            cl = v;
        } else if (header_is(p, n, "transfer-encoding")) {
            have_te = true;
            chunked = te_chunked(header_value(p, n, 18));
        } else if (header_is(p, n, "connection")) {
            if (has_token(header_value(p, n, 11), "close"))
                h->keep_alive = false;
        }
        p = nl + 1;
    }
    if (h->head_only || h->status == 204 || h->status == 304)
        h->phase = PH_DONE;
    else if (have_te)
        h->phase = chunked ? PH_BODY_CHUNKED : PH_BODY_EOF;
    else if (have_cl)
        h->phase = PH_BODY_LENGTH;
    else
        h->phase = PH_BODY_EOF;
    h->remaining = cl;
    return HC_MORE;
}

/* After a pass: the response ended with <left> bytes of this read after it. The connection
 * carries the next check only if nothing follows and the server did not ask to close. */
static int pass_end(struct hc_http *h, size_t left)
{
    h->phase = PH_DONE;
    h->reusable = left == 0 && h->keep_alive;
    return HC_PASS;
}

static int body_end(struct hc_http *h, size_t left, char *why, size_t whylen)
{
    if (h->passed)
        return pass_end(h, left);
    h->phase = PH_DONE;
    snprintf(why, whylen, "HTTP %u: body does not contain \"%.40s\"", h->status,
             h->hc->body_contains);
    return HC_FAIL;
}

/* The check passed; the reader goes on to the end of the response (see the top). */
static void found(struct hc_http *h)
{
    h->passed = true;
}

static int feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen);

/* Chunked body: decodes p[0..n), searching the data. */
static int chunked_feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen)
{
    size_t i = 0;

    while (i < n) {
        char c = p[i];
        switch (h->ck) {
        case CK_SIZE: {
            int d = is_digit(c)                                  ? c - '0'
                    : (wr_lower(c) >= 'a' && wr_lower(c) <= 'f') ? wr_lower(c) - 'a' + 10
                                                                 : -1;
            i++;
            if (++h->line_len > HC_MAX_LINE)
                return fail(why, whylen, "chunk size line too long");
            if (d >= 0) {
                if (h->remaining >> 59)
                    return fail(why, whylen, "chunk size too large");
                h->remaining = h->remaining * 16 + (uint64_t)d;
                h->ck_digits = true;
            } else if (!h->ck_digits) {
                return fail(why, whylen, "malformed chunk size");
            } else if (c == ';' || c == ' ' || c == '\t' || c == '\r') {
                h->ck = CK_EXT;
            } else if (c == '\n') {
                goto line_done;
            } else {
                return fail(why, whylen, "malformed chunk size");
            }
            break;
        }
        case CK_EXT:
            i++;
            if (++h->line_len > HC_MAX_LINE)
                return fail(why, whylen, "chunk extension too long");
            if (c == '\n')
                goto line_done;
            break;
        case CK_DATA: {
            size_t k = (size_t)WR_MIN((uint64_t)(n - i), h->remaining);
            if (!h->passed && hc__match_feed(&h->mt, p + i, k))
                found(h);
            i += k;
            h->remaining -= k;
            if (h->remaining == 0)
                h->ck = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            i++;
            if (c == '\r') {
                h->ck = CK_DATA_LF;
                break;
            }
            if (c != '\n')
                return fail(why, whylen, "malformed chunk end");
            h->ck = CK_SIZE;
            h->ck_digits = false;
            break;
        case CK_DATA_LF:
            i++;
            if (c != '\n')
                return fail(why, whylen, "malformed chunk end");
            h->ck = CK_SIZE;
            h->ck_digits = false;
            break;
        case CK_TRAILER: /* after a pass: the trailer section, up to its empty line */
            i++;
            if (c == '\n') {
                if (h->line_len == 0)
                    return pass_end(h, n - i);
                h->line_len = 0;
            } else if (c != '\r' && ++h->line_len > HC_MAX_LINE) {
                return fail(why, whylen, "trailer line too long");
            }
            break;
        }
        continue;
    line_done:
        h->line_len = 0;
        if (h->remaining == 0 && h->passed) {
            h->ck = CK_TRAILER; /* last chunk: read to the end of the message */
            continue;
        }
        if (h->remaining == 0)
            return body_end(h, n - i, why, whylen); /* last chunk: trailers are of no interest */
        h->ck = CK_DATA;
    }
    return HC_MORE;
}

static int body_feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen)
{
    switch (h->phase) {
    case PH_BODY_LENGTH: {
        size_t k = (size_t)WR_MIN((uint64_t)n, h->remaining);
        if (!h->passed && hc__match_feed(&h->mt, p, k))
            found(h);
        h->remaining -= k;
        return h->remaining == 0 ? body_end(h, n - k, why, whylen) : HC_MORE;
    }
    case PH_BODY_CHUNKED:
        return chunked_feed(h, p, n, why, whylen);
    case PH_BODY_EOF: /* ends at the close: never reused */
        if (!h->passed && hc__match_feed(&h->mt, p, n))
            found(h);
        return h->passed ? HC_PASS : HC_MORE;
    default:
        return HC_MORE;
    }
}

/* A complete head is in h->head[0..len); the bytes after it (rest, nrest) belong to the body
 * or to the next head (after a 1xx). */
static int head_done(struct hc_http *h, size_t len, char *why, size_t whylen)
{
    int rc = parse_head(h, len, why, whylen);

    if (rc != HC_MORE)
        return rc;
    if (h->status < 200) {
        if (h->status == 101)
            return fail(why, whylen, "HTTP 101: unexpected protocol switch");
        /* Interim response: the final one follows. */
        size_t rest = h->head_len - len;
        memmove(h->head, h->head + len, rest);
        h->head_len = rest;
        h->scan = 0;
        h->phase = PH_HEAD;
        return feed(h, NULL, 0, why, whylen);
    }
    if (!hc__status_expected(h->hc, h->status)) {
        snprintf(why, whylen, "HTTP status %u", h->status);
        return HC_FAIL;
    }
    size_t rest = h->head_len - len;
    if (!h->want_body)
        found(h);
    if (h->phase == PH_DONE && h->passed)
        return pass_end(h, rest);
    if (h->phase == PH_DONE) {
        snprintf(why, whylen, "HTTP %u without a body", h->status);
        return HC_FAIL;
    }
    if (h->phase == PH_BODY_LENGTH && h->remaining == 0)
        return body_end(h, rest, why, whylen);
    char *body = h->head + len;
    h->head_len = len;
    return body_feed(h, body, rest, why, whylen);
}

static int feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen)
{
    if (h->phase == PH_DONE)
        return HC_MORE;
    if (h->phase != PH_HEAD)
        return body_feed(h, p, n, why, whylen);
    /* Only the head is kept: what follows it in the same read goes to the body reader. */
    size_t take = WR_MIN(n, HC_MAX_HEAD - h->head_len);
    if (h->head_len + take > h->head_cap) {
        h->head_cap = WR_MIN(WR_MAX(h->head_cap * 2, h->head_len + take + 1024), HC_MAX_HEAD);
        h->head = wr_xrealloc(h->head, h->head_cap);
    }
    if (take > 0)
        memcpy(h->head + h->head_len, p, take);
    h->head_len += take;
    size_t len = head_end(h);
    if (len == 0) {
        if (take < n || h->head_len == HC_MAX_HEAD)
            return fail(why, whylen, "HTTP response head too large");
        /* Something that is not HTTP fails at once rather than at the timeout. */
        if (h->head_len >= 5 && memcmp(h->head, "HTTP/", 5) != 0)
            return fail(why, whylen, "not an HTTP response");
        return HC_MORE;
    }
    int rc = head_done(h, len, why, whylen);
    if (rc != HC_MORE || take == n)
        return rc;
    return feed(h, p + take, n - take, why, whylen);
}

/* A pass is final even if what follows it in the same read is cut or malformed: that only
 * makes the connection unfit for reuse (h->reusable is set by pass_end() alone). */
int hc__http_feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen)
{
    int rc = feed(h, p, n, why, whylen);

    if (!h->passed)
        return rc;
    why[0] = '\0';
    return HC_PASS;
}

int hc__http_eof(struct hc_http *h, char *why, size_t whylen)
{
    switch (h->phase) {
    case PH_HEAD:
        return fail(why, whylen,
                    h->head_len == 0 ? "connection closed without a response"
                                     : "connection closed in the response head");
    case PH_BODY_EOF:
        return body_end(h, 0, why, whylen);
    default:
        snprintf(why, whylen, "HTTP %u: connection closed before the end of the body", h->status);
        return HC_FAIL;
    }
}

/* ---- the probe side ----------------------------------------------------------------------- */

static int http_start(struct hc_probe *p)
{
    size_t len;
    char *req = hc__http_request(p->hc, p->ep->address, &len);
    int rc;

    hc__http_init(&p->u.http, p->hc);
    rc = hc__probe_send(p, req, len);
    free(req);
    return rc < 0 ? HC_FAIL : HC_MORE;
}

static int http_data(struct hc_probe *p, const char *d, size_t n)
{
    return hc__http_feed(&p->u.http, d, n, p->why, sizeof(p->why));
}

static int http_eof(struct hc_probe *p)
{
    return hc__http_eof(&p->u.http, p->why, sizeof(p->why));
}

static void http_dispose(struct hc_probe *p)
{
    hc__http_dispose(&p->u.http);
}

static bool http_reusable(struct hc_probe *p)
{
    return p->u.http.reusable;
}

const struct hc_proto hc__proto_http = {http_start, http_data, http_eof, http_dispose,
                                        http_reusable};
