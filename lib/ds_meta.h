/*
 * ds_meta.h - ordered key/value metadata with GGUF's value types.
 *
 * A struct ds_meta holds unique keys in insertion order; setting an existing
 * key replaces its value in place. It is what a GGUF header carries and what
 * the Hugging Face config and tokenizer are converted to. Strings are byte
 * strings with a length (not necessarily NUL-free); getters return them
 * NUL-terminated as well.
 */
#ifndef DS_META_H
#define DS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GGUF's value type ids (enum gguf_type). */
enum ds_vtype {
    DS_V_U8 = 0,
    DS_V_I8 = 1,
    DS_V_U16 = 2,
    DS_V_I16 = 3,
    DS_V_U32 = 4,
    DS_V_I32 = 5,
    DS_V_F32 = 6,
    DS_V_BOOL = 7,
    DS_V_STR = 8,
    DS_V_ARR = 9,
    DS_V_U64 = 10,
    DS_V_I64 = 11,
    DS_V_F64 = 12
};
#define DS_V_COUNT 13

/* "uint8", "int8", ..., "string", "array", ... ("?" when unknown). */
const char *ds_vtype_name(enum ds_vtype t);

/* Byte size of a scalar type on disk (0 for STR and ARR). */
size_t ds_vtype_size(enum ds_vtype t);

struct ds_meta;

/* Returns an empty collection, or NULL (DS_ERR_NOMEM). Free with ds_meta_free. */
struct ds_meta *ds_meta_new(void);
void ds_meta_free(struct ds_meta *m); /* accepts NULL */

/* Deep copy of src, or NULL. */
struct ds_meta *ds_meta_dup(const struct ds_meta *src);

size_t ds_meta_count(const struct ds_meta *m);

/* Index of key, or -1. */
long ds_meta_find(const struct ds_meta *m, const char *key);

/* Entry i (0 <= i < count): key (borrowed) and type. */
const char *ds_meta_key(const struct ds_meta *m, size_t i);
enum ds_vtype ds_meta_type(const struct ds_meta *m, size_t i);

/* ---- setters (copy their arguments; replace an existing key) ---------- */

/* Scalar of any numeric or bool type; value points to a value of that type
 * (uint8_t for BOOL). */
ds_err ds_meta_set(struct ds_meta *m, const char *key, enum ds_vtype type, const void *value);
ds_err ds_meta_set_u32(struct ds_meta *m, const char *key, uint32_t v);
ds_err ds_meta_set_i32(struct ds_meta *m, const char *key, int32_t v);
ds_err ds_meta_set_u64(struct ds_meta *m, const char *key, uint64_t v);
ds_err ds_meta_set_f32(struct ds_meta *m, const char *key, float v);
ds_err ds_meta_set_bool(struct ds_meta *m, const char *key, bool v);
ds_err ds_meta_set_str(struct ds_meta *m, const char *key, const char *s);
ds_err ds_meta_set_strn(struct ds_meta *m, const char *key, const char *s, size_t len);

/* Array of n packed scalars of type elem (not STR or ARR). */
ds_err ds_meta_set_arr(struct ds_meta *m, const char *key, enum ds_vtype elem, uint64_t n,
                       const void *data);

/* Array of n strings; lens may be NULL (then strlen is used). */
ds_err ds_meta_set_str_arr(struct ds_meta *m, const char *key, uint64_t n,
                           const char *const *strs, const size_t *lens);

/* Removes key if present. */
void ds_meta_remove(struct ds_meta *m, const char *key);

/* ---- getters by key ------------------------------------------------------ */

/* Any integer or bool entry, converted; false when missing, of another type,
 * or out of int64 range. */
bool ds_meta_get_int(const struct ds_meta *m, const char *key, int64_t *out);
/* Any numeric entry, converted to double. */
bool ds_meta_get_float(const struct ds_meta *m, const char *key, double *out);
bool ds_meta_get_bool(const struct ds_meta *m, const char *key, bool *out);
/* A string entry (borrowed, NUL-terminated); NULL when missing or not STR. */
const char *ds_meta_get_str(const struct ds_meta *m, const char *key, size_t *len);

/* ---- access by index ------------------------------------------------------ */

/* Scalar value i as its raw bytes (type ds_meta_type); NULL for STR/ARR. */
const void *ds_meta_scalar(const struct ds_meta *m, size_t i);
/* String value i (borrowed); NULL if not STR. */
const char *ds_meta_str(const struct ds_meta *m, size_t i, size_t *len);
/* Array value i: element type and count (false if not ARR). */
bool ds_meta_arr(const struct ds_meta *m, size_t i, enum ds_vtype *elem, uint64_t *n);
/* Packed element data of a numeric array (borrowed). */
const void *ds_meta_arr_data(const struct ds_meta *m, size_t i);
/* Element j of a string array (borrowed, NUL-terminated). */
const char *ds_meta_arr_str(const struct ds_meta *m, size_t i, uint64_t j, size_t *len);

/* Writes a short human-readable rendering of value i into buf (always
 * NUL-terminated, truncated with "..." past cap or after max_elems array
 * elements). Strings are quoted and escaped as JSON strings. */
void ds_meta_format(const struct ds_meta *m, size_t i, char *buf, size_t cap, size_t max_elems);

#ifdef __cplusplus
}
#endif
#endif
