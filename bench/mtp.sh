#!/bin/sh
# MTP speculative decoding on a V2-Lite-shaped model with a DeepSeek-V3 MTP
# layer (gen-checkpoint --mtp), in Q8_0: speedup against plain greedy decoding
# with the MTP layer's own drafts (random weights: it is almost never right)
# and with oracle drafts accepted 50/80/100% of the time (build/bench/mtp).
#   sh bench/mtp.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
GEN=${GEN:-32}
make -s all build/bench/mtp build/bench/gen-checkpoint
[ -d "$W/bf16-mtp" ] || build/bench/gen-checkpoint --mtp "$W/bf16-mtp" tests/data/tiny-v2lite
[ -s "$W/lite-mtp-bf16.gguf" ] || cmd/ds-convert -q "$W/bf16-mtp" -o "$W/lite-mtp-bf16.gguf"
[ -s "$W/lite-mtp-q8_0.gguf" ] ||
    cmd/ds-quantize -q -t q8_0 "$W/lite-mtp-bf16.gguf" -o "$W/lite-mtp-q8_0.gguf"
for th in 1 2; do
    echo "MTP, $W/lite-mtp-q8_0.gguf, -T $th:"
    build/bench/mtp "$W/lite-mtp-q8_0.gguf" "$GEN" "$th"
done
