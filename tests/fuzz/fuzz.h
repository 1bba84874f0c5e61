/*
 * fuzz.h - helpers shared by the libFuzzer targets tests/fuzz/fuzz_*.c
 * (header only: each target is one translation unit, built with libFuzzer or
 * with tests/fuzz/replay.c).
 *
 *   fuzz_file(slot, data, size)   a regular file holding the bytes: a memfd
 *                                 (one per slot, reused across inputs), named
 *                                 "/proc/self/fd/N" for the path-based APIs
 *   fuzz_split(data, size, ...)   the input as two parts around its first NUL
 *                                 byte (the second empty when there is none)
 *   fuzz_tmpdir()                 a private directory, made once per process
 *                                 and removed at exit (files in it too)
 */
#ifndef DS_FUZZ_H
#define DS_FUZZ_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SLOTS 4

static inline const char *fuzz_file(int slot, const uint8_t *data, size_t size)
{
    static int fd[FUZZ_SLOTS] = {-1, -1, -1, -1};
    static char path[FUZZ_SLOTS][64];

    if (slot < 0 || slot >= FUZZ_SLOTS)
        abort();
    if (fd[slot] < 0) {
        FILE *f;
        fd[slot] = memfd_create("fuzz", 0);
        if (fd[slot] < 0 && (f = tmpfile()) != NULL)
            fd[slot] = fileno(f); // kept open for the life of the process
        if (fd[slot] < 0) {
            perror("fuzz: memfd_create");
            abort();
        }
        snprintf(path[slot], sizeof(path[slot]), "/proc/self/fd/%d", fd[slot]);
    }
    if (ftruncate(fd[slot], 0) != 0 || (size && pwrite(fd[slot], data, size, 0) != (ssize_t)size))
        abort();
    return path[slot];
}

static inline void fuzz_split(const uint8_t *data, size_t size, const char **a, size_t *alen,
                              const char **b, size_t *blen)
{
    const uint8_t *nul = memchr(data, 0, size);

    *a = (const char *)data;
    *alen = nul ? (size_t)(nul - data) : size;
    *b = nul ? (const char *)nul + 1 : "";
    *blen = nul ? size - *alen - 1 : 0;
}

static char fuzz_dir[64];

static inline void fuzz_rmdir(void)
{
    DIR *d = opendir(fuzz_dir);
    struct dirent *e;
    char p[400];

    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", fuzz_dir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(fuzz_dir);
}

static inline const char *fuzz_tmpdir(void)
{
    if (!fuzz_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%.40s/dsfuzz.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_rmdir);
    }
    return fuzz_dir;
}

#endif
