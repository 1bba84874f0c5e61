/* tensor.c - element types, tensor sizes and exact scalar conversions. */
#include <assert.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "ds_tensor.h"
#include "error_impl.h"
#include "ds_banned.h"

struct type_info {
    const char *name;
    int64_t block;
    size_t bytes;
};

/* Indexed by ggml type id; ids with no name are removed or unknown. */
static const struct type_info ggml_types[] = {
    [DS_TYPE_F32] = {"f32", 1, 4},
    [DS_TYPE_F16] = {"f16", 1, 2},
    [DS_TYPE_Q4_0] = {"q4_0", 32, 18},
    [DS_TYPE_Q4_1] = {"q4_1", 32, 20},
    [DS_TYPE_Q5_0] = {"q5_0", 32, 22},
    [DS_TYPE_Q5_1] = {"q5_1", 32, 24},
    [DS_TYPE_Q8_0] = {"q8_0", 32, 34},
    [DS_TYPE_Q8_1] = {"q8_1", 32, 36},
    [DS_TYPE_Q2_K] = {"q2_K", 256, 84},
    [DS_TYPE_Q3_K] = {"q3_K", 256, 110},
    [DS_TYPE_Q4_K] = {"q4_K", 256, 144},
    [DS_TYPE_Q5_K] = {"q5_K", 256, 176},
    [DS_TYPE_Q6_K] = {"q6_K", 256, 210},
    [DS_TYPE_Q8_K] = {"q8_K", 256, 292},
    [DS_TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [DS_TYPE_IQ2_XS] = {"iq2_xs", 256, 74},
    [DS_TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [DS_TYPE_IQ1_S] = {"iq1_s", 256, 50},
    [DS_TYPE_IQ4_NL] = {"iq4_nl", 32, 18},
    [DS_TYPE_IQ3_S] = {"iq3_s", 256, 110},
    [DS_TYPE_IQ2_S] = {"iq2_s", 256, 82},
    [DS_TYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [DS_TYPE_I8] = {"i8", 1, 1},
    [DS_TYPE_I16] = {"i16", 1, 2},
    [DS_TYPE_I32] = {"i32", 1, 4},
    [DS_TYPE_I64] = {"i64", 1, 8},
    [DS_TYPE_F64] = {"f64", 1, 8},
    [DS_TYPE_IQ1_M] = {"iq1_m", 256, 56},
    [DS_TYPE_BF16] = {"bf16", 1, 2},
    [DS_TYPE_TQ1_0] = {"tq1_0", 256, 54},
    [DS_TYPE_TQ2_0] = {"tq2_0", 256, 66},
    [DS_TYPE_MXFP4] = {"mxfp4", 32, 17},
};

#define N_GGML_TYPES (sizeof(ggml_types) / sizeof(ggml_types[0]))

static const struct type_info fp8_info = {"f8_e4m3", 1, 1};

static const struct type_info *type_info(int id)
{
    if (id >= 0 && (size_t)id < N_GGML_TYPES && ggml_types[id].name)
        return &ggml_types[id];
    if (id == DS_TYPE_F8_E4M3)
        return &fp8_info;
    return NULL;
}

bool ds_type_valid(int id)
{
    return type_info(id) != NULL;
}

const char *ds_type_name(enum ds_type t)
{
    const struct type_info *ti = type_info((int)t);
    return ti ? ti->name : "?";
}

ds_err ds_type_from_name(const char *name, enum ds_type *out)
{
    DS_RETURN_IF(!name || !out, DS_ERR_ARG, "type name missing");
    for (size_t i = 0; i < N_GGML_TYPES; i++) {
        if (ggml_types[i].name && strcasecmp(name, ggml_types[i].name) == 0) {
            *out = (enum ds_type)i;
            return DS_OK;
        }
    }
    if (strcasecmp(name, fp8_info.name) == 0 || strcasecmp(name, "fp8") == 0) {
        *out = DS_TYPE_F8_E4M3;
        return DS_OK;
    }
    return ds_set_error(DS_ERR_UNSUPPORTED, "unknown tensor type '%s'", name);
}

int64_t ds_type_block_size(enum ds_type t)
{
    const struct type_info *ti = type_info((int)t);
    return ti ? ti->block : 0;
}

size_t ds_type_block_bytes(enum ds_type t)
{
    const struct type_info *ti = type_info((int)t);
    return ti ? ti->bytes : 0;
}

bool ds_type_llama_loadable(enum ds_type t)
{
    return (int)t >= 0 && (size_t)t < N_GGML_TYPES && ggml_types[t].name;
}

ds_err ds_tensor_nbytes(enum ds_type t, uint32_t n_dims, const int64_t *ne,
                        uint64_t *n_elements, uint64_t *n_bytes)
{
    const struct type_info *ti = type_info((int)t);
    uint64_t n = 1, bytes;
    bool empty = false;

    DS_RETURN_IF(!ti, DS_ERR_UNSUPPORTED, "unknown tensor type %d", (int)t);
    DS_RETURN_IF(n_dims > DS_MAX_DIMS, DS_ERR_FORMAT, "%u dimensions (at most %d)", n_dims,
                 DS_MAX_DIMS);
    DS_RETURN_IF(n_dims > 0 && !ne, DS_ERR_ARG, "shape missing");
    for (uint32_t i = 0; i < n_dims; i++) {
        DS_RETURN_IF(ne[i] < 0, DS_ERR_FORMAT, "negative dimension ne[%u] = %lld", i,
                     (long long)ne[i]);
        if (ne[i] == 0)
            empty = true;
    }
    // A scalar (n_dims 0) has one element in ne[0]'s place.
    int64_t ne0 = n_dims > 0 ? ne[0] : 1;
    DS_RETURN_IF(ne0 % ti->block != 0, DS_ERR_FORMAT,
                 "row length %lld is not a multiple of the %s block size %lld", (long long)ne0,
                 ti->name, (long long)ti->block);
    if (empty) {
        n = 0;
    } else {
        for (uint32_t i = 0; i < n_dims; i++)
            DS_RETURN_IF(ds_mul_u64(n, (uint64_t)ne[i], &n) || n > INT64_MAX, DS_ERR_LIMIT,
                         "tensor of shape [%lld, %lld, %lld, %lld] has too many elements",
                         (long long)ne[0], n_dims > 1 ? (long long)ne[1] : 1LL,
                         n_dims > 2 ? (long long)ne[2] : 1LL,
                         n_dims > 3 ? (long long)ne[3] : 1LL);
    }
    DS_RETURN_IF(ds_mul_u64(n / (uint64_t)ti->block, ti->bytes, &bytes) || bytes > INT64_MAX,
                 DS_ERR_LIMIT, "tensor of %llu %s elements is too large", (unsigned long long)n,
                 ti->name);
    if (n_elements)
        *n_elements = n;
    if (n_bytes)
        *n_bytes = bytes;
    return DS_OK;
}

/* ---- scalar conversions ----------------------------------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Rounds the top of m away at bit `shift` (shift >= 1) to nearest even. */
static inline uint32_t shift_rne(uint32_t m, unsigned shift)
{
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return q;
}

float ds_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000 | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return bits_f32(sign);
        // Subnormal: mant * 2^-24, normalised for f32.
        exp = 127 - 15 + 1;
        while (!(mant & 0x400)) {
            mant <<= 1;
            exp--;
        }
        return bits_f32(sign | (exp << 23) | ((mant & 0x3ff) << 13));
    }
    return bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

uint16_t ds_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffff;

    if (a > 0x7f800000) // NaN: keep the top payload bits, force quiet
        return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
    if (a >= 0x47800000) // >= 65536 or inf
        return sign | 0x7c00;
    if (a >= 0x38800000) { // normal f16 range; a carry may reach inf
        uint32_t m = ((a >> 23) - 127 + 15) << 23 | (a & 0x7fffff);
        return sign | (uint16_t)shift_rne(m, 13);
    }
    if (a <= 0x33000000) // <= 2^-25, half the smallest subnormal: ties to 0
        return sign;
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffff) | 0x800000;
    return sign | (uint16_t)shift_rne(m, 126 - e); // units of 2^-24
}

float ds_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t ds_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

float ds_fp8_e4m3_to_f32(uint8_t q)
{
    uint32_t sign = (uint32_t)(q & 0x80) << 24;
    uint32_t exp = (q >> 3) & 0xf;
    uint32_t mant = q & 7;

    if ((q & 0x7f) == 0x7f)
        return bits_f32(sign | 0x7fc00000);
    if (exp == 0) {
        float v = (float)mant * 0x1p-9f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 127 - 7) << 23) | (mant << 20));
}

uint8_t ds_f32_to_fp8_e4m3(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    uint32_t a = u & 0x7fffffff;

    if (a > 0x7f800000)
        return 0x7f;
    if (a >= 0x43e00000) // >= 448 or inf: saturate
        return sign | 0x7e;
    if (a >= 0x3c800000) { // >= 2^-6, normal; < 448 never rounds past 0x7e
        uint32_t m = ((a >> 23) - 127 + 7) << 23 | (a & 0x7fffff);
        return sign | (uint8_t)shift_rne(m, 20);
    }
    if (a <= 0x3a800000) // <= 2^-10, half the smallest subnormal: ties to 0
        return sign;
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffff) | 0x800000;
    return sign | (uint8_t)shift_rne(m, 141 - e); // units of 2^-9
}

/* ---- rows ------------------------------------------------------------------------ */

static bool row_type(enum ds_type t)
{
    return t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16 || t == DS_TYPE_F64 ||
           t == DS_TYPE_F8_E4M3;
}

/* double -> float rounded to odd: with at least two spare bits over the final
 * narrow type, rounding that result to nearest even equals rounding d directly,
 * so f64 -> f16/bf16/fp8 is rounded once. */
static float f64_to_f32_odd(double d)
{
    float f = (float)d;
    if (isnan(d) || (double)f == d)
        return f;
    if (fabs((double)f) > fabs(d))
        f = nextafterf(f, 0.0f);
    return bits_f32(f32_bits(f) | 1);
}

static float load_float(enum ds_type t, const unsigned char *p)
{
    uint16_t h;
    float f;
    switch (t) {
    case DS_TYPE_F32:
        memcpy(&f, p, sizeof(f));
        return f;
    case DS_TYPE_F16:
        memcpy(&h, p, sizeof(h));
        return ds_f16_to_f32(h);
    case DS_TYPE_BF16:
        memcpy(&h, p, sizeof(h));
        return ds_bf16_to_f32(h);
    case DS_TYPE_F8_E4M3:
        return ds_fp8_e4m3_to_f32(*p);
    default:
        assert(0);
        return 0.0f;
    }
}

static void store_float(enum ds_type t, unsigned char *p, float f)
{
    uint16_t h;
    switch (t) {
    case DS_TYPE_F32:
        memcpy(p, &f, sizeof(f));
        break;
    case DS_TYPE_F16:
        h = ds_f32_to_f16(f);
        memcpy(p, &h, sizeof(h));
        break;
    case DS_TYPE_BF16:
        h = ds_f32_to_bf16(f);
        memcpy(p, &h, sizeof(h));
        break;
    case DS_TYPE_F8_E4M3:
        *p = ds_f32_to_fp8_e4m3(f);
        break;
    default:
        assert(0);
    }
}

/* The pairs conversions spend their time in (F32 <-> F16/BF16): tight loops,
 * split across threads for long rows. Same results as the generic loop in
 * ds_convert_row, which the tests compare them with. Returns false for other
 * pairs. */
#define PAR_MIN (1u << 16)
static bool convert_fast(enum ds_type dt, unsigned char *d, enum ds_type st,
                         const unsigned char *s, size_t n)
{
    if (st == DS_TYPE_F32 && (dt == DS_TYPE_BF16 || dt == DS_TYPE_F16)) {
        const bool bf = dt == DS_TYPE_BF16;
#ifdef _OPENMP
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
#endif
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, s + 4 * i, 4);
            uint16_t h = bf ? ds_f32_to_bf16(f) : ds_f32_to_f16(f);
            memcpy(d + 2 * i, &h, 2);
        }
        return true;
    }
    if (dt == DS_TYPE_F32 && (st == DS_TYPE_BF16 || st == DS_TYPE_F16)) {
        const bool bf = st == DS_TYPE_BF16;
#ifdef _OPENMP
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
#endif
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            float f = bf ? ds_bf16_to_f32(h) : ds_f16_to_f32(h);
            memcpy(d + 4 * i, &f, 4);
        }
        return true;
    }
    return false;
}

ds_err ds_convert_row(enum ds_type dst_type, void *dst, enum ds_type src_type,
                      const void *src, size_t n)
{
    DS_RETURN_IF(!row_type(dst_type) || !row_type(src_type), DS_ERR_UNSUPPORTED,
                 "conversion from %s to %s", ds_type_name(src_type), ds_type_name(dst_type));
    size_t ssz = ds_type_block_bytes(src_type), dsz = ds_type_block_bytes(dst_type);
    DS_RETURN_IF(n > SIZE_MAX / 8, DS_ERR_LIMIT, "row of %zu elements is too long", n);
    if (n == 0)
        return DS_OK;
    DS_RETURN_IF(!dst || !src, DS_ERR_ARG, "row buffer missing");

    unsigned char *d = dst;
    const unsigned char *s = src;
    if (src_type == dst_type) {
        memcpy(d, s, n * ssz);
        return DS_OK;
    }
    if (convert_fast(dst_type, d, src_type, s, n))
        return DS_OK;
    if (src_type == DS_TYPE_F64) {
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + i * 8, sizeof(v));
            if (dst_type == DS_TYPE_F32) {
                float f = (float)v;
                memcpy(d + i * 4, &f, sizeof(f));
            } else {
                store_float(dst_type, d + i * dsz, f64_to_f32_odd(v));
            }
        }
    } else if (dst_type == DS_TYPE_F64) {
        for (size_t i = 0; i < n; i++) {
            double v = (double)load_float(src_type, s + i * ssz);
            memcpy(d + i * 8, &v, sizeof(v));
        }
    } else {
        for (size_t i = 0; i < n; i++)
            store_float(dst_type, d + i * dsz, load_float(src_type, s + i * ssz));
    }
    return DS_OK;
}

/* ---- FP8 block dequantization -------------------------------------------------- */

void ds_fp8_dequant_ref(float *w, const uint8_t *q, const float *scale_inv, int64_t rows,
                        int64_t cols, int64_t block)
{
    // q (rows, cols), scale_inv (ceil(rows/block), ceil(cols/block)) -> w (rows, cols)
    assert(block > 0);
    int64_t scols = (cols + block - 1) / block;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            w[i * cols + j] =
                ds_fp8_e4m3_to_f32(q[i * cols + j]) * scale_inv[(i / block) * scols + j / block];
}

void ds_fp8_dequant(float *w, const uint8_t *q, const float *scale_inv, int64_t rows,
                    int64_t cols, int64_t block)
{
    // q (rows, cols), scale_inv (ceil(rows/block), ceil(cols/block)) -> w (rows, cols)
    float lut[256];

    assert(block > 0);
    if (rows <= 0 || cols <= 0)
        return;
    for (int k = 0; k < 256; k++)
        lut[k] = ds_fp8_e4m3_to_f32((uint8_t)k);
    int64_t scols = (cols + block - 1) / block;

#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *qr = q + i * cols;
        const float *sr = scale_inv + (i / block) * scols;
        float *wr = w + i * cols;
        for (int64_t jb = 0; jb < scols; jb++) {
            float s = sr[jb];
            int64_t j0 = jb * block;
            int64_t j1 = j0 + block < cols ? j0 + block : cols;
            for (int64_t j = j0; j < j1; j++)
                wr[j] = lut[qr[j]] * s;
        }
    }
}
