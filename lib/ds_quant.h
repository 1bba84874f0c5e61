/*
 * ds_quant.h - ggml block quantization: llama.cpp's exact block layouts for
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and
 * IQ4_XS (types and block sizes in ds_tensor.h), with quantization (plain, or
 * weighted by an importance matrix), dequantization and the dot products the
 * forward pass computes with.
 *
 * A row holds n elements, n a multiple of the type's block size; its bytes
 * are n / block_size * block_bytes. Activations for dot products are either
 * float, or quantized to 8 bits per block as llama.cpp does (Q8_1 for Q4_1
 * and Q5_1, whose min term uses Q8_1's stored d * sum(q); Q8_0 for the other
 * 32-element types; Q8_K for the K and IQ4_XS types): ds_quant_vec_type()
 * names the activation type of a weight type.
 *
 * Every kernel has a scalar *_ref twin, compared in the tests; optimised
 * versions use AVX2 or AVX-512 when the CPU has them (chosen at run time) and
 * fall back to the scalar code everywhere else.
 */
#ifndef DS_QUANT_H
#define DS_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True for the block types this module quantizes and dequantizes. */
bool ds_quant_supported(enum ds_type t);

/* Quantizes x (n floats) into dst (one row of type t). imatrix (n floats,
 * per column importance: mean squared activation) may be NULL; with it the
 * quantization error is weighted by it, as llama.cpp does with --imatrix.
 * n must be a multiple of the block size (DS_ERR_ARG otherwise). */
ds_err ds_quantize_row(enum ds_type t, const float *x, void *dst, int64_t n,
                       const float *imatrix);
ds_err ds_quantize_row_ref(enum ds_type t, const float *x, void *dst, int64_t n,
                           const float *imatrix);

/* Dequantizes one row of type t into y (n floats). Also accepts F32, F16,
 * BF16 and F8_E4M3 (unscaled). */
ds_err ds_dequantize_row(enum ds_type t, const void *src, float *y, int64_t n);
ds_err ds_dequantize_row_ref(enum ds_type t, const void *src, float *y, int64_t n);

/* The type activations are quantized to for dot products with rows of t
 * (DS_TYPE_Q8_0, DS_TYPE_Q8_1 or DS_TYPE_Q8_K); DS_TYPE_F32 for plain types. */
enum ds_type ds_quant_vec_type(enum ds_type t);

/* Quantizes activations x (n floats) to vt = ds_quant_vec_type(t). */
ds_err ds_quantize_vec(enum ds_type vt, const float *x, void *dst, int64_t n);

/* Dot product of a row of type t with activations quantized to
 * ds_quant_vec_type(t) (as llama.cpp computes it), or with float activations
 * (exact up to float rounding of the dequantized weights). */
float ds_quant_dot(enum ds_type t, const void *row, const void *qx, int64_t n);
float ds_quant_dot_ref(enum ds_type t, const void *row, const void *qx, int64_t n);
float ds_quant_dot_f32(enum ds_type t, const void *row, const float *x, int64_t n);

/* Batched dot products: row (n elements of type t) with na activation rows
 * quantized to ds_quant_vec_type(t), the c-th at (const char *)qx + c * qx_stride:
 *   out[c * out_stride] = ds_quant_dot(t, row, qx + c * qx_stride, n),  c < na,
 * bit for bit (every level computes each output in the single product's
 * order); faster, as each weight block is unpacked once for several
 * activations. */
void ds_quant_dot_rows(enum ds_type t, const void *row, const void *qx, size_t qx_stride,
                       int64_t na, int64_t n, float *out, int64_t out_stride);
void ds_quant_dot_rows_ref(enum ds_type t, const void *row, const void *qx, size_t qx_stride,
                           int64_t na, int64_t n, float *out, int64_t out_stride);

/* 2-D batched dot products (a matrix product): nr weight rows of type t, the
 * r-th at (const char *)w + r * w_stride, with na activation rows quantized
 * to ds_quant_vec_type(t), the c-th at (const char *)qx + c * qx_stride:
 *   out[r * out_rs + c * out_cs] = ds_quant_dot(t, w_r, qx_c, n),  r < nr, c < na,
 * bit for bit at every level, other elements of out untouched. Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0 and IQ4_NL at the AVX-512 level run register tiles of 8
 * weight rows x 8 activation rows (each weight block loaded once for 8
 * activation rows and each activation block once for 8 weight rows, the
 * activations repacked once per call); every other case runs
 * ds_quant_dot_rows per weight row. */
void ds_quant_dot_tile(enum ds_type t, const void *w, size_t w_stride, int64_t nr, const void *qx,
                       size_t qx_stride, int64_t na, int64_t n, float *out, int64_t out_rs,
                       int64_t out_cs);
void ds_quant_dot_tile_ref(enum ds_type t, const void *w, size_t w_stride, int64_t nr,
                           const void *qx, size_t qx_stride, int64_t na, int64_t n, float *out,
                           int64_t out_rs, int64_t out_cs);

/* Weighted squared error of a quantized row against x:
 * sum_i w_i (x_i - deq_i)^2 with w = imatrix or 1; *sum_x2 gets sum_i w_i x_i^2. */
ds_err ds_quant_error(enum ds_type t, const float *x, const void *q, int64_t n,
                      const float *imatrix, double *sum_err2, double *sum_x2);

/* DeepSeek FP8 block quantization, the inverse of ds_fp8_dequant (ds_tensor.h):
 * w (rows, cols) -> q (rows, cols) E4M3 and scale_inv (ceil(rows/block),
 * ceil(cols/block)), one scale per block x block tile (ragged edge tiles
 * included): scale = amax / 448 over the tile (DeepSeek's quantizer), q =
 * e4m3(w / scale) rounded to nearest even; an all-zero tile gets scale 0 and
 * zero bytes. When w holds FP8 weights dequantized (q' * s), amax / 448 can
 * miss s by one ulp (448 * s was rounded): then the neighbour of amax / 448
 * that gives w back exactly is used, so FP8 -> F32 -> FP8 is lossless for
 * tiles whose largest |q'| is 448. Tiles are quantized in parallel (OpenMP). */
void ds_fp8_quantize(uint8_t *q, float *scale_inv, const float *w, int64_t rows, int64_t cols,
                     int64_t block);

/* The instruction set chosen at run time: "avx512" (AVX-512 F, BW, VL and
 * VNNI: the dot products of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and Q6_K;
 * AVX2 kernels for the rest, which includes Q4_K and Q5_K, whose AVX-512
 * versions measured slower), "avx2" or "scalar". DS_SIMD=scalar|avx2
 * in the environment caps it (for tests and benchmarks). Every level gives
 * the same bits. */
const char *ds_quant_simd(void);

#ifdef __cplusplus
}
#endif
#endif
