/*
 * fuzz_tokenizer_json.c - libFuzzer target for the Hugging Face tokenizer
 * import (ds_hf_tokenizer_to_meta, lib/hf.c).
 *
 * The input is tokenizer.json, then optionally a NUL byte and
 * tokenizer_config.json. An accepted pair must give metadata that
 * ds_tokenizer_new accepts; the tokenizer encodes and decodes a fixed text
 * (the ids in range); and the export ds_hf_meta_to_tokenizer must import
 * again (abort() otherwise). Build with `make fuzz FUZZ=tokenizer_json`.
 */
#include "ds_hf.h"
#include "ds_meta.h"
#include "ds_tokenizer.h"
#include "fuzz.h"
#include "ds_banned.h"

static const char sample[] = "Hello, world! 12345 <think>x</think> \xe4\xbd\xa0\xe5\xa5\xbd\n\tok";

static void exercise(const struct ds_meta *m)
{
    struct ds_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    char *text = NULL;

    if (ds_tokenizer_new(m, &t) != DS_OK)
        return; // e.g. a vocabulary without the byte tokens: refused cleanly
    for (int special = 0; special < 2; special++) {
        if (ds_tokenizer_encode(t, sample, sizeof(sample) - 1, true, special, &ids, &n) == DS_OK) {
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= ds_tokenizer_n_vocab(t))
                    abort();
            if (ds_tokenizer_decode(t, ids, n, &text, &len) == DS_OK && text[len] != '\0')
                abort();
        }
        free(text);
        free(ids);
        text = NULL;
        ids = NULL;
    }
    ds_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *tok, *cfg;
    size_t tlen, clen;
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    char *tj = NULL, *cj = NULL;

    if (!m || !m2)
        abort();
    fuzz_split(data, size, &tok, &tlen, &cfg, &clen);
    if (ds_hf_tokenizer_to_meta(tok, tlen, clen ? cfg : NULL, clen, 0, "tokenizer.json", m) ==
        DS_OK) {
        exercise(m);
        if (ds_hf_meta_to_tokenizer(m, &tj, &cj) != DS_OK ||
            ds_hf_tokenizer_to_meta(tj, strlen(tj), cj, cj ? strlen(cj) : 0, 0, "round trip",
                                    m2) != DS_OK)
            abort();
    }
    free(tj);
    free(cj);
    ds_meta_free(m2);
    ds_meta_free(m);
    return 0;
}
