/* ingress/weirctl/weirctl.c -- the operator's command (INTERFACES.md §1, §5).
 *
 *   weirctl --version
 *   weirctl check -c FILE          validate a config file as `weir --check` does
 *
 * Options may stand anywhere after "weirctl": the command line is split into words (the
 * command and its arguments) and options first, then the command checks which options it
 * accepts. A command is one row of `commands[]`; an option one row of `options[]`, with the
 * mask of the commands that take it, so that the rollout commands slot in as new rows.
 *
 * Exit codes: 0 done, 1 failed, 2 usage error (unknown command or option, bad value).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>
#include <weir/xds.h>

#define EXIT_USAGE 2
#define MAX_WORDS  8

enum opt_id {
    OPT_CONFIG = 0,
    OPT_HELP,
    OPT_VERSION,
    OPT_COUNT,
};

/* Commands, as bits for the option masks. */
enum cmd_id {
    CMD_CHECK = 0,
    CMD_COUNT,
};

#define CMD_BIT(id) (1u << (id))
#define ANY_CMD     (~0u)

struct opt {
    const char *lname; /* "--config" */
    const char *sname; /* "-c", or NULL */
    bool has_arg;
    unsigned cmds; /* CMD_BIT() of the commands taking it */
};

static const struct opt options[OPT_COUNT] = {
    [OPT_CONFIG] = {"--config", "-c", true, CMD_BIT(CMD_CHECK)},
    [OPT_HELP] = {"--help", "-h", false, ANY_CMD},
    [OPT_VERSION] = {"--version", NULL, false, ANY_CMD},
};

/* The parsed command line. */
struct args {
    const char *words[MAX_WORDS]; /* the command and its positional arguments */
    int n_words;
    const char *val[OPT_COUNT]; /* option value, or "" for a flag that is set; NULL: absent */
};

struct cmd {
    const char *name;
    const char *usage;
    int (*run)(const struct args *a);
};

static int run_check(const struct args *a);

static const struct cmd commands[CMD_COUNT] = {
    [CMD_CHECK] = {"check", "weirctl check -c FILE", run_check},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: weirctl [--version] [--help] COMMAND [ARGS]\n\ncommands:\n");
    for (int i = 0; i < CMD_COUNT; i++)
        fprintf(f, "  %s\n", commands[i].usage);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "weirctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return EXIT_USAGE;
}

/* Matches <arg> against the option table: "--config FILE", "--config=FILE", "-c FILE". */
static int find_option(const char *arg, const char **inline_val)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq != NULL && arg[1] == '-' ? (size_t)(eq - arg) : strlen(arg);

    *inline_val = n < strlen(arg) ? eq + 1 : NULL;
    for (int i = 0; i < OPT_COUNT; i++) {
        const struct opt *o = &options[i];
        if ((strlen(o->lname) == n && strncmp(o->lname, arg, n) == 0) ||
            (o->sname != NULL && strcmp(o->sname, arg) == 0))
            return i;
    }
    return -1;
}

/* Splits argv into words and options; returns 0 or a usage error exit code. */
static int parse_args(int argc, char **argv, struct args *a)
{
    bool only_words = false;

    memset(a, 0, sizeof(*a));
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val;
        if (only_words || arg[0] != '-' || arg[1] == '\0') {
            if (a->n_words == MAX_WORDS)
                return usage_error("too many arguments: %s", arg);
            a->words[a->n_words++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_words = true;
            continue;
        }
        int id = find_option(arg, &val);
        if (id < 0)
            return usage_error("unknown option %s", arg);
        if (options[id].has_arg && val == NULL) {
            if (i + 1 >= argc)
                return usage_error("option %s needs a value", arg);
            val = argv[++i];
        } else if (!options[id].has_arg && val != NULL) {
            return usage_error("option %s takes no value", arg);
        }
        a->val[id] = options[id].has_arg ? val : "";
    }
    return 0;
}

static int run_check(const struct args *a)
{
    struct wr_sbuf errors = {0};
    const char *file = a->val[OPT_CONFIG];

    if (file == NULL)
        return usage_error("%s: the config file is required (-c FILE)", "check");
    if (a->n_words > 1)
        return usage_error("check: unexpected argument %s", a->words[1]);
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

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, &a);

    if (rc != 0)
        return rc;
    if (a.val[OPT_VERSION] != NULL) {
        printf("weirctl %s\n", WEIR_VERSION);
        return 0;
    }
    if (a.val[OPT_HELP] != NULL) {
        usage(stdout);
        return 0;
    }
    if (a.n_words == 0)
        return usage_error("%s", "a command is required");
    for (int i = 0; i < CMD_COUNT; i++) {
        if (strcmp(commands[i].name, a.words[0]) != 0)
            continue;
        for (int o = 0; o < OPT_COUNT; o++)
            if (a.val[o] != NULL && !(options[o].cmds & CMD_BIT(i)))
                return usage_error("option %s does not apply to this command", options[o].lname);
        return commands[i].run(&a);
    }
    return usage_error("unknown command %s", a.words[0]);
}
