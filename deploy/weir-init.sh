#!/bin/sh
# weir-init: the init container of weir's pod (deploy/base/deployment.yaml). Prepares what
# weir.json names under /run/weir, a memory volume that only this pod sees:
#
#   admin/token                the admin API's bearer token: the key "token" of the Secret
#                              weir-admin when it exists, else 32 random bytes (hex), new in
#                              every pod
#   tls/default.crt, .key      the TLS listener's default certificate, served when no Ingress or
#                              annotated Service has one for the requested host: the Secret
#                              weir-default-tls (kubernetes.io/tls) when it exists, else a
#                              self-signed certificate made for this pod
#
# WEIR_INIT_OUT and WEIR_INIT_SECRETS change the two folders (for tests).
set -eu

out=${WEIR_INIT_OUT:-/run/weir}
secrets=${WEIR_INIT_SECRETS:-/var/run/secrets/weir}

umask 077
mkdir -p "$out/admin" "$out/tls"

if [ -s "$secrets/admin/token" ]; then
    cp "$secrets/admin/token" "$out/admin/token"
    echo "weir-init: admin token from the Secret weir-admin"
else
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$out/admin/token"
    echo "weir-init: admin token generated for this pod (create the Secret weir-admin to share one)"
fi

if [ -s "$secrets/default-tls/tls.crt" ] && [ -s "$secrets/default-tls/tls.key" ]; then
    cp "$secrets/default-tls/tls.crt" "$out/tls/default.crt"
    cp "$secrets/default-tls/tls.key" "$out/tls/default.key"
    echo "weir-init: default certificate from the Secret weir-default-tls"
else
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/O=weir/CN=weir default certificate" \
        -keyout "$out/tls/default.key" -out "$out/tls/default.crt" 2>/dev/null
    echo "weir-init: self-signed default certificate generated for this pod"
fi
