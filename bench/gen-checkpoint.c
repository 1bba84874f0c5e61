/*
 * gen-checkpoint - writes a random DeepSeek-V2-Lite-shaped Hugging Face
 * checkpoint (BF16, or FP8 with 128x128 scales) for the conversion benchmark.
 *
 *   gen-checkpoint [--fp8] [--layers N] [--mtp] [--ctx N] DIR TOKENIZER_DIR
 *
 * --mtp adds a DeepSeek-V3 MTP layer (num_nextn_predict_layers 1: layer N, a
 * MoE layer with enorm, hnorm, eh_proj and shared_head.norm; its embedding and
 * head are the model's, as SGLang shares them). --ctx sets
 * max_position_embeddings (default 163840).
 *
 * Shapes: hidden 2048, 16 heads, kv_lora 512, nope 128, rope 64, v 128,
 * 64 routed experts of 1408 + 2 shared, vocab 102400; layer 0 dense
 * (intermediate 10944). With the default 4 layers the BF16 checkpoint is
 * about 4.4 GB in shards of at most 2 GB.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds.h"

enum { HID = 2048, HEADS = 16, KVR = 512, NOPE = 128, ROPE = 64, VD = 128, NEXP = 64,
       MOEI = 1408, NSH = 2, VOCAB = 102400, DENSEI = 10944 };

struct spec {
    char name[128];
    int64_t rows, cols; /* cols = 0: 1-D */
    bool matrix;
};

static struct spec *specs;
static size_t n_specs, cap_specs;

static void add(const char *name, int64_t rows, int64_t cols)
{
    if (n_specs == cap_specs) {
        cap_specs = cap_specs ? cap_specs * 2 : 256;
        specs = realloc(specs, cap_specs * sizeof(*specs));
        if (!specs)
            exit(1);
    }
    snprintf(specs[n_specs].name, sizeof(specs[0].name), "%s", name);
    specs[n_specs].rows = rows;
    specs[n_specs].cols = cols;
    specs[n_specs].matrix = cols > 0;
    n_specs++;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static inline uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void die(const char *what)
{
    fprintf(stderr, "gen-checkpoint: %s: %s\n", what, ds_errmsg());
    exit(1);
}

int main(int argc, char **argv)
{
    bool fp8 = false, mtp = false;
    int layers = 4, a = 1;
    long ctx = 163840;
    char path[4096], name[160];
    for (; a < argc && argv[a][0] == '-'; a++) {
        if (!strcmp(argv[a], "--fp8"))
            fp8 = true;
        else if (!strcmp(argv[a], "--mtp"))
            mtp = true;
        else if (!strcmp(argv[a], "--layers") && a + 1 < argc)
            layers = (int)strtol(argv[++a], NULL, 10);
        else if (!strcmp(argv[a], "--ctx") && a + 1 < argc)
            ctx = strtol(argv[++a], NULL, 10);
    }
    if (argc - a != 2 || layers < 1 || ctx < 1) {
        fprintf(stderr, "usage: gen-checkpoint [--fp8] [--layers N] [--mtp] [--ctx N] DIR "
                        "TOKENIZER_DIR\n");
        return 2;
    }
    const char *dir = argv[a], *tokdir = argv[a + 1];
    mkdir(dir, 0777);

    add("model.embed_tokens.weight", VOCAB, HID);
    for (int l = 0; l < layers + mtp; l++) {
#define L(s) (snprintf(name, sizeof(name), "model.layers.%d.%s", l, s), name)
        if (l == layers) {
            add(L("enorm.weight"), HID, 0);
            add(L("hnorm.weight"), HID, 0);
            add(L("eh_proj.weight"), HID, 2 * HID);
            add(L("shared_head.norm.weight"), HID, 0);
        }
        add(L("input_layernorm.weight"), HID, 0);
        add(L("self_attn.q_proj.weight"), HEADS * (NOPE + ROPE), HID);
        add(L("self_attn.kv_a_proj_with_mqa.weight"), KVR + ROPE, HID);
        add(L("self_attn.kv_a_layernorm.weight"), KVR, 0);
        add(L("self_attn.kv_b_proj.weight"), HEADS * (NOPE + VD), KVR);
        add(L("self_attn.o_proj.weight"), HID, HEADS * VD);
        add(L("post_attention_layernorm.weight"), HID, 0);
        if (l == 0) {
            add(L("mlp.gate_proj.weight"), DENSEI, HID);
            add(L("mlp.up_proj.weight"), DENSEI, HID);
            add(L("mlp.down_proj.weight"), HID, DENSEI);
            continue;
        }
        add(L("mlp.gate.weight"), NEXP, HID);
        for (int e = 0; e < NEXP; e++) {
            char b[96];
            snprintf(b, sizeof(b), "mlp.experts.%d.gate_proj.weight", e);
            add(L(b), MOEI, HID);
            snprintf(b, sizeof(b), "mlp.experts.%d.up_proj.weight", e);
            add(L(b), MOEI, HID);
            snprintf(b, sizeof(b), "mlp.experts.%d.down_proj.weight", e);
            add(L(b), HID, MOEI);
        }
        add(L("mlp.shared_experts.gate_proj.weight"), MOEI * NSH, HID);
        add(L("mlp.shared_experts.up_proj.weight"), MOEI * NSH, HID);
        add(L("mlp.shared_experts.down_proj.weight"), HID, MOEI * NSH);
#undef L
    }
    add("model.norm.weight", HID, 0);
    add("lm_head.weight", VOCAB, HID);

    /* tensors of the file: FP8 matrices get a scale tensor after them */
    size_t n_out = 0, cap = n_specs * 2;
    struct ds_st_tensor *t = calloc(cap, sizeof(*t));
    size_t *spec_of = calloc(cap, sizeof(*spec_of));
    for (size_t i = 0; i < n_specs; i++) {
        struct spec *s = &specs[i];
        bool q = fp8 && s->matrix && strstr(s->name, "embed") == NULL &&
                 strstr(s->name, "lm_head") == NULL && strstr(s->name, "mlp.gate.") == NULL;
        t[n_out].name = s->name;
        t[n_out].type = q ? DS_TYPE_F8_E4M3 : fp8 ? DS_TYPE_F32 : DS_TYPE_BF16;
        if (!s->matrix)
            t[n_out].type = fp8 ? DS_TYPE_F32 : DS_TYPE_BF16;
        t[n_out].n_dims = s->matrix ? 2 : 1;
        t[n_out].shape[0] = s->rows;
        t[n_out].shape[1] = s->cols;
        spec_of[n_out++] = i;
        if (q) {
            char *sn = malloc(160);
            snprintf(sn, 160, "%s_scale_inv", s->name);
            t[n_out].name = sn;
            t[n_out].type = DS_TYPE_F32;
            t[n_out].n_dims = 2;
            t[n_out].shape[0] = (s->rows + 127) / 128;
            t[n_out].shape[1] = (s->cols + 127) / 128;
            spec_of[n_out++] = (size_t)-1;
        }
    }

    /* shards of at most 2 GB */
    const uint64_t limit = 2000000000ull;
    size_t first = 0, shard = 0, n_shards = 0;
    uint64_t total = 0;
    size_t *shard_of = calloc(n_out, sizeof(*shard_of));
    for (size_t i = 0, cur = 0; i < n_out; i++) {
        uint64_t b = (uint64_t)t[i].shape[0] * (uint64_t)(t[i].n_dims == 2 ? t[i].shape[1] : 1) *
                     ds_type_block_bytes(t[i].type);
        if (cur && cur + b > limit) {
            shard++;
            cur = 0;
        }
        shard_of[i] = shard;
        cur += b;
        total += b;
    }
    n_shards = shard + 1;
    const char **names = calloc(n_out, sizeof(char *)), **files = calloc(n_out, sizeof(char *));
    char (*fn)[64] = calloc(n_shards, sizeof(*fn));
    size_t bufcap = 0;
    unsigned char *buf = NULL;
    for (size_t k = 0; k < n_shards; k++) {
        struct ds_writer *w;
        size_t cnt = 0;
        snprintf(fn[k], sizeof(fn[k]), "model-%05zu-of-%05zu.safetensors", k + 1, n_shards);
        while (first + cnt < n_out && shard_of[first + cnt] == k)
            cnt++;
        snprintf(path, sizeof(path), "%s/%s", dir, fn[k]);
        if (ds_writer_open(&w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0) ||
            ds_st_write_header(w, t + first, cnt, NULL, 0))
            die(path);
        for (size_t j = first; j < first + cnt; j++) {
            uint64_t n = t[j].end - t[j].begin;
            if (n > bufcap) {
                bufcap = n;
                buf = realloc(buf, bufcap);
                if (!buf)
                    return 1;
            }
            if (t[j].type == DS_TYPE_F8_E4M3) {
                for (uint64_t i = 0; i < n; i++) {
                    unsigned char v = (unsigned char)next();
                    buf[i] = (v & 0x7f) == 0x7f ? 0x38 : v; /* no NaN */
                }
            } else if (t[j].type == DS_TYPE_BF16) {
                for (uint64_t i = 0; i < n / 2; i++) {
                    float f = ((float)(next() >> 8) / 16777216.0f - 0.5f) * 0.05f;
                    uint16_t h = ds_f32_to_bf16(spec_of[j] != (size_t)-1 &&
                                                !specs[spec_of[j]].matrix ? 1.0f : f);
                    memcpy(buf + 2 * i, &h, 2);
                }
            } else {
                for (uint64_t i = 0; i < n / 4; i++) {
                    float f = spec_of[j] == (size_t)-1 ? 1e-3f
                              : !specs[spec_of[j]].matrix ? 1.0f
                              : ((float)(next() >> 8) / 16777216.0f - 0.5f) * 0.05f;
                    memcpy(buf + 4 * i, &f, 4);
                }
            }
            if (ds_writer_write(w, buf, n))
                die(path);
            names[j] = t[j].name;
            files[j] = fn[k];
        }
        if (ds_writer_commit(w))
            die(path);
        ds_writer_free(w);
        first += cnt;
    }
    {
        struct ds_writer *w;
        snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
        if (ds_writer_open(&w, path, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0) ||
            ds_st_write_index(w, total, names, files, n_out) || ds_writer_commit(w))
            die(path);
        ds_writer_free(w);
    }
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fprintf(f,
            "{\n  \"architectures\": [\"DeepseekV2ForCausalLM\"],\n  \"model_type\": \"deepseek_v2\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
            "  \"moe_intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"n_shared_experts\": %d,\n  \"n_routed_experts\": %d,\n  \"num_experts_per_tok\": 6,\n"
            "  \"n_group\": 1,\n  \"topk_group\": 1,\n  \"routed_scaling_factor\": 1.0,\n"
            "  \"scoring_func\": \"softmax\",\n  \"topk_method\": \"greedy\",\n"
            "  \"norm_topk_prob\": false,\n  \"q_lora_rank\": null,\n  \"kv_lora_rank\": %d,\n"
            "  \"qk_nope_head_dim\": %d,\n  \"qk_rope_head_dim\": %d,\n  \"v_head_dim\": %d,\n"
            "  \"first_k_dense_replace\": 1,\n  \"moe_layer_freq\": 1,\n  \"rms_norm_eps\": 1e-06,\n"
            "  \"rope_theta\": 10000.0,\n  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40.0,\n"
            "    \"original_max_position_embeddings\": 4096, \"beta_fast\": 32, \"beta_slow\": 1,\n"
            "    \"mscale\": 0.707, \"mscale_all_dim\": 0.707},\n"
            "  \"max_position_embeddings\": %ld,\n  \"num_nextn_predict_layers\": %d,\n"
            "  \"tie_word_embeddings\": false,\n"
            "  \"bos_token_id\": 0,\n  \"eos_token_id\": 1,\n  \"torch_dtype\": \"bfloat16\"%s\n}\n",
            VOCAB, HID, DENSEI, MOEI, layers, HEADS, HEADS, NSH, NEXP, KVR, NOPE, ROPE, VD, ctx,
            (int)mtp, fp8 ? ",\n  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
                  "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}"
                : "");
    if (fclose(f))
        return 1;
    for (int k = 0; k < 2; k++) {
        const char *base = k ? "tokenizer_config.json" : "tokenizer.json";
        char src[4096], *text;
        size_t len;
        snprintf(src, sizeof(src), "%s/%s", tokdir, base);
        snprintf(path, sizeof(path), "%s/%s", dir, base);
        if (ds_read_file(src, 1 << 26, &text, &len))
            die(src);
        f = fopen(path, "w");
        if (!f || fwrite(text, 1, len, f) != len || fclose(f))
            return 1;
        free(text);
    }
    printf("%s: %zu tensors, %llu bytes in %zu shards\n", dir, n_out, (unsigned long long)total,
           n_shards);
    return 0;
}
