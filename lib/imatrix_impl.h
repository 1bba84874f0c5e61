/*
 * imatrix_impl.h - the forward pass's side of the importance-matrix collector
 * (internal to libds; imatrix.c implements it, forward.c calls it).
 *
 * A collector made by ds_imatrix_new() knows, per layer, which of its entries
 * belongs to each matrix product of the forward pass (a slot). forward.c hands
 * it the input rows of every product; rows of a stacked tensor (a routed
 * expert, an attention head of attn_k_b/attn_v_b) go to matrix `mat` of it.
 */
#ifndef DS_IMATRIX_IMPL_H
#define DS_IMATRIX_IMPL_H

#include <stdint.h>

#include "ds_model.h"

/* The matrix products of one layer. Each FFN's gate, up and down are
 * consecutive, so that mlp() can take the first of the three. */
enum ds_im_slot {
    DS_IM_Q,        /* attn_q (no q LoRA): x */
    DS_IM_Q_A,      /* attn_q_a: x */
    DS_IM_Q_B,      /* attn_q_b: the normed q latent */
    DS_IM_KV_A,     /* attn_kv_a_mqa: x */
    DS_IM_K_B,      /* attn_k_b, per head: q_nope of the head */
    DS_IM_V_B,      /* attn_v_b, per head: the attended latent of the head */
    DS_IM_WO,       /* attn_output: the heads' values */
    DS_IM_GATE_INP, /* the router: x */
    DS_IM_GATE,     /* dense FFN: x, x, the hidden activation */
    DS_IM_UP,
    DS_IM_DOWN,
    DS_IM_GATE_SH, /* shared experts */
    DS_IM_UP_SH,
    DS_IM_DOWN_SH,
    DS_IM_GATE_EXPS, /* routed experts, per expert over its tokens */
    DS_IM_UP_EXPS,
    DS_IM_DOWN_EXPS,
    DS_IM_N_SLOTS
};

/* Layer number that stands for the output head (output.weight, or
 * token_embd.weight when the embeddings are tied). */
#define DS_IM_OUTPUT (-1)

/* The model im was made for (NULL for a loaded one). */
const struct ds_model *ds_imatrix_model(const struct ds_imatrix *im);

/* Adds the squares of T rows x[t*ldx + 0 .. ne0) to matrix mat of the entry
 * of (layer, slot) and counts T tokens for it; a slot the model does not have
 * is ignored. Not thread-safe: call it outside parallel regions. */
void ds_imatrix_add(struct ds_imatrix *im, int64_t layer, enum ds_im_slot slot, int64_t mat,
                    const float *x, int64_t ldx, int64_t T);

#endif
