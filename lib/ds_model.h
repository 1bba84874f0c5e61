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
 * accumulation in float32. The first MTP layer (nextn), when the file has one,
 * drafts tokens for speculative decoding (ds_ctx_draft); it never changes the
 * logits of ds_forward.
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

/* How the latent cache stores its rows. DS_CACHE_Q8_0: each row
 * (kv_lora_rank + qk_rope_head_dim values, zero-padded to a multiple of 32)
 * as ggml q8_0 blocks (32 int8 and one f16 scale: 34 bytes per 32 values,
 * 3.8x smaller than f32), quantized when the row is written and dequantized
 * as attention reads it. Its cost on the tiny reference checkpoints is in
 * bench/README.md. */
enum ds_cache_type { DS_CACHE_F32 = 0, DS_CACHE_Q8_0 = 1 };

struct ds_ctx_params {
    enum ds_cache_type cache_type;
};

/* As ds_ctx_new with params (NULL: defaults, all fields zero). */
ds_err ds_ctx_new_ex(const struct ds_model *m, int64_t n_ctx, const struct ds_ctx_params *params,
                     struct ds_ctx **out);
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

/* Forgets the tokens from position pos on (0 <= pos <= ds_ctx_pos; DS_ERR_ARG
 * otherwise): the next ds_forward runs at position pos. Used to drop a
 * rejected draft; the MTP cache (if any) follows. */
ds_err ds_ctx_truncate(struct ds_ctx *c, int64_t pos);

/* ---- MTP speculative decoding --------------------------------------------------- */

/*
 * DeepSeek-V3's multi-token prediction module (the nextn layer, kept by
 * ds-convert as blk.N.nextn.* beside a full decoder layer blk.N) predicts the
 * token after next. As vLLM and SGLang run it: for the pair (token t_p, final
 * hidden state of position p-1 after output_norm, hn_{p-1}),
 *   z = eh_proj [enorm(embed(t_p)); hnorm(hn_{p-1})]
 *   z = decoder layer N (MLA with its own latent cache, MoE)
 *   draft logits = head(RMSNorm(z; shared_head_norm))
 * with nextn.embed_tokens / nextn.shared_head_head when present, the main
 * token_embd / output otherwise. The MTP cache follows ds_forward, so drafting
 * after a forward costs one layer and the head:
 *
 *   ds_ctx_enable_mtp(c);                  // on an empty cache
 *   ds_forward(c, prompt, n, logits, false);
 *   next = pick(logits);
 *   loop:
 *     ds_ctx_draft(c, next, dlogits);  d = argmax(dlogits);
 *     ds_forward(c, (int32_t[]){next, d}, 2, logits2, true);
 *     t = pick(logits2[0]);
 *     if (t == d) { emit next, d; next = pick(logits2[1]); }
 *     else { ds_ctx_truncate(c, ds_ctx_pos(c) - 1); emit next; next = t; }
 *
 * The emitted tokens are those of plain decoding with the same picks (the
 * verified logits are computed exactly as one-token calls compute them).
 */

/* MTP layers in the model file (0: no drafting). */
int64_t ds_model_n_mtp(const struct ds_model *m);

/* Turns on MTP drafting for c: allocates the MTP layer's latent cache (as one
 * more layer of the cache: ds_ctx_kv_bytes grows) and a small ring of hidden
 * states. DS_ERR_UNSUPPORTED without an MTP layer, DS_ERR_STATE on a cache
 * that holds tokens. */
ds_err ds_ctx_enable_mtp(struct ds_ctx *c);

/* Draft logits (n_vocab floats) for the token after `token`, the token that
 * comes at position ds_ctx_pos(c) (the one the last forward's logits chose).
 * The cache of the main layers is unchanged; the MTP cache gets the pair of
 * token and is reused when the next ds_forward starts with the same token.
 * DS_ERR_STATE: drafting not enabled, an empty cache, or the hidden states
 * needed were lost (after truncating more than 64 tokens back). */
ds_err ds_ctx_draft(struct ds_ctx *c, int32_t token, float *logits);

/* ---- importance matrix ----------------------------------------------------- */

/*
 * Importance-matrix collection for quantization, as llama.cpp's llama-imatrix:
 * for every weight matrix the forward pass multiplies by, the sum over tokens
 * of the squared input of each column (in_sum2, ne0 values) and the number of
 * tokens seen. Stacked tensors keep one matrix per slice: the routed experts
 * (ffn_*_exps, each over only the tokens routed to it) and the attention heads
 * of attn_k_b (input: the head's q_nope) and attn_v_b (input: the head's
 * attended latent). Recorded: attn_q or attn_q_a/attn_q_b, attn_kv_a_mqa,
 * attn_k_b, attn_v_b, attn_output, ffn_gate_inp, ffn_gate/up/down,
 * ffn_*_shexp, ffn_*_exps and output.weight (token_embd.weight when the
 * embeddings are tied), whose input is every token's final normed hidden state
 * whatever logits ds_forward is asked for. The MTP (nextn) layers do not run
 * and get no data. Sums are kept in double precision.
 *
 *   ds_imatrix_new(m, &im);
 *   ds_ctx_set_imatrix(c, im);
 *   for each chunk of calibration text: ds_ctx_reset(c); ds_forward(c, ...);
 *   ds_imatrix_save(im, "imatrix.gguf", "calibration.txt", n_chunks, chunk_size);
 *
 * File format (llama.cpp's GGUF imatrix, tools/imatrix; llama-quantize reads
 * it): GGUF v3 with the keys general.type = "imatrix", imatrix.datasets
 * (array of strings: the datasets of a loaded file, then the new one),
 * imatrix.chunk_count and imatrix.chunk_size (uint32); and for each matrix
 * NAME that has data, by name in byte order, two F32 tensors:
 * "NAME.in_sum2" {ne0, n_mat} (the sums of squares, n_mat = 1, the number of
 * experts, or of heads) and "NAME.counts" {1, n_mat} (tokens seen per matrix).
 * Other tensors (llama.cpp's optional NAME.in_sum) are ignored on loading.
 */
struct ds_imatrix;

/* An empty collector for the weight matrices of m, which must outlive it.
 * Free with ds_imatrix_free(). */
ds_err ds_imatrix_new(const struct ds_model *m, struct ds_imatrix **out);
void ds_imatrix_free(struct ds_imatrix *im); /* accepts NULL */

/* While set, ds_forward on c adds the inputs of every matrix product to im
 * (NULL: stop). im must come from ds_imatrix_new() on c's model, and be set on
 * one context at a time. When none is set the forward pass does no extra work. */
void ds_ctx_set_imatrix(struct ds_ctx *c, struct ds_imatrix *im);

/* While set, ds_forward on c also gathers the router and block statistics
 * of ds_prune.h's struct ds_calib (made by ds_calib_new() on c's model; NULL:
 * stop). */
struct ds_calib;
void ds_ctx_set_calib(struct ds_ctx *c, struct ds_calib *cal);

/* Writes im to path (NULL or "-": stdout) in the format above, atomically
 * (ds_writer_open; an existing file is replaced, ".zst" compresses).
 * dataset (may be NULL) is appended to imatrix.datasets; chunk_count and
 * chunk_size (in [0, 2^32)) are stored as they are. DS_ERR_STATE when no
 * matrix has data yet. */
ds_err ds_imatrix_save(const struct ds_imatrix *im, const char *path, const char *dataset,
                       int64_t chunk_count, int64_t chunk_size);

/* Reads a file written by ds_imatrix_save() or llama-imatrix (GGUF format;
 * zstd too); a single count for a stacked tensor (older files) applies to
 * each matrix. A loaded collector is for ds_imatrix_get() and saving, not for
 * ds_ctx_set_imatrix(). DS_ERR_FORMAT names the problem: another
 * general.type, a sum without counts, shapes that disagree, non-F32 data,
 * negative or non-finite values. */
ds_err ds_imatrix_load(const char *path, struct ds_imatrix **out);

/* The mean squared input of each column of tensor name (its GGUF name, e.g.
 * "blk.1.ffn_down_exps.weight"): n = ne0 x n_mat values, matrix after matrix,
 * each in_sum2 / count in float (as llama-quantize computes them). A matrix
 * that saw no tokens (an expert never routed to) gets 1.0 for every column,
 * so that it quantizes as without an imatrix. NULL when the tensor has no
 * data at all, is unknown, or n does not match. Borrowed: valid until the
 * next call on im. (ds_convert_opts.importance can call it.) */
const float *ds_imatrix_get(struct ds_imatrix *im, const char *name, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
