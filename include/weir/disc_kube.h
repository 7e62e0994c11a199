/* include/weir/disc_kube.h -- how to reach a Kubernetes API server: a kubeconfig file or the
 * in-cluster service account (discovery/disc_k8s_config.c). Shared by the kubernetes discovery
 * provider and weirctl's --kubernetes target.
 *
 * Supported kubeconfig fields (current-context, or the context named by the caller):
 * clusters[].cluster.server, certificate-authority, certificate-authority-data,
 * insecure-skip-tls-verify; users[].user.token, tokenFile (also token-file),
 * client-certificate(-data), client-key(-data); contexts[].context.namespace. Relative paths
 * resolve against the kubeconfig's folder. "-data" fields are decoded into memory files
 * (memfd) whose /proc/self/fd path is handed to libcurl, so no key material touches the disk.
 * Not supported (an error says so): exec and auth-provider plugins, username/password.
 *
 * In-cluster: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the token, ca.crt and
 * namespace files of /var/run/secrets/kubernetes.io/serviceaccount (the folder can be changed
 * with WEIR_K8S_SERVICEACCOUNT_DIR, for tests and sidecars).
 */
#ifndef WEIR_DISC_KUBE_H
#define WEIR_DISC_KUBE_H

#include <sys/types.h>

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct disc_kube {
    char *server;     /* "https://host:port" (no trailing '/') */
    char *ns;         /* the context's namespace, or the pod's; "default" when none */
    char *token;      /* a fixed token from the kubeconfig; NULL: none (or see token_file) */
    char *token_file; /* a token read again whenever the file changes (projected tokens rotate) */
    char *ca_file;    /* PEM bundle to verify the server; NULL: the system's */
    char *cert_file;  /* client certificate and key (PEM); NULL: none */
    char *key_file;
    bool insecure; /* insecure-skip-tls-verify */
    char *source;  /* for messages: "kubeconfig F (context C)" or "in-cluster" */
    /* private */
    char *tok_cache_;
    struct timespec tok_mtime_;
    off_t tok_size_;
    ino_t tok_ino_;
    int fds_[3];
};

/* Fills <k> from the kubeconfig <path> (NULL: the in-cluster service account) and its context
 * <context> (NULL: current-context). Returns 0, or -1 with a message in *errmsg (the caller
 * frees it) and <k> left disposed. */
int disc_kube_load(struct disc_kube *k, const char *path, const char *context, char **errmsg);
void disc_kube_dispose(struct disc_kube *k);

/* The bearer token to send now (NULL: none), borrowed until the next call. A token file is
 * read again when its size, inode or modification time changed. On a read error returns NULL
 * with *errmsg set (the caller frees it); the caller decides whether to go on without. */
const char *disc_kube_token(struct disc_kube *k, char **errmsg);

/* weirctl's choice when no --kubeconfig is given: the first file of $KUBECONFIG, else
 * ~/.kube/config when it exists, else NULL (in-cluster). The caller frees the result. */
char *disc_kube_default_path(void);

/* Decodes standard base64 (padding optional, whitespace ignored) into a new NUL-terminated
 * buffer; NULL on a malformed input. */
char *disc_kube_base64(const char *in, size_t len, size_t *out_len);

#endif /* WEIR_DISC_KUBE_H */
