/* discovery/disc_dns.c -- the "dns_srv" provider: one cluster's endpoints from the SRV records
 * of a name (RFC 2782, INTERFACES.md §4c), through c-ares driven by the control loop.
 *
 * A round queries the SRV name, then looks up every distinct target's A and AAAA records
 * (ares_getaddrinfo; a target that is an IP literal is used as is) and publishes
 *   {"clusters": [{"name": <cluster>, "endpoints": [{"address", "weight", "priority"}, ...]}]}
 * when it differs from the last view (disc_dns_parse.c builds it). The next round starts when
 * the smallest TTL of the records used runs out, bounded to [1 s, 60 s].
 *
 * Failures never empty the cluster: an SRV query that fails (SERVFAIL, REFUSED, a timeout, no
 * resolver answering, and NXDOMAIN -- see docs/dns-srv.md) keeps the last good view and retries
 * on the provider back-off; a target whose lookup fails keeps the addresses it had. Only an
 * answer that has no SRV record (NOERROR/NODATA) publishes an empty cluster.
 *
 * c-ares never blocks the loop: its sockets are watched with uv_poll handles opened and closed
 * from its socket-state callback, and one uv_timer follows ares_timeout(). The channel lives as
 * long as the provider, so the resolver list is read once (from the config, else
 * /etc/resolv.conf) and lookups use DNS only (no hosts file, no search domains).
 */
#include "disc_dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ares.h>

#include "disc_priv.h"

#define QUERY_TIMEOUT_MS 1000 /* first try; c-ares doubles it each round of tries */
#define QUERY_TRIES      3    /* so one resolver that does not answer fails after ~7 s */
#define EMPTY_REFRESH_MS 5000 /* an empty answer without an SOA to say how long it holds */

/* One socket c-ares asked us to watch. */
struct dns_poll {
    struct wr_list link;
    uv_poll_t h;
    ares_socket_t fd;
    struct dns_impl *d;
};

/* The addresses of one target: being looked up (in a round) or as last known. */
struct dns_target {
    struct dns_round *r;
    char *name;
    struct sockaddr_storage *ss;
    size_t n;
    uint32_t ttl; /* smallest A/AAAA/CNAME TTL; DISC_DNS_NO_TTL: none (literal, or kept) */
    int status;   /* ARES_SUCCESS or the failure */
};

struct dns_round {
    struct dns_impl *d;
    struct disc_srv_reply srv;
    struct dns_target *t; /* one per distinct target */
    size_t n_t;
    size_t pending; /* lookups not answered yet */
};

struct dns_impl {
    struct disc_provider *p;
    ares_channel ch;    /* NULL once destroyed */
    uv_timer_t tick;    /* ares_timeout() */
    uv_timer_t refresh; /* the next round */
    unsigned open_handles;
    struct wr_list polls;
    struct dns_round *round;  /* the round under way, NULL between rounds */
    json_t *view;             /* the last view published */
    struct dns_target *known; /* each target's addresses after the last round */
    size_t n_known;
    char *last_error; /* the last problem logged (logged again only when it changes) */
};

static void start_round(struct dns_impl *d);

/* ---- errors and freshness ----------------------------------------------------------------- */

/* Counts an error and logs it, once per distinct message in a row. */
static void report(struct dns_impl *d, enum disc_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct dns_impl *d, enum disc_reason reason, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (d->last_error != NULL && strcmp(d->last_error, msg) == 0) {
        d->p->errors[reason]++; /* counted, not logged again */
        return;
    }
    free(d->last_error);
    d->last_error = wr_xstrdup(msg);
    disc__error(d->p, reason, "%s", msg);
}

static void recovered(struct dns_impl *d)
{
    if (d->last_error == NULL)
        return;
    wr_info("discovery[%u] %s: answers again", d->p->index, d->p->label);
    wr_free(&d->last_error);
}

/* A round that got an answer but found nothing new publishes nothing (an identical view would
 * only rebuild an identical snapshot); the source is fresh all the same, for stale_after_ms and
 * weir_discovery_last_update_seconds, as disc__publish() would record it. */
static void mark_fresh(struct disc_provider *p)
{
    disc__alive(p);
}

/* What a failed lookup means, in words an operator can act on. With one resolver or several,
 * c-ares turns SERVFAIL, REFUSED and unreachable resolvers into ARES_ECONNREFUSED once every
 * resolver was tried (it moves on to the next resolver on such answers). */
static const char *failure_text(int status)
{
    switch (status) {
    case ARES_ECONNREFUSED:
        return "no resolver gave an answer (SERVFAIL, REFUSED or unreachable)";
    case ARES_ETIMEOUT:
        return "no resolver answered in time";
    case ARES_ENOTFOUND:
        return "NXDOMAIN (the name does not exist)";
    case ARES_ESERVFAIL:
        return "SERVFAIL";
    case ARES_EREFUSED:
        return "REFUSED";
    default:
        return ares_strerror(status);
    }
}

static enum disc_reason reason_of(int status)
{
    return status == ARES_ETIMEOUT ? DISC_ERR_TIMEOUT : DISC_ERR_DNS;
}

/* ---- c-ares on the loop ------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t);

/* Follows ares_timeout(): the tick fires when the earliest query times out. */
static void arm(struct dns_impl *d)
{
    struct timeval tv;

    if (d->ch == NULL || d->p->closing)
        return;
    if (ares_timeout(d->ch, NULL, &tv) == NULL) {
        uv_timer_stop(&d->tick);
        return;
    }
    uv_timer_start(&d->tick, on_tick,
                   (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000, 0);
}

static void on_tick(uv_timer_t *t)
{
    struct dns_impl *d = WR_CONTAINER_OF(t, struct dns_impl, tick);

    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm(d);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_poll *dp = WR_CONTAINER_OF(h, struct dns_poll, h);
    struct dns_impl *d = dp->d;
    ares_socket_t fd = dp->fd;

    /* On an error, let c-ares read and write so that it sees the error itself. (dp may be
     * closed from inside ares_process_fd(): fd and d were read before.) */
    ares_process_fd(d->ch, (status < 0 || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD,
                    (status < 0 || (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD);
    arm(d);
}

static void handle_gone(struct dns_impl *d);

static void on_poll_closed(uv_handle_t *h)
{
    struct dns_poll *dp = WR_CONTAINER_OF((uv_poll_t *)h, struct dns_poll, h);
    struct dns_impl *d = dp->d;

    free(dp);
    handle_gone(d);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares opens, re-arms and closes its sockets through this. It calls
 * it with (0, 0) before it closes <fd>, so the poll handle is stopped first. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns_impl *d = data;
    struct dns_poll *dp = NULL;
    struct wr_list *it;

    for (it = d->polls.next; it != &d->polls; it = it->next) {
        struct dns_poll *x = WR_CONTAINER_OF(it, struct dns_poll, link);
        if (x->fd == fd) {
            dp = x;
            break;
        }
    }
    if (!readable && !writable) {
        if (dp != NULL) {
            wr_list_remove(&dp->link);
            uv_close((uv_handle_t *)&dp->h, on_poll_closed);
        }
        return;
    }
    if (dp == NULL) {
        dp = wr_xcalloc(1, sizeof(*dp));
        int rc = uv_poll_init_socket(d->p->loop, &dp->h, fd);
        if (rc != 0) {
            /* The query on it will time out and fail like an unanswered one. */
            report(d, DISC_ERR_DNS, "cannot watch a resolver socket: %s", uv_strerror(rc));
            free(dp);
            return;
        }
        dp->fd = fd;
        dp->d = d;
        d->open_handles++;
        wr_list_insert_tail(&d->polls, &dp->link);
    }
    uv_poll_start(&dp->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* ---- a round: SRV, then the targets -------------------------------------------------------- */

static void on_refresh(uv_timer_t *t)
{
    start_round(WR_CONTAINER_OF(t, struct dns_impl, refresh));
}

static void schedule(struct dns_impl *d, uint32_t ms)
{
    if (!d->p->closing)
        uv_timer_start(&d->refresh, on_refresh, ms, 0);
}

static void round_free(struct dns_round *r)
{
    for (size_t i = 0; i < r->n_t; i++) {
        free(r->t[i].name);
        free(r->t[i].ss);
    }
    free(r->t);
    disc__srv_reply_dispose(&r->srv);
    if (r->d->round == r)
        r->d->round = NULL;
    free(r);
}

static size_t view_size(const json_t *view)
{
    const json_t *cl = json_array_get(json_object_get(view, "clusters"), 0);
    return json_array_size(json_object_get(cl, "endpoints"));
}

/* The round failed as a whole: nothing changes, the next try is on the back-off. */
static void round_failed(struct dns_round *r, enum disc_reason reason, const char *what)
{
    struct dns_impl *d = r->d;

    round_free(r);
    if (d->view != NULL)
        report(d, reason, "SRV %s: %s; keeping the last good view (%zu endpoints)", d->p->cfg.name,
               what, view_size(d->view));
    else
        report(d, reason, "SRV %s: %s; no endpoints yet", d->p->cfg.name, what);
    schedule(d, disc__backoff_next(d->p));
}

static struct dns_target *known_find(struct dns_impl *d, const char *name)
{
    for (size_t i = 0; i < d->n_known; i++)
        if (strcasecmp(d->known[i].name, name) == 0)
            return &d->known[i];
    return NULL;
}

static struct dns_target *round_target(struct dns_round *r, const char *name)
{
    for (size_t i = 0; i < r->n_t; i++)
        if (strcasecmp(r->t[i].name, name) == 0)
            return &r->t[i];
    return NULL;
}

static void set_addrs(struct dns_target *t, const struct sockaddr_storage *ss, size_t n)
{
    free(t->ss);
    t->ss = wr_xcalloc(n + 1, sizeof(*ss));
    if (n > 0)
        memcpy(t->ss, ss, n * sizeof(*ss));
    t->n = n;
}

/* A failed target lookup keeps the addresses the target had; the round is then partial.
 * Returns the number of such targets and describes the first in <why>. */
static size_t keep_failed_targets(struct dns_round *r, char *why, size_t whylen, int *status)
{
    size_t failed = 0;

    for (size_t i = 0; i < r->n_t; i++) {
        struct dns_target *t = &r->t[i], *k;
        if (t->status == ARES_SUCCESS || t->status == ARES_ENODATA)
            continue;
        if (failed++ == 0) {
            snprintf(why, whylen, "%s: %s", t->name, failure_text(t->status));
            *status = t->status;
        }
        k = known_find(r->d, t->name);
        if (k != NULL)
            set_addrs(t, k->ss, k->n);
    }
    return failed;
}

/* This round's targets become the known ones (their kept addresses included). */
static void remember_targets(struct dns_impl *d, struct dns_round *r)
{
    for (size_t i = 0; i < d->n_known; i++) {
        free(d->known[i].name);
        free(d->known[i].ss);
    }
    free(d->known);
    d->known = r->t;
    d->n_known = r->n_t;
    r->t = NULL;
    r->n_t = 0;
}

static void publish_if_changed(struct dns_impl *d, json_t *view)
{
    struct disc_provider *p = d->p;

    mark_fresh(p);
    if (d->view != NULL && json_equal(d->view, view)) {
        json_decref(view);
        return;
    }
    wr_info("discovery[%u] %s: %zu endpoints for cluster \"%s\"", p->index, p->label,
            view_size(view), p->cfg.cluster);
    json_decref(d->view);
    d->view = view;
    disc__publish(p, json_incref(view));
}

/* Every lookup of the round answered: build, publish, and plan the next round. */
static void finish_round(struct dns_round *r)
{
    struct dns_impl *d = r->d;
    struct disc_dns_addrs *addrs = wr_xcalloc(r->srv.n + 1, sizeof(*addrs));
    uint32_t ttl = r->srv.n > 0 ? r->srv.ttl : r->srv.neg_ttl;
    size_t usable = 0, failed;
    char why[300];
    int status = ARES_SUCCESS;

    failed = keep_failed_targets(r, why, sizeof(why), &status);
    for (size_t i = 0; i < r->n_t; i++)
        if (r->t[i].status == ARES_SUCCESS)
            ttl = WR_MIN(ttl, r->t[i].ttl);
    for (size_t i = 0; i < r->srv.n; i++) {
        struct dns_target *t = round_target(r, r->srv.recs[i].target);
        addrs[i].ss = t->ss;
        addrs[i].n = t->n;
        usable += t->n;
    }
    if (failed > 0 && usable == 0) {
        /* Records, but no address at all for lack of answers: not a real empty cluster. */
        char what[340];
        snprintf(what, sizeof(what), "no target resolved (%s)", why);
        free(addrs);
        round_failed(r, reason_of(status), what);
        return;
    }
    publish_if_changed(d, disc__dns_view(d->p->cfg.cluster, r->srv.recs, addrs, r->srv.n));
    free(addrs);
    remember_targets(d, r);
    round_free(r);
    uint32_t next = disc__dns_refresh_ms(ttl, EMPTY_REFRESH_MS);
    if (failed > 0) {
        report(d, reason_of(status),
               "%zu target(s) of SRV %s not resolved (%s); they keep their last addresses", failed,
               d->p->cfg.name, why);
        next = WR_MIN(next, disc__backoff_next(d->p));
    } else {
        recovered(d);
        disc__backoff_reset(d->p);
    }
    schedule(d, next);
}

/* Adds <ss> to <t> unless it is there already. */
static void add_addr(struct dns_target *t, const struct sockaddr *sa, size_t salen)
{
    struct sockaddr_storage ss;

    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || salen > sizeof(ss))
        return;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, sa, salen);
    for (size_t i = 0; i < t->n; i++)
        if (memcmp(&t->ss[i], &ss, sizeof(ss)) == 0)
            return;
    t->ss = wr_xrealloc(t->ss, (t->n + 1) * sizeof(ss));
    t->ss[t->n++] = ss;
}

static void lookup_done(struct dns_round *r)
{
    if (--r->pending > 0)
        return;
    if (r->d->p->closing)
        round_free(r);
    else
        finish_round(r);
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_target *t = arg;

    t->status = status;
    if (status == ARES_SUCCESS && res != NULL) {
        for (struct ares_addrinfo_node *n = res->nodes; n != NULL; n = n->ai_next) {
            add_addr(t, n->ai_addr, n->ai_addrlen);
            t->ttl = WR_MIN(t->ttl, (uint32_t)WR_MAX(n->ai_ttl, 0));
        }
        for (struct ares_addrinfo_cname *c = res->cnames; c != NULL; c = c->next)
            t->ttl = WR_MIN(t->ttl, (uint32_t)WR_MAX(c->ttl, 0));
    }
    if (res != NULL)
        ares_freeaddrinfo(res);
    lookup_done(t->r);
}

/* An IP literal target ("10.0.0.1", with or without the final dot) needs no lookup. */
static bool literal_target(struct dns_target *t)
{
    char host[DISC_DNS_NAME_MAX];
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    size_t len = strlen(t->name);

    memcpy(host, t->name, len + 1);
    if (len > 0 && host[len - 1] == '.')
        host[len - 1] = '\0';
    if (inet_pton(AF_INET, host, &in4.sin_addr) == 1)
        add_addr(t, (struct sockaddr *)&in4, sizeof(in4));
    else if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1)
        add_addr(t, (struct sockaddr *)&in6, sizeof(in6));
    else
        return false;
    return true;
}

static void resolve_targets(struct dns_round *r)
{
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};

    r->t = wr_xcalloc(r->srv.n + 1, sizeof(*r->t));
    for (size_t i = 0; i < r->srv.n; i++) {
        if (round_target(r, r->srv.recs[i].target) != NULL)
            continue;
        struct dns_target *t = &r->t[r->n_t++];
        t->r = r;
        t->name = wr_xstrdup(r->srv.recs[i].target);
        t->ttl = DISC_DNS_NO_TTL;
    }
    /* One extra count while the lookups start, as c-ares may answer some at once. */
    r->pending = r->n_t + 1;
    for (size_t i = 0; i < r->n_t; i++) {
        struct dns_target *t = &r->t[i];
        if (literal_target(t)) {
            t->status = ARES_SUCCESS;
            r->pending--;
            continue;
        }
        ares_getaddrinfo(r->d->ch, t->name, NULL, &hints, on_addrinfo, t);
    }
    lookup_done(r);
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_round *r = arg;
    const char *why = NULL;
    char what[128];

    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || r->d->p->closing) {
        round_free(r);
        return;
    }
    /* NOERROR with no answer is ARES_ENODATA: a real, empty answer. Anything else, NXDOMAIN
     * included (docs/dns-srv.md says why), fails the round. */
    if (status != ARES_SUCCESS && status != ARES_ENODATA) {
        round_failed(r, reason_of(status), failure_text(status));
        return;
    }
    if (abuf == NULL || disc__srv_parse(abuf, (size_t)alen, &r->srv, &why) != 0) {
        snprintf(what, sizeof(what), "malformed answer: %s", why ? why : "empty");
        round_failed(r, DISC_ERR_PARSE, what);
        return;
    }
    resolve_targets(r);
}

static void start_round(struct dns_impl *d)
{
    struct dns_round *r;

    if (d->round != NULL || d->p->closing)
        return;
    r = wr_xcalloc(1, sizeof(*r));
    r->d = d;
    d->round = r;
    ares_query(d->ch, d->p->cfg.name, ns_c_in, ns_t_srv, on_srv, r);
    arm(d);
}

/* ---- provider operations ------------------------------------------------------------------ */

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS)
        wr_err("c-ares: library init: %s", ares_strerror(rc));
}

/* "127.0.0.1:5353,[::1]:5353" from the configured resolvers (validated by the config). */
static int set_resolvers(struct dns_impl *d)
{
    struct disc_provider *p = d->p;
    struct wr_sbuf csv = {0};
    int rc = ARES_SUCCESS;

    for (uint32_t i = 0; i < p->cfg.n_resolvers; i++) {
        struct sockaddr_storage ss;
        unsigned sslen;
        const char *why;
        char buf[64];
        if (wr_parse_address(p->cfg.resolvers[i], &ss, &sslen, &why) != 0) {
            wr_err("discovery[%u]: resolvers[%u]: %s", p->index, i, why);
            wr_sbuf_dispose(&csv);
            return WR_EINVAL;
        }
        wr_format_address(&ss, buf, sizeof(buf));
        wr_sbuf_printf(&csv, "%s%s", i ? "," : "", buf);
    }
    if (csv.len > 0)
        rc = ares_set_servers_ports_csv(d->ch, csv.p);
    if (rc != ARES_SUCCESS)
        wr_err("discovery[%u]: resolvers \"%s\": %s", p->index, csv.p, ares_strerror(rc));
    wr_sbuf_dispose(&csv);
    return rc == ARES_SUCCESS ? 0 : WR_EINVAL;
}

static int dns_init(struct disc_provider *p)
{
    struct dns_impl *d = wr_xcalloc(1, sizeof(*d));
    struct ares_options o;
    int rc;

    pthread_once(&lib_once, lib_init);
    d->p = p;
    wr_list_init(&d->polls);
    memset(&o, 0, sizeof(o));
    o.timeout = QUERY_TIMEOUT_MS; /* milliseconds with ARES_OPT_TIMEOUTMS */
    o.tries = QUERY_TRIES;
    o.ndomains = 0;          /* no search domains: SRV names and targets are absolute */
    o.lookups = (char *)"b"; /* DNS only: no /etc/hosts, whose entries have no TTL */
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    rc = ares_init_options(&d->ch, &o,
                           ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_DOMAINS |
                               ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        wr_err("discovery[%u]: c-ares: %s", p->index, ares_strerror(rc));
        free(d);
        return WR_ENOMEM;
    }
    if (set_resolvers(d) != 0) {
        ares_destroy(d->ch);
        free(d);
        return WR_EINVAL;
    }
    p->impl = d;
    return 0;
}

static int dns_start(struct disc_provider *p)
{
    struct dns_impl *d = p->impl;

    uv_timer_init(p->loop, &d->tick);
    uv_timer_init(p->loop, &d->refresh);
    d->open_handles = 2;
    start_round(d);
    return 0;
}

static void impl_free(struct dns_impl *d)
{
    struct disc_provider *p = d->p;

    for (size_t i = 0; i < d->n_known; i++) {
        free(d->known[i].name);
        free(d->known[i].ss);
    }
    free(d->known);
    json_decref(d->view);
    free(d->last_error);
    free(d);
    disc__closed(p);
}

static void handle_gone(struct dns_impl *d)
{
    if (--d->open_handles == 0)
        impl_free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void dns_close(struct disc_provider *p)
{
    struct dns_impl *d = p->impl;
    bool started = d->open_handles > 0;

    /* Answers every pending query with ARES_EDESTRUCTION (the rounds are freed there) and
     * reports every socket closed (their poll handles close). */
    ares_destroy(d->ch);
    d->ch = NULL;
    while (!wr_list_empty(&d->polls)) { /* none expected: c-ares reported each close */
        struct dns_poll *dp = WR_CONTAINER_OF(d->polls.next, struct dns_poll, link);
        wr_list_remove(&dp->link);
        uv_close((uv_handle_t *)&dp->h, on_poll_closed);
    }
    if (!started) {
        impl_free(d);
        return;
    }
    d->tick.data = d->refresh.data = d;
    uv_close((uv_handle_t *)&d->tick, on_timer_closed);
    uv_close((uv_handle_t *)&d->refresh, on_timer_closed);
}

const struct disc_ops disc__dns_ops = {
    .type = "dns_srv",
    .init = dns_init,
    .start = dns_start,
    .close = dns_close,
};
