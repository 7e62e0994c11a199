/* ingress/weirctl/weirctl_target_consul.c -- the Consul KV key weir/rollouts/NAME as a target.
 *
 * INTERFACES.md §4b. A change is read-modify-write with check-and-set: GET the key (base64
 * value and ModifyIndex), PUT the same object with a new green_weight to ?cas=<ModifyIndex>.
 * Consul answers "false" when someone wrote the key in between; the change is then redone on
 * the fresh value, a few times, so a concurrent edit of blue/green is never overwritten.
 *
 * Consul sees no requests, so this target has no counters; endpoint health comes from the
 * health API: all instances of the service, and those passing their checks (?passing).
 * The ACL token goes in X-Consul-Token.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>

#include "weirctl.h"
#include "weirctl_consul_kv.h"

#define CAS_ATTEMPTS 5
#define KV_PREFIX    "weir/rollouts/"

struct consul_target {
    struct wctl_target base;
    char *url; /* base URL without a trailing '/' */
    struct wctl_http *http;
};

static struct consul_target *consul_of(struct wctl_target *t)
{
    return WR_CONTAINER_OF(t, struct consul_target, base);
}

static char *kv_url(struct consul_target *ct, const char *name, uint64_t cas)
{
    char *ename = wctl_url_escape(name);
    char *url = cas > 0 ? wr_xasprintf("%s/v1/kv/" KV_PREFIX "%s?cas=%llu", ct->url, ename,
                                       (unsigned long long)cas)
                        : wr_xasprintf("%s/v1/kv/" KV_PREFIX "%s", ct->url, ename);

    free(ename);
    return url;
}

/* Reports a non-200 answer to <method> <url>. */
static int http_error(const char *method, const char *url, const struct wctl_resp *r)
{
    char reason[256];

    return wctl_fail("%s %s: %ld %s%s", method, url, r->status,
                     wctl_resp_reason(r, reason, sizeof(reason)),
                     r->status == 403 ? " (give an ACL token with --token-file or "
                                        "CONSUL_HTTP_TOKEN)"
                                      : "");
}

/* Reads and decodes the key of rollout <name>; 0 or -1 (reported). A missing key is an error:
 * weirctl changes rollouts, it does not create them. */
static int kv_read(struct consul_target *ct, const char *name, struct wctl_kv_rollout *kv)
{
    char *url = kv_url(ct, name, 0);
    struct wctl_resp r;
    const char *err = NULL;
    int rc = wctl_http_do(ct->http, "GET", url, NULL, &r);

    if (rc == 0 && r.status == 404)
        rc = wctl_fail("%s: no rollout \"%s\": the key " KV_PREFIX "%s does not exist",
                       ct->base.where, name, name);
    else if (rc == 0 && r.status != 200)
        rc = http_error("GET", url, &r);
    else if (rc == 0 && wctl_kv_parse(r.body, r.len, kv, &err) != 0)
        rc = wctl_fail("%s: key " KV_PREFIX "%s: %s", ct->base.where, name, err);
    wctl_resp_dispose(&r);
    free(url);
    return rc;
}

static void state_from_kv(const struct wctl_kv_rollout *kv, const char *name, struct wctl_state *st)
{
    json_t *sticky = json_object_get(kv->value, "sticky");

    wctl_state_dispose(st);
    st->name = wr_xstrdup(name);
    st->green_weight = kv->green_weight;
    st->sticky = json_is_boolean(sticky) ? json_is_true(sticky) : -1;
    st->version = wr_xasprintf("%llu", (unsigned long long)kv->modify_index);
    st->blue.cluster = wr_xstrdup(kv->blue);
    st->green.cluster = wr_xstrdup(kv->green);
}

static int consul_get_state(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    struct wctl_kv_rollout kv;

    if (kv_read(consul_of(t), name, &kv) != 0)
        return -1;
    state_from_kv(&kv, name, st);
    wctl_kv_dispose(&kv);
    return 0;
}

/* The number of instances of service <svc> (only those passing with <passing>). */
static int count_instances(struct consul_target *ct, const char *svc, bool passing, unsigned *n)
{
    char *esvc = wctl_url_escape(svc);
    char *url = wr_xasprintf("%s/v1/health/service/%s%s", ct->url, esvc, passing ? "?passing" : "");
    struct wctl_resp r;
    json_t *list = NULL;
    int rc = wctl_http_do(ct->http, "GET", url, NULL, &r);

    if (rc == 0 && r.status != 200)
        rc = http_error("GET", url, &r);
    if (rc == 0)
        list = json_loadb(r.body, r.len, 0, NULL); /* not inside json_is_array(): a macro */
    if (rc == 0 && !json_is_array(list))
        rc = wctl_fail("GET %s: the answer is not a JSON array", url);
    if (rc == 0)
        *n = (unsigned)json_array_size(list);
    json_decref(list);
    wctl_resp_dispose(&r);
    free(url);
    free(esvc);
    return rc;
}

static int colour_health(struct consul_target *ct, struct wctl_colour *c)
{
    if (count_instances(ct, c->cluster, false, &c->endpoints) != 0 ||
        count_instances(ct, c->cluster, true, &c->healthy) != 0)
        return -1;
    c->has_health = true;
    return 0;
}

static int consul_get_stats(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    struct consul_target *ct = consul_of(t);

    if (consul_get_state(t, name, st) != 0)
        return -1;
    return colour_health(ct, &st->blue) == 0 && colour_health(ct, &st->green) == 0 ? 0 : -1;
}

/* One check-and-set write of <weight> over <kv>: 1 written, 0 lost the race, -1 failed. */
static int kv_cas(struct consul_target *ct, const char *name, const struct wctl_kv_rollout *kv,
                  int weight)
{
    char *url = kv_url(ct, name, kv->modify_index);
    char *body = wctl_kv_encode(kv, weight);
    struct wctl_resp r;
    int rc = wctl_http_do(ct->http, "PUT", url, body, &r);

    if (rc == 0 && r.status != 200)
        rc = http_error("PUT", url, &r);
    else if (rc == 0)
        rc = strncmp(r.body, "true", 4) == 0 ? 1 : 0;
    wctl_resp_dispose(&r);
    free(body);
    free(url);
    return rc;
}

static int consul_set_weight(struct wctl_target *t, const char *name, enum wctl_change how,
                             int weight, struct wctl_state *st)
{
    struct consul_target *ct = consul_of(t);
    int w = how == WCTL_CHANGE_PROMOTE ? 100 : how == WCTL_CHANGE_ROLLBACK ? 0 : weight;

    for (int attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
        struct wctl_kv_rollout kv;
        int rc;
        if (kv_read(ct, name, &kv) != 0)
            return -1;
        rc = kv.green_weight == w ? 1 : kv_cas(ct, name, &kv, w);
        wctl_kv_dispose(&kv);
        if (rc < 0)
            return -1;
        if (rc > 0)
            return consul_get_state(t, name, st); /* the new ModifyIndex */
        wctl_sleep_ms(50u * (unsigned)attempt, NULL);
    }
    return wctl_fail("%s: key " KV_PREFIX "%s kept changing during %d check-and-set attempts",
                     t->where, name, CAS_ATTEMPTS);
}

static void consul_free(struct wctl_target *t)
{
    struct consul_target *ct = consul_of(t);

    wctl_http_free(ct->http);
    free(ct->url);
    free(t->where);
    free(ct);
}

static const struct wctl_target_ops consul_ops = {
    .kind = "consul",
    .version_label = "KV index",
    .get_state = consul_get_state,
    .get_stats = consul_get_stats,
    .set_weight = consul_set_weight,
    .free = consul_free,
};

/* A target for the Consul agent at <url>, sending <token> (NULL: none) as the ACL token. */
struct wctl_target *wctl_target_consul_new(const char *url, const char *token)
{
    struct consul_target *ct = wr_xcalloc(1, sizeof(*ct));
    char *hdr = token != NULL ? wr_xasprintf("X-Consul-Token: %s", token) : NULL;
    size_t n = strlen(url);

    while (n > 0 && url[n - 1] == '/')
        n--;
    ct->url = wr_xstrndup(url, n);
    ct->http = wctl_http_new(hdr);
    ct->base.ops = &consul_ops;
    ct->base.where = wr_xasprintf("Consul %s", ct->url);
    free(hdr);
    return &ct->base;
}
