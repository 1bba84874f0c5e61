/*
 * bpe_train.c - byte-level BPE training (see ds_bpe.h for the rules).
 *
 * The distinct pre-tokenized pieces ("words") are kept as arrays of token ids
 * with their frequency; pair counts live in an open-addressing table keyed by
 * (left id << 32 | right id). Each step scans the table for the best pair,
 * then rewrites the words that hold it, subtracting their old pairs and adding
 * the new ones, so the counts stay exact. Words only shrink, in place.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_bpe.h"
#include "ds_gguf.h"
#include "ds_io.h"
#include "ds_tokenizer.h"
#include "error_impl.h"
#include "pretok_impl.h"
#include "tokenizer_impl.h"
#include "ds_banned.h"

#define N_SPECIAL 3
#define FIRST_BYTE N_SPECIAL
#define FIRST_MERGE (FIRST_BYTE + 256)
#define EMPTY UINT64_MAX

void ds_bpe_opts_init(struct ds_bpe_opts *o)
{
    o->vocab_size = 1024;
    o->pre = "deepseek-llm";
    o->min_frequency = 2;
    o->add_bos = true;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    return tok_mix64(tok_fnv1a(p, n));
}

/* ---- the training state ------------------------------------------------- */

struct word {
    const char *s;  /* into the text */
    uint32_t len;   /* bytes of s */
    uint32_t n;     /* symbols left */
    size_t off;     /* into sym */
    uint64_t count;
};

struct pair {
    uint64_t key;
    int64_t count;
};

struct trainer {
    struct word *w;
    size_t n_w, cap_w;
    uint32_t *w_tab;       /* piece hash: word index + 1, 0 when free */
    size_t w_mask;
    uint64_t n_pieces;
    int32_t *sym;
    struct pair *p_tab;
    size_t p_mask, p_used;
    char *text;            /* token texts, concatenated */
    size_t text_len, text_cap;
    size_t *t_off;         /* n_tok + 1 offsets */
    int32_t *t_type;
    size_t n_tok, cap_tok;
    int32_t *t_tab;        /* token text hash: id, -1 when free */
    size_t t_mask;
    char **merges;
    size_t n_merges, cap_merges;
};

static ds_err word_grow_table(struct trainer *tr)
{
    size_t cap = tr->w_tab ? 2 * (tr->w_mask + 1) : 1024;
    uint32_t *nt = ds_calloc(cap, sizeof(*nt));
    if (!nt)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < tr->n_w; i++) {
        size_t h = hash_bytes(tr->w[i].s, tr->w[i].len) & (cap - 1);
        while (nt[h])
            h = (h + 1) & (cap - 1);
        nt[h] = (uint32_t)i + 1;
    }
    free(tr->w_tab);
    tr->w_tab = nt;
    tr->w_mask = cap - 1;
    return DS_OK;
}

static ds_err on_piece(void *ctx, const char *s, size_t len)
{
    struct trainer *tr = ctx;
    size_t h;

    if (len == 0)
        return DS_OK;
    DS_RETURN_IF(len > UINT32_MAX, DS_ERR_LIMIT, "a piece of %zu bytes is too long", len);
    tr->n_pieces++;
    if (!tr->w_tab || 2 * (tr->n_w + 1) > tr->w_mask + 1)
        DS_TRY(word_grow_table(tr));
    for (h = hash_bytes(s, len) & tr->w_mask; tr->w_tab[h]; h = (h + 1) & tr->w_mask) {
        struct word *w = &tr->w[tr->w_tab[h] - 1];
        if (w->len == len && !memcmp(w->s, s, len)) {
            w->count++;
            return DS_OK;
        }
    }
    DS_RETURN_IF(tr->n_w >= UINT32_MAX - 1, DS_ERR_LIMIT, "too many distinct pieces");
    if (tr->n_w == tr->cap_w)
        DS_TRY(ds_grow((void **)&tr->w, &tr->cap_w, tr->n_w + 1, sizeof(*tr->w)));
    tr->w[tr->n_w] = (struct word){s, (uint32_t)len, (uint32_t)len, 0, 1};
    tr->w_tab[h] = (uint32_t)++tr->n_w;
    return DS_OK;
}

static struct pair *pair_slot(struct trainer *tr, uint64_t key)
{
    size_t i = tok_mix64(key) & tr->p_mask;
    while (tr->p_tab[i].key != key && tr->p_tab[i].key != EMPTY)
        i = (i + 1) & tr->p_mask;
    return &tr->p_tab[i];
}

static ds_err pair_add(struct trainer *tr, int32_t a, int32_t b, int64_t d)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    struct pair *p;

    if (2 * (tr->p_used + 1) > tr->p_mask + 1) {
        size_t cap = tr->p_tab ? 2 * (tr->p_mask + 1) : 4096;
        struct pair *old = tr->p_tab;
        size_t old_n = old ? tr->p_mask + 1 : 0;
        tr->p_tab = ds_malloc(cap * sizeof(*tr->p_tab));
        if (!tr->p_tab) {
            tr->p_tab = old;
            return DS_ERR_NOMEM;
        }
        for (size_t i = 0; i < cap; i++)
            tr->p_tab[i] = (struct pair){EMPTY, 0};
        tr->p_mask = cap - 1;
        for (size_t i = 0; i < old_n; i++)
            if (old[i].key != EMPTY)
                *pair_slot(tr, old[i].key) = old[i];
        free(old);
    }
    p = pair_slot(tr, key);
    if (p->key == EMPTY) {
        p->key = key;
        p->count = 0;
        tr->p_used++;
    }
    p->count += d;
    return DS_OK;
}

static ds_err word_pairs(struct trainer *tr, const struct word *w, int64_t sign)
{
    const int32_t *s = tr->sym + w->off;
    for (uint32_t i = 0; i + 1 < w->n; i++)
        DS_TRY(pair_add(tr, s[i], s[i + 1], sign * (int64_t)w->count));
    return DS_OK;
}

static const char *tok_text(const struct trainer *tr, size_t id, size_t *len)
{
    *len = tr->t_off[id + 1] - tr->t_off[id];
    return tr->text + tr->t_off[id];
}

static int32_t tok_find(const struct trainer *tr, const char *s, size_t len, size_t *slot)
{
    size_t i = hash_bytes(s, len) & tr->t_mask;
    for (; tr->t_tab[i] >= 0; i = (i + 1) & tr->t_mask) {
        size_t l;
        const char *t = tok_text(tr, (size_t)tr->t_tab[i], &l);
        if (l == len && !memcmp(t, s, len))
            break;
    }
    *slot = i;
    return tr->t_tab[i];
}

/* Appends a token (its text must be new when indexed). */
static ds_err tok_add(struct trainer *tr, const char *s, size_t len, int32_t type, bool index)
{
    if (tr->n_tok + 2 > tr->cap_tok) {
        size_t cap = tr->cap_tok;
        DS_TRY(ds_grow((void **)&tr->t_off, &cap, tr->n_tok + 2, sizeof(*tr->t_off)));
        cap = tr->cap_tok;
        DS_TRY(ds_grow((void **)&tr->t_type, &cap, tr->n_tok + 2, sizeof(*tr->t_type)));
        tr->cap_tok = cap;
    }
    if (tr->text_len + len + 1 > tr->text_cap)
        DS_TRY(ds_grow((void **)&tr->text, &tr->text_cap, tr->text_len + len + 1, 1));
    memcpy(tr->text + tr->text_len, s, len);
    tr->text_len += len;
    tr->text[tr->text_len] = '\0'; // for the "[PAD<i>]" texts built in place
    tr->t_type[tr->n_tok] = type;
    tr->t_off[++tr->n_tok] = tr->text_len;
    if (index) {
        size_t slot;
        int32_t id = tok_find(tr, s, len, &slot);
        (void)id;
        tr->t_tab[slot] = (int32_t)(tr->n_tok - 1);
    }
    return DS_OK;
}

static ds_err add_merge(struct trainer *tr, int32_t a, int32_t b)
{
    size_t la, lb;
    const char *sa = tok_text(tr, (size_t)a, &la);
    const char *sb = tok_text(tr, (size_t)b, &lb);
    char *m;

    if (tr->n_merges == tr->cap_merges)
        DS_TRY(ds_grow((void **)&tr->merges, &tr->cap_merges, tr->n_merges + 1,
                       sizeof(*tr->merges)));
    m = ds_malloc(la + lb + 2);
    if (!m)
        return DS_ERR_NOMEM;
    memcpy(m, sa, la);
    m[la] = ' ';
    memcpy(m + la + 1, sb, lb);
    m[la + lb + 1] = '\0';
    tr->merges[tr->n_merges++] = m;
    return DS_OK;
}

/* Replaces every (a, b) in the words by c, keeping the pair counts exact. */
static ds_err apply_merge(struct trainer *tr, int32_t a, int32_t b, int32_t c)
{
    for (size_t i = 0; i < tr->n_w; i++) {
        struct word *w = &tr->w[i];
        int32_t *s = tr->sym + w->off;
        uint32_t j, k;
        for (j = 0; j + 1 < w->n; j++)
            if (s[j] == a && s[j + 1] == b)
                break;
        if (j + 1 >= w->n)
            continue;
        DS_TRY(word_pairs(tr, w, -1));
        for (j = k = 0; j < w->n; k++) {
            if (j + 1 < w->n && s[j] == a && s[j + 1] == b) {
                s[k] = c;
                j += 2;
            } else {
                s[k] = s[j++];
            }
        }
        w->n = k;
        DS_TRY(word_pairs(tr, w, +1));
    }
    return DS_OK;
}

/* The pair with the highest count, ties to the smaller (left, right) ids. */
static const struct pair *best_pair(const struct trainer *tr)
{
    const struct pair *best = NULL;
    for (size_t i = 0; tr->p_tab && i <= tr->p_mask; i++) {
        const struct pair *p = &tr->p_tab[i];
        if (p->key == EMPTY || p->count <= 0)
            continue;
        if (!best || p->count > best->count || (p->count == best->count && p->key < best->key))
            best = p;
    }
    return best;
}

static ds_err split_text(struct trainer *tr, const char *text, size_t len, const char *pre)
{
    struct ds_meta *m = ds_meta_new();
    struct ds_tokenizer *t = NULL;
    const char *toks[256];
    size_t lens[256];
    char chars[256][4];
    ds_err rc = DS_OK;

    if (!m)
        return DS_ERR_NOMEM;
    for (int b = 0; b < 256; b++) {
        lens[b] = tok_byte_char((unsigned char)b, chars[b]);
        toks[b] = chars[b];
    }
    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.model", "gpt2"));
    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.pre", pre));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", 256, toks, lens));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.merges", 0, NULL, NULL));
    DS_CHECK(ds_tokenizer_new(m, &t));
    DS_CHECK(tok_pieces(t, text, len, on_piece, tr));
out:
    ds_tokenizer_free(t);
    ds_meta_free(m);
    return rc;
}

static int cmp_char(const void *pa, const void *pb)
{
    const char *a = pa, *b = pb;
    return strcmp(a, b);
}

static ds_err init_tokens(struct trainer *tr, uint32_t vocab, int32_t byte_id[256])
{
    static const char *const specials[N_SPECIAL] = {DS_BPE_BOS, DS_BPE_EOS, DS_BPE_PAD};
    char chars[256][4] = {{0}};

    tr->t_mask = 16;
    while (tr->t_mask < 2 * (size_t)vocab)
        tr->t_mask *= 2;
    tr->t_tab = ds_malloc(tr->t_mask * sizeof(*tr->t_tab));
    tr->t_off = ds_malloc(sizeof(*tr->t_off));
    if (!tr->t_tab || !tr->t_off)
        return DS_ERR_NOMEM;
    memset(tr->t_tab, 0xff, tr->t_mask * sizeof(*tr->t_tab));
    tr->t_mask--;
    tr->t_off[0] = 0;
    tr->cap_tok = 1;
    for (int i = 0; i < N_SPECIAL; i++)
        DS_TRY(tok_add(tr, specials[i], strlen(specials[i]), TT_CONTROL, true));
    for (int b = 0; b < 256; b++)
        tok_byte_char((unsigned char)b, chars[b]);
    // UTF-8 byte order is code point order
    qsort(chars, 256, sizeof(chars[0]), cmp_char);
    for (int i = 0; i < 256; i++)
        DS_TRY(tok_add(tr, chars[i], strlen(chars[i]), TT_NORMAL, true));
    for (int b = 0; b < 256; b++) {
        char c[4] = {0};
        size_t slot;
        tok_byte_char((unsigned char)b, c);
        byte_id[b] = tok_find(tr, c, strlen(c), &slot);
    }
    return DS_OK;
}

static ds_err build_words(struct trainer *tr, const int32_t byte_id[256])
{
    size_t total = 0;
    for (size_t i = 0; i < tr->n_w; i++) {
        tr->w[i].off = total;
        total += tr->w[i].len;
    }
    tr->sym = ds_malloc((total ? total : 1) * sizeof(*tr->sym));
    if (!tr->sym)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < tr->n_w; i++) {
        struct word *w = &tr->w[i];
        for (uint32_t j = 0; j < w->len; j++)
            tr->sym[w->off + j] = byte_id[(unsigned char)w->s[j]];
        DS_TRY(word_pairs(tr, w, +1));
    }
    return DS_OK;
}

static ds_err learn(struct trainer *tr, const struct ds_bpe_opts *o)
{
    char *buf = NULL;
    size_t cap = 0;
    ds_err rc = DS_OK;

    while (tr->n_tok < o->vocab_size) {
        const struct pair *p = best_pair(tr);
        int32_t a, b, c;
        size_t la, lb, slot;
        const char *sa, *sb;

        if (!p || p->count < (int64_t)o->min_frequency)
            break;
        a = (int32_t)(p->key >> 32);
        b = (int32_t)(p->key & 0xffffffffu);
        sa = tok_text(tr, (size_t)a, &la);
        sb = tok_text(tr, (size_t)b, &lb);
        if (la + lb > cap)
            DS_CHECK(ds_grow((void **)&buf, &cap, la + lb, 1));
        memcpy(buf, sa, la);
        memcpy(buf + la, sb, lb);
        c = tok_find(tr, buf, la + lb, &slot);
        if (c < 0) {
            c = (int32_t)tr->n_tok;
            DS_CHECK(tok_add(tr, buf, la + lb, TT_NORMAL, true));
        }
        DS_CHECK(add_merge(tr, a, b));
        DS_CHECK(apply_merge(tr, a, b, c));
    }
out:
    free(buf);
    return rc;
}

static void trainer_release(struct trainer *tr)
{
    for (size_t i = 0; i < tr->n_merges; i++)
        free(tr->merges[i]);
    free(tr->merges);
    free(tr->t_tab);
    free(tr->t_type);
    free(tr->t_off);
    free(tr->text);
    free(tr->p_tab);
    free(tr->sym);
    free(tr->w_tab);
    free(tr->w);
}

static ds_err write_meta(const struct trainer *tr, const struct ds_bpe_opts *o, struct ds_meta *m)
{
    const char **toks = ds_malloc(tr->n_tok * sizeof(*toks));
    size_t *lens = ds_malloc(tr->n_tok * sizeof(*lens));
    ds_err rc = DS_OK;

    if (!toks || !lens) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < tr->n_tok; i++)
        toks[i] = tok_text(tr, i, &lens[i]);
    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.model", "gpt2"));
    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.pre", o->pre));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", tr->n_tok, toks, lens));
    DS_CHECK(ds_meta_set_arr(m, "tokenizer.ggml.token_type", DS_V_I32, tr->n_tok, tr->t_type));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.merges", tr->n_merges,
                                 (const char *const *)tr->merges, NULL));
    DS_CHECK(ds_meta_set_u32(m, "tokenizer.ggml.bos_token_id", 0));
    DS_CHECK(ds_meta_set_u32(m, "tokenizer.ggml.eos_token_id", 1));
    DS_CHECK(ds_meta_set_u32(m, "tokenizer.ggml.padding_token_id", 2));
    DS_CHECK(ds_meta_set_bool(m, "tokenizer.ggml.add_bos_token", o->add_bos));
    DS_CHECK(ds_meta_set_bool(m, "tokenizer.ggml.add_eos_token", false));
out:
    free(lens);
    free(toks);
    return rc;
}

ds_err ds_bpe_train(const char *text, size_t len, const struct ds_bpe_opts *o, struct ds_meta *m,
                    struct ds_bpe_stats *stats)
{
    struct trainer tr = {0};
    int32_t byte_id[256];
    uint32_t n_pad = 0;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!o || !m || (!text && len), DS_ERR_ARG, "text, options or metadata missing");
    DS_RETURN_IF(o->vocab_size < DS_BPE_MIN_VOCAB || o->vocab_size > DS_BPE_MAX_VOCAB,
                 DS_ERR_ARG, "vocabulary size %lu is out of range (%u to %u)",
                 (unsigned long)o->vocab_size, DS_BPE_MIN_VOCAB, DS_BPE_MAX_VOCAB);
    DS_RETURN_IF(!o->pre || !pretok_find(o->pre), DS_ERR_ARG,
                 "pre-tokenizer '%.60s' is not supported (deepseek-llm, deepseek-v3, "
                 "deepseek-coder)", o->pre ? o->pre : "");
    DS_RETURN_IF(o->min_frequency < 1, DS_ERR_ARG, "minimum pair frequency must be at least 1");

    DS_CHECK(split_text(&tr, text, len, o->pre));
    DS_CHECK(init_tokens(&tr, o->vocab_size, byte_id));
    DS_CHECK(build_words(&tr, byte_id));
    DS_CHECK(learn(&tr, o));
    while (tr.n_tok < o->vocab_size) {
        char pad[24];
        int k = snprintf(pad, sizeof(pad), "[PAD%zu]", tr.n_tok);
        DS_CHECK(tok_add(&tr, pad, (size_t)k, TT_UNUSED, false));
        n_pad++;
    }
    DS_CHECK(write_meta(&tr, o, m));
    if (stats) {
        *stats = (struct ds_bpe_stats){tr.n_pieces, tr.n_w, (uint32_t)tr.n_merges, n_pad, 0};
        for (size_t i = 0; i < tr.n_w; i++)
            stats->n_tokens += tr.w[i].count * tr.w[i].n;
    }
out:
    trainer_release(&tr);
    return rc;
}

ds_err ds_bpe_write_vocab(const struct ds_meta *m, const char *name, const char *path,
                          unsigned flags)
{
    struct ds_gguf g = {0};
    struct ds_writer *w = NULL;
    ds_err rc;

    DS_RETURN_IF(!m || !path, DS_ERR_ARG, "metadata or path missing");
    DS_RETURN_IF(ds_meta_find(m, "tokenizer.ggml.tokens") < 0, DS_ERR_NOT_FOUND,
                 "metadata has no tokenizer (tokenizer.ggml.tokens)");
    DS_CHECK(ds_gguf_init(&g));
    ds_meta_free(g.meta);
    g.meta = ds_meta_dup(m);
    DS_FAIL_IF(!g.meta, DS_ERR_NOMEM, "out of memory");
    for (size_t i = ds_meta_count(g.meta); i-- > 0;)
        if (strncmp(ds_meta_key(g.meta, i), "tokenizer.", 10))
            ds_meta_remove(g.meta, ds_meta_key(g.meta, i));
    DS_CHECK(ds_meta_set_str(g.meta, "general.architecture", "deepseek2"));
    DS_CHECK(ds_meta_set_str(g.meta, "general.name", name ? name : "dskit-bpe"));
    DS_CHECK(ds_gguf_layout(&g));
    DS_CHECK(ds_writer_open(&w, path, flags, 0, 1));
    DS_CHECK(ds_gguf_write_header(w, &g));
    DS_CHECK(ds_writer_commit(w));
out:
    ds_writer_free(w);
    ds_gguf_release(&g);
    return rc;
}
