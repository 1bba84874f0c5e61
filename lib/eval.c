/* eval.c - exact sums, statistics and metrics, perplexity windows, KL
 * divergence against a base log-probabilities file (see ds_eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds_eval.h"
#include "ds_io.h"
#include "error_impl.h"
#include "ds_banned.h"

/* ---- exact sums ------------------------------------------------------------------- */

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

static i128 sum_get(const struct ds_eval_sum *s)
{
    return (i128)(((u128)(uint64_t)s->hi << 64) | s->lo);
}

static void sum_put(struct ds_eval_sum *s, i128 v)
{
    s->hi = (int64_t)(uint64_t)((u128)v >> 64);
    s->lo = (uint64_t)(u128)v;
}

void ds_eval_sum_add(struct ds_eval_sum *s, double x)
{
    double lim = ldexp(1.0, 80);
    if (!(x == x))
        x = lim;
    if (x > lim)
        x = lim;
    if (x < -lim)
        x = -lim;
    sum_put(s, sum_get(s) + (i128)nearbyint(ldexp(x, 40)));
}

void ds_eval_sum_merge(struct ds_eval_sum *s, const struct ds_eval_sum *t)
{
    sum_put(s, sum_get(s) + sum_get(t));
}

double ds_eval_sum_value(const struct ds_eval_sum *s)
{
    return ldexp((double)sum_get(s), -40);
}

void ds_eval_sum_format(const struct ds_eval_sum *s, char buf[33])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t w[2] = {(uint64_t)s->hi, s->lo};
    for (int i = 0; i < 32; i++)
        buf[i] = hex[(w[i / 16] >> (60 - 4 * (i % 16))) & 15];
    buf[32] = '\0';
}

bool ds_eval_sum_parse(const char *str, struct ds_eval_sum *out)
{
    uint64_t w[2] = {0, 0};
    if (!str || strlen(str) != 32)
        return false;
    for (int i = 0; i < 32; i++) {
        char ch = str[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return false;
        w[i / 16] = (w[i / 16] << 4) | (uint64_t)d;
    }
    out->hi = (int64_t)w[0];
    out->lo = w[1];
    return true;
}

/* ---- statistics and metrics --------------------------------------------------------- */

const char *ds_eval_kind_name(enum ds_eval_kind k)
{
    switch (k) {
    case DS_EVAL_PPL: return "perplexity";
    case DS_EVAL_MC: return "multiple_choice";
    case DS_EVAL_GEN: return "generation";
    }
    return NULL;
}

void ds_eval_stats_init(struct ds_eval_stats *s, enum ds_eval_kind kind)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
}

ds_err ds_eval_stats_merge(struct ds_eval_stats *s, const struct ds_eval_stats *t)
{
    DS_RETURN_IF(s->kind != t->kind || s->kld != t->kld, DS_ERR_ARG,
                 "statistics of different kinds cannot be merged");
    s->n += t->n;
    s->n_windows += t->n_windows;
    s->n_bad += t->n_bad;
    s->correct += t->correct;
    s->correct_norm += t->correct_norm;
    s->exact += t->exact;
    s->format += t->format;
    s->same_top += t->same_top;
    ds_eval_sum_merge(&s->nll, &t->nll);
    ds_eval_sum_merge(&s->nll2, &t->nll2);
    ds_eval_sum_merge(&s->kl, &t->kl);
    ds_eval_sum_merge(&s->kl2, &t->kl2);
    ds_eval_sum_merge(&s->nll_base, &t->nll_base);
    ds_eval_sum_merge(&s->nll_base2, &t->nll_base2);
    ds_eval_sum_merge(&s->nll_nll_base, &t->nll_nll_base);
    ds_eval_sum_merge(&s->dnll, &t->dnll);
    ds_eval_sum_merge(&s->dnll2, &t->dnll2);
    return DS_OK;
}

/* Mean and standard error of the mean from a sum and a sum of squares. */
static void mean_se(const struct ds_eval_sum *sum, const struct ds_eval_sum *sum2, int64_t n,
                    double *mean, double *se)
{
    double m, v;
    if (n < 1) {
        *mean = *se = NAN;
        return;
    }
    m = ds_eval_sum_value(sum) / (double)n;
    v = ds_eval_sum_value(sum2) / (double)n - m * m;
    *mean = m;
    *se = n > 1 ? sqrt(v > 0 ? v / (double)(n - 1) : 0.0) : NAN;
}

static void fraction(int64_t k, int64_t n, double *p, double *se)
{
    if (n < 1) {
        *p = *se = NAN;
        return;
    }
    *p = (double)k / (double)n;
    *se = n > 1 ? sqrt(*p * (1.0 - *p) / (double)(n - 1)) : NAN;
}

static size_t put_metric(struct ds_eval_metric *out, size_t cap, size_t i, const char *name,
                         double v, double se, bool higher)
{
    if (i < cap)
        out[i] = (struct ds_eval_metric){name, v, se, higher};
    return i + 1;
}

size_t ds_eval_metrics(const struct ds_eval_stats *s, struct ds_eval_metric *out, size_t cap)
{
    size_t i = 0;
    double v, se;
    switch (s->kind) {
    case DS_EVAL_PPL: {
        double nll, nll_se;
        mean_se(&s->nll, &s->nll2, s->n, &nll, &nll_se);
        i = put_metric(out, cap, i, "ppl", exp(nll), exp(nll) * nll_se, false);
        i = put_metric(out, cap, i, "nll", nll, nll_se, false);
        if (s->kld) {
            double kl, kl_se, b, b_se, d, d_se, ppl = exp(nll), pb, va, vb, u;
            mean_se(&s->kl, &s->kl2, s->n, &kl, &kl_se);
            mean_se(&s->nll_base, &s->nll_base2, s->n, &b, &b_se);
            mean_se(&s->dnll, &s->dnll2, s->n, &d, &d_se);
            pb = exp(b);
            i = put_metric(out, cap, i, "kld", kl, kl_se, false);
            fraction(s->same_top, s->n, &v, &se);
            i = put_metric(out, cap, i, "same_top", v, se, true);
            i = put_metric(out, cap, i, "ppl_base", pb, pb * b_se, false);
            /* llama.cpp: u^2 = (ppl se_a)^2 + (pb se_b)^2 - 2 ppl pb cov(a, b)/(n-1),
             * with 2 cov = va + vb - vd: */
            va = nll_se * nll_se;
            vb = b_se * b_se;
            u = (ppl - pb) * (ppl * va - pb * vb) + ppl * pb * d_se * d_se;
            i = put_metric(out, cap, i, "delta_ppl", ppl - pb, sqrt(u > 0 ? u : 0), false);
            i = put_metric(out, cap, i, "ln_ppl_ratio", d, d_se, false);
        }
        break;
    }
    case DS_EVAL_MC:
        fraction(s->correct, s->n, &v, &se);
        i = put_metric(out, cap, i, "acc", v, se, true);
        fraction(s->correct_norm, s->n, &v, &se);
        i = put_metric(out, cap, i, "acc_norm", v, se, true);
        break;
    case DS_EVAL_GEN:
        fraction(s->correct, s->n, &v, &se);
        i = put_metric(out, cap, i, "acc", v, se, true);
        fraction(s->exact, s->n, &v, &se);
        i = put_metric(out, cap, i, "exact_match", v, se, true);
        fraction(s->format, s->n, &v, &se);
        i = put_metric(out, cap, i, "format", v, se, true);
        break;
    }
    return i < cap ? i : cap;
}

bool ds_eval_metric_known(const char *name)
{
    static const char *const names[] = {"ppl", "nll", "kld", "same_top", "ppl_base",
                                        "delta_ppl", "ln_ppl_ratio", "acc", "acc_norm",
                                        "exact_match", "format"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i]))
            return true;
    return false;
}

/* ---- perplexity ------------------------------------------------------------------------ */

double ds_eval_logsumexp(const float *x, int64_t n)
{
    double mx = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (int64_t i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    return mx + log(s);
}

int64_t ds_eval_ppl_windows(int64_t n_tokens, int64_t n_ctx)
{
    return n_ctx > 0 && n_tokens > 0 ? n_tokens / n_ctx : 0;
}

int64_t ds_eval_ppl_scored(int64_t n_ctx)
{
    return n_ctx >= 2 ? n_ctx - 1 - n_ctx / 2 : 0;
}

/* ---- base log-probabilities file --------------------------------------------------------- */

#define LOGP_MAGIC "DSEVLOGP"
#define LOGP_VERSION 1
#define LOGP_RANGE 25.0
#define LOGP_MAX_TOKENS ((int64_t)1 << 31)

struct ds_eval_logits {
    struct ds_writer *w;
    struct ds_reader *r;
    char *name;
    int32_t n_vocab, n_ctx;
    int64_t n_windows;
    int32_t *tokens;
    int64_t n_tokens;
    uint8_t *rec; /* one record */
    size_t rec_size;
    double *lp;   /* n_vocab scratch */
};

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static ds_err logits_alloc(struct ds_eval_logits *f, const char *path, int32_t n_vocab)
{
    f->n_vocab = n_vocab;
    f->rec_size = 8 + 4 + 4 + 4 + 2 * (size_t)n_vocab;
    f->name = ds_strdup(path ? path : "-");
    f->rec = ds_malloc(f->rec_size);
    f->lp = ds_malloc(sizeof(double) * (size_t)n_vocab);
    return f->name && f->rec && f->lp ? DS_OK : DS_ERR_NOMEM;
}

ds_err ds_eval_logits_create(const char *path, int32_t n_vocab, int32_t n_ctx,
                             int64_t n_windows, const int32_t *tokens, int64_t n_tokens,
                             struct ds_eval_logits **out)
{
    struct ds_eval_logits *f = NULL;
    uint8_t hdr[32];
    ds_err rc;
    *out = NULL;
    DS_RETURN_IF(n_vocab < 1 || n_ctx < 2 || n_tokens < 0 || n_tokens > LOGP_MAX_TOKENS ||
                 n_windows < 0 || n_windows > ds_eval_ppl_windows(n_tokens, n_ctx),
                 DS_ERR_ARG, "invalid logits file shape");
    f = ds_calloc(1, sizeof(*f));
    if (!f)
        return DS_ERR_NOMEM;
    DS_CHECK(logits_alloc(f, path, n_vocab));
    f->n_ctx = n_ctx;
    f->n_windows = n_windows;
    DS_CHECK(ds_writer_open(&f->w, path, DS_WRITE_FORCE | DS_WRITE_ZSTD, 0, 0));
    memcpy(hdr, LOGP_MAGIC, 8);
    put_u32(hdr + 8, LOGP_VERSION);
    put_u32(hdr + 12, (uint32_t)n_vocab);
    put_u32(hdr + 16, (uint32_t)n_ctx);
    put_u32(hdr + 20, (uint32_t)n_windows);
    put_u64(hdr + 24, (uint64_t)n_tokens);
    DS_CHECK(ds_writer_write(f->w, hdr, sizeof(hdr)));
    for (int64_t i = 0; i < n_tokens; i++) {
        uint8_t b[4];
        put_u32(b, (uint32_t)tokens[i]);
        DS_CHECK(ds_writer_write(f->w, b, 4));
    }
    *out = f;
    return DS_OK;
out:
    ds_eval_logits_free(f);
    return rc;
}

ds_err ds_eval_logits_open(const char *path, int32_t n_vocab, struct ds_eval_logits **out)
{
    struct ds_eval_logits *f = NULL;
    uint8_t hdr[32];
    uint32_t ver, nv, nc, nw;
    uint64_t nt;
    ds_err rc;
    *out = NULL;
    f = ds_calloc(1, sizeof(*f));
    if (!f)
        return DS_ERR_NOMEM;
    DS_CHECK(logits_alloc(f, path, n_vocab));
    DS_CHECK(ds_reader_open(&f->r, path));
    rc = ds_reader_read(f->r, hdr, sizeof(hdr));
    DS_FAIL_IF(rc == DS_ERR_TRUNCATED || (!rc && memcmp(hdr, LOGP_MAGIC, 8)), DS_ERR_FORMAT,
               "'%s': not a ds-eval logits file (written by --save-logits)", f->name);
    DS_CHECK(rc);
    ver = get_u32(hdr + 8);
    nv = get_u32(hdr + 12);
    nc = get_u32(hdr + 16);
    nw = get_u32(hdr + 20);
    nt = get_u64(hdr + 24);
    DS_FAIL_IF(ver != LOGP_VERSION, DS_ERR_UNSUPPORTED,
               "'%s': logits file version %u is not supported (this one reads %d); "
               "write it again with this ds-eval", f->name, ver, LOGP_VERSION);
    DS_FAIL_IF(nv != (uint32_t)n_vocab, DS_ERR_FORMAT,
               "'%s': the logits are over %u tokens but the model's vocabulary has %d",
               f->name, nv, n_vocab);
    DS_FAIL_IF(nc < 2 || nc > (1u << 24), DS_ERR_FORMAT, "'%s': invalid window size %u",
               f->name, nc);
    DS_FAIL_IF(nt > (uint64_t)LOGP_MAX_TOKENS, DS_ERR_LIMIT, "'%s': %llu tokens is too many",
               f->name, (unsigned long long)nt);
    DS_FAIL_IF(nw > nt / nc, DS_ERR_FORMAT, "'%s': %u windows of %u in %llu tokens",
               f->name, nw, nc, (unsigned long long)nt);
    f->n_ctx = (int32_t)nc;
    f->n_windows = nw;
    f->n_tokens = (int64_t)nt;
    // the tokens array grows as they come: a header's claim allocates nothing
    f->tokens = ds_malloc(sizeof(int32_t));
    if (!f->tokens) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (uint64_t i = 0, cap = 1; i < nt; i++) {
        uint8_t b[4];
        uint32_t t;
        if (i == cap) {
            int32_t *p;
            cap = cap * 2 < nt ? cap * 2 : nt;
            p = ds_realloc(f->tokens, sizeof(int32_t) * cap);
            if (!p) {
                rc = DS_ERR_NOMEM;
                goto out;
            }
            f->tokens = p;
        }
        DS_CHECK(ds_reader_read(f->r, b, 4));
        t = get_u32(b);
        DS_FAIL_IF(t >= (uint32_t)n_vocab, DS_ERR_FORMAT,
                   "'%s': token id %u at %llu is out of the vocabulary (%d)", f->name, t,
                   (unsigned long long)i, n_vocab);
        f->tokens[i] = (int32_t)t;
    }
    *out = f;
    return DS_OK;
out:
    ds_eval_logits_free(f);
    return rc;
}

int32_t ds_eval_logits_n_ctx(const struct ds_eval_logits *f)
{
    return f->n_ctx;
}

int64_t ds_eval_logits_n_windows(const struct ds_eval_logits *f)
{
    return f->n_windows;
}

const int32_t *ds_eval_logits_tokens(const struct ds_eval_logits *f, int64_t *n_tokens)
{
    *n_tokens = f->n_tokens;
    return f->tokens;
}

ds_err ds_eval_logits_skip_window(struct ds_eval_logits *f)
{
    DS_RETURN_IF(!f->r, DS_ERR_STATE, "logits file not open for reading");
    return ds_reader_skip(f->r, (uint64_t)f->rec_size * (uint64_t)ds_eval_ppl_scored(f->n_ctx));
}

ds_err ds_eval_logits_commit(struct ds_eval_logits *f)
{
    DS_RETURN_IF(!f->w, DS_ERR_STATE, "logits file not open for writing");
    return ds_writer_commit(f->w);
}

void ds_eval_logits_free(struct ds_eval_logits *f)
{
    if (!f)
        return;
    ds_writer_free(f->w);
    ds_reader_free(f->r);
    free(f->tokens);
    free(f->rec);
    free(f->lp);
    free(f->name);
    free(f);
}

/* One record from the log-probabilities lp[0..n_vocab). */
static void record_pack(struct ds_eval_logits *f, const double *lp, double nll, int32_t top)
{
    uint8_t *p = f->rec;
    double mx = lp[top], mn = mx;
    float lo, step;
    for (int32_t i = 0; i < f->n_vocab; i++)
        if (lp[i] < mn)
            mn = lp[i];
    if (mn < mx - LOGP_RANGE)
        mn = mx - LOGP_RANGE;
    lo = (float)mn;
    step = (float)((mx - (double)lo) / 65535.0);
    if (!(step > 0))
        step = 1.0f;
    memcpy(p, &nll, 8);
    put_u32(p + 8, (uint32_t)top);
    memcpy(p + 12, &lo, 4);
    memcpy(p + 16, &step, 4);
    p += 20;
    for (int32_t i = 0; i < f->n_vocab; i++) {
        double q = nearbyint((lp[i] - (double)lo) / (double)step);
        uint16_t v = (uint16_t)(q < 0 ? 0 : q > 65535 ? 65535 : q);
        p[2 * i] = (uint8_t)v;
        p[2 * i + 1] = (uint8_t)(v >> 8);
    }
}

/* Base log-probabilities (renormalised) of the record in f->rec into f->lp. */
static void record_unpack(struct ds_eval_logits *f, double *nll, int32_t *top)
{
    const uint8_t *p = f->rec;
    float lo, step;
    double mx = -INFINITY, s = 0;
    memcpy(nll, p, 8);
    *top = (int32_t)get_u32(p + 8);
    memcpy(&lo, p + 12, 4);
    memcpy(&step, p + 16, 4);
    p += 20;
    for (int32_t i = 0; i < f->n_vocab; i++) {
        f->lp[i] = (double)lo + (double)step * (double)(p[2 * i] | p[2 * i + 1] << 8);
        if (f->lp[i] > mx)
            mx = f->lp[i];
    }
    for (int32_t i = 0; i < f->n_vocab; i++)
        s += exp(f->lp[i] - mx);
    s = mx + log(s);
    for (int32_t i = 0; i < f->n_vocab; i++)
        f->lp[i] -= s;
}

/* ---- one window ------------------------------------------------------------------------- */

ds_err ds_eval_ppl_window(struct ds_eval_stats *s, const float *logits, int64_t n_vocab,
                          const int32_t *win, int64_t n, struct ds_eval_logits *save,
                          struct ds_eval_logits *base)
{
    int64_t first = n / 2;
    double *lp = NULL;
    ds_err rc = DS_OK;
    DS_RETURN_IF(s->kind != DS_EVAL_PPL || n < 2 || n_vocab < 1, DS_ERR_ARG,
                 "invalid perplexity window");
    DS_RETURN_IF((save && (save->n_vocab != n_vocab || save->n_ctx != n)) ||
                 (base && (base->n_vocab != n_vocab || base->n_ctx != n)),
                 DS_ERR_ARG, "window of %lld tokens does not match the logits file",
                 (long long)n);
    DS_RETURN_IF(base && s->n > 0 && !s->kld, DS_ERR_ARG, "KL statistics started without a base");
    if (base)
        s->kld = true;
    lp = ds_malloc(sizeof(double) * (size_t)n_vocab);
    if (!lp)
        return DS_ERR_NOMEM;
    for (int64_t j = first; j < n - 1; j++) {
        const float *row = logits + j * n_vocab;
        int32_t next = win[j + 1], top = 0;
        double lse = ds_eval_logsumexp(row, n_vocab), nll;
        DS_FAIL_IF(next < 0 || next >= n_vocab, DS_ERR_ARG, "token id %d out of range", next);
        for (int64_t i = 0; i < n_vocab; i++) {
            lp[i] = (double)row[i] - lse;
            if (row[i] > row[top])
                top = (int32_t)i;
        }
        nll = -lp[next];
        s->n++;
        ds_eval_sum_add(&s->nll, nll);
        ds_eval_sum_add(&s->nll2, nll * nll);
        if (save) {
            record_pack(save, lp, nll, top);
            DS_CHECK(ds_writer_write(save->w, save->rec, save->rec_size));
        }
        if (base) {
            double nb, kl = 0;
            int32_t btop;
            DS_CHECK(ds_reader_read(base->r, base->rec, base->rec_size));
            record_unpack(base, &nb, &btop);
            DS_FAIL_IF(!(nb >= 0) || btop < 0 || btop >= n_vocab, DS_ERR_FORMAT,
                       "'%s': corrupt record", base->name);
            for (int64_t i = 0; i < n_vocab; i++) {
                double pb = exp(base->lp[i]);
                kl += pb * (base->lp[i] - lp[i]);
            }
            if (top == btop)
                s->same_top++;
            ds_eval_sum_add(&s->kl, kl);
            ds_eval_sum_add(&s->kl2, kl * kl);
            ds_eval_sum_add(&s->nll_base, nb);
            ds_eval_sum_add(&s->nll_base2, nb * nb);
            ds_eval_sum_add(&s->nll_nll_base, nll * nb);
            ds_eval_sum_add(&s->dnll, nll - nb);
            ds_eval_sum_add(&s->dnll2, (nll - nb) * (nll - nb));
        }
    }
    s->n_windows++;
out:
    free(lp);
    return rc;
}
