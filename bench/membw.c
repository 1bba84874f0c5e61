/*
 * membw - measured memory read bandwidth: sums a 2 GiB buffer of uint64 with
 * N threads (OpenMP), best of 5 passes, in GB/s.   membw [THREADS]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int main(int argc, char **argv)
{
    const size_t n = (size_t)1 << 28; /* 2 GiB of uint64 */
    uint64_t *a = malloc(n * sizeof(*a)), sum = 0;
    double best = 0;
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (!a)
        return 1;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        a[i] = i;
    for (int pass = 0; pass < 5; pass++) {
        struct timespec t0, t1;
        uint64_t s = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i++)
            s += a[i];
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        double gbs = (double)(n * sizeof(*a)) / dt / 1e9;
        if (gbs > best)
            best = gbs;
        sum += s;
    }
    printf("%.2f GB/s read with %d thread(s) (checksum %llu)\n", best, threads,
           (unsigned long long)(sum & 0xff));
    free(a);
    return 0;
}
