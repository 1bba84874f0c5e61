/*
 * meta.c - ordered key/value metadata.
 *
 * Entries live in one array in insertion order; an open-addressing hash table
 * of entry indices finds keys. A string array is one byte buffer holding every
 * string NUL-terminated, plus n + 1 offsets, so a 130k-token vocabulary costs
 * three allocations, not 130k.
 */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_meta.h"
#include "error_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

union scalar {
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;
    uint64_t u64;
    int64_t i64;
    double f64;
};

struct entry {
    char *key;            /* owned */
    enum ds_vtype type;
    union scalar v;       /* numeric and BOOL */
    char *str;            /* STR: owned, NUL-terminated; string ARR: all bytes */
    size_t len;           /* STR: length */
    enum ds_vtype elem;   /* ARR */
    uint64_t n;           /* ARR: element count */
    void *data;           /* numeric ARR: packed elements (owned) */
    uint64_t *offs;       /* string ARR: n + 1 offsets into str (owned) */
};

struct ds_meta {
    struct entry *e;      /* owned, count used of cap */
    size_t count, cap;
    uint32_t *slots;      /* hash: entry index + 1, 0 = empty; nslots a power of 2 */
    size_t nslots;
};

static const char *const vtype_names[DS_V_COUNT] = {
    [DS_V_U8] = "uint8",   [DS_V_I8] = "int8",     [DS_V_U16] = "uint16",
    [DS_V_I16] = "int16",  [DS_V_U32] = "uint32",  [DS_V_I32] = "int32",
    [DS_V_F32] = "float32", [DS_V_BOOL] = "bool",  [DS_V_STR] = "string",
    [DS_V_ARR] = "array",  [DS_V_U64] = "uint64",  [DS_V_I64] = "int64",
    [DS_V_F64] = "float64",
};

static const size_t vtype_sizes[DS_V_COUNT] = {
    [DS_V_U8] = 1,  [DS_V_I8] = 1,  [DS_V_U16] = 2, [DS_V_I16] = 2, [DS_V_U32] = 4,
    [DS_V_I32] = 4, [DS_V_F32] = 4, [DS_V_BOOL] = 1, [DS_V_STR] = 0, [DS_V_ARR] = 0,
    [DS_V_U64] = 8, [DS_V_I64] = 8, [DS_V_F64] = 8,
};

const char *ds_vtype_name(enum ds_vtype t)
{
    return (unsigned)t < DS_V_COUNT ? vtype_names[t] : "?";
}

size_t ds_vtype_size(enum ds_vtype t)
{
    return (unsigned)t < DS_V_COUNT ? vtype_sizes[t] : 0;
}

static bool is_scalar(enum ds_vtype t)
{
    return (unsigned)t < DS_V_COUNT && t != DS_V_STR && t != DS_V_ARR;
}

static void entry_release_value(struct entry *en)
{
    free(en->str);
    free(en->data);
    free(en->offs);
    en->str = NULL;
    en->data = NULL;
    en->offs = NULL;
}

/* ---- hash index ------------------------------------------------------------------ */

static uint64_t hash_key(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

static void hash_insert(struct ds_meta *m, size_t idx)
{
    size_t mask = m->nslots - 1;
    size_t s = (size_t)hash_key(m->e[idx].key) & mask;
    while (m->slots[s])
        s = (s + 1) & mask;
    m->slots[s] = (uint32_t)(idx + 1);
}

/* Rebuilds the index with room for at least `need` entries at load <= 1/2. */
static ds_err hash_rebuild(struct ds_meta *m, size_t need)
{
    size_t n = 16;
    while (n / 2 < need) {
        DS_RETURN_IF(n > UINT32_MAX / 2, DS_ERR_LIMIT, "too many metadata keys (%zu)", need);
        n *= 2;
    }
    if (n != m->nslots) {
        uint32_t *s = ds_calloc(n, sizeof(*s));
        if (!s)
            return DS_ERR_NOMEM;
        free(m->slots);
        m->slots = s;
        m->nslots = n;
    } else {
        memset(m->slots, 0, n * sizeof(*m->slots));
    }
    for (size_t i = 0; i < m->count; i++)
        hash_insert(m, i);
    return DS_OK;
}

long ds_meta_find(const struct ds_meta *m, const char *key)
{
    if (!m || !key || !m->nslots)
        return -1;
    size_t mask = m->nslots - 1;
    for (size_t s = (size_t)hash_key(key) & mask; m->slots[s]; s = (s + 1) & mask) {
        size_t idx = m->slots[s] - 1;
        if (strcmp(m->e[idx].key, key) == 0)
            return (long)idx;
    }
    return -1;
}

/* ---- lifetime ---------------------------------------------------------------------- */

struct ds_meta *ds_meta_new(void)
{
    struct ds_meta *m = ds_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (hash_rebuild(m, 0) != DS_OK) {
        free(m);
        return NULL;
    }
    return m;
}

void ds_meta_free(struct ds_meta *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->count; i++) {
        entry_release_value(&m->e[i]);
        free(m->e[i].key);
    }
    free(m->e);
    free(m->slots);
    free(m);
}

/* Deep copy of the value of src into dst (key not touched). */
static ds_err copy_value(struct entry *dst, const struct entry *src)
{
    dst->type = src->type;
    dst->v = src->v;
    dst->len = src->len;
    dst->elem = src->elem;
    dst->n = src->n;
    dst->str = NULL;
    dst->data = NULL;
    dst->offs = NULL;
    if (src->type == DS_V_STR) {
        dst->str = ds_strndup(src->str, src->len);
        return dst->str ? DS_OK : DS_ERR_NOMEM;
    }
    if (src->type != DS_V_ARR)
        return DS_OK;
    if (src->elem == DS_V_STR) {
        size_t nbytes = (size_t)src->offs[src->n];
        dst->str = ds_malloc(nbytes);
        dst->offs = ds_malloc((size_t)(src->n + 1) * sizeof(*dst->offs));
        if (!dst->str || !dst->offs) {
            entry_release_value(dst);
            return DS_ERR_NOMEM;
        }
        memcpy(dst->str, src->str, nbytes);
        memcpy(dst->offs, src->offs, (size_t)(src->n + 1) * sizeof(*dst->offs));
        return DS_OK;
    }
    size_t nbytes = (size_t)src->n * vtype_sizes[src->elem];
    dst->data = ds_malloc(nbytes);
    if (!dst->data)
        return DS_ERR_NOMEM;
    memcpy(dst->data, src->data, nbytes);
    return DS_OK;
}

struct ds_meta *ds_meta_dup(const struct ds_meta *src)
{
    struct ds_meta *m;

    if (!src) {
        ds_set_error(DS_ERR_ARG, "no metadata to copy");
        return NULL;
    }
    m = ds_meta_new();
    if (!m)
        return NULL;
    if (ds_grow((void **)&m->e, &m->cap, src->count, sizeof(*m->e)) != DS_OK)
        goto fail;
    for (size_t i = 0; i < src->count; i++) {
        struct entry *en = &m->e[i];
        memset(en, 0, sizeof(*en));
        en->key = ds_strdup(src->e[i].key);
        if (!en->key)
            goto fail;
        if (copy_value(en, &src->e[i]) != DS_OK) {
            free(en->key);
            goto fail;
        }
        m->count++;
    }
    if (hash_rebuild(m, m->count) != DS_OK)
        goto fail;
    return m;
fail:
    ds_meta_free(m);
    return NULL;
}

/* ---- access -------------------------------------------------------------------------- */

size_t ds_meta_count(const struct ds_meta *m)
{
    return m ? m->count : 0;
}

static const struct entry *entry_at(const struct ds_meta *m, size_t i)
{
    return m && i < m->count ? &m->e[i] : NULL;
}

static const struct entry *entry_by_key(const struct ds_meta *m, const char *key)
{
    long i = ds_meta_find(m, key);
    return i < 0 ? NULL : &m->e[i];
}

const char *ds_meta_key(const struct ds_meta *m, size_t i)
{
    const struct entry *en = entry_at(m, i);
    return en ? en->key : NULL;
}

enum ds_vtype ds_meta_type(const struct ds_meta *m, size_t i)
{
    const struct entry *en = entry_at(m, i);
    return en ? en->type : (enum ds_vtype)DS_V_COUNT;
}

/* ---- setters --------------------------------------------------------------------------- */

/* Stores the prepared value *val (ownership taken on success) under key,
 * replacing an existing value in place. On failure *val is released. */
static ds_err put(struct ds_meta *m, const char *key, struct entry *val)
{
    long i = ds_meta_find(m, key);
    if (i >= 0) {
        struct entry *en = &m->e[i];
        char *k = en->key;
        entry_release_value(en);
        *en = *val;
        en->key = k;
        return DS_OK;
    }

    ds_err rc = DS_OK;
    char *k = NULL;
    DS_FAIL_IF(m->count >= UINT32_MAX - 1, DS_ERR_LIMIT, "too many metadata keys");
    k = ds_strdup(key);
    DS_FAIL_IF(!k, DS_ERR_NOMEM, "out of memory copying key '%s'", key);
    DS_CHECK(ds_grow((void **)&m->e, &m->cap, m->count + 1, sizeof(*m->e)));
    if ((m->count + 1) * 2 > m->nslots)
        DS_CHECK(hash_rebuild(m, m->count + 1));
    m->e[m->count] = *val;
    m->e[m->count].key = k;
    m->count++;
    hash_insert(m, m->count - 1);
    return DS_OK;
out:
    free(k);
    entry_release_value(val);
    return rc;
}

ds_err ds_meta_set(struct ds_meta *m, const char *key, enum ds_vtype type, const void *value)
{
    struct entry v = {0};

    DS_RETURN_IF(!m || !key || !value, DS_ERR_ARG, "metadata key or value missing");
    DS_RETURN_IF(!is_scalar(type), DS_ERR_ARG, "'%s': type %s is not a scalar type", key,
                 ds_vtype_name(type));
    v.type = type;
    memcpy(&v.v, value, vtype_sizes[type]);
    return put(m, key, &v);
}

ds_err ds_meta_set_u32(struct ds_meta *m, const char *key, uint32_t v)
{
    return ds_meta_set(m, key, DS_V_U32, &v);
}

ds_err ds_meta_set_i32(struct ds_meta *m, const char *key, int32_t v)
{
    return ds_meta_set(m, key, DS_V_I32, &v);
}

ds_err ds_meta_set_u64(struct ds_meta *m, const char *key, uint64_t v)
{
    return ds_meta_set(m, key, DS_V_U64, &v);
}

ds_err ds_meta_set_f32(struct ds_meta *m, const char *key, float v)
{
    return ds_meta_set(m, key, DS_V_F32, &v);
}

ds_err ds_meta_set_bool(struct ds_meta *m, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return ds_meta_set(m, key, DS_V_BOOL, &b);
}

ds_err ds_meta_set_str(struct ds_meta *m, const char *key, const char *s)
{
    DS_RETURN_IF(!s, DS_ERR_ARG, "'%s': string value missing", key ? key : "");
    return ds_meta_set_strn(m, key, s, strlen(s));
}

ds_err ds_meta_set_strn(struct ds_meta *m, const char *key, const char *s, size_t len)
{
    struct entry v = {0};

    DS_RETURN_IF(!m || !key || (!s && len), DS_ERR_ARG, "metadata key or value missing");
    DS_RETURN_IF(len == SIZE_MAX, DS_ERR_LIMIT, "'%s': string too long", key);
    v.type = DS_V_STR;
    v.str = ds_strndup(s ? s : "", len);
    if (!v.str)
        return DS_ERR_NOMEM;
    v.len = len;
    return put(m, key, &v);
}

ds_err ds_meta_set_arr(struct ds_meta *m, const char *key, enum ds_vtype elem, uint64_t n,
                       const void *data)
{
    struct entry v = {0};
    uint64_t nbytes;

    DS_RETURN_IF(!m || !key || (!data && n), DS_ERR_ARG, "metadata key or value missing");
    DS_RETURN_IF(!is_scalar(elem), DS_ERR_ARG, "'%s': arrays of %s are not supported", key,
                 ds_vtype_name(elem));
    DS_RETURN_IF(ds_mul_u64(n, vtype_sizes[elem], &nbytes) || nbytes > SIZE_MAX, DS_ERR_LIMIT,
                 "'%s': array of %" PRIu64 " elements is too large", key, n);
    v.type = DS_V_ARR;
    v.elem = elem;
    v.n = n;
    v.data = ds_malloc((size_t)nbytes);
    if (!v.data)
        return DS_ERR_NOMEM;
    if (nbytes)
        memcpy(v.data, data, (size_t)nbytes);
    return put(m, key, &v);
}

ds_err ds_meta_set_str_arr(struct ds_meta *m, const char *key, uint64_t n,
                           const char *const *strs, const size_t *lens)
{
    struct entry v = {0};
    uint64_t total = 0, noffs;

    DS_RETURN_IF(!m || !key || (!strs && n), DS_ERR_ARG, "metadata key or value missing");
    DS_RETURN_IF(ds_add_u64(n, 1, &noffs) || noffs > SIZE_MAX / sizeof(uint64_t),
                 DS_ERR_LIMIT, "'%s': array of %" PRIu64 " strings is too large", key, n);
    for (uint64_t j = 0; j < n; j++) {
        DS_RETURN_IF(!strs[j] && !(lens && lens[j] == 0), DS_ERR_ARG,
                     "'%s': string %" PRIu64 " missing", key, j);
        size_t len = lens ? lens[j] : strlen(strs[j]);
        DS_RETURN_IF(ds_add_u64(total, len, &total) || ds_add_u64(total, 1, &total) ||
                         total > SIZE_MAX,
                     DS_ERR_LIMIT, "'%s': string array too large", key);
    }
    v.type = DS_V_ARR;
    v.elem = DS_V_STR;
    v.n = n;
    v.str = ds_malloc((size_t)total);
    v.offs = ds_malloc((size_t)noffs * sizeof(*v.offs));
    if (!v.str || !v.offs) {
        entry_release_value(&v);
        return DS_ERR_NOMEM;
    }
    uint64_t off = 0;
    for (uint64_t j = 0; j < n; j++) {
        size_t len = lens ? lens[j] : strlen(strs[j]);
        v.offs[j] = off;
        if (len)
            memcpy(v.str + off, strs[j], len);
        v.str[off + len] = '\0';
        off += len + 1;
    }
    v.offs[n] = off;
    return put(m, key, &v);
}

void ds_meta_remove(struct ds_meta *m, const char *key)
{
    long i = ds_meta_find(m, key);
    if (i < 0)
        return;
    entry_release_value(&m->e[i]);
    free(m->e[i].key);
    memmove(&m->e[i], &m->e[i + 1], (m->count - (size_t)i - 1) * sizeof(*m->e));
    m->count--;
    // Same table size: cannot fail.
    ds_err rc = hash_rebuild(m, m->nslots / 2);
    assert(rc == DS_OK);
    (void)rc;
}

/* ---- getters ------------------------------------------------------------------------------ */

static bool scalar_int(const struct entry *en, int64_t *out)
{
    switch (en->type) {
    case DS_V_U8:
    case DS_V_BOOL:
        *out = en->v.u8;
        return true;
    case DS_V_I8:
        *out = en->v.i8;
        return true;
    case DS_V_U16:
        *out = en->v.u16;
        return true;
    case DS_V_I16:
        *out = en->v.i16;
        return true;
    case DS_V_U32:
        *out = en->v.u32;
        return true;
    case DS_V_I32:
        *out = en->v.i32;
        return true;
    case DS_V_U64:
        if (en->v.u64 > INT64_MAX)
            return false;
        *out = (int64_t)en->v.u64;
        return true;
    case DS_V_I64:
        *out = en->v.i64;
        return true;
    default:
        return false;
    }
}

bool ds_meta_get_int(const struct ds_meta *m, const char *key, int64_t *out)
{
    const struct entry *en = entry_by_key(m, key);
    int64_t v;
    if (!en || !scalar_int(en, &v))
        return false;
    if (out)
        *out = v;
    return true;
}

bool ds_meta_get_float(const struct ds_meta *m, const char *key, double *out)
{
    const struct entry *en = entry_by_key(m, key);
    double v;
    if (!en)
        return false;
    switch (en->type) {
    case DS_V_F32:
        v = en->v.f32;
        break;
    case DS_V_F64:
        v = en->v.f64;
        break;
    case DS_V_U64:
        v = (double)en->v.u64;
        break;
    case DS_V_BOOL:
        return false;
    default: {
        int64_t iv;
        if (!scalar_int(en, &iv))
            return false;
        v = (double)iv;
    }
    }
    if (out)
        *out = v;
    return true;
}

bool ds_meta_get_bool(const struct ds_meta *m, const char *key, bool *out)
{
    const struct entry *en = entry_by_key(m, key);
    if (!en || en->type != DS_V_BOOL)
        return false;
    if (out)
        *out = en->v.u8 != 0;
    return true;
}

const char *ds_meta_get_str(const struct ds_meta *m, const char *key, size_t *len)
{
    long i = ds_meta_find(m, key);
    return i < 0 ? NULL : ds_meta_str(m, (size_t)i, len);
}

const void *ds_meta_scalar(const struct ds_meta *m, size_t i)
{
    const struct entry *en = entry_at(m, i);
    return en && is_scalar(en->type) ? &en->v : NULL;
}

const char *ds_meta_str(const struct ds_meta *m, size_t i, size_t *len)
{
    const struct entry *en = entry_at(m, i);
    if (!en || en->type != DS_V_STR)
        return NULL;
    if (len)
        *len = en->len;
    return en->str;
}

bool ds_meta_arr(const struct ds_meta *m, size_t i, enum ds_vtype *elem, uint64_t *n)
{
    const struct entry *en = entry_at(m, i);
    if (!en || en->type != DS_V_ARR)
        return false;
    if (elem)
        *elem = en->elem;
    if (n)
        *n = en->n;
    return true;
}

const void *ds_meta_arr_data(const struct ds_meta *m, size_t i)
{
    const struct entry *en = entry_at(m, i);
    return en && en->type == DS_V_ARR && en->elem != DS_V_STR ? en->data : NULL;
}

const char *ds_meta_arr_str(const struct ds_meta *m, size_t i, uint64_t j, size_t *len)
{
    const struct entry *en = entry_at(m, i);
    if (!en || en->type != DS_V_ARR || en->elem != DS_V_STR || j >= en->n)
        return NULL;
    if (len)
        *len = (size_t)(en->offs[j + 1] - en->offs[j] - 1);
    return en->str + en->offs[j];
}

/* ---- formatting ------------------------------------------------------------------------------ */

/* Copies text[0..len) into buf[cap]. Text that does not fit is cut and ends in
 * "..." (as much of it as fits), without leaving half a UTF-8 sequence before
 * the dots. */
static void fit_text(char *buf, size_t cap, const char *text, size_t len)
{
    if (len < cap) {
        if (len)
            memcpy(buf, text, len);
        buf[len] = '\0';
        return;
    }
    size_t dots = cap - 1 < 3 ? cap - 1 : 3;
    size_t at = cap - 1 - dots;
    while (at > 0 && ((unsigned char)text[at] & 0xc0) == 0x80)
        at--;
    memcpy(buf, text, at);
    memset(buf + at, '.', dots);
    buf[at + dots] = '\0';
}

/* Shortest %g rendering that reads back as the same value; like plain %g,
 * magnitudes in [1e-4, 1e6) are written without an exponent. */
static void fmt_float(struct ds_sbuf *b, double v, bool single)
{
    char tmp[48];
    int maxp = single ? 9 : 17, p;

    for (p = 1; p < maxp && isfinite(v); p++) {
        snprintf(tmp, sizeof(tmp), "%.*g", p, v);
        if (single ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v)
            break;
    }
    if (isfinite(v) && v != 0) {
        int x = (int)floor(log10(fabs(v)));
        if (x < 6 && x + 1 > p)
            p = x + 1;
    }
    ds_sbuf_printf(b, "%.*g", p, v);
}

static void fmt_scalar(struct ds_sbuf *b, enum ds_vtype t, const void *p)
{
    union scalar v;
    memcpy(&v, p, vtype_sizes[t]);
    switch (t) {
    case DS_V_U8: ds_sbuf_printf(b, "%u", (unsigned)v.u8); break;
    case DS_V_I8: ds_sbuf_printf(b, "%d", (int)v.i8); break;
    case DS_V_U16: ds_sbuf_printf(b, "%u", (unsigned)v.u16); break;
    case DS_V_I16: ds_sbuf_printf(b, "%d", (int)v.i16); break;
    case DS_V_U32: ds_sbuf_printf(b, "%" PRIu32, v.u32); break;
    case DS_V_I32: ds_sbuf_printf(b, "%" PRId32, v.i32); break;
    case DS_V_U64: ds_sbuf_printf(b, "%" PRIu64, v.u64); break;
    case DS_V_I64: ds_sbuf_printf(b, "%" PRId64, v.i64); break;
    case DS_V_F32: fmt_float(b, v.f32, true); break;
    case DS_V_F64: fmt_float(b, v.f64, false); break;
    case DS_V_BOOL: ds_sbuf_puts(b, v.u8 ? "true" : "false"); break;
    default: ds_sbuf_puts(b, "?"); break;
    }
}

void ds_meta_format(const struct ds_meta *m, size_t i, char *buf, size_t cap, size_t max_elems)
{
    const struct entry *en = entry_at(m, i);
    struct ds_sbuf b = DS_SBUF_INIT;

    if (!buf || cap == 0)
        return;
    // The text is built whole and cut to cap at the end; the loop stops once
    // the text no longer fits, since what follows would be cut anyway.
    if (!en) {
        ds_sbuf_puts(&b, "?");
    } else if (en->type == DS_V_STR) {
        ds_sbuf_json_string(&b, en->str, en->len, DS_SBUF_JSON_DEL);
    } else if (en->type == DS_V_ARR) {
        uint64_t shown = en->n < max_elems ? en->n : max_elems;
        size_t esz = vtype_sizes[en->elem];
        ds_sbuf_puts(&b, "[");
        for (uint64_t j = 0; j < shown && b.len < cap; j++) {
            if (j)
                ds_sbuf_puts(&b, ", ");
            if (en->elem == DS_V_STR)
                ds_sbuf_json_string(&b, en->str + en->offs[j],
                                    (size_t)(en->offs[j + 1] - en->offs[j] - 1),
                                    DS_SBUF_JSON_DEL);
            else
                fmt_scalar(&b, en->elem, (const char *)en->data + j * esz);
        }
        if (shown < en->n)
            ds_sbuf_puts(&b, shown ? ", ...]" : "...]");
        else
            ds_sbuf_puts(&b, "]");
        ds_sbuf_printf(&b, " (%" PRIu64 ")", en->n);
    } else {
        fmt_scalar(&b, en->type, &en->v);
    }
    if (b.err) // out of memory: say so as briefly as a missing entry
        fit_text(buf, cap, "?", 1);
    else
        fit_text(buf, cap, b.buf, b.len);
    ds_sbuf_release(&b);
}
