/* error.c - error codes, the thread-local detail message, allocation helpers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error_impl.h"
#include "ds_banned.h"

static _Thread_local char errmsg[1024];
static _Thread_local char errloc[128];

static const char *const err_text[DS_ERR_COUNT] = {
    [DS_OK] = "success",
    [DS_ERR_NOMEM] = "out of memory",
    [DS_ERR_IO] = "input/output error",
    [DS_ERR_TRUNCATED] = "truncated input",
    [DS_ERR_FORMAT] = "malformed input",
    [DS_ERR_UNSUPPORTED] = "unsupported",
    [DS_ERR_LIMIT] = "size limit exceeded",
    [DS_ERR_ARG] = "invalid argument",
    [DS_ERR_NOT_FOUND] = "not found",
    [DS_ERR_EXISTS] = "already exists",
    [DS_ERR_STATE] = "call out of order",
    [DS_ERR_INTERRUPTED] = "interrupted",
};

const char *ds_strerror(ds_err e)
{
    if ((unsigned)e >= DS_ERR_COUNT)
        return "unknown error";
    return err_text[e];
}

const char *ds_errmsg(void)
{
    return errmsg;
}

const char *ds_errloc(void)
{
    return errloc;
}

void ds_clear_error(void)
{
    errmsg[0] = '\0';
    errloc[0] = '\0';
}

ds_err ds_set_error_at(const char *file, int line, ds_err e, const char *fmt, ...)
{
    va_list ap;
    const char *base = strrchr(file, '/');

    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
    va_end(ap);
    snprintf(errloc, sizeof(errloc), "%s:%d", base ? base + 1 : file, line);
    return e;
}

void *ds_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        ds_set_error(DS_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *ds_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        ds_set_error(DS_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *ds_realloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p)
        ds_set_error(DS_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

char *ds_strndup(const char *s, size_t n)
{
    char *p = ds_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *ds_strdup(const char *s)
{
    return ds_strndup(s, strlen(s));
}

ds_err ds_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    uint64_t bytes;
    void *p;

    if (need <= *cap)
        return DS_OK;
    ncap = *cap ? *cap : 8;
    while (ncap < need) {
        DS_RETURN_IF(ncap > SIZE_MAX / 2, DS_ERR_LIMIT, "array of %zu elements is too large",
                     need);
        ncap *= 2;
    }
    DS_RETURN_IF(ds_mul_u64(ncap, elem, &bytes) || bytes > SIZE_MAX, DS_ERR_LIMIT,
                 "array of %zu elements is too large", need);
    p = ds_realloc(*arr, (size_t)bytes);
    if (!p)
        return DS_ERR_NOMEM;
    *arr = p;
    *cap = ncap;
    return DS_OK;
}
