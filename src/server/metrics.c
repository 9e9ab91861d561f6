/*
 * metrics.c: counters and histograms for GET /metrics, in Prometheus' text format: requests by
 * route and status, prompt and generated tokens, queue wait, time to first token and time per
 * output token (histograms), and the scheduler's gauges (queue depth, active sequences, model
 * loaded). struct metrics is a fixed table under one mutex: (route, status) pairs are added as they
 * are seen, up to MAX_SERIES (then counted under route "other"). Called by http.c and job.c.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define MAX_SERIES 128
#define N_BUCKETS 12

static const double ttft_le[N_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double tpot_le[N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,   0.25,   0.5,   1,    2.5,   5};

struct hist {
    unsigned long long bucket[N_BUCKETS], count;
    double sum;
};

struct metrics {
    pthread_mutex_t mu;
    struct {
        const char *route; /* static strings from http.c's route table */
        int status;
        unsigned long long n;
    } series[MAX_SERIES];
    int n_series;
    unsigned long long prompt_tokens, gen_tokens;
    struct hist queue, ttft, tpot;
};

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_request(struct metrics *m, const char *route, int status)
{
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_series && (m->series[i].status != status || strcmp(m->series[i].route, route)))
        i++;
    if (i == m->n_series && m->n_series < MAX_SERIES) {
        m->series[i].route = route;
        m->series[i].status = status;
        m->n_series++;
    }
    if (i < m->n_series)
        m->series[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(struct metrics *m, int n_prompt, int n_gen)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += n_prompt > 0 ? n_prompt : 0;
    m->gen_tokens += n_gen > 0 ? n_gen : 0;
    pthread_mutex_unlock(&m->mu);
}

static void observe(struct hist *h, const double *le, double v)
{
    for (int i = 0; i < N_BUCKETS; i++)
        if (v <= le[i])
            h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void metrics_latency(struct metrics *m, double queue_s, double ttft_s, double tpot_s)
{
    pthread_mutex_lock(&m->mu);
    if (queue_s >= 0)
        observe(&m->queue, ttft_le, queue_s);
    if (ttft_s >= 0)
        observe(&m->ttft, ttft_le, ttft_s);
    if (tpot_s >= 0)
        observe(&m->tpot, tpot_le, tpot_s);
    pthread_mutex_unlock(&m->mu);
}

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !b->p)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            free(b->p);
            b->p = NULL;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += n;
}

static void put_hist(struct buf *b, const char *name, const char *help, const struct hist *h,
                     const double *le)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < N_BUCKETS; i++)
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, le[i], h->bucket[i]);
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, h->count, name,
        h->sum, name, h->count);
}

/* One metric without labels; integral values are printed without a fraction. */
static void put_one(struct buf *b, const char *name, const char *type, const char *help, double v)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *metrics_render(struct metrics *m, const struct sched_stats *st, double uptime_s, int n_conns,
                     unsigned long long n_timeouts)
{
    struct buf b = {malloc(4096), 0, 4096};
    if (!b.p)
        return NULL;
    b.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    put(&b, "# HELP exsa_requests_total HTTP requests by route and status.\n"
            "# TYPE exsa_requests_total counter\n");
    for (int i = 0; i < m->n_series; i++)
        put(&b, "exsa_requests_total{route=\"%s\",status=\"%d\"} %llu\n", m->series[i].route,
            m->series[i].status, m->series[i].n);
    put_one(&b, "exsa_prompt_tokens_total", "counter", "Prompt tokens processed.",
            (double)m->prompt_tokens);
    put_one(&b, "exsa_generated_tokens_total", "counter", "Tokens generated.",
            (double)m->gen_tokens);
    put_hist(&b, "exsa_queue_wait_seconds", "Time from submission to the start of a request.",
             &m->queue, ttft_le);
    put_hist(&b, "exsa_time_to_first_token_seconds", "Time from submission to the first token.",
             &m->ttft, ttft_le);
    put_hist(&b, "exsa_time_per_output_token_seconds", "Mean time between generated tokens.",
             &m->tpot, tpot_le);
    pthread_mutex_unlock(&m->mu);
    const struct {
        const char *name, *type, *help;
        double v;
    } one[] = {
        {"exsa_queue_depth", "gauge", "Requests waiting.", st->queued},
        {"exsa_queue_capacity", "gauge", "MAX_QUEUE_SIZE.", st->max_queue},
        {"exsa_active_sequences", "gauge", "Sequences being generated.", st->active},
        {"exsa_cache_sequences", "gauge", "Sequences held in the KV/conv cache.", st->cache_seqs},
        {"exsa_kv_blocks_used", "gauge", "KV cache blocks in use.", st->cache_blocks},
        {"exsa_kv_blocks_total", "gauge", "KV cache blocks in the pool.", st->cache_blocks_total},
        {"exsa_requests_cancelled_total", "counter", "Requests cancelled by their client.",
         (double)st->n_cancelled},
        {"exsa_forked_choices_total", "counter",
         "Choices of n > 1 requests that forked the first choice's prefilled prompt.",
         (double)st->n_forked},
        {"exsa_model_loaded", "gauge", "1 when a model is loaded.", st->loaded ? 1 : 0},
        {"exsa_prompt_cache_hits_total", "counter",
         "Requests that restored a cached prefix of their prompt.", (double)st->pcache.hits},
        {"exsa_prompt_cache_misses_total", "counter",
         "Requests that looked their prompt up in the prompt cache and found nothing.",
         (double)st->pcache.misses},
        {"exsa_prompt_cache_reused_tokens_total", "counter",
         "Prompt tokens restored from the prompt cache instead of computed.",
         (double)st->pcache.reused_tokens},
        {"exsa_prompt_cache_evictions_total", "counter",
         "Checkpoints dropped (least recently used) to stay under PROMPT_CACHE_MB.",
         (double)st->pcache.evictions},
        {"exsa_prompt_cache_bytes", "gauge", "Host memory the prompt cache holds.",
         (double)st->pcache.bytes},
        {"exsa_prompt_cache_capacity_bytes", "gauge", "PROMPT_CACHE_MB in bytes.",
         (double)st->pcache.max_bytes},
        {"exsa_prompt_cache_checkpoints", "gauge", "Checkpoints in the prompt cache.",
         (double)st->pcache.checkpoints},
        {"exsa_connections_open", "gauge", "Client connections open.", n_conns},
        {"exsa_connections_timed_out_total", "counter",
         "Connections ended by HEADER_TIMEOUT or BODY_TIMEOUT.", (double)n_timeouts},
        {"exsa_uptime_seconds", "gauge", "Seconds since start.", (double)(long)uptime_s},
    };
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++)
        put_one(&b, one[i].name, one[i].type, one[i].help, one[i].v);
    return b.p;
}
