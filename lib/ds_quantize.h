/*
 * ds_quantize.h - which type each tensor gets when a model is quantized.
 *
 * struct ds_qrules turns a target (a ggml type such as q4_K, or a preset mix
 * such as q4_k_m) plus per-tensor overrides into a type for every tensor,
 * the way llama-quantize decides, for llama.cpp's deepseek2 names:
 *   1. --tensor-type REGEX=TYPE rules, in order; the first whose regex
 *      (PCRE2, searched in the tensor name) matches wins;
 *   2. --output-type for output.weight, --embd-type for token_embd.weight;
 *   3. kept F32 unless a rule above says otherwise: the router
 *      (ffn_gate_inp), exp_probs_b, every norm and every 1-D tensor;
 *   4. the preset's mix (see ds_qrules_preset_help);
 *   5. the target type; for target fp8 (DeepSeek's FP8: E4M3 with 128x128
 *      tile scales, see ds_fp8_quantize) embeddings and output heads
 *      (token_embd, output, the MTP layer's embed_tokens and shared_head_head)
 *      keep their source type, as DeepSeek's FP8 checkpoints keep them BF16.
 * fp8 asked for a 1-D tensor gives f32 (reported).
 * A type whose block does not divide the row length (ne[0]) falls back as
 * llama.cpp does: q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, q2_K, q3_K and
 * iq4_xs -> iq4_nl; a 32-element type that does not fit either -> f16. The
 * fallback is reported.
 */
#ifndef DS_QUANTIZE_H
#define DS_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds_qrules;

/* target: a ggml type name (q4_0, q4_K, q8_0, iq4_nl, f16, ...), fp8 (or
 * f8_e4m3), or a preset
 * (q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k;
 * case-insensitive). n_layers is the model's block count (for the presets
 * that give some layers more bits). DS_ERR_ARG for an unknown target. */
ds_err ds_qrules_new(const char *target, int64_t n_layers, struct ds_qrules **out);
void ds_qrules_free(struct ds_qrules *r);

/* The number of transformer layers (for the presets' layer choice). */
void ds_qrules_set_layers(struct ds_qrules *r, int64_t n_layers);

/* Adds a REGEX=TYPE rule (the text as given on the command line).
 * DS_ERR_ARG for a bad regex or type, with the reason. */
ds_err ds_qrules_add(struct ds_qrules *r, const char *rule);
/* Types for output.weight and token_embd.weight. */
ds_err ds_qrules_set_output(struct ds_qrules *r, const char *type);
ds_err ds_qrules_set_embd(struct ds_qrules *r, const char *type);

/* The type for a tensor whose source type is source; *note gets a static
 * text when a fallback applied ("q4_K -> q5_0: row of 128 is not a multiple
 * of 256"), else NULL. */
enum ds_type ds_qrules_type(struct ds_qrules *r, const char *name, uint32_t n_dims,
                            const int64_t *ne, enum ds_type source, const char **note);

/* llama_ftype for general.file_type (e.g. 15 for q4_k_m), or -1. */
int ds_qrules_file_type(const struct ds_qrules *r);

/* One line per preset and type for --help and the man page. */
const char *ds_qrules_preset_help(void);

#ifdef __cplusplus
}
#endif
#endif
