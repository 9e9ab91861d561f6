/*
 * backend-cpu.c: the fast CPU backend: the reference ops table with the hot ops replaced by
 * SIMD, multi-threaded versions. Until those land it is the reference backend.
 */
#include <stdlib.h>

#include "backend.h"

struct backend *backend_cpu_create(int n_threads)
{
    struct backend *be = backend_ref_create();
    if (be)
        be->n_threads = n_threads;
    return be;
}
