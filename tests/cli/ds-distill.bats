#!/usr/bin/env bats
# ds-distill: training a tiny random model on text (held-out loss falls), exact
# resume, SIGINT checkpoints, distillation from a carved teacher, errors.

setup_file() {
    load common
    local d=$BATS_FILE_TMPDIR
    ds ds-convert -q "$DATA/tiny-v2lite" -o "$d/teacher.gguf"
    # 12k of Shakespeare: the first 9000 bytes to train on, the rest held out
    head -c 9000 "$DATA/shakespeare-12k.txt" > "$d/train.txt"
    tail -c +9001 "$DATA/shakespeare-12k.txt" > "$d/valid.txt"
    cat > "$d/tiny.json" << 'JSON'
{
  "model_type": "deepseek_v3", "vocab_size": 384, "hidden_size": 48,
  "intermediate_size": 96, "moe_intermediate_size": 24, "num_hidden_layers": 2,
  "num_attention_heads": 2, "n_shared_experts": 1, "n_routed_experts": 4,
  "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
  "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": true,
  "q_lora_rank": 32, "kv_lora_rank": 24, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
  "v_head_dim": 16, "first_k_dense_replace": 1, "moe_layer_freq": 1, "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0, "max_position_embeddings": 128, "tie_word_embeddings": false
}
JSON
}

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
    D=$BATS_FILE_TMPDIR
    TRAIN=(--init "$D/tiny.json" --vocab "$D/teacher.gguf" --data "$D/train.txt" -T 1
           --batch 4 --ctx 32 --lr 3e-3 --warmup 5)
}

# the "loss" fields of a JSONL log, one per line
losses() {
    sed -n 's/.*"loss":\([^,]*\),.*/\1/p' "$1"
}

@test "ds-distill: a random model learns (held-out loss falls) and ds-run loads it" {
    run -0 --separate-stderr ds ds-distill "${TRAIN[@]}" --valid "$D/valid.txt" --steps 50 \
        --eval-every 25 --eval-windows 16 --log log.jsonl -o s.gguf
    [[ $stderr == *"trained 50 steps"* ]]
    [[ -s s.gguf && ! -e s.gguf.ckpt ]]
    run -0 wc -l < log.jsonl
    assert_output 51
    first=$(sed -n 's/^{"step":0,"valid_loss":\(.*\)}$/\1/p' log.jsonl)
    last=$(sed -n 's/^{"step":50,.*"valid_loss":\([^,}]*\).*/\1/p' log.jsonl)
    echo "held-out loss: $first -> $last"
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }'
    grep -q '"step":1,"loss":.*"lr":.*"grad_norm":.*"tokens_per_s":' log.jsonl
    run -0 ds ds-run -m s.gguf -p "ROMEO:" -n 8 --temp 0 -T 1
    # f16 output loads too
    run -0 ds ds-distill "${TRAIN[@]}" --steps 2 --outtype f16 -o h.gguf -q
    run -0 ds ds-run -m h.gguf -p "ROMEO:" -n 2 --temp 0 -T 1
}

@test "ds-distill: an interrupted and resumed run gives the same losses" {
    run -0 ds ds-distill "${TRAIN[@]}" --steps 12 --accum 2 --log full.jsonl -o full.gguf -q
    run -0 --separate-stderr ds ds-distill "${TRAIN[@]}" --steps 12 --accum 2 \
        --log part.jsonl --stop-at 5 -o part.gguf
    [[ $stderr == *"stopped at step 5"* ]]
    [[ ! -e part.gguf && -s part.gguf.ckpt/model.gguf && -s part.gguf.ckpt/optimizer.gguf ]]
    run -0 ds ds-distill --data "$D/train.txt" -T 1 --resume part.gguf.ckpt \
        --log part.jsonl -o part.gguf -q
    run -0 diff <(losses full.jsonl) <(losses part.jsonl)
    cmp full.gguf part.gguf
}

@test "ds-distill: SIGINT finishes the step and saves a checkpoint" {
    set -m # a background job of a script would ignore SIGINT
    $DS_EXEC_PREFIX "$DS_BIN/ds-distill" "${TRAIN[@]}" --steps 100000 --log log.jsonl \
        -o s.gguf 2> err.txt &
    local pid=$! i st=0
    for ((i = 0; i < 300; i++)); do
        [[ -s log.jsonl ]] && break
        sleep 0.1
    done
    kill -INT "$pid"
    wait "$pid" || st=$?
    set +m
    assert_equal "$st" 130
    run -0 cat err.txt
    assert_output --partial "checkpoint saved to 's.gguf.ckpt'"
    [[ ! -e s.gguf && -s s.gguf.ckpt/model.gguf ]]
    # it resumes where it stopped
    n=$(wc -l < log.jsonl)
    run -0 ds ds-distill --data "$D/train.txt" -T 1 --resume s.gguf.ckpt --steps $((n + 2)) \
        --log log.jsonl -o s.gguf -q
    run -0 tail -n1 log.jsonl
    assert_output --partial "\"step\":$((n + 2)),"
    run -0 ds ds-run -m s.gguf.ckpt/model.gguf -p "A" -n 1 -T 1
}

@test "ds-distill: distils a carved student from a teacher (top-k, reverse KL)" {
    run -0 --separate-stderr ds ds-distill "$D/teacher.gguf" --keep-layers 0,2 --keep-experts 4 \
        --data "$D/train.txt" --steps 3 --batch 2 --ctx 16 --topk 16 --kl reverse -T 1 \
        --log log.jsonl -o s.gguf
    run -1 grep -q '"kd":0,' log.jsonl
    run -0 ds ds-run -m s.gguf -p "ROMEO:" -n 2 --temp 0 -T 1
    # full logits, forward KL, into a random student
    run -0 ds ds-distill -m "$D/teacher.gguf" --init "$D/tiny.json" --data "$D/train.txt" \
        --steps 2 --batch 2 --ctx 16 -T 1 -o r.gguf -q
}

@test "ds-distill: bad inputs are named and leave nothing behind" {
    echo '{"model_type": "deepseek_v3", "hidden_size": ' > "$D/bad.json"
    run -1 --separate-stderr ds ds-distill --init "$D/bad.json" --vocab "$D/teacher.gguf" \
        --data "$D/train.txt" --steps 1 -o s.gguf
    [[ $stderr == *"bad.json"* ]]
    run -1 --separate-stderr ds ds-distill "${TRAIN[@]}" --data "$D/missing.txt" -o s.gguf
    [[ $stderr == *"missing.txt"* ]]
    printf 'too short' > "$D/short.txt"
    run -1 --separate-stderr ds ds-distill "${TRAIN[@]}" --data "$D/short.txt" -o s.gguf
    [[ $stderr == *"short.txt"*"tokens"* ]]
    run -1 --separate-stderr ds ds-distill "${TRAIN[@]}" --vocab "$D/tiny.json" -o s.gguf
    [[ $stderr == *"tiny.json"* ]]
    run -1 --separate-stderr ds ds-distill "$D/teacher.gguf" --keep-layers 7 --data "$D/train.txt" \
        -o s.gguf
    [[ $stderr == *"layer 7"* ]]
    assert_dir_empty
    run -2 --separate-stderr ds ds-distill "${TRAIN[@]}"  --kl sideways -o s.gguf
    [[ $stderr == *"--kl"* ]]
    run -2 --separate-stderr ds ds-distill --data "$D/train.txt" -o s.gguf
    [[ $stderr == *"no student"* ]]
    touch s.gguf
    run -1 --separate-stderr ds ds-distill "${TRAIN[@]}" --steps 1 -o s.gguf
    [[ $stderr == *"already exists"* ]]
}
