/* ds-distill - train a student model: from a teacher (distillation), or from
 * data alone. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_TEACHER = DS_OPT_TOOL,
    OPT_INIT,
    OPT_VOCAB,
    OPT_KEEP_LAYERS,
    OPT_KEEP_EXPERTS,
    OPT_DATA,
    OPT_VALID,
    OPT_STEPS,
    OPT_BATCH,
    OPT_CTX,
    OPT_ACCUM,
    OPT_LR,
    OPT_MIN_LR,
    OPT_WARMUP,
    OPT_WEIGHT_DECAY,
    OPT_CLIP,
    OPT_TEMPERATURE,
    OPT_ALPHA,
    OPT_KL,
    OPT_TOPK,
    OPT_BALANCE_GAMMA,
    OPT_SEQ_AUX,
    OPT_SEED,
    OPT_SAVE_EVERY,
    OPT_CHECKPOINT,
    OPT_RESUME,
    OPT_EVAL_EVERY,
    OPT_EVAL_WINDOWS,
    OPT_LOG,
    OPT_OUTTYPE,
    OPT_STOP_AT,
    OPT_TEACHER_CACHE,
    OPT_PLOT,
    OPT_TRAIN_TOKENIZER,
    OPT_VOCAB_OUT,
};

static const struct ds_opt options[] = {
    {OPT_TEACHER, 'm', "teacher", "FILE",
     "the teacher model (GGUF, any type ds-run runs); same as the TEACHER operand", NULL, "file",
     false},
    {OPT_INIT, 0, "init", "CONFIG", "start from a random student of this config.json", NULL,
     "file", false},
    {OPT_VOCAB, 0, "vocab", "FILE", "with --init: the GGUF whose tokenizer the student gets",
     "the teacher", "file", false},
    {OPT_KEEP_LAYERS, 0, "keep-layers", "LIST",
     "carve the student from these teacher layers (e.g. 0,2,3)", "all", NULL, false},
    {OPT_KEEP_EXPERTS, 0, "keep-experts", "N",
     "carve the student with the N most used routed experts of each MoE layer", "all", NULL,
     false},
    {OPT_DATA, 0, "data", "TEXT", "training text (UTF-8)", NULL, "file", false},
    {OPT_VALID, 0, "valid", "TEXT", "held-out text for the evaluation loss", NULL, "file", false},
    {OPT_STEPS, 0, "steps", "N", "optimizer steps", "1000", NULL, false},
    {OPT_BATCH, 0, "batch", "N", "sequences per micro-batch", "8", NULL, false},
    {OPT_CTX, 0, "ctx", "N", "tokens per sequence", "128", NULL, false},
    {OPT_ACCUM, 0, "accum", "N", "micro-batches per optimizer step", "1", NULL, false},
    {OPT_LR, 0, "lr", "X", "peak learning rate", "1e-3", NULL, false},
    {OPT_MIN_LR, 0, "min-lr", "X", "learning rate at the end of the cosine schedule", "1e-4",
     NULL, false},
    {OPT_WARMUP, 0, "warmup", "N", "linear warmup steps", "100", NULL, false},
    {OPT_WEIGHT_DECAY, 0, "weight-decay", "X", "AdamW weight decay (not on norms and biases)",
     "0.1", NULL, false},
    {OPT_CLIP, 0, "clip", "X", "clip the global gradient norm to X (0: off)", "1", NULL, false},
    {OPT_TEMPERATURE, 0, "temperature", "X", "distillation temperature", "2", NULL, false},
    {OPT_ALPHA, 0, "alpha", "X", "loss = X * KD + (1 - X) * cross-entropy", "0.5", NULL, false},
    {OPT_KL, 0, "kl", "DIR", "KL direction: forward KL(teacher||student) or reverse", "forward",
     "forward|reverse", false},
    {OPT_TOPK, 0, "topk", "K", "distil from the teacher's K largest logits (0: all)", "0", NULL,
     false},
    {OPT_BALANCE_GAMMA, 0, "balance-gamma", "X",
     "expert bias update speed (auxiliary-loss-free balancing; 0: off)", "0.001", NULL, false},
    {OPT_SEQ_AUX, 0, "seq-aux", "X", "weight of the sequence-wise balance loss (0: off)", "0",
     NULL, false},
    {OPT_SEED, 0, "seed", "N", "seed of the initialisation and the data order", "1", NULL, false},
    {OPT_SAVE_EVERY, 0, "save-every", "N", "save a checkpoint every N steps (0: at the end only)",
     "0", NULL, false},
    {OPT_CHECKPOINT, 0, "checkpoint", "DIR", "checkpoint directory", "OUTPUT.ckpt", "dir", false},
    {OPT_RESUME, 0, "resume", "DIR", "continue the run saved in checkpoint DIR", NULL, "dir",
     false},
    {OPT_EVAL_EVERY, 0, "eval-every", "N",
     "held-out loss every N steps (with --valid; also before and after training)", "0", NULL,
     false},
    {OPT_EVAL_WINDOWS, 0, "eval-windows", "N", "evaluate at most N held-out sequences", "64",
     NULL, false},
    {OPT_LOG, 0, "log", "FILE", "write one JSON object of metrics per step (JSONL)", NULL, "file",
     false},
    {OPT_OUTTYPE, 0, "outtype", "TYPE", "type of the student's matrices", "f32", "f32|f16|bf16",
     false},
    {OPT_STOP_AT, 0, "stop-at", "N",
     "stop after step N with a checkpoint and no output, to be resumed (0: run all steps)", "0",
     NULL, false},
    {OPT_TEACHER_CACHE, 0, "teacher-cache", "DIR",
     "cache the teacher's top-k logits in DIR (made once, reused)", NULL, "dir", false},
    {OPT_PLOT, 0, "plot", "FILE", "write the loss curves as SVG", NULL, "file", false},
    {OPT_TRAIN_TOKENIZER, 0, "train-tokenizer", "N",
     "train a BPE tokenizer of N tokens on --data", NULL, NULL, false},
    {OPT_VOCAB_OUT, 0, "vocab-out", "FILE", "the vocabulary --train-tokenizer writes", NULL,
     "file", false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

/* ---- signals: finish the step, save, then die of the signal ------------------------------ */

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig)
{
    stop_signal = sig;
}

/* SIGINT and SIGTERM, unless ignored (a background job of a script). */
static void catch_stop(void)
{
    const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        struct sigaction sa, old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- the run --------------------------------------------------------------------------- */

struct run {
    struct ds_cli *c;
    struct ds_tmodel *m;
    struct ds_trainer *tr;
    struct ds_train_opts o;
    /* teacher */
    struct ds_model *teacher;
    struct ds_ctx *tctx;
    int64_t topk;
    float *tlogits;          /* (batch, ctx, V) */
    int32_t *tids;           /* (batch, ctx, topk) */
    float *tvals;
    struct ds_tcache *tcache; /* --teacher-cache: top-k logits by window id */
    /* data */
    int32_t *train, *valid;
    size_t n_train, n_valid;
    int64_t eval_windows;
    /* output */
    FILE *log;
    const char *ckpt;
    bool progress;
    double t_start;
    int64_t step0;
    /* --plot: the curves so far */
    const char *plot;
    double *p_step, *p_loss, *p_ce, *p_vstep, *p_valid;
    size_t p_n, p_cap, p_vn, p_vcap;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads and tokenizes a text file (no BOS). Exits on failure, naming it. */
static int32_t *tokenize(struct ds_cli *c, const struct ds_tokenizer *tok, const char *path,
                         size_t *n)
{
    char *text = NULL;
    size_t len;
    int32_t *ids = NULL;
    ds_err e = ds_read_file(path, (size_t)1 << 31, &text, &len);
    if (e != DS_OK)
        ds_cli_fail(c, e);
    if (ds_tokenizer_encode(tok, text, len, false, false, &ids, n) != DS_OK) {
        ds_cli_error(c, "'%s': %s", path, ds_errmsg());
        exit(DS_EXIT_FAILURE);
    }
    free(text);
    return ids;
}

/* The teacher's view of a micro-batch of n windows (their ids win, their
 * tokens n x (ctx + 1)) into b: full logits, or the top-k. This is where a
 * cache of teacher logits keyed by window id plugs in. */
static ds_err teacher_batch(struct run *r, int64_t n, const int64_t *win, const int32_t *tokens,
                            struct ds_batch *b)
{
    const int64_t C = r->o.ctx, V = ds_model_n_vocab(r->teacher);
    for (int64_t s = 0; r->tcache && s < n; s++) {
        ds_err e = ds_tcache_get(r->tcache, (uint64_t)win[s], r->tids + s * C * r->topk,
                                 r->tvals + s * C * r->topk);
        if (e != DS_OK)
            return e;
    }
    for (int64_t s = 0; !r->tcache && s < n; s++) {
        float *lg = r->tlogits + s * C * V;
        ds_ctx_reset(r->tctx);
        ds_err e = ds_forward(r->tctx, tokens + s * (C + 1), (size_t)C, lg, true);
        if (e != DS_OK)
            return e;
        if (r->topk > 0)
            for (int64_t t = 0; t < C; t++)
                ds_logits_topk(lg + t * V, V, r->topk, r->tids + (s * C + t) * r->topk,
                               r->tvals + (s * C + t) * r->topk);
    }
    if (r->topk > 0) {
        b->teacher_topk = r->topk;
        b->teacher_ids = r->tids;
        b->teacher_vals = r->tvals;
    } else {
        b->teacher_logits = r->tlogits;
    }
    return DS_OK;
}

/* Mean cross-entropy over up to eval_windows consecutive held-out windows. */
static ds_err evaluate(struct run *r, double *out)
{
    const int64_t C = r->o.ctx, B = r->o.batch;
    int64_t nw = (int64_t)((r->n_valid - 1) / (size_t)C), done = 0;
    double sum = 0;
    if (nw > r->eval_windows)
        nw = r->eval_windows;
    while (done < nw) {
        int64_t n = nw - done < B ? nw - done : B;
        struct ds_loss l;
        int32_t *tok = malloc((size_t)(n * (C + 1)) * sizeof(int32_t));
        if (!tok)
            return DS_ERR_NOMEM;
        for (int64_t s = 0; s < n; s++)
            memcpy(tok + s * (C + 1), r->valid + (done + s) * C, (size_t)(C + 1) * sizeof(int32_t));
        struct ds_batch b = {.n_seq = n, .n_tok = C, .tokens = tok};
        ds_err e = ds_trainer_eval(r->tr, &b, &l);
        free(tok);
        if (e != DS_OK)
            return e;
        sum += l.ce * (double)n;
        done += n;
    }
    *out = sum / (double)nw;
    return DS_OK;
}

static void fmt_eta(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 360000)
        snprintf(buf, cap, "--");
    else if (s >= 3600)
        snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

static void draw_progress(struct run *r, const struct ds_step_stats *st, double tps, bool end)
{
    static double last;
    double t = now();
    char eta[32];
    if (!r->progress || (!end && t - last < 0.15))
        return;
    last = t;
    int64_t done = st->step - r->step0, left = r->o.steps - st->step;
    fmt_eta(eta, sizeof(eta), done > 0 ? (t - r->t_start) / (double)done * (double)left : -1);
    fprintf(stderr, "\r%s: step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s   ", r->c->prog,
            (long long)st->step, (long long)r->o.steps, st->loss.loss, tps, eta);
    if (end)
        fputc('\n', stderr);
}

static void log_step(struct run *r, const struct ds_step_stats *st, double tps, double valid)
{
    if (!r->log)
        return;
    fprintf(r->log,
            "{\"step\":%lld,\"loss\":%.9g,\"ce\":%.9g,\"kd\":%.9g,\"aux\":%.9g,\"lr\":%.9g,"
            "\"grad_norm\":%.9g,\"tokens_per_s\":%.1f",
            (long long)st->step, st->loss.loss, st->loss.ce, st->loss.kd, st->loss.aux, st->lr,
            st->grad_norm, tps);
    if (!isnan(valid))
        fprintf(r->log, ",\"valid_loss\":%.9g", valid);
    fputs("}\n", r->log);
    fflush(r->log);
}

/* Appends (x, a, b) to the plot arrays xs/as/bs (bs may be NULL). */
static void plot_push(struct run *r, double **xs, double **as, double **bs, size_t *n,
                      size_t *cap, double x, double a, double b)
{
    if (!r->plot)
        return;
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 256;
        double *nx = realloc(*xs, nc * sizeof(double)), *na, *nb = NULL;
        if (nx)
            *xs = nx;
        na = nx ? realloc(*as, nc * sizeof(double)) : NULL;
        if (na)
            *as = na;
        if (na && bs && (nb = realloc(*bs, nc * sizeof(double))))
            *bs = nb;
        if (!nx || !na || (bs && !nb))
            ds_cli_fail(r->c, DS_ERR_NOMEM);
        *cap = nc;
    }
    (*xs)[*n] = x;
    (*as)[*n] = a;
    if (bs)
        (*bs)[*n] = b;
    (*n)++;
}

/* Writes the --plot file: training loss (and its cross-entropy part when
 * distilling) per step, held-out loss at each evaluation. */
static void write_plot(struct run *r)
{
    struct ds_plot_series s[3];
    size_t n = 0;
    struct ds_plot p = {r->teacher ? "ds-distill: distillation" : "ds-distill: training",
                        "step", "loss (nats/token)", 0, 0};
    ds_err e;
    if (!r->plot)
        return;
    s[n++] = (struct ds_plot_series){"training loss", r->p_step, r->p_loss, r->p_n};
    if (r->teacher)
        s[n++] = (struct ds_plot_series){"training cross-entropy", r->p_step, r->p_ce, r->p_n};
    if (r->valid)
        s[n++] = (struct ds_plot_series){"held-out cross-entropy", r->p_vstep, r->p_valid,
                                         r->p_vn};
    if ((e = ds_plot_write(r->plot, DS_WRITE_FORCE, &p, s, n)) != DS_OK)
        ds_cli_fail(r->c, e);
}

static void log_eval(struct run *r, int64_t step, double valid)
{
    if (r->log) {
        fprintf(r->log, "{\"step\":%lld,\"valid_loss\":%.9g}\n", (long long)step, valid);
        fflush(r->log);
    }
    ds_cli_info(r->c, "step %lld: held-out loss %.4f", (long long)step, valid);
    plot_push(r, &r->p_vstep, &r->p_valid, NULL, &r->p_vn, &r->p_vcap, (double)step, valid, 0);
}

static void save_checkpoint(struct run *r)
{
    ds_err e;
    if (!r->ckpt)
        return;
    if ((e = ds_checkpoint_save(r->tr, r->ckpt)) != DS_OK)
        ds_cli_fail(r->c, e);
    ds_cli_info(r->c, "checkpoint saved to '%s' at step %lld", r->ckpt,
                (long long)ds_trainer_step_count(r->tr));
}

/* Trains until o.steps, step stop_at (> 0) or a signal. */
static void train(struct run *r, int64_t eval_every, int64_t save_every, int64_t stop_at)
{
    const int64_t B = r->o.batch, C = r->o.ctx, V = ds_tmodel_n_vocab(r->m);
    int32_t *tok = malloc((size_t)(B * (C + 1)) * sizeof(int32_t));
    int64_t *win = malloc((size_t)B * sizeof(int64_t));
    ds_err e = DS_OK;
    (void)V;
    if (!tok || !win)
        ds_cli_fail(r->c, DS_ERR_NOMEM);
    r->t_start = now();
    r->step0 = ds_trainer_step_count(r->tr);
    if (r->valid && r->step0 == 0) {
        double v;
        if ((e = evaluate(r, &v)) != DS_OK)
            ds_cli_fail(r->c, e);
        log_eval(r, 0, v);
    }
    catch_stop();
    while (!stop_signal && ds_trainer_step_count(r->tr) < r->o.steps &&
           (stop_at <= 0 || ds_trainer_step_count(r->tr) < stop_at)) {
        struct ds_step_stats st;
        double t0 = now(), valid = NAN;
        for (int64_t a = 0; a < r->o.accum && e == DS_OK; a++) {
            struct ds_batch b = {.n_seq = B, .n_tok = C, .tokens = tok};
            e = ds_trainer_next_windows(r->tr, B, win, tok);
            if (e == DS_OK && r->teacher)
                e = teacher_batch(r, B, win, tok, &b);
            if (e == DS_OK)
                e = ds_trainer_accumulate(r->tr, &b, NULL);
        }
        if (e == DS_OK)
            e = ds_trainer_update(r->tr, &st);
        if (e != DS_OK)
            ds_cli_fail(r->c, e);
        double tps = (double)(B * C * r->o.accum) / (now() - t0);
        bool last = st.step == r->o.steps;
        if (r->valid && ((eval_every > 0 && st.step % eval_every == 0) || last)) {
            if ((e = evaluate(r, &valid)) != DS_OK)
                ds_cli_fail(r->c, e);
            ds_cli_info(r->c, "step %lld: held-out loss %.4f", (long long)st.step, valid);
            plot_push(r, &r->p_vstep, &r->p_valid, NULL, &r->p_vn, &r->p_vcap,
                      (double)st.step, valid, 0);
        }
        plot_push(r, &r->p_step, &r->p_loss, &r->p_ce, &r->p_n, &r->p_cap, (double)st.step,
                  st.loss.loss, st.loss.ce);
        log_step(r, &st, tps, valid);
        draw_progress(r, &st, tps, last || stop_signal || st.step == stop_at);
        if (save_every > 0 && st.step % save_every == 0 && !last)
            save_checkpoint(r);
    }
    free(tok);
    free(win);
}

static int64_t *parse_layers(struct ds_cli *c, const char *s, size_t *n)
{
    int64_t *v = NULL;
    size_t cap = 0;
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > 1 << 20 || (*end && *end != ','))
            ds_cli_usage_error(c, "invalid layer list '%s' for --keep-layers", s);
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            v = realloc(v, cap * sizeof(*v));
            if (!v)
                ds_cli_fail(c, DS_ERR_NOMEM);
        }
        v[(*n)++] = x;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            ds_cli_usage_error(c, "invalid layer list '%s' for --keep-layers", s);
    }
    if (!*n)
        ds_cli_usage_error(c, "invalid layer list '%s' for --keep-layers", s);
    return v;
}

/* Progress of the teacher cache: windows done of total, on stderr. */
static int cache_progress(void *ud, uint64_t done, uint64_t total, const char *what)
{
    struct run *r = ud;
    static double last;
    double t = now();
    if (!r->progress || (done < total && t - last < 0.15))
        return 0;
    last = t;
    fprintf(stderr, "\r%s: %s cache: window %llu/%llu   %s", r->c->prog, what,
            (unsigned long long)done, (unsigned long long)total, done == total ? "\n" : "");
    return 0;
}

/* --teacher-cache: opens the cache for this teacher, text, --ctx and --topk,
 * running the teacher over the whole text first when there is none. */
static void open_teacher_cache(struct run *r, const char *dir, const char *teacher)
{
    struct ds_tcache_key key;
    ds_err e = ds_tcache_key_init(&key, teacher, r->train, r->n_train,
                                  (uint32_t)ds_model_n_vocab(r->teacher), (uint32_t)r->o.ctx,
                                  (uint32_t)r->topk);
    if (e != DS_OK)
        ds_cli_fail(r->c, e);
    e = ds_tcache_open(dir, &key, &r->tcache);
    if (e == DS_ERR_NOT_FOUND) {
        ds_cli_info(r->c, "teacher cache '%s': running the teacher over %llu windows", dir,
                    (unsigned long long)ds_tcache_n_windows(&key));
        e = ds_tcache_build(dir, &key, r->teacher, r->train, 0, cache_progress, r);
        if (e == DS_OK)
            e = ds_tcache_open(dir, &key, &r->tcache);
    } else if (e == DS_OK) {
        ds_cli_info(r->c, "teacher cache '%s': reused", dir);
    }
    if (e != DS_OK)
        ds_cli_fail(r->c, e);
}

/* --train-tokenizer: trains on the --data text and writes the vocabulary. */
static void train_tokenizer(struct ds_cli *c, const char *data, long long n, const char *out)
{
    struct ds_bpe_opts o;
    struct ds_bpe_stats st;
    struct ds_meta *m = ds_meta_new();
    char *text = NULL;
    size_t len;
    ds_err e;

    if (!m)
        ds_cli_fail(c, DS_ERR_NOMEM);
    if ((e = ds_read_file(data, (size_t)1 << 31, &text, &len)) != DS_OK)
        ds_cli_fail(c, e);
    ds_bpe_opts_init(&o);
    o.vocab_size = (uint32_t)n;
    if ((e = ds_bpe_train(text, len, &o, m, &st)) != DS_OK) {
        ds_cli_error(c, "'%s': %s", data, ds_errmsg());
        exit(DS_EXIT_FAILURE);
    }
    if ((e = ds_bpe_write_vocab(m, NULL, out, c->force ? DS_WRITE_FORCE : 0)) != DS_OK)
        ds_cli_fail(c, e);
    if (c->level >= 2)
        fprintf(stderr, "%s: tokenizer: %lld tokens (%lu merges%s) written to '%s'; the text is "
                        "%llu tokens (%.2f bytes per token)\n",
                c->prog, n, (unsigned long)st.n_merges, st.n_padding ? ", padded" : "", out,
                (unsigned long long)st.n_tokens,
                st.n_tokens ? (double)len / (double)st.n_tokens : 0.0);
    free(text);
    ds_meta_free(m);
}

static bool exists(const char *path)
{
    struct stat sb;
    return path && strcmp(path, "-") && stat(path, &sb) == 0;
}

/* Frees what main allocated (every exit path after the allocations calls it:
 * nothing is left for valgrind to call lost). */
static void run_free(struct run *r, struct ds_tokenizer *tok)
{
    ds_tokenizer_free(tok);
    ds_trainer_free(r->tr);
    ds_tmodel_free(r->m);
    ds_ctx_free(r->tctx);
    ds_model_free(r->teacher);
    free(r->train);
    free(r->valid);
    free(r->tlogits);
    free(r->tids);
    free(r->tvals);
    ds_tcache_free(r->tcache);
    free(r->p_step);
    free(r->p_loss);
    free(r->p_ce);
    free(r->p_vstep);
    free(r->p_valid);
}

int main(int argc, char **argv)
{
    struct ds_cli c = {
        .prog = "ds-distill",
        .synopsis = "--data TEXT [options] [TEACHER] [-o STUDENT]",
        .summary = "Train a student model on a text: distilled from a TEACHER model (GGUF) or "
                   "from the data alone.\nThe student is a random model of --init CONFIG, or "
                   "carved from the teacher.",
        .opts = options,
        .output_file = true,
    };
    struct run r = {.c = &c, .eval_windows = 64};
    const char *arg, *teacher = NULL, *init = NULL, *vocab = NULL, *layers_s = NULL,
                     *data = NULL, *valid = NULL, *resume = NULL, *log = NULL, *ckpt = NULL,
                     *tcache = NULL, *vocab_out = NULL;
    long long keep_experts = 0, eval_every = 0, save_every = 0, stop_at = 0, tok_size = 0;
    enum ds_type outtype = DS_TYPE_F32;
    struct ds_tokenizer *tok = NULL;
    bool steps_set = false;
    char ckbuf[4096];
    int id;
    ds_err e;

    ds_cli_init(&c, argc, argv);
    ds_train_opts_default(&r.o);
    while ((id = ds_cli_next(&c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_TEACHER: teacher = arg; break;
        case OPT_INIT: init = arg; break;
        case OPT_VOCAB: vocab = arg; break;
        case OPT_KEEP_LAYERS: layers_s = arg; break;
        case OPT_KEEP_EXPERTS: keep_experts = ds_cli_int(&c, "--keep-experts", arg, 1, 1 << 20); break;
        case OPT_DATA: data = arg; break;
        case OPT_VALID: valid = arg; break;
        case OPT_STEPS:
            r.o.steps = ds_cli_int(&c, "--steps", arg, 1, 1LL << 40);
            steps_set = true;
            break;
        case OPT_BATCH: r.o.batch = ds_cli_int(&c, "--batch", arg, 1, 1 << 16); break;
        case OPT_CTX: r.o.ctx = ds_cli_int(&c, "--ctx", arg, 1, 1 << 20); break;
        case OPT_ACCUM: r.o.accum = ds_cli_int(&c, "--accum", arg, 1, 1 << 16); break;
        case OPT_LR: r.o.lr = ds_cli_float(&c, "--lr", arg); break;
        case OPT_MIN_LR: r.o.min_lr = ds_cli_float(&c, "--min-lr", arg); break;
        case OPT_WARMUP: r.o.warmup = ds_cli_int(&c, "--warmup", arg, 0, 1LL << 40); break;
        case OPT_WEIGHT_DECAY: r.o.weight_decay = ds_cli_float(&c, "--weight-decay", arg); break;
        case OPT_CLIP: r.o.clip = ds_cli_float(&c, "--clip", arg); break;
        case OPT_TEMPERATURE: r.o.temperature = ds_cli_float(&c, "--temperature", arg); break;
        case OPT_ALPHA: r.o.alpha = ds_cli_float(&c, "--alpha", arg); break;
        case OPT_KL:
            if (!strcmp(arg, "forward"))
                r.o.kl = DS_KL_FORWARD;
            else if (!strcmp(arg, "reverse"))
                r.o.kl = DS_KL_REVERSE;
            else
                ds_cli_usage_error(&c, "invalid value '%s' for --kl (forward or reverse)", arg);
            break;
        case OPT_TOPK: r.topk = ds_cli_int(&c, "--topk", arg, 0, 1 << 20); break;
        case OPT_BALANCE_GAMMA: r.o.balance_gamma = ds_cli_float(&c, "--balance-gamma", arg); break;
        case OPT_SEQ_AUX: r.o.seq_aux = ds_cli_float(&c, "--seq-aux", arg); break;
        case OPT_SEED: r.o.seed = (uint64_t)ds_cli_int(&c, "--seed", arg, 0, INT64_MAX); break;
        case OPT_SAVE_EVERY: save_every = ds_cli_int(&c, "--save-every", arg, 0, 1LL << 40); break;
        case OPT_CHECKPOINT: ckpt = arg; break;
        case OPT_RESUME: resume = arg; break;
        case OPT_EVAL_EVERY: eval_every = ds_cli_int(&c, "--eval-every", arg, 0, 1LL << 40); break;
        case OPT_EVAL_WINDOWS:
            r.eval_windows = ds_cli_int(&c, "--eval-windows", arg, 1, 1LL << 40);
            break;
        case OPT_LOG: log = arg; break;
        case OPT_STOP_AT: stop_at = ds_cli_int(&c, "--stop-at", arg, 0, 1LL << 40); break;
        case OPT_TEACHER_CACHE: tcache = arg; break;
        case OPT_PLOT: r.plot = arg; break;
        case OPT_TRAIN_TOKENIZER:
            tok_size = ds_cli_int(&c, "--train-tokenizer", arg, DS_BPE_MIN_VOCAB,
                                  DS_BPE_MAX_VOCAB);
            break;
        case OPT_VOCAB_OUT: vocab_out = arg; break;
        case OPT_OUTTYPE:
            if (!strcmp(arg, "f32"))
                outtype = DS_TYPE_F32;
            else if (!strcmp(arg, "f16"))
                outtype = DS_TYPE_F16;
            else if (!strcmp(arg, "bf16"))
                outtype = DS_TYPE_BF16;
            else
                ds_cli_usage_error(&c, "invalid value '%s' for --outtype (f32, f16 or bf16)", arg);
            break;
        default: break;
        }
    }
    if (c.n_operands > 1)
        ds_cli_usage_error(&c, "too many operands (one TEACHER; the output goes with -o)");
    if (c.n_operands == 1) {
        if (teacher)
            ds_cli_usage_error(&c, "the teacher is given twice (-m and an operand)");
        teacher = c.operands[0];
    }
    if (!data)
        ds_cli_usage_error(&c, "no training text; give one with --data TEXT");
    if (!tok_size != !vocab_out)
        ds_cli_usage_error(&c, "--train-tokenizer N and --vocab-out FILE go together");
    if (tok_size) {
        if (resume || teacher || (init && vocab))
            ds_cli_usage_error(&c, "--train-tokenizer makes the tokenizer of a new model: it "
                                   "excludes a teacher, --resume and --vocab");
        if (exists(vocab_out) && !c.force) {
            ds_cli_error(&c, "'%s' already exists; use -f to overwrite it", vocab_out);
            return DS_EXIT_FAILURE;
        }
        ds_set_threads(c.threads);
        train_tokenizer(&c, data, tok_size, vocab_out);
        if (!init) { // the tokenizer was all there was to do
            ds_cli_finish_stdout(&c);
            return DS_EXIT_OK;
        }
        vocab = vocab_out;
    }
    if (tcache && (!teacher || r.topk <= 0))
        ds_cli_usage_error(&c, "--teacher-cache keeps a teacher's top-k logits: it needs a "
                               "teacher and --topk K");
    if (resume && (init || layers_s || keep_experts))
        ds_cli_usage_error(&c, "--resume continues a saved student; --init, --keep-layers and "
                               "--keep-experts make a new one");
    if (init && (layers_s || keep_experts))
        ds_cli_usage_error(&c, "--init and --keep-layers/--keep-experts exclude each other");
    if (!resume && !init && !teacher)
        ds_cli_usage_error(&c, "no student: give --init CONFIG (with --vocab FILE), a teacher "
                               "to carve, or --resume DIR");
    if (init && !vocab && !teacher)
        ds_cli_usage_error(&c, "--init needs a tokenizer: give --vocab FILE or a teacher");
    if (teacher && !strcmp(teacher, "-"))
        ds_cli_usage_error(&c, "the teacher must be a file");
    if ((e = ds_train_opts_check(&r.o)) != DS_OK)
        ds_cli_usage_error(&c, "%s", ds_errmsg());
    ds_cli_check_binary_stdout(&c, c.output);
    if (exists(c.output) && !c.force) {
        ds_cli_error(&c, "'%s' already exists; use -f to overwrite it", c.output);
        return DS_EXIT_FAILURE;
    }
    if (!ckpt && c.output && strcmp(c.output, "-")) {
        snprintf(ckbuf, sizeof(ckbuf), "%s.ckpt", c.output);
        ckpt = ckbuf;
    }
    if (stop_at > 0 && !ckpt)
        ds_cli_usage_error(&c, "--stop-at needs a checkpoint directory (--checkpoint or -o FILE)");
    ds_set_threads(c.threads);

    // teacher
    if (teacher) {
        if ((e = ds_model_load(teacher, &r.teacher)) != DS_OK)
            ds_cli_fail(&c, e);
        if (ds_model_vocab_only(r.teacher)) {
            ds_cli_error(&c, "'%s' holds a vocabulary only; it cannot be a teacher", teacher);
            run_free(&r, tok);
            return DS_EXIT_FAILURE;
        }
    }
    // student
    if (resume) {
        if ((e = ds_checkpoint_load(resume, &r.m, &r.tr)) != DS_OK)
            ds_cli_fail(&c, e);
        if (steps_set)
            ds_trainer_set_steps(r.tr, r.o.steps);
        r.o = *ds_trainer_opts(r.tr);
        ds_cli_info(&c, "resuming '%s' at step %lld", resume,
                    (long long)ds_trainer_step_count(r.tr));
    } else if (init) {
        if ((e = ds_tmodel_from_config(init, vocab ? vocab : teacher, r.o.seed, &r.m)) != DS_OK)
            ds_cli_fail(&c, e);
    }
    if ((e = ds_tokenizer_new(r.m ? ds_tmodel_meta(r.m) : ds_model_meta(r.teacher), &tok)) !=
        DS_OK)
        ds_cli_fail(&c, e);
    r.train = tokenize(&c, tok, data, &r.n_train);
    if (valid)
        r.valid = tokenize(&c, tok, valid, &r.n_valid);
    if (r.n_train < (size_t)r.o.ctx + 1) {
        ds_cli_error(&c, "'%s': %zu tokens; at least --ctx + 1 = %lld are needed", data,
                     r.n_train, (long long)r.o.ctx + 1);
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    if (valid && r.n_valid < (size_t)r.o.ctx + 1) {
        ds_cli_error(&c, "'%s': %zu tokens; at least --ctx + 1 = %lld are needed", valid,
                     r.n_valid, (long long)r.o.ctx + 1);
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    if (!r.m) { // carve
        size_t nl = 0;
        int64_t *layers = layers_s ? parse_layers(&c, layers_s, &nl) : NULL;
        size_t ncal = r.n_train < 4096 ? r.n_train : 4096;
        e = ds_tmodel_carve(r.teacher, layers, nl, keep_experts, r.train, ncal, &r.m);
        free(layers);
        if (e != DS_OK)
            ds_cli_fail(&c, e);
    }
    if (!r.tr && (e = ds_trainer_new(r.m, &r.o, &r.tr)) != DS_OK)
        ds_cli_fail(&c, e);
    if ((e = ds_trainer_set_data(r.tr, r.train, r.n_train)) != DS_OK) {
        ds_cli_error(&c, "'%s': %s", data, ds_errmsg());
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    if (r.teacher) {
        const int64_t V = ds_model_n_vocab(r.teacher);
        if (V != ds_tmodel_n_vocab(r.m)) {
            ds_cli_error(&c, "teacher '%s' has %lld tokens, the student %lld: the vocabularies "
                             "must be the same",
                         teacher, (long long)V, (long long)ds_tmodel_n_vocab(r.m));
            run_free(&r, tok);
            return DS_EXIT_FAILURE;
        }
        if (r.topk > V)
            r.topk = V;
        if ((e = ds_ctx_new(r.teacher, r.o.ctx, &r.tctx)) != DS_OK)
            ds_cli_fail(&c, e);
        r.tlogits = malloc((size_t)(r.o.batch * r.o.ctx * V) * sizeof(float));
        if (r.topk > 0) {
            r.tids = malloc((size_t)(r.o.batch * r.o.ctx * r.topk) * sizeof(int32_t));
            r.tvals = malloc((size_t)(r.o.batch * r.o.ctx * r.topk) * sizeof(float));
        }
        if (!r.tlogits || (r.topk > 0 && (!r.tids || !r.tvals)))
            ds_cli_fail(&c, DS_ERR_NOMEM);
        if (tcache)
            open_teacher_cache(&r, tcache, teacher);
    }
    if (log && !(r.log = fopen(log, resume ? "a" : "w"))) {
        ds_cli_error(&c, "cannot open '%s': %s", log, strerror(errno));
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    r.ckpt = ckpt;
    r.progress = ds_cli_progress_enabled(&c);
    ds_cli_info(&c, "student: %lld parameters, %lld layers; %zu training tokens (%lld windows "
                    "of %lld)",
                (long long)ds_tmodel_n_params(r.m), (long long)ds_tmodel_hparams(r.m)->n_layers,
                r.n_train, (long long)ds_trainer_n_windows(r.tr), (long long)r.o.ctx);

    train(&r, eval_every, save_every, stop_at);

    if (stop_signal) {
        int sig = stop_signal;
        if (!r.ckpt)
            ds_cli_warn(&c, "interrupted; no checkpoint directory (--checkpoint), nothing saved");
        save_checkpoint(&r);
        write_plot(&r);
        if (r.ckpt)
            ds_cli_warn(&c, "interrupted at step %lld; checkpoint saved to '%s' (continue with "
                            "--resume)",
                        (long long)ds_trainer_step_count(r.tr), r.ckpt);
        if (r.log)
            fclose(r.log);
        ds_io_cleanup_temps();
        signal(sig, SIG_DFL);
        raise(sig);
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    if (stop_at > 0 && ds_trainer_step_count(r.tr) < r.o.steps) {
        save_checkpoint(&r);
        write_plot(&r);
        if (c.level >= 2)
            fprintf(stderr, "%s: stopped at step %lld; checkpoint saved to '%s'\n", c.prog,
                    (long long)ds_trainer_step_count(r.tr), r.ckpt);
        if (r.log)
            fclose(r.log);
        run_free(&r, tok);
        ds_cli_finish_stdout(&c);
        return DS_EXIT_OK;
    }
    if (ckpt != ckbuf || save_every > 0)
        save_checkpoint(&r);
    write_plot(&r);
    if ((e = ds_tmodel_save(r.m, c.output, outtype, c.force ? DS_WRITE_FORCE : 0)) != DS_OK)
        ds_cli_fail(&c, e);
    if (r.log && fclose(r.log) != 0) {
        ds_cli_error(&c, "error writing '%s': %s", log, strerror(errno));
        run_free(&r, tok);
        return DS_EXIT_FAILURE;
    }
    if (c.level >= 2) {
        fprintf(stderr, "%s: trained %lld steps; student written to '%s'\n", c.prog,
                (long long)ds_trainer_step_count(r.tr), c.output ? c.output : "<stdout>");
    }
    run_free(&r, tok);
    ds_cli_finish_stdout(&c);
    return DS_EXIT_OK;
}
