/*
 * train.c - the trainer: data order, losses (cross-entropy, distillation KL),
 * gradient accumulation, global-norm clipping, AdamW with a warmup + cosine
 * schedule, the auxiliary-loss-free expert bias update, checkpoints.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_train.h"
#include "error_impl.h"
#include "kernels_impl.h"
#include "train_impl.h"

#define STREAM_DATA 0x10000000ULL /* ds_trng stream of epoch e's permutation: + e */
#define NORM_CHUNK 65536          /* gradient norm partial sums: fixed chunks */

struct ds_trainer {
    struct ds_tmodel *m;
    struct ds_train_opts o;
    float *g;                /* gradient arena (m->nw) */
    struct tview gv;
    float *am, *av;          /* AdamW moments (m->nw) */
    int64_t step;            /* optimizer steps done */
    int64_t micro;           /* micro-batches accumulated in the current step */
    struct ds_loss acc;      /* the current step's losses */
    struct tacts **sq;       /* (batch) activations, one sequence each */
    float *gs;               /* (batch, m->nw) gradients of each sequence */
    struct tview *gsv;       /* (batch) views of gs */
    double *ls;              /* (batch, n_layers * E) expert loads of each sequence */
    double *auxs;            /* (batch) balance loss of each sequence */
    int64_t last_seq;        /* sequences of the last batch */
    double *load;            /* (n_layers, E) selections in the current step */
    float *row;              /* (nthr, 2V) loss scratch */
    double *rl;              /* (N, 3) per-row ce, kd, weight */
    /* data */
    const int32_t *data;
    size_t n_data;
    int64_t n_win, epoch, pos;
    int64_t resume_win;      /* windows of the checkpoint's corpus, 0 if new */
    int64_t *perm;
};

/* ---- options and schedule ------------------------------------------------------------ */

void ds_train_opts_default(struct ds_train_opts *o)
{
    *o = (struct ds_train_opts){.steps = 1000,
                                .batch = 8,
                                .ctx = 128,
                                .accum = 1,
                                .lr = 1e-3,
                                .min_lr = 1e-4,
                                .warmup = 100,
                                .weight_decay = 0.1,
                                .beta1 = 0.9,
                                .beta2 = 0.95,
                                .adam_eps = 1e-8,
                                .clip = 1.0,
                                .temperature = 2.0,
                                .alpha = 0.5,
                                .kl = DS_KL_FORWARD,
                                .balance_gamma = 0.001,
                                .seq_aux = 0.0,
                                .seed = 1};
}

ds_err ds_train_opts_check(const struct ds_train_opts *o)
{
    DS_RETURN_IF(!o, DS_ERR_ARG, "options missing");
    DS_RETURN_IF(o->steps < 1, DS_ERR_ARG, "steps must be at least 1");
    DS_RETURN_IF(o->batch < 1 || o->batch > 1 << 16, DS_ERR_ARG, "batch must be in [1, 65536]");
    DS_RETURN_IF(o->ctx < 1 || o->ctx > 1 << 20, DS_ERR_ARG, "ctx must be in [1, 1048576]");
    DS_RETURN_IF(o->accum < 1 || o->accum > 1 << 16, DS_ERR_ARG, "accum must be in [1, 65536]");
    DS_RETURN_IF(!(o->lr > 0) || !isfinite(o->lr), DS_ERR_ARG, "lr must be positive");
    DS_RETURN_IF(!(o->min_lr >= 0) || o->min_lr > o->lr, DS_ERR_ARG,
                 "min-lr must be in [0, lr]");
    DS_RETURN_IF(o->warmup < 0, DS_ERR_ARG, "warmup must not be negative");
    DS_RETURN_IF(!(o->weight_decay >= 0) || !isfinite(o->weight_decay), DS_ERR_ARG,
                 "weight-decay must not be negative");
    DS_RETURN_IF(!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1),
                 DS_ERR_ARG, "beta1 and beta2 must be in [0, 1)");
    DS_RETURN_IF(!(o->adam_eps > 0), DS_ERR_ARG, "adam eps must be positive");
    DS_RETURN_IF(!(o->clip >= 0) || !isfinite(o->clip), DS_ERR_ARG,
                 "clip must not be negative");
    DS_RETURN_IF(!(o->temperature > 0) || !isfinite(o->temperature), DS_ERR_ARG,
                 "temperature must be positive");
    DS_RETURN_IF(!(o->alpha >= 0 && o->alpha <= 1), DS_ERR_ARG, "alpha must be in [0, 1]");
    DS_RETURN_IF(o->kl != DS_KL_FORWARD && o->kl != DS_KL_REVERSE, DS_ERR_ARG,
                 "kl must be forward or reverse");
    DS_RETURN_IF(!(o->balance_gamma >= 0) || !isfinite(o->balance_gamma), DS_ERR_ARG,
                 "balance-gamma must not be negative");
    DS_RETURN_IF(!(o->seq_aux >= 0) || !isfinite(o->seq_aux), DS_ERR_ARG,
                 "seq-aux must not be negative");
    return DS_OK;
}

double ds_train_lr(const struct ds_train_opts *o, int64_t step)
{
    if (step < o->warmup)
        return o->lr * (double)(step + 1) / (double)o->warmup;
    int64_t span = o->steps - o->warmup;
    if (span < 1)
        return o->min_lr;
    double p = (double)(step - o->warmup) / (double)span;
    if (p >= 1)
        return o->min_lr;
    return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(M_PI * p));
}

/* ---- losses ---------------------------------------------------------------------------- */

void ds_logits_topk(const float *logits, int64_t V, int64_t k, int32_t *ids, float *vals)
{
    int64_t n = 0;
    if (k > V)
        k = V;
    for (int64_t i = 0; i < V; i++) {
        float v = logits[i];
        if (isnan(v))
            v = -INFINITY;
        if (n == k && !(v > vals[n - 1]))
            continue;
        int64_t j = n < k ? n++ : k - 1;
        while (j > 0 && v > vals[j - 1]) { // strictly greater: ties keep the lower id first
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = v;
        ids[j] = (int32_t)i;
    }
}

/* log-sum-exp of x[0..n) * inv (max-shifted, double) */
static double lse(const float *x, int64_t n, double inv)
{
    double mx = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++)
        if (x[i] * inv > mx)
            mx = x[i] * inv;
    for (int64_t i = 0; i < n; i++)
        s += exp(x[i] * inv - mx);
    return mx + log(s);
}

/* One row: z (V) student logits -> gradient in place (scaled by scale; scale
 * 0: z is left alone and no gradient is computed), the
 * row's ce and kd. y the target; teacher: full row tz (V) or top-k ids/vals. */
static void row_loss(const struct ds_train_opts *o, float *z, int64_t V, int32_t y,
                     const float *tz, int64_t K, const int32_t *tid, const float *tval,
                     double scale, float *scr, double *ce_out, double *kd_out)
{
    const bool teacher = tz || K > 0;
    const double T = o->temperature, invT = 1.0 / T;
    const double wce = teacher ? 1.0 - o->alpha : 1.0, wkd = teacher ? o->alpha : 0.0;
    double l1 = lse(z, V, 1.0);
    double ce = l1 - z[y], kd = 0;
    float *gk = scr; // (V) KD gradient wrt z (already times T^2 / T = T)

    if (teacher) {
        memset(gk, 0, (size_t)V * sizeof(float));
        double ls = lse(z, V, invT); // student at T
        if (o->kl == DS_KL_FORWARD) {
            // sum_i p_t (log p_t - log p_s); grad (p_s - p_t)/T, times T^2
            for (int64_t i = 0; i < V; i++)
                gk[i] = (float)(T * exp(z[i] * invT - ls));
            if (tz) {
                double lt = lse(tz, V, invT);
                for (int64_t i = 0; i < V; i++) {
                    double lpt = tz[i] * invT - lt, pt = exp(lpt);
                    if (pt > 0)
                        kd += pt * (lpt - (z[i] * invT - ls));
                    gk[i] -= (float)(T * pt);
                }
            } else {
                double lt = lse(tval, K, invT);
                for (int64_t j = 0; j < K; j++) {
                    double lpt = tval[j] * invT - lt, pt = exp(lpt);
                    if (pt > 0)
                        kd += pt * (lpt - (z[tid[j]] * invT - ls));
                    gk[tid[j]] -= (float)(T * pt);
                }
            }
        } else {
            // sum_i q (log q - log p_t), q the student (over the top-k ids when
            // the teacher is top-k); grad_i = q_i (log q_i - log p_t,i - KL)/T
            if (tz) {
                double lt = lse(tz, V, invT);
                for (int64_t i = 0; i < V; i++) {
                    double lq = z[i] * invT - ls, q = exp(lq);
                    kd += q * (lq - (tz[i] * invT - lt));
                }
                for (int64_t i = 0; i < V; i++) {
                    double lq = z[i] * invT - ls, q = exp(lq);
                    gk[i] = (float)(T * q * (lq - (tz[i] * invT - lt) - kd));
                }
            } else {
                double lt = lse(tval, K, invT), mx = -INFINITY, s = 0, lk;
                for (int64_t j = 0; j < K; j++)
                    if (z[tid[j]] * invT > mx)
                        mx = z[tid[j]] * invT;
                for (int64_t j = 0; j < K; j++)
                    s += exp(z[tid[j]] * invT - mx);
                lk = mx + log(s);
                for (int64_t j = 0; j < K; j++) {
                    double lq = z[tid[j]] * invT - lk, q = exp(lq);
                    kd += q * (lq - (tval[j] * invT - lt));
                }
                for (int64_t j = 0; j < K; j++) {
                    double lq = z[tid[j]] * invT - lk, q = exp(lq);
                    gk[tid[j]] += (float)(T * q * (lq - (tval[j] * invT - lt) - kd));
                }
            }
        }
        kd *= T * T;
    }
    for (int64_t i = 0; scale != 0 && i < V; i++) {
        double p = exp(z[i] - l1) - (i == y);
        z[i] = (float)(scale * (wce * p + (teacher ? wkd * gk[i] : 0.0)));
    }
    *ce_out = ce;
    *kd_out = kd;
}

static ds_err check_batch(const struct ds_trainer *tr, const struct ds_batch *b)
{
    const int64_t V = tr->m->V;
    DS_RETURN_IF(!b || !b->tokens, DS_ERR_ARG, "batch missing");
    DS_RETURN_IF(b->n_seq < 1 || b->n_seq > tr->o.batch || b->n_tok < 1 || b->n_tok > tr->o.ctx,
                 DS_ERR_ARG, "batch of %lld x %lld tokens exceeds %lld x %lld",
                 (long long)b->n_seq, (long long)b->n_tok, (long long)tr->o.batch,
                 (long long)tr->o.ctx);
    for (int64_t i = 0; i < b->n_seq * (b->n_tok + 1); i++)
        DS_RETURN_IF(b->tokens[i] < 0 || b->tokens[i] >= V, DS_ERR_ARG,
                     "token id %d is out of range (the vocabulary has %lld)", (int)b->tokens[i],
                     (long long)V);
    if (b->teacher_topk > 0) {
        DS_RETURN_IF(!b->teacher_ids || !b->teacher_vals || b->teacher_topk > V, DS_ERR_ARG,
                     "teacher top-k ids or values missing");
        for (int64_t i = 0; i < b->n_seq * b->n_tok * b->teacher_topk; i++)
            DS_RETURN_IF(b->teacher_ids[i] < 0 || b->teacher_ids[i] >= V, DS_ERR_ARG,
                         "teacher token id %d is out of range", (int)b->teacher_ids[i]);
    }
    return DS_OK;
}

/* Forward of every sequence of b (and with grad, its backward into the
 * step's gradient), losses into out. Sequences run in parallel, one thread
 * each, the kernels inside them serially (nested OpenMP regions are
 * inactive): one parallel region per micro-batch, which keeps a loaded
 * machine's threads in step. Each sequence has its own gradient buffer; they
 * are added to the step's in sequence order, so the result does not depend
 * on the thread count. The gradient is of the mean loss over the rows, times
 * scale. */
static void run_batch(struct ds_trainer *tr, const struct ds_batch *b, double scale, bool grad,
                      struct ds_loss *out)
{
    const struct ds_tmodel *m = tr->m;
    const int64_t V = m->V, T = b->n_tok, B = b->n_seq, N = B * T, K = b->teacher_topk,
                  E = m->hp.n_routed_experts, LE = m->hp.n_layers * (E > 0 ? E : 1);
    const double sa = tr->o.seq_aux > 0 && E > 0 ? tr->o.seq_aux : 0;
    const size_t nw = m->nw;
    double ce = 0, kd = 0, aux = 0;

    DS_OMP(omp parallel for schedule(dynamic, 1) if (B > 1))
    for (int64_t s = 0; s < B; s++) {
        struct tacts *a = tr->sq[s];
        double *ld = tr->ls + s * LE;
        float *scr = tr->row + (size_t)thread_id() * 2 * (size_t)V, *lg;
        memset(ld, 0, (size_t)LE * sizeof(double));
        ds_tpass_forward(m, a, b->tokens + s * (T + 1), 1, T, ld);
        lg = ds_tacts_logits(a);
        for (int64_t t = 0; t < T; t++) {
            int64_t n = s * T + t;
            row_loss(&tr->o, lg + t * V, V, b->tokens[s * (T + 1) + t + 1],
                     b->teacher_logits ? b->teacher_logits + n * V : NULL, K,
                     K > 0 ? b->teacher_ids + n * K : NULL, K > 0 ? b->teacher_vals + n * K : NULL,
                     grad ? scale / (double)N : 0.0, scr, &tr->rl[n * 2], &tr->rl[n * 2 + 1]);
        }
        tr->auxs[s] = sa > 0 ? ds_tpass_seq_aux(m, a) : 0.0;
        if (grad)
            ds_tpass_backward(m, a, &tr->gsv[s], lg, sa * scale / (double)B);
    }
    tr->last_seq = B;
    for (int64_t n = 0; n < N; n++) {
        ce += tr->rl[n * 2];
        kd += tr->rl[n * 2 + 1];
    }
    for (int64_t s = 0; s < B; s++)
        aux += tr->auxs[s];
    memset(out, 0, sizeof(*out));
    out->ce = ce / (double)N;
    out->kd = kd / (double)N;
    out->aux = aux / (double)B;
    out->n_tok = N;
    bool teacher = b->teacher_logits || K > 0;
    out->loss = teacher ? tr->o.alpha * out->kd + (1 - tr->o.alpha) * out->ce : out->ce;
    out->loss += sa * out->aux;
    if (!grad)
        return;
    for (int64_t s = 0; s < B; s++)
        for (int64_t i = 0; i < LE; i++)
            tr->load[i] += tr->ls[s * LE + i];
    DS_OMP(omp parallel for schedule(static) if (nw >= 65536))
    for (size_t i = 0; i < nw; i++) {
        float g = tr->g[i];
        for (int64_t s = 0; s < B; s++) {
            g += tr->gs[(size_t)s * nw + i];
            tr->gs[(size_t)s * nw + i] = 0;
        }
        tr->g[i] = g;
    }
}

/* ---- trainer ----------------------------------------------------------------------------- */

void ds_trainer_free(struct ds_trainer *tr)
{
    if (!tr)
        return;
    ds_tview_release(&tr->gv);
    for (int64_t s = 0; s < tr->o.batch && tr->sq; s++)
        ds_tacts_free(tr->sq[s]);
    for (int64_t s = 0; s < tr->o.batch && tr->gsv; s++)
        ds_tview_release(&tr->gsv[s]);
    free(tr->sq);
    free(tr->gsv);
    free(tr->gs);
    free(tr->ls);
    free(tr->auxs);
    free(tr->g);
    free(tr->am);
    free(tr->av);
    free(tr->load);
    free(tr->row);
    free(tr->rl);
    free(tr->perm);
    free(tr);
}

ds_err ds_trainer_new(struct ds_tmodel *m, const struct ds_train_opts *o,
                      struct ds_trainer **out)
{
    struct ds_trainer *tr;
    ds_err rc = DS_OK;
    const int64_t E = m ? m->hp.n_routed_experts : 0;

    DS_RETURN_IF(!m || !o || !out, DS_ERR_ARG, "model, options or output missing");
    *out = NULL;
    DS_TRY(ds_train_opts_check(o));
    tr = ds_calloc(1, sizeof(*tr));
    if (!tr)
        return DS_ERR_NOMEM;
    tr->m = m;
    tr->o = *o;
    tr->g = ds_calloc(m->nw, sizeof(float));
    tr->am = ds_calloc(m->nw, sizeof(float));
    tr->av = ds_calloc(m->nw, sizeof(float));
    tr->load = ds_calloc((size_t)(m->hp.n_layers * (E > 0 ? E : 1)), sizeof(double));
    tr->row = ds_malloc((size_t)max_threads() * 2 * (size_t)m->V * sizeof(float));
    tr->rl = ds_malloc((size_t)(o->batch * o->ctx) * 2 * sizeof(double));
    DS_FAIL_IF(!tr->g || !tr->am || !tr->av || !tr->load || !tr->row || !tr->rl, DS_ERR_NOMEM,
               "out of memory for the optimizer state");
    DS_CHECK(ds_tview_bind(m, tr->g, &tr->gv));
    tr->sq = ds_calloc((size_t)o->batch, sizeof(*tr->sq));
    tr->gsv = ds_calloc((size_t)o->batch, sizeof(*tr->gsv));
    tr->gs = ds_calloc((size_t)o->batch * m->nw, sizeof(float));
    tr->ls = ds_calloc((size_t)(o->batch * m->hp.n_layers * (E > 0 ? E : 1)), sizeof(double));
    tr->auxs = ds_calloc((size_t)o->batch, sizeof(double));
    DS_FAIL_IF(!tr->sq || !tr->gsv || !tr->gs || !tr->ls || !tr->auxs, DS_ERR_NOMEM,
               "out of memory for %lld sequences of gradients", (long long)o->batch);
    for (int64_t s = 0; s < o->batch; s++) {
        DS_CHECK(ds_tacts_new(m, 1, o->ctx, &tr->sq[s]));
        DS_CHECK(ds_tview_bind(m, tr->gs + (size_t)s * m->nw, &tr->gsv[s]));
    }
out:
    if (rc != DS_OK) {
        ds_trainer_free(tr);
        return rc;
    }
    *out = tr;
    return DS_OK;
}

const struct ds_train_opts *ds_trainer_opts(const struct ds_trainer *tr)
{
    return &tr->o;
}

void ds_trainer_set_steps(struct ds_trainer *tr, int64_t steps)
{
    if (steps >= 1)
        tr->o.steps = steps;
}

int64_t ds_trainer_step_count(const struct ds_trainer *tr)
{
    return tr->step;
}

/* The permutation of epoch tr->epoch (Fisher-Yates on counter-based draws). */
static void make_perm(struct ds_trainer *tr)
{
    for (int64_t i = 0; i < tr->n_win; i++)
        tr->perm[i] = i;
    for (int64_t i = tr->n_win - 1; i > 0; i--) {
        int64_t j = (int64_t)(ds_trng_uniform(tr->o.seed, STREAM_DATA + (uint64_t)tr->epoch,
                                              (uint64_t)i) *
                              (double)(i + 1));
        if (j > i)
            j = i;
        int64_t t = tr->perm[i];
        tr->perm[i] = tr->perm[j];
        tr->perm[j] = t;
    }
}

ds_err ds_trainer_set_data(struct ds_trainer *tr, const int32_t *tokens, size_t n)
{
    int64_t *p;
    DS_RETURN_IF(!tr || (!tokens && n), DS_ERR_ARG, "trainer or tokens missing");
    DS_RETURN_IF(n < (size_t)tr->o.ctx + 1, DS_ERR_ARG,
                 "the training data has %zu tokens; at least ctx + 1 = %lld are needed", n,
                 (long long)tr->o.ctx + 1);
    for (size_t i = 0; i < n; i++)
        DS_RETURN_IF(tokens[i] < 0 || tokens[i] >= tr->m->V, DS_ERR_ARG,
                     "token id %d is out of range (the vocabulary has %lld)", (int)tokens[i],
                     (long long)tr->m->V);
    int64_t nw = (int64_t)((n - 1) / (size_t)tr->o.ctx);
    DS_RETURN_IF(tr->resume_win > 0 && nw != tr->resume_win, DS_ERR_ARG,
                 "the training data has %lld windows of %lld tokens, the checkpoint's had %lld: "
                 "resume with the same data",
                 (long long)nw, (long long)tr->o.ctx, (long long)tr->resume_win);
    p = ds_realloc(tr->perm, (size_t)nw * sizeof(*p));
    if (!p)
        return DS_ERR_NOMEM;
    tr->perm = p;
    tr->data = tokens;
    tr->n_data = n;
    tr->n_win = nw;
    if (tr->pos > nw)
        tr->pos = nw;
    make_perm(tr);
    return DS_OK;
}

int64_t ds_trainer_n_windows(const struct ds_trainer *tr)
{
    return tr->n_win;
}

ds_err ds_trainer_next_windows(struct ds_trainer *tr, int64_t n, int64_t *win, int32_t *tokens)
{
    const int64_t C = tr->o.ctx;
    DS_RETURN_IF(!tr->data, DS_ERR_STATE, "no training data set");
    for (int64_t i = 0; i < n; i++) {
        if (tr->pos >= tr->n_win) {
            tr->epoch++;
            tr->pos = 0;
            make_perm(tr);
        }
        int64_t w = tr->perm[tr->pos++];
        if (win)
            win[i] = w;
        if (tokens)
            memcpy(tokens + i * (C + 1), tr->data + w * C, (size_t)(C + 1) * sizeof(int32_t));
    }
    return DS_OK;
}

ds_err ds_trainer_accumulate(struct ds_trainer *tr, const struct ds_batch *b,
                             struct ds_loss *loss)
{
    struct ds_loss l;
    const double scale = 1.0 / (double)tr->o.accum;
    DS_RETURN_IF(!tr, DS_ERR_ARG, "trainer missing");
    DS_TRY(check_batch(tr, b));
    run_batch(tr, b, scale, true, &l);
    tr->micro++;
    tr->acc.loss += l.loss * scale;
    tr->acc.ce += l.ce * scale;
    tr->acc.kd += l.kd * scale;
    tr->acc.aux += l.aux * scale;
    tr->acc.n_tok += l.n_tok;
    if (loss)
        *loss = l;
    return DS_OK;
}

ds_err ds_trainer_eval(struct ds_trainer *tr, const struct ds_batch *b, struct ds_loss *loss)
{
    struct ds_loss l;
    DS_RETURN_IF(!tr || !loss, DS_ERR_ARG, "trainer or output missing");
    DS_TRY(check_batch(tr, b));
    run_batch(tr, b, 0.0, false, &l);
    *loss = l;
    return DS_OK;
}

/* Squared L2 norm of the trained gradients: fixed chunks summed in parallel,
 * then in order. */
static double grad_norm2(const struct ds_trainer *tr, bool *finite)
{
    const struct ds_tmodel *m = tr->m;
    double total = 0;
    *finite = true;
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        if (!p->trained)
            continue;
        const float *g = tr->g + p->off;
        int64_t nc = (int64_t)((p->n + NORM_CHUNK - 1) / NORM_CHUNK);
        double part[64];
        for (int64_t c0 = 0; c0 < nc; c0 += 64) {
            int64_t cn = nc - c0 < 64 ? nc - c0 : 64;
            DS_OMP(omp parallel for schedule(static) if (cn > 1))
            for (int64_t c = 0; c < cn; c++) {
                size_t a = (size_t)(c0 + c) * NORM_CHUNK, b = a + NORM_CHUNK;
                double s = 0;
                if (b > p->n)
                    b = p->n;
                for (size_t j = a; j < b; j++)
                    s += (double)g[j] * g[j];
                part[c] = s;
            }
            for (int64_t c = 0; c < cn; c++)
                total += part[c];
        }
    }
    if (!isfinite(total))
        *finite = false;
    return total;
}

ds_err ds_trainer_update(struct ds_trainer *tr, struct ds_step_stats *st)
{
    struct ds_tmodel *m;
    const struct ds_train_opts *o;
    bool finite;
    double norm, clipf = 1.0, lr, b1t, b2t;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!tr, DS_ERR_ARG, "trainer missing");
    DS_RETURN_IF(tr->micro == 0, DS_ERR_STATE, "no gradient accumulated since the last update");
    m = tr->m;
    o = &tr->o;
    norm = sqrt(grad_norm2(tr, &finite));
    if (!finite || !isfinite(tr->acc.loss)) {
        rc = ds_set_error(DS_ERR_FORMAT, "training diverged at step %lld (loss %g)",
                          (long long)tr->step + 1, tr->acc.loss);
        goto out;
    }
    if (o->clip > 0 && norm > o->clip)
        clipf = o->clip / norm;
    lr = ds_train_lr(o, tr->step);
    b1t = 1.0 - pow(o->beta1, (double)(tr->step + 1));
    b2t = 1.0 - pow(o->beta2, (double)(tr->step + 1));
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        if (!p->trained)
            continue;
        float *w = m->w + p->off, *g = tr->g + p->off, *mm = tr->am + p->off,
              *vv = tr->av + p->off;
        const double wd = p->decay ? o->weight_decay : 0.0;
        DS_OMP(omp parallel for schedule(static) if (p->n >= 65536))
        for (size_t j = 0; j < p->n; j++) {
            double gj = (double)g[j] * clipf;
            double mj = o->beta1 * mm[j] + (1 - o->beta1) * gj;
            double vj = o->beta2 * vv[j] + (1 - o->beta2) * gj * gj;
            mm[j] = (float)mj;
            vv[j] = (float)vj;
            double upd = (mj / b1t) / (sqrt(vj / b2t) + o->adam_eps) + wd * w[j];
            w[j] = (float)(w[j] - lr * upd);
        }
    }
    // auxiliary-loss-free balance: b_e += gamma * sign(mean load - load_e)
    if (o->balance_gamma > 0) {
        const int64_t E = m->hp.n_routed_experts;
        for (int64_t l = 0; l < m->hp.n_layers; l++) {
            float *bias = m->wv.L[l].exp_bias;
            const double *ld = tr->load + l * E;
            double mean = 0;
            if (!bias)
                continue;
            for (int64_t e = 0; e < E; e++)
                mean += ld[e];
            mean /= (double)E;
            for (int64_t e = 0; e < E; e++)
                bias[e] += (float)(o->balance_gamma * (ld[e] < mean ? 1 : ld[e] > mean ? -1 : 0));
        }
    }
    tr->step++;
    if (st) {
        st->step = tr->step;
        st->lr = lr;
        st->grad_norm = norm;
        st->loss = tr->acc;
    }
out:
    memset(tr->g, 0, m->nw * sizeof(float));
    memset(tr->load, 0,
           (size_t)(m->hp.n_layers * (m->hp.n_routed_experts > 0 ? m->hp.n_routed_experts : 1)) *
               sizeof(double));
    memset(&tr->acc, 0, sizeof(tr->acc));
    tr->micro = 0;
    return rc;
}

/* ---- inference with the training pass ------------------------------------------------------ */

ds_err ds_tmodel_logits(struct ds_tmodel *m, const int32_t *tokens, size_t n, float *logits)
{
    struct tacts *a;
    DS_RETURN_IF(!m || !tokens || !logits || n == 0, DS_ERR_ARG, "model, tokens or logits missing");
    for (size_t i = 0; i < n; i++)
        DS_RETURN_IF(tokens[i] < 0 || tokens[i] >= m->V, DS_ERR_ARG,
                     "token id %d is out of range (the vocabulary has %lld)", (int)tokens[i],
                     (long long)m->V);
    DS_TRY(ds_tacts_new(m, 1, (int64_t)n, &a));
    ds_tpass_forward(m, a, tokens, 1, (int64_t)n, NULL);
    memcpy(logits, ds_tacts_logits(a), n * (size_t)m->V * sizeof(float));
    ds_tacts_free(a);
    return DS_OK;
}

/* ---- checkpoints -------------------------------------------------------------------------- */

#define K_(s) "train." s

static ds_err put_f64(struct ds_meta *m, const char *k, double v)
{
    return ds_meta_set(m, k, DS_V_F64, &v);
}

static ds_err put_i64(struct ds_meta *m, const char *k, int64_t v)
{
    return ds_meta_set(m, k, DS_V_I64, &v);
}

static ds_err opts_to_meta(const struct ds_trainer *tr, struct ds_meta *m)
{
    const struct ds_train_opts *o = &tr->o;
    DS_TRY(ds_meta_set_str(m, "general.type", "dskit.optimizer"));
    DS_TRY(put_i64(m, K_("step"), tr->step));
    DS_TRY(put_i64(m, K_("epoch"), tr->epoch));
    DS_TRY(put_i64(m, K_("position"), tr->pos));
    DS_TRY(put_i64(m, K_("windows"), tr->n_win));
    DS_TRY(put_i64(m, K_("steps"), o->steps));
    DS_TRY(put_i64(m, K_("batch"), o->batch));
    DS_TRY(put_i64(m, K_("ctx"), o->ctx));
    DS_TRY(put_i64(m, K_("accum"), o->accum));
    DS_TRY(put_i64(m, K_("warmup"), o->warmup));
    DS_TRY(put_i64(m, K_("kl"), o->kl));
    DS_TRY(ds_meta_set_u64(m, K_("seed"), o->seed));
    DS_TRY(put_f64(m, K_("lr"), o->lr));
    DS_TRY(put_f64(m, K_("min_lr"), o->min_lr));
    DS_TRY(put_f64(m, K_("weight_decay"), o->weight_decay));
    DS_TRY(put_f64(m, K_("beta1"), o->beta1));
    DS_TRY(put_f64(m, K_("beta2"), o->beta2));
    DS_TRY(put_f64(m, K_("adam_eps"), o->adam_eps));
    DS_TRY(put_f64(m, K_("clip"), o->clip));
    DS_TRY(put_f64(m, K_("temperature"), o->temperature));
    DS_TRY(put_f64(m, K_("alpha"), o->alpha));
    DS_TRY(put_f64(m, K_("balance_gamma"), o->balance_gamma));
    DS_TRY(put_f64(m, K_("seq_aux"), o->seq_aux));
    return DS_OK;
}

static ds_err get_i(const struct ds_meta *m, const char *name, const char *k, int64_t *v)
{
    DS_RETURN_IF(!ds_meta_get_int(m, k, v), DS_ERR_FORMAT, "'%s': key '%s' is missing", name, k);
    return DS_OK;
}

static ds_err get_f(const struct ds_meta *m, const char *name, const char *k, double *v)
{
    DS_RETURN_IF(!ds_meta_get_float(m, k, v), DS_ERR_FORMAT, "'%s': key '%s' is missing", name,
                 k);
    return DS_OK;
}

static ds_err opts_from_meta(const struct ds_meta *m, const char *name, struct ds_train_opts *o,
                             int64_t st[4])
{
    int64_t kl, seed;
    const char *type = ds_meta_get_str(m, "general.type", NULL);
    DS_RETURN_IF(!type || strcmp(type, "dskit.optimizer"), DS_ERR_FORMAT,
                 "'%s' is not a dskit optimizer state", name);
    DS_TRY(get_i(m, name, K_("step"), &st[0]));
    DS_TRY(get_i(m, name, K_("epoch"), &st[1]));
    DS_TRY(get_i(m, name, K_("position"), &st[2]));
    DS_TRY(get_i(m, name, K_("windows"), &st[3]));
    DS_TRY(get_i(m, name, K_("steps"), &o->steps));
    DS_TRY(get_i(m, name, K_("batch"), &o->batch));
    DS_TRY(get_i(m, name, K_("ctx"), &o->ctx));
    DS_TRY(get_i(m, name, K_("accum"), &o->accum));
    DS_TRY(get_i(m, name, K_("warmup"), &o->warmup));
    DS_TRY(get_i(m, name, K_("kl"), &kl));
    DS_TRY(get_i(m, name, K_("seed"), &seed));
    o->kl = kl == DS_KL_REVERSE ? DS_KL_REVERSE : DS_KL_FORWARD;
    o->seed = (uint64_t)seed;
    DS_TRY(get_f(m, name, K_("lr"), &o->lr));
    DS_TRY(get_f(m, name, K_("min_lr"), &o->min_lr));
    DS_TRY(get_f(m, name, K_("weight_decay"), &o->weight_decay));
    DS_TRY(get_f(m, name, K_("beta1"), &o->beta1));
    DS_TRY(get_f(m, name, K_("beta2"), &o->beta2));
    DS_TRY(get_f(m, name, K_("adam_eps"), &o->adam_eps));
    DS_TRY(get_f(m, name, K_("clip"), &o->clip));
    DS_TRY(get_f(m, name, K_("temperature"), &o->temperature));
    DS_TRY(get_f(m, name, K_("alpha"), &o->alpha));
    DS_TRY(get_f(m, name, K_("balance_gamma"), &o->balance_gamma));
    DS_TRY(get_f(m, name, K_("seq_aux"), &o->seq_aux));
    DS_RETURN_IF(st[0] < 0 || st[1] < 0 || st[2] < 0 || st[3] < 0, DS_ERR_FORMAT,
                 "'%s': negative training position", name);
    return DS_OK;
}

static ds_err join(char *buf, size_t cap, const char *dir, const char *base)
{
    DS_RETURN_IF((size_t)snprintf(buf, cap, "%s/%s", dir, base) >= cap, DS_ERR_LIMIT,
                 "path '%s/%s' is too long", dir, base);
    return DS_OK;
}

ds_err ds_checkpoint_save(const struct ds_trainer *tr, const char *dir)
{
    struct ds_outdir *od = NULL;
    struct ds_gguf g = {0};
    struct ds_writer *w = NULL;
    const struct ds_tmodel *m;
    char path[4096];
    ds_err rc = DS_OK;

    DS_RETURN_IF(!tr || !dir, DS_ERR_ARG, "trainer or directory missing");
    DS_RETURN_IF(tr->micro != 0, DS_ERR_STATE, "a checkpoint is saved between steps");
    m = tr->m;
    DS_CHECK(ds_outdir_open(&od, dir, DS_WRITE_FORCE));
    DS_CHECK(join(path, sizeof(path), ds_outdir_tmp(od), "model.gguf"));
    DS_CHECK(ds_tmodel_save(m, path, DS_TYPE_F32, DS_WRITE_FORCE));
    DS_CHECK(ds_gguf_init(&g));
    DS_CHECK(opts_to_meta(tr, g.meta));
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->np; i++) {
            const struct tparam *p = &m->p[i];
            char n[DS_GGUF_MAX_NAME + 8];
            snprintf(n, sizeof(n), "%s.%s", pass ? "adam_v" : "adam_m", p->name);
            DS_FAIL_IF(strlen(n) >= DS_GGUF_MAX_NAME, DS_ERR_LIMIT, "tensor name '%s' too long",
                       n);
            DS_CHECK(ds_gguf_add_tensor(&g, n, DS_TYPE_F32, p->nd, p->ne));
        }
    DS_CHECK(ds_gguf_layout(&g));
    DS_CHECK(join(path, sizeof(path), ds_outdir_tmp(od), "optimizer.gguf"));
    DS_CHECK(ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0));
    DS_CHECK(ds_gguf_write_header(w, &g));
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->np; i++)
            DS_CHECK(ds_gguf_write_tensor(w, &g, (size_t)pass * m->np + i,
                                          (pass ? tr->av : tr->am) + m->p[i].off));
    DS_CHECK(ds_writer_commit(w));
    DS_CHECK(ds_outdir_commit(od));
out:
    ds_writer_free(w);
    ds_gguf_release(&g);
    ds_outdir_free(od);
    return rc;
}

ds_err ds_checkpoint_load(const char *dir, struct ds_tmodel **mout, struct ds_trainer **trout)
{
    struct ds_tmodel *m = NULL;
    struct ds_trainer *tr = NULL;
    struct ds_reader *r = NULL;
    struct ds_gguf g = {0};
    struct ds_train_opts o;
    int64_t st[4];
    char path[4096];
    ds_err rc = DS_OK;

    DS_RETURN_IF(!dir || !mout || !trout, DS_ERR_ARG, "directory or outputs missing");
    *mout = NULL;
    *trout = NULL;
    DS_CHECK(join(path, sizeof(path), dir, "model.gguf"));
    DS_CHECK(ds_tmodel_load(path, &m));
    DS_CHECK(join(path, sizeof(path), dir, "optimizer.gguf"));
    DS_CHECK(ds_gguf_init(&g));
    DS_CHECK(ds_reader_open(&r, path));
    DS_CHECK(ds_gguf_read(r, &g));
    ds_train_opts_default(&o);
    DS_CHECK(opts_from_meta(g.meta, path, &o, st));
    rc = ds_trainer_new(m, &o, &tr);
    if (rc != DS_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", ds_errmsg());
        rc = ds_set_error(rc, "'%s': %s", path, msg);
        goto out;
    }
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->np; i++) {
            const struct tparam *p = &m->p[i];
            char n[DS_GGUF_MAX_NAME + 8];
            long ti;
            snprintf(n, sizeof(n), "%s.%s", pass ? "adam_v" : "adam_m", p->name);
            ti = ds_gguf_find(&g, n);
            DS_FAIL_IF(ti < 0, DS_ERR_FORMAT, "'%s': tensor '%s' is missing", path, n);
            const struct ds_tensor_info *t = &g.tensors[ti];
            DS_FAIL_IF(t->type != DS_TYPE_F32 || t->nbytes != p->n * sizeof(float), DS_ERR_FORMAT,
                       "'%s': tensor '%s' does not match the model", path, n);
            DS_CHECK(ds_gguf_read_tensor(r, &g, (size_t)ti, (pass ? tr->av : tr->am) + p->off));
        }
    tr->step = st[0];
    tr->epoch = st[1];
    tr->pos = st[2];
    tr->resume_win = st[3];
    *mout = m;
    *trout = tr;
    m = NULL;
    tr = NULL;
out:
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    ds_reader_free(r);
    ds_gguf_release(&g);
    return rc;
}

float *ds_trainer_grad(struct ds_trainer *tr)
{
    return tr->g;
}

uint64_t ds_trainer_route_hash(struct ds_trainer *tr)
{
    uint64_t h = 0;
    for (int64_t s = 0; s < tr->last_seq; s++)
        h = h * 31 + ds_tacts_route_hash(tr->m, tr->sq[s]);
    return h;
}

const float *ds_trainer_logits(struct ds_trainer *tr, int64_t s)
{
    return ds_tacts_logits(tr->sq[s]);
}
