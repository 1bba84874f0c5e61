/*
 * fuzz_config.c - libFuzzer target for config.json (lib/hf.c).
 *
 * The input is config.json text: what ds_hf_config_to_meta accepts,
 * ds_hf_config_parse accepts too; an accepted config must survive the round trip
 * metadata -> ds_hparams_from_meta -> ds_hf_meta_to_config -> parse again
 * with the same hyper-parameters (abort() otherwise, so the fuzzer reports
 * it). Build with `make fuzz FUZZ=config`; tests/fuzz/replay.c replays the
 * corpus in `make check`.
 */
#include "ds_hf.h"
#include "ds_meta.h"
#include "fuzz.h"
#include "ds_banned.h"

static bool same_hparams(const struct ds_hparams *a, const struct ds_hparams *b)
{
    return a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->n_layers == b->n_layers && a->n_nextn == b->n_nextn && a->n_heads == b->n_heads &&
           a->q_lora_rank == b->q_lora_rank && a->kv_lora_rank == b->kv_lora_rank &&
           a->qk_nope_head_dim == b->qk_nope_head_dim &&
           a->qk_rope_head_dim == b->qk_rope_head_dim && a->v_head_dim == b->v_head_dim &&
           a->n_routed_experts == b->n_routed_experts &&
           // experts per token mean nothing in a dense model (not kept)
           (!a->n_routed_experts || a->n_experts_per_tok == b->n_experts_per_tok) &&
           a->fp8 == b->fp8 &&
           strcmp(a->model_type, b->model_type) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_hparams hp, hp2, hp3;
    struct ds_meta *m = ds_meta_new();
    char *text = NULL;
    ds_err e1, e2;

    if (!m)
        abort();
    e1 = ds_hf_config_parse((const char *)data, size, "config.json", &hp);
    e2 = ds_hf_config_to_meta((const char *)data, size, "config.json", m);
    // ds_hf_config_to_meta checks more (the kept fields' types): never less
    if (e2 == DS_OK && e1 != DS_OK)
        abort();
    if (e2 == DS_OK) {
        if (ds_hparams_from_meta(m, &hp2) != DS_OK || !same_hparams(&hp, &hp2))
            abort();
        if (ds_hf_meta_to_config(m, NULL, hp.fp8, &text) != DS_OK ||
            ds_hf_config_parse(text, strlen(text), "round trip", &hp3) != DS_OK ||
            !same_hparams(&hp, &hp3))
            abort();
    }
    free(text);
    ds_meta_free(m);
    return 0;
}
