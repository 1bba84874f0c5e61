# common.bash - shared setup of the CLI tests. In each .bats file:
#
#   setup() {
#       load common
#       cd "$BATS_TEST_TMPDIR"
#   }
#
# Environment: DS_BIN, the absolute path of the built tools (set by
# `make check-cli`); DS_EXEC_PREFIX, a command to run them under (valgrind for
# `make check-valgrind`); BATS_LIB_PATH=/usr/lib/bats for the bats libraries.

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

if [[ -z ${DS_BIN:-} || ! -d $DS_BIN ]]; then
    echo "common.bash: set DS_BIN to the absolute path of the built tools" >&2
    return 1
fi
DS_BIN=$(cd "$DS_BIN" && pwd)
DS_EXEC_PREFIX=${DS_EXEC_PREFIX:-}
export DS_BIN DS_EXEC_PREFIX

# Absolute paths, valid after `cd "$BATS_TEST_TMPDIR"`.
REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
DATA=$(cd "$BATS_TEST_DIRNAME/../data" && pwd)
export REPO DATA

PATH=$DS_BIN:$PATH
LC_ALL=C
export PATH LC_ALL

# The version every tool reports, from the Makefile.
DS_VERSION=$(sed -n 's/^VERSION *:*= *//p' "$REPO/Makefile")

# ds TOOL ARGS...: runs $DS_BIN/TOOL under $DS_EXEC_PREFIX. Exported, so
# `run bash -c 'ds ds-convert ... | ...'` works too.
ds() {
    local tool=$1
    shift
    $DS_EXEC_PREFIX "$DS_BIN/$tool" "$@"
}
export -f ds

# The tools that exist, one name per line (ds-convert, ...), in C order.
ds_tools() {
    local t
    for t in "$DS_BIN"/ds-*; do
        [[ ${t##*/} != *.* && -f $t && -x $t ]] && echo "${t##*/}"
    done
    return 0
}

# assert_dir_empty [DIR]: DIR (default: the current directory, the test's
# own) holds nothing, not even hidden temporary files or directories: what a
# failed run must leave behind. Keep a failure test's inputs elsewhere (in
# $DATA or $BATS_FILE_TMPDIR). Ignores the separate-stderr-XXXXXX files that
# `run --separate-stderr` of bats 1.8 leaves in $BATS_TEST_TMPDIR.
assert_dir_empty() {
    local dir=${1:-.} left
    left=$(cd "$dir" && find . -mindepth 1 ! -path './separate-stderr-??????' | sort)
    if [[ -n $left ]]; then
        batslib_print_kv_single_or_multi 8 directory "$dir" files "$left" |
            batslib_decorate "directory is not empty" | fail
    fi
}

# reference tokens of a checkpoint, comma-separated
ref_tokens() {
    tr -d ' \n' < "$1/reference.json" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/'
}

# compare A B N_VOCAB: prints "rel=<max|a-b|/max|b|> agree=<fraction of rows with equal argmax>"
compare_logits() {
    paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") | awk -v V="$3" '
        { a = $1 + 0; b = $2 + 0; d = a - b; if (d < 0) d = -d; if (d > md) md = d
          m = b < 0 ? -b : b; if (m > mb) mb = m
          j = (NR - 1) % V
          if (j == 0 || a > ba) { ba = a; ia = j }
          if (j == 0 || b > bb) { bb = b; ib = j }
          if (j == V - 1) { rows++; if (ia == ib) same++ } }
        END { printf "rel=%.3g agree=%.4f rows=%d\n", md / mb, same / rows, rows }'
}
