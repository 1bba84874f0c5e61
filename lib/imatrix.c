/*
 * imatrix.c - importance-matrix collection, and llama.cpp's GGUF imatrix
 * files (see ds_model.h for the format).
 *
 * Ownership: struct ds_imatrix owns its entries (each with its sums and
 * counts), the dataset names and the buffer ds_imatrix_get() returns; it
 * borrows the model it was made for.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_model.h"
#include "error_impl.h"
#include "imatrix_impl.h"
#include "kernels_impl.h"
#include "model_impl.h"

#define SUM2_SUFFIX ".in_sum2"
#define COUNTS_SUFFIX ".counts"
#define MAX_VALUES (1 << 28)         /* floats per tensor of a loaded file */
#define MAX_COUNT 9007199254740992.0 /* 2^53: counts stay exact */
#define COL_BLOCK 256                /* columns per work item of ds_imatrix_add */

/* One weight tensor: n_mat matrices of ne0 input columns each. */
struct im_entry {
    char name[DS_GGUF_MAX_NAME];
    int64_t ne0, n_mat;
    double *sum2;    /* (n_mat, ne0) sums of squared inputs */
    int64_t *counts; /* (n_mat) tokens seen */
};

struct ds_imatrix {
    const struct ds_model *m; /* NULL when loaded from a file */
    struct im_entry *e;
    size_t n, cap;
    int32_t *slot;    /* (n_layers, DS_IM_N_SLOTS) entry index or -1 */
    int32_t out_slot; /* entry of the output head, or -1 */
    char **datasets;  /* of a loaded file */
    size_t n_datasets;
    float *buf; /* ds_imatrix_get's result */
    size_t cap_buf;
};

/* GGUF names of the slots, after "blk.N." */
static const char *const slot_names[DS_IM_N_SLOTS] = {
    [DS_IM_Q] = "attn_q.weight",
    [DS_IM_Q_A] = "attn_q_a.weight",
    [DS_IM_Q_B] = "attn_q_b.weight",
    [DS_IM_KV_A] = "attn_kv_a_mqa.weight",
    [DS_IM_K_B] = "attn_k_b.weight",
    [DS_IM_V_B] = "attn_v_b.weight",
    [DS_IM_WO] = "attn_output.weight",
    [DS_IM_GATE_INP] = "ffn_gate_inp.weight",
    [DS_IM_GATE] = "ffn_gate.weight",
    [DS_IM_UP] = "ffn_up.weight",
    [DS_IM_DOWN] = "ffn_down.weight",
    [DS_IM_GATE_SH] = "ffn_gate_shexp.weight",
    [DS_IM_UP_SH] = "ffn_up_shexp.weight",
    [DS_IM_DOWN_SH] = "ffn_down_shexp.weight",
    [DS_IM_GATE_EXPS] = "ffn_gate_exps.weight",
    [DS_IM_UP_EXPS] = "ffn_up_exps.weight",
    [DS_IM_DOWN_EXPS] = "ffn_down_exps.weight",
};

static const struct ds_weight *slot_weight(const struct ds_layer *L, enum ds_im_slot s)
{
    switch (s) {
    case DS_IM_Q:
        return &L->q;
    case DS_IM_Q_A:
        return &L->q_a;
    case DS_IM_Q_B:
        return &L->q_b;
    case DS_IM_KV_A:
        return &L->kv_a;
    case DS_IM_K_B:
        return &L->k_b;
    case DS_IM_V_B:
        return &L->v_b;
    case DS_IM_WO:
        return &L->wo;
    case DS_IM_GATE_INP:
        return &L->gate_inp;
    case DS_IM_GATE:
        return &L->ffn_gate;
    case DS_IM_UP:
        return &L->ffn_up;
    case DS_IM_DOWN:
        return &L->ffn_down;
    case DS_IM_GATE_SH:
        return &L->gate_sh;
    case DS_IM_UP_SH:
        return &L->up_sh;
    case DS_IM_DOWN_SH:
        return &L->down_sh;
    case DS_IM_GATE_EXPS:
        return &L->gate_exps;
    case DS_IM_UP_EXPS:
        return &L->up_exps;
    case DS_IM_DOWN_EXPS:
        return &L->down_exps;
    default:
        return NULL;
    }
}

void ds_imatrix_free(struct ds_imatrix *im)
{
    if (!im)
        return;
    for (size_t i = 0; i < im->n; i++) {
        free(im->e[i].sum2);
        free(im->e[i].counts);
    }
    for (size_t i = 0; i < im->n_datasets; i++)
        free(im->datasets[i]);
    free(im->datasets);
    free(im->e);
    free(im->slot);
    free(im->buf);
    free(im);
}

/* Appends an entry with zero sums; its index in *idx. */
static ds_err add_entry(struct ds_imatrix *im, const char *name, int64_t ne0, int64_t n_mat,
                        int32_t *idx)
{
    struct im_entry *e;
    size_t len = strlen(name);

    DS_RETURN_IF(len + sizeof(SUM2_SUFFIX) > DS_GGUF_MAX_NAME, DS_ERR_LIMIT,
                 "tensor name '%s' is too long for an imatrix", name);
    DS_RETURN_IF(ne0 < 1 || n_mat < 1 || ne0 > MAX_VALUES / n_mat, DS_ERR_LIMIT,
                 "tensor '%s': %lld x %lld importance values is out of range", name, (long long)ne0,
                 (long long)n_mat);
    DS_RETURN_IF(im->n >= INT32_MAX, DS_ERR_LIMIT, "too many imatrix entries");
    DS_TRY(ds_grow((void **)&im->e, &im->cap, im->n + 1, sizeof(*im->e)));
    e = &im->e[im->n];
    memset(e, 0, sizeof(*e));
    memcpy(e->name, name, len + 1);
    e->ne0 = ne0;
    e->n_mat = n_mat;
    e->sum2 = ds_calloc((size_t)(ne0 * n_mat), sizeof(double));
    e->counts = ds_calloc((size_t)n_mat, sizeof(int64_t));
    if (!e->sum2 || !e->counts) {
        free(e->sum2);
        free(e->counts);
        return DS_ERR_NOMEM;
    }
    *idx = (int32_t)im->n++;
    return DS_OK;
}

static struct im_entry *find_entry(const struct ds_imatrix *im, const char *name)
{
    for (size_t i = 0; i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0)
            return &im->e[i];
    return NULL;
}

ds_err ds_imatrix_new(const struct ds_model *m, struct ds_imatrix **out)
{
    struct ds_imatrix *im = NULL;
    const struct ds_hparams *hp;
    char name[DS_GGUF_MAX_NAME + 32];
    size_t n_slots;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!m || !out, DS_ERR_ARG, "model or output missing");
    *out = NULL;
    hp = &m->hp;
    DS_RETURN_IF(m->vocab_only, DS_ERR_ARG, "'%s' holds a vocabulary only; it cannot run", m->name);
    im = ds_calloc(1, sizeof(*im));
    if (!im)
        return DS_ERR_NOMEM;
    im->m = m;
    im->out_slot = -1;
    n_slots = (size_t)hp->n_layers * DS_IM_N_SLOTS;
    im->slot = ds_malloc((n_slots ? n_slots : 1) * sizeof(*im->slot));
    DS_FAIL_IF(!im->slot, DS_ERR_NOMEM, "out of memory");
    for (int64_t l = 0; l < hp->n_layers; l++) {
        for (int s = 0; s < DS_IM_N_SLOTS; s++) {
            const struct ds_weight *w = slot_weight(&m->layers[l], (enum ds_im_slot)s);
            int32_t *idx = &im->slot[l * DS_IM_N_SLOTS + s];
            *idx = -1;
            if (!w->data)
                continue;
            snprintf(name, sizeof(name), "blk.%lld.%s", (long long)l, slot_names[s]);
            DS_CHECK(add_entry(im, name, w->ne[0], w->ne[2], idx));
        }
    }
    // Tied embeddings: the head is token_embd, and so is the tensor to quantize.
    DS_CHECK(add_entry(
        im, ds_gguf_find(&m->g, "output.weight") >= 0 ? "output.weight" : "token_embd.weight",
        m->output.ne[0], 1, &im->out_slot));
out:
    if (rc != DS_OK) {
        ds_imatrix_free(im);
        return rc;
    }
    *out = im;
    return DS_OK;
}

const struct ds_model *ds_imatrix_model(const struct ds_imatrix *im)
{
    return im->m;
}

void ds_imatrix_add(struct ds_imatrix *im, int64_t layer, enum ds_im_slot slot, int64_t mat,
                    const float *x, int64_t ldx, int64_t T)
{
    int32_t idx;
    struct im_entry *e;
    double *s;
    int64_t ne0, nb;

    assert(im->slot && layer < im->m->hp.n_layers && slot < DS_IM_N_SLOTS);
    idx = layer == DS_IM_OUTPUT ? im->out_slot : im->slot[layer * DS_IM_N_SLOTS + slot];
    if (idx < 0 || T <= 0)
        return;
    e = &im->e[idx];
    assert(mat >= 0 && mat < e->n_mat);
    ne0 = e->ne0;
    s = e->sum2 + mat * ne0;
    nb = (ne0 + COL_BLOCK - 1) / COL_BLOCK;
    // Each column sums its tokens in order, whatever the threads: deterministic.
    DS_OMP(omp parallel for schedule(static) if (T * ne0 >= (1 << 14) && nb > 1))
    for (int64_t b = 0; b < nb; b++) {
        int64_t j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < ne0 ? j0 + COL_BLOCK : ne0;
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * ldx;
            for (int64_t j = j0; j < j1; j++)
                s[j] += (double)xt[j] * (double)xt[j];
        }
    }
    e->counts[mat] += T;
}

const float *ds_imatrix_get(struct ds_imatrix *im, const char *name, int64_t n)
{
    const struct im_entry *e;
    bool any = false;

    if (!im || !name)
        return NULL;
    e = find_entry(im, name);
    if (!e || n != e->ne0 * e->n_mat)
        return NULL;
    for (int64_t k = 0; k < e->n_mat; k++)
        any |= e->counts[k] > 0;
    if (!any)
        return NULL;
    if (ds_grow((void **)&im->buf, &im->cap_buf, (size_t)n, sizeof(float)) != DS_OK)
        return NULL;
    for (int64_t k = 0; k < e->n_mat; k++) {
        const double *s = e->sum2 + k * e->ne0;
        float *o = im->buf + k * e->ne0;
        float c = (float)e->counts[k];
        for (int64_t j = 0; j < e->ne0; j++)
            o[j] = e->counts[k] > 0 ? (float)s[j] / c : 1.0f;
    }
    return im->buf;
}

/* ---- saving ------------------------------------------------------------------------- */

static bool has_data(const struct im_entry *e)
{
    for (int64_t k = 0; k < e->n_mat; k++)
        if (e->counts[k] > 0)
            return true;
    return false;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct im_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

ds_err ds_imatrix_save(const struct ds_imatrix *im, const char *path, const char *dataset,
                       int64_t chunk_count, int64_t chunk_size)
{
    struct ds_gguf g = {0};
    struct ds_writer *w = NULL;
    const struct im_entry **sel = NULL;
    const char **names = NULL;
    float *buf = NULL;
    size_t n_sel = 0, n_names = 0, cap = 1;
    char tn[DS_GGUF_MAX_NAME + 16];
    ds_err rc = DS_OK;

    DS_RETURN_IF(!im, DS_ERR_ARG, "no imatrix to save");
    DS_RETURN_IF(chunk_count < 0 || chunk_count > UINT32_MAX || chunk_size < 0 ||
                     chunk_size > UINT32_MAX,
                 DS_ERR_ARG, "chunk count %lld or size %lld is outside [0, 2^32)",
                 (long long)chunk_count, (long long)chunk_size);
    sel = ds_malloc((im->n ? im->n : 1) * sizeof(*sel));
    names = ds_malloc((im->n_datasets + 1) * sizeof(*names));
    DS_FAIL_IF(!sel || !names, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < im->n; i++) {
        if (!has_data(&im->e[i]))
            continue;
        sel[n_sel++] = &im->e[i];
        if ((size_t)(im->e[i].ne0 * im->e[i].n_mat) > cap)
            cap = (size_t)(im->e[i].ne0 * im->e[i].n_mat);
    }
    DS_FAIL_IF(n_sel == 0, DS_ERR_STATE, "the imatrix has no data yet (no tokens were run)");
    qsort(sel, n_sel, sizeof(*sel), cmp_entry);
    buf = ds_malloc(cap * sizeof(float));
    DS_FAIL_IF(!buf, DS_ERR_NOMEM, "out of memory");

    DS_CHECK(ds_gguf_init(&g));
    for (size_t i = 0; i < im->n_datasets; i++)
        names[n_names++] = im->datasets[i];
    if (dataset)
        names[n_names++] = dataset;
    DS_CHECK(ds_meta_set_str(g.meta, "general.type", "imatrix"));
    DS_CHECK(ds_meta_set_str_arr(g.meta, "imatrix.datasets", n_names, names, NULL));
    DS_CHECK(ds_meta_set_u32(g.meta, "imatrix.chunk_count", (uint32_t)chunk_count));
    DS_CHECK(ds_meta_set_u32(g.meta, "imatrix.chunk_size", (uint32_t)chunk_size));
    for (size_t i = 0; i < n_sel; i++) {
        int64_t ne_s[2] = {sel[i]->ne0, sel[i]->n_mat}, ne_c[2] = {1, sel[i]->n_mat};
        snprintf(tn, sizeof(tn), "%s" SUM2_SUFFIX, sel[i]->name);
        DS_CHECK(ds_gguf_add_tensor(&g, tn, DS_TYPE_F32, 2, ne_s));
        snprintf(tn, sizeof(tn), "%s" COUNTS_SUFFIX, sel[i]->name);
        DS_CHECK(ds_gguf_add_tensor(&g, tn, DS_TYPE_F32, 2, ne_c));
    }
    DS_CHECK(ds_gguf_layout(&g));

    DS_CHECK(ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0));
    DS_CHECK(ds_gguf_write_header(w, &g));
    for (size_t i = 0; i < n_sel; i++) {
        const struct im_entry *e = sel[i];
        int64_t n = e->ne0 * e->n_mat;
        for (int64_t j = 0; j < n; j++)
            buf[j] = (float)e->sum2[j];
        DS_CHECK(ds_gguf_write_tensor(w, &g, 2 * i, buf));
        for (int64_t k = 0; k < e->n_mat; k++)
            buf[k] = (float)e->counts[k];
        DS_CHECK(ds_gguf_write_tensor(w, &g, 2 * i + 1, buf));
    }
    DS_CHECK(ds_writer_commit(w));
out:
    ds_writer_free(w);
    ds_gguf_release(&g);
    free(buf);
    free(names);
    free(sel);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------ */

/* name without suffix into out (cap bytes), or false when it does not end so. */
static bool strip_suffix(const char *name, const char *suffix, char *out, size_t cap)
{
    size_t n = strlen(name), k = strlen(suffix);
    if (n <= k || strcmp(name + n - k, suffix) != 0 || n - k >= cap)
        return false;
    memcpy(out, name, n - k);
    out[n - k] = '\0';
    return true;
}

static ds_err load_datasets(struct ds_imatrix *im, const struct ds_meta *meta, const char *file)
{
    long i = ds_meta_find(meta, "imatrix.datasets");
    enum ds_vtype elem;
    uint64_t n;

    if (i < 0)
        return DS_OK;
    DS_RETURN_IF(!ds_meta_arr(meta, (size_t)i, &elem, &n) || elem != DS_V_STR, DS_ERR_FORMAT,
                 "'%s': imatrix.datasets is not an array of strings", file);
    DS_RETURN_IF(n > (1u << 20), DS_ERR_LIMIT, "'%s': %llu datasets is too many", file,
                 (unsigned long long)n);
    im->datasets = ds_calloc(n ? (size_t)n : 1, sizeof(*im->datasets));
    if (!im->datasets)
        return DS_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++) {
        size_t len;
        const char *s = ds_meta_arr_str(meta, (size_t)i, j, &len);
        im->datasets[j] = ds_strndup(s, len);
        if (!im->datasets[j])
            return DS_ERR_NOMEM;
        im->n_datasets++;
    }
    return DS_OK;
}

/* Tensor i of a file is the in_sum2 (kind 1) or counts (kind 2) of entry. */
struct role {
    int32_t entry;
    int kind;
};

/* Replaces a stream reader (zstd, pipe) by one over an unnamed temporary file
 * holding its bytes, so that the tensor sizes the header claims are checked
 * against the data that is there (as for a regular file) before the sums are
 * allocated from them. */
static ds_err spool(struct ds_reader **r)
{
    char name[512], buf[1 << 16];
    FILE *f;
    size_t got;
    int fd;
    ds_err rc = DS_OK;

    if (ds_reader_is_file(*r))
        return DS_OK;
    snprintf(name, sizeof(name), "%s", ds_reader_name(*r));
    f = tmpfile();
    DS_RETURN_IF(!f, DS_ERR_IO, "'%s': cannot create a temporary file: %s", name,
                 strerror(errno));
    do {
        DS_CHECK(ds_reader_read_some(*r, buf, sizeof(buf), &got));
        DS_FAIL_IF(got && fwrite(buf, 1, got, f) != got, DS_ERR_IO,
                   "'%s': cannot write a temporary file: %s", name, strerror(errno));
    } while (got > 0);
    DS_FAIL_IF(fflush(f) != 0 || lseek(fileno(f), 0, SEEK_SET) != 0 ||
                   (fd = dup(fileno(f))) < 0,
               DS_ERR_IO,
               "'%s': cannot write a temporary file: %s", name, strerror(errno));
    ds_reader_free(*r);
    *r = NULL;
    DS_CHECK(ds_reader_open_fd(r, fd, name, true));
out:
    fclose(f);
    return rc;
}

ds_err ds_imatrix_load(const char *path, struct ds_imatrix **out)
{
    struct ds_imatrix *im = NULL;
    struct ds_reader *r = NULL;
    struct ds_gguf g = {0};
    struct role *role = NULL;
    size_t *order = NULL;
    bool *paired = NULL;
    float *buf = NULL;
    size_t cap = 1;
    char base[DS_GGUF_MAX_NAME];
    const char *file, *type;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!out, DS_ERR_ARG, "output missing");
    *out = NULL;
    im = ds_calloc(1, sizeof(*im));
    if (!im)
        return DS_ERR_NOMEM;
    im->out_slot = -1;
    DS_CHECK(ds_reader_open(&r, path));
    DS_CHECK(spool(&r));
    file = ds_reader_name(r);
    DS_CHECK(ds_gguf_init(&g));
    DS_CHECK(ds_gguf_read(r, &g));
    type = ds_meta_get_str(g.meta, "general.type", NULL);
    DS_FAIL_IF(ds_meta_find(g.meta, "general.type") >= 0 && (!type || strcmp(type, "imatrix")),
               DS_ERR_FORMAT, "'%s': not an imatrix (general.type is '%s')", file,
               type ? type : "not a string");
    DS_CHECK(load_datasets(im, g.meta, file));

    role = ds_calloc(g.n_tensors ? g.n_tensors : 1, sizeof(*role));
    order = ds_malloc((g.n_tensors ? g.n_tensors : 1) * sizeof(*order));
    DS_FAIL_IF(!role || !order, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        role[i].entry = -1;
        if (!strip_suffix(t->name, SUM2_SUFFIX, base, sizeof(base)))
            continue;
        DS_FAIL_IF(t->type != DS_TYPE_F32 || t->ne[2] != 1 || t->ne[3] != 1, DS_ERR_FORMAT,
                   "'%s': tensor '%s' is not a 2-D f32 tensor", file, t->name);
        DS_CHECK(add_entry(im, base, t->ne[0], t->ne[1], &role[i].entry));
        role[i].kind = 1;
        if ((size_t)(t->ne[0] * t->ne[1]) > cap)
            cap = (size_t)(t->ne[0] * t->ne[1]);
    }
    DS_FAIL_IF(im->n == 0, DS_ERR_FORMAT, "'%s': no importance data (no '*%s' tensors)", file,
               SUM2_SUFFIX);
    paired = ds_calloc(im->n, sizeof(*paired));
    DS_FAIL_IF(!paired, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        struct im_entry *e;
        if (!strip_suffix(t->name, COUNTS_SUFFIX, base, sizeof(base)))
            continue;
        e = find_entry(im, base);
        DS_FAIL_IF(!e, DS_ERR_FORMAT, "'%s': tensor '%s' has no '%s%s'", file, t->name, base,
                   SUM2_SUFFIX);
        DS_FAIL_IF(t->type != DS_TYPE_F32 || (t->nbytes != sizeof(float) &&
                                              t->nbytes != (uint64_t)e->n_mat * sizeof(float)),
                   DS_ERR_FORMAT, "'%s': tensor '%s' is not f32 {1, %lld}", file, t->name,
                   (long long)e->n_mat);
        role[i].entry = (int32_t)(e - im->e);
        role[i].kind = 2;
        paired[role[i].entry] = true;
    }
    for (size_t k = 0; k < im->n; k++)
        DS_FAIL_IF(!paired[k], DS_ERR_FORMAT, "'%s': tensor '%s%s' has no '%s%s'", file,
                   im->e[k].name, SUM2_SUFFIX, im->e[k].name, COUNTS_SUFFIX);

    buf = ds_malloc(cap * sizeof(float));
    DS_FAIL_IF(!buf, DS_ERR_NOMEM, "out of memory");
    ds_gguf_data_order(&g, order);
    for (size_t o = 0; o < g.n_tensors; o++) {
        size_t i = order[o];
        const struct ds_tensor_info *t = &g.tensors[i];
        struct im_entry *e;
        if (role[i].entry < 0)
            continue;
        e = &im->e[role[i].entry];
        DS_CHECK(ds_gguf_read_tensor(r, &g, i, buf));
        if (role[i].kind == 1) {
            for (int64_t j = 0; j < e->ne0 * e->n_mat; j++) {
                DS_FAIL_IF(!isfinite(buf[j]) || buf[j] < 0, DS_ERR_FORMAT,
                           "'%s': tensor '%s' holds %g (sums of squares are finite, >= 0)", file,
                           t->name, (double)buf[j]);
                e->sum2[j] = buf[j];
            }
        } else {
            // A single count applies to every matrix (older files, dense 3-D tensors).
            int64_t nc = (int64_t)(t->nbytes / sizeof(float));
            for (int64_t k = 0; k < e->n_mat; k++) {
                float c = buf[nc == 1 ? 0 : k];
                DS_FAIL_IF(!(c >= 0 && c <= MAX_COUNT), DS_ERR_FORMAT,
                           "'%s': tensor '%s' holds count %g", file, t->name, (double)c);
                e->counts[k] = llroundf(c);
            }
        }
    }
out:
    free(buf);
    free(paired);
    free(order);
    free(role);
    ds_gguf_release(&g);
    ds_reader_free(r);
    if (rc != DS_OK) {
        ds_imatrix_free(im);
        return rc;
    }
    *out = im;
    return DS_OK;
}
