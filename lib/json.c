/* json.c - ds_json_parse: cJSON over untrusted text, see json_impl.h. */
#include <stdbool.h>
#include <stdlib.h>
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

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fails when an object of the tree has a key twice: readers look a key up
 * once (cJSON finds the first), other tools take the last one, so a file
 * could mean one thing to them and another to us. Recursion is bounded by
 * DS_JSON_MAX_DEPTH. */
static ds_err check_keys(const cJSON *node, const char *name, const char *what)
{
    const cJSON *c;
    const char **keys;
    size_t n = 0, i = 0;
    ds_err rc = DS_OK;

    for (c = node->child; c; c = c->next, n++)
        DS_TRY(check_keys(c, name, what));
    if (!cJSON_IsObject(node) || n < 2)
        return DS_OK;
    keys = ds_malloc(n * sizeof(*keys));
    if (!keys)
        return DS_ERR_NOMEM;
    for (c = node->child; c; c = c->next)
        keys[i++] = c->string ? c->string : "";
    qsort(keys, n, sizeof(*keys), cmp_key);
    for (i = 1; i < n && rc == DS_OK; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            rc = ds_set_error(DS_ERR_FORMAT, "'%s': %s has the key '%.80s' twice in one object",
                              name, what, keys[i]);
    free(keys);
    return rc;
}

ds_err ds_json_parse(const char *text, size_t len, const char *name, const char *what,
                     unsigned flags, cJSON **out)
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
    ds_err rc = flags & DS_JSON_DUP_KEYS ? DS_OK : check_keys(root, name, what);
    if (rc != DS_OK) {
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return DS_OK;
}
