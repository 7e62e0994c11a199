/* ingress/weirctl/weirctl_step.c -- rollout step: raise green's weight step by step, watching
 * green after each step, and roll back to 0 on its own when green goes bad (INTERFACES §5).
 *
 *   weirctl rollout step NAME --steps 10,25,50,100 --interval 30s [--max-error-rate 0.01]
 *
 * For each step: set the weight, print a line, then watch for --interval, reading the rollout
 * every min(1 s, interval / 5). Green is bad when
 *   - it has no healthy endpoint (checked at every reading), or
 *   - its 5xx share over the window so far, (errors_5xx delta) / (requests delta), exceeds
 *     --max-error-rate; only once the window has requests. The deltas run from the first
 *     reading after the step was applied, so the window never mixes in the previous weight.
 * Checking the window at every reading rolls back a broken green within a second instead of
 * at the end of a long interval. Then the weight goes back to 0 (exit 1). After the last
 * step's window, exit 0.
 *
 * Also rolled back: SIGINT/SIGTERM during the run (a second one kills at once), and a target
 * that cannot be read three times in a row (green cannot be vouched for). Not rolled back: a
 * weight someone else changed meanwhile; weirctl stops and leaves their decision alone.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>

#include "weirctl.h"

#define DEFAULT_MAX_ERROR_RATE 0.01
#define POLL_MAX_MS            1000
#define POLL_MIN_MS            10
#define READ_FAILURES_MAX      3

/* Set by SIGINT/SIGTERM; the only global of weirctl, as a signal handler needs one. */
static volatile sig_atomic_t interrupted;

struct step_run {
    struct wctl_target *t;
    const char *name;
    int steps[WCTL_MAX_STEPS];
    int n_steps;
    uint64_t interval_ms, poll_ms;
    double max_rate;
    char why[512]; /* why green was judged bad */
};

/* What a window saw of green. */
struct window {
    bool have_base;
    uint64_t base_req, base_err; /* the counters at the first reading */
    uint64_t req, err;           /* deltas since then */
    const struct wctl_colour *green;
};

enum verdict {
    V_OK = 0,
    V_BAD,     /* roll back */
    V_STOPPED, /* stop without touching the weight */
};

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C ends weirctl at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int parse_plan(const struct wctl_args *a, struct step_run *run)
{
    const char *steps = a->val[WCTL_OPT_STEPS], *interval = a->val[WCTL_OPT_INTERVAL];
    const char *rate = a->val[WCTL_OPT_MAX_ERROR_RATE];

    if (steps == NULL)
        return wctl_usage_error(a, "--steps P1,P2,... is required");
    if (wctl_parse_steps(steps, run->steps, WCTL_MAX_STEPS, &run->n_steps) != 0)
        return wctl_usage_error(a,
                                "--steps %s: increasing integers from 0 to 100, "
                                "comma-separated, are expected",
                                steps);
    if (interval == NULL)
        return wctl_usage_error(a, "--interval DURATION is required");
    if (wctl_parse_duration_ms(interval, &run->interval_ms) != 0 || run->interval_ms == 0)
        return wctl_usage_error(a,
                                "--interval %s: a positive duration like 30s, 500ms or 2m "
                                "is expected",
                                interval);
    run->max_rate = DEFAULT_MAX_ERROR_RATE;
    if (rate != NULL && wctl_parse_rate(rate, &run->max_rate) != 0)
        return wctl_usage_error(a, "--max-error-rate %s: a fraction from 0 to 1 is expected", rate);
    run->poll_ms = WR_MAX(WR_MIN(POLL_MAX_MS, run->interval_ms / 5), POLL_MIN_MS);
    return 0;
}

/* Judges one reading <st> of the window <w> at step weight <weight>. */
static enum verdict judge(struct step_run *run, const struct wctl_state *st, int weight,
                          struct window *w)
{
    const struct wctl_colour *g = &st->green;

    w->green = g;
    if (st->green_weight != weight) {
        snprintf(run->why, sizeof(run->why), "green_weight is %d, not %d: someone else changed it",
                 st->green_weight, weight);
        return V_STOPPED;
    }
    if (g->has_health && g->healthy == 0) {
        snprintf(run->why, sizeof(run->why), "green (%s) has no healthy endpoint (0 of %u)",
                 g->cluster != NULL ? g->cluster : "?", g->endpoints);
        return V_BAD;
    }
    if (!g->has_counts)
        return V_OK;
    if (!w->have_base || g->requests < w->base_req || g->errors_5xx < w->base_err) {
        /* First reading, or the counters went back (weir restarted): start the window here. */
        *w = (struct window){true, g->requests, g->errors_5xx, 0, 0, g};
        return V_OK;
    }
    w->req = g->requests - w->base_req;
    w->err = g->errors_5xx - w->base_err;
    if (w->req > 0 && (double)w->err / (double)w->req > run->max_rate) {
        snprintf(run->why, sizeof(run->why),
                 "green's 5xx rate %.2f%% (%llu of %llu requests) exceeds --max-error-rate %g",
                 100.0 * (double)w->err / (double)w->req, (unsigned long long)w->err,
                 (unsigned long long)w->req, run->max_rate);
        return V_BAD;
    }
    return V_OK;
}

static void print_window(const struct window *w, double secs)
{
    const struct wctl_colour *g = w->green;

    printf("  green over %.1f s:", secs);
    if (g != NULL && g->has_counts)
        printf(" %llu requests, %llu 5xx (%.2f%%),", (unsigned long long)w->req,
               (unsigned long long)w->err,
               w->req > 0 ? 100.0 * (double)w->err / (double)w->req : 0);
    if (g != NULL && g->has_health)
        printf(" %u/%u endpoints healthy", g->healthy, g->endpoints);
    printf("\n");
}

/* Reads the rollout every poll_ms for interval_ms and judges each reading. */
static enum verdict watch(struct step_run *run, int weight)
{
    struct wctl_state st = {.sticky = -1};
    struct window w = {0};
    uint64_t start = wr_mono_ns() / 1000000, end = start + run->interval_ms, now;
    enum verdict v = V_OK;
    int failures = 0;

    for (;;) {
        if (run->t->ops->get_stats(run->t, run->name, &st) != 0) {
            if (++failures == READ_FAILURES_MAX) {
                snprintf(run->why, sizeof(run->why),
                         "its state could not be read %d times in a row", READ_FAILURES_MAX);
                v = V_BAD;
                break;
            }
        } else {
            failures = 0;
            if ((v = judge(run, &st, weight, &w)) != V_OK)
                break;
        }
        now = wr_mono_ns() / 1000000;
        if (now >= end)
            break;
        if (!wctl_sleep_ms(WR_MIN(run->poll_ms, end - now), &interrupted)) {
            snprintf(run->why, sizeof(run->why), "interrupted by a signal");
            v = V_BAD;
            break;
        }
    }
    if (v == V_OK)
        print_window(&w, (double)(wr_mono_ns() / 1000000 - start) / 1000.0);
    wctl_state_dispose(&st);
    return v;
}

/* Sets green_weight back to 0 after <run->why>; always exit code 1. */
static int roll_back(struct step_run *run)
{
    struct wctl_state st = {.sticky = -1};

    fprintf(stderr, "weirctl: rollout %s: %s; rolling back to green_weight 0\n", run->name,
            run->why);
    if (run->t->ops->set_weight(run->t, run->name, WCTL_CHANGE_ROLLBACK, 0, &st) == 0) {
        printf("rolled back: ");
        wctl_print_change(run->t, &st, false);
    } else {
        fprintf(stderr, "weirctl: rollout %s: the rollback FAILED; green may still get traffic\n",
                run->name);
    }
    wctl_state_dispose(&st);
    return 1;
}

/* Applies step <i>; 0 to go on, or the exit code. */
static int do_step(struct step_run *run, int i)
{
    struct wctl_state st = {.sticky = -1};
    int weight = run->steps[i];
    enum verdict v;

    if (run->t->ops->set_weight(run->t, run->name, WCTL_CHANGE_SET, weight, &st) != 0) {
        snprintf(run->why, sizeof(run->why), "step %d/%d could not be applied", i + 1,
                 run->n_steps);
        return i > 0 ? roll_back(run) : 1; /* before the first step nothing was changed */
    }
    printf("step %d/%d: ", i + 1, run->n_steps);
    wctl_print_change(run->t, &st, false);
    wctl_state_dispose(&st);
    v = watch(run, weight);
    if (v == V_STOPPED) {
        fprintf(stderr, "weirctl: rollout %s: %s; stopping without changing it\n", run->name,
                run->why);
        return 1;
    }
    return v == V_BAD ? roll_back(run) : 0;
}

/* Before the first step: the rollout must exist, and green must have a healthy endpoint. */
static int preflight(struct step_run *run)
{
    struct wctl_state st = {.sticky = -1};
    int rc = 0;

    if (run->t->ops->get_stats(run->t, run->name, &st) != 0)
        return 1;
    if (!st.green.has_counts)
        printf("note: the %s target has no request counters; only green's endpoint health is "
               "watched\n",
               run->t->ops->kind);
    if (st.green.has_health && st.green.healthy == 0) {
        snprintf(run->why, sizeof(run->why), "green (%s) has no healthy endpoint (0 of %u)",
                 st.green.cluster != NULL ? st.green.cluster : "?", st.green.endpoints);
        rc = roll_back(run);
    }
    wctl_state_dispose(&st);
    return rc;
}

int wctl_rollout_step(const struct wctl_args *a)
{
    struct step_run *run = wr_xcalloc(1, sizeof(*run));
    int rc;

    if ((run->name = wctl_rollout_name(a, &rc)) == NULL || (rc = parse_plan(a, run)) != 0) {
        free(run);
        return rc;
    }
    if ((run->t = wctl_target_new(a)) == NULL) {
        free(run);
        return 1;
    }
    catch_signals();
    rc = preflight(run);
    for (int i = 0; rc == 0 && i < run->n_steps; i++)
        rc = do_step(run, i);
    if (rc == 0)
        printf("rollout %s: reached green_weight %d\n", run->name, run->steps[run->n_steps - 1]);
    wctl_target_free(run->t);
    free(run);
    return rc;
}
