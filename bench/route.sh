#!/bin/bash
# Q8_0 against F32 on the tiny reference checkpoints, and why: expert choices
# per position and layer, the error of Q8_0 forced onto F32's expert
# selection, and N random models redrawn like each checkpoint (bench/route.c
# gen: every F32 tensor from a normal with its own mean and deviation, one
# seed each) with the fraction that meets issue 4's bar (max |dlogit| <= 3% of
# max |logit|, argmax agreement >= 98%) with and without forced routing; then
# the trained demo model (data/demo/demo.gguf, as F32) on the first 256
# tokens of its held-out text.
#   bash bench/route.sh [N_SEEDS [WORKDIR]]   (default 10, bench/out)
set -eu
cd "$(dirname "$0")/.."
N=${1:-10}
W=${2:-bench/out}
make -s all build/bench/route
mkdir -p "$W"
R=build/bench/route
meets='{ split($2, a, "="); split($3, b, "="); exit !(a[2] <= 0.03 && b[2] >= 0.98) }'
for m in tiny-v3-fp8 tiny-v2lite; do
    d=tests/data/$m
    tok=$(tr -d ' \n' < "$d/reference.json" | sed 's/.*"tokens":\[\([0-9,]*\)\].*/\1/')
    cmd/ds-convert -q -f --outtype f32 "$d" -o "$W/$m-f32.gguf"
    cmd/ds-quantize -q -f -t q8_0 "$W/$m-f32.gguf" -o "$W/$m-q8_0.gguf"
    echo "## $m: q8_0 vs f32"
    echo
    "$R" cmp "$W/$m-f32.gguf" "$W/$m-q8_0.gguf" "$tok"
    echo
    ok=0 okf=0
    echo "## $N random models like $m (same tokens): q8_0 vs f32"
    echo
    echo "| seed | rel | agree | positions rerouted | rel forced | agree forced |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for s in $(seq 1 "$N"); do
        "$R" gen "$W/$m-f32.gguf" "$W/r-f32.gguf" "$s"
        cmd/ds-quantize -q -f -t q8_0 "$W/r-f32.gguf" -o "$W/r-q8_0.gguf"
        sum=$("$R" cmp "$W/r-f32.gguf" "$W/r-q8_0.gguf" "$tok" | grep '^summary')
        # summary rel= agree= frel= fagree= flippos= ...
        set -- $sum
        echo "| $s | ${2#rel=} | ${3#agree=} | ${6#flippos=} | ${4#frel=} | ${5#fagree=} |"
        echo "x $2 $3" | awk "$meets" && ok=$((ok + 1))
        echo "x ${4#f} ${5#f}" | awk "$meets" && okf=$((okf + 1))
    done
    echo
    echo "meeting the bar: $ok of $N; with forced routing: $okf of $N"
    echo
    rm -f "$W/$m-f32.gguf" "$W/$m-q8_0.gguf" "$W/r-f32.gguf" "$W/r-q8_0.gguf"
done
echo "## demo model (trained), 256 held-out tokens: q8_0 vs f32"
echo
tail -n +36001 data/shakespeare/input.txt | head -c 4000 > "$W/held-out.txt"
tok=$(cmd/ds-run -m data/demo/demo.gguf --tokenize -f "$W/held-out.txt" | head -n 256 | paste -sd,)
cmd/ds-convert -q -f --outtype f32 data/demo/demo.gguf -o "$W/demo-f32.gguf"
cmd/ds-quantize -q -f -t q8_0 "$W/demo-f32.gguf" -o "$W/demo-q8_0.gguf"
# only the positions whose routing or argmax differs
"$R" cmp "$W/demo-f32.gguf" "$W/demo-q8_0.gguf" "$tok" | awk -F'|' '
    NF < 6 || NR == 1 { print; next }
    { split($5, a, " "); if ($2 !~ /^ *- *$/ || a[1] != a[2] || a[1] != a[3]) print }'
rm -f "$W/held-out.txt" "$W/demo-f32.gguf" "$W/demo-q8_0.gguf"
