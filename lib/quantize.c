/* quantize.c - per-tensor quantization types: presets, rules, fallbacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


#include "ds_quantize.h"
#include "error_impl.h"
#include "rules_impl.h"
#include "ds_banned.h"

#define MAX_RULES 64

struct rule {
    pcre2_code *re;
    enum ds_type type;
};

/* A preset: the base type, types for tensors that get more bits, the
 * llama_ftype it is known by. */
struct preset {
    const char *name;
    enum ds_type base;
    enum ds_type output;     /* output.weight */
    enum ds_type more_bits;  /* attn_v_b, attn_kv_b, ffn_down*: in "more bits" layers; 0: base */
    bool all_layers;         /* more_bits in every layer, not only some */
    int ftype;
    const char *help;
};

static const struct preset presets[] = {
    {"q2_k", DS_TYPE_Q2_K, DS_TYPE_Q6_K, DS_TYPE_Q4_K, true, 10,
     "q2_K; attention value and ffn_down q4_K; output q6_K"},
    {"q3_k_s", DS_TYPE_Q3_K, DS_TYPE_Q6_K, 0, false, 11, "q3_K everywhere; output q6_K"},
    {"q3_k_m", DS_TYPE_Q3_K, DS_TYPE_Q6_K, DS_TYPE_Q4_K, false, 12,
     "q3_K; attention value and ffn_down q4_K in the first and last eighth and every third layer"},
    {"q3_k_l", DS_TYPE_Q3_K, DS_TYPE_Q6_K, DS_TYPE_Q5_K, true, 13,
     "q3_K; attention value and ffn_down q5_K; output q6_K"},
    {"q4_k_s", DS_TYPE_Q4_K, DS_TYPE_Q6_K, 0, false, 14, "q4_K everywhere; output q6_K"},
    {"q4_k_m", DS_TYPE_Q4_K, DS_TYPE_Q6_K, DS_TYPE_Q6_K, false, 15,
     "q4_K; attention value and ffn_down q6_K in the first and last eighth and every third layer; output q6_K"},
    {"q5_k_s", DS_TYPE_Q5_K, DS_TYPE_Q6_K, 0, false, 16, "q5_K everywhere; output q6_K"},
    {"q5_k_m", DS_TYPE_Q5_K, DS_TYPE_Q6_K, DS_TYPE_Q6_K, false, 17,
     "q5_K; attention value and ffn_down q6_K as in q4_k_m; output q6_K"},
    {"q6_k", DS_TYPE_Q6_K, DS_TYPE_Q6_K, 0, false, 18, "q6_K everywhere"},
};

struct ds_qrules {
    enum ds_type base;
    const struct preset *preset;
    int64_t n_layers;
    struct rule rules[MAX_RULES];
    int n_rules;
    int output, embd; /* -1: unset */
    char note[160];
};

/* llama_ftype of a single type, or -1. */
static int ftype_of(enum ds_type t)
{
    switch (t) {
    case DS_TYPE_F32: return 0;
    case DS_TYPE_F16: return 1;
    case DS_TYPE_Q4_0: return 2;
    case DS_TYPE_Q4_1: return 3;
    case DS_TYPE_Q8_0: return 7;
    case DS_TYPE_Q5_0: return 8;
    case DS_TYPE_Q5_1: return 9;
    case DS_TYPE_Q2_K: return 10;
    case DS_TYPE_Q3_K: return 12;
    case DS_TYPE_Q4_K: return 15;
    case DS_TYPE_Q5_K: return 17;
    case DS_TYPE_Q6_K: return 18;
    case DS_TYPE_IQ4_NL: return 25;
    case DS_TYPE_IQ4_XS: return 30;
    case DS_TYPE_BF16: return 32;
    default: return -1;
    }
}

static bool writable(enum ds_type t)
{
    return t == DS_TYPE_F32 || t == DS_TYPE_F16 || t == DS_TYPE_BF16 || t == DS_TYPE_F8_E4M3 ||
           ftype_of(t) >= 0;
}

static ds_err parse_type(const char *s, enum ds_type *t)
{
    DS_RETURN_IF(ds_type_from_name(s, t) != DS_OK || !writable(*t), DS_ERR_ARG,
                 "unknown or unsupported type '%s'", s);
    return DS_OK;
}

ds_err ds_qrules_new(const char *target, int64_t n_layers, struct ds_qrules **out)
{
    struct ds_qrules *r = ds_calloc(1, sizeof(*r));
    if (!r)
        return DS_ERR_NOMEM;
    r->n_layers = n_layers;
    r->output = r->embd = -1;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
        if (!strcasecmp(target, presets[i].name)) {
            r->preset = &presets[i];
            r->base = presets[i].base;
        }
    if (!r->preset) {
        /* llama.cpp's aliases: q4_k is q4_k_m and so on */
        static const char *const alias[][2] = {{"q3_k", "q3_k_m"}, {"q4_k", "q4_k_m"},
                                               {"q5_k", "q5_k_m"}};
        for (size_t i = 0; i < 3; i++)
            if (!strcasecmp(target, alias[i][0]))
                for (size_t j = 0; j < sizeof(presets) / sizeof(presets[0]); j++)
                    if (!strcmp(presets[j].name, alias[i][1])) {
                        r->preset = &presets[j];
                        r->base = presets[j].base;
                    }
    }
    if (!r->preset && parse_type(target, &r->base) != DS_OK) {
        free(r);
        return ds_set_error(DS_ERR_ARG,
                            "unknown type or preset '%s' (try q4_k_m, q8_0, q4_0, iq4_nl, f16)",
                            target);
    }
    *out = r;
    return DS_OK;
}

void ds_qrules_free(struct ds_qrules *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_rules; i++)
        pcre2_code_free(r->rules[i].re);
    free(r);
}

void ds_qrules_set_layers(struct ds_qrules *r, int64_t n_layers)
{
    r->n_layers = n_layers;
}

ds_err ds_qrules_add(struct ds_qrules *r, const char *rule)
{
    const char *eq = strrchr(rule, '=');
    enum ds_type t;

    DS_RETURN_IF(!eq || eq == rule || !eq[1], DS_ERR_ARG, "'%s' is not REGEX=TYPE", rule);
    DS_RETURN_IF(r->n_rules == MAX_RULES, DS_ERR_LIMIT, "more than %d --tensor-type rules",
                 MAX_RULES);
    DS_TRY(parse_type(eq + 1, &t));
    pcre2_code *re;
    DS_TRY(ds_rule_regex(rule, eq, &re));
    r->rules[r->n_rules].re = re;
    r->rules[r->n_rules].type = t;
    r->n_rules++;
    return DS_OK;
}

ds_err ds_rule_regex(const char *rule, const char *eq, pcre2_code **re)
{
    PCRE2_SIZE off;
    int err;
    *re = pcre2_compile((PCRE2_SPTR)rule, (PCRE2_SIZE)(eq - rule), PCRE2_UTF, &err, &off, NULL);
    if (!*re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return ds_set_error(DS_ERR_ARG, "bad regex in '%s' at offset %zu: %s", rule,
                            (size_t)off, (const char *)msg);
    }
    return DS_OK;
}

ds_err ds_qrules_set_output(struct ds_qrules *r, const char *type)
{
    enum ds_type t;
    DS_TRY(parse_type(type, &t));
    r->output = (int)t;
    return DS_OK;
}

ds_err ds_qrules_set_embd(struct ds_qrules *r, const char *type)
{
    enum ds_type t;
    DS_TRY(parse_type(type, &t));
    r->embd = (int)t;
    return DS_OK;
}

static bool matches(const struct rule *ru, const char *name)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(ru->re, NULL);
    int rc;
    if (!md)
        return false;
    rc = pcre2_match(ru->re, (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* llama.cpp's use_more_bits: the first and last eighth of the layers and
 * every third layer in between. */
static bool more_bits_layer(int64_t i, int64_t n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static enum ds_type fallback(enum ds_type t, int64_t ne0, char *note, size_t cap,
                             const char **out_note)
{
    enum ds_type f = t;
    if (ds_type_block_size(t) <= 1 || ne0 % ds_type_block_size(t) == 0)
        return t;
    switch (t) {
    case DS_TYPE_Q4_K: f = DS_TYPE_Q5_0; break;
    case DS_TYPE_Q5_K: f = DS_TYPE_Q5_1; break;
    case DS_TYPE_Q6_K: f = DS_TYPE_Q8_0; break;
    case DS_TYPE_Q2_K:
    case DS_TYPE_Q3_K:
    case DS_TYPE_IQ4_XS: f = DS_TYPE_IQ4_NL; break;
    default: f = DS_TYPE_F16; break;
    }
    if (ds_type_block_size(f) > 1 && ne0 % ds_type_block_size(f))
        f = DS_TYPE_F16;
    snprintf(note, cap, "%s -> %s: row of %lld is not a multiple of %lld", ds_type_name(t),
             ds_type_name(f), (long long)ne0, (long long)ds_type_block_size(t));
    *out_note = note;
    return f;
}

/* Embeddings and output heads: token_embd, output and the MTP layer's copies. */
static bool is_embd_or_head(const char *name)
{
    return !strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight") ||
           strstr(name, ".nextn.embed_tokens.") || strstr(name, ".nextn.shared_head_head.");
}

/* FP8 tiles need a matrix: a 1-D tensor asked to be fp8 stays f32. */
static enum ds_type fp8_matrix(enum ds_type t, uint32_t n_dims, char *note, size_t cap,
                               const char **out_note)
{
    if (t != DS_TYPE_F8_E4M3 || n_dims >= 2)
        return t;
    snprintf(note, cap, "f8_e4m3 -> f32: a vector has no 2-D tiles");
    *out_note = note;
    return DS_TYPE_F32;
}

enum ds_type ds_qrules_type(struct ds_qrules *r, const char *name, uint32_t n_dims,
                            const int64_t *ne, enum ds_type source, const char **note)
{
    enum ds_type t = r->base;
    long layer = -1;

    *note = NULL;
    for (int i = 0; i < r->n_rules; i++)
        if (matches(&r->rules[i], name))
            return fallback(fp8_matrix(r->rules[i].type, n_dims, r->note, sizeof(r->note), note),
                            ne[0], r->note, sizeof(r->note), note);
    if (!strcmp(name, "output.weight") && r->output >= 0)
        return fallback(fp8_matrix((enum ds_type)r->output, n_dims, r->note, sizeof(r->note), note),
                        ne[0], r->note, sizeof(r->note), note);
    if (!strcmp(name, "token_embd.weight") && r->embd >= 0)
        return fallback(fp8_matrix((enum ds_type)r->embd, n_dims, r->note, sizeof(r->note), note),
                        ne[0], r->note, sizeof(r->note), note);
    if (n_dims <= 1 || strstr(name, "_norm") || strstr(name, "ffn_gate_inp") ||
        strstr(name, "exp_probs_b") || strstr(name, "_scale_inv"))
        return DS_TYPE_F32;
    /* as DeepSeek's FP8 checkpoints: embeddings and heads keep their type */
    if (t == DS_TYPE_F8_E4M3 && is_embd_or_head(name))
        return source;
    if (!strncmp(name, "blk.", 4))
        layer = strtol(name + 4, NULL, 10);
    if (r->preset) {
        const struct preset *p = r->preset;
        if (!strcmp(name, "output.weight"))
            t = p->output;
        else if (p->more_bits && layer >= 0 &&
                 (strstr(name, "attn_v_b") || strstr(name, "attn_kv_b") ||
                  strstr(name, "ffn_down")) &&
                 (p->all_layers || more_bits_layer(layer, r->n_layers)))
            t = p->more_bits;
    }
    return fallback(t, ne[0], r->note, sizeof(r->note), note);
}

int ds_qrules_file_type(const struct ds_qrules *r)
{
    return r->preset ? r->preset->ftype : ftype_of(r->base);
}

const char *ds_qrules_preset_help(void)
{
    static char buf[2048];
    size_t n = 0;
    if (buf[0])
        return buf;
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]) && n < sizeof(buf); i++) {
        int k = snprintf(buf + n, sizeof(buf) - n, "%-7s %s\n", presets[i].name, presets[i].help);
        if (k < 0)
            break;
        n += (size_t)k;
    }
    return buf;
}
