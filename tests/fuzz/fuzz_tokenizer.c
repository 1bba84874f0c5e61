/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer's encoder and
 * decoders, over the deepseek-llm vocabulary (built once, from
 * $DS_TESTDATA/vocab/ggml-vocab-deepseek-llm.gguf, by default relative to the
 * current directory, as `make check` runs from the repository root).
 *
 * The input is encoded with and without special-token parsing. Invariants
 * that must hold abort(), so the fuzzer reports them:
 *   - an input is rejected exactly when it is not valid UTF-8 (checked here
 *     independently), with DS_ERR_ARG;
 *   - every id is in range, and decoding gives the input back;
 *   - the streaming decoder gives the same bytes, each push valid UTF-8.
 *
 *   clang -std=c11 -D_GNU_SOURCE -Ilib -fsanitize=fuzzer,address \
 *       tests/fuzz/fuzz_tokenizer.c lib/\*.c \
 *       $(pkg-config --cflags --libs libzstd libcjson libpcre2-8) -lm
 * Without -fsanitize=fuzzer, link tests/fuzz/replay.c to replay a corpus.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_tokenizer.h"
#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ds_tokenizer *load(void)
{
    const char *dir = getenv("DS_TESTDATA");
    char path[1024];
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    struct ds_tokenizer *t = NULL;

    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-deepseek-llm.gguf",
             dir && *dir ? dir : "tests/data");
    if (ds_gguf_init(&g) != DS_OK)
        abort();
    if (ds_reader_open(&r, path) != DS_OK || ds_gguf_read(r, &g) != DS_OK ||
        ds_tokenizer_new(g.meta, &t) != DS_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load '%s': %s\n", path, ds_errmsg());
        abort();
    }
    ds_reader_free(r);
    ds_gguf_release(&g);
    return t;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i], cp, min;
        size_t need;
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
            return false;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static void check(const struct ds_tokenizer *t, const uint8_t *data, size_t size, bool valid,
                  bool parse_special)
{
    int32_t *ids = NULL;
    size_t n = 0, len = 0, k = 0;
    char *dec = NULL, *stream = NULL, piece[4096];
    struct ds_detok d;
    ds_err e = ds_tokenizer_encode(t, (const char *)data, size, false, parse_special, &ids, &n);

    if (!valid) {
        if (e != DS_ERR_ARG || ids || n)
            abort();
        return;
    }
    if (e != DS_OK || !ids || n > size)
        abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= ds_tokenizer_n_vocab(t))
            abort();
    if (ds_tokenizer_decode(t, ids, n, &dec, &len) != DS_OK || len != size ||
        memcmp(dec, data, size) || dec[len] != '\0')
        abort();
    stream = malloc(size + 16);
    if (!stream)
        abort();
    ds_detok_init(&d);
    for (size_t i = 0; i < n; i++) {
        long r = ds_detok_push(&d, t, ids[i], piece, sizeof(piece));
        if (r < 0 || k + (size_t)r > size || !valid_utf8((const uint8_t *)piece, (size_t)r))
            abort();
        memcpy(stream + k, piece, (size_t)r);
        k += (size_t)r;
    }
    k += ds_detok_flush(&d, stream + k, size + 16 - k);
    if (k != size || memcmp(stream, data, size))
        abort();
    free(stream);
    free(dec);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ds_tokenizer *t;
    bool valid = valid_utf8(data, size);

    if (!t)
        t = load();
    if (size > 1 << 16)
        return 0;
    check(t, data, size, valid, true);
    check(t, data, size, valid, false);
    return 0;
}
