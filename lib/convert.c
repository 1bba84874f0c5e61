/*
 * convert.c - Hugging Face safetensors <-> GGUF conversion (see ds_convert.h).
 *
 * A source exposes "logical" tensors: Hugging Face names, PyTorch layouts.
 * Each logical tensor is either a byte range of one raw input tensor (a whole
 * safetensors tensor, a whole GGUF tensor, or one expert's slab of a stacked
 * GGUF tensor) or kv_b_proj rebuilt from a GGUF attn_k_b / attn_v_b pair.
 * A sink plans its output tensors from the logical list, in the order their
 * first input appears, and produces each one in bands of rows, so memory is
 * bounded by a band (plus small tensors kept for reuse), not by the model.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds.h"
#include "error_impl.h"
#include "ds_banned.h"

#define BAND_BYTES (64u << 20)        /* target size of one band of rows */
#define SMALL_RAW (64u << 20)         /* stream inputs: tensors cached whole */
#define CACHE_BYTES (256u << 20)      /* stream inputs: cache budget */
#define MAX_CONFIG (16u << 20)
#define MAX_TOKENIZER (512u << 20)

/* ---- Hugging Face <-> GGUF names ------------------------------------------- */

enum map_kind { M_PLAIN, M_EXPERT, M_KVB, M_NONE };

struct name_pair {
    const char *hf;   /* after "model.layers.L." */
    const char *gguf; /* after "blk.L." */
};

static const struct name_pair layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
    {"enorm.weight", "nextn.enorm.weight"},
    {"hnorm.weight", "nextn.hnorm.weight"},
    {"eh_proj.weight", "nextn.eh_proj.weight"},
    {"shared_head.norm.weight", "nextn.shared_head_norm.weight"},
    {"shared_head.head.weight", "nextn.shared_head_head.weight"},
    {"embed_tokens.weight", "nextn.embed_tokens.weight"},
};

static const struct name_pair model_names[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

static const char *const expert_proj[3] = {"gate_proj", "up_proj", "down_proj"};
static const char *const expert_gguf[3] = {"ffn_gate_exps.weight", "ffn_up_exps.weight",
                                           "ffn_down_exps.weight"};

#define SCALE_SUFFIX "_scale_inv"

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* Parses "<prefix><number>.<rest>"; returns rest or NULL. */
static const char *parse_indexed(const char *s, const char *prefix, long *num)
{
    size_t n = strlen(prefix);
    char *end;
    if (strncmp(s, prefix, n) || s[n] < '0' || s[n] > '9')
        return NULL;
    *num = strtol(s + n, &end, 10);
    if (*end != '.' || *num < 0 || *num > 1000000)
        return NULL;
    return end + 1;
}

/* HF name (without a scale suffix) -> GGUF name. For experts, gguf is the
 * stacked name and *expert the index; for kv_b (when split), gguf is
 * "blk.L" plus M_KVB. */
static enum map_kind hf_to_gguf(const char *hf, bool split_kvb, char *gguf, size_t cap,
                                long *expert)
{
    long layer, e;
    const char *rest, *r2;

    for (size_t i = 0; i < sizeof(model_names) / sizeof(model_names[0]); i++)
        if (!strcmp(hf, model_names[i].hf)) {
            snprintf(gguf, cap, "%s", model_names[i].gguf);
            return M_PLAIN;
        }
    rest = parse_indexed(hf, "model.layers.", &layer);
    if (!rest)
        return M_NONE;
    if (split_kvb && !strcmp(rest, "self_attn.kv_b_proj.weight")) {
        snprintf(gguf, cap, "blk.%ld", layer);
        return M_KVB;
    }
    for (size_t i = 0; i < sizeof(layer_names) / sizeof(layer_names[0]); i++)
        if (!strcmp(rest, layer_names[i].hf)) {
            snprintf(gguf, cap, "blk.%ld.%s", layer, layer_names[i].gguf);
            return M_PLAIN;
        }
    r2 = parse_indexed(rest, "mlp.experts.", &e);
    if (r2)
        for (int p = 0; p < 3; p++)
            if (!strncmp(r2, expert_proj[p], strlen(expert_proj[p])) &&
                !strcmp(r2 + strlen(expert_proj[p]), ".weight")) {
                snprintf(gguf, cap, "blk.%ld.%s", layer, expert_gguf[p]);
                *expert = e;
                return M_EXPERT;
            }
    return M_NONE;
}

/* GGUF name (without a scale suffix) -> HF name. For a stacked expert tensor,
 * hf is the prefix "model.layers.L.mlp.experts." and *proj the projection. */
static enum map_kind gguf_to_hf(const char *gguf, char *hf, size_t cap, int *proj)
{
    long layer;
    const char *rest;

    for (size_t i = 0; i < sizeof(model_names) / sizeof(model_names[0]); i++)
        if (!strcmp(gguf, model_names[i].gguf)) {
            snprintf(hf, cap, "%s", model_names[i].hf);
            return M_PLAIN;
        }
    rest = parse_indexed(gguf, "blk.", &layer);
    if (!rest)
        return M_NONE;
    if (!strcmp(rest, "attn_k_b.weight") || !strcmp(rest, "attn_v_b.weight")) {
        snprintf(hf, cap, "model.layers.%ld.self_attn.kv_b_proj.weight", layer);
        return M_KVB;
    }
    for (size_t i = 0; i < sizeof(layer_names) / sizeof(layer_names[0]); i++)
        if (!strcmp(rest, layer_names[i].gguf)) {
            snprintf(hf, cap, "model.layers.%ld.%s", layer, layer_names[i].hf);
            return M_PLAIN;
        }
    for (int p = 0; p < 3; p++)
        if (!strcmp(rest, expert_gguf[p])) {
            snprintf(hf, cap, "model.layers.%ld.mlp.experts.", layer);
            *proj = p;
            return M_EXPERT;
        }
    return M_NONE;
}

/* ---- sources ------------------------------------------------------------------ */

enum lkind { LK_RAW, LK_KVB };

struct ltensor {
    char name[160];               /* HF name; for passthrough the GGUF name */
    bool passthrough;             /* GGUF tensor without a Hugging Face name */
    enum ds_type type;
    uint32_t n_dims;
    int64_t shape[DS_ST_MAX_DIMS]; /* PyTorch order */
    uint64_t nbytes;
    enum lkind kind;
    size_t raw, raw2;             /* raw input tensors (raw2: v_b for LK_KVB) */
    uint64_t off;                 /* byte offset inside raw */
    long scale;                   /* logical index of the FP8 scale companion, or -1 */
    bool is_scale;
    int64_t kvb_heads, kvb_nope, kvb_v, kvb_rank; /* LK_KVB geometry */
};

struct cache_entry {
    size_t raw;
    void *data;
    uint64_t n;
    uint64_t stamp;
};

#define CACHE_SLOTS 64

struct source {
    enum ds_format fmt;
    const char *name;
    /* Hugging Face input */
    struct ds_st st;
    struct ds_reader **shards;
    char *config;
    size_t config_len;
    /* GGUF input */
    struct ds_reader *r;
    struct ds_gguf g;
    /* both */
    struct ds_meta *meta;         /* metadata for the sink (owned) */
    int64_t fp8_block;
    struct ltensor *lt;
    size_t n_lt, cap_lt;
    struct cache_entry cache[CACHE_SLOTS];
    uint64_t cache_bytes, stamp;
    uint64_t bytes_in;
};

static void source_release(struct source *s)
{
    if (s->shards)
        for (size_t i = 0; i < s->st.n_files; i++)
            ds_reader_free(s->shards[i]);
    free(s->shards);
    ds_st_release(&s->st);
    free(s->config);
    ds_reader_free(s->r);
    ds_gguf_release(&s->g);
    ds_meta_free(s->meta);
    free(s->lt);
    for (int i = 0; i < CACHE_SLOTS; i++)
        free(s->cache[i].data);
    memset(s, 0, sizeof(*s));
}

static ds_err add_lt(struct source *s, struct ltensor **out)
{
    DS_TRY(ds_grow((void **)&s->lt, &s->cap_lt, s->n_lt + 1, sizeof(*s->lt)));
    *out = &s->lt[s->n_lt++];
    memset(*out, 0, sizeof(**out));
    (*out)->scale = -1;
    return DS_OK;
}

struct name_idx {
    const char *name;
    size_t i;
};

static int cmp_name_idx(const void *a, const void *b)
{
    return strcmp(((const struct name_idx *)a)->name, ((const struct name_idx *)b)->name);
}

/* Index of logical tensor name in a sorted index, or -1. */
static long find_lt(const struct name_idx *idx, size_t n, const char *name)
{
    struct name_idx key = {name, 0};
    const struct name_idx *hit = bsearch(&key, idx, n, sizeof(*idx), cmp_name_idx);
    return hit ? (long)hit->i : -1;
}

static uint64_t lt_rows(const struct ltensor *t)
{
    uint64_t rows = 1;
    for (uint32_t d = 0; d + 1 < t->n_dims; d++)
        rows *= (uint64_t)t->shape[d];
    return rows;
}

static int64_t lt_cols(const struct ltensor *t)
{
    return t->n_dims ? t->shape[t->n_dims - 1] : 1;
}

/* Links each FP8 weight to its "<name>_scale_inv" and checks the scale shape. */
static ds_err link_scales(struct source *s)
{
    size_t nlen;
    ds_err rc = DS_OK;
    struct name_idx *idx = ds_calloc(s->n_lt ? s->n_lt : 1, sizeof(*idx));

    if (!idx)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < s->n_lt; i++)
        idx[i] = (struct name_idx){s->lt[i].name, i};
    qsort(idx, s->n_lt, sizeof(*idx), cmp_name_idx);
    for (size_t i = 0; i < s->n_lt; i++) {
        struct ltensor *t = &s->lt[i];
        char sname[sizeof(t->name) + sizeof(SCALE_SUFFIX)];
        long j;
        if (ends_with(t->name, SCALE_SUFFIX)) {
            t->is_scale = true;
            continue;
        }
        if (t->type != DS_TYPE_F8_E4M3)
            continue;
        nlen = strlen(t->name);
        DS_FAIL_IF(nlen + strlen(SCALE_SUFFIX) >= sizeof(sname), DS_ERR_FORMAT,
                     "'%s': tensor name '%s' is too long", s->name, t->name);
        snprintf(sname, sizeof(sname), "%s%s", t->name, SCALE_SUFFIX);
        j = find_lt(idx, s->n_lt, sname);
        DS_FAIL_IF(j < 0, DS_ERR_FORMAT, "'%s': FP8 tensor '%s' has no '%s'", s->name,
                     t->name, sname);
        {
            const struct ltensor *sc = &s->lt[j];
            int64_t b = s->fp8_block;
            int64_t want_r = (int64_t)((lt_rows(t) + (uint64_t)b - 1) / (uint64_t)b);
            int64_t want_c = (lt_cols(t) + b - 1) / b;
            DS_FAIL_IF(sc->type != DS_TYPE_F32 || t->n_dims != 2 || sc->n_dims != 2 ||
                             sc->shape[0] != want_r || sc->shape[1] != want_c,
                         DS_ERR_FORMAT,
                         "'%s': '%s' should be F32 [%lld, %lld] for %s [%lld, %lld] with "
                         "%lldx%lld blocks",
                         s->name, sname, (long long)want_r, (long long)want_c, t->name,
                         (long long)t->shape[0], (long long)(t->n_dims > 1 ? t->shape[1] : 1),
                         (long long)b, (long long)b);
        }
        t->scale = j;
    }
out:
    free(idx);
    return rc;
}

/* Reads n bytes at offset off of raw input tensor i. */
static ds_err read_raw(struct source *s, size_t i, uint64_t off, void *buf, uint64_t n)
{
    if (s->fmt == DS_FORMAT_SAFETENSORS) {
        const struct ds_st_tensor *t = &s->st.tensors[i];
        DS_TRY(ds_reader_pread(s->shards[t->file], buf, n, s->st.data_start[t->file] + t->begin +
                                                               off));
        s->bytes_in += n;
        return DS_OK;
    }
    const struct ds_tensor_info *ti = &s->g.tensors[i];
    uint64_t abs = s->g.data_offset + ti->offset;
    if (ds_reader_is_file(s->r)) {
        DS_TRY(ds_reader_pread(s->r, buf, n, abs + off));
        s->bytes_in += n;
        return DS_OK;
    }
    /* a stream: small tensors are read whole and cached; big ones in order */
    if (ti->nbytes <= SMALL_RAW) {
        struct cache_entry *e = NULL, *victim = &s->cache[0];
        for (int k = 0; k < CACHE_SLOTS; k++) {
            if (s->cache[k].data && s->cache[k].raw == i)
                e = &s->cache[k];
            if (!s->cache[k].data || (victim->data && s->cache[k].stamp < victim->stamp))
                victim = &s->cache[k];
        }
        if (!e) {
            uint64_t pos = ds_reader_tell(s->r);
            DS_RETURN_IF(abs < pos, DS_ERR_STATE,
                         "'%s': tensor '%s' is needed again after it was passed; this input "
                         "order cannot be converted from a stream (use a file)",
                         s->name, ti->name);
            while (s->cache_bytes + ti->nbytes > CACHE_BYTES) {
                struct cache_entry *old = NULL;
                for (int k = 0; k < CACHE_SLOTS; k++)
                    if (s->cache[k].data && (!old || s->cache[k].stamp < old->stamp))
                        old = &s->cache[k];
                if (!old)
                    break;
                s->cache_bytes -= old->n;
                free(old->data);
                old->data = NULL;
            }
            if (victim->data) {
                s->cache_bytes -= victim->n;
                free(victim->data);
                victim->data = NULL;
            }
            victim->data = ds_malloc(ti->nbytes);
            if (!victim->data)
                return DS_ERR_NOMEM;
            DS_TRY(ds_reader_skip(s->r, abs - pos));
            DS_TRY(ds_reader_read(s->r, victim->data, ti->nbytes));
            s->bytes_in += ti->nbytes;
            victim->raw = i;
            victim->n = ti->nbytes;
            s->cache_bytes += ti->nbytes;
            e = victim;
        }
        e->stamp = ++s->stamp;
        memcpy(buf, (const char *)e->data + off, n);
        return DS_OK;
    }
    uint64_t pos = ds_reader_tell(s->r);
    DS_RETURN_IF(abs + off < pos, DS_ERR_STATE,
                 "'%s': tensor '%s' is needed again after it was passed; this input order "
                 "cannot be converted from a stream (use a file)",
                 s->name, ti->name);
    DS_TRY(ds_reader_skip(s->r, abs + off - pos));
    DS_TRY(ds_reader_read(s->r, buf, n));
    s->bytes_in += n;
    return DS_OK;
}

/* Reads rows [r0, r0+nr) of logical tensor t (raw bytes of its type). */
static ds_err read_rows(struct source *s, const struct ltensor *t, uint64_t r0, uint64_t nr,
                        void *buf)
{
    uint64_t rowb = t->nbytes / (lt_rows(t) ? lt_rows(t) : 1);
    if (t->kind == LK_RAW)
        return read_raw(s, t->raw, t->off + r0 * rowb, buf, nr * rowb);

    /* kv_b [heads*(nope+v), rank] from k_b {nope, rank, heads} and v_b {rank, v, heads} */
    ds_err rc = DS_OK;
    size_t es = ds_type_block_bytes(t->type);
    int64_t H = t->kvb_heads, N = t->kvb_nope, V = t->kvb_v, R = t->kvb_rank;
    uint64_t kb_bytes = (uint64_t)H * (uint64_t)R * (uint64_t)N * es;
    uint64_t vb_bytes = (uint64_t)H * (uint64_t)V * (uint64_t)R * es;
    char *kb = ds_malloc(kb_bytes), *vb = ds_malloc(vb_bytes), *full = ds_malloc(t->nbytes);
    DS_FAIL_IF(!kb || !vb || !full, DS_ERR_NOMEM, "out of memory rebuilding '%s'", t->name);
    DS_CHECK(read_raw(s, t->raw, 0, kb, kb_bytes));
    DS_CHECK(read_raw(s, t->raw2, 0, vb, vb_bytes));
    for (int64_t h = 0; h < H; h++) {
        for (int64_t d = 0; d < N; d++)
            for (int64_t c = 0; c < R; c++)
                memcpy(full + (((uint64_t)(h * (N + V) + d) * (uint64_t)R + (uint64_t)c) * es),
                       kb + (((uint64_t)(h * R + c) * (uint64_t)N + (uint64_t)d) * es), es);
        memcpy(full + (uint64_t)(h * (N + V) + N) * (uint64_t)R * es,
               vb + (uint64_t)h * (uint64_t)V * (uint64_t)R * es, (uint64_t)V * (uint64_t)R * es);
    }
    memcpy(buf, full + r0 * rowb, nr * rowb);
out:
    free(kb);
    free(vb);
    free(full);
    return rc;
}

/* Rows [r0, r0+nr) of t as float: FP8 dequantized with its scale (r0 must be
 * a multiple of the block), other float types converted. */
static ds_err read_rows_f32(struct source *s, const struct ltensor *t, uint64_t r0, uint64_t nr,
                            float *out)
{
    ds_err rc = DS_OK;
    int64_t cols = lt_cols(t);
    uint64_t n = nr * (uint64_t)cols;
    void *raw = NULL;
    float *scale = NULL;

    if (t->type == DS_TYPE_F32)
        return read_rows(s, t, r0, nr, out);
    if (ds_quant_supported(t->type)) {
        uint64_t rowb = t->nbytes / (lt_rows(t) ? lt_rows(t) : 1);
        raw = ds_malloc(nr * rowb);
        DS_FAIL_IF(!raw, DS_ERR_NOMEM, "out of memory reading '%s'", t->name);
        DS_CHECK(read_rows(s, t, r0, nr, raw));
        for (uint64_t r = 0; r < nr; r++)
            DS_CHECK(ds_dequantize_row(t->type, (const char *)raw + r * rowb,
                                       out + r * (uint64_t)cols, cols));
        goto out;
    }
    DS_RETURN_IF(!ds_type_valid(t->type) || ds_type_block_size(t->type) != 1 ||
                     (t->type != DS_TYPE_F16 && t->type != DS_TYPE_BF16 &&
                      t->type != DS_TYPE_F8_E4M3 && t->type != DS_TYPE_F64),
                 DS_ERR_UNSUPPORTED,
                 "'%s': tensor '%s' is %s; converting it is not supported (only f32, f16, bf16 "
                 "and fp8 are)",
                 s->name, t->name, ds_type_name(t->type));
    raw = ds_malloc(n * ds_type_block_bytes(t->type));
    DS_FAIL_IF(!raw, DS_ERR_NOMEM, "out of memory reading '%s'", t->name);
    DS_CHECK(read_rows(s, t, r0, nr, raw));
    if (t->type == DS_TYPE_F8_E4M3) {
        const struct ltensor *sc;
        int64_t b = s->fp8_block, scols = (cols + b - 1) / b;
        uint64_t sr0 = r0 / (uint64_t)b, snr = (nr + (uint64_t)b - 1) / (uint64_t)b;
        DS_FAIL_IF(t->scale < 0, DS_ERR_FORMAT, "'%s': FP8 tensor '%s' has no scale", s->name,
                   t->name);
        assert(r0 % (uint64_t)b == 0);
        sc = &s->lt[t->scale];
        scale = ds_malloc(snr * (uint64_t)scols * sizeof(float));
        DS_FAIL_IF(!scale, DS_ERR_NOMEM, "out of memory reading '%s'", sc->name);
        DS_CHECK(read_rows(s, sc, sr0, snr, scale));
        ds_fp8_dequant(out, raw, scale, (int64_t)nr, cols, b);
    } else {
        DS_CHECK(ds_convert_row(DS_TYPE_F32, out, t->type, raw, n));
    }
out:
    free(raw);
    free(scale);
    return rc;
}

/* ---- opening sources ---------------------------------------------------------------- */

static ds_err read_text_file(const char *dir, const char *base, size_t max, bool required,
                             char **out, size_t *len)
{
    char path[4096];
    struct stat sb;
    *out = NULL;
    *len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, base);
    if (stat(path, &sb) != 0) {
        DS_RETURN_IF(required, DS_ERR_NOT_FOUND, "'%s': no %s in the checkpoint directory", dir,
                     base);
        return DS_OK;
    }
    return ds_read_file(path, max, out, len);
}

static ds_err open_hf(struct source *s, const char *input)
{
    char dir[4096];
    struct stat sb;
    char *tok = NULL, *tokcfg = NULL;
    size_t tok_len = 0, tokcfg_len = 0;
    struct ds_hparams hp;
    ds_err rc = DS_OK;

    if (stat(input, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(dir, sizeof(dir), "%s", input);
    } else {
        const char *slash = strrchr(input, '/');
        if (slash)
            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - input), input);
        else
            snprintf(dir, sizeof(dir), ".");
    }
    s->fmt = DS_FORMAT_SAFETENSORS;
    DS_CHECK(ds_st_open(&s->st, input));
    DS_CHECK(read_text_file(dir, "config.json", MAX_CONFIG, true, &s->config, &s->config_len));
    DS_CHECK(ds_hf_config_parse(s->config, s->config_len, "config.json", &hp));
    s->fp8_block = DS_FP8_BLOCK;
    if (hp.fp8) {
        DS_FAIL_IF(hp.fp8_block[0] != hp.fp8_block[1] || hp.fp8_block[0] <= 0, DS_ERR_UNSUPPORTED,
                   "'%s/config.json': FP8 blocks of %lldx%lld are not supported (square only)",
                   dir, (long long)hp.fp8_block[0], (long long)hp.fp8_block[1]);
        s->fp8_block = hp.fp8_block[0];
    }
    s->meta = ds_meta_new();
    DS_FAIL_IF(!s->meta, DS_ERR_NOMEM, "out of memory");
    {
        char cfgname[4200];
        snprintf(cfgname, sizeof(cfgname), "%s/config.json", dir);
        DS_CHECK(ds_hf_config_to_meta(s->config, s->config_len, cfgname, s->meta));
    }
    DS_CHECK(read_text_file(dir, "tokenizer.json", MAX_TOKENIZER, true, &tok, &tok_len));
    DS_CHECK(read_text_file(dir, "tokenizer_config.json", MAX_CONFIG, false, &tokcfg,
                            &tokcfg_len));
    {
        char tokname[4200];
        snprintf(tokname, sizeof(tokname), "%s/tokenizer.json", dir);
        DS_CHECK(ds_hf_tokenizer_to_meta(tok, tok_len, tokcfg, tokcfg_len, hp.vocab_size, tokname,
                                         s->meta));
    }
    s->shards = ds_calloc(s->st.n_files, sizeof(*s->shards));
    DS_FAIL_IF(!s->shards, DS_ERR_NOMEM, "out of memory");
    for (size_t f = 0; f < s->st.n_files; f++)
        DS_CHECK(ds_reader_open(&s->shards[f], s->st.files[f]));
    for (size_t i = 0; i < s->st.n_tensors; i++) {
        const struct ds_st_tensor *st = &s->st.tensors[i];
        struct ltensor *t;
        DS_FAIL_IF(strlen(st->name) >= sizeof(t->name), DS_ERR_FORMAT,
                   "'%s': tensor name '%.40s...' is too long", input, st->name);
        DS_CHECK(add_lt(s, &t));
        snprintf(t->name, sizeof(t->name), "%s", st->name);
        t->type = st->type;
        t->n_dims = st->n_dims;
        memcpy(t->shape, st->shape, sizeof(t->shape));
        t->nbytes = st->end - st->begin;
        t->kind = LK_RAW;
        t->raw = i;
    }
    DS_CHECK(link_scales(s));
out:
    free(tok);
    free(tokcfg);
    return rc;
}

static ds_err open_gguf(struct source *s, struct ds_reader *r)
{
    ds_err rc = DS_OK;
    size_t *order = NULL;
    int64_t fp8b;

    s->fmt = DS_FORMAT_GGUF;
    s->r = r;
    DS_CHECK(ds_gguf_init(&s->g));
    DS_CHECK(ds_gguf_read(r, &s->g));
    s->meta = ds_meta_dup(s->g.meta);
    DS_FAIL_IF(!s->meta, DS_ERR_NOMEM, "out of memory");
    s->fp8_block = ds_meta_get_int(s->meta, "dskit.fp8.block_size", &fp8b) && fp8b > 0 &&
                           fp8b <= 65536
                       ? fp8b
                       : DS_FP8_BLOCK;
    order = ds_calloc(s->g.n_tensors ? s->g.n_tensors : 1, sizeof(*order));
    DS_FAIL_IF(!order, DS_ERR_NOMEM, "out of memory");
    ds_gguf_data_order(&s->g, order);
    for (size_t k = 0; k < s->g.n_tensors; k++) {
        size_t i = order[k];
        const struct ds_tensor_info *ti = &s->g.tensors[i];
        char base[DS_GGUF_MAX_NAME], hf[96];
        bool scale = ends_with(ti->name, SCALE_SUFFIX);
        int proj = 0;
        enum map_kind kind;
        struct ltensor *t;

        snprintf(base, sizeof(base), "%.*s",
                 (int)(strlen(ti->name) - (scale ? strlen(SCALE_SUFFIX) : 0)), ti->name);
        kind = gguf_to_hf(base, hf, sizeof(hf), &proj);
        if (kind == M_KVB) {
            /* block-quantized k_b/v_b cannot be transposed back into kv_b:
             * they stay GGUF tensors (copied as they are) */
            char other[DS_GGUF_MAX_NAME];
            bool is_k = ends_with(base, "attn_k_b.weight");
            long oi;
            snprintf(other, sizeof(other), "%.*s%s",
                     (int)(strlen(base) - strlen("attn_k_b.weight")), base,
                     is_k ? "attn_v_b.weight" : "attn_k_b.weight");
            oi = ds_gguf_find(&s->g, other);
            if (ds_type_block_size(ti->type) > 1 ||
                (oi >= 0 && ds_type_block_size(s->g.tensors[oi].type) > 1))
                kind = M_NONE;
        }
        if (kind == M_KVB) {
            /* attn_k_b {nope, rank, H} + attn_v_b {rank, v, H} -> one kv_b */
            char vname[DS_GGUF_MAX_NAME];
            long vi;
            if (!ends_with(base, "attn_k_b.weight"))
                continue; /* emitted with its k_b */
            snprintf(vname, sizeof(vname), "%.*sattn_v_b.weight",
                     (int)(strlen(base) - strlen("attn_k_b.weight")), base);
            vi = ds_gguf_find(&s->g, vname);
            DS_FAIL_IF(scale, DS_ERR_UNSUPPORTED, "'%s': scaled '%s' is not supported", s->name,
                       ti->name);
            DS_FAIL_IF(vi < 0, DS_ERR_FORMAT, "'%s': '%s' has no matching '%s'", s->name,
                       ti->name, vname);
            {
                const struct ds_tensor_info *vb = &s->g.tensors[vi];
                DS_FAIL_IF(ti->n_dims != 3 || vb->n_dims != 3 || vb->type != ti->type ||
                               ti->ne[1] != vb->ne[0] || ti->ne[2] != vb->ne[2] ||
                               ds_type_block_size(ti->type) != 1,
                           DS_ERR_FORMAT, "'%s': '%s' and '%s' do not fit together", s->name,
                           ti->name, vname);
                DS_CHECK(add_lt(s, &t));
                snprintf(t->name, sizeof(t->name), "%s", hf);
                t->type = ti->type;
                t->kind = LK_KVB;
                t->raw = i;
                t->raw2 = (size_t)vi;
                t->kvb_nope = ti->ne[0];
                t->kvb_rank = ti->ne[1];
                t->kvb_heads = ti->ne[2];
                t->kvb_v = vb->ne[1];
                t->n_dims = 2;
                t->shape[0] = t->kvb_heads * (t->kvb_nope + t->kvb_v);
                t->shape[1] = t->kvb_rank;
                t->nbytes = ti->nbytes + vb->nbytes;
            }
            continue;
        }
        if (kind == M_EXPERT) {
            uint64_t slab;
            DS_FAIL_IF(ti->n_dims != 3 || ti->ne[2] <= 0, DS_ERR_FORMAT,
                       "'%s': stacked expert tensor '%s' is not 3-D", s->name, ti->name);
            slab = ti->nbytes / (uint64_t)ti->ne[2];
            for (int64_t e = 0; e < ti->ne[2]; e++) {
                DS_CHECK(add_lt(s, &t));
                snprintf(t->name, sizeof(t->name), "%s%lld.%s.weight%s", hf, (long long)e,
                         expert_proj[proj], scale ? SCALE_SUFFIX : "");
                t->type = ti->type;
                t->kind = LK_RAW;
                t->raw = i;
                t->off = (uint64_t)e * slab;
                t->n_dims = 2;
                t->shape[0] = ti->ne[1];
                t->shape[1] = ti->ne[0];
                t->nbytes = slab;
            }
            continue;
        }
        DS_CHECK(add_lt(s, &t));
        if (kind == M_NONE) {
            snprintf(t->name, sizeof(t->name), "%s", ti->name);
            t->passthrough = true;
        } else {
            snprintf(t->name, sizeof(t->name), "%s%s", hf, scale ? SCALE_SUFFIX : "");
        }
        t->type = ti->type;
        t->kind = LK_RAW;
        t->raw = i;
        t->n_dims = ti->n_dims;
        for (uint32_t d = 0; d < ti->n_dims; d++)
            t->shape[d] = ti->ne[ti->n_dims - 1 - d];
        t->nbytes = ti->nbytes;
    }
    DS_CHECK(link_scales(s));
out:
    free(order);
    return rc;
}

static ds_err open_source(struct source *s, const char *input)
{
    struct stat sb;
    struct ds_reader *r = NULL;
    unsigned char magic[4];
    size_t got = 0;
    ds_err rc;

    memset(s, 0, sizeof(*s));
    ds_st_init(&s->st);
    s->name = input && strcmp(input, "-") ? input : "<stdin>";
    if (input && strcmp(input, "-") && stat(input, &sb) == 0 && S_ISDIR(sb.st_mode))
        return open_hf(s, input);
    if (input && (ends_with(input, ".safetensors") || ends_with(input, ".safetensors.index.json")))
        return open_hf(s, input);
    rc = ds_reader_open(&r, input);
    if (rc != DS_OK)
        return rc;
    rc = ds_reader_peek(r, magic, 4, &got);
    if (rc == DS_OK && (got < 4 || memcmp(magic, DS_GGUF_MAGIC, 4))) {
        rc = ds_set_error(DS_ERR_FORMAT,
                          "'%s': not a GGUF file (bad magic); inputs are GGUF files or streams, "
                          "Hugging Face directories and .safetensors files",
                          s->name);
    }
    if (rc != DS_OK) {
        ds_reader_free(r);
        return rc;
    }
    return open_gguf(s, r);
}

/* ---- output types ---------------------------------------------------------------------- */

static bool keep_f32(const char *gguf_name, uint32_t n_dims)
{
    return n_dims <= 1 || strstr(gguf_name, "_norm") || strstr(gguf_name, "ffn_gate_inp") ||
           strstr(gguf_name, "exp_probs_b");
}

static bool is_float_type(enum ds_type t)
{
    return t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16 || t == DS_TYPE_F64 ||
           t == DS_TYPE_F8_E4M3;
}

/* Output type of logical tensor t in a GGUF (gguf = true) or safetensors sink. */
static enum ds_type out_type(const struct ltensor *t, int outtype, const char *gname, bool gguf)
{
    bool keep_fp8 = outtype == DS_TYPE_F8_E4M3;
    if (t->type == DS_TYPE_F8_E4M3) {
        if (keep_fp8)
            return DS_TYPE_F8_E4M3;
        if (outtype < 0)
            return gguf ? DS_TYPE_BF16 : DS_TYPE_F8_E4M3;
        return (enum ds_type)outtype;
    }
    if (t->is_scale || outtype < 0 || keep_fp8 || !is_float_type(t->type))
        return t->type;
    if (gguf && keep_f32(gname, t->n_dims))
        return DS_TYPE_F32;
    return (enum ds_type)outtype;
}

/* ---- producing output bytes --------------------------------------------------------- */

struct sink_io {
    struct ds_writer *w;
    uint64_t total, done;
    ds_progress_fn progress;
    void *ud;
    /* the output tensor being written */
    double err2, x2;       /* error sums (see struct ds_tensor_report) */
    const float *imp;      /* importance of its columns (per expert slab), or NULL */
    bool measure;          /* compute err2 and x2 (someone reads the report) */
    bool imp_error_only;   /* imp weights the error only, not the quantization */
    /* FP8 outputs quantized here: their tile scales, written as the next tensor */
    float *scales;
    size_t n_scales, cap_scales;
};

/* Quantizes nr rows of cols floats (nr a multiple of block, or the last
 * rows) to FP8 E4M3 in out, appending their tile scales to io->scales and the
 * squared error to io. */
static ds_err encode_fp8(struct sink_io *io, const float *f, uint64_t nr, uint64_t cols,
                         int64_t block, void *out)
{
    uint64_t ns = (nr + (uint64_t)block - 1) / (uint64_t)block *
                  ((cols + (uint64_t)block - 1) / (uint64_t)block);
    float *sc, *back = NULL;
    DS_TRY(ds_grow((void **)&io->scales, &io->cap_scales, io->n_scales + ns, sizeof(float)));
    sc = io->scales + io->n_scales;
    ds_fp8_quantize(out, sc, f, (int64_t)nr, (int64_t)cols, block);
    io->n_scales += ns;
    if (!io->measure)
        return DS_OK;
    back = ds_malloc(nr * cols * sizeof(float));
    if (!back)
        return DS_ERR_NOMEM;
    ds_fp8_dequant(back, out, sc, (int64_t)nr, (int64_t)cols, block);
    for (uint64_t i = 0; i < nr * cols; i++) {
        double w = io->imp ? io->imp[i % cols] : 1.0, d = (double)f[i] - back[i];
        io->err2 += w * d * d;
        io->x2 += w * (double)f[i] * f[i];
    }
    free(back);
    return DS_OK;
}

/* Encodes nr rows of cols floats as dst (a float or a block type) into out,
 * adding the squared error to io (weighted by io->imp when set). */
static ds_err encode_rows(struct sink_io *io, enum ds_type dst, const float *f, uint64_t nr,
                          uint64_t cols, void *out)
{
    size_t rowb = (size_t)(cols / (uint64_t)ds_type_block_size(dst)) * ds_type_block_bytes(dst);
    if (!ds_quant_supported(dst)) {
        float back[256];
        DS_TRY(ds_convert_row(dst, out, DS_TYPE_F32, f, nr * cols));
        if (!io->measure)
            return DS_OK;
        /* error of the narrowing, sampled exactly in chunks */
        for (uint64_t i = 0; dst != DS_TYPE_F32 && i < nr * cols; i += 256) {
            uint64_t k = nr * cols - i < 256 ? nr * cols - i : 256;
            DS_TRY(ds_convert_row(DS_TYPE_F32, back, dst,
                                  (const char *)out + i * ds_type_block_bytes(dst), k));
            for (uint64_t j = 0; j < k; j++) {
                double w = io->imp ? io->imp[(i + j) % cols] : 1.0, d = (double)f[i + j] - back[j];
                io->err2 += w * d * d;
                io->x2 += w * (double)f[i + j] * f[i + j];
            }
        }
        if (dst == DS_TYPE_F32)
            for (uint64_t i = 0; i < nr * cols; i++)
                io->x2 += (io->imp ? io->imp[i % cols] : 1.0) * (double)f[i] * f[i];
        return DS_OK;
    }
    /* rows are independent: quantize them in parallel, sum the errors */
    double err2 = 0, x2sum = 0;
    int failed = 0;
    const float *qimp = io->imp_error_only ? NULL : io->imp;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : err2, x2sum, failed) \
    if (nr * cols >= (1u << 16))
#endif
    for (uint64_t r = 0; r < nr; r++) {
        double e2 = 0, x2 = 0;
        void *q = (char *)out + r * rowb;
        if (ds_quantize_row(dst, f + r * cols, q, (int64_t)cols, qimp) != DS_OK ||
            (io->measure &&
             ds_quant_error(dst, f + r * cols, q, (int64_t)cols, io->imp, &e2, &x2) != DS_OK))
            failed++;
        err2 += e2;
        x2sum += x2;
    }
    DS_RETURN_IF(failed, DS_ERR_NOMEM, "quantizing %llu rows to %s failed",
                 (unsigned long long)nr, ds_type_name(dst));
    io->err2 += err2;
    io->x2 += x2sum;
    return DS_OK;
}

/* Writes logical tensor t converted to type dst, in bands of rows. */
static ds_err emit(struct source *s, struct sink_io *io, const struct ltensor *t,
                   enum ds_type dst, const char *what)
{
    ds_err rc = DS_OK;
    uint64_t rows = lt_rows(t), cols = (uint64_t)lt_cols(t);
    void *in = NULL, *outb = NULL;
    float *f = NULL;

    if (dst == t->type) {
        /* same type: copy bytes in bands */
        uint64_t rowb = rows ? t->nbytes / rows : 0, band;
        band = rowb ? (BAND_BYTES / rowb ? BAND_BYTES / rowb : 1) : 1;
        if (t->kind == LK_KVB)
            band = rows;
        in = ds_malloc(rowb * (band < rows ? band : rows));
        DS_FAIL_IF(!in, DS_ERR_NOMEM, "out of memory converting '%s'", t->name);
        for (uint64_t r0 = 0; r0 < rows; r0 += band) {
            uint64_t nr = rows - r0 < band ? rows - r0 : band;
            DS_CHECK(read_rows(s, t, r0, nr, in));
            DS_CHECK(ds_writer_write(io->w, in, nr * rowb));
        }
    } else {
        uint64_t band = BAND_BYTES / 4 / (cols ? cols : 1);
        int64_t b = s->fp8_block;
        bool src_ok = is_float_type(t->type) || ds_quant_supported(t->type);
        bool dst_ok = is_float_type(dst) || ds_quant_supported(dst);
        DS_FAIL_IF(!src_ok || !dst_ok, DS_ERR_UNSUPPORTED,
                   "'%s': tensor '%s' is %s; converting it to %s is not supported", s->name,
                   t->name, ds_type_name(t->type), ds_type_name(dst));
        if (band < (uint64_t)b)
            band = (uint64_t)b;
        band -= band % (uint64_t)b;
        if (t->kind == LK_KVB)
            band = rows;
        if (band > rows)
            band = rows;
        size_t rowb = (size_t)(cols / (uint64_t)ds_type_block_size(dst)) *
                      ds_type_block_bytes(dst);
        DS_FAIL_IF(cols % (uint64_t)ds_type_block_size(dst), DS_ERR_ARG,
                   "'%s': rows of '%s' (%llu) do not fit %s blocks", s->name, t->name,
                   (unsigned long long)cols, ds_type_name(dst));
        f = ds_malloc(band * cols * sizeof(float));
        outb = ds_malloc(band * rowb);
        DS_FAIL_IF(!f || !outb, DS_ERR_NOMEM, "out of memory converting '%s'", t->name);
        for (uint64_t r0 = 0; r0 < rows; r0 += band) {
            uint64_t nr = rows - r0 < band ? rows - r0 : band;
            DS_CHECK(read_rows_f32(s, t, r0, nr, f));
            if (dst == DS_TYPE_F8_E4M3)
                DS_CHECK(encode_fp8(io, f, nr, cols, b, outb));
            else
                DS_CHECK(encode_rows(io, dst, f, nr, cols, outb));
            DS_CHECK(ds_writer_write(io->w, outb, nr * rowb));
        }
    }
    if (io->progress) {
        io->done = ds_writer_tell(io->w);
        if (io->progress(io->ud, io->done, io->total, what))
            DS_FAIL_IF(1, DS_ERR_INTERRUPTED, "interrupted");
    }
out:
    free(in);
    free(f);
    free(outb);
    return rc;
}

/* ---- GGUF sink ---------------------------------------------------------------------------- */

enum gop { G_COPY, G_STACK, G_KB, G_VB, G_SCALE /* tile scales of the tensor before */ };

struct gout {
    enum gop op;
    long *src;          /* logical indices: 1, or one per expert */
    size_t n_src;
    enum ds_type type;
    char note[160];     /* from the type_of hook */
};

struct gplan {
    struct ds_gguf g;   /* header to write */
    struct gout *out;   /* parallel to g.tensors */
    size_t cap;
};

static void gplan_release(struct gplan *p)
{
    for (size_t i = 0; p->out && i < p->g.n_tensors; i++)
        free(p->out[i].src);
    free(p->out);
    ds_gguf_release(&p->g);
}

/* The type hook of ds-quantize, and its refusal to quantize quantized data. */
struct type_hook {
    const struct ds_convert_opts *o;
    const struct source *s;
    const char *note;
};

static ds_err hook_type(struct type_hook *h, const char *name, uint32_t n_dims, const int64_t *ne,
                        enum ds_type src_type, enum ds_type *type)
{
    h->note = NULL;
    if (!h->o || !h->o->type_of)
        return DS_OK;
    *type = h->o->type_of(h->o->type_ud, h->s->meta, name, n_dims, ne, *type, &h->note);
    DS_RETURN_IF(*type != src_type && ds_type_block_size(src_type) > 1 && !h->o->allow_requantize,
                 DS_ERR_UNSUPPORTED,
                 "'%s': tensor '%s' is already %s; quantizing it again loses quality "
                 "(--allow-requantize does it anyway)",
                 h->s->name, name, ds_type_name(src_type));
    DS_RETURN_IF(ds_type_block_size(*type) > 1 && ne[0] % ds_type_block_size(*type),
                 DS_ERR_ARG, "'%s': tensor '%s' rows of %lld do not fit %s blocks", h->s->name,
                 name, (long long)ne[0], ds_type_name(*type));
    return DS_OK;
}

static ds_err gplan_add(struct gplan *p, struct type_hook *h, const char *name, enum ds_type type,
                        enum ds_type src_type, uint32_t n_dims, const int64_t *ne, enum gop op,
                        long src, size_t n_src, size_t *idx)
{
    struct gout *o;
    DS_TRY(hook_type(h, name, n_dims, ne, src_type, &type));
    DS_RETURN_IF(type == DS_TYPE_F8_E4M3 && src_type != type && (op == G_KB || op == G_VB),
                 DS_ERR_UNSUPPORTED,
                 "'%s': '%s' cannot be fp8 (its tiles would cross heads); give attn_kv_b the "
                 "fp8 type instead, it then stays whole",
                 h->s->name, name);
    DS_TRY(ds_gguf_add_tensor(&p->g, name, type, n_dims, ne));
    DS_TRY(ds_grow((void **)&p->out, &p->cap, p->g.n_tensors, sizeof(*p->out)));
    o = &p->out[p->g.n_tensors - 1];
    memset(o, 0, sizeof(*o));
    o->op = op;
    o->type = type;
    if (h && h->note)
        snprintf(o->note, sizeof(o->note), "%s", h->note);
    o->n_src = n_src;
    o->src = ds_calloc(n_src, sizeof(long));
    if (!o->src)
        return DS_ERR_NOMEM;
    for (size_t k = 0; k < n_src; k++)
        o->src[k] = -1;
    o->src[0] = src;
    *idx = p->g.n_tensors - 1;
    return DS_OK;
}

/* Plans "<name>_scale_inv" (F32) right after output tensor w when, and only
 * when, w is FP8: a scale never stands on its own. When w is FP8 copied from
 * FP8 (src_type), its scales are copied too: src is the weight's scale
 * companion, or for an expert stack each expert's (filled in with the
 * experts); otherwise they are the tile scales computed while w is written. */
static ds_err gplan_add_scale(struct gplan *p, const struct source *s, size_t w,
                              enum ds_type src_type, long src)
{
    struct type_hook none = {0};
    const struct ds_tensor_info *ti = &p->g.tensors[w];
    char name[DS_GGUF_MAX_NAME + 32];
    int64_t b = s->fp8_block;
    int64_t ne[3] = {(ti->ne[0] + b - 1) / b, (ti->ne[1] + b - 1) / b, ti->ne[2]};
    uint32_t n_dims = ti->n_dims;
    enum gop op = src_type != DS_TYPE_F8_E4M3 ? G_SCALE
                  : p->out[w].op == G_STACK  ? G_STACK
                                             : G_COPY;
    size_t n_src = op == G_STACK ? p->out[w].n_src : 1, idx;
    if (ti->type != DS_TYPE_F8_E4M3)
        return DS_OK;
    snprintf(name, sizeof(name), "%s%s", ti->name, SCALE_SUFFIX);
    DS_RETURN_IF(strlen(name) >= DS_GGUF_MAX_NAME, DS_ERR_LIMIT,
                 "GGUF name '%s' is longer than 63 bytes", name);
    DS_RETURN_IF(op == G_COPY && src < 0, DS_ERR_STATE, "internal: '%s' has no source", name);
    return gplan_add(p, &none, name, DS_TYPE_F32, DS_TYPE_F32, n_dims, ne, op,
                     op == G_SCALE ? (long)w : src, n_src, &idx);
}

/* True when kv_b (GGUF name whole, ggml shape ne, planned type planned) is
 * written FP8, by the type hook of ds-quantize or as planned: then it is kept
 * whole, as FP8 checkpoints keep it (its 128-row scale tiles cannot be split
 * per head); otherwise llama.cpp's k_b/v_b split. */
static bool kvb_stays_fp8(const struct type_hook *h, const char *whole, const int64_t *ne,
                          enum ds_type planned)
{
    const char *note = NULL;
    if (!h->o || !h->o->type_of)
        return planned == DS_TYPE_F8_E4M3;
    return h->o->type_of(h->o->type_ud, h->s->meta, whole, 2, ne, planned, &note) ==
           DS_TYPE_F8_E4M3;
}

static int file_type_of(int outtype)
{
    switch (outtype) {
    case DS_TYPE_F32: return 0;
    case DS_TYPE_F16: return 1;
    case DS_TYPE_BF16: return 32;
    default: return -1;
    }
}

static ds_err append_provenance(struct ds_meta *m, const char *prov)
{
    long i = ds_meta_find(m, "dskit.provenance");
    enum ds_vtype et;
    uint64_t n = 0;
    const char **strs = NULL;
    ds_err rc;

    if (!prov)
        return DS_OK;
    if (i >= 0 && (!ds_meta_arr(m, (size_t)i, &et, &n) || et != DS_V_STR))
        n = 0, i = -1;
    strs = ds_calloc(n + 1, sizeof(*strs));
    if (!strs)
        return DS_ERR_NOMEM;
    for (uint64_t j = 0; j < n; j++) {
        size_t len;
        strs[j] = ds_meta_arr_str(m, (size_t)i, j, &len);
    }
    strs[n] = prov;
    rc = ds_meta_set_str_arr(m, "dskit.provenance", n + 1, strs, NULL);
    free(strs);
    return rc;
}

static ds_err plan_gguf(struct source *s, int outtype, const char *prov,
                        const struct ds_convert_opts *opts, struct gplan *p)
{
    ds_err rc = DS_OK;
    struct type_hook hook = {.o = opts, .s = s};
    bool any_block = false;
    /* "as stored": a GGUF that keeps FP8 stays FP8; Hugging Face FP8 becomes BF16 */
    bool keep_fp8 = outtype == DS_TYPE_F8_E4M3 || (outtype < 0 && s->fmt == DS_FORMAT_GGUF);
    int64_t n_expert = 0;
    enum ds_type common = DS_TYPE_F32;
    bool any_fp8 = false, out_fp8 = false; /* FP8 in the input, in the output */

    DS_CHECK(ds_gguf_init(&p->g));
    ds_meta_free(p->g.meta);
    p->g.meta = ds_meta_dup(s->meta);
    DS_FAIL_IF(!p->g.meta, DS_ERR_NOMEM, "out of memory");
    if (!ds_meta_get_int(s->meta, "deepseek2.expert_count", &n_expert))
        n_expert = 0;

    for (size_t i = 0; i < s->n_lt; i++) {
        const struct ltensor *t = &s->lt[i];
        char gname[DS_GGUF_MAX_NAME + 32];
        long expert = 0, existing;
        enum map_kind kind;
        enum ds_type ty;
        size_t idx;
        int64_t ne[DS_MAX_DIMS] = {1, 1, 1, 1};
        int eff = keep_fp8 ? (int)DS_TYPE_F8_E4M3 : outtype;

        /* a scale is planned with its weight, and only when that stays FP8 */
        if (t->is_scale)
            continue;
        if (t->passthrough) {
            const struct ds_tensor_info *ti = &s->g.tensors[t->raw];
            ty = out_type(t, eff, ti->name, true);
            DS_CHECK(gplan_add(p, &hook, ti->name, ty, t->type, ti->n_dims, ti->ne, G_COPY,
                               (long)i, 1, &idx));
            if (ti->n_dims >= 2)
                DS_CHECK(gplan_add_scale(p, s, idx, t->type, t->scale));
            continue;
        }
        kind = hf_to_gguf(t->name, true, gname, sizeof(gname), &expert);
        if (kind == M_KVB && t->n_dims == 2) {
            char whole[DS_GGUF_MAX_NAME + 32];
            int64_t wne[2] = {t->shape[1], t->shape[0]};
            if (hf_to_gguf(t->name, false, whole, sizeof(whole), &expert) == M_PLAIN &&
                kvb_stays_fp8(&hook, whole, wne, out_type(t, eff, whole, true))) {
                kind = M_PLAIN;
                snprintf(gname, sizeof(gname), "%s", whole);
            }
        }
        DS_FAIL_IF(kind == M_NONE, DS_ERR_UNSUPPORTED,
                   "'%s': tensor '%s' has no GGUF (deepseek2) name", s->name, t->name);
        DS_FAIL_IF(strlen(gname) >= DS_GGUF_MAX_NAME, DS_ERR_LIMIT,
                   "'%s': GGUF name '%s' is longer than 63 bytes", s->name, gname);
        ty = out_type(t, eff, gname, true);
        if (t->type == DS_TYPE_F8_E4M3)
            any_fp8 = true;
        if (kind == M_PLAIN) {
            DS_FAIL_IF(t->n_dims < 1 || t->n_dims > DS_MAX_DIMS, DS_ERR_UNSUPPORTED,
                       "'%s': tensor '%s' has %u dimensions", s->name, t->name, t->n_dims);
            for (uint32_t d = 0; d < t->n_dims; d++)
                ne[d] = t->shape[t->n_dims - 1 - d];
            DS_CHECK(gplan_add(p, &hook, gname, ty, t->type, t->n_dims, ne, G_COPY, (long)i, 1,
                               &idx));
            if (ty != DS_TYPE_F32 && t->n_dims >= 2)
                common = ty;
            if (t->n_dims >= 2)
                DS_CHECK(gplan_add_scale(p, s, idx, t->type, t->scale));
        } else if (kind == M_KVB) {
            int64_t H = 0, nope = 0, v = 0, rope = 0, R = t->shape[1];
            char kname[DS_GGUF_MAX_NAME + 32], vname[DS_GGUF_MAX_NAME + 32];
            DS_FAIL_IF(!ds_meta_get_int(s->meta, "deepseek2.attention.head_count", &H) ||
                           !ds_meta_get_int(s->meta, "deepseek2.attention.key_length_mla",
                                            &nope) ||
                           !ds_meta_get_int(s->meta, "deepseek2.attention.value_length_mla", &v) ||
                           !ds_meta_get_int(s->meta, "deepseek2.rope.dimension_count", &rope),
                       DS_ERR_FORMAT, "'%s': missing attention sizes to split '%s'", s->name,
                       t->name);
            nope -= rope;
            DS_FAIL_IF(t->n_dims != 2 || H <= 0 || nope <= 0 || v <= 0 ||
                           t->shape[0] != H * (nope + v),
                       DS_ERR_FORMAT, "'%s': '%s' is [%lld, %lld], expected [%lld, %lld]",
                       s->name, t->name, (long long)t->shape[0], (long long)t->shape[1],
                       (long long)(H * (nope + v)), (long long)R);
            snprintf(kname, sizeof(kname), "%s.attn_k_b.weight", gname);
            snprintf(vname, sizeof(vname), "%s.attn_v_b.weight", gname);
            /* k_b/v_b cannot be FP8: an FP8 kv_b that is split is planned as
             * BF16 (the hook chose another type for it whole) */
            if (ty == DS_TYPE_F8_E4M3)
                ty = DS_TYPE_BF16;
            {
                int64_t kne[3] = {nope, R, H}, vne[3] = {R, v, H};
                DS_CHECK(gplan_add(p, &hook, kname, ty, t->type, 3, kne, G_KB, (long)i, 1, &idx));
                DS_CHECK(gplan_add(p, &hook, vname, ty, t->type, 3, vne, G_VB, (long)i, 1, &idx));
            }
        } else { /* M_EXPERT */
            DS_FAIL_IF(n_expert <= 0 || expert >= n_expert, DS_ERR_FORMAT,
                       "'%s': expert tensor '%s' out of range (expert_count %lld)", s->name,
                       t->name, (long long)n_expert);
            DS_FAIL_IF(t->n_dims != 2, DS_ERR_FORMAT, "'%s': expert tensor '%s' is not 2-D",
                       s->name, t->name);
            existing = ds_gguf_find(&p->g, gname);
            if (existing < 0) {
                int64_t sne[3] = {t->shape[1], t->shape[0], n_expert};
                DS_CHECK(gplan_add(p, &hook, gname, ty, t->type, 3, sne, G_STACK, -1,
                                   (size_t)n_expert, &idx));
                existing = (long)idx;
                if (ty != DS_TYPE_F32)
                    common = ty;
                DS_CHECK(gplan_add_scale(p, s, idx, t->type, -1));
            }
            {
                struct gout *o = &p->out[existing];
                const struct ds_tensor_info *ti = &p->g.tensors[existing];
                long first = -1;
                for (size_t k = 0; first < 0 && k < o->n_src; k++)
                    first = o->src[k];
                DS_FAIL_IF(o->src[expert] >= 0, DS_ERR_FORMAT, "'%s': duplicate expert '%s'",
                           s->name, t->name);
                DS_FAIL_IF(ti->ne[0] != t->shape[1] || ti->ne[1] != t->shape[0] ||
                               (first >= 0 && s->lt[first].type != t->type),
                           DS_ERR_FORMAT, "'%s': expert '%s' differs in shape or type from expert 0",
                           s->name, t->name);
                o->src[expert] = (long)i;
                /* its scales, copied into the stack planned right after it */
                if (o->type == DS_TYPE_F8_E4M3 && t->type == DS_TYPE_F8_E4M3)
                    p->out[existing + 1].src[expert] = t->scale;
            }
        }
    }
    for (size_t i = 0; i < p->g.n_tensors; i++) {
        if (p->g.tensors[i].type == DS_TYPE_F8_E4M3)
            out_fp8 = true;
        for (size_t k = 0; p->out[i].op != G_SCALE && k < p->out[i].n_src; k++)
            DS_FAIL_IF(p->out[i].src[k] < 0, DS_ERR_FORMAT,
                       "'%s': '%s' is missing expert %zu", s->name, p->g.tensors[i].name, k);
    }

    /* metadata */
    {
        int ft = file_type_of(outtype < 0 || keep_fp8 ? (int)common : outtype);
        if (out_fp8) {
            ds_meta_remove(p->g.meta, "general.file_type");
            DS_CHECK(ds_meta_set_u32(p->g.meta, "dskit.fp8.block_size", (uint32_t)s->fp8_block));
        } else {
            ds_meta_remove(p->g.meta, "dskit.fp8.block_size");
            if (ft >= 0)
                DS_CHECK(ds_meta_set_u32(p->g.meta, "general.file_type", (uint32_t)ft));
        }
        if (outtype < 0 && any_fp8 && !keep_fp8)
            DS_CHECK(ds_meta_set_u32(p->g.meta, "general.file_type", 32));
        if (opts && opts->file_type > 0)
            DS_CHECK(ds_meta_set_u32(p->g.meta, "general.file_type", (uint32_t)opts->file_type));
        for (size_t i = 0; i < p->g.n_tensors; i++)
            if (ds_type_block_size(p->g.tensors[i].type) > 1)
                any_block = true;
        if (any_block)
            DS_CHECK(ds_meta_set_u32(p->g.meta, "general.quantization_version", 2));
        else
            ds_meta_remove(p->g.meta, "general.quantization_version");
        DS_CHECK(append_provenance(p->g.meta, prov));
    }
    DS_CHECK(ds_gguf_layout(&p->g));
out:
    return rc;
}

/* k_b {nope, R, H} or v_b {R, v, H} from kv_b [H*(nope+v), R] */
static ds_err emit_kvb_part(struct source *s, struct sink_io *io, const struct ltensor *t,
                            const struct ds_tensor_info *ti, enum gop op)
{
    ds_err rc = DS_OK;
    uint64_t rows = lt_rows(t), cols = (uint64_t)lt_cols(t);
    int64_t H = ti->ne[2], nope, v, R = (int64_t)cols;
    float *kv = ds_malloc(rows * cols * sizeof(float));
    float *part = ds_malloc(ti->ne[0] * ti->ne[1] * H * sizeof(float));
    void *outb = ds_malloc(ti->nbytes);

    DS_FAIL_IF(!kv || !part || !outb, DS_ERR_NOMEM, "out of memory splitting '%s'", t->name);
    DS_CHECK(read_rows_f32(s, t, 0, rows, kv));
    if (op == G_KB) {
        nope = ti->ne[0];
        v = (int64_t)rows / H - nope;
        for (int64_t h = 0; h < H; h++)
            for (int64_t c = 0; c < R; c++)
                for (int64_t d = 0; d < nope; d++)
                    part[(h * R + c) * nope + d] = kv[(h * (nope + v) + d) * R + c];
    } else {
        v = ti->ne[1];
        nope = (int64_t)rows / H - v;
        for (int64_t h = 0; h < H; h++)
            memcpy(part + h * v * R, kv + (h * (nope + v) + nope) * R,
                   (size_t)(v * R) * sizeof(float));
    }
    DS_CHECK(encode_rows(io, ti->type, part, (uint64_t)(ti->ne[1] * ti->ne[2]),
                         (uint64_t)ti->ne[0], outb));
    DS_CHECK(ds_writer_write(io->w, outb, ti->nbytes));
out:
    free(kv);
    free(part);
    free(outb);
    return rc;
}

static ds_err write_gguf(struct source *s, struct gplan *p, struct sink_io *io,
                         const struct ds_convert_opts *opts)
{
    DS_TRY(ds_gguf_write_header(io->w, &p->g));
    io->total = p->g.data_offset + p->g.data_size;
    for (size_t i = 0; i < p->g.n_tensors; i++) {
        const struct ds_tensor_info *ti = &p->g.tensors[i];
        const struct gout *o = &p->out[i];
        uint64_t start = p->g.data_offset + ti->offset;
        DS_RETURN_IF(ds_writer_tell(io->w) != start, DS_ERR_STATE,
                     "internal: tensor '%s' at %llu, expected %llu", ti->name,
                     (unsigned long long)ds_writer_tell(io->w), (unsigned long long)start);
        const float *imp = NULL;
        io->err2 = io->x2 = 0;
        io->imp = NULL;
        if (o->op != G_SCALE)
            io->n_scales = 0;
        if (opts->importance && (o->op == G_COPY || o->op == G_STACK))
            imp = opts->importance(opts->importance_ud, ti->name,
                                   ti->ne[0] * (o->op == G_STACK ? ti->ne[2] : 1));
        switch (o->op) {
        case G_COPY:
            io->imp = imp;
            DS_TRY(emit(s, io, &s->lt[o->src[0]], o->type, ti->name));
            break;
        case G_STACK:
            for (size_t k = 0; k < o->n_src; k++) {
                io->imp = imp ? imp + k * (size_t)ti->ne[0] : NULL;
                DS_TRY(emit(s, io, &s->lt[o->src[k]], o->type, ti->name));
            }
            break;
        case G_KB:
        case G_VB:
            DS_TRY(emit_kvb_part(s, io, &s->lt[o->src[0]], ti, o->op));
            break;
        case G_SCALE:
            DS_RETURN_IF(io->n_scales * sizeof(float) != ti->nbytes, DS_ERR_STATE,
                         "internal: '%s' has %zu scales", ti->name, io->n_scales);
            DS_TRY(ds_writer_write(io->w, io->scales, ti->nbytes));
            break;
        }
        if (opts->on_tensor) {
            const struct ltensor *first =
                &s->lt[o->op == G_SCALE ? p->out[o->src[0]].src[0] : o->src[0]];
            struct ds_tensor_report rep = {
                .name = ti->name, .type = ti->type, .source_type = first->type,
                .n_elements = 1, .bytes = ti->nbytes, .sum_err2 = io->err2, .sum_x2 = io->x2,
                .weighted = imp != NULL, .note = o->note[0] ? o->note : NULL};
            for (uint32_t d = 0; d < ti->n_dims; d++)
                rep.n_elements *= (uint64_t)ti->ne[d];
            opts->on_tensor(opts->report_ud, &rep);
        }
        DS_RETURN_IF(ds_writer_tell(io->w) != start + ti->nbytes, DS_ERR_STATE,
                     "internal: tensor '%s' wrote %llu bytes, expected %llu", ti->name,
                     (unsigned long long)(ds_writer_tell(io->w) - start),
                     (unsigned long long)ti->nbytes);
        {
            uint64_t padded = (ti->nbytes + p->g.alignment - 1) / p->g.alignment * p->g.alignment;
            DS_TRY(ds_writer_zero(io->w, padded - ti->nbytes));
        }
    }
    return DS_OK;
}

/* ---- safetensors sink --------------------------------------------------------------------- */

struct hout {
    long src;
    enum ds_type type;
    uint64_t nbytes;
};

static const char *torch_dtype_of(enum ds_type t)
{
    switch (t) {
    case DS_TYPE_F32: return "float32";
    case DS_TYPE_F16: return "float16";
    case DS_TYPE_F8_E4M3:
    case DS_TYPE_BF16: return "bfloat16";
    default: return "float32";
    }
}

static ds_err write_text(const char *dir, const char *base, const char *text)
{
    char path[4200];
    struct ds_writer *w = NULL;
    ds_err rc = DS_OK;
    snprintf(path, sizeof(path), "%s/%s", dir, base);
    DS_CHECK(ds_writer_open(&w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0));
    DS_CHECK(ds_writer_write(w, text, strlen(text)));
    DS_CHECK(ds_writer_write(w, "\n", 1));
    DS_CHECK(ds_writer_commit(w));
out:
    ds_writer_free(w);
    return rc;
}

static ds_err convert_to_safetensors(struct source *s, const struct ds_convert_opts *o,
                                     struct ds_convert_stats *stats)
{
    ds_err rc = DS_OK;
    struct ds_outdir *d = NULL;
    struct hout *outs = NULL;
    struct ds_st_tensor *sts = NULL;
    size_t n = 0, *shard_of = NULL, n_shards = 0;
    uint64_t limit = o->shard_size ? o->shard_size : 5000000000ull, total = 0, cur = 0;
    bool any_fp8 = false;
    enum ds_type common = DS_TYPE_F32;
    char *config = NULL, *tok = NULL, *tokcfg = NULL;
    const char **names = NULL, **files = NULL;
    char (*fname)[64] = NULL;
    struct sink_io io = {.progress = o->progress, .ud = o->progress_ud};

    outs = ds_calloc(s->n_lt ? s->n_lt : 1, sizeof(*outs));
    sts = ds_calloc(s->n_lt ? s->n_lt : 1, sizeof(*sts));
    shard_of = ds_calloc(s->n_lt ? s->n_lt : 1, sizeof(*shard_of));
    DS_FAIL_IF(!outs || !sts || !shard_of, DS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < s->n_lt; i++) {
        const struct ltensor *t = &s->lt[i];
        enum ds_type ty = out_type(t, o->outtype, t->name, false);
        DS_FAIL_IF(t->passthrough, DS_ERR_UNSUPPORTED,
                   "'%s': tensor '%s' has no Hugging Face name", s->name, t->name);
        if (t->is_scale && o->outtype >= 0 && o->outtype != DS_TYPE_F8_E4M3)
            continue; /* FP8 dequantized: its scale goes away */
        DS_FAIL_IF(!ds_st_dtype_name(ty), DS_ERR_UNSUPPORTED,
                   "'%s': tensor '%s' is %s, which safetensors cannot hold (dequantize first)",
                   s->name, t->name, ds_type_name(ty));
        if (ty == DS_TYPE_F8_E4M3)
            any_fp8 = true;
        else if (!t->is_scale && t->n_dims >= 2)
            common = ty;
        outs[n].src = (long)i;
        outs[n].type = ty;
        outs[n].nbytes = t->nbytes / ds_type_block_bytes(t->type) * ds_type_block_bytes(ty);
        if (cur && cur + outs[n].nbytes > limit) {
            n_shards++;
            cur = 0;
        }
        shard_of[n] = n_shards;
        cur += outs[n].nbytes;
        total += outs[n].nbytes;
        n++;
    }
    n_shards++;
    fname = ds_calloc(n_shards, sizeof(*fname));
    DS_FAIL_IF(!fname, DS_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < n_shards; k++)
        if (n_shards == 1)
            snprintf(fname[k], sizeof(fname[k]), "model.safetensors");
        else
            snprintf(fname[k], sizeof(fname[k]), "model-%05zu-of-%05zu.safetensors", k + 1,
                     n_shards);

    /* types as stored keep the original torch_dtype (when the metadata has it) */
    DS_CHECK(ds_hf_meta_to_config(s->meta,
                                  o->outtype < 0 || o->outtype == DS_TYPE_F8_E4M3
                                      ? NULL
                                      : torch_dtype_of(any_fp8 ? DS_TYPE_BF16 : common),
                                  any_fp8, &config));
    rc = ds_hf_meta_to_tokenizer(s->meta, &tok, &tokcfg);
    if (rc == DS_ERR_NOT_FOUND)
        rc = DS_OK;
    DS_CHECK(rc);

    DS_CHECK(ds_outdir_open(&d, o->output, o->write_flags & DS_WRITE_FORCE));
    io.total = total;
    for (size_t k = 0, first = 0; k < n_shards; k++) {
        char path[4200];
        size_t cnt = 0;
        while (first + cnt < n && shard_of[first + cnt] == k)
            cnt++;
        for (size_t j = 0; j < cnt; j++) {
            const struct ltensor *t = &s->lt[outs[first + j].src];
            struct ds_st_tensor *st = &sts[first + j];
            st->name = (char *)t->name;
            st->type = outs[first + j].type;
            st->n_dims = t->n_dims;
            memcpy(st->shape, t->shape, sizeof(st->shape));
        }
        snprintf(path, sizeof(path), "%s/%s", ds_outdir_tmp(d), fname[k]);
        DS_CHECK(ds_writer_open(&io.w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0));
        DS_CHECK(ds_st_write_header(io.w, sts + first, cnt, NULL, 0));
        for (size_t j = 0; j < cnt; j++)
            DS_CHECK(emit(s, &io, &s->lt[outs[first + j].src], outs[first + j].type,
                          s->lt[outs[first + j].src].name));
        DS_CHECK(ds_writer_commit(io.w));
        stats->bytes_out += ds_writer_tell(io.w);
        ds_writer_free(io.w);
        io.w = NULL;
        first += cnt;
    }
    stats->n_tensors_out = n;
    if (n_shards > 1) {
        char path[4200];
        names = ds_calloc(n, sizeof(*names));
        files = ds_calloc(n, sizeof(*files));
        DS_FAIL_IF(!names || !files, DS_ERR_NOMEM, "out of memory");
        for (size_t j = 0; j < n; j++) {
            names[j] = s->lt[outs[j].src].name;
            files[j] = fname[shard_of[j]];
        }
        snprintf(path, sizeof(path), "%s/model.safetensors.index.json", ds_outdir_tmp(d));
        DS_CHECK(ds_writer_open(&io.w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0));
        DS_CHECK(ds_st_write_index(io.w, total, names, files, n));
        DS_CHECK(ds_writer_commit(io.w));
        ds_writer_free(io.w);
        io.w = NULL;
    }
    DS_CHECK(write_text(ds_outdir_tmp(d), "config.json", config));
    if (tok)
        DS_CHECK(write_text(ds_outdir_tmp(d), "tokenizer.json", tok));
    if (tokcfg)
        DS_CHECK(write_text(ds_outdir_tmp(d), "tokenizer_config.json", tokcfg));
    DS_CHECK(ds_outdir_commit(d));
out:
    ds_writer_free(io.w);
    ds_outdir_free(d);
    free(outs);
    free(sts);
    free(shard_of);
    free(fname);
    free(names);
    free(files);
    free(config);
    free(tok);
    free(tokcfg);
    return rc;
}

/* ---- entry points ------------------------------------------------------------------------------ */

ds_err ds_convert(const struct ds_convert_opts *o, struct ds_convert_stats *stats)
{
    struct source s;
    struct gplan p;
    struct ds_convert_stats dummy;
    struct sink_io io = {.progress = o->progress, .ud = o->progress_ud,
                         .measure = o->on_tensor != NULL,
                         .imp_error_only = o->importance_error_only};
    ds_err rc;

    memset(&p, 0, sizeof(p));
    if (!stats)
        stats = &dummy;
    memset(stats, 0, sizeof(*stats));
    DS_RETURN_IF(o->outtype >= 0 && o->outtype != DS_TYPE_F32 && o->outtype != DS_TYPE_F16 &&
                     o->outtype != DS_TYPE_BF16 && o->outtype != DS_TYPE_F8_E4M3,
                 DS_ERR_ARG, "output type %s is not supported by ds-convert",
                 ds_type_name((enum ds_type)o->outtype));
    rc = open_source(&s, o->input);
    if (rc != DS_OK)
        goto out;
    if (o->to == DS_FORMAT_SAFETENSORS) {
        DS_FAIL_IF(!o->output || !strcmp(o->output, "-"), DS_ERR_ARG,
                   "safetensors output is a directory; stdout is not possible");
        rc = convert_to_safetensors(&s, o, stats);
        goto out;
    }
    DS_CHECK(plan_gguf(&s, o->outtype, o->provenance, o, &p));
    DS_CHECK(ds_writer_open(&io.w, o->output, o->write_flags, o->zstd_level, o->threads));
    DS_CHECK(write_gguf(&s, &p, &io, o));
    DS_CHECK(ds_writer_commit(io.w));
    stats->bytes_out = ds_writer_tell(io.w);
    stats->n_tensors_out = p.g.n_tensors;
out:
    stats->bytes_in = s.bytes_in;
    ds_writer_free(io.w);
    free(io.scales);
    gplan_release(&p);
    source_release(&s);
    return rc;
}

ds_err ds_convert_inspect(const char *input, int outtype, struct ds_gguf *g, enum ds_format *fmt)
{
    struct source s;
    struct gplan p;
    ds_err rc;

    memset(&p, 0, sizeof(p));
    rc = open_source(&s, input);
    if (rc != DS_OK)
        goto out;
    *fmt = s.fmt;
    if (s.fmt == DS_FORMAT_GGUF) {
        ds_gguf_release(g);
        *g = s.g;
        memset(&s.g, 0, sizeof(s.g));
        goto out;
    }
    DS_CHECK(plan_gguf(&s, outtype, NULL, NULL, &p));
    ds_gguf_release(g);
    *g = p.g;
    for (size_t i = 0; i < p.g.n_tensors; i++)
        free(p.out[i].src);
    free(p.out);
    memset(&p, 0, sizeof(p));
out:
    gplan_release(&p);
    source_release(&s);
    return rc;
}

bool ds_gguf_llama_loadable(const struct ds_gguf *g, const char **why)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (!ds_type_llama_loadable(g->tensors[i].type)) {
            if (why)
                *why = g->tensors[i].name;
            return false;
        }
    return true;
}
