/* test_convert.c - ds_convert end to end on the test checkpoints: every tensor
 * survives HF -> GGUF -> HF bit for bit when the type is unchanged, GGUF
 * layouts follow llama.cpp (stacked experts, k_b/v_b split), and FP8
 * dequantization matches fp8 x scale. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "test.h"
#include "tmpdir.h"

static ds_err convert(const char *in, const char *out, enum ds_format to, int outtype)
{
    struct ds_convert_opts o = {.input = in, .output = out, .to = to, .outtype = outtype,
                                .write_flags = DS_WRITE_FORCE, .provenance = "test"};
    return ds_convert(&o, NULL);
}

/* Every tensor of a is in b with the same dtype, shape and bytes, and the
 * counts match. */
static int same_tensors(const char *a, const char *b)
{
    struct ds_st x, y;
    int ok = 1;
    ds_st_init(&x);
    ds_st_init(&y);
    if (ds_st_open(&x, a) || ds_st_open(&y, b)) {
        fprintf(stderr, "open: %s\n", ds_errmsg());
        ok = 0;
        goto out;
    }
    if (x.n_tensors != y.n_tensors) {
        fprintf(stderr, "tensor count %zu != %zu\n", x.n_tensors, y.n_tensors);
        ok = 0;
    }
    for (size_t i = 0; ok && i < x.n_tensors; i++) {
        const struct ds_st_tensor *t = &x.tensors[i];
        long j = ds_st_find(&y, t->name);
        if (j < 0) {
            fprintf(stderr, "missing %s\n", t->name);
            ok = 0;
            break;
        }
        const struct ds_st_tensor *u = &y.tensors[j];
        if (t->type != u->type || t->n_dims != u->n_dims ||
            memcmp(t->shape, u->shape, sizeof(t->shape[0]) * t->n_dims) ||
            t->end - t->begin != u->end - u->begin) {
            fprintf(stderr, "%s: type/shape differ\n", t->name);
            ok = 0;
            break;
        }
        size_t n = t->end - t->begin;
        char *p = malloc(n ? n : 1), *q = malloc(n ? n : 1);
        if (ds_st_read(&x, i, p) || ds_st_read(&y, (size_t)j, q) || memcmp(p, q, n)) {
            fprintf(stderr, "%s: bytes differ\n", t->name);
            ok = 0;
        }
        free(p);
        free(q);
    }
out:
    ds_st_release(&x);
    ds_st_release(&y);
    return ok;
}

TEST(roundtrip_v2lite_f32)
{
    ASSERT_OK(convert(test_data("tiny-v2lite"), tmp("v2.gguf"), DS_FORMAT_GGUF, -1));
    ASSERT_OK(convert(tmp("v2.gguf"), tmp("v2"), DS_FORMAT_SAFETENSORS, -1));
    ASSERT(same_tensors(test_data("tiny-v2lite"), tmp("v2")));
}

TEST(roundtrip_v3_fp8_kept)
{
    ASSERT_OK(convert(test_data("tiny-v3-fp8"), tmp("v3.gguf"), DS_FORMAT_GGUF, DS_TYPE_F8_E4M3));
    ASSERT_OK(convert(tmp("v3.gguf"), tmp("v3"), DS_FORMAT_SAFETENSORS, -1));
    ASSERT(same_tensors(test_data("tiny-v3-fp8"), tmp("v3")));
}

TEST(roundtrip_through_zstd)
{
    ASSERT_OK(convert(test_data("tiny-v2lite"), tmp("z.gguf.zst"), DS_FORMAT_GGUF, -1));
    ASSERT_OK(convert(tmp("z.gguf.zst"), tmp("z"), DS_FORMAT_SAFETENSORS, -1));
    ASSERT(same_tensors(test_data("tiny-v2lite"), tmp("z")));
}

/* config.json back: every field of the original has the same value */
TEST(config_roundtrip)
{
    char *a = NULL, *b = NULL;
    size_t na, nb;
    struct ds_hparams x, y;
    ASSERT_OK(convert(test_data("tiny-v3-fp8"), tmp("c.gguf"), DS_FORMAT_GGUF, DS_TYPE_F8_E4M3));
    ASSERT_OK(convert(tmp("c.gguf"), tmp("c"), DS_FORMAT_SAFETENSORS, -1));
    ASSERT_OK(ds_read_file(test_data("tiny-v3-fp8/config.json"), 1 << 20, &a, &na));
    ASSERT_OK(ds_read_file(tmp("c/config.json"), 1 << 20, &b, &nb));
    ASSERT_OK(ds_hf_config_parse(a, na, "a", &x));
    ASSERT_OK(ds_hf_config_parse(b, nb, "b", &y));
    ASSERT(strstr(b, "\"torch_dtype\": \"float32\""));
    ASSERT(strstr(b, "\"quant_method\": \"fp8\""));
    ASSERT(strstr(b, "\"hidden_act\": \"silu\""));
    free(a);
    free(b);
    ASSERT(memcmp(&x, &y, sizeof(x)) == 0);
}

static float *read_gguf_f32(const char *path, const char *name, struct ds_tensor_info *info)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    float *f = NULL;
    void *raw = NULL;
    long i;
    ds_gguf_init(&g);
    if (ds_reader_open(&r, path) || ds_gguf_read(r, &g))
        goto out;
    i = ds_gguf_find(&g, name);
    if (i < 0)
        goto out;
    *info = g.tensors[i];
    raw = malloc(info->nbytes);
    uint64_t n = info->nbytes / ds_type_block_bytes(info->type);
    f = malloc(n * sizeof(float));
    if (ds_gguf_read_tensor(r, &g, (size_t)i, raw) ||
        ds_convert_row(DS_TYPE_F32, f, info->type, raw, n)) {
        free(f);
        f = NULL;
    }
out:
    free(raw);
    ds_gguf_release(&g);
    ds_reader_free(r);
    return f;
}

/* F32 GGUF of the FP8 checkpoint: a weight equals fp8 x scale exactly; the
 * stacked experts hold expert e at slab e; k_b/v_b are the per-head split. */
TEST(layouts_and_dequant)
{
    struct ds_st st;
    struct ds_tensor_info ti;
    float *w;
    ds_st_init(&st);
    ASSERT_OK(convert(test_data("tiny-v3-fp8"), tmp("f.gguf"), DS_FORMAT_GGUF, DS_TYPE_F32));
    ASSERT_OK(ds_st_open(&st, test_data("tiny-v3-fp8")));

    /* o_proj [192, 128] with scale [2, 1]: a ragged tile in rows */
    long qi = ds_st_find(&st, "model.layers.0.self_attn.o_proj.weight");
    long si = ds_st_find(&st, "model.layers.0.self_attn.o_proj.weight_scale_inv");
    ASSERT(qi >= 0 && si >= 0);
    uint8_t *q = malloc(192 * 128);
    float sc[2];
    ASSERT_OK(ds_st_read(&st, (size_t)qi, q));
    ASSERT_OK(ds_st_read(&st, (size_t)si, sc));
    w = read_gguf_f32(tmp("f.gguf"), "blk.0.attn_output.weight", &ti);
    ASSERT(w);
    ASSERT(ti.ne[0] == 128 && ti.ne[1] == 192 && ti.type == DS_TYPE_F32);
    for (int i = 0; i < 192; i++)
        for (int j = 0; j < 128; j++)
            ASSERT(w[i * 128 + j] == ds_fp8_e4m3_to_f32(q[i * 128 + j]) * sc[i / 128]);
    free(w);
    free(q);

    /* expert 5's up_proj is slab 5 of ffn_up_exps {192, 64, 16} */
    qi = ds_st_find(&st, "model.layers.1.mlp.experts.5.up_proj.weight");
    si = ds_st_find(&st, "model.layers.1.mlp.experts.5.up_proj.weight_scale_inv");
    q = malloc(64 * 192);
    ASSERT_OK(ds_st_read(&st, (size_t)qi, q));
    ASSERT_OK(ds_st_read(&st, (size_t)si, sc));
    w = read_gguf_f32(tmp("f.gguf"), "blk.1.ffn_up_exps.weight", &ti);
    ASSERT(w && ti.n_dims == 3 && ti.ne[0] == 192 && ti.ne[1] == 64 && ti.ne[2] == 16);
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 192; j++)
            ASSERT(w[5 * 64 * 192 + i * 192 + j] ==
                   ds_fp8_e4m3_to_f32(q[i * 192 + j]) * sc[j / 128]);
    free(w);
    free(q);

    /* kv_b [4 * (32 + 32), 64]: k_b {32, 64, 4} transposed per head, v_b {64, 32, 4} */
    qi = ds_st_find(&st, "model.layers.2.self_attn.kv_b_proj.weight");
    si = ds_st_find(&st, "model.layers.2.self_attn.kv_b_proj.weight_scale_inv");
    q = malloc(256 * 64);
    ASSERT_OK(ds_st_read(&st, (size_t)qi, q));
    ASSERT_OK(ds_st_read(&st, (size_t)si, sc));
    float *kb = read_gguf_f32(tmp("f.gguf"), "blk.2.attn_k_b.weight", &ti);
    ASSERT(kb && ti.ne[0] == 32 && ti.ne[1] == 64 && ti.ne[2] == 4);
    float *vb = read_gguf_f32(tmp("f.gguf"), "blk.2.attn_v_b.weight", &ti);
    ASSERT(vb && ti.ne[0] == 64 && ti.ne[1] == 32 && ti.ne[2] == 4);
    for (int h = 0; h < 4; h++)
        for (int c = 0; c < 64; c++)
            for (int d = 0; d < 32; d++) {
                int kr = h * 64 + d, vr = h * 64 + 32 + d;
                ASSERT(kb[(h * 64 + c) * 32 + d] == ds_fp8_e4m3_to_f32(q[kr * 64 + c]) * sc[kr / 128]);
                ASSERT(vb[(h * 32 + d) * 64 + c] == ds_fp8_e4m3_to_f32(q[vr * 64 + c]) * sc[vr / 128]);
            }
    free(kb);
    free(vb);
    free(q);
    ds_st_release(&st);
}

/* GGUF from a stream (a pipe) converts exactly like from a file */
TEST(stream_input)
{
    int fd[2];
    pid_t pid;
    struct ds_reader *r = NULL;
    ASSERT_OK(convert(test_data("tiny-v3-fp8"), tmp("s.gguf"), DS_FORMAT_GGUF, DS_TYPE_F8_E4M3));
    ASSERT(pipe(fd) == 0);
    pid = fork();
    if (pid == 0) {
        char cmd[600];
        close(fd[0]);
        dup2(fd[1], 1);
        snprintf(cmd, sizeof(cmd), "cat '%s'", tmp("s.gguf"));
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    dup2(fd[0], 0);
    close(fd[0]);
    ASSERT_OK(convert("-", tmp("s"), DS_FORMAT_SAFETENSORS, -1));
    ASSERT(same_tensors(test_data("tiny-v3-fp8"), tmp("s")));
    (void)r;
}

TEST(failure_leaves_nothing)
{
    ASSERT_ERR(convert(tmp("missing.gguf"), tmp("never.gguf"), DS_FORMAT_GGUF, -1),
               DS_ERR_NOT_FOUND);
    ASSERT(access(tmp("never.gguf"), F_OK) != 0);
    ASSERT(strstr(ds_errmsg(), "missing.gguf"));
}

/* ds-quantize's kind of hook: F32 vectors and norms, FP8 where the name
 * contains ud, Q8_0 elsewhere */
static enum ds_type fp8_where(void *ud, const struct ds_meta *meta, const char *name,
                              uint32_t n_dims, const int64_t *ne, enum ds_type planned,
                              const char **note)
{
    (void)meta, (void)ne, (void)planned;
    *note = NULL;
    if (n_dims < 2 || strstr(name, "_norm") || strstr(name, "ffn_gate_inp"))
        return DS_TYPE_F32;
    return strstr(name, (const char *)ud) ? DS_TYPE_F8_E4M3 : DS_TYPE_Q8_0;
}

/* GGUF of path: each FP8 tensor is followed by its "<name>_scale_inv" and no
 * other scale is there; returns the number of FP8 tensors, or -1. */
static int fp8_with_scales(const char *path)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    int n = 0;
    ds_gguf_init(&g);
    if (ds_reader_open(&r, path) || ds_gguf_read(r, &g))
        n = -1;
    for (size_t i = 0; n >= 0 && i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i], *prev = i ? t - 1 : NULL;
        size_t len = strlen(t->name);
        if (len > 10 && !strcmp(t->name + len - 10, "_scale_inv")) {
            if (!prev || prev->type != DS_TYPE_F8_E4M3 || strncmp(prev->name, t->name, len - 10) ||
                prev->name[len - 10]) {
                fprintf(stderr, "%s: stray %s\n", path, t->name);
                n = -1;
            }
        } else if (t->type == DS_TYPE_F8_E4M3) {
            n++;
            if (i + 1 == g.n_tensors || strncmp(g.tensors[i + 1].name, t->name, len) ||
                strcmp(g.tensors[i + 1].name + len, "_scale_inv")) {
                fprintf(stderr, "%s: %s has no scale after it\n", path, t->name);
                n = -1;
            }
        }
    }
    ds_gguf_release(&g);
    ds_reader_free(r);
    return n;
}

/* Type of tensor name in the GGUF path, or -1 when it is not there. */
static int type_in(const char *path, const char *name)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    long i = -1;
    int t = -1;
    ds_gguf_init(&g);
    if (!ds_reader_open(&r, path) && !ds_gguf_read(r, &g) && (i = ds_gguf_find(&g, name)) >= 0)
        t = (int)g.tensors[i].type;
    ds_gguf_release(&g);
    ds_reader_free(r);
    return t;
}

/* An FP8 tensor without a Hugging Face name (passed through as it is) keeps
 * its scale only while it stays FP8; so do the others, whatever the rules. */
TEST(scales_only_with_fp8)
{
    char *buf = NULL, *hit;
    size_t len;
    struct ds_tensor_info ti;
    struct ds_convert_opts o = {.to = DS_FORMAT_GGUF, .outtype = -1,
                                .write_flags = DS_WRITE_FORCE, .type_of = fp8_where};
    float *a, *b;
    char pt[512], out[512], kept[512]; /* tmp() reuses its buffers */
    snprintf(pt, sizeof(pt), "%s", tmp("pt.gguf"));
    snprintf(kept, sizeof(kept), "%s", tmp("k.gguf"));
    ASSERT_OK(convert(test_data("tiny-v3-fp8"), tmp("k.gguf"), DS_FORMAT_GGUF, DS_TYPE_F8_E4M3));
    ASSERT(fp8_with_scales(tmp("k.gguf")) == 42);
    /* rename the MTP eh_proj (and its scale) to a name nothing maps */
    ASSERT_OK(ds_read_file(tmp("k.gguf"), 64 << 20, &buf, &len));
    for (char *p = buf; (hit = memmem(p, len - (size_t)(p - buf), "nextn.eh_proj", 13));
         p = hit + 13)
        memcpy(hit, "nextn.zz_proj", 13);
    {
        FILE *f = fopen(tmp("pt.gguf"), "wb");
        ASSERT(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
    }
    free(buf);
    /* as stored: it stays FP8 with its scale */
    ASSERT_OK(convert(tmp("pt.gguf"), tmp("pt-kept.gguf"), DS_FORMAT_GGUF, -1));
    ASSERT(fp8_with_scales(tmp("pt-kept.gguf")) == 42);
    /* everything Q8_0: no scale anywhere, the passthrough one included */
    o.input = pt;
    o.output = out;
    snprintf(out, sizeof(out), "%s", tmp("pt-q8.gguf"));
    o.type_ud = "no such tensor";
    ASSERT_OK(ds_convert(&o, NULL));
    ASSERT(fp8_with_scales(tmp("pt-q8.gguf")) == 0);
    ASSERT(type_in(tmp("pt-q8.gguf"), "blk.3.nextn.zz_proj.weight") == DS_TYPE_Q8_0);
    /* only it FP8: its scale copied, and nothing else */
    snprintf(out, sizeof(out), "%s", tmp("pt-fp8.gguf"));
    o.type_ud = "zz_proj";
    ASSERT_OK(ds_convert(&o, NULL));
    ASSERT(fp8_with_scales(tmp("pt-fp8.gguf")) == 1);
    a = read_gguf_f32(tmp("pt-fp8.gguf"), "blk.3.nextn.zz_proj.weight_scale_inv", &ti);
    b = read_gguf_f32(tmp("k.gguf"), "blk.3.nextn.eh_proj.weight_scale_inv", &ti);
    ASSERT(a && b && ti.ne[0] == 3 && ti.ne[1] == 2 && !memcmp(a, b, 6 * sizeof(float)));
    free(a);
    free(b);
    /* mixed rules on the Hugging Face and GGUF inputs: stacks, kv_b whole or split */
    for (int in = 0; in < 2; in++) {
        o.input = in ? kept : test_data("tiny-v3-fp8");
        snprintf(out, sizeof(out), "%s", tmp("mix.gguf"));
        o.type_ud = "_exps";
        ASSERT_OK(ds_convert(&o, NULL));
        ASSERT(fp8_with_scales(tmp("mix.gguf")) == 9);
        a = read_gguf_f32(tmp("mix.gguf"), "blk.1.ffn_up_exps.weight_scale_inv", &ti);
        ASSERT(a && ti.n_dims == 3 && ti.ne[0] == 2 && ti.ne[1] == 1 && ti.ne[2] == 16);
        free(a);
        ASSERT(type_in(tmp("mix.gguf"), "blk.0.attn_k_b.weight") == DS_TYPE_Q8_0);
        ASSERT(type_in(tmp("mix.gguf"), "blk.0.attn_kv_b.weight") < 0);
        o.type_ud = "attn_kv_b";
        ASSERT_OK(ds_convert(&o, NULL));
        ASSERT(fp8_with_scales(tmp("mix.gguf")) == 4);
        ASSERT(type_in(tmp("mix.gguf"), "blk.0.attn_k_b.weight") < 0);
        ASSERT(type_in(tmp("mix.gguf"), "blk.0.attn_kv_b.weight") == DS_TYPE_F8_E4M3);
    }
}

int main(void)
{
    char cmd[300];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ds-test-convert-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    RUN(roundtrip_v2lite_f32);
    RUN(roundtrip_v3_fp8_kept);
    RUN(roundtrip_through_zstd);
    RUN(config_roundtrip);
    RUN(layouts_and_dequant);
    RUN(failure_leaves_nothing);
    RUN(stream_input);
    RUN(scales_only_with_fp8);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
