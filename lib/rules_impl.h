/*
 * rules_impl.h - the REGEX=VALUE rules of ds-quantize's --tensor-type and
 * ds-prune's --tensor-sparsity: one way to compile the REGEX part.
 */
#ifndef DS_RULES_IMPL_H
#define DS_RULES_IMPL_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "ds_error.h"

/* Compiles rule[0..eq) (UTF-8) into *re; a bad pattern is DS_ERR_ARG naming
 * the rule and the offset. Free with pcre2_code_free(). */
ds_err ds_rule_regex(const char *rule, const char *eq, pcre2_code **re);

#endif
