/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader.
 *
 * The input is parsed twice: as a regular file (a memfd: file size known,
 * tensors read with pread) and, when it fits in a pipe, as a stream (forward
 * only). Every tensor is read in data order. Invariants that must hold for
 * any accepted input abort(), so the fuzzer reports them:
 *   - the header size the writer would compute matches the parsed one;
 *   - on a file, every tensor lies inside it.
 *
 *   clang -std=c11 -D_GNU_SOURCE -Ilib -fsanitize=fuzzer,address \
 *       tests/fuzz/fuzz_gguf.c lib/\*.c $(pkg-config --cflags --libs libzstd libcjson) -lm
 * Without -fsanitize=fuzzer, link tests/fuzz/replay.c to replay a corpus.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ds_gguf.h"
#include "ds_banned.h"

#define MAX_TENSOR_READ ((uint64_t)64 << 20) /* streams: larger tensors are skipped */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static void parse(int fd, uint64_t size, bool is_file)
{
    struct ds_reader *r = NULL;
    struct ds_gguf g;
    size_t *order = NULL;

    if (ds_gguf_init(&g) != DS_OK)
        return;
    if (ds_reader_open_fd(&r, fd, "fuzz", false) != DS_OK)
        goto out;
    is_file = is_file && ds_reader_is_file(r); // not when the input is zstd
    if (ds_gguf_read(r, &g) != DS_OK)
        goto out;
    if (ds_reader_tell(r) > g.data_offset)
        abort();
    if (g.n_tensors > 0) {
        uint64_t hs = ds_gguf_header_size(&g);
        if (hs > g.data_offset || g.data_offset - hs >= g.alignment)
            abort();
    }
    order = malloc(g.n_tensors * sizeof(*order) + 1);
    if (!order)
        goto out;
    ds_gguf_data_order(&g, order);
    for (size_t k = 0; k < g.n_tensors; k++) {
        const struct ds_tensor_info *t = &g.tensors[order[k]];
        void *buf;

        if (is_file && g.data_offset + t->offset + t->nbytes > size)
            abort();
        if (t->nbytes > MAX_TENSOR_READ)
            continue;
        buf = malloc(t->nbytes + 1);
        if (!buf)
            break;
        ds_err e = ds_gguf_read_tensor(r, &g, order[k], buf);
        free(buf);
        if (e != DS_OK)
            break;
    }
out:
    free(order);
    ds_reader_free(r);
    ds_gguf_release(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_gguf", MFD_CLOEXEC), fds[2];

    if (fd >= 0) {
        if (write_all(fd, data, size) && lseek(fd, 0, SEEK_SET) == 0)
            parse(fd, size, true);
        close(fd);
    }
    // the default pipe capacity (64 KiB) holds small inputs without a writer thread
    if (size <= 65536 && pipe2(fds, O_CLOEXEC) == 0) {
        bool ok = write_all(fds[1], data, size);
        close(fds[1]);
        if (ok)
            parse(fds[0], UINT64_MAX, false);
        close(fds[0]);
    }
    return 0;
}
