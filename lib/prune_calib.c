/*
 * prune_calib.c - router and block-influence statistics over calibration
 * text (ds_prune.h), collected through the hooks of prune_impl.h.
 *
 * Ownership: struct ds_calib owns its arrays and borrows the model.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds_prune.h"
#include "error_impl.h"
#include "model_impl.h"
#include "prune_impl.h"

struct ds_calib {
    const struct ds_model *m;
    int64_t n_layers, E, k, d;
    int64_t tokens;
    int64_t *selected;  /* (n_layers, E) */
    double *wsum;       /* (n_layers, E) */
    double *infl;       /* (n_layers) sum of 1 - cos */
    int64_t *infl_n;    /* (n_layers) tokens */
    float *hin;         /* (ub, d) input of the current layer */
    int64_t cap_rows;
};

ds_err ds_calib_new(const struct ds_model *m, struct ds_calib **out)
{
    struct ds_calib *c;
    DS_RETURN_IF(!m || !out, DS_ERR_ARG, "model or output missing");
    c = ds_calloc(1, sizeof(*c));
    if (!c)
        return DS_ERR_NOMEM;
    c->m = m;
    c->n_layers = m->hp.n_layers;
    c->E = m->hp.n_routed_experts;
    c->k = m->hp.n_experts_per_tok;
    c->d = m->hp.hidden_size;
    c->selected = ds_calloc((size_t)(c->n_layers * (c->E ? c->E : 1)), sizeof(int64_t));
    c->wsum = ds_calloc((size_t)(c->n_layers * (c->E ? c->E : 1)), sizeof(double));
    c->infl = ds_calloc((size_t)c->n_layers + 1, sizeof(double));
    c->infl_n = ds_calloc((size_t)c->n_layers + 1, sizeof(int64_t));
    if (!c->selected || !c->wsum || !c->infl || !c->infl_n) {
        ds_calib_free(c);
        return DS_ERR_NOMEM;
    }
    *out = c;
    return DS_OK;
}

void ds_calib_free(struct ds_calib *c)
{
    if (!c)
        return;
    free(c->selected);
    free(c->wsum);
    free(c->infl);
    free(c->infl_n);
    free(c->hin);
    free(c);
}

void ds_calib_layer_in(struct ds_calib *c, int64_t l, const float *h, int64_t T)
{
    if (T > c->cap_rows) {
        float *p = realloc(c->hin, (size_t)(T * c->d) * sizeof(float));
        if (!p)
            return; // statistics of this chunk are lost, the forward pass goes on
        c->hin = p;
        c->cap_rows = T;
    }
    memcpy(c->hin, h, (size_t)(T * c->d) * sizeof(float));
    if (l == 0)
        c->tokens += T;
}

void ds_calib_layer_out(struct ds_calib *c, int64_t l, const float *h, int64_t T)
{
    if (l < 0 || l >= c->n_layers || T > c->cap_rows)
        return;
    for (int64_t t = 0; t < T; t++) {
        const float *a = c->hin + t * c->d, *b = h + t * c->d;
        double ab = 0, aa = 0, bb = 0;
        for (int64_t j = 0; j < c->d; j++) {
            ab += (double)a[j] * b[j];
            aa += (double)a[j] * a[j];
            bb += (double)b[j] * b[j];
        }
        c->infl[l] += aa > 0 && bb > 0 ? 1.0 - ab / sqrt(aa * bb) : 0.0;
        c->infl_n[l]++;
    }
}

void ds_calib_route(struct ds_calib *c, int64_t l, const int32_t *sel, const float *w, int64_t T)
{
    if (l < 0 || l >= c->n_layers)
        return;
    for (int64_t i = 0; i < T * c->k; i++)
        if (sel[i] >= 0 && sel[i] < c->E) {
            c->selected[l * c->E + sel[i]]++;
            c->wsum[l * c->E + sel[i]] += w[i];
        }
}

int64_t ds_calib_tokens(const struct ds_calib *c)
{
    return c->tokens;
}

bool ds_calib_expert(const struct ds_calib *c, int64_t l, int64_t e, int64_t *selected,
                     double *weight_sum)
{
    if (l < 0 || l >= c->n_layers || e < 0 || e >= c->E || !c->m->layers[l].moe)
        return false;
    *selected = c->selected[l * c->E + e];
    *weight_sum = c->wsum[l * c->E + e];
    return true;
}

double ds_calib_block_influence(const struct ds_calib *c, int64_t l)
{
    if (l < 0 || l >= c->n_layers || !c->infl_n[l])
        return NAN;
    return c->infl[l] / (double)c->infl_n[l];
}

ds_err ds_calib_run(struct ds_ctx *ctx, const int32_t *ids, size_t n, int64_t chunk,
                    int64_t max_chunks, int64_t *n_chunks)
{
    DS_RETURN_IF(!ctx || !ids || n == 0, DS_ERR_ARG, "no calibration tokens");
    DS_RETURN_IF(chunk < 1, DS_ERR_ARG, "chunk of %lld tokens", (long long)chunk);
    *n_chunks = 0;
    for (size_t at = 0; at + (size_t)chunk <= n || (at == 0 && n > 0); at += (size_t)chunk) {
        size_t len = n - at < (size_t)chunk ? n - at : (size_t)chunk;
        if (max_chunks > 0 && *n_chunks == max_chunks)
            break;
        ds_ctx_reset(ctx);
        DS_TRY(ds_forward(ctx, ids + at, len, NULL, false));
        ++*n_chunks;
    }
    return DS_OK;
}
