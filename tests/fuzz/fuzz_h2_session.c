/* tests/fuzz/fuzz_h2_session.c -- libFuzzer driver for the downstream HTTP/2 session
 * (ingress/ing_h2.c with nghttp2, and the request flow of ing_conn.c behind it).
 *
 * The input is what an h2c client sends after the connection preface: frames, valid or not.
 * It goes to a whole in-process weir (fuzz_server.h) over loopback, in pieces cut where the
 * input's first byte says (so frames straddle reads), then the client half-closes and the
 * driver reads until weir closes. Weir's header validation, limits, stream bookkeeping,
 * routing, upstream requests (chunked with trailers, errors) and responses all run. */
#include "fuzz_server.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_start();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = fz_connect(fz.h2c_port);
    size_t piece = size > 0 ? (size_t)data[0] * 16 + 1 : 1;

    if (fd < 0)
        return 0;
    fz_write_all(fd, preface, sizeof(preface) - 1);
    if (size > 0) {
        data++;
        size--;
    }
    for (size_t off = 0; off < size; off += piece) {
        fz_write_all(fd, data + off, size - off < piece ? size - off : piece);
        if (piece < size)
            usleep(200); /* let weir take this piece alone */
    }
    fz_quiesce(fd, 20);
    shutdown(fd, SHUT_WR);
    fz_drain(fd);
    close(fd);
    return 0;
}
