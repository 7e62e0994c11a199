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

/* The next retry delay of one watch among several in a provider, with its own back-off state
 * <*backoff_ms> (0 at first; the same schedule as disc__backoff_next(), which uses the
 * provider's). Counts one restart. */
uint32_t disc__backoff_step(struct disc_provider *p, uint32_t *backoff_ms);

/* Reads a whole small regular file (a token, a certificate) into a NUL-terminated heap string,
 * without a trailing newline when <trim>. Returns NULL with errno set, also for what is not a
 * regular file (EINVAL; a FIFO would otherwise block the loop) or a read error. */
char *disc__read_file(const char *path, size_t *len, bool trim);

/* ---- disc_http.c: an asynchronous HTTP client for providers ---------------------------------
 *
 * One struct disc_http is one libcurl multi handle driven by one libuv loop (the provider's):
 * curl tells which sockets to watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t per socket) and
 * when to call it back (CURLMOPT_TIMERFUNCTION -> one uv_timer_t), and every readiness event
 * goes to curl_multi_socket_action(). Nothing blocks the loop. Connections are kept in the
 * multi handle's cache and reused by later requests to the same host (HTTP/1.1 keep-alive;
 * over TLS, HTTP/2 multiplexing when the server offers it).
 *
 * Callbacks run on the loop's thread. on_header and on_data run from inside curl: there they
 * may call disc_http_start() and disc_http_cancel() (both are deferred until curl returns), but
 * never disc_http_close(). on_done runs outside curl and may call anything, disc_http_close()
 * included. No callback of a request is made after disc_http_cancel() of it or after
 * disc_http_close(), and a request's handle is invalid once its on_done returned.
 */
struct disc_http;     /* one multi handle on one loop */
struct disc_http_req; /* one transfer */

struct disc_http_result {
    int curl_code;     /* CURLcode: 0 = a complete response arrived (whatever its status) */
    long status;       /* the HTTP status; 0 when none arrived */
    const char *error; /* curl's description when curl_code != 0, else "" */
    /* The body when the request had no on_data (NUL-terminated; empty when on_data was set).
     * It belongs to the request: copy what must outlive on_done. */
    const char *body;
    size_t body_len;
};

/* A response header (every header of every response of the transfer, interim ones included),
 * without the line end; <name> and <value> are not NUL-terminated, <value> is trimmed. */
typedef void (*disc_http_header_cb)(void *arg, const char *name, size_t name_len, const char *value,
                                    size_t value_len);
/* A piece of the body as it arrives (streaming: a Kubernetes watch never ends). Returns 0 to
 * go on, or < 0 to abort the transfer (on_done then gets CURLE_WRITE_ERROR). */
typedef int (*disc_http_data_cb)(void *arg, const char *data, size_t len);
/* The transfer ended: a response, an error, a timeout or an abort by on_data. */
typedef void (*disc_http_done_cb)(void *arg, const struct disc_http_result *res);

struct disc_http_opts {
    const char *method; /* NULL: GET, or POST when body is set; any other verb as written */
    const char *url;    /* required */
    const char *body;   /* request body (copied), NULL: none */
    size_t body_len;
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated (copied) */
    /* A token sent as "Authorization: Bearer TOKEN", or as "<token_header>: TOKEN" when
     * token_header is set (Consul's "X-Consul-Token"). NULL: none. */
    const char *token;
    const char *token_header;
    const char *ca_file;   /* PEM bundle to verify the server with; NULL: the system's */
    const char *cert_file; /* client certificate (PEM), with key_file; NULL: none */
    const char *key_file;
    bool insecure;               /* do not verify the server's certificate or name */
    uint32_t connect_timeout_ms; /* 0: 10000 */
    uint32_t timeout_ms;         /* the whole transfer; 0: none (a stream may live forever) */
    /* Aborts (CURLE_OPERATION_TIMEDOUT) when less than one byte arrived in this long; curl
     * counts whole seconds, so it is rounded up to one. 0: none. */
    uint32_t idle_timeout_ms;
    size_t max_body; /* buffered body limit without on_data; 0: 64 MiB; over it: an error */
    disc_http_header_cb on_header; /* optional */
    disc_http_data_cb on_data;     /* optional: NULL buffers the body for on_done */
    disc_http_done_cb on_done;     /* required */
    void *arg;
};

/* Creates the client on <loop>. Returns NULL after logging if curl cannot be set up. */
struct disc_http *disc_http_new(uv_loop_t *loop);
/* Starts a request (everything in <o> is copied). Returns its handle, or NULL after logging
 * (then no callback is made). */
struct disc_http_req *disc_http_start(struct disc_http *h, const struct disc_http_opts *o);
/* The HTTP status received so far for <r> (0: none yet); for on_header/on_data. */
long disc_http_status(const struct disc_http_req *r);
/* Stops <r> at once; none of its callbacks runs afterwards. NULL is a no-op. */
void disc_http_cancel(struct disc_http_req *r);
/* Number of requests started and not yet done or cancelled. */
unsigned disc_http_active(const struct disc_http *h);
/* Cancels every request (no callbacks), closes every connection and uv handle, and calls
 * <closed>(<arg>) (may be NULL) once the last handle is closed; then frees <h>. The loop must
 * run for that. Not from on_header/on_data. */
void disc_http_close(struct disc_http *h, void (*closed)(void *arg), void *arg);

#endif /* WEIR_DISC_PRIV_H */
