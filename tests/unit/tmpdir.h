/* tmpdir.h - the unit tests' scratch directory (each test's main makes it). */
#ifndef DS_TEST_TMPDIR_H
#define DS_TEST_TMPDIR_H

#include <stdio.h>

static char tmpdir[256];

/* tmpdir/name, in one of 8 rotating buffers (valid for the next 7 calls). */
static inline const char *tmp(const char *name)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return b;
}

#endif
