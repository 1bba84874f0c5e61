/*
 * ds_eval.h - evaluation: perplexity, KL divergence against saved base
 * log-probabilities, JSONL tasks (multiple choice by log-likelihood,
 * generation scored by rules), and reports whose shards merge exactly.
 *
 * Perplexity follows llama.cpp's llama-perplexity: the text is tokenized with
 * BOS (when the tokenizer adds one) and cut into n_tokens / n_ctx windows of
 * n_ctx tokens; the first token of every window is replaced by BOS; the
 * logits at positions n_ctx/2 .. n_ctx-2 of a window are scored against the
 * next token (n_ctx - 1 - n_ctx/2 tokens per window). PPL = exp(mean nll),
 * and its uncertainty is PPL x the standard error of the mean nll.
 *
 * Exact sums: every statistic is a count or a struct ds_eval_sum, a sum of
 * values rounded to multiples of 2^-40 and kept in a 128-bit integer. Integer
 * addition is associative, so a sum does not depend on the order of its terms:
 * shards (ds_eval_stats_merge) give bit for bit the statistics, and so the
 * metrics, of the unsharded run. Terms are rounded by at most 2^-41 (4.5e-13).
 *
 * Typical use (what ds-eval does):
 *
 *   struct ds_eval_stats st;
 *   ds_eval_stats_init(&st, DS_EVAL_PPL);
 *   for each window w: ds_forward(ctx, win, n_ctx, logits, true);
 *                      ds_eval_ppl_window(&st, logits, n_vocab, win, n_ctx, save, base);
 *   ds_eval_metrics(&st, m, DS_EVAL_MAX_METRICS);
 */
#ifndef DS_EVAL_H
#define DS_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- exact sums -------------------------------------------------------------- */

/* A sum of values in units of 2^-40, as a two's-complement 128-bit integer
 * (hi:lo). Zero-initialise. */
struct ds_eval_sum {
    int64_t hi;
    uint64_t lo;
};

/* Adds x rounded to the nearest multiple of 2^-40 (non-finite or |x| >= 2^80
 * is clamped to +/-2^80). */
void ds_eval_sum_add(struct ds_eval_sum *s, double x);
void ds_eval_sum_merge(struct ds_eval_sum *s, const struct ds_eval_sum *t);
/* The sum as the nearest double. */
double ds_eval_sum_value(const struct ds_eval_sum *s);
/* 32 lowercase hex digits (hi then lo) plus NUL, as stored in JSON reports. */
void ds_eval_sum_format(const struct ds_eval_sum *s, char buf[33]);
/* Parses what ds_eval_sum_format writes; false on anything else. */
bool ds_eval_sum_parse(const char *str, struct ds_eval_sum *out);

/* ---- statistics and metrics --------------------------------------------------- */

enum ds_eval_kind {
    DS_EVAL_PPL = 1, /* perplexity of a text (and KL divergence with a base file) */
    DS_EVAL_MC = 2,  /* multiple choice by log-likelihood */
    DS_EVAL_GEN = 3  /* generation scored by rules */
};

/* "perplexity", "multiple_choice", "generation"; NULL for others. */
const char *ds_eval_kind_name(enum ds_eval_kind k);

/* Sufficient statistics of one task. Everything adds up across shards. */
struct ds_eval_stats {
    enum ds_eval_kind kind;
    int64_t n;            /* scored items (PPL: scored tokens) */
    int64_t n_windows;    /* PPL: windows evaluated */
    int64_t n_bad;        /* malformed task lines skipped (--skip-bad) */
    int64_t correct;      /* MC: acc hits; GEN: accuracy hits */
    int64_t correct_norm; /* MC: acc_norm hits */
    int64_t exact;        /* GEN: exact matches after normalisation */
    int64_t format;       /* GEN: R1 format reward hits */
    struct ds_eval_sum nll, nll2;        /* PPL: sum of nll and nll^2 */
    bool kld;                            /* PPL: compared with a base file */
    int64_t same_top;                    /* KLD: argmax equal to the base's */
    struct ds_eval_sum kl, kl2;          /* KLD: sum of KL and KL^2 */
    struct ds_eval_sum nll_base, nll_base2, nll_nll_base; /* KLD: the base's nll */
    struct ds_eval_sum dnll, dnll2;      /* KLD: nll - nll_base and its square */
};

void ds_eval_stats_init(struct ds_eval_stats *s, enum ds_eval_kind kind);
/* Adds t to s. DS_ERR_ARG when the kinds (or KLD or not) differ. */
ds_err ds_eval_stats_merge(struct ds_eval_stats *s, const struct ds_eval_stats *t);

/* A metric: its value and standard error (NAN when undefined, e.g. n < 2). */
struct ds_eval_metric {
    const char *name; /* static */
    double value;
    double stderr_;
    bool higher_is_better;
};

#define DS_EVAL_MAX_METRICS 8

/* The metrics of s, in print order; returns how many (<= cap).
 *   PPL: ppl (exp mean nll, +/- ppl x se(nll)), nll (mean, se);
 *        with a base file also kld (mean KL(base || model), se),
 *        same_top (fraction of positions with the base's argmax,
 *        sqrt(p(1-p)/(n-1))), ppl_base, delta_ppl (ppl - ppl_base) and
 *        ln_ppl_ratio (mean nll - mean nll_base), whose uncertainties use
 *        the covariance of the two nll series, as llama-perplexity does.
 *   MC:  acc, acc_norm (fractions; se sqrt(p(1-p)/(n-1))).
 *   GEN: acc, exact_match, format.
 * Metrics of an empty task are NAN. */
size_t ds_eval_metrics(const struct ds_eval_stats *s, struct ds_eval_metric *out, size_t cap);

/* Whether name is a metric of some kind ("ppl", "acc", ...). */
bool ds_eval_metric_known(const char *name);

/* ---- perplexity and KL divergence ---------------------------------------------- */

/* log(sum(exp(x))) of x[0..n) in double. */
double ds_eval_logsumexp(const float *x, int64_t n);

/* Number of windows of n_ctx tokens in n_tokens (n_tokens / n_ctx). */
int64_t ds_eval_ppl_windows(int64_t n_tokens, int64_t n_ctx);
/* Scored tokens per window: n_ctx - 1 - n_ctx / 2 (n_ctx >= 2). */
int64_t ds_eval_ppl_scored(int64_t n_ctx);

/*
 * Base log-probabilities file (--save-logits / --kl-divergence), written
 * zstd-compressed; all numbers little-endian:
 *
 *   header: "DSEVLOGP" (8 bytes), u32 version = 1, u32 n_vocab, u32 n_ctx,
 *           u32 n_windows, u64 n_tokens, i32 tokens[n_tokens]
 *           (the whole tokenized text, BOS first when the tokenizer adds it;
 *           n_windows <= n_tokens / n_ctx windows are saved, the first ones)
 *   records: for each saved window in order, for each scored position
 *           (ds_eval_ppl_scored(n_ctx) per window):
 *           f64 nll   (-log p of the next token, exact)
 *           i32 top   (argmax of the logits)
 *           f32 lo, f32 step
 *           u16 q[n_vocab]: log p(i) ~= lo + step x q[i]
 *
 * lo is the largest of the smallest log-probability and the top one minus 25
 * (probabilities below e^-25 of the top are clamped up to it); step is the
 * range over 65535. The error of a log-probability is at most step / 2
 * (under 2e-4 nats), which puts the KL divergence of a model with itself
 * near 1e-8. A reader checks the magic, the version, n_vocab against the
 * model's and the token ids against the vocabulary.
 */
struct ds_eval_logits;

/* Opens path for writing (atomic; replaced when it exists; always zstd) and
 * writes the header. tokens is copied. */
ds_err ds_eval_logits_create(const char *path, int32_t n_vocab, int32_t n_ctx,
                             int64_t n_windows, const int32_t *tokens, int64_t n_tokens,
                             struct ds_eval_logits **out);
/* Opens a file written by ds_eval_logits_create. n_vocab must equal the file's
 * (DS_ERR_FORMAT otherwise, naming both). */
ds_err ds_eval_logits_open(const char *path, int32_t n_vocab, struct ds_eval_logits **out);
/* The header of an open file (borrowed). */
int32_t ds_eval_logits_n_ctx(const struct ds_eval_logits *f);
int64_t ds_eval_logits_n_windows(const struct ds_eval_logits *f);
const int32_t *ds_eval_logits_tokens(const struct ds_eval_logits *f, int64_t *n_tokens);
/* Reading: skips the records of one window. */
ds_err ds_eval_logits_skip_window(struct ds_eval_logits *f);
/* Writing: flushes and renames into place. */
ds_err ds_eval_logits_commit(struct ds_eval_logits *f);
/* Closes; an uncommitted output is removed. Accepts NULL. */
void ds_eval_logits_free(struct ds_eval_logits *f);

/* Scores one window: logits (n, n_vocab) are the model's outputs for win[0..n)
 * (n = the window size, win[0] = BOS). Adds the scored positions to s
 * (kind PPL); with save (opened for writing) appends their records; with base
 * (opened for reading) reads their records and adds the KL statistics. */
ds_err ds_eval_ppl_window(struct ds_eval_stats *s, const float *logits, int64_t n_vocab,
                          const int32_t *win, int64_t n, struct ds_eval_logits *save,
                          struct ds_eval_logits *base);

/* ---- tasks ---------------------------------------------------------------------- */

/*
 * JSONL task files: one JSON object per line; blank lines are ignored.
 *   multiple choice: {"query": TEXT, "choices": [TEXT, ...], "gold": INDEX}
 *   generation:      {"prompt": TEXT, "answer": TEXT or NUMBER}
 * "question" may stand for "query" or "prompt" (GSM8K's files). An object with
 * "choices" is multiple choice; other members are ignored. All lines of a
 * file must be of one kind.
 */
struct ds_eval_item {
    enum ds_eval_kind kind;
    int64_t line;   /* 1-based line in the file */
    char *prompt;   /* query or prompt */
    char *answer;   /* GEN: the answer text */
    char **choices; /* MC */
    size_t n_choices;
    size_t gold;    /* MC: index into choices */
};

struct ds_eval_task {
    char *path;
    enum ds_eval_kind kind;
    struct ds_eval_item *items;
    size_t n_items;
    int64_t n_bad;       /* lines skipped with skip_bad */
    char *first_bad;     /* message of the first skipped line, or NULL */
};

/* Loads a JSONL file (at most 1 GiB). A malformed line fails with
 * DS_ERR_FORMAT "'FILE':LINE: problem" unless skip_bad, which counts it and
 * goes on. An empty file (no items) is DS_ERR_FORMAT. Free with
 * ds_eval_task_free(). */
ds_err ds_eval_task_load(const char *path, bool skip_bad, struct ds_eval_task **out);
void ds_eval_task_free(struct ds_eval_task *t);

/*
 * Prompts. Without chat, generation items read
 *   "Question: {shot prompt}\nAnswer: {shot answer}\n\n" per shot, then
 *   "Question: {prompt}\nAnswer:"
 * and multiple choice items "{shot query}{shot gold choice}\n\n" per shot,
 * then "{query}" (each choice is scored as the continuation). With chat, the
 * text is the user message: the same shots, then the prompt (or query) as is.
 * Shots of the other kind are an error (DS_ERR_ARG). Malloc'd.
 */
ds_err ds_eval_build_prompt(const struct ds_eval_item *it, const struct ds_eval_item *shots,
                            size_t n_shots, bool chat, char **out);

/* ---- scoring ---------------------------------------------------------------------- */

/* Normalised copy: ASCII lowercase, runs of white space to one space, trimmed,
 * then trailing '.', ',', ';', ':', '!', '?' and a leading '$' removed.
 * Malloc'd; NULL when out of memory. */
char *ds_eval_normalize(const char *s);

/* Parses a number as written in answers: white space, a leading '$',
 * thousands commas and a trailing '.' are ignored ("$1,234.50" -> 1234.5). */
bool ds_eval_parse_number(const char *s, double *out);
/* |a - b| <= 1e-6 x max(1, |a|, |b|). */
bool ds_eval_numbers_equal(double a, double b);

/* DeepSeek-R1's format reward: text (the prompt's own trailing "<think>\n",
 * if any, plus the output) is optional white space, "<think>", the
 * reasoning, "</think>", then a non-blank answer, with no other think tags. */
bool ds_eval_format_reward(const char *text);

struct ds_eval_scorer;

/* extract: PCRE2 pattern searched in the answer part of the output (after the
 * last "</think>", if any); the last match's group 1 (or whole match) is the
 * prediction. NULL: automatic: when the gold answer is a number, the number
 * after the last "####", else the last number; otherwise the whole answer
 * part. gold: pattern applied to the item's answer the same way; NULL means
 * "####\s*(.+)" (GSM8K), and an answer it does not match is used whole.
 * A bad pattern is DS_ERR_ARG naming it and the offset. */
ds_err ds_eval_scorer_new(const char *extract, const char *gold, struct ds_eval_scorer **out);
void ds_eval_scorer_free(struct ds_eval_scorer *s);

struct ds_eval_gen_score {
    char *gold;   /* extracted gold answer (malloc'd) */
    char *pred;   /* extracted prediction (malloc'd; "" when none) */
    bool exact;   /* normalised pred == normalised gold */
    bool numeric; /* both numbers and equal */
    bool correct; /* numeric when the gold is a number, else exact */
    bool format;  /* ds_eval_format_reward(think_prefix + output) */
};

/* Scores output against answer. think_prefix: what the prompt already holds
 * of the output's format (the R1 template's "<think>\n"), or NULL. Release
 * with ds_eval_gen_score_release(). */
ds_err ds_eval_score_gen(const struct ds_eval_scorer *s, const char *output, const char *answer,
                         const char *think_prefix, struct ds_eval_gen_score *out);
void ds_eval_gen_score_release(struct ds_eval_gen_score *g);

/* Multiple choice: ll[i] is the log-likelihood of choice i, len[i] its length
 * in bytes. *best: the argmax of ll; *best_norm: the argmax of ll / len (a
 * zero length counts as 1); lowest index on ties. n >= 1. */
void ds_eval_mc_pick(const double *ll, const size_t *len, size_t n, size_t *best,
                     size_t *best_norm);

/* ---- sharding and reports ------------------------------------------------------- */

/* Whether item i (0-based) belongs to shard k of n (1 <= k <= n): i % n == k-1. */
bool ds_eval_in_shard(int64_t i, int k, int n);


struct ds_eval_task_report {
    char *name; /* task name: the file's base name without .jsonl/.txt */
    char *file; /* the file as given */
    struct ds_eval_stats st;
};

/* A run's report: what --json writes and --merge reads. */
struct ds_eval_report {
    char *model;        /* path as given, or NULL */
    char *model_sha256; /* or NULL */
    char *options;      /* a JSON object text of the options that change the numbers */
    int shard_k, shard_n; /* 0, 0: unsharded (or merged) */
    double wall_s;
    struct ds_eval_task_report *tasks;
    size_t n_tasks;
};

void ds_eval_report_init(struct ds_eval_report *r);
void ds_eval_report_release(struct ds_eval_report *r);
/* Appends a task (name and file copied; st copied). */
ds_err ds_eval_report_add(struct ds_eval_report *r, const char *name, const char *file,
                          const struct ds_eval_stats *st);

/*
 * JSON report (malloc'd text, ending in a newline):
 *   {"tool": "ds-eval", "version": V, "model": {"path": P, "sha256": H},
 *    "options": {...}, "shard": {"k": K, "n": N} or null, "wall_s": S,
 *    "tasks": [{"name", "file", "kind",
 *               "metrics": {NAME: {"value": V, "stderr": E}, ...},
 *               "counts": {"n", "n_windows", "n_bad", "correct", ...},
 *               "sums": {"nll": HEX, ...}}, ...]}
 * Metrics are computed from counts and sums only, so a merged report's metrics
 * are byte for byte those of the unsharded run. NaN is written as null.
 */
ds_err ds_eval_report_json(const struct ds_eval_report *r, char **out);
/* Parses a report; errors name `name`. */
ds_err ds_eval_report_parse(const char *json, const char *name, struct ds_eval_report *out);
/* Merges shard reports into out (initialised empty): the same model sha256,
 * options and tasks in the same order, shards 1..N of one N each exactly once
 * (DS_ERR_ARG otherwise, naming the problem). wall_s is the sum. */
ds_err ds_eval_report_merge(const struct ds_eval_report *shards, size_t n,
                            struct ds_eval_report *out);

#ifdef __cplusplus
}
#endif
#endif
