/* tests/unit/discovery/disc_http_test.c -- the libcurl-on-libuv HTTP client against a small
 * HTTP/1.1 server on the same loop: buffered and streamed bodies, headers, methods and
 * tokens, timeouts, refusals, cancellation (from inside curl and outside), requests started
 * from a data callback, and a close with requests in flight. Every test ends with
 * uv_loop_close() == 0: no handle is left behind. */
#include <curl/curl.h>

#include "../../../discovery/disc_priv.h"
#include "test.h"

/* ---- the server: one request per connection, answers chosen by path ------------------------ */

struct sconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct wr_sbuf in;
    int chunks_left; /* /stream: chunks still to send (-1: endless) */
    bool answered;
    int closing;
};

static uv_loop_t loop;
static uv_tcp_t server;
static int port;
static unsigned conns_open;

static void on_sconn_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;
    if (--c->closing == 0) {
        wr_sbuf_dispose(&c->in);
        free(c);
        conns_open--;
    }
}

static void sconn_close(struct sconn *c)
{
    if (c->closing)
        return;
    c->closing = 2;
    uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
    uv_close((uv_handle_t *)&c->timer, on_sconn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void swrite(struct sconn *c, const char *text)
{
    if (c->closing)
        return;
    uv_write_t *w = malloc(sizeof(*w));
    char *copy = strdup(text);
    uv_buf_t b = uv_buf_init(copy, (unsigned)strlen(copy));
    w->data = copy;
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(copy);
        free(w);
    }
}

static void on_close_later(uv_timer_t *t)
{
    sconn_close(t->data);
}

static void on_chunk_timer(uv_timer_t *t)
{
    struct sconn *c = t->data;
    if (c->chunks_left == 0) {
        swrite(c, "0\r\n\r\n");
        uv_timer_start(&c->timer, on_close_later, 20, 0);
        return;
    }
    swrite(c, "6\r\nchunk;\r\n");
    if (c->chunks_left > 0)
        c->chunks_left--;
    uv_timer_start(&c->timer, on_chunk_timer, 10, 0);
}

static void answer(struct sconn *c, const char *head_end)
{
    char method[16] = "", path[256] = "";
    sscanf(c->in.p, "%15s %255s", method, path);
    const char *body = head_end + 4;
    c->answered = true;
    if (strcmp(path, "/hello") == 0) {
        swrite(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test:  yes \r\nConnection: close\r\n"
                  "\r\nhello");
        uv_timer_start(&c->timer, on_close_later, 20, 0);
    } else if (strcmp(path, "/echo") == 0) {
        const char *tok = strstr(c->in.p, "X-Token: ");
        const char *auth = strstr(c->in.p, "Authorization: Bearer ");
        char tokv[64] = "-", authv[64] = "-", out[512], resp[1024];
        if (tok)
            sscanf(tok + 9, "%63s", tokv);
        if (auth)
            sscanf(auth + 22, "%63s", authv);
        snprintf(out, sizeof(out), "%s %s %s %s", method, tokv, authv, body);
        snprintf(resp, sizeof(resp),
                 "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 strlen(out), out);
        swrite(c, resp);
        uv_timer_start(&c->timer, on_close_later, 20, 0);
    } else if (strncmp(path, "/stream", 7) == 0) {
        c->chunks_left = strstr(path, "n=") ? atoi(strstr(path, "n=") + 2) : -1;
        if (c->chunks_left == 0)
            c->chunks_left = -1;
        swrite(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        uv_timer_start(&c->timer, on_chunk_timer, 10, 0);
    } else if (strcmp(path, "/headonly") == 0) {
        swrite(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    } else if (strcmp(path, "/big") == 0) {
        static char big[100 * 1024 + 128];
        int n = snprintf(big, sizeof(big),
                         "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                         100 * 1024);
        memset(big + n, 'x', 100 * 1024);
        big[n + 100 * 1024] = '\0';
        swrite(c, big);
        uv_timer_start(&c->timer, on_close_later, 50, 0);
    } /* "/hang": never answers */
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    b->base = malloc(size);
    b->len = size;
}

static void on_sread(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct sconn *c = s->data;
    if (n < 0) {
        free(b->base);
        sconn_close(c);
        return;
    }
    wr_sbuf_add(&c->in, b->base, (size_t)n);
    free(b->base);
    wr_sbuf_add(&c->in, "", 1);
    c->in.len--;
    const char *end = strstr(c->in.p, "\r\n\r\n");
    if (end == NULL || c->answered)
        return;
    const char *cl = strcasestr(c->in.p, "Content-Length: ");
    size_t want = (size_t)(end + 4 - c->in.p) + (cl && cl < end ? (size_t)atoi(cl + 16) : 0);
    if (c->in.len >= want)
        answer(c, end);
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct sconn *c = calloc(1, sizeof(*c));
    uv_tcp_init(&loop, &c->tcp);
    uv_timer_init(&loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    conns_open++;
    uv_accept(srv, (uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_sread);
}

static void server_start(void)
{
    struct sockaddr_in sa;
    int len = sizeof(sa);
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &server);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    ASSERT(uv_tcp_bind(&server, (struct sockaddr *)&sa, 0) == 0);
    ASSERT(uv_listen((uv_stream_t *)&server, 64, on_connection) == 0);
    uv_tcp_getsockname(&server, (struct sockaddr *)&sa, &len);
    port = ntohs(sa.sin_port);
}

/* Whatever the server still has open (the only handles left once the client is closed). */
static void close_walk(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    if (h == (uv_handle_t *)&server)
        uv_close(h, NULL);
    else
        sconn_close(h->data);
}

/* Closes the client and the server and checks that the loop closes. */
static void finish(struct disc_http *h)
{
    disc_http_close(h, NULL, NULL);
    if (!uv_is_closing((uv_handle_t *)&server))
        uv_close((uv_handle_t *)&server, NULL);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

static char *url(const char *path)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", port, path);
    return buf;
}

/* ---- client side ----------------------------------------------------------------------------- */

struct result {
    int done;
    int curl_code;
    long status;
    char body[200 * 1024];
    size_t body_len;
    char header[64];
    size_t streamed;
    int chunks;
    struct disc_http *h;
    struct disc_http_req *req;
    bool cancel_in_data;
    bool start_in_data;
    struct result *child;
};

static void on_done(void *arg, const struct disc_http_result *res)
{
    struct result *r = arg;
    r->done++;
    r->curl_code = res->curl_code;
    r->status = res->status;
    r->body_len = res->body_len;
    memcpy(r->body, res->body, WR_MIN(res->body_len + 1, sizeof(r->body)));
}

static void on_header(void *arg, const char *name, size_t nl, const char *value, size_t vl)
{
    struct result *r = arg;
    if (nl == 6 && strncasecmp(name, "x-test", 6) == 0)
        snprintf(r->header, sizeof(r->header), "%.*s", (int)vl, value);
}

static int on_data(void *arg, const char *data, size_t len)
{
    struct result *r = arg;
    r->streamed += len;
    r->chunks++;
    if (r->cancel_in_data && r->chunks == 2)
        disc_http_cancel(r->req); /* from inside curl: deferred, and no callback after this */
    if (r->start_in_data && r->chunks == 1) {
        struct disc_http_opts o = {.url = url("/hello"), .on_done = on_done, .arg = r->child};
        ASSERT(disc_http_start(r->h, &o) != NULL);
    }
    return 0;
}

static struct disc_http *client(void)
{
    server_start();
    struct disc_http *h = disc_http_new(&loop);
    ASSERT(h != NULL);
    return h;
}

static void on_run_for_closed(uv_handle_t *h)
{
    *(int *)h->data = 1;
}

static void on_run_for(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_run_for_closed);
}

/* Runs the loop for <ms> whatever happens (the timer is closed when this returns). */
static void run_for(uint64_t ms)
{
    uv_timer_t t;
    int closed = 0;
    uv_timer_init(&loop, &t);
    t.data = &closed;
    uv_timer_start(&t, on_run_for, ms, 0);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
}

static void run_until(int *flag)
{
    while (*flag == 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
}

TEST(get_buffered_with_headers)
{
    struct disc_http *h = client();
    static struct result r;
    struct disc_http_opts o = {
        .url = url("/hello"), .on_header = on_header, .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    ASSERT_EQ(disc_http_active(h), 1);
    run_until(&r.done);
    ASSERT_EQ(r.done, 1);
    ASSERT_EQ(r.curl_code, 0);
    ASSERT_EQ(r.status, 200);
    ASSERT_SLICE(r.body, r.body_len, "hello");
    ASSERT_STREQ(r.header, "yes"); /* trimmed */
    ASSERT_EQ(disc_http_active(h), 0);
    finish(h);
}

TEST(put_with_body_and_tokens)
{
    struct disc_http *h = client();
    static struct result r1, r2;
    struct disc_http_opts o = {.method = "PUT",
                               .url = url("/echo"),
                               .body = "payload",
                               .body_len = 7,
                               .token = "s3cret",
                               .token_header = "X-Token",
                               .on_done = on_done,
                               .arg = &r1};
    ASSERT(disc_http_start(h, &o) != NULL);
    const char *hdrs[] = {"X-Extra: 1", NULL};
    struct disc_http_opts o2 = {.url = url("/echo"),
                                .body = "{}",
                                .body_len = 2,
                                .headers = hdrs,
                                .token = "bear",
                                .on_done = on_done,
                                .arg = &r2};
    ASSERT(disc_http_start(h, &o2) != NULL);
    run_until(&r1.done);
    run_until(&r2.done);
    ASSERT_EQ(r1.status, 201);
    ASSERT_SLICE(r1.body, r1.body_len, "PUT s3cret - payload");
    ASSERT_SLICE(r2.body, r2.body_len, "POST - bear {}");
    finish(h);
}

TEST(streamed_chunks)
{
    struct disc_http *h = client();
    static struct result r;
    struct disc_http_opts o = {
        .url = url("/stream?n=5"), .on_data = on_data, .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    run_until(&r.done);
    ASSERT_EQ(r.curl_code, 0);
    ASSERT_EQ(r.streamed, 5 * 6);
    ASSERT_EQ(r.body_len, 0); /* streamed bodies are not buffered */
    finish(h);
}

TEST(cancel_from_inside_data_callback)
{
    struct disc_http *h = client();
    static struct result r;
    r.cancel_in_data = true;
    struct disc_http_opts o = {
        .url = url("/stream"), .on_data = on_data, .on_done = on_done, .arg = &r};
    r.req = disc_http_start(h, &o);
    ASSERT(r.req != NULL);
    for (int i = 0; i < 250 && r.chunks < 2; i++) /* a busy machine may be slow */
        run_for(20);
    run_for(200);           /* the server goes on sending a chunk every 10 ms */
    ASSERT_EQ(r.chunks, 2); /* nothing after the cancel */
    ASSERT_EQ(r.done, 0);
    ASSERT_EQ(disc_http_active(h), 0);
    finish(h);
}

static void on_cancel_timer(uv_timer_t *t)
{
    struct result *r = t->data;
    disc_http_cancel(r->req);
    uv_close((uv_handle_t *)t, NULL);
}

TEST(cancel_from_outside)
{
    struct disc_http *h = client();
    static struct result r;
    static uv_timer_t t;
    struct disc_http_opts o = {.url = url("/hang"), .on_done = on_done, .arg = &r};
    r.req = disc_http_start(h, &o);
    uv_timer_init(&loop, &t);
    t.data = &r;
    uv_timer_start(&t, on_cancel_timer, 100, 0);
    run_for(300);
    ASSERT_EQ(r.done, 0);
    ASSERT_EQ(disc_http_active(h), 0);
    finish(h);
}

TEST(start_from_inside_data_callback)
{
    struct disc_http *h = client();
    static struct result r, child;
    r.start_in_data = true;
    r.h = h;
    r.child = &child;
    struct disc_http_opts o = {
        .url = url("/stream?n=3"), .on_data = on_data, .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    run_until(&r.done);
    run_until(&child.done);
    ASSERT_EQ(child.status, 200);
    ASSERT_SLICE(child.body, child.body_len, "hello");
    finish(h);
}

TEST(total_timeout)
{
    struct disc_http *h = client();
    static struct result r;
    struct disc_http_opts o = {
        .url = url("/hang"), .timeout_ms = 200, .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    uint64_t t0 = uv_now(&loop);
    run_until(&r.done);
    ASSERT_EQ(r.curl_code, CURLE_OPERATION_TIMEDOUT);
    ASSERT(uv_now(&loop) - t0 >= 150 && uv_now(&loop) - t0 < 5000);
    finish(h);
}

TEST(idle_timeout)
{
    struct disc_http *h = client();
    static struct result r;
    struct disc_http_opts o = {.url = url("/headonly"),
                               .idle_timeout_ms = 1000,
                               .on_data = on_data,
                               .on_done = on_done,
                               .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    run_until(&r.done);
    ASSERT_EQ(r.curl_code, CURLE_OPERATION_TIMEDOUT);
    ASSERT_EQ(r.status, 200); /* the head had arrived */
    finish(h);
}

TEST(refused)
{
    struct disc_http *h = client();
    static struct result r;
    uv_close((uv_handle_t *)&server, NULL); /* nothing listens on <port> any more */
    uv_run(&loop, UV_RUN_NOWAIT);
    struct disc_http_opts o = {.url = url("/hello"), .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    run_until(&r.done);
    ASSERT_EQ(r.curl_code, CURLE_COULDNT_CONNECT);
    ASSERT_EQ(r.status, 0);
    disc_http_close(h, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(body_limit)
{
    struct disc_http *h = client();
    static struct result r, r2;
    struct disc_http_opts o = {.url = url("/big"), .max_body = 1000, .on_done = on_done, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    struct disc_http_opts o2 = {.url = url("/big"), .on_done = on_done, .arg = &r2};
    ASSERT(disc_http_start(h, &o2) != NULL);
    run_until(&r.done);
    run_until(&r2.done);
    ASSERT_EQ(r.curl_code, CURLE_WRITE_ERROR);
    ASSERT_EQ(r2.curl_code, 0);
    ASSERT_EQ(r2.body_len, 100 * 1024);
    finish(h);
}

static int closed_calls;

static void on_closed(void *arg)
{
    closed_calls++;
}

TEST(close_with_requests_in_flight)
{
    struct disc_http *h = client();
    static struct result r[4];
    const char *paths[] = {"/hang", "/stream", "/headonly", "/hello"};
    for (int i = 0; i < 4; i++) {
        struct disc_http_opts o = {.url = url(paths[i]),
                                   .on_data = i == 1 ? on_data : NULL,
                                   .on_done = on_done,
                                   .arg = &r[i]};
        ASSERT(disc_http_start(h, &o) != NULL);
    }
    run_for(100);
    disc_http_close(h, on_closed, NULL);
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(closed_calls, 1);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(r[i].done, 0);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

static void on_done_close(void *arg, const struct disc_http_result *res)
{
    struct result *r = arg;
    r->done++;
    disc_http_close(r->h, on_closed, NULL); /* allowed from on_done */
}

TEST(close_from_on_done)
{
    struct disc_http *h = client();
    static struct result r, other;
    r.h = h;
    struct disc_http_opts o = {.url = url("/hello"), .on_done = on_done_close, .arg = &r};
    ASSERT(disc_http_start(h, &o) != NULL);
    struct disc_http_opts o2 = {.url = url("/hang"), .on_done = on_done, .arg = &other};
    ASSERT(disc_http_start(h, &o2) != NULL);
    closed_calls = 0;
    run_until(&r.done);
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(closed_calls, 1);
    ASSERT_EQ(other.done, 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}
