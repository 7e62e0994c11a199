/* ingress/ing_proxyproto.c -- the PROXY protocol header (HAProxy's spec, v1 text and v2
 * binary) on listeners with "proxy_protocol": true. The header comes first on the connection,
 * before TLS; the client address it carries replaces the socket's peer for X-Forwarded-For,
 * the access log and source-IP hashing. A connection without a valid header is closed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "ing_priv.h"

static const char v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";

static int parse_v1(struct ing_conn *c, const char *p, size_t len)
{
    const char *eol = memchr(p, '\n', WR_MIN(len, (size_t)107));

    if (eol == NULL)
        return len >= 107 ? -1 : 0;
    if (eol == p || eol[-1] != '\r')
        return -1;
    char line[108];
    size_t n = (size_t)(eol - 1 - p);
    memcpy(line, p, n);
    line[n] = '\0';
    char *save = NULL, *tok[6];
    int k = 0;
    for (char *t = strtok_r(line, " ", &save); t != NULL && k < 6; t = strtok_r(NULL, " ", &save))
        tok[k++] = t;
    if (k < 2 || strcmp(tok[0], "PROXY") != 0)
        return -1;
    if (strcmp(tok[1], "UNKNOWN") == 0)
        return (int)(eol - p + 1);
    if (k != 6)
        return -1;
    int fam = strcmp(tok[1], "TCP4") == 0 ? AF_INET : strcmp(tok[1], "TCP6") == 0 ? AF_INET6 : 0;
    uint8_t addr[16];
    char *end;
    long port = strtol(tok[4], &end, 10);
    if (fam == 0 || inet_pton(fam, tok[2], addr) != 1 || *end != '\0' || port < 0 || port > 65535)
        return -1;
    memcpy(c->peer, addr, fam == AF_INET ? 4 : 16);
    c->peer_family = (uint8_t)fam;
    c->peer_port = (uint16_t)port;
    return (int)(eol - p + 1);
}

static int parse_v2(struct ing_conn *c, const unsigned char *p, size_t len)
{
    if (len < 16)
        return 0;
    size_t total = 16 + (((size_t)p[14] << 8) | p[15]);
    if ((p[12] & 0xf0) != 0x20 || total > 16 + 2048)
        return -1;
    if (len < total)
        return 0;
    if ((p[12] & 0x0f) == 0x0) /* LOCAL: a health check of the balancer; keep the socket peer */
        return (int)total;
    if ((p[12] & 0x0f) != 0x1)
        return -1;
    if (p[13] == 0x11 && total >= 16 + 12) {
        memcpy(c->peer, p + 16, 4);
        c->peer_family = AF_INET;
        c->peer_port = (uint16_t)((p[24] << 8) | p[25]);
    } else if (p[13] == 0x21 && total >= 16 + 36) {
        memcpy(c->peer, p + 16, 16);
        c->peer_family = AF_INET6;
        c->peer_port = (uint16_t)((p[48] << 8) | p[49]);
    }
    /* Other families (UNIX, UNSPEC) and the TLVs are accepted and ignored. */
    return (int)total;
}

/* Parses the header at the start of p[0..len). Returns the bytes it spans, 0 when more bytes
 * are needed, or -1 when it is not a valid PROXY header. */
int ing__proxyproto_parse(struct ing_conn *c, const char *p, size_t len)
{
    size_t n = WR_MIN(len, sizeof(v2_sig));

    if (memcmp(p, v2_sig, n) == 0)
        return n < sizeof(v2_sig) ? 0 : parse_v2(c, (const unsigned char *)p, len);
    n = WR_MIN(len, (size_t)6);
    if (memcmp(p, "PROXY ", n) != 0)
        return -1;
    return n < 6 ? 0 : parse_v1(c, p, len);
}
