/*
 * gguf.c - GGUF reader (versions 2 and 3) and writer (version 3).
 *
 * The reader treats the file as untrusted and reads it strictly forward, so
 * it works on pipes and zstd streams: no allocation is sized by a count or
 * length before the bytes behind it have been read (arrays grow as elements
 * arrive, long strings are read in chunks), and every count and length has a
 * cap. When the input is a regular file, lengths are also checked against the
 * bytes left in it. All numbers are serialized little-endian explicitly.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_gguf.h"
#include "error_impl.h"
#include "ds_banned.h"

#define MAX_COUNT ((uint64_t)1 << 24)  /* tensors, key/value pairs */
#define MAX_KEY ((uint64_t)1 << 16)    /* bytes of a key */
#define MAX_STR ((uint64_t)1 << 30)    /* bytes of a string value */
#define MAX_META ((uint64_t)2 << 30)   /* all metadata, as counted by account() */
#define CHUNK ((size_t)4 << 20)        /* read size for long strings and arrays */
#define KV_OVERHEAD 64                 /* bytes counted per key beyond its text */
#define STR_OVERHEAD 16                /* bytes counted per string array element */

typedef unsigned long long ull;

/* ---- little-endian encoding ------------------------------------------------ */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static bool host_le(void)
{
    const uint16_t one = 1;
    uint8_t b;

    memcpy(&b, &one, 1);
    return b == 1;
}

/* Converts n elements of es bytes between little-endian and host order, in
 * place (the same operation both ways). */
static void swap_le(void *data, uint64_t n, size_t es)
{
    uint8_t *p = data;

    if (es == 1 || host_le())
        return;
    for (uint64_t i = 0; i < n; i++, p += es) {
        for (size_t a = 0, b = es - 1; a < b; a++, b--) {
            uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

/* On-disk size of a scalar value type; 0 for STR, ARR and unknown ids. */
static size_t vsize(uint32_t t)
{
    static const uint8_t size[DS_V_COUNT] = {
        [DS_V_U8] = 1,  [DS_V_I8] = 1,  [DS_V_U16] = 2, [DS_V_I16] = 2, [DS_V_U32] = 4,
        [DS_V_I32] = 4, [DS_V_F32] = 4, [DS_V_BOOL] = 1, [DS_V_U64] = 8, [DS_V_I64] = 8,
        [DS_V_F64] = 8,
    };
    return t < DS_V_COUNT ? size[t] : 0;
}

/* *out = x rounded up to a multiple of a (a power of two); 1 on overflow. */
static int pad_u64(uint64_t x, uint64_t a, uint64_t *out)
{
    if (ds_add_u64(x, a - 1, out))
        return 1;
    *out &= ~(a - 1);
    return 0;
}

static bool is_pow2(uint64_t a)
{
    return a != 0 && (a & (a - 1)) == 0;
}

/* ---- index sorting (heapsort: no allocation, n log n) ------------------------ */

typedef int (*idx_cmp)(const struct ds_tensor_info *t, size_t a, size_t b);

static int cmp_offset(const struct ds_tensor_info *t, size_t a, size_t b)
{
    if (t[a].offset != t[b].offset)
        return t[a].offset < t[b].offset ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int cmp_name(const struct ds_tensor_info *t, size_t a, size_t b)
{
    int c = strcmp(t[a].name, t[b].name);
    return c ? c : (a < b ? -1 : a > b);
}

static void sift_down(size_t *v, size_t root, size_t n, idx_cmp cmp,
                      const struct ds_tensor_info *t)
{
    for (;;) {
        size_t child = 2 * root + 1, tmp;

        if (child >= n)
            return;
        if (child + 1 < n && cmp(t, v[child], v[child + 1]) < 0)
            child++;
        if (cmp(t, v[root], v[child]) >= 0)
            return;
        tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

static void sort_idx(size_t *v, size_t n, idx_cmp cmp, const struct ds_tensor_info *t)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(v, i, n, cmp, t);
    for (size_t end = n; end-- > 1;) {
        size_t tmp = v[0];
        v[0] = v[end];
        v[end] = tmp;
        sift_down(v, 0, end, cmp, t);
    }
}

/* ---- struct ds_gguf --------------------------------------------------------------- */

ds_err ds_gguf_init(struct ds_gguf *g)
{
    memset(g, 0, sizeof(*g));
    g->version = DS_GGUF_VERSION;
    g->alignment = DS_GGUF_DEFAULT_ALIGNMENT;
    g->meta = ds_meta_new();
    if (!g->meta)
        return DS_ERR_NOMEM;
    return DS_OK;
}

void ds_gguf_release(struct ds_gguf *g)
{
    if (!g)
        return;
    ds_meta_free(g->meta);
    free(g->tensors);
    memset(g, 0, sizeof(*g));
}

long ds_gguf_find(const struct ds_gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i].name, name) == 0)
            return (long)i;
    }
    return -1;
}

void ds_gguf_data_order(const struct ds_gguf *g, size_t *order)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        order[i] = i;
    sort_idx(order, g->n_tensors, cmp_offset, g->tensors);
}

/* The alignment general.alignment asks for (default 32). A bad value fails
 * with err: DS_ERR_FORMAT when reading file `name`, DS_ERR_ARG when writing
 * (name NULL: no prefix). */
static ds_err meta_alignment(const struct ds_meta *m, const char *name, ds_err err,
                             uint32_t *out)
{
    long i = ds_meta_find(m, "general.alignment");
    char pre[300] = "";
    uint32_t a;

    *out = DS_GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return DS_OK;
    if (name)
        snprintf(pre, sizeof(pre), "'%.256s': ", name);
    DS_RETURN_IF(ds_meta_type(m, (size_t)i) != DS_V_U32, err,
                 "%sgeneral.alignment must be a uint32, not %s", pre,
                 ds_vtype_name(ds_meta_type(m, (size_t)i)));
    memcpy(&a, ds_meta_scalar(m, (size_t)i), sizeof(a));
    DS_RETURN_IF(!is_pow2(a), err, "%sgeneral.alignment %u is not a power of two", pre,
                 (unsigned)a);
    *out = a;
    return DS_OK;
}

/* Prefixes the current detail message (from ds_tensor_nbytes) with the file
 * (unless NULL) and tensor names. */
static ds_err tensor_error(ds_err e, const char *file, const char *tensor)
{
    char detail[512];

    snprintf(detail, sizeof(detail), "%s", ds_errmsg());
    if (!file)
        return ds_set_error(e, "tensor '%s': %s", tensor, detail);
    return ds_set_error(e, "'%s': tensor '%s': %s", file, tensor, detail);
}

/* ---- reading -------------------------------------------------------------------- */

struct rctx {
    struct ds_reader *r;
    const char *name;
    uint64_t size; /* UINT64_MAX when unknown (streams) */
    uint64_t mem;  /* metadata bytes counted so far */
};

static ds_err rd_u32(struct rctx *c, uint32_t *v)
{
    uint8_t b[4];

    DS_TRY(ds_reader_read(c->r, b, sizeof(b)));
    *v = get32(b);
    return DS_OK;
}

static ds_err rd_u64(struct rctx *c, uint64_t *v)
{
    uint8_t b[8];

    DS_TRY(ds_reader_read(c->r, b, sizeof(b)));
    *v = get64(b);
    return DS_OK;
}

/* Counts n more bytes of metadata against MAX_META. */
static ds_err account(struct rctx *c, uint64_t n)
{
    DS_RETURN_IF(ds_add_u64(c->mem, n, &c->mem) || c->mem > MAX_META, DS_ERR_LIMIT,
                 "'%s': metadata larger than %llu bytes", c->name, (ull)MAX_META);
    return DS_OK;
}

/* Fails when the input is a file with fewer than n bytes left. */
static ds_err need_bytes(struct rctx *c, uint64_t n, const char *what)
{
    uint64_t pos, left;

    if (c->size == UINT64_MAX)
        return DS_OK;
    pos = ds_reader_tell(c->r);
    left = pos < c->size ? c->size - pos : 0;
    DS_RETURN_IF(n > left, DS_ERR_TRUNCATED,
                 "'%s': %s of %llu bytes at byte %llu past end of file (size %llu)", c->name,
                 what, (ull)n, (ull)pos, (ull)c->size);
    return DS_OK;
}

/* Reads n bytes onto the end of the growable buffer (*buf, *cap, *len) and
 * NUL-terminates it (the NUL is not counted in *len). Reads in chunks, so that
 * a false length on a stream fails at end of input before a large allocation.
 * The caller has checked n against MAX_META. */
static ds_err read_append(struct rctx *c, void **buf, size_t *cap, size_t *len, uint64_t n)
{
    while (n > 0) {
        size_t step = n < CHUNK ? (size_t)n : CHUNK;

        DS_TRY(ds_grow(buf, cap, *len + step + 1, 1));
        DS_TRY(ds_reader_read(c->r, (char *)*buf + *len, step));
        *len += step;
        n -= step;
    }
    DS_TRY(ds_grow(buf, cap, *len + 1, 1));
    ((char *)*buf)[*len] = '\0';
    return DS_OK;
}

/* Reads a GGUF string (u64 length + bytes) of at most max bytes into a new
 * NUL-terminated buffer. */
static ds_err read_str(struct rctx *c, uint64_t max, const char *what, char **out,
                       size_t *out_len)
{
    uint64_t n;
    void *buf = NULL;
    size_t cap = 0, len = 0;
    ds_err rc;

    *out = NULL;
    DS_TRY(rd_u64(c, &n));
    DS_RETURN_IF(n > max, DS_ERR_LIMIT, "'%s': %s of %llu bytes is too long (max %llu)",
                 c->name, what, (ull)n, (ull)max);
    DS_TRY(need_bytes(c, n, what));
    rc = read_append(c, &buf, &cap, &len, n);
    if (rc != DS_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return DS_OK;
}

static ds_err read_str_arr(struct rctx *c, struct ds_meta *m, const char *key, uint64_t n)
{
    struct span {
        size_t off, len;
    } *spans = NULL;
    size_t cap_spans = 0, cap_blob = 0, blob_len = 0;
    void *blob = NULL;
    const char **strs = NULL;
    size_t *lens = NULL;
    ds_err rc = DS_OK;

    DS_FAIL_IF(n > MAX_META / STR_OVERHEAD, DS_ERR_LIMIT,
               "'%s': key '%.200s': array of %llu strings is too large", c->name, key, (ull)n);
    DS_CHECK(account(c, n * STR_OVERHEAD));
    DS_CHECK(need_bytes(c, n * 8, "string array"));
    for (uint64_t j = 0; j < n; j++) {
        uint64_t len;

        DS_CHECK(rd_u64(c, &len));
        DS_FAIL_IF(len > MAX_STR, DS_ERR_LIMIT,
                   "'%s': key '%.200s': string of %llu bytes is too long (max %llu)", c->name,
                   key, (ull)len, (ull)MAX_STR);
        DS_CHECK(account(c, len));
        DS_CHECK(need_bytes(c, len, "string"));
        DS_CHECK(ds_grow((void **)&spans, &cap_spans, (size_t)j + 1, sizeof(*spans)));
        spans[j].off = blob_len;
        spans[j].len = (size_t)len;
        DS_CHECK(read_append(c, &blob, &cap_blob, &blob_len, len));
        blob_len++; // keep the NUL
    }
    // n strings have been read, so these allocations are backed by input bytes
    strs = ds_malloc((size_t)n * sizeof(*strs) + 1);
    lens = ds_malloc((size_t)n * sizeof(*lens) + 1);
    DS_FAIL_IF(!strs || !lens, DS_ERR_NOMEM, "out of memory reading '%s'", c->name);
    for (uint64_t j = 0; j < n; j++) {
        strs[j] = (const char *)blob + spans[j].off;
        lens[j] = spans[j].len;
    }
    DS_CHECK(ds_meta_set_str_arr(m, key, n, strs, lens));
out:
    free(lens);
    free(strs);
    free(blob);
    free(spans);
    return rc;
}

static ds_err read_arr(struct rctx *c, struct ds_meta *m, const char *key)
{
    uint32_t et;
    uint64_t n, bytes;
    void *data = NULL;
    size_t cap = 0, len = 0, es;
    ds_err rc = DS_OK;

    DS_CHECK(rd_u32(c, &et));
    DS_FAIL_IF(et == DS_V_ARR, DS_ERR_UNSUPPORTED,
               "'%s': key '%.200s': nested arrays are not supported", c->name, key);
    DS_FAIL_IF(et >= DS_V_COUNT, DS_ERR_FORMAT,
               "'%s': key '%.200s': unknown array element type %ld", c->name, key,
               (long)(int32_t)et);
    DS_CHECK(rd_u64(c, &n));
    if (et == DS_V_STR)
        return read_str_arr(c, m, key, n);
    es = vsize(et);
    DS_FAIL_IF(ds_mul_u64(n, es, &bytes) || bytes > MAX_META, DS_ERR_LIMIT,
               "'%s': key '%.200s': array of %llu elements is too large", c->name, key, (ull)n);
    DS_CHECK(account(c, bytes));
    DS_CHECK(need_bytes(c, bytes, "array"));
    DS_CHECK(read_append(c, &data, &cap, &len, bytes));
    swap_le(data, n, es);
    if (et == DS_V_BOOL) {
        const uint8_t *b = data;
        for (uint64_t j = 0; j < n; j++)
            DS_FAIL_IF(b[j] > 1, DS_ERR_FORMAT,
                       "'%s': key '%.200s': element %llu: bool value %u is not 0 or 1",
                       c->name, key, (ull)j, (unsigned)b[j]);
    }
    DS_CHECK(ds_meta_set_arr(m, key, (enum ds_vtype)et, n, data));
out:
    free(data);
    return rc;
}

static ds_err read_kv(struct rctx *c, struct ds_meta *m)
{
    char *key = NULL, *s = NULL;
    size_t klen, slen, before = ds_meta_count(m);
    uint32_t type;
    ds_err rc = DS_OK;

    DS_CHECK(read_str(c, MAX_KEY, "key", &key, &klen));
    DS_FAIL_IF(klen == 0, DS_ERR_FORMAT, "'%s': empty key", c->name);
    DS_FAIL_IF(memchr(key, 0, klen), DS_ERR_FORMAT, "'%s': key '%.200s' contains a NUL byte",
               c->name, key);
    DS_CHECK(account(c, klen + KV_OVERHEAD));
    DS_CHECK(rd_u32(c, &type));
    DS_FAIL_IF(type >= DS_V_COUNT, DS_ERR_FORMAT, "'%s': key '%.200s' has unknown type %ld",
               c->name, key, (long)(int32_t)type);
    if (type == DS_V_STR) {
        DS_CHECK(read_str(c, MAX_STR, "string", &s, &slen));
        DS_CHECK(account(c, slen));
        DS_CHECK(ds_meta_set_strn(m, key, s, slen));
    } else if (type == DS_V_ARR) {
        DS_CHECK(read_arr(c, m, key));
    } else {
        union {
            uint8_t u8;
            uint16_t u16;
            uint32_t u32;
            uint64_t u64;
            float f32;
            double f64;
        } v;
        uint8_t b[8];
        size_t es = vsize(type);

        DS_CHECK(ds_reader_read(c->r, b, es));
        memcpy(&v, b, es);
        swap_le(&v, 1, es);
        DS_FAIL_IF(type == DS_V_BOOL && v.u8 > 1, DS_ERR_FORMAT,
                   "'%s': key '%.200s': bool value %u is not 0 or 1", c->name, key,
                   (unsigned)v.u8);
        DS_CHECK(ds_meta_set(m, key, (enum ds_vtype)type, &v));
    }
    // setting an existing key replaces it in place: a duplicate leaves the count
    DS_FAIL_IF(ds_meta_count(m) == before, DS_ERR_FORMAT, "'%s': duplicate key '%.200s'",
               c->name, key);
out:
    free(s);
    free(key);
    return rc;
}

static ds_err read_tensor_info(struct rctx *c, struct ds_gguf *g)
{
    size_t idx = g->n_tensors;
    struct ds_tensor_info *t;
    uint64_t len, n_elems;
    uint32_t type;
    ds_err e;

    DS_TRY(ds_grow((void **)&g->tensors, &g->cap_tensors, idx + 1, sizeof(*g->tensors)));
    t = &g->tensors[idx];
    memset(t, 0, sizeof(*t));
    DS_TRY(rd_u64(c, &len));
    DS_RETURN_IF(len == 0, DS_ERR_FORMAT, "'%s': tensor %zu has an empty name", c->name, idx);
    DS_RETURN_IF(len >= DS_GGUF_MAX_NAME, DS_ERR_FORMAT,
                 "'%s': tensor %zu: name of %llu bytes is too long (max %d)", c->name, idx,
                 (ull)len, DS_GGUF_MAX_NAME - 1);
    DS_TRY(ds_reader_read(c->r, t->name, (size_t)len));
    t->name[len] = '\0';
    DS_RETURN_IF(memchr(t->name, 0, (size_t)len), DS_ERR_FORMAT,
                 "'%s': tensor %zu: name '%s' contains a NUL byte", c->name, idx, t->name);
    DS_TRY(rd_u32(c, &t->n_dims));
    DS_RETURN_IF(t->n_dims < 1 || t->n_dims > DS_MAX_DIMS, DS_ERR_FORMAT,
                 "'%s': tensor '%s' has %u dimensions (must be 1 to %d)", c->name, t->name,
                 (unsigned)t->n_dims, DS_MAX_DIMS);
    for (uint32_t d = 0; d < DS_MAX_DIMS; d++) {
        uint64_t v = 1;

        if (d < t->n_dims)
            DS_TRY(rd_u64(c, &v));
        t->ne[d] = (int64_t)v;
        DS_RETURN_IF(t->ne[d] < 0, DS_ERR_FORMAT,
                     "'%s': tensor '%s' has a negative dimension (%lld)", c->name, t->name,
                     (long long)t->ne[d]);
    }
    DS_TRY(rd_u32(c, &type));
    DS_RETURN_IF(!ds_type_valid((int32_t)type), DS_ERR_UNSUPPORTED,
                 "'%s': tensor '%s' has unknown type %ld", c->name, t->name,
                 (long)(int32_t)type);
    t->type = (enum ds_type)type;
    e = ds_tensor_nbytes(t->type, t->n_dims, t->ne, &n_elems, &t->nbytes);
    if (e != DS_OK)
        return tensor_error(e, c->name, t->name);
    DS_TRY(rd_u64(c, &t->offset));
    DS_RETURN_IF(t->offset % g->alignment != 0, DS_ERR_FORMAT,
                 "'%s': tensor '%s' offset %llu is not a multiple of the alignment (%u)",
                 c->name, t->name, (ull)t->offset, (unsigned)g->alignment);
    g->n_tensors = idx + 1;
    return DS_OK;
}

/* Skips up to n bytes, stopping quietly at end of input. */
static ds_err skip_upto(struct rctx *c, uint64_t n)
{
    uint8_t buf[4096];

    if (c->size != UINT64_MAX) {
        uint64_t pos = ds_reader_tell(c->r), left = pos < c->size ? c->size - pos : 0;
        return ds_reader_skip(c->r, n < left ? n : left);
    }
    while (n > 0) {
        size_t got;

        DS_TRY(ds_reader_read_some(c->r, buf, n < sizeof(buf) ? (size_t)n : sizeof(buf), &got));
        if (got == 0)
            break;
        n -= got;
    }
    return DS_OK;
}

/* Checks names (unique) and data ranges (no overlap, inside a file of known
 * size) and computes data_size. */
static ds_err check_tensors(struct rctx *c, struct ds_gguf *g)
{
    size_t n = g->n_tensors, *order;
    uint64_t max_end = 0;
    ds_err rc = DS_OK;

    if (n == 0)
        return DS_OK;
    order = ds_malloc(n * sizeof(*order));
    if (!order)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_idx(order, n, cmp_name, g->tensors);
    for (size_t i = 1; i < n; i++)
        DS_FAIL_IF(strcmp(g->tensors[order[i - 1]].name, g->tensors[order[i]].name) == 0,
                   DS_ERR_FORMAT, "'%s': duplicate tensor name '%s'", c->name,
                   g->tensors[order[i]].name);

    ds_gguf_data_order(g, order);
    for (size_t i = 0; i < n; i++) {
        const struct ds_tensor_info *t = &g->tensors[order[i]];
        uint64_t end, abs_end;

        DS_FAIL_IF(ds_add_u64(t->offset, t->nbytes, &end) ||
                       ds_add_u64(g->data_offset, end, &abs_end) ||
                       pad_u64(end, g->alignment, &end),
                   DS_ERR_FORMAT, "'%s': tensor '%s' offset %llu is out of range", c->name,
                   t->name, (ull)t->offset);
        if (i > 0) {
            const struct ds_tensor_info *p = &g->tensors[order[i - 1]];
            DS_FAIL_IF(p->offset + p->nbytes > t->offset, DS_ERR_FORMAT,
                       "'%s': tensors '%s' (offset %llu, %llu bytes) and '%s' (offset %llu) "
                       "overlap",
                       c->name, p->name, (ull)p->offset, (ull)p->nbytes, t->name,
                       (ull)t->offset);
        }
        DS_FAIL_IF(c->size != UINT64_MAX && abs_end > c->size, DS_ERR_TRUNCATED,
                   "'%s': tensor '%s' data (offset %llu, %llu bytes) past end of file "
                   "(size %llu)",
                   c->name, t->name, (ull)(g->data_offset + t->offset), (ull)t->nbytes,
                   (ull)c->size);
        if (end > max_end)
            max_end = end;
    }
    g->data_size = max_end;
out:
    free(order);
    return rc;
}

ds_err ds_gguf_read(struct ds_reader *r, struct ds_gguf *g)
{
    struct rctx c = {r, ds_reader_name(r), ds_reader_size(r), 0};
    uint8_t magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv, pos, start = ds_reader_tell(r);

    DS_RETURN_IF(!g->meta || g->n_tensors != 0 || ds_meta_count(g->meta) != 0, DS_ERR_ARG,
                 "'%s': ds_gguf_read needs an empty, initialized struct ds_gguf", c.name);
    DS_TRY(ds_reader_read(r, magic, sizeof(magic)));
    DS_RETURN_IF(memcmp(magic, DS_GGUF_MAGIC, 4) != 0, DS_ERR_FORMAT,
                 "'%s': not a GGUF file (bad magic)", c.name);
    DS_TRY(rd_u32(&c, &version));
    DS_RETURN_IF(version == 1, DS_ERR_UNSUPPORTED,
                 "'%s': GGUF version 1 is no longer supported; re-convert the model with a "
                 "current converter",
                 c.name);
    DS_RETURN_IF(version != 0 && (version & 0xffff) == 0, DS_ERR_UNSUPPORTED,
                 "'%s': big-endian GGUF files are not supported (version field 0x%08x); "
                 "re-convert the model as little-endian",
                 c.name, (unsigned)version);
    DS_RETURN_IF(version > DS_GGUF_VERSION, DS_ERR_UNSUPPORTED,
                 "'%s': GGUF version %u is newer than supported (%d)", c.name,
                 (unsigned)version, DS_GGUF_VERSION);
    DS_RETURN_IF(version < 2, DS_ERR_FORMAT, "'%s': invalid GGUF version %u", c.name,
                 (unsigned)version);
    g->version = version;
    DS_TRY(rd_u64(&c, &n_tensors));
    DS_TRY(rd_u64(&c, &n_kv));
    DS_RETURN_IF(n_tensors > MAX_COUNT, DS_ERR_LIMIT,
                 "'%s': %llu tensors is too many (max %llu)", c.name, (ull)n_tensors,
                 (ull)MAX_COUNT);
    DS_RETURN_IF(n_kv > MAX_COUNT, DS_ERR_LIMIT,
                 "'%s': %llu metadata keys is too many (max %llu)", c.name, (ull)n_kv,
                 (ull)MAX_COUNT);

    for (uint64_t i = 0; i < n_kv; i++)
        DS_TRY(read_kv(&c, g->meta));
    DS_TRY(meta_alignment(g->meta, c.name, DS_ERR_FORMAT, &g->alignment));

    for (uint64_t i = 0; i < n_tensors; i++)
        DS_TRY(read_tensor_info(&c, g));

    // alignment is relative to the magic, which is normally at byte 0
    pos = ds_reader_tell(r);
    DS_RETURN_IF(pad_u64(pos - start, g->alignment, &g->data_offset) ||
                     ds_add_u64(g->data_offset, start, &g->data_offset),
                 DS_ERR_LIMIT, "'%s': data offset out of range", c.name);
    if (g->n_tensors == 0) {
        // vocab-only files may end without the padding
        return skip_upto(&c, g->data_offset - pos);
    }
    DS_RETURN_IF(c.size != UINT64_MAX && g->data_offset > c.size, DS_ERR_TRUNCATED,
                 "'%s': data section at byte %llu past end of file (size %llu)", c.name,
                 (ull)g->data_offset, (ull)c.size);
    DS_TRY(check_tensors(&c, g));
    return ds_reader_skip(r, g->data_offset - pos);
}

ds_err ds_gguf_read_tensor(struct ds_reader *r, const struct ds_gguf *g, size_t i, void *buf)
{
    const char *name = ds_reader_name(r);
    const struct ds_tensor_info *t;
    uint64_t pos, at;

    DS_RETURN_IF(i >= g->n_tensors, DS_ERR_ARG, "'%s': tensor index %zu out of range (%zu)",
                 name, i, g->n_tensors);
    t = &g->tensors[i];
    DS_RETURN_IF(t->nbytes > SIZE_MAX, DS_ERR_LIMIT, "'%s': tensor '%s' is too large", name,
                 t->name);
    DS_RETURN_IF(ds_add_u64(g->data_offset, t->offset, &pos), DS_ERR_FORMAT,
                 "'%s': tensor '%s' offset out of range", name, t->name);
    if (t->nbytes == 0)
        return DS_OK;
    if (ds_reader_is_file(r))
        return ds_reader_pread(r, buf, (size_t)t->nbytes, pos);
    at = ds_reader_tell(r);
    DS_RETURN_IF(at > pos, DS_ERR_STATE,
                 "'%s': tensors must be read in file order on a stream (tensor '%s' at byte "
                 "%llu, stream at byte %llu)",
                 name, t->name, (ull)pos, (ull)at);
    DS_TRY(ds_reader_skip(r, pos - at));
    return ds_reader_read(r, buf, (size_t)t->nbytes);
}

/* ---- writing ---------------------------------------------------------------------- */

ds_err ds_gguf_add_tensor(struct ds_gguf *g, const char *name, enum ds_type type,
                          uint32_t n_dims, const int64_t *ne)
{
    struct ds_tensor_info t;
    uint64_t n_elems;
    size_t len;
    ds_err e;

    DS_RETURN_IF(!name || !ne, DS_ERR_ARG, "ds_gguf_add_tensor: NULL name or shape");
    len = strlen(name);
    DS_RETURN_IF(len == 0, DS_ERR_ARG, "empty tensor name");
    DS_RETURN_IF(len >= DS_GGUF_MAX_NAME, DS_ERR_ARG,
                 "tensor name '%s' is too long (%zu bytes, max %d)", name, len,
                 DS_GGUF_MAX_NAME - 1);
    DS_RETURN_IF(ds_gguf_find(g, name) >= 0, DS_ERR_ARG, "duplicate tensor name '%s'", name);
    DS_RETURN_IF(n_dims < 1 || n_dims > DS_MAX_DIMS, DS_ERR_ARG,
                 "tensor '%s' has %u dimensions (must be 1 to %d)", name, (unsigned)n_dims,
                 DS_MAX_DIMS);
    DS_RETURN_IF(!ds_type_valid((int)type), DS_ERR_ARG, "tensor '%s' has unknown type %d",
                 name, (int)type);
    memset(&t, 0, sizeof(t));
    memcpy(t.name, name, len + 1);
    t.n_dims = n_dims;
    t.type = type;
    for (uint32_t d = 0; d < DS_MAX_DIMS; d++)
        t.ne[d] = d < n_dims ? ne[d] : 1;
    e = ds_tensor_nbytes(type, n_dims, t.ne, &n_elems, &t.nbytes);
    if (e != DS_OK)
        return tensor_error(e, NULL, name);
    DS_TRY(ds_grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors + 1,
                   sizeof(*g->tensors)));
    g->tensors[g->n_tensors++] = t;
    return DS_OK;
}

/* On-disk bytes of metadata value i (type id through the last element). */
static uint64_t value_size(const struct ds_meta *m, size_t i)
{
    enum ds_vtype t = ds_meta_type(m, i), et;
    uint64_t n, size = 4;
    size_t len;

    if (t == DS_V_STR) {
        ds_meta_str(m, i, &len);
        return size + 8 + len;
    }
    if (t != DS_V_ARR)
        return size + vsize(t);
    ds_meta_arr(m, i, &et, &n);
    size += 4 + 8;
    if (et != DS_V_STR)
        return size + n * vsize(et);
    for (uint64_t j = 0; j < n; j++) {
        ds_meta_arr_str(m, i, j, &len);
        size += 8 + len;
    }
    return size;
}

uint64_t ds_gguf_header_size(const struct ds_gguf *g)
{
    uint64_t size = 4 + 4 + 8 + 8;
    size_t n_kv = g->meta ? ds_meta_count(g->meta) : 0;

    for (size_t i = 0; i < n_kv; i++)
        size += 8 + strlen(ds_meta_key(g->meta, i)) + value_size(g->meta, i);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct ds_tensor_info *t = &g->tensors[i];
        size += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    return size;
}

ds_err ds_gguf_layout(struct ds_gguf *g)
{
    uint64_t off = 0;

    DS_RETURN_IF(!g->meta, DS_ERR_ARG, "ds_gguf_layout: struct ds_gguf not initialized");
    DS_TRY(meta_alignment(g->meta, NULL, DS_ERR_ARG, &g->alignment));
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct ds_tensor_info *t = &g->tensors[i];
        uint64_t n_elems, padded;
        ds_err e = ds_tensor_nbytes(t->type, t->n_dims, t->ne, &n_elems, &t->nbytes);

        if (e != DS_OK)
            return tensor_error(e, NULL, t->name);
        t->offset = off;
        DS_RETURN_IF(pad_u64(t->nbytes, g->alignment, &padded) ||
                         ds_add_u64(off, padded, &off),
                     DS_ERR_LIMIT, "tensor data larger than 2^64 bytes");
    }
    g->data_size = off;
    DS_RETURN_IF(pad_u64(ds_gguf_header_size(g), g->alignment, &g->data_offset), DS_ERR_LIMIT,
                 "GGUF header too large");
    return DS_OK;
}

/* A small write buffer: the first error sticks and later puts do nothing. */
struct wbuf {
    struct ds_writer *w;
    size_t n;
    ds_err rc;
    uint8_t b[16384];
};

static void wb_flush(struct wbuf *wb)
{
    if (wb->rc == DS_OK && wb->n > 0)
        wb->rc = ds_writer_write(wb->w, wb->b, wb->n);
    wb->n = 0;
}

static void wb_put(struct wbuf *wb, const void *p, size_t n)
{
    const uint8_t *s = p;

    if (n >= sizeof(wb->b)) {
        wb_flush(wb);
        if (wb->rc == DS_OK)
            wb->rc = ds_writer_write(wb->w, s, n);
        return;
    }
    if (wb->n + n > sizeof(wb->b))
        wb_flush(wb);
    memcpy(wb->b + wb->n, s, n);
    wb->n += n;
}

static void wb_u32(struct wbuf *wb, uint32_t v)
{
    uint8_t b[4];

    put32(b, v);
    wb_put(wb, b, sizeof(b));
}

static void wb_u64(struct wbuf *wb, uint64_t v)
{
    uint8_t b[8];

    put64(b, v);
    wb_put(wb, b, sizeof(b));
}

static void wb_str(struct wbuf *wb, const char *s, size_t len)
{
    wb_u64(wb, len);
    wb_put(wb, s, len);
}

/* n host-order elements of es bytes, written little-endian. */
static void wb_le(struct wbuf *wb, const void *data, uint64_t n, size_t es)
{
    const uint8_t *p = data;

    if (es == 1 || host_le()) {
        uint64_t total = n * es;
        while (total > 0) {
            size_t step = total < CHUNK ? (size_t)total : CHUNK;
            wb_put(wb, p, step);
            p += step;
            total -= step;
        }
        return;
    }
    for (uint64_t j = 0; j < n; j++, p += es) {
        uint8_t b[8];
        memcpy(b, p, es);
        swap_le(b, 1, es);
        wb_put(wb, b, es);
    }
}

static void wb_value(struct wbuf *wb, const struct ds_meta *m, size_t i)
{
    enum ds_vtype t = ds_meta_type(m, i), et;
    const char *s;
    uint64_t n;
    size_t len;

    wb_u32(wb, (uint32_t)t);
    if (t == DS_V_STR) {
        s = ds_meta_str(m, i, &len);
        wb_str(wb, s, len);
    } else if (t == DS_V_ARR) {
        ds_meta_arr(m, i, &et, &n);
        wb_u32(wb, (uint32_t)et);
        wb_u64(wb, n);
        if (et == DS_V_STR) {
            for (uint64_t j = 0; j < n; j++) {
                s = ds_meta_arr_str(m, i, j, &len);
                wb_str(wb, s, len);
            }
        } else if (n > 0) {
            wb_le(wb, ds_meta_arr_data(m, i), n, vsize(et));
        }
    } else {
        wb_le(wb, ds_meta_scalar(m, i), 1, vsize(t));
    }
}

/* Checks that ds_gguf_layout() has been run on g as it is now. */
static ds_err check_layout(struct ds_writer *w, const struct ds_gguf *g)
{
    const char *name = ds_writer_name(w);
    uint32_t align;
    uint64_t off = 0, data_offset;

    DS_RETURN_IF(!g->meta, DS_ERR_ARG, "'%s': struct ds_gguf not initialized", name);
    DS_TRY(meta_alignment(g->meta, name, DS_ERR_ARG, &align));
    DS_RETURN_IF(align != g->alignment ||
                     pad_u64(ds_gguf_header_size(g), align, &data_offset) ||
                     data_offset != g->data_offset,
                 DS_ERR_STATE, "'%s': call ds_gguf_layout() before writing the header", name);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct ds_tensor_info *t = &g->tensors[i];
        uint64_t padded;

        DS_RETURN_IF(t->offset != off || pad_u64(t->nbytes, align, &padded), DS_ERR_STATE,
                     "'%s': tensor '%s' is not laid out; call ds_gguf_layout()", name,
                     t->name);
        off += padded;
    }
    DS_RETURN_IF(off != g->data_size, DS_ERR_STATE,
                 "'%s': call ds_gguf_layout() before writing the header", name);
    return DS_OK;
}

ds_err ds_gguf_write_header(struct ds_writer *w, const struct ds_gguf *g)
{
    struct wbuf *wb;
    size_t n_kv;
    uint64_t end;
    ds_err rc;

    DS_TRY(check_layout(w, g));
    DS_RETURN_IF(ds_writer_tell(w) != 0, DS_ERR_STATE,
                 "'%s': the GGUF header must be the start of the output", ds_writer_name(w));
    wb = ds_malloc(sizeof(*wb));
    if (!wb)
        return DS_ERR_NOMEM;
    wb->w = w;
    wb->n = 0;
    wb->rc = DS_OK;
    n_kv = ds_meta_count(g->meta);
    wb_put(wb, DS_GGUF_MAGIC, 4);
    wb_u32(wb, DS_GGUF_VERSION);
    wb_u64(wb, g->n_tensors);
    wb_u64(wb, n_kv);
    for (size_t i = 0; i < n_kv; i++) {
        const char *key = ds_meta_key(g->meta, i);
        wb_str(wb, key, strlen(key));
        wb_value(wb, g->meta, i);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct ds_tensor_info *t = &g->tensors[i];
        wb_str(wb, t->name, strlen(t->name));
        wb_u32(wb, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            wb_u64(wb, (uint64_t)t->ne[d]);
        wb_u32(wb, (uint32_t)t->type);
        wb_u64(wb, t->offset);
    }
    wb_flush(wb);
    rc = wb->rc;
    free(wb);
    if (rc != DS_OK)
        return rc;
    end = ds_writer_tell(w);
    assert(end == ds_gguf_header_size(g) && end <= g->data_offset);
    return ds_writer_zero(w, g->data_offset - end);
}

ds_err ds_gguf_write_tensor(struct ds_writer *w, const struct ds_gguf *g, size_t i,
                            const void *data)
{
    const char *name = ds_writer_name(w);
    const struct ds_tensor_info *t;
    uint64_t pos, padded, at = ds_writer_tell(w);

    DS_RETURN_IF(i >= g->n_tensors, DS_ERR_ARG, "'%s': tensor index %zu out of range (%zu)",
                 name, i, g->n_tensors);
    t = &g->tensors[i];
    DS_RETURN_IF(ds_add_u64(g->data_offset, t->offset, &pos) ||
                     pad_u64(t->nbytes, g->alignment, &padded),
                 DS_ERR_STATE, "'%s': tensor '%s' is not laid out", name, t->name);
    DS_RETURN_IF(at != pos, DS_ERR_STATE,
                 "'%s': tensor '%s' belongs at byte %llu but the output is at byte %llu "
                 "(write the header, then tensors 0, 1, ... in order)",
                 name, t->name, (ull)pos, (ull)at);
    DS_RETURN_IF(t->nbytes > SIZE_MAX, DS_ERR_LIMIT, "'%s': tensor '%s' is too large", name,
                 t->name);
    if (t->nbytes > 0)
        DS_TRY(ds_writer_write(w, data, (size_t)t->nbytes));
    return ds_writer_zero(w, padded - t->nbytes);
}
