/*
 * quant_k.c - ggml's 256-element block types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_XS) and the Q8_K activation format; see quant_impl.h.
 *
 * Block layouts are llama.cpp's (ggml-common.h), byte for byte. The scalar
 * code follows ggml's reference algorithms operation for operation, so that a
 * row quantized here without an importance matrix has the bytes of
 * quantize_row_*_ref, with one the bytes of quantize_q*_K / quantize_iq4_xs,
 * and dequantization and dot products give ggml's floats bit for bit
 * (dequantize_row_*, the scalar ggml_vec_dot_*_q8_K_generic).
 *
 * The AVX2 kernels (chosen at run time by ds_simd_level(); scalar elsewhere)
 * are bit-exact with the scalar ones, not merely close: the dot products form
 * the same integer sums and then repeat ggml's float operations in ggml's
 * order; the quantizers evaluate the candidate scales of each search in
 * parallel lanes, each lane doing the scalar loop's operations in its order.
 * The AVX-512 (VNNI) level has its own Q6_K dot product, bit-exact too; it
 * uses the AVX2 kernels for everything else (see the AVX-512 section).
 *
 * Float expressions must not be contracted into fused multiply-adds for this
 * to hold; the pragmas below say so to GCC and clang (clang's explicit
 * -ffp-contract=fast overrides them, and would break the exactness).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QK_X86 1
#include <immintrin.h>
#define QK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QK_AVX512 \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

#include "quant_impl.h"

#include "ds_banned.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define QK_K 256
#define GROUP_MAX_EPS DS_QUANT_GROUP_MAX_EPS

/* ---- block layouts (ggml-common.h); halves are IEEE fp16 bit patterns ---- */

struct blk_q2_k {
    uint8_t scales[16]; /* low nibble: scale, high nibble: min, per 16 */
    uint8_t qs[64];     /* 2-bit quants */
    uint16_t d, dmin;
};

struct blk_q3_k {
    uint8_t hmask[32];  /* high bit of each quant */
    uint8_t qs[64];     /* low 2 bits */
    uint8_t scales[12]; /* 16 6-bit scales */
    uint16_t d;
};

struct blk_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[128];
};

struct blk_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32]; /* fifth bits */
    uint8_t qs[128];
};

struct blk_q6_k {
    uint8_t ql[128]; /* low 4 bits */
    uint8_t qh[64];  /* high 2 bits */
    int8_t scales[16];
    uint16_t d;
};

struct blk_q8_k {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sums of qs by 16 */
};

struct blk_iq4_xs {
    uint16_t d;
    uint16_t scales_h; /* high 2 bits of the 8 6-bit scales */
    uint8_t scales_l[4];
    uint8_t qs[128];
};

_Static_assert(sizeof(struct blk_q2_k) == 84, "block_q2_K");
_Static_assert(sizeof(struct blk_q3_k) == 110, "block_q3_K");
_Static_assert(sizeof(struct blk_q4_k) == 144, "block_q4_K");
_Static_assert(sizeof(struct blk_q5_k) == 176, "block_q5_K");
_Static_assert(sizeof(struct blk_q6_k) == 210, "block_q6_K");
_Static_assert(sizeof(struct blk_q8_k) == 292, "block_q8_K");
_Static_assert(sizeof(struct blk_iq4_xs) == 136, "block_iq4_xs");

static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};

/* ---- helpers ------------------------------------------------------------ */

static inline float h2f(uint16_t h)
{
    return ds_f16_to_f32(h);
}

static inline uint16_t f2h(float f)
{
    return ds_f32_to_f16(f);
}

static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Scale and min j (0..7) of the 12-byte 6-bit packing of Q4_K/Q5_K. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void pack_scale_min_k4(uint8_t *s, int j, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
    } else {
        s[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        s[j - 4] |= (uint8_t)((ls >> 4) << 6);
        s[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Signed scale j (0..15) of Q3_K's 12-byte packing: 6 bits, minus 32. */
static inline int q3k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static void q3k_pack_scale(uint8_t *s, int j, int l)
{
    if (j < 8)
        s[j] = (uint8_t)(l & 0xF);
    else
        s[j - 8] |= (uint8_t)((l & 0xF) << 4);
    s[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
}

/* Index of the IQ4_NL value nearest to x (a midpoint picks the upper one). */
static inline int best_index_iq4(float x)
{
    float x2 = x + x;
    int idx = 0;
    for (int step = 8; step > 0; step >>= 1) {
        int j = idx + step;
        if (x2 >= (float)(kvalues_iq4nl[j - 1] + kvalues_iq4nl[j]))
            idx = j;
    }
    return idx;
}

/* Four groups of 32 2-bit values (L[0..127]) into 32 bytes. */
static void pack_2bit(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ---- scale search (ggml's make_*_quants) -------------------------------- */

/* Q3_K's symmetric search: x^2-weighted, then coordinate descent on L. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(ds_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = clampi(ds_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* The start of make_qkx_quants and of its AVX2 twin: the range of x (min at
 * most 0), the weighted sums, and L with its error at the plain scale
 * (max - min) / nmax. False, with L zero and scale 0, when x is constant. */
struct qkx_start {
    float min, max, sum_w, sum_x, scale, best_error;
};

static bool qkx_begin(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                      bool use_mad, struct qkx_start *st)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    *st = (struct qkx_start){.min = min, .max = max, .sum_w = sum_w, .sum_x = sum_x};
    if (max <= min) {
        memset(L, 0, (size_t)n);
        return false;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = ds_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)clampi(l, 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    st->scale = scale;
    st->best_error = best_error;
    return true;
}

/* Asymmetric: x (n) -> L (n) in [0, nmax], returns the scale, *the_min the
 * (non-negative) offset; x ~ scale * L - the_min. Minimises the weighted
 * squared (or absolute, use_mad) error over nstep + 1 trial scales
 * (ggml's make_qkx2_quants / make_qkx3_quants, which agree on finite data). */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                             float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                             bool use_mad)
{
    struct qkx_start st;
    if (!qkx_begin(n, nmax, x, weights, L, use_mad, &st) || nstep < 1) {
        *the_min = -st.min;
        return st.scale;
    }
    float min = st.min, max = st.max, sum_w = st.sum_w, sum_x = st.sum_x;
    float scale = st.scale, best_error = st.best_error;
    for (int is = 0; is <= nstep; is++) {
        float iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            float v = iscale * (x[i] - min);
            int l = v > 0 ? ds_nearest_int(v < nmax ? v : (float)nmax) : 0;
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Non-negative x (n) (sub-block scales or mins) -> L (n) in [0, nmax] with
 * weights qw (ggml's make_qp_quants). */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0;
    for (int i = 0; i < n; i++)
        max = max > x[i] ? max : x[i];
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++)
        L[i] = (uint8_t)ds_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = ds_nearest_int(iscale_is * x[i]);
            l = l < nmax ? l : nmax;
            float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = ds_nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = ds_nearest_int(x[i] * sl2 / slx);
                new_l = new_l < nmax ? new_l : nmax;
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* The scale of one IQ4_XS sub-block xb (32, amax >= GROUP_MAX_EPS, max its
 * signed largest element) with weights: a first guess and 15 trial scales
 * (the search of quantize_row_iq4_nl_impl). */
static float iq4_search(const float *xb, const float *weight, float max)
{
    const int ntry = 7;
    float d = -max / kvalues_iq4nl[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        float q = kvalues_iq4nl[best_index_iq4(id * xb[j])];
        float w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; itry++) {
        id = (itry + kvalues_iq4nl[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            float q = kvalues_iq4nl[best_index_iq4(id * xb[j])];
            float w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* L[j] = best_index_iq4(id * x[j]), j < 32. */
static void iq4_index(const float *x, float id, uint8_t *L)
{
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)best_index_iq4(id * x[j]);
}

/* The search kernels the quantizers use: the functions above, or vector
 * versions that give the same results bit for bit. */
struct qsearch {
    float (*qkx)(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                 uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad);
    float (*qx)(int n, int nmax, const float *x, int8_t *L, const float *qw);
    float (*iq4)(const float *xb, const float *weight, float max);
    void (*iq4_index)(const float *x, float id, uint8_t *L);
};

static const struct qsearch search_ref = {make_qkx_quants, ds_quant_search_sym, iq4_search, iq4_index};

/* ---- Q2_K ---------------------------------------------------------------- */

/* Requantizes x against the block's final 4-bit scales and mins. */
static void q2k_requantize(const float *x, const struct blk_q2_k *y, uint8_t *L)
{
    float dm = h2f(y->d), mm = h2f(y->dmin);
    for (int j = 0; j < QK_K / 16; j++) {
        const float d = dm * (y->scales[j] & 0xF);
        if (!d)
            continue;
        const float m = mm * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (uint8_t)clampi(ds_nearest_int((x[16 * j + ii] + m) / d), 0, 3);
    }
}

/* x (n) -> Q2_K row, without importance (quantize_row_q2_K_ref). */
static void q2k_quantize_plain(const float *x, struct blk_q2_k *y, int64_t nb,
                               const struct qsearch *s)
{
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;

    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++)
                weights[l] = fabsf(x[16 * j + l]);
            scales[j] = s->qkx(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f,
                               15, true);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] = (uint8_t)ds_nearest_int(iscale * scales[j]);
            y[i].d = f2h(max_scale / q4scale);
        } else {
            memset(y[i].scales, 0, sizeof(y[i].scales));
            y[i].d = f2h(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] |= (uint8_t)((unsigned)ds_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = f2h(max_min / q4scale);
        } else {
            y[i].dmin = f2h(0.f);
        }
        q2k_requantize(x, &y[i], L);
        pack_2bit(y[i].qs, L);
    }
}

/* x (n), imatrix (n) -> Q2_K row (quantize_row_q2_K_impl). */
static void q2k_quantize_weighted(const float *x, struct blk_q2_k *y, int64_t nb, const float *qw,
                                  const struct qsearch *s)
{
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];

    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K) {
        memset(sw, 0, sizeof(sw));
        float sumx2 = 0;
        for (int j = 0; j < QK_K; j++)
            sumx2 += x[j] * x[j];
        float sigma2 = sumx2 / QK_K;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++)
                weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            for (int l = 0; l < 16; l++)
                sw[j] += weight[l];
            scales[j] = s->qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f,
                               36, false);
        }
        float dm = make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
        float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
        y[i].d = f2h(dm);
        y[i].dmin = f2h(mm);
        for (int j = 0; j < QK_K / 16; j++)
            y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        q2k_requantize(x, &y[i], L);
        pack_2bit(y[i].qs, L);
    }
}

static void q2k_quantize_with(const float *x, void *dst, int64_t n, const float *imatrix,
                              const struct qsearch *s)
{
    if (imatrix)
        q2k_quantize_weighted(x, dst, n / QK_K, imatrix, s);
    else
        q2k_quantize_plain(x, dst, n / QK_K, s);
}

/* Q2_K row -> y (n) (dequantize_row_q2_K). */
static void q2k_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_q2_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(x[i].d), min = h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int h = 0; h < QK_K; h += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 32; k += 16) {
                    uint8_t sc = x[i].scales[is++];
                    float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * ((q[k + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* Q2_K row . Q8_K row (ggml_vec_dot_q2_K_q8_K_generic). */
static float q2k_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_q2_k *x = row;
    const struct blk_q8_k *y = qx;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q2 = x[i].qs, *sc = x[i].scales;
        const int8_t *q8 = y[i].qs;
        int summs = 0;
        for (int j = 0; j < 16; j++)
            summs += y[i].bsums[j] * (sc[j] >> 4);
        const float dall = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        int isum = 0, is = 0;
        for (int h = 0; h < QK_K / 128; h++, q2 += 32) {
            for (int shift = 0; shift < 8; shift += 2, q8 += 32) {
                for (int k = 0; k < 32; k += 16) {
                    int isuml = 0;
                    for (int l = k; l < k + 16; l++)
                        isuml += q8[l] * ((q2[l] >> shift) & 3);
                    isum += (sc[is++] & 0xF) * isuml;
                }
            }
        }
        sumf += dall * isum - dmin * summs;
    }
    return sumf;
}

/* ---- Q3_K ---------------------------------------------------------------- */

/* Requantizes x against the final scales, then hmask and the 2-bit quants. */
static void q3k_finish(const float *x, struct blk_q3_k *y, int8_t *L)
{
    float d_all = h2f(y->d);
    for (int j = 0; j < QK_K / 16; j++) {
        float d = d_all * (int8_t)q3k_scale(y->scales, j);
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(clampi(ds_nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
    }
    // The high bit of quant j goes to bit j/32 of hmask[j%32].
    memset(y->hmask, 0, sizeof(y->hmask));
    uint8_t Lu[QK_K];
    for (int j = 0; j < QK_K; j++) {
        int l = L[j];
        if (l > 3) {
            y->hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            l -= 4;
        }
        Lu[j] = (uint8_t)l;
    }
    pack_2bit(y->qs, Lu);
}

/* quantize_row_q3_K_ref */
static void q3k_quantize_plain(const float *x, struct blk_q3_k *y, int64_t nb)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];

    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, sizeof(y[i].scales));
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l = (int8_t)ds_nearest_int(iscale * scales[j]);
                q3k_pack_scale(y[i].scales, j, clampi(l, -32, 31) + 32);
            }
            y[i].d = f2h(1 / iscale);
        } else {
            y[i].d = f2h(0.f);
        }
        q3k_finish(x, &y[i], L);
    }
}

/* quantize_row_q3_K_impl */
static void q3k_quantize_weighted(const float *x, struct blk_q3_k *y, int64_t nb, const float *qw,
                                  const struct qsearch *s)
{
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];

    for (int64_t i = 0; i < nb; i++, x += QK_K, qw += QK_K) {
        float sumx2 = 0;
        for (int j = 0; j < QK_K; j++)
            sumx2 += x[j] * x[j];
        float sigma2 = 2 * sumx2 / QK_K;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++)
                weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float sumw = 0;
            for (int l = 0; l < 16; l++)
                sumw += weight[l];
            sw[j] = sumw;
            scales[j] = s->qx(16, 4, x + 16 * j, L + 16 * j, weight);
        }
        memset(y[i].scales, 0, sizeof(y[i].scales));
        float d_block = s->qx(QK_K / 16, 32, scales, Ls, sw);
        for (int j = 0; j < QK_K / 16; j++)
            q3k_pack_scale(y[i].scales, j, Ls[j]);
        y[i].d = f2h(d_block);
        q3k_finish(x, &y[i], L);
    }
}

static void q3k_quantize_with(const float *x, void *dst, int64_t n, const float *imatrix,
                              const struct qsearch *s)
{
    if (imatrix)
        q3k_quantize_weighted(x, dst, n / QK_K, imatrix, s);
    else
        q3k_quantize_plain(x, dst, n / QK_K);
}

/* dequantize_row_q3_K */
static void q3k_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_q3_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d_all = h2f(x[i].d);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        uint8_t m = 1;
        int is = 0;
        for (int h = 0; h < QK_K; h += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int k = 0; k < 32; k += 16) {
                    float dl = d_all * q3k_scale(x[i].scales, is++);
                    for (int l = k; l < k + 16; l++)
                        *y++ = dl * (((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                }
            }
        }
    }
}

/* ggml_vec_dot_q3_K_q8_K_generic: integer sums in 8 lanes (element index
 * mod 8), each lane scaled to float and accumulated separately. */
static float q3k_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_q3_k *x = row;
    const struct blk_q8_k *y = qx;
    float sums[8] = {0}, sumf = 0;
    int8_t a[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, j = (e % 128) / 32, l = e % 32;
            int q = (x[i].qs[32 * h + l] >> (2 * j)) & 3;
            a[e] = (int8_t)(q - ((x[i].hmask[l] >> (4 * h + j)) & 1 ? 0 : 4));
        }
        int32_t aux32[8] = {0};
        for (int e = 0; e < QK_K; e++)
            aux32[e % 8] += q3k_scale(x[i].scales, e / 16) * (int16_t)(y[i].qs[e] * a[e]);
        const float d = h2f(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++)
            sums[l] += d * aux32[l];
    }
    for (int l = 0; l < 8; l++)
        sumf += sums[l];
    return sumf;
}

/* ---- Q4_K and Q5_K -------------------------------------------------------- */

/* Requantizes x against the final 6-bit scales and mins into L in [0, nmax]. */
static void qk4_requantize(const float *x, uint16_t dh, uint16_t mh, const uint8_t *scales,
                           int nmax, uint8_t *L)
{
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        scale_min_k4(j, scales, &sc, &m);
        const float d = h2f(dh) * sc;
        if (!d)
            continue;
        const float dm = h2f(mh) * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)clampi(ds_nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
    }
}

/* The sub-block search of quantize_row_q{4,5}_K_ref: x (256) -> scales,
 * dmin and L with quants in [0, nmax]. */
static void qk4_plain(const float *x, int nmax, float rmin, float rdelta, int nstep,
                      uint8_t *scales12, uint16_t *dh, uint16_t *mh, uint8_t *L,
                      const struct qsearch *s)
{
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = s->qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta,
                           nstep, false);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)ds_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)ds_nearest_int(inv_min * mins[j]);
        pack_scale_min_k4(scales12, j, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
    }
    *dh = f2h(max_scale / 63.f);
    *mh = f2h(max_min / 63.f);
    qk4_requantize(x, *dh, *mh, scales12, nmax, L);
}

/* The imatrix search of quantize_row_q{4,5}_K_impl (only Q5_K clamps the
 * 6-bit values, which matters only if make_qp_quants wrapped a negative). */
static void qk4_weighted(const float *x, const float *qw, int nmax, uint8_t *scales12, uint16_t *dh,
                         uint16_t *mh, uint8_t *L, const struct qsearch *s)
{
    uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; l++)
        sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; j++) {
        for (int l = 0; l < 32; l++)
            weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; l++)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = s->qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f,
                           36, false);
    }
    float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; j++) {
        if (nmax == 31)
            pack_scale_min_k4(scales12, j, Ls[j] < 63 ? Ls[j] : 63, Lm[j] < 63 ? Lm[j] : 63);
        else
            pack_scale_min_k4(scales12, j, Ls[j], Lm[j]);
    }
    *dh = f2h(d_block);
    *mh = f2h(m_block);
    qk4_requantize(x, *dh, *mh, scales12, nmax, L);
}

static void q4k_quantize_with(const float *x, void *dst, int64_t n, const float *imatrix,
                              const struct qsearch *s)
{
    struct blk_q4_k *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        memset(y[i].scales, 0, sizeof(y[i].scales));
        if (imatrix)
            qk4_weighted(x, imatrix + QK_K * i, 15, y[i].scales, &y[i].d, &y[i].dmin, L, s);
        else
            qk4_plain(x, 15, -1.f, 0.1f, 20, y[i].scales, &y[i].d, &y[i].dmin, L, s);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void q5k_quantize_with(const float *x, void *dst, int64_t n, const float *imatrix,
                              const struct qsearch *s)
{
    struct blk_q5_k *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        memset(y[i].scales, 0, sizeof(y[i].scales));
        if (imatrix)
            qk4_weighted(x, imatrix + QK_K * i, 31, y[i].scales, &y[i].d, &y[i].dmin, L, s);
        else
            qk4_plain(x, 31, -0.5f, 0.1f, 15, y[i].scales, &y[i].d, &y[i].dmin, L, s);
        // Quant 64k + l (l < 64): low nibble of qs[32k + l%32] (high nibble for
        // l >= 32), fifth bit in bit 2k + l/32 of qh[l%32].
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, sizeof(y[i].qh));
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < QK_K; k += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* dequantize_row_q4_K */
static void q4k_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_q4_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = h2f(x[i].d), min = h2f(x[i].dmin);
        for (int is = 0; is < 8; is += 2, q += 32) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* dequantize_row_q5_K */
static void q5k_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_q5_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const float d = h2f(x[i].d), min = h2f(x[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int is = 0; is < 8; is += 2, ql += 32) {
            uint8_t sc, m;
            scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

/* The generic Q4_K/Q5_K dot: a (256) unsigned quants of block i. */
static void qk4_dot_block(const int8_t *a, const uint8_t *scales12, uint16_t dh, uint16_t mh,
                          const struct blk_q8_k *y, float *sums, float *sumf)
{
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++)
        scale_min_k4(j, scales12, &sc[j], &mn[j]);
    int sumi = 0;
    for (int j = 0; j < QK_K / 16; j++)
        sumi += y->bsums[j] * mn[j / 2];
    int32_t aux32[8] = {0};
    for (int e = 0; e < QK_K; e++)
        aux32[e % 8] += sc[e / 32] * (int16_t)(y->qs[e] * a[e]);
    const float d = h2f(dh) * y->d;
    for (int l = 0; l < 8; l++)
        sums[l] += d * aux32[l];
    const float dmin = h2f(mh) * y->d;
    *sumf -= dmin * sumi;
}

/* ggml_vec_dot_q4_K_q8_K_generic */
static float q4k_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_q4_k *x = row;
    const struct blk_q8_k *y = qx;
    float sums[8] = {0}, sumf = 0;
    int8_t a[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int e = 0; e < QK_K; e++) {
            uint8_t b = x[i].qs[32 * (e / 64) + e % 32];
            a[e] = (int8_t)(e % 64 < 32 ? b & 0xF : b >> 4);
        }
        qk4_dot_block(a, x[i].scales, x[i].d, x[i].dmin, &y[i], sums, &sumf);
    }
    for (int l = 0; l < 8; l++)
        sumf += sums[l];
    return sumf;
}

/* ggml_vec_dot_q5_K_q8_K_generic */
static float q5k_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_q5_k *x = row;
    const struct blk_q8_k *y = qx;
    float sums[8] = {0}, sumf = 0;
    int8_t a[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int e = 0; e < QK_K; e++) {
            uint8_t b = x[i].qs[32 * (e / 64) + e % 32];
            int hb = (x[i].qh[e % 32] >> (e / 32)) & 1;
            a[e] = (int8_t)((e % 64 < 32 ? b & 0xF : b >> 4) + 16 * hb);
        }
        qk4_dot_block(a, x[i].scales, x[i].d, x[i].dmin, &y[i], sums, &sumf);
    }
    for (int l = 0; l < 8; l++)
        sumf += sums[l];
    return sumf;
}

/* ---- Q6_K ---------------------------------------------------------------- */

/* quantize_row_q6_K_ref (qw NULL) and quantize_row_q6_K_impl. */
static void q6k_quantize_with(const float *x, void *dst, int64_t n, const float *imatrix,
                              const struct qsearch *s)
{
    struct blk_q6_k *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];

    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        const float *qw = imatrix ? imatrix + QK_K * i : NULL;
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = s->qx(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(y[i]));
            y[i].d = f2h(0.f);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = f2h(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) {
            int l = ds_nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(l < 127 ? l : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            float d = h2f(y[i].d) * y[i].scales[j];
            if (!d)
                continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(clampi(ds_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
        }
        // Quant 128h + 32k + l: low nibble in ql[64h + 32(k&1) + l] (high
        // nibble for k >= 2), top two bits at bit 2k of qh[32h + l].
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

static inline int q6k_quant(const struct blk_q6_k *x, int e)
{
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    uint8_t b = x->ql[64 * h + 32 * (k & 1) + l];
    int lo = k < 2 ? b & 0xF : b >> 4;
    int hi = (x->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}

/* dequantize_row_q6_K */
static void q6k_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_q6_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(x[i].d);
        for (int e = 0; e < QK_K; e++)
            *y++ = d * x[i].scales[e / 16] * (float)q6k_quant(&x[i], e);
    }
}

/* ggml_vec_dot_q6_K_q8_K_generic */
static float q6k_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_q6_k *x = row;
    const struct blk_q8_k *y = qx;
    float sums[8] = {0}, sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int32_t aux32[8] = {0};
        for (int e = 0; e < QK_K; e++)
            aux32[e % 8] += x[i].scales[e / 16] * (int16_t)(y[i].qs[e] * q6k_quant(&x[i], e));
        const float d = h2f(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++)
            sums[l] += d * aux32[l];
    }
    for (int l = 0; l < 8; l++)
        sumf += sums[l];
    return sumf;
}

/* ---- IQ4_XS -------------------------------------------------------------- */

/* quantize_iq4_xs (quantize_row_iq4_nl_impl with super_block_size 256,
 * block_size 32, ntry 7): non-linear 4-bit values, 6-bit sub-block scales.
 * Without imatrix the weights are x^2. */
static void iq4xs_quantize_with(const float *xr, void *dst, int64_t n, const float *imatrix,
                                const struct qsearch *s)
{
    struct blk_iq4_xs *y = dst;
    uint8_t L[QK_K];
    float weight[32], scales[QK_K / 32];

    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        const float *x = xr + QK_K * ibl;
        const float *qwb = imatrix ? imatrix + QK_K * ibl : NULL;
        float sigma2 = 0;
        for (int j = 0; j < QK_K; j++)
            sigma2 += x[j] * x[j];
        sigma2 *= 2.f / QK_K;

        float max_scale = 0, amax_scale = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const float *xb = x + 32 * ib;
            if (qwb) {
                const float *qw = qwb + 32 * ib;
                for (int j = 0; j < 32; j++)
                    weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
            } else {
                for (int j = 0; j < 32; j++)
                    weight[j] = xb[j] * xb[j];
            }
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++) {
                float ax = fabsf(xb[j]);
                if (ax > amax) {
                    amax = ax;
                    max = xb[j];
                }
            }
            if (amax < GROUP_MAX_EPS) {
                scales[ib] = 0;
                continue;
            }
            float d = s->iq4(xb, weight, max);
            scales[ib] = d;
            float abs_d = fabsf(d);
            if (abs_d > amax_scale) {
                amax_scale = abs_d;
                max_scale = d;
            }
        }

        // The sub-block scales to 6 bits; every quant again against its final
        // scale (which makes ggml's first quants of each sub-block dead).
        y[ibl].scales_h = 0;
        float d = -max_scale / 32;
        y[ibl].d = f2h(d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int l = clampi(ds_nearest_int(id * scales[ib]), -32, 31);
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            s->iq4_index(x + 32 * ib, idl, L + 32 * ib);
            l += 32;
            if (ib % 2 == 0)
                y[ibl].scales_l[ib / 2] = (uint8_t)(l & 0xF);
            else
                y[ibl].scales_l[ib / 2] |= (uint8_t)((l & 0xF) << 4);
            y[ibl].scales_h |= (uint16_t)((l >> 4) << (2 * ib));
        }
        for (int i = 0; i < QK_K / 32; i++)
            for (int j = 0; j < 16; j++)
                y[ibl].qs[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
    }
}

static inline int iq4xs_scale(const struct blk_iq4_xs *x, int ib)
{
    return (((x->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) |
            (((x->scales_h >> (2 * ib)) & 3) << 4)) -
           32;
}

/* dequantize_row_iq4_xs */
static void iq4xs_dequantize_ref(const void *src, float *y, int64_t n)
{
    const struct blk_iq4_xs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *qs = x[i].qs;
        const float d = h2f(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32, qs += 16) {
            const float dl = d * iq4xs_scale(&x[i], ib);
            for (int j = 0; j < 16; j++) {
                y[j + 0] = dl * kvalues_iq4nl[qs[j] & 0xF];
                y[j + 16] = dl * kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* ggml_vec_dot_iq4_xs_q8_K_generic */
static float iq4xs_dot_ref(const void *row, const void *qx, int64_t n)
{
    const struct blk_iq4_xs *x = row;
    const struct blk_q8_k *y = qx;
    float sumf = 0;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        const float d4d8 = h2f(x[ibl].d) * y[ibl].d;
        const uint8_t *qs = x[ibl].qs;
        const int8_t *q8 = y[ibl].qs;
        for (int ib = 0; ib < QK_K / 32; ib++, qs += 16, q8 += 32) {
            const float dl = d4d8 * iq4xs_scale(&x[ibl], ib);
            int sumi1 = 0, sumi2 = 0;
            for (int j = 0; j < 16; j++) {
                sumi1 += q8[j + 0] * kvalues_iq4nl[qs[j] & 0xF];
                sumi2 += q8[j + 16] * kvalues_iq4nl[qs[j] >> 4];
            }
            sumf += dl * (sumi1 + sumi2);
        }
    }
    return sumf;
}

/* ---- Q8_K ---------------------------------------------------------------- */

/* quantize_row_q8_K_ref, with bsums also zeroed for an all-zero block. */
static void q8k_quantize_ref(const float *x, void *dst, int64_t n)
{
    struct blk_q8_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            int v = ds_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int ii = 0; ii < 16; ii++)
                sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ---- AVX2 ----------------------------------------------------------------
 *
 * The generic dot products of Q3_K .. Q6_K accumulate integers in 8 lanes,
 * lane l holding the elements whose index is l mod 8, and scale each lane to
 * float separately. To get the same lanes, the bytes of each 16-element
 * group are permuted so that maddubs adds elements j and j + 8 (the same
 * lane), and two such int16 vectors are interleaved so that madd adds two
 * groups' contributions to the same lane, each with its own scale. Integer
 * sums are exact in any order, so the lanes equal ggml's; the float steps
 * then repeat ggml's operations in ggml's order.
 */
#ifdef QK_X86

QK_AVX2 static inline __m256i load256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

QK_AVX2 static inline float h2f_f16c(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Within each 16-byte group, bytes j and j + 8 become adjacent. */
QK_AVX2 static inline __m256i mod8_pairs(__m256i v)
{
    const __m256i p = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 0, 8,
                                       1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    return _mm256_shuffle_epi8(v, p);
}

/* u (32 bytes, unsigned, < 128) . q8 (mod8_pairs of 32 signed bytes) ->
 * 16 int16: per 16-element group, lane k = u[k] q[k] + u[k+8] q[k+8]. */
QK_AVX2 static inline __m256i dot_pairs(__m256i u, __m256i q8p)
{
    return _mm256_maddubs_epi16(mod8_pairs(u), q8p);
}

/* int16 scale pairs (a0, b0) in the low 128 bits, (a1, b1) in the high. */
QK_AVX2 static inline __m256i scale_pairs(int a0, int b0, int a1, int b1)
{
    int32_t lo = (int32_t)((uint32_t)(uint16_t)a0 | (uint32_t)(uint16_t)b0 << 16);
    int32_t hi = (int32_t)((uint32_t)(uint16_t)a1 | (uint32_t)(uint16_t)b1 << 16);
    return _mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi);
}

/* Adds sa * va + sb * vb (s = scale_pairs(sa_lo, sb_lo, sa_hi, sb_hi)) to the
 * lanes: *lo gets lanes 0-3 and *hi lanes 4-7, in each 128-bit half. */
QK_AVX2 static inline void acc_mod8(__m256i *lo, __m256i *hi, __m256i va, __m256i vb, __m256i s)
{
    *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(va, vb), s));
    *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(va, vb), s));
}

/* The 8 lanes 0..7 from acc_mod8's two accumulators. */
QK_AVX2 static inline __m256i fold_mod8(__m256i lo, __m256i hi)
{
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                            _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* sums[l] += d * lanes[l], as ggml's loop does it. */
QK_AVX2 static inline __m256 acc_lanes(__m256 sums, float d, __m256i lanes)
{
    return _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes)));
}

/* sumf + sums[0] + ... + sums[7], left to right. */
QK_AVX2 static inline float add_in_order(float sumf, __m256 sums)
{
    float s[8];
    _mm256_storeu_ps(s, sums);
    for (int l = 0; l < 8; l++)
        sumf += s[l];
    return sumf;
}

/* Lane g of the result: the sum of the 8 lanes of s[g], g = 0..7. */
QK_AVX2 static inline __m256i hsum8_epi32(const __m256i *s)
{
    __m256i t0 = _mm256_hadd_epi32(s[0], s[1]), t1 = _mm256_hadd_epi32(s[2], s[3]);
    __m256i t2 = _mm256_hadd_epi32(s[4], s[5]), t3 = _mm256_hadd_epi32(s[6], s[7]);
    __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

QK_AVX2 static inline int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Bytes of v shifted right by k bits (per 16-bit lane; callers mask). */
QK_AVX2 static inline __m256i srl16(__m256i v, int k)
{
    return _mm256_srl_epi16(v, _mm_cvtsi32_si128(k));
}

/* 0xff where (v & bit) != 0, per byte. */
QK_AVX2 static inline __m256i bit_set(__m256i v, int bit)
{
    const __m256i b = _mm256_set1_epi8((char)bit);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, b), b);
}

/* Q6_K's 128 unsigned quants (value + 32) of half h of a block. */
QK_AVX2 static inline void q6k_unpack(const struct blk_q6_k *x, int h, __m256i u[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x30);
    __m256i ql0 = load256(x->ql + 64 * h), ql1 = load256(x->ql + 64 * h + 32);
    __m256i qh = load256(x->qh + 32 * h);
    u[0] =
        _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m3));
    u[1] =
        _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m3));
    u[2] =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m3));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), m3));
}

/* Q3_K's 32 unsigned quants (value + 4) 128h + 32j .. + 31 of a block. */
QK_AVX2 static inline __m256i q3k_unpack(__m256i q3, __m256i hm, int h, int j)
{
    __m256i low = _mm256_and_si256(srl16(q3, 2 * j), _mm256_set1_epi8(3));
    __m256i high = _mm256_and_si256(bit_set(hm, 1 << (4 * h + j)), _mm256_set1_epi8(4));
    return _mm256_or_si256(low, high);
}

/* 32 nibbles of IQ4_XS sub-block ib (16 bytes) -> their int8 values. */
QK_AVX2 static inline __m256i iq4xs_unpack(const uint8_t *qs)
{
    const __m128i tbl = _mm_loadu_si128((const __m128i *)kvalues_iq4nl);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i q4 = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_shuffle_epi8(tbl, _mm_and_si128(q4, m4));
    __m128i hi = _mm_shuffle_epi8(tbl, _mm_and_si128(_mm_srli_epi16(q4, 4), m4));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

QK_AVX2 static float q2k_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_q2_k *x = row;
    const struct blk_q8_k *y = qx;
    const __m256i m3 = _mm256_set1_epi8(3);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *sc = x[i].scales;
        int summs = 0;
        for (int j = 0; j < 16; j++)
            summs += y[i].bsums[j] * (sc[j] >> 4);
        const float dall = y[i].d * h2f_f16c(x[i].d);
        const float dmin = y[i].d * h2f_f16c(x[i].dmin);
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q2 = load256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                __m256i u = _mm256_and_si256(srl16(q2, 2 * j), m3);
                __m256i v = _mm256_maddubs_epi16(u, load256(y[i].qs + 128 * h + 32 * j));
                int s0 = sc[8 * h + 2 * j] & 0xF, s1 = sc[8 * h + 2 * j + 1] & 0xF;
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, scale_pairs(s0, s0, s1, s1)));
            }
        }
        int isum = hsum_epi32(acc);
        sumf += dall * isum - dmin * summs;
    }
    return sumf;
}

QK_AVX2 static float q3k_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_q3_k *x = row;
    const struct blk_q8_k *y = qx;
    const __m256i c4 = _mm256_set1_epi8(4);
    __m256 sums = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sc[16];
        for (int j = 0; j < 16; j++)
            sc[j] = q3k_scale(x[i].scales, j);
        __m256i hm = load256(x[i].hmask), lo = _mm256_setzero_si256(), hi = lo;
        for (int h = 0; h < 2; h++) {
            __m256i q3 = load256(x[i].qs + 32 * h), v[4];
            for (int j = 0; j < 4; j++) {
                __m256i q8p = mod8_pairs(load256(y[i].qs + 128 * h + 32 * j));
                v[j] = _mm256_sub_epi16(dot_pairs(q3k_unpack(q3, hm, h, j), q8p),
                                        _mm256_maddubs_epi16(c4, q8p));
            }
            const int *s = sc + 8 * h;
            acc_mod8(&lo, &hi, v[0], v[1], scale_pairs(s[0], s[2], s[1], s[3]));
            acc_mod8(&lo, &hi, v[2], v[3], scale_pairs(s[4], s[6], s[5], s[7]));
        }
        sums = acc_lanes(sums, h2f_f16c(x[i].d) * y[i].d, fold_mod8(lo, hi));
    }
    return add_in_order(0.0f, sums);
}

/* The unsigned quants of a Q4_K (qh NULL) or Q5_K block: a[t] the elements
 * 64t .. 64t + 31, b[t] 64t + 32 .. 64t + 63. */
QK_AVX2 static inline __attribute__((always_inline)) void
qk4_unpack_avx2(const uint8_t *qs, const uint8_t *qh, __m256i a[4], __m256i b[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), c16 = _mm256_set1_epi8(16);
    const __m256i h = qh ? load256(qh) : _mm256_setzero_si256();
    for (int t = 0; t < 4; t++) {
        __m256i q4 = load256(qs + 32 * t);
        a[t] = _mm256_and_si256(q4, m4);
        b[t] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
        if (qh) {
            a[t] = _mm256_or_si256(a[t], _mm256_and_si256(bit_set(h, 1 << (2 * t)), c16));
            b[t] = _mm256_or_si256(b[t], _mm256_and_si256(bit_set(h, 2 << (2 * t)), c16));
        }
    }
}

/* The Q4_K/Q5_K block: a[t], b[t] the unsigned quants 64t .. 64t+31 and
 * 64t+32 .. 64t+63; returns the 8 lanes. */
QK_AVX2 static inline __m256i qk4_lanes(const __m256i *a, const __m256i *b, const uint8_t *sc,
                                        const int8_t *q8)
{
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    for (int t = 0; t < 4; t++) {
        __m256i va = dot_pairs(a[t], mod8_pairs(load256(q8 + 64 * t)));
        __m256i vb = dot_pairs(b[t], mod8_pairs(load256(q8 + 64 * t + 32)));
        acc_mod8(&lo, &hi, va, vb, scale_pairs(sc[2 * t], sc[2 * t + 1], sc[2 * t], sc[2 * t + 1]));
    }
    return fold_mod8(lo, hi);
}

QK_AVX2 static float q4k_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_q4_k *x = row;
    const struct blk_q8_k *y = qx;
    __m256 sums = _mm256_setzero_ps();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            scale_min_k4(j, x[i].scales, &sc[j], &mn[j]);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; j++)
            sumi += y[i].bsums[j] * mn[j / 2];
        __m256i a[4], b[4];
        qk4_unpack_avx2(x[i].qs, NULL, a, b);
        sums = acc_lanes(sums, h2f_f16c(x[i].d) * y[i].d, qk4_lanes(a, b, sc, y[i].qs));
        const float dmin = h2f_f16c(x[i].dmin) * y[i].d;
        sumf -= dmin * sumi;
    }
    return add_in_order(sumf, sums);
}

/*
 * Batched dot products: one weight row against na activation rows (row
 * stride ys bytes), four at a time; each block's quants and scales are
 * unpacked once per four activations, then every output takes the single
 * kernel's steps in the single kernel's order, so out[c] equals the single
 * dot product bit for bit.
 */
#define ROWS_BEGIN(blk_t)                                                                  \
    const struct blk_t *x = row;                                                           \
    ROWS_LOOP
/* ROWS_BEGIN without x (the blocks of row i are the caller's business). */
#define ROWS_LOOP                                                                          \
    for (int64_t c0 = 0; c0 < na; c0 += 4) {                                               \
        const int nc = na - c0 < 4 ? (int)(na - c0) : 4;                                   \
        const struct blk_q8_k *yc[4];                                                      \
        __m256 sums[4];                                                                    \
        float sumf[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                          \
        for (int c = 0; c < nc; c++) {                                                     \
            yc[c] = (const struct blk_q8_k *)((const uint8_t *)qx + (size_t)(c0 + c) * ys); \
            sums[c] = _mm256_setzero_ps();                                                 \
        }                                                                                  \
        for (int64_t i = 0; i < n / QK_K; i++) {
#define ROWS_END                                                                           \
        }                                                                                  \
        for (int c = 0; c < nc; c++)                                                       \
            out[(c0 + c) * os] = add_in_order(sumf[c], sums[c]);                           \
    }

/* The Q4_K/Q5_K steps of block i for the nc activations yc (mn: the 8 mins;
 * sum_j bsums[j] * mn[j / 2] is an exact integer sum, here in vector lanes). */
QK_AVX2 static inline void qk4_rows_block(const __m256i *a, const __m256i *b, const uint8_t *sc,
                                          const uint8_t *mn, uint16_t d, uint16_t dmin,
                                          const struct blk_q8_k *const *yc, int64_t i, int nc,
                                          __m256 *sums, float *sumf)
{
    const __m256i mn16 = _mm256_setr_epi16(mn[0], mn[0], mn[1], mn[1], mn[2], mn[2], mn[3], mn[3],
                                           mn[4], mn[4], mn[5], mn[5], mn[6], mn[6], mn[7], mn[7]);
    for (int c = 0; c < nc; c++) {
        const struct blk_q8_k *y = yc[c] + i;
        const int sumi = hsum_epi32(_mm256_madd_epi16(load256(y->bsums), mn16));
        sums[c] = acc_lanes(sums[c], h2f_f16c(d) * y->d, qk4_lanes(a, b, sc, y->qs));
        const float dm = h2f_f16c(dmin) * y->d;
        sumf[c] -= dm * sumi;
    }
}

QK_AVX2 static void q4k_dot_rows_avx2(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    ROWS_BEGIN(blk_q4_k)
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++)
        scale_min_k4(j, x[i].scales, &sc[j], &mn[j]);
    __m256i a[4], b[4];
    qk4_unpack_avx2(x[i].qs, NULL, a, b);
    qk4_rows_block(a, b, sc, mn, x[i].d, x[i].dmin, yc, i, nc, sums, sumf);
    ROWS_END
}

QK_AVX2 static void q5k_dot_rows_avx2(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    ROWS_BEGIN(blk_q5_k)
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++)
        scale_min_k4(j, x[i].scales, &sc[j], &mn[j]);
    __m256i a[4], b[4];
    qk4_unpack_avx2(x[i].qs, x[i].qh, a, b);
    qk4_rows_block(a, b, sc, mn, x[i].d, x[i].dmin, yc, i, nc, sums, sumf);
    ROWS_END
}

QK_AVX2 static void q6k_dot_rows_avx2(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    const __m256i c32 = _mm256_set1_epi8(32);
    ROWS_BEGIN(blk_q6_k)
    __m256i u[2][4];
    q6k_unpack(&x[i], 0, u[0]);
    q6k_unpack(&x[i], 1, u[1]);
    for (int c = 0; c < nc; c++) {
        const struct blk_q8_k *y = yc[c] + i;
        __m256i lo = _mm256_setzero_si256(), hi = lo;
        for (int h = 0; h < 2; h++) {
            __m256i v[4];
            for (int k = 0; k < 4; k++) {
                __m256i q8p = mod8_pairs(load256(y->qs + 128 * h + 32 * k));
                v[k] = _mm256_sub_epi16(dot_pairs(u[h][k], q8p), _mm256_maddubs_epi16(c32, q8p));
            }
            const int8_t *S = x[i].scales + 8 * h;
            acc_mod8(&lo, &hi, v[0], v[1], scale_pairs(S[0], S[2], S[1], S[3]));
            acc_mod8(&lo, &hi, v[2], v[3], scale_pairs(S[4], S[6], S[5], S[7]));
        }
        sums[c] = acc_lanes(sums[c], h2f_f16c(x[i].d) * y->d, fold_mod8(lo, hi));
    }
    ROWS_END
}

QK_AVX2 static float q5k_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_q5_k *x = row;
    const struct blk_q8_k *y = qx;
    __m256 sums = _mm256_setzero_ps();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            scale_min_k4(j, x[i].scales, &sc[j], &mn[j]);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; j++)
            sumi += y[i].bsums[j] * mn[j / 2];
        __m256i a[4], b[4];
        qk4_unpack_avx2(x[i].qs, x[i].qh, a, b);
        sums = acc_lanes(sums, h2f_f16c(x[i].d) * y[i].d, qk4_lanes(a, b, sc, y[i].qs));
        const float dmin = h2f_f16c(x[i].dmin) * y[i].d;
        sumf -= dmin * sumi;
    }
    return add_in_order(sumf, sums);
}

QK_AVX2 static float q6k_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_q6_k *x = row;
    const struct blk_q8_k *y = qx;
    const __m256i c32 = _mm256_set1_epi8(32);
    __m256 sums = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i lo = _mm256_setzero_si256(), hi = lo;
        for (int h = 0; h < 2; h++) {
            __m256i u[4], v[4];
            q6k_unpack(&x[i], h, u);
            for (int k = 0; k < 4; k++) {
                __m256i q8p = mod8_pairs(load256(y[i].qs + 128 * h + 32 * k));
                v[k] = _mm256_sub_epi16(dot_pairs(u[k], q8p), _mm256_maddubs_epi16(c32, q8p));
            }
            const int8_t *s = x[i].scales + 8 * h;
            acc_mod8(&lo, &hi, v[0], v[1], scale_pairs(s[0], s[2], s[1], s[3]));
            acc_mod8(&lo, &hi, v[2], v[3], scale_pairs(s[4], s[6], s[5], s[7]));
        }
        sums = acc_lanes(sums, h2f_f16c(x[i].d) * y[i].d, fold_mod8(lo, hi));
    }
    return add_in_order(0.0f, sums);
}

QK_AVX2 static float iq4xs_dot_avx2(const void *row, const void *qx, int64_t n)
{
    const struct blk_iq4_xs *x = row;
    const struct blk_q8_k *y = qx;
    float sumf = 0;
    for (int64_t ibl = 0; ibl < n / QK_K; ibl++) {
        const float d4d8 = h2f_f16c(x[ibl].d) * y[ibl].d;
        __m256i s[8];
        for (int ib = 0; ib < QK_K / 32; ib++) {
            __m256i kv = iq4xs_unpack(x[ibl].qs + 16 * ib), q8 = load256(y[ibl].qs + 32 * ib);
            __m256i p0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(kv)),
                                           _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q8)));
            __m256i p1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(kv, 1)),
                                           _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q8, 1)));
            s[ib] = _mm256_add_epi32(p0, p1);
        }
        float dl[8], p[8];
        for (int ib = 0; ib < 8; ib++)
            dl[ib] = d4d8 * iq4xs_scale(&x[ibl], ib);
        _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(dl), _mm256_cvtepi32_ps(hsum8_epi32(s))));
        for (int ib = 0; ib < 8; ib++)
            sumf += p[ib];
    }
    return sumf;
}

/* y[0..15] = d0 * q[0..15] - m0, y[16..31] = d1 * q[16..31] - m1, q signed
 * bytes; with has_min false the subtraction is left out (y = d * q). */
QK_AVX2 static inline void emit32(float *y, __m256i q, float d0, float m0, float d1, float m1,
                                  bool has_min)
{
    __m128i half[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int k = 0; k < 2; k++) {
        __m256 d = _mm256_set1_ps(k ? d1 : d0), m = _mm256_set1_ps(k ? m1 : m0);
        __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(half[k]));
        __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(half[k], 8)));
        f0 = _mm256_mul_ps(d, f0);
        f1 = _mm256_mul_ps(d, f1);
        if (has_min) {
            f0 = _mm256_sub_ps(f0, m);
            f1 = _mm256_sub_ps(f1, m);
        }
        _mm256_storeu_ps(y + 16 * k, f0);
        _mm256_storeu_ps(y + 16 * k + 8, f1);
    }
}

QK_AVX2 static void q2k_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_q2_k *x = src;
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = h2f_f16c(x[i].d), min = h2f_f16c(x[i].dmin);
        for (int h = 0; h < 2; h++) {
            __m256i q2 = load256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                uint8_t s0 = x[i].scales[8 * h + 2 * j], s1 = x[i].scales[8 * h + 2 * j + 1];
                emit32(y + 128 * h + 32 * j, _mm256_and_si256(srl16(q2, 2 * j), m3), d * (s0 & 0xF),
                       min * (s0 >> 4), d * (s1 & 0xF), min * (s1 >> 4), true);
            }
        }
    }
}

QK_AVX2 static void q3k_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_q3_k *x = src;
    const __m256i c4 = _mm256_set1_epi8(4);
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d_all = h2f_f16c(x[i].d);
        __m256i hm = load256(x[i].hmask);
        for (int h = 0; h < 2; h++) {
            __m256i q3 = load256(x[i].qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                __m256i a = _mm256_sub_epi8(q3k_unpack(q3, hm, h, j), c4);
                int g = 8 * h + 2 * j;
                emit32(y + 128 * h + 32 * j, a, d_all * q3k_scale(x[i].scales, g), 0,
                       d_all * q3k_scale(x[i].scales, g + 1), 0, false);
            }
        }
    }
}

/* A Q4_K (qh NULL) or Q5_K block dequantized into y (256). */
QK_AVX2 static inline __attribute__((always_inline)) void
qk4_dequantize_block_avx2(const uint8_t *qs, const uint8_t *qh, const uint8_t *scales, uint16_t dh,
                          uint16_t mh, float *y)
{
    const float d = h2f_f16c(dh), min = h2f_f16c(mh);
    __m256i a[4], b[4];
    qk4_unpack_avx2(qs, qh, a, b);
    for (int t = 0; t < 4; t++) {
        uint8_t sc, m;
        scale_min_k4(2 * t, scales, &sc, &m);
        const float d1 = d * sc, m1 = min * m;
        emit32(y + 64 * t, a[t], d1, m1, d1, m1, true);
        scale_min_k4(2 * t + 1, scales, &sc, &m);
        const float d2 = d * sc, m2 = min * m;
        emit32(y + 64 * t + 32, b[t], d2, m2, d2, m2, true);
    }
}

QK_AVX2 static void q4k_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_q4_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K)
        qk4_dequantize_block_avx2(x[i].qs, NULL, x[i].scales, x[i].d, x[i].dmin, y);
}

QK_AVX2 static void q5k_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_q5_k *x = src;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K)
        qk4_dequantize_block_avx2(x[i].qs, x[i].qh, x[i].scales, x[i].d, x[i].dmin, y);
}

QK_AVX2 static void q6k_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_q6_k *x = src;
    const __m256i c32 = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = h2f_f16c(x[i].d);
        const int8_t *sc = x[i].scales;
        for (int h = 0; h < 2; h++) {
            __m256i u[4];
            q6k_unpack(&x[i], h, u);
            for (int k = 0; k < 4; k++) {
                int g = 8 * h + 2 * k;
                emit32(y + 128 * h + 32 * k, _mm256_sub_epi8(u[k], c32), d * sc[g], 0,
                       d * sc[g + 1], 0, false);
            }
        }
    }
}

QK_AVX2 static void iq4xs_dequantize_avx2(const void *src, float *y, int64_t n)
{
    const struct blk_iq4_xs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f_f16c(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++, y += 32) {
            const float dl = d * iq4xs_scale(&x[i], ib);
            emit32(y, iq4xs_unpack(x[i].qs + 16 * ib), dl, 0, dl, 0, false);
        }
    }
}

/* nearest_int on 8 lanes, the same bit trick (NaN gives 0, as it does). */
QK_AVX2 static inline __m256i nearest_int8x(__m256 f)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

/* quantize_row_q8_K_ref, vectorised: the same max, the same scale, each
 * element rounded the same way. */
QK_AVX2 static void q8k_quantize_avx2(const float *x, void *dst, int64_t n)
{
    struct blk_q8_k *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) // a NaN element loses, as in the scalar loop
            vmax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), vmax);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
        const float amax = _mm_cvtss_f32(m4);
        if (!amax) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        // The first element of largest magnitude gives the sign of the scale.
        float max = 0;
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            __m256 ax = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j));
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(ax, va, _CMP_EQ_OQ));
            if (mask) {
                max = x[j + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i c127 = _mm256_set1_epi32(127);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        __m256i g[16];
        for (int j = 0; j < QK_K; j += 32) {
            __m256i v[4];
            for (int k = 0; k < 4; k++) {
                __m256 f = _mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * k));
                v[k] = _mm256_min_epi32(nearest_int8x(f), c127);
            }
            g[j / 16] = _mm256_add_epi32(v[0], v[1]);
            g[j / 16 + 1] = _mm256_add_epi32(v[2], v[3]);
            __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), _mm256_permutevar8x32_epi32(p, order));
        }
        __m256i b = _mm256_packs_epi32(hsum8_epi32(g), hsum8_epi32(g + 8));
        _mm256_storeu_si256((__m256i *)y[i].bsums, _mm256_permute4x64_epi64(b, 0xD8));
        y[i].d = 1 / iscale;
    }
}

/* ---- vector search kernels ------------------------------------------------
 *
 * The scale searches try a list of candidate scales and keep the best. Here
 * each lane evaluates one candidate, accumulating over the elements in the
 * same order and with the same float operations as the scalar loop; then the
 * candidates are compared in the scalar order. The results are the scalar
 * ones, bit for bit.
 */

/* Quant level of make_qkx_quants' trials: v = iscale * xm, v > 0 ?
 * ds_nearest_int(min(v, nmax)) : 0, as floats. */
QK_AVX2 static inline __m256 qkx_level(__m256 iscale, float xm, __m256 vnmax)
{
    __m256 v = _mm256_mul_ps(iscale, _mm256_set1_ps(xm));
    __m256i l = nearest_int8x(_mm256_min_ps(v, vnmax));
    __m256 pos = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_and_ps(_mm256_cvtepi32_ps(l), pos);
}

QK_AVX2 static float make_qkx_quants_avx2(int n, int nmax, const float *x, const float *weights,
                                          uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                                          float rdelta, int nstep, bool use_mad)
{
    struct qkx_start st;
    if (!qkx_begin(n, nmax, x, weights, L, use_mad, &st) || nstep < 1) {
        *the_min = -st.min;
        return st.scale;
    }
    float min = st.min, max = st.max, sum_w = st.sum_w, sum_x = st.sum_x;
    float scale = st.scale, best_error = st.best_error;
    // Trials [is, is + 8) at a time against the current min. An accepted
    // trial that moves min invalidates the later lanes (the scalar loop
    // tries them with the new min): then the next window starts after it.
    const __m256 vnmax = _mm256_set1_ps((float)nmax), zero = _mm256_setzero_ps();
    const __m256 vsw = _mm256_set1_ps(sum_w), vsx = _mm256_set1_ps(sum_x);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int is = 0; is <= nstep;) {
        float tis[8], tD[8], tscale[8], tmin[8], terr[8];
        for (int k = 0; k < 8; k++)
            tis[k] = (rmin + rdelta * (is + k) + nmax) / (max - min);
        const __m256 vis = _mm256_loadu_ps(tis);
        __m256 sl = zero, sl2 = zero, sxl = zero;
        for (int i = 0; i < n; i++) {
            __m256 l = qkx_level(vis, x[i] - min, vnmax);
            __m256 wl = _mm256_mul_ps(_mm256_set1_ps(weights[i]), l);
            sl = _mm256_add_ps(sl, wl);
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, l));
            sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, _mm256_set1_ps(x[i])));
        }
        __m256 D = _mm256_sub_ps(_mm256_mul_ps(vsw, sl2), _mm256_mul_ps(sl, sl));
        __m256 ts =
            _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(vsw, sxl), _mm256_mul_ps(vsx, sl)), D);
        __m256 tm =
            _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sl2, vsx), _mm256_mul_ps(sl, sxl)), D);
        __m256 clip = _mm256_cmp_ps(tm, zero, _CMP_GT_OQ);
        tm = _mm256_blendv_ps(tm, zero, clip);
        ts = _mm256_blendv_ps(ts, _mm256_div_ps(sxl, sl2), clip);
        __m256 err = zero;
        for (int i = 0; i < n; i++) {
            __m256 l = qkx_level(vis, x[i] - min, vnmax);
            __m256 diff =
                _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(ts, l), tm), _mm256_set1_ps(x[i]));
            diff = use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
            err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_set1_ps(weights[i]), diff));
        }
        _mm256_storeu_ps(tD, D);
        _mm256_storeu_ps(tscale, ts);
        _mm256_storeu_ps(tmin, tm);
        _mm256_storeu_ps(terr, err);
        int next = is + 8;
        for (int k = 0; k < 8 && is + k <= nstep; k++) {
            if (!(tD[k] > 0 && terr[k] < best_error))
                continue;
            for (int i = 0; i < n; i++) {
                float v = tis[k] * (x[i] - min);
                L[i] = (uint8_t)(v > 0 ? ds_nearest_int(v < nmax ? v : (float)nmax) : 0);
            }
            best_error = terr[k];
            scale = tscale[k];
            bool moved = memcmp(&min, &tmin[k], sizeof(min)) != 0;
            min = tmin[k];
            if (moved) {
                next = is + k + 1;
                break;
            }
        }
        is = next;
    }
    (void)Laux;
    *the_min = -min;
    return scale;
}

QK_AVX2 static float make_qx_quants_avx2(int n, int nmax, const float *x, int8_t *L,
                                         const float *qw)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    // Lane k tries is = k - 9; is = 0 is the first guess.
    float tis[24], tlx[24], tl2[24];
    for (int k = 0; k < 24; k++) {
        int is = k < 19 ? k - 9 : 0;
        tis[k] = is ? -(nmax + 0.1f * is) / max : (float)-nmax / max;
    }
    const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1);
    for (int c = 0; c < 24; c += 8) {
        const __m256 vis = _mm256_loadu_ps(tis + c);
        __m256 slx = _mm256_setzero_ps(), sl2 = slx;
        for (int i = 0; i < n; i++) {
            __m256i li = nearest_int8x(_mm256_mul_ps(vis, _mm256_set1_ps(x[i])));
            __m256 l = _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(li, lo), hi));
            float w = qw ? qw[i] : x[i] * x[i];
            __m256 vw = _mm256_set1_ps(w);
            slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_set1_ps(w * x[i]), l));
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(vw, l), l));
        }
        _mm256_storeu_ps(tlx + c, slx);
        _mm256_storeu_ps(tl2 + c, sl2);
    }
    float scale = tl2[9] ? tlx[9] / tl2[9] : 0.0f;
    float best = scale * tlx[9];
    int chosen = 9;
    for (int k = 0; k < 19; k++) {
        if (k != 9 && tl2[k] > 0 && tlx[k] * tlx[k] > best * tl2[k]) {
            scale = tlx[k] / tl2[k];
            best = scale * tlx[k];
            chosen = k;
        }
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(nmax + clampi(ds_nearest_int(tis[chosen] * x[i]), -nmax, nmax - 1));
    return scale;
}

/* best_index_iq4 on 8 lanes: the number of midpoints at or below 2x. */
QK_AVX2 static inline __m256i iq4_index8(__m256 x)
{
    __m256 x2 = _mm256_add_ps(x, x);
    __m256i idx = _mm256_setzero_si256();
    for (int j = 1; j < 16; j++) {
        __m256 mid = _mm256_set1_ps((float)(kvalues_iq4nl[j - 1] + kvalues_iq4nl[j]));
        idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(x2, mid, _CMP_GE_OQ)));
    }
    return idx;
}

QK_AVX2 static inline __m256 iq4_value8(__m256i idx)
{
    const __m256 lo = _mm256_setr_ps(-127, -104, -83, -65, -49, -35, -22, -10);
    const __m256 hi = _mm256_setr_ps(1, 13, 25, 38, 53, 69, 89, 113);
    __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            upper);
}

QK_AVX2 static float iq4_search_avx2(const float *xb, const float *weight, float max)
{
    // Lanes 0..14: itry = -7..7; lane 15: the first guess.
    float id[16], sqx[16], sq2[16];
    for (int k = 0; k < 15; k++)
        id[k] = (k - 7 + kvalues_iq4nl[0]) / max;
    float d0 = -max / kvalues_iq4nl[0];
    id[15] = 1 / d0;
    for (int c = 0; c < 16; c += 8) {
        const __m256 vid = _mm256_loadu_ps(id + c);
        __m256 sumqx = _mm256_setzero_ps(), sumq2 = sumqx;
        for (int j = 0; j < 32; j++) {
            __m256 vx = _mm256_set1_ps(xb[j]);
            __m256 q = iq4_value8(iq4_index8(_mm256_mul_ps(vid, vx)));
            __m256 wq = _mm256_mul_ps(_mm256_set1_ps(weight[j]), q);
            sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, vx));
            sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
        }
        _mm256_storeu_ps(sqx + c, sumqx);
        _mm256_storeu_ps(sq2 + c, sumq2);
    }
    float d = sq2[15] > 0 ? sqx[15] / sq2[15] : 0.f;
    float best = d * sqx[15];
    for (int k = 0; k < 15; k++) {
        if (sq2[k] > 0 && sqx[k] * sqx[k] > best * sq2[k]) {
            d = sqx[k] / sq2[k];
            best = d * sqx[k];
        }
    }
    return d;
}

QK_AVX2 static void iq4_index_avx2(const float *x, float id, uint8_t *L)
{
    const __m256 vid = _mm256_set1_ps(id);
    int32_t idx[32];
    for (int j = 0; j < 32; j += 8)
        _mm256_storeu_si256((__m256i *)(idx + j),
                            iq4_index8(_mm256_mul_ps(vid, _mm256_loadu_ps(x + j))));
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)idx[j];
}

/* ---- AVX-512 (F, BW, VL, VNNI): the Q6_K dot product ---------------------
 *
 * The AVX2 scheme on twice the width: each 512-bit register holds two of the
 * AVX2 kernel's 32-element chunks, so its four 128-bit lanes are four
 * 16-element groups, and vpdpwssd does madd and add in one. The same 8 lanes
 * of exact integer sums come out, and the same float steps follow:
 * bit-exact with the scalar kernels. For Q4_K and Q5_K this scheme measured
 * 10-30% slower than the AVX2 kernels (bench/matmul.c), which AVX-512 CPUs
 * without VBMI therefore keep; with VBMI all three use the kernels below.
 */

QK_AVX512 static inline __m512i load2x256(const void *a, const void *b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(load256(a)), load256(b), 1);
}

QK_AVX512 static inline __m512i mod8_pairs512(__m512i v)
{
    const __m512i p = _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15));
    return _mm512_shuffle_epi8(v, p);
}

static inline int32_t pair16(int a, int b)
{
    return (int32_t)((uint32_t)(uint16_t)a | (uint32_t)(uint16_t)b << 16);
}

/* int16 scale pairs (a_k, b_k) for 128-bit lane k = 0..3. */
QK_AVX512 static inline __m512i scale_quads(int a0, int b0, int a1, int b1, int a2, int b2,
                                            int a3, int b3)
{
    int32_t p0 = pair16(a0, b0), p1 = pair16(a1, b1), p2 = pair16(a2, b2), p3 = pair16(a3, b3);
    return _mm512_setr_epi32(p0, p0, p0, p0, p1, p1, p1, p1, p2, p2, p2, p2, p3, p3, p3, p3);
}

/* acc_mod8 for 512 bits: sa * va + sb * vb into lanes 0-3 (*lo) and 4-7 (*hi). */
QK_AVX512 static inline void acc_mod8_512(__m512i *lo, __m512i *hi, __m512i va, __m512i vb,
                                          __m512i s)
{
    *lo = _mm512_dpwssd_epi32(*lo, _mm512_unpacklo_epi16(va, vb), s);
    *hi = _mm512_dpwssd_epi32(*hi, _mm512_unpackhi_epi16(va, vb), s);
}

QK_AVX512 static inline __m256i fold_mod8_512(__m512i lo, __m512i hi)
{
    return fold_mod8(_mm256_add_epi32(_mm512_castsi512_si256(lo), _mm512_extracti64x4_epi64(lo, 1)),
                     _mm256_add_epi32(_mm512_castsi512_si256(hi), _mm512_extracti64x4_epi64(hi, 1)));
}

/* maddubs of mod8-paired unsigned quants u with mod8-paired activations q8p. */
QK_AVX512 static inline __m512i dot_pairs512(__m512i u, __m512i q8p)
{
    return _mm512_maddubs_epi16(mod8_pairs512(u), q8p);
}

QK_AVX512 static float q6k_dot_avx512(const void *row, const void *qx, int64_t n)
{
    const struct blk_q6_k *x = row;
    const struct blk_q8_k *y = qx;
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(0x30),
                  c32 = _mm512_set1_epi8(32);
    __m256 sums = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *ql = x[i].ql;
        const int8_t *q8 = y[i].qs, *S = x[i].scales;
        __m512i ql0 = load2x256(ql, ql + 64), ql1 = load2x256(ql + 32, ql + 96);
        __m512i qh = _mm512_loadu_si512((const void *)x[i].qh), u[4], v[4];
        u[0] = _mm512_or_si512(_mm512_and_si512(ql0, m4),
                               _mm512_and_si512(_mm512_slli_epi16(qh, 4), m3));
        u[1] = _mm512_or_si512(_mm512_and_si512(ql1, m4),
                               _mm512_and_si512(_mm512_slli_epi16(qh, 2), m3));
        u[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql0, 4), m4),
                               _mm512_and_si512(qh, m3));
        u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql1, 4), m4),
                               _mm512_and_si512(_mm512_srli_epi16(qh, 2), m3));
        for (int k = 0; k < 4; k++) {
            __m512i q8p = mod8_pairs512(load2x256(q8 + 32 * k, q8 + 128 + 32 * k));
            v[k] = _mm512_sub_epi16(dot_pairs512(u[k], q8p), _mm512_maddubs_epi16(c32, q8p));
        }
        __m512i lo = _mm512_setzero_si512(), hi = lo;
        acc_mod8_512(&lo, &hi, v[0], v[1],
                     scale_quads(S[0], S[2], S[1], S[3], S[8], S[10], S[9], S[11]));
        acc_mod8_512(&lo, &hi, v[2], v[3],
                     scale_quads(S[4], S[6], S[5], S[7], S[12], S[14], S[13], S[15]));
        sums = acc_lanes(sums, h2f_f16c(x[i].d) * y[i].d, fold_mod8_512(lo, hi));
    }
    return add_in_order(0.0f, sums);
}

QK_AVX512 static void q6k_dot_rows_avx512(const void *row, const void *qx, size_t ys,
                                          int64_t na, int64_t n, float *out, int64_t os)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(0x30),
                  c32 = _mm512_set1_epi8(32);
    ROWS_BEGIN(blk_q6_k)
    const uint8_t *ql = x[i].ql;
    const int8_t *S = x[i].scales;
    __m512i ql0 = load2x256(ql, ql + 64), ql1 = load2x256(ql + 32, ql + 96);
    __m512i qh = _mm512_loadu_si512((const void *)x[i].qh), u[4];
    u[0] = mod8_pairs512(_mm512_or_si512(_mm512_and_si512(ql0, m4),
                                         _mm512_and_si512(_mm512_slli_epi16(qh, 4), m3)));
    u[1] = mod8_pairs512(_mm512_or_si512(_mm512_and_si512(ql1, m4),
                                         _mm512_and_si512(_mm512_slli_epi16(qh, 2), m3)));
    u[2] = mod8_pairs512(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql0, 4), m4),
                                         _mm512_and_si512(qh, m3)));
    u[3] = mod8_pairs512(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql1, 4), m4),
                                         _mm512_and_si512(_mm512_srli_epi16(qh, 2), m3)));
    const __m512i s01 = scale_quads(S[0], S[2], S[1], S[3], S[8], S[10], S[9], S[11]);
    const __m512i s23 = scale_quads(S[4], S[6], S[5], S[7], S[12], S[14], S[13], S[15]);
    for (int c = 0; c < nc; c++) {
        const struct blk_q8_k *y = yc[c] + i;
        const int8_t *q8 = y->qs;
        __m512i v[4];
        for (int k = 0; k < 4; k++) {
            __m512i q8p = mod8_pairs512(load2x256(q8 + 32 * k, q8 + 128 + 32 * k));
            v[k] = _mm512_sub_epi16(_mm512_maddubs_epi16(u[k], q8p),
                                    _mm512_maddubs_epi16(c32, q8p));
        }
        __m512i lo = _mm512_setzero_si512(), hi = lo;
        acc_mod8_512(&lo, &hi, v[0], v[1], s01);
        acc_mod8_512(&lo, &hi, v[2], v[3], s23);
        sums[c] = acc_lanes(sums[c], h2f_f16c(x[i].d) * y->d, fold_mod8_512(lo, hi));
    }
    ROWS_END
}

/* ---- AVX-512 with VBMI: the Q4_K and Q5_K dot products ---------------------
 *
 * vpermb moves the four elements of each 32-element chunk that share a lane
 * (l, l + 8, l + 16, l + 24) into one dword, in the weights and in the
 * activations alike. vpmaddubsw adds them in pairs and vpdpwssd multiplies
 * both pairs by the chunk's scale and adds them to the dword, so dword l holds
 * lane l of the chunk, an exact integer sum as in the scalar kernel. A 512-bit
 * register holds chunks 2t and 2t + 1 (dwords 0-7 and 8-15), added together
 * at the end of the block. Scales and mins are unpacked with 32-bit masks
 * (scales_mins_k4) and the mins' sum is one vpmaddwd, instead of scalar
 * loops. The float steps are the scalar kernel's: bit-exact. The AVX2 kernels
 * serve level 2 on CPUs without VBMI.
 */
#define QK_VBMI                                                                  \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni," \
                          "avx512vbmi")))

/* Inlined into each caller, so that q5 is a constant there. */
#define QK_FLAT __attribute__((always_inline))

/* Byte 32h + 4l + i of the result <- byte b_h + l + 8i of the source. */
#define LANE_DWORDS(b)                                                                             \
    b, b + 8, b + 16, b + 24, b + 1, b + 9, b + 17, b + 25, b + 2, b + 10, b + 18, b + 26, b + 3, \
        b + 11, b + 19, b + 27, b + 4, b + 12, b + 20, b + 28, b + 5, b + 13, b + 21, b + 29,     \
        b + 6, b + 14, b + 22, b + 30, b + 7, b + 15, b + 23, b + 31
static const uint8_t lane_dwords[3][64] = {
    {LANE_DWORDS(0), LANE_DWORDS(32)}, /* two chunks, each in place */
    {LANE_DWORDS(0), LANE_DWORDS(0)},  /* the first chunk in both halves */
    {LANE_DWORDS(32), LANE_DWORDS(32)} /* the second chunk in both halves */
};
#undef LANE_DWORDS

/* scale_min_k4 for j = 0..7 at once: the 8 scales in the bytes of *sc and
 * the 8 mins in those of *mn (x86 is little-endian). */
static inline void scales_mins_k4(const uint8_t *q, uint64_t *sc, uint64_t *mn)
{
    uint32_t u[3];
    memcpy(u, q, sizeof(u));
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t s03 = u[0] & m6, m03 = u[1] & m6;
    const uint32_t s47 = (u[2] & m4) | ((u[0] >> 6) & m2) << 4;
    const uint32_t m47 = ((u[2] >> 4) & m4) | ((u[1] >> 6) & m2) << 4;
    *sc = s03 | (uint64_t)s47 << 32;
    *mn = m03 | (uint64_t)m47 << 32;
}

/* A Q4_K/Q5_K block unpacked: w[t] the unsigned quants of chunks 2t, 2t + 1
 * in lane-dword order, s[t] their scales as int16 (chunk 2t in the low half),
 * mn16 the min of each 16-element group (for the bsums). */
struct qk4_vbmi {
    __m512i w[4], s[4];
    __m256i mn16;
};

/* qh: Q5_K's fifth bits, NULL for Q4_K. */
QK_VBMI static inline void qk4_unpack_vbmi(const uint8_t *qs, const uint8_t *qh,
                                           const uint8_t *scales, struct qk4_vbmi *b)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i first = _mm512_loadu_si512(lane_dwords[1]);
    const __m512i second = _mm512_loadu_si512(lane_dwords[2]);
    for (int u = 0; u < 2; u++) {
        /* 32-byte piece p holds chunk 2p (low nibbles) and 2p + 1 (high) */
        const __m512i q = _mm512_loadu_si512(qs + 64 * u);
        const __m512i p0 = _mm512_permutexvar_epi8(first, q);
        const __m512i p1 = _mm512_permutexvar_epi8(second, q);
        b->w[2 * u] = _mm512_and_si512(_mm512_mask_srli_epi16(p0, 0xFFFF0000u, p0, 4), m4);
        b->w[2 * u + 1] = _mm512_and_si512(_mm512_mask_srli_epi16(p1, 0xFFFF0000u, p1, 4), m4);
    }
    if (qh) {
        /* bit j of qh[m]: element m of chunk j */
        const __m512i h = _mm512_permutexvar_epi8(first, _mm512_zextsi256_si512(load256(qh)));
        const __m512i bits = _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(1),
                                                    _mm512_set1_epi8(2));
        const __m512i c16 = _mm512_set1_epi8(16);
        for (int t = 0; t < 4; t++) {
            const __mmask64 k = _mm512_test_epi8_mask(h, _mm512_slli_epi16(bits, 2 * t));
            b->w[t] = _mm512_mask_add_epi8(b->w[t], k, b->w[t], c16);
        }
    }
    uint64_t sc, mn;
    scales_mins_k4(scales, &sc, &mn);
    const __m512i s16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
    const __m512i halves = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_setzero_si512(),
                                                   _mm512_set1_epi16(1));
    for (int t = 0; t < 4; t++)
        b->s[t] = _mm512_permutexvar_epi16(
            _mm512_add_epi16(halves, _mm512_set1_epi16((short)(2 * t))), s16);
    const __m128i m = _mm_cvtsi64_si128((long long)mn);
    b->mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
}

/* Block b of the weight row against activation block y: the 8 lanes added to
 * *sums (times d y.d), the mins' term subtracted from *sumf. */
/* The 8 integer lanes of block b against activation block y. */
QK_VBMI static inline __m256i qk4_lanes_vbmi(const struct qk4_vbmi *b, const struct blk_q8_k *y)
{
    const __m512i pair = _mm512_loadu_si512(lane_dwords[0]);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0;
    for (int t = 0; t < 4; t += 2) {
        const __m512i a0 = _mm512_permutexvar_epi8(pair, _mm512_loadu_si512(y->qs + 64 * t));
        const __m512i a1 = _mm512_permutexvar_epi8(pair, _mm512_loadu_si512(y->qs + 64 * t + 64));
        acc0 = _mm512_dpwssd_epi32(acc0, _mm512_maddubs_epi16(b->w[t], a0), b->s[t]);
        acc1 = _mm512_dpwssd_epi32(acc1, _mm512_maddubs_epi16(b->w[t + 1], a1), b->s[t + 1]);
    }
    const __m512i acc = _mm512_add_epi32(acc0, acc1);
    return _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
}

/* Block b of the weight row against activation block y: the 8 lanes added to
 * *sums (times d y.d), the mins' term subtracted from *sumf. */
QK_VBMI static inline void qk4_acc_vbmi(const struct qk4_vbmi *b, uint16_t d, uint16_t dmin,
                                        const struct blk_q8_k *y, __m256 *sums, float *sumf)
{
    const int sumi = hsum_epi32(_mm256_madd_epi16(load256(y->bsums), b->mn16));
    *sums = acc_lanes(*sums, h2f_f16c(d) * y->d, qk4_lanes_vbmi(b, y));
    const float dm = h2f_f16c(dmin) * y->d;
    *sumf -= dm * sumi;
}

/* Block i of a Q4_K (q5 false) or Q5_K row, unpacked; *d, *dmin its scales. */
QK_VBMI QK_FLAT static inline void qk4_block_vbmi(const void *row, bool q5, int64_t i,
                                                  struct qk4_vbmi *b, uint16_t *d, uint16_t *dmin)
{
    if (q5) {
        const struct blk_q5_k *x = (const struct blk_q5_k *)row + i;
        qk4_unpack_vbmi(x->qs, x->qh, x->scales, b);
        *d = x->d, *dmin = x->dmin;
    } else {
        const struct blk_q4_k *x = (const struct blk_q4_k *)row + i;
        qk4_unpack_vbmi(x->qs, NULL, x->scales, b);
        *d = x->d, *dmin = x->dmin;
    }
}

QK_VBMI QK_FLAT static inline float qk4_dot_vbmi(const void *row, bool q5, const void *qx,
                                                  int64_t n)
{
    const struct blk_q8_k *y = qx;
    __m256 sums = _mm256_setzero_ps();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        struct qk4_vbmi b;
        uint16_t d, dmin;
        qk4_block_vbmi(row, q5, i, &b, &d, &dmin);
        qk4_acc_vbmi(&b, d, dmin, &y[i], &sums, &sumf);
    }
    return add_in_order(sumf, sums);
}

/* out[c * os] for the 4 activation rows y[c]: each row's 8 float lanes in
 * its own register, and the mins' term of the 4 rows in the lanes of one
 * vector (the scalar kernel's operations, elementwise). */
QK_VBMI QK_FLAT static inline void qk4_rows4_vbmi(const void *row, bool q5,
                                                  const struct blk_q8_k *const *y, int64_t nb,
                                                  float *out, int64_t os)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    __m128 sumf = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        struct qk4_vbmi b;
        uint16_t d, dmin;
        qk4_block_vbmi(row, q5, i, &b, &d, &dmin);
        const __m256i m0 = _mm256_madd_epi16(load256(y[0][i].bsums), b.mn16);
        const __m256i m1 = _mm256_madd_epi16(load256(y[1][i].bsums), b.mn16);
        const __m256i m2 = _mm256_madd_epi16(load256(y[2][i].bsums), b.mn16);
        const __m256i m3 = _mm256_madd_epi16(load256(y[3][i].bsums), b.mn16);
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(m0, m1), _mm256_hadd_epi32(m2, m3));
        const __m128i sumi =
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        const float dw = h2f_f16c(d);
        s0 = acc_lanes(s0, dw * y[0][i].d, qk4_lanes_vbmi(&b, &y[0][i]));
        s1 = acc_lanes(s1, dw * y[1][i].d, qk4_lanes_vbmi(&b, &y[1][i]));
        s2 = acc_lanes(s2, dw * y[2][i].d, qk4_lanes_vbmi(&b, &y[2][i]));
        s3 = acc_lanes(s3, dw * y[3][i].d, qk4_lanes_vbmi(&b, &y[3][i]));
        const __m128 yd = _mm_setr_ps(y[0][i].d, y[1][i].d, y[2][i].d, y[3][i].d);
        const __m128 dm = _mm_mul_ps(_mm_set1_ps(h2f_f16c(dmin)), yd);
        sumf = _mm_sub_ps(sumf, _mm_mul_ps(dm, _mm_cvtepi32_ps(sumi)));
    }
    float sf[4];
    _mm_storeu_ps(sf, sumf);
    out[0] = add_in_order(sf[0], s0);
    out[os] = add_in_order(sf[1], s1);
    out[2 * os] = add_in_order(sf[2], s2);
    out[3 * os] = add_in_order(sf[3], s3);
}

QK_VBMI QK_FLAT static inline void qk4_dot_rows_vbmi(const void *row, bool q5, const void *qx,
                                                     size_t ys, int64_t na, int64_t n, float *out,
                                                     int64_t os)
{
    int64_t c0 = 0;
    for (; c0 + 4 <= na; c0 += 4) {
        const struct blk_q8_k *y[4];
        for (int c = 0; c < 4; c++)
            y[c] = (const struct blk_q8_k *)((const uint8_t *)qx + (size_t)(c0 + c) * ys);
        qk4_rows4_vbmi(row, q5, y, n / QK_K, out + c0 * os, os);
    }
    for (; c0 < na; c0++)
        out[c0 * os] = qk4_dot_vbmi(row, q5, (const uint8_t *)qx + (size_t)c0 * ys, n);
}

QK_VBMI static float q4k_dot_vbmi(const void *row, const void *qx, int64_t n)
{
    return qk4_dot_vbmi(row, false, qx, n);
}

QK_VBMI static float q5k_dot_vbmi(const void *row, const void *qx, int64_t n)
{
    return qk4_dot_vbmi(row, true, qx, n);
}

QK_VBMI static void q4k_dot_rows_vbmi(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    qk4_dot_rows_vbmi(row, false, qx, ys, na, n, out, os);
}

QK_VBMI static void q5k_dot_rows_vbmi(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    qk4_dot_rows_vbmi(row, true, qx, ys, na, n, out, os);
}

/* Q6_K the same way: chunk j (elements 32j ..) has 16-element groups 2j and
 * 2j + 1, whose pairs (l, l + 8) and (l + 16, l + 24) vpmaddubsw makes, so
 * vpdpwssd takes the two group scales as its int16 pair. u[t]: the unsigned
 * quants (value + 32) of chunks 2t, 2t + 1 in lane-dword order; s[t]: their
 * group scales. */
QK_VBMI static inline void q6k_unpack_vbmi(const struct blk_q6_k *x, __m512i u[4], __m512i s[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(0x30);
    const __m512i pair = _mm512_loadu_si512(lane_dwords[0]);
    const __m512i first = _mm512_loadu_si512(lane_dwords[1]);
    /* the high bits: chunk 4h + q has bits 2q, 2q + 1 of qh[32h + m] */
    const __m512i shl = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(4),
                                                _mm512_set1_epi16(2));
    const __m512i shr = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_setzero_si512(),
                                                _mm512_set1_epi16(2));
    for (int h = 0; h < 2; h++) {
        /* chunk 4h + q has the low (q < 2) or high nibbles of ql[64h + 32 (q & 1) + m] */
        const __m512i l = _mm512_permutexvar_epi8(pair, _mm512_loadu_si512(x->ql + 64 * h));
        const __m512i q =
            _mm512_permutexvar_epi8(first, _mm512_zextsi256_si512(load256(x->qh + 32 * h)));
        u[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                   _mm512_and_si512(_mm512_sllv_epi16(q, shl), m3));
        u[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi16(q, shr), m3));
    }
    /* dword j of the widened scales is the pair of chunk j */
    const __m512i s16 = _mm512_zextsi256_si512(
        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales)));
    const __m512i halves = _mm512_mask_blend_epi32(0xFF00u, _mm512_setzero_si512(),
                                                   _mm512_set1_epi32(1));
    for (int t = 0; t < 4; t++)
        s[t] = _mm512_permutexvar_epi32(_mm512_add_epi32(halves, _mm512_set1_epi32(2 * t)), s16);
}

QK_VBMI static inline __m256 q6k_acc_vbmi(const __m512i u[4], const __m512i s[4], uint16_t d,
                                          const struct blk_q8_k *y, __m256 sums)
{
    const __m512i pair = _mm512_loadu_si512(lane_dwords[0]), c32 = _mm512_set1_epi8(32);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0;
    for (int t = 0; t < 4; t += 2) {
        const __m512i a0 = _mm512_permutexvar_epi8(pair, _mm512_loadu_si512(y->qs + 64 * t));
        const __m512i a1 = _mm512_permutexvar_epi8(pair, _mm512_loadu_si512(y->qs + 64 * t + 64));
        const __m512i v0 = _mm512_sub_epi16(_mm512_maddubs_epi16(u[t], a0),
                                            _mm512_maddubs_epi16(c32, a0));
        const __m512i v1 = _mm512_sub_epi16(_mm512_maddubs_epi16(u[t + 1], a1),
                                            _mm512_maddubs_epi16(c32, a1));
        acc0 = _mm512_dpwssd_epi32(acc0, v0, s[t]);
        acc1 = _mm512_dpwssd_epi32(acc1, v1, s[t + 1]);
    }
    const __m512i acc = _mm512_add_epi32(acc0, acc1);
    const __m256i lanes =
        _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    return acc_lanes(sums, h2f_f16c(d) * y->d, lanes);
}

QK_VBMI static float q6k_dot_vbmi(const void *row, const void *qx, int64_t n)
{
    const struct blk_q6_k *x = row;
    const struct blk_q8_k *y = qx;
    __m256 sums = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i u[4], s[4];
        q6k_unpack_vbmi(&x[i], u, s);
        sums = q6k_acc_vbmi(u, s, x[i].d, &y[i], sums);
    }
    return add_in_order(0.0f, sums);
}

QK_VBMI static void q6k_dot_rows_vbmi(const void *row, const void *qx, size_t ys, int64_t na,
                                      int64_t n, float *out, int64_t os)
{
    ROWS_BEGIN(blk_q6_k)
    __m512i u[4], s[4];
    q6k_unpack_vbmi(&x[i], u, s);
    for (int c = 0; c < nc; c++)
        sums[c] = q6k_acc_vbmi(u, s, x[i].d, yc[c] + i, sums[c]);
    ROWS_END
}

static const struct qsearch search_avx2 = {make_qkx_quants_avx2, make_qx_quants_avx2,
                                           iq4_search_avx2, iq4_index_avx2};

#define QK_SELECT(fn) (ds_simd_level() >= 1 ? fn##_avx2 : fn##_ref)
#define QK_SELECT512(fn) \
    (ds_simd_level() >= 2 ? fn##_avx512 : ds_simd_level() >= 1 ? fn##_avx2 : fn##_ref)
#define QK_SELECT_VBMI(fn) (ds_simd_vbmi() ? fn##_vbmi : QK_SELECT(fn))
#define QK_SELECT512_VBMI(fn) (ds_simd_vbmi() ? fn##_vbmi : QK_SELECT512(fn))
#define QK_SEARCH (ds_simd_level() >= 1 ? &search_avx2 : &search_ref)

/* The batched dot products of the level in effect. */
#define QK_ROWS(t, sel)                                                                           \
    static void t##_dot_rows(const void *row, const void *qx, size_t ys, int64_t na, int64_t n,   \
                             float *out, int64_t os)                                              \
    {                                                                                             \
        if (ds_simd_level() >= 1) {                                                               \
            sel(t##_dot_rows)(row, qx, ys, na, n, out, os);                                       \
            return;                                                                               \
        }                                                                                         \
        for (int64_t c = 0; c < na; c++)                                                          \
            out[c * os] = t##_dot_ref(row, (const uint8_t *)qx + (size_t)c * ys, n);              \
    }
#define QK_ROWS512(fn) (ds_simd_level() >= 2 ? fn##_avx512 : fn##_avx2)
#define QK_ROWS_VBMI(fn) (ds_simd_vbmi() ? fn##_vbmi : fn##_avx2)
#define QK_ROWS512_VBMI(fn) (ds_simd_vbmi() ? fn##_vbmi : QK_ROWS512(fn))
QK_ROWS(q4k, QK_ROWS_VBMI)
QK_ROWS(q5k, QK_ROWS_VBMI)
QK_ROWS(q6k, QK_ROWS512_VBMI)
#define QK_ROWS_FN(t) t##_dot_rows
#else
#define QK_SELECT(fn) fn##_ref
#define QK_SELECT512(fn) fn##_ref
#define QK_SELECT_VBMI(fn) fn##_ref
#define QK_SELECT512_VBMI(fn) fn##_ref
#define QK_SEARCH (&search_ref)
#define QK_ROWS_FN(t) NULL
#endif /* QK_X86 */

/* ---- dispatch ------------------------------------------------------------- */

void ds_quantize_q8_k(const float *x, void *dst, int64_t n)
{
    QK_SELECT(q8k_quantize)(x, dst, n);
}

/* sel: the selector of the dot product (the dequantizer is AVX2 or scalar). */
#define QK_KERNELS(t, sel)                                                                         \
    static void t##_dequantize(const void *src, float *y, int64_t n)                               \
    {                                                                                              \
        QK_SELECT(t##_dequantize)(src, y, n);                                                      \
    }                                                                                              \
    static float t##_dot(const void *row, const void *qx, int64_t n)                               \
    {                                                                                              \
        return sel(t##_dot)(row, qx, n);                                                           \
    }

QK_KERNELS(q2k, QK_SELECT)
QK_KERNELS(q3k, QK_SELECT)
QK_KERNELS(q4k, QK_SELECT_VBMI)
QK_KERNELS(q5k, QK_SELECT_VBMI)
QK_KERNELS(q6k, QK_SELECT512_VBMI)
QK_KERNELS(iq4xs, QK_SELECT)

/* Quantizers: the same algorithm with the scalar search kernels (_ref) or
 * the vector ones, which give the same bytes. */
#define QK_QUANTIZERS(t)                                                                           \
    static void t##_quantize_ref(const float *x, void *dst, int64_t n, const float *im)            \
    {                                                                                              \
        t##_quantize_with(x, dst, n, im, &search_ref);                                             \
    }                                                                                              \
    static void t##_quantize(const float *x, void *dst, int64_t n, const float *im)                \
    {                                                                                              \
        t##_quantize_with(x, dst, n, im, QK_SEARCH);                                               \
    }

QK_QUANTIZERS(q2k)
QK_QUANTIZERS(q3k)
QK_QUANTIZERS(q4k)
QK_QUANTIZERS(q5k)
QK_QUANTIZERS(q6k)
QK_QUANTIZERS(iq4xs)

static const struct ds_qtype k_types[] = {
    {DS_TYPE_Q2_K, DS_TYPE_Q8_K, q2k_quantize, q2k_quantize_ref, q2k_dequantize, q2k_dequantize_ref,
     q2k_dot, q2k_dot_ref, NULL},
    {DS_TYPE_Q3_K, DS_TYPE_Q8_K, q3k_quantize, q3k_quantize_ref, q3k_dequantize, q3k_dequantize_ref,
     q3k_dot, q3k_dot_ref, NULL},
    {DS_TYPE_Q4_K, DS_TYPE_Q8_K, q4k_quantize, q4k_quantize_ref, q4k_dequantize, q4k_dequantize_ref,
     q4k_dot, q4k_dot_ref, QK_ROWS_FN(q4k)},
    {DS_TYPE_Q5_K, DS_TYPE_Q8_K, q5k_quantize, q5k_quantize_ref, q5k_dequantize, q5k_dequantize_ref,
     q5k_dot, q5k_dot_ref, QK_ROWS_FN(q5k)},
    {DS_TYPE_Q6_K, DS_TYPE_Q8_K, q6k_quantize, q6k_quantize_ref, q6k_dequantize, q6k_dequantize_ref,
     q6k_dot, q6k_dot_ref, QK_ROWS_FN(q6k)},
    {DS_TYPE_IQ4_XS, DS_TYPE_Q8_K, iq4xs_quantize, iq4xs_quantize_ref, iq4xs_dequantize,
     iq4xs_dequantize_ref, iq4xs_dot, iq4xs_dot_ref, NULL},
};

const struct ds_qtype *ds_qtype_k(enum ds_type t)
{
    for (size_t i = 0; i < sizeof(k_types) / sizeof(k_types[0]); i++)
        if (k_types[i].type == t)
            return &k_types[i];
    return NULL;
}
