/*
 * json_impl.h - parsing untrusted JSON text with cJSON (internal to libds).
 *
 * Every JSON input of the library (config.json, tokenizer.json and
 * tokenizer_config.json, safetensors headers and the index, and any new
 * reader) goes through ds_json_parse, so that each gets the same checks and
 * messages: no NUL byte, nesting at most DS_JSON_MAX_DEPTH levels (checked
 * before cJSON runs, whatever its build's CJSON_NESTING_LIMIT: the readers
 * walk the tree recursively), one value followed only by whitespace, no
 * object with a key twice (cJSON finds the first, Python's json the last).
 */
#ifndef DS_JSON_IMPL_H
#define DS_JSON_IMPL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ds_error.h"

#define DS_JSON_MAX_DEPTH 128

enum ds_json_flags {
    DS_JSON_DUP_KEYS = 1 << 0 /* keys given twice are allowed: the caller checks them
                                 itself (with messages of its own) */
};

/* Parses text[0..len) into *out (free with cJSON_Delete). On failure
 * DS_ERR_FORMAT with "'NAME': WHAT ..." naming the problem and its byte
 * offset; what describes the input ("header", "index", "JSON", ...). */
ds_err ds_json_parse(const char *text, size_t len, const char *name, const char *what,
                     unsigned flags, cJSON **out);

#endif
