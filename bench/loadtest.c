/*
 * loadtest.c: a load generator for a running `exsa serve` (`make loadtest`). N client threads
 * each hold streaming chat conversations: every turn sends the whole history (a shared system
 * prompt, each earlier user message and the reply the server streamed) plus a new user message
 * of about --user-tokens tokens (random words; tokens per word measured with /tokenize first),
 * and reads the SSE stream with stream_options.include_usage. It runs for a fixed time (-t, after
 * --warmup seconds that are not measured; requests still running at the end are cut off) or a
 * fixed number of requests (-n), and reports time to first token p50/p99, time per output token
 * p50/p99, aggregate generated tokens/s, the prompt cache's hit rate and reused tokens (from
 * /metrics before and after, and from usage.prompt_tokens_details.cached_tokens), and time to
 * first token by turn (the cost of a long chat with and without the cache: --no-cache sends
 * cache_prompt: false).
 * Usage: loadtest [--host H] [-p PORT] [-c CLIENTS] [-t SECONDS | -n REQUESTS] [--warmup S]
 *                 [--turns T] [--user-tokens U] [--max-tokens M] [--no-cache] [--natural]
 *                 [--seed S] [--json]
 * Plain C: POSIX sockets, threads, and cJSON (already a dependency of Exsa).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bench-util.h"

struct opts {
    const char *host;
    int port, clients, requests, turns, user_tokens, max_tokens;
    double seconds, warmup;
    bool no_cache, natural, json;
    unsigned seed;
};

static struct opts O = {"127.0.0.1", 3000, 4, 0, 4, 300, 64, 60, 0, false, false, false, 1};
static double g_t0, g_w0, g_w1; /* start; the measured window [g_w0, g_w1) */
static double g_words_per_token = 0.75;
static atomic_int g_next_req, g_stop;

/* ---- results --------------------------------------------------------------------------------- */

struct rec {
    int turn, prompt, cached, n_tok, n_events;
    double t_send, t_first, t_last, t_done; /* t_last: the last content event */
    double tok_in_window;                   /* generated tokens that arrived inside the window */
    bool done, error;
};

static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rec *g_recs;
static int g_n_recs, g_cap_recs;

static void add_rec(const struct rec *r)
{
    pthread_mutex_lock(&rec_mu);
    if (g_n_recs == g_cap_recs) {
        int cap = g_cap_recs ? 2 * g_cap_recs : 256;
        struct rec *p = realloc(g_recs, sizeof *p * cap);
        if (p)
            g_recs = p, g_cap_recs = cap;
    }
    if (g_n_recs < g_cap_recs)
        g_recs[g_n_recs++] = *r;
    pthread_mutex_unlock(&rec_mu);
}

/* ---- a minimal HTTP/1.1 client -----------------------------------------------------------------
 */

static int dial(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", O.port);
    if (getaddrinfo(O.host, port, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0 && errno != EINTR)
            return false;
        if (k > 0)
            p += k, n -= (size_t)k;
    }
    return true;
}

/* Sends one request (body may be NULL) on a new connection; returns the socket or -1. */
static int request(const char *method, const char *path, const char *body)
{
    int fd = dial();
    if (fd < 0)
        return -1;
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, O.host, blen);
    if (!send_all(fd, head, (size_t)n) || (body && !send_all(fd, body, blen))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A response being read: raw bytes, then the de-chunked body as it arrives. */
struct resp {
    int fd, status;
    bool chunked, headers_done, eof;
    char *raw;
    size_t n_raw, cap_raw, off; /* off: what of raw the body decoder consumed */
    char *body;
    size_t n_body, cap_body;
    long chunk_left; /* bytes left in the current chunk; -1: a size line is next */
};

static void grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    char *q = realloc(*p, c);
    if (q)
        *p = q, *cap = c;
}

static void body_put(struct resp *r, const char *p, size_t n)
{
    grow(&r->body, &r->cap_body, r->n_body + n + 1);
    if (r->n_body + n + 1 > r->cap_body)
        return;
    memcpy(r->body + r->n_body, p, n);
    r->n_body += n;
    r->body[r->n_body] = 0;
}

/* Moves what raw holds past the headers into body (de-chunked). */
static void decode_body(struct resp *r)
{
    while (r->off < r->n_raw) {
        char *p = r->raw + r->off;
        size_t avail = r->n_raw - r->off;
        if (!r->chunked) {
            body_put(r, p, avail);
            r->off += avail;
        } else if (r->chunk_left < 0) {
            char *crlf = memmem(p, avail, "\r\n", 2);
            if (!crlf)
                return;
            r->chunk_left = strtol(p, NULL, 16);
            r->off += (size_t)(crlf - p) + 2;
            if (r->chunk_left == 0)
                r->eof = true, r->off = r->n_raw;
        } else if (r->chunk_left == 0) { /* the CRLF after a chunk */
            if (avail < 2)
                return;
            r->off += 2;
            r->chunk_left = -1;
        } else {
            size_t k = avail < (size_t)r->chunk_left ? avail : (size_t)r->chunk_left;
            body_put(r, p, k);
            r->off += k;
            r->chunk_left -= (long)k;
        }
    }
}

static void parse_headers(struct resp *r)
{
    char *end = r->n_raw ? memmem(r->raw, r->n_raw, "\r\n\r\n", 4) : NULL;
    if (!end)
        return;
    *end = 0;
    r->status = atoi(r->raw + 9);
    for (char *p = r->raw; (p = strchr(p, '\n')); p++)
        if (!strncasecmp(p + 1, "transfer-encoding: chunked", 26))
            r->chunked = true;
    r->headers_done = true;
    r->off = (size_t)(end - r->raw) + 4;
    r->chunk_left = -1;
}

/* Reads what arrives within timeout_ms into r. Returns -1 at the end of the stream. */
static int resp_read(struct resp *r, int timeout_ms)
{
    struct pollfd pfd = {r->fd, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    grow(&r->raw, &r->cap_raw, r->n_raw + 65536);
    ssize_t k = recv(r->fd, r->raw + r->n_raw, r->cap_raw - r->n_raw - 1, 0);
    if (k <= 0) {
        r->eof = true;
        return -1;
    }
    r->n_raw += (size_t)k;
    if (!r->headers_done)
        parse_headers(r);
    if (r->headers_done)
        decode_body(r);
    return 0;
}

static void resp_free(struct resp *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->raw);
    free(r->body);
}

/* A whole reply to a short request: the body (malloc'd) or NULL; *status gets the status. */
static char *fetch(const char *method, const char *path, const char *body, int *status)
{
    struct resp r = {.fd = request(method, path, body)};
    *status = 0;
    if (r.fd < 0)
        return NULL;
    while (!r.eof)
        if (resp_read(&r, 30000) == 0 && !r.eof && r.n_raw == 0)
            break;
    *status = r.status;
    char *b = r.body ? r.body : strdup("");
    r.body = NULL;
    resp_free(&r);
    return b;
}

/* ---- the conversations ------------------------------------------------------------------------
 */

static const char *const words[] = {
    "time",     "year",    "people",   "way",    "day",    "man",     "thing",   "woman",
    "life",     "child",   "world",    "school", "state",  "family",  "student", "group",
    "country",  "problem", "hand",     "part",   "place",  "case",    "week",    "company",
    "system",   "program", "question", "work",   "number", "night",   "point",   "home",
    "water",    "room",    "mother",   "area",   "money",  "story",   "fact",    "month",
    "lot",      "right",   "study",    "book",   "eye",    "job",     "word",    "business",
    "issue",    "side",    "kind",     "head",   "house",  "service", "friend",  "father",
    "power",    "hour",    "game",     "line",   "end",    "member",  "law",     "car",
    "city",     "name",    "team",     "minute", "idea",   "kid",     "body",    "back",
    "parent",   "face",    "others",   "level",  "office", "door",    "health",  "person",
    "art",      "war",     "history",  "party",  "result", "change",  "morning", "reason",
    "research", "girl",    "guy",      "moment", "air",    "teacher", "force",   "education",
    "is",       "the",     "and",      "of",     "to",     "in",      "a",       "that",
    "it",       "with",    "for",      "on",
};
#define N_WORDS (sizeof words / sizeof words[0])

static const char *SYSTEM = "You are a helpful assistant running on a local server. Answer the "
                            "user's questions clearly and in full sentences; when a question "
                            "is ambiguous, say how you read it before you answer.";

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A user message of about O.user_tokens tokens. */
static char *user_text(uint64_t *s)
{
    int n = (int)(O.user_tokens * g_words_per_token + 0.5);
    size_t cap = (size_t)n * 12 + 64, len = 0;
    char *t = malloc(cap);
    if (!t)
        return NULL;
    len += (size_t)snprintf(t, cap, "Question %llu:", (unsigned long long)(rng_next(s) % 1000));
    for (int i = 0; i < n && len + 16 < cap; i++)
        len += (size_t)snprintf(t + len, cap - len, " %s", words[rng_next(s) % N_WORDS]);
    snprintf(t + len, cap - len, "?");
    return t;
}

static char *chat_body(cJSON *msgs)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(b, "messages", msgs);
    cJSON_AddTrueToObject(b, "stream");
    cJSON_AddTrueToObject(cJSON_AddObjectToObject(b, "stream_options"), "include_usage");
    cJSON_AddNumberToObject(b, "max_tokens", O.max_tokens);
    if (!O.natural)
        cJSON_AddTrueToObject(b, "ignore_eos");
    if (O.no_cache)
        cJSON_AddFalseToObject(b, "cache_prompt");
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return s;
}

/* Counts one content event arriving at t toward the window. */
static void count_event(struct rec *r, double t)
{
    r->n_events++;
    if (t >= g_w0 && t < g_w1)
        r->tok_in_window += 1;
}

/* Handles one SSE event's JSON: text into reply, usage into r. */
static void on_event(struct rec *r, const char *json, char **reply, size_t *len)
{
    cJSON *o = cJSON_Parse(json);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
    const cJSON *u = cJSON_GetObjectItem(o, "usage");
    if (cJSON_GetObjectItem(o, "error"))
        r->error = true;
    if (cJSON_IsString(c) && c->valuestring[0]) {
        double t = now();
        if (r->t_first == 0)
            r->t_first = t;
        r->t_last = t;
        count_event(r, t);
        size_t k = strlen(c->valuestring);
        char *p = realloc(*reply, *len + k + 1);
        if (p) {
            memcpy(p + *len, c->valuestring, k + 1);
            *reply = p, *len += k;
        }
    }
    if (cJSON_IsObject(u)) {
        r->prompt = cJSON_GetObjectItem(u, "prompt_tokens")->valueint;
        r->n_tok = cJSON_GetObjectItem(u, "completion_tokens")->valueint;
        const cJSON *d = cJSON_GetObjectItem(u, "prompt_tokens_details");
        const cJSON *ct = cJSON_GetObjectItem(d, "cached_tokens");
        r->cached = cJSON_IsNumber(ct) ? ct->valueint : 0;
    }
    cJSON_Delete(o);
}

/* Runs one streaming turn; the reply's text (malloc'd) into *reply. Fills r. */
static void run_turn(cJSON *msgs, struct rec *r, char **reply)
{
    char *body = chat_body(msgs);
    size_t len = 0, seen = 0;
    *reply = NULL;
    r->t_send = now();
    struct resp rs = {.fd = body ? request("POST", "/v1/chat/completions", body) : -1};
    free(body);
    r->error = rs.fd < 0;
    while (!r->error && !rs.eof) {
        if (atomic_load(&g_stop) && !O.requests)
            break; /* the window is over: cut it off (the server cancels it) */
        resp_read(&rs, 100);
        char *e;
        while (rs.body && (e = strstr(rs.body + seen, "\n\n"))) {
            *e = 0;
            const char *line = rs.body + seen;
            if (!strncmp(line, "data: ", 6) && strcmp(line + 6, "[DONE]"))
                on_event(r, line + 6, reply, &len);
            if (!strcmp(line, "data: [DONE]"))
                r->done = true;
            seen = (size_t)(e - rs.body) + 2;
        }
    }
    r->error = r->error || (rs.headers_done && rs.status != 200) || (rs.eof && !r->done);
    r->t_done = now();
    /* a request whose events carried several tokens: scale its window share to the tokens */
    if (r->done && r->n_events > 0 && r->n_tok > r->n_events)
        r->tok_in_window *= (double)r->n_tok / r->n_events;
    resp_free(&rs);
}

static bool take_request(void)
{
    if (O.requests)
        return atomic_fetch_add(&g_next_req, 1) < O.requests;
    return !atomic_load(&g_stop);
}

static cJSON *msg(const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content ? content : "");
    return m;
}

static void *client(void *arg)
{
    uint64_t rng = O.seed * 1000003ull + (uint64_t)(intptr_t)arg * 7919ull;
    while (take_request()) {
        cJSON *msgs = cJSON_CreateArray();
        cJSON_AddItemToArray(msgs, msg("system", SYSTEM));
        for (int turn = 0; turn < O.turns; turn++) {
            if (turn > 0 && !take_request())
                break;
            char *u = user_text(&rng), *reply = NULL;
            cJSON_AddItemToArray(msgs, msg("user", u));
            free(u);
            struct rec r = {.turn = turn};
            run_turn(msgs, &r, &reply);
            add_rec(&r);
            cJSON_AddItemToArray(msgs, msg("assistant", reply));
            free(reply);
            if (r.error)
                break; /* a new conversation */
        }
        cJSON_Delete(msgs);
    }
    return NULL;
}

/* ---- setup and report ----------------------------------------------------------------------- */

/* Words per token of the server's tokenizer on this generator's text (from /tokenize). */
static void calibrate(void)
{
    uint64_t s = 12345;
    int saved = O.user_tokens, st;
    O.user_tokens = 400, g_words_per_token = 1;
    char *t = user_text(&s);
    O.user_tokens = saved;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "content", t);
    cJSON_AddFalseToObject(b, "add_special");
    char *body = cJSON_PrintUnformatted(b), *out = fetch("POST", "/tokenize", body, &st);
    cJSON *o = cJSON_Parse(out ? out : "");
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(o, "tokens"));
    if (st == 200 && n > 0)
        g_words_per_token = 401.0 / n;
    else
        fprintf(stderr, "loadtest: /tokenize answered %d: assuming 0.75 words a token\n", st);
    cJSON_Delete(b), cJSON_Delete(o);
    free(t), free(body), free(out);
}

/* The value of metric name in /metrics text m (0 when absent). */
static double metric(const char *m, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = m; p && (p = strstr(p, name)); p += n)
        if ((p == m || p[-1] == '\n') && p[n] == ' ')
            return atof(p + n + 1);
    return 0;
}

struct cache_counts {
    double hits, misses, reused;
};

static struct cache_counts cache_counts(void)
{
    int st;
    char *m = fetch("GET", "/metrics", NULL, &st);
    struct cache_counts c = {metric(m, "exsa_prompt_cache_hits_total"),
                             metric(m, "exsa_prompt_cache_misses_total"),
                             metric(m, "exsa_prompt_cache_reused_tokens_total")};
    free(m);
    return c;
}

/* The q-quantile (nearest rank) of v[0..n), sorted in place; NAN when empty. */
static double quantile(double *v, int n, double q)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_d);
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

struct summary {
    int n_done, n_err, n_ttft, n_tpot;
    double ttft50, ttft99, tpot50, tpot99, tok_s, prompt, cached;
};

/* One request's time per output token: over its whole reply when it finished, else over the
 * content events it got before it was cut off (one token each, as a rule); < 0 when unknown. */
static double tpot_of(const struct rec *r)
{
    int k = r->done ? r->n_tok : r->n_events;
    double span = (r->done ? r->t_done : r->t_last) - r->t_first;
    return r->t_first > 0 && k > 1 ? span / (k - 1) : -1;
}

/* TTFT over the requests whose first token came inside the window, time per output token over
 * those that streamed inside it (cut off at its end or not), tokens/s over the window. */
static struct summary summarise(double window)
{
    struct summary s = {0};
    double *ttft = malloc(sizeof(double) * (g_n_recs + 1));
    double *tpot = malloc(sizeof(double) * (g_n_recs + 1)), tok = 0;
    int nt = 0, np = 0;
    for (int i = 0; i < g_n_recs; i++) {
        const struct rec *r = &g_recs[i];
        const bool in = r->t_first >= g_w0 && r->t_first < g_w1;
        tok += r->tok_in_window;
        s.n_err += r->error && r->t_done < g_w1;
        if (r->error)
            continue;
        if (in)
            ttft[nt++] = r->t_first - r->t_send;
        if (r->t_first > 0 && r->t_first < g_w1 && r->t_last >= g_w0 && tpot_of(r) >= 0)
            tpot[np++] = tpot_of(r);
        if (r->done && r->t_done >= g_w0 && r->t_done <= g_w1) {
            s.n_done++;
            s.prompt += r->prompt, s.cached += r->cached;
        }
    }
    s.n_ttft = nt, s.n_tpot = np;
    s.ttft50 = quantile(ttft, nt, 0.5), s.ttft99 = quantile(ttft, nt, 0.99);
    s.tpot50 = quantile(tpot, np, 0.5), s.tpot99 = quantile(tpot, np, 0.99);
    s.tok_s = tok / window;
    free(ttft), free(tpot);
    return s;
}

/* Mean time to first token, prompt and cached tokens by turn (finished requests). */
static void per_turn(void)
{
    printf("turn  requests  ttft_mean_s  ttft_p50_s  prompt_tokens  cached_tokens\n");
    double *v = malloc(sizeof(double) * (g_n_recs + 1));
    for (int t = 0; t < O.turns; t++) {
        int n = 0;
        double sum = 0, pr = 0, ca = 0;
        for (int i = 0; i < g_n_recs; i++) {
            const struct rec *r = &g_recs[i];
            if (r->turn != t || !r->done || r->error || r->t_first < g_w0 || r->t_first == 0)
                continue;
            v[n++] = r->t_first - r->t_send;
            sum += r->t_first - r->t_send, pr += r->prompt, ca += r->cached;
        }
        if (n)
            printf("%4d  %8d  %11.3f  %10.3f  %13.0f  %13.0f\n", t + 1, n, sum / n,
                   quantile(v, n, 0.5), pr / n, ca / n);
    }
    free(v);
}

static void report(const struct summary *s, const struct cache_counts *c, double window)
{
    double lookups = c->hits + c->misses;
    if (O.json) {
        printf("{\"clients\":%d,\"turns\":%d,\"window_s\":%.1f,\"requests\":%d,\"errors\":%d,"
               "\"ttft_p50\":%.4f,\"ttft_p99\":%.4f,\"tpot_p50\":%.4f,\"tpot_p99\":%.4f,"
               "\"tokens_per_s\":%.2f,\"cache_hit_rate\":%.3f,\"reused_tokens\":%.0f,"
               "\"prompt_tokens\":%.0f,\"cached_tokens\":%.0f}\n",
               O.clients, O.turns, window, s->n_done, s->n_err, s->ttft50, s->ttft99, s->tpot50,
               s->tpot99, s->tok_s, lookups > 0 ? c->hits / lookups : 0, c->reused, s->prompt,
               s->cached);
        return;
    }
    printf("clients %d, turns %d, user ~%d tokens, max_tokens %d, cache %s, window %.1f s\n",
           O.clients, O.turns, O.user_tokens, O.max_tokens, O.no_cache ? "off" : "on", window);
    printf("requests finished in the window %d, errors %d\n", s->n_done, s->n_err);
    printf("time to first token   p50 %.3f s  p99 %.3f s  (%d requests)\n", s->ttft50, s->ttft99,
           s->n_ttft);
    printf("time per output token p50 %.4f s  p99 %.4f s  (%d requests)\n", s->tpot50, s->tpot99,
           s->n_tpot);
    printf("aggregate generated tokens/s %.2f\n", s->tok_s);
    printf("prompt cache (metrics, warm-up included): %.0f hits, %.0f misses (hit rate %.1f%%), "
           "%.0f tokens reused\n",
           c->hits, c->misses, lookups > 0 ? 100 * c->hits / lookups : 0, c->reused);
    printf("prompt cache (usage of the finished requests): %.0f of %.0f prompt tokens cached "
           "(%.1f%%)\n",
           s->cached, s->prompt, s->prompt > 0 ? 100 * s->cached / s->prompt : 0);
    if (O.turns > 1)
        per_turn();
}

static void usage(void)
{
    fprintf(stderr, "usage: loadtest [--host H] [-p PORT] [-c CLIENTS] [-t SECONDS | -n REQUESTS] "
                    "[--warmup S] [--turns T]\n                [--user-tokens U] [--max-tokens M] "
                    "[--no-cache] [--natural] [--seed S] [--json]\n");
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool val = true;
        if (!strcmp(a, "--host") && v)
            O.host = v;
        else if ((!strcmp(a, "-p") || !strcmp(a, "--port")) && v)
            O.port = atoi(v);
        else if ((!strcmp(a, "-c") || !strcmp(a, "--clients")) && v)
            O.clients = atoi(v);
        else if ((!strcmp(a, "-t") || !strcmp(a, "--seconds")) && v)
            O.seconds = atof(v);
        else if ((!strcmp(a, "-n") || !strcmp(a, "--requests")) && v)
            O.requests = atoi(v);
        else if (!strcmp(a, "--warmup") && v)
            O.warmup = atof(v);
        else if (!strcmp(a, "--turns") && v)
            O.turns = atoi(v);
        else if (!strcmp(a, "--user-tokens") && v)
            O.user_tokens = atoi(v);
        else if (!strcmp(a, "--max-tokens") && v)
            O.max_tokens = atoi(v);
        else if (!strcmp(a, "--seed") && v)
            O.seed = (unsigned)atoi(v);
        else {
            val = false;
            if (!strcmp(a, "--no-cache"))
                O.no_cache = true;
            else if (!strcmp(a, "--natural"))
                O.natural = true;
            else if (!strcmp(a, "--json"))
                O.json = true;
            else
                return usage(), -1;
        }
        i += val;
    }
    if (O.clients < 1 || O.turns < 1 || O.user_tokens < 1 || O.max_tokens < 1 || O.port <= 0 ||
        (O.requests <= 0 && O.seconds <= 0))
        return usage(), -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0)
        return 2;
    int st;
    free(fetch("GET", "/v1/health", NULL, &st));
    if (st != 200) {
        fprintf(stderr, "loadtest: %s:%d/v1/health answered %d: is `exsa serve` running?\n", O.host,
                O.port, st);
        return 1;
    }
    calibrate();
    struct cache_counts c0 = cache_counts();
    pthread_t *th = calloc((size_t)O.clients, sizeof *th);
    g_t0 = now();
    g_w0 = O.requests ? 0 : g_t0 + O.warmup;
    g_w1 = O.requests ? INFINITY : g_w0 + O.seconds;
    for (int i = 0; th && i < O.clients; i++)
        pthread_create(&th[i], NULL, client, (void *)(intptr_t)i);
    if (!O.requests) {
        while (now() < g_w1)
            usleep(20000);
        atomic_store(&g_stop, 1);
    }
    for (int i = 0; th && i < O.clients; i++)
        pthread_join(th[i], NULL);
    double end = now(), window = O.requests ? end - g_t0 : O.seconds;
    if (O.requests)
        for (int i = 0; i < g_n_recs; i++)
            g_recs[i].tok_in_window = g_recs[i].done ? g_recs[i].n_tok : 0;
    struct cache_counts c1 = cache_counts();
    struct cache_counts d = {c1.hits - c0.hits, c1.misses - c0.misses, c1.reused - c0.reused};
    struct summary s = summarise(window);
    report(&s, &d, window);
    free(th);
    free(g_recs);
    return s.n_err ? 1 : 0;
}
