"""Sticky rollouts (INTERFACES §2): with "sticky": true a client keeps its colour through a
`weir-track` cookie while the weight moves, unless its colour's weight dropped to 0; the
request header `x-weir-track: blue|green` forces a colour; a rollout without sticky sets no
cookie and ignores one. Clients here are urllib openers, each with its own
http.cookiejar.CookieJar, so the cookie also has to be one a standard cookie jar keeps and
sends back. Design: docs/rollout-tests.md."""

import http.cookiejar
import http.cookies
import urllib.request

from harness import *

TEST_TIMEOUT = 120
CLIENTS = 200

O = {}
W = None


def setup_module():
    global W
    for n in ("blue", "green"):
        O[n] = Origin(n).start()
    port = free_port()
    W = Weir({
        "workers": 2,
        "listeners": [{"name": "web", "address": "127.0.0.1:%d" % port, "h2c": True}],
        "routes": [{"name": "st", "match": {"path_prefix": "/st/"}, "rollout": "st"},
                   {"name": "ns", "match": {"path_prefix": "/ns/"}, "rollout": "ns"}],
        "clusters": [cluster("blue", O["blue"]), cluster("green", O["green"])],
        "rollouts": [{"name": "st", "blue": "blue", "green": "green", "green_weight": 0,
                      "sticky": True},
                     {"name": "ns", "blue": "blue", "green": "green", "green_weight": 0,
                      "sticky": False}],
    }).start()


def set_weight(name, weight):
    r = W.admin("PUT", "/rollouts/" + name, {"green_weight": weight})
    check_eq(r.status, 200, "PUT /rollouts/%s %d" % (name, weight))
    check_eq(r.json()["green_weight"], weight, "PUT answer's green_weight")


class Client:
    """A browser-like client: its own cookie jar, a new connection per request (urllib)."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path, headers=None):
        """Returns (colour that answered, [Set-Cookie values])."""
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (W.port, path),
                                     headers=headers or {})
        with self.opener.open(req, timeout=10 * SLOW) as r:
            body = r.read()
            colour = r.headers.get("X-Origin")
            check_eq(body, ("hello from %s\n" % colour).encode(), "body of %s" % colour)
            return colour, r.headers.get_all("Set-Cookie") or []

    def cookie(self):
        values = [c.value for c in self.jar if c.name == "weir-track"]
        return values[0] if values else None


def check_track_cookie(set_cookies, colour, what):
    """Exactly one Set-Cookie, weir-track=<colour>, host-only, Path=/, HttpOnly, no expiry."""
    check_eq(len(set_cookies), 1, "%s: Set-Cookie fields %r" % (what, set_cookies))
    c = http.cookies.SimpleCookie()
    c.load(set_cookies[0])
    check("weir-track" in c, "%s: %r is not weir-track" % (what, set_cookies[0]))
    m = c["weir-track"]
    check_eq(m.value, colour, "%s: cookie value" % what)
    check_eq(m["path"], "/", "%s: Path" % what)
    check(m["httponly"], "%s: HttpOnly missing in %r" % (what, set_cookies[0]))
    check(not m["domain"] and not m["expires"] and not m["max-age"],
          "%s: a host-only session cookie expected, got %r" % (what, set_cookies[0]))


def population(n, path="/st/x"):
    """<n> fresh clients, each after its first request; returns [(client, colour)]."""
    out = []
    for i in range(n):
        c = Client()
        colour, sc = c.get(path)
        check_in(colour, ("blue", "green"), "client %d colour" % i)
        check_track_cookie(sc, colour, "first answer to client %d" % i)
        check_eq(c.cookie(), colour, "client %d's jar keeps the cookie" % i)
        out.append((c, colour))
    return out


def check_kept(pop, step, repeat=2):
    for i, (c, colour) in enumerate(pop):
        for k in range(repeat):
            got, sc = c.get("/st/x")
            check_eq(got, colour, "client %d (%s) at %s, request %d" % (i, colour, step, k))
            check_eq(sc, [], "client %d at %s: a kept colour needs no new cookie" % (i, step))


def count(pop, colour):
    return sum(1 for _, c in pop if c == colour)


def test_sticky_through_weight_moves():
    set_weight("st", 10)
    pop = population(CLIENTS)
    greens = count(pop, "green")
    print("    at 10: %d of %d clients green" % (greens, CLIENTS), flush=True)
    # Bin(200, 0.1): P(< 5 green) is 8e-6; both colours are needed for the test to mean much.
    check(5 <= greens <= 45, "%d green clients of %d at weight 10" % (greens, CLIENTS))
    check_kept(pop, "10", repeat=1)
    for weight in (50, 90):
        set_weight("st", weight)
        check_kept(pop, str(weight))
    # The weight really moved: fresh clients at 90 are mostly green (P(< 150) is 3e-10).
    fresh = population(CLIENTS)
    print("    at 90: %d of %d fresh clients green" % (count(fresh, "green"), CLIENTS),
          flush=True)
    check(count(fresh, "green") >= 150, "fresh clients at 90: %d green" % count(fresh, "green"))


def test_colour_at_zero_weight_is_moved():
    set_weight("st", 50)
    pop = population(CLIENTS // 2)
    check(0 < count(pop, "green") < len(pop), "both colours at 50: %d green" % count(pop, "green"))
    # Green's weight drops to 0: green clients move to blue with a new cookie, blue ones stay.
    set_weight("st", 0)
    for i, (c, colour) in enumerate(pop):
        got, sc = c.get("/st/x")
        check_eq(got, "blue", "client %d (%s) at 0" % (i, colour))
        if colour == "green":
            check_track_cookie(sc, "blue", "client %d moved to blue" % i)
        else:
            check_eq(sc, [], "client %d stays blue: no new cookie" % i)
        check_eq(c.cookie(), "blue", "client %d's jar after the move" % i)
    # Then blue's weight drops to 0 (promote): everyone moves to green.
    set_weight("st", 100)
    for i, (c, _) in enumerate(pop):
        got, sc = c.get("/st/x")
        check_eq(got, "green", "client %d at 100" % i)
        check_track_cookie(sc, "green", "client %d moved to green" % i)
    # And keeps green when blue comes back.
    set_weight("st", 50)
    check_kept([(c, "green") for c, _ in pop], "50 after the promote")


def test_header_forces_colour():
    c = Client()
    for weight, forced in ((0, "green"), (100, "blue"), (50, "green"), (50, "blue")):
        set_weight("st", weight)
        for k in range(10):
            got, sc = c.get("/st/x", {"x-weir-track": forced})
            check_eq(got, forced, "x-weir-track: %s at weight %d" % (forced, weight))
            check_eq(sc, [], "a forced answer sets no cookie")
    check_eq(c.cookie(), None, "no cookie after forced requests only")
    # A client with a cookie: the header wins, and the cookie stays as it was.
    set_weight("st", 50)
    c = population(1)[0][0]
    mine = c.cookie()
    other = "blue" if mine == "green" else "green"
    for _ in range(5):
        check_eq(c.get("/st/x", {"x-weir-track": other})[0], other, "header beats cookie")
        check_eq(c.get("/st/x")[0], mine, "cookie again without the header")
    check_eq(c.cookie(), mine, "cookie unchanged by forced requests")
    # Any other value is no colour: the weight decides.
    for weight, want in ((0, "blue"), (100, "green")):
        set_weight("st", weight)
        got, _ = Client().get("/st/x", {"x-weir-track": "purple"})
        check_eq(got, want, "x-weir-track: purple at %d" % weight)
    # The header forces non-sticky rollouts too.
    set_weight("ns", 0)
    check_eq(Client().get("/ns/x", {"x-weir-track": "green"}), ("green", []),
             "x-weir-track on a non-sticky rollout")


def test_non_sticky_sets_no_cookie_and_ignores_one():
    set_weight("ns", 50)
    c = Client()
    seen = set()
    for _ in range(60):
        colour, sc = c.get("/ns/x")
        check_eq(sc, [], "non-sticky answer with Set-Cookie")
        seen.add(colour)
    check_eq(seen, {"blue", "green"}, "colours at 50 (2^-59 to see one only)")
    seen = {Client().get("/ns/x", {"Cookie": "weir-track=green"})[0] for _ in range(60)}
    check_eq(seen, {"blue", "green"}, "a weir-track cookie is ignored when not sticky")
    set_weight("ns", 0)
    got = {Client().get("/ns/x", {"Cookie": "weir-track=green"})[0] for _ in range(20)}
    check_eq(got, {"blue"}, "weight 0 with a green cookie, not sticky")


def test_cookie_parsing():
    set_weight("st", 50)
    cases = [
        "weir-track=green",
        "a=1; weir-track=green; b=2",
        "a=1;weir-track=green",
        "xweir-track=blue; weir-track=green",
        "theme; weir-track=green",  # a nameless crumb, as browsers send for document.cookie="x"
    ]
    for cookie in cases:
        for k in range(20):
            got, sc = Client().get("/st/x", {"Cookie": cookie})
            check_eq(got, "green", "Cookie: %s (request %d)" % (cookie, k))
            check_eq(sc, [], "Cookie: %s: a kept colour needs no new cookie" % cookie)
    # An unknown value is replaced by a valid cookie.
    got, sc = Client().get("/st/x", {"Cookie": "weir-track=purple"})
    check_track_cookie(sc, got, "after weir-track=purple")


def test_h2_cookie_and_header():
    set_weight("st", 50)
    h = H2Raw(W.port)
    s = h.get("/st/x")
    check_eq(s.status, 200, "h2 first answer")
    colour = s.header("x-origin")
    check_track_cookie(s.header_all("set-cookie"), colour, "h2 first answer")
    other = "blue" if colour == "green" else "green"
    # HTTP/2 clients may split cookies into several fields (RFC 9113 §8.2.3).
    for k in range(20):
        s = h.get("/st/x", headers=[("cookie", "a=1"), ("cookie", "weir-track=" + colour)])
        check_eq(s.header("x-origin"), colour, "h2 split cookie, request %d" % k)
        check_eq(s.header_all("set-cookie"), [], "h2 kept colour: no new cookie")
        s = h.get("/st/x", headers=[("cookie", "weir-track=" + colour),
                                    ("x-weir-track", other)])
        check_eq(s.header("x-origin"), other, "h2 x-weir-track beats the cookie")
    h.stop()


def test_stats_count_each_colour():
    before = {ro["name"]: ro for ro in W.admin("GET", "/rollouts").json()["rollouts"]}["st"]
    set_weight("st", 50)
    got = {"blue": 0, "green": 0}
    for colour in ("blue", "green") * 15:
        got[Client().get("/st/x", {"x-weir-track": colour})[0]] += 1
    after = {ro["name"]: ro for ro in W.admin("GET", "/rollouts").json()["rollouts"]}["st"]
    check(after["sticky"] is True, "GET /rollouts sticky: %r" % after)
    for colour in ("blue", "green"):
        check_eq(after["stats"][colour]["requests"] - before["stats"][colour]["requests"],
                 got[colour], "GET /rollouts stats.%s.requests" % colour)


if __name__ == "__main__":
    run()
