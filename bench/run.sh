#!/bin/sh
# ds-run benchmark: prefill and decode tokens/s with -T 1 and -T 2 on a
# generated model with DeepSeek-V2-Lite layer shapes (4 layers, BF16; see
# bench/gen-checkpoint.c), median of RUNS runs, and the KV cache per token.
#   sh bench/run.sh [WORKDIR]   (needs ~10 GB free; default bench/out)
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
RUNS=${RUNS:-3}
PROMPT=${PROMPT:-64}
GEN=${GEN:-32}
make -s all build/bench/gen-checkpoint
mkdir -p "$W"
[ -d "$W/bf16" ] || build/bench/gen-checkpoint "$W/bf16" tests/data/tiny-v2lite
[ -s "$W/lite-bf16.gguf" ] || cmd/ds-convert -q "$W/bf16" -o "$W/lite-bf16.gguf"
# prompt ids below the tiny tokenizer's 384 real tokens
tokens=$(awk -v n="$PROMPT" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", 2 + (i * 37) % 380 }')
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed "s/.*\"$1\":\([0-9.e+-]*\).*/\1/"; }
echo "model: $(stat -c %s "$W/lite-bf16.gguf") bytes; prompt $PROMPT tokens, $GEN generated"
for t in 1 2; do
    : > "$W/pp"; : > "$W/tg"
    for i in $(seq "$RUNS"); do
        out=$(cmd/ds-run -T "$t" -m "$W/lite-bf16.gguf" --tokens "$tokens" -n "$GEN" --temp 0 --json)
        echo "$out" | field prompt_tokens_per_s >> "$W/pp"
        echo "$out" | field generation_tokens_per_s >> "$W/tg"
    done
    printf -- '-T %s: prefill %8.2f tokens/s, decode %8.2f tokens/s\n' "$t" \
        "$(median < "$W/pp")" "$(median < "$W/tg")"
done
cmd/ds-run -v -m "$W/lite-bf16.gguf" --tokens 2 -n 0 2>&1 | grep "KV cache"
rm -f "$W/pp" "$W/tg"
