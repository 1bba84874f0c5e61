/*
 * sample.c - next-token sampling: top-k, top-p, min-p, temperature, then one
 * draw from the softmax, with llama.cpp's semantics (see ds_sample.h).
 *
 * Candidates are (logit, id) pairs ordered by logit descending, then id
 * ascending: a total order, so the kept sets are exact and the same on every
 * machine. Nothing is sorted: top-k keeps a heap of the k best, top-p is a
 * quickselect on probability mass (expected O(V)); min-p and the draw take
 * the candidates in any order.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ds_sample.h"
#include "error_impl.h"
#include "ds_banned.h"

struct cand {
    float logit;
    int32_t id;
    double w; // scratch: unnormalised probability
};

struct ds_sampler {
    struct ds_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4]; // xoshiro256** state
    struct cand *c;  // n_vocab work slots
};

// ---- PRNG: splitmix64 seeds xoshiro256** --------------------------------------

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

// Uniform in [0, 1) with 53 random bits.
static double uniform01(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

// ---- ordering and selection ---------------------------------------------------

// a before b: larger logit first, lower id on ties.
static bool before(const struct cand *a, const struct cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi] (inclusive, lo < hi) around a median-of-three pivot and
 * returns the pivot's final index st: c[lo..st) come before it, c(st..hi] after. */
static size_t partition(struct cand *c, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2, st = lo;

    // the median of c[lo], c[mid], c[hi] goes to c[hi]
    if (before(&c[mid], &c[lo]))
        swap(&c[mid], &c[lo]);
    if (before(&c[hi], &c[lo]))
        swap(&c[hi], &c[lo]);
    if (before(&c[mid], &c[hi]))
        swap(&c[mid], &c[hi]);
    for (size_t i = lo; i < hi; i++)
        if (before(&c[i], &c[hi]))
            swap(&c[i], &c[st++]);
    swap(&c[st], &c[hi]);
    return st;
}

/* Restores the heap below i in h[0..k): a heap whose root h[0] is the last
 * candidate in the order, so the root is the first one to drop. */
static void sift_down(struct cand *h, size_t k, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, worst = i;

        if (l < k && before(&h[worst], &h[l]))
            worst = l;
        if (r < k && before(&h[worst], &h[r]))
            worst = r;
        if (worst == i)
            return;
        swap(&h[i], &h[worst]);
        i = worst;
    }
}

/* Top-k: moves the k first candidates to c[0..k), in no particular order,
 * 0 < k < n. A heap of the k best so far: one comparison with its root for
 * most candidates, O(n log k) at worst. */
static void select_head(struct cand *c, size_t n, size_t k)
{
    assert(k > 0 && k < n);
    for (size_t i = k / 2; i-- > 0;)
        sift_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (before(&c[i], &c[0])) {
            swap(&c[i], &c[0]);
            sift_down(c, k, 0);
        }
    }
}

// ---- the chain ----------------------------------------------------------------

static float max_logit(const struct cand *c, size_t n)
{
    float m = -INFINITY;

    for (size_t i = 0; i < n; i++)
        if (c[i].logit > m)
            m = c[i].logit;
    return m;
}

/* Top-p on the softmax (temperature 1) of c[0..n): keeps the smallest head of
 * the order whose mass reaches p, at least one candidate, and moves it to
 * c[0..k) (unsorted); returns k. A quickselect on mass instead of a sort:
 * expected O(n) however many candidates the head holds. */
static size_t top_p(struct cand *c, size_t n, double p)
{
    double lmax = max_logit(c, n), z = 0, target, acc = 0; // acc: mass of c[0..lo)
    size_t lo = 0, hi = n; // the answer k lies in (lo, hi]

    for (size_t i = 0; i < n; i++)
        z += c[i].w = exp((double)c[i].logit - lmax);
    target = p * z;
    while (lo < hi) {
        size_t st = hi - lo > 1 ? partition(c, lo, hi - 1) : lo;
        double left = 0;

        for (size_t i = lo; i < st; i++)
            left += c[i].w;
        if (st > lo && acc + left >= target) {
            hi = st;
        } else if (acc + left + c[st].w >= target) {
            return st + 1;
        } else {
            acc += left + c[st].w;
            lo = st + 1;
        }
    }
    return n; // rounding left the sum short of p: keep all
}

/* Min-p: drops the candidates whose probability is below min_p times the
 * largest one, that is logit < max + log(min_p). The largest always stays
 * (min_p >= 1 keeps it and its ties alone). */
static size_t min_p(struct cand *c, size_t n, double mp)
{
    double lmax = max_logit(c, n), cut = fmin(log(mp), 0.0);
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        if ((double)c[i].logit - lmax >= cut)
            c[k++] = c[i];
    assert(k >= 1); // the maximum always stays
    return k;
}

// One draw from softmax(c[0..n).logit / temp).
static int32_t draw(struct cand *c, size_t n, double temp, uint64_t rng[4])
{
    double lmax = max_logit(c, n), z = 0, u, cum = 0;
    size_t last = 0;

    for (size_t i = 0; i < n; i++)
        z += c[i].w = exp(((double)c[i].logit - lmax) / temp);
    u = uniform01(rng) * z;
    for (size_t i = 0; i < n; i++) {
        if (c[i].w > 0)
            last = i;
        cum += c[i].w;
        if (u < cum)
            return c[i].id;
    }
    return c[last].id; // u landed past the rounded sum
}

ds_err ds_sampler_new(const struct ds_sampler_params *p, int32_t n_vocab, struct ds_sampler **out)
{
    struct ds_sampler *s;
    uint64_t x;

    DS_RETURN_IF(!out, DS_ERR_ARG, "no output pointer");
    *out = NULL;
    DS_RETURN_IF(!p, DS_ERR_ARG, "no sampler parameters");
    DS_RETURN_IF(n_vocab <= 0, DS_ERR_ARG, "vocabulary size %d is not positive", (int)n_vocab);
    DS_RETURN_IF(isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p), DS_ERR_ARG,
                 "sampler parameter is NaN");
    s = ds_calloc(1, sizeof(*s));
    if (!s)
        return DS_ERR_NOMEM;
    s->c = ds_calloc((size_t)n_vocab, sizeof(*s->c));
    if (!s->c) {
        free(s);
        return DS_ERR_NOMEM;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return DS_OK;
}

void ds_sampler_free(struct ds_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

int32_t ds_argmax(const float *x, size_t n)
{
    size_t best = 0;

    if (n == 0)
        return -1;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return (int32_t)best;
}

int32_t ds_sampler_sample(struct ds_sampler *s, const float *logits)
{
    const struct ds_sampler_params *p = &s->p;
    size_t nv = (size_t)s->n_vocab, n = 0;
    float best = -INFINITY;
    int32_t best_id = 0;

    // Finite logits become candidates; the others count as -inf, which has
    // no probability mass, so they are left out.
    for (size_t i = 0; i < nv; i++) {
        float l = logits[i];

        if (!isfinite(l))
            continue;
        if (l > best) {
            best = l;
            best_id = (int32_t)i;
        }
        s->c[n].logit = l;
        s->c[n].id = (int32_t)i;
        n++;
    }
    if (n == 0 || !(p->temp > 0))
        return best_id;

    if (p->top_k > 0 && (size_t)p->top_k < n) {
        select_head(s->c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }
    if (p->top_p < 1)
        n = top_p(s->c, n, p->top_p);
    if (p->min_p > 0)
        n = min_p(s->c, n, p->min_p);
    return draw(s->c, n, p->temp, s->rng);
}
