/* include/weir/h1.h -- strict, zero-copy HTTP/1.1 message parser (RFC 9110/9112).
 *
 * Implemented in ingress/ing_h1.c. The parser never copies: every string it returns points into
 * the caller's buffer and is valid while that buffer is. It never allocates.
 *
 * Incremental use: keep a <scan> offset (start at 0) per message; each call first looks for the
 * end of the head from where the previous call stopped, so a head that arrives one byte at a
 * time costs O(n) in total, and only a complete head is parsed in full.
 */
#ifndef WEIR_H1_H
#define WEIR_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <weir/wr.h>

/* Known methods; ING_H1_M_OTHER for any other valid token. */
enum ing_h1_method {
    ING_H1_M_OTHER = 0,
    ING_H1_M_GET,
    ING_H1_M_HEAD,
    ING_H1_M_POST,
    ING_H1_M_PUT,
    ING_H1_M_DELETE,
    ING_H1_M_CONNECT,
    ING_H1_M_OPTIONS,
    ING_H1_M_TRACE,
    ING_H1_M_PATCH,
};

/* How the message body is delimited (RFC 9112 §6.3). */
enum ing_h1_body {
    ING_H1_BODY_NONE = 0, /* no body at all */
    ING_H1_BODY_LENGTH,   /* exactly content_length bytes (may be 0) */
    ING_H1_BODY_CHUNKED,  /* chunked transfer coding: use ing_h1_chunked_scan() */
    ING_H1_BODY_EOF,      /* responses only: until the connection closes */
};

/* Header ids the proxy acts on; everything else is ING_H1_H_OTHER. */
enum ing_h1_hid {
    ING_H1_H_OTHER = 0,
    ING_H1_H_HOST,
    ING_H1_H_CONTENT_LENGTH,
    ING_H1_H_TRANSFER_ENCODING,
    ING_H1_H_CONNECTION,
    ING_H1_H_KEEP_ALIVE,
    ING_H1_H_TE,
    ING_H1_H_TRAILER,
    ING_H1_H_UPGRADE,
    ING_H1_H_PROXY_X, /* any "Proxy-*" header: Proxy-Connection, Proxy-Authorization, ... */
    ING_H1_H_EXPECT,
    ING_H1_H_X_FORWARDED_FOR,
    ING_H1_H_X_FORWARDED_PROTO,
    ING_H1_H_X_FORWARDED_HOST,
    ING_H1_H_X_REQUEST_ID,
    ING_H1_H_COOKIE,
    ING_H1_H_DATE,
    ING_H1_H_SERVER,
};

/* Header flags. */
#define ING_H1_HF_HOP 0x01 /* hop-by-hop: must not be forwarded (RFC 9110 §7.6.1) */

struct ing_h1_hdr {
    const char *name;  /* as received, not lower-cased */
    const char *value; /* leading and trailing OWS removed */
    uint32_t value_len;
    uint16_t name_len;
    uint8_t id;    /* enum ing_h1_hid */
    uint8_t flags; /* ING_H1_HF_* */
};

/* Message flags. */
#define ING_H1_F_KEEP_ALIVE      0x0001 /* connection may be reused after this message */
#define ING_H1_F_EXPECT_CONTINUE 0x0002 /* request: "Expect: 100-continue" */
#define ING_H1_F_UPGRADE         0x0004 /* "Connection: upgrade" + an Upgrade header */
#define ING_H1_F_ABSOLUTE_FORM   0x0008 /* request target was absolute-form */
#define ING_H1_F_CONN_CLOSE      0x0010 /* "Connection: close" was sent */
#define ING_H1_F_TE_TRAILERS     0x0020 /* request: "TE: trailers" */
#define ING_H1_F_CONTENT_LENGTH  0x0040 /* a valid Content-Length was sent (content_length) */

struct ing_h1_msg {
    /* request line */
    struct wr_str method;
    struct wr_str target;    /* as sent */
    struct wr_str path;      /* path without the query; "/" for "*"-less absolute-form */
    struct wr_str query;     /* without the '?'; p == NULL when there is none */
    struct wr_str authority; /* absolute-form only: "host[:port]" of the target */
    /* Also: path is "*" for asterisk-form (OPTIONS) and NULL for CONNECT, whose authority-form
     * target is then in authority too. The "/" above is a static string, the only result
     * that does not point into the caller's buffer. */
    /* status line */
    struct wr_str reason;
    uint16_t status;
    uint8_t method_id;  /* enum ing_h1_method */
    uint8_t minor;      /* HTTP/1.<minor>: 0 or 1 */
    uint8_t body;       /* enum ing_h1_body */
    uint16_t flags;     /* ING_H1_F_* */
    struct wr_str host; /* request: the Host header value (p == NULL when absent) */
    uint64_t content_length;
    uint32_t head_len; /* bytes of the head, final CRLF CRLF included */
    /* headers, in the caller's array */
    struct ing_h1_hdr *hdrs;
    uint16_t n_hdrs;
    uint16_t max_hdrs; /* capacity of hdrs: set by the caller before parsing */
};

struct ing_h1_limits {
    uint32_t max_head;   /* whole head, request/status line included (default 65536) */
    uint32_t max_target; /* request target (default 8192) */
};

/* Parse results: > 0 is the head length (complete head); ING_H1_INCOMPLETE needs more bytes;
 * a negative value is minus the HTTP status to answer:
 *   -400 malformed, -414 target too long, -431 head too large or too many headers,
 *   -501 unsupported transfer coding or method, -505 unsupported version;
 * for responses every failure is -502. */
#define ING_H1_INCOMPLETE 0

/* Parses a request head from buf[0..len). <scan> holds the offset already searched for the
 * end of the head (an opaque resume point: it may lag by one byte); set it to 0 for a new
 * message. On success fills <m> (hdrs must point at max_hdrs entries). Enforces (400 unless
 * said): CL with TE; differing or non-digit CLs; TE other than a final "chunked" (501);
 * whitespace before a colon; obs-fold; bare CR or LF, NUL and other invalid bytes; invalid
 * method token; version other than HTTP/1.0 or 1.1 (505); missing or repeated Host in
 * HTTP/1.1; a space inside the target; limits above. <lim> may be NULL, and zero fields mean
 * the defaults. */
int ing_h1_parse_request(struct ing_h1_msg *m, const char *buf, size_t len, size_t *scan,
                         const struct ing_h1_limits *lim);

/* Parses a response head. <req_method> is the method id of the request it answers (HEAD and
 * CONNECT change framing); 1xx, 204 and 304 have no body; without CL or TE the body runs until
 * EOF. Every failure is -502. */
int ing_h1_parse_response(struct ing_h1_msg *m, const char *buf, size_t len, size_t *scan,
                          const struct ing_h1_limits *lim, int req_method);

/* Incremental chunked-body scanner. It validates the framing so the bytes can be forwarded
 * verbatim: chunk sizes in hex (no sign, no overflow past 2^63), chunk extensions (token
 * [= token / quoted-string]), CRLF after each chunk, then the trailer section (header fields as
 * strict as in the head) and the final CRLF. Zero-initialise before the first call. */
struct ing_h1_chunked {
    uint64_t remaining;  /* data bytes left in the current chunk */
    uint64_t data_bytes; /* total decoded data bytes so far (for max_body_bytes) */
    uint32_t line_len;   /* bytes seen on the current size/extension/trailer line */
    uint32_t trailer_len;
    uint8_t state;
    uint8_t done;
};

/* Scans buf[0..len) of chunked body. Returns the number of bytes consumed (all of them
 * unless the body ends inside the buffer: then the bytes up to and including the final CRLF,
 * and c->done is set), or -400 on malformed framing. Optional <data_cb> receives each run of
 * decoded data bytes (for protocol translation); it may be NULL. */
typedef void (*ing_h1_data_cb)(void *arg, const char *data, size_t len);
long ing_h1_chunked_scan(struct ing_h1_chunked *c, const char *buf, size_t len,
                         ing_h1_data_cb data_cb, void *arg);

/* Case-insensitive header name comparison with a lower-case literal. */
bool ing_h1_name_is(const struct ing_h1_hdr *h, const char *lower, size_t len);

/* Returns true when <s> is a valid RFC 9110 token. */
bool ing_h1_is_token(const char *s, size_t len);

#endif /* WEIR_H1_H */
