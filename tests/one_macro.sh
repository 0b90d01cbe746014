#!/usr/bin/env bash
# How a program holds the implementations (nsa.h, "USING IT"), built as a
# user would: one macro in one file links; both implementations' files with
# NSA_SHARED_IN_OTHER_FILE in one of them link; the shared part twice fails
# to link with a symbol that says what to define; contradictory macros fail
# to compile with a message that says what to do. The CUDA side of the
# two-file case is linked by `make cuda` (build/libnsa_cuda.so).
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
CC=${CC:-gcc}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
pass=0
fail=0
check() { # name, condition (0 = pass)
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi
}
cc() { "$CC" -std=c99 -Wall -Wextra -Werror -pedantic -O0 -I. "$@" -lm; }
# A main that calls a function of the reference and one of the shared part.
main_ref='int main(void) { size_t b; nsa_sizes s; nsa_config c = nsa_config_paper();
    int32_t cu[2] = {0, 64}; nsa_batch x = {0};
    x.B = 1; x.T = 64; x.cu_seqlens = cu; x.H = x.Hkv = 1; x.Dk = x.Dv = 8;
    return nsa_ref_topk_workspace_size(4, 8, 2, &b) != NSA_OK ||
           nsa_sizes_get(&c, &x, &s) != NSA_OK; }'

printf '#define NSA_REF_IMPLEMENTATION\n#include "nsa_ref.h"\n%s\n' "$main_ref" > "$dir/one.c"
cc "$dir/one.c" -o "$dir/one" && "$dir/one"
check "one_file_defining_only_NSA_REF_IMPLEMENTATION_links_and_runs" $?

printf '#include "nsa.h"\n#define NSA_REF_IMPLEMENTATION\n#include "nsa_ref.h"\n%s\n' "$main_ref" > "$dir/late.c"
cc "$dir/late.c" -o "$dir/late" && "$dir/late"
check "implementation_after_a_plain_include_of_nsa_h_links" $?

printf '#define NSA_REF_IMPLEMENTATION\n#define NSA_SHARED_IN_OTHER_FILE\n#include "nsa_ref.h"\n' > "$dir/ref.c"
printf '#define NSA_IMPLEMENTATION\n#include "nsa_ref.h"\n%s\n' "$main_ref" > "$dir/shared.c"
cc "$dir/ref.c" "$dir/shared.c" -o "$dir/two" && "$dir/two"
check "two_files_with_NSA_SHARED_IN_OTHER_FILE_in_one_link_and_run" $?

printf '#define NSA_REF_IMPLEMENTATION\n#include "nsa_ref.h"\n' > "$dir/ref_too.c"
out=$(cc "$dir/ref_too.c" "$dir/shared.c" -o "$dir/twice" 2>&1)
rc=$?
[ $rc -ne 0 ] && printf '%s\n' "$out" |
    grep -q 'nsa_shared_part_is_in_two_files_define_NSA_SHARED_IN_OTHER_FILE_in_one'
check "shared_part_in_two_files_fails_to_link_naming_the_macro" $?

printf '#define NSA_IMPLEMENTATION\n#define NSA_SHARED_IN_OTHER_FILE\n#include "nsa.h"\n' > "$dir/both.c"
out=$(cc -c "$dir/both.c" -o "$dir/both.o" 2>&1)
rc=$?
[ $rc -ne 0 ] && printf '%s\n' "$out" | grep -q '#error.*NSA_SHARED_IN_OTHER_FILE'
check "contradictory_macros_fail_to_compile_with_a_message" $?

printf '#define NSA_CUDA_IMPLEMENTATION\n#include "nsa_cuda.h"\n' > "$dir/cuda.c"
out=$(cc -c "$dir/cuda.c" -o "$dir/cuda.o" 2>&1)
rc=$?
[ $rc -ne 0 ] && printf '%s\n' "$out" | grep -q '#error.*nvcc'
check "cuda_implementation_outside_nvcc_fails_to_compile_with_a_message" $?

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
