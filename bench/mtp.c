/*
 * mtp - MTP speculative decoding: tokens/s against plain greedy decoding.
 *
 *   mtp MODEL [N_TOKENS [THREADS]]
 *
 * A random model's MTP layer almost never guesses right, so beside the real
 * drafts (argmax of the draft logits, as ds-run --mtp) this also runs
 * "oracle" drafts: the draft logits are computed as usual (same cost), but the
 * token verified is the right one (known from the plain run) for a chosen
 * fraction of the steps and a wrong one otherwise. That gives the speedup at a
 * given acceptance rate on this model's shapes and this machine. Every run is
 * checked to produce the plain run's tokens.
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

static int32_t argmax(const float *v, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return (int32_t)b;
}

static void check(ds_err e)
{
    if (e != DS_OK) {
        fprintf(stderr, "mtp: %s\n", ds_errmsg());
        exit(1);
    }
}

enum { NP = 16 };

/* Speculative decoding of n tokens after the prompt; oracle < 0: real drafts,
 * else the fraction of steps whose draft is the right token. Returns seconds;
 * *acc gets the acceptance rate. */
static double speculate(struct ds_model *m, const int32_t *prompt, const int32_t *g, int n,
                        double oracle, double *acc)
{
    struct ds_ctx *c;
    int64_t V = ds_model_n_vocab(m);
    float *l = malloc(3 * (size_t)V * sizeof(float));
    int32_t *out = malloc((size_t)n * sizeof(int32_t));
    int k = 0, drafted = 0, accepted = 0;
    double credit = 0, t0;
    if (!l || !out)
        exit(1);
    check(ds_ctx_new(m, NP + n + 2, &c));
    check(ds_ctx_enable_mtp(c));
    t0 = now_s();
    check(ds_forward(c, prompt, NP, l, false));
    int32_t next = argmax(l, V);
    while (k < n) {
        out[k++] = next;
        if (k == n)
            break;
        int32_t pair[2] = {next, 0};
        check(ds_ctx_draft(c, next, l + 2 * V));
        pair[1] = argmax(l + 2 * V, V);
        if (oracle >= 0) {
            credit += oracle;
            pair[1] = credit >= 1 ? g[k] : (g[k] + 1) % (int32_t)V;
            if (credit >= 1)
                credit -= 1;
        }
        check(ds_forward(c, pair, 2, l, true));
        drafted++;
        int32_t t = argmax(l, V);
        if (t != pair[1]) {
            check(ds_ctx_truncate(c, ds_ctx_pos(c) - 1));
            next = t;
            continue;
        }
        accepted++;
        out[k++] = t;
        next = argmax(l + V, V);
    }
    t0 = now_s() - t0;
    if (memcmp(out, g, (size_t)n * sizeof(int32_t))) {
        fprintf(stderr, "mtp: speculative decoding changed the output\n");
        exit(1);
    }
    *acc = drafted ? (double)accepted / drafted : 0;
    ds_ctx_free(c);
    free(l);
    free(out);
    return t0;
}

int main(int argc, char **argv)
{
    struct ds_model *m;
    struct ds_ctx *c;
    int n = argc > 2 ? atoi(argv[2]) : 32;
    int32_t prompt[NP], *g;
    int64_t V;
    float *l;
    double t_plain, t, acc;
    const double oracles[] = {-1, 0, 0.5, 0.8, 1.0};

    if (argc < 2 || n < 2) {
        fprintf(stderr, "usage: mtp MODEL [N_TOKENS [THREADS]]\n");
        return 2;
    }
    ds_set_threads(argc > 3 ? atoi(argv[3]) : 0);
    check(ds_model_load(argv[1], &m));
    V = ds_model_n_vocab(m);
    for (int i = 0; i < NP; i++)
        prompt[i] = 2 + (i * 37) % 380;
    g = malloc((size_t)n * sizeof(int32_t));
    l = malloc((size_t)V * sizeof(float));
    if (!g || !l)
        return 1;
    check(ds_ctx_new(m, NP + n + 2, &c));
    t_plain = now_s();
    check(ds_forward(c, prompt, NP, l, false));
    for (int k = 0; k < n; k++) {
        g[k] = argmax(l, V);
        if (k + 1 < n)
            check(ds_forward(c, &g[k], 1, l, false));
    }
    t_plain = now_s() - t_plain;
    ds_ctx_free(c);
    printf("| drafts | acceptance | time (prompt %d + %d tokens) | speedup |\n", NP, n);
    printf("|---|---:|---:|---:|\n");
    printf("| none (plain decoding) | - | %.3f s | 1.00 |\n", t_plain);
    for (size_t i = 0; i < sizeof(oracles) / sizeof(oracles[0]); i++) {
        t = speculate(m, prompt, g, n, oracles[i], &acc);
        if (oracles[i] < 0)
            printf("| MTP layer (ds-run --mtp) | %.2f | %.3f s | %.2f |\n", acc, t, t_plain / t);
        else
            printf("| oracle %.0f%% | %.2f | %.3f s | %.2f |\n", 100 * oracles[i], acc, t,
                   t_plain / t);
    }
    free(g);
    free(l);
    ds_model_free(m);
    return 0;
}
