#!/usr/bin/env bash
# Builds tests/sanitizers/stress.c against the C core headers and runs it
# under ThreadSanitizer and AddressSanitizer (+UBSan). A sanitizer the
# compiler cannot build with is skipped with a message, not failed.
#
#   tests/sanitizers/run.sh [CORE_INCLUDE_DIR]
#
# CORE_INCLUDE_DIR defaults to the source tree's src/fasthost/core (the
# installed package does not carry the core's headers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
include=${1:-$here/../../src/fasthost/core}
cc=${CC:-cc}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
status=0

for sanitizer in thread address; do
    flags="-fsanitize=$sanitizer"
    [ "$sanitizer" = address ] && flags="$flags -fsanitize=undefined -fno-sanitize-recover=undefined"
    if ! echo 'int main(void){return 0;}' | $cc $flags -x c - -o "$build/probe" 2>/dev/null || ! "$build/probe"; then
        echo "SKIP $sanitizer: $cc cannot build or run with $flags on this machine"
        continue
    fi
    $cc $flags -g -O1 -std=gnu11 -Wall -Wextra -Werror -I"$include" "$here/stress.c" -o "$build/stress-$sanitizer" -lpthread
    if TSAN_OPTIONS="halt_on_error=1" ASAN_OPTIONS="detect_leaks=1" "$build/stress-$sanitizer"; then
        echo "PASS $sanitizer"
    else
        echo "FAIL $sanitizer"
        status=1
    fi
done
exit $status
