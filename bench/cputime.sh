#!/bin/bash
# ds-run against llama.cpp (bench/llama.mjs) at one thread, as CPU time
# (perf stat -e task-clock), run interleaved, for a loaded machine: per type
# and run, prefill of 63 tokens (a 64-token prompt less a 1-token one) and 16
# decoded tokens (17 less 1, after a 4-token prompt), in ms. Needs perf, bc
# and, for llama.cpp, tests/interop's node-llama-cpp.
#   bash bench/cputime.sh [WORKDIR]   (models WORKDIR/lite-mtp-TYPE.gguf; TYPES, RUNS)
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
RUNS=${RUNS:-3}
TYPES=${TYPES:-"q8_0 q4_k_m"}
cpu() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | grep task-clock | cut -d, -f1; }
ids() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", i ? "," : "", 2 + (i * 37) % 380 }'; }
echo "| type | run | ds-run prefill | llama.cpp prefill | ds-run decode | llama.cpp decode | load |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in $TYPES; do
    f=$W/lite-mtp-$t.gguf
    for r in $(seq "$RUNS"); do
        a=$(cpu cmd/ds-run -T 1 -m "$f" --tokens "$(ids 1)" -n 0)
        b=$(cpu cmd/ds-run -T 1 -m "$f" --tokens "$(ids 64)" -n 0)
        c=$(cpu cmd/ds-run -T 1 -m "$f" --tokens "$(ids 4)" -n 1 --temp 0)
        d=$(cpu cmd/ds-run -T 1 -m "$f" --tokens "$(ids 4)" -n 17 --temp 0)
        e=$(cpu node bench/llama.mjs "$f" --prompt 1 --gen 0 --threads 1)
        g=$(cpu node bench/llama.mjs "$f" --prompt 64 --gen 0 --threads 1)
        h=$(cpu node bench/llama.mjs "$f" --prompt 4 --gen 1 --threads 1)
        i=$(cpu node bench/llama.mjs "$f" --prompt 4 --gen 17 --threads 1)
        echo "| $t | $r | $(echo "$b - $a" | bc) ms | $(echo "$g - $e" | bc) ms | $(echo "$d - $c" | bc) ms | $(echo "$i - $h" | bc) ms | $(cut -d' ' -f1 /proc/loadavg) |"
    done
done
