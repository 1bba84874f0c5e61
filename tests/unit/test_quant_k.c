/* test_quant_k.c - the 256-element block types (Q2_K .. Q6_K, IQ4_XS) and Q8_K:
 * hand-built blocks, quantization error, imatrix weighting, vector kernels
 * against their scalar twins. Bit-exactness against llama.cpp itself is
 * checked by test_quant_ggml.c. */
#include <stdint.h>

#include "ds_quant.h"
#include "quant_impl.h"
#include "simd_levels.h"
#include "test.h"

#define QK 256

static const enum ds_type k_types[] = {DS_TYPE_Q2_K, DS_TYPE_Q3_K, DS_TYPE_Q4_K,
                                       DS_TYPE_Q5_K, DS_TYPE_Q6_K, DS_TYPE_IQ4_XS};
#define N_TYPES (sizeof(k_types) / sizeof(k_types[0]))

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double urand(void)
{
    return (double)(rng() >> 11) * (1.0 / 9007199254740992.0);
}

static float gauss(void)
{
    double u = urand(), v = urand();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static void fill_gauss(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss();
}

static uint16_t h(float f)
{
    return ds_f32_to_f16(f);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static size_t row_bytes(enum ds_type t, int64_t n)
{
    return (size_t)(n / QK) * ds_type_block_bytes(t);
}

/* Dequantizes one hand-built block with both kernels and compares. */
static int check_block(enum ds_type t, const uint8_t *blk, const float *want)
{
    float y[QK], yr[QK];
    if (ds_dequantize_row(t, blk, y, QK) != DS_OK || ds_dequantize_row_ref(t, blk, yr, QK) != DS_OK)
        return -2;
    for (int i = 0; i < QK; i++) {
        if (y[i] != want[i] || yr[i] != want[i]) {
            fprintf(stderr, "  %s element %d: got %g (ref %g), want %g\n", ds_type_name(t), i, y[i],
                    yr[i], want[i]);
            return i;
        }
    }
    return -1;
}

/* ---- layout -------------------------------------------------------------- */

TEST(layout)
{
    static const size_t bytes[N_TYPES] = {84, 110, 144, 176, 210, 136};
    for (size_t k = 0; k < N_TYPES; k++) {
        ASSERT(ds_quant_supported(k_types[k]));
        ASSERT_EQ_INT(ds_type_block_size(k_types[k]), QK);
        ASSERT_EQ_INT(ds_type_block_bytes(k_types[k]), bytes[k]);
        ASSERT_EQ_INT(ds_quant_vec_type(k_types[k]), DS_TYPE_Q8_K);
        ASSERT(ds_qtype_k(k_types[k]) != NULL);
    }
    ASSERT_EQ_INT(ds_type_block_bytes(DS_TYPE_Q8_K), 292);
    ASSERT(ds_qtype_k(DS_TYPE_Q4_0) == NULL);
    ASSERT(ds_qtype_k(DS_TYPE_Q8_K) == NULL);
    fprintf(stderr, "     (vector kernels: %s)\n", ds_quant_simd());
}

TEST(bad_sizes)
{
    float x[QK] = {0};
    uint8_t q[176];
    ASSERT_ERR(ds_quantize_row(DS_TYPE_Q4_K, x, q, 100, NULL), DS_ERR_ARG);
    ASSERT_ERR(ds_dequantize_row(DS_TYPE_Q6_K, q, x, 32), DS_ERR_ARG);
    ASSERT_ERR(ds_quantize_vec(DS_TYPE_Q8_K, x, q, 128), DS_ERR_ARG);
    ASSERT_OK(ds_quantize_row(DS_TYPE_Q5_K, x, q, 0, NULL));
}

/* ---- hand-built blocks ----------------------------------------------------- */

/* Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82; element 128h + 32j + l
 * is bits 2j of qs[32h + l], sub-block e / 16 has scale (low) and min (high). */
TEST(q2k_hand)
{
    uint8_t b[84] = {0};
    float want[QK] = {0};
    put16(b + 80, h(0.5f));
    put16(b + 82, h(0.25f));
    b[2] = 0x13;             // sub-block 2: scale 3, min 1
    b[12] = 0x21;            // sub-block 12: scale 1, min 2
    b[16 + 5] = 3 << 2;      // element 37 = 32 + 5: q = 3
    b[16 + 32 + 8] = 2 << 4; // element 200 = 128 + 64 + 8: q = 2
    for (int e = 32; e < 48; e++)
        want[e] = -0.25f;
    for (int e = 192; e < 208; e++)
        want[e] = -0.5f;
    want[37] = 0.5f * 3 * 3 - 0.25f;
    want[200] = 0.5f * 1 * 2 - 0.5f;
    ASSERT_EQ_INT(check_block(DS_TYPE_Q2_K, b, want), -1);
}

/* Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108. A set hmask bit
 * means "no -4"; scales are 6 bits minus 32. */
TEST(q3k_hand)
{
    uint8_t b[110] = {0};
    float want[QK] = {0};
    memset(b, 0xff, 32);
    put16(b + 108, h(0.5f));
    // every scale 32 (= 0) except sub-block 0 (33 = +1) and 13 (29 = -3)
    b[96 + 0] = 33 & 0xF;
    b[96 + 5] = (29 & 0xF) << 4;
    b[96 + 8] = 0xAA | (33 >> 4);                   // j = 0, 4, 8, 12: high bits
    b[96 + 9] = (uint8_t)(0x2A | ((29 >> 4) << 6)); // j = 1, 5, 9, 13
    b[96 + 10] = 0xAA;
    b[96 + 11] = 0xAA;
    b[32 + 5] = 3;                // element 5: q = 3, high bit set
    b[32 + 32 + 18] = 1 << 4;     // element 128 + 64 + 18 = 210: low bits 1
    b[18] &= (uint8_t) ~(1 << 6); // ... and no high bit: q = 1 - 4
    want[5] = 0.5f * 1 * 3;
    want[210] = 0.5f * -3 * -3;
    ASSERT_EQ_INT(check_block(DS_TYPE_Q3_K, b, want), -1);
}

/* Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16; element 64t + l is the
 * low nibble of qs[32t + l] (high nibble for l >= 32). */
TEST(q4k_hand)
{
    uint8_t b[144] = {0};
    float want[QK] = {0};
    put16(b, h(1.0f));
    put16(b + 2, h(0.5f));
    uint8_t *s = b + 4;
    s[0] = 2;                              // sub-block 0: scale 2
    s[4] = 3;                              // ... min 3
    s[9] = (42 & 0xF) | ((21 & 0xF) << 4); // sub-block 5: scale 42, min 21
    s[1] |= (42 >> 4) << 6;
    s[5] |= (21 >> 4) << 6;
    b[16 + 3] = 7;             // element 3
    b[16 + 64 + 10] = 15 << 4; // element 128 + 32 + 10 = 170
    for (int e = 0; e < 32; e++)
        want[e] = -1.5f;
    for (int e = 160; e < 192; e++)
        want[e] = -10.5f;
    want[3] = 2 * 7 - 1.5f;
    want[170] = 42 * 15 - 10.5f;
    ASSERT_EQ_INT(check_block(DS_TYPE_Q4_K, b, want), -1);
}

/* Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48; the fifth
 * bit of element e is bit e / 32 of qh[e % 32]. */
TEST(q5k_hand)
{
    uint8_t b[176] = {0};
    float want[QK] = {0};
    put16(b, h(1.0f));
    put16(b + 2, h(0.5f));
    uint8_t *s = b + 4;
    s[0] = 2;
    s[4] = 3;
    s[9] = (42 & 0xF) | ((21 & 0xF) << 4);
    s[1] |= (42 >> 4) << 6;
    s[5] |= (21 >> 4) << 6;
    b[16 + 3] = 1 << 0;        // element 3: fifth bit only, q = 16
    b[16 + 10] = 1 << 5;       // element 170: fifth bit ...
    b[48 + 64 + 10] = 15 << 4; // ... and low bits 15: q = 31
    for (int e = 0; e < 32; e++)
        want[e] = -1.5f;
    for (int e = 160; e < 192; e++)
        want[e] = -10.5f;
    want[3] = 2 * 16 - 1.5f;
    want[170] = 42 * 31 - 10.5f;
    ASSERT_EQ_INT(check_block(DS_TYPE_Q5_K, b, want), -1);
}

/* Q6_K: ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208; element
 * 128h + 32k + l: nibble of ql[64h + 32(k & 1) + l] (high for k >= 2), top
 * bits at bit 2k of qh[32h + l]; value minus 32. */
TEST(q6k_hand)
{
    uint8_t b[210] = {0};
    float want[QK] = {0};
    put16(b + 208, h(0.25f));
    b[192 + 0] = 4;
    b[192 + 15] = (uint8_t)-2;
    b[1] = 0x0F; // element 1: 63 - 32
    b[128 + 1] = 3;
    b[64 + 32 + 26] = 5 << 4; // element 128 + 96 + 26 = 250: 37 - 32
    b[128 + 32 + 26] = 2 << 6;
    for (int e = 0; e < 16; e++)
        want[e] = 0.25f * 4 * -32;
    for (int e = 240; e < 256; e++)
        want[e] = 0.25f * -2 * -32;
    want[1] = 0.25f * 4 * 31;
    want[250] = 0.25f * -2 * 5;
    ASSERT_EQ_INT(check_block(DS_TYPE_Q6_K, b, want), -1);
}

/* IQ4_XS: d @0, scales_h @2, scales_l[4] @4, qs[128] @8; sub-block scale
 * (low nibble | 2 high bits) - 32; values from the IQ4_NL table. */
TEST(iq4xs_hand)
{
    uint8_t b[136] = {0};
    float want[QK] = {0};
    put16(b, h(0.5f));
    // every scale 32 (= 0) except sub-block 0 (34 = +2) and 3 (31 = -1)
    put16(b + 2, 0xAA6A);
    b[4] = 0x02;
    b[5] = 0xF0;
    b[8 + 1] = 0xF0; // element 17: table[15] = 113; the rest table[0]
    for (int e = 0; e < 32; e++)
        want[e] = 0.5f * 2 * -127;
    for (int e = 96; e < 128; e++)
        want[e] = 0.5f * -1 * -127;
    want[17] = 0.5f * 2 * 113;
    ASSERT_EQ_INT(check_block(DS_TYPE_IQ4_XS, b, want), -1);
}

/* ---- Q8_K ------------------------------------------------------------------ */

/* quantize_row_q8_K_ref, written again for the comparison. */
static void q8k_scalar(const float *x, uint8_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK, dst += 292) {
        float max = 0, amax = 0;
        memset(dst, 0, 292);
        for (int j = 0; j < QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (!amax)
            continue;
        float iscale = -127.f / max, d = 1 / iscale;
        memcpy(dst, &d, 4);
        for (int j = 0; j < QK; j++) {
            float v = iscale * x[j];
            int8_t q = isnan(v) ? 0 : (int8_t)(rintf(v) < 127 ? rintf(v) : 127);
            dst[4 + j] = (uint8_t)q;
            int16_t s;
            memcpy(&s, dst + 260 + 2 * (j / 16), 2);
            s = (int16_t)(s + q);
            memcpy(dst + 260 + 2 * (j / 16), &s, 2);
        }
    }
}

TEST(q8k)
{
    const int64_t n = 8 * QK;
    float x[8 * QK];
    uint8_t q[8 * 292], want[8 * 292];
    for (int rep = 0; rep < 20; rep++) {
        fill_gauss(x, n);
        for (int i = 0; i < QK; i++)
            x[2 * QK + i] = 0; // an all-zero block
        x[3 * QK + 7] = -50;   // a negative maximum ...
        x[3 * QK + 9] = 50;    // ... tied with a later positive one
        x[4 * QK + rep] = NAN; // skipped by the maximum, quantized to 0
        ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_K, x, q, n));
        q8k_scalar(x, want, n);
        ASSERT(!memcmp(q, want, sizeof(q)));
        for (int b = 0; b < 8; b++) {
            const uint8_t *blk = q + 292 * b;
            float d;
            memcpy(&d, blk, 4);
            int sum = 0;
            for (int j = 0; j < QK; j++) {
                int8_t v = (int8_t)blk[4 + j];
                sum += v;
                ASSERT(v != -128);
                if (!isnan(x[QK * b + j]))
                    ASSERT(fabsf(d * v - x[QK * b + j]) <= fabsf(d) * 0.5001f);
                if (j % 16 == 15) {
                    int16_t bs;
                    memcpy(&bs, blk + 260 + 2 * (j / 16), 2);
                    ASSERT_EQ_INT(bs, sum);
                    sum = 0;
                }
            }
        }
        float d3;
        memcpy(&d3, q + 3 * 292, 4);
        ASSERT(d3 > 0 && (int8_t)q[3 * 292 + 4 + 7] == -127 && (int8_t)q[3 * 292 + 4 + 9] == 127);
        for (int j = 0; j < 292; j++)
            ASSERT_EQ_INT(q[2 * 292 + j], 0);
    }
}

/* ---- quantization error -------------------------------------------------------- */

/* Relative RMS error of quantize -> dequantize, optionally weighted. */
static double rel_rmse(enum ds_type t, const float *x, const float *imatrix, const float *weight,
                       int64_t n, uint8_t *q)
{
    double e2, x2;
    if (ds_quantize_row(t, x, q, n, imatrix) != DS_OK ||
        ds_quant_error(t, x, q, n, weight, &e2, &x2) != DS_OK)
        return INFINITY;
    return sqrt(e2 / x2);
}

/* Without imatrix the bytes are llama.cpp's (quantize_row_*_ref), and so is
 * the error: over 20 seeds of N(0, 1) rows of 64 blocks it ranged q2_K
 * 0.293-0.300, q3_K 0.149-0.153, q4_K 0.0707-0.0718, q5_K 0.0356-0.0364,
 * q6_K 0.0175-0.0179, iq4_xs 0.0759-0.0773. */
TEST(rmse_gaussian)
{
    static const double bound[N_TYPES] = {0.31, 0.16, 0.075, 0.038, 0.019, 0.080};
    const int64_t n = 64 * QK;
    float *x = malloc(sizeof(float) * n);
    uint8_t *q = malloc(row_bytes(DS_TYPE_Q6_K, n));
    ASSERT(x && q);
    fill_gauss(x, n);
    for (size_t k = 0; k < N_TYPES; k++) {
        double r = rel_rmse(k_types[k], x, NULL, NULL, n, q);
        fprintf(stderr, "     %-7s relative rmse %.4f (bound %.3f)\n", ds_type_name(k_types[k]), r,
                bound[k]);
        ASSERT_MSG(r < bound[k], "%s: %g", ds_type_name(k_types[k]), r);
    }
    free(x);
    free(q);
}

/* Degenerate rows: zeros, constants, one spike, tiny and huge values. */
TEST(edge_rows)
{
    float x[2 * QK], y[2 * QK];
    uint8_t q[2 * 210], q8[2 * 292];
    for (int kind = 0; kind < 6; kind++) {
        for (int i = 0; i < 2 * QK; i++) {
            switch (kind) {
            case 0:
                x[i] = 0;
                break;
            case 1:
                x[i] = 0.75f;
                break;
            case 2:
                x[i] = i == 77 ? -3.0f : 0.0f;
                break;
            case 3:
                x[i] = gauss() * 1e-30f;
                break;
            case 4:
                x[i] = gauss() * 1e4f;
                break;
            default:
                x[i] = -fabsf(gauss());
                break;
            }
        }
        ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_K, x, q8, 2 * QK));
        for (size_t k = 0; k < N_TYPES; k++) {
            enum ds_type t = k_types[k];
            ASSERT_OK(ds_quantize_row(t, x, q, 2 * QK, NULL));
            ASSERT_OK(ds_dequantize_row(t, q, y, 2 * QK));
            double e2 = 0, x2 = 0;
            for (int i = 0; i < 2 * QK; i++) {
                ASSERT_MSG(isfinite(y[i]), "%s kind %d element %d", ds_type_name(t), kind, i);
                e2 += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                x2 += (double)x[i] * x[i];
            }
            if (kind == 0)
                ASSERT(e2 == 0);
            if (kind == 1 || kind == 2 || kind == 4 || kind == 5)
                ASSERT_MSG(e2 <= 0.3 * x2, "%s kind %d: %g", ds_type_name(t), kind, e2 / x2);
            float a = ds_quant_dot(t, q, q8, 2 * QK), b = ds_quant_dot_ref(t, q, q8, 2 * QK);
            ASSERT(isfinite(a) && !memcmp(&a, &b, sizeof(a)));
        }
    }
}

/* With an importance matrix the error it weights is lower than without. */
TEST(imatrix_weighting)
{
    const int64_t n = 32 * QK;
    float *x = malloc(sizeof(float) * n), *im = malloc(sizeof(float) * n);
    uint8_t *q = malloc(row_bytes(DS_TYPE_Q6_K, n)), *qr = malloc(row_bytes(DS_TYPE_Q6_K, n));
    ASSERT(x && im && q && qr);
    fill_gauss(x, n);
    for (int64_t i = 0; i < n; i++)
        im[i] = expf(1.5f * gauss()); // a few columns matter much more
    for (size_t k = 0; k < N_TYPES; k++) {
        enum ds_type t = k_types[k];
        double plain = rel_rmse(t, x, NULL, im, n, q);
        double weighted = rel_rmse(t, x, im, im, n, q);
        fprintf(stderr, "     %-7s imatrix-weighted rmse %.4f without imatrix, %.4f with\n",
                ds_type_name(t), plain, weighted);
        ASSERT_MSG(weighted < 0.97 * plain, "%s: %g vs %g", ds_type_name(t), weighted, plain);
        ASSERT_OK(ds_quantize_row_ref(t, x, qr, n, im));
        ASSERT(!memcmp(q, qr, row_bytes(t, n)));
    }
    free(x);
    free(im);
    free(q);
    free(qr);
}

/* ---- vector kernels against their scalar twins ------------------------------------ */

/* Random block bytes with finite fp16 scales (at the offsets of the type). */
static void random_blocks(enum ds_type t, uint8_t *q, int64_t nb)
{
    size_t bb = ds_type_block_bytes(t);
    for (size_t i = 0; i < bb * (size_t)nb; i++)
        q[i] = (uint8_t)rng();
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *p = q + bb * (size_t)b;
        float d = (float)(gauss() * 0.01), m = (float)(gauss() * 0.01);
        switch (t) {
        case DS_TYPE_Q2_K:
            put16(p + 80, h(d));
            put16(p + 82, h(m));
            break;
        case DS_TYPE_Q3_K:
            put16(p + 108, h(d));
            break;
        case DS_TYPE_Q4_K:
        case DS_TYPE_Q5_K:
        case DS_TYPE_IQ4_XS:
            put16(p, h(d));
            if (t != DS_TYPE_IQ4_XS)
                put16(p + 2, h(m));
            break;
        default:
            put16(p + 208, h(d));
            break;
        }
    }
}

/* Random Q8_K blocks: every int8 value (-128 too), bsums as quantized or
 * arbitrary (the kernels read them, as ggml's do). */
static void random_q8k(uint8_t *q8, int64_t nb, bool raw_bsums)
{
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *p = q8 + 292 * b;
        float d = (float)(gauss() * 0.02);
        memcpy(p, &d, 4);
        for (int j = 0; j < QK; j++)
            p[4 + j] = (uint8_t)rng();
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += (int8_t)p[4 + 16 * j + l];
            int16_t v = raw_bsums ? (int16_t)rng() : (int16_t)s;
            memcpy(p + 260 + 2 * j, &v, 2);
        }
    }
}

/* Dot of a row with Q8_K activations from its dequantized floats, in double. */
static double dot_double(enum ds_type t, const uint8_t *q, const uint8_t *q8, int64_t n,
                         double *mag)
{
    float y[QK];
    double s = 0, a = 0;
    for (int64_t b = 0; b < n / QK; b++) {
        float d;
        memcpy(&d, q8 + 292 * b, 4);
        ds_dequantize_row_ref(t, q + ds_type_block_bytes(t) * (size_t)b, y, QK);
        for (int j = 0; j < QK; j++) {
            double p = (double)y[j] * d * (int8_t)q8[292 * b + 4 + j];
            s += p;
            a += fabs(p);
        }
    }
    *mag = a;
    return s;
}

TEST(simd_vs_ref)
{
    const int64_t n = 16 * QK;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    float *yr = malloc(sizeof(float) * n);
    uint8_t *q = malloc(row_bytes(DS_TYPE_Q6_K, n)), *qr = malloc(row_bytes(DS_TYPE_Q6_K, n));
    uint8_t *q8 = malloc(292 * (size_t)(n / QK));
    ASSERT(x && y && yr && q && qr && q8);
    for (size_t k = 0; k < N_TYPES; k++) {
        enum ds_type t = k_types[k];
        size_t rb = row_bytes(t, n);
        for (int rep = 0; rep < 12; rep++) {
            // quantize: the optimised entry and the reference give the same bytes
            fill_gauss(x, n);
            ASSERT_OK(ds_quantize_row(t, x, q, n, NULL));
            ASSERT_OK(ds_quantize_row_ref(t, x, qr, n, NULL));
            ASSERT(!memcmp(q, qr, rb));
            if (rep >= 4)
                random_blocks(t, q, n / QK);
            // dequantize: bit-exact
            ASSERT_OK(ds_dequantize_row(t, q, y, n));
            ASSERT_OK(ds_dequantize_row_ref(t, q, yr, n));
            ASSERT_MSG(!memcmp(y, yr, sizeof(float) * (size_t)n), "%s dequantize rep %d",
                       ds_type_name(t), rep);
            // dot: bit-exact, and equal to the float dot up to float rounding
            if (rep < 8)
                ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_K, x, q8, n));
            else
                random_q8k(q8, n / QK, rep >= 10);
            float a = ds_quant_dot(t, q, q8, n), b = ds_quant_dot_ref(t, q, q8, n);
            ASSERT_MSG(!memcmp(&a, &b, sizeof(a)), "%s dot rep %d: %.9g vs %.9g", ds_type_name(t),
                       rep, a, b);
            if (rep < 10) {
                double mag, want = dot_double(t, q, q8, n, &mag);
                ASSERT_MSG(fabs(a - want) <= 1e-5 * mag, "%s dot rep %d: %.9g vs %.9g",
                           ds_type_name(t), rep, a, want);
            }
        }
    }
    free(x);
    free(y);
    free(yr);
    free(q);
    free(qr);
    free(q8);
}

/* The vector quantizers give the reference bytes, on data that exercises
 * their shortcuts (outliers, sparse rows, ties, one-signed rows). */
TEST(quantize_simd_vs_ref)
{
    const int64_t n = 16 * QK;
    float *x = malloc(sizeof(float) * n), *im = malloc(sizeof(float) * n);
    uint8_t *q = malloc(row_bytes(DS_TYPE_Q6_K, n)), *qr = malloc(row_bytes(DS_TYPE_Q6_K, n));
    ASSERT(x && im && q && qr);
    for (int kind = 0; kind < 7; kind++) {
        for (int64_t i = 0; i < n; i++) {
            float g = gauss();
            switch (kind) {
            case 0:
                x[i] = g;
                break;
            case 1:
                x[i] = urand() < 0.01 ? 50 * g : 0.01f * g;
                break;
            case 2:
                x[i] = urand() < 0.9 ? 0 : g;
                break;
            case 3:
                x[i] = (float)(int)(4 * g);
                break;
            case 4:
                x[i] = fabsf(g) + 0.5f;
                break;
            case 5:
                x[i] = -fabsf(g) * 1e-3f;
                break;
            default:
                x[i] = g * g * g;
                break;
            }
            im[i] = expf(2 * gauss());
        }
        for (size_t k = 0; k < N_TYPES; k++) {
            enum ds_type t = k_types[k];
            for (int w = 0; w < 2; w++) {
                ASSERT_OK(ds_quantize_row(t, x, q, n, w ? im : NULL));
                ASSERT_OK(ds_quantize_row_ref(t, x, qr, n, w ? im : NULL));
                ASSERT_MSG(!memcmp(q, qr, row_bytes(t, n)), "%s kind %d imatrix %d",
                           ds_type_name(t), kind, w);
            }
        }
    }
    free(x);
    free(im);
    free(q);
    free(qr);
}

/* The float-activation dot agrees with the quantized one to Q8_K's precision. */
TEST(dot_f32)
{
    const int64_t n = 8 * QK;
    float x[8 * QK], w[8 * QK];
    uint8_t q[8 * 210], q8[8 * 292];
    fill_gauss(x, n);
    fill_gauss(w, n);
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_K, x, q8, n));
    for (size_t k = 0; k < N_TYPES; k++) {
        enum ds_type t = k_types[k];
        ASSERT_OK(ds_quantize_row(t, w, q, n, NULL));
        float a = ds_quant_dot_f32(t, q, x, n), b = ds_quant_dot(t, q, q8, n);
        ASSERT_MSG(fabsf(a - b) < 0.02f * sqrtf((float)n), "%s: %g vs %g", ds_type_name(t), a, b);
    }
}

/* The optimised kernels against the reference (run at every SIMD level). */
static void level_tests(void)
{
    RUN(simd_vs_ref);
    RUN(quantize_simd_vs_ref);
}

int main(void)
{
    every_simd_level(level_tests);
    RUN(layout);
    RUN(bad_sizes);
    RUN(q2k_hand);
    RUN(q3k_hand);
    RUN(q4k_hand);
    RUN(q5k_hand);
    RUN(q6k_hand);
    RUN(iq4xs_hand);
    RUN(q8k);
    RUN(rmse_gaussian);
    RUN(edge_rows);
    RUN(imatrix_weighting);
    RUN(dot_f32);
    return test_report();
}
