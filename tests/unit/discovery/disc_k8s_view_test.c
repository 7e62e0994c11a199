/* tests/unit/discovery/disc_k8s_view_test.c -- the kubernetes provider's view: Services with
 * weir.io/ annotations, EndpointSlices, Ingresses and TLS Secrets -> clusters, routes, rollouts
 * and certificates. The objects are the real captured ones of k8s-fixtures/ (kind clusters),
 * with weir's annotations added here, put through the same trimming as the watches use. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../../discovery/disc_k8s.h"
#include "test.h"

/* ---- fixtures ----------------------------------------------------------------------------- */

struct fx {
    json_t *stores[K8S_KINDS];
    json_t *known;
    const char *cls;
    struct k8s_view_out out;
};

static void fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    for (int i = 0; i < K8S_KINDS; i++)
        f->stores[i] = json_object();
    f->known = json_object();
    f->cls = "weir";
}

static void fx_dispose(struct fx *f)
{
    for (int i = 0; i < K8S_KINDS; i++)
        json_decref(f->stores[i]);
    json_decref(f->known);
    k8s__view_dispose(&f->out);
}

static json_t *fixture(const char *name)
{
    char path[1024];
    const char *here = __FILE__, *slash = strrchr(here, '/');
    json_error_t e;

    snprintf(path, sizeof(path), "%.*s/k8s-fixtures/%s", (int)(slash - here), here, name);
    json_t *j = json_load_file(path, 0, &e);
    if (j == NULL)
        FAIL("%s: %s", path, e.text);
    return j;
}

/* Puts one object, or every item of a List, into the cache of <kind>. */
static void put(struct fx *f, enum k8s_kind kind, json_t *obj)
{
    bool changed = false;
    json_t *items = json_object_get(obj, "items"), *it;
    size_t i;

    if (json_is_array(items)) {
        json_array_foreach(items, i, it)
        {
            k8s__store_put(f->stores[kind], kind, json_incref(it), NULL, &changed);
        }
        json_decref(obj);
        return;
    }
    k8s__store_put(f->stores[kind], kind, obj, NULL, &changed);
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (j == NULL)
        FAIL("bad JSON in the test: %s: %s", e.text, text);
    return j;
}

/* Sets annotation <key> of item <name> of List <list>. */
static void annotate(json_t *list, const char *name, const char *key, const char *value)
{
    json_t *it;
    size_t i;

    json_array_foreach(json_object_get(list, "items"), i, it)
    {
        json_t *md = json_object_get(it, "metadata");
        if (strcmp(json_string_value(json_object_get(md, "name")), name) != 0)
            continue;
        json_t *ann = json_object_get(md, "annotations");
        if (ann == NULL)
            json_object_set_new(md, "annotations", ann = json_object());
        json_object_set_new(ann, key, json_string(value));
        return;
    }
    FAIL("no item %s", name);
}

static json_t *service(const char *ns, const char *name, const char *annotations_json,
                       const char *ports_json)
{
    char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"%s\", "
             "\"namespace\": \"%s\", \"resourceVersion\": \"7\", \"annotations\": %s}, "
             "\"spec\": {\"type\": \"ClusterIP\", \"ports\": %s}}",
             name, ns, annotations_json, ports_json);
    return parse(buf);
}

static json_t *slice(const char *ns, const char *name, const char *svc, const char *type,
                     const char *endpoints_json, const char *ports_json)
{
    char buf[4096];
    snprintf(buf, sizeof(buf),
             "{\"metadata\": {\"name\": \"%s\", \"namespace\": \"%s\", \"labels\": "
             "{\"kubernetes.io/service-name\": \"%s\"}}, \"addressType\": \"%s\", "
             "\"endpoints\": %s, \"ports\": %s}",
             name, ns, svc, type, endpoints_json, ports_json);
    return parse(buf);
}

static json_t *build(struct fx *f)
{
    struct k8s_view_in in = {
        .stores = f->stores, .ingress_class = f->cls, .secrets_known = f->known};
    k8s__view_dispose(&f->out);
    k8s__view_build(&in, &f->out);
    return f->out.view;
}

static json_t *find(json_t *view, const char *section, const char *name)
{
    json_t *o;
    size_t i;

    json_array_foreach(json_object_get(view, section), i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0)
            return o;
    }
    return NULL;
}

/* <o> equals the JSON <text> (key order does not matter). */
static void expect_json(json_t *o, const char *text)
{
    json_t *want = parse(text);
    if (!json_equal(o, want)) {
        char *got = o ? json_dumps(o, JSON_SORT_KEYS) : strdup("(null)");
        FAIL("got %s\nwant %s", got, text);
    }
    json_decref(want);
}

static bool has_problem(struct fx *f, const char *needle)
{
    const char *line;
    json_t *v;

    json_object_foreach(f->out.problems, line, v)
    {
        if (strstr(line, needle) != NULL)
            return true;
    }
    return false;
}

#define EXPECT_PROBLEM(f, needle)                                                                  \
    do {                                                                                           \
        if (!has_problem(f, needle)) {                                                             \
            char *all = json_dumps((f)->out.problems, JSON_SORT_KEYS);                             \
            FAIL("no problem line with \"%s\" in %s", needle, all);                                \
        }                                                                                          \
    } while (0)

/* ---- Services and EndpointSlices ---------------------------------------------------------- */

TEST(captured_objects_without_annotations_make_an_empty_view)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES, fixture("service_02_ServiceList.json"));
    put(&f, K8S_SLICES, fixture("endpointslice_02_EndpointSliceList.json"));
    json_t *v = build(&f);
    expect_json(v, "{\"clusters\": [], \"routes\": [], \"rollouts\": []}");
    ASSERT_EQ(json_object_size(f.out.problems), 0);
    fx_dispose(&f);
}

TEST(trimming_keeps_only_what_the_view_needs)
{
    struct fx f;
    fx_init(&f);
    json_t *list = fixture("service_02_ServiceList.json");
    annotate(list, "kube-dns", "weir.io/expose", "true");
    put(&f, K8S_SERVICES, list);
    put(&f, K8S_SLICES, fixture("endpointslice_02_EndpointSliceList.json"));
    json_t *svc = json_object_get(f.stores[K8S_SERVICES], "kube-system/kube-dns");
    ASSERT(svc != NULL);
    /* prometheus.io/ annotations, labels, uid, clusterIP... are gone; weir.io/ ones stay */
    expect_json(json_object_get(svc, "metadata"),
                "{\"name\": \"kube-dns\", \"namespace\": \"kube-system\", \"annotations\": "
                "{\"weir.io/expose\": \"true\"}}");
    json_t *sl = json_object_get(f.stores[K8S_SLICES], "kube-system/kube-dns-22mvb");
    ASSERT(sl != NULL);
    ASSERT(json_object_get(json_object_get(sl, "metadata"), "managedFields") == NULL);
    expect_json(json_object_get(sl, "endpoints"), "[{\"address\": \"10.244.0.3\"}]");
    fx_dispose(&f);
}

TEST(default_port_is_the_first_tcp_one)
{
    /* kube-dns: dns (UDP), dns-tcp, metrics. Without weir.io/port: dns-tcp (53). Its slice of
     * the first capture has ports metrics and dns only: no endpoint for port 53. */
    struct fx f;
    fx_init(&f);
    json_t *list = fixture("service_02_ServiceList.json");
    annotate(list, "kube-dns", "weir.io/expose", "true");
    put(&f, K8S_SERVICES, list);
    put(&f, K8S_SLICES, fixture("endpointslice_02_EndpointSliceList.json"));
    json_t *v = build(&f);
    expect_json(v, "{\"clusters\": [{\"name\": \"kube-system/kube-dns:53\", \"endpoints\": []}],"
                   " \"routes\": [{\"name\": \"kube-system/kube-dns\", \"match\": "
                   "{\"path_prefix\": \"/\"}, \"cluster\": \"kube-system/kube-dns:53\"}], "
                   "\"rollouts\": []}");
    fx_dispose(&f);

    /* The other capture's kube-dns slice carries dns-tcp: two ready endpoints. */
    fx_init(&f);
    list = fixture("service_02_ServiceList.json");
    annotate(list, "kube-dns", "weir.io/expose", "true");
    put(&f, K8S_SERVICES, list);
    put(&f, K8S_SLICES, fixture("api_watcher_15_EndpointSliceList.json"));
    v = build(&f);
    expect_json(json_object_get(find(v, "clusters", "kube-system/kube-dns:53"), "endpoints"),
                "[{\"address\": \"10.244.0.3:53\"}, {\"address\": \"10.244.0.4:53\"}]");
    fx_dispose(&f);
}

TEST(port_by_name_or_number)
{
    static const char *const wants[] = {"metrics", "9153"};
    for (int i = 0; i < 2; i++) {
        struct fx f;
        fx_init(&f);
        json_t *list = fixture("service_02_ServiceList.json");
        annotate(list, "kube-dns", "weir.io/expose", "true");
        annotate(list, "kube-dns", "weir.io/port", wants[i]);
        put(&f, K8S_SERVICES, list);
        put(&f, K8S_SLICES, fixture("endpointslice_02_EndpointSliceList.json"));
        json_t *v = build(&f);
        expect_json(json_object_get(v, "clusters"),
                    "[{\"name\": \"kube-system/kube-dns:9153\", \"endpoints\": "
                    "[{\"address\": \"10.244.0.3:9153\"}]}]");
        fx_dispose(&f);
    }
}

TEST(a_udp_port_or_a_missing_port_is_refused)
{
    struct fx f;
    fx_init(&f);
    json_t *list = fixture("service_02_ServiceList.json");
    annotate(list, "kube-dns", "weir.io/expose", "true");
    annotate(list, "kube-dns", "weir.io/port", "dns");
    put(&f, K8S_SERVICES, list);
    json_t *v = build(&f);
    ASSERT_EQ(json_array_size(json_object_get(v, "routes")), 0);
    EXPECT_PROBLEM(&f, "Service kube-system/kube-dns: Service kube-system/kube-dns has no TCP");
    fx_dispose(&f);

    fx_init(&f);
    list = fixture("service_02_ServiceList.json");
    annotate(list, "kube-dns", "weir.io/expose", "true");
    annotate(list, "kube-dns", "weir.io/port", "8080");
    put(&f, K8S_SERVICES, list);
    build(&f);
    EXPECT_PROBLEM(&f, "has no port \"8080\"");
    fx_dispose(&f);
}

TEST(terminating_endpoints_drain_and_unready_ones_are_left_out)
{
    /* The captured "kubernetes" slice: its one endpoint is terminating (ready false). */
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES,
        service("default", "kubernetes", "{\"weir.io/expose\": \"true\"}",
                "[{\"name\": \"https\", \"port\": 443, \"targetPort\": 6443}]"));
    put(&f, K8S_SLICES, fixture("endpointslice_02_EndpointSliceList.json"));
    put(&f, K8S_SLICES,
        slice("default", "kubernetes-extra", "kubernetes", "IPv4",
              "[{\"addresses\": [\"172.18.0.3\"], \"conditions\": {\"ready\": true}},"
              " {\"addresses\": [\"172.18.0.4\"], \"conditions\": {\"ready\": false}},"
              " {\"addresses\": [\"172.18.0.5\"]},"
              " {\"addresses\": [\"172.18.0.6\"], \"conditions\": {\"ready\": false, "
              "\"serving\": true, \"terminating\": true}}]",
              "[{\"name\": \"https\", \"port\": 6443, \"protocol\": \"TCP\"}]"));
    json_t *v = build(&f);
    expect_json(json_object_get(find(v, "clusters", "default/kubernetes:443"), "endpoints"),
                "[{\"address\": \"172.18.0.2:6443\", \"health\": \"draining\"},"
                " {\"address\": \"172.18.0.3:6443\"},"
                " {\"address\": \"172.18.0.5:6443\"}," /* no conditions: ready */
                " {\"address\": \"172.18.0.6:6443\", \"health\": \"draining\"}]");
    fx_dispose(&f);
}

TEST(an_address_in_two_slices_is_listed_once_and_ready_wins)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES,
        service("shop", "web", "{\"weir.io/expose\": \"true\"}", "[{\"port\": 80}]"));
    put(&f, K8S_SLICES,
        slice("shop", "web-a", "web", "IPv4",
              "[{\"addresses\": [\"10.1.0.1\"], \"conditions\": {\"ready\": false, "
              "\"terminating\": true}}]",
              "[{\"port\": 8080}]"));
    put(&f, K8S_SLICES,
        slice("shop", "web-b", "web", "IPv4", "[{\"addresses\": [\"10.1.0.1\"]}]",
              "[{\"port\": 8080}]"));
    put(&f, K8S_SLICES,
        slice("shop", "web-v6", "web", "IPv6",
              "[{\"addresses\": [\"2001:DB8:0:0::1\"]}, {\"addresses\": [\"not-an-ip\"]}]",
              "[{\"port\": 8080}]"));
    put(&f, K8S_SLICES,
        slice("shop", "web-fqdn", "web", "FQDN", "[{\"addresses\": [\"a.example.com\"]}]",
              "[{\"port\": 8080}]"));
    json_t *v = build(&f);
    expect_json(json_object_get(find(v, "clusters", "shop/web:80"), "endpoints"),
                "[{\"address\": \"10.1.0.1:8080\"}, {\"address\": \"[2001:db8::1]:8080\"}]");
    fx_dispose(&f);
}

TEST(hosts_path_and_health_check)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES,
        service("shop", "web",
                "{\"weir.io/expose\": \"true\", \"weir.io/host\": \" B.example.com, "
                "a.example.com.,b.example.com\", \"weir.io/path\": \"/shop/\", "
                "\"weir.io/health-path\": \"/healthz?full=1\"}",
                "[{\"name\": \"http\", \"port\": 80}]"));
    json_t *v = build(&f);
    expect_json(v, "{\"clusters\": [{\"name\": \"shop/web:80\", \"endpoints\": [], "
                   "\"health_check\": {\"type\": \"http\", \"path\": \"/healthz?full=1\", "
                   "\"interval_ms\": 5000}}], \"routes\": ["
                   "{\"name\": \"shop/web@a.example.com\", \"match\": {\"host\": "
                   "\"a.example.com\", \"path_prefix\": \"/shop/\"}, \"cluster\": "
                   "\"shop/web:80\"},"
                   "{\"name\": \"shop/web@b.example.com\", \"match\": {\"host\": "
                   "\"b.example.com\", \"path_prefix\": \"/shop/\"}, \"cluster\": "
                   "\"shop/web:80\"}], \"rollouts\": []}");
    fx_dispose(&f);
}

TEST(a_bad_annotation_skips_its_service_only)
{
    static const char *const bad[][2] = {
        {"\"weir.io/host\": \"bad_host.example.com\"", "is not a host name"},
        {"\"weir.io/host\": \" , \"", "weir.io/host is empty"},
        {"\"weir.io/path\": \"shop\"", "weir.io/path \"shop\""},
        {"\"weir.io/path\": \"/a b\"", "weir.io/path"},
        {"\"weir.io/health-path\": \"healthz\"", "weir.io/health-path"},
        {"\"weir.io/blue\": \"a\"", "go together"},
        {"\"weir.io/blue\": \"a\", \"weir.io/green\": \"a\"", "must differ"},
        {"\"weir.io/blue\": \"A_b\", \"weir.io/green\": \"c\"", "must be Service names"},
        {"\"weir.io/green-weight\": \"101\"", "from 0 to 100"},
        {"\"weir.io/green-weight\": \"-1\"", "from 0 to 100"},
        {"\"weir.io/green-weight\": \"2.5\"", "from 0 to 100"},
        {"\"weir.io/tls-secret\": \"Not/A/Name\"", "is not a Secret name"},
        {"\"weir.io/sticky\": \"yes\"", "weir.io/sticky"},
        {"\"weir.io/port\": \"\"", "weir.io/port is empty"},
    };
    for (size_t i = 0; i < WR_ARRAY_LEN(bad); i++) {
        struct fx f;
        char ann[512];
        fx_init(&f);
        snprintf(ann, sizeof(ann), "{\"weir.io/expose\": \"true\", %s}", bad[i][0]);
        put(&f, K8S_SERVICES, service("shop", "bad", ann, "[{\"port\": 80}]"));
        put(&f, K8S_SERVICES,
            service("shop", "good", "{\"weir.io/expose\": \"true\"}", "[{\"port\": 81}]"));
        json_t *v = build(&f);
        ASSERT_EQ(json_array_size(json_object_get(v, "routes")), 1);
        ASSERT(find(v, "routes", "shop/good") != NULL);
        EXPECT_PROBLEM(&f, bad[i][1]);
        EXPECT_PROBLEM(&f, "Service shop/bad: ");
        ASSERT_EQ(json_object_size(f.out.problems), 1);
        fx_dispose(&f);
    }
}

TEST(expose_must_be_exactly_true)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES, service("a", "x", "{\"weir.io/expose\": \"yes\"}", "[{\"port\": 80}]"));
    put(&f, K8S_SERVICES, service("a", "y", "{\"weir.io/expose\": \"True\"}", "[{\"port\": 80}]"));
    json_t *v = build(&f);
    ASSERT_EQ(json_array_size(json_object_get(v, "routes")), 0);
    fx_dispose(&f);
}

/* ---- rollouts ----------------------------------------------------------------------------- */

static void rollout_services(struct fx *f, const char *shop_ann)
{
    put(f, K8S_SERVICES, service("shop", "shop", shop_ann, "[{\"name\": \"http\", \"port\": 80}]"));
    put(f, K8S_SERVICES,
        service("shop", "shop-blue", "{}",
                "[{\"name\": \"admin\", \"port\": 9000}, {\"name\": \"http\", \"port\": 80}]"));
    put(f, K8S_SERVICES,
        service("shop", "shop-green", "{\"weir.io/port\": \"8080\"}",
                "[{\"name\": \"http\", \"port\": 8080}]"));
    put(f, K8S_SLICES,
        slice("shop", "shop-blue-1", "shop-blue", "IPv4", "[{\"addresses\": [\"10.0.1.1\"]}]",
              "[{\"name\": \"http\", \"port\": 8000}, {\"name\": \"admin\", \"port\": 9000}]"));
    put(f, K8S_SLICES,
        slice("shop", "shop-green-1", "shop-green", "IPv4", "[{\"addresses\": [\"10.0.2.1\"]}]",
              "[{\"name\": \"http\", \"port\": 8001}]"));
}

TEST(rollout_between_two_services)
{
    struct fx f;
    fx_init(&f);
    rollout_services(&f, "{\"weir.io/expose\": \"true\", \"weir.io/host\": \"shop.example.com\","
                         " \"weir.io/port\": \"http\", \"weir.io/blue\": \"shop-blue\","
                         " \"weir.io/green\": \"shop-green\", \"weir.io/green-weight\": \"20\","
                         " \"weir.io/health-path\": \"/ready\"}");
    json_t *v = build(&f);
    /* blue takes the exposing Service's weir.io/port ("http"); green its own (8080); both get
     * the exposing Service's health check (they have none of their own) */
    expect_json(v, "{\"clusters\": ["
                   "{\"name\": \"shop/shop-blue:80\", \"endpoints\": [{\"address\": "
                   "\"10.0.1.1:8000\"}], \"health_check\": {\"type\": \"http\", \"path\": "
                   "\"/ready\", \"interval_ms\": 5000}},"
                   "{\"name\": \"shop/shop-green:8080\", \"endpoints\": [{\"address\": "
                   "\"10.0.2.1:8001\"}], \"health_check\": {\"type\": \"http\", \"path\": "
                   "\"/ready\", \"interval_ms\": 5000}}],"
                   " \"rollouts\": [{\"name\": \"shop/shop\", \"blue\": \"shop/shop-blue:80\", "
                   "\"green\": \"shop/shop-green:8080\", \"green_weight\": 20}],"
                   " \"routes\": [{\"name\": \"shop/shop\", \"match\": {\"host\": "
                   "\"shop.example.com\", \"path_prefix\": \"/\"}, \"rollout\": \"shop/shop\"}]}");
    fx_dispose(&f);
}

TEST(rollout_weight_defaults_to_zero_and_sticky_is_passed_on)
{
    struct fx f;
    fx_init(&f);
    rollout_services(&f, "{\"weir.io/expose\": \"true\", \"weir.io/blue\": \"shop-blue\","
                         " \"weir.io/green\": \"shop-green\", \"weir.io/sticky\": \"true\"}");
    json_t *v = build(&f);
    json_t *ro = find(v, "rollouts", "shop/shop");
    ASSERT(ro != NULL);
    ASSERT_EQ(json_integer_value(json_object_get(ro, "green_weight")), 0);
    ASSERT(json_is_true(json_object_get(ro, "sticky")));
    /* blue without weir.io/port on either side: its first port (admin, 9000) */
    ASSERT_STREQ(json_string_value(json_object_get(ro, "blue")), "shop/shop-blue:9000");
    fx_dispose(&f);
}

TEST(rollout_with_a_missing_colour_routes_to_the_service_itself)
{
    struct fx f;
    fx_init(&f);
    rollout_services(&f, "{\"weir.io/expose\": \"true\", \"weir.io/blue\": \"shop-blue\","
                         " \"weir.io/green\": \"shop-purple\"}");
    json_t *v = build(&f);
    ASSERT_EQ(json_array_size(json_object_get(v, "rollouts")), 0);
    ASSERT_STREQ(json_string_value(json_object_get(find(v, "routes", "shop/shop"), "cluster")),
                 "shop/shop:80");
    EXPECT_PROBLEM(&f, "Service shop/shop-purple not found");
    EXPECT_PROBLEM(&f, "routing to the Service itself");
    fx_dispose(&f);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

/* A self-signed P-256 certificate and its key, PEM. */
static void make_pair(char **cert, char **key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    char *p;
    long n;

    ASSERT(pk != NULL && x != NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"shop.example.com", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    ASSERT(X509_sign(x, pk, EVP_sha256()) > 0);
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, pk, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(cb, &p);
    *cert = strndup(p, (size_t)n);
    n = BIO_get_mem_data(kb, &p);
    *key = strndup(p, (size_t)n);
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = calloc(1, 4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static json_t *secret(const char *ns, const char *name, const char *type, const char *cert,
                      const char *key)
{
    char *c = b64(cert), *k = b64(key);
    json_t *s = json_pack("{s:{s:s, s:s}, s:s, s:{s:s, s:s}}", "metadata", "name", name,
                          "namespace", ns, "type", type, "data", "tls.crt", c, "tls.key", k);
    free(c);
    free(k);
    return s;
}

TEST(secret_trimming_checks_the_pair)
{
    char *c1, *k1, *c2, *k2;
    make_pair(&c1, &k1);
    make_pair(&c2, &k2);

    json_t *t = k8s__trim_secret(secret("a", "s", "kubernetes.io/tls", c1, k1));
    ASSERT_STREQ(json_string_value(json_object_get(t, "cert_pem")), c1);
    ASSERT_STREQ(json_string_value(json_object_get(t, "key_pem")), k1);
    ASSERT(json_object_get(t, "error") == NULL);
    json_decref(t);

    t = k8s__trim_secret(secret("a", "s", "kubernetes.io/tls", c1, k2));
    ASSERT_STREQ(json_string_value(json_object_get(t, "error")),
                 "tls.key does not match the certificate of tls.crt");
    ASSERT(json_object_get(t, "key_pem") == NULL);
    json_decref(t);

    t = k8s__trim_secret(secret("a", "s", "Opaque", c1, k1));
    ASSERT_STREQ(json_string_value(json_object_get(t, "error")),
                 "is not of type kubernetes.io/tls");
    json_decref(t);

    t = k8s__trim_secret(secret("a", "s", "kubernetes.io/tls", "garbage", k1));
    ASSERT_STREQ(json_string_value(json_object_get(t, "error")),
                 "tls.crt is not a PEM certificate");
    json_decref(t);
    free(c1), free(k1), free(c2), free(k2);
}

TEST(tls_secret_becomes_a_certificate_for_the_hosts)
{
    char *c, *k;
    struct fx f;
    make_pair(&c, &k);
    fx_init(&f);
    put(&f, K8S_SERVICES,
        service("shop", "web",
                "{\"weir.io/expose\": \"true\", \"weir.io/host\": \"b.example.com,a.example.com\","
                " \"weir.io/tls-secret\": \"web-tls\"}",
                "[{\"port\": 80}]"));
    put(&f, K8S_SERVICES,
        service("shop", "nohost", "{\"weir.io/expose\": \"true\", \"weir.io/tls-secret\": \"x\"}",
                "[{\"port\": 80}]"));

    /* not yet asked for: wanted, no problem line yet */
    json_t *v = build(&f);
    ASSERT(json_object_get(v, "certificates") == NULL);
    ASSERT(json_object_get(f.out.secrets, "shop/web-tls") != NULL);
    ASSERT(!has_problem(&f, "Secret shop/web-tls"));
    EXPECT_PROBLEM(&f, "Service shop/nohost: weir.io/tls-secret needs weir.io/host");

    /* listed and absent: a problem; the route stays (plain HTTP) */
    json_object_set_new(f.known, "shop/web-tls", json_true());
    v = build(&f);
    EXPECT_PROBLEM(&f, "Service shop/web: Secret shop/web-tls not found");
    ASSERT(find(v, "routes", "shop/web@a.example.com") != NULL);

    put(&f, K8S_SECRETS, secret("shop", "web-tls", "kubernetes.io/tls", c, k));
    v = build(&f);
    json_t *certs = json_object_get(v, "certificates");
    ASSERT_EQ(json_array_size(certs), 1);
    expect_json(json_object_get(json_array_get(certs, 0), "hosts"),
                "[\"a.example.com\", \"b.example.com\"]");
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(certs, 0), "cert_pem")), c);
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(certs, 0), "key_pem")), k);
    fx_dispose(&f);
    free(c), free(k);
}

/* ---- Ingresses ---------------------------------------------------------------------------- */

TEST(captured_ingress_of_another_class_is_ignored)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_INGRESSES, fixture("ingress_02_IngressList.json"));
    json_t *v = build(&f);
    ASSERT_EQ(json_array_size(json_object_get(v, "routes")), 0);
    ASSERT_EQ(json_object_size(f.out.ingresses), 0);
    fx_dispose(&f);
}

TEST(captured_ingress_default_backend)
{
    /* The capture is a legacy extensions/v1 object (backend.serviceName): the API server
     * converts it; here its networking/v1 form is given as the server would serve it. */
    struct fx f;
    fx_init(&f);
    f.cls = "foo-class";
    json_t *list = fixture("ingress_02_IngressList.json");
    json_t *spec = json_object_get(json_array_get(json_object_get(list, "items"), 0), "spec");
    json_object_del(spec, "backend");
    json_object_set_new(
        spec, "defaultBackend",
        parse("{\"service\": {\"name\": \"testsvc\", \"port\": {\"number\": 80}}}"));
    put(&f, K8S_INGRESSES, list);
    json_t *v = build(&f);
    ASSERT(json_object_get(f.out.ingresses, "default/test-ingress") != NULL);
    ASSERT_EQ(json_array_size(json_object_get(v, "routes")), 0);
    EXPECT_PROBLEM(&f, "Ingress default/test-ingress: defaultBackend: Service default/testsvc not "
                       "found");

    put(&f, K8S_SERVICES, service("default", "testsvc", "{}", "[{\"port\": 80}]"));
    v = build(&f);
    expect_json(json_object_get(v, "routes"),
                "[{\"name\": \"ingress:default/test-ingress:default\", \"match\": "
                "{\"path_prefix\": \"/\"}, \"cluster\": \"default/testsvc:80\"}]");
    fx_dispose(&f);
}

static const char *const ingress_shop =
    "{\"metadata\": {\"name\": \"shop\", \"namespace\": \"shop\"}, \"spec\": {"
    "\"ingressClassName\": \"weir\","
    "\"tls\": [{\"secretName\": \"shop-tls\"}],"
    "\"rules\": [{\"host\": \"Shop.Example.com\", \"http\": {\"paths\": ["
    "  {\"path\": \"/api/\", \"pathType\": \"Prefix\", \"backend\": {\"service\": {\"name\": "
    "\"api\", \"port\": {\"name\": \"http\"}}}},"
    "  {\"path\": \"/\", \"pathType\": \"Prefix\", \"backend\": {\"service\": {\"name\": "
    "\"web\", \"port\": {\"number\": 80}}}},"
    "  {\"path\": \"/login\", \"pathType\": \"Exact\", \"backend\": {\"service\": {\"name\": "
    "\"web\", \"port\": {\"number\": 80}}}},"
    "  {\"path\": \"/static\", \"pathType\": \"ImplementationSpecific\", \"backend\": "
    "{\"service\": {\"name\": \"web\", \"port\": {\"number\": 80}}}},"
    "  {\"path\": \"/x\", \"pathType\": \"Regex\", \"backend\": {\"service\": {\"name\": "
    "\"web\", \"port\": {\"number\": 80}}}},"
    "  {\"path\": \"/r\", \"pathType\": \"Prefix\", \"backend\": {\"resource\": {\"kind\": "
    "\"StorageBucket\", \"name\": \"b\"}}}"
    "]}},"
    " {\"host\": \"bad_host\", \"http\": {\"paths\": [{\"path\": \"/\", \"pathType\": "
    "\"Prefix\", \"backend\": {\"service\": {\"name\": \"web\", \"port\": {\"number\": 80}}}}]}}"
    "]}}";

TEST(ingress_rules_become_routes)
{
    struct fx f;
    char *c, *k;
    make_pair(&c, &k);
    fx_init(&f);
    put(&f, K8S_INGRESSES, parse(ingress_shop));
    put(&f, K8S_SERVICES, service("shop", "web", "{}", "[{\"port\": 80}]"));
    put(&f, K8S_SERVICES,
        service("shop", "api", "{\"weir.io/health-path\": \"/h\"}",
                "[{\"name\": \"http\", \"port\": 8080}]"));
    put(&f, K8S_SECRETS, secret("shop", "shop-tls", "kubernetes.io/tls", c, k));
    json_t *v = build(&f);
    expect_json(json_object_get(v, "routes"),
                "["
                "{\"name\": \"ingress:shop/shop:0:0:exact\", \"match\": {\"host\": "
                "\"shop.example.com\", \"path_exact\": \"/api\"}, \"cluster\": \"shop/api:8080\"},"
                "{\"name\": \"ingress:shop/shop:0:0\", \"match\": {\"host\": "
                "\"shop.example.com\", \"path_prefix\": \"/api/\"}, \"cluster\": "
                "\"shop/api:8080\"},"
                "{\"name\": \"ingress:shop/shop:0:1\", \"match\": {\"host\": "
                "\"shop.example.com\", \"path_prefix\": \"/\"}, \"cluster\": \"shop/web:80\"},"
                "{\"name\": \"ingress:shop/shop:0:2\", \"match\": {\"host\": "
                "\"shop.example.com\", \"path_exact\": \"/login\"}, \"cluster\": "
                "\"shop/web:80\"},"
                "{\"name\": \"ingress:shop/shop:0:3\", \"match\": {\"host\": "
                "\"shop.example.com\", \"path_prefix\": \"/static\"}, \"cluster\": "
                "\"shop/web:80\"}"
                "]");
    /* the backend Service's own health check applies */
    ASSERT(json_object_get(find(v, "clusters", "shop/api:8080"), "health_check") != NULL);
    EXPECT_PROBLEM(&f, "rules[0].paths[4]: pathType \"Regex\" is not supported");
    EXPECT_PROBLEM(&f, "rules[0].paths[5]: only Service backends are supported");
    EXPECT_PROBLEM(&f, "rules[1]: host \"bad_host\" is not a host name");
    /* tls without hosts: the rules' hosts */
    json_t *certs = json_object_get(v, "certificates");
    ASSERT_EQ(json_array_size(certs), 1);
    expect_json(json_object_get(json_array_get(certs, 0), "hosts"), "[\"shop.example.com\"]");
    ASSERT(json_object_get(f.out.ingresses, "shop/shop") != NULL);
    fx_dispose(&f);
    free(c), free(k);
}

TEST(ingress_class_rules)
{
    struct fx f;
    fx_init(&f);
    put(&f, K8S_SERVICES, service("a", "web", "{}", "[{\"port\": 80}]"));
    /* by class name of weir's controller, by annotation, by default class */
    put(&f, K8S_INGRESSES,
        parse("{\"metadata\": {\"name\": \"by-class\", \"namespace\": \"a\"}, \"spec\": "
              "{\"ingressClassName\": \"internal\", \"defaultBackend\": {\"service\": "
              "{\"name\": \"web\", \"port\": {\"number\": 80}}}}}"));
    put(&f, K8S_INGRESSES,
        parse("{\"metadata\": {\"name\": \"by-annotation\", \"namespace\": \"a\", "
              "\"annotations\": {\"kubernetes.io/ingress.class\": \"weir\"}}, \"spec\": "
              "{\"defaultBackend\": {\"service\": {\"name\": \"web\", \"port\": {\"number\": "
              "80}}}}}"));
    put(&f, K8S_INGRESSES,
        parse("{\"metadata\": {\"name\": \"no-class\", \"namespace\": \"a\"}, \"spec\": "
              "{\"defaultBackend\": {\"service\": {\"name\": \"web\", \"port\": {\"number\": "
              "80}}}}}"));
    build(&f);
    ASSERT_EQ(json_object_size(f.out.ingresses), 1); /* the annotation only */
    ASSERT(json_object_get(f.out.ingresses, "a/by-annotation") != NULL);

    put(&f, K8S_CLASSES,
        parse("{\"metadata\": {\"name\": \"internal\"}, \"spec\": {\"controller\": "
              "\"weir.io/ingress-controller\"}}"));
    put(&f, K8S_CLASSES,
        parse("{\"metadata\": {\"name\": \"nginx\", \"annotations\": "
              "{\"ingressclass.kubernetes.io/is-default-class\": \"true\"}}, \"spec\": "
              "{\"controller\": \"k8s.io/ingress-nginx\"}}"));
    build(&f);
    ASSERT_EQ(json_object_size(f.out.ingresses), 2);
    ASSERT(json_object_get(f.out.ingresses, "a/by-class") != NULL);

    put(&f, K8S_CLASSES,
        parse("{\"metadata\": {\"name\": \"weir\", \"annotations\": "
              "{\"ingressclass.kubernetes.io/is-default-class\": \"true\"}}, \"spec\": "
              "{\"controller\": \"weir.io/ingress-controller\"}}"));
    build(&f);
    ASSERT_EQ(json_object_size(f.out.ingresses), 3);
    ASSERT(json_object_get(f.out.ingresses, "a/no-class") != NULL);
    fx_dispose(&f);
}

/* ---- reuse of clusters between builds ---------------------------------------------------- */

TEST(clusters_are_reused_until_their_service_or_slices_change)
{
    struct fx f;
    json_t *cache = json_object(), *dirty = json_object();
    bool changed = false;
    fx_init(&f);
    /* "one" is an Ingress backend with a bad health path: a problem line from its cluster */
    json_t *s1 = service("a", "one", "{\"weir.io/health-path\": \"bad\"}", "[{\"port\": 80}]");
    put(&f, K8S_INGRESSES,
        parse("{\"metadata\": {\"name\": \"i\", \"namespace\": \"a\"}, \"spec\": "
              "{\"ingressClassName\": \"weir\", \"defaultBackend\": {\"service\": "
              "{\"name\": \"one\", \"port\": {\"number\": 80}}}}}"));
    k8s__store_put(f.stores[K8S_SERVICES], K8S_SERVICES, s1, dirty, &changed);
    k8s__store_put(f.stores[K8S_SERVICES], K8S_SERVICES,
                   service("a", "two", "{\"weir.io/expose\": \"true\"}", "[{\"port\": 80}]"), dirty,
                   &changed);
    k8s__store_put(f.stores[K8S_SLICES], K8S_SLICES,
                   slice("a", "one-1", "one", "IPv4", "[{\"addresses\": [\"10.0.0.1\"]}]",
                         "[{\"port\": 8080}]"),
                   dirty, &changed);
    ASSERT(json_object_get(dirty, "a/one") != NULL && json_object_get(dirty, "a/two") != NULL);
    json_object_clear(dirty);

    struct k8s_view_in in = {.stores = f.stores, .ingress_class = "weir", .cluster_cache = cache};
    struct k8s_view_out o1, o2, o3;
    k8s__view_build(&in, &o1);
    k8s__view_build(&in, &o2);
    /* the same cluster objects, and the problem line of a reused cluster is still there */
    json_t *c1 = find(o1.view, "clusters", "a/one:80"), *c2 = find(o2.view, "clusters", "a/one:80");
    ASSERT(c1 != NULL && c1 == c2);
    ASSERT(json_equal(o1.problems, o2.problems) && json_object_size(o2.problems) == 1);

    /* a slice of "one" changes: "one" is built again, "two" is reused */
    k8s__store_put(f.stores[K8S_SLICES], K8S_SLICES,
                   slice("a", "one-1", "one", "IPv4", "[{\"addresses\": [\"10.0.0.2\"]}]",
                         "[{\"port\": 8080}]"),
                   dirty, &changed);
    ASSERT_EQ(json_object_size(dirty), 1);
    ASSERT(json_object_get(dirty, "a/one") != NULL);
    json_object_del(cache, "a/one"); /* what the provider does with the dirty set */
    k8s__view_build(&in, &o3);
    json_t *c3 = find(o3.view, "clusters", "a/one:80");
    ASSERT(c3 != c2);
    expect_json(json_object_get(c3, "endpoints"), "[{\"address\": \"10.0.0.2:8080\"}]");
    ASSERT(find(o3.view, "clusters", "a/two:80") == find(o2.view, "clusters", "a/two:80"));

    /* a slice that moves to another Service marks both */
    json_object_clear(dirty);
    k8s__store_put(f.stores[K8S_SLICES], K8S_SLICES,
                   slice("a", "one-1", "two", "IPv4", "[{\"addresses\": [\"10.0.0.2\"]}]",
                         "[{\"port\": 8080}]"),
                   dirty, &changed);
    ASSERT_EQ(json_object_size(dirty), 2);
    k8s__view_dispose(&o1);
    k8s__view_dispose(&o2);
    k8s__view_dispose(&o3);
    json_decref(cache);
    json_decref(dirty);
    fx_dispose(&f);
}

/* ---- determinism -------------------------------------------------------------------------- */

TEST(the_same_objects_in_any_order_make_the_same_view)
{
    struct fx a, b;
    fx_init(&a);
    fx_init(&b);
    char name[32], ann[128];
    for (int i = 0; i < 50; i++) {
        int j = 49 - i;
        snprintf(name, sizeof(name), "svc-%02d", i);
        snprintf(ann, sizeof(ann), "{\"weir.io/expose\": \"true\", \"weir.io/host\": \"h%d.test\"}",
                 i % 7);
        put(&a, K8S_SERVICES, service("ns", name, ann, "[{\"port\": 80}]"));
        snprintf(name, sizeof(name), "svc-%02d", j);
        snprintf(ann, sizeof(ann), "{\"weir.io/expose\": \"true\", \"weir.io/host\": \"h%d.test\"}",
                 j % 7);
        put(&b, K8S_SERVICES, service("ns", name, ann, "[{\"port\": 80}]"));
    }
    json_t *va = build(&a), *vb = build(&b);
    ASSERT(json_equal(va, vb));
    /* and the order of the routes is by namespace/name */
    ASSERT_STREQ(json_string_value(
                     json_object_get(json_array_get(json_object_get(va, "routes"), 0), "name")),
                 "ns/svc-00");
    fx_dispose(&a);
    fx_dispose(&b);
}
