/* test_tensor.c - type table, tensor sizes, exact scalar conversions, FP8 dequant. */
#include <float.h>
#include <stdint.h>

#include "ds_tensor.h"
#include "test.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* ---- type table -------------------------------------------------------------- */

static const struct {
    enum ds_type t;
    const char *name;
    int64_t block;
    size_t bytes;
} want_types[] = {
    {DS_TYPE_F32, "f32", 1, 4},          {DS_TYPE_F16, "f16", 1, 2},
    {DS_TYPE_Q4_0, "q4_0", 32, 18},      {DS_TYPE_Q4_1, "q4_1", 32, 20},
    {DS_TYPE_Q5_0, "q5_0", 32, 22},      {DS_TYPE_Q5_1, "q5_1", 32, 24},
    {DS_TYPE_Q8_0, "q8_0", 32, 34},      {DS_TYPE_Q8_1, "q8_1", 32, 36},
    {DS_TYPE_Q2_K, "q2_K", 256, 84},     {DS_TYPE_Q3_K, "q3_K", 256, 110},
    {DS_TYPE_Q4_K, "q4_K", 256, 144},    {DS_TYPE_Q5_K, "q5_K", 256, 176},
    {DS_TYPE_Q6_K, "q6_K", 256, 210},    {DS_TYPE_Q8_K, "q8_K", 256, 292},
    {DS_TYPE_IQ2_XXS, "iq2_xxs", 256, 66}, {DS_TYPE_IQ2_XS, "iq2_xs", 256, 74},
    {DS_TYPE_IQ3_XXS, "iq3_xxs", 256, 98}, {DS_TYPE_IQ1_S, "iq1_s", 256, 50},
    {DS_TYPE_IQ4_NL, "iq4_nl", 32, 18},  {DS_TYPE_IQ3_S, "iq3_s", 256, 110},
    {DS_TYPE_IQ2_S, "iq2_s", 256, 82},   {DS_TYPE_IQ4_XS, "iq4_xs", 256, 136},
    {DS_TYPE_I8, "i8", 1, 1},            {DS_TYPE_I16, "i16", 1, 2},
    {DS_TYPE_I32, "i32", 1, 4},          {DS_TYPE_I64, "i64", 1, 8},
    {DS_TYPE_F64, "f64", 1, 8},          {DS_TYPE_IQ1_M, "iq1_m", 256, 56},
    {DS_TYPE_BF16, "bf16", 1, 2},        {DS_TYPE_TQ1_0, "tq1_0", 256, 54},
    {DS_TYPE_TQ2_0, "tq2_0", 256, 66},   {DS_TYPE_MXFP4, "mxfp4", 32, 17},
    {DS_TYPE_F8_E4M3, "f8_e4m3", 1, 1},
};
#define N_WANT (sizeof(want_types) / sizeof(want_types[0]))

TEST(type_table)
{
    int n_valid = 0;
    for (size_t i = 0; i < N_WANT; i++) {
        enum ds_type t = want_types[i].t, back;
        ASSERT(ds_type_valid((int)t));
        ASSERT_STR(ds_type_name(t), want_types[i].name);
        ASSERT_EQ_INT(ds_type_block_size(t), want_types[i].block);
        ASSERT_EQ_INT(ds_type_block_bytes(t), want_types[i].bytes);
        ASSERT_EQ_INT(ds_type_llama_loadable(t), t != DS_TYPE_F8_E4M3);
        ASSERT_OK(ds_type_from_name(want_types[i].name, &back));
        ASSERT_EQ_INT(back, t);
    }
    // Exactly the listed ids are valid.
    for (int id = -5; id < 2048; id++)
        n_valid += ds_type_valid(id);
    ASSERT_EQ_INT(n_valid, N_WANT);
    int removed[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 1023, 1025, -1};
    for (size_t i = 0; i < sizeof(removed) / sizeof(removed[0]); i++) {
        enum ds_type t = (enum ds_type)removed[i];
        ASSERT(!ds_type_valid(removed[i]));
        ASSERT_STR(ds_type_name(t), "?");
        ASSERT_EQ_INT(ds_type_block_size(t), 0);
        ASSERT_EQ_INT(ds_type_block_bytes(t), 0);
        ASSERT(!ds_type_llama_loadable(t));
    }
}

TEST(type_from_name)
{
    enum ds_type t;
    ASSERT_OK(ds_type_from_name("Q4_K", &t));
    ASSERT_EQ_INT(t, DS_TYPE_Q4_K);
    ASSERT_OK(ds_type_from_name("q4_k", &t));
    ASSERT_EQ_INT(t, DS_TYPE_Q4_K);
    ASSERT_OK(ds_type_from_name("BF16", &t));
    ASSERT_EQ_INT(t, DS_TYPE_BF16);
    ASSERT_OK(ds_type_from_name("IQ4_NL", &t));
    ASSERT_EQ_INT(t, DS_TYPE_IQ4_NL);
    ASSERT_OK(ds_type_from_name("fp8", &t));
    ASSERT_EQ_INT(t, DS_TYPE_F8_E4M3);
    ASSERT_OK(ds_type_from_name("FP8", &t));
    ASSERT_EQ_INT(t, DS_TYPE_F8_E4M3);
    ASSERT_OK(ds_type_from_name("F8_E4M3", &t));
    ASSERT_EQ_INT(t, DS_TYPE_F8_E4M3);
    ASSERT_ERR(ds_type_from_name("q4_2", &t), DS_ERR_UNSUPPORTED);
    ASSERT(strstr(ds_errmsg(), "'q4_2'") != NULL);
    ASSERT_ERR(ds_type_from_name("", &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_type_from_name("f32 ", &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_type_from_name(NULL, &t), DS_ERR_ARG);
}

/* ---- tensor sizes ---------------------------------------------------------------- */

TEST(nbytes_ok)
{
    uint64_t n, b;
    int64_t ne[4] = {4096, 11008, 1, 1};

    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_F32, 2, ne, &n, &b));
    ASSERT_EQ_INT(n, 4096LL * 11008);
    ASSERT_EQ_INT(b, 4096LL * 11008 * 4);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_Q4_K, 2, ne, &n, &b));
    ASSERT_EQ_INT(b, 4096LL / 256 * 144 * 11008);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_IQ4_NL, 4, ne, &n, &b));
    ASSERT_EQ_INT(b, 4096LL / 32 * 18 * 11008);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_MXFP4, 1, ne, &n, &b));
    ASSERT_EQ_INT(b, 4096 / 32 * 17);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_Q8_K, 1, ne, &n, &b));
    ASSERT_EQ_INT(b, 4096 / 256 * 292);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_F8_E4M3, 2, ne, &n, &b));
    ASSERT_EQ_INT(b, 4096LL * 11008);

    int64_t ne3[3] = {7, 3, 5};
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_BF16, 3, ne3, &n, &b));
    ASSERT_EQ_INT(n, 105);
    ASSERT_EQ_INT(b, 210);

    // Scalar and empty tensors.
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_F64, 0, NULL, &n, &b));
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_INT(b, 8);
    int64_t zero[2] = {0, 5};
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_Q4_0, 2, zero, &n, &b));
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_INT(b, 0);
    // A zero anywhere makes a huge shape empty, not an overflow.
    int64_t huge0[4] = {INT64_C(1) << 62, INT64_C(1) << 62, 0, 4};
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_F32, 4, huge0, &n, &b));
    ASSERT_EQ_INT(n, 0);
    // Optional outputs.
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_F32, 2, ne, NULL, NULL));
}

TEST(nbytes_errors)
{
    uint64_t n = 77, b = 77;
    int64_t bad0[2] = {4000, 8};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_Q4_K, 2, bad0, &n, &b), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "4000") != NULL);
    ASSERT_EQ_INT(n, 77); // outputs untouched on error
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_Q4_K, 0, NULL, &n, &b), DS_ERR_FORMAT);
    int64_t odd[1] = {33};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_Q8_0, 1, odd, &n, &b), DS_ERR_FORMAT);

    int64_t neg[2] = {256, -1};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_F32, 2, neg, &n, &b), DS_ERR_FORMAT);
    int64_t neg0[1] = {-256};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_Q4_K, 1, neg0, &n, &b), DS_ERR_FORMAT);

    int64_t ne5[5] = {1, 1, 1, 1, 1};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_F32, 5, ne5, &n, &b), DS_ERR_FORMAT);

    int64_t big[2] = {INT64_C(1) << 62, 4};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_F32, 2, big, &n, &b), DS_ERR_LIMIT);
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_I8, 2, big, &n, &b), DS_ERR_LIMIT);
    // Elements fit, bytes do not.
    int64_t big2[1] = {INT64_C(1) << 62};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_F32, 1, big2, &n, &b), DS_ERR_LIMIT);
    ASSERT_OK(ds_tensor_nbytes(DS_TYPE_I8, 1, big2, &n, &b));
    ASSERT_EQ_INT(b, INT64_C(1) << 62);
    int64_t big3[4] = {INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 20};
    ASSERT_ERR(ds_tensor_nbytes(DS_TYPE_Q4_0, 4, big3, &n, &b), DS_ERR_LIMIT);

    n = 77;
    ASSERT_ERR(ds_tensor_nbytes((enum ds_type)4, 1, odd, &n, &b), DS_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(n, 77);
}

/* ---- f16 and bf16 -------------------------------------------------------------------- */

/* Independent decoding: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals m * 2^-24. */
static double f16_formula(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

TEST(f16_exhaustive)
{
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = ds_f16_to_f32(h);
        uint16_t back = ds_f32_to_f16(f);
        int e = (h >> 10) & 31, m = h & 1023;
        if (e == 31 && m) {
            ASSERT_MSG(isnan(f), "0x%04x", h);
            ASSERT_MSG((back & 0x7c00) == 0x7c00 && (back & 0x3ff), "0x%04x -> 0x%04x", h, back);
            ASSERT_EQ_INT(back & 0x8000, h & 0x8000);
            continue;
        }
        if (e == 31) {
            ASSERT(isinf(f) && (signbit(f) != 0) == (h >> 15));
        } else {
            ASSERT_MSG((double)f == f16_formula(h), "0x%04x: %g", h, (double)f);
            ASSERT_EQ_INT(signbit(f) != 0, h >> 15); // -0 stays -0
        }
        ASSERT_MSG(back == h, "0x%04x -> %a -> 0x%04x", h, (double)f, back);
    }
}

TEST(bf16_exhaustive)
{
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = ds_bf16_to_f32(h);
        uint16_t back = ds_f32_to_bf16(f);
        ASSERT_EQ_INT(f32_bits(f), i << 16);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) {
            ASSERT(isnan(f));
            ASSERT_MSG((back & 0x7f80) == 0x7f80 && (back & 0x7f), "0x%04x -> 0x%04x", h, back);
            ASSERT(back & 0x40); // quiet
            ASSERT_EQ_INT(back & 0x8000, h & 0x8000);
        } else {
            ASSERT_MSG(back == h, "0x%04x -> 0x%04x", h, back);
        }
    }
}

TEST(f16_rounding)
{
    // RNE ties at 1.0: ulp 2^-10.
    ASSERT_EQ_INT(ds_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);           // tie -> even (down)
    ASSERT_EQ_INT(ds_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);       // tie -> even (up)
    ASSERT_EQ_INT(ds_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); // above tie
    ASSERT_EQ_INT(ds_f32_to_f16(1.0f + 0x1p-11f - 0x1p-20f), 0x3c00); // below tie
    ASSERT_EQ_INT(ds_f32_to_f16(-(1.0f + 3 * 0x1p-11f)), 0xbc02);
    ASSERT_EQ_INT(ds_f32_to_f16(2.0f - 0x1p-12f), 0x4000); // carry into exponent
    // Overflow.
    ASSERT_EQ_INT(ds_f32_to_f16(65504.0f), 0x7bff);
    ASSERT_EQ_INT(ds_f32_to_f16(65519.996f), 0x7bff);
    ASSERT_EQ_INT(ds_f32_to_f16(65520.0f), 0x7c00); // tie with odd 0x7bff -> inf
    ASSERT_EQ_INT(ds_f32_to_f16(65536.0f), 0x7c00);
    ASSERT_EQ_INT(ds_f32_to_f16(1e30f), 0x7c00);
    ASSERT_EQ_INT(ds_f32_to_f16(-1e30f), 0xfc00);
    ASSERT_EQ_INT(ds_f32_to_f16(FLT_MAX), 0x7c00);
    ASSERT_EQ_INT(ds_f32_to_f16(INFINITY), 0x7c00);
    ASSERT_EQ_INT(ds_f32_to_f16(-INFINITY), 0xfc00);
    // Zeros and subnormals (smallest 2^-24).
    ASSERT_EQ_INT(ds_f32_to_f16(0.0f), 0x0000);
    ASSERT_EQ_INT(ds_f32_to_f16(-0.0f), 0x8000);
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-14f), 0x0400);
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-24f), 0x0001);
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-25f), 0x0000); // tie -> 0
    ASSERT_EQ_INT(ds_f32_to_f16(-0x1p-25f), 0x8000);
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-25f * 1.0001f), 0x0001);
    ASSERT_EQ_INT(ds_f32_to_f16(3 * 0x1p-25f), 0x0002);              // tie 1|2 -> 2
    ASSERT_EQ_INT(ds_f32_to_f16(5 * 0x1p-25f), 0x0002);              // tie 2|3 -> 2
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);       // tie 0x3ff|0x400
    ASSERT_EQ_INT(ds_f32_to_f16(0x1p-14f - 0x1p-24f), 0x03ff);
    ASSERT_EQ_INT(ds_f32_to_f16(1e-10f), 0x0000);
    ASSERT_EQ_INT(ds_f32_to_f16(bits_f32(1)), 0x0000); // f32 subnormal
    // NaN.
    uint16_t hn = ds_f32_to_f16(NAN);
    ASSERT((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff));
    hn = ds_f32_to_f16(bits_f32(0x7f800001)); // payload below the kept bits
    ASSERT((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff));
    hn = ds_f32_to_f16(bits_f32(0xff800001));
    ASSERT((hn & 0xfc00) == 0xfc00 && (hn & 0x3ff));
}

/* Random f32 values: the result must be a nearest f16, ties to even. */
TEST(f16_random_nearest)
{
    for (int k = 0; k < 1000000; k++) {
        // Magnitudes from ~2^-27 up to 2^16.
        uint32_t u = (uint32_t)rng();
        u = (u & 0x80000000) | (0x32000000 + (u & 0x7fffffff) % (0x47800000 - 0x32000000));
        float f = bits_f32(u);
        uint16_t h = ds_f32_to_f16(f);
        double x = fabs((double)f), got = fabs(f16_formula(h));
        if ((h & 0x7fff) == 0x7c00) {
            ASSERT_MSG(x >= 65520.0, "%a -> inf", x);
            continue;
        }
        ASSERT_EQ_INT(h >> 15, u >> 31);
        double err = fabs(got - x);
        uint16_t mag = h & 0x7fff;
        double up = mag < 0x7bff ? f16_formula(mag + 1) : 65536.0;
        double down = mag > 0 ? f16_formula(mag - 1) : -f16_formula(1);
        ASSERT_MSG(err <= fabs(up - x) && err <= fabs(x - down), "%a -> 0x%04x", x, h);
        if (err == fabs(up - x) || err == fabs(x - down))
            ASSERT_MSG((h & 1) == 0, "tie %a -> odd 0x%04x", x, h);
    }
}

TEST(bf16_rounding)
{
    ASSERT_EQ_INT(ds_f32_to_bf16(1.0f), 0x3f80);
    ASSERT_EQ_INT(ds_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);          // tie -> even
    ASSERT_EQ_INT(ds_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);      // tie -> even
    ASSERT_EQ_INT(ds_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    ASSERT_EQ_INT(ds_f32_to_bf16(-2.0f), 0xc000);
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x7f7f7fff)), 0x7f7f);
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x7f7f8000)), 0x7f80); // tie with odd -> inf
    ASSERT_EQ_INT(ds_f32_to_bf16(FLT_MAX), 0x7f80);
    ASSERT_EQ_INT(ds_f32_to_bf16(-FLT_MAX), 0xff80);
    ASSERT_EQ_INT(ds_f32_to_bf16(INFINITY), 0x7f80);
    ASSERT_EQ_INT(ds_f32_to_bf16(-0.0f), 0x8000);
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x00008000)), 0x0000); // subnormal tie -> 0
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x00018000)), 0x0002); // tie -> even
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x00010001)), 0x0001);
    ASSERT_EQ_INT(ds_f32_to_bf16(bits_f32(0x007fffff)), 0x0080); // to smallest normal
    uint16_t n = ds_f32_to_bf16(bits_f32(0x7f800001)); // signalling, low payload
    ASSERT((n & 0x7f80) == 0x7f80 && (n & 0x40));
    n = ds_f32_to_bf16(-NAN);
    ASSERT((n & 0xff80) == 0xff80 && (n & 0x7f));
}

/* ---- FP8 E4M3FN ------------------------------------------------------------------------ */

/* Hand-derived: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is
 * subnormal 2^-6 * m/8; S.1111.111 is NaN; no infinities. */
static double fp8_formula(uint8_t q)
{
    int s = q >> 7, e = (q >> 3) & 15, m = q & 7;
    double v = e == 0 ? ldexp(1.0, -6) * m / 8.0 : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

TEST(fp8_decode_all)
{
    for (int i = 0; i < 256; i++) {
        uint8_t q = (uint8_t)i;
        float f = ds_fp8_e4m3_to_f32(q);
        if ((q & 0x7f) == 0x7f) {
            ASSERT_MSG(isnan(f), "0x%02x", q);
            continue;
        }
        ASSERT_MSG((double)f == fp8_formula(q), "0x%02x: %g vs %g", q, (double)f,
                   fp8_formula(q));
        ASSERT_EQ_INT(signbit(f) != 0, q >> 7);
        ASSERT(!isinf(f));
    }
    ASSERT(ds_fp8_e4m3_to_f32(0x7e) == 448.0f);
    ASSERT(ds_fp8_e4m3_to_f32(0xfe) == -448.0f);
    ASSERT(ds_fp8_e4m3_to_f32(0x78) == 256.0f); // E=15 with m < 7 is finite
    ASSERT(ds_fp8_e4m3_to_f32(0x38) == 1.0f);
    ASSERT(ds_fp8_e4m3_to_f32(0x08) == 0x1p-6f);
    ASSERT(ds_fp8_e4m3_to_f32(0x07) == 7 * 0x1p-9f);
    ASSERT(ds_fp8_e4m3_to_f32(0x01) == 0x1p-9f);
    ASSERT(ds_fp8_e4m3_to_f32(0x00) == 0.0f);
    ASSERT(signbit(ds_fp8_e4m3_to_f32(0x80)));
}

TEST(fp8_encode)
{
    int finite = 0;
    for (int i = 0; i < 256; i++) {
        if ((i & 0x7f) == 0x7f)
            continue;
        finite++;
        ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(ds_fp8_e4m3_to_f32((uint8_t)i)), i);
    }
    ASSERT_EQ_INT(finite, 254);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1.0f + 0x1p-4f), 0x38);     // tie 1|1.125 -> even
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1.0f + 3 * 0x1p-4f), 0x3a); // tie -> even
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1.0f + 0x1p-4f + 0x1p-12f), 0x39);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-(1.0f + 3 * 0x1p-4f)), 0xba);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1.9375f), 0x40); // tie 1.875|2 -> 2 (even, carry)
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(432.0f), 0x7e);  // tie 416|448 -> 448
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(447.0f), 0x7e);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(448.0f), 0x7e);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(464.0f), 0x7e);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1e9f), 0x7e);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-1e9f), 0xfe);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(INFINITY), 0x7e);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-INFINITY), 0xfe);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(NAN), 0x7f);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-NAN), 0x7f);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(0x1p-10f), 0x00);           // tie 0|2^-9 -> 0
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-0x1p-10f), 0x80);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(0x1p-10f * 1.01f), 0x01);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(3 * 0x1p-10f), 0x02);       // tie 1|2 -> 2
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(5 * 0x1p-10f), 0x02);       // tie 2|3 -> 2
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(15 * 0x1p-10f), 0x08);      // tie 7|8 -> 8 (normal)
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(1e-30f), 0x00);
    ASSERT_EQ_INT(ds_f32_to_fp8_e4m3(-0.0f), 0x80);
}

/* Random floats against a brute-force nearest search over the 254 finite codes. */
TEST(fp8_random_nearest)
{
    for (int k = 0; k < 200000; k++) {
        uint32_t u = (uint32_t)rng();
        u = (u & 0x80000000) | (0x39000000 + (u & 0x7fffffff) % (0x43f00000 - 0x39000000));
        float f = bits_f32(u);
        uint8_t got = ds_f32_to_fp8_e4m3(f);
        double x = (double)f, best_err = INFINITY;
        int best = -1;
        for (int c = 0; c < 256; c++) {
            if ((c & 0x7f) == 0x7f || ((c >> 7) != (int)(u >> 31)))
                continue;
            double err = fabs(fp8_formula((uint8_t)c) - x);
            if (err < best_err || (err == best_err && !(c & 1))) {
                best_err = err;
                best = c;
            }
        }
        if (fabs(x) >= 448.0)
            best = (u >> 31) ? 0xfe : 0x7e;
        ASSERT_MSG(got == best, "%a -> 0x%02x, want 0x%02x", x, got, best);
    }
}

/* ---- rows ------------------------------------------------------------------------------- */

TEST(convert_row)
{
    float f[6] = {1.0f, -2.5f, 0.1f, 65504.0f, 1e-8f, 300.0f};
    uint16_t h[6], bh[6];
    uint8_t q[6];
    double d[6];
    float back[6];

    ASSERT_OK(ds_convert_row(DS_TYPE_F16, h, DS_TYPE_F32, f, 6));
    for (int i = 0; i < 6; i++)
        ASSERT_EQ_INT(h[i], ds_f32_to_f16(f[i]));
    ASSERT_OK(ds_convert_row(DS_TYPE_BF16, bh, DS_TYPE_F16, h, 6));
    for (int i = 0; i < 6; i++)
        ASSERT_EQ_INT(bh[i], ds_f32_to_bf16(ds_f16_to_f32(h[i])));
    ASSERT_OK(ds_convert_row(DS_TYPE_F8_E4M3, q, DS_TYPE_BF16, bh, 6));
    for (int i = 0; i < 6; i++)
        ASSERT_EQ_INT(q[i], ds_f32_to_fp8_e4m3(ds_bf16_to_f32(bh[i])));
    ASSERT_OK(ds_convert_row(DS_TYPE_F64, d, DS_TYPE_F8_E4M3, q, 6));
    for (int i = 0; i < 6; i++)
        ASSERT(d[i] == (double)ds_fp8_e4m3_to_f32(q[i]));
    ASSERT_OK(ds_convert_row(DS_TYPE_F32, back, DS_TYPE_F64, d, 6));
    for (int i = 0; i < 6; i++)
        ASSERT(back[i] == (float)d[i]);
    ASSERT_OK(ds_convert_row(DS_TYPE_F64, d, DS_TYPE_F32, f, 6));
    for (int i = 0; i < 6; i++)
        ASSERT(d[i] == (double)f[i]);

    // Same type: a copy, NaN payloads included.
    uint16_t nan_in[2] = {0x7c01, 0xffff}, nan_out[2] = {0, 0};
    ASSERT_OK(ds_convert_row(DS_TYPE_F16, nan_out, DS_TYPE_F16, nan_in, 2));
    ASSERT(memcmp(nan_in, nan_out, sizeof(nan_in)) == 0);

    // Unaligned buffers (safetensors data need not be aligned).
    unsigned char raw[4 * 3 + 1], out[2 * 3 + 1];
    memcpy(raw + 1, f, 3 * sizeof(float));
    ASSERT_OK(ds_convert_row(DS_TYPE_F16, out + 1, DS_TYPE_F32, raw + 1, 3));
    memcpy(h, out + 1, 3 * sizeof(uint16_t));
    for (int i = 0; i < 3; i++)
        ASSERT_EQ_INT(h[i], ds_f32_to_f16(f[i]));

    ASSERT_OK(ds_convert_row(DS_TYPE_F16, NULL, DS_TYPE_F32, NULL, 0));
    ASSERT_ERR(ds_convert_row(DS_TYPE_Q4_0, h, DS_TYPE_F32, f, 6), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_convert_row(DS_TYPE_F32, f, DS_TYPE_I32, h, 1), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_convert_row(DS_TYPE_F32, f, DS_TYPE_Q8_0, h, 1), DS_ERR_UNSUPPORTED);
}

/* f64 -> narrow types round once, not f64 -> f32 -> narrow. */
TEST(convert_row_f64_single_rounding)
{
    double d[4] = {
        1.0 + 0x1p-11 + 0x1p-40,   // f16: just above a tie -> 0x3c01 (via f32: tie -> 0x3c00)
        1.0 + 0x1p-8 + 0x1p-40,    // bf16: just above a tie -> 0x3f81
        1.0 + 0x1p-4 + 0x1p-40,    // fp8: just above a tie -> 0x39
        -(1.0 + 0x1p-11 + 0x1p-40),
    };
    uint16_t h[6], b[6];
    uint8_t q[6];
    ASSERT_OK(ds_convert_row(DS_TYPE_F16, h, DS_TYPE_F64, d, 4));
    ASSERT_OK(ds_convert_row(DS_TYPE_BF16, b, DS_TYPE_F64, d, 4));
    ASSERT_OK(ds_convert_row(DS_TYPE_F8_E4M3, q, DS_TYPE_F64, d, 4));
    ASSERT_EQ_INT(h[0], 0x3c01);
    ASSERT_EQ_INT(h[3], 0xbc01);
    ASSERT_EQ_INT(b[1], 0x3f81);
    ASSERT_EQ_INT(q[2], 0x39);

    double e[6] = {1e300, -1e300, 1e-300, 0x1p-25, NAN, 65520.0};
    ASSERT_OK(ds_convert_row(DS_TYPE_F16, h, DS_TYPE_F64, e, 4));
    ASSERT_EQ_INT(h[0], 0x7c00);
    ASSERT_EQ_INT(h[1], 0xfc00);
    ASSERT_EQ_INT(h[2], 0x0000);
    ASSERT_EQ_INT(h[3], 0x0000);
    ASSERT_OK(ds_convert_row(DS_TYPE_BF16, b, DS_TYPE_F64, e, 3));
    ASSERT_EQ_INT(b[0], 0x7f80);
    ASSERT_EQ_INT(b[2], 0x0000);
    ASSERT_OK(ds_convert_row(DS_TYPE_F8_E4M3, q, DS_TYPE_F64, e, 5));
    ASSERT_EQ_INT(q[0], 0x7e);
    ASSERT_EQ_INT(q[1], 0xfe);
    ASSERT_EQ_INT(q[4], 0x7f);
    ASSERT_OK(ds_convert_row(DS_TYPE_F16, h, DS_TYPE_F64, e + 5, 1));
    ASSERT_EQ_INT(h[0], 0x7c00);

    // Random doubles: f64 -> f16 equals the nearest f16 (exact check via f64).
    for (int k = 0; k < 200000; k++) {
        double x = ldexp((double)(rng() >> 11), -53) * 70000.0;
        uint16_t r;
        ASSERT_OK(ds_convert_row(DS_TYPE_F16, &r, DS_TYPE_F64, &x, 1));
        if (r == 0x7c00) {
            ASSERT(x >= 65520.0);
            continue;
        }
        double got = f16_formula(r), err = fabs(got - x);
        double up = r < 0x7bff ? f16_formula(r + 1) : 65536.0;
        double down = r > 0 ? f16_formula(r - 1) : -f16_formula(1);
        ASSERT_MSG(err < fabs(up - x) || (err == fabs(up - x) && !(r & 1)), "%a", x);
        ASSERT_MSG(err < fabs(x - down) || (err == fabs(x - down) && !(r & 1)), "%a", x);
    }
}

/* ---- FP8 dequantization ------------------------------------------------------------------ */

TEST(fp8_dequant_hand)
{
    // 3 x 5 with block 2: scale grid 2 x 3, last tile row and column ragged.
    const uint8_t q[15] = {
        0x38, 0x40, 0x30, 0xb8, 0x00, // 1 2 0.5 -1 0
        0x48, 0x01, 0x7e, 0x44, 0x3c, // 4 2^-9 448 3 1.5
        0xc0, 0x38, 0x38, 0x38, 0x38, // -2 1 1 1 1
    };
    const float s[6] = {
        2.0f, 0.5f, 10.0f,
        -1.0f, 0.25f, 3.0f,
    };
    const float want[15] = {
        2.0f, 4.0f, 0.25f, -0.5f, 0.0f,
        8.0f, 0x1p-8f, 224.0f, 1.5f, 15.0f,
        2.0f, -1.0f, 0.25f, 0.25f, 3.0f,
    };
    float w[15], wr[15];
    ds_fp8_dequant(w, q, s, 3, 5, 2);
    ds_fp8_dequant_ref(wr, q, s, 3, 5, 2);
    for (int i = 0; i < 15; i++) {
        ASSERT_MSG(w[i] == want[i], "w[%d] = %g, want %g", i, (double)w[i], (double)want[i]);
        ASSERT_MSG(wr[i] == want[i], "ref[%d] = %g, want %g", i, (double)wr[i], (double)want[i]);
    }
}

static int dequant_compare(int64_t rows, int64_t cols, int64_t block)
{
    int64_t sr = (rows + block - 1) / block, sc = (cols + block - 1) / block;
    uint8_t *q = malloc((size_t)(rows * cols) + 1);
    float *s = malloc((size_t)(sr * sc + 1) * sizeof(float));
    float *w = malloc((size_t)(rows * cols + 1) * sizeof(float));
    float *wr = malloc((size_t)(rows * cols + 1) * sizeof(float));
    int bad = -1;

    if (!q || !s || !w || !wr)
        goto out;
    for (int64_t i = 0; i < rows * cols; i++) {
        q[i] = (uint8_t)rng();
        if ((q[i] & 0x7f) == 0x7f)
            q[i] = 0x3f;
    }
    for (int64_t i = 0; i < sr * sc; i++)
        s[i] = (float)((int64_t)(rng() % 2001) - 1000) * 0x1p-10f;
    ds_fp8_dequant(w, q, s, rows, cols, block);
    ds_fp8_dequant_ref(wr, q, s, rows, cols, block);
    bad = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float want = ds_fp8_e4m3_to_f32(q[i * cols + j]) * s[(i / block) * sc + j / block];
            if (memcmp(&w[i * cols + j], &want, 4) || memcmp(&wr[i * cols + j], &want, 4))
                bad++;
        }
out:
    free(q);
    free(s);
    free(w);
    free(wr);
    return bad;
}

TEST(fp8_dequant_vs_ref)
{
    ASSERT_EQ_INT(dequant_compare(200, 300, 128), 0);
    ASSERT_EQ_INT(dequant_compare(256, 384, 128), 0);
    ASSERT_EQ_INT(dequant_compare(1, 1, 128), 0);
    ASSERT_EQ_INT(dequant_compare(129, 127, 128), 0);
    ASSERT_EQ_INT(dequant_compare(37, 513, 64), 0);
    ASSERT_EQ_INT(dequant_compare(5, 7, 1), 0);
    ASSERT_EQ_INT(dequant_compare(1000, 9, 3), 0);
    // Empty shapes do nothing.
    float w = 42.0f;
    ds_fp8_dequant(&w, NULL, NULL, 0, 10, 128);
    ds_fp8_dequant(&w, NULL, NULL, 10, 0, 128);
    ASSERT(w == 42.0f);
}


/* Long rows take the threaded fast paths; they must agree with the scalar
 * element conversions bit for bit, NaN, inf and subnormals included. */
TEST(convert_row_long)
{
    const size_t n = 300000;
    uint32_t *bits = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    float *back = malloc(n * 4);
    uint64_t x = 88172645463325252ull;
    ASSERT(bits && h && back);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bits[i] = (uint32_t)x;
    }
    for (int k = 0; k < 2; k++) {
        enum ds_type t = k ? DS_TYPE_BF16 : DS_TYPE_F16;
        ASSERT_OK(ds_convert_row(t, h, DS_TYPE_F32, bits, n));
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, &bits[i], 4);
            uint16_t want = k ? ds_f32_to_bf16(f) : ds_f32_to_f16(f);
            ASSERT_MSG(h[i] == want, "%s at %zu: %04x != %04x", ds_type_name(t), i, h[i], want);
        }
        ASSERT_OK(ds_convert_row(DS_TYPE_F32, back, t, h, n));
        for (size_t i = 0; i < n; i++) {
            float want = k ? ds_bf16_to_f32(h[i]) : ds_f16_to_f32(h[i]);
            ASSERT(memcmp(&back[i], &want, 4) == 0);
        }
    }
    free(bits);
    free(h);
    free(back);
}

int main(void)
{
    RUN(type_table);
    RUN(type_from_name);
    RUN(nbytes_ok);
    RUN(nbytes_errors);
    RUN(f16_exhaustive);
    RUN(bf16_exhaustive);
    RUN(f16_rounding);
    RUN(f16_random_nearest);
    RUN(bf16_rounding);
    RUN(fp8_decode_all);
    RUN(fp8_encode);
    RUN(fp8_random_nearest);
    RUN(convert_row);
    RUN(convert_row_long);
    RUN(convert_row_f64_single_rounding);
    RUN(fp8_dequant_hand);
    RUN(fp8_dequant_vs_ref);
    return test_report();
}
