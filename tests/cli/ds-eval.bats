#!/usr/bin/env bats
# ds-eval: perplexity (checked against ds-run's logits), KL divergence, tasks,
# sharding and merging, thresholds, reports, errors.

setup() {
    load common
    cd "$BATS_TEST_TMPDIR"
}

EVALS=$BATS_TEST_DIRNAME/../data/evals

# The tiny V2-Lite model as F32 and as Q8_0, and a short text, once per file.
setup_file() {
    load common
    ds ds-convert -q "$DATA/tiny-v2lite" -o "$BATS_FILE_TMPDIR/f32.gguf"
    ds ds-quantize -q -t q8_0 "$BATS_FILE_TMPDIR/f32.gguf" -o "$BATS_FILE_TMPDIR/q8.gguf"
    head -c 2500 "$DATA/shakespeare-12k.txt" > "$BATS_FILE_TMPDIR/text.txt"
    tail -c 1500 "$DATA/shakespeare-12k.txt" > "$BATS_FILE_TMPDIR/other.txt"
    head -c 800 "$DATA/shakespeare-12k.txt" > "$BATS_FILE_TMPDIR/short.txt"
}

F32=$BATS_FILE_TMPDIR/f32.gguf
Q8=$BATS_FILE_TMPDIR/q8.gguf
TEXT=$BATS_FILE_TMPDIR/text.txt
SHORT=$BATS_FILE_TMPDIR/short.txt

# jq_num FILE FILTER
jq_num() {
    jq -r "$2" "$1"
}

@test "perplexity equals exp(mean nll) recomputed from ds-run --dump-logits" {
    local ctx=32 nwin=3 toks bos w win
    run -0 --separate-stderr ds ds-eval -m "$F32" --perplexity "$TEXT" -c $ctx --limit $nwin \
        --json r.json
    [[ $stderr == *"text: PPL = "*" +/- "*"(45 tokens, 3 windows)"* ]]
    mapfile -t toks < <(ds ds-run -m "$F32" --tokenize -f "$TEXT")
    bos=${toks[0]}
    : > nll.txt
    for ((w = 0; w < nwin; w++)); do
        win=("${toks[@]:w*ctx:ctx}")
        win[0]=$bos
        ds ds-run -m "$F32" --tokens "$(IFS=,; echo "${win[*]}")" --dump-logits l.f32
        od -An -v -f -w4 l.f32 | awk -v V=384 -v C=$ctx -v T="${win[*]}" '
            BEGIN { split(T, tok, " ") }
            { j = (NR - 1) % V; r = int((NR - 1) / V); x[j] = $1 + 0
              if (j == V - 1 && r >= C / 2 && r <= C - 2) {
                  m = x[0]; for (i = 1; i < V; i++) if (x[i] > m) m = x[i]
                  s = 0; for (i = 0; i < V; i++) s += exp(x[i] - m)
                  printf "%.17g\n", m + log(s) - x[tok[r + 2 + 0]]
              } }' >> nll.txt
    done
    [ "$(wc -l < nll.txt)" -eq 45 ]
    # od prints the logits to 7-8 digits: agreement to 1e-6 is what they allow
    read -r want want_se < <(awk '{ s += $1; s2 += $1 * $1; n++ }
        END { m = s / n; v = s2 / n - m * m; printf "%.17g %.17g\n", exp(m), exp(m) * sqrt(v / (n - 1)) }' nll.txt)
    got=$(jq_num r.json '.tasks[0].metrics.ppl.value')
    got_se=$(jq_num r.json '.tasks[0].metrics.ppl.stderr')
    echo "# ppl $got vs $want, stderr $got_se vs $want_se" >&3
    awk -v a="$got" -v b="$want" -v c="$got_se" -v d="$want_se" 'BEGIN {
        exit !((a - b) ^ 2 <= (1e-6 * b) ^ 2 && (c - d) ^ 2 <= (1e-5 * d) ^ 2) }'
    [ "$(jq_num r.json '.tasks[0].counts.n')" -eq 45 ]
}

@test "every printed number is the same at -T 1 and -T 2 and for any --batch" {
    local a
    run -0 --separate-stderr ds ds-eval -T 1 -m "$F32" --perplexity "$SHORT" -c 64 \
        "$EVALS/mc.jsonl" "$EVALS/gen.jsonl" -n 6
    a=$stderr
    [[ $a == *PPL* && $a == *acc_norm* && $a == *exact_match* ]]
    run -0 --separate-stderr ds ds-eval -T 2 -m "$F32" --perplexity "$SHORT" -c 64 \
        "$EVALS/mc.jsonl" "$EVALS/gen.jsonl" -n 6
    [ "$stderr" = "$a" ]
    run -0 --separate-stderr ds ds-eval -T 2 -b 5 -m "$F32" --perplexity "$SHORT" -c 64 \
        "$EVALS/mc.jsonl" "$EVALS/gen.jsonl" -n 6
    [ "$stderr" = "$a" ]
    ds ds-eval -T 1 -m "$F32" --perplexity "$TEXT" -c 32 --save-logits base.kld 2> /dev/null
    run -0 --separate-stderr ds ds-eval -T 1 -b 3 -m "$Q8" --kl-divergence base.kld
    a=$stderr
    run -0 --separate-stderr ds ds-eval -T 2 -m "$Q8" --kl-divergence base.kld
    [ "$stderr" = "$a" ]
}

@test "KL divergence: Q8_0 against F32 is small and positive; a model against itself is 0" {
    run -0 ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --save-logits base.kld
    [ -s base.kld ]
    [ "$(head -c 4 base.kld | od -An -tx1 | tr -d ' ')" = 28b52ffd ] # zstd
    run -0 --separate-stderr ds ds-eval -m "$Q8" --kl-divergence base.kld --json q.json
    echo "# $stderr" >&3
    [[ $stderr == *"kld = "*"same top = "*"delta_ppl = "*"ln_ppl_ratio = "* ]]
    jq -e '.tasks[0].metrics.kld.value > 0 and .tasks[0].metrics.kld.value < 0.05' q.json
    jq -e '.tasks[0].metrics.kld.stderr > 0' q.json
    jq -e '.tasks[0].metrics.same_top.value > 0.8 and .tasks[0].metrics.same_top.value <= 1' q.json
    jq -e '.tasks[0].metrics | has("delta_ppl") and has("ln_ppl_ratio") and has("ppl_base")' q.json
    run -0 --separate-stderr ds ds-eval -m "$F32" --kl-divergence base.kld --perplexity "$TEXT" \
        --json s.json
    [[ $stderr == *"kld = 0.000000 +/- 0.000000, same top = 100.000 +/- 0.000 %"* ]]
    [[ $stderr == *"delta_ppl = 0.000000 +/- 0.000000"* ]]
    jq -e '.tasks[0].metrics.kld.value < 1e-6 and .tasks[0].metrics.same_top.value == 1' s.json
    # the base's perplexity is the F32 run's
    [ "$(jq '.tasks[0].metrics.ppl_base.value' q.json)" = "$(jq '.tasks[0].metrics.ppl.value' s.json)" ]
}

@test "--cache-type q8_0: perplexity close to the f32 cache's, small positive KLD against it" {
    run -0 --separate-stderr ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --save-logits f.kld \
        --json f.json
    run -0 --separate-stderr ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --cache-type f32 \
        --json f2.json
    [ "$(jq '.tasks[0].metrics.ppl.value' f.json)" = "$(jq '.tasks[0].metrics.ppl.value' f2.json)" ]
    jq -e '.options.cache_type == "f32"' f2.json
    run -0 --separate-stderr ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --cache-type q8_0 \
        --json q.json
    jq -e '.options.cache_type == "q8_0"' q.json
    p=$(jq '.tasks[0].metrics.ppl.value' f.json)
    jq -e --argjson p "$p" '.tasks[0].metrics.ppl.value as $q |
        $q != $p and ($q / $p - 1 | fabs) < 0.02' q.json
    run -0 --separate-stderr ds ds-eval -m "$F32" --cache-type q8_0 --kl-divergence f.kld \
        --json k.json
    echo "# $stderr" >&3
    jq -e '.tasks[0].metrics.kld.value > 0 and .tasks[0].metrics.kld.value < 0.01' k.json
    jq -e '.tasks[0].metrics.same_top.value > 0.9' k.json
    [ "$(jq '.tasks[0].metrics.ppl.value' k.json)" = "$(jq '.tasks[0].metrics.ppl.value' q.json)" ]
    run -2 --separate-stderr ds ds-eval -m "$F32" --perplexity "$TEXT" --cache-type q4_0
    [[ $stderr == *"invalid value 'q4_0' for --cache-type"* ]]
}

@test "KL divergence: another text, another window size or a non-logits file is an error" {
    ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --save-logits "$BATS_FILE_TMPDIR/b.kld" 2> /dev/null
    run -1 --separate-stderr ds ds-eval -m "$Q8" --kl-divergence "$BATS_FILE_TMPDIR/b.kld" \
        --perplexity "$BATS_FILE_TMPDIR/other.txt"
    [[ $stderr == *"differ from those saved"* ]]
    run -1 --separate-stderr ds ds-eval -m "$Q8" --kl-divergence "$BATS_FILE_TMPDIR/b.kld" -c 16
    [[ $stderr == *"windows of 32 tokens"* ]]
    run -1 --separate-stderr ds ds-eval -m "$Q8" --kl-divergence "$EVALS/mc.jsonl"
    [[ $stderr == *"not a ds-eval logits file"* ]]
    assert_dir_empty
}

@test "multiple choice: acc and acc_norm from log-likelihoods that ds-run's logits confirm" {
    local q c full
    run -0 --separate-stderr ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --log-samples s.jsonl \
        --json r.json
    [[ $stderr == *"mc: acc = "*", acc_norm = "*"(5 items)"* ]]
    [ "$(wc -l < s.jsonl)" -eq 5 ]
    # acc is the count of items whose highest log-likelihood is the gold one
    want=$(jq -s '[.[] | select(.pred == .gold)] | length' s.jsonl)
    [ "$(jq '.tasks[0].counts.correct' r.json)" -eq "$want" ]
    jq -e --argjson w "$want" '.tasks[0].metrics.acc.value == $w / 5' r.json
    jq -s -e 'all(.[]; .pred == (.loglikelihoods | index(max)))' s.jsonl
    # item 2: " four" after "Two plus two is", from ds-run's logits
    q=$(ds ds-run -m "$F32" --tokenize -p "Two plus two is" | paste -sd,)
    c=$(ds ds-run -m "$F32" --tokenize -p " four" | tail -n +2 | paste -sd,)
    full="$q,$c"
    ds ds-run -m "$F32" --tokens "$full" --dump-logits l.f32
    nq=$(tr ',' '\n' <<< "$q" | wc -l)
    want=$(od -An -v -f -w4 l.f32 | awk -v V=384 -v Q="$nq" -v T="$full" '
        BEGIN { n = split(T, tok, ",") }
        { j = (NR - 1) % V; r = int((NR - 1) / V); x[j] = $1 + 0
          if (j == V - 1 && r >= Q - 1 && r < n - 1) {
              m = x[0]; for (i = 1; i < V; i++) if (x[i] > m) m = x[i]
              s = 0; for (i = 0; i < V; i++) s += exp(x[i] - m)
              ll += x[tok[r + 2]] - m - log(s)
          } }
        END { printf "%.17g\n", ll }')
    got=$(jq -r 'select(.index == 1) | .loglikelihoods[0]' s.jsonl)
    echo "# ll $got vs $want" >&3
    awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; exit !(d * d < 1e-12 * b * b) }'
}

@test "generation: the GSM8K test file runs end to end with --limit; gold is the number after ####" {
    run -0 --separate-stderr ds ds-eval -m "$F32" "$EVALS/gsm8k-test.jsonl" --limit 3 -n 8 \
        --log-samples s.jsonl --json r.json
    [[ $stderr == *"gsm8k-test: acc = "*"(3 items)"* ]]
    run -0 jq -r .gold s.jsonl
    assert_output $'18\n3\n70000'
    jq -e '.tasks[0].kind == "generation" and .tasks[0].counts.n == 3' r.json
    jq -e '.tasks[0].metrics | has("acc") and has("exact_match") and has("format")' r.json
    jq -e '.model.sha256 | test("^[0-9a-f]{64}$")' r.json
    [ "$(jq -r .model.sha256 r.json)" = "$(sha256sum "$F32" | cut -d' ' -f1)" ]
    jq -e '.options.limit == 3 and .options.n_predict == 8 and .shard == null' r.json
    [ -f "$EVALS/LICENSE-gsm8k" ]
}

@test "--log-samples writes one JSON line per item with prompt, output and score" {
    run -0 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" -n 4 --log-samples s.jsonl
    [ "$(wc -l < s.jsonl)" -eq 4 ]
    jq -s -e 'all(.[]; has("prompt") and has("output") and has("gold") and has("pred")
              and (.score | has("acc") and has("exact_match") and has("format")))' s.jsonl
    run -0 jq -r .line s.jsonl
    assert_output $'1\n2\n3\n4'
    [ "$(jq -r 'select(.index == 2) | .gold' s.jsonl)" = 8 ]
    [ "$(jq -r 'select(.index == 0) | .prompt' s.jsonl)" = $'Question: What is 2 + 3?\nAnswer:' ]
}

@test "--limit evaluates the first N items" {
    run -0 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --limit 2 --json r.json --log-samples s.jsonl
    jq -e '.tasks[0].counts.n == 2' r.json
    run -0 jq -r .line s.jsonl
    assert_output $'1\n2'
}

@test "--shots K puts the first K items of the shots file before the prompt" {
    run -0 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --limit 1 -n 2 --shots 1 \
        --shots-file "$EVALS/gen-shots.jsonl" --log-samples s.jsonl
    [ "$(jq -r .prompt s.jsonl)" = $'Question: What is 1 + 1?\nAnswer: 2\n\nQuestion: What is 2 + 3?\nAnswer:' ]
    run -0 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --limit 1 --shots 5 \
        --shots-file "$EVALS/mc-shots.jsonl" --log-samples m.jsonl
    [ "$(jq -r .prompt m.jsonl)" = $'Dogs say woof\n\nThe capital of France is' ]
    run -1 --separate-stderr ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --shots 1 \
        --shots-file "$EVALS/gen-shots.jsonl"
    [[ $stderr == *"generation items"* ]]
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --shots 1
}

@test "--chat applies the chat template; without it the plain prompt; r1 counts its <think>" {
    run -0 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --limit 1 -n 2 --chat --log-samples c.jsonl
    [[ $(jq -r .prompt c.jsonl) == *"<｜User｜>What is 2 + 3?<｜Assistant｜>" ]]
    run -0 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --limit 1 -n 2 --log-samples p.jsonl
    [[ $(jq -r .prompt p.jsonl) != *"<｜User｜>"* ]]
    run -0 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --limit 1 -n 2 --chat-template deepseek-r1 \
        --log-samples r.jsonl --json r.json
    jq -e '.prompt | endswith("<｜Assistant｜><think>\n")' r.jsonl
    jq -e '.options.chat == true and .options.chat_template == "deepseek-r1"' r.json
    run -0 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --limit 1 --chat --log-samples m.jsonl
    [[ $(jq -r .prompt m.jsonl) == *"<｜Assistant｜>" ]]
    run -2 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --system "x"
}

@test "sharded and merged equals unsharded: the same metrics, counts and sums, byte for byte" {
    local args=(-m "$F32" --perplexity "$SHORT" -c 64 "$EVALS/mc.jsonl" "$EVALS/gen.jsonl"
                -n 6 --seed 7 --temp 1.5)
    run -0 ds ds-eval "${args[@]}" --json whole.json
    for k in 1 2 3; do
        run -0 ds ds-eval "${args[@]}" --shard $k/3 --json part$k.json
        jq -e ".shard == {\"k\": $k, \"n\": 3}" part$k.json
    done
    run -0 --separate-stderr ds ds-eval --merge part3.json part1.json part2.json --json merged.json
    [[ $stderr == *"short: PPL = "* ]]
    [ "$(jq -S .tasks whole.json)" = "$(jq -S .tasks merged.json)" ]
    [ "$(jq -S .options whole.json)" = "$(jq -S .options merged.json)" ]
    jq -e '.shard == null' merged.json
    # the shards really split the work
    [ "$(jq '.tasks[1].counts.n' part1.json)" -lt "$(jq '.tasks[1].counts.n' whole.json)" ]
    # KL divergence too, from a base file of the first 4 windows
    run -0 ds ds-eval -m "$F32" --perplexity "$SHORT" -c 32 --limit 4 --save-logits b.kld
    run -0 ds ds-eval -m "$Q8" --kl-divergence b.kld --json kwhole.json
    jq -e '.tasks[0].counts.n_windows == 4' kwhole.json
    run -0 ds ds-eval -m "$Q8" --kl-divergence b.kld --shard 1/2 --json k1.json
    run -0 ds ds-eval -m "$Q8" --kl-divergence b.kld --shard 2/2 --json k2.json
    run -0 ds ds-eval --merge k1.json k2.json --json kmerged.json
    [ "$(jq -S .tasks kwhole.json)" = "$(jq -S .tasks kmerged.json)" ]
    # a shard twice, or one missing, is refused
    run -1 --separate-stderr ds ds-eval --merge part1.json part1.json part2.json
    [[ $stderr == *"given twice"* ]]
    run -1 ds ds-eval --merge part1.json part2.json
    run -1 ds ds-eval --merge "$EVALS/mc.jsonl"
}

@test "thresholds: an unmet --min or --max exits 3; JUnit has a failing testcase" {
    run -3 --separate-stderr ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --min acc=1.01 \
        --junit j.xml --json r.json
    [[ $stderr == *"mc: acc = "*" is below the threshold 1.01"* ]]
    [ -s r.json ]
    xmllint --noout j.xml
    [ "$(xmllint --xpath 'count(//testcase[@name="mc"]/failure)' j.xml)" -eq 1 ]
    run -0 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" "$EVALS/gen.jsonl" -n 2 --min mc:acc=0 \
        --min acc_norm=0 --junit j2.xml
    xmllint --noout j2.xml
    [ "$(xmllint --xpath 'count(//testcase)' j2.xml)" -eq 2 ]
    [ "$(xmllint --xpath 'count(//failure)' j2.xml)" -eq 0 ]
    run -3 ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --max ppl=1
    run -0 ds ds-eval -m "$F32" --perplexity "$TEXT" -c 32 --max ppl=1e9 --min nll=0
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --min bleu=1
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --min acc
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --min acc=x
    run -1 --separate-stderr ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --min kld=0
    [[ $stderr == *"no task has the metric"* ]]
}

@test "a malformed line is an error naming file:line; --skip-bad counts it" {
    run -1 --separate-stderr ds ds-eval -m "$F32" "$EVALS/bad.jsonl" --json r.json \
        --log-samples s.jsonl
    [[ $stderr == *"bad.jsonl':2: gold 5 is out of range (2 choices)"* ]]
    assert_dir_empty
    run -0 --separate-stderr ds ds-eval -m "$F32" "$EVALS/bad.jsonl" --skip-bad --json r.json
    [[ $stderr == *"skipped 2 malformed lines"* ]]
    [[ $stderr == *"(2 items, 2 malformed lines skipped)"* ]]
    jq -e '.tasks[0].counts.n == 2 and .tasks[0].counts.n_bad == 2' r.json
    printf '{"prompt": "x"}\n' > "$BATS_FILE_TMPDIR/noans.jsonl"
    run -1 --separate-stderr ds ds-eval -m "$F32" "$BATS_FILE_TMPDIR/noans.jsonl"
    [[ $stderr == *"noans.jsonl':1: generation needs an \"answer\""* ]]
    printf '\n\n{"query": "q", "choices": ["a"], "gold": 0}\n{"prompt": "p", "answer": "1"}\n' \
        > "$BATS_FILE_TMPDIR/mixed.jsonl"
    run -1 --separate-stderr ds ds-eval -m "$F32" "$BATS_FILE_TMPDIR/mixed.jsonl"
    [[ $stderr == *"mixed.jsonl':4: a generation item in a file of multiple_choice items"* ]]
}

@test "usage errors exit 2; a missing file or too short a text exits 1" {
    run -2 ds ds-eval "$EVALS/mc.jsonl"
    run -2 ds ds-eval -m "$F32"
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --shard 3/2
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --shard 1
    run -2 ds ds-eval -m "$F32" --perplexity "$TEXT" --save-logits x.kld --shard 1/2
    run -2 ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --save-logits x.kld
    run -2 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --extract '(unclosed'
    run -2 ds ds-eval -m "$F32" "$EVALS/gen.jsonl" --temp 0.5
    run -2 ds ds-eval --merge
    run -2 ds ds-eval --merge -m "$F32" a.json
    cp "$EVALS/mc.jsonl" "$BATS_FILE_TMPDIR/in.jsonl"
    run -2 ds ds-eval -m "$F32" "$BATS_FILE_TMPDIR/in.jsonl" --json "$BATS_FILE_TMPDIR/in.jsonl"
    cmp "$EVALS/mc.jsonl" "$BATS_FILE_TMPDIR/in.jsonl"
    run -1 ds ds-eval -m "$F32" missing.jsonl
    printf 'short' > "$BATS_FILE_TMPDIR/short.txt"
    run -1 --separate-stderr ds ds-eval -m "$F32" --perplexity "$BATS_FILE_TMPDIR/short.txt"
    [[ $stderr == *"less than one window"* ]]
    assert_dir_empty
}

@test "--json - writes the report to standard output" {
    run -0 --separate-stderr ds ds-eval -m "$F32" "$EVALS/mc.jsonl" --limit 1 --json -
    jq -e '.tool == "ds-eval" and (.tasks | length) == 1' <<< "$output"
}
