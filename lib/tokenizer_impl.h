/*
 * tokenizer_impl.h - pieces of the tokenizer that the BPE trainer (bpe_train.c)
 * shares with it (internal to libds).
 */
#ifndef DS_TOKENIZER_IMPL_H
#define DS_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "ds_tokenizer.h"

/* Receives one pre-tokenized piece (borrowed: points into the text). */
typedef ds_err (*tok_piece_fn)(void *ctx, const char *piece, size_t len);

/* Splits text as ds_tokenizer_encode() does before BPE (special tokens cut
 * out and dropped, control tokens treated as text, then the pre-tokenizer's
 * regexes) and calls fn for every piece, in order. A non-zero return of fn
 * stops and is returned. Invalid UTF-8 gives DS_ERR_ARG. */
ds_err tok_pieces(const struct ds_tokenizer *t, const char *text, size_t len, tok_piece_fn fn,
                  void *ctx);

/* The UTF-8 text of byte b's character in GPT-2's byte-to-unicode table
 * (1 or 2 bytes); returns its length. */
size_t tok_byte_char(unsigned char b, char out[4]);

/* Hashes for the open-addressing tables of both. FNV-1a of n bytes: */
static inline uint64_t tok_fnv1a(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* MurmurHash3's 64-bit finaliser (fmix64). */
static inline uint64_t tok_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

#endif
