#!/usr/bin/env bats
# ds-prune: sparsity counts, N:M, quantized inputs, experts, heads and layers
# removed (the results run in ds-run), pipes, refusals, reports.

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

V2=$BATS_TEST_DIRNAME/../data/tiny-v2lite
V3=$BATS_TEST_DIRNAME/../data/tiny-v3-fp8
TEXT=$BATS_TEST_DIRNAME/../data/shakespeare-12k.txt

# f32 GGUF of a tiny checkpoint (v2 or v3), once per file
f32() {
    local g=$BATS_FILE_TMPDIR/$1-f32.gguf src
    [[ $1 == v2 ]] && src=$V2 || src=$V3
    [[ -s $g ]] || ds ds-convert -q --outtype f32 "$src" -o "$g" || return 1
    echo "$g"
}

# json_sparsities FILE: "name sparsity" of every pruned tensor of a --json report
json_sparsities() {
    tr '{' '\n' < "$1" | sed -n 's/.*"name":"\([^"]*\)".*"sparsity":\([0-9.e-]*\).*"pruned":true.*/\1 \2/p'
}

@test "--sparsity 0.5: every pruned matrix is half zeros; router, norms and output are not pruned" {
    run -0 ds ds-prune -s 0.5 --json "$(f32 v3)" -o p.gguf
    echo "$output" > r.json
    run -0 json_sparsities r.json
    [[ $(echo "$output" | wc -l) -ge 30 ]]
    run -0 awk '$2 != 0.5 { print; bad = 1 } END { exit bad }' <<< "$output"
    run -0 json_sparsities r.json
    refute_output --partial ffn_gate_inp
    refute_output --partial _norm
    refute_line --regexp '^output\.weight'
    refute_output --partial blk.3.
    run -0 ds ds-convert --list p.gguf
    assert_output --regexp 'dskit.prune.method +string +"magnitude"'
    assert_output --regexp 'dskit.prune.sparsity +float32 +0.5'
    assert_output --partial 'ds-prune 0.1.0 -s 0.5'
    run -0 ds ds-run -m p.gguf -p "To be" -n 4 --temp 0
}

@test "--nm 2:4 and --nm 4:8: half of every pruned matrix, and the report on stderr" {
    run -0 --separate-stderr ds ds-prune --nm 2:4 "$(f32 v2)" -o p.gguf
    [[ $stderr == *"blk.1.ffn_down_exps.weight"*"50.00%"* ]]
    [[ $stderr == *"parameters"*"with zstd"* ]]
    run -0 ds ds-prune --nm 4:8 --json "$(f32 v2)" -o q.gguf
    echo "$output" > r.json
    run -0 json_sparsities r.json
    run -0 awk '$2 != 0.5 { print; bad = 1 } END { exit bad }' <<< "$output"
    run -0 ds ds-convert --list q.gguf
    assert_output --regexp 'dskit.prune.nm +string +"4:8"'
}

@test "--method wanda with --calibrate, and --tensor-sparsity rules (first match wins)" {
    run -0 ds ds-prune --method wanda -c "$TEXT" --calibrate-ctx 128 --calibrate-chunks 4 \
        -s 0.5 --tensor-sparsity 'attn_=none' --tensor-sparsity 'ffn_gate_inp=0.25' \
        --tensor-sparsity 'ffn_=0.75' --json "$(f32 v3)" -o w.gguf
    echo "$output" > r.json
    run -0 json_sparsities r.json
    assert_output --partial 'blk.1.ffn_gate_inp.weight 0.25'
    assert_output --partial 'blk.2.ffn_up_exps.weight 0.75'
    refute_output --partial 'attn_'
    run -0 ds ds-convert --list w.gguf
    assert_output --regexp 'dskit.prune.method +string +"wanda"'
    assert_output --partial 'dskit.prune.calibration'
    run -0 ds ds-run -m w.gguf -p "To be" -n 4 --temp 0
}

@test "quantized input: refused without --allow-requantize; q8_0 keeps exact zeros; q4_1 refused" {
    ds ds-quantize -q -t q8_0 "$(f32 v3)" -o "$BATS_FILE_TMPDIR/q8.gguf"
    ds ds-quantize -q -t q4_1 "$(f32 v3)" -o "$BATS_FILE_TMPDIR/q41.gguf"
    run -1 --separate-stderr ds ds-prune -s 0.5 "$BATS_FILE_TMPDIR/q8.gguf" -o p.gguf
    [[ $stderr == *"give --allow-requantize"* ]]
    run -1 --separate-stderr ds ds-prune -s 0.5 --allow-requantize "$BATS_FILE_TMPDIR/q41.gguf" -o p.gguf
    [[ $stderr == *"cannot hold exact zeros"* ]]
    assert_dir_empty
    run -0 ds ds-prune -s 0.5 --allow-requantize --json "$BATS_FILE_TMPDIR/q8.gguf" -o p.gguf
    echo "$output" > r.json
    run -0 json_sparsities r.json
    run -0 awk '$2 < 0.5 { print; bad = 1 } END { exit bad }' <<< "$output"
    run -0 ds ds-run -m p.gguf -p "To be" -n 4 --temp 0
}

@test "--experts: counts, metadata and shapes change; the model runs (V3 groups, V2-Lite greedy)" {
    run -0 --separate-stderr ds ds-prune --experts 0.25 -c "$TEXT" --calibrate-chunks 2 \
        --calibrate-ctx 128 "$(f32 v3)" -o e.gguf
    [[ $stderr == *"4 of 16 routed experts removed per MoE layer"* ]]
    run -0 ds ds-convert --list e.gguf
    assert_output --regexp 'deepseek2.expert_count +uint32 +12'
    assert_output --regexp 'blk.1.ffn_up_exps.weight +f32 +192 x 64 x 12'
    assert_output --regexp 'blk.3.ffn_gate_inp.weight +f32 +192 x 12'
    assert_output --regexp 'dskit.prune.removed_experts.1 +arr\[int32\]'
    run -0 ds ds-run -m e.gguf -p "To be" -n 4 --temp 0
    run -0 ds ds-prune --experts 3 "$(f32 v2)" -o e2.gguf
    run -0 ds ds-convert --list e2.gguf
    assert_output --regexp 'deepseek2.expert_count +uint32 +5'
    run -0 ds ds-run -m e2.gguf -p "To be" -n 4 --temp 0
}

@test "pipe: ds-convert | ds-quantize | ds-prune --experts 0.25 -o small.gguf" {
    run -0 bash -c "ds ds-convert -q --outtype f32 '$V3' | ds ds-quantize -q -t q8_0 |
                    ds ds-prune -q --experts 0.25 -o small.gguf"
    run -0 ds ds-convert --list small.gguf
    assert_output --regexp 'deepseek2.expert_count +uint32 +12'
    assert_output --regexp 'blk.1.ffn_down_exps.weight +q8_0 +64 x 192 x 12'
    run -0 ds ds-run -m small.gguf -p "To be" -n 4 --temp 0
    # sparsity streams without a temporary copy, to stdout too
    run -0 bash -c "ds ds-prune -q -s 0.5 - < '$(f32 v2)' | ds ds-prune -q --nm 2:4 -o s.gguf"
    run -0 ds ds-run -m s.gguf -p "To be" -n 4 --temp 0
}

@test "--heads and layers: pruned models load and run in ds-run, metadata follows" {
    run -0 --separate-stderr ds ds-prune --heads 1 -c "$TEXT" --calibrate-chunks 1 \
        --calibrate-ctx 128 "$(f32 v3)" -o h.gguf
    [[ $stderr == *"1 of 4 heads removed per layer"* ]]
    run -0 ds ds-convert --list h.gguf
    assert_output --regexp 'deepseek2.attention.head_count +uint32 +3'
    assert_output --regexp 'blk.0.attn_q_b.weight +f32 +96 x 144'
    assert_output --regexp 'blk.0.attn_k_b.weight +f32 +32 x 64 x 3'
    assert_output --regexp 'blk.0.attn_output.weight +f32 +96 x 192'
    run -0 ds ds-run -m h.gguf -p "To be" -n 4 --temp 0
    run -0 ds ds-prune --heads 0.5 "$(f32 v2)" -o h2.gguf
    run -0 ds ds-run -m h2.gguf -p "To be" -n 4 --temp 0

    run -0 --separate-stderr ds ds-prune --layers 1 -c "$TEXT" --calibrate-chunks 1 \
        --calibrate-ctx 128 "$(f32 v3)" -o l.gguf
    [[ $stderr == *"removed layers"* ]]
    run -0 ds ds-convert --list l.gguf
    assert_output --regexp 'deepseek2.block_count +uint32 +3'
    assert_output --partial 'blk.2.nextn.eh_proj.weight'
    refute_output --partial 'blk.3.'
    run -0 ds ds-run -m l.gguf -p "To be" -n 4 --temp 0
    run -0 ds ds-prune --drop-layers 0,2 "$(f32 v2)" -o l2.gguf
    run -0 ds ds-convert --list l2.gguf
    assert_output --regexp 'deepseek2.block_count +uint32 +1'
    assert_output --regexp 'deepseek2.leading_dense_block_count +uint32 +0'
    assert_output --regexp 'dskit.prune.removed_layers +arr\[int32\] +\[0, 2\]'
    run -0 ds ds-run -m l2.gguf -p "To be" -n 4 --temp 0
}

@test "out-of-range and uneven requests are refused with a clear error and no output" {
    local m
    m=$(f32 v3)
    run -1 --separate-stderr ds ds-prune --experts 16 "$m" -o p.gguf
    [[ $stderr == "ds-prune: cannot remove 16 of 16 experts" ]]
    run -1 --separate-stderr ds ds-prune --experts 2 "$m" -o p.gguf
    [[ $stderr == *"leaves the 4 expert groups uneven: remove a multiple of 4"* ]]
    run -1 --separate-stderr ds ds-prune --experts 0.75 "$m" -o p.gguf
    [[ $stderr == *"fewer than the 4 experts used per token"* ]]
    run -1 --separate-stderr ds ds-prune --experts 6 "$(f32 v2)" -o p.gguf
    [[ $stderr == *"fewer than the 3 used per token"* ]]
    run -1 --separate-stderr ds ds-prune --heads 4 "$m" -o p.gguf
    [[ $stderr == *"cannot remove 4 of 4 heads"* ]]
    run -1 --separate-stderr ds ds-prune --drop-layers 3 "$m" -o p.gguf
    [[ $stderr == *"layer 3 is out of range (the model has layers 0..2; the MTP layer cannot be removed)"* ]]
    run -1 --separate-stderr ds ds-prune --drop-layers 0,1,2 "$m" -o p.gguf
    [[ $stderr == *"cannot remove all 3 layers"* ]]
    run -1 --separate-stderr ds ds-prune --nm 2:5 "$m" -o p.gguf
    [[ $stderr == *"not a multiple of 5"* ]]
    assert_dir_empty
}

@test "usage errors exit 2 and write nothing" {
    local m
    m=$(f32 v3)
    run -2 --separate-stderr ds ds-prune "$m" -o p.gguf
    [[ $stderr == *"nothing to prune"* ]]
    run -2 --separate-stderr ds ds-prune -s 1.5 "$m" -o p.gguf
    [[ $stderr == *"--sparsity"* ]]
    run -2 --separate-stderr ds ds-prune --nm 4:2 "$m" -o p.gguf
    run -2 --separate-stderr ds ds-prune -s 0.5 --nm 2:4 "$m" -o p.gguf
    run -2 --separate-stderr ds ds-prune -s 0.5 --method wanda "$m" -o p.gguf
    [[ $stderr == *"--method wanda needs --calibrate TEXT or --imatrix FILE"* ]]
    run -2 --separate-stderr ds ds-prune --layers 1 "$m" -o p.gguf
    [[ $stderr == *"--calibrate"* ]]
    run -2 --separate-stderr bash -c "ds ds-prune --experts 0.25 -c '$TEXT' - < '$m' > p.gguf"
    [[ $stderr == *"INPUT must be a file"* ]]
    rm p.gguf
    run -2 --separate-stderr ds ds-prune --experts 1.5 "$m" -o p.gguf
    run -2 --separate-stderr ds ds-prune --tensor-sparsity 'attn(=0.5' "$m" -o p.gguf
    [[ $stderr == *"bad regex"* ]]
    run -2 --separate-stderr ds ds-prune --drop-layers 1,x "$m" -o p.gguf
    assert_dir_empty
}

@test "--json: parameter counts, removed experts and layers, zstd size" {
    run -0 ds ds-prune --experts 4 --drop-layers 1 --json "$(f32 v3)" -o p.gguf
    assert_output --regexp '"params_before":[0-9]+,"params_after":[0-9]+'
    assert_output --regexp '"removed_layers":\[1\]'
    assert_output --regexp '"removed_experts":\{"blk.1":\[[0-9,]+\],"blk.2":\[[0-9,]+\]\}'
    assert_output --regexp '"zstd_bytes":[1-9][0-9]*'
    local size
    size=$(stat -c %s p.gguf)
    assert_output --partial "\"file_bytes\":$size"
}

# llama.cpp (tests/interop's harness, skipped when it is not installed) loads
# every kind of pruned model and computes the same logits as ds-run.
@test "interop: pruned models load in llama.cpp and agree with ds-run" {
    local load=$REPO/tests/interop/load.mjs tok args diff
    command -v node > /dev/null 2>&1 || skip "node not found"
    [[ -d $REPO/tests/interop/node_modules/node-llama-cpp ]] || skip "llama.cpp harness not installed"
    tok=$(ref_tokens "$V3")
    for args in "-e 0.25" "--heads 1" "--drop-layers 1" "-s 0.5" "--nm 2:4" \
        "-e 0.5 --heads 2 --drop-layers 0"; do
        # shellcheck disable=SC2086
        ds ds-prune -q -f $args "$(f32 v3)" -o p.gguf
        cp "$V3/reference.json" dsrun.json
        ds ds-run -m p.gguf --tokens "$tok" --dump-logits dsrun.logits.f32
        # exit 3: argmax differs from the unpruned reference, expected
        run --separate-stderr node "$load" p.gguf --reference dsrun.json
        [[ $status == 0 || $status == 3 ]] || fail "$args: llama.cpp failed: $stderr"
        diff=$(node -e 'const j = JSON.parse(process.argv[1]); console.log(j.reference.max_abs_logit_diff <= 1e-3 * j.reference.max_abs_ref_logit)' "$output")
        echo "# $args: $(node -e 'const j = JSON.parse(process.argv[1]); console.log(j.reference.max_abs_logit_diff)' "$output")" >&3
        [[ $diff == true ]]
    done
}
