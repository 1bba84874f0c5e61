/*
 * fuzz_checkpoint.c - libFuzzer target for ds-distill's checkpoints
 * (ds_checkpoint_load, lib/train.c): the optimizer state optimizer.gguf
 * (train.* keys, adam_m.NAME / adam_v.NAME tensors) beside a fixed tiny
 * model.gguf.
 *
 * The model is made once (ds_tmodel_init, saved into a private directory);
 * the input is the optimizer state. An accepted checkpoint must give a
 * trainer with a non-negative step count and options that pass
 * ds_train_opts_check (abort() otherwise).
 */
#include <stdio.h>

#include "ds_io.h"
#include "ds_train.h"
#include "fuzz.h"
#include "ds_banned.h"

/* A tiny deepseek2 model: 1 dense + 1 MoE layer, 16 tokens. */
static void tiny(struct ds_hparams *hp)
{
    memset(hp, 0, sizeof(*hp));
    snprintf(hp->model_type, sizeof(hp->model_type), "deepseek_v2");
    hp->vocab_size = 16;
    hp->hidden_size = 8;
    hp->intermediate_size = 8;
    hp->moe_intermediate_size = 4;
    hp->n_layers = 2;
    hp->n_heads = 2;
    hp->kv_lora_rank = 4;
    hp->qk_nope_head_dim = 2;
    hp->qk_rope_head_dim = 2;
    hp->v_head_dim = 2;
    hp->n_routed_experts = 2;
    hp->n_shared_experts = 1;
    hp->n_experts_per_tok = 1;
    hp->n_group = 1;
    hp->topk_group = 1;
    hp->first_k_dense_replace = 1;
    hp->moe_layer_freq = 1;
    snprintf(hp->scoring_func, sizeof(hp->scoring_func), "softmax");
    snprintf(hp->topk_method, sizeof(hp->topk_method), "greedy");
    hp->routed_scaling_factor = 1.0;
    hp->rms_norm_eps = 1e-6;
    hp->rope_theta = 10000;
    hp->max_position_embeddings = 32;
    hp->bos_token_id = hp->eos_token_id = -1;
}

static const char *model_dir(void)
{
    static char path[128];
    const char *dir = fuzz_tmpdir();

    if (!path[0]) {
        struct ds_hparams hp;
        struct ds_tmodel *m = NULL;
        tiny(&hp);
        snprintf(path, sizeof(path), "%s/model.gguf", dir);
        if (ds_tmodel_init(&hp, NULL, 1, &m) != DS_OK ||
            ds_tmodel_save(m, path, DS_TYPE_F32, DS_WRITE_FORCE) != DS_OK) {
            fprintf(stderr, "fuzz_checkpoint: %s\n", ds_errmsg());
            abort();
        }
        ds_tmodel_free(m);
    }
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = model_dir();
    char path[128];
    FILE *fp;
    struct ds_tmodel *m = NULL;
    struct ds_trainer *tr = NULL;

    snprintf(path, sizeof(path), "%s/optimizer.gguf", dir);
    fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0)
        abort();
    if (ds_checkpoint_load(dir, &m, &tr) == DS_OK) {
        if (!m || !tr || ds_trainer_step_count(tr) < 0)
            abort();
    }
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    return 0;
}
