/* test_quant_legacy.c - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q8_0 and Q8_1 activations:
 * hand-built blocks, quantization error, SIMD vs _ref twins, imatrix weighting. */
#include <stdint.h>

#include "ds_error.h"
#include "ds_quant.h"
#include "ds_tensor.h"
#include "quant_impl.h"
#include "simd_levels.h"
#include "test.h"

static const enum ds_type types[] = {DS_TYPE_Q4_0, DS_TYPE_Q4_1, DS_TYPE_Q5_0,
                                     DS_TYPE_Q5_1, DS_TYPE_Q8_0, DS_TYPE_IQ4_NL};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static const int8_t kvalues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double uniform(void)
{
    return ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
}

static float gauss(void)
{
    return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static size_t row_bytes(enum ds_type t, int64_t n)
{
    return (size_t)(n / ds_type_block_size(t)) * ds_type_block_bytes(t);
}

/* A random finite f16 of moderate size (|v| in [2^-14, 2^4)). */
static uint16_t rand_f16(void)
{
    return (uint16_t)((rng() & 0x8000) | (uint16_t)((1 + rng() % 18) << 10) | (rng() & 0x3ff));
}

/* Random blocks of t with finite f16 scales (d, and m for Q4_1/Q5_1, s for Q8_1). */
static void rand_blocks(enum ds_type t, uint8_t *q, int64_t n)
{
    size_t bb = ds_type_block_bytes(t);
    for (size_t i = 0; i < row_bytes(t, n); i++)
        q[i] = (uint8_t)rng();
    for (size_t i = 0; i < row_bytes(t, n); i += bb) {
        wr16(q + i, rand_f16());
        if (t == DS_TYPE_Q4_1 || t == DS_TYPE_Q5_1 || t == DS_TYPE_Q8_1)
            wr16(q + i + 2, rand_f16());
    }
}

static int same_floats(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* ---- hand-built blocks ------------------------------------------------------ */

static void check_deq(enum ds_type t, const uint8_t *blk, const float *want, int *ok)
{
    float y[32], yr[32];
    *ok = 0;
    if (ds_dequantize_row(t, blk, y, 32) != DS_OK || ds_dequantize_row_ref(t, blk, yr, 32))
        return;
    for (int j = 0; j < 32; j++) {
        if (y[j] != want[j] || yr[j] != want[j]) {
            fprintf(stderr, "%s element %d: got %g / ref %g, want %g\n", ds_type_name(t), j,
                    y[j], yr[j], want[j]);
            return;
        }
    }
    *ok = 1;
}

TEST(hand_q4_0)
{
    uint8_t b[18];
    float want[32];
    int ok;
    wr16(b, 0x3800); // 0.5
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (uint8_t)(j | (15 - j) << 4);
        want[j] = (float)(j - 8) * 0.5f;
        want[j + 16] = (float)(7 - j) * 0.5f;
    }
    check_deq(DS_TYPE_Q4_0, b, want, &ok);
    ASSERT(ok);
    ASSERT(want[0] == -4.0f && want[16] == 3.5f && want[15] == 3.5f && want[31] == -4.0f);
}

TEST(hand_q4_1)
{
    uint8_t b[20];
    float want[32];
    int ok;
    wr16(b, 0x3400);     // d = 0.25
    wr16(b + 2, 0xbc00); // m = -1
    for (int j = 0; j < 16; j++) {
        b[4 + j] = (uint8_t)(j | (j ^ 5) << 4);
        want[j] = (float)j * 0.25f - 1.0f;
        want[j + 16] = (float)(j ^ 5) * 0.25f - 1.0f;
    }
    check_deq(DS_TYPE_Q4_1, b, want, &ok);
    ASSERT(ok);
    ASSERT(want[0] == -1.0f && want[16] == 0.25f && want[15] == 2.75f);
}

TEST(hand_q5_0)
{
    uint8_t b[22] = {0};
    float want[32];
    int ok;
    const uint32_t qh = 0xa5a5f00fu;
    wr16(b, 0x4000); // d = 2
    b[2] = 0x0f, b[3] = 0xf0, b[4] = 0xa5, b[5] = 0xa5;
    for (int j = 0; j < 16; j++)
        b[6 + j] = (uint8_t)((j * 7 & 15) | (j * 3 & 15) << 4);
    for (int k = 0; k < 32; k++) {
        int lo = k < 16 ? b[6 + k] & 15 : b[6 + k - 16] >> 4;
        int q = lo | (int)((qh >> k) & 1) << 4;
        want[k] = (float)(q - 16) * 2.0f;
    }
    // by hand: e0 = 0|16 -> 0; e1 = 7|16 -> 14; e16 = 0|16 -> 0; e17 = 3 -> -26
    ASSERT(want[0] == 0.0f && want[1] == 14.0f && want[16] == 0.0f && want[17] == -26.0f);
    check_deq(DS_TYPE_Q5_0, b, want, &ok);
    ASSERT(ok);
}

TEST(hand_q5_1)
{
    uint8_t b[24] = {0};
    float want[32];
    int ok;
    wr16(b, 0x3800);     // d = 0.5
    wr16(b + 2, 0x4200); // m = 3
    b[4] = 0xff, b[5] = 0xff; // qh: elements 0..15 have the fifth bit
    for (int j = 0; j < 16; j++) {
        b[8 + j] = (uint8_t)(j | (15 - j) << 4);
        want[j] = (float)(16 + j) * 0.5f + 3.0f;
        want[j + 16] = (float)(15 - j) * 0.5f + 3.0f;
    }
    ASSERT(want[0] == 11.0f && want[15] == 18.5f && want[16] == 10.5f && want[31] == 3.0f);
    check_deq(DS_TYPE_Q5_1, b, want, &ok);
    ASSERT(ok);
}

TEST(hand_q8_0)
{
    uint8_t b[34];
    float want[32];
    int ok;
    wr16(b, 0x3000); // 0.125
    for (int j = 0; j < 32; j++) {
        b[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
        want[j] = (float)(j - 16);
    }
    check_deq(DS_TYPE_Q8_0, b, want, &ok);
    ASSERT(ok);
}

TEST(hand_iq4_nl)
{
    uint8_t b[18];
    float want[32];
    int ok;
    wr16(b, 0xc000); // d = -2
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (uint8_t)(j | (15 - j) << 4);
        want[j] = -2.0f * kvalues[j];
        want[j + 16] = -2.0f * kvalues[15 - j];
    }
    ASSERT(want[0] == 254.0f && want[16] == -226.0f && want[8] == -2.0f);
    check_deq(DS_TYPE_IQ4_NL, b, want, &ok);
    ASSERT(ok);
}

/* A hand-quantized block: Q4_0 of 0..-31 scaled so that quantize_row_q4_0_ref's
 * steps can be followed by hand. */
TEST(hand_quantize_q4_0)
{
    float x[32];
    uint8_t b[18];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16); // max |x| = 16 at j = 0 (x = -16): d = -16 / -8 = 2
    ASSERT_OK(ds_quantize_row(DS_TYPE_Q4_0, x, b, 32, NULL));
    ASSERT_EQ_INT(b[0] | b[1] << 8, 0x4000); // d = 2
    // q = min(15, (int)(x / 2 + 8.5)): x = -16 -> 0, x = -1 -> 8, x = 15 -> 15
    ASSERT_EQ_INT(b[2] & 15, 0);
    ASSERT_EQ_INT(b[2 + 15] & 15, 8);
    ASSERT_EQ_INT(b[2 + 15] >> 4, 15);
    ASSERT_EQ_INT(b[2] >> 4, 8); // x = 0
}

/* ---- quantization error ------------------------------------------------------- */

/* Relative RMSE sqrt(sum w e^2 / sum w x^2) of quantizing x (rows x n). */
static double rel_rmse(enum ds_type t, const float *x, int rows, int64_t n, const float *imat,
                       const float *weigh, int ref)
{
    uint8_t *q = malloc(row_bytes(t, n));
    double e2 = 0, x2 = 0;
    for (int r = 0; q && r < rows; r++) {
        double a, b;
        const float *xr = x + (size_t)r * (size_t)n;
        if ((ref ? ds_quantize_row_ref : ds_quantize_row)(t, xr, q, n, imat) != DS_OK ||
            ds_quant_error(t, xr, q, n, weigh, &a, &b) != DS_OK) {
            free(q);
            return INFINITY;
        }
        e2 += a;
        x2 += b;
    }
    free(q);
    return sqrt(e2 / x2);
}

TEST(rmse_gaussian)
{
    /* measured 0.0863, 0.0780, 0.0430, 0.0378, 0.00539, 0.0761: bounds ~15% above */
    static const double bound[NTYPES] = {0.10, 0.09, 0.05, 0.044, 0.0063, 0.088};
    const int rows = 16;
    const int64_t n = 4096;
    float *x = malloc(sizeof(float) * (size_t)(rows * n));
    ASSERT(x);
    for (int64_t i = 0; i < rows * n; i++)
        x[i] = gauss();
    for (size_t k = 0; k < NTYPES; k++) {
        double e = rel_rmse(types[k], x, rows, n, NULL, NULL, 0);
        fprintf(stderr, "    %-7s relative rmse %.5f (bound %.4f)\n", ds_type_name(types[k]), e,
                bound[k]);
        if (!(e < bound[k])) {
            free(x);
            ASSERT_MSG(0, "%s: relative rmse %g above %g", ds_type_name(types[k]), e, bound[k]);
        }
    }
    free(x);
}

/* ---- optimised vs _ref ------------------------------------------------------- */

/* Rows of 11 * 32 (the SIMD dot works four blocks at a time, the IQ4_NL
 * quantizer eight: tails of 3)
 * with special blocks: zeros, -0, signed zeros next to the minimum, constant,
 * the largest magnitude twice with both signs, subnormal and huge values. */
static void special_row(float *x, int64_t n, int kind)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss() * (kind == 1 ? 1e-6f : kind == 2 ? 1e4f : 1.0f);
    float *b = x; // block 0: zeros and negative zeros
    for (int j = 0; j < 32; j++)
        b[j] = (j & 1) ? -0.0f : 0.0f;
    b = x + 32; // block 1: non-negative with a -0 first, then +0
    for (int j = 0; j < 32; j++)
        b[j] = (float)j * 0.25f;
    b[3] = -0.0f;
    b = x + 64; // block 2: constant
    for (int j = 0; j < 32; j++)
        b[j] = 1.5f;
    b = x + 96; // block 3: +-max
    b[5] = -3.0f, b[9] = 3.0f;
    for (int j = 0; j < 32; j++)
        if (j != 5 && j != 9)
            b[j] = 2.0f * (float)uniform() - 1.0f;
    b = x + 128; // block 4: non-positive, max is a zero (+0 before -0)
    for (int j = 0; j < 32; j++)
        b[j] = -(float)uniform();
    b[7] = 0.0f, b[8] = -0.0f;
}

TEST(simd_vs_ref)
{
    enum { NB = 19 }; /* AVX-512: two groups of 8 blocks and a tail of 3 */
    const int64_t n = NB * 32;
    float x[NB * 32], imat[NB * 32], y[NB * 32], yr[NB * 32], xq[NB * 32];
    uint8_t q[NB * 34], qr[NB * 34], acts[NB * 36];
    fprintf(stderr, "    simd: %s\n", ds_quant_simd());
    for (int64_t i = 0; i < n; i++)
        imat[i] = (float)exp(2.0 * gauss());
    for (size_t k = 0; k < NTYPES; k++) {
        enum ds_type t = types[k], vt = ds_quant_vec_type(t);
        size_t rb = row_bytes(t, n);
        for (int rep = 0; rep < 60; rep++) {
            special_row(x, n, rep % 3);
            for (int w = 0; w < 2; w++) {
                const float *im = w ? imat : NULL;
                ASSERT_OK(ds_quantize_row(t, x, q, n, im));
                ASSERT_OK(ds_quantize_row_ref(t, x, qr, n, im));
                ASSERT_MSG(!memcmp(q, qr, rb), "%s quantize (imatrix %d) differs from _ref",
                           ds_type_name(t), w);
            }
            // dequantize: our blocks and random ones
            ASSERT_OK(ds_dequantize_row(t, q, y, n));
            ASSERT_OK(ds_dequantize_row_ref(t, q, yr, n));
            ASSERT_MSG(same_floats(y, yr, n), "%s dequantize differs from _ref", ds_type_name(t));
            rand_blocks(t, qr, n);
            ASSERT_OK(ds_dequantize_row(t, qr, y, n));
            ASSERT_OK(ds_dequantize_row_ref(t, qr, yr, n));
            ASSERT_MSG(same_floats(y, yr, n), "%s dequantize differs from _ref (random)",
                       ds_type_name(t));
            // dot: quantized activations, then random ones (int8 -128 included)
            for (int64_t i = 0; i < n; i++)
                xq[i] = gauss();
            ASSERT_OK(ds_quantize_vec(vt, xq, acts, n));
            for (int r = 0; r < 2; r++) {
                const uint8_t *row = r ? qr : q;
                float a = ds_quant_dot(t, row, acts, n), b = ds_quant_dot_ref(t, row, acts, n);
                ASSERT_MSG(!memcmp(&a, &b, sizeof(a)), "%s dot %g != _ref %g", ds_type_name(t),
                           a, b);
            }
            rand_blocks(vt, acts, n);
            float a = ds_quant_dot(t, qr, acts, n), b = ds_quant_dot_ref(t, qr, acts, n);
            ASSERT_MSG(!memcmp(&a, &b, sizeof(a)), "%s dot %g != _ref %g (random)",
                       ds_type_name(t), a, b);
        }
    }
}

/* Sum over the blocks of |m * s|: Q4_1 / Q5_1 rows (n) with Q8_1 activations
 * add m * s per block, s = d * sum(q) rounded to f16 (a relative 2^-11). */
static double min_term(enum ds_type t, const uint8_t *row, const uint8_t *q8_1, int64_t n)
{
    double sum = 0;
    if (t != DS_TYPE_Q4_1 && t != DS_TYPE_Q5_1)
        return 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const uint8_t *x = row + i * ds_type_block_bytes(t), *y = q8_1 + i * 36;
        sum += fabs((double)ds_f16_to_f32((uint16_t)(x[2] | x[3] << 8)) *
                    ds_f16_to_f32((uint16_t)(y[2] | y[3] << 8)));
    }
    return sum;
}

/* The dot with Q8_0 activations is exact integer arithmetic per block: it
 * must match the dequantized dot up to float rounding, and with Q8_1 up to
 * the f16 rounding of its s as well. Q8_1's d and qs are Q8_0's. */
TEST(dot_matches_dequantized)
{
    const int64_t n = 4096;
    float *x = malloc(sizeof(float) * 3 * (size_t)n), *w = x + n, *a = x + 2 * n;
    uint8_t *q = malloc(row_bytes(DS_TYPE_Q8_0, n)), *qa = malloc(row_bytes(DS_TYPE_Q8_0, n));
    uint8_t *qa1 = malloc(row_bytes(DS_TYPE_Q8_1, n));
    ASSERT(x && q && qa && qa1);
    for (int64_t i = 0; i < n; i++)
        x[i] = gauss(), a[i] = gauss();
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_0, a, qa, n));
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_1, a, qa1, n));
    for (int64_t i = 0; i < n / 32; i++) {
        ASSERT(!memcmp(qa1 + i * 36, qa + i * 34, 2));
        ASSERT(!memcmp(qa1 + i * 36 + 4, qa + i * 34 + 2, 32));
    }
    ASSERT_OK(ds_dequantize_row(DS_TYPE_Q8_0, qa, a, n));
    for (size_t k = 0; k < NTYPES; k++) {
        enum ds_type t = types[k], vt = ds_quant_vec_type(t);
        const uint8_t *acts = vt == DS_TYPE_Q8_1 ? qa1 : qa;
        double want = 0, mag = 0;
        ASSERT_EQ_INT(vt, t == DS_TYPE_Q4_1 || t == DS_TYPE_Q5_1 ? DS_TYPE_Q8_1 : DS_TYPE_Q8_0);
        ASSERT_OK(ds_quantize_row(t, x, q, n, NULL));
        ASSERT_OK(ds_dequantize_row(t, q, w, n));
        for (int64_t i = 0; i < n; i++) {
            want += (double)w[i] * a[i];
            mag += fabs((double)w[i] * a[i]);
        }
        double got = ds_quant_dot(t, q, acts, n), gotf = ds_quant_dot_f32(t, q, a, n);
        double tol = 1e-5 * mag + 0x1p-11 * min_term(t, q, acts, n);
        if (!(fabs(got - want) <= tol && fabs(gotf - want) <= 1e-5 * mag)) {
            free(x), free(q), free(qa), free(qa1);
            ASSERT_MSG(0, "%s: dot %g, dot_f32 %g, want %g", ds_type_name(t), got, gotf, want);
        }
    }
    free(x), free(q), free(qa), free(qa1);
}

/* ---- imatrix ------------------------------------------------------------------ */

TEST(imatrix_lowers_weighted_error)
{
    const int rows = 32;
    const int64_t n = 1024;
    float *x = malloc(sizeof(float) * (size_t)(rows * n)), *imat = malloc(sizeof(float) * n);
    ASSERT(x && imat);
    for (int64_t i = 0; i < rows * n; i++)
        x[i] = gauss() * (uniform() < 0.01 ? 8.0f : 1.0f);
    for (int64_t i = 0; i < n; i++) // skewed: log-normal, a few columns 100x
        imat[i] = (float)exp(1.5 * gauss()) * (i % 97 == 0 ? 100.0f : 1.0f);
    for (size_t k = 0; k < NTYPES; k++) {
        enum ds_type t = types[k];
        double with = rel_rmse(t, x, rows, n, imat, imat, 0);
        double without = rel_rmse(t, x, rows, n, NULL, imat, 0);
        double with_ref = rel_rmse(t, x, rows, n, imat, imat, 1);
        fprintf(stderr, "    %-7s weighted rmse: imatrix %.5f, none %.5f (%.1f%% lower)\n",
                ds_type_name(t), with, without, 100.0 * (1.0 - with / without));
        if (!(with < without) || with != with_ref) {
            free(x), free(imat);
            ASSERT_MSG(0, "%s: with imatrix %g, without %g, ref %g", ds_type_name(t), with,
                       without, with_ref);
        }
    }
    free(x), free(imat);
}

/* ---- Q8_0 activations ---------------------------------------------------------- */

TEST(q8_0_activations)
{
    float x[64];
    uint8_t q[68], qr[68];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) * 0.25f; // amax 4: d = 4/127, q = roundf(x * 31.75)
    // second block: d = 1, ties round away from zero (roundf, not rint)
    memset(x + 32, 0, 32 * sizeof(float));
    x[32] = 127.0f, x[33] = 2.5f, x[34] = -2.5f, x[35] = 0.5f, x[36] = -0.5f, x[37] = 1.5f;
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_0, x, q, 64));
    ASSERT_EQ_INT(q[0] | q[1] << 8, ds_f32_to_f16(4.0f / 127.0f));
    ASSERT_EQ_INT((int8_t)q[2 + 0], -127);  // -4
    ASSERT_EQ_INT((int8_t)q[2 + 1], -119);  // -3.75 * 31.75 = -119.06
    ASSERT_EQ_INT((int8_t)q[2 + 2], -111);  // -3.5 * 31.75 = -111.125
    ASSERT_EQ_INT((int8_t)q[2 + 16], 0);
    ASSERT_EQ_INT((int8_t)q[2 + 31], 119);  // 3.75
    const int8_t *b = (const int8_t *)(q + 36);
    ASSERT_EQ_INT(q[34] | q[35] << 8, 0x3c00); // d = 1
    ASSERT_EQ_INT(b[0], 127);
    ASSERT_EQ_INT(b[1], 3);
    ASSERT_EQ_INT(b[2], -3);
    ASSERT_EQ_INT(b[3], 1);
    ASSERT_EQ_INT(b[4], -1);
    ASSERT_EQ_INT(b[5], 2);
    // the activation format is the Q8_0 weight format without imatrix
    ASSERT_OK(ds_quantize_row_ref(DS_TYPE_Q8_0, x, qr, 64, NULL));
    ASSERT(!memcmp(q, qr, sizeof(q)));
    ASSERT_ERR(ds_quantize_vec(DS_TYPE_Q8_0, x, q, 33), DS_ERR_ARG);
    ASSERT_ERR(ds_quantize_row(DS_TYPE_Q4_0, x, q, 48, NULL), DS_ERR_ARG);
}

/* Q8_1 (quantize_row_q8_1_ref): Q8_0's d and qs at offsets 0 and 4, and at 2
 * s = f16(sum(qs) * d), d = amax / 127 before its rounding to f16. */
TEST(q8_1_activations)
{
    enum { NB = 40 };
    float x[NB * 32];
    uint8_t q[NB * 36], q0[NB * 34];
    for (int i = 0; i < NB * 32; i++)
        x[i] = gauss() * (float)(1 << (i / 32 % 8)) * 0.01f;
    memset(x + 32, 0, 32 * sizeof(float)); // zero block: d = s = 0
    for (int j = 0; j < 32; j++)           // d = 1, ties away from zero: sum = 127 + 16
        x[64 + j] = j == 0 ? 127.0f : j < 17 ? 0.5f : 0.0f;
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_1, x, q, NB * 32));
    ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_0, x, q0, NB * 32));
    for (int b = 0; b < NB; b++) {
        const uint8_t *y = q + b * 36;
        float amax = 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            sum += (int8_t)y[4 + j];
        }
        ASSERT(!memcmp(y, q0 + b * 34, 2));
        ASSERT(!memcmp(y + 4, q0 + b * 34 + 2, 32));
        ASSERT_EQ_INT(y[2] | y[3] << 8, ds_f32_to_f16((float)sum * (amax / 127.0f)));
    }
    ASSERT_EQ_INT(q[36 + 2] | q[36 + 3] << 8, 0);
    ASSERT_EQ_INT(q[72 + 2] | q[72 + 3] << 8, ds_f32_to_f16(143.0f));
    ASSERT_ERR(ds_quantize_vec(DS_TYPE_Q8_1, x, q, 33), DS_ERR_ARG);
    ASSERT_ERR(ds_quantize_vec(DS_TYPE_Q4_1, x, q, 32), DS_ERR_ARG);
}

/* The optimised kernels against the reference (run at every SIMD level). */
static void level_tests(void)
{
    RUN(simd_vs_ref);
}

int main(void)
{
    every_simd_level(level_tests);
    RUN(hand_q4_0);
    RUN(hand_q4_1);
    RUN(hand_q5_0);
    RUN(hand_q5_1);
    RUN(hand_q8_0);
    RUN(hand_iq4_nl);
    RUN(hand_quantize_q4_0);
    RUN(rmse_gaussian);
    RUN(dot_matches_dequantized);
    RUN(imatrix_lowers_weighted_error);
    RUN(q8_0_activations);
    RUN(q8_1_activations);
    return test_report();
}
