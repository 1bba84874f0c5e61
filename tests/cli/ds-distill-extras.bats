#!/usr/bin/env bats
# ds-distill's tokenizer training (--train-tokenizer), teacher cache
# (--teacher-cache: same losses as without it, reused, refused for another
# teacher or k) and loss plot (--plot).

setup_file() {
    load common
    local d=$BATS_FILE_TMPDIR
    head -c 9000 "$DATA/shakespeare-12k.txt" > "$d/train.txt"
    tail -c +9001 "$DATA/shakespeare-12k.txt" > "$d/valid.txt"
    cat > "$d/tiny.json" << 'JSON'
{
  "model_type": "deepseek_v3", "vocab_size": 320, "hidden_size": 32,
  "intermediate_size": 64, "moe_intermediate_size": 16, "num_hidden_layers": 2,
  "num_attention_heads": 2, "n_shared_experts": 1, "n_routed_experts": 4,
  "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
  "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": true,
  "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
  "v_head_dim": 16, "first_k_dense_replace": 1, "moe_layer_freq": 1, "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": false
}
JSON
    ds ds-distill -q --train-tokenizer 320 --data "$d/train.txt" --vocab-out "$d/vocab.gguf"
    ds ds-distill -q --init "$d/tiny.json" --vocab "$d/vocab.gguf" --data "$d/train.txt" \
        -T 1 --batch 2 --ctx 16 --steps 10 --warmup 2 -o "$d/teacher.gguf"
}

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
    D=$BATS_FILE_TMPDIR
    KD=(--init "$D/tiny.json" -m "$D/teacher.gguf" --data "$D/train.txt" --valid "$D/valid.txt"
        -T 1 --batch 2 --ctx 16 --steps 6 --warmup 2 --seed 3 --topk 8 --eval-every 2
        --eval-windows 4)
}

# a JSONL log without the timing field
nontiming() {
    sed 's/,"tokens_per_s":[0-9.]*//' "$1"
}

@test "ds-distill --train-tokenizer: a vocabulary GGUF that round-trips text" {
    run -0 --separate-stderr ds ds-distill --train-tokenizer 300 --data "$D/train.txt" \
        --vocab-out v.gguf
    [[ $stderr == *"tokenizer: 300 tokens"*"written to 'v.gguf'"* ]]
    run -0 ds ds-convert --list v.gguf
    assert_output --partial 'tokenizer.ggml.pre'
    assert_output --partial '"deepseek-llm"'
    assert_output --partial '0 tensors'
    # deterministic
    run -0 ds ds-distill -q --train-tokenizer 300 --data "$D/train.txt" --vocab-out w.gguf
    cmp v.gguf w.gguf
    # the vocabulary as a student's tokenizer: ds-run tokenizes with it
    run -0 ds ds-distill -q --init "$D/tiny.json" --data "$D/train.txt" -T 1 --batch 2 \
        --ctx 16 --steps 1 --train-tokenizer 320 --vocab-out v2.gguf -o s.gguf
    run -0 ds ds-run -m s.gguf -p "ROMEO: hello" -n 1 --temp 0 -T 1
}

@test "ds-distill --train-tokenizer: errors" {
    run -1 --separate-stderr ds ds-distill --train-tokenizer 300 --data "$D/train.txt" \
        --vocab-out "$D/vocab.gguf"
    [[ $stderr == *"already exists"* ]]
    run -2 --separate-stderr ds ds-distill --train-tokenizer 300 --data "$D/train.txt"
    [[ $stderr == *"go together"* ]]
    run -2 --separate-stderr ds ds-distill --train-tokenizer 100 --data "$D/train.txt" \
        --vocab-out v.gguf
    printf '\xff\xfe' > bad.txt
    run -1 --separate-stderr ds ds-distill --train-tokenizer 300 --data bad.txt --vocab-out v.gguf
    [[ $stderr == *"'bad.txt': invalid UTF-8 at byte 0"* ]]
    [[ ! -e v.gguf ]]
}

@test "ds-distill --teacher-cache: the losses of training without it, then reused" {
    run -0 ds ds-distill "${KD[@]}" --log plain.jsonl -o plain.gguf -q
    run -0 --separate-stderr ds ds-distill -vv "${KD[@]}" --teacher-cache tc --log a.jsonl \
        -o a.gguf
    [[ $stderr == *"running the teacher"* ]]
    [[ -s tc/shard-00000.dstc ]]
    run -0 --separate-stderr ds ds-distill -vv "${KD[@]}" --teacher-cache tc --log b.jsonl \
        -o b.gguf
    [[ $stderr == *"teacher cache 'tc': reused"* ]]
    diff <(nontiming plain.jsonl) <(nontiming a.jsonl)
    diff <(nontiming plain.jsonl) <(nontiming b.jsonl)
    cmp plain.gguf a.gguf
    cmp plain.gguf b.gguf
}

@test "ds-distill --teacher-cache: refused for another k, teacher or text" {
    run -0 ds ds-distill "${KD[@]}" --teacher-cache tc -o a.gguf -q
    run -1 --separate-stderr ds ds-distill "${KD[@]}" --topk 4 --teacher-cache tc -o b.gguf
    [[ $stderr == *"'tc': teacher cache holds top-8 logits, not top-4"* ]]
    cp "$D/teacher.gguf" t2.gguf
    printf 'x' >> t2.gguf
    run -1 --separate-stderr ds ds-distill "${KD[@]}" -m t2.gguf --teacher-cache tc -o b.gguf
    [[ $stderr == *"another teacher"* ]]
    run -1 --separate-stderr ds ds-distill "${KD[@]}" --data "$D/valid.txt" --teacher-cache tc \
        -o b.gguf
    [[ $stderr == *"another corpus"* ]]
    [[ ! -e b.gguf ]]
    run -2 --separate-stderr ds ds-distill "${KD[@]}" --topk 0 --teacher-cache tc -o b.gguf
    [[ $stderr == *"needs a teacher and --topk K"* ]]
}

@test "ds-distill --plot: an SVG of the training and held-out curves" {
    run -0 ds ds-distill "${KD[@]}" --plot loss.svg -o s.gguf -q
    head -1 loss.svg | grep -q '^<?xml'
    if command -v xmllint > /dev/null; then xmllint --noout loss.svg; fi
    grep -q '>training loss<' loss.svg
    grep -q '>training cross-entropy<' loss.svg
    grep -q '>held-out cross-entropy<' loss.svg
    # 6 steps in two lines; held-out at steps 0, 2, 4, 6 with dots
    run -0 grep -c '<polyline' loss.svg
    assert_output 3
}
