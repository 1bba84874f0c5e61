/* ds-convert - Hugging Face checkpoints to GGUF and back, streaming. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_TO = DS_OPT_TOOL,
    OPT_OUTTYPE,
    OPT_LIST,
    OPT_JSON,
    OPT_ZSTD,
    OPT_ZSTD_LEVEL,
    OPT_SHARD_SIZE,
};

static const struct ds_opt options[] = {
    {OPT_TO, 0, "to", "FORMAT", "output format: gguf, or safetensors (a Hugging Face directory)",
     "gguf", "gguf|safetensors", false},
    {OPT_OUTTYPE, 0, "outtype", "TYPE",
     "tensor type: f32, f16, bf16, or fp8 (keep FP8 weights; not loadable by llama.cpp)",
     "as stored; bf16 for FP8", "f32|f16|bf16|fp8", false},
    {OPT_LIST, 'l', "list", NULL, "print the metadata and tensors of INPUT instead of converting",
     NULL, NULL, false},
    {OPT_JSON, 0, "json", NULL, "with --list: print one JSON object", NULL, NULL, false},
    {OPT_ZSTD, 'z', "zstd", NULL, "compress the output with zstd (implied by a .zst output name)",
     NULL, NULL, false},
    {OPT_ZSTD_LEVEL, 0, "zstd-level", "N", "zstd compression level, 1 to 19", "3", NULL, false},
    {OPT_SHARD_SIZE, 0, "shard-size", "SIZE",
     "with --to safetensors: largest shard, in bytes or with K, M, G suffix", "5G", NULL, false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

static uint64_t parse_size(const struct ds_cli *c, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (end == s || v <= 0)
        ds_cli_usage_error(c, "invalid size '%s' for --shard-size", s);
    switch (*end) {
    case 'K': case 'k': mul = 1e3; end++; break;
    case 'M': case 'm': mul = 1e6; end++; break;
    case 'G': case 'g': mul = 1e9; end++; break;
    case 'T': case 't': mul = 1e12; end++; break;
    default: break;
    }
    if (*end == 'B')
        end++;
    if (*end || v * mul < 1 || v * mul > 1e18)
        ds_cli_usage_error(c, "invalid size '%s' for --shard-size", s);
    return (uint64_t)(v * mul);
}

static const char *format_name(enum ds_format f)
{
    return f == DS_FORMAT_GGUF ? "gguf" : "safetensors";
}

static void list_text(const struct ds_gguf *g, enum ds_format fmt, const char *input)
{
    char buf[512];
    const char *why = NULL;
    bool ok = ds_gguf_llama_loadable(g, &why);
    size_t nkv = ds_meta_count(g->meta);

    printf("%s: %s", input ? input : "<stdin>", format_name(fmt));
    if (fmt == DS_FORMAT_GGUF)
        printf(", GGUF v%u, alignment %u", g->version, g->alignment);
    else
        printf(" (the GGUF that ds-convert would write)");
    printf(", %zu metadata keys, %zu tensors\n", nkv, g->n_tensors);
    if (!ok)
        printf("NOT LOADABLE BY LLAMA.CPP: tensor '%s' has a dskit extension type\n", why);
    printf("\nmetadata:\n");
    for (size_t i = 0; i < nkv; i++) {
        enum ds_vtype t = ds_meta_type(g->meta, i), et;
        uint64_t n;
        ds_meta_format(g->meta, i, buf, sizeof(buf), 8);
        if (ds_meta_arr(g->meta, i, &et, &n))
            printf("  %-48s arr[%s]  %s\n", ds_meta_key(g->meta, i), ds_vtype_name(et), buf);
        else
            printf("  %-48s %-8s %s\n", ds_meta_key(g->meta, i), ds_vtype_name(t), buf);
    }
    printf("\ntensors:\n  %-44s %-8s %-24s %12s %12s\n", "name", "type", "shape", "bytes",
           "offset");
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct ds_tensor_info *ti = &g->tensors[i];
        char shape[64];
        int n = 0;
        shape[0] = '\0';
        for (uint32_t d = 0; d < ti->n_dims && n >= 0 && (size_t)n < sizeof(shape); d++)
            n += snprintf(shape + n, sizeof(shape) - (size_t)n, "%s%lld", d ? " x " : "",
                          (long long)ti->ne[d]);
        printf("  %-44s %-8s %-24s %12llu %12llu%s\n", ti->name, ds_type_name(ti->type), shape,
               (unsigned long long)ti->nbytes, (unsigned long long)ti->offset,
               ds_type_llama_loadable(ti->type) ? "" : "  (not loadable by llama.cpp)");
    }
}

static cJSON *meta_value_json(const struct ds_meta *m, size_t i)
{
    enum ds_vtype t = ds_meta_type(m, i), et;
    uint64_t n;
    size_t len;
    if (t == DS_V_STR)
        return cJSON_CreateString(ds_meta_str(m, i, &len));
    if (ds_meta_arr(m, i, &et, &n)) {
        cJSON *a = cJSON_CreateArray();
        const unsigned char *p = ds_meta_arr_data(m, i);
        for (uint64_t j = 0; a && j < n; j++) {
            cJSON *e;
            if (et == DS_V_STR) {
                e = cJSON_CreateString(ds_meta_arr_str(m, i, j, &len));
            } else {
                double v = 0;
                const unsigned char *q = p + j * ds_vtype_size(et);
                switch (et) {
                case DS_V_U8: v = *q; break;
                case DS_V_I8: v = *(const int8_t *)q; break;
                case DS_V_U16: { uint16_t x; memcpy(&x, q, 2); v = x; break; }
                case DS_V_I16: { int16_t x; memcpy(&x, q, 2); v = x; break; }
                case DS_V_U32: { uint32_t x; memcpy(&x, q, 4); v = x; break; }
                case DS_V_I32: { int32_t x; memcpy(&x, q, 4); v = x; break; }
                case DS_V_F32: { float x; memcpy(&x, q, 4); v = x; break; }
                case DS_V_BOOL: e = cJSON_CreateBool(*q); goto add;
                case DS_V_U64: { uint64_t x; memcpy(&x, q, 8); v = (double)x; break; }
                case DS_V_I64: { int64_t x; memcpy(&x, q, 8); v = (double)x; break; }
                case DS_V_F64: { memcpy(&v, q, 8); break; }
                default: break;
                }
                e = cJSON_CreateNumber(v);
            }
        add:
            cJSON_AddItemToArray(a, e);
        }
        return a;
    }
    if (t == DS_V_BOOL) {
        bool b = false;
        ds_meta_get_bool(m, ds_meta_key(m, i), &b);
        return cJSON_CreateBool(b);
    }
    double v = 0;
    ds_meta_get_float(m, ds_meta_key(m, i), &v);
    return cJSON_CreateNumber(v);
}

/* The --list --json report on stdout; false after an error message. */
static bool list_json(const struct ds_cli *c, const struct ds_gguf *g, enum ds_format fmt,
                      const char *input)
{
    const char *why = NULL;
    cJSON *root = cJSON_CreateObject(), *meta, *types, *tensors;

    if (!root) {
        ds_cli_error(c, "out of memory");
        return false;
    }
    cJSON_AddStringToObject(root, "input", input ? input : "-");
    cJSON_AddStringToObject(root, "format", format_name(fmt));
    if (fmt == DS_FORMAT_GGUF) {
        cJSON_AddNumberToObject(root, "version", g->version);
        cJSON_AddNumberToObject(root, "alignment", g->alignment);
    }
    cJSON_AddBoolToObject(root, "llama_cpp_loadable", ds_gguf_llama_loadable(g, &why));
    meta = cJSON_AddObjectToObject(root, "metadata");
    types = cJSON_AddObjectToObject(root, "metadata_types");
    for (size_t i = 0; i < ds_meta_count(g->meta); i++) {
        enum ds_vtype et;
        uint64_t n;
        char tn[32];
        cJSON_AddItemToObject(meta, ds_meta_key(g->meta, i), meta_value_json(g->meta, i));
        if (ds_meta_arr(g->meta, i, &et, &n))
            snprintf(tn, sizeof(tn), "array[%s]", ds_vtype_name(et));
        else
            snprintf(tn, sizeof(tn), "%s", ds_vtype_name(ds_meta_type(g->meta, i)));
        cJSON_AddStringToObject(types, ds_meta_key(g->meta, i), tn);
    }
    tensors = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct ds_tensor_info *ti = &g->tensors[i];
        cJSON *t = cJSON_CreateObject(), *shape;
        cJSON_AddStringToObject(t, "name", ti->name);
        cJSON_AddStringToObject(t, "type", ds_type_name(ti->type));
        shape = cJSON_AddArrayToObject(t, "shape");
        for (uint32_t d = 0; d < ti->n_dims; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ti->ne[d]));
        cJSON_AddNumberToObject(t, "bytes", (double)ti->nbytes);
        cJSON_AddNumberToObject(t, "offset", (double)ti->offset);
        cJSON_AddBoolToObject(t, "llama_cpp_loadable", ds_type_llama_loadable(ti->type));
        cJSON_AddItemToArray(tensors, t);
    }
    return ds_cli_put_json(c, root);
}

int main(int argc, char **argv)
{
    struct ds_cli c = {
        .prog = "ds-convert",
        .synopsis = "[options] [INPUT] [-o OUTPUT]",
        .summary = "Convert DeepSeek checkpoints between Hugging Face safetensors and GGUF.\n"
                   "INPUT is a Hugging Face directory, a .safetensors file, a .gguf (or .gguf.zst)\n"
                   "file, or '-' / nothing for a GGUF on standard input.",
        .opts = options,
        .output_file = true,
    };
    struct ds_convert_opts o = {.to = DS_FORMAT_GGUF, .outtype = -1};
    struct ds_convert_stats st = {0};
    bool list = false, json = false, zstd = false;
    const char *arg, *input;
    char prov[512];
    int id, n;
    ds_err rc;

    ds_cli_init(&c, argc, argv);
    n = snprintf(prov, sizeof(prov), "ds-convert %s", ds_version());
    for (int i = 1; i < argc && n > 0 && (size_t)n < sizeof(prov); i++)
        n += snprintf(prov + n, sizeof(prov) - (size_t)n, " %s", argv[i]);
    while ((id = ds_cli_next(&c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_TO:
            if (!strcmp(arg, "gguf"))
                o.to = DS_FORMAT_GGUF;
            else if (!strcmp(arg, "safetensors") || !strcmp(arg, "hf"))
                o.to = DS_FORMAT_SAFETENSORS;
            else
                ds_cli_usage_error(&c, "invalid value '%s' for --to (gguf or safetensors)", arg);
            break;
        case OPT_OUTTYPE: {
            enum ds_type t;
            if (ds_type_from_name(arg, &t) != DS_OK ||
                (t != DS_TYPE_F32 && t != DS_TYPE_F16 && t != DS_TYPE_BF16 &&
                 t != DS_TYPE_F8_E4M3))
                ds_cli_usage_error(&c, "invalid value '%s' for --outtype (f32, f16, bf16 or fp8)",
                                   arg);
            o.outtype = (int)t;
            break;
        }
        case OPT_LIST: list = true; break;
        case OPT_JSON: json = true; break;
        case OPT_ZSTD: zstd = true; break;
        case OPT_ZSTD_LEVEL:
            o.zstd_level = (int)ds_cli_int(&c, "--zstd-level", arg, 1, 19);
            break;
        case OPT_SHARD_SIZE: o.shard_size = parse_size(&c, arg); break;
        default: break;
        }
    }
    if (c.n_operands > 1)
        ds_cli_usage_error(&c, "too many operands (one INPUT; the output goes with -o)");
    input = c.n_operands ? c.operands[0] : NULL;
    if (json && !list)
        ds_cli_usage_error(&c, "--json goes with --list");
    o.threads = ds_set_threads(c.threads);
    ds_cli_check_binary_stdin(&c, input);

    if (list) {
        struct ds_gguf g;
        enum ds_format fmt;
        if (c.output)
            ds_cli_usage_error(&c, "--list prints to standard output; -o does not apply");
        if ((rc = ds_gguf_init(&g)) != DS_OK)
            ds_cli_fail(&c, rc);
        if ((rc = ds_convert_inspect(input, o.outtype, &g, &fmt)) != DS_OK)
            ds_cli_fail(&c, rc);
        if (json ? !list_json(&c, &g, fmt, input) : (list_text(&g, fmt, input), false)) {
            ds_gguf_release(&g);
            return DS_EXIT_FAILURE;
        }
        ds_gguf_release(&g);
        ds_cli_finish_stdout(&c);
        return DS_EXIT_OK;
    }

    if (o.to == DS_FORMAT_SAFETENSORS && (!c.output || !strcmp(c.output, "-")))
        ds_cli_usage_error(&c, "--to safetensors writes a directory; give it with -o DIR");
    if (o.to == DS_FORMAT_SAFETENSORS && zstd)
        ds_cli_usage_error(&c, "--zstd applies to GGUF output only");
    ds_cli_check_binary_stdout(&c, c.output);
    if (input && c.output && strcmp(input, "-") && strcmp(c.output, "-") &&
        ds_same_file(input, c.output)) {
        ds_cli_error(&c, "input '%s' and output '%s' are the same file", input, c.output);
        return DS_EXIT_FAILURE;
    }
    o.input = input;
    o.output = c.output;
    o.write_flags = (c.force ? DS_WRITE_FORCE : 0) | (zstd ? DS_WRITE_ZSTD : 0);
    o.provenance = prov;
    if (ds_cli_progress_enabled(&c)) {
        o.progress = ds_cli_progress;
        o.progress_ud = &c;
    }
    rc = ds_convert(&o, &st);
    if (rc != DS_OK)
        ds_cli_fail(&c, rc);
    ds_cli_info(&c, "wrote %llu tensors, %llu bytes", (unsigned long long)st.n_tensors_out,
                (unsigned long long)st.bytes_out);
    ds_cli_finish_stdout(&c);
    return DS_EXIT_OK;
}
