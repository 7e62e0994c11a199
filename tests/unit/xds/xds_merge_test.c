/* tests/unit/xds/xds_merge_test.c -- the file merged with discovery views (xds/xds_merge.c)
 * and the cluster cache that makes an update cost what changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

#define BASE                                                                                       \
    "{\"listeners\": [{\"name\": \"web\", \"address\": \"127.0.0.1:18999\"}],"                     \
    " \"admin\": {\"address\": \"127.0.0.1:18998\"}"

static json_t *jv(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL) {
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, text);
        abort();
    }
    return v;
}

static struct xds_snapshot *build(const char *file, struct xds_view *views, unsigned n,
                                  struct xds_stats_reg *reg, struct xds_cache *cache,
                                  struct wr_sbuf *errors)
{
    struct xds_build_args a = {.path = "weir.json",
                               .text = file,
                               .len = strlen(file),
                               .views = views,
                               .n_views = n,
                               .reg = reg,
                               .version = 1,
                               .cache = cache};
    return xds_config_build(&a, errors);
}

static bool has_conflict(const struct xds_snapshot *s, const char *needle)
{
    for (uint32_t i = 0; i < s->n_conflicts; i++)
        if (strstr(s->conflicts[i], needle) != NULL)
            return true;
    return false;
}

TEST(view_adds_clusters_routes_rollouts)
{
    json_t *v = jv("{\"clusters\": [{\"name\": \"consul:a\", \"endpoints\": [{\"address\": "
                   "\"127.0.0.1:1\"}]}, {\"name\": \"consul:b\", \"endpoints\": []}],"
                   " \"rollouts\": [{\"name\": \"consul:web\", \"blue\": \"consul:a\", \"green\": "
                   "\"consul:b\", \"green_weight\": 30}],"
                   " \"routes\": [{\"name\": \"consul:web\", \"match\": {\"host\": \"w.test\"},"
                   " \"rollout\": \"consul:web\"}]}");
    struct xds_view views[] = {{.label = "consul:x", .source = XDS_SRC_CONSUL, .view = v}};
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(BASE "}", views, 1, NULL, NULL, &e);

    if (s == NULL)
        FAIL("%s", e.p);
    ASSERT_EQ(s->n_clusters, 2);
    ASSERT_EQ(s->clusters[0]->source, XDS_SRC_CONSUL);
    ASSERT_EQ(xds_rollout_find(s, "consul:web")->green_weight, 30);
    ASSERT_EQ(s->n_routes, 1);
    ASSERT_EQ(s->n_conflicts, 0);
    xds_snapshot_unref(s);
    json_decref(v);
    wr_sbuf_dispose(&e);
}

TEST(template_filled_static_wins)
{
    const char *file =
        BASE ", \"clusters\": [{\"name\": \"tpl\", \"panic_percent\": 7},"
             " {\"name\": \"st\", \"endpoints\": [{\"address\": \"127.0.0.1:2\"}]}]}";
    json_t *v = jv("{\"clusters\": [{\"name\": \"tpl\", \"panic_percent\": 80, \"endpoints\": "
                   "[{\"address\": \"127.0.0.1:3\", \"priority\": 1}]},"
                   " {\"name\": \"st\", \"endpoints\": [{\"address\": \"127.0.0.1:4\"}]}]}");
    json_t *v2 = jv("{\"clusters\": [{\"name\": \"tpl\", \"endpoints\": []}]}");
    struct xds_view views[] = {{.label = "dns_srv:a", .source = XDS_SRC_DNS_SRV, .view = v},
                               {.label = "file:b", .source = XDS_SRC_FILE, .view = v2}};
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(file, views, 2, NULL, NULL, &e);

    if (s == NULL)
        FAIL("%s", e.p);
    const struct xds_cluster *t = xds_cluster_find(s, "tpl");
    ASSERT_EQ(t->source, XDS_SRC_DNS_SRV);
    ASSERT_EQ(t->panic_percent, 7); /* the template's settings win */
    ASSERT_EQ(t->n_eps, 1);
    ASSERT_EQ(t->eps[0].priority, 1);
    ASSERT(t->has_priorities);
    const struct xds_cluster *st = xds_cluster_find(s, "st");
    ASSERT_EQ(st->source, XDS_SRC_STATIC);
    ASSERT_STREQ(st->eps[0].address, "127.0.0.1:2");
    ASSERT(has_conflict(s, "cluster st of dns_srv:a"));
    ASSERT(has_conflict(s, "cluster tpl of file:b: already defined by dns_srv:a"));
    ASSERT_EQ(s->n_conflicts, 2);
    xds_snapshot_unref(s);
    json_decref(v);
    json_decref(v2);
    wr_sbuf_dispose(&e);
}

TEST(route_conflicts_between_sources_only)
{
    const char *file = BASE ", \"clusters\": [{\"name\": \"c\", \"endpoints\": []}],"
                            " \"routes\": [{\"name\": \"r1\", \"match\": {\"host\": \"A.test\","
                            " \"path_prefix\": \"/\"}, \"cluster\": \"c\"},"
                            " {\"name\": \"r2\", \"match\": {\"host\": \"a.test\", \"path_prefix\":"
                            " \"/\"}, \"cluster\": \"c\"}]}";
    json_t *v = jv("{\"routes\": [{\"name\": \"k1\", \"match\": {\"host\": \"a.test\","
                   " \"path_prefix\": \"/\"}, \"cluster\": \"c\"},"
                   " {\"name\": \"k2\", \"match\": {\"host\": \"b.test\"}, \"cluster\": \"c\"},"
                   " {\"name\": \"k3\", \"match\": {\"host\": \"b.test\"}, \"cluster\": \"c\"},"
                   " {\"name\": \"r1\", \"match\": {\"host\": \"c.test\"}, \"cluster\": \"c\"}]}");
    struct xds_view views[] = {{.label = "kubernetes:x", .source = XDS_SRC_KUBERNETES, .view = v}};
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(file, views, 1, NULL, NULL, &e);

    if (s == NULL)
        FAIL("%s", e.p);
    /* r1 and r2 of the file overlap: allowed. k1 overlaps the file: dropped. k2/k3 overlap
     * each other within one source: allowed. r1 of the view: name taken. */
    ASSERT_EQ(s->n_routes, 4);
    ASSERT(has_conflict(s, "route k1 of kubernetes:x"));
    ASSERT(has_conflict(s, "route r1 of kubernetes:x: the name is taken by the file"));
    ASSERT_EQ(s->n_conflicts, 2);
    xds_snapshot_unref(s);
    json_decref(v);
    wr_sbuf_dispose(&e);
}

/* Routes that serve the same requests are a conflict however they are written: host case and
 * a trailing dot, no path condition against path_prefix "/" (which would otherwise outrank the
 * earlier source's route and take all its requests), header conditions in another order, with
 * another name case, or "present": true spelt out. */
TEST(route_conflicts_normalized)
{
    const char *file = BASE
        ", \"clusters\": [{\"name\": \"c\", \"endpoints\": []}],"
        " \"routes\": [{\"name\": \"any\", \"match\": {\"host\": \"A.test\"}, \"cluster\": \"c\"},"
        " {\"name\": \"hdr\", \"match\": {\"host\": \"h.test\", \"path_prefix\": \"/x\","
        " \"headers\": [{\"name\": \"X-A\", \"exact\": \"1\"}, {\"name\": \"x-b\"}]},"
        " \"cluster\": \"c\"}]}";
    json_t *v =
        jv("{\"routes\": ["
           "{\"name\": \"k:slash\", \"match\": {\"host\": \"a.test.\", \"path_prefix\": "
           "\"/\"}, \"cluster\": \"c\"},"
           "{\"name\": \"k:hdr\", \"match\": {\"host\": \"H.TEST\", \"path_prefix\": \"/x\","
           " \"headers\": [{\"name\": \"x-b\", \"present\": true}, {\"name\": \"x-a\","
           " \"exact\": \"1\", \"invert\": false}]}, \"cluster\": \"c\"},"
           /* not the same requests: kept */
           "{\"name\": \"k:exact\", \"match\": {\"host\": \"a.test\", \"path_exact\": \"/\"},"
           " \"cluster\": \"c\"},"
           "{\"name\": \"k:inv\", \"match\": {\"host\": \"h.test\", \"path_prefix\": \"/x\","
           " \"headers\": [{\"name\": \"x-b\", \"present\": false}, {\"name\": \"x-a\","
           " \"exact\": \"1\"}]}, \"cluster\": \"c\"},"
           "{\"name\": \"k:val\", \"match\": {\"host\": \"h.test\", \"path_prefix\": \"/x\","
           " \"headers\": [{\"name\": \"x-b\"}, {\"name\": \"x-a\", \"exact\": \"2\"}]},"
           " \"cluster\": \"c\"}]}");
    struct xds_view views[] = {{.label = "kubernetes:x", .source = XDS_SRC_KUBERNETES, .view = v}};
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(file, views, 1, NULL, NULL, &e);

    if (s == NULL)
        FAIL("%s", e.p);
    ASSERT(has_conflict(s, "route k:slash of kubernetes:x: serves the same host, path and headers "
                           "as route any of the file"));
    ASSERT(has_conflict(s, "route k:hdr of kubernetes:x"));
    ASSERT_EQ(s->n_conflicts, 2);
    ASSERT_EQ(s->n_routes, 5);
    xds_snapshot_unref(s);
    json_decref(v);
    wr_sbuf_dispose(&e);
}

TEST(view_errors_named_by_label)
{
    json_t *v = jv("{\"clusters\": [{\"name\": \"x\", \"lb_policy\": \"nope\"}],"
                   " \"routes\": 5}");
    struct xds_view views[] = {{.label = "consul:z", .source = XDS_SRC_CONSUL, .view = v}};
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(BASE "}", views, 1, NULL, NULL, &e);

    ASSERT(s == NULL);
    ASSERT(strstr(e.p, "consul:z: clusters[0].lb_policy:") != NULL);
    ASSERT(strstr(e.p, "consul:z: routes: must be an array") != NULL);
    json_decref(v);
    wr_sbuf_dispose(&e);
}

/* A view of <n> services with <eps> endpoints each; service <bump> gets a different port on
 * its first endpoint. */
static json_t *big_view(unsigned n, unsigned eps, int bump)
{
    json_t *clusters = json_array(), *routes = json_array();

    for (unsigned i = 0; i < n; i++) {
        json_t *ea = json_array();
        for (unsigned j = 0; j < eps; j++) {
            char addr[64];
            snprintf(addr, sizeof(addr), "10.%u.%u.%u:%u", i / 250, i % 250, j + 1,
                     (int)i == bump && j == 0 ? 9090 : 8080);
            json_array_append_new(ea, json_pack("{s:s}", "address", addr));
        }
        char name[32], host[64];
        snprintf(name, sizeof(name), "consul:s%u", i);
        snprintf(host, sizeof(host), "s%u.test", i);
        json_array_append_new(clusters, json_pack("{s:s, s:o}", "name", name, "endpoints", ea));
        json_array_append_new(routes, json_pack("{s:s, s:{s:s}, s:s}", "name", name, "match",
                                                "host", host, "cluster", name));
    }
    return json_pack("{s:o, s:o}", "clusters", clusters, "routes", routes);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

TEST(cache_reuses_unchanged_clusters)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_cache *cache = xds_cache_new();
    json_t *v1 = big_view(1000, 10, -1), *v2 = big_view(1000, 10, 500);
    struct xds_view views[] = {{.label = "consul:x", .source = XDS_SRC_CONSUL, .view = v1}};
    struct wr_sbuf e = {0};

    double t0 = now_ms();
    struct xds_snapshot *s1 = build(BASE "}", views, 1, reg, cache, &e);
    double t1 = now_ms();
    if (s1 == NULL)
        FAIL("%s", e.p);
    ASSERT(s1->clusters[0]->wslots != NULL && s1->clusters[0]->n_wslots == 2);
    views[0].view = v2;
    struct xds_snapshot *s2 = build(BASE "}", views, 1, reg, cache, &e);
    double t2 = now_ms();
    if (s2 == NULL)
        FAIL("%s", e.p);
    fprintf(stderr, "1,000 services x 10 endpoints: first build %.1f ms, one change %.1f ms\n",
            t1 - t0, t2 - t1);
    unsigned same = 0;
    for (uint32_t i = 0; i < 1000; i++)
        same += s1->clusters[i] == s2->clusters[i];
    ASSERT_EQ(same, 999);
    ASSERT(s1->clusters[500] != s2->clusters[500]);
    /* the endpoint that did not change keeps its shared state entry */
    ASSERT(s1->clusters[500]->eps[1].st == s2->clusters[500]->eps[1].st);
    /* the old snapshot going away leaves the shared clusters alive in the new one */
    xds_snapshot_unref(s1);
    ASSERT_STREQ(s2->clusters[0]->name, "consul:s0");
    /* a cache clear (SIGHUP) builds everything again */
    xds_cache_clear(cache);
    struct xds_snapshot *s3 = build(BASE "}", views, 1, reg, cache, &e);
    ASSERT(s3 != NULL && s3->clusters[0] != s2->clusters[0]);
    xds_snapshot_unref(s2);
    xds_snapshot_unref(s3);
    xds_cache_free(cache);
    json_decref(v1);
    json_decref(v2);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
    wr_sbuf_dispose(&e);
}

static json_t *one_cluster_view(const char *route_cluster)
{
    return json_pack("{s:[{s:s, s:[{s:s}]}], s:[{s:s, s:{s:s}, s:s}]}", "clusters", "name",
                     "consul:a", "endpoints", "address", "127.0.0.1:7001", "routes", "name",
                     "consul:a", "match", "host", "a.test", "cluster", route_cluster);
}

static int slot_frees;

static void count_free(void *p)
{
    slot_frees++;
    free(p);
}

/* A build that fails after taking clusters from the cache gives them back untouched: the cache
 * still serves them, and the objects live on in the snapshots that hold them. */
TEST(cache_survives_failed_build)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_cache *cache = xds_cache_new();
    json_t *good = one_cluster_view("consul:a"), *bad = one_cluster_view("consul:nope");
    struct xds_view views[] = {{.label = "consul:x", .source = XDS_SRC_CONSUL, .view = good}};
    struct wr_sbuf e = {0};

    struct xds_snapshot *s1 = build(BASE "}", views, 1, reg, cache, &e);
    if (s1 == NULL)
        FAIL("%s", e.p);
    struct xds_cluster *cl = s1->clusters[0];
    ASSERT(cl->stats != NULL && cl->eps[0].st != NULL);
    views[0].view = bad;
    ASSERT(build(BASE "}", views, 1, reg, cache, &e) == NULL);
    ASSERT(strstr(e.p, "consul:x: routes[0].cluster: unknown cluster \"consul:nope\"") != NULL);
    /* the failed build must not have left a reference behind or dropped the cache's */
    ASSERT_EQ(atomic_load(&cl->refs), 2); /* s1 + the cache */
    xds_snapshot_unref(s1);
    ASSERT_EQ(atomic_load(&cl->refs), 1); /* the cache alone */
    views[0].view = good;
    struct xds_snapshot *s2 = build(BASE "}", views, 1, reg, cache, &e);
    ASSERT(s2 != NULL && s2->clusters[0] == cl);
    ASSERT_STREQ(s2->clusters[0]->eps[0].address, "127.0.0.1:7001");
    xds_snapshot_unref(s2);
    xds_cache_free(cache);
    json_decref(good);
    json_decref(bad);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
    wr_sbuf_dispose(&e);
}

/* The workers' per-cluster slots are freed once, with the cluster, whoever drops the last
 * reference: not when one of the snapshots sharing it goes, nor when the cache forgets it
 * (SIGHUP), while a snapshot still serves it. */
TEST(wslots_freed_with_the_last_reference)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_cache *cache = xds_cache_new();
    json_t *v = one_cluster_view("consul:a");
    struct xds_view views[] = {{.label = "consul:x", .source = XDS_SRC_CONSUL, .view = v}};
    struct wr_sbuf e = {0};

    struct xds_snapshot *s1 = build(BASE "}", views, 1, reg, cache, &e);
    struct xds_snapshot *s2 = build(BASE "}", views, 1, reg, cache, &e);
    ASSERT(s1 != NULL && s2 != NULL && s1->clusters[0] == s2->clusters[0]);
    struct xds_cluster *cl = s1->clusters[0];
    for (unsigned i = 0; i < cl->n_wslots; i++) {
        cl->wslots[i].p = malloc(16);
        cl->wslots[i].free_fn = count_free;
    }
    xds_snapshot_unref(s1);
    ASSERT_EQ(slot_frees, 0);
    xds_cache_clear(cache);
    ASSERT_EQ(slot_frees, 0);
    ASSERT_STREQ(s2->clusters[0]->name, "consul:a");
    xds_snapshot_unref(s2);
    ASSERT_EQ(slot_frees, 2);
    xds_cache_free(cache);
    json_decref(v);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
    wr_sbuf_dispose(&e);
}

/* A provider that hands the same objects over for what did not change: reused by identity. */
TEST(cache_reuses_view_objects_by_identity)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(1);
    struct xds_cache *cache = xds_cache_new();
    json_t *v1 = big_view(200, 3, -1);
    json_t *c1 = json_object_get(v1, "clusters");
    json_t *c2 = json_array();
    for (size_t i = 0; i < json_array_size(c1); i++)
        json_array_append(c2, json_array_get(c1, i));
    json_array_set_new(
        c2, 7,
        json_pack("{s:s, s:[{s:s}]}", "name", "consul:s7", "endpoints", "address", "10.9.9.9:80"));
    json_t *v2 = json_pack("{s:o, s:O}", "clusters", c2, "routes", json_object_get(v1, "routes"));
    struct xds_view views[] = {{.label = "consul:x", .source = XDS_SRC_CONSUL, .view = v1}};
    struct wr_sbuf e = {0};

    struct xds_snapshot *s1 = build(BASE "}", views, 1, reg, cache, &e);
    if (s1 == NULL)
        FAIL("%s", e.p);
    views[0].view = v2;
    struct xds_snapshot *s2 = build(BASE "}", views, 1, reg, cache, &e);
    if (s2 == NULL)
        FAIL("%s", e.p);
    for (uint32_t i = 0; i < 200; i++)
        ASSERT(i == 7 ? s1->clusters[i] != s2->clusters[i] : s1->clusters[i] == s2->clusters[i]);
    ASSERT_STREQ(s2->clusters[7]->eps[0].address, "10.9.9.9:80");
    /* the same object under another source is not the same cluster */
    views[0].source = XDS_SRC_KUBERNETES;
    struct xds_snapshot *s3 = build(BASE "}", views, 1, reg, cache, &e);
    ASSERT(s3 != NULL && s3->clusters[0] != s2->clusters[0]);
    ASSERT_EQ(s3->clusters[0]->source, XDS_SRC_KUBERNETES);
    xds_snapshot_unref(s1);
    xds_snapshot_unref(s2);
    xds_snapshot_unref(s3);
    xds_cache_free(cache);
    json_decref(v1);
    json_decref(v2);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
    wr_sbuf_dispose(&e);
}

TEST(endpoint_priority_and_health_keys)
{
    const char *file = BASE ", \"clusters\": [{\"name\": \"c\", \"endpoints\": ["
                            "{\"address\": \"127.0.0.1:1\", \"priority\": 2, \"health\": "
                            "\"draining\"}, {\"address\": \"127.0.0.1:2\", \"health\": \"sick\"},"
                            " {\"address\": \"127.0.0.1:3\", \"priority\": 128}]}]}";
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = build(file, NULL, 0, NULL, NULL, &e);

    ASSERT(s == NULL);
    ASSERT(strstr(e.p, "clusters[0].endpoints[1].health: must be \"healthy\" or \"draining\"") !=
           NULL);
    ASSERT(strstr(e.p, "clusters[0].endpoints[2].priority:") != NULL);
    wr_sbuf_dispose(&e);
}

/* ---- certificates from views ---- */

/* A fresh self-signed P-256 certificate for <cn>: PEM strings (heap). */
static void make_cert(const char *cn, char **cert_pem, char **key_pem)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    long n;

    ASSERT(key != NULL && x != NULL && b != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    ASSERT(X509_sign(x, key, EVP_sha256()) > 0);
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &p);
    *cert_pem = wr_xstrndup(p, (size_t)n);
    BIO_reset(b);
    PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &p);
    *key_pem = wr_xstrndup(p, (size_t)n);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* Handshakes in memory with the listener's context, asking for <sni>; returns the CN served. */
static char *served_cn(void *server_ctx, const char *sni)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *cl = SSL_new(cctx), *sv = SSL_new(server_ctx);
    BIO *c2s = BIO_new(BIO_s_mem()), *s2c = BIO_new(BIO_s_mem());
    char cn[256] = "";

    BIO_up_ref(c2s);
    BIO_up_ref(s2c);
    SSL_set_bio(cl, s2c, c2s);
    SSL_set_bio(sv, c2s, s2c);
    SSL_set_tlsext_host_name(cl, sni);
    SSL_set_connect_state(cl);
    SSL_set_accept_state(sv);
    for (int i = 0; i < 20 && (!SSL_is_init_finished(cl) || !SSL_is_init_finished(sv)); i++) {
        SSL_do_handshake(cl);
        SSL_do_handshake(sv);
    }
    X509 *peer = SSL_get1_peer_certificate(cl);
    if (peer != NULL)
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
    X509_free(peer);
    SSL_free(cl);
    SSL_free(sv);
    SSL_CTX_free(cctx);
    ERR_clear_error();
    return wr_xstrdup(cn);
}

TEST(view_certificates_served_by_sni_and_shared)
{
    char dir[] = "/tmp/xds_merge_test.XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char *crt = wr_xasprintf("%s/site.crt", dir), *keyf = wr_xasprintf("%s/site.key", dir);
    char *scert, *skey, *acert, *akey, *bcert, *bkey;
    make_cert("static.test", &scert, &skey);
    make_cert("a.test", &acert, &akey);
    make_cert("b.test", &bcert, &bkey);
    FILE *f = fopen(crt, "w");
    fputs(scert, f);
    fclose(f);
    f = fopen(keyf, "w");
    fputs(skey, f);
    fclose(f);
    char *file = wr_xasprintf("{\"listeners\": [{\"name\": \"s\", \"address\": "
                              "\"127.0.0.1:18997\", \"tls\": {\"certificates\": [{\"cert_file\": "
                              "\"%s\", \"key_file\": \"%s\"}]}}],"
                              " \"admin\": {\"address\": \"127.0.0.1:18998\"}}",
                              crt, keyf);
    json_t *v1 = json_pack("{s:[{s:[s, s], s:s, s:s}, {s:[s], s:s, s:s}, {s:[s], s:s, s:s}]}",
                           "certificates", "hosts", "a.test", "*.wild.test", "cert_pem", acert,
                           "key_pem", akey, "hosts", "static.test", "cert_pem", bcert, "key_pem",
                           bkey, "hosts", "bad.test", "cert_pem", "junk", "key_pem", "junk");
    struct xds_view views[] = {{.label = "kubernetes:x", .source = XDS_SRC_KUBERNETES, .view = v1}};
    struct xds_stats_reg *reg = xds_stats_reg_new(1);
    struct xds_cache *cache = xds_cache_new();
    struct wr_sbuf e = {0};

    struct xds_snapshot *s1 = build(file, views, 1, reg, cache, &e);
    if (s1 == NULL)
        FAIL("%s", e.p);
    void *ctx = s1->listeners[0].tls->ssl_ctx;
    char *got = served_cn(ctx, "a.test");
    ASSERT_STREQ(got, "a.test");
    free(got);
    got = served_cn(ctx, "x.wild.test");
    ASSERT_STREQ(got, "a.test");
    free(got);
    got = served_cn(ctx, "static.test"); /* the file's certificate keeps its name */
    ASSERT_STREQ(got, "static.test");
    free(got);
    got = served_cn(ctx, "other.test"); /* the default: the file's first */
    ASSERT_STREQ(got, "static.test");
    free(got);
    ASSERT(has_conflict(s1, "certificate for bad.test of kubernetes:x"));
    /* the same certificates: the same TLS object; another set: a new one */
    struct xds_snapshot *s2 = build(file, views, 1, reg, cache, &e);
    ASSERT(s2 != NULL && s2->listeners[0].tls == s1->listeners[0].tls);
    /* the note stays while the certificate is in the view, cached TLS object or not */
    ASSERT(has_conflict(s2, "certificate for bad.test of kubernetes:x"));
    ASSERT_EQ(s2->n_conflicts, 1);
    json_array_remove(json_object_get(v1, "certificates"), 2);
    struct xds_snapshot *s3 = build(file, views, 1, reg, cache, &e);
    ASSERT(s3 != NULL && s3->listeners[0].tls != s1->listeners[0].tls);
    ASSERT_EQ(s3->n_conflicts, 0);
    xds_snapshot_unref(s1);
    xds_snapshot_unref(s2);
    xds_snapshot_unref(s3);
    xds_cache_free(cache);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
    json_decref(v1);
    unlink(crt);
    unlink(keyf);
    rmdir(dir);
    free(crt);
    free(keyf);
    free(file);
    free(scert);
    free(skey);
    free(acert);
    free(akey);
    free(bcert);
    free(bkey);
    wr_sbuf_dispose(&e);
}
