#!/usr/bin/env bats
# threads.bats - results that must not depend on the thread count (-T):
# ds-run's logits (F32, BF16, FP8 and quantized weights), ds-quantize's
# output and the importance matrix it computes, ds-convert's output,
# ds-prune's output (wanda with calibration, experts), ds-eval's printed
# numbers and ds-distill's losses. Each is compared byte for byte across -T 1,
# 2 and 3 (more threads than the test machine's cores is fine: the split of
# the work is what is tested; ds-distill at 1 and 2: training is slow).

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

V2=$BATS_TEST_DIRNAME/../data/tiny-v2lite
V3=$BATS_TEST_DIRNAME/../data/tiny-v3-fp8

# model NAME TYPE: a tiny checkpoint (v2 or v3) converted to TYPE (f32, bf16,
# fp8) or quantized (q8_0, q4_k_m, ...), once per file.
model() {
    local g=$BATS_FILE_TMPDIR/$1-$2.gguf src
    [[ $1 == v2 ]] && src=$V2 || src=$V3
    if [[ ! -s $g ]]; then
        case $2 in
        f32 | bf16 | fp8) ds ds-convert -q --outtype "$2" "$src" -o "$g" || return 1 ;;
        *) ds ds-quantize -q -t "$2" "$(model "$1" f32)" -o "$g" || return 1 ;;
        esac
    fi
    echo "$g"
}

# same_across_threads FILE CMD...: runs CMD with 1, 2 and 3 threads (CMD
# writes FILE) and checks that FILE is the same bytes each time. The count is
# given as OMP_NUM_THREADS (what -T 0, the default, uses), not as -T: the
# outputs record their command line (dskit.provenance).
same_across_threads() {
    local file=$1 t
    shift
    for t in 1 2 3; do
        OMP_NUM_THREADS=$t run -0 ds "$@"
        mv "$file" "$file.T$t"
    done
    cmp "$file.T1" "$file.T2" || fail "$* differs between -T 1 and -T 2"
    cmp "$file.T1" "$file.T3" || fail "$* differs between -T 1 and -T 3"
    rm -f "$file".T?
}

@test "threads: ds-run logits are the same at -T 1, 2 and 3" {
    local m ty tok
    for m in v2 v3; do
        [[ $m == v2 ]] && tok=$(ref_tokens "$V2") || tok=$(ref_tokens "$V3")
        for ty in f32 bf16 q8_0 q4_k_m; do
            [[ $m == v2 || $ty != bf16 ]] || ty=fp8
            echo "# $m $ty"
            same_across_threads l.f32 ds-run -m "$(model $m $ty)" --tokens "$tok" --dump-logits l.f32
        done
    done
}

@test "threads: ds-run generation is the same at -T 1, 2 and 3" {
    local t out=""
    for t in 1 2 3; do
        run -0 ds ds-run -m "$(model v3 q4_k_m)" -p "Once upon a time" -n 24 -s 7 --temp 0.8 -T "$t"
        [[ $t == 1 ]] && out=$output
        assert_equal "$output" "$out"
    done
}

@test "threads: ds-quantize output is the same at -T 1, 2 and 3" {
    local ty
    for ty in q8_0 q4_k_m q2_k iq4_nl; do
        echo "# $ty"
        same_across_threads q.gguf ds-quantize -q -t "$ty" "$(model v3 f32)" -o q.gguf
    done
}

@test "threads: the importance matrix and what it quantizes are the same at -T 1, 2 and 3" {
    head -c 3000 "$DATA/shakespeare-12k.txt" > calib.txt
    same_across_threads im.gguf ds-quantize -q -t q4_k_m --calibrate calib.txt \
        --calibrate-ctx 32 --calibrate-chunks 3 --imatrix-out im.gguf "$(model v3 f32)" -f -o q.gguf
    same_across_threads q.gguf ds-quantize -q -t q4_k_m --calibrate calib.txt \
        --calibrate-ctx 32 --calibrate-chunks 3 "$(model v3 f32)" -f -o q.gguf
}

@test "threads: ds-convert output is the same at -T 1, 2 and 3" {
    local ty
    for ty in f32 bf16 fp8; do
        echo "# $ty"
        same_across_threads c.gguf ds-convert -q --outtype "$ty" "$V3" -o c.gguf
    done
    for t in 1 2 3; do
        OMP_NUM_THREADS=$t run -0 ds ds-convert -q --to safetensors "$(model v3 f32)" -o st
        mv st "st.T$t"
    done
    diff -r st.T1 st.T2
    diff -r st.T1 st.T3
}

@test "threads: ds-prune output (wanda with --calibrate, --experts) is the same at -T 1, 2 and 3" {
    head -c 3000 "$DATA/shakespeare-12k.txt" > calib.txt
    same_across_threads p.gguf ds-prune -q --method wanda --calibrate calib.txt \
        --calibrate-ctx 32 --calibrate-chunks 3 -s 0.5 "$(model v3 f32)" -f -o p.gguf
    same_across_threads p.gguf ds-prune -q --experts 0.25 --calibrate calib.txt \
        --calibrate-ctx 32 --calibrate-chunks 3 "$(model v3 f32)" -f -o p.gguf
    same_across_threads p.gguf ds-prune -q --experts 0.5 "$(model v2 f32)" -f -o p.gguf
}

# (ds-eval.bats compares -T 1 and 2 for perplexity and KL; this adds 3 and
# the tasks)
@test "threads: ds-eval's printed numbers are the same at -T 1, 2 and 3" {
    local t out=""
    head -c 3000 "$DATA/shakespeare-12k.txt" > text.txt
    for t in 1 2 3; do
        run -0 --separate-stderr ds ds-eval -T "$t" -m "$(model v3 q8_0)" --perplexity text.txt \
            -c 32 "$DATA/evals/mc.jsonl" "$DATA/evals/gen.jsonl" -n 8
        [[ $t == 1 ]] && out=$stderr # (the numbers go to stderr)
        assert_equal "$stderr" "$out"
    done
    [[ $out == *"PPL = "* && $out == *"acc_norm = "* && $out == *"exact_match = "* ]]
}

# (ds-distill.bats runs at -T 1 only; the unit tests compare the trainer at
# 1 and 2 threads)
@test "threads: ds-distill's losses and student are the same at -T 1 and 2" {
    local t
    head -c 4000 "$DATA/shakespeare-12k.txt" > train.txt
    for t in 1 2; do
        OMP_NUM_THREADS=$t run -0 ds ds-distill -q "$(model v2 f32)" --keep-layers 0,1 \
            --data train.txt --steps 4 --batch 4 --ctx 16 --topk 8 --warmup 1 --log log.jsonl \
            -o s.gguf
        sed 's/,"tokens_per_s":[^,}]*//' log.jsonl > "log.T$t"
        mv s.gguf "s.T$t.gguf"
        rm log.jsonl
    done
    run -0 diff log.T1 log.T2
    cmp s.T1.gguf s.T2.gguf
}
