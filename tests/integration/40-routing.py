"""Route selection (INTERFACES §2): host groups (exact > longest wildcard > no host, no
fall-through), path ranks (exact > longest prefix > regex), header conditions, weighted
clusters, rollouts (file and admin API), absolute-form targets."""

from harness import *

W = None
O = {}
NAMES = ["shop", "wild", "wildapi", "default", "exact", "p", "plong", "re", "rep", "beta",
         "stable", "beta2", "a", "b", "blue", "green", "only", "abs"]


def routes_config(green_weight=0):
    r = [
        route("shop", "shop", host="shop.test"),
        route("wild", "wild", host="*.test"),
        route("wildapi", "wildapi", host="*.api.test"),
        route("only", "only", host="only.test", path_prefix="/only/"),
        route("re", "re", host="re.test", path_regex="/x/[0-9]+"),
        route("rep", "rep", host="re.test", path_prefix="/y/"),
        route("stable", "stable", host="hdr.test"),
        route("beta", "beta", host="hdr.test", headers=[{"name": "x-beta", "exact": "1"}]),
        route("beta2", "beta2", host="hdr.test",
              headers=[{"name": "x-beta", "exact": "1"}, {"name": "x-two", "exact": "2"}]),
        route("abs", "abs", host="abs.test"),
        route("split", host="split.test", weighted_clusters=[{"cluster": "a", "weight": 90},
                                                             {"cluster": "b", "weight": 10}]),
        {"name": "ro", "match": {"host": "ro.test", "path_prefix": "/"}, "rollout": "ro"},
        route("re-default", "re", path_regex="/regex/[a-z]+"),
        route("plong", "plong", path_prefix="/p/long/"),
        route("p", "p", path_prefix="/p/"),
        route("exact", "exact", path_exact="/p/exact"),
        route("default", "default", path_prefix="/"),
    ]
    clusters = [cluster(n, O[n]) for n in NAMES]
    rollouts = [{"name": "ro", "blue": "blue", "green": "green", "green_weight": green_weight,
                 "sticky": False}]
    return {"routes": r, "clusters": clusters, "rollouts": rollouts}


def setup_module():
    global W
    for n in NAMES:
        O[n] = Origin(n).start()
    W = Weir(routes_config()).start()


def who(path, host=None, headers=None, conn=None):
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    r = get_on(conn, "GET", path, h) if conn is not None else W.http("GET", path, h)
    if r.status != 200:
        return r.status
    return r.header("X-Origin")


def test_exact_host_beats_wildcard():
    check_eq(who("/", "shop.test"), "shop", "shop.test")


def test_wildcard_host():
    check_eq(who("/", "foo.test"), "wild", "foo.test")
    check_eq(who("/", "a.b.test"), "wild", "a.b.test matches *.test")


def test_longest_wildcard():
    check_eq(who("/", "v1.api.test"), "wildapi", "v1.api.test")


def test_wildcard_does_not_match_bare_suffix():
    # "*.test" needs at least one label before ".test"; "test" alone is the no-host group.
    check_eq(who("/", "test"), "default", "bare 'test'")


def test_no_host_group():
    check_eq(who("/", "unknown.example"), "default", "unmatched host")


def test_host_case_and_port_ignored():
    check_eq(who("/", "SHOP.Test:8080"), "shop", "SHOP.Test:8080")
    check_eq(who("/", "Foo.TEST:1"), "wild", "Foo.TEST:1")


def test_no_fall_through_404():
    r = W.http("GET", "/other", {"Host": "only.test"})
    check_eq(r.status, 404, "only.test has no route for /other; no fall-through")
    check(len(r.body) < 1000, "short 404 body")
    check_eq(who("/only/x", "only.test"), "only")


def test_path_exact_beats_prefix():
    check_eq(who("/p/exact"), "exact", "/p/exact")
    check_eq(who("/p/exact?q=1"), "exact", "query ignored for matching")
    check_eq(who("/p/exactly"), "p", "/p/exactly is not the exact path")


def test_longest_prefix():
    check_eq(who("/p/long/x"), "plong", "/p/long/x")
    check_eq(who("/p/lon"), "p", "/p/lon")
    check_eq(who("/p/"), "p", "/p/")


def test_prefix_beats_regex():
    # "/" prefix matches too, and a prefix ranks above any regex.
    check_eq(who("/regex/abc"), "default", "prefix / beats path_regex")


def test_regex_anchored_full_match():
    check_eq(who("/x/123", "re.test"), "re", "/x/123")
    check_eq(who("/x/123?a=b", "re.test"), "re", "query not part of the path")
    check_eq(who("/x/12a", "re.test"), 404, "regex must match the whole path")
    check_eq(who("/pre/x/123", "re.test"), 404, "regex is anchored at the start")
    check_eq(who("/y/1", "re.test"), "rep", "/y/1")


def test_header_conditions():
    check_eq(who("/", "hdr.test", {"x-beta": "1"}), "beta", "x-beta: 1")
    check_eq(who("/", "hdr.test", {"X-BETA": "1"}), "beta", "header names case-insensitive")
    check_eq(who("/", "hdr.test", {"x-beta": "2"}), "stable", "x-beta: 2")
    check_eq(who("/", "hdr.test"), "stable", "no x-beta")


def test_more_header_conditions_first():
    check_eq(who("/", "hdr.test", {"x-beta": "1", "x-two": "2"}), "beta2",
             "two matching header conditions beat one")


def test_weighted_clusters_split():
    c = W.conn()
    counts = {"a": 0, "b": 0}
    for _ in range(1000):
        counts[who("/", "split.test", conn=c)] += 1
    c.close()
    check(abs(counts["a"] - 900) <= 50, "90/10 split over 1000: %r" % counts)


def test_rollout_all_blue_at_zero():
    c = W.conn()
    got = {who("/", "ro.test", conn=c) for _ in range(50)}
    c.close()
    check_eq(got, {"blue"}, "green_weight 0")


def test_rollout_force_colour_header():
    check_eq(who("/", "ro.test", {"x-weir-track": "green"}), "green", "x-weir-track: green")
    check_eq(who("/", "ro.test", {"x-weir-track": "blue"}), "blue", "x-weir-track: blue")


def rollout_obj():
    r = W.admin("GET", "/rollouts")
    check_eq(r.status, 200, "/rollouts")
    for ro in r.json()["rollouts"]:
        if ro["name"] == "ro":
            return ro
    raise AssertionError("rollout ro missing from /rollouts")


def test_rollouts_view():
    ro = rollout_obj()
    for k in ("name", "blue", "green", "green_weight", "sticky", "stats"):
        check(k in ro, "rollout key %s: %r" % (k, ro))
    check_eq((ro["blue"], ro["green"]), ("blue", "green"))
    check(ro["stats"]["blue"]["requests"] >= 1, "blue requests counted: %r" % ro["stats"])


def test_rollout_admin_put_and_traffic():
    r = W.admin("PUT", "/rollouts/ro", {"green_weight": 100})
    check_eq(r.status, 200, "PUT /rollouts/ro")
    j = r.json()
    check_eq(j["green_weight"], 100, "answer has the new weight")
    check("version" in j, "answer has version")
    got = {who("/", "ro.test") for _ in range(30)}
    check_eq(got, {"green"}, "green_weight 100 via admin")
    r = W.admin("POST", "/rollouts/ro/rollback")
    check_eq(r.status, 200, "rollback")
    check_eq(r.json()["green_weight"], 0)
    check_eq({who("/", "ro.test") for _ in range(30)}, {"blue"}, "after rollback")
    r = W.admin("POST", "/rollouts/ro/promote")
    check_eq(r.json()["green_weight"], 100, "promote")
    check_eq({who("/", "ro.test") for _ in range(10)}, {"green"}, "after promote")
    W.admin("PUT", "/rollouts/ro", {"green_weight": 0})


def test_rollout_admin_errors():
    for body in ({"green_weight": 101}, {"green_weight": -1}, {"green_weight": "5"},
                 {"green_weight": 5, "x": 1}, {}):
        r = W.admin("PUT", "/rollouts/ro", body)
        check_eq(r.status, 400, "PUT %r" % body)
        check("error" in r.json(), "error object")
    check_eq(W.admin("PUT", "/rollouts/nope", {"green_weight": 5}).status, 404, "unknown name")


def test_rollout_split_50():
    W.admin("PUT", "/rollouts/ro", {"green_weight": 50})
    c = W.conn()
    counts = {"blue": 0, "green": 0}
    for _ in range(400):
        counts[who("/", "ro.test", conn=c)] += 1
    c.close()
    W.admin("PUT", "/rollouts/ro", {"green_weight": 0})
    check(abs(counts["green"] - 200) <= 40, "50%% green over 400: %r" % counts)


def test_rollout_weight_from_file_reload():
    W.admin("PUT", "/rollouts/ro", {"green_weight": 0})
    W.reload_and_wait(routes_config(green_weight=100))
    check_eq({who("/", "ro.test") for _ in range(20)}, {"green"}, "file green_weight 100")
    W.reload_and_wait(routes_config(green_weight=0))
    check_eq({who("/", "ro.test") for _ in range(20)}, {"blue"}, "file green_weight 0")


def test_absolute_form_routed_by_authority():
    c = W.raw()
    c.send(b"GET http://abs.test/echo HTTP/1.1\r\nHost: other.example\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "absolute-form request")
    check_eq(r.header("X-Origin"), "abs", "routed by the target's authority")
    check_eq(r.json()["target"], "/echo", "origin gets an origin-form target")


if __name__ == "__main__":
    run()
