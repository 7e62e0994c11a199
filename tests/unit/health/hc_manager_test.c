/* tests/unit/health/hc_manager_test.c -- the health manager on a real libuv loop
 * (health/hc_manager.c, hc_probe.c, hc_outlier.c): checks against an in-process origin on
 * 127.0.0.1, verdict flips and counters, initial state, timeouts, bounded concurrency, outlier
 * ejections with their budget and back-off, draining of removed endpoints, reload rules, and a
 * clean close (the loop closes with no handle left; LeakSanitizer checks the rest).
 *
 * Waits are bounded and generous; assertions are about what happens, not how fast, except
 * where the duration IS the behaviour (ejection back-off), and then with wide margins.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include <weir/hc.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "../../../health/hc_priv.h"
#include "test.h"

/* ---- an origin in the test process ---------------------------------------------------------- */

/* ORG_KA answers 200 and keeps the connection open for more requests; ORG_KA_DROP does too,
 * but closes a connection, unanswered, when its second request arrives (a server closing an
 * idle connection just as the next request is sent). */
enum { ORG_OK = 0, ORG_503, ORG_SILENT, ORG_PONG, ORG_ERR, ORG_KA, ORG_KA_DROP };

struct org_conn {
    uv_tcp_t tcp;
    struct wr_list link;
    char buf[4096];
    size_t len;
    unsigned requests;
};

static struct {
    uv_tcp_t srv;
    int port;
    int mode;
    unsigned accepted;
    unsigned requests; /* answered by ORG_KA / ORG_KA_DROP */
    struct wr_list conns;
} org;

static void org_closed(uv_handle_t *h)
{
    free(WR_CONTAINER_OF((uv_tcp_t *)h, struct org_conn, tcp));
}

static void org_close(struct org_conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    wr_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, org_closed);
}

static void org_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct org_conn *c = WR_CONTAINER_OF((uv_tcp_t *)h, struct org_conn, tcp);

    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len - 1));
}

static void org_written(uv_write_t *w, int status)
{
    struct org_conn *c = w->data;

    free(w);
    if (org.mode != ORG_KA && org.mode != ORG_KA_DROP)
        org_close(c);
}

static void org_send(struct org_conn *c, const char *text)
{
    uv_write_t *w = malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));

    w->data = c;
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, org_written);
}

static void org_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct org_conn *c = WR_CONTAINER_OF((uv_tcp_t *)s, struct org_conn, tcp);

    if (n < 0) {
        org_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (org.mode == ORG_SILENT)
        return;
    if (org.mode == ORG_PONG || org.mode == ORG_ERR) {
        if (strstr(c->buf, "PING\r\n") != NULL) {
            uv_read_stop(s);
            org_send(c, org.mode == ORG_PONG ? "+PONG\r\n" : "-ERR no\r\n");
        }
        return;
    }
    if (strstr(c->buf, "\r\n\r\n") == NULL)
        return;
    if (org.mode == ORG_KA || org.mode == ORG_KA_DROP) {
        c->len = 0;
        if (++c->requests == 2 && org.mode == ORG_KA_DROP) {
            org_close(c);
            return;
        }
        org.requests++;
        org_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return;
    }
    uv_read_stop(s);
    org_send(c, org.mode == ORG_OK
                    ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    : "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy");
}

static void org_accept(uv_stream_t *srv, int status)
{
    struct org_conn *c = calloc(1, sizeof(*c));

    uv_tcp_init(srv->loop, &c->tcp);
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, org_closed);
        return;
    }
    org.accepted++;
    wr_list_insert_tail(&org.conns, &c->link);
    uv_read_start((uv_stream_t *)&c->tcp, org_alloc, org_read);
}

static void org_start(uv_loop_t *loop, int mode)
{
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    org.mode = mode;
    wr_list_init(&org.conns);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, &org.srv);
    ASSERT_EQ(uv_tcp_bind(&org.srv, (const struct sockaddr *)&sa, 0), 0);
    ASSERT_EQ(uv_listen((uv_stream_t *)&org.srv, 511, org_accept), 0);
    uv_tcp_getsockname(&org.srv, (struct sockaddr *)&ss, &len);
    org.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void org_stop(void)
{
    while (!wr_list_empty(&org.conns))
        org_close(WR_CONTAINER_OF(org.conns.next, struct org_conn, link));
    uv_close((uv_handle_t *)&org.srv, NULL);
}

/* ---- fixture ------------------------------------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    struct xds_stats_reg *reg;
    struct hc_manager *m;
    struct xds_snapshot *s;
    uint64_t version;
};

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    ASSERT_EQ(uv_loop_init(&f->loop), 0);
    f->reg = xds_stats_reg_new(2);
    f->m = hc_manager_new(&f->loop);
}

/* Builds a snapshot from "clusters": [<clusters>] and hands it to the manager. */
static struct xds_snapshot *fx_load(struct fx *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct xds_snapshot *fx_load(struct fx *f, const char *fmt, ...)
{
    char *clusters = NULL, *text;
    struct wr_sbuf e = {0};
    va_list ap;

    va_start(ap, fmt);
    ASSERT(vasprintf(&clusters, fmt, ap) > 0);
    va_end(ap);
    text = wr_xasprintf("{\"workers\": 2, \"listeners\": [{\"name\": \"l\", \"address\": "
                        "\"127.0.0.1:1\"}], \"clusters\": [%s]}",
                        clusters);
    struct xds_snapshot *s =
        xds_config_parse(text, strlen(text), "t.json", f->reg, ++f->version, &e);
    if (s == NULL)
        FAIL("config: %s\n%s", e.p, text);
    wr_sbuf_dispose(&e);
    free(clusters);
    free(text);
    hc_manager_update(f->m, s);
    xds_snapshot_unref(f->s);
    f->s = s;
    return s;
}

static struct xds_ep_state *ep(struct fx *f, uint32_t cluster, uint32_t i)
{
    ASSERT(cluster < f->s->n_clusters && i < f->s->clusters[cluster]->n_eps);
    return f->s->clusters[cluster]->eps[i].st;
}

static uint32_t flags(struct xds_ep_state *st)
{
    return atomic_load(&st->flags);
}

static uint64_t now_ms(void)
{
    return wr_mono_ns() / 1000000;
}

/* Runs the loop until <pred>(arg) holds; fails after <ms>. */
#define RUN_UNTIL(f, cond, ms)                                                                     \
    do {                                                                                           \
        uint64_t dl_ = now_ms() + (ms);                                                            \
        while (!(cond)) {                                                                          \
            if (now_ms() > dl_)                                                                    \
                FAIL("not within %d ms: %s", (int)(ms), #cond);                                    \
            uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                     \
            usleep(500);                                                                           \
        }                                                                                          \
    } while (0)

/* Runs the loop for <ms> milliseconds. */
static void run_for(struct fx *f, unsigned ms)
{
    uint64_t end = now_ms() + ms;

    while (now_ms() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(500);
    }
}

static void fx_done(struct fx *f, bool origin)
{
    hc_manager_close(f->m);
    if (origin)
        org_stop();
    uv_run(&f->loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&f->loop), 0);
    xds_snapshot_unref(f->s);
    xds_stats_reg_free(f->reg);
}

#define HC_HTTP(extra)                                                                             \
    "\"health_check\": {\"type\": \"http\", \"path\": \"/healthz\", \"interval_ms\": 20, "         \
    "\"timeout_ms\": 1000, \"healthy_threshold\": 2, \"unhealthy_threshold\": 2, "                 \
    "\"jitter_percent\": 0" extra "}"

/* ---- active checks ----------------------------------------------------------------------------
 */

TEST(http_check_flips_both_ways)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_OK);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP("") "}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    ASSERT_EQ(flags(st), 0);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= 3, 10000);
    ASSERT_EQ(flags(st), 0);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), 0);

    org.mode = ORG_503;
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    ASSERT(xds_ctr_get(&st->hc_fail) >= 2); /* unhealthy_threshold */
    org.mode = ORG_OK;
    uint64_t ok_before = xds_ctr_get(&st->hc_ok);
    RUN_UNTIL(&f, flags(st) == 0, 10000);
    ASSERT(xds_ctr_get(&st->hc_ok) >= ok_before + 2); /* healthy_threshold */
    fx_done(&f, true);
}

TEST(initial_state_unhealthy)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_OK);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP(
                ", \"initial_state\": \"unhealthy\"") "}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    /* Set before the snapshot reaches any worker: the update itself sets it. */
    ASSERT_EQ(flags(st), XDS_EPF_UNHEALTHY);
    RUN_UNTIL(&f, flags(st) == 0, 10000);
    ASSERT_EQ(xds_ctr_get(&st->hc_ok), 2);
    fx_done(&f, true);
}

TEST(tcp_check_refused_goes_unhealthy)
{
    struct fx f;
    uv_tcp_t tmp;
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    fx_init(&f);
    /* A port that was free a moment ago: connections to it are refused. */
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&f.loop, &tmp);
    uv_tcp_bind(&tmp, (const struct sockaddr *)&sa, 0);
    uv_tcp_getsockname(&tmp, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&tmp, NULL);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], "
            "\"health_check\": {\"type\": \"tcp\", \"interval_ms\": 20, \"timeout_ms\": 1000, "
            "\"unhealthy_threshold\": 3}}",
            port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), 3);
    ASSERT_EQ(xds_ctr_get(&st->hc_ok), 0);
    fx_done(&f, false);
}

TEST(tcp_send_expect)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_PONG);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], "
            "\"health_check\": {\"type\": \"tcp\", \"send\": \"PING\\r\\n\", \"expect\": "
            "\"PONG\", \"interval_ms\": 20, \"timeout_ms\": 1000, \"unhealthy_threshold\": 2}}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= 2, 10000);
    ASSERT_EQ(flags(st), 0);
    org.mode = ORG_ERR; /* answers, but not what is expected, then closes */
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    fx_done(&f, true);
}

TEST(check_timeout)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_SILENT);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], "
            "\"health_check\": {\"type\": \"http\", \"path\": \"/\", \"interval_ms\": 20, "
            "\"timeout_ms\": 50, \"unhealthy_threshold\": 2}}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    uint64_t t0 = now_ms();
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    ASSERT(now_ms() - t0 >= 100); /* two checks that each waited their whole timeout */
    ASSERT(org.accepted >= 2);
    fx_done(&f, true);
}

static struct hc_ep *record(struct fx *f, struct xds_ep_state *st)
{
    struct hc_ep *rec = hc__map_find(f->m, st);

    ASSERT(rec != NULL);
    return rec;
}

/* Keep-alive: one connection carries the checks of an endpoint; between checks it holds no
 * probe slot; a change of the check's settings closes it; closing the manager with it idle
 * frees everything (fx_done() asserts the loop has no handle left). */
TEST(http_connection_reused)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_KA);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP("") "}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= 10, 10000);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), 0);
    ASSERT_EQ(org.accepted, 1);
    ASSERT(org.requests >= 10);
    RUN_UNTIL(&f, record(&f, st)->idle != NULL, 5000);
    ASSERT_EQ(f.m->inflight, 0);

    /* Same settings (another cluster added): the connection stays. */
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP(
                "") "},"
                    "{\"name\": \"d\", \"endpoints\": [{\"address\": \"127.0.0.1:1\"}]}",
            org.port);
    uint64_t ok = xds_ctr_get(&st->hc_ok);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= ok + 3, 10000);
    ASSERT_EQ(org.accepted, 1);

    /* Changed settings: a new connection. */
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP(
                ", \"host\": \"other\"") "}",
            org.port);
    ok = xds_ctr_get(&st->hc_ok);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= ok + 3, 10000);
    ASSERT_EQ(org.accepted, 2);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), 0);
    RUN_UNTIL(&f, record(&f, st)->idle != NULL, 5000);
    fx_done(&f, true);
}

/* A kept connection the server closes as the next request arrives: that check is retried on a
 * new connection, and never fails. */
TEST(http_dead_kept_connection_retried)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_KA_DROP);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], " HC_HTTP("") "}",
            org.port);
    struct xds_ep_state *st = ep(&f, 0, 0);
    RUN_UNTIL(&f, xds_ctr_get(&st->hc_ok) >= 8, 10000);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), 0);
    ASSERT_EQ(flags(st), 0);
    ASSERT(org.accepted >= 8); /* every connection answered one request */
    fx_done(&f, true);
}

static struct {
    struct hc_manager *m;
    unsigned max_inflight;
    unsigned max_queued;
} obs;

static void observe(uv_check_t *h)
{
    unsigned q = 0;

    for (struct wr_list *n = obs.m->queue.next; n != &obs.m->queue; n = n->next)
        q++;
    obs.max_inflight = WR_MAX(obs.max_inflight, obs.m->inflight);
    obs.max_queued = WR_MAX(obs.max_queued, q);
}

static bool all_checked(struct fx *f)
{
    for (uint32_t i = 0; i < f->s->n_clusters; i++)
        if (xds_ctr_get(&ep(f, i, 0)->hc_fail) == 0)
            return false;
    return true;
}

TEST(bounded_concurrency)
{
    struct fx f;
    struct wr_sbuf cl = {0};
    uv_check_t chk;

    fx_init(&f);
    org_start(&f.loop, ORG_SILENT);
    /* 150 endpoint entries (one cluster each, same origin) whose checks all hang. */
    for (int i = 0; i < 150; i++)
        wr_sbuf_printf(&cl,
                       "%s{\"name\": \"c%d\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], "
                       "\"health_check\": {\"type\": \"tcp\", \"send\": \"x\", \"expect\": "
                       "\"never\", \"interval_ms\": 10, \"timeout_ms\": 300}}",
                       i ? "," : "", i, org.port);
    fx_load(&f, "%s", cl.p);
    wr_sbuf_dispose(&cl);
    obs.m = f.m;
    uv_check_init(&f.loop, &chk);
    uv_check_start(&chk, observe);
    run_for(&f, 500);
    printf("    max in flight %u, max queued %u, connections %u\n", obs.max_inflight,
           obs.max_queued, org.accepted);
    ASSERT_EQ(obs.max_inflight, HC_MAX_INFLIGHT);
    ASSERT(obs.max_queued > 0);
    /* Everyone gets checked: the queue is served in order, not dropped. */
    RUN_UNTIL(&f, all_checked(&f), 10000);
    ASSERT_EQ(obs.max_inflight, HC_MAX_INFLIGHT);
    uv_close((uv_handle_t *)&chk, NULL);
    fx_done(&f, true);
}

TEST(reload_keeps_state_and_applies_changes)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_503);
    const char *fmt = "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], %s}";
    char hc[512];
    snprintf(hc, sizeof(hc), HC_HTTP(""));
    fx_load(&f, fmt, org.port, hc);
    struct xds_ep_state *st = ep(&f, 0, 0);
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    /* Same settings, new snapshot: the verdict stays. */
    fx_load(&f, fmt, org.port, hc);
    ASSERT(ep(&f, 0, 0) == st);
    ASSERT_EQ(flags(st), XDS_EPF_UNHEALTHY);
    /* New settings (a status range that accepts 503): health kept until the checks say
     * otherwise, then healthy. */
    snprintf(hc, sizeof(hc), HC_HTTP(", \"expected_statuses\": [[200, 299], 503]"));
    fx_load(&f, fmt, org.port, hc);
    ASSERT_EQ(flags(st), XDS_EPF_UNHEALTHY);
    RUN_UNTIL(&f, flags(st) == 0, 10000);
    /* Checks removed: never unhealthy again. */
    org.mode = ORG_503;
    snprintf(hc, sizeof(hc), HC_HTTP(""));
    fx_load(&f, fmt, org.port, hc);
    RUN_UNTIL(&f, flags(st) & XDS_EPF_UNHEALTHY, 10000);
    fx_load(&f, fmt, org.port, "\"lb_policy\": \"round_robin\"");
    ASSERT_EQ(flags(st), 0);
    uint64_t fails = xds_ctr_get(&st->hc_fail);
    run_for(&f, 100);
    ASSERT_EQ(xds_ctr_get(&st->hc_fail), fails);
    fx_done(&f, true);
}

/* ---- draining -----------------------------------------------------------------------------------
 */

TEST(removed_endpoint_drains_and_comes_back)
{
    struct fx f;

    fx_init(&f);
    const char *two = "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:7001\"}, "
                      "{\"address\": \"127.0.0.1:7002\"}], \"outlier_detection\": {}}";
    fx_load(&f, "%s", two);
    struct xds_ep_state *a = xds_ep_state_ref(ep(&f, 0, 0));
    struct xds_ep_state *b = xds_ep_state_ref(ep(&f, 0, 1)); /* as a pooled connection would */
    ASSERT(atomic_load(&b->od_sink) != NULL);
    ASSERT_EQ(atomic_load(&b->od_5xx_max), 5);
    fx_load(&f, "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:7001\"}], "
                "\"outlier_detection\": {}}");
    ASSERT_EQ(flags(a), 0);
    ASSERT_EQ(flags(b), XDS_EPF_DRAINING);
    /* Nobody listens for its outliers any more. */
    ASSERT(atomic_load(&b->od_sink) == NULL);
    ASSERT_EQ(atomic_load(&b->od_5xx_max), 0);
    hc_outlier_report(b, 0, HC_OUTLIER_GATEWAY); /* harmless */
    fx_load(&f, "%s", two);
    ASSERT(ep(&f, 0, 1) == b); /* the same entry, still referenced */
    ASSERT_EQ(flags(b), 0);
    ASSERT(atomic_load(&b->od_sink) != NULL);
    xds_ep_state_unref(a);
    xds_ep_state_unref(b);
    fx_done(&f, false);
}

/* ---- outlier detection --------------------------------------------------------------------- */

#define OD_CLUSTER                                                                                 \
    "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:7001\"}, {\"address\": "          \
    "\"127.0.0.1:7002\"}, {\"address\": \"127.0.0.1:7003\"}, {\"address\": \"127.0.0.1:7004\"}], " \
    "\"outlier_detection\": {\"consecutive_5xx\": 3, \"consecutive_gateway_failure\": 2, "         \
    "\"base_ejection_ms\": %d, \"max_ejection_ms\": %d, \"max_ejection_percent\": 50}}"

static void report(struct xds_ep_state *st, unsigned worker, int kind, int times)
{
    for (int i = 0; i < times; i++)
        hc_outlier_report(st, worker, kind);
}

/* Lets the async hand-off run. */
static void settle(struct fx *f)
{
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

TEST(outlier_ejects_within_budget)
{
    struct fx f;

    fx_init(&f);
    fx_load(&f, OD_CLUSTER, 60000, 120000);
    struct xds_ep_state *e0 = ep(&f, 0, 0), *e1 = ep(&f, 0, 1), *e2 = ep(&f, 0, 2);
    report(e0, 0, HC_OUTLIER_5XX, 2);
    settle(&f);
    ASSERT_EQ(flags(e0), 0);
    report(e0, 0, HC_OUTLIER_5XX, 1);
    RUN_UNTIL(&f, flags(e0) == XDS_EPF_EJECTED, 5000);
    ASSERT_EQ(xds_ctr_get(&e0->od_ejections), 1);
    report(e1, 1, HC_OUTLIER_GATEWAY, 2); /* gateway threshold 2 */
    RUN_UNTIL(&f, flags(e1) == XDS_EPF_EJECTED, 5000);
    /* max(1, floor(4 x 50 / 100)) = 2 are out: the third suspect stays in. */
    report(e2, 0, HC_OUTLIER_5XX, 6);
    settle(&f);
    run_for(&f, 20);
    ASSERT_EQ(flags(e2), 0);
    ASSERT_EQ(xds_ctr_get(&e2->od_ejections), 0);
    fx_done(&f, false);
}

TEST(outlier_streak_rules)
{
    struct fx f;

    fx_init(&f);
    fx_load(&f, OD_CLUSTER, 60000, 120000);
    struct xds_ep_state *e0 = ep(&f, 0, 0), *e1 = ep(&f, 0, 1);
    /* Streaks are per worker: 2 + 2 on two workers is no streak of 3. */
    report(e0, 0, HC_OUTLIER_5XX, 2);
    report(e0, 1, HC_OUTLIER_5XX, 2);
    /* A success ends a streak. */
    report(e0, 0, HC_OUTLIER_SUCCESS, 1);
    report(e0, 0, HC_OUTLIER_5XX, 2);
    /* An answered 5xx ends a gateway streak (but counts as 5xx). */
    report(e1, 0, HC_OUTLIER_GATEWAY, 1);
    report(e1, 0, HC_OUTLIER_5XX, 1);
    report(e1, 0, HC_OUTLIER_SUCCESS, 1);
    report(e1, 0, HC_OUTLIER_GATEWAY, 1);
    settle(&f);
    run_for(&f, 20);
    ASSERT_EQ(flags(e0), 0);
    ASSERT_EQ(flags(e1), 0);
    /* Gateway failures count toward consecutive_5xx too: 5xx, 5xx, gateway is a 5xx streak. */
    report(e1, 1, HC_OUTLIER_5XX, 2);
    report(e1, 1, HC_OUTLIER_GATEWAY, 1);
    RUN_UNTIL(&f, flags(e1) == XDS_EPF_EJECTED, 5000);
    fx_done(&f, false);
}

TEST(outlier_backoff_cap_and_return)
{
    struct fx f;

    fx_init(&f);
    fx_load(&f, OD_CLUSTER, 150, 400);
    struct xds_ep_state *e0 = ep(&f, 0, 0);
    struct hc_ep *rec = hc__map_find(f.m, e0);
    uint64_t expect[] = {150, 300, 400, 400};

    ASSERT(rec != NULL);
    for (unsigned round = 0; round < WR_ARRAY_LEN(expect); round++) {
        report(e0, round % 2, HC_OUTLIER_5XX, 3);
        RUN_UNTIL(&f, flags(e0) == XDS_EPF_EJECTED, 5000);
        uint64_t t0 = now_ms();
        ASSERT_EQ(rec->eject_until - uv_now(&f.loop), expect[round]);
        RUN_UNTIL(&f, flags(e0) == 0, 5000);
        uint64_t took = now_ms() - t0;
        printf("    ejection %u: %llu ms (configured %llu)\n", round + 1, (unsigned long long)took,
               (unsigned long long)expect[round]);
        ASSERT(took + 40 >= expect[round]);
    }
    ASSERT_EQ(xds_ctr_get(&e0->od_ejections), 4);
    fx_done(&f, false);
}

TEST(outlier_streak_from_before_ejection_does_not_count)
{
    struct fx f;

    fx_init(&f);
    fx_load(&f, OD_CLUSTER, 50, 100);
    struct xds_ep_state *e0 = ep(&f, 0, 0);
    report(e0, 0, HC_OUTLIER_5XX, 2); /* worker 0: 2 of 3 */
    report(e0, 1, HC_OUTLIER_5XX, 3); /* worker 1 ejects it */
    RUN_UNTIL(&f, flags(e0) == XDS_EPF_EJECTED, 5000);
    RUN_UNTIL(&f, flags(e0) == 0, 5000);
    /* Worker 0's two failures belong to before: one more is not a streak of three. */
    report(e0, 0, HC_OUTLIER_5XX, 1);
    settle(&f);
    run_for(&f, 20);
    ASSERT_EQ(flags(e0), 0);
    report(e0, 0, HC_OUTLIER_5XX, 2);
    RUN_UNTIL(&f, flags(e0) == XDS_EPF_EJECTED, 5000);
    fx_done(&f, false);
}

TEST(outlier_turned_off_by_reload)
{
    struct fx f;

    fx_init(&f);
    fx_load(&f, OD_CLUSTER, 60000, 120000);
    struct xds_ep_state *e0 = ep(&f, 0, 0);
    report(e0, 0, HC_OUTLIER_5XX, 3);
    RUN_UNTIL(&f, flags(e0) == XDS_EPF_EJECTED, 5000);
    fx_load(&f, "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:7001\"}, "
                "{\"address\": \"127.0.0.1:7002\"}]}");
    ASSERT_EQ(flags(e0), 0);
    ASSERT_EQ(atomic_load(&e0->od_5xx_max), 0);
    report(e0, 0, HC_OUTLIER_5XX, 10);
    settle(&f);
    ASSERT_EQ(flags(e0), 0);
    fx_done(&f, false);
}

TEST(close_with_probes_running)
{
    struct fx f;

    fx_init(&f);
    org_start(&f.loop, ORG_SILENT);
    fx_load(&f,
            "{\"name\": \"c\", \"endpoints\": [{\"address\": \"127.0.0.1:%d\"}], "
            "\"outlier_detection\": {}, \"health_check\": {\"type\": \"grpc\", \"interval_ms\": "
            "5, \"timeout_ms\": 5000}}",
            org.port);
    RUN_UNTIL(&f, f.m->inflight > 0 && org.accepted > 0, 5000);
    /* A suspect queued for the control thread when it closes: dropped, reference released. */
    report(ep(&f, 0, 0), 0, HC_OUTLIER_5XX, 5);
    fx_done(&f, true);
}
