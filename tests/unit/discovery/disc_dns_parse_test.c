/* tests/unit/discovery/disc_dns_parse_test.c -- the pure part of the DNS SRV provider
 * (discovery/disc_dns_parse.c): SRV answers with their TTLs (compression, CNAME chains, RFC 2181
 * TTLs, "." targets, negative TTLs), malformed messages, the view built from records and
 * addresses, and the refresh bounds.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>

#include "../../../discovery/disc_dns.h"
#include "dns_build.h"
#include "test.h"

#define QNAME "_http._tcp.search.example.internal"

static void parse_ok(const struct tb *b, struct disc_srv_reply *r)
{
    const char *err = NULL;
    int rc = disc__srv_parse(b->buf, b->len, r, &err);
    if (rc != 0)
        FAIL("parse failed: %s", err);
}

static void parse_bad(const struct tb *b, const char *want)
{
    struct disc_srv_reply r;
    const char *err = NULL;

    ASSERT_EQ(disc__srv_parse(b->buf, b->len, &r, &err), WR_EINVAL);
    ASSERT(err != NULL);
    if (want != NULL && strstr(err, want) == NULL)
        FAIL("error \"%s\" does not contain \"%s\"", err, want);
    ASSERT_EQ(r.n, 0);
    ASSERT(r.recs == NULL);
    disc__srv_reply_dispose(&r);
}

TEST(two_records_and_smallest_ttl)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 7, 0x85, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_srv(&b, QNAME, 30, 0, 10, 9001, "a.example.internal");
    tb_srv(&b, QNAME, 12, 1, 5, 9002, "b.example.internal.");
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.rcode, 0);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(r.recs[0].priority, 0);
    ASSERT_EQ(r.recs[0].weight, 10);
    ASSERT_EQ(r.recs[0].port, 9001);
    ASSERT_EQ(r.recs[0].ttl, 30);
    ASSERT_STREQ(r.recs[0].target, "a.example.internal");
    ASSERT_EQ(r.recs[1].priority, 1);
    ASSERT_EQ(r.recs[1].weight, 5);
    ASSERT_EQ(r.recs[1].port, 9002);
    ASSERT_STREQ(r.recs[1].target, "b.example.internal");
    ASSERT_EQ(r.ttl, 12);
    ASSERT_EQ(r.neg_ttl, DISC_DNS_NO_TTL);
    disc__srv_reply_dispose(&r);
}

TEST(compressed_owner_and_target)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    /* owner: a pointer to the question name (offset 12); target: "web" + a pointer to the
     * "example.internal" suffix of the question name */
    size_t suffix = 12 + strlen("_http._tcp.search.") + 1;
    ASSERT_EQ(b.buf[suffix - 1], 7); /* the length byte of "example" */
    tb_ptr(&b, 12);
    size_t m = tb_rr(&b, TB_AN, NULL, TB_T_SRV, 40);
    tb_u16(&b, 3);
    tb_u16(&b, 20);
    tb_u16(&b, 8080);
    tb_u8(&b, 3);
    memcpy(b.buf + b.len, "web", 3);
    b.len += 3;
    tb_ptr(&b, (unsigned)suffix - 1);
    tb_rr_end(&b, m);
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 1);
    ASSERT_STREQ(r.recs[0].target, "web.example.internal");
    ASSERT_EQ(r.recs[0].priority, 3);
    ASSERT_EQ(r.recs[0].port, 8080);
    ASSERT_EQ(r.ttl, 40);
    disc__srv_reply_dispose(&r);
}

TEST(cname_chain_lowers_ttl_and_other_owners_are_ignored)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x85, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_cname(&b, QNAME, 5, "alias.example.internal");
    tb_cname(&b, "ALIAS.example.internal", 50, "_srv.real.internal");
    tb_srv(&b, "_srv.Real.internal", 30, 0, 1, 80, "t1.internal");
    tb_srv(&b, "_other.internal", 2, 0, 1, 81, "t2.internal"); /* not ours: ignored */
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 1);
    ASSERT_STREQ(r.recs[0].target, "t1.internal");
    ASSERT_EQ(r.ttl, 5); /* the first CNAME holds the shortest */
    disc__srv_reply_dispose(&r);
}

TEST(cname_loop_ends)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x85, 0);
    tb_question(&b, "a.test", TB_T_SRV);
    tb_cname(&b, "a.test", 5, "b.test");
    tb_cname(&b, "b.test", 5, "a.test");
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 0);
    disc__srv_reply_dispose(&r);
}

TEST(ttl_with_high_bit_is_zero)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_srv(&b, QNAME, 0x80000005u, 0, 1, 80, "a.test");
    tb_srv(&b, QNAME, 0x7fffffffu, 0, 1, 81, "b.test");
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 2);
    ASSERT_EQ(r.recs[0].ttl, 0); /* RFC 2181 §8 */
    ASSERT_EQ(r.recs[1].ttl, 0x7fffffff);
    ASSERT_EQ(r.ttl, 0);
    disc__srv_reply_dispose(&r);
}

TEST(dot_target_means_not_available)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_srv(&b, QNAME, 9, 0, 0, 0, ".");
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(r.n_unavailable, 1);
    ASSERT_EQ(r.ttl, 9);
    disc__srv_reply_dispose(&r);
}

TEST(nodata_negative_ttl_from_soa)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_soa(&b, "example.internal", 20, 7);
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(r.ttl, DISC_DNS_NO_TTL);
    ASSERT_EQ(r.neg_ttl, 7); /* min(SOA TTL, MINIMUM), RFC 2308 §5 */

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_soa(&b, "example.internal", 3, 300);
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.neg_ttl, 3);
    disc__srv_reply_dispose(&r);
}

TEST(rcode_is_reported)
{
    struct tb b;
    struct disc_srv_reply r;

    tb_header(&b, 1, 0x84, 3);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_soa(&b, "example.internal", 60, 10);
    tb_finish(&b);
    parse_ok(&b, &r);
    ASSERT_EQ(r.rcode, 3);
    ASSERT_EQ(r.n, 0);
    ASSERT_EQ(r.neg_ttl, 10);
    disc__srv_reply_dispose(&r);
}

TEST(malformed_messages)
{
    struct tb b;

    tb_header(&b, 1, 0x84, 0);
    b.len = 11;
    parse_bad(&b, "header");

    tb_header(&b, 1, 0x04, 0); /* QR clear: a query */
    tb_question(&b, QNAME, TB_T_SRV);
    tb_finish(&b);
    parse_bad(&b, "not a response");

    tb_header(&b, 1, 0x84, 0);
    tb_finish(&b);
    parse_bad(&b, "question");

    /* RDLENGTH beyond the end */
    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_srv(&b, QNAME, 5, 0, 1, 80, "a.test");
    tb_finish(&b);
    b.len -= 3;
    parse_bad(&b, "answer");

    /* an SRV too short to hold its fields */
    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    size_t m = tb_rr(&b, TB_AN, QNAME, TB_T_SRV, 5);
    tb_u16(&b, 0);
    tb_u16(&b, 1);
    tb_rr_end(&b, m);
    tb_finish(&b);
    parse_bad(&b, "SRV");

    /* a compression pointer to itself */
    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    size_t self = b.len;
    tb_ptr(&b, (unsigned)self);
    tb_rr(&b, TB_AN, NULL, TB_T_SRV, 5);
    tb_finish(&b);
    parse_bad(&b, "answer");

    /* more answers announced than present */
    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_srv(&b, QNAME, 5, 0, 1, 80, "a.test");
    b.count[TB_AN] = 3;
    tb_finish(&b);
    parse_bad(&b, "answer");
}

/* Every prefix of a valid answer is rejected or parsed, never read past (ASan checks it). */
TEST(every_truncation_is_safe)
{
    struct tb b;
    struct disc_srv_reply r;
    const char *err;

    tb_header(&b, 1, 0x84, 0);
    tb_question(&b, QNAME, TB_T_SRV);
    tb_cname(&b, QNAME, 5, "x.test");
    tb_srv(&b, "x.test", 30, 0, 1, 80, "a.test");
    tb_soa(&b, "test", 30, 5);
    tb_finish(&b);
    for (size_t len = 0; len < b.len; len++) {
        unsigned char *copy = malloc(len + 1);
        memcpy(copy, b.buf, len);
        if (disc__srv_parse(copy, len, &r, &err) == 0)
            disc__srv_reply_dispose(&r);
        free(copy);
    }
    parse_ok(&b, &r);
    ASSERT_EQ(r.n, 1);
    disc__srv_reply_dispose(&r);
}

/* ---- the view ----------------------------------------------------------------------------- */

static struct sockaddr_storage ip(const char *s)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(s, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, s, &in6->sin6_addr);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        in4->sin_family = AF_INET;
        inet_pton(AF_INET, s, &in4->sin_addr);
    }
    return ss;
}

static struct disc_srv_rec rec(unsigned prio, unsigned weight, unsigned port)
{
    struct disc_srv_rec r;
    memset(&r, 0, sizeof(r));
    r.priority = (uint16_t)prio;
    r.weight = (uint16_t)weight;
    r.port = (uint16_t)port;
    return r;
}

static void assert_view(json_t *view, const char *want)
{
    json_error_t e;
    json_t *w = json_loads(want, 0, &e);
    if (w == NULL)
        FAIL("bad expected JSON: %s", e.text);
    if (!json_equal(view, w)) {
        char *got = json_dumps(view, JSON_COMPACT);
        FAIL("view %s\n  expected %s", got, want);
    }
    json_decref(w);
    json_decref(view);
}

TEST(view_weights_priorities_and_order)
{
    struct sockaddr_storage a[] = {ip("127.0.0.1")};
    struct sockaddr_storage b[] = {ip("::1"), ip("127.0.0.2")};
    struct disc_srv_rec recs[] = {rec(1, 0, 9002), rec(0, 10, 9001)};
    struct disc_dns_addrs addrs[] = {{b, 2}, {a, 1}};

    /* weight 0 counts as 1; a record's weight is shared by its target's addresses */
    assert_view(disc__dns_view("search", recs, addrs, 2),
                "{\"clusters\": [{\"name\": \"search\", \"endpoints\": ["
                "{\"address\": \"127.0.0.1:9001\", \"weight\": 10, \"priority\": 0},"
                "{\"address\": \"127.0.0.2:9002\", \"weight\": 1, \"priority\": 1},"
                "{\"address\": \"[::1]:9002\", \"weight\": 1, \"priority\": 1}]}]}");

    struct disc_srv_rec even[] = {rec(0, 10, 80)};
    struct disc_dns_addrs both[] = {{b, 2}};
    assert_view(disc__dns_view("c", even, both, 1),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": ["
                "{\"address\": \"127.0.0.2:80\", \"weight\": 5, \"priority\": 0},"
                "{\"address\": \"[::1]:80\", \"weight\": 5, \"priority\": 0}]}]}");
}

TEST(view_duplicates_merge_and_weights_clamp)
{
    struct sockaddr_storage a[] = {ip("10.0.0.1")};
    /* the same address and port from three records: priority 0 twice, priority 2 once */
    struct disc_srv_rec recs[] = {rec(2, 7, 80), rec(0, 3, 80), rec(0, 4, 80), rec(0, 65535, 81)};
    struct disc_dns_addrs addrs[] = {{a, 1}, {a, 1}, {a, 1}, {a, 1}};

    assert_view(disc__dns_view("c", recs, addrs, 4),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": ["
                "{\"address\": \"10.0.0.1:80\", \"weight\": 7, \"priority\": 0},"
                "{\"address\": \"10.0.0.1:81\", \"weight\": 10000, \"priority\": 0}]}]}");
}

TEST(view_priorities_beyond_the_level_limit_keep_their_order)
{
    struct sockaddr_storage a[] = {ip("10.0.0.1")}, b[] = {ip("10.0.0.2")}, c[] = {ip("10.0.0.3")};
    struct disc_srv_rec recs[] = {rec(65535, 1, 80), rec(10, 1, 80), rec(300, 1, 80)};
    struct disc_dns_addrs addrs[] = {{a, 1}, {b, 1}, {c, 1}};

    assert_view(disc__dns_view("c", recs, addrs, 3),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": ["
                "{\"address\": \"10.0.0.2:80\", \"weight\": 1, \"priority\": 0},"
                "{\"address\": \"10.0.0.3:80\", \"weight\": 1, \"priority\": 1},"
                "{\"address\": \"10.0.0.1:80\", \"weight\": 1, \"priority\": 2}]}]}");

    /* within the limit, the SRV values themselves */
    struct disc_srv_rec small[] = {rec(127, 1, 80), rec(10, 1, 80)};
    assert_view(disc__dns_view("c", small, addrs, 2),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": ["
                "{\"address\": \"10.0.0.2:80\", \"weight\": 1, \"priority\": 10},"
                "{\"address\": \"10.0.0.1:80\", \"weight\": 1, \"priority\": 127}]}]}");
}

TEST(view_empty)
{
    assert_view(disc__dns_view("c", NULL, NULL, 0),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": []}]}");

    /* a record whose target has no address adds nothing */
    struct disc_srv_rec recs[] = {rec(0, 1, 80)};
    struct disc_dns_addrs addrs[] = {{NULL, 0}};
    assert_view(disc__dns_view("c", recs, addrs, 1),
                "{\"clusters\": [{\"name\": \"c\", \"endpoints\": []}]}");
}

TEST(refresh_bounds)
{
    ASSERT_EQ(disc__dns_refresh_ms(0, 5000), 1000);
    ASSERT_EQ(disc__dns_refresh_ms(1, 5000), 1000);
    ASSERT_EQ(disc__dns_refresh_ms(30, 5000), 30000);
    ASSERT_EQ(disc__dns_refresh_ms(60, 5000), 60000);
    ASSERT_EQ(disc__dns_refresh_ms(86400, 5000), 60000);
    ASSERT_EQ(disc__dns_refresh_ms(DISC_DNS_NO_TTL, 5000), 5000);
}
