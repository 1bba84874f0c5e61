/*
 * fuzz_tcache.c - libFuzzer target for ds-distill's teacher cache
 * (ds_tcache_open, ds_tcache_get, lib/tcache.c).
 *
 * The input is shard 0 of a cache (DIR/shard-00000.dstc in a private
 * directory; a header claiming more shards fails on the missing ones). For
 * an accepted cache the first windows (up to 4) are read; every id a read
 * gives must be inside the vocabulary (abort() otherwise).
 */
#include <stdio.h>

#include "ds_tcache.h"
#include "fuzz.h"
#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_tmpdir();
    char path[128];
    FILE *fp;
    struct ds_tcache *c = NULL;

    snprintf(path, sizeof(path), "%s/shard-00000.dstc", dir);
    fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0)
        abort();
    if (ds_tcache_open(dir, NULL, &c) == DS_OK) {
        const struct ds_tcache_key *k = ds_tcache_get_key(c);
        size_t n = (size_t)k->ctx * k->k;
        int32_t *ids = malloc(n * sizeof(int32_t));
        float *vals = malloc(n * sizeof(float));
        uint64_t nw = ds_tcache_n_windows(k);

        if (!ids || !vals || !nw)
            abort();
        for (uint64_t w = 0; w < nw && w < 4; w++) {
            if (ds_tcache_get(c, w, ids, vals) != DS_OK)
                continue;
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0 || (uint32_t)ids[i] >= k->n_vocab)
                    abort();
        }
        free(ids);
        free(vals);
    }
    ds_tcache_free(c);
    return 0;
}
