/* ingress/weirctl/weirctl_parse.c -- option values: percent, duration, error rate, steps.
 *
 * Pure functions (no output, no state) so that tests/unit/ingress/weirctl_parse_test.c can
 * check every accepted and refused spelling. Leading signs, spaces, hex and exponents are
 * refused: an operator typing "-5" or "1e2" more likely made a mistake than meant it.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weirctl.h"

/* A decimal integer of at most 9 digits with nothing around it. */
static int parse_uint(const char *s, const char *end, long *out)
{
    long v = 0;

    if (s == end || end - s > 9)
        return -1;
    for (const char *p = s; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* An integer from 0 to 100: "20". Not "20%", "20.0" or "+20". */
int wctl_parse_percent(const char *s, int *out)
{
    long v;

    if (s == NULL || parse_uint(s, s + strlen(s), &v) != 0 || v > 100)
        return -1;
    *out = (int)v;
    return 0;
}

/* A non-negative decimal number "12" or "1.5" in [s, end); no sign, no exponent. */
static int parse_decimal(const char *s, const char *end, double *out)
{
    char buf[32];
    char *stop;
    int dots = 0, digits = 0;

    if (s == end || end - s >= (long)sizeof(buf))
        return -1;
    for (const char *p = s; p < end; p++) {
        if (*p == '.')
            dots++;
        else if (*p >= '0' && *p <= '9')
            digits++;
        else
            return -1;
    }
    if (dots > 1 || digits == 0)
        return -1;
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = '\0';
    errno = 0;
    *out = strtod(buf, &stop);
    return errno == 0 && *stop == '\0' && isfinite(*out) ? 0 : -1;
}

/* "30s", "500ms", "2m", "1h", "1.5s", or bare seconds "30"; at most a day. */
int wctl_parse_duration_ms(const char *s, uint64_t *out_ms)
{
    static const struct {
        const char *suffix;
        double ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};

    const char *end;
    double v, scale = 1000;

    if (s == NULL)
        return -1;
    end = s + strlen(s);
    while (end > s && ((end[-1] >= 'a' && end[-1] <= 'z')))
        end--;
    if (*end != '\0') {
        size_t i;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
            if (strcmp(end, units[i].suffix) == 0)
                break;
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
        scale = units[i].ms;
    }
    if (parse_decimal(s, end, &v) != 0 || v * scale > 86400000.0)
        return -1;
    *out_ms = (uint64_t)(v * scale + 0.5);
    return 0;
}

/* A fraction of requests from 0 to 1: "0.01", "0", "1". */
int wctl_parse_rate(const char *s, double *out)
{
    double v;

    if (s == NULL || parse_decimal(s, s + strlen(s), &v) != 0 || v > 1.0)
        return -1;
    *out = v;
    return 0;
}

/* A comma-separated list of strictly increasing percents: "10,25,50,100". */
int wctl_parse_steps(const char *s, int *steps, int max, int *n_out)
{
    int n = 0;

    if (s == NULL || *s == '\0')
        return -1;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        long v;
        if (n == max || parse_uint(p, end, &v) != 0 || v > 100)
            return -1;
        if (n > 0 && v <= steps[n - 1])
            return -1;
        steps[n++] = (int)v;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    *n_out = n;
    return 0;
}
