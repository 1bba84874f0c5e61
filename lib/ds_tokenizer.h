/*
 * ds_tokenizer.h - byte-level BPE tokenizer from GGUF tokenizer metadata
 * (tokenizer.ggml.model "gpt2"): DeepSeek-LLM/V2 ("deepseek-llm"),
 * DeepSeek-Coder ("deepseek-coder") and DeepSeek-V3/R1 ("deepseek-v3")
 * pre-tokenizers, their Unicode regexes run with PCRE2.
 *
 * Encoding: special tokens (control and user-defined tokens of
 * tokenizer.ggml.token_type) are matched in the text first, leftmost, then
 * longest, as Hugging Face tokenizers does: control tokens only when
 * parse_special is set, user-defined ones always (as both tokenizers and
 * llama.cpp do). Each remaining span is split by the pre-tokenizer regexes,
 * mapped to byte-level symbols (GPT-2's byte-to-unicode table) and merged by
 * BPE rank (tokenizer.ggml.merges). Input must be valid UTF-8 (DS_ERR_ARG
 * otherwise, naming the byte offset). A tokenizer is read-only once built:
 * threads may encode and decode with one tokenizer at the same time.
 *
 * Decoding: a token's bytes are its byte-level string mapped back to bytes
 * (special tokens: their text as is). Streaming output holds back an
 * incomplete multi-byte UTF-8 sequence until the next token completes it.
 */
#ifndef DS_TOKENIZER_H
#define DS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_meta.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds_tokenizer;

/* Builds a tokenizer from tokenizer.* metadata (copied; m may be freed
 * after). Unknown model or pre-tokenizer names: DS_ERR_UNSUPPORTED; missing
 * or inconsistent keys: DS_ERR_FORMAT. Free with ds_tokenizer_free. */
ds_err ds_tokenizer_new(const struct ds_meta *m, struct ds_tokenizer **out);
void ds_tokenizer_free(struct ds_tokenizer *t);

int32_t ds_tokenizer_n_vocab(const struct ds_tokenizer *t);
int32_t ds_tokenizer_bos(const struct ds_tokenizer *t);   /* -1 if none */
int32_t ds_tokenizer_eos(const struct ds_tokenizer *t);   /* -1 if none */
bool ds_tokenizer_add_bos(const struct ds_tokenizer *t);  /* tokenizer.ggml.add_bos_token */
/* True for control tokens (BOS, EOS, <｜User｜>, ...): generation stops at
 * EOS; callers may also stop at any end-of-generation control token. */
bool ds_tokenizer_is_control(const struct ds_tokenizer *t, int32_t id);

/* Id of the token whose text is exactly s (e.g. "<｜Assistant｜>"), or -1. */
int32_t ds_tokenizer_find(const struct ds_tokenizer *t, const char *s, size_t len);

/* Encodes text[0..len). With add_bos, BOS is prepended when the tokenizer has
 * one. *ids is malloc'd (free with free()), *n its length. */
ds_err ds_tokenizer_encode(const struct ds_tokenizer *t, const char *text, size_t len,
                           bool add_bos, bool parse_special, int32_t **ids, size_t *n);

/* The bytes token id stands for (borrowed, valid for the tokenizer's life).
 * DS_ERR_ARG for an id out of range. */
ds_err ds_tokenizer_piece(const struct ds_tokenizer *t, int32_t id, const char **bytes,
                          size_t *len);

/* Streaming decoder: push tokens, get back only complete UTF-8. */
struct ds_detok {
    char pending[8];
    size_t n_pending;
};
void ds_detok_init(struct ds_detok *d);
/* Appends the decodable bytes of id (plus any completed pending bytes) to
 * out (cap >= len of the piece + 8 suffices); returns the number of bytes
 * written, or -1 for an invalid id or too small a cap (nothing consumed).
 * Only a trailing multi-byte sequence that is valid so far is held back;
 * bytes that can never be valid UTF-8 are passed through as they are, like
 * ds_tokenizer_decode does. */
long ds_detok_push(struct ds_detok *d, const struct ds_tokenizer *t, int32_t id, char *out,
                   size_t cap);
/* Whatever is still pending at the end (an incomplete sequence is emitted as
 * U+FFFD per byte; cap >= 9 always suffices). Returns bytes written. */
size_t ds_detok_flush(struct ds_detok *d, char *out, size_t cap);

/* Decodes a whole sequence to a malloc'd NUL-terminated string. */
ds_err ds_tokenizer_decode(const struct ds_tokenizer *t, const int32_t *ids, size_t n,
                           char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
