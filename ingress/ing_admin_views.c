/* ingress/ing_admin_views.c -- the admin API bodies that read the model: GET /clusters (JSON) and
 * GET /metrics (Prometheus text exposition format 0.0.4). Control thread only.
 *
 * Both read a snapshot that is immutable, plus the shared counters under it, which the workers
 * keep bumping while we read: every counter is read once with a relaxed load, so a scrape is not
 * an atomic picture (a request may show in an endpoint's counter and not yet in its route's).
 * Prometheus copes with that; the one place where it would be visible, a histogram whose "+Inf"
 * bucket lags its finite buckets, is clamped below.
 *
 * Snapshots built without a stats registry (weir --check, some tests) have NULL counter
 * pointers everywhere: they read as zeros, and every series is still emitted so that dashboards
 * and alerts see the series exist from the first scrape.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include <weir/ing.h>
#include <weir/wr.h>
#include <weir/xds.h>

/* ---- counter reads ------------------------------------------------------------------------- */

static uint64_t ctr(struct xds_counters *k, unsigned i)
{
    return (k != NULL && i < k->ncounters) ? xds_counters_sum(k, i) : 0;
}

/* A gauge that every worker moves up and down on its own word: one word may have wrapped below
 * zero while another is above it. The uint64 sum is exact modulo 2^64, so reading it as int64 is
 * the true signed total. */
static int64_t gauge(struct xds_counters *k, unsigned i)
{
    return (int64_t)ctr(k, i);
}

struct ep_totals {
    uint64_t requests, failures;
    int64_t active;
};

static struct ep_totals ep_totals(struct xds_ep_state *st)
{
    struct ep_totals t = {0, 0, 0};
    uint64_t active = 0;

    if (st == NULL)
        return t;
    for (unsigned i = 0; i < st->nworkers; i++) {
        t.requests += xds_ctr_get(&st->w[i].requests);
        t.failures += xds_ctr_get(&st->w[i].failures);
        active += xds_ctr_get(&st->w[i].active);
    }
    /* Same reasoning as gauge(). A request starts and ends on one worker, so no word should go
     * below zero; the clamp only keeps a bug elsewhere from showing a negative count. */
    t.active = WR_MAX((int64_t)active, 0);
    return t;
}

static uint32_t ep_flags(struct xds_ep_state *st)
{
    return st != NULL ? atomic_load_explicit(&st->flags, memory_order_relaxed) : 0;
}

/* The precedence matters when several flags are set: a draining endpoint takes no new requests
 * whatever its health, and an ejection is more recent news than a failed check. */
static const char *ep_health(uint32_t flags)
{
    if (flags & XDS_EPF_DRAINING)
        return "draining";
    if (flags & XDS_EPF_EJECTED)
        return "ejected";
    if (flags & XDS_EPF_UNHEALTHY)
        return "unhealthy";
    return "healthy";
}

/* ---- GET /clusters ------------------------------------------------------------------------- */

static json_t *jstr(const char *s)
{
    json_t *j = s != NULL ? json_string(s) : NULL;

    return j != NULL ? j : json_null(); /* NULL or not UTF-8: null rather than a missing key */
}

static json_t *jint(int64_t v)
{
    return json_integer((json_int_t)v);
}

static json_t *juint(uint64_t v)
{
    return json_integer((json_int_t)WR_MIN(v, (uint64_t)INT64_MAX));
}

static json_t *endpoint_json(const struct xds_endpoint *ep)
{
    struct ep_totals t = ep_totals(ep->st);
    json_t *o = json_object();

    json_object_set_new(o, "address", jstr(ep->address));
    json_object_set_new(o, "weight", juint(ep->weight));
    json_object_set_new(
        o, "health",
        json_string(ep_health(ep_flags(ep->st) | (ep->draining ? XDS_EPF_DRAINING : 0))));
    if (ep->priority > 0) /* an extension: shown only for clusters with priority levels */
        json_object_set_new(o, "priority", juint(ep->priority));
    json_object_set_new(o, "active_requests", jint(t.active));
    json_object_set_new(o, "requests", juint(t.requests));
    json_object_set_new(o, "failures", juint(t.failures));
    return o;
}

static json_t *cluster_json(const struct xds_cluster *c)
{
    json_t *o = json_object();
    json_t *eps = json_array();

    json_object_set_new(o, "name", jstr(c->name));
    json_object_set_new(o, "source", json_string(xds_source_name(c->source)));
    json_object_set_new(o, "lb_policy", json_string(xds_lb_policy_name(c->lb_policy)));
    for (uint32_t i = 0; i < c->n_eps; i++)
        json_array_append_new(eps, endpoint_json(&c->eps[i]));
    json_object_set_new(o, "endpoints", eps);
    return o;
}

/* Returns the GET /clusters body for <s>: {"version", "clusters": [...]} (INTERFACES.md §3),
 * malloc'd. Aborts on OOM (control path, bounded by the config size). */
char *ing_admin_clusters_json(struct xds_snapshot *s)
{
    json_t *root = json_object();
    json_t *arr = json_array();

    json_object_set_new(root, "version", json_string(s->version_str));
    for (uint32_t i = 0; i < s->n_clusters; i++)
        json_array_append_new(arr, cluster_json(s->clusters[i]));
    json_object_set_new(root, "clusters", arr);

    char *out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (out == NULL) {
        fprintf(stderr, "weir: out of memory building /clusters\n");
        abort();
    }
    return out;
}

/* ---- GET /metrics -------------------------------------------------------------------------- */

static const char *const code_class[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const colour_name[2] = {"blue", "green"};

struct lbl {
    const char *name, *value;
};

/* LABELS({"route", r->name}, {"code", "2xx"}) expands to an array and its length. */
#define LABELS(...)                                                                                \
    (const struct lbl[]){__VA_ARGS__}, WR_ARRAY_LEN(((const struct lbl[]){__VA_ARGS__}))

static void family(struct wr_sbuf *b, const char *name, const char *type, const char *help)
{
    wr_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and line feed (exposition format 0.0.4). */
static void add_label_value(struct wr_sbuf *b, const char *v)
{
    const char *run = v;

    for (; *v != '\0'; v++) {
        const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        if (esc == NULL)
            continue;
        wr_sbuf_add(b, run, (size_t)(v - run));
        wr_sbuf_addstr(b, esc);
        run = v + 1;
    }
    wr_sbuf_add(b, run, (size_t)(v - run));
}

/* Emits one sample line: name{labels} value. A NULL label value (a model field that should
 * never be NULL) is emitted as "" rather than crashing the scrape. */
static void sample(struct wr_sbuf *b, const char *name, const struct lbl *l, size_t n,
                   const char *value)
{
    wr_sbuf_addstr(b, name);
    for (size_t i = 0; i < n; i++) {
        wr_sbuf_printf(b, "%s%s=\"", i == 0 ? "{" : ",", l[i].name);
        add_label_value(b, l[i].value != NULL ? l[i].value : "");
        wr_sbuf_addstr(b, "\"");
    }
    wr_sbuf_printf(b, "%s %s\n", n > 0 ? "}" : "", value);
}

static void sample_u64(struct wr_sbuf *b, const char *name, const struct lbl *l, size_t n,
                       uint64_t v)
{
    char tmp[24];

    snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    sample(b, name, l, n, tmp);
}

static void sample_i64(struct wr_sbuf *b, const char *name, const struct lbl *l, size_t n,
                       int64_t v)
{
    char tmp[24];

    snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    sample(b, name, l, n, tmp);
}

/* Formats <us> microseconds as seconds, exactly and without trailing zeros ("1.5", "0.000125",
 * "3"): a double would round large sums. */
static void format_seconds(char *out, size_t outlen, uint64_t us)
{
    int n = snprintf(out, outlen, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);

    while (n > 0 && out[n - 1] == '0')
        out[--n] = '\0';
    if (n > 0 && out[n - 1] == '.')
        out[--n] = '\0';
}

/* Sums the five code classes of every wc[] entry of <r> that targets the cluster of wc[i]:
 * a route may name a cluster twice (weighted_clusters, or a rollout with blue == green), and a
 * duplicate series would make Prometheus reject the whole scrape. Entries that share one
 * counter block (xds/ keys them by route and cluster) are counted once. */
static void route_cluster_codes(const struct xds_route *r, uint32_t i, uint64_t codes[5])
{
    for (unsigned k = 0; k < 5; k++)
        codes[k] = 0;
    for (uint32_t j = i; j < r->n_wc; j++) {
        bool counted = false;
        if (r->wc[j].cluster != r->wc[i].cluster)
            continue;
        for (uint32_t p = i; p < j && !counted; p++)
            counted = r->wc[p].cluster == r->wc[i].cluster && r->wc[p].stats == r->wc[j].stats;
        for (unsigned k = 0; k < 5 && !counted; k++)
            codes[k] += ctr(r->wc[j].stats, k);
    }
}

static bool cluster_seen_before(const struct xds_route *r, uint32_t i)
{
    for (uint32_t j = 0; j < i; j++)
        if (r->wc[j].cluster == r->wc[i].cluster)
            return true;
    return false;
}

static void metrics_requests(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_requests_total", "counter",
           "Requests answered, by route, upstream cluster and status class.");
    for (uint32_t i = 0; i < s->n_routes; i++) {
        const struct xds_route *r = &s->routes[i];
        for (uint32_t j = 0; j < r->n_wc; j++) {
            uint64_t codes[5];
            if (r->wc[j].cluster == NULL || cluster_seen_before(r, j))
                continue;
            route_cluster_codes(r, j, codes);
            for (unsigned k = 0; k < 5; k++)
                sample_u64(b, "weir_requests_total",
                           LABELS({"route", r->name}, {"cluster", r->wc[j].cluster->name},
                                  {"code", code_class[k]}),
                           codes[k]);
        }
    }
}

/* The buckets are stored one counter per bucket (an observation bumps only its own bucket);
 * the exposition format wants cumulative "le" buckets. Observations above the last bound are in
 * no bucket, only in the count, which is therefore the "+Inf" bucket. */
static void histogram_route(struct wr_sbuf *b, const struct xds_route *r)
{
    const char *name = "weir_request_duration_seconds_bucket";
    uint64_t cum = 0;
    char le[32], sum[32];

    for (unsigned i = 0; i < XDS_HIST_BUCKETS; i++) {
        cum += ctr(r->hist, i);
        snprintf(le, sizeof(le), "%g", xds_hist_bounds[i]);
        sample_u64(b, name, LABELS({"route", r->name}, {"le", le}), cum);
    }
    /* A worker bumps a bucket, then the sum, then the count; a scrape in between must not see
     * "+Inf" below a finite bucket (Prometheus would flag the histogram as invalid). */
    uint64_t count = WR_MAX(ctr(r->hist, XDS_HIST_BUCKETS + 1), cum);
    sample_u64(b, name, LABELS({"route", r->name}, {"le", "+Inf"}), count);
    format_seconds(sum, sizeof(sum), ctr(r->hist, XDS_HIST_BUCKETS));
    sample(b, "weir_request_duration_seconds_sum", LABELS({"route", r->name}), sum);
    sample_u64(b, "weir_request_duration_seconds_count", LABELS({"route", r->name}), count);
}

static void metrics_durations(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_request_duration_seconds", "histogram",
           "Time from the request head to the end of the response, by route.");
    for (uint32_t i = 0; i < s->n_routes; i++)
        histogram_route(b, &s->routes[i]);
}

static void metrics_listeners(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_active_connections", "gauge", "Open client connections, by listener.");
    for (uint32_t i = 0; i < s->n_listeners; i++)
        sample_i64(b, "weir_active_connections", LABELS({"listener", s->listeners[i].name}),
                   gauge(s->listeners[i].stats, 0));
    family(b, "weir_connections_total", "counter", "Accepted client connections, by listener.");
    for (uint32_t i = 0; i < s->n_listeners; i++)
        sample_u64(b, "weir_connections_total", LABELS({"listener", s->listeners[i].name}),
                   ctr(s->listeners[i].stats, 1));
}

static void metrics_clusters(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_upstream_connect_failures_total", "counter",
           "Failed connection attempts to upstream endpoints, by cluster.");
    for (uint32_t i = 0; i < s->n_clusters; i++)
        sample_u64(b, "weir_upstream_connect_failures_total",
                   LABELS({"cluster", s->clusters[i]->name}),
                   ctr(s->clusters[i]->stats, XDS_CS_CONNECT_FAILURES));
    family(b, "weir_upstream_retries_total", "counter", "Upstream request retries, by cluster.");
    for (uint32_t i = 0; i < s->n_clusters; i++)
        sample_u64(b, "weir_upstream_retries_total", LABELS({"cluster", s->clusters[i]->name}),
                   ctr(s->clusters[i]->stats, XDS_CS_RETRIES));
}

enum ep_metric {
    EPM_HEALTHY,
    EPM_REQUESTS,
    EPM_FAILURES,
    EPM_ACTIVE,
    EPM_CHECKS_OK,
    EPM_CHECKS_FAIL,
    EPM_EJECTIONS,
};

/* Counters health/ keeps on the control thread (one word each, no per-worker slices). */
static uint64_t ep_hc_counter(struct xds_ep_state *st, enum ep_metric m)
{
    if (st == NULL)
        return 0;
    switch (m) {
    case EPM_CHECKS_OK:
        return xds_ctr_get(&st->hc_ok);
    case EPM_CHECKS_FAIL:
        return xds_ctr_get(&st->hc_fail);
    default:
        return xds_ctr_get(&st->od_ejections);
    }
}

static void endpoint_family(struct wr_sbuf *b, struct xds_snapshot *s, enum ep_metric m,
                            const char *name)
{
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        const struct xds_cluster *c = s->clusters[i];
        for (uint32_t j = 0; j < c->n_eps; j++) {
            struct xds_ep_state *st = c->eps[j].st;
            struct ep_totals t = ep_totals(st);
            const struct lbl l[2] = {{"cluster", c->name}, {"endpoint", c->eps[j].address}};
            switch (m) {
            case EPM_HEALTHY:
                sample_u64(b, name, l, 2, ep_flags(st) == 0 && !c->eps[j].draining);
                break;
            case EPM_REQUESTS:
                sample_u64(b, name, l, 2, t.requests);
                break;
            case EPM_FAILURES:
                sample_u64(b, name, l, 2, t.failures);
                break;
            case EPM_ACTIVE:
                sample_i64(b, name, l, 2, t.active);
                break;
            case EPM_CHECKS_OK:
            case EPM_CHECKS_FAIL: {
                const struct lbl lr[3] = {
                    l[0], l[1], {"result", m == EPM_CHECKS_OK ? "success" : "failure"}};
                sample_u64(b, name, lr, 3, ep_hc_counter(st, m));
                break;
            }
            case EPM_EJECTIONS:
                sample_u64(b, name, l, 2, ep_hc_counter(st, m));
                break;
            }
        }
    }
}

static void metrics_endpoints(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_endpoint_healthy", "gauge",
           "1 when the endpoint takes new requests (healthy, not ejected, not draining), else 0.");
    endpoint_family(b, s, EPM_HEALTHY, "weir_endpoint_healthy");
    family(b, "weir_endpoint_requests_total", "counter", "Requests proxied to the endpoint.");
    endpoint_family(b, s, EPM_REQUESTS, "weir_endpoint_requests_total");
    family(b, "weir_endpoint_failures_total", "counter",
           "5xx answers and connect, reset or timeout failures of the endpoint.");
    endpoint_family(b, s, EPM_FAILURES, "weir_endpoint_failures_total");
    family(b, "weir_endpoint_active_requests", "gauge", "Requests in flight to the endpoint.");
    endpoint_family(b, s, EPM_ACTIVE, "weir_endpoint_active_requests");
    family(b, "weir_health_checks_total", "counter",
           "Active health checks of the endpoint, by result (success/failure).");
    endpoint_family(b, s, EPM_CHECKS_OK, "weir_health_checks_total");
    endpoint_family(b, s, EPM_CHECKS_FAIL, "weir_health_checks_total");
    family(b, "weir_outlier_ejections_total", "counter",
           "Times outlier detection ejected the endpoint.");
    endpoint_family(b, s, EPM_EJECTIONS, "weir_outlier_ejections_total");
}

static void metrics_rollouts(struct wr_sbuf *b, struct xds_snapshot *s)
{
    family(b, "weir_rollout_green_weight", "gauge",
           "Percentage of the rollout's requests sent to green.");
    for (uint32_t i = 0; i < s->n_rollouts; i++)
        sample_u64(b, "weir_rollout_green_weight", LABELS({"rollout", s->rollouts[i].name}),
                   s->rollouts[i].green_weight);
    family(b, "weir_rollout_requests_total", "counter",
           "Requests answered, by rollout, colour and status class.");
    for (uint32_t i = 0; i < s->n_rollouts; i++) {
        const struct xds_rollout *ro = &s->rollouts[i];
        for (unsigned col = 0; col < 2; col++)
            for (unsigned k = 0; k < 5; k++)
                sample_u64(b, "weir_rollout_requests_total",
                           LABELS({"rollout", ro->name}, {"colour", colour_name[col]},
                                  {"code", code_class[k]}),
                           ctr(ro->stats, XDS_RS_IDX(col, k)));
    }
}

/* Returns the GET /metrics body for <s> (Prometheus text format 0.0.4), malloc'd. */
char *ing_admin_metrics_text(struct xds_snapshot *s)
{
    struct wr_sbuf b = {0};

    metrics_requests(&b, s);
    metrics_durations(&b, s);
    metrics_listeners(&b, s);
    metrics_clusters(&b, s);
    metrics_endpoints(&b, s);
    metrics_rollouts(&b, s);
    family(&b, "weir_config_version_info", "gauge", "The version of the configuration served.");
    sample(&b, "weir_config_version_info", LABELS({"version", s->version_str}), "1");
    family(&b, "weir_build_info", "gauge", "The weir build.");
    sample(&b, "weir_build_info", LABELS({"version", WEIR_VERSION}), "1");
    return b.p;
}
