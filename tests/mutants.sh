#!/usr/bin/env bash
# mutants.sh -- the mutation check: do the tests fail when the code is wrong?
#
# Applies each small bug of the catalog (tests/mutants.txt) on its own to a
# scratch copy of the tree, rebuilds the CPU test suite (tests/test_nsa.c)
# and runs its quick form (no golden vectors, stop at the first failure).
# A mutant is "killed" when the suite fails, "survived" when it passes; an
# entry whose text is not found exactly once, or that does not build, is an
# error. Ends with "N passed, N failed" (passed = killed; failed = survived
# plus errors); exits non-zero unless every mutant was killed.
#
#   make mutants                      all of them
#   MUTANTS=name1,name2 make mutants  only those
#   bash tests/mutants.sh --list      the names
# CC, MUTANT_CFLAGS, MUTANT_TIMEOUT (seconds a run, default 300) and
# MUTANT_JOBS (mutants at a time, default: the number of CPUs) may be set.
# Each job has a scratch tree of its own; the report is in catalog order.
set -u
cd "$(dirname "$0")/.." || exit 2
export LC_ALL=C

CATALOG=${CATALOG:-tests/mutants.txt}
CC=${CC:-gcc}
MUTANT_CFLAGS=${MUTANT_CFLAGS:-"-std=c99 -O2 -fopenmp -ffp-contract=off -Wall -Wextra -pedantic"}
MUTANT_TIMEOUT=${MUTANT_TIMEOUT:-300}
MUTANT_JOBS=${MUTANT_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$MUTANT_JOBS" -ge 1 ] 2>/dev/null || MUTANT_JOBS=1
ONLY=${MUTANTS:-}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nsa_mutants.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT

# ---- parse the catalog into $WORK/m/NNN/{name,desc,hunks/K.{file,old,new}} ----
n=0
hunk=0
state=none # none | old | new
cur=""
file=""
lineno=0
parse_error() { echo "error: $CATALOG line $lineno: $1"; exit 2; }
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case $line in
        '#'* | '') continue ;;
        '@ '*)
            n=$((n + 1))
            cur=$WORK/m/$(printf '%03d' $n)
            mkdir -p "$cur/hunks"
            head=${line#@ }
            printf '%s' "${head%%:*}" >"$cur/name"
            desc=${head#*:}
            printf '%s' "${desc# }" >"$cur/desc"
            hunk=0; state=none; file=""
            ;;
        'in '*)
            [ -n "$cur" ] || parse_error "'in' before any '@' entry"
            file=${line#in }
            [ -f "$file" ] || parse_error "no file $file"
            printf '%s\n' "$file" >>"$WORK/files"
            ;;
        '-' | '- '*)
            [ -n "$file" ] || parse_error "hunk before an 'in FILE' line"
            if [ "$state" != old ]; then
                hunk=$((hunk + 1))
                printf '%s' "$file" >"$cur/hunks/$hunk.file"
                : >"$cur/hunks/$hunk.old"
                : >"$cur/hunks/$hunk.new"
                state=old
            fi
            printf '%s\n' "${line:2}" >>"$cur/hunks/$hunk.old"
            ;;
        '+' | '+ '*)
            [ "$state" != none ] || parse_error "'+' line without '-' lines before it"
            state=new
            printf '%s\n' "${line:2}" >>"$cur/hunks/$hunk.new"
            ;;
        *) parse_error "unrecognised line: $line" ;;
    esac
done <"$CATALOG"
[ $n -gt 0 ] || { echo "error: no mutants in $CATALOG"; exit 2; }

if [ "${1:-}" = --list ]; then
    for d in "$WORK"/m/*; do printf '%-48s %s\n' "$(cat "$d/name")" "$(cat "$d/desc")"; done
    exit 0
fi

# ---- the scratch tree ---------------------------------------------------------
# The headers, tests/ and tools/; every file an entry edits is kept pristine
# in $WORK/orig and restored before each mutant.
T=$WORK/tree
mkdir -p "$T" "$WORK/orig"
cp ./*.h "$T/"
cp -r tests tools "$T/"
sort -u "$WORK/files" >"$WORK/files.u"
while IFS= read -r f; do
    mkdir -p "$WORK/orig/$(dirname "$f")" "$T/$(dirname "$f")"
    cp "$f" "$WORK/orig/$f"
    cp "$f" "$T/$f"
done <"$WORK/files.u"
restore() { while IFS= read -r f; do cp "$WORK/orig/$f" "$1/$f"; done <"$WORK/files.u"; }

# read_all FILE: the file's exact bytes into $REPLY (trailing newlines kept)
read_all() { REPLY=$(cat "$1"; printf x); REPLY=${REPLY%x}; }

build_and_run() { # TREE LOG: 0 passed, 1 failed, 2 did not build
    local tree=$1 log=$2
    if ! (cd "$tree" && $CC $MUTANT_CFLAGS -I. tests/test_nsa.c -lm -o test_nsa) >"$log.build" 2>&1; then
        return 2
    fi
    # jobs share the CPUs: OpenMP threads that wait sleep instead of spinning
    (cd "$tree" && timeout "$MUTANT_TIMEOUT" env NSA_TEST_QUICK=1 NSA_TEST_STOP=1 \
        NSA_SKIP_VECTORS=1 OMP_WAIT_POLICY=passive ./test_nsa "$WORK/no-vectors-here") >"$log" 2>&1
    [ $? -eq 0 ] && return 0
    return 1
}

echo "== baseline: the unmutated tree must pass"
t0=$(date +%s)
build_and_run "$T" "$WORK/baseline.log"
rc=$?
if [ $rc -ne 0 ]; then
    echo "error: the unmutated tree $([ $rc -eq 2 ] && echo 'does not build' || echo 'fails the quick suite'):"
    grep -E '^FAIL|error' "$WORK/baseline.log" "$WORK/baseline.log.build" 2>/dev/null | head -20
    echo "0 passed, 1 failed"
    exit 1
fi
echo "   ok ($(( $(date +%s) - t0 )) s: build and quick suite)"

# run_mutant DIR TREE: applies the entry in DIR to TREE (restored first),
# builds and runs; leaves the outcome in DIR/status and the report line
# in DIR/line.
run_mutant() {
    local d=$1 tree=$2 name bad h k f content old new rest count before after t0 rc dt why
    name=$(cat "$d/name")
    restore "$tree"
    bad=""
    for h in "$d"/hunks/*.file; do
        k=${h%.file}
        f=$(cat "$h")
        read_all "$tree/$f"; content=$REPLY
        old=$(cat "$k.old")   # trailing newline of the last line dropped
        new=$(cat "$k.new")
        if [ -z "$old" ]; then bad="an empty '-' text"; break; fi
        rest=${content//"$old"/}
        count=$(( (${#content} - ${#rest}) / ${#old} ))
        if [ "$count" -ne 1 ]; then
            bad="the text of hunk $(basename "$k") occurs $count times in $f, not once"
            break
        fi
        before=${content%%"$old"*}
        after=${content#*"$old"}
        printf '%s' "$before$new$after" >"$tree/$f"
    done
    t0=$(date +%s)
    if [ -n "$bad" ]; then
        echo apply >"$d/status"
        printf 'ERROR    %-48s does not apply: %s\n' "$name" "$bad" >"$d/line"
        return
    fi
    build_and_run "$tree" "$d/log"
    rc=$?
    dt=$(( $(date +%s) - t0 ))
    case $rc in
        0) echo survived >"$d/status"
           printf 'SURVIVED %-48s %3d s  %s\n' "$name" "$dt" "$(cat "$d/desc")" >"$d/line" ;;
        1) echo killed >"$d/status"
           why=$(grep -m1 -E '^FAIL' "$d/log" || tail -n 1 "$d/log")
           printf 'killed   %-48s %3d s  %s\n' "$name" "$dt" "${why:0:110}" >"$d/line" ;;
        *) echo build >"$d/status"
           { printf 'ERROR    %-48s does not build:\n' "$name"
             grep -m5 error "$d/log.build" | sed 's/^/    /'; } >"$d/line" ;;
    esac
}

# the entries to run, in catalog order
todo=()
for d in "$WORK"/m/*; do
    name=$(cat "$d/name")
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
    todo+=("$d")
done
ran=${#todo[@]}
# job j takes entries j, j + JOBS, ... in a tree of its own
for ((j = 0; j < MUTANT_JOBS && j < ran; ++j)); do
    (
        tj=$WORK/tree$j
        cp -r "$T" "$tj"
        for ((i = j; i < ran; i += MUTANT_JOBS)); do run_mutant "${todo[$i]}" "$tj"; done
    ) &
done
wait

killed=0; survived=0; errors=0
survivors=()
for d in "${todo[@]+"${todo[@]}"}"; do
    name=$(cat "$d/name")
    status=$(cat "$d/status" 2>/dev/null || echo missing)
    if [ -f "$d/line" ]; then cat "$d/line"; else printf 'ERROR    %-48s no result\n' "$name"; fi
    case $status in
        killed) killed=$((killed + 1)) ;;
        survived) survived=$((survived + 1)); survivors+=("$name") ;;
        apply) errors=$((errors + 1)); survivors+=("$name (does not apply)") ;;
        build) errors=$((errors + 1)); survivors+=("$name (does not build)") ;;
        *) errors=$((errors + 1)); survivors+=("$name (no result)") ;;
    esac
done
[ $ran -gt 0 ] || { echo "error: MUTANTS=$ONLY names no mutant"; echo "0 passed, 1 failed"; exit 1; }

echo "mutants: $ran run, $killed killed, $survived survived, $errors errors"
for s in "${survivors[@]+"${survivors[@]}"}"; do echo "  not killed: $s"; done
echo "$killed passed, $((survived + errors)) failed"
[ $((survived + errors)) -eq 0 ]
