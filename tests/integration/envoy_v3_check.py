"""A strict check of Envoy v3 xDS JSON against the schema of Envoy's real protos.

check_discovery_response(text) returns the list of problems of a DiscoveryResponse body (empty
when it is fine). It does what a strict protobuf JSON parser of Envoy's API does, and then
what Envoy's validation (protoc-gen-validate rules) does, for the messages weir emits:
  - every key must be a field of its message, by proto name or JSON (lowerCamel) name, once;
  - values must have the field's JSON type: enums as their names, 64-bit integers as strings,
    32-bit ones as numbers in range, google.protobuf.Duration as "<seconds>[.fraction]s",
    wrapper types as plain values, bytes as base64, maps as objects;
  - google.protobuf.Any needs "@type" (first, as printers write it) naming a known message;
  - at most one field of a oneof, exactly one of a required oneof;
  - the validate rules: required, min_len, min/max_items, gt/gte/lt/lte, duration bounds.
It is stricter than a parser in two ways that suit a test of weir's output: JSON null is
refused (weir never sends it), and so are deprecated fields and message types outside the
schema (weir should not emit them). The schema (envoy_v3_schema.py) is generated from the
.proto files by tools/gen-envoy-v3-schema.py.
"""

import base64
import json
import re

from envoy_v3_schema import ENUMS, MESSAGES

TYPE_PREFIX = "type.googleapis.com/"
RESPONSE = "envoy.service.discovery.v3.DiscoveryResponse"
DURATION_RE = re.compile(r"^(-)?(\d+)(?:\.(\d{3}|\d{6}|\d{9}))?s$")
INT_RANGES = {
    "int32": (-2**31, 2**31 - 1), "sint32": (-2**31, 2**31 - 1), "sfixed32": (-2**31, 2**31 - 1),
    "uint32": (0, 2**32 - 1), "fixed32": (0, 2**32 - 1),
    "int64": (-2**63, 2**63 - 1), "sint64": (-2**63, 2**63 - 1), "sfixed64": (-2**63, 2**63 - 1),
    "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1),
}
WRAPPERS = {
    "google.protobuf.UInt32Value": "uint32", "google.protobuf.Int32Value": "int32",
    "google.protobuf.UInt64Value": "uint64", "google.protobuf.Int64Value": "int64",
    "google.protobuf.BoolValue": "bool", "google.protobuf.StringValue": "string",
    "google.protobuf.DoubleValue": "double", "google.protobuf.FloatValue": "float",
    "google.protobuf.BytesValue": "bytes",
}


class Obj(list):
    """A JSON object as its (key, value) pairs, in order, duplicates kept."""


def loads(text):
    return json.loads(text, object_pairs_hook=Obj)


def duration_ns(s):
    m = DURATION_RE.match(s) if isinstance(s, str) else None
    if m is None:
        return None
    frac = (m.group(3) or "").ljust(9, "0")
    ns = int(m.group(2)) * 10**9 + int(frac or 0)
    return -ns if m.group(1) else ns


class Checker:
    def __init__(self):
        self.errors = []

    def err(self, path, msg):
        self.errors.append("%s: %s" % (path or "<root>", msg))

    # -- scalars --

    def scalar(self, v, t, path):
        """Checks <v> as scalar type <t>; returns its numeric value (for range rules) or None."""
        if t == "string":
            if not isinstance(v, str):
                self.err(path, "must be a string, not %r" % (v,))
        elif t == "bytes":
            try:
                base64.b64decode(v, validate=True)
            except (TypeError, ValueError):
                self.err(path, "must be base64, not %r" % (v,))
        elif t == "bool":
            if not isinstance(v, bool):
                self.err(path, "must be true or false, not %r" % (v,))
        elif t in ("double", "float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.err(path, "must be a number, not %r" % (v,))
            else:
                return v
        elif t in INT_RANGES:
            lo, hi = INT_RANGES[t]
            if t.endswith("64"):
                # The JSON mapping writes 64-bit integers as strings (parsers take numbers
                # too; printers never write them).
                if not isinstance(v, str) or not re.match(r"^-?\d+$", v):
                    self.err(path, "%s must be a decimal string, not %r" % (t, v))
                    return None
                n = int(v)
            else:
                if isinstance(v, bool) or not isinstance(v, int):
                    self.err(path, "%s must be an integer number, not %r" % (t, v))
                    return None
                n = v
            if not lo <= n <= hi:
                self.err(path, "%d is out of range for %s" % (n, t))
            return n
        else:
            self.err(path, "unknown scalar type %s" % t)
        return None

    # -- values of a field type --

    def value(self, v, t, path):
        if v is None:
            self.err(path, "null (weir never sends null)")
            return None
        if t.startswith("enum:"):
            name = t[5:]
            if not isinstance(v, str) or v not in ENUMS.get(name, ()):
                self.err(path, "%r is not a value of enum %s" % (v, name))
            return None
        if t.startswith("msg:"):
            return self.message(v, t[4:], path)
        if t.startswith("map:"):
            _, kt, vt = t.split(":", 2)
            if not isinstance(v, Obj):
                self.err(path, "a map must be a JSON object")
                return None
            seen = set()
            for k, item in v:
                if k in seen:
                    self.err(path, "map key %r given twice" % k)
                seen.add(k)
                self.value(item, vt, "%s[%r]" % (path, k))
            return None
        return self.scalar(v, t, path)

    # -- messages --

    def message(self, v, name, path):
        """Checks <v> as message <name>; returns a number for wrappers (for range rules) or the
        Duration in nanoseconds, else None."""
        if name == "google.protobuf.Duration":
            ns = duration_ns(v)
            if ns is None:
                self.err(path, "Duration must be like \"1.500s\" (0, 3, 6 or 9 decimals), "
                         "not %r" % (v,))
            return ns
        if name in WRAPPERS:
            return self.scalar(v, WRAPPERS[name], path)
        if not isinstance(v, Obj):
            self.err(path, "%s must be a JSON object, not %r" % (name, v))
            return None
        if name == "google.protobuf.Struct":
            return None
        if name == "google.protobuf.Empty":
            if len(v) > 0:
                self.err(path, "google.protobuf.Empty must be {}")
            return None
        if name == "google.protobuf.Any":
            return self.any(v, path)
        self.fields(v, name, path)
        return None

    def any(self, v, path):
        if len(v) == 0 or v[0][0] != "@type":
            self.err(path, "Any must start with \"@type\"")
        types = [t for k, t in v if k == "@type"]
        if len(types) != 1 or not isinstance(types[0], str):
            self.err(path, "Any needs exactly one string \"@type\"")
            return None
        url = types[0]
        if not url.startswith(TYPE_PREFIX):
            self.err(path, "@type %r does not start with %s" % (url, TYPE_PREFIX))
            return None
        inner = url[len(TYPE_PREFIX):]
        if inner not in MESSAGES:
            self.err(path, "@type %r is not a message weir is expected to send" % url)
            return None
        self.fields(Obj((k, x) for k, x in v if k != "@type"), inner, "%s<%s>" % (path, inner))
        return None

    def fields(self, v, name, path):
        if name not in MESSAGES:
            self.err(path, "message type %s is not in the schema (not expected from weir)" % name)
            return
        _file, required_oneofs, fields = MESSAGES[name]
        by_key = {}
        for fname, f in fields.items():
            by_key[fname] = fname
            by_key[f[0]] = fname
        present, oneofs = set(), {}
        for key, item in v:
            fp = "%s.%s" % (path, key)
            fname = by_key.get(key)
            if fname is None:
                self.err(fp, "%s has no field %r" % (name, key))
                continue
            if fname in present:
                self.err(fp, "field %s given twice" % fname)
                continue
            present.add(fname)
            jname, t, repeated, oneof, rules, deprecated = fields[fname]
            if deprecated:
                self.err(fp, "deprecated field")
            if oneof is not None:
                oneofs.setdefault(oneof, []).append(fname)
            if repeated:
                if not isinstance(item, list):
                    self.err(fp, "a repeated field must be a JSON array")
                    continue
                for i, e in enumerate(item):
                    self.value(e, t, "%s[%d]" % (fp, i))
                self.rules_repeated(item, rules, fp)
            else:
                got = self.value(item, t, fp)
                self.rules_single(item, got, t, rules, fp)
        for oneof, members in oneofs.items():
            if len(members) > 1:
                self.err(path, "oneof %s has several fields set: %s" % (oneof, members))
        for oneof in required_oneofs:
            if oneof not in oneofs:
                self.err(path, "%s needs one field of oneof %s" % (name, oneof))
        for fname, f in fields.items():
            jname, t, repeated, oneof, rules, deprecated = f
            if fname in present or oneof is not None:
                continue
            if rules.get("required"):
                self.err(path, "%s.%s is required" % (name, fname))
            if repeated and rules.get("min_items", 0) > 0:
                self.err(path, "%s.%s needs at least %d items" % (name, fname, rules["min_items"]))

    def rules_repeated(self, items, rules, path):
        if "min_items" in rules and len(items) < rules["min_items"]:
            self.err(path, "needs at least %d items" % rules["min_items"])
        if "max_items" in rules and len(items) > rules["max_items"]:
            self.err(path, "takes at most %d items" % rules["max_items"])

    def rules_single(self, item, got, t, rules, path):
        if isinstance(item, str) and t == "string":
            if "min_len" in rules and len(item) < rules["min_len"]:
                self.err(path, "needs at least %d characters" % rules["min_len"])
            if "max_len" in rules and len(item) > rules["max_len"]:
                self.err(path, "takes at most %d characters" % rules["max_len"])
        if got is None:
            return
        prefix = "duration_" if t == "msg:google.protobuf.Duration" else ""
        for op, test in (("gt", lambda a, b: a > b), ("gte", lambda a, b: a >= b),
                         ("lt", lambda a, b: a < b), ("lte", lambda a, b: a <= b)):
            bound = rules.get(prefix + op)
            if bound is not None and not test(got, bound):
                self.err(path, "%r must be %s %r" % (got, op, bound))


def check_discovery_response(text):
    """Problems of the DiscoveryResponse JSON <text> (a str); [] when it is valid."""
    c = Checker()
    try:
        v = loads(text)
    except ValueError as e:
        return ["not JSON: %s" % e]
    c.message(v, RESPONSE, "DiscoveryResponse")
    return c.errors


def check_message_json(text, name):
    """Problems of <text> as the JSON of message <name> (for the checker's own tests)."""
    c = Checker()
    c.message(loads(text), name, name.rsplit(".", 1)[1])
    return c.errors
