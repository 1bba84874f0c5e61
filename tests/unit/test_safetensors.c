/* test_safetensors.c - safetensors reader, writer and index against the test
 * checkpoints, exact round trips, and malformed inputs. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ds_safetensors.h"
#include "test.h"

static char tmpdir[256];

/* tmpdir/name, in rotating buffers. */
static const char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return b;
}

static int write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    if (n && fwrite(p, 1, n, f) != n) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* A safetensors file at tmpdir/name: length prefix (hlen, or strlen(json) when
 * hlen is UINT64_MAX), json, data_len bytes of i & 0xff. Returns the path. */
static const char *st_file_len(const char *name, uint64_t hlen, const char *json,
                               size_t data_len)
{
    size_t jl = strlen(json), n = 8 + jl + data_len;
    unsigned char *b = malloc(n);
    const char *path = tmp_path(name);

    if (hlen == UINT64_MAX)
        hlen = jl;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, json, jl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + jl + i] = (unsigned char)i;
    if (write_bytes(path, b, n) != 0)
        path = "/nonexistent/write-failed";
    free(b);
    return path;
}

static const char *st_file(const char *name, const char *json, size_t data_len)
{
    return st_file_len(name, UINT64_MAX, json, data_len);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long sz;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc(sz > 0 ? (size_t)sz : 1);
    if (b && sz > 0 && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* Sorted by (file, begin), no overlaps, name index consistent. */
static int st_consistent(const struct ds_st *st)
{
    for (size_t i = 0; i < st->n_tensors; i++) {
        const struct ds_st_tensor *t = &st->tensors[i];
        if (ds_st_find(st, t->name) != (long)i)
            return 0;
        if (t->file >= st->n_files || t->end < t->begin ||
            st->data_start[t->file] + t->end > st->file_size[t->file])
            return 0;
        if (i && (st->tensors[i - 1].file > t->file ||
                  (st->tensors[i - 1].file == t->file && st->tensors[i - 1].end > t->begin)))
            return 0;
    }
    return 1;
}

/* Compares tensor i's bytes from ds_st_read with a direct read of the file. */
static int read_matches(const struct ds_st *st, size_t i)
{
    const struct ds_st_tensor *t = &st->tensors[i];
    size_t n = (size_t)(t->end - t->begin), fn;
    unsigned char *a = malloc(n ? n : 1), *f = slurp(st->files[t->file], &fn);
    int ok = a && f && ds_st_read(st, i, a) == DS_OK &&
             st->data_start[t->file] + t->end <= fn &&
             memcmp(a, f + st->data_start[t->file] + t->begin, n) == 0;
    free(a);
    free(f);
    return ok;
}

TEST(dtypes)
{
    static const char *names[] = {"F64", "F32", "F16", "BF16", "I64",
                                  "I32", "I16", "I8",  "F8_E4M3"};
    static const char *bad[] = {"U8", "BOOL", "F8_E5M2", "Q9", "f32", ""};
    enum ds_type t;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ASSERT_OK(ds_st_dtype_parse(names[i], &t));
        ASSERT(ds_st_dtype_name(t) != NULL);
        ASSERT_STR(ds_st_dtype_name(t), names[i]);
    }
    ASSERT_OK(ds_st_dtype_parse("F8_E4M3", &t));
    ASSERT_EQ_INT(t, DS_TYPE_F8_E4M3);
    ASSERT_OK(ds_st_dtype_parse("BF16", &t));
    ASSERT_EQ_INT(t, DS_TYPE_BF16);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ASSERT_ERR(ds_st_dtype_parse(bad[i], &t), DS_ERR_UNSUPPORTED);
    ASSERT(ds_st_dtype_name(DS_TYPE_Q4_0) == NULL);
}

TEST(open_v2lite)
{
    struct ds_st st;
    long i;
    const struct ds_st_tensor *t;

    ds_st_init(&st);
    ASSERT_OK(ds_st_open(&st, test_data("tiny-v2lite")));
    ASSERT_EQ_INT(st.n_tensors, 83);
    ASSERT_EQ_INT(st.n_files, 1);
    ASSERT(!st.sharded);
    ASSERT_EQ_INT(st.n_meta, 1);
    ASSERT_STR(st.meta[0].key, "format");
    ASSERT_STR(st.meta[0].value, "pt");
    ASSERT_EQ_INT(st.data_start[0], 8 + 9240);
    ASSERT(st_consistent(&st));

    i = ds_st_find(&st, "model.embed_tokens.weight");
    ASSERT(i >= 0);
    t = &st.tensors[i];
    ASSERT_EQ_INT(t->type, DS_TYPE_F32);
    ASSERT_EQ_INT(t->n_dims, 2);
    ASSERT_EQ_INT(t->shape[0], 384);
    ASSERT_EQ_INT(t->shape[1], 160);
    ASSERT_EQ_INT(t->begin, 0);
    ASSERT_EQ_INT(t->end, 245760);
    ASSERT_EQ_INT(i, 0);

    i = ds_st_find(&st, "model.layers.0.self_attn.q_proj.weight");
    ASSERT(i >= 0);
    ASSERT_EQ_INT(st.tensors[i].shape[0], 128);
    ASSERT(read_matches(&st, (size_t)i));
    ASSERT(read_matches(&st, st.n_tensors - 1));
    ASSERT_EQ_INT(ds_st_find(&st, "nope"), -1);
    ASSERT_EQ_INT(ds_st_find(&st, ""), -1);
    ASSERT_ERR(ds_st_read(&st, st.n_tensors, NULL), DS_ERR_ARG);
    ds_st_release(&st);

    // the file itself
    ASSERT_OK(ds_st_open(&st, test_data("tiny-v2lite/model.safetensors")));
    ASSERT_EQ_INT(st.n_tensors, 83);
    ds_st_release(&st);
    ds_st_release(&st);
}

TEST(open_v3_fp8)
{
    static const char *how[] = {"tiny-v3-fp8", "tiny-v3-fp8/model.safetensors.index.json"};
    struct ds_st st;
    const struct ds_st_tensor *t;
    float scale[2];
    long i;

    ds_st_init(&st);
    for (size_t k = 0; k < 2; k++) {
        ASSERT_OK(ds_st_open(&st, test_data(how[k])));
        ASSERT_EQ_INT(st.n_tensors, 384);
        ASSERT_EQ_INT(st.n_files, 2);
        ASSERT(st.sharded);
        ASSERT_EQ_INT(st.index_total_size, 4170888);
        ASSERT(strstr(st.files[0], "model-00001-of-00002.safetensors") != NULL);
        ASSERT(strstr(st.files[1], "model-00002-of-00002.safetensors") != NULL);
        ASSERT_EQ_INT(st.n_meta, 1);
        ASSERT(st_consistent(&st));

        i = ds_st_find(&st, "model.layers.0.self_attn.q_a_proj.weight");
        ASSERT(i >= 0);
        t = &st.tensors[i];
        ASSERT_EQ_INT(t->type, DS_TYPE_F8_E4M3);
        ASSERT_EQ_INT(t->n_dims, 2);
        ASSERT_EQ_INT(t->shape[0], 96);
        ASSERT_EQ_INT(t->shape[1], 192);
        ASSERT_EQ_INT(t->file, 0);
        ASSERT(read_matches(&st, (size_t)i));

        i = ds_st_find(&st, "model.layers.0.self_attn.q_a_proj.weight_scale_inv");
        ASSERT(i >= 0);
        t = &st.tensors[i];
        ASSERT_EQ_INT(t->type, DS_TYPE_F32);
        ASSERT_EQ_INT(t->n_dims, 2);
        ASSERT_EQ_INT(t->shape[0], 1);
        ASSERT_EQ_INT(t->shape[1], 2);
        ASSERT_EQ_INT(t->end - t->begin, 8);
        ASSERT_OK(ds_st_read(&st, (size_t)i, scale));
        ASSERT(scale[0] > 0 && scale[0] < 1e6f && scale[1] > 0 && scale[1] < 1e6f);

        i = ds_st_find(&st, "model.layers.2.mlp.experts.6.up_proj.weight");
        ASSERT(i >= 0);
        ASSERT_EQ_INT(st.tensors[i].file, 1);
        ASSERT(read_matches(&st, (size_t)i));
        ASSERT(read_matches(&st, st.n_tensors - 1));
        ds_st_release(&st);
    }

    // one shard on its own
    ASSERT_OK(ds_st_open(&st, test_data("tiny-v3-fp8/model-00002-of-00002.safetensors")));
    ASSERT_EQ_INT(st.n_tensors, 192);
    ASSERT(!st.sharded);
    ds_st_release(&st);
}

/* Rewrites a file with ds_st_write_header + ds_st_read into out. */
static ds_err rewrite(const struct ds_st *st, const char *out)
{
    struct ds_writer *w = NULL;
    struct ds_st_tensor *copy = malloc(st->n_tensors * sizeof(*copy) + 1);
    ds_err rc = copy ? DS_OK : DS_ERR_NOMEM;

    if (copy)
        memcpy(copy, st->tensors, st->n_tensors * sizeof(*copy));
    if (rc == DS_OK)
        rc = ds_writer_open(&w, out, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0);
    if (rc == DS_OK)
        rc = ds_st_write_header(w, copy, st->n_tensors, st->meta, st->n_meta);
    for (size_t i = 0; rc == DS_OK && i < st->n_tensors; i++) {
        size_t n = (size_t)(st->tensors[i].end - st->tensors[i].begin);
        void *buf = malloc(n ? n : 1);
        if (copy[i].begin != st->tensors[i].begin || copy[i].end != st->tensors[i].end)
            rc = DS_ERR_FORMAT;
        if (rc == DS_OK)
            rc = buf ? ds_st_read(st, i, buf) : DS_ERR_NOMEM;
        if (rc == DS_OK)
            rc = ds_writer_write(w, buf, n);
        free(buf);
    }
    if (rc == DS_OK)
        rc = ds_writer_commit(w);
    ds_writer_free(w);
    free(copy);
    return rc;
}

TEST(rewrite_exact)
{
    static const char *files[] = {"tiny-v2lite/model.safetensors",
                                  "tiny-v3-fp8/model-00001-of-00002.safetensors",
                                  "tiny-v3-fp8/model-00002-of-00002.safetensors"};
    struct ds_st st;

    ds_st_init(&st);
    for (size_t k = 0; k < 3; k++) {
        size_t na, nb;
        unsigned char *a, *b;
        int same;

        ASSERT_OK(ds_st_open(&st, test_data(files[k])));
        ASSERT_OK(rewrite(&st, tmp_path("rewrite.safetensors")));
        ds_st_release(&st);
        a = slurp(test_data(files[k]), &na);
        b = slurp(tmp_path("rewrite.safetensors"), &nb);
        same = a && b && na == nb && memcmp(a, b, na) == 0;
        free(a);
        free(b);
        ASSERT_MSG(same, "%s differs after a rewrite", files[k]);
    }
}

TEST(write_read_back)
{
    static const char *const key[] = {"format", "we\"ird\\key\n"};
    static const char *const val[] = {"pt", "caf\xc3\xa9 \xf0\x9f\x98\x80 \x01"};
    struct ds_st_kv meta[2];
    struct ds_st_tensor ts[6];
    struct ds_writer *w = NULL;
    struct ds_st st;
    unsigned char data[4096];
    uint64_t off = 0;
    size_t n;
    unsigned char *file;

    memset(ts, 0, sizeof(ts));
    ts[0] = (struct ds_st_tensor){.name = "b.weight", .type = DS_TYPE_BF16, .n_dims = 2,
                                  .shape = {3, 5}};
    ts[1] = (struct ds_st_tensor){.name = "a.scalar", .type = DS_TYPE_F32, .n_dims = 0};
    ts[2] = (struct ds_st_tensor){.name = "empty", .type = DS_TYPE_I64, .n_dims = 2,
                                  .shape = {0, 7}};
    ts[3] = (struct ds_st_tensor){.name = "q\"uo\\te\t\xc3\xa9", .type = DS_TYPE_F8_E4M3,
                                  .n_dims = 1, .shape = {13}};
    ts[4] = (struct ds_st_tensor){.name = "deep", .type = DS_TYPE_I16, .n_dims = 8,
                                  .shape = {1, 2, 1, 2, 1, 2, 1, 3}};
    ts[5] = (struct ds_st_tensor){.name = "f64", .type = DS_TYPE_F64, .n_dims = 1,
                                  .shape = {3}};
    for (size_t i = 0; i < 2; i++) {
        meta[i].key = (char *)key[i];
        meta[i].value = (char *)val[i];
    }
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + 3);

    for (int with_meta = 0; with_meta < 2; with_meta++) {
        ds_st_init(&st);
        ASSERT_OK(ds_writer_open(&w, tmp_path("rw.safetensors"), DS_WRITE_FORCE, 0, 0));
        ASSERT_OK(ds_st_write_header(w, ts, 6, with_meta ? meta : NULL, with_meta ? 2 : 0));
        off = 0;
        for (size_t i = 0; i < 6; i++) {
            ASSERT_EQ_INT(ts[i].begin, off);
            off = ts[i].end;
        }
        ASSERT_EQ_INT(off, 30 + 4 + 0 + 13 + 48 + 24);
        ASSERT_OK(ds_writer_write(w, data, (size_t)off));
        ASSERT_OK(ds_writer_commit(w));
        ds_writer_free(w);
        w = NULL;

        file = slurp(tmp_path("rw.safetensors"), &n);
        ASSERT(file != NULL);
        ASSERT_EQ_INT((n - off) % 8, 0);
        free(file);

        ASSERT_OK(ds_st_open(&st, tmp_path("rw.safetensors")));
        ASSERT_EQ_INT(st.n_tensors, 6);
        ASSERT_EQ_INT(st.n_meta, with_meta ? 2 : 0);
        for (size_t i = 0; with_meta && i < 2; i++) {
            ASSERT_STR(st.meta[i].key, key[i]);
            ASSERT_STR(st.meta[i].value, val[i]);
        }
        for (size_t i = 0; i < 6; i++) {
            long j = ds_st_find(&st, ts[i].name);
            unsigned char buf[128];
            ASSERT_MSG(j == (long)i, "'%s' at %ld", ts[i].name, j);
            ASSERT_STR(st.tensors[j].name, ts[i].name);
            ASSERT_EQ_INT(st.tensors[j].type, ts[i].type);
            ASSERT_EQ_INT(st.tensors[j].n_dims, ts[i].n_dims);
            for (uint32_t d = 0; d < ts[i].n_dims; d++)
                ASSERT_EQ_INT(st.tensors[j].shape[d], ts[i].shape[d]);
            ASSERT_EQ_INT(st.tensors[j].begin, ts[i].begin);
            ASSERT_EQ_INT(st.tensors[j].end, ts[i].end);
            ASSERT_OK(ds_st_read(&st, (size_t)j, buf));
            ASSERT(memcmp(buf, data + ts[i].begin, ts[i].end - ts[i].begin) == 0);
        }
        ds_st_release(&st);
    }

    // no tensors, with and without metadata
    for (int with_meta = 0; with_meta < 2; with_meta++) {
        ASSERT_OK(ds_writer_open(&w, tmp_path("empty.safetensors"), DS_WRITE_FORCE, 0, 0));
        ASSERT_OK(ds_st_write_header(w, NULL, 0, with_meta ? meta : NULL, with_meta ? 1 : 0));
        ASSERT_OK(ds_writer_commit(w));
        ds_writer_free(w);
        w = NULL;
        file = slurp(tmp_path("empty.safetensors"), &n);
        ASSERT(file != NULL);
        ASSERT_EQ_INT(n, with_meta ? 40 : 16);
        ASSERT(memcmp(file + 8, with_meta ? "{\"__metadata__\":{\"format\":\"pt\"}}" : "{}",
                      with_meta ? 32 : 2) == 0);
        free(file);
        ASSERT_OK(ds_st_open(&st, tmp_path("empty.safetensors")));
        ASSERT_EQ_INT(st.n_tensors, 0);
        ASSERT_EQ_INT(st.n_meta, with_meta ? 1 : 0);
        ASSERT_EQ_INT(ds_st_find(&st, "x"), -1);
        ds_st_release(&st);
    }
}

TEST(write_errors)
{
    struct ds_st_tensor ts[2];
    struct ds_writer *w = NULL;

    memset(ts, 0, sizeof(ts));
    ts[0] = (struct ds_st_tensor){.name = "a", .type = DS_TYPE_F32, .n_dims = 1, .shape = {2}};
    ts[1] = ts[0];
    ASSERT_OK(ds_writer_open(&w, tmp_path("werr.safetensors"), DS_WRITE_FORCE, 0, 0));
    ASSERT_ERR(ds_st_write_header(w, ts, 2, NULL, 0), DS_ERR_ARG);
    ts[1].name = "__metadata__";
    ASSERT_ERR(ds_st_write_header(w, ts, 2, NULL, 0), DS_ERR_ARG);
    ts[1].name = "b";
    ts[1].type = DS_TYPE_Q4_K;
    ASSERT_ERR(ds_st_write_header(w, ts, 2, NULL, 0), DS_ERR_UNSUPPORTED);
    ts[1].type = DS_TYPE_F32;
    ts[1].shape[0] = -1;
    ASSERT_ERR(ds_st_write_header(w, ts, 2, NULL, 0), DS_ERR_ARG);
    ts[1].n_dims = 9;
    ASSERT_ERR(ds_st_write_header(w, ts, 2, NULL, 0), DS_ERR_ARG);
    ASSERT_EQ_INT(ds_writer_tell(w), 0);
    ds_writer_free(w);
    ASSERT(access(tmp_path("werr.safetensors"), F_OK) != 0);
}

/* The index written for tiny-v3-fp8 maps the same names to the same files as
 * the fixture (which is not key-sorted), with sorted keys and transformers'
 * layout. */
static int index_matches(const char *ours, size_t n, const char *fixture, size_t nf)
{
    static const char head[] = "{\n  \"metadata\": {\n    \"total_size\": 4170888\n  },\n"
                               "  \"weight_map\": {\n    \"";
    cJSON *a = cJSON_ParseWithLength(ours, n), *b = cJSON_ParseWithLength(fixture, nf);
    const cJSON *wa = cJSON_GetObjectItem(a, "weight_map");
    const cJSON *wb = cJSON_GetObjectItem(b, "weight_map");
    const cJSON *e, *prev = NULL;
    int ok = a && b && wa && wb && n > sizeof(head) && memcmp(ours, head, sizeof(head) - 1) == 0 &&
             memcmp(ours + n - 8, "\"\n  }\n}\n", 8) == 0 &&
             cJSON_GetArraySize(wa) == cJSON_GetArraySize(wb) &&
             cJSON_GetObjectItem(cJSON_GetObjectItem(a, "metadata"), "total_size")->valuedouble ==
                 4170888.0;

    cJSON_ArrayForEach(e, wa) {
        const cJSON *f = ok ? cJSON_GetObjectItemCaseSensitive(wb, e->string) : NULL;
        if (!f || strcmp(f->valuestring, e->valuestring) != 0 ||
            (prev && strcmp(prev->string, e->string) >= 0))
            ok = 0;
        prev = e;
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return ok;
}

TEST(write_index)
{
    struct ds_st st;
    struct ds_writer *w = NULL;
    const char **names = NULL, **files = NULL;
    unsigned char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int same;

    ds_st_init(&st);
    ASSERT_OK(ds_st_open(&st, test_data("tiny-v3-fp8")));
    names = calloc(st.n_tensors, sizeof(*names));
    files = calloc(st.n_tensors, sizeof(*files));
    if (!names || !files) {
        free(names);
        free(files);
        ds_st_release(&st);
        ASSERT(0);
    }
    // reversed, so that the writer has to sort
    for (size_t i = 0; i < st.n_tensors; i++) {
        const struct ds_st_tensor *t = &st.tensors[st.n_tensors - 1 - i];
        names[i] = t->name;
        files[i] = strrchr(st.files[t->file], '/') + 1;
    }
    if (ds_writer_open(&w, tmp_path("index.json"), DS_WRITE_FORCE, 0, 0) == DS_OK &&
        ds_st_write_index(w, st.index_total_size, names, files, st.n_tensors) == DS_OK)
        ds_writer_commit(w);
    ds_writer_free(w);
    w = NULL;
    a = slurp(test_data("tiny-v3-fp8/model.safetensors.index.json"), &na);
    b = slurp(tmp_path("index.json"), &nb);
    same = a && b && index_matches((const char *)b, nb, (const char *)a, na);
    free(a);
    free(b);

    // duplicates are refused
    names[1] = names[0];
    if (ds_writer_open(&w, tmp_path("index.json"), DS_WRITE_FORCE, 0, 0) == DS_OK &&
        ds_st_write_index(w, 0, names, files, st.n_tensors) != DS_ERR_ARG)
        same = 0;
    ds_writer_free(w);
    w = NULL;
    free(names);
    free(files);
    ds_st_release(&st);
    ASSERT_MSG(same, "index differs from the fixture or a duplicate was accepted");

    // empty
    ASSERT_OK(ds_writer_open(&w, tmp_path("index.json"), DS_WRITE_FORCE, 0, 0));
    ASSERT_OK(ds_st_write_index(w, 0, NULL, NULL, 0));
    ASSERT_OK(ds_writer_commit(w));
    ds_writer_free(w);
    b = slurp(tmp_path("index.json"), &nb);
    ASSERT(b != NULL);
    same = nb == 64 && memcmp(b, "{\n  \"metadata\": {\n    \"total_size\": 0\n  },\n"
                                 "  \"weight_map\": {}\n}\n", nb) == 0;
    free(b);
    ASSERT(same);

    // escapes as Python's json.dumps writes them
    {
        const char *n1[] = {"caf\xc3\xa9\"\x01\xf0\x9f\x98\x80"}, *f1[] = {"s.safetensors"};
        static const char want[] = "{\n  \"metadata\": {\n    \"total_size\": 7\n  },\n"
                                   "  \"weight_map\": {\n    \"caf\\u00e9\\\"\\u0001"
                                   "\\ud83d\\ude00\": \"s.safetensors\"\n  }\n}\n";
        ASSERT_OK(ds_writer_open(&w, tmp_path("index.json"), DS_WRITE_FORCE, 0, 0));
        ASSERT_OK(ds_st_write_index(w, 7, n1, f1, 1));
        ASSERT_OK(ds_writer_commit(w));
        ds_writer_free(w);
        b = slurp(tmp_path("index.json"), &nb);
        ASSERT(b != NULL);
        same = nb == sizeof(want) - 1 && memcmp(b, want, nb) == 0;
        free(b);
        ASSERT_MSG(same, "escaped index differs");
    }
}

/* Writes a shard holding the named F32 tensors of 2 elements each. */
static ds_err write_shard(const char *path, const char *const *names, size_t n)
{
    struct ds_st_tensor ts[8];
    struct ds_writer *w = NULL;
    float v[2];
    ds_err rc;

    memset(ts, 0, sizeof(ts));
    for (size_t i = 0; i < n; i++)
        ts[i] = (struct ds_st_tensor){.name = (char *)names[i], .type = DS_TYPE_F32,
                                      .n_dims = 1, .shape = {2}};
    rc = ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0);
    if (rc == DS_OK)
        rc = ds_st_write_header(w, ts, n, NULL, 0);
    for (size_t i = 0; rc == DS_OK && i < n; i++) {
        v[0] = (float)i;
        v[1] = (float)strlen(names[i]);
        rc = ds_writer_write(w, v, sizeof(v));
    }
    if (rc == DS_OK)
        rc = ds_writer_commit(w);
    ds_writer_free(w);
    return rc;
}

static ds_err write_index(const char *path, const char *const *names, const char *const *files,
                          size_t n)
{
    struct ds_writer *w = NULL;
    ds_err rc = ds_writer_open(&w, path, DS_WRITE_FORCE, 0, 0);
    if (rc == DS_OK)
        rc = ds_st_write_index(w, 8 * n, names, files, n);
    if (rc == DS_OK)
        rc = ds_writer_commit(w);
    ds_writer_free(w);
    return rc;
}

static const char *const s1_names[] = {"x.a", "x.b", "x.c"};
static const char *const s2_names[] = {"y.a", "y.b"};
static const char *const all_names[] = {"x.a", "x.b", "x.c", "y.a", "y.b"};

TEST(sharded_set)
{
    static const char *const files[] = {"s-1.safetensors", "s-1.safetensors", "s-1.safetensors",
                                        "s-2.safetensors", "s-2.safetensors"};
    struct ds_st st;
    float v[2];
    long i;

    ASSERT(mkdir(tmp_path("set"), 0777) == 0);
    ASSERT_OK(write_shard(tmp_path("set/s-1.safetensors"), s1_names, 3));
    ASSERT_OK(write_shard(tmp_path("set/s-2.safetensors"), s2_names, 2));
    ASSERT_OK(write_index(tmp_path("set/model.safetensors.index.json"), all_names, files, 5));

    ds_st_init(&st);
    ASSERT_OK(ds_st_open(&st, tmp_path("set")));
    ASSERT(st.sharded);
    ASSERT_EQ_INT(st.n_files, 2);
    ASSERT_EQ_INT(st.n_tensors, 5);
    ASSERT_EQ_INT(st.index_total_size, 40);
    ASSERT(st_consistent(&st));
    i = ds_st_find(&st, "y.b");
    ASSERT(i >= 0);
    ASSERT_EQ_INT(st.tensors[i].file, 1);
    ASSERT_OK(ds_st_read(&st, (size_t)i, v));
    ASSERT(v[0] == 1.0f && v[1] == 3.0f);
    ds_st_release(&st);

    // trailing slash, and the index path itself
    ASSERT_OK(ds_st_open(&st, tmp_path("set/")));
    ASSERT_EQ_INT(st.n_tensors, 5);
    ds_st_release(&st);
    ASSERT_OK(ds_st_open(&st, tmp_path("set/model.safetensors.index.json")));
    ASSERT_EQ_INT(st.n_tensors, 5);
    ds_st_release(&st);
}

/* A bad index in tmpdir/name/ over the shards of s1_names and s2_names. */
static ds_err open_bad_index(struct ds_st *st, const char *name, const char *index_json)
{
    char dir[600], p[700];
    ds_err rc;

    snprintf(dir, sizeof(dir), "%s", tmp_path(name));
    if (mkdir(dir, 0777) != 0)
        return DS_ERR_IO;
    snprintf(p, sizeof(p), "%s/s-1.safetensors", dir);
    rc = write_shard(p, s1_names, 3);
    snprintf(p, sizeof(p), "%s/s-2.safetensors", dir);
    if (rc == DS_OK)
        rc = write_shard(p, s2_names, 2);
    snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir);
    if (rc == DS_OK && write_bytes(p, index_json, strlen(index_json)) != 0)
        rc = DS_ERR_IO;
    if (rc != DS_OK)
        return rc;
    return ds_st_open(st, dir);
}

#define WM_OK_X                                                                             \
    "\"x.a\":\"s-1.safetensors\",\"x.b\":\"s-1.safetensors\",\"x.c\":\"s-1.safetensors\""
#define WM_OK_Y "\"y.a\":\"s-2.safetensors\",\"y.b\":\"s-2.safetensors\""

TEST(bad_index)
{
    static const struct {
        const char *json;
        ds_err code;
    } cases[] = {
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y "}}", DS_OK},
        // a tensor the shard lacks, a shard tensor the index lacks
        {"{\"weight_map\":{" WM_OK_X ",\"x.d\":\"s-1.safetensors\"," WM_OK_Y "}}", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X ",\"y.a\":\"s-2.safetensors\"}}", DS_ERR_FORMAT},
        // in the other shard
        {"{\"weight_map\":{" WM_OK_X ",\"y.a\":\"s-1.safetensors\",\"y.b\":\"s-2.safetensors\"}}",
         DS_ERR_FORMAT},
        // listed twice
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y ",\"y.b\":\"s-2.safetensors\"}}", DS_ERR_FORMAT},
        // outside the directory
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y ",\"z\":\"../s-1.safetensors\"}}", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y ",\"z\":\"/etc/passwd\"}}", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y ",\"z\":\"..\"}}", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y ",\"z\":\"\"}}", DS_ERR_FORMAT},
        // structure
        {"{\"metadata\":{\"total_size\":40}}", DS_ERR_FORMAT},
        {"{\"weight_map\":[]}", DS_ERR_FORMAT},
        {"{\"weight_map\":{\"x.a\":1}}", DS_ERR_FORMAT},
        {"{\"metadata\":{\"total_size\":1.5},\"weight_map\":{" WM_OK_X "," WM_OK_Y "}}",
         DS_ERR_FORMAT},
        {"{\"metadata\":{\"total_size\":-1},\"weight_map\":{" WM_OK_X "," WM_OK_Y "}}",
         DS_ERR_FORMAT},
        {"{\"metadata\":7,\"weight_map\":{" WM_OK_X "," WM_OK_Y "}}", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y "}} x", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "," WM_OK_Y "}", DS_ERR_FORMAT},
        {"[]", DS_ERR_FORMAT},
        {"", DS_ERR_FORMAT},
        {"{\"weight_map\":{" WM_OK_X "},\"weight_map\":{" WM_OK_Y "}}", DS_ERR_FORMAT},
    };
    struct ds_st st;
    char name[32];

    ds_st_init(&st);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        snprintf(name, sizeof(name), "badidx%zu", k);
        ASSERT_ERR(open_bad_index(&st, name, cases[k].json), cases[k].code);
        ASSERT_MSG(cases[k].code == DS_OK || (st.n_tensors == 0 && st.n_files == 0),
                   "case %zu left state behind", k);
        ds_st_release(&st);
    }
    ASSERT_ERR(open_bad_index(&st, "badidx-wrong-shard",
                              "{\"weight_map\":{" WM_OK_X ",\"y.a\":\"s-1.safetensors\","
                              "\"y.b\":\"s-2.safetensors\"}}"), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "'y.a'") != NULL);
    ASSERT_ERR(open_bad_index(&st, "badidx-missing-tensor",
                              "{\"weight_map\":{" WM_OK_X ",\"x.zz\":\"s-1.safetensors\","
                              WM_OK_Y "}}"), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "'x.zz'") != NULL);
}

TEST(missing_shard)
{
    static const char index[] = "{\"metadata\":{\"total_size\":40},\"weight_map\":{"
                                "\"x.a\":\"model-00001-of-00002.safetensors\","
                                "\"x.b\":\"model-00001-of-00002.safetensors\","
                                "\"x.c\":\"model-00001-of-00002.safetensors\","
                                "\"y.a\":\"model-00002-of-00002.safetensors\"}}";
    struct ds_st st;
    char want[1024];

    ds_st_init(&st);
    ASSERT(mkdir(tmp_path("miss"), 0777) == 0);
    ASSERT_OK(write_shard(tmp_path("miss/model-00001-of-00002.safetensors"), s1_names, 3));
    ASSERT(write_bytes(tmp_path("miss/model.safetensors.index.json"), index, strlen(index)) == 0);
    ASSERT_ERR(ds_st_open(&st, tmp_path("miss")), DS_ERR_NOT_FOUND);
    snprintf(want, sizeof(want), "'%s/miss/model-00002-of-00002.safetensors': shard listed in "
             "'%s/miss/model.safetensors.index.json' is missing", tmpdir, tmpdir);
    ASSERT_STR(ds_errmsg(), want);
    ASSERT_EQ_INT(st.n_tensors, 0);
    ASSERT_EQ_INT(st.n_files, 0);
}

TEST(directories)
{
    static const char *const one[] = {"t"};
    struct ds_st st;

    ds_st_init(&st);
    ASSERT(mkdir(tmp_path("d0"), 0777) == 0);
    ASSERT_ERR(ds_st_open(&st, tmp_path("d0")), DS_ERR_NOT_FOUND);
    ASSERT_OK(write_shard(tmp_path("d0/weights.safetensors"), one, 1));
    ASSERT_OK(ds_st_open(&st, tmp_path("d0")));
    ASSERT_EQ_INT(st.n_tensors, 1);
    ds_st_release(&st);
    ASSERT_OK(write_shard(tmp_path("d0/other.safetensors"), one, 1));
    ASSERT_ERR(ds_st_open(&st, tmp_path("d0")), DS_ERR_FORMAT);
    ASSERT_OK(write_shard(tmp_path("d0/model.safetensors"), s1_names, 3));
    ASSERT_OK(ds_st_open(&st, tmp_path("d0")));
    ASSERT_EQ_INT(st.n_tensors, 3);
    ds_st_release(&st);
    ASSERT_ERR(ds_st_open(&st, tmp_path("nonexistent")), DS_ERR_NOT_FOUND);
    ASSERT_ERR(ds_st_open(&st, tmp_path("nonexistent.json")), DS_ERR_NOT_FOUND);
}

#define GOOD_JSON                                                                           \
    "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"               \
    "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[8,11]}}"

TEST(truncated_prefixes)
{
    struct ds_st st;
    const char *path = st_file("good.safetensors", GOOD_JSON, 11);
    size_t n;
    unsigned char *full = slurp(path, &n);

    ASSERT(full != NULL);
    ds_st_init(&st);
    ASSERT_OK(ds_st_open(&st, path));
    ASSERT_EQ_INT(st.n_tensors, 2);
    ASSERT_EQ_INT(st.n_meta, 1);
    ds_st_release(&st);
    for (size_t len = 0; len < n; len++) {
        ds_err rc;
        if (write_bytes(tmp_path("prefix.safetensors"), full, len) != 0)
            break;
        rc = ds_st_open(&st, tmp_path("prefix.safetensors"));
        ASSERT_MSG(rc == DS_ERR_TRUNCATED || rc == DS_ERR_FORMAT, "prefix %zu: %d %s", len,
                   (int)rc, ds_errmsg());
        ASSERT(st.n_tensors == 0 && st.tensors == NULL && st.n_files == 0);
    }
    free(full);
}

TEST(bad_headers)
{
    static const struct {
        const char *json;
        size_t data_len;
        ds_err code;
    } cases[] = {
        {"{\"a\":", 0, DS_ERR_FORMAT},
        {"{} x", 0, DS_ERR_FORMAT},
        {"[]", 0, DS_ERR_FORMAT},
        {"", 0, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DS_ERR_UNSUPPORTED},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8, DS_ERR_UNSUPPORTED},
        {"{\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8,
         DS_ERR_UNSUPPORTED},
        {"{\"a\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8,
         DS_ERR_UNSUPPORTED},
        {"{\"a\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        // offsets
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 9, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 9, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1e300,1e300]}}", 9,
         DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0,8\"}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        // shapes
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
         DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1125899906842624,1125899906842624],"
         "\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, DS_ERR_FORMAT},
        // entries
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, DS_ERR_FORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         DS_ERR_FORMAT},
        {"{\"a\":[1]}", 8, DS_ERR_FORMAT},
        {"{\"__metadata__\":{\"k\":1}}", 0, DS_ERR_FORMAT},
        {"{\"__metadata__\":[]}", 0, DS_ERR_FORMAT},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, DS_ERR_FORMAT},
        // fine: scalars, zero-size tensors, holes, spaces, extra keys
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, DS_OK},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, DS_OK},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8],\"x\":1}}    ", 16,
         DS_OK},
    };
    struct ds_st st;

    ds_st_init(&st);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const char *p = st_file("bad.safetensors", cases[k].json, cases[k].data_len);
        ds_err rc = ds_st_open(&st, p);
        ASSERT_MSG(rc == cases[k].code, "case %zu: got %d (%s), want %d", k, (int)rc,
                   ds_errmsg(), (int)cases[k].code);
        ASSERT(cases[k].code == DS_OK || (st.n_tensors == 0 && st.n_files == 0));
        ds_st_release(&st);
    }
}

TEST(error_messages)
{
    struct ds_st st;
    const char *p;
    char want[1024];
    static const char nul_json[] = "{\"a\":\0}";

    ds_st_init(&st);
    p = st_file_len("past.safetensors", 4096, "{}", 90);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_FORMAT);
    snprintf(want, sizeof(want), "'%s': header length 4096 past end of file (size 100)", p);
    ASSERT_STR(ds_errmsg(), want);

    p = st_file_len("huge.safetensors", (uint64_t)1 << 60, "{}", 0);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_LIMIT);
    p = st_file_len("limit.safetensors", DS_ST_MAX_HEADER + 1ull, "{}", 0);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_LIMIT);

    p = st_file("shape.safetensors",
                "{\"n\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_FORMAT);
    snprintf(want, sizeof(want),
             "'%s': tensor 'n' shape [2, 3] x F32 is 24 bytes but its data is 20 bytes", p);
    ASSERT_STR(ds_errmsg(), want);

    p = st_file("dtype.safetensors",
                "{\"name\":{\"dtype\":\"Q9\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_UNSUPPORTED);
    snprintf(want, sizeof(want), "'%s': tensor 'name' has unknown dtype 'Q9'", p);
    ASSERT_STR(ds_errmsg(), want);

    p = st_file("dup.safetensors",
                "{\"w\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"w\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "'w'") != NULL);

    p = st_file("overlap.safetensors",
                "{\"u\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                "\"v\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3);
    ASSERT_ERR(ds_st_open(&st, p), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "overlap") != NULL);

    // a NUL inside the header, through the header parser directly
    ASSERT_ERR(ds_st_parse_header(&st, nul_json, sizeof(nul_json) - 1, 0, 0, "h"),
               DS_ERR_FORMAT);
    ASSERT_EQ_INT(st.n_tensors, 0);
}

TEST(parse_header_only)
{
    static const char json[] = "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                               "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    struct ds_st st;
    unsigned char buf[4];

    ds_st_init(&st);
    ASSERT_OK(ds_st_parse_header(&st, json, sizeof(json) - 1, 8, 0, "h"));
    ASSERT_EQ_INT(st.n_tensors, 2);
    ASSERT_STR(st.tensors[0].name, "a");
    ASSERT_EQ_INT(ds_st_find(&st, "b"), 1);
    ASSERT_ERR(ds_st_read(&st, 0, buf), DS_ERR_STATE);
    // the same names again, in another file: duplicates
    ASSERT_ERR(ds_st_parse_header(&st, json, sizeof(json) - 1, 8, 1, "h2"), DS_ERR_FORMAT);
    ds_st_release(&st);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/ds_test_st.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(dtypes);
    RUN(open_v2lite);
    RUN(open_v3_fp8);
    RUN(rewrite_exact);
    RUN(write_read_back);
    RUN(write_errors);
    RUN(write_index);
    RUN(sharded_set);
    RUN(bad_index);
    RUN(missing_shard);
    RUN(directories);
    RUN(truncated_prefixes);
    RUN(bad_headers);
    RUN(error_messages);
    RUN(parse_header_only);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_report();
}
