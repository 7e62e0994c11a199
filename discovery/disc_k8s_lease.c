/* discovery/disc_k8s_lease.c -- one replica writes the Ingress status: leader election with a
 * coordination.k8s.io/v1 Lease, as client-go's leaderelection package does it.
 *
 * The Lease "weir-leader" lives in the pod's namespace (POD_NAMESPACE, else the in-cluster
 * namespace file or the kubeconfig context's namespace). Every RETRY_MS each replica reads it:
 *   - absent: create it, holding it (a 409 means another replica was faster);
 *   - held by this replica: renew it (renewTime = now);
 *   - held by another: take it over when its record has not changed for leaseDurationSeconds
 *     of OUR clock (the holder's clock is never compared with ours, so skew does not matter).
 * Every write carries the resourceVersion that was read (optimistic concurrency): of two
 * replicas racing for an expired lease, one gets 409 Conflict. A leader that could not renew
 * for RENEW_DEADLINE_MS stops writing status before its lease can expire for the others.
 *
 * The leader sets status.loadBalancer.ingress of every Ingress weir serves to the configured
 * publish_address (IPs as "ip", names as "hostname") or to the status.loadBalancer.ingress of
 * the publish_service Service, with a JSON merge patch of the status subresource, only where it
 * differs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "disc_k8s.h"

#define LEASE_NAME        "weir-leader"
#define LEASE_DURATION_S  15
#define RETRY_MS          5000
#define RENEW_DEADLINE_MS 10000

struct status_req {
    struct k8s_lease *l;
    char *key;
    struct disc_http_req *req;
    struct status_req *next;
};

struct k8s_lease {
    struct k8s *k;
    uv_timer_t timer;
    char *ns, *identity, *path;
    struct disc_http_req *req; /* the Lease request in flight */
    json_t *lease;             /* the Lease as last read (NULL: none) */
    bool leading;
    uint64_t renewed_ms;         /* when this replica last wrote the Lease successfully */
    char *obs;                   /* holder + renewTime of another holder, as last observed */
    uint64_t obs_ms;             /* when that observation changed */
    uint32_t obs_duration_s;     /* its leaseDurationSeconds */
    struct status_req *inflight; /* status patches in flight */
};

static uint64_t now_ms(void)
{
    return wr_mono_ns() / 1000000u;
}

/* metav1.MicroTime: RFC 3339 in UTC with microseconds. */
static json_t *micro_time(void)
{
    struct timespec ts;
    struct tm tm;
    char buf[64];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%06ldZ", ts.tv_nsec / 1000);
    return json_string(buf);
}

bool k8s__lease_leading(const struct k8s_lease *l)
{
    return l != NULL && l->leading && now_ms() - l->renewed_ms < RENEW_DEADLINE_MS;
}

/* ---- status ------------------------------------------------------------------------------- */

/* The addresses to publish, as status.loadBalancer.ingress; NULL: none known yet. */
static json_t *desired(struct k8s_lease *l)
{
    const struct xds_discovery *c = &l->k->p->cfg;

    if (c->publish_address != NULL) {
        json_t *a = json_array();
        char *copy = wr_xstrdup(c->publish_address), *save = NULL;
        unsigned char bin[16];
        for (char *s = strtok_r(copy, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
            bool ip = inet_pton(AF_INET, s, bin) == 1 || inet_pton(AF_INET6, s, bin) == 1;
            json_array_append_new(a, json_pack("{s:s}", ip ? "ip" : "hostname", s));
        }
        free(copy);
        return a;
    }
    json_t *svc = json_object_get(l->k->stores[K8S_SERVICES], c->publish_service);
    json_t *ing =
        json_object_get(json_object_get(json_object_get(svc, "status"), "loadBalancer"), "ingress");
    return json_array_size(ing) > 0 ? json_incref(ing) : NULL;
}

static void status_done(void *arg, const struct disc_http_result *res)
{
    struct status_req *s = arg;
    struct k8s_lease *l = s->l;

    for (struct status_req **pp = &l->inflight; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    if (res->curl_code != 0 || res->status != 200)
        disc__error(l->k->p, res->curl_code != 0 ? DISC_ERR_CONNECT : DISC_ERR_HTTP,
                    "writing the status of Ingress %s: %s%ld", s->key,
                    res->curl_code != 0 ? res->error : "HTTP ", res->status);
    else
        wr_info("discovery[%u]: Ingress %s: status.loadBalancer written", l->k->p->index, s->key);
    free(s->key);
    free(s);
}

static bool in_flight(struct k8s_lease *l, const char *key)
{
    for (struct status_req *s = l->inflight; s != NULL; s = s->next)
        if (strcmp(s->key, key) == 0)
            return true;
    return false;
}

static void patch_status(struct k8s_lease *l, const char *key, json_t *want)
{
    static const char *const hdrs[] = {"Content-Type: application/merge-patch+json",
                                       "Accept: application/json", NULL};
    const char *slash = strchr(key, '/');
    char *path = wr_xasprintf("/apis/networking.k8s.io/v1/namespaces/%.*s/ingresses/%s/status",
                              (int)(slash - key), key, slash + 1);
    json_t *patch = json_pack("{s:{s:{s:O}}}", "status", "loadBalancer", "ingress", want);
    char *body = json_dumps(patch, JSON_COMPACT);
    struct status_req *s = wr_xcalloc(1, sizeof(*s));
    struct disc_http_opts o = {
        .method = "PATCH",
        .body = body,
        .body_len = strlen(body),
        .headers = hdrs,
        .timeout_ms = 10000,
        .on_done = status_done,
        .arg = s,
    };

    s->l = l;
    s->key = wr_xstrdup(key);
    s->req = k8s__request(l->k, &o, path);
    if (s->req != NULL) {
        s->next = l->inflight;
        l->inflight = s;
    } else {
        free(s->key);
        free(s);
    }
    free(body);
    json_decref(patch);
    free(path);
}

/* Writes the status of every Ingress of the last view whose status differs, when leading. */
static void sync_status(struct k8s_lease *l)
{
    json_t *ings = l->k->ingresses, *v;
    const char *key;

    if (!k8s__lease_leading(l) || ings == NULL)
        return;
    json_t *want = desired(l);
    if (want == NULL)
        return;
    json_object_foreach(ings, key, v)
    {
        json_t *ing = json_object_get(l->k->stores[K8S_INGRESSES], key);
        json_t *have = json_object_get(
            json_object_get(json_object_get(ing, "status"), "loadBalancer"), "ingress");
        if (ing != NULL && !json_equal(have, want) && !in_flight(l, key))
            patch_status(l, key, want);
    }
    json_decref(want);
}

void k8s__lease_sync(struct k8s_lease *l)
{
    sync_status(l);
}

/* ---- the Lease ---------------------------------------------------------------------------- */

static void set_leading(struct k8s_lease *l, bool on)
{
    if (on)
        l->renewed_ms = now_ms();
    if (on != l->leading)
        wr_info("discovery[%u]: %s the leader (Lease %s/%s, identity %s)", l->k->p->index,
                on ? "now" : "no longer", l->ns, LEASE_NAME, l->identity);
    l->leading = on;
    if (on)
        sync_status(l);
}

static void write_done(void *arg, const struct disc_http_result *res)
{
    struct k8s_lease *l = arg;

    l->req = NULL;
    if (res->curl_code == 0 && (res->status == 200 || res->status == 201)) {
        set_leading(l, true);
        return;
    }
    if (res->curl_code == 0 && res->status == 409) { /* another replica wrote first */
        set_leading(l, false);
        return;
    }
    disc__error(l->k->p, res->curl_code != 0 ? DISC_ERR_CONNECT : DISC_ERR_HTTP,
                "writing Lease %s/%s: %s%ld", l->ns, LEASE_NAME,
                res->curl_code != 0 ? res->error : "HTTP ", res->status);
    if (!k8s__lease_leading(l))
        set_leading(l, false);
}

/* PUT (update, <spec> merged into the Lease read) or POST (create, when none was read). */
static void write_lease(struct k8s_lease *l, json_t *spec)
{
    static const char *const hdrs[] = {"Content-Type: application/json", "Accept: application/json",
                                       NULL};
    json_t *obj;
    char *path;

    if (l->lease != NULL) {
        obj = json_deep_copy(l->lease);
        json_t *s = json_object_get(obj, "spec");
        if (!json_is_object(s))
            json_object_set_new(obj, "spec", s = json_object());
        json_object_update(s, spec);
        path = wr_xstrdup(l->path);
    } else {
        obj = json_pack("{s:s, s:s, s:{s:s, s:s}, s:O}", "apiVersion", "coordination.k8s.io/v1",
                        "kind", "Lease", "metadata", "name", LEASE_NAME, "namespace", l->ns, "spec",
                        spec);
        path = wr_xasprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases", l->ns);
    }
    char *body = json_dumps(obj, JSON_COMPACT);
    struct disc_http_opts o = {
        .method = l->lease != NULL ? "PUT" : "POST",
        .body = body,
        .body_len = strlen(body),
        .headers = hdrs,
        .timeout_ms = 5000,
        .on_done = write_done,
        .arg = l,
    };
    l->req = k8s__request(l->k, &o, path);
    free(body);
    free(path);
    json_decref(obj);
}

static void on_read(struct k8s_lease *l, json_t *lease)
{
    json_t *spec = json_object_get(lease, "spec");
    const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
    const char *renew = json_string_value(json_object_get(spec, "renewTime"));
    json_int_t dur = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
    json_int_t transitions = json_integer_value(json_object_get(spec, "leaseTransitions"));

    json_decref(l->lease);
    l->lease = lease;
    if (holder != NULL && strcmp(holder, l->identity) == 0) { /* renew */
        json_t *upd = json_pack("{s:o, s:i}", "renewTime", micro_time(), "leaseDurationSeconds",
                                LEASE_DURATION_S);
        write_lease(l, upd);
        json_decref(upd);
        return;
    }
    if (l->leading)
        set_leading(l, false);
    char *obs = wr_xasprintf("%s|%s", holder ? holder : "", renew ? renew : "");
    if (l->obs == NULL || strcmp(l->obs, obs) != 0) {
        free(l->obs);
        l->obs = obs;
        l->obs_ms = now_ms();
        l->obs_duration_s = dur > 0 ? (uint32_t)dur : LEASE_DURATION_S;
        if (holder != NULL && holder[0] != '\0')
            return; /* a live holder: wait for its lease to run out on our clock */
    } else {
        free(obs);
    }
    bool expired = holder == NULL || holder[0] == '\0' ||
                   now_ms() - l->obs_ms > (uint64_t)l->obs_duration_s * 1000u;
    if (!expired)
        return;
    json_t *take =
        json_pack("{s:s, s:i, s:o, s:o, s:I}", "holderIdentity", l->identity,
                  "leaseDurationSeconds", LEASE_DURATION_S, "acquireTime", micro_time(),
                  "renewTime", micro_time(), "leaseTransitions", (json_int_t)(transitions + 1));
    write_lease(l, take);
    json_decref(take);
}

static void read_done(void *arg, const struct disc_http_result *res)
{
    struct k8s_lease *l = arg;

    l->req = NULL;
    if (res->curl_code == 0 && res->status == 404) {
        json_decref(l->lease);
        l->lease = NULL;
        json_t *spec = json_pack("{s:s, s:i, s:o, s:o, s:i}", "holderIdentity", l->identity,
                                 "leaseDurationSeconds", LEASE_DURATION_S, "acquireTime",
                                 micro_time(), "renewTime", micro_time(), "leaseTransitions", 0);
        write_lease(l, spec);
        json_decref(spec);
        return;
    }
    json_t *lease = res->curl_code == 0 && res->status == 200
                        ? json_loadb(res->body, res->body_len, 0, NULL)
                        : NULL;
    if (!json_is_object(lease)) {
        json_decref(lease);
        disc__error(l->k->p, res->curl_code != 0 ? DISC_ERR_CONNECT : DISC_ERR_HTTP,
                    "reading Lease %s/%s: %s%ld", l->ns, LEASE_NAME,
                    res->curl_code != 0 ? res->error : "HTTP ", res->status);
        if (l->leading && !k8s__lease_leading(l))
            set_leading(l, false);
        return;
    }
    on_read(l, lease);
}

static void on_tick(uv_timer_t *t)
{
    struct k8s_lease *l = t->data;
    struct disc_http_opts o = {.timeout_ms = 5000, .on_done = read_done, .arg = l};

    if (l->k->closing || l->req != NULL)
        return;
    l->req = k8s__request(l->k, &o, l->path);
    sync_status(l); /* patches that failed are tried again */
}

struct k8s_lease *k8s__lease_new(struct k8s *k)
{
    struct k8s_lease *l = wr_xcalloc(1, sizeof(*l));
    const char *ns = getenv("POD_NAMESPACE"), *pod = getenv("POD_NAME");
    char host[256] = "";

    l->k = k;
    l->ns = wr_xstrdup(ns != NULL && ns[0] != '\0' ? ns : k->kube.ns);
    if (pod == NULL || pod[0] == '\0') {
        gethostname(host, sizeof(host) - 1);
        pod = host;
    }
    l->identity = wr_xstrdup(pod);
    l->path =
        wr_xasprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns, LEASE_NAME);
    uv_timer_init(k->p->loop, &l->timer);
    l->timer.data = l;
    k->open_handles++;
    return l;
}

void k8s__lease_start(struct k8s_lease *l)
{
    wr_info("discovery[%u]: electing the replica that writes Ingress status (Lease %s/%s, "
            "identity %s)",
            l->k->p->index, l->ns, LEASE_NAME, l->identity);
    uv_timer_start(&l->timer, on_tick, 0, RETRY_MS);
}

static void on_closed(uv_handle_t *h)
{
    struct k8s_lease *l = h->data;
    struct k8s *k = l->k;

    json_decref(l->lease);
    free(l->obs);
    free(l->ns);
    free(l->identity);
    free(l->path);
    free(l);
    k8s__handle_closed(k);
}

void k8s__lease_close(struct k8s_lease *l)
{
    disc_http_cancel(l->req);
    while (l->inflight != NULL) {
        struct status_req *s = l->inflight;
        l->inflight = s->next;
        disc_http_cancel(s->req);
        free(s->key);
        free(s);
    }
    uv_close((uv_handle_t *)&l->timer, on_closed);
}
