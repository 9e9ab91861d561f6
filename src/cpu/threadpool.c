/*
 * threadpool.c: a fixed pool of worker threads for the CPU kernels (struct threadpool).
 *
 * tp_run publishes (fn, arg) and bumps a generation counter; workers spin on it briefly (a
 * matmul follows the previous one within microseconds during a forward pass) and then sleep on a
 * condition variable, so an idle server burns no CPU. The caller runs share 0 and waits for the
 * n-1 workers to count themselves done. Invariants: one tp_run at a time per pool; gen only
 * grows; a worker runs each generation exactly once. Callers: cpu/matmul.c, the CPU backend.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu/matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_ITERS 4000 /* pause loops (tens of microseconds) before yielding the core */
#define YIELD_ITERS 50  /* sched_yield rounds before a worker sleeps on the condition */

struct threadpool {
    int n;
    pthread_t *threads;
    void (*fn)(void *arg, int ith, int nth);
    void *arg;
    atomic_uint gen;     /* bumped by tp_run to start a round */
    atomic_int done;     /* workers finished with the current round */
    atomic_int sleeping; /* workers blocked (or about to block) on cond */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct worker_arg {
        struct threadpool *tp;
        int ith;
    } * wargs;
};

/* Waits until tp->gen differs from seen; returns the new generation. */
static unsigned wait_gen(struct threadpool *tp, unsigned seen)
{
    for (int i = 0; i < SPIN_ITERS + YIELD_ITERS; i++) {
        unsigned g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        if (g != seen)
            return g;
        if (i < SPIN_ITERS)
            cpu_relax();
        else
            sched_yield(); /* an oversubscribed machine: let the thread we wait for run */
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->sleeping, 1);
    while (atomic_load(&tp->gen) == seen)
        pthread_cond_wait(&tp->cond, &tp->mu);
    atomic_fetch_sub(&tp->sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    return atomic_load(&tp->gen);
}

static void *worker(void *p)
{
    struct worker_arg *wa = p;
    struct threadpool *tp = wa->tp;
    unsigned seen = 0;
    for (;;) {
        seen = wait_gen(tp, seen);
        if (atomic_load(&tp->stop))
            return NULL;
        tp->fn(tp->arg, wa->ith, tp->n);
        atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
    }
}

struct threadpool *tp_create(int n_threads)
{
    struct threadpool *tp = calloc(1, sizeof *tp);
    if (!tp)
        return NULL;
    tp->n = n_threads > 0 ? n_threads : 1;
    tp->threads = calloc((size_t)tp->n, sizeof *tp->threads);
    tp->wargs = calloc((size_t)tp->n, sizeof *tp->wargs);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cond, NULL);
    if (!tp->threads || !tp->wargs) {
        tp->n = 1;
        tp_free(tp);
        return NULL;
    }
    for (int i = 1; i < tp->n; i++) {
        tp->wargs[i] = (struct worker_arg){tp, i};
        if (pthread_create(&tp->threads[i], NULL, worker, &tp->wargs[i]) != 0) {
            tp->n = i; /* tp_free joins the ones that started */
            tp_free(tp);
            return NULL;
        }
    }
    return tp;
}

static void wake(struct threadpool *tp)
{
    if (atomic_load(&tp->sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cond);
        pthread_mutex_unlock(&tp->mu);
    }
}

void tp_free(struct threadpool *tp)
{
    if (!tp)
        return;
    atomic_store(&tp->stop, true);
    atomic_fetch_add(&tp->gen, 1);
    wake(tp);
    for (int i = 1; i < tp->n; i++)
        pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cond);
    free(tp->threads);
    free(tp->wargs);
    free(tp);
}

int tp_n_threads(const struct threadpool *tp)
{
    return tp ? tp->n : 1;
}

void tp_run(struct threadpool *tp, void (*fn)(void *arg, int ith, int nth), void *arg)
{
    if (!tp || tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1); /* seq_cst: ordered before reading sleeping */
    wake(tp);
    fn(arg, 0, tp->n);
    for (int i = 0; atomic_load_explicit(&tp->done, memory_order_acquire) < tp->n - 1; i++) {
        if (i < SPIN_ITERS)
            cpu_relax();
        else
            sched_yield();
    }
}
