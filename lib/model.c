/*
 * model.c - loading a deepseek2 GGUF: header, hyper-parameters, weights bound
 * by llama.cpp's tensor names with their types and shapes checked against the
 * hyper-parameters; the rotary frequencies and the softmax scale.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_model.h"
#include "error_impl.h"
#include "kernels_impl.h"
#include "ds_quant.h"
#include "model_impl.h"

#define ARCH "deepseek2"

/* ---- ownership ------------------------------------------------------------------- */

static ds_err own(struct ds_model *m, void *p)
{
    DS_TRY(ds_grow((void **)&m->owned, &m->cap_owned, m->n_owned + 1, sizeof(void *)));
    m->owned[m->n_owned++] = p;
    return DS_OK;
}

static float *alloc_floats(struct ds_model *m, size_t n)
{
    float *p = ds_malloc((n ? n : 1) * sizeof(float));
    if (p && own(m, p) != DS_OK) {
        free(p);
        p = NULL;
    }
    return p;
}

void ds_model_free(struct ds_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->freqs);
    free(m->arena);
    ds_reader_free(m->r);
    ds_gguf_release(&m->g);
    free(m->name);
    free(m);
}

/* ---- tensor binding ------------------------------------------------------------ */

/* base of the data section (mapping or arena) */
struct binder {
    struct ds_model *m;
    const unsigned char *base;
};

static void fmt_shape(char *buf, size_t cap, const int64_t *ne, int n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "{");
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "}");
}

/* Looks tensor name up and checks its type and shape (exp, n_exp dims; the
 * others must be 1). *out is NULL when absent and not required. */
static ds_err lookup(struct binder *b, const char *name, const int64_t *exp, int n_exp,
                     bool required, const struct ds_tensor_info **out)
{
    struct ds_model *m = b->m;
    long i = ds_gguf_find(&m->g, name);
    const struct ds_tensor_info *t;
    size_t es;

    *out = NULL;
    if (i < 0) {
        DS_RETURN_IF(required, DS_ERR_NOT_FOUND, "'%s': tensor '%s' is missing", m->name, name);
        return DS_OK;
    }
    t = &m->g.tensors[i];
    es = ds_kernel_type_size(t->type);
    if (es == 0 && ds_quant_supported(t->type))
        es = 1; /* block types: byte rows */
    DS_RETURN_IF(es == 0, DS_ERR_UNSUPPORTED,
                 "'%s': tensor '%s' has type %s; the forward pass supports f32, f16, bf16, "
                 "f8_e4m3 and the ggml block types of ds-quantize",
                 m->name, name, ds_type_name(t->type));
    for (int d = 0; d < DS_MAX_DIMS; d++) {
        int64_t want = d < n_exp ? exp[d] : 1;
        if (t->ne[d] != want) {
            char got[96], need[96];
            fmt_shape(got, sizeof(got), t->ne, (int)(t->n_dims ? t->n_dims : 1));
            fmt_shape(need, sizeof(need), exp, n_exp);
            return ds_set_error(DS_ERR_FORMAT, "'%s': tensor '%s' has shape %s, expected %s",
                                m->name, name, got, need);
        }
    }
    DS_RETURN_IF(((uintptr_t)(b->base + t->offset)) % es, DS_ERR_FORMAT,
                 "'%s': tensor '%s' is not aligned to its element size", m->name, name);
    *out = t;
    return DS_OK;
}

static ds_err bind_w(struct binder *b, const char *name, int64_t ne0, int64_t ne1, int64_t ne2,
                     bool required, struct ds_weight *w)
{
    const int64_t exp[3] = {ne0, ne1, ne2};
    const struct ds_tensor_info *t;
    DS_TRY(lookup(b, name, exp, ne2 > 1 ? 3 : 2, required, &t));
    memset(w, 0, sizeof(*w));
    if (!t)
        return DS_OK;
    w->data = b->base + t->offset;
    w->type = t->type;
    w->ne[0] = ne0;
    w->ne[1] = ne1;
    w->ne[2] = ne2;
    if (t->type == DS_TYPE_F8_E4M3) {
        int64_t B = b->m->fp8_block;
        const int64_t sne[3] = {(ne0 + B - 1) / B, (ne1 + B - 1) / B, ne2};
        char sn[DS_GGUF_MAX_NAME + 48];
        const struct ds_tensor_info *s;
        snprintf(sn, sizeof(sn), "%s_scale_inv", name);
        DS_TRY(lookup(b, sn, sne, ne2 > 1 ? 3 : 2, true, &s));
        DS_RETURN_IF(s->type != DS_TYPE_F32, DS_ERR_FORMAT,
                     "'%s': tensor '%s' has type %s, expected f32", b->m->name, sn,
                     ds_type_name(s->type));
        w->scale = (const float *)(b->base + s->offset);
        w->block = B;
    }
    return DS_OK;
}

/* A vector of n floats: used in place when F32, converted otherwise. */
static ds_err bind_v(struct binder *b, const char *name, int64_t n, bool required,
                     const float **out)
{
    const struct ds_tensor_info *t;
    float *f;
    *out = NULL;
    DS_TRY(lookup(b, name, &n, 1, required, &t));
    if (!t)
        return DS_OK;
    if (t->type == DS_TYPE_F32) {
        *out = (const float *)(b->base + t->offset);
        return DS_OK;
    }
    f = alloc_floats(b->m, (size_t)n);
    if (!f)
        return DS_ERR_NOMEM;
    ds_row_to_f32(f, b->base + t->offset, t->type, 0, n);
    *out = f;
    return DS_OK;
}

static const char *tn(char *buf, size_t cap, int64_t layer, const char *what)
{
    snprintf(buf, cap, "blk.%lld.%s", (long long)layer, what);
    return buf;
}

static bool layer_is_moe(const struct ds_hparams *hp, int64_t l)
{
    return hp->n_routed_experts > 0 && l >= hp->first_k_dense_replace &&
           l % hp->moe_layer_freq == 0;
}

/* k_b (H, R, nope) and v_b (H, v, R) as F32 from a legacy attn_kv_b (H*(nope+v), R),
 * F8 rows dequantized with their tile scales. */
static ds_err split_kv_b(struct binder *b, const struct ds_weight *kvb, struct ds_layer *L)
{
    const struct ds_hparams *hp = &b->m->hp;
    int64_t H = hp->n_heads, R = hp->kv_lora_rank, nope = hp->qk_nope_head_dim,
            dv = hp->v_head_dim;
    float *row = alloc_floats(b->m, (size_t)R);
    float *kb = alloc_floats(b->m, (size_t)(H * R * nope));
    float *vb = alloc_floats(b->m, (size_t)(H * dv * R));
    if (!row || !kb || !vb)
        return DS_ERR_NOMEM;
    for (int64_t h = 0; h < H; h++) {
        for (int64_t d = 0; d < nope + dv; d++) {
            ds_row_to_f32_scaled(row, kvb->data, kvb->type, kvb->scale, kvb->block,
                                 h * (nope + dv) + d, R);
            for (int64_t c = 0; c < R; c++) {
                if (d < nope)
                    kb[(h * R + c) * nope + d] = row[c];
                else
                    vb[(h * dv + d - nope) * R + c] = row[c];
            }
        }
    }
    L->k_b = (struct ds_weight){.data = kb, .type = DS_TYPE_F32, .ne = {nope, R, H}};
    L->v_b = (struct ds_weight){.data = vb, .type = DS_TYPE_F32, .ne = {R, dv, H}};
    return DS_OK;
}

static ds_err bind_layer(struct binder *b, int64_t l, bool mtp)
{
    const struct ds_hparams *hp = &b->m->hp;
    struct ds_layer *L = &b->m->layers[l];
    int64_t d = hp->hidden_size, H = hp->n_heads, R = hp->kv_lora_rank,
            rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim, dv = hp->v_head_dim,
            dqk = nope + rope;
    char n[DS_GGUF_MAX_NAME + 32];
    struct ds_weight kvb;

    DS_TRY(bind_v(b, tn(n, sizeof(n), l, "attn_norm.weight"), d, true, &L->attn_norm));
    if (hp->q_lora_rank > 0) {
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_q_a.weight"), d, hp->q_lora_rank, 1, true,
                      &L->q_a));
        DS_TRY(bind_v(b, tn(n, sizeof(n), l, "attn_q_a_norm.weight"), hp->q_lora_rank, true,
                      &L->q_a_norm));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_q_b.weight"), hp->q_lora_rank, H * dqk, 1,
                      true, &L->q_b));
    } else {
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_q.weight"), d, H * dqk, 1, true, &L->q));
    }
    DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_kv_a_mqa.weight"), d, R + rope, 1, true,
                  &L->kv_a));
    DS_TRY(bind_v(b, tn(n, sizeof(n), l, "attn_kv_a_norm.weight"), R, true, &L->kv_a_norm));
    DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_kv_b.weight"), R, H * (nope + dv), 1, false,
                  &kvb));
    if (kvb.data && ds_gguf_find(&b->m->g, tn(n, sizeof(n), l, "attn_k_b.weight")) < 0) {
        DS_TRY(split_kv_b(b, &kvb, L));
    } else {
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_k_b.weight"), nope, R, H, true, &L->k_b));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_v_b.weight"), R, dv, H, true, &L->v_b));
    }
    DS_TRY(bind_w(b, tn(n, sizeof(n), l, "attn_output.weight"), H * dv, d, 1, true, &L->wo));
    DS_TRY(bind_v(b, tn(n, sizeof(n), l, "ffn_norm.weight"), d, true, &L->ffn_norm));

    L->moe = layer_is_moe(hp, l);
    if (!L->moe) {
        int64_t I = hp->intermediate_size;
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_gate.weight"), d, I, 1, true, &L->ffn_gate));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_up.weight"), d, I, 1, true, &L->ffn_up));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_down.weight"), I, d, 1, true, &L->ffn_down));
    } else {
        int64_t E = hp->n_routed_experts, Ie = hp->moe_intermediate_size,
                Is = hp->n_shared_experts * Ie;
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_gate_inp.weight"), d, E, 1, true,
                      &L->gate_inp));
        DS_TRY(bind_v(b, tn(n, sizeof(n), l, "exp_probs_b.bias"), E, false, &L->exp_bias));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_gate_exps.weight"), d, Ie, E, true,
                      &L->gate_exps));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_up_exps.weight"), d, Ie, E, true,
                      &L->up_exps));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_down_exps.weight"), Ie, d, E, true,
                      &L->down_exps));
        if (Is > 0) {
            DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_gate_shexp.weight"), d, Is, 1, true,
                          &L->gate_sh));
            DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_up_shexp.weight"), d, Is, 1, true,
                          &L->up_sh));
            DS_TRY(bind_w(b, tn(n, sizeof(n), l, "ffn_down_shexp.weight"), Is, d, 1, true,
                          &L->down_sh));
        }
    }
    if (mtp) {
        DS_TRY(bind_v(b, tn(n, sizeof(n), l, "nextn.enorm.weight"), d, true, &L->enorm));
        DS_TRY(bind_v(b, tn(n, sizeof(n), l, "nextn.hnorm.weight"), d, true, &L->hnorm));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "nextn.eh_proj.weight"), 2 * d, d, 1, true,
                      &L->eh_proj));
        DS_TRY(bind_v(b, tn(n, sizeof(n), l, "nextn.shared_head_norm.weight"), d, true,
                      &L->shared_head_norm));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "nextn.shared_head_head.weight"), d,
                      b->m->n_vocab, 1, false, &L->shared_head_head));
        DS_TRY(bind_w(b, tn(n, sizeof(n), l, "nextn.embed_tokens.weight"), d, b->m->n_vocab,
                      1, false, &L->nextn_embd));
    }
    return DS_OK;
}

static ds_err bind_all(struct ds_model *m, const unsigned char *base)
{
    struct binder b = {m, base};
    const struct ds_hparams *hp = &m->hp;
    int64_t d = hp->hidden_size;
    char n[DS_GGUF_MAX_NAME + 32];

    m->n_vocab = hp->vocab_size;
    if (!ds_meta_get_int(m->g.meta, "dskit.fp8.block_size", &m->fp8_block))
        m->fp8_block = DS_FP8_BLOCK;
    DS_RETURN_IF(m->fp8_block <= 0 || m->fp8_block > 65536, DS_ERR_FORMAT,
                 "'%s': dskit.fp8.block_size %lld is out of range", m->name,
                 (long long)m->fp8_block);
    DS_TRY(bind_w(&b, "token_embd.weight", d, m->n_vocab, 1, true, &m->tok_embd));
    DS_TRY(bind_v(&b, "output_norm.weight", d, true, &m->output_norm));
    DS_TRY(bind_w(&b, "output.weight", d, m->n_vocab, 1, !hp->tie_word_embeddings, &m->output));
    if (!m->output.data)
        m->output = m->tok_embd;

    m->layers = ds_calloc((size_t)(hp->n_layers + hp->n_nextn), sizeof(*m->layers));
    if (!m->layers)
        return DS_ERR_NOMEM;
    for (int64_t l = 0; l < hp->n_layers; l++)
        DS_TRY(bind_layer(&b, l, false));
    // MTP layers are optional (llama.cpp's converter drops them); when one is
    // there it must be complete.
    for (int64_t l = hp->n_layers; l < hp->n_layers + hp->n_nextn; l++) {
        if (ds_gguf_find(&m->g, tn(n, sizeof(n), l, "attn_norm.weight")) < 0)
            break;
        DS_TRY(bind_layer(&b, l, true));
        m->n_mtp++;
    }
    return DS_OK;
}

/* ---- rope and attention scale ------------------------------------------------ */

/* DeepSeek model.py precompute_freqs_cis: base^(-2i/dim); with YaRN the
 * frequencies between the correction dims of beta_fast and beta_slow blend
 * linearly from unchanged to divided by the factor. */
static ds_err rope_setup(struct ds_model *m)
{
    const struct ds_hparams *hp = &m->hp;
    int64_t dim = hp->qk_rope_head_dim, half = dim / 2;
    double base = hp->rope_theta;
    double scale = 1.0 / sqrt((double)(hp->qk_nope_head_dim + hp->qk_rope_head_dim));

    m->freqs = ds_malloc((size_t)half * sizeof(double));
    if (!m->freqs)
        return DS_ERR_NOMEM;
    for (int64_t i = 0; i < half; i++)
        m->freqs[i] = 1.0 / pow(base, (double)(2 * i) / (double)dim);
    if (hp->has_yarn) {
        double L0 = (double)hp->yarn_original_max_pos, f = hp->yarn_factor;
        double lo, hi;
        DS_RETURN_IF(!(hp->yarn_beta_fast > 0) || !(hp->yarn_beta_slow > 0), DS_ERR_FORMAT,
                     "'%s': yarn beta_fast and beta_slow must be positive", m->name);
        lo = floor(dim * log(L0 / (hp->yarn_beta_fast * 2 * M_PI)) / (2 * log(base)));
        hi = ceil(dim * log(L0 / (hp->yarn_beta_slow * 2 * M_PI)) / (2 * log(base)));
        lo = lo > 0 ? lo : 0;
        hi = hi < (double)(dim - 1) ? hi : (double)(dim - 1);
        if (lo == hi)
            hi += 0.001;
        for (int64_t i = 0; i < half; i++) {
            double ramp = ((double)i - lo) / (hi - lo);
            double smooth = 1.0 - (ramp < 0 ? 0 : ramp > 1 ? 1 : ramp);
            m->freqs[i] = m->freqs[i] / f * (1 - smooth) + m->freqs[i] * smooth;
        }
        if (f > 1) {
            double ms = 0.1 * hp->yarn_mscale_all_dim * log(f) + 1.0;
            scale *= ms * ms;
        }
    }
    m->softmax_scale = (float)scale;
    return DS_OK;
}

/* ---- loading ------------------------------------------------------------------ */

/* Re-raises the current error with the file name in front. */
static ds_err with_name(ds_err e, const char *name)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", ds_errmsg());
    return ds_set_error(e, "'%s': %s", name, msg);
}

static ds_err vocab_only_hparams(struct ds_model *m)
{
    const char *arch = ds_meta_get_str(m->g.meta, "general.architecture", NULL);
    long i;
    if (arch && !strcmp(arch, ARCH) && ds_hparams_from_meta(m->g.meta, &m->hp) == DS_OK) {
        m->n_vocab = m->hp.vocab_size;
        return DS_OK;
    }
    ds_clear_error();
    memset(&m->hp, 0, sizeof(m->hp));
    m->hp.bos_token_id = m->hp.eos_token_id = -1;
    if ((i = ds_meta_find(m->g.meta, "tokenizer.ggml.tokens")) >= 0) {
        enum ds_vtype el;
        uint64_t nt;
        if (ds_meta_arr(m->g.meta, (size_t)i, &el, &nt) && nt < INT32_MAX)
            m->hp.vocab_size = (int64_t)nt;
    }
    m->n_vocab = m->hp.vocab_size;
    return DS_OK;
}

static ds_err load_data(struct ds_model *m, const unsigned char **base)
{
    struct ds_gguf *g = &m->g;
    size_t *order = NULL;
    ds_err rc = DS_OK;

    for (size_t i = 0; i < g->n_tensors; i++)
        m->weight_bytes += g->tensors[i].nbytes;
    if (ds_reader_is_file(m->r)) {
        const void *addr;
        size_t len;
        DS_TRY(ds_reader_mmap(m->r, &addr, &len));
        DS_RETURN_IF(g->data_offset > len || g->data_size > len - g->data_offset,
                     DS_ERR_TRUNCATED, "'%s': data section past the end of the file", m->name);
        *base = (const unsigned char *)addr + g->data_offset;
        m->mmapped = true;
        return DS_OK;
    }
    DS_RETURN_IF(g->data_size > SIZE_MAX - 64, DS_ERR_LIMIT, "'%s': data section too large",
                 m->name);
    if (posix_memalign(&m->arena, 64, g->data_size ? (size_t)g->data_size : 1))
        return ds_set_error(DS_ERR_NOMEM, "'%s': cannot allocate %llu bytes of weights", m->name,
                            (unsigned long long)g->data_size);
    order = ds_malloc((g->n_tensors ? g->n_tensors : 1) * sizeof(*order));
    DS_FAIL_IF(!order, DS_ERR_NOMEM, "out of memory");
    ds_gguf_data_order(g, order);
    for (size_t k = 0; k < g->n_tensors; k++) {
        size_t i = order[k];
        DS_CHECK(ds_gguf_read_tensor(m->r, g, i, (unsigned char *)m->arena + g->tensors[i].offset));
    }
    *base = m->arena;
out:
    free(order);
    return rc;
}

ds_err ds_model_load(const char *path, struct ds_model **out)
{
    struct ds_model *m = NULL;
    const unsigned char *base = NULL;
    const char *arch;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!out, DS_ERR_ARG, "no output model");
    *out = NULL;
    m = ds_calloc(1, sizeof(*m));
    if (!m)
        return DS_ERR_NOMEM;
    DS_CHECK(ds_gguf_init(&m->g));
    DS_CHECK(ds_reader_open(&m->r, path));
    m->name = ds_strdup(ds_reader_name(m->r));
    DS_FAIL_IF(!m->name, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_gguf_read(m->r, &m->g));

    if (m->g.n_tensors == 0) {
        // vocabulary only, of any architecture: for tokenization
        m->vocab_only = true;
        DS_CHECK(vocab_only_hparams(m));
        goto out;
    }
    arch = ds_meta_get_str(m->g.meta, "general.architecture", NULL);
    DS_FAIL_IF(!arch, DS_ERR_FORMAT, "'%s': metadata key 'general.architecture' is missing",
               m->name);
    DS_FAIL_IF(strcmp(arch, ARCH), DS_ERR_UNSUPPORTED, "'%s': unsupported architecture '%s'",
               m->name, arch);
    rc = ds_hparams_from_meta(m->g.meta, &m->hp);
    if (rc != DS_OK) {
        rc = with_name(rc, m->name);
        goto out;
    }
    m->sigmoid = !strcmp(m->hp.scoring_func, "sigmoid");
    m->routing = !strcmp(m->hp.topk_method, "noaux_tc")               ? DS_ROUTE_NOAUX_TC
                 : !strcmp(m->hp.topk_method, "group_limited_greedy") ? DS_ROUTE_GROUP_MAX
                                                                       : DS_ROUTE_GREEDY;
    DS_CHECK(load_data(m, &base));
    DS_CHECK(bind_all(m, base));
    DS_CHECK(rope_setup(m));
out:
    if (rc != DS_OK) {
        ds_model_free(m);
        return rc;
    }
    *out = m;
    return DS_OK;
}

/* ---- accessors ---------------------------------------------------------------- */

const struct ds_hparams *ds_model_hparams(const struct ds_model *m)
{
    return &m->hp;
}

const struct ds_meta *ds_model_meta(const struct ds_model *m)
{
    return m->g.meta;
}

bool ds_model_vocab_only(const struct ds_model *m)
{
    return m->vocab_only;
}

int64_t ds_model_n_vocab(const struct ds_model *m)
{
    return m->n_vocab;
}

uint64_t ds_model_weight_bytes(const struct ds_model *m)
{
    return m->weight_bytes;
}

bool ds_model_mmapped(const struct ds_model *m)
{
    return m->mmapped;
}

ds_err ds_model_setup_rope(struct ds_model *m)
{
    return rope_setup(m);
}
