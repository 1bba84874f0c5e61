/*
 * ds_tcache.h - the teacher cache of distillation: a teacher's top-k logits
 * for every position of a tokenized corpus, computed once and stored on disk
 * (zstd-compressed), so later runs on the same corpus skip the teacher.
 *
 * The corpus of n_tokens tokens is cut into windows as the trainer cuts it
 * (ds_train.h): W = (n_tokens - 1) / ctx windows, window i covering tokens
 * [i*ctx, i*ctx + ctx] and having ctx predicted positions. For each position
 * the cache holds the k largest raw logits of the teacher (largest first) and
 * their token ids. Raw logits (not probabilities) are stored, so one cache
 * serves every distillation temperature.
 *
 * Key: a cache belongs to one teacher, one tokenized corpus, one ctx and one
 * k. ds_tcache_open() compares the stored key with the caller's and refuses
 * any difference with DS_ERR_ARG and a message saying which part differs:
 *   teacher  sha256 of the teacher file's bytes (ds_sha256_file; a renamed or
 *            copied file is the same teacher, a re-quantized one is not)
 *   corpus   n_tokens and sha256 of the token ids as int32 little-endian
 *            (so another text, tokenizer or held-out split is another corpus)
 *   shape    n_vocab of the teacher, ctx, k
 *
 * Directory layout (written atomically as a whole with ds_outdir: a crash
 * leaves no half cache):
 *   DIR/shard-NNNNN.dstc, one per DS_TCACHE_SHARD windows (the last one may
 *   hold fewer). Each shard is self-describing, all little-endian:
 *     header (128 bytes)
 *       0  char[8] "DSTCACHE"         8  u32 version (1)
 *      12  u32 n_vocab               16  u32 ctx          20  u32 k
 *      24  u64 n_tokens              32  u64 n_windows
 *      40  u32 windows_per_shard     44  u32 shard index  48  u32 n_shards
 *      52  u32 windows in this shard 56  u8[32] teacher sha256
 *      88  u8[32] tokens sha256     120  u64 0 (reserved)
 *     index: one {u64 offset, u64 size} per window of the shard (absolute
 *       offsets, increasing, contiguous after the index)
 *     frames: one zstd frame per window, with its content size and checksum;
 *       it decompresses to ctx*k int32 ids then ctx*k float32 logits,
 *       position-major.
 * Every field is checked on open and every frame on read: a damaged or
 * foreign file is an error (DS_ERR_FORMAT naming the file), never a crash.
 */
#ifndef DS_TCACHE_H
#define DS_TCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_convert.h"
#include "ds_error.h"
#include "ds_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_TCACHE_VERSION 1
#define DS_TCACHE_SHARD 256   /* windows per shard file */
#define DS_TCACHE_MAX_K 1024  /* largest k */

struct ds_tcache_key {
    uint8_t teacher[32];  /* sha256 of the teacher file */
    uint8_t tokens[32];   /* sha256 of the corpus token ids (int32 LE) */
    uint64_t n_tokens;
    uint32_t n_vocab;     /* teacher vocabulary; ids are below it */
    uint32_t ctx;         /* positions per window */
    uint32_t k;           /* logits kept per position */
};

/* Fills key from the teacher file (hashed), the corpus and the shape.
 * DS_ERR_ARG when the corpus has fewer than ctx + 1 tokens, or k is 0, above
 * DS_TCACHE_MAX_K or above n_vocab. */
ds_err ds_tcache_key_init(struct ds_tcache_key *key, const char *teacher_path,
                          const int32_t *tokens, size_t n_tokens, uint32_t n_vocab, uint32_t ctx,
                          uint32_t k);

/* Windows of the key's corpus: (n_tokens - 1) / ctx. */
uint64_t ds_tcache_n_windows(const struct ds_tcache_key *key);

/* ---- writing ---------------------------------------------------------------------- */

struct ds_tcache_writer;

/* Starts a cache at dir (flags: DS_WRITE_FORCE replaces an existing one once
 * the new one is complete; without it an existing dir gives DS_ERR_EXISTS). */
ds_err ds_tcache_create(const char *dir, const struct ds_tcache_key *key, unsigned flags,
                        struct ds_tcache_writer **out);

/* Adds window `window` (0, 1, 2, ... in order; DS_ERR_STATE otherwise):
 * ids and vals hold ctx*k entries each, position-major, each position's
 * logits largest first (ds_logits_topk gives this). Ids must be below
 * n_vocab (DS_ERR_ARG). */
ds_err ds_tcache_put(struct ds_tcache_writer *w, uint64_t window, const int32_t *ids,
                     const float *vals);

/* After the last window: writes the last shard and renames the directory
 * into place. DS_ERR_STATE when windows are missing. */
ds_err ds_tcache_commit(struct ds_tcache_writer *w);

/* Without a commit, removes everything written. Accepts NULL. */
void ds_tcache_writer_free(struct ds_tcache_writer *w);

/* Runs teacher over every window of tokens[0..key->n_tokens) (the corpus the
 * key was made from: checked by its hash) from an empty cache at position 0,
 * as the trainer feeds the student, keeps each position's top-k logits
 * (largest first, ties to the lower id) and writes the cache at dir (flags
 * as ds_tcache_create). The teacher's vocabulary must be key->n_vocab and its
 * context at least key->ctx (DS_ERR_ARG). progress (may be NULL) is called
 * after each window with done/total windows; a non-zero return stops with
 * DS_ERR_INTERRUPTED and nothing written. */
ds_err ds_tcache_build(const char *dir, const struct ds_tcache_key *key,
                       const struct ds_model *teacher, const int32_t *tokens, unsigned flags,
                       ds_progress_fn progress, void *progress_ud);

/* ---- reading ---------------------------------------------------------------------- */

struct ds_tcache;

/* Opens the cache at dir and checks every shard's header and index. expect
 * (may be NULL: no check) is the key the caller needs: any difference is
 * DS_ERR_ARG with a message naming it. A missing dir is DS_ERR_NOT_FOUND. */
ds_err ds_tcache_open(const char *dir, const struct ds_tcache_key *expect,
                      struct ds_tcache **out);

/* The stored key. Borrowed. */
const struct ds_tcache_key *ds_tcache_get_key(const struct ds_tcache *c);

/* Window `window`'s ids and vals (ctx*k each). A damaged frame or an id out
 * of range is DS_ERR_FORMAT naming the shard. Not thread-safe: one reader
 * per thread. */
ds_err ds_tcache_get(struct ds_tcache *c, uint64_t window, int32_t *ids, float *vals);

void ds_tcache_free(struct ds_tcache *c); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
