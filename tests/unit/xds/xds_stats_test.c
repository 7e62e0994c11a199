/* tests/unit/xds/xds_stats_test.c -- the shared counters registry (xds/xds_stats.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>
#include <weir/xds.h>

#include "test.h"

static uint32_t refs_ep(struct xds_ep_state *st)
{
    return atomic_load(&st->refs);
}

static uint32_t refs_k(struct xds_counters *k)
{
    return atomic_load(&k->refs);
}

TEST(ep_same_key_same_entry)
{
    struct xds_stats_reg *r = xds_stats_reg_new(3);
    struct xds_ep_state *a = xds_stats_ep(r, "c|127.0.0.1:1");
    struct xds_ep_state *b = xds_stats_ep(r, "c|127.0.0.1:1");
    struct xds_ep_state *other = xds_stats_ep(r, "c|127.0.0.1:2");

    ASSERT(a == b);
    ASSERT(a != other);
    ASSERT_EQ(refs_ep(a), 3); /* registry + two */
    ASSERT_STREQ(a->key, "c|127.0.0.1:1");
    ASSERT_EQ(a->nworkers, 3);
    ASSERT_EQ(atomic_load(&a->flags), 0);
    for (unsigned i = 0; i < 3; i++) {
        ASSERT(wr_list_empty(&a->w[i].idle));
        ASSERT_EQ(a->w[i].n_idle, 0);
        ASSERT_EQ(xds_ctr_get(&a->w[i].requests), 0);
    }
    ASSERT(xds_ep_state_ref(a) == a);
    ASSERT_EQ(refs_ep(a), 4);
    xds_ep_state_unref(a);
    xds_ep_state_unref(a);
    xds_ep_state_unref(b);
    xds_ep_state_unref(other);
    xds_ep_state_unref(NULL);
    xds_stats_reg_free(r);
}

TEST(sweep_frees_only_unreferenced)
{
    struct xds_stats_reg *r = xds_stats_reg_new(2);
    struct xds_ep_state *held = xds_stats_ep(r, "c|held");
    struct xds_ep_state *dropped = xds_stats_ep(r, "c|dropped");
    struct xds_counters *kh = xds_stats_counters(r, "rc|r|held", 5);
    struct xds_counters *kd = xds_stats_counters(r, "rc|r|dropped", 5);

    xds_ctr_add(&held->w[1].requests, 7);
    xds_ctr_add(&dropped->w[0].requests, 9);
    xds_ctr_add(&xds_counters_w(kh, 1)[2], 4);
    xds_ctr_add(&xds_counters_w(kd, 0)[0], 3);
    xds_ep_state_unref(dropped);
    xds_counters_unref(kd);
    ASSERT_EQ(refs_ep(held), 2);

    /* Before a sweep, a dropped entry is still the registry's: same counters. */
    dropped = xds_stats_ep(r, "c|dropped");
    ASSERT_EQ(xds_ctr_get(&dropped->w[0].requests), 9);
    xds_ep_state_unref(dropped);

    xds_stats_reg_sweep(r);
    /* Held entries survive with their counters ... */
    struct xds_ep_state *again = xds_stats_ep(r, "c|held");
    ASSERT(again == held);
    ASSERT_EQ(xds_ctr_get(&again->w[1].requests), 7);
    struct xds_counters *kagain = xds_stats_counters(r, "rc|r|held", 5);
    ASSERT(kagain == kh);
    ASSERT_EQ(xds_counters_sum(kagain, 2), 4);
    /* ... swept ones come back fresh. */
    dropped = xds_stats_ep(r, "c|dropped");
    ASSERT_EQ(xds_ctr_get(&dropped->w[0].requests), 0);
    ASSERT_EQ(refs_ep(dropped), 2);
    kd = xds_stats_counters(r, "rc|r|dropped", 5);
    ASSERT_EQ(xds_counters_sum(kd, 0), 0);

    xds_ep_state_unref(again);
    xds_ep_state_unref(held);
    xds_ep_state_unref(dropped);
    xds_counters_unref(kagain);
    xds_counters_unref(kh);
    xds_counters_unref(kd);
    xds_stats_reg_free(r);
}

TEST(entries_outlive_registry)
{
    struct xds_stats_reg *r = xds_stats_reg_new(1);
    struct xds_ep_state *st = xds_stats_ep(r, "c|a");
    struct xds_counters *k = xds_stats_counters(r, "hist|r", 16);

    xds_stats_reg_free(r);
    ASSERT_EQ(refs_ep(st), 1);
    ASSERT_EQ(refs_k(k), 1);
    xds_ctr_add(&st->w[0].failures, 1);
    xds_ctr_add(&xds_counters_w(k, 0)[15], 1);
    ASSERT_EQ(xds_counters_sum(k, 15), 1);
    xds_ep_state_unref(st); /* frees: LeakSanitizer checks */
    xds_counters_unref(k);
}

TEST(per_worker_alignment)
{
    struct xds_stats_reg *r = xds_stats_reg_new(5);
    struct xds_ep_state *st = xds_stats_ep(r, "c|a");
    const unsigned counts[] = {1, 2, 5, 8, 9, 16, 17};

    ASSERT_EQ(sizeof(struct xds_ep_wstate) % 64, 0);
    for (unsigned i = 0; i < 5; i++)
        ASSERT_EQ((uintptr_t)&st->w[i] % 64, 0);
    for (size_t j = 0; j < WR_ARRAY_LEN(counts); j++) {
        char key[32];
        snprintf(key, sizeof(key), "k|%u", counts[j]);
        struct xds_counters *k = xds_stats_counters(r, key, counts[j]);
        ASSERT_EQ(k->ncounters, counts[j]);
        ASSERT_EQ(k->nworkers, 5);
        ASSERT(k->stride >= counts[j]);
        ASSERT_EQ(k->stride % 8, 0); /* whole cache lines per worker */
        for (unsigned w = 0; w < 5; w++)
            ASSERT_EQ((uintptr_t)xds_counters_w(k, w) % 64, 0);
        /* The last counter of the last worker is inside the allocation (ASan checks). */
        xds_ctr_add(&xds_counters_w(k, 4)[counts[j] - 1], 1);
        xds_counters_unref(k);
    }
    xds_ep_state_unref(st);
    xds_stats_reg_free(r);
}

TEST(counters_sum)
{
    struct xds_stats_reg *r = xds_stats_reg_new(4);
    struct xds_counters *k = xds_stats_counters(r, "rollout|x", 10);

    for (unsigned w = 0; w < 4; w++)
        for (unsigned i = 0; i < 10; i++)
            xds_ctr_add(&xds_counters_w(k, w)[i], (w + 1) * 100 + i);
    for (unsigned i = 0; i < 10; i++)
        ASSERT_EQ(xds_counters_sum(k, i), 1000 + 4 * i);
    /* Counters of different workers do not alias. */
    ASSERT_EQ(xds_ctr_get(&xds_counters_w(k, 2)[9]), 309);
    xds_counters_unref(k);
    xds_stats_reg_free(r);
}

TEST(kinds_do_not_collide)
{
    struct xds_stats_reg *r = xds_stats_reg_new(1);
    /* An endpoint key and a counters key spelled alike are different entries. */
    struct xds_ep_state *st = xds_stats_ep(r, "listener|web");
    struct xds_counters *k = xds_stats_counters(r, "listener|web", 2);

    ASSERT((void *)st != (void *)k);
    ASSERT_EQ(refs_ep(st), 2);
    ASSERT_EQ(refs_k(k), 2);
    /* A counters key asked with another size gets a new block; the old holder keeps its own. */
    struct xds_counters *k3 = xds_stats_counters(r, "listener|web", 3);
    ASSERT(k3 != k);
    ASSERT_EQ(k3->ncounters, 3);
    ASSERT_EQ(refs_k(k), 1);
    xds_counters_unref(k);
    xds_counters_unref(k3);
    xds_ep_state_unref(st);
    xds_stats_reg_free(r);
}

TEST(many_keys)
{
    struct xds_stats_reg *r = xds_stats_reg_new(2);

    enum { N = 3000 };
    struct xds_ep_state **eps = calloc(N, sizeof(*eps));
    char key[32];

    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "c|10.0.%d.%d:80", i / 256, i % 256);
        eps[i] = xds_stats_ep(r, key);
        xds_ctr_add(&eps[i]->w[1].requests, (uint64_t)i);
    }
    for (int i = 0; i < N; i += 2) /* drop the even ones */
        xds_ep_state_unref(eps[i]);
    xds_stats_reg_sweep(r);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "c|10.0.%d.%d:80", i / 256, i % 256);
        struct xds_ep_state *st = xds_stats_ep(r, key);
        ASSERT_STREQ(st->key, key);
        ASSERT_EQ(xds_ctr_get(&st->w[1].requests), i % 2 ? (uint64_t)i : 0);
        xds_ep_state_unref(st);
        if (i % 2)
            xds_ep_state_unref(eps[i]);
    }
    free(eps);
    xds_stats_reg_free(r);
}

/* Snapshots hold references: counters and health survive a reload, and are swept once no
 * snapshot links them any more. */
static struct xds_snapshot *load(struct xds_stats_reg *reg, const char *eps, uint64_t version)
{
    char *json = wr_xasprintf("{\"listeners\": [{\"name\": \"web\", \"address\": "
                              "\"127.0.0.1:8080\"}], \"clusters\": [{\"name\": \"c\", "
                              "\"endpoints\": [%s]}], \"routes\": [{\"name\": \"r\", "
                              "\"cluster\": \"c\"}]}",
                              eps);
    struct wr_sbuf e = {0};
    struct xds_snapshot *s = xds_config_parse(json, strlen(json), "t.json", reg, version, &e);

    if (s == NULL)
        FAIL("%s", e.p);
    free(json);
    return s;
}

TEST(snapshots_share_and_release_entries)
{
    struct xds_stats_reg *reg = xds_stats_reg_new(2);
    struct xds_snapshot *s1 =
        load(reg, "{\"address\": \"127.0.0.1:1\"}, {\"address\": \"127.0.0.1:2\"}", 1);
    struct xds_ep_state *st1 = s1->clusters[0]->eps[0].st;

    ASSERT_EQ(refs_ep(st1), 2);
    atomic_store(&st1->flags, XDS_EPF_UNHEALTHY);
    xds_ctr_add(&st1->w[0].requests, 5);
    xds_ctr_add(&xds_counters_w(s1->routes[0].hist, 1)[XDS_HIST_BUCKETS + 1], 1);

    /* Reload without the second endpoint: the first keeps its state. */
    struct xds_snapshot *s2 = load(reg, "{\"address\": \"127.0.0.1:1\"}", 2);
    ASSERT(s2->clusters[0]->eps[0].st == st1);
    ASSERT_EQ(refs_ep(st1), 3);
    ASSERT_EQ(atomic_load(&st1->flags), XDS_EPF_UNHEALTHY);
    ASSERT_EQ(xds_ctr_get(&s2->clusters[0]->eps[0].st->w[0].requests), 5);
    ASSERT(s2->routes[0].hist == s1->routes[0].hist);
    ASSERT_EQ(xds_counters_sum(s2->routes[0].hist, XDS_HIST_BUCKETS + 1), 1);
    struct xds_ep_state *gone = xds_ep_state_ref(s1->clusters[0]->eps[1].st);

    xds_snapshot_ref(s1);
    xds_snapshot_unref(s1); /* still held once */
    ASSERT_EQ(refs_ep(st1), 3);
    xds_snapshot_unref(s1);
    ASSERT_EQ(refs_ep(st1), 2);
    ASSERT_EQ(refs_ep(gone), 2); /* registry + our test reference */
    xds_ep_state_unref(gone);
    xds_stats_reg_sweep(reg);
    /* The removed endpoint was swept: asking again yields fresh state. */
    struct xds_ep_state *fresh = xds_stats_ep(reg, "c|127.0.0.1:2");
    ASSERT_EQ(xds_ctr_get(&fresh->w[0].requests), 0);
    ASSERT_EQ(refs_ep(fresh), 2);
    xds_ep_state_unref(fresh);
    ASSERT_EQ(refs_ep(st1), 2);

    xds_snapshot_unref(s2);
    xds_snapshot_unref(NULL);
    xds_stats_reg_sweep(reg);
    xds_stats_reg_free(reg);
}
