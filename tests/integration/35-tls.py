"""TLS termination (issue 3, INTERFACES §2 listener `tls`, route `redirect_https` and `hsts`):
protocol versions, SNI certificate selection, RSA + ECDSA for one name, ALPN, session
resumption across workers and reloads, certificates re-read on SIGHUP, certificate errors,
redirects, HSTS, X-Forwarded-Proto, and HTTP/1.1 (keep-alive, big bodies, WebSocket) over TLS.
Certificates are generated at test time with the openssl CLI."""

from harness import *
import harness as _h

TEST_TIMEOUT = 240

C = None          # Certs
CERTS = {}        # name -> TestCert
O = None          # origin
W = None          # shared weir: plain listener (W.port) + TLS listener (TLS_PORT), 2 workers
TLS_PORT = None


def setup_module():
    global C, O, W, TLS_PORT
    C = Certs()
    CERTS["default"] = C.leaf("default", ["default.test"])
    CERTS["exact"] = C.leaf("exact", ["www.example.com"])
    CERTS["wild"] = C.leaf("wild", ["*.example.com"])
    CERTS["wild_b"] = C.leaf("wild-b", ["*.b.example.com"])
    # RSA listed first, so ECDSA being chosen is the client's doing, not config order.
    CERTS["dual_rsa"] = C.leaf("dual-rsa", ["dual.test", "www.dual.test"], kind="rsa")
    CERTS["dual_ec"] = C.leaf("dual-ec", ["dual.test", "www.dual.test"])
    O = Origin("o").start()
    TLS_PORT = free_port()
    W = Weir(main_config(TLS_PORT), workers=2).start()


def main_config(tls_port, plain_port=None, certs=None, **top):
    certs = certs or [CERTS[n] for n in ("default", "exact", "wild", "wild_b", "dual_rsa",
                                         "dual_ec")]
    cfg = {
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % (plain_port or free_port())},
                      tls_listener(tls_port, certs)],
        "routes": [
            route("secure", "c", path_prefix="/secure/", redirect_https=True),
            route("hsts", "c", path_prefix="/hsts/",
                  hsts={"max_age_s": 1000, "include_subdomains": True, "preload": False}),
            route("hsts-preload", "c", path_prefix="/hsts-preload/",
                  hsts={"max_age_s": 31536000, "include_subdomains": False, "preload": True}),
            route("all", "c"),
        ],
        "clusters": [cluster("c", O)],
    }
    cfg.update(top)
    return cfg


def cert_name(der):
    for n, c in CERTS.items():
        if c.der == der:
            return n
    return "unknown certificate"


def tls_get(path="/hello", port=None, **kw):
    return https_request(port or TLS_PORT, "GET", path, **kw)


class SServer:
    """`openssl s_server` accepting one connection with the given options (a control: proves the
    local client can speak what weir must refuse)."""

    def __init__(self, cert, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(self.port), "-cert", cert.cert, "-key",
             cert.key, "-naccept", "1"] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=_h._die_with_parent)
        _h._register(self)
        for _ in range(50):
            line = self.proc.stdout.readline()
            if not line or b"ACCEPT" in line:
                break

    def stop(self):
        _h._unregister(self)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---- versions ----------------------------------------------------------------------------------

def test_tls13_and_tls12_negotiated():
    s = s_client(TLS_PORT, "-tls1_3")
    check(s.ok, "TLS 1.3 handshake: %r\n%s" % (s, s.out[-1500:]))
    check_eq(s.protocol, "TLSv1.3", "protocol with -tls1_3")
    s = s_client(TLS_PORT, "-tls1_2")
    check(s.ok, "TLS 1.2 handshake: %r\n%s" % (s, s.out[-1500:]))
    check_eq(s.protocol, "TLSv1.2", "protocol with -tls1_2")
    check(s.cipher.startswith("ECDHE-") or s.cipher.startswith("DHE-"),
          "TLS 1.2 cipher has forward secrecy (Mozilla intermediate): %s" % s.cipher)
    for ver, name in ((ssl.TLSVersion.TLSv1_3, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
        c = TlsRaw(TLS_PORT, ctx=tls_client_ctx(min_version=ver, max_version=ver))
        check_eq(c.ssl.version(), name, "ssl module version")
        c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
        r = c.read_response()
        check_eq((r.status, r.body), (200, b"hello from o\n"), "a request over %s" % name)
        c.stop()


def test_tls11_and_tls10_refused():
    for flag, name in (("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1")):
        # Control: this client does speak the old version (to a server that allows it).
        srv = SServer(CERTS["default"], flag, "-cipher", "DEFAULT@SECLEVEL=0")
        ctl = s_client(srv.port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
        srv.stop()
        check(ctl.ok and ctl.protocol == name,
              "control: s_client %s against openssl s_server must work: %r" % (flag, ctl))
        s = s_client(TLS_PORT, flag, "-cipher", "DEFAULT@SECLEVEL=0")
        check(not s.ok, "weir accepted %s: %r" % (name, s))
    check_eq(tls_get().status, 200, "weir still serves after refusing old versions")


def test_tls12_weak_ciphers_refused():
    # Mozilla intermediate: no CBC, no static-RSA key exchange in TLS 1.2. (SNI dual.test has
    # an RSA certificate, so the RSA suites are possible at all.)
    for cipher, sni, cert in (("ECDHE-ECDSA-AES128-SHA", None, "default"),
                              ("ECDHE-RSA-AES128-SHA256", "dual.test", "dual_rsa"),
                              ("AES128-SHA", "dual.test", "dual_rsa"),
                              ("AES256-GCM-SHA384", "dual.test", "dual_rsa")):
        srv = SServer(CERTS[cert], "-tls1_2", "-cipher", "ALL@SECLEVEL=0")
        ctl = s_client(srv.port, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0")
        srv.stop()
        check(ctl.ok and ctl.cipher == cipher, "control: %s against openssl s_server: %r"
              % (cipher, ctl))
        s = s_client(TLS_PORT, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0", sni=sni)
        check(not s.ok, "weir accepted TLS 1.2 cipher %s: %r" % (cipher, s))


def test_min_version_13_refuses_12():
    port = free_port()
    w = Weir(main_config(port, certs=[CERTS["default"]],
                         listeners=[tls_listener(port, [CERTS["default"]], min_version="1.3")]))
    w.start()
    s = s_client(port, "-tls1_2")
    check(not s.ok, "min_version 1.3 must refuse TLS 1.2: %r" % s)
    s = s_client(port, "-tls1_3")
    check(s.ok and s.protocol == "TLSv1.3", "TLS 1.3 still accepted: %r" % s)
    check_eq(tls_get(port=port).status, 200, "request over TLS 1.3")
    w.stop()


# ---- certificates -------------------------------------------------------------------------------

def test_sni_selects_certificate():
    cases = [(None, "default"), ("www.example.com", "exact"), ("WWW.Example.COM", "exact"),
             ("a.example.com", "wild"), ("x.b.example.com", "wild_b"),
             ("unknown.test", "default"), ("example.com", "default"), ("dual.test", "dual_ec"),
             ("www.example.com.", "exact"), ("A.Example.Com", "wild"),
             ("www.dual.test", "dual_ec")]
    for sni, want in cases:
        check_eq(cert_name(served_cert(TLS_PORT, sni)), want, "certificate for SNI %r" % sni)
    # s_client sees the same, and the chain verifies for a verifying client.
    s = s_client(TLS_PORT, sni="a.example.com")
    check_eq(cert_name(s.cert), "wild", "s_client certificate for a.example.com")
    ctx = tls_client_ctx(ca=C.ca_cert)
    ctx.check_hostname = True
    r = https_request(TLS_PORT, "GET", "/hello", sni="a.example.com", ctx=ctx)
    check_eq(r.status, 200, "verified request to a.example.com")
    r = https_request(TLS_PORT, "GET", "/hello", sni="www.example.com", ctx=ctx)
    check_eq(r.status, 200, "verified request to www.example.com")


def test_rsa_and_ecdsa_for_the_same_name():
    s = s_client(TLS_PORT, sni="dual.test")
    check_eq((cert_name(s.cert), s.sigtype), ("dual_ec", "ECDSA"), "ECDSA-capable TLS 1.3 client")
    s = s_client(TLS_PORT, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256", sni="dual.test")
    check(s.ok, "RSA-only TLS 1.3 client: %r" % s)
    check_eq(cert_name(s.cert), "dual_rsa", "certificate for a client limited to RSA sigalgs")
    s = s_client(TLS_PORT, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", sni="dual.test")
    check(s.ok, "TLS 1.2 aRSA client: %r" % s)
    check_eq(cert_name(s.cert), "dual_rsa", "certificate for a TLS 1.2 aRSA-only client")
    s = s_client(TLS_PORT, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", sni="dual.test")
    check_eq(cert_name(s.cert), "dual_ec", "certificate for a TLS 1.2 aECDSA-only client")
    # A name with only an ECDSA certificate cannot serve an RSA-only client.
    s = s_client(TLS_PORT, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
                 sni="www.example.com")
    check(not s.ok or cert_name(s.cert) != "exact", "no RSA certificate for www.example.com")


def test_alpn():
    s = s_client(TLS_PORT, "-alpn", "h2,http/1.1")
    check_eq(s.alpn, "h2", "ALPN when h2 is offered")
    s = s_client(TLS_PORT, "-alpn", "http/1.1,h2")
    check_eq(s.alpn, "h2", "server preference: h2 even when the client lists it second")
    s = s_client(TLS_PORT, "-alpn", "http/1.1")
    check_eq(s.alpn, "http/1.1", "ALPN when only http/1.1 is offered")
    s = s_client(TLS_PORT)
    check(s.ok and s.alpn is None, "no ALPN offered: handshake without ALPN: %r" % s)
    c = TlsRaw(TLS_PORT, alpn=["h2", "http/1.1"])
    check_eq(c.ssl.selected_alpn_protocol(), "h2", "ssl module ALPN")
    c.stop()
    c = TlsRaw(TLS_PORT, alpn=["http/1.1"])
    check_eq(c.ssl.selected_alpn_protocol(), "http/1.1", "ssl module ALPN http/1.1")
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    check_eq(c.read_response().status, 200, "HTTP/1.1 after ALPN http/1.1")
    c.stop()


def test_alpn_listener_without_h2():
    port = free_port()
    w = Weir(main_config(port, listeners=[
        tls_listener(port, [CERTS["default"]], alpn=["http/1.1"])])).start()
    s = s_client(port, "-alpn", "h2,http/1.1")
    check_eq(s.alpn, "http/1.1", "a listener with alpn [http/1.1] never picks h2")
    r = tls_get(port=port, ctx=tls_client_ctx(alpn=["h2", "http/1.1"]))
    check_eq(r.status, 200, "HTTP/1.1 request there")
    w.stop()


# ---- session resumption ------------------------------------------------------------------------

def _first_session(port, ctx):
    c = TlsRaw(port, ctx=ctx)
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    check_eq(c.read_response().status, 200, "first TLS request")
    check(not c.ssl.session_reused, "first connection is a full handshake")
    sess = c.ssl.session
    c.stop()
    check(sess is not None and sess.has_ticket, "weir issued a session ticket")
    return sess


def _resumed(port, ctx, sess):
    c = TlsRaw(port, ctx=ctx, session=sess)
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n")
    r = c.read_response()
    reused = c.ssl.session_reused
    c.stop()
    check_eq(r.status, 200, "request on a resumed connection")
    return reused


def test_session_resumption_across_workers():
    for ver in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = tls_client_ctx(min_version=ver, max_version=ver)
        sess = _first_session(TLS_PORT, ctx)
        # Two workers with SO_REUSEPORT: 12 connections land on both (all on one: p = 2^-11).
        got = [_resumed(TLS_PORT, ctx, sess) for _ in range(12)]
        check(all(got), "%s ticket resumes on every connection (both workers): %r" % (ver, got))


def test_ticket_from_another_weir_not_resumed():
    # Control for the test above: a ticket weir's keys did not make gives a full handshake.
    port = free_port()
    w2 = Weir(main_config(port)).start()
    ctx = tls_client_ctx(max_version=ssl.TLSVersion.TLSv1_3)
    sess = _first_session(port, ctx)
    check(_resumed(port, ctx, sess), "resumes on the weir that issued it")
    check(not _resumed(TLS_PORT, ctx, sess), "a foreign ticket must not resume")
    w2.stop()


def test_session_resumption_survives_reload():
    ctxs = [tls_client_ctx(min_version=v, max_version=v)
            for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2)]
    sessions = [_first_session(TLS_PORT, ctx) for ctx in ctxs]
    W.reload_and_wait(W.cfg)
    for ctx, sess in zip(ctxs, sessions):
        got = [_resumed(TLS_PORT, ctx, sess) for _ in range(6)]
        check(all(got), "ticket issued before a SIGHUP resumes after it: %r" % got)


def test_resumed_connection_issues_a_new_ticket():
    # A client that keeps its sessions in an OpenSSL client cache (wrk, curl, s_client -sess_out)
    # drops a TLS 1.3 session once it has resumed with it, so it can resume again only with a
    # ticket sent on the resumed connection. s_client -sess_out writes the session only when a
    # ticket arrives: chaining -sess_in/-sess_out fails at the third connection without one.
    d = tmpdir()
    req = b"GET /hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    prev = None
    for i in range(5):
        out = os.path.join(d, "sess%d.pem" % i)
        args = ["-tls1_3", "-ign_eof", "-sess_out", out] + (["-sess_in", prev] if prev else [])
        s = s_client(TLS_PORT, *args, data=req)
        check(s.ok, "connection %d: handshake: %r" % (i, s))
        check("HTTP/1.1 200" in s.out, "connection %d: response: %s" % (i, s.out[-300:]))
        check_eq(s.reused, i > 0, "connection %d resumed" % i)
        check(os.path.exists(out) and os.path.getsize(out) > 0,
              "connection %d (%s) brought a session ticket" % (i, "resumed" if i else "full"))
        prev = out


def _raw_tls_read_to_eof(port, request):
    """Sends <request> over TLS (an SSLObject on memory BIOs) and reads the socket to EOF.
    Returns (plaintext, how the TLS stream ended: "close_notify" or "eof")."""
    ctx = tls_client_ctx()
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname=None)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    plain, ended = b"", None
    try:
        def pump_out():
            data = outg.read()
            if data:
                sock.sendall(data)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump_out()
                data = sock.recv(65536)
                check(data, "EOF during the handshake")
                inc.write(data)
        obj.write(request)
        pump_out()
        while ended is None:
            try:
                while True:
                    d = obj.read(65536)
                    if not d:  # _ssl reads close_notify as b""
                        ended = "close_notify"
                        break
                    plain += d
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                ended = "close_notify"
            if ended:
                break
            data = sock.recv(65536)
            if not data:
                inc.write_eof()
                try:
                    plain += obj.read(65536)
                    ended = "eof"
                except ssl.SSLZeroReturnError:
                    ended = "close_notify"
                except ssl.SSLEOFError:
                    ended = "eof"
                break
            inc.write(data)
    finally:
        sock.close()
    return plain, ended or "eof"


def test_close_notify_before_fin_on_connection_close():
    for path in ("/hello", "/bytes/300000"):
        plain, ended = _raw_tls_read_to_eof(
            TLS_PORT, b"GET %s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n" % path.encode())
        check(plain.startswith(b"HTTP/1.1 200"), "%s: response: %r" % (path, plain[:80]))
        check_eq(ended, "close_notify", "%s: how weir ended the TLS stream" % path)


def _unread_body_then_read(conn_factory):
    """POSTs a head announcing 10 MB to a cluster without endpoints (answered at once with
    Connection: close), keeps sending body bytes after the answer, then reads. Returns
    (send error or None, status line, how the stream ended)."""
    c = conn_factory()
    c.send(b"POST /none/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10000000\r\n\r\n" +
           b"x" * 65536)
    time.sleep(0.3 * SLOW)
    err = None
    try:
        c.send(b"y" * 200000)
    except OSError as e:
        err = repr(e)
    time.sleep(0.3 * SLOW)
    data, ended = b"", None
    c.sock.settimeout(10)
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                ended = "fin"
                break
            data += d
    except ConnectionResetError:
        ended = "reset"
    c.stop()
    return err, data.split(b"\r\n", 1)[0], ended


def test_lingering_close_no_reset_on_unread_body():
    # Closing with the body's bytes still arriving would make the kernel answer them with a
    # reset: the client's send fails (and a reset can destroy the response it has not read).
    port = free_port()
    cfg = main_config(port)
    cfg["routes"].insert(0, route("none", "empty", path_prefix="/none/"))
    cfg["clusters"].append({"name": "empty", "endpoints": []})
    w = Weir(cfg).start()
    err, status, ended = _unread_body_then_read(lambda: Raw(w.port))
    check_eq(err, None, "plain: error sending the rest of the body after weir answered")
    check_eq(status, b"HTTP/1.1 503 Service Unavailable", "plain: status")
    check_eq(ended, "fin", "plain: how the connection ended")
    w.stop()


# ---- certificates on SIGHUP ---------------------------------------------------------------------

def _reload_weir():
    """A weir whose one certificate lives in files the test replaces; returns (weir, port,
    cert path, key path, v1, v2)."""
    v1 = C.leaf("reload-v1", ["reload.test"])
    v2 = C.leaf("reload-v2", ["reload.test"])
    d = tmpdir()
    crt, key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
    install_cert(v1, crt, key)
    port = free_port()
    w = Weir(main_config(port, listeners=[
        tls_listener(port, [{"cert_file": crt, "key_file": key}])])).start()
    return w, port, crt, key, v1, v2


def test_certificate_reread_on_sighup():
    w, port, crt, key, v1, v2 = _reload_weir()
    check(served_cert(port, "reload.test") == v1.der, "v1 served at start")
    keep = https_conn(port, sni="reload.test")
    check_eq(get_on(keep, "GET", "/hello").status, 200, "keep-alive TLS connection, request 1")
    install_cert(v2, crt, key)
    w.reload_and_wait(w.cfg)  # the config text is unchanged: only the files changed
    wait_for(lambda: served_cert(port, "reload.test") == v2.der, timeout=10,
             what="the new certificate on new connections after SIGHUP")
    check(served_cert(port) == v2.der, "also without SNI")
    for i in range(3):
        r = get_on(keep, "GET", "/hello")
        check_eq(r.status, 200, "the keep-alive TLS connection opened before the reload, "
                 "request %d after it" % (i + 2))
    check(keep.sock.getpeercert(binary_form=True) == v1.der, "that connection still has v1")
    keep.close()
    check_eq(tls_get(port=port, sni="reload.test").status, 200, "new connection works")
    w.stop()


def test_broken_certificate_reload_refused():
    w, port, crt, key, v1, v2 = _reload_weir()
    other = C.leaf("reload-other", ["other.test"])
    v_before = w.config_version()
    # 1: garbage certificate file
    write_file(crt, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    n = len(w.log())
    w.reload()
    wait_for(lambda: "cert_file" in w.log()[n:], timeout=10,
             what="an error naming cert_file in the log")
    check("listeners[0].tls.certificates[0].cert_file" in w.log()[n:],
          "the log names the field: %r" % w.log()[n:][-600:])
    check_eq(w.config_version(), v_before, "version unchanged after a broken certificate")
    check(served_cert(port, "reload.test") == v1.der, "the old certificate keeps serving")
    check_eq(tls_get(port=port).status, 200, "requests still served")
    # 2: a valid certificate with a key that does not match it
    install_cert(v2, crt, key)
    with open(other.key, "rb") as f:
        k = f.read()
    with open(key, "wb") as f:
        f.write(k)
    n = len(w.log())
    w.reload()
    wait_for(lambda: "key_file" in w.log()[n:], timeout=10,
             what="an error naming key_file in the log")
    check_eq(w.config_version(), v_before, "version unchanged after a mismatched key")
    check(served_cert(port, "reload.test") == v1.der, "the old certificate still serves")
    # 3: a missing key file
    os.unlink(key)
    n = len(w.log())
    w.reload()
    wait_for(lambda: "key_file" in w.log()[n:], timeout=10, what="an error for a missing key")
    check(served_cert(port, "reload.test") == v1.der, "the old certificate still serves")
    check(w.proc.poll() is None, "weir still running")
    # fixed: the next reload applies
    install_cert(v2, crt, key)
    w.reload_and_wait(w.cfg)
    wait_for(lambda: served_cert(port, "reload.test") == v2.der, timeout=10,
             what="v2 after a good reload")
    w.stop()


def _check_cfg(cfg):
    d = tmpdir()
    write_file(os.path.join(d, "weir.json"), json.dumps(cfg))
    return run_cmd([WEIR_BIN, "--check", "-c", "weir.json"], cwd=d)


def test_check_reports_bad_certificates():
    good, other = CERTS["default"], CERTS["exact"]
    d = tmpdir()
    garbage = write_file(os.path.join(d, "garbage.pem"), "this is not PEM\n")
    port = free_port()

    def cfg(second):
        return main_config(port, listeners=[
            {"name": "web", "address": "127.0.0.1:%d" % free_port()},
            tls_listener(port, [good, second])], access_log=None)

    p = _check_cfg(cfg(other))
    check_eq(p.returncode, 0, "--check of a good TLS config (stderr %r)" % p.stderr)
    for second, field in (
            ({"cert_file": os.path.join(d, "missing.crt"), "key_file": other.key}, "cert_file"),
            ({"cert_file": garbage, "key_file": other.key}, "cert_file"),
            ({"cert_file": other.cert, "key_file": garbage}, "key_file"),
            ({"cert_file": other.cert, "key_file": os.path.join(d, "missing.key")}, "key_file"),
            ({"cert_file": other.cert, "key_file": good.key}, "key_file")):
        p = _check_cfg(cfg(second))
        check_eq(p.returncode, 1, "--check exit code for a bad %s (stderr %r)"
                 % (field, p.stderr))
        want = "weir.json: listeners[1].tls.certificates[1].%s: " % field
        check(any(l.startswith(want) for l in p.stderr.splitlines()),
              "stderr names %s: %r" % (want, p.stderr))
    # And weir itself refuses to start with it.
    w = Weir(cfg({"cert_file": garbage, "key_file": other.key}))
    w.start(wait_ready=False)
    code = w.wait_exit(timeout=30)
    check(code != 0, "weir must not start with a bad certificate (exit %r)" % code)
    check("certificates[1].cert_file" in w.log(), "its log names the field: %r" % w.log_tail())
    w.stop(expect_code=None)


# ---- redirects, HSTS, X-Forwarded-Proto ---------------------------------------------------------

def test_redirect_https_on_plain_request():
    r = W.http("GET", "/secure/p/q?x=1&y=%20z", {"Host": "shop.test:%d" % W.port})
    check_eq(r.status, 308, "plain request to a redirect_https route")
    check_eq(r.header("location"), "https://shop.test:%d/secure/p/q?x=1&y=%%20z" % TLS_PORT,
             "Location: same host and path and query, TLS listener's port")
    r = W.http("POST", "/secure/x", {"Host": "shop.test"}, body=b"abc")
    check_eq(r.status, 308, "POST is redirected too (308 keeps the method)")
    check_eq(r.header("location"), "https://shop.test:%d/secure/x" % TLS_PORT, "no query")
    r = W.http("GET", "/secure/v6", {"Host": "[::1]:%d" % W.port})
    check_eq(r.header("location"), "https://[::1]:%d/secure/v6" % TLS_PORT, "IPv6 literal host")
    with O._lock:
        leaked = [l for l in O.requests if any(
            " %s" % p in l for p in ("/secure/p/q", "/secure/x ", "/secure/v6 "))]
    check_eq(leaked, [], "redirected requests that reached the origin")
    r = tls_get("/secure/p?x=1", headers={"Host": "shop.test"})
    check_eq((r.status, r.body), (200, b"hello from o\n"), "the same route over TLS is proxied")
    r = W.http("GET", "/hello")
    check_eq(r.status, 200, "other routes are not redirected")


def test_redirect_https_port_omitted_for_443():
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 443))
        s.close()
    except OSError:
        print("  (127.0.0.1:443 cannot be bound here: only the keep-the-port case is tested)")
        return
    w = Weir(main_config(443)).start()
    r = w.http("GET", "/secure/a?b=c", {"Host": "shop.test:%d" % w.port})
    check_eq(r.status, 308)
    check_eq(r.header("location"), "https://shop.test/secure/a?b=c", "no :443 in Location")
    w.stop()


def test_hsts_on_tls_responses_only():
    r = tls_get("/hsts/x")
    check_eq(r.status, 200)
    check_eq(r.header_all("strict-transport-security"), ["max-age=1000; includeSubDomains"],
             "HSTS on a TLS response")
    r = tls_get("/hsts-preload/x")
    check_eq(r.header("strict-transport-security"), "max-age=31536000; preload", "preload form")
    r = W.http("GET", "/hsts/x")
    check_eq(r.status, 200)
    check_eq(r.header("strict-transport-security"), None, "no HSTS on a plain response")
    r = tls_get("/hello")
    check_eq(r.header("strict-transport-security"), None, "no HSTS on a route without it")
    r = tls_get("/hsts/status/404")
    check_eq(r.status, 404)
    check(r.header("strict-transport-security") is not None, "HSTS on an error from the origin")


def test_x_forwarded_proto_https():
    j = tls_get("/echo", headers={"X-Forwarded-Proto": "http", "Host": "shop.test"}).json()
    hd = [(k.lower(), v) for k, v in j["headers"]]
    check_eq([v for k, v in hd if k == "x-forwarded-proto"], ["https"], "X-Forwarded-Proto")
    check_eq([v for k, v in hd if k == "x-forwarded-host"], ["shop.test"], "X-Forwarded-Host")
    j = W.http("GET", "/echo", {"X-Forwarded-Proto": "https"}).json()
    check_eq([v for k, v in j["headers"] if k.lower() == "x-forwarded-proto"], ["http"],
             "plain requests say http")


# ---- HTTP/1.1 over TLS --------------------------------------------------------------------------

def test_keepalive_and_pipelining_over_tls():
    c = https_conn(TLS_PORT)
    for i in range(10):
        r = get_on(c, "GET", "/echo?n=%d" % i)
        check_eq(r.status, 200, "request %d on one TLS connection" % i)
        check_eq(r.json()["query"], "n=%d" % i)
    c.close()
    c = TlsRaw(TLS_PORT)
    c.send(b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % i for i in range(3)))
    got = [c.read_response().json()["query"] for _ in range(3)]
    check_eq(got, ["n=0", "n=1", "n=2"], "pipelined responses over TLS in order")
    c.send(b"GET /hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    check_eq(c.read_response().status, 200)
    check(c.is_closed(), "Connection: close closes the TLS connection")
    c.stop()


def test_50mib_download_over_tls():
    n = 50 * 1024 * 1024
    r = tls_get("/bytes/%d" % n, timeout=120)
    check_eq(r.status, 200)
    check_eq(len(r.body), n, "50 MiB download length")
    check(r.body == origin_bytes(n), "50 MiB download content")
    r = tls_get("/bytes/%d?chunked=1" % (3 * 1024 * 1024 + 7), timeout=60)
    check(r.body == origin_bytes(3 * 1024 * 1024 + 7), "chunked download over TLS")


def test_50mib_upload_over_tls():
    n = 50 * 1024 * 1024
    r = https_request(TLS_PORT, "POST", "/sink", body=b"u" * n, timeout=120)
    check_eq(r.status, 200)
    check_eq(r.json()["body_len"], n, "50 MiB upload length at the origin")
    c = TlsRaw(TLS_PORT, timeout=60)
    pieces = [b"a" * 1000, b"b" * 300000, b"c" * 5]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    c.send(b"POST /sink HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check_eq(c.read_response().json()["body_len"], 301005, "chunked upload over TLS")
    c.stop()


def test_websocket_over_tls():
    c = TlsRaw(TLS_PORT, alpn=["http/1.1"])
    c.send(b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 101, "upgrade answer over TLS")
    for msg in (b"ping-1", b"\x00\x01binary\xff", b"z" * 300000):
        c.send(msg)
        got, c.buf = c.buf, b""
        while len(got) < len(msg):
            check(c._fill(), "upgraded TLS connection closed early")
            got, c.buf = got + c.buf, b""
        check(got == msg, "echo of %d bytes through the TLS tunnel" % len(msg))
    c.stop()


def test_garbage_and_aborted_handshakes():
    # Plain HTTP to the TLS port, a truncated ClientHello, and an idle connection: each is
    # closed or ignored, and weir keeps serving.
    c = Raw(TLS_PORT)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    try:
        data = c.read_until_close(10)
    except AssertionError:
        pass
    check(not data.startswith(b"HTTP/1.1 200"), "plain HTTP on the TLS port is not served")
    c.stop()
    c = Raw(TLS_PORT)
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
    c.stop()
    idle = Raw(TLS_PORT)
    for _ in range(5):
        check_eq(tls_get().status, 200, "TLS request next to broken handshakes")
    idle.stop()
    check(W.proc.poll() is None, "weir alive")


def test_slow_handshakes_time_out():
    # Slow-loris on TLS: a connection that never finishes its handshake, or never sends a
    # request after it, is closed by client_header_timeout_ms.
    port = free_port()
    w = Weir(main_config(port, listeners=[tls_listener(port, [CERTS["default"]])],
                         client_header_timeout_ms=1000)).start()
    t0 = time.monotonic()
    silent = Raw(port)
    partial = Raw(port)
    partial.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
    quiet = TlsRaw(port)   # handshake done, no request
    for c, what in ((silent, "no ClientHello"), (partial, "half a ClientHello"),
                    (quiet, "no request after the handshake")):
        check(c.is_closed(15), "%s: closed by the header timeout" % what)
        c.stop()
    check(time.monotonic() - t0 > 0.9, "not closed before the timeout")
    check_eq(tls_get(port=port).status, 200, "weir serves TLS after that")
    w.stop()


def test_many_concurrent_tls_connections():
    out, errs = [], []

    def client(i):
        try:
            c = https_conn(TLS_PORT, sni="www.example.com" if i % 2 else "dual.test")
            for _ in range(5):
                out.append(get_on(c, "GET", "/hello").status)
            c.close()
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))

    ts = [threading.Thread(target=client, args=(i,)) for i in range(30)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    check_eq(errs, [], "client errors")
    check_eq(out, [200] * 150, "150 requests on 30 TLS connections")


if __name__ == "__main__":
    run()
