/* strbuf.c - growable byte buffer with a sticky error, and the JSON string escaper. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

void ds_sbuf_release(struct ds_sbuf *b)
{
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
    b->err = DS_OK;
}

ds_err ds_sbuf_detach(struct ds_sbuf *b, char **out, size_t *len)
{
    ds_err rc;

    ds_sbuf_put(b, "", 0); // an empty text is still a string
    rc = b->err;
    if (rc == DS_OK) {
        *out = b->buf;
        if (len)
            *len = b->len;
        b->buf = NULL;
    }
    ds_sbuf_release(b);
    return rc;
}

/* Makes room for n more bytes and the NUL; false (err set) when that fails. */
static bool reserve(struct ds_sbuf *b, size_t n)
{
    void *p = b->buf;

    if (b->err)
        return false;
    if (n > SIZE_MAX - b->len - 1) {
        b->err = ds_set_error(DS_ERR_LIMIT, "text is too large");
        return false;
    }
    b->err = ds_grow(&p, &b->cap, b->len + n + 1, 1);
    b->buf = p;
    return b->err == DS_OK;
}

void ds_sbuf_put(struct ds_sbuf *b, const void *s, size_t n)
{
    if (!reserve(b, n))
        return;
    if (n)
        memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void ds_sbuf_puts(struct ds_sbuf *b, const char *s)
{
    ds_sbuf_put(b, s, strlen(s));
}

void ds_sbuf_printf(struct ds_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        if (!b->err)
            b->err = ds_set_error(DS_ERR_ARG, "cannot format '%s'", fmt);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ds_sbuf_u64(struct ds_sbuf *b, uint64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    ds_sbuf_put(b, tmp, (size_t)k);
}

static void put_u16esc(struct ds_sbuf *b, uint32_t v)
{
    char tmp[8];
    int k = snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned)(v & 0xffffu));
    ds_sbuf_put(b, tmp, (size_t)k);
}

/* Decodes one well-formed UTF-8 sequence at p (at most avail bytes); returns
 * its length, 0 when malformed (overlong, surrogate, above U+10FFFF, cut short). */
static size_t utf8_decode(const unsigned char *p, size_t avail, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;

    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2, v = p[0] & 0x1fu, min = 0x80;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3, v = p[0] & 0x0fu, min = 0x800;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4, v = p[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Whether byte c is copied into a JSON string as it is. */
static inline bool json_plain(unsigned char c, unsigned flags)
{
    if (c < 0x20 || c == '"' || c == '\\')
        return false;
    if (c == 0x7f)
        return !(flags & (DS_SBUF_JSON_DEL | DS_SBUF_JSON_ASCII));
    return c < 0x80 || !(flags & DS_SBUF_JSON_ASCII);
}

void ds_sbuf_json_string(struct ds_sbuf *b, const char *s, size_t len, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    ds_sbuf_put(b, "\"", 1);
    while (p < end && !b->err) {
        const unsigned char *run = p;
        const char *esc = NULL;
        uint32_t cp;
        size_t k;

        while (p < end && json_plain(*p, flags))
            p++;
        ds_sbuf_put(b, run, (size_t)(p - run));
        if (p == end)
            break;
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default: break;
        }
        if (esc) {
            ds_sbuf_put(b, esc, 2);
            k = 1;
        } else if (*p < 0x80) {
            put_u16esc(b, *p);
            k = 1;
        } else if ((k = utf8_decode(p, (size_t)(end - p), &cp)) == 0) {
            ds_sbuf_put(b, p, 1);
            k = 1;
        } else if (cp < 0x10000) {
            put_u16esc(b, cp);
        } else {
            cp -= 0x10000;
            put_u16esc(b, 0xd800 + (cp >> 10));
            put_u16esc(b, 0xdc00 + (cp & 0x3ff));
        }
        p += k;
    }
    ds_sbuf_put(b, "\"", 1);
}
