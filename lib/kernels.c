/*
 * kernels.c - numeric kernels of the forward pass; see kernels_impl.h.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <stdbool.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "ds_quant.h"
#include "kernels_impl.h"
#include "quant_impl.h"

/* Work (multiply-adds) below which a kernel stays on one thread. */
#define PAR_WORK (1 << 15)

size_t ds_kernel_type_size(enum ds_type t)
{
    switch (t) {
    case DS_TYPE_F32:
        return 4;
    case DS_TYPE_F16:
    case DS_TYPE_BF16:
        return 2;
    case DS_TYPE_F8_E4M3:
        return 1;
    default:
        return 0;
    }
}

/* E4M3 -> float for every byte, built once. */
static float fp8_lut[256];
static pthread_once_t fp8_lut_once = PTHREAD_ONCE_INIT;

static void fp8_lut_init(void)
{
    for (int k = 0; k < 256; k++)
        fp8_lut[k] = ds_fp8_e4m3_to_f32((uint8_t)k);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* Vector conversions to float, exact like the scalar ones: F16 through F16C,
 * BF16 by widening and shifting; n a multiple of 16 (AVX-512) or 8 (AVX2). */
__attribute__((target("avx2,f16c,avx512f"))) static void bf16_to_f32_avx512(float *dst,
                                                                             const uint16_t *s,
                                                                             int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + i));
        _mm512_storeu_ps(dst + i,
                         _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
}

__attribute__((target("avx2,f16c"))) static void f16_to_f32_avx2(float *dst, const uint16_t *s,
                                                                  int64_t n, bool bf16)
{
    for (int64_t i = 0; i < n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
        __m256 f = bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                        : _mm256_cvtph_ps(h);
        _mm256_storeu_ps(dst + i, f);
    }
}

/* E4M3 bytes times sc -> float, 16 at a time, exact (the product is the
 * scalar code's): a normal's exponent is rebiased in the integer bits, a
 * subnormal is (float)mantissa * 2^-9, 0x7f is NaN. */
__attribute__((target("avx2,f16c,avx512f"))) static void fp8_to_f32_avx512(float *dst,
                                                                            const uint8_t *s,
                                                                            int64_t n, float sc)
{
    const __m512i m7f = _mm512_set1_epi32(0x7f), bias = _mm512_set1_epi32(120 << 23);
    const __m512 sub_scale = _mm512_set1_ps(0x1p-9f), vsc = _mm512_set1_ps(sc);
    for (int64_t i = 0; i < n; i += 16) {
        __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        __m512i m = _mm512_and_si512(b, m7f);
        __m512i sign = _mm512_slli_epi32(_mm512_andnot_si512(m7f, b), 24);
        __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(m, 20), bias);
        __m512i sub = _mm512_castps_si512(_mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_and_si512(m, _mm512_set1_epi32(7))), sub_scale));
        __m512i v = _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(m, _mm512_set1_epi32(8)),
                                            normal, sub);
        v = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(m, m7f), v,
                                    _mm512_set1_epi32(0x7fc00000));
        __m512 f = _mm512_castsi512_ps(_mm512_or_si512(v, sign));
        _mm512_storeu_ps(dst + i, sc == 1.0f ? f : _mm512_mul_ps(f, vsc));
    }
}

/* Converts a prefix of the n F16/BF16 values with vectors (AVX-512 for BF16;
 * F16 stays on AVX2's F16C, measured faster than vcvtph2ps on 512 bits, see
 * bench/matmul.c); returns how many. */
static int64_t f16_to_f32_simd(float *dst, const uint16_t *s, int64_t n, bool bf16)
{
    int level = ds_simd_level() >= 2 && !bf16 ? 1 : ds_simd_level();
    int64_t m = level >= 2 ? n - n % 16 : level == 1 ? n - n % 8 : 0;
    if (level >= 2)
        bf16_to_f32_avx512(dst, s, m);
    else if (level == 1)
        f16_to_f32_avx2(dst, s, m, bf16);
    return m;
}

/* The same for E4M3 bytes times sc (AVX-512 only). */
static int64_t fp8_to_f32_simd(float *dst, const uint8_t *s, int64_t n, float sc)
{
    int64_t m = ds_simd_level() >= 2 ? n - n % 16 : 0;
    if (m)
        fp8_to_f32_avx512(dst, s, m, sc);
    return m;
}
#else
static int64_t f16_to_f32_simd(float *dst, const uint16_t *s, int64_t n, bool bf16)
{
    (void)dst, (void)s, (void)n, (void)bf16;
    return 0;
}

static int64_t fp8_to_f32_simd(float *dst, const uint8_t *s, int64_t n, float sc)
{
    (void)dst, (void)s, (void)n, (void)sc;
    return 0;
}
#endif

/* n elements of a row of type t starting at element k0 -> dst. */
static void load_f32(float *dst, const void *row, enum ds_type t, int64_t k0, int64_t n)
{
    if (t == DS_TYPE_F8_E4M3) {
        const uint8_t *s = (const uint8_t *)row + k0;
        int64_t i = fp8_to_f32_simd(dst, s, n, 1.0f);
        if (i < n)
            pthread_once(&fp8_lut_once, fp8_lut_init);
        for (; i < n; i++)
            dst[i] = fp8_lut[s[i]];
    } else if (t == DS_TYPE_F32) {
        memcpy(dst, (const float *)row + k0, (size_t)n * sizeof(float));
    } else if (t == DS_TYPE_BF16) {
        const uint16_t *s = (const uint16_t *)row + k0;
        int64_t i = f16_to_f32_simd(dst, s, n, true);
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)
        typedef uint16_t v4u16 __attribute__((vector_size(8), aligned(2)));
        typedef uint32_t v4u32 __attribute__((vector_size(16)));
        for (; i + 4 <= n; i += 4) {
            v4u32 u = __builtin_convertvector(*(const v4u16 *)(s + i), v4u32) << 16;
            memcpy(dst + i, &u, sizeof(u));
        }
#endif
        for (; i < n; i++) {
            uint32_t u = (uint32_t)s[i] << 16;
            memcpy(dst + i, &u, sizeof(u));
        }
    } else {
        const uint16_t *s = (const uint16_t *)row + k0;
        for (int64_t i = f16_to_f32_simd(dst, s, n, false); i < n; i++)
            dst[i] = ds_f16_to_f32(s[i]);
    }
}

size_t ds_kernel_row_bytes(enum ds_type t, int64_t K)
{
    int64_t b = ds_type_block_size(t);
    return b > 0 ? (size_t)(K / b) * ds_type_block_bytes(t) : 0;
}

static inline const void *row_ptr(const void *w, enum ds_type t, int64_t r, int64_t K)
{
    return (const unsigned char *)w + (size_t)r * ds_kernel_row_bytes(t, K);
}

void ds_row_to_f32(float *dst, const void *w, enum ds_type wt, int64_t r, int64_t K)
{
    if (ds_quant_supported(wt))
        ds_dequantize_row(wt, row_ptr(w, wt, r, K), dst, K);
    else
        load_f32(dst, row_ptr(w, wt, r, K), wt, 0, K);
}

/* n E4M3 elements of row r from element k0, times their tile scales (scale
 * rows of ceil(K/block)) -> dst: what load_f32 then apply_scale give. */
static void load_fp8_scaled(float *dst, const void *row, const float *scale, int64_t block,
                            int64_t r, int64_t K, int64_t k0, int64_t n)
{
    const float *sr = scale + (r / block) * ((K + block - 1) / block);
    const uint8_t *s = (const uint8_t *)row + k0;
    for (int64_t i = 0; i < n;) {
        int64_t j = k0 + i, end = (j / block + 1) * block - k0;
        float sc = sr[j / block];
        if (end > n)
            end = n;
        i += fp8_to_f32_simd(dst + i, s + i, end - i, sc);
        if (i < end)
            pthread_once(&fp8_lut_once, fp8_lut_init);
        for (; i < end; i++)
            dst[i] = fp8_lut[s[i]] * sc;
    }
}

/* Tile scales of elements k0 .. k0+n-1 of row r applied in place:
 * dst[i] *= scale[r/block][(k0+i)/block], scale rows of ceil(K/block). */
static void apply_scale(float *dst, const float *scale, int64_t block, int64_t r, int64_t K,
                        int64_t k0, int64_t n)
{
    const float *sr = scale + (r / block) * ((K + block - 1) / block);
    for (int64_t i = 0; i < n;) {
        /* one tile's stretch at a time */
        int64_t j = k0 + i, end = (j / block + 1) * block - k0;
        float sc = sr[j / block];
        if (end > n)
            end = n;
        for (; i < end; i++)
            dst[i] *= sc;
    }
}

void ds_row_to_f32_scaled(float *dst, const void *w, enum ds_type wt, const float *scale,
                          int64_t block, int64_t r, int64_t K)
{
    ds_row_to_f32(dst, w, wt, r, K);
    if (scale)
        apply_scale(dst, scale, block, r, K, 0, K);
}

/* Block-quantized weights: the activations are quantized to the weight
 * type's activation type (q8_0, q8_1 or q8_K) once per row of x, then each output
 * is one quantized dot product, as llama.cpp computes. */
size_t ds_matmul_qx_row(enum ds_type wt, int64_t K)
{
    return ds_quant_supported(wt) ? ds_kernel_row_bytes(ds_quant_vec_type(wt), K) : 0;
}

void ds_matmul_prepare(void *qx, const float *x, int64_t ldx, enum ds_type wt, int64_t T,
                       int64_t K)
{
    if (!ds_quant_supported(wt))
        return;
    enum ds_type vt = ds_quant_vec_type(wt);
    size_t qrow = ds_kernel_row_bytes(vt, K);
    for (int64_t t = 0; t < T; t++)
        ds_quantize_vec(vt, x + t * ldx, (unsigned char *)qx + (size_t)t * qrow, K);
}

/* rows n0..n1 of y = qx . w^T: one 2-D tile product (weight rows x all T
 * rows of qx; y[t][n] is out[r = n - n0][c = t]) */
static void quant_rows(float *y, int64_t ldy, const void *qx, const void *w, enum ds_type wt,
                       int64_t T, int64_t n0, int64_t n1, int64_t K)
{
    size_t qrow = ds_matmul_qx_row(wt, K), wrow = ds_kernel_row_bytes(wt, K);
    ds_quant_dot_tile(wt, (const unsigned char *)w + (size_t)n0 * wrow, wrow, n1 - n0, qx, qrow, T,
                      K, y + n0, 1, ldy);
}

/* ---- matmul ----------------------------------------------------------------------- */

/* Weights are processed in blocks of MM_NB rows and chunks of MM_KC columns,
 * converted to float on the stack once per chunk and reused for all T rows of
 * x. Each dot product keeps MM_L lanes (lane j sums the k = j mod MM_L terms),
 * added pairwise at the end, so the compiler can use vector registers without
 * reassociating a sum; the plain-C fallback computes the very same sums. */
#define MM_NB 4
/* Rows per parallel work item of a block-quantized product with T > 1: the
 * tile kernel repacks the activations once per item. */
#define MM_QNB 64
#define MM_KC 512
#define MM_L 8

#define HSUM8(a) (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])))

#if defined(__GNUC__)
/* 4-float vectors (SSE/NEON width, native on every 64-bit target), two per
 * accumulator: lo holds lanes 0-3, hi lanes 4-7. */
typedef float v4f __attribute__((vector_size(4 * sizeof(float)), aligned(sizeof(float))));
#define V4(p) (*(const v4f *)(p))
#define HSUM44(lo, hi) (((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3])))

/* s[r] = sum over k < kv of x[k] * w_r[k], kv a multiple of MM_L */
static inline void dot4(float *s, const float *x, const float *const *w, int64_t kv)
{
    v4f a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    for (int64_t k = 0; k < kv; k += MM_L) {
        v4f xl = V4(x + k), xh = V4(x + k + 4);
        a0 += xl * V4(w0 + k);
        b0 += xh * V4(w0 + k + 4);
        a1 += xl * V4(w1 + k);
        b1 += xh * V4(w1 + k + 4);
        a2 += xl * V4(w2 + k);
        b2 += xh * V4(w2 + k + 4);
        a3 += xl * V4(w3 + k);
        b3 += xh * V4(w3 + k + 4);
    }
    s[0] = HSUM44(a0, b0);
    s[1] = HSUM44(a1, b1);
    s[2] = HSUM44(a2, b2);
    s[3] = HSUM44(a3, b3);
}

/* sum over k < kv of x[k] * w[k], kv a multiple of MM_L */
static inline float dot1(const float *x, const float *w, int64_t kv)
{
    v4f a = {0}, b = {0};
    for (int64_t k = 0; k < kv; k += MM_L) {
        a += V4(x + k) * V4(w + k);
        b += V4(x + k + 4) * V4(w + k + 4);
    }
    return HSUM44(a, b);
}
#else
static inline float dot1(const float *x, const float *w, int64_t kv)
{
    float a[MM_L] = {0};
    for (int64_t k = 0; k < kv; k += MM_L)
        for (int j = 0; j < MM_L; j++)
            a[j] += x[k + j] * w[k + j];
    return HSUM8(a);
}

static inline void dot4(float *s, const float *x, const float *const *w, int64_t kv)
{
    float a[MM_NB][MM_L] = {{0}};
    for (int64_t k = 0; k < kv; k += MM_L)
        for (int r = 0; r < MM_NB; r++)
            for (int j = 0; j < MM_L; j++)
                a[r][j] += x[k + j] * w[r][k + j];
    for (int r = 0; r < MM_NB; r++)
        s[r] = HSUM8(a[r]);
}
#endif

static void mm_block(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                     enum ds_type wt, const float *scale, int64_t block, int64_t T, int64_t n0,
                     int64_t nb, int64_t K)
{
    float buf[MM_NB][MM_KC];
    const float *wr[MM_NB];

    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < nb; r++)
            y[t * ldy + n0 + r] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += MM_KC) {
        int64_t kc = K - k0 < MM_KC ? K - k0 : MM_KC;
        int64_t kv = kc - kc % MM_L;
        for (int64_t r = 0; r < MM_NB; r++) {
            int64_t rr = r < nb ? r : nb - 1; // pad the block with its last row
            if (wt == DS_TYPE_F32 && !scale) {
                wr[r] = (const float *)row_ptr(w, wt, n0 + rr, K) + k0;
            } else {
                if (r < nb && scale && wt == DS_TYPE_F8_E4M3) {
                    load_fp8_scaled(buf[r], row_ptr(w, wt, n0 + r, K), scale, block, n0 + r, K,
                                    k0, kc);
                } else if (r < nb) {
                    load_f32(buf[r], row_ptr(w, wt, n0 + r, K), wt, k0, kc);
                    if (scale)
                        apply_scale(buf[r], scale, block, n0 + r, K, k0, kc);
                }
                wr[r] = buf[rr];
            }
        }
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * ldx + k0;
            float s[MM_NB];
            dot4(s, xt, wr, kv);
            for (int64_t k = kv; k < kc; k++) {
                float xv = xt[k];
                for (int r = 0; r < MM_NB; r++)
                    s[r] += xv * wr[r][k];
            }
            for (int64_t r = 0; r < nb; r++)
                y[t * ldy + n0 + r] += s[r];
        }
    }
}

void ds_matmul(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
               enum ds_type wt, int64_t T, int64_t N, int64_t K)
{
    ds_matmul_scaled(y, ldy, x, ldx, w, wt, NULL, 0, T, N, K);
}

void ds_matmul_rows(float *y, int64_t ldy, const float *x, int64_t ldx, const void *qx,
                    const void *w, enum ds_type wt, const float *scale, int64_t block, int64_t T,
                    int64_t n0, int64_t n1, int64_t K)
{
    if (K == 0) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t n = n0; n < n1; n++)
                y[t * ldy + n] = 0.0f;
        return;
    }
    if (ds_quant_supported(wt)) {
        assert(!scale);
        quant_rows(y, ldy, qx, w, wt, T, n0, n1, K);
        return;
    }
    for (int64_t b = n0; b < n1; b += MM_NB)
        mm_block(y, ldy, x, ldx, w, wt, scale, block, T, b, n1 - b < MM_NB ? n1 - b : MM_NB, K);
}

void ds_matmul_scaled(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                      enum ds_type wt, const float *scale, int64_t block, int64_t T, int64_t N,
                      int64_t K)
{
    const int64_t nbr = ds_quant_supported(wt) && T > 1 ? MM_QNB : MM_NB;
    int64_t nblk = (N + nbr - 1) / nbr;
    double work = (double)T * (double)N * (double)K;
    unsigned char *qx = NULL;
    (void)work;

    assert(!scale || block > 0);
    if (ds_quant_supported(wt) && K > 0) {
        qx = malloc((size_t)T * ds_matmul_qx_row(wt, K) + 1);
        if (!qx) { // no memory: compute from dequantized rows instead
            ds_matmul_ref(y, ldy, x, ldx, w, wt, T, N, K);
            return;
        }
        ds_matmul_prepare(qx, x, ldx, wt, T, K);
    }
    DS_OMP(omp parallel for schedule(static) if (work >= PAR_WORK))
    for (int64_t b = 0; b < nblk; b++) {
        int64_t n0 = b * nbr;
        ds_matmul_rows(y, ldy, x, ldx, qx, w, wt, scale, block, T, n0, N - n0 < nbr ? N : n0 + nbr,
                       K);
    }
    free(qx);
}

static inline float elem_f32(const void *w, enum ds_type t, size_t i)
{
    if (t == DS_TYPE_F32)
        return ((const float *)w)[i];
    if (t == DS_TYPE_BF16)
        return ds_bf16_to_f32(((const uint16_t *)w)[i]);
    if (t == DS_TYPE_F8_E4M3)
        return ds_fp8_e4m3_to_f32(((const uint8_t *)w)[i]);
    return ds_f16_to_f32(((const uint16_t *)w)[i]);
}

void ds_matmul_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                   enum ds_type wt, int64_t T, int64_t N, int64_t K)
{
    if (ds_quant_supported(wt)) {
        /* the dequantized weights in double: what matmul_quant approximates
         * (its activations are quantized to 8 bits) */
        float *row = malloc((size_t)K * sizeof(float) + 1);
        if (!row)
            return;
        for (int64_t n = 0; n < N; n++) {
            ds_dequantize_row_ref(wt, row_ptr(w, wt, n, K), row, K);
            for (int64_t t = 0; t < T; t++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)x[t * ldx + k] * row[k];
                y[t * ldy + n] = (float)s;
            }
        }
        free(row);
        return;
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)x[t * ldx + k] * elem_f32(w, wt, (size_t)(n * K + k));
            y[t * ldy + n] = (float)s;
        }
}

void ds_matmul_scaled_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w,
                          enum ds_type wt, const float *scale, int64_t block, int64_t T,
                          int64_t N, int64_t K)
{
    if (!scale) {
        ds_matmul_ref(y, ldy, x, ldx, w, wt, T, N, K);
        return;
    }
    int64_t sk = (K + block - 1) / block;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                float wv = elem_f32(w, wt, (size_t)(n * K + k)) * scale[n / block * sk + k / block];
                s += (double)x[t * ldx + k] * wv;
            }
            y[t * ldy + n] = (float)s;
        }
}

/* ---- rmsnorm ---------------------------------------------------------------------- */

void ds_rmsnorm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t T,
                int64_t D, float eps)
{
    double work = (double)T * (double)D;
    (void)work;
    DS_OMP(omp parallel for schedule(static) if (work >= PAR_WORK))
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * ldx;
        float *yt = y + t * ldy;
        double ss = 0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)xt[i] * xt[i];
        float r = (float)(1.0 / sqrt(ss / (double)D + eps));
        for (int64_t i = 0; i < D; i++)
            yt[i] = xt[i] * r * w[i];
    }
}

void ds_rmsnorm_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w,
                    int64_t T, int64_t D, float eps)
{
    for (int64_t t = 0; t < T; t++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++)
            ss += (double)x[t * ldx + i] * x[t * ldx + i];
        double r = 1.0 / sqrt(ss / (double)D + (double)eps);
        for (int64_t i = 0; i < D; i++)
            y[t * ldy + i] = (float)((double)x[t * ldx + i] * r * w[i]);
    }
}

/* ---- softmax, silu ----------------------------------------------------------------- */

void ds_softmax(float *x, int64_t n)
{
    float mx = -INFINITY;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void ds_softmax_ref(float *x, int64_t n)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(exp((double)x[i] - mx) / sum);
}

void ds_silu_mul(float *g, const float *u, int64_t n)
{
    DS_OMP(omp parallel for schedule(static) if (n >= PAR_WORK))
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void ds_silu_mul_ref(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double z = g[i];
        g[i] = (float)(z / (1.0 + exp(-z)) * u[i]);
    }
}

/* ---- rope ---------------------------------------------------------------------------- */

/* The angles are computed once per call (in double: pos * freq reaches 1e5
 * radians at long contexts) and applied to every vector. */
void ds_rope(float *x, int64_t n_vec, int64_t stride, int64_t R, int64_t pos,
             const double *freqs)
{
    enum { MAXP = 256 };
    float cs[MAXP], sn[MAXP];
    for (int64_t i0 = 0; i0 < R / 2; i0 += MAXP) {
        int64_t np = R / 2 - i0 < MAXP ? R / 2 - i0 : MAXP;
        for (int64_t i = 0; i < np; i++) {
            double a = (double)pos * freqs[i0 + i];
            cs[i] = (float)cos(a);
            sn[i] = (float)sin(a);
        }
        for (int64_t v = 0; v < n_vec; v++) {
            float *p = x + v * stride + 2 * i0;
            for (int64_t i = 0; i < np; i++) {
                float a = p[2 * i], b = p[2 * i + 1];
                p[2 * i] = a * cs[i] - b * sn[i];
                p[2 * i + 1] = a * sn[i] + b * cs[i];
            }
        }
    }
}

void ds_rope_ref(float *x, int64_t n_vec, int64_t stride, int64_t R, int64_t pos,
                 const double *freqs)
{
    for (int64_t v = 0; v < n_vec; v++)
        for (int64_t i = 0; i < R / 2; i++) {
            double th = (double)pos * freqs[i];
            double a = x[v * stride + 2 * i], b = x[v * stride + 2 * i + 1];
            x[v * stride + 2 * i] = (float)(a * cos(th) - b * sin(th));
            x[v * stride + 2 * i + 1] = (float)(a * sin(th) + b * cos(th));
        }
}

/* ---- absorbed MLA attention ---------------------------------------------------------- */

#if defined(__GNUC__) && defined(__x86_64__)
/* 8-float vectors for the AVX2 build of the attention (no FMA: the lanes and
 * their final sum are those of dot1's two 4-float halves, bit for bit). */
typedef float v8f __attribute__((vector_size(8 * sizeof(float)), aligned(sizeof(float))));
#define V8(p) (*(const v8f *)(p))
#define HAVE_WIDE 1

static inline __attribute__((always_inline)) float dot8(const float *x, const float *w,
                                                        int64_t kv)
{
    v8f a = {0};
    for (int64_t k = 0; k < kv; k += MM_L)
        a += V8(x + k) * V8(w + k);
    return HSUM8(a);
}

/* dot8 of 8 rows x (ldx apart) with w at once: 8 independent chains, each
 * the same as dot8's. */
static inline __attribute__((always_inline)) void dot8x8(float *s, const float *x, int64_t ldx,
                                                         const float *w, int64_t kv)
{
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (int64_t k = 0; k < kv; k += MM_L) {
        const v8f r = V8(w + k);
        a0 += V8(x + k) * r;
        a1 += V8(x + ldx + k) * r;
        a2 += V8(x + 2 * ldx + k) * r;
        a3 += V8(x + 3 * ldx + k) * r;
        a4 += V8(x + 4 * ldx + k) * r;
        a5 += V8(x + 5 * ldx + k) * r;
        a6 += V8(x + 6 * ldx + k) * r;
        a7 += V8(x + 7 * ldx + k) * r;
    }
    s[0] = HSUM8(a0), s[1] = HSUM8(a1), s[2] = HSUM8(a2), s[3] = HSUM8(a3);
    s[4] = HSUM8(a4), s[5] = HSUM8(a5), s[6] = HSUM8(a6), s[7] = HSUM8(a7);
}

/* o[0..L) += p * r[0..L) */
static inline __attribute__((always_inline)) void axpy8(float *o, float p, const float *r,
                                                        int64_t L)
{
    int64_t k = 0;
    for (; k + 8 <= L; k += 8) {
        v8f v = V8(o + k) + p * V8(r + k);
        memcpy(o + k, &v, sizeof(v));
    }
    for (; k < L; k++)
        o[k] += p * r[k];
}
/* out[h][k0 .. k0 + 16) += sum over positions j0 <= j < j1 of s[h][j] r_j[k0 ..],
 * heads h < nh (nh: 1 or 4): the 4 x 16 sums stay in registers while the float
 * rows r_j (ldkv bytes apart) stream by, each added in position order as
 * axpy8 does it (the same roundings, without a store per position). */
static inline __attribute__((always_inline)) void wsum16(float *out, int64_t ldo, const float *s,
                                                         int64_t n, const unsigned char *kv,
                                                         size_t ldkv, int nh, int64_t k0,
                                                         int64_t j0, int64_t j1)
{
    /* named registers: an indexed array of vectors is kept in memory */
    v8f a0 = V8(out + k0), a1 = V8(out + k0 + 8), b0 = a0, b1 = a1, c0 = a0, c1 = a1, d0 = a0,
        d1 = a1;
    if (nh == 4) {
        b0 = V8(out + ldo + k0), b1 = V8(out + ldo + k0 + 8);
        c0 = V8(out + 2 * ldo + k0), c1 = V8(out + 2 * ldo + k0 + 8);
        d0 = V8(out + 3 * ldo + k0), d1 = V8(out + 3 * ldo + k0 + 8);
    }
    for (int64_t j = j0; j < j1; j++) {
        const float *r = (const float *)(kv + (size_t)j * ldkv) + k0;
        const v8f r0 = V8(r), r1 = V8(r + 8);
        const float p = s[j];
        a0 += p * r0, a1 += p * r1;
        if (nh == 4) {
            const float pb = s[n + j], pc = s[2 * n + j], pd = s[3 * n + j];
            b0 += pb * r0, b1 += pb * r1, c0 += pc * r0, c1 += pc * r1, d0 += pd * r0,
                d1 += pd * r1;
        }
    }
    const v8f v[8] = {a0, a1, b0, b1, c0, c1, d0, d1};
    for (int h = 0; h < nh; h++)
        memcpy(out + h * ldo + k0, &v[2 * h], 2 * sizeof(v8f));
}

#else
#define HAVE_WIDE 0
#define dot8 dot1
static inline void dot8x8(float *s, const float *x, int64_t ldx, const float *w, int64_t kv)
{
    for (int i = 0; i < 8; i++)
        s[i] = dot1(x + i * ldx, w, kv);
}
static inline void axpy8(float *o, float p, const float *r, int64_t L)
{
    for (int64_t k = 0; k < L; k++)
        o[k] += p * r[k];
}
static inline void wsum16(float *out, int64_t ldo, const float *s, int64_t n,
                          const unsigned char *kv, size_t ldkv, int nh, int64_t k0, int64_t j0,
                          int64_t j1)
{
    for (int64_t j = j0; j < j1; j++)
        for (int h = 0; h < nh; h++)
            axpy8(out + h * ldo + k0, s[h * n + j], (const float *)(kv + (size_t)j * ldkv) + k0,
                  16);
}
#endif

/* Scores: positions outer, heads inner, so each cached row is read once for
 * all H heads (it stays in L1); wide: 8 heads at a time. Weighted sum: the
 * same order for a q8_0 cache (rows dequantized into row first); for a float
 * cache, wide, in 4-head x 16-column register tiles over 64 positions at a
 * time (wsum16). Rows are ldkv bytes apart. wide: 8-float vectors (compiled
 * for AVX2 below); every output takes the same operations in the same order
 * either way, so the results are the same bits. */
static inline __attribute__((always_inline)) void
attend_body(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
            const unsigned char *kv, size_t ldkv, bool q8, int64_t n, int64_t D, int64_t L,
            float scale, float *s, float *row, bool wide)
{
    int64_t dv = D - D % MM_L, Dq = (D + 31) / 32 * 32;
    for (int64_t j = 0; j < n; j++) {
        const float *r = (const float *)(kv + (size_t)j * ldkv);
        if (q8) {
            ds_dequantize_row(DS_TYPE_Q8_0, kv + (size_t)j * ldkv, row, Dq);
            r = row;
        }
        float acc8[8];
        for (int64_t h = 0; h < H; h++) {
            const float *qh = q + h * ldq;
            float acc;
            if (!wide) {
                acc = dot1(qh, r, dv);
            } else if (h - h % 8 + 8 <= H) { /* 8 heads at once: 8 chains in flight */
                if (h % 8 == 0)
                    dot8x8(acc8, qh, ldq, r, dv);
                acc = acc8[h % 8];
            } else {
                acc = dot8(qh, r, dv);
            }
            for (int64_t k = dv; k < D; k++)
                acc += qh[k] * r[k];
            s[h * n + j] = acc * scale;
        }
    }
    for (int64_t h = 0; h < H; h++) {
        ds_softmax(s + h * n, n);
        memset(out + h * ldo, 0, (size_t)L * sizeof(float));
    }
    int64_t k1 = 0; /* outputs k < k1 are done */
    if (wide && !q8) {
        /* float rows: the weighted sum in tiles of 4 heads x 16 columns, over
         * 64 positions at a time (their rows stay in cache) */
        k1 = L - L % 16;
        for (int64_t j0 = 0; j0 < n; j0 += 64) {
            const int64_t j1 = n - j0 < 64 ? n : j0 + 64;
            for (int64_t h = 0; h < H; h += 4) {
                const float *sh = s + h * n;
                for (int64_t k = 0; k < k1; k += 16) {
                    if (H - h >= 4)
                        wsum16(out + h * ldo, ldo, sh, n, kv, ldkv, 4, k, j0, j1);
                    else
                        for (int64_t i = 0; i < H - h; i++)
                            wsum16(out + (h + i) * ldo, ldo, sh + i * n, n, kv, ldkv, 1, k, j0, j1);
                }
            }
        }
        if (k1 == L)
            return;
    }
    for (int64_t j = 0; j < n; j++) {
        const float *r = (const float *)(kv + (size_t)j * ldkv);
        if (q8) {
            ds_dequantize_row(DS_TYPE_Q8_0, kv + (size_t)j * ldkv, row, (L + 31) / 32 * 32);
            r = row;
        }
        for (int64_t h = 0; h < H; h++) {
            float p = s[h * n + j], *o = out + h * ldo;
            if (wide) {
                axpy8(o + k1, p, r + k1, L - k1);
            } else {
                for (int64_t k = 0; k < L; k++)
                    o[k] += p * r[k];
            }
        }
    }
}

#if HAVE_WIDE
__attribute__((target("avx2"))) static void
attend_avx2(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
            const unsigned char *kv, size_t ldkv, bool q8, int64_t n, int64_t D, int64_t L,
            float scale, float *s, float *row)
{
    attend_body(out, ldo, q, ldq, H, kv, ldkv, q8, n, D, L, scale, s, row, true);
}
#endif

static void attend_rows(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                        const unsigned char *kv, size_t ldkv, bool q8, int64_t n, int64_t D,
                        int64_t L, float scale, float *s, float *row)
{
#if HAVE_WIDE
    // AVX2 unless the CPU lacks it or the SIMD level is capped to scalar
    if (strcmp(ds_quant_simd(), "scalar") != 0) {
        attend_avx2(out, ldo, q, ldq, H, kv, ldkv, q8, n, D, L, scale, s, row);
        return;
    }
#endif
    attend_body(out, ldo, q, ldq, H, kv, ldkv, q8, n, D, L, scale, s, row, false);
}

void ds_mla_attend(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                   const float *kv, int64_t ldkv, int64_t n, int64_t D, int64_t L, float scale,
                   float *s)
{
    attend_rows(out, ldo, q, ldq, H, (const unsigned char *)kv, (size_t)ldkv * sizeof(float),
                false, n, D, L, scale, s, NULL);
}

void ds_mla_attend_q8(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                      const void *kv, size_t ldkv, int64_t n, int64_t D, int64_t L, float scale,
                      float *s, float *row)
{
    attend_rows(out, ldo, q, ldq, H, kv, ldkv, true, n, D, L, scale, s, row);
}

void ds_mla_attend_q8_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                          const void *kv, size_t ldkv, int64_t n, int64_t D, int64_t L,
                          float scale, float *s, float *row)
{
    int64_t Dq = (D + 31) / 32 * 32;
    float *f = malloc((size_t)(n > 0 ? n : 1) * (size_t)Dq * sizeof(float));
    (void)row;
    if (!f)
        return;
    for (int64_t j = 0; j < n; j++)
        ds_dequantize_row_ref(DS_TYPE_Q8_0, (const unsigned char *)kv + (size_t)j * ldkv,
                              f + j * Dq, Dq);
    ds_mla_attend_ref(out, ldo, q, ldq, H, f, Dq, n, D, L, scale, s);
    free(f);
}

void ds_mla_attend_ref(float *out, int64_t ldo, const float *q, int64_t ldq, int64_t H,
                       const float *kv, int64_t ldkv, int64_t n, int64_t D, int64_t L,
                       float scale, float *s)
{
    for (int64_t h = 0; h < H; h++) {
        float *sh = s + h * n;
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t k = 0; k < D; k++)
                acc += (double)q[h * ldq + k] * kv[j * ldkv + k];
            sh[j] = (float)(acc * scale);
        }
        ds_softmax_ref(sh, n);
        for (int64_t k = 0; k < L; k++) {
            double acc = 0;
            for (int64_t j = 0; j < n; j++)
                acc += (double)sh[j] * kv[j * ldkv + k];
            out[h * ldo + k] = (float)acc;
        }
    }
}
