/*
 * test.h - minimal unit-test macros (after redis' testhelp.h).
 *
 *   TEST(name) { ... ASSERT(cond); ASSERT_EQ_INT(a, b); ... }
 *   int main(void) { RUN(name); ...; return test_report(); }
 *
 * A failed ASSERT prints file:line and the expression and ends the test;
 * test_report() prints "N passed, N failed" and returns non-zero on failure.
 */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed, test_cur_failed;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                       \
    do {                                                                                \
        test_cur_failed = 0;                                                            \
        test_##name();                                                                  \
        if (test_cur_failed) {                                                          \
            test_failed++;                                                              \
            fprintf(stderr, "FAIL %s\n", #name);                                        \
        } else {                                                                        \
            test_passed++;                                                              \
            fprintf(stderr, "ok   %s\n", #name);                                        \
        }                                                                               \
    } while (0)

#define ASSERT_MSG(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                               \
            fprintf(stderr, "\n");                                                      \
            test_cur_failed = 1;                                                        \
            return;                                                                     \
        }                                                                               \
    } while (0)

#define ASSERT(cond) ASSERT_MSG(cond, "%s", "")

#define ASSERT_EQ_INT(a, b)                                                             \
    do {                                                                                \
        long long test_a_ = (long long)(a), test_b_ = (long long)(b);                   \
        ASSERT_MSG(test_a_ == test_b_, "%lld != %lld", test_a_, test_b_);               \
    } while (0)

#define ASSERT_STR(a, b)                                                                \
    ASSERT_MSG(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))

/* DS_OK expected; prints the library's detail message otherwise. */
#define ASSERT_OK(expr)                                                                 \
    do {                                                                                \
        ds_err test_e_ = (expr);                                                        \
        ASSERT_MSG(test_e_ == DS_OK, "%s: %s", ds_strerror(test_e_), ds_errmsg());      \
    } while (0)

#define ASSERT_ERR(expr, code)                                                          \
    do {                                                                                \
        ds_err test_e_ = (expr);                                                        \
        ASSERT_MSG(test_e_ == (code), "got %d (%s: %s), want %d", (int)test_e_,         \
                   ds_strerror(test_e_), ds_errmsg(), (int)(code));                     \
    } while (0)

static inline int test_report(void)
{
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}

/* Path of a test data file: $DS_TESTDATA/name (default tests/data). */
static inline const char *test_data(const char *name)
{
    static char buf[4][1024];
    static int k;
    const char *dir = getenv("DS_TESTDATA");
    char *b = buf[k++ & 3];
    snprintf(b, sizeof(buf[0]), "%s/%s", dir && *dir ? dir : "tests/data", name);
    return b;
}

#endif
