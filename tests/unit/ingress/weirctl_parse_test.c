/* tests/unit/ingress/weirctl_parse_test.c -- weirctl's option values (weirctl_parse.c):
 * percents, durations, error rates and step lists, accepted and refused spellings. */
#include "../../../ingress/weirctl/weirctl_parse.c"
#include "test.h"

TEST(percent)
{
    static const char *const bad[] = {
        "", "101", "-1", "+5", "20%", "20.0", "abc", " 5", "5 ", "1000000000000", "0x10", NULL};
    int v = -1;

    ASSERT_EQ(wctl_parse_percent("0", &v), 0);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(wctl_parse_percent("100", &v), 0);
    ASSERT_EQ(v, 100);
    ASSERT_EQ(wctl_parse_percent("007", &v), 0);
    ASSERT_EQ(v, 7);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wctl_parse_percent(bad[i], &v) != -1)
            FAIL("percent \"%s\" accepted", bad[i] ? bad[i] : "(null)");
}

TEST(duration)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {{"30s", 30000}, {"500ms", 500}, {"2m", 120000}, {"30", 30000}, {"1h", 3600000},
                {"1.5s", 1500}, {"0", 0},       {"0.25", 250},  {"1ms", 1}};

    static const char *const bad[] = {"",   "s",   "ms", "-1s", "+1s", "5q",  "1.2.3s", "1 s",
                                      "1S", "1e3", "2d", "25h", ".",   "1sm", NULL};
    uint64_t ms;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ms = 12345;
        if (wctl_parse_duration_ms(good[i].s, &ms) != 0 || ms != good[i].ms)
            FAIL("duration \"%s\": %llu", good[i].s, (unsigned long long)ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wctl_parse_duration_ms(bad[i], &ms) != -1)
            FAIL("duration \"%s\" accepted", bad[i] ? bad[i] : "(null)");
}

TEST(rate)
{
    static const char *const bad[] = {"", "1.01", "2", "-0.1", "x", "1e-2", "0.01%", NULL};
    double r;

    ASSERT_EQ(wctl_parse_rate("0.01", &r), 0);
    ASSERT(r > 0.0099 && r < 0.0101);
    ASSERT_EQ(wctl_parse_rate("0", &r), 0);
    ASSERT(r == 0);
    ASSERT_EQ(wctl_parse_rate("1", &r), 0);
    ASSERT(r == 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wctl_parse_rate(bad[i], &r) != -1)
            FAIL("rate \"%s\" accepted", bad[i] ? bad[i] : "(null)");
}

TEST(steps)
{
    static const char *const bad[] = {"",       ",", "10,",   ",10",   "10,,20", "50,25", "10,10",
                                      "10,101", "a", "10;20", "-5,10", " 10",    NULL};
    int s[WCTL_MAX_STEPS], n = 0;

    ASSERT_EQ(wctl_parse_steps("10,25,50,100", s, WCTL_MAX_STEPS, &n), 0);
    ASSERT_EQ(n, 4);
    ASSERT_EQ(s[0], 10);
    ASSERT_EQ(s[3], 100);
    ASSERT_EQ(wctl_parse_steps("0", s, WCTL_MAX_STEPS, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(wctl_parse_steps("5,6,7", s, 2, &n), -1); /* more than <max> */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (wctl_parse_steps(bad[i], s, WCTL_MAX_STEPS, &n) != -1)
            FAIL("steps \"%s\" accepted", bad[i] ? bad[i] : "(null)");
}
