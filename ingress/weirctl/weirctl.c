/* ingress/weirctl/weirctl.c -- the operator's command (INTERFACES.md §1, §5): command line.
 *
 *   weirctl --version
 *   weirctl check -c FILE                      validate a config file as `weir --check` does
 *   weirctl rollout status|set|promote|rollback|step NAME ...   see weirctl_rollout.c
 *
 * Options may stand anywhere after "weirctl": the command line is split into words (the
 * command and its arguments) and options first, then the command checks which options it
 * accepts. A command is one row of `commands[]`; an option one row of `options[]`, with the
 * mask of the commands that take it.
 *
 * Exit codes: 0 done, 1 failed (or rolled back), 2 usage error (unknown command or option,
 * bad value).
 */
#include "weirctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include <weir/wr.h>
#include <weir/xds.h>

enum cmd_id {
    CMD_CHECK = 0,
    CMD_STATUS,
    CMD_SET,
    CMD_PROMOTE,
    CMD_ROLLBACK,
    CMD_STEP,
    CMD_COUNT,
};

#define CMD_BIT(id) (1u << (id))
#define ANY_CMD     (~0u)
#define ROLLOUT_CMDS                                                                               \
    (CMD_BIT(CMD_STATUS) | CMD_BIT(CMD_SET) | CMD_BIT(CMD_PROMOTE) | CMD_BIT(CMD_ROLLBACK) |       \
     CMD_BIT(CMD_STEP))

struct opt {
    const char *lname; /* "--config" */
    const char *sname; /* "-c", or NULL */
    const char *arg;   /* the value's name in help, NULL for a flag */
    unsigned cmds;     /* CMD_BIT() of the commands taking it */
    const char *help;
};

static const struct opt options[WCTL_OPT_COUNT] = {
    [WCTL_OPT_CONFIG] = {"--config", "-c", "FILE", CMD_BIT(CMD_CHECK), "the config file"},
    [WCTL_OPT_HELP] = {"--help", "-h", NULL, ANY_CMD, "show this help"},
    [WCTL_OPT_VERSION] = {"--version", NULL, NULL, ANY_CMD, "print the version"},
    [WCTL_OPT_ADMIN] = {"--admin", NULL, "URL", ROLLOUT_CMDS,
                        "weir's admin API (default http://127.0.0.1:9901)"},
    [WCTL_OPT_TOKEN_FILE] = {"--token-file", NULL, "FILE", ROLLOUT_CMDS,
                             "token: weir admin (else $WEIR_ADMIN_TOKEN) or Consul ACL "
                             "(else $CONSUL_HTTP_TOKEN)"},
    [WCTL_OPT_CONSUL] = {"--consul", NULL, "URL", ROLLOUT_CMDS,
                         "write the Consul KV key weir/rollouts/NAME instead"},
    [WCTL_OPT_KUBERNETES] = {"--kubernetes", NULL, NULL, ROLLOUT_CMDS,
                             "patch the Service's weir.io/green-weight (not in this build)"},
    [WCTL_OPT_NAMESPACE] = {"--namespace", "-n", "NS", ROLLOUT_CMDS,
                            "with --kubernetes: the Service's namespace"},
    [WCTL_OPT_KUBECONFIG] = {"--kubeconfig", NULL, "FILE", ROLLOUT_CMDS,
                             "with --kubernetes: the kubeconfig"},
    [WCTL_OPT_GREEN] = {"--green", NULL, "PERCENT", CMD_BIT(CMD_SET),
                        "green's share, an integer from 0 to 100"},
    [WCTL_OPT_STEPS] = {"--steps", NULL, "P1,P2,...", CMD_BIT(CMD_STEP),
                        "increasing green weights, e.g. 10,25,50,100"},
    [WCTL_OPT_INTERVAL] = {"--interval", NULL, "DURATION", CMD_BIT(CMD_STEP),
                           "how long to watch each step: 30s, 500ms, 2m or seconds"},
    [WCTL_OPT_MAX_ERROR_RATE] = {"--max-error-rate", NULL, "RATE", CMD_BIT(CMD_STEP),
                                 "roll back above this 5xx share of green (default 0.01)"},
    [WCTL_OPT_SAMPLE] = {"--sample", NULL, "DURATION", CMD_BIT(CMD_STATUS),
                         "time between the two readings the rates come from (default 1s)"},
    [WCTL_OPT_JSON] = {"--json", NULL, NULL,
                       CMD_BIT(CMD_STATUS) | CMD_BIT(CMD_SET) | CMD_BIT(CMD_PROMOTE) |
                           CMD_BIT(CMD_ROLLBACK),
                       "machine-readable output"},
};

struct cmd {
    const char *name;
    const char *sub; /* the second word, or NULL */
    const char *usage;
    const char *help;
    int (*run)(const struct wctl_args *a);
};

static int run_check(const struct wctl_args *a);

static const struct cmd commands[CMD_COUNT] = {
    [CMD_CHECK] = {"check", NULL, "weirctl check -c FILE", "validate a config file", run_check},
    [CMD_STATUS] = {"rollout", "status", "weirctl rollout status NAME [--sample 1s] [--json]",
                    "weights, request and 5xx rates, healthy endpoints per colour",
                    wctl_rollout_status},
    [CMD_SET] = {"rollout", "set", "weirctl rollout set NAME --green PERCENT",
                 "send PERCENT of the requests to green", wctl_rollout_set},
    [CMD_PROMOTE] = {"rollout", "promote", "weirctl rollout promote NAME",
                     "send every request to green", wctl_rollout_promote},
    [CMD_ROLLBACK] = {"rollout", "rollback", "weirctl rollout rollback NAME",
                      "send every request to blue", wctl_rollout_rollback},
    [CMD_STEP] = {"rollout", "step",
                  "weirctl rollout step NAME --steps 10,25,50,100 --interval 30s "
                  "[--max-error-rate 0.01]",
                  "raise green step by step; roll back to 0 when green fails", wctl_rollout_step},
};

/* The command <a> names, or -1 (unknown or incomplete). */
static int find_command(const struct wctl_args *a)
{
    for (int i = 0; i < CMD_COUNT; i++) {
        const struct cmd *c = &commands[i];
        if (a->n_words == 0 || strcmp(c->name, a->words[0]) != 0)
            continue;
        if (c->sub == NULL || (a->n_words > 1 && strcmp(c->sub, a->words[1]) == 0))
            return i;
    }
    return -1;
}

static void usage(FILE *f, const char *group)
{
    fprintf(f, "usage: weirctl [--version] [--help] COMMAND [ARGS]\n\ncommands:\n");
    for (int i = 0; i < CMD_COUNT; i++)
        if (group == NULL || strcmp(commands[i].name, group) == 0)
            fprintf(f, "  %s\n", commands[i].usage);
    fprintf(f, "\ntargets of the rollout commands (options may stand anywhere):\n"
               "  --admin URL [--token-file FILE]     one weir (default http://127.0.0.1:9901)\n"
               "  --consul URL [--token-file FILE]    the Consul KV key weir/rollouts/NAME\n"
               "  --kubernetes [--namespace NS] [--kubeconfig FILE]\n"
               "\n`weirctl COMMAND --help` lists a command's options.\n"
               "Exit codes: 0 done, 1 failed or rolled back, 2 usage error.\n");
}

static void command_help(FILE *f, int id)
{
    fprintf(f, "usage: %s\n\n%s.\n\noptions:\n", commands[id].usage, commands[id].help);
    for (int o = 0; o < WCTL_OPT_COUNT; o++) {
        const struct opt *op = &options[o];
        char left[64];
        if (!(op->cmds & CMD_BIT(id)) || o == WCTL_OPT_VERSION)
            continue;
        snprintf(left, sizeof(left), "%s%s%s%s%s", op->sname ? op->sname : "",
                 op->sname ? ", " : "", op->lname, op->arg ? " " : "", op->arg ? op->arg : "");
        fprintf(f, "  %-28s %s\n", left, op->help);
    }
}

int wctl_fail(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout); /* keeps the order of lines when both go to one terminal or file */
    fprintf(stderr, "weirctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return -1;
}

int wctl_usage_error(const struct wctl_args *a, const char *fmt, ...)
{
    va_list ap;
    int id = a != NULL ? find_command(a) : -1;

    fprintf(stderr, "weirctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (id >= 0)
        fprintf(stderr, "usage: %s\n", commands[id].usage);
    else
        usage(stderr, a != NULL && a->n_words > 0 && strcmp(a->words[0], "rollout") == 0 ? "rollout"
                                                                                         : NULL);
    return WCTL_EXIT_USAGE;
}

/* Matches <arg> against the option table: "--config FILE", "--config=FILE", "-c FILE". */
static int find_option(const char *arg, const char **inline_val)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq != NULL && arg[1] == '-' ? (size_t)(eq - arg) : strlen(arg);

    *inline_val = n < strlen(arg) ? eq + 1 : NULL;
    for (int i = 0; i < WCTL_OPT_COUNT; i++) {
        const struct opt *o = &options[i];
        if ((strlen(o->lname) == n && strncmp(o->lname, arg, n) == 0) ||
            (o->sname != NULL && strcmp(o->sname, arg) == 0))
            return i;
    }
    return -1;
}

/* Splits argv into words and options; returns 0 or a usage error exit code. */
static int parse_args(int argc, char **argv, struct wctl_args *a)
{
    bool only_words = false;

    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val;
        if (only_words || arg[0] != '-' || arg[1] == '\0') {
            if (a->n_words == WCTL_MAX_WORDS)
                return wctl_usage_error(NULL, "too many arguments: %s", arg);
            a->words[a->n_words++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_words = true;
            continue;
        }
        int id = find_option(arg, &val);
        if (id < 0)
            return wctl_usage_error(NULL, "unknown option %s", arg);
        if (options[id].arg != NULL && val == NULL) {
            if (i + 1 >= argc)
                return wctl_usage_error(NULL, "option %s needs a value", arg);
            val = argv[++i];
        } else if (options[id].arg == NULL && val != NULL) {
            return wctl_usage_error(NULL, "option %s takes no value", arg);
        }
        if (a->val[id] != NULL)
            return wctl_usage_error(NULL, "option %s given twice", options[id].lname);
        a->val[id] = options[id].arg != NULL ? val : "";
    }
    return 0;
}

static int run_check(const struct wctl_args *a)
{
    struct wr_sbuf errors = {0};
    const char *file = a->val[WCTL_OPT_CONFIG];

    if (file == NULL)
        return wctl_usage_error(a, "check: the config file is required (-c FILE)");
    if (a->n_words > 1)
        return wctl_usage_error(a, "check: unexpected argument %s", a->words[1]);
    struct xds_snapshot *s = xds_config_load(file, NULL, 1, &errors);
    if (s == NULL) {
        fputs(errors.p != NULL ? errors.p : "invalid config\n", stderr);
        wr_sbuf_dispose(&errors);
        return 1;
    }
    xds_snapshot_unref(s);
    printf("%s: ok\n", file);
    return 0;
}

/* Reports the command <a> names as unknown, or incomplete ("rollout" alone). */
static int unknown_command(const struct wctl_args *a)
{
    if (strcmp(a->words[0], "rollout") != 0)
        return wctl_usage_error(a, "unknown command %s", a->words[0]);
    if (a->val[WCTL_OPT_HELP] != NULL && a->n_words == 1) {
        usage(stdout, "rollout");
        return 0;
    }
    if (a->n_words == 1)
        return wctl_usage_error(a, "rollout: a sub-command is required");
    return wctl_usage_error(a, "unknown command rollout %s", a->words[1]);
}

/* Resolves the command of <a>, checks its options, and runs it (or shows its help). */
static int dispatch(struct wctl_args *a)
{
    int id = find_command(a);

    if (id < 0)
        return unknown_command(a);
    if (a->val[WCTL_OPT_HELP] != NULL) {
        command_help(stdout, id);
        return 0;
    }
    for (int o = 0; o < WCTL_OPT_COUNT; o++)
        if (a->val[o] != NULL && !(options[o].cmds & CMD_BIT(id)))
            return wctl_usage_error(a, "option %s does not apply to this command",
                                    options[o].lname);
    a->n_cmd_words = commands[id].sub != NULL ? 2 : 1;
    if (options[WCTL_OPT_ADMIN].cmds & CMD_BIT(id)) {
        int rc = wctl_target_check_args(a);
        if (rc != 0)
            return rc;
    }
    return commands[id].run(a);
}

int main(int argc, char **argv)
{
    struct wctl_args a;
    int rc = parse_args(argc, argv, &a);

    if (rc != 0)
        return rc;
    /* Run as the kubectl plugin (`kubectl weir ...`), the target is the cluster kubectl talks
     * to unless another one is named. */
    const char *base = strrchr(argv[0], '/');
    base = base != NULL ? base + 1 : argv[0];
    if (strcmp(base, "kubectl-weir") == 0 && a.val[WCTL_OPT_ADMIN] == NULL &&
        a.val[WCTL_OPT_CONSUL] == NULL && a.val[WCTL_OPT_KUBERNETES] == NULL)
        a.val[WCTL_OPT_KUBERNETES] = "";
    if (a.val[WCTL_OPT_VERSION] != NULL) {
        printf("weirctl %s\n", WEIR_VERSION);
        return 0;
    }
    if (a.n_words == 0 && a.val[WCTL_OPT_HELP] != NULL) {
        usage(stdout, NULL);
        return 0;
    }
    if (a.n_words == 0)
        return wctl_usage_error(NULL, "a command is required");
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines of `step` show up as they happen */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "weirctl: cannot initialise libcurl\n");
        return 1;
    }
    rc = dispatch(&a);
    curl_global_cleanup();
    return rc;
}
