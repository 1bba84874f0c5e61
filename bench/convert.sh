#!/bin/sh
# Conversion benchmark: MB/s and peak RSS of ds-convert on a generated
# multi-GB checkpoint, beside cp of the same files. Median of RUNS runs.
#   sh bench/convert.sh [WORKDIR]   (needs ~15 GB free; default bench/out)
set -eu
cd "$(dirname "$0")/.."
W=${1:-bench/out}
RUNS=${RUNS:-3}
make -s all build/bench/gen-checkpoint
mkdir -p "$W"
[ -d "$W/bf16" ] || build/bench/gen-checkpoint "$W/bf16" tests/data/tiny-v2lite
[ -d "$W/fp8" ] || build/bench/gen-checkpoint --fp8 "$W/fp8" tests/data/tiny-v2lite
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# run NAME CMD...: prints "NAME seconds MB/s maxrss_MiB" (median of RUNS)
run() {
    name=$1; bytes=$2; shift 2
    : > "$W/times"
    for i in $(seq "$RUNS"); do
        rm -rf "$W/o" "$W/o.gguf"
        sync
        /usr/bin/time -f '%e %M' -o "$W/t1" "$@" >/dev/null
        cat "$W/t1" >> "$W/times"
    done
    s=$(cut -d' ' -f1 "$W/times" | median)
    rss=$(cut -d' ' -f2 "$W/times" | median)
    awk -v n="$name" -v s="$s" -v b="$bytes" -v r="$rss" \
        'BEGIN { printf "%-40s %8.2f s %8.0f MB/s %8.0f MiB\n", n, s, b / 1e6 / s, r / 1024 }'
}

for src in bf16 fp8; do
    bytes=$(du -sb "$W/$src" | cut -f1)
    largest=$(ls -S "$W/$src" | head -1)
    echo "== $src: $bytes bytes"
    run "cp -r $src" "$bytes" cp -r "$W/$src" "$W/o"
    run "ds-convert $src -o o.gguf" "$bytes" cmd/ds-convert -f "$W/$src" -o "$W/o.gguf"
    run "ds-convert $src | cat > o.gguf" "$bytes" sh -c "cmd/ds-convert '$W/$src' | cat > '$W/o.gguf'"
done
echo "== back to safetensors"
cmd/ds-convert -f "$W/bf16" -o "$W/in.gguf"
bytes=$(stat -c %s "$W/in.gguf")
run "ds-convert bf16.gguf --to safetensors" "$bytes" cmd/ds-convert --to safetensors "$W/in.gguf" -o "$W/o"
run "cat bf16.gguf | ds-convert --to safetensors" "$bytes" sh -c "cat '$W/in.gguf' | cmd/ds-convert --to safetensors -o '$W/o'"
rm -rf "$W/o" "$W/o.gguf" "$W/in.gguf" "$W/times" "$W/t1"
