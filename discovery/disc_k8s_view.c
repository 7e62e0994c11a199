/* discovery/disc_k8s_view.c -- the kubernetes provider's view (include/weir/disc.h) from its
 * object cache: Services annotated weir.io/expose (INTERFACES.md §4) and, in
 * disc_k8s_ingress.c, Ingress objects.
 *
 * Pure functions over jansson objects: no I/O and no logging. Every object that cannot be used
 * (a bad annotation, a missing Service, a Secret that is not a TLS pair) is left out with one
 * line in out->problems, and the rest of the view is built as usual: one bad object never
 * holds back the others. Objects are visited sorted by namespace/name, so the same cache
 * always gives the same view, and equal routes resolve the same way every time (the earlier
 * one wins in the router).
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disc_k8s.h"

#define HC_INTERVAL_MS 5000

/* ---- helpers ------------------------------------------------------------------------------ */

void k8s__problem(struct k8s_build *b, const char *fmt, ...)
{
    va_list ap;
    char *line = NULL;

    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    va_end(ap);
    json_object_set_new(b->out->problems, line, json_true());
    free(line);
}

static const char *sget(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const char *annotation(json_t *obj, const char *key)
{
    return sget(json_object_get(json_object_get(obj, "metadata"), "annotations"), key);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of <o>, sorted (borrowed from <o>; free the array). */
static const char **sorted_keys(json_t *o, size_t *n)
{
    const char **v = wr_xcalloc(json_object_size(o) + 1, sizeof(*v));
    const char *key;
    json_t *val;

    *n = 0;
    json_object_foreach(o, key, val)
    {
        v[(*n)++] = key;
    }
    qsort(v, *n, sizeof(*v), cmp_str);
    return v;
}

bool k8s__host_ok(char *h)
{
    size_t len = strlen(h);

    for (char *p = h; *p; p++)
        *p = wr_lower(*p);
    if (len > 1 && h[len - 1] == '.')
        h[--len] = '\0';
    if (strncmp(h, "*.", 2) == 0) {
        h += 2;
        len -= 2;
    }
    return xds_host_name_valid(h, len);
}

bool k8s__path_ok(const char *p)
{
    if (p == NULL || p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return false;
    return true;
}

/* A health check path may carry a query ("/healthz?full=1"). */
static bool hc_path_ok(const char *p)
{
    if (p == NULL || p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '#')
            return false;
    return true;
}

/* A Kubernetes object name (RFC 1123 subdomain: lower-case letters, digits, '-' and '.'). */
static bool name_ok(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
              s[i] == '.'))
            return false;
    return true;
}

/* "80" -> 80; anything but 1-5 digits -> -1. */
static long number(const char *s)
{
    long v = 0;
    size_t i = 0;

    for (; s[i] >= '0' && s[i] <= '9' && i < 6; i++)
        v = v * 10 + (s[i] - '0');
    return i > 0 && s[i] == '\0' ? v : -1;
}

/* ---- clusters ----------------------------------------------------------------------------- */

static json_t *service(struct k8s_build *b, const char *ns, const char *name)
{
    char key[512];

    snprintf(key, sizeof(key), "%s/%s", ns, name);
    return json_object_get(b->in->stores[K8S_SERVICES], key);
}

static bool is_tcp(json_t *port)
{
    const char *proto = sget(port, "protocol");
    return proto == NULL || strcmp(proto, "TCP") == 0;
}

/* The Service port that <want> names (a name or a number); without <want>, the only port, else
 * the first TCP one. NULL with *why. */
static json_t *pick_port(json_t *svc, const char *want, char *why, size_t len)
{
    json_t *ports = json_object_get(json_object_get(svc, "spec"), "ports"), *p, *found = NULL;
    size_t i;

    if (json_array_size(ports) == 0) {
        snprintf(why, len, "has no ports");
        return NULL;
    }
    if (want != NULL) {
        long num = number(want);
        json_array_foreach(ports, i, p)
        {
            const char *name = sget(p, "name");
            if (num >= 0 ? json_integer_value(json_object_get(p, "port")) == num
                         : name != NULL && strcmp(name, want) == 0) {
                found = p;
                break;
            }
        }
        if (found == NULL) {
            snprintf(why, len, "has no port \"%s\"", want);
            return NULL;
        }
    } else if (json_array_size(ports) == 1) {
        found = json_array_get(ports, 0);
    } else {
        json_array_foreach(ports, i, p)
        {
            if (is_tcp(p)) {
                found = p;
                break;
            }
        }
    }
    if (found == NULL || !is_tcp(found)) {
        snprintf(why, len, "has no TCP port to use");
        return NULL;
    }
    json_int_t n = json_integer_value(json_object_get(found, "port"));
    if (n < 1 || n > 65535) {
        snprintf(why, len, "has a port without a valid number");
        return NULL;
    }
    return found;
}

/* The port of <slice> that carries Service port <sp>: the same name, else its only port. */
static json_int_t slice_port(json_t *slice, json_t *sp)
{
    json_t *ports = json_object_get(slice, "ports"), *p, *found = NULL;
    const char *want = sget(sp, "name");
    size_t i;

    if (want == NULL)
        want = "";
    json_array_foreach(ports, i, p)
    {
        const char *name = sget(p, "name");
        if (strcmp(name != NULL ? name : "", want) == 0) {
            found = p;
            break;
        }
    }
    if (found == NULL && json_array_size(ports) == 1)
        found = json_array_get(ports, 0);
    json_int_t n = json_integer_value(json_object_get(found, "port"));
    return found != NULL && is_tcp(found) && n >= 1 && n <= 65535 ? n : 0;
}

/* Adds the endpoints of <slice> for <port> to <addrs> ("address" -> "healthy"|"draining"). */
static void slice_endpoints(json_t *slice, json_int_t port, json_t *addrs)
{
    const char *type = sget(slice, "addressType");
    bool v6 = type != NULL && strcmp(type, "IPv6") == 0;
    json_t *e;
    size_t i;

    if (type == NULL || (!v6 && strcmp(type, "IPv4") != 0)) /* FQDN: not supported */
        return;
    json_array_foreach(json_object_get(slice, "endpoints"), i, e)
    {
        unsigned char bin[16];
        char text[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 10];
        const char *a = sget(e, "address");
        bool ready = !json_is_false(json_object_get(e, "ready"));
        bool terminating = json_is_true(json_object_get(e, "terminating"));

        if (a == NULL || (!ready && !terminating))
            continue;
        /* canonical text, so that two spellings of one address do not make duplicates */
        if (inet_pton(v6 ? AF_INET6 : AF_INET, a, bin) != 1 ||
            inet_ntop(v6 ? AF_INET6 : AF_INET, bin, text, sizeof(text)) == NULL)
            continue;
        snprintf(addr, sizeof(addr), v6 ? "[%s]:%d" : "%s:%d", text, (int)port);
        const char *had = sget(addrs, addr);
        if (had != NULL && strcmp(had, "healthy") == 0)
            continue; /* listed by two slices: ready wins */
        json_object_set_new(addrs, addr, json_string(ready ? "healthy" : "draining"));
    }
}

static void index_slices(struct k8s_build *b);

static json_t *endpoints(struct k8s_build *b, const char *ns, const char *svc, json_t *sp)
{
    char key[512];
    json_t *addrs = json_object(), *list = json_array(), *slice;
    size_t i, n;

    if (b->slices_by_svc == NULL) /* only when a cluster is built rather than reused */
        index_slices(b);
    snprintf(key, sizeof(key), "%s/%s", ns, svc);
    json_array_foreach(json_object_get(b->slices_by_svc, key), i, slice)
    {
        json_int_t port = slice_port(slice, sp);
        if (port > 0)
            slice_endpoints(slice, port, addrs);
    }
    const char **keys = sorted_keys(addrs, &n);
    for (i = 0; i < n; i++) {
        json_t *ep = json_pack("{s:s}", "address", keys[i]);
        if (strcmp(sget(addrs, keys[i]), "draining") == 0)
            json_object_set_new(ep, "health", json_string("draining"));
        json_array_append_new(list, ep);
    }
    free(keys);
    json_decref(addrs);
    return list;
}

/* Builds the cluster <cname> of Service <svc> port <sp>; a problem line goes to *problem. */
static json_t *new_cluster(struct k8s_build *b, json_t *svc, json_t *sp, const char *cname,
                           const char *hc_path, char **problem)
{
    json_t *md = json_object_get(svc, "metadata");
    const char *ns = sget(md, "namespace"), *name = sget(md, "name");
    json_t *c = json_pack("{s:s, s:o}", "name", cname, "endpoints", endpoints(b, ns, name, sp));
    const char *own = annotation(svc, "weir.io/health-path");
    const char *path = own != NULL ? own : hc_path;

    if (path != NULL && hc_path_ok(path))
        json_object_set_new(c, "health_check",
                            json_pack("{s:s, s:s, s:i}", "type", "http", "path", path,
                                      "interval_ms", HC_INTERVAL_MS));
    else if (path != NULL)
        *problem = wr_xasprintf("Service %s/%s: weir.io/health-path \"%s\" must be a path "
                                "starting with \"/\"; no health check",
                                ns, name, path);
    return c;
}

const char *k8s__cluster(struct k8s_build *b, const char *ns, const char *name, const char *want,
                         const char *hc_path, const char *who)
{
    json_t *svc = service(b, ns, name), *cache = b->in->cluster_cache;
    char why[128], cname[600], svc_key[512], ckey[600];

    if (svc == NULL) {
        k8s__problem(b, "%s: Service %s/%s not found", who, ns, name);
        return NULL;
    }
    if (want == NULL)
        want = annotation(svc, "weir.io/port");
    /* A cluster built before, while neither the Service nor its slices changed: as it was. */
    snprintf(svc_key, sizeof(svc_key), "%s/%s", ns, name);
    snprintf(ckey, sizeof(ckey), "%s\x01%s", want ? want : "", hc_path ? hc_path : "");
    json_t *hit = json_object_get(json_object_get(cache, svc_key), ckey);
    if (hit != NULL) {
        json_t *c = json_object_get(hit, "c");
        const char *cn = sget(c, "name"), *p = sget(hit, "p");
        if (p != NULL)
            k8s__problem(b, "%s", p);
        if (json_object_get(b->clusters, cn) == NULL)
            json_object_set(b->clusters, cn, c);
        return json_object_iter_key(json_object_iter_at(b->clusters, cn));
    }
    const char *type = sget(json_object_get(svc, "spec"), "type");
    if (type != NULL && strcmp(type, "ExternalName") == 0) {
        k8s__problem(b, "%s: Service %s/%s is of type ExternalName, which is not supported", who,
                     ns, name);
        return NULL;
    }
    json_t *sp = pick_port(svc, want, why, sizeof(why));
    if (sp == NULL) {
        k8s__problem(b, "%s: Service %s/%s %s", who, ns, name, why);
        return NULL;
    }
    snprintf(cname, sizeof(cname), "%s/%s:%d", ns, name,
             (int)json_integer_value(json_object_get(sp, "port")));
    json_t *c = json_object_get(b->clusters, cname);
    if (c == NULL) {
        char *problem = NULL;
        c = new_cluster(b, svc, sp, cname, hc_path, &problem);
        json_object_set_new(b->clusters, cname, c);
        if (problem != NULL)
            k8s__problem(b, "%s", problem);
        if (cache != NULL) {
            json_t *per = json_object_get(cache, svc_key);
            if (per == NULL)
                json_object_set_new(cache, svc_key, per = json_object());
            json_object_set_new(per, ckey, json_pack("{s:O, s:s?}", "c", c, "p", problem));
        }
        free(problem);
    }
    return json_object_iter_key(json_object_iter_at(b->clusters, cname));
}

/* ---- certificates and routes -------------------------------------------------------------- */

void k8s__cert(struct k8s_build *b, const char *ns, const char *name, json_t *hosts,
               const char *who)
{
    char key[512];
    json_t *h;
    size_t i;

    snprintf(key, sizeof(key), "%s/%s", ns, name);
    json_object_set_new(b->out->secrets, key, json_true());
    json_t *sec = json_object_get(b->in->stores[K8S_SECRETS], key);
    if (sec == NULL) {
        if (json_object_get(b->in->secrets_known, key) != NULL)
            k8s__problem(b, "%s: Secret %s not found; no TLS for it", who, key);
        return;
    }
    if (sget(sec, "error") != NULL) {
        k8s__problem(b, "%s: Secret %s %s; no TLS for it", who, key, sget(sec, "error"));
        return;
    }
    json_t *c = json_object_get(b->certs, key);
    if (c == NULL) {
        c = json_pack("{s:[], s:O, s:O}", "hosts", "cert_pem", json_object_get(sec, "cert_pem"),
                      "key_pem", json_object_get(sec, "key_pem"));
        json_object_set_new(b->certs, key, c);
    }
    json_t *have = json_object_get(c, "hosts");
    json_array_foreach(hosts, i, h)
    {
        bool dup = false;
        for (size_t j = 0; j < json_array_size(have) && !dup; j++)
            dup = json_equal(json_array_get(have, j), h);
        if (!dup)
            json_array_append(have, h);
    }
}

/* ---- Services ----------------------------------------------------------------------------- */

struct svc_ann {
    json_t *hosts; /* sorted, unique; empty: any host */
    const char *path, *port, *hc, *tls, *blue, *green, *sticky;
    long weight;
};

/* Splits weir.io/host; false after a problem line. */
static bool parse_hosts(struct k8s_build *b, const char *who, const char *v, json_t *out)
{
    char *copy = wr_xstrdup(v), *save = NULL;
    bool ok = true;

    for (char *h = strtok_r(copy, ",", &save); h != NULL && ok; h = strtok_r(NULL, ",", &save)) {
        while (*h == ' ' || *h == '\t')
            h++;
        for (size_t n = strlen(h); n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'); n--)
            h[n - 1] = '\0';
        if (h[0] == '\0') /* "a.example.com, ,b.example.com": an empty item is skipped */
            continue;
        char *orig = wr_xstrdup(h);
        if (!k8s__host_ok(h)) {
            k8s__problem(b, "%s: weir.io/host \"%s\" is not a host name or *.suffix", who, orig);
            ok = false;
        } else {
            bool dup = false;
            for (size_t i = 0; i < json_array_size(out) && !dup; i++)
                dup = strcmp(json_string_value(json_array_get(out, i)), h) == 0;
            if (!dup)
                json_array_append_new(out, json_string(h));
        }
        free(orig);
    }
    free(copy);
    if (ok && json_array_size(out) == 0) {
        k8s__problem(b, "%s: weir.io/host is empty", who);
        ok = false;
    }
    return ok;
}

static int cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

static void sort_strings(json_t *a)
{
    size_t n = json_array_size(a);
    json_t **v = wr_xcalloc(n + 1, sizeof(*v));

    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(a, i));
    qsort(v, n, sizeof(*v), cmp_json_str);
    json_array_clear(a);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, v[i]);
    free(v);
}

/* Reads and checks the weir.io/ annotations of <svc>; false after a problem line. */
static bool read_annotations(struct k8s_build *b, json_t *svc, const char *who, struct svc_ann *a)
{
    const char *hosts = annotation(svc, "weir.io/host"),
               *w = annotation(svc, "weir.io/green-weight");

    memset(a, 0, sizeof(*a));
    a->hosts = json_array();
    a->path = annotation(svc, "weir.io/path");
    a->port = annotation(svc, "weir.io/port");
    a->hc = annotation(svc, "weir.io/health-path");
    a->tls = annotation(svc, "weir.io/tls-secret");
    a->blue = annotation(svc, "weir.io/blue");
    a->green = annotation(svc, "weir.io/green");
    a->sticky = annotation(svc, "weir.io/sticky");
    if (hosts != NULL && !parse_hosts(b, who, hosts, a->hosts))
        return false;
    sort_strings(a->hosts);
    if (a->path == NULL)
        a->path = "/";
#define BAD(...)                                                                                   \
    do {                                                                                           \
        k8s__problem(b, __VA_ARGS__);                                                              \
        return false;                                                                              \
    } while (0)
    if (!k8s__path_ok(a->path))
        BAD("%s: weir.io/path \"%s\" must be a path starting with \"/\"", who, a->path);
    if (a->port != NULL && a->port[0] == '\0')
        BAD("%s: weir.io/port is empty", who);
    if (a->hc != NULL && !hc_path_ok(a->hc))
        BAD("%s: weir.io/health-path \"%s\" must be a path starting with \"/\"", who, a->hc);
    if (a->tls != NULL && !name_ok(a->tls))
        BAD("%s: weir.io/tls-secret \"%s\" is not a Secret name", who, a->tls);
    if ((a->blue != NULL) != (a->green != NULL))
        BAD("%s: weir.io/blue and weir.io/green go together", who);
    if (a->blue != NULL && (!name_ok(a->blue) || !name_ok(a->green)))
        BAD("%s: weir.io/blue and weir.io/green must be Service names", who);
    if (a->blue != NULL && strcmp(a->blue, a->green) == 0)
        BAD("%s: weir.io/blue and weir.io/green must differ", who);
    a->weight = w != NULL ? number(w) : 0;
    if (a->weight < 0 || a->weight > 100)
        BAD("%s: weir.io/green-weight \"%s\" must be an integer from 0 to 100", who, w);
    if (a->sticky != NULL && strcmp(a->sticky, "true") != 0 && strcmp(a->sticky, "false") != 0)
        BAD("%s: weir.io/sticky must be \"true\" or \"false\"", who);
#undef BAD
    return true;
}

/* The cluster of a rollout colour: its own weir.io/port, else the exposing Service's. */
static const char *colour(struct k8s_build *b, const char *ns, const char *name,
                          const struct svc_ann *a, const char *who)
{
    json_t *svc = service(b, ns, name);
    const char *want = svc != NULL && annotation(svc, "weir.io/port") != NULL ? NULL : a->port;
    return k8s__cluster(b, ns, name, want, a->hc, who);
}

static void expose(struct k8s_build *b, json_t *svc)
{
    json_t *md = json_object_get(svc, "metadata");
    const char *ns = sget(md, "namespace"), *name = sget(md, "name");
    const char *v = annotation(svc, "weir.io/expose");
    char who[512], rname[600];
    struct svc_ann a;

    if (v == NULL || strcmp(v, "true") != 0 || ns == NULL || name == NULL)
        return;
    snprintf(who, sizeof(who), "Service %s/%s", ns, name);
    if (!read_annotations(b, svc, who, &a)) {
        json_decref(a.hosts);
        return;
    }
    const char *blue = NULL, *green = NULL, *own = NULL;
    if (a.blue != NULL) {
        blue = colour(b, ns, a.blue, &a, who);
        green = colour(b, ns, a.green, &a, who);
        if (blue == NULL || green == NULL)
            k8s__problem(b, "%s: the rollout cannot be built; routing to the Service itself", who);
    }
    if (blue == NULL || green == NULL) {
        own = k8s__cluster(b, ns, name, a.port, NULL, who);
        if (own == NULL) {
            json_decref(a.hosts);
            return;
        }
    }
    snprintf(rname, sizeof(rname), "%s/%s", ns, name);
    if (own == NULL) {
        json_t *ro = json_pack("{s:s, s:s, s:s, s:i}", "name", rname, "blue", blue, "green", green,
                               "green_weight", (int)a.weight);
        if (a.sticky != NULL)
            json_object_set_new(ro, "sticky", json_boolean(strcmp(a.sticky, "true") == 0));
        json_array_append_new(b->rollouts, ro);
    }
    size_t n = json_array_size(a.hosts) > 0 ? json_array_size(a.hosts) : 1;
    for (size_t i = 0; i < n; i++) {
        const char *host = json_string_value(json_array_get(a.hosts, i));
        json_t *m = json_pack("{s:s}", "path_prefix", a.path);
        json_t *r = json_pack("{s:s, s:o}", "name", rname, "match", m);
        if (n > 1) /* one route per host: "ns/svc@shop.example.com" */
            json_object_set_new(r, "name", json_sprintf("%s@%s", rname, host));
        if (host != NULL)
            json_object_set_new(m, "host", json_string(host));
        json_object_set_new(r, own != NULL ? "cluster" : "rollout",
                            json_string(own != NULL ? own : rname));
        json_array_append_new(b->routes, r);
    }
    if (a.tls != NULL && json_array_size(a.hosts) == 0)
        k8s__problem(b, "%s: weir.io/tls-secret needs weir.io/host (the certificate's hosts)", who);
    else if (a.tls != NULL)
        k8s__cert(b, ns, a.tls, a.hosts, who);
    json_decref(a.hosts);
}

/* ---- the whole view ----------------------------------------------------------------------- */

static void index_slices(struct k8s_build *b)
{
    json_t *slices = b->in->stores[K8S_SLICES];
    size_t n;
    const char **keys = sorted_keys(slices, &n);

    b->slices_by_svc = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_object_get(slices, keys[i]), *md = json_object_get(s, "metadata");
        char key[512];
        snprintf(key, sizeof(key), "%s/%s", sget(md, "namespace") ? sget(md, "namespace") : "",
                 sget(md, "service"));
        json_t *a = json_object_get(b->slices_by_svc, key);
        if (a == NULL) {
            a = json_array();
            json_object_set_new(b->slices_by_svc, key, a);
        }
        json_array_append(a, s);
    }
    free(keys);
}

/* <o>'s values in key order, as a new array. */
static json_t *values_sorted(json_t *o)
{
    size_t n;
    const char **keys = sorted_keys(o, &n);
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append(a, json_object_get(o, keys[i]));
    free(keys);
    return a;
}

void k8s__view_build(const struct k8s_view_in *in, struct k8s_view_out *out)
{
    struct k8s_build b = {
        .in = in,
        .out = out,
        .clusters = json_object(),
        .certs = json_object(),
        .routes = json_array(),
        .rollouts = json_array(),
    };
    json_t *services = in->stores[K8S_SERVICES];
    size_t n;

    memset(out, 0, sizeof(*out));
    out->secrets = json_object();
    out->ingresses = json_object();
    out->problems = json_object();
    const char **keys = sorted_keys(services, &n);
    for (size_t i = 0; i < n; i++)
        expose(&b, json_object_get(services, keys[i]));
    free(keys);
    k8s__ingresses(&b);

    out->view = json_pack("{s:o, s:o, s:o}", "clusters", values_sorted(b.clusters), "routes",
                          b.routes, "rollouts", b.rollouts);
    if (json_object_size(b.certs) > 0) {
        json_t *certs = values_sorted(b.certs), *c;
        size_t i;
        json_array_foreach(certs, i, c)
        {
            sort_strings(json_object_get(c, "hosts"));
        }
        json_object_set_new(out->view, "certificates", certs);
    }
    json_decref(b.slices_by_svc);
    json_decref(b.clusters);
    json_decref(b.certs);
}

void k8s__view_dispose(struct k8s_view_out *out)
{
    json_decref(out->view);
    json_decref(out->secrets);
    json_decref(out->ingresses);
    json_decref(out->problems);
    memset(out, 0, sizeof(*out));
}
