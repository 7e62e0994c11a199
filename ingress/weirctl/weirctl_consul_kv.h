/* ingress/weirctl/weirctl_consul_kv.h -- the rollout's Consul KV value (weirctl_consul_kv.c). */
#ifndef WEIRCTL_CONSUL_KV_H
#define WEIRCTL_CONSUL_KV_H

#include <stddef.h>
#include <stdint.h>

struct json_t;

/* One rollout as stored in weir/rollouts/NAME. <blue> and <green> are borrowed from <value>. */
struct wctl_kv_rollout {
    struct json_t *value; /* the decoded object, every member kept for the write-back */
    const char *blue;     /* Consul service names */
    const char *green;
    int green_weight;      /* 0 when the object has none */
    uint64_t modify_index; /* for ?cas= */
};

/* Decodes standard, padded base64; returns 0 with a malloc'd NUL-terminated <*out>, or -1. */
int wctl_b64_decode(const char *in, size_t len, char **out, size_t *out_len);

/* Parses the answer to GET /v1/kv/KEY into <kv> (dispose it with wctl_kv_dispose()). Returns
 * 0, or -1 with <*err> set to a static message (and nothing to dispose). */
int wctl_kv_parse(const char *body, size_t len, struct wctl_kv_rollout *kv, const char **err);

/* The value to PUT: <kv>'s object with green_weight replaced; malloc'd, the caller frees it. */
char *wctl_kv_encode(const struct wctl_kv_rollout *kv, int green_weight);

void wctl_kv_dispose(struct wctl_kv_rollout *kv);

#endif /* WEIRCTL_CONSUL_KV_H */
