/* tests/fuzz/fuzz_server.h -- a whole weir in the fuzzer's process, for the drivers of the
 * connection entry points (fuzz_h2_session.c, fuzz_tls_server.c).
 *
 * LLVMFuzzerInitialize starts ing_server_run() on a thread of its own (one worker) with an h2c
 * listener, a TLS listener (a P-256 certificate made at start-up), and an in-process HTTP/1.1
 * origin that answers every request with a chunked body and trailers (a WebSocket handshake
 * with 101, then an echo); paths under /dead/ go to
 * a cluster without endpoints. Each input then goes over a real loopback connection through
 * weir's accept, TLS BIO, HTTP/2 and HTTP/1.1 code: the driver sends it, half-closes, and reads
 * until weir closes (at most FUZZ_WAIT_MS). A crash on any thread ends the run; coverage is
 * process-wide.
 *
 * Short client timeouts keep a connection that waits for more from outliving its input.
 */
#ifndef WEIR_FUZZ_SERVER_H
#define WEIR_FUZZ_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <weir/ing.h>
#include <weir/wr.h>

#define FUZZ_WAIT_MS 1500

struct fuzz_server {
    int h2c_port, tls_port, origin_port, admin_port;
    char dir[64];
};

static struct fuzz_server fz;

static int fz_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("fuzz: free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int fz_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void fz_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return; /* weir closed early: fine */
        c += k;
        n -= (size_t)k;
    }
}

/* Reads what weir answers until it has been quiet for <gap_ms> (responses that need the origin
 * come back meanwhile), weir closed, or FUZZ_WAIT_MS passed. */
static void fz_quiesce(int fd, int gap_ms)
{
    char buf[16384];
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            FUZZ_WAIT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left < gap_ms ? (int)left : gap_ms) <= 0)
            return;
        if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
            return;
    }
}

/* Reads until EOF, an error, or FUZZ_WAIT_MS. */
static void fz_drain(int fd)
{
    char buf[16384];
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left =
            FUZZ_WAIT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return;
        if (recv(fd, buf, sizeof(buf), 0) <= 0)
            return;
    }
}

/* ---- the origin: every request head gets the same chunked answer with trailers ---- */

static void *fz_origin_conn(void *arg)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                               "5\r\nhello\r\n0\r\nX-Sum: 1\r\nGrpc-Status: 0\r\n\r\n";
    static const char ws101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    int fd = (int)(intptr_t)arg;
    char buf[65536];
    size_t n = 0;

    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (n < sizeof(buf) - 1) {
        ssize_t k = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL && strcasestr(buf, "\r\nUpgrade: websocket\r\n") != NULL) {
            /* A WebSocket handshake: 101, then echo until EOF (or the 2 s receive timeout). */
            fz_write_all(fd, ws101, sizeof(ws101) - 1);
            size_t rest = n - (size_t)(end + 4 - buf);
            if (rest > 0)
                fz_write_all(fd, end + 4, rest);
            ssize_t k2;
            while ((k2 = recv(fd, buf, sizeof(buf), 0)) > 0)
                fz_write_all(fd, buf, (size_t)k2);
            break;
        }
        if (end != NULL) {
            fz_write_all(fd, resp, sizeof(resp) - 1);
            break;
        }
    }
    close(fd);
    return NULL;
}

static void *fz_origin(void *arg)
{
    int lfd = (int)(intptr_t)arg;

    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, NULL, fz_origin_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
    return NULL;
}

/* ---- certificate ---- */

static void fz_make_cert(const char *crt, const char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;

    if (pk == NULL || x == NULL)
        exit(1);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, pk);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz.test", -1, -1,
                               0);
    X509_set_issuer_name(x, nm);
    if (X509_sign(x, pk, EVP_sha256()) == 0)
        exit(1);
    if ((f = fopen(crt, "w")) == NULL || !PEM_write_X509(f, x))
        exit(1);
    fclose(f);
    if ((f = fopen(key, "w")) == NULL || !PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL))
        exit(1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* ---- weir ---- */

static void *fz_weir(void *arg)
{
    struct ing_server_opts o = {.config_path = arg};

    exit(ing_server_run(&o) == 0 ? 0 : 1); /* it returns only on failure (or a signal) */
    return NULL;
}

static void fz_start(void)
{
    char cfg[128], crt[128], key[128];
    pthread_t t;
    FILE *f;

    signal(SIGPIPE, SIG_IGN);
    wr_log_max = getenv("WEIR_FUZZ_LOG") ? WR_LOG_DEBUG : WR_LOG_ERROR;
    snprintf(fz.dir, sizeof(fz.dir), "/tmp/weir-fuzz-XXXXXX");
    if (mkdtemp(fz.dir) == NULL)
        exit(1);
    snprintf(cfg, sizeof(cfg), "%s/weir.json", fz.dir);
    snprintf(crt, sizeof(crt), "%s/cert.pem", fz.dir);
    snprintf(key, sizeof(key), "%s/key.pem", fz.dir);
    fz_make_cert(crt, key);

    fz.origin_port = fz_free_port();
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)fz.origin_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 512) != 0) {
        perror("fuzz: origin");
        exit(1);
    }
    pthread_create(&t, NULL, fz_origin, (void *)(intptr_t)lfd);

    fz.h2c_port = fz_free_port();
    fz.tls_port = fz_free_port();
    fz.admin_port = fz_free_port();
    if ((f = fopen(cfg, "w")) == NULL)
        exit(1);
    fprintf(
        f,
        "{ \"workers\": 1, \"access_log\": null, \"drain_timeout_ms\": 100,\n"
        "  \"client_header_timeout_ms\": 1000, \"client_idle_timeout_ms\": 1000,\n"
        "  \"admin\": { \"address\": \"127.0.0.1:%d\" },\n"
        "  \"listeners\": [ { \"name\": \"h2c\", \"address\": \"127.0.0.1:%d\", \"h2c\": true },\n"
        "    { \"name\": \"tls\", \"address\": \"127.0.0.1:%d\", \"tls\": { \"certificates\": [\n"
        "      { \"cert_file\": \"%s\", \"key_file\": \"%s\" } ] } } ],\n"
        "  \"routes\": [ { \"name\": \"dead\", \"match\": { \"path_prefix\": \"/dead/\" },\n"
        "                  \"cluster\": \"dead\" },\n"
        "                { \"name\": \"small\", \"match\": { \"path_prefix\": \"/small/\" },\n"
        "                  \"cluster\": \"o\", \"max_body_bytes\": 100, \"timeout_ms\": 1000 },\n"
        "                { \"name\": \"all\", \"match\": { \"path_prefix\": \"/\" },\n"
        "                  \"cluster\": \"o\", \"timeout_ms\": 1000 } ],\n"
        "  \"clusters\": [ { \"name\": \"o\", \"endpoints\": [ { \"address\": \"127.0.0.1:%d\" } ] "
        "},\n"
        "                  { \"name\": \"dead\", \"endpoints\": [] } ] }\n",
        fz.admin_port, fz.h2c_port, fz.tls_port, crt, key, fz.origin_port);
    fclose(f);
    static char path[128];
    snprintf(path, sizeof(path), "%s", cfg);
    pthread_create(&t, NULL, fz_weir, path);
    for (int i = 0; i < 200; i++) { /* up to 10 s for the listeners */
        int a1 = fz_connect(fz.h2c_port), a2 = a1 >= 0 ? fz_connect(fz.tls_port) : -1;
        if (a1 >= 0)
            close(a1);
        if (a2 >= 0) {
            close(a2);
            return;
        }
        usleep(50000);
    }
    fprintf(stderr, "fuzz: weir did not start listening\n");
    exit(1);
}

#endif
