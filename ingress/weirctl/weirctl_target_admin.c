/* ingress/weirctl/weirctl_target_admin.c -- the weir admin API as a rollout target.
 *
 * INTERFACES.md §3: GET /rollouts lists every rollout with its cumulative request and 5xx
 * counters per colour; GET /clusters gives each endpoint's health and the config version;
 * PUT /rollouts/NAME {"green_weight": N}, POST /rollouts/NAME/promote and .../rollback answer
 * with the rollout object plus "version" once every worker serves the change. Only documented
 * calls are used, so weirctl works with any weir that honours the contract.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>

#include "weirctl.h"

struct admin_target {
    struct wctl_target base;
    char *url; /* base URL without a trailing '/' */
    struct wctl_http *http;
};

static struct admin_target *admin_of(struct wctl_target *t)
{
    return WR_CONTAINER_OF(t, struct admin_target, base);
}

/* Sends <method> <path> and parses a 200 answer as JSON into <*out>; 0 or -1 (reported). */
static int call(struct admin_target *at, const char *method, const char *path, const char *body,
                json_t **out)
{
    char *url = wr_xasprintf("%s%s", at->url, path);
    struct wctl_resp r;
    char reason[256];
    int rc = wctl_http_do(at->http, method, url, body, &r);

    if (rc == 0 && r.status != 200) {
        rc = wctl_fail("%s %s: %ld %s%s", method, url, r.status,
                       wctl_resp_reason(&r, reason, sizeof(reason)),
                       r.status == 401 ? " (give the admin token with --token-file or "
                                         "WEIR_ADMIN_TOKEN)"
                                       : "");
    } else if (rc == 0) {
        *out = json_loadb(r.body, r.len, 0, NULL);
        if (*out == NULL)
            rc = wctl_fail("%s %s: the answer is not JSON", method, url);
    }
    wctl_resp_dispose(&r);
    free(url);
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? wr_xstrdup(s) : NULL;
}

static uint64_t juint(json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));

    return v > 0 ? (uint64_t)v : 0;
}

static void colour_from_json(json_t *ro, const char *colour, struct wctl_colour *c)
{
    json_t *stats = json_object_get(json_object_get(ro, "stats"), colour);

    c->cluster = dup_or_null(json_string_value(json_object_get(ro, colour)));
    c->has_counts = json_is_object(stats);
    c->requests = juint(stats, "requests");
    c->errors_5xx = juint(stats, "errors_5xx");
}

/* Fills <st> from a rollout object of GET /rollouts or of a change's answer. */
static int state_from_json(json_t *ro, struct wctl_state *st)
{
    json_t *w = json_object_get(ro, "green_weight");
    json_t *sticky = json_object_get(ro, "sticky");
    const char *version = json_string_value(json_object_get(ro, "version"));

    wctl_state_dispose(st);
    if (!json_is_integer(w))
        return wctl_fail("the rollout object has no green_weight");
    st->name = dup_or_null(json_string_value(json_object_get(ro, "name")));
    st->green_weight = (int)json_integer_value(w);
    st->sticky = json_is_boolean(sticky) ? json_is_true(sticky) : -1;
    st->version = dup_or_null(version);
    colour_from_json(ro, "blue", &st->blue);
    colour_from_json(ro, "green", &st->green);
    return 0;
}

static json_t *find_rollout(json_t *list, const char *name)
{
    size_t i;
    json_t *ro;

    json_array_foreach(json_object_get(list, "rollouts"), i, ro)
    {
        const char *n = json_string_value(json_object_get(ro, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return ro;
    }
    return NULL;
}

static int admin_get_state(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    struct admin_target *at = admin_of(t);
    json_t *list = NULL, *ro;
    int rc;

    if (call(at, "GET", "/rollouts", NULL, &list) != 0)
        return -1;
    ro = find_rollout(list, name);
    rc = ro != NULL ? state_from_json(ro, st)
                    : wctl_fail("%s: no rollout named \"%s\"", t->where, name);
    json_decref(list);
    return rc;
}

/* Counts the healthy endpoints of <c->cluster> in a GET /clusters answer. A cluster weir does
 * not list has no endpoint at all (0/0), which `step` treats as unhealthy. */
static void count_health(json_t *clusters, struct wctl_colour *c)
{
    size_t i, j;
    json_t *cl, *ep;

    c->has_health = true;
    c->healthy = c->endpoints = 0;
    json_array_foreach(json_object_get(clusters, "clusters"), i, cl)
    {
        const char *n = json_string_value(json_object_get(cl, "name"));
        if (n == NULL || c->cluster == NULL || strcmp(n, c->cluster) != 0)
            continue;
        json_array_foreach(json_object_get(cl, "endpoints"), j, ep)
        {
            const char *h = json_string_value(json_object_get(ep, "health"));
            c->endpoints++;
            c->healthy += h != NULL && strcmp(h, "healthy") == 0;
        }
    }
}

static int admin_get_stats(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    json_t *clusters = NULL;
    const char *version;

    if (admin_get_state(t, name, st) != 0)
        return -1;
    if (call(admin_of(t), "GET", "/clusters", NULL, &clusters) != 0)
        return -1;
    version = json_string_value(json_object_get(clusters, "version"));
    free(st->version);
    st->version = dup_or_null(version);
    count_health(clusters, &st->blue);
    count_health(clusters, &st->green);
    json_decref(clusters);
    return 0;
}

static int admin_set_weight(struct wctl_target *t, const char *name, enum wctl_change how,
                            int weight, struct wctl_state *st)
{
    static const char *const suffix[] = {
        [WCTL_CHANGE_SET] = "",
        [WCTL_CHANGE_PROMOTE] = "/promote",
        [WCTL_CHANGE_ROLLBACK] = "/rollback",
    };
    char *ename = wctl_url_escape(name);
    char *path = wr_xasprintf("/rollouts/%s%s", ename, suffix[how]);
    char *body = how == WCTL_CHANGE_SET ? wr_xasprintf("{\"green_weight\":%d}", weight) : NULL;
    json_t *ans = NULL;
    int rc = call(admin_of(t), how == WCTL_CHANGE_SET ? "PUT" : "POST", path, body, &ans);

    if (rc == 0)
        rc = state_from_json(ans, st);
    json_decref(ans);
    free(body);
    free(path);
    free(ename);
    return rc;
}

static void admin_free(struct wctl_target *t)
{
    struct admin_target *at = admin_of(t);

    wctl_http_free(at->http);
    free(at->url);
    free(t->where);
    free(at);
}

static const struct wctl_target_ops admin_ops = {
    .kind = "admin",
    .version_label = "config version",
    .get_state = admin_get_state,
    .get_stats = admin_get_stats,
    .set_weight = admin_set_weight,
    .free = admin_free,
};

/* A target for the admin API at <url>, sending <token> (NULL: none) as a bearer token. */
struct wctl_target *wctl_target_admin_new(const char *url, const char *token)
{
    struct admin_target *at = wr_xcalloc(1, sizeof(*at));
    char *auth = token != NULL ? wr_xasprintf("Authorization: Bearer %s", token) : NULL;
    size_t n = strlen(url);

    while (n > 0 && url[n - 1] == '/')
        n--;
    at->url = wr_xstrndup(url, n);
    at->http = wctl_http_new(auth);
    at->base.ops = &admin_ops;
    at->base.where = wr_xasprintf("weir admin %s", at->url);
    free(auth);
    return &at->base;
}
