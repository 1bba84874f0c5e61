/*
 * ds_prune.h - pruning a deepseek2 GGUF model, streaming GGUF -> GGUF:
 * unstructured (magnitude, Wanda) and N:M sparsity, and structured removal
 * of routed experts, attention heads and whole layers.
 *
 * Unstructured pruning sets weights to exact zeros; shapes stay. Scores:
 *   magnitude  |W_ij|, compared over the whole matrix (each routed expert and
 *              each head slice of attn_k_b/attn_v_b is a matrix of its own);
 *   wanda      |W_ij| * ||X_j||, compared within each output row i; ||X_j||
 *              is the norm of input column j over the calibration text, from
 *              an importance matrix (ds_model.h: ||X_j|| = sqrt(count *
 *              mean_sq_j); within a row the count is a constant factor, so
 *              sqrt(mean_sq_j) ranks the same). A matrix without data (an
 *              expert never routed to, the MTP layer) is pruned by magnitude.
 * The k = floor(S * n) lowest scores of a matrix (magnitude) or of a row
 * (wanda) become zero, ties to the lower index, so the counts are exact.
 * N:M keeps the N highest scores in every group of M consecutive input
 * columns (ne[0]) of every row.
 *
 * Tensors pruned by default: the 2-D and 3-D weight matrices of the
 * transformer layers (attention, dense FFN, shared and routed experts);
 * never by default: norms, 1-D tensors, the router (ffn_gate_inp),
 * exp_probs_b, token_embd, output and the MTP (nextn) layer. Rules (REGEX=SPEC,
 * the first whose regex matches the input tensor name wins) override the
 * default either way; they apply to tensors of 2 or more dimensions only.
 *
 * Types: F32, F16 and BF16 are pruned in place (zeros are exact). Block
 * types are dequantized, pruned and quantized again to the same type only
 * with allow_requantize, and only for the types whose grid holds an exact
 * zero (q8_0, q4_0, q5_0, q3_K, q6_K); q4_1, q5_1, q2_K, q4_K, q5_K, iq4_nl
 * and iq4_xs have an offset or a non-linear grid, so pruned weights would
 * come back non-zero: DS_ERR_UNSUPPORTED (prune before quantizing).
 *
 * Structured pruning (shapes and metadata change; llama.cpp loads the result):
 *   experts  per MoE layer (the MTP layer too), the lowest-ranked routed
 *            experts: rows of ffn_gate_inp, entries of exp_probs_b, slices of
 *            ffn_{gate,up,down}_exps; deepseek2.expert_count. The same count
 *            in every layer and every expert group (n_group); refused when
 *            fewer than expert_used_count would remain, when the count is not
 *            a multiple of n_group, or when the kept groups could not supply
 *            expert_used_count experts. Rank: selection frequency x mean
 *            routing weight over the calibration text = (sum of the routing
 *            weights the expert got) / tokens; without calibration (and in
 *            the MTP layer, which does not run) the L2 norm of the expert's
 *            router row. Ties: the lower norm, then the lower index, go first.
 *   heads    per layer, the lowest-ranked attention heads: the head's rows of
 *            attn_q_b (attn_q), its slices of attn_k_b and attn_v_b (rows of
 *            attn_kv_b), its columns of attn_output; head_count. Rank: sum
 *            over the head's columns j of attn_output of mean_sq(o_j) *
 *            ||W_o[:,j]||^2 (the energy the head adds to the residual) with
 *            an importance matrix, else ||W_o[:,j]||^2 alone.
 *   layers   whole transformer layers (never the MTP layer), ranked by block
 *            influence, 1 - cos(h_in, h_out) of the layer's residual stream
 *            averaged over the calibration tokens (lowest removed), or given
 *            as a list. blk.N are renumbered, block_count and
 *            leading_dense_block_count follow.
 * Experts and heads are chosen from tensor data before the header is
 * written: a stream or compressed input is first copied to an unlinked
 * temporary file in $TMPDIR (else /tmp) in that case.
 *
 * Metadata written: dskit.prune.method, .sparsity (f32) or .nm ("2:4"),
 * .calibration, .removed_layers (original indices), .removed_experts.N and
 * .removed_heads.N (original indices, N the output layer), and a
 * dskit.provenance entry.
 */
#ifndef DS_PRUNE_H
#define DS_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_convert.h"
#include "ds_error.h"
#include "ds_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What to do to a tensor: frac in [0, 1) of its weights zeroed, or keep n of
 * every m consecutive input columns (m > 0). All zero: leave it. */
struct ds_sparsity {
    double frac;
    int n, m;
};

/* Parses "0.5", "50%", "2:4" (n < m <= 256) or "none". DS_ERR_ARG with the
 * reason otherwise. */
ds_err ds_sparsity_parse(const char *s, struct ds_sparsity *out);

/* Per-tensor rules "REGEX=SPEC" (SPEC as ds_sparsity_parse); the first
 * whose PCRE2 regex is found in the tensor name applies. */
struct ds_prune_rules;
ds_err ds_prune_rules_new(struct ds_prune_rules **out);
void ds_prune_rules_free(struct ds_prune_rules *r); /* accepts NULL */
/* DS_ERR_ARG for a malformed rule, bad regex or spec; DS_ERR_LIMIT past 64. */
ds_err ds_prune_rules_add(struct ds_prune_rules *r, const char *rule);

/* ---- calibration statistics ------------------------------------------------- */

/*
 * Router and block statistics for structured pruning, gathered by the
 * forward pass (like the importance matrix, ds_model.h): per MoE layer and
 * routed expert, the number of tokens that selected it and the sum of the
 * routing weights it got; per layer, the sum over tokens of
 * 1 - cos(h_in, h_out) of the residual stream around the layer.
 *
 *   ds_calib_new(m, &cal); ds_ctx_set_calib(c, cal);
 *   ds_calib_run(c, ids, n, 512, 0, &chunks);   (or ds_forward yourself)
 */
struct ds_calib;

/* An empty collector for m (which must outlive it). */
ds_err ds_calib_new(const struct ds_model *m, struct ds_calib **out);
void ds_calib_free(struct ds_calib *cal); /* accepts NULL */

/* Runs ids[0..n) through c in chunks of chunk tokens (each from an empty
 * cache; at most max_chunks, 0: all; a last shorter chunk runs only when it is
 * the only one), for whatever collectors are set on c. *n_chunks gets the
 * number run. DS_ERR_ARG when n is 0. */
ds_err ds_calib_run(struct ds_ctx *c, const int32_t *ids, size_t n, int64_t chunk,
                    int64_t max_chunks, int64_t *n_chunks);

/* Tokens seen. */
int64_t ds_calib_tokens(const struct ds_calib *cal);
/* Expert statistics of layer l (false when l is not a MoE layer or e out of
 * range). */
bool ds_calib_expert(const struct ds_calib *cal, int64_t l, int64_t e, int64_t *selected,
                     double *weight_sum);
/* Mean block influence of layer l; NaN without data. */
double ds_calib_block_influence(const struct ds_calib *cal, int64_t l);

/* ---- pruning ------------------------------------------------------------------ */

enum ds_prune_method { DS_PRUNE_MAGNITUDE = 0, DS_PRUNE_WANDA = 1 };

/* One output tensor as written. */
struct ds_prune_tensor_report {
    const char *name;       /* output name */
    const char *src_name;   /* input name (differs after layer renumbering) */
    enum ds_type type;
    uint64_t n_before, n_after; /* elements in the input / output */
    uint64_t zeros;         /* exact zeros in the output (counted for pruned tensors
                               and matrices; 0 for copies) */
    bool pruned;            /* unstructured or N:M applied */
    bool sliced;            /* experts or heads removed from it */
    bool requantized;       /* dequantized and quantized again */
    const char *note;       /* "wanda without data: magnitude", ... or NULL */
};

struct ds_prune_opts {
    const char *input;        /* .gguf[.zst] or NULL/"-": stdin */
    const char *output;       /* NULL/"-": stdout */
    unsigned write_flags;     /* DS_WRITE_FORCE, DS_WRITE_ZSTD */
    int zstd_level;           /* 0: default */
    int threads;
    const char *provenance;   /* appended to dskit.provenance */
    const char *calibration;  /* name recorded in dskit.prune.calibration, or NULL */

    enum ds_prune_method method;
    struct ds_sparsity sparsity;        /* for the tensors pruned by default */
    const struct ds_prune_rules *rules; /* may be NULL */
    bool allow_requantize;

    /* Structured: 0 none; in (0, 1) a fraction (rounded to the nearest
     * count; for experts to a multiple of n_group); >= 1 a count. */
    double experts, heads, layers;
    const int64_t *layer_list; /* explicit layers to remove (instead of layers) */
    size_t n_layer_list;

    struct ds_imatrix *imatrix;    /* for wanda and head ranking, or NULL */
    const struct ds_calib *calib;  /* for expert and layer ranking, or NULL */

    void (*on_tensor)(void *ud, const struct ds_prune_tensor_report *r);
    void *report_ud;
    ds_progress_fn progress;
    void *progress_ud;
};

/* What a run did. Arrays are malloc'd; ds_prune_stats_release() frees them. */
struct ds_prune_stats {
    uint64_t params_before, params_after; /* elements of all tensors */
    uint64_t pruned_elements, pruned_zeros; /* over the unstructured-pruned tensors */
    uint64_t bytes_out;       /* bytes written (before any output compression) */
    uint64_t zstd_bytes;      /* the output compressed with zstd (level 3): tensor
                                 data compressed, the header counted as is */
    int64_t layers_before, layers_after;   /* transformer layers, MTP excluded */
    int64_t experts_before, experts_after; /* per MoE layer */
    int64_t heads_before, heads_after;
    int64_t *removed_layers;  /* n_removed_layers original indices */
    size_t n_removed_layers;
    /* per output layer (layers_after + MTP layers) x experts removed per layer:
     * original expert ids, -1 rows for dense layers */
    int64_t *removed_experts;
    int64_t n_removed_experts; /* per layer */
    int64_t *removed_heads;    /* per output layer x n_removed_heads */
    int64_t n_removed_heads;
    int64_t n_out_layers;      /* rows of the two arrays above */
};

void ds_prune_stats_release(struct ds_prune_stats *s);

/* Runs a pruning pass; on failure nothing is left at the output path and
 * stats hold nothing to release. DS_ERR_ARG for a request the model cannot
 * take (out of range, uneven groups, wanda without an importance matrix,
 * layer ranking without calibration statistics), with the reason. */
ds_err ds_prune(const struct ds_prune_opts *o, struct ds_prune_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
