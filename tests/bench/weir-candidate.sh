#!/usr/bin/env bash
# Runs weir as a ../shared/bench candidate: writes a config from the BENCH_* variables
# (one worker, plain listener, TLS listener when a certificate is given, no access log) and
# execs the binary so the harness (and valgrind in instr-per-req.sh) sees weir itself.
#   peer-bench.sh --candidate "$PWD/tests/bench/weir-candidate.sh" --candidate-name weir
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${WEIR_BENCH_BIN:-$here/../../build/weir}
work=${BENCH_WORKDIR:-$(mktemp -d)}
cfg=$work/weir-bench.json
tls=""
if [ -n "${BENCH_TLS_LISTEN:-}" ] && [ -n "${BENCH_CERT:-}" ] && [ "${WEIR_BENCH_TLS:-1}" = 1 ]; then
    tls=", { \"name\": \"tls\", \"address\": \"$BENCH_TLS_LISTEN\", \"tls\": { \"certificates\": [ { \"cert_file\": \"$BENCH_CERT\", \"key_file\": \"$BENCH_KEY\" } ] } }"
fi
cat > "$cfg" <<JSON
{
  "workers": ${BENCH_WORKERS:-1},
  "access_log": null,
  "admin": { "address": "127.0.0.1:${WEIR_BENCH_ADMIN_PORT:-18901}" },
  "listeners": [ { "name": "web", "address": "${BENCH_LISTEN:-127.0.0.1:18084}" }$tls ],
  "routes": [ { "name": "all", "match": { "path_prefix": "/" }, "cluster": "origin" } ],
  "clusters": [ { "name": "origin", "max_idle": 2048,
                  "endpoints": [ { "address": "${BENCH_ORIGIN:-127.0.0.1:18080}" } ] } ]
}
JSON
exec "$bin" -c "$cfg"
