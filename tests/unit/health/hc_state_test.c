/* tests/unit/health/hc_state_test.c -- the decisions of health/ (health/hc_state.c): rise/fall
 * thresholds, initial state, intervals and jitter, the ejection budget and back-off, expected
 * statuses and the streaming substring search. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../../../health/hc_priv.h"
#include "test.h"

TEST(verdict_falls_after_unhealthy_threshold)
{
    struct hc_verdict v;

    hc__verdict_init(&v, true);
    ASSERT_EQ(hc__verdict_add(&v, false, 2, 3), HC_NO_CHANGE);
    ASSERT_EQ(hc__verdict_add(&v, false, 2, 3), HC_NO_CHANGE);
    ASSERT(v.healthy);
    ASSERT_EQ(hc__verdict_add(&v, false, 2, 3), HC_BECAME_UNHEALTHY);
    ASSERT(!v.healthy);
    /* Further failures change nothing. */
    ASSERT_EQ(hc__verdict_add(&v, false, 2, 3), HC_NO_CHANGE);
    ASSERT(!v.healthy);
}

TEST(verdict_pass_resets_fail_streak)
{
    struct hc_verdict v;

    hc__verdict_init(&v, true);
    for (int round = 0; round < 5; round++) {
        ASSERT_EQ(hc__verdict_add(&v, false, 1, 3), HC_NO_CHANGE);
        ASSERT_EQ(hc__verdict_add(&v, false, 1, 3), HC_NO_CHANGE);
        ASSERT_EQ(hc__verdict_add(&v, true, 1, 3), HC_NO_CHANGE);
    }
    ASSERT(v.healthy);
}

TEST(verdict_rises_after_healthy_threshold)
{
    struct hc_verdict v;

    hc__verdict_init(&v, false);
    ASSERT(!v.healthy);
    ASSERT_EQ(hc__verdict_add(&v, true, 3, 2), HC_NO_CHANGE);
    ASSERT_EQ(hc__verdict_add(&v, true, 3, 2), HC_NO_CHANGE);
    ASSERT_EQ(hc__verdict_add(&v, false, 3, 2), HC_NO_CHANGE); /* streak broken */
    ASSERT_EQ(hc__verdict_add(&v, true, 3, 2), HC_NO_CHANGE);
    ASSERT_EQ(hc__verdict_add(&v, true, 3, 2), HC_NO_CHANGE);
    ASSERT(!v.healthy);
    ASSERT_EQ(hc__verdict_add(&v, true, 3, 2), HC_BECAME_HEALTHY);
    ASSERT(v.healthy);
    /* The streak starts over after a flip: one failure is not enough to fall again. */
    ASSERT_EQ(hc__verdict_add(&v, false, 3, 2), HC_NO_CHANGE);
    ASSERT_EQ(hc__verdict_add(&v, false, 3, 2), HC_BECAME_UNHEALTHY);
}

TEST(verdict_threshold_one_and_zero)
{
    struct hc_verdict v;

    hc__verdict_init(&v, true);
    ASSERT_EQ(hc__verdict_add(&v, false, 1, 1), HC_BECAME_UNHEALTHY);
    ASSERT_EQ(hc__verdict_add(&v, true, 1, 1), HC_BECAME_HEALTHY);
    /* A threshold of 0 (never produced by the config loader) acts as 1. */
    ASSERT_EQ(hc__verdict_add(&v, false, 0, 0), HC_BECAME_UNHEALTHY);
    ASSERT_EQ(hc__verdict_add(&v, true, 0, 0), HC_BECAME_HEALTHY);
}

TEST(interval_faster_while_unhealthy)
{
    struct xds_health_check hc = {.interval_ms = 5000, .unhealthy_interval_ms = 700};

    ASSERT_EQ(hc__interval(&hc, true), 5000);
    ASSERT_EQ(hc__interval(&hc, false), 700);
    hc.unhealthy_interval_ms = 0; /* not set: the interval */
    ASSERT_EQ(hc__interval(&hc, false), 5000);
}

TEST(jitter_bounds_and_spread)
{
    uint64_t rng = 12345, lo = UINT64_MAX, hi = 0, below = 0, above = 0;

    for (int i = 0; i < 100000; i++) {
        uint64_t v = hc__jitter(1000, 10, &rng);
        ASSERT(v >= 900 && v <= 1100);
        lo = WR_MIN(lo, v);
        hi = WR_MAX(hi, v);
        below += v < 1000;
        above += v > 1000;
    }
    printf("    jitter 1000 ms +-10%%: min %llu max %llu, %llu below, %llu above\n",
           (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)below,
           (unsigned long long)above);
    /* Both ends are reached and the spread is symmetric within a few percent. */
    ASSERT(lo <= 902 && hi >= 1098);
    ASSERT(below > 45000 && above > 45000);
    ASSERT_EQ(hc__jitter(1000, 0, &rng), 1000);
    ASSERT_EQ(hc__jitter(0, 50, &rng), 1);
    for (int i = 0; i < 1000; i++) {
        uint64_t v = hc__jitter(2, 100, &rng);
        ASSERT(v >= 1 && v <= 4);
    }
}

TEST(first_delay_within_interval)
{
    uint64_t rng = 99, lo = UINT64_MAX, hi = 0;

    for (int i = 0; i < 10000; i++) {
        uint64_t v = hc__first_delay(1000, &rng);
        ASSERT(v < 1000);
        lo = WR_MIN(lo, v);
        hi = WR_MAX(hi, v);
    }
    ASSERT(lo < 20 && hi > 980); /* spread over the whole interval */
    ASSERT_EQ(hc__first_delay(1, &rng), 0);
}

TEST(max_ejected_formula)
{
    /* max(1, floor(n x pct / 100)): INTERFACES.md section 3 */
    ASSERT_EQ(hc__max_ejected(10, 10), 1);
    ASSERT_EQ(hc__max_ejected(19, 10), 1);
    ASSERT_EQ(hc__max_ejected(20, 10), 2);
    ASSERT_EQ(hc__max_ejected(3, 10), 1);
    ASSERT_EQ(hc__max_ejected(100, 25), 25);
    ASSERT_EQ(hc__max_ejected(4, 50), 2);
    ASSERT_EQ(hc__max_ejected(4, 100), 4);
    ASSERT_EQ(hc__max_ejected(5, 0), 1);
    ASSERT_EQ(hc__max_ejected(0, 50), 1);
}

TEST(ejection_backoff_and_cap)
{
    struct xds_outlier od = {.enabled = true, .base_ejection_ms = 1000, .max_ejection_ms = 4000};
    uint32_t times = 0;

    ASSERT_EQ(hc__ejection_ms(&od, &times, 0), 1000);
    ASSERT_EQ(times, 1);
    ASSERT_EQ(hc__ejection_ms(&od, &times, 10), 2000);
    ASSERT_EQ(hc__ejection_ms(&od, &times, 999), 3000);
    ASSERT_EQ(hc__ejection_ms(&od, &times, 0), 4000);
    ASSERT_EQ(hc__ejection_ms(&od, &times, 0), 4000); /* capped */
    ASSERT_EQ(hc__ejection_ms(&od, &times, 0), 4000);
    ASSERT(times <= 5); /* the count stops growing past the cap */
}

TEST(ejection_backoff_decays_when_quiet)
{
    struct xds_outlier od = {.enabled = true, .base_ejection_ms = 1000, .max_ejection_ms = 10000};
    uint32_t times = 3;

    /* 2.5 base periods un-ejected: two steps of decay, then this ejection counts. */
    ASSERT_EQ(hc__ejection_ms(&od, &times, 2500), 2000);
    ASSERT_EQ(times, 2);
    /* A long quiet period: back to the base. */
    ASSERT_EQ(hc__ejection_ms(&od, &times, 3600000), 1000);
    ASSERT_EQ(times, 1);
}

TEST(status_ranges)
{
    uint16_t r[2][2] = {{200, 204}, {404, 404}};
    struct xds_health_check hc = {.expected = r, .n_expected = 2};

    ASSERT(hc__status_expected(&hc, 200));
    ASSERT(hc__status_expected(&hc, 204));
    ASSERT(!hc__status_expected(&hc, 205));
    ASSERT(hc__status_expected(&hc, 404));
    ASSERT(!hc__status_expected(&hc, 403));
    ASSERT(!hc__status_expected(&hc, 500));
    hc.n_expected = 0; /* defensive default: [200, 399] */
    ASSERT(hc__status_expected(&hc, 399));
    ASSERT(!hc__status_expected(&hc, 400));
}

static bool match_split(const char *needle, const char *hay, size_t split)
{
    struct hc_match mt;
    bool found;

    hc__match_init(&mt, needle, strlen(needle));
    found = hc__match_feed(&mt, hay, WR_MIN(split, strlen(hay)));
    if (!found && split < strlen(hay))
        found = hc__match_feed(&mt, hay + split, strlen(hay) - split);
    hc__match_dispose(&mt);
    return found;
}

TEST(match_across_pieces)
{
    const char *hay = "status: aaab ok; ABABAC found";

    for (size_t split = 0; split <= strlen(hay); split++) {
        ASSERT(match_split("aaab", hay, split));
        ASSERT(match_split("ABABAC", hay, split));
        ASSERT(match_split("ok;", hay, split));
        ASSERT(!match_split("ABABAB", hay, split));
        ASSERT(!match_split("aaaab", hay, split));
    }
    ASSERT(match_split("", "", 0)); /* an empty needle is always there */
}

TEST(match_byte_by_byte)
{
    const char *hay = "xxxxabcabcabdxxxx";
    struct hc_match mt;
    size_t at = 0;

    hc__match_init(&mt, "abcabd", 6);
    for (; at < strlen(hay); at++)
        if (hc__match_feed(&mt, hay + at, 1))
            break;
    ASSERT_EQ(at, 12);                    /* found on the byte that completes it */
    ASSERT(hc__match_feed(&mt, "zz", 2)); /* and stays found */
    hc__match_dispose(&mt);
}

TEST(align_to_tick)
{
    /* 1 s interval: 25 ms ticks. */
    ASSERT_EQ(hc__align(1000, 0, 1000), 0);
    ASSERT_EQ(hc__align(1000, 1, 1000), 25);
    ASSERT_EQ(hc__align(1003, 990, 1000), 997); /* due 1993 -> 2000 */
    ASSERT_EQ(hc__align(0, 24, 1000), 25);
    /* 300 ms: 7 ms ticks; 20 ms: 1 ms (no rounding). */
    ASSERT_EQ(hc__align(0, 8, 300), 14);
    ASSERT_EQ(hc__align(5, 3, 20), 3);
    /* Long intervals are capped at 25 ms, short ones never below 1 ms. */
    ASSERT_EQ(hc__align(0, 26, 60000), 50);
    ASSERT_EQ(hc__align(7, 0, 1), 0);
    /* Never shorter than asked, never more than a tick longer. */
    for (uint64_t now = 0; now < 200; now += 7)
        for (uint64_t d = 0; d < 100; d += 3) {
            uint64_t a = hc__align(now, d, 1000);
            ASSERT(a >= d && a < d + 25 && (now + a) % 25 == 0);
        }
}
