/* test_chat.c - built-in DeepSeek chat templates, names and detection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_chat.h"
#include "ds_io.h"
#include "test.h"

#define BOS "<｜begin▁of▁sentence｜>"

/*
 * Excerpts of the real tokenizer_config.json chat templates (facts about the
 * format; the tool-call branches are left out).
 */

// DeepSeek-V2-Chat and V2-Lite-Chat (and deepseek-llm-7b-chat).
static const char v2_jinja[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

// DeepSeek-V3 (December 2024).
static const char v3_jinja[] =
    "{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    "{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

// DeepSeek-V3-0324: the assistant tag follows each user turn.
static const char v3_0324_jinja[] =
    "{{'<｜User｜>' + message['content'] + '<｜Assistant｜>'}}"
    "{% set content = message['content'] %}{{content + '<｜end▁of▁sentence｜>'}}"
    "{% if add_generation_prompt and not ns.is_last_user and not ns.is_tool %}"
    "{{'<｜Assistant｜>'}}{% endif %}";

// DeepSeek-R1 as first released (January 2025): strips earlier reasoning but
// does not open a <think> block.
static const char r1_old_jinja[] =
    "{{'<｜User｜>' + message['content']}}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

// DeepSeek-R1 (updated template) and the R1 distills.
static const char r1_jinja[] =
    "{{'<｜User｜>' + message['content']}}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}";

// DeepSeek-V3.1: thinking is switched at render time.
static const char v31_jinja[] =
    "{%- if not thinking is defined -%}{%- set thinking = false -%}{%- endif -%}"
    "{{'<｜User｜>' + message['content']}}"
    "{%- if add_generation_prompt and ns.is_last_user and not ns.is_tool -%}"
    "{{'<｜Assistant｜>'}}{%- if not thinking -%}{{'</think>'}}{%- else -%}{{'<think>'}}"
    "{%- endif -%}{%- endif %}";

static const char chatml_jinja[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Applies t and compares with want; frees the text. */
#define ASSERT_APPLY(t, bos, sys, user, want)                                           \
    do {                                                                                \
        char *got_ = NULL;                                                              \
        ASSERT_OK(ds_chat_apply((t), (bos), (sys), (user), &got_));                     \
        int same_ = strcmp(got_, (want)) == 0;                                          \
        if (!same_)                                                                     \
            fprintf(stderr, "got  \"%s\"\nwant \"%s\"\n", got_, (want));                \
        free(got_);                                                                     \
        ASSERT(same_);                                                                  \
    } while (0)

TEST(apply_v2)
{
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V2, BOS, "Be brief.", "Hi",
                 BOS "Be brief.\n\nUser: Hi\n\nAssistant:");
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V2, BOS, NULL, "Hi", BOS "User: Hi\n\nAssistant:");
    // a system message with empty content still gets its "\n\n", as in the Jinja
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V2, BOS, "", "Hi", BOS "\n\nUser: Hi\n\nAssistant:");
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V2, "", NULL, "Hi", "User: Hi\n\nAssistant:");
}

TEST(apply_v3)
{
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V3, BOS, "Be brief.", "Hi",
                 BOS "Be brief.<｜User｜>Hi<｜Assistant｜>");
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V3, BOS, NULL, "Hi", BOS "<｜User｜>Hi<｜Assistant｜>");
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_V3, NULL, NULL, "", "<｜User｜><｜Assistant｜>");
    // U+FF5C, not the ASCII bar
    char *s = NULL;
    ASSERT_OK(ds_chat_apply(DS_CHAT_DEEPSEEK_V3, "", NULL, "x", &s));
    ASSERT(strstr(s, "\xef\xbd\x9cUser\xef\xbd\x9c") && !strchr(s, '|'));
    free(s);
}

TEST(apply_r1)
{
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_R1, BOS, "Be brief.", "Hi",
                 BOS "Be brief.<｜User｜>Hi<｜Assistant｜><think>\n");
    ASSERT_APPLY(DS_CHAT_DEEPSEEK_R1, BOS, NULL, "Hi", BOS "<｜User｜>Hi<｜Assistant｜><think>\n");
}

TEST(apply_errors)
{
    char *s = (char *)"x";

    ASSERT_ERR(ds_chat_apply((enum ds_chat_template)0, BOS, NULL, "Hi", &s), DS_ERR_ARG);
    ASSERT(s == NULL);
    ASSERT_ERR(ds_chat_apply((enum ds_chat_template)9, BOS, NULL, "Hi", &s), DS_ERR_ARG);
    ASSERT_ERR(ds_chat_apply(DS_CHAT_DEEPSEEK_V3, BOS, NULL, NULL, &s), DS_ERR_ARG);
    ASSERT_ERR(ds_chat_apply(DS_CHAT_DEEPSEEK_V3, BOS, NULL, "Hi", NULL), DS_ERR_ARG);
}

TEST(names)
{
    enum ds_chat_template t = 0;

    ASSERT_OK(ds_chat_from_name("deepseek-v2", &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V2);
    ASSERT_OK(ds_chat_from_name("v3", &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V3);
    ASSERT_OK(ds_chat_from_name("DeepSeek-R1", &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_R1);
    ASSERT_OK(ds_chat_from_name("r1", &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_R1);
    ASSERT_ERR(ds_chat_from_name("chatml", &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_chat_from_name("", &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_chat_from_name("deepseek-v3 ", &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_chat_from_name(NULL, &t), DS_ERR_ARG);
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_R1); // untouched on failure

    ASSERT_STR(ds_chat_name(DS_CHAT_DEEPSEEK_V2), "deepseek-v2");
    ASSERT_STR(ds_chat_name(DS_CHAT_DEEPSEEK_V3), "deepseek-v3");
    ASSERT_STR(ds_chat_name(DS_CHAT_DEEPSEEK_R1), "deepseek-r1");
    ASSERT_STR(ds_chat_name((enum ds_chat_template)0), "?");
    for (int i = DS_CHAT_DEEPSEEK_V2; i <= DS_CHAT_DEEPSEEK_R1; i++) {
        ASSERT_OK(ds_chat_from_name(ds_chat_name((enum ds_chat_template)i), &t));
        ASSERT_EQ_INT(t, i);
    }
}

TEST(detect_real_templates)
{
    enum ds_chat_template t = 0;

    ASSERT_OK(ds_chat_detect(v2_jinja, &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V2);
    ASSERT_OK(ds_chat_detect(v3_jinja, &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V3);
    ASSERT_OK(ds_chat_detect(v3_0324_jinja, &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V3);
    ASSERT_OK(ds_chat_detect(r1_jinja, &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_R1);
    // the first R1 template renders the V3 prompt: it only mentions "</think>"
    ASSERT_OK(ds_chat_detect(r1_old_jinja, &t));
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V3);
}

TEST(detect_unsupported)
{
    enum ds_chat_template t = DS_CHAT_DEEPSEEK_V2;

    ASSERT_ERR(ds_chat_detect(chatml_jinja, &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_chat_detect(v31_jinja, &t), DS_ERR_UNSUPPORTED);
    ASSERT_ERR(ds_chat_detect("", &t), DS_ERR_UNSUPPORTED);
    // the ASCII-bar look-alike is not the DeepSeek tag
    ASSERT_ERR(ds_chat_detect("{{'<|User|>' + m}}{{'<|Assistant|>'}}", &t), DS_ERR_UNSUPPORTED);
    ASSERT_EQ_INT(t, DS_CHAT_DEEPSEEK_V2);
    ASSERT_ERR(ds_chat_detect(NULL, &t), DS_ERR_ARG);
}

/* The whole file at path, NUL-terminated; NULL on failure. */
static char *slurp(const char *path)
{
    char *buf = NULL;
    size_t len;
    return ds_read_file(path, (size_t)1 << 28, &buf, &len) == DS_OK ? buf : NULL;
}

TEST(tiny_v3_fixture)
{
    // The fixture's template, rendered by hand for [system S, user U] with
    // add_generation_prompt: bos_token, then the system content, then
    // '<｜User｜>' + U, then '<｜Assistant｜>'.
    const char *path = test_data("tiny-v3-fp8/tokenizer_config.json");
    char *text = slurp(path), *prompt = NULL;
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(cfg, "bos_token");
    enum ds_chat_template t = 0;
    int ok = 0;

    if (cJSON_IsString(tmpl) && cJSON_IsString(bos) && !strcmp(bos->valuestring, BOS) &&
        ds_chat_detect(tmpl->valuestring, &t) == DS_OK && t == DS_CHAT_DEEPSEEK_V3 &&
        ds_chat_apply(t, bos->valuestring, "S", "U", &prompt) == DS_OK)
        ok = !strcmp(prompt, BOS "S<｜User｜>U<｜Assistant｜>");
    free(prompt);
    cJSON_Delete(cfg);
    free(text);
    ASSERT_MSG(ok, "'%s': template %d", path, (int)t);
}

int main(void)
{
    RUN(apply_v2);
    RUN(apply_v3);
    RUN(apply_r1);
    RUN(apply_errors);
    RUN(names);
    RUN(detect_real_templates);
    RUN(detect_unsupported);
    RUN(tiny_v3_fixture);
    return test_report();
}
