/* discovery/disc_k8s_config.c -- where the Kubernetes API server is and how to authenticate to
 * it: a kubeconfig file (YAML, read with libyaml) or the in-cluster service account. The
 * contract is in include/weir/disc_kube.h.
 *
 * The YAML document is first turned into a jansson tree (every scalar a string: kubeconfig
 * has no field where the YAML type matters except insecure-skip-tls-verify, read as "true"),
 * which keeps the lookups below short. Aliases are followed with a node budget so that a
 * hostile file ("billion laughs") cannot blow up memory.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include <jansson.h>

#include <weir/disc_kube.h>
#include <weir/wr.h>

#include "disc_priv.h"

#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
#define YAML_MAX_NODES 200000 /* after alias expansion */
#define YAML_MAX_DEPTH 64

/* ---- YAML -> jansson ---------------------------------------------------------------------- */

static json_t *node_json(yaml_document_t *doc, yaml_node_t *n, unsigned depth, unsigned *budget)
{
    if (n == NULL || depth > YAML_MAX_DEPTH || *budget == 0)
        return NULL;
    (*budget)--;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return json_stringn_nocheck((const char *)n->data.scalar.value, n->data.scalar.length);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            json_t *v = node_json(doc, yaml_document_get_node(doc, *it), depth + 1, budget);
            if (v == NULL) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            json_t *v = node_json(doc, yaml_document_get_node(doc, p->value), depth + 1, budget);
            if (k == NULL || k->type != YAML_SCALAR_NODE || v == NULL) {
                json_decref(v);
                json_decref(o);
                return NULL;
            }
            char *key = wr_xstrndup((const char *)k->data.scalar.value, k->data.scalar.length);
            json_object_set_new(o, key, v);
            free(key);
        }
        return o;
    }
    default:
        return NULL;
    }
}

/* Parses YAML (or JSON, a subset) <text> into a jansson tree; NULL with *errmsg on failure. */
static json_t *yaml_to_json(const char *text, size_t len, const char *path, char **errmsg)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *out = NULL;
    unsigned budget = YAML_MAX_NODES;

    if (!yaml_parser_initialize(&parser)) {
        *errmsg = wr_xasprintf("%s: cannot initialise the YAML parser", path);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        *errmsg = wr_xasprintf("%s: line %zu column %zu: %s", path, parser.problem_mark.line + 1,
                               parser.problem_mark.column + 1,
                               parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL)
        *errmsg = wr_xasprintf("%s: the file is empty", path);
    else if ((out = node_json(&doc, root, 0, &budget)) == NULL)
        *errmsg =
            wr_xasprintf("%s: too deep, too large, or a mapping key that is not a string", path);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* The <inner> object of the entry named <name> in the list <key> (clusters, users, contexts),
 * borrowed from <root>; NULL when there is no such entry. */
static json_t *named(json_t *root, const char *key, const char *name, const char *inner)
{
    json_t *a = json_object_get(root, key), *e;
    size_t i;

    json_array_foreach(a, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n != NULL && strcmp(n, name) == 0) {
            json_t *o = json_object_get(e, inner);
            return json_is_object(o) ? o : e; /* without one, the entry: no fields either */
        }
    }
    return NULL;
}

static char *resolve(const char *dir, const char *p)
{
    if (p[0] == '/' || dir == NULL)
        return wr_xstrdup(p);
    return wr_xasprintf("%s/%s", dir, p);
}

char *disc_kube_base64(const char *in, size_t len, size_t *out_len)
{
    char *out = wr_xmalloc(len / 4 * 3 + 4);
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;
    bool pad = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad = true;
            continue;
        }
        if (pad) /* data after padding */
            goto bad;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else
            goto bad;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (bits >= 6) /* a lone trailing character carries no whole byte */
        goto bad;
    out[n] = '\0';
    if (out_len != NULL)
        *out_len = n;
    return out;
bad:
    free(out);
    return NULL;
}

/* Decodes the base64 field <field> into a memory file and returns its path. */
static char *data_file(struct disc_kube *k, unsigned slot, const char *b64, const char *field,
                       char **errmsg)
{
    size_t len;
    char *raw = disc_kube_base64(b64, strlen(b64), &len);

    if (raw == NULL) {
        *errmsg = wr_xasprintf("%s: %s is not valid base64", k->source, field);
        return NULL;
    }
    int fd = memfd_create(field, MFD_CLOEXEC);
    if (fd == -1) {
        *errmsg = wr_xasprintf("%s: %s: memfd_create: %s", k->source, field, strerror(errno));
        free(raw);
        return NULL;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, raw + off, len - off);
        if (w == -1 && errno == EINTR)
            continue;
        if (w <= 0) {
            *errmsg = wr_xasprintf("%s: %s: write: %s", k->source, field, strerror(errno));
            close(fd);
            free(raw);
            return NULL;
        }
        off += (size_t)w;
    }
    free(raw);
    k->fds_[slot] = fd;
    return wr_xasprintf("/proc/self/fd/%d", fd);
}

/* <file_key> (a path) or <data_key> (base64 content) of <o> into *out; false on an error. */
static bool file_or_data(struct disc_kube *k, json_t *o, const char *file_key, const char *data_key,
                         unsigned slot, const char *dir, char **out, char **errmsg)
{
    const char *data = jstr(o, data_key), *file = jstr(o, file_key);

    if (data != NULL)
        *out = data_file(k, slot, data, data_key, errmsg);
    else if (file != NULL)
        *out = resolve(dir, file);
    return data == NULL || *out != NULL;
}

static int fail(struct disc_kube *k, char **errmsg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct disc_kube *k, char **errmsg, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        abort();
    va_end(ap);
    *errmsg = wr_xasprintf("%s: %s", k->source, msg);
    free(msg);
    disc_kube_dispose(k);
    return -1;
}

/* ---- kubeconfig --------------------------------------------------------------------------- */

static int load_user(struct disc_kube *k, json_t *user, const char *dir, char **errmsg)
{
    const char *tf = jstr(user, "tokenFile") ? jstr(user, "tokenFile") : jstr(user, "token-file");

    if (jstr(user, "token") != NULL)
        k->token = wr_xstrdup(jstr(user, "token"));
    else if (tf != NULL)
        k->token_file = resolve(dir, tf);
    if (!file_or_data(k, user, "client-certificate", "client-certificate-data", 1, dir,
                      &k->cert_file, errmsg) ||
        !file_or_data(k, user, "client-key", "client-key-data", 2, dir, &k->key_file, errmsg)) {
        disc_kube_dispose(k);
        return -1;
    }
    if ((k->cert_file == NULL) != (k->key_file == NULL))
        return fail(k, errmsg,
                    "the user has a client certificate without a key, or a key "
                    "without a certificate");
    if (k->token == NULL && k->token_file == NULL && k->cert_file == NULL &&
        (json_object_get(user, "exec") != NULL || json_object_get(user, "auth-provider") != NULL))
        return fail(k, errmsg,
                    "exec and auth-provider credential plugins are not supported; use "
                    "a token, a token file or a client certificate");
    if (k->token == NULL && k->token_file == NULL && k->cert_file == NULL &&
        jstr(user, "username") != NULL)
        return fail(k, errmsg, "basic authentication (username/password) is not supported");
    return 0;
}

static int load_kubeconfig(struct disc_kube *k, const char *path, const char *context,
                           char **errmsg)
{
    size_t len;
    char *text = disc__read_file(path, &len, false);

    k->source = wr_xasprintf("kubeconfig %s", path);
    if (text == NULL)
        return fail(k, errmsg, "%s", strerror(errno));
    json_t *root = yaml_to_json(text, len, path, errmsg);
    free(text);
    if (root == NULL) {
        disc_kube_dispose(k);
        return -1;
    }
    char *dir = wr_xstrdup(path), *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        strcpy(dir, ".");
    int rc = -1;
    const char *ctx_name = context != NULL ? context : jstr(root, "current-context");
    json_t *ctx = ctx_name != NULL ? named(root, "contexts", ctx_name, "context") : NULL;
    json_t *cluster = NULL, *user = NULL;

    if (ctx_name == NULL) {
        fail(k, errmsg, "no current-context");
        goto out;
    }
    free(k->source);
    k->source = wr_xasprintf("kubeconfig %s (context %s)", path, ctx_name);
    if (ctx == NULL) {
        fail(k, errmsg, "no context named \"%s\"", ctx_name);
        goto out;
    }
    if (jstr(ctx, "cluster") == NULL ||
        (cluster = named(root, "clusters", jstr(ctx, "cluster"), "cluster")) == NULL) {
        fail(k, errmsg, "the context's cluster \"%s\" is not defined",
             jstr(ctx, "cluster") ? jstr(ctx, "cluster") : "");
        goto out;
    }
    if (jstr(ctx, "user") != NULL &&
        (user = named(root, "users", jstr(ctx, "user"), "user")) == NULL) {
        fail(k, errmsg, "the context's user \"%s\" is not defined", jstr(ctx, "user"));
        goto out;
    }
    const char *server = jstr(cluster, "server");
    if (server == NULL || (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7))) {
        fail(k, errmsg, "the cluster's server must be an https:// (or http://) URL");
        goto out;
    }
    k->server = wr_xstrdup(server);
    for (size_t n = strlen(k->server); n > 0 && k->server[n - 1] == '/'; n--)
        k->server[n - 1] = '\0';
    k->ns = wr_xstrdup(jstr(ctx, "namespace") ? jstr(ctx, "namespace") : "default");
    const char *insecure = jstr(cluster, "insecure-skip-tls-verify");
    k->insecure = insecure != NULL && strcmp(insecure, "true") == 0;
    if (!file_or_data(k, cluster, "certificate-authority", "certificate-authority-data", 0, dir,
                      &k->ca_file, errmsg)) {
        disc_kube_dispose(k);
        goto out;
    }
    rc = user != NULL ? load_user(k, user, dir, errmsg) : 0;
out:
    json_decref(root);
    free(dir);
    return rc;
}

/* ---- in-cluster --------------------------------------------------------------------------- */

static int load_in_cluster(struct disc_kube *k, char **errmsg)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    const char *dir = getenv("WEIR_K8S_SERVICEACCOUNT_DIR");

    k->source = wr_xstrdup("in-cluster");
    if (dir == NULL || dir[0] == '\0')
        dir = SA_DIR_DEFAULT;
    if (host == NULL || host[0] == '\0' || port == NULL || port[0] == '\0')
        return fail(k, errmsg,
                    "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set "
                    "(not running in a pod?); set \"kubeconfig\" instead");
    bool v6 = strchr(host, ':') != NULL;
    k->server = wr_xasprintf("https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "", port);
    k->token_file = wr_xasprintf("%s/token", dir);
    k->ca_file = wr_xasprintf("%s/ca.crt", dir);
    char *ns_path = wr_xasprintf("%s/namespace", dir);
    char *ns = disc__read_file(ns_path, NULL, true);
    free(ns_path);
    k->ns = ns != NULL && ns[0] != '\0' ? ns : wr_xstrdup("default");
    if (ns != NULL && k->ns != ns)
        free(ns);
    if (access(k->ca_file, R_OK) != 0)
        return fail(k, errmsg, "%s: %s", k->ca_file, strerror(errno));
    return 0;
}

/* ---- the API ------------------------------------------------------------------------------ */

int disc_kube_load(struct disc_kube *k, const char *path, const char *context, char **errmsg)
{
    memset(k, 0, sizeof(*k));
    k->fds_[0] = k->fds_[1] = k->fds_[2] = -1;
    *errmsg = NULL;
    return path != NULL ? load_kubeconfig(k, path, context, errmsg) : load_in_cluster(k, errmsg);
}

void disc_kube_dispose(struct disc_kube *k)
{
    char *src = k->source;

    free(k->server);
    free(k->ns);
    free(k->token);
    free(k->token_file);
    free(k->ca_file);
    free(k->cert_file);
    free(k->key_file);
    free(k->tok_cache_);
    for (unsigned i = 0; i < 3; i++)
        if (k->fds_[i] >= 0)
            close(k->fds_[i]);
    memset(k, 0, sizeof(*k));
    k->fds_[0] = k->fds_[1] = k->fds_[2] = -1;
    /* fail() formats its message with the source before disposing: keep it until then */
    free(src);
}

const char *disc_kube_token(struct disc_kube *k, char **errmsg)
{
    struct stat st;

    *errmsg = NULL;
    if (k->token != NULL || k->token_file == NULL)
        return k->token;
    if (stat(k->token_file, &st) != 0) {
        *errmsg = wr_xasprintf("%s: %s", k->token_file, strerror(errno));
        return NULL;
    }
    if (k->tok_cache_ != NULL && st.st_size == k->tok_size_ && st.st_ino == k->tok_ino_ &&
        st.st_mtim.tv_sec == k->tok_mtime_.tv_sec && st.st_mtim.tv_nsec == k->tok_mtime_.tv_nsec)
        return k->tok_cache_;
    char *t = disc__read_file(k->token_file, NULL, true);
    if (t == NULL) {
        *errmsg = wr_xasprintf("%s: %s", k->token_file, strerror(errno));
        return NULL;
    }
    if (t[0] == '\0') {
        free(t);
        *errmsg = wr_xasprintf("%s: the token file is empty", k->token_file);
        return NULL;
    }
    free(k->tok_cache_);
    k->tok_cache_ = t;
    k->tok_size_ = st.st_size;
    k->tok_ino_ = st.st_ino;
    k->tok_mtime_ = st.st_mtim;
    return t;
}

char *disc_kube_default_path(void)
{
    const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");

    if (env != NULL && env[0] != '\0') {
        const char *colon = strchr(env, ':');
        return colon != NULL ? wr_xstrndup(env, (size_t)(colon - env)) : wr_xstrdup(env);
    }
    if (home != NULL && home[0] != '\0') {
        char *p = wr_xasprintf("%s/.kube/config", home);
        if (access(p, F_OK) == 0)
            return p;
        free(p);
    }
    return NULL;
}
