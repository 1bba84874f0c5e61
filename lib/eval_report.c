/* eval_report.c - JSON reports of ds-eval and their merge
 * (see ds_eval.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds.h"
#include "ds_eval.h"
#include "ds_io.h"
#include "error_impl.h"
#include "json_impl.h"
#include "ds_banned.h"

/* ---- reports -------------------------------------------------------------------------- */

void ds_eval_report_init(struct ds_eval_report *r)
{
    memset(r, 0, sizeof(*r));
}

void ds_eval_report_release(struct ds_eval_report *r)
{
    for (size_t i = 0; i < r->n_tasks; i++) {
        free(r->tasks[i].name);
        free(r->tasks[i].file);
    }
    free(r->tasks);
    free(r->model);
    free(r->model_sha256);
    free(r->options);
    ds_eval_report_init(r);
}

ds_err ds_eval_report_add(struct ds_eval_report *r, const char *name, const char *file,
                          const struct ds_eval_stats *st)
{
    struct ds_eval_task_report *t;
    void *p = ds_realloc(r->tasks, (r->n_tasks + 1) * sizeof(*r->tasks));
    if (!p)
        return DS_ERR_NOMEM;
    r->tasks = p;
    t = &r->tasks[r->n_tasks];
    t->name = ds_strdup(name);
    t->file = ds_strdup(file ? file : "");
    t->st = *st;
    if (!t->name || !t->file) {
        free(t->name);
        free(t->file);
        return DS_ERR_NOMEM;
    }
    r->n_tasks++;
    return DS_OK;
}

/* The counts and sums of a task, in JSON order; one table for writing and
 * reading so that the two cannot disagree. */
#define COUNT_FIELDS(X) X(n) X(n_windows) X(n_bad) X(correct) X(correct_norm) X(exact) \
    X(format) X(same_top)
#define SUM_FIELDS(X) X(nll) X(nll2) X(kl) X(kl2) X(nll_base) X(nll_base2) X(nll_nll_base) \
    X(dnll) X(dnll2)

static cJSON *task_json(const struct ds_eval_task_report *t)
{
    cJSON *o = cJSON_CreateObject(), *m, *c, *s;
    struct ds_eval_metric met[DS_EVAL_MAX_METRICS];
    size_t nm = ds_eval_metrics(&t->st, met, DS_EVAL_MAX_METRICS);
    char hex[33];
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "file", t->file);
    cJSON_AddStringToObject(o, "kind", ds_eval_kind_name(t->st.kind));
    cJSON_AddBoolToObject(o, "kld", t->st.kld);
    m = cJSON_AddObjectToObject(o, "metrics");
    for (size_t i = 0; m && i < nm; i++) {
        cJSON *e = cJSON_AddObjectToObject(m, met[i].name);
        if (e) {
            cJSON_AddNumberToObject(e, "value", met[i].value);
            cJSON_AddNumberToObject(e, "stderr", met[i].stderr_);
        }
    }
    c = cJSON_AddObjectToObject(o, "counts");
#define PUT_COUNT(f) if (c) cJSON_AddNumberToObject(c, #f, (double)t->st.f);
    COUNT_FIELDS(PUT_COUNT)
#undef PUT_COUNT
    s = cJSON_AddObjectToObject(o, "sums");
#define PUT_SUM(f)                                                                      \
    if (s) {                                                                            \
        ds_eval_sum_format(&t->st.f, hex);                                              \
        cJSON_AddStringToObject(s, #f, hex);                                            \
    }
    SUM_FIELDS(PUT_SUM)
#undef PUT_SUM
    return o;
}

ds_err ds_eval_report_json(const struct ds_eval_report *r, char **out)
{
    cJSON *o = cJSON_CreateObject(), *m, *tasks, *opts = NULL;
    char *text = NULL;
    ds_err rc = DS_OK;
    *out = NULL;
    DS_FAIL_IF(!o, DS_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(o, "tool", "ds-eval");
    cJSON_AddStringToObject(o, "version", ds_version());
    m = cJSON_AddObjectToObject(o, "model");
    if (m) {
        if (r->model)
            cJSON_AddStringToObject(m, "path", r->model);
        else
            cJSON_AddNullToObject(m, "path");
        if (r->model_sha256)
            cJSON_AddStringToObject(m, "sha256", r->model_sha256);
        else
            cJSON_AddNullToObject(m, "sha256");
    }
    opts = cJSON_Parse(r->options ? r->options : "{}");
    DS_FAIL_IF(!opts || !cJSON_IsObject(opts), DS_ERR_ARG, "report options are not a JSON object");
    cJSON_AddItemToObject(o, "options", opts);
    opts = NULL;
    if (r->shard_n > 0) {
        cJSON *s = cJSON_AddObjectToObject(o, "shard");
        if (s) {
            cJSON_AddNumberToObject(s, "k", r->shard_k);
            cJSON_AddNumberToObject(s, "n", r->shard_n);
        }
    } else {
        cJSON_AddNullToObject(o, "shard");
    }
    cJSON_AddNumberToObject(o, "wall_s", r->wall_s);
    tasks = cJSON_AddArrayToObject(o, "tasks");
    for (size_t i = 0; tasks && i < r->n_tasks; i++) {
        cJSON *t = task_json(&r->tasks[i]);
        DS_FAIL_IF(!t, DS_ERR_NOMEM, "out of memory");
        cJSON_AddItemToArray(tasks, t);
    }
    text = cJSON_Print(o);
    DS_FAIL_IF(!text, DS_ERR_NOMEM, "out of memory");
    {
        size_t n = strlen(text);
        char *t2 = ds_malloc(n + 2);
        if (!t2) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        memcpy(t2, text, n);
        t2[n] = '\n';
        t2[n + 1] = '\0';
        *out = t2;
    }
out:
    cJSON_free(text);
    cJSON_Delete(opts);
    cJSON_Delete(o);
    return rc;
}

static ds_err get_count(const cJSON *c, const char *key, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    DS_RETURN_IF(!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15 ||
                 v->valuedouble != (double)(int64_t)v->valuedouble,
                 DS_ERR_FORMAT, "'%s': count \"%s\" is missing or not a count", name, key);
    *out = (int64_t)v->valuedouble;
    return DS_OK;
}

static ds_err get_sum(const cJSON *s, const char *key, const char *name, struct ds_eval_sum *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    DS_RETURN_IF(!cJSON_IsString(v) || !ds_eval_sum_parse(v->valuestring, out), DS_ERR_FORMAT,
                 "'%s': sum \"%s\" is missing or malformed", name, key);
    return DS_OK;
}

static ds_err parse_task(const cJSON *t, const char *name, struct ds_eval_report *r)
{
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "name");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "file");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(t, "kind");
    const cJSON *kl = cJSON_GetObjectItemCaseSensitive(t, "kld");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(t, "counts");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "sums");
    struct ds_eval_stats st;
    enum ds_eval_kind kind = 0;
    for (int i = DS_EVAL_PPL; i <= DS_EVAL_GEN; i++)
        if (cJSON_IsString(k) && !strcmp(k->valuestring, ds_eval_kind_name(i)))
            kind = i;
    DS_RETURN_IF(!cJSON_IsString(nm) || !cJSON_IsString(f) || !kind || !cJSON_IsBool(kl) ||
                 !cJSON_IsObject(c) || !cJSON_IsObject(s),
                 DS_ERR_FORMAT, "'%s': malformed task entry", name);
    ds_eval_stats_init(&st, kind);
    st.kld = cJSON_IsTrue(kl);
#define GET_COUNT(x) DS_TRY(get_count(c, #x, name, &st.x));
    COUNT_FIELDS(GET_COUNT)
#undef GET_COUNT
#define GET_SUM(x) DS_TRY(get_sum(s, #x, name, &st.x));
    SUM_FIELDS(GET_SUM)
#undef GET_SUM
    return ds_eval_report_add(r, nm->valuestring, f->valuestring, &st);
}

ds_err ds_eval_report_parse(const char *json, const char *name, struct ds_eval_report *out)
{
    cJSON *o = NULL;
    const cJSON *v, *m, *t;
    ds_err rc = DS_OK;
    ds_eval_report_init(out);
    DS_CHECK(ds_json_parse(json, strlen(json), name, "report", 0, &o));
    DS_FAIL_IF(!cJSON_IsObject(o), DS_ERR_FORMAT, "'%s': not a JSON report", name);
    v = cJSON_GetObjectItemCaseSensitive(o, "tool");
    DS_FAIL_IF(!cJSON_IsString(v) || strcmp(v->valuestring, "ds-eval"), DS_ERR_FORMAT,
               "'%s': not a ds-eval report", name);
    m = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (cJSON_IsObject(m)) {
        v = cJSON_GetObjectItemCaseSensitive(m, "path");
        if (cJSON_IsString(v) && !(out->model = ds_strdup(v->valuestring)))
            DS_FAIL_IF(1, DS_ERR_NOMEM, "out of memory");
        v = cJSON_GetObjectItemCaseSensitive(m, "sha256");
        if (cJSON_IsString(v) && !(out->model_sha256 = ds_strdup(v->valuestring)))
            DS_FAIL_IF(1, DS_ERR_NOMEM, "out of memory");
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "options");
    DS_FAIL_IF(!cJSON_IsObject(v), DS_ERR_FORMAT, "'%s': no \"options\" object", name);
    out->options = cJSON_PrintUnformatted(v);
    DS_FAIL_IF(!out->options, DS_ERR_NOMEM, "out of memory");
    v = cJSON_GetObjectItemCaseSensitive(o, "shard");
    if (cJSON_IsObject(v)) {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(v, "k");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, "n");
        DS_FAIL_IF(!cJSON_IsNumber(k) || !cJSON_IsNumber(n) || n->valueint < 1 ||
                   k->valueint < 1 || k->valueint > n->valueint,
                   DS_ERR_FORMAT, "'%s': malformed \"shard\"", name);
        out->shard_k = k->valueint;
        out->shard_n = n->valueint;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "wall_s");
    out->wall_s = cJSON_IsNumber(v) ? v->valuedouble : 0;
    v = cJSON_GetObjectItemCaseSensitive(o, "tasks");
    DS_FAIL_IF(!cJSON_IsArray(v), DS_ERR_FORMAT, "'%s': no \"tasks\" array", name);
    cJSON_ArrayForEach(t, v) DS_CHECK(parse_task(t, name, out));
out:
    cJSON_Delete(o);
    if (rc)
        ds_eval_report_release(out);
    return rc;
}

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

ds_err ds_eval_report_merge(const struct ds_eval_report *shards, size_t n,
                            struct ds_eval_report *out)
{
    const struct ds_eval_report *a = &shards[0];
    bool *seen = NULL;
    ds_err rc = DS_OK;
    ds_eval_report_init(out);
    DS_RETURN_IF(n < 1, DS_ERR_ARG, "nothing to merge");
    DS_RETURN_IF(a->shard_n < 1, DS_ERR_ARG, "report 1 is not a shard (no \"shard\")");
    DS_RETURN_IF((size_t)a->shard_n != n, DS_ERR_ARG,
                 "the reports are shards of %d but %zu are given", a->shard_n, n);
    seen = ds_calloc(n + 1, 1);
    if (!seen)
        return DS_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct ds_eval_report *b = &shards[i];
        DS_FAIL_IF(b->shard_n != a->shard_n, DS_ERR_ARG,
                   "report %zu is a shard of %d, report 1 of %d", i + 1, b->shard_n, a->shard_n);
        DS_FAIL_IF(seen[b->shard_k], DS_ERR_ARG, "shard %d/%d is given twice", b->shard_k,
                   b->shard_n);
        seen[b->shard_k] = true;
        DS_FAIL_IF(!str_eq(a->model_sha256, b->model_sha256), DS_ERR_ARG,
                   "report %zu is of another model (sha256 differs)", i + 1);
        DS_FAIL_IF(!str_eq(a->options, b->options), DS_ERR_ARG,
                   "report %zu was run with other options", i + 1);
        DS_FAIL_IF(a->n_tasks != b->n_tasks, DS_ERR_ARG, "report %zu has other tasks", i + 1);
        for (size_t t = 0; t < a->n_tasks; t++)
            DS_FAIL_IF(strcmp(a->tasks[t].name, b->tasks[t].name) ||
                       a->tasks[t].st.kind != b->tasks[t].st.kind ||
                       a->tasks[t].st.kld != b->tasks[t].st.kld,
                       DS_ERR_ARG, "report %zu has other tasks", i + 1);
    }
    if ((a->model && !(out->model = ds_strdup(a->model))) ||
        (a->model_sha256 && !(out->model_sha256 = ds_strdup(a->model_sha256))) ||
        !(out->options = ds_strdup(a->options ? a->options : "{}"))) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (size_t t = 0; t < a->n_tasks; t++) {
        struct ds_eval_stats st;
        ds_eval_stats_init(&st, a->tasks[t].st.kind);
        st.kld = a->tasks[t].st.kld;
        /* every shard counts the malformed lines of the whole file: take one */
        for (size_t i = 0; i < n; i++) {
            int64_t bad = shards[i].tasks[t].st.n_bad;
            DS_CHECK(ds_eval_stats_merge(&st, &shards[i].tasks[t].st));
            st.n_bad -= bad;
        }
        st.n_bad = a->tasks[t].st.n_bad;
        DS_CHECK(ds_eval_report_add(out, a->tasks[t].name, a->tasks[t].file, &st));
    }
    for (size_t i = 0; i < n; i++)
        out->wall_s += shards[i].wall_s;
out:
    free(seen);
    if (rc)
        ds_eval_report_release(out);
    return rc;
}
