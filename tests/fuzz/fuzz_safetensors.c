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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ds_safetensors.h"

static int input_fd(void)
{
    static int fd = -1;
    FILE *f;

    if (fd >= 0)
        return fd;
    fd = memfd_create("fuzz_safetensors", 0);
    if (fd < 0 && (f = tmpfile()) != NULL)
        fd = fileno(f); // kept open for the life of the process
    if (fd < 0) {
        perror("fuzz_safetensors: memfd_create");
        abort();
    }
    return fd;
}

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
    int fd = input_fd();
    char path[64];
    struct ds_st st;

    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

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
