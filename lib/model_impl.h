/*
 * model_impl.h - the loaded model as the forward pass sees it (internal to
 * libds; shared by model.c, which binds the weights, and forward.c).
 *
 * Ownership: struct ds_model owns the GGUF header, the reader (whose mapping
 * holds the weights of an mmapped file) or the arena (one block holding the
 * whole data section of any other input), and the small float arrays in
 * owned[] (norm weights that are not F32 in the file, the router bias, k_b/v_b
 * built from a legacy attn_kv_b, F8 or not). Every pointer below borrows one of those.
 */
#ifndef DS_MODEL_IMPL_H
#define DS_MODEL_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_model.h"

/* A weight matrix, or a stack of ne[2] matrices, in place: ne in ggml order,
 * so each matrix is ne[1] rows of ne[0] elements of type (F32, F16, BF16, a
 * ggml block type, or F8_E4M3). An F8_E4M3 weight has its "<name>_scale_inv"
 * tiles: per matrix ceil(ne[1]/block) rows of ceil(ne[0]/block) floats,
 * W[i][j] = fp8(q[i][j]) * scale[i/block][j/block]. */
struct ds_weight {
    const void *data;   /* NULL when absent */
    enum ds_type type;
    int64_t ne[3];
    const float *scale; /* F8_E4M3 tile scales, NULL otherwise */
    int64_t block;      /* tile edge when scale != NULL */
};

/* Matrix e of a stack (a routed expert, an attention head). */
static inline const void *ds_weight_mat(const struct ds_weight *w, int64_t e)
{
    size_t row = (size_t)(w->ne[0] / ds_type_block_size(w->type)) * ds_type_block_bytes(w->type);
    return (const unsigned char *)w->data + (size_t)e * (size_t)w->ne[1] * row;
}

/* Tile scales of matrix e of a stack; NULL for an unscaled weight. */
static inline const float *ds_weight_scale(const struct ds_weight *w, int64_t e)
{
    if (!w->scale)
        return NULL;
    int64_t sr = (w->ne[1] + w->block - 1) / w->block, sc = (w->ne[0] + w->block - 1) / w->block;
    return w->scale + (size_t)e * (size_t)(sr * sc);
}

struct ds_layer {
    const float *attn_norm;                   /* (d) */
    struct ds_weight q;                       /* (H*(nope+rope), d) without q LoRA */
    struct ds_weight q_a;                     /* (r_q, d) */
    const float *q_a_norm;                    /* (r_q) */
    struct ds_weight q_b;                     /* (H*(nope+rope), r_q) */
    struct ds_weight kv_a;                    /* (r_kv + rope, d) */
    const float *kv_a_norm;                   /* (r_kv) */
    struct ds_weight k_b;                     /* H x (r_kv, nope) */
    struct ds_weight v_b;                     /* H x (v, r_kv) */
    struct ds_weight wo;                      /* (d, H*v) */
    const float *ffn_norm;                    /* (d) */
    bool moe;
    struct ds_weight ffn_gate, ffn_up;        /* dense: (I, d) */
    struct ds_weight ffn_down;                /* dense: (d, I) */
    struct ds_weight gate_inp;                /* router (E, d) */
    const float *exp_bias;                    /* (E) selection bias, NULL if absent */
    struct ds_weight gate_exps, up_exps;      /* E x (I_e, d) */
    struct ds_weight down_exps;               /* E x (d, I_e) */
    struct ds_weight gate_sh, up_sh;          /* (S*I_e, d), absent when S = 0 */
    struct ds_weight down_sh;                 /* (d, S*I_e) */
    /* MTP (nextn) layers only; loaded, not used for the logits */
    const float *enorm, *hnorm, *shared_head_norm;
    struct ds_weight eh_proj, shared_head_head, nextn_embd;
};

enum ds_routing { DS_ROUTE_GREEDY, DS_ROUTE_GROUP_MAX, DS_ROUTE_NOAUX_TC };

struct ds_model {
    char *name;                 /* for messages */
    struct ds_gguf g;
    struct ds_reader *r;        /* kept open: owns the mapping */
    void *arena;                /* data section of a non-mmapped input */
    bool mmapped, vocab_only;
    int64_t fp8_block;          /* dskit.fp8.block_size, 128 when absent */
    uint64_t weight_bytes;
    struct ds_hparams hp;
    int64_t n_vocab;
    struct ds_weight tok_embd;  /* (V, d) */
    struct ds_weight output;    /* (V, d) */
    const float *output_norm;   /* (d) */
    struct ds_layer *layers;    /* hp.n_layers + n_mtp */
    int64_t n_mtp;              /* MTP layers present in the file */
    double *freqs;              /* (rope/2) YaRN-corrected rotary frequencies */
    float softmax_scale;        /* (nope+rope)^-1/2 * mscale^2 */
    enum ds_routing routing;
    bool sigmoid;               /* scoring function */
    void **owned;
    size_t n_owned, cap_owned;
};

/* Rotary frequencies (m->freqs) and softmax scale of m->hp (model.c; also
 * used by training, lib/train_model.c, on a model built in memory). */
ds_err ds_model_setup_rope(struct ds_model *m);

/* The router of forward.c for one token: logits s (E) -> scores in place,
 * idx/w (k) the chosen experts and their weights; b (E), gs (n_group)
 * scratch. (Used by training, lib/train_pass.c.) */
void ds_model_route(const struct ds_model *m, const struct ds_layer *L, float *s, float *b,
                    float *gs, int32_t *idx, float *w);

#endif
