/*
 * ds.h - libds, the library under the dskit tools: one include for all of it.
 *
 *   ds_error.h        error codes and detail messages
 *   ds_io.h           readers, writers (atomic, zstd), output directories
 *   ds_tensor.h       element types, exact conversions, FP8 dequantization
 *   ds_meta.h         GGUF-typed key/value metadata
 *   ds_gguf.h         GGUF v3 reader and writer
 *   ds_safetensors.h  safetensors reader (sharded too) and writer
 *   ds_hf.h           Hugging Face config and tokenizer <-> deepseek2 metadata
 *   ds_convert.h      checkpoint conversion (Hugging Face <-> GGUF)
 *   ds_tokenizer.h    byte-level BPE tokenizer from GGUF metadata
 *   ds_bpe.h          training a byte-level BPE tokenizer on a text
 *   ds_tcache.h       teacher top-k logits cache for distillation (and SHA-256)
 *   ds_plot.h         SVG line plots (training curves)
 *   ds_model.h        model loading and the forward pass (MLA, MoE, KV cache)
 *   ds_sample.h       sampling (top-k, top-p, min-p, temperature, seed)
 *   ds_chat.h         DeepSeek chat templates
 *   ds_quant.h        ggml block quantization, dequantization, dot products
 *   ds_quantize.h     which type each tensor gets (presets, rules, fallbacks)
 *   ds_prune.h        pruning: sparsity, N:M, experts, heads, layers
 *   ds_eval.h         evaluation: perplexity, KL divergence, JSONL tasks, reports
 *   ds_train.h        training: forward/backward, losses, AdamW, checkpoints
 */
#ifndef DS_H
#define DS_H

#include "ds_error.h"
#include "ds_io.h"
#include "ds_tensor.h"
#include "ds_meta.h"
#include "ds_gguf.h"
#include "ds_safetensors.h"
#include "ds_hf.h"
#include "ds_convert.h"
#include "ds_tokenizer.h"
#include "ds_bpe.h"
#include "ds_tcache.h"
#include "ds_plot.h"
#include "ds_model.h"
#include "ds_sample.h"
#include "ds_chat.h"
#include "ds_quant.h"
#include "ds_quantize.h"
#include "ds_prune.h"
#include "ds_eval.h"
#include "ds_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
const char *ds_version(void);

/* Versions of the libraries libds was built with, for `--version -v`:
 * "libds 0.1.0, zstd 1.5.4, cJSON 1.7.15, PCRE2 10.42, OpenMP 201511"
 * written into buf (NUL-terminated, truncated to cap). */
void ds_library_versions(char *buf, size_t cap);

/* Number of threads "0 = auto" resolves to: OMP_NUM_THREADS if set, else the
 * number of online processors. n > 0 is returned as is. Also applies n to
 * OpenMP (omp_set_num_threads) when built with it. */
int ds_set_threads(int n);

#ifdef __cplusplus
}
#endif
#endif
