#!/usr/bin/env bats
# faults.bats - what every tool that writes a file does when the world goes
# wrong: a full file system (a small tmpfs; skipped where mount is not
# permitted) or /dev/full, a closed pipe on stdout or stderr, an input cut
# short in the middle of a tensor, SIGINT and SIGTERM while it writes. Each
# time: a clean error (one line naming the file and the problem, exit 1; or
# death by the signal, with no message), no partial output, an existing
# output untouched, no temporary files left.
#
# The writers are listed in writer_cmds below: a new tool that writes files
# (ds-prune, ds-distill, ...) gets a line there and is covered by every test.
# (ds-convert's own SIGINT/SIGTERM test is in ds-convert.bats.)

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

teardown() {
    if [[ -n ${MOUNTED:-} ]]; then
        umount "$MOUNTED" 2>/dev/null || true
    fi
}

# writer_cmds: KIND TOOL ARGS..., one line per way a tool writes an output.
# @IN@ is a GGUF model (from tests/data/tiny-v2lite), @TEXT@ 2000 bytes of
# text, @TASK@ a generation task file (tests/data/evals), @OUT@ the output path
# ('-' in the stdout tests); KIND is "file" or "dir" (the output is a
# directory), with "+small" for a file that fits in a pipe's buffer (the
# tool is done before a closed pipe can stop it: no SIGPIPE test) and "+file"
# for a tool whose input must be a file (no standard input test). Every line must overwrite an existing output (give -f; ds-eval
# always replaces its outputs).
writer_cmds() {
    cat <<'EOF'
file ds-convert -f @IN@ -o @OUT@
dir ds-convert -f --to safetensors @IN@ -o @OUT@
file ds-quantize -f -t q8_0 @IN@ -o @OUT@
file ds-quantize -f -t q4_k_m --calibrate @TEXT@ --calibrate-ctx 16 --calibrate-chunks 1 @IN@ -o @OUT@
file+small ds-run -m @IN@ -p "Hello, world." -n 0 --dump-logits @OUT@
file+small ds-eval -m @IN@ --perplexity @TEXT@ -c 16 --limit 1 --json @OUT@
file+small ds-eval -m @IN@ --perplexity @TEXT@ -c 16 --limit 1 --junit @OUT@
file+small ds-eval -m @IN@ --perplexity @TEXT@ -c 16 --limit 1 --save-logits @OUT@
file+small ds-eval -m @IN@ @TASK@ --limit 2 -n 2 --log-samples @OUT@
file ds-prune -f -s 0.5 @IN@ -o @OUT@
file ds-prune -f --experts 0.5 @IN@ -o @OUT@
file+file ds-distill -f @IN@ --data @TEXT@ --steps 1 --batch 1 --ctx 8 -T 1 -o @OUT@
dir+file ds-distill -f @IN@ --data @TEXT@ --steps 2 --stop-at 1 --batch 1 --ctx 8 -T 1 --checkpoint @OUT@
EOF
}

# The tiny GGUF, made once per file.
tiny_gguf() {
    local g=$BATS_FILE_TMPDIR/tiny-v2lite.gguf
    [[ -s $g ]] || ds ds-convert -q "$DATA/tiny-v2lite" -o "$g" >&2 || return 1
    echo "$g"
}

# each_writer IN OUT FN: for each line of writer_cmds whose tool is built,
# sets KIND, TOOL and CMD (an array: the command with IN and OUT in place)
# and calls FN.
each_writer() {
    local in=$1 out=$2 fn=$3 line word text
    text=$BATS_FILE_TMPDIR/calib.txt
    [[ -s $text ]] || head -c 2000 "$DATA/shakespeare-12k.txt" > "$text"
    while read -r line; do
        eval "set -- $line"
        KIND=${1%%+*} TOOL=$2 SMALL= FILE_ONLY=
        [[ $1 != *+small* ]] || SMALL=1
        [[ $1 != *+file* ]] || FILE_ONLY=1
        shift
        [[ -x $DS_BIN/$TOOL ]] || continue
        CMD=()
        for word; do
            word=${word//@IN@/$in}
            word=${word//@OUT@/$out}
            word=${word//@TASK@/$DATA/evals/gen.jsonl}
            CMD+=("${word//@TEXT@/$text}")
        done
        echo "# ${CMD[*]}"
        "$fn"
    done < <(writer_cmds)
}

# put_old PATH KIND: an existing output (a file, or a directory with one).
put_old() {
    if [[ $2 == dir ]]; then
        mkdir -p "$1" && echo old > "$1/old.txt"
    else
        echo old > "$1"
    fi
}

# assert_old PATH KIND: the existing output is as put_old left it.
assert_old() {
    if [[ $2 == dir ]]; then
        [[ $(ls -A "$1") == old.txt && $(cat "$1/old.txt") == old ]] ||
            fail "existing output directory $1 changed: $(ls -A "$1")"
    else
        [[ $(cat "$1") == old ]] || fail "existing output $1 changed"
    fi
}

# assert_error_line FILE-TEXT PROBLEM: stderr is one line "TOOL: ...", naming
# both.
assert_error_line() {
    [[ $stderr != *$'\n'* ]] || fail "more than one line on stderr: $stderr"
    [[ $stderr == "$TOOL: "*"$1"*"$2"* || $stderr == "$TOOL: "*"$2"*"$1"* ]] ||
        fail "stderr '$stderr' does not name '$1' and '$2'"
}

# ls_here [DIR]: the names in DIR (default .), without the separate-stderr-*
# files of bats 1.8.
ls_here() {
    ls -A "${1:-.}" | grep -v '^separate-stderr-' || true
}

# ---- full file systems ---------------------------------------------------------

# The tmpfs "full" holds the old output and a filler taking all the rest.
full_fs_case() {
    rm -f full/filler
    put_old full/out "$KIND"
    head -c 1M /dev/zero > full/filler 2>/dev/null || true
    run -1 --separate-stderr ds "${CMD[@]}" -q
    assert_error_line "out" "No space left on device"
    assert_old full/out "$KIND"
    run -0 ls_here full
    assert_output "filler
out"
    rm -rf full/out
}

@test "faults: a full file system fails cleanly and leaves the existing output" {
    local in
    in=$(tiny_gguf)
    mkdir full
    mount -t tmpfs -o size=64k tmpfs full 2>/dev/null || skip "cannot mount a tmpfs here"
    MOUNTED=$PWD/full
    each_writer "$in" "$PWD/full/out" full_fs_case
}

@test "faults: stdout on /dev/full is one error line and exit 1" {
    local in
    in=$(tiny_gguf)
    each_writer "$in" - dev_full_case
    run -1 --separate-stderr bash -c "ds ds-run -m '$in' -p Hello -n 4 --temp 0 > /dev/full"
    TOOL=ds-run assert_error_line "standard output" ""
    assert_dir_empty
}

dev_full_case() {
    [[ $KIND == file ]] || return 0 # a directory is never stdout
    run -1 --separate-stderr bash -c "$(printf '%q ' ds "${CMD[@]}" -q) > /dev/full"
    [[ $stderr == "$TOOL: "*"No space left on device"* || $stderr == "$TOOL: error writing to standard output"* ]] ||
        fail "stderr: $stderr"
    [[ $stderr != *$'\n'* ]] || fail "more than one line on stderr: $stderr"
}

# ---- closed pipes ------------------------------------------------------------------

@test "faults: a closed pipe on stdout ends the tool by SIGPIPE, silently" {
    local in
    in=$(tiny_gguf)
    each_writer "$in" - closed_stdout_case
    run -0 --separate-stderr bash -c \
        "set -o pipefail; ds ds-run -m '$in' -p Hello -n 200 --temp 0 | head -c 1 > /dev/null; echo \$?"
    [[ $output == 0 || $output == 141 ]] || fail "status $output"
    assert_equal "$stderr" ""
    assert_dir_empty
}

closed_stdout_case() {
    [[ $KIND == file && -z $SMALL ]] || return 0
    run -0 --separate-stderr bash -c \
        "set -o pipefail; $(printf '%q ' ds "${CMD[@]}" -q) | head -c 10 > /dev/null; echo \$?"
    assert_output 141
    assert_equal "$stderr" ""
}

@test "faults: a closed pipe on stderr removes the temporary output" {
    local in
    in=$(tiny_gguf)
    each_writer "$in" "$PWD/out" closed_stderr_case
}

closed_stderr_case() {
    # what a normal run writes
    run -0 ds "${CMD[@]/#$PWD\/out/$PWD/ref}" -q
    put_old out "$KIND"
    # progress and -v messages go to a pipe that is closed at once
    run -0 bash -c "$(printf '%q ' ds "${CMD[@]}") -v --progress 2>&1 >/dev/null | true; echo \${PIPESTATUS[0]}"
    [[ $output == 141 || $output == 0 ]] || fail "status $output"
    # the output is the old one, or the whole new one (committed before the
    # tool died writing a last message)
    if ! diff -r ref out > /dev/null; then
        assert_old out "$KIND"
    fi
    run -0 ls_here
    assert_output "out
ref"
    rm -rf out ref
}

# ---- truncated inputs --------------------------------------------------------------

@test "faults: an input cut in the middle of a tensor, as a file and on stdin" {
    local in
    in=$(tiny_gguf)
    mkdir "$BATS_TEST_TMPDIR/../cut.$$"
    CUT=$BATS_TEST_TMPDIR/../cut.$$/cut.gguf
    head -c 2000000 "$in" > "$CUT"
    each_writer "$CUT" "$PWD/out" truncated_case
    rm -rf "$BATS_TEST_TMPDIR/../cut.$$"
}

truncated_case() {
    put_old out "$KIND"
    run -1 --separate-stderr ds "${CMD[@]}" -q
    assert_error_line "cut.gguf" "past end of file"
    assert_old out "$KIND"
    # the same as a stream on standard input: it ends early (--calibrate and
    # +file tools need a file)
    [[ " ${CMD[*]} " != *" --calibrate "* && -z $FILE_ONLY ]] || { rm -rf out; return 0; }
    local -a stdin_cmd=("${CMD[@]/#$CUT/-}")
    run -1 --separate-stderr bash -c "cat '$CUT' | $(printf '%q ' ds "${stdin_cmd[@]}" -q)"
    # (a tool that spools its input to a temporary file first knows its size)
    if [[ $stderr == *"past end of file"* ]]; then
        assert_error_line "<stdin>" "past end of file"
    else
        assert_error_line "<stdin>" "unexpected end of file"
    fi
    assert_old out "$KIND"
    run -0 ls_here
    assert_output out
    rm -rf out
}

@test "faults: safetensors cut in the middle of a tensor" {
    mkdir in
    cp "$DATA/tiny-v2lite"/*.json in/
    head -c 2000000 "$DATA/tiny-v2lite/model.safetensors" > in/model.safetensors
    echo old > out.gguf
    run -1 --separate-stderr ds ds-convert -f in -o out.gguf
    TOOL=ds-convert assert_error_line "model.safetensors" "out of range"
    [[ $(cat out.gguf) == old ]]
    run -0 ls_here
    assert_output "in
out.gguf"
}

# ---- signals --------------------------------------------------------------------------

@test "faults: SIGINT and SIGTERM while writing remove the temporary output" {
    local in
    in=$(tiny_gguf)
    FULL=$in
    each_writer "$PWD/fifo" "$PWD/out" signal_case
}

# The input comes through a fifo that stalls after 2 MB: the tool waits in
# the middle of its work (the writers of a GGUF output in the middle of
# writing it) until the signal comes.
signal_case() {
    local sig pid feeder status
    for sig in INT TERM; do
        put_old out "$KIND"
        mkfifo fifo
        (head -c 2000000 "$FULL"; sleep 30) > fifo &
        feeder=$!
        # background jobs of a script start with SIGINT ignored: restore it
        env --default-signal=INT "$DS_BIN/${CMD[0]}" "${CMD[@]:1}" -q 2> err &
        pid=$!
        sleep 1
        kill -s "$sig" "$pid"
        status=0
        wait "$pid" || status=$?
        kill "$feeder" 2>/dev/null || true
        wait "$feeder" 2>/dev/null || true
        [ "$status" -eq $((128 + $(kill -l "$sig"))) ] || fail "status $status after SIG$sig"
        [[ ! -s err ]] || fail "stderr after SIG$sig: $(cat err)"
        assert_old out "$KIND"
        rm -f fifo err
        run -0 ls_here
        assert_output out
        rm -rf out
    done
}

# ---- hostile files under a memory limit ------------------------------------------------

# le64 N: 8 bytes little-endian, as printf escapes
le64() {
    local n=$1 out="" i
    for i in 0 1 2 3 4 5 6 7; do
        out+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255)))
    done
    printf '%s' "$out"
}

# nested N: a JSON value nested N deep
nested() {
    local n=$1
    { head -c "$n" /dev/zero | tr '\0' '['; head -c "$n" /dev/zero | tr '\0' ']'; }
}

# limited TOOL ARGS...: the tool under a 1 GiB address-space limit (ulimit -v)
limited() {
    (ulimit -v 1048576 && ds "$@")
}

# hostile STATUS-TEXT TOOL ARGS...: the tool fails with exit 1 and one line
# on stderr containing TEXT (no crash, no "out of memory")
hostile() {
    local text=$1
    shift
    run -1 --separate-stderr limited "$@"
    [[ $stderr != *$'\n'* ]] || fail "$*: more than one line on stderr: $stderr"
    [[ $stderr == *"$text"* ]] || fail "$*: stderr '$stderr' lacks '$text'"
    [[ $stderr != *"out of memory"* ]] || fail "$*: $stderr"
}

@test "faults: hostile files fail cleanly under a 1 GiB memory limit" {
    [[ -z $DS_EXEC_PREFIX ]] || skip "not under $DS_EXEC_PREFIX"
    run limited ds-convert --version
    [[ $status -eq 0 ]] || skip "the tools do not start under ulimit -v (a sanitizer build)"
    local d=$BATS_FILE_TMPDIR/hostile t
    mkdir -p "$d"
    # 2^60 tensors
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 $((1 << 60)))"; printf "$(le64 0)"; } > "$d/count.gguf"
    # one f32 tensor of 2^38 elements (1 TiB), 4 KiB of data
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 1)"; printf "$(le64 0)"
      printf "$(le64 1)w"; printf '\x01\x00\x00\x00'; printf "$(le64 $((1 << 38)))"
      printf '\x00\x00\x00\x00'; printf "$(le64 0)"; head -c 4096 /dev/zero; } > "$d/tb.gguf"
    # a string of 2^30 bytes (the cap) with 100 there
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 0)"; printf "$(le64 1)"
      printf "$(le64 4)name"; printf '\x08\x00\x00\x00'; printf "$(le64 $((1 << 30)))"
      head -c 100 /dev/zero; } > "$d/str.gguf"
    for t in ds-convert ds-quantize ds-run; do
        local -a cmd=("$t")
        case $t in
        ds-quantize) cmd+=(-t q8_0 -o "$PWD/out.gguf") ;;
        ds-convert) cmd+=(-o "$PWD/out.gguf") ;;
        ds-run) cmd+=(-p hi -m) ;;
        esac
        echo "# $t"
        hostile "tensors is too many" "${cmd[@]}" "$d/count.gguf"
        hostile "past end of file" "${cmd[@]}" "$d/tb.gguf"
        hostile "past end of file" "${cmd[@]}" "$d/str.gguf"
        # the same as streams: the claims fail where the input ends
        # (known: ds-convert and ds-quantize copy a tensor of the same type by whole rows, so
        # on a stream it asks for the 1 TiB row first and fails with "out of
        # memory converting 'w'": still one clean line)
        run -1 --separate-stderr bash -c "cat '$d/tb.gguf' | (ulimit -v 1048576; ds ${cmd[*]} -)"
        [[ $stderr == *"end of file"* || $stderr == *"missing"* ||
            $stderr == "$t: out of memory converting 'w'" ]] || fail "$t: $stderr"
        [[ $stderr != *$'\n'* ]] || fail "$t: $stderr"
        run -1 --separate-stderr bash -c "cat '$d/str.gguf' | (ulimit -v 1048576; ds ${cmd[*]} -)"
        [[ $stderr == *"unexpected end of file"* ]] || fail "$t: $stderr"
    done
    # Hugging Face inputs: JSON nested 100000 deep, a header length of 2^62
    mkdir -p "$d/hf"
    cp "$DATA/tiny-v2lite"/*.json "$DATA/tiny-v2lite/model.safetensors" "$d/hf/"
    nested 100000 > "$d/hf/config.json"
    hostile "nested deeper than" ds-convert "$d/hf" -o out.gguf
    cp "$DATA/tiny-v2lite/config.json" "$d/hf/"
    nested 100000 > "$d/hf/tokenizer.json"
    hostile "nested deeper than" ds-convert "$d/hf" -o out.gguf
    cp "$DATA/tiny-v2lite/tokenizer.json" "$d/hf/"
    { printf "$(le64 $((1 << 62)))"; printf '{}'; } > "$d/hf/model.safetensors"
    hostile "larger than the limit" ds-convert "$d/hf" -o out.gguf
    # an importance matrix claiming 2^28 values, compressed
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 2)"; printf "$(le64 0)"
      printf "$(le64 9)a.in_sum2"; printf '\x02\x00\x00\x00'; printf "$(le64 16384)$(le64 16384)"
      printf '\x00\x00\x00\x00'; printf "$(le64 0)"
      printf "$(le64 8)a.counts"; printf '\x02\x00\x00\x00'; printf "$(le64 1)$(le64 16384)"
      printf '\x00\x00\x00\x00'; printf "$(le64 $((1 << 30)))"; head -c 4096 /dev/zero; } |
        zstd -q > "$d/im.gguf.zst"
    hostile "past end of file" ds-quantize -t q4_k_m --imatrix "$d/im.gguf.zst" \
        "$(tiny_gguf)" -o out.gguf
    assert_dir_empty
}
