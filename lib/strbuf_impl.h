/*
 * strbuf_impl.h - internal growable byte buffer of libds (never included by cmd/).
 *
 * The text writers (metadata display, safetensors headers and index, config.json
 * and tokenizer.json) build their output in a ds_sbuf. Errors are sticky: the
 * first failure (out of memory, size overflow) is kept in err, and every later
 * write does nothing, so a writer checks once at the end:
 *
 *     struct ds_sbuf b = DS_SBUF_INIT;
 *     ds_sbuf_puts(&b, "{");
 *     ds_sbuf_json_string(&b, name, strlen(name), 0);
 *     ds_sbuf_puts(&b, "}");
 *     rc = ds_sbuf_detach(&b, &text, &len);   // or use b.buf, then ds_sbuf_release()
 *
 * A zeroed struct ds_sbuf is an empty buffer. buf is owned by the buffer, NULL
 * until the first write and NUL-terminated after it (len excludes the NUL).
 */
#ifndef DS_STRBUF_IMPL_H
#define DS_STRBUF_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

struct ds_sbuf {
    char *buf;     /* owned, malloc'd; NULL before the first write */
    size_t len;    /* bytes in buf, not counting the NUL */
    size_t cap;    /* bytes allocated */
    ds_err err;    /* first failure; DS_OK while none */
};

#define DS_SBUF_INIT {NULL, 0, 0, DS_OK}

/* Frees the text and makes b empty again (err back to DS_OK). */
void ds_sbuf_release(struct ds_sbuf *b);

/* Hands the text over: on success *out (NUL-terminated, malloc'd, free with free())
 * and *len (may be NULL) are set; on a sticky error the text is freed and the error
 * returned. Either way b is empty afterwards. */
ds_err ds_sbuf_detach(struct ds_sbuf *b, char **out, size_t *len);

/* Appends n bytes of s (which may hold NULs). */
void ds_sbuf_put(struct ds_sbuf *b, const void *s, size_t n);
void ds_sbuf_puts(struct ds_sbuf *b, const char *s);
void ds_sbuf_printf(struct ds_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Decimal, as "%llu". */
void ds_sbuf_u64(struct ds_sbuf *b, uint64_t v);

/* Flags of ds_sbuf_json_string(). */
enum ds_sbuf_json_flags {
    /* Escape 0x7f (DEL) as \u007f. */
    DS_SBUF_JSON_DEL = 1 << 0,
    /* Escape everything outside ' '..'~' as Python's json.dumps(ensure_ascii=True)
     * does: 0x7f as \u007f, each well-formed UTF-8 character as \uXXXX (a surrogate
     * pair above U+FFFF). Bytes of malformed UTF-8 pass through unchanged. */
    DS_SBUF_JSON_ASCII = 1 << 1,
};

/* Appends s[0..len) as a quoted JSON string. Always escaped: '"' and '\\' with a
 * backslash; \b \f \n \r \t in their short forms; the other bytes below 0x20
 * (NUL included) as \u00XX. Hex digits are lowercase. Without flags, bytes from
 * 0x7f up are copied as they are, as serde_json writes them. */
void ds_sbuf_json_string(struct ds_sbuf *b, const char *s, size_t len, unsigned flags);

#endif
