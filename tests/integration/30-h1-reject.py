"""HTTP/1.1 requests weir must reject (RFC 9110/9112 and request smuggling defences). Each
test sends one bad request on a raw socket and asserts the status, that the connection is
closed, and that nothing reached the origin (a recording Python origin)."""

from harness import *

W = None
E = None  # recording origin: every byte weir sends upstream


def setup_module():
    global W, E
    E = EvilOrigin().start()
    cfg = {
        "routes": [route("limited", "c", path_prefix="/limited/", max_body_bytes=1000),
                   route("all", "c")],
        "clusters": [cluster("c", E)],
    }
    W = Weir(cfg).start()


def reject(data, statuses, body_forwarded_ok=False, must_close=True):
    """Sends <data>; asserts a response with a status in <statuses>, a closed connection and an
    origin that received nothing."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    E.reset()
    r, rest, closed = raw_exchange(W.port, data)
    check(r is not None, "no response before close (expected %r)" % (statuses,))
    check_in(r.status, statuses, "status for %r" % data[:80])
    if r.status == 400:
        check_eq((r.header("connection") or "").lower(), "close", "Connection header on 400")
    if must_close:
        check(closed, "connection must be closed after %d" % r.status)
    ct = r.header("content-type") or ""
    check(ct.startswith("text/plain"), "error body is text/plain, got %r" % ct)
    time.sleep(0.2)
    if not body_forwarded_ok:
        check_eq(E.all_received(), b"", "bytes the origin received")
    return r


def req(head_lines, body=b"", request_line=b"GET / HTTP/1.1"):
    return request_line + b"\r\n" + b"".join(l + b"\r\n" for l in head_lines) + b"\r\n" + body


HOST = b"Host: reject.test"


def test_good_request_is_forwarded():
    # Control: the same machinery with a valid request reaches the origin.
    E.reset()
    r, _, _ = raw_exchange(W.port, req([HOST, b"Connection: close"]))
    check_eq(r.status, 200, "valid request")
    check(E.all_received().startswith(b"GET / HTTP/1.1\r\n"), "origin got the request")


def test_cl_and_te_together():
    reject(req([HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked"],
               b"0\r\n\r\n", b"POST / HTTP/1.1"), 400)


def test_te_and_cl_together_reversed_order():
    reject(req([HOST, b"Transfer-Encoding: chunked", b"Content-Length: 5"],
               b"0\r\n\r\n", b"POST / HTTP/1.1"), 400)


def test_two_different_content_lengths():
    reject(req([HOST, b"Content-Length: 5", b"Content-Length: 6"], b"hello!",
               b"POST / HTTP/1.1"), 400)


def test_content_length_list_differs():
    reject(req([HOST, b"Content-Length: 5, 6"], b"hello!", b"POST / HTTP/1.1"), 400)


def test_content_length_plus():
    reject(req([HOST, b"Content-Length: +5"], b"hello", b"POST / HTTP/1.1"), 400)


def test_content_length_inner_space():
    reject(req([HOST, b"Content-Length: 5 5"], b"hello", b"POST / HTTP/1.1"), 400)


def test_content_length_hex():
    reject(req([HOST, b"Content-Length: 0x5"], b"hello", b"POST / HTTP/1.1"), 400)


def test_content_length_negative():
    reject(req([HOST, b"Content-Length: -1"], b"hello", b"POST / HTTP/1.1"), 400)


def test_content_length_overflow():
    reject(req([HOST, b"Content-Length: 99999999999999999999999"], b"hello",
               b"POST / HTTP/1.1"), (400, 413))


def test_te_gzip_chunked():
    reject(req([HOST, b"Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n", b"POST / HTTP/1.1"),
           (400, 501))


def test_te_chunked_gzip():
    reject(req([HOST, b"Transfer-Encoding: chunked, gzip"], b"0\r\n\r\n", b"POST / HTTP/1.1"),
           (400, 501))


def test_te_identity():
    reject(req([HOST, b"Transfer-Encoding: identity"], b"", b"POST / HTTP/1.1"), (400, 501))


def test_te_chunked_twice():
    reject(req([HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
               b"0\r\n\r\n", b"POST / HTTP/1.1"), (400, 501))


def test_te_in_http10():
    # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is a framing fault.
    reject(req([HOST, b"Transfer-Encoding: chunked"], b"0\r\n\r\n", b"POST / HTTP/1.0"), 400)


def test_space_before_colon():
    reject(req([b"Host : reject.test"]), 400)


def test_space_before_colon_other_header():
    reject(req([HOST, b"X-Foo : 1"]), 400)


def test_obs_fold():
    reject(req([HOST, b"X-Foo: a", b" b"]), 400)


def test_bare_cr_in_header():
    reject(req([HOST, b"X-Foo: a\rb"]), 400)


def test_nul_in_header():
    reject(req([HOST, b"X-Foo: a\x00b"]), 400)


def test_invalid_header_name():
    reject(req([HOST, b"X Foo: 1"]), 400)


def test_invalid_method_token():
    reject(req([HOST], request_line=b"G(T / HTTP/1.1"), 400)


def test_version_http2_in_h1():
    reject(req([HOST], request_line=b"GET / HTTP/2.0"), 505)


def test_version_http12():
    reject(req([HOST], request_line=b"GET / HTTP/1.2"), 505)


def test_version_bad_protocol_name():
    reject(req([HOST], request_line=b"GET / HTTX/1.1"), 400)


def test_missing_host_http11():
    reject(req([b"X-Foo: 1"]), 400)


def test_two_host_headers():
    reject(req([HOST, b"Host: other.test"]), 400)


def test_space_in_target():
    reject(req([HOST], request_line=b"GET /a b HTTP/1.1"), 400)


def test_request_line_extra_field():
    reject(req([HOST], request_line=b"GET / HTTP/1.1 x"), 400)


def chunked_reject(body, bad_line=None):
    # The head is valid, so weir may already have sent it upstream before it meets the bad
    # chunk line; what must never reach the origin is the bad framing itself or a completed
    # body. The client must get 400 and a closed connection.
    E.reset()
    data = req([HOST, b"Transfer-Encoding: chunked"], body, b"POST / HTTP/1.1")
    r, _, closed = raw_exchange(W.port, data)
    check(r is not None, "no response before close")
    check_eq(r.status, 400, "status for a bad chunked body")
    check(closed, "connection closed")
    time.sleep(0.2)
    got = E.all_received()
    check(not got.endswith(b"0\r\n\r\n"), "origin must not receive a complete body: %r"
          % got[-80:])
    if bad_line is not None:
        check(bad_line not in got, "bad chunk line %r forwarded: %r" % (bad_line, got))


def test_chunk_size_not_hex():
    chunked_reject(b"zz\r\nhello\r\n0\r\n\r\n", b"\r\nzz\r\n")


def test_chunk_size_negative():
    chunked_reject(b"-1\r\nhello\r\n0\r\n\r\n", b"\r\n-1\r\n")


def test_chunk_size_overflow():
    chunked_reject(b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n", b"fffffffffffffffff")


def test_chunk_data_not_followed_by_crlf():
    chunked_reject(b"5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n")


def test_header_block_too_large():
    big = b"X-Big: " + b"a" * 70000
    reject(req([HOST, big]), 431)


def test_many_headers_too_large():
    lines = [HOST] + [b"X-H%d: %s" % (i, b"b" * 100) for i in range(700)]
    reject(req(lines), 431)


def test_target_too_long():
    reject(req([HOST], request_line=b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 414)


def test_body_over_limit_content_length():
    reject(req([HOST, b"Content-Length: 5000"], b"z" * 5000, b"POST /limited/x HTTP/1.1"), 413,
           must_close=False)


def test_body_over_limit_chunked():
    E.reset()
    body = b"".join(b"200\r\n" + b"y" * 512 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    data = req([HOST, b"Transfer-Encoding: chunked"], body, b"POST /limited/x HTTP/1.1")
    r, _, _ = raw_exchange(W.port, data)
    check(r is not None, "no response")
    check_eq(r.status, 413, "chunked body over max_body_bytes")
    time.sleep(0.2)
    check(not E.all_received().endswith(b"0\r\n\r\n"), "origin must not get the whole body")


def test_body_under_limit_passes():
    E.reset()
    r, _, _ = raw_exchange(W.port, req([HOST, b"Content-Length: 900", b"Connection: close"],
                                       b"z" * 900, b"POST /limited/x HTTP/1.1"))
    check_eq(r.status, 200, "body under max_body_bytes")


def test_still_serving_after_rejects():
    r = W.http("GET", "/after")
    check_eq(r.status, 200, "weir still serves after the bad requests")


def test_smuggled_second_request_not_forwarded():
    # CL+TE: a naive proxy would forward "GET /smuggled" as a second request.
    E.reset()
    data = req([HOST, b"Content-Length: 4", b"Transfer-Encoding: chunked"],
               b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: reject.test\r\n\r\n", b"POST / HTTP/1.1")
    raw_exchange(W.port, data)
    time.sleep(0.2)
    check(b"/smuggled" not in E.all_received(), "smuggled request reached the origin")


def test_limits_are_configurable():
    e = EvilOrigin().start()
    w = Weir({"routes": [route("all", "c")], "clusters": [cluster("c", e)],
              "max_header_bytes": 4096, "max_target_bytes": 512}).start()
    r, _, _ = raw_exchange(w.port, req([HOST, b"X-Big: " + b"a" * 2000, b"Connection: close"]))
    check_eq(r.status, 200, "2 KB header under max_header_bytes 4096")
    r, _, _ = raw_exchange(w.port, req([HOST, b"X-Big: " + b"a" * 5000]))
    check_eq(r.status, 431, "5 KB header over max_header_bytes 4096")
    r, _, _ = raw_exchange(w.port, req([HOST, b"Connection: close"],
                                       request_line=b"GET /" + b"a" * 400 + b" HTTP/1.1"))
    check_eq(r.status, 200, "400-byte target under max_target_bytes 512")
    r, _, _ = raw_exchange(w.port, req([HOST], request_line=b"GET /" + b"a" * 600 + b" HTTP/1.1"))
    check_eq(r.status, 414, "600-byte target over max_target_bytes 512")


if __name__ == "__main__":
    run()
