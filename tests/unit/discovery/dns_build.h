/* tests/unit/discovery/dns_build.h -- writes DNS messages (RFC 1035 §4.1) for the DNS tests:
 * crafted answers for the parser, and the answers of the fake server of disc_dns_test.c.
 * Sections must be written in order (question, answer, authority); tb_finish() fills in the
 * header's counts.
 */
#ifndef WEIR_TEST_DNS_BUILD_H
#define WEIR_TEST_DNS_BUILD_H

#include <arpa/inet.h>

#include <stdint.h>
#include <string.h>

enum { TB_QD = 0, TB_AN, TB_NS, TB_AR };

enum { TB_T_A = 1, TB_T_CNAME = 5, TB_T_SOA = 6, TB_T_AAAA = 28, TB_T_SRV = 33 };

struct tb {
    unsigned char buf[4096];
    size_t len;
    uint16_t count[4];
    int section;
};

static inline void tb_u8(struct tb *b, unsigned v)
{
    b->buf[b->len++] = (unsigned char)v;
}

static inline void tb_u16(struct tb *b, unsigned v)
{
    tb_u8(b, (v >> 8) & 0xff);
    tb_u8(b, v & 0xff);
}

static inline void tb_u32(struct tb *b, uint32_t v)
{
    tb_u16(b, v >> 16);
    tb_u16(b, v & 0xffff);
}

/* An uncompressed name; "" or "." is the root. */
static inline void tb_name(struct tb *b, const char *name)
{
    while (*name != '\0' && strcmp(name, ".") != 0) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        tb_u8(b, (unsigned)n);
        memcpy(b->buf + b->len, name, n);
        b->len += n;
        name += n + (dot != NULL);
    }
    tb_u8(b, 0);
}

/* A compression pointer to offset <off> (RFC 1035 §4.1.4). */
static inline void tb_ptr(struct tb *b, unsigned off)
{
    tb_u16(b, 0xc000 | off);
}

/* Starts a message: <flags_hi> is the third header byte (0x84: QR|AA, 0x85: QR|AA|RD). */
static inline void tb_header(struct tb *b, unsigned id, unsigned flags_hi, unsigned rcode)
{
    memset(b, 0, sizeof(*b));
    tb_u16(b, id);
    tb_u8(b, flags_hi);
    tb_u8(b, 0x80 | (rcode & 0x0f)); /* RA */
    b->len = 12;
}

static inline void tb_question(struct tb *b, const char *name, unsigned type)
{
    b->section = TB_QD;
    b->count[TB_QD]++;
    tb_name(b, name);
    tb_u16(b, type);
    tb_u16(b, 1);
}

/* Starts a record in <section> (owner written by the caller unless <owner> is not NULL);
 * returns the offset of its RDLENGTH for tb_rr_end(). */
static inline size_t tb_rr(struct tb *b, int section, const char *owner, unsigned type,
                           uint32_t ttl)
{
    b->section = section;
    b->count[section]++;
    if (owner != NULL)
        tb_name(b, owner);
    tb_u16(b, type);
    tb_u16(b, 1);
    tb_u32(b, ttl);
    tb_u16(b, 0);
    return b->len - 2;
}

static inline void tb_rr_end(struct tb *b, size_t mark)
{
    size_t n = b->len - mark - 2;
    b->buf[mark] = (unsigned char)(n >> 8);
    b->buf[mark + 1] = (unsigned char)n;
}

static inline void tb_srv(struct tb *b, const char *owner, uint32_t ttl, unsigned prio,
                          unsigned weight, unsigned port, const char *target)
{
    size_t m = tb_rr(b, TB_AN, owner, TB_T_SRV, ttl);
    tb_u16(b, prio);
    tb_u16(b, weight);
    tb_u16(b, port);
    tb_name(b, target);
    tb_rr_end(b, m);
}

static inline void tb_cname(struct tb *b, const char *owner, uint32_t ttl, const char *target)
{
    size_t m = tb_rr(b, TB_AN, owner, TB_T_CNAME, ttl);
    tb_name(b, target);
    tb_rr_end(b, m);
}

/* An A or AAAA record (by the form of <ip>). */
static inline void tb_addr(struct tb *b, const char *owner, uint32_t ttl, const char *ip)
{
    unsigned char raw[16];
    int v6 = strchr(ip, ':') != NULL;
    size_t m = tb_rr(b, TB_AN, owner, v6 ? TB_T_AAAA : TB_T_A, ttl);
    inet_pton(v6 ? AF_INET6 : AF_INET, ip, raw);
    memcpy(b->buf + b->len, raw, v6 ? 16 : 4);
    b->len += v6 ? 16 : 4;
    tb_rr_end(b, m);
}

static inline void tb_soa(struct tb *b, const char *owner, uint32_t ttl, uint32_t minimum)
{
    size_t m = tb_rr(b, TB_NS, owner, TB_T_SOA, ttl);
    tb_name(b, "ns.test");
    tb_name(b, "admin.test");
    tb_u32(b, 1);    /* serial */
    tb_u32(b, 60);   /* refresh */
    tb_u32(b, 60);   /* retry */
    tb_u32(b, 3600); /* expire */
    tb_u32(b, minimum);
    tb_rr_end(b, m);
}

static inline void tb_finish(struct tb *b)
{
    for (int i = 0; i < 4; i++) {
        b->buf[4 + 2 * i] = (unsigned char)(b->count[i] >> 8);
        b->buf[5 + 2 * i] = (unsigned char)b->count[i];
    }
}

#endif /* WEIR_TEST_DNS_BUILD_H */
