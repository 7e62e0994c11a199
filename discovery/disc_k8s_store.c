/* discovery/disc_k8s_store.c -- the object cache of the kubernetes provider.
 *
 * Objects are kept trimmed to what the view needs: a Service without its managedFields and
 * foreign annotations is a tenth of its size, and an EndpointSlice keeps only its addresses,
 * conditions and ports. Memory stays small with thousands of objects, and two versions of an
 * object that differ only in what weir ignores compare equal, so they cost no view build. The
 * Secrets are decoded and checked (certificate and key parse and match) once, when they
 * arrive, so that a bad Secret is reported once and never reaches the snapshot build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "disc_k8s.h"

static json_t *get(json_t *o, const char *key)
{
    return json_object_get(o, key);
}

/* Copies <key> of <from> into <to> when present. */
static void keep(json_t *to, json_t *from, const char *key)
{
    json_t *v = json_object_get(from, key);

    if (v != NULL)
        json_object_set(to, key, v);
}

/* metadata with name, namespace, and the annotations whose key starts with one of <prefixes>. */
static json_t *trim_meta(json_t *md, const char *const *prefixes)
{
    json_t *out = json_object(), *ann = get(md, "annotations"), *v, *keptann = NULL;
    const char *key;

    keep(out, md, "name");
    keep(out, md, "namespace");
    json_object_foreach(ann, key, v)
    {
        for (unsigned i = 0; prefixes != NULL && prefixes[i] != NULL; i++) {
            if (strncmp(key, prefixes[i], strlen(prefixes[i])) != 0 || !json_is_string(v))
                continue;
            if (keptann == NULL)
                keptann = json_object();
            json_object_set(keptann, key, v);
            break;
        }
    }
    if (keptann != NULL)
        json_object_set_new(out, "annotations", keptann);
    return out;
}

static json_t *trim_service(json_t *obj)
{
    static const char *const ann[] = {"weir.io/", NULL};
    json_t *out = json_object(), *spec = get(obj, "spec"), *s = json_object();
    json_t *lb = get(get(obj, "status"), "loadBalancer");

    json_object_set_new(out, "metadata", trim_meta(get(obj, "metadata"), ann));
    keep(s, spec, "type");
    keep(s, spec, "ports");
    json_object_set_new(out, "spec", s);
    if (json_array_size(get(lb, "ingress")) > 0)
        json_object_set_new(out, "status",
                            json_pack("{s:{s:O}}", "loadBalancer", "ingress", get(lb, "ingress")));
    json_decref(obj);
    return out;
}

static json_t *trim_slice(json_t *obj)
{
    json_t *md = get(obj, "metadata"), *eps = get(obj, "endpoints"), *e;
    const char *svc = json_string_value(get(get(md, "labels"), "kubernetes.io/service-name"));
    size_t i;

    if (svc == NULL) {
        json_decref(obj);
        return NULL;
    }
    json_t *out = json_object(), *m = trim_meta(md, NULL), *list = json_array();
    json_object_set_new(m, "service", json_string(svc));
    json_object_set_new(out, "metadata", m);
    keep(out, obj, "addressType");
    keep(out, obj, "ports");
    json_array_foreach(eps, i, e)
    {
        json_t *addr = json_array_get(get(e, "addresses"), 0), *c = get(e, "conditions");
        if (!json_is_string(addr))
            continue;
        json_t *t = json_pack("{s:O}", "address", addr);
        /* ready: nil means ready (the API's rule); terminating: nil means not terminating */
        if (json_is_false(get(c, "ready")))
            json_object_set_new(t, "ready", json_false());
        if (json_is_true(get(c, "terminating")))
            json_object_set_new(t, "terminating", json_true());
        json_array_append_new(list, t);
    }
    json_object_set_new(out, "endpoints", list);
    json_decref(obj);
    return out;
}

static json_t *trim_ingress(json_t *obj)
{
    static const char *const ann[] = {"kubernetes.io/ingress.class", NULL};
    json_t *out = json_object(), *lb = json_object();
    json_t *ing = get(get(get(obj, "status"), "loadBalancer"), "ingress");

    json_object_set_new(out, "metadata", trim_meta(get(obj, "metadata"), ann));
    keep(out, obj, "spec");
    json_object_set_new(lb, "ingress", json_is_array(ing) ? json_incref(ing) : json_array());
    json_object_set_new(out, "status", json_pack("{s:o}", "loadBalancer", lb));
    json_decref(obj);
    return out;
}

static json_t *trim_class(json_t *obj)
{
    static const char *const ann[] = {"ingressclass.kubernetes.io/is-default-class", NULL};
    json_t *out = json_object(), *s = json_object();

    json_object_set_new(out, "metadata", trim_meta(get(obj, "metadata"), ann));
    keep(s, get(obj, "spec"), "controller");
    json_object_set_new(out, "spec", s);
    json_decref(obj);
    return out;
}

/* Checks that <cert> (PEM, a chain) and <key> (PEM) parse and belong together. */
static const char *check_pair(const char *cert, const char *key)
{
    const char *err = NULL;
    BIO *cb = BIO_new_mem_buf(cert, -1), *kb = BIO_new_mem_buf(key, -1);
    X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);

    if (x == NULL)
        err = "tls.crt is not a PEM certificate";
    else if (pk == NULL)
        err = "tls.key is not a PEM private key";
    else if (X509_check_private_key(x, pk) != 1)
        err = "tls.key does not match the certificate of tls.crt";
    X509_free(x);
    EVP_PKEY_free(pk);
    BIO_free(cb);
    BIO_free(kb);
    return err;
}

json_t *k8s__trim_secret(json_t *obj)
{
    json_t *out = json_object(), *data = get(obj, "data");
    const char *type = json_string_value(get(obj, "type"));
    const char *crt64 = json_string_value(get(data, "tls.crt"));
    const char *key64 = json_string_value(get(data, "tls.key"));
    char *crt = NULL, *key = NULL;
    const char *err = NULL;

    json_object_set_new(out, "metadata", trim_meta(get(obj, "metadata"), NULL));
    if (type == NULL || strcmp(type, "kubernetes.io/tls") != 0)
        err = "is not of type kubernetes.io/tls";
    else if (crt64 == NULL || key64 == NULL)
        err = "has no tls.crt or no tls.key";
    else if ((crt = disc_kube_base64(crt64, strlen(crt64), NULL)) == NULL ||
             (key = disc_kube_base64(key64, strlen(key64), NULL)) == NULL)
        err = "tls.crt or tls.key is not valid base64";
    else
        err = check_pair(crt, key);
    if (err != NULL) {
        json_object_set_new(out, "error", json_string(err));
    } else {
        json_object_set_new(out, "cert_pem", json_string(crt));
        json_object_set_new(out, "key_pem", json_string(key));
    }
    if (key != NULL) /* key material: do not leave it in freed memory */
        OPENSSL_cleanse(key, strlen(key));
    free(crt);
    free(key);
    json_decref(obj);
    return out;
}

const struct k8s_kind_info k8s__kinds[K8S_KINDS] = {
    [K8S_SERVICES] = {"services", "/api/v1", true, trim_service},
    [K8S_SLICES] = {"endpointslices", "/apis/discovery.k8s.io/v1", true, trim_slice},
    [K8S_INGRESSES] = {"ingresses", "/apis/networking.k8s.io/v1", true, trim_ingress},
    [K8S_CLASSES] = {"ingressclasses", "/apis/networking.k8s.io/v1", false, trim_class},
    [K8S_SECRETS] = {"secrets", "/api/v1", true, k8s__trim_secret},
};

bool k8s__obj_key(json_t *obj, char *buf, size_t len)
{
    json_t *md = get(obj, "metadata");
    const char *name = json_string_value(get(md, "name"));
    const char *ns = json_string_value(get(md, "namespace"));
    int n;

    if (name == NULL || name[0] == '\0')
        return false;
    n = ns != NULL && ns[0] != '\0' ? snprintf(buf, len, "%s/%s", ns, name)
                                    : snprintf(buf, len, "%s", name);
    return n > 0 && (size_t)n < len;
}

const char *k8s__obj_rv(json_t *obj)
{
    return json_string_value(get(get(obj, "metadata"), "resourceVersion"));
}

/* Marks in <dirty> the Service whose clusters <obj> (of <kind>) feeds. */
static void mark(json_t *dirty, enum k8s_kind kind, json_t *obj)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(
        json_object_get(md, kind == K8S_SLICES ? "service" : "name")); /* trimmed slices */
    char key[512];

    if (dirty == NULL || (kind != K8S_SERVICES && kind != K8S_SLICES) || ns == NULL || name == NULL)
        return;
    snprintf(key, sizeof(key), "%s/%s", ns, name);
    json_object_set_new(dirty, key, json_true());
}

void k8s__store_put(json_t *store, enum k8s_kind kind, json_t *obj, json_t *dirty, bool *changed)
{
    char key[512];

    if (!k8s__obj_key(obj, key, sizeof(key))) {
        json_decref(obj);
        return;
    }
    json_t *t = k8s__kinds[kind].trim(obj);
    if (t == NULL) {
        k8s__store_del(store, kind, key, dirty, changed);
        return;
    }
    json_t *old = json_object_get(store, key);
    if (old != NULL && json_equal(old, t)) {
        json_decref(t);
        return;
    }
    if (old != NULL)
        mark(dirty, kind, old); /* a slice may move from one Service to another */
    mark(dirty, kind, t);
    json_object_set_new(store, key, t);
    *changed = true;
}

void k8s__store_del(json_t *store, enum k8s_kind kind, const char *key, json_t *dirty,
                    bool *changed)
{
    json_t *old = json_object_get(store, key);

    if (old == NULL)
        return;
    mark(dirty, kind, old);
    json_object_del(store, key);
    *changed = true;
}
