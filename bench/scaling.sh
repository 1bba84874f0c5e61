#!/bin/sh
# Decode tokens/s against context length (CTXS, default 256 to 16k) with the
# f32 and the q8_0 KV cache, -T THREADS (default 2), on the Q8_0 V2-Lite-shaped
# model of bench/decode.sh (context_length 163840). Filling 16k positions by
# prefill takes a while (attention is quadratic in the context).
#   sh bench/scaling.sh [WORKDIR]
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
CTXS=${CTXS:-"256 1024 4096 16384"}
THREADS=${THREADS:-2}
CACHES=${CACHES:-"f32 q8_0"}
make -s all build/bench/ctx
[ -s "$W/lite-bf16.gguf" ] || sh bench/run.sh "$W" > /dev/null
f=$W/lite-q8_0.gguf
[ -s "$f" ] || cmd/ds-quantize -q -f -t q8_0 "$W/lite-bf16.gguf" -o "$f"
echo "decode tokens/s against context, $f, -T $THREADS (16 tokens at each length)"
for c in $CACHES; do
    # shellcheck disable=SC2086
    build/bench/ctx "$f" "$THREADS" "$c" $CTXS
done
