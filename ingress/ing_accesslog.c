/* ingress/ing_accesslog.c -- JSON access log: workers format lines into their own 64 KiB chunk
 * and hand full chunks (and, once a second, partial ones) to the control thread through a
 * lock-free stack; the control thread writes them with uv_fs_write on libuv's thread pool, so
 * neither a worker nor the control loop ever blocks on the disk or a slow stdout reader. When
 * the writer falls more than ING_LOG_MAX_QUEUED bytes behind, lines are dropped and counted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ing_priv.h"

#define ING_LOG_MAX_QUEUED (64u << 20)

struct ing_accesslog {
    uv_fs_t req;
    int fd;      /* -1: none */
    bool own_fd; /* we opened it (not stdout) */
    bool writing;
    struct ing_logchunk *queue, **tail; /* FIFO waiting for the writer */
    struct ing_logchunk *cur;           /* being written */
    size_t cur_off;
    int reopen_fd; /* a new destination to switch to after the current write; -2: none */
    bool closing;
    struct ing_server *srv;
};

/* ---- worker side ---- */

static void handoff(struct ing_worker *w)
{
    struct ing_server *srv = w->srv;
    struct ing_logchunk *ch = w->logbuf;

    if (ch == NULL || ch->len == 0)
        return;
    w->logbuf = NULL;
    if (atomic_load_explicit(&srv->log_queued, memory_order_relaxed) > ING_LOG_MAX_QUEUED) {
        atomic_fetch_add_explicit(&srv->log_dropped, 1, memory_order_relaxed);
        free(ch);
        return;
    }
    atomic_fetch_add_explicit(&srv->log_queued, ch->len, memory_order_relaxed);
    struct ing_logchunk *head = atomic_load_explicit(&srv->log_inbox, memory_order_relaxed);
    do {
        ch->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&srv->log_inbox, &head, ch,
                                                    memory_order_release, memory_order_relaxed));
    uv_async_send(&srv->log_async);
}

void ing__log_flush(struct ing_worker *w)
{
    handoff(w);
}

/* Appends <s> as JSON string content (quotes not included). */
static char *esc(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            /* Bytes outside ASCII are logged as \u00XX so every line is valid JSON. */
            memcpy(p, "\\u00", 4);
            p[4] = hex[ch >> 4];
            p[5] = hex[ch & 15];
            p += 6;
        } else {
            *p++ = (char)ch;
        }
    }
    return p;
}

#define LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

void ing__log_request(struct ing_worker *w, struct ing_req *r)
{
    struct ing_h1_msg *m = &r->msg;
    struct wr_str host = (m->flags & ING_H1_F_ABSOLUTE_FORM) ? m->authority : m->host;
    const char *route = r->route ? r->route->name : "";
    const char *cluster = r->cluster ? r->cluster->name : "";
    /* Worst case: every byte escaped to 6. */
    size_t need = 6 * (m->method.len + host.len + m->path.len + m->query.len + strlen(route) +
                       strlen(cluster) + strlen(r->ep_addr)) +
                  512;

    if (need > ING_LOGBUF_SIZE)
        return; /* cannot happen with the head limits, but never overflow */
    if (w->logbuf != NULL && ING_LOGBUF_SIZE - w->logbuf->len < need)
        handoff(w);
    if (w->logbuf == NULL) {
        w->logbuf = malloc(sizeof(*w->logbuf));
        if (w->logbuf == NULL)
            return;
        w->logbuf->len = 0;
    }
    uint64_t now_ms = wr_wall_ms(), now_ns = wr_mono_ns();
    if (now_ms / 1000 != w->log_sec) {
        time_t t = (time_t)(now_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(w->log_time, sizeof(w->log_time), "%Y-%m-%dT%H:%M:%S", &tm);
        w->log_sec = now_ms / 1000;
    }
    char ip[64];
    char *p = w->logbuf->data + w->logbuf->len;
    if (r->c != NULL && r->c->peer_family != 0) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (r->c->peer_family == AF_INET) {
            struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
            in4->sin_family = AF_INET;
            memcpy(&in4->sin_addr, r->c->peer, 4);
            in4->sin_port = htons(r->c->peer_port);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            in6->sin6_family = AF_INET6;
            memcpy(&in6->sin6_addr, r->c->peer, 16);
            in6->sin6_port = htons(r->c->peer_port);
        }
        wr_format_address(&ss, ip, sizeof(ip));
    } else {
        strcpy(ip, "");
    }
    double dur_ms = (double)(now_ns - r->t_start_ns) / 1e6;
    double up_ms = r->t_up_done_ns > r->t_up_ns && r->t_up_ns
                       ? (double)(r->t_up_done_ns - r->t_up_ns) / 1e6
                       : 0;
    p += sprintf(p, "{\"time\":\"%s.%03uZ\",\"client\":\"%s\",\"method\":\"", w->log_time,
                 (unsigned)(now_ms % 1000), ip);
    p = esc(p, m->method.p, m->method.len);
    p = LIT(p, "\",\"host\":\"");
    p = esc(p, host.p ? host.p : "", host.len);
    p = LIT(p, "\",\"path\":\"");
    p = esc(p, m->path.p, m->path.len);
    p = LIT(p, "\",\"query\":\"");
    p = esc(p, m->query.p ? m->query.p : "", m->query.len);
    p += sprintf(p, "\",\"status\":%u,\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,",
                 r->status, (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out,
                 dur_ms);
    p = LIT(p, "\"upstream\":\"");
    p = esc(p, r->ep_addr, strlen(r->ep_addr));
    p += sprintf(p, "\",\"upstream_ms\":%.3f,\"request_id\":\"%s\",\"route\":\"", up_ms,
                 r->request_id);
    p = esc(p, route, strlen(route));
    p = LIT(p, "\",\"cluster\":\"");
    p = esc(p, cluster, strlen(cluster));
    p = LIT(p, "\"}\n");
    w->logbuf->len = (size_t)(p - w->logbuf->data);
}

/* ---- control side ---- */

static void write_next(struct ing_accesslog *a);
static void on_async_closed(uv_handle_t *h);

static void on_written(uv_fs_t *req)
{
    struct ing_accesslog *a = req->data;
    ssize_t n = req->result;

    uv_fs_req_cleanup(req);
    a->writing = false;
    if (n < 0) {
        wr_err("access log: write failed: %s; dropping %zu bytes", uv_strerror((int)n),
               a->cur->len - a->cur_off);
        n = (ssize_t)(a->cur->len - a->cur_off);
    }
    a->cur_off += (size_t)n;
    if (a->cur_off >= a->cur->len) {
        atomic_fetch_sub_explicit(&a->srv->log_queued, a->cur->len, memory_order_relaxed);
        free(a->cur);
        a->cur = NULL;
    }
    write_next(a);
}

static void write_next(struct ing_accesslog *a)
{
    if (a->writing)
        return;
    if (a->cur == NULL && a->reopen_fd != -2) {
        if (a->own_fd && a->fd >= 0)
            close(a->fd);
        a->fd = a->reopen_fd;
        a->own_fd = a->fd > STDERR_FILENO;
        a->reopen_fd = -2;
    }
    if (a->cur == NULL && a->queue != NULL) {
        a->cur = a->queue;
        a->queue = a->cur->next;
        if (a->queue == NULL)
            a->tail = &a->queue;
        a->cur_off = 0;
    }
    if (a->cur == NULL) {
        if (a->closing && !uv_is_closing((uv_handle_t *)&a->srv->log_async))
            uv_close((uv_handle_t *)&a->srv->log_async, on_async_closed);
        return;
    }
    if (a->fd < 0) {
        atomic_fetch_sub_explicit(&a->srv->log_queued, a->cur->len, memory_order_relaxed);
        free(a->cur);
        a->cur = NULL;
        write_next(a);
        return;
    }
    uv_buf_t b = uv_buf_init(a->cur->data + a->cur_off, (unsigned)(a->cur->len - a->cur_off));
    a->writing = true;
    a->req.data = a;
    if (uv_fs_write(a->srv->loop, &a->req, a->fd, &b, 1, -1, on_written) < 0) {
        a->writing = false;
        atomic_fetch_sub_explicit(&a->srv->log_queued, a->cur->len, memory_order_relaxed);
        free(a->cur);
        a->cur = NULL;
    }
}

static void on_log_async(uv_async_t *h)
{
    struct ing_server *srv = WR_CONTAINER_OF(h, struct ing_server, log_async);
    struct ing_accesslog *a = srv->alog;
    struct ing_logchunk *list = atomic_exchange(&srv->log_inbox, NULL), *rev = NULL;

    /* The stack is newest first: reverse it so lines keep their order. */
    while (list != NULL) {
        struct ing_logchunk *nx = list->next;
        list->next = rev;
        rev = list;
        list = nx;
    }
    while (rev != NULL) {
        struct ing_logchunk *nx = rev->next;
        rev->next = NULL;
        *a->tail = rev;
        a->tail = &rev->next;
        rev = nx;
    }
    write_next(a);
}

int ing__alog_init(struct ing_server *srv)
{
    struct ing_accesslog *a = wr_xcalloc(1, sizeof(*a));

    a->fd = -1;
    a->reopen_fd = -2;
    a->tail = &a->queue;
    a->srv = srv;
    srv->alog = a;
    return uv_async_init(srv->loop, &srv->log_async, on_log_async);
}

int ing__alog_open(struct ing_server *srv, const char *path)
{
    struct ing_accesslog *a = srv->alog;
    int fd = -1;

    if (path != NULL && strcmp(path, "-") == 0) {
        fd = STDOUT_FILENO;
    } else if (path != NULL) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd == -1) {
            wr_err("access log: cannot open %s: %s", path, strerror(errno));
            return -errno;
        }
    }
    if (a->reopen_fd > STDERR_FILENO)
        close(a->reopen_fd);
    a->reopen_fd = fd;
    write_next(a);
    return 0;
}

static void on_async_closed(uv_handle_t *h)
{
    struct ing_server *srv = WR_CONTAINER_OF(h, struct ing_server, log_async);
    struct ing_accesslog *a = srv->alog;

    if (a->own_fd && a->fd >= 0)
        close(a->fd);
    if (a->reopen_fd > STDERR_FILENO)
        close(a->reopen_fd);
    srv->alog = NULL;
    free(a);
}

/* Takes the last chunks from the workers (which have stopped), writes them, then closes the
 * async handle; the control loop ends once that is done. */
void ing__alog_close(struct ing_server *srv)
{
    struct ing_accesslog *a = srv->alog;

    on_log_async(&srv->log_async);
    a->closing = true;
    write_next(a);
}
