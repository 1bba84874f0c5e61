#!/bin/sh
# Quantization benchmark: ds-quantize MB/s (input bytes) with -T 1 and -T 2,
# then ds-run decode tokens/s per type on the V2-Lite-shaped model, beside
# the memory-bandwidth bound: measured read bandwidth / bytes of weights read
# per token (everything but the embedding table, and 6 of 64 routed experts).
#   sh bench/quantize.sh [WORKDIR]     (uses bench/run.sh's lite-bf16.gguf)
# SIMD="avx512 avx2" runs decode at each of these levels (DS_SIMD), the levels
# alternating run by run so that their ratio is measured back to back.
# TYPES (default "q8_0 q6_k q4_k_m q4_0 fp8") and RUNS (3) as wanted;
# QUANTIZE=0 skips the quantization timings (one run makes the model).
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
RUNS=${RUNS:-3}
TYPES=${TYPES:-"q8_0 q6_k q4_k_m q4_0 fp8"}
SIMD=${SIMD:-default}
QUANTIZE=${QUANTIZE:-1}
make -s all build/bench/membw build/bench/gen-checkpoint
[ -s "$W/lite-bf16.gguf" ] || sh bench/run.sh "$W" > /dev/null
in=$W/lite-bf16.gguf
bytes=$(stat -c %s "$in")
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bw1=$(build/bench/membw 1 | cut -d' ' -f1)
bw2=$(build/bench/membw 2 | cut -d' ' -f1)
echo "memory read bandwidth: $bw1 GB/s (1 thread), $bw2 GB/s (2 threads)"
tokens=$(awk 'BEGIN { for (i = 0; i < 16; i++) printf "%s%d", i ? "," : "", 2 + i * 23 }')
for t in $TYPES; do
    for th in 1 2; do
        : > "$W/qt"
        runs=$RUNS
        case $t in q8_0|q4_0|fp8) ;; *) runs=1 ;; esac   # the k-quant searches are slow
        [ "$QUANTIZE" = 1 ] || { [ "$th" = 1 ] && runs=1 || continue; }
        for i in $(seq "$runs"); do
            /usr/bin/time -f '%e' -o "$W/t1" cmd/ds-quantize -q -f -T "$th" -t "$t" "$in" \
                -o "$W/$t.gguf"
            cat "$W/t1" >> "$W/qt"
        done
        s=$(median < "$W/qt")
        awk -v t="$t" -v th="$th" -v s="$s" -v b="$bytes" -v r="$runs" \
            'BEGIN { printf "quantize %-7s -T %s: %7.2f s %7.1f MB/s (median of %d)\n", t, th, s, b / 1e6 / s, r }'
    done
    # bytes of weights read per decoded token, from the tensor table
    active=$(cmd/ds-convert --list --json "$W/$t.gguf" | tr '{' '\n' | awk -F'"bytes":' '
        /"name":"/ { split($0, a, "\""); name = a[4]; split($2, b, ","); by = b[1] + 0
            if (name == "token_embd.weight") next
            if (name ~ /_exps/) by = by * 6 / 64
            if (name ~ /nextn/) next
            s += by }
        END { printf "%.0f", s }')
    for th in 1 2; do
        for l in $SIMD; do : > "$W/tg.$l"; done
        for i in $(seq "$RUNS"); do
            for l in $SIMD; do
                DS_SIMD=$l cmd/ds-run -T "$th" -m "$W/$t.gguf" --tokens "$tokens" -n 16 \
                    --temp 0 --json |
                    sed 's/.*"generation_tokens_per_s":\([0-9.e+-]*\).*/\1/' >> "$W/tg.$l"
            done
        done
        bw=$bw1; [ "$th" = 2 ] && bw=$bw2
        for l in $SIMD; do
            tg=$(median < "$W/tg.$l")
            lv=$(DS_SIMD=$l cmd/ds-quantize --list-types | sed -n 's/^kernels: \([a-z0-9]*\).*/\1/p')
            awk -v t="$t" -v th="$th" -v tg="$tg" -v a="$active" -v bw="$bw" -v l="${lv:-$l}" \
                'BEGIN { printf "decode   %-7s -T %s %-7s: %6.2f tokens/s; %.0f MB of weights per token; bound %.2f tokens/s (%.0f%%)\n", t, th, l, tg, a / 1e6, bw * 1e9 / a, 100 * tg / (bw * 1e9 / a) }'
            rm -f "$W/tg.$l"
        done
    done
    rm -f "$W/$t.gguf"
done
rm -f "$W/qt" "$W/tg" "$W/t1"
