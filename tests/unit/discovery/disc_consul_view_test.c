/* tests/unit/discovery/disc_consul_view_test.c -- the Consul provider's pure parts: weir.*
 * tags, health answers, KV rollouts, the blocking-query index rules and the rendered view. */
#include "../../../discovery/disc_consul.h"
#include "test.h"

static json_t *tags_of(const char *json_text)
{
    json_error_t e;
    json_t *t = json_loads(json_text, 0, &e);
    ASSERT(t != NULL);
    return t;
}

TEST(tags_full)
{
    struct consul_tags t = {0};
    char *problem = NULL;
    json_t *j = tags_of("[\"primary\", \"weir.expose=true\", \"weir.host=Shop.Example.com., "
                        "*.shop.test\", \"weir.host=shop.example.com\", \"weir.path=/shop/\", "
                        "\"weir.health-path=/healthz?full=1\"]");
    ASSERT(consul__parse_tags(j, &t, &problem));
    ASSERT(problem == NULL);
    ASSERT(t.expose);
    ASSERT_EQ(t.n_hosts, 2);
    ASSERT_STREQ(t.hosts[0], "*.shop.test"); /* sorted, lower-cased, deduplicated */
    ASSERT_STREQ(t.hosts[1], "shop.example.com");
    ASSERT_STREQ(t.path, "/shop/");
    ASSERT_STREQ(t.health_path, "/healthz?full=1");
    consul__tags_dispose(&t);
    json_decref(j);
}

static void expect_bad(const char *tags, const char *needle)
{
    struct consul_tags t = {0};
    char *problem = NULL;
    json_t *j = tags_of(tags);
    ASSERT(!consul__parse_tags(j, &t, &problem));
    ASSERT(problem != NULL);
    if (strstr(problem, needle) == NULL)
        FAIL("problem \"%s\" does not mention \"%s\"", problem, needle);
    ASSERT(!t.expose && t.n_hosts == 0); /* nothing half-parsed is kept */
    free(problem);
    json_decref(j);
}

TEST(tags_bad)
{
    expect_bad("[\"weir.expose=true\", \"weir.host=bad_host.example\"]", "bad_host.example");
    expect_bad("[\"weir.expose=true\", \"weir.host=a.example,\"]", "weir.host");
    expect_bad("[\"weir.expose=true\", \"weir.host=-a.example\"]", "-a.example");
    expect_bad("[\"weir.expose=true\", \"weir.path=shop\"]", "weir.path=shop");
    expect_bad("[\"weir.expose=true\", \"weir.path=/a b\"]", "weir.path");
    expect_bad("[\"weir.expose=true\", \"weir.path=/a?x\"]", "weir.path");
    expect_bad("[\"weir.expose=yes\"]", "weir.expose=yes");
    expect_bad("[\"weir.expose\"]", "no \"=value\"");
    expect_bad("[\"weir.expose=true\", \"weir.health-path=healthz\"]", "health-path");
}

TEST(tags_notes)
{
    struct consul_tags t = {0};
    char *problem = NULL;
    json_t *j = tags_of("[\"weir.expose=true\", \"weir.path=/b/\", \"weir.path=/a/\", "
                        "\"weir.hots=x\"]");
    ASSERT(consul__parse_tags(j, &t, &problem)); /* still routed */
    ASSERT(problem != NULL && strstr(problem, "disagree") != NULL);
    ASSERT_STREQ(t.path, "/a/"); /* the smaller, whatever the order */
    free(problem);
    json_decref(j);
    j = tags_of("[\"weir.expose=true\", \"weir.hots=x\"]");
    ASSERT(consul__parse_tags(j, &t, &problem));
    ASSERT(problem != NULL && strstr(problem, "weir.hots") != NULL);
    free(problem);
    json_decref(j);
    j = tags_of("[\"weir.expose=false\", \"other\"]");
    ASSERT(consul__parse_tags(j, &t, &problem));
    ASSERT(problem == NULL && !t.expose);
    consul__tags_dispose(&t);
    json_decref(j);
}

static const char HEALTH[] =
    "[{\"Node\": {\"Node\": \"n2\", \"Address\": \"10.0.0.2\"},"
    "  \"Service\": {\"ID\": \"web-2\", \"Service\": \"web\", \"Address\": \"\", \"Port\": 8080,"
    "               \"Weights\": {\"Passing\": 5, \"Warning\": 1}},"
    "  \"Checks\": [{\"Status\": \"passing\"}, {\"Status\": \"passing\"}]},"
    " {\"Node\": {\"Node\": \"n1\", \"Address\": \"10.0.0.1\"},"
    "  \"Service\": {\"ID\": \"web-1\", \"Address\": \"fd00:0:0::1\", \"Port\": 8080,"
    "               \"Weights\": {\"Passing\": 0}}, \"Checks\": []},"
    " {\"Node\": {\"Node\": \"n3\", \"Address\": \"10.0.0.3\"},"
    "  \"Service\": {\"ID\": \"web-3\", \"Address\": \"web-3.internal\", \"Port\": 8080},"
    "  \"Checks\": []},"
    " {\"Node\": {\"Node\": \"n4\", \"Address\": \"10.0.0.4\"},"
    "  \"Service\": {\"ID\": \"web-4\", \"Address\": \"10.0.0.4\", \"Port\": 8080},"
    "  \"Checks\": [{\"Status\": \"passing\"}, {\"Status\": \"critical\"}]},"
    " {\"Node\": {\"Node\": \"n5\", \"Address\": \"10.0.0.5\"},"
    "  \"Service\": {\"ID\": \"web-5\", \"Address\": \"10.0.0.5\", \"Port\": 0}, \"Checks\": []},"
    " {\"Node\": {\"Node\": \"n6\", \"Address\": \"10.0.0.6\"},"
    "  \"Service\": {\"ID\": \"web-6\", \"Address\": \"10.0.0.2\", \"Port\": 8080,"
    "               \"Weights\": {\"Passing\": 20000}}, \"Checks\": []}]";

TEST(health_answer)
{
    struct consul_ep *eps;
    uint32_t n;
    char *skipped = NULL, *err = NULL;

    ASSERT_EQ(consul__parse_health(HEALTH, strlen(HEALTH), &eps, &n, &skipped, &err), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(eps[0].key, "n1/web-1");
    ASSERT_STREQ(eps[0].address, "[fd00::1]:8080"); /* canonical, in brackets */
    ASSERT_EQ(eps[0].weight, 1);                    /* Passing 0 is not a weight */
    ASSERT_STREQ(eps[1].key, "n2/web-2");
    ASSERT_STREQ(eps[1].address, "10.0.0.2:8080"); /* the node's address */
    ASSERT_EQ(eps[1].weight, 5);
    /* n6/web-6 has the same address as n2/web-2: the first by key stays */
    ASSERT(skipped != NULL);
    ASSERT(strstr(skipped, "n3/web-3: address \"web-3.internal\" is not an IP address") != NULL);
    ASSERT(strstr(skipped, "n5/web-5: port 0") != NULL);
    ASSERT(strstr(skipped, "web-4") == NULL); /* failing checks are not a problem */
    ASSERT(consul__eps_equal(eps, n, eps, n));
    ASSERT(!consul__eps_equal(eps, n, eps, 1));
    consul__eps_free(eps, n);
    free(skipped);

    ASSERT_EQ(consul__parse_health("{}", 2, &eps, &n, &skipped, &err), -1);
    ASSERT(err != NULL);
    free(err);
    err = NULL;
    ASSERT_EQ(consul__parse_health("[", 1, &eps, &n, &skipped, &err), -1);
    free(err);
    ASSERT_EQ(consul__parse_health("[]", 2, &eps, &n, &skipped, &err), 0);
    ASSERT_EQ(n, 0);
    consul__eps_free(eps, n);
}

TEST(index_rules)
{
    ASSERT_EQ(consul__next_index(0, 5), 5);  /* first answer */
    ASSERT_EQ(consul__next_index(5, 5), 5);  /* wait expired, nothing changed */
    ASSERT_EQ(consul__next_index(5, 9), 9);  /* a change */
    ASSERT_EQ(consul__next_index(9, 3), 0);  /* backwards: restart without blocking */
    ASSERT_EQ(consul__next_index(0, 3), 3);  /* ... then block on the new index */
    ASSERT_EQ(consul__next_index(0, 0), 1);  /* never 0: it would not block */
    ASSERT_EQ(consul__next_index(1, 0), 1);  /* 0 is used as 1 */
    ASSERT_EQ(consul__next_index(50, 0), 0); /* 0 after 50 is also backwards */
}

#define B64_OK      "eyJibHVlIjogIndlYi1hIiwgImdyZWVuIjogIndlYi1iIiwgImdyZWVuX3dlaWdodCI6IDIwfQ=="
#define B64_W101    "eyJibHVlIjogIndlYi1hIiwgImdyZWVuIjogIndlYi1iIiwgImdyZWVuX3dlaWdodCI6IDEwMX0="
#define B64_UNKNOWN "eyJibHVlIjogIndlYi1hIiwgImdyZWVuIjogIndlYi1iIiwgImNvbG91ciI6IDF9"
#define B64_BADNAME "eyJibHVlIjogIndlYi1hIiwgImdyZWVuIjogImJhZCBuYW1lIn0="
#define B64_NOTJSON "bm90anNvbns="

TEST(rollouts)
{
    const char *kv = "["
                     "{\"Key\": \"weir/rollouts/\", \"Value\": null},"
                     "{\"Key\": \"weir/rollouts/shop\", \"Value\": \"" B64_OK "\"},"
                     "{\"Key\": \"weir/rollouts/api\", \"Value\": \"" B64_OK "\"},"
                     "{\"Key\": \"weir/rollouts/w101\", \"Value\": \"" B64_W101 "\"},"
                     "{\"Key\": \"weir/rollouts/unk\", \"Value\": \"" B64_UNKNOWN "\"},"
                     "{\"Key\": \"weir/rollouts/bad\", \"Value\": \"" B64_BADNAME "\"},"
                     "{\"Key\": \"weir/rollouts/nj\", \"Value\": \"" B64_NOTJSON "\"},"
                     "{\"Key\": \"weir/rollouts/a/b\", \"Value\": \"" B64_OK "\"},"
                     "{\"Key\": \"weir/rollouts/nil\", \"Value\": null}]";
    struct consul_rollout *r;
    uint32_t n;
    char *problems = NULL, *err = NULL;

    ASSERT_EQ(consul__parse_rollouts(kv, strlen(kv), &r, &n, &problems, &err), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(r[0].service, "api"); /* sorted */
    ASSERT_STREQ(r[1].service, "shop");
    ASSERT_STREQ(r[1].blue, "web-a");
    ASSERT_STREQ(r[1].green, "web-b");
    ASSERT_EQ(r[1].green_weight, 20);
    ASSERT_EQ(r[1].sticky, -1);
    ASSERT(problems != NULL);
    const char *want[] = {"w101: \"green_weight\" must be an integer from 0 to 100",
                          "unk: unknown key \"colour\"",
                          "bad: \"green\" must be a Consul service name",
                          "nj: the value must be a JSON object",
                          "weir/rollouts/a/b: \"a/b\" is not a Consul service name",
                          "nil: no value"};
    for (unsigned i = 0; i < WR_ARRAY_LEN(want); i++)
        if (strstr(problems, want[i]) == NULL)
            FAIL("no \"%s\" in:\n%s", want[i], problems);
    struct consul c = {.rollouts = r, .n_rollouts = n};
    ASSERT(consul__rollout_find(&c, "shop") == &r[1]);
    ASSERT(consul__rollout_find(&c, "nope") == NULL);
    ASSERT(consul__rollouts_equal(r, n, r, n));
    consul__rollouts_free(r, n);
    free(problems);

    /* 404: no key at all */
    ASSERT_EQ(consul__parse_rollouts(NULL, 0, &r, &n, &problems, &err), 0);
    ASSERT_EQ(n, 0);
    ASSERT(problems == NULL);
    consul__rollouts_free(r, n);
    ASSERT_EQ(consul__parse_rollouts("{\"a\": 1}", 8, &r, &n, &problems, &err), -1);
    free(err);
}

static struct consul_svc *add_svc(struct consul *c, const char *name, bool exposed, bool answered,
                                  const char *addr)
{
    struct consul_svc *s = calloc(1, sizeof(*s));
    s->name = strdup(name);
    s->exposed = exposed;
    s->w.answered = answered;
    if (addr != NULL) {
        s->eps = calloc(1, sizeof(*s->eps));
        s->eps[0].key = strdup("n/x");
        s->eps[0].address = strdup(addr);
        s->eps[0].weight = 3;
        s->n_eps = 1;
    }
    consul__svc_insert(c, s);
    return s;
}

TEST(render)
{
    struct consul c = {0};
    struct consul_svc *shop = add_svc(&c, "shop", true, true, "10.0.0.1:80");
    shop->tags.n_hosts = 2;
    shop->tags.hosts = calloc(2, sizeof(char *));
    shop->tags.hosts[0] = strdup("a.example.com");
    shop->tags.hosts[1] = strdup("b.example.com");
    shop->tags.path = strdup("/shop/");
    shop->tags.health_path = strdup("/healthz");
    add_svc(&c, "api", true, true, "[::1]:9000");
    add_svc(&c, "blue", false, true, "10.0.0.2:80")->in_rollout = true;
    struct consul_svc *green = add_svc(&c, "green", false, false, NULL);
    green->in_rollout = true;
    add_svc(&c, "pending", true, false, NULL); /* not answered yet: not in the view */
    for (int i = 0; i < 100; i++) {            /* enough to grow the table a few times */
        char name[32];
        snprintf(name, sizeof(name), "svc%03d", i);
        add_svc(&c, name, false, true, NULL);
    }
    ASSERT(consul__svc_find(&c, "svc042") != NULL);
    ASSERT(consul__svc_find(&c, "svc100") == NULL);
    struct consul_rollout ro = {
        .service = "shop", .blue = "blue", .green = "green", .green_weight = 30, .sticky = 1};
    c.rollouts = &ro;
    c.n_rollouts = 1;

    json_t *v = consul__render(&c);
    char *text = json_dumps(v, JSON_COMPACT);
    /* green has not answered: no rollout yet, shop routes to its own cluster, and blue does
     * not show alone */
    const char *want1 =
        "{\"clusters\":[{\"name\":\"consul:api\",\"endpoints\":[{\"address\":\"[::1]:9000\","
        "\"weight\":3}]},{\"name\":\"consul:shop\",\"endpoints\":[{\"address\":\"10.0.0.1:80\","
        "\"weight\":3}],\"health_check\":{\"type\":\"http\",\"path\":\"/healthz\"}}],"
        "\"routes\":[{\"name\":\"consul:api\",\"match\":{\"path_prefix\":\"/\"},"
        "\"cluster\":\"consul:api\"},{\"name\":\"consul:shop@a.example.com\",\"match\":{\"host\":"
        "\"a.example.com\",\"path_prefix\":\"/shop/\"},\"cluster\":\"consul:shop\"},{\"name\":"
        "\"consul:shop@b.example.com\",\"match\":{\"host\":\"b.example.com\",\"path_prefix\":"
        "\"/shop/\"},\"cluster\":\"consul:shop\"}],\"rollouts\":[]}";
    ASSERT_STREQ(text, want1);
    free(text);
    json_decref(v);

    green->w.answered = true;
    v = consul__render(&c);
    json_t *routes = json_object_get(v, "routes"), *rollouts = json_object_get(v, "rollouts");
    ASSERT_EQ(json_array_size(json_object_get(v, "clusters")), 4); /* green, with no endpoint */
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(routes, 1), "rollout")),
                 "consul:shop");
    text = json_dumps(json_array_get(rollouts, 0), JSON_COMPACT);
    ASSERT_STREQ(text, "{\"name\":\"consul:shop\",\"blue\":\"consul:blue\",\"green\":"
                       "\"consul:green\",\"green_weight\":30,\"sticky\":true}");
    free(text);
    /* unchanged services bring the same objects: the next view is the same view */
    json_t *again = consul__render(&c);
    ASSERT(consul__same_view(again, v));
    json_decref(again);
    /* a change that is forgotten and rendered again is a different view */
    free(shop->eps[0].address);
    shop->eps[0].address = strdup("10.0.0.9:80");
    consul__svc_forget(shop, true, false);
    again = consul__render(&c);
    ASSERT(!consul__same_view(again, v));
    text = json_dumps(json_array_get(json_object_get(again, "clusters"), 3), JSON_COMPACT);
    ASSERT(strstr(text, "10.0.0.9:80") != NULL);
    free(text);
    json_decref(again);
    json_decref(v);
    for (uint32_t b = 0; b < c.n_buckets; b++)
        for (struct consul_svc *s = c.buckets[b], *next; s != NULL; s = next) {
            next = s->next;
            consul__svc_forget(s, true, true);
            consul__tags_dispose(&s->tags);
            consul__eps_free(s->eps, s->n_eps);
            free(s->name);
            free(s);
        }
    free(c.buckets);
}
