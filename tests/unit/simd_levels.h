/* simd_levels.h - for the kernel tests: run tests at every SIMD level. */
#ifndef DS_TEST_SIMD_LEVELS_H
#define DS_TEST_SIMD_LEVELS_H

#include <stdio.h>

#include "ds_quant.h"
#include "quant_impl.h"

/* Runs tests() at every SIMD level the CPU has (AVX-512, AVX2, scalar),
 * whatever DS_SIMD says, then goes back to the default level. */
static void every_simd_level(void (*tests)(void))
{
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    for (int l = 2; l >= 0; l--) {
        if (ds_simd_set_level(l) != l) {
            fprintf(stderr, "     (no %s on this CPU)\n", names[l]);
            continue;
        }
        fprintf(stderr, "     simd level: %s\n", ds_quant_simd());
        tests();
    }
    ds_simd_set_level(-1);
}

#endif
