#!/usr/bin/env bats
# ds-run: exact logits, generation, sampling, chat, tokenization, errors.

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

V2=$BATS_TEST_DIRNAME/../data/tiny-v2lite
V3=$BATS_TEST_DIRNAME/../data/tiny-v3-fp8
VOCAB=$BATS_TEST_DIRNAME/../data/vocab/ggml-vocab-deepseek-llm.gguf

# model NAME TYPE: the tiny checkpoint NAME (v2 or v3) converted to TYPE, once per file
model() {
    local g=$BATS_FILE_TMPDIR/$1-$2.gguf src
    [[ $1 == v2 ]] && src=$V2 || src=$V3
    [[ -s $g ]] || ds ds-convert -q --outtype "$2" "$src" -o "$g" || return 1
    echo "$g"
}

@test "ds-run --dump-logits matches DeepSeek's reference logits (F32: 1e-3, BF16: 5e-2)" {
    local m tok out
    for m in v2 v3; do
        [[ $m == v2 ]] && src=$V2 || src=$V3
        tok=$(ref_tokens "$src")
        nv=$(tr -d ' \n' < "$src/reference.json" | sed 's/.*"n_vocab":\([0-9]*\).*/\1/')
        for ty in f32 bf16; do
            run -0 ds ds-run -m "$(model $m $ty)" --tokens "$tok" --dump-logits l.f32
            assert_output ""
            [ "$(stat -c %s l.f32)" -eq "$(stat -c %s "$src/reference.logits.f32")" ]
            out=$(compare_logits l.f32 "$src/reference.logits.f32" "$nv")
            echo "# $m $ty: $out" >&3
            rel=${out#rel=}; rel=${rel%% *}
            agree=${out#*agree=}; agree=${agree%% *}
            if [[ $ty == f32 ]]; then
                awk -v r="$rel" -v a="$agree" 'BEGIN { exit !(r <= 1e-3 && a == 1) }'
            else
                awk -v r="$rel" -v a="$agree" 'BEGIN { exit !(r <= 5e-2 && a >= 0.95) }'
            fi
        done
    done
}

@test "greedy generation is deterministic and streams only the text" {
    local g
    g=$(model v3 f32)
    run -0 --separate-stderr ds ds-run -m "$g" -p "ROMEO:" -n 12 --temp 0
    [ -z "$stderr" ]
    first=$output
    [ -n "$first" ]
    run -0 ds ds-run -m "$g" -p "ROMEO:" -n 12 --temp 0
    [ "$output" = "$first" ]
}

@test "the same seed gives the same text; -n 0 prints nothing" {
    local g
    g=$(model v2 f32)
    run -0 ds ds-run -m "$g" -p "To be" -n 16 --seed 42 --temp 1.2 --top-k 0 --top-p 1 --min-p 0
    a=$output
    run -0 ds ds-run -m "$g" -p "To be" -n 16 --seed 42 --temp 1.2 --top-k 0 --top-p 1 --min-p 0
    [ "$output" = "$a" ]
    run -0 ds ds-run -m "$g" -p "To be" -n 0
    assert_output ""
}

@test "prompt from -f FILE and from standard input equal -p" {
    local g
    g=$(model v2 f32)
    run -0 ds ds-run -m "$g" -p "What light" -n 6 --temp 0
    want=$output
    printf 'What light' > prompt.txt
    run -0 ds ds-run -m "$g" -f prompt.txt -n 6 --temp 0
    [ "$output" = "$want" ]
    run -0 bash -c "printf 'What light' | ds ds-run -m '$g' -n 6 --temp 0"
    [ "$output" = "$want" ]
}

@test "--stop cuts the output before the stop string" {
    local g
    g=$(model v3 f32)
    run -0 ds ds-run -m "$g" -p "ROMEO:" -n 24 --temp 0
    full=$output
    [ "${#full}" -gt 6 ]
    stop=${full:3:3}
    run -0 ds ds-run -m "$g" -p "ROMEO:" -n 24 --temp 0 --stop "$stop"
    [ "$output" = "${full%%"$stop"*}" ]
}

@test "--json prints one object with the text, counts and timings" {
    local g
    g=$(model v3 f32)
    run -0 ds ds-run -m "$g" -p "Hello" -n 5 --temp 0 --json
    [ "${#lines[@]}" -eq 1 ]
    assert_output --partial '"generated_tokens":'
    assert_output --partial '"prompt_tokens":'
    assert_output --partial '"timings":'
    assert_output --partial '"kv_cache_bytes":'
    run -0 ds ds-run -m "$g" -p "Hello" -n 5 --temp 0
    text=$output
    run -0 ds ds-run -m "$g" -p "Hello" -n 5 --temp 0 --json
    [[ $output == *"\"text\":\"$text\""* ]] || [[ $text == *[\"\\]* ]]
}

@test "-v reports load time, tokens/s and the KV cache on stderr" {
    local g
    g=$(model v3 f32)
    run -0 --separate-stderr ds ds-run -v -m "$g" -p "Hello" -n 4 --temp 0
    [[ $stderr == *"load "* ]]
    [[ $stderr == *"tokens/s"* ]]
    [[ $stderr == *"KV cache"* ]]
    # V3 tiny: 3 layers x (kv_lora 64 + rope 16) floats per token
    [[ $stderr == *"960 per token"* ]]
}

@test "--tokenize prints ids, also from a vocab-only GGUF (llama.cpp's vectors)" {
    run -0 ds ds-run -m "$VOCAB" -p "Hello world" --tokenize
    # deepseek-llm adds BOS (100000)
    assert_output "$(printf '100000\n17464\n1843')"
    # every llama.cpp test vector, without BOS: compare ids after the first
    local inp=$VOCAB.inp out=$VOCAB.out i=0 text want
    awk -v dir="$PWD" 'BEGIN { RS = "\n__ggml_vocab_test__\n"; ORS = "" }
        { f = sprintf("%s/case%03d.txt", dir, NR); printf "%s", $0 > f; close(f) }' "$inp"
    while IFS= read -r want; do
        i=$((i + 1))
        f=$(printf 'case%03d.txt' "$i")
        [[ -f $f ]] || break
        got=$(ds ds-run -m "$VOCAB" -f "$f" --tokenize | tail -n +2 | tr '\n' ' ')
        [ "$(echo $got)" = "$(echo $want)" ] || fail "case $i: got '$got' want '$want'"
    done < "$out"
    [ "$i" -gt 40 ]
}

@test "--chat applies the model's template (V3 markers) and --system" {
    local g
    g=$(model v3 f32)
    run -0 ds ds-run -m "$g" --chat --system "Be brief." -p "Hi" --tokenize
    [ "${lines[0]}" = 0 ]                 # BOS
    [[ " ${lines[*]} " == *" 508 "* ]]    # <｜User｜>
    [ "${lines[-1]}" = 509 ]              # ends with <｜Assistant｜>
    run -0 ds ds-run -m "$g" --chat-template deepseek-r1 -p "Hi" --tokenize
    [ "${lines[-2]}" = 510 ] || [ "${lines[-1]}" = 510 ] || [[ " ${lines[*]} " == *" 510 "* ]]
}

@test "a prompt longer than --ctx is an error, not a truncation" {
    local g
    g=$(model v2 f32)
    run -1 --separate-stderr ds ds-run -m "$g" --ctx 4 -p "one two three four five six seven"
    [[ $stderr == *"more than the context"* ]]
    assert_output ""
}

@test "errors: no model (2), missing or corrupt model, invalid UTF-8, bad token id (1)" {
    run -2 --separate-stderr ds ds-run -p hi
    [[ $stderr == *"no model"* ]]
    run -1 --separate-stderr ds ds-run -m nonexistent.gguf -p hi
    [[ $stderr == *"nonexistent.gguf"* ]]
    head -c 3000 "$(model v2 f32)" > cut.gguf
    run -1 --separate-stderr ds ds-run -m cut.gguf -p hi
    [[ $stderr == *"cut.gguf"* ]]
    [ "${#stderr_lines[@]}" -eq 1 ]
    run -1 --separate-stderr ds ds-run -m "$(model v2 f32)" -p $'bad \xff byte'
    [[ $stderr == *"UTF-8"* ]]
    run -1 --separate-stderr ds ds-run -m "$(model v2 f32)" --tokens 1,99999 --dump-logits x.f32
    [[ $stderr == *"99999"* ]]
    [ ! -e x.f32 ]
    run -1 --separate-stderr ds ds-run -m "$VOCAB" -p hi
    [[ $stderr == *"vocabulary only"* ]]
}

@test "a model on standard input (read into memory) gives the same logits" {
    local g tok
    g=$(model v2 f32)
    tok=$(ref_tokens "$V2")
    run -0 ds ds-run -m "$g" --tokens "$tok" --dump-logits a.f32
    run -0 bash -c "ds ds-run -m - --tokens '$tok' --dump-logits b.f32 < '$g'"
    cmp a.f32 b.f32
}

@test "an FP8 GGUF (ds-convert --outtype fp8) gives the logits of its F32 conversion" {
    local tok
    tok=$(ref_tokens "$V3")
    ds ds-convert -q --outtype fp8 "$V3" -o fp8.gguf
    run -0 ds ds-run -m fp8.gguf --tokens "$tok" --dump-logits a.f32
    run -0 ds ds-run -m "$(model v3 f32)" --tokens "$tok" --dump-logits b.f32
    cmp a.f32 b.f32
}

@test "ds-run --mtp (MTP speculative decoding) writes what plain decoding writes" {
    local g p plain spec
    for ty in f32 bf16; do
        g=$(model v3 "$ty")
        for p in "Hello world" "The quick brown fox" "1 2 3 4 5" "Once upon a time, there was"; do
            plain=$(ds ds-run -m "$g" -p "$p" -n 32 --temp 0 | od -An -tx1)
            spec=$(ds ds-run -m "$g" -p "$p" -n 32 --temp 0 --mtp | od -An -tx1)
            [ "$plain" = "$spec" ]
        done
        # sampling: the same seed gives the same text
        plain=$(ds ds-run -m "$g" -p "Hello" -n 32 --seed 7 --temp 1.5 | od -An -tx1)
        spec=$(ds ds-run -m "$g" -p "Hello" -n 32 --seed 7 --temp 1.5 --mtp | od -An -tx1)
        [ "$plain" = "$spec" ]
    done
    run -0 ds ds-run -m "$(model v3 bf16)" -p "Hello world" -n 32 --temp 0 --mtp --json
    [[ $output == *'"generated_tokens":32'* ]]
    [[ $output == *'"mtp":{"drafted":'*',"accepted":'*',"acceptance":'* ]]
    run -0 --separate-stderr ds ds-run -v -m "$(model v3 bf16)" -p "Hello" -n 8 --mtp
    [[ $stderr == *"MTP drafts accepted"* ]]
}

@test "ds-run --mtp on a model without an MTP layer fails" {
    run -1 --separate-stderr ds ds-run -m "$(model v2 f32)" -p hi -n 4 --mtp
    [[ $stderr == *"no MTP (nextn) layer"* ]]
    [ -z "$output" ]
}

@test "ds-run --cache-type q8_0: an 8-bit KV cache close to the f32 cache, 3.8x smaller" {
    local g tok nv out rel agree
    g=$(model v2 f32)
    tok=$(ref_tokens "$V2")
    nv=$(tr -d ' \n' < "$V2/reference.json" | sed 's/.*"n_vocab":\([0-9]*\).*/\1/')
    run -0 ds ds-run -m "$g" --tokens "$tok" --dump-logits a.f32 --cache-type f32
    run -0 ds ds-run -m "$g" --tokens "$tok" --dump-logits b.f32 --cache-type q8_0
    out=$(compare_logits b.f32 a.f32 "$nv")
    echo "# q8_0 vs f32 cache: $out" >&3
    rel=${out#rel=}; rel=${rel%% *}
    agree=${out#*agree=}; agree=${agree%% *}
    awk -v r="$rel" -v a="$agree" 'BEGIN { exit !(r > 0 && r <= 0.1 && a >= 0.85) }'
    run -0 ds ds-run -m "$g" -p hi -n 2 --json --cache-type f32
    f=$(echo "$output" | sed 's/.*"kv_cache_bytes":\([0-9]*\).*/\1/')
    run -0 ds ds-run -m "$g" -p hi -n 2 --json --cache-type q8_0
    q=$(echo "$output" | sed 's/.*"kv_cache_bytes":\([0-9]*\).*/\1/')
    [ $((q * 3)) -lt "$f" ]
    run -2 --separate-stderr ds ds-run -m "$g" -p hi --cache-type q4_0
    [[ $stderr == *"invalid value 'q4_0' for --cache-type"* ]]
}
