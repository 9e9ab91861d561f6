/*
 * bench-util.h: what every benchmark here needs: a monotonic clock in seconds and a qsort
 * comparison of doubles (for medians and percentiles).
 */
#ifndef EXSA_BENCH_UTIL_H
#define EXSA_BENCH_UTIL_H

#include <time.h>

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Ascending doubles for qsort. */
static inline int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
