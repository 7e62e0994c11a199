/* xds/xds_tls.c -- TLS contexts of a listener: certificates, SNI, ALPN, versions, tickets.
 *
 * Built on the control thread while a snapshot loads, so a bad certificate or key is a config
 * error that keeps the running snapshot; read-only afterwards (OpenSSL's SSL_CTX is safe to
 * share between threads for SSL_new and handshakes).
 *
 * One SSL_CTX per distinct certificate name set: an RSA and an ECDSA certificate for the same
 * names share one context and OpenSSL picks per client. The servername callback of the first
 * context picks the context for the requested name: exact name, then the longest wildcard, then
 * the listener's first certificate.
 *
 * Session resumption works across workers and reloads through stateless tickets encrypted with
 * process-wide keys (xds_tls_rotate_ticket_keys()); the server-side session cache is off. The
 * key set is the one piece of process-wide TLS state: replaced atomically by the control
 * thread, read by handshakes on any thread, and freed two rotations after it was replaced.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "xds_priv.h"

/* Mozilla's "intermediate" profile (TLS 1.2 ciphers; TLS 1.3 uses OpenSSL's defaults). */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

/* ---- ticket keys ---- */

struct ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
};

struct ticket_keyset {
    struct ticket_key k[2]; /* k[0] encrypts; both decrypt */
    unsigned n;
};

static _Atomic(struct ticket_keyset *) ticket_keys;
static struct ticket_keyset *ticket_keys_retired; /* control thread only */
/* AES-256-CBC fetched once (with the first keys, before any worker runs; read-only after): the
 * legacy EVP_aes_256_cbc() makes OpenSSL 3 look the implementation up by name on every ticket. */
static EVP_CIPHER *ticket_cipher;

void xds_tls_rotate_ticket_keys(void)
{
    struct ticket_keyset *ks = wr_xcalloc(1, sizeof(*ks));
    struct ticket_keyset *old = atomic_load(&ticket_keys);

    if (ticket_cipher == NULL)
        ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);

    if (RAND_bytes((unsigned char *)&ks->k[0], sizeof(ks->k[0])) != 1) {
        wr_err("tls: cannot generate session ticket keys; keeping the current ones");
        free(ks);
        return;
    }
    ks->n = 1;
    if (old != NULL) {
        ks->k[1] = old->k[0];
        ks->n = 2;
    }
    atomic_store(&ticket_keys, ks);
    free(ticket_keys_retired);
    ticket_keys_retired = old;
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_keyset *ks = atomic_load_explicit(&ticket_keys, memory_order_acquire);
    const struct ticket_key *k = NULL;
    int rc = 1;

    if (ks == NULL)
        return 0;
    if (enc) {
        k = &ks->k[0];
        memcpy(name, k->name, 16);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
    } else {
        for (unsigned i = 0; i < ks->n && k == NULL; i++)
            if (memcmp(name, ks->k[i].name, 16) == 0)
                k = &ks->k[i];
        if (k == NULL)
            return 0;                /* unknown key: full handshake, new ticket */
        rc = k == &ks->k[0] ? 1 : 2; /* 2: valid, but issue a ticket with the current key */
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    const EVP_CIPHER *cipher = ticket_cipher != NULL ? ticket_cipher : EVP_aes_256_cbc();
    if (enc ? EVP_EncryptInit_ex2(cctx, cipher, k->aes, iv, NULL) != 1
            : EVP_DecryptInit_ex2(cctx, cipher, k->aes, iv, NULL) != 1)
        return -1;
    return rc;
}

/* ---- SNI and ALPN ---- */

struct xds_tls_sni {
    SSL_CTX **ctxs; /* ctxs[0] is the default */
    uint32_t n_ctxs;
    struct xds_name_index *exact; /* host -> ctxs[] index */
    struct xds_name_index *wild;  /* ".suffix" -> ctxs[] index */
    char **names;                 /* owned keys of the indexes */
    uint32_t n_names;
    char **notes; /* what add_view_certs() noted: repeated when the object is reused */
    uint32_t n_notes;
    const struct xds_listener_tls *t;
};

static int sni_ex_index = -1;

static void sni_ex_init(void)
{
    if (sni_ex_index < 0)
        sni_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct xds_tls_sni *sni = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    uint32_t idx;

    if (name == NULL || sni->n_ctxs == 1)
        return SSL_TLSEXT_ERR_OK;
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (xds__index_get_ci(sni->exact, name, len, &idx)) {
        SSL_set_SSL_CTX(ssl, sni->ctxs[idx]);
        return SSL_TLSEXT_ERR_OK;
    }
    /* Wildcards cover one or more labels, longest suffix first. */
    for (const char *p = memchr(name, '.', len); p != NULL;
         p = memchr(p + 1, '.', len - (size_t)(p + 1 - name))) {
        if (xds__index_get_ci(sni->wild, p, len - (size_t)(p - name), &idx)) {
            SSL_set_SSL_CTX(ssl, sni->ctxs[idx]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

/* Picks the first of the listener's protocols (server preference) that the client offers. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    struct xds_tls_sni *sni = arg;
    const struct xds_listener_tls *t = sni->t;

    for (uint32_t i = 0; i < t->n_alpn; i++) {
        size_t l = strlen(t->alpn[i]);
        if (strcmp(t->alpn[i], "h2") == 0 && !t->h2_enabled)
            continue;
        for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
            if (in[j] == l && j + 1 + l <= inlen && memcmp(in + j + 1, t->alpn[i], l) == 0) {
                *out = in + j + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---- building ---- */

static const char *ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        return "unknown error";
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static SSL_CTX *ctx_new(const struct xds_listener_tls *t, struct xds_tls_sni *sni)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, t->min_version == 3 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"weir", 4);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, sni);
    SSL_CTX_set_ex_data(ctx, sni_ex_index, sni);
    return ctx;
}

/* The DNS names a certificate is for: its subjectAltName DNS entries, else its CN. */
static char **cert_names(X509 *x, uint32_t *n)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char **v = NULL;

    *n = 0;
    if (gens != NULL) {
        int k = sk_GENERAL_NAME_num(gens);
        v = wr_xcalloc((size_t)k + 1, sizeof(*v));
        for (int i = 0; i < k; i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type != GEN_DNS)
                continue;
            const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
            int len = ASN1_STRING_length(g->d.dNSName);
            if (len > 0 && memchr(p, '\0', (size_t)len) == NULL)
                v[(*n)++] = wr_xstrndup((const char *)p, (size_t)len);
        }
        GENERAL_NAMES_free(gens);
    }
    if (*n == 0) {
        char cn[256];
        X509_NAME *subj = X509_get_subject_name(x);
        int len = subj ? X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn)) : -1;
        if (len > 0) {
            v = wr_xrealloc(v, 2 * sizeof(*v));
            v[(*n)++] = wr_xstrndup(cn, (size_t)len);
        }
    }
    for (uint32_t i = 0; i < *n; i++)
        for (char *p = v[i]; *p; p++)
            *p = wr_lower(*p);
    return v;
}

static bool same_names(char **a, uint32_t na, char **b, uint32_t nb)
{
    if (na != nb)
        return false;
    for (uint32_t i = 0; i < na; i++) {
        bool found = false;
        for (uint32_t j = 0; j < nb && !found; j++)
            found = strcmp(a[i], b[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static void free_names(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Loads certificate <i> into <ctx>; reports errors at certificates[i]. */
static bool load_cert(struct xds__cfg *c, SSL_CTX *ctx, const struct xds_tls_cert *tc, uint32_t i)
{
    char eb[256];
    size_t mark = xds__cfg_enter(c, "certificates");
    size_t m2 = xds__cfg_enter_idx(c, i);
    bool ok = false;

    if (SSL_CTX_use_certificate_chain_file(ctx, tc->cert_file) != 1)
        xds__cfg_err(c, "cert_file", "cannot load certificate: %s", ssl_error(eb, sizeof(eb)));
    else if (SSL_CTX_use_PrivateKey_file(ctx, tc->key_file, SSL_FILETYPE_PEM) != 1)
        xds__cfg_err(c, "key_file", "cannot load private key: %s", ssl_error(eb, sizeof(eb)));
    else if (SSL_CTX_check_private_key(ctx) != 1)
        xds__cfg_err(c, "key_file", "does not match cert_file: %s", ssl_error(eb, sizeof(eb)));
    else
        ok = true;
    xds__cfg_leave(c, m2);
    xds__cfg_leave(c, mark);
    return ok;
}

static void sni_add(struct xds_tls_sni *sni, const char *name, uint32_t idx)
{
    bool wild = name[0] == '*' && name[1] == '.';
    const char *key = wild ? name + 1 : name;
    uint32_t old;

    /* The first certificate that names a host keeps it. */
    xds__index_add(wild ? sni->wild : sni->exact, key, strlen(key), idx, &old);
}

/* Loads a view certificate (PEM in memory: the leaf, then its chain) into <ctx>. Returns NULL
 * or a static description of what failed. */
static const char *load_pem(SSL_CTX *ctx, const char *cert_pem, const char *key_pem)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509_AUX(b, NULL, NULL, NULL) : NULL;
    const char *why = NULL;

    if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
        why = "cannot load the certificate";
    } else {
        X509 *ca;
        while ((ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
            if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
                X509_free(ca);
                why = "cannot add the chain";
                break;
            }
        }
        ERR_clear_error(); /* the end of the chain reads as an error */
    }
    X509_free(x);
    BIO_free(b);
    if (why != NULL)
        return why;
    b = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    if (k == NULL || SSL_CTX_use_PrivateKey(ctx, k) != 1)
        why = "cannot load the private key";
    else if (SSL_CTX_check_private_key(ctx) != 1)
        why = "the private key does not match the certificate";
    EVP_PKEY_free(k);
    BIO_free(b);
    return why;
}

/* The views' certificates, each in its own context, named by the hosts the view gave. One that
 * does not load is dropped with a note in the snapshot's conflicts (a bad Secret must not stop
 * every other update). Called after the file's certificates, which keep the names they have. */
static void add_view_certs(struct xds__cfg *c, struct xds_listener_tls *t, struct xds_tls_sni *sni)
{
    struct xds__merged *m = c->merged;

    for (uint32_t i = 0; m != NULL && i < m->n_certs; i++) {
        const struct xds__vcert *v = &m->certs[i];
        const char *first = json_string_value(json_array_get(v->hosts, 0));
        SSL_CTX *ctx = ctx_new(t, sni);
        const char *why = ctx ? load_pem(ctx, v->cert_pem, v->key_pem) : "no TLS context";
        if (why != NULL) {
            char eb[256];
            char *note = wr_xasprintf("certificate for %s of %s: %s (%s); not served", first,
                                      v->label, why, ssl_error(eb, sizeof(eb)));
            xds__merge_note(m, "%s", note);
            sni->notes = wr_xrealloc(sni->notes, (sni->n_notes + 1) * sizeof(*sni->notes));
            sni->notes[sni->n_notes++] = note;
            SSL_CTX_free(ctx);
            continue;
        }
        uint32_t idx = sni->n_ctxs++;
        sni->ctxs[idx] = ctx;
        for (size_t k = 0; k < json_array_size(v->hosts); k++) {
            char *name = wr_xstrdup(json_string_value(json_array_get(v->hosts, k)));
            for (char *p = name; *p; p++)
                *p = wr_lower(*p);
            sni->names[sni->n_names++] = name;
            sni_add(sni, name, idx);
        }
    }
}

static size_t view_cert_names(const struct xds__cfg *c)
{
    size_t n = 0;

    for (uint32_t i = 0; c->merged != NULL && i < c->merged->n_certs; i++)
        n += json_array_size(c->merged->certs[i].hosts);
    return n;
}

void xds__tls_listener_build(struct xds__cfg *c, struct xds_listener_tls *t)
{
    struct xds_tls_sni *sni = wr_xcalloc(1, sizeof(*sni));
    char **group_names[64];
    uint32_t group_n[64];
    char eb[256];
    uint32_t total_names = 0;

    sni_ex_init();
    t->h2_enabled = true; /* served by ingress/ing_h2.c */
    if (atomic_load(&ticket_keys) == NULL)
        xds_tls_rotate_ticket_keys();
    sni->t = t;
    uint32_t n_vcerts = c->merged != NULL ? c->merged->n_certs : 0;
    sni->ctxs = wr_xcalloc(t->n_certs + n_vcerts + 1, sizeof(*sni->ctxs));
    t->sni = sni;
    char ***names = wr_xcalloc(t->n_certs + 1, sizeof(*names));
    uint32_t *nnames = wr_xcalloc(t->n_certs + 1, sizeof(*nnames));
    uint32_t *cert_ctx = wr_xcalloc(t->n_certs + 1, sizeof(*cert_ctx));
    for (uint32_t i = 0; i < t->n_certs; i++) {
        const struct xds_tls_cert *tc = &t->certs[i];
        if (tc->cert_file == NULL || tc->key_file == NULL)
            continue;
        /* Read the names first, to find a context with the same names (RSA + ECDSA pair). */
        SSL_CTX *probe = SSL_CTX_new(TLS_server_method());
        if (probe == NULL || !load_cert(c, probe, tc, i)) {
            SSL_CTX_free(probe);
            continue;
        }
        names[i] = cert_names(SSL_CTX_get0_certificate(probe), &nnames[i]);
        SSL_CTX_free(probe);
        uint32_t g = sni->n_ctxs;
        for (uint32_t j = 0; j < sni->n_ctxs && j < WR_ARRAY_LEN(group_names); j++)
            if (same_names(names[i], nnames[i], group_names[j], group_n[j]))
                g = j;
        if (g == sni->n_ctxs) {
            sni->ctxs[g] = ctx_new(t, sni);
            if (sni->ctxs[g] == NULL) {
                xds__cfg_err(c, "certificates", "cannot create a TLS context: %s",
                             ssl_error(eb, sizeof(eb)));
                continue;
            }
            if (g < WR_ARRAY_LEN(group_names)) {
                group_names[g] = names[i];
                group_n[g] = nnames[i];
            }
            sni->n_ctxs++;
        }
        cert_ctx[i] = g;
        if (!load_cert(c, sni->ctxs[g], tc, i))
            continue;
        total_names += nnames[i];
    }
    total_names += (uint32_t)view_cert_names(c);
    sni->exact = xds__index_new(total_names + 1);
    sni->wild = xds__index_new(total_names + 1);
    sni->names = wr_xcalloc(total_names + 1, sizeof(*sni->names));
    for (uint32_t i = 0; i < t->n_certs; i++) {
        for (uint32_t k = 0; k < nnames[i]; k++) {
            sni->names[sni->n_names++] = names[i][k];
            sni_add(sni, names[i][k], cert_ctx[i]);
        }
        free(names[i]); /* the strings moved to sni->names */
    }
    free(names);
    free(nnames);
    free(cert_ctx);
    if (sni->n_ctxs > 0)
        add_view_certs(c, t, sni);
    if (sni->n_ctxs > 0) {
        SSL_CTX_set_tlsext_servername_callback(sni->ctxs[0], servername_cb);
        SSL_CTX_set_tlsext_servername_arg(sni->ctxs[0], sni);
    }
    t->ssl_ctx = sni->n_ctxs > 0 ? sni->ctxs[0] : NULL;
}

void xds__tls_listener_notes(struct xds__cfg *c, const struct xds_listener_tls *t)
{
    for (uint32_t i = 0; t->sni != NULL && c->merged != NULL && i < t->sni->n_notes; i++)
        xds__merge_note(c->merged, "%s", t->sni->notes[i]);
}

void xds__tls_listener_free(struct xds_listener_tls *t)
{
    struct xds_tls_sni *sni = t->sni;

    if (sni == NULL)
        return;
    for (uint32_t i = 0; i < sni->n_ctxs; i++)
        SSL_CTX_free(sni->ctxs[i]);
    free(sni->ctxs);
    xds__index_free(sni->exact);
    xds__index_free(sni->wild);
    free_names(sni->names, sni->n_names);
    free_names(sni->notes, sni->n_notes);
    free(sni);
    t->sni = NULL;
    t->ssl_ctx = NULL;
}

/* ---- TLS to upstreams ---- */

void xds__tls_cluster_build(struct xds__cfg *c, struct xds_cluster *cl)
{
    char eb[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL) {
        xds__cfg_err(c, "tls", "cannot create a TLS context: %s", ssl_error(eb, sizeof(eb)));
        return;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (cl->tls.verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = cl->tls.ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, cl->tls.ca_file, NULL)
                                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1)
            xds__cfg_err(c, cl->tls.ca_file ? "ca_file" : NULL, "cannot load CA certificates: %s",
                         ssl_error(eb, sizeof(eb)));
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    static const unsigned char alpn_h1[] = "\x08http/1.1", alpn_h2[] = "\x02h2";
    if (cl->protocol == XDS_PROTO_H2)
        SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2) - 1);
    else
        SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1);
    cl->tls.ssl_ctx = ctx;
}

void xds__tls_cluster_free(struct xds_cluster *cl)
{
    SSL_CTX_free(cl->tls.ssl_ctx);
    cl->tls.ssl_ctx = NULL;
}
