/*
 * ctx - decode tokens/s against context length.
 *
 *   ctx MODEL THREADS f32|q8_0 N1 N2 ...   (increasing context lengths)
 *
 * One context of the largest length; the cache is filled by prefill (chunks
 * of 512 prompt ids) up to each length N, then 16 tokens are decoded one at a
 * time (greedy) and timed, and the cache is truncated back to N before going
 * on. Prints a markdown table row per length.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ds.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(ds_err e)
{
    if (e != DS_OK) {
        fprintf(stderr, "ctx: %s\n", ds_errmsg());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    enum { GEN = 16, CHUNK = 512 };
    struct ds_model *m;
    struct ds_ctx *c;
    struct ds_ctx_params p = {0};
    int32_t ids[CHUNK];
    float *l;
    long maxn;

    if (argc < 5) {
        fprintf(stderr, "usage: ctx MODEL THREADS f32|q8_0 N1 N2 ...\n");
        return 2;
    }
    ds_set_threads(atoi(argv[2]));
    p.cache_type = !strcmp(argv[3], "q8_0") ? DS_CACHE_Q8_0 : DS_CACHE_F32;
    maxn = atol(argv[argc - 1]);
    check(ds_model_load(argv[1], &m));
    check(ds_ctx_new_ex(m, maxn + GEN, &p, &c));
    l = malloc((size_t)ds_model_n_vocab(m) * sizeof(float));
    if (!l)
        return 1;
    printf("| context | cache | decode | prefill to here | KV cache |\n|---:|---|---:|---:|---:|\n");
    fflush(stdout);
    for (int a = 4; a < argc; a++) {
        long n = atol(argv[a]);
        double t0 = now_s(), tp;
        long from = ds_ctx_pos(c);
        while (ds_ctx_pos(c) < n) {
            long k = n - ds_ctx_pos(c) < CHUNK ? n - ds_ctx_pos(c) : CHUNK;
            for (long i = 0; i < k; i++)
                ids[i] = (int32_t)(2 + ((ds_ctx_pos(c) + i) * 37) % 380);
            check(ds_forward(c, ids, (size_t)k, l, false));
        }
        tp = now_s() - t0;
        t0 = now_s();
        for (int g = 0; g < GEN; g++) {
            int32_t best = 0;
            for (int64_t v = 1; v < ds_model_n_vocab(m); v++)
                if (l[v] > l[best])
                    best = (int32_t)v;
            check(ds_forward(c, &best, 1, l, false));
        }
        t0 = now_s() - t0;
        check(ds_ctx_truncate(c, n));
        printf("| %ld | %s | %.2f t/s | %.1f t/s | %.1f MB |\n", n, argv[3], GEN / t0,
               (double)(n - from) / tp, (double)ds_ctx_kv_bytes_per_token(c) * (double)n / 1e6);
        fflush(stdout);
    }
    ds_ctx_free(c);
    ds_model_free(m);
    free(l);
    return 0;
}
