/* ingress/ing_worker.c -- a worker thread: its loop, listeners, snapshot pins, timeout queues
 * and the per-worker pools of buffers and request objects.
 *
 * Nothing here takes a lock. The control thread talks to a worker through two atomics (the
 * snapshot inbox and a command word) and uv_async_send(); the worker reports the version it
 * serves in served_version.
 */
#include <netinet/in.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "ing_priv.h"

/* ---- pools ---- */

char *ing__block_get(struct ing_worker *w)
{
    if (w->n_free_blocks > 0)
        return w->free_blocks[--w->n_free_blocks];
    return malloc(ING_BLOCK_SIZE);
}

void ing__block_put(struct ing_worker *w, char *b)
{
    if (w->n_free_blocks < ING_POOL_BLOCKS)
        w->free_blocks[w->n_free_blocks++] = b;
    else
        free(b);
}

/* Larger buffers for upstream responses: fewer reads and writes per body (a 64 KiB response
 * passes in one read and one write), taken only while a response is in flight. */
char *ing__upblock_get(struct ing_worker *w)
{
    if (w->n_free_upblocks > 0)
        return w->free_upblocks[--w->n_free_upblocks];
    return malloc(ING_UPBLOCK_SIZE);
}

void ing__buf_release(struct ing_worker *w, struct ing_buf *b)
{
    if (b->base == NULL)
        return;
    if (b->cap == ING_BLOCK_SIZE)
        ing__block_put(w, b->base);
    else if (b->cap == ING_UPBLOCK_SIZE && w->n_free_upblocks < ING_POOL_UPBLOCKS)
        w->free_upblocks[w->n_free_upblocks++] = b->base;
    else
        free(b->base);
    b->base = NULL;
    b->off = b->len = b->cap = 0;
}

struct ing_req *ing__req_get(struct ing_worker *w)
{
    struct ing_req *r;

    if (!wr_list_empty(&w->free_reqs)) {
        struct wr_list *n = w->free_reqs.next;
        wr_list_remove(n);
        w->n_free_reqs--;
        r = WR_CONTAINER_OF(n, struct ing_req, link);
    } else {
        r = malloc(sizeof(*r));
        if (r == NULL)
            return NULL;
    }
    /* Everything but the header arrays and the write vector, which are filled before use. */
    memset(r, 0, offsetof(struct ing_req, hdrs));
    memset(&r->rmsg, 0, offsetof(struct ing_req, rhdrs) - offsetof(struct ing_req, rmsg));
    memset(&r->rscan, 0, offsetof(struct ing_req, iov) - offsetof(struct ing_req, rscan));
    memset(&r->up_wr_len, 0, sizeof(*r) - offsetof(struct ing_req, up_wr_len));
    r->msg.hdrs = r->hdrs;
    r->msg.max_hdrs = ING_MAX_HDRS;
    r->msg.n_hdrs = 0;
    r->rmsg.hdrs = r->rhdrs;
    r->rmsg.max_hdrs = ING_MAX_HDRS;
    r->rmsg.n_hdrs = 0;
    r->scan = r->rscan = 0;
    r->ep_idx = r->wc_idx = r->colour = -1;
    wr_list_init(&r->link);
    return r;
}

void ing__req_put(struct ing_worker *w, struct ing_req *r)
{
    ing__buf_release(w, &r->head_out);
    ing__buf_release(w, &r->resp_out);
    ing__buf_release(w, &r->h2hdr);
    ing__buf_release(w, &r->h2body);
    if (w->n_free_reqs < ING_POOL_REQS) {
        wr_list_insert_head(&w->free_reqs, &r->link);
        w->n_free_reqs++;
    } else {
        free(r);
    }
}

uv_write_t *ing__wreq_get(struct ing_worker *w)
{
    if (w->n_free_wreqs > 0)
        return w->free_wreqs[--w->n_free_wreqs];
    return malloc(sizeof(uv_write_t));
}

void ing__wreq_put(struct ing_worker *w, uv_write_t *wr)
{
    if (w->n_free_wreqs < WR_ARRAY_LEN(w->free_wreqs))
        w->free_wreqs[w->n_free_wreqs++] = wr;
    else
        free(wr);
}

/* ---- snapshot pins ---- */

static void snapref_free(struct ing_snapref *sr)
{
    xds_snapshot_unref(sr->snap);
    free(sr);
}

struct ing_snapref *ing__snap_pin(struct ing_worker *w)
{
    w->cur->pins++;
    return w->cur;
}

void ing__snap_unpin(struct ing_worker *w, struct ing_snapref *sr)
{
    if (--sr->pins == 0 && sr != w->cur) {
        wr_list_remove(&sr->link);
        snapref_free(sr);
    }
}

static void lb_free(void *lb)
{
    ing_lb_free(lb);
}

/* The worker's balancer state for <c> lives in the cluster's slot for this worker: clusters
 * are shared by the snapshots that did not change them, and so is the state (round-robin
 * position, ring). Freed with the cluster, by whichever thread drops its last reference. */
struct ing_lb *ing__snap_lb(struct ing_snapref *sr, const struct xds_cluster *c)
{
    struct xds_wslot *slot = &c->wslots[sr->widx];

    if (slot->p == NULL) {
        slot->free_fn = lb_free;
        slot->p = ing_lb_new(c);
    }
    return slot->p;
}

/* ---- timeout queues ---- */

static void arm_timer(struct ing_worker *w, uint64_t deadline);

void ing__tq_add(struct ing_worker *w, struct ing_tnode *n, uint8_t kind, uint32_t ms)
{
    struct ing_tq *q = NULL;

    for (unsigned i = 0; i < w->n_tqs; i++) {
        if (w->tqs[i].kind == kind && w->tqs[i].duration_ms == ms) {
            q = &w->tqs[i];
            break;
        }
    }
    if (q == NULL) {
        if (w->n_tqs < WR_ARRAY_LEN(w->tqs)) {
            q = &w->tqs[w->n_tqs++];
            wr_list_init(&q->head);
            q->kind = kind;
            q->duration_ms = ms;
        } else {
            /* Out of queues (more than 32 distinct timeouts): use the shortest queue of the
             * same kind that is not longer than asked, so nothing waits too long. */
            for (unsigned i = 0; i < w->n_tqs; i++)
                if (w->tqs[i].kind == kind && w->tqs[i].duration_ms <= ms &&
                    (q == NULL || w->tqs[i].duration_ms > q->duration_ms))
                    q = &w->tqs[i];
            if (q == NULL)
                q = &w->tqs[0];
        }
    }
    wr_list_remove(&n->link);
    n->deadline = uv_now(&w->loop) + q->duration_ms;
    wr_list_insert_tail(&q->head, &n->link);
    if (w->timer_due == 0 || n->deadline < w->timer_due)
        arm_timer(w, n->deadline);
}

void ing__tq_del(struct ing_tnode *n)
{
    wr_list_remove(&n->link);
}

static void on_timer(uv_timer_t *t);

static void arm_timer(struct ing_worker *w, uint64_t deadline)
{
    uint64_t now = uv_now(&w->loop);

    w->timer_due = deadline;
    uv_timer_start(&w->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static void fire(struct ing_tq *q, struct ing_tnode *n)
{
    switch (q->kind) {
    case ING_TQ_CLIENT_HEAD:
    case ING_TQ_CLIENT_IDLE:
    case ING_TQ_CLIENT_SEND:
        ing__conn_timeout(WR_CONTAINER_OF(n, struct ing_conn, tn), q->kind);
        break;
    default:
        ing__up_timeout(WR_CONTAINER_OF(n, struct ing_up, tn), q->kind);
        break;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct ing_worker *w = WR_CONTAINER_OF(t, struct ing_worker, timer);
    uint64_t now = uv_now(&w->loop), next = 0;

    w->timer_due = 0;
    for (unsigned i = 0; i < w->n_tqs; i++) {
        struct ing_tq *q = &w->tqs[i];
        while (!wr_list_empty(&q->head)) {
            struct ing_tnode *n = WR_CONTAINER_OF(q->head.next, struct ing_tnode, link);
            if (n->deadline > now)
                break;
            wr_list_remove(&n->link);
            fire(q, n);
        }
    }
    /* Callbacks may have armed the timer already; find the earliest head either way. */
    for (unsigned i = 0; i < w->n_tqs; i++) {
        struct ing_tq *q = &w->tqs[i];
        if (wr_list_empty(&q->head))
            continue;
        struct ing_tnode *n = WR_CONTAINER_OF(q->head.next, struct ing_tnode, link);
        if (next == 0 || n->deadline < next)
            next = n->deadline;
    }
    if (next != 0 && (w->timer_due == 0 || next < w->timer_due))
        arm_timer(w, next);
}

/* ---- listeners ---- */

static void listener_free(struct ing_listener *l)
{
    xds_counters_unref(l->stats);
    xds_listener_tls_unref(l->tls_cfg);
    free(l->name);
    free(l->address);
    free(l);
}

/* A listener outlives its socket until its last connection is gone: connections read its name,
 * flags, TLS context and counters. */
static void on_listener_closed(uv_handle_t *h)
{
    struct ing_listener *l = WR_CONTAINER_OF(h, struct ing_listener, tcp);

    l->handle_closed = true;
    if (l->n_conns == 0)
        listener_free(l);
}

void ing__listener_conn_closed(struct ing_listener *l)
{
    if (--l->n_conns == 0 && l->handle_closed)
        listener_free(l);
}

/* Takes the TLS settings of <xl> (certificates may change with each snapshot); connections
 * pin the ones they started their handshake with. */
static void listener_set_ctx(struct ing_listener *l, const struct xds_listener *xl)
{
    struct xds_listener_tls *t = xds_listener_tls_ref(xl->tls);

    xds_listener_tls_unref(l->tls_cfg);
    l->tls_cfg = t;
    l->ssl_ctx = t != NULL ? t->ssl_ctx : NULL;
}

static void listener_close(struct ing_listener *l)
{
    if (l->closing)
        return;
    l->closing = true;
    wr_list_remove(&l->link);
    uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

static void on_connection(uv_stream_t *s, int status)
{
    struct ing_listener *l = WR_CONTAINER_OF(s, struct ing_listener, tcp);

    if (status < 0) {
        wr_warn("listener %s: accept failed: %s", l->name, uv_strerror(status));
        return;
    }
    ing__conn_accept(l);
}

/* Binds one SO_REUSEPORT socket for <xl> on worker <w>. */
static int listener_open(struct ing_worker *w, const struct xds_listener *xl)
{
    struct ing_listener *l = wr_xcalloc(1, sizeof(*l));
    int fd, one = 1, rc;

    l->w = w;
    l->name = wr_xstrdup(xl->name);
    l->address = wr_xstrdup(xl->address);
    l->is_tls = xl->tls != NULL;
    l->h2c = xl->h2c;
    l->proxy_protocol = xl->proxy_protocol;
    listener_set_ctx(l, xl);
    l->stats = xl->stats;
    if (l->stats != NULL)
        atomic_fetch_add(&l->stats->refs, 1);
    wr_list_init(&l->link);
    rc = uv_tcp_init_ex(&w->loop, &l->tcp, xl->ss.ss_family);
    if (rc < 0)
        goto fail_free;
    rc = uv_fileno((uv_handle_t *)&l->tcp, &fd);
    if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        rc = -errno;
    if (rc == 0)
        rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&xl->ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rc < 0) {
        wr_err("listener %s: cannot listen on %s: %s", xl->name, xl->address, uv_strerror(rc));
        wr_list_insert_tail(&w->listeners, &l->link);
        listener_close(l);
        return rc;
    }
    wr_list_insert_tail(&w->listeners, &l->link);
    return 0;
fail_free:
    wr_err("listener %s: %s", xl->name, uv_strerror(rc));
    xds_counters_unref(l->stats);
    xds_listener_tls_unref(l->tls_cfg);
    free(l->name);
    free(l->address);
    free(l);
    return rc;
}

/* Makes the worker's listeners those of <s>: opens new ones, closes removed ones (their
 * connections finish their current request and close), keeps the rest untouched. */
static int listeners_sync(struct ing_worker *w, const struct xds_snapshot *s)
{
    int rc = 0;

    if (w->draining)
        return 0;
    for (struct wr_list *n = w->listeners.next, *nx; n != &w->listeners; n = nx) {
        nx = n->next;
        struct ing_listener *l = WR_CONTAINER_OF(n, struct ing_listener, link);
        bool keep = false;
        for (uint32_t i = 0; i < s->n_listeners && !keep; i++) {
            keep = strcmp(s->listeners[i].name, l->name) == 0 &&
                   strcmp(s->listeners[i].address, l->address) == 0 &&
                   (s->listeners[i].tls != NULL) == l->is_tls;
            if (keep) {
                listener_set_ctx(l, &s->listeners[i]);
                l->h2c = s->listeners[i].h2c;
                l->proxy_protocol = s->listeners[i].proxy_protocol;
            }
        }
        if (!keep) {
            for (struct wr_list *cn = w->conns.next, *cnx; cn != &w->conns; cn = cnx) {
                cnx = cn->next; /* draining may close (and unlink) the connection */
                struct ing_conn *c = WR_CONTAINER_OF(cn, struct ing_conn, link);
                if (c->lst == l)
                    ing__conn_drain(c);
            }
            listener_close(l);
        }
    }
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        bool have = false;
        for (struct wr_list *n = w->listeners.next; n != &w->listeners && !have; n = n->next) {
            struct ing_listener *l = WR_CONTAINER_OF(n, struct ing_listener, link);
            have = strcmp(s->listeners[i].name, l->name) == 0 &&
                   strcmp(s->listeners[i].address, l->address) == 0;
        }
        if (!have && listener_open(w, &s->listeners[i]) < 0)
            rc = -1;
    }
    return rc;
}

/* ---- snapshot adoption and commands ---- */

static void adopt(struct ing_worker *w, struct xds_snapshot *s)
{
    struct ing_snapref *sr = wr_xcalloc(1, sizeof(*sr)), *old = w->cur;

    sr->snap = s;
    sr->widx = w->idx;
    wr_list_init(&sr->link);
    w->cur = sr;
    if (old != NULL) {
        if (old->pins == 0)
            snapref_free(old);
        else
            wr_list_insert_tail(&w->retired, &old->link);
    }
    listeners_sync(w, s);
    ing__up_close_idle_draining(w);
    atomic_store_explicit(&w->served_version, s->version, memory_order_release);
}

static void close_listeners(struct ing_worker *w)
{
    while (!wr_list_empty(&w->listeners))
        listener_close(WR_CONTAINER_OF(w->listeners.next, struct ing_listener, link));
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void ing__worker_maybe_exit(struct ing_worker *w)
{
    if (!w->stopping && !(w->draining && w->n_conns == 0))
        return;
    if (w->n_conns > 0)
        return;
    ing__log_flush(w);
    uv_timer_stop(&w->log_timer);
    ing__up_close_idle_all(w);
    close_listeners(w);
    uv_stop(&w->loop);
}

static void on_async(uv_async_t *a)
{
    struct ing_worker *w = WR_CONTAINER_OF(a, struct ing_worker, async);
    struct xds_snapshot *s = atomic_exchange(&w->inbox, NULL);
    uint32_t cmd = atomic_exchange(&w->cmd, 0);

    if (s != NULL)
        adopt(w, s);
    if (cmd & ING_CMD_DRAIN_LISTEN)
        close_listeners(w);
    if (cmd & (ING_CMD_DRAIN | ING_CMD_STOP)) {
        w->draining = true;
        close_listeners(w);
        for (struct wr_list *n = w->conns.next, *nx; n != &w->conns; n = nx) {
            nx = n->next;
            struct ing_conn *c = WR_CONTAINER_OF(n, struct ing_conn, link);
            if (cmd & ING_CMD_STOP)
                ing__conn_close(c);
            else
                ing__conn_drain(c);
        }
        ing__up_close_idle_all(w);
    }
    if (cmd & ING_CMD_STOP)
        w->stopping = true;
    if (w->draining)
        ing__worker_maybe_exit(w);
}

static void on_log_timer(uv_timer_t *t)
{
    ing__log_flush(WR_CONTAINER_OF(t, struct ing_worker, log_timer));
}

/* Closes what is left on the loop (its timers and async handle) and the loop itself. */
static void worker_loop_end(struct ing_worker *w)
{
    ing__up_close_idle_all(w);
    close_listeners(w);
    uv_walk(&w->loop, on_walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
        wr_warn("worker %u: loop closed with handles left", w->idx);
    w->loop_ready = false;
}

static void worker_main(void *arg)
{
    struct ing_worker *w = arg;

    uv_run(&w->loop, UV_RUN_DEFAULT);
    worker_loop_end(w);
    ing__server_worker_exited(w->srv);
}

int ing__worker_start(struct ing_worker *w)
{
    struct xds_snapshot *s = w->srv->snap;
    int rc;

    wr_list_init(&w->retired);
    wr_list_init(&w->listeners);
    wr_list_init(&w->conns);
    wr_list_init(&w->ups);
    wr_list_init(&w->tls_pumpq);
    wr_list_init(&w->free_reqs);
    w->free_blocks = wr_xcalloc(ING_POOL_BLOCKS, sizeof(char *));
    w->rng = wr_mono_ns() ^ ((uint64_t)(w->idx + 1) * 0x9e3779b97f4a7c15ull);
    if (w->rng == 0)
        w->rng = 1;
    rc = uv_loop_init(&w->loop);
    if (rc < 0)
        return rc;
    w->loop_ready = true;
    uv_async_init(&w->loop, &w->async, on_async);
    uv_timer_init(&w->loop, &w->timer);
    uv_timer_init(&w->loop, &w->log_timer);
    uv_idle_init(&w->loop, &w->tls_pump);
    uv_timer_start(&w->log_timer, on_log_timer, 1000, 1000);
    adopt(w, xds_snapshot_ref(s));
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        bool have = false;
        for (struct wr_list *n = w->listeners.next; n != &w->listeners && !have; n = n->next)
            have = strcmp(WR_CONTAINER_OF(n, struct ing_listener, link)->name,
                          s->listeners[i].name) == 0;
        if (!have)
            return -1;
    }
    return uv_thread_create(&w->thread, worker_main, w);
}

/* Frees what the worker still owns after its thread ended. */
void ing__worker_dispose(struct ing_worker *w)
{
    if (w->retired.next == NULL)
        return;        /* never started: the boot failed before it */
    if (w->loop_ready) /* its thread never ran */
        worker_loop_end(w);
    while (!wr_list_empty(&w->retired)) {
        struct ing_snapref *sr = WR_CONTAINER_OF(w->retired.next, struct ing_snapref, link);
        wr_list_remove(&sr->link);
        snapref_free(sr);
    }
    if (w->cur != NULL)
        snapref_free(w->cur);
    w->cur = NULL;
    xds_snapshot_unref(atomic_exchange(&w->inbox, NULL));
    while (!wr_list_empty(&w->free_reqs)) {
        struct wr_list *n = w->free_reqs.next;
        wr_list_remove(n);
        free(WR_CONTAINER_OF(n, struct ing_req, link));
    }
    while (w->n_free_blocks > 0)
        free(w->free_blocks[--w->n_free_blocks]);
    while (w->n_free_upblocks > 0)
        free(w->free_upblocks[--w->n_free_upblocks]);
    while (w->n_free_wreqs > 0)
        free(w->free_wreqs[--w->n_free_wreqs]);
    free(w->free_blocks);
    free(w->logbuf);
}

void ing__worker_publish(struct ing_worker *w, struct xds_snapshot *s)
{
    xds_snapshot_unref(atomic_exchange(&w->inbox, xds_snapshot_ref(s)));
    uv_async_send(&w->async);
}

void ing__worker_command(struct ing_worker *w, uint32_t cmd)
{
    atomic_fetch_or(&w->cmd, cmd);
    uv_async_send(&w->async);
}

int ing__send(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    size_t total = 0;
    int rc = uv_try_write(s, bufs, n);

    if (rc == UV_EAGAIN || rc == UV_ENOSYS)
        rc = 0;
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if ((size_t)rc == total)
        return 1;
    size_t done = (size_t)rc;
    unsigned i = 0;
    while (done >= bufs[i].len) {
        done -= bufs[i].len;
        i++;
    }
    bufs[i].base += done;
    bufs[i].len -= done;
    rc = uv_write(req, s, bufs + i, n - i, cb);
    return rc < 0 ? rc : 0;
}
