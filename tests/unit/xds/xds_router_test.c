/* tests/unit/xds/xds_router_test.c -- virtual hosts and route precedence (xds/xds_router.c),
 * INTERFACES.md §2 "Route selection". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

/* Builds a snapshot from routes written with single quotes; every route goes to cluster "c". */
static struct xds_snapshot *load(const char *routes)
{
    char *json = wr_xasprintf("{'listeners': [{'name': 'web', 'address': '127.0.0.1:8080'}],"
                              " 'clusters': [{'name': 'c'}], 'routes': [%s]}",
                              routes);
    struct wr_sbuf e = {0};

    for (char *q = json; *q != '\0'; q++)
        if (*q == '\'')
            *q = '"';
    struct xds_snapshot *s = xds_config_parse(json, strlen(json), "t.json", NULL, 1, &e);
    if (s == NULL)
        FAIL("config refused:\n%s", e.p);
    free(json);
    return s;
}

/* Request headers for the callback: "name: value" pairs, names lower-case. */
struct hdrs {
    const char *kv[8][2];
};

static bool get_header(void *arg, const char *lname, size_t len, struct wr_str *value)
{
    struct hdrs *h = arg;

    for (int i = 0; h != NULL && i < 8 && h->kv[i][0] != NULL; i++)
        if (strlen(h->kv[i][0]) == len && memcmp(h->kv[i][0], lname, len) == 0) {
            *value = (struct wr_str){h->kv[i][1], strlen(h->kv[i][1])};
            return true;
        }
    return false;
}

/* Returns the name of the route chosen for <host> and <path>, or "-" for none. */
static const char *pick_h(const struct xds_snapshot *s, const char *host, const char *path,
                          struct hdrs *h)
{
    const struct xds_route *r = xds_route_match(s, (struct wr_str){host, strlen(host)},
                                                (struct wr_str){path, strlen(path)}, get_header, h);
    return r != NULL ? r->name : "-";
}

static const char *pick(const struct xds_snapshot *s, const char *host, const char *path)
{
    return pick_h(s, host, path, NULL);
}

TEST(exact_wildcard_default_groups)
{
    struct xds_snapshot *s =
        load("{'name': 'exact', 'cluster': 'c', 'match': {'host': 'shop.example.com'}},"
             "{'name': 'wild', 'cluster': 'c', 'match': {'host': '*.example.com'}},"
             "{'name': 'any', 'cluster': 'c'}");

    ASSERT_STREQ(pick(s, "shop.example.com", "/"), "exact");
    ASSERT_STREQ(pick(s, "api.example.com", "/"), "wild");
    ASSERT_STREQ(pick(s, "a.b.example.com", "/"), "wild");
    ASSERT_STREQ(pick(s, "example.com", "/"), "any"); /* *.example.com needs a label */
    ASSERT_STREQ(pick(s, "other.org", "/"), "any");
    ASSERT_STREQ(pick(s, "", "/"), "any");
    ASSERT_STREQ(pick(s, "xexample.com", "/"), "any");
    ASSERT_STREQ(pick(s, ".example.com", "/"), "any");
    xds_snapshot_unref(s);
}

TEST(host_normalization)
{
    struct xds_snapshot *s =
        load("{'name': 'exact', 'cluster': 'c', 'match': {'host': 'shop.example.com'}},"
             "{'name': 'wild', 'cluster': 'c', 'match': {'host': '*.Example.com'}},"
             "{'name': 'ip', 'cluster': 'c', 'match': {'host': '10.0.0.1'}},"
             "{'name': 'any', 'cluster': 'c'}");

    ASSERT_STREQ(pick(s, "SHOP.Example.Com", "/"), "exact");
    ASSERT_STREQ(pick(s, "shop.example.com:8080", "/"), "exact");
    ASSERT_STREQ(pick(s, "shop.example.com.", "/"), "exact");
    ASSERT_STREQ(pick(s, "Shop.Example.Com.:443", "/"), "exact");
    ASSERT_STREQ(pick(s, "API.EXAMPLE.COM:1", "/"), "wild");
    ASSERT_STREQ(pick(s, "10.0.0.1:80", "/"), "ip");
    ASSERT_STREQ(pick(s, "[::1]:8080", "/"), "any");
    ASSERT_STREQ(pick(s, "[::1]", "/"), "any");
    ASSERT_STREQ(pick(s, "shop.example.com..", "/"), "any"); /* only one dot is dropped */
    xds_snapshot_unref(s);
}

TEST(longest_wildcard_wins)
{
    struct xds_snapshot *s =
        load("{'name': 'short', 'cluster': 'c', 'match': {'host': '*.com'}},"
             "{'name': 'long', 'cluster': 'c', 'match': {'host': '*.b.example.com'}},"
             "{'name': 'mid', 'cluster': 'c', 'match': {'host': '*.example.com'}}");

    ASSERT_STREQ(pick(s, "a.b.example.com", "/"), "long");
    ASSERT_STREQ(pick(s, "x.a.b.example.com", "/"), "long");
    ASSERT_STREQ(pick(s, "b.example.com", "/"), "mid");
    ASSERT_STREQ(pick(s, "a.c.example.com", "/"), "mid");
    ASSERT_STREQ(pick(s, "example.com", "/"), "short");
    ASSERT_STREQ(pick(s, "example.org", "/"), "-"); /* no default group: nothing */
    xds_snapshot_unref(s);
}

TEST(no_fall_through)
{
    struct xds_snapshot *s =
        load("{'name': 'exact', 'cluster': 'c', 'match': {'host': 'a.example.com', "
             "'path_prefix': '/only/'}},"
             "{'name': 'wild', 'cluster': 'c', 'match': {'host': '*.example.com', "
             "'path_exact': '/w'}},"
             "{'name': 'any', 'cluster': 'c'}");

    ASSERT_STREQ(pick(s, "a.example.com", "/only/x"), "exact");
    /* The exact group has no match: neither the wildcard nor the default group answer. */
    ASSERT_STREQ(pick(s, "a.example.com", "/w"), "-");
    ASSERT_STREQ(pick(s, "a.example.com", "/"), "-");
    ASSERT_STREQ(pick(s, "b.example.com", "/w"), "wild");
    ASSERT_STREQ(pick(s, "b.example.com", "/"), "-");
    ASSERT_STREQ(pick(s, "b.example.org", "/"), "any");
    xds_snapshot_unref(s);
}

TEST(path_precedence)
{
    /* Config order is the reverse of precedence, so order cannot explain the results. */
    struct xds_snapshot *s =
        load("{'name': 'none', 'cluster': 'c'},"
             "{'name': 'regex', 'cluster': 'c', 'match': {'path_regex': '/api/v[0-9]+/.*'}},"
             "{'name': 'short', 'cluster': 'c', 'match': {'path_prefix': '/api/'}},"
             "{'name': 'long', 'cluster': 'c', 'match': {'path_prefix': '/api/v1/'}},"
             "{'name': 'exact', 'cluster': 'c', 'match': {'path_exact': '/api/v1/users'}}");

    ASSERT_STREQ(pick(s, "h", "/api/v1/users"), "exact");
    ASSERT_STREQ(pick(s, "h", "/api/v1/users/7"), "long");
    ASSERT_STREQ(pick(s, "h", "/api/v2/users"), "short");
    ASSERT_STREQ(pick(s, "h", "/apix"), "none");
    ASSERT_STREQ(pick(s, "h", "/"), "none");
    xds_snapshot_unref(s);

    /* Regex beats a route without a path condition, and is a full match. */
    s = load("{'name': 'none', 'cluster': 'c'},"
             "{'name': 'regex', 'cluster': 'c', 'match': {'path_regex': '/u/[0-9]+'}},"
             "{'name': 'alt', 'cluster': 'c', 'match': {'path_regex': '/a|/ab'}}");
    ASSERT_STREQ(pick(s, "h", "/u/42"), "regex");
    ASSERT_STREQ(pick(s, "h", "/u/42x"), "none");
    ASSERT_STREQ(pick(s, "h", "/x/u/42"), "none");
    ASSERT_STREQ(pick(s, "h", "/ab"), "alt"); /* backtracks to the alternative that ends */
    /* The caller passes the path without the query; a query left on it is part of the path. */
    ASSERT_STREQ(pick(s, "h", "/u/42?x=1"), "none");
    xds_snapshot_unref(s);
}

TEST(regex_routes_in_config_order)
{
    struct xds_snapshot *s =
        load("{'name': 'first', 'cluster': 'c', 'match': {'path_regex': '/a.*'}},"
             "{'name': 'second', 'cluster': 'c', 'match': {'path_regex': '/ab.*'}},"
             "{'name': 'pfx', 'cluster': 'c', 'match': {'path_prefix': '/'}}");

    /* A prefix beats any regex, even "/". */
    ASSERT_STREQ(pick(s, "h", "/abc"), "pfx");
    xds_snapshot_unref(s);
    s = load("{'name': 'first', 'cluster': 'c', 'match': {'path_regex': '/a.*'}},"
             "{'name': 'second', 'cluster': 'c', 'match': {'path_regex': '/ab.*'}}");
    ASSERT_STREQ(pick(s, "h", "/abc"), "first");
    xds_snapshot_unref(s);
}

TEST(header_conditions)
{
    struct xds_snapshot *s =
        load("{'name': 'exact', 'cluster': 'c', 'match': {'path_exact': '/e', 'headers': "
             "[{'name': 'X-Beta', 'exact': '1'}]}},"
             "{'name': 'prefix', 'cluster': 'c', 'match': {'path_exact': '/p', 'headers': "
             "[{'name': 'x', 'prefix': 'ab'}]}},"
             "{'name': 'suffix', 'cluster': 'c', 'match': {'path_exact': '/s', 'headers': "
             "[{'name': 'x', 'suffix': 'yz'}]}},"
             "{'name': 'contains', 'cluster': 'c', 'match': {'path_exact': '/c', 'headers': "
             "[{'name': 'x', 'contains': 'mid'}]}},"
             "{'name': 'regex', 'cluster': 'c', 'match': {'path_exact': '/r', 'headers': "
             "[{'name': 'x', 'regex': '[0-9]+'}]}},"
             "{'name': 'present', 'cluster': 'c', 'match': {'path_exact': '/pr', 'headers': "
             "[{'name': 'x'}]}},"
             "{'name': 'absent', 'cluster': 'c', 'match': {'path_exact': '/ab', 'headers': "
             "[{'name': 'x', 'present': false}]}},"
             "{'name': 'invert', 'cluster': 'c', 'match': {'path_exact': '/i', 'headers': "
             "[{'name': 'x', 'exact': 'no', 'invert': true}]}},"
             "{'name': 'both', 'cluster': 'c', 'match': {'path_exact': '/b', 'headers': "
             "[{'name': 'x', 'exact': '1'}, {'name': 'y', 'exact': '2'}]}}");
    struct hdrs beta = {{{"x-beta", "1"}}}, beta0 = {{{"x-beta", "0"}}};
    struct hdrs abc = {{{"x", "abc"}}}, xyz = {{{"x", "xyz"}}}, mid = {{{"x", "amidst"}}};
    struct hdrs num = {{{"x", "123"}}}, numx = {{{"x", "123x"}}}, empty = {{{"x", ""}}};
    struct hdrs no = {{{"x", "no"}}}, xy = {{{"x", "1"}, {"y", "2"}}}, x1 = {{{"x", "1"}}};

    ASSERT_STREQ(pick_h(s, "h", "/e", &beta), "exact");
    ASSERT_STREQ(pick_h(s, "h", "/e", &beta0), "-");
    ASSERT_STREQ(pick_h(s, "h", "/e", NULL), "-");
    ASSERT_STREQ(pick_h(s, "h", "/p", &abc), "prefix");
    ASSERT_STREQ(pick_h(s, "h", "/p", &xyz), "-");
    ASSERT_STREQ(pick_h(s, "h", "/s", &xyz), "suffix");
    ASSERT_STREQ(pick_h(s, "h", "/s", &abc), "-");
    ASSERT_STREQ(pick_h(s, "h", "/c", &mid), "contains");
    ASSERT_STREQ(pick_h(s, "h", "/c", &abc), "-");
    ASSERT_STREQ(pick_h(s, "h", "/r", &num), "regex");
    ASSERT_STREQ(pick_h(s, "h", "/r", &numx), "-"); /* full match */
    ASSERT_STREQ(pick_h(s, "h", "/pr", &empty), "present");
    ASSERT_STREQ(pick_h(s, "h", "/pr", NULL), "-");
    ASSERT_STREQ(pick_h(s, "h", "/ab", NULL), "absent");
    ASSERT_STREQ(pick_h(s, "h", "/ab", &empty), "-");
    ASSERT_STREQ(pick_h(s, "h", "/i", &abc), "invert");
    ASSERT_STREQ(pick_h(s, "h", "/i", NULL), "invert"); /* missing header: inverted holds */
    ASSERT_STREQ(pick_h(s, "h", "/i", &no), "-");
    ASSERT_STREQ(pick_h(s, "h", "/b", &xy), "both");
    ASSERT_STREQ(pick_h(s, "h", "/b", &x1), "-");
    xds_snapshot_unref(s);
}

TEST(more_headers_first_then_config_order)
{
    struct xds_snapshot *s =
        load("{'name': 'plain', 'cluster': 'c', 'match': {'path_prefix': '/api/'}},"
             "{'name': 'one', 'cluster': 'c', 'match': {'path_prefix': '/api/', 'headers': "
             "[{'name': 'x-a'}]}},"
             "{'name': 'two', 'cluster': 'c', 'match': {'path_prefix': '/api/', 'headers': "
             "[{'name': 'x-a'}, {'name': 'x-b'}]}},"
             "{'name': 'one-again', 'cluster': 'c', 'match': {'path_prefix': '/api/', 'headers': "
             "[{'name': 'x-b'}]}},"
             "{'name': 'longer', 'cluster': 'c', 'match': {'path_prefix': '/api/v1'}}");
    struct hdrs a = {{{"x-a", "1"}}}, b = {{{"x-b", "1"}}}, ab = {{{"x-a", "1"}, {"x-b", "1"}}};

    ASSERT_STREQ(pick_h(s, "h", "/api/x", &ab), "two");
    ASSERT_STREQ(pick_h(s, "h", "/api/x", &a), "one");
    ASSERT_STREQ(pick_h(s, "h", "/api/x", &b), "one-again");
    ASSERT_STREQ(pick_h(s, "h", "/api/x", NULL), "plain");
    /* A longer prefix outranks header count. */
    ASSERT_STREQ(pick_h(s, "h", "/api/v1", &ab), "longer");
    xds_snapshot_unref(s);

    /* Same rank, same header count: the earlier route. */
    s = load("{'name': 'first', 'cluster': 'c', 'match': {'path_prefix': '/x'}},"
             "{'name': 'second', 'cluster': 'c', 'match': {'path_prefix': '/y'}},"
             "{'name': 'third', 'cluster': 'c', 'match': {'path_prefix': '/x'}}");
    ASSERT_STREQ(pick(s, "h", "/x"), "first");
    xds_snapshot_unref(s);
}

TEST(no_routes)
{
    struct xds_snapshot *s = load("");

    ASSERT_STREQ(pick(s, "h", "/"), "-");
    ASSERT_STREQ(pick(s, "", ""), "-");
    xds_snapshot_unref(s);
}

TEST(thousands_of_hosts)
{
    struct wr_sbuf r = {0};

    enum { N = 5000 };

    for (int i = 0; i < N; i++)
        wr_sbuf_printf(&r, "%s{'name': 'r%d', 'cluster': 'c', 'match': {'host': '%s%d.example'}}",
                       i ? "," : "", i, i % 2 ? "*.w" : "h", i);
    struct xds_snapshot *s = load(r.p);
    char host[64], want[16];

    for (int i = 0; i < N; i++) {
        if (i % 2)
            snprintf(host, sizeof(host), "a.b.W%d.EXAMPLE", i);
        else
            snprintf(host, sizeof(host), "h%d.example", i);
        snprintf(want, sizeof(want), "r%d", i);
        ASSERT_STREQ(pick(s, host, "/"), want);
    }
    ASSERT_STREQ(pick(s, "h1.example", "/"), "-");
    wr_sbuf_dispose(&r);
    xds_snapshot_unref(s);
}

static void *match_loop(void *arg)
{
    const struct xds_snapshot *s = arg;

    for (int i = 0; i < 20000; i++)
        if (strcmp(pick(s, "h", i % 2 ? "/u/123" : "/u/x"), i % 2 ? "re" : "-") != 0)
            return (void *)1;
    return NULL;
}

TEST(regex_from_many_threads)
{
    struct xds_snapshot *s =
        load("{'name': 're', 'cluster': 'c', 'match': {'path_regex': '/u/([0-9])([0-9])+'}}");
    pthread_t t[4];
    void *rc;

    for (int i = 0; i < 4; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, match_loop, s), 0);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(pthread_join(t[i], &rc), 0);
        ASSERT(rc == NULL);
    }
    ASSERT(match_loop(s) == NULL);
    xds_snapshot_unref(s);
}
