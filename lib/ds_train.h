/*
 * ds_train.h - float32 training of DeepSeek-V2/V3 models (MLA + DeepSeekMoE):
 * a trainable parameter store, forward with saved activations and backward,
 * losses (cross-entropy, distillation KL), AdamW, expert load balancing,
 * checkpoints that resume exactly.
 *
 * Model (struct ds_tmodel): hyper-parameters (struct ds_hparams), metadata
 * (deepseek2.* keys and the tokenizer.* keys it was built with) and every
 * weight as float32, named as in a deepseek2 GGUF (token_embd.weight,
 * blk.N.attn_q_a.weight, blk.N.attn_k_b.weight H x (R, nope), ...,
 * blk.N.exp_probs_b.bias, output.weight). The training forward pass computes
 * what ds_forward (ds_model.h) computes on the same weights: RMSNorm; MLA with
 * q LoRA or plain q, latent kv (kv_a_mqa, kv_a_norm, k_b/v_b), interleaved
 * RoPE with YaRN frequencies, the mscale softmax scale; dense SwiGLU FFN; MoE
 * with shared and routed experts and the three routing methods; final norm,
 * output head (tied to token_embd when tie_word_embeddings).
 *
 * Gradients: all weights except exp_probs_b. Top-k expert selection is piecewise
 * constant: the gradient flows through the selected experts' scores (softmax
 * or sigmoid of the router logits), their normalisation (norm_topk_prob) and
 * routed_scaling_factor, not through the choice. exp_probs_b is updated by
 * DeepSeek-V3's auxiliary-loss-free rule instead (ds_train_opts.balance_gamma).
 *
 * Determinism: for a given seed, options and thread count (ds_set_threads),
 * losses and weights are identical run to run: every reduction has a fixed
 * order, no floating-point atomics; the order does not depend on the thread
 * count either (the tests compare 1 and 2 threads bit for bit).
 *
 * Typical use (ds-distill):
 *
 *   ds_tmodel_from_config("config.json", vocab_meta, seed, &m);    // or _carve, _load
 *   ds_train_opts_default(&o); o.ctx = 128; ...
 *   ds_trainer_new(m, &o, &tr);
 *   ds_trainer_set_data(tr, tokens, n_tokens);        // tokenized corpus, borrowed
 *   while (ds_trainer_step_count(tr) < o.steps) {
 *       for (a = 0; a < o.accum; a++) {
 *           ds_trainer_next_windows(tr, o.batch, win); // window ids of this micro-batch
 *           fill struct ds_batch b (tokens of those windows; teacher logits, if any)
 *           ds_trainer_accumulate(tr, &b, &loss);
 *       }
 *       ds_trainer_update(tr, &stats);                // clip, AdamW, bias update
 *   }
 *   ds_checkpoint_save(tr, "ckpt"); ds_tmodel_save(m, "student.gguf", DS_TYPE_F32, 0);
 *
 * Data windows: the corpus of n tokens is cut into W = (n - 1) / ctx windows;
 * window i is tokens [i*ctx, i*ctx + ctx] (ctx + 1 tokens: ctx inputs, each
 * followed by its target). Windows are visited in a pseudo-random order, a
 * fresh permutation per epoch drawn from the seed; the position in that order
 * is part of the checkpoint. A teacher cache can therefore key on the window
 * id (its logits depend only on the window's tokens).
 */
#ifndef DS_TRAIN_H
#define DS_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_hf.h"
#include "ds_meta.h"
#include "ds_model.h"
#include "ds_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- trainable model -------------------------------------------------------------- */

struct ds_tmodel;

/* A freshly initialised model for hp (checked as ds_hf_config_parse checks a
 * config). vocab: tokenizer.* metadata (e.g. ds_model_meta() of a vocab
 * GGUF), copied; may be NULL. hp->vocab_size must be at least the
 * tokenizer's vocabulary (DS_ERR_ARG otherwise). Initialisation, from seed:
 * matrices normal(0, 0.02) (output projections attn_output and ffn_down* scaled
 * by 1/sqrt(2 n_layers)), norm weights 1, exp_probs_b 0. */
ds_err ds_tmodel_init(const struct ds_hparams *hp, const struct ds_meta *vocab, uint64_t seed,
                      struct ds_tmodel **out);

/* As ds_tmodel_init from a Hugging Face config.json file (errors name the
 * file) and the tokenizer of a GGUF file vocab_path (a vocab-only GGUF or any
 * model; errors name it). vocab_size is raised to the tokenizer's when the
 * config's is smaller. */
ds_err ds_tmodel_from_config(const char *config_path, const char *vocab_path, uint64_t seed,
                             struct ds_tmodel **out);

/* Carves a student from a loaded teacher (any weight type ds_model_load reads;
 * dequantized to float32):
 *   layers[0..n_layers): the teacher layers to keep, in order (NULL: all);
 *     each keeps its kind (dense or MoE); first_k_dense_replace becomes the
 *     number of leading kept dense layers (DS_ERR_ARG when a dense layer
 *     follows a MoE one, or an index repeats or is out of range);
 *   keep_experts: routed experts to keep per MoE layer (0: all). The kept
 *     experts are the keep_experts most used ones on the teacher's own
 *     routing of calib[0..n_calib) tokens (ties and calib == NULL: the
 *     lowest ids), kept in id order, with their router rows and exp_probs_b
 *     entries; n_routed_experts becomes keep_experts, n_experts_per_tok
 *     min(k, keep_experts), n_group 1 when keep_experts is not a multiple of
 *     the groups (group routing off). Metadata and tokenizer are the
 *     teacher's, with the deepseek2.* counts adjusted. MTP layers are
 *     dropped. */
ds_err ds_tmodel_carve(const struct ds_model *teacher, const int64_t *layers, size_t n_layers,
                       int64_t keep_experts, const int32_t *calib, size_t n_calib,
                       struct ds_tmodel **out);

/* Loads a deepseek2 GGUF (any type ds_model_load reads) as float32
 * parameters: a saved student, or a teacher to fine-tune. */
ds_err ds_tmodel_load(const char *path, struct ds_tmodel **out);

/* Writes the model as a deepseek2 GGUF that ds_model_load and ds-run load:
 * metadata + tokenizer, matrices as type (DS_TYPE_F32, F16 or BF16; norms
 * and exp_probs_b stay F32), atomically (ds_writer_open with flags, e.g.
 * DS_WRITE_FORCE; ".zst" compresses). */
ds_err ds_tmodel_save(const struct ds_tmodel *m, const char *path, enum ds_type type,
                      unsigned flags);

void ds_tmodel_free(struct ds_tmodel *m); /* accepts NULL */

const struct ds_hparams *ds_tmodel_hparams(const struct ds_tmodel *m);
/* Metadata the model is saved with (general.*, deepseek2.*, tokenizer.*). */
const struct ds_meta *ds_tmodel_meta(const struct ds_tmodel *m);
int64_t ds_tmodel_n_vocab(const struct ds_tmodel *m);
/* Number of float parameters (exp_probs_b included). */
int64_t ds_tmodel_n_params(const struct ds_tmodel *m);
/* The parameters of tensor name (GGUF name), n set to its element count;
 * NULL when absent. Writable: for tests and custom initialisation. */
float *ds_tmodel_tensor(struct ds_tmodel *m, const char *name, int64_t *n);

/* Inference with the training forward pass: tokens[0..n) from position 0 ->
 * logits (n, n_vocab). For checks against ds_forward. */
ds_err ds_tmodel_logits(struct ds_tmodel *m, const int32_t *tokens, size_t n, float *logits);

/* ---- options -------------------------------------------------------------------- */

enum ds_kl_dir {
    DS_KL_FORWARD, /* KL(teacher || student): sum p_t (log p_t - log p_s) */
    DS_KL_REVERSE  /* KL(student || teacher): sum p_s (log p_s - log p_t) */
};

struct ds_train_opts {
    int64_t steps;        /* optimizer steps of the schedule (cosine length) */
    int64_t batch;        /* windows per micro-batch */
    int64_t ctx;          /* tokens per window (sequence length) */
    int64_t accum;        /* micro-batches per optimizer step */
    double lr, min_lr;    /* peak and final learning rate */
    int64_t warmup;       /* linear warmup steps (from lr/warmup to lr) */
    double weight_decay;  /* AdamW decoupled decay (matrices only: not norms, biases) */
    double beta1, beta2, adam_eps;
    double clip;          /* global gradient L2 norm clip; 0: none */
    /* distillation (used when a batch carries teacher logits) */
    double temperature;   /* T: both distributions softened by T; KD term times T^2 */
    double alpha;         /* loss = alpha * KD + (1 - alpha) * CE */
    enum ds_kl_dir kl;
    /* expert load balance */
    double balance_gamma; /* bias update speed (V3: 0.001); 0: off. Needs exp_probs_b */
    double seq_aux;       /* sequence-wise balance loss weight (V3: 0.0001); 0: off */
    uint64_t seed;        /* data order (and init, for ds_tmodel_init callers) */
};

/* Defaults: steps 1000, batch 8, ctx 128, accum 1, lr 1e-3, min_lr 1e-4,
 * warmup 100, weight_decay 0.1, beta1 0.9, beta2 0.95, adam_eps 1e-8, clip 1,
 * temperature 2, alpha 0.5, forward KL, balance_gamma 0.001, seq_aux 0,
 * seed 1. */
void ds_train_opts_default(struct ds_train_opts *o);

/* Checks ranges; DS_ERR_ARG naming the option ("ctx", "lr", ...). */
ds_err ds_train_opts_check(const struct ds_train_opts *o);

/* Learning rate at step s (0-based): linear warmup lr*(s+1)/warmup for s <
 * warmup, then cosine from lr to min_lr over the remaining steps, min_lr
 * after. */
double ds_train_lr(const struct ds_train_opts *o, int64_t step);

/* ---- batches and losses --------------------------------------------------------- */

/* A micro-batch: n_seq sequences of n_tok input tokens. tokens holds
 * n_seq x (n_tok + 1) ids: each sequence's inputs followed by one more
 * token; the target of input j is token j + 1. Every sequence starts at
 * position 0. Teacher logits (optional; KD term when present):
 *   full: teacher_logits (n_seq, n_tok, n_vocab) raw logits, or
 *   top-k: teacher_topk = k, teacher_ids and teacher_vals (n_seq, n_tok, k),
 *     the k largest raw logits and their ids. The teacher distribution at
 *     temperature T is then the softmax over those k ids only (renormalised
 *     over the top-k; the other ids get probability 0). Forward KL sums over
 *     the k ids; reverse KL is computed over the same k ids with the student
 *     also renormalised over them.
 * tokens and teacher ids must be < the model's vocabulary. */
struct ds_batch {
    int64_t n_seq, n_tok;
    const int32_t *tokens;
    const float *teacher_logits;
    int64_t teacher_topk;
    const int32_t *teacher_ids;
    const float *teacher_vals;
};

/* Losses of a micro-batch, or accumulated over a step, mean per target token. */
struct ds_loss {
    double loss;     /* what is minimised: alpha*kd + (1-alpha)*ce (+ seq_aux * aux) */
    double ce;       /* cross-entropy of the targets (nats/token) */
    double kd;       /* distillation term, T^2 * KL (0 without teacher) */
    double aux;      /* sequence-wise balance loss (0 when off) */
    int64_t n_tok;   /* target tokens */
};

/* Top-k of a logits row (V) -> ids, vals (k), largest first, ties to the
 * lower id: what ds_batch.teacher_ids/_vals hold. */
void ds_logits_topk(const float *logits, int64_t V, int64_t k, int32_t *ids, float *vals);

/* ---- trainer ------------------------------------------------------------------- */

struct ds_trainer;

/* A trainer for m (borrowed; it must outlive the trainer) with options o
 * (copied, checked). Allocates gradients, AdamW moments and activation
 * buffers for batch x ctx tokens. */
ds_err ds_trainer_new(struct ds_tmodel *m, const struct ds_train_opts *o,
                      struct ds_trainer **out);
void ds_trainer_free(struct ds_trainer *tr); /* accepts NULL */

const struct ds_train_opts *ds_trainer_opts(const struct ds_trainer *tr);
/* Lets a resumed run change the schedule length (steps) only. */
void ds_trainer_set_steps(struct ds_trainer *tr, int64_t steps);

/* Training corpus (borrowed; must outlive the trainer's use of it). At least
 * ctx + 1 tokens (DS_ERR_ARG). Does not reset the data position (a resumed
 * run keeps its place: give the same corpus). */
ds_err ds_trainer_set_data(struct ds_trainer *tr, const int32_t *tokens, size_t n);
int64_t ds_trainer_n_windows(const struct ds_trainer *tr);

/* The next n window ids (see the top of this file), advancing the data
 * position; tokens, when not NULL, gets their n x (ctx + 1) tokens, ready
 * for ds_batch.tokens. */
ds_err ds_trainer_next_windows(struct ds_trainer *tr, int64_t n, int64_t *win, int32_t *tokens);

/* Forward and backward of one micro-batch (n_seq <= batch, n_tok <= ctx):
 * adds its gradient (of the loss mean over the step's tokens: each
 * micro-batch is weighted by 1/accum) to the step's accumulator; loss
 * (may be NULL) gets the micro-batch's losses. Collects expert loads for the
 * bias update. */
ds_err ds_trainer_accumulate(struct ds_trainer *tr, const struct ds_batch *b,
                             struct ds_loss *loss);

struct ds_step_stats {
    int64_t step;          /* steps done, this one included */
    double lr;             /* learning rate used */
    double grad_norm;      /* global L2 norm before clipping */
    struct ds_loss loss;   /* over the step's micro-batches */
};

/* Ends a step: global norm clipping, AdamW with the scheduled lr, the
 * exp_probs_b update (balance_gamma: b_e += gamma * sign(mean load - load_e)
 * per MoE layer, over the step's tokens), gradients zeroed. DS_ERR_STATE
 * without an accumulate since the last update. A non-finite loss or
 * gradient: DS_ERR_FORMAT ("training diverged") and the weights unchanged. */
ds_err ds_trainer_update(struct ds_trainer *tr, struct ds_step_stats *st);

/* Optimizer steps done. */
int64_t ds_trainer_step_count(const struct ds_trainer *tr);

/* Loss of a batch without training (no gradients, no load statistics). */
ds_err ds_trainer_eval(struct ds_trainer *tr, const struct ds_batch *b, struct ds_loss *loss);

/* ---- checkpoints ------------------------------------------------------------------ */

/* Writes the directory dir atomically (ds_outdir; replaces an existing one):
 *   dir/model.gguf      the model, F32 (ds_tmodel_save; ds-run loads it)
 *   dir/optimizer.gguf  AdamW moments (one F32 tensor per parameter tensor,
 *                       "adam_m.NAME", "adam_v.NAME"), the step, the data
 *                       position, the options (train.* keys)
 * Call between steps (after ds_trainer_update). */
ds_err ds_checkpoint_save(const struct ds_trainer *tr, const char *dir);

/* Reads a checkpoint written by ds_checkpoint_save: *m the model, *tr a
 * trainer on it with the saved options, step, moments and data position;
 * after ds_trainer_set_data with the same corpus, training continues
 * exactly as it would have without the interruption (same thread count).
 * Errors name the file. */
ds_err ds_checkpoint_load(const char *dir, struct ds_tmodel **m, struct ds_trainer **tr);

#ifdef __cplusplus
}
#endif
#endif
