/* tests/unit/health/hc_grpc_test.c -- grpc.health.v1 messages and verdicts (health/hc_grpc.c).
 * The byte strings are what protoc-generated code produces for these messages. */
#include <string.h>

#include "../../../health/hc_priv.h"
#include "test.h"

TEST(encode_request)
{
    uint8_t out[64];
    size_t n = hc__grpc_encode_request("", out, sizeof(out));

    /* service "" is the default: an empty message, just the 5-byte prefix. */
    ASSERT_EQ(n, 5);
    ASSERT(memcmp(out, "\0\0\0\0\0", 5) == 0);
    n = hc__grpc_encode_request("grpc.test.Svc", out, sizeof(out));
    ASSERT_EQ(n, 5 + 2 + 13);
    ASSERT(memcmp(out, "\0\0\0\0\x0f\x0a\x0dgrpc.test.Svc", n) == 0);
    ASSERT_EQ(hc__grpc_encode_request(NULL, out, sizeof(out)), 5);
    ASSERT_EQ(hc__grpc_encode_request("grpc.test.Svc", out, 10), 0); /* does not fit */
}

TEST(encode_request_long_service)
{
    char svc[200];
    uint8_t out[256];

    memset(svc, 's', sizeof(svc) - 1);
    svc[sizeof(svc) - 1] = '\0';
    size_t n = hc__grpc_encode_request(svc, out, sizeof(out));
    ASSERT_EQ(n, 5 + 1 + 2 + 199); /* a two-byte varint length */
    ASSERT_EQ(out[4], 202);
    ASSERT_EQ(out[5], 0x0a);
    ASSERT_EQ(out[6], 0xc7); /* 199 = 0x47 | 0x80, then 1 */
    ASSERT_EQ(out[7], 0x01);
}

static int decode(const char *bytes, size_t n, int *status)
{
    const char *why = NULL;
    int rc = hc__grpc_decode_response((const uint8_t *)bytes, n, status, &why);

    ASSERT(rc == 0 || why != NULL);
    return rc;
}

TEST(decode_response)
{
    int st = -1;

    ASSERT_EQ(decode("\0\0\0\0\x02\x08\x01", 7, &st), 0);
    ASSERT_EQ(st, 1);
    ASSERT_EQ(decode("\0\0\0\0\x02\x08\x02", 7, &st), 0);
    ASSERT_EQ(st, 2);
    /* SERVING is not the default: an empty message means UNKNOWN (0). */
    ASSERT_EQ(decode("\0\0\0\0\0", 5, &st), 0);
    ASSERT_EQ(st, 0);
    /* Unknown fields of every wire type are skipped. */
    ASSERT_EQ(decode("\0\0\0\0\x18"
                     "\x10\x96\x01" /* field 2 varint 150 */
                     "\x1a\x03"
                     "abc" /* field 3 bytes */
                     "\x21"
                     "12345678" /* field 4 fixed64 */
                     "\x2d"
                     "1234"      /* field 5 fixed32 */
                     "\x08\x01", /* status SERVING */
                     29, &st),
              0);
    ASSERT_EQ(st, 1);
}

TEST(decode_rejects)
{
    int st = 0;

    ASSERT_EQ(decode("\0\0\0", 3, &st), -1);               /* no prefix */
    ASSERT_EQ(decode("\1\0\0\0\x02\x08\x01", 7, &st), -1); /* compressed */
    ASSERT_EQ(decode("\0\0\0\0\x05\x08\x01", 7, &st), -1); /* truncated */
    ASSERT_EQ(decode("\0\0\0\0\x02\x08\x81", 7, &st), -1); /* varint runs off */
    ASSERT_EQ(decode("\0\0\0\0\x02\x1a\x05", 7, &st), -1); /* bytes run off */
    ASSERT_EQ(decode("\0\0\0\0\x02\x0b\x01", 7, &st), -1); /* wire type 3 (group) */
    ASSERT_EQ(decode("\0\0\0\0\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 16, &st), -1);
}

TEST(verdicts)
{
    const uint8_t serving[] = {0, 0, 0, 0, 2, 0x08, 1};
    const uint8_t not_serving[] = {0, 0, 0, 0, 2, 0x08, 2};
    const uint8_t unknown_svc[] = {0, 0, 0, 0, 2, 0x08, 3};
    char why[160];

    ASSERT_EQ(hc__grpc_verdict(200, true, 0, serving, sizeof(serving), why, sizeof(why)), HC_PASS);
    ASSERT_EQ(hc__grpc_verdict(200, true, 0, not_serving, sizeof(not_serving), why, sizeof(why)),
              HC_FAIL);
    ASSERT_STREQ(why, "gRPC: status NOT_SERVING");
    ASSERT_EQ(hc__grpc_verdict(200, true, 0, unknown_svc, sizeof(unknown_svc), why, sizeof(why)),
              HC_FAIL);
    ASSERT_STREQ(why, "gRPC: status SERVICE_UNKNOWN");
    /* The service is unknown to the server: NOT_FOUND, in a trailers-only response. */
    ASSERT_EQ(hc__grpc_verdict(200, true, 5, NULL, 0, why, sizeof(why)), HC_FAIL);
    ASSERT_STREQ(why, "gRPC: grpc-status 5");
    ASSERT_EQ(hc__grpc_verdict(200, true, -1, serving, sizeof(serving), why, sizeof(why)), HC_FAIL);
    ASSERT_STREQ(why, "gRPC: no grpc-status");
    ASSERT_EQ(hc__grpc_verdict(503, true, 0, serving, sizeof(serving), why, sizeof(why)), HC_FAIL);
    ASSERT_EQ(hc__grpc_verdict(200, false, 0, serving, sizeof(serving), why, sizeof(why)), HC_FAIL);
    ASSERT_EQ(hc__grpc_verdict(200, true, 0, NULL, 0, why, sizeof(why)), HC_FAIL);
    ASSERT_STREQ(why, "gRPC: no response message");
}
