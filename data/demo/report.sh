#!/bin/sh
# report.sh DIR - the held-out loss of the demo models from make demo-model's
# training logs: the last evaluation of each run (DIR/NAME.jsonl), as
# cross-entropy in nats per token and as perplexity exp(CE).
set -eu
dir=${1:?usage: report.sh DIR}
printf '%-28s %6s %10s %10s\n' model step 'CE (nats)' perplexity
for run in teacher student-kd student-data; do
    case $run in
    teacher) name='teacher (demo.gguf)' ;;
    student-kd) name='student, distilled (KD)' ;;
    student-data) name='student, data only' ;;
    esac
    grep '"valid_loss"' "$dir/$run.jsonl" | tail -n 1 |
        sed 's/.*"step":\([0-9]*\).*"valid_loss":\([-0-9.e+]*\).*/\1 \2/' |
        awk -v n="$name" '{ printf "%-28s %6d %10.4f %10.2f\n", n, $1, $2, exp($2) }'
done
