/*
 * prune.c - pruning a deepseek2 GGUF, streaming (see ds_prune.h).
 *
 * A plan is made from the input header (and, for experts and heads, from the
 * router and attn_output tensors, read by position before anything is
 * written): which layers, experts and heads stay, and for each output tensor
 * its input, its new name, the slices it keeps and the sparsity it gets.
 * Then the output header is written and the input's tensors are read in data
 * order, transformed one at a time and written: memory stays bounded by a few
 * copies of the largest tensor.
 *
 * Ownership: struct plan owns the output header, the keep lists and the
 * tensor plans; the reader and writer are owned by ds_prune().
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_prune.h"
#include "ds_quant.h"
#include "error_impl.h"
#include "rules_impl.h"
#include "kernels_impl.h"
#include "prune_impl.h"
#include "ds_banned.h"

#define MAX_RULES 64
#define KEY(s) "deepseek2." s

/* ---- sparsity specs and rules --------------------------------------------------- */

ds_err ds_sparsity_parse(const char *s, struct ds_sparsity *out)
{
    char *end;
    memset(out, 0, sizeof(*out));
    DS_RETURN_IF(!s || !*s, DS_ERR_ARG, "empty sparsity");
    if (!strcmp(s, "none"))
        return DS_OK;
    if (strchr(s, ':')) {
        long n = strtol(s, &end, 10), m;
        DS_RETURN_IF(end == s || *end != ':', DS_ERR_ARG, "'%s' is not N:M", s);
        m = strtol(end + 1, &end, 10);
        DS_RETURN_IF(*end || n < 1 || m <= n || m > 256, DS_ERR_ARG,
                     "'%s': N:M needs 1 <= N < M <= 256", s);
        out->n = (int)n;
        out->m = (int)m;
        return DS_OK;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (*end == '%' && end[1] == 0) {
        v /= 100;
        end++;
    }
    DS_RETURN_IF(end == s || *end || errno || !(v >= 0 && v < 1), DS_ERR_ARG,
                 "sparsity '%s' is not a fraction in [0, 1) (or a percentage, or N:M)", s);
    out->frac = v;
    return DS_OK;
}

struct prule {
    pcre2_code *re;
    struct ds_sparsity sp;
};

struct ds_prune_rules {
    struct prule r[MAX_RULES];
    int n;
};

ds_err ds_prune_rules_new(struct ds_prune_rules **out)
{
    *out = ds_calloc(1, sizeof(**out));
    return *out ? DS_OK : DS_ERR_NOMEM;
}

void ds_prune_rules_free(struct ds_prune_rules *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        pcre2_code_free(r->r[i].re);
    free(r);
}

ds_err ds_prune_rules_add(struct ds_prune_rules *r, const char *rule)
{
    const char *eq = strrchr(rule, '=');
    struct ds_sparsity sp;

    DS_RETURN_IF(!eq || eq == rule || !eq[1], DS_ERR_ARG, "'%s' is not REGEX=SPARSITY", rule);
    DS_RETURN_IF(r->n == MAX_RULES, DS_ERR_LIMIT, "more than %d rules", MAX_RULES);
    DS_TRY(ds_sparsity_parse(eq + 1, &sp));
    pcre2_code *re;
    DS_TRY(ds_rule_regex(rule, eq, &re));
    r->r[r->n].re = re;
    r->r[r->n].sp = sp;
    r->n++;
    return DS_OK;
}

/* The rule for name, or NULL. */
static const struct ds_sparsity *rule_for(const struct ds_prune_rules *r, const char *name)
{
    for (int i = 0; r && i < r->n; i++) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->r[i].re, NULL);
        int rc = md ? pcre2_match(r->r[i].re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0,
                                  md, NULL)
                    : -1;
        pcre2_match_data_free(md);
        if (rc >= 0)
            return &r->r[i].sp;
    }
    return NULL;
}

/* ---- selection kernels ------------------------------------------------------------ */

/* Marks the k lowest of s (n) in mask (1 = prune): ties to the lower index.
 * tmp (n) is scratch. O(n) on average (quickselect of the k-th value). */
static void lowest_k(const float *s, int64_t n, int64_t k, uint8_t *mask, float *tmp)
{
    float th;
    int64_t below = 0;

    memset(mask, 0, (size_t)n);
    if (k <= 0)
        return;
    if (k >= n) {
        memset(mask, 1, (size_t)n);
        return;
    }
    memcpy(tmp, s, (size_t)n * sizeof(float));
    for (int64_t lo = 0, hi = n - 1, want = k - 1; lo < hi;) {
        float p = tmp[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (tmp[i] < p)
                i++;
            while (tmp[j] > p)
                j--;
            if (i <= j) {
                float t = tmp[i];
                tmp[i++] = tmp[j];
                tmp[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    th = tmp[k - 1];
    for (int64_t i = 0; i < n; i++)
        if (s[i] < th) {
            mask[i] = 1;
            below++;
        }
    for (int64_t i = 0; i < n && below < k; i++)
        if (s[i] == th) {
            mask[i] = 1;
            below++;
        }
}

/* Reference twin of lowest_k: a stable sort of the indices by score. */
static void lowest_k_ref(const float *s, int64_t n, int64_t k, uint8_t *mask)
{
    memset(mask, 0, (size_t)n);
    for (int64_t c = 0; c < k && c < n; c++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (!mask[i] && (best < 0 || s[i] < s[best]))
                best = i;
        mask[best] = 1;
    }
}

/* N:M: in every group of m consecutive entries of s (n, a multiple of m)
 * marks the m - keep lowest, ties to the lower index. */
static void nm_mask(const float *s, int64_t n, int keep, int m, uint8_t *mask)
{
    for (int64_t g = 0; g < n; g += m)
        lowest_k_ref(s + g, m, m - keep, mask + g);
}

void ds_prune_lowest_k(const float *s, int64_t n, int64_t k, uint8_t *mask, float *tmp)
{
    lowest_k(s, n, k, mask, tmp);
}

void ds_prune_lowest_k_ref(const float *s, int64_t n, int64_t k, uint8_t *mask)
{
    lowest_k_ref(s, n, k, mask);
}

/* ---- the plan ----------------------------------------------------------------------- */

/* The model's shape, from the deepseek2 keys. */
struct shape {
    int64_t blocks, nextn, n_layers, H, E, k, G, topk_group, dense, rope, nope, dv;
};

/* Gather along one axis: keep units keep[0..n_keep) of `unit` elements. */
struct slice {
    int axis;          /* 0, 1 or 2; -1: none */
    int64_t unit;
    const int64_t *keep;
    int64_t n_keep;
};

struct tplan {
    size_t src;                 /* input tensor index */
    long layer;                 /* original layer, or -1 */
    struct slice sl;
    struct ds_sparsity sp;      /* applied after slicing */
    bool prune;
    enum ds_type type;          /* output type */
    const char *note;
};

struct plan {
    struct shape s;
    struct ds_gguf out;
    struct tplan *t;            /* out.n_tensors entries, data order */
    bool *drop_layer;           /* (blocks) */
    int64_t *new_index;         /* (blocks) output layer, -1 if dropped */
    int64_t *keep_e;            /* (blocks, E - r_e) kept expert ids; NULL if none removed */
    int64_t *keep_h;            /* (blocks, H - r_h) kept heads; NULL if none removed */
    int64_t r_e, r_h;
};

static void plan_release(struct plan *p)
{
    ds_gguf_release(&p->out);
    free(p->t);
    free(p->drop_layer);
    free(p->new_index);
    free(p->keep_e);
    free(p->keep_h);
}

static int64_t meta_int(const struct ds_meta *m, const char *key, int64_t def)
{
    int64_t v;
    return ds_meta_get_int(m, key, &v) ? v : def;
}

static ds_err read_shape(const char *file, const struct ds_meta *m, struct shape *s)
{
    const char *arch = ds_meta_get_str(m, "general.architecture", NULL);
    DS_RETURN_IF(!arch || strcmp(arch, "deepseek2"), DS_ERR_UNSUPPORTED,
                 "'%s': architecture '%s' is not supported (deepseek2 only)", file,
                 arch ? arch : "(none)");
    s->blocks = meta_int(m, KEY("block_count"), 0);
    s->nextn = meta_int(m, KEY("nextn_predict_layers"), 0);
    s->n_layers = s->blocks - s->nextn;
    s->H = meta_int(m, KEY("attention.head_count"), 0);
    s->E = meta_int(m, KEY("expert_count"), 0);
    s->k = meta_int(m, KEY("expert_used_count"), 0);
    s->G = meta_int(m, KEY("expert_group_count"), 1);
    s->topk_group = meta_int(m, KEY("expert_group_used_count"), 1);
    s->dense = meta_int(m, KEY("leading_dense_block_count"), 0);
    s->rope = meta_int(m, KEY("rope.dimension_count"), 0);
    s->nope = meta_int(m, KEY("attention.key_length_mla"), 0) - s->rope;
    s->dv = meta_int(m, KEY("attention.value_length_mla"), 0);
    if (s->G < 1)
        s->G = 1;
    if (s->topk_group < 1 || s->topk_group > s->G)
        s->topk_group = s->G;
    DS_RETURN_IF(s->blocks < 1 || s->blocks > 4096 || s->nextn < 0 || s->n_layers < 1 ||
                     s->H < 1 || s->H > 65536 || s->E < 0 || s->E > 65536 || s->k < 0 ||
                     s->nope < 0 || s->dv < 0 || s->dense < 0,
                 DS_ERR_FORMAT, "'%s': deepseek2 hyper-parameters missing or out of range", file);
    return DS_OK;
}

/* Resolves a fraction (0, 1) or a count >= 1 of `of`. */
static ds_err count_of(const char *what, double v, int64_t of, int64_t multiple, int64_t *out)
{
    double c;
    if (v <= 0) {
        *out = 0;
        return DS_OK;
    }
    if (v < 1) {
        c = nearbyint(v * (double)of / (double)multiple) * (double)multiple;
        DS_RETURN_IF(c < 1, DS_ERR_ARG, "removing %g of %lld %s removes none", v, (long long)of,
                     what);
    } else {
        DS_RETURN_IF(v != floor(v), DS_ERR_ARG, "%g %s: give a fraction below 1 or a count", v,
                     what);
        c = v;
    }
    DS_RETURN_IF(c >= (double)of, DS_ERR_ARG, "cannot remove %.0f of %lld %s", c, (long long)of,
                 what);
    *out = (int64_t)c;
    return DS_OK;
}

/* Tensor `name` of layer l ("blk.%ld.<suffix>") in the input, or -1. */
static long find_layer_tensor(const struct ds_gguf *g, long l, const char *suffix)
{
    char n[DS_GGUF_MAX_NAME + 32];
    snprintf(n, sizeof(n), "blk.%ld.%s", l, suffix);
    return ds_gguf_find(g, n);
}

/* Tensor i of the input as floats (caller frees *out). */
static ds_err read_f32(struct ds_reader *r, const struct ds_gguf *g, size_t i, float **out)
{
    const struct ds_tensor_info *t = &g->tensors[i];
    uint64_t n = 1;
    void *raw = NULL;
    float *f = NULL;
    ds_err rc = DS_OK;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= (uint64_t)t->ne[d];
    DS_RETURN_IF(!ds_quant_supported(t->type) && t->type != DS_TYPE_F32 &&
                     t->type != DS_TYPE_F16 && t->type != DS_TYPE_BF16,
                 DS_ERR_UNSUPPORTED, "'%s': tensor '%s' of type %s cannot be pruned",
                 ds_reader_name(r), t->name, ds_type_name(t->type));
    raw = ds_malloc(t->nbytes ? t->nbytes : 1);
    f = ds_malloc(n ? n * sizeof(float) : 1);
    DS_FAIL_IF(!raw || !f, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_gguf_read_tensor(r, g, i, raw));
    {
        size_t row = (size_t)(t->ne[0] / ds_type_block_size(t->type)) *
                     ds_type_block_bytes(t->type);
        for (uint64_t j = 0; j < n / (uint64_t)t->ne[0]; j++)
            DS_CHECK(ds_dequantize_row(t->type, (const char *)raw + j * row, f + j * t->ne[0],
                                       t->ne[0]));
    }
out:
    free(raw);
    if (rc != DS_OK) {
        free(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

struct rank {
    double score, tie;
    int64_t id;
};

static int cmp_rank(const void *a, const void *b)
{
    const struct rank *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    if (x->tie != y->tie)
        return x->tie < y->tie ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Chooses the experts each MoE layer keeps (same count per group). */
static ds_err plan_experts(struct plan *p, const struct ds_prune_opts *o, struct ds_reader *r,
                           const struct ds_gguf *g)
{
    const struct shape *s = &p->s;
    const int64_t E = s->E, keep = E - p->r_e, eg = E / s->G, rg = p->r_e / s->G;
    struct rank *rk = ds_malloc((size_t)E * sizeof(*rk));
    float *w = NULL;
    ds_err rc = DS_OK;

    p->keep_e = ds_calloc((size_t)(s->blocks * keep), sizeof(int64_t));
    DS_FAIL_IF(!rk || !p->keep_e, DS_ERR_NOMEM, "out of memory");
    for (long l = 0; l < s->blocks; l++) {
        long ti = find_layer_tensor(g, l, "ffn_gate_inp.weight");
        int64_t *kl = p->keep_e + l * keep, nk = 0;
        const struct ds_tensor_info *t;
        bool data = o->calib && l < s->n_layers && ds_calib_tokens(o->calib) > 0;
        if (ti < 0) { // dense layer: nothing to choose
            for (int64_t e = 0; e < keep; e++)
                kl[e] = -1;
            continue;
        }
        t = &g->tensors[ti];
        DS_FAIL_IF(t->n_dims != 2 || t->ne[1] != E, DS_ERR_FORMAT,
                   "'%s': tensor '%s' is not a router of %lld experts", ds_reader_name(r),
                   t->name, (long long)E);
        DS_CHECK(read_f32(r, g, (size_t)ti, &w));
        for (int64_t e = 0; e < E; e++) {
            double n2 = 0;
            for (int64_t j = 0; j < t->ne[0]; j++)
                n2 += (double)w[e * t->ne[0] + j] * w[e * t->ne[0] + j];
            rk[e].tie = sqrt(n2);
            rk[e].id = e;
            rk[e].score = rk[e].tie;
            if (data) {
                int64_t sel = 0;
                double ws = 0;
                if (ds_calib_expert(o->calib, l, e, &sel, &ws))
                    rk[e].score = ws / (double)ds_calib_tokens(o->calib);
            }
        }
        free(w);
        w = NULL;
        for (int64_t gi = 0; gi < s->G; gi++) {
            qsort(rk + gi * eg, (size_t)eg, sizeof(*rk), cmp_rank);
            for (int64_t j = rg; j < eg; j++)
                kl[nk++] = rk[gi * eg + j].id;
        }
        qsort(kl, (size_t)nk, sizeof(*kl), cmp_i64);
    }
out:
    free(w);
    free(rk);
    return rc;
}

/* Chooses the heads each layer keeps. */
static ds_err plan_heads(struct plan *p, const struct ds_prune_opts *o, struct ds_reader *r,
                         const struct ds_gguf *g)
{
    const struct shape *s = &p->s;
    const int64_t H = s->H, keep = H - p->r_h;
    struct rank *rk = ds_malloc((size_t)H * sizeof(*rk));
    float *w = NULL;
    ds_err rc = DS_OK;

    p->keep_h = ds_calloc((size_t)(s->blocks * keep), sizeof(int64_t));
    DS_FAIL_IF(!rk || !p->keep_h, DS_ERR_NOMEM, "out of memory");
    for (long l = 0; l < s->blocks; l++) {
        long ti = find_layer_tensor(g, l, "attn_output.weight");
        const struct ds_tensor_info *t;
        const float *ms = NULL;
        int64_t cols;
        DS_FAIL_IF(ti < 0, DS_ERR_FORMAT, "'%s': layer %ld has no attn_output.weight",
                   ds_reader_name(r), l);
        t = &g->tensors[ti];
        cols = t->ne[0];
        DS_FAIL_IF(t->n_dims != 2 || cols != H * s->dv, DS_ERR_FORMAT,
                   "'%s': '%s' has %lld columns, expected %lld heads x %lld", ds_reader_name(r),
                   t->name, (long long)cols, (long long)H, (long long)s->dv);
        if (o->imatrix)
            ms = ds_imatrix_get(o->imatrix, t->name, cols);
        DS_CHECK(read_f32(r, g, (size_t)ti, &w));
        for (int64_t h = 0; h < H; h++) {
            double sc = 0;
            for (int64_t j = h * s->dv; j < (h + 1) * s->dv; j++) {
                double c2 = 0;
                for (int64_t i = 0; i < t->ne[1]; i++)
                    c2 += (double)w[i * cols + j] * w[i * cols + j];
                sc += c2 * (ms ? ms[j] : 1.0);
            }
            rk[h] = (struct rank){sc, 0, h};
        }
        free(w);
        w = NULL;
        qsort(rk, (size_t)H, sizeof(*rk), cmp_rank);
        for (int64_t j = 0; j < keep; j++)
            p->keep_h[l * keep + j] = rk[p->r_h + j].id;
        qsort(p->keep_h + l * keep, (size_t)keep, sizeof(int64_t), cmp_i64);
    }
out:
    free(w);
    free(rk);
    return rc;
}

/* Chooses the layers to drop. */
static ds_err plan_layers(struct plan *p, const struct ds_prune_opts *o)
{
    const struct shape *s = &p->s;
    int64_t r = 0;

    p->drop_layer = ds_calloc((size_t)s->blocks, sizeof(bool));
    p->new_index = ds_calloc((size_t)s->blocks, sizeof(int64_t));
    if (!p->drop_layer || !p->new_index)
        return DS_ERR_NOMEM;
    if (o->n_layer_list) {
        for (size_t i = 0; i < o->n_layer_list; i++) {
            int64_t l = o->layer_list[i];
            DS_RETURN_IF(l < 0 || l >= s->n_layers, DS_ERR_ARG,
                         "layer %lld is out of range (the model has layers 0..%lld%s)",
                         (long long)l, (long long)s->n_layers - 1,
                         s->nextn ? "; the MTP layer cannot be removed" : "");
            DS_RETURN_IF(p->drop_layer[l], DS_ERR_ARG, "layer %lld is listed twice",
                         (long long)l);
            p->drop_layer[l] = true;
            r++;
        }
        DS_RETURN_IF(r >= s->n_layers, DS_ERR_ARG, "cannot remove all %lld layers",
                     (long long)s->n_layers);
    } else if (o->layers > 0) {
        struct rank *rk;
        DS_TRY(count_of("layers", o->layers, s->n_layers, 1, &r));
        DS_RETURN_IF(!o->calib || ds_calib_tokens(o->calib) == 0, DS_ERR_ARG,
                     "ranking layers needs calibration statistics (or give a list of layers)");
        rk = ds_malloc((size_t)s->n_layers * sizeof(*rk));
        if (!rk)
            return DS_ERR_NOMEM;
        for (int64_t l = 0; l < s->n_layers; l++) {
            double b = ds_calib_block_influence(o->calib, l);
            rk[l] = (struct rank){isnan(b) ? INFINITY : b, 0, l};
        }
        qsort(rk, (size_t)s->n_layers, sizeof(*rk), cmp_rank);
        for (int64_t i = 0; i < r; i++)
            p->drop_layer[rk[i].id] = true;
        free(rk);
    }
    for (int64_t l = 0, n = 0; l < s->blocks; l++)
        p->new_index[l] = p->drop_layer[l] ? -1 : n++;
    return DS_OK;
}

/* Types whose quantization grid holds an exact zero. */
static bool exact_zero(enum ds_type t)
{
    switch (t) {
    case DS_TYPE_F32:
    case DS_TYPE_F16:
    case DS_TYPE_BF16:
    case DS_TYPE_Q8_0:
    case DS_TYPE_Q4_0:
    case DS_TYPE_Q5_0:
    case DS_TYPE_Q3_K:
    case DS_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

static bool is_float(enum ds_type t)
{
    return t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16;
}

/* Layer of a "blk.N." name and the rest of it, or -1. */
static long name_layer(const char *name, const char **rest)
{
    char *end;
    long l;
    if (strncmp(name, "blk.", 4))
        return -1;
    l = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.')
        return -1;
    *rest = end + 1;
    return l;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Default: prune the matrices of the transformer layers. */
static bool pruned_by_default(const struct shape *s, const struct ds_tensor_info *t, long layer,
                              const char *rest)
{
    return layer >= 0 && layer < s->n_layers && t->n_dims >= 2 && !strstr(rest, "_norm") &&
           !strstr(rest, "ffn_gate_inp") && !strstr(rest, "exp_probs_b") &&
           !strstr(rest, "_scale_inv") && !strstr(rest, "nextn.");
}

/* The slices tensor t of layer l keeps. */
static ds_err plan_slice(const struct plan *p, const struct ds_tensor_info *t, long l,
                         const char *rest, struct slice *sl)
{
    const struct shape *s = &p->s;
    const int64_t ke = s->E - p->r_e, kh = s->H - p->r_h;
    sl->axis = -1;
    if (l < 0)
        return DS_OK;
    if (p->keep_e && p->keep_e[l * ke] >= 0) {
        const int64_t *keep = p->keep_e + l * ke;
        if (!strcmp(rest, "ffn_gate_inp.weight"))
            *sl = (struct slice){1, 1, keep, ke};
        else if (!strcmp(rest, "exp_probs_b.bias"))
            *sl = (struct slice){0, 1, keep, ke};
        else if (!strcmp(rest, "ffn_gate_exps.weight") || !strcmp(rest, "ffn_up_exps.weight") ||
                 !strcmp(rest, "ffn_down_exps.weight"))
            *sl = (struct slice){2, 1, keep, ke};
    }
    if (p->keep_h) {
        const int64_t *keep = p->keep_h + l * kh;
        if (!strcmp(rest, "attn_q_b.weight") || !strcmp(rest, "attn_q.weight"))
            *sl = (struct slice){1, s->nope + s->rope, keep, kh};
        else if (!strcmp(rest, "attn_k_b.weight") || !strcmp(rest, "attn_v_b.weight"))
            *sl = (struct slice){2, 1, keep, kh};
        else if (!strcmp(rest, "attn_kv_b.weight"))
            *sl = (struct slice){1, s->nope + s->dv, keep, kh};
        else if (!strcmp(rest, "attn_output.weight"))
            *sl = (struct slice){0, s->dv, keep, kh};
    }
    if (sl->axis >= 0) {
        int64_t total = sl->axis < (int)t->n_dims ? t->ne[sl->axis] : 1;
        int64_t units = p->keep_e && sl->keep >= p->keep_e && sl->keep < p->keep_e + s->blocks * ke
                            ? s->E
                            : s->H;
        DS_RETURN_IF(total != units * sl->unit, DS_ERR_FORMAT,
                     "tensor '%s' has %lld entries along dimension %d, expected %lld x %lld",
                     t->name, (long long)total, sl->axis, (long long)units, (long long)sl->unit);
        DS_RETURN_IF(t->type == DS_TYPE_F8_E4M3 || has_suffix(t->name, "_scale_inv"),
                     DS_ERR_UNSUPPORTED,
                     "tensor '%s' is FP8 with tile scales, which cannot be sliced; convert to "
                     "bf16 first",
                     t->name);
    }
    return DS_OK;
}

static ds_err set_removed(struct ds_meta *m, const char *what, int64_t out_layer,
                          const int64_t *keep, int64_t n_keep, int64_t n_all)
{
    char key[96];
    int32_t rem[1024];
    int64_t n = 0;
    if (n_all - n_keep > 1024)
        return DS_OK; // too many to record: the counts in the keys above tell
    for (int64_t i = 0, j = 0; i < n_all; i++) {
        if (j < n_keep && keep[j] == i)
            j++;
        else
            rem[n++] = (int32_t)i;
    }
    snprintf(key, sizeof(key), "dskit.prune.removed_%s.%lld", what, (long long)out_layer);
    return ds_meta_set_arr(m, key, DS_V_I32, (uint64_t)n, rem);
}

static ds_err append_provenance(struct ds_meta *m, const char *prov)
{
    long i = ds_meta_find(m, "dskit.provenance");
    enum ds_vtype et;
    uint64_t n = 0;
    const char **v;
    ds_err rc;
    if (!prov)
        return DS_OK;
    if (i < 0 || !ds_meta_arr(m, (size_t)i, &et, &n) || et != DS_V_STR)
        n = 0;
    v = ds_calloc(n + 1, sizeof(*v));
    if (!v)
        return DS_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++)
        v[j] = ds_meta_arr_str(m, (size_t)i, j, NULL);
    v[n] = prov;
    rc = ds_meta_set_str_arr(m, "dskit.provenance", n + 1, v, NULL);
    free(v);
    return rc;
}

/* Output metadata: the input's with the new counts and the dskit.prune keys. */
static ds_err plan_meta(struct plan *p, const struct ds_prune_opts *o, const struct ds_gguf *in,
                        bool any_prune)
{
    const struct shape *s = &p->s;
    struct ds_meta *m = ds_meta_dup(in->meta);
    int64_t n_drop = 0, dense = 0;
    int32_t rem[4096];
    ds_err rc = DS_OK;

    if (!m)
        return DS_ERR_NOMEM;
    ds_meta_free(p->out.meta);
    p->out.meta = m;
    for (int64_t l = 0; l < s->n_layers; l++)
        if (p->drop_layer[l])
            rem[n_drop++] = (int32_t)l;
        else if (l < s->dense)
            dense++;
    if (n_drop) {
        DS_CHECK(ds_meta_set_u32(m, KEY("block_count"), (uint32_t)(s->blocks - n_drop)));
        DS_CHECK(ds_meta_set_u32(m, KEY("leading_dense_block_count"), (uint32_t)dense));
        DS_CHECK(ds_meta_set_arr(m, "dskit.prune.removed_layers", DS_V_I32, (uint64_t)n_drop,
                                 rem));
    }
    if (p->r_e) {
        DS_CHECK(ds_meta_set_u32(m, KEY("expert_count"), (uint32_t)(s->E - p->r_e)));
        for (int64_t l = 0; l < s->blocks; l++)
            if (!p->drop_layer[l] && p->keep_e[l * (s->E - p->r_e)] >= 0)
                DS_CHECK(set_removed(m, "experts", p->new_index[l],
                                     p->keep_e + l * (s->E - p->r_e), s->E - p->r_e, s->E));
    }
    if (p->r_h) {
        DS_CHECK(ds_meta_set_u32(m, KEY("attention.head_count"), (uint32_t)(s->H - p->r_h)));
        for (int64_t l = 0; l < s->blocks; l++)
            if (!p->drop_layer[l])
                DS_CHECK(set_removed(m, "heads", p->new_index[l],
                                     p->keep_h + l * (s->H - p->r_h), s->H - p->r_h, s->H));
    }
    if (any_prune) {
        DS_CHECK(ds_meta_set_str(m, "dskit.prune.method",
                                 o->method == DS_PRUNE_WANDA ? "wanda" : "magnitude"));
        if (o->sparsity.m) {
            char nm[32];
            snprintf(nm, sizeof(nm), "%d:%d", o->sparsity.n, o->sparsity.m);
            DS_CHECK(ds_meta_set_str(m, "dskit.prune.nm", nm));
        } else if (o->sparsity.frac > 0) {
            DS_CHECK(ds_meta_set_f32(m, "dskit.prune.sparsity", (float)o->sparsity.frac));
        }
    }
    if (o->calibration)
        DS_CHECK(ds_meta_set_str(m, "dskit.prune.calibration", o->calibration));
    DS_CHECK(append_provenance(m, o->provenance));
out:
    return rc;
}

static ds_err make_plan(struct plan *p, const struct ds_prune_opts *o, struct ds_reader *r,
                        const struct ds_gguf *in)
{
    struct shape *s = &p->s;
    size_t *order = NULL;
    bool any_prune = false;
    ds_err rc = DS_OK;

    DS_TRY(read_shape(ds_reader_name(r), in->meta, s));
    if (o->experts > 0) {
        DS_RETURN_IF(s->E == 0, DS_ERR_ARG, "'%s' has no routed experts", ds_reader_name(r));
        DS_TRY(count_of("experts", o->experts, s->E, s->G, &p->r_e));
        DS_RETURN_IF(p->r_e % s->G, DS_ERR_ARG,
                     "removing %lld of %lld experts leaves the %lld expert groups uneven: "
                     "remove a multiple of %lld",
                     (long long)p->r_e, (long long)s->E, (long long)s->G, (long long)s->G);
        DS_RETURN_IF(s->E - p->r_e < s->k, DS_ERR_ARG,
                     "removing %lld of %lld experts leaves fewer than the %lld used per token",
                     (long long)p->r_e, (long long)s->E, (long long)s->k);
        DS_RETURN_IF((s->E - p->r_e) / s->G * s->topk_group < s->k, DS_ERR_ARG,
                     "removing %lld of %lld experts leaves %lld groups of %lld, fewer than the "
                     "%lld experts used per token",
                     (long long)p->r_e, (long long)s->E, (long long)s->topk_group,
                     (long long)((s->E - p->r_e) / s->G), (long long)s->k);
    }
    if (o->heads > 0)
        DS_TRY(count_of("heads", o->heads, s->H, 1, &p->r_h));
    DS_TRY(plan_layers(p, o));
    if (p->r_e)
        DS_TRY(plan_experts(p, o, r, in));
    if (p->r_h)
        DS_TRY(plan_heads(p, o, r, in));

    DS_TRY(ds_gguf_init(&p->out));
    p->t = ds_calloc(in->n_tensors ? in->n_tensors : 1, sizeof(*p->t));
    order = ds_malloc((in->n_tensors ? in->n_tensors : 1) * sizeof(*order));
    DS_FAIL_IF(!p->t || !order, DS_ERR_NOMEM, "out of memory");
    ds_gguf_data_order(in, order);
    for (size_t k = 0; k < in->n_tensors; k++) {
        const struct ds_tensor_info *t = &in->tensors[order[k]];
        const char *rest = NULL;
        long l = name_layer(t->name, &rest);
        struct tplan *tp = &p->t[p->out.n_tensors];
        const struct ds_sparsity *rule;
        char name[DS_GGUF_MAX_NAME + 32];
        int64_t ne[DS_MAX_DIMS];

        if (l >= s->blocks)
            l = -1; // not a layer we know: copied as it is
        if (l >= 0 && p->drop_layer[l])
            continue;
        tp->src = order[k];
        tp->layer = l;
        tp->type = t->type;
        DS_CHECK(plan_slice(p, t, l, rest, &tp->sl));
        rule = t->n_dims >= 2 ? rule_for(o->rules, t->name) : NULL;
        tp->sp = rule ? *rule
                 : pruned_by_default(s, t, l, rest ? rest : "") ? o->sparsity
                                                                 : (struct ds_sparsity){0};
        tp->prune = tp->sp.frac > 0 || tp->sp.m > 0;
        if (tp->prune) {
            DS_FAIL_IF(!exact_zero(t->type), DS_ERR_UNSUPPORTED,
                       "tensor '%s' is %s, which cannot hold exact zeros; prune before "
                       "quantizing (or quantize to q8_0, q6_K, q5_0, q4_0, q3_K)",
                       t->name, ds_type_name(t->type));
            DS_FAIL_IF(!is_float(t->type) && !o->allow_requantize, DS_ERR_ARG,
                       "tensor '%s' is %s: pruning it means quantizing it again; give "
                       "--allow-requantize",
                       t->name, ds_type_name(t->type));
            DS_FAIL_IF(tp->sp.m && t->ne[0] % tp->sp.m, DS_ERR_ARG,
                       "tensor '%s': rows of %lld are not a multiple of %d for %d:%d", t->name,
                       (long long)t->ne[0], tp->sp.m, tp->sp.n, tp->sp.m);
            DS_FAIL_IF(o->method == DS_PRUNE_WANDA && !o->imatrix, DS_ERR_ARG,
                       "wanda needs input activation norms: calibration text or an "
                       "importance matrix");
            any_prune = true;
        }
        memcpy(ne, t->ne, sizeof(ne));
        if (tp->sl.axis >= 0)
            ne[tp->sl.axis] = tp->sl.unit * tp->sl.n_keep;
        if (tp->sl.axis == 0 && ds_type_block_size(t->type) > 1 &&
            tp->sl.unit % ds_type_block_size(t->type)) {
            DS_FAIL_IF(!o->allow_requantize, DS_ERR_ARG,
                       "tensor '%s': heads of %lld columns split %s blocks of %lld; removing "
                       "them means quantizing again: give --allow-requantize",
                       t->name, (long long)tp->sl.unit, ds_type_name(t->type),
                       (long long)ds_type_block_size(t->type));
            if (ne[0] % ds_type_block_size(t->type)) {
                tp->type = DS_TYPE_F16;
                tp->note = "rows no longer fit the block: f16";
            }
        }
        if (l >= 0 && p->new_index[l] != l)
            snprintf(name, sizeof(name), "blk.%lld.%s", (long long)p->new_index[l], rest);
        else
            snprintf(name, sizeof(name), "%s", t->name);
        DS_FAIL_IF(strlen(name) >= DS_GGUF_MAX_NAME, DS_ERR_LIMIT, "tensor name '%s' too long",
                   name);
        DS_CHECK(ds_gguf_add_tensor(&p->out, name, tp->type, t->n_dims, ne));
    }
    DS_CHECK(plan_meta(p, o, in, any_prune));
    DS_CHECK(ds_gguf_layout(&p->out));
out:
    free(order);
    return rc;
}

/* ---- transforming one tensor --------------------------------------------------------- */

static size_t row_bytes(enum ds_type t, int64_t n)
{
    return (size_t)(n / ds_type_block_size(t)) * ds_type_block_bytes(t);
}

/* Rows of floats into type t (exact conversion or quantization). */
static ds_err encode_rows(enum ds_type t, const float *f, void *dst, int64_t rows, int64_t n)
{
    ds_err rc = DS_OK;
    DS_OMP(omp parallel for schedule(static))
    for (int64_t i = 0; i < rows; i++) {
        ds_err e = is_float(t) ? ds_convert_row(t, (char *)dst + (size_t)i * row_bytes(t, n),
                                                DS_TYPE_F32, f + i * n, (size_t)n)
                               : ds_quantize_row(t, f + i * n,
                                                 (char *)dst + (size_t)i * row_bytes(t, n), n,
                                                 NULL);
        if (e != DS_OK)
            rc = e;
    }
    return rc;
}

static ds_err decode_rows(enum ds_type t, const void *src, float *f, int64_t rows, int64_t n)
{
    ds_err rc = DS_OK;
    DS_OMP(omp parallel for schedule(static))
    for (int64_t i = 0; i < rows; i++) {
        ds_err e = ds_dequantize_row(t, (const char *)src + (size_t)i * row_bytes(t, n),
                                     f + i * n, n);
        if (e != DS_OK)
            rc = e;
    }
    return rc;
}

/* Slices src (ne, type) into dst along sl (byte copies, or through floats for
 * columns that split blocks). */
static ds_err gather(const struct slice *sl, enum ds_type type, const int64_t *ne,
                     const void *src, enum ds_type otype, void *dst)
{
    const size_t rb = row_bytes(type, ne[0]);
    const int64_t rows = ne[1] * ne[2] * ne[3];
    const char *s = src;
    char *d = dst;

    if (sl->axis == 2) {
        const size_t mb = rb * (size_t)ne[1];
        for (int64_t o3 = 0; o3 < ne[3]; o3++)
            for (int64_t j = 0; j < sl->n_keep; j++)
                memcpy(d + ((size_t)o3 * (size_t)sl->n_keep + (size_t)j) * mb,
                       s + ((size_t)o3 * (size_t)ne[2] + (size_t)sl->keep[j]) * mb, mb);
        return DS_OK;
    }
    if (sl->axis == 1) {
        const size_t ub = rb * (size_t)sl->unit;
        const int64_t outer = ne[2] * ne[3];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < sl->n_keep; j++)
                memcpy(d + ((size_t)o * (size_t)sl->n_keep + (size_t)j) * ub,
                       s + ((size_t)o * (size_t)ne[1] + (size_t)(sl->keep[j] * sl->unit)) * rb,
                       ub);
        return DS_OK;
    }
    // axis 0: columns
    const int64_t bs = ds_type_block_size(type), n1 = sl->unit * sl->n_keep;
    if (sl->unit % bs == 0 && otype == type) {
        const size_t cb = row_bytes(type, sl->unit);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < sl->n_keep; j++)
                memcpy(d + (size_t)i * row_bytes(type, n1) + (size_t)j * cb,
                       s + (size_t)i * rb + (size_t)sl->keep[j] * cb, cb);
        return DS_OK;
    }
    {
        float *a = ds_malloc((size_t)ne[0] * sizeof(float)),
              *b = ds_malloc((size_t)n1 * sizeof(float));
        ds_err rc = DS_OK;
        DS_FAIL_IF(!a || !b, DS_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < rows; i++) {
            DS_CHECK(ds_dequantize_row(type, s + (size_t)i * rb, a, ne[0]));
            for (int64_t j = 0; j < sl->n_keep; j++)
                memcpy(b + j * sl->unit, a + sl->keep[j] * sl->unit,
                       (size_t)sl->unit * sizeof(float));
            DS_CHECK(encode_rows(otype, b, d + (size_t)i * row_bytes(otype, n1), 1, n1));
        }
    out:
        free(a);
        free(b);
        return rc;
    }
}

/* Column importance of each output matrix (ne[0] x n_mat floats, malloc'd),
 * or NULL when the importance matrix has nothing for the tensor. */
static float *importance_of(struct ds_imatrix *im, const struct ds_tensor_info *src,
                            const struct slice *sl, const int64_t *ne)
{
    const int64_t n_mat_src = src->n_dims > 2 ? src->ne[2] : 1;
    const int64_t n_mat = src->n_dims > 2 ? ne[2] : 1;
    const float *v = im ? ds_imatrix_get(im, src->name, src->ne[0] * n_mat_src) : NULL;
    float *out;
    if (!v)
        return NULL;
    out = malloc((size_t)(ne[0] * n_mat) * sizeof(float));
    if (!out)
        return NULL;
    for (int64_t m = 0; m < n_mat; m++) {
        int64_t ms = sl->axis == 2 ? sl->keep[m] : m;
        const float *sv = v + ms * src->ne[0];
        float *ov = out + m * ne[0];
        if (sl->axis == 0)
            for (int64_t j = 0; j < sl->n_keep; j++)
                memcpy(ov + j * sl->unit, sv + sl->keep[j] * sl->unit,
                       (size_t)sl->unit * sizeof(float));
        else
            memcpy(ov, sv, (size_t)ne[0] * sizeof(float));
    }
    return out;
}

/* Zeroes w (n_mat matrices of rows x cols) as sp and method say. imp: cols
 * per matrix, or NULL (magnitude). */
static ds_err prune_f32(float *w, int64_t n_mat, int64_t rows, int64_t cols,
                        const struct ds_sparsity *sp, const float *imp, bool wanda)
{
    const int64_t n = rows * cols;
    float *sc = ds_malloc((size_t)n * sizeof(float)), *tmp = ds_malloc((size_t)n * sizeof(float));
    uint8_t *mask = ds_malloc((size_t)n);
    ds_err rc = DS_OK;

    DS_FAIL_IF(!sc || !mask || !tmp, DS_ERR_NOMEM, "out of memory");
    for (int64_t m = 0; m < n_mat; m++) {
        float *wm = w + m * n;
        const float *im = imp ? imp + m * cols : NULL;
        bool per_row = wanda || sp->m;
        for (int64_t i = 0; i < n; i++)
            sc[i] = fabsf(wm[i]) * (im && wanda ? sqrtf(im[i % cols]) : 1.0f);
        if (sp->m) {
            DS_OMP(omp parallel for schedule(static))
            for (int64_t r = 0; r < rows; r++)
                nm_mask(sc + r * cols, cols, sp->n, sp->m, mask + r * cols);
        } else if (per_row) {
            int64_t k = (int64_t)floor(sp->frac * (double)cols);
            DS_OMP(omp parallel for schedule(static))
            for (int64_t r = 0; r < rows; r++)
                lowest_k(sc + r * cols, cols, k, mask + r * cols, tmp + r * cols);
        } else {
            lowest_k(sc, n, (int64_t)floor(sp->frac * (double)n), mask, tmp);
        }
        for (int64_t i = 0; i < n; i++)
            if (mask[i])
                wm[i] = 0.0f;
    }
out:
    free(sc);
    free(tmp);
    free(mask);
    return rc;
}

/* ---- zstd size ------------------------------------------------------------------------- */

struct zcount {
    ZSTD_CCtx *cc;
    void *buf;
    size_t cap;
    uint64_t bytes;
};

static ds_err zcount_add(struct zcount *z, const void *data, size_t n, bool end)
{
    ZSTD_inBuffer in = {data, n, 0};
    size_t ret;
    do {
        ZSTD_outBuffer ob = {z->buf, z->cap, 0};
        ret = ZSTD_compressStream2(z->cc, &ob, &in, end ? ZSTD_e_end : ZSTD_e_continue);
        DS_RETURN_IF(ZSTD_isError(ret), DS_ERR_IO, "zstd: %s", ZSTD_getErrorName(ret));
        z->bytes += ob.pos;
    } while (in.pos < in.size || (end && ret != 0));
    return DS_OK;
}

/* ---- the run ----------------------------------------------------------------------------- */

/* Copies a stream to an unlinked temporary file and reopens it there. */
static ds_err spool(struct ds_reader **r)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    char *buf = NULL;
    int fd;
    ds_err rc = DS_OK;

    if (!dir || !*dir)
        dir = "/tmp";
    snprintf(path, sizeof(path), "%s/ds-prune.XXXXXX", dir);
    fd = mkstemp(path);
    DS_RETURN_IF(fd < 0, DS_ERR_IO, "cannot create a temporary file in '%s': %s", dir,
                 strerror(errno));
    unlink(path);
    buf = ds_malloc(1 << 20);
    DS_FAIL_IF(!buf, DS_ERR_NOMEM, "out of memory");
    for (;;) {
        size_t got;
        DS_CHECK(ds_reader_read_some(*r, buf, 1 << 20, &got));
        if (!got)
            break;
        for (size_t off = 0; off < got;) {
            ssize_t w = write(fd, buf + off, got - off);
            DS_FAIL_IF(w < 0 && errno != EINTR, DS_ERR_IO,
                       "cannot write a temporary copy of '%s' to '%s': %s",
                       ds_reader_name(*r), dir, strerror(errno));
            if (w > 0)
                off += (size_t)w;
        }
    }
    DS_FAIL_IF(lseek(fd, 0, SEEK_SET) != 0, DS_ERR_IO, "cannot rewind a temporary file: %s",
               strerror(errno));
    {
        struct ds_reader *nr;
        char name[256];
        snprintf(name, sizeof(name), "%s", ds_reader_name(*r));
        DS_CHECK(ds_reader_open_fd(&nr, fd, name, true));
        fd = -1;
        ds_reader_free(*r);
        *r = nr;
    }
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

void ds_prune_stats_release(struct ds_prune_stats *s)
{
    if (!s)
        return;
    free(s->removed_layers);
    free(s->removed_experts);
    free(s->removed_heads);
    memset(s, 0, sizeof(*s));
}

static uint64_t elements(const struct ds_tensor_info *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n *= (uint64_t)t->ne[d];
    return n;
}

static ds_err fill_stats(const struct plan *p, struct ds_prune_stats *st)
{
    const struct shape *s = &p->s;
    int64_t rows = 0;
    st->layers_before = s->n_layers;
    st->experts_before = s->E;
    st->experts_after = s->E - p->r_e;
    st->heads_before = s->H;
    st->heads_after = s->H - p->r_h;
    for (int64_t l = 0; l < s->blocks; l++)
        rows += !p->drop_layer[l];
    st->n_out_layers = rows;
    st->layers_after = rows - s->nextn;
    st->removed_layers = ds_calloc((size_t)s->blocks, sizeof(int64_t));
    st->removed_experts = ds_calloc((size_t)(rows * (p->r_e ? p->r_e : 1)), sizeof(int64_t));
    st->removed_heads = ds_calloc((size_t)(rows * (p->r_h ? p->r_h : 1)), sizeof(int64_t));
    if (!st->removed_layers || !st->removed_experts || !st->removed_heads)
        return DS_ERR_NOMEM;
    st->n_removed_experts = p->r_e;
    st->n_removed_heads = p->r_h;
    for (int64_t l = 0; l < s->blocks; l++) {
        int64_t o = p->new_index[l];
        if (p->drop_layer[l]) {
            st->removed_layers[st->n_removed_layers++] = l;
            continue;
        }
        if (p->r_e) {
            const int64_t *k = p->keep_e + l * (s->E - p->r_e);
            for (int64_t e = 0, j = 0, n = 0; e < s->E; e++) {
                if (k[0] < 0) {
                    if (n < p->r_e)
                        st->removed_experts[o * p->r_e + n++] = -1;
                } else if (j < s->E - p->r_e && k[j] == e) {
                    j++;
                } else {
                    st->removed_experts[o * p->r_e + n++] = e;
                }
            }
        }
        if (p->r_h) {
            const int64_t *k = p->keep_h + l * (s->H - p->r_h);
            for (int64_t h = 0, j = 0, n = 0; h < s->H; h++) {
                if (j < s->H - p->r_h && k[j] == h)
                    j++;
                else
                    st->removed_heads[o * p->r_h + n++] = h;
            }
        }
    }
    return DS_OK;
}

ds_err ds_prune(const struct ds_prune_opts *o, struct ds_prune_stats *stats)
{
    struct ds_reader *r = NULL;
    struct ds_writer *w = NULL;
    struct ds_gguf in = {0};
    struct plan p = {0};
    struct zcount z = {0};
    struct ds_prune_stats st = {0};
    void *src = NULL, *dst = NULL;
    float *f = NULL;
    uint64_t max_in = 0, max_out = 0, max_el = 0, done = 0;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!o || !stats, DS_ERR_ARG, "options or stats missing");
    memset(stats, 0, sizeof(*stats));
    DS_CHECK(ds_reader_open(&r, o->input));
    if ((o->experts > 0 || o->heads > 0) && !ds_reader_is_file(r))
        DS_CHECK(spool(&r));
    DS_CHECK(ds_gguf_init(&in));
    DS_CHECK(ds_gguf_read(r, &in));
    DS_CHECK(make_plan(&p, o, r, &in));
    DS_CHECK(fill_stats(&p, &st));

    for (size_t i = 0; i < in.n_tensors; i++) {
        st.params_before += elements(&in.tensors[i]);
        if (in.tensors[i].nbytes > max_in)
            max_in = in.tensors[i].nbytes;
    }
    for (size_t i = 0; i < p.out.n_tensors; i++) {
        const struct ds_tensor_info *t = &p.out.tensors[i];
        uint64_t mat = (uint64_t)t->ne[0] * (uint64_t)(t->n_dims > 1 ? t->ne[1] : 1);
        st.params_after += elements(t);
        if ((p.t[i].prune || p.t[i].sl.axis >= 0) && t->nbytes > max_out)
            max_out = t->nbytes;
        if (p.t[i].prune && mat > max_el)
            max_el = mat; // pruning works one matrix at a time
    }
    src = ds_malloc(max_in ? max_in : 1);
    dst = ds_malloc(max_out ? max_out : 1);
    f = ds_malloc((max_el ? max_el : 1) * sizeof(float));
    z.cc = ZSTD_createCCtx();
    z.cap = ZSTD_CStreamOutSize();
    z.buf = ds_malloc(z.cap);
    DS_FAIL_IF(!src || !dst || !f || !z.cc || !z.buf, DS_ERR_NOMEM, "out of memory");
    ZSTD_CCtx_setParameter(z.cc, ZSTD_c_compressionLevel, 3);
    if (o->threads > 1)
        ZSTD_CCtx_setParameter(z.cc, ZSTD_c_nbWorkers, o->threads); // ignored without MT

    DS_CHECK(ds_writer_open(&w, o->output, o->write_flags, o->zstd_level, o->threads));
    DS_CHECK(ds_gguf_write_header(w, &p.out));
    z.bytes = p.out.data_offset;
    for (size_t i = 0; i < p.out.n_tensors; i++) {
        const struct tplan *tp = &p.t[i];
        const struct ds_tensor_info *ti = &in.tensors[tp->src], *to = &p.out.tensors[i];
        struct ds_prune_tensor_report rep = {
            .name = to->name, .src_name = ti->name, .type = to->type,
            .n_before = elements(ti), .n_after = elements(to), .note = tp->note};
        const void *data = src;
        int64_t ne[DS_MAX_DIMS] = {1, 1, 1, 1};

        for (uint32_t d = 0; d < to->n_dims; d++)
            ne[d] = to->ne[d];
        DS_CHECK(ds_gguf_read_tensor(r, &in, tp->src, src));
        if (tp->sl.axis >= 0) {
            int64_t sne[DS_MAX_DIMS] = {1, 1, 1, 1};
            for (uint32_t d = 0; d < ti->n_dims; d++)
                sne[d] = ti->ne[d];
            DS_CHECK(gather(&tp->sl, ti->type, sne, src, to->type, dst));
            data = dst;
            rep.sliced = true;
            rep.requantized = tp->sl.axis == 0 && ds_type_block_size(ti->type) > 1 &&
                              tp->sl.unit % ds_type_block_size(ti->type);
        }
        if (tp->prune) {
            const int64_t rows = ne[1] * ne[2] * ne[3], cols = ne[0];
            const int64_t n_mat = ne[2] * ne[3];
            float *imp = o->method == DS_PRUNE_WANDA
                             ? importance_of(o->imatrix, ti, &tp->sl, ne)
                             : NULL;
            if (o->method == DS_PRUNE_WANDA && !imp)
                rep.note = "no activation data: magnitude";
            const size_t mb = row_bytes(to->type, cols) * (size_t)ne[1];
            for (int64_t mi = 0; mi < n_mat && rc == DS_OK; mi++) {
                const char *ms = (const char *)data + (size_t)mi * mb;
                char *md = (char *)dst + (size_t)mi * mb;
                rc = decode_rows(to->type, ms, f, ne[1], cols);
                if (rc == DS_OK)
                    rc = prune_f32(f, 1, ne[1], cols, &tp->sp, imp ? imp + mi * cols : NULL,
                                   o->method == DS_PRUNE_WANDA && imp);
                if (rc == DS_OK)
                    rc = encode_rows(to->type, f, md, ne[1], cols);
                if (rc == DS_OK) // count what was written
                    rc = decode_rows(to->type, md, f, ne[1], cols);
                for (int64_t j = 0; rc == DS_OK && j < ne[1] * cols; j++)
                    rep.zeros += f[j] == 0.0f;
            }
            free(imp);
            DS_CHECK(rc);
            data = dst;
            rep.pruned = true;
            rep.requantized = rep.requantized || !is_float(to->type);
            st.pruned_elements += (uint64_t)(rows * cols);
            st.pruned_zeros += rep.zeros;
        }
        DS_CHECK(ds_gguf_write_tensor(w, &p.out, i, data));
        DS_CHECK(zcount_add(&z, data, to->nbytes, false));
        done += to->nbytes;
        if (o->on_tensor)
            o->on_tensor(o->report_ud, &rep);
        if (o->progress && o->progress(o->progress_ud, done, p.out.data_size, to->name))
            DS_FAIL_IF(true, DS_ERR_INTERRUPTED, "interrupted");
    }
    DS_CHECK(zcount_add(&z, NULL, 0, true));
    st.bytes_out = ds_writer_tell(w);
    DS_CHECK(ds_writer_commit(w));
    st.zstd_bytes = z.bytes;
    *stats = st;
    memset(&st, 0, sizeof(st));
out:
    ds_prune_stats_release(&st);
    ds_writer_free(w);
    ds_reader_free(r);
    ds_gguf_release(&in);
    plan_release(&p);
    ZSTD_freeCCtx(z.cc);
    free(z.buf);
    free(src);
    free(dst);
    free(f);
    return rc;
}
