#!/bin/sh
# test_picture.sh -- checks that build/nsa_picture writes well-formed SVG.
# Builds nothing: run it after building build/nsa_picture. Usage:
#   tools/test_picture.sh [path/to/nsa_picture]
PIC=${1:-build/nsa_picture}
TMP=${TMPDIR:-/tmp}/nsa_picture_test.$$
pass=0
fail=0
mkdir -p "$TMP" || exit 1
trap 'rm -rf "$TMP"' EXIT

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

# check NAME FILE: the file is one well-formed <svg> document with rects.
check_svg() {
    name=$1 file=$2
    if [ ! -s "$file" ]; then bad "$name: no output"; return; fi
    if command -v xmllint >/dev/null 2>&1; then
        if xmllint --noout "$file" 2>"$TMP/xmllint.err"; then :; else
            bad "$name: not well-formed XML"; cat "$TMP/xmllint.err"; return
        fi
    fi
    if ! grep -q '<svg ' "$file" || ! tail -n 1 "$file" | grep -q '^</svg>$'; then
        bad "$name: no <svg> ... </svg>"; return
    fi
    opens=$(grep -c '<svg ' "$file")
    if [ "$opens" -ne 1 ]; then bad "$name: $opens <svg> elements"; return; fi
    rects=$(grep -c '<rect ' "$file")
    if [ "$rects" -le 0 ]; then bad "$name: no rect elements"; return; fi
    ok "$name ($rects rects, $(wc -c <"$file") bytes)"
}

# has_class NAME FILE CLASS: at least one drawn cell of class CLASS.
has_class() {
    if grep -q "<rect class=\"$3\"" "$2"; then ok "$1"; else bad "$1"; fi
}

if [ ! -x "$PIC" ]; then
    bad "$PIC: not built"
    echo "$pass passed, $fail failed"
    exit 1
fi

# Plane view, paper preset, small: every branch appears.
if "$PIC" --preset paper --T 1024 --out "$TMP/paper.svg"; then
    check_svg "paper plane T=1024" "$TMP/paper.svg"
    has_class "paper plane: compressed cells" "$TMP/paper.svg" c1
    has_class "paper plane: selected cells" "$TMP/paper.svg" c2
    has_class "paper plane: window cells" "$TMP/paper.svg" c3
    has_class "paper plane: forced cells" "$TMP/paper.svg" c4
else
    bad "paper plane T=1024: exit status"
fi

# Every preset, plane and tile views, GQA and a second kv head.
for preset in paper fla tile64 tile128; do
    if "$PIC" --preset "$preset" --T 640 --H 4 --Hkv 2 --D 8 --head 1 \
        --seed 7 --out "$TMP/$preset.svg"; then
        check_svg "$preset plane" "$TMP/$preset.svg"
    else
        bad "$preset plane: exit status"
    fi
    if "$PIC" --preset "$preset" --T 640 --tiles --out "$TMP/$preset.t.svg"; then
        check_svg "$preset tiles" "$TMP/$preset.t.svg"
    else
        bad "$preset tiles: exit status"
    fi
done

# Overrides of w and n.
if "$PIC" --preset paper --T 640 --w 96 --n 5 --cell 4 --out "$TMP/wn.svg"; then
    check_svg "paper --w 96 --n 5" "$TMP/wn.svg"
else
    bad "paper --w 96 --n 5: exit status"
fi

# Tiny sequence (shorter than a compressed block) and standard output.
if "$PIC" --T 5 --cell 1 >"$TMP/tiny.svg"; then
    check_svg "T=5 to stdout" "$TMP/tiny.svg"
else
    bad "T=5 to stdout: exit status"
fi

# Same seed, same picture.
"$PIC" --T 512 --seed 3 --out "$TMP/a.svg" && "$PIC" --T 512 --seed 3 --out "$TMP/b.svg"
if cmp -s "$TMP/a.svg" "$TMP/b.svg"; then ok "deterministic output"; else bad "deterministic output"; fi

# Bad options are refused with status 2.
for args in "--preset nope" "--T 0" "--H 3 --Hkv 2" "--head 1" "--bogus" "--w"; do
    # shellcheck disable=SC2086
    "$PIC" $args --out "$TMP/bad.svg" 2>/dev/null
    if [ $? -eq 2 ]; then ok "refuses $args"; else bad "refuses $args"; fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
