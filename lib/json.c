/* json.c - ds_json_parse: cJSON over untrusted text, see json_impl.h. */
#include <stdbool.h>
#include <string.h>

#include "error_impl.h"
#include "json_impl.h"
#include "ds_banned.h"

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Offset of the bracket that opens level DS_JSON_MAX_DEPTH + 1, or len. */
static size_t too_deep_at(const char *s, size_t len)
{
    size_t depth = 0;
    bool in_str = false;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > DS_JSON_MAX_DEPTH)
                return i;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return len;
}

ds_err ds_json_parse(const char *text, size_t len, const char *name, const char *what,
                     cJSON **out)
{
    const char *end = NULL, *nul = memchr(text, '\0', len);
    size_t deep = too_deep_at(text, len);
    cJSON *root;

    *out = NULL;
    DS_RETURN_IF(nul, DS_ERR_FORMAT, "'%s': %s contains a NUL byte (at byte %zu)", name, what,
                 (size_t)(nul - text));
    DS_RETURN_IF(deep < len, DS_ERR_FORMAT,
                 "'%s': %s is nested deeper than %d levels (at byte %zu)", name, what,
                 DS_JSON_MAX_DEPTH, deep);
    root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        return ds_set_error(DS_ERR_FORMAT, "'%s': %s is not valid JSON (near byte %zu)", name,
                            what, at);
    }
    for (const char *p = end ? end : text + len; p < text + len; p++) {
        if (!json_space(*p)) {
            cJSON_Delete(root);
            return ds_set_error(DS_ERR_FORMAT, "'%s': unexpected data after the %s at byte %zu",
                                name, what, (size_t)(p - text));
        }
    }
    *out = root;
    return DS_OK;
}
