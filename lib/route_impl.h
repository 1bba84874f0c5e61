/*
 * route_impl.h - an observation and override hook on the MoE router of the
 * forward pass (internal to libds, not exported from the shared library; for
 * tests and bench programs: which experts a model picks at every position
 * and layer, and a run forced onto another run's expert choice, as
 * bench/route.c and tests/unit/test_route.c use it).
 */
#ifndef DS_ROUTE_IMPL_H
#define DS_ROUTE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

struct ds_ctx;

/* Called by the forward pass after the router of MoE layer `layer` (the MTP
 * layer is layer n_layers) chose the experts of T rows at positions
 * p0 .. p0+T-1: s (T, E) are the router scores (sigmoid or softmax; the
 * selection bias is not in them), sel (T, k) the expert ids, largest
 * selection score first. The hook may rewrite sel with other distinct ids in
 * [0, E) and then returns true: the routing weights are recomputed from s for
 * the new ids as the router computes them (normalised, scaled). Called
 * outside parallel regions. */
typedef bool ds_route_hook(void *arg, int64_t layer, int64_t p0, int64_t T, const float *s,
                           int32_t *sel);

/* Sets (fn NULL: removes) the routing hook of a context; arg is passed on. */
void ds_ctx_set_route_hook(struct ds_ctx *c, ds_route_hook *fn, void *arg);

/* The expert ids of positions 0 .. n-1 in layers 0 .. n_layers-1: sel
 * (n_layers, n, k), caller-allocated. */
struct ds_route_rec {
    int64_t n_layers, n, k;
    int32_t *sel;         /* recorded here when force is NULL */
    const int32_t *force; /* else imposed: the choice of another run, same shape */
};

/* A ds_route_hook over a struct ds_route_rec (arg): records each layer's
 * choice, or replaces it with rec->force. Positions past n and the MTP layer
 * are left alone. */
bool ds_route_rec_hook(void *rec, int64_t layer, int64_t p0, int64_t T, const float *s,
                       int32_t *sel);

#endif
