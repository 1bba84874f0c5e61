/*
 * prune_impl.h - the forward pass's side of the calibration collector of
 * ds_prune.h (internal to libds; prune_calib.c implements it, forward.c calls
 * it, only when a collector is set on the context, outside parallel regions).
 */
#ifndef DS_PRUNE_IMPL_H
#define DS_PRUNE_IMPL_H

#include <stdint.h>

#include "ds_prune.h"

/* The residual stream h (T, d) entering layer l. */
void ds_calib_layer_in(struct ds_calib *cal, int64_t l, const float *h, int64_t T);
/* The residual stream h (T, d) leaving layer l (after its FFN). */
void ds_calib_layer_out(struct ds_calib *cal, int64_t l, const float *h, int64_t T);
/* The routing of T tokens in MoE layer l: k expert ids and weights per token. */
void ds_calib_route(struct ds_calib *cal, int64_t l, const int32_t *sel, const float *w,
                    int64_t T);

/* Marks in mask (1 = prune) the k lowest of s (n), ties to the lower index;
 * tmp (n floats) is scratch. Average O(n) (quickselect); the _ref twin
 * selects one by one. */
void ds_prune_lowest_k(const float *s, int64_t n, int64_t k, uint8_t *mask, float *tmp);
void ds_prune_lowest_k_ref(const float *s, int64_t n, int64_t k, uint8_t *mask);

#endif
