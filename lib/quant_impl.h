/*
 * quant_impl.h - per-type tables of the block quantization kernels (internal).
 *
 * quant_legacy.c holds the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL) and the Q8_0 and Q8_1 activation formats; quant_k.c the
 * 256-element types (Q2_K .. Q6_K, IQ4_XS) and Q8_K. quant.c dispatches the
 * public API of ds_quant.h through these tables. Every function pointer is set; an
 * optimised entry may point to the same function as its _ref twin when there
 * is nothing to optimise.
 *
 * Shapes: x (n) floats, a row of n elements (n a multiple of the block size).
 */
#ifndef DS_QUANT_IMPL_H
#define DS_QUANT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ds_tensor.h"

struct ds_qtype {
    enum ds_type type;
    enum ds_type vec_type; /* activation type for dot: DS_TYPE_Q8_0, _Q8_1 or _Q8_K */
    /* x (n), imatrix (n) or NULL -> dst (row of type) */
    void (*quantize)(const float *x, void *dst, int64_t n, const float *imatrix);
    void (*quantize_ref)(const float *x, void *dst, int64_t n, const float *imatrix);
    /* src (row of type) -> y (n) */
    void (*dequantize)(const void *src, float *y, int64_t n);
    void (*dequantize_ref)(const void *src, float *y, int64_t n);
    /* row (n, type) . qx (n, vec_type) -> float */
    float (*dot)(const void *row, const void *qx, int64_t n);
    float (*dot_ref)(const void *row, const void *qx, int64_t n);
    /* row (n, type) . na activation rows qx + c * ys (bytes) -> out[c * os],
     * c < na, each equal to dot(row, qx + c * ys, n) bit for bit; NULL: the
     * caller calls dot per row */
    void (*dot_rows)(const void *row, const void *qx, size_t ys, int64_t na, int64_t n,
                     float *out, int64_t os);
};

/* The table entry of t, or NULL when the file does not handle t. */
const struct ds_qtype *ds_qtype_legacy(enum ds_type t);
const struct ds_qtype *ds_qtype_k(enum ds_type t);

/* 2-D tiled dot products of the 32-element types (ds_quant_dot_tile's
 * contract, strides in bytes for w and qx, in floats for out): false, and
 * nothing written, when t has no tile kernel at the level in effect. */
bool ds_dot_tile_legacy(enum ds_type t, const void *w, size_t ws, int64_t nr, const void *qx,
                        size_t qs, int64_t na, int64_t n, float *out, int64_t ors, int64_t ocs);

/* Activation quantizers, as llama.cpp's quantize_row_q8_0 / q8_1 / q8_K:
 * x (n) -> dst (row of Q8_0 / Q8_1 / Q8_K). */
void ds_quantize_q8_0(const float *x, void *dst, int64_t n);
void ds_quantize_q8_1(const float *x, void *dst, int64_t n);
void ds_quantize_q8_k(const float *x, void *dst, int64_t n);

/* Blocks whose largest magnitude is below this quantize to zero (ggml's
 * GROUP_MAX_EPS). */
#define DS_QUANT_GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |f| < 2^22: ggml's nearest_int (the sum's
 * low mantissa bits hold round(f)). */
static inline int ds_nearest_int(float f)
{
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007fffff) - 0x00400000;
}

/* Symmetric levels l in [-nmax, nmax - 1], x ~ scale * l: tries 19 inverse
 * scales around -nmax / max (max: the element of largest magnitude) and keeps
 * the one whose weighted least-squares fit explains most of sum w x^2
 * (ggml's make_qx_quants, rmse_type 1). x (n), w (n) or NULL for x^2 ->
 * L (n) = l + nmax; returns the scale. Bit-exact with ggml. */
float ds_quant_search_sym(int n, int nmax, const float *x, int8_t *L, const float *w);

/* Run-time SIMD level: 0 scalar, 1 AVX2(+FMA+F16C), 2 AVX-512 (F, BW, VL,
 * VNNI); capped by DS_SIMD=scalar|avx2|avx512 in the environment. Inline:
 * the kernels' dispatchers ask once per dot product. */
extern int ds_simd_level_now, ds_simd_vbmi_now; /* -1: not yet known */
int ds_simd_level_init(void);
static inline int ds_simd_level(void)
{
    return ds_simd_level_now >= 0 ? ds_simd_level_now : ds_simd_level_init();
}
/* For tests: use at most level (0..2; capped by the CPU), or -1 for the
 * default above; returns the level now in effect. Not for use while other
 * threads run kernels. */
int ds_simd_set_level(int level);
/* Whether the AVX-512 kernels that need VBMI (vpermb) may run: level 2 is in
 * effect and the CPU has AVX512_VBMI; otherwise level 2 uses AVX2 there. */
static inline bool ds_simd_vbmi(void)
{
    return ds_simd_level() >= 2 && ds_simd_vbmi_now > 0;
}

#endif
