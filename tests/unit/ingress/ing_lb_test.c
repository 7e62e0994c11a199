/* tests/unit/ingress/ing_lb_test.c -- load-balancing policies (ingress/ing_lb*.c).
 *
 * Clusters are built by hand from the public structs of xds.h. Spreads are measured over
 * 100,000 picks and printed, so a regression shows how far it drifted, not only that it did.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/lb.h>
#include <weir/xds.h>

#include "test.h"

#define MAX_EPS 16
#define NPICKS  100000

static const uint8_t all_policies[] = {XDS_LB_ROUND_ROBIN, XDS_LB_LEAST_REQUEST, XDS_LB_RING_HASH,
                                       XDS_LB_RANDOM};

struct fixture {
    struct xds_cluster c;
    struct xds_endpoint eps[MAX_EPS];
    char addr[MAX_EPS][32];
    uint64_t rng;
    struct ing_lb_ctx ctx;
};

/* Endpoint <i> is "10.0.0.<first + i>:8080" with weight w[i]; all healthy, one worker. */
static void fx_init_from(struct fixture *f, uint8_t policy, const uint32_t *w, uint32_t n,
                         uint32_t first)
{
    memset(f, 0, sizeof(*f));
    f->c.name = "test";
    f->c.lb_policy = policy;
    f->c.eps = f->eps;
    f->c.n_eps = n;
    f->c.panic_percent = 50;
    for (uint32_t i = 0; i < n; i++) {
        size_t sz = sizeof(struct xds_ep_state) + sizeof(struct xds_ep_wstate);
        struct xds_ep_state *st = aligned_alloc(_Alignof(struct xds_ep_state), sz);

        ASSERT(st != NULL);
        memset(st, 0, sz);
        st->nworkers = 1;
        snprintf(f->addr[i], sizeof(f->addr[i]), "10.0.0.%u:8080", first + i);
        f->eps[i].address = f->addr[i];
        f->eps[i].weight = w[i];
        f->eps[i].st = st;
        f->c.total_weight += w[i];
    }
    f->rng = 0x9e3779b97f4a7c15ull;
    f->ctx.rng = &f->rng;
}

static void fx_init(struct fixture *f, uint8_t policy, const uint32_t *w, uint32_t n)
{
    fx_init_from(f, policy, w, n, 1);
}

static void fx_dispose(struct fixture *f)
{
    for (uint32_t i = 0; i < f->c.n_eps; i++)
        free(f->eps[i].st);
}

static void set_flags(struct fixture *f, uint32_t i, uint32_t flags)
{
    atomic_store(&f->eps[i].st->flags, flags);
}

static void set_active(struct fixture *f, uint32_t i, uint64_t n)
{
    atomic_store(&f->eps[i].st->w[0].active, n);
}

static uint64_t key_of(uint32_t k)
{
    return ing_lb_hash_key(&k, sizeof(k));
}

/* Picks <n> times into <counts>; pick k hashes key k (only ring_hash looks at it). */
static void run(struct fixture *f, struct ing_lb *lb, uint32_t *counts, uint32_t n)
{
    memset(counts, 0, MAX_EPS * sizeof(*counts));
    for (uint32_t k = 0; k < n; k++) {
        f->ctx.hash = key_of(k);
        f->ctx.has_hash = true;
        int idx = ing_lb_pick(lb, &f->c, &f->ctx);

        ASSERT(idx >= 0 && (uint32_t)idx < f->c.n_eps);
        counts[idx]++;
    }
}

/* Asserts every share is within <tol> percentage points of <expect> (fractions); prints the
 * largest deviation. */
static void check_shares(const char *what, const uint32_t *counts, const double *expect, uint32_t n,
                         uint32_t total, double tol)
{
    double worst = 0;

    for (uint32_t i = 0; i < n; i++) {
        double d = 100.0 * ((double)counts[i] / total - expect[i]);

        if (d < 0)
            d = -d;
        if (d > worst)
            worst = d;
    }
    printf("  %-40s max deviation %.3f pp (tolerance %.1f)\n", what, worst, tol);
    for (uint32_t i = 0; i < n; i++) {
        double share = 100.0 * counts[i] / total;

        if (share - 100.0 * expect[i] > tol || 100.0 * expect[i] - share > tol)
            FAIL("%s: endpoint %u got %.2f%%, expected %.2f%%", what, i, share, 100 * expect[i]);
    }
}

static void weight_shares(const uint32_t *w, uint32_t n, double *expect)
{
    double sum = 0;

    for (uint32_t i = 0; i < n; i++)
        sum += w[i];
    for (uint32_t i = 0; i < n; i++)
        expect[i] = w[i] / sum;
}

static const char *policy_name(uint8_t p)
{
    static const char *names[] = {"round_robin", "least_request", "ring_hash", "random"};

    return names[p];
}

/* Each policy follows weights 1:3 and 1:2:3:4 within 2 percentage points. */
static void check_weights(uint8_t policy)
{
    static const uint32_t w2[] = {1, 3}, w4[] = {1, 2, 3, 4},
                          w10[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

    const struct {
        const uint32_t *w;
        uint32_t n;
    } sets[] = {{w2, 2}, {w4, 4}, {w10, 10}};

    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];
        double expect[MAX_EPS];
        char what[64];

        fx_init(&f, policy, sets[s].w, sets[s].n);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, NPICKS);
        weight_shares(sets[s].w, sets[s].n, expect);
        snprintf(what, sizeof(what), "%s, %u endpoints", policy_name(policy), sets[s].n);
        check_shares(what, counts, expect, sets[s].n, NPICKS, 2.0);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

TEST(empty_cluster_has_nothing_to_offer)
{
    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;

        fx_init(&f, all_policies[p], NULL, 0);
        struct ing_lb *lb = ing_lb_new(&f.c);

        ASSERT(lb != NULL);
        ASSERT_EQ(ing_lb_pick(lb, &f.c, &f.ctx), -1);
        ing_lb_free(lb);
    }
    ing_lb_free(NULL);
}

TEST(round_robin_follows_weights_exactly)
{
    static const uint32_t w[] = {1, 2, 3, 4};
    struct fixture f;
    uint32_t counts[MAX_EPS];

    check_weights(XDS_LB_ROUND_ROBIN);
    /* Smooth WRR is exact over every whole period of sum(weights) picks. */
    fx_init(&f, XDS_LB_ROUND_ROBIN, w, 4);
    struct ing_lb *lb = ing_lb_new(&f.c);

    run(&f, lb, counts, NPICKS);
    for (uint32_t i = 0; i < 4; i++)
        ASSERT_EQ(counts[i], NPICKS / 10 * w[i]);
    ing_lb_free(lb);
    fx_dispose(&f);
}

TEST(round_robin_is_smooth)
{
    static const uint32_t w[] = {5, 1, 1};
    struct fixture f;
    char seq[71] = {0};

    fx_init(&f, XDS_LB_ROUND_ROBIN, w, 3);
    struct ing_lb *lb = ing_lb_new(&f.c);

    for (int k = 0; k < 70; k++)
        seq[k] = (char)('a' + ing_lb_pick(lb, &f.c, &f.ctx));
    /* nginx's sequence for 5, 1, 1, ten times over. */
    for (int k = 0; k < 70; k += 7)
        ASSERT(memcmp(seq + k, "aabacaa", 7) == 0);
    for (int k = 0; k + 7 <= 70; k++) {
        int na = 0;

        for (int j = k; j < k + 7; j++)
            na += seq[j] == 'a';
        ASSERT_EQ(na, 5);
    }
    ing_lb_free(lb);
    fx_dispose(&f);
}

TEST(random_follows_weights)
{
    check_weights(XDS_LB_RANDOM);
}

TEST(least_request_follows_weights_when_idle)
{
    check_weights(XDS_LB_LEAST_REQUEST);
}

TEST(ring_hash_follows_weights)
{
    check_weights(XDS_LB_RING_HASH);
}

TEST(ring_hash_without_key_follows_weights)
{
    static const uint32_t w[] = {1, 2, 3, 4};
    struct fixture f;
    uint32_t counts[MAX_EPS] = {0};
    double expect[MAX_EPS];

    fx_init(&f, XDS_LB_RING_HASH, w, 4);
    struct ing_lb *lb = ing_lb_new(&f.c);

    f.ctx.has_hash = false;
    for (int k = 0; k < NPICKS; k++)
        counts[ing_lb_pick(lb, &f.c, &f.ctx)]++;
    weight_shares(w, 4, expect);
    check_shares("ring_hash, no key", counts, expect, 4, NPICKS, 2.0);
    ing_lb_free(lb);
    fx_dispose(&f);
}

/* Endpoints 1 (unhealthy) and 2 (ejected) of four equal ones: 50% healthy is not below
 * panic_percent 50, so they never get a request and the two others split the traffic. */
TEST(unhealthy_endpoints_are_never_picked)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    static const double expect[] = {0.5, 0, 0, 0.5};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 4);
        set_flags(&f, 1, XDS_EPF_UNHEALTHY);
        set_flags(&f, 2, XDS_EPF_EJECTED);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, NPICKS);
        ASSERT_EQ(counts[1], 0);
        ASSERT_EQ(counts[2], 0);
        check_shares(policy_name(all_policies[p]), counts, expect, 4, NPICKS, 2.0);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* One healthy endpoint of four is 25% < 50%: panic mode spreads over all four, by weight. */
TEST(panic_mode_routes_to_all)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    static const double expect[] = {0.25, 0.25, 0.25, 0.25};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 4);
        set_flags(&f, 0, XDS_EPF_UNHEALTHY);
        set_flags(&f, 1, XDS_EPF_EJECTED);
        set_flags(&f, 3, XDS_EPF_UNHEALTHY | XDS_EPF_EJECTED);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, NPICKS);
        check_shares(policy_name(all_policies[p]), counts, expect, 4, NPICKS, 2.0);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* The threshold is panic_percent: 2 healthy of 4 is panic at 75, not at 50 (see above); 0
 * turns panic mode off, so a cluster without a healthy endpoint has nothing to offer. */
TEST(panic_threshold_follows_panic_percent)
{
    static const uint32_t w[] = {1, 1, 1, 1};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 4);
        f.c.panic_percent = 75;
        set_flags(&f, 1, XDS_EPF_UNHEALTHY);
        set_flags(&f, 2, XDS_EPF_UNHEALTHY);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, 10000);
        ASSERT(counts[1] > 0 && counts[2] > 0);

        f.c.panic_percent = 0;
        set_flags(&f, 0, XDS_EPF_UNHEALTHY);
        set_flags(&f, 3, XDS_EPF_EJECTED);
        for (int k = 0; k < 100; k++)
            ASSERT_EQ(ing_lb_pick(lb, &f.c, &f.ctx), -1);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* No endpoint is healthy, so panic mode is on, yet the draining ones get nothing; when every
 * endpoint drains the cluster has nothing to offer. */
TEST(draining_is_never_picked_even_in_panic)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    static const double expect[] = {0.5, 0, 0, 0.5};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 4);
        set_flags(&f, 0, XDS_EPF_UNHEALTHY);
        set_flags(&f, 1, XDS_EPF_DRAINING);
        set_flags(&f, 2, XDS_EPF_DRAINING | XDS_EPF_UNHEALTHY);
        set_flags(&f, 3, XDS_EPF_EJECTED);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, NPICKS);
        ASSERT_EQ(counts[1], 0);
        ASSERT_EQ(counts[2], 0);
        check_shares(policy_name(all_policies[p]), counts, expect, 4, NPICKS, 2.0);

        for (uint32_t i = 0; i < 4; i++)
            set_flags(&f, i, XDS_EPF_DRAINING);
        for (int k = 0; k < 100; k++)
            ASSERT_EQ(ing_lb_pick(lb, &f.c, &f.ctx), -1);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* Priority levels: only the lowest level with a healthy endpoint serves; it fails over to the
 * next level when its endpoints are all unhealthy, and back when one recovers. */
TEST(priority_levels_fail_over_and_back)
{
    static const uint32_t w[] = {1, 3, 1, 1};
    static const double lvl0[] = {0.25, 0.75, 0, 0};
    static const double lvl1[] = {0, 0, 0.5, 0.5};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 4);
        f.eps[2].priority = f.eps[3].priority = 1;
        f.c.has_priorities = true;
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, NPICKS);
        check_shares(policy_name(all_policies[p]), counts, lvl0, 4, NPICKS, 2.0);
        /* one of level 0 down: level 0 still serves (with its healthy endpoint) */
        set_flags(&f, 1, XDS_EPF_UNHEALTHY);
        run(&f, lb, counts, NPICKS);
        ASSERT_EQ(counts[2] + counts[3], 0);
        /* all of level 0 down: level 1 takes over */
        set_flags(&f, 0, XDS_EPF_EJECTED);
        run(&f, lb, counts, NPICKS);
        check_shares(policy_name(all_policies[p]), counts, lvl1, 4, NPICKS, 2.0);
        /* an endpoint of level 0 the source marks draining does not bring it back */
        set_flags(&f, 1, 0);
        f.eps[1].draining = true;
        run(&f, lb, counts, NPICKS);
        ASSERT_EQ(counts[0] + counts[1], 0);
        /* it recovers: back to level 0 */
        f.eps[1].draining = false;
        run(&f, lb, counts, NPICKS);
        ASSERT_EQ(counts[1], NPICKS);
        /* nothing healthy anywhere: the lowest level not draining serves (panic) */
        for (uint32_t i = 0; i < 4; i++)
            set_flags(&f, i, XDS_EPF_UNHEALTHY);
        run(&f, lb, counts, 1000);
        ASSERT_EQ(counts[2] + counts[3], 0);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* Panic mode weighs healthy endpoints against those still serving: 2 healthy + 1 unhealthy +
 * 3 draining (a rolling update) is 2 of 3, not 2 of 6, so the unhealthy one stays out. */
TEST(draining_endpoints_do_not_count_for_panic)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 6);
        set_flags(&f, 2, XDS_EPF_UNHEALTHY);
        for (uint32_t i = 3; i < 6; i++)
            set_flags(&f, i, XDS_EPF_DRAINING);
        struct ing_lb *lb = ing_lb_new(&f.c);

        run(&f, lb, counts, 10000);
        ASSERT(counts[0] > 0 && counts[1] > 0);
        ASSERT_EQ(counts[0] + counts[1], 10000);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* A retry excludes the endpoint that failed while there is another candidate, and goes back
 * to it when it is the only one. */
TEST(exclude_is_honoured_while_alternatives_exist)
{
    static const uint32_t w[] = {1, 3, 1};

    for (size_t p = 0; p < sizeof(all_policies); p++) {
        struct fixture f;
        uint8_t exclude[3] = {0, 1, 0};
        uint32_t counts[MAX_EPS];

        fx_init(&f, all_policies[p], w, 3);
        struct ing_lb *lb = ing_lb_new(&f.c);

        f.ctx.exclude = exclude;
        run(&f, lb, counts, 10000);
        ASSERT_EQ(counts[1], 0);
        ASSERT(counts[0] > 0 && counts[2] > 0);

        /* All tried: the exclude set is ignored rather than failing the retry. */
        memset(exclude, 1, sizeof(exclude));
        run(&f, lb, counts, 10000);
        ASSERT(counts[0] > 0 && counts[1] > 0 && counts[2] > 0);

        /* Endpoint 1 is the only healthy one left, not below panic with panic_percent 30. */
        f.c.panic_percent = 30;
        memset(exclude, 0, sizeof(exclude));
        exclude[1] = 1;
        set_flags(&f, 0, XDS_EPF_UNHEALTHY);
        set_flags(&f, 2, XDS_EPF_DRAINING);
        run(&f, lb, counts, 1000);
        ASSERT_EQ(counts[1], 1000);
        ing_lb_free(lb);
        fx_dispose(&f);
    }
}

/* Four equal endpoints with 0, 1, 2 and 3 requests in flight: the power of two choices gives
 * the k-th lightest (2 (n - k) - 1) / n^2 of the picks, 7/16, 5/16, 3/16 and 1/16. */
TEST(least_request_prefers_fewer_active)
{
    static const uint32_t w[] = {1, 1, 1, 1};
    static const double expect[] = {7 / 16.0, 5 / 16.0, 3 / 16.0, 1 / 16.0};
    struct fixture f;
    uint32_t counts[MAX_EPS];

    fx_init(&f, XDS_LB_LEAST_REQUEST, w, 4);
    for (uint32_t i = 0; i < 4; i++)
        set_active(&f, i, i);
    struct ing_lb *lb = ing_lb_new(&f.c);

    run(&f, lb, counts, NPICKS);
    check_shares("least_request, active 0,1,2,3", counts, expect, 4, NPICKS, 1.0);

    /* The busy endpoint only wins when both draws land on it. */
    set_active(&f, 0, 0);
    set_active(&f, 1, 0);
    set_active(&f, 2, 0);
    set_active(&f, 3, 10);
    run(&f, lb, counts, NPICKS);
    ASSERT(counts[3] < NPICKS / 16 + NPICKS / 100);
    ing_lb_free(lb);
    fx_dispose(&f);
}

/* Load is compared per unit of weight: 1 request on weight 1 equals 3 on weight 3 (the picks
 * follow the weights), while 0 on weight 1 beats 3 on weight 3 (the heavy one wins only when
 * drawn twice: 9/16). */
TEST(least_request_weighs_active_by_weight)
{
    static const uint32_t w[] = {1, 3};
    static const double even[] = {0.25, 0.75}, light_wins[] = {7 / 16.0, 9 / 16.0};
    struct fixture f;
    uint32_t counts[MAX_EPS];

    fx_init(&f, XDS_LB_LEAST_REQUEST, w, 2);
    struct ing_lb *lb = ing_lb_new(&f.c);

    set_active(&f, 0, 1);
    set_active(&f, 1, 3);
    run(&f, lb, counts, NPICKS);
    check_shares("least_request, 1:3 loaded 1:3", counts, even, 2, NPICKS, 1.0);
    set_active(&f, 0, 0);
    run(&f, lb, counts, NPICKS);
    check_shares("least_request, 1:3 loaded 0:3", counts, light_wins, 2, NPICKS, 1.0);
    ing_lb_free(lb);
    fx_dispose(&f);
}

/* Maps keys 0..n-1 through <lb> into <out>, as endpoint addresses (octet of 10.0.0.x). */
static void map_keys(struct fixture *f, struct ing_lb *lb, uint8_t *out, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        f->ctx.hash = key_of(k);
        f->ctx.has_hash = true;
        int idx = ing_lb_pick(lb, &f->c, &f->ctx);

        ASSERT(idx >= 0);
        out[k] = (uint8_t)atoi(strrchr(f->eps[idx].address, '.') + 1);
    }
}

TEST(ring_hash_same_key_same_endpoint)
{
    static const uint32_t w[] = {1, 2, 3, 4, 1};
    static uint8_t a[NPICKS], b[NPICKS];
    struct fixture f;

    fx_init(&f, XDS_LB_RING_HASH, w, 5);
    struct ing_lb *lb1 = ing_lb_new(&f.c), *lb2 = ing_lb_new(&f.c);

    /* Two workers, and the same worker twice, agree on every key. */
    map_keys(&f, lb1, a, NPICKS);
    map_keys(&f, lb2, b, NPICKS);
    ASSERT(memcmp(a, b, sizeof(a)) == 0);
    map_keys(&f, lb1, b, NPICKS);
    ASSERT(memcmp(a, b, sizeof(a)) == 0);
    ASSERT(ing_lb_hash_key("abc", 3) == ing_lb_hash_key("abc", 3));
    ASSERT(ing_lb_hash_key("abc", 3) != ing_lb_hash_key("abd", 3));
    ing_lb_free(lb1);
    ing_lb_free(lb2);
    fx_dispose(&f);
}

/* Adding an 11th endpoint to 10 moves keys only to the new one, about 1/11 of them. */
TEST(ring_hash_add_moves_only_to_new_endpoint)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static uint8_t before[NPICKS], after[NPICKS];
    struct fixture f10, f11;
    uint32_t moved = 0;

    fx_init(&f10, XDS_LB_RING_HASH, w, 10);
    fx_init(&f11, XDS_LB_RING_HASH, w, 11);
    struct ing_lb *lb10 = ing_lb_new(&f10.c), *lb11 = ing_lb_new(&f11.c);

    map_keys(&f10, lb10, before, NPICKS);
    map_keys(&f11, lb11, after, NPICKS);
    for (uint32_t k = 0; k < NPICKS; k++) {
        if (before[k] == after[k])
            continue;
        ASSERT_EQ(after[k], 11);
        moved++;
    }
    printf("  moved %.2f%% of keys (1/11 = %.2f%%)\n", 100.0 * moved / NPICKS, 100.0 / 11);
    ASSERT(moved <= NPICKS / 11 + NPICKS / 100);
    ASSERT(moved >= NPICKS / 11 - NPICKS / 100);
    ing_lb_free(lb10);
    ing_lb_free(lb11);
    fx_dispose(&f10);
    fx_dispose(&f11);
}

/* Removing one endpoint moves exactly the keys it had. */
TEST(ring_hash_remove_moves_only_its_keys)
{
    static const uint32_t w[] = {1, 2, 1, 1, 3, 1, 1, 1, 1, 1};
    static uint8_t before[NPICKS], after[NPICKS];
    struct fixture f10, f9;
    uint32_t moved = 0;

    /* f9 is f10 without 10.0.0.1: the same addresses from 10.0.0.2 on. */
    fx_init(&f10, XDS_LB_RING_HASH, w, 10);
    fx_init_from(&f9, XDS_LB_RING_HASH, w + 1, 9, 2);
    struct ing_lb *lb10 = ing_lb_new(&f10.c), *lb9 = ing_lb_new(&f9.c);

    map_keys(&f10, lb10, before, NPICKS);
    map_keys(&f9, lb9, after, NPICKS);
    for (uint32_t k = 0; k < NPICKS; k++) {
        if (before[k] == 1)
            moved++;
        else
            ASSERT_EQ(after[k], before[k]);
        ASSERT(after[k] != 1);
    }
    printf("  removed endpoint had %.2f%% of keys (weight share %.2f%%)\n", 100.0 * moved / NPICKS,
           100.0 / 13);
    ASSERT(moved > 0);
    ing_lb_free(lb10);
    ing_lb_free(lb9);
    fx_dispose(&f10);
    fx_dispose(&f9);
}

/* An unhealthy (or excluded) endpoint's keys go where a ring without it would send them; the
 * other keys stay put. */
TEST(ring_hash_unhealthy_falls_to_next)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static uint8_t healthy[NPICKS], failed[NPICKS], without[NPICKS], retried[NPICKS];
    struct fixture f10, f9;
    uint8_t exclude[10] = {1};
    uint32_t moved = 0;

    fx_init(&f10, XDS_LB_RING_HASH, w, 10);
    fx_init_from(&f9, XDS_LB_RING_HASH, w, 9, 2);
    struct ing_lb *lb10 = ing_lb_new(&f10.c), *lb9 = ing_lb_new(&f9.c);

    map_keys(&f10, lb10, healthy, NPICKS);
    map_keys(&f9, lb9, without, NPICKS);
    f10.ctx.exclude = exclude;
    map_keys(&f10, lb10, retried, NPICKS);
    f10.ctx.exclude = NULL;
    set_flags(&f10, 0, XDS_EPF_UNHEALTHY);
    map_keys(&f10, lb10, failed, NPICKS);
    for (uint32_t k = 0; k < NPICKS; k++) {
        ASSERT_EQ(failed[k], without[k]);
        ASSERT_EQ(retried[k], without[k]);
        if (healthy[k] != 1)
            ASSERT_EQ(failed[k], healthy[k]);
        moved += healthy[k] == 1;
    }
    ASSERT(moved > NPICKS / 20);
    ing_lb_free(lb10);
    ing_lb_free(lb9);
    fx_dispose(&f10);
    fx_dispose(&f9);
}
