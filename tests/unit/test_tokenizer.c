/*
 * test_tokenizer.c - byte-level BPE tokenizer: llama.cpp's test vectors for
 * the deepseek-llm vocabulary, Hugging Face's ids for the tiny checkpoints'
 * tokenizers (deepseek-v3 pre-tokenizer), round trips of random UTF-8,
 * streaming decoding, invalid input and speed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ds_error.h"
#include "ds_gguf.h"
#include "ds_hf.h"
#include "ds_io.h"
#include "ds_meta.h"
#include "ds_tokenizer.h"
#include "test.h"

/* deepseek-llm (the GGUF vocabulary), the same vocabulary with the
 * deepseek-coder pre-tokenizer, and the two tiny checkpoints (deepseek-v3). */
enum { TK_LLM, TK_CODER, TK_V3, TK_V2LITE, TK_COUNT };
static const char *const tk_name[TK_COUNT] = {"deepseek-llm", "deepseek-coder (llm vocab)",
                                              "tiny-v3-fp8", "tiny-v2lite"};
static struct ds_tokenizer *tk[TK_COUNT];
static struct ds_meta *llm_meta; /* the GGUF's metadata, for the error tests */

/* Whole file, NUL-terminated (NULL on failure). */
/* A whole test file, NUL-terminated (free with free()), or NULL. */
static char *slurp(const char *path, size_t *len)
{
    char *buf = NULL;
    return ds_read_file(path, (size_t)1 << 28, &buf, len) == DS_OK ? buf : NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Valid UTF-8 (strict), independent of the library's check. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (i + need >= n)
            return 0;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* ---- loading ------------------------------------------------------------ */

static ds_err load_gguf_meta(const char *path, struct ds_meta **out)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    ds_err e = ds_gguf_init(&g);

    *out = NULL;
    if (e == DS_OK)
        e = ds_reader_open(&r, path);
    if (e == DS_OK)
        e = ds_gguf_read(r, &g);
    if (e == DS_OK) {
        *out = g.meta;
        g.meta = NULL;
    }
    ds_reader_free(r);
    ds_gguf_release(&g);
    return e;
}

static ds_err load_tiny(const char *dir, struct ds_tokenizer **out)
{
    char p[256];
    size_t tl = 0, cl = 0;
    char *tok, *cfg;
    struct ds_meta *m = ds_meta_new();
    ds_err e = DS_ERR_NOMEM;

    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    tok = slurp(test_data(p), &tl);
    snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
    cfg = slurp(test_data(p), &cl);
    if (!tok || !cfg)
        e = DS_ERR_IO;
    else if (m)
        e = ds_hf_tokenizer_to_meta(tok, tl, cfg, cl, 0, dir, m);
    if (e == DS_OK)
        e = ds_tokenizer_new(m, out);
    ds_meta_free(m);
    free(tok);
    free(cfg);
    return e;
}

TEST(load)
{
    struct ds_meta *coder = NULL;

    ASSERT_OK(load_gguf_meta(test_data("vocab/ggml-vocab-deepseek-llm.gguf"), &llm_meta));
    ASSERT_STR(ds_meta_get_str(llm_meta, "tokenizer.ggml.pre", NULL), "deepseek-llm");
    ASSERT_OK(ds_tokenizer_new(llm_meta, &tk[TK_LLM]));
    coder = ds_meta_dup(llm_meta);
    ASSERT(coder);
    ASSERT_OK(ds_meta_set_str(coder, "tokenizer.ggml.pre", "deepseek-coder"));
    ds_err e = ds_tokenizer_new(coder, &tk[TK_CODER]);
    ds_meta_free(coder);
    ASSERT_OK(e);
    ASSERT_OK(load_tiny("tiny-v3-fp8", &tk[TK_V3]));
    ASSERT_OK(load_tiny("tiny-v2lite", &tk[TK_V2LITE]));
}

/* ---- reference vectors -------------------------------------------------- */

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof(*a)));
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "\n");
}

/* llama.cpp's test-tokenizer-0 files: inputs separated by lines
 * "__ggml_vocab_test__", expected ids one line per input. */
TEST(llm_vectors)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t il = 0, ol = 0, cases = 0, pass = 0;
    char *inp = slurp(test_data("vocab/ggml-vocab-deepseek-llm.gguf.inp"), &il);
    char *outp = slurp(test_data("vocab/ggml-vocab-deepseek-llm.gguf.out"), &ol);
    char *ip, *op;

    ASSERT(tk[TK_LLM]);
    if (!inp || !outp) {
        free(inp);
        free(outp);
        ASSERT_MSG(0, "cannot read the vocab test files");
    }
    ip = inp;
    op = outp;
    for (;;) {
        char *end = strstr(ip, sep), *oend = strchr(op, '\n');
        int32_t want[512], *got = NULL;
        size_t nw = 0, ng = 0;
        if (!end || !oend)
            break;
        *oend = '\0';
        for (char *q = op; *q;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q)
                break;
            if (nw < 512)
                want[nw++] = (int32_t)v;
            q = e;
        }
        cases++;
        ds_err e = ds_tokenizer_encode(tk[TK_LLM], ip, (size_t)(end - ip), false, true, &got, &ng);
        if (e == DS_OK && same_ids(got, ng, want, nw)) {
            pass++;
        } else {
            fprintf(stderr, "  case %zu '%.*s': %s\n", cases, (int)(end - ip), ip,
                    e ? ds_errmsg() : "ids differ");
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
        }
        free(got);
        ip = end + sizeof(sep) - 1;
        op = oend + 1;
    }
    free(inp);
    free(outp);
    fprintf(stderr, "  deepseek-llm vectors: %zu/%zu exact\n", pass, cases);
    ASSERT(cases >= 40);
    ASSERT_EQ_INT(pass, cases);
}

static void check_jsonl(int which, const char *path)
{
    size_t len = 0, cases = 0, pass = 0;
    char *text = slurp(test_data(path), &len), *line, *save = NULL;

    ASSERT(tk[which]);
    ASSERT_MSG(text, "cannot read %s", path);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line), *it;
        const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(j, "ids");
        int32_t *want = NULL, *got = NULL;
        size_t nw = 0, ng = 0, tl;
        char *dec = NULL;
        size_t dl = 0;
        int ok;

        if (!cJSON_IsString(jt) || !cJSON_IsArray(ji)) {
            cJSON_Delete(j);
            free(text);
            ASSERT_MSG(0, "%s: bad line", path);
        }
        tl = strlen(jt->valuestring);
        want = malloc(((size_t)cJSON_GetArraySize(ji) + 1) * sizeof(*want));
        cJSON_ArrayForEach(it, ji) want[nw++] = (int32_t)it->valuedouble;
        cases++;
        ds_err e = ds_tokenizer_encode(tk[which], jt->valuestring, tl, false, true, &got, &ng);
        ok = e == DS_OK && same_ids(got, ng, want, nw);
        if (ok && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "roundtrip")))
            ok = ds_tokenizer_decode(tk[which], got, ng, &dec, &dl) == DS_OK && dl == tl &&
                 !memcmp(dec, jt->valuestring, tl);
        if (ok) {
            pass++;
        } else {
            fprintf(stderr, "  %s case %zu '%.60s': %s\n", path, cases, jt->valuestring,
                    e ? ds_errmsg() : "ids or decoding differ");
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
        }
        free(dec);
        free(want);
        free(got);
        cJSON_Delete(j);
    }
    free(text);
    fprintf(stderr, "  %s: %zu/%zu exact\n", path, pass, cases);
    ASSERT(cases >= 10);
    ASSERT_EQ_INT(pass, cases);
}

TEST(tiny_v3_vectors)
{
    check_jsonl(TK_V3, "tiny-v3-fp8/tokenizer-vectors.jsonl");
}

TEST(tiny_v2lite_vectors)
{
    check_jsonl(TK_V2LITE, "tiny-v2lite/tokenizer-vectors.jsonl");
}

/* ---- the API -------------------------------------------------------------- */

TEST(queries)
{
    const struct ds_tokenizer *t = tk[TK_V3];
    const char *b;
    size_t n;
    int32_t *ids = NULL;
    static const char user[] = "<\xef\xbd\x9cUser\xef\xbd\x9c>";

    ASSERT(t);
    ASSERT_EQ_INT(ds_tokenizer_n_vocab(t), 512);
    ASSERT_EQ_INT(ds_tokenizer_bos(t), 0);
    ASSERT_EQ_INT(ds_tokenizer_eos(t), 1);
    ASSERT(ds_tokenizer_add_bos(t));
    ASSERT_EQ_INT(ds_tokenizer_find(t, user, strlen(user)), 508);
    ASSERT_EQ_INT(ds_tokenizer_find(t, "<think>", 7), 510);
    ASSERT_EQ_INT(ds_tokenizer_find(t, "no such token", 13), -1);
    ASSERT(ds_tokenizer_is_control(t, 508));
    ASSERT(ds_tokenizer_is_control(t, 1));
    ASSERT(!ds_tokenizer_is_control(t, 100));
    ASSERT(!ds_tokenizer_is_control(t, -1));
    ASSERT(!ds_tokenizer_is_control(t, 512));
    ASSERT_OK(ds_tokenizer_piece(t, 508, &b, &n));
    ASSERT(n == strlen(user) && !memcmp(b, user, n));
    ASSERT_OK(ds_tokenizer_piece(t, 34, &b, &n)); // "Ġ"
    ASSERT(n == 1 && b[0] == ' ');
    ASSERT_ERR(ds_tokenizer_piece(t, 512, &b, &n), DS_ERR_ARG);
    ASSERT_ERR(ds_tokenizer_piece(t, -1, &b, &n), DS_ERR_ARG);

    // BOS, and special tokens only with parse_special
    ASSERT_OK(ds_tokenizer_encode(t, user, strlen(user), true, true, &ids, &n));
    ASSERT(n == 2 && ids[0] == 0 && ids[1] == 508);
    free(ids);
    ASSERT_OK(ds_tokenizer_encode(t, user, strlen(user), false, false, &ids, &n));
    ASSERT(n > 1);
    for (size_t i = 0; i < n; i++)
        ASSERT(ids[i] != 508);
    free(ids);
    ASSERT_OK(ds_tokenizer_encode(t, "", 0, true, true, &ids, &n));
    ASSERT(n == 1 && ids[0] == 0);
    free(ids);
    ASSERT_OK(ds_tokenizer_encode(t, NULL, 0, false, true, &ids, &n));
    ASSERT(n == 0);
    free(ids);

    int32_t bad[2] = {5, 512};
    char *s = NULL;
    ASSERT_ERR(ds_tokenizer_decode(t, bad, 2, &s, &n), DS_ERR_ARG);
    ASSERT(!s);
}

/* Leftmost, then longest: "<think>" inside "</think>" is not matched first. */
TEST(special_longest)
{
    const struct ds_tokenizer *t = tk[TK_V3];
    static const char text[] = "a</think><think></think>";
    int32_t *ids = NULL;
    size_t n = 0, k = 0;

    ASSERT(t);
    ASSERT_OK(ds_tokenizer_encode(t, text, strlen(text), false, true, &ids, &n));
    for (size_t i = 0; i < n; i++)
        k += ids[i] == 511 || ids[i] == 510;
    ASSERT_EQ_INT(k, 3);
    ASSERT(n == 4 && ids[1] == 511 && ids[2] == 510 && ids[3] == 511);
    free(ids);
}

/* User-defined tokens are matched even without parse_special (tokenizers and
 * llama.cpp both do), control tokens only with it. */
TEST(user_defined)
{
    char p[256];
    size_t tl = 0, cl = 0, n = 0;
    char *tok, *cfg;
    struct ds_meta *m = ds_meta_new();
    struct ds_tokenizer *t = NULL;
    int32_t *types = NULL, *ids = NULL;
    const void *old;
    long yi;
    uint64_t nt = 0;
    enum ds_vtype el;
    ds_err e = DS_ERR_IO;

    snprintf(p, sizeof(p), "tiny-v3-fp8/tokenizer.json");
    tok = slurp(test_data(p), &tl);
    snprintf(p, sizeof(p), "tiny-v3-fp8/tokenizer_config.json");
    cfg = slurp(test_data(p), &cl);
    if (tok && cfg && m)
        e = ds_hf_tokenizer_to_meta(tok, tl, cfg, cl, 0, "tiny-v3-fp8", m);
    free(tok);
    free(cfg);
    yi = m ? ds_meta_find(m, "tokenizer.ggml.token_type") : -1;
    if (e == DS_OK && yi >= 0 && ds_meta_arr(m, (size_t)yi, &el, &nt) && el == DS_V_I32 &&
        (old = ds_meta_arr_data(m, (size_t)yi)) && (types = malloc(nt * sizeof(*types)))) {
        memcpy(types, old, nt * sizeof(*types));
        types[510] = 4; // "<think>" becomes user-defined
        e = ds_meta_set_arr(m, "tokenizer.ggml.token_type", DS_V_I32, nt, types);
        if (e == DS_OK)
            e = ds_tokenizer_new(m, &t);
    }
    free(types);
    ds_meta_free(m);
    ASSERT_OK(e);
    ASSERT(!ds_tokenizer_is_control(t, 510));
    e = ds_tokenizer_encode(t, "x<think>y</think>", 17, false, false, &ids, &n);
    int ok = e == DS_OK && n >= 3 && ids[1] == 510 && ids[n - 1] != 511;
    free(ids);
    ids = NULL;
    if (ok) {
        e = ds_tokenizer_encode(t, "x<think>y</think>", 17, false, true, &ids, &n);
        ok = e == DS_OK && n == 4 && ids[1] == 510 && ids[3] == 511;
        free(ids);
    }
    ds_tokenizer_free(t);
    ASSERT_OK(e);
    ASSERT(ok);
}

/* ---- round trips ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

static size_t put_cp(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static uint32_t random_cp(void)
{
    static const uint32_t ws[] = {' ', '\t', '\n', '\r', 0x0b, 0x0c, 0x85, 0xa0, 0x1680, 0x2000,
                                  0x2028, 0x2029, 0x202f, 0x3000, 0x200b};
    static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    uint32_t cp;
    switch (rnd(16)) {
    case 0:
    case 1:
        return 'a' + rnd(26) - (rnd(3) == 0 ? 32 : 0);
    case 2:
        return '0' + rnd(10);
    case 3:
        return (unsigned char)punct[rnd(sizeof(punct) - 1)];
    case 4:
        return ws[rnd(sizeof(ws) / sizeof(ws[0]))];
    case 5:
        return 0xc0 + rnd(0x250 - 0xc0); // Latin-1 and Latin Extended
    case 6:
        return 0x370 + rnd(0x530 - 0x370); // Greek, Cyrillic
    case 7:
        return 0x4e00 + rnd(0x9fa5 - 0x4e00); // CJK
    case 8:
        return 0x3040 + rnd(0xc0); // kana
    case 9:
        return 0xac00 + rnd(0xd7a4 - 0xac00); // Hangul
    case 10:
        return 0x1f300 + rnd(0x400); // emoji
    case 11:
        return 0x300 + rnd(0x70); // combining marks
    case 12:
        return rnd(2) ? 0x200d : 0xfe0f;
    case 13:
        return 0x660 + rnd(10) + (rnd(2) ? 0 : 0x966 - 0x660); // Arabic-Indic, Devanagari digits
    case 14:
        return 0xff01 + rnd(0x5e); // fullwidth forms
    default:
        do
            cp = rnd(0x110000);
        while (cp >= 0xd800 && cp <= 0xdfff);
        return cp;
    }
}

/* A random valid UTF-8 string of up to max characters, with runs. */
static size_t random_text(char *o, size_t max)
{
    size_t k = 0, n = rnd((uint32_t)max + 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = random_cp(), run = rnd(8) == 0 ? 1 + rnd(12) : 1;
        for (uint32_t r = 0; r < run && i < n; r++, i++)
            k += put_cp(cp, o + k);
    }
    return k;
}

/* Streams ids through ds_detok: every push yields valid UTF-8 only, and the
 * whole equals want. */
static int stream_equals(const struct ds_tokenizer *t, const int32_t *ids, size_t n,
                         const char *want, size_t wl)
{
    struct ds_detok d;
    char *buf = malloc(wl + 64), piece[256];
    size_t k = 0;
    int ok = buf != NULL;

    ds_detok_init(&d);
    for (size_t i = 0; ok && i < n; i++) {
        long r = ds_detok_push(&d, t, ids[i], piece, sizeof(piece));
        ok = r >= 0 && k + (size_t)r <= wl && valid_utf8((unsigned char *)piece, (size_t)r);
        if (ok) {
            memcpy(buf + k, piece, (size_t)r);
            k += (size_t)r;
        }
    }
    if (ok)
        k += ds_detok_flush(&d, buf + k, wl + 64 - k);
    ok = ok && k == wl && !memcmp(buf, want, wl);
    free(buf);
    return ok;
}

TEST(roundtrip_random)
{
    char text[4 * 200 + 8];
    size_t fails = 0, total = 0;

    for (int w = 0; w < TK_COUNT; w++)
        ASSERT(tk[w]);
    for (int iter = 0; iter < 400; iter++) {
        size_t len = random_text(text, iter < 300 ? 40 : 200);
        ASSERT(valid_utf8((unsigned char *)text, len));
        for (int w = 0; w < TK_COUNT; w++) {
            for (int ps = 0; ps < 2; ps++) {
                int32_t *ids = NULL;
                size_t n = 0, dl = 0;
                char *dec = NULL;
                ds_err e = ds_tokenizer_encode(tk[w], text, len, false, ps, &ids, &n);
                int ok = e == DS_OK && ds_tokenizer_decode(tk[w], ids, n, &dec, &dl) == DS_OK &&
                         dl == len && !memcmp(dec, text, len) && dec[dl] == '\0' &&
                         stream_equals(tk[w], ids, n, text, len);
                total++;
                if (!ok && fails++ < 5) {
                    fprintf(stderr, "  %s: round trip of %zu bytes failed (%s):", tk_name[w], len,
                            e ? ds_errmsg() : "differs");
                    for (size_t i = 0; i < len; i++)
                        fprintf(stderr, " %02x", (unsigned char)text[i]);
                    fprintf(stderr, "\n");
                }
                free(ids);
                free(dec);
            }
        }
    }
    fprintf(stderr, "  %zu/%zu round trips exact\n", total - fails, total);
    ASSERT_EQ_INT(fails, 0);
}

/* Long runs: one piece of 200k letters, 100k spaces before an emoji (the
 * "\s+$" split must not go quadratic), 50k digits. */
TEST(long_runs)
{
    size_t n = 200000 + 100000 + 4 + 50000 + 30000 * 3, k = 0;
    char *text = malloc(n + 1), *dec = NULL;
    int32_t *ids = NULL;
    size_t ni = 0, dl = 0;

    ASSERT(text);
    memset(text + k, 'a', 200000);
    k += 200000;
    memset(text + k, ' ', 100000);
    k += 100000;
    k += put_cp(0x1f600, text + k);
    memset(text + k, '7', 50000);
    k += 50000;
    for (int i = 0; i < 30000; i++)
        k += put_cp(0x4e2d, text + k);
    for (int w = 0; w < TK_COUNT; w++) {
        double t0 = now_s();
        ds_err e = ds_tokenizer_encode(tk[w], text, k, false, false, &ids, &ni);
        double dt = now_s() - t0;
        if (e == DS_OK)
            e = ds_tokenizer_decode(tk[w], ids, ni, &dec, &dl);
        int ok = e == DS_OK && dl == k && !memcmp(dec, text, k);
        free(ids);
        free(dec);
        ids = NULL;
        dec = NULL;
        if (!ok)
            free(text);
        ASSERT_MSG(ok, "%s: %s", tk_name[w], e ? ds_errmsg() : "round trip differs");
        fprintf(stderr, "  %s: %zu bytes of long runs in %.3f s\n", tk_name[w], k, dt);
    }
    free(text);
}

/* A 4-byte character that BPE leaves as 4 byte tokens comes out of the
 * streaming decoder only with its last byte. */
TEST(stream_split_char)
{
    const struct ds_tokenizer *t = tk[TK_V3];
    static const char llama[] = "\xf0\x9f\xa6\x99"; // U+1F999
    int32_t *ids = NULL;
    size_t n = 0;
    struct ds_detok d;
    char out[64];
    long r;

    ASSERT(t);
    ASSERT_OK(ds_tokenizer_encode(t, llama, 4, false, false, &ids, &n));
    if (n != 4)
        free(ids);
    ASSERT_EQ_INT(n, 4);
    ds_detok_init(&d);
    for (int i = 0; i < 3; i++) {
        r = ds_detok_push(&d, t, ids[i], out, sizeof(out));
        if (r != 0)
            free(ids);
        ASSERT_EQ_INT(r, 0);
    }
    r = ds_detok_push(&d, t, ids[3], out, sizeof(out));
    ASSERT_EQ_INT(r, 4);
    ASSERT(!memcmp(out, llama, 4));
    ASSERT_EQ_INT(ds_detok_flush(&d, out, sizeof(out)), 0);

    // an incomplete sequence at the end comes out as U+FFFD per byte
    ds_detok_init(&d);
    ASSERT_EQ_INT(ds_detok_push(&d, t, ids[0], out, sizeof(out)), 0);
    ASSERT_EQ_INT(ds_detok_push(&d, t, ids[1], out, sizeof(out)), 0);
    ASSERT_EQ_INT(ds_detok_flush(&d, out, sizeof(out)), 6);
    ASSERT(!memcmp(out, "\xef\xbf\xbd\xef\xbf\xbd", 6));

    // an interrupted sequence is let through as it is
    ds_detok_init(&d);
    ASSERT_EQ_INT(ds_detok_push(&d, t, ids[0], out, sizeof(out)), 0);
    r = ds_detok_push(&d, t, 34, out, sizeof(out)); // " "
    ASSERT_EQ_INT(r, 2);
    ASSERT(!memcmp(out, "\xf0 ", 2));
    ASSERT_EQ_INT(ds_detok_push(&d, t, 512, out, sizeof(out)), -1);
    ASSERT_EQ_INT(ds_detok_push(&d, t, 34, out, 0), -1); // no room: nothing consumed
    ASSERT_EQ_INT(ds_detok_push(&d, t, 34, out, 1), 1);
    ASSERT_EQ_INT(ds_detok_flush(&d, out, sizeof(out)), 0);
    free(ids);
}

/* ---- invalid input -------------------------------------------------------- */

TEST(invalid_utf8)
{
    static const struct {
        const char *s;
        size_t len, at;
    } cases[] = {
        {"\xff", 1, 0},
        {"abc\x80", 4, 3},
        {"ok \xc0\xaf", 5, 3},          // overlong '/'
        {"\xe0\x80\xaf", 3, 0},         // overlong
        {"x\xed\xa0\x80y", 5, 1},       // surrogate
        {"\xe6\x97", 2, 0},             // truncated
        {"\xe6\x97\xa5\xe6", 4, 3},     // truncated after a good character
        {"\xf4\x90\x80\x80", 4, 0},     // past U+10FFFF
        {"\xf8\x88\x80\x80\x80", 5, 0}, // 5-byte form
        {"a\xc3", 2, 1},
    };
    char want[64];
    int32_t *ids = (int32_t *)1;
    size_t n = 7;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int w = 0; w < TK_COUNT; w++) {
            ASSERT(tk[w]);
            ASSERT_ERR(ds_tokenizer_encode(tk[w], cases[i].s, cases[i].len, false, true, &ids, &n),
                       DS_ERR_ARG);
            snprintf(want, sizeof(want), "invalid UTF-8 at byte %zu", cases[i].at);
            ASSERT_STR(ds_errmsg(), want);
            ASSERT(ids == NULL && n == 0);
        }
    }
    // NUL is valid UTF-8
    ASSERT_OK(ds_tokenizer_encode(tk[TK_V3], "a\0b", 3, false, true, &ids, &n));
    ASSERT_EQ_INT(n, 3);
    free(ids);
}

TEST(bad_metadata)
{
    struct ds_tokenizer *t = NULL;
    struct ds_meta *m;
    int32_t types[3] = {1, 1, 1};

    ASSERT(llm_meta);
    m = ds_meta_new();
    ASSERT(m);
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_FORMAT); // no tokenizer at all
    ds_meta_free(m);

    m = ds_meta_dup(llm_meta);
    ASSERT(m);
    ds_meta_set_str(m, "tokenizer.ggml.model", "llama");
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_UNSUPPORTED);
    ds_meta_set_str(m, "tokenizer.ggml.model", "gpt2");
    ds_meta_set_str(m, "tokenizer.ggml.pre", "qwen2");
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_UNSUPPORTED);
    ds_meta_set_str(m, "tokenizer.ggml.pre", "deepseek-llm");
    ds_meta_set_u32(m, "tokenizer.ggml.bos_token_id", 1u << 30);
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_FORMAT);
    ds_meta_set_u32(m, "tokenizer.ggml.bos_token_id", 0);
    ds_meta_set_arr(m, "tokenizer.ggml.token_type", DS_V_I32, 3, types);
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_FORMAT);
    ds_meta_remove(m, "tokenizer.ggml.token_type");
    ds_meta_remove(m, "tokenizer.ggml.merges");
    ASSERT_ERR(ds_tokenizer_new(m, &t), DS_ERR_FORMAT);
    ASSERT(t == NULL);
    ds_meta_free(m);
}

/* ---- speed ---------------------------------------------------------------- */

/* About 1 MB of English-like text: random words from a list, punctuation,
 * capitals, numbers and line breaks. */
TEST(speed)
{
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with",
        "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
        "but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can",
        "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so",
        "no", "language", "model", "tokenizer", "expert", "attention", "latent", "routing",
        "gradient", "distillation", "quantization", "perplexity", "benchmark", "throughput",
        "afternoon", "wonderful", "characteristically", "misunderstanding", "lord", "thou",
        "hath", "wherefore", "crown", "merchant", "Venice", "Rome", "London", "Paris",
        "isn't", "don't", "we've", "I'll", "o'clock", "e-mail", "well-known"};
    const size_t nw = sizeof(words) / sizeof(words[0]), target = 1 << 20;
    char *text = malloc(target + 64), *dec = NULL;
    size_t k = 0, n = 0, dl = 0;
    int32_t *ids = NULL;
    int sentence = 1;

    ASSERT(text);
    while (k < target) {
        const char *w = words[rnd((uint32_t)nw)];
        size_t l = strlen(w);
        if (k)
            text[k++] = ' ';
        memcpy(text + k, w, l);
        if (sentence && text[k] >= 'a' && text[k] <= 'z')
            text[k] = (char)(text[k] - 32);
        k += l;
        sentence = 0;
        switch (rnd(24)) {
        case 0:
        case 1:
            text[k++] = ',';
            break;
        case 2:
        case 3:
            text[k++] = '.';
            sentence = 1;
            break;
        case 4:
            k += (size_t)snprintf(text + k, 16, " %u", rnd(100000));
            break;
        case 5:
            text[k++] = '.';
            text[k++] = '\n';
            sentence = 1;
            break;
        }
    }
    for (int w = 0; w < TK_COUNT; w++) {
        if (w == TK_CODER)
            continue;
        double t0 = now_s();
        ds_err e = ds_tokenizer_encode(tk[w], text, k, false, true, &ids, &n);
        double dt = now_s() - t0;
        if (e == DS_OK)
            e = ds_tokenizer_decode(tk[w], ids, n, &dec, &dl);
        int ok = e == DS_OK && dl == k && !memcmp(dec, text, k);
        free(ids);
        free(dec);
        ids = NULL;
        dec = NULL;
        if (!ok)
            free(text);
        ASSERT_MSG(ok, "%s: %s", tk_name[w], e ? ds_errmsg() : "round trip differs");
        fprintf(stderr, "  %s: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", tk_name[w], k,
                n, dt, (double)k / dt / 1e6);
        // generous, for sanitizer builds; an optimised build takes a fraction of this
        if (dt >= 10.0)
            free(text);
        ASSERT(dt < 10.0);
    }
    free(text);
}

int main(void)
{
    RUN(load);
    RUN(llm_vectors);
    RUN(tiny_v3_vectors);
    RUN(tiny_v2lite_vectors);
    RUN(queries);
    RUN(special_longest);
    RUN(user_defined);
    RUN(roundtrip_random);
    RUN(long_runs);
    RUN(stream_split_char);
    RUN(invalid_utf8);
    RUN(bad_metadata);
    RUN(speed);
    for (int w = 0; w < TK_COUNT; w++)
        ds_tokenizer_free(tk[w]);
    ds_meta_free(llm_meta);
    return test_report();
}
