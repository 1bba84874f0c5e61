#!/bin/bash
# The accuracy cost of the 8-bit KV cache (ds-run --cache-type q8_0): on the
# tiny reference checkpoints (F32 GGUF), the logits at every prompt position
# with a q8_0 cache against those with an f32 cache and against DeepSeek's
# reference logits: max|dlogit|, max|dlogit| / max|logit|, argmax agreement.
#   bash bench/kvcache.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
make -s all
mkdir -p "$W"
# cmp A B N_VOCAB: "max|d| rel agree"
cmp_logits() {
    paste <(od -An -v -f -w4 "$1") <(od -An -v -f -w4 "$2") | awk -v V="$3" '
        { a = $1 + 0; b = $2 + 0; d = a - b; if (d < 0) d = -d; if (d > md) md = d
          m = b < 0 ? -b : b; if (m > mb) mb = m
          j = (NR - 1) % V
          if (j == 0 || a > ba) { ba = a; ia = j }
          if (j == 0 || b > bb) { bb = b; ib = j }
          if (j == V - 1) { rows++; if (ia == ib) same++ } }
        END { printf "%.3g | %.3g | %d/%d", md, md / mb, same, rows }'
}
echo "| checkpoint | tokens | compared | max abs dlogit | relative | argmax agreement |"
echo "|---|---:|---|---:|---:|---:|"
for m in tiny-v3-fp8 tiny-v2lite; do
    d=tests/data/$m
    cmd/ds-convert -q -f --outtype f32 "$d" -o "$W/$m-f32.gguf"
    tok=$(tr -d ' \n' < "$d/reference.json" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/')
    nv=$(tr -d ' \n' < "$d/reference.json" | sed 's/.*"n_vocab":\([0-9]*\).*/\1/')
    n=$(echo "$tok" | tr ',' '\n' | wc -l)
    cmd/ds-run -m "$W/$m-f32.gguf" --tokens "$tok" --dump-logits "$W/f32.logits"
    cmd/ds-run -m "$W/$m-f32.gguf" --tokens "$tok" --dump-logits "$W/q8.logits" --cache-type q8_0
    echo "| $m | $n | q8_0 vs f32 cache | $(cmp_logits "$W/q8.logits" "$W/f32.logits" "$nv") |"
    echo "| $m | $n | f32 cache vs reference | $(cmp_logits "$W/f32.logits" "$d/reference.logits.f32" "$nv") |"
    echo "| $m | $n | q8_0 cache vs reference | $(cmp_logits "$W/q8.logits" "$d/reference.logits.f32" "$nv") |"
    rm -f "$W/$m-f32.gguf" "$W/f32.logits" "$W/q8.logits"
done
