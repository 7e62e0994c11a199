#!/usr/bin/env bash
# Installs what weir needs on Debian 12 and skips what is already there.
#   tools/install-deps.sh          build + demo dependencies
#   tools/install-deps.sh --test   also everything the test suite uses
set -euo pipefail

pkgs=(build-essential cmake ninja-build pkg-config
      libuv1-dev libssl-dev libnghttp2-dev libcurl4-openssl-dev libjansson-dev libc-ares-dev
      libyaml-dev
      zlib1g-dev libbrotli-dev libpcre2-dev curl ca-certificates)
if [ "${1:-}" = "--test" ]; then
    pkgs+=(python3 python3-h2 python3-httpx nghttp2-client clang libclang-rt-14-dev
           valgrind procps openssl clang-format python3-grpcio unbound)
fi
# tests/integration/97-deploy-manifests.py reads kubectl's YAML.
[ "${1:-}" = "--test" ] && pkgs+=(python3-yaml)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
