/* test_hf.c - config.json and tokenizer files <-> deepseek2 metadata. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_error.h"
#include "ds_hf.h"
#include "ds_io.h"
#include "ds_meta.h"
#include "test.h"

/* Whole file, NUL-terminated (NULL on failure). */
/* A whole test file, NUL-terminated (free with free()), or NULL. */
static char *slurp(const char *path, size_t *len)
{
    char *buf = NULL;
    return ds_read_file(path, (size_t)1 << 28, &buf, len) == DS_OK ? buf : NULL;
}

/* Every member of want is in got with an equal value (numbers as doubles;
 * objects recursively; arrays element by element). */
static int json_covers(const cJSON *want, const cJSON *got, const char *path)
{
    const cJSON *c;
    if (cJSON_IsNumber(want)) {
        if (!cJSON_IsNumber(got) || want->valuedouble != got->valuedouble) {
            fprintf(stderr, "  %s: number %.17g differs\n", path, want->valuedouble);
            return 0;
        }
        return 1;
    }
    if (cJSON_IsObject(want)) {
        if (!cJSON_IsObject(got)) {
            fprintf(stderr, "  %s: not an object\n", path);
            return 0;
        }
        cJSON_ArrayForEach(c, want)
        {
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, c->string);
            if (!g) {
                fprintf(stderr, "  %s.%s: missing\n", path, c->string);
                return 0;
            }
            if (!json_covers(c, g, c->string))
                return 0;
        }
        return 1;
    }
    if (cJSON_IsArray(want)) {
        const cJSON *g;
        if (!cJSON_IsArray(got) || cJSON_GetArraySize(want) != cJSON_GetArraySize(got)) {
            fprintf(stderr, "  %s: array differs\n", path);
            return 0;
        }
        for (c = want->child, g = got->child; c; c = c->next, g = g->next)
            if (!json_covers(c, g, path))
                return 0;
        return 1;
    }
    if (!cJSON_Compare(want, got, true)) {
        fprintf(stderr, "  %s: value differs\n", path);
        return 0;
    }
    return 1;
}

/* Same keys in the same order with the same types and values. */
static int meta_equal(const struct ds_meta *a, const struct ds_meta *b)
{
    if (ds_meta_count(a) != ds_meta_count(b)) {
        fprintf(stderr, "  count %zu != %zu\n", ds_meta_count(a), ds_meta_count(b));
        return 0;
    }
    for (size_t i = 0; i < ds_meta_count(a); i++) {
        const char *k = ds_meta_key(a, i);
        enum ds_vtype t = ds_meta_type(a, i);
        if (strcmp(k, ds_meta_key(b, i)) || t != ds_meta_type(b, i)) {
            fprintf(stderr, "  entry %zu: %s vs %s\n", i, k, ds_meta_key(b, i));
            return 0;
        }
        if (t == DS_V_STR) {
            size_t la, lb;
            const char *sa = ds_meta_str(a, i, &la), *sb = ds_meta_str(b, i, &lb);
            if (la != lb || memcmp(sa, sb, la)) {
                fprintf(stderr, "  %s: strings differ\n", k);
                return 0;
            }
        } else if (t == DS_V_ARR) {
            enum ds_vtype ea, eb;
            uint64_t na, nb;
            ds_meta_arr(a, i, &ea, &na);
            ds_meta_arr(b, i, &eb, &nb);
            if (ea != eb || na != nb) {
                fprintf(stderr, "  %s: arrays differ in type or size\n", k);
                return 0;
            }
            for (uint64_t j = 0; j < na; j++) {
                if (ea == DS_V_STR) {
                    size_t la, lb;
                    const char *sa = ds_meta_arr_str(a, i, j, &la);
                    const char *sb = ds_meta_arr_str(b, i, j, &lb);
                    if (la != lb || memcmp(sa, sb, la)) {
                        fprintf(stderr, "  %s[%llu] differs\n", k, (unsigned long long)j);
                        return 0;
                    }
                }
            }
            if (ea != DS_V_STR &&
                memcmp(ds_meta_arr_data(a, i), ds_meta_arr_data(b, i), na * ds_vtype_size(ea))) {
                fprintf(stderr, "  %s: array data differs\n", k);
                return 0;
            }
        } else if (memcmp(ds_meta_scalar(a, i), ds_meta_scalar(b, i), ds_vtype_size(t))) {
            fprintf(stderr, "  %s: value differs\n", k);
            return 0;
        }
    }
    return 1;
}

static int64_t mint(const struct ds_meta *m, const char *key)
{
    int64_t v = -12345;
    ds_meta_get_int(m, key, &v);
    return v;
}

static double mflt(const struct ds_meta *m, const char *key)
{
    double v = -12345;
    ds_meta_get_float(m, key, &v);
    return v;
}

static const char *mstr(const struct ds_meta *m, const char *key)
{
    const char *s = ds_meta_get_str(m, key, NULL);
    return s ? s : "(missing)";
}

static int hparams_equal(const struct ds_hparams *a, const struct ds_hparams *b)
{
#define F(x)                                                                            \
    if (a->x != b->x) {                                                                 \
        fprintf(stderr, "  hparams." #x " differs\n");                                  \
        return 0;                                                                       \
    }
    F(vocab_size) F(hidden_size) F(intermediate_size) F(moe_intermediate_size) F(n_layers)
    F(n_nextn) F(n_heads) F(q_lora_rank) F(kv_lora_rank) F(qk_nope_head_dim)
    F(qk_rope_head_dim) F(v_head_dim) F(n_routed_experts) F(n_shared_experts)
    F(n_experts_per_tok) F(n_group) F(topk_group) F(first_k_dense_replace) F(moe_layer_freq)
    F(norm_topk_prob) F(routed_scaling_factor) F(rms_norm_eps) F(rope_theta) F(has_yarn)
    F(yarn_factor) F(yarn_original_max_pos) F(yarn_beta_fast) F(yarn_beta_slow)
    F(yarn_mscale) F(yarn_mscale_all_dim) F(max_position_embeddings) F(tie_word_embeddings)
    F(bos_token_id) F(eos_token_id) F(fp8) F(fp8_block[0]) F(fp8_block[1])
#undef F
    if (strcmp(a->model_type, b->model_type) || strcmp(a->scoring_func, b->scoring_func) ||
        strcmp(a->topk_method, b->topk_method)) {
        fprintf(stderr, "  hparams strings differ\n");
        return 0;
    }
    return 1;
}

/* ---- config ------------------------------------------------------------- */

static void config_roundtrip(const char *dir, bool fp8_in)
{
    char path[256];
    size_t len;
    char *json, *out = NULL, *out2 = NULL;
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    struct ds_hparams hp, hp2;
    cJSON *orig = NULL, *back = NULL, *c;

    snprintf(path, sizeof(path), "%s/config.json", dir);
    json = slurp(test_data(path), &len);
    ASSERT_MSG(json && m && m2, "cannot read %s", path);
    ASSERT_OK(ds_hf_config_parse(json, len, path, &hp));
    ASSERT_EQ_INT(hp.fp8, fp8_in);
    ASSERT_OK(ds_hf_config_to_meta(json, len, path, m));
    ASSERT_OK(ds_hparams_from_meta(m, &hp2));
    ASSERT(hparams_equal(&hp, &hp2));

    ASSERT_OK(ds_hf_meta_to_config(m, "bfloat16", fp8_in, &out));
    orig = cJSON_Parse(json);
    back = cJSON_Parse(out);
    ASSERT(orig && back);
    cJSON_ArrayForEach(c, orig)
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(back, c->string);
        if (!strcmp(c->string, "torch_dtype") || !strcmp(c->string, "quantization_config"))
            continue;
        ASSERT_MSG(g, "field '%s' missing", c->string);
        ASSERT_MSG(json_covers(c, g, c->string), "field '%s' differs", c->string);
    }
    ASSERT_STR(cJSON_GetObjectItem(back, "torch_dtype")->valuestring, "bfloat16");
    ASSERT_EQ_INT(cJSON_GetObjectItem(back, "quantization_config") != NULL, fp8_in);
    if (fp8_in)
        ASSERT(json_covers(cJSON_GetObjectItem(orig, "quantization_config"),
                           cJSON_GetObjectItem(back, "quantization_config"), "qc"));

    // The config rebuilt with the original dtype gives the same metadata
    // again, and fp8 = false drops the quantization_config.
    free(out);
    out = NULL;
    ASSERT_OK(ds_hf_meta_to_config(m, NULL, fp8_in, &out));
    ASSERT_OK(ds_hf_config_to_meta(out, strlen(out), path, m2));
    ASSERT(meta_equal(m, m2));
    ASSERT_OK(ds_hf_meta_to_config(m, NULL, false, &out2));
    ASSERT(!strstr(out2, "quantization_config"));
    ASSERT(strstr(out2, "\"torch_dtype\": \"float32\"")); // NULL keeps the original
    ASSERT(strncmp(out, "{\n  \"architectures\": [\n    \"Deepseek", 36) == 0);

    free(out2);
    free(out);
    cJSON_Delete(orig);
    cJSON_Delete(back);
    ds_meta_free(m);
    ds_meta_free(m2);
    free(json);
}

TEST(config_roundtrip_v3)
{
    config_roundtrip("tiny-v3-fp8", true);
}

TEST(config_roundtrip_v2lite)
{
    config_roundtrip("tiny-v2lite", false);
}

TEST(config_meta_keys_v3)
{
    size_t len;
    char *json = slurp(test_data("tiny-v3-fp8/config.json"), &len);
    struct ds_meta *m = ds_meta_new();
    ASSERT(json && m);
    ASSERT_OK(ds_hf_config_to_meta(json, len, "some/dir/tiny-v3-fp8/config.json", m));
    ASSERT_STR(mstr(m, "general.architecture"), "deepseek2");
    ASSERT_STR(mstr(m, "general.name"), "tiny-v3-fp8");
    ASSERT_EQ_INT(mint(m, "deepseek2.block_count"), 4); // 3 + 1 MTP layer
    ASSERT_EQ_INT(mint(m, "deepseek2.nextn_predict_layers"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.context_length"), 256);
    ASSERT_EQ_INT(mint(m, "deepseek2.embedding_length"), 192);
    ASSERT_EQ_INT(mint(m, "deepseek2.feed_forward_length"), 384);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.head_count"), 4);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.head_count_kv"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.key_length"), 64 + 16);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.value_length"), 64);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.key_length_mla"), 32 + 16);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.value_length_mla"), 32);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.q_lora_rank"), 96);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.kv_lora_rank"), 64);
    ASSERT_EQ_INT(mint(m, "deepseek2.rope.dimension_count"), 16);
    ASSERT_EQ_INT(mint(m, "deepseek2.leading_dense_block_count"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_count"), 16);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_used_count"), 4);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_shared_count"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_group_count"), 4);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_group_used_count"), 2);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_feed_forward_length"), 64);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_gating_func"), 2);
    ASSERT_EQ_INT(mint(m, "deepseek2.vocab_size"), 512);
    ASSERT(mflt(m, "deepseek2.expert_weights_scale") == 2.5);
    ASSERT_EQ_INT(ds_meta_type(m, (size_t)ds_meta_find(m, "deepseek2.expert_weights_norm")),
                  DS_V_BOOL);
    ASSERT_EQ_INT(ds_meta_type(m, (size_t)ds_meta_find(m, "deepseek2.rope.freq_base")), DS_V_F32);
    ASSERT_EQ_INT(ds_meta_type(m, (size_t)ds_meta_find(m, "deepseek2.block_count")), DS_V_U32);
    ASSERT_STR(mstr(m, "deepseek2.rope.scaling.type"), "yarn");
    ASSERT(mflt(m, "deepseek2.rope.scaling.factor") == 4.0);
    ASSERT_EQ_INT(mint(m, "deepseek2.rope.scaling.original_context_length"), 64);
    ASSERT(fabs(mflt(m, "deepseek2.rope.scaling.yarn_log_multiplier") - 0.1) < 1e-7);
    ASSERT(mflt(m, "dskit.hf.rms_norm_eps") == 1e-6); // f32 inexact: f64 twin
    ASSERT(ds_meta_find(m, "dskit.hf.rope_theta") < 0); // 10000 is exact in f32
    ASSERT_STR(mstr(m, "dskit.routing.method"), "noaux_tc");
    ASSERT_STR(mstr(m, "dskit.hf.model_type"), "deepseek_v3");
    ASSERT_EQ_INT(ds_meta_find(m, "dskit.hf.fp8_block_size") >= 0, 1);
    ds_meta_free(m);
    free(json);
}

TEST(config_meta_keys_v2lite)
{
    size_t len;
    char *json = slurp(test_data("tiny-v2lite/config.json"), &len);
    struct ds_meta *m = ds_meta_new();
    ASSERT(json && m);
    ASSERT_OK(ds_hf_config_to_meta(json, len, "config.json", m));
    ASSERT_STR(mstr(m, "general.name"), "deepseek");
    ASSERT_EQ_INT(mint(m, "deepseek2.block_count"), 3);
    ASSERT(ds_meta_find(m, "deepseek2.nextn_predict_layers") < 0);
    ASSERT_EQ_INT(mint(m, "deepseek2.attention.q_lora_rank"), 0);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_gating_func"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_group_count"), 1);
    ASSERT_STR(mstr(m, "dskit.routing.method"), "greedy");
    ASSERT(mflt(m, "dskit.hf.rope_scaling.mscale_all_dim") == 0.707);
    ASSERT(ds_meta_find(m, "dskit.hf.fp8_block_size") < 0);
    ds_meta_free(m);
    free(json);
}

/* A deepseek2 GGUF written by llama.cpp has no dskit.* keys. */
static void plain_llama_meta(const char *path, const char *want_type, const char *want_method)
{
    size_t len;
    char *json = slurp(test_data(path), &len);
    struct ds_meta *m = ds_meta_new();
    struct ds_hparams hp, hp2;
    char *out = NULL;
    ASSERT(json && m);
    ASSERT_OK(ds_hf_config_parse(json, len, path, &hp));
    ASSERT_OK(ds_hf_config_to_meta(json, len, path, m));
    for (size_t i = 0; i < ds_meta_count(m);) {
        if (!strncmp(ds_meta_key(m, i), "dskit.", 6))
            ds_meta_remove(m, ds_meta_key(m, i));
        else
            i++;
    }
    ASSERT_OK(ds_hparams_from_meta(m, &hp2));
    ASSERT_STR(hp2.model_type, want_type);
    ASSERT_STR(hp2.topk_method, want_method);
    ASSERT_EQ_INT(hp2.n_layers, hp.n_layers);
    ASSERT_EQ_INT(hp2.n_nextn, hp.n_nextn);
    ASSERT_EQ_INT(hp2.q_lora_rank, hp.q_lora_rank);
    ASSERT_EQ_INT(hp2.qk_nope_head_dim, hp.qk_nope_head_dim);
    ASSERT_EQ_INT(hp2.v_head_dim, hp.v_head_dim);
    ASSERT_EQ_INT(hp2.n_group, hp.n_group);
    ASSERT(fabs(hp2.yarn_mscale_all_dim - hp.yarn_mscale_all_dim) < 1e-6);
    ASSERT(fabs(hp2.rms_norm_eps - hp.rms_norm_eps) < 1e-12);
    ASSERT_OK(ds_hf_meta_to_config(m, "bfloat16", false, &out));
    free(out);
    ds_meta_free(m);
    free(json);
}

TEST(config_from_plain_llama_meta)
{
    plain_llama_meta("tiny-v3-fp8/config.json", "deepseek_v3", "noaux_tc");
    plain_llama_meta("tiny-v2lite/config.json", "deepseek_v2", "greedy");
}

/* The v3 test config with field key replaced by the JSON text value (NULL:
 * removed). */
static char *edit_config(const char *key, const char *value)
{
    size_t len;
    char *json = slurp(test_data("tiny-v3-fp8/config.json"), &len), *out;
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (!root)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (value)
        cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static ds_err parse_edited(const char *key, const char *value)
{
    char *json = edit_config(key, value);
    struct ds_hparams hp;
    struct ds_meta *m = ds_meta_new();
    ds_err e, e2;
    if (!json || !m) {
        free(json);
        ds_meta_free(m);
        return DS_ERR_NOMEM;
    }
    e = ds_hf_config_parse(json, strlen(json), "config.json", &hp);
    e2 = ds_hf_config_to_meta(json, strlen(json), "config.json", m);
    free(json);
    ds_meta_free(m);
    return e == e2 ? e : DS_ERR_STATE;
}

TEST(config_errors)
{
    struct ds_hparams hp;
    static const char bad_json[] = "{\"model_type\": \"deepseek_v3\", ";
    static const char trailing[] = "{\"model_type\": \"deepseek_v3\"} x";

    ASSERT_ERR(ds_hf_config_parse(bad_json, strlen(bad_json), "config.json", &hp), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "'config.json'"));
    ASSERT_ERR(ds_hf_config_parse(trailing, strlen(trailing), "config.json", &hp), DS_ERR_FORMAT);
    ASSERT_ERR(ds_hf_config_parse("[]", 2, NULL, &hp), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("hidden_size", NULL), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "hidden_size"));
    ASSERT_ERR(parse_edited("hidden_size", "-192"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("hidden_size", "0"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("hidden_size", "\"192\""), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("num_hidden_layers", "3.5"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("vocab_size", "4294967296"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("n_group", "3"), DS_ERR_FORMAT);
    ASSERT(strstr(ds_errmsg(), "n_group"));
    ASSERT_ERR(parse_edited("topk_group", "5"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("num_experts_per_tok", "17"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("first_k_dense_replace", "4"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("qk_rope_head_dim", "15"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("rms_norm_eps", "-1"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("norm_topk_prob", "1"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("rope_scaling", "{\"type\": \"yarn\"}"), DS_ERR_FORMAT);
    ASSERT_ERR(parse_edited("model_type", "\"llama\""), DS_ERR_UNSUPPORTED);
    ASSERT(strstr(ds_errmsg(), "llama"));
    ASSERT_ERR(parse_edited("scoring_func", "\"tanh\""), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(parse_edited("topk_method", "\"random\""), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(parse_edited("rope_scaling", "{\"type\": \"linear\", \"factor\": 2}"),
               DS_ERR_UNSUPPORTED);
    ASSERT_ERR(parse_edited("quantization_config", "{\"quant_method\": \"awq\"}"),
               DS_ERR_UNSUPPORTED);
    ASSERT_ERR(parse_edited("quantization_config",
                            "{\"quant_method\": \"fp8\", \"weight_block_size\": [128]}"),
               DS_ERR_FORMAT);
    // Optional fields: null or absent take their defaults.
    ASSERT_OK(parse_edited("q_lora_rank", "null"));
    ASSERT_OK(parse_edited("rope_scaling", "null"));
    ASSERT_OK(parse_edited("topk_method", NULL));
    ASSERT_OK(parse_edited("model_type", NULL)); // from architectures
}

TEST(config_topk_all_groups)
{
    // topk_group == n_group: llama.cpp wants 1/1 (no group limit); dskit
    // keeps the original numbers.
    char *json = edit_config("topk_group", "4");
    struct ds_meta *m = ds_meta_new();
    struct ds_hparams hp;
    ASSERT(json && m);
    ASSERT_OK(ds_hf_config_to_meta(json, strlen(json), NULL, m));
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_group_count"), 1);
    ASSERT_EQ_INT(mint(m, "deepseek2.expert_group_used_count"), 1);
    ASSERT_OK(ds_hparams_from_meta(m, &hp));
    ASSERT_EQ_INT(hp.n_group, 4);
    ASSERT_EQ_INT(hp.topk_group, 4);
    ds_meta_free(m);
    free(json);
}

TEST(config_float_exactness)
{
    // Values that f32 cannot hold survive the round trip exactly.
    char *json = edit_config("rope_theta", "123456.789");
    char *json2 = NULL, *out = NULL;
    struct ds_meta *m = ds_meta_new();
    cJSON *back = NULL;
    ASSERT(json && m);
    cJSON *root = cJSON_Parse(json);
    cJSON_ReplaceItemInObject(root, "routed_scaling_factor", cJSON_CreateNumber(2.4462890625e-1));
    json2 = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    ASSERT_OK(ds_hf_config_to_meta(json2, strlen(json2), NULL, m));
    ASSERT_OK(ds_hf_meta_to_config(m, "float32", false, &out));
    back = cJSON_Parse(out);
    ASSERT(back);
    ASSERT(cJSON_GetObjectItem(back, "rope_theta")->valuedouble == 123456.789);
    ASSERT(cJSON_GetObjectItem(back, "routed_scaling_factor")->valuedouble == 2.4462890625e-1);
    ASSERT(strstr(out, "\"rope_theta\": 123456.789,"));
    ASSERT(strstr(out, "\"rms_norm_eps\": 1e-06,"));
    ASSERT(strstr(out, "\"factor\": 4.0,"));
    cJSON_Delete(back);
    free(out);
    free(json2);
    free(json);
    ds_meta_free(m);
}

TEST(meta_errors)
{
    struct ds_meta *m = ds_meta_new();
    struct ds_hparams hp;
    char *out = NULL, *out2 = NULL;
    ASSERT(m);
    ASSERT_ERR(ds_hparams_from_meta(m, &hp), DS_ERR_NOT_FOUND);
    ASSERT_ERR(ds_hf_meta_to_tokenizer(m, &out, &out2), DS_ERR_NOT_FOUND);
    ASSERT_OK(ds_meta_set_str(m, "general.architecture", "llama"));
    ASSERT_ERR(ds_hparams_from_meta(m, &hp), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_hf_meta_to_config(m, "bfloat16", false, &out), DS_ERR_UNSUPPORTED);
    ASSERT(out == NULL);
    ds_meta_free(m);
}

/* ---- tokenizer ------------------------------------------------------------ */

struct tokfiles {
    char *tok, *cfg;
    size_t tok_len, cfg_len;
};

static int load_tok(const char *dir, struct tokfiles *f)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    f->tok = slurp(test_data(p), &f->tok_len);
    snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
    f->cfg = slurp(test_data(p), &f->cfg_len);
    return f->tok && f->cfg;
}

static void free_tok(struct tokfiles *f)
{
    free(f->tok);
    free(f->cfg);
}

static void tokenizer_roundtrip(const char *dir)
{
    struct tokfiles f = {0};
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    char *tok2 = NULL, *cfg2 = NULL;
    cJSON *orig = NULL, *ocfg = NULL, *c;
    long ti, yi, mi;
    enum ds_vtype el;
    uint64_t n, nm;

    ASSERT(load_tok(dir, &f) && m && m2);
    ASSERT_OK(ds_hf_tokenizer_to_meta(f.tok, f.tok_len, f.cfg, f.cfg_len, 0, "tokenizer.json", m));
    ASSERT_STR(mstr(m, "tokenizer.ggml.model"), "gpt2");
    ASSERT_STR(mstr(m, "tokenizer.ggml.pre"), "deepseek-v3");

    // Tokens, types and merges against the original file.
    orig = cJSON_Parse(f.tok);
    ocfg = cJSON_Parse(f.cfg);
    ASSERT(orig && ocfg);
    ti = ds_meta_find(m, "tokenizer.ggml.tokens");
    yi = ds_meta_find(m, "tokenizer.ggml.token_type");
    mi = ds_meta_find(m, "tokenizer.ggml.merges");
    ASSERT(ti >= 0 && yi >= 0 && mi >= 0);
    ASSERT(ds_meta_arr(m, (size_t)ti, &el, &n) && el == DS_V_STR);
    const cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(orig, "model"), "vocab");
    ASSERT_EQ_INT(n, cJSON_GetArraySize(vocab));
    const int32_t *types = ds_meta_arr_data(m, (size_t)yi);
    cJSON_ArrayForEach(c, vocab)
    {
        size_t len;
        int id = c->valueint;
        const char *s = ds_meta_arr_str(m, (size_t)ti, (uint64_t)id, &len);
        ASSERT_MSG(len == strlen(c->string) && !memcmp(s, c->string, len), "token %d", id);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(orig, "added_tokens"))
    {
        int id = cJSON_GetObjectItem(c, "id")->valueint;
        ASSERT_EQ_INT(types[id], cJSON_IsTrue(cJSON_GetObjectItem(c, "special")) ? 3 : 4);
    }
    ASSERT_EQ_INT(types[2], 1);
    ASSERT_EQ_INT(types[n - 1], 3);
    const cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(orig, "model"), "merges");
    ASSERT(ds_meta_arr(m, (size_t)mi, &el, &nm) && el == DS_V_STR);
    ASSERT_EQ_INT(nm, cJSON_GetArraySize(merges));
    uint64_t j = 0;
    cJSON_ArrayForEach(c, merges)
    {
        ASSERT_STR(ds_meta_arr_str(m, (size_t)mi, j, NULL), c->valuestring);
        j++;
    }
    ASSERT_EQ_INT(mint(m, "tokenizer.ggml.bos_token_id"), 0);
    ASSERT_EQ_INT(mint(m, "tokenizer.ggml.eos_token_id"), 1);
    ASSERT_EQ_INT(mint(m, "tokenizer.ggml.padding_token_id"), 1);
    bool b = false;
    ASSERT(ds_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b) && b);
    ASSERT(ds_meta_get_bool(m, "tokenizer.ggml.add_eos_token", &b) && !b);
    ASSERT_STR(mstr(m, "tokenizer.chat_template"),
               cJSON_GetObjectItem(ocfg, "chat_template")->valuestring);
    ASSERT_EQ_INT(mint(m, "dskit.hf.model_max_length"), 4096);

    // json -> meta -> json -> meta gives the same metadata.
    ASSERT_OK(ds_hf_meta_to_tokenizer(m, &tok2, &cfg2));
    ASSERT(strncmp(tok2, "{\n  \"version\": \"1.0\",\n", 22) == 0);
    ASSERT_OK(ds_hf_tokenizer_to_meta(tok2, strlen(tok2), cfg2, strlen(cfg2), 0, NULL, m2));
    ASSERT(meta_equal(m, m2));

    // The rebuilt files carry the same pre-tokenizer, post-processor and
    // special tokens as the originals.
    cJSON *t2 = cJSON_Parse(tok2), *c2 = cJSON_Parse(cfg2);
    ASSERT(t2 && c2);
    ASSERT(cJSON_Compare(cJSON_GetObjectItem(orig, "post_processor"),
                         cJSON_GetObjectItem(t2, "post_processor"), true));
    ASSERT(cJSON_Compare(cJSON_GetObjectItem(orig, "added_tokens"),
                         cJSON_GetObjectItem(t2, "added_tokens"), true));
    ASSERT(cJSON_Compare(cJSON_GetObjectItem(orig, "model"), cJSON_GetObjectItem(t2, "model"),
                         true));
    ASSERT(cJSON_Compare(ocfg, c2, true));
    cJSON_Delete(t2);
    cJSON_Delete(c2);

    cJSON_Delete(orig);
    cJSON_Delete(ocfg);
    free(tok2);
    free(cfg2);
    ds_meta_free(m);
    ds_meta_free(m2);
    free_tok(&f);
}

TEST(tokenizer_roundtrip_v3)
{
    tokenizer_roundtrip("tiny-v3-fp8");
}

TEST(tokenizer_roundtrip_v2lite)
{
    tokenizer_roundtrip("tiny-v2lite");
}

TEST(tokenizer_padding)
{
    struct tokfiles f = {0};
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    char *tok2 = NULL, *cfg2 = NULL;
    long ti, yi;
    enum ds_vtype el;
    uint64_t n;

    ASSERT(load_tok("tiny-v2lite", &f) && m && m2);
    ASSERT_OK(ds_hf_tokenizer_to_meta(f.tok, f.tok_len, f.cfg, f.cfg_len, 387, NULL, m));
    ti = ds_meta_find(m, "tokenizer.ggml.tokens");
    yi = ds_meta_find(m, "tokenizer.ggml.token_type");
    ASSERT(ds_meta_arr(m, (size_t)ti, &el, &n));
    ASSERT_EQ_INT(n, 387);
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 384, NULL), "[PAD384]");
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ti, 386, NULL), "[PAD386]");
    ASSERT_EQ_INT(((const int32_t *)ds_meta_arr_data(m, (size_t)yi))[386], 5);
    ASSERT_OK(ds_hf_meta_to_tokenizer(m, &tok2, &cfg2));
    ASSERT_OK(ds_hf_tokenizer_to_meta(tok2, strlen(tok2), cfg2, strlen(cfg2), 0, NULL, m2));
    ASSERT(meta_equal(m, m2));
    // A vocab_size below the token count changes nothing.
    ASSERT_OK(ds_hf_tokenizer_to_meta(tok2, strlen(tok2), cfg2, strlen(cfg2), 10, NULL, m2));
    ASSERT(meta_equal(m, m2));
    free(tok2);
    free(cfg2);
    ds_meta_free(m);
    ds_meta_free(m2);
    free_tok(&f);
}

/* The v3 tokenizer.json after edit(root). */
static char *edit_tok(void (*edit)(cJSON *root))
{
    size_t len;
    char *json = slurp(test_data("tiny-v3-fp8/tokenizer.json"), &len), *out;
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (!root)
        return NULL;
    edit(root);
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static cJSON *tok_model(cJSON *root)
{
    return cJSON_GetObjectItem(root, "model");
}

static void merges_as_pairs(cJSON *root)
{
    cJSON *mg = cJSON_GetObjectItem(tok_model(root), "merges"), *pairs = cJSON_CreateArray(), *c;
    cJSON_ArrayForEach(c, mg)
    {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", c->valuestring);
        char *sp = strchr(buf, ' ');
        *sp = '\0';
        const char *ab[2] = {buf, sp + 1};
        cJSON_AddItemToArray(pairs, cJSON_CreateStringArray(ab, 2));
    }
    cJSON_ReplaceItemInObject(tok_model(root), "merges", pairs);
}

static void string_id(cJSON *root)
{
    cJSON *v = cJSON_GetObjectItem(tok_model(root), "vocab");
    cJSON_ReplaceItemInObject(v, "Ā", cJSON_CreateString("2"));
}

static void unigram(cJSON *root)
{
    cJSON_ReplaceItemInObject(tok_model(root), "type", cJSON_CreateString("Unigram"));
}

static void other_regex(cJSON *root)
{
    cJSON *pre = cJSON_GetObjectItem(root, "pre_tokenizer");
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(pre, "pretokenizers"), 0);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(first, "pattern"), "Regex",
                              cJSON_CreateString("\\p{N}{1,4}"));
}

static void no_bytelevel(cJSON *root)
{
    cJSON_ReplaceItemInObject(root, "decoder", cJSON_CreateNull());
}

static void dup_id(cJSON *root)
{
    cJSON *v = cJSON_GetObjectItem(tok_model(root), "vocab");
    cJSON_ReplaceItemInObject(v, "Ā", cJSON_CreateNumber(3));
}

static void gap(cJSON *root)
{
    cJSON *v = cJSON_GetObjectItem(tok_model(root), "vocab");
    cJSON_DeleteItemFromObject(v, "Ā");
}

static void bad_merge(cJSON *root)
{
    cJSON *mg = cJSON_GetObjectItem(tok_model(root), "merges");
    cJSON_AddItemToArray(mg, cJSON_CreateString("abc"));
}

static ds_err tok_edited(void (*edit)(cJSON *), struct ds_meta *m)
{
    char *json = edit_tok(edit);
    ds_err e = json ? ds_hf_tokenizer_to_meta(json, strlen(json), NULL, 0, 0, NULL, m)
                    : DS_ERR_NOMEM;
    free(json);
    return e;
}

TEST(tokenizer_variants)
{
    struct tokfiles f = {0};
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    long ti, yi;
    ASSERT(load_tok("tiny-v3-fp8", &f) && m && m2);
    ASSERT_OK(ds_hf_tokenizer_to_meta(f.tok, f.tok_len, NULL, 0, 0, NULL, m));
    // Without tokenizer_config.json, add_bos comes from the post-processor.
    bool b = false;
    ASSERT(ds_meta_get_bool(m, "tokenizer.ggml.add_bos_token", &b) && b);
    ASSERT(ds_meta_find(m, "tokenizer.ggml.bos_token_id") < 0);
    ASSERT_OK(tok_edited(merges_as_pairs, m2));
    ASSERT(meta_equal(m, m2));

    ASSERT_ERR(tok_edited(string_id, m2), DS_ERR_FORMAT);
    ASSERT_ERR(tok_edited(dup_id, m2), DS_ERR_FORMAT);
    ASSERT_ERR(tok_edited(bad_merge, m2), DS_ERR_FORMAT);
    ASSERT_ERR(tok_edited(unigram, m2), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(tok_edited(other_regex, m2), DS_ERR_UNSUPPORTED);
    ASSERT(strstr(ds_errmsg(), "pre-tokenizer"));
    ASSERT_ERR(tok_edited(no_bytelevel, m2), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_hf_tokenizer_to_meta("{", 1, NULL, 0, 0, NULL, m2), DS_ERR_FORMAT);
    ASSERT_ERR(ds_hf_tokenizer_to_meta(f.tok, f.tok_len, "{\"bos_token\": \"nope\"}", 21, 0, NULL,
                                       m2),
               DS_ERR_FORMAT);

    // A gap in the ids becomes an UNUSED [PAD<i>] token.
    struct ds_meta *m3 = ds_meta_new();
    ASSERT(m3);
    ASSERT_OK(tok_edited(gap, m3));
    ti = ds_meta_find(m3, "tokenizer.ggml.tokens");
    yi = ds_meta_find(m3, "tokenizer.ggml.token_type");
    ASSERT_STR(ds_meta_arr_str(m3, (size_t)ti, 2, NULL), "[PAD2]");
    ASSERT_EQ_INT(((const int32_t *)ds_meta_arr_data(m3, (size_t)yi))[2], 5);
    ds_meta_free(m3);

    ds_meta_free(m);
    ds_meta_free(m2);
    free_tok(&f);
}

/* A small deepseek-coder style tokenizer.json, written as the real files
 * are (literal CR/LF in the first regex, \u escapes for CJK). */
static const char coder_json[] =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":3,\"content\":\"<think>\",\"special\":false},"
    "{\"id\":4,\"content\":\"<|EOT|>\",\"special\":false}],"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\r\\n]\"},\"behavior\":\"Isolated\"},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s?\\\\p{L}+\"},\"behavior\":\"Isolated\"},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s?\\\\p{P}+\"},\"behavior\":\"Isolated\"},"
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\u4e00-\\u9fa5\\u0800-\\u4e00\\uac00-\\ud7ff]+"
    "\"},\"behavior\":\"Isolated\"},"
    "{\"type\":\"Digits\",\"individual_digits\":true},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"]]}}";

TEST(tokenizer_other_pre)
{
    struct ds_meta *m = ds_meta_new(), *m2 = ds_meta_new();
    char *tok2 = NULL, *cfg2 = NULL;
    long yi;
    ASSERT(m && m2);
    ASSERT_OK(ds_hf_tokenizer_to_meta(coder_json, strlen(coder_json), NULL, 0, 0, NULL, m));
    ASSERT_STR(mstr(m, "tokenizer.ggml.pre"), "deepseek-coder");
    yi = ds_meta_find(m, "tokenizer.ggml.token_type");
    ASSERT_EQ_INT(((const int32_t *)ds_meta_arr_data(m, (size_t)yi))[3], 4); // user-defined
    ASSERT_EQ_INT(((const int32_t *)ds_meta_arr_data(m, (size_t)yi))[4], 3); // looks special
    ASSERT_STR(ds_meta_arr_str(m, (size_t)ds_meta_find(m, "tokenizer.ggml.merges"), 0, NULL),
               "a b");
    ASSERT_OK(ds_hf_meta_to_tokenizer(m, &tok2, &cfg2));
    ASSERT_OK(ds_hf_tokenizer_to_meta(tok2, strlen(tok2), cfg2, strlen(cfg2), 0, NULL, m2));
    ASSERT(meta_equal(m, m2));
    free(tok2);
    free(cfg2);

    // deepseek-llm: written by dskit, recognised again.
    ASSERT_OK(ds_meta_set_str(m, "tokenizer.ggml.pre", "deepseek-llm"));
    ASSERT_OK(ds_hf_meta_to_tokenizer(m, &tok2, &cfg2));
    ASSERT(strstr(tok2, "\\\\s?[A-Za-z\xc2\xb5\xc3\x80-"));
    ASSERT_OK(ds_hf_tokenizer_to_meta(tok2, strlen(tok2), cfg2, strlen(cfg2), 0, NULL, m2));
    ASSERT_STR(mstr(m2, "tokenizer.ggml.pre"), "deepseek-llm");
    ASSERT(meta_equal(m, m2));
    free(tok2);
    free(cfg2);

    ASSERT_OK(ds_meta_set_str(m, "tokenizer.ggml.pre", "gpt2"));
    ASSERT_ERR(ds_hf_meta_to_tokenizer(m, &tok2, &cfg2), DS_ERR_UNSUPPORTED);
    ds_meta_free(m);
    ds_meta_free(m2);
}

int main(void)
{
    RUN(config_roundtrip_v3);
    RUN(config_roundtrip_v2lite);
    RUN(config_meta_keys_v3);
    RUN(config_meta_keys_v2lite);
    RUN(config_from_plain_llama_meta);
    RUN(config_errors);
    RUN(config_topk_all_groups);
    RUN(config_float_exactness);
    RUN(meta_errors);
    RUN(tokenizer_roundtrip_v3);
    RUN(tokenizer_roundtrip_v2lite);
    RUN(tokenizer_padding);
    RUN(tokenizer_variants);
    RUN(tokenizer_other_pre);
    return test_report();
}
