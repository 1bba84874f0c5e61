/*
 * train_pass.c - the training forward pass (activations kept) and its
 * backward pass, float32, B sequences of T tokens at positions 0..T-1.
 *
 * The forward computes what forward.c computes (same kernels: ds_matmul,
 * ds_rmsnorm, ds_rope, ds_mla_attend, ds_silu_mul, the router), row by row
 * over N = B*T rows, and keeps every intermediate the backward needs.
 *
 * Backward of y = x . W^T (x (T,K), W (N,K)): dx = dy . W and dW += dy^T . x;
 * both are ds_matmul calls on transposed copies, so each output element is
 * summed by one thread in a fixed order. The remaining reductions (norm
 * weights, embedding rows, the shared latent key over heads, rows routed to
 * several experts) run in a fixed sequential order: results depend on the
 * seed and the thread count only through ds_matmul, which is thread-count
 * independent, so they do not depend on either.
 *
 * Attention is the absorbed form of forward.c: per head h, q_lat = k_b[h]
 * q_nope, scores over the cache rows [c | k_pe], p = softmax, lat = sum p c,
 * o = v_b[h] lat. Its backward per (sequence, head):
 *   dP = dlat . c^T;  dS = P * (dP - rowsum(P * dP));  dq = scale dS . kv;
 *   dkv += scale dS^T . q + P^T . dlat (latent part)
 * with per-head dkv buffers summed over heads in order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "error_impl.h"
#include "kernels_impl.h"
#include "train_impl.h"

/* Activations of one layer. */
struct lacts {
    float *x1;          /* (N,d) attn-normed input */
    float *qa, *qan;    /* (N,rq) q LoRA: raw, normed */
    float *q;           /* (N,H*dqk) */
    float *kvr;         /* (N,Dc) kv_a output */
    float *kv;          /* (N,Dc) [normed latent | rotated k_pe] */
    float *qc;          /* (N,H,Dc) [absorbed q_nope | rotated q_pe] */
    float *P;           /* (B,H,T,T) attention probabilities */
    float *lat;         /* (N,H,R) */
    float *o;           /* (N,H*dv) */
    float *hm;          /* (N,d) residual after attention (ffn norm input) */
    float *x2;          /* (N,d) ffn-normed */
    float *fg, *fu, *fa; /* dense (N,I) or shared experts (N,Is) */
    float *s;           /* (N,E) router scores */
    int32_t *sel;       /* (N,k) */
    float *sw;          /* (N,k) routing weights */
    float *eg, *eu, *ea; /* (N*k, Ie) routed expert rows, grouped by expert */
    float *ey;          /* (N*k, d) expert outputs */
    int32_t *erow;      /* (N*k) row of each grouped slot */
    int32_t *eslot;     /* (N*k) j of each grouped slot (sel[row][j] == e) */
    int64_t *eoff;      /* (E+1) first slot of each expert */
};

struct tacts {
    int64_t Bmax, Tmax, B, T;
    int nthr;
    float *h;           /* (n_layers+1, N, d) residual stream */
    float *xf;          /* (N,d) final normed */
    float *logits;      /* (N,V) */
    const int32_t *tokens; /* (B, T+1) borrowed during a forward/backward */
    struct lacts *L;
    double *nfreqs;     /* negated rotary frequencies: inverse rotation */
    /* scratch */
    float *att;         /* (nthr, H, T) */
    float *t1, *t2, *t3; /* transposes / products: max(N*maxw, largest matrix) */
    float *dh, *dffn;   /* (N,d) residual gradient, ffn input gradient */
    float *dx, *dy, *dz, *dw1, *dw2; /* (N, maxw) gradients */
    float *sa, *sb, *sc; /* (N, maxw) MLP backward scratch */
    double *auxf, *auxp; /* (E) balance statistics */
    float *dkvh;        /* (B,H,T,Dc) */
    float *dqc;         /* (N,H,Dc) */
    float *xg;          /* (N*k, d) gathered rows */
    float *rb, *gs;     /* router scratch (nthr, E), (nthr, G) */
    float *dsel;        /* (N,k) */
    float *ds;          /* (N,E) */
    int64_t maxw;
};

void ds_tacts_free(struct tacts *a)
{
    if (!a)
        return;
    free(a->L);
    free(a->h); // the arena: a->h is its first block
    free(a);
}

float *ds_tacts_logits(struct tacts *a)
{
    return a->logits;
}

/* ---- allocation: one arena, carved ------------------------------------------------ */

struct carve {
    unsigned char *base;
    size_t off;
};

static void *take(struct carve *c, size_t bytes)
{
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + 63) & ~(size_t)63;
    return p;
}

#define TAKE_F(c, n) ((float *)take((c), (size_t)(n) * sizeof(float)))

static void layout(const struct ds_tmodel *m, struct tacts *a, struct carve *c)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t B = a->Bmax, T = a->Tmax, N = B * T, d = hp->hidden_size, H = hp->n_heads,
                  R = hp->kv_lora_rank, rope = hp->qk_rope_head_dim, Dc = R + rope,
                  dqk = hp->qk_nope_head_dim + rope, dv = hp->v_head_dim,
                  rq = hp->q_lora_rank, E = hp->n_routed_experts, k = hp->n_experts_per_tok,
                  Ie = hp->moe_intermediate_size, Is = hp->n_shared_experts * Ie,
                  I = hp->intermediate_size, V = m->V, NL = hp->n_layers;
    int64_t w = d;
    const int64_t ws[] = {V, H * dqk, H * Dc, I, Is, Ie, E, rq, H * dv, Dc, H * R};
    for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
        if (ws[i] > w)
            w = ws[i];
    int64_t mat = N * w;
    for (size_t i = 0; i < m->np; i++)
        if (m->p[i].ne[0] * m->p[i].ne[1] > mat)
            mat = m->p[i].ne[0] * m->p[i].ne[1];
    a->maxw = w;
    a->h = TAKE_F(c, (NL + 1) * N * d);
    a->xf = TAKE_F(c, N * d);
    a->logits = TAKE_F(c, N * V);
    a->att = TAKE_F(c, (int64_t)a->nthr * H * T);
    a->t1 = TAKE_F(c, mat);
    a->t2 = TAKE_F(c, N * w);
    a->t3 = TAKE_F(c, mat);
    a->dh = TAKE_F(c, N * d);
    a->dffn = TAKE_F(c, N * d);
    a->sa = TAKE_F(c, N * w);
    a->sb = TAKE_F(c, N * w);
    a->sc = TAKE_F(c, N * w);
    a->auxf = take(c, (size_t)(E > 0 ? E : 1) * sizeof(double));
    a->auxp = take(c, (size_t)(E > 0 ? E : 1) * sizeof(double));
    a->dx = TAKE_F(c, N * w);
    a->dy = TAKE_F(c, N * w);
    a->dz = TAKE_F(c, N * w);
    a->dw1 = TAKE_F(c, N * w);
    a->dw2 = TAKE_F(c, N * w);
    a->dkvh = TAKE_F(c, B * H * T * Dc);
    a->dqc = TAKE_F(c, N * H * Dc);
    a->xg = TAKE_F(c, N * (k > 0 ? k : 1) * d);
    a->rb = TAKE_F(c, (int64_t)a->nthr * (E > 0 ? E : 1));
    a->gs = TAKE_F(c, (int64_t)a->nthr * (hp->n_group > 0 ? hp->n_group : 1));
    a->dsel = TAKE_F(c, N * (k > 0 ? k : 1));
    a->ds = TAKE_F(c, N * (E > 0 ? E : 1));
    a->nfreqs = take(c, (size_t)(rope / 2) * sizeof(double));
    for (int64_t l = 0; l < NL; l++) {
        struct lacts *L = a->L ? &a->L[l] : NULL;
        struct lacts dummy;
        bool moe = m->wv.L[l].gate_inp != NULL;
        int64_t fw = moe ? Is : I;
        if (!L)
            L = &dummy;
        L->x1 = TAKE_F(c, N * d);
        L->qa = rq > 0 ? TAKE_F(c, N * rq) : NULL;
        L->qan = rq > 0 ? TAKE_F(c, N * rq) : NULL;
        L->q = TAKE_F(c, N * H * dqk);
        L->kvr = TAKE_F(c, N * Dc);
        L->kv = TAKE_F(c, N * Dc);
        L->qc = TAKE_F(c, N * H * Dc);
        L->P = TAKE_F(c, B * H * T * T);
        L->lat = TAKE_F(c, N * H * R);
        L->o = TAKE_F(c, N * H * dv);
        L->hm = TAKE_F(c, N * d);
        L->x2 = TAKE_F(c, N * d);
        L->fg = fw > 0 ? TAKE_F(c, N * fw) : NULL;
        L->fu = fw > 0 ? TAKE_F(c, N * fw) : NULL;
        L->fa = fw > 0 ? TAKE_F(c, N * fw) : NULL;
        if (moe) {
            L->s = TAKE_F(c, N * E);
            L->sel = take(c, (size_t)(N * k) * sizeof(int32_t));
            L->sw = TAKE_F(c, N * k);
            L->eg = TAKE_F(c, N * k * Ie);
            L->eu = TAKE_F(c, N * k * Ie);
            L->ea = TAKE_F(c, N * k * Ie);
            L->ey = TAKE_F(c, N * k * d);
            L->erow = take(c, (size_t)(N * k) * sizeof(int32_t));
            L->eslot = take(c, (size_t)(N * k) * sizeof(int32_t));
            L->eoff = take(c, (size_t)(E + 1) * sizeof(int64_t));
        } else {
            L->s = L->sw = L->eg = L->eu = L->ea = L->ey = NULL;
            L->sel = L->erow = L->eslot = NULL;
            L->eoff = NULL;
        }
    }
}

ds_err ds_tacts_new(const struct ds_tmodel *m, int64_t B, int64_t T, struct tacts **out)
{
    struct tacts *a;
    struct carve c = {NULL, 0};
    const int64_t half = m->hp.qk_rope_head_dim / 2;

    *out = NULL;
    DS_RETURN_IF(B < 1 || T < 1 || T > m->hp.max_position_embeddings, DS_ERR_ARG,
                 "sequence length %lld is outside [1, %lld] (the model's context length)",
                 (long long)T, (long long)m->hp.max_position_embeddings);
    a = ds_calloc(1, sizeof(*a));
    if (!a)
        return DS_ERR_NOMEM;
    a->Bmax = B;
    a->Tmax = T;
    a->nthr = max_threads();
    layout(m, a, &c); // size only
    a->L = ds_calloc((size_t)m->hp.n_layers, sizeof(*a->L));
    void *base = NULL;
    if (!a->L || posix_memalign(&base, 64, c.off ? c.off : 64)) {
        free(a->L);
        free(a);
        return ds_set_error(DS_ERR_NOMEM, "out of memory for training activations (%zu MiB)",
                            c.off >> 20);
    }
    c.base = base;
    c.off = 0;
    layout(m, a, &c);
    for (int64_t i = 0; i < half; i++)
        a->nfreqs[i] = -m->dm->freqs[i];
    // a->h is the first block of the arena
    *out = a;
    return DS_OK;
}

/* ---- matrix products and their gradients ------------------------------------------------ */

/* x (T,K) ld ldx -> y (T,N) ld ldy = x . W^T, W (N,K) contiguous */
static void mm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *W, int64_t T,
               int64_t N, int64_t K)
{
    ds_matmul(y, ldy, x, ldx, W, DS_TYPE_F32, T, N, K);
}

/* src (R,C) ld lds -> dst (C,R) contiguous */
static void transpose(float *dst, const float *src, int64_t lds, int64_t R, int64_t C)
{
    DS_OMP(omp parallel for schedule(static) if (R * C >= 65536))
    for (int64_t c = 0; c < C; c++)
        for (int64_t r = 0; r < R; r++)
            dst[c * R + r] = src[r * lds + c];
}

/* dx (T,K) ld lddx (+)= dy (T,N) ld lddy . W (N,K); acc: add instead of set.
 * Scratch a->t1 (K*N), a->t2 (T*K). */
static void mm_dx(struct tacts *a, float *dx, int64_t lddx, const float *dy, int64_t lddy,
                  const float *W, int64_t T, int64_t N, int64_t K, bool acc)
{
    transpose(a->t1, W, K, N, K); // (K,N)
    if (!acc) {
        mm(dx, lddx, dy, lddy, a->t1, T, K, N);
        return;
    }
    mm(a->t2, K, dy, lddy, a->t1, T, K, N);
    DS_OMP(omp parallel for schedule(static) if (T * K >= 65536))
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++)
            dx[t * lddx + k] += a->t2[t * K + k];
}

/* dW (N,K) += dy (T,N) ld lddy ^T . x (T,K) ld ldx. Scratch t1, t2, t3. */
static void mm_dw(struct tacts *a, float *dW, const float *dy, int64_t lddy, const float *x,
                  int64_t ldx, int64_t T, int64_t N, int64_t K)
{
    transpose(a->t1, dy, lddy, T, N); // (N,T)
    transpose(a->t2, x, ldx, T, K);   // (K,T)
    mm(a->t3, K, a->t1, T, a->t2, N, K, T);
    DS_OMP(omp parallel for schedule(static) if (N * K >= 65536))
    for (int64_t i = 0; i < N * K; i++)
        dW[i] += a->t3[i];
}

/* RMSNorm backward: y = w * x / rms(x); dy (T,D) ld ldy -> dx (T,D) ld ldx
 * (+= when acc), dw (D) +=. */
static void rmsnorm_bwd(float *dx, int64_t ldx, bool acc, float *dw, const float *dy,
                        int64_t ldy, const float *x, int64_t ldxin, const float *w, int64_t T,
                        int64_t D, float eps)
{
    if (dw) // first: dx may overwrite dy
        for (int64_t t = 0; t < T; t++) {
            const float *xr = x + t * ldxin, *g = dy + t * ldy;
            double ss = 0;
            for (int64_t i = 0; i < D; i++)
                ss += (double)xr[i] * xr[i];
            float r = (float)(1.0 / sqrt(ss / (double)D + eps));
            for (int64_t i = 0; i < D; i++)
                dw[i] += g[i] * xr[i] * r;
        }
    DS_OMP(omp parallel for schedule(static) if (T * D >= 16384))
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldxin, *g = dy + t * ldy;
        double ss = 0, gx = 0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)xr[i] * xr[i];
        double r = 1.0 / sqrt(ss / (double)D + eps);
        for (int64_t i = 0; i < D; i++)
            gx += (double)g[i] * w[i] * xr[i];
        double c = r * r * r * gx / (double)D;
        float *o = dx + t * ldx;
        for (int64_t i = 0; i < D; i++) {
            float v = (float)(r * g[i] * w[i] - c * xr[i]);
            o[i] = acc ? o[i] + v : v;
        }
    }
}

/* a = silu(g) * u; da (n) -> dg, du (n) */
static void silu_mul_bwd(float *dg, float *du, const float *da, const float *g, const float *u,
                         int64_t n)
{
    DS_OMP(omp parallel for schedule(static) if (n >= 65536))
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        float si = g[i] * sg;
        du[i] = da[i] * si;
        dg[i] = da[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

/* ---- forward -------------------------------------------------------------------------- */

/* x (T,d) -> gate/up/act (T,I) and y (T,d) of one SwiGLU MLP. */
static void mlp_fwd(float *y, const float *x, int64_t T, const float *Wg, const float *Wu,
                    const float *Wd, float *g, float *u, float *act, int64_t I, int64_t d)
{
    mm(g, I, x, d, Wg, T, I, d);
    mm(u, I, x, d, Wu, T, I, d);
    memcpy(act, g, (size_t)(T * I) * sizeof(float));
    ds_silu_mul(act, u, T * I);
    mm(y, d, act, I, Wd, T, d, I);
}

static void attention_fwd(const struct ds_tmodel *m, struct tacts *a, int64_t l, const float *hin,
                          float *hout)
{
    const struct ds_hparams *hp = &m->hp;
    const struct tlayer *W = &m->wv.L[l];
    struct lacts *A = &a->L[l];
    const int64_t B = a->B, T = a->T, N = B * T, d = hp->hidden_size, H = hp->n_heads,
                  R = hp->kv_lora_rank, rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim,
                  dqk = nope + rope, dv = hp->v_head_dim, Dc = R + rope;
    const float eps = (float)hp->rms_norm_eps, scale = m->dm->softmax_scale;
    const double *freqs = m->dm->freqs;

    ds_rmsnorm(A->x1, d, hin, d, W->attn_norm, N, d, eps);
    if (hp->q_lora_rank > 0) {
        int64_t rq = hp->q_lora_rank;
        mm(A->qa, rq, A->x1, d, W->q_a, N, rq, d);
        ds_rmsnorm(A->qan, rq, A->qa, rq, W->q_a_norm, N, rq, eps);
        mm(A->q, H * dqk, A->qan, rq, W->q_b, N, H * dqk, rq);
    } else {
        mm(A->q, H * dqk, A->x1, d, W->q, N, H * dqk, d);
    }
    mm(A->kvr, Dc, A->x1, d, W->kv_a, N, Dc, d);
    memcpy(A->kv, A->kvr, (size_t)(N * Dc) * sizeof(float));
    ds_rmsnorm(A->kv, Dc, A->kv, Dc, W->kv_a_norm, N, R, eps);
    for (int64_t n = 0; n < N; n++)
        ds_rope(A->kv + n * Dc + R, 1, Dc, rope, n % T, freqs);
    for (int64_t h = 0; h < H; h++)
        mm(A->qc + h * Dc, H * Dc, A->q + h * dqk, H * dqk, W->k_b + h * R * nope, N, R, nope);
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h = 0; h < H; h++)
            memcpy(A->qc + (n * H + h) * Dc + R, A->q + (n * H + h) * dqk + nope,
                   (size_t)rope * sizeof(float));
        ds_rope(A->qc + n * H * Dc + R, H, Dc, rope, n % T, freqs);
    }
    DS_OMP(omp parallel for schedule(dynamic, 4) if (N > 1))
    for (int64_t n = 0; n < N; n++) {
        int64_t b = n / T, t = n % T;
        float *s = a->att + (size_t)thread_id() * (size_t)(H * T);
        ds_mla_attend(A->lat + n * H * R, R, A->qc + n * H * Dc, Dc, H, A->kv + b * T * Dc, Dc,
                      t + 1, Dc, R, scale, s);
        for (int64_t h = 0; h < H; h++) {
            float *P = A->P + ((b * H + h) * T + t) * T;
            memcpy(P, s + h * (t + 1), (size_t)(t + 1) * sizeof(float));
            memset(P + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
        }
    }
    for (int64_t h = 0; h < H; h++)
        mm(A->o + h * dv, H * dv, A->lat + h * R, H * R, W->v_b + h * dv * R, N, dv, R);
    mm(a->t1, d, A->o, H * dv, W->wo, N, d, H * dv);
    for (int64_t i = 0; i < N * d; i++)
        hout[i] = hin[i] + a->t1[i];
}

static void moe_fwd(const struct ds_tmodel *m, struct tacts *a, int64_t l, float *hout,
                    double *load)
{
    const struct ds_hparams *hp = &m->hp;
    const struct tlayer *W = &m->wv.L[l];
    struct lacts *A = &a->L[l];
    const int64_t N = a->B * a->T, d = hp->hidden_size, E = hp->n_routed_experts,
                  k = hp->n_experts_per_tok, Ie = hp->moe_intermediate_size,
                  Is = hp->n_shared_experts * Ie, G = hp->n_group > 0 ? hp->n_group : 1;
    const struct ds_layer *SL = &m->dm->layers[l];
    float *acc = a->t2;

    mm(A->s, E, A->x2, d, W->gate_inp, N, E, d);
    DS_OMP(omp parallel for schedule(static) if (N * E >= 4096))
    for (int64_t n = 0; n < N; n++) {
        int tid = thread_id();
        ds_model_route(m->dm, SL, A->s + n * E, a->rb + (size_t)tid * E, a->gs + (size_t)tid * G,
                       A->sel + n * k, A->sw + n * k);
    }
    if (Is > 0)
        mlp_fwd(acc, A->x2, N, W->gate_sh, W->up_sh, W->down_sh, A->fg, A->fu, A->fa, Is, d);
    else
        memset(acc, 0, (size_t)(N * d) * sizeof(float));
    // group (row, j) slots by expert, rows ascending
    int64_t c = 0;
    for (int64_t e = 0; e < E; e++) {
        A->eoff[e] = c;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < k; j++)
                if (A->sel[n * k + j] == e) {
                    A->erow[c] = (int32_t)n;
                    A->eslot[c] = (int32_t)j;
                    memcpy(a->xg + c * d, A->x2 + n * d, (size_t)d * sizeof(float));
                    c++;
                }
        if (load)
            load[l * E + e] += (double)(c - A->eoff[e]);
    }
    A->eoff[E] = c;
    for (int64_t e = 0; e < E; e++) {
        int64_t c0 = A->eoff[e], cnt = A->eoff[e + 1] - c0;
        if (!cnt)
            continue;
        mlp_fwd(A->ey + c0 * d, a->xg + c0 * d, cnt, W->gate_exps + e * Ie * d,
                W->up_exps + e * Ie * d, W->down_exps + e * d * Ie, A->eg + c0 * Ie,
                A->eu + c0 * Ie, A->ea + c0 * Ie, Ie, d);
        for (int64_t i = c0; i < c0 + cnt; i++) {
            float *o = acc + (int64_t)A->erow[i] * d;
            const float *y = A->ey + i * d, wv = A->sw[A->erow[i] * k + A->eslot[i]];
            for (int64_t j = 0; j < d; j++)
                o[j] += wv * y[j];
        }
    }
    for (int64_t i = 0; i < N * d; i++)
        hout[i] += acc[i];
}

void ds_tpass_forward(const struct ds_tmodel *m, struct tacts *a, const int32_t *tokens,
                      int64_t B, int64_t T, double *load)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, V = m->V, N = B * T;
    const float eps = (float)hp->rms_norm_eps;

    a->B = B;
    a->T = T;
    a->tokens = tokens;
    for (int64_t n = 0; n < N; n++) {
        int32_t tok = tokens[(n / T) * (T + 1) + n % T];
        memcpy(a->h + n * d, m->wv.tok_embd + (size_t)tok * (size_t)d, (size_t)d * sizeof(float));
    }
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const struct tlayer *W = &m->wv.L[l];
        struct lacts *A = &a->L[l];
        float *hin = a->h + l * N * d, *hout = hin + N * d;
        attention_fwd(m, a, l, hin, hout);
        memcpy(A->hm, hout, (size_t)(N * d) * sizeof(float));
        ds_rmsnorm(A->x2, d, hout, d, W->ffn_norm, N, d, eps);
        if (W->gate_inp) {
            moe_fwd(m, a, l, hout, load);
        } else {
            int64_t I = hp->intermediate_size;
            mlp_fwd(a->t2, A->x2, N, W->ffn_gate, W->ffn_up, W->ffn_down, A->fg, A->fu, A->fa,
                    I, d);
            for (int64_t i = 0; i < N * d; i++)
                hout[i] += a->t2[i];
        }
    }
    ds_rmsnorm(a->xf, d, a->h + hp->n_layers * N * d, d, m->wv.output_norm, N, d, eps);
    mm(a->logits, V, a->xf, d, m->wv.output, N, V, d);
}

/* ---- backward ------------------------------------------------------------------------- */

/* MLP backward: dy (T,d) -> dx (T,d) (+= when acc); weight gradients +=. */
static void mlp_bwd(struct tacts *a, float *dx, bool acc, const float *dy, const float *x,
                    int64_t T, const float *Wg, const float *Wu, const float *Wd, float *gWg,
                    float *gWu, float *gWd, const float *g, const float *u, const float *act,
                    int64_t I, int64_t d)
{
    float *da = a->sa, *dg = a->sb, *du = a->sc;
    mm_dx(a, da, I, dy, d, Wd, T, d, I, false);
    mm_dw(a, gWd, dy, d, act, I, T, d, I);
    silu_mul_bwd(dg, du, da, g, u, T * I);
    mm_dx(a, dx, d, dg, I, Wg, T, I, d, acc);
    mm_dx(a, dx, d, du, I, Wu, T, I, d, true);
    mm_dw(a, gWg, dg, I, x, d, T, I, d);
    mm_dw(a, gWu, du, I, x, d, T, I, d);
}

/* Sequence-wise balance loss of MoE layer l (DeepSeek-V3 eq. 17-20): per
 * sequence sum_i f_i P_i with f_i = E/(k T) (selections of i), P_i = mean over
 * tokens of the normalised score s_i / sum_j s_j; mean over sequences. With
 * ds (N,E), adds factor times its gradient with respect to the scores (f is
 * piecewise constant). */
static double seq_aux_layer(const struct ds_tmodel *m, struct tacts *a, int64_t l, double factor,
                            float *ds)
{
    const struct ds_hparams *hp = &m->hp;
    const struct lacts *A = &a->L[l];
    const int64_t B = a->B, T = a->T, E = hp->n_routed_experts, k = hp->n_experts_per_tok;
    double *f = a->auxf, *P = a->auxp, total = 0;

    for (int64_t b = 0; b < B; b++) {
        memset(f, 0, (size_t)E * sizeof(double));
        memset(P, 0, (size_t)E * sizeof(double));
        for (int64_t t = 0; t < T; t++) {
            int64_t n = b * T + t;
            const float *s = A->s + n * E;
            double S = 0;
            for (int64_t e = 0; e < E; e++)
                S += s[e];
            for (int64_t e = 0; e < E; e++)
                P[e] += s[e] / S / (double)T;
            for (int64_t j = 0; j < k; j++)
                f[A->sel[n * k + j]] += (double)E / (double)(k * T);
        }
        for (int64_t e = 0; e < E; e++)
            total += f[e] * P[e];
        if (!ds)
            continue;
        for (int64_t t = 0; t < T; t++) {
            int64_t n = b * T + t;
            const float *s = A->s + n * E;
            double S = 0, gs = 0, c = factor / (double)(T * B);
            for (int64_t e = 0; e < E; e++)
                S += s[e];
            for (int64_t e = 0; e < E; e++)
                gs += f[e] * s[e] / S;
            for (int64_t e = 0; e < E; e++)
                ds[n * E + e] += (float)(c * (f[e] - gs) / S);
        }
    }
    return total / (double)B;
}

double ds_tpass_seq_aux(const struct ds_tmodel *m, struct tacts *a)
{
    double s = 0;
    for (int64_t l = 0; l < m->hp.n_layers; l++)
        if (m->wv.L[l].gate_inp)
            s += seq_aux_layer(m, a, l, 0, NULL);
    return s;
}

/* Router and expert backward; dy (N,d) the gradient of the layer's FFN output;
 * dx2 (N,d) gets the gradient of the FFN input. */
static void moe_bwd(const struct ds_tmodel *m, struct tacts *a, int64_t l, const struct tview *g,
                    const float *dy, float *dx2, double seq_aux)
{
    const struct ds_hparams *hp = &m->hp;
    const struct tlayer *W = &m->wv.L[l];
    const struct tlayer *G = &g->L[l];
    struct lacts *A = &a->L[l];
    const int64_t B = a->B, T = a->T, N = B * T, d = hp->hidden_size, E = hp->n_routed_experts,
                  k = hp->n_experts_per_tok, Ie = hp->moe_intermediate_size,
                  Is = hp->n_shared_experts * Ie;
    const double c = hp->routed_scaling_factor;
    const bool sigmoid = m->dm->sigmoid;

    if (Is > 0)
        mlp_bwd(a, dx2, false, dy, A->x2, N, W->gate_sh, W->up_sh, W->down_sh, G->gate_sh,
                G->up_sh, G->down_sh, A->fg, A->fu, A->fa, Is, d);
    else
        memset(dx2, 0, (size_t)(N * d) * sizeof(float));

    // routing weight gradients: dsel[n][j] = dy[n] . y_slot
    for (int64_t i = 0; i < A->eoff[E]; i++) {
        const float *yv = A->ey + i * d, *gv = dy + (int64_t)A->erow[i] * d;
        double s = 0;
        for (int64_t j = 0; j < d; j++)
            s += (double)gv[j] * yv[j];
        a->dsel[A->erow[i] * k + A->eslot[i]] = (float)s;
    }
    // experts: dyg = w * dy[row], on their gathered input rows
    float *dyg = a->dx, *dxg = a->dy;
    for (int64_t i = 0; i < A->eoff[E]; i++)
        memcpy(a->xg + i * d, A->x2 + (int64_t)A->erow[i] * d, (size_t)d * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        int64_t c0 = A->eoff[e], cnt = A->eoff[e + 1] - c0;
        if (!cnt)
            continue;
        for (int64_t i = 0; i < cnt; i++) {
            int64_t row = A->erow[c0 + i];
            float wv = A->sw[row * k + A->eslot[c0 + i]];
            for (int64_t j = 0; j < d; j++)
                dyg[i * d + j] = wv * dy[row * d + j];
        }
        mlp_bwd(a, dxg, false, dyg, a->xg + c0 * d, cnt, W->gate_exps + e * Ie * d,
                W->up_exps + e * Ie * d, W->down_exps + e * d * Ie, G->gate_exps + e * Ie * d,
                G->up_exps + e * Ie * d, G->down_exps + e * d * Ie, A->eg + c0 * Ie,
                A->eu + c0 * Ie, A->ea + c0 * Ie, Ie, d);
        for (int64_t i = 0; i < cnt; i++) {
            float *o = dx2 + (int64_t)A->erow[c0 + i] * d;
            for (int64_t j = 0; j < d; j++)
                o[j] += dxg[i * d + j];
        }
    }
    // ds (N,E): through normalisation and scaling of the selected scores
    DS_OMP(omp parallel for schedule(static) if (N * E >= 4096))
    for (int64_t n = 0; n < N; n++) {
        const float *s = A->s + n * E;
        const int32_t *idx = A->sel + n * k;
        const float *dw = a->dsel + n * k;
        float *ds = a->ds + n * E;
        memset(ds, 0, (size_t)E * sizeof(float));
        if (hp->norm_topk_prob) {
            double S = 1e-20, sd = 0;
            for (int64_t j = 0; j < k; j++)
                S += s[idx[j]];
            for (int64_t j = 0; j < k; j++)
                sd += (double)dw[j] * s[idx[j]];
            for (int64_t j = 0; j < k; j++)
                ds[idx[j]] += (float)(c * (dw[j] / S - sd / (S * S)));
        } else {
            for (int64_t j = 0; j < k; j++)
                ds[idx[j]] += (float)(c * dw[j]);
        }
    }
    if (seq_aux > 0)
        seq_aux_layer(m, a, l, seq_aux, a->ds);
    // through the scoring function -> router logit gradients (in ds)
    DS_OMP(omp parallel for schedule(static) if (N * E >= 4096))
    for (int64_t n = 0; n < N; n++) {
        const float *s = A->s + n * E;
        float *ds = a->ds + n * E;
        if (sigmoid) {
            for (int64_t e = 0; e < E; e++)
                ds[e] = ds[e] * s[e] * (1.0f - s[e]);
        } else {
            double dot = 0;
            for (int64_t e = 0; e < E; e++)
                dot += (double)ds[e] * s[e];
            for (int64_t e = 0; e < E; e++)
                ds[e] = (float)(s[e] * (ds[e] - dot));
        }
    }
    mm_dx(a, dx2, d, a->ds, E, W->gate_inp, N, E, d, true);
    mm_dw(a, G->gate_inp, a->ds, E, A->x2, d, N, E, d);
}

/* Attention backward: dh (N,d) gradient of the layer's attention output;
 * dhin (N,d) += gradient of the attention input. */
static void attention_bwd(const struct ds_tmodel *m, struct tacts *a, int64_t l,
                          const struct tview *g, const float *hin, const float *dh, float *dhin)
{
    const struct ds_hparams *hp = &m->hp;
    const struct tlayer *W = &m->wv.L[l];
    const struct tlayer *G = &g->L[l];
    struct lacts *A = &a->L[l];
    const int64_t B = a->B, T = a->T, N = B * T, d = hp->hidden_size, H = hp->n_heads,
                  R = hp->kv_lora_rank, rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim,
                  dqk = nope + rope, dv = hp->v_head_dim, Dc = R + rope;
    const float eps = (float)hp->rms_norm_eps, scale = m->dm->softmax_scale;
    float *dO = a->dx, *dlat = a->dy, *dq = a->dz, *dkv = a->dw1, *dx1 = a->dw2;

    // output projection
    mm_dx(a, dO, H * dv, dh, d, W->wo, N, d, H * dv, false);
    mm_dw(a, G->wo, dh, d, A->o, H * dv, N, d, H * dv);
    // o = v_b[h] lat
    for (int64_t h = 0; h < H; h++) {
        mm_dx(a, dlat + h * R, H * R, dO + h * dv, H * dv, W->v_b + h * dv * R, N, dv, R, false);
        mm_dw(a, G->v_b + h * dv * R, dO + h * dv, H * dv, A->lat + h * R, H * R, N, dv, R);
    }
    // attention core per (sequence, head)
    DS_OMP(omp parallel for schedule(dynamic, 1) if (B * H > 1))
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H;
        const float *kv = A->kv + b * T * Dc;
        float *dk = a->dkvh + bh * T * Dc;
        memset(dk, 0, (size_t)(T * Dc) * sizeof(float));
        for (int64_t t = 0; t < T; t++) {
            int64_t n = b * T + t;
            const float *P = A->P + (bh * T + t) * T;
            const float *dl = dlat + (n * H + h) * R;
            const float *q = A->qc + (n * H + h) * Dc;
            float *dqc = a->dqc + (n * H + h) * Dc;
            float *dS = a->att + (size_t)thread_id() * (size_t)(H * T);
            double sum = 0;
            for (int64_t j = 0; j <= t; j++) {
                float dp = 0;
                DS_OMP(omp simd reduction(+ : dp))
                for (int64_t r = 0; r < R; r++)
                    dp += dl[r] * kv[j * Dc + r];
                dS[j] = dp;
                sum += (double)dp * P[j];
            }
            for (int64_t j = 0; j <= t; j++)
                dS[j] = (float)(P[j] * (dS[j] - sum)) * scale;
            memset(dqc, 0, (size_t)Dc * sizeof(float));
            for (int64_t j = 0; j <= t; j++) {
                const float *kj = kv + j * Dc;
                float *dkj = dk + j * Dc;
                float sj = dS[j], pj = P[j];
                for (int64_t c = 0; c < Dc; c++) {
                    dqc[c] += sj * kj[c];
                    dkj[c] += sj * q[c];
                }
                for (int64_t r = 0; r < R; r++)
                    dkj[r] += pj * dl[r];
            }
        }
    }
    // dkv (N,Dc) = sum over heads in order
    DS_OMP(omp parallel for schedule(static) if (N * H * Dc >= 65536))
    for (int64_t n = 0; n < N; n++) {
        int64_t b = n / T, t = n % T;
        float *o = dkv + n * Dc;
        memset(o, 0, (size_t)Dc * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const float *s = a->dkvh + ((b * H + h) * T + t) * Dc;
            for (int64_t c = 0; c < Dc; c++)
                o[c] += s[c];
        }
    }
    // q side: rope part back-rotated into dq[:, h, nope:], absorbed part through k_b
    for (int64_t n = 0; n < N; n++) {
        ds_rope(a->dqc + n * H * Dc + R, H, Dc, rope, n % T, a->nfreqs);
        for (int64_t h = 0; h < H; h++)
            memcpy(dq + (n * H + h) * dqk + nope, a->dqc + (n * H + h) * Dc + R,
                   (size_t)rope * sizeof(float));
    }
    for (int64_t h = 0; h < H; h++) {
        // qc[:, h, 0:R] = q_nope_h . k_b[h]^T, k_b[h] (R, nope)
        mm_dx(a, dq + h * dqk, H * dqk, a->dqc + h * Dc, H * Dc, W->k_b + h * R * nope, N, R,
              nope, false);
        mm_dw(a, G->k_b + h * R * nope, a->dqc + h * Dc, H * Dc, A->q + h * dqk, H * dqk, N, R,
              nope);
    }
    // kv side: un-rotate k_pe, RMSNorm backward of the latent
    for (int64_t n = 0; n < N; n++)
        ds_rope(dkv + n * Dc + R, 1, Dc, rope, n % T, a->nfreqs);
    rmsnorm_bwd(dkv, Dc, false, G->kv_a_norm, dkv, Dc, A->kvr, Dc, W->kv_a_norm, N, R, eps);
    mm_dx(a, dx1, d, dkv, Dc, W->kv_a, N, Dc, d, false);
    mm_dw(a, G->kv_a, dkv, Dc, A->x1, d, N, Dc, d);
    if (hp->q_lora_rank > 0) {
        int64_t rq = hp->q_lora_rank;
        float *dqa = dkv; // free now; N*rq <= N*maxw
        mm_dx(a, dqa, rq, dq, H * dqk, W->q_b, N, H * dqk, rq, false);
        mm_dw(a, G->q_b, dq, H * dqk, A->qan, rq, N, H * dqk, rq);
        rmsnorm_bwd(dqa, rq, false, G->q_a_norm, dqa, rq, A->qa, rq, W->q_a_norm, N, rq, eps);
        mm_dx(a, dx1, d, dqa, rq, W->q_a, N, rq, d, true);
        mm_dw(a, G->q_a, dqa, rq, A->x1, d, N, rq, d);
    } else {
        mm_dx(a, dx1, d, dq, H * dqk, W->q, N, H * dqk, d, true);
        mm_dw(a, G->q, dq, H * dqk, A->x1, d, N, H * dqk, d);
    }
    rmsnorm_bwd(dhin, d, true, G->attn_norm, dx1, d, hin, d, W->attn_norm, N, d, eps);
}

void ds_tpass_backward(const struct ds_tmodel *m, struct tacts *a, const struct tview *g,
                       float *dlogits, double seq_aux)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t T = a->T, N = a->B * T, d = hp->hidden_size, V = m->V;
    const float eps = (float)hp->rms_norm_eps;
    float *dh = a->dh, *dxf = a->dx, *dx2 = a->dffn;

    // head and final norm
    mm_dx(a, dxf, d, dlogits, V, m->wv.output, N, V, d, false);
    mm_dw(a, g->output, dlogits, V, a->xf, d, N, V, d);
    rmsnorm_bwd(dh, d, false, g->output_norm, dxf, d, a->h + hp->n_layers * N * d, d,
                m->wv.output_norm, N, d, eps);
    for (int64_t l = hp->n_layers - 1; l >= 0; l--) {
        const struct tlayer *W = &m->wv.L[l];
        const struct tlayer *G = &g->L[l];
        struct lacts *A = &a->L[l];
        if (W->gate_inp)
            moe_bwd(m, a, l, g, dh, dx2, seq_aux);
        else
            mlp_bwd(a, dx2, false, dh, A->x2, N, W->ffn_gate, W->ffn_up, W->ffn_down,
                    G->ffn_gate, G->ffn_up, G->ffn_down, A->fg, A->fu, A->fa,
                    hp->intermediate_size, d);
        rmsnorm_bwd(dh, d, true, G->ffn_norm, dx2, d, A->hm, d, W->ffn_norm, N, d, eps);
        // dh: gradient at the attention output; += gradient of the layer input
        attention_bwd(m, a, l, g, a->h + l * N * d, dh, dh);
    }
    for (int64_t n = 0; n < N; n++) {
        int32_t tok = a->tokens[(n / T) * (T + 1) + n % T];
        float *o = g->tok_embd + (size_t)tok * (size_t)d;
        for (int64_t j = 0; j < d; j++)
            o[j] += dh[n * d + j];
    }
}

uint64_t ds_tacts_route_hash(const struct ds_tmodel *m, const struct tacts *a)
{
    uint64_t h = 1469598103934665603ULL;
    const int64_t N = a->B * a->T, k = m->hp.n_experts_per_tok;
    for (int64_t l = 0; l < m->hp.n_layers; l++) {
        if (!a->L[l].sel)
            continue;
        for (int64_t i = 0; i < N * k; i++)
            h = (h ^ (uint64_t)a->L[l].sel[i]) * 1099511628211ULL;
    }
    return h;
}
