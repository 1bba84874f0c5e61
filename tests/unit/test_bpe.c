/*
 * test_bpe.c - BPE tokenizer training: the vocabulary layout, the tie rule,
 * round trips through ds_tokenizer, agreement with a naive reference encoder
 * (GPT-2's merge loop over strings), the vocab-only GGUF and tokenizer.json
 * round trips, determinism and bad arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds_bpe.h"
#include "ds_error.h"
#include "ds_gguf.h"
#include "ds_hf.h"
#include "ds_io.h"
#include "ds_meta.h"
#include "ds_tokenizer.h"
#include "tokenizer_impl.h"
#include "test.h"

static char scratch[64];
static char *corpus;
static size_t corpus_len;

static const char mixed[] =
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "  It is the east, and Juliet is the sun!  123456 7\t\ttabs\r\n"
    "caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
    "\xf0\x9f\x98\x80 emoji, <tags> & 'quotes' \"double\"   \n";

/* ---- a naive reference encoder ------------------------------------------- */

/* GPT-2's bytes_to_unicode, written out independently of the library. */
static void ref_byte_char(unsigned b, char out[3])
{
    unsigned cp = b, n = 0;
    if (!((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)) {
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae))
                n++;
        cp = 256 + n;
    }
    memset(out, 0, 3);
    if (cp < 0x80) {
        out[0] = (char)cp;
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
    }
}

struct ref {
    const struct ds_meta *m;
    long ti, mi;
    uint64_t n_tok, n_merges;
    int32_t *out;
    size_t n_out;
    int bad;
};

static int32_t ref_token(const struct ref *r, const char *s)
{
    for (uint64_t i = 0; i < r->n_tok; i++)
        if (!strcmp(ds_meta_arr_str(r->m, (size_t)r->ti, i, NULL), s))
            return (int32_t)i;
    return -1;
}

/* Rank of the merge "a b", or -1. */
static long ref_rank(const struct ref *r, const char *a, const char *b)
{
    size_t la = strlen(a);
    for (uint64_t i = 0; i < r->n_merges; i++) {
        const char *m = ds_meta_arr_str(r->m, (size_t)r->mi, i, NULL);
        if (!strncmp(m, a, la) && m[la] == ' ' && !strcmp(m + la + 1, b))
            return (long)i;
    }
    return -1;
}

/* GPT-2's bpe(): merge the lowest-ranked pair everywhere, left to right, until
 * no pair has a rank. */
static ds_err ref_piece(void *ctx, const char *p, size_t n)
{
    struct ref *r = ctx;
    char (*sym)[256] = calloc(n, sizeof(*sym));
    size_t k = n;

    for (size_t i = 0; i < n; i++)
        ref_byte_char((unsigned char)p[i], sym[i]);
    for (;;) {
        long best = -1;
        for (size_t i = 0; i + 1 < k; i++) {
            long rk = ref_rank(r, sym[i], sym[i + 1]);
            if (rk >= 0 && (best < 0 || rk < best))
                best = rk;
        }
        if (best < 0)
            break;
        size_t j = 0, o = 0;
        char a[128], b[128];
        const char *m = ds_meta_arr_str(r->m, (size_t)r->mi, (uint64_t)best, NULL);
        const char *sp = strchr(m, ' ');
        snprintf(a, sizeof(a), "%.*s", (int)(sp - m), m);
        snprintf(b, sizeof(b), "%s", sp + 1);
        while (j < k) {
            if (j + 1 < k && !strcmp(sym[j], a) && !strcmp(sym[j + 1], b)) {
                size_t la = strlen(a), lb = strlen(b);
                if (la + lb >= sizeof(sym[0]))
                    r->bad = 1;
                else
                    memcpy(sym[o], a, la), memcpy(sym[o] + la, b, lb + 1);
                o++;
                j += 2;
            } else {
                if (o != j)
                    memcpy(sym[o], sym[j], sizeof(sym[0]));
                o++;
                j++;
            }
        }
        k = o;
    }
    for (size_t i = 0; i < k; i++) {
        int32_t id = ref_token(r, sym[i]);
        if (id < 0)
            r->bad = 1;
        r->out[r->n_out++] = id;
    }
    free(sym);
    return DS_OK;
}

static void ref_encode(const struct ds_meta *m, const struct ds_tokenizer *t, const char *text,
                       size_t len, int32_t *out, size_t *n, int *bad)
{
    struct ref r = {m, ds_meta_find(m, "tokenizer.ggml.tokens"),
                    ds_meta_find(m, "tokenizer.ggml.merges"), 0, 0, out, 0, 0};
    enum ds_vtype el;
    ds_meta_arr(m, (size_t)r.ti, &el, &r.n_tok);
    ds_meta_arr(m, (size_t)r.mi, &el, &r.n_merges);
    *bad = tok_pieces(t, text, len, ref_piece, &r) != DS_OK || r.bad;
    *n = r.n_out;
}

/* ---- tests ------------------------------------------------------------------ */

static struct ds_meta *train(const char *text, size_t len, uint32_t vocab, const char *pre,
                             struct ds_bpe_stats *st)
{
    struct ds_bpe_opts o;
    struct ds_meta *m = ds_meta_new();
    ds_bpe_opts_init(&o);
    o.vocab_size = vocab;
    if (pre)
        o.pre = pre;
    if (ds_bpe_train(text, len, &o, m, st) != DS_OK) {
        fprintf(stderr, "train: %s\n", ds_errmsg());
        ds_meta_free(m);
        return NULL;
    }
    return m;
}

TEST(layout_and_ties)
{
    static const char text[] = "ab ab cd cd";
    struct ds_bpe_stats st;
    struct ds_meta *m = train(text, strlen(text), 300, NULL, &st);
    struct ds_tokenizer *t = NULL;
    long mi, ti;
    int64_t v;

    ASSERT(m);
    ASSERT_EQ_INT(st.n_pieces, 4);
    ASSERT_EQ_INT(st.n_unique, 3);
    // (a,b), (c,d) and (Ġ,c) all occur twice: the smaller left id wins
    ASSERT_EQ_INT(st.n_merges, 3);
    mi = ds_meta_find(m, "tokenizer.ggml.merges");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)mi, 0, NULL), "a b");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)mi, 1, NULL), "c d");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)mi, 2, NULL), "\xc4\xa0 cd");
    ASSERT_EQ_INT(st.n_padding, 300 - 262);
    ti = ds_meta_find(m, "tokenizer.ggml.tokens");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 0, NULL), DS_BPE_BOS);
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 1, NULL), DS_BPE_EOS);
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 2, NULL), DS_BPE_PAD);
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 3, NULL), "!");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 259, NULL), "ab");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 262, NULL), "[PAD262]");
    ASSERT(ds_meta_get_int(m, "tokenizer.ggml.padding_token_id", &v) && v == 2);
    ASSERT_STR(ds_meta_get_str(m, "tokenizer.ggml.pre", NULL), "deepseek-llm");

    ASSERT_OK(ds_tokenizer_new(m, &t));
    ASSERT_EQ_INT(ds_tokenizer_n_vocab(t), 300);
    ASSERT_EQ_INT(ds_tokenizer_bos(t), 0);
    ASSERT_EQ_INT(ds_tokenizer_eos(t), 1);
    ASSERT(ds_tokenizer_add_bos(t));
    ASSERT(ds_tokenizer_is_control(t, 2));
    int32_t *ids = NULL;
    size_t n = 0;
    ASSERT_OK(ds_tokenizer_encode(t, text, strlen(text), true, false, &ids, &n));
    ASSERT_EQ_INT(n, 6); // BOS ab Ġ ab Ġcd Ġcd
    ASSERT_EQ_INT(ids[0], 0);
    ASSERT_EQ_INT(ids[1], 259);
    ASSERT_EQ_INT(st.n_tokens, 5);
    free(ids);
    ds_tokenizer_free(t);
    ds_meta_free(m);
}

/* Trains on the corpus with each pre-tokenizer; the result round-trips, gives
 * the reference encoder's ids, and encodes the corpus to stats.n_tokens. */
TEST(corpus_each_pretokenizer)
{
    static const char *const pres[] = {"deepseek-llm", "deepseek-v3", "deepseek-coder"};
    for (size_t p = 0; p < 3; p++) {
        struct ds_bpe_stats st;
        struct ds_meta *m = train(corpus, corpus_len, 600, pres[p], &st);
        struct ds_tokenizer *t = NULL;
        int32_t *ids = NULL, *ref = malloc((corpus_len + sizeof(mixed)) * sizeof(*ref));
        size_t n = 0, nr = 0;
        char *back = NULL;
        size_t blen = 0;
        int bad = 0;

        ASSERT(m && ref);
        ASSERT_EQ_INT(st.n_merges, 600 - 259);
        ASSERT_EQ_INT(st.n_padding, 0);
        ASSERT_OK(ds_tokenizer_new(m, &t));
        ASSERT_OK(ds_tokenizer_encode(t, corpus, corpus_len, false, false, &ids, &n));
        ASSERT_EQ_INT(n, st.n_tokens);
        ASSERT(n < corpus_len / 2); // it compresses
        ASSERT_OK(ds_tokenizer_decode(t, ids, n, &back, &blen));
        ASSERT(blen == corpus_len && !memcmp(back, corpus, blen));
        free(back);

        // reference encoder on a piece of the corpus
        ref_encode(m, t, corpus, 3000, ref, &nr, &bad);
        free(ids);
        ASSERT_OK(ds_tokenizer_encode(t, corpus, 3000, false, false, &ids, &n));
        ASSERT(!bad);
        ASSERT_EQ_INT(nr, n);
        for (size_t i = 0; i < n; i++)
            ASSERT_MSG(ids[i] == ref[i], "%s: token %zu: %d != %d", pres[p], i, ids[i], ref[i]);
        free(ids);

        // and on text unlike the corpus (unseen characters fall back to bytes)
        ref_encode(m, t, mixed, strlen(mixed), ref, &nr, &bad);
        ASSERT_OK(ds_tokenizer_encode(t, mixed, strlen(mixed), false, false, &ids, &n));
        ASSERT(!bad);
        ASSERT_EQ_INT(nr, n);
        for (size_t i = 0; i < n; i++)
            ASSERT_EQ_INT(ids[i], ref[i]);
        ASSERT_OK(ds_tokenizer_decode(t, ids, n, &back, &blen));
        ASSERT(blen == strlen(mixed) && !memcmp(back, mixed, blen));
        free(back);
        free(ids);
        free(ref);
        ds_tokenizer_free(t);
        ds_meta_free(m);
    }
}

TEST(deterministic)
{
    struct ds_meta *a = train(corpus, corpus_len, 400, NULL, NULL);
    struct ds_meta *b = train(corpus, corpus_len, 400, NULL, NULL);
    long ia, ib;
    uint64_t na, nb;
    enum ds_vtype el;

    ASSERT(a && b);
    ia = ds_meta_find(a, "tokenizer.ggml.merges");
    ib = ds_meta_find(b, "tokenizer.ggml.merges");
    ASSERT(ds_meta_arr(a, (size_t)ia, &el, &na) && ds_meta_arr(b, (size_t)ib, &el, &nb));
    ASSERT_EQ_INT(na, nb);
    for (uint64_t i = 0; i < na; i++)
        ASSERT_STR(ds_meta_arr_str(a, (size_t)ia, i, NULL), ds_meta_arr_str(b, (size_t)ib, i, NULL));
    // the most frequent pair of Shakespeare's text comes first: "e" + " " is
    // never a pair (spaces start pieces), so it is a letter pair or "Ġ" + letter
    ASSERT(strlen(ds_meta_arr_str(a, (size_t)ia, 0, NULL)) >= 3);
    ds_meta_free(a);
    ds_meta_free(b);
}

/* The vocab-only GGUF reads back into the same tokenizer; tokenizer.json made
 * from the metadata converts back to the same ids. */
TEST(vocab_gguf_and_tokenizer_json)
{
    struct ds_meta *m = train(corpus, corpus_len, 512, NULL, NULL);
    struct ds_meta *m2 = ds_meta_new();
    struct ds_tokenizer *t1 = NULL, *t2 = NULL, *t3 = NULL;
    struct ds_reader *r = NULL;
    struct ds_gguf g = {0};
    char path[128], *tj = NULL, *tc = NULL;
    int32_t *i1 = NULL, *i2 = NULL, *i3 = NULL;
    size_t n1, n2, n3;

    ASSERT(m && m2);
    snprintf(path, sizeof(path), "%s/vocab.gguf", scratch);
    ASSERT_OK(ds_bpe_write_vocab(m, "shakespeare", path, 0));
    ASSERT_ERR(ds_bpe_write_vocab(m, NULL, path, 0), DS_ERR_EXISTS);
    ASSERT_OK(ds_reader_open(&r, path));
    ASSERT_OK(ds_gguf_init(&g));
    ASSERT_OK(ds_gguf_read(r, &g));
    ASSERT_EQ_INT(g.n_tensors, 0);
    ASSERT_STR(ds_meta_get_str(g.meta, "general.architecture", NULL), "deepseek2");
    ASSERT_STR(ds_meta_get_str(g.meta, "general.name", NULL), "shakespeare");
    ASSERT_OK(ds_tokenizer_new(m, &t1));
    ASSERT_OK(ds_tokenizer_new(g.meta, &t2));
    ASSERT_OK(ds_hf_meta_to_tokenizer(m, &tj, &tc));
    ASSERT_OK(ds_hf_tokenizer_to_meta(tj, strlen(tj), tc, strlen(tc), 0, "tokenizer.json", m2));
    ASSERT_STR(ds_meta_get_str(m2, "tokenizer.ggml.pre", NULL), "deepseek-llm");
    ASSERT_OK(ds_tokenizer_new(m2, &t3));
    ASSERT_EQ_INT(ds_tokenizer_bos(t3), 0);
    ASSERT_OK(ds_tokenizer_encode(t1, mixed, strlen(mixed), true, false, &i1, &n1));
    ASSERT_OK(ds_tokenizer_encode(t2, mixed, strlen(mixed), true, false, &i2, &n2));
    ASSERT_OK(ds_tokenizer_encode(t3, mixed, strlen(mixed), true, false, &i3, &n3));
    ASSERT(n1 == n2 && n1 == n3);
    ASSERT(!memcmp(i1, i2, n1 * sizeof(*i1)) && !memcmp(i1, i3, n1 * sizeof(*i1)));
    unlink(path);
    free(i1);
    free(i2);
    free(i3);
    free(tj);
    free(tc);
    ds_tokenizer_free(t1);
    ds_tokenizer_free(t2);
    ds_tokenizer_free(t3);
    ds_gguf_release(&g);
    ds_reader_free(r);
    ds_meta_free(m2);
    ds_meta_free(m);
}

TEST(bad_arguments)
{
    struct ds_bpe_opts o;
    struct ds_meta *m = ds_meta_new();
    struct ds_bpe_stats st;

    ASSERT(m);
    ds_bpe_opts_init(&o);
    o.vocab_size = 258;
    ASSERT_ERR(ds_bpe_train("abc", 3, &o, m, NULL), DS_ERR_ARG);
    o.vocab_size = DS_BPE_MAX_VOCAB + 1;
    ASSERT_ERR(ds_bpe_train("abc", 3, &o, m, NULL), DS_ERR_ARG);
    ds_bpe_opts_init(&o);
    o.pre = "gpt2";
    ASSERT_ERR(ds_bpe_train("abc", 3, &o, m, NULL), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "'gpt2'"));
    ds_bpe_opts_init(&o);
    o.min_frequency = 0;
    ASSERT_ERR(ds_bpe_train("abc", 3, &o, m, NULL), DS_ERR_ARG);
    ds_bpe_opts_init(&o);
    ASSERT_ERR(ds_bpe_train("ab\xff", 3, &o, m, NULL), DS_ERR_ARG);
    ASSERT(strstr(ds_errmsg(), "byte 2"));
    ASSERT_EQ_INT(ds_meta_count(m), 0);
    ASSERT_ERR(ds_bpe_write_vocab(m, NULL, "x.gguf", 0), DS_ERR_NOT_FOUND);
    // an empty text still gives a full (byte-level) vocabulary
    ASSERT_OK(ds_bpe_train("", 0, &o, m, &st));
    ASSERT_EQ_INT(st.n_merges, 0);
    ASSERT_EQ_INT(st.n_padding, 1024 - 259);
    ds_meta_free(m);
}

int main(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/ds-test-bpe.XXXXXX");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 1;
    }
    if (ds_read_file(test_data("shakespeare-12k.txt"), 1 << 20, &corpus, &corpus_len)) {
        fprintf(stderr, "cannot read the corpus: %s\n", ds_errmsg());
        return 1;
    }
    RUN(layout_and_ties);
    RUN(corpus_each_pretokenizer);
    RUN(deterministic);
    RUN(vocab_gguf_and_tokenizer_json);
    RUN(bad_arguments);
    free(corpus);
    rmdir(scratch);
    return test_report();
}
