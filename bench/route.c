/*
 * route - why a quantized model's logits differ from its F32 model's: expert
 * choices per position and layer, and the quantized model forced onto the
 * F32 model's expert choice (the internal routing hook of route_impl.h).
 *
 *   route cmp F32.gguf Q.gguf IDS     IDS: comma-separated token ids
 *   route gen IN.gguf OUT.gguf SEED
 *   route stats IN.gguf
 *
 * cmp runs both models on IDS (all logits, one batch, as ds-run --dump-logits
 * does) and prints per position: the (layer, expert) choices that differ,
 * the logit error max |dlogit| at that position over max |logit| of the F32
 * run (compare_logits' "rel" is the maximum over positions), both argmaxes
 * and the F32 top-1 minus top-2 logit margin; then the totals of
 *   q       Q vs F32
 *   forced  Q with the expert selection of the F32 run (routing weights from
 *           Q's own router scores) vs F32
 *   f32@q   F32 with Q's expert selection vs F32: the part of the error that
 *           the routing difference alone makes
 * and a last line "summary ..." for scripts (bench/route.sh).
 *
 * gen writes a copy of a GGUF whose every F32 tensor is redrawn from a normal
 * distribution with the tensor's own mean and standard deviation (constant
 * tensors such as norms of ones stay as they are), from SEED: a fresh random
 * model shaped and scaled like IN (for an F32 GGUF of a test checkpoint).
 * stats prints those moments per F32 tensor (and max |x - mean| / sd and the
 * kurtosis, 3 for a normal distribution).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "route_impl.h"

static void check(ds_err e)
{
    if (e != DS_OK) {
        fprintf(stderr, "route: %s\n", ds_errmsg());
        exit(1);
    }
}

static void *xmalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "route: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- runs ---------------------------------------------------------------------- */

/* Logits (n, V) of model path on ids, its expert choices into r (allocated;
 * experts of dense layers stay -1), forced to force when not NULL. */
static float *run(const char *path, const int32_t *ids, int64_t n, struct ds_route_rec *r,
                  const int32_t *force, int64_t *V)
{
    struct ds_model *m;
    struct ds_ctx *c;
    const struct ds_hparams *hp;
    float *logits;
    check(ds_model_load(path, &m));
    hp = ds_model_hparams(m);
    *V = ds_model_n_vocab(m);
    r->n_layers = hp->n_layers;
    r->n = n;
    r->k = hp->n_experts_per_tok > 0 ? hp->n_experts_per_tok : 1;
    r->sel = xmalloc((size_t)(r->n_layers * n * r->k) * sizeof(int32_t));
    memset(r->sel, 0xff, (size_t)(r->n_layers * n * r->k) * sizeof(int32_t));
    r->force = force;
    logits = xmalloc((size_t)(n * *V) * sizeof(float));
    check(ds_ctx_new(m, n, &c));
    ds_ctx_set_route_hook(c, ds_route_rec_hook, r);
    check(ds_forward(c, ids, (size_t)n, logits, true));
    ds_ctx_free(c);
    ds_model_free(m);
    return logits;
}

/* ---- comparison ---------------------------------------------------------------- */

static int64_t argmax(const float *v, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static bool has(const int32_t *set, int64_t k, int32_t e)
{
    for (int64_t j = 0; j < k; j++)
        if (set[j] == e)
            return true;
    return false;
}

/* compare_logits of tests/cli/common.bash: max |a - b| over max |b|, and the
 * fraction of positions with the same argmax; per-position errors into pos
 * (n) when not NULL. */
static void compare(const float *a, const float *b, int64_t n, int64_t V, double *rel,
                    double *agree, double *pos)
{
    double mb = 0, md = 0;
    int64_t same = 0;
    for (int64_t i = 0; i < n * V; i++)
        mb = fmax(mb, fabs(b[i]));
    for (int64_t p = 0; p < n; p++) {
        double d = 0;
        for (int64_t j = 0; j < V; j++)
            d = fmax(d, fabs((double)a[p * V + j] - b[p * V + j]));
        if (pos)
            pos[p] = d / mb;
        md = fmax(md, d);
        same += argmax(a + p * V, V) == argmax(b + p * V, V);
    }
    *rel = md / mb;
    *agree = (double)same / (double)n;
}

static int cmp(const char *f32, const char *q, const char *list)
{
    int64_t n = 0, V, Vq, flips_total = 0, npos_flip = 0;
    int32_t *ids = xmalloc((strlen(list) / 2 + 2) * sizeof(int32_t));
    struct ds_route_rec rf, rq, rforced, rback;
    double rel, agree, frel, fagree, brel, bagree, max_flip = 0, max_same = 0, mb = 0;
    for (const char *s = list; *s;) {
        char *end;
        ids[n++] = (int32_t)strtol(s, &end, 10);
        if (end == s) {
            fprintf(stderr, "route: bad token list '%s'\n", list);
            return 2;
        }
        s = *end == ',' ? end + 1 : end;
    }
    float *lf = run(f32, ids, n, &rf, NULL, &V);
    float *lq = run(q, ids, n, &rq, NULL, &Vq);
    float *lforced = run(q, ids, n, &rforced, rf.sel, &Vq);
    float *lback = run(f32, ids, n, &rback, rq.sel, &V);
    double *pq = xmalloc((size_t)n * sizeof(double)),
           *pforced = xmalloc((size_t)n * sizeof(double));
    if (V != Vq || rf.n_layers != rq.n_layers || rf.k != rq.k) {
        fprintf(stderr, "route: the two models differ in shape\n");
        return 1;
    }
    for (int64_t i = 0; i < n * V; i++)
        mb = fmax(mb, fabs(lf[i]));
    compare(lq, lf, n, V, &rel, &agree, pq);
    compare(lforced, lf, n, V, &frel, &fagree, pforced);
    compare(lback, lq, n, V, &brel, &bagree, NULL);

    printf("pos | routing differences (layer: f32 -> q) | rel q | rel forced | argmax f32 q forced "
           "| f32 top1-top2 / max|logit|\n");
    for (int64_t p = 0; p < n; p++) {
        const float *v = lf + p * V;
        int64_t a = argmax(v, V), flips = 0;
        float second = -INFINITY;
        char what[512] = "";
        size_t at = 0;
        for (int64_t j = 0; j < V; j++)
            if (j != a && v[j] > second)
                second = v[j];
        for (int64_t l = 0; l < rf.n_layers; l++) {
            const int32_t *sf = rf.sel + (l * n + p) * rf.k, *sq = rq.sel + (l * n + p) * rf.k;
            for (int64_t j = 0; j < rf.k; j++) {
                if (sf[j] < 0 || has(sq, rf.k, sf[j]))
                    continue;
                // the expert q took instead: the first of sq not in sf
                int32_t inst = -1;
                for (int64_t i = 0; i < rf.k && inst < 0; i++)
                    if (!has(sf, rf.k, sq[i]))
                        inst = sq[i];
                flips++;
                if (at < sizeof(what) - 32)
                    at += (size_t)snprintf(what + at, sizeof(what) - at, "%s%lld: %d -> %d",
                                           at ? ", " : "", (long long)l, (int)sf[j], (int)inst);
            }
        }
        flips_total += flips;
        npos_flip += flips > 0;
        if (flips)
            max_flip = fmax(max_flip, pq[p]);
        else
            max_same = fmax(max_same, pq[p]);
        printf("%3lld | %-38s | %.4f | %.4f | %lld %lld %lld | %.4f\n", (long long)p,
               flips ? what : "-", pq[p], pforced[p], (long long)a,
               (long long)argmax(lq + p * V, V), (long long)argmax(lforced + p * V, V),
               (double)(v[a] - second) / mb);
    }
    printf("q      vs f32: rel=%.4f agree=%.4f\n", rel, agree);
    printf("forced vs f32: rel=%.4f agree=%.4f (q with f32's expert selection)\n", frel, fagree);
    printf("f32@q  vs q  : rel=%.4f agree=%.4f (f32 with q's expert selection)\n", brel, bagree);
    printf("positions with routing differences: %lld of %lld (%lld expert choices); max rel "
           "there %.4f, elsewhere %.4f\n",
           (long long)npos_flip, (long long)n, (long long)flips_total, max_flip, max_same);
    printf("summary rel=%.5f agree=%.4f frel=%.5f fagree=%.4f flippos=%lld flips=%lld "
           "rel_flip=%.5f rel_same=%.5f\n",
           rel, agree, frel, fagree, (long long)npos_flip, (long long)flips_total, max_flip,
           max_same);
    free(rf.sel);
    free(rq.sel);
    free(rforced.sel);
    free(rback.sel);
    free(lf);
    free(lq);
    free(lforced);
    free(lback);
    free(pq);
    free(pforced);
    free(ids);
    return 0;
}

/* ---- gen ----------------------------------------------------------------------- */

static uint64_t rng;

static double uniform(void) /* (0, 1), splitmix64 */
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void) /* Box-Muller */
{
    return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static int gen(const char *in, const char *out, const char *seed)
{
    struct ds_reader *r;
    struct ds_writer *w;
    struct ds_gguf g;
    rng = strtoull(seed, NULL, 10) * 0x2545f4914f6cdd1dull + 1;
    check(ds_reader_open(&r, in));
    check(ds_gguf_init(&g));
    check(ds_gguf_read(r, &g));
    check(ds_writer_open(&w, out, DS_WRITE_FORCE | DS_WRITE_RAW, 0, 0));
    check(ds_gguf_write_header(w, &g));
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        unsigned char *buf = xmalloc((size_t)t->nbytes);
        check(ds_gguf_read_tensor(r, &g, i, buf));
        if (t->type == DS_TYPE_F32) {
            float *v = (float *)buf;
            size_t nv = (size_t)(t->nbytes / sizeof(float));
            double sum = 0, sq = 0, mean, sd;
            for (size_t j = 0; j < nv; j++)
                sum += v[j];
            mean = sum / (double)nv;
            for (size_t j = 0; j < nv; j++)
                sq += (v[j] - mean) * (v[j] - mean);
            sd = sqrt(sq / (double)nv);
            if (sd > 0)
                for (size_t j = 0; j < nv; j++)
                    v[j] = (float)(mean + sd * normal());
        }
        check(ds_gguf_write_tensor(w, &g, i, buf));
        free(buf);
    }
    check(ds_writer_commit(w));
    ds_writer_free(w);
    ds_reader_free(r);
    ds_gguf_release(&g);
    return 0;
}

/* Per F32 tensor: mean, standard deviation, max |x - mean| / sd, kurtosis. */
static int stats(const char *in)
{
    struct ds_reader *r;
    struct ds_gguf g;
    check(ds_reader_open(&r, in));
    check(ds_gguf_init(&g));
    check(ds_gguf_read(r, &g));
    for (size_t i = 0; i < g.n_tensors; i++) {
        const struct ds_tensor_info *t = &g.tensors[i];
        if (t->type != DS_TYPE_F32)
            continue;
        float *v = xmalloc((size_t)t->nbytes);
        size_t nv = (size_t)(t->nbytes / sizeof(float));
        double sum = 0, m2 = 0, m4 = 0, mx = 0, mean, sd;
        check(ds_gguf_read_tensor(r, &g, i, v));
        for (size_t j = 0; j < nv; j++)
            sum += v[j];
        mean = sum / (double)nv;
        for (size_t j = 0; j < nv; j++) {
            double d = v[j] - mean;
            m2 += d * d;
            m4 += d * d * d * d;
            mx = fmax(mx, fabs(d));
        }
        sd = sqrt(m2 / (double)nv);
        printf("%-40s %9zu mean %+.4g sd %.4g max/sd %.2f kurtosis %.2f\n", t->name, nv, mean, sd,
               sd > 0 ? mx / sd : 0, sd > 0 ? m4 / (double)nv / (sd * sd * sd * sd) : 0);
        free(v);
    }
    ds_reader_free(r);
    ds_gguf_release(&g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "stats"))
        return stats(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "cmp"))
        return cmp(argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "gen"))
        return gen(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: route cmp F32.gguf Q.gguf IDS | route gen IN.gguf OUT.gguf SEED | "
                    "route stats IN.gguf\n");
    return 2;
}
