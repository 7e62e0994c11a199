"""gRPC end to end: a grpcio client (Debian's python3-grpcio) -> weir (h2c listener) -> a grpcio
server on h2c (cluster protocol "h2c"). Unary and bidirectional streaming calls, the server's
own statuses, a long stream that outlives the route's (inactivity) timeout, and weir's own
errors answered as gRPC statuses (UNAVAILABLE, UNIMPLEMENTED) for HTTP/2 and HTTP/1.1
clusters. Generic handlers with bytes in and out: no protoc step."""

import queue
from concurrent import futures

import grpc

from harness import *
from harness import _register, _unregister

TEST_TIMEOUT = 120


class GrpcOrigin:
    """A grpcio server on 127.0.0.1 (h2c) with the service test.Echo:
      Unary(b)       -> b"pong:" + b (or aborts with NOT_FOUND "nope" when b == b"missing")
      Bidi(stream)   -> b"echo:" + each message, as each arrives
      Ticks(b"N,MS") -> N messages b"tick-i", MS milliseconds apart"""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.metadata = []

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        def unary(req, ctx):
            self.metadata.append(dict(ctx.invocation_metadata()))
            if req == b"missing":
                ctx.abort(grpc.StatusCode.NOT_FOUND, "nope")
            return b"pong:" + req

        def bidi(it, ctx):
            for m in it:
                yield b"echo:" + m

        def ticks(req, ctx):
            n, ms = (int(x) for x in req.decode().split(","))
            for i in range(n):
                time.sleep(ms / 1000.0)
                yield b"tick-%d" % i

        handler = grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        check(self.server.add_insecure_port(self.address) == self.port, "grpc server port")
        self.server.start()
        _register(self)
        return self

    def stop(self):
        _unregister(self)
        if self.server is not None:
            self.server.stop(0).wait(5)
            self.server = None


def weir_grpc(clusters, routes, **route_opts):
    port = free_port()
    cfg = {"listeners": [{"name": "web", "address": "127.0.0.1:%d" % port, "h2c": True}],
           "routes": routes, "clusters": clusters}
    return Weir(cfg).start()


def channel(w):
    ch = grpc.insecure_channel("127.0.0.1:%d" % w.port, options=[("grpc.enable_http_proxy", 0)])
    _register(_Closer(ch))
    return ch


class _Closer:
    def __init__(self, ch):
        self.ch = ch

    def stop(self):
        _unregister(self)
        self.ch.close()


def grpc_code(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, None


def test_unary_call():
    g = GrpcOrigin().start()
    w = weir_grpc([cluster("g", g, protocol="h2c")], [route("all", "g")])
    ch = channel(w)
    call = ch.unary_unary("/test.Echo/Unary")
    check_eq(call(b"ping", timeout=10, metadata=[("x-user", "ann")]), b"pong:ping")
    md = g.metadata[-1]
    check_eq(md.get("x-user"), "ann", "metadata forwarded")
    check(len(md.get("x-request-id", "")) == 32, "weir added x-request-id: %r" % md)
    big = os.urandom(3 << 20)
    check_eq(call(big, timeout=20), b"pong:" + big, "a 3 MiB message each way")
    code, details = grpc_code(lambda: call(b"missing", timeout=10))
    check_eq((code, details), (grpc.StatusCode.NOT_FOUND, "nope"), "the server's status")
    check_eq(call(b"again", timeout=10), b"pong:again", "the channel goes on")


def test_bidi_streaming_ping_pong():
    """Each request message waits for the answer to the previous one: only true streaming in
    both directions (no buffering until the end of either side) can finish this."""
    g = GrpcOrigin().start()
    w = weir_grpc([cluster("g", g, protocol="h2c")], [route("all", "g")])
    ch = channel(w)
    got = queue.Queue()

    def requests():
        for i in range(20):
            yield b"msg-%d" % i
            got.get(timeout=10)  # the answer came back before the next message goes

    answers = []
    for m in ch.stream_stream("/test.Echo/Bidi")(requests(), timeout=30):
        answers.append(m)
        got.put(m)
    check_eq(answers, [b"echo:msg-%d" % i for i in range(20)], "20 messages each way")


def test_long_stream_outlives_route_timeout():
    g = GrpcOrigin().start()
    w = weir_grpc([cluster("g", g, protocol="h2c")], [route("all", "g", timeout_ms=600)])
    ch = channel(w)
    ticks = list(ch.unary_stream("/test.Echo/Ticks")(b"8,250", timeout=30))
    check_eq(ticks, [b"tick-%d" % i for i in range(8)], "a 2 s stream with a 600 ms timeout")
    code, _ = grpc_code(lambda: list(ch.unary_stream("/test.Echo/Ticks")(b"2,1500",
                                                                           timeout=30)))
    check_eq(code, grpc.StatusCode.UNAVAILABLE, "a stream silent for longer than timeout_ms")


def test_weir_errors_as_grpc_status():
    g = GrpcOrigin().start()
    w = weir_grpc([cluster("g", g, protocol="h2c"), cluster("none", protocol="h2c"),
                   cluster("dead1", dead_address()), cluster("dead2", dead_address(),
                                                            protocol="h2c")],
                  [route("ok", "g", host="ok.example"),
                   route("none", "none", host="none.example"),
                   route("dead1", "dead1", host="dead1.example"),
                   route("dead2", "dead2", host="dead2.example")])

    def call(host):
        ch = grpc.insecure_channel("127.0.0.1:%d" % w.port,
                                   options=[("grpc.enable_http_proxy", 0),
                                            ("grpc.default_authority", host)])
        try:
            return grpc_code(lambda: ch.unary_unary("/test.Echo/Unary")(b"x", timeout=10))
        finally:
            ch.close()

    check_eq(call("ok.example")[0], grpc.StatusCode.OK, "routed call")
    code, details = call("none.example")
    check_eq(code, grpc.StatusCode.UNAVAILABLE, "no endpoint (503)")
    check("503" in (details or ""), "grpc-message names the HTTP status: %r" % details)
    check_eq(call("dead1.example")[0], grpc.StatusCode.UNAVAILABLE,
             "connect failure to an HTTP/1.1 cluster (502)")
    check_eq(call("dead2.example")[0], grpc.StatusCode.UNAVAILABLE,
             "connect failure to an h2c cluster (502)")
    code, details = call("other.example")
    check_eq(code, grpc.StatusCode.UNIMPLEMENTED, "no route (404)")


if __name__ == "__main__":
    run()
