/*
 * fuzz_eval_report.c - libFuzzer target for ds-eval's JSON reports as
 * --merge reads them (ds_eval_report_parse, lib/eval_report.c).
 *
 * The input is the report text. An accepted report must write back
 * (ds_eval_report_json), the text written must parse, write again to the
 * same bytes (a second round trip changes nothing), and merge with itself
 * when it is shard 1 of 1 (abort() otherwise).
 */
#include "ds_eval.h"
#include "fuzz.h"
#include "ds_banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *j1 = NULL, *j2 = NULL;
    struct ds_eval_report r, r2;

    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    if (ds_eval_report_parse(text, "report", &r) == DS_OK) {
        if (ds_eval_report_json(&r, &j1) != DS_OK)
            abort();
        if (ds_eval_report_parse(j1, "again", &r2) != DS_OK || ds_eval_report_json(&r2, &j2))
            abort();
        ds_eval_report_release(&r2);
        if (ds_eval_report_parse(j2, "again", &r2) != DS_OK)
            abort();
        free(j2);
        j2 = NULL;
        if (ds_eval_report_json(&r2, &j2) != DS_OK || strcmp(j1, j2) != 0)
            abort();
        if (r.shard_k == 1 && r.shard_n == 1) {
            struct ds_eval_report m;
            ds_eval_report_init(&m);
            (void)ds_eval_report_merge(&r, 1, &m);
            ds_eval_report_release(&m);
        }
        ds_eval_report_release(&r2);
        ds_eval_report_release(&r);
    }
    free(j1);
    free(j2);
    free(text);
    return 0;
}
