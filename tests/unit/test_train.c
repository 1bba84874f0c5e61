/* test_train.c - training: gradients, losses, optimizer, checkpoints.
 *
 *  - gradient checks: the analytic gradient of every trained tensor against
 *    centered finite differences of the loss (float32 forward, step 1e-2,
 *    samples where a perturbation changes an expert choice skipped), on tiny
 *    models of each layer type: dense FFN, MoE with a softmax greedy router,
 *    group-limited softmax, sigmoid noaux_tc with groups, bias and
 *    normalisation; q LoRA and plain q; tied embeddings; losses CE, forward
 *    and reverse KL from full and top-k teacher logits, sequence-wise balance;
 *  - the training forward gives ds_forward's logits (random models, saved and
 *    reloaded, and tiny-v2lite / tiny-v3-fp8 converted from safetensors);
 *  - losses: KD of a student against itself is 0, top-k with k = V is full KD;
 *  - schedule, determinism across runs and thread counts, bias update;
 *  - checkpoints: an interrupted and resumed run gives the same losses bit for
 *    bit; carving layers and experts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds.h"
#include "test.h"
#include "tmpdir.h"
#include "train_impl.h"

static uint64_t rs = 12345;

static double urand(void) /* [-1, 1) */
{
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rs >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* A tiny model: 3 layers (1 dense + 2 MoE), softmax greedy router. */
static struct ds_hparams tiny_hp(void)
{
    struct ds_hparams hp;
    memset(&hp, 0, sizeof(hp));
    snprintf(hp.model_type, sizeof(hp.model_type), "deepseek_v2");
    hp.vocab_size = 24;
    hp.hidden_size = 12;
    hp.intermediate_size = 16;
    hp.moe_intermediate_size = 6;
    hp.n_layers = 3;
    hp.n_heads = 2;
    hp.q_lora_rank = 8;
    hp.kv_lora_rank = 6;
    hp.qk_nope_head_dim = 4;
    hp.qk_rope_head_dim = 4;
    hp.v_head_dim = 5;
    hp.n_routed_experts = 4;
    hp.n_shared_experts = 1;
    hp.n_experts_per_tok = 2;
    hp.n_group = 1;
    hp.topk_group = 1;
    hp.first_k_dense_replace = 1;
    hp.moe_layer_freq = 1;
    snprintf(hp.scoring_func, sizeof(hp.scoring_func), "softmax");
    snprintf(hp.topk_method, sizeof(hp.topk_method), "greedy");
    hp.norm_topk_prob = false;
    hp.routed_scaling_factor = 1.0;
    hp.rms_norm_eps = 1e-6;
    hp.rope_theta = 10000;
    hp.has_yarn = true;
    hp.yarn_factor = 4;
    hp.yarn_original_max_pos = 4;
    hp.yarn_beta_fast = 32;
    hp.yarn_beta_slow = 1;
    hp.yarn_mscale = 0.707;
    hp.yarn_mscale_all_dim = 0.707;
    hp.max_position_embeddings = 64;
    hp.bos_token_id = hp.eos_token_id = -1;
    return hp;
}

static struct ds_hparams sigmoid_hp(void)
{
    struct ds_hparams hp = tiny_hp();
    snprintf(hp.model_type, sizeof(hp.model_type), "deepseek_v3");
    snprintf(hp.scoring_func, sizeof(hp.scoring_func), "sigmoid");
    snprintf(hp.topk_method, sizeof(hp.topk_method), "noaux_tc");
    hp.n_routed_experts = 8;
    hp.n_group = 2;
    hp.topk_group = 1;
    hp.norm_topk_prob = true;
    hp.routed_scaling_factor = 2.5;
    hp.q_lora_rank = 0;
    return hp;
}

/* Makes weights larger than the default init (bigger, better-conditioned
 * gradients) and norms/bias non-trivial. */
static void perturb(struct ds_tmodel *m)
{
    for (size_t i = 0; i < m->np; i++) {
        float *w = m->w + m->p[i].off;
        bool bias = strstr(m->p[i].name, "exp_probs_b") != NULL;
        for (size_t j = 0; j < m->p[i].n; j++)
            w[j] = m->p[i].nd == 1 ? (float)((bias ? 0.0 : 1.0) + 0.2 * urand())
                                   : (float)(0.3 * urand());
    }
}

struct gc_cfg {
    const char *label;
    struct ds_hparams hp;
    int teacher;        /* 0 none, 1 full logits, 2 top-k */
    int64_t topk;
    enum ds_kl_dir kl;
    double seq_aux;
};

static int grad_check(const struct gc_cfg *c, double *worst)
{
    struct ds_tmodel *m = NULL;
    struct ds_trainer *tr = NULL;
    struct ds_train_opts o;
    const int64_t B = 2, T = 5;
    int32_t tokens[2 * 6];
    float *tl = NULL, *tv = NULL;
    int32_t *ti = NULL;
    struct ds_batch b = {.n_seq = B, .n_tok = T, .tokens = tokens};
    struct ds_loss l;
    int bad = 0, checked = 0, skipped = 0;
    const float h = 1e-2f;

    *worst = 0;
    if (ds_tmodel_init(&c->hp, NULL, 7, &m) != DS_OK)
        return -1;
    perturb(m);
    ds_train_opts_default(&o);
    o.batch = B;
    o.ctx = T;
    o.clip = 0;
    o.temperature = 1.7;
    o.alpha = 0.4;
    o.kl = c->kl;
    o.seq_aux = c->seq_aux;
    o.balance_gamma = 0;
    if (ds_trainer_new(m, &o, &tr) != DS_OK) {
        ds_tmodel_free(m);
        return -1;
    }
    const int64_t V = m->V;
    for (int i = 0; i < B * (T + 1); i++)
        tokens[i] = (int32_t)((urand() + 1) * 0.5 * (double)V) % (int32_t)V;
    if (c->teacher) {
        tl = malloc((size_t)(B * T * V) * sizeof(float));
        for (int64_t i = 0; i < B * T * V; i++)
            tl[i] = (float)(2.0 * urand());
        if (c->teacher == 1) {
            b.teacher_logits = tl;
        } else {
            ti = malloc((size_t)(B * T * c->topk) * sizeof(int32_t));
            tv = malloc((size_t)(B * T * c->topk) * sizeof(float));
            for (int64_t n = 0; n < B * T; n++)
                ds_logits_topk(tl + n * V, V, c->topk, ti + n * c->topk, tv + n * c->topk);
            b.teacher_topk = c->topk;
            b.teacher_ids = ti;
            b.teacher_vals = tv;
        }
    }
    if (ds_trainer_accumulate(tr, &b, &l) != DS_OK)
        return -1;
    uint64_t route = ds_trainer_route_hash(tr);
    const float *g = ds_trainer_grad(tr);
    for (size_t i = 0; i < m->np; i++) {
        const struct tparam *p = &m->p[i];
        if (!p->trained)
            continue;
        for (int s = 0; s < 5; s++) {
            size_t j = (size_t)((urand() + 1) * 0.5 * (double)p->n) % p->n;
            float *w = m->w + p->off + j, w0 = *w;
            struct ds_loss lp, lm;
            *w = w0 + h;
            ds_trainer_eval(tr, &b, &lp);
            uint64_t r1 = ds_trainer_route_hash(tr);
            *w = w0 - h;
            ds_trainer_eval(tr, &b, &lm);
            uint64_t r2 = ds_trainer_route_hash(tr);
            *w = w0;
            if (r1 != route || r2 != route) {
                skipped++;
                continue;
            }
            double num = (lp.loss - lm.loss) / (2.0 * h), ana = g[p->off + j];
            double err = fabs(num - ana) / (fabs(num) + fabs(ana) + 1e-2);
            checked++;
            if (err > *worst)
                *worst = err;
            if (err > 0.03) {
                bad++;
                fprintf(stderr, "  %s: %s[%zu]: analytic %.6g, numeric %.6g\n", c->label,
                        p->name, j, ana, num);
            }
        }
    }
    if (skipped > checked / 4)
        bad++;
    fprintf(stderr, "  %s: %d gradients checked, %d skipped (routing changed), worst rel. error %.2g\n",
            c->label, checked, skipped, *worst);
    free(tl);
    free(ti);
    free(tv);
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    return bad;
}

TEST(grad_moe_softmax_qlora_ce)
{
    struct gc_cfg c = {"moe softmax greedy, q lora, ce", tiny_hp(), 0, 0, DS_KL_FORWARD, 0};
    double w;
    ASSERT_EQ_INT(grad_check(&c, &w), 0);
}

TEST(grad_moe_kd_forward_full_seq_aux)
{
    struct gc_cfg c = {"moe, forward kl full, seq aux", tiny_hp(), 1, 0, DS_KL_FORWARD, 0.3};
    double w;
    c.hp.norm_topk_prob = true;
    c.hp.routed_scaling_factor = 1.5;
    ASSERT_EQ_INT(grad_check(&c, &w), 0);
}

TEST(grad_sigmoid_noaux_groups_reverse_topk_tied)
{
    struct gc_cfg c = {"sigmoid noaux_tc groups, plain q, reverse kl top-k, tied", sigmoid_hp(), 2,
                       6, DS_KL_REVERSE, 0.2};
    double w;
    c.hp.tie_word_embeddings = true;
    ASSERT_EQ_INT(grad_check(&c, &w), 0);
}

TEST(grad_group_limited_single_moe_layer)
{
    struct gc_cfg c = {"group-limited softmax, one moe layer, forward kl top-k", tiny_hp(), 2, 5,
                       DS_KL_FORWARD, 0};
    double w;
    c.hp.n_layers = 1;
    c.hp.first_k_dense_replace = 0;
    c.hp.n_group = 2;
    c.hp.topk_group = 1;
    c.hp.norm_topk_prob = true;
    snprintf(c.hp.topk_method, sizeof(c.hp.topk_method), "group_limited_greedy");
    ASSERT_EQ_INT(grad_check(&c, &w), 0);
}

TEST(grad_dense_reverse_full)
{
    struct gc_cfg c = {"dense only, no yarn, reverse kl full", tiny_hp(), 1, 0, DS_KL_REVERSE, 0};
    double w;
    c.hp.n_routed_experts = 0;
    c.hp.n_layers = 2;
    c.hp.first_k_dense_replace = 2;
    c.hp.has_yarn = false;
    ASSERT_EQ_INT(grad_check(&c, &w), 0);
}

/* ---- forward equality ----------------------------------------------------------------------- */

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > d)
            d = fabs((double)a[i] - b[i]);
    return d;
}

/* training logits vs ds_forward on the shell and on the saved + loaded file */
static void logits_match(struct ds_tmodel *m, const char *file, double tol, double *d1, double *d2)
{
    const int n = 11;
    int32_t tok[11];
    const int64_t V = m->V;
    float *a = malloc((size_t)(n * V) * sizeof(float)), *b = malloc((size_t)(n * V) * sizeof(float));
    struct ds_ctx *c = NULL;
    struct ds_model *dm = NULL;
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((i * 7 + 3) % V);
    *d1 = *d2 = 1e9;
    if (ds_tmodel_logits(m, tok, n, a) != DS_OK)
        goto out;
    if (ds_ctx_new(m->dm, n, &c) != DS_OK || ds_forward(c, tok, n, b, true) != DS_OK)
        goto out;
    *d1 = max_diff(a, b, (size_t)(n * V));
    ds_ctx_free(c);
    c = NULL;
    if (ds_tmodel_save(m, file, DS_TYPE_F32, DS_WRITE_FORCE) != DS_OK ||
        ds_model_load(file, &dm) != DS_OK || ds_ctx_new(dm, n, &c) != DS_OK ||
        ds_forward(c, tok, n, b, true) != DS_OK)
        goto out;
    *d2 = max_diff(a, b, (size_t)(n * V));
out:
    (void)tol;
    ds_ctx_free(c);
    ds_model_free(dm);
    free(a);
    free(b);
}

TEST(forward_matches_ds_forward)
{
    struct ds_hparams hps[3] = {tiny_hp(), sigmoid_hp(), tiny_hp()};
    hps[2].tie_word_embeddings = true;
    hps[2].n_group = 2;
    hps[2].topk_group = 1;
    snprintf(hps[2].topk_method, sizeof(hps[2].topk_method), "group_limited_greedy");
    for (int i = 0; i < 3; i++) {
        struct ds_tmodel *m;
        double d1, d2;
        ASSERT_OK(ds_tmodel_init(&hps[i], NULL, 3, &m));
        perturb(m);
        logits_match(m, tmp("fwd.gguf"), 1e-4, &d1, &d2);
        ds_tmodel_free(m);
        ASSERT_MSG(d1 < 1e-4 && d2 < 1e-4, "config %d: max diff %g (shell), %g (file)", i, d1, d2);
    }
}

static void check_hf(const char *dir, int outtype, double tol)
{
    struct ds_convert_opts co = {.input = test_data(dir), .output = tmp("hf.gguf"),
                                 .to = DS_FORMAT_GGUF, .outtype = outtype,
                                 .write_flags = DS_WRITE_FORCE, .provenance = "test_train"};
    struct ds_tmodel *m;
    double d1, d2;
    ASSERT_OK(ds_convert(&co, NULL));
    ASSERT_OK(ds_tmodel_load(tmp("hf.gguf"), &m));
    logits_match(m, tmp("hf-f32.gguf"), tol, &d1, &d2);
    // and against the converted file itself (F8 dequantized on load)
    {
        struct ds_model *dm;
        struct ds_ctx *c;
        int32_t tok[11];
        const int64_t V = m->V;
        float *a = malloc((size_t)(11 * V) * sizeof(float)),
              *b = malloc((size_t)(11 * V) * sizeof(float));
        for (int i = 0; i < 11; i++)
            tok[i] = (int32_t)((i * 7 + 3) % V);
        ASSERT_OK(ds_tmodel_logits(m, tok, 11, a));
        ASSERT_OK(ds_model_load(tmp("hf.gguf"), &dm));
        ASSERT_OK(ds_ctx_new(dm, 11, &c));
        ASSERT_OK(ds_forward(c, tok, 11, b, true));
        double d3 = max_diff(a, b, (size_t)(11 * V));
        ds_ctx_free(c);
        ds_model_free(dm);
        free(a);
        free(b);
        ASSERT_MSG(d3 < tol, "%s: max diff %g against the converted file", dir, d3);
    }
    ds_tmodel_free(m);
    ASSERT_MSG(d1 < tol && d2 < tol, "%s: max diff %g (shell), %g (file)", dir, d1, d2);
}

TEST(forward_tiny_v2lite)
{
    check_hf("tiny-v2lite", DS_TYPE_F32, 1e-4);
}

TEST(forward_tiny_v3_fp8)
{
    check_hf("tiny-v3-fp8", DS_TYPE_F8_E4M3, 1e-4);
}

/* ---- losses, schedule -------------------------------------------------------------------- */

TEST(kd_self_is_zero_and_topk_full)
{
    struct ds_hparams hp = tiny_hp();
    struct ds_tmodel *m;
    struct ds_trainer *tr;
    struct ds_train_opts o;
    int32_t tok[2 * 6];
    struct ds_loss l1, l2, l3;
    ASSERT_OK(ds_tmodel_init(&hp, NULL, 1, &m));
    perturb(m);
    ds_train_opts_default(&o);
    o.batch = 2;
    o.ctx = 5;
    ASSERT_OK(ds_trainer_new(m, &o, &tr));
    for (int i = 0; i < 12; i++)
        tok[i] = (int32_t)(i * 5 % 24);
    float *lg = malloc(10 * 24 * sizeof(float)), *tv = malloc(10 * 24 * sizeof(float));
    int32_t *ti = malloc(10 * 24 * sizeof(int32_t));
    struct ds_batch b = {.n_seq = 2, .n_tok = 5, .tokens = tok};
    ASSERT_OK(ds_trainer_eval(tr, &b, &l1));
    memcpy(lg, ds_trainer_logits(tr, 0), 5 * 24 * sizeof(float));
    memcpy(lg + 5 * 24, ds_trainer_logits(tr, 1), 5 * 24 * sizeof(float));
    b.teacher_logits = lg;
    ASSERT_OK(ds_trainer_eval(tr, &b, &l2));
    ASSERT_MSG(fabs(l2.kd) < 1e-5, "kd %g", l2.kd);
    ASSERT_MSG(fabs(l2.ce - l1.ce) < 1e-9, "ce %g vs %g", l2.ce, l1.ce);
    // top-k with k = V is the full distribution
    for (int n = 0; n < 10; n++)
        ds_logits_topk(lg + n * 24, 24, 24, ti + n * 24, tv + n * 24);
    for (int j = 1; j < 24; j++)
        ASSERT(tv[j] <= tv[j - 1]);
    for (int n = 0; n < 10 * 24; n++)
        lg[n] += (float)(0.5 * sin(n));
    ASSERT_OK(ds_trainer_eval(tr, &b, &l2));
    for (int n = 0; n < 10; n++)
        ds_logits_topk(lg + n * 24, 24, 24, ti + n * 24, tv + n * 24);
    b.teacher_logits = NULL;
    b.teacher_topk = 24;
    b.teacher_ids = ti;
    b.teacher_vals = tv;
    ASSERT_OK(ds_trainer_eval(tr, &b, &l3));
    ASSERT_MSG(l2.kd > 1e-3 && fabs(l2.kd - l3.kd) < 1e-6, "kd full %g, top-k %g", l2.kd, l3.kd);
    free(lg);
    free(tv);
    free(ti);
    ds_trainer_free(tr);
    ds_tmodel_free(m);
}

TEST(lr_schedule)
{
    struct ds_train_opts o;
    ds_train_opts_default(&o);
    o.steps = 110;
    o.warmup = 10;
    o.lr = 1.0;
    o.min_lr = 0.1;
    ASSERT(fabs(ds_train_lr(&o, 0) - 0.1) < 1e-12);
    ASSERT(fabs(ds_train_lr(&o, 9) - 1.0) < 1e-12);
    ASSERT(fabs(ds_train_lr(&o, 10) - 1.0) < 1e-12);
    ASSERT(fabs(ds_train_lr(&o, 60) - 0.55) < 1e-12);
    ASSERT(fabs(ds_train_lr(&o, 110) - 0.1) < 1e-12);
    ASSERT(fabs(ds_train_lr(&o, 500) - 0.1) < 1e-12);
    o.lr = -1;
    ASSERT_ERR(ds_train_opts_check(&o), DS_ERR_ARG);
}

/* ---- training runs ------------------------------------------------------------------------ */

static int32_t *corpus(size_t n, int64_t V)
{
    int32_t *d = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) // a learnable pattern with noise
        d[i] = (int32_t)(((i % 7) * 3 + (urand() > 0.8 ? 1 : 0)) % (size_t)V);
    return d;
}

static void opts_small(struct ds_train_opts *o)
{
    ds_train_opts_default(o);
    o->batch = 2;
    o->ctx = 8;
    o->accum = 2;
    o->steps = 6;
    o->warmup = 2;
    o->lr = 1e-2;
    o->seq_aux = 0.01;
    o->balance_gamma = 0.01;
}

/* runs steps [from, to) of tr, losses into out[] */
static ds_err run_steps(struct ds_trainer *tr, int64_t to, double *out)
{
    const struct ds_train_opts *o = ds_trainer_opts(tr);
    int32_t *tok = malloc((size_t)(o->batch * (o->ctx + 1)) * sizeof(int32_t));
    ds_err e = DS_OK;
    while (e == DS_OK && ds_trainer_step_count(tr) < to) {
        struct ds_step_stats st;
        for (int64_t a = 0; a < o->accum && e == DS_OK; a++) {
            struct ds_batch b = {.n_seq = o->batch, .n_tok = o->ctx, .tokens = tok};
            e = ds_trainer_next_windows(tr, o->batch, NULL, tok);
            if (e == DS_OK)
                e = ds_trainer_accumulate(tr, &b, NULL);
        }
        if (e == DS_OK)
            e = ds_trainer_update(tr, &st);
        if (e == DS_OK)
            out[st.step - 1] = st.loss.loss;
    }
    free(tok);
    return e;
}

TEST(resume_is_exact)
{
    struct ds_hparams hp = sigmoid_hp();
    struct ds_tmodel *m;
    struct ds_trainer *tr;
    struct ds_train_opts o;
    double full[6], part[6];
    int32_t *data = corpus(300, hp.vocab_size);

    opts_small(&o);
    ASSERT_OK(ds_tmodel_init(&hp, NULL, 5, &m));
    ASSERT_OK(ds_trainer_new(m, &o, &tr));
    ASSERT_OK(ds_trainer_set_data(tr, data, 300));
    ASSERT_OK(run_steps(tr, 6, full));
    ds_trainer_free(tr);
    ds_tmodel_free(m);

    ASSERT_OK(ds_tmodel_init(&hp, NULL, 5, &m));
    ASSERT_OK(ds_trainer_new(m, &o, &tr));
    ASSERT_OK(ds_trainer_set_data(tr, data, 300));
    ASSERT_OK(run_steps(tr, 3, part));
    ASSERT_OK(ds_checkpoint_save(tr, tmp("ckpt")));
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    ASSERT_OK(ds_checkpoint_load(tmp("ckpt"), &m, &tr));
    ASSERT_EQ_INT(ds_trainer_step_count(tr), 3);
    ASSERT_OK(ds_trainer_set_data(tr, data, 300));
    ASSERT_OK(run_steps(tr, 6, part));
    for (int i = 0; i < 6; i++)
        ASSERT_MSG(full[i] == part[i], "step %d: %.17g vs %.17g", i + 1, full[i], part[i]);
    // another corpus is refused
    ASSERT_ERR(ds_trainer_set_data(tr, data, 200), DS_ERR_ARG);
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    free(data);
}

TEST(deterministic_across_threads_and_loss_falls)
{
    struct ds_hparams hp = tiny_hp();
    double l1[20], l2[20];
    int32_t *data = corpus(400, hp.vocab_size);
    for (int run = 0; run < 2; run++) {
        struct ds_tmodel *m;
        struct ds_trainer *tr;
        struct ds_train_opts o;
        opts_small(&o);
        o.steps = 20;
        ds_set_threads(run ? 2 : 1);
        ASSERT_OK(ds_tmodel_init(&hp, NULL, 9, &m));
        ASSERT_OK(ds_trainer_new(m, &o, &tr));
        ASSERT_OK(ds_trainer_set_data(tr, data, 400));
        ASSERT_OK(run_steps(tr, 20, run ? l2 : l1));
        ds_trainer_free(tr);
        ds_tmodel_free(m);
    }
    ds_set_threads(0);
    for (int i = 0; i < 20; i++)
        ASSERT_MSG(l1[i] == l2[i], "step %d: %.17g (1 thread) vs %.17g (2)", i + 1, l1[i], l2[i]);
    ASSERT_MSG(l1[19] < l1[0] - 0.5, "loss %g -> %g", l1[0], l1[19]);
    free(data);
}

TEST(bias_update_balances)
{
    struct ds_hparams hp = sigmoid_hp();
    struct ds_tmodel *m;
    struct ds_trainer *tr;
    struct ds_train_opts o;
    double l[4];
    int32_t *data = corpus(300, hp.vocab_size);
    int64_t n;
    opts_small(&o);
    o.steps = 4;
    ASSERT_OK(ds_tmodel_init(&hp, NULL, 5, &m));
    ASSERT_OK(ds_trainer_new(m, &o, &tr));
    ASSERT_OK(ds_trainer_set_data(tr, data, 300));
    ASSERT_OK(run_steps(tr, 4, l));
    const float *b = ds_tmodel_tensor(m, "blk.1.exp_probs_b.bias", &n);
    ASSERT(b && n == 8);
    double s = 0;
    for (int e = 0; e < 8; e++) {
        // each step moves every entry by +-gamma or 0
        double k = b[e] / 0.01;
        ASSERT_MSG(fabs(k - round(k)) < 1e-3, "bias %g", b[e]);
        s += fabs(b[e]);
    }
    ASSERT(s > 0);
    ds_trainer_free(tr);
    ds_tmodel_free(m);
    free(data);
}

TEST(carve)
{
    struct ds_hparams hp = tiny_hp();
    struct ds_tmodel *m, *c;
    struct ds_model *t;
    int64_t keep[2] = {0, 2}, n1, n2;
    int32_t calib[64];
    double d1, d2;
    ASSERT_OK(ds_tmodel_init(&hp, NULL, 4, &m));
    perturb(m);
    ASSERT_OK(ds_tmodel_save(m, tmp("teacher.gguf"), DS_TYPE_F32, DS_WRITE_FORCE));
    ASSERT_OK(ds_model_load(tmp("teacher.gguf"), &t));
    // everything kept: the same model
    ASSERT_OK(ds_tmodel_carve(t, NULL, 0, 0, NULL, 0, &c));
    ASSERT_EQ_INT(ds_tmodel_n_params(c), ds_tmodel_n_params(m));
    ASSERT(memcmp(c->w, m->w, m->nw * sizeof(float)) == 0);
    ds_tmodel_free(c);
    // layers 0 and 2, 3 of 4 experts chosen on calibration tokens
    for (int i = 0; i < 64; i++)
        calib[i] = (int32_t)(i * 11 % 24);
    ASSERT_OK(ds_tmodel_carve(t, keep, 2, 3, calib, 64, &c));
    ASSERT_EQ_INT(c->hp.n_layers, 2);
    ASSERT_EQ_INT(c->hp.n_routed_experts, 3);
    ASSERT_EQ_INT(c->hp.n_experts_per_tok, 2);
    ASSERT_EQ_INT(c->hp.first_k_dense_replace, 1);
    const float *a = ds_tmodel_tensor(c, "blk.1.attn_q_b.weight", &n1),
                *b = ds_tmodel_tensor(m, "blk.2.attn_q_b.weight", &n2);
    ASSERT(a && b && n1 == n2 && memcmp(a, b, (size_t)n1 * sizeof(float)) == 0);
    logits_match(c, tmp("carved.gguf"), 1e-4, &d1, &d2);
    ASSERT_MSG(d1 < 1e-4 && d2 < 1e-4, "carved: %g %g", d1, d2);
    ds_tmodel_free(c);
    // errors
    int64_t bad[2] = {2, 0};
    ASSERT_ERR(ds_tmodel_carve(t, bad, 2, 0, NULL, 0, &c), DS_ERR_ARG);
    int64_t out_of_range[1] = {5};
    ASSERT_ERR(ds_tmodel_carve(t, out_of_range, 1, 0, NULL, 0, &c), DS_ERR_ARG);
    ASSERT_ERR(ds_tmodel_carve(t, NULL, 0, 9, NULL, 0, &c), DS_ERR_ARG);
    ds_model_free(t);
    ds_tmodel_free(m);
}

TEST(save_f16_bf16_loads)
{
    struct ds_hparams hp = tiny_hp();
    struct ds_tmodel *m, *r;
    enum ds_type ty[2] = {DS_TYPE_F16, DS_TYPE_BF16};
    ASSERT_OK(ds_tmodel_init(&hp, NULL, 4, &m));
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ds_tmodel_save(m, tmp("h.gguf"), ty[i], DS_WRITE_FORCE));
        ASSERT_OK(ds_tmodel_load(tmp("h.gguf"), &r));
        ASSERT_EQ_INT(ds_tmodel_n_params(r), ds_tmodel_n_params(m));
        double d = max_diff(r->w, m->w, m->nw);
        ASSERT_MSG(d < 1e-3, "max diff %g", d);
        ds_tmodel_free(r);
    }
    ASSERT_ERR(ds_tmodel_save(m, tmp("h.gguf"), DS_TYPE_Q8_0, DS_WRITE_FORCE), DS_ERR_ARG);
    ds_tmodel_free(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_train.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(grad_moe_softmax_qlora_ce);
    RUN(grad_moe_kd_forward_full_seq_aux);
    RUN(grad_sigmoid_noaux_groups_reverse_topk_tied);
    RUN(grad_group_limited_single_moe_layer);
    RUN(grad_dense_reverse_full);
    RUN(forward_matches_ds_forward);
    RUN(forward_tiny_v2lite);
    RUN(forward_tiny_v3_fp8);
    RUN(kd_self_is_zero_and_topk_full);
    RUN(lr_schedule);
    RUN(resume_is_exact);
    RUN(deterministic_across_threads_and_loss_falls);
    RUN(bias_update_balances);
    RUN(carve);
    RUN(save_f16_bf16_loads);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
