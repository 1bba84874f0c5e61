/*
 * ds_sample.h - next-token sampling, as llama.cpp's default chain:
 * top-k, then top-p (nucleus), then min-p, then temperature, then a draw from
 * the softmax with a seeded PRNG. temp <= 0 is greedy (argmax, lowest id on
 * ties). The same seed and logits give the same token on every machine
 * (a fixed PRNG: splitmix64/xoshiro256**, no libc rand).
 */
#ifndef DS_SAMPLE_H
#define DS_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds_sampler_params {
    float temp;      /* 0: greedy; default 0.8 in ds-run */
    int32_t top_k;   /* <= 0: off */
    float top_p;     /* >= 1: off */
    float min_p;     /* <= 0: off */
    uint64_t seed;
};

struct ds_sampler;

/* Copies *p. DS_ERR_ARG for n_vocab <= 0 or a NaN parameter. Free with
 * ds_sampler_free(). */
ds_err ds_sampler_new(const struct ds_sampler_params *p, int32_t n_vocab, struct ds_sampler **out);
void ds_sampler_free(struct ds_sampler *s);

/* Picks a token from logits[0..n_vocab). Non-finite logits count as -inf; when
 * all are, the result is 0. A call that draws (temp > 0 and some finite logit)
 * advances the sampler's PRNG by one number. */
int32_t ds_sampler_sample(struct ds_sampler *s, const float *logits);

/* Index of the largest value (lowest index on ties; NaN never wins unless all
 * are NaN, then 0); -1 when n is 0. */
int32_t ds_argmax(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
