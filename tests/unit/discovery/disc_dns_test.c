/* tests/unit/discovery/disc_dns_test.c -- the DNS SRV provider (discovery/disc_dns.c) on a real
 * libuv loop against a fake DNS server in the test process (UDP on 127.0.0.1): the view, the
 * TTL-driven re-query, unchanged answers publishing nothing, SERVFAIL / NXDOMAIN / a silent
 * resolver keeping the last good view with errors counted, NODATA as a real empty view, failed
 * target lookups keeping their addresses, IP literal targets, and a clean close mid-query.
 *
 * Waits are bounded and generous; no assertion depends on the machine being fast.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <uv.h>

#include <weir/disc.h>
#include <weir/wr.h>
#include <weir/xds.h>

#include "dns_build.h"
#include "test.h"

/* ---- the fake DNS server ------------------------------------------------------------------ */

enum fake_mode { FAKE_ANSWER = 0, FAKE_SERVFAIL, FAKE_NXDOMAIN, FAKE_SILENT, FAKE_NODATA };

struct fake_srv {
    unsigned prio, weight, port;
    const char *target;
};

struct fake_addr {
    const char *name, *ip;
};

static struct {
    uv_udp_t udp;
    int port;
    enum fake_mode srv_mode;  /* how SRV queries are answered */
    enum fake_mode addr_mode; /* how A/AAAA queries are answered */
    struct fake_srv srv[8];
    int n_srv;
    uint32_t srv_ttl;
    struct fake_addr addr[8];
    int n_addr;
    uint32_t addr_ttl;
    int srv_queries, addr_queries;
} fake;

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char mem[4096];
    *buf = uv_buf_init(mem, sizeof(mem));
}

/* Reads the question of a query: its name (uncompressed, as c-ares writes it) and type. */
static int read_question(const unsigned char *q, size_t len, char *name, unsigned *type)
{
    size_t off = 12, out = 0;

    while (off < len && q[off] != 0) {
        unsigned n = q[off++];
        if (off + n > len || out + n + 2 > 256)
            return -1;
        if (out > 0)
            name[out++] = '.';
        memcpy(name + out, q + off, n);
        out += n;
        off += n;
    }
    name[out] = '\0';
    if (off + 5 > len)
        return -1;
    *type = (unsigned)((q[off + 1] << 8) | q[off + 2]);
    return 0;
}

static void answer_srv(struct tb *b, const char *qname)
{
    for (int i = 0; i < fake.n_srv; i++)
        tb_srv(b, qname, fake.srv_ttl, fake.srv[i].prio, fake.srv[i].weight, fake.srv[i].port,
               fake.srv[i].target);
}

static void answer_addr(struct tb *b, const char *qname, unsigned type)
{
    for (int i = 0; i < fake.n_addr; i++) {
        int v6 = strchr(fake.addr[i].ip, ':') != NULL;
        if (strcasecmp(fake.addr[i].name, qname) == 0 && v6 == (type == TB_T_AAAA))
            tb_addr(b, qname, fake.addr_ttl, fake.addr[i].ip);
    }
}

static void fake_sent(uv_udp_send_t *req, int status)
{
    free(req);
}

static void fake_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                      unsigned flags)
{
    const unsigned char *q = (const unsigned char *)buf->base;
    char qname[256];
    unsigned type;

    if (nread < 12 || from == NULL || read_question(q, (size_t)nread, qname, &type) != 0)
        return;
    bool is_srv = type == TB_T_SRV;
    enum fake_mode mode = is_srv ? fake.srv_mode : fake.addr_mode;
    if (is_srv)
        fake.srv_queries++;
    else
        fake.addr_queries++;
    if (mode == FAKE_SILENT)
        return;

    static struct tb b;
    unsigned rcode = mode == FAKE_SERVFAIL ? 2 : mode == FAKE_NXDOMAIN ? 3 : 0;
    tb_header(&b, (unsigned)((q[0] << 8) | q[1]), 0x85, rcode);
    tb_question(&b, qname, type);
    if (mode == FAKE_ANSWER && is_srv)
        answer_srv(&b, qname);
    else if (mode == FAKE_ANSWER)
        answer_addr(&b, qname, type);
    if (b.count[TB_AN] == 0 && rcode != 2)
        tb_soa(&b, "test", 30, 2); /* negative answers carry the zone's SOA */
    tb_finish(&b);

    uv_udp_send_t *req = malloc(sizeof(*req) + b.len);
    memcpy(req + 1, b.buf, b.len);
    uv_buf_t out = uv_buf_init((char *)(req + 1), (unsigned)b.len);
    ASSERT_EQ(uv_udp_send(req, u, &out, 1, from, fake_sent), 0);
}

static void fake_start(uv_loop_t *loop)
{
    struct sockaddr_in sin;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    uv_ip4_addr("127.0.0.1", 0, &sin);
    ASSERT_EQ(uv_udp_init(loop, &fake.udp), 0);
    ASSERT_EQ(uv_udp_bind(&fake.udp, (struct sockaddr *)&sin, 0), 0);
    ASSERT_EQ(uv_udp_getsockname(&fake.udp, (struct sockaddr *)&ss, &len), 0);
    fake.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    ASSERT_EQ(uv_udp_recv_start(&fake.udp, fake_alloc, fake_recv), 0);
    fake.srv_ttl = fake.addr_ttl = 30;
}

/* The zone most tests start from: a (127.0.0.1) at priority 0, b (127.0.0.2 and ::1) at 1. */
static void fake_default_zone(void)
{
    fake.srv[0] = (struct fake_srv){0, 10, 9001, "a.test"};
    fake.srv[1] = (struct fake_srv){1, 0, 9002, "b.test"};
    fake.n_srv = 2;
    fake.addr[0] = (struct fake_addr){"a.test", "127.0.0.1"};
    fake.addr[1] = (struct fake_addr){"b.test", "127.0.0.2"};
    fake.addr[2] = (struct fake_addr){"b.test", "::1"};
    fake.n_addr = 3;
}

/* ---- the provider under test ------------------------------------------------------------- */

static struct {
    uv_loop_t loop;
    struct disc_provider *p;
    json_t *view;
    int views;
} t;

static void on_view(void *arg, struct disc_provider *p, json_t *view)
{
    json_decref(t.view);
    t.view = view;
    t.views++;
}

static void start_provider(void)
{
    char resolver[64];
    char *resolvers[] = {resolver, NULL};
    struct xds_discovery cfg;

    snprintf(resolver, sizeof(resolver), "127.0.0.1:%d", fake.port);
    memset(&cfg, 0, sizeof(cfg));
    cfg.type = XDS_SRC_DNS_SRV;
    cfg.name = "_http._tcp.search.test";
    cfg.cluster = "search";
    cfg.resolvers = resolvers;
    cfg.n_resolvers = 1;
    t.p = disc_provider_new(&t.loop, &cfg, 0, NULL, on_view, NULL);
    ASSERT(t.p != NULL);
    ASSERT_EQ(disc_provider_start(t.p), 0);
}

static void setup(void)
{
    ASSERT_EQ(uv_loop_init(&t.loop), 0);
    fake_start(&t.loop);
    fake_default_zone();
}

static void teardown(void)
{
    disc_provider_close(t.p);
    uv_close((uv_handle_t *)&fake.udp, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&t.loop), 0);
    json_decref(t.view);
}

static void on_wake(uv_timer_t *h)
{
}

/* Runs the loop until <cond> (if not NULL) holds or <ms> pass; returns whether it holds. */
static bool run_for(uint64_t ms, bool (*cond)(void))
{
    uv_timer_t wake;
    uint64_t end = uv_now(&t.loop) + ms;
    bool ok = false;

    uv_timer_init(&t.loop, &wake);
    uv_timer_start(&wake, on_wake, 10, 10);
    while (!(ok = cond != NULL && cond()) && uv_now(&t.loop) < end) {
        uv_run(&t.loop, UV_RUN_ONCE);
        uv_update_time(&t.loop);
    }
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&t.loop, UV_RUN_NOWAIT);
    return ok;
}

static int want_views;

static bool views_reached(void)
{
    return t.views >= want_views;
}

static bool wait_views(int n, uint64_t ms)
{
    want_views = n;
    return run_for(ms, views_reached);
}

static uint64_t errors(enum disc_reason r)
{
    struct disc_status st;
    disc_provider_status(t.p, &st);
    return st.errors[r];
}

static enum disc_reason want_reason;
static uint64_t want_errors;

static bool errors_reached(void)
{
    return errors(want_reason) >= want_errors;
}

static bool wait_errors(enum disc_reason r, uint64_t n, uint64_t ms)
{
    want_reason = r;
    want_errors = n;
    return run_for(ms, errors_reached);
}

static void assert_view(const char *want)
{
    json_error_t e;
    json_t *w = json_loads(want, 0, &e);

    if (w == NULL)
        FAIL("bad expected JSON: %s", e.text);
    if (t.view == NULL || !json_equal(t.view, w)) {
        char *got = t.view ? json_dumps(t.view, JSON_COMPACT) : NULL;
        FAIL("view %s\n  expected %s", got ? got : "(none)", want);
    }
    json_decref(w);
}

#define VIEW(eps)         "{\"clusters\": [{\"name\": \"search\", \"endpoints\": [" eps "]}]}"
#define EP(addr, w, prio) "{\"address\": \"" addr "\", \"weight\": " #w ", \"priority\": " #prio "}"
#define DEFAULT_VIEW                                                                               \
    VIEW(EP("127.0.0.1:9001", 10, 0) "," EP("127.0.0.2:9002", 1, 1) "," EP("[::1]:9002", 1, 1))

/* ---- tests -------------------------------------------------------------------------------- */

TEST(publishes_srv_view)
{
    setup();
    start_provider();
    ASSERT(wait_views(1, 10000));
    assert_view(DEFAULT_VIEW);
    ASSERT_EQ(fake.srv_queries, 1);
    ASSERT(fake.addr_queries >= 4); /* A and AAAA of both targets */
    teardown();
}

TEST(requery_after_ttl_and_unchanged_answer_publishes_nothing)
{
    setup();
    fake.srv_ttl = 1;
    fake.addr_ttl = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    /* The same answer again and again: queried every second, published once. */
    run_for(2500, NULL);
    ASSERT(fake.srv_queries >= 2);
    ASSERT_EQ(t.views, 1);
    /* A change is seen at the next expiry. */
    fake.srv[0].port = 9003;
    ASSERT(wait_views(2, 5000));
    assert_view(VIEW(
        EP("127.0.0.1:9003", 10, 0) "," EP("127.0.0.2:9002", 1, 1) "," EP("[::1]:9002", 1, 1)));
    teardown();
}

TEST(ttl_bounds_the_requery)
{
    setup();
    fake.srv_ttl = 3600; /* bounded to 60 s: no second query within a few seconds */
    fake.addr_ttl = 3600;
    start_provider();
    ASSERT(wait_views(1, 10000));
    run_for(2500, NULL);
    ASSERT_EQ(fake.srv_queries, 1);
    teardown();
}

static void failure_keeps_view(enum fake_mode mode, enum disc_reason reason)
{
    setup();
    fake.srv_ttl = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    fake.srv_mode = mode;
    /* Back-off from 250 ms: a few failed rounds in a few seconds, and no new view. */
    ASSERT(wait_errors(reason, 3, 15000));
    ASSERT_EQ(t.views, 1);
    assert_view(DEFAULT_VIEW);
    struct disc_status st;
    disc_provider_status(t.p, &st);
    ASSERT(st.restarts >= 3);
    /* The source answers again, with a change: it converges. */
    fake.srv_mode = FAKE_ANSWER;
    fake.n_srv = 1;
    ASSERT(wait_views(2, 15000));
    assert_view(VIEW(EP("127.0.0.1:9001", 10, 0)));
    teardown();
}

TEST(servfail_keeps_last_view)
{
    failure_keeps_view(FAKE_SERVFAIL, DISC_ERR_DNS);
}

TEST(nxdomain_keeps_last_view)
{
    failure_keeps_view(FAKE_NXDOMAIN, DISC_ERR_DNS);
}

TEST(silent_resolver_times_out_and_keeps_view)
{
    setup();
    fake.srv_ttl = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    fake.srv_mode = FAKE_SILENT;
    ASSERT(wait_errors(DISC_ERR_TIMEOUT, 1, 30000));
    ASSERT_EQ(t.views, 1);
    assert_view(DEFAULT_VIEW);
    fake.srv_mode = FAKE_ANSWER;
    fake.srv[0].weight = 20;
    ASSERT(wait_views(2, 15000));
    assert_view(VIEW(
        EP("127.0.0.1:9001", 20, 0) "," EP("127.0.0.2:9002", 1, 1) "," EP("[::1]:9002", 1, 1)));
    teardown();
}

TEST(nodata_is_a_real_empty_view)
{
    setup();
    fake.srv_ttl = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    fake.srv_mode = FAKE_NODATA;
    ASSERT(wait_views(2, 10000));
    assert_view(VIEW(""));
    ASSERT_EQ(errors(DISC_ERR_DNS), 0);
    teardown();
}

TEST(first_failure_publishes_nothing)
{
    setup();
    fake.srv_mode = FAKE_SERVFAIL;
    start_provider();
    ASSERT(wait_errors(DISC_ERR_DNS, 2, 10000));
    ASSERT_EQ(t.views, 0);
    teardown();
}

TEST(failed_target_keeps_its_addresses)
{
    setup();
    fake.srv_ttl = 1;
    fake.addr_ttl = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    /* Address lookups fail while the SRV answer changes: the change applies, and the targets
     * keep the addresses they had. */
    fake.addr_mode = FAKE_SERVFAIL;
    fake.srv[1].weight = 4;
    ASSERT(wait_views(2, 10000));
    assert_view(VIEW(
        EP("127.0.0.1:9001", 10, 0) "," EP("127.0.0.2:9002", 2, 1) "," EP("[::1]:9002", 2, 1)));
    ASSERT(errors(DISC_ERR_DNS) >= 1);
    /* A new target that cannot be resolved adds nothing, and the others stay. */
    fake.srv[2] = (struct fake_srv){0, 1, 9009, "c.test"};
    fake.n_srv = 3;
    int before = fake.srv_queries;
    want_views = 0;
    run_for(3000, NULL);
    ASSERT(fake.srv_queries > before);
    assert_view(VIEW(
        EP("127.0.0.1:9001", 10, 0) "," EP("127.0.0.2:9002", 2, 1) "," EP("[::1]:9002", 2, 1)));
    teardown();
}

TEST(literal_targets_need_no_lookup)
{
    setup();
    fake.srv[0] = (struct fake_srv){0, 3, 9001, "127.0.0.9"};
    fake.n_srv = 1;
    start_provider();
    ASSERT(wait_views(1, 10000));
    assert_view(VIEW(EP("127.0.0.9:9001", 3, 0)));
    ASSERT_EQ(fake.addr_queries, 0);
    teardown();
}

TEST(close_mid_query)
{
    setup();
    fake.srv_mode = FAKE_SILENT;
    start_provider();
    run_for(300, NULL);
    ASSERT_EQ(fake.srv_queries, 1);
    teardown(); /* the loop closes with no handle left */
    ASSERT_EQ(t.views, 0);
}

TEST(close_before_start)
{
    char *resolvers[] = {"127.0.0.1:53", NULL};
    struct xds_discovery cfg = {.type = XDS_SRC_DNS_SRV,
                                .name = "_x._tcp.test",
                                .cluster = "c",
                                .resolvers = resolvers,
                                .n_resolvers = 1};

    ASSERT_EQ(uv_loop_init(&t.loop), 0);
    t.p = disc_provider_new(&t.loop, &cfg, 0, NULL, on_view, NULL);
    ASSERT(t.p != NULL);
    disc_provider_close(t.p);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&t.loop), 0);
}
