/*
 * forward.c - the DeepSeek-V2/V3 forward pass over a latent KV cache.
 *
 * Per layer (DeepSeek model.py, attn_impl "absorb"):
 *   x = RMSNorm(h)
 *   q = W_qb RMSNorm(W_qa x)  or  W_q x            (T, H, nope+rope)
 *   [c | k_pe] = W_kva x; c = RMSNorm(c); k_pe = RoPE(k_pe)  -> cache row of position p
 *   q_lat[h] = k_b[h] q_nope[h]                    (T, H, R)   absorbed key projection
 *   score(t, j) = (q_lat[h] . c_j + RoPE(q_pe[h]) . k_pe_j) * scale,  j <= p(t)
 *   o[h] = v_b[h] sum_j softmax(score)_j c_j       (T, H, v)   absorbed value projection
 *   h += W_o o
 *   x = RMSNorm(h); h += dense FFN(x) or MoE(x)
 * and logits = W_out RMSNorm(h). A batch of T tokens is processed in chunks
 * of at most UBATCH rows; the cache makes chunks causal with each other.
 *
 * With an importance-matrix collector set (ds_ctx_set_imatrix), the input rows
 * of every matrix product go to it (imatrix_impl.h), always outside parallel
 * regions; without one, each hook is a NULL check.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ds_model.h"
#include "error_impl.h"
#include "imatrix_impl.h"
#include "kernels_impl.h"
#include "model_impl.h"

#define UBATCH 64   /* tokens per chunk of a batched forward */
#define HEAD_BLOCK 8 /* heads per attention work item */

struct ds_ctx {
    const struct ds_model *m;
    int64_t n_ctx, pos, ub;
    int nthr;           /* threads the attention scratch is sized for */
    int64_t Dc;         /* cache row: kv_lora_rank + rope */
    float *kv;          /* (n_layers, n_ctx, Dc) */
    float *h, *x, *tmp, *acc, *xg, *yg; /* (ub, d) */
    float *qa;          /* (ub, r_q) */
    float *q;           /* (ub, H, nope+rope) */
    float *qcat;        /* (ub, H, Dc): [absorbed q_nope | rotated q_pe] */
    float *lat;         /* (ub, H, R) */
    float *o;           /* (ub, H*v) */
    float *g, *u;       /* (ub, max FFN width) */
    float *rs, *rb;     /* (ub, E): router scores, selection scores */
    float *gs;          /* (ub, n_group) */
    int32_t *sel;       /* (ub, k) */
    float *selw;        /* (ub, k) */
    int32_t *etok;      /* (ub) rows routed to one expert */
    float *ew;          /* (ub) their routing weights */
    float *att;         /* (nthr, HEAD_BLOCK, n_ctx) */
    struct ds_imatrix *im; /* borrowed; NULL: no collection */
};

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void ds_ctx_free(struct ds_ctx *c)
{
    if (!c)
        return;
    float *bufs[] = {c->kv, c->h,  c->x,  c->tmp, c->acc, c->xg,   c->yg,
                     c->qa, c->q,  c->qcat, c->lat, c->o, c->g,    c->u,
                     c->rs, c->rb, c->gs, c->selw, c->ew, c->att};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]);
    free(c->sel);
    free(c->etok);
    free(c);
}

static ds_err alloc_f(float **p, int64_t a, int64_t b)
{
    uint64_t n;
    DS_RETURN_IF(ds_mul_u64((uint64_t)a, (uint64_t)b, &n) || n > SIZE_MAX / sizeof(float) / 2,
                 DS_ERR_LIMIT, "context buffers too large");
    *p = ds_malloc((size_t)(n ? n : 1) * sizeof(float));
    return *p ? DS_OK : DS_ERR_NOMEM;
}

ds_err ds_ctx_new(const struct ds_model *m, int64_t n_ctx, struct ds_ctx **out)
{
    struct ds_ctx *c;
    const struct ds_hparams *hp;
    int64_t d, H, R, ub, ffw, E, k;
    uint64_t kvn;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!out || !m, DS_ERR_ARG, "model or output missing");
    *out = NULL;
    hp = &m->hp;
    DS_RETURN_IF(m->vocab_only, DS_ERR_ARG, "'%s' holds a vocabulary only; it cannot run",
                 m->name);
    DS_RETURN_IF(n_ctx < 1 || n_ctx > hp->max_position_embeddings, DS_ERR_ARG,
                 "context of %lld tokens is outside [1, %lld] (the model's context length)",
                 (long long)n_ctx, (long long)hp->max_position_embeddings);
    c = ds_calloc(1, sizeof(*c));
    if (!c)
        return DS_ERR_NOMEM;
    c->m = m;
    c->n_ctx = n_ctx;
    c->ub = ub = n_ctx < UBATCH ? n_ctx : UBATCH;
    c->nthr = max_threads();
    d = hp->hidden_size;
    H = hp->n_heads;
    R = hp->kv_lora_rank;
    c->Dc = R + hp->qk_rope_head_dim;
    E = hp->n_routed_experts;
    k = hp->n_experts_per_tok;
    ffw = hp->intermediate_size;
    if (hp->moe_intermediate_size > ffw)
        ffw = hp->moe_intermediate_size;
    if (hp->moe_intermediate_size * hp->n_shared_experts > ffw)
        ffw = hp->moe_intermediate_size * hp->n_shared_experts;
    DS_FAIL_IF(ds_mul_u64((uint64_t)hp->n_layers, (uint64_t)n_ctx, &kvn) || kvn > INT64_MAX / 2,
               DS_ERR_LIMIT, "context of %lld tokens is too large", (long long)n_ctx);
    DS_CHECK(alloc_f(&c->kv, (int64_t)kvn, c->Dc));
    DS_CHECK(alloc_f(&c->h, ub, d));
    DS_CHECK(alloc_f(&c->x, ub, d));
    DS_CHECK(alloc_f(&c->tmp, ub, d));
    DS_CHECK(alloc_f(&c->acc, ub, d));
    DS_CHECK(alloc_f(&c->xg, ub, d)); // a row picks an expert at most once
    DS_CHECK(alloc_f(&c->yg, ub, d));
    DS_CHECK(alloc_f(&c->qa, ub, hp->q_lora_rank > 0 ? hp->q_lora_rank : 1));
    DS_CHECK(alloc_f(&c->q, ub * H, hp->qk_nope_head_dim + hp->qk_rope_head_dim));
    DS_CHECK(alloc_f(&c->qcat, ub * H, c->Dc));
    DS_CHECK(alloc_f(&c->lat, ub * H, R));
    DS_CHECK(alloc_f(&c->o, ub * H, hp->v_head_dim));
    DS_CHECK(alloc_f(&c->g, ub, ffw));
    DS_CHECK(alloc_f(&c->u, ub, ffw));
    DS_CHECK(alloc_f(&c->rs, ub, E > 0 ? E : 1));
    DS_CHECK(alloc_f(&c->rb, ub, E > 0 ? E : 1));
    DS_CHECK(alloc_f(&c->gs, ub, hp->n_group > 0 ? hp->n_group : 1));
    DS_CHECK(alloc_f(&c->selw, ub, k > 0 ? k : 1));
    DS_CHECK(alloc_f(&c->ew, ub, 1));
    DS_CHECK(alloc_f(&c->att, (int64_t)c->nthr * HEAD_BLOCK, n_ctx));
    c->sel = ds_malloc((size_t)(ub * (k > 0 ? k : 1)) * sizeof(int32_t));
    c->etok = ds_malloc((size_t)ub * sizeof(int32_t));
    DS_FAIL_IF(!c->sel || !c->etok, DS_ERR_NOMEM, "out of memory");
out:
    if (rc != DS_OK) {
        ds_ctx_free(c);
        return rc;
    }
    *out = c;
    return DS_OK;
}

int64_t ds_ctx_n_ctx(const struct ds_ctx *c)
{
    return c->n_ctx;
}

int64_t ds_ctx_pos(const struct ds_ctx *c)
{
    return c->pos;
}

uint64_t ds_ctx_kv_bytes(const struct ds_ctx *c)
{
    return (uint64_t)c->n_ctx * ds_ctx_kv_bytes_per_token(c);
}

uint64_t ds_ctx_kv_bytes_per_token(const struct ds_ctx *c)
{
    return (uint64_t)c->m->hp.n_layers * (uint64_t)c->Dc * sizeof(float);
}

void ds_ctx_reset(struct ds_ctx *c)
{
    c->pos = 0;
}

void ds_ctx_set_imatrix(struct ds_ctx *c, struct ds_imatrix *im)
{
    assert(!im || ds_imatrix_model(im) == c->m);
    c->im = im && ds_imatrix_model(im) == c->m ? im : NULL;
}

/* Rows x (T, ldx) into the collector, if any: matrix mat of (layer, slot). */
static void record(struct ds_ctx *c, int64_t layer, enum ds_im_slot slot, int64_t mat,
                   const float *x, int64_t ldx, int64_t T)
{
    if (c->im)
        ds_imatrix_add(c->im, layer, slot, mat, x, ldx, T);
}

/* x (T,K) row stride ldx, matrix e of w (N,K) -> y (T,N) row stride ldy:
 * y = x . W_e^T, F8 weights dequantized with their tile scales. */
static void wmatmul(float *y, int64_t ldy, const float *x, int64_t ldx, const struct ds_weight *w,
                    int64_t e, int64_t T, int64_t N, int64_t K)
{
    ds_matmul_scaled(y, ldy, x, ldx, ds_weight_mat(w, e), w->type, ds_weight_scale(w, e),
                     w->block, T, N, K);
}

/* ---- attention ---------------------------------------------------------------------- */

static void attention(struct ds_ctx *c, const struct ds_layer *L, int64_t layer, int64_t T,
                      int64_t p0)
{
    const struct ds_model *m = c->m;
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, H = hp->n_heads, R = hp->kv_lora_rank,
                  rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim,
                  dqk = nope + rope, dv = hp->v_head_dim, Dc = c->Dc;
    const float eps = (float)hp->rms_norm_eps;
    float *kvl = c->kv + (size_t)layer * (size_t)c->n_ctx * (size_t)Dc;
    float *rows = kvl + (size_t)p0 * (size_t)Dc; // this chunk's cache rows
    const int64_t nhb = (H + HEAD_BLOCK - 1) / HEAD_BLOCK;
    int nt = max_threads() < c->nthr ? max_threads() : c->nthr;
    (void)nt;

    ds_rmsnorm(c->x, d, c->h, d, L->attn_norm, T, d, eps);
    // x (T,d) -> q (T, H, dqk)
    if (hp->q_lora_rank > 0) {
        int64_t rq = hp->q_lora_rank;
        record(c, layer, DS_IM_Q_A, 0, c->x, d, T);
        wmatmul(c->qa, rq, c->x, d, &L->q_a, 0, T, rq, d);
        ds_rmsnorm(c->qa, rq, c->qa, rq, L->q_a_norm, T, rq, eps);
        record(c, layer, DS_IM_Q_B, 0, c->qa, rq, T);
        wmatmul(c->q, H * dqk, c->qa, rq, &L->q_b, 0, T, H * dqk, rq);
    } else {
        record(c, layer, DS_IM_Q, 0, c->x, d, T);
        wmatmul(c->q, H * dqk, c->x, d, &L->q, 0, T, H * dqk, d);
    }
    // x -> cache rows [c | k_pe] (T, Dc): normalised latent, rotated shared key
    record(c, layer, DS_IM_KV_A, 0, c->x, d, T);
    wmatmul(rows, Dc, c->x, d, &L->kv_a, 0, T, Dc, d);
    ds_rmsnorm(rows, Dc, rows, Dc, L->kv_a_norm, T, R, eps);
    for (int64_t t = 0; t < T; t++)
        ds_rope(rows + t * Dc + R, 1, Dc, rope, p0 + t, m->freqs);

    // q_nope[t][h] (nope) -> qcat[t][h][0:R] = k_b[h] (R, nope) . q_nope
    if (c->im)
        for (int64_t h = 0; h < H; h++)
            record(c, layer, DS_IM_K_B, h, c->q + h * dqk, H * dqk, T);
    DS_OMP(omp parallel for schedule(static) if (T * H * R * nope >= (1 << 15)))
    for (int64_t h = 0; h < H; h++)
        wmatmul(c->qcat + h * Dc, H * Dc, c->q + h * dqk, H * dqk, &L->k_b, h, T, R, nope);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t h = 0; h < H; h++)
            memcpy(c->qcat + (t * H + h) * Dc + R, c->q + (t * H + h) * dqk + nope,
                   (size_t)rope * sizeof(float));
        ds_rope(c->qcat + t * H * Dc + R, H, Dc, rope, p0 + t, m->freqs);
    }

    // qcat (T, H, Dc) over cache rows 0 .. p0+t -> lat (T, H, R)
    DS_OMP(omp parallel for schedule(dynamic, 1) num_threads(nt) if (T * nhb > 1))
    for (int64_t w = 0; w < T * nhb; w++) {
        int64_t t = w / nhb, h0 = (w % nhb) * HEAD_BLOCK;
        int64_t nh = H - h0 < HEAD_BLOCK ? H - h0 : HEAD_BLOCK;
        float *s = c->att + (size_t)thread_id() * HEAD_BLOCK * (size_t)c->n_ctx;
        ds_mla_attend(c->lat + (t * H + h0) * R, R, c->qcat + (t * H + h0) * Dc, Dc, nh, kvl, Dc,
                      p0 + t + 1, Dc, R, m->softmax_scale, s);
    }

    // lat[t][h] (R) -> o[t][h] = v_b[h] (dv, R) . lat
    if (c->im)
        for (int64_t h = 0; h < H; h++)
            record(c, layer, DS_IM_V_B, h, c->lat + h * R, H * R, T);
    DS_OMP(omp parallel for schedule(static) if (T * H * R * dv >= (1 << 15)))
    for (int64_t h = 0; h < H; h++)
        wmatmul(c->o + h * dv, H * dv, c->lat + h * R, H * R, &L->v_b, h, T, dv, R);
    record(c, layer, DS_IM_WO, 0, c->o, H * dv, T);
    wmatmul(c->tmp, d, c->o, H * dv, &L->wo, 0, T, d, H * dv);
    for (int64_t i = 0; i < T * d; i++)
        c->h[i] += c->tmp[i];
}

/* ---- feed-forward -------------------------------------------------------------------- */

/* x (T,d) -> y (T,d) = down (silu(gate x) * up x); gate, up (I,d), down (d,I).
 * Inputs are recorded as matrix mat of slots gate, gate + 1 (up), gate + 2
 * (down) of layer l. */
static void mlp(struct ds_ctx *c, float *y, const float *x, int64_t T, const struct ds_weight *wg,
                const struct ds_weight *wu, const struct ds_weight *wd, int64_t I, int64_t l,
                enum ds_im_slot gate, int64_t mat)
{
    const int64_t d = c->m->hp.hidden_size;
    record(c, l, gate, mat, x, d, T);
    record(c, l, (enum ds_im_slot)(gate + 1), mat, x, d, T);
    wmatmul(c->g, I, x, d, wg, mat, T, I, d);
    wmatmul(c->u, I, x, d, wu, mat, T, I, d);
    ds_silu_mul(c->g, c->u, T * I);
    record(c, l, (enum ds_im_slot)(gate + 2), mat, c->g, I, T);
    wmatmul(y, d, c->g, I, wd, mat, T, d, I);
}

/* Indices of the k largest of v (n) into idx (may be NULL), largest first,
 * ties to the lower index. v is clobbered: chosen entries become NaN. */
static void top_k(float *v, int64_t n, int64_t k, int32_t *idx)
{
    for (int64_t j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (!isnan(v[i]) && (best < 0 || v[i] > v[best]))
                best = i;
        if (best < 0) // only NaN left (NaN inputs)
            best = j % n;
        if (idx)
            idx[j] = (int32_t)best;
        v[best] = NAN;
    }
}

/* Router of one token (DeepSeek model.py Gate, HF normalisation):
 *   s = sigmoid(logits) or softmax(logits); b = s + bias (selection only)
 *   groups (n_group > 1, not greedy): score = sum of top-2 of b (noaux_tc) or
 *   max of b (group_limited_greedy); experts outside the best topk_group
 *   groups are masked with -inf
 *   idx = top-k of b; w = s[idx]; w /= sum(w) if norm_topk_prob; w *= scale
 * logits (E) are replaced by s; b (E), gs (n_group) are scratch. */
static void route(const struct ds_model *m, const struct ds_layer *L, float *s, float *b,
                  float *gs, int32_t *idx, float *w)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t E = hp->n_routed_experts, k = hp->n_experts_per_tok, G = hp->n_group;

    if (m->sigmoid)
        for (int64_t e = 0; e < E; e++)
            s[e] = 1.0f / (1.0f + expf(-s[e]));
    else
        ds_softmax(s, E);
    for (int64_t e = 0; e < E; e++)
        b[e] = s[e] + (L->exp_bias ? L->exp_bias[e] : 0.0f);
    if (m->routing != DS_ROUTE_GREEDY && G > 1 && hp->topk_group < G) {
        const int64_t eg = E / G;
        for (int64_t g = 0; g < G; g++) {
            const float *bg = b + g * eg;
            float m1 = -INFINITY, m2 = -INFINITY;
            for (int64_t i = 0; i < eg; i++) {
                if (bg[i] > m1) {
                    m2 = m1;
                    m1 = bg[i];
                } else if (bg[i] > m2) {
                    m2 = bg[i];
                }
            }
            gs[g] = m->routing == DS_ROUTE_NOAUX_TC && eg > 1 ? m1 + m2 : m1;
        }
        top_k(gs, G, hp->topk_group, NULL); // kept groups become NaN
        for (int64_t g = 0; g < G; g++)
            if (!isnan(gs[g]))
                for (int64_t i = 0; i < eg; i++)
                    b[g * eg + i] = -INFINITY;
    }
    top_k(b, E, k, idx);
    double sum = 0;
    for (int64_t j = 0; j < k; j++) {
        w[j] = s[idx[j]];
        sum += w[j];
    }
    for (int64_t j = 0; j < k; j++) {
        double v = w[j];
        if (hp->norm_topk_prob)
            v /= sum + 1e-20;
        w[j] = (float)(v * hp->routed_scaling_factor);
    }
}

/* x (T,d) -> acc (T,d) = shared(x) + sum_j w_j expert_{idx_j}(x) */
static void moe(struct ds_ctx *c, const struct ds_layer *L, int64_t l, int64_t T)
{
    const struct ds_model *m = c->m;
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, E = hp->n_routed_experts, k = hp->n_experts_per_tok,
                  Ie = hp->moe_intermediate_size, G = hp->n_group;

    record(c, l, DS_IM_GATE_INP, 0, c->x, d, T);
    wmatmul(c->rs, E, c->x, d, &L->gate_inp, 0, T, E, d);
    DS_OMP(omp parallel for schedule(static) if (T * E >= 4096))
    for (int64_t t = 0; t < T; t++)
        route(m, L, c->rs + t * E, c->rb + t * E, c->gs + t * G, c->sel + t * k, c->selw + t * k);

    if (L->gate_sh.data)
        mlp(c, c->acc, c->x, T, &L->gate_sh, &L->up_sh, &L->down_sh, hp->n_shared_experts * Ie,
            l, DS_IM_GATE_SH, 0);
    else
        memset(c->acc, 0, (size_t)(T * d) * sizeof(float));

    // Experts in id order, each over the rows routed to it; every row gets its
    // contributions in the same order whatever the batch.
    for (int64_t e = 0; e < E; e++) {
        int64_t cnt = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < k; j++)
                if (c->sel[t * k + j] == e) {
                    c->etok[cnt] = (int32_t)t;
                    c->ew[cnt] = c->selw[t * k + j];
                    memcpy(c->xg + cnt * d, c->x + t * d, (size_t)d * sizeof(float));
                    cnt++;
                }
        if (!cnt)
            continue;
        mlp(c, c->yg, c->xg, cnt, &L->gate_exps, &L->up_exps, &L->down_exps, Ie, l,
            DS_IM_GATE_EXPS, e);
        for (int64_t i = 0; i < cnt; i++) {
            float *a = c->acc + (int64_t)c->etok[i] * d;
            const float *yv = c->yg + i * d, wv = c->ew[i];
            for (int64_t j = 0; j < d; j++)
                a[j] += wv * yv[j];
        }
    }
}

/* ---- forward ---------------------------------------------------------------------------- */

/* T tokens at positions p0.. ; logits: NULL, (T, V), or (V) for the last row. */
static void forward_chunk(struct ds_ctx *c, const int32_t *tokens, int64_t T, int64_t p0,
                          float *logits, bool all)
{
    const struct ds_model *m = c->m;
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, V = m->n_vocab;
    const float eps = (float)hp->rms_norm_eps;

    for (int64_t t = 0; t < T; t++)
        ds_row_to_f32_scaled(c->h + t * d, m->tok_embd.data, m->tok_embd.type, m->tok_embd.scale,
                             m->tok_embd.block, tokens[t], d);
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const struct ds_layer *L = &m->layers[l];
        attention(c, L, l, T, p0);
        ds_rmsnorm(c->x, d, c->h, d, L->ffn_norm, T, d, eps);
        if (L->moe) {
            moe(c, L, l, T);
            for (int64_t i = 0; i < T * d; i++)
                c->h[i] += c->acc[i];
        } else {
            mlp(c, c->tmp, c->x, T, &L->ffn_gate, &L->ffn_up, &L->ffn_down,
                hp->intermediate_size, l, DS_IM_GATE, 0);
            for (int64_t i = 0; i < T * d; i++)
                c->h[i] += c->tmp[i];
        }
    }
    if (c->im) { // every row, whatever logits are asked for
        ds_rmsnorm(c->x, d, c->h, d, m->output_norm, T, d, eps);
        record(c, DS_IM_OUTPUT, 0, 0, c->x, d, T);
    }
    if (!logits)
        return;
    if (all) {
        ds_rmsnorm(c->x, d, c->h, d, m->output_norm, T, d, eps);
        wmatmul(logits, V, c->x, d, &m->output, 0, T, V, d);
    } else {
        ds_rmsnorm(c->x, d, c->h + (T - 1) * d, d, m->output_norm, 1, d, eps);
        wmatmul(logits, V, c->x, d, &m->output, 0, 1, V, d);
    }
}

ds_err ds_forward(struct ds_ctx *c, const int32_t *tokens, size_t n, float *logits,
                  bool all_logits)
{
    DS_RETURN_IF(!c || (!tokens && n), DS_ERR_ARG, "context or tokens missing");
    DS_RETURN_IF(n == 0, DS_ERR_ARG, "no tokens to run");
    DS_RETURN_IF(n > (size_t)(c->n_ctx - c->pos), DS_ERR_ARG,
                 "%zu tokens at position %lld do not fit the context of %lld", n,
                 (long long)c->pos, (long long)c->n_ctx);
    for (size_t i = 0; i < n; i++)
        DS_RETURN_IF(tokens[i] < 0 || tokens[i] >= c->m->n_vocab, DS_ERR_ARG,
                     "token id %d is out of range (the vocabulary has %lld)", (int)tokens[i],
                     (long long)c->m->n_vocab);
    for (size_t i0 = 0; i0 < n; i0 += (size_t)c->ub) {
        int64_t T = n - i0 < (size_t)c->ub ? (int64_t)(n - i0) : c->ub;
        bool last = i0 + (size_t)T == n;
        float *lg = !logits ? NULL
                    : all_logits ? logits + i0 * (size_t)c->m->n_vocab
                    : last       ? logits
                                 : NULL;
        forward_chunk(c, tokens + i0, T, c->pos, lg, all_logits);
        c->pos += T;
    }
    return DS_OK;
}

void ds_model_route(const struct ds_model *m, const struct ds_layer *L, float *s, float *b,
                    float *gs, int32_t *idx, float *w)
{
    route(m, L, s, b, gs, idx, w);
}
