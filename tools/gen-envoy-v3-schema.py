#!/usr/bin/python3
"""Generates tests/integration/envoy_v3_schema.py from Envoy's real v3 .proto files.

The schema lists, for every Envoy message weir's xDS output may contain, all the fields the
proto declares (proto name, JSON name, type, repeated/map, oneof) and the protoc-gen-validate
rules Envoy enforces on them. tests/integration/envoy_v3_check.py walks weir's JSON with it the
way a strict protobuf JSON parser followed by Envoy's validation would, using nothing but the
Python standard library, so the test needs neither protoc nor the protos.

Regenerate (needs Debian's protobuf-compiler, libprotobuf-dev and python3-protobuf, and the
protos, which Debian does not package; the npm package @grpc/grpc-js-xds ships them under
deps/: envoy-api, xds, protoc-gen-validate, googleapis):

    cd /tmp && npm pack @grpc/grpc-js-xds && tar xzf grpc-grpc-js-xds-*.tgz
    /usr/bin/python3 tools/gen-envoy-v3-schema.py --deps /tmp/package/deps \\
        --out tests/integration/envoy_v3_schema.py

Also writes the compiled descriptor set with --desc FILE, for a run of the real protobuf parser
(docs/xds.md, "Checking the output").
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT_PROTOS = [
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
]

# The messages weir's output may contain. Fields of other message types are known by name
# (a strict parser accepts them) but the checker refuses to meet them: weir never emits them.
MESSAGES = [
    "envoy.service.discovery.v3.DiscoveryResponse",
    "envoy.config.core.v3.ControlPlane",
    "envoy.config.listener.v3.Listener",
    "envoy.config.listener.v3.FilterChain",
    "envoy.config.listener.v3.Filter",
    "envoy.config.listener.v3.ListenerFilter",
    "envoy.config.core.v3.Address",
    "envoy.config.core.v3.SocketAddress",
    "envoy.config.core.v3.TransportSocket",
    "envoy.config.core.v3.ConfigSource",
    "envoy.config.core.v3.ApiConfigSource",
    "envoy.config.core.v3.HttpProtocolOptions",
    "envoy.config.core.v3.Http1ProtocolOptions",
    "envoy.config.core.v3.Http2ProtocolOptions",
    "envoy.config.core.v3.DataSource",
    "envoy.config.core.v3.HeaderValueOption",
    "envoy.config.core.v3.HeaderValue",
    "envoy.config.core.v3.HealthCheck",
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck",
    "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
    "envoy.config.core.v3.HealthCheck.Payload",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
    "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts",
    "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher",
    "envoy.type.matcher.v3.StringMatcher",
    "envoy.type.matcher.v3.RegexMatcher",
    "envoy.type.v3.Percent",
    "envoy.type.v3.Int64Range",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.route.v3.VirtualHost",
    "envoy.config.route.v3.Route",
    "envoy.config.route.v3.RouteMatch",
    "envoy.config.route.v3.HeaderMatcher",
    "envoy.config.route.v3.RouteAction",
    "envoy.config.route.v3.RouteAction.HashPolicy",
    "envoy.config.route.v3.RouteAction.HashPolicy.Header",
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie",
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
    "envoy.config.route.v3.WeightedCluster",
    "envoy.config.route.v3.WeightedCluster.ClusterWeight",
    "envoy.config.route.v3.RedirectAction",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
    "envoy.config.cluster.v3.Cluster.CommonLbConfig",
    "envoy.config.cluster.v3.OutlierDetection",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.endpoint.v3.LocalityLbEndpoints",
    "envoy.config.endpoint.v3.LbEndpoint",
    "envoy.config.endpoint.v3.Endpoint",
]

SCALARS = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
           7: "fixed32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32",
           16: "sfixed64", 17: "sint32", 18: "sint64"}


def compile_protos(deps, work):
    """Runs protoc over ROOT_PROTOS; returns (descriptor set path, validate_pb2 dir)."""
    # The validate.proto next to envoy-api in @grpc/grpc-js-xds 1.14.1 predates
    # StringRules.ignore_empty, which envoy-api uses: add it to a copy if missing.
    pgv = os.path.join(work, "pgv")
    shutil.copytree(os.path.join(deps, "protoc-gen-validate"), pgv)
    vp = os.path.join(pgv, "validate", "validate.proto")
    text = open(vp).read()
    if "ignore_empty" not in text.split("message StringRules", 1)[1].split("\n}", 1)[0]:
        text = text.replace("  optional bool strict = 25 [default = true];",
                            "  optional bool strict = 25 [default = true];\n"
                            "  optional bool ignore_empty = 26;", 1)
        open(vp, "w").write(text)
    inc = ["-I", os.path.join(deps, "envoy-api"), "-I", os.path.join(deps, "xds"), "-I", pgv,
           "-I", os.path.join(deps, "googleapis"), "-I", "/usr/include"]
    desc = os.path.join(work, "envoy.desc")
    subprocess.run(["protoc"] + inc + ["--include_imports", "--descriptor_set_out=" + desc]
                   + ROOT_PROTOS, check=True)
    py = os.path.join(work, "py")
    os.mkdir(py)
    subprocess.run(["protoc", "-I", pgv, "-I", "/usr/include", "--python_out=" + py,
                    "validate/validate.proto"], check=True)
    return desc, py


def field_rules(f, validate_pb2):
    """The protoc-gen-validate rules of field <f> that the checker enforces."""
    out = {}
    if not f.options.HasExtension(validate_pb2.rules):
        return out
    r = f.options.Extensions[validate_pb2.rules]
    if r.message.required:
        out["required"] = True
    kind = r.WhichOneof("type")
    if kind == "string":
        s = r.string
        if s.HasField("min_len") and not s.ignore_empty:
            out["min_len"] = s.min_len
        if s.HasField("max_len"):
            out["max_len"] = s.max_len
    elif kind == "repeated":
        if r.repeated.HasField("min_items"):
            out["min_items"] = r.repeated.min_items
        if r.repeated.HasField("max_items"):
            out["max_items"] = r.repeated.max_items
    elif kind in ("uint32", "int32", "uint64", "int64", "double", "float"):
        n = getattr(r, kind)
        for op in ("gt", "gte", "lt", "lte"):
            if n.HasField(op):
                out[op] = getattr(n, op)
    elif kind == "duration":
        d = r.duration
        if d.required:
            out["required"] = True
        for op in ("gt", "gte", "lt", "lte"):
            if d.HasField(op):
                out["duration_" + op] = getattr(d, op).seconds * 10**9 + getattr(d, op).nanos
    elif kind == "enum":
        if r.enum.defined_only:
            out["defined_only"] = True
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deps", required=True, help="the deps/ folder of @grpc/grpc-js-xds")
    ap.add_argument("--out", required=True)
    ap.add_argument("--desc", help="also keep the compiled descriptor set here")
    ap.add_argument("--source", default="@grpc/grpc-js-xds 1.14.1 (npm), deps/envoy-api")
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    try:
        desc, py = compile_protos(a.deps, work)
        sys.path.insert(0, py)
        from validate import validate_pb2  # noqa: E402 -- must precede parsing the set
        from google.protobuf import descriptor_pb2
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(desc, "rb").read())
        if a.desc:
            shutil.copy(desc, a.desc)
    finally:
        shutil.rmtree(work)

    protos, enums = {}, {}

    def walk(file, prefix, msgs, enum_list):
        for e in enum_list:
            enums[prefix + e.name] = [v.name for v in e.value]
        for m in msgs:
            protos[prefix + m.name] = (file, m)
            walk(file, prefix + m.name + ".", m.nested_type, m.enum_type)

    for f in fds.file:
        walk(f.name, (f.package + ".") if f.package else "", f.message_type, f.enum_type)

    schema, used_enums = {}, set()
    for name in MESSAGES:
        file, m = protos[name]
        fields, req_oneofs = {}, []
        for i, o in enumerate(m.oneof_decl):
            if o.options.HasExtension(validate_pb2.required) and \
                    o.options.Extensions[validate_pb2.required]:
                req_oneofs.append(o.name)
        for f in m.field:
            if f.type in (11, 14):
                tname = f.type_name.lstrip(".")
                if f.type == 14:
                    t = "enum:" + tname
                    used_enums.add(tname)
                else:
                    t = "msg:" + tname
                    entry = protos.get(tname)
                    if entry and entry[1].options.map_entry:
                        k, v = entry[1].field[0], entry[1].field[1]
                        vt = ("msg:" + v.type_name.lstrip(".")) if v.type == 11 else \
                             ("enum:" + v.type_name.lstrip(".")) if v.type == 14 else SCALARS[v.type]
                        t = "map:%s:%s" % (SCALARS[k.type], vt)
            else:
                t = SCALARS[f.type]
            oneof = None
            if f.HasField("oneof_index") and not f.proto3_optional:
                oneof = m.oneof_decl[f.oneof_index].name
            fields[f.name] = {"json": f.json_name, "type": t, "repeated": f.label == 3 and
                              not t.startswith("map:"), "oneof": oneof,
                              "rules": field_rules(f, validate_pb2),
                              "deprecated": f.options.deprecated}
        schema[name] = {"file": file, "fields": fields, "required_oneofs": req_oneofs}

    with open(a.out, "w") as out:
        out.write('"""Envoy v3 API schema for envoy_v3_check.py: GENERATED by '
                  'tools/gen-envoy-v3-schema.py, do not edit.\n\n'
                  'Source: %s.\n\n'
                  'MESSAGES[full name] = (the .proto declaring it, the oneofs that must be set, '
                  '{proto field name:\n(JSON name, type, repeated, oneof or None, '
                  'protoc-gen-validate rules, deprecated)}). A type is\na scalar name, '
                  '"enum:NAME", "msg:NAME" or "map:KEY:VALUE".\n"""\n\n' % a.source)
        out.write("# fmt: off\nMESSAGES = {\n")
        for name in sorted(schema):
            m = schema[name]
            out.write("    %r: (%r, %r, {\n" % (name, m["file"], m["required_oneofs"]))
            for fname, f in m["fields"].items():
                out.write("        %r: (%r, %r, %d, %r, %r, %d),\n"
                          % (fname, f["json"], f["type"], f["repeated"], f["oneof"], f["rules"],
                             f["deprecated"]))
            out.write("    }),\n")
        out.write("}\n\nENUMS = {\n")
        for k in sorted(used_enums):
            out.write("    %r: %r,\n" % (k, enums[k]))
        out.write("}\n")

if __name__ == "__main__":
    main()
