/*
 * replay.c - runs a libFuzzer target over the files of a directory (sorted),
 * without libFuzzer: `make check-fuzz` links each fuzz_*.c with this file and
 * replays the committed seed corpus under the normal (or sanitizer) build.
 *
 *   fuzz_gguf DIR     prints "replayed N inputs"; exits 1 when DIR is missing
 *                     or holds no inputs
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, got;

    if (!f) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
        return 1;
    }
    do {
        if (len == cap) {
            uint8_t *p = realloc(buf, cap = cap * 2 + 65536);
            if (!p) {
                fprintf(stderr, "replay: out of memory reading '%s'\n", path);
                free(buf);
                fclose(f);
                return 1;
            }
            buf = p;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    if (ferror(f)) {
        fprintf(stderr, "replay: cannot read '%s': %s\n", path, strerror(errno));
        free(buf);
        fclose(f);
        return 1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    DIR *d;
    struct dirent *e;
    char **names = NULL, path[4096];
    size_t n = 0, cap = 0;
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    d = opendir(argv[1]);
    if (!d) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", argv[1], strerror(errno));
        return 1;
    }
    while ((e = readdir(d))) {
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            char **p = realloc(names, (cap = cap * 2 + 16) * sizeof(*names));
            if (!p) {
                rc = 1;
                break;
            }
            names = p;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            rc = 1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "replay: no inputs in '%s'\n", argv[1]);
        rc = 1;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]);
        rc = replay(path);
    }
    if (rc == 0)
        printf("replayed %zu inputs\n", n);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}
