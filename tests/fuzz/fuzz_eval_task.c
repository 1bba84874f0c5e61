/*
 * fuzz_eval_task.c - libFuzzer target for ds-eval's JSONL task files
 * (ds_eval_task_load, lib/eval_task.c).
 *
 * The input is the file (a memfd), loaded strictly and with skip_bad. For an
 * accepted file every item must be of the file's kind, with a prompt, a gold
 * index inside its choices (multiple choice) or an answer (generation), and
 * its prompt must build with the first item as a shot (abort() otherwise).
 */
#include "ds_eval.h"
#include "fuzz.h"
#include "ds_banned.h"

static void check(const struct ds_eval_task *t)
{
    if (!t->n_items)
        abort();
    for (size_t i = 0; i < t->n_items; i++) {
        const struct ds_eval_item *it = &t->items[i];
        char *p = NULL;
        if (it->kind != t->kind || !it->prompt || it->line < 1)
            abort();
        if (it->kind == DS_EVAL_MC) {
            if (!it->n_choices || it->gold >= it->n_choices)
                abort();
            for (size_t c = 0; c < it->n_choices; c++)
                if (!it->choices[c])
                    abort();
        } else if (it->kind != DS_EVAL_GEN || !it->answer) {
            abort();
        }
        if (ds_eval_build_prompt(it, t->items, 1, i & 1, &p) != DS_OK || !p)
            abort();
        free(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(0, data, size);

    for (int skip = 0; skip < 2; skip++) {
        struct ds_eval_task *t = NULL;
        if (ds_eval_task_load(path, skip, &t) == DS_OK) {
            check(t);
            if (!skip && t->n_bad)
                abort();
        }
        ds_eval_task_free(t);
    }
    return 0;
}
