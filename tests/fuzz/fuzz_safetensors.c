/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader.
 *
 * The input is a whole .safetensors file: it is written to a memfd, opened
 * through ds_st_open ("/proc/self/fd/N"), and every tensor is looked up and
 * read. The same bytes are then parsed as a bare header (ds_st_parse_header).
 * Build with libFuzzer:
 *   clang -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilib tests/fuzz/fuzz_safetensors.c \
 *     lib/safetensors.c lib/io.c lib/tensor.c lib/error.c -lcjson -lzstd
 */
#include "ds_safetensors.h"
#include "fuzz.h"

/* Every tensor is found by its name and readable. */
static void check(const struct ds_st *st, bool read)
{
    for (size_t i = 0; i < st->n_tensors; i++) {
        const struct ds_st_tensor *t = &st->tensors[i];
        if (ds_st_find(st, t->name) != (long)i || t->end < t->begin)
            abort();
        if (i && st->tensors[i - 1].file == t->file && st->tensors[i - 1].end > t->begin)
            abort();
        if (read) {
            size_t n = (size_t)(t->end - t->begin);
            void *buf = malloc(n ? n : 1);
            if (!buf || ds_st_read(st, i, buf) != DS_OK)
                abort();
            free(buf);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);
    struct ds_st st;

    ds_st_init(&st);
    if (ds_st_open(&st, path) == DS_OK)
        check(&st, true);
    ds_st_release(&st);

    ds_st_init(&st);
    if (ds_st_parse_header(&st, (const char *)data, size, size, 0, "fuzz") == DS_OK)
        check(&st, false);
    ds_st_release(&st);
    return 0;
}
