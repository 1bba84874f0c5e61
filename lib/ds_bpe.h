/*
 * ds_bpe.h - training a byte-level BPE tokenizer on a text, written as the
 * GGUF tokenizer metadata that ds_tokenizer_new() and llama.cpp read.
 *
 * Training: the text is split exactly as ds_tokenizer_encode() splits it
 * (the chosen DeepSeek pre-tokenizer's regexes), each piece is mapped to
 * GPT-2's byte-level alphabet, and equal pieces are counted once with their
 * frequency. Then, until the vocabulary is full, the most frequent adjacent
 * pair of symbols over all pieces becomes a merge and a new token. Ties are
 * broken by the smaller left token id, then the smaller right token id, so a
 * given text and options always give the same tokenizer. A merge whose text
 * is already a token reuses it. Training stops early when no pair occurs
 * min_frequency times; the rest of the vocabulary is then filled with
 * "[PAD<i>]" tokens (type unused), so the vocabulary always has vocab_size
 * tokens.
 *
 * Vocabulary layout:
 *   0  DS_BPE_BOS   (control)   tokenizer.ggml.bos_token_id
 *   1  DS_BPE_EOS   (control)   tokenizer.ggml.eos_token_id
 *   2  DS_BPE_PAD   (control)   tokenizer.ggml.padding_token_id
 *   3 .. 258        the 256 byte-level characters, in code point order
 *   259 ..          merged tokens in merge order (rank r makes token 259 + r,
 *                   unless its text existed), then any "[PAD<i>]" tokens
 * Every byte has a token, so every valid UTF-8 text encodes, and decoding
 * gives the text back.
 *
 * Keys written: tokenizer.ggml.{model = "gpt2", pre, tokens, token_type,
 * merges ("left right" in byte-level text), bos_token_id, eos_token_id,
 * padding_token_id, add_bos_token, add_eos_token = false}. ds-convert turns
 * them into tokenizer.json and tokenizer_config.json (ds_hf_meta_to_tokenizer).
 */
#ifndef DS_BPE_H
#define DS_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_meta.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_BPE_BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_BPE_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_BPE_PAD "<\xef\xbd\x9c\xe2\x96\x81pad\xe2\x96\x81\xef\xbd\x9c>"

/* Special tokens and byte tokens: the smallest vocabulary. */
#define DS_BPE_MIN_VOCAB 259
/* Largest vocabulary ds_bpe_train() builds. */
#define DS_BPE_MAX_VOCAB (1u << 20)

struct ds_bpe_opts {
    uint32_t vocab_size;    /* tokens in all, DS_BPE_MIN_VOCAB .. DS_BPE_MAX_VOCAB */
    const char *pre;        /* pre-tokenizer: "deepseek-llm" (default), "deepseek-v3",
                               "deepseek-coder" */
    uint32_t min_frequency; /* merge only pairs seen this often (default 2, at least 1) */
    bool add_bos;           /* tokenizer.ggml.add_bos_token (default true) */
};

/* Defaults: vocab_size 1024, "deepseek-llm", min_frequency 2, add_bos. */
void ds_bpe_opts_init(struct ds_bpe_opts *o);

struct ds_bpe_stats {
    uint64_t n_pieces;   /* pre-tokenized pieces in the text */
    uint64_t n_unique;   /* distinct pieces */
    uint32_t n_merges;   /* merges learned */
    uint32_t n_padding;  /* "[PAD<i>]" tokens added */
    uint64_t n_tokens;   /* tokens the text encodes to with the result (no BOS) */
};

/* Trains on text[0..len) (valid UTF-8, else DS_ERR_ARG naming the byte
 * offset) and sets the tokenizer.* keys above in m (replacing any). stats may
 * be NULL. Time is about (merges x total symbols of the distinct pieces). */
ds_err ds_bpe_train(const char *text, size_t len, const struct ds_bpe_opts *o, struct ds_meta *m,
                    struct ds_bpe_stats *stats);

/* Writes a vocab-only GGUF (no tensors; like llama.cpp's ggml-vocab-*.gguf
 * and tests/data/vocab): general.architecture "deepseek2", general.name name
 * (NULL: "dskit-bpe") and the tokenizer.* keys of m, atomically to path
 * (flags: enum ds_write_flags). */
ds_err ds_bpe_write_vocab(const struct ds_meta *m, const char *name, const char *path,
                          unsigned flags);

#ifdef __cplusplus
}
#endif
#endif
