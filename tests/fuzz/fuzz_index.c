/*
 * fuzz_index.c - libFuzzer target for model.safetensors.index.json
 * (lib/safetensors.c, through ds_st_open).
 *
 * The input is the index text, written into a private directory that also
 * holds two small shards, a.safetensors (tensors "x", "y") and b.safetensors
 * ("z"). Every tensor of an accepted index must be found by name and
 * readable (abort() otherwise). Build with `make fuzz FUZZ=index`.
 */
#include <fcntl.h>

#include "ds_safetensors.h"
#include "fuzz.h"
#include "ds_banned.h"

static void put_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
}

/* A shard: 8-byte little-endian header length, the header, then data. */
static void put_shard(const char *dir, const char *name, const char *header, size_t data_len)
{
    uint8_t buf[512] = {0};
    size_t hl = strlen(header);

    if (8 + hl + data_len > sizeof(buf))
        abort();
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    put_file(dir, name, buf, 8 + hl + data_len);
}

static const char *setup(void)
{
    static char index[512];

    if (!index[0]) {
        const char *dir = fuzz_tmpdir();
        put_shard(dir, "a.safetensors",
                  "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"y\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}",
                  16);
        put_shard(dir, "b.safetensors",
                  "{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"z\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                  4);
        snprintf(index, sizeof(index), "%s/model.safetensors.index.json", dir);
    }
    return index;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *index = setup();
    struct ds_st st;
    FILE *f = fopen(index, "wb");

    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    ds_st_init(&st);
    if (ds_st_open(&st, index) == DS_OK) {
        for (size_t i = 0; i < st.n_tensors; i++) {
            const struct ds_st_tensor *t = &st.tensors[i];
            uint8_t buf[64];
            if (ds_st_find(&st, t->name) != (long)i || t->end < t->begin ||
                t->end - t->begin > sizeof(buf) || ds_st_read(&st, i, buf) != DS_OK)
                abort();
        }
    }
    ds_st_release(&st);
    return 0;
}
