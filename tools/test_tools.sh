#!/usr/bin/env bash
# test_tools.sh -- tests of the golden-vector tools (tools/npy.h, tools/json.h,
# tools/vectors.h, tools/nsa_vectors.c).
#
# Usage (from the repository root):  bash tools/test_tools.sh
#   BUILD=build-san bash tools/test_tools.sh   the binaries of that folder
#                                      (default build/, if newer than the
#                                      sources; else a fresh build with $CC)
#   NSA_VECTORS=path/to/nsa_vectors ...     that binary
# Ends with "N passed, N failed"; exit status 1 on any failure.
#
# Checks of the reference against vectors it wrote itself (gen or suite,
# then check or compare) are round trips: they show that the tools read back
# what they wrote, not that the reference is right (the independent vectors
# and the fp64 oracle of tests/test_nsa.c do that). They run, and a failure
# counts, but a success is not counted as a pass. A path that a draw did not
# reach is a counted skip.
set -u
cd "$(dirname "$0")/.." || exit 2

CC=${CC:-cc}
CFLAGS=${CFLAGS:-"-std=c99 -O2 -fopenmp -ffp-contract=off -Wall -Wextra -Werror -pedantic"}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nsa_tools_test.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
skipped=0

ok()   { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }
# roundtrip DESCRIPTION CMD...: must succeed; not counted as a pass.
roundtrip() {
    local what=$1 log rc
    shift
    log="$TMP/log.rt.$((passed + failed + skipped))"
    "$@" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "info $what (round trip of the reference's own output: not counted)"
    else
        fail "$what (exit status $rc); output:"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
}
# expect_rc WANT DESCRIPTION CMD...: run CMD, log to a file, compare status
# (WANT is 0 or "nonzero").
expect_rc() {
    local want=$1 what=$2 log rc
    shift 2
    log="$TMP/log.$((passed + failed))"
    "$@" >"$log" 2>&1
    rc=$?
    if { [ "$want" = 0 ] && [ $rc -eq 0 ]; } ||
       { [ "$want" = nonzero ] && [ $rc -ne 0 ] && [ $rc -lt 128 ]; }; then
        ok "$what"
    else
        fail "$what (exit status $rc, wanted $want); output:"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
}

# ---- build ---------------------------------------------------------------
# The binaries of $BUILD (as the Makefile builds them, sanitizers included)
# when they are there, else a fresh build into the temporary folder.
BUILD=${BUILD:-build}
build_one() { # NAME SOURCE EXTRA_FLAGS
    local out="$TMP/$1"
    if $CC $CFLAGS $3 -I. "$2" -lm -o "$out" 2>"$TMP/build_$1.log"; then
        ok "build $1 ($CC)"
    else
        fail "build $1 ($CC)"
        sed 's/^/    /' "$TMP/build_$1.log" | head -n 30
    fi
}
if [ -n "${NSA_VECTORS:-}" ]; then
    NV=$NSA_VECTORS
elif [ -x "$BUILD/nsa_vectors" ] && [ "$BUILD/nsa_vectors" -nt tools/nsa_vectors.c ]; then
    NV=$BUILD/nsa_vectors
else
    build_one nsa_vectors tools/nsa_vectors.c ""
    NV="$TMP/nsa_vectors"
fi
if [ -x "$BUILD/test_npy" ] && [ "$BUILD/test_npy" -nt tools/test_npy.c ]; then
    TN=$BUILD/test_npy
else
    build_one test_npy tools/test_npy.c ""
    TN="$TMP/test_npy"
fi
if [ ! -x "$NV" ]; then
    echo "$passed passed, $failed failed"
    exit 1
fi
echo "     using $NV and $TN"

# ---- npy / json unit tests (C) --------------------------------------------
if [ -x "$TN" ]; then
    mkdir -p "$TMP/npy"
    out=$("$TN" "$TMP/npy")
    rc=$?
    echo "$out" | grep '^FAIL' | sed 's/^/    /'
    line=$(echo "$out" | tail -n 1)
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        echo "     test_npy: $line"
        [ $rc -ne 0 ] && [ "${BASH_REMATCH[2]}" = 0 ] && fail "test_npy exit status $rc"
    else
        fail "test_npy did not report (exit status $rc)"
    fi
fi

# ---- suite: generate, check -----------------------------------------------
S="$TMP/suite"
expect_rc 0 "suite writes the curated cases" "$NV" suite "$S"
roundtrip "check of the suite passes" "$NV" check "$S"
size_kb=$(du -sk "$S" | cut -f1)
if [ "$size_kb" -lt 16384 ]; then ok "suite is small (${size_kb} KiB)"; else fail "suite is ${size_kb} KiB"; fi
ncases=$(grep -c '"name"' "$S/cases.json")
ndirs=$(find "$S" -mindepth 2 -maxdepth 2 -name case.json | wc -l)
if [ "$ncases" -ge 10 ] && [ "$ncases" -eq "$ndirs" ]; then
    ok "cases.json lists $ncases cases, one folder each"
else
    fail "cases.json lists $ncases cases, $ndirs folders have case.json"
fi
for c in ties_equal_keys short_and_empty_seqs forced_only paper_overlap_varlen \
         gqa16_fla dk192_dv128 tile64_logits; do
    if [ -f "$S/$c/case.json" ]; then ok "suite has $c"; else fail "suite lacks $c"; fi
done
# every case.json names the contract version and tolerances
if grep -L '"contract_version"' "$S"/*/case.json | grep -q .; then
    fail "a case.json lacks contract_version"
else
    ok "every case.json has contract_version"
fi

# ---- the other layouts ------------------------------------------------------
# one case folder; a folder of case folders (no cases.json)
roundtrip "check of one case folder" "$NV" check "$S/forced_only"
mkdir -p "$TMP/loose"
cp -r "$S/forced_only" "$S/short_and_empty_seqs" "$TMP/loose/"
out=$("$NV" check "$TMP/loose" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ "$(echo "$out" | grep -c '^case ')" -eq 2 ]; then
    ok "check of a folder of case folders runs both"
else
    fail "check of a folder of case folders (status $rc)"; echo "$out" | tail -5
fi
mkdir -p "$TMP/empty"
expect_rc nonzero "check of an empty folder fails" "$NV" check "$TMP/empty"

# ---- gen ---------------------------------------------------------------------
G="$TMP/gen"
expect_rc 0 "gen fp32, no gates, cmp+win, fla preset" \
    "$NV" gen --preset fla --lens 1,30,150 --H 4 --Hkv 2 --Dk 16 --Dv 8 \
    --dtype fp32 --gates 0 --branches cmp,win --seed 3 --out "$G/fp32_case"
roundtrip "check of the generated fp32 case" "$NV" check "$G/fp32_case"
expect_rc 0 "gen bf16, paper preset, --T with --cu" \
    "$NV" gen --preset paper --T 300 --cu 0,1,31 --H 2 --Hkv 1 --Dk 16 --Dv 16 \
    --dtype bf16 --seed 5 --w 64 --out "$G/paper_case"
if grep -q '"cu": \[0, 1, 31, 300\]' "$G/paper_case/case.json"; then
    ok "--T appends the last cu_seqlens entry"
else
    fail "--T appends the last cu_seqlens entry"
fi
expect_rc 0 "gen tile128 preset" \
    "$NV" gen --preset tile128 --T 400 --H 2 --Hkv 1 --Dk 8 --Dv 8 --n 3 \
    --seed 7 --out "$G/tile_case"
roundtrip "check of the gen folder (folder of case folders)" "$NV" check "$G"
# a draw with near-tied block scores (seed 6 of this shape): the bf16 run
# selects other blocks in a few rows than the fp32 runs
expect_rc 0 "gen of a draw with near-ties" \
    "$NV" gen --preset paper --T 1100 --H 2 --Hkv 1 --Dk 16 --Dv 8 --w 64 \
    --seed 6 --out "$TMP/neartie/case"
roundtrip "check of the near-tie case passes" "$NV" check "$TMP/neartie/case"
if [ -f "$TMP/neartie/case/sel_idx.fp32.npy" ]; then
    ok "near-tie case keeps the fp32 run's selection in sel_idx.fp32.npy"
    NP="$TMP/neartie/port"
    mkdir -p "$NP"
    for b in o dq dk dv dgates sel_idx sel_count; do
        cp "$TMP/neartie/case/$b.bf16.npy" "$NP/$b.npy"
    done
    roundtrip "compare of the near-tie case's bf16 outputs passes" \
        "$NV" compare "$TMP/neartie/case" "$NP"
else
    skip "near-tie path: seed 6 drew no near-tie with this libm (not exercised)"
fi
expect_rc nonzero "gen rejects an invalid config (d does not divide l)" \
    "$NV" gen --l 30 --d 16 --T 100 --out "$G/bad"
expect_rc nonzero "gen rejects an unknown option" "$NV" gen --bogus 1 --out "$G/bad2"

# ---- compare -------------------------------------------------------------------
C="$S/paper_overlap_varlen"
roundtrip "compare of a case against itself passes" "$NV" compare "$C" "$C"
expect_rc 0 "--check alias works" "$NV" --check "$C" "$C"
# a port directory holding the reference's own bf16 outputs (storage run)
P="$TMP/port_bf16"
mkdir -p "$P"
for f in "$C"/*.bf16.npy; do
    b=$(basename "$f" .bf16.npy)
    case $b in q|k|v|do|gates) continue ;; esac
    cp "$f" "$P/$b.npy"
done
out=$("$NV" compare "$C" "$P" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q 'sel_idx .*ok' && echo "$out" | grep -q '^  o  .*ok'; then
    echo "info compare of the bf16 storage run (bf16 bits, fp32 stages, ints) passes (round trip: not counted)"
else
    fail "compare of the bf16 storage run (status $rc)"; echo "$out" | sed 's/^/    /'
fi
# perturbed copies must fail
perturb() { # FILE OFFSET_FROM_END BYTES(printf escapes)
    local f=$1 off=$2 bytes=$3 size
    size=$(wc -c <"$f")
    printf "$bytes" | dd of="$f" bs=1 seek=$((size - off)) conv=notrunc 2>/dev/null
}
Q="$TMP/port_pert_o"
cp -r "$P" "$Q"
perturb "$Q/o.npy" 2 '\x80\x3f'          # last bf16 element := 1.0 (was ~N(0,1)*g)
perturb "$Q/o.npy" 4 '\x20\x41'          # and the one before := 10.0
expect_rc nonzero "compare of a perturbed o fails" "$NV" compare "$C" "$Q"
out=$("$NV" compare "$C" "$Q" 2>&1)
if echo "$out" | grep -q '^  o  .*FAIL .*first at'; then
    ok "compare reports the first mismatch of o"
else
    fail "compare reports the first mismatch of o"; echo "$out" | sed 's/^/    /'
fi
Q2="$TMP/port_pert_sel"
mkdir -p "$Q2"
cp "$C/sel_idx.bf16.npy" "$Q2/sel_idx.npy"
perturb "$Q2/sel_idx.npy" 4 '\x07\x00\x00\x00'   # last entry := 7
out=$("$NV" compare "$C" "$Q2" 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q 'sel_idx .*FAIL .*rows differ; first: unit'; then
    ok "compare of a perturbed sel_idx fails and names the unit"
else
    fail "compare of a perturbed sel_idx (status $rc)"; echo "$out" | sed 's/^/    /'
fi
Q3="$TMP/port_pert_fp64"
mkdir -p "$Q3"
cp "$C/dk.npy" "$Q3/dk.npy"
perturb "$Q3/dk.npy" 8 '\x00\x00\x00\x00\x00\x00\x59\x40'   # last := 100.0
expect_rc nonzero "compare of a perturbed float64 dk fails" "$NV" compare "$C" "$Q3"
Q4="$TMP/port_badshape"
mkdir -p "$Q4"
cp "$S/forced_only/o.npy" "$Q4/o.npy"
expect_rc nonzero "compare rejects an array of the wrong shape" "$NV" compare "$C" "$Q4"
mkdir -p "$TMP/port_none"
expect_rc nonzero "compare with no arrays fails" "$NV" compare "$C" "$TMP/port_none"
# a check of a case whose expectation was perturbed must fail too
R="$TMP/pert_case"
cp -r "$S/forced_only" "$R"
perturb "$R/dv.npy" 8 '\x00\x00\x00\x00\x00\x00\x59\x40'
out=$("$NV" check "$R" 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q '^FAIL forced_only/dv(fp32): max abs err'; then
    ok "check of a perturbed case fails with a FAIL line"
else
    fail "check of a perturbed case (status $rc)"; echo "$out" | sed 's/^/    /'
fi

# ---- numpy reads every file with the stated dtype and shape -------------------
if command -v python3 >/dev/null 2>&1 && python3 -c 'import numpy' >/dev/null 2>&1; then
    out=$(python3 - "$S" "$G" <<'EOF'
import json, os, sys
import numpy as np
bad = 0
n = 0
for top in sys.argv[1:]:
    for case in sorted(os.listdir(top)):
        cj = os.path.join(top, case, "case.json")
        if not os.path.isfile(cj):
            continue
        meta = json.load(open(cj))
        files = meta["files"]
        on_disk = {f for f in os.listdir(os.path.join(top, case)) if f.endswith(".npy")}
        if on_disk != set(files):
            print("FAIL %s: files on disk and in case.json differ: %s" % (case, on_disk ^ set(files)))
            bad += 1
        for fname, info in files.items():
            a = np.load(os.path.join(top, case, fname))
            n += 1
            if a.dtype.str != info["dtype"] or list(a.shape) != info["shape"]:
                print("FAIL %s/%s: numpy reads %s %s, case.json says %s %s" % (
                    case, fname, a.dtype.str, a.shape, info["dtype"], info["shape"]))
                bad += 1
        # the storage encoding decodes to the float64 inputs
        st = meta["storage_dtype"]
        for nm in ["q", "k", "v", "do"] + (["gates"] if meta["gates"] else []):
            x = np.load(os.path.join(top, case, nm + ".npy"))
            s = np.load(os.path.join(top, case, "%s.%s.npy" % (nm, st)))
            if st == "bf16":
                y = (s.astype(np.uint32) << 16).view(np.float32)
            elif st == "fp16":
                y = s.view(np.float16).astype(np.float32)
            else:
                y = s
            n += 1
            if not np.array_equal(y.astype(np.float64), x):
                print("FAIL %s/%s: %s bits do not decode to the float64 input" % (case, nm, st))
                bad += 1
        # sel_idx: ascending, -1 padded, count = number of entries
        if os.path.isfile(os.path.join(top, case, "sel_idx.npy")):
            si = np.load(os.path.join(top, case, "sel_idx.npy"))
            sc = np.load(os.path.join(top, case, "sel_count.npy"))
            n += 1
            valid = si >= 0
            cnt = valid.sum(axis=-1)
            padded_at_end = np.all(valid[..., :-1] >= valid[..., 1:])
            ascending = np.all((np.diff(si, axis=-1) > 0) | ~valid[..., 1:])
            if not (np.array_equal(cnt, sc) and padded_at_end and ascending):
                print("FAIL %s: sel_idx not ascending/-1 padded or sel_count wrong" % case)
                bad += 1
print("numpy: %d files/arrays checked, %d bad" % (n, bad))
sys.exit(1 if bad else 0)
EOF
)
    rc=$?
    echo "$out" | sed 's/^/    /'
    if [ $rc -eq 0 ]; then ok "numpy reads every file with case.json's dtype and shape"; else fail "numpy check"; fi
else
    skip "numpy reads every file: numpy not available"
fi

[ "$skipped" -gt 0 ] && echo "$skipped skipped (not counted as passed)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
