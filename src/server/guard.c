/*
 * guard.c: the API key check in constant time and a fixed-window rate limiter per client
 * address. struct ratelimit is an open-addressing table of (address, window start, count) under
 * one mutex; an entry whose window has ended is reused, so the table never grows past its slots
 * (when every slot is live the request is counted against a shared overflow slot). Called by
 * http.c for every request but /v1/health.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

bool srv_consttime_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), n = la > lb ? la : lb;
    volatile unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < la ? (unsigned char)a[i] : 0;
        unsigned char y = i < lb ? (unsigned char)b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

#define RL_SLOTS 4096

struct rl_entry {
    char addr[64];
    time_t start;
    int count;
};

struct ratelimit {
    pthread_mutex_t mu;
    int max, window;
    struct rl_entry slot[RL_SLOTS];
    struct rl_entry overflow;
};

struct ratelimit *ratelimit_new(int max, int window_s)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    pthread_mutex_init(&rl->mu, NULL);
    rl->max = max;
    rl->window = window_s > 0 ? window_s : 1;
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The entry of addr: its own, a stale one to reuse, or the overflow entry. Called under mu. */
static struct rl_entry *lookup(struct ratelimit *rl, const char *addr, time_t now)
{
    uint32_t h = hash(addr);
    struct rl_entry *reuse = NULL;
    for (int i = 0; i < 64; i++) {
        struct rl_entry *e = &rl->slot[(h + i) % RL_SLOTS];
        if (!strcmp(e->addr, addr))
            return e;
        if (!reuse && (!e->addr[0] || now - e->start >= rl->window))
            reuse = e;
        if (!e->addr[0])
            break;
    }
    if (!reuse)
        return &rl->overflow;
    strncpy(reuse->addr, addr, sizeof reuse->addr - 1);
    reuse->addr[sizeof reuse->addr - 1] = 0;
    reuse->start = now;
    reuse->count = 0;
    return reuse;
}

bool ratelimit_allow(struct ratelimit *rl, const char *addr, int *retry_after)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&rl->mu);
    struct rl_entry *e = lookup(rl, addr, now);
    if (now - e->start >= rl->window) {
        e->start = now;
        e->count = 0;
    }
    bool ok = e->count < rl->max;
    if (ok)
        e->count++;
    else if (retry_after)
        *retry_after = (int)(e->start + rl->window - now) > 0
                           ? (int)(e->start + rl->window - now) : 1;
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
