#!/bin/sh
# Pruning benchmark: perplexity against sparsity (magnitude and Wanda, 50% and
# 2:4) and against the fraction of routed experts removed, on the tiny test
# checkpoints (random weights: the numbers show the pipeline, not quality;
# redo the table on the demo model when it exists: MODELS="path.gguf ...").
#
# Perplexity is computed here from `ds-run --dump-logits` (ds-eval is not
# there yet): the second half of tests/data/shakespeare-12k.txt is tokenized,
# cut into chunks of CTX tokens (BOS + CTX-1 tokens of text), and every
# position but the last of each chunk predicts the next token:
# ppl = exp(mean of -log softmax(logits)[next]). The first half of the text is
# the calibration text of Wanda and of the expert ranking.
#   sh bench/prune.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
CTX=${CTX:-256}
CHUNKS=${CHUNKS:-4}
mkdir -p "$W"
make -s all
text=tests/data/shakespeare-12k.txt
half=$(($(wc -c < "$text") / 2))
head -c "$half" "$text" > "$W/calib.txt"
tail -c +"$((half + 1))" "$text" > "$W/eval.txt"

# ppl MODEL: perplexity over CHUNKS chunks of eval.txt
ppl() {
    cmd/ds-run -m "$1" -f "$W/eval.txt" --tokenize | grep -v '^0$' > "$W/ids"
    nv=$(cmd/ds-convert --list "$1" | awk '$1 == "deepseek2.vocab_size" { print $3 }')
    : > "$W/nll"
    for c in $(seq 0 $((CHUNKS - 1))); do
        ids=$(awk -v a=$((c * (CTX - 1) + 1)) -v b=$(((c + 1) * (CTX - 1))) \
            'NR >= a && NR <= b' "$W/ids" | paste -sd, -)
        [ -n "$ids" ] || break
        cmd/ds-run -q -m "$1" -c "$CTX" --tokens "0,$ids" --dump-logits "$W/lg.f32"
        echo "0,$ids" | tr , '\n' > "$W/tok"
        od -An -v -f -w4 "$W/lg.f32" | awk -v V="$nv" -v tokfile="$W/tok" '
            BEGIN { while ((getline t < tokfile) > 0) tok[n++] = t }
            { j = (NR - 1) % V; row = int((NR - 1) / V); x[j] = $1
              if (j == V - 1 && row + 1 < n) {
                  m = x[0]; for (i = 1; i < V; i++) if (x[i] > m) m = x[i]
                  s = 0; for (i = 0; i < V; i++) s += exp(x[i] - m)
                  print m + log(s) - x[tok[row + 1]] } }' >> "$W/nll"
    done
    awk '{ s += $1; n++ } END { printf "%.2f (%d tokens)", exp(s / n), n }' "$W/nll"
}

row() { # label model
    printf '| %-28s | %s |\n' "$1" "$(ppl "$2")"
}

MODELS=${MODELS:-}
if [ -z "$MODELS" ]; then
    for m in tiny-v3-fp8 tiny-v2lite; do
        [ -s "$W/$m-f32.gguf" ] || cmd/ds-convert -q --outtype f32 "tests/data/$m" -o "$W/$m-f32.gguf"
        MODELS="$MODELS $W/$m-f32.gguf"
    done
fi
cal="--calibrate $W/calib.txt --calibrate-ctx $CTX"
for m in $MODELS; do
    echo "### ${m##*/}"
    echo
    echo "| pruning                      | perplexity |"
    echo "|---|---|"
    row "none" "$m"
    p=$W/pruned.gguf
    cmd/ds-prune -q -f -s 0.5 "$m" -o "$p" && row "magnitude 50%" "$p"
    cmd/ds-prune -q -f -s 0.5 --method wanda $cal "$m" -o "$p" && row "wanda 50%" "$p"
    cmd/ds-prune -q -f --nm 2:4 "$m" -o "$p" && row "magnitude 2:4" "$p"
    cmd/ds-prune -q -f --nm 2:4 --method wanda $cal "$m" -o "$p" && row "wanda 2:4" "$p"
    for f in 0.25 0.5; do
        cmd/ds-prune -q -f --experts "$f" $cal "$m" -o "$p" && row "experts -$f (router stats)" "$p"
        cmd/ds-prune -q -f --experts "$f" "$m" -o "$p" && row "experts -$f (router norm)" "$p"
    done
    echo
done
rm -f "$W/pruned.gguf" "$W/lg.f32" "$W/ids" "$W/tok" "$W/nll"
