#!/usr/bin/env bash
# install.sh -- the install as a user meets it: `cmake --install --prefix`
# into a temporary folder, that folder moved elsewhere (the install must not
# remember where it was put), then one consumer built through pkg-config and
# one through find_package(nsa), each from a folder outside this tree. Both
# consumers are tests/digest.c (every output of the reference, hashed); they
# must print what build/digest prints when it is there (make all builds it).
# Needs cmake, pkg-config and a C compiler. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pass=0
fail=0
check() { # name, condition (0 = pass)
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi
}
log="$root/log"

cmake -S . -B "$root/build" -DNSA_BUILD_TESTS=OFF > "$log" 2>&1 &&
    cmake --install "$root/build" --prefix "$root/first" >> "$log" 2>&1
rc=$?
check "cmake_configures_and_installs_to_a_prefix" $rc
[ $rc -eq 0 ] || tail -20 "$log"
mv "$root/first" "$root/prefix"
prefix="$root/prefix"

[ -f "$prefix/include/nsa/nsa_ref.h" ] && [ -f "$prefix/include/nsa/kernels/nsa_common.cuh" ] &&
    [ ! -e "$prefix/include/kernels" ] && [ ! -e "$prefix/include/nsa.h" ]
check "headers_and_kernels_are_installed_under_include_nsa" $?

# The consumer's source, with the include a user writes.
mkdir -p "$root/consumer"
sed 's|#include "../nsa_ref.h"|#include "nsa_ref.h"|' tests/digest.c > "$root/consumer/digest.c"
grep -q '^#include "nsa_ref.h"' "$root/consumer/digest.c"
check "consumer_source_includes_nsa_ref_h_plainly" $?
expected=""
[ -x "$BUILD/digest" ] && expected=$("$BUILD/digest")

# pkg-config, with the compiler's own defaults (no -ffp-contract flag).
pc=$(ls "$prefix"/lib*/pkgconfig/nsa.pc "$prefix"/lib/*/pkgconfig/nsa.pc 2>/dev/null | head -n 1)
if [ -n "$pc" ]; then
    flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs nsa)
    inc=$(printf '%s\n' "$flags" | tr ' ' '\n' | sed -n 's/^-I//p' | head -n 1)
    [ -n "$inc" ] && [ "$(cd "$inc" 2>/dev/null && pwd -P)" = "$(cd "$prefix/include/nsa" && pwd -P)" ]
    check "pkg_config_points_into_the_moved_prefix ($flags)" $?
    (cd "$root/consumer" && ${CC:-gcc} -O2 digest.c $flags -o digest_pc) >> "$log" 2>&1 &&
        out=$("$root/consumer/digest_pc")
    rc=$?
    check "consumer_through_pkg_config_builds_and_runs" $rc
    [ $rc -eq 0 ] || tail -20 "$log"
    if [ -n "$expected" ] && [ $rc -eq 0 ]; then
        [ "$out" = "$expected" ]
        check "consumer_through_pkg_config_gives_the_same_bits" $?
    fi
else
    check "nsa_pc_is_installed" 1
fi

# find_package(nsa) from a CMake project of its own.
cat > "$root/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(nsa_consumer LANGUAGES C)
find_package(nsa REQUIRED)
add_executable(digest_cmake digest.c)
target_link_libraries(digest_cmake PRIVATE nsa::nsa)
CMAKE
cmake -S "$root/consumer" -B "$root/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release >> "$log" 2>&1 &&
    cmake --build "$root/consumer/build" >> "$log" 2>&1 &&
    out=$("$root/consumer/build/digest_cmake")
rc=$?
check "consumer_through_find_package_builds_and_runs" $rc
[ $rc -eq 0 ] || tail -20 "$log"
if [ -n "$expected" ] && [ $rc -eq 0 ]; then
    [ "$out" = "$expected" ]
    check "consumer_through_find_package_gives_the_same_bits" $?
fi
[ -n "$expected" ] || echo "note: no $BUILD/digest to compare with (run make all first)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
