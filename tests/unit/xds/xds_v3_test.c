/* tests/unit/xds/xds_v3_test.c -- the snapshot as Envoy xDS v3 REST-JSON (xds/xds_v3*.c).
 *
 * Each test builds a snapshot from an inline config (single quotes turned into double ones),
 * asks xds_v3_discovery() for one type and checks the DiscoveryResponse value by value, using
 * paths like "resources/0/filter_chains/0/filters/0/typed_config/@type". That the whole output
 * is accepted by a strict protobuf JSON parser of Envoy's protos is checked by
 * tests/integration/57-xds-v3.py (schema of every message) and docs/xds.md (how to run the
 * real parser).
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

/* The one place that knows how the snapshot stores its clusters (see xds/xds_v3.c). */
#define CL(s, i) ((s)->clusters[i])

#define LISTENER "'listeners': [{'name': 'web', 'address': '127.0.0.1:8080'}]"

static char *dq(const char *s)
{
    char *p = wr_xstrdup(s);

    for (char *q = p; *q != '\0'; q++)
        if (*q == '\'')
            *q = '"';
    return p;
}

static struct xds_snapshot *snap_reg(const char *json, struct xds_stats_reg *reg)
{
    struct wr_sbuf e = {0};
    char *text = dq(json);
    struct xds_snapshot *s = xds_config_parse(text, strlen(text), "weir.json", reg, 7, &e);

    if (s == NULL)
        FAIL("unexpected config errors:\n%s", e.p ? e.p : "(none)");
    free(text);
    wr_sbuf_dispose(&e);
    return s;
}

static struct xds_snapshot *snap(const char *json)
{
    return snap_reg(json, NULL);
}

/* Asks <type> with the request <req> (single quotes allowed); returns the HTTP status and, on
 * 200, the parsed response in *out; on 400/404 the reason in *why (static buffer). */
static char why[512];

static int ask(const struct xds_snapshot *s, const char *type, const char *req, json_t **out)
{
    struct wr_sbuf e = {0};
    char *body = NULL, *r = dq(req);
    int st = xds_v3_discovery(s, type, r, strlen(r), &body, &e);

    free(r);
    snprintf(why, sizeof(why), "%s", e.p != NULL ? e.p : "");
    wr_sbuf_dispose(&e);
    if (out != NULL)
        *out = NULL;
    if (st == 200) {
        json_error_t jerr;
        ASSERT(body != NULL);
        json_t *j = json_loads(body, JSON_REJECT_DUPLICATES, &jerr);
        if (j == NULL)
            FAIL("response is not JSON: %s\n%s", jerr.text, body);
        /* Every Any (every resource) starts with "@type", as the JSON mapping wants (jansson
         * keeps the order of the keys). */
        for (size_t i = 0; i < json_array_size(json_object_get(j, "resources")); i++) {
            json_t *r = json_array_get(json_object_get(j, "resources"), i);
            ASSERT_STREQ(json_object_iter_key(json_object_iter(r)), "@type");
        }
        if (out != NULL)
            *out = j;
        else
            json_decref(j);
    } else {
        ASSERT(body == NULL);
    }
    free(body);
    return st;
}

static json_t *get(const struct xds_snapshot *s, const char *type)
{
    json_t *j;
    int st = ask(s, type, "{}", &j);

    if (st != 200)
        FAIL("%s: status %d: %s", type, st, why);
    return j;
}

/* Follows <path> ("a/0/b": '/'-separated keys, numbers index arrays). NULL when absent. */
static json_t *at(json_t *j, const char *path)
{
    char buf[512];
    char *save = NULL;

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *k = strtok_r(buf, "/", &save); k != NULL && j != NULL;
         k = strtok_r(NULL, "/", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, strtoul(k, NULL, 10));
        else
            j = json_object_get(j, k);
    }
    return j;
}

static const char *str_at(json_t *j, const char *path)
{
    json_t *v = at(j, path);

    if (!json_is_string(v))
        FAIL("%s: not a string", path);
    return json_string_value(v);
}

static long long int_at(json_t *j, const char *path)
{
    json_t *v = at(j, path);

    if (!json_is_integer(v))
        FAIL("%s: not an integer", path);
    return json_integer_value(v);
}

#define ASSERT_STR_AT(j, path, want) ASSERT_STREQ(str_at((j), (path)), (want))
#define ASSERT_INT_AT(j, path, want) ASSERT_EQ(int_at((j), (path)), (want))
#define ASSERT_TRUE_AT(j, path)      ASSERT(json_is_true(at((j), (path))))
#define ASSERT_NONE_AT(j, path)      ASSERT(at((j), (path)) == NULL)
#define ASSERT_LEN_AT(j, path, n)    ASSERT_EQ(json_array_size(at((j), (path))), (n))

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

/* ---- the transport ------------------------------------------------------------------------ */

TEST(response_envelope)
{
    struct xds_snapshot *s = snap("{" LISTENER "}");
    static const char *const types[][2] = {
        {"listeners", "type.googleapis.com/envoy.config.listener.v3.Listener"},
        {"routes", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
        {"clusters", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
        {"endpoints", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
    };

    for (size_t i = 0; i < WR_ARRAY_LEN(types); i++) {
        json_t *j = get(s, types[i][0]);
        ASSERT_STR_AT(j, "version_info", "7");
        ASSERT_STR_AT(j, "type_url", types[i][1]);
        ASSERT(json_is_array(at(j, "resources")));
        ASSERT(strlen(str_at(j, "nonce")) > 0);
        ASSERT_STR_AT(j, "control_plane/identifier", "weir");
        ASSERT_EQ(json_object_size(j), 5);
        for (size_t k = 0; k < json_array_size(at(j, "resources")); k++)
            ASSERT_STREQ(
                json_string_value(json_object_get(json_array_get(at(j, "resources"), k), "@type")),
                types[i][1]);
        json_decref(j);
    }
    /* One RouteConfiguration even without routes. */
    json_t *j = get(s, "routes");
    ASSERT_LEN_AT(j, "resources", 1);
    ASSERT_STR_AT(j, "resources/0/name", "weir");
    ASSERT_LEN_AT(j, "resources/0/virtual_hosts", 0);
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(nonce_unique_per_response)
{
    struct xds_snapshot *s = snap("{" LISTENER "}");
    json_t *a = get(s, "listeners"), *b = get(s, "listeners"), *c = get(s, "clusters");

    ASSERT(strcmp(str_at(a, "nonce"), str_at(b, "nonce")) != 0);
    ASSERT(strcmp(str_at(b, "nonce"), str_at(c, "nonce")) != 0);
    ASSERT(strcmp(str_at(a, "nonce"), str_at(c, "nonce")) != 0);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    xds_snapshot_unref(s);
}

TEST(not_modified_when_version_current)
{
    struct xds_snapshot *s = snap("{" LISTENER "}");
    json_t *j;

    ASSERT_EQ(ask(s, "listeners", "{'version_info': '7'}", NULL), 304);
    ASSERT_EQ(ask(s, "routes",
                  "{'versionInfo': '7', 'typeUrl': "
                  "'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'}",
                  NULL),
              304);
    ASSERT_EQ(ask(s, "clusters", "{'version_info': '7', 'resource_names': ['x']}", NULL), 304);
    /* Another version, none, or an empty one: the resources. */
    ASSERT_EQ(ask(s, "listeners", "{'version_info': '6'}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 1);
    json_decref(j);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': ''}", NULL), 200);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': null}", NULL), 200);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': '77'}", NULL), 200);
    xds_snapshot_unref(s);
}

TEST(resource_names_filter)
{
    struct xds_snapshot *s =
        snap("{'listeners': [{'name': 'a', 'address': '127.0.0.1:1'}, {'name': 'b', 'address': "
             "'127.0.0.1:2'}, {'name': 'c', 'address': '127.0.0.1:3'}], 'clusters': [{'name': "
             "'x', 'endpoints': []}, {'name': 'y', 'endpoints': []}]}");
    json_t *j;

    ASSERT_EQ(ask(s, "listeners", "{'resource_names': ['c', 'a', 'nope']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 2); /* config order; unknown names are ignored */
    ASSERT_STR_AT(j, "resources/0/name", "a");
    ASSERT_STR_AT(j, "resources/1/name", "c");
    json_decref(j);
    ASSERT_EQ(ask(s, "listeners", "{'resourceNames': []}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 3);
    json_decref(j);
    ASSERT_EQ(ask(s, "listeners", "{'resource_names': ['b', '*']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 3); /* "*": the explicit wildcard */
    json_decref(j);
    ASSERT_EQ(ask(s, "endpoints", "{'resource_names': ['y']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 1);
    ASSERT_STR_AT(j, "resources/0/cluster_name", "y");
    json_decref(j);
    ASSERT_EQ(ask(s, "clusters", "{'resource_names': ['Y']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 0); /* names are case-sensitive */
    json_decref(j);
    ASSERT_EQ(ask(s, "routes", "{'resource_names': ['other']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 0);
    json_decref(j);
    ASSERT_EQ(ask(s, "routes", "{'resource_names': ['weir']}", &j), 200);
    ASSERT_LEN_AT(j, "resources", 1);
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(bad_requests)
{
    struct xds_snapshot *s = snap("{" LISTENER "}");

    ASSERT_EQ(ask(s, "secrets", "{}", NULL), 404);
    ASSERT(strstr(why, "unknown xDS type \"secrets\"") != NULL);
    ASSERT_EQ(ask(s, "", "{}", NULL), 404);
    ASSERT_EQ(ask(s, "listeners", "", NULL), 400);
    ASSERT(strstr(why, "cannot parse the body as JSON") != NULL);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': '1'", NULL), 400);
    ASSERT_EQ(ask(s, "listeners", "[]", NULL), 400);
    ASSERT(strstr(why, "must be a JSON object") != NULL);
    ASSERT_EQ(ask(s, "listeners", "{'versions': '1'}", NULL), 400);
    ASSERT_STREQ(why, "DiscoveryRequest: unknown field \"versions\"");
    ASSERT_EQ(ask(s, "listeners", "{'version_info': 1}", NULL), 400);
    ASSERT_STREQ(why, "DiscoveryRequest: version_info must be a string");
    ASSERT_EQ(ask(s, "listeners", "{'resource_names': 'a'}", NULL), 400);
    ASSERT_EQ(ask(s, "listeners", "{'resource_names': ['a', 2]}", NULL), 400);
    ASSERT_STREQ(why, "DiscoveryRequest: resource_names must be an array of strings");
    ASSERT_EQ(ask(s, "listeners", "{'node': 'n'}", NULL), 400);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': '1', 'versionInfo': '1'}", NULL), 400);
    ASSERT_STREQ(why, "DiscoveryRequest: field version_info is given twice");
    ASSERT_EQ(ask(s, "listeners", "{'a': 1, 'a': 1}", NULL), 400);
    ASSERT_EQ(ask(s, "listeners",
                  "{'type_url': 'type.googleapis.com/envoy.config.cluster.v3.Cluster'}", NULL),
              400);
    ASSERT(strstr(why, "does not match this endpoint") != NULL);
    ASSERT_EQ(ask(s, "endpoints",
                  "{'typeUrl': 'type.googleapis.com/envoy.api.v2.ClusterLoadAssignment'}", NULL),
              400);
    /* What Envoy's REST client sends: lowerCamelCase names, a node, a nonce. */
    ASSERT_EQ(ask(s, "listeners",
                  "{'versionInfo': '3', 'node': {'id': 'n1', 'cluster': 'c'}, 'resourceNames': [],"
                  " 'typeUrl': 'type.googleapis.com/envoy.config.listener.v3.Listener',"
                  " 'responseNonce': 'x', 'errorDetail': null, 'resourceLocators': []}",
                  NULL),
              200);
    ASSERT_EQ(ask(s, "listeners", "{'type_url': ''}", NULL), 200);
    xds_snapshot_unref(s);
}

/* ---- Listener ----------------------------------------------------------------------------- */

TEST(listeners)
{
    char tmpl[] = "/tmp/xds_v3_test.XXXXXX";
    char *dir = mkdtemp(tmpl);
    char *crt = wr_xasprintf("%s/site.crt", dir), *key = wr_xasprintf("%s/site.key", dir);
    write_test_cert(crt, key);
    char *cfg = wr_xasprintf(
        "{'client_idle_timeout_ms': 61500, 'client_header_timeout_ms': 9000,"
        " 'max_header_bytes': 20000, 'listeners': ["
        " {'name': 'web', 'address': '0.0.0.0:8080', 'proxy_protocol': true},"
        " {'name': 'clear2', 'address': '[::1]:8081', 'h2c': true},"
        " {'name': 'secure', 'address': '127.0.0.1:8443', 'tls': {'certificates': [{'cert_file':"
        " '%s', 'key_file': '%s'}], 'min_version': '1.3', 'alpn': ['http/1.1']}},"
        " {'name': 'secure12', 'address': '127.0.0.1:9443', 'tls': {'certificates': [{'cert_file':"
        " '%s', 'key_file': '%s'}]}}]}",
        crt, key, crt, key);
    struct xds_snapshot *s = snap(cfg);
    json_t *j = get(s, "listeners");

    ASSERT_LEN_AT(j, "resources", 4);
    ASSERT_STR_AT(j, "resources/0/name", "web");
    ASSERT_STR_AT(j, "resources/0/address/socket_address/address", "0.0.0.0");
    ASSERT_INT_AT(j, "resources/0/address/socket_address/port_value", 8080);
    ASSERT_STR_AT(j, "resources/1/address/socket_address/address", "::1");
    ASSERT_INT_AT(j, "resources/1/address/socket_address/port_value", 8081);
    /* The HttpConnectionManager routes by RDS from the one RouteConfiguration. */
    json_t *hcm = at(j, "resources/0/filter_chains/0/filters/0");
    ASSERT_STR_AT(hcm, "name", "envoy.filters.network.http_connection_manager");
    ASSERT_STR_AT(
        hcm, "typed_config/@type",
        "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    ASSERT_STR_AT(hcm, "typed_config/stat_prefix", "web");
    ASSERT_STR_AT(hcm, "typed_config/codec_type", "HTTP1");
    ASSERT_STR_AT(hcm, "typed_config/rds/route_config_name", "weir");
    ASSERT_STR_AT(hcm, "typed_config/rds/config_source/resource_api_version", "V3");
    ASSERT_STR_AT(hcm, "typed_config/rds/config_source/api_config_source/api_type", "REST");
    ASSERT_STR_AT(hcm, "typed_config/rds/config_source/api_config_source/cluster_names/0",
                  "weir_xds");
    ASSERT_STR_AT(hcm, "typed_config/rds/config_source/api_config_source/refresh_delay", "1s");
    ASSERT_STR_AT(hcm, "typed_config/http_filters/0/name", "envoy.filters.http.router");
    ASSERT_STR_AT(hcm, "typed_config/http_filters/0/typed_config/@type",
                  "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    ASSERT_STR_AT(hcm, "typed_config/common_http_protocol_options/idle_timeout", "61.500s");
    ASSERT_STR_AT(hcm, "typed_config/request_headers_timeout", "9s");
    ASSERT_INT_AT(hcm, "typed_config/max_request_headers_kb", 20); /* 20000 bytes, rounded up */
    ASSERT_TRUE_AT(hcm, "typed_config/use_remote_address");
    ASSERT_NONE_AT(j, "resources/0/filter_chains/0/transport_socket");
    /* PROXY protocol as a listener filter. */
    ASSERT_STR_AT(j, "resources/0/listener_filters/0/name",
                  "envoy.filters.listener.proxy_protocol");
    ASSERT_STR_AT(
        j, "resources/0/listener_filters/0/typed_config/@type",
        "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol");
    ASSERT_NONE_AT(j, "resources/1/listener_filters");
    /* h2c and TLS listeners let the codec be detected (preface or ALPN). */
    ASSERT_STR_AT(j, "resources/1/filter_chains/0/filters/0/typed_config/codec_type", "AUTO");
    ASSERT_STR_AT(j, "resources/2/filter_chains/0/filters/0/typed_config/codec_type", "AUTO");
    /* TLS: DownstreamTlsContext with the files, ALPN and minimum version. */
    json_t *ts = at(j, "resources/2/filter_chains/0/transport_socket");
    ASSERT_STR_AT(ts, "name", "envoy.transport_sockets.tls");
    ASSERT_STR_AT(ts, "typed_config/@type",
                  "type.googleapis.com/"
                  "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext");
    ASSERT_STR_AT(
        ts, "typed_config/common_tls_context/tls_certificates/0/certificate_chain/filename", crt);
    ASSERT_STR_AT(ts, "typed_config/common_tls_context/tls_certificates/0/private_key/filename",
                  key);
    ASSERT_LEN_AT(ts, "typed_config/common_tls_context/alpn_protocols", 1);
    ASSERT_STR_AT(ts, "typed_config/common_tls_context/alpn_protocols/0", "http/1.1");
    ASSERT_STR_AT(ts, "typed_config/common_tls_context/tls_params/tls_minimum_protocol_version",
                  "TLSv1_3");
    ts = at(j, "resources/3/filter_chains/0/transport_socket/typed_config/common_tls_context");
    ASSERT_STR_AT(ts, "tls_params/tls_minimum_protocol_version", "TLSv1_2");
    ASSERT_STR_AT(ts, "alpn_protocols/0", "h2");
    ASSERT_STR_AT(ts, "alpn_protocols/1", "http/1.1");
    json_decref(j);
    xds_snapshot_unref(s);
    unlink(crt);
    unlink(key);
    rmdir(dir);
    free(crt);
    free(key);
    free(cfg);
}

/* ---- RouteConfiguration ------------------------------------------------------------------- */

#define CLUSTERS                                                                                   \
    "'clusters': [{'name': 'a', 'endpoints': []}, {'name': 'b', 'endpoints': []},"                 \
    " {'name': 'c', 'endpoints': []}]"

/* The virtual host named <name> in RDS response <j>. */
static json_t *vhost(json_t *j, const char *name)
{
    json_t *a = at(j, "resources/0/virtual_hosts");

    for (size_t i = 0; i < json_array_size(a); i++)
        if (strcmp(str_at(json_array_get(a, i), "name"), name) == 0)
            return json_array_get(a, i);
    FAIL("no virtual host %s", name);
}

TEST(routes_virtual_hosts_and_precedence)
{
    struct xds_snapshot *s = snap(
        "{" LISTENER ", " CLUSTERS ", 'routes': ["
        " {'name': 'any', 'cluster': 'a'},"
        " {'name': 're', 'match': {'path_regex': '/r/[0-9]+'}, 'cluster': 'a', 'timeout_ms': 1500},"
        " {'name': 'short', 'match': {'path_prefix': '/a'}, 'cluster': 'b'},"
        " {'name': 'long', 'match': {'path_prefix': '/a/b/'}, 'cluster': 'c'},"
        " {'name': 'exact', 'match': {'path_exact': '/a/b/c'}, 'cluster': 'a'},"
        " {'name': 'hdr', 'match': {'path_prefix': '/a', 'headers': [{'name': 'X-Beta', 'exact':"
        " '1'}]}, 'cluster': 'c'},"
        " {'name': 'shop', 'match': {'host': 'Shop.Example.com'}, 'cluster': 'a'},"
        " {'name': 'wild', 'match': {'host': '*.example.com', 'path_prefix': '/'}, 'cluster':"
        " 'b'}]}");
    json_t *j = get(s, "routes");

    ASSERT_STR_AT(j, "resources/0/name", "weir");
    ASSERT_TRUE_AT(j, "resources/0/ignore_port_in_host_matching");
    ASSERT_LEN_AT(j, "resources/0/virtual_hosts", 3);
    json_t *v = vhost(j, "shop.example.com");
    ASSERT_LEN_AT(v, "domains", 1);
    ASSERT_STR_AT(v, "domains/0", "shop.example.com");
    ASSERT_STR_AT(v, "routes/0/match/prefix", "/"); /* no path condition: every path */
    ASSERT_STR_AT(v, "routes/0/route/cluster", "a");
    v = vhost(j, "*.example.com");
    ASSERT_STR_AT(v, "domains/0", "*.example.com");
    /* The host-less group, in weir's precedence: exact, longest prefix first (more header
     * conditions first at equal length), regex, then no path condition. */
    v = vhost(j, "*");
    ASSERT_STR_AT(v, "domains/0", "*");
    ASSERT_LEN_AT(v, "routes", 6);
    ASSERT_STR_AT(v, "routes/0/name", "exact");
    ASSERT_STR_AT(v, "routes/0/match/path", "/a/b/c");
    ASSERT_STR_AT(v, "routes/1/name", "long");
    ASSERT_STR_AT(v, "routes/1/match/prefix", "/a/b/");
    ASSERT_STR_AT(v, "routes/2/name", "hdr");
    ASSERT_STR_AT(v, "routes/2/match/headers/0/name", "x-beta");
    ASSERT_STR_AT(v, "routes/2/match/headers/0/string_match/exact", "1");
    ASSERT_STR_AT(v, "routes/3/name", "short");
    ASSERT_NONE_AT(v, "routes/3/match/headers");
    ASSERT_STR_AT(v, "routes/4/name", "re");
    ASSERT_STR_AT(v, "routes/4/match/safe_regex/regex", "/r/[0-9]+");
    ASSERT_STR_AT(v, "routes/4/route/timeout", "1.500s");
    ASSERT_STR_AT(v, "routes/5/name", "any");
    ASSERT_STR_AT(v, "routes/5/route/timeout", "15s");
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(routes_header_matchers)
{
    struct xds_snapshot *s =
        snap("{" LISTENER ", " CLUSTERS ", 'routes': [{'name': 'h', 'match': {'headers': ["
             " {'name': 'h-exact', 'exact': 'v'},"
             " {'name': 'h-prefix', 'prefix': 'p'},"
             " {'name': 'h-suffix', 'suffix': 's', 'invert': true},"
             " {'name': 'h-contains', 'contains': 'c'},"
             " {'name': 'h-regex', 'regex': '[a-z]+'},"
             " {'name': 'h-present'},"
             " {'name': 'h-absent', 'present': false},"
             " {'name': 'h-empty-prefix', 'prefix': ''},"
             " {'name': 'h-empty-exact', 'exact': ''}]}, 'cluster': 'a'}]}");
    json_t *j = get(s, "routes");
    json_t *h = at(vhost(j, "*"), "routes/0/match/headers");

    ASSERT_EQ(json_array_size(h), 9);
    ASSERT_STR_AT(h, "0/string_match/exact", "v");
    ASSERT_NONE_AT(h, "0/invert_match");
    ASSERT_STR_AT(h, "1/string_match/prefix", "p");
    ASSERT_STR_AT(h, "2/string_match/suffix", "s");
    ASSERT_TRUE_AT(h, "2/invert_match");
    ASSERT_STR_AT(h, "3/string_match/contains", "c");
    ASSERT_STR_AT(h, "4/string_match/safe_regex/regex", "[a-z]+");
    ASSERT_TRUE_AT(h, "5/present_match");
    ASSERT_NONE_AT(h, "5/string_match");
    ASSERT_TRUE_AT(h, "6/present_match"); /* absent = present, inverted */
    ASSERT_TRUE_AT(h, "6/invert_match");
    ASSERT_TRUE_AT(h, "7/present_match"); /* Envoy refuses an empty prefix: same meaning */
    ASSERT_STR_AT(h, "8/string_match/exact", "");
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(routes_weighted_and_hash_policy)
{
    struct xds_snapshot *s = snap(
        "{" LISTENER ", 'clusters': ["
        " {'name': 'rr', 'endpoints': []},"
        " {'name': 'hh', 'lb_policy': 'ring_hash', 'hash_on': {'header': 'X-User'}, 'endpoints': "
        "[]},"
        " {'name': 'hc', 'lb_policy': 'ring_hash', 'hash_on': {'cookie': 'sid'}, 'endpoints': []},"
        " {'name': 'hs', 'lb_policy': 'ring_hash', 'hash_on': 'source_ip', 'endpoints': []},"
        " {'name': 'hh2', 'lb_policy': 'ring_hash', 'hash_on': {'header': 'x-user'}, 'endpoints':"
        " []}], 'routes': ["
        " {'name': 'w', 'match': {'path_prefix': '/w/'}, 'weighted_clusters': [{'cluster': 'rr',"
        " 'weight': 1}, {'cluster': 'hh', 'weight': 3}, {'cluster': 'hh2', 'weight': 6}]},"
        " {'name': 'c', 'match': {'path_prefix': '/c/'}, 'cluster': 'hc'},"
        " {'name': 's', 'match': {'path_prefix': '/s/'}, 'cluster': 'hs'},"
        " {'name': 'r', 'match': {'path_prefix': '/r/'}, 'cluster': 'rr'}]}");
    json_t *j = get(s, "routes");
    json_t *v = vhost(j, "*");

    ASSERT_STR_AT(v, "routes/0/name", "w");
    ASSERT_LEN_AT(v, "routes/0/route/weighted_clusters/clusters", 3);
    ASSERT_STR_AT(v, "routes/0/route/weighted_clusters/clusters/0/name", "rr");
    ASSERT_INT_AT(v, "routes/0/route/weighted_clusters/clusters/0/weight", 1);
    ASSERT_STR_AT(v, "routes/0/route/weighted_clusters/clusters/2/name", "hh2");
    ASSERT_INT_AT(v, "routes/0/route/weighted_clusters/clusters/2/weight", 6);
    ASSERT_NONE_AT(v, "routes/0/route/cluster");
    /* Hash policies of the ring_hash targets, each distinct one once. */
    ASSERT_LEN_AT(v, "routes/0/route/hash_policy", 1);
    ASSERT_STR_AT(v, "routes/0/route/hash_policy/0/header/header_name", "x-user");
    ASSERT_STR_AT(v, "routes/1/route/hash_policy/0/cookie/name", "sid");
    ASSERT_TRUE_AT(v, "routes/2/route/hash_policy/0/connection_properties/source_ip");
    ASSERT_NONE_AT(v, "routes/3/route/hash_policy");
    json_decref(j);
    xds_snapshot_unref(s);
}

#define ROLLOUT_CFG(w)                                                                             \
    "{" LISTENER ", 'clusters': [{'name': 'blue', 'endpoints': []}, {'name': 'green',"             \
    " 'endpoints': []}], 'rollouts': [{'name': 'ro', 'blue': 'blue', 'green': 'green',"            \
    " 'green_weight': " #w ", 'sticky': true}], 'routes': [{'name': 'shop', 'match': {'host':"     \
    " 'shop.example.com'}, 'rollout': 'ro'}]}"

TEST(routes_rollout)
{
    struct xds_snapshot *s = snap(ROLLOUT_CFG(20));
    json_t *j = get(s, "routes");
    json_t *v = vhost(j, "shop.example.com");

    /* x-weir-track forces a colour: one route per colour, ahead of the weighted one. */
    ASSERT_LEN_AT(v, "routes", 3);
    ASSERT_STR_AT(v, "routes/0/name", "shop/track-blue");
    ASSERT_STR_AT(v, "routes/0/match/headers/0/name", "x-weir-track");
    ASSERT_STR_AT(v, "routes/0/match/headers/0/string_match/exact", "blue");
    ASSERT_TRUE_AT(v, "routes/0/match/headers/0/string_match/ignore_case");
    ASSERT_STR_AT(v, "routes/0/route/cluster", "blue");
    ASSERT_STR_AT(v, "routes/1/name", "shop/track-green");
    ASSERT_STR_AT(v, "routes/1/match/headers/0/string_match/exact", "green");
    ASSERT_STR_AT(v, "routes/1/route/cluster", "green");
    ASSERT_STR_AT(v, "routes/2/name", "shop");
    json_t *wc = at(v, "routes/2/route/weighted_clusters/clusters");
    ASSERT_EQ(json_array_size(wc), 2);
    ASSERT_STR_AT(wc, "0/name", "blue");
    ASSERT_INT_AT(wc, "0/weight", 80);
    ASSERT_STR_AT(wc, "1/name", "green");
    ASSERT_INT_AT(wc, "1/weight", 20);
    json_decref(j);

    /* The live weight: a weight set through the admin API shows. */
    ASSERT_EQ(xds_rollout_set_weight(s, "ro", 65), 0);
    j = get(s, "routes");
    wc = at(vhost(j, "shop.example.com"), "routes/2/route/weighted_clusters/clusters");
    ASSERT_INT_AT(wc, "0/weight", 35);
    ASSERT_INT_AT(wc, "1/weight", 65);
    json_decref(j);
    xds_snapshot_unref(s);

    /* A colour at 0 is left out. */
    s = snap(ROLLOUT_CFG(0));
    j = get(s, "routes");
    wc = at(vhost(j, "shop.example.com"), "routes/2/route/weighted_clusters/clusters");
    ASSERT_EQ(json_array_size(wc), 1);
    ASSERT_STR_AT(wc, "0/name", "blue");
    ASSERT_INT_AT(wc, "0/weight", 100);
    json_decref(j);
    xds_snapshot_unref(s);
    s = snap(ROLLOUT_CFG(100));
    j = get(s, "routes");
    wc = at(vhost(j, "shop.example.com"), "routes/2/route/weighted_clusters/clusters");
    ASSERT_EQ(json_array_size(wc), 1);
    ASSERT_STR_AT(wc, "0/name", "green");
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(routes_redirect_https_and_hsts)
{
    char tmpl[] = "/tmp/xds_v3_test.XXXXXX";
    char *dir = mkdtemp(tmpl);
    char *crt = wr_xasprintf("%s/site.crt", dir), *key = wr_xasprintf("%s/site.key", dir);
    write_test_cert(crt, key);
    char *cfg = wr_xasprintf(
        "{'listeners': [{'name': 'web', 'address': '127.0.0.1:8080'}, {'name': 'tls', 'address':"
        " '127.0.0.1:8443', 'tls': {'certificates': [{'cert_file': '%s', 'key_file': '%s'}]}}],"
        " " CLUSTERS ", 'routes': [{'name': 'r', 'match': {'path_prefix': '/x/', 'headers':"
        " [{'name': 'x-a', 'exact': '1'}]}, 'cluster': 'a', 'redirect_https': true, 'hsts':"
        " {'max_age_s': 600, 'include_subdomains': true, 'preload': true}},"
        " {'name': 'plain', 'cluster': 'b'}]}",
        crt, key);
    struct xds_snapshot *s = snap(cfg);
    json_t *j = get(s, "routes");
    json_t *v = vhost(j, "*");

    ASSERT_LEN_AT(v, "routes", 3);
    /* Plain-HTTP requests (x-forwarded-proto set by the HCM) are redirected... */
    ASSERT_STR_AT(v, "routes/0/name", "r/redirect-https");
    ASSERT_STR_AT(v, "routes/0/match/prefix", "/x/");
    ASSERT_STR_AT(v, "routes/0/match/headers/0/name", "x-a");
    ASSERT_STR_AT(v, "routes/0/match/headers/1/name", "x-forwarded-proto");
    ASSERT_STR_AT(v, "routes/0/match/headers/1/string_match/exact", "http");
    ASSERT_TRUE_AT(v, "routes/0/redirect/https_redirect");
    ASSERT_INT_AT(v, "routes/0/redirect/port_redirect", 8443); /* the TLS listener's port */
    ASSERT_STR_AT(v, "routes/0/redirect/response_code", "PERMANENT_REDIRECT");
    ASSERT_NONE_AT(v, "routes/0/route");
    ASSERT_NONE_AT(v, "routes/0/response_headers_to_add");
    /* ...the others are served, with HSTS. */
    ASSERT_STR_AT(v, "routes/1/name", "r");
    ASSERT_LEN_AT(v, "routes/1/match/headers", 1);
    ASSERT_STR_AT(v, "routes/1/route/cluster", "a");
    ASSERT_STR_AT(v, "routes/1/response_headers_to_add/0/header/key", "strict-transport-security");
    ASSERT_STR_AT(v, "routes/1/response_headers_to_add/0/header/value",
                  "max-age=600; includeSubDomains; preload");
    ASSERT_STR_AT(v, "routes/1/response_headers_to_add/0/append_action",
                  "OVERWRITE_IF_EXISTS_OR_ADD");
    ASSERT_STR_AT(v, "routes/2/name", "plain");
    ASSERT_NONE_AT(v, "routes/2/response_headers_to_add");
    json_decref(j);
    xds_snapshot_unref(s);
    unlink(crt);
    unlink(key);
    rmdir(dir);
    free(crt);
    free(key);
    free(cfg);

    /* Without a TLS listener, redirects go to 443, as weir's do. */
    s = snap("{" LISTENER ", " CLUSTERS
             ", 'routes': [{'name': 'r', 'cluster': 'a', 'redirect_https': true}]}");
    j = get(s, "routes");
    ASSERT_INT_AT(vhost(j, "*"), "routes/0/redirect/port_redirect", 443);
    json_decref(j);
    xds_snapshot_unref(s);
}

/* ---- Cluster ------------------------------------------------------------------------------ */

static json_t *cluster_named(json_t *j, const char *name)
{
    json_t *a = at(j, "resources");

    for (size_t i = 0; i < json_array_size(a); i++)
        if (strcmp(str_at(json_array_get(a, i), "name"), name) == 0)
            return json_array_get(a, i);
    FAIL("no cluster %s", name);
}

TEST(clusters_lb_policies_and_options)
{
    struct xds_snapshot *s = snap(
        "{" LISTENER ", 'clusters': ["
        " {'name': 'rr', 'endpoints': [], 'connect_timeout_ms': 250, 'idle_timeout_ms': 45000},"
        " {'name': 'lr', 'lb_policy': 'least_request', 'endpoints': [], 'panic_percent': 0},"
        " {'name': 'rh', 'lb_policy': 'ring_hash', 'hash_on': 'source_ip', 'endpoints': []},"
        " {'name': 'rd', 'lb_policy': 'random', 'endpoints': [], 'protocol': 'h2c'},"
        " {'name': 'tpl'}]}");
    json_t *j = get(s, "clusters");
    json_t *c = cluster_named(j, "rr");

    ASSERT_LEN_AT(j, "resources", 5);
    ASSERT_STR_AT(c, "@type", "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    ASSERT_STR_AT(c, "type", "EDS");
    ASSERT_STR_AT(c, "eds_cluster_config/eds_config/api_config_source/api_type", "REST");
    ASSERT_STR_AT(c, "eds_cluster_config/eds_config/resource_api_version", "V3");
    ASSERT_STR_AT(c, "connect_timeout", "0.250s");
    ASSERT_STR_AT(c, "lb_policy", "ROUND_ROBIN");
    ASSERT(json_real_value(at(c, "common_lb_config/healthy_panic_threshold/value")) == 50.0);
    ASSERT_NONE_AT(c, "health_checks");
    ASSERT_NONE_AT(c, "outlier_detection");
    ASSERT_NONE_AT(c, "transport_socket");
    json_t *po = at(c, "typed_extension_protocol_options/"
                       "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    ASSERT_STR_AT(po, "@type",
                  "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    ASSERT_STR_AT(po, "common_http_protocol_options/idle_timeout", "45s");
    ASSERT(json_is_object(at(po, "explicit_http_config/http_protocol_options")));
    c = cluster_named(j, "lr");
    ASSERT_STR_AT(c, "lb_policy", "LEAST_REQUEST");
    ASSERT(json_real_value(at(c, "common_lb_config/healthy_panic_threshold/value")) == 0.0);
    ASSERT_STR_AT(cluster_named(j, "rh"), "lb_policy", "RING_HASH");
    c = cluster_named(j, "rd");
    ASSERT_STR_AT(c, "lb_policy", "RANDOM");
    ASSERT(json_is_object(at(c, "typed_extension_protocol_options/"
                                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions/"
                                "explicit_http_config/http2_protocol_options")));
    ASSERT_NONE_AT(c, "transport_socket"); /* h2c: cleartext */
    ASSERT_STR_AT(cluster_named(j, "tpl"), "type", "EDS");
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(clusters_health_checks)
{
    struct xds_snapshot *s = snap(
        "{" LISTENER ", 'clusters': ["
        " {'name': 'h', 'endpoints': [], 'health_check': {'type': 'http', 'path': '/healthz',"
        " 'host': 'svc.local', 'method': 'HEAD', 'expected_statuses': [[200, 299], 302],"
        " 'body_contains': 'ok', 'interval_ms': 1500, 'unhealthy_interval_ms': 4000,"
        " 'timeout_ms': 500, 'healthy_threshold': 2, 'unhealthy_threshold': 3,"
        " 'jitter_percent': 5}},"
        " {'name': 'hd', 'endpoints': [], 'health_check': {'type': 'http', 'path': '/', 'method':"
        " 'PROPFIND'}},"
        " {'name': 't', 'endpoints': [], 'health_check': {'type': 'tcp', 'send': 'PING\\r\\n',"
        " 'expect': '+PONG'}},"
        " {'name': 't0', 'endpoints': [], 'health_check': {'type': 'tcp'}},"
        " {'name': 'g', 'endpoints': [], 'health_check': {'type': 'grpc', 'service': 'svc.v1'}},"
        " {'name': 'g0', 'endpoints': [], 'health_check': {'type': 'grpc'}}]}");
    json_t *j = get(s, "clusters");
    json_t *h = at(cluster_named(j, "h"), "health_checks/0");

    ASSERT_LEN_AT(cluster_named(j, "h"), "health_checks", 1);
    ASSERT_STR_AT(h, "timeout", "0.500s");
    ASSERT_STR_AT(h, "interval", "1.500s");
    ASSERT_STR_AT(h, "unhealthy_interval", "4s");
    ASSERT_INT_AT(h, "interval_jitter_percent", 5);
    ASSERT_INT_AT(h, "healthy_threshold", 2);
    ASSERT_INT_AT(h, "unhealthy_threshold", 3);
    ASSERT_STR_AT(h, "http_health_check/path", "/healthz");
    ASSERT_STR_AT(h, "http_health_check/host", "svc.local");
    ASSERT_STR_AT(h, "http_health_check/method", "HEAD");
    /* Inclusive ranges become Int64Range with an exclusive end, as JSON strings. */
    ASSERT_LEN_AT(h, "http_health_check/expected_statuses", 2);
    ASSERT_STR_AT(h, "http_health_check/expected_statuses/0/start", "200");
    ASSERT_STR_AT(h, "http_health_check/expected_statuses/0/end", "300");
    ASSERT_STR_AT(h, "http_health_check/expected_statuses/1/start", "302");
    ASSERT_STR_AT(h, "http_health_check/expected_statuses/1/end", "303");
    ASSERT_STR_AT(h, "http_health_check/receive/0/text", "6f6b"); /* "ok" in hex */
    h = at(cluster_named(j, "hd"), "health_checks/0/http_health_check");
    ASSERT_NONE_AT(h, "method"); /* not one Envoy can send */
    ASSERT_NONE_AT(h, "host");
    ASSERT_NONE_AT(h, "receive");
    ASSERT_STR_AT(h, "expected_statuses/0/start", "200"); /* the default [[200, 399]] */
    ASSERT_STR_AT(h, "expected_statuses/0/end", "400");
    h = at(cluster_named(j, "t"), "health_checks/0");
    ASSERT_STR_AT(h, "tcp_health_check/send/text", "50494e470d0a");
    ASSERT_STR_AT(h, "tcp_health_check/receive/0/text", "2b504f4e47");
    ASSERT_STR_AT(h, "interval", "5s"); /* defaults */
    ASSERT_STR_AT(h, "timeout", "1s");
    h = at(cluster_named(j, "t0"), "health_checks/0/tcp_health_check");
    ASSERT(json_is_object(h) && json_object_size(h) == 0); /* connect only */
    h = at(cluster_named(j, "g"), "health_checks/0");
    ASSERT_STR_AT(h, "grpc_health_check/service_name", "svc.v1");
    ASSERT_NONE_AT(h, "http_health_check");
    h = at(cluster_named(j, "g0"), "health_checks/0/grpc_health_check");
    ASSERT(json_is_object(h) && json_object_size(h) == 0);
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(clusters_outlier_detection)
{
    struct xds_snapshot *s = snap(
        "{" LISTENER ", 'clusters': [{'name': 'o', 'endpoints': [], 'outlier_detection':"
        " {'consecutive_5xx': 3, 'consecutive_gateway_failure': 2, 'base_ejection_ms': 1500,"
        " 'max_ejection_ms': 60000, 'max_ejection_percent': 25}}, {'name': 'd', 'endpoints': [],"
        " 'outlier_detection': {}}]}");
    json_t *j = get(s, "clusters");
    json_t *o = at(cluster_named(j, "o"), "outlier_detection");

    ASSERT_INT_AT(o, "consecutive_5xx", 3);
    ASSERT_INT_AT(o, "consecutive_gateway_failure", 2);
    ASSERT_INT_AT(o, "enforcing_consecutive_gateway_failure", 100);
    ASSERT_INT_AT(o, "enforcing_consecutive_5xx", 100);
    ASSERT_INT_AT(o, "enforcing_success_rate", 0);
    ASSERT_STR_AT(o, "base_ejection_time", "1.500s");
    ASSERT_STR_AT(o, "max_ejection_time", "60s");
    ASSERT_INT_AT(o, "max_ejection_percent", 25);
    ASSERT_TRUE_AT(o, "always_eject_one_host");
    o = at(cluster_named(j, "d"), "outlier_detection");
    ASSERT_INT_AT(o, "consecutive_5xx", 5);
    ASSERT_STR_AT(o, "base_ejection_time", "30s");
    ASSERT_STR_AT(o, "max_ejection_time", "300s");
    ASSERT_INT_AT(o, "max_ejection_percent", 10);
    json_decref(j);
    xds_snapshot_unref(s);
}

TEST(clusters_upstream_tls)
{
    char tmpl[] = "/tmp/xds_v3_test.XXXXXX";
    char *dir = mkdtemp(tmpl);
    char *crt = wr_xasprintf("%s/ca.crt", dir), *key = wr_xasprintf("%s/ca.key", dir);
    write_test_cert(crt, key);
    char *cfg = wr_xasprintf(
        "{" LISTENER ", 'clusters': ["
        " {'name': 'ca', 'endpoints': [], 'tls': {'sni': 'api.internal', 'ca_file': '%s'}},"
        " {'name': 'h2', 'endpoints': [], 'protocol': 'h2'},"
        " {'name': 'noverify', 'endpoints': [], 'tls': {'verify': false}}]}",
        crt);
    struct xds_snapshot *s = snap(cfg);
    json_t *j = get(s, "clusters");
    json_t *t = at(cluster_named(j, "ca"), "transport_socket");

    ASSERT_STR_AT(t, "name", "envoy.transport_sockets.tls");
    ASSERT_STR_AT(
        t, "typed_config/@type",
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    ASSERT_STR_AT(t, "typed_config/sni", "api.internal");
    t = at(t, "typed_config/common_tls_context");
    ASSERT_STR_AT(t, "validation_context/trusted_ca/filename", crt);
    ASSERT_STR_AT(t, "validation_context/match_typed_subject_alt_names/0/san_type", "DNS");
    ASSERT_STR_AT(t, "validation_context/match_typed_subject_alt_names/0/matcher/exact",
                  "api.internal");
    ASSERT_STR_AT(t, "alpn_protocols/0", "http/1.1");
    ASSERT_STR_AT(t, "tls_params/tls_minimum_protocol_version", "TLSv1_2");
    /* h2: TLS with ALPN h2, verified against the system's roots. */
    json_t *c = cluster_named(j, "h2");
    t = at(c, "transport_socket/typed_config");
    ASSERT_NONE_AT(t, "sni");
    ASSERT(json_is_object(at(t, "common_tls_context/validation_context/system_root_certs")));
    ASSERT_NONE_AT(t, "common_tls_context/validation_context/match_typed_subject_alt_names");
    ASSERT_STR_AT(t, "common_tls_context/alpn_protocols/0", "h2");
    ASSERT(json_is_object(at(c, "typed_extension_protocol_options/"
                                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions/"
                                "explicit_http_config/http2_protocol_options")));
    t = at(cluster_named(j, "noverify"), "transport_socket/typed_config/common_tls_context");
    ASSERT_NONE_AT(t, "validation_context");
    json_decref(j);
    xds_snapshot_unref(s);
    unlink(crt);
    unlink(key);
    rmdir(dir);
    free(crt);
    free(key);
    free(cfg);
}

/* ---- ClusterLoadAssignment ---------------------------------------------------------------- */

#define EDS_CFG                                                                                    \
    "{" LISTENER ", 'clusters': [{'name': 'api', 'endpoints': [{'address': '127.0.0.1:9001',"      \
    " 'weight': 2}, {'address': '[::1]:9002'}, {'address': '127.0.0.1:9003'}]}, {'name':"          \
    " 'empty', 'endpoints': []}]}"

TEST(endpoints)
{
    struct xds_snapshot *s = snap(EDS_CFG);
    json_t *j = get(s, "endpoints");

    ASSERT_LEN_AT(j, "resources", 2);
    ASSERT_STR_AT(j, "resources/0/cluster_name", "api");
    json_t *e = at(j, "resources/0/endpoints");
    ASSERT_EQ(json_array_size(e), 1); /* one locality */
    ASSERT_LEN_AT(e, "0/lb_endpoints", 3);
    ASSERT_STR_AT(e, "0/lb_endpoints/0/endpoint/address/socket_address/address", "127.0.0.1");
    ASSERT_INT_AT(e, "0/lb_endpoints/0/endpoint/address/socket_address/port_value", 9001);
    ASSERT_INT_AT(e, "0/lb_endpoints/0/load_balancing_weight", 2);
    ASSERT_STR_AT(e, "0/lb_endpoints/0/health_status", "HEALTHY");
    ASSERT_STR_AT(e, "0/lb_endpoints/1/endpoint/address/socket_address/address", "::1");
    ASSERT_INT_AT(e, "0/lb_endpoints/1/load_balancing_weight", 1);
    ASSERT_STR_AT(j, "resources/1/cluster_name", "empty");
    ASSERT_LEN_AT(j, "resources/1/endpoints", 0);
    ASSERT_STR_AT(j, "version_info", "7");
    json_decref(j);
    xds_snapshot_unref(s);
}

/* Health changes without a new snapshot: the EDS version follows it, so a poll with the
 * previous version gets the change, not a 304. */
TEST(endpoints_live_health_and_version)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(1);
    struct xds_snapshot *s = snap_reg(EDS_CFG, reg);
    struct xds_endpoint *eps = CL(s, 0)->eps;
    json_t *j;

    ASSERT_EQ(ask(s, "endpoints", "{'version_info': '7'}", NULL), 304);
    atomic_store(&eps[0].st->flags, XDS_EPF_UNHEALTHY);
    atomic_store(&eps[1].st->flags, XDS_EPF_DRAINING | XDS_EPF_UNHEALTHY);
    atomic_store(&eps[2].st->flags, XDS_EPF_EJECTED); /* Envoy ejects on its own */
    ASSERT_EQ(ask(s, "endpoints", "{'version_info': '7'}", &j), 200);
    ASSERT_STR_AT(j, "resources/0/endpoints/0/lb_endpoints/0/health_status", "UNHEALTHY");
    ASSERT_STR_AT(j, "resources/0/endpoints/0/lb_endpoints/1/health_status", "DRAINING");
    ASSERT_STR_AT(j, "resources/0/endpoints/0/lb_endpoints/2/health_status", "HEALTHY");
    char v1[64];
    snprintf(v1, sizeof(v1), "%s", str_at(j, "version_info"));
    ASSERT(strncmp(v1, "7/", 2) == 0 && strlen(v1) == 18);
    json_decref(j);
    /* The same state: the same version, so 304. The listeners' version is unchanged. */
    char *req = wr_xasprintf("{'version_info': '%s'}", v1);
    ASSERT_EQ(ask(s, "endpoints", req, NULL), 304);
    ASSERT_EQ(ask(s, "listeners", "{'version_info': '7'}", NULL), 304);
    /* Another state, another version. */
    atomic_store(&eps[0].st->flags, 0);
    ASSERT_EQ(ask(s, "endpoints", req, &j), 200);
    ASSERT(strcmp(str_at(j, "version_info"), v1) != 0);
    ASSERT(strncmp(str_at(j, "version_info"), "7/", 2) == 0);
    json_decref(j);
    /* Only the named clusters count: "empty" has no unhealthy endpoint. */
    ASSERT_EQ(ask(s, "endpoints", "{'version_info': '7', 'resource_names': ['empty']}", NULL), 304);
    /* All healthy again: the plain snapshot version. */
    atomic_store(&eps[1].st->flags, 0);
    ASSERT_EQ(ask(s, "endpoints", "{'version_info': '7'}", NULL), 304);
    free(req);
    xds_snapshot_unref(s);
    xds_stats_reg_free(reg);
}
