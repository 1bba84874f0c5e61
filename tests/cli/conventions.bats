#!/usr/bin/env bats
# conventions.bats - the command-line conventions of STYLE.md, checked for
# every tool in $DS_BIN: --help, --version, usage errors, terminal refusal,
# stdout write errors. Each test loops over the tools, so a new cmd/ds-*.c
# is covered as soon as it is built.

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

# The tools that write binary data (a model) to standard output, and those
# that read one from standard input (STYLE.md, "Binary output and terminals").
BINARY_WRITERS=" ds-convert ds-quantize ds-prune ds-distill "
BINARY_READERS=" ds-convert ds-quantize ds-prune "

is_binary_writer() {
    [[ $BINARY_WRITERS == *" $1 "* ]]
}

is_binary_reader() {
    [[ $BINARY_READERS == *" $1 "* ]]
}

# Options a tool needs, besides its INPUT, to get as far as its I/O. A new
# binary writer that cannot run on its model alone gets a line here.
needed_opts() {
    case $1 in
    ds-quantize) echo "-t q8_0" ;;
    ds-distill) echo "--data $DATA/shakespeare-12k.txt --steps 1 --batch 1 --ctx 8 --keep-layers 0 -T 1" ;;
    *) ;;
    esac
}

# The option table of a tool, one option per line with the fields separated
# by \037 (not a tab: `read` would merge the empty fields around tabs).
opt_table() {
    ds "$1" --list-options | tr '\t' '\037'
}

# A tiny GGUF (from tests/data/tiny-v2lite), made once per file, for the
# tools that read one.
tiny_gguf() {
    local g=$BATS_FILE_TMPDIR/tiny-v2lite.gguf
    if [[ ! -s $g ]]; then
        ds ds-convert -q "$DATA/tiny-v2lite" -o "$g" >&2 || return 1
    fi
    echo "$g"
}

# binary_cmd TOOL [OPTIONS...]: a shell command line that makes TOOL write
# binary data to standard output. A new binary writer that needs more than
# its model as INPUT gets a line in the case below.
binary_cmd() {
    local tool=$1 input
    shift
    case $tool in
    ds-convert) input=$DATA/tiny-v2lite ;;
    *) input=$(tiny_gguf) || return 1 ;;
    esac
    # shellcheck disable=SC2046
    printf '%q ' $DS_EXEC_PREFIX "$DS_BIN/$tool" $(needed_opts "$tool") "$@" "$input"
}

# An option letter that TOOL does not have.
unused_short() {
    local used c
    used=$(ds "$1" --list-options | cut -f1 | tr -d '\n-')
    for c in Y X K J U W; do
        [[ $used != *"$c"* ]] && { echo "$c"; return; }
    done
    return 1
}

@test "conventions: at least one tool is built" {
    run -0 ds_tools
    assert_line ds-convert
}

@test "conventions: --help and -h print the usage to stdout and exit 0" {
    local t h
    for t in $(ds_tools); do
        for h in --help -h; do
            echo "# $t $h"
            run -0 --separate-stderr ds "$t" "$h"
            assert_equal "$stderr" ""
            assert_line --index 0 --regexp "^Usage: $t "
            assert_output --partial "--version"
            assert_output --partial "See $t(1)"
        done
    done
}

@test "conventions: --version and -V print '<tool> <version>' and exit 0" {
    local t v
    [[ -n $DS_VERSION ]]
    for t in $(ds_tools); do
        for v in --version -V; do
            echo "# $t $v"
            run -0 --separate-stderr ds "$t" "$v"
            assert_equal "$stderr" ""
            assert_equal "${#lines[@]}" 1
            assert_equal "${lines[0]}" "$t $DS_VERSION"
        done
    done
}

@test "conventions: -vV and -v -V add the library versions" {
    local t libs
    libs="^libds $DS_VERSION, zstd [0-9][0-9.]*, cJSON [0-9][0-9.]*, PCRE2 [0-9][0-9.]*.*, OpenMP ([0-9]+|off)$"
    local args
    for t in $(ds_tools); do
        for args in "-vV" "-v -V" "-V -v" "--verbose --version"; do
            echo "# $t $args"
            # shellcheck disable=SC2086
            run -0 --separate-stderr ds "$t" $args
            assert_equal "$stderr" ""
            assert_equal "${#lines[@]}" 2
            assert_equal "${lines[0]}" "$t $DS_VERSION"
            assert_line --index 1 --regexp "$libs"
        done
    done
}

@test "conventions: --list-options prints five tab-separated fields per option" {
    local t
    for t in $(ds_tools); do
        echo "# $t"
        run -0 --separate-stderr ds "$t" --list-options
        assert_equal "$stderr" ""
        assert_line --partial $'\t--help\t'
        assert_line --partial $'\t--version\t'
        refute_line --partial "--list-options"
        run -0 awk -F '\t' 'NF != 5 || $2 !~ /^--[a-z]/ { print "bad line " NR ": " $0 }' \
            <<< "$(ds "$t" --list-options)"
        assert_output ""
    done
}

@test "conventions: an unknown option exits 2 with a hint on stderr and nothing on stdout" {
    local t c
    for t in $(ds_tools); do
        echo "# $t --no-such-option"
        run -2 --separate-stderr ds "$t" --no-such-option
        assert_output ""
        assert_equal "${stderr_lines[0]}" "$t: unknown option '--no-such-option'"
        [[ $stderr == *"Try '$t --help' for more information."* ]]

        c=$(unused_short "$t")
        echo "# $t -$c"
        run -2 --separate-stderr ds "$t" "-$c"
        assert_output ""
        assert_equal "${stderr_lines[0]}" "$t: unknown option '-$c'"
        [[ $stderr == *"Try '$t --help'"* ]]

        echo "# $t --help=x"
        run -2 --separate-stderr ds "$t" --help=x
        assert_output ""
        [[ $stderr == *"Try '$t --help'"* ]]
    done
    assert_dir_empty
}

@test "conventions: a missing option argument exits 2" {
    local t short long arg hint help o n=0
    for t in $(ds_tools); do
        while IFS=$'\037' read -r short long arg hint help; do
            [[ -n $arg ]] || continue
            for o in $short $long; do
                echo "# $t $o"
                run -2 --separate-stderr ds "$t" "$o"
                assert_output ""
                assert_equal "${stderr_lines[0]}" "$t: option '$o' needs an argument $arg"
                [[ $stderr == *"Try '$t --help'"* ]]
                n=$((n + 1))
            done
        done < <(opt_table "$t")
    done
    ((n > 0))
    assert_dir_empty
}

@test "conventions: a bad -T/--threads value exits 2" {
    local t v
    for t in $(ds_tools); do
        ds "$t" --list-options | cut -f2 | grep -qx -- --threads || continue
        for v in abc -1 1x ""; do
            echo "# $t --threads '$v'"
            run -2 --separate-stderr ds "$t" --threads "$v"
            assert_output ""
            [[ $stderr == *"invalid value '$v' for --threads"* ]]
        done
    done
    assert_dir_empty
}

@test "conventions: '--' ends the options" {
    local t
    for t in $(ds_tools); do
        echo "# $t -- --no-such-option"
        run --separate-stderr ds "$t" -- --no-such-option < /dev/null
        [[ $stderr != *"unknown option"* ]]
    done
}

@test "conventions: binary output to a terminal is refused (exit 1)" {
    command -v script > /dev/null || skip "script (util-linux) is not installed"
    local t n=0
    for t in $(ds_tools); do
        is_binary_writer "$t" || continue
        echo "# $t, stdout on a terminal"
        run -1 script -qec "$(binary_cmd "$t")" /dev/null < /dev/null
        assert_output --partial \
            "$t: refusing to write binary data to a terminal; use -o FILE or -f"
        assert_dir_empty
        n=$((n + 1))
    done
    ((n > 0))
}

@test "conventions: binary input from a terminal is refused (exit 1)" {
    command -v script > /dev/null || skip "script (util-linux) is not installed"
    local t n=0
    for t in $(ds_tools); do
        is_binary_reader "$t" || continue
        echo "# $t, stdin on a terminal"
        # shellcheck disable=SC2046
        run -1 script -qec \
            "$(printf '%q ' $DS_EXEC_PREFIX "$DS_BIN/$t" $(needed_opts "$t") -o out.bin)" \
            /dev/null < /dev/null
        assert_output --partial "$t: refusing to read binary data from a terminal"
        assert_dir_empty
        n=$((n + 1))
    done
    ((n > 0))
}

@test "conventions: -f allows binary output to a terminal" {
    command -v script > /dev/null || skip "script (util-linux) is not installed"
    local t cmd
    for t in $(ds_tools); do
        is_binary_writer "$t" || continue
        echo "# $t -f, stdout on a terminal"
        cmd=$(binary_cmd "$t" -f) || fail "cannot build the command for $t"
        # stderr (progress on a terminal) goes to a file, so that the data
        # on the terminal starts with the GGUF magic
        run -0 bash -c "script -qec '$cmd 2> tty.err' /dev/null < /dev/null > tty.out"
        run -0 cat tty.err
        refute_output --partial "refusing"
        run -0 head -c 4 tty.out
        assert_output "GGUF"
        rm tty.out tty.err
    done
}

@test "conventions: a failed write to stdout exits 1" {
    local t o
    for t in $(ds_tools); do
        for o in --help --version --list-options; do
            echo "# $t $o > /dev/full"
            run -1 --separate-stderr bash -c "ds $t $o > /dev/full"
            assert_output ""
            assert_equal "$stderr" "$t: error writing to standard output: No space left on device"
        done
    done
    assert_dir_empty
}
