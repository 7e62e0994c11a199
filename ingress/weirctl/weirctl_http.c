/* ingress/weirctl/weirctl_http.c -- HTTP requests for the targets, with libcurl's easy API.
 *
 * A command-line tool makes one request at a time, so the blocking easy interface is the right
 * tool here (weir itself drives libcurl's multi interface from its loop). One handle per target
 * keeps its connection alive between the polls of `rollout step`. Redirects are not followed, so
 * a token is only ever sent to the URL the operator named.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include <weir/wr.h>

#include "weirctl.h"

#define HTTP_MAX_BODY   (64u << 20) /* /clusters of a very large deployment stays far below */
#define HTTP_CONNECT_MS 5000
#define HTTP_TIMEOUT_MS 30000 /* above weir's 10 s wait for the workers to serve a change */

struct wctl_http {
    CURL *curl;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
};

struct body {
    struct wr_sbuf buf;
    bool too_big;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;

    if (b->buf.len + size * n > HTTP_MAX_BODY) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    wr_sbuf_add(&b->buf, p, size * n);
    return size * n;
}

/* Returns a client whose requests carry <header> (NULL: none). Aborts on OOM. */
struct wctl_http *wctl_http_new(const char *header)
{
    struct wctl_http *h = wr_xcalloc(1, sizeof(*h));

    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        fprintf(stderr, "weirctl: cannot initialise libcurl\n");
        abort();
    }
    h->headers = curl_slist_append(h->headers, "Accept: application/json");
    if (header != NULL)
        h->headers = curl_slist_append(h->headers, header);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)HTTP_CONNECT_MS);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "weirctl/" WEIR_VERSION);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_data);
    return h;
}

void wctl_http_free(struct wctl_http *h)
{
    if (h == NULL)
        return;
    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h);
}

/* Sets the method and body of the next request on the reused handle. */
static void set_method(CURL *c, const char *method, const char *body)
{
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L); /* resets POST/PUT state left by a former call */
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(method, "GET") == 0)
        return;
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body != NULL ? strlen(body) : 0));
    if (strcmp(method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
}

int wctl_http_do(struct wctl_http *h, const char *method, const char *url, const char *body,
                 struct wctl_resp *r)
{
    struct body b = {0};
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    h->errbuf[0] = '\0';
    set_method(h->curl, method, body);
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
    rc = curl_easy_perform(h->curl);
    if (rc != CURLE_OK) {
        wr_sbuf_dispose(&b.buf);
        return wctl_fail("%s %s: %s", method, url,
                         b.too_big      ? "answer too large"
                         : h->errbuf[0] ? h->errbuf
                                        : curl_easy_strerror(rc));
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &r->status);
    wr_sbuf_add(&b.buf, "", 1); /* NUL-terminates, also an empty body */
    r->body = b.buf.p;
    r->len = b.buf.len - 1;
    return 0;
}

void wctl_resp_dispose(struct wctl_resp *r)
{
    wr_free(&r->body);
    r->len = 0;
}

/* Copies the first line of <s> (at most <n> bytes) into <buf>. */
static const char *first_line(const char *s, size_t n, char *buf, size_t len)
{
    size_t i = 0;

    while (n > 0 && (*s == ' ' || *s == '\n' || *s == '\r')) {
        s++;
        n--;
    }
    while (i < n && i + 1 < len && s[i] != '\n' && s[i] != '\r') {
        buf[i] = s[i];
        i++;
    }
    buf[i] = '\0';
    return buf;
}

const char *wctl_resp_reason(const struct wctl_resp *r, char *buf, size_t len)
{
    json_t *j = r->body != NULL ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    const char *e = json_string_value(json_object_get(j, "error"));

    if (e != NULL) {
        snprintf(buf, len, "%s", e);
    } else if (r->len > 0) {
        first_line(r->body, r->len, buf, len);
    } else {
        snprintf(buf, len, "HTTP status %ld", r->status);
    }
    json_decref(j);
    return buf;
}

char *wctl_url_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *out;

    if (e == NULL) {
        fprintf(stderr, "weirctl: out of memory\n");
        abort();
    }
    out = wr_xstrdup(e);
    curl_free(e);
    return out;
}
