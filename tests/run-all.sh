#!/usr/bin/env bash
# Installs what is missing, builds weir and runs every test:
#   1. clang-format check of all C sources
#   2. release build: unit + integration tests (ctest)
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build: unit + integration tests
#   4. libFuzzer targets, each for WEIR_FUZZ_SECONDS (default 60) with no crash
#   5. valgrind --leak-check=full over an integration run with a reload
# Options: --quick (only step 2), --no-format, --no-fuzz, --no-asan, --no-valgrind.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

quick=0 fmt=1 fuzz=1 asan=1 vg=1
for a in "$@"; do
    case "$a" in
    --quick) quick=1 ;;
    --no-format) fmt=0 ;;
    --no-fuzz) fuzz=0 ;;
    --no-asan) asan=0 ;;
    --no-valgrind) vg=0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
[ $quick -eq 1 ] && { fmt=0; fuzz=0; asan=0; vg=0; }
jobs=$(nproc)

tools/install-deps.sh --test

step() { printf '\n=== %s ===\n' "$*"; }

if [ $fmt -eq 1 ]; then
    step "clang-format"
    files=$(git ls-files '*.c' '*.h' 2>/dev/null || find ingress xds discovery health include tests -name '*.[ch]')
    clang-format --dry-run --Werror $files
fi

step "build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build

step "tests (RelWithDebInfo)"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ $asan -eq 1 ]; then
    step "build (ASan + UBSan)"
    cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWEIR_SANITIZE=ON >/dev/null
    ninja -C build-asan
    step "tests (ASan + UBSan)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        WEIR_TEST_SLOW=1 ctest --test-dir build-asan --output-on-failure -j "$jobs"
fi

if [ $fuzz -eq 1 ]; then
    step "fuzz (${WEIR_FUZZ_SECONDS:-60} s per target)"
    CC=clang cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWEIR_FUZZ=ON \
        -DWEIR_TESTS=OFF -DWEIR_FUZZ_SECONDS="${WEIR_FUZZ_SECONDS:-60}" >/dev/null
    ninja -C build-fuzz
    ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$jobs"
fi

if [ $vg -eq 1 ]; then
    step "valgrind --leak-check=full (integration run with a reload)"
    WEIR_TEST_VALGRIND=1 WEIR_BIN="$top/build/weir" WEIRCTL_BIN="$top/build/weirctl" \
        WEIR_ORIGIN_BIN="$top/build/tests/weir-test-origin" WEIR_BUILD_DIR="$top/build" \
        bash -c 'cd tests/integration && /usr/bin/python3 50-reload.py'
fi

step "all tests passed"
