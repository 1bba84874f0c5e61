/* test_eval.c - exact sums, perplexity windows, the logits file and KL
 * divergence, task files, scoring rules, reports and their merge. */
#include <stdint.h>
#include <unistd.h>

#include "ds.h"
#include "test.h"

static const char *datadir(void)
{
    const char *d = getenv("DS_TESTDATA");
    return d ? d : "tests/data";
}

static char *data_path(const char *rel)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", datadir(), rel);
    return buf[k];
}

TEST(sum_is_exact_and_order_free)
{
    struct ds_eval_sum a = {0, 0}, b = {0, 0}, c = {0, 0}, d = {0, 0};
    double x[6] = {1e-3, 12.5, -3.25, 1.0 / 3.0, 7e5, -2e-7};
    char hex[33];
    struct ds_eval_sum p;
    for (int i = 0; i < 6; i++)
        ds_eval_sum_add(&a, x[i]);
    for (int i = 5; i >= 0; i--)
        ds_eval_sum_add(&b, x[i]);
    for (int i = 0; i < 6; i += 2)
        ds_eval_sum_add(&c, x[i]);
    for (int i = 1; i < 6; i += 2)
        ds_eval_sum_add(&d, x[i]);
    ds_eval_sum_merge(&c, &d);
    ASSERT(a.hi == b.hi && a.lo == b.lo);
    ASSERT(a.hi == c.hi && a.lo == c.lo);
    ASSERT(fabs(ds_eval_sum_value(&a) - (1e-3 + 12.5 - 3.25 + 1.0 / 3.0 + 7e5 - 2e-7)) < 1e-9);
    ds_eval_sum_format(&a, hex);
    ASSERT(strlen(hex) == 32);
    ASSERT(ds_eval_sum_parse(hex, &p) && p.hi == a.hi && p.lo == a.lo);
    ASSERT(!ds_eval_sum_parse("12", &p));
    ASSERT(!ds_eval_sum_parse("0000000000000000000000000000000g", &p));
    memset(&a, 0, sizeof(a));
    ds_eval_sum_add(&a, -2.5);
    ASSERT(ds_eval_sum_value(&a) == -2.5);
}

TEST(metrics_of_fractions)
{
    struct ds_eval_stats s;
    struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
    size_t n;
    ds_eval_stats_init(&s, DS_EVAL_MC);
    s.n = 4;
    s.correct = 1;
    s.correct_norm = 2;
    n = ds_eval_metrics(&s, m, DS_EVAL_MAX_METRICS);
    ASSERT_EQ_INT(n, 2);
    ASSERT(!strcmp(m[0].name, "acc") && m[0].value == 0.25);
    ASSERT(fabs(m[0].stderr_ - sqrt(0.25 * 0.75 / 3)) < 1e-15);
    ASSERT(!strcmp(m[1].name, "acc_norm") && m[1].value == 0.5);
    ds_eval_stats_init(&s, DS_EVAL_GEN);
    n = ds_eval_metrics(&s, m, DS_EVAL_MAX_METRICS);
    ASSERT_EQ_INT(n, 3);
    ASSERT(isnan(m[0].value));
    ASSERT(ds_eval_metric_known("kld") && !ds_eval_metric_known("bleu"));
}

/* A window of 6 tokens over a vocabulary of 4: positions 3 and 4 are scored. */
TEST(perplexity_window_by_hand)
{
    const int32_t win[6] = {0, 1, 2, 3, 1, 2};
    float logits[6 * 4];
    struct ds_eval_stats s;
    struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
    double want = 0, want2 = 0;
    for (int i = 0; i < 24; i++)
        logits[i] = (float)((i * 7) % 5) * 0.5f;
    ds_eval_stats_init(&s, DS_EVAL_PPL);
    ASSERT_EQ_INT(ds_eval_ppl_scored(6), 2);
    ASSERT_EQ_INT(ds_eval_ppl_windows(13, 6), 2);
    ASSERT_EQ_INT(ds_eval_ppl_window(&s, logits, 4, win, 6, NULL, NULL), DS_OK);
    ASSERT_EQ_INT(s.n, 2);
    for (int j = 3; j < 5; j++) {
        const float *r = logits + j * 4;
        double lse = log(exp(r[0]) + exp(r[1]) + exp(r[2]) + exp(r[3]));
        double nll = lse - r[win[j + 1]];
        want += nll;
        want2 += nll * nll;
    }
    ds_eval_metrics(&s, m, DS_EVAL_MAX_METRICS);
    ASSERT(fabs(m[1].value - want / 2) < 1e-9);
    ASSERT(fabs(m[0].value - exp(want / 2)) < 1e-9 * exp(want / 2));
    {
        double mean = want / 2, var = want2 / 2 - mean * mean;
        ASSERT(fabs(m[1].stderr_ - sqrt(var / 1)) < 1e-9);
    }
}

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 33) % 20000) / 1000.0f - 10.0f;
}

TEST(logits_file_and_kl_divergence)
{
    enum { V = 50, N = 8, W = 2 };
    int32_t tokens[W * N];
    float base[N * V], other[N * V];
    uint64_t seed = 7;
    char path[] = "/tmp/test_eval_XXXXXX";
    int fd = mkstemp(path);
    struct ds_eval_logits *f = NULL;
    struct ds_eval_stats s1, s2, s3;
    struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
    double kl_want = 0;
    int64_t nt;
    ASSERT(fd >= 0);
    close(fd);
    for (int i = 0; i < W * N; i++)
        tokens[i] = (i * 13) % V;
    for (int i = 0; i < N * V; i++) {
        base[i] = frand(&seed);
        other[i] = base[i] + 0.3f * frand(&seed);
    }
    ds_eval_stats_init(&s1, DS_EVAL_PPL);
    ASSERT_EQ_INT(ds_eval_logits_create(path, V, N, W, tokens, W * N, &f), DS_OK);
    for (int w = 0; w < W; w++)
        ASSERT_EQ_INT(ds_eval_ppl_window(&s1, base, V, tokens + w * N, N, f, NULL), DS_OK);
    ASSERT_EQ_INT(ds_eval_logits_commit(f), DS_OK);
    ds_eval_logits_free(f);

    /* the same logits: KL ~ 0, same top everywhere, delta ppl 0 */
    ASSERT_EQ_INT(ds_eval_logits_open(path, V, &f), DS_OK);
    ASSERT_EQ_INT(ds_eval_logits_n_ctx(f), N);
    ASSERT_EQ_INT(ds_eval_logits_n_windows(f), W);
    ASSERT(!memcmp(ds_eval_logits_tokens(f, &nt), tokens, sizeof(tokens)) && nt == W * N);
    ds_eval_stats_init(&s2, DS_EVAL_PPL);
    for (int w = 0; w < W; w++)
        ASSERT_EQ_INT(ds_eval_ppl_window(&s2, base, V, tokens + w * N, N, NULL, f), DS_OK);
    ds_eval_logits_free(f);
    ASSERT(s2.kld && s2.same_top == s2.n);
    ds_eval_metrics(&s2, m, DS_EVAL_MAX_METRICS);
    ASSERT(!strcmp(m[2].name, "kld") && m[2].value < 1e-6 && m[2].value > -1e-9);
    ASSERT(!strcmp(m[5].name, "delta_ppl") && fabs(m[5].value) < 1e-12);

    /* other logits: KL as computed directly, to the quantization error */
    for (int w = 0; w < W; w++)
        for (int j = N / 2; j < N - 1; j++) {
            const float *a = base + j * V, *b = other + j * V;
            double la = ds_eval_logsumexp(a, V), lb = ds_eval_logsumexp(b, V);
            for (int i = 0; i < V; i++)
                kl_want += exp(a[i] - la) * ((a[i] - la) - (b[i] - lb));
        }
    kl_want /= (double)s1.n;
    ASSERT_EQ_INT(ds_eval_logits_open(path, V, &f), DS_OK);
    ds_eval_stats_init(&s3, DS_EVAL_PPL);
    ASSERT_EQ_INT(ds_eval_logits_skip_window(f), DS_OK);
    ASSERT_EQ_INT(ds_eval_ppl_window(&s3, other, V, tokens + N, N, NULL, f), DS_OK);
    ds_eval_logits_free(f);
    ASSERT_EQ_INT(s3.n, 3);
    ds_eval_stats_init(&s3, DS_EVAL_PPL);
    ASSERT_EQ_INT(ds_eval_logits_open(path, V, &f), DS_OK);
    for (int w = 0; w < W; w++)
        ASSERT_EQ_INT(ds_eval_ppl_window(&s3, other, V, tokens + w * N, N, NULL, f), DS_OK);
    ds_eval_logits_free(f);
    ds_eval_metrics(&s3, m, DS_EVAL_MAX_METRICS);
    ASSERT_MSG(fabs(m[2].value - kl_want) < 1e-3 * kl_want + 1e-6, "kld %g want %g", m[2].value,
               kl_want);
    ASSERT(m[2].value > 1e-3);

    /* the vocabulary must match; other files are refused */
    ASSERT_EQ_INT(ds_eval_logits_open(path, V + 1, &f), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "vocabulary"));
    ASSERT_EQ_INT(ds_eval_logits_open(data_path("evals/mc.jsonl"), V, &f), DS_ERR_FORMAT);
    unlink(path);
}

TEST(task_files)
{
    struct ds_eval_task *t = NULL;
    ASSERT_EQ_INT(ds_eval_task_load(data_path("evals/mc.jsonl"), false, &t), DS_OK);
    ASSERT_EQ_INT(t->kind, DS_EVAL_MC);
    ASSERT_EQ_INT(t->n_items, 5);
    ASSERT_EQ_INT(t->items[3].line, 5); /* a blank line before it */
    ASSERT(!strcmp(t->items[3].prompt, "Water freezes at"));
    ASSERT_EQ_INT(t->items[2].n_choices, 4);
    ASSERT_EQ_INT(t->items[2].gold, 1);
    ds_eval_task_free(t);
    ASSERT_EQ_INT(ds_eval_task_load(data_path("evals/gen.jsonl"), false, &t), DS_OK);
    ASSERT_EQ_INT(t->kind, DS_EVAL_GEN);
    ASSERT(!strcmp(t->items[3].answer, "6"));
    ds_eval_task_free(t);
    ASSERT_EQ_INT(ds_eval_task_load(data_path("evals/bad.jsonl"), false, &t), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "bad.jsonl':2: gold 5 is out of range"));
    ASSERT_EQ_INT(ds_eval_task_load(data_path("evals/bad.jsonl"), true, &t), DS_OK);
    ASSERT_EQ_INT(t->n_items, 2);
    ASSERT_EQ_INT(t->n_bad, 2);
    ASSERT(strstr(t->first_bad, ":2:"));
    ds_eval_task_free(t);
}

TEST(prompts)
{
    struct ds_eval_item shot = {.kind = DS_EVAL_GEN, .prompt = "1+1?", .answer = "2"};
    struct ds_eval_item it = {.kind = DS_EVAL_GEN, .prompt = "2+2?", .answer = "4"};
    char *p;
    ASSERT_EQ_INT(ds_eval_build_prompt(&it, &shot, 1, false, &p), DS_OK);
    ASSERT(!strcmp(p, "Question: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer:"));
    free(p);
    ASSERT_EQ_INT(ds_eval_build_prompt(&it, &shot, 1, true, &p), DS_OK);
    ASSERT(!strcmp(p, "Question: 1+1?\nAnswer: 2\n\n2+2?"));
    free(p);
    {
        char *ch[2] = {" a", " b"};
        struct ds_eval_item mc = {.kind = DS_EVAL_MC, .prompt = "Q", .choices = ch,
                                  .n_choices = 2, .gold = 1};
        ASSERT_EQ_INT(ds_eval_build_prompt(&mc, &mc, 1, false, &p), DS_OK);
        ASSERT(!strcmp(p, "Q b\n\nQ"));
        free(p);
        ASSERT_EQ_INT(ds_eval_build_prompt(&mc, &shot, 1, false, &p), DS_ERR_ARG);
    }
}

TEST(scoring_rules)
{
    struct ds_eval_scorer *s = NULL;
    struct ds_eval_gen_score g;
    double v;
    char *n = ds_eval_normalize("  The   Answer Is PARIS. ");
    ASSERT(!strcmp(n, "the answer is paris"));
    free(n);
    n = ds_eval_normalize("$42");
    ASSERT(!strcmp(n, "42"));
    free(n);
    ASSERT(ds_eval_parse_number(" $1,234.50 ", &v) && v == 1234.5);
    ASSERT(ds_eval_parse_number("18.", &v) && v == 18);
    ASSERT(!ds_eval_parse_number("eighteen", &v));
    ASSERT(ds_eval_numbers_equal(18, 18.0000001) && !ds_eval_numbers_equal(18, 18.1));
    ASSERT(ds_eval_format_reward("<think>\nsteps\n</think>\n42"));
    ASSERT(ds_eval_format_reward("  <think>x</think> y"));
    ASSERT(!ds_eval_format_reward("<think>x</think>  "));
    ASSERT(!ds_eval_format_reward("42"));
    ASSERT(!ds_eval_format_reward("<think>a</think><think>b</think> c"));

    ASSERT_EQ_INT(ds_eval_scorer_new(NULL, NULL, &s), DS_OK);
    ASSERT_EQ_INT(ds_eval_score_gen(s, " 3 + 5 = 8, so #### 8.", "blah\n#### 8", NULL, &g),
                  DS_OK);
    ASSERT(!strcmp(g.gold, "8") && !strcmp(g.pred, "8") && g.correct && g.exact && !g.format);
    ds_eval_gen_score_release(&g);
    ASSERT_EQ_INT(ds_eval_score_gen(s, "first 3, then 1,200", "1200", NULL, &g), DS_OK);
    ASSERT(!strcmp(g.pred, "1,200") && g.correct && !g.exact);
    ds_eval_gen_score_release(&g);
    ASSERT_EQ_INT(ds_eval_score_gen(s, "reasoning 7\n</think>\nThe answer is 9", "9", "<think>\n",
                                    &g), DS_OK);
    ASSERT(g.correct && g.format);
    ds_eval_gen_score_release(&g);
    ASSERT_EQ_INT(ds_eval_score_gen(s, "\xff\xfe 12 \xc3", "12", NULL, &g), DS_OK);
    ASSERT(!strcmp(g.pred, "12") && g.correct); /* invalid UTF-8 around the answer */
    ds_eval_gen_score_release(&g);
    ASSERT_EQ_INT(ds_eval_score_gen(s, " Paris.", "paris", NULL, &g), DS_OK);
    ASSERT(g.exact && g.correct && !g.numeric);
    ds_eval_gen_score_release(&g);
    ds_eval_scorer_free(s);

    ASSERT_EQ_INT(ds_eval_scorer_new("answer: (\\w+)", NULL, &s), DS_OK);
    ASSERT_EQ_INT(ds_eval_score_gen(s, "answer: no, answer: yes", "Yes", NULL, &g), DS_OK);
    ASSERT(!strcmp(g.pred, "yes") && g.correct);
    ds_eval_gen_score_release(&g);
    ds_eval_scorer_free(s);
    ASSERT_EQ_INT(ds_eval_scorer_new("(unclosed", NULL, &s), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "(unclosed"));
}

/* Every GSM8K test line: the gold is the number after "####", and the
 * reference solution scored as an output is correct. */
TEST(gsm8k_gold_extraction)
{
    struct ds_eval_task *t = NULL;
    struct ds_eval_scorer *s = NULL;
    size_t ok = 0;
    ASSERT_EQ_INT(ds_eval_task_load(data_path("evals/gsm8k-test.jsonl"), false, &t), DS_OK);
    ASSERT_EQ_INT(t->n_items, 1319);
    ASSERT_EQ_INT(ds_eval_scorer_new(NULL, NULL, &s), DS_OK);
    for (size_t i = 0; i < t->n_items; i++) {
        struct ds_eval_gen_score g;
        double v;
        ASSERT_EQ_INT(ds_eval_score_gen(s, t->items[i].answer, t->items[i].answer, NULL, &g),
                      DS_OK);
        ok += g.correct && ds_eval_parse_number(g.gold, &v);
        ds_eval_gen_score_release(&g);
    }
    ASSERT_EQ_INT(ok, t->n_items);
    {
        struct ds_eval_gen_score g;
        ASSERT_EQ_INT(ds_eval_score_gen(s, "x", t->items[0].answer, NULL, &g), DS_OK);
        ASSERT(!strcmp(g.gold, "18") && !g.correct);
        ds_eval_gen_score_release(&g);
    }
    ds_eval_scorer_free(s);
    ds_eval_task_free(t);
}

TEST(mc_pick_and_shards)
{
    double ll[3] = {-10, -6, -9};
    size_t len[3] = {10, 2, 30}, b, bn;
    ds_eval_mc_pick(ll, len, 3, &b, &bn);
    ASSERT_EQ_INT(b, 1);
    ASSERT_EQ_INT(bn, 2);
    ASSERT(ds_eval_in_shard(4, 2, 3) && !ds_eval_in_shard(4, 1, 3) && ds_eval_in_shard(4, 1, 0));
}

TEST(reports_roundtrip_and_merge)
{
    struct ds_eval_report r[2], whole, merged, back;
    struct ds_eval_stats s[2], all;
    char *a = NULL, *b = NULL;
    for (int k = 0; k < 2; k++) {
        ds_eval_report_init(&r[k]);
        ds_eval_stats_init(&s[k], DS_EVAL_PPL);
        ds_eval_sum_add(&s[k].nll, 1.5 + k);
        ds_eval_sum_add(&s[k].nll2, (1.5 + k) * (1.5 + k));
        s[k].n = 1;
        s[k].n_windows = 1;
        r[k].options = strdup("{\"ctx\":8}");
        r[k].model_sha256 = strdup("ab");
        r[k].shard_k = k + 1;
        r[k].shard_n = 2;
        ASSERT_EQ_INT(ds_eval_report_add(&r[k], "text", "text.txt", &s[k]), DS_OK);
    }
    all = s[0];
    ASSERT_EQ_INT(ds_eval_stats_merge(&all, &s[1]), DS_OK);
    ds_eval_report_init(&whole);
    whole.options = strdup("{\"ctx\":8}");
    whole.model_sha256 = strdup("ab");
    ASSERT_EQ_INT(ds_eval_report_add(&whole, "text", "text.txt", &all), DS_OK);
    ASSERT_EQ_INT(ds_eval_report_merge(r, 2, &merged), DS_OK);
    ASSERT_EQ_INT(ds_eval_report_json(&whole, &a), DS_OK);
    ASSERT_EQ_INT(ds_eval_report_json(&merged, &b), DS_OK);
    ASSERT(!strcmp(a, b));
    ASSERT_EQ_INT(ds_eval_report_parse(a, "a.json", &back), DS_OK);
    free(b);
    ASSERT_EQ_INT(ds_eval_report_json(&back, &b), DS_OK);
    ASSERT(!strcmp(a, b));
    free(a);
    free(b);
    ds_eval_report_release(&back);
    /* a shard given twice, or a missing one, is refused */
    r[1].shard_k = 1;
    ASSERT_EQ_INT(ds_eval_report_merge(r, 2, &back), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "twice"));
    ASSERT_EQ_INT(ds_eval_report_merge(r, 1, &back), DS_ERR_ARG);
    ASSERT_EQ_INT(ds_eval_report_parse("{\"tool\":\"x\"}", "x.json", &back), DS_ERR_FORMAT);
    ds_eval_report_release(&merged);
    ds_eval_report_release(&whole);
    ds_eval_report_release(&r[0]);
    ds_eval_report_release(&r[1]);
}

TEST(sha256_vectors)
{
    uint8_t d[32];
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad};
    static const uint8_t empty[4] = {0xe3, 0xb0, 0xc4, 0x42};
    ds_sha256("abc", 3, d);
    ASSERT(!memcmp(d, abc, 32));
    ds_sha256("", 0, d);
    ASSERT(!memcmp(d, empty, 4));
    {
        /* 56 bytes: the padding spills into a second block */
        const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        static const uint8_t want[4] = {0x24, 0x8d, 0x6a, 0x61};
        ds_sha256(m, strlen(m), d);
        ASSERT(!memcmp(d, want, 4));
    }
}

int main(void)
{
    RUN(sum_is_exact_and_order_free);
    RUN(metrics_of_fractions);
    RUN(perplexity_window_by_hand);
    RUN(logits_file_and_kl_divergence);
    RUN(task_files);
    RUN(prompts);
    RUN(scoring_rules);
    RUN(gsm8k_gold_extraction);
    RUN(mc_pick_and_shards);
    RUN(reports_roundtrip_and_merge);
    RUN(sha256_vectors);
    return test_report();
}
