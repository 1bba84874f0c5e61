/*
 * hf.c - Hugging Face config.json, tokenizer.json and tokenizer_config.json
 * <-> GGUF metadata with llama.cpp's deepseek2 keys.
 *
 * Config: every field llama.cpp has a key for is written under deepseek2.*
 * with the types its gguf writer uses (u32 counts, f32 floats). A float whose
 * f32 is not exact also gets an f64 twin under dskit.hf.<field>, so that the
 * rebuilt config.json has the very same numbers. Fields llama.cpp has no key
 * for live under dskit.hf.*; top-level fields dskit does not interpret
 * (hidden_act, num_key_value_heads, ...) are kept verbatim as compact JSON in
 * dskit.hf.config_extra, and so are unknown rope_scaling fields (including
 * "type" / "rope_type") in dskit.hf.rope_scaling.extra.
 *
 * Tokenizer: byte-level BPE only. The pre-tokenizer is recognised by its
 * Split regexes (deepseek-v3, deepseek-llm, deepseek-coder). Token types
 * follow llama.cpp's converter: NORMAL, CONTROL for special added tokens (or
 * ones that look special), USER_DEFINED for other added tokens, UNUSED for the
 * "[PAD<i>]" tokens that fill id gaps.
 *
 * JSON is read with cJSON and written by a small streaming writer (2-space
 * indentation, floats printed as Python's repr would).
 */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_hf.h"
#include "error_impl.h"
#include "json_impl.h"
#include "pretok_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

#define ARCH "deepseek2"
#define KA(s) "deepseek2." s

/* Integers read from config.json must be below this. */
#define INT_CAP 2147483648.0
/* Floats read from config.json must be below this in magnitude. */
#define FLOAT_CAP 1e30
/* Largest token id + 1 accepted from a tokenizer. */
#define MAX_VOCAB ((int64_t)1 << 22)


/* ======================================================================== */
/* JSON writer                                                              */
/* ======================================================================== */

/* A pretty-printing writer over a ds_sbuf: json.dumps(indent=2) layout. */
struct jw {
    struct ds_sbuf b;
    int depth;
    bool after_key;
    uint64_t nonempty; /* bit d-1: container at depth d has an element */
};

static void jw_newline(struct jw *w)
{
    static const char sp[] = "\n                                ";
    int k = 2 * w->depth;
    ds_sbuf_put(&w->b, sp, 1);
    while (k > 0) {
        int c = k < 32 ? k : 32;
        ds_sbuf_put(&w->b, sp + 1, (size_t)c);
        k -= c;
    }
}

/* Separator and indentation before a value or key. */
static void jw_elem(struct jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth == 0 || w->depth > 64)
        return;
    uint64_t bit = (uint64_t)1 << (w->depth - 1);
    if (w->nonempty & bit)
        ds_sbuf_put(&w->b, ",", 1);
    w->nonempty |= bit;
    jw_newline(w);
}

static void jw_open(struct jw *w, char c)
{
    jw_elem(w);
    ds_sbuf_put(&w->b, &c, 1);
    w->depth++;
    if (w->depth > 64) {
        if (!w->b.err)
            w->b.err = ds_set_error(DS_ERR_LIMIT, "JSON nested too deeply");
        return;
    }
    w->nonempty &= ~((uint64_t)1 << (w->depth - 1));
}

static void jw_close(struct jw *w, char c)
{
    assert(w->depth > 0);
    bool ne = w->depth <= 64 && (w->nonempty & ((uint64_t)1 << (w->depth - 1)));
    w->depth--;
    if (ne)
        jw_newline(w);
    ds_sbuf_put(&w->b, &c, 1);
}

static void jw_keyn(struct jw *w, const char *k, size_t len)
{
    jw_elem(w);
    ds_sbuf_json_string(&w->b, k, len, 0);
    ds_sbuf_put(&w->b, ": ", 2);
    w->after_key = true;
}

static void jw_key(struct jw *w, const char *k)
{
    jw_keyn(w, k, strlen(k));
}

static void jw_strn(struct jw *w, const char *s, size_t len)
{
    jw_elem(w);
    ds_sbuf_json_string(&w->b, s, len, 0);
}

static void jw_str(struct jw *w, const char *s)
{
    jw_strn(w, s, strlen(s));
}

static void jw_raw(struct jw *w, const char *s)
{
    jw_elem(w);
    ds_sbuf_puts(&w->b, s);
}

static void jw_int(struct jw *w, int64_t v)
{
    jw_elem(w);
    ds_sbuf_printf(&w->b, "%lld", (long long)v);
}

static void jw_bool(struct jw *w, bool v)
{
    jw_raw(w, v ? "true" : "false");
}

static void jw_null(struct jw *w)
{
    jw_raw(w, "null");
}

/* Shortest decimal that reads back as v, laid out as Python's repr() does:
 * fixed notation for exponents -4..15 (always with a '.'), otherwise
 * d.ddde+XX. */
static void fmt_float(double v, char *out, size_t cap)
{
    char e[48], dig[24], b[64];
    const char *s;
    int p, exp10, nd = 0;
    size_t k = 0;

    if (!isfinite(v)) {
        snprintf(out, cap, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == 0) {
        snprintf(out, cap, "%s", signbit(v) ? "-0.0" : "0.0");
        return;
    }
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof(e), "%.*e", p - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    s = e;
    if (*s == '-') {
        b[k++] = '-';
        s++;
    }
    for (; *s && *s != 'e' && nd < 20; s++)
        if (*s >= '0' && *s <= '9')
            dig[nd++] = *s;
    exp10 = *s == 'e' ? (int)strtol(s + 1, NULL, 10) : 0;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++)
                b[k++] = i < nd ? dig[i] : '0';
            b[k++] = '.';
            if (nd > exp10 + 1)
                for (int i = exp10 + 1; i < nd; i++)
                    b[k++] = dig[i];
            else
                b[k++] = '0';
        } else {
            b[k++] = '0';
            b[k++] = '.';
            for (int i = 0; i < -exp10 - 1; i++)
                b[k++] = '0';
            for (int i = 0; i < nd; i++)
                b[k++] = dig[i];
        }
        b[k] = '\0';
        snprintf(out, cap, "%s", b);
    } else {
        b[k++] = dig[0];
        if (nd > 1) {
            b[k++] = '.';
            for (int i = 1; i < nd; i++)
                b[k++] = dig[i];
        }
        b[k] = '\0';
        snprintf(out, cap, "%se%c%02d", b, exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

static void jw_float(struct jw *w, double v)
{
    char b[64];
    fmt_float(v, b, sizeof(b));
    jw_raw(w, b);
}

/* A JSON number of unknown kind: integral values print as integers. */
static void jw_number(struct jw *w, double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        jw_int(w, (int64_t)v);
    else
        jw_float(w, v);
}

/* key: value pairs */
static void jw_kint(struct jw *w, const char *k, int64_t v)
{
    jw_key(w, k);
    jw_int(w, v);
}

static void jw_kstr(struct jw *w, const char *k, const char *v)
{
    jw_key(w, k);
    jw_str(w, v);
}

static void jw_kbool(struct jw *w, const char *k, bool v)
{
    jw_key(w, k);
    jw_bool(w, v);
}

static void jw_kfloat(struct jw *w, const char *k, double v)
{
    jw_key(w, k);
    jw_float(w, v);
}

static void jw_knull(struct jw *w, const char *k)
{
    jw_key(w, k);
    jw_null(w);
}

static void jw_cjson(struct jw *w, const cJSON *it)
{
    const cJSON *c;
    if (cJSON_IsObject(it)) {
        jw_open(w, '{');
        cJSON_ArrayForEach(c, it)
        {
            jw_key(w, c->string ? c->string : "");
            jw_cjson(w, c);
        }
        jw_close(w, '}');
    } else if (cJSON_IsArray(it)) {
        jw_open(w, '[');
        cJSON_ArrayForEach(c, it) jw_cjson(w, c);
        jw_close(w, ']');
    } else if (cJSON_IsString(it)) {
        jw_str(w, it->valuestring);
    } else if (cJSON_IsNumber(it)) {
        jw_number(w, it->valuedouble);
    } else if (cJSON_IsBool(it)) {
        jw_bool(w, cJSON_IsTrue(it));
    } else if (cJSON_IsRaw(it) && it->valuestring) {
        jw_raw(w, it->valuestring);
    } else {
        jw_null(w);
    }
}

/* Hands the text over (with a final newline) or frees it on error. */
static ds_err jw_finish(struct jw *w, char **out)
{
    ds_sbuf_put(&w->b, "\n", 1);
    return ds_sbuf_detach(&w->b, out, NULL);
}

/* ======================================================================== */
/* JSON reading helpers                                                     */
/* ======================================================================== */

static ds_err json_parse(const char *text, size_t len, const char *name, cJSON **out)
{
    return ds_json_parse(text, len, name, "JSON", 0, out);
}

static const cJSON *jget(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static bool jabsent(const cJSON *it)
{
    return !it || cJSON_IsNull(it);
}

/* Integer field in [min, 2^31): missing or null gives def, or an error when
 * required. */
static ds_err j_int(const cJSON *o, const char *name, const char *key, bool required,
                    int64_t min, int64_t def, int64_t *out)
{
    const cJSON *it = jget(o, key);
    if (jabsent(it)) {
        DS_RETURN_IF(required, DS_ERR_FORMAT, "'%s': field '%s' is missing", name, key);
        *out = def;
        return DS_OK;
    }
    DS_RETURN_IF(!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
                     it->valuedouble < (double)min || it->valuedouble >= INT_CAP,
                 DS_ERR_FORMAT, "'%s': field '%s' must be an integer in [%lld, 2147483647]", name,
                 key, (long long)min);
    *out = (int64_t)it->valuedouble;
    return DS_OK;
}

/* Finite number field; positive: > 0, otherwise >= 0. */
static ds_err j_num(const cJSON *o, const char *name, const char *key, bool required,
                    bool positive, double def, double *out)
{
    const cJSON *it = jget(o, key);
    if (jabsent(it)) {
        DS_RETURN_IF(required, DS_ERR_FORMAT, "'%s': field '%s' is missing", name, key);
        *out = def;
        return DS_OK;
    }
    DS_RETURN_IF(!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
                     fabs(it->valuedouble) >= FLOAT_CAP || it->valuedouble < 0 ||
                     (positive && it->valuedouble == 0),
                 DS_ERR_FORMAT, "'%s': field '%s' must be a %s number", name, key,
                 positive ? "positive" : "non-negative");
    *out = it->valuedouble;
    return DS_OK;
}

static ds_err j_bool(const cJSON *o, const char *name, const char *key, bool def, bool *out)
{
    const cJSON *it = jget(o, key);
    if (jabsent(it)) {
        *out = def;
        return DS_OK;
    }
    DS_RETURN_IF(!cJSON_IsBool(it), DS_ERR_FORMAT, "'%s': field '%s' must be true or false", name,
                 key);
    *out = cJSON_IsTrue(it);
    return DS_OK;
}

/* String field or NULL when missing / null. */
static ds_err j_str(const cJSON *o, const char *name, const char *key, const char **out)
{
    const cJSON *it = jget(o, key);
    *out = NULL;
    if (jabsent(it))
        return DS_OK;
    DS_RETURN_IF(!cJSON_IsString(it), DS_ERR_FORMAT, "'%s': field '%s' must be a string", name,
                 key);
    *out = it->valuestring;
    return DS_OK;
}

static bool str_in(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

/* ======================================================================== */
/* config.json                                                              */
/* ======================================================================== */

static const char *const scoring_funcs[] = {"softmax", "sigmoid", NULL};
static const char *const topk_methods[] = {"greedy", "group_limited_greedy", "noaux_tc", NULL};

/* Top-level config.json fields dskit interprets; the rest is kept verbatim. */
static const char *const known_cfg_keys[] = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
    "moe_intermediate_size", "num_hidden_layers", "num_nextn_predict_layers",
    "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "n_group", "topk_group", "first_k_dense_replace", "moe_layer_freq",
    "scoring_func", "topk_method", "norm_topk_prob", "routed_scaling_factor", "rms_norm_eps",
    "rope_theta", "rope_scaling", "max_position_embeddings", "tie_word_embeddings",
    "bos_token_id", "eos_token_id", "torch_dtype", "quantization_config", NULL};

static const char *const known_rope_keys[] = {
    "factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale",
    "mscale_all_dim", NULL};

/* Consistency checks shared by config.json and metadata input. */
static ds_err hp_validate(const struct ds_hparams *hp, const char *name)
{
    DS_RETURN_IF(hp->vocab_size < 1 || hp->hidden_size < 1 || hp->intermediate_size < 1 ||
                     hp->n_layers < 1 || hp->n_heads < 1 || hp->kv_lora_rank < 1 ||
                     hp->qk_nope_head_dim < 1 || hp->qk_rope_head_dim < 1 || hp->v_head_dim < 1 ||
                     hp->max_position_embeddings < 1,
                 DS_ERR_FORMAT, "'%s': sizes must be positive", name);
    DS_RETURN_IF(hp->qk_rope_head_dim % 2, DS_ERR_FORMAT,
                 "'%s': qk_rope_head_dim (%lld) must be even", name,
                 (long long)hp->qk_rope_head_dim);
    DS_RETURN_IF(hp->n_heads * (hp->qk_nope_head_dim + hp->qk_rope_head_dim) >= INT_CAP ||
                     hp->n_heads * hp->v_head_dim >= INT_CAP ||
                     hp->kv_lora_rank + hp->qk_rope_head_dim >= INT_CAP ||
                     hp->n_layers + hp->n_nextn >= INT_CAP,
                 DS_ERR_FORMAT, "'%s': attention sizes are too large", name);
    DS_RETURN_IF(hp->first_k_dense_replace > hp->n_layers, DS_ERR_FORMAT,
                 "'%s': first_k_dense_replace (%lld) is larger than num_hidden_layers (%lld)",
                 name, (long long)hp->first_k_dense_replace, (long long)hp->n_layers);
    DS_RETURN_IF(hp->moe_layer_freq < 1, DS_ERR_FORMAT, "'%s': moe_layer_freq must be positive",
                 name);
    if (hp->n_routed_experts > 0) {
        DS_RETURN_IF(hp->moe_intermediate_size < 1, DS_ERR_FORMAT,
                     "'%s': moe_intermediate_size must be positive", name);
        DS_RETURN_IF(hp->n_experts_per_tok < 1 || hp->n_experts_per_tok > hp->n_routed_experts,
                     DS_ERR_FORMAT,
                     "'%s': num_experts_per_tok (%lld) must be in [1, n_routed_experts (%lld)]",
                     name, (long long)hp->n_experts_per_tok, (long long)hp->n_routed_experts);
        DS_RETURN_IF(hp->n_group < 1 || hp->n_routed_experts % hp->n_group, DS_ERR_FORMAT,
                     "'%s': n_routed_experts (%lld) is not divisible by n_group (%lld)", name,
                     (long long)hp->n_routed_experts, (long long)hp->n_group);
        DS_RETURN_IF(hp->topk_group < 1 || hp->topk_group > hp->n_group, DS_ERR_FORMAT,
                     "'%s': topk_group (%lld) must be in [1, n_group (%lld)]", name,
                     (long long)hp->topk_group, (long long)hp->n_group);
        DS_RETURN_IF(hp->n_experts_per_tok > hp->topk_group * (hp->n_routed_experts / hp->n_group),
                     DS_ERR_FORMAT,
                     "'%s': num_experts_per_tok (%lld) is more than the experts of topk_group "
                     "(%lld) groups",
                     name, (long long)hp->n_experts_per_tok, (long long)hp->topk_group);
    }
    DS_RETURN_IF(!str_in(hp->scoring_func, scoring_funcs), DS_ERR_UNSUPPORTED,
                 "'%s': scoring_func '%s' is not supported (softmax or sigmoid)", name,
                 hp->scoring_func);
    DS_RETURN_IF(!str_in(hp->topk_method, topk_methods), DS_ERR_UNSUPPORTED,
                 "'%s': topk_method '%s' is not supported (greedy, group_limited_greedy or "
                 "noaux_tc)",
                 name, hp->topk_method);
    DS_RETURN_IF(!(hp->rms_norm_eps > 0 && hp->rms_norm_eps < FLOAT_CAP) ||
                     !(hp->rope_theta > 0 && hp->rope_theta < FLOAT_CAP) ||
                     !(hp->routed_scaling_factor > 0 && hp->routed_scaling_factor < FLOAT_CAP),
                 DS_ERR_FORMAT, "'%s': rms_norm_eps, rope_theta and routed_scaling_factor must be "
                 "positive", name);
    if (hp->has_yarn) {
        DS_RETURN_IF(!(hp->yarn_factor > 0 && hp->yarn_factor < FLOAT_CAP) ||
                         hp->yarn_original_max_pos < 1 || hp->yarn_original_max_pos >= INT_CAP,
                     DS_ERR_FORMAT, "'%s': rope_scaling factor and "
                     "original_max_position_embeddings must be positive", name);
        DS_RETURN_IF(!(fabs(hp->yarn_beta_fast) < FLOAT_CAP &&
                       fabs(hp->yarn_beta_slow) < FLOAT_CAP && fabs(hp->yarn_mscale) < FLOAT_CAP &&
                       fabs(hp->yarn_mscale_all_dim) < FLOAT_CAP),
                     DS_ERR_FORMAT, "'%s': rope_scaling values out of range", name);
    }
    if (hp->fp8)
        DS_RETURN_IF(hp->fp8_block[0] < 1 || hp->fp8_block[1] < 1 ||
                         hp->fp8_block[0] >= INT_CAP || hp->fp8_block[1] >= INT_CAP,
                     DS_ERR_FORMAT, "'%s': weight_block_size must be two positive integers", name);
    return DS_OK;
}

static ds_err config_rope(const cJSON *root, const char *name, struct ds_hparams *hp)
{
    const cJSON *rs = jget(root, "rope_scaling");
    const char *type = NULL;

    if (jabsent(rs))
        return DS_OK;
    DS_RETURN_IF(!cJSON_IsObject(rs), DS_ERR_FORMAT, "'%s': field 'rope_scaling' must be an object",
                 name);
    DS_TRY(j_str(rs, name, "type", &type));
    if (!type)
        DS_TRY(j_str(rs, name, "rope_type", &type));
    DS_RETURN_IF(!type, DS_ERR_FORMAT, "'%s': rope_scaling has no type", name);
    DS_RETURN_IF(strcmp(type, "yarn"), DS_ERR_UNSUPPORTED,
                 "'%s': rope_scaling type '%s' is not supported (yarn only)", name, type);
    hp->has_yarn = true;
    DS_TRY(j_num(rs, name, "factor", true, true, 1.0, &hp->yarn_factor));
    DS_TRY(j_int(rs, name, "original_max_position_embeddings", true, 1, 0,
                 &hp->yarn_original_max_pos));
    DS_TRY(j_num(rs, name, "beta_fast", false, false, 32.0, &hp->yarn_beta_fast));
    DS_TRY(j_num(rs, name, "beta_slow", false, false, 1.0, &hp->yarn_beta_slow));
    DS_TRY(j_num(rs, name, "mscale", false, false, 1.0, &hp->yarn_mscale));
    DS_TRY(j_num(rs, name, "mscale_all_dim", false, false, 0.0, &hp->yarn_mscale_all_dim));
    return DS_OK;
}

static ds_err config_quant(const cJSON *root, const char *name, struct ds_hparams *hp)
{
    const cJSON *qc = jget(root, "quantization_config"), *bs;
    const char *method, *fmt;

    if (jabsent(qc))
        return DS_OK;
    DS_RETURN_IF(!cJSON_IsObject(qc), DS_ERR_FORMAT,
                 "'%s': field 'quantization_config' must be an object", name);
    DS_TRY(j_str(qc, name, "quant_method", &method));
    DS_RETURN_IF(!method || strcmp(method, "fp8"), DS_ERR_UNSUPPORTED,
                 "'%s': quantization method '%s' is not supported (fp8 only)", name,
                 method ? method : "?");
    DS_TRY(j_str(qc, name, "fmt", &fmt));
    DS_RETURN_IF(fmt && strcmp(fmt, "e4m3"), DS_ERR_UNSUPPORTED,
                 "'%s': fp8 format '%s' is not supported (e4m3 only)", name, fmt);
    hp->fp8 = true;
    hp->fp8_block[0] = hp->fp8_block[1] = 128;
    bs = jget(qc, "weight_block_size");
    if (!jabsent(bs)) {
        const cJSON *a = cJSON_IsArray(bs) ? bs->child : NULL;
        const cJSON *b = a ? a->next : NULL;
        DS_RETURN_IF(!a || !b || b->next || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
                         a->valuedouble != floor(a->valuedouble) ||
                         b->valuedouble != floor(b->valuedouble) || a->valuedouble < 1 ||
                         b->valuedouble < 1 || a->valuedouble >= INT_CAP ||
                         b->valuedouble >= INT_CAP,
                     DS_ERR_FORMAT, "'%s': weight_block_size must be two positive integers", name);
        hp->fp8_block[0] = (int64_t)a->valuedouble;
        hp->fp8_block[1] = (int64_t)b->valuedouble;
    }
    return DS_OK;
}

static ds_err config_from_json(const cJSON *root, const char *name, struct ds_hparams *hp)
{
    const char *mt, *s;
    bool v3, moe;

    memset(hp, 0, sizeof(*hp));
    hp->bos_token_id = hp->eos_token_id = -1;
    DS_RETURN_IF(!cJSON_IsObject(root), DS_ERR_FORMAT, "'%s': not a JSON object", name);

    DS_TRY(j_str(root, name, "model_type", &mt));
    if (!mt) {
        const cJSON *ar = jget(root, "architectures");
        const cJSON *a0 = cJSON_IsArray(ar) ? ar->child : NULL;
        const char *a = cJSON_IsString(a0) ? a0->valuestring : NULL;
        if (a && !strcmp(a, "DeepseekV2ForCausalLM"))
            mt = "deepseek_v2";
        else if (a && !strcmp(a, "DeepseekV3ForCausalLM"))
            mt = "deepseek_v3";
        DS_RETURN_IF(!mt, DS_ERR_UNSUPPORTED,
                     "'%s': no model_type, and architecture '%s' is not DeepSeek-V2/V3", name,
                     a ? a : "?");
    }
    DS_RETURN_IF(strcmp(mt, "deepseek_v2") && strcmp(mt, "deepseek_v3"), DS_ERR_UNSUPPORTED,
                 "'%s': model_type '%s' is not supported (deepseek_v2 or deepseek_v3)", name, mt);
    snprintf(hp->model_type, sizeof(hp->model_type), "%s", mt);
    v3 = !strcmp(mt, "deepseek_v3");

    DS_TRY(j_int(root, name, "vocab_size", true, 1, 0, &hp->vocab_size));
    DS_TRY(j_int(root, name, "hidden_size", true, 1, 0, &hp->hidden_size));
    DS_TRY(j_int(root, name, "intermediate_size", true, 1, 0, &hp->intermediate_size));
    DS_TRY(j_int(root, name, "num_hidden_layers", true, 1, 0, &hp->n_layers));
    DS_TRY(j_int(root, name, "num_nextn_predict_layers", false, 0, 0, &hp->n_nextn));
    DS_TRY(j_int(root, name, "num_attention_heads", true, 1, 0, &hp->n_heads));
    DS_TRY(j_int(root, name, "q_lora_rank", false, 0, 0, &hp->q_lora_rank));
    DS_TRY(j_int(root, name, "kv_lora_rank", true, 1, 0, &hp->kv_lora_rank));
    DS_TRY(j_int(root, name, "qk_nope_head_dim", true, 1, 0, &hp->qk_nope_head_dim));
    DS_TRY(j_int(root, name, "qk_rope_head_dim", true, 1, 0, &hp->qk_rope_head_dim));
    DS_TRY(j_int(root, name, "v_head_dim", true, 1, 0, &hp->v_head_dim));
    DS_TRY(j_int(root, name, "n_routed_experts", false, 0, 0, &hp->n_routed_experts));
    moe = hp->n_routed_experts > 0;
    DS_TRY(j_int(root, name, "moe_intermediate_size", moe, moe ? 1 : 0, 0,
                 &hp->moe_intermediate_size));
    DS_TRY(j_int(root, name, "num_experts_per_tok", moe, moe ? 1 : 0, 0, &hp->n_experts_per_tok));
    DS_TRY(j_int(root, name, "n_shared_experts", false, 0, 0, &hp->n_shared_experts));
    DS_TRY(j_int(root, name, "n_group", false, 1, 1, &hp->n_group));
    DS_TRY(j_int(root, name, "topk_group", false, 1, 1, &hp->topk_group));
    DS_TRY(j_int(root, name, "first_k_dense_replace", false, 0, 0, &hp->first_k_dense_replace));
    DS_TRY(j_int(root, name, "moe_layer_freq", false, 1, 1, &hp->moe_layer_freq));
    DS_TRY(j_int(root, name, "max_position_embeddings", false, 1, 4096,
                 &hp->max_position_embeddings));
    DS_TRY(j_int(root, name, "bos_token_id", false, 0, -1, &hp->bos_token_id));
    DS_TRY(j_int(root, name, "eos_token_id", false, 0, -1, &hp->eos_token_id));

    DS_TRY(j_num(root, name, "rms_norm_eps", false, true, 1e-6, &hp->rms_norm_eps));
    DS_TRY(j_num(root, name, "rope_theta", false, true, 10000.0, &hp->rope_theta));
    DS_TRY(j_num(root, name, "routed_scaling_factor", false, true, 1.0,
                 &hp->routed_scaling_factor));

    DS_TRY(j_str(root, name, "scoring_func", &s));
    snprintf(hp->scoring_func, sizeof(hp->scoring_func), "%s", s ? s : "softmax");
    DS_RETURN_IF(s && strlen(s) >= sizeof(hp->scoring_func), DS_ERR_UNSUPPORTED,
                 "'%s': scoring_func '%.40s' is not supported", name, s);
    DS_TRY(j_str(root, name, "topk_method", &s));
    snprintf(hp->topk_method, sizeof(hp->topk_method), "%s",
             s ? s : v3 ? "noaux_tc" : "greedy");
    DS_RETURN_IF(s && strlen(s) >= sizeof(hp->topk_method), DS_ERR_UNSUPPORTED,
                 "'%s': topk_method '%.40s' is not supported", name, s);

    DS_TRY(j_bool(root, name, "norm_topk_prob", v3, &hp->norm_topk_prob));
    DS_TRY(j_bool(root, name, "tie_word_embeddings", false, &hp->tie_word_embeddings));

    DS_TRY(config_rope(root, name, hp));
    DS_TRY(config_quant(root, name, hp));
    return hp_validate(hp, name);
}

ds_err ds_hf_config_parse(const char *json, size_t len, const char *name, struct ds_hparams *hp)
{
    cJSON *root = NULL;
    ds_err rc;

    DS_RETURN_IF(!json || !hp, DS_ERR_ARG, "config text or output missing");
    name = name ? name : "config.json";
    DS_TRY(json_parse(json, len, name, &root));
    rc = config_from_json(root, name, hp);
    cJSON_Delete(root);
    return rc;
}

/* ---- hparams -> metadata -------------------------------------------------- */

static ds_err put_u32(struct ds_meta *m, const char *key, int64_t v)
{
    DS_RETURN_IF(v < 0 || v > (int64_t)UINT32_MAX, DS_ERR_LIMIT,
                 "'%s': value %lld does not fit in uint32", key, (long long)v);
    return ds_meta_set_u32(m, key, (uint32_t)v);
}

static ds_err put_f64(struct ds_meta *m, const char *key, double v)
{
    return ds_meta_set(m, key, DS_V_F64, &v);
}

/* f32 under key, plus an f64 twin under exact_key when the f32 is inexact. */
static ds_err put_f32x(struct ds_meta *m, const char *key, const char *exact_key, double v)
{
    float f = (float)v;
    DS_TRY(ds_meta_set_f32(m, key, f));
    if ((double)f == v) {
        ds_meta_remove(m, exact_key);
        return DS_OK;
    }
    return put_f64(m, exact_key, v);
}

/* Reads a float written by put_f32x: the f64 twin when it still matches the
 * f32 (so an edited f32 wins), else the f32. */
static bool get_f32x(const struct ds_meta *m, const char *key, const char *exact_key, double *out)
{
    double f, x;
    if (!ds_meta_get_float(m, key, &f)) {
        return ds_meta_get_float(m, exact_key, out);
    }
    if (ds_meta_get_float(m, exact_key, &x) && (float)x == (float)f) {
        *out = x;
        return true;
    }
    *out = f;
    return true;
}

static const char *const conditional_keys[] = {
    KA("expert_used_count"), KA("expert_group_count"), KA("expert_group_used_count"),
    KA("expert_feed_forward_length"), KA("expert_shared_count"), KA("expert_weights_scale"),
    KA("expert_weights_norm"), KA("expert_gating_func"), KA("rope.scaling.type"),
    KA("rope.scaling.factor"), KA("rope.scaling.original_context_length"),
    KA("rope.scaling.yarn_log_multiplier"), KA("nextn_predict_layers"),
    "dskit.hf.n_group", "dskit.hf.topk_group", "dskit.hf.rope_scaling.beta_fast",
    "dskit.hf.rope_scaling.beta_slow", "dskit.hf.rope_scaling.mscale",
    "dskit.hf.rope_scaling.mscale_all_dim", "dskit.hf.rope_scaling.factor",
    "dskit.hf.routed_scaling_factor", "dskit.hf.bos_token_id", "dskit.hf.eos_token_id",
    "dskit.hf.num_nextn_predict_layers", "dskit.hf.fp8_block_size", "dskit.hf.architectures",
    "dskit.hf.torch_dtype", NULL};

static ds_err hparams_to_meta(const struct ds_hparams *hp, const char *gname, struct ds_meta *m)
{
    bool moe = hp->n_routed_experts > 0;
    bool sigmoid = !strcmp(hp->scoring_func, "sigmoid");
    // llama.cpp asserts n_group_used < n_group when n_group > 1; selecting every
    // group is the same as no group limit, which it spells 1/1.
    bool all_groups = hp->n_group > 1 && hp->topk_group == hp->n_group;

    // Keys written only in some cases: drop what an earlier conversion left.
    for (const char *const *k = conditional_keys; *k; k++)
        ds_meta_remove(m, *k);
    DS_TRY(ds_meta_set_str(m, "general.architecture", ARCH));
    DS_TRY(ds_meta_set_str(m, "general.name", gname));
    DS_TRY(put_u32(m, KA("block_count"), hp->n_layers + hp->n_nextn));
    DS_TRY(put_u32(m, KA("context_length"), hp->max_position_embeddings));
    DS_TRY(put_u32(m, KA("embedding_length"), hp->hidden_size));
    DS_TRY(put_u32(m, KA("feed_forward_length"), hp->intermediate_size));
    DS_TRY(put_u32(m, KA("attention.head_count"), hp->n_heads));
    DS_TRY(put_u32(m, KA("attention.head_count_kv"), 1));
    DS_TRY(put_f32x(m, KA("rope.freq_base"), "dskit.hf.rope_theta", hp->rope_theta));
    DS_TRY(put_f32x(m, KA("attention.layer_norm_rms_epsilon"), "dskit.hf.rms_norm_eps",
                    hp->rms_norm_eps));
    if (moe) {
        DS_TRY(put_u32(m, KA("expert_used_count"), hp->n_experts_per_tok));
        DS_TRY(put_u32(m, KA("expert_group_count"), all_groups ? 1 : hp->n_group));
        DS_TRY(put_u32(m, KA("expert_group_used_count"), all_groups ? 1 : hp->topk_group));
    }
    DS_TRY(put_u32(m, KA("attention.key_length"), hp->kv_lora_rank + hp->qk_rope_head_dim));
    DS_TRY(put_u32(m, KA("attention.value_length"), hp->kv_lora_rank));
    DS_TRY(put_u32(m, KA("leading_dense_block_count"), hp->first_k_dense_replace));
    DS_TRY(put_u32(m, KA("vocab_size"), hp->vocab_size));
    DS_TRY(put_u32(m, KA("attention.q_lora_rank"), hp->q_lora_rank));
    DS_TRY(put_u32(m, KA("attention.kv_lora_rank"), hp->kv_lora_rank));
    DS_TRY(put_u32(m, KA("attention.key_length_mla"), hp->qk_nope_head_dim + hp->qk_rope_head_dim));
    DS_TRY(put_u32(m, KA("attention.value_length_mla"), hp->v_head_dim));
    DS_TRY(put_u32(m, KA("expert_count"), hp->n_routed_experts));
    if (moe) {
        DS_TRY(put_u32(m, KA("expert_feed_forward_length"), hp->moe_intermediate_size));
        DS_TRY(put_u32(m, KA("expert_shared_count"), hp->n_shared_experts));
        DS_TRY(put_f32x(m, KA("expert_weights_scale"), "dskit.hf.routed_scaling_factor",
                        hp->routed_scaling_factor));
        DS_TRY(ds_meta_set_bool(m, KA("expert_weights_norm"), hp->norm_topk_prob));
        DS_TRY(put_u32(m, KA("expert_gating_func"), sigmoid ? 2 : 1));
    }
    DS_TRY(put_u32(m, KA("rope.dimension_count"), hp->qk_rope_head_dim));
    if (hp->has_yarn) {
        DS_TRY(ds_meta_set_str(m, KA("rope.scaling.type"), "yarn"));
        DS_TRY(put_f32x(m, KA("rope.scaling.factor"), "dskit.hf.rope_scaling.factor",
                        hp->yarn_factor));
        DS_TRY(put_u32(m, KA("rope.scaling.original_context_length"),
                       hp->yarn_original_max_pos));
        DS_TRY(ds_meta_set_f32(m, KA("rope.scaling.yarn_log_multiplier"),
                               (float)(0.1 * hp->yarn_mscale_all_dim)));
    }
    if (hp->n_nextn > 0)
        DS_TRY(put_u32(m, KA("nextn_predict_layers"), hp->n_nextn));

    DS_TRY(ds_meta_set_str(m, "dskit.hf.model_type", hp->model_type));
    DS_TRY(ds_meta_set_str(m, "dskit.routing.method", hp->topk_method));
    DS_TRY(ds_meta_set_str(m, "dskit.hf.scoring_func", hp->scoring_func));
    DS_TRY(put_u32(m, "dskit.hf.moe_layer_freq", hp->moe_layer_freq));
    if (all_groups) {
        DS_TRY(put_u32(m, "dskit.hf.n_group", hp->n_group));
        DS_TRY(put_u32(m, "dskit.hf.topk_group", hp->topk_group));
    }
    if (hp->has_yarn) {
        DS_TRY(put_f64(m, "dskit.hf.rope_scaling.beta_fast", hp->yarn_beta_fast));
        DS_TRY(put_f64(m, "dskit.hf.rope_scaling.beta_slow", hp->yarn_beta_slow));
        DS_TRY(put_f64(m, "dskit.hf.rope_scaling.mscale", hp->yarn_mscale));
        DS_TRY(put_f64(m, "dskit.hf.rope_scaling.mscale_all_dim", hp->yarn_mscale_all_dim));
    }
    DS_TRY(ds_meta_set_bool(m, "dskit.hf.tie_word_embeddings", hp->tie_word_embeddings));
    if (hp->bos_token_id >= 0)
        DS_TRY(put_u32(m, "dskit.hf.bos_token_id", hp->bos_token_id));
    if (hp->eos_token_id >= 0)
        DS_TRY(put_u32(m, "dskit.hf.eos_token_id", hp->eos_token_id));
    if (hp->n_nextn > 0)
        DS_TRY(put_u32(m, "dskit.hf.num_nextn_predict_layers", hp->n_nextn));
    if (hp->fp8) {
        uint32_t b[2] = {(uint32_t)hp->fp8_block[0], (uint32_t)hp->fp8_block[1]};
        DS_TRY(ds_meta_set_arr(m, "dskit.hf.fp8_block_size", DS_V_U32, 2, b));
    }
    return DS_OK;
}

/* general.name: the base of the directory holding path ("x/DeepSeek-V3/
 * config.json" -> "DeepSeek-V3"), the base of path itself when it does not
 * name a .json file, else "deepseek". */
static void general_name(const char *path, char *buf, size_t cap)
{
    size_t n, len;
    const char *beg;

    if (!path || path[0] == '<')
        goto dflt;
    n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        n--;
    beg = path + n;
    while (beg > path && beg[-1] != '/')
        beg--;
    len = (size_t)(path + n - beg);
    if (len >= 5 && !memcmp(path + n - 5, ".json", 5)) {
        n = (size_t)(beg - path);
        while (n > 0 && path[n - 1] == '/')
            n--;
        beg = path + n;
        while (beg > path && beg[-1] != '/')
            beg--;
        len = (size_t)(path + n - beg);
    }
    if (len == 0 || (len == 1 && beg[0] == '.') || (len == 2 && !memcmp(beg, "..", 2)))
        goto dflt;
    snprintf(buf, cap, "%.*s", (int)(len < 200 ? len : 200), beg);
    return;
dflt:
    snprintf(buf, cap, "deepseek");
}

/* Compact JSON object of the members of o whose keys are not in known;
 * NULL (and DS_OK) when there are none. */
static ds_err extra_json(const cJSON *o, const char *const *known, char **out)
{
    cJSON *ex = NULL;
    const cJSON *c;

    *out = NULL;
    cJSON_ArrayForEach(c, o)
    {
        cJSON *dup;
        if (!c->string || str_in(c->string, known))
            continue;
        if (!ex && !(ex = cJSON_CreateObject()))
            return ds_set_error(DS_ERR_NOMEM, "out of memory copying config fields");
        dup = cJSON_Duplicate(c, true);
        if (!dup || !cJSON_AddItemToObject(ex, c->string, dup)) {
            cJSON_Delete(dup);
            cJSON_Delete(ex);
            return ds_set_error(DS_ERR_NOMEM, "out of memory copying config fields");
        }
    }
    if (!ex)
        return DS_OK;
    *out = cJSON_PrintUnformatted(ex);
    cJSON_Delete(ex);
    return *out ? DS_OK : ds_set_error(DS_ERR_NOMEM, "out of memory copying config fields");
}

ds_err ds_hf_config_to_meta(const char *json, size_t len, const char *name, struct ds_meta *m)
{
    cJSON *root = NULL;
    char *extra = NULL, gname[256];
    const char **arch = NULL, *dtype = NULL;
    struct ds_hparams hp;
    const cJSON *it;
    ds_err rc = DS_OK;
    const char *nm = name ? name : "config.json";

    DS_RETURN_IF(!json || !m, DS_ERR_ARG, "config text or metadata missing");
    DS_CHECK(json_parse(json, len, nm, &root));
    DS_CHECK(config_from_json(root, nm, &hp));
    general_name(name, gname, sizeof(gname));
    DS_CHECK(hparams_to_meta(&hp, gname, m));

    it = jget(root, "architectures");
    if (cJSON_IsArray(it)) {
        int n = cJSON_GetArraySize(it), k = 0;
        const cJSON *a;
        arch = ds_calloc((size_t)n + 1, sizeof(*arch));
        DS_FAIL_IF(!arch, DS_ERR_NOMEM, "out of memory");
        cJSON_ArrayForEach(a, it)
        {
            DS_FAIL_IF(!cJSON_IsString(a), DS_ERR_FORMAT,
                       "'%s': field 'architectures' must be an array of strings", nm);
            arch[k++] = a->valuestring;
        }
        DS_CHECK(ds_meta_set_str_arr(m, "dskit.hf.architectures", (uint64_t)k, arch, NULL));
    } else {
        DS_FAIL_IF(!jabsent(it), DS_ERR_FORMAT,
                   "'%s': field 'architectures' must be an array of strings", nm);
    }
    DS_CHECK(j_str(root, nm, "torch_dtype", &dtype));
    if (dtype)
        DS_CHECK(ds_meta_set_str(m, "dskit.hf.torch_dtype", dtype));
    if (!jabsent(jget(root, "num_nextn_predict_layers")))
        DS_CHECK(put_u32(m, "dskit.hf.num_nextn_predict_layers", hp.n_nextn));

    DS_CHECK(extra_json(root, known_cfg_keys, &extra));
    if (extra)
        DS_CHECK(ds_meta_set_str(m, "dskit.hf.config_extra", extra));
    else
        ds_meta_remove(m, "dskit.hf.config_extra");
    free(extra);
    extra = NULL;
    if (hp.has_yarn)
        DS_CHECK(extra_json(jget(root, "rope_scaling"), known_rope_keys, &extra));
    if (extra)
        DS_CHECK(ds_meta_set_str(m, "dskit.hf.rope_scaling.extra", extra));
    else
        ds_meta_remove(m, "dskit.hf.rope_scaling.extra");
out:
    free(extra);
    free(arch);
    cJSON_Delete(root);
    return rc;
}

/* ---- metadata -> hparams -------------------------------------------------- */

/* Integer key in [min, 2^31): missing gives def, or DS_ERR_NOT_FOUND when
 * required. */
static ds_err m_int(const struct ds_meta *m, const char *key, bool required, int64_t min,
                    int64_t def, int64_t *out)
{
    int64_t v;
    if (!ds_meta_get_int(m, key, &v)) {
        DS_RETURN_IF(ds_meta_find(m, key) >= 0, DS_ERR_FORMAT,
                     "metadata key '%s' is not an integer", key);
        DS_RETURN_IF(required, DS_ERR_NOT_FOUND, "metadata key '%s' is missing", key);
        *out = def;
        return DS_OK;
    }
    DS_RETURN_IF(v < min || v >= (int64_t)INT_CAP, DS_ERR_FORMAT,
                 "metadata key '%s' = %lld is out of range", key, (long long)v);
    *out = v;
    return DS_OK;
}

static void m_str(const struct ds_meta *m, const char *key, const char *const *allowed, char *buf,
                  size_t cap, const char *def)
{
    const char *s = ds_meta_get_str(m, key, NULL);
    snprintf(buf, cap, "%s", s && str_in(s, allowed) ? s : def);
}

ds_err ds_hparams_from_meta(const struct ds_meta *m, struct ds_hparams *hp)
{
    static const char *const model_types[] = {"deepseek_v2", "deepseek_v3", NULL};
    const char *arch, *rtype;
    int64_t block_count, gating, klen, vlen, v;
    bool sigmoid;
    long i;

    DS_RETURN_IF(!m || !hp, DS_ERR_ARG, "metadata or output missing");
    memset(hp, 0, sizeof(*hp));
    arch = ds_meta_get_str(m, "general.architecture", NULL);
    DS_RETURN_IF(!arch, DS_ERR_NOT_FOUND, "metadata key 'general.architecture' is missing");
    DS_RETURN_IF(strcmp(arch, ARCH), DS_ERR_UNSUPPORTED,
                 "architecture '%s' is not supported (deepseek2 only)", arch);

    DS_TRY(m_int(m, KA("embedding_length"), true, 1, 0, &hp->hidden_size));
    DS_TRY(m_int(m, KA("block_count"), true, 1, 0, &block_count));
    DS_TRY(m_int(m, KA("nextn_predict_layers"), false, 0, 0, &hp->n_nextn));
    DS_RETURN_IF(hp->n_nextn >= block_count, DS_ERR_FORMAT,
                 "metadata: nextn_predict_layers (%lld) leaves no layers of block_count (%lld)",
                 (long long)hp->n_nextn, (long long)block_count);
    hp->n_layers = block_count - hp->n_nextn;
    DS_TRY(m_int(m, KA("feed_forward_length"), true, 1, 0, &hp->intermediate_size));
    DS_TRY(m_int(m, KA("attention.head_count"), true, 1, 0, &hp->n_heads));
    DS_TRY(m_int(m, KA("attention.q_lora_rank"), false, 0, 0, &hp->q_lora_rank));
    DS_TRY(m_int(m, KA("attention.kv_lora_rank"), true, 1, 0, &hp->kv_lora_rank));
    DS_TRY(m_int(m, KA("rope.dimension_count"), true, 1, 0, &hp->qk_rope_head_dim));
    if (ds_meta_find(m, KA("attention.key_length_mla")) >= 0) {
        DS_TRY(m_int(m, KA("attention.key_length_mla"), true, 1, 0, &klen));
        DS_TRY(m_int(m, KA("attention.value_length_mla"), true, 1, 0, &vlen));
    } else {
        // Files converted before absorbed MLA: per-head K and V sizes.
        DS_TRY(m_int(m, KA("attention.key_length"), true, 1, 0, &klen));
        DS_TRY(m_int(m, KA("attention.value_length"), true, 1, 0, &vlen));
    }
    DS_RETURN_IF(klen <= hp->qk_rope_head_dim, DS_ERR_FORMAT,
                 "metadata: key length %lld is not larger than the rope dimension %lld",
                 (long long)klen, (long long)hp->qk_rope_head_dim);
    hp->qk_nope_head_dim = klen - hp->qk_rope_head_dim;
    hp->v_head_dim = vlen;

    if (ds_meta_find(m, KA("vocab_size")) >= 0) {
        DS_TRY(m_int(m, KA("vocab_size"), true, 1, 0, &hp->vocab_size));
    } else if ((i = ds_meta_find(m, "tokenizer.ggml.tokens")) >= 0) {
        enum ds_vtype el;
        uint64_t n;
        DS_RETURN_IF(!ds_meta_arr(m, (size_t)i, &el, &n) || n == 0 || n >= (uint64_t)INT_CAP,
                     DS_ERR_FORMAT, "metadata: bad tokenizer.ggml.tokens");
        hp->vocab_size = (int64_t)n;
    } else {
        return ds_set_error(DS_ERR_NOT_FOUND, "metadata key '%s' is missing", KA("vocab_size"));
    }

    DS_TRY(m_int(m, KA("expert_count"), false, 0, 0, &hp->n_routed_experts));
    DS_TRY(m_int(m, KA("expert_used_count"), false, 0, 0, &hp->n_experts_per_tok));
    DS_TRY(m_int(m, KA("expert_shared_count"), false, 0, 0, &hp->n_shared_experts));
    DS_TRY(m_int(m, KA("expert_feed_forward_length"), false, 0, 0, &hp->moe_intermediate_size));
    DS_TRY(m_int(m, KA("expert_group_count"), false, 1, 1, &hp->n_group));
    DS_TRY(m_int(m, KA("expert_group_used_count"), false, 1, 1, &hp->topk_group));
    if (ds_meta_find(m, "dskit.hf.n_group") >= 0 && hp->n_group == 1 && hp->topk_group == 1) {
        DS_TRY(m_int(m, "dskit.hf.n_group", true, 1, 1, &hp->n_group));
        DS_TRY(m_int(m, "dskit.hf.topk_group", false, 1, hp->n_group, &hp->topk_group));
    }
    DS_TRY(m_int(m, KA("leading_dense_block_count"), false, 0, 0, &hp->first_k_dense_replace));
    DS_TRY(m_int(m, "dskit.hf.moe_layer_freq", false, 1, 1, &hp->moe_layer_freq));

    DS_TRY(m_int(m, KA("expert_gating_func"), false, 0, 1, &gating));
    DS_RETURN_IF(gating != 1 && gating != 2, DS_ERR_UNSUPPORTED,
                 "metadata: expert_gating_func %lld is not supported (1 softmax, 2 sigmoid)",
                 (long long)gating);
    m_str(m, "dskit.hf.scoring_func", scoring_funcs, hp->scoring_func, sizeof(hp->scoring_func),
          gating == 2 ? "sigmoid" : "softmax");
    sigmoid = !strcmp(hp->scoring_func, "sigmoid");
    m_str(m, "dskit.routing.method", topk_methods, hp->topk_method, sizeof(hp->topk_method),
          sigmoid ? "noaux_tc" : hp->n_group > 1 ? "group_limited_greedy" : "greedy");
    m_str(m, "dskit.hf.model_type", model_types, hp->model_type, sizeof(hp->model_type),
          sigmoid ? "deepseek_v3" : "deepseek_v2");
    if (!ds_meta_get_bool(m, KA("expert_weights_norm"), &hp->norm_topk_prob))
        hp->norm_topk_prob = false;
    if (!get_f32x(m, KA("expert_weights_scale"), "dskit.hf.routed_scaling_factor",
                  &hp->routed_scaling_factor))
        hp->routed_scaling_factor = 1.0;
    if (!get_f32x(m, KA("attention.layer_norm_rms_epsilon"), "dskit.hf.rms_norm_eps",
                  &hp->rms_norm_eps))
        hp->rms_norm_eps = 1e-6;
    if (!get_f32x(m, KA("rope.freq_base"), "dskit.hf.rope_theta", &hp->rope_theta))
        hp->rope_theta = 10000.0;

    rtype = ds_meta_get_str(m, KA("rope.scaling.type"), NULL);
    if (rtype && strcmp(rtype, "none")) {
        double logmul;
        DS_RETURN_IF(strcmp(rtype, "yarn"), DS_ERR_UNSUPPORTED,
                     "metadata: rope scaling '%s' is not supported (yarn only)", rtype);
        hp->has_yarn = true;
        DS_RETURN_IF(!get_f32x(m, KA("rope.scaling.factor"), "dskit.hf.rope_scaling.factor",
                               &hp->yarn_factor),
                     DS_ERR_NOT_FOUND, "metadata key '%s' is missing", KA("rope.scaling.factor"));
        DS_TRY(m_int(m, KA("rope.scaling.original_context_length"), true, 1, 0,
                     &hp->yarn_original_max_pos));
        if (!ds_meta_get_float(m, "dskit.hf.rope_scaling.mscale_all_dim",
                               &hp->yarn_mscale_all_dim))
            hp->yarn_mscale_all_dim =
                ds_meta_get_float(m, KA("rope.scaling.yarn_log_multiplier"), &logmul)
                    ? logmul / 0.1
                    : 0.0;
        if (!ds_meta_get_float(m, "dskit.hf.rope_scaling.mscale", &hp->yarn_mscale))
            hp->yarn_mscale = hp->yarn_mscale_all_dim != 0 ? hp->yarn_mscale_all_dim : 1.0;
        if (!ds_meta_get_float(m, "dskit.hf.rope_scaling.beta_fast", &hp->yarn_beta_fast))
            hp->yarn_beta_fast = 32.0;
        if (!ds_meta_get_float(m, "dskit.hf.rope_scaling.beta_slow", &hp->yarn_beta_slow))
            hp->yarn_beta_slow = 1.0;
    }
    DS_TRY(m_int(m, KA("context_length"), true, 1, 0, &hp->max_position_embeddings));
    if (!ds_meta_get_bool(m, "dskit.hf.tie_word_embeddings", &hp->tie_word_embeddings))
        hp->tie_word_embeddings = false;
    hp->bos_token_id = hp->eos_token_id = -1;
    if (ds_meta_get_int(m, "dskit.hf.bos_token_id", &v) ||
        ds_meta_get_int(m, "tokenizer.ggml.bos_token_id", &v))
        hp->bos_token_id = v >= 0 && v < (int64_t)INT_CAP ? v : -1;
    if (ds_meta_get_int(m, "dskit.hf.eos_token_id", &v) ||
        ds_meta_get_int(m, "tokenizer.ggml.eos_token_id", &v))
        hp->eos_token_id = v >= 0 && v < (int64_t)INT_CAP ? v : -1;

    if ((i = ds_meta_find(m, "dskit.hf.fp8_block_size")) >= 0) {
        enum ds_vtype el;
        uint64_t n;
        const uint32_t *b = ds_meta_arr(m, (size_t)i, &el, &n) && el == DS_V_U32 && n == 2
                                ? ds_meta_arr_data(m, (size_t)i)
                                : NULL;
        DS_RETURN_IF(!b, DS_ERR_FORMAT, "metadata: dskit.hf.fp8_block_size must be 2 uint32");
        hp->fp8 = true;
        hp->fp8_block[0] = b[0];
        hp->fp8_block[1] = b[1];
    }
    return hp_validate(hp, "metadata");
}

/* ---- metadata -> config.json --------------------------------------------- */

static ds_err parse_stored_object(const struct ds_meta *m, const char *key, cJSON **out)
{
    size_t len;
    const char *s = ds_meta_get_str(m, key, &len);
    *out = NULL;
    if (!s)
        return DS_OK;
    DS_TRY(json_parse(s, len, key, out));
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return ds_set_error(DS_ERR_FORMAT, "metadata key '%s' is not a JSON object", key);
    }
    return DS_OK;
}

static void write_rope_scaling(struct jw *w, const struct ds_hparams *hp, const cJSON *extra)
{
    const cJSON *c;
    bool typed = false;

    jw_key(w, "rope_scaling");
    if (!hp->has_yarn) {
        jw_null(w);
        return;
    }
    jw_open(w, '{');
    cJSON_ArrayForEach(c, extra)
    {
        if (!c->string || str_in(c->string, known_rope_keys))
            continue;
        if (!strcmp(c->string, "type") || !strcmp(c->string, "rope_type"))
            typed = true;
        jw_key(w, c->string);
        jw_cjson(w, c);
    }
    if (!typed) {
        jw_kstr(w, "type", "yarn");
    }
    jw_kfloat(w, "factor", hp->yarn_factor);
    jw_kint(w, "original_max_position_embeddings", hp->yarn_original_max_pos);
    jw_kfloat(w, "beta_fast", hp->yarn_beta_fast);
    jw_kfloat(w, "beta_slow", hp->yarn_beta_slow);
    jw_kfloat(w, "mscale", hp->yarn_mscale);
    jw_kfloat(w, "mscale_all_dim", hp->yarn_mscale_all_dim);
    jw_close(w, '}');
}

ds_err ds_hf_meta_to_config(const struct ds_meta *m, const char *dtype, bool fp8, char **out)
{
    struct ds_hparams hp;
    struct jw w = {0};
    cJSON *extra = NULL, *rextra = NULL;
    const cJSON *c;
    bool moe;
    long ai;
    ds_err rc = DS_OK;

    DS_RETURN_IF(!m || !out, DS_ERR_ARG, "metadata or output missing");
    *out = NULL;
    DS_CHECK(ds_hparams_from_meta(m, &hp));
    DS_CHECK(parse_stored_object(m, "dskit.hf.config_extra", &extra));
    DS_CHECK(parse_stored_object(m, "dskit.hf.rope_scaling.extra", &rextra));
    moe = hp.n_routed_experts > 0;

    jw_open(&w, '{');
    jw_key(&w, "architectures");
    jw_open(&w, '[');
    ai = ds_meta_find(m, "dskit.hf.architectures");
    {
        enum ds_vtype el;
        uint64_t n = 0;
        if (ai >= 0 && ds_meta_arr(m, (size_t)ai, &el, &n) && el == DS_V_STR && n > 0) {
            for (uint64_t j = 0; j < n; j++) {
                size_t len;
                const char *s = ds_meta_arr_str(m, (size_t)ai, j, &len);
                jw_strn(&w, s, len);
            }
        } else {
            jw_str(&w, !strcmp(hp.model_type, "deepseek_v3") ? "DeepseekV3ForCausalLM"
                                                             : "DeepseekV2ForCausalLM");
        }
    }
    jw_close(&w, ']');
    jw_kstr(&w, "model_type", hp.model_type);
    jw_kint(&w, "vocab_size", hp.vocab_size);
    jw_kint(&w, "hidden_size", hp.hidden_size);
    jw_kint(&w, "intermediate_size", hp.intermediate_size);
    if (moe || hp.moe_intermediate_size > 0) {
        jw_kint(&w, "moe_intermediate_size", hp.moe_intermediate_size);
    }
    jw_kint(&w, "num_hidden_layers", hp.n_layers);
    if (hp.n_nextn > 0 || ds_meta_find(m, "dskit.hf.num_nextn_predict_layers") >= 0) {
        jw_kint(&w, "num_nextn_predict_layers", hp.n_nextn);
    }
    jw_kint(&w, "num_attention_heads", hp.n_heads);
    jw_key(&w, "n_routed_experts");
    if (moe) {
        jw_int(&w, hp.n_routed_experts);
        jw_kint(&w, "n_shared_experts", hp.n_shared_experts);
        jw_kint(&w, "num_experts_per_tok", hp.n_experts_per_tok);
        jw_kint(&w, "n_group", hp.n_group);
        jw_kint(&w, "topk_group", hp.topk_group);
        jw_kfloat(&w, "routed_scaling_factor", hp.routed_scaling_factor);
        jw_kstr(&w, "scoring_func", hp.scoring_func);
        jw_kstr(&w, "topk_method", hp.topk_method);
        jw_kbool(&w, "norm_topk_prob", hp.norm_topk_prob);
    } else {
        jw_null(&w);
    }
    jw_key(&w, "q_lora_rank");
    if (hp.q_lora_rank > 0)
        jw_int(&w, hp.q_lora_rank);
    else
        jw_null(&w);
    jw_kint(&w, "kv_lora_rank", hp.kv_lora_rank);
    jw_kint(&w, "qk_nope_head_dim", hp.qk_nope_head_dim);
    jw_kint(&w, "qk_rope_head_dim", hp.qk_rope_head_dim);
    jw_kint(&w, "v_head_dim", hp.v_head_dim);
    jw_kint(&w, "first_k_dense_replace", hp.first_k_dense_replace);
    jw_kint(&w, "moe_layer_freq", hp.moe_layer_freq);
    jw_kfloat(&w, "rms_norm_eps", hp.rms_norm_eps);
    jw_kfloat(&w, "rope_theta", hp.rope_theta);
    write_rope_scaling(&w, &hp, rextra);
    jw_kint(&w, "max_position_embeddings", hp.max_position_embeddings);
    jw_kbool(&w, "tie_word_embeddings", hp.tie_word_embeddings);
    if (hp.bos_token_id >= 0) {
        jw_kint(&w, "bos_token_id", hp.bos_token_id);
    }
    if (hp.eos_token_id >= 0) {
        jw_kint(&w, "eos_token_id", hp.eos_token_id);
    }
    if (!dtype)
        dtype = ds_meta_get_str(m, "dskit.hf.torch_dtype", NULL);
    if (dtype) {
        jw_kstr(&w, "torch_dtype", dtype);
    }
    if (fp8) {
        jw_key(&w, "quantization_config");
        jw_open(&w, '{');
        jw_kstr(&w, "activation_scheme", "dynamic");
        jw_kstr(&w, "fmt", "e4m3");
        jw_kstr(&w, "quant_method", "fp8");
        jw_key(&w, "weight_block_size");
        jw_open(&w, '[');
        jw_int(&w, hp.fp8 ? hp.fp8_block[0] : 128);
        jw_int(&w, hp.fp8 ? hp.fp8_block[1] : 128);
        jw_close(&w, ']');
        jw_close(&w, '}');
    }
    cJSON_ArrayForEach(c, extra)
    {
        if (!c->string || str_in(c->string, known_cfg_keys))
            continue;
        jw_key(&w, c->string);
        jw_cjson(&w, c);
    }
    jw_close(&w, '}');
    rc = jw_finish(&w, out);
out:
    ds_sbuf_release(&w.b);
    cJSON_Delete(extra);
    cJSON_Delete(rextra);
    return rc;
}

/* ======================================================================== */
/* Pre-tokenizers                                                           */
/* ======================================================================== */

/* Stand-in for a Digits(individual_digits) stage in a stage list. */
static const char digits_stage[] = "\001digits";

/* got (as decoded from JSON) equals want, where literal CR, LF and TAB in
 * got match the escapes \r, \n and \t in want. */
static bool re_eq(const char *got, const char *want)
{
    for (;;) {
        char c = *got;
        const char *e = c == '\r' ? "\\r" : c == '\n' ? "\\n" : c == '\t' ? "\\t" : NULL;
        if (e) {
            if (strncmp(want, e, 2))
                return false;
            want += 2;
            got++;
            continue;
        }
        if (c != *want)
            return false;
        if (!c)
            return true;
        got++;
        want++;
    }
}

static bool pre_match(const struct pretok_def *d, const char *const *st, size_t ns)
{
    size_t need = d->nre + (d->digits ? 1 : 0);
    if (ns != need)
        return false;
    for (size_t i = 0; i < d->nre; i++)
        if (st[i] == digits_stage || !re_eq(st[i], d->re[i]))
            return false;
    if (d->digits)
        return st[d->nre] == digits_stage || re_eq(st[d->nre], d->digits_re);
    return true;
}

static const char *jtype(const cJSON *o)
{
    const cJSON *t = jget(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

#define MAX_STAGES 16

struct stages {
    const char *st[MAX_STAGES];
    size_t n;
    bool bytelevel, odd;
};

static void pre_stage(const cJSON *st, struct stages *s)
{
    const char *t = jtype(st);
    if (s->bytelevel) {
        s->odd = true; // ByteLevel must come last
    } else if (!strcmp(t, "Split")) {
        const cJSON *re = jget(jget(st, "pattern"), "Regex");
        if (!cJSON_IsString(re) || s->n == MAX_STAGES)
            s->odd = true;
        else
            s->st[s->n++] = re->valuestring;
    } else if (!strcmp(t, "Digits")) {
        if (!cJSON_IsTrue(jget(st, "individual_digits")) || s->n == MAX_STAGES)
            s->odd = true;
        else
            s->st[s->n++] = digits_stage;
    } else if (!strcmp(t, "ByteLevel")) {
        s->bytelevel = true;
        if (cJSON_IsTrue(jget(st, "use_regex")) || cJSON_IsTrue(jget(st, "add_prefix_space")))
            s->odd = true;
    } else {
        s->odd = true;
    }
}

/* Names the pre-tokenizer of tokenizer.json from its stages. */
static ds_err detect_pre(const cJSON *root, const char *name, const char **pre)
{
    const cJSON *pt = jget(root, "pre_tokenizer"), *dec = jget(root, "decoder"), *it;
    struct stages s = {{0}, 0, false, false};
    bool dec_bl = false;

    *pre = NULL;
    if (!strcmp(jtype(dec), "ByteLevel")) {
        dec_bl = true;
    } else if (!strcmp(jtype(dec), "Sequence")) {
        cJSON_ArrayForEach(it, jget(dec, "decoders")) dec_bl |= !strcmp(jtype(it), "ByteLevel");
    }
    if (!strcmp(jtype(pt), "Sequence")) {
        const cJSON *list = jget(pt, "pretokenizers");
        DS_RETURN_IF(!cJSON_IsArray(list), DS_ERR_FORMAT,
                     "'%s': pre_tokenizer Sequence without pretokenizers", name);
        cJSON_ArrayForEach(it, list) pre_stage(it, &s);
    } else if (cJSON_IsObject(pt)) {
        pre_stage(pt, &s);
    }
    DS_RETURN_IF(!s.bytelevel || !dec_bl, DS_ERR_UNSUPPORTED,
                 "'%s': not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer and decoder); "
                 "only DeepSeek tokenizers are supported",
                 name);
    if (!s.odd)
        for (size_t i = 0; i < PRETOK_COUNT; i++)
            if (pre_match(&pretok_defs[i], s.st, s.n)) {
                *pre = pretok_defs[i].name;
                return DS_OK;
            }
    return ds_set_error(DS_ERR_UNSUPPORTED,
                        "'%s': unknown pre-tokenizer (%zu split stages); dskit knows the "
                        "DeepSeek ones: deepseek-v3, deepseek-llm, deepseek-coder",
                        name, s.n);
}

/* ======================================================================== */
/* tokenizer.json -> metadata                                               */
/* ======================================================================== */

struct vocab {
    size_t n;
    const char **text; /* borrowed from the cJSON tree, or into pads */
    size_t *len;
    int32_t *type;
    char *pads; /* "[PAD<i>]" texts */
    size_t nmerges;
    const char **merges; /* borrowed, or into mbuf */
    char *mbuf;          /* merges given as [a, b] pairs, joined */
};

static void vocab_release(struct vocab *v)
{
    free(v->text);
    free(v->len);
    free(v->type);
    free(v->pads);
    free(v->merges);
    free(v->mbuf);
    memset(v, 0, sizeof(*v));
}

/* llama.cpp's converter marks added tokens that look like control tokens
 * as CONTROL even when they are not flagged special. */
static bool looks_special(const char *s)
{
    static const char fw_bar[] = "\xef\xbd\x9c"; /* U+FF5C fullwidth vertical line */
    size_t n = strlen(s);
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") ||
        !strcmp(s, "[@BOS@]"))
        return true;
    if (n >= 4 && !memcmp(s, "<|", 2) && !memcmp(s + n - 2, "|>", 2))
        return true;
    if (n >= 8 && s[0] == '<' && !memcmp(s + 1, fw_bar, 3) && !memcmp(s + n - 4, fw_bar, 3) &&
        s[n - 1] == '>')
        return true;
    return n >= 8 && !memcmp(s, "<unused", 7) && s[n - 1] == '>';
}

static bool is_pad_text(const char *s, size_t len, size_t id)
{
    char b[32];
    int k = snprintf(b, sizeof(b), "[PAD%zu]", id);
    return k > 0 && (size_t)k == len && !memcmp(b, s, len);
}

static ds_err token_id(const cJSON *it, const char *name, const char *tok, int64_t *out)
{
    DS_RETURN_IF(!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
                     it->valuedouble < 0,
                 DS_ERR_FORMAT, "'%s': token '%.80s' has an invalid id", name, tok);
    DS_RETURN_IF(it->valuedouble >= (double)MAX_VOCAB, DS_ERR_LIMIT,
                 "'%s': token '%.80s' has id %.0f, more than %lld tokens", name, tok,
                 it->valuedouble, (long long)MAX_VOCAB);
    *out = (int64_t)it->valuedouble;
    return DS_OK;
}

struct tok_ref {
    const char *s;
    size_t len, id;
};

static int cmp_tok_ref(const void *pa, const void *pb)
{
    const struct tok_ref *a = pa, *b = pb;
    int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Token i is text(i, ctx) of *len bytes. Sets *a < *b to two ids with the
 * same text (tokenizer.json's vocab object cannot hold both), or *b = 0. */
static ds_err same_text(size_t n, const char *(*text)(size_t i, const void *ctx, size_t *len),
                        const void *ctx, size_t *a, size_t *b)
{
    struct tok_ref *r = ds_malloc((n ? n : 1) * sizeof(*r));

    *a = *b = 0;
    if (!r)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        r[i].s = text(i, ctx, &r[i].len);
        r[i].id = i;
    }
    qsort(r, n, sizeof(*r), cmp_tok_ref);
    for (size_t i = 1; i < n; i++) {
        if (r[i].len == r[i - 1].len && !memcmp(r[i].s, r[i - 1].s, r[i].len)) {
            *a = r[i - 1].id;
            *b = r[i].id;
            break;
        }
    }
    free(r);
    return DS_OK;
}

static const char *vocab_text(size_t i, const void *ctx, size_t *len)
{
    const struct vocab *v = ctx;
    *len = v->len[i];
    return v->text[i];
}

static ds_err read_vocab(const cJSON *root, const cJSON *model, const char *name,
                         int64_t vocab_size, struct vocab *v)
{
    const cJSON *vocab = jget(model, "vocab"), *added = jget(root, "added_tokens"), *it;
    int64_t maxid = -1, id;
    size_t npad = 0, off = 0, a, b;

    DS_RETURN_IF(!cJSON_IsObject(vocab), DS_ERR_FORMAT, "'%s': model.vocab is not an object",
                 name);
    DS_RETURN_IF(!jabsent(added) && !cJSON_IsArray(added), DS_ERR_FORMAT,
                 "'%s': added_tokens is not an array", name);
    cJSON_ArrayForEach(it, vocab)
    {
        DS_TRY(token_id(it, name, it->string ? it->string : "", &id));
        maxid = id > maxid ? id : maxid;
    }
    cJSON_ArrayForEach(it, added)
    {
        const cJSON *c = jget(it, "content");
        DS_RETURN_IF(!cJSON_IsString(c), DS_ERR_FORMAT, "'%s': added token without content",
                     name);
        DS_TRY(token_id(jget(it, "id"), name, c->valuestring, &id));
        maxid = id > maxid ? id : maxid;
    }
    v->n = (size_t)(maxid + 1 > vocab_size ? maxid + 1 : vocab_size);
    DS_RETURN_IF(v->n == 0, DS_ERR_FORMAT, "'%s': empty vocabulary", name);
    v->text = ds_calloc(v->n, sizeof(*v->text));
    v->len = ds_calloc(v->n, sizeof(*v->len));
    v->type = ds_calloc(v->n, sizeof(*v->type));
    if (!v->text || !v->len || !v->type)
        return DS_ERR_NOMEM;

    cJSON_ArrayForEach(it, vocab)
    {
        const char *s = it->string ? it->string : "";
        id = (int64_t)it->valuedouble;
        DS_RETURN_IF(v->text[id], DS_ERR_FORMAT, "'%s': tokens '%.80s' and '%.80s' have id %lld",
                     name, v->text[id], s, (long long)id);
        v->text[id] = s;
        v->len[id] = strlen(s);
        v->type[id] = is_pad_text(s, v->len[id], (size_t)id) ? TT_UNUSED : TT_NORMAL;
    }
    cJSON_ArrayForEach(it, added)
    {
        const char *s = jget(it, "content")->valuestring;
        id = (int64_t)jget(it, "id")->valuedouble;
        // The added token wins over a model token with the same id, as in
        // tokenizers' decoding.
        v->text[id] = s;
        v->len[id] = strlen(s);
        v->type[id] = cJSON_IsTrue(jget(it, "special")) || looks_special(s) ? TT_CONTROL : TT_USER;
    }
    for (size_t i = 0; i < v->n; i++)
        npad += !v->text[i];
    if (npad) {
        v->pads = ds_malloc(npad * 24);
        if (!v->pads)
            return DS_ERR_NOMEM;
        for (size_t i = 0; i < v->n; i++) {
            if (v->text[i])
                continue;
            int k = snprintf(v->pads + off, 24, "[PAD%zu]", i);
            v->text[i] = v->pads + off;
            v->len[i] = (size_t)k;
            v->type[i] = TT_UNUSED;
            off += (size_t)k + 1;
        }
    }
    DS_TRY(same_text(v->n, vocab_text, v, &a, &b));
    DS_RETURN_IF(b, DS_ERR_FORMAT, "'%s': token '%.80s' has two ids (%zu and %zu)", name,
                 v->text[b], a, b);
    return DS_OK;
}

static ds_err read_merges(const cJSON *model, const char *name, struct vocab *v)
{
    const cJSON *mg = jget(model, "merges"), *it;
    size_t n = 0, total = 0, k = 0, off = 0;

    if (jabsent(mg))
        return DS_OK;
    DS_RETURN_IF(!cJSON_IsArray(mg), DS_ERR_FORMAT, "'%s': model.merges is not an array", name);
    cJSON_ArrayForEach(it, mg)
    {
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            DS_RETURN_IF(!sp || sp == it->valuestring || !sp[1] || strchr(sp + 1, ' '),
                         DS_ERR_FORMAT, "'%s': merge %zu ('%.80s') is not two tokens", name, n,
                         it->valuestring);
        } else {
            const cJSON *a = cJSON_IsArray(it) ? it->child : NULL, *b = a ? a->next : NULL;
            DS_RETURN_IF(!cJSON_IsString(a) || !cJSON_IsString(b) || b->next, DS_ERR_FORMAT,
                         "'%s': merge %zu is not a string or a pair of strings", name, n);
            DS_RETURN_IF(!a->valuestring[0] || !b->valuestring[0] || strchr(a->valuestring, ' ') ||
                             strchr(b->valuestring, ' '),
                         DS_ERR_UNSUPPORTED, "'%s': merge %zu has an empty token or a space",
                         name, n);
            total += strlen(a->valuestring) + strlen(b->valuestring) + 2;
        }
        n++;
    }
    v->merges = ds_calloc(n, sizeof(*v->merges));
    if (!v->merges)
        return DS_ERR_NOMEM;
    if (total && !(v->mbuf = ds_malloc(total)))
        return DS_ERR_NOMEM;
    cJSON_ArrayForEach(it, mg)
    {
        if (cJSON_IsString(it)) {
            v->merges[k++] = it->valuestring;
        } else {
            const char *a = it->child->valuestring, *b = it->child->next->valuestring;
            size_t la = strlen(a), lb = strlen(b);
            memcpy(v->mbuf + off, a, la);
            v->mbuf[off + la] = ' ';
            memcpy(v->mbuf + off + la + 1, b, lb);
            v->mbuf[off + la + 1 + lb] = '\0';
            v->merges[k++] = v->mbuf + off;
            off += la + lb + 2;
        }
    }
    v->nmerges = n;
    return DS_OK;
}

/* What tokenizer_config.json (or the post-processor) says. */
struct tokcfg {
    int64_t bos, eos, pad; /* -1: unknown */
    int add_bos, add_eos;  /* -1: unknown */
    const char *tmpl;      /* default chat template */
    const cJSON *tmpls;    /* list form: [{name, template}, ...] */
    int64_t max_len;       /* -1: unknown */
};

static int64_t find_token(const struct vocab *v, const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < v->n; i++)
        if (v->len[i] == len && !memcmp(v->text[i], s, len))
            return (int64_t)i;
    return -1;
}

static ds_err cfg_token(const cJSON *cfg, const char *cname, const char *key,
                        const struct vocab *v, int64_t *out)
{
    const cJSON *it = jget(cfg, key);
    const char *s;
    *out = -1;
    if (jabsent(it))
        return DS_OK;
    if (cJSON_IsObject(it))
        it = jget(it, "content");
    DS_RETURN_IF(!cJSON_IsString(it), DS_ERR_FORMAT,
                 "'%s': field '%s' must be a string or an object with a content", cname, key);
    s = it->valuestring;
    *out = find_token(v, s);
    DS_RETURN_IF(*out < 0, DS_ERR_FORMAT, "'%s': %s '%.80s' is not in the vocabulary", cname, key,
                 s);
    return DS_OK;
}

static int cfg_flag(const cJSON *cfg, const char *cname, const char *key, ds_err *rc)
{
    const cJSON *it = jget(cfg, key);
    if (jabsent(it))
        return -1;
    if (!cJSON_IsBool(it)) {
        *rc = ds_set_error(DS_ERR_FORMAT, "'%s': field '%s' must be true or false", cname, key);
        return -1;
    }
    return cJSON_IsTrue(it) ? 1 : 0;
}

static ds_err read_tokcfg(const cJSON *root, const cJSON *cfg, const struct vocab *v,
                          struct tokcfg *tc)
{
    static const char cname[] = "tokenizer_config.json";
    const cJSON *it;
    ds_err rc = DS_OK;

    tc->bos = tc->eos = tc->pad = tc->max_len = -1;
    tc->add_bos = tc->add_eos = -1;
    tc->tmpl = NULL;
    tc->tmpls = NULL;
    if (cfg) {
        DS_RETURN_IF(!cJSON_IsObject(cfg), DS_ERR_FORMAT, "'%s': not a JSON object", cname);
        DS_TRY(cfg_token(cfg, cname, "bos_token", v, &tc->bos));
        DS_TRY(cfg_token(cfg, cname, "eos_token", v, &tc->eos));
        DS_TRY(cfg_token(cfg, cname, "pad_token", v, &tc->pad));
        tc->add_bos = cfg_flag(cfg, cname, "add_bos_token", &rc);
        tc->add_eos = cfg_flag(cfg, cname, "add_eos_token", &rc);
        if (rc)
            return rc;
        it = jget(cfg, "chat_template");
        if (cJSON_IsString(it)) {
            tc->tmpl = it->valuestring;
        } else if (cJSON_IsArray(it)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, it)
            {
                const cJSON *n = jget(e, "name"), *t = jget(e, "template");
                DS_RETURN_IF(!cJSON_IsString(n) || !cJSON_IsString(t) || !n->valuestring[0],
                             DS_ERR_FORMAT,
                             "'%s': chat_template entries need a name and a template", cname);
                if (!strcmp(n->valuestring, "default"))
                    tc->tmpl = t->valuestring;
            }
            tc->tmpls = it;
        } else {
            DS_RETURN_IF(!jabsent(it), DS_ERR_FORMAT,
                         "'%s': chat_template must be a string or a list", cname);
        }
        it = jget(cfg, "model_max_length");
        if (cJSON_IsNumber(it) && it->valuedouble == floor(it->valuedouble) &&
            it->valuedouble > 0 && it->valuedouble < 9007199254740992.0)
            tc->max_len = (int64_t)it->valuedouble;
    }
    if (tc->add_bos < 0) {
        // Without tokenizer_config.json: a BOS template in the post-processor.
        const cJSON *pp = jget(root, "post_processor");
        const cJSON *single = jget(pp, "single");
        if (!strcmp(jtype(pp), "TemplateProcessing") && cJSON_IsArray(single) && single->child)
            tc->add_bos = jget(single->child, "SpecialToken") ? 1 : 0;
    }
    return DS_OK;
}

static ds_err write_tokcfg(struct ds_meta *m, const struct tokcfg *tc)
{
    const cJSON *e;
    if (tc->bos >= 0)
        DS_TRY(put_u32(m, "tokenizer.ggml.bos_token_id", tc->bos));
    if (tc->eos >= 0)
        DS_TRY(put_u32(m, "tokenizer.ggml.eos_token_id", tc->eos));
    if (tc->pad >= 0)
        DS_TRY(put_u32(m, "tokenizer.ggml.padding_token_id", tc->pad));
    if (tc->add_bos >= 0)
        DS_TRY(ds_meta_set_bool(m, "tokenizer.ggml.add_bos_token", tc->add_bos));
    if (tc->add_eos >= 0)
        DS_TRY(ds_meta_set_bool(m, "tokenizer.ggml.add_eos_token", tc->add_eos));
    if (tc->tmpl)
        DS_TRY(ds_meta_set_str(m, "tokenizer.chat_template", tc->tmpl));
    cJSON_ArrayForEach(e, tc->tmpls)
    {
        const char *n = jget(e, "name")->valuestring;
        char key[256];
        if (!strcmp(n, "default"))
            continue;
        DS_RETURN_IF(strlen(n) > 200, DS_ERR_LIMIT, "chat template name '%.40s...' is too long", n);
        snprintf(key, sizeof(key), "tokenizer.chat_template.%s", n);
        DS_TRY(ds_meta_set_str(m, key, jget(e, "template")->valuestring));
    }
    if (tc->max_len > 0)
        DS_TRY(ds_meta_set_u64(m, "dskit.hf.model_max_length", (uint64_t)tc->max_len));
    return DS_OK;
}

ds_err ds_hf_tokenizer_to_meta(const char *tok_json, size_t tok_len, const char *cfg_json,
                               size_t cfg_len, int64_t vocab_size, const char *name,
                               struct ds_meta *m)
{
    cJSON *root = NULL, *cfg = NULL;
    const cJSON *model;
    struct vocab v = {0};
    struct tokcfg tc;
    const char *pre = NULL, *mtype;
    const char *nm = name ? name : "tokenizer.json";
    ds_err rc = DS_OK;

    DS_RETURN_IF(!tok_json || !m, DS_ERR_ARG, "tokenizer text or metadata missing");
    DS_RETURN_IF(vocab_size < 0, DS_ERR_ARG, "negative vocabulary size %lld",
                 (long long)vocab_size);
    DS_RETURN_IF(vocab_size > MAX_VOCAB, DS_ERR_LIMIT, "vocabulary size %lld is too large",
                 (long long)vocab_size);
    DS_CHECK(json_parse(tok_json, tok_len, nm, &root));
    DS_FAIL_IF(!cJSON_IsObject(root), DS_ERR_FORMAT, "'%s': not a JSON object", nm);
    model = jget(root, "model");
    DS_FAIL_IF(!cJSON_IsObject(model), DS_ERR_FORMAT, "'%s': no model object", nm);
    mtype = jtype(model);
    DS_FAIL_IF(strcmp(mtype, "BPE"), DS_ERR_UNSUPPORTED,
               "'%s': tokenizer model '%s' is not supported (byte-level BPE only)", nm,
               mtype[0] ? mtype : "?");
    DS_CHECK(detect_pre(root, nm, &pre));
    DS_CHECK(read_vocab(root, model, nm, vocab_size, &v));
    DS_CHECK(read_merges(model, nm, &v));
    if (cfg_json)
        DS_CHECK(json_parse(cfg_json, cfg_len, "tokenizer_config.json", &cfg));
    DS_CHECK(read_tokcfg(root, cfg, &v, &tc));

    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.model", "gpt2"));
    DS_CHECK(ds_meta_set_str(m, "tokenizer.ggml.pre", pre));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.tokens", v.n, v.text, v.len));
    DS_CHECK(ds_meta_set_arr(m, "tokenizer.ggml.token_type", DS_V_I32, v.n, v.type));
    DS_CHECK(ds_meta_set_str_arr(m, "tokenizer.ggml.merges", v.nmerges, v.merges, NULL));
    DS_CHECK(write_tokcfg(m, &tc));
out:
    vocab_release(&v);
    cJSON_Delete(cfg);
    cJSON_Delete(root);
    return rc;
}

/* ======================================================================== */
/* metadata -> tokenizer.json, tokenizer_config.json                        */
/* ======================================================================== */

static void write_special(struct jw *w, const struct ds_meta *m, long ti, int64_t id, int type_id)
{
    size_t len;
    const char *s = ds_meta_arr_str(m, (size_t)ti, (uint64_t)id, &len);
    jw_open(w, '{');
    jw_key(w, "SpecialToken");
    jw_open(w, '{');
    jw_key(w, "id");
    jw_strn(w, s, len);
    jw_kint(w, "type_id", type_id);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_seq(struct jw *w, const char *id, int type_id)
{
    jw_open(w, '{');
    jw_key(w, "Sequence");
    jw_open(w, '{');
    jw_kstr(w, "id", id);
    jw_kint(w, "type_id", type_id);
    jw_close(w, '}');
    jw_close(w, '}');
}

/* [BOS] sequence [EOS] of a TemplateProcessing entry. */
static void write_template_seq(struct jw *w, const struct ds_meta *m, long ti, int64_t bos,
                               int64_t eos, const char *seq, int type_id)
{
    if (bos >= 0)
        write_special(w, m, ti, bos, type_id);
    write_seq(w, seq, type_id);
    if (eos >= 0)
        write_special(w, m, ti, eos, type_id);
}

static void write_special_map(struct jw *w, const struct ds_meta *m, long ti, int64_t id)
{
    size_t len;
    const char *s = ds_meta_arr_str(m, (size_t)ti, (uint64_t)id, &len);
    jw_key(w, s); // token texts hold no NUL bytes here: they came from JSON
    jw_open(w, '{');
    jw_key(w, "id");
    jw_strn(w, s, len);
    jw_key(w, "ids");
    jw_open(w, '[');
    jw_int(w, id);
    jw_close(w, ']');
    jw_key(w, "tokens");
    jw_open(w, '[');
    jw_strn(w, s, len);
    jw_close(w, ']');
    jw_close(w, '}');
}

/* TemplateProcessing adding BOS and/or EOS, as Hugging Face writes it. */
static void write_post_processor(struct jw *w, const struct ds_meta *m, long ti, int64_t bos,
                                 int64_t eos)
{
    jw_key(w, "post_processor");
    if (bos < 0 && eos < 0) {
        jw_null(w);
        return;
    }
    jw_open(w, '{');
    jw_kstr(w, "type", "TemplateProcessing");
    jw_key(w, "single");
    jw_open(w, '[');
    write_template_seq(w, m, ti, bos, eos, "A", 0);
    jw_close(w, ']');
    jw_key(w, "pair");
    jw_open(w, '[');
    write_template_seq(w, m, ti, bos, eos, "A", 0);
    write_template_seq(w, m, ti, bos, eos, "B", 1);
    jw_close(w, ']');
    jw_key(w, "special_tokens");
    jw_open(w, '{');
    if (bos >= 0)
        write_special_map(w, m, ti, bos);
    if (eos >= 0 && eos != bos)
        write_special_map(w, m, ti, eos);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_pre_tokenizer(struct jw *w, const struct pretok_def *d)
{
    jw_key(w, "pre_tokenizer");
    jw_open(w, '{');
    jw_kstr(w, "type", "Sequence");
    jw_key(w, "pretokenizers");
    jw_open(w, '[');
    for (size_t i = 0; i < d->nre; i++) {
        jw_open(w, '{');
        jw_kstr(w, "type", "Split");
        jw_key(w, "pattern");
        jw_open(w, '{');
        jw_kstr(w, "Regex", d->re[i]);
        jw_close(w, '}');
        jw_kstr(w, "behavior", "Isolated");
        jw_kbool(w, "invert", false);
        jw_close(w, '}');
    }
    if (d->digits) {
        jw_open(w, '{');
        jw_kstr(w, "type", "Digits");
        jw_kbool(w, "individual_digits", true);
        jw_close(w, '}');
    }
    jw_open(w, '{');
    jw_kstr(w, "type", "ByteLevel");
    jw_kbool(w, "add_prefix_space", false);
    jw_kbool(w, "trim_offsets", true);
    jw_kbool(w, "use_regex", false);
    jw_close(w, '}');
    jw_close(w, ']');
    jw_close(w, '}');
}

/* Token id key in [0, n) or -1 when absent. */
static ds_err meta_token_id(const struct ds_meta *m, const char *key, uint64_t n, int64_t *out)
{
    int64_t v;
    *out = -1;
    if (!ds_meta_get_int(m, key, &v))
        return DS_OK;
    DS_RETURN_IF(v < 0 || (uint64_t)v >= n, DS_ERR_FORMAT,
                 "metadata: %s = %lld is outside the vocabulary (%llu tokens)", key,
                 (long long)v, (unsigned long long)n);
    *out = v;
    return DS_OK;
}

static void write_token_cfg(struct jw *w, const struct ds_meta *m, long ti, const char *key,
                            int64_t id)
{
    if (id < 0)
        return;
    size_t len;
    const char *s = ds_meta_arr_str(m, (size_t)ti, (uint64_t)id, &len);
    jw_key(w, key);
    jw_strn(w, s, len);
}

static ds_err write_tokenizer_config(const struct ds_meta *m, long ti, int64_t bos, int64_t eos,
                                     int64_t pad, char **out)
{
    struct jw w = {0};
    bool b, has_named = false;
    int64_t maxlen;
    const char *tmpl = ds_meta_get_str(m, "tokenizer.chat_template", NULL);
    static const char tpfx[] = "tokenizer.chat_template.";

    for (size_t i = 0; i < ds_meta_count(m); i++)
        if (!strncmp(ds_meta_key(m, i), tpfx, sizeof(tpfx) - 1) &&
            ds_meta_type(m, i) == DS_V_STR)
            has_named = true;
    jw_open(&w, '{');
    if (ds_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b)) {
        jw_kbool(&w, "add_bos_token", b);
    }
    if (ds_meta_get_bool(m, "tokenizer.ggml.add_eos_token", &b)) {
        jw_kbool(&w, "add_eos_token", b);
    }
    write_token_cfg(&w, m, ti, "bos_token", bos);
    jw_kbool(&w, "clean_up_tokenization_spaces", false);
    write_token_cfg(&w, m, ti, "eos_token", eos);
    jw_kbool(&w, "legacy", true);
    if (ds_meta_get_int(m, "dskit.hf.model_max_length", &maxlen) && maxlen > 0) {
        jw_kint(&w, "model_max_length", maxlen);
    }
    write_token_cfg(&w, m, ti, "pad_token", pad);
    jw_kstr(&w, "tokenizer_class", "LlamaTokenizerFast");
    if (has_named) {
        jw_key(&w, "chat_template");
        jw_open(&w, '[');
        if (tmpl) {
            jw_open(&w, '{');
            jw_kstr(&w, "name", "default");
            jw_kstr(&w, "template", tmpl);
            jw_close(&w, '}');
        }
        for (size_t i = 0; i < ds_meta_count(m); i++) {
            const char *k = ds_meta_key(m, i);
            size_t len;
            const char *t;
            if (strncmp(k, tpfx, sizeof(tpfx) - 1) || !(t = ds_meta_str(m, i, &len)))
                continue;
            jw_open(&w, '{');
            jw_kstr(&w, "name", k + sizeof(tpfx) - 1);
            jw_key(&w, "template");
            jw_strn(&w, t, len);
            jw_close(&w, '}');
        }
        jw_close(&w, ']');
    } else if (tmpl) {
        size_t len;
        tmpl = ds_meta_get_str(m, "tokenizer.chat_template", &len);
        jw_key(&w, "chat_template");
        jw_strn(&w, tmpl, len);
    }
    jw_close(&w, '}');
    return jw_finish(&w, out);
}

struct meta_tokens {
    const struct ds_meta *m;
    size_t ti;
};

static const char *meta_text(size_t i, const void *ctx, size_t *len)
{
    const struct meta_tokens *t = ctx;
    return ds_meta_arr_str(t->m, t->ti, i, len);
}

ds_err ds_hf_meta_to_tokenizer(const struct ds_meta *m, char **tok_json, char **cfg_json)
{
    const char *model, *pre;
    const struct pretok_def *d;
    const int32_t *types = NULL;
    enum ds_vtype el;
    uint64_t n, nmerges = 0;
    long ti, yi, mi;
    int64_t bos, eos, pad;
    bool add_bos = false, add_eos = false;
    struct jw w = {0};
    ds_err rc = DS_OK;

    DS_RETURN_IF(!m || !tok_json || !cfg_json, DS_ERR_ARG, "metadata or outputs missing");
    *tok_json = *cfg_json = NULL;
    ti = ds_meta_find(m, "tokenizer.ggml.tokens");
    DS_RETURN_IF(ti < 0, DS_ERR_NOT_FOUND, "metadata has no tokenizer (tokenizer.ggml.tokens)");
    DS_RETURN_IF(!ds_meta_arr(m, (size_t)ti, &el, &n) || el != DS_V_STR || n == 0,
                 DS_ERR_FORMAT, "metadata: tokenizer.ggml.tokens is not a list of strings");
    model = ds_meta_get_str(m, "tokenizer.ggml.model", NULL);
    DS_RETURN_IF(!model || strcmp(model, "gpt2"), DS_ERR_UNSUPPORTED,
                 "tokenizer model '%s' is not supported (gpt2 byte-level BPE only)",
                 model ? model : "?");
    pre = ds_meta_get_str(m, "tokenizer.ggml.pre", NULL);
    d = pre ? pretok_find(pre) : NULL;
    DS_RETURN_IF(!d, DS_ERR_UNSUPPORTED,
                 "pre-tokenizer '%s' is not supported (deepseek-v3, deepseek-llm, deepseek-coder)",
                 pre ? pre : "?");
    if ((yi = ds_meta_find(m, "tokenizer.ggml.token_type")) >= 0) {
        uint64_t nt;
        DS_RETURN_IF(!ds_meta_arr(m, (size_t)yi, &el, &nt) || el != DS_V_I32 || nt != n,
                     DS_ERR_FORMAT, "metadata: tokenizer.ggml.token_type is not %llu int32",
                     (unsigned long long)n);
        types = ds_meta_arr_data(m, (size_t)yi);
    }
    if ((mi = ds_meta_find(m, "tokenizer.ggml.merges")) >= 0)
        DS_RETURN_IF(!ds_meta_arr(m, (size_t)mi, &el, &nmerges) || el != DS_V_STR,
                     DS_ERR_FORMAT, "metadata: tokenizer.ggml.merges is not a list of strings");
    DS_TRY(meta_token_id(m, "tokenizer.ggml.bos_token_id", n, &bos));
    DS_TRY(meta_token_id(m, "tokenizer.ggml.eos_token_id", n, &eos));
    DS_TRY(meta_token_id(m, "tokenizer.ggml.padding_token_id", n, &pad));
    if (!ds_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &add_bos))
        add_bos = false;
    if (!ds_meta_get_bool(m, "tokenizer.ggml.add_eos_token", &add_eos))
        add_eos = false;
    {
        struct meta_tokens mt = {m, (size_t)ti};
        size_t a, b, len;
        DS_TRY(same_text((size_t)n, meta_text, &mt, &a, &b));
        DS_RETURN_IF(b, DS_ERR_UNSUPPORTED,
                     "metadata: token '%.80s' has two ids (%zu and %zu), which tokenizer.json "
                     "cannot hold",
                     meta_text(b, &mt, &len), a, b);
    }

    jw_open(&w, '{');
    jw_kstr(&w, "version", "1.0");
    jw_knull(&w, "truncation");
    jw_knull(&w, "padding");
    jw_key(&w, "added_tokens");
    jw_open(&w, '[');
    for (uint64_t i = 0; types && i < n; i++) {
        size_t len;
        const char *s;
        if (types[i] != TT_CONTROL && types[i] != TT_USER)
            continue;
        s = ds_meta_arr_str(m, (size_t)ti, i, &len);
        jw_open(&w, '{');
        jw_kint(&w, "id", (int64_t)i);
        jw_key(&w, "content");
        jw_strn(&w, s, len);
        jw_kbool(&w, "single_word", false);
        jw_kbool(&w, "lstrip", false);
        jw_kbool(&w, "rstrip", false);
        jw_kbool(&w, "normalized", types[i] != TT_CONTROL);
        jw_kbool(&w, "special", types[i] == TT_CONTROL);
        jw_close(&w, '}');
    }
    jw_close(&w, ']');
    jw_knull(&w, "normalizer");
    write_pre_tokenizer(&w, d);
    write_post_processor(&w, m, ti, add_bos ? bos : -1, add_eos ? eos : -1);
    jw_key(&w, "decoder");
    jw_open(&w, '{');
    jw_kstr(&w, "type", "ByteLevel");
    jw_kbool(&w, "add_prefix_space", true);
    jw_kbool(&w, "trim_offsets", true);
    jw_kbool(&w, "use_regex", true);
    jw_close(&w, '}');
    jw_key(&w, "model");
    jw_open(&w, '{');
    jw_kstr(&w, "type", "BPE");
    jw_knull(&w, "dropout");
    jw_knull(&w, "unk_token");
    jw_knull(&w, "continuing_subword_prefix");
    jw_knull(&w, "end_of_word_suffix");
    jw_kbool(&w, "fuse_unk", false);
    jw_kbool(&w, "byte_fallback", false);
    jw_kbool(&w, "ignore_merges", false);
    jw_key(&w, "vocab");
    jw_open(&w, '{');
    for (uint64_t i = 0; i < n && !w.b.err; i++) {
        size_t len;
        const char *s = ds_meta_arr_str(m, (size_t)ti, i, &len);
        jw_keyn(&w, s, len);
        jw_int(&w, (int64_t)i);
    }
    jw_close(&w, '}');
    jw_key(&w, "merges");
    jw_open(&w, '[');
    for (uint64_t i = 0; i < nmerges && !w.b.err; i++) {
        size_t len;
        const char *s = ds_meta_arr_str(m, (size_t)mi, i, &len);
        jw_strn(&w, s, len);
    }
    jw_close(&w, ']');
    jw_close(&w, '}');
    jw_close(&w, '}');
    DS_CHECK(jw_finish(&w, tok_json));
    DS_CHECK(write_tokenizer_config(m, ti, bos, eos, pad, cfg_json));
out:
    ds_sbuf_release(&w.b);
    if (rc) {
        free(*tok_json);
        *tok_json = NULL;
    }
    return rc;
}

/* For training (train_impl.h): metadata of a model built from hyper-parameters. */
ds_err ds_hf_hparams_to_meta(const struct ds_hparams *hp, const char *gname, struct ds_meta *m);
ds_err ds_hf_hparams_to_meta(const struct ds_hparams *hp, const char *gname, struct ds_meta *m)
{
    return hparams_to_meta(hp, gname, m);
}
