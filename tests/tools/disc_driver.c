/* tests/tools/disc_driver.c -- weir-test-disc-driver: runs the discovery providers of a config
 * file on a libuv loop, without the proxy, and prints every view they publish.
 *
 *   weir-test-disc-driver [--summary] [--validate] CONFIG.json
 *
 * One JSON line per view on stdout:
 *   {"t_ms": <monotonic ms since start>, "provider": <index>, "label": "...",
 *    "view": {...} | "summary": {"clusters": N, "endpoints": N, "routes": N, "rollouts": N},
 *    "valid": true | "<errors>", "status": {"updates", "restarts", "errors": {reason: n}}}
 * --validate merges the view into the config (its arrays appended, "discovery" dropped) and
 * builds it with xds_config_parse(), as weir would, so a view that weir would refuse shows.
 * SIGTERM/SIGINT close the providers; the exit code is 0 when the loop then closes cleanly.
 * SIGUSR1 prints a status line ({"status": ...}) for each provider.
 */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/disc.h>

static struct {
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_usr1;
    struct disc_provider **providers;
    unsigned n;
    bool summary, validate;
    json_t *config; /* the config file as JSON, for --validate */
    uint64_t t0;
} g;

static json_t *status_json(struct disc_provider *p)
{
    struct disc_status st;
    json_t *errs = json_object();

    disc_provider_status(p, &st);
    for (int r = 0; r < DISC_ERR_COUNT; r++)
        if (st.errors[r] > 0)
            json_object_set_new(errs, disc_reason_name(r), json_integer((json_int_t)st.errors[r]));
    return json_pack("{s:I, s:I, s:o, s:b}", "updates", (json_int_t)st.updates, "restarts",
                     (json_int_t)st.restarts, "errors", errs, "stale", st.stale);
}

static json_t *validate(json_t *view)
{
    json_t *cfg = json_deep_copy(g.config);
    const char *key;
    json_t *arr;
    struct wr_sbuf errors = {0};

    json_object_del(cfg, "discovery");
    json_object_foreach(view, key, arr)
    {
        json_t *dst = json_object_get(cfg, key);
        if (dst == NULL)
            json_object_set_new(cfg, key, dst = json_array());
        json_array_extend(dst, arr);
    }
    char *text = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    struct xds_snapshot *s = xds_config_parse(text, strlen(text), "view", NULL, 1, &errors);
    free(text);
    if (s != NULL) {
        xds_snapshot_unref(s);
        wr_sbuf_dispose(&errors);
        return json_true();
    }
    json_t *out = json_stringn(errors.p ? errors.p : "?", errors.len);
    wr_sbuf_dispose(&errors);
    return out;
}

static json_t *summary(json_t *view)
{
    size_t eps = 0, i;
    json_t *c;

    json_array_foreach(json_object_get(view, "clusters"), i, c)
    {
        eps += json_array_size(json_object_get(c, "endpoints"));
    }
    return json_pack("{s:I, s:I, s:I, s:I}", "clusters",
                     (json_int_t)json_array_size(json_object_get(view, "clusters")), "endpoints",
                     (json_int_t)eps, "routes",
                     (json_int_t)json_array_size(json_object_get(view, "routes")), "rollouts",
                     (json_int_t)json_array_size(json_object_get(view, "rollouts")));
}

static void on_view(void *arg, struct disc_provider *p, json_t *view)
{
    struct disc_status st;
    json_t *line = json_object();

    disc_provider_status(p, &st);
    json_object_set_new(line, "t_ms", json_integer((json_int_t)((wr_mono_ns() - g.t0) / 1000000)));
    json_object_set_new(line, "provider", json_integer(disc_provider_index(p)));
    json_object_set_new(line, "label", json_string(st.label));
    if (g.validate)
        json_object_set_new(line, "valid", validate(view));
    if (g.summary)
        json_object_set_new(line, "summary", summary(view));
    else
        json_object_set(line, "view", view);
    json_object_set_new(line, "status", status_json(p));
    char *text = json_dumps(line, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(line);
    json_decref(view);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGUSR1) {
        for (unsigned i = 0; i < g.n; i++) {
            json_t *line =
                json_pack("{s:i, s:o}", "provider", (int)i, "status", status_json(g.providers[i]));
            char *text = json_dumps(line, JSON_COMPACT);
            printf("%s\n", text);
            fflush(stdout);
            free(text);
            json_decref(line);
        }
        return;
    }
    for (unsigned i = 0; i < g.n; i++)
        disc_provider_close(g.providers[i]);
    g.n = 0;
    uv_close((uv_handle_t *)&g.sig_term, NULL);
    uv_close((uv_handle_t *)&g.sig_int, NULL);
    uv_close((uv_handle_t *)&g.sig_usr1, NULL);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    struct wr_sbuf errors = {0};
    json_error_t jerr;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--summary") == 0)
            g.summary = true;
        else if (strcmp(argv[i], "--validate") == 0)
            g.validate = true;
        else if (strcmp(argv[i], "--debug") == 0)
            wr_log_max = WR_LOG_DEBUG;
        else
            path = argv[i];
    }
    if (path == NULL) {
        fprintf(stderr, "usage: weir-test-disc-driver [--summary] [--validate] CONFIG.json\n");
        return 2;
    }
    struct xds_snapshot *s = xds_config_load(path, NULL, 1, &errors);
    if (s == NULL) {
        fprintf(stderr, "%.*s", (int)errors.len, errors.p);
        return 1;
    }
    g.config = json_load_file(path, 0, &jerr);
    g.t0 = wr_mono_ns();
    uv_loop_init(&g.loop);
    signal(SIGPIPE, SIG_IGN);
    g.providers = calloc(s->n_discovery + 1, sizeof(*g.providers));
    char *dir = strdup(path);
    for (uint32_t i = 0; i < s->n_discovery; i++) {
        struct disc_provider *p =
            disc_provider_new(&g.loop, &s->discovery[i], i, dirname(dir), on_view, NULL);
        if (p == NULL || disc_provider_start(p) != 0)
            return 1;
        g.providers[g.n++] = p;
    }
    free(dir);
    uv_signal_init(&g.loop, &g.sig_term);
    uv_signal_init(&g.loop, &g.sig_int);
    uv_signal_init(&g.loop, &g.sig_usr1);
    uv_signal_start(&g.sig_term, on_signal, SIGTERM);
    uv_signal_start(&g.sig_int, on_signal, SIGINT);
    uv_signal_start(&g.sig_usr1, on_signal, SIGUSR1);
    uv_run(&g.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&g.loop);
    free(g.providers);
    json_decref(g.config);
    xds_snapshot_unref(s);
    wr_sbuf_dispose(&errors);
    if (rc != 0) {
        fprintf(stderr, "uv_loop_close: %s (handles left open)\n", uv_strerror(rc));
        return 1;
    }
    return 0;
}
