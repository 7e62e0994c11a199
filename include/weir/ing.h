/* include/weir/ing.h -- the proxy process: control thread, workers, admin API (ingress/).
 *
 * main.c parses the command line and hands over to ing_server_run(), which owns the control
 * loop (signals, reload, admin API, access-log writer) and the worker threads.
 */
#ifndef WEIR_ING_H
#define WEIR_ING_H

#include <stdbool.h>
#include <stdint.h>

#include <weir/xds.h>

struct ing_server;

struct ing_server_opts {
    const char *config_path;
};

/* Runs weir until it has drained after SIGTERM/SIGINT. Returns the process exit code. */
int ing_server_run(const struct ing_server_opts *opts);

/* ---- admin API (ingress/ing_admin.c), control thread only ---- */

struct ing_admin;

enum ing_state {
    ING_STATE_STARTING = 0,
    ING_STATE_READY,
    ING_STATE_DRAINING,
};

struct ing_admin_hooks {
    /* The snapshot the workers serve (borrowed; valid during the call). */
    struct xds_snapshot *(*snapshot)(void *arg);
    enum ing_state (*state)(void *arg);
    /* Sets rollout <name>'s green weight (0-100) by publishing a new snapshot. Returns the new
     * snapshot version (> 0), 0 when there is no such rollout, -1 with *err on failure. */
    int64_t (*set_rollout)(void *arg, const char *name, unsigned green_weight, const char **err);
    /* The lowest snapshot version all workers serve (answer a change once it reached them). */
    uint64_t (*served_version)(void *arg);
    /* Optional: true (with a static reason) when /ready must answer 503 although the state is
     * READY (a discovery provider is stale or has not synced yet). */
    bool (*not_ready)(void *arg, const char **why);
    /* Optional: appends more metrics (discovery) to /metrics. */
    void (*extra_metrics)(void *arg, struct wr_sbuf *b);
    void *arg;
};

struct uv_loop_s;

/* Binds the admin listener of <s> on <loop>. Returns NULL with *err (static text) on failure. */
struct ing_admin *ing_admin_start(struct uv_loop_s *loop, const struct xds_snapshot *s,
                                  const struct ing_admin_hooks *hooks, const char **err);

/* Stops accepting and closes every admin connection; frees itself once all handles closed. */
void ing_admin_close(struct ing_admin *a);

/* Response bodies, exposed for tests: each returns a malloc'd NUL-terminated string. */
char *ing_admin_clusters_json(struct xds_snapshot *s);
char *ing_admin_metrics_text(struct xds_snapshot *s);

#endif /* WEIR_ING_H */
