/*
 * ds_hf.h - Hugging Face config.json and tokenizer files <-> GGUF metadata
 * with llama.cpp's deepseek2 keys.
 *
 * Config: the deepseek2.* keys llama.cpp reads (see reference/gguf-and-
 * llamacpp.md section 2.1), written explicitly (q_lora_rank = 0 without q
 * LoRA, expert_gating_func, group counts, yarn_log_multiplier = 0.1 *
 * mscale_all_dim, nextn_predict_layers with block_count including the MTP
 * layer), plus dskit.hf.* keys for what llama.cpp has no key for (model_type,
 * architectures, topk_method, rope_scaling details, torch_dtype, FP8
 * quantization_config, ...), so that ds_hf_meta_to_config() gives back a
 * config.json with the same model fields. dskit.routing.method records
 * noaux_tc / group_limited_greedy / greedy for ds-run.
 *
 * Tokenizer: byte-level BPE tokenizer.json + tokenizer_config.json <->
 * tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,
 * eos_token_id,padding_token_id,add_bos_token,add_eos_token} and
 * tokenizer.chat_template. The pre-tokenizer name ("deepseek-llm",
 * "deepseek-coder", "deepseek-v3") is recognised from the Split regexes.
 */
#ifndef DS_HF_H
#define DS_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_meta.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters of a DeepSeek-V2/V3 model, as read from config.json or
 * from deepseek2 GGUF metadata. */
struct ds_hparams {
    char model_type[32];        /* "deepseek_v2", "deepseek_v3" */
    int64_t vocab_size;
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t moe_intermediate_size;
    int64_t n_layers;           /* num_hidden_layers (without MTP) */
    int64_t n_nextn;            /* num_nextn_predict_layers (0 if absent) */
    int64_t n_heads;
    int64_t q_lora_rank;        /* 0: plain q_proj */
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim;
    int64_t qk_rope_head_dim;
    int64_t v_head_dim;
    int64_t n_routed_experts;   /* 0: dense model */
    int64_t n_shared_experts;
    int64_t n_experts_per_tok;
    int64_t n_group;
    int64_t topk_group;
    int64_t first_k_dense_replace;
    int64_t moe_layer_freq;
    char scoring_func[16];      /* "softmax", "sigmoid" */
    char topk_method[32];       /* "greedy", "group_limited_greedy", "noaux_tc" */
    bool norm_topk_prob;
    double routed_scaling_factor;
    double rms_norm_eps;
    double rope_theta;
    bool has_yarn;
    double yarn_factor;
    int64_t yarn_original_max_pos;
    double yarn_beta_fast, yarn_beta_slow;
    double yarn_mscale, yarn_mscale_all_dim;
    int64_t max_position_embeddings;
    bool tie_word_embeddings;
    int64_t bos_token_id, eos_token_id; /* -1 if absent */
    bool fp8;                   /* quantization_config: fp8 e4m3 */
    int64_t fp8_block[2];       /* weight_block_size */
};

/* Parses config.json text (name for messages). Checks the model type and
 * that every size is positive and consistent (heads x dims, groups divide
 * experts, ...); unknown architectures give DS_ERR_UNSUPPORTED. */
ds_err ds_hf_config_parse(const char *json, size_t len, const char *name, struct ds_hparams *hp);

/* Writes general.architecture = deepseek2, deepseek2.* and dskit.hf.* keys. */
ds_err ds_hf_config_to_meta(const char *json, size_t len, const char *name, struct ds_meta *m);

/* Reads hyper-parameters back from deepseek2 metadata (also from llama.cpp's
 * own GGUFs, with dskit.* keys optional). */
ds_err ds_hparams_from_meta(const struct ds_meta *m, struct ds_hparams *hp);

/* config.json text from metadata: malloc'd, NUL-terminated, free with free().
 * torch_dtype is set to dtype (e.g. "bfloat16"; NULL keeps the original
 * config's, when known); quantization_config is kept only when fp8 is true. */
ds_err ds_hf_meta_to_config(const struct ds_meta *m, const char *dtype, bool fp8, char **out);

/* tokenizer.json (required) and tokenizer_config.json (may be NULL) ->
 * tokenizer.* keys. vocab_size pads the vocabulary with "[PAD<i>]" tokens as
 * llama.cpp's converter does (0: no padding). */
ds_err ds_hf_tokenizer_to_meta(const char *tok_json, size_t tok_len, const char *cfg_json,
                               size_t cfg_len, int64_t vocab_size, const char *name,
                               struct ds_meta *m);

/* tokenizer.* keys -> tokenizer.json and tokenizer_config.json texts
 * (malloc'd). DS_ERR_NOT_FOUND when the metadata has no tokenizer. */
ds_err ds_hf_meta_to_tokenizer(const struct ds_meta *m, char **tok_json, char **cfg_json);

#ifdef __cplusplus
}
#endif
#endif
