/*
 * tokenizer_impl.h - pieces of the tokenizer that the BPE trainer (bpe_train.c)
 * shares with it (internal to libds).
 */
#ifndef DS_TOKENIZER_IMPL_H
#define DS_TOKENIZER_IMPL_H

#include <stddef.h>

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

#endif
