/*
 * ds_error.h - error codes of libds.
 *
 * Every fallible libds function returns a ds_err (DS_OK = 0) or NULL plus a
 * ds_err out-parameter. The numbers are stable: new codes are appended, never
 * renumbered. Besides the code, the failing call leaves a one-line detail
 * message in a thread-local buffer (ds_errmsg()), written in the CLI style:
 * lowercase, no full stop, the subject in single quotes, for example
 *   'model.safetensors': header length 4096 past end of file (size 100)
 * The library never prints and never exits; callers decide what to show.
 */
#ifndef DS_ERROR_H
#define DS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_err {
    DS_OK = 0,
    DS_ERR_NOMEM = 1,       /* an allocation failed */
    DS_ERR_IO = 2,          /* open, read, write, fsync, rename failed (errno text in the detail) */
    DS_ERR_TRUNCATED = 3,   /* input ended early */
    DS_ERR_FORMAT = 4,      /* malformed or inconsistent input data */
    DS_ERR_UNSUPPORTED = 5, /* well-formed but not supported (version, dtype, architecture) */
    DS_ERR_LIMIT = 6,       /* a size or count past a sane limit */
    DS_ERR_ARG = 7,         /* invalid argument from the caller */
    DS_ERR_NOT_FOUND = 8,   /* a missing file, tensor or key */
    DS_ERR_EXISTS = 9,      /* the output exists and overwriting was not allowed */
    DS_ERR_STATE = 10,      /* a call out of order */
    DS_ERR_INTERRUPTED = 11 /* cancelled by the caller (progress callback) */
} ds_err;

#define DS_ERR_COUNT 12

/* Static text for a code ("out of memory", "truncated input", ...). */
const char *ds_strerror(ds_err e);

/* Detail of the last error set in this thread; "" when none. Borrowed: valid
 * until the next libds call in this thread. */
const char *ds_errmsg(void);

/* "file.c:123" where the last error of this thread was raised; "" when none. */
const char *ds_errloc(void);

/* Forget the last error of this thread. */
void ds_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
