/* tests/unit/health/hc_http_test.c -- the HTTP check's request and response reader
 * (health/hc_http.c). Every response is also fed one byte at a time, and split at every
 * offset, and must give the same verdict: a reader that only works on whole reads would pass
 * loopback tests and fail on a real network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../health/hc_priv.h"
#include "test.h"

static uint16_t default_ranges[1][2] = {{200, 399}};

static struct xds_health_check check(const char *method, const char *body_contains)
{
    struct xds_health_check hc = {.type = XDS_HC_HTTP,
                                  .path = "/healthz",
                                  .method = (char *)method,
                                  .body_contains = (char *)body_contains,
                                  .expected = default_ranges,
                                  .n_expected = 1};
    return hc;
}

/* Feeds <resp> in pieces of <piece> bytes (0: whole), then EOF if still undecided. Returns the
 * verdict and copies the reason to <why>. */
static int run(const struct xds_health_check *hc, const char *resp, size_t len, size_t piece,
               bool eof, char *why)
{
    struct hc_http h;
    int rc = HC_MORE;
    size_t off = 0;

    hc__http_init(&h, hc);
    while (rc == HC_MORE && off < len) {
        size_t n = piece == 0 ? len - off : WR_MIN(piece, len - off);
        rc = hc__http_feed(&h, resp + off, n, why, 160);
        off += n;
    }
    if (rc == HC_MORE && eof)
        rc = hc__http_eof(&h, why, 160);
    hc__http_dispose(&h);
    return rc;
}

/* The verdict must not depend on how the bytes are split. */
static int verdict(const struct xds_health_check *hc, const char *resp, bool eof, char *why)
{
    size_t len = strlen(resp);
    int whole = run(hc, resp, len, 0, eof, why);
    char tmp[160];

    ASSERT_EQ(run(hc, resp, len, 1, eof, tmp), whole);
    for (size_t split = 1; split < len; split++) {
        struct hc_http h;
        int rc;
        hc__http_init(&h, hc);
        rc = hc__http_feed(&h, resp, split, tmp, sizeof(tmp));
        if (rc == HC_MORE)
            rc = hc__http_feed(&h, resp + split, len - split, tmp, sizeof(tmp));
        if (rc == HC_MORE && eof)
            rc = hc__http_eof(&h, tmp, sizeof(tmp));
        hc__http_dispose(&h);
        if (rc != whole)
            FAIL("split at %zu: %d, whole: %d", split, rc, whole);
    }
    return whole;
}

TEST(request_format)
{
    struct xds_health_check hc = check(NULL, NULL);
    size_t len;
    char *req = hc__http_request(&hc, "127.0.0.1:9001", &len);

    ASSERT_STREQ(req, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nUser-Agent: "
                      "weir-health-check/" WEIR_VERSION "\r\nAccept: */*\r\n\r\n");
    ASSERT_EQ(len, strlen(req));
    free(req);
    hc.method = "HEAD";
    hc.host = "svc.internal";
    req = hc__http_request(&hc, "[::1]:80", &len);
    ASSERT(strncmp(req, "HEAD /healthz HTTP/1.1\r\nHost: svc.internal\r\n", 44) == 0);
    free(req);
}

TEST(status_in_range_passes_at_end_of_head)
{
    struct xds_health_check hc = check(NULL, NULL);
    char why[160];

    /* No body needed: decided at the end of the head, without waiting for EOF. */
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nok", false, why),
              HC_PASS);
    ASSERT_EQ(verdict(&hc, "HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n", false, why), HC_PASS);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 204\r\n\r\n", false, why), HC_PASS); /* no reason */
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\n\n", false, why), HC_PASS);  /* bare LF */
}

TEST(status_out_of_range_fails)
{
    struct xds_health_check hc = check(NULL, NULL);
    char why[160];

    ASSERT_EQ(
        verdict(&hc, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false, why),
        HC_FAIL);
    ASSERT_STREQ(why, "HTTP status 503");
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 404 Not Found\r\n\r\n", false, why), HC_FAIL);
}

TEST(custom_ranges)
{
    uint16_t r[2][2] = {{200, 200}, {404, 404}};
    struct xds_health_check hc = check(NULL, NULL);
    char why[160];

    hc.expected = r;
    hc.n_expected = 2;
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 404 Not Found\r\n\r\n", false, why), HC_PASS);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\n\r\n", false, why), HC_PASS);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 302 Found\r\n\r\n", false, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 201 Created\r\n\r\n", false, why), HC_FAIL);
}

TEST(body_contains_with_length)
{
    struct xds_health_check hc = check(NULL, "\"status\":\"UP\"");
    char why[160];

    ASSERT_EQ(
        verdict(&hc,
                "HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n{\"db\":1,\"status\":\"UP\",\"x\":0}",
                false, why),
        HC_PASS);
    ASSERT_EQ(
        verdict(
            &hc,
            "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{\"db\":1,\"status\":\"DOWN\",\"x\":0}",
            false, why),
        HC_FAIL);
    ASSERT(strstr(why, "body does not contain") != NULL);
    /* The text after the declared length does not count. */
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\"status\":\"UP\"",
                      false, why),
              HC_FAIL);
    /* Content-Length: 0 ends the body at once. */
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, why), HC_FAIL);
}

TEST(body_contains_but_status_wrong)
{
    struct xds_health_check hc = check(NULL, "UP");
    char why[160];

    ASSERT_EQ(verdict(&hc, "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nUP", false, why),
              HC_FAIL);
    ASSERT_STREQ(why, "HTTP status 500");
}

TEST(body_contains_chunked)
{
    struct xds_health_check hc = check(NULL, "healthy");
    char why[160];

    /* The text straddles a chunk boundary, with a chunk extension in between. */
    ASSERT_EQ(verdict(&hc,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nI am \r\n4;ext=1\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n",
                      false, why),
              HC_PASS);
    /* The chunk framing itself is not body text. */
    ASSERT_EQ(verdict(&hc,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      "4\r\nheal\r\n4\r\nxthy\r\n0\r\n\r\n",
                      false, why),
              HC_FAIL);
    ASSERT(strstr(why, "body does not contain") != NULL);
    ASSERT_EQ(
        verdict(&hc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, why),
        HC_FAIL);
    ASSERT_STREQ(why, "malformed chunk size");
}

TEST(body_until_eof)
{
    struct xds_health_check hc = check(NULL, "ready");
    char why[160];

    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\n\r\nnot yet", true, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\n\r\nall ready", false, why), HC_PASS);
    /* A body cut short fails. */
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnot", true, why),
              HC_FAIL);
    ASSERT(strstr(why, "before the end of the body") != NULL);
}

TEST(head_without_body)
{
    struct xds_health_check hc = check("HEAD", NULL);
    char why[160];

    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", false, why), HC_PASS);
    hc.body_contains = "x";
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", false, why), HC_FAIL);
}

TEST(interim_responses_skipped)
{
    struct xds_health_check hc = check(NULL, "fine");
    char why[160];

    ASSERT_EQ(verdict(&hc,
                      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine",
                      false, why),
              HC_PASS);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 No\r\n\r\n", false, why),
              HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 101 Switching Protocols\r\n\r\n", false, why), HC_FAIL);
}

TEST(malformed_responses_fail)
{
    struct xds_health_check hc = check(NULL, NULL);
    char why[160];

    ASSERT_EQ(verdict(&hc, "HTTP/1.1 2OO OK\r\n\r\n", false, why), HC_FAIL);
    ASSERT_STREQ(why, "malformed HTTP status line");
    ASSERT_EQ(verdict(&hc, "HTTP/2 200\r\n\r\n", false, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200OK\r\n\r\n", false, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 099 Low\r\n\r\n", false, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", false, why), HC_FAIL);
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                      false, why),
              HC_FAIL);
    /* Not HTTP at all: decided on the first bytes, not at the timeout. */
    ASSERT_EQ(verdict(&hc, "SSH-2.0-OpenSSH_9.2\r\n", false, why), HC_FAIL);
    ASSERT_STREQ(why, "not an HTTP response");
}

TEST(eof_before_response)
{
    struct xds_health_check hc = check(NULL, NULL);
    char why[160];

    ASSERT_EQ(verdict(&hc, "", true, why), HC_FAIL);
    ASSERT_STREQ(why, "connection closed without a response");
    ASSERT_EQ(verdict(&hc, "HTTP/1.1 200 OK\r\nContent-", true, why), HC_FAIL);
    ASSERT_STREQ(why, "connection closed in the response head");
}

TEST(head_too_large)
{
    struct xds_health_check hc = check(NULL, NULL);
    struct hc_http h;
    char why[160];
    char *big = malloc(HC_MAX_HEAD + 100);
    int rc = HC_MORE;

    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(big + 20, 'a', HC_MAX_HEAD + 80);
    hc__http_init(&h, &hc);
    for (size_t off = 0; off < HC_MAX_HEAD + 100 && rc == HC_MORE; off += 1000)
        rc = hc__http_feed(&h, big + off, WR_MIN(1000, HC_MAX_HEAD + 100 - off), why, sizeof(why));
    ASSERT_EQ(rc, HC_FAIL);
    ASSERT_STREQ(why, "HTTP response head too large");
    hc__http_dispose(&h);
    free(big);
}

TEST(large_body_in_one_read)
{
    struct xds_health_check hc = check(NULL, "needle-at-the-end");
    size_t body = 60000;
    char head[128];
    int hl =
        snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body + 17);
    size_t len = (size_t)hl + body + 17;
    char *resp = malloc(len + 1);
    char why[160];

    memcpy(resp, head, (size_t)hl);
    memset(resp + hl, 'x', body);
    memcpy(resp + hl + body, "needle-at-the-end", 17);
    resp[len] = '\0';
    /* Head and a body larger than the head limit arrive in one read: only the head counts
     * against the limit. */
    ASSERT_EQ(run(&hc, resp, len, 0, false, why), HC_PASS);
    ASSERT_EQ(run(&hc, resp, len, 4096, false, why), HC_PASS);
    hc.body_contains = "not there";
    ASSERT_EQ(run(&hc, resp, len, 0, false, why), HC_FAIL);
    ASSERT(strstr(why, "body does not contain") != NULL);
    free(resp);
}

/* Whether the connection may carry the next check after <resp> (fed whole; PASS expected). */
static bool reusable(const struct xds_health_check *hc, const char *resp)
{
    struct hc_http h;
    char why[160];
    bool r;

    hc__http_init(&h, hc);
    ASSERT_EQ(hc__http_feed(&h, resp, strlen(resp), why, sizeof(why)), HC_PASS);
    r = h.reusable;
    hc__http_dispose(&h);
    return r;
}

TEST(keep_alive_only_after_a_complete_response)
{
    struct xds_health_check hc = check(NULL, NULL), body = check(NULL, "ok");
    struct xds_health_check head = check("HEAD", NULL);

    ASSERT(reusable(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    ASSERT(reusable(&hc, "HTTP/1.1 204 No Content\r\n\r\n"));
    ASSERT(reusable(&head, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"));
    ASSERT(
        reusable(&hc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"));
    ASSERT(reusable(&body, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "2\r\nok\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"));
    ASSERT(reusable(&body, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                           "Content-Length: 5\r\n\r\nok..."));
    /* The server closes, or the end is unknown, or not all in, or something follows. */
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"));
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n\r\n"));
    ASSERT(!reusable(&hc, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\n\r\nok"));
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"));
    ASSERT(!reusable(&body, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"));
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1"));
    /* A pass stays a pass whatever follows it in the same read. */
    ASSERT(!reusable(&hc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
}
