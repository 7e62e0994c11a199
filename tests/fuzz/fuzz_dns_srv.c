/* tests/fuzz/fuzz_dns_srv.c -- libFuzzer driver for the DNS SRV answer parser of the dns_srv
 * provider (discovery/disc_dns_parse.c): arbitrary bytes as a DNS response (compression
 * pointers, truncated records, CNAME chains, SOA in the authority section), and the view built
 * from whatever records it returns. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../discovery/disc_dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct disc_srv_reply r;
    const char *err = NULL;

    memset(&r, 0, sizeof(r));
    if (disc__srv_parse(data, size, &r, &err) == 0 && r.n > 0) {
        /* every record resolved to one address, the same for all: the duplicate rules run */
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(0x7f000001);
        struct disc_dns_addrs *addrs = calloc(r.n, sizeof(*addrs));
        for (size_t i = 0; addrs != NULL && i < r.n; i++)
            addrs[i] = (struct disc_dns_addrs){.ss = &ss, .n = 1};
        if (addrs != NULL)
            json_decref(disc__dns_view("c", r.recs, addrs, r.n));
        free(addrs);
        (void)disc__dns_refresh_ms(r.ttl, 5000);
    }
    disc__srv_reply_dispose(&r);
    return 0;
}
