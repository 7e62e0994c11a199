/* discovery/disc_dns_parse.c -- the pure part of the DNS SRV provider: the SRV answer with its
 * TTLs (c-ares 1.18's ares_parse_srv_reply() drops them), and the view built from records and
 * addresses. No I/O, no state: unit-tested on crafted messages (tests/unit/discovery/).
 *
 * Message layout: RFC 1035 §4.1 (header, question, answer, authority, additional); names are
 * decoded by ares_expand_name(), which follows compression pointers (§4.1.4) and rejects loops.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>

#include <weir/wr.h>

#include "disc_dns.h"

#define DNS_HDR_LEN   12
#define DNS_T_CNAME   5
#define DNS_T_SOA     6
#define DNS_T_SRV     33
#define DNS_C_IN      1
#define DNS_MAX_CHAIN 16 /* CNAME hops followed before giving up */

/* One resource record of a section, its owner decoded, its data left in place. */
struct rr {
    char *owner; /* ares_free_string() */
    uint16_t type, klass;
    uint32_t ttl;
    size_t rdoff, rdlen;
};

static uint16_t get16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* RFC 2181 §8: a TTL with the most significant bit set is to be taken as zero. */
static uint32_t ttl_of(const unsigned char *p)
{
    uint32_t t = get32(p);
    return (t & 0x80000000u) ? 0 : t;
}

/* Decodes the name at <*off> into a heap string and moves <*off> past it. */
static char *take_name(const unsigned char *msg, size_t len, size_t *off)
{
    char *name = NULL;
    long enclen = 0;

    if (*off >= len || ares_expand_name(msg + *off, msg, (int)len, &name, &enclen) != ARES_SUCCESS)
        return NULL;
    *off += (size_t)enclen;
    return name;
}

/* Reads one record at <*off>; returns false when the message ends inside it. */
static bool take_rr(const unsigned char *msg, size_t len, size_t *off, struct rr *rr)
{
    rr->owner = take_name(msg, len, off);
    if (rr->owner == NULL)
        return false;
    if (len - *off < 10) {
        ares_free_string(rr->owner);
        rr->owner = NULL;
        return false;
    }
    rr->type = get16(msg + *off);
    rr->klass = get16(msg + *off + 2);
    rr->ttl = ttl_of(msg + *off + 4);
    rr->rdlen = get16(msg + *off + 8);
    rr->rdoff = *off + 10;
    if (rr->rdlen > len - rr->rdoff) {
        ares_free_string(rr->owner);
        rr->owner = NULL;
        return false;
    }
    *off = rr->rdoff + rr->rdlen;
    return true;
}

static void free_rrs(struct rr *rrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ares_free_string(rrs[i].owner);
    free(rrs);
}

/* RFC 2308 §5: the negative answer lives for min(SOA TTL, SOA MINIMUM). */
static uint32_t soa_negative_ttl(const unsigned char *msg, size_t len, const struct rr *rr)
{
    size_t off = rr->rdoff, end = rr->rdoff + rr->rdlen;
    char *mname = take_name(msg, len, &off);
    char *rname = mname != NULL ? take_name(msg, len, &off) : NULL;
    uint32_t ttl = DISC_DNS_NO_TTL;

    /* serial, refresh, retry, expire, minimum: five 32-bit fields */
    if (rname != NULL && off <= end && end - off >= 20) {
        uint32_t minimum = ttl_of(msg + off + 16);
        ttl = WR_MIN(rr->ttl, minimum);
    }
    if (mname != NULL)
        ares_free_string(mname);
    if (rname != NULL)
        ares_free_string(rname);
    return ttl;
}

static bool add_srv(const unsigned char *msg, size_t len, const struct rr *rr,
                    struct disc_srv_reply *out)
{
    size_t off = rr->rdoff + 6;
    char *target;

    if (rr->rdlen < 7) /* priority, weight, port and at least the root label */
        return false;
    target = take_name(msg, len, &off);
    if (target == NULL || off > rr->rdoff + rr->rdlen) {
        if (target != NULL)
            ares_free_string(target);
        return false;
    }
    out->ttl = WR_MIN(out->ttl, rr->ttl);
    /* RFC 2782: a target of "." means the service is decidedly not available there. A name
     * longer than a DNS name can be (only possible with escaped bytes) cannot be looked up. */
    bool unavailable = target[0] == '\0', too_long = strlen(target) >= DISC_DNS_NAME_MAX;
    if (unavailable || too_long) {
        out->n_unavailable += unavailable;
        ares_free_string(target);
        return unavailable;
    }
    struct disc_srv_rec *rec;
    out->recs = wr_xrealloc(out->recs, (out->n + 1) * sizeof(*out->recs));
    rec = &out->recs[out->n++];
    rec->priority = get16(msg + rr->rdoff);
    rec->weight = get16(msg + rr->rdoff + 2);
    rec->port = get16(msg + rr->rdoff + 4);
    rec->ttl = rr->ttl;
    strcpy(rec->target, target);
    ares_free_string(target);
    return true;
}

/* Follows the CNAME chain from <qname> through the answer section; returns the final owner
 * name (a pointer into <an> or <qname>) and lowers out->ttl by each CNAME used. */
static const char *follow_cnames(const unsigned char *msg, size_t len, const struct rr *an,
                                 size_t n_an, const char *qname, struct disc_srv_reply *out,
                                 char **alias, size_t n_alias)
{
    const char *name = qname;

    for (size_t hop = 0; hop < n_alias; hop++) {
        size_t i = 0;
        while (i < n_an && !(an[i].type == DNS_T_CNAME && an[i].klass == DNS_C_IN &&
                             strcasecmp(an[i].owner, name) == 0))
            i++;
        if (i == n_an)
            break;
        size_t off = an[i].rdoff;
        alias[hop] = take_name(msg, len, &off);
        if (alias[hop] == NULL)
            break;
        out->ttl = WR_MIN(out->ttl, an[i].ttl);
        name = alias[hop];
    }
    return name;
}

static int parse_sections(const unsigned char *msg, size_t len, struct disc_srv_reply *out,
                          const char **err, char *qname, size_t *off)
{
    unsigned qd = get16(msg + 4), an = get16(msg + 6), ns = get16(msg + 8);
    struct rr *rrs = wr_xcalloc((size_t)an + ns + 1, sizeof(*rrs));
    size_t n = 0;
    int rc = WR_EINVAL;

    for (unsigned i = 1; i < qd; i++) { /* only the first question is ours; skip the others */
        char *other = take_name(msg, len, off);
        if (other == NULL || len - *off < 4) {
            if (other != NULL)
                ares_free_string(other);
            *err = "truncated question section";
            goto out;
        }
        ares_free_string(other);
        *off += 4;
    }
    for (; n < (size_t)an + ns; n++) {
        if (!take_rr(msg, len, off, &rrs[n])) {
            *err = n < an ? "truncated answer section" : "truncated authority section";
            goto out;
        }
    }
    for (size_t i = an; i < n; i++)
        if (rrs[i].type == DNS_T_SOA && rrs[i].klass == DNS_C_IN)
            out->neg_ttl = WR_MIN(out->neg_ttl, soa_negative_ttl(msg, len, &rrs[i]));

    char *alias[DNS_MAX_CHAIN] = {NULL};
    const char *owner = follow_cnames(msg, len, rrs, an, qname, out, alias, DNS_MAX_CHAIN);
    rc = 0;
    for (size_t i = 0; i < an && rc == 0; i++) {
        if (rrs[i].type != DNS_T_SRV || rrs[i].klass != DNS_C_IN ||
            strcasecmp(rrs[i].owner, owner) != 0)
            continue;
        if (!add_srv(msg, len, &rrs[i], out)) {
            *err = "malformed SRV record";
            rc = WR_EINVAL;
        }
    }
    for (size_t i = 0; i < DNS_MAX_CHAIN; i++)
        if (alias[i] != NULL)
            ares_free_string(alias[i]);
out:
    free_rrs(rrs, n);
    return rc;
}

int disc__srv_parse(const unsigned char *msg, size_t len, struct disc_srv_reply *out,
                    const char **err)
{
    size_t off = DNS_HDR_LEN;
    char *qname;
    int rc;

    memset(out, 0, sizeof(*out));
    out->ttl = out->neg_ttl = DISC_DNS_NO_TTL;
    if (len < DNS_HDR_LEN) {
        *err = "shorter than a DNS header";
        return WR_EINVAL;
    }
    if (!(msg[2] & 0x80)) {
        *err = "not a response";
        return WR_EINVAL;
    }
    out->rcode = msg[3] & 0x0f;
    if (get16(msg + 4) == 0) {
        *err = "no question section";
        return WR_EINVAL;
    }
    qname = take_name(msg, len, &off);
    if (qname == NULL || len - off < 4) {
        if (qname != NULL)
            ares_free_string(qname);
        *err = "truncated question section";
        return WR_EINVAL;
    }
    off += 4;
    rc = parse_sections(msg, len, out, err, qname, &off);
    ares_free_string(qname);
    if (rc != 0)
        disc__srv_reply_dispose(out);
    return rc;
}

void disc__srv_reply_dispose(struct disc_srv_reply *r)
{
    wr_free(&r->recs);
    r->n = 0;
}

/* ---- the view ----------------------------------------------------------------------------- */

struct ep {
    char address[64];
    uint32_t weight;
    uint16_t priority;
};

static int by_address(const void *a, const void *b)
{
    const struct ep *x = a, *y = b;
    int c = strcmp(x->address, y->address);
    return c != 0 ? c : (int)x->priority - (int)y->priority;
}

static int by_priority(const void *a, const void *b)
{
    const struct ep *x = a, *y = b;
    if (x->priority != y->priority)
        return (int)x->priority - (int)y->priority;
    return strcmp(x->address, y->address);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static size_t collect(const struct disc_srv_rec *recs, const struct disc_dns_addrs *addrs, size_t n,
                      struct ep *eps)
{
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        uint32_t w = recs[i].weight ? recs[i].weight : 1, k = (uint32_t)addrs[i].n;
        uint32_t share = k ? (w + k / 2) / k : 0;
        share = WR_MIN(WR_MAX(share, 1u), (uint32_t)DISC_DNS_MAX_WEIGHT);
        for (size_t j = 0; j < addrs[i].n; j++) {
            struct sockaddr_storage ss = addrs[i].ss[j];
            if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
                continue;
            set_port(&ss, recs[i].port);
            wr_format_address(&ss, eps[m].address, sizeof(eps[m].address));
            eps[m].weight = share;
            eps[m].priority = recs[i].priority;
            m++;
        }
    }
    return m;
}

/* Merges equal addresses of a list sorted by_address(): the lowest priority stays, with the
 * weights of every copy at that priority. */
static size_t merge(struct ep *eps, size_t m)
{
    size_t out = 0;

    for (size_t i = 0; i < m; i++) {
        if (out > 0 && strcmp(eps[out - 1].address, eps[i].address) == 0) {
            if (eps[out - 1].priority == eps[i].priority)
                eps[out - 1].weight =
                    WR_MIN(eps[out - 1].weight + eps[i].weight, (uint32_t)DISC_DNS_MAX_WEIGHT);
            continue;
        }
        eps[out++] = eps[i];
    }
    return out;
}

/* weir's priority levels go from 0 to DISC_DNS_MAX_PRIORITY, SRV priorities up to 65535, and
 * only their order matters: when some priority does not fit, the distinct priorities of the
 * answer become levels 0, 1, 2, ... in order (the 128th and above share the last level).
 * <eps> is sorted by_priority(). */
static void fit_priorities(struct ep *eps, size_t m)
{
    if (m == 0 || eps[m - 1].priority <= DISC_DNS_MAX_PRIORITY)
        return;
    uint16_t level = 0, prev = eps[0].priority;
    for (size_t i = 0; i < m; i++) {
        if (eps[i].priority != prev && level < DISC_DNS_MAX_PRIORITY)
            level++;
        prev = eps[i].priority;
        eps[i].priority = level;
    }
}

json_t *disc__dns_view(const char *cluster, const struct disc_srv_rec *recs,
                       const struct disc_dns_addrs *addrs, size_t n)
{
    size_t total = 0, m;
    struct ep *eps;
    json_t *list = json_array();

    for (size_t i = 0; i < n; i++)
        total += addrs[i].n;
    eps = wr_xcalloc(total + 1, sizeof(*eps));
    m = collect(recs, addrs, n, eps);
    qsort(eps, m, sizeof(*eps), by_address);
    m = merge(eps, m);
    qsort(eps, m, sizeof(*eps), by_priority);
    fit_priorities(eps, m);
    for (size_t i = 0; i < m; i++)
        json_array_append_new(list, json_pack("{s:s, s:I, s:I}", "address", eps[i].address,
                                              "weight", (json_int_t)eps[i].weight, "priority",
                                              (json_int_t)eps[i].priority));
    free(eps);
    return json_pack("{s:[{s:s, s:o}]}", "clusters", "name", cluster, "endpoints", list);
}

uint32_t disc__dns_refresh_ms(uint32_t ttl_s, uint32_t dflt_ms)
{
    if (ttl_s == DISC_DNS_NO_TTL)
        return dflt_ms;
    return WR_MIN(WR_MAX(ttl_s, 1u), 60u) * 1000u;
}
