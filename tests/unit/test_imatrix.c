/* test_imatrix.c - importance-matrix collection (ds_imatrix_*, ds_ctx_set_imatrix).
 *
 * tiny-v3-fp8 (layer 0 dense, layers 1-2 MoE with 16 experts, 4 per token,
 * one MTP layer) converted to F32 GGUF, run with a collector set:
 *  - a dense matrix: blk.0.attn_q_a's sums equal the squared attention-norm
 *    input recomputed here from token_embd and blk.0.attn_norm;
 *  - routed experts: counts per expert sum to T x experts_per_tok, experts
 *    never routed to have count 0 and get 1.0; the sums over experts are
 *    experts_per_tok times the router's (every token goes to that many);
 *  - the file: llama.cpp's keys and tensor shapes; save -> load -> save is
 *    byte-identical and ds_imatrix_get agrees exactly; malformed files fail;
 *  - a prefill and token-by-token runs give the same sums; logits do not
 *    change what is recorded; no collector, no recording.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "test.h"
#include "tmpdir.h"

static struct ds_model *model;
static const struct ds_hparams *hp;

static void tokens_fill(int32_t *t, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)ds_model_n_vocab(model));
    }
}

/* Runs tokens through a fresh context with im set: as one call, or one by one. */
static ds_err collect(struct ds_imatrix *im, const int32_t *tok, size_t n, bool one_by_one,
                      bool all_logits)
{
    struct ds_ctx *c = NULL;
    float *logits = NULL;
    ds_err e = ds_ctx_new(model, 128, &c);
    if (e != DS_OK)
        return e;
    ds_ctx_set_imatrix(c, im);
    if (all_logits)
        logits = malloc(n * (size_t)ds_model_n_vocab(model) * sizeof(float));
    if (all_logits && !logits)
        e = DS_ERR_NOMEM;
    for (size_t i = 0; e == DS_OK && i < n; i += one_by_one ? 1 : n)
        e = ds_forward(c, tok + i, one_by_one ? 1 : n,
                       logits ? logits + i * (size_t)ds_model_n_vocab(model) : NULL, true);
    free(logits);
    ds_ctx_free(c);
    return e;
}

/* Tensor name of a GGUF file as float (F32 only; malloc'd); ne[0..1]. */
static float *read_tensor(const char *path, const char *name, int64_t ne[2])
{
    struct ds_reader *r = NULL;
    struct ds_gguf g = {0};
    float *buf = NULL;
    long i;

    if (ds_gguf_init(&g) != DS_OK || ds_reader_open(&r, path) != DS_OK ||
        ds_gguf_read(r, &g) != DS_OK || (i = ds_gguf_find(&g, name)) < 0 ||
        g.tensors[i].type != DS_TYPE_F32)
        goto out;
    buf = malloc(g.tensors[i].nbytes ? g.tensors[i].nbytes : 1);
    if (buf && ds_gguf_read_tensor(r, &g, (size_t)i, buf) != DS_OK) {
        free(buf);
        buf = NULL;
    }
    if (buf) {
        ne[0] = g.tensors[i].ne[0];
        ne[1] = g.tensors[i].ne[1];
    }
out:
    ds_gguf_release(&g);
    ds_reader_free(r);
    return buf;
}

static ds_err read_header(const char *path, struct ds_gguf *g)
{
    struct ds_reader *r = NULL;
    ds_err e = ds_gguf_init(g);
    if (e == DS_OK)
        e = ds_reader_open(&r, path);
    if (e == DS_OK)
        e = ds_gguf_read(r, g);
    ds_reader_free(r);
    return e;
}

static int files_equal(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = ds_read_file(a, 1 << 26, &x, &nx) == DS_OK &&
             ds_read_file(b, 1 << 26, &y, &ny) == DS_OK && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}

/* Counts of tensor name in an imatrix file, as integers (n_mat of them). */
static int64_t *file_counts(const char *path, const char *name, int64_t *n_mat)
{
    char tn[128];
    int64_t ne[2];
    float *c;
    int64_t *out;
    snprintf(tn, sizeof(tn), "%s.counts", name);
    c = read_tensor(path, tn, ne);
    if (!c)
        return NULL;
    *n_mat = ne[0] * ne[1];
    out = malloc((size_t)*n_mat * sizeof(*out));
    for (int64_t k = 0; out && k < *n_mat; k++)
        out[k] = (int64_t)c[k];
    free(c);
    return out;
}

/* ---- tests ---------------------------------------------------------------------------- */

TEST(dense_matches_recomputed_input)
{
    const int64_t d = hp->hidden_size, T = 5;
    int32_t tok[5];
    struct ds_imatrix *im = NULL;
    float *emb = NULL, *norm = NULL, *s2 = NULL;
    double sum[192] = {0};
    int64_t ne[2], ne_n[2];
    const float *mean;

    ASSERT(d == 192);
    tokens_fill(tok, (size_t)T, 7);
    ASSERT_OK(ds_imatrix_new(model, &im));
    ASSERT_OK(collect(im, tok, (size_t)T, false, false));

    // x_t = attn_norm * RMSNorm(token_embd[tok_t]), in double, independently of lib/
    emb = read_tensor(tmp("m.gguf"), "token_embd.weight", ne);
    norm = read_tensor(tmp("m.gguf"), "blk.0.attn_norm.weight", ne_n);
    ASSERT(emb && norm && ne[0] == d && ne_n[0] == d);
    for (int64_t t = 0; t < T; t++) {
        const float *e = emb + (size_t)tok[t] * (size_t)d;
        double ms = 0;
        for (int64_t j = 0; j < d; j++)
            ms += (double)e[j] * e[j];
        double inv = 1.0 / sqrt(ms / (double)d + hp->rms_norm_eps);
        for (int64_t j = 0; j < d; j++) {
            double x = (double)e[j] * inv * norm[j];
            sum[j] += x * x;
        }
    }
    free(emb);
    free(norm);

    const char *names[] = {"blk.0.attn_q_a.weight", "blk.0.attn_kv_a_mqa.weight"};
    for (int i = 0; i < 2; i++) {
        mean = ds_imatrix_get(im, names[i], d);
        ASSERT_MSG(mean != NULL, "%s", names[i]);
        for (int64_t j = 0; j < d; j++)
            ASSERT_MSG(fabs(mean[j] - sum[j] / (double)T) <= 1e-5 * (sum[j] / (double)T) + 1e-12,
                       "%s[%lld]: %g vs %g", names[i], (long long)j, mean[j], sum[j] / (double)T);
    }
    // The wrong size, an unknown name and the MTP layer (never run): no data.
    ASSERT(ds_imatrix_get(im, "blk.0.attn_q_a.weight", d + 1) == NULL);
    ASSERT(ds_imatrix_get(im, "blk.0.attn_q.weight", d) == NULL);
    ASSERT(ds_imatrix_get(im, "blk.3.attn_q_a.weight", d) == NULL);
    ASSERT(ds_imatrix_get(im, "blk.1.ffn_gate.weight", d) == NULL);

    // The file: in_sum2 {d, 1} holds the sums, counts {1, 1} the tokens.
    ASSERT_OK(ds_imatrix_save(im, tmp("a.gguf"), "tokens.txt", 1, T));
    s2 = read_tensor(tmp("a.gguf"), "blk.0.attn_q_a.weight.in_sum2", ne);
    ASSERT(s2 && ne[0] == d && ne[1] == 1);
    for (int64_t j = 0; j < d; j++)
        ASSERT_MSG(fabs(s2[j] - sum[j]) <= 1e-5 * sum[j] + 1e-12, "in_sum2[%lld]: %g vs %g",
                   (long long)j, s2[j], sum[j]);
    free(s2);
    s2 = read_tensor(tmp("a.gguf"), "blk.0.attn_q_a.weight.counts", ne);
    ASSERT(s2 && ne[0] == 1 && ne[1] == 1 && s2[0] == (float)T);
    free(s2);
    ds_imatrix_free(im);
}

TEST(file_header)
{
    struct ds_gguf g = {0};
    int64_t v;
    long i;
    enum ds_vtype elem;
    uint64_t n;
    const char *s;

    // written by the previous test
    ASSERT_OK(read_header(tmp("a.gguf"), &g));
    s = ds_meta_get_str(g.meta, "general.type", NULL);
    ASSERT(s && strcmp(s, "imatrix") == 0);
    i = ds_meta_find(g.meta, "imatrix.datasets");
    ASSERT(i >= 0 && ds_meta_arr(g.meta, (size_t)i, &elem, &n) && elem == DS_V_STR && n == 1);
    ASSERT_STR(ds_meta_arr_str(g.meta, (size_t)i, 0, NULL), "tokens.txt");
    i = ds_meta_find(g.meta, "imatrix.chunk_count");
    ASSERT(i >= 0 && ds_meta_type(g.meta, (size_t)i) == DS_V_U32);
    ASSERT(ds_meta_get_int(g.meta, "imatrix.chunk_count", &v) && v == 1);
    i = ds_meta_find(g.meta, "imatrix.chunk_size");
    ASSERT(i >= 0 && ds_meta_type(g.meta, (size_t)i) == DS_V_U32);
    ASSERT(ds_meta_get_int(g.meta, "imatrix.chunk_size", &v) && v == 5);
    // pairs sorted by name, nothing for the MTP layer
    ASSERT(g.n_tensors % 2 == 0 && g.n_tensors > 0);
    for (size_t t = 0; t + 1 < g.n_tensors; t += 2) {
        size_t len = strlen(g.tensors[t].name);
        ASSERT(len > 8 && strcmp(g.tensors[t].name + len - 8, ".in_sum2") == 0);
        ASSERT(strncmp(g.tensors[t].name, g.tensors[t + 1].name, len - 8) == 0);
        ASSERT_STR(g.tensors[t + 1].name + len - 8, ".counts");
        ASSERT(g.tensors[t].type == DS_TYPE_F32 && g.tensors[t + 1].type == DS_TYPE_F32);
        ASSERT(g.tensors[t + 1].ne[0] == 1 && g.tensors[t + 1].ne[1] == g.tensors[t].ne[1]);
        if (t >= 2)
            ASSERT(strcmp(g.tensors[t - 2].name, g.tensors[t].name) < 0);
        ASSERT(strncmp(g.tensors[t].name, "blk.3.", 6) != 0);
    }
    ASSERT(ds_gguf_find(&g, "output.weight.in_sum2") >= 0);
    ASSERT(ds_gguf_find(&g, "blk.1.ffn_down_exps.weight.in_sum2") >= 0);
    i = ds_gguf_find(&g, "blk.2.attn_k_b.weight.in_sum2");
    ASSERT(i >= 0 && g.tensors[i].ne[0] == hp->qk_nope_head_dim &&
           g.tensors[i].ne[1] == hp->n_heads);
    i = ds_gguf_find(&g, "blk.2.attn_v_b.weight.in_sum2");
    ASSERT(i >= 0 && g.tensors[i].ne[0] == hp->kv_lora_rank && g.tensors[i].ne[1] == hp->n_heads);
    ds_gguf_release(&g);
}

TEST(routed_experts)
{
    const int64_t d = hp->hidden_size, E = hp->n_routed_experts, k = hp->n_experts_per_tok,
                  Ie = hp->moe_intermediate_size, T = 3;
    int32_t tok[3];
    struct ds_imatrix *im = NULL;
    const char *f = tmp("r.gguf");
    char name[64];

    ASSERT(T * k < E); // some experts are certainly never routed to
    tokens_fill(tok, (size_t)T, 11);
    ASSERT_OK(ds_imatrix_new(model, &im));
    ASSERT_OK(collect(im, tok, (size_t)T, false, false));
    ASSERT_OK(ds_imatrix_save(im, f, NULL, 1, T));
    for (int l = 1; l <= 2; l++) {
        int64_t n_mat, n2, n3, total = 0, zeros = 0, *cnt, *cnt_up, *cnt_down, ne[2], ne2[2];
        float *s_exp, *s_inp, *s_sh;
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_exps.weight", l);
        cnt = file_counts(f, name, &n_mat);
        snprintf(name, sizeof(name), "blk.%d.ffn_up_exps.weight", l);
        cnt_up = file_counts(f, name, &n2);
        snprintf(name, sizeof(name), "blk.%d.ffn_down_exps.weight", l);
        cnt_down = file_counts(f, name, &n3);
        ASSERT(cnt && cnt_up && cnt_down && n_mat == E && n2 == E && n3 == E);
        for (int64_t e = 0; e < E; e++) {
            ASSERT(cnt[e] >= 0 && cnt[e] <= T && cnt_up[e] == cnt[e] && cnt_down[e] == cnt[e]);
            total += cnt[e];
            zeros += cnt[e] == 0;
        }
        ASSERT_EQ_INT(total, T * k);
        ASSERT(zeros >= E - T * k);

        // Unused experts get 1.0 (every column), used ones their means.
        snprintf(name, sizeof(name), "blk.%d.ffn_down_exps.weight", l);
        const float *mean = ds_imatrix_get(im, name, Ie * E);
        ASSERT(mean != NULL);
        for (int64_t e = 0; e < E; e++) {
            int ones = 0;
            for (int64_t j = 0; j < Ie; j++)
                ones += mean[e * Ie + j] == 1.0f;
            if (cnt[e] == 0)
                ASSERT_MSG(ones == Ie, "layer %d expert %lld", l, (long long)e);
            else
                ASSERT_MSG(ones < Ie, "layer %d expert %lld", l, (long long)e);
        }
        free(cnt);
        free(cnt_up);
        free(cnt_down);

        // Each token reaches k experts: sum over experts = k x the router's sums;
        // the shared experts see the same input as the router.
        snprintf(name, sizeof(name), "blk.%d.ffn_up_exps.weight.in_sum2", l);
        s_exp = read_tensor(f, name, ne);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_inp.weight.in_sum2", l);
        s_inp = read_tensor(f, name, ne2);
        ASSERT(s_exp && s_inp && ne[0] == d && ne[1] == E && ne2[0] == d && ne2[1] == 1);
        snprintf(name, sizeof(name), "blk.%d.ffn_gate_shexp.weight.in_sum2", l);
        s_sh = read_tensor(f, name, ne2);
        ASSERT(s_sh && ne2[0] == d && !memcmp(s_sh, s_inp, (size_t)d * sizeof(float)));
        for (int64_t j = 0; j < d; j++) {
            double all = 0;
            for (int64_t e = 0; e < E; e++)
                all += s_exp[e * d + j];
            ASSERT_MSG(fabs(all - (double)k * s_inp[j]) <= 1e-5 * k * s_inp[j] + 1e-12,
                       "layer %d column %lld: %g vs %g", l, (long long)j, all, k * s_inp[j]);
        }
        free(s_exp);
        free(s_inp);
        free(s_sh);

        // Per-head attn_k_b/attn_v_b and dense-like tensors count every token.
        const char *per_token[] = {"attn_k_b",       "attn_v_b", "attn_output",
                                   "ffn_down_shexp", "attn_q_b", "ffn_gate_inp"};
        for (size_t i = 0; i < sizeof(per_token) / sizeof(*per_token); i++) {
            snprintf(name, sizeof(name), "blk.%d.%s.weight", l, per_token[i]);
            cnt = file_counts(f, name, &n_mat);
            ASSERT_MSG(cnt != NULL, "%s", name);
            for (int64_t h = 0; h < n_mat; h++)
                ASSERT_MSG(cnt[h] == T, "%s[%lld] = %lld", name, (long long)h, (long long)cnt[h]);
            free(cnt);
        }
    }
    ds_imatrix_free(im);
}

/* Every NAME.in_sum2 of file f: ds_imatrix_get of a and b agree exactly. */
static int same_means(struct ds_imatrix *a, struct ds_imatrix *b, const char *f, double tol)
{
    struct ds_gguf g = {0};
    int ok = read_header(f, &g) == DS_OK && g.n_tensors > 0;
    for (size_t i = 0; ok && i < g.n_tensors; i++) {
        char name[64];
        size_t len = strlen(g.tensors[i].name);
        int64_t n = g.tensors[i].ne[0] * g.tensors[i].ne[1];
        const float *x;
        float *copy;
        if (len <= 8 || strcmp(g.tensors[i].name + len - 8, ".in_sum2") != 0)
            continue;
        memcpy(name, g.tensors[i].name, len - 8);
        name[len - 8] = '\0';
        x = ds_imatrix_get(a, name, n);
        copy = x ? malloc((size_t)n * sizeof(float)) : NULL;
        if (!copy) {
            ok = 0;
            break;
        }
        memcpy(copy, x, (size_t)n * sizeof(float));
        x = ds_imatrix_get(b, name, n);
        if (!x)
            ok = 0;
        for (int64_t j = 0; ok && j < n; j++)
            if (!(fabs(copy[j] - x[j]) <= tol * fabs(copy[j]))) {
                fprintf(stderr, "     %s[%lld]: %.9g vs %.9g\n", name, (long long)j, copy[j], x[j]);
                ok = 0;
            }
        free(copy);
    }
    ds_gguf_release(&g);
    return ok;
}

TEST(save_load_roundtrip)
{
    int32_t tok[20];
    struct ds_imatrix *a = NULL, *b = NULL;
    struct ds_gguf g = {0};

    tokens_fill(tok, 20, 3);
    ASSERT_OK(ds_imatrix_new(model, &a));
    ASSERT_OK(collect(a, tok, 20, false, false));
    ASSERT_OK(ds_imatrix_save(a, tmp("rt1.gguf"), "calib.txt", 2, 10));
    ASSERT_OK(ds_imatrix_load(tmp("rt1.gguf"), &b));
    ASSERT(same_means(a, b, tmp("rt1.gguf"), 0));
    ASSERT(ds_imatrix_get(b, "blk.0.attn_q_a.weight", 7) == NULL);
    // Saved again (no new dataset): the same bytes.
    ASSERT_OK(ds_imatrix_save(b, tmp("rt2.gguf"), NULL, 2, 10));
    ASSERT(files_equal(tmp("rt1.gguf"), tmp("rt2.gguf")));
    // With a dataset, it is appended to the loaded ones.
    ASSERT_OK(ds_imatrix_save(b, tmp("rt3.gguf"), "more.txt", 3, 10));
    ASSERT_OK(read_header(tmp("rt3.gguf"), &g));
    long i = ds_meta_find(g.meta, "imatrix.datasets");
    enum ds_vtype elem;
    uint64_t n;
    ASSERT(i >= 0 && ds_meta_arr(g.meta, (size_t)i, &elem, &n) && n == 2);
    ASSERT_STR(ds_meta_arr_str(g.meta, (size_t)i, 0, NULL), "calib.txt");
    ASSERT_STR(ds_meta_arr_str(g.meta, (size_t)i, 1, NULL), "more.txt");
    ds_gguf_release(&g);
    // zstd-compressed files load too
    ASSERT_OK(ds_imatrix_save(a, tmp("rt4.gguf.zst"), "calib.txt", 2, 10));
    ds_imatrix_free(b);
    b = NULL;
    ASSERT_OK(ds_imatrix_load(tmp("rt4.gguf.zst"), &b));
    ASSERT(same_means(a, b, tmp("rt1.gguf"), 0));
    ds_imatrix_free(a);
    ds_imatrix_free(b);
}

/* Writes a GGUF with the given general.type (NULL: none) and F32 tensors. */
static ds_err write_file(const char *path, const char *type, int n, const char *const *names,
                         const int64_t (*shapes)[2], const float *const *data)
{
    struct ds_gguf g = {0};
    struct ds_writer *w = NULL;
    ds_err e = ds_gguf_init(&g);
    if (e == DS_OK && type)
        e = ds_meta_set_str(g.meta, "general.type", type);
    for (int i = 0; e == DS_OK && i < n; i++)
        e = ds_gguf_add_tensor(&g, names[i], DS_TYPE_F32, 2, shapes[i]);
    if (e == DS_OK)
        e = ds_gguf_layout(&g);
    if (e == DS_OK)
        e = ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0);
    if (e == DS_OK)
        e = ds_gguf_write_header(w, &g);
    for (int i = 0; e == DS_OK && i < n; i++)
        e = ds_gguf_write_tensor(w, &g, (size_t)i, data[i]);
    if (e == DS_OK)
        e = ds_writer_commit(w);
    ds_writer_free(w);
    ds_gguf_release(&g);
    return e;
}

TEST(load_and_save_errors)
{
    struct ds_imatrix *im = NULL;
    const float sums[8] = {1, 2, 3, 4, 5, 6, 7, 8}, bad[8] = {1, -2, 3, 4, 5, 6, 7, 8};
    const float one[1] = {2}, four[4] = {2, 0, 1, 4};
    const int64_t shapes[2][2] = {{2, 4}, {1, 4}}, shapes1[2][2] = {{2, 4}, {1, 1}};
    const char *names[2] = {"x.weight.in_sum2", "x.weight.counts"};
    const float *d_ok[2] = {sums, four}, *d_bad[2] = {bad, four}, *d_one[2] = {sums, one};
    const float *m;

    ASSERT_ERR(ds_imatrix_load(tmp("missing.gguf"), &im), DS_ERR_NOT_FOUND);
    ASSERT_ERR(ds_imatrix_load(tmp("m.gguf"), &im), DS_ERR_FORMAT); // a model
    ASSERT(im == NULL);
    ASSERT_OK(write_file(tmp("e1.gguf"), "imatrix", 1, names, shapes, d_ok));
    ASSERT_ERR(ds_imatrix_load(tmp("e1.gguf"), &im), DS_ERR_FORMAT); // no counts
    ASSERT_OK(write_file(tmp("e2.gguf"), "imatrix", 2, names, shapes, d_bad));
    ASSERT_ERR(ds_imatrix_load(tmp("e2.gguf"), &im), DS_ERR_FORMAT); // negative sum
    ASSERT_OK(write_file(tmp("e3.gguf"), "model", 2, names, shapes, d_ok));
    ASSERT_ERR(ds_imatrix_load(tmp("e3.gguf"), &im), DS_ERR_FORMAT); // another type
    ASSERT_OK(write_file(tmp("e4.gguf"), "imatrix", 1, names + 1, shapes + 1, d_ok + 1));
    ASSERT_ERR(ds_imatrix_load(tmp("e4.gguf"), &im), DS_ERR_FORMAT); // counts alone

    // Without general.type, 4 experts: means, and 1.0 for the one without tokens.
    ASSERT_OK(write_file(tmp("ok.gguf"), NULL, 2, names, shapes, d_ok));
    ASSERT_OK(ds_imatrix_load(tmp("ok.gguf"), &im));
    ASSERT(ds_imatrix_get(im, "x.weight", 7) == NULL);
    m = ds_imatrix_get(im, "x.weight", 8);
    ASSERT(m && m[0] == 0.5f && m[1] == 1.0f && m[2] == 1.0f && m[3] == 1.0f && m[4] == 5.0f &&
           m[5] == 6.0f && m[6] == 1.75f && m[7] == 2.0f);
    ds_imatrix_free(im);
    im = NULL;
    // One count for all matrices (older files) applies to each.
    ASSERT_OK(write_file(tmp("ok1.gguf"), "imatrix", 2, names, shapes1, d_one));
    ASSERT_OK(ds_imatrix_load(tmp("ok1.gguf"), &im));
    m = ds_imatrix_get(im, "x.weight", 8);
    ASSERT(m && m[0] == 0.5f && m[7] == 4.0f);
    ASSERT_ERR(ds_imatrix_save(im, tmp("x.gguf"), NULL, -1, 1), DS_ERR_ARG);
    ASSERT_ERR(ds_imatrix_save(im, tmp("x.gguf"), NULL, 1, (int64_t)1 << 32), DS_ERR_ARG);
    ASSERT(access(tmp("x.gguf"), F_OK) != 0);
    ds_imatrix_free(im);
    im = NULL;

    // A collector that has seen nothing has nothing to save.
    ASSERT_OK(ds_imatrix_new(model, &im));
    ASSERT(ds_imatrix_get(im, "blk.0.attn_q_a.weight", hp->hidden_size) == NULL);
    ASSERT_ERR(ds_imatrix_save(im, tmp("x.gguf"), NULL, 0, 0), DS_ERR_STATE);
    ASSERT(access(tmp("x.gguf"), F_OK) != 0);
    ds_imatrix_free(im);
    ds_imatrix_free(NULL);
}

TEST(prefill_equals_token_by_token)
{
    enum { T = 100 }; // two chunks of the batched forward (UBATCH 64)
    int32_t tok[T];
    struct ds_imatrix *a = NULL, *b = NULL, *c = NULL;
    const char *fa = tmp("pa.gguf"), *fb = tmp("pb.gguf"), *fc = tmp("pc.gguf");
    struct ds_gguf g = {0};

    tokens_fill(tok, T, 99);
    ASSERT_OK(ds_imatrix_new(model, &a));
    ASSERT_OK(ds_imatrix_new(model, &b));
    ASSERT_OK(ds_imatrix_new(model, &c));
    ASSERT_OK(collect(a, tok, T, false, false));
    ASSERT_OK(collect(b, tok, T, true, true));
    ASSERT_OK(collect(c, tok, T, false, true));
    ASSERT_OK(ds_imatrix_save(a, fa, NULL, 1, T));
    ASSERT_OK(ds_imatrix_save(b, fb, NULL, 1, T));
    ASSERT_OK(ds_imatrix_save(c, fc, NULL, 1, T));
    // Logits or not, the same rows: the same file.
    ASSERT(files_equal(fa, fc));
    // Token by token: the same routing (counts) and sums to float rounding.
    ASSERT_OK(read_header(fa, &g));
    for (size_t i = 0; i < g.n_tensors; i++) {
        size_t len = strlen(g.tensors[i].name);
        char name[64];
        int64_t na, nb, *ca, *cb;
        if (len <= 7 || strcmp(g.tensors[i].name + len - 7, ".counts") != 0)
            continue;
        memcpy(name, g.tensors[i].name, len - 7);
        name[len - 7] = '\0';
        ca = file_counts(fa, name, &na);
        cb = file_counts(fb, name, &nb);
        ASSERT_MSG(ca && cb && na == nb && !memcmp(ca, cb, (size_t)na * sizeof(*ca)), "%s", name);
        free(ca);
        free(cb);
    }
    ASSERT(ds_gguf_find(&g, "output.weight.counts") >= 0);
    ds_gguf_release(&g);
    ASSERT(same_means(a, b, fa, 1e-4));

    // Without a collector nothing is recorded.
    {
        struct ds_ctx *ctx = NULL;
        ASSERT_OK(ds_ctx_new(model, 16, &ctx));
        ds_ctx_set_imatrix(ctx, a);
        ds_ctx_set_imatrix(ctx, NULL);
        ASSERT_OK(ds_forward(ctx, tok, 8, NULL, false));
        ds_ctx_free(ctx);
    }
    ASSERT_OK(ds_imatrix_save(a, tmp("pd.gguf"), NULL, 1, T));
    ASSERT(files_equal(fa, tmp("pd.gguf")));
    ds_imatrix_free(a);
    ds_imatrix_free(b);
    ds_imatrix_free(c);
}

int main(void)
{
    char cmd[300];
    struct ds_convert_opts o = {.input = test_data("tiny-v3-fp8"),
                                .to = DS_FORMAT_GGUF,
                                .outtype = DS_TYPE_F32,
                                .write_flags = DS_WRITE_FORCE,
                                .provenance = "test_imatrix"};
    ds_err e;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ds-test-imatrix-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    o.output = tmp("m.gguf");
    e = ds_convert(&o, NULL);
    if (e == DS_OK)
        e = ds_model_load(tmp("m.gguf"), &model);
    if (e != DS_OK) {
        fprintf(stderr, "setup: %s: %s\n", ds_strerror(e), ds_errmsg());
        return 1;
    }
    hp = ds_model_hparams(model);
    RUN(dense_matches_recomputed_input);
    RUN(file_header);
    RUN(routed_experts);
    RUN(save_load_roundtrip);
    RUN(load_and_save_errors);
    RUN(prefill_equals_token_by_token);
    ds_model_free(model);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
