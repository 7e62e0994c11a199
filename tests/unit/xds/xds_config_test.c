/* tests/unit/xds/xds_config_test.c -- the config file to snapshot (xds/xds_config*.c).
 *
 * Fixtures are inline JSON written with single quotes (turned into double quotes before
 * parsing) so that they stay readable. Each error case checks the exact error line.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

#define LISTENER "'listeners': [{'name': 'web', 'address': '127.0.0.1:8080'}]"

/* Returns a heap copy of <s> with every ' turned into ". */
static char *dq(const char *s)
{
    char *p = wr_xstrdup(s);

    for (char *q = p; *q != '\0'; q++)
        if (*q == '\'')
            *q = '"';
    return p;
}

static struct xds_snapshot *parse_with(const char *json, struct xds_stats_reg *reg,
                                       struct wr_sbuf *errs)
{
    char *text = dq(json);
    struct xds_snapshot *s = xds_config_parse(text, strlen(text), "weir.json", reg, 7, errs);

    free(text);
    return s;
}

/* Parses <json>, which must be valid. */
static struct xds_snapshot *ok(const char *json)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = parse_with(json, NULL, &e);

    if (s == NULL)
        FAIL("unexpected errors:\n%s", e.p ? e.p : "(none)");
    ASSERT_EQ(e.len, 0);
    return s;
}

static bool has_line(const char *buf, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = buf; p != NULL && (p = strstr(p, line)) != NULL; p++)
        if ((p == buf || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static unsigned count_lines(const char *buf)
{
    unsigned n = 0;

    for (; buf != NULL && *buf != '\0'; buf++)
        n += *buf == '\n';
    return n;
}

/* Parses <json>, which must be refused with (at least) the error line <line>. */
static void bad(const char *json, const char *line)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = parse_with(json, NULL, &e);

    if (s != NULL)
        FAIL("accepted, expected: %s", line);
    if (!has_line(e.p, line))
        FAIL("expected line\n  %s\ngot\n%s", line, e.p ? e.p : "(none)");
    wr_sbuf_dispose(&e);
}

/* A config with one listener plus <body> (members of the top-level object). */
static void bad_body(const char *body, const char *line)
{
    char *json = wr_xasprintf("{" LISTENER ", %s}", body);

    bad(json, line);
    free(json);
}

static struct xds_snapshot *ok_body(const char *body)
{
    char *json = wr_xasprintf("{" LISTENER "%s%s}", *body ? ", " : "", body);
    struct xds_snapshot *s = ok(json);

    free(json);
    return s;
}

/* Writes a fresh self-signed EC P-256 certificate for "localhost" and its key (generated at
 * test time: no key lives in the repository). */
static void write_test_cert(const char *crt_path, const char *key_path)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();

    ASSERT(key != NULL && x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, key);
    ASSERT(X509_sign(x, key, EVP_sha256()) > 0);
    FILE *f = fopen(crt_path, "w");
    ASSERT(f != NULL && PEM_write_X509(f, x) == 1);
    fclose(f);
    f = fopen(key_path, "w");
    ASSERT(f != NULL && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* Makes a temp dir with the files a full config refers to; returns its path. */
static char *make_files(void)
{
    char tmpl[] = "/tmp/xds_config_test.XXXXXX";
    char *dir = wr_xstrdup(mkdtemp(tmpl));
    char *crt = wr_xasprintf("%s/site.crt", dir), *key = wr_xasprintf("%s/site.key", dir);
    char *tok = wr_xasprintf("%s/token", dir);

    write_test_cert(crt, key);
    FILE *f = fopen(tok, "w");
    ASSERT(f != NULL);
    fputs("s3cr3t-token\n\n", f);
    fclose(f);
    free(crt);
    free(key);
    free(tok);
    return dir;
}

static void remove_files(char *dir)
{
    const char *names[] = {"site.crt", "site.key", "token", "weir.json", "empty"};

    for (size_t i = 0; i < WR_ARRAY_LEN(names); i++) {
        char *p = wr_xasprintf("%s/%s", dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
    free(dir);
}

/* INTERFACES.md §2's example, with the clusters it names declared and real cert files. */
static char *full_config(const char *dir)
{
    return wr_xasprintf(
        "{ 'workers': 0, 'drain_timeout_ms': 15000, 'drain_delay_ms': 0, 'access_log': '-',"
        "  'admin': { 'address': '127.0.0.1:9901', 'token_file': null },"
        "  'listeners': ["
        "    { 'name': 'web', 'address': '0.0.0.0:8080' },"
        "    { 'name': 'secure', 'address': '0.0.0.0:8443',"
        "      'tls': { 'certificates': [ { 'cert_file': '%s/site.crt', 'key_file': "
        "'%s/site.key' } ],"
        "               'alpn': ['h2', 'http/1.1'], 'min_version': '1.2' } } ],"
        "  'routes': ["
        "    { 'name': 'shop', 'match': { 'host': 'shop.example.com', 'path_prefix': '/' },"
        "      'rollout': 'shop' },"
        "    { 'name': 'api', 'match': { 'host': '*.example.com', 'path_prefix': '/api/',"
        "                 'headers': [ { 'name': 'x-beta', 'exact': '1' } ] },"
        "      'cluster': 'api' },"
        "    { 'name': 'split', 'match': { 'path_prefix': '/split/' },"
        "      'weighted_clusters': [ { 'cluster': 'a', 'weight': 90 }, { 'cluster': 'b', "
        "'weight': 10 } ] } ],"
        "  'clusters': ["
        "    { 'name': 'api', 'lb_policy': 'round_robin',"
        "      'endpoints': [ { 'address': '127.0.0.1:9001', 'weight': 1 },"
        "                     { 'address': '127.0.0.1:9002', 'weight': 3 } ],"
        "      'health_check': { 'type': 'http', 'path': '/healthz', 'interval_ms': 1000,"
        "                        'timeout_ms': 500, 'healthy_threshold': 2, "
        "'unhealthy_threshold': 2 } },"
        "    { 'name': 'search', 'lb_policy': 'least_request',"
        "      'health_check': { 'type': 'tcp', 'interval_ms': 2000, 'timeout_ms': 500,"
        "                        'healthy_threshold': 1, 'unhealthy_threshold': 3 } },"
        "    { 'name': 'shop-blue', 'endpoints': [ { 'address': '127.0.0.1:9101' } ] },"
        "    { 'name': 'shop-green', 'endpoints': [ { 'address': '127.0.0.1:9102' } ] },"
        "    { 'name': 'a', 'endpoints': [] }, { 'name': 'b', 'endpoints': [] } ],"
        "  'rollouts': ["
        "    { 'name': 'shop', 'blue': 'shop-blue', 'green': 'shop-green', 'green_weight': 0,"
        "      'sticky': true } ],"
        "  'discovery': ["
        "    { 'type': 'file',       'path': 'services.json' },"
        "    { 'type': 'dns_srv',    'name': '_http._tcp.search.example.internal', 'cluster': "
        "'search',"
        "                            'resolvers': ['127.0.0.1:5353'] },"
        "    { 'type': 'consul',     'address': 'http://127.0.0.1:8500', 'token_file': null },"
        "    { 'type': 'kubernetes', 'kubeconfig': null, 'ingress_class': 'weir', 'namespaces': "
        "[] } ] }",
        dir, dir);
}

TEST(full_example_parses)
{
    char *dir = make_files();
    char *json = full_config(dir);
    struct xds_snapshot *s = ok(json);

    ASSERT(s->workers >= 1);
    ASSERT_EQ(s->version, 7);
    ASSERT_STREQ(s->version_str, "7");
    ASSERT_STREQ(s->access_log, "-");
    ASSERT_EQ(s->n_listeners, 2);
    ASSERT(s->listeners[0].tls == NULL);
    ASSERT(s->listeners[1].tls != NULL);
    ASSERT_EQ(s->listeners[1].tls->n_certs, 1);
    ASSERT_EQ(s->listeners[1].tls->n_alpn, 2);
    ASSERT_STREQ(s->listeners[1].tls->alpn[0], "h2");
    ASSERT(s->listeners[1].tls->alpn[2] == NULL);
    ASSERT_EQ(s->listeners[1].tls->min_version, 2);

    ASSERT_EQ(s->n_routes, 3);
    const struct xds_route *shop = &s->routes[0], *api = &s->routes[1], *split = &s->routes[2];
    ASSERT_EQ(shop->action, XDS_ACT_ROLLOUT);
    ASSERT_EQ(shop->n_wc, 2);
    ASSERT_STREQ(shop->wc[0].cluster->name, "shop-blue");
    ASSERT_EQ(shop->wc[0].weight, 100);
    ASSERT_STREQ(shop->wc[1].cluster->name, "shop-green");
    ASSERT_EQ(shop->wc[1].weight, 0);
    ASSERT(shop->rollout == &s->rollouts[0]);
    ASSERT_STREQ(api->host, "*.example.com");
    ASSERT_EQ(api->path_kind, XDS_PATH_PREFIX);
    ASSERT_EQ(api->n_hdrs, 1);
    ASSERT_STREQ(api->hdrs[0].name, "x-beta");
    ASSERT_EQ(api->hdrs[0].kind, XDS_HDR_EXACT);
    ASSERT_EQ(api->action, XDS_ACT_CLUSTER);
    ASSERT_EQ(api->n_wc, 1);
    ASSERT_EQ(api->wc[0].weight, 1);
    ASSERT(api->wc[0].cluster == xds_cluster_find(s, "api"));
    ASSERT(split->host == NULL);
    ASSERT_EQ(split->action, XDS_ACT_WEIGHTED);
    ASSERT_EQ(split->n_wc, 2);
    ASSERT_EQ(split->wc_total, 100);

    ASSERT_EQ(s->n_clusters, 6);
    const struct xds_cluster *c = xds_cluster_find(s, "api");
    ASSERT(c != NULL && c == s->clusters[0]);
    ASSERT_EQ(c->n_eps, 2);
    ASSERT_EQ(c->total_weight, 4);
    ASSERT_STREQ(c->eps[1].address, "127.0.0.1:9002");
    ASSERT_EQ(c->hc.type, XDS_HC_HTTP);
    ASSERT_STREQ(c->hc.path, "/healthz");
    ASSERT_EQ(c->hc.interval_ms, 1000);
    ASSERT_EQ(c->hc.unhealthy_interval_ms, 1000);
    ASSERT_EQ(c->hc.timeout_ms, 500);
    ASSERT_EQ(c->hc.healthy_threshold, 2);
    const struct xds_cluster *search = xds_cluster_find(s, "search");
    ASSERT(search->is_template);
    ASSERT_EQ(search->n_eps, 0);
    ASSERT_EQ(search->lb_policy, XDS_LB_LEAST_REQUEST);
    ASSERT_EQ(search->hc.type, XDS_HC_TCP);
    ASSERT(!xds_cluster_find(s, "a")->is_template);
    ASSERT(xds_cluster_find(s, "nope") == NULL);

    const struct xds_rollout *ro = xds_rollout_find(s, "shop");
    ASSERT(ro != NULL && ro->sticky && ro->green_weight == 0);
    ASSERT_STREQ(ro->blue->name, "shop-blue");
    ASSERT(xds_rollout_find(s, "nope") == NULL);

    ASSERT_EQ(s->n_discovery, 4);
    ASSERT_EQ(s->discovery[0].type, XDS_SRC_FILE);
    ASSERT_STREQ(s->discovery[1].cluster, "search");
    ASSERT_EQ(s->discovery[1].n_resolvers, 1);
    ASSERT_EQ(s->discovery[2].type, XDS_SRC_CONSUL);
    ASSERT_STREQ(s->discovery[3].ingress_class, "weir");
    ASSERT(s->discovery[3].kubeconfig == NULL);
    ASSERT(s->vhosts != NULL);
    xds_snapshot_unref(s);
    free(json);
    remove_files(dir);
}

TEST(defaults_filled)
{
    struct xds_snapshot *s =
        ok_body("'routes': [{'name': 'r', 'cluster': 'c'}],"
                "'clusters': [{'name': 'c', 'endpoints': [{'address': 'localhost:80'}],"
                "  'outlier_detection': {}, 'health_check': {'type': 'http', 'path': '/'}}]");

    ASSERT(s->workers >= 1);
    ASSERT_EQ(s->drain_timeout_ms, 15000);
    ASSERT_EQ(s->drain_delay_ms, 0);
    ASSERT(s->access_log == NULL);
    ASSERT_STREQ(s->admin_address, "127.0.0.1:9901");
    ASSERT(s->admin_sslen > 0);
    ASSERT(s->admin_token == NULL && s->admin_token_file == NULL);
    ASSERT_EQ(s->client_header_timeout_ms, 10000);
    ASSERT_EQ(s->client_idle_timeout_ms, 60000);
    ASSERT_EQ(s->max_header_bytes, 65536);
    ASSERT_EQ(s->max_target_bytes, 8192);
    ASSERT(!s->listeners[0].h2c && !s->listeners[0].proxy_protocol);

    const struct xds_route *r = &s->routes[0];
    ASSERT(r->host == NULL);
    ASSERT_EQ(r->path_kind, XDS_PATH_ANY);
    ASSERT_EQ(r->timeout_ms, 15000);
    ASSERT_EQ(r->max_body_bytes, 0);
    ASSERT(!r->redirect_https && !r->hsts.enabled);

    const struct xds_cluster *c = s->clusters[0];
    ASSERT_STREQ(c->eps[0].address, "127.0.0.1:80");
    ASSERT_EQ(c->eps[0].weight, 1);
    ASSERT_EQ(c->lb_policy, XDS_LB_ROUND_ROBIN);
    ASSERT_EQ(c->hash_on, XDS_HASH_NONE);
    ASSERT_EQ(c->protocol, XDS_PROTO_HTTP1);
    ASSERT(!c->tls.enabled);
    ASSERT_EQ(c->source, XDS_SRC_STATIC);
    ASSERT_EQ(c->panic_percent, 50);
    ASSERT_EQ(c->connect_timeout_ms, 2000);
    ASSERT_EQ(c->idle_timeout_ms, 30000);
    ASSERT_EQ(c->max_idle, 1024);
    ASSERT_EQ(c->retries, 1);
    ASSERT(c->outlier.enabled);
    ASSERT_EQ(c->outlier.consecutive_5xx, 5);
    ASSERT_EQ(c->outlier.consecutive_gateway_failure, 5);
    ASSERT_EQ(c->outlier.base_ejection_ms, 30000);
    ASSERT_EQ(c->outlier.max_ejection_ms, 300000);
    ASSERT_EQ(c->outlier.max_ejection_percent, 10);
    ASSERT_STREQ(c->hc.method, "GET");
    ASSERT_EQ(c->hc.n_expected, 1);
    ASSERT_EQ(c->hc.expected[0][0], 200);
    ASSERT_EQ(c->hc.expected[0][1], 399);
    ASSERT_EQ(c->hc.interval_ms, 5000);
    ASSERT_EQ(c->hc.unhealthy_interval_ms, 5000);
    ASSERT_EQ(c->hc.timeout_ms, 1000);
    ASSERT_EQ(c->hc.healthy_threshold, 1);
    ASSERT_EQ(c->hc.unhealthy_threshold, 3);
    ASSERT_EQ(c->hc.jitter_percent, 10);
    ASSERT(c->hc.initial_healthy && !c->hc.tls);
    xds_snapshot_unref(s);

    /* No outlier_detection: off; no health_check: none. */
    s = ok_body("'clusters': [{'name': 'c', 'endpoints': []}]");
    ASSERT(!s->clusters[0]->outlier.enabled);
    ASSERT_EQ(s->clusters[0]->hc.type, XDS_HC_NONE);
    ASSERT_EQ(s->n_routes, 0);
    xds_snapshot_unref(s);
}

TEST(workers)
{
    bad("{'workers': -1, " LISTENER "}", "weir.json: workers: must be an integer >= 0");
    bad("{'workers': 'x', " LISTENER "}", "weir.json: workers: must be an integer >= 0");
    bad("{'workers': 1.5, " LISTENER "}", "weir.json: workers: must be an integer >= 0");
    bad("{'workers': 100000, " LISTENER "}", "weir.json: workers: must be at most 1024");
    struct xds_snapshot *s = ok("{'workers': 3, " LISTENER "}");
    ASSERT_EQ(s->workers, 3);
    xds_snapshot_unref(s);
    s = ok("{'workers': 0, " LISTENER "}");
    ASSERT_EQ(s->workers, sysconf(_SC_NPROCESSORS_ONLN));
    xds_snapshot_unref(s);
}

TEST(unknown_keys)
{
    bad("{'wokers': 1, " LISTENER "}", "weir.json: wokers: unknown key");
    bad_body("'routes': [{'name': 'r', 'cluster': 'c', 'match': {'hots': 'a.com'}}],"
             "'clusters': [{'name': 'c', 'endpoints': []}]",
             "weir.json: routes[0].match.hots: unknown key");
    bad_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '1.2.3.4:80', 'wieght': 2}]}]",
             "weir.json: clusters[0].endpoints[0].wieght: unknown key");
    bad_body("'admin': {'adress': '127.0.0.1:1'}", "weir.json: admin.adress: unknown key");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'tcp', 'path': '/'}}]",
             "weir.json: clusters[0].health_check.path: only applies to type \"http\"");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'tcp', 'pth': '/'}}]",
             "weir.json: clusters[0].health_check.pth: unknown key");
    bad_body("'discovery': [{'type': 'file', 'path': 'x', 'cluster': 'c'}]",
             "weir.json: discovery[0].cluster: unknown key");
}

TEST(syntax_error)
{
    struct wr_sbuf e = {0};

    ASSERT(xds_config_parse("{\n  \"workers\": ,\n}", 17, "weir.json", NULL, 1, &e) == NULL);
    ASSERT(strncmp(e.p, "weir.json: line 2 column ", 25) == 0);
    ASSERT_EQ(count_lines(e.p), 1);
    wr_sbuf_dispose(&e);
    bad("[1]", "weir.json: must be a JSON object");
    /* Duplicate keys would silently drop a setting. */
    ASSERT(xds_config_parse("{\"workers\": 1, \"workers\": 2}", 28, "weir.json", NULL, 1, &e) ==
           NULL);
    ASSERT(strstr(e.p, "duplicate") != NULL);
    wr_sbuf_dispose(&e);
}

TEST(types)
{
    bad("{'listeners': {}}", "weir.json: listeners: must be an array");
    bad("{'listeners': []}", "weir.json: listeners: must have at least one listener");
    bad("{}", "weir.json: listeners: is required");
    bad("{'listeners': [1]}", "weir.json: listeners[0]: must be an object");
    bad("{'listeners': [{'name': 5, 'address': '127.0.0.1:1'}]}",
        "weir.json: listeners[0].name: must be a string");
    bad("{'listeners': [{'name': '', 'address': '127.0.0.1:1'}]}",
        "weir.json: listeners[0].name: must not be empty");
    bad("{'listeners': [{'address': '127.0.0.1:1'}]}", "weir.json: listeners[0].name: is required");
    bad("{'listeners': [{'name': 'a', 'address': '127.0.0.1:1', 'h2c': 1}]}",
        "weir.json: listeners[0].h2c: must be true or false");
    bad_body("'access_log': 5", "weir.json: access_log: must be a string or null");
    bad_body("'drain_timeout_ms': -5", "weir.json: drain_timeout_ms: must be an integer >= 0");
    bad_body("'client_header_timeout_ms': 0",
             "weir.json: client_header_timeout_ms: must be an integer > 0");
    bad_body("'max_header_bytes': 10",
             "weir.json: max_header_bytes: must be an integer from 1024 to 1048576");
    bad_body("'routes': [{'name': 'r', 'cluster': 'c', 'timeout_ms': 0}],"
             "'clusters': [{'name': 'c'}]",
             "weir.json: routes[0].timeout_ms: must be an integer > 0");
}

TEST(bad_host)
{
    const char *hosts[] = {"a..b",     "*",      "*.",      "-a.com", "a-.com",  "exa mple.com",
                           "a.com:80", "*a.com", "a.*.com", "",       "x_y.com", "[::1]"};
    for (size_t i = 0; i < WR_ARRAY_LEN(hosts); i++) {
        char *body = wr_xasprintf("'routes': [{'name': 'ok', 'cluster': 'c'}, {'name': 'r', "
                                  "'cluster': 'c', 'match': {'host': '%s'}}],"
                                  "'clusters': [{'name': 'c'}]",
                                  hosts[i]);
        bad_body(body, "weir.json: routes[1].match.host: must be a host name or *.suffix");
        free(body);
    }
    struct xds_snapshot *s =
        ok_body("'routes': [{'name': 'a', 'cluster': 'c', 'match': {'host': 'Shop.Example.COM.'}},"
                "  {'name': 'b', 'cluster': 'c', 'match': {'host': '*.Example.com'}},"
                "  {'name': 'c', 'cluster': 'c', 'match': {'host': '10.0.0.1'}}],"
                "'clusters': [{'name': 'c'}]");
    ASSERT_STREQ(s->routes[0].host, "shop.example.com");
    ASSERT_STREQ(s->routes[1].host, "*.example.com");
    ASSERT_STREQ(s->routes[2].host, "10.0.0.1");
    xds_snapshot_unref(s);
}

TEST(duplicate_names)
{
    bad("{'listeners': [{'name': 'a', 'address': '127.0.0.1:1'}, {'name': 'a', 'address': "
        "'127.0.0.1:2'}]}",
        "weir.json: listeners[1].name: duplicate name \"a\"");
    bad_body("'routes': [{'name': 'r', 'cluster': 'c'}, {'name': 'r', 'cluster': 'c'}],"
             "'clusters': [{'name': 'c'}]",
             "weir.json: routes[1].name: duplicate name \"r\"");
    bad_body("'clusters': [{'name': 'c'}, {'name': 'c'}]",
             "weir.json: clusters[1].name: duplicate name \"c\"");
    bad_body("'clusters': [{'name': 'b'}, {'name': 'g'}],"
             "'rollouts': [{'name': 'x', 'blue': 'b', 'green': 'g'},"
             "  {'name': 'x', 'blue': 'b', 'green': 'g'}]",
             "weir.json: rollouts[1].name: duplicate name \"x\"");
    bad_body("'clusters': [{'name': 'a|b'}]",
             "weir.json: clusters[0].name: must not contain \"|\"");
}

TEST(route_actions)
{
    const char *cl = "'clusters': [{'name': 'c'}, {'name': 'd'}],"
                     "'rollouts': [{'name': 'ro', 'blue': 'c', 'green': 'd'}],";
    const char *line = "weir.json: routes[0]: must have exactly one of \"cluster\", "
                       "\"weighted_clusters\", \"rollout\"";
    char *body = wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'rollout': 'ro'}]", cl);
    bad_body(body, line);
    free(body);
    body = wr_xasprintf("%s 'routes': [{'name': 'r'}]", cl);
    bad_body(body, line);
    free(body);
    body =
        wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'weighted_clusters': []}]", cl);
    bad_body(body, line);
    free(body);
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'weighted_clusters': []}]",
             "weir.json: routes[0].weighted_clusters: must not be empty");
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'weighted_clusters': "
             "[{'cluster': 'c', 'weight': 0}]}]",
             "weir.json: routes[0].weighted_clusters[0].weight: must be an integer from 1 to "
             "1000000");
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'weighted_clusters': "
             "[{'cluster': 'c'}]}]",
             "weir.json: routes[0].weighted_clusters[0].weight: is required");
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'weighted_clusters': "
             "[{'cluster': 'c', 'weight': 1}, {'cluster': 'c', 'weight': 2}]}]",
             "weir.json: routes[0].weighted_clusters[1].cluster: cluster \"c\" is listed twice");
}

TEST(unknown_refs)
{
    bad_body("'routes': [{'name': 'r', 'cluster': 'x'}]",
             "weir.json: routes[0].cluster: unknown cluster \"x\"");
    bad_body("'clusters': [{'name': 'a'}], 'routes': [{'name': 'r', 'weighted_clusters': "
             "[{'cluster': 'a', 'weight': 1}, {'cluster': 'b', 'weight': 1}]}]",
             "weir.json: routes[0].weighted_clusters[1].cluster: unknown cluster \"b\"");
    bad_body("'routes': [{'name': 'r', 'rollout': 'x'}]",
             "weir.json: routes[0].rollout: unknown rollout \"x\"");
    bad_body("'clusters': [{'name': 'g'}], 'rollouts': [{'name': 'x', 'blue': 'b', 'green': 'g'}]",
             "weir.json: rollouts[0].blue: unknown cluster \"b\"");
    bad_body("'clusters': [{'name': 'g'}], 'rollouts': [{'name': 'x', 'blue': 'g', 'green': 'g'}]",
             "weir.json: rollouts[0].green: must differ from \"blue\"");
    bad_body("'clusters': [{'name': 'g'}, {'name': 'b'}], 'rollouts': [{'name': 'x', 'blue': "
             "'b', 'green': 'g', 'green_weight': 101}]",
             "weir.json: rollouts[0].green_weight: must be an integer from 0 to 100");
}

TEST(invalid_cluster_still_referable)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = parse_with("{" LISTENER ", 'clusters': [{'name': 'c', 'retries': 9}],"
                                        "'routes': [{'name': 'r', 'cluster': 'c'}]}",
                                        NULL, &e);
    ASSERT(s == NULL);
    ASSERT(has_line(e.p, "weir.json: clusters[0].retries: must be an integer from 0 to 5"));
    ASSERT_EQ(count_lines(e.p), 1); /* no "unknown cluster" on top */
    wr_sbuf_dispose(&e);
}

TEST(regex_errors)
{
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'cluster': 'c', "
             "'match': {'path_regex': '/(x'}}]",
             "weir.json: routes[0].match.path_regex: invalid regex at offset 3: missing closing "
             "parenthesis");
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'cluster': 'c', "
             "'match': {'headers': [{'name': 'x', 'regex': '[a'}]}}]",
             "weir.json: routes[0].match.headers[0].regex: invalid regex at offset 2: missing "
             "terminating ] for character class");
}

TEST(route_match_fields)
{
    const char *cl = "'clusters': [{'name': 'c'}], ";
    char *b = wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'match': "
                           "{'path_exact': '/a', 'path_prefix': '/b'}}]",
                           cl);
    bad_body(b, "weir.json: routes[0].match: must have at most one of \"path_exact\", "
                "\"path_prefix\", \"path_regex\"");
    free(b);
    b = wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'match': {'path_prefix': 'a'}}]",
                     cl);
    bad_body(b, "weir.json: routes[0].match.path_prefix: must start with \"/\"");
    free(b);
    b = wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'match': {'headers': "
                     "[{'name': 'x', 'exact': 'a', 'prefix': 'b'}]}}]",
                     cl);
    bad_body(b, "weir.json: routes[0].match.headers[0]: must have only one of \"exact\", "
                "\"prefix\", \"suffix\", \"contains\", \"regex\", \"present\"");
    free(b);
    b = wr_xasprintf("%s 'routes': [{'name': 'r', 'cluster': 'c', 'match': {'headers': "
                     "[{'name': 'bad name', 'exact': 'a'}]}}]",
                     cl);
    bad_body(b, "weir.json: routes[0].match.headers[0].name: must be a header name");
    free(b);

    struct xds_snapshot *s = ok_body(
        "'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'cluster': 'c', 'match': "
        "{'path_regex': '/u/[0-9]+', 'headers': [{'name': 'X-A'}, {'name': 'x-b', 'present': "
        "false}, {'name': 'x-c', 'suffix': 'z', 'invert': true}]}, 'hsts': {'max_age_s': "
        "31536000, 'include_subdomains': true, 'preload': true}, 'max_body_bytes': 1000000, "
        "'redirect_https': true}]");
    const struct xds_route *r = &s->routes[0];
    ASSERT_EQ(r->path_kind, XDS_PATH_REGEX);
    ASSERT(r->re != NULL);
    ASSERT_EQ(r->n_hdrs, 3);
    ASSERT_STREQ(r->hdrs[0].name, "x-a");
    ASSERT_EQ(r->hdrs[0].name_len, 3);
    ASSERT_EQ(r->hdrs[0].kind, XDS_HDR_PRESENT);
    ASSERT(!r->hdrs[0].invert);
    ASSERT_EQ(r->hdrs[1].kind, XDS_HDR_PRESENT);
    ASSERT(r->hdrs[1].invert);
    ASSERT_EQ(r->hdrs[2].kind, XDS_HDR_SUFFIX);
    ASSERT_STREQ(r->hdrs[2].value, "z");
    ASSERT(r->hdrs[2].invert);
    ASSERT(r->hsts.enabled);
    ASSERT_STREQ(r->hsts.header_value, "max-age=31536000; includeSubDomains; preload");
    ASSERT_EQ(r->max_body_bytes, 1000000);
    ASSERT(r->redirect_https);
    xds_snapshot_unref(s);

    s = ok_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'cluster': 'c', "
                "'hsts': {'max_age_s': 600}}]");
    ASSERT_STREQ(s->routes[0].hsts.header_value, "max-age=600");
    xds_snapshot_unref(s);
    bad_body("'clusters': [{'name': 'c'}], 'routes': [{'name': 'r', 'cluster': 'c', "
             "'hsts': {}}]",
             "weir.json: routes[0].hsts.max_age_s: is required");
}

TEST(rollout_route_weights)
{
    struct xds_snapshot *s =
        ok_body("'clusters': [{'name': 'b'}, {'name': 'g'}], 'rollouts': [{'name': 'x', 'blue': "
                "'b', 'green': 'g', 'green_weight': 30}], 'routes': [{'name': 'r', 'rollout': "
                "'x'}]");
    const struct xds_route *r = &s->routes[0];
    ASSERT_EQ(r->n_wc, 2);
    ASSERT_EQ(r->wc[0].weight, 70);
    ASSERT_EQ(r->wc[1].weight, 30);
    ASSERT_EQ(r->wc_total, 100);
    ASSERT(!s->rollouts[0].sticky);
    xds_snapshot_unref(s);
}

TEST(addresses)
{
    bad("{'listeners': [{'name': 'a', 'address': 'nonsense'}]}",
        "weir.json: listeners[0].address: must be host:port or [ipv6]:port");
    bad("{'listeners': [{'name': 'a', 'address': 'example.com:80'}]}",
        "weir.json: listeners[0].address: host must be a numeric IPv4 address, [IPv6] address or "
        "localhost");
    bad("{'listeners': [{'name': 'a', 'address': '0.0.0.0:8080'}, {'name': 'b', 'address': "
        "'*:8080'}]}",
        "weir.json: listeners[1].address: listeners[0] has the same address");
    bad_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '1.2.3.4:99999'}]}]",
             "weir.json: clusters[0].endpoints[0].address: port must be a number from 0 to 65535");
    bad_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '1.2.3.4:0'}]}]",
             "weir.json: clusters[0].endpoints[0].address: port must be a number from 1 to 65535");
    bad_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '[::1]:80'}, {'address': "
             "'[0:0::1]:80'}]}]",
             "weir.json: clusters[0].endpoints[1].address: duplicate endpoint \"[::1]:80\"");
    bad_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '1.2.3.4:1', 'weight': 0}]}]",
             "weir.json: clusters[0].endpoints[0].weight: must be an integer from 1 to 10000");

    struct xds_snapshot *s =
        ok_body("'clusters': [{'name': 'c', 'endpoints': [{'address': '[0:0::1]:8080', "
                "'weight': 10000}]}]");
    ASSERT_STREQ(s->clusters[0]->eps[0].address, "[::1]:8080");
    ASSERT_EQ(s->clusters[0]->total_weight, 10000);
    xds_snapshot_unref(s);
}

TEST(admin_token)
{
    char *dir = make_files();
    char *body;

    bad_body("'admin': {'address': '0.0.0.0:9901'}",
             "weir.json: admin.address: must be a loopback address unless admin.token_file is "
             "set");
    bad_body("'admin': {'address': '[::]:9901', 'token_file': null}",
             "weir.json: admin.address: must be a loopback address unless admin.token_file is "
             "set");
    struct xds_snapshot *s = ok_body("'admin': {'address': '[::1]:9901'}");
    xds_snapshot_unref(s);
    s = ok_body("'admin': {'address': '127.1.2.3:9901'}");
    xds_snapshot_unref(s);

    body = wr_xasprintf("'admin': {'address': '0.0.0.0:9901', 'token_file': '%s/token'}", dir);
    s = ok_body(body);
    ASSERT_STREQ(s->admin_token, "s3cr3t-token");
    ASSERT(strstr(s->admin_token_file, "/token") != NULL);
    xds_snapshot_unref(s);
    free(body);

    body = wr_xasprintf("'admin': {'token_file': '%s/missing'}", dir);
    char *line = wr_xasprintf("weir.json: admin.token_file: cannot read \"%s/missing\": No such "
                              "file or directory",
                              dir);
    bad_body(body, line);
    free(body);
    free(line);

    char *empty = wr_xasprintf("%s/empty", dir);
    FILE *f = fopen(empty, "w");
    fputs(" \n", f);
    fclose(f);
    body = wr_xasprintf("'admin': {'token_file': '%s'}", empty);
    line = wr_xasprintf("weir.json: admin.token_file: \"%s\" is empty", empty);
    bad_body(body, line);
    free(body);
    free(line);
    free(empty);
    remove_files(dir);
}

TEST(listener_tls)
{
    char *dir = make_files();
    char *body = wr_xasprintf("'listeners': [{'name': 's', 'address': '127.0.0.1:1', 'tls': "
                              "{'certificates': [{'cert_file': '%s/nope.crt', 'key_file': "
                              "'%s/site.key'}], 'alpn': ['h3'], 'min_version': '1.1'}}]",
                              dir, dir);
    char *json = wr_xasprintf("{%s}", body);
    struct wr_sbuf e = {0};

    ASSERT(parse_with(json, NULL, &e) == NULL);
    char *line = wr_xasprintf("weir.json: listeners[0].tls.certificates[0].cert_file: cannot "
                              "read \"%s/nope.crt\": No such file or directory",
                              dir);
    ASSERT(has_line(e.p, line));
    ASSERT(has_line(e.p, "weir.json: listeners[0].tls.alpn[0]: must be \"h2\" or \"http/1.1\""));
    ASSERT(has_line(e.p, "weir.json: listeners[0].tls.min_version: must be \"1.2\" or \"1.3\""));
    ASSERT_EQ(count_lines(e.p), 3);
    wr_sbuf_dispose(&e);
    free(line);
    free(json);
    free(body);

    bad("{'listeners': [{'name': 's', 'address': '127.0.0.1:1', 'tls': {'certificates': []}}]}",
        "weir.json: listeners[0].tls.certificates: must have at least one certificate");
    bad("{'listeners': [{'name': 's', 'address': '127.0.0.1:1', 'tls': {}}]}",
        "weir.json: listeners[0].tls.certificates: is required");
    json = wr_xasprintf("{'listeners': [{'name': 's', 'address': '127.0.0.1:1', 'tls': "
                        "{'certificates': [{'cert_file': '%s', 'key_file': '%s/site.key'}]}}]}",
                        dir, dir);
    line = wr_xasprintf("weir.json: listeners[0].tls.certificates[0].cert_file: \"%s\" is not a "
                        "regular file",
                        dir);
    bad(json, line);
    free(json);
    free(line);

    json = wr_xasprintf("{'listeners': [{'name': 's', 'address': '127.0.0.1:1', 'tls': "
                        "{'certificates': [{'cert_file': '%s/site.crt', 'key_file': "
                        "'%s/site.key'}], 'alpn': ['http/1.1'], 'min_version': '1.3'}}]}",
                        dir, dir);
    struct xds_snapshot *s = ok(json);
    ASSERT_EQ(s->listeners[0].tls->n_alpn, 1);
    ASSERT_STREQ(s->listeners[0].tls->alpn[0], "http/1.1");
    ASSERT_EQ(s->listeners[0].tls->min_version, 3);
    xds_snapshot_unref(s);
    free(json);
    remove_files(dir);
}

TEST(ring_hash)
{
    bad_body("'clusters': [{'name': 'c', 'lb_policy': 'ring_hash'}]",
             "weir.json: clusters[0].hash_on: is required for lb_policy \"ring_hash\"");
    bad_body("'clusters': [{'name': 'c', 'hash_on': 'source_ip'}]",
             "weir.json: clusters[0].hash_on: only applies to lb_policy \"ring_hash\"");
    bad_body("'clusters': [{'name': 'c', 'lb_policy': 'ring_hash', 'hash_on': {'query': 'x'}}]",
             "weir.json: clusters[0].hash_on: must be \"source_ip\", {\"header\": NAME} or "
             "{\"cookie\": NAME}");
    bad_body("'clusters': [{'name': 'c', 'lb_policy': 'fastest'}]",
             "weir.json: clusters[0].lb_policy: must be \"round_robin\", \"least_request\", "
             "\"ring_hash\" or \"random\"");
    struct xds_snapshot *s =
        ok_body("'clusters': [{'name': 'a', 'lb_policy': 'ring_hash', 'hash_on': 'source_ip'},"
                "{'name': 'b', 'lb_policy': 'ring_hash', 'hash_on': {'header': 'X-User'}},"
                "{'name': 'c', 'lb_policy': 'ring_hash', 'hash_on': {'cookie': 'Sess'}},"
                "{'name': 'd', 'lb_policy': 'random'}]");
    ASSERT_EQ(s->clusters[0]->hash_on, XDS_HASH_SOURCE_IP);
    ASSERT_EQ(s->clusters[1]->hash_on, XDS_HASH_HEADER);
    ASSERT_STREQ(s->clusters[1]->hash_name, "x-user");
    ASSERT_EQ(s->clusters[2]->hash_on, XDS_HASH_COOKIE);
    ASSERT_STREQ(s->clusters[2]->hash_name, "Sess");
    ASSERT_EQ(s->clusters[3]->lb_policy, XDS_LB_RANDOM);
    xds_snapshot_unref(s);
}

TEST(cluster_options)
{
    bad_body("'clusters': [{'name': 'c', 'protocol': 'h3'}]",
             "weir.json: clusters[0].protocol: must be \"http1\", \"h2\" or \"h2c\"");
    bad_body("'clusters': [{'name': 'c', 'protocol': 'h2c', 'tls': {}}]",
             "weir.json: clusters[0].tls: does not apply to protocol \"h2c\" (cleartext)");
    bad_body("'clusters': [{'name': 'c', 'panic_percent': 101}]",
             "weir.json: clusters[0].panic_percent: must be an integer from 0 to 100");
    bad_body("'clusters': [{'name': 'c', 'outlier_detection': {'base_ejection_ms': 10, "
             "'max_ejection_ms': 5}}]",
             "weir.json: clusters[0].outlier_detection.max_ejection_ms: must be >= "
             "base_ejection_ms");
    bad_body("'clusters': [{'name': 'c', 'tls': {'ca_file': '/nonexistent/ca.pem'}}]",
             "weir.json: clusters[0].tls.ca_file: cannot read \"/nonexistent/ca.pem\": No such "
             "file or directory");
    struct xds_snapshot *s =
        ok_body("'clusters': [{'name': 'a', 'protocol': 'h2'}, {'name': 'b', 'protocol': 'h2c', "
                "'max_idle': 0, 'retries': 0, 'connect_timeout_ms': 50, 'idle_timeout_ms': 70},"
                "{'name': 'c', 'tls': {'sni': 'up.example', 'verify': false}}]");
    ASSERT_EQ(s->clusters[0]->protocol, XDS_PROTO_H2);
    ASSERT(s->clusters[0]->tls.enabled && s->clusters[0]->tls.verify);
    ASSERT(!s->clusters[1]->tls.enabled);
    ASSERT_EQ(s->clusters[1]->max_idle, 0);
    ASSERT_EQ(s->clusters[1]->retries, 0);
    ASSERT_EQ(s->clusters[1]->connect_timeout_ms, 50);
    ASSERT_EQ(s->clusters[1]->idle_timeout_ms, 70);
    ASSERT(s->clusters[2]->tls.enabled && !s->clusters[2]->tls.verify);
    ASSERT_STREQ(s->clusters[2]->tls.sni, "up.example");
    ASSERT(s->clusters[0]->is_template);
    xds_snapshot_unref(s);
}

TEST(health_checks)
{
    bad_body("'clusters': [{'name': 'c', 'health_check': {}}]",
             "weir.json: clusters[0].health_check.type: is required");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'udp'}}]",
             "weir.json: clusters[0].health_check.type: must be \"http\", \"tcp\" or \"grpc\"");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'http'}}]",
             "weir.json: clusters[0].health_check.path: is required");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'http', 'path': 'x'}}]",
             "weir.json: clusters[0].health_check.path: must start with \"/\"");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'http', 'path': '/', "
             "'expected_statuses': [[300, 200]]}}]",
             "weir.json: clusters[0].health_check.expected_statuses[0]: must be [LOW, HIGH] with "
             "100 <= LOW <= HIGH <= 599");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'grpc', 'timeout_ms': 0}}]",
             "weir.json: clusters[0].health_check.timeout_ms: must be an integer > 0");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'grpc', 'jitter_percent': "
             "101}}]",
             "weir.json: clusters[0].health_check.jitter_percent: must be an integer from 0 to "
             "100");
    bad_body("'clusters': [{'name': 'c', 'health_check': {'type': 'tcp', 'initial_state': "
             "'up'}}]",
             "weir.json: clusters[0].health_check.initial_state: must be \"healthy\" or "
             "\"unhealthy\"");
    struct xds_snapshot *s = ok_body(
        "'clusters': [{'name': 'a', 'health_check': {'type': 'http', 'path': '/h', 'method': "
        "'HEAD', 'host': 'h.example', 'expected_statuses': [[200, 204], 302], 'body_contains': "
        "'ok', 'interval_ms': 100, 'unhealthy_interval_ms': 50, 'initial_state': 'unhealthy', "
        "'tls': true}},"
        "{'name': 'b', 'health_check': {'type': 'tcp', 'send': 'PING', 'expect': 'PONG'}},"
        "{'name': 'c', 'health_check': {'type': 'grpc'}}]");
    const struct xds_health_check *h = &s->clusters[0]->hc;
    ASSERT_STREQ(h->method, "HEAD");
    ASSERT_STREQ(h->host, "h.example");
    ASSERT_EQ(h->n_expected, 2);
    ASSERT_EQ(h->expected[1][0], 302);
    ASSERT_EQ(h->expected[1][1], 302);
    ASSERT_STREQ(h->body_contains, "ok");
    ASSERT_EQ(h->interval_ms, 100);
    ASSERT_EQ(h->unhealthy_interval_ms, 50);
    ASSERT(!h->initial_healthy && h->tls);
    ASSERT_STREQ(s->clusters[1]->hc.send, "PING");
    ASSERT_STREQ(s->clusters[1]->hc.expect, "PONG");
    ASSERT_EQ(s->clusters[2]->hc.type, XDS_HC_GRPC);
    ASSERT_STREQ(s->clusters[2]->hc.service, "");
    xds_snapshot_unref(s);
}

TEST(discovery)
{
    bad_body("'discovery': [{'type': 'zookeeper'}]",
             "weir.json: discovery[0].type: must be \"file\", \"dns_srv\", \"consul\" or "
             "\"kubernetes\"");
    bad_body("'discovery': [{'path': 'x'}]", "weir.json: discovery[0].type: is required");
    bad_body("'discovery': [{'type': 'file'}]", "weir.json: discovery[0].path: is required");
    bad_body("'discovery': [{'type': 'dns_srv', 'name': '_x._tcp.a', 'cluster': 'c', "
             "'resolvers': ['dns.example']}]",
             "weir.json: discovery[0].resolvers[0]: must be host:port or [ipv6]:port");
    bad_body("'discovery': [{'type': 'dns_srv', 'name': '_x._tcp.a', 'cluster': 'c'}, "
             "{'type': 'dns_srv', 'name': '_y._tcp.a', 'cluster': 'c'}]",
             "weir.json: discovery[1].cluster: cluster \"c\" is already filled by discovery[0]");
    bad_body("'discovery': [{'type': 'consul', 'address': '127.0.0.1:8500'}]",
             "weir.json: discovery[0].address: must be an http:// or https:// URL");
    bad_body("'discovery': [{'type': 'kubernetes', 'namespaces': ['a', 3]}]",
             "weir.json: discovery[0].namespaces[1]: must be a non-empty string");
    struct xds_snapshot *s =
        ok_body("'discovery': [{'type': 'kubernetes', 'namespaces': ['a', 'b'], 'kubeconfig': "
                "'/k'}, {'type': 'dns_srv', 'name': '_x._tcp.a', 'cluster': 'c'}]");
    ASSERT_EQ(s->discovery[0].type, XDS_SRC_KUBERNETES);
    ASSERT_EQ(s->discovery[0].n_namespaces, 2);
    ASSERT_STREQ(s->discovery[0].namespaces[1], "b");
    ASSERT_STREQ(s->discovery[0].kubeconfig, "/k");
    ASSERT_STREQ(s->discovery[0].ingress_class, "weir");
    ASSERT_EQ(s->discovery[1].n_resolvers, 0);
    xds_snapshot_unref(s);
}

TEST(discovery_kubernetes_publish)
{
    bad_body("'discovery': [{'type': 'kubernetes', 'publish_address': '203.0.113.10,bad_name'}]",
             "weir.json: discovery[0].publish_address: \"bad_name\" must be an IP address or a "
             "host name (comma-separated)");
    bad_body("'discovery': [{'type': 'kubernetes', 'publish_service': 'weir'}]",
             "weir.json: discovery[0].publish_service: must be \"namespace/name\"");
    bad_body("'discovery': [{'type': 'kubernetes', 'publish_service': 'a/b', "
             "'publish_address': '10.0.0.1'}]",
             "weir.json: discovery[0].publish_service: must not be set with \"publish_address\"");
    bad_body("'discovery': [{'type': 'consul', 'address': 'http://x', 'publish_address': 'a'}]",
             "weir.json: discovery[0].publish_address: unknown key");
    struct xds_snapshot *s =
        ok_body("'discovery': [{'type': 'kubernetes', 'publish_address': '203.0.113.10,2001:db8::1,"
                "lb.example.com'}, {'type': 'kubernetes', 'publish_service': 'weir/weir'}]");
    ASSERT_STREQ(s->discovery[0].publish_address, "203.0.113.10,2001:db8::1,lb.example.com");
    ASSERT(s->discovery[0].publish_service == NULL);
    ASSERT_STREQ(s->discovery[1].publish_service, "weir/weir");
    xds_snapshot_unref(s);
}

TEST(multiple_errors_all_reported)
{
    struct wr_sbuf e = {0};
    struct xds_snapshot *s =
        parse_with("{'workers': -1, 'bogus': 1,"
                   " 'listeners': [{'name': 'a', 'address': 'x'}, {'name': 'a', 'address': "
                   "'127.0.0.1:1'}],"
                   " 'clusters': [{'name': 'c', 'lb_policy': 'ring_hash'}],"
                   " 'routes': [{'name': 'r', 'cluster': 'zz', 'match': {'host': 'a b'}}]}",
                   NULL, &e);

    ASSERT(s == NULL);
    ASSERT(has_line(e.p, "weir.json: workers: must be an integer >= 0"));
    ASSERT(has_line(e.p, "weir.json: bogus: unknown key"));
    ASSERT(has_line(e.p, "weir.json: listeners[0].address: must be host:port or [ipv6]:port"));
    ASSERT(has_line(e.p, "weir.json: listeners[1].name: duplicate name \"a\""));
    ASSERT(has_line(e.p, "weir.json: clusters[0].hash_on: is required for lb_policy "
                         "\"ring_hash\""));
    ASSERT(has_line(e.p, "weir.json: routes[0].match.host: must be a host name or *.suffix"));
    ASSERT(has_line(e.p, "weir.json: routes[0].cluster: unknown cluster \"zz\""));
    ASSERT_EQ(count_lines(e.p), 7);
    wr_sbuf_dispose(&e);
}

TEST(config_json)
{
    char *dir = make_files();
    char *json = wr_xasprintf(
        "{" LISTENER ", 'admin': {'address': '0.0.0.0:9901', 'token_file': '%s/token'},"
        "'clusters': [{'name': 'c', 'endpoints': [{'address': '[0::1]:80'}]}, {'name': 't'}],"
        "'routes': [{'name': 'r', 'cluster': 'c'}]}",
        dir);
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = parse_with(json, NULL, &e);

    ASSERT(s != NULL);
    ASSERT(xds_snapshot_config_json(s) != NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "\"version\": \"7\"") != NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "s3cr3t") == NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "/token\"") != NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "\"[::1]:80\"") != NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "\"timeout_ms\": 15000") != NULL);
    ASSERT(strstr(xds_snapshot_config_json(s), "\"panic_percent\": 50") != NULL);
    /* The rendered config is itself a valid config once "version" is dropped. */
    char *copy = wr_xstrdup(xds_snapshot_config_json(s));
    char *v = strstr(copy, "\"version\"");
    memset(v, ' ', strlen("\"version\": \"7\","));
    struct xds_snapshot *again = xds_config_parse(copy, strlen(copy), "dump", NULL, 8, &e);
    if (again == NULL)
        FAIL("%s", e.p);
    ASSERT(again->clusters[1]->is_template);
    ASSERT(strstr(xds_snapshot_config_json(again), "\"version\": \"8\"") != NULL);
    xds_snapshot_unref(again);
    free(copy);
    xds_snapshot_unref(s);
    free(json);
    remove_files(dir);
}

TEST(load_resolves_relative_paths)
{
    char *dir = make_files();
    char *path = wr_xasprintf("%s/weir.json", dir);
    char *json = dq("{'listeners': [{'name': 's', 'address': '127.0.0.1:8443', 'tls': "
                    "{'certificates': [{'cert_file': 'site.crt', 'key_file': 'site.key'}]}}],"
                    "'access_log': 'access.log', 'admin': {'token_file': 'token'}}");
    FILE *f = fopen(path, "w");
    struct wr_sbuf e = {0};

    fputs(json, f);
    fclose(f);
    struct xds_snapshot *s = xds_config_load(path, NULL, 3, &e);
    if (s == NULL)
        FAIL("%s", e.p);
    char *crt = wr_xasprintf("%s/site.crt", dir), *log = wr_xasprintf("%s/access.log", dir);
    ASSERT_STREQ(s->listeners[0].tls->certs[0].cert_file, crt);
    ASSERT_STREQ(s->access_log, log);
    ASSERT_STREQ(s->admin_token, "s3cr3t-token");
    ASSERT_EQ(s->version, 3);
    xds_snapshot_unref(s);

    /* Errors name the file as given. */
    char *missing = wr_xasprintf("%s/none.json", dir);
    ASSERT(xds_config_load(missing, NULL, 1, &e) == NULL);
    char *line = wr_xasprintf("%s: cannot read: No such file or directory", missing);
    ASSERT(has_line(e.p, line));
    wr_sbuf_dispose(&e);
    free(line);
    free(missing);
    free(crt);
    free(log);
    free(json);
    free(path);
    remove_files(dir);
}

TEST(stats_linked_with_registry)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct wr_sbuf e = {0};
    struct xds_snapshot *s =
        parse_with("{" LISTENER ", 'clusters': [{'name': 'c', 'endpoints': [{'address': "
                   "'127.0.0.1:1'}]}, {'name': 'd'}], 'rollouts': [{'name': 'ro', 'blue': 'c', "
                   "'green': 'd'}], 'routes': [{'name': 'r', 'rollout': 'ro'}]}",
                   reg, &e);

    ASSERT(s != NULL);
    ASSERT(s->reg == reg);
    ASSERT(s->listeners[0].stats != NULL);
    ASSERT_STREQ(s->listeners[0].stats->key, "listener|web");
    ASSERT_EQ(s->listeners[0].stats->ncounters, 2);
    ASSERT_STREQ(s->clusters[0]->stats->key, "cluster|c");
    ASSERT_EQ(s->clusters[0]->stats->ncounters, XDS_CS_COUNT);
    ASSERT_STREQ(s->clusters[0]->eps[0].st->key, "c|127.0.0.1:1");
    ASSERT_EQ(s->clusters[0]->eps[0].st->nworkers, 2);
    ASSERT_STREQ(s->rollouts[0].stats->key, "rollout|ro");
    ASSERT_EQ(s->rollouts[0].stats->ncounters, 10);
    ASSERT_STREQ(s->routes[0].wc[0].stats->key, "rc|r|c");
    ASSERT_STREQ(s->routes[0].wc[1].stats->key, "rc|r|d");
    ASSERT_EQ(s->routes[0].wc[1].stats->ncounters, 5);
    ASSERT_STREQ(s->routes[0].hist->key, "hist|r");
    ASSERT_EQ(s->routes[0].hist->ncounters, XDS_HIST_BUCKETS + 2);
    xds_snapshot_unref(s);

    /* Without a registry (--check), nothing is linked. */
    s = parse_with("{" LISTENER ", 'clusters': [{'name': 'c', 'endpoints': [{'address': "
                   "'127.0.0.1:1'}]}], 'routes': [{'name': 'r', 'cluster': 'c'}]}",
                   NULL, &e);
    ASSERT(s->listeners[0].stats == NULL && s->clusters[0]->eps[0].st == NULL);
    ASSERT(s->routes[0].hist == NULL && s->routes[0].wc[0].stats == NULL);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}

TEST(invalid_config_links_nothing)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(1);
    struct wr_sbuf e = {0};

    ASSERT(parse_with("{" LISTENER ", 'workers': -1, 'clusters': [{'name': 'c', 'endpoints': "
                      "[{'address': '127.0.0.1:1'}]}]}",
                      reg, &e) == NULL);
    wr_sbuf_dispose(&e);
    /* The registry has no entry: asking creates a fresh one, held only by us and it. */
    struct xds_ep_state *st = xds_stats_ep(reg, "c|127.0.0.1:1");
    ASSERT_EQ(atomic_load(&st->refs), 2);
    xds_ep_state_unref(st);
    xds_stats_reg_free(reg);
}

TEST(names_of_enums)
{
    ASSERT_STREQ(xds_source_name(XDS_SRC_STATIC), "static");
    ASSERT_STREQ(xds_source_name(XDS_SRC_FILE), "file");
    ASSERT_STREQ(xds_source_name(XDS_SRC_DNS_SRV), "dns_srv");
    ASSERT_STREQ(xds_source_name(XDS_SRC_CONSUL), "consul");
    ASSERT_STREQ(xds_source_name(XDS_SRC_KUBERNETES), "kubernetes");
    ASSERT_STREQ(xds_lb_policy_name(XDS_LB_ROUND_ROBIN), "round_robin");
    ASSERT_STREQ(xds_lb_policy_name(XDS_LB_LEAST_REQUEST), "least_request");
    ASSERT_STREQ(xds_lb_policy_name(XDS_LB_RING_HASH), "ring_hash");
    ASSERT_STREQ(xds_lb_policy_name(XDS_LB_RANDOM), "random");
    ASSERT(xds_hist_bounds[0] == 0.0005 && xds_hist_bounds[XDS_HIST_BUCKETS - 1] == 10);
    for (int i = 1; i < XDS_HIST_BUCKETS; i++)
        ASSERT(xds_hist_bounds[i] > xds_hist_bounds[i - 1]);
}
