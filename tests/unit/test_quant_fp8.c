/* test_quant_fp8.c - DeepSeek FP8 block quantization (ds_fp8_quantize): tile
 * scales, ragged edge tiles, error within E4M3 rounding, zero tiles, and the
 * round trip of FP8 weights through their dequantized values. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "ds_quant.h"
#include "ds_tensor.h"
#include "kernels_impl.h"
#include "quant_impl.h"
#include "test.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static float gauss(void)
{
    double u = ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Ragged shapes (neither side a multiple of the block): every scale is the
 * tile's amax / 448, every element within half an E4M3 step of w / scale. */
TEST(tiles_and_error)
{
    const int64_t B = 128, shapes[][2] = {{300, 200}, {128, 128}, {1, 5}, {129, 257}, {64, 700}};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        int64_t R = shapes[k][0], C = shapes[k][1], sr = (R + B - 1) / B, sc = (C + B - 1) / B;
        float *w = malloc((size_t)(R * C) * sizeof(float));
        float *back = malloc((size_t)(R * C) * sizeof(float));
        float *s = malloc((size_t)(sr * sc) * sizeof(float));
        uint8_t *q = malloc((size_t)(R * C));
        int bad = 0;
        for (int64_t i = 0; i < R * C; i++)
            w[i] = gauss() * (float)(1 + (i / C) % 7) * 0.01f; /* scales differ per row */
        ds_fp8_quantize(q, s, w, R, C, B);
        ds_fp8_dequant(back, q, s, R, C, B);
        for (int64_t t = 0; t < sr * sc; t++) {
            int64_t i0 = t / sc * B, j0 = t % sc * B;
            float amax = 0;
            for (int64_t i = i0; i < R && i < i0 + B; i++)
                for (int64_t j = j0; j < C && j < j0 + B; j++)
                    amax = fmaxf(amax, fabsf(w[i * C + j]));
            bad += s[t] != amax / 448.0f;
        }
        for (int64_t i = 0; i < R * C && !bad; i++) {
            float sc_i = s[(i / C) / B * sc + (i % C) / B];
            float v = w[i] / sc_i, a = fabsf(v);
            /* E4M3: 3 mantissa bits for |v| >= 2^-6, steps of 2^-9 below */
            float step = a >= 0x1p-6f ? ldexpf(1.0f, (int)floorf(log2f(a)) - 3) : 0x1p-9f;
            bad += fabsf(ds_fp8_e4m3_to_f32(q[i]) - v) > 0.5f * step * (1 + 1e-6f);
            bad += fabsf(back[i] - w[i]) > 0.5f * step * sc_i * (1 + 1e-5f);
        }
        ASSERT_MSG(!bad, "%lldx%lld: %d bad", (long long)R, (long long)C, bad);
        free(w);
        free(back);
        free(s);
        free(q);
    }
}

TEST(zero_tile)
{
    float w[4 * 6] = {0}, s[2];
    uint8_t q[4 * 6];
    w[5] = -3.0f; /* only the second tile (columns 4 and 5) has a value */
    ds_fp8_quantize(q, s, w, 4, 6, 4);
    ASSERT(s[0] == 0.0f);
    ASSERT(s[1] == 3.0f / 448.0f);
    ASSERT_EQ_INT(q[5], 0xfe); /* -448 */
    ASSERT_EQ_INT(q[0], 0);
}

/* FP8 weights whose tiles reach +-448 (as amax / 448 scales make them) come
 * back bit for bit from their dequantized values, whatever the scales (for
 * about one scale in seven, amax / 448 of the dequantized tile is an ulp off). */
TEST(round_trip)
{
    enum { R = 200, C = 300, B = 128, SR = 2, SC = 3 };
    static uint8_t q[R * C], q2[R * C];
    static float w[R * C];
    float s[SR * SC], s2[SR * SC];
    int bad_s = 0, bad_q = 0;
    for (int rep = 0; rep < 100; rep++) {
        for (int64_t i = 0; i < R * C; i++) {
            uint8_t b = (uint8_t)rng();
            q[i] = (b & 0x7f) == 0x7f ? 0x7e : b; /* no NaN */
        }
        for (int64_t t = 0; t < SR * SC; t++) {
            s[t] = ldexpf(1.0f + (float)(rng() >> 40) * 0x1p-24f, -14 + (int)(rng() % 8));
            q[(t / SC * B) * C + t % SC * B] = (t & 1) ? 0xfe : 0x7e; /* +-448 in each tile */
        }
        ds_fp8_dequant(w, q, s, R, C, B);
        ds_fp8_quantize(q2, s2, w, R, C, B);
        bad_s += memcmp(s, s2, sizeof(s)) != 0;
        bad_q += memcmp(q, q2, sizeof(q)) != 0;
    }
    ASSERT_EQ_INT(bad_s, 0);
    ASSERT_EQ_INT(bad_q, 0);
}

/* The float matmuls (F16, BF16, FP8 with tile scales) convert weights with
 * AVX-512 or AVX2 where the CPU has them: the same bits at every level, and
 * FP8 the same as the F32 matmul of the dequantized weights. */
TEST(float_matmul_every_level)
{
    enum { T = 3, N = 37, K = 300, B = 128 }; /* K: ragged tiles, not a multiple of 16 */
    static uint16_t w16[N * K];
    static uint8_t q[N * K];
    static float x[T * K], wf[N * K], y[3][3][T * N], yf[T * N];
    const enum ds_type types[3] = {DS_TYPE_F16, DS_TYPE_BF16, DS_TYPE_F8_E4M3};
    float scales[(N + B - 1) / B * ((K + B - 1) / B)];
    for (int i = 0; i < T * K; i++)
        x[i] = gauss();
    for (int i = 0; i < N * K; i++) {
        w16[i] = (uint16_t)(0x3000 + rng() % 0x1800) ^ (uint16_t)(rng() & 0x8000);
        q[i] = (uint8_t)rng();
        if ((q[i] & 0x7f) == 0x7f)
            q[i] = 0x01; /* a subnormal instead of NaN */
    }
    for (size_t i = 0; i < sizeof(scales) / sizeof(scales[0]); i++)
        scales[i] = ldexpf(1.0f + (float)(rng() % 100) / 100.0f, -8);
    int levels = 0;
    for (int l = 0; l <= 2; l++) {
        if (ds_simd_set_level(l) != l)
            break;
        levels++;
        for (int k = 0; k < 3; k++)
            ds_matmul_scaled(y[l][k], N, x, K, k == 2 ? (const void *)q : (const void *)w16,
                             types[k], k == 2 ? scales : NULL, B, T, N, K);
    }
    ds_simd_set_level(-1);
    for (int l = 1; l < levels; l++)
        for (int k = 0; k < 3; k++)
            ASSERT_MSG(!memcmp(y[l][k], y[0][k], sizeof(y[0][0])), "%s: level %d differs",
                       ds_type_name(types[k]), l);
    ds_fp8_dequant(wf, q, scales, N, K, B);
    ds_matmul(yf, N, x, K, wf, DS_TYPE_F32, T, N, K);
    ASSERT(!memcmp(yf, y[levels - 1][2], sizeof(yf)));
}

int main(void)
{
    RUN(float_matmul_every_level);
    RUN(tiles_and_error);
    RUN(zero_tile);
    RUN(round_trip);
    return test_report();
}
