/* ingress/weirctl/weirctl_target.c -- which target a rollout command talks to (INTERFACES.md §5).
 *
 *   --admin URL [--token-file F]       one weir's admin API (the default, http://127.0.0.1:9901);
 *                                      token from --token-file, else $WEIR_ADMIN_TOKEN
 *   --consul URL [--token-file F]      the Consul KV key weir/rollouts/NAME; ACL token from
 *                                      --token-file, else $CONSUL_HTTP_TOKEN (Consul's own name)
 *   --kubernetes [--namespace NS] [--kubeconfig F]   the weir.io/green-weight annotation of the
 *                                      Service NAME (weirctl_target_kube.c)
 *
 * A target is a struct wctl_target_ops; adding one means one more constructor here.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <weir/wr.h>

#include "weirctl.h"

#define DEFAULT_ADMIN "http://127.0.0.1:9901"
#define TOKEN_MAX     4096

int wctl_target_check_args(const struct wctl_args *a)
{
    int n = (a->val[WCTL_OPT_ADMIN] != NULL) + (a->val[WCTL_OPT_CONSUL] != NULL) +
            (a->val[WCTL_OPT_KUBERNETES] != NULL);

    if (n > 1)
        return wctl_usage_error(a, "choose one target: --admin, --consul or --kubernetes");
    if (a->val[WCTL_OPT_KUBERNETES] == NULL) {
        if (a->val[WCTL_OPT_NAMESPACE] != NULL)
            return wctl_usage_error(a, "--namespace applies to the --kubernetes target only");
        if (a->val[WCTL_OPT_KUBECONFIG] != NULL)
            return wctl_usage_error(a, "--kubeconfig applies to the --kubernetes target only");
    } else if (a->val[WCTL_OPT_TOKEN_FILE] != NULL) {
        return wctl_usage_error(a, "--token-file does not apply to --kubernetes "
                                   "(its credentials come from the kubeconfig)");
    }

    static const struct {
        enum wctl_opt id;
        const char *name;
    } urls[] = {{WCTL_OPT_ADMIN, "--admin"}, {WCTL_OPT_CONSUL, "--consul"}};

    for (size_t i = 0; i < WR_ARRAY_LEN(urls); i++) {
        const char *url = a->val[urls[i].id];
        if (url != NULL && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
            return wctl_usage_error(a, "%s: the URL must start with http:// or https://",
                                    urls[i].name);
    }
    return 0;
}

/* Reads the first line of <path>, without surrounding white space. */
char *wctl_read_token(const char *path)
{
    char buf[TOKEN_MAX + 2];
    FILE *f = fopen(path, "r");
    size_t n, start = 0;

    if (f == NULL) {
        wctl_fail("token file %s: %s", path, strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    if (n > TOKEN_MAX) {
        wctl_fail("token file %s: longer than %d bytes", path, TOKEN_MAX);
        return NULL;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    n = strlen(buf);
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    while (isspace((unsigned char)buf[start]))
        start++;
    if (buf[start] == '\0') {
        wctl_fail("token file %s: empty", path);
        return NULL;
    }
    return wr_xstrdup(buf + start);
}

/* A token goes into a header line: control characters could split it. */
static bool token_ok(const char *t)
{
    for (const unsigned char *p = (const unsigned char *)t; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* The token from --token-file, else from the environment variable <env>; NULL with *failed
 * when the file cannot be read or the token is unusable, NULL alone when there is none. */
static char *token_of(const struct wctl_args *a, const char *env, bool *failed)
{
    const char *file = a->val[WCTL_OPT_TOKEN_FILE], *e = getenv(env);
    char *t = NULL;

    *failed = false;
    if (file != NULL)
        t = wctl_read_token(file);
    else if (e != NULL && *e != '\0')
        t = wr_xstrdup(e);
    if (file != NULL && t == NULL) {
        *failed = true;
    } else if (t != NULL && !token_ok(t)) {
        wctl_fail("the token from %s contains control characters", file != NULL ? file : env);
        wr_free(&t);
        *failed = true;
    }
    return t;
}

struct wctl_target *wctl_target_new(const struct wctl_args *a)
{
    struct wctl_target *t;
    bool failed;
    char *token;

    if (a->val[WCTL_OPT_KUBERNETES] != NULL)
        return wctl_target_kube_new(a->val[WCTL_OPT_NAMESPACE], a->val[WCTL_OPT_KUBECONFIG]);
    if (a->val[WCTL_OPT_CONSUL] != NULL) {
        token = token_of(a, "CONSUL_HTTP_TOKEN", &failed);
        t = failed ? NULL : wctl_target_consul_new(a->val[WCTL_OPT_CONSUL], token);
    } else {
        token = token_of(a, "WEIR_ADMIN_TOKEN", &failed);
        t = failed ? NULL
                   : wctl_target_admin_new(a->val[WCTL_OPT_ADMIN] != NULL ? a->val[WCTL_OPT_ADMIN]
                                                                          : DEFAULT_ADMIN,
                                           token);
    }
    free(token);
    return t;
}

void wctl_target_free(struct wctl_target *t)
{
    if (t != NULL)
        t->ops->free(t);
}

static void colour_dispose(struct wctl_colour *c)
{
    free(c->cluster);
    memset(c, 0, sizeof(*c));
}

void wctl_state_dispose(struct wctl_state *st)
{
    free(st->name);
    free(st->version);
    colour_dispose(&st->blue);
    colour_dispose(&st->green);
    memset(st, 0, sizeof(*st));
    st->sticky = -1;
}
