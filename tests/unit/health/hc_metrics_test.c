/* tests/unit/health/hc_metrics_test.c -- what health/ exports through the admin API
 * (ingress/ing_admin_views.c): weir_endpoint_healthy, weir_health_checks_total{result},
 * weir_outlier_ejections_total, and the "health" of /clusters, from the flags and counters
 * health/ keeps in the endpoint state entries. */
#include <stdlib.h>
#include <string.h>

#include <weir/ing.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

static const char *config =
    "{\"workers\": 2, \"listeners\": [{\"name\": \"l\", \"address\": \"127.0.0.1:1\"}], "
    "\"clusters\": [{\"name\": \"api\", \"endpoints\": [{\"address\": \"127.0.0.1:9001\"}, "
    "{\"address\": \"127.0.0.1:9002\"}, {\"address\": \"127.0.0.1:9003\"}, "
    "{\"address\": \"127.0.0.1:9004\"}]}]}";

static struct xds_snapshot *load(struct xds_stats_reg *reg)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = xds_config_parse(config, strlen(config), "t.json", reg, 3, &e);

    if (s == NULL)
        FAIL("config: %s", e.p);
    wr_sbuf_dispose(&e);
    return s;
}

static void has_line(const char *text, const char *line)
{
    const char *p = strstr(text, line);

    if (p == NULL || (p != text && p[-1] != '\n') || p[strlen(line)] != '\n')
        FAIL("no line \"%s\" in:\n%s", line, text);
}

TEST(endpoint_health_metrics)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s = load(reg);
    struct xds_endpoint *eps = s->clusters[0]->eps;

    atomic_store(&eps[1].st->flags, XDS_EPF_UNHEALTHY);
    atomic_store(&eps[2].st->flags, XDS_EPF_EJECTED);
    atomic_store(&eps[3].st->flags, XDS_EPF_DRAINING | XDS_EPF_UNHEALTHY);
    xds_ctr_add(&eps[0].st->hc_ok, 12);
    xds_ctr_add(&eps[1].st->hc_ok, 3);
    xds_ctr_add(&eps[1].st->hc_fail, 4);
    xds_ctr_add(&eps[2].st->od_ejections, 2);
    char *m = ing_admin_metrics_text(s);
    has_line(m, "# TYPE weir_health_checks_total counter");
    has_line(m, "# TYPE weir_outlier_ejections_total counter");
    has_line(m, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 1");
    has_line(m, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9002\"} 0");
    has_line(m, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9003\"} 0");
    has_line(m, "weir_endpoint_healthy{cluster=\"api\",endpoint=\"127.0.0.1:9004\"} 0");
    has_line(m, "weir_health_checks_total{cluster=\"api\",endpoint=\"127.0.0.1:9001\","
                "result=\"success\"} 12");
    has_line(m, "weir_health_checks_total{cluster=\"api\",endpoint=\"127.0.0.1:9001\","
                "result=\"failure\"} 0");
    has_line(m, "weir_health_checks_total{cluster=\"api\",endpoint=\"127.0.0.1:9002\","
                "result=\"success\"} 3");
    has_line(m, "weir_health_checks_total{cluster=\"api\",endpoint=\"127.0.0.1:9002\","
                "result=\"failure\"} 4");
    has_line(m, "weir_outlier_ejections_total{cluster=\"api\",endpoint=\"127.0.0.1:9003\"} 2");
    has_line(m, "weir_outlier_ejections_total{cluster=\"api\",endpoint=\"127.0.0.1:9001\"} 0");
    free(m);
    char *j = ing_admin_clusters_json(s);
    ASSERT(strstr(j, "\"address\":\"127.0.0.1:9001\",\"weight\":1,\"health\":\"healthy\"") != NULL);
    ASSERT(strstr(j, "\"address\":\"127.0.0.1:9002\",\"weight\":1,\"health\":\"unhealthy\"") !=
           NULL);
    ASSERT(strstr(j, "\"address\":\"127.0.0.1:9003\",\"weight\":1,\"health\":\"ejected\"") != NULL);
    ASSERT(strstr(j, "\"address\":\"127.0.0.1:9004\",\"weight\":1,\"health\":\"draining\"") !=
           NULL);
    free(j);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

TEST(metrics_without_registry)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = xds_config_parse(config, strlen(config), "t.json", NULL, 1, &e);

    ASSERT(s != NULL);
    char *m = ing_admin_metrics_text(s);
    /* Every series exists from the first scrape, at zero. */
    has_line(m, "weir_health_checks_total{cluster=\"api\",endpoint=\"127.0.0.1:9004\","
                "result=\"failure\"} 0");
    has_line(m, "weir_outlier_ejections_total{cluster=\"api\",endpoint=\"127.0.0.1:9004\"} 0");
    free(m);
    xds_snapshot_unref(s);
    wr_sbuf_dispose(&e);
}
