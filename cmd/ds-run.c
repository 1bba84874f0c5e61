/* ds-run - one-shot prompts with a DeepSeek model, exact to DeepSeek's own code. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

enum {
    OPT_MODEL = DS_OPT_TOOL,
    OPT_PROMPT,
    OPT_FILE,
    OPT_N_PREDICT,
    OPT_CTX,
    OPT_TEMP,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_SEED,
    OPT_STOP,
    OPT_CHAT,
    OPT_CHAT_TEMPLATE,
    OPT_SYSTEM,
    OPT_TOKENIZE,
    OPT_TOKENS,
    OPT_DUMP_LOGITS,
    OPT_JSON,
    OPT_MTP,
    OPT_CACHE_TYPE,
};

static const struct ds_opt options[] = {
    {OPT_MODEL, 'm', "model", "FILE", "the model (GGUF; '-' for standard input)", NULL, "file",
     false},
    {OPT_PROMPT, 'p', "prompt", "TEXT", "the prompt", "standard input", NULL, false},
    {OPT_FILE, 'f', "file", "FILE", "read the prompt from FILE", NULL, "file", false},
    {OPT_N_PREDICT, 'n', "n-predict", "N", "generate at most N tokens (0: none)",
     "256; 0 with --dump-logits", NULL, false},
    {OPT_CTX, 'c', "ctx", "N", "context size in tokens; a longer prompt is an error",
     "the model's, at most 4096", NULL, false},
    {OPT_TEMP, 0, "temp", "T", "sampling temperature; 0 is greedy", "0.8", NULL, false},
    {OPT_TOP_K, 0, "top-k", "N", "sample from the N most likely tokens (0: off)", "40", NULL,
     false},
    {OPT_TOP_P, 0, "top-p", "P", "nucleus sampling: the smallest set with mass P (1: off)",
     "0.95", NULL, false},
    {OPT_MIN_P, 0, "min-p", "P", "drop tokens below P x the top probability (0: off)", "0.05",
     NULL, false},
    {OPT_SEED, 's', "seed", "N", "random seed: the same seed gives the same text", "random",
     NULL, false},
    {OPT_STOP, 0, "stop", "STR", "stop before STR in the output (repeatable)", NULL, NULL,
     false},
    {OPT_CHAT, 0, "chat", NULL, "apply the model's chat template to the prompt", NULL, NULL,
     false},
    {OPT_CHAT_TEMPLATE, 0, "chat-template", "NAME",
     "chat template to use instead of the model's: deepseek-v2, deepseek-v3, deepseek-r1", NULL,
     "deepseek-v2|deepseek-v3|deepseek-r1", false},
    {OPT_SYSTEM, 0, "system", "TEXT", "system text for --chat", NULL, NULL, false},
    {OPT_TOKENIZE, 0, "tokenize", NULL, "print the token ids of the prompt, one per line", NULL,
     NULL, false},
    {OPT_TOKENS, 0, "tokens", "LIST", "use these comma-separated token ids as the prompt", NULL,
     NULL, false},
    {OPT_DUMP_LOGITS, 0, "dump-logits", "FILE",
     "write the logits at every prompt position: float32 LE [n_tokens][n_vocab]", NULL, "file",
     false},
    {OPT_JSON, 0, "json", NULL, "print one JSON object (text, token counts, timings) instead",
     NULL, NULL, false},
    {OPT_CACHE_TYPE, 0, "cache-type", "TYPE",
     "store the KV cache as f32 or q8_0 (8 bits, 3.8x smaller)", "f32", "f32|q8_0", false},
    {OPT_MTP, 0, "mtp", NULL,
     "speculative decoding: draft each next token with the model's MTP layer", NULL, NULL,
     false},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

#define MAX_STOPS 16

struct run {
    struct ds_cli c;
    const char *model, *prompt, *prompt_file, *chat_template, *system, *tokens_arg, *dump;
    const char *stops[MAX_STOPS];
    int n_stops;
    long long n_predict;
    long long n_ctx;
    bool chat, tokenize, json, seed_set, mtp;
    struct ds_ctx_params cp;
    struct ds_sampler_params sp;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static noreturn void die_lib(const struct ds_cli *c, ds_err e)
{
    ds_cli_fail(c, e);
}

/* Reads all of f into a malloc'd NUL-terminated buffer. */
static char *slurp(const struct ds_cli *c, FILE *f, const char *name, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
        if (n + 1 == cap) {
            char *nb = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                ds_cli_error(c, "'%s': prompt is too large", name);
                exit(DS_EXIT_FAILURE);
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf || ferror(f)) {
        ds_cli_error(c, "cannot read '%s': %s", name, buf ? strerror(errno) : "out of memory");
        exit(DS_EXIT_FAILURE);
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int32_t *parse_tokens(const struct ds_cli *c, const char *s, size_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    const char *p = s;
    while (ids && *p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ','))
            ds_cli_usage_error(c, "invalid value '%s' for --tokens (comma-separated ids)", s);
        if (k == cap) {
            int32_t *nb = realloc(ids, 2 * cap * sizeof(*ids));
            if (!nb)
                break;
            ids = nb;
            cap *= 2;
        }
        ids[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids) {
        ds_cli_error(c, "out of memory");
        exit(DS_EXIT_FAILURE);
    }
    if (k == 0)
        ds_cli_usage_error(c, "--tokens needs at least one id");
    *n = k;
    return ids;
}

/* The prompt text: -p, -f FILE, or standard input. */
static char *read_prompt(struct run *r, size_t *len)
{
    if (r->prompt) {
        *len = strlen(r->prompt);
        char *s = strdup(r->prompt);
        if (!s) {
            ds_cli_error(&r->c, "out of memory");
            exit(DS_EXIT_FAILURE);
        }
        return s;
    }
    if (r->prompt_file && strcmp(r->prompt_file, "-")) {
        FILE *f = fopen(r->prompt_file, "rb");
        char *s;
        if (!f) {
            ds_cli_error(&r->c, "cannot open '%s': %s", r->prompt_file, strerror(errno));
            exit(DS_EXIT_FAILURE);
        }
        s = slurp(&r->c, f, r->prompt_file, len);
        fclose(f);
        return s;
    }
    return slurp(&r->c, stdin, "<stdin>", len);
}

/* Writes the logits of every position to path ('-': stdout), atomically. */
static void dump_logits(const struct run *r, const float *logits, size_t n, int64_t n_vocab)
{
    struct ds_writer *w = NULL;
    ds_err e;
    if ((!strcmp(r->dump, "-")) && isatty(STDOUT_FILENO)) {
        ds_cli_error(&r->c, "refusing to write binary data to a terminal; give --dump-logits FILE");
        exit(DS_EXIT_FAILURE);
    }
    e = ds_writer_open(&w, r->dump, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0);
    if (!e)
        e = ds_writer_write(w, logits, n * (size_t)n_vocab * sizeof(float));
    if (!e)
        e = ds_writer_commit(w);
    ds_writer_free(w);
    if (e)
        die_lib(&r->c, e);
}

static int32_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

/* ---- streaming output with stop strings ------------------------------------------- */

struct out {
    char *buf;        /* generated text (all of it) */
    size_t len, cap;
    size_t emitted;   /* bytes already written to stdout */
    bool stream;
    bool stopped;
};

static void out_append(const struct ds_cli *c, struct out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 4096;
        while (nc < o->len + n + 1)
            nc *= 2;
        char *nb = realloc(o->buf, nc);
        if (!nb) {
            ds_cli_error(c, "out of memory");
            exit(DS_EXIT_FAILURE);
        }
        o->buf = nb;
        o->cap = nc;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

/* Cuts the text at the first stop string and writes what can no longer be
 * the start of one. final: write everything left. */
static void out_flush(const struct run *r, struct out *o, bool final)
{
    size_t safe = o->len;
    /* text already written holds no stop string, and none starts in it */
    for (int k = 0; k < r->n_stops; k++) {
        const char *hit = o->len ? strstr(o->buf + o->emitted, r->stops[k]) : NULL;
        if (hit && (size_t)(hit - o->buf) < safe) {
            safe = (size_t)(hit - o->buf);
            o->len = safe;
            o->buf[safe] = '\0';
            o->stopped = true;
        }
    }
    if (!final && !o->stopped)
        for (int k = 0; k < r->n_stops; k++) {
            /* hold back a tail that is a prefix of this stop string */
            size_t sl = strlen(r->stops[k]);
            for (size_t t = sl - 1; t > 0; t--)
                if (t <= o->len && !memcmp(o->buf + o->len - t, r->stops[k], t)) {
                    if (o->len - t < safe)
                        safe = o->len - t;
                    break;
                }
        }
    if (o->stream && safe > o->emitted) {
        fwrite(o->buf + o->emitted, 1, safe - o->emitted, stdout);
        fflush(stdout);
        o->emitted = safe;
    }
}

/* Emits generated token t: counts it and writes its text. True when
 * generation ends here: at the end-of-sequence token or a stop string (with
 * *reason set), or with the n_predict-th token (reason unchanged). */
static bool emit_token(const struct ds_cli *c, const struct run *r, struct out *out,
                       struct ds_detok *dt, const struct ds_tokenizer *tok, int32_t t,
                       int32_t eos, long long *n_gen, const char **reason)
{
    char piece[512];
    long k;
    if (t == eos) {
        *reason = "eos";
        return true;
    }
    (*n_gen)++;
    k = ds_detok_push(dt, tok, t, piece, sizeof(piece));
    if (k > 0)
        out_append(c, out, piece, (size_t)k);
    out_flush(r, out, false);
    if (out->stopped) {
        *reason = "stop";
        return true;
    }
    return *n_gen == r->n_predict;
}

int main(int argc, char **argv)
{
    struct run r = {
        .c = {.prog = "ds-run",
              .synopsis = "-m MODEL [-p PROMPT | -f FILE] [options]",
              .summary = "Run a one-shot prompt with a DeepSeek model and stream the generated "
                         "text to standard output.\nThe prompt comes from -p, -f FILE or "
                         "standard input.",
              .opts = options},
        .n_predict = -1,
        .n_ctx = 0,
        .sp = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f},
    };
    struct ds_cli *c = &r.c;
    struct ds_model *model = NULL;
    struct ds_tokenizer *tok = NULL;
    struct ds_ctx *ctx = NULL;
    struct ds_sampler *smp = NULL;
    const char *arg;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL, *spec = NULL; /* spec: 2 verified rows, 1 draft row */
    long long n_drafted = 0, n_accepted = 0;
    struct out out = {0};
    double t0, t_load, t_prompt = 0, t_gen = 0;
    long long n_gen = 0;
    const char *stop_reason = "length";
    int64_t n_vocab;
    ds_err e;
    int status = DS_EXIT_FAILURE;
    bool lib_failed = false; /* goto fail_lib */
    int id;

    ds_cli_init(c, argc, argv);
    while ((id = ds_cli_next(c, &arg)) != DS_OPT_END) {
        switch (id) {
        case OPT_MODEL: r.model = arg; break;
        case OPT_PROMPT: r.prompt = arg; break;
        case OPT_FILE: r.prompt_file = arg; break;
        case OPT_N_PREDICT: r.n_predict = ds_cli_int(c, "--n-predict", arg, 0, 1 << 30); break;
        case OPT_CTX: r.n_ctx = ds_cli_int(c, "--ctx", arg, 1, 1 << 24); break;
        case OPT_TEMP: r.sp.temp = (float)ds_cli_float(c, "--temp", arg); break;
        case OPT_TOP_K: r.sp.top_k = (int32_t)ds_cli_int(c, "--top-k", arg, 0, 1 << 30); break;
        case OPT_TOP_P: r.sp.top_p = (float)ds_cli_float(c, "--top-p", arg); break;
        case OPT_MIN_P: r.sp.min_p = (float)ds_cli_float(c, "--min-p", arg); break;
        case OPT_SEED:
            r.sp.seed = (uint64_t)ds_cli_int(c, "--seed", arg, 0, INT64_MAX);
            r.seed_set = true;
            break;
        case OPT_STOP:
            if (r.n_stops == MAX_STOPS)
                ds_cli_usage_error(c, "at most %d --stop strings", MAX_STOPS);
            if (!*arg)
                ds_cli_usage_error(c, "--stop needs a non-empty string");
            r.stops[r.n_stops++] = arg;
            break;
        case OPT_CHAT: r.chat = true; break;
        case OPT_CHAT_TEMPLATE: {
            enum ds_chat_template t;
            if (ds_chat_from_name(arg, &t) != DS_OK)
                ds_cli_usage_error(c, "invalid value '%s' for --chat-template (deepseek-v2, "
                                      "deepseek-v3 or deepseek-r1)", arg);
            r.chat_template = arg;
            r.chat = true;
            break;
        }
        case OPT_SYSTEM: r.system = arg; break;
        case OPT_TOKENIZE: r.tokenize = true; break;
        case OPT_TOKENS: r.tokens_arg = arg; break;
        case OPT_DUMP_LOGITS: r.dump = arg; break;
        case OPT_JSON: r.json = true; break;
        case OPT_MTP: r.mtp = true; break;
        case OPT_CACHE_TYPE:
            if (!strcmp(arg, "f32"))
                r.cp.cache_type = DS_CACHE_F32;
            else if (!strcmp(arg, "q8_0"))
                r.cp.cache_type = DS_CACHE_Q8_0;
            else
                ds_cli_usage_error(c, "invalid value '%s' for --cache-type (f32 or q8_0)", arg);
            break;
        default: break;
        }
    }
    if (c->n_operands)
        ds_cli_usage_error(c, "unexpected operand '%s' (the prompt goes with -p)",
                           c->operands[0]);
    if (!r.model)
        ds_cli_usage_error(c, "no model; give one with -m FILE");
    if (r.prompt && r.prompt_file)
        ds_cli_usage_error(c, "-p and -f both give a prompt; use one");
    if (r.tokens_arg && (r.prompt || r.prompt_file || r.chat))
        ds_cli_usage_error(c, "--tokens is the whole prompt; it excludes -p, -f and --chat");
    if (r.system && !r.chat)
        ds_cli_usage_error(c, "--system goes with --chat");
    if (r.tokenize && (r.dump || r.json))
        ds_cli_usage_error(c, "--tokenize prints ids only; --dump-logits and --json do not apply");
    if (r.sp.temp < 0 || r.sp.top_p < 0 || r.sp.top_p > 1 || r.sp.min_p < 0 || r.sp.min_p > 1)
        ds_cli_usage_error(c, "sampling values out of range (temp >= 0, top-p and min-p in [0, 1])");
    if (!r.seed_set)
        r.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (r.n_predict < 0)
        r.n_predict = r.dump ? 0 : 256;
    ds_set_threads(c->threads);
    if (!strcmp(r.model, "-"))
        ds_cli_check_binary_stdin(c, r.model);

    /* model and tokenizer */
    t0 = now_s();
    if ((e = ds_model_load(r.model, &model)) != DS_OK)
        die_lib(c, e); /* nothing to free yet */
    t_load = now_s() - t0;
    if ((e = ds_tokenizer_new(ds_model_meta(model), &tok)) != DS_OK)
        goto fail_lib;

    /* the prompt as token ids */
    if (r.tokens_arg) {
        ids = parse_tokens(c, r.tokens_arg, &n_ids);
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] >= ds_tokenizer_n_vocab(tok)) {
                ds_cli_error(c, "token id %d is out of range (the vocabulary has %d)", ids[i],
                             ds_tokenizer_n_vocab(tok));
                goto done;
            }
    } else {
        size_t len;
        char *text = read_prompt(&r, &len), *templated = NULL;
        bool add_bos = ds_tokenizer_add_bos(tok);
        if (r.chat) {
            enum ds_chat_template t;
            const char *bos = "";
            size_t bl = 0;
            if (memchr(text, '\0', len)) {
                ds_cli_error(c, "the prompt contains a NUL byte");
                free(text);
                goto done;
            }
            if (r.chat_template) {
                ds_chat_from_name(r.chat_template, &t);
            } else {
                const char *jinja = ds_meta_get_str(ds_model_meta(model), "tokenizer.chat_template",
                                                    NULL);
                if (!jinja) {
                    ds_cli_error(c, "'%s' has no chat template; choose one with --chat-template",
                                 r.model);
                    free(text);
                    goto done;
                }
                if ((e = ds_chat_detect(jinja, &t)) != DS_OK) {
                    ds_cli_error(c, "'%s': unknown chat template; choose one with --chat-template",
                                 r.model);
                    free(text);
                    goto done;
                }
            }
            if (ds_tokenizer_bos(tok) >= 0 && add_bos)
                ds_tokenizer_piece(tok, ds_tokenizer_bos(tok), &bos, &bl);
            char *bos_z = strndup(bos, bl);
            if (!bos_z || (e = ds_chat_apply(t, bos_z, r.system, text, &templated)) != DS_OK) {
                e = bos_z ? e : DS_ERR_NOMEM;
                free(bos_z);
                free(text);
                goto fail_lib;
            }
            free(bos_z);
            free(text);
            text = templated;
            len = strlen(text);
            add_bos = false; /* the template holds it */
        }
        e = ds_tokenizer_encode(tok, text, len, add_bos, true, &ids, &n_ids);
        free(text);
        if (e != DS_OK) {
            ds_cli_error(c, "prompt: %s", ds_errmsg());
            goto done;
        }
    }
    if (r.tokenize) {
        for (size_t i = 0; i < n_ids; i++)
            printf("%d\n", ids[i]);
        free(ids);
        ds_tokenizer_free(tok);
        ds_model_free(model);
        ds_cli_finish_stdout(c);
        return DS_EXIT_OK;
    }
    if (ds_model_vocab_only(model)) {
        ds_cli_error(c, "'%s' holds a vocabulary only; it can tokenize but not run", r.model);
        goto done;
    }

    /* context */
    {
        const struct ds_hparams *hp = ds_model_hparams(model);
        long long max_ctx = hp->max_position_embeddings > 0 ? hp->max_position_embeddings : 4096;
        if (r.n_ctx == 0)
            r.n_ctx = max_ctx < 4096 ? max_ctx : 4096;
        if (r.n_ctx > max_ctx) {
            ds_cli_error(c, "--ctx %lld is more than the model's context (%lld)", r.n_ctx,
                         max_ctx);
            goto done;
        }
        if ((long long)n_ids > r.n_ctx) {
            ds_cli_error(c, "the prompt is %zu tokens, more than the context of %lld (--ctx)",
                         n_ids, r.n_ctx);
            goto done;
        }
        if (n_ids == 0) {
            ds_cli_error(c, "the prompt is empty");
            goto done;
        }
    }
    if ((e = ds_ctx_new_ex(model, r.n_ctx, &r.cp, &ctx)) != DS_OK)
        goto fail_lib;
    if (r.mtp && (e = ds_ctx_enable_mtp(ctx)) != DS_OK)
        goto fail_lib;
    n_vocab = ds_model_n_vocab(model);
    if ((e = ds_sampler_new(&r.sp, (int32_t)n_vocab, &smp)) != DS_OK)
        goto fail_lib;
    logits = malloc((r.dump ? n_ids : 1) * (size_t)n_vocab * sizeof(float));
    if (r.mtp)
        spec = malloc(3 * (size_t)n_vocab * sizeof(float));
    if (!logits || (r.mtp && !spec)) {
        ds_cli_error(c, "out of memory for %zu x %lld logits", n_ids, (long long)n_vocab);
        goto done;
    }

    /* prompt */
    t0 = now_s();
    if ((e = ds_forward(ctx, ids, n_ids, logits, r.dump != NULL)) != DS_OK)
        goto fail_lib;
    t_prompt = now_s() - t0;
    if (r.dump)
        dump_logits(&r, logits, n_ids, n_vocab);

    /* generation */
    out.stream = !r.json;
    {
        struct ds_detok dt;
        const float *last = logits + (r.dump ? (n_ids - 1) * (size_t)n_vocab : 0);
        char piece[512];
        int32_t eos = ds_tokenizer_eos(tok);
        ds_detok_init(&dt);
        t0 = now_s();
        /* Each turn emits next, the token the last logits chose. With --mtp
         * the turn drafts the one after it, runs both, and emits the draft
         * too when the target's own pick agrees: the same picks in the same
         * order as plain decoding. */
        int32_t next = r.n_predict > 0 ? ds_sampler_sample(smp, last) : eos;
        while (n_gen < r.n_predict) {
            bool accepted = false;
            if (emit_token(c, &r, &out, &dt, tok, next, eos, &n_gen, &stop_reason))
                break;
            if (ds_ctx_pos(ctx) >= r.n_ctx) {
                stop_reason = "ctx";
                break;
            }
            if (r.mtp && ds_ctx_pos(ctx) + 2 <= r.n_ctx) {
                int32_t pair[2] = {next, 0}, t;
                if ((e = ds_ctx_draft(ctx, next, spec + 2 * n_vocab)) != DS_OK)
                    goto fail_lib;
                pair[1] = argmax(spec + 2 * n_vocab, n_vocab);
                if ((e = ds_forward(ctx, pair, 2, spec, true)) != DS_OK)
                    goto fail_lib;
                n_drafted++;
                t = ds_sampler_sample(smp, spec);
                if (t != pair[1]) {
                    if ((e = ds_ctx_truncate(ctx, ds_ctx_pos(ctx) - 1)) != DS_OK)
                        goto fail_lib;
                    next = t;
                    continue;
                }
                n_accepted++;
                accepted = true;
                next = t;
            }
            if (accepted) { /* emit the draft; its successor's logits are there */
                if (emit_token(c, &r, &out, &dt, tok, next, eos, &n_gen, &stop_reason))
                    break;
                next = ds_sampler_sample(smp, spec + n_vocab);
                continue;
            }
            if ((e = ds_forward(ctx, &next, 1, logits, false)) != DS_OK)
                goto fail_lib;
            next = ds_sampler_sample(smp, logits);
        }
        t_gen = now_s() - t0;
        {
            size_t k = ds_detok_flush(&dt, piece, sizeof(piece));
            if (k && !out.stopped)
                out_append(c, &out, piece, k);
        }
        out_flush(&r, &out, true);
        if (out.stopped)
            stop_reason = "stop";
    }
    if (r.json) {
        cJSON *o = cJSON_CreateObject(), *t;
        cJSON_AddStringToObject(o, "text", out.buf ? out.buf : "");
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)n_ids);
        cJSON_AddNumberToObject(o, "generated_tokens", (double)n_gen);
        cJSON_AddStringToObject(o, "stop", stop_reason);
        {
            char seed[24]; /* exact: a double would round seeds above 2^53 */
            snprintf(seed, sizeof(seed), "%llu", (unsigned long long)r.sp.seed);
            cJSON_AddRawToObject(o, "seed", seed);
        }
        t = cJSON_AddObjectToObject(o, "timings");
        cJSON_AddNumberToObject(t, "load_s", t_load);
        cJSON_AddNumberToObject(t, "prompt_s", t_prompt);
        cJSON_AddNumberToObject(t, "generation_s", t_gen);
        cJSON_AddNumberToObject(t, "prompt_tokens_per_s", t_prompt > 0 ? n_ids / t_prompt : 0);
        cJSON_AddNumberToObject(t, "generation_tokens_per_s", t_gen > 0 ? n_gen / t_gen : 0);
        cJSON_AddNumberToObject(o, "kv_cache_bytes", (double)ds_ctx_kv_bytes(ctx));
        if (r.mtp) {
            cJSON *mo = cJSON_AddObjectToObject(o, "mtp");
            cJSON_AddNumberToObject(mo, "drafted", (double)n_drafted);
            cJSON_AddNumberToObject(mo, "accepted", (double)n_accepted);
            cJSON_AddNumberToObject(mo, "acceptance",
                                    n_drafted ? (double)n_accepted / (double)n_drafted : 0);
        }
        if (!ds_cli_put_json(c, o))
            goto done;
    }
    if (c->level >= 3) {
        fprintf(stderr, "%s: load %.3f s (%s, %.1f MB of weights)\n", c->prog, t_load,
                ds_model_mmapped(model) ? "mmap" : "read",
                (double)ds_model_weight_bytes(model) / 1e6);
        fprintf(stderr, "%s: prompt %zu tokens in %.3f s (%.2f tokens/s)\n", c->prog, n_ids,
                t_prompt, t_prompt > 0 ? n_ids / t_prompt : 0);
        fprintf(stderr, "%s: generated %lld tokens in %.3f s (%.2f tokens/s), stop: %s\n",
                c->prog, n_gen, t_gen, t_gen > 0 ? n_gen / t_gen : 0, stop_reason);
        fprintf(stderr, "%s: KV cache %llu bytes (%llu per token), seed %llu\n", c->prog,
                (unsigned long long)ds_ctx_kv_bytes(ctx),
                (unsigned long long)ds_ctx_kv_bytes_per_token(ctx),
                (unsigned long long)r.sp.seed);
        if (r.mtp)
            fprintf(stderr, "%s: MTP drafts accepted %lld of %lld (%.1f%%)\n", c->prog,
                    n_accepted, n_drafted, n_drafted ? 100.0 * n_accepted / n_drafted : 0.0);
    }
    status = DS_EXIT_OK;
    goto done;
fail_lib: /* a library error: reported after the frees (ds_errmsg() survives them) */
    lib_failed = true;
done:
    free(out.buf);
    free(logits);
    free(spec);
    free(ids);
    ds_sampler_free(smp);
    ds_ctx_free(ctx);
    ds_tokenizer_free(tok);
    ds_model_free(model);
    if (lib_failed)
        die_lib(c, e);
    if (status == DS_EXIT_OK)
        ds_cli_finish_stdout(c);
    return status;
}
