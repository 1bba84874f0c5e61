/*
 * test_quant_ggml.c - our block quantization against llama.cpp's own ggml.
 *
 * Loads libggml-base.so from the node-llama-cpp package installed for the
 * interop tests (tests/interop/node_modules/@node-llama-cpp/<platform>/bins/
 * <platform>/libggml-base.so, relative to the repository root; DS_GGML_BASE
 * names another file) and, for every type ds_quant_supported() accepts:
 *
 *  1. ggml's to_float turns blocks we produced (and random blocks) into
 *     exactly the floats ds_dequantize_row gives (bit for bit);
 *  2. on realistic weight matrices our quantization error is no worse than
 *     ggml_quantize_chunk's (what llama-quantize writes), without imatrix and
 *     with a random positive one (importance-weighted error, 1% tolerance);
 *     the legacy 32-element types must give the same bytes without imatrix;
 *  3. ds_quant_dot gives bit for bit what ggml's scalar ggml_vec_dot_*_generic
 *     (libggml-cpu-x64.so, next to libggml-base.so) gives on the same blocks,
 *     (Q4_1 and Q5_1 with Q8_1 activations, the others with Q8_0 or Q8_K),
 *     and ds_quantize_vec the bytes of quantize_row_q8_0_ref / q8_1_ref /
 *     q8_K_ref.
 *
 * Skipped (exit 0) when the library is not installed or does not load.
 */
#include <dlfcn.h>
#include <glob.h>
#include <stdbool.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_quant.h"
#include "ds_tensor.h"
#include "test.h"

/* ggml.h (llama.cpp as bundled by node-llama-cpp 3.22.1, "v0.5.0"): the
 * layout is checked at run time against ggml_blck_size / ggml_type_size. */
struct ggml_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    void (*to_float)(const void *x, float *y, int64_t k);
    void (*from_float_ref)(const float *x, void *y, int64_t k);
};

static struct {
    void *handle;
    const struct ggml_type_traits *(*get_type_traits)(int type);
    size_t (*quantize_chunk)(int type, const float *src, void *dst, int64_t start,
                             int64_t nrows, int64_t n_per_row, const float *imatrix);
    void (*quantize_init)(int type);
    void (*quantize_free)(void);
    size_t (*type_size)(int type);
    int64_t (*blck_size)(int type);
    const char *(*type_name)(int type);
    void *cpu; // libggml-cpu-x64.so: the generic (scalar) dot products, or NULL
} gg;

typedef void (*vec_dot_fn)(int n, float *s, size_t bs, const void *vx, size_t bx,
                           const void *vy, size_t by, int nrc);
typedef void (*from_float_fn)(const float *x, void *y, int64_t k);

static void *sym(const char *name)
{
    return dlsym(gg.handle, name);
}

static bool load_ggml(void)
{
    const char *env = getenv("DS_GGML_BASE");
    glob_t g;
    bool ok = false;
    char path[4096] = "";
    if (env && *env) {
        snprintf(path, sizeof(path), "%s", env);
        gg.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    } else if (glob("tests/interop/node_modules/@node-llama-cpp/*/bins/*/libggml-base.so", 0,
                    NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !gg.handle; i++) {
            snprintf(path, sizeof(path), "%s", g.gl_pathv[i]);
            gg.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }
        globfree(&g);
    }
    if (!gg.handle)
        return false;
    // the baseline x86-64 CPU backend in the same directory, for its dot products
    char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path) + sizeof("/libggml-cpu-x64.so") <= sizeof(path)) {
        memcpy(slash, "/libggml-cpu-x64.so", sizeof("/libggml-cpu-x64.so"));
        gg.cpu = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
    void (*cpu_init)(void);
    *(void **)&cpu_init = gg.cpu ? dlsym(gg.cpu, "ggml_cpu_init") : NULL;
    if (cpu_init)
        cpu_init(); // fills the f16 -> f32 table its kernels read
    else if (gg.cpu)
        dlclose(gg.cpu), gg.cpu = NULL;
    // dlsym returns void *; the conversion to function pointers is POSIX
    *(void **)&gg.get_type_traits = sym("ggml_get_type_traits");
    *(void **)&gg.quantize_chunk = sym("ggml_quantize_chunk");
    *(void **)&gg.quantize_init = sym("ggml_quantize_init");
    *(void **)&gg.quantize_free = sym("ggml_quantize_free");
    *(void **)&gg.type_size = sym("ggml_type_size");
    *(void **)&gg.blck_size = sym("ggml_blck_size");
    *(void **)&gg.type_name = sym("ggml_type_name");
    ok = gg.get_type_traits && gg.quantize_chunk && gg.type_size && gg.blck_size;
    if (!ok) {
        if (gg.cpu)
        dlclose(gg.cpu);
    dlclose(gg.handle);
        gg.handle = NULL;
    }
    return ok;
}

/* The types under test: every id ds_quant_supported() accepts, so that new
 * types are covered as soon as they exist. */
static int types[64], ntypes;

static void list_types(void)
{
    for (int id = 0; id < 64; id++)
        if (ds_type_valid(id) && ds_quant_supported((enum ds_type)id))
            types[ntypes++] = id;
}

static bool legacy(int t)
{
    return ds_type_block_size((enum ds_type)t) == 32;
}

/* The traits of t when their layout is the one above, else NULL. */
static const struct ggml_type_traits *traits(int t)
{
    const struct ggml_type_traits *tr = gg.get_type_traits(t);
    if (!tr || tr->blck_size != gg.blck_size(t) || tr->type_size != gg.type_size(t) ||
        !tr->to_float)
        return NULL;
    return tr;
}

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x2545f4914f6cdd1dull;
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

static size_t row_bytes(int t, int64_t n)
{
    return (size_t)(n / ds_type_block_size((enum ds_type)t)) *
           ds_type_block_bytes((enum ds_type)t);
}

/* Equal floats: the same bits, or both NaN. */
static bool same_float(float a, float b)
{
    return !memcmp(&a, &b, sizeof(a)) || (isnan(a) && isnan(b));
}

enum { ROWS = 64, COLS = 4096, NMAT = 3 };

static const char *const mat_names[NMAT] = {"gauss+outliers", "row scales", "heavy tails"};

/* Realistic weight matrices x (rows, COLS). */
static void make_matrix(int kind, float *x, int rows)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * COLS;
        double scale = kind == 1 ? pow(10.0, -3.0 + 4.0 * uniform()) : 0.02;
        for (int c = 0; c < COLS; c++) {
            double v = gauss();
            if (kind == 2) // Laplace
                v = (uniform() < 0.5 ? -1.0 : 1.0) * log(uniform());
            if (uniform() < (kind == 0 ? 0.002 : 0.0005))
                v *= 10.0 + 20.0 * uniform();
            xr[c] = (float)(scale * v);
        }
    }
}

/* ---- tests ------------------------------------------------------------------ */

TEST(type_table)
{
    ASSERT(ntypes >= 6);
    for (int k = 0; k < ntypes; k++) {
        int t = types[k];
        ASSERT_MSG(gg.type_size(t) == ds_type_block_bytes((enum ds_type)t) &&
                       gg.blck_size(t) == ds_type_block_size((enum ds_type)t),
                   "%s: ggml has %zu bytes per %lld, we %zu per %lld",
                   ds_type_name((enum ds_type)t), gg.type_size(t), (long long)gg.blck_size(t),
                   ds_type_block_bytes((enum ds_type)t),
                   (long long)ds_type_block_size((enum ds_type)t));
        if (gg.type_name)
            ASSERT_STR(gg.type_name(t), ds_type_name((enum ds_type)t));
        ASSERT_MSG(traits(t), "%s: struct ggml_type_traits does not have the expected layout",
                   ds_type_name((enum ds_type)t));
    }
}

/* llama.cpp dequantizes our blocks (and any block) to the same floats. */
TEST(ggml_dequantizes_our_blocks)
{
    enum { N = 8 * COLS };
    static float x[N], yg[N], yd[N], imat[COLS];
    static uint8_t q[4 * N]; // room for any block type
    make_matrix(0, x, 8);
    for (int c = 0; c < COLS; c++)
        imat[c] = (float)exp(gauss());
    for (int k = 0; k < ntypes; k++) {
        const int t = types[k];
        const struct ggml_type_traits *tr = traits(t);
        if (!tr)
            continue; // reported by type_table
        for (int pass = 0; pass < 3; pass++) {
            const char *what = pass == 2 ? "random" : pass ? "imatrix" : "plain";
            if (pass == 2) { // random bytes: every code path of the layout
                for (size_t i = 0; i < row_bytes(t, N); i++)
                    q[i] = (uint8_t)rng();
            } else {
                for (int r = 0; r < 8; r++)
                    ASSERT_OK(ds_quantize_row((enum ds_type)t, x + r * COLS,
                                              q + r * row_bytes(t, COLS), COLS,
                                              pass ? imat : NULL));
            }
            tr->to_float(q, yg, N);
            for (int ref = 0; ref < 2; ref++) {
                ASSERT_OK((ref ? ds_dequantize_row_ref : ds_dequantize_row)((enum ds_type)t, q,
                                                                          yd, N));
                for (int64_t i = 0; i < N; i++)
                    ASSERT_MSG(same_float(yg[i], yd[i]),
                               "%s (%s%s) element %lld: ggml %.9g, ours %.9g",
                               ds_type_name((enum ds_type)t), what, ref ? ", _ref" : "",
                               (long long)i, yg[i], yd[i]);
            }
        }
    }
}

/* sqrt(sum w e^2 / sum w x^2) over the matrix quantized in q. */
static double rel_err(int t, const float *x, const uint8_t *q, const float *w)
{
    double e2 = 0, x2 = 0;
    for (int r = 0; r < ROWS; r++) {
        double a, b;
        if (ds_quant_error((enum ds_type)t, x + (size_t)r * COLS, q + r * row_bytes(t, COLS),
                           COLS, w, &a, &b) != DS_OK)
            return INFINITY;
        e2 += a;
        x2 += b;
    }
    return sqrt(e2 / x2);
}

/* Our error no worse than llama.cpp's, with and without imatrix. */
TEST(error_vs_ggml)
{
    const size_t n = (size_t)ROWS * COLS;
    float *x = malloc(sizeof(float) * n), *imat = malloc(sizeof(float) * COLS);
    // F32 rows: room for any block type
    uint8_t *qd = malloc(row_bytes(DS_TYPE_F32, (int64_t)n));
    uint8_t *qg = malloc(row_bytes(DS_TYPE_F32, (int64_t)n));
    int fails = 0;
    ASSERT(x && imat && qd && qg);
    for (int c = 0; c < COLS; c++)
        imat[c] = (float)exp(1.5 * gauss());
    // rel. RMSE sqrt(sum w e^2 / sum w x^2); same bytes as ggml_quantize_chunk and
    // as from_float_ref (quantize_row_*_ref), without imatrix
    fprintf(stderr, "    %-7s %-15s %10s %10s %7s | %10s %10s %7s | %-5s %s\n", "type", "matrix",
            "ours", "llama.cpp", "ratio", "ours imat", "llama imat", "ratio", "chunk", "_ref");
    for (int m = 0; m < NMAT; m++) {
        make_matrix(m, x, ROWS);
        for (int k = 0; k < ntypes; k++) {
            const int t = types[k];
            const size_t rb = row_bytes(t, COLS);
            double e[2][2]; // [imatrix][ours, ggml]
            bool same = false, same_ref = true;
            if (gg.quantize_init)
                gg.quantize_init(t);
            for (int w = 0; w < 2; w++) {
                const float *im = w ? imat : NULL;
                for (int r = 0; r < ROWS; r++)
                    if (ds_quantize_row((enum ds_type)t, x + (size_t)r * COLS, qd + r * rb, COLS,
                                        im) != DS_OK)
                        fails++;
                gg.quantize_chunk(t, x, qg, 0, ROWS, COLS, im);
                e[w][0] = rel_err(t, x, qd, im);
                e[w][1] = rel_err(t, x, qg, im);
                if (!w) {
                    // and the reference quantizer (from_float_ref: quantize_row_*_ref)
                    const struct ggml_type_traits *tr = traits(t);
                    same = !memcmp(qd, qg, rb * ROWS);
                    if (tr && tr->from_float_ref) {
                        tr->from_float_ref(x, qg, (int64_t)n);
                        same_ref = !memcmp(qd, qg, rb * ROWS);
                    }
                }
            }
            fprintf(stderr, "    %-7s %-15s %10.6f %10.6f %7.4f | %10.6f %10.6f %7.4f | %-5s %s\n",
                    ds_type_name((enum ds_type)t), mat_names[m], e[0][0], e[0][1],
                    e[0][0] / e[0][1], e[1][0], e[1][1], e[1][0] / e[1][1], same ? "yes" : "no",
                    same_ref ? "yes" : "no");
            if (!(e[0][0] <= e[0][1] * (1 + 1e-9))) {
                fprintf(stderr, "FAIL: %s: error %g above llama.cpp's %g\n",
                        ds_type_name((enum ds_type)t), e[0][0], e[0][1]);
                fails++;
            }
            if (!(e[1][0] <= e[1][1] * 1.01)) {
                fprintf(stderr, "FAIL: %s: imatrix error %g above llama.cpp's %g + 1%%\n",
                        ds_type_name((enum ds_type)t), e[1][0], e[1][1]);
                fails++;
            }
            // the legacy types reproduce llama.cpp's bytes (and quantize_row_*_ref's,
            // except IQ4_NL, whose _ref is a cheaper variant llama-quantize does not use)
            if (legacy(t) && (!same || (!same_ref && t != DS_TYPE_IQ4_NL))) {
                fprintf(stderr, "FAIL: %s: bytes differ from llama.cpp's\n",
                        ds_type_name((enum ds_type)t));
                fails++;
            }
        }
    }
    free(x), free(imat), free(qd), free(qg);
    ASSERT_EQ_INT(fails, 0);
}

/* ggml_vec_dot_<t>_<vt>_generic of the CPU backend. */
static vec_dot_fn generic_dot(const char *t, const char *vt)
{
    char name[128];
    vec_dot_fn f;
    snprintf(name, sizeof(name), "ggml_vec_dot_%s_%s_generic", t, vt);
    *(void **)&f = dlsym(gg.cpu, name);
    return f;
}

/* quantize_row_<vt>_ref of the base library. */
static from_float_fn quantize_ref(const char *vt)
{
    char name[128];
    from_float_fn f;
    snprintf(name, sizeof(name), "quantize_row_%s_ref", vt);
    *(void **)&f = dlsym(gg.handle, name);
    return f;
}

/* Our dot products are ggml's generic ones, bit for bit. */
TEST(dot_vs_ggml_generic)
{
    enum { DROWS = 16 };
    static float x[DROWS * COLS], a[COLS];
    static uint8_t q[4 * DROWS * COLS], qa[2 * COLS], qg[2 * COLS];
    int fails = 0;
    if (!gg.cpu) {
        fprintf(stderr, "    skipped: libggml-cpu-x64.so did not load\n");
        return;
    }
    make_matrix(0, x, DROWS);
    for (int c = 0; c < COLS; c++)
        a[c] = gauss();
    fprintf(stderr, "    %-7s %-24s %s\n", "type", "ggml function", "rows equal");
    for (int k = 0; k < ntypes; k++) {
        const int t = types[k];
        const enum ds_type vt = ds_quant_vec_type((enum ds_type)t);
        const char *tn = ds_type_name((enum ds_type)t), *vn = ds_type_name(vt);
        const size_t rb = row_bytes(t, COLS);
        vec_dot_fn dot = generic_dot(tn, vn);
        from_float_fn quant = quantize_ref(vn);
        if (!dot || !quant) {
            fprintf(stderr, "    %-7s (no ggml_vec_dot_%s_%s_generic)\n", tn, tn, vn);
            continue;
        }
        // activations: ours must be ggml's bytes
        ASSERT_OK(ds_quantize_vec(vt, a, qa, COLS));
        quant(a, qg, COLS);
        ASSERT_MSG(!memcmp(qa, qg, row_bytes(vt, COLS)), "%s activations differ", vn);
        for (int r = 0; r < DROWS; r++) {
            uint8_t *row = q + r * rb;
            if (r < DROWS / 2 || !legacy(t)) {
                ASSERT_OK(ds_quantize_row((enum ds_type)t, x + r * COLS, row, COLS, NULL));
            } else { // random legacy blocks with finite scales
                for (size_t i = 0; i < rb; i++)
                    row[i] = (uint8_t)rng();
                for (size_t i = 0; i < rb; i += ds_type_block_bytes((enum ds_type)t)) {
                    row[i + 1] &= 0x3b;
                    row[i + 3] &= (t == DS_TYPE_Q4_1 || t == DS_TYPE_Q5_1) ? 0x3b : 0xff;
                }
            }
        }
        int equal = 0;
        for (int r = 0; r < DROWS; r++) {
            const uint8_t *row = q + r * rb;
            float sg, so = ds_quant_dot((enum ds_type)t, row, qa, COLS);
            float sr = ds_quant_dot_ref((enum ds_type)t, row, qa, COLS);
            dot(COLS, &sg, 0, row, 0, qg, 0, 1);
            equal += same_float(so, sg) && same_float(sr, sg);
        }
        char fname[64];
        snprintf(fname, sizeof(fname), "vec_dot_%s_%s", tn, vn);
        fprintf(stderr, "    %-7s %-24s %d/%d\n", tn, fname, equal, DROWS);
        if (equal != DROWS) {
            fprintf(stderr, "FAIL: %s: %d of %d dot products differ from ggml's\n", tn,
                    DROWS - equal, DROWS);
            fails++;
        }
    }
    ASSERT_EQ_INT(fails, 0);
}

/* Q8_1 activations are quantize_row_q8_1_ref's bytes on every kind of row:
 * realistic ones, scaled ones, zero blocks, ties. */
TEST(q8_1_vs_ggml)
{
    enum { N = 8 * COLS };
    static float x[N];
    static uint8_t qd[N / 32 * 36], qg[N / 32 * 36];
    from_float_fn quant = quantize_ref("q8_1");
    if (!quant) {
        fprintf(stderr, "    skipped: no quantize_row_q8_1_ref\n");
        return;
    }
    ASSERT_EQ_INT(gg.type_size(DS_TYPE_Q8_1), 36);
    for (int m = 0; m < NMAT; m++) {
        make_matrix(m, x, 8);
        memset(x + 64, 0, 32 * sizeof(float)); // a zero block: d = 0, s = 0
        for (int j = 0; j < 32; j++)           // d = 1: ties at +-k.5
            x[96 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f;
        ASSERT_OK(ds_quantize_vec(DS_TYPE_Q8_1, x, qd, N));
        quant(x, qg, N);
        for (int b = 0; b < N / 32; b++)
            ASSERT_MSG(!memcmp(qd + b * 36, qg + b * 36, 36), "%s: q8_1 block %d differs",
                       mat_names[m], b);
    }
}

int main(void)
{
    if (!load_ggml()) {
        printf("skipped: libggml-base.so not installed\n");
        return 0;
    }
    list_types();
    RUN(type_table);
    RUN(ggml_dequantizes_our_blocks);
    RUN(error_vs_ggml);
    RUN(dot_vs_ggml_generic);
    RUN(q8_1_vs_ggml);
    if (gg.quantize_free)
        gg.quantize_free();
    if (gg.cpu)
        dlclose(gg.cpu);
    dlclose(gg.handle);
    return test_report();
}
