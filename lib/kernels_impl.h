/*
 * kernels_impl.h - numeric kernels of the forward pass (internal to libds).
 *
 * Plain functions over float arrays with explicit dimensions; the shape
 * comment above each one gives its contract, row-major, strides in elements.
 * Every kernel has a *_ref twin written as plain loops (double accumulation
 * where it matters); tests/unit/test_forward.c compares each pair on random
 * data. Optimised kernels split their outermost independent loop across
 * OpenMP threads; each output element is computed by one thread in a fixed
 * order, so results do not depend on the thread count.
 *
 * Weights are rows of F32, F16, BF16 or F8_E4M3 values (the latter with
 * per-tile scales, ds_matmul_scaled), or of ggml blocks (ds_quant.h;
 * then activations are quantized to 8 bits per block for the dot products, as
 * llama.cpp does). A GGUF matrix {K, N} is N rows of K elements; activations
 * and accumulation are float32.
 */
#ifndef DS_KERNELS_IMPL_H
#define DS_KERNELS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "ds_tensor.h"

/* OpenMP pragmas that vanish (without -Wunknown-pragmas noise) when libds is
 * built with OPENMP=0: DS_OMP(omp parallel for schedule(static)). */
#ifdef _OPENMP
#include <omp.h>
#define DS_OMP(x) _Pragma(#x)
#else
#define DS_OMP(x)
#endif

/* OpenMP's thread budget and the calling thread's number (1 and 0 without
 * OpenMP). */
static inline int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Bytes of one element of a weight type usable by the kernels (F32, F16,
 * BF16, F8_E4M3); 0 for any other type. */
size_t ds_kernel_type_size(enum ds_type t);

/* Bytes of one row of K elements of type t (any ggml type). */
size_t ds_kernel_row_bytes(enum ds_type t, int64_t K);

/* w (N,K) of type wt, row r -> dst (K) as float (F8_E4M3 unscaled). */
void ds_row_to_f32(float *dst, const void *w, enum ds_type wt, int64_t r, int64_t K);

/* w (N,K) of type wt with tile scales scale (ceil(N/block), ceil(K/block)),
 * row r -> dst (K):  dst[k] = w[r][k] * scale[r/block][k/block]  (DeepSeek's
 * FP8 weight_scale_inv). scale NULL: as ds_row_to_f32. */
void ds_row_to_f32_scaled(float *dst, const void *w, enum ds_type wt, const float *scale,
                          int64_t block, int64_t r, int64_t K);

/* x (T,K) with row stride ldx, w (N,K) rows of type wt -> y (T,N) with row
 * stride ldy:  y[t][n] = sum_k x[t][k] * w[n][k]  (y = x . w^T).
 * y must not overlap x. */
void ds_matmul(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
               enum ds_type wt, int64_t T, int64_t N, int64_t K);
void ds_matmul_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                   enum ds_type wt, int64_t T, int64_t N, int64_t K);

/* As ds_matmul with w (N,K) scaled per block x block tile: the weight is
 * W[n][k] = w[n][k] * scale[n/block][k/block], scale (ceil(N/block),
 * ceil(K/block)) row-major (an FP8 GGUF's "<name>_scale_inv"). Each row is
 * dequantized to float exactly as ds_fp8_dequant does, then summed as the F32
 * path sums, so an F8 model and its F32 conversion give the same logits up to
 * rounding. scale NULL: ds_matmul. wt is any type ds_matmul takes, or
 * DS_TYPE_F8_E4M3. */
void ds_matmul_scaled(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                      enum ds_type wt, const float *scale, int64_t block, int64_t T, int64_t N,
                      int64_t K);
void ds_matmul_scaled_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                          enum ds_type wt, const float *scale, int64_t block, int64_t T,
                          int64_t N, int64_t K);

/* ds_matmul_scaled in pieces, for callers that run several products in one
 * parallel region (the experts of a MoE layer): ds_matmul_prepare quantizes
 * x (T,K) once for a block-quantized wt into qx (T rows of
 * ds_matmul_qx_row(wt, K) bytes; both are no-ops / 0 for other types), then
 * ds_matmul_rows computes rows n0 <= n < n1 of y on the calling thread, each
 * exactly as ds_matmul_scaled does (for float types from x, for block types
 * from qx), so results do not depend on how rows are split. */
size_t ds_matmul_qx_row(enum ds_type wt, int64_t K);
void ds_matmul_prepare(void *qx, const float *x, int64_t ldx, enum ds_type wt, int64_t T,
                       int64_t K);
void ds_matmul_rows(float *y, int64_t ldy, const float *x, int64_t ldx, const void *qx,
                    const void *w, enum ds_type wt, const float *scale, int64_t block, int64_t T,
                    int64_t n0, int64_t n1, int64_t K);

/* x (T,D) row stride ldx, w (D) -> y (T,D) row stride ldy:
 * y = w * x / sqrt(mean(x^2) + eps). y may be x. */
void ds_rmsnorm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t T,
                int64_t D, float eps);
void ds_rmsnorm_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w,
                    int64_t T, int64_t D, float eps);

/* x (n) -> softmax(x) in place. */
void ds_softmax(float *x, int64_t n);
void ds_softmax_ref(float *x, int64_t n);

/* g (n), u (n) -> g = silu(g) * u, silu(z) = z / (1 + exp(-z)). */
void ds_silu_mul(float *g, const float *u, int64_t n);
void ds_silu_mul_ref(float *g, const float *u, int64_t n);

/* x (n_vec, stride): the first R (even) entries of each vector are rotated
 * as R/2 interleaved pairs (x[2i], x[2i+1]) by angle pos * freqs[i]:
 *   x[2i]   <- x[2i] cos - x[2i+1] sin
 *   x[2i+1] <- x[2i] sin + x[2i+1] cos
 * (DeepSeek model.py's view_as_complex convention, llama.cpp rope type 0). */
void ds_rope(float *x, int64_t n_vec, int64_t stride, int64_t R, int64_t pos,
             const double *freqs);
void ds_rope_ref(float *x, int64_t n_vec, int64_t stride, int64_t R, int64_t pos,
                 const double *freqs);

/* Absorbed MLA attention of H query heads at one position over n cached
 * positions:
 *   q (H,D) row stride ldq, kv (n,ldkv) rows [latent (L) | rope key ...] of
 *   which the first D are scored -> out (H,L) row stride ldo:
 *   p_h = softmax_j(scale * q_h . kv_j[0:D]),  out_h = sum_j p_h[j] kv_j[0:L].
 * s: scratch of H*n floats. */
void ds_mla_attend(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                   const float *kv, int64_t ldkv, int64_t n, int64_t D, int64_t L, float scale,
                   float *s);
void ds_mla_attend_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                       const float *kv, int64_t ldkv, int64_t n, int64_t D, int64_t L,
                       float scale, float *s);

/* As ds_mla_attend over a cache in 8 bits: row j at kv + j * ldkv (bytes)
 * holds its first D values (zero-padded to a multiple of 32, L <= D) as
 * ceil(D/32) q8_0 blocks, dequantized into row (ceil(D/32) * 32 floats of
 * scratch) as they are read. */
void ds_mla_attend_q8(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                      const void *kv, size_t ldkv, int64_t n, int64_t D, int64_t L, float scale,
                      float *s, float *row);
void ds_mla_attend_q8_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                          const void *kv, size_t ldkv, int64_t n, int64_t D, int64_t L,
                          float scale, float *s, float *row);

#endif
