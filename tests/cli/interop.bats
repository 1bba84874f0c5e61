#!/usr/bin/env bats
# Interoperability with llama.cpp: GGUF files written by dskit must load (and compute the same
# thing) in real llama.cpp. llama.cpp is the prebuilt libllama of the npm package node-llama-cpp,
# driven by tests/interop/load.mjs; tests/interop/install.sh installs it (nothing is downloaded
# here). Every test skips when node or the harness is missing.

bats_require_minimum_version 1.5.0

setup() {
    bats_load_library bats-support
    bats_load_library bats-assert
    load common

    INTEROP=$REPO/tests/interop
    LOAD=$INTEROP/load.mjs

    command -v node >/dev/null 2>&1 || skip "node not found"
    [[ -d $INTEROP/node_modules/node-llama-cpp ]] ||
        skip "llama.cpp harness not installed (run tests/interop/install.sh)"

    cd "$BATS_TEST_TMPDIR"
}

# jget EXPR: evaluate the JavaScript expression EXPR on the JSON in $output (bound to j) and
# print it (strings bare, anything else as JSON).
jget() {
    printf '%s' "$output" | node -e '
        const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
        const v = eval(process.argv[1]);
        process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));' "$1"
}

# load_ok FILE [load.mjs options]: load FILE in llama.cpp; on failure show llama.cpp's messages.
load_ok() {
    run --separate-stderr node "$LOAD" "$@"
    if [ "$status" -ne 0 ]; then
        echo "load.mjs exit status $status" >&2
        echo "$stderr" >&2
        echo "$output" >&2
        return 1
    fi
}

@test "interop: the prebuilt llama.cpp loads (node-llama-cpp version as pinned)" {
    run --separate-stderr node "$LOAD" --version
    assert_success
    pinned=$(node -p 'require(process.argv[1]).dependencies["node-llama-cpp"]' "$INTEROP/package.json")
    assert_equal "$(jget j.node_llama_cpp)" "$pinned"
    assert_equal "$(jget j.llama_cpp.build)" "prebuilt"
    assert_equal "$(jget j.gpu)" "false"
    echo "# node-llama-cpp $pinned, llama.cpp $(jget j.llama_cpp.repo) $(jget j.llama_cpp.release)" >&3
}

@test "interop: vocab-only deepseek-llm GGUF tokenizes like llama.cpp's test-tokenizer-0" {
    vocab=$DATA/vocab/ggml-vocab-deepseek-llm.gguf
    run --separate-stderr node "$LOAD" "$vocab" --vocab-only --vocab-test "$vocab.inp" "$vocab.out"
    assert_success
    assert_equal "$(jget j.vocab_test.n)" 46
    assert_equal "$(jget j.vocab_test.passed)" 46

    run --separate-stderr node "$LOAD" "$vocab" --vocab-only --text "Hello world"
    assert_success
    assert_equal "$(jget j.ids)" "[17464,1843]"
}

@test "interop: a truncated GGUF fails to load, with llama.cpp's error on stderr" {
    ds ds-convert "$DATA/tiny-v2lite" -o full.gguf
    head -c 1000000 full.gguf >cut.gguf
    run --separate-stderr node "$LOAD" cut.gguf
    assert_failure 1
    assert_output ""
    [[ $stderr == *"llama.cpp error:"*"not within the file bounds"* ]]
}

@test "interop: ds-convert tiny-v2lite (no q LoRA) loads in llama.cpp" {
    ds ds-convert "$DATA/tiny-v2lite" -o m.gguf
    load_ok m.gguf
    assert_equal "$(jget j.architecture)" "deepseek2"
    assert_equal "$(jget j.n_vocab)" 384
    assert_equal "$(jget j.n_embd)" 160
    assert_equal "$(jget j.block_count)" 3
    assert_equal "$(jget j.unused_tensors.length)" 0
}

@test "interop: ds-convert tiny-v3-fp8 loads in llama.cpp, MTP layer kept and ignored" {
    ds ds-convert "$DATA/tiny-v3-fp8" -o m.gguf
    load_ok m.gguf
    assert_equal "$(jget j.architecture)" "deepseek2"
    assert_equal "$(jget j.n_vocab)" 512
    assert_equal "$(jget j.n_embd)" 192
    # block_count includes the MTP layer; llama.cpp loads blk.3.* and skips them
    assert_equal "$(jget j.block_count)" 4
    assert_equal "$(jget j.nextn_predict_layers)" 1
    assert_equal "$(jget 'j.unused_tensors.includes("blk.3.nextn.eh_proj.weight")')" "true"
    assert_equal "$(jget 'j.unused_tensors.every((n) => n.startsWith("blk.3."))')" "true"
    echo "# llama.cpp ignored $(jget j.unused_tensors.length) MTP tensors (blk.3.*)" >&3
}

@test "interop: llama.cpp tokenizes ds-convert output like Hugging Face (tiny-v2lite, tiny-v3-fp8)" {
    for m in tiny-v2lite tiny-v3-fp8; do
        ds ds-convert "$DATA/$m" --outtype f32 -o "$m.gguf"
        load_ok "$m.gguf" --vocab-only --tokenizer-vectors "$DATA/$m/tokenizer-vectors.jsonl"
        assert_equal "$(jget j.tokenizer_vectors.failed.length)" 0
        assert_equal "$(jget j.tokenizer_vectors.passed)" "$(grep -c . "$DATA/$m/tokenizer-vectors.jsonl")"
    done
}

@test "interop: llama.cpp argmax per position matches the reference (tiny-v2lite, f32)" {
    ds ds-convert "$DATA/tiny-v2lite" --outtype f32 -o m.gguf
    load_ok m.gguf --reference "$DATA/tiny-v2lite/reference.json"
    assert_equal "$(jget j.reference.argmax_match)" "true"
    assert_equal "$(jget 'j.reference.max_abs_logit_diff < 1e-3')" "true"
    echo "# tiny-v2lite: max |logit - reference| = $(jget j.reference.max_abs_logit_diff)" >&3
}

@test "interop: llama.cpp argmax per position matches the reference (tiny-v3-fp8, f32)" {
    ds ds-convert "$DATA/tiny-v3-fp8" --outtype f32 -o m.gguf
    load_ok m.gguf --reference "$DATA/tiny-v3-fp8/reference.json"
    assert_equal "$(jget j.reference.argmax_match)" "true"
    assert_equal "$(jget 'j.reference.max_abs_logit_diff < 1e-3')" "true"
    echo "# tiny-v3-fp8: max |logit - reference| = $(jget j.reference.max_abs_logit_diff)" >&3
}

@test "interop: f16 and bf16 outputs load and evaluate in llama.cpp" {
    # 16-bit weights move the logits, so only finiteness is checked, not the argmax
    for m in tiny-v2lite tiny-v3-fp8; do
        for t in f16 bf16; do
            ds ds-convert "$DATA/$m" --outtype "$t" -o "$m-$t.gguf"
            run --separate-stderr node "$LOAD" "$m-$t.gguf" --reference "$DATA/$m/reference.json"
            [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || {
                echo "$stderr" >&2
                false
            }
            assert_equal "$(jget 'j.non_finite_logits === undefined')" "true"
            echo "# $m $t: argmax match $(jget j.reference.argmax_match)," \
                "max |logit - reference| = $(jget j.reference.max_abs_logit_diff)" >&3
        done
    done
}

@test "interop: the same GGUF gives the same logits in ds-run and llama.cpp" {
    local m ty tok
    for m in tiny-v2lite tiny-v3-fp8; do
        tok=$(tr -d ' \n' < "$DATA/$m/reference.json" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/')
        for ty in f32 bf16; do
            ds ds-convert -q "$DATA/$m" --outtype "$ty" -o "$m-$ty.gguf"
            # ds-run's logits as the "reference" the harness compares llama.cpp with
            cp "$DATA/$m/reference.json" "dsrun-$m-$ty.json"
            ds ds-run -m "$m-$ty.gguf" --tokens "$tok" --dump-logits "dsrun-$m-$ty.logits.f32"
            run --separate-stderr node "$LOAD" "$m-$ty.gguf" --reference "dsrun-$m-$ty.json"
            diff=$(jget j.reference.max_abs_logit_diff)
            maxref=$(jget j.reference.max_abs_ref_logit)
            echo "# $m $ty: max |llama.cpp - ds-run| = $diff (max |logit| $maxref)" >&3
            if [[ $ty == f32 ]]; then
                assert_equal "$(jget 'j.reference.max_abs_logit_diff <= 1e-3 * j.reference.max_abs_ref_logit')" "true"
                assert_equal "$(jget j.reference.argmax_match)" "true"
            fi
        done
    done
}

@test "interop: every quantized type ds-quantize writes loads in llama.cpp and agrees with ds-run" {
    local m=tiny-v3-fp8 t tok
    tok=$(tr -d ' \n' < "$DATA/$m/reference.json" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/')
    ds ds-convert -q "$DATA/$m" --outtype f32 -o f32.gguf
    cp "$DATA/$m/reference.json" ref.json
    for t in q8_0 q6_K q5_K q5_1 q5_0 q4_K q4_1 q4_0 q3_K q2_K iq4_nl iq4_xs q4_k_m; do
        ds ds-quantize -q -t "$t" f32.gguf -o "$t.gguf"
        cp ref.json "dsrun-$t.json"
        ds ds-run -m "$t.gguf" --tokens "$tok" --dump-logits "dsrun-$t.logits.f32"
        run --separate-stderr node "$LOAD" "$t.gguf" --reference "dsrun-$t.json"
        [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || fail "$t: llama.cpp failed to load: $stderr"
        diff=$(jget j.reference.max_abs_logit_diff)
        maxref=$(jget j.reference.max_abs_ref_logit)
        mism=$(jget j.reference.argmax_mismatch_positions.length)
        echo "# $t: max |llama.cpp - ds-run| = $diff (max |logit| $maxref), llama.cpp argmax differs from the f32 reference at $mism of 24 positions" >&3
        assert_equal "$(jget 'j.reference.max_abs_logit_diff <= 0.05 * j.reference.max_abs_ref_logit')" "true"
    done
}
