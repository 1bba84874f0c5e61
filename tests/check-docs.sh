#!/bin/sh
# check-docs.sh - the man pages and shell completions match the tools.
#
# Usage (from the repository root; `make check-docs` does this):
#   DS_BIN=/abs/path/to/cmd [MAKE=make] [SCDOC=scdoc] sh tests/check-docs.sh
#
# For every tool $DS_BIN/ds-*:
#   (a) each option of `TOOL --list-options` (long and short name, with its
#       argument name) is documented in the OPTIONS section of
#       man/TOOL.1.scd, each option documented there exists, and --help
#       shows them all;
#   (b) the committed completions are what completions/gen.sh generates now;
#   (c) the committed roff pages (man/*.1, man/ds.7) are what `make man`
#       generates now (when scdoc is installed);
#   (d) each page has the sections NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
#       EXIT STATUS, ENVIRONMENT and EXAMPLES, in man-pages(7) order.
# Prints one "ok"/"not ok" line per check, "N passed, N failed" last, and
# exits 1 if any check failed.

set -u
LC_ALL=C
export LC_ALL

: "${DS_BIN:?set DS_BIN to the directory of the built tools}"
MAKE=${MAKE:-make}
SCDOC=${SCDOC:-scdoc}
passed=0
failed=0

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ds-check-docs.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# check NAME: the failure details are in $tmp/why (one line each)
check() {
    if [ -s "$tmp/why" ]; then
        failed=$((failed + 1))
        echo "not ok - $1"
        sed 's/^/#   /' "$tmp/why"
    else
        passed=$((passed + 1))
        echo "ok - $1"
    fi
    : > "$tmp/why"
}
why() {
    echo "$*" >> "$tmp/why"
}
: > "$tmp/why"

# The body of section "# NAME" of an scd page (up to the next "# " heading).
section() {
    awk -v s="# $2" '
        /^# / { on = ($0 == s); next }
        on' "$1"
}

# Option names (-x, --long) in the term lines of an OPTIONS section on stdin:
# lines that start with "*-" (an indented line is a description).
doc_opts() {
    grep '^\*-' | grep -oE '\*--?[A-Za-z0-9][A-Za-z0-9-]*\*' | tr -d '*' | sort -u
}

tools=
for t in "$DS_BIN"/ds-*; do
    case ${t##*/} in *.*) continue ;; esac     # cmd/ds-convert.c, ...
    [ -f "$t" ] && [ -x "$t" ] && tools="$tools ${t##*/}"
done
if [ -z "$tools" ]; then
    echo "not ok - no ds-* tools in '$DS_BIN'"
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- (a) options vs man page OPTIONS --------------------------------------------

for t in $tools; do
    scd=man/$t.1.scd
    if ! "$DS_BIN/$t" --list-options > "$tmp/$t.opts" 2> "$tmp/err"; then
        why "'$t --list-options' failed: $(cat "$tmp/err")"
        check "(a) $t: options match $scd"
        continue
    fi
    if [ ! -f "$scd" ]; then
        why "$scd is missing"
        check "(a) $t: options match $scd"
        continue
    fi
    section "$scd" OPTIONS > "$tmp/$t.optsec"
    doc_opts < "$tmp/$t.optsec" > "$tmp/$t.doc"
    awk -F '\t' '{ if ($1 != "") print $1; print $2 }' "$tmp/$t.opts" | sort -u > "$tmp/$t.real"
    comm -23 "$tmp/$t.real" "$tmp/$t.doc" | while read -r o; do
        why "$o is an option of $t but is not documented in the OPTIONS of $scd"
    done
    comm -13 "$tmp/$t.real" "$tmp/$t.doc" | while read -r o; do
        why "$o is documented in the OPTIONS of $scd but $t has no such option"
    done
    # Each option's term line names its short and long form and its argument,
    # as in "*-o*, *--output* _FILE_".
    while IFS= read -r line; do
        short=$(printf '%s\n' "$line" | cut -f1)
        long=$(printf '%s\n' "$line" | cut -f2)
        arg=$(printf '%s\n' "$line" | cut -f3)
        term=$(grep '^\*-' "$tmp/$t.optsec" | grep -F -e "*$long*" | head -n 1)
        [ -n "$term" ] || continue
        if [ -n "$short" ]; then
            case $term in
            *"*$short*"*) ;;
            *) why "$scd: '$term' does not name $short, the short form of $long" ;;
            esac
        fi
        if [ -n "$arg" ]; then
            case $term in
            *"_${arg}_"*) ;;
            *) why "$scd: '$term' does not name the argument _${arg}_ of $long" ;;
            esac
        else
            case $term in
            *_*_*) why "$scd: '$term' names an argument but $long takes none" ;;
            esac
        fi
    done < "$tmp/$t.opts"
    if "$DS_BIN/$t" --help > "$tmp/$t.help" 2>&1; then
        cut -f2 "$tmp/$t.opts" | while read -r o; do
            grep -qE -e "$o( |$)" "$tmp/$t.help" || why "$t --help does not show $o"
        done
    else
        why "'$t --help' failed"
    fi
    check "(a) $t: options match $scd"
done

# Every tool page belongs to a tool; ds(7) documents options that exist.
for scd in man/ds-*.1.scd; do
    [ -e "$scd" ] || continue
    t=${scd#man/}
    t=${t%.1.scd}
    case " $tools " in
    *" $t "*) ;;
    *) why "$scd documents $t, which is not a tool in $DS_BIN" ;;
    esac
done
check "(a) every man/ds-*.1.scd belongs to a tool"

if [ -f man/ds.7.scd ]; then
    cat "$tmp"/*.real | sort -u > "$tmp/all.real"
    section man/ds.7.scd OPTIONS | doc_opts | comm -13 "$tmp/all.real" - | while read -r o; do
        why "$o is documented in the OPTIONS of man/ds.7.scd but no tool has it"
    done
else
    why "man/ds.7.scd is missing"
fi
check "(a) the options of man/ds.7.scd exist"

# ---- (b) completions are current ----------------------------------------------------

if OUT="$tmp/completions" DS_BIN="$DS_BIN" sh completions/gen.sh 2> "$tmp/err"; then
    (cd "$tmp/completions" && find . -type f) | sort > "$tmp/gen.list"
    (cd completions && find bash zsh fish -type f 2>/dev/null) | sed 's|^|./|' | sort \
        > "$tmp/com.list"
    comm -23 "$tmp/gen.list" "$tmp/com.list" | while read -r f; do
        why "completions/${f#./} is missing: run 'make completions'"
    done
    comm -13 "$tmp/gen.list" "$tmp/com.list" | while read -r f; do
        why "completions/${f#./} is not generated any more: run 'make completions'"
    done
    comm -12 "$tmp/gen.list" "$tmp/com.list" | while read -r f; do
        if ! cmp -s "$tmp/completions/$f" "completions/$f"; then
            why "completions/${f#./} is out of date: run 'make completions'"
            diff -u "completions/$f" "$tmp/completions/$f" | head -n 20 >> "$tmp/why"
        fi
    done
else
    why "completions/gen.sh failed: $(cat "$tmp/err")"
fi
check "(b) the committed completions are current"

# ---- (c) committed roff is current ---------------------------------------------------

if command -v "$SCDOC" > /dev/null 2>&1; then
    if $MAKE -s --no-print-directory MANOUT="$tmp/man" SCDOC="$SCDOC" man \
        > "$tmp/err" 2>&1; then
        for scd in man/*.scd; do
            page=${scd%.scd}
            name=${page#man/}
            # The "Generated by scdoc VERSION" comment may differ.
            sed '/^\.\\" Generated by scdoc/d' "$tmp/man/$name" > "$tmp/new"
            [ -f "$page" ] && sed '/^\.\\" Generated by scdoc/d' "$page" > "$tmp/old"
            if [ ! -f "$page" ]; then
                why "$page is missing: run 'make man'"
            elif ! cmp -s "$tmp/old" "$tmp/new"; then
                why "$page is out of date: run 'make man'"
                diff -u "$page" "$tmp/man/$name" | head -n 20 >> "$tmp/why"
            fi
        done
    else
        why "'make man' failed: $(cat "$tmp/err")"
    fi
    check "(c) the committed roff pages are current"
else
    echo "ok - (c) the committed roff pages are current # SKIP $SCDOC not installed"
fi

# ---- (d) sections ----------------------------------------------------------------------

for t in $tools; do
    [ -f "man/$t.1.scd" ] && echo "man/$t.1.scd"
done > "$tmp/pages"
[ -f man/ds.7.scd ] && echo man/ds.7.scd >> "$tmp/pages"
while read -r scd; do
    # The headings of the page, in man-pages(7) order; others are ignored.
    grep '^# ' "$scd" | sed 's/^# //' | awk '
        BEGIN {
            n = split("NAME|SYNOPSIS|DESCRIPTION|OPTIONS|EXIT STATUS|ENVIRONMENT|FILES|EXAMPLES|SEE ALSO|BUGS", order, "|")
            for (i = 1; i <= n; i++) rank[order[i]] = i
            split("NAME|SYNOPSIS|DESCRIPTION|OPTIONS|EXIT STATUS|ENVIRONMENT|EXAMPLES", req, "|")
        }
        ($0 in rank) {
            seen[$0] = 1
            if (rank[$0] < last) printf "section %s comes after %s\n", $0, lastname
            last = rank[$0]; lastname = $0
        }
        END { for (i = 1; i <= 7; i++) if (!(req[i] in seen)) printf "no %s section\n", req[i] }
    ' | sed "s|^|$scd: |" >> "$tmp/why"
    name=${scd#man/}
    name=${name%.scd}
    name=${name%.[0-9]}
    section "$scd" NAME | grep -q "^$name - " || why "$scd: NAME does not start with '$name - '"
    head -n 1 "$scd" | grep -q "^$name([0-9])" || why "$scd: the first line is not '$name(N)'"
    check "(d) $scd has the required sections"
done < "$tmp/pages"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
