/* version.c - library version and the versions of its dependencies. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <zstd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ds.h"
#include "ds_banned.h"

#ifndef DS_VERSION
#define DS_VERSION "0.0.0"
#endif

const char *ds_version(void)
{
    return DS_VERSION;
}

void ds_library_versions(char *buf, size_t cap)
{
    char pcre[32] = "";
    pcre2_config(PCRE2_CONFIG_VERSION, pcre);
#ifdef _OPENMP
    snprintf(buf, cap, "libds %s, zstd %s, cJSON %s, PCRE2 %s, OpenMP %d", DS_VERSION,
             ZSTD_versionString(), cJSON_Version(), pcre, _OPENMP);
#else
    snprintf(buf, cap, "libds %s, zstd %s, cJSON %s, PCRE2 %s, OpenMP off", DS_VERSION,
             ZSTD_versionString(), cJSON_Version(), pcre);
#endif
}

int ds_set_threads(int n)
{
    if (n <= 0) {
        const char *env = getenv("OMP_NUM_THREADS");
        long v = env ? strtol(env, NULL, 10) : 0;
        if (v > 0 && v < 4096)
            n = (int)v;
        else {
            long p = sysconf(_SC_NPROCESSORS_ONLN);
            n = p > 0 && p < 4096 ? (int)p : 1;
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    return n;
}
