/* test_prune.c - pruning: selection kernels against their reference, exact
 * zero counts per matrix, N:M groups, exact zeros through quantization,
 * structured removal that leaves the logits unchanged (experts the router
 * never selects, heads that add nothing), shapes and metadata of pruned
 * models, refused requests. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "prune_impl.h"
#include "test.h"
#include "tmpdir.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

/* A whole GGUF in memory. */
struct file {
    struct ds_gguf g;
    void **data;
};

static ds_err load(const char *path, struct file *f)
{
    struct ds_reader *r = NULL;
    ds_err rc;
    memset(f, 0, sizeof(*f));
    if ((rc = ds_reader_open(&r, path)) || (rc = ds_gguf_init(&f->g)) ||
        (rc = ds_gguf_read(r, &f->g)))
        goto out;
    f->data = calloc(f->g.n_tensors, sizeof(void *));
    for (size_t i = 0; i < f->g.n_tensors && !rc; i++) {
        f->data[i] = malloc(f->g.tensors[i].nbytes + 1);
        rc = ds_gguf_read_tensor(r, &f->g, i, f->data[i]);
    }
out:
    ds_reader_free(r);
    return rc;
}

static ds_err save(const char *path, struct file *f)
{
    struct ds_writer *w = NULL;
    ds_err rc;
    if ((rc = ds_gguf_layout(&f->g)) || (rc = ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0)) ||
        (rc = ds_gguf_write_header(w, &f->g)))
        goto out;
    for (size_t i = 0; i < f->g.n_tensors && !rc; i++)
        rc = ds_gguf_write_tensor(w, &f->g, i, f->data[i]);
    if (!rc)
        rc = ds_writer_commit(w);
out:
    ds_writer_free(w);
    return rc;
}

static void release(struct file *f)
{
    for (size_t i = 0; f->data && i < f->g.n_tensors; i++)
        free(f->data[i]);
    free(f->data);
    ds_gguf_release(&f->g);
}

static float *tensor(struct file *f, const char *name, const struct ds_tensor_info **ti)
{
    long i = ds_gguf_find(&f->g, name);
    if (i < 0)
        return NULL;
    *ti = &f->g.tensors[i];
    return f->data[i];
}

static const char *v3(void)
{
    static int done;
    const char *p = tmp("v3.gguf");
    if (!done) {
        struct ds_convert_opts o = {.input = test_data("tiny-v3-fp8"), .output = p,
                                    .to = DS_FORMAT_GGUF, .outtype = DS_TYPE_F32,
                                    .write_flags = DS_WRITE_FORCE};
        if (ds_convert(&o, NULL) != DS_OK)
            return "missing";
        done = 1;
    }
    return p;
}

static const int32_t text_ids[] = {0, 45, 97, 12, 300, 7, 88, 201, 55, 3, 410, 9, 60, 61, 62};
#define N_IDS (sizeof(text_ids) / sizeof(text_ids[0]))

/* All logits of text_ids with model path; malloc'd. */
static float *logits_of(const char *path, int64_t *V)
{
    struct ds_model *m = NULL;
    struct ds_ctx *c = NULL;
    float *lg = NULL;
    if (ds_model_load(path, &m) || ds_ctx_new(m, 64, &c))
        goto out;
    *V = ds_model_n_vocab(m);
    lg = malloc(N_IDS * (size_t)*V * sizeof(float));
    if (ds_forward(c, text_ids, N_IDS, lg, true)) {
        free(lg);
        lg = NULL;
    }
out:
    ds_ctx_free(c);
    ds_model_free(m);
    return lg;
}

static ds_err prune(const char *in, const char *out, struct ds_prune_opts o,
                    struct ds_prune_stats *st)
{
    o.input = in;
    o.output = out;
    o.write_flags = DS_WRITE_FORCE;
    return ds_prune(&o, st);
}

/* ---- kernels ------------------------------------------------------------------------ */

TEST(lowest_k_matches_ref)
{
    for (int trial = 0; trial < 200; trial++) {
        int64_t n = 1 + trial % 97, k = trial % (n + 1);
        float s[97], tmpv[97];
        uint8_t a[97], b[97];
        for (int64_t i = 0; i < n; i++)
            s[i] = trial % 3 ? frand() : (float)(int)(4 * frand()); // ties too
        ds_prune_lowest_k(s, n, k, a, tmpv);
        ds_prune_lowest_k_ref(s, n, k, b);
        ASSERT(!memcmp(a, b, (size_t)n));
        int64_t c = 0;
        for (int64_t i = 0; i < n; i++)
            c += a[i];
        ASSERT_EQ_INT(c, k);
    }
}

TEST(sparsity_parse)
{
    struct ds_sparsity s;
    ASSERT_OK(ds_sparsity_parse("0.5", &s));
    ASSERT(s.frac == 0.5 && !s.m);
    ASSERT_OK(ds_sparsity_parse("25%", &s));
    ASSERT(s.frac == 0.25);
    ASSERT_OK(ds_sparsity_parse("2:4", &s));
    ASSERT(s.n == 2 && s.m == 4);
    ASSERT_OK(ds_sparsity_parse("none", &s));
    ASSERT(s.frac == 0 && !s.m);
    ASSERT_ERR(ds_sparsity_parse("1", &s), DS_ERR_ARG);
    ASSERT_ERR(ds_sparsity_parse("-0.1", &s), DS_ERR_ARG);
    ASSERT_ERR(ds_sparsity_parse("4:4", &s), DS_ERR_ARG);
    ASSERT_ERR(ds_sparsity_parse("x", &s), DS_ERR_ARG);
}

/* Types the pruner requantizes keep exact zeros; the others are refused. */
TEST(quantized_zeros_are_exact)
{
    const enum ds_type ok[] = {DS_TYPE_Q8_0, DS_TYPE_Q4_0, DS_TYPE_Q5_0, DS_TYPE_Q3_K,
                               DS_TYPE_Q6_K};
    float x[512], y[512];
    unsigned char q[1024];
    for (size_t t = 0; t < sizeof(ok) / sizeof(ok[0]); t++) {
        for (int i = 0; i < 512; i++)
            x[i] = i % 3 ? frand() : 0.0f;
        ASSERT_OK(ds_quantize_row(ok[t], x, q, 512, NULL));
        ASSERT_OK(ds_dequantize_row(ok[t], q, y, 512));
        for (int i = 0; i < 512; i += 3)
            ASSERT_MSG(y[i] == 0.0f, "%s: %g at %d", ds_type_name(ok[t]), y[i], i);
    }
}

/* ---- unstructured ------------------------------------------------------------------- */

static int64_t zeros(const float *w, int64_t n)
{
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++)
        z += w[i] == 0.0f;
    return z;
}

TEST(magnitude_half_per_matrix)
{
    struct ds_prune_stats st;
    struct file f;
    struct ds_prune_opts o = {.sparsity = {.frac = 0.5}};
    ASSERT_OK(prune(v3(), tmp("m50.gguf"), o, &st));
    ASSERT(st.params_after == st.params_before);
    ds_prune_stats_release(&st);
    ASSERT_OK(load(tmp("m50.gguf"), &f));
    const char *names[] = {"blk.0.attn_q_a.weight", "blk.1.ffn_up_exps.weight",
                           "blk.2.attn_k_b.weight", "blk.2.attn_output.weight"};
    for (int k = 0; k < 4; k++) {
        const struct ds_tensor_info *t;
        float *w = tensor(&f, names[k], &t);
        ASSERT(w);
        int64_t n = t->ne[0] * t->ne[1], mats = t->n_dims > 2 ? t->ne[2] : 1;
        for (int64_t m = 0; m < mats; m++)
            ASSERT_EQ_INT(zeros(w + m * n, n), n / 2);
    }
    {
        const struct ds_tensor_info *t;
        float *w = tensor(&f, "blk.1.ffn_gate_inp.weight", &t); // router: not by default
        ASSERT_EQ_INT(zeros(w, t->ne[0] * t->ne[1]), 0);
        w = tensor(&f, "blk.3.attn_q_a.weight", &t); // MTP layer: not by default
        ASSERT_EQ_INT(zeros(w, t->ne[0] * t->ne[1]), 0);
        w = tensor(&f, "output.weight", &t);
        ASSERT_EQ_INT(zeros(w, t->ne[0] * t->ne[1]), 0);
    }
    ASSERT(ds_meta_get_str(f.g.meta, "dskit.prune.method", NULL));
    release(&f);
}

TEST(nm_and_wanda_per_row)
{
    struct ds_model *m = NULL;
    struct ds_ctx *c = NULL;
    struct ds_imatrix *im = NULL;
    struct ds_prune_stats st;
    struct file f;
    int64_t chunks;
    ASSERT_OK(ds_model_load(v3(), &m));
    ASSERT_OK(ds_ctx_new(m, 64, &c));
    ASSERT_OK(ds_imatrix_new(m, &im));
    ds_ctx_set_imatrix(c, im);
    ASSERT_OK(ds_calib_run(c, text_ids, N_IDS, 64, 0, &chunks));
    ASSERT_EQ_INT(chunks, 1);
    struct ds_prune_opts o = {.sparsity = {.n = 2, .m = 4}, .method = DS_PRUNE_WANDA,
                              .imatrix = im};
    ASSERT_OK(prune(v3(), tmp("nm.gguf"), o, &st));
    ds_prune_stats_release(&st);
    o.sparsity = (struct ds_sparsity){.frac = 0.5};
    ASSERT_OK(prune(v3(), tmp("wanda.gguf"), o, &st));
    ASSERT_EQ_INT(st.pruned_zeros * 2, st.pruned_elements);
    ds_prune_stats_release(&st);
    ds_ctx_free(c);
    ds_imatrix_free(im);
    ds_model_free(m);

    ASSERT_OK(load(tmp("nm.gguf"), &f));
    for (size_t i = 0; i < f.g.n_tensors; i++) {
        const struct ds_tensor_info *t = &f.g.tensors[i];
        if (strncmp(t->name, "blk.1.", 6) || t->n_dims < 2 || strstr(t->name, "gate_inp"))
            continue;
        const float *w = f.data[i];
        int64_t n = t->ne[0] * t->ne[1] * (t->n_dims > 2 ? t->ne[2] : 1);
        for (int64_t g = 0; g < n; g += 4)
            ASSERT_MSG(4 - zeros(w + g, 4) <= 2, "%s group %lld", t->name, (long long)g);
        ASSERT_EQ_INT(zeros(w, n), n / 2);
    }
    release(&f);
    ASSERT_OK(load(tmp("wanda.gguf"), &f));
    {
        const struct ds_tensor_info *t;
        float *w = tensor(&f, "blk.2.ffn_down_exps.weight", &t);
        for (int64_t r = 0; r < t->ne[1] * t->ne[2]; r++)
            ASSERT_EQ_INT(zeros(w + r * t->ne[0], t->ne[0]), t->ne[0] / 2);
    }
    release(&f);
    int64_t V;
    float *lg = logits_of(tmp("wanda.gguf"), &V);
    ASSERT(lg);
    free(lg);
}

/* ---- structured ---------------------------------------------------------------------- */

/* Experts 4g+1 of every group never win: their selection bias is -1e30 and
 * their router rows are small. Removing a quarter of the experts with router
 * statistics removes exactly those, and the logits do not move. */
TEST(unselected_experts_removed_logits_unchanged)
{
    struct file f;
    struct ds_model *m = NULL;
    struct ds_ctx *c = NULL;
    struct ds_calib *cal = NULL;
    struct ds_prune_stats st;
    int64_t chunks, V;
    char name[64];

    ASSERT_OK(load(v3(), &f));
    for (int l = 1; l <= 3; l++) {
        const struct ds_tensor_info *t;
        snprintf(name, sizeof(name), "blk.%d.exp_probs_b.bias", l);
        float *b = tensor(&f, name, &t);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_inp.weight", l);
        const struct ds_tensor_info *tr;
        float *r = tensor(&f, name, &tr);
        ASSERT(b && r);
        for (int g = 0; g < 4; g++) {
            b[4 * g + 1] = -1e30f;
            for (int64_t j = 0; j < tr->ne[0]; j++)
                r[(4 * g + 1) * tr->ne[0] + j] *= 1e-3f;
        }
    }
    ASSERT_OK(save(tmp("biased.gguf"), &f));
    release(&f);

    ASSERT_OK(ds_model_load(tmp("biased.gguf"), &m));
    ASSERT_OK(ds_ctx_new(m, 64, &c));
    ASSERT_OK(ds_calib_new(m, &cal));
    ds_ctx_set_calib(c, cal);
    ASSERT_OK(ds_calib_run(c, text_ids, N_IDS, 64, 0, &chunks));
    ASSERT_EQ_INT(ds_calib_tokens(cal), N_IDS);
    for (int l = 1; l <= 2; l++) {
        int64_t sel, total = 0;
        double w;
        for (int e = 0; e < 16; e++) {
            ASSERT(ds_calib_expert(cal, l, e, &sel, &w));
            total += sel;
            if (e % 4 == 1)
                ASSERT_EQ_INT(sel, 0);
        }
        ASSERT_EQ_INT(total, (int64_t)N_IDS * 4);
    }
    ASSERT(!ds_calib_expert(cal, 0, 0, &chunks, &(double){0})); // dense layer
    ASSERT(ds_calib_block_influence(cal, 1) > 0);

    struct ds_prune_opts o = {.experts = 0.25, .calib = cal};
    ASSERT_OK(prune(tmp("biased.gguf"), tmp("e75.gguf"), o, &st));
    ASSERT_EQ_INT(st.experts_after, 12);
    ASSERT_EQ_INT(st.n_removed_experts, 4);
    for (int l = 1; l <= 3; l++)
        for (int j = 0; j < 4; j++)
            ASSERT_EQ_INT(st.removed_experts[l * 4 + j], 4 * j + 1);
    ASSERT_EQ_INT(st.removed_experts[0], -1); // the dense layer
    ds_prune_stats_release(&st);
    ds_calib_free(cal);
    ds_ctx_free(c);
    ds_model_free(m);

    float *a = logits_of(tmp("biased.gguf"), &V), *b = logits_of(tmp("e75.gguf"), &V);
    ASSERT(a && b);
    for (size_t i = 0; i < N_IDS * (size_t)V; i++)
        ASSERT_MSG(fabsf(a[i] - b[i]) <= 1e-5f * (1 + fabsf(a[i])), "logit %zu: %g vs %g", i,
                   a[i], b[i]);
    free(a);
    free(b);

    ASSERT_OK(load(tmp("e75.gguf"), &f));
    int64_t ec;
    ASSERT(ds_meta_get_int(f.g.meta, "deepseek2.expert_count", &ec) && ec == 12);
    const struct ds_tensor_info *t;
    ASSERT(tensor(&f, "blk.1.ffn_down_exps.weight", &t) && t->ne[2] == 12);
    ASSERT(tensor(&f, "blk.1.ffn_gate_inp.weight", &t) && t->ne[1] == 12);
    ASSERT(tensor(&f, "blk.3.exp_probs_b.bias", &t) && t->ne[0] == 12);
    ASSERT(ds_meta_find(f.g.meta, "dskit.prune.removed_experts.1") >= 0);
    release(&f);
}

/* A head whose attn_output columns are zero adds nothing: removing one head
 * per layer by magnitude takes it, and the logits stay. */
TEST(silent_head_removed_logits_unchanged)
{
    struct file f;
    struct ds_prune_stats st;
    int64_t V, H;
    char name[64];

    ASSERT_OK(load(v3(), &f));
    for (int l = 0; l <= 3; l++) {
        const struct ds_tensor_info *t;
        snprintf(name, sizeof(name), "blk.%d.attn_output.weight", l);
        float *w = tensor(&f, name, &t);
        ASSERT(w);
        for (int64_t i = 0; i < t->ne[1]; i++)
            for (int64_t j = 32 * (l % 4); j < 32 * (l % 4 + 1); j++)
                w[i * t->ne[0] + j] = 0;
    }
    ASSERT_OK(save(tmp("silent.gguf"), &f));
    release(&f);
    struct ds_prune_opts o = {.heads = 1};
    ASSERT_OK(prune(tmp("silent.gguf"), tmp("h3.gguf"), o, &st));
    for (int l = 0; l <= 3; l++)
        ASSERT_EQ_INT(st.removed_heads[l], l % 4);
    ds_prune_stats_release(&st);
    float *a = logits_of(tmp("silent.gguf"), &V), *b = logits_of(tmp("h3.gguf"), &V);
    ASSERT(a && b);
    for (size_t i = 0; i < N_IDS * (size_t)V; i++)
        ASSERT_MSG(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(a[i])), "logit %zu: %g vs %g", i,
                   a[i], b[i]);
    free(a);
    free(b);
    ASSERT_OK(load(tmp("h3.gguf"), &f));
    ASSERT(ds_meta_get_int(f.g.meta, "deepseek2.attention.head_count", &H) && H == 3);
    release(&f);
}

TEST(layer_removed_and_renumbered)
{
    struct ds_prune_stats st;
    struct file f;
    const int64_t drop[] = {0};
    int64_t n, dense;
    struct ds_prune_opts o = {.layer_list = drop, .n_layer_list = 1};
    ASSERT_OK(prune(v3(), tmp("l.gguf"), o, &st));
    ASSERT_EQ_INT(st.layers_after, 2);
    ds_prune_stats_release(&st);
    ASSERT_OK(load(tmp("l.gguf"), &f));
    ASSERT(ds_meta_get_int(f.g.meta, "deepseek2.block_count", &n) && n == 3);
    ASSERT(ds_meta_get_int(f.g.meta, "deepseek2.leading_dense_block_count", &dense) &&
           dense == 0);
    ASSERT(ds_gguf_find(&f.g, "blk.0.ffn_gate_inp.weight") >= 0);
    ASSERT(ds_gguf_find(&f.g, "blk.2.nextn.eh_proj.weight") >= 0);
    ASSERT(ds_gguf_find(&f.g, "blk.3.attn_norm.weight") < 0);
    release(&f);
    int64_t V;
    float *lg = logits_of(tmp("l.gguf"), &V);
    ASSERT(lg);
    free(lg);
}

TEST(refused_requests_leave_nothing)
{
    struct ds_prune_stats st;
    const int64_t mtp[] = {3};
    struct ds_prune_opts o = {.experts = 16};
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o.experts = 2; // 4 groups of 4
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "uneven"));
    o.experts = 0.75; // 1 per group, 2 groups used: 2 < 4 experts per token
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o.experts = 0.05;
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o = (struct ds_prune_opts){.heads = 4};
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o = (struct ds_prune_opts){.layer_list = mtp, .n_layer_list = 1};
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o = (struct ds_prune_opts){.layers = 1}; // ranking without statistics
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    o = (struct ds_prune_opts){.sparsity = {.frac = 0.5}, .method = DS_PRUNE_WANDA};
    ASSERT_ERR(prune(v3(), tmp("no.gguf"), o, &st), DS_ERR_ARG);
    ASSERT(access(tmp("no.gguf"), F_OK) != 0);
}

int main(void)
{
    char cmd[300];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ds-test-prune-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(lowest_k_matches_ref);
    RUN(sparsity_parse);
    RUN(quantized_zeros_are_exact);
    RUN(magnitude_half_per_matrix);
    RUN(nm_and_wanda_per_row);
    RUN(unselected_experts_removed_logits_unchanged);
    RUN(silent_head_removed_logits_unchanged);
    RUN(layer_removed_and_renumbered);
    RUN(refused_requests_leave_nothing);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
