/* xds/xds_config_util.c -- the toolkit of the config loader: error lines with JSON paths,
 * typed getters that report what is wrong with a value, and small syntax checks.
 *
 * Every getter reports its own error (one line "NAME: json.path: message") and returns false,
 * leaving the default in place, so that the callers in xds_config*.c simply go on checking.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "xds_priv.h"

/* ---- error reporting and the JSON path ---------------------------------------------------- */

void xds__cfg_err(struct xds__cfg *c, const char *key, const char *fmt, ...)
{
    struct wr_sbuf *e = c->errors;
    char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    wr_sbuf_printf(e, "%s: ", c->name);
    if (c->path.len > 0)
        wr_sbuf_add(e, c->path.p, c->path.len);
    if (key != NULL)
        wr_sbuf_printf(e, "%s%s", c->path.len > 0 ? "." : "", key);
    if (c->path.len > 0 || key != NULL)
        wr_sbuf_addstr(e, ": ");
    wr_sbuf_printf(e, "%s\n", msg != NULL ? msg : fmt);
    free(msg);
    c->n_errors++;
}

size_t xds__cfg_enter(struct xds__cfg *c, const char *key)
{
    size_t mark = c->path.len;

    if (mark > 0)
        wr_sbuf_add(&c->path, ".", 1);
    wr_sbuf_addstr(&c->path, key);
    return mark;
}

size_t xds__cfg_enter_idx(struct xds__cfg *c, size_t i)
{
    size_t mark = c->path.len;

    wr_sbuf_printf(&c->path, "[%zu]", i);
    return mark;
}

void xds__cfg_leave(struct xds__cfg *c, size_t mark)
{
    c->path.len = mark;
    if (c->path.p != NULL)
        c->path.p[mark] = '\0';
}

void xds__cfg_keys(struct xds__cfg *c, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        size_t i = 0;
        while (allowed[i] != NULL && strcmp(allowed[i], key) != 0)
            i++;
        if (allowed[i] == NULL)
            xds__cfg_err(c, key, "unknown key");
    }
}

/* ---- typed getters ------------------------------------------------------------------------ */

/* Returns member <key>, or NULL when absent (or null and <flags> has XDS__NULLABLE); reports a
 * missing required member. */
static json_t *member(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool *ok)
{
    json_t *v = json_object_get(obj, key);

    *ok = true;
    if (v == NULL && (flags & XDS__REQUIRED)) {
        xds__cfg_err(c, key, "is required");
        *ok = false;
    }
    if (v != NULL && json_is_null(v) && (flags & XDS__NULLABLE))
        v = NULL;
    return v;
}

json_t *xds__cfg_obj(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool *ok)
{
    json_t *v = member(c, obj, key, flags, ok);

    if (v != NULL && !json_is_object(v)) {
        xds__cfg_err(c, key, "must be an object");
        *ok = false;
        return NULL;
    }
    return v;
}

json_t *xds__cfg_arr(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool *ok)
{
    json_t *v = member(c, obj, key, flags, ok);

    if (v != NULL && !json_is_array(v)) {
        xds__cfg_err(c, key, "must be an array");
        *ok = false;
        return NULL;
    }
    return v;
}

bool xds__cfg_str(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, const char *def,
                  char **out)
{
    bool ok;
    json_t *v = member(c, obj, key, flags, &ok);

    *out = def != NULL ? wr_xstrdup(def) : NULL;
    if (v == NULL)
        return ok;
    if (!json_is_string(v)) {
        xds__cfg_err(c, key, "must be a string%s", (flags & XDS__NULLABLE) ? " or null" : "");
        return false;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        xds__cfg_err(c, key, "must not contain NUL characters");
        return false;
    }
    if ((flags & XDS__NONEMPTY) && s[0] == '\0') {
        xds__cfg_err(c, key, "must not be empty");
        return false;
    }
    free(*out);
    *out = wr_xstrdup(s);
    return true;
}

static void range_err(struct xds__cfg *c, const char *key, json_t *v, uint64_t min, uint64_t max,
                      bool soft_max)
{
    if (!soft_max)
        xds__cfg_err(c, key, "must be an integer from %llu to %llu", (unsigned long long)min,
                     (unsigned long long)max);
    else if (json_is_integer(v) && json_integer_value(v) > 0 &&
             (uint64_t)json_integer_value(v) > max)
        xds__cfg_err(c, key, "must be at most %llu", (unsigned long long)max);
    else if (min == 1)
        xds__cfg_err(c, key, "must be an integer > 0");
    else
        xds__cfg_err(c, key, "must be an integer >= %llu", (unsigned long long)min);
}

static bool get_uint(struct xds__cfg *c, json_t *obj, const char *key, uint64_t min, uint64_t max,
                     bool soft_max, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max) {
        range_err(c, key, v, min, max, soft_max);
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

bool xds__cfg_u32(struct xds__cfg *c, json_t *obj, const char *key, uint32_t def, uint64_t min,
                  uint64_t max, uint32_t *out)
{
    bool soft = max == XDS__NOLIMIT;
    uint64_t v = def;
    bool ok = get_uint(c, obj, key, min, soft ? UINT32_MAX : max, soft, &v);

    *out = (uint32_t)v;
    return ok;
}

bool xds__cfg_u64(struct xds__cfg *c, json_t *obj, const char *key, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t *out)
{
    bool soft = max == XDS__NOLIMIT;

    *out = def;
    return get_uint(c, obj, key, min, soft ? (uint64_t)INT64_MAX : max, soft, out);
}

bool xds__cfg_bool(struct xds__cfg *c, json_t *obj, const char *key, bool def, bool *out)
{
    json_t *v = json_object_get(obj, key);

    *out = def;
    if (v == NULL)
        return true;
    if (!json_is_boolean(v)) {
        xds__cfg_err(c, key, "must be true or false");
        return false;
    }
    *out = json_is_true(v);
    return true;
}

char *xds__cfg_resolve(struct xds__cfg *c, char *p)
{
    if (p == NULL || p[0] == '/' || c->base_dir == NULL)
        return p;
    char *abs = wr_xasprintf("%s/%s", c->base_dir, p);
    free(p);
    return abs;
}

static bool check_readable(struct xds__cfg *c, const char *key, const char *path)
{
    struct stat st;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        xds__cfg_err(c, key, "cannot read \"%s\": %s", path, strerror(errno));
        return false;
    }
    bool reg = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    fclose(f);
    if (!reg)
        xds__cfg_err(c, key, "\"%s\" is not a regular file", path);
    return reg;
}

bool xds__cfg_file(struct xds__cfg *c, json_t *obj, const char *key, unsigned flags, bool readable,
                   char **out)
{
    if (!xds__cfg_str(c, obj, key, flags | XDS__NONEMPTY, NULL, out))
        return false;
    *out = xds__cfg_resolve(c, *out);
    return *out == NULL || !readable || check_readable(c, key, *out);
}

/* ---- syntax checks ------------------------------------------------------------------------ */

bool xds_host_name_valid(const char *s, size_t len)
{
    return xds__cfg_host_name(s, len);
}

/* RFC 1123 host name: dot-separated labels of 1-63 letters, digits and '-' (not at either end
 * of a label), 253 characters at most. */
bool xds__cfg_host_name(const char *s, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char ch = i < len ? s[i] : '.';
        if (ch == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (ch != '-' || label == 0))
            return false;
        label++;
    }
    return true;
}

bool xds__cfg_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') && !(*s >= '0' && *s <= '9') &&
            strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    return true;
}
