/*
 * test_tcache.c - the teacher top-k logits cache: SHA-256 test vectors, a
 * round trip over two shards read in random order, refusal of a cache made
 * for another teacher, corpus, vocabulary, window or k, writer misuse (no
 * directory left behind), and damaged files: every changed byte, a
 * truncation, a missing shard, another version are errors, never crashes.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ds_convert.h"
#include "ds_error.h"
#include "ds_io.h"
#include "ds_model.h"
#include "ds_tcache.h"
#include "test.h"

enum { CTX = 4, K = 3, NV = 50, NWIN = 300, NTOK = NWIN * CTX + 3 };

static char scratch[64], teacher[128], cache[128];
static int32_t tokens[NTOK];

static void hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* The entries of window w: a pure function of w, so reads can be checked. */
static void window_data(uint64_t w, int32_t *ids, float *vals)
{
    for (int p = 0; p < CTX; p++)
        for (int j = 0; j < K; j++) {
            ids[p * K + j] = (int32_t)((w * 7 + (uint64_t)p * 3 + (uint64_t)j * 11) % NV);
            vals[p * K + j] = (float)(10.0 - j) + (float)w * 0.001f - (float)p * 0.5f;
        }
}

static ds_err build(const char *dir, const struct ds_tcache_key *key, unsigned flags)
{
    struct ds_tcache_writer *w = NULL;
    int32_t ids[CTX * K];
    float vals[CTX * K];
    ds_err rc = ds_tcache_create(dir, key, flags, &w);
    for (uint64_t i = 0; rc == DS_OK && i < ds_tcache_n_windows(key); i++) {
        window_data(i, ids, vals);
        rc = ds_tcache_put(w, i, ids, vals);
    }
    if (rc == DS_OK)
        rc = ds_tcache_commit(w);
    ds_tcache_writer_free(w);
    return rc;
}

TEST(sha256_vectors)
{
    static const struct {
        const char *in, *out;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    uint8_t d[32], d2[32];
    char h[65], path[160];
    char *a = malloc(1000000);

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        ds_sha256(v[i].in, strlen(v[i].in), d);
        hex(d, h);
        ASSERT_STR(h, v[i].out);
    }
    ASSERT(a);
    memset(a, 'a', 1000000);
    ds_sha256(a, 1000000, d);
    hex(d, h);
    ASSERT_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    snprintf(path, sizeof(path), "%s/million-a", scratch);
    ASSERT(write_file(path, a, 1000000) == 0);
    ASSERT_OK(ds_sha256_file(path, d2));
    ASSERT(!memcmp(d, d2, 32));
    unlink(path);
    ASSERT_ERR(ds_sha256_file(path, d2), DS_ERR_NOT_FOUND);
    free(a);
}

TEST(round_trip)
{
    struct ds_tcache_key key;
    struct ds_tcache *c = NULL;
    int32_t ids[CTX * K], want_ids[CTX * K];
    float vals[CTX * K], want_vals[CTX * K];
    char p[160];

    ASSERT_OK(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, K));
    ASSERT_EQ_INT(ds_tcache_n_windows(&key), NWIN);
    ASSERT_OK(build(cache, &key, 0));
    ASSERT_EQ_INT(count_entries(scratch), 2); // the teacher and the cache, no temporaries
    ASSERT_EQ_INT(count_entries(cache), 2);   // 256 + 44 windows
    snprintf(p, sizeof(p), "%s/shard-00001.dstc", cache);
    ASSERT(access(p, F_OK) == 0);
    ASSERT_OK(ds_tcache_open(cache, &key, &c));
    ASSERT(!memcmp(ds_tcache_get_key(c), &key, sizeof(key)));
    for (uint64_t i = 0; i < NWIN; i++) {
        uint64_t w = (i * 131 + 17) % NWIN; // every window, in a scattered order
        ASSERT_OK(ds_tcache_get(c, w, ids, vals));
        window_data(w, want_ids, want_vals);
        ASSERT(!memcmp(ids, want_ids, sizeof(ids)));
        ASSERT(!memcmp(vals, want_vals, sizeof(vals)));
    }
    ASSERT_ERR(ds_tcache_get(c, NWIN, ids, vals), DS_ERR_ARG);
    ds_tcache_free(c);
    c = NULL;
    // without an expected key, anything well-formed opens
    ASSERT_OK(ds_tcache_open(cache, NULL, &c));
    ds_tcache_free(c);
    // an existing cache is kept without FORCE, replaced with it
    ASSERT_ERR(build(cache, &key, 0), DS_ERR_EXISTS);
    ASSERT_OK(build(cache, &key, DS_WRITE_FORCE));
    ASSERT_EQ_INT(count_entries(scratch), 2);
}

TEST(refuses_other_keys)
{
    struct ds_tcache_key key, other;
    struct ds_tcache *c = NULL;
    char path[160];

    ASSERT_OK(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, K));

    snprintf(path, sizeof(path), "%s/teacher2.gguf", scratch);
    ASSERT(write_file(path, "another teacher", 15) == 0);
    ASSERT_OK(ds_tcache_key_init(&other, path, tokens, NTOK, NV, CTX, K));
    unlink(path);
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "another teacher"));
    ASSERT(!c);

    tokens[5]++;
    ASSERT_OK(ds_tcache_key_init(&other, teacher, tokens, NTOK, NV, CTX, K));
    tokens[5]--;
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "another corpus"));
    ASSERT_OK(ds_tcache_key_init(&other, teacher, tokens, NTOK - 1, NV, CTX, K));
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "another corpus"));

    ASSERT_OK(ds_tcache_key_init(&other, teacher, tokens, NTOK, NV + 1, CTX, K));
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "vocabulary"));
    ASSERT_OK(ds_tcache_key_init(&other, teacher, tokens, NTOK, NV, CTX + 1, K));
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "windows of 4 tokens"));
    ASSERT_OK(ds_tcache_key_init(&other, teacher, tokens, NTOK, NV, CTX, K + 1));
    ASSERT_ERR(ds_tcache_open(cache, &other, &c), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "top-3"));

    ASSERT_ERR(ds_tcache_open(teacher, &key, &c), DS_ERR_FORMAT);
    snprintf(path, sizeof(path), "%s/nothing", scratch);
    ASSERT_ERR(ds_tcache_open(path, &key, &c), DS_ERR_NOT_FOUND);
    ASSERT(!c);
}

TEST(writer_misuse)
{
    struct ds_tcache_key key;
    struct ds_tcache_writer *w = NULL;
    int32_t ids[CTX * K];
    float vals[CTX * K];
    char dir[160];

    ASSERT_ERR(ds_tcache_key_init(&key, teacher, tokens, CTX, NV, CTX, K), DS_ERR_ARG);
    ASSERT_ERR(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, 0), DS_ERR_ARG);
    ASSERT_ERR(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, NV + 1), DS_ERR_ARG);
    ASSERT_ERR(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, 0, K), DS_ERR_ARG);
    ASSERT_OK(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, K));
    snprintf(dir, sizeof(dir), "%s/partial", scratch);
    ASSERT_OK(ds_tcache_create(dir, &key, 0, &w));
    window_data(0, ids, vals);
    ASSERT_ERR(ds_tcache_put(w, 1, ids, vals), DS_ERR_STATE);
    for (uint64_t i = 0; i < 260; i++) { // past the first shard
        window_data(i, ids, vals);
        ASSERT_OK(ds_tcache_put(w, i, ids, vals));
    }
    ids[2] = NV;
    ASSERT_ERR(ds_tcache_put(w, 260, ids, vals), DS_ERR_ARG);
    ASSERT_ERR(ds_tcache_commit(w), DS_ERR_STATE);
    ASSERT(strstr(ds_errmsg(), "260 of 300"));
    ds_tcache_writer_free(w);
    ASSERT_EQ_INT(count_entries(scratch), 2); // nothing left behind
}

static int copy_cache(const char *dst)
{
    rm_rf(dst);
    if (mkdir(dst, 0777))
        return -1;
    for (int s = 0; s < 2; s++) {
        char a[200], b[200], *buf = NULL;
        size_t n;
        snprintf(a, sizeof(a), "%s/shard-%05d.dstc", cache, s);
        snprintf(b, sizeof(b), "%s/shard-%05d.dstc", dst, s);
        if (ds_read_file(a, 1 << 24, &buf, &n) || write_file(b, buf, n))
            return -1;
        free(buf);
    }
    return 0;
}

/* Opens dir and reads every window: DS_OK, the first error, or -1 when a
 * window reads without error but with other contents. */
static int read_all(const char *dir, const struct ds_tcache_key *key)
{
    struct ds_tcache *c = NULL;
    int32_t ids[CTX * K], want_ids[CTX * K];
    float vals[CTX * K], want_vals[CTX * K];
    ds_err rc = ds_tcache_open(dir, key, &c);
    for (uint64_t w = 0; rc == DS_OK && w < NWIN; w++) {
        rc = ds_tcache_get(c, w, ids, vals);
        window_data(w, want_ids, want_vals);
        if (rc == DS_OK && (memcmp(ids, want_ids, sizeof(ids)) || memcmp(vals, want_vals,
                                                                            sizeof(vals)))) {
            ds_tcache_free(c);
            return -1;
        }
    }
    ds_tcache_free(c);
    return rc;
}

TEST(damaged_files)
{
    struct ds_tcache_key key;
    char dir[160], shard[200], *orig = NULL;
    size_t n;
    int rc;

    ASSERT_OK(ds_tcache_key_init(&key, teacher, tokens, NTOK, NV, CTX, K));
    snprintf(dir, sizeof(dir), "%s/damaged", scratch);
    snprintf(shard, sizeof(shard), "%s/shard-00001.dstc", dir);
    ASSERT(copy_cache(dir) == 0);
    ASSERT_EQ_INT(read_all(dir, &key), DS_OK);
    ASSERT_OK(ds_read_file(shard, 1 << 24, &orig, &n));

    // a changed byte anywhere in the second shard (header, index, frames) is
    // an error, with or without an expected key, or (a bit zstd ignores, in a
    // frame) gives the right contents: never other data
    for (size_t i = 0; i < n; i += i < 128 + 16 * 44 ? 1 : 5) {
        orig[i] ^= 0x20;
        ASSERT(write_file(shard, orig, n) == 0);
        rc = read_all(dir, i % 2 ? &key : NULL);
        orig[i] ^= 0x20;
        ASSERT_MSG(rc == DS_ERR_FORMAT || rc == DS_ERR_UNSUPPORTED || rc == DS_OK,
                   "byte %zu: got %d (%s)", i, rc, ds_errmsg());
        ASSERT_MSG(rc != DS_OK || i >= 128 + 16 * 44, "byte %zu of the header or index", i);
    }
    // truncations
    for (size_t len = 0; len < n; len += 1 + len / 3) {
        ASSERT(write_file(shard, orig, len) == 0);
        ASSERT_EQ_INT(read_all(dir, &key), DS_ERR_FORMAT);
    }
    // another version: a clear message
    memcpy(orig + 8, "\x02\0\0\0", 4);
    ASSERT(write_file(shard, orig, n) == 0);
    ASSERT_EQ_INT(read_all(dir, &key), DS_ERR_UNSUPPORTED);
    ASSERT(strstr(ds_errmsg(), "version 2"));
    // a missing shard
    unlink(shard);
    ASSERT_EQ_INT(read_all(dir, &key), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "missing"));
    free(orig);
    rm_rf(dir);
}

static int stop_after_one(void *ud, uint64_t done, uint64_t total, const char *what)
{
    (void)ud, (void)total, (void)what;
    return done >= 1;
}

/* The cache built from a real model holds, for every position, the k
 * largest logits that ds_forward gives there, largest first. */
TEST(build_from_teacher)
{
    enum { T = 16, KK = 8, N = 3 * T + 5 };
    struct ds_convert_opts co = {.input = test_data("tiny-v2lite"), .to = DS_FORMAT_GGUF,
                                 .outtype = -1, .write_flags = DS_WRITE_FORCE};
    char gguf[160], dir[160];
    struct ds_model *m = NULL;
    struct ds_ctx *ctx = NULL;
    struct ds_tcache *c = NULL;
    struct ds_tcache_key key;
    int32_t tok[N], ids[T * KK];
    float vals[T * KK], *logits = NULL;
    int64_t V;

    snprintf(gguf, sizeof(gguf), "%s/v2lite.gguf", scratch);
    snprintf(dir, sizeof(dir), "%s/built", scratch);
    co.output = gguf;
    ASSERT_OK(ds_convert(&co, NULL));
    ASSERT_OK(ds_model_load(gguf, &m));
    V = ds_model_n_vocab(m);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)((i * 97 + 13) % V);
    ASSERT_OK(ds_tcache_key_init(&key, gguf, tok, N, (uint32_t)V, T, KK));

    ASSERT_ERR(ds_tcache_build(dir, &key, m, tok, 0, stop_after_one, NULL), DS_ERR_INTERRUPTED);
    ASSERT(access(dir, F_OK) != 0);
    tok[0]++;
    ASSERT_ERR(ds_tcache_build(dir, &key, m, tok, 0, NULL, NULL), DS_ERR_ARG);
    tok[0]--;
    ASSERT_OK(ds_tcache_build(dir, &key, m, tok, 0, NULL, NULL));
    ASSERT_OK(ds_tcache_open(dir, &key, &c));
    ASSERT_OK(ds_ctx_new(m, T, &ctx));
    logits = malloc((size_t)(T * V) * sizeof(*logits));
    ASSERT(logits);
    for (uint64_t w = 0; w < 3; w++) {
        ASSERT_OK(ds_tcache_get(c, w, ids, vals));
        ds_ctx_reset(ctx);
        ASSERT_OK(ds_forward(ctx, tok + w * T, T, logits, true));
        for (int p = 0; p < T; p++) {
            const float *l = logits + p * V;
            int above = 0;
            for (int j = 0; j < KK; j++) {
                ASSERT(vals[p * KK + j] == l[ids[p * KK + j]]);
                if (j)
                    ASSERT(vals[p * KK + j] <= vals[p * KK + j - 1]);
                for (int i = 0; i < j; i++)
                    ASSERT(ids[p * KK + i] != ids[p * KK + j]);
            }
            for (int64_t v = 0; v < V; v++)
                above += l[v] > vals[p * KK + KK - 1];
            ASSERT(above <= KK - 1);
        }
    }
    free(logits);
    ds_ctx_free(ctx);
    ds_tcache_free(c);
    ds_model_free(m);
    rm_rf(dir);
    unlink(gguf);
}

int main(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/ds-test-tcache.XXXXXX");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(teacher, sizeof(teacher), "%s/teacher.gguf", scratch);
    snprintf(cache, sizeof(cache), "%s/cache", scratch);
    if (write_file(teacher, "GGUF pretend teacher weights", 28))
        return 1;
    for (int i = 0; i < NTOK; i++)
        tokens[i] = (i * 37 + 5) % NV;
    RUN(sha256_vectors);
    RUN(round_trip);
    RUN(refuses_other_keys);
    RUN(writer_misuse);
    RUN(damaged_files);
    RUN(build_from_teacher);
    rm_rf(cache);
    unlink(teacher);
    rmdir(scratch);
    return test_report();
}
