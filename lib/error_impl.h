/*
 * error_impl.h - internal error helpers of libds (never included by cmd/).
 *
 * ds_set_error() stores the detail message and location and returns the code,
 * so that a failure is one statement:
 *     DS_RETURN_IF(n > cap, DS_ERR_LIMIT, "'%s': %llu tensors is too many", name, n);
 * In functions with a single exit (goto out):
 *     DS_FAIL_IF(cond, DS_ERR_FORMAT, "...");   // sets rc, goto out
 *     DS_CHECK(other_call(...));               // rc = call; if (rc) goto out
 */
#ifndef DS_ERROR_IMPL_H
#define DS_ERROR_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include "ds_error.h"

ds_err ds_set_error_at(const char *file, int line, ds_err e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define ds_set_error(err, ...) ds_set_error_at(__FILE__, __LINE__, (err), __VA_ARGS__)

#define DS_RETURN_IF(cond, err, ...)                                                    \
    do {                                                                                \
        if (cond)                                                                       \
            return ds_set_error((err), __VA_ARGS__);                                    \
    } while (0)

#define DS_TRY(expr)                                                                    \
    do {                                                                                \
        ds_err ds_try_e_ = (expr);                                                      \
        if (ds_try_e_ != DS_OK)                                                         \
            return ds_try_e_;                                                           \
    } while (0)

#define DS_FAIL_IF(cond, err, ...)                                                      \
    do {                                                                                \
        if (cond) {                                                                     \
            rc = ds_set_error((err), __VA_ARGS__);                                      \
            goto out;                                                                   \
        }                                                                               \
    } while (0)

#define DS_CHECK(expr)                                                                  \
    do {                                                                                \
        rc = (expr);                                                                    \
        if (rc != DS_OK)                                                                \
            goto out;                                                                   \
    } while (0)

/* Overflow-checked size arithmetic: return 1 on overflow, 0 otherwise. */
static inline int ds_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline int ds_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* Allocation helpers that set DS_ERR_NOMEM's detail on failure (return NULL). */
void *ds_malloc(size_t n);
void *ds_calloc(size_t n, size_t size);
void *ds_realloc(void *p, size_t n);
char *ds_strdup(const char *s);
char *ds_strndup(const char *s, size_t n);

/* Grow *arr (elements of size elem) so that it holds at least need elements;
 * *cap is updated. Geometric growth, overflow-checked. */
ds_err ds_grow(void **arr, size_t *cap, size_t need, size_t elem);

#endif
