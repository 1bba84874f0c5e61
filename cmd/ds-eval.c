/* ds-eval - perplexity, KL divergence and JSONL tasks, with reports and
 * thresholds for CI. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_MODEL = DS_OPT_TOOL,
    OPT_PERPLEXITY,
    OPT_KLD,
    OPT_SAVE_LOGITS,
    OPT_CTX,
    OPT_BATCH,
    OPT_CACHE_TYPE,
    OPT_SHOTS,
    OPT_SHOTS_FILE,
    OPT_CHAT,
    OPT_CHAT_TEMPLATE,
    OPT_SYSTEM,
    OPT_N_PREDICT,
    OPT_TEMP,
    OPT_SEED,
    OPT_STOP,
    OPT_EXTRACT,
    OPT_GOLD_REGEX,
    OPT_LIMIT,
    OPT_SHARD,
    OPT_SKIP_BAD,
    OPT_JSON,
    OPT_JUNIT,
    OPT_LOG_SAMPLES,
    OPT_MIN,
    OPT_MAX,
    OPT_MERGE,
};

static const struct ds_opt options[] = {
    {OPT_MODEL, 'm', "model", "FILE", "the model (GGUF)", NULL, "file", false},
    {OPT_PERPLEXITY, 0, "perplexity", "FILE", "perplexity of the text in FILE", NULL, "file",
     false},
    {OPT_KLD, 0, "kl-divergence", "FILE",
     "KL divergence from the base log-probabilities in FILE (from --save-logits)", NULL, "file",
     false},
    {OPT_SAVE_LOGITS, 0, "save-logits", "FILE",
     "save the log-probabilities of --perplexity to FILE (zstd) for --kl-divergence", NULL,
     "file", false},
    {OPT_CTX, 'c', "ctx", "N", "context size: the perplexity window, the task context",
     "perplexity 512, tasks 4096 (at most the model's)", NULL, false},
    {OPT_BATCH, 'b', "batch", "N",
     "perplexity: tokens per forward call within a window (the numbers do not change)",
     "the whole window", NULL, false},
    {OPT_CACHE_TYPE, 0, "cache-type", "TYPE",
     "store the KV cache as f32 or q8_0 (8 bits, 3.8x smaller)", "f32", "f32|q8_0", false},
    {OPT_SHOTS, 0, "shots", "K", "prepend the first K items of --shots-file as examples", "0",
     NULL, false},
    {OPT_SHOTS_FILE, 0, "shots-file", "FILE", "JSONL file of few-shot examples", NULL, "file",
     false},
    {OPT_CHAT, 0, "chat", NULL, "apply the model's chat template to the prompts", NULL, NULL,
     false},
    {OPT_CHAT_TEMPLATE, 0, "chat-template", "NAME",
     "chat template instead of the model's: deepseek-v2, deepseek-v3, deepseek-r1", NULL,
     "deepseek-v2|deepseek-v3|deepseek-r1", false},
    {OPT_SYSTEM, 0, "system", "TEXT", "system text for --chat", NULL, NULL, false},
    {OPT_N_PREDICT, 'n', "n-predict", "N", "generate at most N tokens per item", "256", NULL,
     false},
    {OPT_TEMP, 0, "temp", "T", "sampling temperature for --seed", "0.8", NULL, false},
    {OPT_SEED, 's', "seed", "N", "sample generations with this seed instead of greedy",
     "greedy", NULL, false},
    {OPT_STOP, 0, "stop", "STR", "end a generation before STR (repeatable)",
     "'Question:' without --chat", NULL, false},
    {OPT_EXTRACT, 0, "extract", "REGEX", "PCRE2 pattern extracting the answer from the output",
     "automatic", NULL, false},
    {OPT_GOLD_REGEX, 0, "gold-regex", "REGEX",
     "PCRE2 pattern extracting the gold answer from \"answer\"", "'####\\s*(.+)'", NULL, false},
    {OPT_LIMIT, 0, "limit", "N", "evaluate the first N items (perplexity: windows) of each task",
     "all", NULL, false},
    {OPT_SHARD, 0, "shard", "K/N", "evaluate the items i with i mod N = K-1 (K in 1..N)", NULL,
     NULL, false},
    {OPT_SKIP_BAD, 0, "skip-bad", NULL, "skip and count malformed task lines instead of failing",
     NULL, NULL, false},
    {OPT_JSON, 0, "json", "FILE", "write the report as JSON ('-': standard output)", NULL,
     "file", false},
    {OPT_JUNIT, 0, "junit", "FILE", "write a JUnit XML report, one testcase per task", NULL,
     "file", false},
    {OPT_LOG_SAMPLES, 0, "log-samples", "FILE",
     "write each item's prompt, output and score as JSONL", NULL, "file", false},
    {OPT_MIN, 0, "min", "[TASK:]METRIC=V", "exit 3 unless METRIC >= V (repeatable)", NULL, NULL,
     false},
    {OPT_MAX, 0, "max", "[TASK:]METRIC=V", "exit 3 unless METRIC <= V (repeatable)", NULL, NULL,
     false},
    {OPT_MERGE, 0, "merge", NULL, "merge the shard reports given as operands into one", NULL,
     NULL, false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

#define MAX_STOPS 16
#define MAX_THRESHOLDS 64

struct threshold {
    char task[256]; /* "" for every task */
    char metric[64];
    double value;
    bool is_min;
    bool used;
};

struct ev {
    struct ds_cli c;
    const char *model_path, *ppl_file, *kld_file, *save_file, *shots_file, *chat_template,
        *system, *extract, *gold_re, *json, *junit, *log_samples;
    const char *stops[MAX_STOPS];
    int n_stops;
    long long n_ctx, batch, shots, n_predict, limit;
    int shard_k, shard_n;
    double temp;
    bool chat, seed_set, skip_bad, merge, temp_set;
    uint64_t seed;
    struct ds_ctx_params cp;
    struct threshold thr[MAX_THRESHOLDS];
    int n_thr;
    /* run state */
    struct ds_model *model;
    struct ds_tokenizer *tok;
    struct ds_ctx *ctx;
    int64_t ctx_size, ppl_ctx, max_ctx, n_vocab; /* ctx_size: tasks */
    enum ds_chat_template tmpl;
    struct ds_writer *samples;
    struct ds_eval_report report;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static noreturn void oom(const struct ds_cli *c)
{
    ds_cli_error(c, "out of memory");
    exit(DS_EXIT_FAILURE);
}

static void parse_threshold(struct ev *e, const char *arg, bool is_min)
{
    const char *opt = is_min ? "--min" : "--max";
    const char *eq = strrchr(arg, '='), *colon;
    struct threshold *t;
    char *end;
    size_t ml;
    if (e->n_thr == MAX_THRESHOLDS)
        ds_cli_usage_error(&e->c, "at most %d thresholds", MAX_THRESHOLDS);
    t = &e->thr[e->n_thr];
    memset(t, 0, sizeof(*t));
    if (!eq)
        ds_cli_usage_error(&e->c, "invalid value '%s' for %s (METRIC=VALUE)", arg, opt);
    colon = memchr(arg, ':', (size_t)(eq - arg));
    if (colon) {
        if ((size_t)(colon - arg) >= sizeof(t->task) || colon == arg)
            ds_cli_usage_error(&e->c, "invalid task name in '%s' for %s", arg, opt);
        memcpy(t->task, arg, (size_t)(colon - arg));
        colon++;
    } else {
        colon = arg;
    }
    ml = (size_t)(eq - colon);
    if (ml == 0 || ml >= sizeof(t->metric))
        ds_cli_usage_error(&e->c, "invalid value '%s' for %s (METRIC=VALUE)", arg, opt);
    memcpy(t->metric, colon, ml);
    if (!ds_eval_metric_known(t->metric))
        ds_cli_usage_error(&e->c, "unknown metric '%s' in %s (ppl, nll, kld, same_top, "
                                  "ppl_base, delta_ppl, ln_ppl_ratio, acc, acc_norm, "
                                  "exact_match, format)", t->metric, opt);
    errno = 0;
    t->value = strtod(eq + 1, &end);
    if (!eq[1] || *end || errno || !isfinite(t->value))
        ds_cli_usage_error(&e->c, "invalid number in '%s' for %s", arg, opt);
    t->is_min = is_min;
    e->n_thr++;
}

/* ---- outputs ---------------------------------------------------------------------------- */

static void write_text(const struct ev *e, const char *path, const char *text)
{
    struct ds_writer *w = NULL;
    ds_err err = ds_writer_open(&w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0);
    if (!err)
        err = ds_writer_write(w, text, strlen(text));
    if (!err)
        err = ds_writer_commit(w);
    ds_writer_free(w);
    if (err)
        ds_cli_fail(&e->c, err);
}

static void sample_line(struct ev *e, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    ds_err err;
    cJSON_Delete(o);
    if (!s)
        oom(&e->c);
    err = ds_writer_write(e->samples, s, strlen(s));
    if (!err)
        err = ds_writer_write(e->samples, "\n", 1);
    cJSON_free(s);
    if (err)
        ds_cli_fail(&e->c, err);
}

/* A --log-samples line with the fields every item has. */
static cJSON *sample_new(const struct ev *e, const char *task, size_t index,
                         const struct ds_eval_item *it, const char *prompt, const char *output)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        oom(&e->c);
    cJSON_AddStringToObject(o, "task", task);
    cJSON_AddNumberToObject(o, "index", (double)index);
    cJSON_AddNumberToObject(o, "line", (double)it->line);
    cJSON_AddStringToObject(o, "prompt", prompt);
    cJSON_AddStringToObject(o, "output", output);
    return o;
}

static void xml_escaped(struct ds_cli *c, FILE *f, const char *s)
{
    (void)c;
    for (; *s; s++)
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n')
                fputc('?', f);
            else
                fputc(*s, f);
        }
}

/* Checks the thresholds, prints unmet ones, and writes the JUnit report.
 * Returns the number of unmet thresholds. */
static int check_thresholds(struct ev *e)
{
    const struct ds_eval_report *r = &e->report;
    char *xml = NULL;
    size_t xml_len = 0;
    FILE *x = e->junit ? open_memstream(&xml, &xml_len) : NULL;
    int failed = 0, failed_tasks = 0;
    if (e->junit && !x)
        oom(&e->c);
    for (size_t i = 0; i < r->n_tasks; i++) {
        struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
        size_t nm = ds_eval_metrics(&r->tasks[i].st, m, DS_EVAL_MAX_METRICS);
        bool task_failed = false;
        for (int k = 0; k < e->n_thr; k++) {
            struct threshold *t = &e->thr[k];
            if (t->task[0] && strcmp(t->task, r->tasks[i].name))
                continue;
            for (size_t j = 0; j < nm; j++) {
                if (strcmp(m[j].name, t->metric))
                    continue;
                t->used = true;
                if (!(t->is_min ? m[j].value >= t->value : m[j].value <= t->value)) {
                    ds_cli_warn(&e->c, "%s: %s = %.6f is %s the threshold %g", r->tasks[i].name,
                                m[j].name, m[j].value, t->is_min ? "below" : "above", t->value);
                    failed++;
                    task_failed = true;
                }
            }
        }
        failed_tasks += task_failed;
    }
    for (int k = 0; k < e->n_thr; k++)
        if (!e->thr[k].used) {
            ds_cli_error(&e->c, "no task has the metric of the threshold '%s%s%s'",
                         e->thr[k].task, e->thr[k].task[0] ? ":" : "", e->thr[k].metric);
            exit(DS_EXIT_FAILURE);
        }
    if (!x)
        return failed;
    fprintf(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(x, "<testsuites name=\"ds-eval\" tests=\"%zu\" failures=\"%d\">\n", r->n_tasks,
            failed_tasks);
    fprintf(x, "  <testsuite name=\"ds-eval\" tests=\"%zu\" failures=\"%d\" errors=\"0\" "
               "time=\"%.3f\">\n", r->n_tasks, failed_tasks, r->wall_s);
    for (size_t i = 0; i < r->n_tasks; i++) {
        struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
        size_t nm = ds_eval_metrics(&r->tasks[i].st, m, DS_EVAL_MAX_METRICS);
        fputs("    <testcase classname=\"ds-eval\" name=\"", x);
        xml_escaped(&e->c, x, r->tasks[i].name);
        fputs("\">\n", x);
        for (int k = 0; k < e->n_thr; k++) {
            const struct threshold *t = &e->thr[k];
            if (t->task[0] && strcmp(t->task, r->tasks[i].name))
                continue;
            for (size_t j = 0; j < nm; j++)
                if (!strcmp(m[j].name, t->metric) &&
                    !(t->is_min ? m[j].value >= t->value : m[j].value <= t->value))
                    fprintf(x, "      <failure type=\"threshold\" message=\"%s = %.6f %s %g\"/>\n",
                            m[j].name, m[j].value, t->is_min ? "&lt;" : "&gt;", t->value);
        }
        fputs("      <system-out>", x);
        for (size_t j = 0; j < nm; j++)
            fprintf(x, "%s = %.6f +/- %.6f\n", m[j].name, m[j].value, m[j].stderr_);
        fputs("</system-out>\n    </testcase>\n", x);
    }
    fputs("  </testsuite>\n</testsuites>\n", x);
    if (fclose(x) != 0 || !xml)
        oom(&e->c);
    write_text(e, e->junit, xml);
    free(xml);
    return failed;
}

static void print_summary(const struct ev *e)
{
    const struct ds_eval_report *r = &e->report;
    for (size_t i = 0; i < r->n_tasks; i++) {
        const struct ds_eval_task_report *t = &r->tasks[i];
        struct ds_eval_metric m[DS_EVAL_MAX_METRICS];
        size_t nm = ds_eval_metrics(&t->st, m, DS_EVAL_MAX_METRICS);
        char line[1024];
        size_t k = 0;
        for (size_t j = 0; j < nm && k < sizeof(line); j++) {
            if (!strcmp(m[j].name, "ppl"))
                k += (size_t)snprintf(line + k, sizeof(line) - k, "%sPPL = %.4f +/- %.5f",
                                      j ? ", " : "", m[j].value, m[j].stderr_);
            else if (!strcmp(m[j].name, "same_top"))
                k += (size_t)snprintf(line + k, sizeof(line) - k,
                                      ", same top = %.3f +/- %.3f %%", 100 * m[j].value,
                                      100 * m[j].stderr_);
            else
                k += (size_t)snprintf(line + k, sizeof(line) - k, "%s%s = %.6f +/- %.6f",
                                      j ? ", " : "", m[j].name, m[j].value, m[j].stderr_);
        }
        if (k >= sizeof(line))
            k = sizeof(line) - 1;
        if (t->st.kind == DS_EVAL_PPL)
            snprintf(line + k, sizeof(line) - k, " (%lld tokens, %lld windows)",
                     (long long)t->st.n, (long long)t->st.n_windows);
        else if (t->st.n_bad)
            snprintf(line + k, sizeof(line) - k, " (%lld items, %lld malformed lines skipped)",
                     (long long)t->st.n, (long long)t->st.n_bad);
        else
            snprintf(line + k, sizeof(line) - k, " (%lld items)", (long long)t->st.n);
        ds_cli_warn(&e->c, "%s: %s", t->name, line);
    }
}

/* ---- model ------------------------------------------------------------------------------ */

/* Loads the model and makes one context large enough for the perplexity
 * window and the task items that this run evaluates. */
static void setup_model(struct ev *e)
{
    const struct ds_hparams *hp;
    long long max_ctx, alloc = 2;
    ds_err err;
    if (e->model)
        return;
    if ((err = ds_model_load(e->model_path, &e->model)) != DS_OK)
        ds_cli_fail(&e->c, err);
    if (ds_model_vocab_only(e->model)) {
        ds_cli_error(&e->c, "'%s' holds a vocabulary only; it cannot be evaluated",
                     e->model_path);
        exit(DS_EXIT_FAILURE);
    }
    if ((err = ds_tokenizer_new(ds_model_meta(e->model), &e->tok)) != DS_OK)
        ds_cli_fail(&e->c, err);
    e->n_vocab = ds_model_n_vocab(e->model);
    hp = ds_model_hparams(e->model);
    max_ctx = hp->max_position_embeddings > 0 ? hp->max_position_embeddings : 4096;
    if (e->n_ctx && e->n_ctx > max_ctx) {
        ds_cli_error(&e->c, "--ctx %lld is more than the model's context (%lld)", e->n_ctx,
                     max_ctx);
        exit(DS_EXIT_FAILURE);
    }
    e->max_ctx = max_ctx;
    e->ppl_ctx = e->n_ctx ? e->n_ctx : 512 < max_ctx ? 512 : max_ctx;
    e->ctx_size = e->n_ctx ? e->n_ctx : 4096 < max_ctx ? 4096 : max_ctx;
    if ((e->ppl_file || e->kld_file) && e->ppl_ctx > alloc)
        alloc = e->ppl_ctx;
    if (e->c.n_operands && e->ctx_size > alloc)
        alloc = e->ctx_size;
    if ((err = ds_ctx_new_ex(e->model, alloc, &e->cp, &e->ctx)) != DS_OK)
        ds_cli_fail(&e->c, err);
    if (e->chat) {
        if (e->chat_template) {
            ds_chat_from_name(e->chat_template, &e->tmpl);
        } else {
            const char *jinja = ds_meta_get_str(ds_model_meta(e->model),
                                                "tokenizer.chat_template", NULL);
            if (!jinja || ds_chat_detect(jinja, &e->tmpl) != DS_OK) {
                ds_cli_error(&e->c, "'%s' has no known chat template; choose one with "
                                    "--chat-template", e->model_path);
                exit(DS_EXIT_FAILURE);
            }
        }
    }
}

static char *read_all(const struct ev *e, const char *path, size_t *len)
{
    char *s = NULL;
    ds_err err = ds_read_file(path, (size_t)1 << 31, &s, len);
    if (err)
        ds_cli_fail(&e->c, err);
    return s;
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    char *dot;
    snprintf(buf, cap, "%s", b ? b + 1 : path);
    dot = strrchr(buf, '.');
    if (dot && dot != buf)
        *dot = '\0';
    return buf;
}

/* ---- perplexity ---------------------------------------------------------------------------- */

static void run_perplexity(struct ev *e)
{
    struct ds_eval_logits *save = NULL, *base = NULL;
    int32_t *tokens = NULL, *win = NULL;
    size_t n_tok = 0;
    int64_t n_windows, n_ctx, step;
    float *logits = NULL;
    struct ds_eval_stats st;
    bool add_bos;
    int32_t bos;
    char name[256];
    ds_err err;

    setup_model(e);
    add_bos = ds_tokenizer_add_bos(e->tok);
    bos = ds_tokenizer_bos(e->tok);
    if (e->kld_file) {
        const int32_t *bt;
        int64_t nbt;
        if ((err = ds_eval_logits_open(e->kld_file, (int32_t)e->n_vocab, &base)) != DS_OK)
            ds_cli_fail(&e->c, err);
        n_ctx = ds_eval_logits_n_ctx(base);
        if (e->n_ctx && e->n_ctx != n_ctx) {
            ds_cli_error(&e->c, "'%s' was saved with windows of %lld tokens, not --ctx %lld",
                         e->kld_file, (long long)n_ctx, e->n_ctx);
            exit(DS_EXIT_FAILURE);
        }
        if (n_ctx > e->max_ctx) {
            ds_cli_error(&e->c, "'%s' has windows of %lld tokens, more than the model's context",
                         e->kld_file, (long long)n_ctx);
            exit(DS_EXIT_FAILURE);
        }
        if (n_ctx > ds_ctx_n_ctx(e->ctx)) {
            ds_ctx_free(e->ctx);
            e->ctx = NULL;
            if ((err = ds_ctx_new_ex(e->model, n_ctx, &e->cp, &e->ctx)) != DS_OK)
                ds_cli_fail(&e->c, err);
        }
        bt = ds_eval_logits_tokens(base, &nbt);
        n_tok = (size_t)nbt;
        tokens = malloc((n_tok ? n_tok : 1) * sizeof(*tokens));
        if (!tokens)
            oom(&e->c);
        memcpy(tokens, bt, n_tok * sizeof(*tokens));
    } else {
        n_ctx = e->ppl_ctx;
    }
    if (e->ppl_file) {
        size_t len;
        char *text = read_all(e, e->ppl_file, &len);
        int32_t *ids;
        size_t n;
        err = ds_tokenizer_encode(e->tok, text, len, add_bos, false, &ids, &n);
        free(text);
        if (err) {
            ds_cli_error(&e->c, "'%s': %s", e->ppl_file, ds_errmsg());
            exit(DS_EXIT_FAILURE);
        }
        if (tokens && (n != n_tok || memcmp(ids, tokens, n * sizeof(*ids)))) {
            ds_cli_error(&e->c, "the tokens of '%s' differ from those saved in '%s'",
                         e->ppl_file, e->kld_file);
            exit(DS_EXIT_FAILURE);
        }
        free(tokens);
        tokens = ids;
        n_tok = n;
    }
    n_windows = ds_eval_ppl_windows((int64_t)n_tok, n_ctx);
    if (n_ctx < 2 || n_windows < 1) {
        ds_cli_error(&e->c, "'%s' is %zu tokens, less than one window of %lld (--ctx)",
                     e->ppl_file ? e->ppl_file : e->kld_file, n_tok, (long long)n_ctx);
        exit(DS_EXIT_FAILURE);
    }
    if (base && ds_eval_logits_n_windows(base) < n_windows)
        n_windows = ds_eval_logits_n_windows(base);
    if (e->limit >= 0 && e->limit < n_windows)
        n_windows = e->limit;
    if (e->save_file &&
        (err = ds_eval_logits_create(e->save_file, (int32_t)e->n_vocab, (int32_t)n_ctx,
                                     n_windows, tokens, (int64_t)n_tok, &save)) != DS_OK)
        ds_cli_fail(&e->c, err);
    logits = malloc((size_t)n_ctx * (size_t)e->n_vocab * sizeof(float));
    win = malloc((size_t)n_ctx * sizeof(*win));
    if (!logits || !win)
        oom(&e->c);
    ds_eval_stats_init(&st, DS_EVAL_PPL);
    step = e->batch > 0 && e->batch < n_ctx ? e->batch : n_ctx;
    for (int64_t w = 0; w < n_windows; w++) {
        if (!ds_eval_in_shard(w, e->shard_k, e->shard_n)) {
            if (base && (err = ds_eval_logits_skip_window(base)) != DS_OK)
                ds_cli_fail(&e->c, err);
            continue;
        }
        memcpy(win, tokens + w * n_ctx, (size_t)n_ctx * sizeof(*win));
        if (add_bos && bos >= 0)
            win[0] = bos;
        ds_ctx_reset(e->ctx);
        for (int64_t p = 0; p < n_ctx; p += step) {
            int64_t k = n_ctx - p < step ? n_ctx - p : step;
            if ((err = ds_forward(e->ctx, win + p, (size_t)k, logits + p * e->n_vocab, true)))
                ds_cli_fail(&e->c, err);
        }
        if ((err = ds_eval_ppl_window(&st, logits, e->n_vocab, win, n_ctx, save, base)) != DS_OK)
            ds_cli_fail(&e->c, err);
        if (ds_cli_progress_enabled(&e->c))
            ds_cli_progress(&e->c, (uint64_t)w + 1, (uint64_t)n_windows, "perplexity");
    }
    if (save && (err = ds_eval_logits_commit(save)) != DS_OK)
        ds_cli_fail(&e->c, err);
    base_name(e->ppl_file ? e->ppl_file : e->kld_file, name, sizeof(name));
    if ((err = ds_eval_report_add(&e->report, name, e->ppl_file ? e->ppl_file : e->kld_file,
                                  &st)) != DS_OK)
        ds_cli_fail(&e->c, err);
    ds_eval_logits_free(save);
    ds_eval_logits_free(base);
    free(logits);
    free(win);
    free(tokens);
}

/* ---- tasks ------------------------------------------------------------------------- */

/* The prompt text of an item, chat template applied; *add_bos: whether the
 * encoder must add BOS. */
static char *item_text(struct ev *e, const struct ds_eval_task *t, const struct ds_eval_item *it,
                       const struct ds_eval_task *shots, bool *add_bos)
{
    char *p = NULL, *templated = NULL;
    size_t ns = shots ? (size_t)e->shots : 0;
    ds_err err;
    if (ns > (shots ? shots->n_items : 0))
        ns = shots->n_items;
    err = ds_eval_build_prompt(it, shots ? shots->items : NULL, ns, e->chat, &p);
    if (err) {
        ds_cli_error(&e->c, "'%s':%lld: %s", t->path, (long long)it->line, ds_errmsg());
        exit(DS_EXIT_FAILURE);
    }
    *add_bos = ds_tokenizer_add_bos(e->tok);
    if (!e->chat)
        return p;
    {
        const char *bos = "";
        size_t bl = 0;
        char *bz;
        if (ds_tokenizer_bos(e->tok) >= 0 && *add_bos)
            ds_tokenizer_piece(e->tok, ds_tokenizer_bos(e->tok), &bos, &bl);
        bz = strndup(bos, bl);
        if (!bz)
            oom(&e->c);
        if ((err = ds_chat_apply(e->tmpl, bz, e->system, p, &templated)) != DS_OK)
            ds_cli_fail(&e->c, err);
        free(bz);
        free(p);
        *add_bos = false;
        return templated;
    }
}

static int32_t *encode(struct ev *e, const struct ds_eval_task *t, const struct ds_eval_item *it,
                       const char *text, bool add_bos, bool special, size_t *n)
{
    int32_t *ids;
    if (ds_tokenizer_encode(e->tok, text, strlen(text), add_bos, special, &ids, n) != DS_OK) {
        ds_cli_error(&e->c, "'%s':%lld: %s", t->path, (long long)it->line, ds_errmsg());
        exit(DS_EXIT_FAILURE);
    }
    return ids;
}

static void too_long(const struct ev *e, const struct ds_eval_task *t,
                     const struct ds_eval_item *it, size_t n)
{
    ds_cli_error(&e->c, "'%s':%lld: the item is %zu tokens, more than the context of %lld "
                        "(--ctx)", t->path, (long long)it->line, n, (long long)e->ctx_size);
    exit(DS_EXIT_FAILURE);
}

static void run_mc_item(struct ev *e, const struct ds_eval_task *t, const struct ds_eval_item *it,
                        const struct ds_eval_task *shots, size_t index, struct ds_eval_stats *st,
                        const char *name)
{
    bool add_bos;
    char *text = item_text(e, t, it, shots, &add_bos);
    size_t nc, best, best_norm;
    int32_t *ctx_ids = encode(e, t, it, text, add_bos, e->chat, &nc);
    double *ll = calloc(it->n_choices, sizeof(double));
    size_t *len = calloc(it->n_choices, sizeof(size_t));
    float *logits = NULL;
    ds_err err;
    if (!ll || !len)
        oom(&e->c);
    if (nc == 0) {
        ds_cli_error(&e->c, "'%s':%lld: the query is empty and there is no BOS to start from",
                     t->path, (long long)it->line);
        exit(DS_EXIT_FAILURE);
    }
    for (size_t k = 0; k < it->n_choices; k++) {
        size_t ncont, n;
        int32_t *cont = encode(e, t, it, it->choices[k], false, false, &ncont);
        int32_t *full;
        n = nc + ncont;
        if (n > (size_t)e->ctx_size)
            too_long(e, t, it, n);
        full = malloc(n * sizeof(*full));
        logits = realloc(logits, n * (size_t)e->n_vocab * sizeof(float));
        if (!full || !logits)
            oom(&e->c);
        memcpy(full, ctx_ids, nc * sizeof(*full));
        memcpy(full + nc, cont, ncont * sizeof(*full));
        ds_ctx_reset(e->ctx);
        if ((err = ds_forward(e->ctx, full, n, logits, true)) != DS_OK)
            ds_cli_fail(&e->c, err);
        for (size_t j = nc; j < n; j++) {
            const float *row = logits + (j - 1) * (size_t)e->n_vocab;
            ll[k] += (double)row[full[j]] - ds_eval_logsumexp(row, e->n_vocab);
        }
        len[k] = strlen(it->choices[k]);
        free(full);
        free(cont);
    }
    ds_eval_mc_pick(ll, len, it->n_choices, &best, &best_norm);
    st->n++;
    st->correct += best == it->gold;
    st->correct_norm += best_norm == it->gold;
    if (e->samples) {
        cJSON *o = sample_new(e, name, index, it, text, it->choices[best]), *a;
        a = cJSON_AddArrayToObject(o, "loglikelihoods");
        for (size_t k = 0; a && k < it->n_choices; k++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(ll[k]));
        cJSON_AddNumberToObject(o, "gold", (double)it->gold);
        cJSON_AddNumberToObject(o, "pred", (double)best);
        cJSON_AddNumberToObject(o, "pred_norm", (double)best_norm);
        a = cJSON_AddObjectToObject(o, "score");
        if (a) {
            cJSON_AddNumberToObject(a, "acc", best == it->gold);
            cJSON_AddNumberToObject(a, "acc_norm", best_norm == it->gold);
        }
        sample_line(e, o);
    }
    free(logits);
    free(ll);
    free(len);
    free(ctx_ids);
    free(text);
}

/* Appends s[0..n) to the growing text *buf. */
static void append(struct ev *e, char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            oom(&e->c);
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void run_gen_item(struct ev *e, const struct ds_eval_task *t, const struct ds_eval_item *it,
                         const struct ds_eval_task *shots, size_t index, struct ds_eval_stats *st,
                         const struct ds_eval_scorer *scorer, const char *name)
{
    static const char *const default_stops[] = {"Question:"};
    const char *const *stops = e->n_stops ? e->stops : (e->chat ? NULL : default_stops);
    int n_stops = e->n_stops ? e->n_stops : (e->chat ? 0 : 1);
    bool add_bos;
    char *text = item_text(e, t, it, shots, &add_bos), *out = NULL, piece[512];
    size_t n, len = 0, cap = 0;
    int32_t *ids = encode(e, t, it, text, add_bos, e->chat, &n);
    float *logits = malloc((size_t)e->n_vocab * sizeof(float));
    struct ds_sampler *smp = NULL;
    struct ds_detok dt;
    struct ds_eval_gen_score g;
    const char *think = NULL;
    ds_err err;
    if (!logits)
        oom(&e->c);
    if (n == 0 || n >= (size_t)e->ctx_size)
        too_long(e, t, it, n);
    if (e->seed_set) {
        /* a seed per item: the same text whatever the sharding */
        struct ds_sampler_params sp = {.temp = (float)e->temp, .top_k = 0, .top_p = 1.0f,
                                       .min_p = 0.0f,
                                       .seed = e->seed ^ ((uint64_t)index * 0x9E3779B97F4A7C15u)};
        if ((err = ds_sampler_new(&sp, (int32_t)e->n_vocab, &smp)) != DS_OK)
            ds_cli_fail(&e->c, err);
    }
    ds_ctx_reset(e->ctx);
    if ((err = ds_forward(e->ctx, ids, n, logits, false)) != DS_OK)
        ds_cli_fail(&e->c, err);
    ds_detok_init(&dt);
    append(e, &out, &len, &cap, "", 0);
    for (long long k = 0; k < e->n_predict; k++) {
        int32_t next = smp ? ds_sampler_sample(smp, logits) : ds_argmax(logits, (size_t)e->n_vocab);
        long got;
        bool stop = false;
        if (next == ds_tokenizer_eos(e->tok) || ds_tokenizer_is_control(e->tok, next))
            break;
        got = ds_detok_push(&dt, e->tok, next, piece, sizeof(piece));
        if (got > 0)
            append(e, &out, &len, &cap, piece, (size_t)got);
        for (int s = 0; s < n_stops; s++) {
            char *hit = strstr(out, stops[s]);
            if (hit) {
                *hit = '\0';
                len = (size_t)(hit - out);
                stop = true;
            }
        }
        if (stop || k + 1 == e->n_predict || ds_ctx_pos(e->ctx) >= e->ctx_size)
            break;
        if ((err = ds_forward(e->ctx, &next, 1, logits, false)) != DS_OK)
            ds_cli_fail(&e->c, err);
    }
    if (e->chat && e->tmpl == DS_CHAT_DEEPSEEK_R1)
        think = "<think>\n";
    if ((err = ds_eval_score_gen(scorer, out, it->answer, think, &g)) != DS_OK)
        ds_cli_fail(&e->c, err);
    st->n++;
    st->correct += g.correct;
    st->exact += g.exact;
    st->format += g.format;
    if (e->samples) {
        cJSON *o = sample_new(e, name, index, it, text, out), *s;
        cJSON_AddStringToObject(o, "gold", g.gold);
        cJSON_AddStringToObject(o, "pred", g.pred);
        s = cJSON_AddObjectToObject(o, "score");
        if (s) {
            cJSON_AddNumberToObject(s, "acc", g.correct);
            cJSON_AddNumberToObject(s, "exact_match", g.exact);
            cJSON_AddNumberToObject(s, "format", g.format);
        }
        sample_line(e, o);
    }
    ds_eval_gen_score_release(&g);
    ds_sampler_free(smp);
    free(out);
    free(logits);
    free(ids);
    free(text);
}

static void run_task(struct ev *e, const char *path, const struct ds_eval_task *shots,
                     const struct ds_eval_scorer *scorer)
{
    struct ds_eval_task *t = NULL;
    struct ds_eval_stats st;
    size_t n;
    char name[256];
    ds_err err;
    if ((err = ds_eval_task_load(path, e->skip_bad, &t)) != DS_OK)
        ds_cli_fail(&e->c, err);
    if (t->n_bad)
        ds_cli_warn(&e->c, "skipped %lld malformed lines of '%s' (first: %s)",
                    (long long)t->n_bad, path, t->first_bad);
    if (shots && e->shots > 0 && shots->kind != t->kind) {
        ds_cli_error(&e->c, "'%s' holds %s items but '%s' %s items", e->shots_file,
                     ds_eval_kind_name(shots->kind), path, ds_eval_kind_name(t->kind));
        exit(DS_EXIT_FAILURE);
    }
    setup_model(e);
    base_name(path, name, sizeof(name));
    ds_eval_stats_init(&st, t->kind);
    st.n_bad = t->n_bad;
    n = t->n_items;
    if (e->limit >= 0 && (size_t)e->limit < n)
        n = (size_t)e->limit;
    for (size_t i = 0; i < n; i++) {
        if (!ds_eval_in_shard((int64_t)i, e->shard_k, e->shard_n))
            continue;
        if (t->kind == DS_EVAL_MC)
            run_mc_item(e, t, &t->items[i], shots, i, &st, name);
        else
            run_gen_item(e, t, &t->items[i], shots, i, &st, scorer, name);
        if (ds_cli_progress_enabled(&e->c))
            ds_cli_progress(&e->c, i + 1, n, name);
    }
    if ((err = ds_eval_report_add(&e->report, name, path, &st)) != DS_OK)
        ds_cli_fail(&e->c, err);
    ds_eval_task_free(t);
}

/* The options that change the numbers, as a JSON object (for the report). */
static char *options_json(const struct ev *e)
{
    cJSON *o = cJSON_CreateObject(), *a;
    char *s;
    if (!o)
        oom(&e->c);
    cJSON_AddNumberToObject(o, "ctx", (double)e->n_ctx);
    cJSON_AddStringToObject(o, "cache_type",
                            e->cp.cache_type == DS_CACHE_Q8_0 ? "q8_0" : "f32");
    cJSON_AddNumberToObject(o, "limit", (double)e->limit);
    cJSON_AddNumberToObject(o, "shots", (double)e->shots);
    if (e->shots_file)
        cJSON_AddStringToObject(o, "shots_file", e->shots_file);
    cJSON_AddBoolToObject(o, "chat", e->chat);
    if (e->chat)
        cJSON_AddStringToObject(o, "chat_template", ds_chat_name(e->tmpl));
    if (e->system)
        cJSON_AddStringToObject(o, "system", e->system);
    cJSON_AddNumberToObject(o, "n_predict", (double)e->n_predict);
    if (e->seed_set) {
        char seed[24];
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)e->seed);
        cJSON_AddStringToObject(o, "seed", seed);
        cJSON_AddNumberToObject(o, "temp", e->temp);
    }
    a = cJSON_AddArrayToObject(o, "stop");
    for (int i = 0; a && i < e->n_stops; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(e->stops[i]));
    if (e->extract)
        cJSON_AddStringToObject(o, "extract", e->extract);
    if (e->gold_re)
        cJSON_AddStringToObject(o, "gold_regex", e->gold_re);
    if (e->kld_file)
        cJSON_AddStringToObject(o, "kl_divergence", e->kld_file);
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        oom(&e->c);
    return s;
}

static void run_merge(struct ev *e)
{
    struct ds_eval_report *parts = calloc((size_t)e->c.n_operands, sizeof(*parts));
    ds_err err;
    if (!parts)
        oom(&e->c);
    for (int i = 0; i < e->c.n_operands; i++) {
        size_t len;
        char *s = read_all(e, e->c.operands[i], &len);
        if ((err = ds_eval_report_parse(s, e->c.operands[i], &parts[i])) != DS_OK)
            ds_cli_fail(&e->c, err);
        free(s);
    }
    if ((err = ds_eval_report_merge(parts, (size_t)e->c.n_operands, &e->report)) != DS_OK)
        ds_cli_fail(&e->c, err);
    for (int i = 0; i < e->c.n_operands; i++)
        ds_eval_report_release(&parts[i]);
    free(parts);
}

int main(int argc, char **argv)
{
    struct ev e = {
        .c = {.prog = "ds-eval",
              .synopsis = "-m MODEL [options] [TASK.jsonl ...]\n       ds-eval --merge "
                          "REPORT.json ... [options]",
              .summary = "Evaluate a DeepSeek model: perplexity of a text, KL divergence from "
                         "a base model's saved\nlog-probabilities, and JSONL tasks (multiple "
                         "choice, generation), with JSON and JUnit\nreports and thresholds for "
                         "CI (exit 3 when one is not met).",
              .opts = options,
              .exit_status = "0 success, 1 failure, 2 usage error, 3 a threshold not met"},
        .n_predict = 256,
        .limit = -1,
        .temp = 0.8,
    };
    struct ds_cli *c = &e.c;
    struct ds_eval_task *shots = NULL;
    struct ds_eval_scorer *scorer = NULL;
    const char *arg;
    double t0 = now_s();
    int id, failed;
    ds_err err;

    ds_eval_report_init(&e.report);
    ds_cli_init(c, argc, argv);
    while ((id = ds_cli_next(c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_MODEL: e.model_path = arg; break;
        case OPT_PERPLEXITY: e.ppl_file = arg; break;
        case OPT_KLD: e.kld_file = arg; break;
        case OPT_SAVE_LOGITS: e.save_file = arg; break;
        case OPT_CTX: e.n_ctx = ds_cli_int(c, "--ctx", arg, 2, 1 << 24); break;
        case OPT_BATCH: e.batch = ds_cli_int(c, "--batch", arg, 1, 1 << 24); break;
        case OPT_CACHE_TYPE:
            if (!strcmp(arg, "f32"))
                e.cp.cache_type = DS_CACHE_F32;
            else if (!strcmp(arg, "q8_0"))
                e.cp.cache_type = DS_CACHE_Q8_0;
            else
                ds_cli_usage_error(c, "invalid value '%s' for --cache-type (f32 or q8_0)", arg);
            break;
        case OPT_SHOTS: e.shots = ds_cli_int(c, "--shots", arg, 0, 1 << 20); break;
        case OPT_SHOTS_FILE: e.shots_file = arg; break;
        case OPT_CHAT: e.chat = true; break;
        case OPT_CHAT_TEMPLATE: {
            enum ds_chat_template t;
            if (ds_chat_from_name(arg, &t) != DS_OK)
                ds_cli_usage_error(c, "invalid value '%s' for --chat-template (deepseek-v2, "
                                      "deepseek-v3 or deepseek-r1)", arg);
            e.chat_template = arg;
            e.chat = true;
            break;
        }
        case OPT_SYSTEM: e.system = arg; break;
        case OPT_N_PREDICT: e.n_predict = ds_cli_int(c, "--n-predict", arg, 1, 1 << 24); break;
        case OPT_TEMP:
            e.temp = ds_cli_float(c, "--temp", arg);
            e.temp_set = true;
            break;
        case OPT_SEED:
            e.seed = (uint64_t)ds_cli_int(c, "--seed", arg, 0, INT64_MAX);
            e.seed_set = true;
            break;
        case OPT_STOP:
            if (e.n_stops == MAX_STOPS)
                ds_cli_usage_error(c, "at most %d --stop strings", MAX_STOPS);
            if (!*arg)
                ds_cli_usage_error(c, "--stop needs a non-empty string");
            e.stops[e.n_stops++] = arg;
            break;
        case OPT_EXTRACT: e.extract = arg; break;
        case OPT_GOLD_REGEX: e.gold_re = arg; break;
        case OPT_LIMIT: e.limit = ds_cli_int(c, "--limit", arg, 0, INT64_MAX); break;
        case OPT_SHARD: {
            int k, n, used = 0;
            if (sscanf(arg, "%d/%d%n", &k, &n, &used) != 2 || arg[used] || n < 1 || k < 1 ||
                k > n)
                ds_cli_usage_error(c, "invalid value '%s' for --shard (K/N with 1 <= K <= N)",
                                   arg);
            e.shard_k = k;
            e.shard_n = n;
            break;
        }
        case OPT_SKIP_BAD: e.skip_bad = true; break;
        case OPT_JSON: e.json = arg; break;
        case OPT_JUNIT: e.junit = arg; break;
        case OPT_LOG_SAMPLES: e.log_samples = arg; break;
        case OPT_MIN: parse_threshold(&e, arg, true); break;
        case OPT_MAX: parse_threshold(&e, arg, false); break;
        case OPT_MERGE: e.merge = true; break;
        default: break;
        }
    }
    if (e.merge) {
        if (e.model_path || e.ppl_file || e.kld_file || e.save_file || e.log_samples ||
            e.shard_n)
            ds_cli_usage_error(c, "--merge takes reports only; -m, --perplexity, "
                                  "--kl-divergence, --save-logits, --log-samples and --shard "
                                  "do not apply");
        if (c->n_operands < 1)
            ds_cli_usage_error(c, "--merge needs the shard reports as operands");
    } else {
        if (!e.model_path)
            ds_cli_usage_error(c, "no model; give one with -m FILE");
        if (!e.ppl_file && !e.kld_file && c->n_operands == 0)
            ds_cli_usage_error(c, "nothing to evaluate: give --perplexity FILE, "
                                  "--kl-divergence FILE or task files");
        if (e.save_file && !e.ppl_file)
            ds_cli_usage_error(c, "--save-logits needs --perplexity FILE");
        if (e.save_file && e.kld_file)
            ds_cli_usage_error(c, "--save-logits and --kl-divergence exclude each other");
        if (e.save_file && e.shard_n > 1)
            ds_cli_usage_error(c, "--save-logits saves every window; it excludes --shard");
        if (e.shots > 0 && !e.shots_file)
            ds_cli_usage_error(c, "--shots needs --shots-file FILE");
        if (e.system && !e.chat)
            ds_cli_usage_error(c, "--system goes with --chat");
        if (e.temp_set && !e.seed_set)
            ds_cli_usage_error(c, "--temp goes with --seed (generation is greedy without it)");
        if (e.temp < 0)
            ds_cli_usage_error(c, "--temp must be >= 0");
    }
    {
        /* no output may overwrite an input */
        const char *outs[] = {e.json, e.junit, e.log_samples, e.save_file};
        const char *ins[] = {e.model_path, e.ppl_file, e.kld_file, e.shots_file};
        for (size_t o = 0; o < 4; o++) {
            if (!outs[o] || !strcmp(outs[o], "-"))
                continue;
            for (size_t i = 0; i < 4; i++)
                if (ins[i] && ds_same_file(outs[o], ins[i]))
                    ds_cli_usage_error(c, "'%s' is both an input and an output", outs[o]);
            for (int i = 0; i < c->n_operands; i++)
                if (ds_same_file(outs[o], c->operands[i]))
                    ds_cli_usage_error(c, "'%s' is both an input and an output", outs[o]);
        }
    }
    ds_set_threads(c->threads);
    if (e.model_path && !strcmp(e.model_path, "-"))
        ds_cli_check_binary_stdin(c, e.model_path);
    if (e.merge) {
        run_merge(&e);
    } else {
        char hex[65];
        if ((err = ds_eval_scorer_new(e.extract, e.gold_re, &scorer)) != DS_OK) {
            ds_cli_error(c, "%s", ds_errmsg());
            return DS_EXIT_USAGE;
        }
        if (e.shots_file && (err = ds_eval_task_load(e.shots_file, false, &shots)) != DS_OK)
            ds_cli_fail(c, err);
        if (e.log_samples &&
            (err = ds_writer_open(&e.samples, e.log_samples, DS_WRITE_FORCE, 0, 0)) != DS_OK)
            ds_cli_fail(c, err);
        if (strcmp(e.model_path, "-")) {
            uint8_t digest[32];
            if ((err = ds_sha256_file(e.model_path, digest)) != DS_OK)
                ds_cli_fail(c, err);
            ds_sha256_hex(digest, hex);
            e.report.model_sha256 = strdup(hex);
        }
        e.report.model = strdup(e.model_path);
        if (!e.report.model)
            oom(c);
        if (e.ppl_file || e.kld_file)
            run_perplexity(&e);
        for (int i = 0; i < c->n_operands; i++)
            run_task(&e, c->operands[i], shots, scorer);
        e.report.options = options_json(&e);
        e.report.shard_k = e.shard_n > 0 ? e.shard_k : 0;
        e.report.shard_n = e.shard_n;
        e.report.wall_s = now_s() - t0;
        if (e.samples && (err = ds_writer_commit(e.samples)) != DS_OK)
            ds_cli_fail(c, err);
    }
    print_summary(&e);
    if (e.json) {
        char *s;
        if ((err = ds_eval_report_json(&e.report, &s)) != DS_OK)
            ds_cli_fail(c, err);
        write_text(&e, e.json, s);
        free(s);
    }
    failed = check_thresholds(&e);
    ds_writer_free(e.samples);
    ds_eval_report_release(&e.report);
    ds_eval_task_free(shots);
    ds_eval_scorer_free(scorer);
    ds_ctx_free(e.ctx);
    ds_tokenizer_free(e.tok);
    ds_model_free(e.model);
    ds_cli_finish_stdout(c);
    return failed ? DS_EXIT_THRESHOLD : DS_EXIT_OK;
}
