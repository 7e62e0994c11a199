/* discovery/disc_k8s_ingress.c -- Ingress objects (networking.k8s.io/v1) in the kubernetes
 * provider's view; the Service part and the shared helpers are in disc_k8s_view.c.
 *
 * An Ingress is weir's when its spec.ingressClassName is the configured class or names an
 * IngressClass whose controller is weir.io/ingress-controller; without a class name, when its
 * kubernetes.io/ingress.class annotation is the configured class; without either, when an
 * IngressClass of weir's controller is marked default. Each rule path becomes a route to the
 * cluster of its backend Service port:
 *   Exact                   path_exact
 *   Prefix                  element-wise as the API defines it: "/foo" serves "/foo" and
 *                           "/foo/..." but not "/foobar" (a path_exact and a path_prefix "/foo/")
 *   ImplementationSpecific  path_prefix, a plain string prefix
 * Route names: "ingress:<ns>/<name>:<rule>:<path>" (":exact" for the exact half of a Prefix
 * path), "ingress:<ns>/<name>:default" for the defaultBackend.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disc_k8s.h"

static const char *sget(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static bool is_ours(struct k8s_build *b, json_t *ing)
{
    const char *cls = sget(json_object_get(ing, "spec"), "ingressClassName");
    const char *ann = sget(json_object_get(json_object_get(ing, "metadata"), "annotations"),
                           "kubernetes.io/ingress.class");
    json_t *classes = b->in->stores[K8S_CLASSES], *c;
    const char *key;

    if (cls != NULL) {
        c = json_object_get(classes, cls);
        return strcmp(cls, b->in->ingress_class) == 0 ||
               (c != NULL &&
                strcmp(sget(json_object_get(c, "spec"), "controller") ?: "", K8S_CONTROLLER) == 0);
    }
    if (ann != NULL)
        return strcmp(ann, b->in->ingress_class) == 0;
    json_object_foreach(classes, key, c)
    {
        const char *def = sget(json_object_get(json_object_get(c, "metadata"), "annotations"),
                               "ingressclass.kubernetes.io/is-default-class");
        if (def != NULL && strcmp(def, "true") == 0 &&
            strcmp(sget(json_object_get(c, "spec"), "controller") ?: "", K8S_CONTROLLER) == 0)
            return true;
    }
    return false;
}

/* The cluster of an IngressBackend, or NULL after a problem line. */
static const char *backend(struct k8s_build *b, const char *ns, json_t *be, const char *who)
{
    json_t *svc = json_object_get(be, "service"), *port = json_object_get(svc, "port");
    const char *name = sget(svc, "name");
    char num[16];
    const char *want = sget(port, "name");

    if (name == NULL) {
        k8s__problem(b, "%s: only Service backends are supported", who);
        return NULL;
    }
    if (want == NULL || want[0] == '\0') {
        json_int_t n = json_integer_value(json_object_get(port, "number"));
        if (n < 1 || n > 65535) {
            k8s__problem(b, "%s: backend Service %s needs port.number or port.name", who, name);
            return NULL;
        }
        snprintf(num, sizeof(num), "%d", (int)n);
        want = num;
    }
    return k8s__cluster(b, ns, name, want, NULL, who);
}

static void add_route(struct k8s_build *b, const char *name, const char *host, const char *kind,
                      const char *path, const char *cluster)
{
    json_t *m = json_pack("{s:s}", kind, path);

    if (host != NULL)
        json_object_set_new(m, "host", json_string(host));
    json_array_append_new(
        b->routes, json_pack("{s:s, s:o, s:s}", "name", name, "match", m, "cluster", cluster));
}

/* One rule path: its route(s). */
static void path_routes(struct k8s_build *b, const char *base, const char *ns, const char *host,
                        json_t *p, const char *who)
{
    const char *type = sget(p, "pathType"), *path = sget(p, "path");
    char name[700];

    if (path == NULL || path[0] == '\0')
        path = "/";
    if (type == NULL)
        type = "ImplementationSpecific";
    if (!k8s__path_ok(path)) {
        k8s__problem(b, "%s: path \"%s\" must start with \"/\"", who, path);
        return;
    }
    bool exact = strcmp(type, "Exact") == 0, prefix = strcmp(type, "Prefix") == 0;
    if (!exact && !prefix && strcmp(type, "ImplementationSpecific") != 0) {
        k8s__problem(b, "%s: pathType \"%s\" is not supported", who, type);
        return;
    }
    const char *cluster = backend(b, ns, json_object_get(p, "backend"), who);
    if (cluster == NULL)
        return;
    if (exact) {
        add_route(b, base, host, "path_exact", path, cluster);
        return;
    }
    size_t len = strlen(path);
    while (prefix && len > 1 && path[len - 1] == '/') /* "/foo/" is "/foo" for Prefix */
        len--;
    if (!prefix || len == 1) {
        add_route(b, base, host, "path_prefix", path, cluster);
        return;
    }
    char *p1 = wr_xstrndup(path, len), *p2 = wr_xasprintf("%s/", p1);
    snprintf(name, sizeof(name), "%s:exact", base);
    add_route(b, name, host, "path_exact", p1, cluster);
    add_route(b, base, host, "path_prefix", p2, cluster);
    free(p1);
    free(p2);
}

static void rules(struct k8s_build *b, json_t *ing, const char *ns, const char *name,
                  json_t *all_hosts)
{
    json_t *rule, *p;
    size_t ri, pi;
    char who[600], base[600];

    json_array_foreach(json_object_get(json_object_get(ing, "spec"), "rules"), ri, rule)
    {
        const char *h = sget(rule, "host");
        char *host = h != NULL && h[0] != '\0' ? wr_xstrdup(h) : NULL;
        snprintf(who, sizeof(who), "Ingress %s/%s: rules[%zu]", ns, name, ri);
        if (host != NULL && !k8s__host_ok(host)) {
            k8s__problem(b, "%s: host \"%s\" is not a host name or *.suffix", who, h);
            free(host);
            continue;
        }
        if (host != NULL)
            json_array_append_new(all_hosts, json_string(host));
        json_array_foreach(json_object_get(json_object_get(rule, "http"), "paths"), pi, p)
        {
            snprintf(who, sizeof(who), "Ingress %s/%s: rules[%zu].paths[%zu]", ns, name, ri, pi);
            snprintf(base, sizeof(base), "ingress:%s/%s:%zu:%zu", ns, name, ri, pi);
            path_routes(b, base, ns, host, p, who);
        }
        free(host);
    }
}

static void tls(struct k8s_build *b, json_t *ing, const char *ns, const char *name,
                json_t *all_hosts)
{
    json_t *t, *h;
    size_t i, j;
    char who[600];

    json_array_foreach(json_object_get(json_object_get(ing, "spec"), "tls"), i, t)
    {
        const char *secret = sget(t, "secretName");
        json_t *hosts = json_array();
        snprintf(who, sizeof(who), "Ingress %s/%s: tls[%zu]", ns, name, i);
        json_array_foreach(json_object_get(t, "hosts"), j, h)
        {
            char *host = wr_xstrdup(json_string_value(h) ?: "");
            if (k8s__host_ok(host))
                json_array_append_new(hosts, json_string(host));
            else
                k8s__problem(b, "%s: host \"%s\" is not a host name or *.suffix", who,
                             json_string_value(h) ?: "");
            free(host);
        }
        if (json_array_size(json_object_get(t, "hosts")) == 0) /* none: the rules' hosts */
            json_array_extend(hosts, all_hosts);
        if (secret == NULL || secret[0] == '\0')
            k8s__problem(b, "%s: no secretName", who);
        else if (json_array_size(hosts) == 0)
            k8s__problem(b, "%s: no host to serve the certificate for", who);
        else
            k8s__cert(b, ns, secret, hosts, who);
        json_decref(hosts);
    }
}

static void ingress(struct k8s_build *b, json_t *ing)
{
    json_t *md = json_object_get(ing, "metadata");
    const char *ns = sget(md, "namespace"), *name = sget(md, "name");
    char key[512], who[600];

    if (ns == NULL || name == NULL || !is_ours(b, ing))
        return;
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    json_object_set_new(b->out->ingresses, key, json_true());
    json_t *all_hosts = json_array();
    rules(b, ing, ns, name, all_hosts);
    json_t *def = json_object_get(json_object_get(ing, "spec"), "defaultBackend");
    if (def != NULL) {
        snprintf(who, sizeof(who), "Ingress %s/%s: defaultBackend", ns, name);
        const char *cluster = backend(b, ns, def, who);
        char rname[600];
        snprintf(rname, sizeof(rname), "ingress:%s/%s:default", ns, name);
        if (cluster != NULL)
            add_route(b, rname, NULL, "path_prefix", "/", cluster);
    }
    tls(b, ing, ns, name, all_hosts);
    json_decref(all_hosts);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void k8s__ingresses(struct k8s_build *b)
{
    json_t *ings = b->in->stores[K8S_INGRESSES], *v;
    const char **keys = wr_xcalloc(json_object_size(ings) + 1, sizeof(*keys));
    const char *key;
    size_t n = 0;

    json_object_foreach(ings, key, v)
    {
        keys[n++] = key;
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (size_t i = 0; i < n; i++)
        ingress(b, json_object_get(ings, keys[i]));
    free(keys);
}
