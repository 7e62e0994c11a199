/* tests/fuzz/fuzz_tls_server.c -- libFuzzer driver for the server side of TLS (ingress/ing_tls.c:
 * weir's BIO over libuv, the handshake and record pump) and what runs behind it.
 *
 * First input byte, low bit 0: the rest goes as it is to the TLS listener (ClientHellos,
 * records, alerts: the handshake and record-layer parsing through weir's BIO, in pieces cut
 * where the byte's high bits say). Low bit 1: the driver completes a real TLS 1.3 handshake
 * first (ALPN h2 when bit 1 is set, else http/1.1) and then sends the rest as plaintext in
 * records of fuzz-chosen sizes, so the decrypt pump, buffer hand-over and the HTTP/1.1 or
 * HTTP/2 code behind it get arbitrary application bytes. See fuzz_server.h. */
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fuzz_server.h"

static SSL_CTX *client_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_start();
    client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
    return 0;
}

static void raw(int fd, const uint8_t *data, size_t size, size_t piece)
{
    for (size_t off = 0; off < size; off += piece) {
        fz_write_all(fd, data + off, size - off < piece ? size - off : piece);
        if (piece < size)
            usleep(200);
    }
}

static void over_tls(int fd, const uint8_t *data, size_t size, bool h2, size_t piece)
{
    static const unsigned char alpn_h2[] = "\x02h2", alpn_h1[] = "\x08http/1.1";
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    SSL *ssl = SSL_new(client_ctx);

    if (ssl == NULL)
        return;
    SSL_set_fd(ssl, fd);
    SSL_set_alpn_protos(ssl, h2 ? alpn_h2 : alpn_h1,
                        h2 ? sizeof(alpn_h2) - 1 : sizeof(alpn_h1) - 1);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (SSL_connect(ssl) == 1) {
        if (h2)
            SSL_write(ssl, preface, sizeof(preface) - 1);
        for (size_t off = 0; off < size; off += piece)
            if (SSL_write(ssl, data + off, (int)(size - off < piece ? size - off : piece)) <= 0)
                break;
        fz_quiesce(fd, 20); /* the answers (read raw: only their arrival matters) */
        SSL_shutdown(ssl);  /* close_notify */
    }
    ERR_clear_error();
    SSL_free(ssl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    size_t piece = (size_t)(mode >> 2) * 64 + 1;
    int fd = fz_connect(fz.tls_port);

    if (fd < 0)
        return 0;
    if (mode & 1) {
        over_tls(fd, data + 1, size - 1, (mode & 2) != 0, piece);
    } else {
        raw(fd, data + 1, size - 1, piece);
        fz_quiesce(fd, 20);
    }
    shutdown(fd, SHUT_WR);
    fz_drain(fd);
    close(fd);
    return 0;
}
