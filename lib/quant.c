/* quant.c - the public block quantization API, dispatched per type. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds_quant.h"
#include "error_impl.h"
#include "quant_impl.h"
#include "ds_banned.h"

/* Bit-exactness with ggml needs a*b + c rounded twice, never fused. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static const struct ds_qtype *qtype(enum ds_type t)
{
    const struct ds_qtype *q = ds_qtype_legacy(t);
    return q ? q : ds_qtype_k(t);
}

bool ds_quant_supported(enum ds_type t)
{
    return qtype(t) != NULL;
}

static ds_err check_row(enum ds_type t, int64_t n)
{
    int64_t b = ds_type_block_size(t);
    DS_RETURN_IF(!qtype(t), DS_ERR_UNSUPPORTED, "quantization type %s is not supported",
                 ds_type_name(t));
    DS_RETURN_IF(n < 0 || b <= 0 || n % b, DS_ERR_ARG,
                 "a row of %lld elements does not fit %s blocks of %lld", (long long)n,
                 ds_type_name(t), (long long)b);
    return DS_OK;
}

ds_err ds_quantize_row(enum ds_type t, const float *x, void *dst, int64_t n,
                       const float *imatrix)
{
    DS_TRY(check_row(t, n));
    qtype(t)->quantize(x, dst, n, imatrix);
    return DS_OK;
}

ds_err ds_quantize_row_ref(enum ds_type t, const float *x, void *dst, int64_t n,
                           const float *imatrix)
{
    DS_TRY(check_row(t, n));
    qtype(t)->quantize_ref(x, dst, n, imatrix);
    return DS_OK;
}

static bool plain(enum ds_type t)
{
    return t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16 || t == DS_TYPE_F8_E4M3;
}

ds_err ds_dequantize_row(enum ds_type t, const void *src, float *y, int64_t n)
{
    if (plain(t))
        return ds_convert_row(DS_TYPE_F32, y, t, src, (size_t)n);
    DS_TRY(check_row(t, n));
    qtype(t)->dequantize(src, y, n);
    return DS_OK;
}

ds_err ds_dequantize_row_ref(enum ds_type t, const void *src, float *y, int64_t n)
{
    if (plain(t))
        return ds_convert_row(DS_TYPE_F32, y, t, src, (size_t)n);
    DS_TRY(check_row(t, n));
    qtype(t)->dequantize_ref(src, y, n);
    return DS_OK;
}

enum ds_type ds_quant_vec_type(enum ds_type t)
{
    const struct ds_qtype *q = qtype(t);
    return q ? q->vec_type : DS_TYPE_F32;
}

ds_err ds_quantize_vec(enum ds_type vt, const float *x, void *dst, int64_t n)
{
    DS_RETURN_IF(vt != DS_TYPE_Q8_0 && vt != DS_TYPE_Q8_1 && vt != DS_TYPE_Q8_K, DS_ERR_ARG,
                 "activations are quantized to q8_0, q8_1 or q8_K, not %s", ds_type_name(vt));
    DS_RETURN_IF(n < 0 || n % ds_type_block_size(vt), DS_ERR_ARG,
                 "a row of %lld elements does not fit %s blocks", (long long)n,
                 ds_type_name(vt));
    if (vt == DS_TYPE_Q8_0)
        ds_quantize_q8_0(x, dst, n);
    else if (vt == DS_TYPE_Q8_1)
        ds_quantize_q8_1(x, dst, n);
    else
        ds_quantize_q8_k(x, dst, n);
    return DS_OK;
}

float ds_quant_dot(enum ds_type t, const void *row, const void *qx, int64_t n)
{
    const struct ds_qtype *q = qtype(t);
    return q ? q->dot(row, qx, n) : 0.0f;
}

float ds_quant_dot_ref(enum ds_type t, const void *row, const void *qx, int64_t n)
{
    const struct ds_qtype *q = qtype(t);
    return q ? q->dot_ref(row, qx, n) : 0.0f;
}

void ds_quant_dot_rows(enum ds_type t, const void *row, const void *qx, size_t qx_stride,
                       int64_t na, int64_t n, float *out, int64_t out_stride)
{
    const struct ds_qtype *q = qtype(t);
    if (q && q->dot_rows && na > 1) { // one row (decode): the single kernel, no batching overhead
        q->dot_rows(row, qx, qx_stride, na, n, out, out_stride);
        return;
    }
    for (int64_t c = 0; c < na; c++)
        out[c * out_stride] =
            q ? q->dot(row, (const unsigned char *)qx + (size_t)c * qx_stride, n) : 0.0f;
}

void ds_quant_dot_rows_ref(enum ds_type t, const void *row, const void *qx, size_t qx_stride,
                           int64_t na, int64_t n, float *out, int64_t out_stride)
{
    const struct ds_qtype *q = qtype(t);
    for (int64_t c = 0; c < na; c++)
        out[c * out_stride] =
            q ? q->dot_ref(row, (const unsigned char *)qx + (size_t)c * qx_stride, n) : 0.0f;
}

void ds_quant_dot_tile(enum ds_type t, const void *w, size_t w_stride, int64_t nr, const void *qx,
                       size_t qx_stride, int64_t na, int64_t n, float *out, int64_t out_rs,
                       int64_t out_cs)
{
    if (ds_dot_tile_legacy(t, w, w_stride, nr, qx, qx_stride, na, n, out, out_rs, out_cs))
        return;
    const struct ds_qtype *q = qtype(t);
    if (q && na == 1) { // decode: the single kernel, looked up once for all rows
        for (int64_t r = 0; r < nr; r++)
            out[r * out_rs] = q->dot((const unsigned char *)w + (size_t)r * w_stride, qx, n);
        return;
    }
    for (int64_t r = 0; r < nr; r++)
        ds_quant_dot_rows(t, (const unsigned char *)w + (size_t)r * w_stride, qx, qx_stride, na, n,
                          out + r * out_rs, out_cs);
}

void ds_quant_dot_tile_ref(enum ds_type t, const void *w, size_t w_stride, int64_t nr,
                           const void *qx, size_t qx_stride, int64_t na, int64_t n, float *out,
                           int64_t out_rs, int64_t out_cs)
{
    for (int64_t r = 0; r < nr; r++)
        ds_quant_dot_rows_ref(t, (const unsigned char *)w + (size_t)r * w_stride, qx, qx_stride, na,
                              n, out + r * out_rs, out_cs);
}

float ds_quant_dot_f32(enum ds_type t, const void *row, const float *x, int64_t n)
{
    float y[256], sum = 0.0f;
    int64_t b = ds_type_block_size(t);
    size_t bb = ds_type_block_bytes(t);
    const struct ds_qtype *q = qtype(t);

    if (!q || b <= 0 || b > 256)
        return 0.0f;
    for (int64_t i = 0; i < n; i += b) {
        q->dequantize((const char *)row + (size_t)(i / b) * bb, y, b);
        for (int64_t j = 0; j < b; j++)
            sum += y[j] * x[i + j];
    }
    return sum;
}

ds_err ds_quant_error(enum ds_type t, const float *x, const void *qrow, int64_t n,
                      const float *imatrix, double *sum_err2, double *sum_x2)
{
    float *y = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    double e2 = 0, x2 = 0;
    ds_err rc;
    if (!y)
        return DS_ERR_NOMEM;
    rc = ds_dequantize_row(t, qrow, y, n);
    for (int64_t i = 0; rc == DS_OK && i < n; i++) {
        double w = imatrix ? imatrix[i] : 1.0, d = (double)x[i] - y[i];
        e2 += w * d * d;
        x2 += w * (double)x[i] * x[i];
    }
    free(y);
    if (sum_err2)
        *sum_err2 = e2;
    if (sum_x2)
        *sum_x2 = x2;
    return rc;
}

/* True when scale s reproduces every element of the tile: fp8(w / s) * s == w
 * (w holds FP8 weights dequantized with s). */
static bool fp8_tile_exact(const float *w, int64_t cols, int64_t i0, int64_t i1, int64_t j0,
                           int64_t j1, float s)
{
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++)
            if (ds_fp8_e4m3_to_f32(ds_f32_to_fp8_e4m3(w[i * cols + j] / s)) * s != w[i * cols + j])
                return false;
    return true;
}

void ds_fp8_quantize(uint8_t *q, float *scale_inv, const float *w, int64_t rows, int64_t cols,
                     int64_t block)
{
    int64_t srows = (rows + block - 1) / block, scols = (cols + block - 1) / block;
    if (rows <= 0 || cols <= 0 || block <= 0)
        return;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
#endif
    for (int64_t t = 0; t < srows * scols; t++) {
        int64_t i0 = t / scols * block, j0 = t % scols * block;
        int64_t i1 = i0 + block < rows ? i0 + block : rows;
        int64_t j1 = j0 + block < cols ? j0 + block : cols;
        float amax = 0.0f, s;
        for (int64_t i = i0; i < i1; i++)
            for (int64_t j = j0; j < j1; j++)
                amax = fmaxf(amax, fabsf(w[i * cols + j]));
        s = amax / 448.0f;
        /* 448 * s rounds: for dequantized FP8 input, amax / 448 can miss the
         * tile's scale by an ulp; a neighbour that gives the input back
         * exactly is that scale (so FP8 -> F32 -> FP8 is lossless) */
        if (s > 0.0f && isfinite(s) && !fp8_tile_exact(w, cols, i0, i1, j0, j1, s)) {
            float up = nextafterf(s, INFINITY), down = nextafterf(s, 0.0f);
            if (fp8_tile_exact(w, cols, i0, i1, j0, j1, up))
                s = up;
            else if (fp8_tile_exact(w, cols, i0, i1, j0, j1, down))
                s = down;
        }
        scale_inv[t] = s;
        for (int64_t i = i0; i < i1; i++)
            for (int64_t j = j0; j < j1; j++)
                q[i * cols + j] = s > 0.0f ? ds_f32_to_fp8_e4m3(w[i * cols + j] / s) : 0;
    }
}

/* What the CPU has: 0 scalar, 1 AVX2 (+FMA, F16C), 2 AVX-512 F/BW/VL + VNNI. */
static int cpu_level(void)
{
    int l = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    /* every AVX2 CPU has F16C (and clang 14 does not know the "f16c" name) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        l = 1;
    if (l == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        l = 2;
#endif
    return l;
}

int ds_simd_level_now = -1;
int ds_simd_vbmi_now = -1;

/* Puts level l (at most the CPU's) in effect. */
static int use_level(int l)
{
    int cpu = cpu_level(), vbmi = 0;
    if (l > cpu)
        l = cpu;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    vbmi = l >= 2 && __builtin_cpu_supports("avx512vbmi");
#endif
    ds_simd_vbmi_now = vbmi;
    ds_simd_level_now = l;
    return l;
}

int ds_simd_level_init(void)
{
    const char *cap = getenv("DS_SIMD");
    return use_level(cap && !strcmp(cap, "scalar") ? 0 : cap && !strcmp(cap, "avx2") ? 1 : 2);
}

int ds_simd_set_level(int level)
{
    return level < 0 ? ds_simd_level_init() : use_level(level);
}

const char *ds_quant_simd(void)
{
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    return names[ds_simd_level()];
}

static inline int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

float ds_quant_search_sym(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < DS_QUANT_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(ds_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(ds_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clamp_int(ds_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}
