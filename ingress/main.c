/* ingress/main.c -- the weir daemon's command line (INTERFACES.md §1). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weir/ing.h>
#include <weir/wr.h>
#include <weir/xds.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: weir -c FILE            run with a configuration file\n"
               "       weir --check -c FILE    validate FILE and exit (0 valid, 1 invalid)\n"
               "       weir --version\n"
               "options: -v, --verbose         debug logging\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},      {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool check = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'C':
            check = true;
            break;
        case 'V':
            printf("weir %s\n", WEIR_VERSION);
            return 0;
        case 'v':
            wr_log_max = WR_LOG_DEBUG;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (check) {
        struct wr_sbuf errors = {0};
        struct xds_snapshot *s = xds_config_load(config, NULL, 0, &errors);
        if (s == NULL) {
            fputs(errors.p ? errors.p : "invalid configuration\n", stderr);
            wr_sbuf_dispose(&errors);
            return 1;
        }
        xds_snapshot_unref(s);
        printf("%s: ok\n", config);
        return 0;
    }
    struct ing_server_opts opts = {.config_path = config};
    return ing_server_run(&opts);
}
