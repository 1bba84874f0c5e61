/*
 * ds_model.h - a DeepSeek-V2/V3 model loaded from GGUF, and its forward pass.
 *
 * ds_model_load() maps an uncompressed regular GGUF file (mmap; weights are
 * used in place) or reads any other input (a pipe, a .zst) into one arena.
 * Weights are bound by llama.cpp deepseek2 names (stacked experts, split
 * attn_k_b/attn_v_b); hyper-parameters come from the deepseek2.* keys and the
 * routing method from dskit.routing.method (or is inferred, see ds_hf.h).
 * Supported weight types here: F32, F16, BF16.
 *
 * The forward pass follows DeepSeek's official inference code (model.py):
 * RMSNorm; MLA with q LoRA or a plain q projection, absorbed: the cache holds
 * per token and layer only the normalised latent (kv_lora_rank) and the
 * rotated shared rope key (qk_rope_head_dim); interleaved-pair RoPE with YaRN
 * frequencies and the mscale softmax correction; dense FFN for the first
 * leading_dense_block_count layers; MoE with shared experts and the three
 * routing methods (noaux_tc: sigmoid + bias + top-2-sum group selection;
 * group_limited_greedy: softmax + group max; greedy: softmax top-k); weight
 * normalisation and routed scaling as configured. Activations and
 * accumulation in float32. The MTP layer (nextn) is loaded but not used for
 * the logits.
 */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_hf.h"
#include "ds_meta.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds_model;

/* Loads path (NULL or "-": stdin). Errors name the file: not GGUF, not
 * deepseek2 (DS_ERR_UNSUPPORTED "unsupported architecture 'llama'"), a
 * missing or misshapen tensor, an unsupported tensor type. A vocab-only GGUF
 * (no tensors) loads with vocab_only set, for tokenization. */
ds_err ds_model_load(const char *path, struct ds_model **out);
void ds_model_free(struct ds_model *m);

const struct ds_hparams *ds_model_hparams(const struct ds_model *m);
const struct ds_meta *ds_model_meta(const struct ds_model *m);
bool ds_model_vocab_only(const struct ds_model *m);
/* n_vocab of the output head (token_embd rows). */
int64_t ds_model_n_vocab(const struct ds_model *m);
/* Bytes of weights (tensor data) and whether they are memory-mapped. */
uint64_t ds_model_weight_bytes(const struct ds_model *m);
bool ds_model_mmapped(const struct ds_model *m);

/* ---- inference context: KV cache and scratch ------------------------------ */

struct ds_ctx;

/* A context for up to n_ctx tokens (n_ctx <= the model's context_length;
 * DS_ERR_ARG otherwise). Allocates the latent cache:
 * n_layers x n_ctx x (kv_lora_rank + qk_rope_head_dim) floats. */
ds_err ds_ctx_new(const struct ds_model *m, int64_t n_ctx, struct ds_ctx **out);
void ds_ctx_free(struct ds_ctx *c);

int64_t ds_ctx_n_ctx(const struct ds_ctx *c);
int64_t ds_ctx_pos(const struct ds_ctx *c);        /* tokens in the cache */
uint64_t ds_ctx_kv_bytes(const struct ds_ctx *c);  /* bytes of the cache */
uint64_t ds_ctx_kv_bytes_per_token(const struct ds_ctx *c);
void ds_ctx_reset(struct ds_ctx *c);               /* empties the cache */

/* Runs tokens[0..n) at positions pos .. pos+n-1 (a batched prefill when
 * n > 1, causal within the batch and over the cache), appending them to the
 * cache. logits: NULL, or n x n_vocab floats (all_logits) / n_vocab floats
 * (the last position only). Token ids out of range or pos + n > n_ctx:
 * DS_ERR_ARG and the cache is unchanged. Prefill of n tokens and n one-token
 * calls give the same logits (to float rounding). Uses OpenMP across rows,
 * heads and experts (ds_set_threads). */
ds_err ds_forward(struct ds_ctx *c, const int32_t *tokens, size_t n, float *logits,
                  bool all_logits);

#ifdef __cplusplus
}
#endif
#endif
