/*
 * quant_legacy.c - the 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * IQ4_NL, and the Q8_0 and Q8_1 activation formats.
 *
 * Block layouts are ggml's (ggml-common.h), little-endian, read and written
 * byte by byte so that rows need no alignment:
 *
 *   Q4_0   18 bytes  d f16, qs[16]                 x = d * (q - 8)
 *   Q4_1   20 bytes  d f16, m f16, qs[16]          x = d * q + m
 *   Q5_0   22 bytes  d f16, qh[4], qs[16]          x = d * (q - 16)
 *   Q5_1   24 bytes  d f16, m f16, qh[4], qs[16]   x = d * q + m
 *   Q8_0   34 bytes  d f16, int8 qs[32]            x = d * q
 *   IQ4_NL 18 bytes  d f16, qs[16]                 x = d * kvalues[q]
 *   Q8_1   36 bytes  d f16, s f16, int8 qs[32]     x = d * q, s = d * sum(q)
 *
 * 4-bit quants: byte j holds element j in its low nibble and element j + 16
 * in its high nibble. Q5: bit j of qh (a little-endian u32) is the fifth bit
 * of element j.
 *
 * Without an importance matrix the quantizers reproduce llama.cpp byte for
 * byte: quantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0}_ref, and for IQ4_NL what
 * ggml_quantize_chunk (llama-quantize) writes, a weighted scale search
 * (llama.cpp's quantize_row_iq4_nl_ref, its from_float_ref, is a cheaper
 * one-pass variant with a larger error).
 * With an imatrix they use llama.cpp's weighted searches (weights
 * imatrix * sqrt(sigma2 + x^2)), then round the scale to f16 and requantize
 * every element to its nearest level under that stored scale, which can only
 * lower the error. Q8_0 gets the same kind of weighted scale search (llama.cpp
 * ignores the imatrix for Q8_0).
 *
 * Dequantization and dot products compute exactly what ggml's scalar
 * dequantize_row_* and ggml_vec_dot_*_generic compute, in the same order.
 * Q4_1 and Q5_1 are dotted with Q8_1 activations, as in ggml: the min term
 * is m * s with Q8_1's stored f16 s; the other types with Q8_0.
 *
 * The AVX2 (+F16C) kernels, chosen at run time through ds_simd_level() (the
 * AVX-512 level uses them for all but the dot products, which have AVX-512
 * VNNI versions, eight blocks at a time), are bit-exact twins of the scalar
 * _ref ones:
 * dequantization, dot products (integer sums in SIMD, then the block scales
 * in ggml's order), quantization without imatrix, and IQ4_NL quantization with
 * or without (eight blocks at a time, one per lane). The imatrix searches of
 * the other types are scalar only. For matrix products the AVX-512 level also
 * has 2-D register tiles, 8 weight rows x 8 activation rows
 * (ds_quant_dot_tile; see "2-D tiles" below), bit-exact with the single dot.
 */
#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DS_QL_X86 1
#include <immintrin.h>
// No "fma": no kernel here wants a fused multiply-add, and leaving it out
// keeps the compiler from contracting a*b + c, which would break exactness.
#define DS_AVX2 __attribute__((target("avx2,f16c")))
#define DS_AVX512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define DS_QL_X86 0
#endif

#include "quant_impl.h"
#include "ds_banned.h"

#if defined(__clang__)
// Bit-exactness with ggml needs a*b + c rounded twice, never fused.
#pragma STDC FP_CONTRACT OFF
#endif

#define QK 32
#define GROUP_MAX_EPS DS_QUANT_GROUP_MAX_EPS

enum {
    Q4_0_BYTES = 18,
    Q4_1_BYTES = 20,
    Q5_0_BYTES = 22,
    Q5_1_BYTES = 24,
    Q8_0_BYTES = 34,
    Q8_1_BYTES = 36,
    IQ4_NL_BYTES = 18
};

static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};

/* ---- little-endian fields ---------------------------------------------- */

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

static inline float ld_f16(const uint8_t *p)
{
    return ds_f16_to_f32(rd16(p));
}

/* Stores f as f16 at p and returns the stored value as a float. */
static inline float st_f16(uint8_t *p, float f)
{
    uint16_t h = ds_f32_to_f16(f);
    wr16(p, h);
    return ds_f16_to_f32(h);
}

static inline int imin(int a, int b)
{
    return a < b ? a : b;
}

static inline int imax(int a, int b)
{
    return a > b ? a : b;
}

/* nearest_int of f clamped to [lo, hi] first (safe for any finite f). */
static inline int nearest_clamped(float f, int lo, int hi)
{
    if (f < (float)lo)
        return lo;
    if (f > (float)hi)
        return hi;
    return ds_nearest_int(f);
}

/* Index of the entry of val (n sorted values, n a power of two) nearest to
 * x; ties go to the larger entry. Compares 2x with val[i-1] + val[i], which
 * is exact. */
static inline int best_index_int8(int n, const int8_t *val, float x)
{
    const float x2 = x + x;
    int idx = 0;
    for (int step = n >> 1; step > 0; step >>= 1) {
        int j = idx + step;
        if (x2 >= (float)(val[j - 1] + val[j]))
            idx = j;
    }
    return idx;
}

/* Mean square of a row: the sigma2 of llama.cpp's row-level weights. */
static float row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0.0f;
    for (int64_t j = 0; j < n; j++)
        sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

/* weight (QK) <- qw * sqrt(sigma2 + x^2) */
static void make_weights(const float *x, const float *qw, float sigma2, float *weight)
{
    for (int j = 0; j < QK; j++)
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* Packs 32 levels (< 16) as nibbles: byte j = L[j] | L[j + 16] << 4. */
static void pack_nibbles(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(L[j] | L[j + 16] << 4);
}

/* Packs 32 five-bit levels into qh (bit j = bit 4 of L[j]) and nibbles. */
static void pack_q5(const uint8_t *L, uint8_t *qh, uint8_t *qs)
{
    uint32_t h = 0;
    for (int j = 0; j < QK; j++)
        h |= (uint32_t)((L[j] >> 4) & 1) << j;
    wr32(qh, h);
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((L[j] & 0x0f) | (L[j + 16] & 0x0f) << 4);
}

/* ---- weighted scale searches (llama.cpp's algorithms) ------------------- */

/*
 * Levels l in [0, nmax], x ~ scale * l + min with min <= 0: tries nstep + 1
 * inverse scales (rmin + rdelta * is + nmax) / (max - min), fits scale and
 * min by weighted least squares for each and keeps the smallest weighted
 * squared error (llama.cpp's make_qkx3_quants, use_mad false).
 * x (n), w (n) -> L (n), *neg_min = -min; returns the scale. Laux (n) scratch.
 */
static float search_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                              float *neg_min, uint8_t *Laux, float rmin, float rdelta,
                              int nstep)
{
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f)
        min = 0.0f;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = ds_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * (float)L[i] + min - x[i];
        best_err += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            // min is the best fit so far and may sit near max: guard v
            float v = iscale * (x[i] - min);
            int l = v > 0.0f ? ds_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0.0f;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if (err < best_err) {
                memcpy(L, Laux, (size_t)n);
                best_err = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

/* Requantizes x (QK) to the nearest levels under the stored (f16) scale d:
 * symmetric (L = l + nmax, l in [-nmax, nmax - 1]) or with min m. */
static void requant_sym(const float *x, float d, int nmax, uint8_t *L)
{
    if (d == 0.0f)
        return;
    for (int j = 0; j < QK; j++)
        L[j] = (uint8_t)(nearest_clamped(x[j] / d, -nmax, nmax - 1) + nmax);
}

static void requant_min(const float *x, float d, float m, int nmax, uint8_t *L)
{
    if (d == 0.0f)
        return;
    for (int j = 0; j < QK; j++)
        L[j] = (uint8_t)nearest_clamped((x[j] - m) / d, 0, nmax);
}

/* ======================================================================== */
/* Q4_0                                                                      */
/* ======================================================================== */

/* Per type: quantize x (n), imatrix (n) or NULL -> row (n / 32 blocks);
 * dequantize row -> y (n); dot row (n) . qx (n, Q8_0; Q8_1 for Q4_1 and Q5_1)
 * -> float. */

/* x (32) -> one block; quantize_row_q4_0_ref */
static void q4_0_block_plain(const float *x, uint8_t *b)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    st_f16(b, d);
    for (int j = 0; j < 16; j++) {
        const float x0 = x[j] * id;
        const float x1 = x[j + 16] * id;
        const int q0 = imin(15, (int)(x0 + 8.5f));
        const int q1 = imin(15, (int)(x1 + 8.5f));
        b[2 + j] = (uint8_t)(q0 | q1 << 4);
    }
}

/* x (n), qw (n) or NULL -> dst (n / 32 blocks) */
static void q4_0_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    uint8_t *y = dst;
    uint8_t L[QK];
    float weight[QK];
    assert(n % QK == 0);
    if (!qw) {
        for (int64_t i = 0; i < n / QK; i++)
            q4_0_block_plain(x + i * QK, y + i * Q4_0_BYTES);
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        uint8_t *b = y + i * Q4_0_BYTES;
        make_weights(xb, qw + i * QK, sigma2, weight);
        float d = ds_quant_search_sym(QK, 8, xb, (int8_t *)L, weight);
        requant_sym(xb, st_f16(b, d), 8, L);
        pack_nibbles(L, b + 2);
    }
}

/* row (n) -> y (n) */
static void q4_0_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q4_0_BYTES, y += QK) {
        const float d = ld_f16(b);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
        }
    }
}

/* row (n, Q4_0) . qx (n, Q8_0) */
static float q4_0_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += Q4_0_BYTES, y += Q8_0_BYTES) {
        const int8_t *q8 = (const int8_t *)(y + 2);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            sumi0 += ((x[2 + j] & 0x0f) - 8) * q8[j];
            sumi1 += ((x[2 + j] >> 4) - 8) * q8[j + 16];
        }
        sumf += (float)(sumi0 + sumi1) * ld_f16(x) * ld_f16(y);
    }
    return sumf;
}

/* ======================================================================== */
/* Q4_1                                                                      */
/* ======================================================================== */

/* The value of the first element equal to the block's min (or max): only
 * the sign of a zero can differ from a vector min/max. */
static void min_max_plain(const float *x, float *pmin, float *pmax)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    *pmin = min;
    *pmax = max;
}

/* quantize_row_q4_1_ref */
static void q4_1_block_plain(const float *x, uint8_t *b)
{
    float min, max;
    min_max_plain(x, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    st_f16(b, d);
    st_f16(b + 2, min);
    for (int j = 0; j < 16; j++) {
        const float x0 = (x[j] - min) * id;
        const float x1 = (x[j + 16] - min) * id;
        const int q0 = imin(15, (int)(x0 + 0.5f));
        const int q1 = imin(15, (int)(x1 + 0.5f));
        b[4 + j] = (uint8_t)(q0 | q1 << 4);
    }
}

/* Q4_1 (nmax 15) and Q5_1 (nmax 31) with an importance matrix: ggml's
 * weighted scale-and-min search per block, then the block's packing. */
static void min_quantize_weighted(const float *x, uint8_t *y, int64_t n, const float *qw,
                                  int nmax, size_t block_bytes)
{
    uint8_t L[QK], Laux[QK];
    float weight[QK];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        uint8_t *b = y + i * block_bytes;
        float neg_min;
        make_weights(xb, qw + i * QK, sigma2, weight);
        float d = search_scale_min(QK, nmax, xb, weight, L, &neg_min, Laux, -0.9f, 0.05f, 36);
        float dq = st_f16(b, d);
        float mq = st_f16(b + 2, -neg_min);
        requant_min(xb, dq, mq, nmax, L);
        if (nmax == 15)
            pack_nibbles(L, b + 4);
        else
            pack_q5(L, b + 4, b + 8);
    }
}

/* Q4_1 (nmax 15) or Q5_1 (31) rows of blocks of bytes bytes: weighted, or
 * block by block with plain(). */
static void min_quantize_ref(const float *x, uint8_t *y, int64_t n, const float *qw, int nmax,
                             size_t bytes, void (*plain)(const float *, uint8_t *))
{
    assert(n % QK == 0);
    if (qw) {
        min_quantize_weighted(x, y, n, qw, nmax, bytes);
        return;
    }
    for (int64_t i = 0; i < n / QK; i++)
        plain(x + i * QK, y + (size_t)i * bytes);
}

static void q4_1_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    min_quantize_ref(x, dst, n, qw, 15, Q4_1_BYTES, q4_1_block_plain);
}

static void q4_1_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q4_1_BYTES, y += QK) {
        const float d = ld_f16(b), m = ld_f16(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[4 + j] & 0x0f) * d + m;
            y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
        }
    }
}

/* row (n, Q4_1) . qx (n, Q8_1) */
static float q4_1_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += Q4_1_BYTES, y += Q8_1_BYTES) {
        const int8_t *q8 = (const int8_t *)(y + 4);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            sumi0 += (x[4 + j] & 0x0f) * q8[j];
            sumi1 += (x[4 + j] >> 4) * q8[j + 16];
        }
        sumf += ld_f16(x) * ld_f16(y) * (float)(sumi0 + sumi1) + ld_f16(x + 2) * ld_f16(y + 2);
    }
    return sumf;
}

/* ======================================================================== */
/* Q5_0                                                                      */
/* ======================================================================== */

/* quantize_row_q5_0_ref */
static void q5_0_block_plain(const float *x, uint8_t *b)
{
    float amax = 0.0f, max = 0.0f;
    uint8_t L[QK];
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    st_f16(b, d);
    for (int j = 0; j < QK; j++) {
        const float x0 = x[j] * id;
        L[j] = (uint8_t)imin(31, (int)(x0 + 16.5f));
    }
    pack_q5(L, b + 2, b + 6);
}

static void q5_0_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    uint8_t *y = dst;
    uint8_t L[QK];
    float weight[QK];
    assert(n % QK == 0);
    if (!qw) {
        for (int64_t i = 0; i < n / QK; i++)
            q5_0_block_plain(x + i * QK, y + i * Q5_0_BYTES);
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        uint8_t *b = y + i * Q5_0_BYTES;
        make_weights(xb, qw + i * QK, sigma2, weight);
        float d = ds_quant_search_sym(QK, 16, xb, (int8_t *)L, weight);
        requant_sym(xb, st_f16(b, d), 16, L);
        pack_q5(L, b + 2, b + 6);
    }
}

static void q5_0_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q5_0_BYTES, y += QK) {
        const float d = ld_f16(b);
        const uint32_t qh = rd32(b + 2);
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) << 4 & 0x10);
            const int h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(((b[6 + j] & 0x0f) | h0) - 16) * d;
            y[j + 16] = (float)(((b[6 + j] >> 4) | h1) - 16) * d;
        }
    }
}

static float q5_0_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += Q5_0_BYTES, y += Q8_0_BYTES) {
        const int8_t *q8 = (const int8_t *)(y + 2);
        const uint32_t qh = rd32(x + 2);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) << 4 & 0x10);
            const int h1 = (int)((qh >> (j + 12)) & 0x10);
            sumi0 += (((x[6 + j] & 0x0f) | h0) - 16) * q8[j];
            sumi1 += (((x[6 + j] >> 4) | h1) - 16) * q8[j + 16];
        }
        sumf += ld_f16(x) * ld_f16(y) * (float)(sumi0 + sumi1);
    }
    return sumf;
}

/* ======================================================================== */
/* Q5_1                                                                      */
/* ======================================================================== */

/* quantize_row_q5_1_ref */
static void q5_1_block_plain(const float *x, uint8_t *b)
{
    float min, max;
    uint8_t L[QK];
    min_max_plain(x, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    st_f16(b, d);
    st_f16(b + 2, min);
    for (int j = 0; j < QK; j++) {
        const float x0 = (x[j] - min) * id;
        L[j] = (uint8_t)(int)(x0 + 0.5f);
    }
    pack_q5(L, b + 4, b + 8);
}

static void q5_1_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    min_quantize_ref(x, dst, n, qw, 31, Q5_1_BYTES, q5_1_block_plain);
}

static void q5_1_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q5_1_BYTES, y += QK) {
        const float d = ld_f16(b), m = ld_f16(b + 2);
        const uint32_t qh = rd32(b + 4);
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) << 4 & 0x10);
            const int h1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)((b[8 + j] & 0x0f) | h0) * d + m;
            y[j + 16] = (float)((b[8 + j] >> 4) | h1) * d + m;
        }
    }
}

/* row (n, Q5_1) . qx (n, Q8_1) */
static float q5_1_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += Q5_1_BYTES, y += Q8_1_BYTES) {
        const int8_t *q8 = (const int8_t *)(y + 4);
        const uint32_t qh = rd32(x + 4);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) << 4 & 0x10);
            const int h1 = (int)((qh >> (j + 12)) & 0x10);
            sumi0 += ((x[8 + j] & 0x0f) | h0) * q8[j];
            sumi1 += ((x[8 + j] >> 4) | h1) * q8[j + 16];
        }
        sumf += ld_f16(x) * ld_f16(y) * (float)(sumi0 + sumi1) + ld_f16(x + 2) * ld_f16(y + 2);
    }
    return sumf;
}

/* ======================================================================== */
/* Q8_0                                                                      */
/* ======================================================================== */

/* quantize_row_q8_0_ref */
static void q8_0_block_plain(const float *x, uint8_t *b)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    st_f16(b, d);
    for (int j = 0; j < QK; j++)
        b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* Weighted Q8_0 (dskit's; llama.cpp ignores the imatrix here): levels in
 * [-127, 127], the scale fitted by weighted least squares over 9 candidate
 * inverse scales, then rounded to f16 and the levels redone. */
static void q8_0_block_weighted(const float *x, const float *w, uint8_t *b)
{
    float amax = 0.0f;
    int8_t *q = (int8_t *)(b + 2);
    for (int j = 0; j < QK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    if (amax < GROUP_MAX_EPS) {
        memset(b, 0, Q8_0_BYTES);
        return;
    }
    float best = 0.0f, scale = amax / 127.0f;
    for (int is = -4; is <= 4; is++) {
        const float iscale = (127.0f + 0.1f * (float)is) / amax;
        float sumlx = 0.0f, suml2 = 0.0f;
        for (int j = 0; j < QK; j++) {
            const float l = (float)nearest_clamped(iscale * x[j], -127, 127);
            sumlx += w[j] * x[j] * l;
            suml2 += w[j] * l * l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    const float dq = st_f16(b, scale);
    for (int j = 0; j < QK; j++)
        q[j] = (int8_t)(dq != 0.0f ? nearest_clamped(x[j] / dq, -127, 127) : 0);
}

static void q8_0_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    uint8_t *y = dst;
    float weight[QK];
    assert(n % QK == 0);
    if (!qw) {
        for (int64_t i = 0; i < n / QK; i++)
            q8_0_block_plain(x + i * QK, y + i * Q8_0_BYTES);
        return;
    }
    const float sigma2 = row_sigma2(x, n);
    for (int64_t i = 0; i < n / QK; i++) {
        make_weights(x + i * QK, qw + i * QK, sigma2, weight);
        q8_0_block_weighted(x + i * QK, weight, y + i * Q8_0_BYTES);
    }
}

static void q8_0_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q8_0_BYTES, y += QK) {
        const float d = ld_f16(b);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

static float q8_0_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += Q8_0_BYTES, y += Q8_0_BYTES) {
        int sumi = 0;
        for (int j = 0; j < QK; j++)
            sumi += (int8_t)x[2 + j] * (int8_t)y[2 + j];
        sumf += (float)sumi * (ld_f16(x) * ld_f16(y));
    }
    return sumf;
}

/* ======================================================================== */
/* IQ4_NL                                                                    */
/* ======================================================================== */

/*
 * One block (llama.cpp's quantize_row_iq4_nl_impl for a 32-element super
 * block, ntry 7): weights x^2, or qw * sqrt(sigma2 + x^2) with sigma2 twice
 * the block's mean square; the scale maximising (sum w q x)^2 / sum w q^2
 * over 16 inverse scales (itry - 127) / max plus the first fit; then the
 * levels redone for that scale (unrounded without qw, as llama.cpp does; the
 * stored f16 scale with qw).
 */
static void iq4_nl_block(const float *x, const float *qw, uint8_t *b)
{
    const int ntry = 7;
    float sigma2 = 0.0f, weight[QK];
    uint8_t L[QK];

    for (int j = 0; j < QK; j++)
        sigma2 += x[j] * x[j];
    sigma2 *= 2.0f / QK;
    memset(b, 0, IQ4_NL_BYTES);
    for (int j = 0; j < QK; j++)
        weight[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : x[j] * x[j];

    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    float d = 0.0f;
    if (amax >= GROUP_MAX_EPS) {
        d = -max / (float)kvalues_iq4nl[0];
        float id = 1.0f / d;
        float sumqx = 0.0f, sumq2 = 0.0f;
        for (int j = 0; j < QK; j++) {
            const float q = (float)kvalues_iq4nl[best_index_int8(16, kvalues_iq4nl, id * x[j])];
            sumqx += weight[j] * q * x[j];
            sumq2 += weight[j] * q * q;
        }
        d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (float)(itry + kvalues_iq4nl[0]) / max;
            sumqx = sumq2 = 0.0f;
            for (int j = 0; j < QK; j++) {
                const float q =
                    (float)kvalues_iq4nl[best_index_int8(16, kvalues_iq4nl, id * x[j])];
                sumqx += weight[j] * q * x[j];
                sumq2 += weight[j] * q * q;
            }
            if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
    }
    const float dq = st_f16(b, d);
    const float dl = qw ? dq : d;
    const float id = dl != 0.0f ? 1.0f / dl : 0.0f;
    for (int j = 0; j < QK; j++)
        L[j] = (uint8_t)best_index_int8(16, kvalues_iq4nl, id * x[j]);
    pack_nibbles(L, b + 2);
}

static void iq4_nl_quantize_ref(const float *x, void *dst, int64_t n, const float *qw)
{
    uint8_t *y = dst;
    assert(n % QK == 0);
    for (int64_t i = 0; i < n / QK; i++)
        iq4_nl_block(x + i * QK, qw ? qw + i * QK : NULL, y + i * IQ4_NL_BYTES);
}

static void iq4_nl_dequantize_ref(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += IQ4_NL_BYTES, y += QK) {
        const float d = ld_f16(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)kvalues_iq4nl[b[2 + j] & 0x0f];
            y[j + 16] = d * (float)kvalues_iq4nl[b[2 + j] >> 4];
        }
    }
}

static float iq4_nl_dot_ref(const void *row, const void *qx, int64_t n)
{
    const uint8_t *x = row, *y = qx;
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK; i++, x += IQ4_NL_BYTES, y += Q8_0_BYTES) {
        const int8_t *q8 = (const int8_t *)(y + 2);
        const float d = ld_f16(y) * ld_f16(x);
        int sumi1 = 0, sumi2 = 0;
        for (int j = 0; j < 16; j++) {
            sumi1 += q8[j] * kvalues_iq4nl[x[2 + j] & 0x0f];
            sumi2 += q8[j + 16] * kvalues_iq4nl[x[2 + j] >> 4];
        }
        sumf += d * (float)(sumi1 + sumi2);
    }
    return sumf;
}

/* ======================================================================== */
/* AVX2 (+F16C): bit-exact twins of the scalar kernels                       */
/* ======================================================================== */

#if DS_QL_X86

DS_AVX2 static inline float f16_avx(const uint8_t *p)
{
    return _cvtsh_ss(rd16(p));
}

DS_AVX2 static inline int hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Lane sums of four vectors: out[k] = sum of v_k's 8 int32. */
DS_AVX2 static inline void hsum4_i32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, int *out)
{
    __m256i a = _mm256_hadd_epi32(v0, v1); // v0 01 23, v1 01 23 | v0 45 67, v1 45 67
    __m256i b = _mm256_hadd_epi32(v2, v3);
    __m256i c = _mm256_hadd_epi32(a, b); // v0 v1 v2 v3 (low halves) | (high halves)
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storeu_si128((__m128i *)out, s);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high
 * nibbles (elements 16..31). */
DS_AVX2 static inline __m256i unpack_nibbles(const uint8_t *qs)
{
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(q, m4);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* The 32 bits of qh -> 32 bytes, byte j = 0x10 if bit j is set, else 0. */
DS_AVX2 static inline __m256i expand_qh(uint32_t qh)
{
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* sum over 32 of (int8 a) * (int8 b), as 8 int32 partial sums; exact for all
 * values (sign-extends to 16 bits). */
DS_AVX2 static inline __m256i dot_i8(__m256i a, __m256i b)
{
    __m256i alo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(a));
    __m256i ahi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(a, 1));
    __m256i blo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b));
    __m256i bhi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1));
    return _mm256_add_epi32(_mm256_madd_epi16(alo, blo), _mm256_madd_epi16(ahi, bhi));
}

/* sum over 32 of (u - off) * (int8 b) for u in [0, 31], off in {0, 8, 16}:
 * the unsigned-by-signed byte products cannot saturate there. */
DS_AVX2 static inline __m256i dot_u5(__m256i u, __m256i b, __m256i off)
{
    __m256i p = _mm256_maddubs_epi16(u, b);
    if (!_mm256_testz_si256(off, off))
        p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(off, b));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

DS_AVX2 static inline __m256i load_q8(const uint8_t *y)
{
    return _mm256_loadu_si256((const __m256i *)(y + 2));
}

/* The 32 int8 of a Q8_1 block. */
DS_AVX2 static inline __m256i load_q8_1(const uint8_t *y)
{
    return _mm256_loadu_si256((const __m256i *)(y + 4));
}

/*
 * The integer part of the dot products, four blocks at a time: each kernel
 * computes per block the integer sums ggml computes, then combines them with
 * the block scales in float in ggml's order, block after block.
 */
/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float q4_0_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    const __m256i off = _mm256_set1_epi8(8);
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++)
            v[k] = dot_u5(unpack_nibbles(x + k * Q4_0_BYTES + 2), load_q8(y + k * Q8_0_BYTES),
                          off);
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += Q4_0_BYTES, y += Q8_0_BYTES)
            sumf += (float)s[k] * f16_avx(x) * f16_avx(y);
    }
    for (; i < nb; i++, x += Q4_0_BYTES, y += Q8_0_BYTES) {
        int si = hsum_i32(dot_u5(unpack_nibbles(x + 2), load_q8(y), off));
        sumf += (float)si * f16_avx(x) * f16_avx(y);
    }
    return sumf;
}

DS_AVX2 static float q4_0_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return q4_0_dot_avx2_from(row, qx, n / QK, 0.0f);
}

/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float q4_1_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    const __m256i off = _mm256_setzero_si256();
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++)
            v[k] = dot_u5(unpack_nibbles(x + k * Q4_1_BYTES + 4), load_q8_1(y + k * Q8_1_BYTES),
                          off);
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += Q4_1_BYTES, y += Q8_1_BYTES)
            sumf += f16_avx(x) * f16_avx(y) * (float)s[k] + f16_avx(x + 2) * f16_avx(y + 2);
    }
    for (; i < nb; i++, x += Q4_1_BYTES, y += Q8_1_BYTES) {
        int si = hsum_i32(dot_u5(unpack_nibbles(x + 4), load_q8_1(y), off));
        sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2);
    }
    return sumf;
}

DS_AVX2 static float q4_1_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return q4_1_dot_avx2_from(row, qx, n / QK, 0.0f);
}

DS_AVX2 static inline __m256i unpack_q5(const uint8_t *qh, const uint8_t *qs)
{
    return _mm256_or_si256(unpack_nibbles(qs), expand_qh(rd32(qh)));
}

/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float q5_0_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    const __m256i off = _mm256_set1_epi8(16);
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            const uint8_t *b = x + k * Q5_0_BYTES;
            v[k] = dot_u5(unpack_q5(b + 2, b + 6), load_q8(y + k * Q8_0_BYTES), off);
        }
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += Q5_0_BYTES, y += Q8_0_BYTES)
            sumf += f16_avx(x) * f16_avx(y) * (float)s[k];
    }
    for (; i < nb; i++, x += Q5_0_BYTES, y += Q8_0_BYTES) {
        int si = hsum_i32(dot_u5(unpack_q5(x + 2, x + 6), load_q8(y), off));
        sumf += f16_avx(x) * f16_avx(y) * (float)si;
    }
    return sumf;
}

DS_AVX2 static float q5_0_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return q5_0_dot_avx2_from(row, qx, n / QK, 0.0f);
}

/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float q5_1_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    const __m256i off = _mm256_setzero_si256();
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            const uint8_t *b = x + k * Q5_1_BYTES;
            v[k] = dot_u5(unpack_q5(b + 4, b + 8), load_q8_1(y + k * Q8_1_BYTES), off);
        }
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += Q5_1_BYTES, y += Q8_1_BYTES)
            sumf += f16_avx(x) * f16_avx(y) * (float)s[k] + f16_avx(x + 2) * f16_avx(y + 2);
    }
    for (; i < nb; i++, x += Q5_1_BYTES, y += Q8_1_BYTES) {
        int si = hsum_i32(dot_u5(unpack_q5(x + 4, x + 8), load_q8_1(y), off));
        sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2);
    }
    return sumf;
}

DS_AVX2 static float q5_1_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return q5_1_dot_avx2_from(row, qx, n / QK, 0.0f);
}

/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float q8_0_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++)
            v[k] = dot_i8(load_q8(x + k * Q8_0_BYTES), load_q8(y + k * Q8_0_BYTES));
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += Q8_0_BYTES, y += Q8_0_BYTES)
            sumf += (float)s[k] * (f16_avx(x) * f16_avx(y));
    }
    for (; i < nb; i++, x += Q8_0_BYTES, y += Q8_0_BYTES) {
        int si = hsum_i32(dot_i8(load_q8(x), load_q8(y)));
        sumf += (float)si * (f16_avx(x) * f16_avx(y));
    }
    return sumf;
}

DS_AVX2 static float q8_0_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return q8_0_dot_avx2_from(row, qx, n / QK, 0.0f);
}

DS_AVX2 static inline __m256i iq4_values(const uint8_t *qs)
{
    const __m256i tbl =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl));
    return _mm256_shuffle_epi8(tbl, unpack_nibbles(qs));
}

/* nb blocks from x and y, added to sumf (also the AVX-512 kernel's tail). */
DS_AVX2 static float iq4_nl_dot_avx2_from(const uint8_t *x, const uint8_t *y, int64_t nb,
                                      float sumf)
{
    int s[4];
    int64_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; k++)
            v[k] = dot_i8(iq4_values(x + k * IQ4_NL_BYTES + 2), load_q8(y + k * Q8_0_BYTES));
        hsum4_i32(v[0], v[1], v[2], v[3], s);
        for (int k = 0; k < 4; k++, x += IQ4_NL_BYTES, y += Q8_0_BYTES)
            sumf += (f16_avx(y) * f16_avx(x)) * (float)s[k];
    }
    for (; i < nb; i++, x += IQ4_NL_BYTES, y += Q8_0_BYTES) {
        int si = hsum_i32(dot_i8(iq4_values(x + 2), load_q8(y)));
        sumf += (f16_avx(y) * f16_avx(x)) * (float)si;
    }
    return sumf;
}

DS_AVX2 static float iq4_nl_dot_avx2(const void *row, const void *qx, int64_t n)
{
    return iq4_nl_dot_avx2_from(row, qx, n / QK, 0.0f);
}

/*
 * Batched dot products: one weight row against na activation rows (row stride
 * ys bytes), four at a time, so that each weight block is loaded and
 * unpacked once per four activations. Per output the integer block sums are
 * the single kernel's and the float steps the same, in the same order: the
 * results equal t##_dot's bit for bit. W(b): the weight block at b as a
 * vector; D(w, y): its 8 int32 partial sums with the activation block at y;
 * COMBINE: the single kernel's float step (x, y: the blocks, si: the sum).
 */
#define DOT_ROWS_AVX2(t, XB, YB, W, D, COMBINE)                                             \
    DS_AVX2 static void t##_dot_rows_avx2(const void *row, const void *qx, size_t ys,       \
                                          int64_t na, int64_t n, float *out, int64_t os)   \
    {                                                                                       \
        const int64_t nb = n / QK;                                                          \
        for (int64_t c0 = 0; c0 < na; c0 += 4) {                                            \
            const int nc = na - c0 < 4 ? (int)(na - c0) : 4;                                \
            float sf[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                         \
            const uint8_t *yc[4];                                                           \
            for (int c = 0; c < nc; c++)                                                    \
                yc[c] = (const uint8_t *)qx + (size_t)(c0 + c) * ys;                        \
            for (int64_t i = 0; i < nb; i += 4) {                                           \
                const uint8_t *xr = (const uint8_t *)row + (size_t)i * XB;                  \
                const int nk = nb - i < 4 ? (int)(nb - i) : 4;                              \
                __m256i w[4];                                                               \
                for (int k = 0; k < nk; k++) {                                              \
                    const uint8_t *b = xr + k * XB;                                         \
                    w[k] = W;                                                               \
                }                                                                           \
                for (int c = 0; c < nc; c++) {                                              \
                    const uint8_t *x = xr, *y = yc[c] + (size_t)i * YB;                     \
                    __m256i v[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(),         \
                                    _mm256_setzero_si256(), _mm256_setzero_si256()};        \
                    int s[4];                                                               \
                    float sumf = sf[c];                                                     \
                    for (int k = 0; k < nk; k++) {                                          \
                        const uint8_t *yk = y + k * YB;                                     \
                        v[k] = D(w[k], yk);                                                 \
                    }                                                                       \
                    hsum4_i32(v[0], v[1], v[2], v[3], s);                                   \
                    for (int k = 0; k < nk; k++, x += XB, y += YB) {                        \
                        const int si = s[k];                                                \
                        COMBINE;                                                            \
                    }                                                                       \
                    sf[c] = sumf;                                                           \
                }                                                                           \
            }                                                                               \
            for (int c = 0; c < nc; c++)                                                    \
                out[(c0 + c) * os] = sf[c];                                                 \
        }                                                                                   \
    }

#define D_Q8(w, y) dot_i8(w, load_q8(y))
#define D_U5(w, y, off) dot_u5(w, load_q8(y), _mm256_set1_epi8(off))
#define D_U5_1(w, y) dot_u5(w, load_q8_1(y), _mm256_setzero_si256())
#define D_Q4_0(w, y) D_U5(w, y, 8)
#define D_Q5_0(w, y) D_U5(w, y, 16)

DOT_ROWS_AVX2(q4_0, Q4_0_BYTES, Q8_0_BYTES, unpack_nibbles(b + 2), D_Q4_0,
              sumf += (float)si * f16_avx(x) * f16_avx(y))
DOT_ROWS_AVX2(q4_1, Q4_1_BYTES, Q8_1_BYTES, unpack_nibbles(b + 4), D_U5_1,
              sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2))
DOT_ROWS_AVX2(q5_0, Q5_0_BYTES, Q8_0_BYTES, unpack_q5(b + 2, b + 6), D_Q5_0,
              sumf += f16_avx(x) * f16_avx(y) * (float)si)
DOT_ROWS_AVX2(q5_1, Q5_1_BYTES, Q8_1_BYTES, unpack_q5(b + 4, b + 8), D_U5_1,
              sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2))
DOT_ROWS_AVX2(q8_0, Q8_0_BYTES, Q8_0_BYTES, load_q8(b), D_Q8,
              sumf += (float)si * (f16_avx(x) * f16_avx(y)))
DOT_ROWS_AVX2(iq4_nl, IQ4_NL_BYTES, Q8_0_BYTES, iq4_values(b + 2), D_Q8,
              sumf += (f16_avx(y) * f16_avx(x)) * (float)si)

/* ---- dequantization ---- */

/* 32 int8 levels -> y (32) = (float)level * d (+ m when add_m). */
DS_AVX2 static inline void store_levels(__m256i q, float d, float m, int add_m, float *y)
{
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m256i i32[4] = {_mm256_cvtepi8_epi32(lo), _mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)),
                      _mm256_cvtepi8_epi32(hi), _mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))};
    for (int k = 0; k < 4; k++) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(i32[k]), vd);
        if (add_m)
            v = _mm256_add_ps(v, vm);
        _mm256_storeu_ps(y + 8 * k, v);
    }
}

DS_AVX2 static void q4_0_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q4_0_BYTES, y += QK)
        store_levels(_mm256_sub_epi8(unpack_nibbles(b + 2), _mm256_set1_epi8(8)), f16_avx(b),
                     0.0f, 0, y);
}

DS_AVX2 static void q4_1_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q4_1_BYTES, y += QK)
        store_levels(unpack_nibbles(b + 4), f16_avx(b), f16_avx(b + 2), 1, y);
}

DS_AVX2 static void q5_0_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q5_0_BYTES, y += QK)
        store_levels(_mm256_sub_epi8(unpack_q5(b + 2, b + 6), _mm256_set1_epi8(16)),
                     f16_avx(b), 0.0f, 0, y);
}

DS_AVX2 static void q5_1_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q5_1_BYTES, y += QK)
        store_levels(unpack_q5(b + 4, b + 8), f16_avx(b), f16_avx(b + 2), 1, y);
}

DS_AVX2 static void q8_0_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += Q8_0_BYTES, y += QK)
        store_levels(load_q8(b), f16_avx(b), 0.0f, 0, y);
}

DS_AVX2 static void iq4_nl_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK; i++, b += IQ4_NL_BYTES, y += QK)
        store_levels(iq4_values(b + 2), f16_avx(b), 0.0f, 0, y);
}

/* ---- quantization without imatrix (llama.cpp's reference quantizers) ---- */

DS_AVX2 static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

DS_AVX2 static inline float hmin_ps(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Bit k (0..31) set where v[k / 8] lane k % 8 compares true. */
DS_AVX2 static inline uint32_t mask32(__m256 c0, __m256 c1, __m256 c2, __m256 c3)
{
    return (uint32_t)_mm256_movemask_ps(c0) | (uint32_t)_mm256_movemask_ps(c1) << 8 |
           (uint32_t)_mm256_movemask_ps(c2) << 16 | (uint32_t)_mm256_movemask_ps(c3) << 24;
}

/* The first element of largest magnitude (0 when all are zero), as the
 * scalar loop "if (amax < |x|) { amax = |x|; max = x; }" finds it. */
DS_AVX2 static inline float signed_absmax(const float *x, const __m256 *v, float *pamax)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a[4];
    for (int k = 0; k < 4; k++)
        a[k] = _mm256_andnot_ps(sign, v[k]);
    const float amax = hmax_ps(_mm256_max_ps(_mm256_max_ps(a[0], a[1]),
                                             _mm256_max_ps(a[2], a[3])));
    *pamax = amax;
    if (!(amax > 0.0f))
        return 0.0f;
    const __m256 va = _mm256_set1_ps(amax);
    uint32_t m = mask32(_mm256_cmp_ps(a[0], va, _CMP_EQ_OQ), _mm256_cmp_ps(a[1], va, _CMP_EQ_OQ),
                        _mm256_cmp_ps(a[2], va, _CMP_EQ_OQ), _mm256_cmp_ps(a[3], va, _CMP_EQ_OQ));
    return x[__builtin_ctz(m)];
}

/* The value of the first element equal to t (t the block's min or max):
 * differs from t only in the sign of a zero. */
DS_AVX2 static inline float first_equal(const float *x, const __m256 *v, float t)
{
    if (t != 0.0f)
        return t;
    const __m256 vt = _mm256_set1_ps(t);
    uint32_t m = mask32(_mm256_cmp_ps(v[0], vt, _CMP_EQ_OQ), _mm256_cmp_ps(v[1], vt, _CMP_EQ_OQ),
                        _mm256_cmp_ps(v[2], vt, _CMP_EQ_OQ), _mm256_cmp_ps(v[3], vt, _CMP_EQ_OQ));
    return m ? x[__builtin_ctz(m)] : t;
}

/* 4 x 8 int32 (each in [0, 255]) -> 32 bytes in element order. */
DS_AVX2 static inline __m256i pack_u8(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packus_epi32(a, b); // a0-3 b0-3 | a4-7 b4-7
    __m256i cd = _mm256_packus_epi32(c, d);
    __m256i r = _mm256_packus_epi16(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
    return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Levels q (32 bytes, < 16) -> nibbles: byte j = q[j] | q[j + 16] << 4. */
DS_AVX2 static inline void store_nibbles(__m256i q, uint8_t *qs)
{
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm_storeu_si128((__m128i *)qs, _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
}

/* Levels q (32 bytes, < 32) -> Q5 qh and nibbles. */
DS_AVX2 static inline void store_q5(__m256i q, uint8_t *qh, uint8_t *qs)
{
    wr32(qh, (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(q, 3)));
    store_nibbles(_mm256_and_si256(q, _mm256_set1_epi8(0x0f)), qs);
}

DS_AVX2 static inline void load4(const float *x, __m256 *v)
{
    for (int k = 0; k < 4; k++)
        v[k] = _mm256_loadu_ps(x + 8 * k);
}

/* min(cap, (int)((x - sub) * id + add)) for the 32 elements, as bytes. */
DS_AVX2 static inline __m256i levels(const __m256 *v, float sub, float id, float add, int cap)
{
    const __m256 vs = _mm256_set1_ps(sub), vi = _mm256_set1_ps(id), va = _mm256_set1_ps(add);
    const __m256i vc = _mm256_set1_epi32(cap);
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        __m256 t = sub != 0.0f ? _mm256_sub_ps(v[k], vs) : v[k];
        t = _mm256_add_ps(_mm256_mul_ps(t, vi), va);
        q[k] = _mm256_min_epi32(_mm256_cvttps_epi32(t), vc);
    }
    return pack_u8(q[0], q[1], q[2], q[3]);
}

DS_AVX2 static void q4_0_quantize_plain_avx2(const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, y += Q4_0_BYTES) {
        __m256 v[4];
        float amax;
        load4(x, v);
        const float max = signed_absmax(x, v, &amax);
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(y, d);
        store_nibbles(levels(v, 0.0f, id, 8.5f, 15), y + 2);
    }
}

DS_AVX2 static void q5_0_quantize_plain_avx2(const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, y += Q5_0_BYTES) {
        __m256 v[4];
        float amax;
        load4(x, v);
        const float max = signed_absmax(x, v, &amax);
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(y, d);
        store_q5(levels(v, 0.0f, id, 16.5f, 31), y + 2, y + 6);
    }
}

DS_AVX2 static inline void min_max_avx2(const float *x, const __m256 *v, float *pmin,
                                        float *pmax)
{
    *pmin = first_equal(x, v, hmin_ps(_mm256_min_ps(_mm256_min_ps(v[0], v[1]),
                                                    _mm256_min_ps(v[2], v[3]))));
    *pmax = first_equal(x, v, hmax_ps(_mm256_max_ps(_mm256_max_ps(v[0], v[1]),
                                                    _mm256_max_ps(v[2], v[3]))));
}

DS_AVX2 static void q4_1_quantize_plain_avx2(const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, y += Q4_1_BYTES) {
        __m256 v[4];
        float min, max;
        load4(x, v);
        min_max_avx2(x, v, &min, &max);
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(y, d);
        st_f16(y + 2, min);
        store_nibbles(levels(v, min, id, 0.5f, 15), y + 4);
    }
}

DS_AVX2 static void q5_1_quantize_plain_avx2(const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, y += Q5_1_BYTES) {
        __m256 v[4];
        float min, max;
        load4(x, v);
        min_max_avx2(x, v, &min, &max);
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        st_f16(y, d);
        st_f16(y + 2, min);
        store_q5(levels(v, min, id, 0.5f, 255), y + 4, y + 8);
    }
}

/* roundf (half away from zero) of 8 floats, exactly: trunc, then one step
 * away from zero where the dropped fraction is at least one half. */
DS_AVX2 static inline __m256i roundf_epi32(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign)));
    return _mm256_cvttps_epi32(_mm256_add_ps(t, step));
}

DS_AVX2 static void q8_0_quantize_plain_avx2(const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, y += Q8_0_BYTES) {
        __m256 v[4];
        float amax;
        load4(x, v);
        signed_absmax(x, v, &amax);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vi = _mm256_set1_ps(id);
        __m256i q[4];
        st_f16(y, d);
        for (int k = 0; k < 4; k++)
            q[k] = roundf_epi32(_mm256_mul_ps(v[k], vi));
        __m256i ab = _mm256_packs_epi32(q[0], q[1]), cd = _mm256_packs_epi32(q[2], q[3]);
        __m256i r = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(y + 2), r);
    }
}

/* ---- IQ4_NL quantization, eight blocks at a time ---- */

/* t[j] for j (0..15) per lane, t as two 8-float halves. */
DS_AVX2 static inline __m256 lookup16(__m256 lo, __m256 hi, __m256i j)
{
    __m256 a = _mm256_permutevar8x32_ps(lo, j), b = _mm256_permutevar8x32_ps(hi, j);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(j, 28)));
}

struct iq4_tables {
    __m256 val_lo, val_hi; // kvalues as floats
    __m256 mid_lo, mid_hi; // kvalues[j - 1] + kvalues[j] (j >= 1)
};

/* best_index_int8 on each lane. */
DS_AVX2 static inline __m256i iq4_index8(__m256 x, const struct iq4_tables *tb)
{
    const __m256 x2 = _mm256_add_ps(x, x);
    __m256i idx = _mm256_setzero_si256();
    for (int step = 8; step > 0; step >>= 1) {
        __m256i j = _mm256_add_epi32(idx, _mm256_set1_epi32(step));
        __m256 ge = _mm256_cmp_ps(x2, lookup16(tb->mid_lo, tb->mid_hi, j), _CMP_GE_OQ);
        idx = _mm256_blendv_epi8(idx, j, _mm256_castps_si256(ge));
    }
    return idx;
}

/* sum w q x and sum w q^2 over the 32 elements, q = kvalues[index(id x)]. */
DS_AVX2 static inline void iq4_sums8(const __m256 *xt, const __m256 *w, __m256 id,
                                     const struct iq4_tables *tb, __m256 *psumqx, __m256 *psumq2)
{
    __m256 sumqx = _mm256_setzero_ps(), sumq2 = _mm256_setzero_ps();
    for (int j = 0; j < QK; j++) {
        __m256i l = iq4_index8(_mm256_mul_ps(id, xt[j]), tb);
        __m256 q = lookup16(tb->val_lo, tb->val_hi, l);
        __m256 wq = _mm256_mul_ps(w[j], q);
        sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, xt[j]));
        sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
    }
    *psumqx = sumqx;
    *psumq2 = sumq2;
}

/*
 * iq4_nl_block for the 8 blocks at x (256 floats), one block per lane: each
 * lane performs the scalar code's operations in the same order (sums over
 * the elements in element order, branches as blends), so the bytes are
 * identical.
 */
DS_AVX2 static void iq4_nl_quantize8_avx2(const float *x, const float *qw, uint8_t *y)
{
    const __m256i vidx = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
    const __m256 zero = _mm256_setzero_ps();
    float val[16], mid[16];
    __m256 xt[QK], w[QK];
    int32_t L[QK][8];
    uint16_t h[8];

    for (int j = 0; j < 16; j++) {
        val[j] = (float)kvalues_iq4nl[j];
        mid[j] = j ? (float)(kvalues_iq4nl[j - 1] + kvalues_iq4nl[j]) : 0.0f;
    }
    const struct iq4_tables tb = {_mm256_loadu_ps(val), _mm256_loadu_ps(val + 8),
                                  _mm256_loadu_ps(mid), _mm256_loadu_ps(mid + 8)};

    __m256 sigma2 = zero;
    for (int j = 0; j < QK; j++) {
        xt[j] = _mm256_i32gather_ps(x + j, vidx, 4);
        sigma2 = _mm256_add_ps(sigma2, _mm256_mul_ps(xt[j], xt[j]));
    }
    sigma2 = _mm256_mul_ps(sigma2, _mm256_set1_ps(2.0f / QK));
    for (int j = 0; j < QK; j++) {
        __m256 x2 = _mm256_mul_ps(xt[j], xt[j]);
        w[j] = qw ? _mm256_mul_ps(_mm256_i32gather_ps(qw + j, vidx, 4),
                                  _mm256_sqrt_ps(_mm256_add_ps(sigma2, x2)))
                  : x2;
    }

    __m256 amax = zero, max = zero;
    for (int j = 0; j < QK; j++) {
        __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), xt[j]);
        __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, gt);
        max = _mm256_blendv_ps(max, xt[j], gt);
    }
    const __m256 valid = _mm256_cmp_ps(amax, _mm256_set1_ps(GROUP_MAX_EPS), _CMP_GE_OQ);

    // lanes that are not valid compute garbage (0 / 0), discarded at the end
    __m256 d = _mm256_div_ps(_mm256_xor_ps(max, _mm256_set1_ps(-0.0f)),
                             _mm256_set1_ps(kvalues_iq4nl[0]));
    __m256 sumqx, sumq2;
    iq4_sums8(xt, w, _mm256_div_ps(_mm256_set1_ps(1.0f), d), &tb, &sumqx, &sumq2);
    d = _mm256_blendv_ps(zero, _mm256_div_ps(sumqx, sumq2),
                         _mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ));
    __m256 best = _mm256_mul_ps(d, sumqx);
    for (int itry = -7; itry <= 7; itry++) {
        __m256 id = _mm256_div_ps(_mm256_set1_ps((float)(itry + kvalues_iq4nl[0])), max);
        iq4_sums8(xt, w, id, &tb, &sumqx, &sumq2);
        __m256 better = _mm256_and_ps(
            _mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ),
            _mm256_cmp_ps(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2), _CMP_GT_OQ));
        d = _mm256_blendv_ps(d, _mm256_div_ps(sumqx, sumq2), better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(d, sumqx), better);
    }
    d = _mm256_and_ps(d, valid);

    __m128i dh = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)h, dh);
    const __m256 dl = qw ? _mm256_cvtph_ps(dh) : d;
    const __m256 id = _mm256_blendv_ps(zero, _mm256_div_ps(_mm256_set1_ps(1.0f), dl),
                                       _mm256_cmp_ps(dl, zero, _CMP_NEQ_UQ));
    for (int j = 0; j < QK; j++)
        _mm256_storeu_si256((__m256i *)L[j], iq4_index8(_mm256_mul_ps(id, xt[j]), &tb));
    for (int b = 0; b < 8; b++) {
        uint8_t *blk = y + b * IQ4_NL_BYTES;
        wr16(blk, h[b]);
        for (int j = 0; j < 16; j++)
            blk[2 + j] = (uint8_t)(L[j][b] | L[j + 16][b] << 4);
    }
}

/* ======================================================================== */
/* AVX-512 (F, BW, VL, VNNI): dot products, bit-exact twins of the scalar ones */
/* ======================================================================== */

/* Eight blocks at a time, two per 512-bit register: vpdpbusd multiplies the
 * unsigned quants u (u = q + off, off >= 0) by the signed activations and
 * adds groups of four products into int32 lanes, exactly; subtracting
 * vpdpbusd(off, y) leaves sum (u - off) y = sum q y, the block's integer sum
 * (Q8_0's signed quants are biased by 128 for this). The block scales then
 * combine these sums in ggml's order, block after block, as the AVX2 kernels
 * do, which also finish the rows' last blocks. */

/* Q8_0's int8 quants as unsigned bytes q + 128. */
DS_AVX512 static inline __m256i biased_q8(const uint8_t *b)
{
    return _mm256_xor_si256(load_q8(b), _mm256_set1_epi8((char)0x80));
}

/* IQ4_NL's values + 128 (unsigned). */
DS_AVX512 static inline __m256i biased_iq4(const uint8_t *qs)
{
    static const uint8_t biased[16] = {1,   24,  45,  63,  79,  93,  106, 118,
                                       129, 141, 153, 166, 181, 197, 217, 241};
    const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)biased));
    return _mm256_shuffle_epi8(tbl, unpack_nibbles(qs));
}

/* Lane k: the sum over block k of (u[k] - off) * (the int8 at y + k * ybytes);
 * for k >= g the activations of block 0 stand in (lanes the caller drops). */
DS_AVX512 static inline __attribute__((always_inline)) __m256i
isums8v(const __m256i *u, const uint8_t *y, size_t ybytes, int off, int g)
{
    const __m512i voff = _mm512_set1_epi8((char)off);
    __m256i h[8];
    _Pragma("GCC unroll 4") for (int k = 0; k < 8; k += 2)
    {
        __m512i uu = _mm512_inserti64x4(_mm512_castsi256_si512(u[k]), u[k + 1], 1);
        __m512i yy = _mm512_inserti64x4(
            _mm512_castsi256_si512(
                _mm256_loadu_si256((const __m256i *)(y + (k < g ? k : 0) * ybytes))),
            _mm256_loadu_si256((const __m256i *)(y + (k + 1 < g ? k + 1 : 0) * ybytes)), 1);
        __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uu, yy);
        if (off)
            acc = _mm512_sub_epi32(acc, _mm512_dpbusd_epi32(_mm512_setzero_si512(), voff, yy));
        h[k] = _mm512_castsi512_si256(acc);
        h[k + 1] = _mm512_extracti64x4_epi64(acc, 1);
    }
    __m256i a0 = _mm256_hadd_epi32(h[0], h[1]), a1 = _mm256_hadd_epi32(h[2], h[3]);
    __m256i a2 = _mm256_hadd_epi32(h[4], h[5]), a3 = _mm256_hadd_epi32(h[6], h[7]);
    __m256i b0 = _mm256_hadd_epi32(a0, a1), b1 = _mm256_hadd_epi32(a2, a3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20),
                            _mm256_permute2x128_si256(b0, b1, 0x31));
}

/* s[k] = sum over block k of (u[k] - off) * (the int8 at y + k * ybytes). */
DS_AVX512 static inline void isums8(const __m256i *u, const uint8_t *y, size_t ybytes,
                                    int off, int *s)
{
    _mm256_storeu_si256((__m256i *)s, isums8v(u, y, ybytes, off, 8));
}

/* The f16 at p + k' stride, k = 0 .. 7, k' = k for k < g and 0 after (the
 * scales of g blocks; the other lanes repeat the first block's). */
DS_AVX512 static inline __attribute__((always_inline)) __m256 f16x8_at(const uint8_t *p, int stride,
                                                                      int g)
{
#define F16_AT(k) (short)rd16(p + ((k) < g ? (k) : 0) * stride)
    return _mm256_cvtph_ps(_mm_setr_epi16(F16_AT(0), F16_AT(1), F16_AT(2), F16_AT(3), F16_AT(4),
                                          F16_AT(5), F16_AT(6), F16_AT(7)));
#undef F16_AT
}

/* t: type; XB, YB: block bytes of the weights and activations; YQ: offset of
 * the activations' int8; U(b): unsigned quants of the block at b; OFF: their
 * bias; TERM: the scalar kernel's float term of a block (what it adds to
 * sumf), here on 8 blocks at once: vs the integer sums as float, vdx, vdy the
 * blocks' scales, vmx, vmy for Q4_1/Q5_1 the second halves. The terms are
 * then added to sumf one by one, in block order: ggml's chain of additions,
 * the rest of the float work done 8 blocks to a vector (the same roundings).
 * Groups of 8 blocks, then one of 4 (lanes 4-7 recompute block 0 and are not
 * added), then the AVX2 kernel for the last 0-3 blocks. */
#define DOT_AVX512_GROUP(XB, YB, YQ, U, OFF, TERM, G)                                       \
    {                                                                                       \
        __m256i u[8];                                                                       \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)                                 \
        {                                                                                   \
            const uint8_t *b = x + (k < G ? k : 0) * XB;                                    \
            u[k] = U;                                                                       \
        }                                                                                   \
        const __m256 vs = _mm256_cvtepi32_ps(isums8v(u, y + YQ, YB, OFF, G));               \
        const __m256 vdx = f16x8_at(x, XB, G), vdy = f16x8_at(y, YB, G);                    \
        const __m256 vmx = f16x8_at(x + 2, XB, G), vmy = f16x8_at(y + 2, YB, G);            \
        float term[8];                                                                      \
        _mm256_storeu_ps(term, TERM);                                                       \
        (void)vmx, (void)vmy;                                                               \
        for (int k = 0; k < G; k++)                                                         \
            sumf += term[k];                                                                \
        x += G * XB, y += G * YB, i += G;                                                   \
    }
#define DOT_AVX512(t, XB, YB, YQ, U, OFF, TERM)                                             \
    DS_AVX512 static float t##_dot_avx512(const void *row, const void *qx, int64_t n)       \
    {                                                                                       \
        const uint8_t *x = row, *y = qx;                                                    \
        const int64_t nb = n / QK;                                                          \
        float sumf = 0.0f;                                                                  \
        int64_t i = 0;                                                                      \
        while (i + 8 <= nb)                                                                 \
            DOT_AVX512_GROUP(XB, YB, YQ, U, OFF, TERM, 8)                                   \
        if (i + 4 <= nb)                                                                    \
            DOT_AVX512_GROUP(XB, YB, YQ, U, OFF, TERM, 4)                                   \
        return t##_dot_avx2_from(x, y, nb - i, sumf);                                       \
    }

#define VMUL _mm256_mul_ps
#define VADD _mm256_add_ps
DOT_AVX512(q4_0, Q4_0_BYTES, Q8_0_BYTES, 2, unpack_nibbles(b + 2), 8, VMUL(VMUL(vs, vdx), vdy))
DOT_AVX512(q4_1, Q4_1_BYTES, Q8_1_BYTES, 4, unpack_nibbles(b + 4), 0,
           VADD(VMUL(VMUL(vdx, vdy), vs), VMUL(vmx, vmy)))
DOT_AVX512(q5_0, Q5_0_BYTES, Q8_0_BYTES, 2, unpack_q5(b + 2, b + 6), 16, VMUL(VMUL(vdx, vdy), vs))
DOT_AVX512(q5_1, Q5_1_BYTES, Q8_1_BYTES, 4, unpack_q5(b + 4, b + 8), 0,
           VADD(VMUL(VMUL(vdx, vdy), vs), VMUL(vmx, vmy)))
DOT_AVX512(q8_0, Q8_0_BYTES, Q8_0_BYTES, 2, biased_q8(b), 128, VMUL(vs, VMUL(vdx, vdy)))
DOT_AVX512(iq4_nl, IQ4_NL_BYTES, Q8_0_BYTES, 2, biased_iq4(b + 2), 128, VMUL(VMUL(vdy, vdx), vs))

/* DOT_AVX512 for na activation rows (row stride ys bytes), four at a time,
 * each weight group of eight blocks unpacked once; the results equal
 * t##_dot_avx512's bit for bit (same integer sums, same float steps). */
#define DOT_ROWS_AVX512(t, XB, YB, YQ, U, OFF, COMBINE)                                     \
    DS_AVX512 static void t##_dot_rows_avx512(const void *row, const void *qx, size_t ys,   \
                                              int64_t na, int64_t n, float *out,           \
                                              int64_t os)                                  \
    {                                                                                       \
        const int64_t nb = n / QK, nb8 = nb - nb % 8;                                       \
        for (int64_t c0 = 0; c0 < na; c0 += 4) {                                            \
            const int nc = na - c0 < 4 ? (int)(na - c0) : 4;                                \
            float sf[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                         \
            const uint8_t *yc[4];                                                           \
            for (int c = 0; c < nc; c++)                                                    \
                yc[c] = (const uint8_t *)qx + (size_t)(c0 + c) * ys;                        \
            for (int64_t i = 0; i < nb8; i += 8) {                                          \
                const uint8_t *xr = (const uint8_t *)row + (size_t)i * XB;                  \
                __m256i u[8];                                                               \
                for (int k = 0; k < 8; k++) {                                               \
                    const uint8_t *b = xr + k * XB;                                         \
                    u[k] = U;                                                               \
                }                                                                           \
                for (int c = 0; c < nc; c++) {                                              \
                    const uint8_t *x = xr, *y = yc[c] + (size_t)i * YB;                     \
                    float sumf = sf[c];                                                     \
                    int s[8];                                                               \
                    isums8(u, y + YQ, YB, OFF, s);                                          \
                    for (int k = 0; k < 8; k++, x += XB, y += YB) {                         \
                        const int si = s[k];                                                \
                        COMBINE;                                                            \
                    }                                                                       \
                    sf[c] = sumf;                                                           \
                }                                                                           \
            }                                                                               \
            for (int c = 0; c < nc; c++)                                                    \
                out[(c0 + c) * os] =                                                        \
                    t##_dot_avx2_from((const uint8_t *)row + (size_t)nb8 * XB,              \
                                      yc[c] + (size_t)nb8 * YB, nb - nb8, sf[c]);           \
        }                                                                                   \
    }

DOT_ROWS_AVX512(q4_0, Q4_0_BYTES, Q8_0_BYTES, 2, unpack_nibbles(b + 2), 8,
                sumf += (float)si * f16_avx(x) * f16_avx(y))
DOT_ROWS_AVX512(q4_1, Q4_1_BYTES, Q8_1_BYTES, 4, unpack_nibbles(b + 4), 0,
                sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2))
DOT_ROWS_AVX512(q5_0, Q5_0_BYTES, Q8_0_BYTES, 2, unpack_q5(b + 2, b + 6), 16,
                sumf += f16_avx(x) * f16_avx(y) * (float)si)
DOT_ROWS_AVX512(q5_1, Q5_1_BYTES, Q8_1_BYTES, 4, unpack_q5(b + 4, b + 8), 0,
                sumf += f16_avx(x) * f16_avx(y) * (float)si + f16_avx(x + 2) * f16_avx(y + 2))
DOT_ROWS_AVX512(q8_0, Q8_0_BYTES, Q8_0_BYTES, 2, biased_q8(b), 128,
                sumf += (float)si * (f16_avx(x) * f16_avx(y)))
DOT_ROWS_AVX512(iq4_nl, IQ4_NL_BYTES, Q8_0_BYTES, 2, biased_iq4(b + 2), 128,
                sumf += (f16_avx(y) * f16_avx(x)) * (float)si)

/*
 * Eight activation rows at once: the float step of a block is the same for
 * every output, so it runs on a vector holding the eight outputs' partial
 * sums (lane c: activation c), each lane taking the scalar kernel's
 * operations in its order (no FMA, same operand order): bit for bit the
 * single product, without its chain of dependent scalar additions, which
 * bounds the single kernel. The integer sums of a block for the eight rows
 * come out of one horizontal reduction (lane c = the sum over activation c).
 * VCOMBINE: the float step on vectors vs (the sums as float), vdx (the weight
 * block's scale), vdy (the activation blocks' scales), and for Q4_1/Q5_1 vmx,
 * vmy (the second halves).
 */
DS_AVX512 static inline __m256i hsum8_lanes(const __m256i *s)
{
    __m256i t0 = _mm256_hadd_epi32(s[0], s[1]), t1 = _mm256_hadd_epi32(s[2], s[3]);
    __m256i t2 = _mm256_hadd_epi32(s[4], s[5]), t3 = _mm256_hadd_epi32(s[6], s[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* The f16 at offset off of block j of the eight activation rows yc. */
DS_AVX512 static inline __m256 f16x8(const uint8_t *const *yc, size_t off)
{
    return _mm256_cvtph_ps(_mm_setr_epi16((short)rd16(yc[0] + off), (short)rd16(yc[1] + off),
                                          (short)rd16(yc[2] + off), (short)rd16(yc[3] + off),
                                          (short)rd16(yc[4] + off), (short)rd16(yc[5] + off),
                                          (short)rd16(yc[6] + off), (short)rd16(yc[7] + off)));
}

#define DOT_ROWS8_AVX512(t, XB, YB, YQ, U, OFF, VCOMBINE)                                   \
    DS_AVX512 static void t##_dot_rows8_avx512(const void *row, const void *qx, size_t ys,  \
                                               int64_t na, int64_t n, float *out,          \
                                               int64_t os)                                 \
    {                                                                                       \
        const int64_t nb = n / QK, nb8 = nb - nb % 8;                                       \
        const __m512i voff = _mm512_set1_epi8((char)(OFF));                                 \
        for (int64_t c0 = 0; c0 + 8 <= na; c0 += 8) {                                       \
            const uint8_t *yc[8];                                                           \
            float sf[8];                                                                    \
            __m256 vsum = _mm256_setzero_ps();                                              \
            for (int c = 0; c < 8; c++)                                                     \
                yc[c] = (const uint8_t *)qx + (size_t)(c0 + c) * ys;                        \
            for (int64_t i = 0; i < nb8; i += 2) {                                          \
                const uint8_t *xr = (const uint8_t *)row + (size_t)i * XB, *b;              \
                b = xr;                                                                     \
                __m256i u0 = U;                                                             \
                b = xr + XB;                                                                \
                __m256i u1 = U;                                                             \
                const __m512i uu = _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);   \
                __m256i h0[8], h1[8];                                                       \
                for (int c = 0; c < 8; c++) {                                               \
                    const uint8_t *yb = yc[c] + (size_t)i * YB + YQ;                        \
                    __m512i yy = _mm512_inserti64x4(                                        \
                        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)yb)),    \
                        _mm256_loadu_si256((const __m256i *)(yb + YB)), 1);                 \
                    __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uu, yy);      \
                    if (OFF)                                                                \
                        acc = _mm512_sub_epi32(                                             \
                            acc, _mm512_dpbusd_epi32(_mm512_setzero_si512(), voff, yy));    \
                    h0[c] = _mm512_castsi512_si256(acc);                                    \
                    h1[c] = _mm512_extracti64x4_epi64(acc, 1);                              \
                }                                                                           \
                for (int k = 0; k < 2; k++) {                                               \
                    const uint8_t *x = xr + k * XB;                                         \
                    const size_t yo = (size_t)(i + k) * YB;                                 \
                    const __m256 vs = _mm256_cvtepi32_ps(hsum8_lanes(k ? h1 : h0));         \
                    const __m256 vdx = _mm256_set1_ps(f16_avx(x)), vdy = f16x8(yc, yo);     \
                    VCOMBINE;                                                               \
                }                                                                           \
            }                                                                               \
            _mm256_storeu_ps(sf, vsum);                                                     \
            for (int c = 0; c < 8; c++)                                                     \
                out[(c0 + c) * os] =                                                        \
                    t##_dot_avx2_from((const uint8_t *)row + (size_t)nb8 * XB,              \
                                      yc[c] + (size_t)nb8 * YB, nb - nb8, sf[c]);           \
        }                                                                                   \
    }

DOT_ROWS8_AVX512(q4_0, Q4_0_BYTES, Q8_0_BYTES, 2, unpack_nibbles(b + 2), 8,
                 vsum = VADD(vsum, VMUL(VMUL(vs, vdx), vdy)))
DOT_ROWS8_AVX512(q4_1, Q4_1_BYTES, Q8_1_BYTES, 4, unpack_nibbles(b + 4), 0,
                 vsum = VADD(vsum, VADD(VMUL(VMUL(vdx, vdy), vs),
                                        VMUL(_mm256_set1_ps(f16_avx(x + 2)),
                                             f16x8(yc, yo + 2)))))
DOT_ROWS8_AVX512(q5_0, Q5_0_BYTES, Q8_0_BYTES, 2, unpack_q5(b + 2, b + 6), 16,
                 vsum = VADD(vsum, VMUL(VMUL(vdx, vdy), vs)))
DOT_ROWS8_AVX512(q5_1, Q5_1_BYTES, Q8_1_BYTES, 4, unpack_q5(b + 4, b + 8), 0,
                 vsum = VADD(vsum, VADD(VMUL(VMUL(vdx, vdy), vs),
                                        VMUL(_mm256_set1_ps(f16_avx(x + 2)),
                                             f16x8(yc, yo + 2)))))
DOT_ROWS8_AVX512(q8_0, Q8_0_BYTES, Q8_0_BYTES, 2, biased_q8(b), 128,
                 vsum = VADD(vsum, VMUL(vs, VMUL(vdx, vdy))))
DOT_ROWS8_AVX512(iq4_nl, IQ4_NL_BYTES, Q8_0_BYTES, 2, biased_iq4(b + 2), 128,
                 vsum = VADD(vsum, VMUL(VMUL(vdy, vdx), vs)))


/*
 * 2-D tiles: TILE_R weight rows x TILE_C (8) activation rows per register
 * block, for the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL).
 *
 * Lanes are activation rows. A tile's activation blocks are repacked once
 * per call (struct tile_blk): vector g holds bytes 4g..4g+3 of the block of
 * each of the 8 rows, as unsigned bytes y + 128. A weight row's block is
 * unpacked once per K chunk to its 32 signed quants (struct tile_w), and its
 * dword g broadcast to all lanes: one vpdpbusd multiplies it with the 8
 * activation rows, so each loaded weight block serves 8 activation rows and
 * each loaded activation vector TILE_R weight rows, and no horizontal sums
 * are needed. After the 8 dwords lane c holds sum (y_c + 128) w =
 * sum y_c w + 128 sum w; the accumulator starts at -128 sum w (computed once
 * per weight block), so it ends at the block's integer sum. With fewer than
 * 8 activation rows in all (an expert's few tokens) lane 7 is spare: it
 * gets y = 0 and so ends at 128 sum w, which is subtracted from every lane
 * instead (no separate pass over the weights for the sums).
 *
 * Why this is bit for bit the single kernel: the integer sums are exact (no
 * saturating instruction, |sum| < 2^21), and each lane then takes the single
 * kernel's float step for its output, block after block in order, with the
 * same operations on the same operands (no FMA): sumf += (float)si * (dx *
 * dy) for Q8_0, Q5_0 and IQ4_NL (IEEE products commute, so dy * dx == dx *
 * dy), sumf += ((float)si * dx) * dy for Q4_0, sumf += (dx * dy) * si +
 * mx * sy for Q4_1 and Q5_1 (sy: Q8_1's stored d * sum(q)). K is cut into
 * chunks of TILE_KB blocks; between chunks a partial sum waits in out, a
 * float stored and reloaded unchanged.
 */
#define TILE_C 8   /* activation rows per tile: the int32 lanes of a ymm */
#define TILE_R 8   /* weight rows per register block */
#define TILE_KB 64 /* blocks per K chunk */
#define TILE_TG 16 /* tiles repacked together (128 activation rows) */

/* One block of a tile of 8 activation rows: a[g] dword g of each row's
 * quants + 128 (lane c: row c), dy the rows' scales, sy (Q8_1 only) their
 * d * sum(q). */
struct tile_blk {
    uint8_t a[8][32];
    float dy[8];
    float sy[8];
};

/* TILE_R weight rows over one K chunk: q signed quants, ncorr -128 * their
 * sum, d the scales, m the mins (Q4_1, Q5_1), per block. */
struct tile_w {
    uint8_t q[TILE_R][TILE_KB][32];
    int32_t ncorr[TILE_R][TILE_KB];
    float d[TILE_R][TILE_KB];
    float m[TILE_R][TILE_KB];
};

/* Blocks j0 .. j0+nj-1 of the 8 activation rows yc (Q8_0, or Q8_1 when q81)
 * -> dst (nj): an 8 x 8 dword transpose per block; spare: lane 7 is y = 0. */
DS_AVX512 static void tile_pack(struct tile_blk *dst, const uint8_t *const *yc, int64_t j0,
                                int64_t nj, bool q81, bool spare)
{
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    const size_t yb = q81 ? Q8_1_BYTES : Q8_0_BYTES, yq = q81 ? 4 : 2;
    for (int64_t j = 0; j < nj; j++, dst++) {
        const size_t o = (size_t)(j0 + j) * yb;
        __m256i r[8], t[8], u[8];
        for (int c = 0; c < 8; c++)
            r[c] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(yc[c] + o + yq)), bias);
        // t[c], t[c+1]: dwords 0 1 | 4 5 and 2 3 | 6 7 of rows c, c+1 interleaved
        for (int c = 0; c < 8; c += 2) {
            t[c] = _mm256_unpacklo_epi32(r[c], r[c + 1]);
            t[c + 1] = _mm256_unpackhi_epi32(r[c], r[c + 1]);
        }
        // u[c + g]: dword g | g + 4 of rows c .. c+3
        for (int c = 0; c < 8; c += 4) {
            u[c] = _mm256_unpacklo_epi64(t[c], t[c + 2]);
            u[c + 1] = _mm256_unpackhi_epi64(t[c], t[c + 2]);
            u[c + 2] = _mm256_unpacklo_epi64(t[c + 1], t[c + 3]);
            u[c + 3] = _mm256_unpackhi_epi64(t[c + 1], t[c + 3]);
        }
        for (int g = 0; g < 4; g++) {
            __m256i lo = _mm256_permute2x128_si256(u[g], u[g + 4], 0x20);
            __m256i hi = _mm256_permute2x128_si256(u[g], u[g + 4], 0x31);
            if (spare) {
                lo = _mm256_blend_epi32(lo, bias, 0x80);
                hi = _mm256_blend_epi32(hi, bias, 0x80);
            }
            _mm256_storeu_si256((__m256i *)dst->a[g], lo);
            _mm256_storeu_si256((__m256i *)dst->a[g + 4], hi);
        }
        _mm256_storeu_ps(dst->dy, f16x8(yc, o));
        if (q81)
            _mm256_storeu_ps(dst->sy, f16x8(yc, o + 2));
    }
}

enum tile_kind { TILE_Q4_0, TILE_Q4_1, TILE_Q5_0, TILE_Q5_1, TILE_Q8_0, TILE_IQ4_NL };

#define TILE_Q81(k) ((k) == TILE_Q4_1 || (k) == TILE_Q5_1)

/* The signed quants of the block at b, as the single kernel multiplies them. */
DS_AVX512 static inline __attribute__((always_inline)) __m256i tile_quants(enum tile_kind k,
                                                                           const uint8_t *b)
{
    switch (k) {
    case TILE_Q4_0:
        return _mm256_sub_epi8(unpack_nibbles(b + 2), _mm256_set1_epi8(8));
    case TILE_Q4_1:
        return unpack_nibbles(b + 4);
    case TILE_Q5_0:
        return _mm256_sub_epi8(unpack_q5(b + 2, b + 6), _mm256_set1_epi8(16));
    case TILE_Q5_1:
        return unpack_q5(b + 4, b + 8);
    case TILE_IQ4_NL:
        return iq4_values(b + 2);
    default:
        return load_q8(b);
    }
}

/* Weight rows wr[0..TILE_R) (block bytes xb), blocks j0 .. j0+nj-1 -> tw
 * (ncorr only when corr). */
DS_AVX512 static inline __attribute__((always_inline)) void
tile_unpack(enum tile_kind k, size_t xb, struct tile_w *tw, const uint8_t *const *wr, int64_t j0,
            int64_t nj, bool corr)
{
    const __m256i u128 = _mm256_set1_epi8((char)0x80);
    for (int r = 0; r < TILE_R; r++)
        for (int64_t j = 0; j < nj; j += 8) {
            __m256i s[8];
            for (int i = 0; i < 8; i++) {
                s[i] = _mm256_setzero_si256();
                if (j + i < nj) {
                    const uint8_t *b = wr[r] + (size_t)(j0 + j + i) * xb;
                    __m256i q = tile_quants(k, b);
                    _mm256_storeu_si256((__m256i *)tw->q[r][j + i], q);
                    if (corr)
                        s[i] = _mm256_dpbusd_epi32(s[i], u128, q);
                    tw->d[r][j + i] = f16_avx(b);
                    if (TILE_Q81(k))
                        tw->m[r][j + i] = f16_avx(b + 2);
                }
            }
            // TILE_KB is a multiple of 8: the 8 sums fit even past nj
            if (corr)
                _mm256_storeu_si256((__m256i *)&tw->ncorr[r][j],
                                    _mm256_sub_epi32(_mm256_setzero_si256(), hsum8_lanes(s)));
        }
}

/* vsum[r] (lane c) += the products of weight rows tw and the tile blk over
 * nj blocks, each in the single kernel's float step; spare: lane 7 holds the
 * bias instead of tw->ncorr. */
DS_AVX512 static inline __attribute__((always_inline)) void
tile_block(enum tile_kind k, __m256 *vsum, const struct tile_w *tw, const struct tile_blk *blk,
           int64_t nj, bool spare)
{
    for (int64_t j = 0; j < nj; j++, blk++) {
        __m256i acc[TILE_R];
#pragma GCC unroll 8
        for (int r = 0; r < TILE_R; r++)
            acc[r] = spare ? _mm256_setzero_si256() : _mm256_set1_epi32(tw->ncorr[r][j]);
        // rows inner: TILE_R independent chains of vpdpbusd
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m256i a = _mm256_loadu_si256((const __m256i *)blk->a[g]);
#pragma GCC unroll 8
            for (int r = 0; r < TILE_R; r++) {
                int32_t wd;
                memcpy(&wd, tw->q[r][j] + 4 * g, sizeof(wd));
                acc[r] = _mm256_dpbusd_epi32(acc[r], a, _mm256_set1_epi32(wd));
            }
        }
        const __m256 vdy = _mm256_loadu_ps(blk->dy);
#pragma GCC unroll 8
        for (int r = 0; r < TILE_R; r++) {
            if (spare)
                acc[r] = _mm256_sub_epi32(
                    acc[r], _mm256_permutevar8x32_epi32(acc[r], _mm256_set1_epi32(7)));
            const __m256 vs = _mm256_cvtepi32_ps(acc[r]), vdx = _mm256_set1_ps(tw->d[r][j]);
            if (k == TILE_Q4_0)
                vsum[r] = VADD(vsum[r], VMUL(VMUL(vs, vdx), vdy));
            else if (TILE_Q81(k))
                vsum[r] = VADD(vsum[r], VADD(VMUL(VMUL(vdx, vdy), vs),
                                             VMUL(_mm256_set1_ps(tw->m[r][j]),
                                                  _mm256_loadu_ps(blk->sy))));
            else
                vsum[r] = VADD(vsum[r], VMUL(vs, VMUL(vdx, vdy)));
        }
    }
}

/* w (nr rows of type k, row stride ws bytes) x qx (na Q8_0 or Q8_1 rows,
 * stride qs)
 * -> out[r * ors + c * ocs] = t##_dot(w + r * ws, qx + c * qs, n); tiles of
 * TILE_R x 8, the last ones padded with copies of the last row. buf: room
 * for min(TILE_TG, tiles) * min(TILE_KB, n / 32) tile blocks. */
DS_AVX512 static inline __attribute__((always_inline)) void
tile_run(enum tile_kind k, size_t xb, struct tile_blk *buf, const uint8_t *w, size_t ws,
         int64_t nr, const uint8_t *qx, size_t qs, int64_t na, int64_t n, float *out,
         int64_t ors, int64_t ocs)
{
    const int64_t nb = n / QK, ntiles = (na + TILE_C - 1) / TILE_C;
    const bool spare = na < TILE_C;
    struct tile_w tw;
    for (int64_t j0 = 0; j0 < nb; j0 += TILE_KB) {
        const int64_t nj = nb - j0 < TILE_KB ? nb - j0 : TILE_KB;
        for (int64_t t0 = 0; t0 < ntiles; t0 += TILE_TG) {
            const int64_t nt = ntiles - t0 < TILE_TG ? ntiles - t0 : TILE_TG;
            for (int64_t t = 0; t < nt; t++) {
                const int64_t c0 = (t0 + t) * TILE_C;
                const uint8_t *yc[8];
                for (int64_t c = 0; c < TILE_C; c++)
                    yc[c] = qx + (size_t)(c0 + c < na ? c0 + c : na - 1) * qs;
                tile_pack(buf + t * nj, yc, j0, nj, TILE_Q81(k), spare);
            }
            for (int64_t r0 = 0; r0 < nr; r0 += TILE_R) {
                const int64_t nrr = nr - r0 < TILE_R ? nr - r0 : TILE_R;
                const uint8_t *wr[TILE_R];
                for (int64_t r = 0; r < TILE_R; r++)
                    wr[r] = w + (size_t)(r0 + (r < nrr ? r : nrr - 1)) * ws;
                tile_unpack(k, xb, &tw, wr, j0, nj, !spare);
                // the next rows stream in from memory while these compute
                for (int64_t r = r0 + TILE_R; r < r0 + 2 * TILE_R && r < nr; r++)
                    for (size_t o = 0; o < (size_t)nj * xb; o += 64)
                        _mm_prefetch((const char *)w + (size_t)r * ws + (size_t)j0 * xb + o,
                                     _MM_HINT_T0);
                for (int64_t t = 0; t < nt; t++) {
                    const int64_t c0 = (t0 + t) * TILE_C;
                    const int64_t nc = na - c0 < TILE_C ? na - c0 : TILE_C;
                    float *o = out + r0 * ors + c0 * ocs;
                    float s[TILE_C];
                    __m256 vsum[TILE_R];
                    for (int64_t r = 0; r < TILE_R; r++) {
                        memset(s, 0, sizeof(s));
                        for (int64_t c = 0; j0 > 0 && r < nrr && c < nc; c++)
                            s[c] = o[r * ors + c * ocs];
                        vsum[r] = _mm256_loadu_ps(s);
                    }
                    if (spare)
                        tile_block(k, vsum, &tw, buf + t * nj, nj, true);
                    else
                        tile_block(k, vsum, &tw, buf + t * nj, nj, false);
                    for (int64_t r = 0; r < nrr; r++) {
                        _mm256_storeu_ps(s, vsum[r]);
                        for (int64_t c = 0; c < nc; c++)
                            o[r * ors + c * ocs] = s[c];
                    }
                }
            }
        }
    }
}

#define DOT_TILE_AVX512(t, XB, KIND)                                                        \
    DS_AVX512 static void t##_dot_tile_avx512(struct tile_blk *buf, const void *w,          \
                                              size_t ws, int64_t nr, const void *qx,        \
                                              size_t qs, int64_t na, int64_t n, float *out, \
                                              int64_t ors, int64_t ocs)                     \
    {                                                                                       \
        tile_run(KIND, XB, buf, w, ws, nr, qx, qs, na, n, out, ors, ocs);                   \
    }

DOT_TILE_AVX512(q4_0, Q4_0_BYTES, TILE_Q4_0)
DOT_TILE_AVX512(q4_1, Q4_1_BYTES, TILE_Q4_1)
DOT_TILE_AVX512(q5_0, Q5_0_BYTES, TILE_Q5_0)
DOT_TILE_AVX512(q5_1, Q5_1_BYTES, TILE_Q5_1)
DOT_TILE_AVX512(q8_0, Q8_0_BYTES, TILE_Q8_0)
DOT_TILE_AVX512(iq4_nl, IQ4_NL_BYTES, TILE_IQ4_NL)

#endif /* DS_QL_X86 */

/* ======================================================================== */
/* dispatch                                                                  */
/* ======================================================================== */

#if DS_QL_X86
static inline int use_avx2(void)
{
    return ds_simd_level() >= 1;
}

#define AVX2_OR(call_avx2)  \
    if (use_avx2()) {       \
        call_avx2;          \
        return;             \
    }
#define AVX2_OR_RET(call_avx2) \
    if (use_avx2())            \
        return call_avx2;
#define AVX512_OR_RET(call_avx512) \
    if (ds_simd_level() >= 2)      \
        return call_avx512;
#else
#define AVX2_OR(call_avx2)
#define AVX2_OR_RET(call_avx2)
#define AVX512_OR_RET(call_avx512)
#endif

#if DS_QL_X86
/* The batched dot product of the level in effect (NULL: one dot per row). */
#define DOT_ROWS_DISPATCH(t)                                                              \
    static void t##_dot_rows(const void *row, const void *qx, size_t ys, int64_t na,      \
                             int64_t n, float *out, int64_t os)                           \
    {                                                                                     \
        if (ds_simd_level() >= 2) {                                                       \
            int64_t n8 = na - na % 8;                                                     \
            t##_dot_rows8_avx512(row, qx, ys, n8, n, out, os);                            \
            t##_dot_rows_avx512(row, (const uint8_t *)qx + (size_t)n8 * ys, ys, na - n8,  \
                                n, out + n8 * os, os);                                    \
        }                                                                                 \
        else if (use_avx2())                                                              \
            t##_dot_rows_avx2(row, qx, ys, na, n, out, os);                               \
        else                                                                              \
            for (int64_t c = 0; c < na; c++)                                              \
                out[c * os] = t##_dot_ref(row, (const uint8_t *)qx + (size_t)c * ys, n);  \
    }
#define DOT_ROWS_FN(t) t##_dot_rows
#else
#define DOT_ROWS_DISPATCH(t)
#define DOT_ROWS_FN(t) NULL
#endif

/* The imatrix searches stay scalar (as fast as llama.cpp's). */
#define DEFINE_KERNELS(t)                                                            \
    static void t##_quantize(const float *x, void *dst, int64_t n, const float *qw)  \
    {                                                                                \
        if (!qw) {                                                                   \
            AVX2_OR(t##_quantize_plain_avx2(x, dst, n))                              \
        }                                                                            \
        t##_quantize_ref(x, dst, n, qw);                                             \
    }                                                                                \
    static void t##_dequantize(const void *src, float *y, int64_t n)                 \
    {                                                                                \
        AVX2_OR(t##_dequantize_avx2(src, y, n))                                      \
        t##_dequantize_ref(src, y, n);                                               \
    }                                                                                \
    static float t##_dot(const void *row, const void *qx, int64_t n)                 \
    {                                                                                \
        AVX512_OR_RET(t##_dot_avx512(row, qx, n))                                    \
        AVX2_OR_RET(t##_dot_avx2(row, qx, n))                                        \
        return t##_dot_ref(row, qx, n);                                              \
    }                                                                                \
    DOT_ROWS_DISPATCH(t)

DEFINE_KERNELS(q4_0)
DEFINE_KERNELS(q4_1)
DEFINE_KERNELS(q5_0)
DEFINE_KERNELS(q5_1)
DEFINE_KERNELS(q8_0)

static void iq4_nl_quantize(const float *x, void *dst, int64_t n, const float *qw)
{
    int64_t i = 0;
#if DS_QL_X86
    if (use_avx2())
        for (; i + 8 * QK <= n; i += 8 * QK)
            iq4_nl_quantize8_avx2(x + i, qw ? qw + i : NULL,
                                  (uint8_t *)dst + i / QK * IQ4_NL_BYTES);
#endif
    iq4_nl_quantize_ref(x + i, (uint8_t *)dst + i / QK * IQ4_NL_BYTES, n - i, qw ? qw + i : NULL);
}

static void iq4_nl_dequantize(const void *src, float *y, int64_t n)
{
    AVX2_OR(iq4_nl_dequantize_avx2(src, y, n))
    iq4_nl_dequantize_ref(src, y, n);
}

static float iq4_nl_dot(const void *row, const void *qx, int64_t n)
{
    AVX512_OR_RET(iq4_nl_dot_avx512(row, qx, n))
    AVX2_OR_RET(iq4_nl_dot_avx2(row, qx, n))
    return iq4_nl_dot_ref(row, qx, n);
}

DOT_ROWS_DISPATCH(iq4_nl)

/* The 2-D tile of t at the level in effect (ds_quant_dot_tile): false when
 * there is none (the caller then dots row by row). */
bool ds_dot_tile_legacy(enum ds_type t, const void *w, size_t ws, int64_t nr, const void *qx,
                        size_t qs, int64_t na, int64_t n, float *out, int64_t ors, int64_t ocs)
{
#if DS_QL_X86
    void (*f)(struct tile_blk *, const void *, size_t, int64_t, const void *, size_t, int64_t,
              int64_t, float *, int64_t, int64_t);
    const int64_t nb = n / QK, ntiles = (na + TILE_C - 1) / TILE_C;
    if (ds_simd_level() < 2 || nb <= 0 || nr <= 0 || na < 2)
        return false;
    switch (t) {
    case DS_TYPE_Q4_0:
        f = q4_0_dot_tile_avx512;
        break;
    case DS_TYPE_Q4_1:
        f = q4_1_dot_tile_avx512;
        break;
    case DS_TYPE_Q5_0:
        f = q5_0_dot_tile_avx512;
        break;
    case DS_TYPE_Q5_1:
        f = q5_1_dot_tile_avx512;
        break;
    case DS_TYPE_Q8_0:
        f = q8_0_dot_tile_avx512;
        break;
    case DS_TYPE_IQ4_NL:
        f = iq4_nl_dot_tile_avx512;
        break;
    default:
        return false;
    }
    // the repacked activations of up to TILE_TG tiles over one K chunk
    size_t nblk =
        (size_t)(ntiles < TILE_TG ? ntiles : TILE_TG) * (size_t)(nb < TILE_KB ? nb : TILE_KB);
    void *mem = malloc(nblk * sizeof(struct tile_blk) + 32);
    if (!mem)
        return false;
    f((struct tile_blk *)(((uintptr_t)mem + 31) & ~(uintptr_t)31), w, ws, nr, qx, qs, na, n, out,
      ors, ocs);
    free(mem);
    return true;
#else
    return false;
#endif
}

#define ENTRY(T, t, VT, quantize)                                                      \
    {DS_TYPE_##T, DS_TYPE_##VT, quantize, t##_quantize_ref, t##_dequantize,            \
     t##_dequantize_ref, t##_dot, t##_dot_ref, DOT_ROWS_FN(t)}

static const struct ds_qtype qtypes[] = {
    ENTRY(Q4_0, q4_0, Q8_0, q4_0_quantize), ENTRY(Q4_1, q4_1, Q8_1, q4_1_quantize),
    ENTRY(Q5_0, q5_0, Q8_0, q5_0_quantize), ENTRY(Q5_1, q5_1, Q8_1, q5_1_quantize),
    ENTRY(Q8_0, q8_0, Q8_0, q8_0_quantize), ENTRY(IQ4_NL, iq4_nl, Q8_0, iq4_nl_quantize),
};

const struct ds_qtype *ds_qtype_legacy(enum ds_type t)
{
    for (size_t i = 0; i < sizeof(qtypes) / sizeof(qtypes[0]); i++)
        if (qtypes[i].type == t)
            return &qtypes[i];
    return NULL;
}

/* x (n) -> dst (n / 32 Q8_0 blocks), as quantize_row_q8_0_ref. */
void ds_quantize_q8_0(const float *x, void *dst, int64_t n)
{
    q8_0_quantize(x, dst, n, NULL);
}

/* x (n) -> dst (n / 32 Q8_1 blocks), as quantize_row_q8_1_ref: Q8_0's d and
 * qs, and s = d * sum(qs) from d before its rounding to f16. */
void ds_quantize_q8_1(const float *x, void *dst, int64_t n)
{
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / QK; i++, x += QK, b += Q8_1_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            float a = fabsf(x[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        st_f16(b, d);
        for (int j = 0; j < QK; j++) {
            const int8_t q = (int8_t)roundf(x[j] * id);
            b[4 + j] = (uint8_t)q;
            sum += q;
        }
        st_f16(b + 2, (float)sum * d);
    }
}
