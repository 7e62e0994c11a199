/* health/hc_priv.h -- structures and functions shared by the files of health/ only.
 *
 * Everything here belongs to the control thread. Lifetimes: the manager owns one record
 * (struct hc_ep) per endpoint state entry of its current snapshot; a record owns at most one
 * running probe (struct hc_probe), which holds a reference on the snapshot it started under so
 * that the check settings and the address it reads stay valid even if the record goes away.
 * Handles are freed in their close callbacks only; the manager itself once its last handle
 * (record timers, probes, the async and the ejection timer) closed.
 */
#ifndef WEIR_HC_PRIV_H
#define WEIR_HC_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <weir/hc.h>
#include <weir/wr.h>
#include <weir/xds.h>

#define HC_MAX_INFLIGHT 64    /* probes running at once; the others wait in a queue */
#define HC_MAX_HEAD     32768 /* HTTP response head limit */
#define HC_MAX_LINE     4096  /* HTTP chunk-size line limit */
#define HC_GRPC_MAX_MSG 65536 /* gRPC response message limit */
#define HC_READ_BUF     65536 /* the manager's shared read buffer */
#define HC_USER_AGENT   "weir-health-check/" WEIR_VERSION

/* Probe step results. */
enum { HC_MORE = 0, HC_PASS, HC_FAIL };

/* ---- hc_state.c: the decisions, free of I/O (unit-tested on their own) ------------------ */

/* Rise/fall state of one endpoint's active checks. */
struct hc_verdict {
    bool healthy;
    uint32_t ok_streak, fail_streak; /* consecutive results since the last flip */
};

enum { HC_NO_CHANGE = 0, HC_BECAME_HEALTHY, HC_BECAME_UNHEALTHY };

void hc__verdict_init(struct hc_verdict *v, bool healthy);
/* Records one check result; returns HC_NO_CHANGE or the flip it caused. */
int hc__verdict_add(struct hc_verdict *v, bool ok, uint32_t healthy_threshold,
                    uint32_t unhealthy_threshold);
/* The check interval for the endpoint's state: unhealthy_interval_ms while unhealthy. */
uint32_t hc__interval(const struct xds_health_check *hc, bool healthy);
/* <ms> moved by a uniform random amount within +-<pct> percent of it; at least 1. */
uint64_t hc__jitter(uint64_t ms, uint32_t pct, uint64_t *rng);
/* Delay of a new endpoint's first check: uniform in [0, interval). */
uint64_t hc__first_delay(uint32_t interval_ms, uint64_t *rng);
/* <delay> from loop time <now>, lengthened so that the due time falls on a tick of the
 * interval's granularity (1/40 of it, 1 to 25 ms): checks due together start together. */
uint64_t hc__align(uint64_t now, uint64_t delay, uint32_t interval_ms);
/* How many endpoints of a cluster of <n> may be ejected at once (INTERFACES.md §3). */
uint32_t hc__max_ejected(uint32_t n, uint32_t max_ejection_percent);
/* The length of a new ejection. <times> is the endpoint's ejection count: it first decays by
 * one for every base_ejection_ms spent un-ejected (<unejected_ms>), then counts this one; the
 * result is base_ejection_ms x times, capped at max_ejection_ms. */
uint64_t hc__ejection_ms(const struct xds_outlier *od, uint32_t *times, uint64_t unejected_ms);
/* True when <status> is in one of the inclusive ranges of <hc>. */
bool hc__status_expected(const struct xds_health_check *hc, unsigned status);

/* Streaming substring search (Knuth-Morris-Pratt): finds <needle> across any split of the
 * input into pieces, keeping one integer of state. */
struct hc_match {
    const char *needle;
    size_t n;
    size_t q; /* needle bytes matched so far */
    size_t *fail;
};

void hc__match_init(struct hc_match *mt, const char *needle, size_t n);
bool hc__match_feed(struct hc_match *mt, const char *p, size_t len); /* true once found */
void hc__match_dispose(struct hc_match *mt);

/* ---- hc_http.c: HTTP/1.1 check request and response reader ----------------------------- */

struct hc_http {
    const struct xds_health_check *hc;
    char *head; /* response head bytes until the head is complete */
    size_t head_len, head_cap, scan;
    unsigned status;
    uint8_t phase;      /* enum in hc_http.c */
    uint8_t ck;         /* chunked decoder state */
    bool head_only;     /* request method HEAD: no response body */
    bool want_body;     /* body_contains is set */
    uint64_t remaining; /* LENGTH body bytes / current chunk bytes left */
    uint32_t line_len;
    bool ck_digits;
    bool keep_alive; /* HTTP/1.1 and no "Connection: close" */
    bool passed;     /* the verdict is a pass; reading on to the end of the response */
    bool reusable;   /* passed, and the response ended exactly at the end of the input */
    struct hc_match mt;
};

/* Builds the request for <hc> (Host: <hc->host> or <default_host>); malloc'd, *len set. */
char *hc__http_request(const struct xds_health_check *hc, const char *default_host, size_t *len);
void hc__http_init(struct hc_http *h, const struct xds_health_check *hc);
/* Feeds response bytes: HC_MORE, HC_PASS or HC_FAIL (with the reason in why[0..whylen)).
 * After HC_PASS, h->reusable tells whether the connection may carry another request. */
int hc__http_feed(struct hc_http *h, const char *p, size_t n, char *why, size_t whylen);
/* The connection ended (EOF): the final verdict. */
int hc__http_eof(struct hc_http *h, char *why, size_t whylen);
void hc__http_dispose(struct hc_http *h);

/* ---- hc_grpc.c: grpc.health.v1.Health/Check ---------------------------------------------- */

#define HC_GRPC_SERVING 1

/* Writes the length-prefixed HealthCheckRequest{service} into out[0..cap); returns its length
 * or 0 when it does not fit. */
size_t hc__grpc_encode_request(const char *service, uint8_t *out, size_t cap);
/* Decodes one length-prefixed HealthCheckResponse: 0 with *status set (0 UNKNOWN when the
 * field is absent), or -1 with *why (static text) when malformed or compressed. */
int hc__grpc_decode_response(const uint8_t *p, size_t n, int *status, const char **why);
/* The verdict once the stream closed. <grpc_status> is -1 when absent. */
int hc__grpc_verdict(unsigned http_status, bool grpc_ct, int grpc_status, const uint8_t *msg,
                     size_t len, char *why, size_t whylen);
/* The nghttp2 callbacks of every check session (built once per manager; aborts on OOM). */
nghttp2_session_callbacks *hc__grpc_callbacks(void);

/* ---- hc_probe.c: one check on one connection --------------------------------------------- */

struct hc_manager;
struct hc_ep;
struct hc_probe;

struct hc_proto {
    int (*start)(struct hc_probe *p); /* transport ready: send the request */
    int (*data)(struct hc_probe *p, const char *d, size_t n);
    int (*eof)(struct hc_probe *p);
    void (*dispose)(struct hc_probe *p);
    /* After a pass: whether the connection may be kept for the next check (NULL: never). */
    bool (*reusable)(struct hc_probe *p);
};

struct hc_grpc {
    nghttp2_session *session;
    int32_t stream_id;
    uint8_t req[512];
    size_t req_len, req_off;
    unsigned http_status;
    int grpc_status; /* -1: not received */
    bool grpc_ct;    /* content-type application/grpc[+proto|;...] */
    bool closed;     /* the stream closed */
    uint32_t rst;    /* its error code */
    uint8_t *msg;
    size_t msg_len;
    bool msg_overflow;
};

struct hc_tcp_check {
    bool want; /* an expect string is set */
    struct hc_match mt;
};

struct hc_probe {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct hc_manager *m;
    struct hc_ep *rec;         /* NULL once the verdict is in or the record gave up on it */
    struct xds_snapshot *snap; /* reference held: c, ep and hc point into it */
    const struct xds_cluster *c;
    const struct xds_endpoint *ep;
    const struct xds_health_check *hc;
    const struct hc_proto *ops;
    SSL *ssl;
    bool tls_done;
    bool done;
    bool closing;
    bool connected;
    bool unconfirmed;    /* bytes sent since the peer last sent any */
    bool holds_slot;     /* counted in m->inflight (not while kept idle) */
    bool reused;         /* this check runs on a connection kept from an earlier one */
    bool answered;       /* the protocol got response bytes during this check */
    struct hc_ep *owner; /* while kept idle between checks: the record, whose idle it is */

    union {
        struct hc_http http;
        struct hc_tcp_check tcp;
        struct hc_grpc grpc;
    } u;

    char why[160];
};

extern const struct hc_proto hc__proto_http, hc__proto_tcp, hc__proto_grpc;

/* Starts a check of <rec>'s endpoint, on its kept connection (rec->idle) if it has one, else
 * on a new one. Returns 0 (rec->probe is set and will report through hc__ep_probe_done), or -1
 * with the reason in why (the record stays without a probe). */
int hc__probe_start(struct hc_manager *m, struct hc_ep *rec, char *why, size_t whylen);
/* Detaches the probe from its record and closes it; no verdict is reported. */
void hc__probe_cancel(struct hc_probe *p);
/* Closes <rec>'s kept connection, if any. */
void hc__probe_drop_idle(struct hc_ep *rec);
/* Sends bytes of the check (through TLS when on). 0, or -1 with p->why set. */
int hc__probe_send(struct hc_probe *p, const void *data, size_t len);
/* The name the probe uses for SNI / :authority / certificate checks (may be NULL). */
const char *hc__probe_server_name(const struct hc_probe *p);

/* ---- hc_manager.c ---------------------------------------------------------------------------- */

enum hc_ep_phase {
    HC_EP_OFF = 0, /* no active check for this endpoint */
    HC_EP_IDLE,    /* the timer waits for the next check */
    HC_EP_QUEUED,  /* due, waiting for a free probe slot */
    HC_EP_RUNNING, /* a probe runs; the timer is its timeout */
};

/* Per-cluster view used by outlier detection. */
struct hc_group {
    const struct xds_cluster *c;
    uint32_t n_ejected;
};

struct hc_ep {
    struct hc_manager *m;
    struct xds_ep_state *st; /* reference held */
    const struct xds_cluster *c;
    const struct xds_endpoint *ep; /* both in m->snap */
    struct hc_group *g;
    uint64_t gen; /* the manager's generation that last linked it */
    uv_timer_t timer;
    bool timer_init;
    bool closing;
    uint8_t phase; /* enum hc_ep_phase */
    struct hc_probe *probe;
    struct hc_probe *idle; /* the connection kept from the last (passed HTTP) check, or NULL */
    struct wr_list qlink;  /* m->queue while HC_EP_QUEUED */
    struct wr_list elink;  /* m->ejected while ejected */
    struct hc_verdict v;
    uint64_t probe_start; /* loop time of the running probe's start */
    /* outlier detection */
    bool ejected;
    uint32_t times_ejected;
    uint64_t eject_until; /* loop time */
    uint64_t unejected_at;
};

struct hc_tlsctx {
    struct hc_tlsctx *next;
    char *ca_file; /* NULL: no verification */
    SSL_CTX *ctx;  /* NULL: could not be built */
};

struct hc_manager {
    uv_loop_t *loop;
    struct xds_snapshot *snap;
    struct hc_ep **map; /* open addressing, keyed by st */
    size_t map_cap;
    uint64_t gen; /* bumped by every update */
    struct hc_group *groups;
    uint32_t n_groups;
    struct wr_list queue;   /* struct hc_ep.qlink */
    struct wr_list ejected; /* struct hc_ep.elink */
    unsigned inflight;      /* probes not yet closed, kept idle connections aside */
    unsigned handles;       /* open handles (records, probes, async, timer) */
    bool closing;
    uv_async_t async; /* outlier suspects from the workers */
    uv_timer_t od_timer;
    struct xds_ep_sink sink;
    struct hc_tlsctx *tls;
    nghttp2_session_callbacks *h2cbs;
    uint64_t rng;
    char rbuf[HC_READ_BUF];
};

/* The probe of <rec> reached a verdict (the probe closes itself after). */
void hc__ep_probe_done(struct hc_ep *rec, bool ok, const char *why);
/* A probe gave up its slot (it closed, or its connection is kept idle): start queued checks. */
void hc__manager_slot_freed(struct hc_manager *m);
/* The TLS context for probes of cluster <c> (NULL when it cannot be built). */
SSL_CTX *hc__tls_ctx(struct hc_manager *m, const struct xds_cluster *c, char *why, size_t whylen);
/* Outlier detection (hc_outlier.c). */
void hc__od_init(struct hc_manager *m);
void hc__od_suspect(struct hc_manager *m, struct hc_ep *rec, unsigned bits);
void hc__od_uneject(struct hc_manager *m, struct hc_ep *rec, const char *why);
void hc__od_rearm(struct hc_manager *m);
void hc__od_drain_sink(struct hc_manager *m);
struct hc_ep *hc__map_find(struct hc_manager *m, const struct xds_ep_state *st);
/* Whether <rec> takes checks (false: its cluster has no health_check). */
bool hc__ep_checked(const struct hc_ep *rec);
/* Decrements the open handle count; frees the manager when closing and none is left. */
void hc__manager_handle_closed(struct hc_manager *m);

#endif /* WEIR_HC_PRIV_H */
