/* test_quant_rows.c - batched dot products (ds_quant_dot_rows and the 2-D
 * ds_quant_dot_tile) against the single ones, bit for bit, for every block
 * type at every SIMD level. */
#include <stdint.h>
#include <string.h>

#include "ds_quant.h"
#include "quant_impl.h"
#include "simd_levels.h"
#include "test.h"

static const enum ds_type types[] = {DS_TYPE_Q4_0, DS_TYPE_Q4_1, DS_TYPE_Q5_0, DS_TYPE_Q5_1,
                                     DS_TYPE_Q8_0, DS_TYPE_IQ4_NL, DS_TYPE_Q2_K, DS_TYPE_Q3_K,
                                     DS_TYPE_Q4_K, DS_TYPE_Q5_K, DS_TYPE_Q6_K, DS_TYPE_IQ4_XS};

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static float urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static size_t row_bytes(enum ds_type t, int64_t n)
{
    return (size_t)(n / ds_type_block_size(t)) * ds_type_block_bytes(t);
}

/* Rows of n elements, random with a few outliers (extreme scales and quants). */
static void fill(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = urand() * (i % 97 == 5 ? 40.0f : 1.0f);
}

/* nr random weight rows of type t and na activation rows of its vector type,
 * n elements each, quantized into w and qx (x: n floats of scratch). */
static void make_operands(enum ds_type t, int64_t n, uint8_t *w, int64_t nr, uint8_t *qx,
                          int64_t na, float *x)
{
    enum ds_type vt = ds_quant_vec_type(t);
    size_t wb = row_bytes(t, n), qb = row_bytes(vt, n);
    for (int64_t r = 0; r < nr; r++) {
        fill(x, n);
        ASSERT(ds_quantize_row(t, x, w + (size_t)r * wb, n, NULL) == DS_OK);
    }
    for (int64_t c = 0; c < na; c++) {
        fill(x, n);
        ASSERT(ds_quantize_vec(vt, x, qx + (size_t)c * qb, n) == DS_OK);
    }
}

/* na activation rows, out stride 3: every output equals the single dot
 * product of this level and the scalar reference, bit for bit; the gaps of
 * out are left alone. */
static void check_type(enum ds_type t, int64_t n, int64_t na)
{
    enum ds_type vt = ds_quant_vec_type(t);
    size_t wb = row_bytes(t, n), qb = row_bytes(vt, n);
    float *x = malloc((size_t)n * sizeof(float)), out[3 * 16], ref[3 * 16];
    uint8_t *w = malloc(wb), *qx = malloc(qb * (size_t)na);
    ASSERT(x && w && qx && na <= 16);
    make_operands(t, n, w, 1, qx, na, x);
    for (int i = 0; i < 3 * 16; i++)
        out[i] = ref[i] = -1.0f;
    ds_quant_dot_rows(t, w, qx, qb, na, n, out, 3);
    ds_quant_dot_rows_ref(t, w, qx, qb, na, n, ref, 3);
    for (int64_t c = 0; c < na; c++) {
        float one = ds_quant_dot(t, w, qx + (size_t)c * qb, n);
        float r = ds_quant_dot_ref(t, w, qx + (size_t)c * qb, n);
        ASSERT_MSG(!memcmp(&out[3 * c], &one, sizeof(one)) && !memcmp(&ref[3 * c], &r, sizeof(r)),
                   "%s n %lld act %lld/%lld: rows %.9g ref rows %.9g dot %.9g ref %.9g",
                   ds_type_name(t), (long long)n, (long long)c, (long long)na, out[3 * c],
                   ref[3 * c], one, r);
        ASSERT(out[3 * c + 1] == -1.0f && out[3 * c + 2] == -1.0f);
    }
    free(x);
    free(w);
    free(qx);
}

TEST(rows_vs_single)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        enum ds_type t = types[i];
        int64_t b = ds_type_block_size(t);
        /* block counts that leave every tail (4- and 8-block groups) */
        const int64_t nbs[] = {1, 3, 8, 13, 16};
        for (size_t k = 0; k < sizeof(nbs) / sizeof(nbs[0]); k++)
            for (int64_t na = 1; na <= 9; na += (na < 5 ? 1 : 4))
                check_type(t, nbs[k] * b, na);
        check_type(t, 64 * b, 16);
    }
}

/* nr weight rows x na activation rows of n elements into out (nr, na)
 * transposed with gaps (out[r + c * (nr + 1)], as ds_matmul_rows lays y
 * out): every output equals the single dot product of this level and the
 * scalar reference bit for bit, the gaps are left alone. */
static void check_tile(enum ds_type t, int64_t n, int64_t nr, int64_t na)
{
    enum ds_type vt = ds_quant_vec_type(t);
    size_t wb = row_bytes(t, n), qb = row_bytes(vt, n), no = (size_t)((nr + 1) * na);
    float *x = malloc((size_t)n * sizeof(float)), *out = malloc(no * sizeof(float));
    float *ref = malloc(no * sizeof(float));
    uint8_t *w = malloc(wb * (size_t)nr), *qx = malloc(qb * (size_t)na);
    ASSERT(x && out && ref && w && qx);
    make_operands(t, n, w, nr, qx, na, x);
    for (size_t i = 0; i < no; i++)
        out[i] = ref[i] = -1.0f;
    ds_quant_dot_tile(t, w, wb, nr, qx, qb, na, n, out, 1, nr + 1);
    ds_quant_dot_tile_ref(t, w, wb, nr, qx, qb, na, n, ref, 1, nr + 1);
    for (int64_t r = 0; r < nr; r++)
        for (int64_t c = 0; c < na; c++) {
            const uint8_t *wr = w + (size_t)r * wb, *qc = qx + (size_t)c * qb;
            float one = ds_quant_dot(t, wr, qc, n), rone = ds_quant_dot_ref(t, wr, qc, n);
            size_t i = (size_t)(r + c * (nr + 1));
            ASSERT_MSG(!memcmp(&out[i], &one, sizeof(one)) && !memcmp(&ref[i], &rone, sizeof(rone)),
                       "%s n %lld row %lld/%lld act %lld/%lld: tile %.9g ref tile %.9g dot %.9g "
                       "ref %.9g",
                       ds_type_name(t), (long long)n, (long long)r, (long long)nr, (long long)c,
                       (long long)na, out[i], ref[i], one, rone);
        }
    for (int64_t c = 0; c < na; c++)
        ASSERT(out[nr + c * (nr + 1)] == -1.0f && ref[nr + c * (nr + 1)] == -1.0f);
    free(x);
    free(out);
    free(ref);
    free(w);
    free(qx);
}

TEST(tile_vs_single)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        enum ds_type t = types[i];
        int64_t b = ds_type_block_size(t);
        /* block counts below, at and past the tile's 8-block groups and its
         * 64-block K chunks; row and activation counts that leave partial
         * tiles (8 x 8) and more than one group of 16 activation tiles */
        const int64_t nbs[] = {1, 3, 13, 70};
        const int64_t nrs[] = {1, 7, 9, 17};
        const int64_t nas[] = {1, 2, 7, 9, 16};
        for (size_t k = 0; k < sizeof(nbs) / sizeof(nbs[0]); k++)
            for (size_t r = 0; r < sizeof(nrs) / sizeof(nrs[0]); r++)
                for (size_t a = 0; a < sizeof(nas) / sizeof(nas[0]); a++)
                    if (nbs[k] * b <= 4096 || (nrs[r] == 9 && nas[a] == 9))
                        check_tile(t, nbs[k] * b, nrs[r], nas[a]);
        check_tile(t, 3 * b, 3, 131);
    }
}

TEST(zero_rows)
{
    float out = 7.0f;
    uint8_t w[256], qx[512];
    memset(w, 0, sizeof(w));
    memset(qx, 0, sizeof(qx));
    ds_quant_dot_rows(DS_TYPE_Q8_0, w, qx, 34, 0, 32, &out, 1);
    ASSERT(out == 7.0f);
    ds_quant_dot_tile(DS_TYPE_Q8_0, w, 34, 0, qx, 34, 4, 32, &out, 1, 1);
    ds_quant_dot_tile(DS_TYPE_Q8_0, w, 34, 4, qx, 34, 0, 32, &out, 1, 1);
    ASSERT(out == 7.0f);
}

static void level_tests(void)
{
    RUN(rows_vs_single);
    RUN(tile_vs_single);
}

int main(void)
{
    every_simd_level(level_tests);
    RUN(zero_rows);
    return test_report();
}
