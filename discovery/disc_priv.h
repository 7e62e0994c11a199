/* discovery/disc_priv.h -- what the providers of discovery/ share; nothing outside this folder
 * includes it.
 *
 * Every provider is a struct disc_provider (disc_provider.c) plus its own state behind
 * p->impl, driven by a table of operations. The common part owns the settings copy, the label,
 * the counters, the back-off and the hand-over of views.
 */
#ifndef WEIR_DISC_PRIV_H
#define WEIR_DISC_PRIV_H

#include <weir/disc.h>

struct disc_provider;

struct disc_ops {
    const char *type; /* "file", "dns_srv", "consul", "kubernetes" */
    /* Sets p->impl; returns 0 or a negative WR_E* after logging. */
    int (*init)(struct disc_provider *p);
    int (*start)(struct disc_provider *p);
    /* Stops everything and closes every handle; once the last close callback ran the provider
     * calls disc__closed(p). May be called before start(). */
    void (*close)(struct disc_provider *p);
};

/* The implemented providers (one file each). */
extern const struct disc_ops disc__file_ops;   /* disc_file.c */
extern const struct disc_ops disc__dns_ops;    /* disc_dns.c */
extern const struct disc_ops disc__consul_ops; /* disc_consul.c */
extern const struct disc_ops disc__k8s_ops;    /* disc_k8s.c */

struct disc_provider {
    const struct disc_ops *ops;
    uv_loop_t *loop;
    unsigned index;
    struct xds_discovery cfg; /* deep copy, paths resolved */
    char *label;
    disc_view_cb cb;
    void *cb_arg;
    bool closing;
    char *last_error; /* the last message disc__error() logged (NULL after a view) */
    uint32_t poll_ms; /* file provider: the stat poll period (0: its default; tests set it) */
    /* status */
    double last_update_s;
    uint64_t last_update_mono_ms;
    uint64_t last_ok_mono_ms; /* the source last confirmed the view (a new one or the same) */
    uint64_t updates;
    uint64_t errors[DISC_ERR_COUNT];
    uint64_t restarts;
    /* back-off */
    uint32_t backoff_ms;
    uint64_t rng;
    void *impl;
};

/* Hands <view> (a new reference) to the owner and records the update. */
void disc__publish(struct disc_provider *p, json_t *view);
/* The source answered and the view it gave last is still current (nothing new to hand over):
 * the provider is not stale, however long ago its last view came. */
void disc__alive(struct disc_provider *p);
/* Counts an error of <reason> and logs it (once per distinct message in a row, so that a source
 * that stays down does not flood the log). */
void disc__error(struct disc_provider *p, enum disc_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The next retry delay: capped exponential (250 ms doubling up to 30 s) with +-20 % jitter;
 * disc__backoff_reset() after a success. Each call counts one restart. */
uint32_t disc__backoff_next(struct disc_provider *p);
void disc__backoff_reset(struct disc_provider *p);
/* The provider's handles are all closed: frees it. */
void disc__closed(struct disc_provider *p);

/* Reads a whole small regular file (a token, a certificate) into a NUL-terminated heap string,
 * without a trailing newline when <trim>. Returns NULL with errno set, also for what is not a
 * regular file (EINVAL; a FIFO would otherwise block the loop) or a read error. */
char *disc__read_file(const char *path, size_t *len, bool trim);

#endif /* WEIR_DISC_PRIV_H */
