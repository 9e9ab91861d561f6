/*
 * scratch.c: per-thread scratch buffers (scratch.h). Each thread's buffers are chained from a
 * thread-local list head; a pthread key whose value is that head frees them at thread exit.
 */
#include "cpu/scratch.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Thread_local struct scratch *tl_list;

static void release(void *head)
{
    for (struct scratch *s = head; s; s = s->next) {
        free(s->p);
        s->p = NULL;
        s->size = 0;
    }
    tl_list = NULL;
}

static void make_key(void)
{
    pthread_key_create(&key, release);
}

void *scratch_get(struct scratch *s, size_t size)
{
    if (s->size >= size)
        return s->p;
    size = (size + 4095) & ~(size_t)4095;
    void *p = aligned_alloc(64, size);
    if (!p)
        return NULL;
    if (!s->p) { /* first use on this thread: register it */
        pthread_once(&once, make_key);
        s->next = tl_list;
        tl_list = s;
        pthread_setspecific(key, tl_list);
    }
    free(s->p);
    s->p = p;
    s->size = size;
    return p;
}
