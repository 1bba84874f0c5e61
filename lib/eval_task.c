/* eval_task.c - JSONL task files, prompts, and the scoring rules (see ds_eval.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <pcre2.h>

#include "ds_eval.h"
#include "ds_io.h"
#include "error_impl.h"
#include "json_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

#define TASK_MAX_BYTES ((size_t)1 << 30)

/* ---- loading -------------------------------------------------------------------------- */

static void item_release(struct ds_eval_item *it)
{
    free(it->prompt);
    free(it->answer);
    for (size_t i = 0; i < it->n_choices; i++)
        free(it->choices[i]);
    free(it->choices);
    memset(it, 0, sizeof(*it));
}

void ds_eval_task_free(struct ds_eval_task *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_items; i++)
        item_release(&t->items[i]);
    free(t->items);
    free(t->first_bad);
    free(t->path);
    free(t);
}

static const cJSON *member(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    return v ? v : cJSON_GetObjectItemCaseSensitive(o, b);
}

/* Parses one line into *it; DS_ERR_FORMAT with "'path':line: problem". */
static ds_err parse_line(const char *path, int64_t line, const char *s, size_t len,
                         struct ds_eval_item *it)
{
    cJSON *o = NULL;
    const cJSON *ch, *v;
    ds_err rc = DS_OK;
    memset(it, 0, sizeof(*it));
    it->line = line;
    // ds_json_parse: bounded depth, no NUL byte, no trailing data, no key twice
    rc = ds_json_parse(s, len, path, "line", 0, &o);
    if (rc == DS_ERR_FORMAT) {
        char msg[512];
        size_t skip = strlen(path) + 4; // "'path': "
        snprintf(msg, sizeof(msg), "%s", ds_errmsg());
        rc = ds_set_error(DS_ERR_FORMAT, "'%s':%lld: %s", path, (long long)line,
                          strlen(msg) > skip ? msg + skip : msg);
    }
    if (rc)
        goto out;
    DS_FAIL_IF(!cJSON_IsObject(o), DS_ERR_FORMAT, "'%s':%lld: not a JSON object", path,
               (long long)line);
    ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
    if (ch) {
        const cJSON *c;
        size_t k = 0;
        it->kind = DS_EVAL_MC;
        v = member(o, "query", "question");
        DS_FAIL_IF(!cJSON_IsString(v), DS_ERR_FORMAT,
                   "'%s':%lld: multiple choice needs a \"query\" string", path, (long long)line);
        DS_FAIL_IF(!cJSON_IsArray(ch) || cJSON_GetArraySize(ch) < 1, DS_ERR_FORMAT,
                   "'%s':%lld: \"choices\" must be a non-empty array of strings", path,
                   (long long)line);
        it->n_choices = (size_t)cJSON_GetArraySize(ch);
        it->choices = ds_calloc(it->n_choices, sizeof(char *));
        if (!(it->prompt = ds_strdup(v->valuestring)) || !it->choices) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        cJSON_ArrayForEach(c, ch) {
            DS_FAIL_IF(!cJSON_IsString(c), DS_ERR_FORMAT,
                       "'%s':%lld: choice %zu is not a string", path, (long long)line, k);
            if (!(it->choices[k++] = ds_strdup(c->valuestring))) {
                rc = DS_ERR_NOMEM;
                goto out;
            }
        }
        v = cJSON_GetObjectItemCaseSensitive(o, "gold");
        DS_FAIL_IF(!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble),
                   DS_ERR_FORMAT, "'%s':%lld: multiple choice needs an integer \"gold\"", path,
                   (long long)line);
        DS_FAIL_IF(v->valuedouble < 0 || v->valuedouble >= (double)it->n_choices, DS_ERR_FORMAT,
                   "'%s':%lld: gold %g is out of range (%zu choices)", path, (long long)line,
                   v->valuedouble, it->n_choices);
        it->gold = (size_t)v->valuedouble;
    } else {
        it->kind = DS_EVAL_GEN;
        v = member(o, "prompt", "question");
        DS_FAIL_IF(!cJSON_IsString(v), DS_ERR_FORMAT,
                   "'%s':%lld: needs a \"prompt\" string (or \"query\" and \"choices\")", path,
                   (long long)line);
        if (!(it->prompt = ds_strdup(v->valuestring))) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        v = cJSON_GetObjectItemCaseSensitive(o, "answer");
        if (cJSON_IsNumber(v)) {
            char num[64];
            snprintf(num, sizeof(num), "%.17g", v->valuedouble);
            it->answer = ds_strdup(num);
        } else {
            DS_FAIL_IF(!cJSON_IsString(v), DS_ERR_FORMAT,
                       "'%s':%lld: generation needs an \"answer\" string or number", path,
                       (long long)line);
            it->answer = ds_strdup(v->valuestring);
        }
        if (!it->answer) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
    }
out:
    cJSON_Delete(o);
    if (rc)
        item_release(it);
    return rc;
}

ds_err ds_eval_task_load(const char *path, bool skip_bad, struct ds_eval_task **out)
{
    struct ds_eval_task *t = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0;
    const char *p, *end;
    int64_t line = 0;
    ds_err rc = DS_OK;
    *out = NULL;
    DS_CHECK(ds_read_file(path, TASK_MAX_BYTES, &text, &len));
    t = ds_calloc(1, sizeof(*t));
    if (!t || !(t->path = ds_strdup(path))) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (p = text, end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *q;
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct ds_eval_item it;
        line++;
        for (q = p; q < p + n && isspace((unsigned char)*q); q++)
            ;
        if (q < p + n) {
            rc = parse_line(path, line, p, n, &it);
            if (!rc && t->n_items && it.kind != t->kind) {
                rc = ds_set_error(DS_ERR_FORMAT, "'%s':%lld: a %s item in a file of %s items",
                                  path, (long long)line, ds_eval_kind_name(it.kind),
                                  ds_eval_kind_name(t->kind));
                item_release(&it);
            }
            if (rc == DS_ERR_FORMAT && skip_bad) {
                if (!t->first_bad && !(t->first_bad = ds_strdup(ds_errmsg()))) {
                    rc = DS_ERR_NOMEM;
                    goto out;
                }
                t->n_bad++;
                rc = DS_OK;
            } else if (rc) {
                goto out;
            } else {
                rc = ds_grow((void **)&t->items, &cap, t->n_items + 1, sizeof(*t->items));
                if (rc) {
                    item_release(&it);
                    goto out;
                }
                t->kind = it.kind;
                t->items[t->n_items++] = it;
            }
        }
        p += n + (nl ? 1 : 0);
    }
    DS_FAIL_IF(t->n_items == 0, DS_ERR_FORMAT, "'%s': no task items%s", path,
               t->n_bad ? " (every line is malformed)" : "");
    *out = t;
    t = NULL;
out:
    free(text);
    ds_eval_task_free(t);
    return rc;
}

/* ---- prompts ---------------------------------------------------------------------------- */

ds_err ds_eval_build_prompt(const struct ds_eval_item *it, const struct ds_eval_item *shots,
                            size_t n_shots, bool chat, char **out)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    *out = NULL;
    for (size_t i = 0; i < n_shots; i++) {
        const struct ds_eval_item *s = &shots[i];
        DS_RETURN_IF(s->kind != it->kind, DS_ERR_ARG,
                     "shot %zu is a %s item, the task's are %s", i + 1,
                     ds_eval_kind_name(s->kind), ds_eval_kind_name(it->kind));
        if (it->kind == DS_EVAL_GEN)
            ds_sbuf_printf(&b, "Question: %s\nAnswer: %s\n\n", s->prompt, s->answer);
        else
            ds_sbuf_printf(&b, "%s%s\n\n", s->prompt, s->choices[s->gold]);
    }
    if (it->kind == DS_EVAL_GEN && !chat)
        ds_sbuf_printf(&b, "Question: %s\nAnswer:", it->prompt);
    else
        ds_sbuf_puts(&b, it->prompt);
    return ds_sbuf_detach(&b, out, NULL);
}

/* ---- scoring rules ------------------------------------------------------------------------ */

char *ds_eval_normalize(const char *s)
{
    size_t n = strlen(s), k = 0;
    char *o = malloc(n + 1), *start;
    bool space = false;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isspace(ch)) {
            space = k > 0;
            continue;
        }
        if (space)
            o[k++] = ' ';
        space = false;
        o[k++] = (char)tolower(ch);
    }
    while (k > 0 && strchr(".,;:!?", o[k - 1]))
        k--;
    while (k > 0 && o[k - 1] == ' ')
        k--;
    o[k] = '\0';
    start = o;
    if (*start == '$')
        start++;
    if (start != o)
        memmove(o, start, strlen(start) + 1);
    return o;
}

bool ds_eval_parse_number(const char *s, double *out)
{
    char buf[128];
    size_t k = 0;
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '$')
        s++;
    for (; *s && k + 1 < sizeof(buf); s++)
        if (*s != ',')
            buf[k++] = *s;
    if (*s)
        return false;
    while (k > 0 && isspace((unsigned char)buf[k - 1]))
        k--;
    if (k > 0 && buf[k - 1] == '.')
        k--;
    buf[k] = '\0';
    if (k == 0 || !(isdigit((unsigned char)buf[0]) || buf[0] == '-' || buf[0] == '+' ||
                    buf[0] == '.'))
        return false;
    *out = strtod(buf, &end);
    return *end == '\0' && isfinite(*out);
}

bool ds_eval_numbers_equal(double a, double b)
{
    double m = fmax(1.0, fmax(fabs(a), fabs(b)));
    return fabs(a - b) <= 1e-6 * m;
}

static size_t count_of(const char *s, const char *needle)
{
    size_t k = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        k++;
    return k;
}

bool ds_eval_format_reward(const char *text)
{
    const char *p = text, *close;
    while (isspace((unsigned char)*p))
        p++;
    if (strncmp(p, "<think>", 7) || count_of(text, "<think>") != 1 ||
        count_of(text, "</think>") != 1)
        return false;
    close = strstr(p, "</think>") + 8;
    while (isspace((unsigned char)*close))
        close++;
    return *close != '\0';
}

struct ds_eval_scorer {
    pcre2_code *extract, *gold, *number, *hashes;
    pcre2_match_data *md;
};

static ds_err compile(const char *pat, pcre2_code **out)
{
    int err;
    PCRE2_SIZE off;
    // outputs may hold invalid UTF-8: match around it instead of failing
    *out = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return ds_set_error(DS_ERR_ARG, "invalid regular expression '%s' at offset %zu: %s",
                            pat, (size_t)off, (const char *)msg);
    }
    return DS_OK;
}

ds_err ds_eval_scorer_new(const char *extract, const char *gold, struct ds_eval_scorer **out)
{
    struct ds_eval_scorer *s = ds_calloc(1, sizeof(*s));
    ds_err rc = DS_OK;
    *out = NULL;
    if (!s)
        return DS_ERR_NOMEM;
    if (extract)
        DS_CHECK(compile(extract, &s->extract));
    DS_CHECK(compile(gold ? gold : "####\\s*(.+)", &s->gold));
    DS_CHECK(compile("-?[0-9][0-9,]*(?:\\.[0-9]+)?", &s->number));
    DS_CHECK(compile("####\\s*(-?\\$?[0-9][0-9,]*(?:\\.[0-9]+)?)", &s->hashes));
    s->md = pcre2_match_data_create(16, NULL);
    DS_FAIL_IF(!s->md, DS_ERR_NOMEM, "out of memory");
    *out = s;
    return DS_OK;
out:
    ds_eval_scorer_free(s);
    return rc;
}

void ds_eval_scorer_free(struct ds_eval_scorer *s)
{
    if (!s)
        return;
    pcre2_code_free(s->extract);
    pcre2_code_free(s->gold);
    pcre2_code_free(s->number);
    pcre2_code_free(s->hashes);
    pcre2_match_data_free(s->md);
    free(s);
}

/* The last match of re in text: group 1 when the pattern has one and it took
 * part, else the whole match. Malloc'd copy in *out, NULL when no match. */
static ds_err last_match(const struct ds_eval_scorer *s, const pcre2_code *re, const char *text,
                         char **out)
{
    size_t len = strlen(text), pos = 0, a = 0, b = 0;
    bool found = false;
    *out = NULL;
    while (pos <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text, len, pos, 0, s->md, NULL);
        PCRE2_SIZE *ov;
        if (rc < 0)
            break;
        ov = pcre2_get_ovector_pointer(s->md);
        found = true;
        if (rc >= 2 && ov[2] != PCRE2_UNSET) {
            a = ov[2];
            b = ov[3];
        } else {
            a = ov[0];
            b = ov[1];
        }
        pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
        /* do not restart inside a UTF-8 sequence */
        while (pos < len && ((unsigned char)text[pos] & 0xC0) == 0x80)
            pos++;
    }
    if (!found)
        return DS_OK;
    *out = ds_strndup(text + a, b - a);
    return *out ? DS_OK : DS_ERR_NOMEM;
}

static char *trimmed(const char *s)
{
    size_t n;
    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    return ds_strndup(s, n);
}

ds_err ds_eval_score_gen(const struct ds_eval_scorer *s, const char *output, const char *answer,
                         const char *think_prefix, struct ds_eval_gen_score *out)
{
    const char *part = output, *t;
    char *tmp = NULL, *ng = NULL, *np = NULL, *full = NULL;
    double gv, pv;
    bool gold_num;
    ds_err rc = DS_OK;
    memset(out, 0, sizeof(*out));
    DS_CHECK(last_match(s, s->gold, answer, &tmp));
    out->gold = tmp ? trimmed(tmp) : trimmed(answer);
    free(tmp);
    tmp = NULL;
    if (!out->gold) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (t = strstr(output, "</think>"); t; t = strstr(t + 1, "</think>"))
        part = t + 8;
    gold_num = ds_eval_parse_number(out->gold, &gv);
    if (s->extract) {
        DS_CHECK(last_match(s, s->extract, part, &tmp));
    } else if (gold_num) {
        DS_CHECK(last_match(s, s->hashes, part, &tmp));
        if (!tmp)
            DS_CHECK(last_match(s, s->number, part, &tmp));
    } else {
        tmp = ds_strdup(part);
        if (!tmp) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
    }
    out->pred = tmp ? trimmed(tmp) : ds_strdup("");
    if (!out->pred) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    ng = ds_eval_normalize(out->gold);
    np = ds_eval_normalize(out->pred);
    if (!ng || !np) {
        rc = ds_set_error(DS_ERR_NOMEM, "out of memory");
        goto out;
    }
    out->exact = !strcmp(ng, np);
    out->numeric =
        gold_num && ds_eval_parse_number(out->pred, &pv) && ds_eval_numbers_equal(pv, gv);
    out->correct = gold_num ? out->numeric : out->exact;
    {
        size_t a = think_prefix ? strlen(think_prefix) : 0, b = strlen(output);
        full = ds_malloc(a + b + 1);
        if (!full) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        if (a)
            memcpy(full, think_prefix, a);
        memcpy(full + a, output, b + 1);
        out->format = ds_eval_format_reward(full);
    }
out:
    free(tmp);
    free(ng);
    free(np);
    free(full);
    if (rc)
        ds_eval_gen_score_release(out);
    return rc;
}

void ds_eval_gen_score_release(struct ds_eval_gen_score *g)
{
    free(g->gold);
    free(g->pred);
    memset(g, 0, sizeof(*g));
}

void ds_eval_mc_pick(const double *ll, const size_t *len, size_t n, size_t *best,
                     size_t *best_norm)
{
    size_t b = 0, bn = 0;
    double vb = ll[0], vn = ll[0] / (double)(len[0] ? len[0] : 1);
    for (size_t i = 1; i < n; i++) {
        double v = ll[i] / (double)(len[i] ? len[i] : 1);
        if (ll[i] > vb) {
            vb = ll[i];
            b = i;
        }
        if (v > vn) {
            vn = v;
            bn = i;
        }
    }
    *best = b;
    *best_norm = bn;
}

bool ds_eval_in_shard(int64_t i, int k, int n)
{
    return n <= 1 || i % n == k - 1;
}
