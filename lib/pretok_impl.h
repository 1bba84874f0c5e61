/*
 * pretok_impl.h - the DeepSeek pre-tokenizers (internal to libds): the Split
 * regexes of each one, as they read in tokenizer.json after JSON decoding.
 * hf.c recognises a tokenizer.json by them; tokenizer.c runs them with PCRE2.
 *
 * Also the token type ids both files use.
 *
 * A pre-tokenizer is the regexes re[0..nre), each a Split with "Isolated"
 * behaviour (every match and every gap between matches is a piece; each
 * regex runs on each piece the previous ones left), then, when digits is
 * set, a Digits(individual_digits) stage: every \p{N} character is a piece
 * of its own. In tokenizer.json that last stage may also be written as the
 * Split digits_re, which gives the same tokens with these vocabularies.
 */
#ifndef DS_PRETOK_IMPL_H
#define DS_PRETOK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
enum {
    TT_NORMAL = 1,
    TT_UNKNOWN = 2,
    TT_CONTROL = 3,
    TT_USER = 4,
    TT_UNUSED = 5,
    TT_BYTE = 6
};

static const char *const pretok_re_v3[] = {
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"
     "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
};

#define PRETOK_RE_CJK "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"

static const char *const pretok_re_llm[] = {
    "[\\r\\n]",
    ("\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
     "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
     "\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
     "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
     "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
     "\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
     "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
     "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
     "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
     "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
     "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
     "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
     "\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"),
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    PRETOK_RE_CJK,
};

static const char *const pretok_re_coder[] = {
    "[\\r\\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    PRETOK_RE_CJK,
};

struct pretok_def {
    const char *name;      /* tokenizer.ggml.pre */
    const char *const *re; /* Split regexes, in order */
    size_t nre;
    bool digits;           /* a final Digits(individual_digits) stage ... */
    const char *digits_re; /* ... or, equivalently, this Split */
};

static const struct pretok_def pretok_defs[] = {
    {"deepseek-v3", pretok_re_v3, 3, false, NULL},
    {"deepseek-llm", pretok_re_llm, 5, true, "\\p{N}+"},
    {"deepseek-coder", pretok_re_coder, 4, true, "\\p{N}"},
};

#define PRETOK_COUNT (sizeof(pretok_defs) / sizeof(pretok_defs[0]))

/* The pre-tokenizer called name, or NULL. */
static inline const struct pretok_def *pretok_find(const char *name)
{
    for (size_t i = 0; i < PRETOK_COUNT; i++)
        if (!strcmp(pretok_defs[i].name, name))
            return &pretok_defs[i];
    return NULL;
}

#endif
