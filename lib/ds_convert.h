/*
 * ds_convert.h - checkpoint conversion: Hugging Face safetensors <-> GGUF,
 * GGUF -> GGUF, in one streaming pass.
 *
 * Data flow. A source (a Hugging Face directory or .safetensors file with its
 * config.json and tokenizer files; or a GGUF file or stream, zstd or not) is
 * seen as a list of "logical" tensors with Hugging Face names and PyTorch
 * layouts: per-expert matrices, kv_b_proj whole, FP8 weights with their
 * weight_scale_inv. A sink maps them to its own layout:
 *   - GGUF (llama.cpp deepseek2): experts stacked into ffn_*_exps, kv_b_proj
 *     split into attn_k_b (transposed per head) and attn_v_b, the MTP layer
 *     kept as blk.N with blk.N.nextn.* tensors, FP8 dequantized to the output
 *     type (or kept with --outtype fp8: then kv_b stays whole as attn_kv_b and
 *     each FP8 weight has a "<name>_scale_inv" F32 companion).
 *   - safetensors: the original names and layouts, shards of at most
 *     shard_size bytes with model.safetensors.index.json, config.json and the
 *     tokenizer files rebuilt from the metadata.
 * Output tensors are produced in the order their inputs appear, expert slab by
 * expert slab, so a GGUF on stdin is read once, front to back, and memory
 * stays bounded by a few tensors (never the model).
 *
 * Types: outtype -1 keeps what is stored, except FP8, which becomes BF16.
 * F16/BF16/F32 outputs convert matrices only: norms, 1-D tensors, the router
 * (ffn_gate_inp) and exp_probs_b stay F32 in GGUF outputs.
 */
#ifndef DS_CONVERT_H
#define DS_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress callback: done/total bytes of output, what = current tensor.
 * A non-zero return cancels the run (DS_ERR_INTERRUPTED). */
typedef int (*ds_progress_fn)(void *ud, uint64_t done, uint64_t total, const char *what);

enum ds_format { DS_FORMAT_GGUF = 0, DS_FORMAT_SAFETENSORS = 1 };

/* One output tensor of a conversion, as written. */
struct ds_tensor_report {
    const char *name;
    enum ds_type type, source_type;
    uint64_t n_elements, bytes;
    double sum_err2, sum_x2;  /* sum of (x - written)^2 and of x^2 (importance-weighted
                                 when an importance matrix applies); 0 for byte copies */
    bool weighted;            /* the sums above are importance-weighted */
    const char *note;         /* from type_of, or NULL */
};

struct ds_convert_opts {
    const char *input;        /* HF dir, .safetensors, index.json, .gguf[.zst]; NULL/"-": stdin */
    const char *output;       /* file or directory; NULL/"-": stdout (GGUF only) */
    enum ds_format to;
    int outtype;              /* -1, DS_TYPE_F32, DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_F8_E4M3 */
    unsigned write_flags;     /* DS_WRITE_FORCE, DS_WRITE_ZSTD */
    int zstd_level;           /* 0: default */
    int threads;              /* for zstd and conversions; 0: one */
    uint64_t shard_size;      /* safetensors shards; 0: 5 GB (5e9 bytes) */
    const char *provenance;   /* appended to dskit.provenance, e.g. "ds-convert 0.1.0 --outtype bf16" */
    ds_progress_fn progress;  /* may be NULL */
    void *progress_ud;

    /* ds-quantize. GGUF outputs only; zero values change nothing. */
    /* The type of each output tensor: called with the output's metadata, the
     * tensor's GGUF name, ggml shape and the type the rules above give; returns the type to write (a float
     * or a ggml block type; see ds_quant.h). DS_TYPE_F8_E4M3 for a matrix that
     * is not FP8 quantizes it with ds_fp8_quantize and adds its
     * "<name>_scale_inv" (F32 tile scales) right after it; asked for the whole
     * "blk.N.attn_kv_b.weight" first, FP8 keeps kv_b whole (no k_b/v_b split).
     * *note may be set to a short
     * static text (a fallback, say) that is passed on to on_tensor. */
    enum ds_type (*type_of)(void *ud, const struct ds_meta *meta, const char *name,
                            uint32_t n_dims, const int64_t *ne, enum ds_type planned,
                            const char **note);
    void *type_ud;
    bool allow_requantize;    /* quantized inputs may be dequantized and quantized again */
    int file_type;            /* general.file_type to write (a llama_ftype); -1 or 0: derived */
    /* Importance of each input column of a tensor (mean squared activation),
     * or NULL: called per output tensor; for stacked experts the array holds
     * ne[0] values per expert. Returned memory stays valid until the next call. */
    const float *(*importance)(void *ud, const char *name, int64_t n);
    void *importance_ud;
    bool importance_error_only; /* weight the reported error only, quantize without it */
    /* Called after each output tensor is written. */
    void (*on_tensor)(void *ud, const struct ds_tensor_report *r);
    void *report_ud;
};

struct ds_convert_stats {
    uint64_t bytes_in;        /* tensor bytes read */
    uint64_t bytes_out;       /* bytes written (before compression) */
    uint64_t n_tensors_out;
};

/* Runs a conversion. On failure nothing is left at the output path. */
ds_err ds_convert(const struct ds_convert_opts *o, struct ds_convert_stats *stats);

/* What --list shows: the GGUF header of a GGUF input, or for a Hugging Face
 * input the header the conversion with outtype would write. *fmt tells which
 * input format was read. g must be init'ed; the caller releases it. */
ds_err ds_convert_inspect(const char *input, int outtype, struct ds_gguf *g,
                          enum ds_format *fmt);

/* True when llama.cpp can load a GGUF with this header: every tensor type is
 * a ggml type (no dskit extension such as FP8). When false, *why names the
 * first offending tensor (borrowed static text or a name in g). */
bool ds_gguf_llama_loadable(const struct ds_gguf *g, const char **why_tensor);

#ifdef __cplusplus
}
#endif
#endif
