/* ingress/weirctl/weirctl.h -- what the files of weirctl share (prefix wctl_).
 *
 * weirctl.c            command line: options, commands, help, `check`
 * weirctl_parse.c      option values: percent, duration, steps, error rate (pure functions)
 * weirctl_http.c       one libcurl easy handle per target, answers and error messages
 * weirctl_target.c     picks the target from the options (--admin, --consul, --kubernetes)
 * weirctl_target_admin.c   the weir admin API (INTERFACES.md §3)
 * weirctl_target_consul.c  the Consul KV key weir/rollouts/NAME (§4b)
 * weirctl_target_kube.c    the weir.io/green-weight annotation of a Service (§4, §5)
 * weirctl_consul_kv.c  that key's JSON and base64 (pure functions)
 * weirctl_rollout.c    rollout status / set / promote / rollback
 * weirctl_step.c       rollout step: raise the weight step by step, watch, roll back
 *
 * Errors: a function that fails prints one line "weirctl: <what>: <why>" to stderr and returns
 * -1; its caller adds nothing and exits 1. Usage errors exit 2 (WCTL_EXIT_USAGE).
 */
#ifndef WEIRCTL_H
#define WEIRCTL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define WCTL_EXIT_USAGE 2
#define WCTL_MAX_WORDS  8

/* ---- command line ------------------------------------------------------------------------ */

enum wctl_opt {
    WCTL_OPT_CONFIG = 0,
    WCTL_OPT_HELP,
    WCTL_OPT_VERSION,
    WCTL_OPT_ADMIN,
    WCTL_OPT_TOKEN_FILE,
    WCTL_OPT_CONSUL,
    WCTL_OPT_KUBERNETES,
    WCTL_OPT_NAMESPACE,
    WCTL_OPT_KUBECONFIG,
    WCTL_OPT_GREEN,
    WCTL_OPT_STEPS,
    WCTL_OPT_INTERVAL,
    WCTL_OPT_MAX_ERROR_RATE,
    WCTL_OPT_SAMPLE,
    WCTL_OPT_JSON,
    WCTL_OPT_COUNT,
};

/* The parsed command line: words (the command, its sub-command and positional arguments) and
 * options, which may stand anywhere after "weirctl". */
struct wctl_args {
    const char *words[WCTL_MAX_WORDS];
    int n_words;
    int n_cmd_words;                 /* how many of <words> name the command (1 or 2) */
    const char *val[WCTL_OPT_COUNT]; /* the option's value, "" for a flag; NULL: absent */
};

/* Prints "weirctl: <message>" and the command's usage to stderr; returns WCTL_EXIT_USAGE. */
int wctl_usage_error(const struct wctl_args *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "weirctl: <message>" to stderr; returns -1. */
int wctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- option values (weirctl_parse.c) ----------------------------------------------------- */

#define WCTL_MAX_STEPS 101

/* Each returns 0, or -1 when <s> is not a valid value (the caller reports the usage error). */
int wctl_parse_percent(const char *s, int *out);                      /* an integer 0-100 */
int wctl_parse_duration_ms(const char *s, uint64_t *out_ms);          /* 30s, 500ms, 2m, 30 */
int wctl_parse_rate(const char *s, double *out);                      /* a fraction 0-1 */
int wctl_parse_steps(const char *s, int *steps, int max, int *n_out); /* "10,25,50,100" */

/* ---- HTTP (weirctl_http.c) --------------------------------------------------------------- */

struct wctl_http;

struct wctl_resp {
    long status;
    char *body; /* NUL-terminated; the caller frees it with wctl_resp_dispose() */
    size_t len;
};

/* A client sending <header> (e.g. "Authorization: Bearer x", or NULL) with every request. */
struct wctl_http *wctl_http_new(const char *header);
void wctl_http_free(struct wctl_http *h);

/* Sends <method> <url> with <body> (JSON, or NULL). Returns 0 with <r> filled (any status),
 * or -1 (reported) when no answer came. */
int wctl_http_do(struct wctl_http *h, const char *method, const char *url, const char *body,
                 struct wctl_resp *r);
void wctl_resp_dispose(struct wctl_resp *r);

/* The reason to show for a failed answer: weir's {"error": "..."}, else the first line of the
 * body, else the status text. Writes into <buf> and returns it. */
const char *wctl_resp_reason(const struct wctl_resp *r, char *buf, size_t len);

/* <s> percent-encoded for a URL path segment; the caller frees it. */
char *wctl_url_escape(const char *s);

/* ---- targets (weirctl_target*.c) --------------------------------------------------------- */

/* What a target knows of one colour of a rollout. Fields it cannot tell are flagged absent. */
struct wctl_colour {
    char *cluster;       /* weir cluster (admin) or Consul service */
    bool has_counts;     /* requests/errors_5xx are known */
    uint64_t requests;   /* answered requests, 5xx included (cumulative counter) */
    uint64_t errors_5xx; /* their 5xx subset */
    bool has_health;     /* healthy/endpoints are known */
    unsigned healthy, endpoints;
};

struct wctl_state {
    char *name;
    int green_weight;
    int sticky;    /* 1, 0, or -1 when the target does not say */
    char *version; /* weir's config version, or the KV ModifyIndex; may be NULL */
    struct wctl_colour blue, green;
};

void wctl_state_dispose(struct wctl_state *st);

/* How a weight is changed: the admin API has a dedicated call for promote and rollback. */
enum wctl_change {
    WCTL_CHANGE_SET = 0,
    WCTL_CHANGE_PROMOTE,
    WCTL_CHANGE_ROLLBACK,
};

struct wctl_target;

/* A target is one way of reading and changing rollouts. Every function returns 0 or -1
 * (reported), and fills <st> (disposed first, so it may be reused) on success. */
struct wctl_target_ops {
    const char *kind;          /* "admin", "consul" */
    const char *version_label; /* what st->version is: "config version", "KV index" */
    /* Rollout <name>: its colours' clusters, the weight, the version. */
    int (*get_state)(struct wctl_target *t, const char *name, struct wctl_state *st);
    /* As get_state, plus whatever counters and endpoint health the target can see. */
    int (*get_stats)(struct wctl_target *t, const char *name, struct wctl_state *st);
    /* Applies <how> (<weight> for WCTL_CHANGE_SET); <st> is the rollout afterwards. */
    int (*set_weight)(struct wctl_target *t, const char *name, enum wctl_change how, int weight,
                      struct wctl_state *st);
    void (*free)(struct wctl_target *t);
};

struct wctl_target {
    const struct wctl_target_ops *ops;
    char *where; /* for messages: "weir admin http://127.0.0.1:9901" */
};

/* Checks the target options of <a> (exclusive, and those that need another); returns 0 or a
 * usage error exit code (reported). */
int wctl_target_check_args(const struct wctl_args *a);

/* Builds the target the options of <a> name; NULL (reported) on failure. */
struct wctl_target *wctl_target_new(const struct wctl_args *a);
void wctl_target_free(struct wctl_target *t);

/* Reads a token from <path> (surrounding white space removed); NULL (reported) on failure. */
char *wctl_read_token(const char *path);

struct wctl_target *wctl_target_admin_new(const char *url, const char *token);
struct wctl_target *wctl_target_consul_new(const char *url, const char *token);
/* The Service <name>'s weir.io/ annotations through the Kubernetes API (weirctl_target_kube.c):
 * namespace <ns> (NULL: the context's), kubeconfig <kubeconfig> (NULL: $KUBECONFIG,
 * ~/.kube/config, else in-cluster). NULL (reported) when the settings cannot be read. */
struct wctl_target *wctl_target_kube_new(const char *ns, const char *kubeconfig);

/* ---- the rollout commands (weirctl_rollout.c, weirctl_step.c) ---------------------------- */

int wctl_rollout_status(const struct wctl_args *a);
int wctl_rollout_set(const struct wctl_args *a);
int wctl_rollout_promote(const struct wctl_args *a);
int wctl_rollout_rollback(const struct wctl_args *a);
int wctl_rollout_step(const struct wctl_args *a);

/* Validates the positional NAME of a rollout command; returns it, or NULL after a usage error
 * (*rc = WCTL_EXIT_USAGE). */
const char *wctl_rollout_name(const struct wctl_args *a, int *rc);

/* Prints "rollout NAME: green_weight N, <version label> V" (or the JSON object with --json). */
void wctl_print_change(const struct wctl_target *t, const struct wctl_state *st, bool json);

/* Sleeps <ms> milliseconds; returns early (false) when <stop> becomes non-zero. */
bool wctl_sleep_ms(uint64_t ms, volatile sig_atomic_t *stop);

#endif /* WEIRCTL_H */
