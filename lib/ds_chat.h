/*
 * ds_chat.h - DeepSeek chat templates, built in (no Jinja engine). Each renders
 * what the model's tokenizer_config.json chat_template gives for an optional
 * system message and one user message with add_generation_prompt:
 *   deepseek-v2: "<bos>{system}\n\nUser: {user}\n\nAssistant:"
 *                (DeepSeek-V2/V2-Lite-Chat; without a system message the
 *                "{system}\n\n" part is absent: "<bos>User: {user}\n\nAssistant:")
 *   deepseek-v3: "<bos>{system}<｜User｜>{user}<｜Assistant｜>"
 *                (V3, V3-0324 and the first R1 release; nothing between the
 *                system text and the tag. DeepSeek-V2-Chat-0628 uses the same
 *                tags but puts "\n\n" after the system text: it is detected
 *                as v3, so end its system text with "\n\n" yourself)
 *   deepseek-r1: as v3, then "<think>\n" (the generation starts in the
 *                reasoning block, as the updated R1 template's
 *                add_generation_prompt does)
 * The bars in the tags are U+FF5C FULLWIDTH VERTICAL LINE, not '|'.
 * ds_chat_detect() picks one from a tokenizer.chat_template text by its
 * markers: "<｜Assistant｜>" with "<think>" -> r1 ("</think>" alone, which the
 * first R1 template uses only to strip earlier reasoning, does not count);
 * "<｜Assistant｜>" -> v3; "User: " and "Assistant:" -> v2. A template
 * that switches thinking at render time ("thinking is defined",
 * "enable_thinking": DeepSeek-V3.1 and later, whose non-thinking prompt ends
 * in "<｜Assistant｜></think>") matches none of these and is unsupported.
 */
#ifndef DS_CHAT_H
#define DS_CHAT_H

#include <stddef.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum ds_chat_template {
    DS_CHAT_DEEPSEEK_V2 = 1,
    DS_CHAT_DEEPSEEK_V3 = 2,
    DS_CHAT_DEEPSEEK_R1 = 3
};

/* "deepseek-v2" | "deepseek-v3" | "deepseek-r1" (also "v2", "v3", "r1"). */
ds_err ds_chat_from_name(const char *name, enum ds_chat_template *out);
const char *ds_chat_name(enum ds_chat_template t);

/* From a Jinja chat template text; DS_ERR_UNSUPPORTED when none matches. */
ds_err ds_chat_detect(const char *jinja, enum ds_chat_template *out);

/* The prompt text for one user turn with an optional system text (NULL:
 * none), ending with the generation prompt. bos is the BOS token's text ("" if
 * none). Malloc'd, NUL-terminated. */
ds_err ds_chat_apply(enum ds_chat_template t, const char *bos, const char *system,
                     const char *user, char **out);

#ifdef __cplusplus
}
#endif
#endif
