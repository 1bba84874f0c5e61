/* ds-prune - prune a GGUF model: sparsity, N:M, experts, heads, layers; streaming. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_SPARSITY = DS_OPT_TOOL,
    OPT_NM,
    OPT_METHOD,
    OPT_TENSOR_SPARSITY,
    OPT_ALLOW_REQUANTIZE,
    OPT_EXPERTS,
    OPT_HEADS,
    OPT_LAYERS,
    OPT_DROP_LAYERS,
    OPT_CALIBRATE,
    OPT_CALIBRATE_CTX,
    OPT_CALIBRATE_CHUNKS,
    OPT_IMATRIX,
    OPT_JSON,
    OPT_ZSTD,
};

static const struct ds_opt options[] = {
    {OPT_SPARSITY, 's', "sparsity", "S",
     "zero a fraction S (0.5, or 50%) of the weights of every pruned matrix", NULL, NULL, false},
    {OPT_NM, 0, "nm", "N:M", "keep N of every M consecutive input weights of each row (2:4, 4:8)",
     NULL, NULL, false},
    {OPT_METHOD, 0, "method", "METHOD",
     "score: magnitude (|W|, per matrix) or wanda (|W| x input norm, per row)", "magnitude",
     "magnitude|wanda", false},
    {OPT_TENSOR_SPARSITY, 0, "tensor-sparsity", "REGEX=S",
     "give tensors whose name matches REGEX this sparsity, N:M or none (repeatable; the first "
     "match wins)",
     NULL, NULL, false},
    {OPT_ALLOW_REQUANTIZE, 0, "allow-requantize", NULL,
     "prune quantized tensors: dequantize, prune, quantize again to the same type", NULL, NULL,
     false},
    {OPT_EXPERTS, 'e', "experts", "F",
     "remove a fraction F (or a count) of the routed experts of every MoE layer", NULL, NULL,
     false},
    {OPT_HEADS, 0, "heads", "F", "remove a fraction F (or a count) of the attention heads of "
                                 "every layer", NULL, NULL, false},
    {OPT_LAYERS, 'l', "layers", "N",
     "remove the N (or a fraction) layers of lowest block influence (needs --calibrate)", NULL,
     NULL, false},
    {OPT_DROP_LAYERS, 0, "drop-layers", "LIST", "remove these layers (comma-separated indices)",
     NULL, NULL, false},
    {OPT_CALIBRATE, 'c', "calibrate", "TEXT",
     "run INPUT (a file) over the text file TEXT for router, layer and activation statistics",
     NULL, "file", false},
    {OPT_CALIBRATE_CTX, 0, "calibrate-ctx", "N", "with --calibrate: tokens per chunk", "512",
     NULL, false},
    {OPT_CALIBRATE_CHUNKS, 0, "calibrate-chunks", "N",
     "with --calibrate: at most N chunks (0: the whole text)", "0", NULL, false},
    {OPT_IMATRIX, 0, "imatrix", "FILE",
     "input activation statistics for wanda and head ranking from an importance matrix file",
     NULL, "file", false},
    {OPT_JSON, 0, "json", NULL, "print the report as one JSON object on standard output", NULL,
     NULL, false},
    {OPT_ZSTD, 'z', "zstd", NULL, "compress the output with zstd (implied by a .zst output name)",
     NULL, NULL, false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

struct report {
    const struct ds_cli *c;
    cJSON *tensors; /* JSON entries, or NULL */
    bool table_started;
};

static void on_tensor(void *ud, const struct ds_prune_tensor_report *t)
{
    struct report *r = ud;
    double sp = t->n_after ? (double)t->zeros / (double)t->n_after : 0;

    if (!t->pruned && !t->sliced && !r->tensors)
        return;
    if (r->c->level >= 2 && !r->tensors) {
        if (!r->table_started) {
            fprintf(stderr, "%-36s %-7s %12s %12s %9s  %s\n", "tensor", "type", "before",
                    "after", "sparsity", "");
            r->table_started = true;
        }
        char spt[16] = "-";
        if (t->pruned)
            snprintf(spt, sizeof(spt), "%.2f%%", 100 * sp);
        fprintf(stderr, "%-36s %-7s %12llu %12llu %9s  %s%s%s%s\n", t->name,
                ds_type_name(t->type), (unsigned long long)t->n_before,
                (unsigned long long)t->n_after, spt, t->sliced ? "sliced " : "",
                t->pruned ? "pruned " : "", t->requantized ? "requantized " : "",
                t->note ? t->note : "");
    }
    if (r->tensors) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "source", t->src_name);
        cJSON_AddStringToObject(o, "type", ds_type_name(t->type));
        cJSON_AddNumberToObject(o, "elements_before", (double)t->n_before);
        cJSON_AddNumberToObject(o, "elements_after", (double)t->n_after);
        cJSON_AddNumberToObject(o, "zeros", (double)t->zeros);
        cJSON_AddNumberToObject(o, "sparsity", t->pruned ? sp : 0);
        cJSON_AddBoolToObject(o, "pruned", t->pruned);
        cJSON_AddBoolToObject(o, "sliced", t->sliced);
        cJSON_AddBoolToObject(o, "requantized", t->requantized);
        if (t->note)
            cJSON_AddStringToObject(o, "note", t->note);
        cJSON_AddItemToArray(r->tensors, o);
    }
}

/* --experts/--heads/--layers: a fraction in (0, 1) or a count >= 1. */
static double amount(const struct ds_cli *c, const char *opt, const char *s)
{
    double v = ds_cli_float(c, opt, s);
    if (!(v > 0) || (v >= 1 && v != floor(v)) || v > 1e6)
        ds_cli_usage_error(c, "%s: '%s' is neither a fraction in (0, 1) nor a count", opt, s);
    return v;
}

/* Runs the model in path over the text file `text` with the collectors set.
 * Exits on failure. */
static void calibrate(const struct ds_cli *c, const char *path, const char *text,
                      long long ctx_len, long long max_chunks, struct ds_imatrix **im,
                      struct ds_calib **cal, struct ds_model **model)
{
    struct ds_model *m = NULL;
    struct ds_tokenizer *tok = NULL;
    struct ds_ctx *ctx = NULL;
    char *buf = NULL;
    size_t len = 0, n_ids = 0;
    int32_t *ids = NULL;
    int64_t chunks = 0;
    ds_err e;

    if ((e = ds_model_load(path, &m)) || (e = ds_tokenizer_new(ds_model_meta(m), &tok)) ||
        (e = ds_read_file(text, (size_t)1 << 31, &buf, &len)))
        ds_cli_fail(c, e);
    if (ctx_len > ds_model_hparams(m)->max_position_embeddings)
        ctx_len = ds_model_hparams(m)->max_position_embeddings;
    if ((e = ds_tokenizer_encode(tok, buf, len, ds_tokenizer_add_bos(tok), false, &ids, &n_ids)) ||
        (e = ds_ctx_new(m, ctx_len, &ctx)) || (e = ds_imatrix_new(m, im)) ||
        (e = ds_calib_new(m, cal)))
        ds_cli_fail(c, e);
    free(buf);
    if (n_ids == 0) {
        ds_cli_error(c, "'%s': no text to calibrate with", text);
        exit(DS_EXIT_FAILURE);
    }
    ds_ctx_set_imatrix(ctx, *im);
    ds_ctx_set_calib(ctx, *cal);
    if ((e = ds_calib_run(ctx, ids, n_ids, ctx_len, max_chunks, &chunks)) != DS_OK)
        ds_cli_fail(c, e);
    ds_cli_info(c, "calibration: %lld chunks, %lld tokens", (long long)chunks,
                (long long)ds_calib_tokens(*cal));
    free(ids);
    ds_ctx_free(ctx);
    ds_tokenizer_free(tok);
    *model = m; // the collectors borrow it
}

static size_t parse_list(const struct ds_cli *c, const char *s, int64_t *out, size_t cap)
{
    size_t n = 0;
    char *end;
    while (*s) {
        long long v = strtoll(s, &end, 10);
        if (end == s || (*end && *end != ',') || v < 0 || n == cap)
            ds_cli_usage_error(c, "--drop-layers: '%s' is not a list of layer indices", s);
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    if (!n)
        ds_cli_usage_error(c, "--drop-layers: empty list");
    return n;
}

static cJSON *removed_json(const int64_t *v, int64_t rows, int64_t per)
{
    cJSON *o = cJSON_CreateObject();
    for (int64_t l = 0; l < rows; l++) {
        char key[32];
        if (v[l * per] < 0)
            continue;
        snprintf(key, sizeof(key), "blk.%lld", (long long)l);
        cJSON *a = cJSON_AddArrayToObject(o, key);
        for (int64_t j = 0; j < per; j++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[l * per + j]));
    }
    return o;
}

static void print_removed(const char *what, const int64_t *v, int64_t rows, int64_t per)
{
    for (int64_t l = 0; l < rows; l++) {
        if (v[l * per] < 0)
            continue;
        fprintf(stderr, "  blk.%lld: %s", (long long)l, what);
        for (int64_t j = 0; j < per; j++)
            fprintf(stderr, "%s%lld", j ? "," : " ", (long long)v[l * per + j]);
        fputc('\n', stderr);
    }
}

int main(int argc, char **argv)
{
    struct ds_cli c = {
        .prog = "ds-prune",
        .synopsis = "[options] [INPUT] [-o OUTPUT]",
        .summary = "Prune a GGUF model: unstructured sparsity (magnitude, Wanda), N:M, and whole "
                   "routed experts,\nattention heads or layers. INPUT is a .gguf (or .gguf.zst) "
                   "file, or '-' / nothing for standard input.",
        .opts = options,
        .output_file = true,
    };
    struct ds_prune_opts o = {0};
    struct ds_prune_stats st = {0};
    struct report rep = {.c = &c};
    struct ds_prune_rules *rules = NULL;
    struct ds_imatrix *im = NULL;
    struct ds_calib *cal = NULL;
    struct ds_model *calib_model = NULL;
    const char *arg, *input, *calib = NULL, *imatrix = NULL, *sparsity = NULL, *nm = NULL;
    long long calib_ctx = 512, calib_chunks = 0;
    int64_t drop[4096];
    int id, n, n_rules = 0;
    bool json = false, zstd = false;
    char prov[512];
    ds_err rc;

    ds_cli_init(&c, argc, argv);
    if (ds_prune_rules_new(&rules) != DS_OK)
        ds_cli_fail(&c, DS_ERR_NOMEM);
    n = snprintf(prov, sizeof(prov), "ds-prune %s", ds_version());
    for (int i = 1; i < argc && n > 0 && (size_t)n < sizeof(prov); i++)
        n += snprintf(prov + n, sizeof(prov) - (size_t)n, " %s", argv[i]);
    while ((id = ds_cli_next(&c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_SPARSITY: sparsity = arg; break;
        case OPT_NM: nm = arg; break;
        case OPT_METHOD:
            if (!strcmp(arg, "magnitude"))
                o.method = DS_PRUNE_MAGNITUDE;
            else if (!strcmp(arg, "wanda"))
                o.method = DS_PRUNE_WANDA;
            else
                ds_cli_usage_error(&c, "--method: '%s' is not magnitude or wanda", arg);
            break;
        case OPT_TENSOR_SPARSITY:
            if (ds_prune_rules_add(rules, arg) != DS_OK)
                ds_cli_usage_error(&c, "--tensor-sparsity: %s", ds_errmsg());
            n_rules++;
            break;
        case OPT_ALLOW_REQUANTIZE: o.allow_requantize = true; break;
        case OPT_EXPERTS: o.experts = amount(&c, "--experts", arg); break;
        case OPT_HEADS: o.heads = amount(&c, "--heads", arg); break;
        case OPT_LAYERS: o.layers = amount(&c, "--layers", arg); break;
        case OPT_DROP_LAYERS:
            o.n_layer_list = parse_list(&c, arg, drop, sizeof(drop) / sizeof(drop[0]));
            o.layer_list = drop;
            break;
        case OPT_CALIBRATE: calib = arg; break;
        case OPT_CALIBRATE_CTX:
            calib_ctx = ds_cli_int(&c, "--calibrate-ctx", arg, 1, 1 << 20);
            break;
        case OPT_CALIBRATE_CHUNKS:
            calib_chunks = ds_cli_int(&c, "--calibrate-chunks", arg, 0, 1 << 30);
            break;
        case OPT_IMATRIX: imatrix = arg; break;
        case OPT_JSON: json = true; break;
        case OPT_ZSTD: zstd = true; break;
        default: break;
        }
    }
    if (c.n_operands > 1)
        ds_cli_usage_error(&c, "too many operands (one INPUT; the output goes with -o)");
    input = c.n_operands ? c.operands[0] : NULL;
    if (sparsity && nm)
        ds_cli_usage_error(&c, "--sparsity and --nm exclude each other");
    if (sparsity && ds_sparsity_parse(sparsity, &o.sparsity) != DS_OK)
        ds_cli_usage_error(&c, "--sparsity: %s", ds_errmsg());
    if (sparsity && o.sparsity.m)
        ds_cli_usage_error(&c, "--sparsity takes a fraction; use --nm for N:M");
    if (nm && (ds_sparsity_parse(nm, &o.sparsity) != DS_OK || !o.sparsity.m))
        ds_cli_usage_error(&c, "--nm: '%s' is not N:M with 1 <= N < M <= 256", nm);
    if (o.layers > 0 && o.n_layer_list)
        ds_cli_usage_error(&c, "--layers and --drop-layers exclude each other");
    if (!sparsity && !nm && !n_rules && !o.experts && !o.heads && !o.layers && !o.n_layer_list)
        ds_cli_usage_error(&c, "nothing to prune: give --sparsity, --nm, --tensor-sparsity, "
                               "--experts, --heads, --layers or --drop-layers");
    if (calib && imatrix)
        ds_cli_usage_error(&c, "--calibrate and --imatrix exclude each other");
    if (o.method == DS_PRUNE_WANDA && !calib && !imatrix)
        ds_cli_usage_error(&c, "--method wanda needs --calibrate TEXT or --imatrix FILE");
    if (o.layers > 0 && !calib)
        ds_cli_usage_error(&c, "--layers ranks layers over calibration text: give --calibrate "
                               "TEXT (or name them with --drop-layers)");
    if (calib && (!input || !strcmp(input, "-")))
        ds_cli_usage_error(&c, "--calibrate runs the model, so INPUT must be a file");
    if (json && (!c.output || !strcmp(c.output, "-")))
        ds_cli_usage_error(&c, "--json prints to standard output; write the model with -o FILE");
    ds_cli_check_binary_stdin(&c, input);
    ds_cli_check_binary_stdout(&c, c.output);
    if (input && c.output && strcmp(input, "-") && strcmp(c.output, "-") &&
        ds_same_file(input, c.output)) {
        ds_cli_error(&c, "input '%s' and output '%s' are the same file", input, c.output);
        return DS_EXIT_FAILURE;
    }

    if (imatrix && (rc = ds_imatrix_load(imatrix, &im)) != DS_OK)
        ds_cli_fail(&c, rc);
    if (calib)
        calibrate(&c, input, calib, calib_ctx, calib_chunks, &im, &cal, &calib_model);
    o.input = input;
    o.output = c.output;
    o.write_flags = (c.force ? DS_WRITE_FORCE : 0) | (zstd ? DS_WRITE_ZSTD : 0);
    o.threads = ds_set_threads(c.threads);
    o.provenance = prov;
    o.calibration = calib ? calib : imatrix;
    o.rules = rules;
    o.imatrix = im;
    o.calib = cal;
    o.on_tensor = on_tensor;
    o.report_ud = &rep;
    if (json)
        rep.tensors = cJSON_CreateArray();
    if (ds_cli_progress_enabled(&c) && !(c.level >= 2 && !json)) {
        o.progress = ds_cli_progress;
        o.progress_ud = &c;
    }
    rc = ds_prune(&o, &st);
    ds_prune_rules_free(rules);
    ds_imatrix_free(im);
    ds_calib_free(cal);
    ds_model_free(calib_model);
    if (rc != DS_OK) {
        cJSON_Delete(rep.tensors);
        ds_cli_fail(&c, rc);
    }
    {
        double sp = st.pruned_elements ? (double)st.pruned_zeros / (double)st.pruned_elements : 0;
        if (json) {
            cJSON *root = cJSON_CreateObject(), *a;
            cJSON_AddStringToObject(root, "output", c.output);
            cJSON_AddStringToObject(root, "method",
                                    o.method == DS_PRUNE_WANDA ? "wanda" : "magnitude");
            cJSON_AddItemToObject(root, "tensors", rep.tensors);
            cJSON_AddNumberToObject(root, "params_before", (double)st.params_before);
            cJSON_AddNumberToObject(root, "params_after", (double)st.params_after);
            cJSON_AddNumberToObject(root, "pruned_elements", (double)st.pruned_elements);
            cJSON_AddNumberToObject(root, "pruned_zeros", (double)st.pruned_zeros);
            cJSON_AddNumberToObject(root, "sparsity", sp);
            cJSON_AddNumberToObject(root, "layers_before", (double)st.layers_before);
            cJSON_AddNumberToObject(root, "layers_after", (double)st.layers_after);
            cJSON_AddNumberToObject(root, "experts_before", (double)st.experts_before);
            cJSON_AddNumberToObject(root, "experts_after", (double)st.experts_after);
            cJSON_AddNumberToObject(root, "heads_before", (double)st.heads_before);
            cJSON_AddNumberToObject(root, "heads_after", (double)st.heads_after);
            a = cJSON_AddArrayToObject(root, "removed_layers");
            for (size_t i = 0; i < st.n_removed_layers; i++)
                cJSON_AddItemToArray(a, cJSON_CreateNumber((double)st.removed_layers[i]));
            if (st.n_removed_experts)
                cJSON_AddItemToObject(root, "removed_experts",
                                      removed_json(st.removed_experts, st.n_out_layers,
                                                   st.n_removed_experts));
            if (st.n_removed_heads)
                cJSON_AddItemToObject(root, "removed_heads",
                                      removed_json(st.removed_heads, st.n_out_layers,
                                                   st.n_removed_heads));
            cJSON_AddNumberToObject(root, "file_bytes", (double)st.bytes_out);
            cJSON_AddNumberToObject(root, "zstd_bytes", (double)st.zstd_bytes);
            if (!ds_cli_put_json(&c, root))
                return DS_EXIT_FAILURE;
        } else if (c.level >= 2) {
            if (st.n_removed_layers) {
                fprintf(stderr, "%s: removed layers", c.prog);
                for (size_t i = 0; i < st.n_removed_layers; i++)
                    fprintf(stderr, "%s%lld", i ? "," : " ", (long long)st.removed_layers[i]);
                fputc('\n', stderr);
            }
            if (st.n_removed_experts) {
                fprintf(stderr, "%s: %lld of %lld routed experts removed per MoE layer:\n",
                        c.prog, (long long)st.n_removed_experts, (long long)st.experts_before);
                print_removed("experts", st.removed_experts, st.n_out_layers,
                              st.n_removed_experts);
            }
            if (st.n_removed_heads) {
                fprintf(stderr, "%s: %lld of %lld heads removed per layer:\n", c.prog,
                        (long long)st.n_removed_heads, (long long)st.heads_before);
                print_removed("heads", st.removed_heads, st.n_out_layers, st.n_removed_heads);
            }
            fprintf(stderr,
                    "%s: %llu -> %llu parameters (%.2f%%), pruned matrices %.2f%% zeros, "
                    "%llu bytes, %llu with zstd\n",
                    c.prog, (unsigned long long)st.params_before,
                    (unsigned long long)st.params_after,
                    st.params_before ? 100.0 * (double)st.params_after / (double)st.params_before
                                     : 0,
                    100 * sp, (unsigned long long)st.bytes_out,
                    (unsigned long long)st.zstd_bytes);
        }
    }
    ds_prune_stats_release(&st);
    ds_cli_finish_stdout(&c);
    return DS_EXIT_OK;
}
