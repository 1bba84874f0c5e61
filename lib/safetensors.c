/*
 * safetensors.c - Hugging Face safetensors reader (single file or sharded
 * through model.safetensors.index.json) and writer. See ds_safetensors.h.
 *
 * Everything read from a file is untrusted: lengths are capped and checked
 * against the file size, numbers must be exact integers in [0, 2^53], sizes
 * are overflow-checked, and names are compared through sorted arrays (cJSON
 * keeps duplicate keys, and its object lookups are linear).
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ds_safetensors.h"
#include "error_impl.h"
#include "json_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SUFFIX ".safetensors"
#define ST_MAX_INT 9007199254740992.0 /* 2^53: larger doubles are not exact integers */

static const struct st_dtype {
    const char *name;
    enum ds_type type;
    uint32_t size;
} st_dtypes[] = {
    {"F64", DS_TYPE_F64, 8},  {"F32", DS_TYPE_F32, 4}, {"F16", DS_TYPE_F16, 2},
    {"BF16", DS_TYPE_BF16, 2}, {"I64", DS_TYPE_I64, 8}, {"I32", DS_TYPE_I32, 4},
    {"I16", DS_TYPE_I16, 2},  {"I8", DS_TYPE_I8, 1},   {"F8_E4M3", DS_TYPE_F8_E4M3, 1},
};

#define N_DTYPES (sizeof(st_dtypes) / sizeof(st_dtypes[0]))

static const struct st_dtype *dtype_of(enum ds_type t)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (st_dtypes[i].type == t)
            return &st_dtypes[i];
    return NULL;
}

ds_err ds_st_dtype_parse(const char *s, enum ds_type *out)
{
    DS_RETURN_IF(!s, DS_ERR_ARG, "NULL safetensors dtype");
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = st_dtypes[i].type;
            return DS_OK;
        }
    }
    return ds_set_error(DS_ERR_UNSUPPORTED, "unknown safetensors dtype '%s'", s);
}

const char *ds_st_dtype_name(enum ds_type t)
{
    const struct st_dtype *d = dtype_of(t);
    return d ? d->name : NULL;
}

/* ---- init / release / find ----------------------------------------------- */

void ds_st_init(struct ds_st *st)
{
    memset(st, 0, sizeof(*st));
}

void ds_st_release(struct ds_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files)
            free(st->files[i]);
        if (st->readers)
            ds_reader_free(st->readers[i]);
    }
    free(st->files);
    free(st->readers);
    free(st->data_start);
    free(st->file_size);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->meta);
    free(st->by_name);
    ds_st_init(st);
}

long ds_st_find(const struct ds_st *st, const char *name)
{
    size_t lo = 0, hi;

    if (!st || !name || !st->by_name)
        return -1;
    hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[st->by_name[mid]].name, name);
        if (c == 0)
            return (long)st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- header parsing ------------------------------------------------------- */

/* An exact integer in [0, 2^53]. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    double d;

    if (!cJSON_IsNumber(j))
        return false;
    d = j->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_INT) || (double)(uint64_t)d != d)
        return false;
    *out = (uint64_t)d;
    return true;
}

/* Parses len bytes as one JSON value followed only by whitespace; returns NULL
 * with the error set (what names the input in the message). */
static cJSON *parse_json(const char *text, size_t len, const char *name, const char *what,
                         ds_err *rc)
{
    cJSON *root;

    // duplicates (tensors, their fields, index entries) get messages of their own
    *rc = ds_json_parse(text, len, name, what, DS_JSON_DUP_KEYS, &root);
    return root;
}

static void fmt_shape(char *buf, size_t cap, uint32_t n_dims, const int64_t *shape)
{
    size_t len = 0;
    int k = snprintf(buf, cap, "[");

    len = k > 0 ? (size_t)k : 0;
    for (uint32_t i = 0; i < n_dims && len < cap; i++) {
        k = snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (k < 0)
            return;
        len += (size_t)k;
    }
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

/* Validates one tensor entry c of file `name` into t (t->name already set). */
static ds_err parse_entry(struct ds_st_tensor *t, const cJSON *c, uint64_t data_len,
                          const char *name)
{
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL, *k;
    const struct st_dtype *dt;
    uint64_t nbytes, begin, end, v;
    char sh[256];

    DS_RETURN_IF(!cJSON_IsObject(c), DS_ERR_FORMAT, "'%s': tensor '%s' is not a JSON object",
                 name, t->name);
    cJSON_ArrayForEach(k, c) {
        const cJSON **slot = NULL;
        if (!k->string)
            continue;
        if (strcmp(k->string, "dtype") == 0)
            slot = &dtype;
        else if (strcmp(k->string, "shape") == 0)
            slot = &shape;
        else if (strcmp(k->string, "data_offsets") == 0)
            slot = &offs;
        if (!slot)
            continue;
        DS_RETURN_IF(*slot, DS_ERR_FORMAT, "'%s': tensor '%s' has two '%s' keys", name,
                     t->name, k->string);
        *slot = k;
    }
    DS_RETURN_IF(!dtype || !shape || !offs, DS_ERR_FORMAT, "'%s': tensor '%s' has no '%s'",
                 name, t->name, !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    DS_RETURN_IF(!cJSON_IsString(dtype) || !dtype->valuestring, DS_ERR_FORMAT,
                 "'%s': tensor '%s' has a dtype that is not a string", name, t->name);
    if (ds_st_dtype_parse(dtype->valuestring, &t->type) != DS_OK)
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': tensor '%s' has unknown dtype '%s'",
                            name, t->name, dtype->valuestring);
    dt = dtype_of(t->type);
    assert(dt);

    DS_RETURN_IF(!cJSON_IsArray(shape), DS_ERR_FORMAT, "'%s': tensor '%s' has a shape that "
                 "is not an array", name, t->name);
    t->n_dims = 0;
    nbytes = dt->size;
    cJSON_ArrayForEach(k, shape) {
        DS_RETURN_IF(t->n_dims == DS_ST_MAX_DIMS, DS_ERR_FORMAT,
                     "'%s': tensor '%s' has more than %d dimensions", name, t->name,
                     DS_ST_MAX_DIMS);
        DS_RETURN_IF(!json_uint(k, &v), DS_ERR_FORMAT, "'%s': tensor '%s' has a shape "
                     "dimension that is not an integer in [0, 2^53]", name, t->name);
        t->shape[t->n_dims++] = (int64_t)v;
    }
    fmt_shape(sh, sizeof(sh), t->n_dims, t->shape);
    for (uint32_t i = 0; i < t->n_dims; i++) {
        DS_RETURN_IF(ds_mul_u64(nbytes, (uint64_t)t->shape[i], &nbytes), DS_ERR_FORMAT,
                     "'%s': tensor '%s' shape %s x %s is too large", name, t->name, sh,
                     dt->name);
    }

    DS_RETURN_IF(!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
                     !json_uint(offs->child, &begin) || !json_uint(offs->child->next, &end),
                 DS_ERR_FORMAT, "'%s': tensor '%s' has data_offsets that are not two integers "
                 "in [0, 2^53]", name, t->name);
    DS_RETURN_IF(begin > end || end > data_len, DS_ERR_FORMAT,
                 "'%s': tensor '%s' data_offsets [%llu, %llu] out of range (data is %llu bytes)",
                 name, t->name, (unsigned long long)begin, (unsigned long long)end,
                 (unsigned long long)data_len);
    DS_RETURN_IF(nbytes != end - begin, DS_ERR_FORMAT,
                 "'%s': tensor '%s' shape %s x %s is %llu bytes but its data is %llu bytes",
                 name, t->name, sh, dt->name, (unsigned long long)nbytes,
                 (unsigned long long)(end - begin));
    t->begin = begin;
    t->end = end;
    return DS_OK;
}

/* Validates __metadata__; keeps it (replacing any) when it is file 0's. */
static ds_err parse_meta(struct ds_st *st, const cJSON *m, uint32_t file, const char *name)
{
    const cJSON *c;
    struct ds_st_kv *kv;
    size_t n = 0, i = 0;

    DS_RETURN_IF(!cJSON_IsObject(m), DS_ERR_FORMAT, "'%s': __metadata__ is not a JSON object",
                 name);
    cJSON_ArrayForEach(c, m) {
        DS_RETURN_IF(!cJSON_IsString(c) || !c->valuestring || !c->string, DS_ERR_FORMAT,
                     "'%s': __metadata__ entry '%s' is not a string", name,
                     c->string ? c->string : "");
        n++;
    }
    if (file != 0)
        return DS_OK;
    kv = ds_calloc(n, sizeof(*kv));
    if (!kv)
        return DS_ERR_NOMEM;
    cJSON_ArrayForEach(c, m) {
        kv[i].key = ds_strdup(c->string);
        kv[i].value = ds_strdup(c->valuestring);
        i++;
        if (!kv[i - 1].key || !kv[i - 1].value) {
            for (size_t j = 0; j < i; j++) {
                free(kv[j].key);
                free(kv[j].value);
            }
            free(kv);
            return DS_ERR_NOMEM;
        }
    }
    for (size_t j = 0; j < st->n_meta; j++) {
        free(st->meta[j].key);
        free(st->meta[j].value);
    }
    free(st->meta);
    st->meta = kv;
    st->n_meta = n;
    return DS_OK;
}

/* Appends the tensors of one header; on failure st->tensors is as before. */
static ds_err parse_one(struct ds_st *st, const char *json, size_t len, uint64_t data_len,
                        uint32_t file, const char *name)
{
    ds_err rc = DS_OK;
    cJSON *root;
    const cJSON *c, *meta = NULL;
    size_t n = 0, first = st->n_tensors;
    uint64_t bytes;

    DS_RETURN_IF(len > DS_ST_MAX_HEADER, DS_ERR_LIMIT,
                 "'%s': header length %zu is larger than the limit (%u)", name, len,
                 DS_ST_MAX_HEADER);
    root = parse_json(json, len, name, "header", &rc);
    if (!root)
        return rc;
    DS_FAIL_IF(!cJSON_IsObject(root), DS_ERR_FORMAT, "'%s': header is not a JSON object", name);
    cJSON_ArrayForEach(c, root) {
        if (c->string && strcmp(c->string, "__metadata__") == 0) {
            DS_FAIL_IF(meta, DS_ERR_FORMAT, "'%s': header has two '__metadata__' entries", name);
            meta = c;
        } else {
            n++;
        }
    }
    if (n) {
        struct ds_st_tensor *p;
        DS_FAIL_IF(ds_mul_u64(first + n, sizeof(*p), &bytes) || bytes > SIZE_MAX,
                   DS_ERR_LIMIT, "'%s': too many tensors", name);
        p = ds_realloc(st->tensors, (size_t)bytes);
        DS_FAIL_IF(!p, DS_ERR_NOMEM, "out of memory for %zu tensors", first + n);
        st->tensors = p;
    }
    cJSON_ArrayForEach(c, root) {
        struct ds_st_tensor *t;
        if (c == meta)
            continue;
        DS_FAIL_IF(!c->string, DS_ERR_FORMAT, "'%s': header entry without a name", name);
        t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof(*t));
        t->file = file;
        t->name = ds_strdup(c->string);
        DS_FAIL_IF(!t->name, DS_ERR_NOMEM, "out of memory");
        st->n_tensors++;
        DS_CHECK(parse_entry(t, c, data_len, name));
    }
    if (meta)
        DS_CHECK(parse_meta(st, meta, file, name));
out:
    if (rc != DS_OK) {
        while (st->n_tensors > first)
            free(st->tensors[--st->n_tensors].name);
    }
    cJSON_Delete(root);
    return rc;
}

struct name_ref {
    const char *name;
    size_t i;
};

static int cmp_name_ref(const void *a, const void *b)
{
    return strcmp(((const struct name_ref *)a)->name, ((const struct name_ref *)b)->name);
}

static int cmp_tensor(const void *pa, const void *pb)
{
    const struct ds_st_tensor *a = pa, *b = pb;

    if (a->file != b->file)
        return a->file < b->file ? -1 : 1;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return strcmp(a->name, b->name);
}

static const char *file_label(const struct ds_st *st, uint32_t f, const char *fallback)
{
    return st->files && f < st->n_files && st->files[f] ? st->files[f] : fallback;
}

/* Sorts the tensors by (file, begin), checks overlaps and duplicate names, and
 * builds the name index. */
static ds_err finish(struct ds_st *st, const char *name)
{
    struct name_ref *refs = NULL;
    const struct ds_st_tensor *t = st->tensors;
    size_t n = st->n_tensors;
    ds_err rc = DS_OK;

    free(st->by_name);
    st->by_name = NULL;
    if (n == 0)
        return DS_OK;
    qsort(st->tensors, n, sizeof(*st->tensors), cmp_tensor);
    for (size_t i = 1; i < n; i++) {
        DS_RETURN_IF(t[i - 1].file == t[i].file && t[i - 1].end > t[i].begin, DS_ERR_FORMAT,
                     "'%s': tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and "
                     "[%llu, %llu])", file_label(st, t[i].file, name), t[i - 1].name, t[i].name,
                     (unsigned long long)t[i - 1].begin, (unsigned long long)t[i - 1].end,
                     (unsigned long long)t[i].begin, (unsigned long long)t[i].end);
    }
    refs = ds_malloc(n * sizeof(*refs));
    st->by_name = ds_malloc(n * sizeof(*st->by_name));
    DS_FAIL_IF(!refs || !st->by_name, DS_ERR_NOMEM, "out of memory for %zu tensor names", n);
    for (size_t i = 0; i < n; i++) {
        refs[i].name = t[i].name;
        refs[i].i = i;
    }
    qsort(refs, n, sizeof(*refs), cmp_name_ref);
    for (size_t i = 0; i < n; i++) {
        st->by_name[i] = refs[i].i;
        if (i && strcmp(refs[i - 1].name, refs[i].name) == 0) {
            const struct ds_st_tensor *a = &t[refs[i - 1].i], *b = &t[refs[i].i];
            if (a->file == b->file)
                rc = ds_set_error(DS_ERR_FORMAT, "'%s': tensor '%s' appears twice",
                                  file_label(st, a->file, name), a->name);
            else
                rc = ds_set_error(DS_ERR_FORMAT, "'%s': tensor '%s' is also in '%s'",
                                  file_label(st, b->file, name), b->name,
                                  file_label(st, a->file, name));
            goto out;
        }
    }
out:
    free(refs);
    if (rc != DS_OK) {
        free(st->by_name);
        st->by_name = NULL;
    }
    return rc;
}

ds_err ds_st_parse_header(struct ds_st *st, const char *json, size_t len, uint64_t data_len,
                          uint32_t file, const char *name)
{
    DS_RETURN_IF(!st || (!json && len), DS_ERR_ARG, "ds_st_parse_header: NULL argument");
    if (!name)
        name = "<header>";
    DS_TRY(parse_one(st, json ? json : "", len, data_len, file, name));
    return finish(st, name);
}

/* ---- opening files --------------------------------------------------------- */

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* dir[0..dir_len) joined with base by one '/' (none when dir_len is 0). */
static char *join_path(const char *dir, size_t dir_len, const char *base)
{
    size_t bl = strlen(base);
    bool slash = dir_len && dir[dir_len - 1] != '/';
    char *p = ds_malloc(dir_len + slash + bl + 1);

    if (!p)
        return NULL;
    memcpy(p, dir, dir_len);
    if (slash)
        p[dir_len] = '/';
    memcpy(p + dir_len + slash, base, bl + 1);
    return p;
}

/* Opens st->files[f], reads its header and appends its tensors. */
static ds_err load_shard(struct ds_st *st, uint32_t f)
{
    const char *path = st->files[f];
    struct ds_reader *r = NULL;
    unsigned char len8[8];
    uint64_t size, n;
    char *buf;
    ds_err rc;

    DS_TRY(ds_reader_open(&r, path));
    st->readers[f] = r;
    DS_RETURN_IF(!ds_reader_is_file(r), DS_ERR_UNSUPPORTED,
                 "'%s': safetensors needs random access (a regular, uncompressed file)", path);
    size = ds_reader_size(r);
    DS_RETURN_IF(size < 8, DS_ERR_TRUNCATED,
                 "'%s': file of %llu bytes is too short for a safetensors header", path,
                 (unsigned long long)size);
    DS_TRY(ds_reader_pread(r, len8, 8, 0));
    n = get_le64(len8);
    DS_RETURN_IF(n > DS_ST_MAX_HEADER, DS_ERR_LIMIT,
                 "'%s': header length %llu is larger than the limit (%u)", path,
                 (unsigned long long)n, DS_ST_MAX_HEADER);
    DS_RETURN_IF(n > size - 8, DS_ERR_FORMAT, "'%s': header length %llu past end of file "
                 "(size %llu)", path, (unsigned long long)n, (unsigned long long)size);
    buf = ds_malloc((size_t)n);
    if (!buf)
        return DS_ERR_NOMEM;
    rc = n ? ds_reader_pread(r, buf, (size_t)n, 8) : DS_OK;
    if (rc == DS_OK) {
        st->data_start[f] = 8 + n;
        st->file_size[f] = size;
        rc = parse_one(st, buf, (size_t)n, size - 8 - n, f, path);
    }
    free(buf);
    return rc;
}

static ds_err alloc_files(struct ds_st *st, size_t n)
{
    if (n == 0)
        return DS_OK;
    st->files = ds_calloc(n, sizeof(*st->files));
    st->readers = ds_calloc(n, sizeof(*st->readers));
    st->data_start = ds_calloc(n, sizeof(*st->data_start));
    st->file_size = ds_calloc(n, sizeof(*st->file_size));
    if (!st->files || !st->readers || !st->data_start || !st->file_size)
        return DS_ERR_NOMEM;
    st->n_files = n;
    return DS_OK;
}

static ds_err open_single(struct ds_st *st, const char *path)
{
    DS_TRY(alloc_files(st, 1));
    st->files[0] = ds_strdup(path);
    if (!st->files[0])
        return DS_ERR_NOMEM;
    DS_TRY(load_shard(st, 0));
    return finish(st, path);
}

struct shard_ref {
    const char *name;  /* tensor */
    const char *shard; /* file base name */
    uint32_t file;
};

static int cmp_ref_shard(const void *a, const void *b)
{
    return strcmp(((const struct shard_ref *)a)->shard, ((const struct shard_ref *)b)->shard);
}

static int cmp_ref_name(const void *a, const void *b)
{
    return strcmp(((const struct shard_ref *)a)->name, ((const struct shard_ref *)b)->name);
}

/* A shard base name that stays inside the index's directory. */
static bool shard_name_ok(const char *s)
{
    return *s && !strchr(s, '/') && !strstr(s, "..");
}

static ds_err open_index(struct ds_st *st, const char *ipath)
{
    ds_err rc = DS_OK;
    char *text = NULL;
    size_t len = 0, n = 0, n_files = 0, i, j, prefix;
    cJSON *root = NULL;
    const cJSON *c, *wm = NULL, *md = NULL;
    struct shard_ref *refs = NULL;
    const char *slash = strrchr(ipath, '/');
    uint64_t total = 0;

    DS_CHECK(ds_read_file(ipath, DS_ST_MAX_HEADER, &text, &len));
    root = parse_json(text, len, ipath, "index", &rc);
    if (!root)
        goto out;
    DS_FAIL_IF(!cJSON_IsObject(root), DS_ERR_FORMAT, "'%s': index is not a JSON object", ipath);
    cJSON_ArrayForEach(c, root) {
        const cJSON **slot = NULL;
        if (c->string && strcmp(c->string, "weight_map") == 0)
            slot = &wm;
        else if (c->string && strcmp(c->string, "metadata") == 0)
            slot = &md;
        if (!slot)
            continue;
        DS_FAIL_IF(*slot, DS_ERR_FORMAT, "'%s': index has two '%s' keys", ipath, c->string);
        *slot = c;
    }
    DS_FAIL_IF(!wm || !cJSON_IsObject(wm), DS_ERR_FORMAT,
               "'%s': index has no 'weight_map' object", ipath);
    if (md) {
        const cJSON *ts;
        DS_FAIL_IF(!cJSON_IsObject(md), DS_ERR_FORMAT, "'%s': index 'metadata' is not an object",
                   ipath);
        ts = cJSON_GetObjectItemCaseSensitive(md, "total_size");
        DS_FAIL_IF(ts && !json_uint(ts, &total), DS_ERR_FORMAT,
                   "'%s': index metadata.total_size is not an integer in [0, 2^53]", ipath);
    }

    cJSON_ArrayForEach(c, wm)
        n++;
    refs = ds_calloc(n, sizeof(*refs));
    DS_FAIL_IF(!refs, DS_ERR_NOMEM, "out of memory");
    i = 0;
    cJSON_ArrayForEach(c, wm) {
        DS_FAIL_IF(!c->string || !cJSON_IsString(c) || !c->valuestring, DS_ERR_FORMAT,
                   "'%s': weight_map entry '%s' is not a string", ipath,
                   c->string ? c->string : "");
        DS_FAIL_IF(!shard_name_ok(c->valuestring), DS_ERR_FORMAT,
                   "'%s': shard '%s' of tensor '%s' is outside the index's directory", ipath,
                   c->valuestring, c->string);
        refs[i].name = c->string;
        refs[i].shard = c->valuestring;
        i++;
    }

    // one file per distinct shard, in name order
    qsort(refs, n, sizeof(*refs), cmp_ref_shard);
    for (i = 0; i < n; i++) {
        if (i && strcmp(refs[i - 1].shard, refs[i].shard) != 0)
            n_files++;
        refs[i].file = (uint32_t)n_files;
    }
    if (n)
        n_files++;
    DS_FAIL_IF(n_files > UINT32_MAX, DS_ERR_LIMIT, "'%s': too many shards", ipath);
    DS_CHECK(alloc_files(st, n_files));
    prefix = slash ? (size_t)(slash - ipath) + 1 : 0;
    for (i = 0; i < n; i++) {
        if (st->files[refs[i].file])
            continue;
        st->files[refs[i].file] = join_path(ipath, prefix, refs[i].shard);
        DS_FAIL_IF(!st->files[refs[i].file], DS_ERR_NOMEM, "out of memory");
    }
    for (uint32_t f = 0; f < n_files; f++) {
        rc = load_shard(st, f);
        DS_FAIL_IF(rc == DS_ERR_NOT_FOUND && !st->readers[f], DS_ERR_NOT_FOUND,
                   "'%s': shard listed in '%s' is missing", st->files[f], ipath);
        if (rc != DS_OK)
            goto out;
    }
    DS_CHECK(finish(st, ipath));

    // every tensor of the index is in the shard it names, and nothing else is there
    qsort(refs, n, sizeof(*refs), cmp_ref_name);
    for (i = 1; i < n; i++)
        DS_FAIL_IF(strcmp(refs[i - 1].name, refs[i].name) == 0, DS_ERR_FORMAT,
                   "'%s': tensor '%s' is listed twice in the weight_map", ipath, refs[i].name);
    for (i = 0, j = 0; i < n || j < st->n_tensors;) {
        const struct ds_st_tensor *t = j < st->n_tensors ? &st->tensors[st->by_name[j]] : NULL;
        int cmp = !t ? -1 : i >= n ? 1 : strcmp(refs[i].name, t->name);
        DS_FAIL_IF(cmp < 0, DS_ERR_FORMAT, "'%s': tensor '%s' listed in '%s' is not in the shard",
                   st->files[refs[i].file], refs[i].name, ipath);
        DS_FAIL_IF(cmp > 0, DS_ERR_FORMAT, "'%s': tensor '%s' is not listed in '%s'",
                   st->files[t->file], t->name, ipath);
        DS_FAIL_IF(refs[i].file != t->file, DS_ERR_FORMAT,
                   "'%s': tensor '%s' is in '%s', not in '%s' as the index says", ipath,
                   t->name, st->files[t->file], st->files[refs[i].file]);
        i++;
        j++;
    }
    st->sharded = true;
    st->index_total_size = total;
out:
    free(refs);
    cJSON_Delete(root);
    free(text);
    return rc;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* In a directory: the index, else model.safetensors, else the only *.safetensors. */
static ds_err pick_in_dir(const char *dir, char **out, bool *is_index)
{
    struct stat sb;
    struct dirent *e;
    DIR *d;
    char *one = NULL;
    size_t count = 0, dl = strlen(dir);

    *out = join_path(dir, dl, ST_INDEX_NAME);
    if (!*out)
        return DS_ERR_NOMEM;
    *is_index = true;
    if (stat(*out, &sb) == 0)
        return DS_OK;
    free(*out);
    *is_index = false;
    *out = join_path(dir, dl, "model" ST_SUFFIX);
    if (!*out)
        return DS_ERR_NOMEM;
    if (stat(*out, &sb) == 0)
        return DS_OK;
    free(*out);
    *out = NULL;

    d = opendir(dir);
    DS_RETURN_IF(!d, DS_ERR_IO, "'%s': cannot open directory: %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) <= strlen(ST_SUFFIX) ||
            !has_suffix(e->d_name, ST_SUFFIX))
            continue;
        if (++count == 1) {
            one = join_path(dir, dl, e->d_name);
            if (!one) {
                closedir(d);
                return DS_ERR_NOMEM;
            }
        }
    }
    closedir(d);
    if (count == 1) {
        *out = one;
        return DS_OK;
    }
    free(one);
    DS_RETURN_IF(count == 0, DS_ERR_NOT_FOUND, "'%s': no %s or *%s file in the directory", dir,
                 ST_INDEX_NAME, ST_SUFFIX);
    return ds_set_error(DS_ERR_FORMAT, "'%s': %zu *%s files but no %s", dir, count, ST_SUFFIX,
                        ST_INDEX_NAME);
}

ds_err ds_st_open(struct ds_st *st, const char *path)
{
    struct stat sb;
    char *picked = NULL;
    bool is_index;
    ds_err rc;

    DS_RETURN_IF(!st || !path, DS_ERR_ARG, "ds_st_open: NULL argument");
    ds_st_release(st);
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        rc = pick_in_dir(path, &picked, &is_index);
        if (rc == DS_OK)
            rc = is_index ? open_index(st, picked) : open_single(st, picked);
        free(picked);
    } else if (has_suffix(path, ".json")) {
        rc = open_index(st, path);
    } else {
        rc = open_single(st, path);
    }
    if (rc != DS_OK)
        ds_st_release(st);
    return rc;
}

ds_err ds_st_read(const struct ds_st *st, size_t i, void *buf)
{
    const struct ds_st_tensor *t;
    uint64_t n;

    DS_RETURN_IF(!st || i >= st->n_tensors, DS_ERR_ARG, "tensor index %zu out of range", i);
    t = &st->tensors[i];
    n = t->end - t->begin;
    if (n == 0)
        return DS_OK;
    DS_RETURN_IF(!buf, DS_ERR_ARG, "ds_st_read: NULL buffer");
    DS_RETURN_IF(t->file >= st->n_files || !st->readers || !st->readers[t->file], DS_ERR_STATE,
                 "tensor '%s': its file is not open", t->name);
    DS_RETURN_IF(n > SIZE_MAX, DS_ERR_LIMIT, "tensor '%s' is too large", t->name);
    return ds_reader_pread(st->readers[t->file], buf, (size_t)n,
                           st->data_start[t->file] + t->begin);
}

/* ---- writing --------------------------------------------------------------- */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

ds_err ds_st_write_header(struct ds_writer *w, struct ds_st_tensor *tensors, size_t n,
                          const struct ds_st_kv *meta, size_t n_meta)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    const char **names = NULL;
    unsigned char len8[8];
    uint64_t off = 0;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!w || (n && !tensors) || (n_meta && !meta), DS_ERR_ARG,
                 "ds_st_write_header: NULL argument");
    names = ds_calloc(n, sizeof(*names));
    DS_FAIL_IF(!names, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        names[i] = tensors[i].name;
        DS_FAIL_IF(!names[i] || strcmp(names[i], "__metadata__") == 0, DS_ERR_ARG,
                   "tensor %zu: invalid safetensors tensor name", i);
    }
    qsort(names, n, sizeof(*names), cmp_cstr);
    for (size_t i = 1; i < n; i++)
        DS_FAIL_IF(strcmp(names[i - 1], names[i]) == 0, DS_ERR_ARG,
                   "duplicate tensor name '%s'", names[i]);

    ds_sbuf_put(&b, "{", 1);
    if (n_meta) {
        ds_sbuf_puts(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            DS_FAIL_IF(!meta[i].key || !meta[i].value, DS_ERR_ARG,
                       "__metadata__ entry %zu is NULL", i);
            if (i)
                ds_sbuf_put(&b, ",", 1);
            ds_sbuf_json_string(&b, meta[i].key, strlen(meta[i].key), 0);
            ds_sbuf_put(&b, ":", 1);
            ds_sbuf_json_string(&b, meta[i].value, strlen(meta[i].value), 0);
        }
        ds_sbuf_put(&b, "}", 1);
    }
    for (size_t i = 0; i < n; i++) {
        struct ds_st_tensor *t = &tensors[i];
        const struct st_dtype *dt = dtype_of(t->type);
        uint64_t nbytes;

        DS_FAIL_IF(!dt, DS_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be stored in "
                   "safetensors", t->name, ds_type_name(t->type));
        DS_FAIL_IF(t->n_dims > DS_ST_MAX_DIMS, DS_ERR_ARG, "tensor '%s' has %u dimensions "
                   "(at most %d)", t->name, t->n_dims, DS_ST_MAX_DIMS);
        nbytes = dt->size;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            DS_FAIL_IF(t->shape[d] < 0 || (double)t->shape[d] > ST_MAX_INT, DS_ERR_ARG,
                       "tensor '%s' has a bad dimension %lld", t->name,
                       (long long)t->shape[d]);
            DS_FAIL_IF(ds_mul_u64(nbytes, (uint64_t)t->shape[d], &nbytes), DS_ERR_LIMIT,
                       "tensor '%s' is too large", t->name);
        }
        DS_FAIL_IF(ds_add_u64(off, nbytes, &t->end) || (double)t->end > ST_MAX_INT,
                   DS_ERR_LIMIT, "tensor '%s': data past 2^53 bytes", t->name);
        t->begin = off;
        off = t->end;

        if (n_meta || i)
            ds_sbuf_put(&b, ",", 1);
        ds_sbuf_json_string(&b, t->name, strlen(t->name), 0);
        ds_sbuf_puts(&b, ":{\"dtype\":\"");
        ds_sbuf_puts(&b, dt->name);
        ds_sbuf_puts(&b, "\",\"shape\":[");
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (d)
                ds_sbuf_put(&b, ",", 1);
            ds_sbuf_u64(&b, (uint64_t)t->shape[d]);
        }
        ds_sbuf_puts(&b, "],\"data_offsets\":[");
        ds_sbuf_u64(&b, t->begin);
        ds_sbuf_put(&b, ",", 1);
        ds_sbuf_u64(&b, t->end);
        ds_sbuf_puts(&b, "]}");
    }
    ds_sbuf_put(&b, "}", 1);
    while (!b.err && b.len % 8)
        ds_sbuf_put(&b, " ", 1);
    DS_CHECK(b.err);
    DS_FAIL_IF(b.len > DS_ST_MAX_HEADER, DS_ERR_LIMIT,
               "safetensors header of %zu bytes is larger than the limit (%u)", b.len,
               DS_ST_MAX_HEADER);
    put_le64(len8, b.len);
    DS_CHECK(ds_writer_write(w, len8, sizeof(len8)));
    DS_CHECK(ds_writer_write(w, b.buf, b.len));
out:
    free(names);
    ds_sbuf_release(&b);
    return rc;
}

ds_err ds_st_write_index(struct ds_writer *w, uint64_t total_size, const char *const *names,
                         const char *const *files, size_t n)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    struct shard_ref *refs = NULL;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!w || (n && (!names || !files)), DS_ERR_ARG,
                 "ds_st_write_index: NULL argument");
    refs = ds_calloc(n, sizeof(*refs));
    DS_FAIL_IF(!refs, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        DS_FAIL_IF(!names[i] || !files[i], DS_ERR_ARG, "index entry %zu is NULL", i);
        refs[i].name = names[i];
        refs[i].shard = files[i];
    }
    qsort(refs, n, sizeof(*refs), cmp_ref_name);
    for (size_t i = 1; i < n; i++)
        DS_FAIL_IF(strcmp(refs[i - 1].name, refs[i].name) == 0, DS_ERR_ARG,
                   "duplicate tensor name '%s' in the index", refs[i].name);

    // json.dumps(index, indent=2, sort_keys=True) + "\n", as transformers writes it
    ds_sbuf_puts(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
    ds_sbuf_u64(&b, total_size);
    ds_sbuf_puts(&b, "\n  },\n  \"weight_map\": {");
    for (size_t i = 0; i < n; i++) {
        ds_sbuf_puts(&b, i ? ",\n    " : "\n    ");
        ds_sbuf_json_string(&b, refs[i].name, strlen(refs[i].name), DS_SBUF_JSON_ASCII);
        ds_sbuf_puts(&b, ": ");
        ds_sbuf_json_string(&b, refs[i].shard, strlen(refs[i].shard), DS_SBUF_JSON_ASCII);
    }
    ds_sbuf_puts(&b, n ? "\n  }\n}\n" : "}\n}\n");
    DS_CHECK(b.err);
    DS_CHECK(ds_writer_write(w, b.buf, b.len));
out:
    free(refs);
    ds_sbuf_release(&b);
    return rc;
}
