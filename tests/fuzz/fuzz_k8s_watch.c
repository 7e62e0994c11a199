/* tests/fuzz/fuzz_k8s_watch.c -- libFuzzer driver for the kubernetes provider's watch stream
 * and view building (discovery/disc_k8s_watch.c, disc_k8s_store.c, disc_k8s_view.c,
 * disc_k8s_ingress.c).
 *
 * The input is a watch stream (newline-delimited events) for Services, then, after a line
 * "--", one for EndpointSlices, then one for Ingresses. Each stream is fed whole, and again
 * split where the input's first byte says; both ways must give the same cache and the same
 * verdict. Then the view is built, and every route must name a cluster or a rollout of the
 * view, and every rollout two of its clusters. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../discovery/disc_k8s.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static void k_init(struct k8s *k)
{
    memset(k, 0, sizeof(*k));
    for (int i = 0; i < K8S_KINDS; i++)
        k->stores[i] = json_object();
    k->dirty_svcs = json_object();
}

static void k_dispose(struct k8s *k)
{
    while (k->watches != NULL)
        k8s__watch_close(k->watches); /* no timer without a provider: freed at once */
    for (int i = 0; i < K8S_KINDS; i++)
        json_decref(k->stores[i]);
    json_decref(k->dirty_svcs);
}

/* Feeds <data> to a new watch of <kind> in <k>, in one piece or split at <cut>. */
static enum k8s_ev feed(struct k8s *k, enum k8s_kind kind, const char *data, size_t len, size_t cut)
{
    struct k8s_watch *w = k8s__watch_new(k, kind, NULL, NULL);
    bool changed = false;
    enum k8s_ev r;

    if (cut >= len) {
        r = k8s__watch_feed(w, data, len, &changed);
    } else {
        char *a = malloc(cut + 1), *b = malloc(len - cut + 1);
        memcpy(a, data, cut);
        memcpy(b, data + cut, len - cut);
        r = k8s__watch_feed(w, a, cut, &changed);
        if (r == K8S_EV_OK)
            r = k8s__watch_feed(w, b, len - cut, &changed);
        free(a);
        free(b);
    }
    return r;
}

static bool has(json_t *view, const char *section, const char *name)
{
    json_t *o;
    size_t i;

    json_array_foreach(json_object_get(view, section), i, o)
    {
        const char *n = json_string_value(json_object_get(o, "name"));
        if (n != NULL && name != NULL && strcmp(n, name) == 0)
            return true;
    }
    return false;
}

static void check_view(json_t *view)
{
    json_t *o;
    size_t i;

    json_array_foreach(json_object_get(view, "routes"), i, o)
    {
        const char *c = json_string_value(json_object_get(o, "cluster"));
        const char *r = json_string_value(json_object_get(o, "rollout"));
        CHECK((c != NULL) != (r != NULL));
        CHECK(c != NULL ? has(view, "clusters", c) : has(view, "rollouts", r));
    }
    json_array_foreach(json_object_get(view, "rollouts"), i, o)
    {
        CHECK(has(view, "clusters", json_string_value(json_object_get(o, "blue"))));
        CHECK(has(view, "clusters", json_string_value(json_object_get(o, "green"))));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    static const enum k8s_kind kinds[] = {K8S_SERVICES, K8S_SLICES, K8S_INGRESSES};
    struct k8s a, b;
    const char *p = (const char *)in, *end = p + size;

    if (size < 1)
        return 0;
    size_t cut = in[0];
    p++;
    k_init(&a);
    k_init(&b);
    for (unsigned i = 0; i < 3 && p <= end; i++) {
        const char *sep = memmem(p, (size_t)(end - p), "\n--\n", 4);
        size_t len = sep != NULL ? (size_t)(sep - p) + 1 : (size_t)(end - p);
        enum k8s_ev ra = feed(&a, kinds[i], p, len, SIZE_MAX);
        enum k8s_ev rb = feed(&b, kinds[i], p, len, cut);
        CHECK(ra == rb);
        CHECK(json_equal(a.stores[kinds[i]], b.stores[kinds[i]]));
        if (sep == NULL)
            break;
        p = sep + 4;
    }
    json_t *cache = json_object();
    struct k8s_view_in vin = {.stores = a.stores, .ingress_class = "weir", .cluster_cache = cache};
    struct k8s_view_out out, again;
    k8s__view_build(&vin, &out);
    check_view(out.view);
    k8s__view_build(&vin, &again); /* with the clusters reused: the same view */
    CHECK(json_equal(out.view, again.view));
    k8s__view_dispose(&out);
    k8s__view_dispose(&again);
    json_decref(cache);
    k_dispose(&a);
    k_dispose(&b);
    return 0;
}
