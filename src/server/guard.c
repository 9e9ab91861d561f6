/*
 * guard.c: the checks that keep other sites and other clients out: the API key in constant
 * time, the Host header against DNS rebinding, the JSON content type of a POST (which a
 * cross-site form cannot send), and a fixed-window rate limiter per client address. struct
 * ratelimit is an open-addressing table of (address, window start, count) under one mutex; an entry
 * whose window has ended is reused, so the table never grows past its slots (when every slot is
 * live the request is counted against a shared overflow slot). Called by http.c for every request
 * but /v1/health.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* Whether name[0..n) is in the comma-separated list (case-insensitive; "*" matches all). */
static bool in_list(const char *list, const char *name, size_t n)
{
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, ", ");
        if (len && ((len == 1 && *p == '*') || (len == n && !strncasecmp(p, name, n))))
            return true;
        p += len;
    }
    return false;
}

bool srv_host_allowed(const struct srv_config *cfg, const char *host)
{
    if (!host || !host[0]) /* HTTP/1.0 without Host: no browser sends that */
        return true;
    const char *name = host + (host[0] == '[');
    size_t n = host[0] == '[' ? strcspn(name, "]") : strcspn(name, ":");
    if (n && name[n - 1] == '.') /* "localhost." is "localhost" */
        n--;
    char lit[64];
    unsigned char addr[16];
    snprintf(lit, sizeof lit, "%.*s", (int)(n < sizeof lit ? n : 0), name);
    /* an address literal cannot be rebound to another address, and neither can localhost */
    if (inet_pton(AF_INET, lit, addr) == 1 || inet_pton(AF_INET6, lit, addr) == 1 ||
        (n == 9 && !strncasecmp(name, "localhost", 9)))
        return true;
    return (strlen(cfg->host) == n && !strncasecmp(cfg->host, name, n)) ||
           in_list(cfg->allowed_hosts, name, n);
}

bool srv_is_json_type(const char *ctype)
{
    size_t n = ctype ? strcspn(ctype, "; \t") : 0;
    return n == 16 && !strncasecmp(ctype, "application/json", 16);
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
        *retry_after =
            (int)(e->start + rl->window - now) > 0 ? (int)(e->start + rl->window - now) : 1;
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
