/* ds-quantize - quantize a GGUF model to ggml block types, streaming. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_TYPE = DS_OPT_TOOL,
    OPT_TENSOR_TYPE,
    OPT_OUTPUT_TYPE,
    OPT_EMBD_TYPE,
    OPT_ALLOW_REQUANTIZE,
    OPT_JSON,
    OPT_ZSTD,
    OPT_LIST_TYPES,
    OPT_IMATRIX,
    OPT_CALIBRATE,
    OPT_CALIBRATE_CTX,
    OPT_CALIBRATE_CHUNKS,
    OPT_IMATRIX_OUT,
    OPT_ERROR_IMATRIX,
};

static const struct ds_opt options[] = {
    {OPT_TYPE, 't', "type", "TYPE",
     "target: a preset (q4_k_m, q5_k_m, q3_k_m, q2_k, ...) or a type (q8_0, q4_0, q4_K, "
     "iq4_nl, fp8, f16, ...)",
     NULL, "q2_k|q3_k_s|q3_k_m|q3_k_l|q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k|q8_0|q4_0|q4_1|q5_0|q5_1|"
           "q2_K|q3_K|q4_K|q5_K|q6_K|iq4_nl|iq4_xs|fp8|f16|bf16|f32",
     false},
    {OPT_TENSOR_TYPE, 0, "tensor-type", "REGEX=TYPE",
     "give tensors whose name matches REGEX this type (repeatable; the first match wins)", NULL,
     NULL, false},
    {OPT_OUTPUT_TYPE, 0, "output-type", "TYPE", "type of output.weight", "preset's", NULL, false},
    {OPT_EMBD_TYPE, 0, "embd-type", "TYPE", "type of token_embd.weight", "preset's", NULL,
     false},
    {OPT_ALLOW_REQUANTIZE, 0, "allow-requantize", NULL,
     "quantize tensors that are already quantized (loses quality)", NULL, NULL, false},
    {OPT_JSON, 0, "json", NULL, "print the report as one JSON object on standard output", NULL,
     NULL, false},
    {OPT_ZSTD, 'z', "zstd", NULL, "compress the output with zstd (implied by a .zst output name)",
     NULL, NULL, false},
    {OPT_LIST_TYPES, 0, "list-types", NULL, "list the presets and types and exit", NULL, NULL,
     false},
    {OPT_IMATRIX, 0, "imatrix", "FILE",
     "weight the quantization error by this importance matrix (llama.cpp's GGUF imatrix format)",
     NULL, "file", false},
    {OPT_CALIBRATE, 0, "calibrate", "TEXT",
     "compute the importance matrix by running INPUT (a file) over the text file TEXT", NULL,
     "file", false},
    {OPT_CALIBRATE_CTX, 0, "calibrate-ctx", "N", "with --calibrate: tokens per chunk", "512",
     NULL, false},
    {OPT_CALIBRATE_CHUNKS, 0, "calibrate-chunks", "N",
     "with --calibrate: at most N chunks (0: the whole text)", "0", NULL, false},
    {OPT_IMATRIX_OUT, 0, "imatrix-out", "FILE", "also save the importance matrix to FILE", NULL,
     "file", false},
    {OPT_ERROR_IMATRIX, 0, "error-imatrix", "FILE",
     "weight the reported error by this importance matrix without quantizing with it", NULL,
     "file", false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

struct report {
    const struct ds_cli *c;
    cJSON *tensors;          /* JSON entries, or NULL */
    uint64_t bytes, elements, n;
    double err2, x2;
    bool table_started;
};

struct hook {
    struct ds_qrules *rules;
    bool layers_set;
};

static const float *importance(void *ud, const char *name, int64_t n)
{
    return ds_imatrix_get(ud, name, n);
}

/* Runs the model in `path` over the text file `text` in chunks of ctx tokens
 * with an importance-matrix collector; returns it. Exits on failure. */
static struct ds_imatrix *calibrate(const struct ds_cli *c, const char *path, const char *text,
                                    long long ctx_len, long long max_chunks, long long *chunks)
{
    struct ds_model *m = NULL;
    struct ds_tokenizer *tok = NULL;
    struct ds_ctx *ctx = NULL;
    struct ds_imatrix *im = NULL;
    char *buf = NULL;
    size_t len = 0, n_ids = 0;
    int32_t *ids = NULL;
    ds_err e;

    if ((e = ds_model_load(path, &m)) || (e = ds_tokenizer_new(ds_model_meta(m), &tok)) ||
        (e = ds_read_file(text, (size_t)1 << 31, &buf, &len)) ||
        (e = ds_tokenizer_encode(tok, buf, len, false, false, &ids, &n_ids)) ||
        (e = ds_ctx_new(m, ctx_len, &ctx)) || (e = ds_imatrix_new(m, &im)))
        ds_cli_fail(c, e);
    free(buf);
    *chunks = 0;
    ds_ctx_set_imatrix(ctx, im);
    for (size_t at = 0; at + (size_t)ctx_len <= n_ids || (at == 0 && n_ids > 0);
         at += (size_t)ctx_len) {
        size_t n = n_ids - at < (size_t)ctx_len ? n_ids - at : (size_t)ctx_len;
        if (max_chunks > 0 && *chunks == max_chunks)
            break;
        ds_ctx_reset(ctx);
        if ((e = ds_forward(ctx, ids + at, n, NULL, false)) != DS_OK)
            ds_cli_fail(c, e);
        ++*chunks;
        ds_cli_info(c, "calibration chunk %lld: %zu tokens", *chunks, n);
    }
    if (*chunks == 0) {
        ds_cli_error(c, "'%s': no text to calibrate with", text);
        exit(DS_EXIT_FAILURE);
    }
    free(ids);
    ds_ctx_free(ctx);
    ds_tokenizer_free(tok);
    ds_model_free(m);
    return im;
}

static enum ds_type type_of(void *ud, const struct ds_meta *meta, const char *name,
                            uint32_t n_dims, const int64_t *ne, enum ds_type planned,
                            const char **note)
{
    struct hook *h = ud;
    if (!h->layers_set) {
        int64_t blocks = 0, nextn = 0;
        ds_meta_get_int(meta, "deepseek2.block_count", &blocks);
        ds_meta_get_int(meta, "deepseek2.nextn_predict_layers", &nextn);
        ds_qrules_set_layers(h->rules, blocks - nextn);
        h->layers_set = true;
    }
    return ds_qrules_type(h->rules, name, n_dims, ne, planned, note);
}

static void on_tensor(void *ud, const struct ds_tensor_report *t)
{
    struct report *r = ud;
    double rmse = t->n_elements ? sqrt(t->sum_err2 / (double)t->n_elements) : 0;
    double rel = t->sum_x2 > 0 ? sqrt(t->sum_err2 / t->sum_x2) : 0;

    r->bytes += t->bytes;
    r->elements += t->n_elements;
    r->err2 += t->sum_err2;
    r->x2 += t->sum_x2;
    r->n++;
    if (r->c->level >= 2 && !r->tensors) {
        if (!r->table_started) {
            fprintf(stderr, "%-40s %-8s %-8s %12s %10s %9s\n", "tensor", "from", "type", "bytes",
                    "rmse", "rel.err");
            r->table_started = true;
        }
        fprintf(stderr, "%-40s %-8s %-8s %12llu %10.3g %8.4f%%%s%s\n", t->name,
                ds_type_name(t->source_type), ds_type_name(t->type),
                (unsigned long long)t->bytes, rmse, 100 * rel, t->note ? "  " : "",
                t->note ? t->note : "");
    }
    if (r->tensors) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "source_type", ds_type_name(t->source_type));
        cJSON_AddStringToObject(o, "type", ds_type_name(t->type));
        cJSON_AddNumberToObject(o, "elements", (double)t->n_elements);
        cJSON_AddNumberToObject(o, "bytes", (double)t->bytes);
        cJSON_AddNumberToObject(o, "rmse", rmse);
        cJSON_AddNumberToObject(o, "relative_error", rel);
        cJSON_AddBoolToObject(o, "importance_weighted", t->weighted);
        if (t->note)
            cJSON_AddStringToObject(o, "fallback", t->note);
        cJSON_AddItemToArray(r->tensors, o);
    }
}

int main(int argc, char **argv)
{
    struct ds_cli c = {
        .prog = "ds-quantize",
        .synopsis = "-t TYPE [options] [INPUT] [-o OUTPUT]",
        .summary = "Quantize a GGUF model to llama.cpp's block types, streaming: memory stays "
                   "bounded by the\nlargest tensor. INPUT is a .gguf (or .gguf.zst) file, or '-' / "
                   "nothing for standard input.",
        .opts = options,
        .output_file = true,
    };
    struct ds_convert_opts o = {.to = DS_FORMAT_GGUF, .outtype = -1};
    struct ds_convert_stats st = {0};
    struct hook h = {0};
    struct report rep = {.c = &c};
    const char *arg, *input, *target = NULL, *out_type = NULL, *embd_type = NULL;
    const char *rules[64];
    const char *imatrix = NULL, *calib = NULL, *imatrix_out = NULL, *error_imatrix = NULL;
    long long calib_ctx = 512, calib_chunks = 0, n_chunks = 0;
    struct ds_imatrix *im = NULL;
    int n_rules = 0, id, n;
    bool json = false, zstd = false;
    char prov[512];
    ds_err rc;

    ds_cli_init(&c, argc, argv);
    n = snprintf(prov, sizeof(prov), "ds-quantize %s", ds_version());
    for (int i = 1; i < argc && n > 0 && (size_t)n < sizeof(prov); i++)
        n += snprintf(prov + n, sizeof(prov) - (size_t)n, " %s", argv[i]);
    while ((id = ds_cli_next(&c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_TYPE: target = arg; break;
        case OPT_TENSOR_TYPE:
            if (n_rules == 64)
                ds_cli_usage_error(&c, "at most 64 --tensor-type rules");
            rules[n_rules++] = arg;
            break;
        case OPT_OUTPUT_TYPE: out_type = arg; break;
        case OPT_EMBD_TYPE: embd_type = arg; break;
        case OPT_ALLOW_REQUANTIZE: o.allow_requantize = true; break;
        case OPT_JSON: json = true; break;
        case OPT_ZSTD: zstd = true; break;
        case OPT_IMATRIX: imatrix = arg; break;
        case OPT_CALIBRATE: calib = arg; break;
        case OPT_CALIBRATE_CTX: calib_ctx = ds_cli_int(&c, "--calibrate-ctx", arg, 1, 1 << 20); break;
        case OPT_CALIBRATE_CHUNKS:
            calib_chunks = ds_cli_int(&c, "--calibrate-chunks", arg, 0, 1 << 30);
            break;
        case OPT_IMATRIX_OUT: imatrix_out = arg; break;
        case OPT_ERROR_IMATRIX: error_imatrix = arg; break;
        case OPT_LIST_TYPES:
            printf("presets:\n%s\ntypes: q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K q6_K iq4_nl "
                   "iq4_xs fp8 f16 bf16 f32\nkernels: %s (DS_SIMD=scalar|avx2 caps them)\n",
                   ds_qrules_preset_help(), ds_quant_simd());
            ds_cli_finish_stdout(&c);
            return DS_EXIT_OK;
        default: break;
        }
    }
    if (!target)
        ds_cli_usage_error(&c, "no target type; give one with -t TYPE (see --list-types)");
    if (c.n_operands > 1)
        ds_cli_usage_error(&c, "too many operands (one INPUT; the output goes with -o)");
    input = c.n_operands ? c.operands[0] : NULL;
    if (json && (!c.output || !strcmp(c.output, "-")))
        ds_cli_usage_error(&c, "--json prints to standard output; write the model with -o FILE");
    if ((rc = ds_qrules_new(target, 0, &h.rules)) != DS_OK)
        ds_cli_usage_error(&c, "%s", ds_errmsg());
    for (int i = 0; i < n_rules; i++)
        if (ds_qrules_add(h.rules, rules[i]) != DS_OK)
            ds_cli_usage_error(&c, "--tensor-type: %s", ds_errmsg());
    if (out_type && ds_qrules_set_output(h.rules, out_type) != DS_OK)
        ds_cli_usage_error(&c, "--output-type: %s", ds_errmsg());
    if (embd_type && ds_qrules_set_embd(h.rules, embd_type) != DS_OK)
        ds_cli_usage_error(&c, "--embd-type: %s", ds_errmsg());
    if (!!imatrix + !!calib + !!error_imatrix > 1)
        ds_cli_usage_error(&c, "--imatrix, --calibrate and --error-imatrix exclude each other");
    if (calib && (!input || !strcmp(input, "-")))
        ds_cli_usage_error(&c, "--calibrate runs the model, so INPUT must be a file");
    if (imatrix_out && !imatrix && !calib)
        ds_cli_usage_error(&c, "--imatrix-out saves what --calibrate or --imatrix gives");
    ds_cli_check_binary_stdin(&c, input);
    ds_cli_check_binary_stdout(&c, c.output);
    if (input && c.output && strcmp(input, "-") && strcmp(c.output, "-") &&
        ds_same_file(input, c.output)) {
        ds_cli_error(&c, "input '%s' and output '%s' are the same file", input, c.output);
        return DS_EXIT_FAILURE;
    }

    o.input = input;
    o.output = c.output;
    o.write_flags = (c.force ? DS_WRITE_FORCE : 0) | (zstd ? DS_WRITE_ZSTD : 0);
    o.threads = ds_set_threads(c.threads);
    o.provenance = prov;
    o.type_of = type_of;
    o.type_ud = &h;
    o.file_type = ds_qrules_file_type(h.rules);
    o.on_tensor = on_tensor;
    o.report_ud = &rep;
    if (imatrix || error_imatrix) {
        if ((rc = ds_imatrix_load(imatrix ? imatrix : error_imatrix, &im)) != DS_OK)
            ds_cli_fail(&c, rc);
    } else if (calib) {
        im = calibrate(&c, input, calib, calib_ctx, calib_chunks, &n_chunks);
    }
    if (im && imatrix_out &&
        (rc = ds_imatrix_save(im, imatrix_out, calib ? calib : imatrix, n_chunks, calib_ctx)))
        ds_cli_fail(&c, rc);
    if (im) {
        o.importance = importance;
        o.importance_ud = im;
        o.importance_error_only = error_imatrix != NULL;
    }
    if (json)
        rep.tensors = cJSON_CreateArray();
    if (ds_cli_progress_enabled(&c) && !(c.level >= 2 && !json)) {
        o.progress = ds_cli_progress;
        o.progress_ud = &c;
    }
    rc = ds_convert(&o, &st);
    ds_qrules_free(h.rules);
    ds_imatrix_free(im);
    if (rc != DS_OK) {
        cJSON_Delete(rep.tensors);
        ds_cli_fail(&c, rc);
    }
    {
        double bpw = rep.elements ? 8.0 * (double)rep.bytes / (double)rep.elements : 0;
        double rel = rep.x2 > 0 ? sqrt(rep.err2 / rep.x2) : 0;
        if (json) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddStringToObject(root, "target", target);
            cJSON_AddStringToObject(root, "output", c.output);
            cJSON_AddItemToObject(root, "tensors", rep.tensors);
            cJSON_AddNumberToObject(root, "tensor_bytes", (double)rep.bytes);
            cJSON_AddNumberToObject(root, "file_bytes", (double)st.bytes_out);
            cJSON_AddNumberToObject(root, "elements", (double)rep.elements);
            cJSON_AddNumberToObject(root, "bits_per_weight", bpw);
            cJSON_AddNumberToObject(root, "relative_error", rel);
            if (!ds_cli_put_json(&c, root))
                return DS_EXIT_FAILURE;
        } else if (c.level >= 2) {
            fprintf(stderr, "%s: %llu tensors, %llu bytes of tensor data, %.4f bits per weight, "
                            "relative error %.4f%%\n",
                    c.prog, (unsigned long long)rep.n, (unsigned long long)rep.bytes, bpw,
                    100 * rel);
        }
    }
    ds_cli_finish_stdout(&c);
    return DS_EXIT_OK;
}
