/*
 * tokenizer.c - byte-level BPE with the DeepSeek pre-tokenizers.
 *
 * Built once from tokenizer.* metadata, then read-only (encode keeps its
 * scratch per call, so threads may share a tokenizer):
 *   - token texts in one arena, with an open-addressing index text -> id;
 *   - each token's bytes (its byte-level text mapped back to bytes, or the
 *     text itself for control and user-defined tokens) in another arena;
 *   - merges as a hash from the pair of token ids to (rank, merged id), so
 *     BPE works on ids and never builds strings;
 *   - the control and user-defined tokens sorted by text, for a
 *     longest-match lookup by narrowing a sorted range byte by byte;
 *   - the pre-tokenizer's regexes compiled by PCRE2 (UTF, UCP, JIT).
 *
 * Encoding follows Hugging Face tokenizers: special tokens are cut out first
 * (leftmost, then longest); each Split regex runs on every piece the previous
 * ones left, each match and each gap becoming a piece; each final piece is
 * merged lowest rank first (leftmost among equal ranks) with a heap, and the
 * result is cached per call by the piece's text.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "ds_tokenizer.h"
#include "error_impl.h"
#include "pretok_impl.h"
#include "tokenizer_impl.h"
#include "ds_banned.h"

/* Largest vocabulary accepted (as hf.c). */
#define MAX_VOCAB ((uint64_t)1 << 22)
/* Longest text ds_tokenizer_encode() takes: BPE positions are int32. */
#define MAX_TEXT ((size_t)INT32_MAX)
/* Pieces up to this many bytes are cached during one encode call. */
#define CACHE_MAX_PIECE 256
#define MAX_STAGES 8


struct merge_slot {
    uint64_t key; /* left id << 32 | right id; EMPTY_KEY when free */
    int32_t rank;
    int32_t id;   /* the merged token */
};

#define EMPTY_KEY UINT64_MAX

struct special {
    const char *s; /* into the text arena */
    size_t len;
    int32_t id;
    bool control;  /* matched only with parse_special */
};

struct ds_tokenizer {
    int32_t n;
    int32_t bos, eos;
    bool add_bos;
    int32_t *type;       /* n token types */
    char *text;          /* token texts, each NUL-terminated */
    size_t *text_off;    /* n + 1 offsets into text */
    char *bytes;         /* decoded token bytes */
    size_t *bytes_off;   /* n + 1 offsets into bytes */
    int32_t *tok_tab;    /* text -> id, -1 when free */
    size_t tok_mask;
    struct merge_slot *mg_tab;
    size_t mg_mask;
    int32_t byte_id[256]; /* token of each byte's byte-level character, or -1 */
    struct special *sp;  /* sorted by text */
    size_t n_sp;
    bool sp_first[256];  /* some special token starts with this byte */
    pcre2_code *re[MAX_STAGES];
    size_t n_re;
};

/* ======================================================================== */
/* Helpers                                                                  */
/* ======================================================================== */

static uint64_t hash_bytes(const void *p, size_t n)
{
    uint64_t h = tok_fnv1a(p, n);
    return h ^ (h >> 29);
}

/* Smallest power of two >= 2 * n (and >= 16). */
static size_t table_size(size_t n)
{
    size_t c = 16;
    while (c < 2 * n)
        c *= 2;
    return c;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Offset of the first byte of s[0..n) that does not start a valid UTF-8
 * sequence, or n. */
static size_t utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(u + i, n - i);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

/* Decodes one valid UTF-8 character at s (length k from utf8_seq). */
static uint32_t utf8_cp(const unsigned char *s, size_t k)
{
    static const unsigned char lead_mask[5] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t cp = s[0] & lead_mask[k];
    for (size_t i = 1; i < k; i++)
        cp = cp << 6 | (s[i] & 0x3f);
    return cp;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
 * others for U+0100 onwards in byte order. u2b inverts it (-1: no byte). */
#define BYTE_CP_END 324

static void byte_tables(uint16_t b2u[256], int16_t u2b[BYTE_CP_END])
{
    int n = 0;
    for (int i = 0; i < BYTE_CP_END; i++)
        u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        b2u[b] = (uint16_t)(keep ? b : 256 + n++);
        u2b[b2u[b]] = (int16_t)b;
    }
}

size_t tok_byte_char(unsigned char b, char out[4])
{
    uint16_t b2u[256];
    int16_t u2b[BYTE_CP_END];
    byte_tables(b2u, u2b);
    return utf8_put(b2u[b], out);
}

/* ======================================================================== */
/* Lookups                                                                  */
/* ======================================================================== */

static size_t tok_len(const struct ds_tokenizer *t, int32_t id)
{
    return t->text_off[id + 1] - t->text_off[id] - 1;
}

static int32_t tok_lookup(const struct ds_tokenizer *t, const char *s, size_t len)
{
    size_t i = hash_bytes(s, len) & t->tok_mask;
    for (;;) {
        int32_t id = t->tok_tab[i];
        if (id < 0)
            return -1;
        if (tok_len(t, id) == len && !memcmp(t->text + t->text_off[id], s, len))
            return id;
        i = (i + 1) & t->tok_mask;
    }
}

/* Indexes token id; a later token with the same text takes the entry over. */
static void tok_insert(struct ds_tokenizer *t, int32_t id)
{
    const char *s = t->text + t->text_off[id];
    size_t len = tok_len(t, id), i = hash_bytes(s, len) & t->tok_mask;
    for (;;) {
        int32_t o = t->tok_tab[i];
        if (o < 0 || (tok_len(t, o) == len && !memcmp(t->text + t->text_off[o], s, len))) {
            t->tok_tab[i] = id;
            return;
        }
        i = (i + 1) & t->tok_mask;
    }
}

static const struct merge_slot *merge_find(const struct ds_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = tok_mix64(key) & t->mg_mask;
    for (;;) {
        const struct merge_slot *s = &t->mg_tab[i];
        if (s->key == key)
            return s;
        if (s->key == EMPTY_KEY)
            return NULL;
        i = (i + 1) & t->mg_mask;
    }
}

/* Adds a merge unless the pair is known already (the first rank stays). */
static void merge_insert(struct ds_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = tok_mix64(key) & t->mg_mask;
    for (;;) {
        struct merge_slot *s = &t->mg_tab[i];
        if (s->key == key)
            return;
        if (s->key == EMPTY_KEY) {
            s->key = key;
            s->rank = rank;
            s->id = id;
            return;
        }
        i = (i + 1) & t->mg_mask;
    }
}

static int cmp_special(const void *pa, const void *pb)
{
    const struct special *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* First index in [lo, hi) whose byte k is >= c (every entry there is longer
 * than k bytes). */
static size_t sp_lower(const struct special *sp, size_t lo, size_t hi, size_t k, unsigned c)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((unsigned char)sp[mid].s[k] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The longest special token that s[0..n) starts with (control tokens only
 * when control is set): its id, or -1. The entries sharing a prefix of k
 * bytes form a range of the sorted list, led by the one of length k. */
static int32_t special_match(const struct ds_tokenizer *t, const char *s, size_t n, bool control,
                             size_t *mlen)
{
    size_t lo = 0, hi = t->n_sp;
    int32_t best = -1;

    for (size_t k = 0;; k++) {
        while (lo < hi && t->sp[lo].len == k) {
            if (k > 0 && (control || !t->sp[lo].control)) {
                best = t->sp[lo].id;
                *mlen = k;
            }
            lo++;
        }
        if (lo >= hi || k >= n)
            break;
        unsigned c = (unsigned char)s[k];
        lo = sp_lower(t->sp, lo, hi, k, c);
        hi = sp_lower(t->sp, lo, hi, k, c + 1);
    }
    return best;
}

/* ======================================================================== */
/* Building                                                                 */
/* ======================================================================== */

/* Rewrites a Split regex of tokenizer.json for PCRE2: \s and \S also cover
 * U+0085 (Oniguruma's \s is Unicode White_Space, PCRE2's lacks NEL), and
 * "\s+$" gets a look-behind so that its failed attempts inside a long run of
 * spaces do not cost quadratic time (the leftmost match never follows a
 * space, so the matches are the same). Returns malloc'd text or NULL. */
static char *pcre_pattern(const char *src)
{
    static const char sp_in[] = "\\s\\x{85}", sp_out[] = "[\\s\\x{85}]",
                      nsp_out[] = "[^\\s\\x{85}]";
    size_t n = strlen(src), k = 0;
    bool in_class = false;
    char *out;

    if (!strcmp(src, "\\s+$"))
        return ds_strdup("(?<![\\s\\x{85}])[\\s\\x{85}]+$");
    out = ds_malloc(6 * n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        const char *rep = NULL;
        if (c == '\\' && i + 1 < n) {
            char e = src[i + 1];
            if (e == 's')
                rep = in_class ? sp_in : sp_out;
            else if (e == 'S' && !in_class)
                rep = nsp_out;
            if (rep) {
                size_t l = strlen(rep);
                memcpy(out + k, rep, l);
                k += l;
            } else {
                out[k++] = c;
                out[k++] = e;
            }
            i++;
            continue;
        }
        out[k++] = c;
        if (c == '[' && !in_class) {
            in_class = true;
            if (i + 1 < n && src[i + 1] == '^')
                out[k++] = src[++i];
            if (i + 1 < n && src[i + 1] == ']')
                out[k++] = src[++i];
        } else if (c == ']' && in_class) {
            in_class = false;
        }
    }
    out[k] = '\0';
    return out;
}

static ds_err compile_stage(struct ds_tokenizer *t, const char *src)
{
    int err = 0;
    PCRE2_SIZE at = 0;
    char *pat = pcre_pattern(src);
    pcre2_code *re;

    if (!pat)
        return DS_ERR_NOMEM;
    re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at,
                       NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return ds_set_error(DS_ERR_UNSUPPORTED, "pre-tokenizer regex '%.60s': %s at offset %zu",
                            src, (const char *)msg, (size_t)at);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // without JIT, the interpreter runs it
    assert(t->n_re < MAX_STAGES);
    t->re[t->n_re++] = re;
    return DS_OK;
}

/* Token bytes: the byte-level text mapped back, or the text itself for
 * control and user-defined tokens and for text that is not byte-level (as
 * Hugging Face's ByteLevel decoder does). Writes at most len bytes. */
static size_t token_bytes(const char *s, size_t len, int32_t type,
                          const int16_t u2b[BYTE_CP_END], char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0;

    if (type == TT_CONTROL || type == TT_USER)
        goto raw;
    for (size_t i = 0; i < len;) {
        size_t l = utf8_seq(u + i, len - i);
        uint32_t cp;
        if (!l)
            goto raw;
        cp = utf8_cp(u + i, l);
        if (cp >= BYTE_CP_END || u2b[cp] < 0)
            goto raw;
        out[k++] = (char)u2b[cp];
        i += l;
    }
    return k;
raw:
    memcpy(out, s, len);
    return len;
}

static ds_err load_vocab(struct ds_tokenizer *t, const struct ds_meta *m, long ti,
                         const int32_t *types, const int16_t u2b[BYTE_CP_END])
{
    size_t total = 0, k = 0, nsp = 0;

    for (int32_t i = 0; i < t->n; i++) {
        size_t len;
        (void)ds_meta_arr_str(m, (size_t)ti, (uint64_t)i, &len);
        total += len + 1; // metadata already holds them, so this cannot overflow
    }
    t->type = ds_malloc((size_t)t->n * sizeof(*t->type));
    t->text = ds_malloc(total);
    t->text_off = ds_malloc(((size_t)t->n + 1) * sizeof(*t->text_off));
    t->bytes = ds_malloc(total);
    t->bytes_off = ds_malloc(((size_t)t->n + 1) * sizeof(*t->bytes_off));
    t->tok_mask = table_size((size_t)t->n) - 1;
    t->tok_tab = ds_malloc((t->tok_mask + 1) * sizeof(*t->tok_tab));
    if (!t->type || !t->text || !t->text_off || !t->bytes || !t->bytes_off || !t->tok_tab)
        return DS_ERR_NOMEM;
    memset(t->tok_tab, 0xff, (t->tok_mask + 1) * sizeof(*t->tok_tab));

    total = 0;
    t->text_off[0] = 0;
    for (int32_t i = 0; i < t->n; i++) {
        size_t len;
        const char *s = ds_meta_arr_str(m, (size_t)ti, (uint64_t)i, &len);
        t->type[i] = types ? types[i] : TT_NORMAL;
        memcpy(t->text + total, s, len + 1);
        total += len + 1;
        t->text_off[i + 1] = total;
        t->bytes_off[i] = k;
        k += token_bytes(s, len, t->type[i], u2b, t->bytes + k);
        tok_insert(t, i);
        if ((t->type[i] == TT_CONTROL || t->type[i] == TT_USER) && len > 0 &&
            utf8_check(s, len) == len)
            nsp++;
    }
    t->bytes_off[t->n] = k;

    if (nsp) {
        t->sp = ds_malloc(nsp * sizeof(*t->sp));
        if (!t->sp)
            return DS_ERR_NOMEM;
        for (int32_t i = 0; i < t->n; i++) {
            const char *s = t->text + t->text_off[i];
            size_t len = tok_len(t, i);
            if ((t->type[i] != TT_CONTROL && t->type[i] != TT_USER) || len == 0 ||
                utf8_check(s, len) != len)
                continue;
            t->sp[t->n_sp++] = (struct special){s, len, i, t->type[i] == TT_CONTROL};
            t->sp_first[(unsigned char)s[0]] = true;
        }
        qsort(t->sp, t->n_sp, sizeof(*t->sp), cmp_special);
    }
    return DS_OK;
}

static ds_err load_merges(struct ds_tokenizer *t, const struct ds_meta *m, long mi, uint64_t nm)
{
    char *buf = NULL;
    size_t cap = 0;
    ds_err rc = DS_OK;

    DS_RETURN_IF(nm > (uint64_t)INT32_MAX, DS_ERR_LIMIT, "metadata: %llu merges is too many",
                 (unsigned long long)nm);
    t->mg_mask = table_size((size_t)nm) - 1;
    t->mg_tab = ds_malloc((t->mg_mask + 1) * sizeof(*t->mg_tab));
    if (!t->mg_tab)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i <= t->mg_mask; i++)
        t->mg_tab[i].key = EMPTY_KEY;

    for (uint64_t r = 0; r < nm; r++) {
        size_t len;
        const char *s = ds_meta_arr_str(m, (size_t)mi, r, &len);
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        int32_t a, b, c;

        DS_FAIL_IF(!sp || sp + 1 == s + len, DS_ERR_FORMAT,
                   "metadata: tokenizer.ggml.merges[%llu] ('%.60s') is not two tokens",
                   (unsigned long long)r, s);
        a = tok_lookup(t, s, (size_t)(sp - s));
        b = tok_lookup(t, sp + 1, len - (size_t)(sp - s) - 1);
        if (a < 0 || b < 0)
            continue; // a merge of unknown tokens can never apply
        if (len > cap) {
            char *nb = ds_realloc(buf, cap = 2 * len);
            if (!nb) {
                rc = DS_ERR_NOMEM;
                goto out;
            }
            buf = nb;
        }
        memcpy(buf, s, (size_t)(sp - s));
        memcpy(buf + (sp - s), sp + 1, len - (size_t)(sp - s) - 1);
        c = tok_lookup(t, buf, len - 1);
        if (c >= 0)
            merge_insert(t, a, b, (int32_t)r, c);
    }
out:
    free(buf);
    return rc;
}

static ds_err meta_token(const struct ds_meta *m, const char *key, int32_t n, int32_t *out)
{
    int64_t v;
    *out = -1;
    if (ds_meta_find(m, key) < 0)
        return DS_OK;
    DS_RETURN_IF(!ds_meta_get_int(m, key, &v) || v < 0 || v >= n, DS_ERR_FORMAT,
                 "metadata: %s is not a token id below %d", key, (int)n);
    *out = (int32_t)v;
    return DS_OK;
}

ds_err ds_tokenizer_new(const struct ds_meta *m, struct ds_tokenizer **out)
{
    struct ds_tokenizer *t = NULL;
    const struct pretok_def *d;
    const char *model, *pre;
    const int32_t *types = NULL;
    enum ds_vtype el;
    uint64_t n, nm;
    long ti, yi, mi;
    uint16_t b2u[256];
    int16_t u2b[BYTE_CP_END];
    ds_err rc = DS_OK;

    DS_RETURN_IF(!m || !out, DS_ERR_ARG, "metadata or output missing");
    *out = NULL;
    model = ds_meta_get_str(m, "tokenizer.ggml.model", NULL);
    DS_RETURN_IF(!model, DS_ERR_FORMAT, "metadata has no tokenizer (tokenizer.ggml.model)");
    DS_RETURN_IF(strcmp(model, "gpt2"), DS_ERR_UNSUPPORTED,
                 "tokenizer model '%.60s' is not supported (gpt2 byte-level BPE only)", model);
    pre = ds_meta_get_str(m, "tokenizer.ggml.pre", NULL);
    DS_RETURN_IF(!pre, DS_ERR_FORMAT, "metadata has no pre-tokenizer (tokenizer.ggml.pre)");
    d = pretok_find(pre);
    DS_RETURN_IF(!d, DS_ERR_UNSUPPORTED,
                 "pre-tokenizer '%.60s' is not supported (deepseek-v3, deepseek-llm, "
                 "deepseek-coder)",
                 pre);
    ti = ds_meta_find(m, "tokenizer.ggml.tokens");
    DS_RETURN_IF(ti < 0 || !ds_meta_arr(m, (size_t)ti, &el, &n) || el != DS_V_STR || n == 0,
                 DS_ERR_FORMAT, "metadata: tokenizer.ggml.tokens is missing or not a list of "
                 "strings");
    DS_RETURN_IF(n > MAX_VOCAB, DS_ERR_LIMIT, "metadata: %llu tokens is too many (at most %llu)",
                 (unsigned long long)n, (unsigned long long)MAX_VOCAB);
    if ((yi = ds_meta_find(m, "tokenizer.ggml.token_type")) >= 0) {
        uint64_t nt;
        DS_RETURN_IF(!ds_meta_arr(m, (size_t)yi, &el, &nt) || el != DS_V_I32 || nt != n,
                     DS_ERR_FORMAT, "metadata: tokenizer.ggml.token_type is not %llu int32",
                     (unsigned long long)n);
        types = ds_meta_arr_data(m, (size_t)yi);
    }
    mi = ds_meta_find(m, "tokenizer.ggml.merges");
    DS_RETURN_IF(mi < 0 || !ds_meta_arr(m, (size_t)mi, &el, &nm) || el != DS_V_STR,
                 DS_ERR_FORMAT, "metadata: tokenizer.ggml.merges is missing or not a list of "
                 "strings");

    t = ds_calloc(1, sizeof(*t));
    if (!t)
        return DS_ERR_NOMEM;
    t->n = (int32_t)n;
    DS_CHECK(meta_token(m, "tokenizer.ggml.bos_token_id", t->n, &t->bos));
    DS_CHECK(meta_token(m, "tokenizer.ggml.eos_token_id", t->n, &t->eos));
    if (!ds_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &t->add_bos))
        t->add_bos = false;

    byte_tables(b2u, u2b);
    DS_CHECK(load_vocab(t, m, ti, types, u2b));
    for (int b = 0; b < 256; b++) {
        char u[4];
        t->byte_id[b] = tok_lookup(t, u, utf8_put(b2u[b], u));
    }
    DS_CHECK(load_merges(t, m, mi, nm));
    for (size_t i = 0; i < d->nre; i++)
        DS_CHECK(compile_stage(t, d->re[i]));
    if (d->digits)
        DS_CHECK(compile_stage(t, "\\p{N}"));
    *out = t;
    t = NULL;
out:
    ds_tokenizer_free(t);
    return rc;
}

void ds_tokenizer_free(struct ds_tokenizer *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_re; i++)
        pcre2_code_free(t->re[i]);
    free(t->sp);
    free(t->mg_tab);
    free(t->tok_tab);
    free(t->bytes_off);
    free(t->bytes);
    free(t->text_off);
    free(t->text);
    free(t->type);
    free(t);
}

/* ======================================================================== */
/* Queries                                                                  */
/* ======================================================================== */

int32_t ds_tokenizer_n_vocab(const struct ds_tokenizer *t)
{
    return t ? t->n : 0;
}

int32_t ds_tokenizer_bos(const struct ds_tokenizer *t)
{
    return t ? t->bos : -1;
}

int32_t ds_tokenizer_eos(const struct ds_tokenizer *t)
{
    return t ? t->eos : -1;
}

bool ds_tokenizer_add_bos(const struct ds_tokenizer *t)
{
    return t && t->add_bos;
}

bool ds_tokenizer_is_control(const struct ds_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n && t->type[id] == TT_CONTROL;
}

int32_t ds_tokenizer_find(const struct ds_tokenizer *t, const char *s, size_t len)
{
    if (!t || (!s && len))
        return -1;
    return tok_lookup(t, s ? s : "", len);
}

ds_err ds_tokenizer_piece(const struct ds_tokenizer *t, int32_t id, const char **bytes,
                          size_t *len)
{
    DS_RETURN_IF(!t || !bytes || !len, DS_ERR_ARG, "tokenizer or outputs missing");
    DS_RETURN_IF(id < 0 || id >= t->n, DS_ERR_ARG, "token id %ld is out of range (vocabulary %ld)",
                 (long)id, (long)t->n);
    *bytes = t->bytes + t->bytes_off[id];
    *len = t->bytes_off[id + 1] - t->bytes_off[id];
    return DS_OK;
}

/* ======================================================================== */
/* Encoding                                                                 */
/* ======================================================================== */

struct sym {
    int32_t id;   /* -1 once merged into its left neighbour */
    int32_t prev, next;
};

struct hent {
    int32_t rank, pos, id;
};

struct cslot {
    const char *key; /* into the text being encoded; NULL when free */
    size_t len;
    size_t off, cnt; /* the piece's ids in enc.ids */
};

struct enc {
    const struct ds_tokenizer *t;
    pcre2_match_data *md;
    int32_t *ids;
    size_t n, cap;
    struct sym *sym;
    struct hent *heap;
    size_t heap_n, sym_cap;
    struct cslot *cache;
    size_t cache_mask, cache_n;
    tok_piece_fn piece_fn; /* set: pieces go here instead of to BPE */
    void *piece_ctx;
};

static ds_err push_id(struct enc *e, int32_t id)
{
    if (e->n == e->cap)
        DS_TRY(ds_grow((void **)&e->ids, &e->cap, e->n + 1, sizeof(*e->ids)));
    e->ids[e->n++] = id;
    return DS_OK;
}

static bool hless(const struct hent *a, const struct hent *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct enc *e, struct hent h)
{
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&h, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = h;
}

static struct hent heap_pop(struct enc *e)
{
    struct hent top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hless(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!hless(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_pair(struct enc *e, int32_t left, int32_t right)
{
    const struct merge_slot *m = merge_find(e->t, e->sym[left].id, e->sym[right].id);
    if (m)
        heap_push(e, (struct hent){m->rank, left, m->id});
}

/* BPE over the bytes of one piece; appends the ids. Each merge pushes at
 * most two pairs, so the heap never holds more than 3 entries per byte. */
static ds_err bpe(struct enc *e, const char *p, size_t n)
{
    const struct ds_tokenizer *t = e->t;
    int32_t k = 0;

    if (n > e->sym_cap) {
        size_t cap = n < 64 ? 64 : n;
        free(e->sym);
        free(e->heap);
        e->sym_cap = 0;
        e->sym = ds_malloc(cap * sizeof(*e->sym));
        e->heap = ds_malloc(3 * cap * sizeof(*e->heap));
        if (!e->sym || !e->heap)
            return DS_ERR_NOMEM;
        e->sym_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(unsigned char)p[i]];
        if (id < 0)
            continue; // as tokenizers does without an unknown token
        e->sym[k] = (struct sym){id, k - 1, k + 1};
        k++;
    }
    if (k == 0)
        return DS_OK;
    e->sym[k - 1].next = -1;
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < k; i++)
        try_pair(e, i, i + 1);
    while (e->heap_n > 0) {
        struct hent h = heap_pop(e);
        struct sym *s = &e->sym[h.pos], *r;
        const struct merge_slot *m;
        if (s->id < 0 || s->next < 0)
            continue;
        r = &e->sym[s->next];
        m = merge_find(t, s->id, r->id);
        if (!m || m->id != h.id)
            continue; // stale: a neighbour changed since the pair was queued
        s->id = h.id;
        s->next = r->next;
        if (r->next >= 0)
            e->sym[r->next].prev = h.pos;
        r->id = -1;
        if (s->prev >= 0)
            try_pair(e, s->prev, h.pos);
        if (s->next >= 0)
            try_pair(e, h.pos, s->next);
    }
    for (int32_t i = 0; i >= 0; i = e->sym[i].next)
        DS_TRY(push_id(e, e->sym[i].id));
    return DS_OK;
}

/* BPE of one piece through the per-call cache. */
static ds_err emit_piece(struct enc *e, const char *p, size_t n)
{
    size_t h, i, start = e->n;
    struct cslot *s;

    if (e->piece_fn)
        return e->piece_fn(e->piece_ctx, p, n);
    if (n > CACHE_MAX_PIECE)
        return bpe(e, p, n);
    if (!e->cache || 2 * (e->cache_n + 1) > e->cache_mask + 1) {
        size_t cap = e->cache ? 2 * (e->cache_mask + 1) : 1024;
        struct cslot *nc = ds_calloc(cap, sizeof(*nc));
        if (!nc)
            return DS_ERR_NOMEM;
        for (size_t j = 0; e->cache && j <= e->cache_mask; j++) {
            struct cslot *o = &e->cache[j];
            if (!o->key)
                continue;
            i = hash_bytes(o->key, o->len) & (cap - 1);
            while (nc[i].key)
                i = (i + 1) & (cap - 1);
            nc[i] = *o;
        }
        free(e->cache);
        e->cache = nc;
        e->cache_mask = cap - 1;
    }
    h = hash_bytes(p, n);
    for (i = h & e->cache_mask; e->cache[i].key; i = (i + 1) & e->cache_mask) {
        s = &e->cache[i];
        if (s->len == n && !memcmp(s->key, p, n)) {
            size_t off = s->off, cnt = s->cnt;
            if (cnt == 0) // a piece of bytes without tokens (ids may still be NULL)
                return DS_OK;
            if (e->n + cnt > e->cap)
                DS_TRY(ds_grow((void **)&e->ids, &e->cap, e->n + cnt, sizeof(*e->ids)));
            memcpy(e->ids + e->n, e->ids + off, cnt * sizeof(*e->ids));
            e->n += cnt;
            return DS_OK;
        }
    }
    DS_TRY(bpe(e, p, n));
    e->cache[i] = (struct cslot){p, n, start, e->n - start};
    e->cache_n++;
    return DS_OK;
}

/* Regex stage k over the piece s[0..n): every match and every gap is a piece
 * for stage k + 1; after the last stage, pieces go to BPE. */
static ds_err split(struct enc *e, size_t k, const char *s, size_t n)
{
    const struct ds_tokenizer *t = e->t;
    size_t prev = 0, off = 0;

    if (k == t->n_re)
        return emit_piece(e, s, n);
    while (off < n) {
        int rc = pcre2_match(t->re[k], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(t->re[k], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            return ds_set_error(DS_ERR_LIMIT, "pre-tokenizer regex failed on a %zu-byte piece: %s",
                                n, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { // an empty match cuts nothing: step over one character
            size_t l = ms < n ? utf8_seq((const unsigned char *)s + ms, n - ms) : 1;
            off = ms + (l ? l : 1);
            continue;
        }
        if (ms > prev)
            DS_TRY(split(e, k + 1, s + prev, ms - prev));
        DS_TRY(split(e, k + 1, s + ms, me - ms));
        prev = off = me;
    }
    if (prev < n)
        DS_TRY(split(e, k + 1, s + prev, n - prev));
    return DS_OK;
}

static ds_err encode_text(struct enc *e, const char *text, size_t len, bool parse_special)
{
    const struct ds_tokenizer *t = e->t;
    size_t start = 0, pos = 0;

    while (pos < len) {
        size_t mlen = 0;
        int32_t id;
        if (!t->sp_first[(unsigned char)text[pos]] ||
            (id = special_match(t, text + pos, len - pos, parse_special, &mlen)) < 0) {
            pos++;
            continue;
        }
        if (pos > start)
            DS_TRY(split(e, 0, text + start, pos - start));
        DS_TRY(push_id(e, id));
        pos += mlen;
        start = pos;
    }
    if (len > start)
        DS_TRY(split(e, 0, text + start, len - start));
    return DS_OK;
}

ds_err ds_tokenizer_encode(const struct ds_tokenizer *t, const char *text, size_t len,
                           bool add_bos, bool parse_special, int32_t **ids, size_t *n)
{
    struct enc e = {0};
    size_t bad;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!t || !ids || !n || (!text && len), DS_ERR_ARG,
                 "tokenizer, text or outputs missing");
    *ids = NULL;
    *n = 0;
    DS_RETURN_IF(len > MAX_TEXT, DS_ERR_LIMIT, "text of %zu bytes is too long to encode", len);
    bad = utf8_check(text, len);
    DS_RETURN_IF(bad < len, DS_ERR_ARG, "invalid UTF-8 at byte %zu", bad);
    e.t = t;
    e.md = pcre2_match_data_create(1, NULL);
    DS_FAIL_IF(!e.md, DS_ERR_NOMEM, "out of memory for regex match data");
    if (add_bos && t->bos >= 0)
        DS_CHECK(push_id(&e, t->bos));
    if (len)
        DS_CHECK(encode_text(&e, text, len, parse_special));
    if (!e.ids) // an empty result is still an allocation the caller frees
        DS_FAIL_IF(!(e.ids = malloc(sizeof(*e.ids))), DS_ERR_NOMEM, "out of memory");
    *ids = e.ids;
    *n = e.n;
    e.ids = NULL;
out:
    free(e.ids);
    free(e.cache);
    free(e.heap);
    free(e.sym);
    pcre2_match_data_free(e.md);
    return rc;
}

ds_err tok_pieces(const struct ds_tokenizer *t, const char *text, size_t len, tok_piece_fn fn,
                  void *ctx)
{
    struct enc e = {0};
    size_t bad;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!t || !fn || (!text && len), DS_ERR_ARG, "tokenizer, text or callback missing");
    DS_RETURN_IF(len > MAX_TEXT, DS_ERR_LIMIT, "text of %zu bytes is too long to split", len);
    bad = utf8_check(text, len);
    DS_RETURN_IF(bad < len, DS_ERR_ARG, "invalid UTF-8 at byte %zu", bad);
    e.t = t;
    e.piece_fn = fn;
    e.piece_ctx = ctx;
    e.md = pcre2_match_data_create(1, NULL);
    DS_FAIL_IF(!e.md, DS_ERR_NOMEM, "out of memory for regex match data");
    if (len)
        DS_CHECK(encode_text(&e, text, len, false));
out:
    free(e.ids);
    pcre2_match_data_free(e.md);
    return rc;
}

/* ======================================================================== */
/* Decoding                                                                 */
/* ======================================================================== */

ds_err ds_tokenizer_decode(const struct ds_tokenizer *t, const int32_t *ids, size_t n,
                           char **out, size_t *len)
{
    size_t total = 0, k = 0;
    char *buf;

    DS_RETURN_IF(!t || !out || (!ids && n), DS_ERR_ARG, "tokenizer, ids or output missing");
    *out = NULL;
    if (len)
        *len = 0;
    for (size_t i = 0; i < n; i++) {
        DS_RETURN_IF(ids[i] < 0 || ids[i] >= t->n, DS_ERR_ARG,
                     "token id %ld at position %zu is out of range (vocabulary %ld)",
                     (long)ids[i], i, (long)t->n);
        total += t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
        DS_RETURN_IF(total > SIZE_MAX / 2, DS_ERR_LIMIT, "decoded text is too long");
    }
    buf = ds_malloc(total + 1);
    if (!buf)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t l = t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
        memcpy(buf + k, t->bytes + t->bytes_off[ids[i]], l);
        k += l;
    }
    buf[k] = '\0';
    *out = buf;
    if (len)
        *len = k;
    return DS_OK;
}

void ds_detok_init(struct ds_detok *d)
{
    if (d)
        d->n_pending = 0;
}

/* Length of the tail of s[0..n) to hold back: a multi-byte sequence that is
 * valid so far but incomplete (at most 3 bytes), or 0. */
static size_t incomplete_tail(const unsigned char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const unsigned char *p = s + n - back;
        if ((*p & 0xc0) == 0x80)
            continue; // a continuation byte: look further back
        size_t need = *p >= 0xc2 && *p <= 0xdf ? 2 : *p >= 0xe0 && *p <= 0xef ? 3
                      : *p >= 0xf0 && *p <= 0xf4 ? 4 : 0;
        if (need <= back)
            return 0; // complete, or not a lead byte
        unsigned char lo = *p == 0xe0 ? 0xa0 : *p == 0xf0 ? 0x90 : 0x80;
        unsigned char hi = *p == 0xed ? 0x9f : *p == 0xf4 ? 0x8f : 0xbf;
        if (back >= 2 && (p[1] < lo || p[1] > hi))
            return 0;
        return back;
    }
    return 0;
}

long ds_detok_push(struct ds_detok *d, const struct ds_tokenizer *t, int32_t id, char *out,
                   size_t cap)
{
    unsigned char buf[3];
    const char *p;
    size_t len, np, total, tail, keep;

    if (!d || !t || id < 0 || id >= t->n || d->n_pending > 3)
        return -1;
    p = t->bytes + t->bytes_off[id];
    len = t->bytes_off[id + 1] - t->bytes_off[id];
    np = d->n_pending;
    total = np + len;
    // the tail to hold back lies in the last 3 bytes of pending + piece
    keep = total < 3 ? total : 3;
    for (size_t i = 0; i < keep; i++) {
        size_t at = total - keep + i;
        buf[i] = (unsigned char)(at < np ? d->pending[at] : p[at - np]);
    }
    tail = incomplete_tail(buf, keep);
    if (total - tail > cap || (!out && total > tail))
        return -1;
    if (total > tail) {
        size_t from_pending = np < total - tail ? np : total - tail;
        memcpy(out, d->pending, from_pending);
        memcpy(out + from_pending, p, total - tail - from_pending);
    }
    memcpy(d->pending, buf + keep - tail, tail);
    d->n_pending = tail;
    return (long)(total - tail);
}

size_t ds_detok_flush(struct ds_detok *d, char *out, size_t cap)
{
    size_t k = 0;
    if (!d)
        return 0;
    for (size_t i = 0; i < d->n_pending && i < 8 && out && k + 3 <= cap; i++)
        k += utf8_put(0xfffd, out + k);
    d->n_pending = 0;
    return k;
}
