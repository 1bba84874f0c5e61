/*
 * test_gguf.c - GGUF writer and reader: a round trip of every metadata type
 * and several tensor types through a file, a pipe and a zstd stream; every
 * malformed-header case the reader must reject; the writer's checks.
 *
 *   test_gguf                       run the tests
 *   test_gguf --write-corpus DIR    write the fuzz seed corpus into DIR
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds_gguf.h"
#include "test.h"
#include "ds_banned.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];

    snprintf(b, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return b;
}

static uint64_t pad64(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

/* ---- a byte builder for hand-made headers --------------------------------------- */

struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void bb_put(struct bb *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void bb_u8(struct bb *b, uint8_t v)
{
    bb_put(b, &v, 1);
}

static void bb_u32(struct bb *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_put(b, x, 4);
}

static void bb_u64(struct bb *b, uint64_t v)
{
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}

static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_zero(struct bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

static void bb_free(struct bb *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static void hdr(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void kv_u32(struct bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, DS_V_U32);
    bb_u32(b, v);
}

static void kv_str(struct bb *b, const char *key, const char *s)
{
    bb_str(b, key);
    bb_u32(b, DS_V_STR);
    bb_str(b, s);
}

static void tinfo(struct bb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                  uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, (uint64_t)ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* Pads to align and appends n data bytes. */
static void data(struct bb *b, uint32_t align, size_t n)
{
    bb_zero(b, pad64(b->n, align) - b->n);
    for (size_t i = 0; i < n; i++)
        bb_u8(b, (uint8_t)(i * 13 + 5));
}

/* ---- reading bytes through a memfd (file) or a pipe (stream) ---------------------- */

static int mem_fd(const void *p, size_t n, bool stream)
{
    int fds[2];

    if (!stream) {
        int fd = memfd_create("gguf", MFD_CLOEXEC);
        if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n) || lseek(fd, 0, SEEK_SET) != 0)
            abort();
        return fd;
    }
    if (n > 65536 || pipe(fds) != 0) // the default pipe capacity holds it all
        abort();
    if (n && write(fds[1], p, n) != (ssize_t)n)
        abort();
    close(fds[1]);
    return fds[0];
}

/* Parses p[0..n) and reads every tensor in data order. *g_out (if not NULL)
 * receives the parsed header; otherwise it is released. */
static ds_err read_mem(const void *p, size_t n, bool stream, struct ds_gguf *g_out)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    size_t *order = NULL;
    ds_err rc;

    if (ds_gguf_init(&g) != DS_OK)
        abort();
    rc = ds_reader_open_fd(&r, mem_fd(p, n, stream), stream ? "pipe" : "file.gguf", true);
    if (rc != DS_OK)
        goto out;
    rc = ds_gguf_read(r, &g);
    if (rc != DS_OK)
        goto out;
    order = malloc(g.n_tensors * sizeof(*order) + 1);
    ds_gguf_data_order(&g, order);
    for (size_t k = 0; k < g.n_tensors && rc == DS_OK; k++) {
        void *buf = malloc(g.tensors[order[k]].nbytes + 1);
        rc = ds_gguf_read_tensor(r, &g, order[k], buf);
        free(buf);
    }
out:
    if (rc != DS_OK && getenv("TEST_VERBOSE"))
        fprintf(stderr, "    %s: %s\n", ds_strerror(rc), ds_errmsg());
    free(order);
    ds_reader_free(r);
    if (g_out && rc == DS_OK)
        *g_out = g;
    else
        ds_gguf_release(&g);
    return rc;
}

static bool errmsg_has(const char *s)
{
    if (strstr(ds_errmsg(), s))
        return true;
    fprintf(stderr, "message \"%s\" lacks \"%s\"\n", ds_errmsg(), s);
    return false;
}

/* Reads through both a file and a stream and expects err from both. */
#define ASSERT_BOTH(b, err)                                                             \
    do {                                                                                \
        ASSERT_ERR(read_mem((b)->p, (b)->n, false, NULL), err);                         \
        ASSERT_ERR(read_mem((b)->p, (b)->n, true, NULL), err);                          \
    } while (0)

static void *file_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    size_t cap = 0, len = 0, got;

    if (!f)
        return NULL;
    do {
        if (len == cap) {
            cap = cap * 2 + 4096;
            p = realloc(p, cap);
            if (!p)
                abort();
        }
        got = fread(p + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    *n = len;
    return p;
}

/* ---- the sample file ------------------------------------------------------------------ */

static const char *const str_arr[] = {"a", "", "tok\xc3\xa9", "<|end|>"};

/* Every metadata type: scalars, a string with a NUL, arrays of each scalar type
 * and of strings, empty arrays; alignment 64 unless mini. */
static ds_err sample_meta(struct ds_meta *m, bool mini)
{
    const uint8_t u8 = 200, b1 = 1, a_u8[] = {1, 2, 255}, a_bool[] = {1, 0, 1};
    const int8_t i8 = -5, a_i8[] = {-128, 0, 127};
    const uint16_t u16 = 60000, a_u16[] = {0, 1, 65535};
    const int16_t i16 = -30000, a_i16[] = {-32768, 7, 32767};
    const int32_t i32 = -2000000000, a_i32[] = {INT32_MIN, -1, INT32_MAX};
    const uint32_t a_u32[] = {0, 0xdeadbeef, UINT32_MAX};
    const float a_f32[] = {1.5f, -0.0f, 3.4e38f};
    const uint64_t u64 = (1ull << 63) + 5, a_u64[] = {0, 1ull << 40, UINT64_MAX};
    const int64_t i64 = -(1ll << 62), a_i64[] = {INT64_MIN, -2, INT64_MAX};
    const double f64 = -1.25e300, a_f64[] = {0.1, -2.5, 1e-300};
    ds_err rc;

    if ((rc = ds_meta_set_str(m, "general.architecture", "deepseek2")) ||
        (rc = ds_meta_set_str(m, "general.name", "tiny")))
        return rc;
    if (mini)
        return ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", 4, str_arr, NULL);
    if ((rc = ds_meta_set_u32(m, "general.alignment", 64)) ||
        (rc = ds_meta_set(m, "t.u8", DS_V_U8, &u8)) ||
        (rc = ds_meta_set(m, "t.i8", DS_V_I8, &i8)) ||
        (rc = ds_meta_set(m, "t.u16", DS_V_U16, &u16)) ||
        (rc = ds_meta_set(m, "t.i16", DS_V_I16, &i16)) ||
        (rc = ds_meta_set_u32(m, "t.u32", 4000000000u)) ||
        (rc = ds_meta_set(m, "t.i32", DS_V_I32, &i32)) ||
        (rc = ds_meta_set_f32(m, "t.f32", 3.5f)) ||
        (rc = ds_meta_set(m, "t.bool", DS_V_BOOL, &b1)) ||
        (rc = ds_meta_set_strn(m, "t.str", "hello\0world", 11)) ||
        (rc = ds_meta_set_str(m, "t.str_empty", "")) ||
        (rc = ds_meta_set(m, "t.u64", DS_V_U64, &u64)) ||
        (rc = ds_meta_set(m, "t.i64", DS_V_I64, &i64)) ||
        (rc = ds_meta_set(m, "t.f64", DS_V_F64, &f64)) ||
        (rc = ds_meta_set_arr(m, "a.u8", DS_V_U8, 3, a_u8)) ||
        (rc = ds_meta_set_arr(m, "a.i8", DS_V_I8, 3, a_i8)) ||
        (rc = ds_meta_set_arr(m, "a.u16", DS_V_U16, 3, a_u16)) ||
        (rc = ds_meta_set_arr(m, "a.i16", DS_V_I16, 3, a_i16)) ||
        (rc = ds_meta_set_arr(m, "a.u32", DS_V_U32, 3, a_u32)) ||
        (rc = ds_meta_set_arr(m, "a.i32", DS_V_I32, 3, a_i32)) ||
        (rc = ds_meta_set_arr(m, "a.f32", DS_V_F32, 3, a_f32)) ||
        (rc = ds_meta_set_arr(m, "a.bool", DS_V_BOOL, 3, a_bool)) ||
        (rc = ds_meta_set_arr(m, "a.u64", DS_V_U64, 3, a_u64)) ||
        (rc = ds_meta_set_arr(m, "a.i64", DS_V_I64, 3, a_i64)) ||
        (rc = ds_meta_set_arr(m, "a.f64", DS_V_F64, 3, a_f64)) ||
        (rc = ds_meta_set_str_arr(m, "a.str", 4, str_arr, NULL)) ||
        (rc = ds_meta_set_arr(m, "a.empty_u32", DS_V_U32, 0, NULL)) ||
        (rc = ds_meta_set_arr(m, "a.empty_f64", DS_V_F64, 0, NULL)) ||
        (rc = ds_meta_set_str_arr(m, "a.empty_str", 0, NULL, NULL)))
        return rc;
    return DS_OK;
}

struct tdesc {
    const char *name;
    enum ds_type type;
    uint32_t n_dims;
    int64_t ne[4];
};

static const struct tdesc sample_tensors[] = {
    {"token_embd.weight", DS_TYPE_F32, 2, {3, 5}},
    {"blk.0.attn_norm.weight", DS_TYPE_F16, 1, {7}},
    {"blk.0.ffn_down.weight", DS_TYPE_Q4_K, 2, {256, 2}},
    {"blk.0.empty", DS_TYPE_F32, 2, {0, 4}},
    {"blk.0.ids", DS_TYPE_I32, 3, {4, 3, 2}},
    {"blk.0.four_dims", DS_TYPE_BF16, 4, {2, 1, 3, 2}},
    {"blk.0.fp8", DS_TYPE_F8_E4M3, 2, {5, 3}},
};
#define N_SAMPLE (sizeof(sample_tensors) / sizeof(sample_tensors[0]))

static uint8_t tbyte(size_t i, uint64_t j)
{
    return (uint8_t)(i * 31 + j * 7 + 1);
}

static ds_err sample(struct ds_gguf *g, bool mini)
{
    size_t n = mini ? 2 : N_SAMPLE;
    ds_err rc;

    if ((rc = ds_gguf_init(g)) || (rc = sample_meta(g->meta, mini)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct tdesc *t = &sample_tensors[i];
        if ((rc = ds_gguf_add_tensor(g, t->name, t->type, t->n_dims, t->ne)))
            return rc;
    }
    return ds_gguf_layout(g);
}

/* Writes g with its tensor data (tbyte pattern, or from the reader src). */
static ds_err write_gguf(const char *path, unsigned flags, const struct ds_gguf *g,
                         struct ds_reader *src)
{
    struct ds_writer *w = NULL;
    uint8_t *buf = NULL;
    ds_err rc = ds_writer_open(&w, path, DS_WRITE_FORCE | flags, 0, 1);

    if (rc == DS_OK)
        rc = ds_gguf_write_header(w, g);
    for (size_t i = 0; i < g->n_tensors && rc == DS_OK; i++) {
        const struct ds_tensor_info *t = &g->tensors[i];
        buf = realloc(buf, t->nbytes + 1);
        if (src) {
            rc = ds_gguf_read_tensor(src, g, i, buf);
        } else {
            for (uint64_t j = 0; j < t->nbytes; j++)
                buf[j] = tbyte(i, j);
        }
        if (rc == DS_OK)
            rc = ds_gguf_write_tensor(w, g, i, buf);
    }
    if (rc == DS_OK)
        rc = ds_writer_commit(w);
    ds_writer_free(w);
    free(buf);
    return rc;
}

static ds_err write_sample(const char *path, unsigned flags, bool mini)
{
    struct ds_gguf g;
    ds_err rc = sample(&g, mini);

    if (rc == DS_OK)
        rc = write_gguf(path, flags, &g, NULL);
    ds_gguf_release(&g);
    return rc;
}

/* Byte-for-byte comparison of two metadata collections. */
static bool meta_equal(const struct ds_meta *a, const struct ds_meta *b)
{
    if (ds_meta_count(a) != ds_meta_count(b))
        return false;
    for (size_t i = 0; i < ds_meta_count(a); i++) {
        enum ds_vtype t = ds_meta_type(a, i), ea, eb;
        uint64_t na, nb;
        size_t la, lb;
        const char *sa, *sb;

        if (strcmp(ds_meta_key(a, i), ds_meta_key(b, i)) != 0 || t != ds_meta_type(b, i))
            return false;
        if (t == DS_V_STR) {
            sa = ds_meta_str(a, i, &la);
            sb = ds_meta_str(b, i, &lb);
            if (la != lb || memcmp(sa, sb, la) != 0)
                return false;
        } else if (t == DS_V_ARR) {
            if (!ds_meta_arr(a, i, &ea, &na) || !ds_meta_arr(b, i, &eb, &nb) || ea != eb ||
                na != nb)
                return false;
            if (ea == DS_V_STR) {
                for (uint64_t j = 0; j < na; j++) {
                    sa = ds_meta_arr_str(a, i, j, &la);
                    sb = ds_meta_arr_str(b, i, j, &lb);
                    if (la != lb || memcmp(sa, sb, la) != 0)
                        return false;
                }
            } else if (na > 0 && memcmp(ds_meta_arr_data(a, i), ds_meta_arr_data(b, i),
                                        na * ds_vtype_size(ea)) != 0) {
                return false;
            }
        } else if (memcmp(ds_meta_scalar(a, i), ds_meta_scalar(b, i), ds_vtype_size(t)) != 0) {
            return false;
        }
    }
    return true;
}

static bool gguf_equal(const struct ds_gguf *a, const struct ds_gguf *b)
{
    if (a->alignment != b->alignment || a->n_tensors != b->n_tensors ||
        a->data_offset != b->data_offset || a->data_size != b->data_size ||
        !meta_equal(a->meta, b->meta))
        return false;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const struct ds_tensor_info *x = &a->tensors[i], *y = &b->tensors[i];
        if (strcmp(x->name, y->name) != 0 || x->n_dims != y->n_dims || x->type != y->type ||
            x->offset != y->offset || x->nbytes != y->nbytes ||
            memcmp(x->ne, y->ne, sizeof(x->ne)) != 0)
            return false;
    }
    return true;
}

/* Reads all tensors of g from r (file order on streams) and checks the pattern. */
static bool tensors_match(struct ds_reader *r, const struct ds_gguf *g, bool reverse)
{
    size_t order[N_SAMPLE];
    bool ok = true;

    if (g->n_tensors > N_SAMPLE)
        return false;
    ds_gguf_data_order(g, order);
    for (size_t k = 0; k < g->n_tensors && ok; k++) {
        size_t i = order[reverse ? g->n_tensors - 1 - k : k];
        uint8_t *buf = malloc(g->tensors[i].nbytes + 1);
        ds_err e = ds_gguf_read_tensor(r, g, i, buf);
        if (e != DS_OK) {
            fprintf(stderr, "read_tensor %zu: %s\n", i, ds_errmsg());
            ok = false;
        }
        for (uint64_t j = 0; ok && j < g->tensors[i].nbytes; j++)
            ok = buf[j] == tbyte(i, j);
        free(buf);
    }
    return ok;
}

/* ---- round trips ----------------------------------------------------------------------- */

TEST(layout)
{
    struct ds_gguf g;
    uint64_t hs;

    ASSERT_OK(sample(&g, false));
    ASSERT_EQ_INT(g.alignment, 64);
    hs = ds_gguf_header_size(&g);
    ASSERT_EQ_INT(g.data_offset, pad64(hs, 64));
    ASSERT_EQ_INT(g.tensors[0].offset, 0);
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        uint64_t next = t->offset + pad64(t->nbytes, 64);
        ASSERT_EQ_INT(t->offset % 64, 0);
        if (i + 1 < g.n_tensors)
            ASSERT_EQ_INT(g.tensors[i + 1].offset, next);
        else
            ASSERT_EQ_INT(g.data_size, next);
    }
    ASSERT_EQ_INT(g.tensors[0].nbytes, 3 * 5 * 4);
    ASSERT_EQ_INT(g.tensors[1].nbytes, 7 * 2);
    ASSERT_EQ_INT(g.tensors[2].nbytes, 2 * 144);
    ASSERT_EQ_INT(g.tensors[3].nbytes, 0);
    ASSERT_EQ_INT(g.tensors[4].nbytes, 24 * 4);
    ASSERT_EQ_INT(g.tensors[5].ne[1], 1);
    ASSERT_EQ_INT(g.tensors[1].ne[3], 1);
    ASSERT_EQ_INT(ds_gguf_find(&g, "blk.0.ids"), 4);
    ASSERT_EQ_INT(ds_gguf_find(&g, "nope"), -1);
    ds_gguf_release(&g);

    // without general.alignment: 32
    ASSERT_OK(sample(&g, true));
    ASSERT_EQ_INT(g.alignment, 32);
    ASSERT_EQ_INT(g.data_offset % 32, 0);
    ASSERT_EQ_INT(g.tensors[1].offset, pad64(g.tensors[0].nbytes, 32));
    ds_gguf_release(&g);
}

TEST(roundtrip)
{
    struct ds_gguf want, got, got2;
    struct ds_reader *r = NULL;
    const char *path = tmp_path("rt.gguf"), *path2 = tmp_path("rt2.gguf");
    uint8_t *bytes = NULL, *bytes2 = NULL;
    size_t n = 0, n2 = 0;

    ASSERT_OK(sample(&want, false));
    ASSERT_OK(write_gguf(path, 0, &want, NULL));
    bytes = file_bytes(path, &n);
    ASSERT(bytes);
    ASSERT_EQ_INT(n, want.data_offset + want.data_size);
    ASSERT(memcmp(bytes, "GGUF\3\0\0\0", 8) == 0);

    // through a file: tensors in data order and in reverse
    ASSERT_OK(ds_reader_open(&r, path));
    ASSERT(ds_reader_is_file(r));
    ASSERT_OK(ds_gguf_init(&got));
    ASSERT_OK(ds_gguf_read(r, &got));
    ASSERT_EQ_INT(ds_reader_tell(r), got.data_offset);
    ASSERT_EQ_INT(got.version, 3);
    ASSERT(gguf_equal(&want, &got));
    ASSERT(tensors_match(r, &got, false));
    ASSERT(tensors_match(r, &got, true));

    // writing what was read gives the same bytes
    ASSERT_OK(ds_gguf_layout(&got));
    ASSERT(gguf_equal(&want, &got));
    ASSERT_OK(write_gguf(path2, 0, &got, r));
    bytes2 = file_bytes(path2, &n2);
    ASSERT(bytes2 && n2 == n && memcmp(bytes, bytes2, n) == 0);
    ds_reader_free(r);
    r = NULL;

    // through a pipe
    ASSERT_OK(ds_reader_open_fd(&r, mem_fd(bytes, n, true), "pipe", true));
    ASSERT(!ds_reader_is_file(r));
    ASSERT_OK(ds_gguf_init(&got2));
    ASSERT_OK(ds_gguf_read(r, &got2));
    ASSERT(gguf_equal(&want, &got2));
    ASSERT(tensors_match(r, &got2, false));
    ds_reader_free(r);
    r = NULL;

    ds_gguf_release(&got);
    ds_gguf_release(&got2);
    ds_gguf_release(&want);
    free(bytes);
    free(bytes2);
}

TEST(roundtrip_zstd)
{
    struct ds_gguf want, got;
    struct ds_reader *r = NULL;
    const char *path = tmp_path("rt.gguf.zst");

    ASSERT_OK(sample(&want, false));
    ASSERT_OK(write_gguf(path, 0, &want, NULL));
    ASSERT_OK(ds_reader_open(&r, path));
    ASSERT(ds_reader_is_compressed(r));
    ASSERT_OK(ds_gguf_init(&got));
    ASSERT_OK(ds_gguf_read(r, &got));
    ASSERT(gguf_equal(&want, &got));
    ASSERT(tensors_match(r, &got, false));
    ds_reader_free(r);
    ds_gguf_release(&got);
    ds_gguf_release(&want);
}

TEST(stream_order)
{
    struct ds_gguf g;
    struct ds_reader *r = NULL;
    uint8_t *bytes, buf[512];
    size_t n;
    const char *path = tmp_path("order.gguf");

    ASSERT_OK(write_sample(path, 0, false));
    bytes = file_bytes(path, &n);
    ASSERT(bytes);
    ASSERT_OK(ds_reader_open_fd(&r, mem_fd(bytes, n, true), "pipe", true));
    ASSERT_OK(ds_gguf_init(&g));
    ASSERT_OK(ds_gguf_read(r, &g));
    ASSERT_OK(ds_gguf_read_tensor(r, &g, 2, buf)); // skipping 0 and 1 is fine
    ASSERT_ERR(ds_gguf_read_tensor(r, &g, 0, buf), DS_ERR_STATE);
    ASSERT(errmsg_has("tensors must be read in file order on a stream"));
    ASSERT_OK(ds_gguf_read_tensor(r, &g, 4, buf));
    ASSERT_ERR(ds_gguf_read_tensor(r, &g, 99, buf), DS_ERR_ARG);
    ds_reader_free(r);
    ds_gguf_release(&g);
    free(bytes);
}

/* Offsets in any order in the info table, aligned and disjoint, are accepted;
 * data order follows the offsets. */
TEST(unordered_offsets)
{
    struct bb b = {0};
    struct ds_gguf g;
    const int64_t ne[] = {16};
    size_t order[3];

    hdr(&b, 3, 3, 0);
    tinfo(&b, "c", 1, ne, DS_TYPE_F32, 128);
    tinfo(&b, "a", 1, ne, DS_TYPE_F32, 0);
    tinfo(&b, "b", 1, ne, DS_TYPE_F32, 64);
    data(&b, 32, 192);
    ASSERT_OK(read_mem(b.p, b.n, false, &g));
    ds_gguf_data_order(&g, order);
    ASSERT(order[0] == 1 && order[1] == 2 && order[2] == 0);
    ASSERT_EQ_INT(g.data_size, 192);
    ds_gguf_release(&g);
    ASSERT_OK(read_mem(b.p, b.n, true, NULL));
    bb_free(&b);
}

/* A GGUF that starts after other bytes: alignment counts from its magic. */
TEST(nonzero_start)
{
    struct bb b = {0}, c = {0};
    struct ds_gguf g;
    struct ds_reader *r = NULL;
    const int64_t ne[] = {8};
    uint8_t buf[32];

    hdr(&b, 3, 1, 0);
    tinfo(&b, "t", 1, ne, DS_TYPE_F32, 0);
    data(&b, 32, 32);
    bb_put(&c, "12345678", 8);
    bb_put(&c, b.p, b.n);
    for (int stream = 0; stream < 2; stream++) {
        ASSERT_OK(ds_reader_open_fd(&r, mem_fd(c.p, c.n, stream), "x", true));
        ASSERT_OK(ds_reader_skip(r, 8));
        ASSERT_OK(ds_gguf_init(&g));
        ASSERT_OK(ds_gguf_read(r, &g));
        ASSERT_EQ_INT(g.data_offset, c.n - 32);
        ASSERT_OK(ds_gguf_read_tensor(r, &g, 0, buf));
        ASSERT(memcmp(buf, b.p + b.n - 32, 32) == 0);
        ds_gguf_release(&g);
        ds_reader_free(r);
    }
    bb_free(&b);
    bb_free(&c);
}

/* Version 2 has the same layout; a file without tensors may omit the padding. */
TEST(v2_and_vocab_only)
{
    struct bb b = {0};
    struct ds_gguf g;

    hdr(&b, 2, 0, 1);
    kv_str(&b, "general.name", "vocab");
    ASSERT_OK(read_mem(b.p, b.n, false, &g));
    ASSERT_EQ_INT(g.version, 2);
    ASSERT_EQ_INT(g.n_tensors, 0);
    ASSERT_EQ_INT(g.data_size, 0);
    ds_gguf_release(&g);
    ASSERT_OK(read_mem(b.p, b.n, true, NULL));
    bb_zero(&b, 7); // part of the padding
    ASSERT_OK(read_mem(b.p, b.n, true, NULL));
    ASSERT_OK(read_mem(b.p, b.n, false, NULL));
    bb_free(&b);
}

/* ---- malformed input --------------------------------------------------------------------- */

TEST(bad_magic_and_version)
{
    struct bb b = {0};

    bb_put(&b, "GGUX", 4);
    bb_u32(&b, 3);
    bb_zero(&b, 16);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("'pipe': not a GGUF file (bad magic)"));
    bb_free(&b);

    hdr(&b, 1, 0, 0);
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    ASSERT(errmsg_has("re-convert"));
    bb_free(&b);

    hdr(&b, 4, 0, 0);
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    ASSERT(errmsg_has("'pipe': GGUF version 4 is newer than supported (3)"));
    bb_free(&b);

    hdr(&b, 0x03000000, 0, 0); // a big-endian file's version 3
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    ASSERT(errmsg_has("big-endian"));
    bb_free(&b);

    hdr(&b, 0, 0, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    ASSERT_BOTH(&b, DS_ERR_TRUNCATED); // empty input
}

/* Every prefix of a valid file that cuts into the header or the tensor data
 * fails cleanly, on a file and on a stream; only the padding after the last
 * tensor may be missing. */
TEST(truncated_prefixes)
{
    const char *path = tmp_path("prefix.gguf");
    struct ds_gguf g;
    uint8_t *bytes;
    size_t n;
    uint64_t end = 0;

    ASSERT_OK(write_sample(path, 0, false));
    bytes = file_bytes(path, &n);
    ASSERT(bytes && n > 1000 && n < 65536);
    ASSERT_OK(read_mem(bytes, n, false, NULL));
    ASSERT_OK(read_mem(bytes, n, true, NULL));
    ASSERT_OK(read_mem(bytes, n, false, &g));
    for (size_t i = 0; i < g.n_tensors; i++) {
        if (g.data_offset + g.tensors[i].offset + g.tensors[i].nbytes > end)
            end = g.data_offset + g.tensors[i].offset + g.tensors[i].nbytes;
    }
    ds_gguf_release(&g);
    ASSERT(end > n - 64 && end < n); // the last tensor's padding
    for (size_t k = 0; k < n; k++) {
        ds_err ef = read_mem(bytes, k, false, NULL), es = read_mem(bytes, k, true, NULL);
        ds_err want = k < end ? DS_ERR_TRUNCATED : DS_OK;
        ASSERT_MSG(ef == want && es == want, "prefix %zu: file %d, stream %d: %s", k, (int)ef,
                   (int)es, ds_errmsg());
    }
    free(bytes);
}

TEST(counts)
{
    struct bb b = {0};

    hdr(&b, 3, 1ull << 60, 0);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    ASSERT(errmsg_has("1152921504606846976 tensors"));
    bb_free(&b);

    hdr(&b, 3, 0, 1ull << 60);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    // the largest accepted counts allocate nothing up front
    hdr(&b, 3, 1u << 24, 0);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);
    hdr(&b, 3, 0, 1u << 24);
    kv_u32(&b, "a", 1);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);
}

TEST(long_strings)
{
    struct bb b = {0};

    // a 2^40-byte key
    hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 40);
    bb_put(&b, "abc", 3);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    // a 2^40-byte string value
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, DS_V_STR);
    bb_u64(&b, 1ull << 40);
    bb_put(&b, "abc", 3);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    // 512 MiB announced, 3 bytes there: past end of file / end of stream,
    // without allocating the announced size up front
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, DS_V_STR);
    bb_u64(&b, 1ull << 29);
    bb_put(&b, "abc", 3);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    ASSERT(errmsg_has("unexpected end of file"));
    ASSERT_ERR(read_mem(b.p, b.n, false, NULL), DS_ERR_TRUNCATED);
    ASSERT(errmsg_has("past end of file"));
    bb_free(&b);

    // a key longer than the rest of the file
    hdr(&b, 3, 0, 1);
    bb_u64(&b, 1000);
    bb_put(&b, "abc", 3);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);

    // key with a NUL byte, empty key
    hdr(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, DS_V_U8);
    bb_u8(&b, 1);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, DS_V_U8);
    bb_u8(&b, 1);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
}

TEST(arrays)
{
    struct bb b = {0};

    // u64 array whose byte size overflows
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_U64);
    bb_u64(&b, 1ull << 62);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    // 1 GiB of u8 announced, none there
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_U8);
    bb_u64(&b, 1ull << 30);
    bb_zero(&b, 10);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);

    // 2^40 strings: too many; 2^20 strings announced, one there
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_STR);
    bb_u64(&b, 1ull << 40);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_STR);
    bb_u64(&b, 1ull << 20);
    bb_str(&b, "x");
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);

    // a string element of 2^40 bytes
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_STR);
    bb_u64(&b, 2);
    bb_str(&b, "x");
    bb_u64(&b, 1ull << 40);
    bb_zero(&b, 16);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    // nested array, unknown element type
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_ARR);
    bb_u64(&b, 0);
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    ASSERT(errmsg_has("nested arrays"));
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, 13);
    bb_u64(&b, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    // bool array element 3
    hdr(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, DS_V_ARR);
    bb_u32(&b, DS_V_BOOL);
    bb_u64(&b, 2);
    bb_u8(&b, 1);
    bb_u8(&b, 3);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
}

TEST(bad_values)
{
    struct bb b = {0};

    hdr(&b, 3, 0, 2);
    kv_u32(&b, "general.x", 1);
    kv_str(&b, "general.x", "again");
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("'pipe': duplicate key 'general.x'"));
    bb_free(&b);

    hdr(&b, 3, 0, 1);
    bb_str(&b, "t");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("unknown type 13"));
    bb_free(&b);

    hdr(&b, 3, 0, 1);
    bb_str(&b, "t");
    bb_u32(&b, 0xffffffffu);
    bb_u32(&b, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    hdr(&b, 3, 0, 1);
    bb_str(&b, "t");
    bb_u32(&b, DS_V_BOOL);
    bb_u8(&b, 2);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    // general.alignment: wrong type, not a power of two, zero
    hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, DS_V_U64);
    bb_u64(&b, 32);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("not a power of two"));
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
}

/* One tensor info (with data behind it) built by the caller's edits. */
static void one_tensor(struct bb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                       uint32_t type, uint64_t offset)
{
    hdr(b, 3, 1, 0);
    tinfo(b, name, n_dims, ne, type, offset);
    data(b, 32, 1024);
}

TEST(bad_tensors)
{
    struct bb b = {0};
    const int64_t ne16[] = {16}, ne5[] = {2, 2, 2, 2, 2}, neg[] = {4, -1};
    const int64_t q100[] = {100, 2}, big[] = {1ll << 62, 4}, q256[] = {256};
    char name64[65];

    one_tensor(&b, "ok", 1, ne16, DS_TYPE_F32, 0);
    ASSERT_OK(read_mem(b.p, b.n, false, NULL));
    ASSERT_OK(read_mem(b.p, b.n, true, NULL));
    bb_free(&b);

    hdr(&b, 3, 2, 0);
    tinfo(&b, "blk.0.attn_q", 1, ne16, DS_TYPE_F32, 0);
    tinfo(&b, "blk.0.attn_q", 1, ne16, DS_TYPE_F32, 64);
    data(&b, 32, 128);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("duplicate tensor name 'blk.0.attn_q'"));
    bb_free(&b);

    one_tensor(&b, "", 1, ne16, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    memset(name64, 'x', 64);
    name64[64] = '\0';
    one_tensor(&b, name64, 1, ne16, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);
    one_tensor(&b, name64 + 1, 1, ne16, DS_TYPE_F32, 0); // 63 bytes is fine
    ASSERT_OK(read_mem(b.p, b.n, false, NULL));
    bb_free(&b);

    one_tensor(&b, "t", 5, ne5, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("5 dimensions"));
    bb_free(&b);
    one_tensor(&b, "t", 0, ne16, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    one_tensor(&b, "t", 2, neg, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    one_tensor(&b, "t", 1, ne16, 40, 0);
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    ASSERT(errmsg_has("unknown type 40"));
    bb_free(&b);
    one_tensor(&b, "t", 1, ne16, 4, 0); // removed Q4_2
    ASSERT_BOTH(&b, DS_ERR_UNSUPPORTED);
    bb_free(&b);
    one_tensor(&b, "t", 1, ne16, DS_TYPE_F8_E4M3, 0);
    ASSERT_OK(read_mem(b.p, b.n, false, NULL));
    bb_free(&b);

    one_tensor(&b, "t", 2, q100, DS_TYPE_Q4_K, 0);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("'t'"));
    bb_free(&b);
    one_tensor(&b, "t", 1, q256, DS_TYPE_Q4_K, 0);
    ASSERT_OK(read_mem(b.p, b.n, true, NULL));
    bb_free(&b);

    one_tensor(&b, "t", 2, big, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_LIMIT);
    bb_free(&b);

    one_tensor(&b, "t", 1, ne16, DS_TYPE_F32, 8);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("not a multiple of the alignment"));
    bb_free(&b);

    one_tensor(&b, "t", 1, ne16, DS_TYPE_F32, UINT64_MAX - 31);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    bb_free(&b);

    // overlapping: 64 bytes at 0 and at 32
    hdr(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne16, DS_TYPE_F32, 32);
    tinfo(&b, "b", 1, ne16, DS_TYPE_F32, 0);
    data(&b, 32, 256);
    ASSERT_BOTH(&b, DS_ERR_FORMAT);
    ASSERT(errmsg_has("overlap"));
    bb_free(&b);

    // data past the end: a file knows at once, a stream when reading the tensor
    hdr(&b, 3, 2, 0);
    tinfo(&b, "blk.0.attn_k", 1, ne16, DS_TYPE_F32, 0);
    tinfo(&b, "blk.0.attn_q", 1, ne16, DS_TYPE_F32, 64);
    data(&b, 32, 100);
    {
        char want[200];
        size_t data_offset = pad64(b.n - 100, 32);
        snprintf(want, sizeof(want),
                 "'file.gguf': tensor 'blk.0.attn_q' data (offset %zu, 64 bytes) past end of "
                 "file (size %zu)",
                 data_offset + 64, b.n);
        ASSERT_ERR(read_mem(b.p, b.n, false, NULL), DS_ERR_TRUNCATED);
        ASSERT(errmsg_has(want));
    }
    ASSERT_ERR(read_mem(b.p, b.n, true, NULL), DS_ERR_TRUNCATED);
    bb_free(&b);

    // padding before the data section missing
    hdr(&b, 3, 1, 0);
    tinfo(&b, "t", 1, ne16, DS_TYPE_F32, 0);
    ASSERT_BOTH(&b, DS_ERR_TRUNCATED);
    bb_free(&b);
}

/* ---- writer checks -------------------------------------------------------------------- */

TEST(writer_checks)
{
    struct ds_gguf g;
    struct ds_writer *w = NULL;
    const int64_t ne[] = {16, 2}, q100[] = {100}, neg[] = {-1};
    const uint8_t zeros[256] = {0};
    char name64[65];

    ASSERT_OK(ds_gguf_init(&g));
    memset(name64, 'n', 64);
    name64[64] = '\0';
    ASSERT_ERR(ds_gguf_add_tensor(&g, "", DS_TYPE_F32, 1, ne), DS_ERR_ARG);
    ASSERT_ERR(ds_gguf_add_tensor(&g, name64, DS_TYPE_F32, 1, ne), DS_ERR_ARG);
    ASSERT_OK(ds_gguf_add_tensor(&g, name64 + 1, DS_TYPE_F32, 1, ne));
    ASSERT_ERR(ds_gguf_add_tensor(&g, name64 + 1, DS_TYPE_F32, 1, ne), DS_ERR_ARG);
    ASSERT(errmsg_has("duplicate"));
    ASSERT_ERR(ds_gguf_add_tensor(&g, "a", DS_TYPE_F32, 0, ne), DS_ERR_ARG);
    ASSERT_ERR(ds_gguf_add_tensor(&g, "a", DS_TYPE_F32, 5, ne), DS_ERR_ARG);
    ASSERT_ERR(ds_gguf_add_tensor(&g, "a", (enum ds_type)40, 1, ne), DS_ERR_ARG);
    ASSERT_ERR(ds_gguf_add_tensor(&g, "a", DS_TYPE_Q4_K, 1, q100), DS_ERR_FORMAT);
    ASSERT_ERR(ds_gguf_add_tensor(&g, "a", DS_TYPE_F32, 1, neg), DS_ERR_FORMAT);
    ASSERT_OK(ds_gguf_add_tensor(&g, "a", DS_TYPE_F16, 2, ne));
    ASSERT_EQ_INT(g.n_tensors, 2);

    ASSERT_OK(ds_meta_set_u32(g.meta, "general.alignment", 48));
    ASSERT_ERR(ds_gguf_layout(&g), DS_ERR_ARG);
    ASSERT_OK(ds_meta_set_u64(g.meta, "general.alignment", 64));
    ASSERT_ERR(ds_gguf_layout(&g), DS_ERR_ARG);
    ASSERT_OK(ds_meta_set_u32(g.meta, "general.alignment", 128));

    ASSERT_OK(ds_writer_open(&w, tmp_path("w.gguf"), DS_WRITE_FORCE, 0, 1));
    ASSERT_ERR(ds_gguf_write_header(w, &g), DS_ERR_STATE); // no layout yet
    ASSERT_OK(ds_gguf_layout(&g));
    ASSERT_EQ_INT(g.tensors[1].offset, 128);
    {
        char long_name[300];
        memset(long_name, 'x', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = '\0';
        ASSERT_OK(ds_meta_set_str(g.meta, "general.name", long_name)); // changes data_offset
    }
    ASSERT_ERR(ds_gguf_write_header(w, &g), DS_ERR_STATE);
    ASSERT_OK(ds_gguf_layout(&g));
    ASSERT_ERR(ds_gguf_write_tensor(w, &g, 0, zeros), DS_ERR_STATE); // before the header
    ASSERT_OK(ds_gguf_write_header(w, &g));
    ASSERT_EQ_INT(ds_writer_tell(w), g.data_offset);
    ASSERT_ERR(ds_gguf_write_header(w, &g), DS_ERR_STATE);
    ASSERT_ERR(ds_gguf_write_tensor(w, &g, 1, zeros), DS_ERR_STATE); // out of order
    ASSERT_ERR(ds_gguf_write_tensor(w, &g, 2, zeros), DS_ERR_ARG);
    ASSERT_OK(ds_gguf_write_tensor(w, &g, 0, zeros));
    ASSERT_OK(ds_gguf_write_tensor(w, &g, 1, zeros));
    ASSERT_EQ_INT(ds_writer_tell(w), g.data_offset + g.data_size);
    ASSERT_OK(ds_writer_commit(w));
    ds_writer_free(w);
    ds_gguf_release(&g);
    ds_gguf_release(&g); // releasing twice (a zeroed struct) is fine
}

/* ---- the fuzz seed corpus ----------------------------------------------------------------- */

static int put_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write '%s': %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static int write_corpus(const char *dir)
{
    char path[1024];
    uint8_t *v, *m;
    size_t n;
    struct bb b = {0};
    const int64_t ne16[] = {16};
    int bad = 0;

    snprintf(path, sizeof(path), "%s/valid.gguf", dir);
    if (write_sample(path, 0, false) != DS_OK) {
        fprintf(stderr, "%s\n", ds_errmsg());
        return 1;
    }
    snprintf(path, sizeof(path), "%s/valid-mini.gguf", dir);
    bad |= write_sample(path, 0, true) != DS_OK;
    snprintf(path, sizeof(path), "%s/valid-mini.gguf.zst", dir);
    bad |= write_sample(path, 0, true) != DS_OK;
    snprintf(path, sizeof(path), "%s/valid.gguf", dir);
    v = file_bytes(path, &n);
    if (bad || !v || n < 200) {
        fprintf(stderr, "cannot write the corpus: %s\n", ds_errmsg());
        free(v);
        return 1;
    }
    m = malloc(n);
    bad |= put_file(dir, "trunc-header.gguf", v, 100);
    bad |= put_file(dir, "trunc-data.gguf", v, n - 40);
    memcpy(m, v, n);
    m[3] = 'X';
    bad |= put_file(dir, "bad-magic.gguf", m, n);
    memcpy(m, v, n);
    m[4] = 1;
    bad |= put_file(dir, "version1.gguf", m, n);
    memcpy(m, v, n);
    m[15] = 0x10; // n_tensors 2^60
    bad |= put_file(dir, "huge-count.gguf", m, n);
    memcpy(m, v, n);
    m[24 + 8 + 30] ^= 0x40; // inside the first values
    bad |= put_file(dir, "flipped.gguf", m, n);
    free(m);
    free(v);

    hdr(&b, 3, 2, 2);
    kv_u32(&b, "general.alignment", 64);
    kv_u32(&b, "general.alignment", 64);
    tinfo(&b, "a", 1, ne16, DS_TYPE_F32, 0);
    tinfo(&b, "a", 1, ne16, DS_TYPE_F32, 64);
    data(&b, 64, 128);
    bad |= put_file(dir, "dup-key.gguf", b.p, b.n);
    bb_free(&b);

    hdr(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne16, DS_TYPE_F32, 32);
    tinfo(&b, "b", 1, ne16, DS_TYPE_F32, 0);
    data(&b, 32, 128);
    bad |= put_file(dir, "overlap.gguf", b.p, b.n);
    bb_free(&b);

    hdr(&b, 3, 2, 0);
    tinfo(&b, "b", 1, ne16, DS_TYPE_F32, 64);
    tinfo(&b, "a", 1, ne16, DS_TYPE_F32, 0);
    data(&b, 32, 128);
    bad |= put_file(dir, "unordered.gguf", b.p, b.n);
    bb_free(&b);
    return bad;
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;

    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlink(tmp_path(e->d_name));
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

int main(int argc, char **argv)
{
    const char *t = getenv("TMPDIR");

    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_gguf.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(layout);
    RUN(roundtrip);
    RUN(roundtrip_zstd);
    RUN(stream_order);
    RUN(unordered_offsets);
    RUN(nonzero_start);
    RUN(v2_and_vocab_only);
    RUN(bad_magic_and_version);
    RUN(truncated_prefixes);
    RUN(counts);
    RUN(long_strings);
    RUN(arrays);
    RUN(bad_values);
    RUN(bad_tensors);
    RUN(writer_checks);
    remove_tmpdir();
    return test_report();
}
