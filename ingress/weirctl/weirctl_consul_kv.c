/* ingress/weirctl/weirctl_consul_kv.c -- the rollout's Consul KV value (INTERFACES.md §4b).
 *
 * GET /v1/kv/weir/rollouts/NAME answers [{"Key", "Value": <base64>, "ModifyIndex", ...}]; the
 * value is {"blue": "svc-a", "green": "svc-b", "green_weight": 20}. A change keeps every member
 * of that object as it is (blue, green and anything a newer weir may add) and replaces only
 * green_weight. Pure functions: no I/O, errors as static messages, so that they can be tested
 * alone (tests/unit/ingress/weirctl_consul_kv_test.c).
 */
#include "weirctl_consul_kv.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard base64 (RFC 4648 §4) with padding, as Consul sends it; white space is not allowed.
 * Returns 0 with a malloc'd, NUL-terminated <*out> of <*out_len> bytes, or -1. */
int wctl_b64_decode(const char *in, size_t len, char **out, size_t *out_len)
{
    size_t pad = 0, n = 0;
    uint32_t acc = 0;
    char *o;

    if (len % 4 != 0)
        return -1;
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    o = wr_xmalloc(len / 4 * 3 + 1);
    for (size_t i = 0; i < len - pad; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) {
            free(o);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            o[n++] = (char)(acc >> 16);
            o[n++] = (char)(acc >> 8);
            o[n++] = (char)acc;
            acc = 0;
        }
    }
    if (pad == 2) {
        o[n++] = (char)(acc >> 4);
    } else if (pad == 1) {
        o[n++] = (char)(acc >> 10);
        o[n++] = (char)(acc >> 2);
    }
    o[n] = '\0';
    *out = o;
    *out_len = n;
    return 0;
}

static int fail(const char **err, const char *msg)
{
    *err = msg;
    return -1;
}

/* Checks the decoded value <v> and fills blue, green and green_weight of <kv> from it. */
static int check_value(json_t *v, struct wctl_kv_rollout *kv, const char **err)
{
    json_t *w = json_object_get(v, "green_weight");

    if (!json_is_object(v))
        return fail(err, "the value is not a JSON object");
    kv->blue = json_string_value(json_object_get(v, "blue"));
    kv->green = json_string_value(json_object_get(v, "green"));
    if (kv->blue == NULL || kv->green == NULL)
        return fail(err, "the value needs \"blue\" and \"green\" service names");
    if (w != NULL &&
        (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 100))
        return fail(err, "\"green_weight\" must be an integer from 0 to 100");
    kv->green_weight = w != NULL ? (int)json_integer_value(w) : 0;
    return 0;
}

/* Decodes the base64 string <val> into the rollout object of <kv>. */
static int decode_value(json_t *val, struct wctl_kv_rollout *kv, const char **err)
{
    const char *b64 = json_string_value(val);
    char *text;
    size_t len;

    if (b64 == NULL)
        return fail(err, "the key has no value");
    if (wctl_b64_decode(b64, json_string_length(val), &text, &len) != 0)
        return fail(err, "the value is not valid base64");
    kv->value = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    free(text);
    if (kv->value == NULL)
        return fail(err, "the value is not valid JSON");
    return check_value(kv->value, kv, err);
}

int wctl_kv_parse(const char *body, size_t len, struct wctl_kv_rollout *kv, const char **err)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *entry = json_array_get(root, 0);
    json_t *idx = json_object_get(entry, "ModifyIndex");
    int rc = -1;

    memset(kv, 0, sizeof(*kv));
    if (!json_is_object(entry)) {
        *err = "the answer is not a KV entry list";
    } else if (!json_is_integer(idx) || json_integer_value(idx) <= 0) {
        /* ?cas=0 would mean "create only", so an index of 0 cannot guard a change either. */
        *err = "the KV entry has no ModifyIndex";
    } else {
        kv->modify_index = (uint64_t)json_integer_value(idx);
        rc = decode_value(json_object_get(entry, "Value"), kv, err);
    }
    json_decref(root);
    if (rc != 0)
        wctl_kv_dispose(kv);
    return rc;
}

char *wctl_kv_encode(const struct wctl_kv_rollout *kv, int green_weight)
{
    json_t *v = json_deep_copy(kv->value);
    char *out;

    json_object_set_new(v, "green_weight", json_integer(green_weight));
    out = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (out == NULL) {
        fprintf(stderr, "weirctl: out of memory\n");
        abort();
    }
    return out;
}

void wctl_kv_dispose(struct wctl_kv_rollout *kv)
{
    json_decref(kv->value);
    memset(kv, 0, sizeof(*kv));
}
