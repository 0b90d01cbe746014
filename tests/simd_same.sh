#!/usr/bin/env bash
# The reference built with its vector kernels and built with NSA_REF_NO_SIMD
# (portable C only) must compute the same bits (MATH.md section 8): both
# builds of tests/digest.c hash every output of the same cases, forward and
# backward, each dtype, fp32 and fp64 accumulation. The build without vector
# kernels also runs on one thread. So must the builds with contraction of
# a*b + c allowed (GNU C, -march=native; gcc and clang), which nsa_ref.h
# turns off for itself (each compiler's default contraction; clang's
# explicit -ffp-contract=fast overrides every pragma).
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
pass=0
fail=0
check() { # name, condition (0 = pass)
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi
}
on=$("$BUILD/digest"); rc_on=$?
off=$(OMP_NUM_THREADS=1 "$BUILD/digest_nosimd"); rc_off=$?
check "digest_with_vector_kernels_runs" "$rc_on"
check "digest_without_vector_kernels_runs" "$rc_off"
[ "$(printf '%s\n' "$on" | head -n 1)" = "simd 1" ]; check "vector_build_uses_vector_kernels" $?
[ "$(printf '%s\n' "$off" | head -n 1)" = "simd 0" ]; check "no_simd_build_has_no_vector_kernels" $?
cases_on=$(printf '%s\n' "$on" | tail -n +2)
cases_off=$(printf '%s\n' "$off" | tail -n +2)
n=$(printf '%s\n' "$cases_on" | wc -l)
distinct=$(printf '%s\n' "$cases_on" | awk '{print $2}' | sort -u | wc -l)
[ "$n" -ge 30 ] && [ "$distinct" -eq "$n" ]; check "digest_covers_distinct_cases ($n cases, $distinct hashes)" $?
if [ "$cases_on" = "$cases_off" ]; then
    check "vector_kernels_on_and_off_give_the_same_bits" 0
else
    check "vector_kernels_on_and_off_give_the_same_bits" 1
    diff <(printf '%s\n' "$cases_on") <(printf '%s\n' "$cases_off") | head -n 10
fi
# On a host without fused multiply-add these builds cannot differ; say so.
grep -qw fma /proc/cpuinfo 2>/dev/null ||
    echo "note: this host has no FMA instructions, so the contraction check cannot tell"
for prog in digest_contract digest_contract_clang; do
    [ -x "$BUILD/$prog" ] || continue
    other=$("$BUILD/$prog"); rc=$?
    check "${prog}_runs" "$rc"
    if [ "$(printf '%s\n' "$other" | tail -n +2)" = "$cases_on" ]; then
        check "${prog}_gives_the_same_bits" 0
    else
        check "${prog}_gives_the_same_bits" 1
        diff <(printf '%s\n' "$cases_on") <(printf '%s\n' "$other" | tail -n +2) | head -n 10
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
