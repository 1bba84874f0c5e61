#!/bin/bash
# Issue 9 benchmark on the V2-Lite-shaped model of bench/run.sh, per weight
# type (TYPES, default "q8_0 q4_k_m"), each figure the median of RUNS runs:
#  - decode tokens/s with -T 1 and -T 2 beside the bandwidth bound (membw's
#    read bandwidth / bytes of weights read per token) and the peak RSS;
#  - prefill tokens/s and GFLOP/s at 64, 256 and 512 prompt tokens (-T 2);
#  - the same GGUF in llama.cpp (bench/llama.mjs, node-llama-cpp's libllama),
#    run back to back with ds-run, same threads, and the ratio.
#   bash bench/decode.sh [WORKDIR]       (LLAMA=0 skips llama.cpp)
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
RUNS=${RUNS:-3}
TYPES=${TYPES:-"q8_0 q4_k_m"}
GEN=${GEN:-32}
PREFILLS=${PREFILLS:-"64 256 512"}
LLAMA=${LLAMA:-1}
make -s all build/bench/membw build/bench/gen-checkpoint
[ -s "$W/lite-bf16.gguf" ] || sh bench/run.sh "$W" > /dev/null
[ -d tests/interop/node_modules/node-llama-cpp ] || LLAMA=0
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed "s/.*\"$1\":\([0-9.e+-]*\).*/\1/"; }
ids() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", 2 + (i * 37) % 380 }'; }
# bytes (of FILE) of the weights one decoded token reads: all but the
# embedding table and the MTP layer (blk.N, N = block_count - nextn layers),
# 6 of 64 routed experts
active() {
    cmd/ds-convert --list --json "$1" | tr '{,' '\n\n' | awk -F: '
        $1 == "\"deepseek2.block_count\"" && $2 ~ /^[0-9]+$/ { nb = $2 + 0 }
        $1 == "\"deepseek2.nextn_predict_layers\"" && $2 ~ /^[0-9]+$/ { nn = $2 + 0 }
        $1 == "\"name\"" { name = $2; gsub(/"/, "", name) }
        $1 == "\"bytes\"" && name != "" { by = $2 + 0
            if (name == "token_embd.weight" || name ~ /nextn/) next
            if (nn > 0 && index(name, "blk." (nb - nn) ".") == 1) next
            if (name ~ /_exps/) by = by * 6 / 64
            s += by; name = "" }
        END { printf "%.0f", s }'
}
bw1=$(build/bench/membw 1 | cut -d' ' -f1)
bw2=$(build/bench/membw 2 | cut -d' ' -f1)
params=$(( $(active "$W/lite-bf16.gguf") / 2 ))   # BF16: 2 bytes a weight
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "memory read bandwidth: $bw1 GB/s (1 thread), $bw2 GB/s (2 threads); $params weights active per token; median of $RUNS runs"
echo
echo "| type | threads | weights/token | decode | bound | of bound | peak RSS | file |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in $TYPES; do
    f=$W/lite-$t.gguf
    [ -s "$f" ] || cmd/ds-quantize -q -f -t "$t" "$W/lite-bf16.gguf" -o "$f"
    a=$(active "$f")
    for th in 1 2; do
        : > "$W/tg"; : > "$W/rss"
        for i in $(seq "$RUNS"); do
            /usr/bin/time -f '%M' -o "$W/t1" cmd/ds-run -T "$th" -m "$f" --tokens "$(ids 16)" \
                -n "$GEN" --temp 0 --json | field generation_tokens_per_s >> "$W/tg"
            cat "$W/t1" >> "$W/rss"
        done
        bw=$bw1; [ "$th" = 2 ] && bw=$bw2
        awk -v t="$t" -v th="$th" -v tg="$(median < "$W/tg")" -v a="$a" -v bw="$bw" \
            -v rss="$(median < "$W/rss")" -v fs="$(stat -L -c %s "$f")" \
            'BEGIN { b = bw * 1e9 / a; printf "| %s | %d | %.0f MB | %.2f t/s | %.2f t/s | %.0f%% | %.0f MB | %.0f MB |\n", t, th, a / 1e6, tg, b, 100 * tg / b, rss * 1024 / 1e6, fs / 1e6 }'
    done
done
echo
echo "Prefill (-T 2): GFLOP/s counts 2 flops per active weight and the attention"
echo "(2 x heads x (kv_lora + rope + kv_lora) per cached position, 4 layers)."
echo
echo "| type | prompt | ds-run prefill | GFLOP/s |"
echo "|---|---:|---:|---:|"
for t in $TYPES; do
    f=$W/lite-$t.gguf
    for p in $PREFILLS; do
        : > "$W/pp"
        for i in $(seq "$RUNS"); do
            cmd/ds-run -T 2 -m "$f" --tokens "$(ids "$p")" -n 0 --json | field prompt_tokens_per_s >> "$W/pp"
        done
        awk -v t="$t" -v p="$p" -v pp="$(median < "$W/pp")" -v w="$params" \
            'BEGIN { fl = 2 * w + 4 * 2 * 16 * (512 + 64 + 512) * p / 2
                     printf "| %s | %d | %.1f t/s | %.1f |\n", t, p, pp, pp * fl / 1e9 }'
    done
done
[ "$LLAMA" = 1 ] || exit 0
echo
echo "ds-run against llama.cpp (node-llama-cpp $(sed -n 's/.*"version": "\(.*\)".*/\1/p' tests/interop/node_modules/node-llama-cpp/package.json)), same GGUF, same threads, run back to back:"
echo "prefill of 64 tokens, then $GEN greedy tokens; median of $RUNS."
echo
echo "| type | threads | ds-run prefill | llama.cpp prefill | ratio | ds-run decode | llama.cpp decode | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for t in $TYPES; do
    f=$W/lite-$t.gguf
    for th in 1 2; do
        : > "$W/dp"; : > "$W/dg"; : > "$W/lp"; : > "$W/lg"
        node bench/llama.mjs "$f" --prompt 65 --gen 1 --threads "$th" > /dev/null  # warm up
        for i in $(seq "$RUNS"); do
            out=$(cmd/ds-run -T "$th" -m "$f" --tokens "$(ids 64)" -n "$GEN" --temp 0 --json)
            echo "$out" | field prompt_tokens_per_s >> "$W/dp"
            echo "$out" | field generation_tokens_per_s >> "$W/dg"
            out=$(node bench/llama.mjs "$f" --prompt 65 --gen "$GEN" --threads "$th")
            echo "$out" | field prompt_tokens_per_s >> "$W/lp"
            echo "$out" | field generation_tokens_per_s >> "$W/lg"
        done
        awk -v t="$t" -v th="$th" -v dp="$(median < "$W/dp")" -v dg="$(median < "$W/dg")" \
            -v lp="$(median < "$W/lp")" -v lg="$(median < "$W/lg")" \
            'BEGIN { printf "| %s | %d | %.1f t/s | %.1f t/s | %.2f | %.2f t/s | %.2f t/s | %.2f |\n", t, th, dp, lp, dp / lp, dg, lg, dg / lg }'
    done
done
rm -f "$W/tg" "$W/rss" "$W/t1" "$W/pp" "$W/dp" "$W/dg" "$W/lp" "$W/lg"
