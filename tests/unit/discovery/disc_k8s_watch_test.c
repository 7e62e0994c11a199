/* tests/unit/discovery/disc_k8s_watch_test.c -- the list/watch state of the kubernetes
 * provider without the network: list pages (continue, what a list no longer returns), the
 * event stream split anywhere, resourceVersion and bookmarks, 410 and ERROR events, scopes,
 * and the request URLs. The objects are the captured ones of k8s-fixtures/. */
#include "../../../discovery/disc_k8s.h"
#include "test.h"

static char *slurp(const char *name, size_t *len)
{
    char path[1024];
    const char *here = __FILE__, *slash = strrchr(here, '/');
    FILE *f;

    snprintf(path, sizeof(path), "%.*s/k8s-fixtures/%s", (int)(slash - here), here, name);
    f = fopen(path, "rb");
    if (f == NULL)
        FAIL("%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc(1, (size_t)n + 1);
    ASSERT(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void k_init(struct k8s *k)
{
    memset(k, 0, sizeof(*k));
    for (int i = 0; i < K8S_KINDS; i++)
        k->stores[i] = json_object();
    k->watch_timeout_s = 300;
}

static void k_dispose(struct k8s *k)
{
    for (struct k8s_watch *w = k->watches, *n; w != NULL; w = n) {
        n = w->next;
        k8s__watch_close(w); /* no timer without a provider: freed at once */
    }
    for (int i = 0; i < K8S_KINDS; i++)
        json_decref(k->stores[i]);
}

/* A watch event line for <obj_json>. */
static char *event(const char *type, const char *obj_json)
{
    char *s = NULL;
    ASSERT(asprintf(&s, "{\"type\":\"%s\",\"object\":%s}\n", type, obj_json) > 0);
    return s;
}

static const char *svc_obj(const char *ns, const char *name, const char *rv, const char *port)
{
    static char buf[1024];
    snprintf(
        buf, sizeof(buf),
        "{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"%s\","
        "\"namespace\":\"%s\",\"resourceVersion\":\"%s\"},\"spec\":{\"ports\":[{\"port\":%s}]}}",
        name, ns, rv, port);
    return buf;
}

/* ---- lists -------------------------------------------------------------------------------- */

TEST(a_captured_list_fills_the_cache_and_sets_the_resource_version)
{
    struct k8s k;
    size_t len;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SLICES, NULL, NULL);
    char *body = slurp("endpointslice_02_EndpointSliceList.json", &len);

    ASSERT_EQ(k8s__watch_page(w, body, len, &changed), 0);
    ASSERT(changed);
    ASSERT_STREQ(w->rv, "1177");
    ASSERT_EQ(json_object_size(k.stores[K8S_SLICES]), 2);
    ASSERT(json_object_get(k.stores[K8S_SLICES], "kube-system/kube-dns-22mvb") != NULL);

    /* the same list again changes nothing */
    changed = false;
    ASSERT_EQ(k8s__watch_page(w, body, len, &changed), 0);
    ASSERT(!changed);
    free(body);
    k_dispose(&k);
}

TEST(a_list_that_is_not_a_list_is_an_error)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, NULL, NULL);
    ASSERT_EQ(k8s__watch_page(w, "{\"kind\":\"Status\",\"code\":500}", 29, &changed), -1);
    ASSERT_EQ(k8s__watch_page(w, "not json", 8, &changed), -1);
    /* items without a usable name are skipped, the others kept */
    const char *odd = "{\"metadata\":{\"resourceVersion\":\"3\"},\"items\":[{\"metadata\":1},"
                      "{\"metadata\":{\"labels\":[1]}},{\"metadata\":{\"name\":\"x\","
                      "\"namespace\":\"y\"}}]}";
    ASSERT_EQ(k8s__watch_page(w, odd, strlen(odd), &changed), 0);
    ASSERT(changed);
    ASSERT_EQ(json_object_size(k.stores[K8S_SERVICES]), 1);
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "y/x") != NULL);
    /* a captured list replaces it */
    size_t len;
    char *body = slurp("api_watcher_09_ServiceList.json", &len);
    ASSERT_EQ(k8s__watch_page(w, body, len, &changed), 0);
    ASSERT_EQ(json_object_size(k.stores[K8S_SERVICES]), 1);
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "kube-system/kube-dns") != NULL);
    ASSERT_STREQ(w->rv, "60485");
    free(body);
    k_dispose(&k);
}

TEST(pages_then_what_the_list_no_longer_has_is_deleted)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, "shop", NULL);
    struct k8s_watch *other = k8s__watch_new(&k, K8S_SERVICES, "other", NULL);
    (void)other;

    /* before: shop/old (to be deleted) and other/keep (another watch's scope) */
    json_object_set_new(k.stores[K8S_SERVICES], "shop/old", json_object());
    json_object_set_new(k.stores[K8S_SERVICES], "other/keep", json_object());

    char page1[2048], page2[2048];
    snprintf(page1, sizeof(page1),
             "{\"kind\":\"ServiceList\",\"metadata\":{\"resourceVersion\":\"50\","
             "\"continue\":\"eyJydiI6NTB9+/=\"},\"items\":[%s]}",
             svc_obj("shop", "a", "10", "80"));
    ASSERT_EQ(k8s__watch_page(w, page1, strlen(page1), &changed), 1);
    ASSERT_STREQ(w->cont, "eyJydiI6NTB9+/=");
    ASSERT(w->rv == NULL); /* set once the list is complete */
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "shop/old") != NULL); /* not yet */
    char *url = k8s__watch_url(w, false, 0);
    ASSERT_STREQ(url, "/api/v1/namespaces/shop/services?limit=500&continue=eyJydiI6NTB9%2B%2F%3D");
    free(url);

    snprintf(page2, sizeof(page2),
             "{\"kind\":\"ServiceList\",\"metadata\":{\"resourceVersion\":\"50\"},\"items\":[%s]}",
             svc_obj("shop", "b", "11", "81"));
    ASSERT_EQ(k8s__watch_page(w, page2, strlen(page2), &changed), 0);
    ASSERT(w->cont == NULL);
    ASSERT_STREQ(w->rv, "50");
    json_t *st = k.stores[K8S_SERVICES];
    ASSERT(json_object_get(st, "shop/a") != NULL);
    ASSERT(json_object_get(st, "shop/b") != NULL);
    ASSERT(json_object_get(st, "shop/old") == NULL);
    ASSERT(json_object_get(st, "other/keep") != NULL);
    k_dispose(&k);
}

TEST(a_named_watch_owns_one_key)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SECRETS, "shop", "tls");
    json_object_set_new(k.stores[K8S_SECRETS], "shop/tls", json_object());
    json_object_set_new(k.stores[K8S_SECRETS], "shop/tls2", json_object());
    const char *empty = "{\"kind\":\"SecretList\",\"metadata\":{\"resourceVersion\":\"9\"},"
                        "\"items\":[]}";
    ASSERT_EQ(k8s__watch_page(w, empty, strlen(empty), &changed), 0);
    ASSERT(changed);
    ASSERT(json_object_get(k.stores[K8S_SECRETS], "shop/tls") == NULL);
    ASSERT(json_object_get(k.stores[K8S_SECRETS], "shop/tls2") != NULL);
    char *url = k8s__watch_url(w, false, 0);
    ASSERT_STREQ(url,
                 "/api/v1/namespaces/shop/secrets?limit=500&fieldSelector=metadata.name%3Dtls");
    free(url);
    k_dispose(&k);
}

TEST(urls)
{
    struct k8s k;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SLICES, NULL, NULL);
    struct k8s_watch *c = k8s__watch_new(&k, K8S_CLASSES, NULL, NULL);
    struct k8s_watch *i = k8s__watch_new(&k, K8S_INGRESSES, "team-a", NULL);
    char *u = k8s__watch_url(w, false, 0);
    ASSERT_STREQ(u, "/apis/discovery.k8s.io/v1/endpointslices?limit=500");
    free(u);
    w->rv = strdup("1177");
    u = k8s__watch_url(w, true, 321);
    ASSERT_STREQ(u, "/apis/discovery.k8s.io/v1/endpointslices?watch=1&allowWatchBookmarks=true&"
                    "resourceVersion=1177&timeoutSeconds=321");
    free(u);
    u = k8s__watch_url(c, false, 0);
    ASSERT_STREQ(u, "/apis/networking.k8s.io/v1/ingressclasses?limit=500");
    free(u);
    u = k8s__watch_url(i, false, 0);
    ASSERT_STREQ(u, "/apis/networking.k8s.io/v1/namespaces/team-a/ingresses?limit=500");
    free(u);
    k_dispose(&k);
}

/* ---- the event stream --------------------------------------------------------------------- */

static char *stream(void)
{
    char *a = event("ADDED", svc_obj("shop", "a", "101", "80"));
    char *b = event("MODIFIED", svc_obj("shop", "a", "102", "81"));
    char *c = event("ADDED", svc_obj("shop", "b", "103", "80"));
    char *d = event("DELETED", svc_obj("shop", "b", "104", "80"));
    char *e = event("BOOKMARK", "{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":"
                                "{\"resourceVersion\":\"110\"}}");
    char *s = NULL;
    ASSERT(asprintf(&s, "%s%s\r\n%s%s\n%s", a, b, c, d, e) > 0);
    free(a), free(b), free(c), free(d), free(e);
    return s;
}

static void check_after_stream(struct k8s *k, struct k8s_watch *w)
{
    json_t *a = json_object_get(k->stores[K8S_SERVICES], "shop/a");
    ASSERT(a != NULL);
    ASSERT_EQ(json_integer_value(json_object_get(
                  json_array_get(json_object_get(json_object_get(a, "spec"), "ports"), 0), "port")),
              81);
    ASSERT(json_object_get(k->stores[K8S_SERVICES], "shop/b") == NULL);
    ASSERT_STREQ(w->rv, "110");
    ASSERT_EQ(w->line.len, 0);
}

TEST(events_split_at_every_byte)
{
    char *s = stream();
    size_t n = strlen(s);

    for (size_t cut = 0; cut <= n; cut++) {
        struct k8s k;
        bool changed = false;
        k_init(&k);
        struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, "shop", NULL);
        ASSERT_EQ(k8s__watch_feed(w, s, cut, &changed), K8S_EV_OK);
        ASSERT_EQ(k8s__watch_feed(w, s + cut, n - cut, &changed), K8S_EV_OK);
        ASSERT(changed);
        check_after_stream(&k, w);
        k_dispose(&k);
    }
    /* and one byte at a time */
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, "shop", NULL);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(k8s__watch_feed(w, s + i, 1, &changed), K8S_EV_OK);
    check_after_stream(&k, w);
    k_dispose(&k);
    free(s);
}

TEST(an_irrelevant_change_is_not_a_change)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, NULL, NULL);
    char *a = event("ADDED", svc_obj("shop", "a", "1", "80"));
    char *b = event("MODIFIED", svc_obj("shop", "a", "2", "80")); /* only the RV moved */
    ASSERT_EQ(k8s__watch_feed(w, a, strlen(a), &changed), K8S_EV_OK);
    ASSERT(changed);
    changed = false;
    ASSERT_EQ(k8s__watch_feed(w, b, strlen(b), &changed), K8S_EV_OK);
    ASSERT(!changed);
    ASSERT_STREQ(w->rv, "2");
    /* a DELETED of something never seen changes nothing either */
    char *c = event("DELETED", svc_obj("shop", "zz", "3", "80"));
    ASSERT_EQ(k8s__watch_feed(w, c, strlen(c), &changed), K8S_EV_OK);
    ASSERT(!changed);
    free(a), free(b), free(c);
    k_dispose(&k);
}

TEST(error_410_means_list_again)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, NULL, NULL);
    char *a = event("ADDED", svc_obj("shop", "a", "5", "80"));
    char *e = event("ERROR", "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
                             "\"status\":\"Failure\",\"message\":\"too old resource version: "
                             "5 (9)\",\"reason\":\"Expired\",\"code\":410}");
    char *both = NULL;
    ASSERT(asprintf(&both, "%s%s", a, e) > 0);
    ASSERT_EQ(k8s__watch_feed(w, both, strlen(both), &changed), K8S_EV_GONE);
    /* what came before the error was applied; the cache is kept */
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "shop/a") != NULL);
    ASSERT_STREQ(w->rv, "5");
    free(a), free(e), free(both);

    char *other = event("ERROR", "{\"kind\":\"Status\",\"code\":500,\"message\":\"boom\"}");
    ASSERT_EQ(k8s__watch_feed(w, other, strlen(other), &changed), K8S_EV_ERROR);
    free(other);
    ASSERT_EQ(k8s__watch_feed(w, "{not json}\n", 11, &changed), K8S_EV_ERROR);
    ASSERT_EQ(k8s__watch_feed(w, "{\"type\":\"WHAT\",\"object\":{}}\n", 29, &changed),
              K8S_EV_ERROR);
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "shop/a") != NULL);
    k_dispose(&k);
}

TEST(captured_objects_as_watch_events)
{
    /* The captured watch objects of api_watcher: a Service, then one that changed. */
    struct k8s k;
    size_t len;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, NULL, NULL);
    char *obj = slurp("api_watcher_06_Service.json", &len);
    json_t *o = json_loadb(obj, len, 0, NULL);
    json_object_set_new(json_object_get(o, "metadata"), "resourceVersion", json_string("77"));
    char *compact = json_dumps(o, JSON_COMPACT);
    char *ev = event("ADDED", compact);
    ASSERT_EQ(k8s__watch_feed(w, ev, strlen(ev), &changed), K8S_EV_OK);
    ASSERT(changed);
    ASSERT(json_object_get(k.stores[K8S_SERVICES], "default/stack-kube-state-metrics") != NULL);
    ASSERT_STREQ(w->rv, "77");
    free(obj), free(compact), free(ev);
    json_decref(o);
    k_dispose(&k);
}

TEST(an_event_outside_the_scope_is_not_kept)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SECRETS, "shop", "tls");
    char *a = event("ADDED", "{\"metadata\":{\"name\":\"other\",\"namespace\":\"shop\","
                             "\"resourceVersion\":\"3\"},\"type\":\"Opaque\"}");
    ASSERT_EQ(k8s__watch_feed(w, a, strlen(a), &changed), K8S_EV_OK);
    ASSERT(!changed);
    ASSERT_EQ(json_object_size(k.stores[K8S_SECRETS]), 0);
    ASSERT_STREQ(w->rv, "3");
    free(a);
    k_dispose(&k);
}

TEST(a_line_too_long_is_an_error)
{
    struct k8s k;
    bool changed = false;
    k_init(&k);
    struct k8s_watch *w = k8s__watch_new(&k, K8S_SERVICES, NULL, NULL);
    size_t n = (16u << 20) + 10;
    char *big = malloc(n);
    memset(big, 'x', n);
    ASSERT_EQ(k8s__watch_feed(w, big, n, &changed), K8S_EV_ERROR);
    free(big);
    k_dispose(&k);
}
