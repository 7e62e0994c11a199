/* health/hc_grpc.c -- the gRPC check: grpc.health.v1.Health/Check over HTTP/2 (h2c, or h2 over
 * TLS), with an nghttp2 client session driven through memory buffers.
 *
 * The check passes when the call ends with grpc-status 0 and a HealthCheckResponse whose status
 * is SERVING (1): https://github.com/grpc/grpc/blob/master/doc/health-checking.md. The two
 * protobuf messages are tiny and fixed, so they are encoded and decoded here by hand (proto3
 * wire format: https://protobuf.dev/programming-guides/encoding/):
 *   HealthCheckRequest  { string service = 1; }
 *   HealthCheckResponse { ServingStatus status = 1; }  UNKNOWN 0, SERVING 1, NOT_SERVING 2,
 *                                                      SERVICE_UNKNOWN 3
 * Each message travels length-prefixed: one compressed-flag byte, a 4-byte big-endian length
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc_priv.h"

#define GRPC_PATH "/grpc.health.v1.Health/Check"

/* ---- the messages ----------------------------------------------------------------------- */

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return n;
}

size_t hc__grpc_encode_request(const char *service, uint8_t *out, size_t cap)
{
    size_t slen = service != NULL ? strlen(service) : 0;
    uint8_t msg[16];
    size_t mlen = 0;

    /* proto3 leaves a field at its default value ("") out of the message. */
    if (slen > 0) {
        msg[mlen++] = 0x0a; /* field 1, wire type 2 (length-delimited) */
        mlen += put_varint(msg + mlen, slen);
    }
    if (5 + mlen + slen > cap || mlen + slen > UINT32_MAX)
        return 0;
    size_t total = mlen + slen;
    out[0] = 0; /* not compressed */
    out[1] = (uint8_t)(total >> 24);
    out[2] = (uint8_t)(total >> 16);
    out[3] = (uint8_t)(total >> 8);
    out[4] = (uint8_t)total;
    memcpy(out + 5, msg, mlen);
    if (slen > 0)
        memcpy(out + 5 + mlen, service, slen);
    return 5 + total;
}

/* Reads a varint at p[*i..n); false when truncated or longer than 10 bytes. */
static bool get_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 70 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return true;
        }
    }
    return false;
}

int hc__grpc_decode_response(const uint8_t *p, size_t n, int *status, const char **why)
{
    size_t i = 5;

    if (n < 5) {
        *why = "no response message";
        return -1;
    }
    if (p[0] != 0) {
        *why = "compressed response message";
        return -1;
    }
    size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    if (len > n - 5) {
        *why = "truncated response message";
        return -1;
    }
    n = 5 + len;
    *status = 0;
    while (i < n) {
        uint64_t key, v;
        if (!get_varint(p, n, &i, &key))
            goto bad;
        switch (key & 7) {
        case 0: /* varint */
            if (!get_varint(p, n, &i, &v))
                goto bad;
            if (key >> 3 == 1)
                *status = v > 1000 ? 1000 : (int)v;
            break;
        case 1: /* fixed64 */
            if (n - i < 8)
                goto bad;
            i += 8;
            break;
        case 2: /* length-delimited */
            if (!get_varint(p, n, &i, &v) || v > n - i)
                goto bad;
            i += (size_t)v;
            break;
        case 5: /* fixed32 */
            if (n - i < 4)
                goto bad;
            i += 4;
            break;
        default:
            goto bad;
        }
    }
    return 0;
bad:
    *why = "malformed HealthCheckResponse";
    return -1;
}

static const char *const serving_names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};

int hc__grpc_verdict(unsigned http_status, bool grpc_ct, int grpc_status, const uint8_t *msg,
                     size_t len, char *why, size_t whylen)
{
    const char *err = NULL;
    int st = 0;

    if (http_status != 200) {
        snprintf(why, whylen, "gRPC: HTTP status %u", http_status);
        return HC_FAIL;
    }
    if (!grpc_ct) {
        snprintf(why, whylen, "gRPC: content-type is not application/grpc");
        return HC_FAIL;
    }
    if (grpc_status != 0) {
        if (grpc_status < 0)
            snprintf(why, whylen, "gRPC: no grpc-status");
        else
            snprintf(why, whylen, "gRPC: grpc-status %d", grpc_status);
        return HC_FAIL;
    }
    if (hc__grpc_decode_response(msg, len, &st, &err) < 0) {
        snprintf(why, whylen, "gRPC: %s", err);
        return HC_FAIL;
    }
    if (st != HC_GRPC_SERVING) {
        if (st >= 0 && st < (int)WR_ARRAY_LEN(serving_names))
            snprintf(why, whylen, "gRPC: status %s", serving_names[st]);
        else
            snprintf(why, whylen, "gRPC: status %d", st);
        return HC_FAIL;
    }
    why[0] = '\0';
    return HC_PASS;
}

/* ---- the nghttp2 session ---------------------------------------------------------------- */

static struct hc_grpc *G(void *user_data)
{
    return &((struct hc_probe *)user_data)->u.grpc;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct hc_grpc *g = G(user_data);
    struct wr_str n = {(const char *)name, namelen};

    if (frame->hd.stream_id != g->stream_id)
        return 0;
    if (wr_str_eq(n, ":status", 7)) {
        unsigned v = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            v = (value[i] >= '0' && value[i] <= '9') ? v * 10 + (unsigned)(value[i] - '0') : 1000;
        g->http_status = valuelen == 3 && v < 1000 ? v : 0;
    } else if (wr_str_eq(n, "content-type", 12)) {
        g->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (wr_str_eq(n, "grpc-status", 11)) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++)
            v = (value[i] >= '0' && value[i] <= '9') ? v * 10 + (value[i] - '0') : 9999;
        g->grpc_status = valuelen == 0 ? 9999 : v;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    struct hc_grpc *g = G(user_data);

    if (stream_id != g->stream_id)
        return 0;
    if (g->msg_len + len > HC_GRPC_MAX_MSG) {
        g->msg_overflow = true;
        return 0;
    }
    if (g->msg == NULL)
        g->msg = wr_xmalloc(HC_GRPC_MAX_MSG);
    memcpy(g->msg + g->msg_len, data, len);
    g->msg_len += len;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct hc_grpc *g = G(user_data);

    if (stream_id == g->stream_id) {
        g->closed = true;
        g->rst = error_code;
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct hc_grpc *g = G(user_data);
    size_t k = WR_MIN(length, g->req_len - g->req_off);

    memcpy(buf, g->req + g->req_off, k);
    g->req_off += k;
    if (g->req_off == g->req_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)k;
}

nghttp2_session_callbacks *hc__grpc_callbacks(void)
{
    nghttp2_session_callbacks *cbs;

    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

/* Hands everything nghttp2 wants to send to the transport. */
static int flush(struct hc_probe *p)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->u.grpc.session, &data);
        if (n < 0) {
            snprintf(p->why, sizeof(p->why), "HTTP/2: %s", nghttp2_strerror((int)n));
            return HC_FAIL;
        }
        if (n == 0)
            return HC_MORE;
        if (hc__probe_send(p, data, (size_t)n) < 0)
            return HC_FAIL;
    }
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                  \
            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE                           \
    }

static int grpc_start(struct hc_probe *p)
{
    struct hc_grpc *g = &p->u.grpc;
    const char *authority = hc__probe_server_name(p);
    const nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_data_provider prd = {.read_callback = read_body};

    g->grpc_status = -1;
    g->req_len = hc__grpc_encode_request(p->hc->service, g->req, sizeof(g->req));
    if (g->req_len == 0) {
        snprintf(p->why, sizeof(p->why), "gRPC: service name too long");
        return HC_FAIL;
    }
    if (authority == NULL)
        authority = p->ep->address;
    const nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", p->ssl != NULL ? "https" : "http"),
        NV(":authority", authority),
        NV(":path", GRPC_PATH),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", HC_USER_AGENT),
    };
    if (nghttp2_session_client_new(&g->session, p->m->h2cbs, p) != 0)
        abort(); /* only fails on OOM */
    nghttp2_submit_settings(g->session, NGHTTP2_FLAG_NONE, iv, WR_ARRAY_LEN(iv));
    g->stream_id = nghttp2_submit_request(g->session, NULL, hdrs, WR_ARRAY_LEN(hdrs), &prd, NULL);
    if (g->stream_id < 0) {
        snprintf(p->why, sizeof(p->why), "HTTP/2: %s", nghttp2_strerror(g->stream_id));
        return HC_FAIL;
    }
    return flush(p);
}

static int grpc_data(struct hc_probe *p, const char *d, size_t n)
{
    struct hc_grpc *g = &p->u.grpc;
    ssize_t rc = nghttp2_session_mem_recv(g->session, (const uint8_t *)d, n);

    if (rc < 0) {
        snprintf(p->why, sizeof(p->why), "HTTP/2: %s", nghttp2_strerror((int)rc));
        return HC_FAIL;
    }
    if (g->closed) {
        if (g->rst != 0) {
            snprintf(p->why, sizeof(p->why), "HTTP/2: stream reset (%s)",
                     nghttp2_http2_strerror(g->rst));
            return HC_FAIL;
        }
        if (g->msg_overflow) {
            snprintf(p->why, sizeof(p->why), "gRPC: response message too large");
            return HC_FAIL;
        }
        return hc__grpc_verdict(g->http_status, g->grpc_ct, g->grpc_status, g->msg, g->msg_len,
                                p->why, sizeof(p->why));
    }
    if (!nghttp2_session_want_read(g->session) && !nghttp2_session_want_write(g->session)) {
        snprintf(p->why, sizeof(p->why), "HTTP/2: connection ended by the server (GOAWAY)");
        return HC_FAIL;
    }
    return flush(p);
}

static int grpc_eof(struct hc_probe *p)
{
    snprintf(p->why, sizeof(p->why), "gRPC: connection closed before the end of the call");
    return HC_FAIL;
}

static void grpc_dispose(struct hc_probe *p)
{
    nghttp2_session_del(p->u.grpc.session);
    p->u.grpc.session = NULL;
    wr_free(&p->u.grpc.msg);
}

const struct hc_proto hc__proto_grpc = {grpc_start, grpc_data, grpc_eof, grpc_dispose, NULL};
