/*
 * fuzz_meta.c - libFuzzer target for what is read from GGUF metadata: the
 * tokenizer (ds_tokenizer_new from tokenizer.ggml.*), the hyper-parameters
 * (ds_hparams_from_meta), the exports back to Hugging Face files
 * (ds_hf_meta_to_config, ds_hf_meta_to_tokenizer), the chat template
 * (ds_chat_detect) and the metadata listing (ds_meta_format).
 *
 * The input is a GGUF file (its tensors are not read). Build with
 * `make fuzz FUZZ=meta`.
 */
#include "ds_chat.h"
#include "ds_gguf.h"
#include "ds_hf.h"
#include "ds_io.h"
#include "ds_tokenizer.h"
#include "fuzz.h"
#include "ds_banned.h"

static const char sample[] = "Hello, world! 12345 <think>x</think> \xe4\xbd\xa0\xe5\xa5\xbd\n\tok";

static void tokenizer(const struct ds_meta *m)
{
    struct ds_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    char *text = NULL, piece[256];
    struct ds_detok d;

    if (ds_tokenizer_new(m, &t) != DS_OK)
        return;
    if (ds_tokenizer_encode(t, sample, sizeof(sample) - 1, true, true, &ids, &n) == DS_OK) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= ds_tokenizer_n_vocab(t))
                abort();
        if (ds_tokenizer_decode(t, ids, n, &text, &len) == DS_OK && text[len] != '\0')
            abort();
    }
    // every id decodes, one by one and streamed
    ds_detok_init(&d);
    for (int32_t id = 0; id < ds_tokenizer_n_vocab(t) && id < 4096; id++) {
        const char *bytes;
        size_t blen;
        (void)ds_tokenizer_piece(t, id, &bytes, &blen);
        if (ds_detok_push(&d, t, id, piece, sizeof(piece)) > (long)sizeof(piece))
            abort();
        (void)ds_tokenizer_is_control(t, id);
    }
    (void)ds_detok_flush(&d, piece, sizeof(piece));
    free(text);
    free(ids);
    ds_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    struct ds_hparams hp;
    enum ds_chat_template ct;
    char *cfg = NULL, *tj = NULL, *tc = NULL, buf[512];
    const char *tmpl;

    if (ds_gguf_init(&g) != DS_OK)
        abort();
    if (ds_reader_open(&r, path) != DS_OK || ds_gguf_read(r, &g) != DS_OK)
        goto out;
    for (size_t i = 0; i < ds_meta_count(g.meta); i++)
        ds_meta_format(g.meta, i, buf, sizeof(buf), 8);
    tokenizer(g.meta);
    if (ds_hparams_from_meta(g.meta, &hp) == DS_OK)
        (void)ds_hf_meta_to_config(g.meta, NULL, hp.fp8, &cfg);
    (void)ds_hf_meta_to_tokenizer(g.meta, &tj, &tc);
    tmpl = ds_meta_get_str(g.meta, "tokenizer.chat_template", NULL);
    if (tmpl && ds_chat_detect(tmpl, &ct) == DS_OK) {
        char *prompt = NULL;
        if (ds_chat_apply(ct, "<s>", "sys", "hi", &prompt) != DS_OK)
            abort();
        free(prompt);
    }
out:
    free(cfg);
    free(tj);
    free(tc);
    ds_reader_free(r);
    ds_gguf_release(&g);
    return 0;
}
