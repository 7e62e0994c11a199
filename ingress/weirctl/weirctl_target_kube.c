/* ingress/weirctl/weirctl_target_kube.c -- the Kubernetes API as a rollout target
 * (INTERFACES.md §5: --kubernetes [--namespace NS] [--kubeconfig F]).
 *
 * A rollout is a Service NAME annotated weir.io/blue and weir.io/green (§4). Its weight is the
 * annotation weir.io/green-weight, changed with a JSON merge patch of the Service: every weir
 * replica sees the change through its watch and converges, and the annotation is the rollout's
 * source of truth (a weight set through one weir's admin API lasts only until it changes).
 *
 * The API server sees no requests, so this target has no counters (like Consul); a colour's
 * endpoint health is the count of its EndpointSlice endpoints (all, and those ready).
 *
 * Settings: --kubeconfig F, else the first file of $KUBECONFIG, else ~/.kube/config, else the
 * in-cluster service account (include/weir/disc_kube.h). Namespace: --namespace NS (-n), else
 * the context's, else "default". The permissions an operator needs: get and patch on services,
 * list on endpointslices (discovery.k8s.io) in that namespace.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include <weir/disc_kube.h>
#include <weir/wr.h>

#include "weirctl.h"

#define KUBE_TIMEOUT_MS 30000
#define KUBE_MAX_BODY   (64u << 20)

struct kube_target {
    struct wctl_target base;
    struct disc_kube kube;
    char *ns;
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
};

static struct kube_target *kube_of(struct wctl_target *t)
{
    return WR_CONTAINER_OF(t, struct kube_target, base);
}

struct body {
    struct wr_sbuf buf;
    bool too_big;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;

    if (b->buf.len + size * n > KUBE_MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    wr_sbuf_add(&b->buf, p, size * n);
    return size * n;
}

/* One request to the API server; <body> is a merge patch for PATCH. 0 with <r> filled (any
 * status) or -1 (reported). */
static int kube_do(struct kube_target *kt, const char *method, const char *path, const char *body,
                   struct wctl_resp *r)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    char *err = NULL, *auth = NULL, *url = wr_xasprintf("%s%s", kt->kube.server, path);
    const char *token = disc_kube_token(&kt->kube, &err);
    struct body b = {0};
    CURL *c = kt->curl;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    if (err != NULL) {
        rc = wctl_fail("%s", err);
        goto out;
    }
    if (token != NULL) {
        auth = wr_xasprintf("Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (strcmp(method, "PATCH") == 0) {
        h = curl_slist_append(h, "Content-Type: application/merge-patch+json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PATCH");
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    kt->errbuf[0] = '\0';
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        rc = wctl_fail("%s %s: %s", method, url,
                       b.too_big       ? "answer too large"
                       : kt->errbuf[0] ? kt->errbuf
                                       : curl_easy_strerror(cc));
        wr_sbuf_dispose(&b.buf);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    wr_sbuf_add(&b.buf, "", 1);
    r->body = b.buf.p;
    r->len = b.buf.len - 1;
out:
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    free(auth);
    free(err);
    free(url);
    return rc;
}

/* Reports an answer that is not 200: the Status message of the API server. */
static int api_error(struct kube_target *kt, const char *what, const struct wctl_resp *r)
{
    json_t *st = json_loadb(r->body, r->len, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));
    char buf[512];

    snprintf(buf, sizeof(buf), "%s", msg != NULL ? msg : wctl_resp_reason(r, buf, sizeof(buf)));
    json_decref(st);
    return wctl_fail("%s: %s: %ld %s", kt->base.where, what, r->status, buf);
}

static const char *annotation(json_t *svc, const char *key)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(svc, "metadata"), "annotations"), key));
}

/* The rollout of Service <svc>: its annotations into <st>; -1 (reported) when it is none. */
static int state_of(struct kube_target *kt, const char *name, json_t *svc, struct wctl_state *st)
{
    const char *blue = annotation(svc, "weir.io/blue"), *green = annotation(svc, "weir.io/green");
    const char *w = annotation(svc, "weir.io/green-weight"),
               *sticky = annotation(svc, "weir.io/sticky");
    const char *rv =
        json_string_value(json_object_get(json_object_get(svc, "metadata"), "resourceVersion"));
    int weight = 0;

    if (blue == NULL || green == NULL)
        return wctl_fail("%s: Service %s/%s is not a rollout: it has no weir.io/blue and "
                         "weir.io/green annotations",
                         kt->base.where, kt->ns, name);
    if (w != NULL && wctl_parse_percent(w, &weight) != 0)
        return wctl_fail("%s: Service %s/%s: weir.io/green-weight \"%s\" is not an integer "
                         "from 0 to 100",
                         kt->base.where, kt->ns, name, w);
    wctl_state_dispose(st);
    st->name = wr_xstrdup(name);
    st->green_weight = weight;
    st->sticky = sticky == NULL ? -1 : strcmp(sticky, "true") == 0;
    st->version = rv != NULL ? wr_xstrdup(rv) : NULL;
    st->blue.cluster = wr_xstrdup(blue);
    st->green.cluster = wr_xstrdup(green);
    return 0;
}

static char *service_path(struct kube_target *kt, const char *name)
{
    char *ens = wctl_url_escape(kt->ns), *ename = wctl_url_escape(name);
    char *p = wr_xasprintf("/api/v1/namespaces/%s/services/%s", ens, ename);

    free(ens);
    free(ename);
    return p;
}

/* GET or PATCH the Service <name> and read its rollout. */
static int service_call(struct kube_target *kt, const char *name, const char *patch,
                        struct wctl_state *st)
{
    char *path = service_path(kt, name), what[600];
    struct wctl_resp r;
    json_t *svc = NULL;
    int rc = kube_do(kt, patch != NULL ? "PATCH" : "GET", path, patch, &r);

    snprintf(what, sizeof(what), "%s Service %s/%s", patch != NULL ? "patching" : "reading", kt->ns,
             name);
    if (rc == 0 && r.status == 404)
        rc = wctl_fail("%s: no Service %s/%s", kt->base.where, kt->ns, name);
    else if (rc == 0 && r.status != 200)
        rc = api_error(kt, what, &r);
    if (rc == 0) /* not inside json_is_object(): a macro that evaluates it twice */
        svc = json_loadb(r.body, r.len, 0, NULL);
    if (rc == 0 && !json_is_object(svc))
        rc = wctl_fail("%s: %s: the answer is not a JSON object", kt->base.where, what);
    if (rc == 0)
        rc = state_of(kt, name, svc, st);
    json_decref(svc);
    wctl_resp_dispose(&r);
    free(path);
    return rc;
}

static int kube_get_state(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    return service_call(kube_of(t), name, NULL, st);
}

/* Endpoints of Service <svc>: all of its EndpointSlices' endpoints, and the ready ones. */
static int colour_health(struct kube_target *kt, struct wctl_colour *c)
{
    char *ens = wctl_url_escape(kt->ns), *sel = wctl_url_escape("kubernetes.io/service-name=");
    char *esvc = wctl_url_escape(c->cluster);
    char *path = wr_xasprintf("/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices"
                              "?labelSelector=%s%s",
                              ens, sel, esvc);
    struct wctl_resp r;
    json_t *list = NULL, *s, *e;
    size_t i, j;
    int rc = kube_do(kt, "GET", path, NULL, &r);

    if (rc == 0 && r.status != 200)
        rc = api_error(kt, "listing EndpointSlices", &r);
    if (rc == 0)
        list = json_loadb(r.body, r.len, 0, NULL);
    if (rc == 0 && !json_is_array(json_object_get(list, "items")))
        rc = wctl_fail("%s: listing EndpointSlices: the answer is not a list", kt->base.where);
    c->endpoints = c->healthy = 0;
    json_array_foreach(rc == 0 ? json_object_get(list, "items") : NULL, i, s)
    {
        json_array_foreach(json_object_get(s, "endpoints"), j, e)
        {
            c->endpoints++;
            if (!json_is_false(json_object_get(json_object_get(e, "conditions"), "ready")))
                c->healthy++;
        }
    }
    c->has_health = rc == 0;
    json_decref(list);
    wctl_resp_dispose(&r);
    free(path);
    free(esvc);
    free(sel);
    free(ens);
    return rc;
}

static int kube_get_stats(struct wctl_target *t, const char *name, struct wctl_state *st)
{
    struct kube_target *kt = kube_of(t);

    if (kube_get_state(t, name, st) != 0)
        return -1;
    return colour_health(kt, &st->blue) == 0 && colour_health(kt, &st->green) == 0 ? 0 : -1;
}

static int kube_set_weight(struct wctl_target *t, const char *name, enum wctl_change how,
                           int weight, struct wctl_state *st)
{
    struct kube_target *kt = kube_of(t);
    int w = how == WCTL_CHANGE_PROMOTE ? 100 : how == WCTL_CHANGE_ROLLBACK ? 0 : weight;
    char patch[128];

    /* read first: a Service that is not a rollout is refused rather than annotated */
    if (kube_get_state(t, name, st) != 0)
        return -1;
    snprintf(patch, sizeof(patch),
             "{\"metadata\":{\"annotations\":{\"weir.io/green-weight\":\"%d\"}}}", w);
    return service_call(kt, name, patch, st);
}

static void kube_free(struct wctl_target *t)
{
    struct kube_target *kt = kube_of(t);

    curl_easy_cleanup(kt->curl);
    disc_kube_dispose(&kt->kube);
    free(kt->ns);
    free(t->where);
    free(kt);
}

static const struct wctl_target_ops kube_ops = {
    .kind = "kubernetes",
    .version_label = "resourceVersion",
    .get_state = kube_get_state,
    .get_stats = kube_get_stats,
    .set_weight = kube_set_weight,
    .free = kube_free,
};

struct wctl_target *wctl_target_kube_new(const char *ns, const char *kubeconfig)
{
    struct kube_target *kt = wr_xcalloc(1, sizeof(*kt));
    char *path = kubeconfig != NULL ? wr_xstrdup(kubeconfig) : disc_kube_default_path();
    char *err = NULL;

    if (disc_kube_load(&kt->kube, path, NULL, &err) != 0) {
        wctl_fail("%s", err);
        free(err);
        free(path);
        free(kt);
        return NULL;
    }
    free(path);
    kt->ns = wr_xstrdup(ns != NULL ? ns : kt->kube.ns);
    kt->curl = curl_easy_init();
    if (kt->curl == NULL) {
        fprintf(stderr, "weirctl: cannot initialise libcurl\n");
        abort();
    }
    curl_easy_setopt(kt->curl, CURLOPT_ERRORBUFFER, kt->errbuf);
    curl_easy_setopt(kt->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(kt->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(kt->curl, CURLOPT_TIMEOUT_MS, (long)KUBE_TIMEOUT_MS);
    curl_easy_setopt(kt->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(kt->curl, CURLOPT_USERAGENT, "weirctl/" WEIR_VERSION);
    curl_easy_setopt(kt->curl, CURLOPT_WRITEFUNCTION, on_data);
    if (kt->kube.ca_file != NULL)
        curl_easy_setopt(kt->curl, CURLOPT_CAINFO, kt->kube.ca_file);
    if (kt->kube.cert_file != NULL) {
        curl_easy_setopt(kt->curl, CURLOPT_SSLCERT, kt->kube.cert_file);
        curl_easy_setopt(kt->curl, CURLOPT_SSLKEY, kt->kube.key_file);
    }
    if (kt->kube.insecure) {
        curl_easy_setopt(kt->curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(kt->curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    kt->base.ops = &kube_ops;
    kt->base.where = wr_xasprintf("Kubernetes %s (%s)", kt->kube.server, kt->kube.source);
    return &kt->base;
}
