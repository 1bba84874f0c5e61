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
 * Cache rows are float, or q8_0 blocks (DS_CACHE_Q8_0) quantized when written.
 *
 * With MTP drafting on, the final normed hidden states of the last RING
 * positions are kept, and the MTP layer (one more decoder layer with its own
 * cache, after eh_proj over [enorm(embedding); hnorm(hidden)]) follows the
 * main cache one pair behind; ds_ctx_draft runs the pairs left and the head.
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
#include "ds_quant.h"
#include "error_impl.h"
#include "imatrix_impl.h"
#include "kernels_impl.h"
#include "model_impl.h"
#include "prune_impl.h"
#include "route_impl.h"

#define UBATCH 64   /* tokens per chunk of a batched forward */
#define HEAD_BLOCK 8 /* heads per attention work item */
#define RING (2 * UBATCH) /* positions of final hidden states kept for the MTP module */
/* Weight rows per work item of the fused expert products: 64 for an expert
 * with several tokens (the 2-D tiles work best on tall items), 32 with one
 * (decode: finer items balance the threads better). */
#define ROW_BLOCK 64
#define ROW_BLOCK_1 32

/* One expert of a MoE layer over the rows routed to it (or the shared
 * experts over all rows): inputs x (cnt, d), gate and up outputs g, u
 * (cnt, I), output y (cnt, d); qx, qg their quantized inputs. */
struct eslot {
    const struct ds_weight *gate, *up, *down;
    int64_t mat, I, cnt;
    const float *x;
    float *g, *u, *y;
    unsigned char *qx, *qg;
    int32_t *tok;   /* (cnt) rows of the batch */
    float *w;       /* (cnt) their routing weights */
};

/* Rows n0..n1 of matrix which (0 gate, 1 up, 2 down) of slot s. */
struct eitem {
    int32_t s, which, n0, n1;
};

struct ds_ctx {
    const struct ds_model *m;
    int64_t n_ctx, pos, ub;
    int nthr;           /* threads the attention scratch is sized for */
    int64_t Dc;         /* cache row: kv_lora_rank + rope */
    bool q8;            /* cache rows in q8_0 blocks of Dq values */
    int64_t Dq;         /* Dc rounded up to 32 */
    size_t kv_row;      /* bytes of a cache row: Dc floats, or Dq / 32 q8_0 blocks */
    unsigned char *kv;  /* (n_layers, n_ctx) rows */
    float *kvf;         /* q8: (ub, Dq) rows of a chunk before quantization */
    float *krow;        /* q8: (nthr, Dq) dequantized rows */
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
    int32_t *etok;      /* (ub, k) rows routed to each expert, expert after expert */
    float *ew;          /* (ub, k) their routing weights */
    float *eg, *eu;     /* (ub, S*I_e + k*I_e) gate and up outputs of all slots */
    unsigned char *eq;  /* quantized expert inputs (x rows, then g rows) */
    struct eslot *slots; /* (E + 1) */
    struct eitem *items; /* work items of one fused pass */
    float *att;         /* (nthr, HEAD_BLOCK, n_ctx) */
    struct ds_imatrix *im; /* borrowed; NULL: no collection */
    struct ds_calib *calib; /* borrowed; NULL: no pruning statistics (prune_impl.h) */
    ds_route_hook *route_hook; /* NULL: none (route_impl.h) */
    void *route_arg;
    /* MTP drafting (ds_ctx_enable_mtp): pair p = (token p, final normed hidden
     * state of p-1) is row p-1 of the MTP layer's cache; pairs 1..mpos are in it. */
    bool mtp;
    int64_t mpos;
    unsigned char *kv_mtp; /* (n_ctx) rows */
    float *hn;          /* (RING, d): final normed hidden state of position p at p % RING */
    int64_t *hn_at;     /* (RING) the position each hn row holds, -1: none */
    int32_t *tk;        /* (RING): token of position p at p % RING */
    int64_t *tk_at;     /* (RING) */
    float *cat;         /* (ub, 2d): [enorm(embedding) | hnorm(hidden)] */
};

void ds_ctx_free(struct ds_ctx *c)
{
    if (!c)
        return;
    float *bufs[] = {c->h,  c->x,  c->tmp, c->acc, c->xg,   c->yg,
                     c->qa, c->q,  c->qcat, c->lat, c->o, c->g,    c->u,
                     c->rs, c->rb, c->gs, c->selw, c->ew, c->att, c->hn,
                     c->cat, c->kvf, c->krow, c->eg, c->eu};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]);
    free(c->kv);
    free(c->kv_mtp);
    free(c->sel);
    free(c->etok);
    free(c->eq);
    free(c->slots);
    free(c->items);
    free(c->hn_at);
    free(c->tk_at);
    free(c->tk);
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

/* Bytes of a row of K activations quantized for any block type (the
 * largest of q8_0, q8_1 and q8_K, K rounded up to their blocks). */
static size_t qrow_max(int64_t K)
{
    const enum ds_type vt[] = {DS_TYPE_Q8_0, DS_TYPE_Q8_1, DS_TYPE_Q8_K};
    size_t mx = 0;
    for (size_t i = 0; i < sizeof(vt) / sizeof(vt[0]); i++) {
        int64_t bs = ds_type_block_size(vt[i]);
        size_t b = (size_t)((K + bs - 1) / bs) * ds_type_block_bytes(vt[i]);
        mx = b > mx ? b : mx;
    }
    return mx;
}

/* n_rows cache rows of c->kv_row bytes */
static ds_err alloc_rows(const struct ds_ctx *c, unsigned char **p, int64_t n_rows)
{
    uint64_t n;
    DS_RETURN_IF(ds_mul_u64((uint64_t)n_rows, c->kv_row, &n) || n > SIZE_MAX / 2, DS_ERR_LIMIT,
                 "context of %lld tokens is too large", (long long)c->n_ctx);
    *p = ds_malloc((size_t)(n ? n : 1));
    return *p ? DS_OK : DS_ERR_NOMEM;
}

ds_err ds_ctx_new(const struct ds_model *m, int64_t n_ctx, struct ds_ctx **out)
{
    return ds_ctx_new_ex(m, n_ctx, NULL, out);
}

ds_err ds_ctx_new_ex(const struct ds_model *m, int64_t n_ctx, const struct ds_ctx_params *params,
                     struct ds_ctx **out)
{
    struct ds_ctx *c;
    const struct ds_hparams *hp;
    int64_t d, H, R, ub, ffw, E, k;
    uint64_t kvn;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!out || !m, DS_ERR_ARG, "model or output missing");
    *out = NULL;
    DS_RETURN_IF(params && params->cache_type != DS_CACHE_F32 &&
                     params->cache_type != DS_CACHE_Q8_0,
                 DS_ERR_ARG, "unknown cache type %d", (int)params->cache_type);
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
    c->q8 = params && params->cache_type == DS_CACHE_Q8_0;
    c->Dq = (c->Dc + 31) / 32 * 32;
    c->kv_row = c->q8 ? ds_kernel_row_bytes(DS_TYPE_Q8_0, c->Dq) : (size_t)c->Dc * sizeof(float);
    E = hp->n_routed_experts;
    k = hp->n_experts_per_tok;
    ffw = hp->intermediate_size;
    if (hp->moe_intermediate_size > ffw)
        ffw = hp->moe_intermediate_size;
    if (hp->moe_intermediate_size * hp->n_shared_experts > ffw)
        ffw = hp->moe_intermediate_size * hp->n_shared_experts;
    DS_FAIL_IF(ds_mul_u64((uint64_t)hp->n_layers, (uint64_t)n_ctx, &kvn) || kvn > INT64_MAX / 2,
               DS_ERR_LIMIT, "context of %lld tokens is too large", (long long)n_ctx);
    DS_CHECK(alloc_rows(c, &c->kv, (int64_t)kvn));
    if (c->q8) {
        DS_CHECK(alloc_f(&c->kvf, ub, c->Dq));
        DS_CHECK(alloc_f(&c->krow, c->nthr, c->Dq));
    }
    DS_CHECK(alloc_f(&c->h, ub, d));
    DS_CHECK(alloc_f(&c->x, ub, d));
    DS_CHECK(alloc_f(&c->tmp, ub, d));
    DS_CHECK(alloc_f(&c->acc, ub, d));
    DS_CHECK(alloc_f(&c->xg, ub * (k > 0 ? k : 1), d)); // a row picks an expert at most once
    DS_CHECK(alloc_f(&c->yg, ub * (k > 0 ? k : 1), d));
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
    DS_CHECK(alloc_f(&c->ew, ub, k > 0 ? k : 1));
    if (E > 0) {
        int64_t Ie = hp->moe_intermediate_size, Is = hp->n_shared_experts * Ie;
        int64_t mi = Is > Ie ? Is : Ie, nrows = ub * (k + 1);
        int64_t per = 2 * ((mi + ROW_BLOCK_1 - 1) / ROW_BLOCK_1),
                down = (d + ROW_BLOCK_1 - 1) / ROW_BLOCK_1;
        DS_CHECK(alloc_f(&c->eg, ub, Is + k * Ie));
        DS_CHECK(alloc_f(&c->eu, ub, Is + k * Ie));
        c->eq = ds_malloc((size_t)nrows * (qrow_max(d) + qrow_max(mi)) + 1);
        c->slots = ds_malloc((size_t)(E + 1) * sizeof(*c->slots));
        c->items = ds_malloc((size_t)(E + 1) * (size_t)(per > down ? per : down) *
                             sizeof(*c->items));
        DS_FAIL_IF(!c->eq || !c->slots || !c->items, DS_ERR_NOMEM, "out of memory");
    }
    DS_CHECK(alloc_f(&c->att, (int64_t)c->nthr * HEAD_BLOCK, n_ctx));
    c->sel = ds_malloc((size_t)(ub * (k > 0 ? k : 1)) * sizeof(int32_t));
    c->etok = ds_malloc((size_t)ub * (size_t)(k > 0 ? k : 1) * sizeof(int32_t));
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
    return (uint64_t)(c->m->hp.n_layers + c->mtp) * (uint64_t)c->kv_row;
}

void ds_ctx_reset(struct ds_ctx *c)
{
    c->pos = 0;
    c->mpos = 0;
}

ds_err ds_ctx_truncate(struct ds_ctx *c, int64_t pos)
{
    DS_RETURN_IF(!c || pos < 0 || pos > c->pos, DS_ERR_ARG,
                 "cannot truncate the cache to %lld tokens (it holds %lld)", (long long)pos,
                 c ? (long long)c->pos : 0LL);
    c->pos = pos;
    if (c->mpos > pos) // a drafted pair for position pos may stay: ds_forward checks its token
        c->mpos = pos;
    return DS_OK;
}

int64_t ds_model_n_mtp(const struct ds_model *m)
{
    return m->n_mtp;
}

ds_err ds_ctx_enable_mtp(struct ds_ctx *c)
{
    const struct ds_model *m;
    int64_t d;
    DS_RETURN_IF(!c, DS_ERR_ARG, "no context");
    m = c->m;
    d = m->hp.hidden_size;
    DS_RETURN_IF(m->n_mtp < 1, DS_ERR_UNSUPPORTED, "'%s' has no MTP (nextn) layer", m->name);
    if (c->mtp)
        return DS_OK;
    DS_RETURN_IF(c->pos != 0, DS_ERR_STATE, "MTP drafting must be enabled on an empty cache");
    DS_TRY(alloc_rows(c, &c->kv_mtp, c->n_ctx));
    DS_TRY(alloc_f(&c->hn, RING, d));
    DS_TRY(alloc_f(&c->cat, c->ub, 2 * d));
    c->hn_at = ds_malloc(RING * sizeof(int64_t));
    c->tk_at = ds_malloc(RING * sizeof(int64_t));
    c->tk = ds_malloc(RING * sizeof(int32_t));
    if (!c->hn_at || !c->tk_at || !c->tk)
        return DS_ERR_NOMEM;
    for (int64_t i = 0; i < RING; i++)
        c->hn_at[i] = c->tk_at[i] = -1;
    c->mpos = 0;
    c->mtp = true;
    return DS_OK;
}

void ds_ctx_set_imatrix(struct ds_ctx *c, struct ds_imatrix *im)
{
    assert(!im || ds_imatrix_model(im) == c->m);
    c->im = im && ds_imatrix_model(im) == c->m ? im : NULL;
}

void ds_ctx_set_calib(struct ds_ctx *c, struct ds_calib *cal)
{
    c->calib = cal;
}

void ds_ctx_set_route_hook(struct ds_ctx *c, ds_route_hook *fn, void *arg)
{
    c->route_hook = fn;
    c->route_arg = arg;
}

bool ds_route_rec_hook(void *rec, int64_t layer, int64_t p0, int64_t T, const float *s,
                       int32_t *sel)
{
    struct ds_route_rec *r = rec;
    const size_t at = (size_t)((layer * r->n + p0) * r->k), len = (size_t)(T * r->k);
    (void)s;
    if (layer >= r->n_layers || p0 + T > r->n)
        return false;
    if (!r->force) {
        memcpy(r->sel + at, sel, len * sizeof(int32_t));
        return false;
    }
    memcpy(sel, r->force + at, len * sizeof(int32_t));
    return true;
}

/* Rows x (T, ldx) into the collector, if any: matrix mat of (layer, slot). */
static void record(struct ds_ctx *c, int64_t layer, enum ds_im_slot slot, int64_t mat,
                   const float *x, int64_t ldx, int64_t T)
{
    if (c->im && layer < c->m->hp.n_layers) // the MTP layer gets no data
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
    unsigned char *kvl = layer < hp->n_layers
                             ? c->kv + (size_t)layer * (size_t)c->n_ctx * c->kv_row
                             : c->kv_mtp;
    // this chunk's cache rows, in place, or to be quantized into it
    float *rows = c->q8 ? c->kvf : (float *)(kvl + (size_t)p0 * c->kv_row);
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
    if (c->q8) {
        for (int64_t t = 0; t < T; t++) {
            memcpy(c->krow, rows + t * Dc, (size_t)Dc * sizeof(float));
            memset(c->krow + Dc, 0, (size_t)(c->Dq - Dc) * sizeof(float));
            ds_quantize_vec(DS_TYPE_Q8_0, c->krow, kvl + (size_t)(p0 + t) * c->kv_row, c->Dq);
        }
    }

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
        if (c->q8)
            ds_mla_attend_q8(c->lat + (t * H + h0) * R, R, c->qcat + (t * H + h0) * Dc, Dc, nh,
                             kvl, c->kv_row, p0 + t + 1, Dc, R, m->softmax_scale, s,
                             c->krow + (size_t)thread_id() * c->Dq);
        else
            ds_mla_attend(c->lat + (t * H + h0) * R, R, c->qcat + (t * H + h0) * Dc, Dc, nh,
                          (const float *)kvl, Dc, p0 + t + 1, Dc, R, m->softmax_scale, s);
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

/* Routing weights w (k) of the experts idx (k) from the scores s (E):
 * w = s[idx], w /= sum(w) if norm_topk_prob, w *= scale. */
static void route_weights(const struct ds_hparams *hp, const float *s, const int32_t *idx, float *w)
{
    const int64_t k = hp->n_experts_per_tok;
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
    route_weights(hp, s, idx, w);
}

/* Items for rows of matrices w0..w0+nw-1 (N rows each) of every slot with
 * rows; returns their count. */
static int64_t make_items(struct ds_ctx *c, int64_t ns, int w0, int nw, bool down)
{
    int64_t n = 0;
    for (int64_t s = 0; s < ns; s++) {
        int64_t N = down ? c->m->hp.hidden_size : c->slots[s].I;
        int64_t rb = c->slots[s].cnt > 1 ? ROW_BLOCK : ROW_BLOCK_1;
        for (int w = w0; w < w0 + nw; w++)
            for (int64_t r = 0; r < N; r += rb)
                c->items[n++] =
                    (struct eitem){(int32_t)s, w, (int32_t)r, (int32_t)(N - r < rb ? N : r + rb)};
    }
    return n;
}

/* Runs items[0..n) in one parallel region (static split: each row is
 * computed by one thread, as ds_matmul_scaled computes it). */
static void run_items(struct ds_ctx *c, int64_t n, double work)
{
    const int64_t d = c->m->hp.hidden_size;
    (void)work;
    DS_OMP(omp parallel for schedule(static) if (work >= (1 << 15)))
    for (int64_t i = 0; i < n; i++) {
        const struct eitem *it = &c->items[i];
        const struct eslot *sl = &c->slots[it->s];
        const struct ds_weight *w = it->which == 0 ? sl->gate : it->which == 1 ? sl->up : sl->down;
        if (it->which < 2)
            ds_matmul_rows(it->which ? sl->u : sl->g, sl->I, sl->x, d, sl->qx,
                           ds_weight_mat(w, sl->mat), w->type, ds_weight_scale(w, sl->mat),
                           w->block, sl->cnt, it->n0, it->n1, d);
        else
            ds_matmul_rows(sl->y, d, sl->g, sl->I, sl->qg, ds_weight_mat(w, sl->mat), w->type,
                           ds_weight_scale(w, sl->mat), w->block, sl->cnt, it->n0, it->n1,
                           sl->I);
    }
}

/* x (T,d) of positions p0.. -> acc (T,d) = shared(x) + sum_j w_j expert_{idx_j}(x)
 * The shared experts and every routed expert that has rows run together:
 * one parallel pass for all gate and up products, one for all down
 * products, each activation row quantized once per product input. Routed
 * outputs are added in expert id order, so every row gets its contributions
 * in the same order whatever the batch. */
static void moe(struct ds_ctx *c, const struct ds_layer *L, int64_t l, int64_t T, int64_t p0)
{
    const struct ds_model *m = c->m;
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, E = hp->n_routed_experts, k = hp->n_experts_per_tok,
                  Ie = hp->moe_intermediate_size, G = hp->n_group;
    int64_t ns = 0, rows = 0, fo = 0, n;
    size_t qo = 0;
    double work = 0;

    record(c, l, DS_IM_GATE_INP, 0, c->x, d, T);
    wmatmul(c->rs, E, c->x, d, &L->gate_inp, 0, T, E, d);
    DS_OMP(omp parallel for schedule(static) if (T * E >= 4096))
    for (int64_t t = 0; t < T; t++)
        route(m, L, c->rs + t * E, c->rb + t * E, c->gs + t * G, c->sel + t * k, c->selw + t * k);
    if (c->route_hook && c->route_hook(c->route_arg, l, p0, T, c->rs, c->sel))
        for (int64_t t = 0; t < T; t++)
            route_weights(hp, c->rs + t * E, c->sel + t * k, c->selw + t * k);
    if (c->calib)
        ds_calib_route(c->calib, l, c->sel, c->selw, T);

    if (L->gate_sh.data) {
        int64_t Is = hp->n_shared_experts * Ie;
        c->slots[ns++] = (struct eslot){.gate = &L->gate_sh, .up = &L->up_sh,
                                        .down = &L->down_sh, .I = Is, .cnt = T, .x = c->x,
                                        .y = c->acc};
        record(c, l, DS_IM_GATE_SH, 0, c->x, d, T);
        record(c, l, DS_IM_UP_SH, 0, c->x, d, T);
    } else {
        memset(c->acc, 0, (size_t)(T * d) * sizeof(float));
    }
    for (int64_t e = 0; e < E; e++) {
        int64_t cnt = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < k; j++)
                if (c->sel[t * k + j] == e) {
                    c->etok[rows + cnt] = (int32_t)t;
                    c->ew[rows + cnt] = c->selw[t * k + j];
                    memcpy(c->xg + (rows + cnt) * d, c->x + t * d, (size_t)d * sizeof(float));
                    cnt++;
                }
        if (!cnt)
            continue;
        c->slots[ns++] = (struct eslot){.gate = &L->gate_exps, .up = &L->up_exps,
                                        .down = &L->down_exps, .mat = e, .I = Ie, .cnt = cnt,
                                        .x = c->xg + rows * d, .y = c->yg + rows * d,
                                        .tok = c->etok + rows, .w = c->ew + rows};
        record(c, l, DS_IM_GATE_EXPS, e, c->xg + rows * d, d, cnt);
        record(c, l, DS_IM_UP_EXPS, e, c->xg + rows * d, d, cnt);
        rows += cnt;
    }
    // gate and up
    for (int64_t s = 0; s < ns; s++) {
        struct eslot *sl = &c->slots[s];
        sl->g = c->eg + fo;
        sl->u = c->eu + fo;
        fo += sl->cnt * sl->I;
        sl->qx = c->eq + qo;
        ds_matmul_prepare(sl->qx, sl->x, d, sl->gate->type, sl->cnt, d);
        qo += (size_t)sl->cnt * ds_matmul_qx_row(sl->gate->type, d);
        work += 2.0 * (double)(sl->cnt * sl->I * d);
    }
    n = make_items(c, ns, 0, 2, false);
    run_items(c, n, work);
    // down
    for (int64_t s = 0; s < ns; s++) {
        struct eslot *sl = &c->slots[s];
        ds_silu_mul(sl->g, sl->u, sl->cnt * sl->I);
        record(c, l, s == 0 && L->gate_sh.data ? DS_IM_DOWN_SH : DS_IM_DOWN_EXPS, sl->mat, sl->g,
               sl->I, sl->cnt);
        sl->qg = c->eq + qo;
        ds_matmul_prepare(sl->qg, sl->g, sl->I, sl->down->type, sl->cnt, sl->I);
        qo += (size_t)sl->cnt * ds_matmul_qx_row(sl->down->type, sl->I);
    }
    n = make_items(c, ns, 2, 1, true);
    run_items(c, n, work / 2);
    for (int64_t s = 0; s < ns; s++) {
        const struct eslot *sl = &c->slots[s];
        if (sl->y == c->acc)
            continue;
        for (int64_t i = 0; i < sl->cnt; i++) {
            float *a = c->acc + (int64_t)sl->tok[i] * d;
            const float *yv = sl->y + i * d, wv = sl->w[i];
            for (int64_t j = 0; j < d; j++)
                a[j] += wv * yv[j];
        }
    }
}

/* Decoder layer l on the T rows of c->h at positions (cache rows) p0.. */
static void layer_forward(struct ds_ctx *c, const struct ds_layer *L, int64_t l, int64_t T,
                          int64_t p0)
{
    const struct ds_hparams *hp = &c->m->hp;
    const int64_t d = hp->hidden_size;

    attention(c, L, l, T, p0);
    ds_rmsnorm(c->x, d, c->h, d, L->ffn_norm, T, d, (float)hp->rms_norm_eps);
    if (L->moe) {
        moe(c, L, l, T, p0);
        for (int64_t i = 0; i < T * d; i++)
            c->h[i] += c->acc[i];
    } else {
        mlp(c, c->tmp, c->x, T, &L->ffn_gate, &L->ffn_up, &L->ffn_down, hp->intermediate_size,
            l, DS_IM_GATE, 0);
        for (int64_t i = 0; i < T * d; i++)
            c->h[i] += c->tmp[i];
    }
}

/* ---- MTP (nextn) module ------------------------------------------------------------ */

/* Whether pairs p1 .. p1+n-1 have their tokens and hidden states in the rings. */
static bool mtp_have(const struct ds_ctx *c, int64_t p1, int64_t n)
{
    for (int64_t p = p1; p < p1 + n; p++)
        if (p < 1 || c->tk_at[p % RING] != p || c->hn_at[(p - 1) % RING] != p - 1)
            return false;
    return true;
}

/* The MTP layer on pairs p1 .. p1+n-1 (n <= ub; mtp_have), into its cache rows
 * p1-1..; logits: NULL or (V) of the last pair (DeepSeek-V3 section 2.2, as
 * vLLM and SGLang run it):
 *   z = eh_proj [enorm(embed(t_p)); hnorm(hn_{p-1})];  z = block(z);
 *   logits = head RMSNorm(z; shared_head_norm). */
static void mtp_run(struct ds_ctx *c, int64_t p1, int64_t n, float *logits)
{
    const struct ds_model *m = c->m;
    const struct ds_hparams *hp = &m->hp;
    const struct ds_layer *L = &m->layers[hp->n_layers];
    const struct ds_weight *emb = L->nextn_embd.data ? &L->nextn_embd : &m->tok_embd;
    const struct ds_weight *head = L->shared_head_head.data ? &L->shared_head_head : &m->output;
    const int64_t d = hp->hidden_size;
    const float eps = (float)hp->rms_norm_eps;

    assert(n >= 1 && n <= c->ub && mtp_have(c, p1, n));
    for (int64_t i = 0; i < n; i++) {
        int64_t p = p1 + i;
        ds_row_to_f32_scaled(c->x + i * d, emb->data, emb->type, emb->scale, emb->block,
                             c->tk[p % RING], d);
        ds_rmsnorm(c->cat + i * 2 * d, 2 * d, c->x + i * d, d, L->enorm, 1, d, eps);
        ds_rmsnorm(c->cat + i * 2 * d + d, 2 * d, c->hn + ((p - 1) % RING) * d, d, L->hnorm, 1,
                   d, eps);
    }
    wmatmul(c->h, d, c->cat, 2 * d, &L->eh_proj, 0, n, d, 2 * d);
    layer_forward(c, L, hp->n_layers, n, p1 - 1);
    c->mpos = p1 + n - 1;
    if (logits) {
        ds_rmsnorm(c->x, d, c->h + (n - 1) * d, d, L->shared_head_norm, 1, d, eps);
        wmatmul(logits, m->n_vocab, c->x, d, head, 0, 1, m->n_vocab, d);
    }
}

ds_err ds_ctx_draft(struct ds_ctx *c, int32_t token, float *logits)
{
    int64_t p1;
    DS_RETURN_IF(!c || !logits, DS_ERR_ARG, "context or logits missing");
    DS_RETURN_IF(!c->mtp, DS_ERR_STATE, "MTP drafting is not enabled on this context");
    DS_RETURN_IF(token < 0 || token >= c->m->n_vocab, DS_ERR_ARG,
                 "token id %d is out of range (the vocabulary has %lld)", (int)token,
                 (long long)c->m->n_vocab);
    DS_RETURN_IF(c->pos < 1, DS_ERR_STATE, "MTP drafting needs at least one token in the cache");
    if (c->mpos >= c->pos) // an earlier draft at this position: redo it
        c->mpos = c->pos - 1;
    p1 = c->mpos + 1;
    DS_RETURN_IF(c->pos - p1 + 1 > c->ub || !mtp_have(c, p1, c->pos - p1), DS_ERR_STATE,
                 "the MTP cache lost track of the hidden states (truncated too far back)");
    c->tk[c->pos % RING] = token;
    c->tk_at[c->pos % RING] = c->pos;
    mtp_run(c, p1, c->pos - p1 + 1, logits);
    return DS_OK;
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
        if (c->calib)
            ds_calib_layer_in(c->calib, l, c->h, T);
        layer_forward(c, &m->layers[l], l, T, p0);
        if (c->calib)
            ds_calib_layer_out(c->calib, l, c->h, T);
    }
    if (c->im) { // every row, whatever logits are asked for
        ds_rmsnorm(c->x, d, c->h, d, m->output_norm, T, d, eps);
        record(c, DS_IM_OUTPUT, 0, 0, c->x, d, T);
    }
    if (c->mtp) {
        // a pair drafted for p0 with another token is stale
        if (p0 >= 1 && c->mpos >= p0 &&
            (c->tk_at[p0 % RING] != p0 || c->tk[p0 % RING] != tokens[0]))
            c->mpos = p0 - 1;
        for (int64_t t = 0; t < T; t++) {
            int64_t p = p0 + t;
            ds_rmsnorm(c->hn + (p % RING) * d, d, c->h + t * d, d, m->output_norm, 1, d, eps);
            c->hn_at[p % RING] = p;
            c->tk[p % RING] = tokens[t];
            c->tk_at[p % RING] = p;
        }
    }
    if (logits) {
        if (all) {
            ds_rmsnorm(c->x, d, c->h, d, m->output_norm, T, d, eps);
            wmatmul(logits, V, c->x, d, &m->output, 0, T, V, d);
        } else {
            ds_rmsnorm(c->x, d, c->h + (T - 1) * d, d, m->output_norm, 1, d, eps);
            wmatmul(logits, V, c->x, d, &m->output, 0, 1, V, d);
        }
    }
    // The MTP cache follows up to the pair of the last token but one; the
    // last pair and the next one are run by ds_ctx_draft, so that a rejected
    // draft costs no MTP work. (Pairs it cannot build are left to it to report.)
    if (c->mtp && p0 + T - 2 > c->mpos) {
        int64_t p1 = c->mpos + 1, n = p0 + T - 2 - c->mpos;
        if (n <= c->ub && mtp_have(c, p1, n))
            mtp_run(c, p1, n, NULL);
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
