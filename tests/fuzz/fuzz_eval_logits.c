/*
 * fuzz_eval_logits.c - libFuzzer target for ds-eval's saved logits files
 * ("DSEVLOGP", written by --save-logits, read by --base-logits:
 * ds_eval_logits_open, ds_eval_ppl_window, lib/eval.c).
 *
 * The input is the file (a memfd; raw or zstd). The vocabulary is the
 * header's when it is small (1 to 512), else 32. For an accepted file the
 * tokens must be inside the vocabulary and the windows inside the tokens;
 * then every saved window is scored against it with uniform logits (the KL
 * statistics read every record), until a record fails to read.
 */
#include "ds_eval.h"
#include "fuzz.h"
#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    struct ds_eval_logits *f = NULL;
    int32_t nv = 32;

    if (size >= 16) {
        uint32_t v = (uint32_t)data[12] | (uint32_t)data[13] << 8 | (uint32_t)data[14] << 16 |
                     (uint32_t)data[15] << 24;
        if (v >= 1 && v <= 512)
            nv = (int32_t)v;
    }
    if (ds_eval_logits_open(path, nv, &f) == DS_OK) {
        int64_t nt, nc = ds_eval_logits_n_ctx(f), nw = ds_eval_logits_n_windows(f);
        const int32_t *tok = ds_eval_logits_tokens(f, &nt);
        struct ds_eval_stats st;
        float *logits;

        if (nc < 2 || nw < 0 || nt < 0 || nw > nt / nc)
            abort();
        for (int64_t i = 0; i < nt; i++)
            if (tok[i] < 0 || tok[i] >= nv)
                abort();
        ds_eval_stats_init(&st, DS_EVAL_PPL);
        logits = nc * nv <= 1 << 16 ? calloc((size_t)(nc * nv), sizeof(float)) : NULL;
        for (int64_t w = 0; logits && w < nw && w < 8; w++)
            if (ds_eval_ppl_window(&st, logits, nv, tok + w * nc, nc, NULL, f) != DS_OK)
                break;
        free(logits);
    }
    ds_eval_logits_free(f);
    return 0;
}
