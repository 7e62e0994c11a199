/* discovery/disc_consul_view.c -- the Consul provider's reading and writing: the weir.* tags
 * of a service, the answers of /v1/health/service and /v1/kv, the index rules of blocking
 * queries, and the view built from all of it (the watches themselves are in disc_consul.c).
 *
 * Everything here is a pure function of its inputs (or of struct consul's tables), so the unit
 * tests drive it without a loop or a Consul.
 *
 * Validation is done here rather than left to the config merge in xds/: a view that does not
 * build is rejected as a whole, so one service with a bad tag would otherwise freeze every
 * other service's changes. A bad service is left out with one log line instead.
 */
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disc_consul.h"

#define MAX_WEIGHT 10000 /* xds/ accepts endpoint weights 1..10000 */

/* ---- names and tags ------------------------------------------------------------------------ */

bool consul__name_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

/* A request path prefix or check path: starts with '/', printable ASCII without spaces. */
static bool path_ok(const char *s, bool allow_query)
{
    if (s[0] != '/')
        return false;
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '#')
            return false;
        if (*s == '?' && !allow_query)
            return false;
    }
    return true;
}

void consul__tags_dispose(struct consul_tags *t)
{
    for (uint32_t i = 0; i < t->n_hosts; i++)
        free(t->hosts[i]);
    free(t->hosts);
    free(t->path);
    free(t->health_path);
    memset(t, 0, sizeof(*t));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the comma-separated hosts of <value>; false with *problem on a bad one. */
static bool add_hosts(struct consul_tags *t, const char *value, char **problem)
{
    const char *p = value;

    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t'))
            p++, len--;
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        char *h = wr_xstrndup(p, len);
        for (char *q = h; *q; q++)
            *q = wr_lower(*q);
        if (len > 1 && h[len - 1] == '.')
            h[--len] = '\0';
        const char *name = strncmp(h, "*.", 2) == 0 ? h + 2 : h;
        if (!xds_host_name_valid(name, strlen(name))) {
            *problem = wr_xasprintf("tag \"weir.host=%s\": \"%s\" is not a host name or *.suffix",
                                    value, h);
            free(h);
            return false;
        }
        bool dup = false;
        for (uint32_t i = 0; i < t->n_hosts && !dup; i++)
            dup = strcmp(t->hosts[i], h) == 0;
        if (dup)
            free(h);
        else {
            t->hosts = wr_xrealloc(t->hosts, (t->n_hosts + 1) * sizeof(*t->hosts));
            t->hosts[t->n_hosts++] = h;
        }
        if (end == NULL)
            return true;
        p = end + 1;
    }
}

/* A single-valued tag seen again: the catalog merges the tags of every instance, so two values
 * mean instances that disagree (a deploy in progress). The smaller value wins, so the choice
 * does not depend on the order of the answer, and the disagreement is reported. */
static void set_single(char **slot, const char *key, const char *value, char **note)
{
    if (*slot == NULL) {
        *slot = wr_xstrdup(value);
        return;
    }
    if (strcmp(*slot, value) == 0)
        return;
    if (*note == NULL)
        *note = wr_xasprintf("instances disagree on \"%s\" (\"%s\" and \"%s\"); using \"%s\"", key,
                             *slot, value, strcmp(value, *slot) < 0 ? value : *slot);
    if (strcmp(value, *slot) < 0) {
        free(*slot);
        *slot = wr_xstrdup(value);
    }
}

static bool parse_tag(struct consul_tags *t, const char *tag, char **problem, char **note)
{
    const char *eq = strchr(tag, '=');
    if (eq == NULL) {
        *problem = wr_xasprintf("tag \"%s\" has no \"=value\"", tag);
        return false;
    }
    size_t klen = (size_t)(eq - tag);
    const char *value = eq + 1;
    if (klen == 11 && memcmp(tag, "weir.expose", 11) == 0) {
        if (strcmp(value, "true") == 0)
            t->expose = true;
        else if (strcmp(value, "false") != 0) {
            *problem = wr_xasprintf("tag \"%s\": must be weir.expose=true or false", tag);
            return false;
        }
        return true;
    }
    if (klen == 9 && memcmp(tag, "weir.host", 9) == 0)
        return add_hosts(t, value, problem);
    bool health = klen == 16 && memcmp(tag, "weir.health-path", 16) == 0;
    if (health || (klen == 9 && memcmp(tag, "weir.path", 9) == 0)) {
        if (!path_ok(value, health)) {
            *problem = wr_xasprintf("tag \"%s\": the path must start with \"/\" and have no "
                                    "spaces%s",
                                    tag, health ? "" : ", '?' or '#'");
            return false;
        }
        set_single(health ? &t->health_path : &t->path, health ? "weir.health-path" : "weir.path",
                   value, note);
        return true;
    }
    if (*note == NULL)
        *note = wr_xasprintf("unknown tag \"%.*s\" ignored", (int)klen, tag);
    return true;
}

bool consul__parse_tags(const json_t *tags, struct consul_tags *t, char **problem)
{
    char *note = NULL;
    size_t i;
    const json_t *v;

    consul__tags_dispose(t);
    *problem = NULL;
    json_array_foreach(tags, i, v)
    {
        const char *tag = json_string_value(v);
        if (tag == NULL || strncmp(tag, "weir.", 5) != 0)
            continue;
        if (!parse_tag(t, tag, problem, &note)) {
            free(note);
            consul__tags_dispose(t);
            return false;
        }
    }
    if (t->n_hosts > 1)
        qsort(t->hosts, t->n_hosts, sizeof(*t->hosts), cmp_str);
    *problem = note; /* a warning only: the service is still routed */
    return true;
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool consul__tags_equal(const struct consul_tags *a, const struct consul_tags *b)
{
    if (a->expose != b->expose || a->n_hosts != b->n_hosts || !str_eq(a->path, b->path) ||
        !str_eq(a->health_path, b->health_path))
        return false;
    for (uint32_t i = 0; i < a->n_hosts; i++)
        if (strcmp(a->hosts[i], b->hosts[i]) != 0)
            return false;
    return true;
}

/* ---- health answers -------------------------------------------------------------------------- */

void consul__eps_free(struct consul_ep *eps, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(eps[i].key);
        free(eps[i].address);
    }
    free(eps);
}

bool consul__eps_equal(const struct consul_ep *a, uint32_t na, const struct consul_ep *b,
                       uint32_t nb)
{
    if (na != nb)
        return false;
    for (uint32_t i = 0; i < na; i++)
        if (a[i].weight != b[i].weight || strcmp(a[i].key, b[i].key) != 0 ||
            strcmp(a[i].address, b[i].address) != 0)
            return false;
    return true;
}

static int cmp_ep_key(const void *a, const void *b)
{
    return strcmp(((const struct consul_ep *)a)->key, ((const struct consul_ep *)b)->key);
}

/* "10.0.0.1:8080" / "[fd00::1]:8080" in canonical form, or NULL if <ip> is not an address. */
static char *format_address(const char *ip, long port)
{
    unsigned char bin[16];
    char text[INET6_ADDRSTRLEN];

    if (inet_pton(AF_INET, ip, bin) == 1) {
        inet_ntop(AF_INET, bin, text, sizeof(text));
        return wr_xasprintf("%s:%ld", text, port);
    }
    if (inet_pton(AF_INET6, ip, bin) == 1) {
        inet_ntop(AF_INET6, bin, text, sizeof(text));
        return wr_xasprintf("[%s]:%ld", text, port);
    }
    return NULL;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : "";
}

/* Every check of an entry passes (the query asked for ?passing; this also holds against an
 * agent that ignored it). */
static bool all_passing(const json_t *checks)
{
    size_t i;
    const json_t *ck;

    json_array_foreach(checks, i, ck)
    {
        if (strcmp(jstr(ck, "Status"), "passing") != 0)
            return false;
    }
    return true;
}

static bool parse_entry(const json_t *e, struct consul_ep *ep, struct wr_sbuf *skipped)
{
    const json_t *node = json_object_get(e, "Node"), *svc = json_object_get(e, "Service");
    const char *node_name = jstr(node, "Node"), *id = jstr(svc, "ID");
    json_t *jport = json_object_get(svc, "Port");
    long port = json_is_integer(jport) ? (long)json_integer_value(jport) : 0;

    if (!json_is_object(node) || !json_is_object(svc)) {
        wr_sbuf_printf(skipped, "an entry without Node or Service\n");
        return false;
    }
    if (!all_passing(json_object_get(e, "Checks")))
        return false;
    const char *ip = jstr(svc, "Address");
    if (ip[0] == '\0')
        ip = jstr(node, "Address");
    if (port < 1 || port > 65535) {
        wr_sbuf_printf(skipped, "instance %s/%s: port %ld is not usable\n", node_name, id, port);
        return false;
    }
    char *address = format_address(ip, port);
    if (address == NULL) {
        wr_sbuf_printf(skipped, "instance %s/%s: address \"%s\" is not an IP address\n", node_name,
                       id, ip);
        return false;
    }
    json_int_t weight = 1;
    json_t *jw = json_object_get(json_object_get(svc, "Weights"), "Passing");
    if (json_is_integer(jw))
        weight = json_integer_value(jw);
    ep->weight = (uint32_t)(weight < 1 ? 1 : weight > MAX_WEIGHT ? MAX_WEIGHT : weight);
    ep->key = wr_xasprintf("%s/%s", node_name, id);
    ep->address = address;
    return true;
}

int consul__parse_health(const char *body, size_t len, struct consul_ep **eps, uint32_t *n,
                         char **skipped, char **err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    struct wr_sbuf sk = {0};
    size_t i;
    json_t *e;

    *eps = NULL;
    *n = 0;
    *skipped = NULL;
    if (root == NULL || !json_is_array(root)) {
        *err = root == NULL ? wr_xasprintf("bad JSON at line %d: %s", jerr.line, jerr.text)
                            : wr_xstrdup("the answer is not a JSON array");
        json_decref(root);
        return -1;
    }
    struct consul_ep *v = wr_xcalloc(json_array_size(root) + 1, sizeof(*v));
    uint32_t k = 0;
    json_array_foreach(root, i, e)
    {
        if (parse_entry(e, &v[k], &sk))
            k++;
    }
    json_decref(root);
    qsort(v, k, sizeof(*v), cmp_ep_key);
    /* Two registrations of one address would be one endpoint twice, which xds/ refuses: the
     * first by key stays. */
    uint32_t out = 0;
    for (uint32_t a = 0; a < k; a++) {
        bool dup = false;
        for (uint32_t b = 0; b < out && !dup; b++)
            dup = strcmp(v[b].address, v[a].address) == 0;
        if (dup) {
            free(v[a].key);
            free(v[a].address);
            continue;
        }
        v[out++] = v[a];
    }
    *eps = v;
    *n = out;
    if (sk.len > 0) {
        sk.p[sk.len - 1] = '\0'; /* the last newline */
        *skipped = sk.p;
    }
    return 0;
}

/* ---- KV rollouts --------------------------------------------------------------------------- */

static const char ROLLOUT_PREFIX[] = "weir/rollouts/";

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Decodes standard base64 (padding optional); NULL on a bad character. */
static char *b64_decode(const char *in, size_t *out_len)
{
    size_t len = strlen(in), o = 0;
    char *out = wr_xmalloc(len / 4 * 3 + 4);
    uint32_t acc = 0;
    int bits = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=')
            break;
        int v = b64_value(in[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

void consul__rollouts_free(struct consul_rollout *r, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(r[i].service);
        free(r[i].blue);
        free(r[i].green);
    }
    free(r);
}

static bool colour_ok(json_t *v, const char *which, struct wr_sbuf *pb, const char *key, char **out)
{
    const char *s = json_string_value(v);

    if (s == NULL || !consul__name_ok(s)) {
        wr_sbuf_printf(pb, "%s: \"%s\" must be a Consul service name\n", key, which);
        return false;
    }
    *out = wr_xstrdup(s);
    return true;
}

/* One key's JSON value into <r>; false (described in <pb>) when unusable. */
static bool parse_rollout_value(const char *key, const char *text, size_t len,
                                struct consul_rollout *r, struct wr_sbuf *pb)
{
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *v;
    const char *k;
    bool ok = true;

    if (!json_is_object(o)) {
        wr_sbuf_printf(pb,
                       "%s: the value must be a JSON object like {\"blue\": \"svc-a\", "
                       "\"green\": \"svc-b\", \"green_weight\": 20}\n",
                       key);
        json_decref(o);
        return false;
    }
    r->sticky = -1;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "blue") == 0)
            ok = ok && colour_ok(v, "blue", pb, key, &r->blue);
        else if (strcmp(k, "green") == 0)
            ok = ok && colour_ok(v, "green", pb, key, &r->green);
        else if (strcmp(k, "green_weight") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100) {
                wr_sbuf_printf(pb, "%s: \"green_weight\" must be an integer from 0 to 100\n", key);
                ok = false;
            } else
                r->green_weight = (uint32_t)json_integer_value(v);
        } else if (strcmp(k, "sticky") == 0) {
            if (!json_is_boolean(v)) {
                wr_sbuf_printf(pb, "%s: \"sticky\" must be true or false\n", key);
                ok = false;
            } else
                r->sticky = json_is_true(v);
        } else {
            wr_sbuf_printf(pb, "%s: unknown key \"%s\"\n", key, k);
            ok = false;
        }
    }
    json_decref(o);
    if (ok && (r->blue == NULL || r->green == NULL)) {
        wr_sbuf_printf(pb, "%s: \"blue\" and \"green\" are required\n", key);
        ok = false;
    }
    return ok;
}

static int cmp_rollout(const void *a, const void *b)
{
    return strcmp(((const struct consul_rollout *)a)->service,
                  ((const struct consul_rollout *)b)->service);
}

int consul__parse_rollouts(const char *body, size_t len, struct consul_rollout **out, uint32_t *n,
                           char **problems, char **err)
{
    json_error_t jerr;
    struct wr_sbuf pb = {0};
    size_t i;
    json_t *e, *root = NULL;

    *out = NULL;
    *n = 0;
    *problems = NULL;
    if (body != NULL) {
        root = json_loadb(body, len, 0, &jerr);
        if (root == NULL || !json_is_array(root)) {
            *err = root == NULL ? wr_xasprintf("bad JSON at line %d: %s", jerr.line, jerr.text)
                                : wr_xstrdup("the answer is not a JSON array");
            json_decref(root);
            return -1;
        }
    }
    struct consul_rollout *v = wr_xcalloc(json_array_size(root) + 1, sizeof(*v));
    uint32_t k = 0;
    json_array_foreach(root, i, e)
    {
        const char *key = jstr(e, "Key"), *b64 = json_string_value(json_object_get(e, "Value"));
        const char *name = key + sizeof(ROLLOUT_PREFIX) - 1;
        if (strncmp(key, ROLLOUT_PREFIX, sizeof(ROLLOUT_PREFIX) - 1) != 0 || name[0] == '\0')
            continue; /* the folder itself */
        if (!consul__name_ok(name)) {
            wr_sbuf_printf(&pb, "%s: \"%s\" is not a Consul service name\n", key, name);
            continue;
        }
        size_t vlen;
        char *text = b64 != NULL ? b64_decode(b64, &vlen) : NULL;
        if (text == NULL) {
            wr_sbuf_printf(&pb, "%s: %s\n", key, b64 ? "the value is not base64" : "no value");
            continue;
        }
        struct consul_rollout *r = &v[k];
        memset(r, 0, sizeof(*r));
        if (parse_rollout_value(key, text, vlen, r, &pb)) {
            r->service = wr_xstrdup(name);
            k++;
        } else {
            free(r->blue);
            free(r->green);
        }
        free(text);
    }
    json_decref(root);
    qsort(v, k, sizeof(*v), cmp_rollout);
    *out = v;
    *n = k;
    if (pb.len > 0) {
        pb.p[pb.len - 1] = '\0';
        *problems = pb.p;
    }
    return 0;
}

bool consul__rollouts_equal(const struct consul_rollout *a, uint32_t na,
                            const struct consul_rollout *b, uint32_t nb)
{
    if (na != nb)
        return false;
    for (uint32_t i = 0; i < na; i++)
        if (strcmp(a[i].service, b[i].service) != 0 || strcmp(a[i].blue, b[i].blue) != 0 ||
            strcmp(a[i].green, b[i].green) != 0 || a[i].green_weight != b[i].green_weight ||
            a[i].sticky != b[i].sticky)
            return false;
    return true;
}

const struct consul_rollout *consul__rollout_find(const struct consul *c, const char *service)
{
    struct consul_rollout key = {.service = (char *)service};

    if (c->n_rollouts == 0)
        return NULL;
    return bsearch(&key, c->rollouts, c->n_rollouts, sizeof(key), cmp_rollout);
}

/* ---- blocking-query index ------------------------------------------------------------------ */

uint64_t consul__next_index(uint64_t prev, uint64_t got)
{
    if (got < 1)
        got = 1; /* an index of 0 would not block: the query would spin */
    if (got < prev)
        return 0; /* went backwards (a restored snapshot, ...): start the loop again */
    return got;
}

/* ---- services by name ---------------------------------------------------------------------- */

static uint32_t bucket_of(const struct consul *c, const char *name)
{
    return (uint32_t)(wr_hash64(name, strlen(name), 0) & (c->n_buckets - 1));
}

struct consul_svc *consul__svc_find(const struct consul *c, const char *name)
{
    if (c->n_buckets == 0)
        return NULL;
    for (struct consul_svc *s = c->buckets[bucket_of(c, name)]; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

void consul__svc_insert(struct consul *c, struct consul_svc *s)
{
    if (c->n_svcs + 1 > c->n_buckets) { /* keep chains short: grow to twice the entries */
        uint32_t nb = c->n_buckets ? c->n_buckets * 2 : 64;
        struct consul_svc **old = c->buckets;
        uint32_t on = c->n_buckets;
        c->buckets = wr_xcalloc(nb, sizeof(*c->buckets));
        c->n_buckets = nb;
        for (uint32_t i = 0; i < on; i++)
            for (struct consul_svc *e = old[i], *next; e != NULL; e = next) {
                next = e->next;
                uint32_t b = bucket_of(c, e->name);
                e->next = c->buckets[b];
                c->buckets[b] = e;
            }
        free(old);
    }
    uint32_t b = bucket_of(c, s->name);
    s->next = c->buckets[b];
    c->buckets[b] = s;
    c->n_svcs++;
}

void consul__svc_unlink(struct consul *c, struct consul_svc *s)
{
    for (struct consul_svc **pp = &c->buckets[bucket_of(c, s->name)]; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            c->n_svcs--;
            return;
        }
}

/* ---- the view ------------------------------------------------------------------------------- */

static int cmp_svc(const void *a, const void *b)
{
    return strcmp((*(struct consul_svc *const *)a)->name, (*(struct consul_svc *const *)b)->name);
}

static json_t *render_cluster(const struct consul_svc *s)
{
    json_t *o = json_object(), *eps = json_array();

    json_object_set_new(o, "name", json_sprintf("consul:%s", s->name));
    for (uint32_t i = 0; i < s->n_eps; i++) {
        json_t *ep = json_object();
        json_object_set_new(ep, "address", json_string(s->eps[i].address));
        json_object_set_new(ep, "weight", json_integer(s->eps[i].weight));
        json_array_append_new(eps, ep);
    }
    json_object_set_new(o, "endpoints", eps);
    if (s->tags.health_path != NULL)
        json_object_set_new(o, "health_check",
                            json_pack("{s:s, s:s}", "type", "http", "path", s->tags.health_path));
    return o;
}

static json_t *render_routes(const struct consul_svc *s, bool rollout)
{
    json_t *routes = json_array();
    const char *path = s->tags.path != NULL ? s->tags.path : "/";
    uint32_t n = s->tags.n_hosts ? s->tags.n_hosts : 1;

    for (uint32_t i = 0; i < n; i++) {
        json_t *r = json_object(), *m = json_object();
        const char *host = s->tags.n_hosts ? s->tags.hosts[i] : NULL;
        if (n > 1) /* one route per host: "consul:shop@a.example.com" */
            json_object_set_new(r, "name", json_sprintf("consul:%s@%s", s->name, host));
        else
            json_object_set_new(r, "name", json_sprintf("consul:%s", s->name));
        if (host != NULL)
            json_object_set_new(m, "host", json_string(host));
        json_object_set_new(m, "path_prefix", json_string(path));
        json_object_set_new(r, "match", m);
        json_object_set_new(r, rollout ? "rollout" : "cluster", json_sprintf("consul:%s", s->name));
        json_array_append_new(routes, r);
    }
    return routes;
}

static json_t *render_rollout(const struct consul_rollout *ro)
{
    json_t *o = json_object();

    json_object_set_new(o, "name", json_sprintf("consul:%s", ro->service));
    json_object_set_new(o, "blue", json_sprintf("consul:%s", ro->blue));
    json_object_set_new(o, "green", json_sprintf("consul:%s", ro->green));
    json_object_set_new(o, "green_weight", json_integer(ro->green_weight));
    if (ro->sticky >= 0)
        json_object_set_new(o, "sticky", json_boolean(ro->sticky));
    return o;
}

/* A colour of a rollout can serve once its health watch answered. */
static bool colour_ready(const struct consul *c, const char *name)
{
    const struct consul_svc *s = consul__svc_find(c, name);
    return s != NULL && s->w.answered;
}

/* The rollout of exposed service <s> that can be applied, or NULL. */
static const struct consul_rollout *active_rollout(const struct consul *c,
                                                   const struct consul_svc *s)
{
    const struct consul_rollout *ro = consul__rollout_find(c, s->name);

    if (ro == NULL || !s->exposed || !s->w.answered || !colour_ready(c, ro->blue) ||
        !colour_ready(c, ro->green))
        return NULL;
    return ro;
}

json_t *consul__render(struct consul *c)
{
    struct consul_svc **v = wr_xcalloc(c->n_svcs + 1, sizeof(*v));
    uint32_t n = 0;
    json_t *clusters = json_array(), *routes = json_array(), *rollouts = json_array();

    for (uint32_t b = 0; b < c->n_buckets; b++)
        for (struct consul_svc *s = c->buckets[b]; s != NULL; s = s->next) {
            s->shown = s->w.answered && s->exposed;
            if (s->w.answered && (s->exposed || s->in_rollout))
                v[n++] = s;
        }
    /* A blue or green that is not exposed itself shows only with an applied rollout, so the
     * rollout appears in one view, not one colour at a time. */
    for (uint32_t i = 0; i < n; i++) {
        const struct consul_rollout *ro = active_rollout(c, v[i]);
        if (ro != NULL) {
            consul__svc_find(c, ro->blue)->shown = true;
            consul__svc_find(c, ro->green)->shown = true;
        }
    }
    qsort(v, n, sizeof(*v), cmp_svc);
    for (uint32_t i = 0; i < n; i++) {
        struct consul_svc *s = v[i];
        if (!s->shown)
            continue;
        if (s->cluster_json == NULL)
            s->cluster_json = render_cluster(s);
        json_array_append(clusters, s->cluster_json);
        if (!s->exposed)
            continue;
        const struct consul_rollout *ro = active_rollout(c, s);
        if (ro != NULL)
            json_array_append_new(rollouts, render_rollout(ro));
        if (s->routes_json == NULL || s->routes_rollout != (ro != NULL)) {
            json_decref(s->routes_json);
            s->routes_json = render_routes(s, ro != NULL);
            s->routes_rollout = ro != NULL;
        }
        json_array_extend(routes, s->routes_json);
    }
    free(v);
    return json_pack("{s:o, s:o, s:o}", "clusters", clusters, "routes", routes, "rollouts",
                     rollouts);
}

void consul__svc_forget(struct consul_svc *s, bool cluster, bool routes)
{
    if (cluster) {
        json_decref(s->cluster_json);
        s->cluster_json = NULL;
    }
    if (routes) {
        json_decref(s->routes_json);
        s->routes_json = NULL;
    }
}

static bool same_items(json_t *a, json_t *b)
{
    size_t n = json_array_size(a);

    if (n != json_array_size(b))
        return false;
    for (size_t i = 0; i < n; i++)
        if (json_array_get(a, i) != json_array_get(b, i))
            return false;
    return true;
}

bool consul__same_view(json_t *a, json_t *b)
{
    return same_items(json_object_get(a, "clusters"), json_object_get(b, "clusters")) &&
           same_items(json_object_get(a, "routes"), json_object_get(b, "routes")) &&
           json_equal(json_object_get(a, "rollouts"), json_object_get(b, "rollouts"));
}
