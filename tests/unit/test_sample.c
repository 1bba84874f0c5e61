/* test_sample.c - sampler chain: greedy, seeding, the cut of each stage, frequencies. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds_sample.h"
#include "test.h"

#define NDRAW 200000

static struct ds_sampler *mk(float temp, int32_t top_k, float top_p, float min_p, uint64_t seed,
                             int32_t n)
{
    struct ds_sampler_params p = {temp, top_k, top_p, min_p, seed};
    struct ds_sampler *s = NULL;

    if (ds_sampler_new(&p, n, &s) != DS_OK)
        return NULL;
    return s;
}

/* Draws `draws` tokens into counts[0..n). */
static void histogram(struct ds_sampler *s, const float *logits, int32_t n, int draws,
                      long *counts)
{
    memset(counts, 0, sizeof(*counts) * (size_t)n);
    for (int i = 0; i < draws; i++) {
        int32_t t = ds_sampler_sample(s, logits);
        if (t >= 0 && t < n)
            counts[t]++;
    }
}

/* Pearson chi-square of counts against probabilities prob[0..n). */
static double chi_square(const long *counts, const double *prob, int32_t n, int draws)
{
    double x2 = 0;

    for (int32_t i = 0; i < n; i++) {
        double e = prob[i] * draws;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    return x2;
}

/* Logits whose softmax is exactly prob (up to rounding). */
static void logits_of(const double *prob, float *logits, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        logits[i] = (float)log(prob[i]);
}

/* Tokens drawn (1) and never drawn (0) must be exactly `keep`. */
#define ASSERT_SUPPORT(counts, keep, n)                                                 \
    do {                                                                                \
        for (int32_t i_ = 0; i_ < (n); i_++)                                            \
            ASSERT_MSG(((counts)[i_] > 0) == (keep)[i_], "token %d drawn %ld times",     \
                       (int)i_, (counts)[i_]);                                          \
    } while (0)

TEST(argmax)
{
    const float a[] = {1, 3, 2, 3};
    const float b[] = {NAN, -1, NAN, 0};
    const float c[] = {-INFINITY, -INFINITY};

    ASSERT_EQ_INT(ds_argmax(a, 4), 1);
    ASSERT_EQ_INT(ds_argmax(b, 4), 3);
    ASSERT_EQ_INT(ds_argmax(c, 2), 0);
    ASSERT_EQ_INT(ds_argmax(a, 1), 0);
    ASSERT_EQ_INT(ds_argmax(a, 0), -1);
}

TEST(greedy)
{
    const float l[] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    struct ds_sampler *s = mk(0, 0, 1, 0, 1, 5);
    struct ds_sampler *neg = mk(-1, 3, 0.5f, 0.1f, 2, 5);

    ASSERT(s && neg);
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ_INT(ds_sampler_sample(s, l), 1); // lowest id among the tied maxima
        ASSERT_EQ_INT(ds_sampler_sample(neg, l), 1);
    }
    ds_sampler_free(s);
    ds_sampler_free(neg);
}

TEST(bad_params)
{
    struct ds_sampler_params p = {0.8f, 40, 0.95f, 0.05f, 1};
    struct ds_sampler *s = (struct ds_sampler *)&p;

    ASSERT_ERR(ds_sampler_new(&p, 0, &s), DS_ERR_ARG);
    ASSERT(s == NULL);
    ASSERT_ERR(ds_sampler_new(NULL, 10, &s), DS_ERR_ARG);
    p.top_p = NAN;
    ASSERT_ERR(ds_sampler_new(&p, 10, &s), DS_ERR_ARG);
    ds_sampler_free(NULL);
}

TEST(seeds)
{
    enum { V = 50, N = 200 };
    float l[V];
    int32_t a[N], b[N], c[N];
    struct ds_sampler *s1 = mk(1, 0, 1, 0, 42, V), *s2 = mk(1, 0, 1, 0, 42, V);
    struct ds_sampler *s3 = mk(1, 0, 1, 0, 43, V);
    int differ = 0;

    ASSERT(s1 && s2 && s3);
    for (int i = 0; i < V; i++)
        l[i] = (float)(i % 7) * 0.1f; // flat enough that draws vary
    for (int i = 0; i < N; i++) {
        a[i] = ds_sampler_sample(s1, l);
        b[i] = ds_sampler_sample(s2, l);
        c[i] = ds_sampler_sample(s3, l);
        ASSERT(a[i] >= 0 && a[i] < V);
    }
    ASSERT(memcmp(a, b, sizeof(a)) == 0);
    for (int i = 0; i < N; i++)
        differ += a[i] != c[i];
    ASSERT_MSG(differ > N / 2, "seeds 42 and 43 differ in only %d of %d draws", differ, N);
    ds_sampler_free(s1);
    ds_sampler_free(s2);
    ds_sampler_free(s3);
}

TEST(top_k_1_is_greedy)
{
    enum { V = 1000 };
    float l[V];
    struct ds_sampler *s = mk(1.5f, 1, 1, 0, 7, V);
    uint64_t x = 12345;

    ASSERT(s);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < V; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            l[i] = (float)((x >> 40) % 100) * 0.1f; // many ties
        }
        ASSERT_EQ_INT(ds_sampler_sample(s, l), ds_argmax(l, V));
    }
    ds_sampler_free(s);
}

/* Frequencies over NDRAW draws against softmax(l / temp); 7 degrees of
 * freedom, 24.32 is the 0.999 quantile of chi-square. */
static void check_frequencies(float temp, uint64_t seed)
{
    const float l[8] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.5f, -0.5f, 0.25f};
    double prob[8], z = 0;
    long counts[8];
    struct ds_sampler *s = mk(temp, 0, 1, 0, seed, 8);

    ASSERT(s);
    for (int i = 0; i < 8; i++)
        z += prob[i] = exp(l[i] / temp);
    for (int i = 0; i < 8; i++)
        prob[i] /= z;
    histogram(s, l, 8, NDRAW, counts);
    double x2 = chi_square(counts, prob, 8, NDRAW);
    ASSERT_MSG(x2 < 24.32, "temp %g: chi-square %.2f", temp, x2);
    ds_sampler_free(s);
}

TEST(frequencies_temp_1)
{
    check_frequencies(1.0f, 1);
}

TEST(frequencies_temp_05)
{
    check_frequencies(0.5f, 2);
}

TEST(top_k_cut)
{
    const float l[6] = {0.0f, 3.0f, 1.0f, 2.0f, 2.5f, -1.0f};
    const int keep[6] = {0, 1, 0, 1, 1, 0};
    const float tie[5] = {1, 2, 2, 2, 0};
    const int keep_tie[5] = {0, 1, 1, 0, 0};
    long counts[6];
    const int keep_all[6] = {1, 1, 1, 1, 1, 1};
    struct ds_sampler *s = mk(5.0f, 3, 1, 0, 3, 6), *t = mk(1.0f, 2, 1, 0, 4, 5);
    struct ds_sampler *all = mk(5.0f, 100, 1, 0, 5, 6);

    ASSERT(s && t && all);
    histogram(s, l, 6, 20000, counts);
    ASSERT_SUPPORT(counts, keep, 6);
    histogram(all, l, 6, 20000, counts); // k past the vocabulary: no cut
    ASSERT_SUPPORT(counts, keep_all, 6);
    ds_sampler_free(all);
    histogram(t, tie, 5, 20000, counts); // ties go to the lower ids
    ASSERT_SUPPORT(counts, keep_tie, 5);
    ds_sampler_free(s);
    ds_sampler_free(t);
}

TEST(top_p_cut)
{
    const double prob[4] = {0.3, 0.15, 0.5, 0.05}; // sorted: 2, 0, 1, 3
    float l[4];
    long counts[4];
    const struct {
        float p;
        int keep[4];
    } cases[] = {
        {0.25f, {0, 0, 1, 0}}, {0.75f, {1, 0, 1, 0}}, {0.85f, {1, 1, 1, 0}},
        {0.99f, {1, 1, 1, 1}}, {0.0f, {0, 0, 1, 0}},
    };

    logits_of(prob, l, 4);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct ds_sampler *s = mk(1, 0, cases[c].p, 0, 10 + c, 4);
        ASSERT(s);
        histogram(s, l, 4, 20000, counts);
        ds_sampler_free(s);
        ASSERT_SUPPORT(counts, cases[c].keep, 4);
    }
    // the kept tokens are drawn renormalised: 0.3/0.8 and 0.5/0.8
    struct ds_sampler *s = mk(1, 0, 0.75f, 0, 99, 4);
    ASSERT(s);
    histogram(s, l, 4, NDRAW, counts);
    ds_sampler_free(s);
    double f0 = (double)counts[0] / NDRAW;
    ASSERT_MSG(fabs(f0 - 0.375) < 0.005, "token 0 frequency %.4f, want 0.375", f0);
}

TEST(top_p_at_temp_1)
{
    // top-p looks at the temperature-1 softmax even when temp is high
    const double prob[4] = {0.5, 0.3, 0.15, 0.05};
    const int keep[4] = {1, 1, 0, 0};
    float l[4];
    long counts[4];
    struct ds_sampler *s = mk(10.0f, 0, 0.75f, 0, 5, 4);

    ASSERT(s);
    logits_of(prob, l, 4);
    histogram(s, l, 4, 20000, counts);
    ASSERT_SUPPORT(counts, keep, 4);
    ds_sampler_free(s);
}

TEST(top_p_after_top_k)
{
    // top-k 2 leaves 0.4 and 0.3, renormalised to 4/7 and 3/7: top-p 0.5
    // then keeps token 0 alone; top-p 0.5 alone keeps tokens 0 and 1
    const double prob[4] = {0.4, 0.3, 0.2, 0.1};
    const int keep_chain[4] = {1, 0, 0, 0}, keep_p[4] = {1, 1, 0, 0};
    float l[4];
    long counts[4];
    struct ds_sampler *s = mk(1, 2, 0.5f, 0, 6, 4), *t = mk(1, 0, 0.5f, 0, 6, 4);

    ASSERT(s && t);
    logits_of(prob, l, 4);
    histogram(s, l, 4, 20000, counts);
    ASSERT_SUPPORT(counts, keep_chain, 4);
    histogram(t, l, 4, 20000, counts);
    ASSERT_SUPPORT(counts, keep_p, 4);
    ds_sampler_free(s);
    ds_sampler_free(t);
}

TEST(min_p_cut)
{
    const double prob[5] = {0.15, 0.5, 0.05, 0.3, 0.0}; // last: exp(-inf)
    float l[5];
    long counts[5];
    const struct {
        float min_p;
        int keep[5];
    } cases[] = {
        {0.2f, {1, 1, 0, 1, 0}}, {0.5f, {0, 1, 0, 1, 0}}, {0.95f, {0, 1, 0, 0, 0}},
        {0.05f, {1, 1, 1, 1, 0}}, {1.5f, {0, 1, 0, 0, 0}}, {INFINITY, {0, 1, 0, 0, 0}},
    };

    logits_of(prob, l, 5);
    l[4] = -1e30f; // finite but far below everything
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct ds_sampler *s = mk(1, 0, 1, cases[c].min_p, 20 + c, 5);
        ASSERT(s);
        histogram(s, l, 5, 20000, counts);
        ds_sampler_free(s);
        ASSERT_SUPPORT(counts, cases[c].keep, 5);
    }
}

static int cmp_desc(const void *pa, const void *pb)
{
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a < b) - (a > b);
}

TEST(large_vocab)
{
    // 129280 random logits: top-p keeps a few thousand tokens, more than one
    // round of the sampler's growing partial sort; every draw must fall in
    // the set computed here by a full sort
    enum { V = 129280 };
    float *l = malloc(sizeof(float) * V), *sorted = malloc(sizeof(float) * V);
    uint64_t x = 777;
    double z = 0, cum = 0;
    const float P = 0.9f; // the sampler compares with the float p
    float cut_p = 0, cut_k;
    int32_t kept = 0;

    ASSERT(l && sorted);
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        l[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 12.0);
    }
    memcpy(sorted, l, sizeof(float) * V);
    qsort(sorted, V, sizeof(float), cmp_desc);
    for (int i = 0; i < V; i++)
        z += exp((double)sorted[i] - sorted[0]);
    for (int i = 0; i < V; i++) {
        cum += exp((double)sorted[i] - sorted[0]) / z;
        if (cum >= P) {
            cut_p = sorted[i];
            kept = i + 1;
            break;
        }
    }
    ASSERT_MSG(kept > 512 && kept < V - 1000, "kept %d", (int)kept);
    ASSERT(sorted[kept] < cut_p); // no tie straddles the cut
    cut_k = sorted[39];

    struct ds_sampler *sp = mk(1, 0, P, 0, 8, V), *sk = mk(1, 40, 1, 0, 9, V);
    ASSERT(sp && sk);
    int below = 0;
    for (int i = 0; i < 300; i++) {
        int32_t t = ds_sampler_sample(sp, l);
        ASSERT(t >= 0 && t < V && l[t] >= cut_p);
        below += l[t] < sorted[kept / 2];
        t = ds_sampler_sample(sk, l);
        ASSERT(t >= 0 && t < V && l[t] >= cut_k);
    }
    ASSERT(below > 0); // the tail of the kept set is reached too
    ds_sampler_free(sp);
    ds_sampler_free(sk);
    free(l);
    free(sorted);
}

TEST(non_finite)
{
    const float l[6] = {NAN, INFINITY, -INFINITY, 1.0f, 1.5f, NAN};
    const int keep[6] = {0, 0, 0, 1, 1, 0};
    const float none[4] = {NAN, INFINITY, -INFINITY, -INFINITY};
    long counts[6];
    struct ds_sampler *g = mk(0, 0, 1, 0, 1, 6), *s = mk(1, 0, 1, 0, 2, 6);
    struct ds_sampler *g4 = mk(0, 0, 1, 0, 1, 4), *s4 = mk(0.7f, 3, 0.9f, 0.1f, 2, 4);

    ASSERT(g && s && g4 && s4);
    ASSERT_EQ_INT(ds_sampler_sample(g, l), 4);
    histogram(s, l, 6, 20000, counts);
    ASSERT_SUPPORT(counts, keep, 6);
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ_INT(ds_sampler_sample(g4, none), 0);
        ASSERT_EQ_INT(ds_sampler_sample(s4, none), 0);
    }
    ds_sampler_free(g);
    ds_sampler_free(s);
    ds_sampler_free(g4);
    ds_sampler_free(s4);
}

int main(void)
{
    RUN(argmax);
    RUN(greedy);
    RUN(bad_params);
    RUN(seeds);
    RUN(top_k_1_is_greedy);
    RUN(frequencies_temp_1);
    RUN(frequencies_temp_05);
    RUN(top_k_cut);
    RUN(top_p_cut);
    RUN(top_p_at_temp_1);
    RUN(top_p_after_top_k);
    RUN(min_p_cut);
    RUN(large_vocab);
    RUN(non_finite);
    return test_report();
}
