/* tests/unit/ingress/weirctl_consul_kv_test.c -- the Consul KV value of a rollout
 * (weirctl_consul_kv.c): base64, the GET answer, the value written back. */
#include "../../../ingress/weirctl/weirctl_consul_kv.c"
#include "test.h"

/* A GET /v1/kv/weir/rollouts/shop answer holding <b64> as the value. */
static char *answer(const char *b64, long index)
{
    return wr_xasprintf("[{\"LockIndex\":0,\"Key\":\"weir/rollouts/shop\",\"Flags\":0,"
                        "\"Value\":%s%s%s,\"CreateIndex\":5,\"ModifyIndex\":%ld}]",
                        b64 ? "\"" : "", b64 ? b64 : "null", b64 ? "\"" : "", index);
}

static const char *parse_err(const char *b64, long index)
{
    struct wctl_kv_rollout kv;
    const char *err = NULL;
    char *body = answer(b64, index);
    int rc = wctl_kv_parse(body, strlen(body), &kv, &err);

    free(body);
    if (rc == 0) {
        wctl_kv_dispose(&kv);
        return NULL;
    }
    ASSERT(err != NULL);
    ASSERT(kv.value == NULL);
    return err;
}

TEST(b64_decode)
{
    static const struct {
        const char *in, *out;
    } cases[] = {{"", ""},
                 {"Zg==", "f"},
                 {"Zm8=", "fo"},
                 {"Zm9v", "foo"},
                 {"Zm9vYg==", "foob"},
                 {"Zm9vYmE=", "fooba"},
                 {"Zm9vYmFy", "foobar"},
                 {"+/+/", "\xfb\xff\xbf"}};

    static const char *const bad[] = {"Zg=", "Zg", "Z===", "Zm9v!A==", "Zm 9v", "=Zg=", "Zg==Zg=="};
    char *out;
    size_t len;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ASSERT_EQ(wctl_b64_decode(cases[i].in, strlen(cases[i].in), &out, &len), 0);
        ASSERT_EQ(len, strlen(cases[i].out));
        ASSERT_STREQ(out, cases[i].out);
        free(out);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wctl_b64_decode(bad[i], strlen(bad[i]), &out, &len) != -1)
            FAIL("base64 \"%s\" accepted", bad[i]);
}

TEST(parse_value)
{
    /* {"blue": "svc-a", "green": "svc-b", "green_weight": 20, "sticky": true} */
    char *body = answer("eyJibHVlIjogInN2Yy1hIiwgImdyZWVuIjogInN2Yy1iIiwgImdyZWVuX3dlaWdodCI6IDIw"
                        "LCAic3RpY2t5IjogdHJ1ZX0=",
                        42);
    struct wctl_kv_rollout kv;
    const char *err = NULL;

    ASSERT_EQ(wctl_kv_parse(body, strlen(body), &kv, &err), 0);
    ASSERT_STREQ(kv.blue, "svc-a");
    ASSERT_STREQ(kv.green, "svc-b");
    ASSERT_EQ(kv.green_weight, 20);
    ASSERT_EQ(kv.modify_index, 42);
    wctl_kv_dispose(&kv);
    free(body);
}

TEST(missing_weight_is_zero)
{
    /* {"blue":"a","green":"b"} */
    char *body = answer("eyJibHVlIjoiYSIsImdyZWVuIjoiYiJ9", 7);
    struct wctl_kv_rollout kv;
    const char *err = NULL;

    ASSERT_EQ(wctl_kv_parse(body, strlen(body), &kv, &err), 0);
    ASSERT_EQ(kv.green_weight, 0);
    wctl_kv_dispose(&kv);
    free(body);
}

TEST(parse_errors)
{
    struct wctl_kv_rollout kv;
    const char *err = NULL;

    ASSERT(parse_err(NULL, 3) != NULL);               /* no value */
    ASSERT(parse_err("e30=!", 3) != NULL);            /* bad base64 */
    ASSERT(parse_err("bm90IGpzb24=", 3) != NULL);     /* "not json" */
    ASSERT(parse_err("WzEsMl0=", 3) != NULL);         /* [1,2] */
    ASSERT(parse_err("eyJibHVlIjoiYSJ9", 3) != NULL); /* {"blue":"a"}: no green */
    /* {"blue":"a","green":"b","green_weight":101} and ...:"20" */
    ASSERT(parse_err("eyJibHVlIjoiYSIsImdyZWVuIjoiYiIsImdyZWVuX3dlaWdodCI6MTAxfQ==", 3) != NULL);
    ASSERT(parse_err("eyJibHVlIjoiYSIsImdyZWVuIjoiYiIsImdyZWVuX3dlaWdodCI6IjIwIn0=", 3) != NULL);
    /* {"blue":"a","green":"b","blue":"c"}: a duplicate key is ambiguous */
    ASSERT(parse_err("eyJibHVlIjoiYSIsImdyZWVuIjoiYiIsImJsdWUiOiJjIn0=", 3) != NULL);
    ASSERT(parse_err("eyJibHVlIjoiYSIsImdyZWVuIjoiYiJ9", 0) != NULL); /* no usable index */
    ASSERT_EQ(wctl_kv_parse("[]", 2, &kv, &err), -1);
    ASSERT_EQ(wctl_kv_parse("{}", 2, &kv, &err), -1);
    ASSERT_EQ(wctl_kv_parse("nonsense", 8, &kv, &err), -1);
}

TEST(encode_keeps_other_members)
{
    /* {"blue":"a","green":"b","green_weight":20,"sticky":true,"x":[1]} */
    char *body = answer("eyJibHVlIjoiYSIsImdyZWVuIjoiYiIsImdyZWVuX3dlaWdodCI6MjAsInN0aWNreSI6dHJ1ZS"
                        "wieCI6WzFdfQ==",
                        9);
    struct wctl_kv_rollout kv;
    const char *err = NULL;
    char *out;

    ASSERT_EQ(wctl_kv_parse(body, strlen(body), &kv, &err), 0);
    out = wctl_kv_encode(&kv, 55);
    ASSERT_STREQ(out,
                 "{\"blue\":\"a\",\"green\":\"b\",\"green_weight\":55,\"sticky\":true,\"x\":[1]}");
    free(out);
    ASSERT_EQ(kv.green_weight, 20); /* <kv> itself is unchanged */
    out = wctl_kv_encode(&kv, 0);
    ASSERT(strstr(out, "\"green_weight\":0") != NULL);
    free(out);
    wctl_kv_dispose(&kv);
    free(body);
}
