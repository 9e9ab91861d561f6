/*
 * scratch.h: per-thread scratch buffers for the CPU kernels. A kernel keeps a
 * `static _Thread_local struct scratch` and asks it for room; the buffer grows (never shrinks)
 * and is freed when its thread exits (a pthread key destructor), so pool threads that come and
 * go with engines leak nothing. After the first calls the step loop allocates nothing.
 */
#ifndef EXSA_CPU_SCRATCH_H
#define EXSA_CPU_SCRATCH_H

#include <stddef.h>

struct scratch {
    void *p;
    size_t size;
    struct scratch *next; /* this thread's registered buffers */
};

/* At least size bytes, 64-byte aligned; NULL if out of memory (the old buffer is kept). */
void *scratch_get(struct scratch *s, size_t size);

#endif
