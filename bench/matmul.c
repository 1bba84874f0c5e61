/* bench/matmul.c - one matrix product per weight type and SIMD level,
 * single-threaded: decode-shaped (T = 1 activation row, the default) or
 * prefill-shaped (T rows); the kernels alone, without the rest of the
 * forward pass. Best of REPS runs each (robust on a loaded machine); the
 * levels run back to back, rep by rep, each timed run after an untimed one
 * at the same level.
 *   build/bench/matmul [N K REPS [T [TYPE]]]
 * (default 1408 2048 50 1: V2-Lite's ffn_down; TYPE: that weight type only)
 * Prints per type and level: microseconds, GB/s of weight bytes, G weights/s
 * (G multiply-adds/s: weights/s times T). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ds.h"
#include "kernels_impl.h"
#include "quant_impl.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int64_t N = argc > 2 ? atoll(argv[1]) : 1408, K = argc > 2 ? atoll(argv[2]) : 2048;
    int reps = argc > 3 ? atoi(argv[3]) : 50;
    int64_t T = argc > 4 ? atoll(argv[4]) : 1;
    enum ds_type only = DS_TYPE_F32;
    const int filter = argc > 5;
    const enum ds_type types[] = {DS_TYPE_F32,  DS_TYPE_BF16,   DS_TYPE_F16,  DS_TYPE_F8_E4M3,
                                  DS_TYPE_Q8_0, DS_TYPE_Q4_0,   DS_TYPE_Q4_1, DS_TYPE_Q5_0,
                                  DS_TYPE_Q5_1, DS_TYPE_IQ4_NL, DS_TYPE_Q4_K, DS_TYPE_Q5_K,
                                  DS_TYPE_Q6_K};
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    float *w = malloc((size_t)(N * K) * sizeof(float));
    float *x = malloc((size_t)(T * K) * sizeof(float));
    float *y = malloc((size_t)(T * N) * sizeof(float));
    void *q = malloc((size_t)(N * K) * sizeof(float));
    float *scale = malloc((size_t)((N + 127) / 128 * ((K + 127) / 128)) * sizeof(float));
    int top = ds_simd_set_level(2);

    if (!w || !x || !y || !q || !scale || N <= 0 || K <= 0 || K % 256 || reps < 1 || T < 1 ||
        (filter && ds_type_from_name(argv[5], &only) != DS_OK)) {
        fprintf(stderr, "usage: matmul [N K REPS [T [TYPE]]] (K a multiple of 256)\n");
        return 2;
    }
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    srand(1);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (int64_t i = 0; i < T * K; i++)
        x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    printf("matmul %lld x %lld, %lld activation rows, one thread, best of %d\n", (long long)N,
           (long long)K, (long long)T, reps);
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        enum ds_type t = types[ti];
        size_t row = ds_kernel_row_bytes(t, K);
        const float *sc = NULL;
        double best[3] = {1e30, 1e30, 1e30};
        if (filter && t != only)
            continue;
        if (t == DS_TYPE_F8_E4M3) {
            ds_fp8_quantize(q, scale, w, N, K, 128);
            sc = scale;
        } else if (ds_quant_supported(t)) {
            for (int64_t r = 0; r < N; r++)
                ds_quantize_row(t, w + r * K, (char *)q + (size_t)r * row, K, NULL);
        } else {
            row = (size_t)K * ds_kernel_type_size(t);
            ds_convert_row(t, q, DS_TYPE_F32, w, (size_t)(N * K));
        }
        for (int r = 0; r < reps; r++)
            for (int l = top; l >= 0; l--) {
                double t0;
                ds_simd_set_level(l);
                /* once untimed: the same cache state for every level */
                ds_matmul_scaled(y, N, x, K, q, t, sc, 128, T, N, K);
                t0 = now();
                ds_matmul_scaled(y, N, x, K, q, t, sc, 128, T, N, K);
                t0 = now() - t0;
                if (t0 < best[l])
                    best[l] = t0;
            }
        for (int l = top; l >= 0; l--)
            printf("%-8s %-7s %9.1f us %7.2f GB/s %6.2f Gw/s %7.2f GMAC/s\n", ds_type_name(t),
                   names[l], best[l] * 1e6, (double)row * (double)N / best[l] / 1e9,
                   (double)(N * K) / best[l] / 1e9, (double)(N * K) * (double)T / best[l] / 1e9);
    }
    ds_simd_set_level(-1);
    free(w);
    free(x);
    free(y);
    free(q);
    free(scale);
    return 0;
}
