/* tests/unit/discovery/disc_k8s_config_test.c -- reaching the API server: kubeconfig files
 * (the forms kubectl, kind and the fake API server write), the in-cluster service account,
 * token files read again when they change, and base64. */
#include <sys/stat.h>

#include <weir/disc_kube.h>

#include "test.h"

static char dir[256];

static void rm_tmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* A private folder for the test, removed when its process exits (each test is one process). */
static void mkdir_tmp(void)
{
    snprintf(dir, sizeof(dir), "/tmp/weir-kube-test-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    atexit(rm_tmp);
}

static char *write_file(const char *name, const char *text)
{
    char *path = NULL;
    ASSERT(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    char buf[4096];
    if (f == NULL)
        FAIL("%s: cannot open", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" in base64 */
#define CA_PEM "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="

/* As kubectl writes it (block YAML), with a second context and an exec user it must ignore. */
static const char *const kubectl_style = "apiVersion: v1\n"
                                         "clusters:\n"
                                         "- cluster:\n"
                                         "    certificate-authority-data: " CA_B64 "\n"
                                         "    server: https://127.0.0.1:6443/\n"
                                         "  name: kind-kind\n"
                                         "- cluster:\n"
                                         "    insecure-skip-tls-verify: true\n"
                                         "    server: https://other.example.com\n"
                                         "  name: other\n"
                                         "contexts:\n"
                                         "- context:\n"
                                         "    cluster: kind-kind\n"
                                         "    user: kind-kind\n"
                                         "    namespace: shop\n"
                                         "  name: kind-kind\n"
                                         "- context:\n"
                                         "    cluster: other\n"
                                         "    user: exec-user\n"
                                         "  name: other\n"
                                         "current-context: kind-kind\n"
                                         "kind: Config\n"
                                         "preferences: {}\n"
                                         "users:\n"
                                         "- name: kind-kind\n"
                                         "  user:\n"
                                         "    token: abc.def\n"
                                         "- name: exec-user\n"
                                         "  user:\n"
                                         "    exec:\n"
                                         "      command: aws\n";

TEST(kubectl_style_kubeconfig)
{
    struct disc_kube k;
    char *err = NULL;
    mkdir_tmp();
    char *path = write_file("config", kubectl_style);

    ASSERT_EQ(disc_kube_load(&k, path, NULL, &err), 0);
    ASSERT(err == NULL);
    ASSERT_STREQ(k.server, "https://127.0.0.1:6443"); /* the trailing slash is dropped */
    ASSERT_STREQ(k.ns, "shop");
    ASSERT_STREQ(k.token, "abc.def");
    ASSERT(!k.insecure);
    ASSERT(k.ca_file != NULL);
    char *ca = read_all(k.ca_file); /* the data field, decoded into a memory file */
    ASSERT_STREQ(ca, CA_PEM);
    ASSERT(strncmp(k.ca_file, "/proc/self/fd/", 14) == 0);
    free(ca);
    ASSERT_STREQ(disc_kube_token(&k, &err), "abc.def");
    disc_kube_dispose(&k);

    /* the other context: insecure, and an exec plugin that is refused */
    ASSERT_EQ(disc_kube_load(&k, path, "other", &err), -1);
    ASSERT(err != NULL && strstr(err, "exec and auth-provider") != NULL);
    ASSERT(strstr(err, "(context other)") != NULL);
    free(err);
    ASSERT_EQ(disc_kube_load(&k, path, "nope", &err), -1);
    ASSERT(strstr(err, "no context named \"nope\"") != NULL);
    free(err);
    free(path);
}

TEST(json_kubeconfig_with_files_and_token_file)
{
    struct disc_kube k;
    char *err = NULL;
    mkdir_tmp();
    char *tok = write_file("token", "tok-1\n");
    free(tok);
    char *path = write_file(
        "config.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"Config\", \"current-context\": \"c\","
        " \"clusters\": [{\"name\": \"k\", \"cluster\": {\"server\": \"https://[::1]:8443\","
        " \"certificate-authority\": \"ca.crt\", \"insecure-skip-tls-verify\": false}}],"
        " \"users\": [{\"name\": \"u\", \"user\": {\"tokenFile\": \"token\","
        " \"client-certificate\": \"/abs/client.crt\", \"client-key\": \"client.key\"}}],"
        " \"contexts\": [{\"name\": \"c\", \"context\": {\"cluster\": \"k\", \"user\": \"u\"}}]}");
    ASSERT_EQ(disc_kube_load(&k, path, NULL, &err), 0);
    ASSERT_STREQ(k.server, "https://[::1]:8443");
    ASSERT_STREQ(k.ns, "default");
    char want[512];
    snprintf(want, sizeof(want), "%s/ca.crt", dir); /* relative to the kubeconfig's folder */
    ASSERT_STREQ(k.ca_file, want);
    ASSERT_STREQ(k.cert_file, "/abs/client.crt");
    snprintf(want, sizeof(want), "%s/client.key", dir);
    ASSERT_STREQ(k.key_file, want);
    ASSERT(k.token == NULL);
    ASSERT_STREQ(disc_kube_token(&k, &err), "tok-1");

    /* a rotated token is read again (a projected token is replaced by a rename) */
    char *tmp = write_file("token.new", "tok-22222\n");
    char *dst = NULL;
    ASSERT(asprintf(&dst, "%s/token", dir) > 0);
    ASSERT(rename(tmp, dst) == 0);
    ASSERT_STREQ(disc_kube_token(&k, &err), "tok-22222");
    ASSERT(unlink(dst) == 0);
    ASSERT(disc_kube_token(&k, &err) == NULL);
    ASSERT(err != NULL && strstr(err, "token") != NULL);
    free(err);
    free(tmp), free(dst), free(path);
    disc_kube_dispose(&k);
}

TEST(client_certificate_data_as_kind_writes_it)
{
    struct disc_kube k;
    char *err = NULL;
    mkdir_tmp();
    char *path = write_file("config", "apiVersion: v1\n"
                                      "clusters:\n"
                                      "- cluster: {server: 'https://127.0.0.1:1', "
                                      "certificate-authority-data: " CA_B64 "}\n"
                                      "  name: k\n"
                                      "users:\n"
                                      "- name: u\n"
                                      "  user:\n"
                                      "    client-certificate-data: " CA_B64 "\n"
                                      "    client-key-data: a2V5\n"
                                      "contexts:\n"
                                      "- {name: c, context: {cluster: k, user: u}}\n"
                                      "current-context: c\n");
    ASSERT_EQ(disc_kube_load(&k, path, NULL, &err), 0);
    char *crt = read_all(k.cert_file), *key = read_all(k.key_file);
    ASSERT_STREQ(crt, CA_PEM);
    ASSERT_STREQ(key, "key");
    ASSERT(disc_kube_token(&k, &err) == NULL && err == NULL);
    free(crt), free(key);
    disc_kube_dispose(&k);
    free(path);
}

TEST(broken_kubeconfigs_say_why)
{
    static const char *const cases[][2] = {
        {"a: [unclosed\n", "line"},
        {"", "empty"},
        {"clusters: []\n", "no current-context"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n",
         "cluster \"k\" is not defined"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://x'}}]\n",
         "user \"u\" is not defined"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters: [{name: k, cluster: {server: 'ftp://x'}}]\n",
         "https://"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://x', certificate-authority-data: "
         "'!!!'}}]\n",
         "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "users: [{name: u, user: {username: a, password: b}}]\n",
         "basic authentication"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://x'}}]\n"
         "users: [{name: u, user: {client-certificate: a.crt}}]\n",
         "without a key"},
        /* recursion through an alias must not loop */
        {"a: &x [*x]\n", "too deep"},
    };
    mkdir_tmp();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct disc_kube k;
        char *err = NULL;
        char *path = write_file("bad", cases[i][0]);
        ASSERT_EQ(disc_kube_load(&k, path, NULL, &err), -1);
        if (err == NULL || strstr(err, cases[i][1]) == NULL)
            FAIL("case %zu: \"%s\" lacks \"%s\"", i, err ? err : "(null)", cases[i][1]);
        free(err);
        free(path);
    }
    struct disc_kube k;
    char *err = NULL;
    ASSERT_EQ(disc_kube_load(&k, "/nonexistent/kubeconfig", NULL, &err), -1);
    ASSERT(strstr(err, "No such file") != NULL);
    free(err);
}

TEST(in_cluster)
{
    struct disc_kube k;
    char *err = NULL;
    mkdir_tmp();
    free(write_file("token", "sa-token\n"));
    free(write_file("ca.crt", CA_PEM));
    free(write_file("namespace", "weir-system"));
    setenv("WEIR_K8S_SERVICEACCOUNT_DIR", dir, 1);
    unsetenv("KUBERNETES_SERVICE_HOST");
    ASSERT_EQ(disc_kube_load(&k, NULL, NULL, &err), -1);
    ASSERT(strstr(err, "KUBERNETES_SERVICE_HOST") != NULL);
    free(err);

    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    ASSERT_EQ(disc_kube_load(&k, NULL, NULL, &err), 0);
    ASSERT_STREQ(k.server, "https://10.96.0.1:443");
    ASSERT_STREQ(k.ns, "weir-system");
    ASSERT_STREQ(k.source, "in-cluster");
    ASSERT_STREQ(disc_kube_token(&k, &err), "sa-token");
    char want[512];
    snprintf(want, sizeof(want), "%s/ca.crt", dir);
    ASSERT_STREQ(k.ca_file, want);
    disc_kube_dispose(&k);

    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    ASSERT_EQ(disc_kube_load(&k, NULL, NULL, &err), 0);
    ASSERT_STREQ(k.server, "https://[fd00::1]:443");
    disc_kube_dispose(&k);
}

TEST(default_path_for_weirctl)
{
    mkdir_tmp();
    setenv("KUBECONFIG", "/a/one:/b/two", 1);
    char *p = disc_kube_default_path();
    ASSERT_STREQ(p, "/a/one");
    free(p);
    unsetenv("KUBECONFIG");
    setenv("HOME", dir, 1);
    ASSERT(disc_kube_default_path() == NULL);
    char *kd = NULL;
    ASSERT(asprintf(&kd, "%s/.kube", dir) > 0);
    ASSERT(mkdir(kd, 0700) == 0);
    free(write_file(".kube/config", "x: y\n"));
    p = disc_kube_default_path();
    ASSERT(p != NULL && strstr(p, "/.kube/config") != NULL);
    free(p), free(kd);
}

TEST(base64)
{
    size_t n;
    char *s = disc_kube_base64("aGVs\nbG8=", 9, &n);
    ASSERT_STREQ(s, "hello");
    ASSERT_EQ(n, 5);
    free(s);
    s = disc_kube_base64("aGVsbG8", 7, &n); /* padding optional */
    ASSERT_STREQ(s, "hello");
    free(s);
    ASSERT(disc_kube_base64("aGV*", 4, &n) == NULL);
    ASSERT(disc_kube_base64("aGVsbG8=x", 9, &n) == NULL);
    ASSERT(disc_kube_base64("a", 1, &n) == NULL);
    s = disc_kube_base64("", 0, &n);
    ASSERT(s != NULL && n == 0);
    free(s);
}
