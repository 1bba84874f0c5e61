#!/bin/sh
# Pruning benchmark: perplexity against sparsity (magnitude and Wanda, 50% and
# 2:4), against the fraction of routed experts removed, one attention head and
# one layer removed, with the parameter count and the zstd-compressed size
# from ds-prune's --json report.
#
# By default on the demo model (data/demo/demo.gguf) with its split
# (data/demo/README.md, the Makefile's demo target): lines 1-36000 of
# data/shakespeare/input.txt are the training text, lines 36001-40000 the
# held-out text. Perplexity is ds-eval --perplexity (llama.cpp's method:
# windows of CTX tokens, the second half of each scored) on the whole
# held-out text; the calibration text (Wanda's activation norms, the router
# statistics of the expert ranking, head and layer ranking) is the first
# CAL_CHUNKS chunks of CTX tokens of the TRAINING text, so nothing of the
# evaluation text is seen by the pruning.
#   sh bench/prune.sh [WORKDIR]
#   MODELS="a.gguf b.gguf" CALIB=text EVAL=text sh bench/prune.sh [WORKDIR]
# Everything is deterministic (ds-eval's numbers do not depend on the thread
# count), so one run suffices. T threads (default 1).
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
CTX=${CTX:-128}
CAL_CHUNKS=${CAL_CHUNKS:-64}
T=${T:-1}
mkdir -p "$W"
make -s all
text=data/shakespeare/input.txt
if [ -n "${CALIB:-}" ]; then cp "$CALIB" "$W/calib.txt"; else head -n 36000 "$text" > "$W/calib.txt"; fi
if [ -n "${EVAL:-}" ]; then cp "$EVAL" "$W/eval.txt"; else tail -n +36001 "$text" > "$W/eval.txt"; fi

# ppl MODEL: "PPL +/- stderr" over the held-out text
ppl() {
    cmd/ds-eval -T "$T" -m "$1" --perplexity "$W/eval.txt" --ctx "$CTX" 2>&1 |
        sed -n 's/.*PPL = \([0-9.]*\) +\/- \([0-9.]*\),.*/\1 ± \2/p'
}

# row LABEL [DS-PRUNE OPTIONS]: prune the model $m, evaluate the result
row() {
    label=$1
    shift
    cmd/ds-prune -T "$T" -q -f --json "$@" "$m" -o "$W/pruned.gguf" > "$W/report.json"
    js() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$W/report.json"; }
    printf '| %-30s | %9s | %8.3f | %s |\n' "$label" "$(js params_after)" \
        "$(echo "$(js zstd_bytes)" | awk '{ print $1 / 1e6 }')" "$(ppl "$W/pruned.gguf")"
}

MODELS=${MODELS:-data/demo/demo.gguf}
cal="--calibrate $W/calib.txt --calibrate-ctx $CTX --calibrate-chunks $CAL_CHUNKS"
for m in $MODELS; do
    echo "### ${m##*/}"
    echo
    echo "| pruning                        | parameters | zstd MB | perplexity |"
    echo "|---|---:|---:|---|"
    row "none (ds-prune -s 0: a copy)" -s 0
    row "magnitude 50%" -s 0.5
    row "wanda 50%" -s 0.5 --method wanda $cal
    row "magnitude 2:4" --nm 2:4
    row "wanda 2:4" --nm 2:4 --method wanda $cal
    for f in 0.25 0.5; do
        row "experts -$f (router stats)" --experts "$f" $cal
        row "experts -$f (router norm)" --experts "$f"
    done
    row "heads -1 per layer" --heads 1 $cal
    row "layers -1 (block influence)" --layers 1 $cal
    echo
done
rm -f "$W/pruned.gguf" "$W/report.json"
