/* ingress/ing_priv.h -- structures shared by the files of ingress/ only.
 *
 * Threads: everything here belongs to exactly one worker thread (its loop), except the fields
 * marked "control" and the atomics. Lifetimes: a client connection (struct ing_conn) owns its
 * current request (struct ing_req); a request borrows an upstream connection (struct ing_up)
 * while it runs; idle upstream connections live in their endpoint's per-worker idle list.
 * Memory of every handle owner is released in its uv_close callback, and only there.
 */
#ifndef WEIR_ING_PRIV_H
#define WEIR_ING_PRIV_H

#include <netinet/in.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include <weir/h1.h>
#include <weir/ing.h>
#include <weir/lb.h>
#include <weir/wr.h>
#include <weir/xds.h>

#define ING_BLOCK_SIZE 16384 /* pooled I/O buffer size */
/* upstream response buffer: a 64 KiB body and its head in one read */
#define ING_UPBLOCK_SIZE  81920
#define ING_POOL_UPBLOCKS 64    /* free upstream buffers a worker keeps */
#define ING_MAX_HDRS      128   /* header fields per message */
#define ING_POOL_BLOCKS   512   /* free blocks a worker keeps */
#define ING_POOL_REQS     256   /* free request objects a worker keeps */
#define ING_LOGBUF_SIZE   65536 /* access-log buffer a worker fills before handing it over */

struct ing_worker;
struct ing_server;

/* ---- timeouts: per-worker FIFO queues, one per (kind, duration); one uv_timer per worker --- */

enum ing_tq_kind {
    ING_TQ_CLIENT_HEAD = 0, /* client request head not complete in time: 408 */
    ING_TQ_CLIENT_IDLE,     /* idle keep-alive client connection */
    ING_TQ_UP_CONNECT,      /* upstream connect */
    ING_TQ_UP_RESPONSE,     /* upstream response head / inactivity */
    ING_TQ_UP_IDLE,         /* idle pooled upstream connection */
    ING_TQ_CLIENT_SEND,     /* client not reading our response */
};

struct ing_tnode {
    struct wr_list link; /* self-linked when not queued */
    uint64_t deadline;   /* loop time in ms */
};

struct ing_tq {
    struct wr_list head;
    uint32_t duration_ms;
    uint8_t kind;
};

/* ---- I/O buffers ---- */

/* A byte buffer: data is base[off..len). Blocks of ING_BLOCK_SIZE come from the worker pool;
 * larger ones (long request heads) are malloc'd. */
struct ing_buf {
    char *base;
    uint32_t off, len, cap;
};

/* ---- listeners ---- */

struct ing_listener {
    uv_tcp_t tcp;
    struct ing_worker *w;
    struct wr_list link; /* w->listeners */
    char *name;
    char *address;
    bool is_tls;
    bool h2c;            /* HTTP/2 with prior knowledge accepted */
    bool proxy_protocol; /* connections start with a PROXY header */
    bool closing;
    bool handle_closed;               /* freed when the last of its connections closes */
    unsigned n_conns;                 /* connections accepted on it and still open */
    void *ssl_ctx;                    /* SSL_CTX * of tls_cfg (borrowed from it) */
    struct xds_listener_tls *tls_cfg; /* the current snapshot's listener TLS (ref held) */
    struct xds_counters *stats;       /* ref held */
};

/* ---- snapshot pins: per worker, plain integers ---- */

struct ing_snapref {
    struct xds_snapshot *snap; /* one real reference */
    unsigned widx;             /* the owning worker's index (its LB slot in each cluster) */
    uint32_t pins;             /* requests of this worker using it */
    struct wr_list link;       /* w->retired while pins > 0 and not current */
};

/* ---- requests and connections ---- */

enum ing_conn_state {
    ING_C_IDLE = 0, /* between requests, no buffer */
    ING_C_HEAD,     /* reading a request head */
    ING_C_PROXY,    /* a request is being proxied */
    ING_C_TUNNEL,   /* after 101: bytes both ways */
    ING_C_H2,       /* an HTTP/2 connection: requests are its streams */
    ING_C_CLOSING,
};

/* The client side of an HTTP/1.1 connection. Kept small: an idle keep-alive connection costs
 * this struct and nothing else. */
struct ing_conn {
    uv_tcp_t tcp;
    struct ing_worker *w;
    struct ing_listener *lst;
    struct ing_req *req;
    struct ing_tls *tls;   /* NULL on a plain connection */
    struct ing_h2conn *h2; /* HTTP/2 session, NULL for HTTP/1.1 */
    struct ing_buf in;     /* plaintext */
    struct ing_tnode tn;
    struct wr_list link; /* w->conns */
    uint8_t peer[16];    /* client address: IPv4 in the first 4 bytes, or IPv6 */
    uint16_t peer_port;
    uint8_t peer_family; /* AF_INET / AF_INET6 */
    uint8_t state;       /* enum ing_conn_state */
    uint8_t reading : 1; /* uv_read_start active */
    uint8_t eof : 1;     /* client sent FIN */
    uint8_t closing : 1;
    uint8_t close_after : 1;   /* close once the current response is written */
    uint8_t proxy_pending : 1; /* a PROXY protocol header must come first */
    uint8_t lingering : 1;     /* answered and half-closed: reading to EOF before the close */
    uint32_t nreqs;
    uint32_t linger_bytes; /* discarded while lingering */
};

enum ing_up_state {
    ING_U_CONNECTING = 0,
    ING_U_HANDSHAKE, /* TCP connected, TLS handshake under way */
    ING_U_ACTIVE,
    ING_U_IDLE,
    ING_U_CLOSING,
};

/* An upstream connection. */
struct ing_up {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct ing_worker *w;
    struct ing_req *req;     /* NULL while idle */
    struct xds_ep_state *st; /* reference held for the connection's life */
    struct ing_tls *tls;     /* TLS to the upstream, NULL for cleartext */
    struct ing_buf in;       /* plaintext */
    struct ing_tnode tn;
    struct wr_list idle_link; /* st->w[i].idle (HTTP/2 sessions: while they take streams) */
    uint8_t state;            /* enum ing_up_state */
    uint8_t reading : 1;
    uint8_t closing : 1;
    uint8_t reused : 1; /* has served a request before */
    uint8_t eof : 1;    /* the upstream closed or reset */
    uint8_t is_h2 : 1;  /* the connection of an HTTP/2 session (struct ing_h2up, ing_h2up.c) */
    uint32_t nreqs;
    uint32_t idle_ms;     /* pool idle timeout of its cluster */
    uint32_t max_idle;    /* pool size limit of its cluster */
    struct wr_list wlink; /* w->ups */
};

/* Body framing progress of one direction. */
struct ing_body {
    uint8_t kind; /* enum ing_h1_body */
    bool done;
    uint64_t remaining; /* LENGTH */
    struct ing_h1_chunked ck;
};

/* One request on a client connection, from the first byte of its head to the last byte of its
 * response. Pooled per worker. */
struct ing_req {
    struct ing_conn *c;
    struct ing_worker *sr_worker; /* the worker this request runs on */
    struct ing_up *up;
    struct ing_h2s *h2s;    /* the stream on an HTTP/2 upstream (cluster protocol h2/h2c) */
    struct ing_snapref *sr; /* pinned snapshot */
    const struct xds_route *route;
    const struct xds_cluster *cluster;
    int wc_idx; /* index in route->wc */
    int ep_idx; /* endpoint index in cluster */
    int colour; /* rollout colour (0 blue, 1 green), -1 none */
    /* HTTP/2: the stream this request is (h2 == NULL for HTTP/1.1) */
    struct ing_h2conn *h2;
    int32_t stream_id;
    uint16_t h2_bad;           /* status to answer once the head is complete (431...) */
    uint8_t h2_end_stream : 1; /* the client finished sending */
    uint8_t h2_head_done : 1;
    uint8_t h2_deferred : 1; /* the data provider waits for upstream bytes */
    uint8_t h2_closed : 1;   /* nghttp2 closed the stream */
    uint8_t h2_xconnect : 1; /* RFC 8441 extended CONNECT: a WebSocket over this stream */
    uint64_t h2_body_total;
    uint32_t body_ready;   /* HTTP/1.1 client, HTTP/2 upstream: de-chunked bytes at body_off */
    struct ing_buf h2hdr;  /* copies of the header block */
    struct ing_buf h2body; /* request body received, not yet forwarded */
    struct ing_buf h2trl;  /* request trailers of an HTTP/2 client (ing__trl_add records; for an
                            * HTTP/1.1 upstream, replaced by their serialized last chunk) */
    struct ing_buf rtrl;   /* raw trailer section of an HTTP/1.1 chunked response (HTTP/2 client) */
    const char *canned;    /* an answer of our own (HTTP/2 error body) */
    uint32_t canned_len, canned_off;
    char chunk_hdr[24]; /* chunk-size line when re-framing an HTTP/2 body for HTTP/1.1 */
    size_t scan;        /* head end search progress */
    struct ing_h1_msg msg;
    struct ing_h1_hdr hdrs[ING_MAX_HDRS];
    struct ing_h1_msg rmsg; /* upstream response head */
    struct ing_h1_hdr rhdrs[ING_MAX_HDRS];
    size_t rscan;
    uint32_t body_off;       /* c->in offset of the first unforwarded request body byte */
    struct ing_body reqb;    /* request body: client -> upstream */
    struct ing_body respb;   /* response body: upstream -> client */
    uv_write_t up_wr;        /* write to upstream in flight */
    uv_write_t cl_wr;        /* write to client in flight */
    struct ing_buf head_out; /* serialized upstream request head (kept for a retry) */
    struct ing_buf resp_out; /* serialized response head to the client */
    uv_buf_t iov[64];        /* client write vector (dechunked pieces) */
    uint32_t up_wr_len;      /* bytes of c->in handed to the upstream write */
    uint32_t cl_wr_len;      /* bytes of up->in handed to the client write */
    uint8_t up_writing : 1;
    uint8_t cl_writing : 1;
    uint8_t head_sent : 1;    /* upstream request head fully written */
    uint8_t resp_started : 1; /* response head sent (or being sent) to the client */
    uint8_t resp_done : 1;
    uint8_t req_done : 1; /* request body fully forwarded */
    uint8_t upstream_keep : 1;
    uint8_t retried : 1;
    uint8_t expect_continue : 1;
    uint8_t upgrade : 1;
    uint8_t dechunk : 1; /* HTTP/1.0 client, chunked upstream body: strip framing */
    uint8_t client_keep : 1;
    uint8_t got_resp_byte : 1;
    uint8_t set_track : 1;         /* answer with a weir-track cookie */
    uint8_t resp_head_pending : 1; /* resp_out not yet handed to the client */
    uint8_t up_used : 1;           /* an upstream answered this request */
    uint8_t exclude[64];           /* endpoints tried (first 64) */
    uint16_t status;               /* status sent to the client */
    uint64_t bytes_in, bytes_out;
    uint64_t t_start_ns, t_up_ns, t_up_done_ns;
    char request_id[33];
    char ep_addr[64];
    struct wr_list link; /* free list */
};

/* ---- the worker ---- */

struct ing_worker {
    unsigned idx;
    struct ing_server *srv;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t async; /* inbox: new snapshot, drain, stop */
    uv_timer_t timer; /* timeout queues */
    uv_timer_t log_timer;
    _Atomic(struct xds_snapshot *) inbox;
    _Atomic uint32_t cmd;            /* ING_CMD_* bits */
    _Atomic uint64_t served_version; /* version of w->cur, for the control thread */
    struct ing_snapref *cur;
    struct wr_list retired; /* snaprefs still pinned */
    struct wr_list listeners;
    struct wr_list conns;
    struct wr_list ups;       /* every upstream connection of this worker */
    struct wr_list tls_pumpq; /* TLS connections with bytes left to decrypt */
    uv_idle_t tls_pump;
    struct ing_tq tqs[32];
    unsigned n_tqs;
    uint64_t timer_due; /* deadline the timer is armed for, 0 = not armed */
    char **free_blocks;
    unsigned n_free_blocks;
    char *free_upblocks[ING_POOL_UPBLOCKS];
    unsigned n_free_upblocks;
    struct wr_list free_reqs;
    unsigned n_free_reqs;
    uv_write_t *free_wreqs[256]; /* write requests for TLS connections with a queued write */
    unsigned n_free_wreqs;
    uint64_t rng;
    bool draining;
    bool stopping;
    bool thread_started;
    bool loop_ready;
    unsigned n_conns;
    /* HTTP/2 sessions' deferred work (ing_h2up.c), set up on first use: flushes asked for from
     * inside another session's callbacks run from an idle callback instead, so no nghttp2
     * session is ever entered from inside another one. */
    uv_idle_t h2_idle;
    bool h2_idle_ready;
    struct wr_list h2_flushq;  /* upstream sessions to flush */
    struct wr_list h2_dflushq; /* client HTTP/2 connections to flush */
    struct wr_list h2_notifyq; /* upstream streams with news for their request */
    /* access log */
    struct ing_logchunk *logbuf; /* being filled */
    uint64_t log_sec;            /* second that log_time holds */
    char log_time[32];           /* "2026-11-26T15:55:27" */
};

#define ING_CMD_DRAIN_LISTEN 0x1u /* stop accepting */
#define ING_CMD_DRAIN        0x2u /* close idle connections, finish busy ones */
#define ING_CMD_STOP         0x4u /* close everything and leave the loop */

/* ---- the process ---- */

struct ing_server {
    uv_loop_t *loop; /* control */
    const char *config_path;
    char *config_text;              /* the file as of the last successful load */
    struct ing_override *overrides; /* rollout weights set through the admin API */
    unsigned n_overrides;
    struct xds_stats_reg *reg;
    struct xds_snapshot *snap; /* current (control) */
    uint64_t next_version;
    struct ing_worker *workers;
    unsigned nworkers;
    _Atomic int state; /* enum ing_state */
    struct ing_admin *admin;
    struct hc_manager *hc;   /* health checks and outlier ejections */
    struct ing_disc *disc;   /* discovery providers and their views (ing_discovery.c) */
    struct xds_cache *cache; /* clusters reused between builds */
    uint64_t boot_ms;        /* wr_mono_ns() / 1e6 at boot */
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t drain_timer;
    uv_timer_t sweep_timer; /* frees stats entries no snapshot uses any more */
    uint64_t ticket_age_ms; /* since the TLS session-ticket keys were last rotated */
    uv_async_t log_async;
    uv_timer_t log_flush_timer;
    int drain_phase;
    uint64_t drain_deadline;
    /* access log writer (control) */
    _Atomic(struct ing_logchunk *) log_inbox; /* chunks handed over by workers */
    _Atomic uint64_t log_queued;              /* bytes handed over, not yet written */
    _Atomic uint64_t log_dropped;             /* lines dropped because the writer lagged */
    struct ing_accesslog *alog;
    uv_async_t exit_async; /* a worker thread ended */
    _Atomic unsigned workers_exited;
    bool workers_joined;
};

/* ---- functions shared inside ingress/ ---- */

/* ing_server.c: builds a snapshot from the last loaded file text and the accepted discovery
 * views (for provider <with_pending>, its pending view instead; -1: none), with the live
 * rollout weights applied. NULL with <errors> filled when it does not build. */
struct xds_snapshot *ing__server_build(struct ing_server *srv, int with_pending,
                                       struct wr_sbuf *errors);
/* Publishes <s> (our reference) to health checks and every worker. */
void ing__server_publish(struct ing_server *srv, struct xds_snapshot *s);
void ing__log_errors(const struct wr_sbuf *errors);

/* ing_discovery.c */
struct xds_view;
unsigned ing__disc_count(struct ing_server *srv);
unsigned ing__disc_views(struct ing_server *srv, struct xds_view *out, int with_pending);
bool ing__disc_sync(struct ing_server *srv, const struct xds_snapshot *s);
void ing__disc_built(struct ing_server *srv, const struct xds_snapshot *s);
void ing__disc_close(struct ing_server *srv);
bool ing__disc_not_ready(struct ing_server *srv, bool booting, const char **why);
void ing__disc_metrics(struct ing_server *srv, struct wr_sbuf *b);

/* ing_worker.c */
int ing__worker_start(struct ing_worker *w);
void ing__worker_dispose(struct ing_worker *w);
void ing__listener_conn_closed(struct ing_listener *l);
void ing__server_worker_exited(struct ing_server *srv);
void ing__worker_publish(struct ing_worker *w, struct xds_snapshot *s);
void ing__worker_command(struct ing_worker *w, uint32_t cmd);
char *ing__block_get(struct ing_worker *w);
char *ing__upblock_get(struct ing_worker *w);
uv_write_t *ing__wreq_get(struct ing_worker *w);
void ing__wreq_put(struct ing_worker *w, uv_write_t *wr);
void ing__block_put(struct ing_worker *w, char *b);
void ing__buf_release(struct ing_worker *w, struct ing_buf *b);
struct ing_req *ing__req_get(struct ing_worker *w);
void ing__req_put(struct ing_worker *w, struct ing_req *r);
struct ing_snapref *ing__snap_pin(struct ing_worker *w);
void ing__snap_unpin(struct ing_worker *w, struct ing_snapref *sr);
struct ing_lb *ing__snap_lb(struct ing_snapref *sr, const struct xds_cluster *c);
void ing__tq_add(struct ing_worker *w, struct ing_tnode *n, uint8_t kind, uint32_t ms);
void ing__tq_del(struct ing_tnode *n);
void ing__worker_maybe_exit(struct ing_worker *w);

/* ing_conn.c: client side */
void ing__conn_accept(struct ing_listener *l);
void ing__conn_timeout(struct ing_conn *c, uint8_t kind);
void ing__conn_drain(struct ing_conn *c);
void ing__conn_close(struct ing_conn *c);
/* called by ing_upstream.c */
void ing__req_upstream_ready(struct ing_req *r);
void ing__req_upstream_failed(struct ing_req *r, int status, bool may_retry);
void ing__req_response_data(struct ing_req *r);
void ing__req_upstream_written(struct ing_req *r);

void ing__conn_input(struct ing_conn *c);
int ing__proxyproto_parse(struct ing_conn *c, const char *p, size_t len);
bool ing__conn_proxy_header(struct ing_conn *c, struct ing_buf *b);
int ing__conn_send(struct ing_conn *c, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb);
void ing__req_start_h2(struct ing_req *r, int status);
void ing__req_body_more(struct ing_req *r);
void ing__req_finish_h2(struct ing_req *r);
void ing__req_abort_h2(struct ing_req *r);
long ing__resp_take(struct ing_req *r, char *dst, size_t max, bool *eof);

/* ing_h2.c: HTTP/2 on client connections */
struct ing_h2conn;
int ing__h2_start(struct ing_conn *c);
void ing__h2_input(struct ing_conn *c);
void ing__h2_flush(struct ing_conn *c);
void ing__h2_drain(struct ing_conn *c);
void ing__h2_close_streams(struct ing_conn *c);
void ing__h2_free(struct ing_conn *c);
bool ing__h2_writing(struct ing_conn *c);
bool ing__h2_busy(struct ing_conn *c);
int ing__h2_respond(struct ing_req *r, int status, const char *location, bool body);
int ing__h2_respond_grpc(struct ing_req *r, unsigned code, const char *msg);
void ing__h2_resume(struct ing_req *r);
void ing__h2_consumed(struct ing_req *r, size_t n);
void ing__h2_reset(struct ing_req *r, uint32_t code);
void ing__h2_detach(struct ing_req *r);

/* ing_tls.c: TLS on client and upstream connections */
struct ing_tls;

struct ing_tls_ops {
    void (*input)(void *owner, long n); /* n plaintext bytes added (0: none), -2: close_notify */
    void (*fail)(void *owner);          /* fatal TLS or socket error: close */
    int (*handshake)(void *owner);      /* the handshake completed; < 0 fails the connection */
};

/* The connection keeps <cfg> (its SSL_CTX and SNI state) alive until it is freed. */
void ing__tls_pin(struct ing_tls *t, struct xds_listener_tls *cfg);
struct ing_tls *ing__tls_new(void *ssl_ctx, bool server, const char *sni, struct ing_worker *w,
                             uv_stream_t *stream, struct ing_buf *plain,
                             const struct ing_tls_ops *ops, void *owner);
void ing__tls_free(struct ing_tls *t); /* NULL is a no-op */
void ing__tls_alloc(struct ing_tls *t, uv_buf_t *buf);
struct ing_buf *ing__tls_cin(struct ing_tls *t);
void ing__tls_read(struct ing_tls *t, ssize_t nread);
void ing__tls_resume(struct ing_tls *t);
void ing__tls_connect(struct ing_tls *t);
void ing__tls_shutdown(struct ing_tls *t);
int ing__tls_write(struct ing_tls *t, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb);
bool ing__tls_alpn_h2(struct ing_tls *t);
void *ing__tls_ssl(struct ing_tls *t);

/* ing_upstream.c */
void ing__up_acquire(struct ing_req *r, const struct xds_endpoint *ep);
void ing__up_release(struct ing_up *u, bool keep);
void ing__up_timeout(struct ing_up *u, uint8_t kind);
void ing__up_read_start(struct ing_up *u);
void ing__up_read_stop(struct ing_up *u);
int ing__up_write(struct ing_up *u, uv_buf_t *bufs, unsigned n);
void ing__up_close_idle_all(struct ing_worker *w);
void ing__up_close_idle_draining(struct ing_worker *w);

/* ing_h2up.c: HTTP/2 to upstreams (clusters with protocol "h2" or "h2c") */
#define ING_H2UP_WINDOW 65536 /* per-stream receive window = the most a stream buffers */

/* The stream of a request on an upstream HTTP/2 session. Owned by the request (r->h2s): it
 * outlives its stream on the session (the response was received whole, or the session died)
 * while the client still takes the buffered body. */
struct ing_h2s {
    struct ing_h2up *s; /* the session while the stream is open there, else NULL */
    struct ing_req *r;
    int32_t id;             /* stream id, 0 before it was submitted */
    struct wr_list link;    /* s->streams */
    struct wr_list nlink;   /* w->h2_notifyq */
    char *ring;             /* response body received, not yet taken (ING_H2UP_WINDOW bytes) */
    uint32_t rhead, rlen;   /* ring[rhead...] for rlen bytes, wrapping around */
    uint32_t hbytes;        /* response header bytes so far (max_header_bytes) */
    struct ing_buf hdr;     /* response header block (then r->rmsg points into it) */
    struct ing_buf trl;     /* response trailers (ing__trl_add records) */
    struct ing_buf tail;    /* last chunk and trailers for an HTTP/1.1 client */
    uint64_t deadline;      /* loop time: inactivity limit (route timeout_ms) */
    uint16_t fail_status;   /* failed before the response head: 502 or 504 */
    uint8_t head_ready : 1; /* a final response head is in r->rmsg */
    uint8_t remote_end : 1; /* END_STREAM received: the response is complete */
    uint8_t failed : 1;     /* ended without a complete response */
    uint8_t retryable : 1;  /* failed before the upstream processed it */
    uint8_t deferred : 1;   /* the request body's data provider waits for bytes */
    uint8_t counted : 1;    /* counted in the endpoint's requests */
};

struct ing_h2up;
void ing__h2up_acquire(struct ing_req *r, const struct xds_endpoint *ep);
void ing__h2up_release(struct ing_req *r);
void ing__h2up_body_more(struct ing_req *r);
unsigned ing__h2up_peek(struct ing_req *r, uv_buf_t *pieces);
void ing__h2up_taken(struct ing_req *r, uint32_t n);
long ing__h2up_take(struct ing_req *r, char *dst, size_t max, bool *eof);
unsigned ing__h2up_trailers(struct ing_req *r, struct wr_str *names, struct wr_str *values,
                            unsigned max);
const char *ing__h2up_tail(struct ing_req *r, uint32_t *len);
void ing__h2up_timeout(struct ing_up *u, uint8_t kind);
void ing__h2up_close_idle(struct ing_up *u);
void ing__h2_defer_schedule(struct ing_worker *w);
bool ing__trl_forbidden(const char *name, size_t len);
bool ing__trl_add(struct ing_worker *w, struct ing_buf *b, const void *name, size_t nl,
                  const void *value, size_t vl, uint32_t limit);
unsigned ing__trl_list(const struct ing_buf *b, struct wr_str *names, struct wr_str *values,
                       unsigned max);
/* ing_conn.c, for ing_h2up.c */
long ing__req_body_take(struct ing_req *r, char *dst, size_t max, bool *eof);
void ing__req_forward(struct ing_req *r);
bool ing__hdr_forwarded(const struct ing_h1_hdr *h);
struct wr_str ing__req_host(struct ing_req *r);
struct wr_str ing__req_id(struct ing_req *r);
void ing__client_ip(const struct ing_conn *c, char *out, size_t len);
/* ing_h2.c, for ing_h2up.c */
void ing__h2_consumed_later(struct ing_req *r, size_t n);
void ing__h2_run_deferred(struct ing_worker *w);

/* ing_accesslog.c */
struct ing_logchunk {
    struct ing_logchunk *next;
    size_t len;
    char data[ING_LOGBUF_SIZE];
};

void ing__log_request(struct ing_worker *w, struct ing_req *r);
void ing__log_flush(struct ing_worker *w);
int ing__alog_init(struct ing_server *srv);
/* (Re)opens the destination of <path> (NULL: none, "-": stdout). Control thread. */
int ing__alog_open(struct ing_server *srv, const char *path);
void ing__alog_close(struct ing_server *srv);

/* Writes <bufs> to <s>: synchronously when the socket takes it all (returns 1), else queues the
 * rest with <req>/<cb> (returns 0; the caller must keep the bytes alive until <cb>), or < 0. */
int ing__send(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb);

#endif /* WEIR_ING_PRIV_H */
