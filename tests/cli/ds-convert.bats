#!/usr/bin/env bats
# ds-convert: conversions, pipes, zstd, round trips, and bad input.

bats_require_minimum_version 1.5.0

setup() {
    bats_load_library bats-support
    bats_load_library bats-assert
    load common
    cd "$BATS_TEST_TMPDIR"
}

V2="$BATS_TEST_DIRNAME/../data/tiny-v2lite"
V3="$BATS_TEST_DIRNAME/../data/tiny-v3-fp8"

# files in the current directory other than the inputs under in/ (and the
# separate-stderr-* files of bats 1.8)
leftovers() { ls -A | grep -v -e '^in$' -e '^separate-stderr-' || true; }

# stderr_has TEXT: $stderr (from run --separate-stderr) contains TEXT
# (Debian's bats-assert has no assert_stderr)
stderr_has() {
    [[ $stderr == *"$1"* ]] || fail "stderr does not contain '$1': $stderr"
}

# le64 N: 8 bytes little-endian, as printf escapes
le64() {
    local n=$1 out="" i
    for i in 0 1 2 3 4 5 6 7; do
        out+=$(printf '\\x%02x' $(( (n >> (8 * i)) & 255 )))
    done
    printf '%s' "$out"
}

# mk_st FILE JSON DATA_BYTES: a safetensors file with that header and zero data
mk_st() {
    { printf "$(le64 ${#2})"; printf '%s' "$2"; head -c "$3" /dev/zero; } > "$1"
}

# an HF directory in in/ with the v2lite config and tokenizer and the given model file
mk_hf() {
    mkdir -p in
    cp "$V2/config.json" "$V2/tokenizer.json" "$V2/tokenizer_config.json" in/
}

@test "V2-Lite converts to GGUF with deepseek2 keys and names" {
    run -0 ds-convert "$V2" -o m.gguf
    run -0 --separate-stderr ds-convert --list m.gguf
    assert_output --partial "general.architecture"
    assert_output --partial '"deepseek2"'
    assert_output --regexp 'deepseek2.attention.q_lora_rank +uint32 +0'
    assert_output --regexp 'deepseek2.expert_gating_func +uint32 +1'
    assert_output --partial "blk.0.attn_q.weight"
    assert_output --partial "blk.1.attn_k_b.weight"
    assert_output --partial "blk.1.attn_v_b.weight"
    assert_output --partial "blk.2.ffn_gate_exps.weight"
    assert_output --partial "tokenizer.ggml.tokens"
    refute_output --partial "NOT LOADABLE"
}

@test "V3 FP8 converts to BF16 GGUF keeping the MTP layer" {
    run -0 ds-convert "$V3" -o m.gguf
    run -0 ds-convert --list --json m.gguf
    echo "$output" > list.json
    run -0 ds-convert --list m.gguf
    assert_output --regexp 'deepseek2.block_count +uint32 +4'
    assert_output --regexp 'deepseek2.nextn_predict_layers +uint32 +1'
    assert_output --regexp 'deepseek2.attention.q_lora_rank +uint32 +96'
    assert_output --regexp 'deepseek2.expert_gating_func +uint32 +2'
    assert_output --regexp 'blk.0.attn_q_a.weight +bf16'
    assert_output --regexp 'blk.0.attn_norm.weight +f32'
    assert_output --regexp 'blk.1.ffn_gate_inp.weight +f32'
    assert_output --partial "blk.1.exp_probs_b.bias"
    assert_output --partial "blk.3.nextn.eh_proj.weight"
    assert_output --partial "blk.3.nextn.shared_head_head.weight"
    refute_output --partial "weight_scale_inv"
    grep -q '"llama_cpp_loadable":true' list.json
}

@test "--outtype fp8 keeps E4M3 weights and --list flags the file" {
    run -0 ds-convert --outtype fp8 "$V3" -o m.gguf
    run -0 ds-convert --list m.gguf
    assert_output --partial "NOT LOADABLE BY LLAMA.CPP"
    assert_output --regexp 'blk.0.attn_q_a.weight +f8_e4m3'
    assert_output --partial "blk.0.attn_q_a.weight_scale_inv"
    assert_output --partial "blk.1.attn_kv_b.weight"
    run -0 ds-convert --list --json m.gguf
    assert_output --partial '"llama_cpp_loadable":false'
}

@test "--list of a Hugging Face directory shows the GGUF it would write" {
    run -0 ds-convert --list "$V2"
    assert_output --partial "blk.1.attn_k_b.weight"
    assert_output --partial "would write"
}

@test "round trip HF -> GGUF -> HF writes a complete Hugging Face directory" {
    run -0 ds-convert "$V2" -o v2.gguf
    run -0 ds-convert --to safetensors v2.gguf -o v2
    [ -f v2/model.safetensors ] && [ -f v2/config.json ]
    [ -f v2/tokenizer.json ] && [ -f v2/tokenizer_config.json ]
    [ "$(stat -c %s v2/model.safetensors)" -ge 3603360 ]
    run -0 ds-convert --outtype fp8 "$V3" -o v3.gguf
    run -0 ds-convert --to safetensors --shard-size 2M v3.gguf -o v3
    [ -f v3/model.safetensors.index.json ] && [ -f v3/model-00001-of-00003.safetensors ]
    run -0 ds-convert --list v3/
    assert_output --partial "blk.0.attn_q_a.weight"
    # and back to GGUF: the same tensors as the first conversion
    run -0 ds-convert --outtype fp8 v3 -o again.gguf
    diff <(ds-convert --list again.gguf | sed -n '/^tensors:/,$p') \
         <(ds-convert --list v3.gguf | sed -n '/^tensors:/,$p')
}

@test "pipes: convert to stdout, list and convert from stdin" {
    run -0 bash -c "ds-convert '$V2' | ds-convert --list"
    assert_output --partial "blk.1.attn_k_b.weight"
    assert_output --partial "<stdin>"
    run -0 bash -c "ds-convert '$V2' | ds-convert --to safetensors -o piped"
    run -0 ds-convert "$V2" -o file.gguf
    run -0 ds-convert --to safetensors file.gguf -o filed
    cmp piped/model.safetensors filed/model.safetensors
    cmp piped/config.json filed/config.json
    run -0 bash -c "ds-convert --outtype fp8 '$V3' | ds-convert - -o - | ds-convert --to safetensors -o v3piped"
    run -0 ds-convert --outtype fp8 "$V3" -o v3.gguf
    run -0 ds-convert --to safetensors v3.gguf -o v3filed
    cmp v3piped/model.safetensors v3filed/model.safetensors
}

@test "zstd: .zst output, decompressed on input, and --zstd for stdout" {
    run -0 ds-convert "$V3" -o m.gguf.zst
    run -0 bash -c "head -c 4 m.gguf.zst | od -An -tx1"
    assert_output " 28 b5 2f fd"
    run -0 ds-convert m.gguf.zst -o m.gguf
    run -0 ds-convert --list m.gguf
    assert_output --partial "blk.3.nextn.enorm.weight"
    zstd -q -d m.gguf.zst -o plain.gguf
    run -0 ds-convert --to safetensors plain.gguf -o a
    run -0 ds-convert --to safetensors m.gguf -o b
    cmp a/model.safetensors b/model.safetensors
    run -0 bash -c "ds-convert --zstd '$V2' > z.gguf.zst && zstd -q -t z.gguf.zst && ds-convert --list z.gguf.zst"
    assert_output --partial "blk.1.attn_k_b.weight"
}

@test "--outtype f16 converts matrices and keeps norms F32" {
    run -0 ds-convert --outtype f16 "$V2" -o m.gguf
    run -0 ds-convert --list m.gguf
    assert_output --regexp 'blk.0.attn_q.weight +f16'
    assert_output --regexp 'blk.0.attn_norm.weight +f32'
    assert_output --regexp 'general.file_type +uint32 +1'
}

@test "an existing output is kept without -f and replaced with -f" {
    echo keep > out.gguf
    run -1 --separate-stderr ds-convert "$V2" -o out.gguf
    stderr_has "out.gguf"
    [ "$(cat out.gguf)" = keep ]
    [ "$(leftovers)" = out.gguf ]
    run -0 ds-convert -f "$V2" -o out.gguf
    [ "$(head -c 4 out.gguf)" = GGUF ]
    mkdir dir && echo keep > dir/x
    run -1 ds-convert --to safetensors "$V2" -o dir
    [ "$(cat dir/x)" = keep ]
}

@test "usage errors exit 2" {
    run -2 --separate-stderr ds-convert --outtype q9 "$V2"
    stderr_has "invalid value 'q9' for --outtype"
    run -2 ds-convert --to safetensors "$V2"
    run -2 ds-convert --json "$V2"
    run -2 ds-convert a b
}

# ---- bad input: one clear line naming the file, exit 1, nothing left behind ----

bad() { # bad INPUT PATTERN
    run -1 --separate-stderr ds-convert "$1" -o out.gguf
    stderr_has "$2"
    [ "${#stderr_lines[@]}" -eq 1 ]
    [ -z "$(leftovers)" ]
}

@test "bad input: truncated safetensors" {
    mk_hf
    head -c 5000 "$V2/model.safetensors" > in/model.safetensors
    bad in "model.safetensors"
    head -c 4 "$V2/model.safetensors" > in/model.safetensors
    bad in "model.safetensors"
}

@test "bad input: truncated GGUF, file and stream" {
    ds-convert "$V2" -o full.gguf
    mkdir in && head -c 100000 full.gguf > in/t.gguf && rm full.gguf
    bad in/t.gguf "t.gguf"
    run -1 --separate-stderr bash -c "ds-convert - -o out.gguf < in/t.gguf"
    stderr_has "<stdin>"
    [ -z "$(leftovers)" ]
    head -c 200 "$BATS_TEST_DIRNAME/../data/vocab/ggml-vocab-deepseek-llm.gguf" > in/h.gguf 2>/dev/null ||
        printf 'GGUF\x03\x00\x00\x00' > in/h.gguf
    bad in/h.gguf "h.gguf"
}

@test "bad input: wrong magic" {
    mkdir in && echo "hello world, not a model" > in/x.gguf
    bad in/x.gguf "not a GGUF file"
    run -1 --separate-stderr bash -c "echo nope | ds-convert -o out.gguf"
    stderr_has "not a GGUF file"
    [ -z "$(leftovers)" ]
}

@test "bad input: safetensors header length past end of file, and 2^60" {
    mk_hf
    { printf "$(le64 1000000)"; printf '{}'; } > in/model.safetensors
    bad in "past end of file"
    { printf "$(le64 $((1 << 60)))"; printf '{}'; } > in/model.safetensors
    bad in "model.safetensors"
}

@test "bad input: overlapping and out-of-range safetensors offsets" {
    mk_hf
    mk_st in/model.safetensors '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12
    bad in "overlap"
    mk_st in/model.safetensors '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 4
    bad in "model.safetensors"
}

@test "bad input: unknown dtype and shape x dtype not the byte length" {
    mk_hf
    mk_st in/model.safetensors '{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}' 8
    bad in "Q9"
    mk_st in/model.safetensors '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}' 8
    bad in "'a'"
}

@test "bad input: duplicate tensor names (safetensors and GGUF)" {
    mk_hf
    mk_st in/model.safetensors '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}' 16
    bad in "tensor 'a' appears twice"
    # GGUF: two tensor infos named "t"
    { printf 'GGUF'; printf '\x03\x00\x00\x00'; printf "$(le64 2)"; printf "$(le64 0)"
      for off in 0 32; do
          printf "$(le64 1)t"; printf '\x01\x00\x00\x00'; printf "$(le64 4)"
          printf '\x00\x00\x00\x00'; printf "$(le64 $off)"
      done; head -c 64 /dev/zero; } > in/d.gguf
    bad in/d.gguf "duplicate"
}

@test "bad input: a missing shard" {
    mkdir in
    cp "$V3"/config.json "$V3"/tokenizer*.json "$V3"/model.safetensors.index.json in/
    cp "$V3"/model-00001-of-00002.safetensors in/
    bad in "model-00002-of-00002.safetensors"
}

@test "bad input: absurd counts (2^60 tensors, 2^40-byte strings)" {
    mkdir in
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 $((1 << 60)))"; printf "$(le64 0)"; } > in/a.gguf
    bad in/a.gguf "a.gguf"
    { printf 'GGUF\x03\x00\x00\x00'; printf "$(le64 0)"; printf "$(le64 1)"
      printf "$(le64 $((1 << 40)))"; printf 'key'; } > in/b.gguf
    bad in/b.gguf "b.gguf"
    run -1 --separate-stderr bash -c "cat in/b.gguf | ds-convert -o out.gguf"
    stderr_has "<stdin>"
    [ -z "$(leftovers)" ]
}

@test "bad input: a missing input and a config that is not DeepSeek" {
    bad nonexistent "nonexistent"
    mk_hf
    cp "$V2/model.safetensors" in/
    echo '{"model_type": "llama", "hidden_size": 8}' > in/config.json
    bad in "config.json"
}

@test "SIGINT and SIGTERM during a conversion remove the temporary output" {
    ds-convert "$V2" -o "$BATS_FILE_TMPDIR/full.gguf"
    for sig in INT TERM; do
        mkfifo fifo
        # half the file, then hold the pipe open: ds-convert blocks mid-write
        (head -c 2000000 "$BATS_FILE_TMPDIR/full.gguf"; sleep 30) > fifo &
        feeder=$!
        # background jobs of a script start with SIGINT ignored: restore it
        env --default-signal=INT ds-convert fifo -o out.gguf &
        pid=$!
        for _ in $(seq 100); do
            ls -A | grep -q '^\.out\.gguf\.' && break
            sleep 0.1
        done
        ls -A | grep -q '^\.out\.gguf\.'      # the temporary output exists
        kill -s "$sig" "$pid"
        status=0
        wait "$pid" || status=$?
        [ "$status" -eq $((128 + $(kill -l "$sig"))) ] || fail "status $status after SIG$sig"
        kill "$feeder" 2>/dev/null || true
        wait "$feeder" 2>/dev/null || true
        rm fifo
        [ -z "$(leftovers)" ]
    done
}

@test "GGUF to GGUF keeps llama.cpp's attn_k_b/attn_v_b split" {
    run -0 ds-convert --outtype f32 "$V3" -o a.gguf
    run -0 bash -c "ds-convert a.gguf | ds-convert -o b.gguf"
    run -0 ds-convert --list b.gguf
    assert_output --partial "blk.0.attn_k_b.weight"
    refute_output --partial "attn_kv_b"
    run -0 ds-convert --outtype f16 a.gguf -o c.gguf
    run -0 ds-convert --list c.gguf
    assert_output --regexp 'blk.0.attn_k_b.weight +f16'
}
