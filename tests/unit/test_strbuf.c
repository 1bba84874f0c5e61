/* test_strbuf.c - the internal growable buffer and its JSON string escaper. */
#include <stdint.h>

#include "ds_error.h"
#include "strbuf_impl.h"
#include "test.h"

/* Every kind of byte the escaper treats apart, NUL included. */
static const char mixed[] = "a\"b\\c\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\xe2\x82\xac"
                            "\xf0\x9f\x98\x80\xef\xbf\xbf\0/<";

/* JSON text of s[0..len) with flags, in a static buffer. */
static const char *json(const char *s, size_t len, unsigned flags)
{
    static char out[256];
    struct ds_sbuf b = DS_SBUF_INIT;
    ds_sbuf_json_string(&b, s, len, flags);
    snprintf(out, sizeof(out), "%s", b.err ? "(error)" : b.buf);
    ds_sbuf_release(&b);
    return out;
}

TEST(put_printf_u64)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    char *text = NULL;
    size_t len = 0;

    ds_sbuf_put(&b, "ab\0c", 4);
    ds_sbuf_puts(&b, "de");
    ds_sbuf_u64(&b, UINT64_MAX);
    ds_sbuf_printf(&b, "|%s|%d", "01234567890123456789012345678901234567890123456789"
                   "01234567890123456789", -7);
    ASSERT_OK(b.err);
    ASSERT_EQ_INT(b.len, 4 + 2 + 20 + 74);
    ASSERT(memcmp(b.buf, "ab\0cde18446744073709551615|0123", 31) == 0);
    ASSERT_STR(b.buf + b.len - 4, "9|-7");
    ASSERT_OK(ds_sbuf_detach(&b, &text, &len));
    ASSERT_EQ_INT(len, 100);
    ASSERT(b.buf == NULL && b.len == 0);
    free(text);
}

TEST(detach_empty)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    char *text = NULL;
    ASSERT_OK(ds_sbuf_detach(&b, &text, NULL));
    ASSERT(text != NULL);
    ASSERT_STR(text, "");
    free(text);
}

TEST(sticky_error)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    char *text = NULL;

    ds_sbuf_puts(&b, "kept");
    b.err = DS_ERR_NOMEM; // as a failed allocation leaves it
    ds_sbuf_puts(&b, "dropped");
    ds_sbuf_printf(&b, "%d", 1);
    ds_sbuf_json_string(&b, "x", 1, 0);
    ASSERT_STR(b.buf, "kept");
    ASSERT_ERR(ds_sbuf_detach(&b, &text, NULL), DS_ERR_NOMEM);
    ASSERT(text == NULL);
    ASSERT(b.buf == NULL && b.err == DS_OK);
}

TEST(json_plain)
{
    // serde_json / cJSON style: only '"', '\\' and control characters.
    ASSERT_STR(json(mixed, sizeof(mixed) - 1, 0),
               "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\xe2\x82\xac"
               "\xf0\x9f\x98\x80\xef\xbf\xbf\\u0000/<\"");
    ASSERT_STR(json("", 0, 0), "\"\"");
}

TEST(json_del)
{
    ASSERT_STR(json(mixed, sizeof(mixed) - 1, DS_SBUF_JSON_DEL),
               "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\xc3\xa9\xe2\x82\xac"
               "\xf0\x9f\x98\x80\xef\xbf\xbf\\u0000/<\"");
}

TEST(json_ascii)
{
    // Python: json.dumps("a\"b\\c\b\f\n\r\t\x01\x1f\x7f\u00e9\u20ac\U0001F600\uffff\x00/<")
    ASSERT_STR(json(mixed, sizeof(mixed) - 1, DS_SBUF_JSON_ASCII),
               "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\\u00e9\\u20ac\\ud83d\\ude00"
               "\\uffff\\u0000/<\"");
    ASSERT_STR(json("\xf4\x8f\xbf\xbf", 4, DS_SBUF_JSON_ASCII), "\"\\udbff\\udfff\"");
    // Malformed UTF-8 (stray continuation, overlong, surrogate, above U+10FFFF,
    // cut short) passes through byte by byte.
    ASSERT_STR(json("\x80\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xff\xe2\x82", 13,
                    DS_SBUF_JSON_ASCII),
               "\"\x80\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xff\xe2\x82\"");
    ASSERT_STR(json("\xe2\x82x\xc3\xa9", 5, DS_SBUF_JSON_ASCII), "\"\xe2\x82x\\u00e9\"");
}

int main(void)
{
    RUN(put_printf_u64);
    RUN(detach_empty);
    RUN(sticky_error);
    RUN(json_plain);
    RUN(json_del);
    RUN(json_ascii);
    return test_report();
}
