/* health/hc_state.c -- the decisions of health/, free of I/O: rise/fall thresholds, intervals
 * and jitter, the ejection budget and back-off, expected statuses, streaming substring search.
 * Everything here is a pure function of its arguments (the PRNG state is passed in), so the
 * unit tests drive it directly.
 */
#include <stdlib.h>
#include <string.h>

#include "hc_priv.h"

void hc__verdict_init(struct hc_verdict *v, bool healthy)
{
    v->healthy = healthy;
    v->ok_streak = v->fail_streak = 0;
}

/* HAProxy's rise/fall: a healthy endpoint goes down after <unhealthy_threshold> consecutive
 * failures, an unhealthy one comes back after <healthy_threshold> consecutive passes; a result
 * of the other kind resets the streak. Thresholds of 0 are read as 1. */
int hc__verdict_add(struct hc_verdict *v, bool ok, uint32_t healthy_threshold,
                    uint32_t unhealthy_threshold)
{
    if (ok) {
        v->fail_streak = 0;
        if (v->ok_streak < UINT32_MAX)
            v->ok_streak++;
        if (!v->healthy && v->ok_streak >= WR_MAX(healthy_threshold, 1u)) {
            v->healthy = true;
            v->ok_streak = 0;
            return HC_BECAME_HEALTHY;
        }
        return HC_NO_CHANGE;
    }
    v->ok_streak = 0;
    if (v->fail_streak < UINT32_MAX)
        v->fail_streak++;
    if (v->healthy && v->fail_streak >= WR_MAX(unhealthy_threshold, 1u)) {
        v->healthy = false;
        v->fail_streak = 0;
        return HC_BECAME_UNHEALTHY;
    }
    return HC_NO_CHANGE;
}

uint32_t hc__interval(const struct xds_health_check *hc, bool healthy)
{
    uint32_t ms = healthy ? hc->interval_ms : hc->unhealthy_interval_ms;

    return ms != 0 ? ms : (hc->interval_ms != 0 ? hc->interval_ms : 1);
}

uint64_t hc__jitter(uint64_t ms, uint32_t pct, uint64_t *rng)
{
    uint64_t j = ms * WR_MIN(pct, 100u) / 100;
    uint64_t v;

    if (j == 0)
        return ms != 0 ? ms : 1;
    v = ms - j + wr_rand_next(rng) % (2 * j + 1);
    return v != 0 ? v : 1;
}

uint64_t hc__first_delay(uint32_t interval_ms, uint64_t *rng)
{
    return interval_ms > 1 ? wr_rand_next(rng) % interval_ms : 0;
}

/* Checks due within the same tick start in the same loop iteration: at a thousand checks a
 * second, waking the control loop for each one would cost more than the checks themselves.
 * The tick is 1/40 of the interval, 1 to 25 ms: a 1 s check may start up to 25 ms late. */
uint64_t hc__align(uint64_t now, uint64_t delay, uint32_t interval_ms)
{
    uint64_t tick = WR_MIN(WR_MAX(interval_ms / 40, 1u), 25u);
    uint64_t due = now + delay;

    due = (due + tick - 1) / tick * tick;
    return due - now;
}

uint32_t hc__max_ejected(uint32_t n, uint32_t max_ejection_percent)
{
    uint64_t k = (uint64_t)n * WR_MIN(max_ejection_percent, 100u) / 100;

    return k > 1 ? (uint32_t)k : 1;
}

uint64_t hc__ejection_ms(const struct xds_outlier *od, uint32_t *times, uint64_t unejected_ms)
{
    uint64_t base = WR_MAX(od->base_ejection_ms, 1u);
    uint64_t cap = WR_MAX(od->max_ejection_ms, od->base_ejection_ms);
    uint64_t decay = unejected_ms / base;

    *times = decay >= *times ? 0 : *times - (uint32_t)decay;
    /* Beyond the cap the count need not grow: keeping it one step past the cap means a long
     * quiet period is needed before the ejections get shorter again, as in Envoy. */
    if (base * *times <= cap)
        (*times)++;
    return WR_MIN(base * *times, cap);
}

bool hc__status_expected(const struct xds_health_check *hc, unsigned status)
{
    if (hc->n_expected == 0)
        return status >= 200 && status <= 399;
    for (uint32_t i = 0; i < hc->n_expected; i++)
        if (status >= hc->expected[i][0] && status <= hc->expected[i][1])
            return true;
    return false;
}

/* ---- streaming substring search ---------------------------------------------------------- */

void hc__match_init(struct hc_match *mt, const char *needle, size_t n)
{
    mt->needle = needle;
    mt->n = n;
    mt->q = 0;
    mt->fail = n > 0 ? wr_xcalloc(n, sizeof(*mt->fail)) : NULL;
    /* fail[i]: length of the longest proper border of needle[0..i]. */
    for (size_t i = 1, k = 0; i < n; i++) {
        while (k > 0 && needle[i] != needle[k])
            k = mt->fail[k - 1];
        if (needle[i] == needle[k])
            k++;
        mt->fail[i] = k;
    }
}

bool hc__match_feed(struct hc_match *mt, const char *p, size_t len)
{
    size_t q = mt->q;

    if (q == mt->n)
        return true;
    for (size_t i = 0; i < len; i++) {
        while (q > 0 && p[i] != mt->needle[q])
            q = mt->fail[q - 1];
        if (p[i] == mt->needle[q] && ++q == mt->n) {
            mt->q = q;
            return true;
        }
    }
    mt->q = q;
    return false;
}

void hc__match_dispose(struct hc_match *mt)
{
    wr_free(&mt->fail);
}
