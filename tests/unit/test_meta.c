/* test_meta.c - ordered metadata: setters, getters, replace, remove, dup, format. */
#include <float.h>
#include <stdint.h>

#include "ds_meta.h"
#include "test.h"

TEST(vtype_names)
{
    ASSERT_STR(ds_vtype_name(DS_V_U8), "uint8");
    ASSERT_STR(ds_vtype_name(DS_V_STR), "string");
    ASSERT_STR(ds_vtype_name(DS_V_ARR), "array");
    ASSERT_STR(ds_vtype_name(DS_V_F64), "float64");
    ASSERT_STR(ds_vtype_name((enum ds_vtype)13), "?");
    ASSERT_EQ_INT(ds_vtype_size(DS_V_U8), 1);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_I16), 2);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_F32), 4);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_BOOL), 1);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_U64), 8);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_F64), 8);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_STR), 0);
    ASSERT_EQ_INT(ds_vtype_size(DS_V_ARR), 0);
}

TEST(scalars)
{
    struct ds_meta *m = ds_meta_new();
    ASSERT(m);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 1e300;
    ASSERT_OK(ds_meta_set(m, "u8", DS_V_U8, &u8));
    ASSERT_OK(ds_meta_set(m, "i8", DS_V_I8, &i8));
    ASSERT_OK(ds_meta_set(m, "u16", DS_V_U16, &u16));
    ASSERT_OK(ds_meta_set(m, "i16", DS_V_I16, &i16));
    ASSERT_OK(ds_meta_set_u32(m, "u32", 4000000000u));
    ASSERT_OK(ds_meta_set_i32(m, "i32", -2000000000));
    ASSERT_OK(ds_meta_set_f32(m, "f32", 0.5f));
    ASSERT_OK(ds_meta_set_bool(m, "bool", true));
    ASSERT_OK(ds_meta_set(m, "u64", DS_V_U64, &u64));
    ASSERT_OK(ds_meta_set(m, "i64", DS_V_I64, &i64));
    ASSERT_OK(ds_meta_set(m, "f64", DS_V_F64, &f64));
    ASSERT_OK(ds_meta_set_u64(m, "u64s", 12345));
    ASSERT_EQ_INT(ds_meta_count(m), 12);

    static const char *keys[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                 "u64", "i64", "f64", "u64s"};
    static const enum ds_vtype types[] = {DS_V_U8, DS_V_I8, DS_V_U16, DS_V_I16,
                                          DS_V_U32, DS_V_I32, DS_V_F32, DS_V_BOOL,
                                          DS_V_U64, DS_V_I64, DS_V_F64, DS_V_U64};
    for (size_t i = 0; i < 12; i++) {
        ASSERT_STR(ds_meta_key(m, i), keys[i]);
        ASSERT_EQ_INT(ds_meta_type(m, i), types[i]);
        ASSERT_EQ_INT(ds_meta_find(m, keys[i]), i);
        ASSERT(ds_meta_scalar(m, i) != NULL);
        ASSERT(ds_meta_str(m, i, NULL) == NULL);
        ASSERT(!ds_meta_arr(m, i, NULL, NULL));
    }
    ASSERT(ds_meta_key(m, 12) == NULL);
    ASSERT_EQ_INT(ds_meta_find(m, "nope"), -1);
    ASSERT(ds_meta_scalar(m, 99) == NULL);

    // Raw bytes by index.
    ASSERT_EQ_INT(*(const uint8_t *)ds_meta_scalar(m, 0), 200);
    ASSERT_EQ_INT(*(const int8_t *)ds_meta_scalar(m, 1), -100);
    ASSERT_EQ_INT(*(const uint16_t *)ds_meta_scalar(m, 2), 60000);
    ASSERT_EQ_INT(*(const int16_t *)ds_meta_scalar(m, 3), -30000);
    ASSERT_EQ_INT(*(const uint32_t *)ds_meta_scalar(m, 4), 4000000000u);
    ASSERT_EQ_INT(*(const int32_t *)ds_meta_scalar(m, 5), -2000000000);
    ASSERT(*(const float *)ds_meta_scalar(m, 6) == 0.5f);
    ASSERT_EQ_INT(*(const uint8_t *)ds_meta_scalar(m, 7), 1);
    ASSERT(*(const uint64_t *)ds_meta_scalar(m, 8) == UINT64_MAX);
    ASSERT(*(const int64_t *)ds_meta_scalar(m, 9) == INT64_MIN);
    ASSERT(*(const double *)ds_meta_scalar(m, 10) == 1e300);

    // get_int: integers and bool, converted; u64 above INT64_MAX fails; floats fail.
    int64_t v = 0;
    ASSERT(ds_meta_get_int(m, "u8", &v) && v == 200);
    ASSERT(ds_meta_get_int(m, "i8", &v) && v == -100);
    ASSERT(ds_meta_get_int(m, "u16", &v) && v == 60000);
    ASSERT(ds_meta_get_int(m, "i16", &v) && v == -30000);
    ASSERT(ds_meta_get_int(m, "u32", &v) && v == 4000000000LL);
    ASSERT(ds_meta_get_int(m, "i32", &v) && v == -2000000000LL);
    ASSERT(ds_meta_get_int(m, "bool", &v) && v == 1);
    ASSERT(ds_meta_get_int(m, "i64", &v) && v == INT64_MIN);
    ASSERT(ds_meta_get_int(m, "u64s", &v) && v == 12345);
    v = 7;
    ASSERT(!ds_meta_get_int(m, "u64", &v));
    ASSERT_EQ_INT(v, 7);
    ASSERT(!ds_meta_get_int(m, "f32", &v));
    ASSERT(!ds_meta_get_int(m, "f64", &v));
    ASSERT(!ds_meta_get_int(m, "missing", &v));
    ASSERT_OK(ds_meta_set_u64(m, "u64max", (uint64_t)INT64_MAX));
    ASSERT(ds_meta_get_int(m, "u64max", &v) && v == INT64_MAX);

    // get_float: any numeric entry.
    double d = 0;
    ASSERT(ds_meta_get_float(m, "f32", &d) && d == 0.5);
    ASSERT(ds_meta_get_float(m, "f64", &d) && d == 1e300);
    ASSERT(ds_meta_get_float(m, "i32", &d) && d == -2000000000.0);
    ASSERT(ds_meta_get_float(m, "u64", &d) && d == 18446744073709551615.0);
    ASSERT(ds_meta_get_float(m, "i8", &d) && d == -100.0);
    ASSERT(!ds_meta_get_float(m, "missing", &d));

    // get_bool: bool only.
    bool b = false;
    ASSERT(ds_meta_get_bool(m, "bool", &b) && b);
    ASSERT(!ds_meta_get_bool(m, "u8", &b));
    ASSERT(ds_meta_get_str(m, "u8", NULL) == NULL);

    // Scalar setters reject STR/ARR and bad types.
    ASSERT_ERR(ds_meta_set(m, "x", DS_V_STR, &u8), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set(m, "x", DS_V_ARR, &u8), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set(m, "x", (enum ds_vtype)42, &u8), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set(m, NULL, DS_V_U8, &u8), DS_ERR_ARG);
    ASSERT_EQ_INT(ds_meta_find(m, "x"), -1);
    ds_meta_free(m);
    ds_meta_free(NULL);
}

TEST(strings)
{
    struct ds_meta *m = ds_meta_new();
    size_t len = 99;
    ASSERT(m);
    ASSERT_OK(ds_meta_set_str(m, "general.name", "DeepSeek-V2-Lite"));
    ASSERT_OK(ds_meta_set_str(m, "empty", ""));
    ASSERT_OK(ds_meta_set_strn(m, "bin", "a\0b\0", 4));
    ASSERT_OK(ds_meta_set_strn(m, "prefix", "abcdef", 3));

    const char *s = ds_meta_get_str(m, "general.name", &len);
    ASSERT(s);
    ASSERT_STR(s, "DeepSeek-V2-Lite");
    ASSERT_EQ_INT(len, 16);
    s = ds_meta_get_str(m, "empty", &len);
    ASSERT(s && s[0] == '\0' && len == 0);
    s = ds_meta_get_str(m, "bin", &len);
    ASSERT(s && len == 4 && memcmp(s, "a\0b\0", 5) == 0);
    s = ds_meta_get_str(m, "prefix", &len);
    ASSERT(s && len == 3);
    ASSERT_STR(s, "abc");
    ASSERT(ds_meta_get_str(m, "missing", &len) == NULL);
    ASSERT_EQ_INT(ds_meta_type(m, 0), DS_V_STR);
    ASSERT(ds_meta_scalar(m, 0) == NULL);
    int64_t v;
    ASSERT(!ds_meta_get_int(m, "general.name", &v));

    // The setter copies.
    char buf[8] = "hello";
    ASSERT_OK(ds_meta_set_str(m, "copy", buf));
    buf[0] = 'j';
    ASSERT_STR(ds_meta_get_str(m, "copy", NULL), "hello");

    // Setting a key from its own current value.
    ASSERT_OK(ds_meta_set_str(m, "copy", ds_meta_get_str(m, "copy", NULL) + 1));
    ASSERT_STR(ds_meta_get_str(m, "copy", NULL), "ello");

    ASSERT_ERR(ds_meta_set_str(m, "x", NULL), DS_ERR_ARG);
    ASSERT_OK(ds_meta_set_strn(m, "nullempty", NULL, 0));
    ASSERT_STR(ds_meta_get_str(m, "nullempty", NULL), "");
    ds_meta_free(m);
}

TEST(replace_keeps_order)
{
    struct ds_meta *m = ds_meta_new();
    ASSERT(m);
    ASSERT_OK(ds_meta_set_u32(m, "a", 1));
    ASSERT_OK(ds_meta_set_str(m, "b", "two"));
    ASSERT_OK(ds_meta_set_u32(m, "c", 3));
    // Replace with another type, in place.
    ASSERT_OK(ds_meta_set_str(m, "a", "one"));
    float arr[3] = {1, 2, 3};
    ASSERT_OK(ds_meta_set_arr(m, "b", DS_V_F32, 3, arr));
    ASSERT_OK(ds_meta_set_f32(m, "c", 3.5f));
    ASSERT_EQ_INT(ds_meta_count(m), 3);
    ASSERT_STR(ds_meta_key(m, 0), "a");
    ASSERT_STR(ds_meta_key(m, 1), "b");
    ASSERT_STR(ds_meta_key(m, 2), "c");
    ASSERT_EQ_INT(ds_meta_type(m, 0), DS_V_STR);
    ASSERT_EQ_INT(ds_meta_type(m, 1), DS_V_ARR);
    ASSERT_EQ_INT(ds_meta_type(m, 2), DS_V_F32);
    ASSERT_STR(ds_meta_get_str(m, "a", NULL), "one");
    const char *ss[2] = {"x", "y"};
    ASSERT_OK(ds_meta_set_str_arr(m, "b", 2, ss, NULL));
    ASSERT_OK(ds_meta_set_u32(m, "a", 10));
    int64_t v;
    ASSERT(ds_meta_get_int(m, "a", &v) && v == 10);
    ASSERT_STR(ds_meta_arr_str(m, 1, 1, NULL), "y");
    ASSERT_EQ_INT(ds_meta_count(m), 3);
    ASSERT_EQ_INT(ds_meta_find(m, "c"), 2);
    ds_meta_free(m);
}

TEST(remove)
{
    struct ds_meta *m = ds_meta_new();
    char key[32];
    ASSERT(m);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ASSERT_OK(ds_meta_set_i32(m, key, i));
    }
    ds_meta_remove(m, "k0");
    ds_meta_remove(m, "k50");
    ds_meta_remove(m, "k99");
    ds_meta_remove(m, "missing");
    ASSERT_EQ_INT(ds_meta_count(m), 97);
    ASSERT_EQ_INT(ds_meta_find(m, "k0"), -1);
    ASSERT_EQ_INT(ds_meta_find(m, "k50"), -1);
    ASSERT_EQ_INT(ds_meta_find(m, "k99"), -1);
    ASSERT_STR(ds_meta_key(m, 0), "k1");
    ASSERT_EQ_INT(ds_meta_find(m, "k1"), 0);
    ASSERT_EQ_INT(ds_meta_find(m, "k51"), 49);
    ASSERT_EQ_INT(ds_meta_find(m, "k98"), 96);
    for (int i = 1; i < 99; i++) {
        int64_t v;
        snprintf(key, sizeof(key), "k%d", i);
        if (i == 50)
            continue;
        ASSERT_MSG(ds_meta_get_int(m, key, &v) && v == i, "%s", key);
        ASSERT_STR(ds_meta_key(m, (size_t)ds_meta_find(m, key)), key);
    }
    // Re-adding appends at the end.
    ASSERT_OK(ds_meta_set_i32(m, "k0", 0));
    ASSERT_EQ_INT(ds_meta_find(m, "k0"), 97);
    // Remove everything.
    while (ds_meta_count(m))
        ds_meta_remove(m, ds_meta_key(m, ds_meta_count(m) / 2));
    ASSERT_EQ_INT(ds_meta_find(m, "k1"), -1);
    ASSERT_OK(ds_meta_set_i32(m, "again", 1));
    ASSERT_EQ_INT(ds_meta_find(m, "again"), 0);
    ds_meta_free(m);
}

TEST(numeric_arrays)
{
    struct ds_meta *m = ds_meta_new();
    enum ds_vtype et;
    uint64_t n;
    ASSERT(m);
    int32_t ti[5] = {1, 1, 3, -4, 6};
    float sc[3] = {0.5f, -1.25f, 1e-3f};
    uint8_t flags[2] = {1, 0};
    ASSERT_OK(ds_meta_set_arr(m, "tokenizer.ggml.token_type", DS_V_I32, 5, ti));
    ASSERT_OK(ds_meta_set_arr(m, "scores", DS_V_F32, 3, sc));
    ASSERT_OK(ds_meta_set_arr(m, "flags", DS_V_BOOL, 2, flags));
    ASSERT_OK(ds_meta_set_arr(m, "empty", DS_V_U64, 0, NULL));
    ti[0] = 42; // copied

    ASSERT(ds_meta_arr(m, 0, &et, &n));
    ASSERT_EQ_INT(et, DS_V_I32);
    ASSERT_EQ_INT(n, 5);
    const int32_t *pi = ds_meta_arr_data(m, 0);
    ASSERT(pi && pi[0] == 1 && pi[3] == -4 && pi[4] == 6);
    const float *pf = ds_meta_arr_data(m, 1);
    ASSERT(pf && pf[1] == -1.25f);
    ASSERT(ds_meta_arr(m, 3, &et, &n) && et == DS_V_U64 && n == 0);
    ASSERT(ds_meta_arr_str(m, 0, 0, NULL) == NULL);
    ASSERT(ds_meta_scalar(m, 0) == NULL);
    int64_t v;
    ASSERT(!ds_meta_get_int(m, "scores", &v));
    double d;
    ASSERT(!ds_meta_get_float(m, "scores", &d));

    ASSERT_ERR(ds_meta_set_arr(m, "bad", DS_V_STR, 1, ti), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set_arr(m, "bad", DS_V_ARR, 1, ti), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set_arr(m, "bad", DS_V_I32, 1, NULL), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set_arr(m, "bad", DS_V_U64, UINT64_MAX / 4, ti), DS_ERR_LIMIT);
    ASSERT_EQ_INT(ds_meta_find(m, "bad"), -1);
    ds_meta_free(m);
}

TEST(string_arrays)
{
    struct ds_meta *m = ds_meta_new();
    enum ds_vtype et;
    uint64_t n;
    size_t len;
    ASSERT(m);
    const char *toks[5] = {"<s>", "", "hello", " world", "\xc4\xa0the"};
    ASSERT_OK(ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", 5, toks, NULL));
    ASSERT(ds_meta_arr(m, 0, &et, &n));
    ASSERT_EQ_INT(et, DS_V_STR);
    ASSERT_EQ_INT(n, 5);
    for (uint64_t j = 0; j < 5; j++) {
        const char *s = ds_meta_arr_str(m, 0, j, &len);
        ASSERT(s);
        ASSERT_STR(s, toks[j]);
        ASSERT_EQ_INT(len, strlen(toks[j]));
    }
    ASSERT(ds_meta_arr_str(m, 0, 5, &len) == NULL);
    ASSERT(ds_meta_arr_data(m, 0) == NULL);

    // Explicit lengths: a prefix of each string, and a NULL pointer of length 0.
    const char *p[3] = {"abcdef", NULL, "xyz"};
    size_t lens[3] = {2, 0, 3};
    ASSERT_OK(ds_meta_set_str_arr(m, "merges", 3, p, lens));
    ASSERT_STR(ds_meta_arr_str(m, 1, 0, &len), "ab");
    ASSERT_EQ_INT(len, 2);
    ASSERT_STR(ds_meta_arr_str(m, 1, 1, &len), "");
    ASSERT_EQ_INT(len, 0);
    ASSERT_STR(ds_meta_arr_str(m, 1, 2, &len), "xyz");

    ASSERT_OK(ds_meta_set_str_arr(m, "none", 0, NULL, NULL));
    ASSERT(ds_meta_arr(m, 2, &et, &n) && et == DS_V_STR && n == 0);

    const char *bad[2] = {"a", NULL};
    ASSERT_ERR(ds_meta_set_str_arr(m, "bad", 2, bad, NULL), DS_ERR_ARG);
    ASSERT_ERR(ds_meta_set_str_arr(m, "bad", 2, NULL, NULL), DS_ERR_ARG);
    ASSERT_EQ_INT(ds_meta_find(m, "bad"), -1);
    ds_meta_free(m);
}

TEST(big_string_array)
{
    const uint64_t N = 200000;
    char **strs = malloc(N * sizeof(*strs));
    char *pool = malloc(N * 16);
    struct ds_meta *m = ds_meta_new(), *c = NULL;
    ASSERT(strs && pool && m);
    for (uint64_t j = 0; j < N; j++) {
        strs[j] = pool + j * 16;
        if (j % 1000 == 7)
            strs[j][0] = '\0';
        else
            snprintf(strs[j], 16, "tok%llu", (unsigned long long)j);
    }
    ds_err rc = ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", N, (const char *const *)strs,
                                    NULL);
    int ok = rc == DS_OK;
    if (ok) {
        c = ds_meta_dup(m);
        for (uint64_t j = 0; ok && j < N; j++) {
            size_t len;
            const char *s = ds_meta_arr_str(m, 0, j, &len);
            const char *t = c ? ds_meta_arr_str(c, 0, j, NULL) : NULL;
            ok = s && t && strcmp(s, strs[j]) == 0 && strcmp(t, strs[j]) == 0 &&
                 len == strlen(strs[j]);
        }
    }
    char out[128];
    if (ok)
        ds_meta_format(m, 0, out, sizeof(out), 3);
    ds_meta_free(c);
    ds_meta_free(m);
    free(pool);
    free(strs);
    ASSERT(ok);
    ASSERT_STR(out, "[\"tok0\", \"tok1\", \"tok2\", ...] (200000)");
}

static bool meta_equal(const struct ds_meta *a, const struct ds_meta *b)
{
    if (ds_meta_count(a) != ds_meta_count(b))
        return false;
    for (size_t i = 0; i < ds_meta_count(a); i++) {
        enum ds_vtype t = ds_meta_type(a, i), ea, eb;
        uint64_t na, nb;
        size_t la, lb;
        if (strcmp(ds_meta_key(a, i), ds_meta_key(b, i)) || t != ds_meta_type(b, i))
            return false;
        if (t == DS_V_STR) {
            const char *sa = ds_meta_str(a, i, &la), *sb = ds_meta_str(b, i, &lb);
            if (la != lb || memcmp(sa, sb, la + 1) || sa == sb)
                return false;
        } else if (t == DS_V_ARR) {
            if (!ds_meta_arr(a, i, &ea, &na) || !ds_meta_arr(b, i, &eb, &nb) || ea != eb ||
                na != nb)
                return false;
            if (ea == DS_V_STR) {
                for (uint64_t j = 0; j < na; j++) {
                    const char *sa = ds_meta_arr_str(a, i, j, &la);
                    const char *sb = ds_meta_arr_str(b, i, j, &lb);
                    if (la != lb || memcmp(sa, sb, la + 1) || sa == sb)
                        return false;
                }
            } else {
                const void *da = ds_meta_arr_data(a, i), *db = ds_meta_arr_data(b, i);
                if (da == db || memcmp(da, db, (size_t)na * ds_vtype_size(ea)))
                    return false;
            }
        } else if (memcmp(ds_meta_scalar(a, i), ds_meta_scalar(b, i), ds_vtype_size(t))) {
            return false;
        }
    }
    return true;
}

TEST(dup)
{
    struct ds_meta *m = ds_meta_new(), *c;
    ASSERT(m);
    const char *toks[3] = {"a", "", "c"};
    int16_t arr[4] = {1, -2, 3, -4};
    ASSERT_OK(ds_meta_set_str(m, "general.architecture", "deepseek2"));
    ASSERT_OK(ds_meta_set_u32(m, "deepseek2.block_count", 27));
    ASSERT_OK(ds_meta_set_f32(m, "deepseek2.rope.freq_base", 10000.0f));
    ASSERT_OK(ds_meta_set_bool(m, "tokenizer.ggml.add_bos_token", true));
    ASSERT_OK(ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", 3, toks, NULL));
    ASSERT_OK(ds_meta_set_arr(m, "x", DS_V_I16, 4, arr));
    ds_meta_remove(m, "deepseek2.block_count");
    ASSERT_OK(ds_meta_set_u32(m, "deepseek2.block_count", 28));

    c = ds_meta_dup(m);
    ASSERT(c);
    ASSERT(meta_equal(m, c));
    ASSERT_EQ_INT(ds_meta_find(c, "deepseek2.block_count"), 5);
    // Independent: changing the copy leaves the original alone.
    ASSERT_OK(ds_meta_set_str(c, "general.architecture", "llama"));
    ASSERT_OK(ds_meta_set_u32(c, "new", 1));
    ASSERT_STR(ds_meta_get_str(m, "general.architecture", NULL), "deepseek2");
    ASSERT_EQ_INT(ds_meta_find(m, "new"), -1);
    ds_meta_free(m);
    ASSERT_STR(ds_meta_arr_str(c, 3, 2, NULL), "c");
    ds_meta_free(c);

    struct ds_meta *e = ds_meta_new(), *ec;
    ASSERT(e);
    ec = ds_meta_dup(e);
    ASSERT(ec && ds_meta_count(ec) == 0);
    ds_meta_free(e);
    ds_meta_free(ec);
}

static const char *fmt(const struct ds_meta *m, const char *key, size_t cap, size_t max_elems)
{
    static char buf[512];
    long i = ds_meta_find(m, key);
    memset(buf, 'Z', sizeof(buf));
    if (i < 0)
        return "<missing>";
    ds_meta_format(m, (size_t)i, buf, cap, max_elems);
    return buf;
}

TEST(format)
{
    struct ds_meta *m = ds_meta_new();
    ASSERT(m);
    uint8_t u8 = 255;
    int8_t i8 = -128;
    int64_t i64 = INT64_MIN;
    uint64_t u64 = UINT64_MAX;
    double f64 = 0.1;
    ASSERT_OK(ds_meta_set(m, "u8", DS_V_U8, &u8));
    ASSERT_OK(ds_meta_set(m, "i8", DS_V_I8, &i8));
    ASSERT_OK(ds_meta_set(m, "i64", DS_V_I64, &i64));
    ASSERT_OK(ds_meta_set(m, "u64", DS_V_U64, &u64));
    ASSERT_OK(ds_meta_set(m, "f64", DS_V_F64, &f64));
    ASSERT_OK(ds_meta_set_f32(m, "f32", 0.1f));
    ASSERT_OK(ds_meta_set_f32(m, "f32b", 1e-6f));
    ASSERT_OK(ds_meta_set_f32(m, "f32c", 10000.0f));
    ASSERT_OK(ds_meta_set_f32(m, "f32d", 0.5f));
    ASSERT_OK(ds_meta_set_f32(m, "f32e", 3.14159274f));
    ASSERT_OK(ds_meta_set_bool(m, "t", true));
    ASSERT_OK(ds_meta_set_bool(m, "f", false));
    ASSERT_STR(fmt(m, "u8", 64, 8), "255");
    ASSERT_STR(fmt(m, "i8", 64, 8), "-128");
    ASSERT_STR(fmt(m, "i64", 64, 8), "-9223372036854775808");
    ASSERT_STR(fmt(m, "u64", 64, 8), "18446744073709551615");
    ASSERT_STR(fmt(m, "f64", 64, 8), "0.1");
    ASSERT_STR(fmt(m, "f32", 64, 8), "0.1");
    ASSERT_STR(fmt(m, "f32b", 64, 8), "1e-06");
    ASSERT_STR(fmt(m, "f32c", 64, 8), "10000");
    ASSERT_STR(fmt(m, "f32d", 64, 8), "0.5");
    ASSERT_STR(fmt(m, "f32e", 64, 8), "3.1415927");
    ASSERT_STR(fmt(m, "t", 64, 8), "true");
    ASSERT_STR(fmt(m, "f", 64, 8), "false");
    static const struct {
        double v;
        const char *want;
    } fl[] = {
        {123456.0, "123456"}, {1e6, "1e+06"}, {0.0001, "0.0001"}, {1.5e-5, "1.5e-05"},
        {-0.0, "-0"}, {1.0 / 3.0, "0.3333333333333333"}, {INFINITY, "inf"},
        {-INFINITY, "-inf"}, {999999.5, "999999.5"}, {1e300, "1e+300"},
    };
    for (size_t k = 0; k < sizeof(fl) / sizeof(fl[0]); k++) {
        ASSERT_OK(ds_meta_set(m, "fl", DS_V_F64, &fl[k].v));
        ASSERT_STR(fmt(m, "fl", 64, 8), fl[k].want);
    }
    ASSERT_OK(ds_meta_set_f32(m, "fl", NAN));
    ASSERT(strstr(fmt(m, "fl", 64, 8), "nan") != NULL);
    ASSERT_OK(ds_meta_set_f32(m, "fl", 1.0f / 3.0f));
    ASSERT_STR(fmt(m, "fl", 64, 8), "0.33333334");

    // Strings: JSON escapes; bytes >= 0x80 pass through.
    ASSERT_OK(ds_meta_set_strn(m, "s", "a\"b\\c\nd\te\x01\x7f\xc3\xa9\0z", 15));
    ASSERT_STR(fmt(m, "s", 128, 8), "\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f\xc3\xa9\\u0000z\"");
    ASSERT_OK(ds_meta_set_str(m, "e", ""));
    ASSERT_STR(fmt(m, "e", 64, 8), "\"\"");

    // Arrays.
    int32_t ia[5] = {1, -2, 3, 4, 5};
    float fa[2] = {0.25f, 1e10f};
    uint8_t ba[2] = {1, 0};
    const char *sa[3] = {"a", "b\"", ""};
    ASSERT_OK(ds_meta_set_arr(m, "ia", DS_V_I32, 5, ia));
    ASSERT_OK(ds_meta_set_arr(m, "fa", DS_V_F32, 2, fa));
    ASSERT_OK(ds_meta_set_arr(m, "ba", DS_V_BOOL, 2, ba));
    ASSERT_OK(ds_meta_set_arr(m, "ea", DS_V_I32, 0, NULL));
    ASSERT_OK(ds_meta_set_str_arr(m, "sa", 3, sa, NULL));
    ASSERT_STR(fmt(m, "ia", 128, 8), "[1, -2, 3, 4, 5] (5)");
    ASSERT_STR(fmt(m, "ia", 128, 5), "[1, -2, 3, 4, 5] (5)");
    ASSERT_STR(fmt(m, "ia", 128, 3), "[1, -2, 3, ...] (5)");
    ASSERT_STR(fmt(m, "ia", 128, 0), "[...] (5)");
    ASSERT_STR(fmt(m, "fa", 128, 8), "[0.25, 1e+10] (2)");
    ASSERT_STR(fmt(m, "ba", 128, 8), "[true, false] (2)");
    ASSERT_STR(fmt(m, "ea", 128, 8), "[] (0)");
    ASSERT_STR(fmt(m, "sa", 128, 8), "[\"a\", \"b\\\"\", \"\"] (3)");
    ASSERT_STR(fmt(m, "sa", 128, 1), "[\"a\", ...] (3)");

    // Truncation at cap: always NUL-terminated, ends in "...", never overruns.
    const char *r = fmt(m, "ia", 10, 8);
    ASSERT_EQ_INT(strlen(r), 9);
    ASSERT_STR(r, "[1, -2...");
    ASSERT(r[10] == 'Z');
    r = fmt(m, "u64", 8, 8);
    ASSERT_STR(r, "1844...");
    r = fmt(m, "u64", 21, 8); // exactly fits
    ASSERT_STR(r, "18446744073709551615");
    r = fmt(m, "s", 6, 8);
    ASSERT_STR(r, "\"a...");
    r = fmt(m, "u8", 3, 8);
    ASSERT_STR(r, "..");
    r = fmt(m, "u8", 1, 8);
    ASSERT_STR(r, "");
    r = fmt(m, "u8", 0, 8);
    ASSERT(r[0] == 'Z');
    // A multi-byte UTF-8 character is not cut in half.
    ASSERT_OK(ds_meta_set_str(m, "u", "ab\xe2\x82\xac\xe2\x82\xac"));
    ASSERT_STR(fmt(m, "u", 9, 8), "\"ab...");
    ASSERT_STR(fmt(m, "u", 10, 8), "\"ab\xe2\x82\xac...");
    // A long string value.
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ASSERT_OK(ds_meta_set_str(m, "big", big));
    r = fmt(m, "big", 100, 8);
    ASSERT_EQ_INT(strlen(r), 99);
    ASSERT(r[0] == '"' && r[97] == '.' && r[98] == '.' && r[96] == '.' && r[95] == 'x');

    // Index out of range.
    char small[8];
    ds_meta_format(m, 9999, small, sizeof(small), 8);
    ASSERT_STR(small, "?");
    ds_meta_free(m);
}

TEST(many_keys)
{
    struct ds_meta *m = ds_meta_new();
    char key[32];
    ASSERT(m);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "blk.%d.attn", i);
        ASSERT_OK(ds_meta_set_i32(m, key, i));
    }
    for (int i = 0; i < 5000; i += 7) {
        snprintf(key, sizeof(key), "blk.%d.attn", i);
        ASSERT_EQ_INT(ds_meta_find(m, key), i);
        ASSERT_OK(ds_meta_set_i32(m, key, -i));
    }
    ASSERT_EQ_INT(ds_meta_count(m), 5000);
    int64_t v;
    ASSERT(ds_meta_get_int(m, "blk.14.attn", &v) && v == -14);
    ds_meta_free(m);
}

int main(void)
{
    RUN(vtype_names);
    RUN(scalars);
    RUN(strings);
    RUN(replace_keeps_order);
    RUN(remove);
    RUN(numeric_arrays);
    RUN(string_arrays);
    RUN(big_string_array);
    RUN(dup);
    RUN(format);
    RUN(many_keys);
    return test_report();
}
