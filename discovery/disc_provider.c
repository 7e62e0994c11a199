/* discovery/disc_provider.c -- the part every provider shares: creation from the config,
 * status, back-off, error accounting and the hand-over of views. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "disc_priv.h"

/* One entry per enum xds_source from XDS_SRC_FILE on; NULL: not built into this binary. */
static const struct disc_ops *const ops_by_type[] = {
    &disc__file_ops,   /* XDS_SRC_FILE */
    &disc__dns_ops,    /* XDS_SRC_DNS_SRV */
    &disc__consul_ops, /* XDS_SRC_CONSUL */
    &disc__k8s_ops,    /* XDS_SRC_KUBERNETES */
};

static const char *const reason_names[DISC_ERR_COUNT] = {
    "connect", "http", "parse", "timeout", "auth", "gone", "dns",
};

const char *disc_reason_name(enum disc_reason r)
{
    return (unsigned)r < DISC_ERR_COUNT ? reason_names[r] : "unknown";
}

static char *make_label(const struct xds_discovery *d)
{
    switch (d->type) {
    case XDS_SRC_FILE:
        return wr_xasprintf("file:%s", d->path);
    case XDS_SRC_DNS_SRV:
        return wr_xasprintf("dns_srv:%s", d->name);
    case XDS_SRC_CONSUL:
        return wr_xasprintf("consul:%s", d->address);
    default:
        return wr_xasprintf("kubernetes:%s", d->kubeconfig ? d->kubeconfig : "in-cluster");
    }
}

struct disc_provider *disc_provider_new(uv_loop_t *loop, const struct xds_discovery *cfg,
                                        unsigned index, const char *base_dir, disc_view_cb cb,
                                        void *arg)
{
    (void)base_dir; /* the config loader already resolved every path */
    unsigned t = (unsigned)cfg->type - XDS_SRC_FILE;
    if (cfg->type < XDS_SRC_FILE || t >= WR_ARRAY_LEN(ops_by_type) || ops_by_type[t] == NULL) {
        wr_err("discovery[%u]: provider type \"%s\" is not built into this binary", index,
               xds_source_name(cfg->type));
        return NULL;
    }
    struct disc_provider *p = wr_xcalloc(1, sizeof(*p));
    p->ops = ops_by_type[t];
    p->loop = loop;
    p->index = index;
    xds_discovery_copy(&p->cfg, cfg);
    p->label = make_label(&p->cfg);
    p->cb = cb;
    p->cb_arg = arg;
    p->rng = wr_mono_ns() ^ ((uint64_t)(index + 1) * 0x9e3779b97f4a7c15ull);
    if (p->ops->init(p) != 0) {
        xds_discovery_dispose(&p->cfg);
        free(p->label);
        free(p);
        return NULL;
    }
    return p;
}

int disc_provider_start(struct disc_provider *p)
{
    wr_info("discovery[%u]: starting %s", p->index, p->label);
    return p->ops->start(p);
}

void disc_provider_close(struct disc_provider *p)
{
    if (p == NULL || p->closing)
        return;
    p->closing = true;
    p->ops->close(p);
}

void disc__closed(struct disc_provider *p)
{
    xds_discovery_dispose(&p->cfg);
    free(p->label);
    free(p->last_error);
    free(p);
}

unsigned disc_provider_index(const struct disc_provider *p)
{
    return p->index;
}

void disc_provider_set_index(struct disc_provider *p, unsigned index)
{
    if (p->index != index)
        wr_info("discovery[%u]: %s is now discovery[%u]", p->index, p->label, index);
    p->index = index;
}

void disc_provider_set_stale_after(struct disc_provider *p, uint32_t ms)
{
    p->cfg.stale_after_ms = ms;
}

static uint64_t mono_ms(void)
{
    return wr_mono_ns() / 1000000u;
}

void disc_provider_status(const struct disc_provider *p, struct disc_status *st)
{
    memset(st, 0, sizeof(*st));
    st->label = p->label;
    st->type = p->ops->type;
    st->last_update_s = p->last_update_s;
    st->updates = p->updates;
    memcpy(st->errors, p->errors, sizeof(st->errors));
    st->restarts = p->restarts;
    /* Stale: the source has not confirmed the view for that long. A source that confirms it
     * without changes (a services file that stays as it is) is fresh. */
    if (p->cfg.stale_after_ms > 0)
        st->stale = p->updates == 0 || mono_ms() - p->last_ok_mono_ms > p->cfg.stale_after_ms;
}

void disc__publish(struct disc_provider *p, json_t *view)
{
    struct timespec ts;

    if (p->closing) {
        json_decref(view);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    p->last_update_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    p->last_update_mono_ms = p->last_ok_mono_ms = mono_ms();
    p->updates++;
    wr_free(&p->last_error); /* the source works again: its next problem is news */
    p->cb(p->cb_arg, p, view);
}

void disc__alive(struct disc_provider *p)
{
    p->last_ok_mono_ms = mono_ms();
    wr_free(&p->last_error);
}

void disc__error(struct disc_provider *p, enum disc_reason reason, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if ((unsigned)reason < DISC_ERR_COUNT)
        p->errors[reason]++;
    if (p->last_error != NULL && strcmp(p->last_error, msg) == 0)
        return; /* counted; logged already */
    free(p->last_error);
    p->last_error = wr_xstrdup(msg);
    wr_warn("discovery[%u] %s: %s (%s)", p->index, p->label, msg, disc_reason_name(reason));
}

uint32_t disc__backoff_step(struct disc_provider *p, uint32_t *backoff_ms)
{
    if (*backoff_ms == 0)
        *backoff_ms = 250;
    else if (*backoff_ms < 30000)
        *backoff_ms = WR_MIN(*backoff_ms * 2, 30000u);
    p->restarts++;
    /* +-20 % jitter so that many weirs do not hit a recovering source in step */
    uint64_t r = wr_rand_next(&p->rng) % 401; /* 0..400 -> -20.0 % .. +20.0 % */
    return (uint32_t)((uint64_t)*backoff_ms * (800 + r) / 1000);
}

uint32_t disc__backoff_next(struct disc_provider *p)
{
    return disc__backoff_step(p, &p->backoff_ms);
}

void disc__backoff_reset(struct disc_provider *p)
{
    p->backoff_ms = 0;
    wr_free(&p->last_error); /* after a success, the next failure is news again */
}

char *disc__read_file(const char *path, size_t *len, bool trim)
{
    /* O_NONBLOCK: a FIFO put where a file should be must not stall the loop in open() */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    char *buf;
    size_t n = 0;
    int err = 0;

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    else if (st.st_size > (64 << 20))
        err = EFBIG;
    if (err != 0) {
        close(fd);
        errno = err;
        return NULL;
    }
    buf = wr_xmalloc((size_t)st.st_size + 1);
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            err = errno;
        if (r <= 0)
            break; /* 0: the file shrank while read; what was read is what there is */
        n += (size_t)r;
    }
    close(fd);
    if (err != 0) {
        free(buf);
        errno = err;
        return NULL;
    }
    while (trim && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}
