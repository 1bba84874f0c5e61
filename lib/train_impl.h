/*
 * train_impl.h - internals of training (train_model.c: the parameter store;
 * train_pass.c: forward with saved activations and backward; train.c: losses,
 * AdamW, data order, checkpoints).
 *
 * Ownership: struct ds_tmodel owns one float arena w holding every parameter
 * tensor back to back (table p[] gives names, shapes, offsets), its metadata,
 * and a ds_model "shell" whose weights point into w as F32, so that the
 * inference code (ds_forward, the router, the rotary frequencies) runs on the
 * very same numbers. Gradients use the same layout in an arena of the same
 * size; struct tview binds the per-layer pointers of either arena.
 */
#ifndef DS_TRAIN_IMPL_H
#define DS_TRAIN_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_gguf.h"
#include "ds_train.h"
#include "model_impl.h"

/* One parameter tensor: GGUF name, shape in ggml order, offset in floats. */
struct tparam {
    char name[DS_GGUF_MAX_NAME];
    uint32_t nd;
    int64_t ne[3];
    size_t off, n;
    bool decay;     /* weight decay applies (matrices) */
    bool trained;   /* receives gradients (not exp_probs_b) */
};

/* Per-layer pointers into one arena (weights or gradients); NULL when absent. */
struct tlayer {
    float *attn_norm, *q, *q_a, *q_a_norm, *q_b, *kv_a, *kv_a_norm, *k_b, *v_b, *wo;
    float *ffn_norm, *ffn_gate, *ffn_up, *ffn_down;
    float *gate_inp, *exp_bias, *gate_exps, *up_exps, *down_exps, *gate_sh, *up_sh, *down_sh;
};

struct tview {
    float *tok_embd, *output_norm, *output; /* output == tok_embd when tied */
    struct tlayer *L;                       /* n_layers */
};

struct ds_tmodel {
    struct ds_hparams hp;
    struct ds_meta *meta;   /* general.*, deepseek2.*, tokenizer.* */
    int64_t V;
    struct tparam *p;
    size_t np, cap_p;
    float *w;               /* arena */
    size_t nw;              /* floats */
    struct tview wv;        /* into w */
    struct ds_model *dm;    /* shell over w (hp, layers, freqs, routing) */
};

/* Binds v to the arena base (w or a gradient arena of nw floats). */
ds_err ds_tview_bind(const struct ds_tmodel *m, float *base, struct tview *v);
void ds_tview_release(struct tview *v);

/* Counter-based random numbers: uniform in [0,1) and standard normal from
 * (seed, stream, i); the same triple always gives the same value. */
double ds_trng_uniform(uint64_t seed, uint64_t stream, uint64_t i);
double ds_trng_normal(uint64_t seed, uint64_t stream, uint64_t i);

/* ---- the training pass (train_pass.c) ---------------------------------------- */

/* Activations of one forward pass over B sequences of T tokens, kept for the
 * backward pass, and the scratch of the backward pass. */
struct tacts;

ds_err ds_tacts_new(const struct ds_tmodel *m, int64_t B, int64_t T, struct tacts **out);
void ds_tacts_free(struct tacts *a);

/* Forward of tokens (B, T) at positions 0..T-1 -> logits (B*T, V), which the
 * caller owns (a->logits after the call). Expert loads (selections per expert)
 * of each MoE layer are added to load (n_layers x E, may be NULL). */
void ds_tpass_forward(const struct ds_tmodel *m, struct tacts *a, const int32_t *tokens,
                      int64_t B, int64_t T, double *load);
float *ds_tacts_logits(struct tacts *a);

/* Backward of the last forward from dlogits (B*T, V) into the gradient view g
 * (accumulated: +=). seq_aux > 0 adds seq_aux times the gradient of
 * ds_tpass_seq_aux(). */
void ds_tpass_backward(const struct ds_tmodel *m, struct tacts *a, const struct tview *g,
                       float *dlogits, double seq_aux);

/* Sequence-wise balance loss of the last forward: summed over MoE layers,
 * mean over sequences, of sum_i f_i P_i (DeepSeek-V3). */
double ds_tpass_seq_aux(const struct ds_tmodel *m, struct tacts *a);

/* A hash of the expert choices of the last forward (tests: finite
 * differences are only valid while the routing stays the same). */
uint64_t ds_tacts_route_hash(const struct ds_tmodel *m, const struct tacts *a);

/* The trainer's gradient arena (m->nw floats) and activations (tests). */
float *ds_trainer_grad(struct ds_trainer *tr);
struct tacts *ds_trainer_acts(struct ds_trainer *tr);

/* ---- helpers defined elsewhere (small wrappers, see model.c/forward.c/hf.c) ---- */

ds_err ds_hf_hparams_to_meta(const struct ds_hparams *hp, const char *gname, struct ds_meta *m);

#endif
