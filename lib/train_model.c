/*
 * train_model.c - the trainable model: a float32 parameter arena named as a
 * deepseek2 GGUF, built from hyper-parameters (random init), loaded from or
 * carved out of a GGUF model, saved as GGUF.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_quant.h"
#include "ds_train.h"
#include "error_impl.h"
#include "kernels_impl.h"
#include "train_impl.h"

/* ---- random numbers ------------------------------------------------------------- */

/* A 64-bit finaliser (Stafford's variant 13 of MurmurHash3's fmix64). */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double ds_trng_uniform(uint64_t seed, uint64_t stream, uint64_t i)
{
    uint64_t z = mix64(mix64(seed ^ 0x9e3779b97f4a7c15ULL) + stream * 0xd1b54a32d192ed03ULL + i);
    return (double)(mix64(z) >> 11) * 0x1.0p-53;
}

/* Box-Muller on two uniforms of the (stream, 2i), (stream, 2i+1) counters. */
double ds_trng_normal(uint64_t seed, uint64_t stream, uint64_t i)
{
    double u1 = ds_trng_uniform(seed, stream, 2 * i), u2 = ds_trng_uniform(seed, stream, 2 * i + 1);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

/* ---- parameter table -------------------------------------------------------------- */

static ds_err add_param(struct ds_tmodel *m, const char *name, uint32_t nd, int64_t ne0,
                        int64_t ne1, int64_t ne2, bool trained)
{
    struct tparam *p;
    DS_TRY(ds_grow((void **)&m->p, &m->cap_p, m->np + 1, sizeof(*m->p)));
    p = &m->p[m->np++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->nd = nd;
    p->ne[0] = ne0;
    p->ne[1] = nd > 1 ? ne1 : 1;
    p->ne[2] = nd > 2 ? ne2 : 1;
    p->n = (size_t)(p->ne[0] * p->ne[1] * p->ne[2]);
    p->off = m->nw;
    p->decay = nd > 1;
    p->trained = trained;
    m->nw += p->n;
    return DS_OK;
}

static bool is_moe_layer(const struct ds_hparams *hp, int64_t l)
{
    return hp->n_routed_experts > 0 && l >= hp->first_k_dense_replace &&
           l % hp->moe_layer_freq == 0;
}

static bool has_bias(const struct ds_hparams *hp)
{
    return !strcmp(hp->topk_method, "noaux_tc");
}

static ds_err build_table(struct ds_tmodel *m)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, H = hp->n_heads, R = hp->kv_lora_rank,
                  rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim, dv = hp->v_head_dim,
                  dqk = nope + rope, V = m->V;
    char n[DS_GGUF_MAX_NAME];

    DS_TRY(add_param(m, "token_embd.weight", 2, d, V, 1, true));
    for (int64_t l = 0; l < hp->n_layers; l++) {
#define P(what, nd, a, b, c, tr)                                                             \
    do {                                                                                       \
        snprintf(n, sizeof(n), "blk.%lld.%s", (long long)l, what);                            \
        DS_TRY(add_param(m, n, nd, a, b, c, tr));                                              \
    } while (0)
        P("attn_norm.weight", 1, d, 1, 1, true);
        if (hp->q_lora_rank > 0) {
            P("attn_q_a.weight", 2, d, hp->q_lora_rank, 1, true);
            P("attn_q_a_norm.weight", 1, hp->q_lora_rank, 1, 1, true);
            P("attn_q_b.weight", 2, hp->q_lora_rank, H * dqk, 1, true);
        } else {
            P("attn_q.weight", 2, d, H * dqk, 1, true);
        }
        P("attn_kv_a_mqa.weight", 2, d, R + rope, 1, true);
        P("attn_kv_a_norm.weight", 1, R, 1, 1, true);
        P("attn_k_b.weight", 3, nope, R, H, true);
        P("attn_v_b.weight", 3, R, dv, H, true);
        P("attn_output.weight", 2, H * dv, d, 1, true);
        P("ffn_norm.weight", 1, d, 1, 1, true);
        if (!is_moe_layer(hp, l)) {
            int64_t I = hp->intermediate_size;
            P("ffn_gate.weight", 2, d, I, 1, true);
            P("ffn_up.weight", 2, d, I, 1, true);
            P("ffn_down.weight", 2, I, d, 1, true);
        } else {
            int64_t E = hp->n_routed_experts, Ie = hp->moe_intermediate_size,
                    Is = hp->n_shared_experts * Ie;
            P("ffn_gate_inp.weight", 2, d, E, 1, true);
            if (has_bias(hp))
                P("exp_probs_b.bias", 1, E, 1, 1, false);
            P("ffn_gate_exps.weight", 3, d, Ie, E, true);
            P("ffn_up_exps.weight", 3, d, Ie, E, true);
            P("ffn_down_exps.weight", 3, Ie, d, E, true);
            if (Is > 0) {
                P("ffn_gate_shexp.weight", 2, d, Is, 1, true);
                P("ffn_up_shexp.weight", 2, d, Is, 1, true);
                P("ffn_down_shexp.weight", 2, Is, d, 1, true);
            }
        }
#undef P
    }
    DS_TRY(add_param(m, "output_norm.weight", 1, d, 1, 1, true));
    if (!hp->tie_word_embeddings)
        DS_TRY(add_param(m, "output.weight", 2, d, V, 1, true));
    return DS_OK;
}

static const struct tparam *find_param(const struct ds_tmodel *m, const char *name)
{
    for (size_t i = 0; i < m->np; i++)
        if (!strcmp(m->p[i].name, name))
            return &m->p[i];
    return NULL;
}

static float *at(const struct ds_tmodel *m, float *base, const char *name)
{
    const struct tparam *p = find_param(m, name);
    return p ? base + p->off : NULL;
}

ds_err ds_tview_bind(const struct ds_tmodel *m, float *base, struct tview *v)
{
    const struct ds_hparams *hp = &m->hp;
    char n[DS_GGUF_MAX_NAME];

    memset(v, 0, sizeof(*v));
    v->L = ds_calloc((size_t)(hp->n_layers ? hp->n_layers : 1), sizeof(*v->L));
    if (!v->L)
        return DS_ERR_NOMEM;
    v->tok_embd = at(m, base, "token_embd.weight");
    v->output_norm = at(m, base, "output_norm.weight");
    v->output = hp->tie_word_embeddings ? v->tok_embd : at(m, base, "output.weight");
    for (int64_t l = 0; l < hp->n_layers; l++) {
        struct tlayer *L = &v->L[l];
#define B(field, what) (snprintf(n, sizeof(n), "blk.%lld.%s", (long long)l, what), L->field = at(m, base, n))
        B(attn_norm, "attn_norm.weight");
        B(q, "attn_q.weight");
        B(q_a, "attn_q_a.weight");
        B(q_a_norm, "attn_q_a_norm.weight");
        B(q_b, "attn_q_b.weight");
        B(kv_a, "attn_kv_a_mqa.weight");
        B(kv_a_norm, "attn_kv_a_norm.weight");
        B(k_b, "attn_k_b.weight");
        B(v_b, "attn_v_b.weight");
        B(wo, "attn_output.weight");
        B(ffn_norm, "ffn_norm.weight");
        B(ffn_gate, "ffn_gate.weight");
        B(ffn_up, "ffn_up.weight");
        B(ffn_down, "ffn_down.weight");
        B(gate_inp, "ffn_gate_inp.weight");
        B(exp_bias, "exp_probs_b.bias");
        B(gate_exps, "ffn_gate_exps.weight");
        B(up_exps, "ffn_up_exps.weight");
        B(down_exps, "ffn_down_exps.weight");
        B(gate_sh, "ffn_gate_shexp.weight");
        B(up_sh, "ffn_up_shexp.weight");
        B(down_sh, "ffn_down_shexp.weight");
#undef B
    }
    return DS_OK;
}

void ds_tview_release(struct tview *v)
{
    free(v->L);
    v->L = NULL;
}

/* ---- the inference shell -------------------------------------------------------------- */

static struct ds_weight fw(const float *p, int64_t ne0, int64_t ne1, int64_t ne2)
{
    return (struct ds_weight){.data = p, .type = DS_TYPE_F32, .ne = {ne0, ne1, ne2}};
}

static ds_err build_shell(struct ds_tmodel *m)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, H = hp->n_heads, R = hp->kv_lora_rank,
                  rope = hp->qk_rope_head_dim, nope = hp->qk_nope_head_dim, dv = hp->v_head_dim,
                  dqk = nope + rope, E = hp->n_routed_experts, Ie = hp->moe_intermediate_size,
                  Is = hp->n_shared_experts * Ie, I = hp->intermediate_size;
    struct ds_model *s = ds_calloc(1, sizeof(*s));
    if (!s)
        return DS_ERR_NOMEM;
    m->dm = s;
    s->name = ds_strdup("<training model>");
    s->layers = ds_calloc((size_t)(hp->n_layers ? hp->n_layers : 1), sizeof(*s->layers));
    if (!s->name || !s->layers)
        return DS_ERR_NOMEM;
    s->hp = *hp;
    s->n_vocab = m->V;
    s->fp8_block = DS_FP8_BLOCK;
    s->sigmoid = !strcmp(hp->scoring_func, "sigmoid");
    s->routing = !strcmp(hp->topk_method, "noaux_tc")               ? DS_ROUTE_NOAUX_TC
                 : !strcmp(hp->topk_method, "group_limited_greedy") ? DS_ROUTE_GROUP_MAX
                                                                     : DS_ROUTE_GREEDY;
    s->tok_embd = fw(m->wv.tok_embd, d, m->V, 1);
    s->output = fw(m->wv.output, d, m->V, 1);
    s->output_norm = m->wv.output_norm;
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const struct tlayer *t = &m->wv.L[l];
        struct ds_layer *L = &s->layers[l];
        L->attn_norm = t->attn_norm;
        if (t->q)
            L->q = fw(t->q, d, H * dqk, 1);
        if (t->q_a) {
            L->q_a = fw(t->q_a, d, hp->q_lora_rank, 1);
            L->q_a_norm = t->q_a_norm;
            L->q_b = fw(t->q_b, hp->q_lora_rank, H * dqk, 1);
        }
        L->kv_a = fw(t->kv_a, d, R + rope, 1);
        L->kv_a_norm = t->kv_a_norm;
        L->k_b = fw(t->k_b, nope, R, H);
        L->v_b = fw(t->v_b, R, dv, H);
        L->wo = fw(t->wo, H * dv, d, 1);
        L->ffn_norm = t->ffn_norm;
        L->moe = is_moe_layer(hp, l);
        if (!L->moe) {
            L->ffn_gate = fw(t->ffn_gate, d, I, 1);
            L->ffn_up = fw(t->ffn_up, d, I, 1);
            L->ffn_down = fw(t->ffn_down, I, d, 1);
        } else {
            L->gate_inp = fw(t->gate_inp, d, E, 1);
            L->exp_bias = t->exp_bias;
            L->gate_exps = fw(t->gate_exps, d, Ie, E);
            L->up_exps = fw(t->up_exps, d, Ie, E);
            L->down_exps = fw(t->down_exps, Ie, d, E);
            if (Is > 0) {
                L->gate_sh = fw(t->gate_sh, d, Is, 1);
                L->up_sh = fw(t->up_sh, d, Is, 1);
                L->down_sh = fw(t->down_sh, Is, d, 1);
            }
        }
    }
    return ds_model_setup_rope(s);
}

/* ---- construction ---------------------------------------------------------------- */

void ds_tmodel_free(struct ds_tmodel *m)
{
    if (!m)
        return;
    ds_model_free(m->dm);
    ds_tview_release(&m->wv);
    free(m->w);
    free(m->p);
    ds_meta_free(m->meta);
    free(m);
}

/* Checks the sizes training relies on (those ds_hf_config_parse checks, and
 * that the vocabulary fits). */
static ds_err check_hp(const struct ds_hparams *hp)
{
    DS_RETURN_IF(hp->hidden_size < 1 || hp->n_layers < 1 || hp->n_heads < 1 ||
                     hp->kv_lora_rank < 1 || hp->qk_rope_head_dim < 2 ||
                     hp->qk_rope_head_dim % 2 || hp->qk_nope_head_dim < 1 ||
                     hp->v_head_dim < 1 || hp->vocab_size < 1 || hp->moe_layer_freq < 1,
                 DS_ERR_ARG, "model sizes are not valid for training");
    DS_RETURN_IF(hp->n_routed_experts > 0 &&
                     (hp->n_experts_per_tok < 1 || hp->n_experts_per_tok > hp->n_routed_experts ||
                      hp->moe_intermediate_size < 1 || hp->n_group < 1 ||
                      hp->n_routed_experts % hp->n_group),
                 DS_ERR_ARG, "expert counts are not valid for training");
    return DS_OK;
}

/* A model with table, arena (zeroed), views and shell for hp; meta owned. */
static ds_err tmodel_new(const struct ds_hparams *hp, struct ds_meta *meta, struct ds_tmodel **out)
{
    struct ds_tmodel *m;
    ds_err rc = DS_OK;

    *out = NULL;
    if (!meta)
        return DS_ERR_NOMEM;
    m = ds_calloc(1, sizeof(*m));
    if (!m) {
        ds_meta_free(meta);
        return DS_ERR_NOMEM;
    }
    m->meta = meta;
    m->hp = *hp;
    m->V = hp->vocab_size;
    DS_CHECK(check_hp(hp));
    DS_CHECK(build_table(m));
    DS_FAIL_IF(m->nw > SIZE_MAX / sizeof(float) / 4, DS_ERR_LIMIT, "model too large");
    m->w = ds_calloc(m->nw ? m->nw : 1, sizeof(float));
    DS_FAIL_IF(!m->w, DS_ERR_NOMEM, "out of memory for %zu parameters", m->nw);
    DS_CHECK(ds_tview_bind(m, m->w, &m->wv));
    DS_CHECK(build_shell(m));
out:
    if (rc != DS_OK) {
        ds_tmodel_free(m);
        return rc;
    }
    *out = m;
    return DS_OK;
}

/* Metadata: tokenizer.* keys of vocab (may be NULL), then the model keys of hp. */
static ds_err model_meta(const struct ds_hparams *hp, const struct ds_meta *vocab,
                         const char *gname, struct ds_meta **out)
{
    struct ds_meta *m = vocab ? ds_meta_dup(vocab) : ds_meta_new();
    ds_err rc;
    *out = NULL;
    if (!m)
        return DS_ERR_NOMEM;
    for (size_t i = ds_meta_count(m); i-- > 0;) {
        const char *k = ds_meta_key(m, i);
        if (strncmp(k, "tokenizer.", 10)) {
            char key[256];
            snprintf(key, sizeof(key), "%s", k);
            ds_meta_remove(m, key);
        }
    }
    rc = ds_hf_hparams_to_meta(hp, gname, m);
    if (rc != DS_OK) {
        ds_meta_free(m);
        return rc;
    }
    *out = m;
    return DS_OK;
}

static int64_t vocab_tokens(const struct ds_meta *v)
{
    long i = v ? ds_meta_find(v, "tokenizer.ggml.tokens") : -1;
    enum ds_vtype el;
    uint64_t n;
    if (i < 0 || !ds_meta_arr(v, (size_t)i, &el, &n))
        return 0;
    return (int64_t)n;
}

static void init_random(struct ds_tmodel *m, uint64_t seed)
{
    const double std = 0.02, out_std = 0.02 / sqrt(2.0 * (double)m->hp.n_layers);
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        float *w = m->w + p->off;
        bool out_proj = strstr(p->name, "attn_output") || strstr(p->name, "ffn_down");
        if (p->nd == 1) {
            float v = strstr(p->name, "exp_probs_b") ? 0.0f : 1.0f;
            for (size_t j = 0; j < p->n; j++)
                w[j] = v;
            continue;
        }
        DS_OMP(omp parallel for schedule(static) if (p->n >= 65536))
        for (size_t j = 0; j < p->n; j++)
            w[j] = (float)((out_proj ? out_std : std) * ds_trng_normal(seed, i, j));
    }
}

ds_err ds_tmodel_init(const struct ds_hparams *hp, const struct ds_meta *vocab, uint64_t seed,
                      struct ds_tmodel **out)
{
    struct ds_meta *meta;
    int64_t nv = vocab_tokens(vocab);

    DS_RETURN_IF(!hp || !out, DS_ERR_ARG, "hyper-parameters or output missing");
    *out = NULL;
    DS_RETURN_IF(nv > hp->vocab_size, DS_ERR_ARG,
                 "vocab_size %lld is smaller than the tokenizer's %lld tokens",
                 (long long)hp->vocab_size, (long long)nv);
    DS_TRY(check_hp(hp));
    DS_TRY(model_meta(hp, vocab, "dskit-student", &meta));
    DS_TRY(tmodel_new(hp, meta, out));
    init_random(*out, seed);
    return DS_OK;
}

ds_err ds_tmodel_from_config(const char *config_path, const char *vocab_path, uint64_t seed,
                             struct ds_tmodel **out)
{
    char *json = NULL;
    size_t len;
    struct ds_hparams hp;
    struct ds_model *voc = NULL;
    ds_err rc = DS_OK;
    int64_t nv;

    DS_RETURN_IF(!config_path || !out, DS_ERR_ARG, "config or output missing");
    *out = NULL;
    DS_CHECK(ds_read_file(config_path, 1 << 20, &json, &len));
    DS_CHECK(ds_hf_config_parse(json, len, config_path, &hp));
    if (vocab_path) {
        DS_CHECK(ds_model_load(vocab_path, &voc));
        nv = vocab_tokens(ds_model_meta(voc));
        DS_FAIL_IF(nv <= 0, DS_ERR_FORMAT, "'%s': no tokenizer (tokenizer.ggml.tokens)",
                   vocab_path);
        if (hp.vocab_size < nv)
            hp.vocab_size = nv;
    }
    rc = ds_tmodel_init(&hp, voc ? ds_model_meta(voc) : NULL, seed, out);
    if (rc != DS_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", ds_errmsg());
        rc = ds_set_error(rc, "'%s': %s", config_path, msg);
    }
out:
    ds_model_free(voc);
    free(json);
    return rc;
}

/* ---- from a loaded model --------------------------------------------------------------- */

/* All matrices of w (ne[2] x (ne[1], ne[0])) as floats into dst. */
static ds_err copy_weight(float *dst, const struct ds_weight *w)
{
    if (!w->data)
        return ds_set_error(DS_ERR_STATE, "weight missing");
    for (int64_t e = 0; e < w->ne[2]; e++) {
        const void *mat = ds_weight_mat(w, e);
        const float *sc = ds_weight_scale(w, e);
        for (int64_t r = 0; r < w->ne[1]; r++) {
            float *row = dst + ((size_t)e * (size_t)w->ne[1] + (size_t)r) * (size_t)w->ne[0];
            if (ds_quant_supported(w->type))
                DS_TRY(ds_dequantize_row(w->type, (const unsigned char *)mat +
                                                      (size_t)r * ds_kernel_row_bytes(w->type, w->ne[0]),
                                         row, w->ne[0]));
            else
                ds_row_to_f32_scaled(row, mat, w->type, sc, w->block, r, w->ne[0]);
        }
    }
    return DS_OK;
}

static void copy_vec(float *dst, const float *src, int64_t n)
{
    if (dst && src)
        memcpy(dst, src, (size_t)n * sizeof(float));
}

/* The parameters of m from the loaded model src with the same hyper-parameters. */
static ds_err copy_from_model(struct ds_tmodel *m, const struct ds_model *src)
{
    const struct ds_hparams *hp = &m->hp;
    const int64_t d = hp->hidden_size, E = hp->n_routed_experts;
    DS_TRY(copy_weight(m->wv.tok_embd, &src->tok_embd));
    copy_vec(m->wv.output_norm, src->output_norm, d);
    if (!hp->tie_word_embeddings)
        DS_TRY(copy_weight(m->wv.output, &src->output));
    for (int64_t l = 0; l < hp->n_layers; l++) {
        struct tlayer *t = &m->wv.L[l];
        const struct ds_layer *L = &src->layers[l];
        copy_vec(t->attn_norm, L->attn_norm, d);
        if (t->q)
            DS_TRY(copy_weight(t->q, &L->q));
        if (t->q_a) {
            DS_TRY(copy_weight(t->q_a, &L->q_a));
            copy_vec(t->q_a_norm, L->q_a_norm, hp->q_lora_rank);
            DS_TRY(copy_weight(t->q_b, &L->q_b));
        }
        DS_TRY(copy_weight(t->kv_a, &L->kv_a));
        copy_vec(t->kv_a_norm, L->kv_a_norm, hp->kv_lora_rank);
        DS_TRY(copy_weight(t->k_b, &L->k_b));
        DS_TRY(copy_weight(t->v_b, &L->v_b));
        DS_TRY(copy_weight(t->wo, &L->wo));
        copy_vec(t->ffn_norm, L->ffn_norm, d);
        if (t->ffn_gate) {
            DS_TRY(copy_weight(t->ffn_gate, &L->ffn_gate));
            DS_TRY(copy_weight(t->ffn_up, &L->ffn_up));
            DS_TRY(copy_weight(t->ffn_down, &L->ffn_down));
        }
        if (t->gate_inp) {
            DS_TRY(copy_weight(t->gate_inp, &L->gate_inp));
            copy_vec(t->exp_bias, L->exp_bias, E);
            DS_TRY(copy_weight(t->gate_exps, &L->gate_exps));
            DS_TRY(copy_weight(t->up_exps, &L->up_exps));
            DS_TRY(copy_weight(t->down_exps, &L->down_exps));
        }
        if (t->gate_sh) {
            DS_TRY(copy_weight(t->gate_sh, &L->gate_sh));
            DS_TRY(copy_weight(t->up_sh, &L->up_sh));
            DS_TRY(copy_weight(t->down_sh, &L->down_sh));
        }
    }
    return DS_OK;
}

static ds_err from_model(const struct ds_model *src, struct ds_tmodel **out)
{
    struct ds_hparams hp = src->hp;
    struct ds_meta *meta = ds_meta_dup(src->g.meta);
    ds_err rc;

    *out = NULL;
    DS_RETURN_IF(src->vocab_only, DS_ERR_ARG, "'%s' holds a vocabulary only", src->name);
    hp.vocab_size = src->n_vocab;
    hp.n_nextn = 0;
    if (meta)
        ds_meta_remove(meta, "deepseek2.nextn_predict_layers");
    if (meta && ds_meta_find(meta, "deepseek2.block_count") >= 0)
        DS_TRY(ds_meta_set_u32(meta, "deepseek2.block_count", (uint32_t)hp.n_layers));
    DS_TRY(tmodel_new(&hp, meta, out));
    rc = copy_from_model(*out, src);
    if (rc != DS_OK) {
        ds_tmodel_free(*out);
        *out = NULL;
    }
    return rc;
}

ds_err ds_tmodel_load(const char *path, struct ds_tmodel **out)
{
    struct ds_model *src = NULL;
    ds_err rc;
    DS_RETURN_IF(!out, DS_ERR_ARG, "output missing");
    *out = NULL;
    DS_TRY(ds_model_load(path, &src));
    rc = from_model(src, out);
    ds_model_free(src);
    return rc;
}

/* ---- carving ------------------------------------------------------------------------ */

struct load_rank {
    double load;
    int32_t id;
};

static int cmp_rank(const void *a, const void *b)
{
    const struct load_rank *x = a, *y = b;
    if (x->load != y->load)
        return x->load > y->load ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Expert loads of full on calib tokens, in chunks of up to 256 tokens. */
static ds_err calib_loads(struct ds_tmodel *full, const int32_t *calib, size_t n, double *load)
{
    int64_t T = 256;
    struct tacts *a = NULL;
    if (!calib || n == 0)
        return DS_OK;
    if (T > full->hp.max_position_embeddings)
        T = full->hp.max_position_embeddings;
    if ((size_t)T > n)
        T = (int64_t)n;
    DS_TRY(ds_tacts_new(full, 1, T, &a));
    for (size_t i = 0; i + (size_t)T <= n; i += (size_t)T)
        ds_tpass_forward(full, a, calib + i, 1, T, load);
    ds_tacts_free(a);
    return DS_OK;
}

ds_err ds_tmodel_carve(const struct ds_model *teacher, const int64_t *layers, size_t n_layers,
                       int64_t keep_experts, const int32_t *calib, size_t n_calib,
                       struct ds_tmodel **out)
{
    struct ds_tmodel *full = NULL, *m = NULL;
    struct ds_hparams hp;
    int64_t *keep = NULL, nk, E, k_old;
    double *load = NULL;
    int32_t *sel = NULL; // (n_layers kept, K) kept expert ids per kept layer
    struct load_rank *rank = NULL;
    struct ds_meta *meta = NULL;
    ds_err rc = DS_OK;
    bool seen_moe = false;
    char gname[256];

    DS_RETURN_IF(!teacher || !out, DS_ERR_ARG, "teacher or output missing");
    *out = NULL;
    DS_CHECK(from_model(teacher, &full));
    hp = full->hp;
    E = hp.n_routed_experts;
    k_old = hp.n_experts_per_tok;
    nk = layers ? (int64_t)n_layers : hp.n_layers;
    DS_FAIL_IF(nk < 1, DS_ERR_ARG, "no layers to keep");
    keep = ds_malloc((size_t)nk * sizeof(*keep));
    DS_FAIL_IF(!keep, DS_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < nk; i++) {
        keep[i] = layers ? layers[i] : i;
        DS_FAIL_IF(keep[i] < 0 || keep[i] >= hp.n_layers, DS_ERR_ARG,
                   "layer %lld is out of range (the teacher has %lld)", (long long)keep[i],
                   (long long)hp.n_layers);
        for (int64_t j = 0; j < i; j++)
            DS_FAIL_IF(keep[j] == keep[i], DS_ERR_ARG, "layer %lld is listed twice",
                       (long long)keep[i]);
        bool moe = is_moe_layer(&full->hp, keep[i]);
        DS_FAIL_IF(seen_moe && !moe, DS_ERR_ARG,
                   "dense layer %lld follows a MoE layer; dense layers must come first",
                   (long long)keep[i]);
        seen_moe |= moe;
    }
    DS_FAIL_IF(keep_experts < 0 || (E > 0 && keep_experts > E) || (E == 0 && keep_experts > 0),
               DS_ERR_ARG, "cannot keep %lld experts (the teacher has %lld)",
               (long long)keep_experts, (long long)E);
    if (keep_experts == 0)
        keep_experts = E;

    // new hyper-parameters
    hp.n_layers = nk;
    hp.first_k_dense_replace = 0;
    while (hp.first_k_dense_replace < nk && !is_moe_layer(&full->hp, keep[hp.first_k_dense_replace]))
        hp.first_k_dense_replace++;
    hp.moe_layer_freq = 1;
    DS_FAIL_IF(full->hp.moe_layer_freq != 1 && seen_moe, DS_ERR_UNSUPPORTED,
               "carving a teacher with moe_layer_freq %lld is not supported",
               (long long)full->hp.moe_layer_freq);
    if (E > 0 && !seen_moe) {
        hp.n_routed_experts = 0;
        hp.first_k_dense_replace = nk;
    } else if (E > 0) {
        hp.n_routed_experts = keep_experts;
        if (hp.n_experts_per_tok > keep_experts)
            hp.n_experts_per_tok = keep_experts;
        if (keep_experts != E && (keep_experts % hp.n_group || hp.n_group == 1)) {
            hp.n_group = 1;
            hp.topk_group = 1;
        }
    }

    // expert choice per kept MoE layer
    if (E > 0 && seen_moe) {
        load = ds_calloc((size_t)(full->hp.n_layers * E), sizeof(double));
        sel = ds_malloc((size_t)(nk * keep_experts) * sizeof(int32_t));
        rank = ds_malloc((size_t)E * sizeof(*rank));
        DS_FAIL_IF(!load || !sel || !rank, DS_ERR_NOMEM, "out of memory");
        if (keep_experts < E)
            DS_CHECK(calib_loads(full, calib, n_calib, load));
        for (int64_t i = 0; i < nk; i++) {
            for (int64_t e = 0; e < E; e++)
                rank[e] = (struct load_rank){load[keep[i] * E + e], (int32_t)e};
            qsort(rank, (size_t)E, sizeof(*rank), cmp_rank);
            for (int64_t e = 0; e < keep_experts; e++)
                sel[i * keep_experts + e] = rank[e].id;
            qsort(sel + i * keep_experts, (size_t)keep_experts, sizeof(int32_t), cmp_i32);
        }
    }
    (void)k_old;

    {
        const char *tn = ds_meta_get_str(full->meta, "general.name", NULL);
        snprintf(gname, sizeof(gname), "%s-student", tn ? tn : "dskit");
    }
    meta = ds_meta_dup(full->meta);
    DS_FAIL_IF(!meta, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_hf_hparams_to_meta(&hp, gname, meta));
    DS_CHECK(tmodel_new(&hp, meta, &m));
    meta = NULL;

    // copy tensors: layer l of m is keep[l] of full; expert-stacked tensors
    // (outermost dimension E: router rows, exp_probs_b, *_exps) keep sel rows
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        char src_name[DS_GGUF_MAX_NAME];
        long long l;
        int off = 0;
        const struct tparam *q;
        if (sscanf(p->name, "blk.%lld.%n", &l, &off) == 1 && off > 0)
            snprintf(src_name, sizeof(src_name), "blk.%lld.%s", (long long)keep[l],
                     p->name + off);
        else
            snprintf(src_name, sizeof(src_name), "%s", p->name);
        q = find_param(full, src_name);
        DS_FAIL_IF(!q, DS_ERR_STATE, "teacher tensor '%s' missing", src_name);
        bool expert = E > 0 && q->ne[q->nd - 1] == E &&
                      (strstr(p->name, "_exps") || strstr(p->name, "gate_inp") ||
                       strstr(p->name, "exp_probs_b"));
        if (!expert) {
            memcpy(m->w + p->off, full->w + q->off, p->n * sizeof(float));
        } else {
            size_t slice = q->n / (size_t)E;
            for (int64_t e = 0; e < keep_experts; e++)
                memcpy(m->w + p->off + (size_t)e * slice,
                       full->w + q->off + (size_t)sel[l * keep_experts + e] * slice,
                       slice * sizeof(float));
        }
    }
    *out = m;
    m = NULL;
out:
    ds_tmodel_free(m);
    ds_meta_free(meta);
    ds_tmodel_free(full);
    free(keep);
    free(load);
    free(sel);
    free(rank);
    return rc;
}

/* ---- saving ----------------------------------------------------------------------- */

ds_err ds_tmodel_save(const struct ds_tmodel *m, const char *path, enum ds_type type,
                      unsigned flags)
{
    struct ds_gguf g = {0};
    struct ds_writer *w = NULL;
    void *buf = NULL;
    size_t maxn = 0;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!m, DS_ERR_ARG, "model missing");
    DS_RETURN_IF(type != DS_TYPE_F32 && type != DS_TYPE_F16 && type != DS_TYPE_BF16, DS_ERR_ARG,
                 "models are saved as f32, f16 or bf16, not %s", ds_type_name(type));
    DS_CHECK(ds_gguf_init(&g));
    ds_meta_free(g.meta);
    g.meta = ds_meta_dup(m->meta);
    DS_FAIL_IF(!g.meta, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_meta_set_u32(g.meta, "general.file_type",
                             type == DS_TYPE_F32 ? 0 : type == DS_TYPE_F16 ? 1 : 32));
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        DS_CHECK(ds_gguf_add_tensor(&g, p->name, p->nd == 1 ? DS_TYPE_F32 : type, p->nd, p->ne));
        if (p->n > maxn)
            maxn = p->n;
    }
    DS_CHECK(ds_gguf_layout(&g));
    buf = ds_malloc((maxn ? maxn : 1) * sizeof(float));
    DS_FAIL_IF(!buf, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_writer_open(&w, path, flags, 0, 0));
    DS_CHECK(ds_gguf_write_header(w, &g));
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        const float *src = m->w + p->off;
        if (p->nd == 1 || type == DS_TYPE_F32) {
            DS_CHECK(ds_gguf_write_tensor(w, &g, i, src));
            continue;
        }
        uint16_t *h = buf;
        for (size_t j = 0; j < p->n; j++)
            h[j] = type == DS_TYPE_F16 ? ds_f32_to_f16(src[j]) : ds_f32_to_bf16(src[j]);
        DS_CHECK(ds_gguf_write_tensor(w, &g, i, h));
    }
    DS_CHECK(ds_writer_commit(w));
out:
    ds_writer_free(w);
    free(buf);
    ds_gguf_release(&g);
    return rc;
}

/* ---- accessors ------------------------------------------------------------------------ */

const struct ds_hparams *ds_tmodel_hparams(const struct ds_tmodel *m)
{
    return &m->hp;
}

const struct ds_meta *ds_tmodel_meta(const struct ds_tmodel *m)
{
    return m->meta;
}

int64_t ds_tmodel_n_vocab(const struct ds_tmodel *m)
{
    return m->V;
}

int64_t ds_tmodel_n_params(const struct ds_tmodel *m)
{
    return (int64_t)m->nw;
}

float *ds_tmodel_tensor(struct ds_tmodel *m, const char *name, int64_t *n)
{
    const struct tparam *p = m && name ? find_param(m, name) : NULL;
    if (!p)
        return NULL;
    if (n)
        *n = (int64_t)p->n;
    return m->w + p->off;
}
