/*
 * fuzz_imatrix.c - libFuzzer target for importance-matrix files
 * (ds_imatrix_load, lib/imatrix.c; GGUF with imatrix.* keys and
 * NAME.in_sum2 / NAME.counts tensors).
 *
 * The input is the file (a memfd). For an accepted file, every matrix is
 * looked up with ds_imatrix_get by its name and row length, and must give
 * finite, non-negative values (abort() otherwise). Build with
 * `make fuzz FUZZ=imatrix`.
 */
#include <math.h>

#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_model.h"
#include "fuzz.h"
#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    struct ds_imatrix *im = NULL;
    struct ds_reader *r = NULL;
    struct ds_gguf g;

    if (ds_imatrix_load(path, &im) != DS_OK)
        return 0;
    // the names and shapes, from the same file
    if (ds_gguf_init(&g) != DS_OK || ds_reader_open(&r, path) != DS_OK ||
        ds_gguf_read(r, &g) != DS_OK)
        abort();
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        size_t len = strlen(t->name);
        char name[DS_GGUF_MAX_NAME];
        const float *v;

        if (len < 8 || strcmp(t->name + len - 8, ".in_sum2") != 0)
            continue;
        memcpy(name, t->name, len - 8);
        name[len - 8] = '\0';
        v = ds_imatrix_get(im, name, t->ne[0]);
        for (int64_t j = 0; v && j < t->ne[0] * t->ne[1]; j++)
            if (!isfinite(v[j]) || v[j] < 0)
                abort();
    }
    ds_reader_free(r);
    ds_gguf_release(&g);
    ds_imatrix_free(im);
    return 0;
}
