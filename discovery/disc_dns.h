/* discovery/disc_dns.h -- the parts of the DNS SRV provider that do no I/O (disc_dns_parse.c):
 * reading an SRV answer with its TTLs, and turning records and addresses into a view. Private
 * to discovery/ and its unit tests.
 */
#ifndef WEIR_DISC_DNS_H
#define WEIR_DISC_DNS_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define DISC_DNS_NAME_MAX     256        /* presentation form of a name, NUL included */
#define DISC_DNS_NO_TTL       UINT32_MAX /* "no TTL seen" */
#define DISC_DNS_MAX_WEIGHT   10000      /* the config's endpoint weight limit (xds) */
#define DISC_DNS_MAX_PRIORITY 127        /* the config's endpoint priority limit (xds) */

/* One SRV record (RFC 2782) of an answer. */
struct disc_srv_rec {
    uint16_t priority, weight, port;
    uint32_t ttl;                   /* seconds, RFC 2181 §8 applied */
    char target[DISC_DNS_NAME_MAX]; /* without the trailing dot */
};

/* A parsed answer to an SRV query. */
struct disc_srv_reply {
    uint8_t rcode;             /* RFC 1035 §4.1.1: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN */
    struct disc_srv_rec *recs; /* records of the queried name, "." targets left out */
    size_t n;
    size_t n_unavailable; /* records with target "." (service not offered there) */
    /* The smallest TTL of the records used: the SRV records of the name and the CNAMEs that
     * led to it; DISC_DNS_NO_TTL when the answer had none. */
    uint32_t ttl;
    /* RFC 2308 §5 negative-caching TTL, min(SOA TTL, SOA MINIMUM), from the SOA of the
     * authority section; DISC_DNS_NO_TTL when there is none. */
    uint32_t neg_ttl;
};

/* Parses the DNS response <msg> of <len> bytes to an SRV query (for the name of its question
 * section, following CNAMEs of the answer section). Returns 0, or WR_EINVAL with *err set to a
 * static message when the message is malformed. <out> owns heap memory after a success: free
 * it with disc__srv_reply_dispose() (also safe after a failure). */
int disc__srv_parse(const unsigned char *msg, size_t len, struct disc_srv_reply *out,
                    const char **err);
void disc__srv_reply_dispose(struct disc_srv_reply *r);

/* The addresses one SRV record's target resolved to (ports are ignored). */
struct disc_dns_addrs {
    const struct sockaddr_storage *ss;
    size_t n;
};

/* Builds the provider's view {"clusters": [{"name": <cluster>, "endpoints": [...]}]} from <n>
 * records and, for each, the addresses of its target (addrs[i] for recs[i]). Each address
 * becomes an endpoint {"address", "weight", "priority"} with the record's port and priority;
 * the record's weight (0 counts as 1) is shared among its target's addresses, rounded, at least
 * 1 and at most DISC_DNS_MAX_WEIGHT. An address produced twice keeps its lowest priority, and
 * the weights of that priority add up. The SRV priority is published as is when every one is
 * at most DISC_DNS_MAX_PRIORITY, else the distinct priorities become levels 0, 1, 2, ... in
 * order. Endpoints are sorted by priority, then address, so equal answers give equal views.
 * Returns a new reference. */
json_t *disc__dns_view(const char *cluster, const struct disc_srv_rec *recs,
                       const struct disc_dns_addrs *addrs, size_t n);

/* The delay before the next query for <ttl_s> seconds: bounded to [1 s, 60 s] (INTERFACES.md
 * §4c); DISC_DNS_NO_TTL gives <dflt_ms>. */
uint32_t disc__dns_refresh_ms(uint32_t ttl_s, uint32_t dflt_ms);

#endif /* WEIR_DISC_DNS_H */
