/*
 * tcache.c - teacher top-k logits cache (format in ds_tcache.h).
 *
 * The writer compresses each window into its own zstd frame and keeps the
 * current shard's frames in memory (at most DS_TCACHE_SHARD of them), then
 * writes header, index and frames in one pass. The reader loads every
 * shard's header and index at open (validating them) and reads one frame per
 * ds_tcache_get with pread, keeping the last shard's file open.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "ds_io.h"
#include "ds_tcache.h"
#include "ds_train.h"
#include "error_impl.h"
#include "ds_banned.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the teacher cache format is little-endian; this host is not"
#endif

#define MAGIC "DSTCACHE"
#define HDR_SIZE 128
#define MAX_CTX (1u << 20)
#define MAX_FRAME_RAW ((uint64_t)1 << 30)
#define MAX_WINDOWS ((uint64_t)DS_TCACHE_SHARD << 24)

/* ======================================================================== */
/* Keys and headers                                                         */
/* ======================================================================== */

uint64_t ds_tcache_n_windows(const struct ds_tcache_key *key)
{
    return key && key->ctx && key->n_tokens > 0 ? (key->n_tokens - 1) / key->ctx : 0;
}

static ds_err check_shape(uint64_t n_tokens, uint32_t n_vocab, uint32_t ctx, uint32_t k,
                          const char *name)
{
    DS_RETURN_IF(ctx == 0 || ctx > MAX_CTX, DS_ERR_ARG, "%s: window length %lu is out of range",
                 name, (unsigned long)ctx);
    DS_RETURN_IF(n_tokens < (uint64_t)ctx + 1, DS_ERR_ARG,
                 "%s: %llu tokens is less than one window of %lu", name,
                 (unsigned long long)n_tokens, (unsigned long)ctx + 1);
    DS_RETURN_IF(k == 0 || k > DS_TCACHE_MAX_K || k > n_vocab, DS_ERR_ARG,
                 "%s: top-k %lu is out of range (1 to %u, at most the vocabulary %lu)", name,
                 (unsigned long)k, DS_TCACHE_MAX_K, (unsigned long)n_vocab);
    DS_RETURN_IF((n_tokens - 1) / ctx > MAX_WINDOWS, DS_ERR_LIMIT,
                 "%s: %llu tokens is too many windows", name, (unsigned long long)n_tokens);
    DS_RETURN_IF((uint64_t)ctx * k * 8 > MAX_FRAME_RAW, DS_ERR_LIMIT,
                 "%s: %lu positions x top-%lu is too large a window", name, (unsigned long)ctx,
                 (unsigned long)k);
    return DS_OK;
}

ds_err ds_tcache_key_init(struct ds_tcache_key *key, const char *teacher_path,
                          const int32_t *tokens, size_t n_tokens, uint32_t n_vocab, uint32_t ctx,
                          uint32_t k)
{
    DS_RETURN_IF(!key || !teacher_path || (!tokens && n_tokens), DS_ERR_ARG,
                 "key, teacher or tokens missing");
    memset(key, 0, sizeof(*key));
    DS_TRY(check_shape(n_tokens, n_vocab, ctx, k, "teacher cache"));
    DS_TRY(ds_sha256_file(teacher_path, key->teacher));
    ds_sha256(tokens, n_tokens * sizeof(*tokens), key->tokens);
    key->n_tokens = n_tokens;
    key->n_vocab = n_vocab;
    key->ctx = ctx;
    key->k = k;
    return DS_OK;
}

static size_t frame_raw(const struct ds_tcache_key *key)
{
    return (size_t)key->ctx * key->k * 8;
}

static uint32_t shard_count(uint64_t windows)
{
    return (uint32_t)((windows + DS_TCACHE_SHARD - 1) / DS_TCACHE_SHARD);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void hdr_encode(uint8_t h[HDR_SIZE], const struct ds_tcache_key *key, uint32_t shard,
                       uint32_t n_in)
{
    uint64_t nw = ds_tcache_n_windows(key);
    memset(h, 0, HDR_SIZE);
    memcpy(h, MAGIC, 8);
    put_u32(h + 8, DS_TCACHE_VERSION);
    put_u32(h + 12, key->n_vocab);
    put_u32(h + 16, key->ctx);
    put_u32(h + 20, key->k);
    put_u64(h + 24, key->n_tokens);
    put_u64(h + 32, nw);
    put_u32(h + 40, DS_TCACHE_SHARD);
    put_u32(h + 44, shard);
    put_u32(h + 48, shard_count(nw));
    put_u32(h + 52, n_in);
    memcpy(h + 56, key->teacher, 32);
    memcpy(h + 88, key->tokens, 32);
}

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

struct ds_tcache_writer {
    struct ds_tcache_key key;
    struct ds_outdir *dir;
    ZSTD_CCtx *cctx;
    uint8_t *raw;           /* one window, uncompressed */
    uint8_t *frames;        /* the current shard's frames */
    size_t frames_len, frames_cap;
    uint64_t sizes[DS_TCACHE_SHARD];
    uint32_t n_in;          /* windows in the current shard */
    uint64_t next;          /* next window to put */
    uint32_t shard;         /* current shard */
    bool committed;
};

ds_err ds_tcache_create(const char *dir, const struct ds_tcache_key *key, unsigned flags,
                        struct ds_tcache_writer **out)
{
    struct ds_tcache_writer *w = NULL;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!dir || !key || !out, DS_ERR_ARG, "directory, key or output missing");
    *out = NULL;
    DS_TRY(check_shape(key->n_tokens, key->n_vocab, key->ctx, key->k, dir));
    w = ds_calloc(1, sizeof(*w));
    if (!w)
        return DS_ERR_NOMEM;
    w->key = *key;
    w->cctx = ZSTD_createCCtx();
    w->raw = ds_malloc(frame_raw(key));
    DS_FAIL_IF(!w->cctx || !w->raw, DS_ERR_NOMEM, "out of memory");
    // the frames carry their content size and a checksum: damage is detected
    DS_FAIL_IF(ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, 3)) ||
                   ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1)) ||
                   ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1)),
               DS_ERR_UNSUPPORTED, "zstd: cannot set the compression parameters");
    DS_CHECK(ds_outdir_open(&w->dir, dir, flags));
    *out = w;
    w = NULL;
out:
    ds_tcache_writer_free(w);
    return rc;
}

static ds_err flush_shard(struct ds_tcache_writer *w)
{
    struct ds_writer *f = NULL;
    uint8_t h[HDR_SIZE], ent[16];
    char path[4096];
    uint64_t off = HDR_SIZE + 16 * (uint64_t)w->n_in;
    ds_err rc = DS_OK;

    int k = snprintf(path, sizeof(path), "%s/shard-%05u.dstc", ds_outdir_tmp(w->dir),
                     (unsigned)w->shard);
    DS_RETURN_IF(k < 0 || (size_t)k >= sizeof(path), DS_ERR_ARG, "'%s': path too long",
                 ds_outdir_tmp(w->dir));
    hdr_encode(h, &w->key, w->shard, w->n_in);
    DS_CHECK(ds_writer_open(&f, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 1));
    DS_CHECK(ds_writer_write(f, h, HDR_SIZE));
    for (uint32_t i = 0; i < w->n_in; i++) {
        put_u64(ent, off);
        put_u64(ent + 8, w->sizes[i]);
        DS_CHECK(ds_writer_write(f, ent, 16));
        off += w->sizes[i];
    }
    DS_CHECK(ds_writer_write(f, w->frames, w->frames_len));
    DS_CHECK(ds_writer_commit(f));
    w->shard++;
    w->n_in = 0;
    w->frames_len = 0;
out:
    ds_writer_free(f);
    return rc;
}

ds_err ds_tcache_put(struct ds_tcache_writer *w, uint64_t window, const int32_t *ids,
                     const float *vals)
{
    size_t raw = 0, bound, cs, n;

    DS_RETURN_IF(!w || !ids || !vals, DS_ERR_ARG, "writer, ids or values missing");
    DS_RETURN_IF(w->committed, DS_ERR_STATE, "teacher cache already committed");
    DS_RETURN_IF(window != w->next, DS_ERR_STATE,
                 "teacher cache: window %llu given, %llu expected (windows go in order)",
                 (unsigned long long)window, (unsigned long long)w->next);
    DS_RETURN_IF(window >= ds_tcache_n_windows(&w->key), DS_ERR_STATE,
                 "teacher cache: window %llu is past the last (%llu windows)",
                 (unsigned long long)window,
                 (unsigned long long)ds_tcache_n_windows(&w->key));
    n = (size_t)w->key.ctx * w->key.k;
    for (size_t i = 0; i < n; i++)
        DS_RETURN_IF(ids[i] < 0 || (uint32_t)ids[i] >= w->key.n_vocab, DS_ERR_ARG,
                     "teacher cache: token id %ld at %zu is out of range (vocabulary %lu)",
                     (long)ids[i], i, (unsigned long)w->key.n_vocab);
    raw = frame_raw(&w->key);
    memcpy(w->raw, ids, n * 4);
    memcpy(w->raw + n * 4, vals, n * 4);
    bound = ZSTD_compressBound(raw);
    if (w->frames_len + bound > w->frames_cap)
        DS_TRY(ds_grow((void **)&w->frames, &w->frames_cap, w->frames_len + bound, 1));
    cs = ZSTD_compress2(w->cctx, w->frames + w->frames_len, bound, w->raw, raw);
    DS_RETURN_IF(ZSTD_isError(cs), DS_ERR_NOMEM, "zstd: %s", ZSTD_getErrorName(cs));
    w->frames_len += cs;
    w->sizes[w->n_in++] = cs;
    w->next++;
    if (w->n_in == DS_TCACHE_SHARD)
        DS_TRY(flush_shard(w));
    return DS_OK;
}

ds_err ds_tcache_commit(struct ds_tcache_writer *w)
{
    uint64_t nw;
    DS_RETURN_IF(!w || w->committed, DS_ERR_STATE, "teacher cache not open or already committed");
    nw = ds_tcache_n_windows(&w->key);
    DS_RETURN_IF(w->next != nw, DS_ERR_STATE, "teacher cache: %llu of %llu windows written",
                 (unsigned long long)w->next, (unsigned long long)nw);
    if (w->n_in)
        DS_TRY(flush_shard(w));
    DS_TRY(ds_outdir_commit(w->dir));
    w->committed = true;
    return DS_OK;
}

void ds_tcache_writer_free(struct ds_tcache_writer *w)
{
    if (!w)
        return;
    ds_outdir_free(w->dir);
    ZSTD_freeCCtx(w->cctx);
    free(w->frames);
    free(w->raw);
    free(w);
}

ds_err ds_tcache_build(const char *dir, const struct ds_tcache_key *key,
                       const struct ds_model *teacher, const int32_t *tokens, unsigned flags,
                       ds_progress_fn progress, void *progress_ud)
{
    struct ds_tcache_writer *w = NULL;
    struct ds_ctx *ctx = NULL;
    float *logits = NULL, *vals = NULL;
    int32_t *ids = NULL;
    uint8_t digest[32];
    uint64_t nw;
    size_t V, T, K;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!dir || !key || !teacher || !tokens, DS_ERR_ARG,
                 "directory, key, teacher or tokens missing");
    ds_sha256(tokens, key->n_tokens * sizeof(*tokens), digest);
    DS_RETURN_IF(memcmp(digest, key->tokens, 32), DS_ERR_ARG,
                 "teacher cache: the tokens are not the corpus of the key");
    DS_RETURN_IF(ds_model_n_vocab(teacher) != (int64_t)key->n_vocab, DS_ERR_ARG,
                 "teacher cache: the teacher's vocabulary is %lld, the key's %lu",
                 (long long)ds_model_n_vocab(teacher), (unsigned long)key->n_vocab);
    V = key->n_vocab;
    T = key->ctx;
    K = key->k;
    nw = ds_tcache_n_windows(key);
    DS_CHECK(ds_ctx_new(teacher, (int64_t)T, &ctx));
    logits = ds_malloc(T * V * sizeof(*logits));
    ids = ds_malloc(T * K * sizeof(*ids));
    vals = ds_malloc(T * K * sizeof(*vals));
    DS_FAIL_IF(!logits || !ids || !vals, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_tcache_create(dir, key, flags, &w));
    for (uint64_t i = 0; i < nw; i++) {
        ds_ctx_reset(ctx);
        DS_CHECK(ds_forward(ctx, tokens + i * T, T, logits, true));
        for (size_t p = 0; p < T; p++)
            ds_logits_topk(logits + p * V, (int64_t)V, (int64_t)K, ids + p * K, vals + p * K);
        DS_CHECK(ds_tcache_put(w, i, ids, vals));
        DS_FAIL_IF(progress && progress(progress_ud, i + 1, nw, "teacher"), DS_ERR_INTERRUPTED,
                   "teacher cache: interrupted");
    }
    DS_CHECK(ds_tcache_commit(w));
out:
    ds_tcache_writer_free(w);
    free(vals);
    free(ids);
    free(logits);
    ds_ctx_free(ctx);
    return rc;
}

/* ======================================================================== */
/* Reader                                                                   */
/* ======================================================================== */

struct shard {
    uint64_t *off, *size; /* per window of the shard */
    uint32_t n;
};

struct ds_tcache {
    char *dir;
    struct ds_tcache_key key;
    uint64_t n_windows;
    struct shard *sh;
    uint32_t n_shards;
    struct ds_reader *cur;   /* open file of shard cur_shard */
    uint32_t cur_shard;
    ZSTD_DCtx *dctx;
    uint8_t *frame, *raw;
    size_t frame_cap;
};

static void hex8(const uint8_t *d, char out[17])
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static ds_err shard_path(const struct ds_tcache *c, uint32_t s, char *path, size_t cap)
{
    int k = snprintf(path, cap, "%s/shard-%05u.dstc", c->dir, (unsigned)s);
    DS_RETURN_IF(k < 0 || (size_t)k >= cap, DS_ERR_ARG, "'%s': path too long", c->dir);
    return DS_OK;
}

/* Compares the stored key with the caller's; says which part differs. */
static ds_err key_match(const struct ds_tcache *c, const struct ds_tcache_key *e)
{
    const struct ds_tcache_key *k = &c->key;
    char a[17], b[17];
    if (memcmp(k->teacher, e->teacher, 32)) {
        hex8(k->teacher, a);
        hex8(e->teacher, b);
        return ds_set_error(DS_ERR_ARG,
                            "'%s': teacher cache made for another teacher (sha256 %s..., this "
                            "teacher %s...)", c->dir, a, b);
    }
    if (k->n_tokens != e->n_tokens || memcmp(k->tokens, e->tokens, 32))
        return ds_set_error(DS_ERR_ARG,
                            "'%s': teacher cache made for another corpus (%llu tokens, this "
                            "corpus %llu tokens%s)", c->dir, (unsigned long long)k->n_tokens,
                            (unsigned long long)e->n_tokens,
                            k->n_tokens == e->n_tokens ? ", other ids" : "");
    DS_RETURN_IF(k->n_vocab != e->n_vocab, DS_ERR_ARG,
                 "'%s': teacher cache made for a vocabulary of %lu, not %lu", c->dir,
                 (unsigned long)k->n_vocab, (unsigned long)e->n_vocab);
    DS_RETURN_IF(k->ctx != e->ctx, DS_ERR_ARG,
                 "'%s': teacher cache made for windows of %lu tokens, not %lu", c->dir,
                 (unsigned long)k->ctx, (unsigned long)e->ctx);
    DS_RETURN_IF(k->k != e->k, DS_ERR_ARG, "'%s': teacher cache holds top-%lu logits, not top-%lu",
                 c->dir, (unsigned long)k->k, (unsigned long)e->k);
    return DS_OK;
}

/* Reads and checks shard s's header and index (the first shard sets the key). */
static ds_err load_shard(struct ds_tcache *c, uint32_t s)
{
    struct ds_reader *r = NULL;
    uint8_t h[HDR_SIZE], *idx = NULL;
    char path[4096];
    uint64_t fsize, end, bound;
    uint32_t n, expect_n;
    struct shard *sh;
    ds_err rc = DS_OK;

    DS_CHECK(shard_path(c, s, path, sizeof(path)));
    rc = ds_reader_open(&r, path);
    if (rc == DS_ERR_NOT_FOUND)
        rc = ds_set_error(DS_ERR_FORMAT, "'%s': teacher cache shard %u is missing", path,
                          (unsigned)s);
    DS_CHECK(rc);
    DS_FAIL_IF(!ds_reader_is_file(r), DS_ERR_FORMAT, "'%s': not a regular uncompressed file",
               path);
    fsize = ds_reader_size(r);
    DS_FAIL_IF(fsize < HDR_SIZE, DS_ERR_FORMAT, "'%s': too short for a teacher cache shard "
               "(%llu bytes)", path, (unsigned long long)fsize);
    DS_CHECK(ds_reader_pread(r, h, HDR_SIZE, 0));
    DS_FAIL_IF(memcmp(h, MAGIC, 8), DS_ERR_FORMAT, "'%s': not a teacher cache shard (bad magic)",
               path);
    DS_FAIL_IF(get_u64(h + 120) != 0, DS_ERR_FORMAT, "'%s': reserved header bytes are not zero",
               path);
    DS_FAIL_IF(get_u32(h + 8) != DS_TCACHE_VERSION, DS_ERR_UNSUPPORTED,
               "'%s': teacher cache version %lu is not supported (this is version %d; delete the "
               "cache to rebuild it)", path, (unsigned long)get_u32(h + 8), DS_TCACHE_VERSION);
    if (s == 0) {
        c->key.n_vocab = get_u32(h + 12);
        c->key.ctx = get_u32(h + 16);
        c->key.k = get_u32(h + 20);
        c->key.n_tokens = get_u64(h + 24);
        memcpy(c->key.teacher, h + 56, 32);
        memcpy(c->key.tokens, h + 88, 32);
        if (check_shape(c->key.n_tokens, c->key.n_vocab, c->key.ctx, c->key.k, path)) {
            char why[256];
            snprintf(why, sizeof(why), "%s", ds_errmsg());
            DS_FAIL_IF(true, DS_ERR_FORMAT, "bad teacher cache header: %s", why);
        }
        c->n_windows = ds_tcache_n_windows(&c->key);
        DS_FAIL_IF(c->n_windows > MAX_WINDOWS, DS_ERR_FORMAT,
                   "'%s': %llu windows is too many", path, (unsigned long long)c->n_windows);
        DS_FAIL_IF(get_u64(h + 32) != c->n_windows || get_u32(h + 40) != DS_TCACHE_SHARD ||
                       get_u32(h + 48) != shard_count(c->n_windows),
                   DS_ERR_FORMAT, "'%s': inconsistent teacher cache header", path);
        c->n_shards = shard_count(c->n_windows);
        if (c->n_shards > 1) { // the last shard is there before its table is allocated
            char last[4096];
            DS_CHECK(shard_path(c, c->n_shards - 1, last, sizeof(last)));
            DS_FAIL_IF(access(last, F_OK) != 0, DS_ERR_FORMAT,
                       "'%s': teacher cache shard %u is missing", last,
                       (unsigned)(c->n_shards - 1));
        }
        c->sh = ds_calloc(c->n_shards, sizeof(*c->sh));
        DS_FAIL_IF(!c->sh, DS_ERR_NOMEM, "out of memory");
    } else {
        uint8_t ref[HDR_SIZE];
        hdr_encode(ref, &c->key, s, get_u32(h + 52));
        DS_FAIL_IF(memcmp(ref, h, HDR_SIZE), DS_ERR_FORMAT,
                   "'%s': shard belongs to another teacher cache than shard 0", path);
    }
    DS_FAIL_IF(get_u32(h + 44) != s, DS_ERR_FORMAT, "'%s': holds shard %lu, not %lu", path,
               (unsigned long)get_u32(h + 44), (unsigned long)s);
    n = get_u32(h + 52);
    expect_n = s + 1 < c->n_shards ? DS_TCACHE_SHARD
                                   : (uint32_t)(c->n_windows - (uint64_t)s * DS_TCACHE_SHARD);
    DS_FAIL_IF(n != expect_n, DS_ERR_FORMAT, "'%s': holds %lu windows, %lu expected", path,
               (unsigned long)n, (unsigned long)expect_n);
    DS_FAIL_IF(fsize < HDR_SIZE + 16 * (uint64_t)n, DS_ERR_FORMAT,
               "'%s': truncated teacher cache index", path);
    sh = &c->sh[s];
    idx = ds_malloc(16 * (size_t)n);
    sh->off = ds_malloc(n * sizeof(*sh->off));
    sh->size = ds_malloc(n * sizeof(*sh->size));
    DS_FAIL_IF(!idx || !sh->off || !sh->size, DS_ERR_NOMEM, "out of memory");
    DS_CHECK(ds_reader_pread(r, idx, 16 * (size_t)n, HDR_SIZE));
    end = HDR_SIZE + 16 * (uint64_t)n;
    bound = ZSTD_compressBound(frame_raw(&c->key));
    for (uint32_t i = 0; i < n; i++) {
        sh->off[i] = get_u64(idx + 16 * i);
        sh->size[i] = get_u64(idx + 16 * i + 8);
        DS_FAIL_IF(sh->off[i] != end || sh->size[i] == 0 || sh->size[i] > bound ||
                       sh->size[i] > fsize - end,
                   DS_ERR_FORMAT, "'%s': bad index entry %lu (offset %llu, size %llu)", path,
                   (unsigned long)i, (unsigned long long)sh->off[i],
                   (unsigned long long)sh->size[i]);
        end += sh->size[i];
    }
    DS_FAIL_IF(end != fsize, DS_ERR_FORMAT, "'%s': %llu bytes, the index says %llu", path,
               (unsigned long long)fsize, (unsigned long long)end);
    sh->n = n;
out:
    free(idx);
    ds_reader_free(r);
    return rc;
}

ds_err ds_tcache_open(const char *dir, const struct ds_tcache_key *expect,
                      struct ds_tcache **out)
{
    struct ds_tcache *c = NULL;
    struct ds_reader *probe = NULL;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!dir || !out, DS_ERR_ARG, "directory or output missing");
    *out = NULL;
    c = ds_calloc(1, sizeof(*c));
    if (!c)
        return DS_ERR_NOMEM;
    c->dir = ds_strdup(dir);
    c->cur_shard = UINT32_MAX;
    DS_FAIL_IF(!c->dir, DS_ERR_NOMEM, "out of memory");
    rc = ds_reader_open(&probe, dir); // a directory answers DS_ERR_ARG
    ds_reader_free(probe);
    DS_FAIL_IF(rc == DS_ERR_NOT_FOUND, DS_ERR_NOT_FOUND, "'%s': no such teacher cache", dir);
    DS_FAIL_IF(rc == DS_OK, DS_ERR_FORMAT, "'%s': a teacher cache is a directory, not a file",
               dir);
    rc = DS_OK;
    DS_CHECK(load_shard(c, 0));
    for (uint32_t s = 1; s < c->n_shards; s++)
        DS_CHECK(load_shard(c, s));
    if (expect)
        DS_CHECK(key_match(c, expect));
    c->dctx = ZSTD_createDCtx();
    c->raw = ds_malloc(frame_raw(&c->key));
    DS_FAIL_IF(!c->dctx || !c->raw, DS_ERR_NOMEM, "out of memory");
    *out = c;
    c = NULL;
out:
    ds_tcache_free(c);
    return rc;
}

const struct ds_tcache_key *ds_tcache_get_key(const struct ds_tcache *c)
{
    return c ? &c->key : NULL;
}

ds_err ds_tcache_get(struct ds_tcache *c, uint64_t window, int32_t *ids, float *vals)
{
    char path[4096];
    uint32_t s, j;
    size_t raw, n, got;
    unsigned long long csz;
    const int32_t *rid;
    const float *rv;

    DS_RETURN_IF(!c || !ids || !vals, DS_ERR_ARG, "cache, ids or values missing");
    DS_RETURN_IF(window >= c->n_windows, DS_ERR_ARG,
                 "'%s': window %llu is out of range (%llu windows)", c->dir,
                 (unsigned long long)window, (unsigned long long)c->n_windows);
    s = (uint32_t)(window / DS_TCACHE_SHARD);
    j = (uint32_t)(window % DS_TCACHE_SHARD);
    DS_TRY(shard_path(c, s, path, sizeof(path)));
    if (c->cur_shard != s) {
        ds_reader_free(c->cur);
        c->cur = NULL;
        c->cur_shard = UINT32_MAX;
        DS_TRY(ds_reader_open(&c->cur, path));
        DS_RETURN_IF(!ds_reader_is_file(c->cur) ||
                         ds_reader_size(c->cur) < c->sh[s].off[j] + c->sh[s].size[j],
                     DS_ERR_FORMAT, "'%s': changed since the teacher cache was opened", path);
        c->cur_shard = s;
    }
    if (c->sh[s].size[j] > c->frame_cap) {
        free(c->frame);
        c->frame_cap = 0;
        c->frame = ds_malloc(c->sh[s].size[j]);
        if (!c->frame)
            return DS_ERR_NOMEM;
        c->frame_cap = c->sh[s].size[j];
    }
    csz = (unsigned long long)c->sh[s].size[j];
    DS_TRY(ds_reader_pread(c->cur, c->frame, (size_t)csz, c->sh[s].off[j]));
    raw = frame_raw(&c->key);
    DS_RETURN_IF(ZSTD_getFrameContentSize(c->frame, (size_t)csz) != raw, DS_ERR_FORMAT,
                 "'%s': window %llu is damaged (frame size)", path, (unsigned long long)window);
    got = ZSTD_decompressDCtx(c->dctx, c->raw, raw, c->frame, (size_t)csz);
    DS_RETURN_IF(ZSTD_isError(got) || got != raw, DS_ERR_FORMAT,
                 "'%s': window %llu is damaged (%s)", path, (unsigned long long)window,
                 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short frame");
    n = (size_t)c->key.ctx * c->key.k;
    rid = (const int32_t *)(const void *)c->raw;
    rv = (const float *)(const void *)(c->raw + n * 4);
    for (size_t i = 0; i < n; i++) {
        DS_RETURN_IF(rid[i] < 0 || (uint32_t)rid[i] >= c->key.n_vocab || !isfinite(rv[i]),
                     DS_ERR_FORMAT, "'%s': window %llu holds a bad entry at %zu", path,
                     (unsigned long long)window, i);
    }
    memcpy(ids, rid, n * 4);
    memcpy(vals, rv, n * 4);
    return DS_OK;
}

void ds_tcache_free(struct ds_tcache *c)
{
    if (!c)
        return;
    for (uint32_t s = 0; c->sh && s < c->n_shards; s++) {
        free(c->sh[s].off);
        free(c->sh[s].size);
    }
    free(c->sh);
    ds_reader_free(c->cur);
    ZSTD_freeDCtx(c->dctx);
    free(c->frame);
    free(c->raw);
    free(c->dir);
    free(c);
}
