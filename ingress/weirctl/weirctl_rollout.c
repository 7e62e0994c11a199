/* ingress/weirctl/weirctl_rollout.c -- rollout status, set, promote, rollback (INTERFACES §5).
 *
 * `status` reads the rollout twice, --sample apart (default 1 s), and turns the deltas of the
 * cumulative counters into rates: requests/s, 5xx/s and the 5xx share of requests, per colour,
 * next to the healthy/total endpoints. The other three change the weight and print the result.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include <weir/wr.h>

#include "weirctl.h"

#define DEFAULT_SAMPLE_MS 1000

const char *wctl_rollout_name(const struct wctl_args *a, int *rc)
{
    int n = a->n_words - a->n_cmd_words;

    if (n == 0) {
        *rc = wctl_usage_error(a, "the rollout NAME is missing");
        return NULL;
    }
    if (n > 1) {
        *rc = wctl_usage_error(a, "unexpected argument %s", a->words[a->n_cmd_words + 1]);
        return NULL;
    }
    if (a->words[a->n_cmd_words][0] == '\0') {
        *rc = wctl_usage_error(a, "the rollout NAME is empty");
        return NULL;
    }
    return a->words[a->n_cmd_words];
}

bool wctl_sleep_ms(uint64_t ms, volatile sig_atomic_t *stop)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    /* A signal interrupts the sleep (EINTR) whatever SA_RESTART says; then <stop> decides. */
    while (stop == NULL || *stop == 0) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
        if (rc != EINTR)
            return true;
    }
    return false;
}

/* ---- set, promote, rollback ------------------------------------------------------------- */

void wctl_print_change(const struct wctl_target *t, const struct wctl_state *st, bool json)
{
    if (json) {
        json_t *o = json_pack("{s:s?,s:s,s:i,s:s?,s:s?,s:s?}", "name", st->name, "target",
                              t->ops->kind, "green_weight", st->green_weight, "blue",
                              st->blue.cluster, "green", st->green.cluster, "version", st->version);
        json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        putchar('\n');
        json_decref(o);
        return;
    }
    printf("rollout %s: green_weight %d (blue %s %d%%, green %s %d%%), %s %s\n",
           st->name != NULL ? st->name : "?", st->green_weight,
           st->blue.cluster != NULL ? st->blue.cluster : "?", 100 - st->green_weight,
           st->green.cluster != NULL ? st->green.cluster : "?", st->green_weight,
           t->ops->version_label, st->version != NULL ? st->version : "unknown");
}

static int change(const struct wctl_args *a, enum wctl_change how)
{
    struct wctl_state st = {.sticky = -1};
    struct wctl_target *t;
    const char *name;
    int rc, weight = 0;

    if ((name = wctl_rollout_name(a, &rc)) == NULL)
        return rc;
    if (how == WCTL_CHANGE_SET && a->val[WCTL_OPT_GREEN] == NULL)
        return wctl_usage_error(a, "--green PERCENT is required");
    if (how == WCTL_CHANGE_SET && wctl_parse_percent(a->val[WCTL_OPT_GREEN], &weight) != 0)
        return wctl_usage_error(a, "--green %s: must be an integer from 0 to 100",
                                a->val[WCTL_OPT_GREEN]);
    if ((t = wctl_target_new(a)) == NULL)
        return 1;
    rc = t->ops->set_weight(t, name, how, weight, &st) == 0 ? 0 : 1;
    if (rc == 0)
        wctl_print_change(t, &st, a->val[WCTL_OPT_JSON] != NULL);
    wctl_state_dispose(&st);
    wctl_target_free(t);
    return rc;
}

int wctl_rollout_set(const struct wctl_args *a)
{
    return change(a, WCTL_CHANGE_SET);
}

int wctl_rollout_promote(const struct wctl_args *a)
{
    return change(a, WCTL_CHANGE_PROMOTE);
}

int wctl_rollout_rollback(const struct wctl_args *a)
{
    return change(a, WCTL_CHANGE_ROLLBACK);
}

/* ---- status ------------------------------------------------------------------------------ */

/* The rates of one colour between two readings; each is negative when unknown. */
struct rates {
    double req_s;    /* requests per second */
    double err_s;    /* 5xx answers per second */
    double err_frac; /* 5xx share of the requests (unknown without requests) */
};

static struct rates rates_of(const struct wctl_colour *c0, const struct wctl_colour *c1,
                             double secs)
{
    struct rates r = {-1, -1, -1};

    /* A counter that went down means weir restarted in between: no rate rather than a lie. */
    if (!c0->has_counts || !c1->has_counts || secs <= 0 || c1->requests < c0->requests ||
        c1->errors_5xx < c0->errors_5xx)
        return r;
    r.req_s = (double)(c1->requests - c0->requests) / secs;
    r.err_s = (double)(c1->errors_5xx - c0->errors_5xx) / secs;
    if (c1->requests > c0->requests)
        r.err_frac =
            (double)(c1->errors_5xx - c0->errors_5xx) / (double)(c1->requests - c0->requests);
    return r;
}

static json_t *jrate(double v)
{
    return v >= 0 ? json_real(v) : json_null();
}

static json_t *colour_json(const struct wctl_colour *c, int weight, const struct rates *r)
{
    json_t *o = json_pack("{s:s?,s:i}", "cluster", c->cluster, "weight", weight);

    json_object_set_new(o, "healthy", c->has_health ? json_integer(c->healthy) : json_null());
    json_object_set_new(o, "endpoints", c->has_health ? json_integer(c->endpoints) : json_null());
    json_object_set_new(o, "requests",
                        c->has_counts ? json_integer((json_int_t)c->requests) : json_null());
    json_object_set_new(o, "errors_5xx",
                        c->has_counts ? json_integer((json_int_t)c->errors_5xx) : json_null());
    json_object_set_new(o, "request_rate", jrate(r->req_s));
    json_object_set_new(o, "errors_5xx_rate", jrate(r->err_s));
    json_object_set_new(o, "errors_5xx_ratio", jrate(r->err_frac));
    return o;
}

static void print_status_json(const struct wctl_target *t, const struct wctl_state *st,
                              const struct rates r[2], double secs)
{
    json_t *o = json_pack("{s:s?,s:s,s:s?,s:i}", "name", st->name, "target", t->ops->kind,
                          "version", st->version, "green_weight", st->green_weight);

    json_object_set_new(o, "sticky", st->sticky < 0 ? json_null() : json_boolean(st->sticky));
    json_object_set_new(o, "sample_seconds", secs > 0 ? json_real(secs) : json_null());
    json_object_set_new(o, "blue", colour_json(&st->blue, 100 - st->green_weight, &r[0]));
    json_object_set_new(o, "green", colour_json(&st->green, st->green_weight, &r[1]));
    json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    putchar('\n');
    json_decref(o);
}

/* Formats <v> with <fmt> into <buf>, or "-" when it is unknown (negative). */
static const char *num(char *buf, size_t len, const char *fmt, double v)
{
    if (v < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, fmt, v);
    return buf;
}

static void print_row(const char *colour, const struct wctl_colour *c, int width, int weight,
                      const struct rates *r)
{
    char health[32] = "-", req[32], err[32], frac[32];

    if (c->has_health)
        snprintf(health, sizeof(health), "%u/%u", c->healthy, c->endpoints);
    printf("%-6s  %-*s  %5d%%  %7s  %10s  %7s  %7s\n", colour, width,
           c->cluster != NULL ? c->cluster : "?", weight, health,
           num(req, sizeof(req), "%.1f", r->req_s), num(err, sizeof(err), "%.1f", r->err_s),
           num(frac, sizeof(frac), "%.2f%%", r->err_frac >= 0 ? r->err_frac * 100 : -1));
}

static void print_status(const struct wctl_target *t, const struct wctl_state *st,
                         const struct rates r[2], double secs)
{
    int width = 7;

    if (st->blue.cluster != NULL && (int)strlen(st->blue.cluster) > width)
        width = (int)strlen(st->blue.cluster);
    if (st->green.cluster != NULL && (int)strlen(st->green.cluster) > width)
        width = (int)strlen(st->green.cluster);
    printf("rollout %s (%s, %s %s)\n", st->name != NULL ? st->name : "?", t->where,
           t->ops->version_label, st->version != NULL ? st->version : "unknown");
    printf("%-6s  %-*s  %6s  %7s  %10s  %7s  %7s\n", "colour", width, "cluster", "weight",
           "healthy", "requests/s", "5xx/s", "5xx");
    print_row("blue", &st->blue, width, 100 - st->green_weight, &r[0]);
    print_row("green", &st->green, width, st->green_weight, &r[1]);
    printf("sticky: %s; ", st->sticky < 0 ? "unknown" : st->sticky ? "yes" : "no");
    if (!st->green.has_counts)
        printf("%s has no request counters\n", t->ops->kind);
    else if (secs > 0)
        printf("rates over %.1f s\n", secs);
    else
        printf("no rates (--sample 0)\n");
}

/* Reads <name> into <st1>, twice <sample_ms> apart when the target has counters; the rates go
 * into <r> and the measured seconds into <*secs> (0: none). */
static int sample(struct wctl_target *t, const char *name, uint64_t sample_ms,
                  struct wctl_state *st1, struct rates r[2], double *secs)
{
    struct wctl_state st0 = {.sticky = -1};
    uint64_t t0 = wr_mono_ns();
    int rc = -1;

    *secs = 0;
    r[0] = r[1] = (struct rates){-1, -1, -1};
    if (t->ops->get_stats(t, name, st1) != 0)
        return -1;
    if (sample_ms == 0 || !st1->blue.has_counts)
        return 0;
    st0 = *st1; /* moves the strings over */
    memset(st1, 0, sizeof(*st1));
    wctl_sleep_ms(sample_ms, NULL);
    if (t->ops->get_stats(t, name, st1) == 0) {
        *secs = (double)(wr_mono_ns() - t0) / 1e9;
        r[0] = rates_of(&st0.blue, &st1->blue, *secs);
        r[1] = rates_of(&st0.green, &st1->green, *secs);
        rc = 0;
    }
    wctl_state_dispose(&st0);
    return rc;
}

int wctl_rollout_status(const struct wctl_args *a)
{
    struct wctl_state st = {.sticky = -1};
    struct rates r[2];
    struct wctl_target *t;
    uint64_t sample_ms = DEFAULT_SAMPLE_MS;
    const char *name;
    double secs;
    int rc;

    if ((name = wctl_rollout_name(a, &rc)) == NULL)
        return rc;
    if (a->val[WCTL_OPT_SAMPLE] != NULL &&
        wctl_parse_duration_ms(a->val[WCTL_OPT_SAMPLE], &sample_ms) != 0)
        return wctl_usage_error(a, "--sample %s: a duration like 1s, 500ms or 2m is expected",
                                a->val[WCTL_OPT_SAMPLE]);
    if ((t = wctl_target_new(a)) == NULL)
        return 1;
    rc = sample(t, name, sample_ms, &st, r, &secs) == 0 ? 0 : 1;
    if (rc == 0 && a->val[WCTL_OPT_JSON] != NULL)
        print_status_json(t, &st, r, secs);
    else if (rc == 0)
        print_status(t, &st, r, secs);
    wctl_state_dispose(&st);
    wctl_target_free(t);
    return rc;
}
