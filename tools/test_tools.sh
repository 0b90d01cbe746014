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
         gqa16_fla dk192_dv128 tile64_logits suffix_decode_prefill \
         suffix_tiles_logits; do
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
# suffix queries from the command line: the last positions of each sequence
expect_rc 0 "gen of suffix queries (--lens-q: decode, chunk, whole)" \
    "$NV" gen --preset paper --lens 1,150,300 --lens-q 1,1,40 --H 4 --Hkv 2 \
    --Dk 8 --Dv 8 --l 16 --d 8 --lp 16 --n 4 --w 32 --seed 9 \
    --out "$TMP/suffix/case"
if grep -q '"cu_q": \[0, 1, 2, 42\]' "$TMP/suffix/case/case.json" &&
   grep -q '"o.npy": {"array": "o", "dtype": "<f8", "shape": \[42, 4, 8\]' \
       "$TMP/suffix/case/case.json" &&
   grep -q '"dk.npy": {"array": "dk", "dtype": "<f8", "shape": \[451, 2, 8\]' \
       "$TMP/suffix/case/case.json"; then
    ok "a suffix case has cu_q, TQ query rows and T key rows"
else
    fail "a suffix case has cu_q, TQ query rows and T key rows"
    grep -E '"cu_q"|"o.npy"|"dk.npy"' "$TMP/suffix/case/case.json" | sed 's/^/    /'
fi
expect_rc 0 "check of the generated suffix case" "$NV" check "$TMP/suffix/case"
expect_rc nonzero "gen rejects more queries than keys (--lens-q)" \
    "$NV" gen --lens 5,5 --lens-q 6,1 --out "$G/bad_q"
expect_rc nonzero "gen rejects --lens-q for another number of sequences" \
    "$NV" gen --lens 5,5 --lens-q 1 --out "$G/bad_q2"
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

# ---- the checker fails what is wrong ---------------------------------------------
# Corrupted copies of cases: each must FAIL with a line naming the array,
# and the unmodified copies must pass. (Tolerances: tools/vectors.h.)
IND=${VECTORS_DIR:-../shared/vectors}
CORRUPT="$TMP/corrupt.py"
cat >"$CORRUPT" <<'PYEOF'
# corrupt.py KIND ARGS: edits .npy files (format 1.0/2.0, C order) or a
# case's parameters in place; prints what it did.
import ast, json, struct, sys

def load(path):
    b = open(path, "rb").read()
    v = b[6]
    hl = struct.unpack("<H", b[8:10])[0] if v == 1 else struct.unpack("<I", b[8:12])[0]
    off = (10 if v == 1 else 12) + hl
    h = ast.literal_eval(b[off - hl:off].decode("latin1"))
    code = {"<f8": "d", "<f4": "f", "<i4": "i", "<u2": "H"}[h["descr"]]
    n = (len(b) - off) // struct.calcsize(code)
    return b[:off], code, list(struct.unpack("<%d%s" % (n, code), b[off:])), h["shape"]

def save(path, head, code, x):
    open(path, "wb").write(head + struct.pack("<%d%s" % (len(x), code), *x))

def finite(x):
    return x == x and abs(x) != float("inf")

kind = sys.argv[1]
if kind == "shift_max":      # DIR NAME FRAC [STORAGE_FILE]: the element of
    d, name, frac = sys.argv[2], sys.argv[3], float(sys.argv[4])  # largest |x|
    head, code, x, _ = load("%s/%s.npy" % (d, name))
    i = max(range(len(x)), key=lambda k: abs(x[k]) if finite(x[k]) else -1)
    scale = abs(x[i])
    sign = 1.0 if x[i] >= 0 else -1.0
    if len(sys.argv) > 5:    # away from a storage run's value of it
        _, _, y, _ = load(sys.argv[5])
        sign = -1.0 if y[i] >= x[i] else 1.0
    x[i] += sign * frac * scale
    save("%s/%s.npy" % (d, name), head, code, x)
    print("%s[%d] moved by %g (%g of scale %g)" % (name, i, sign * frac * scale, frac, scale))
elif kind == "add_all":      # DIR NAME DELTA: every finite element + DELTA
    d, name, delta = sys.argv[2], sys.argv[3], float(sys.argv[4])
    head, code, x, _ = load("%s/%s.npy" % (d, name))
    x = [v + delta if finite(v) else v for v in x]
    save("%s/%s.npy" % (d, name), head, code, x)
    print("%s + %g everywhere" % (name, delta))
elif kind == "swap_sel":     # DIR MINGAP: in one row, the lowest-scoring
    # unforced selected block becomes the best unselected eligible one; the
    # row with the smallest such score gap >= MINGAP of the row's max score
    d, mingap = sys.argv[2], float(sys.argv[3])
    cj = json.load(open(d + "/case.json"))
    nf = cj["cfg"]["n_init"] + cj["cfg"]["n_local"]
    _, _, sc, (units, hkv, mb) = load(d + "/block_scores.npy")
    head, code, sel, (_, _, n) = load(d + "/sel_idx.npy")
    best = None
    for r in range(units * hkv):
        row = sel[r * n:(r + 1) * n]
        s = sc[r * mb:(r + 1) * mb]
        el = [j for j in range(mb) if finite(s[j])]
        top = max(abs(s[j]) for j in el) if el else 0
        if top == 0 or len(el) <= n:
            continue
        forced = set(range(cj["cfg"]["n_init"]))
        last = max(el)       # the unit's own block and the ones before it
        forced |= set(range(last - cj["cfg"]["n_local"] + 1, last + 1))
        cand = [j for j in row if j >= 0 and j not in forced]
        out = [j for j in el if j not in row]
        if not cand or not out:
            continue
        a = min(cand, key=lambda j: (s[j], -j))
        b = max(out, key=lambda j: (s[j], -j))
        gap = (s[a] - s[b]) / top
        if gap >= mingap and (best is None or gap < best[0]):
            best = (gap, r, a, b)
    gap, r, a, b = best
    for f in ["sel_idx", "sel_idx.%s" % cj["storage_dtype"]]:
        try:
            head, code, sel, _ = load("%s/%s.npy" % (d, f))
        except FileNotFoundError:
            continue
        row = sorted([b if j == a else j for j in sel[r * n:(r + 1) * n] if j >= 0])
        sel[r * n:(r + 1) * n] = row + [-1] * (n - len(row))
        save("%s/%s.npy" % (d, f), head, code, sel)
    print("row %d (unit %d, kv head %d): block %d -> %d, score gap %.3g of the row's max" % (r, r // hkv, r % hkv, a, b, gap))
elif kind == "param":        # DIR KEY VALUE: a cfg entry of case.json or of
    d, key, val = sys.argv[2], sys.argv[3], int(sys.argv[4])  # cases.json
    for f in [d + "/case.json", d + "/cases.json"]:
        try:
            j = json.load(open(f))
        except FileNotFoundError:
            continue
        for e in (j if isinstance(j, list) else [j]):
            print("%s: cfg.%s %s -> %d" % (e["name"], key, e["cfg"][key], val))
            e["cfg"][key] = val
        json.dump(j, open(f, "w"))
elif kind == "cu_q":         # DIR: entry 2 of the first case's cu_q + 1
    f = sys.argv[2] + "/cases.json"
    j = json.load(open(f))
    j[0]["cu_q"][2] += 1
    json.dump(j, open(f, "w"))
    print("%s: cu_q[2] -> %d" % (j[0]["name"], j[0]["cu_q"][2]))
elif kind == "one_case":     # SRC_DIR NAME DST_DIR: a cases.json folder
    src, name, dst = sys.argv[2], sys.argv[3], sys.argv[4]  # with one case
    j = [e for e in json.load(open(src + "/cases.json")) if e["name"] == name]
    json.dump(j, open(dst + "/cases.json", "w"))
PYEOF
# corrupt_case NAME SRC_CASE_DIR (a case.json folder) | NAME IND_FOLDER CASE
# (one case of a cases.json folder): a fresh copy in $TMP/cor/NAME
copy_case() {
    local dst="$TMP/cor/$1"
    rm -rf "$dst"; mkdir -p "$dst"
    if [ -n "${3:-}" ]; then
        cp -r "$2/$3" "$dst/" && python3 "$CORRUPT" one_case "$2" "$3" "$dst"
    else
        cp -r "$2" "$dst/case"
    fi
}
# expect_fail WHAT DIR REGEX...: check DIR fails, with a FAIL line for each REGEX
expect_fail() {
    local what=$1 dir=$2 out rc r miss=""
    shift 2
    out=$("$NV" check "$dir" 2>&1); rc=$?
    for r in "$@"; do echo "$out" | grep -qE "^FAIL $r" || miss="$miss $r"; done
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ -z "$miss" ]; then
        ok "$what"
    else
        fail "$what (status $rc; no FAIL line for:$miss)"
        echo "$out" | grep -E '^(FAIL|case)' | head -n 8 | sed 's/^/    /'
    fi
}
if ! command -v python3 >/dev/null 2>&1; then
    fail "the corruption tests need python3"
elif [ ! -f "$IND/cases.json" ]; then
    fail "the corruption tests need the independent vectors ($IND)"
else
    # unmodified copies pass
    copy_case base_ind "$IND" paper_varlen
    copy_case base_sharp "$IND/suffix_and_sharp" sharp_scale6
    copy_case base_suite "$S/paper_overlap_varlen"
    copy_case base_fp16 "$S/fp16_storage"
    for c in base_ind base_sharp base_suite base_fp16; do
        expect_rc 0 "unmodified copy $c passes" "$NV" check "$TMP/cor/$c"
    done
    # (a) one selection entry swapped at the k-th place, the smallest score
    #     gap above 0.5% of the row's max (the old 1%-of-top rule let such
    #     swaps pass as near-ties in bf16)
    copy_case sel "$S/paper_overlap_varlen"
    echo "     $(python3 "$CORRUPT" swap_sel "$TMP/cor/sel/case" 0.005)"
    expect_fail "a swapped selection entry fails in fp32 and in bf16" \
        "$TMP/cor/sel" 'paper_overlap_varlen/sel_idx\(fp32\)' \
        'paper_overlap_varlen/sel_idx\(bf16\)'
    # (b) o off by 1e-4 of scale (fp32), 1e-2 of scale (bf16, fp16)
    copy_case o32 "$IND" paper_varlen
    echo "     $(python3 "$CORRUPT" shift_max "$TMP/cor/o32/paper_varlen" o 1e-4)"
    expect_fail "o off by 1e-4 of scale fails in fp32" "$TMP/cor/o32" \
        'paper_varlen/o\(fp32\)'
    copy_case o32s "$IND/suffix_and_sharp" sharp_scale6
    echo "     $(python3 "$CORRUPT" shift_max "$TMP/cor/o32s/sharp_scale6" o 1e-4)"
    expect_fail "o off by 1e-4 of scale fails in fp32 on sharp inputs" \
        "$TMP/cor/o32s" 'sharp_scale6/o\(fp32\)'
    copy_case o16 "$S/paper_overlap_varlen"
    echo "     $(python3 "$CORRUPT" shift_max "$TMP/cor/o16/case" o 1e-2 "$TMP/cor/o16/case/o.bf16.npy")"
    expect_fail "o off by 1e-2 of scale fails in bf16" "$TMP/cor/o16" \
        'paper_overlap_varlen/o\(bf16\)'
    copy_case ofp16 "$S/fp16_storage"
    echo "     $(python3 "$CORRUPT" shift_max "$TMP/cor/ofp16/case" o 1e-2 "$TMP/cor/ofp16/case/o.fp16.npy")"
    expect_fail "o off by 1e-2 of scale fails in fp16" "$TMP/cor/ofp16" \
        'fp16_storage/o\(fp16\)'
    # (c) lse off by 1e-4 in fp32 (|lse| ~ 7), and by 5e-3 on sharp inputs
    #     (|lse| up to ~190: a bound relative to the largest |lse| let it pass)
    copy_case lse "$IND" paper_varlen
    echo "     $(python3 "$CORRUPT" add_all "$TMP/cor/lse/paper_varlen" lse_slc 1e-4)"
    expect_fail "lse off by 1e-4 fails in fp32" "$TMP/cor/lse" \
        'paper_varlen/lse_slc\(fp32\)'
    copy_case lses "$IND/suffix_and_sharp" sharp_scale6
    echo "     $(python3 "$CORRUPT" add_all "$TMP/cor/lses/sharp_scale6" lse_slc 5e-3)"
    expect_fail "lse off by 5e-3 fails on sharp inputs, in fp32 and bf16" \
        "$TMP/cor/lses" 'sharp_scale6/lse_slc\(fp32\)' 'sharp_scale6/lse_slc\(bf16\)'
    # (d) a different w or n_local than the expected values were made with
    copy_case w "$IND" paper_varlen
    echo "     $(python3 "$CORRUPT" param "$TMP/cor/w" w 511)"
    expect_fail "a different w fails" "$TMP/cor/w" 'paper_varlen/lse_win\(fp32\)'
    copy_case nl "$IND" paper_varlen
    echo "     $(python3 "$CORRUPT" param "$TMP/cor/nl" n_local 1)"
    expect_fail "a different n_local fails" "$TMP/cor/nl" \
        'paper_varlen/sel_idx\(fp32\)'
    # suffix queries: a cu_seqlens_q that disagrees with cu_q fails
    copy_case cuq "$IND/suffix_and_sharp" suffix_decode_prefill
    echo "     $(python3 "$CORRUPT" cu_q "$TMP/cor/cuq")"
    expect_fail "a cu_q that disagrees with cu_seqlens_q.npy fails" \
        "$TMP/cor/cuq" 'suffix_decode_prefill/cu_seqlens_q'
fi

# ---- folders of cases nest: a subfolder with its own cases.json is checked ----
mkdir -p "$TMP/nest/inner"
cp -r "$S/forced_only" "$TMP/nest/"
cp -r "$S/suffix_decode_prefill" "$TMP/nest/inner/"
python3 - "$S/cases.json" "$TMP/nest" <<'PYEOF' || fail "nested folder setup"
import json, sys
cases = {e["name"]: e for e in json.load(open(sys.argv[1]))}
json.dump([cases["forced_only"]], open(sys.argv[2] + "/cases.json", "w"))
json.dump([cases["suffix_decode_prefill"]], open(sys.argv[2] + "/inner/cases.json", "w"))
PYEOF
out=$("$NV" check "$TMP/nest" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q '^case forced_only ' &&
   echo "$out" | grep -q '^case suffix_decode_prefill '; then
    ok "check reads a nested folder of cases (suffix queries) after its own"
else
    fail "check of a nested folder (status $rc)"; echo "$out" | tail -5 | sed 's/^/    /'
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
