/* chat.c - the built-in DeepSeek chat templates and their detection (see ds_chat.h). */
#include <string.h>
#include <strings.h>

#include "ds_chat.h"
#include "error_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

// The bars are U+FF5C FULLWIDTH VERTICAL LINE, not '|'.
#define USER_TAG "<｜User｜>"
#define ASSISTANT_TAG "<｜Assistant｜>"

static const struct {
    enum ds_chat_template t;
    const char *name, *alias;
} templates[] = {
    {DS_CHAT_DEEPSEEK_V2, "deepseek-v2", "v2"},
    {DS_CHAT_DEEPSEEK_V3, "deepseek-v3", "v3"},
    {DS_CHAT_DEEPSEEK_R1, "deepseek-r1", "r1"},
};

#define N_TEMPLATES (sizeof(templates) / sizeof(templates[0]))

ds_err ds_chat_from_name(const char *name, enum ds_chat_template *out)
{
    DS_RETURN_IF(!name || !out, DS_ERR_ARG, "chat template name missing");
    for (size_t i = 0; i < N_TEMPLATES; i++) {
        if (!strcasecmp(name, templates[i].name) || !strcasecmp(name, templates[i].alias)) {
            *out = templates[i].t;
            return DS_OK;
        }
    }
    return ds_set_error(DS_ERR_UNSUPPORTED,
                        "unknown chat template '%s' (deepseek-v2, deepseek-v3, deepseek-r1)", name);
}

const char *ds_chat_name(enum ds_chat_template t)
{
    for (size_t i = 0; i < N_TEMPLATES; i++)
        if (templates[i].t == t)
            return templates[i].name;
    return "?";
}

ds_err ds_chat_detect(const char *jinja, enum ds_chat_template *out)
{
    DS_RETURN_IF(!jinja || !out, DS_ERR_ARG, "chat template text missing");
    if (strstr(jinja, ASSISTANT_TAG)) {
        // DeepSeek-V3.1 and later switch reasoning on a render-time variable
        // and end a non-thinking prompt with "</think>": none of ours.
        DS_RETURN_IF(strstr(jinja, "thinking is defined") || strstr(jinja, "enable_thinking"),
                     DS_ERR_UNSUPPORTED,
                     "chat template switches thinking at render time (DeepSeek-V3.1 style); "
                     "no built-in template matches it");
        // "<think>" is not a substring of "</think>", which the first R1
        // template mentions only to strip earlier reasoning.
        *out = strstr(jinja, "<think>") ? DS_CHAT_DEEPSEEK_R1 : DS_CHAT_DEEPSEEK_V3;
        return DS_OK;
    }
    if (strstr(jinja, "User: ") && strstr(jinja, "Assistant:")) {
        *out = DS_CHAT_DEEPSEEK_V2;
        return DS_OK;
    }
    return ds_set_error(DS_ERR_UNSUPPORTED, "chat template is not a known DeepSeek one");
}

ds_err ds_chat_apply(enum ds_chat_template t, const char *bos, const char *system,
                     const char *user, char **out)
{
    struct ds_sbuf b = DS_SBUF_INIT;

    DS_RETURN_IF(!out, DS_ERR_ARG, "no output pointer");
    *out = NULL;
    DS_RETURN_IF(!user, DS_ERR_ARG, "no user text");
    ds_sbuf_puts(&b, bos ? bos : "");
    switch (t) {
    case DS_CHAT_DEEPSEEK_V2:
        if (system) {
            ds_sbuf_puts(&b, system);
            ds_sbuf_puts(&b, "\n\n");
        }
        ds_sbuf_puts(&b, "User: ");
        ds_sbuf_puts(&b, user);
        ds_sbuf_puts(&b, "\n\nAssistant:");
        break;
    case DS_CHAT_DEEPSEEK_V3:
    case DS_CHAT_DEEPSEEK_R1:
        ds_sbuf_puts(&b, system ? system : "");
        ds_sbuf_puts(&b, USER_TAG);
        ds_sbuf_puts(&b, user);
        ds_sbuf_puts(&b, ASSISTANT_TAG);
        if (t == DS_CHAT_DEEPSEEK_R1)
            ds_sbuf_puts(&b, "<think>\n");
        break;
    default:
        ds_sbuf_release(&b);
        return ds_set_error(DS_ERR_ARG, "unknown chat template %d", (int)t);
    }
    return ds_sbuf_detach(&b, out, NULL);
}
