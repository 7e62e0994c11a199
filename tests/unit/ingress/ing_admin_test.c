/* tests/unit/ingress/ing_admin_test.c -- the admin API: /clusters and /metrics bodies built
 * from a parsed snapshot with hand-bumped counters, then the HTTP server end to end on a real
 * loop, with a blocking client in a thread. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include <weir/ing.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

/* ---- fixtures ---------------------------------------------------------------------------- */

/* %s: the admin object ("admin": {...},) or "". Names with a quote, a backslash and a line feed
 * exercise label escaping. */
static const char config_fmt[] = "{\n"
                                 "  \"workers\": 2,\n"
                                 "  %s\n"
                                 "  \"listeners\": [ { \"name\": \"web\", \"address\": "
                                 "\"127.0.0.1:8080\" } ],\n"
                                 "  \"routes\": [\n"
                                 "    { \"name\": \"api\", \"match\": { \"path_prefix\": \"/api/\" "
                                 "}, \"cluster\": \"api\" },\n"
                                 "    { \"name\": \"shop\", \"match\": { \"path_prefix\": \"/\" }, "
                                 "\"rollout\": \"shop\" },\n"
                                 "    { \"name\": \"we\\\"ird\\\\route\\n\", \"match\": { "
                                 "\"path_exact\": \"/w\" }, \"cluster\": \"search\" }\n"
                                 "  ],\n"
                                 "  \"clusters\": [\n"
                                 "    { \"name\": \"api\", \"lb_policy\": \"round_robin\",\n"
                                 "      \"endpoints\": [ { \"address\": \"127.0.0.1:9001\", "
                                 "\"weight\": 1 },\n"
                                 "                     { \"address\": \"127.0.0.1:9002\", "
                                 "\"weight\": 3 },\n"
                                 "                     { \"address\": \"127.0.0.1:9003\" },\n"
                                 "                     { \"address\": \"127.0.0.1:9004\" } ] },\n"
                                 "    { \"name\": \"search\", \"lb_policy\": \"least_request\", "
                                 "\"endpoints\": [] },\n"
                                 "    { \"name\": \"shop-blue\", \"endpoints\": [ { \"address\": "
                                 "\"127.0.0.1:9101\" } ] },\n"
                                 "    { \"name\": \"shop-green\", \"endpoints\": [ { \"address\": "
                                 "\"127.0.0.1:9102\" } ] }\n"
                                 "  ],\n"
                                 "  \"rollouts\": [ { \"name\": \"shop\", \"blue\": \"shop-blue\", "
                                 "\"green\": \"shop-green\",\n"
                                 "                  \"green_weight\": 20, \"sticky\": true } ]\n"
                                 "}\n";

static struct xds_snapshot *snapshot(struct xds_stats_reg *reg, const char *admin, uint64_t ver)
{
    struct wr_sbuf errors = {0};
    char *text = wr_xasprintf(config_fmt, admin);
    struct xds_snapshot *s = xds_config_parse(text, strlen(text), "weir.json", reg, ver, &errors);

    if (s == NULL)
        FAIL("config rejected:\n%s", errors.p);
    free(text);
    wr_sbuf_dispose(&errors);
    return s;
}

static struct xds_endpoint *endpoint(struct xds_snapshot *s, const char *cluster, uint32_t i)
{
    const struct xds_cluster *c = xds_cluster_find(s, cluster);

    ASSERT(c != NULL && i < c->n_eps);
    return &c->eps[i];
}

static struct xds_route *route(struct xds_snapshot *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_routes; i++)
        if (strcmp(s->routes[i].name, name) == 0)
            return &s->routes[i];
    FAIL("no route %s", name);
}

/* Asserts that <text> has the whole line <line>. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    FAIL("no line \"%s\" in:\n%s", line, text);
}

static json_t *find_by_name(json_t *arr, const char *key, const char *name)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, key)), name) == 0)
            return v;
    }
    FAIL("no %s %s", key, name);
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    if (!json_is_integer(v))
        FAIL("%s is not an integer", key);
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- /clusters --------------------------------------------------------------------------- */

TEST(clusters_json_fields)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s = snapshot(reg, "", 7);
    struct xds_endpoint *e0 = endpoint(s, "api", 0), *e1 = endpoint(s, "api", 1);

    xds_ctr_add(&e0->st->w[0].requests, 2);
    xds_ctr_add(&e0->st->w[1].requests, 3);
    xds_ctr_add(&e0->st->w[1].failures, 1);
    xds_ctr_add(&e0->st->w[0].active, 2);
    xds_ctr_add(&e0->st->w[1].active, 1);
    atomic_store(&e1->st->flags, XDS_EPF_UNHEALTHY | XDS_EPF_EJECTED);
    atomic_store(&endpoint(s, "api", 2)->st->flags, XDS_EPF_UNHEALTHY | XDS_EPF_DRAINING);
    atomic_store(&endpoint(s, "api", 3)->st->flags, XDS_EPF_UNHEALTHY);

    char *text = ing_admin_clusters_json(s);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    ASSERT(root != NULL);
    ASSERT_EQ(json_object_size(root), 2);
    ASSERT_STREQ(jstr(root, "version"), "7");
    json_t *clusters = json_object_get(root, "clusters");
    ASSERT_EQ(json_array_size(clusters), 4);

    json_t *api = json_array_get(clusters, 0);
    ASSERT_EQ(json_object_size(api), 4);
    ASSERT_STREQ(jstr(api, "name"), "api");
    ASSERT_STREQ(jstr(api, "source"), "static");
    ASSERT_STREQ(jstr(api, "lb_policy"), "round_robin");
    json_t *eps = json_object_get(api, "endpoints");
    ASSERT_EQ(json_array_size(eps), 4);
    json_t *ep = json_array_get(eps, 0);
    ASSERT_EQ(json_object_size(ep), 6);
    ASSERT_STREQ(jstr(ep, "address"), "127.0.0.1:9001");
    ASSERT_EQ(jint(ep, "weight"), 1);
    ASSERT_STREQ(jstr(ep, "health"), "healthy");
    ASSERT_EQ(jint(ep, "active_requests"), 3);
    ASSERT_EQ(jint(ep, "requests"), 5);
    ASSERT_EQ(jint(ep, "failures"), 1);
    ep = json_array_get(eps, 1);
    ASSERT_STREQ(jstr(ep, "address"), "127.0.0.1:9002");
    ASSERT_EQ(jint(ep, "weight"), 3);
    ASSERT_STREQ(jstr(ep, "health"), "ejected");
    ASSERT_EQ(jint(ep, "requests"), 0);
    ASSERT_STREQ(jstr(json_array_get(eps, 2), "health"), "draining");
    ASSERT_STREQ(jstr(json_array_get(eps, 3), "health"), "unhealthy");

    json_t *search = find_by_name(clusters, "name", "search");
    ASSERT_STREQ(jstr(search, "lb_policy"), "least_request");
    ASSERT_EQ(json_array_size(json_object_get(search, "endpoints")), 0);

    json_decref(root);
    free(text);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

TEST(clusters_json_without_registry)
{
    struct xds_snapshot *s = snapshot(NULL, "", 1);
    char *text = ing_admin_clusters_json(s);
    json_t *root = json_loads(text, 0, NULL);

    ASSERT(root != NULL);
    json_t *ep = json_array_get(
        json_object_get(json_array_get(json_object_get(root, "clusters"), 0), "endpoints"), 0);
    ASSERT_STREQ(jstr(ep, "health"), "healthy");
    ASSERT_EQ(jint(ep, "requests"), 0);
    ASSERT_EQ(jint(ep, "failures"), 0);
    ASSERT_EQ(jint(ep, "active_requests"), 0);
    json_decref(root);
    free(text);
    xds_snapshot_unref(s);
}

/* ---- /metrics ---------------------------------------------------------------------------- */

TEST(metrics_series)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s = snapshot(reg, "", 42);
    struct xds_route *api = route(s, "api");
    struct xds_endpoint *e0 = endpoint(s, "api", 0);

    xds_ctr_add(&xds_counters_w(api->wc[0].stats, 0)[1], 3); /* 2xx */
    xds_ctr_add(&xds_counters_w(api->wc[0].stats, 1)[1], 1);
    xds_ctr_add(&xds_counters_w(api->wc[0].stats, 1)[4], 2); /* 5xx */
    xds_ctr_add(&e0->st->w[1].requests, 6);
    xds_ctr_add(&e0->st->w[0].failures, 2);
    xds_ctr_add(&e0->st->w[0].active, 1);
    atomic_store(&endpoint(s, "api", 1)->st->flags, XDS_EPF_EJECTED);
    /* connections: worker 0 closed more than it opened (its word wrapped below zero) */
    xds_ctr_add(&xds_counters_w(s->listeners[0].stats, 0)[0], (uint64_t)-1);
    xds_ctr_add(&xds_counters_w(s->listeners[0].stats, 1)[0], 3);
    xds_ctr_add(&xds_counters_w(s->listeners[0].stats, 1)[1], 9);
    xds_ctr_add(&xds_counters_w(xds_cluster_find(s, "api")->stats, 0)[XDS_CS_CONNECT_FAILURES], 4);
    xds_ctr_add(&xds_counters_w(xds_cluster_find(s, "api")->stats, 1)[XDS_CS_RETRIES], 1);
    const struct xds_rollout *ro = xds_rollout_find(s, "shop");
    xds_ctr_add(&xds_counters_w(ro->stats, 0)[XDS_RS_IDX(1, 1)], 8);
    xds_ctr_add(&xds_counters_w(ro->stats, 1)[XDS_RS_IDX(0, 4)], 1);

    char *text = ing_admin_metrics_text(s);
    assert_line(text, "# HELP weir_requests_total Requests answered, by route, upstream cluster "
                      "and status class.");
    assert_line(text, "# TYPE weir_requests_total counter");
    assert_line(text, "weir_requests_total{route=\"api\",cluster=\"api\",code=\"1xx\"} 0");
    assert_line(text, "weir_requests_total{route=\"api\",cluster=\"api\",code=\"2xx\"} 4");
    assert_line(text, "weir_requests_total{route=\"api\",cluster=\"api\",code=\"5xx\"} 2");
    assert_line(text, "weir_requests_total{route=\"shop\",cluster=\"shop-blue\",code=\"2xx\"} 0");
    assert_line(text, "weir_requests_total{route=\"shop\",cluster=\"shop-green\",code=\"4xx\"} 0");
    assert_line(text, "weir_requests_total{route=\"we\\\"ird\\\\route\\n\",cluster=\"search\","
                      "code=\"3xx\"} 0");
    assert_line(text, "# TYPE weir_active_connections gauge");
    assert_line(text, "weir_active_connections{listener=\"web\"} 2");
    assert_line(text, "weir_connections_total{listener=\"web\"} 9");
    assert_line(text, "weir_upstream_connect_failures_total{cluster=\"api\"} 4");
    assert_line(text, "weir_upstream_connect_failures_total{cluster=\"search\"} 0");
    assert_line(text, "weir_upstream_retries_total{cluster=\"api\"} 1");
    assert_line(text, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 1");
    assert_line(text, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9002\"} 0");
    assert_line(text,
                "weir_endpoint_requests_total{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 6");
    assert_line(text,
                "weir_endpoint_failures_total{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 2");
    assert_line(text,
                "weir_endpoint_active_requests{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 1");
    assert_line(text, "# TYPE weir_rollout_green_weight gauge");
    assert_line(text, "weir_rollout_green_weight{rollout=\"shop\"} 20");
    assert_line(text,
                "weir_rollout_requests_total{rollout=\"shop\",colour=\"green\",code=\"2xx\"} 8");
    assert_line(text,
                "weir_rollout_requests_total{rollout=\"shop\",colour=\"blue\",code=\"5xx\"} 1");
    assert_line(text,
                "weir_rollout_requests_total{rollout=\"shop\",colour=\"blue\",code=\"2xx\"} 0");
    assert_line(text, "weir_config_version_info{version=\"42\"} 1");
    assert_line(text, "weir_build_info{version=\"" WEIR_VERSION "\"} 1");
    ASSERT(text[strlen(text) - 1] == '\n');
    /* every family once */
    ASSERT(strstr(strstr(text, "# TYPE weir_requests_total") + 1, "# TYPE weir_requests_total") ==
           NULL);
    free(text);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

TEST(metrics_histogram_cumulative)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s = snapshot(reg, "", 1);
    struct xds_counters *h = route(s, "api")->hist;

    ASSERT_EQ(XDS_HIST_BUCKETS, 14);
    xds_ctr_add(&xds_counters_w(h, 0)[0], 1);                      /* <= 0.0005 */
    xds_ctr_add(&xds_counters_w(h, 1)[3], 2);                      /* <= 0.005 */
    xds_ctr_add(&xds_counters_w(h, 0)[13], 1);                     /* <= 10 */
    xds_ctr_add(&xds_counters_w(h, 0)[XDS_HIST_BUCKETS], 5012500); /* sum, us */
    xds_ctr_add(&xds_counters_w(h, 1)[XDS_HIST_BUCKETS], 20000000);
    xds_ctr_add(&xds_counters_w(h, 0)[XDS_HIST_BUCKETS + 1], 3);
    xds_ctr_add(&xds_counters_w(h, 1)[XDS_HIST_BUCKETS + 1], 2); /* one above 10 s */

    char *text = ing_admin_metrics_text(s);
    assert_line(text, "# TYPE weir_request_duration_seconds histogram");
    const char *want = "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.0005\"} 1\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.001\"} 1\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 1\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.005\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.01\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.025\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.05\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.1\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.25\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"0.5\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"1\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"2.5\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"5\"} 3\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"10\"} 4\n"
                       "weir_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 5\n"
                       "weir_request_duration_seconds_sum{route=\"api\"} 25.0125\n"
                       "weir_request_duration_seconds_count{route=\"api\"} 5\n";
    if (strstr(text, want) == NULL)
        FAIL("histogram not found in:\n%s", text);
    /* an empty one: zeros, sum "0" */
    assert_line(text, "weir_request_duration_seconds_bucket{route=\"shop\",le=\"+Inf\"} 0");
    assert_line(text, "weir_request_duration_seconds_sum{route=\"shop\"} 0");
    free(text);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

/* A scrape between a worker's bucket and count increments must not show "+Inf" below a
 * finite bucket. */
TEST(metrics_histogram_count_lag)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s = snapshot(reg, "", 1);
    struct xds_counters *h = route(s, "api")->hist;

    xds_ctr_add(&xds_counters_w(h, 0)[2], 2);
    xds_ctr_add(&xds_counters_w(h, 0)[XDS_HIST_BUCKETS + 1], 1);
    char *text = ing_admin_metrics_text(s);
    assert_line(text, "weir_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 2");
    assert_line(text, "weir_request_duration_seconds_count{route=\"api\"} 2");
    free(text);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

TEST(metrics_without_registry)
{
    struct xds_snapshot *s = snapshot(NULL, "", 3);
    char *text = ing_admin_metrics_text(s);

    assert_line(text, "weir_requests_total{route=\"api\",cluster=\"api\",code=\"2xx\"} 0");
    assert_line(text, "weir_request_duration_seconds_count{route=\"api\"} 0");
    assert_line(text, "weir_active_connections{listener=\"web\"} 0");
    assert_line(text, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 1");
    assert_line(text, "weir_config_version_info{version=\"3\"} 1");
    free(text);
    xds_snapshot_unref(s);
}

/* ---- the server, end to end -------------------------------------------------------------- */

struct conn;

struct fixture {
    uv_loop_t loop;
    uv_async_t done;
    struct ing_admin *admin;
    _Atomic(struct xds_snapshot *) snap;
    _Atomic int state;
    int port;
    void (*client)(struct fixture *f);
    void (*after)(struct fixture *f); /* optional: on the test thread, after the loop closed */
    struct conn *left_open[2];
    pthread_t thread;
    /* the fake control thread behind set_rollout and served_version */
    struct xds_stats_reg *reg;
    char *admin_json;                 /* the admin object of the config, port filled in */
    struct xds_snapshot *retired[64]; /* replaced snapshots: the client may still read them */
    unsigned n_retired;
    _Atomic uint64_t version;    /* the last snapshot published */
    _Atomic uint64_t served;     /* what the "workers" serve */
    _Atomic int confirm_after;   /* > 0: served catches up after that many polls; 0: by hand */
    _Atomic int polls;           /* served_version calls since the last set_rollout */
    _Atomic int set_calls;       /* set_rollout calls */
    _Atomic unsigned set_weight; /* the weight of the last one */
    _Atomic int set_result;      /* < 0: fail with set_error; 0: no such rollout; > 0: publish */
    const char *set_error;
    char set_name[256];
};

static struct xds_snapshot *hook_snapshot(void *arg)
{
    return atomic_load(&((struct fixture *)arg)->snap);
}

static enum ing_state hook_state(void *arg)
{
    return (enum ing_state)atomic_load(&((struct fixture *)arg)->state);
}

/* Like the server's: publishes a snapshot with the new weight at once (snapshot() returns it),
 * but the workers serve it only once served_version says so. */
static int64_t hook_set_rollout(void *arg, const char *name, unsigned weight, const char **err)
{
    struct fixture *f = arg;
    int result = atomic_load(&f->set_result);

    snprintf(f->set_name, sizeof(f->set_name), "%s", name);
    atomic_store(&f->set_weight, weight);
    atomic_store(&f->polls, 0);
    atomic_fetch_add(&f->set_calls, 1);
    if (result < 0)
        *err = f->set_error;
    if (result <= 0)
        return result;
    uint64_t v = atomic_load(&f->version) + 1;
    struct xds_snapshot *s = snapshot(f->reg, f->admin_json, v);
    for (uint32_t i = 0; i < s->n_rollouts; i++)
        if (strcmp(s->rollouts[i].name, name) == 0)
            s->rollouts[i].green_weight = weight;
    ASSERT(f->n_retired < WR_ARRAY_LEN(f->retired));
    f->retired[f->n_retired++] = atomic_exchange(&f->snap, s);
    atomic_store(&f->version, v);
    return (int64_t)v;
}

static uint64_t hook_served_version(void *arg)
{
    struct fixture *f = arg;
    int polls = atomic_fetch_add(&f->polls, 1) + 1;
    int after = atomic_load(&f->confirm_after);

    if (after > 0 && polls >= after)
        atomic_store(&f->served, atomic_load(&f->version));
    return atomic_load(&f->served);
}

static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ASSERT(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    ASSERT(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void on_done(uv_async_t *a)
{
    struct fixture *f = a->data;

    ing_admin_close(f->admin);
    uv_close((uv_handle_t *)a, NULL);
}

static void *client_main(void *arg)
{
    struct fixture *f = arg;

    f->client(f);
    uv_async_send(&f->done);
    return NULL;
}

/* Runs <client> in a thread against an admin server started from a config whose admin object
 * is <admin_fmt> (with %d for the port), then closes everything and checks that no handle
 * leaked. */
static void run_server_after(const char *admin_fmt, void (*client)(struct fixture *f),
                             void (*after)(struct fixture *f))
{
    struct fixture *f = wr_xcalloc(1, sizeof(*f));
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct ing_admin_hooks hooks = {.snapshot = hook_snapshot,
                                    .state = hook_state,
                                    .set_rollout = hook_set_rollout,
                                    .served_version = hook_served_version,
                                    .arg = f};
    const char *err = NULL;

    f->port = free_port();
    f->reg = reg;
    f->admin_json = wr_xasprintf(admin_fmt, f->port);
    atomic_store(&f->snap, snapshot(reg, f->admin_json, 1));
    atomic_store(&f->version, 1);
    atomic_store(&f->served, 1);
    atomic_store(&f->confirm_after, 3); /* a few polls: every change is answered late */
    atomic_store(&f->set_result, 1);
    atomic_store(&f->state, ING_STATE_STARTING);
    f->client = client;
    f->after = after;
    ASSERT(uv_loop_init(&f->loop) == 0);
    ASSERT(uv_async_init(&f->loop, &f->done, on_done) == 0);
    f->done.data = f;
    f->admin = ing_admin_start(&f->loop, atomic_load(&f->snap), &hooks, &err);
    if (f->admin == NULL)
        FAIL("ing_admin_start: %s", err);
    ASSERT(pthread_create(&f->thread, NULL, client_main, f) == 0);
    ASSERT(uv_run(&f->loop, UV_RUN_DEFAULT) == 0);
    pthread_join(f->thread, NULL);
    ASSERT_EQ(uv_loop_close(&f->loop), 0);
    if (f->after != NULL)
        f->after(f);
    xds_snapshot_unref(atomic_load(&f->snap));
    for (unsigned i = 0; i < f->n_retired; i++)
        xds_snapshot_unref(f->retired[i]);
    xds_stats_reg_free(reg);
    free(f->admin_json);
    free(f);
}

static void run_server(const char *admin_fmt, void (*client)(struct fixture *f))
{
    run_server_after(admin_fmt, client, NULL);
}

static int dial(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {10, 0};

    ASSERT(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ASSERT(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    return fd;
}

static void send_all(int fd, const char *data)
{
    size_t len = strlen(data);

    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        ASSERT(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

struct resp {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
};

/* Reads one response from <fd> (Content-Length framed); fails the test on EOF or timeout. A
 * per-connection carry buffer keeps pipelined bytes between calls. */
struct conn {
    int fd;
    char buf[1 << 17];
    size_t len;
};

static void conn_fill(struct conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);

    if (n <= 0)
        FAIL("recv: %s", n == 0 ? "connection closed" : strerror(errno));
    c->len += (size_t)n;
}

static void read_resp(struct conn *c, struct resp *r)
{
    char *end;

    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        conn_fill(c);
    size_t head_len = (size_t)(end - c->buf) + 4;
    ASSERT(head_len < sizeof(r->head));
    memcpy(r->head, c->buf, head_len);
    r->head[head_len] = '\0';
    ASSERT(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1);
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    r->body_len = cl != NULL ? strtoul(cl + 18, NULL, 10) : 0;
    while (c->len < head_len + r->body_len)
        conn_fill(c);
    r->body = wr_xstrndup(c->buf + head_len, r->body_len);
    memmove(c->buf, c->buf + head_len + r->body_len, c->len - head_len - r->body_len);
    c->len -= head_len + r->body_len;
}

static struct conn *conn_open(int port)
{
    struct conn *c = wr_xcalloc(1, sizeof(*c));

    c->fd = dial(port);
    return c;
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c);
}

/* Asserts that the server closes <c> without sending anything more. */
static void assert_closed(struct conn *c)
{
    char b[256];
    ssize_t n = recv(c->fd, b, sizeof(b), 0);

    ASSERT_EQ(c->len, 0);
    if (n > 0)
        FAIL("unexpected bytes: %.*s", (int)n, b);
    ASSERT(n == 0 || errno == ECONNRESET);
}

/* One request on a new connection; returns the response, body malloc'd. */
static struct resp request(int port, const char *req)
{
    struct conn *c = conn_open(port);
    struct resp r;

    send_all(c->fd, req);
    read_resp(c, &r);
    conn_free(c);
    return r;
}

static void expect(int port, const char *req, int status, const char *body)
{
    struct resp r = request(port, req);

    if (r.status != status)
        FAIL("%s-> %d, not %d\n%s%s", req, r.status, status, r.head, r.body);
    if (body != NULL)
        ASSERT_STREQ(r.body, body);
    free(r.body);
}

static const char admin_plain[] = "\"admin\": { \"address\": \"127.0.0.1:%d\" },";

static void client_basic(struct fixture *f)
{
    int port = f->port;
    struct resp r;

    expect(port, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n", 200, "{\"status\":\"live\"}");
    expect(port, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", 503, "{\"status\":\"starting\"}");
    atomic_store(&f->state, ING_STATE_READY);
    expect(port, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", 200, "{\"status\":\"ready\"}");
    atomic_store(&f->state, ING_STATE_DRAINING);
    expect(port, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", 503, "{\"status\":\"draining\"}");

    r = request(port, "GET /config HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "\r\nContent-Type: application/json\r\n") != NULL);
    ASSERT_STREQ(r.body, xds_snapshot_config_json(atomic_load(&f->snap)));
    free(r.body);

    r = request(port, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "\r\nContent-Type: text/plain; version=0.0.4\r\n") != NULL);
    ASSERT(strstr(r.body, "\nweir_config_version_info{version=\"1\"} 1\n") != NULL);
    free(r.body);

    r = request(port, "GET /clusters?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    char *want = ing_admin_clusters_json(atomic_load(&f->snap));
    ASSERT_STREQ(r.body, want);
    free(want);
    free(r.body);

    expect(port, "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 404, "{\"error\":\"not found\"}");
    expect(port, "GET /live/ HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    r = request(port, "POST /live HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    ASSERT_EQ(r.status, 405);
    ASSERT(strstr(r.head, "\r\nAllow: GET, HEAD\r\n") != NULL);
    free(r.body);
}

/* HEAD answers carry the GET's Content-Length but no body: check on the raw bytes. */
static void client_head(struct fixture *f)
{
    struct conn *c = conn_open(f->port);
    struct resp r;

    send_all(c->fd, "HEAD /live HTTP/1.1\r\nHost: a\r\n\r\nGET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    while (memmem(c->buf, c->len, "{\"status\"", 9) == NULL)
        conn_fill(c);
    char *second = memmem(c->buf, c->len, "HTTP/1.1 200", 12);
    ASSERT(second == c->buf);
    ASSERT(strstr(c->buf, "\r\nContent-Length: 17\r\n") != NULL);
    second = memmem(c->buf + 12, c->len - 12, "HTTP/1.1 200", 12);
    ASSERT(second != NULL); /* the HEAD answer ended right at its blank line */
    ASSERT(memcmp(second - 4, "\r\n\r\n", 4) == 0);
    memmove(c->buf, second, c->len - (size_t)(second - c->buf));
    c->len -= (size_t)(second - c->buf);
    read_resp(c, &r);
    ASSERT_STREQ(r.body, "{\"status\":\"live\"}");
    free(r.body);
    conn_free(c);
}

TEST(server_routes)
{
    run_server(admin_plain, client_basic);
}

TEST(server_head)
{
    run_server(admin_plain, client_head);
}

static void client_keepalive(struct fixture *f)
{
    struct conn *c = conn_open(f->port);
    struct resp r;

    /* two in sequence, then two pipelined in one segment, on the same connection */
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "Connection: close") == NULL);
    free(r.body);
    send_all(c->fd, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 503);
    free(r.body);
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    free(r.body);
    read_resp(c, &r);
    ASSERT_EQ(r.status, 404);
    free(r.body);
    /* Connection: close is honoured */
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "\r\nConnection: close\r\n") != NULL);
    free(r.body);
    assert_closed(c);
    conn_free(c);

    /* HTTP/1.0 without keep-alive closes too */
    c = conn_open(f->port);
    send_all(c->fd, "GET /live HTTP/1.0\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    free(r.body);
    assert_closed(c);
    conn_free(c);

    /* a request split in small pieces */
    c = conn_open(f->port);
    const char *req = "GET /live HTTP/1.1\r\nHost: a\r\n\r\n";
    for (size_t off = 0, len = strlen(req); off < len; off += 5) {
        char piece[6] = {0};
        memcpy(piece, req + off, WR_MIN(5, len - off));
        send_all(c->fd, piece);
        usleep(1000);
    }
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    free(r.body);
    conn_free(c);
}

TEST(server_keepalive)
{
    run_server(admin_plain, client_keepalive);
}

static void client_errors(struct fixture *f)
{
    int port = f->port;
    struct conn *c;
    struct resp r;

    /* malformed: 400 and close */
    c = conn_open(port);
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost a\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 400);
    ASSERT(strstr(r.head, "\r\nConnection: close\r\n") != NULL);
    free(r.body);
    assert_closed(c);
    conn_free(c);

    /* a body over 64 KiB is refused from its head; the answer survives the unread body */
    c = conn_open(port);
    send_all(c->fd, "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n");
    char *junk = wr_xcalloc(1, 65538);
    memset(junk, 'x', 65537);
    send_all(c->fd, junk);
    free(junk);
    read_resp(c, &r);
    ASSERT_EQ(r.status, 413);
    free(r.body);
    assert_closed(c);
    conn_free(c);

    /* chunked request bodies are not taken */
    expect(port,
           "POST /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\n\r\n",
           411, NULL);

    /* a head that never ends */
    c = conn_open(port);
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n");
    char line[128];
    snprintf(line, sizeof(line), "X-Filler: %0100d\r\n", 0);
    for (int i = 0; i < 200; i++)
        if (send(c->fd, line, strlen(line), MSG_NOSIGNAL) <= 0)
            break;
    read_resp(c, &r);
    ASSERT_EQ(r.status, 431);
    free(r.body);
    conn_free(c);
}

/* Reads, and the name and method checks of changes (their answers: further down). */
static void client_rollouts(struct fixture *f)
{
    int port = f->port;
    struct conn *c;
    struct resp r;

    r = request(port, "GET /rollouts HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    json_t *root = json_loads(r.body, 0, NULL);
    ASSERT(root != NULL);
    json_t *ro = json_array_get(json_object_get(root, "rollouts"), 0);
    ASSERT_STREQ(jstr(ro, "name"), "shop");
    ASSERT_STREQ(jstr(ro, "blue"), "shop-blue");
    ASSERT_STREQ(jstr(ro, "green"), "shop-green");
    ASSERT_EQ(jint(ro, "green_weight"), 20);
    ASSERT(json_is_true(json_object_get(ro, "sticky")));
    json_t *green = json_object_get(json_object_get(ro, "stats"), "green");
    ASSERT_EQ(jint(green, "requests"), 7);
    ASSERT_EQ(jint(green, "errors_5xx"), 2);
    json_t *blue = json_object_get(json_object_get(ro, "stats"), "blue");
    ASSERT_EQ(jint(blue, "requests"), 0);
    ASSERT_EQ(jint(blue, "errors_5xx"), 0);
    json_decref(root);
    free(r.body);

    expect(port,
           "PUT /rollouts/nope HTTP/1.1\r\nHost: a\r\nContent-Length: 18\r\n\r\n"
           "{\"green_weight\":5}",
           404, NULL);
    expect(port,
           "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 18\r\n\r\n"
           "{\"green_weight\":5}",
           200, NULL);
    expect(port, "POST /rollouts/sh%6fp/rollback HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
           200, NULL);
    expect(port, "POST /rollouts/nope/promote HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
           404, NULL);
    r = request(port, "GET /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 405);
    ASSERT(strstr(r.head, "\r\nAllow: POST\r\n") != NULL);
    free(r.body);
    r = request(port, "GET /rollouts/shop HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    ASSERT(strncmp(r.body, "{\"name\":\"shop\",", 15) == 0);
    free(r.body);

    /* Expect: 100-continue gets its interim answer before the body is sent */
    c = conn_open(port);
    send_all(c->fd, "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 18\r\n"
                    "Expect: 100-continue\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 100);
    free(r.body);
    send_all(c->fd, "{\"green_weight\":5}");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    free(r.body);
    conn_free(c);
}

static void bump_green(struct fixture *f)
{
    const struct xds_rollout *ro = xds_rollout_find(atomic_load(&f->snap), "shop");

    xds_ctr_add(&xds_counters_w(ro->stats, 0)[XDS_RS_IDX(1, 1)], 5);
    xds_ctr_add(&xds_counters_w(ro->stats, 1)[XDS_RS_IDX(1, 4)], 2);
}

static void client_errors_and_rollouts(struct fixture *f)
{
    client_errors(f);
    bump_green(f); /* worker-style writes while the control thread serves */
    client_rollouts(f);
}

TEST(server_errors_and_rollouts)
{
    run_server(admin_plain, client_errors_and_rollouts);
}

/* ---- rollout changes --------------------------------------------------------------------- */

/* Whether <c> has bytes to read (or EOF) within <ms>. */
static bool readable(struct conn *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    return c->len > 0 || poll(&p, 1, ms) > 0;
}

static void wait_calls(struct fixture *f, int n)
{
    for (int i = 0; i < 5000 && atomic_load(&f->set_calls) < n; i++)
        usleep(1000);
    ASSERT_EQ(atomic_load(&f->set_calls), n);
}

static void wait_polls(struct fixture *f, int n)
{
    for (int i = 0; i < 5000 && atomic_load(&f->polls) < n; i++)
        usleep(1000);
    ASSERT(atomic_load(&f->polls) >= n);
}

static char *put_req(const char *name, const char *body)
{
    return wr_xasprintf("PUT /rollouts/%s HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n%s",
                        name, strlen(body), body);
}

/* Checks a change's 200 body: the rollout object plus the version. */
static void assert_rollout_answer(const char *body, long long weight, const char *version)
{
    json_t *ro = json_loads(body, 0, NULL);

    if (ro == NULL)
        FAIL("not JSON: %s", body);
    ASSERT_EQ(json_object_size(ro), 7);
    ASSERT_STREQ(jstr(ro, "name"), "shop");
    ASSERT_STREQ(jstr(ro, "blue"), "shop-blue");
    ASSERT_STREQ(jstr(ro, "green"), "shop-green");
    ASSERT_EQ(jint(ro, "green_weight"), weight);
    ASSERT(json_is_true(json_object_get(ro, "sticky")));
    json_t *stats = json_object_get(ro, "stats");
    ASSERT(json_is_object(json_object_get(stats, "blue")));
    ASSERT(json_is_object(json_object_get(stats, "green")));
    ASSERT_STREQ(jstr(ro, "version"), version);
    json_decref(ro);
}

/* PUT is answered only once served_version reaches the new version, and a request pipelined
 * behind it waits too, then comes second. */
static void client_put_deferred(struct fixture *f)
{
    struct conn *c = conn_open(f->port);
    struct resp r;
    char *req = put_req("shop", "{\"green_weight\": 55}");

    atomic_store(&f->confirm_after, 0);
    send_all(c->fd, req);
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    free(req);
    wait_polls(f, 20); /* polled, not answered */
    ASSERT(!readable(c, 50));
    ASSERT_EQ(atomic_load(&f->set_calls), 1);
    ASSERT_EQ(atomic_load(&f->set_weight), 55);
    ASSERT_STREQ(f->set_name, "shop");
    ASSERT_EQ(atomic_load(&f->version), 2);
    /* the new snapshot is published but not served: GET shows it already, the PUT still waits */
    struct resp g = request(f->port, "GET /rollouts/shop HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(g.status, 200);
    ASSERT(strstr(g.body, "\"green_weight\":55") != NULL);
    free(g.body);
    ASSERT(!readable(c, 20));

    atomic_store(&f->served, 2);
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "\r\nContent-Type: application/json\r\n") != NULL);
    ASSERT(strstr(r.head, "Connection: close") == NULL);
    assert_rollout_answer(r.body, 55, "2");
    free(r.body);
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STREQ(r.body, "{\"status\":\"live\"}");
    free(r.body);

    /* the connection goes on as usual; Connection: close on a change is honoured */
    atomic_store(&f->confirm_after, 3);
    send_all(c->fd, "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                    "Content-Length: 18\r\n\r\n{\"green_weight\":0}");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT(strstr(r.head, "\r\nConnection: close\r\n") != NULL);
    assert_rollout_answer(r.body, 0, "3");
    free(r.body);
    assert_closed(c);
    conn_free(c);
    ASSERT_EQ(atomic_load(&f->set_weight), 0);
}

TEST(rollout_put_waits_for_workers)
{
    run_server(admin_plain, client_put_deferred);
}

/* promote and rollback set 100 and 0, ignore any body, and accept an encoded name; the
 * answer's version and object come from the snapshot published last. */
static void client_promote_rollback(struct fixture *f)
{
    struct conn *c = conn_open(f->port);
    struct resp r;

    atomic_store(&f->confirm_after, 5);
    send_all(c->fd, "POST /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT(atomic_load(&f->polls) >= 5);
    ASSERT_EQ(atomic_load(&f->set_weight), 100);
    assert_rollout_answer(r.body, 100, "2");
    free(r.body);

    send_all(c->fd, "POST /rollouts/sh%6fp/rollback HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n"
                    "\r\ngarbage");
    read_resp(c, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STREQ(f->set_name, "shop");
    ASSERT_EQ(atomic_load(&f->set_weight), 0);
    assert_rollout_answer(r.body, 0, "3");
    free(r.body);

    /* three changes pipelined in one segment: answered in order, each after its own version */
    send_all(c->fd, "POST /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\n\r\n"
                    "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 18\r\n\r\n"
                    "{\"green_weight\":7}"
                    "POST /rollouts/shop/rollback HTTP/1.1\r\nHost: a\r\n\r\n");
    const long long want[] = {100, 7, 0};
    const char *versions[] = {"4", "5", "6"};
    for (int i = 0; i < 3; i++) {
        read_resp(c, &r);
        ASSERT_EQ(r.status, 200);
        assert_rollout_answer(r.body, want[i], versions[i]);
        free(r.body);
    }
    ASSERT_EQ(atomic_load(&f->set_calls), 5);
    conn_free(c);

    r = request(f->port, "GET /rollouts HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT(strstr(r.body, "\"green_weight\":0") != NULL);
    free(r.body);
}

TEST(rollout_promote_rollback)
{
    run_server(admin_plain, client_promote_rollback);
}

/* Every body but exactly {"green_weight": 0..100} is a 400 with an error message, and the
 * hook is not called. */
static void client_put_bad_bodies(struct fixture *f)
{
    static const struct {
        const char *body;
        const char *says; /* a part of the message */
    } bad[] = {
        {"", "missing body"},
        {"{", "cannot parse the body as JSON"},
        {"{\"green_weight\": 5} x", "cannot parse the body as JSON"},
        {"{\"green_weight\": 5, \"green_weight\": 6}", "duplicate"},
        {"[]", "not an array"},
        {"5", "must be a JSON object {\"green_weight\": N}, not a number"},
        {"\"green_weight\"", "not a string"},
        {"null", "not null"},
        {"{}", "missing \"green_weight\""},
        {"{\"green_weight\": 5.0}", "not a number with a fraction"},
        {"{\"green_weight\": 5.5}", "integer"},
        {"{\"green_weight\": 1e1}", "integer"},
        {"{\"green_weight\": \"5\"}", "not a string"},
        {"{\"green_weight\": true}", "not a boolean"},
        {"{\"green_weight\": null}", "not null"},
        {"{\"green_weight\": [5]}", "not an array"},
        {"{\"green_weight\": {}}", "not an object"},
        {"{\"green_weight\": -1}", "not -1"},
        {"{\"green_weight\": 101}", "not 101"},
        {"{\"green_weight\": 99999999999999999999999}", "cannot parse the body as JSON"},
        {"{\"green_weight\": 5, \"x\": 1}", "unknown key \"x\""},
        {"{\"green_wieght\": 5}", "unknown key \"green_wieght\""},
        {"{\"a\\\"b\": 5}", "unknown key \"a\"b\""},
        {"{\"green_weight\": 5}\xff", "cannot parse the body as JSON"},
    };

    for (size_t i = 0; i < WR_ARRAY_LEN(bad); i++) {
        char *req = put_req("shop", bad[i].body);
        struct resp r = request(f->port, req);
        if (r.status != 400)
            FAIL("%s -> %d %s", bad[i].body, r.status, r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        if (j == NULL || json_object_size(j) != 1 || jstr(j, "error") == NULL)
            FAIL("%s -> not an error object: %s", bad[i].body, r.body);
        if (strstr(jstr(j, "error"), bad[i].says) == NULL)
            FAIL("%s -> \"%s\" does not say \"%s\"", bad[i].body, jstr(j, "error"), bad[i].says);
        json_decref(j);
        free(r.body);
        free(req);
    }
    ASSERT_EQ(atomic_load(&f->set_calls), 0);
    /* the edges are fine */
    char *req = put_req("shop", "{\"green_weight\":100}");
    expect(f->port, req, 200, NULL);
    free(req);
    req = put_req("shop", " { \"green_weight\" : 0 } \r\n");
    expect(f->port, req, 200, NULL);
    free(req);
    ASSERT_EQ(atomic_load(&f->set_calls), 2);
}

TEST(rollout_put_bad_bodies)
{
    run_server(admin_plain, client_put_bad_bodies);
}

static void client_change_errors(struct fixture *f)
{
    int port = f->port;
    struct resp r;
    char *req;

    /* unknown names: 404 without asking the hook, whatever the body */
    req = put_req("nope", "{\"green_weight\": 5}");
    expect(port, req, 404, "{\"error\":\"no such rollout\"}");
    free(req);
    req = put_req("nope", "junk");
    expect(port, req, 404, NULL);
    free(req);
    expect(port, "POST /rollouts/nope/rollback HTTP/1.1\r\nHost: a\r\n\r\n", 404, NULL);
    ASSERT_EQ(atomic_load(&f->set_calls), 0);

    /* methods */
    const struct {
        const char *req;
        const char *allow;
    } m405[] = {
        {"POST /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD, PUT"},
        {"DELETE /rollouts/shop HTTP/1.1\r\nHost: a\r\n\r\n", "GET, HEAD, PUT"},
        {"PUT /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "POST"},
        {"GET /rollouts/shop/rollback HTTP/1.1\r\nHost: a\r\n\r\n", "POST"},
        {"PUT /rollouts HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD"},
        {"POST /rollouts HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "GET, HEAD"},
    };

    for (size_t i = 0; i < WR_ARRAY_LEN(m405); i++) {
        r = request(port, m405[i].req);
        ASSERT_EQ(r.status, 405);
        char allow[64];
        snprintf(allow, sizeof(allow), "\r\nAllow: %s\r\n", m405[i].allow);
        if (strstr(r.head, allow) == NULL)
            FAIL("%s: no \"%s\" in\n%s", m405[i].req, m405[i].allow, r.head);
        free(r.body);
    }
    ASSERT_EQ(atomic_load(&f->set_calls), 0);

    /* the hook refuses: its message, escaped */
    f->set_error = "draining \"now\"";
    atomic_store(&f->set_result, -1);
    req = put_req("shop", "{\"green_weight\": 5}");
    expect(port, req, 503, "{\"error\":\"draining \\\"now\\\"\"}");
    f->set_error = NULL;
    expect(port, "POST /rollouts/shop/promote HTTP/1.1\r\nHost: a\r\n\r\n", 503,
           "{\"error\":\"the rollout could not be changed\"}");
    /* the hook no longer knows the name (a reload removed it meanwhile) */
    atomic_store(&f->set_result, 0);
    expect(port, req, 404, "{\"error\":\"no such rollout\"}");
    free(req);
    ASSERT_EQ(atomic_load(&f->set_calls), 3);
    ASSERT_EQ(atomic_load(&f->version), 1);
}

TEST(rollout_change_errors)
{
    run_server(admin_plain, client_change_errors);
}

/* Workers that never catch up: 503 after ADMIN_CONFIRM_MS (10 s), and the connection goes on. */
static void client_confirm_timeout(struct fixture *f)
{
    struct conn *c = conn_open(f->port);
    struct resp r;
    char *req = put_req("shop", "{\"green_weight\": 30}");
    struct timespec t0, t1;

    atomic_store(&f->confirm_after, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    send_all(c->fd, req);
    send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    free(req);
    while (!readable(c, 1000)) /* SO_RCVTIMEO is 10 s: do not let read_resp() time out */
        ;
    read_resp(c, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ASSERT_EQ(r.status, 503);
    ASSERT_STREQ(r.body, "{\"error\":\"workers did not confirm the new version\"}");
    if (elapsed < 9.9 || elapsed > 15)
        FAIL("answered after %.2f s", elapsed);
    free(r.body);
    read_resp(c, &r);
    ASSERT_STREQ(r.body, "{\"status\":\"live\"}");
    free(r.body);
    conn_free(c);
}

TEST(rollout_confirm_timeout)
{
    run_server(admin_plain, client_confirm_timeout);
}

/* A peer that goes away while its answer waits, then the admin closed while another one waits:
 * everything is released (the sanitizer build checks the memory, run_server the handles). */
static void client_close_while_waiting(struct fixture *f)
{
    struct conn *gone = conn_open(f->port);
    char *req = put_req("shop", "{\"green_weight\": 40}");

    atomic_store(&f->confirm_after, 0);
    send_all(gone->fd, req);
    wait_calls(f, 1);
    wait_polls(f, 5);
    conn_free(gone);
    usleep(20000);
    atomic_store(&f->served, 2); /* the answer meets a closed socket */
    usleep(20000);

    struct conn *waiting = conn_open(f->port);
    send_all(waiting->fd, req);
    send_all(waiting->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    free(req);
    wait_calls(f, 2);
    wait_polls(f, 5);
    ASSERT(!readable(waiting, 10));
    f->left_open[0] = waiting;
    f->left_open[1] = conn_open(f->port); /* and an idle one */
}

static void check_closed_while_waiting(struct fixture *f)
{
    for (int i = 0; i < 2; i++) {
        assert_closed(f->left_open[i]);
        conn_free(f->left_open[i]);
    }
}

TEST(rollout_close_while_waiting)
{
    run_server_after(admin_plain, client_close_while_waiting, check_closed_while_waiting);
}

static char token_path[64];

static void client_token(struct fixture *f)
{
    int port = f->port;

    /* /live and /ready never need the token */
    expect(port, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n", 200, NULL);
    expect(port, "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", 503, NULL);
    struct resp r = request(port, "GET /config HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_EQ(r.status, 401);
    ASSERT_STREQ(r.body, "{\"error\":\"unauthorized\"}");
    ASSERT(strstr(r.head, "\r\nWWW-Authenticate: Bearer\r\n") != NULL);
    free(r.body);
    /* an unknown path is not revealed as such without the token */
    expect(port, "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-tokeN\r\n\r\n",
           401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token2\r\n\r\n",
           401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-toke\r\n\r\n",
           401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Basic s3cret-token\r\n\r\n",
           401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer\r\n\r\n", 401, NULL);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
           200, xds_snapshot_config_json(atomic_load(&f->snap)));
    expect(port, "GET /metrics HTTP/1.1\r\nHost: a\r\nauthorization: bearer s3cret-token\r\n\r\n",
           200, NULL);
    expect(port, "GET /nope HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\r\n", 404,
           NULL);
    /* a reload changes the token and the snapshot served; the old one stays valid while the
     * control thread could still be using it, so it is freed at the end */
    char *admin = wr_xasprintf("\"admin\": { \"address\": \"127.0.0.1:%d\", \"token_file\": "
                               "\"%s\" },",
                               port, token_path);
    FILE *tf = fopen(token_path, "w");
    fputs("other-token\n", tf);
    fclose(tf);
    struct xds_snapshot *next = snapshot(atomic_load(&f->snap)->reg, admin, 2);
    free(admin);
    struct xds_snapshot *old = atomic_exchange(&f->snap, next);
    expect(port, "GET /config HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
           401, NULL);
    r = request(port,
                "GET /clusters HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer other-token\r\n\r\n");
    ASSERT_EQ(r.status, 200);
    ASSERT(strncmp(r.body, "{\"version\":\"2\",", 15) == 0);
    free(r.body);
    xds_snapshot_unref(old);
}

static void remove_token_file(void)
{
    unlink(token_path);
}

TEST(server_token)
{
    snprintf(token_path, sizeof(token_path), "/tmp/weir-admin-token-XXXXXX");
    int fd = mkstemp(token_path);
    ASSERT(fd >= 0);
    ASSERT(write(fd, "s3cret-token\n", 13) == 13);
    close(fd);
    atexit(remove_token_file); /* FAIL() exits: clean up then too */
    char *admin = wr_xasprintf("\"admin\": { \"address\": \"127.0.0.1:%%d\", \"token_file\": "
                               "\"%s\" },",
                               token_path);
    run_server(admin, client_token);
    free(admin);
}

/* 256 connections at most: the 257th is closed at once, and a slot freed is usable again. */
static void client_limit(struct fixture *f)
{
    enum { N = 256 };
    struct conn **cs = wr_xcalloc(N, sizeof(*cs));
    struct resp r;

    for (int i = 0; i < N; i++) {
        cs[i] = conn_open(f->port);
        send_all(cs[i]->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
        read_resp(cs[i], &r); /* proves the server took it */
        free(r.body);
    }
    struct conn *extra = conn_open(f->port);
    const char *req = "GET /live HTTP/1.1\r\nHost: a\r\n\r\n";
    (void)!send(extra->fd, req, strlen(req), MSG_NOSIGNAL); /* may be reset already */
    assert_closed(extra);
    conn_free(extra);

    conn_free(cs[0]);
    cs[0] = NULL;
    bool ok = false;
    for (int tries = 0; tries < 200 && !ok; tries++) {
        struct conn *c = conn_open(f->port);
        char b[512];
        send_all(c->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
        ok = recv(c->fd, b, sizeof(b), 0) > 0;
        conn_free(c);
        if (!ok)
            usleep(10000);
    }
    ASSERT(ok);
    for (int i = 1; i < N; i++)
        conn_free(cs[i]);
    free(cs);
}

TEST(server_connection_limit)
{
    run_server(admin_plain, client_limit);
}

/* Closing the admin with connections open, idle and mid-request, closes them and leaks
 * nothing. */
static void client_close_busy(struct fixture *f)
{
    struct conn *idle = conn_open(f->port);
    struct conn *partial = conn_open(f->port);
    struct resp r;

    send_all(idle->fd, "GET /live HTTP/1.1\r\nHost: a\r\n\r\n");
    read_resp(idle, &r);
    free(r.body);
    send_all(partial->fd, "PUT /rollouts/shop HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab");
    usleep(50000);
    f->left_open[0] = idle;
    f->left_open[1] = partial;
}

static void check_closed_by_server(struct fixture *f)
{
    for (int i = 0; i < 2; i++) {
        assert_closed(f->left_open[i]);
        conn_free(f->left_open[i]);
    }
}

TEST(server_close_with_open_connections)
{
    run_server_after(admin_plain, client_close_busy, check_closed_by_server);
}

TEST(start_refuses_busy_port)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    int port = free_port();
    char *admin = wr_xasprintf(admin_plain, port);
    struct xds_snapshot *s = snapshot(reg, admin, 1);
    struct ing_admin_hooks hooks = {.snapshot = hook_snapshot, .state = hook_state};
    uv_loop_t loop;
    const char *err = NULL;

    ASSERT(uv_loop_init(&loop) == 0);
    struct ing_admin *a = ing_admin_start(&loop, s, &hooks, &err);
    ASSERT(a != NULL);
    struct ing_admin *b = ing_admin_start(&loop, s, &hooks, &err);
    ASSERT(b == NULL);
    ASSERT(err != NULL && strstr(err, "address already in use") != NULL);
    ing_admin_close(a);
    ASSERT(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    free(admin);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}
