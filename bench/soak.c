/*
 * soak.c: a soak test of `exsa serve` (`make soak`: 2 minutes). It starts the server on a free
 * loopback port with a small queue, then for the given time runs N clients, each looping over
 * streaming chats (a fraction of them cut off by the client at a random point), whole
 * completions, malformed requests and oversized bodies; beside them: bursts of requests past
 * the queue, a slowloris burst from another loopback address, and a model reload halfway.
 * It checks that every well-formed request got a complete answer or a documented error (503
 * with Retry-After, or an SSE error event after a reload), that every bad one got its 4xx,
 * that /metrics shows no leaked sequence or KV block once idle, that resident memory after the
 * warm-up stays flat, and that the server still answers at the end; it prints the figures.
 * Usage: soak --exsa build/exsa -m model.gguf [-t seconds] [-c clients] [-d fraction]
 *        [--log server.log]
 * Exit status 0 when every check passed. Only POSIX sockets and threads: no library of Exsa.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"

struct opts {
    const char *exsa, *model, *log;
    double seconds, disconnect;
    int clients;
};

static struct opts O = {NULL, NULL, "/dev/null", 120, 0.25, 16};
static int g_port;
static pid_t g_pid;
static double g_t0;
static atomic_bool g_stop;

/* ---- counters -------------------------------------------------------------------------------- */

static atomic_long n_requests, n_answers, n_errors, n_disconnects, n_refused, n_lost;
static atomic_long n_burst_ok, n_burst_503;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* A request that got neither its answer nor a documented error: counted and shown. */
static void lost(const char *what, int status, const char *body)
{
    atomic_fetch_add(&n_lost, 1);
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "soak: LOST at %.1f s: %s: status %d: %.300s\n", now() - g_t0, what, status,
            body ? body : "");
    pthread_mutex_unlock(&log_mu);
}

/* ---- a minimal HTTP/1.1 client ----------------------------------------------------------------
 */

struct resp {
    int status;
    char *raw; /* everything received */
    size_t n_raw;
    char *body;    /* the body, de-chunked, NUL-terminated */
    bool complete; /* the whole body arrived (final chunk, or Content-Length bytes) */
    bool retry_after;
};

static void resp_free(struct resp *r)
{
    free(r->raw);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* A socket connected to the server from loopback address src; -1 on failure. */
static int dial_from(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons((uint16_t)g_port);
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
                    connect(fd, (struct sockaddr *)&to, sizeof to) != 0)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Decodes a chunked body src[0..n) into r->body; sets r->complete on the final chunk. */
static void dechunk(struct resp *r, const char *src, size_t n)
{
    size_t out = 0, i = 0;
    r->body = malloc(n + 1);
    while (r->body && i < n) {
        char *end;
        unsigned long len = strtoul(src + i, &end, 16);
        const char *crlf = memmem(src + i, n - i, "\r\n", 2);
        if (!crlf || end == src + i)
            break;
        i = (size_t)(crlf - src) + 2;
        if (len == 0) {
            r->complete = true;
            break;
        }
        if (i + len > n)
            len = n - i;
        memcpy(r->body + out, src + i, len);
        out += len, i += len + 2;
    }
    if (r->body)
        r->body[out] = 0;
}

/* Splits r->raw into status, headers and body. */
static void parse_resp(struct resp *r)
{
    const char *hend = r->raw ? memmem(r->raw, r->n_raw, "\r\n\r\n", 4) : NULL;
    if (!hend || sscanf(r->raw, "HTTP/1.%*d %d", &r->status) != 1) {
        r->body = strdup("");
        return;
    }
    size_t hl = (size_t)(hend - r->raw) + 4, bl = r->n_raw - hl;
    char *head = strndup(r->raw, hl);
    for (char *p = head; *p; p++)
        *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    r->retry_after = strstr(head, "\nretry-after:") != NULL;
    const char *cl = strstr(head, "\ncontent-length:");
    if (strstr(head, "\ntransfer-encoding: chunked")) {
        dechunk(r, hend + 4, bl);
    } else {
        r->body = strndup(hend + 4, bl);
        r->complete = !cl || (size_t)atol(cl + 16) == bl;
    }
    free(head);
}

/* Reads fd until EOF, or until stop_after bytes when stop_after > 0 (a client that leaves). */
static void read_resp(int fd, struct resp *r, long stop_after)
{
    size_t cap = 1 << 14;
    r->raw = malloc(cap);
    ssize_t k;
    while (r->raw && (k = recv(fd, r->raw + r->n_raw, cap - r->n_raw - 1, 0)) > 0) {
        r->n_raw += (size_t)k;
        if (stop_after > 0 && (long)r->n_raw >= stop_after)
            break;
        if (cap - r->n_raw < 4096)
            r->raw = realloc(r->raw, cap *= 2);
    }
    if (r->raw)
        r->raw[r->n_raw] = 0;
}

/* One request from address src: method, path, content type (NULL: none), body (NULL: none).
 * stop_after > 0: leave after that many bytes of the answer. Returns 0, or -1 when it could
 * not connect or send. */
static int http(const char *src, const char *method, const char *path, const char *ctype,
                const char *body, long stop_after, struct resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = dial_from(src);
    if (fd < 0)
        return -1;
    char head[512];
    size_t bl = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: "
                     "close\r\n%s%s%sContent-Length: %zu\r\n\r\n",
                     method, path, g_port, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                     ctype ? "\r\n" : "", bl);
    bool ok = send(fd, head, (size_t)n, MSG_NOSIGNAL) == n &&
              (!bl || send(fd, body, bl, MSG_NOSIGNAL) == (ssize_t)bl);
    if (ok)
        read_resp(fd, r, stop_after);
    close(fd);
    if (ok && stop_after <= 0)
        parse_resp(r);
    return ok ? 0 : -1;
}

#define JSON "application/json"

/* ---- the clients ------------------------------------------------------------------------------
 */

static const char *const words[] = {"tell", "me",  "about", "the", "sea", "a",   "story", "of",
                                    "cats", "and", "code",  "why", "is",  "sky", "blue",  "today"};

/* A random prompt of a few words into buf. */
static void prompt(unsigned *seed, char *buf, size_t size)
{
    size_t o = 0;
    int n = 2 + rand_r(seed) % 10;
    for (int i = 0; i < n && o + 16 < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? " " : "", words[rand_r(seed) % 16]);
}

/* Whether r is a documented error: 503 with Retry-After and OpenAI's error shape. */
static bool documented_503(const struct resp *r)
{
    return r->status == 503 && r->retry_after && r->body && strstr(r->body, "\"error\":{");
}

/* Judges the answer to a well-formed generating request. A client told to retry waits a
 * little, as a real one would (Retry-After is 1 s; it waits 0.1 to 0.3 s). */
static void judge(const char *what, const struct resp *r, bool stream, unsigned *seed)
{
    const char *b = r->body ? r->body : "";
    if (r->status == 200 && r->complete &&
        (stream ? strstr(b, "data: [DONE]") != NULL : strstr(b, "\"usage\":{") != NULL)) {
        atomic_fetch_add(&n_answers, 1);
    } else if (documented_503(r) ||
               (stream && r->status == 200 && r->complete && strstr(b, "data: {\"error\":{"))) {
        atomic_fetch_add(&n_errors, 1); /* queue full, or ended by the reload (EXSA-API.md) */
        usleep(100000 + rand_r(seed) % 200000);
    } else {
        lost(what, r->status, b);
    }
}

static void one_chat(unsigned *seed, bool stream)
{
    char p[256], body[1024];
    prompt(seed, p, sizeof p);
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
             "\"max_tokens\":%d,\"temperature\":0.8,\"seed\":%d,\"stream\":%s}",
             p, 4 + rand_r(seed) % 45, rand_r(seed), stream ? "true" : "false");
    bool leave = stream && rand_r(seed) < O.disconnect * RAND_MAX;
    struct resp r;
    atomic_fetch_add(&n_requests, 1);
    if (http("127.0.0.1", "POST", "/v1/chat/completions", JSON, body,
             leave ? 1 + rand_r(seed) % 1500 : 0, &r) < 0)
        lost("chat: cannot connect", 0, NULL);
    else if (leave)
        atomic_fetch_add(&n_disconnects, 1);
    else
        judge(stream ? "streaming chat" : "chat", &r, stream, seed);
    resp_free(&r);
}

/* A bad request and the status it must get; one whose check needs the model's vocabulary may
 * also get the documented 503 while a reload has no model in place. */
struct bad {
    const char *path, *ctype, *body;
    int status;
    bool needs_model;
};

static const struct bad bads[] = {
    {"/v1/chat/completions", JSON, "{\"messages\": [", 400, false},
    {"/v1/chat/completions", JSON, "{\"messages\":[{\"role\":\"x\",\"content\":\"a\"}]}", 400,
     false},
    {"/v1/chat/completions", JSON, "{\"messages\":[],\"temperature\":\"hot\"}", 400, false},
    {"/v1/completions", JSON,
     "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
     "\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\","
     "\"16\",\"17\"]}",
     400, false},
    {"/v1/completions", JSON, "{\"prompt\":[1,2,99999999]}", 400, true},
    {"/v1/completions", "text/plain", "{\"prompt\":\"a\"}", 415, false},
    {"/v1/models/unload", NULL, "", 415, false},
    {"/v1/nowhere", JSON, "{}", 404, false},
    {"/tokenize", JSON, "[1,2,3]", 400, false},
};

static char *g_big; /* a body past --max-body 65536 */
static pthread_once_t big_once = PTHREAD_ONCE_INIT;

static void init_big(void)
{
    g_big = malloc(70001);
    memset(g_big, 'a', 70000);
    memcpy(g_big, "{\"prompt\":\"", 11);
    g_big[70000] = 0;
}

static void one_bad(unsigned *seed, bool oversized)
{
    pthread_once(&big_once, init_big);
    struct bad huge = {"/v1/completions", JSON, g_big, 413, false};
    const struct bad *b = oversized ? &huge : &bads[rand_r(seed) % (sizeof bads / sizeof bads[0])];
    struct resp r;
    atomic_fetch_add(&n_requests, 1);
    if (http("127.0.0.1", "POST", b->path, b->ctype, b->body, 0, &r) < 0)
        lost("bad request: cannot connect", 0, NULL);
    else if (r.status == b->status && r.body && strstr(r.body, "\"error\":{"))
        atomic_fetch_add(&n_refused, 1);
    else if (b->needs_model && documented_503(&r))
        atomic_fetch_add(&n_errors, 1);
    else
        lost(oversized ? "oversized body" : b->body, r.status, r.body);
    resp_free(&r);
}

static void *client(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    while (!atomic_load(&g_stop)) {
        int k = rand_r(&seed) % 100;
        if (k < 75)
            one_chat(&seed, true);
        else if (k < 85)
            one_chat(&seed, false);
        else
            one_bad(&seed, k >= 95);
    }
    return NULL;
}

/* ---- the events beside the clients ------------------------------------------------------------
 */

static void *burst_one(void *arg)
{
    struct resp r;
    atomic_fetch_add(&n_requests, 1);
    if (http("127.0.0.1", "POST", "/v1/completions", JSON,
             "{\"prompt\":\"burst\",\"max_tokens\":16,\"ignore_eos\":true}", 0, &r) < 0)
        lost("burst: cannot connect", 0, NULL);
    else if (r.status == 200 && r.complete && strstr(r.body, "\"usage\":{"))
        atomic_fetch_add(&n_answers, 1), atomic_fetch_add(&n_burst_ok, 1);
    else if (documented_503(&r))
        atomic_fetch_add(&n_errors, 1), atomic_fetch_add(&n_burst_503, 1);
    else
        lost("burst", r.status, r.body);
    resp_free(&r);
    return arg;
}

/* 40 requests at once, past the queue (16) and the batch (8). */
static void burst(void)
{
    pthread_t th[40];
    for (int i = 0; i < 40; i++)
        pthread_create(&th[i], NULL, burst_one, NULL);
    for (int i = 0; i < 40; i++)
        pthread_join(th[i], NULL);
}

/* The time one request takes, in ms; *status gets its status (0: no answer). */
static double timed(const char *method, const char *path, const char *body, int *status)
{
    struct resp r;
    double t = now();
    *status = http("127.0.0.1", method, path, body ? JSON : NULL, body, 0, &r) == 0 ? r.status : 0;
    resp_free(&r);
    return (now() - t) * 1e3;
}

struct slowloris {
    int opened, held, left_after_timeout, health_status, chat_status;
    double health_ms, chat_ms;
};

/* How many of fds[0..n) the server still holds (a closed one is readable: EOF or a 408). */
static int held(const int *fds, int n)
{
    int h = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        h += fds[i] >= 0 && poll(&p, 1, 0) == 0;
    }
    return h;
}

/* 300 connections from 127.0.0.2 that never finish their headers; a client from 127.0.0.1
 * meanwhile; then the header timeout (5 s) must have closed them all. */
static void slowloris(struct slowloris *sl)
{
    enum { N = 300 };
    int fds[N];
    const char *part = "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    sl->opened = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = dial_from("127.0.0.2");
        sl->opened += fds[i] >= 0 && send(fds[i], part, strlen(part), MSG_NOSIGNAL) > 0;
    }
    usleep(500000);
    sl->held = held(fds, N);
    sl->health_ms = timed("GET", "/v1/health", NULL, &sl->health_status);
    sl->chat_ms =
        timed("POST", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2}", &sl->chat_status);
    sleep(7);
    sl->left_after_timeout = held(fds, N);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- the server and its memory ----------------------------------------------------------------
 */

/* Resident memory of the server in MiB (/proc). */
static double rss_mib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)g_pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb / 1024.0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Starts exsa serve; returns 0 once /v1/health answers. */
static int start_server(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", g_port = free_port());
    g_pid = fork();
    if (g_pid == 0) {
        setenv("BATCH_TIMEOUT_MS", "5", 1);
        /* a prompt cache that fills during the warm-up (the default 1 GiB would grow for the
         * whole run and hide a leak), so the soak runs its evictions all along */
        setenv("PROMPT_CACHE_MB", "4", 1);
        if (!freopen(O.log, "w", stderr))
            _exit(126);
        execl(O.exsa, O.exsa, "serve", "-m", O.model, "-c", "512", "--port", port, "--max-queue",
              "16", "--max-batch", "8", "--max-body", "65536", "--header-timeout", "5",
              "--body-timeout", "5", "--max-conn-per-address", "64", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++, usleep(100000)) {
        int st;
        timed("GET", "/v1/health", NULL, &st);
        if (st == 200)
            return 0;
        if (waitpid(g_pid, &st, WNOHANG) == g_pid)
            return -1;
    }
    return -1;
}

/* A gauge or counter of /metrics (-1 when absent). */
static double metric(const char *body, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = body ? strstr(body, key) : NULL;
    return p ? atof(p + strlen(key)) : -1;
}

/* Waits up to 15 s for the server to be idle with nothing held; prints what it holds. */
static bool idle_and_clean(void)
{
    static const char *const gauges[] = {"exsa_active_sequences", "exsa_queue_depth",
                                         "exsa_cache_sequences", "exsa_kv_blocks_used"};
    bool clean = false;
    struct resp r = {0};
    for (int i = 0; i < 150 && !clean; i++, usleep(100000)) {
        resp_free(&r);
        clean = http("127.0.0.1", "GET", "/metrics", NULL, NULL, 0, &r) == 0 && r.status == 200;
        for (int k = 0; k < 4 && clean; k++)
            clean = metric(r.body, gauges[k]) == 0;
    }
    for (int k = 0; k < 4; k++)
        printf("  %-28s %g\n", gauges[k], metric(r.body, gauges[k]));
    printf("  %-28s %g\n", "exsa_requests_cancelled_total",
           metric(r.body, "exsa_requests_cancelled_total"));
    resp_free(&r);
    return clean;
}

static double rss_start, rss_warm, rss_max_after_warm;
static double warm_at;

static void *monitor(void *arg)
{
    while (!atomic_load(&g_stop)) {
        double r = rss_mib(), t = now();
        if (t >= warm_at && rss_warm == 0)
            rss_warm = r;
        if (t >= warm_at && r > rss_max_after_warm)
            rss_max_after_warm = r;
        usleep(500000);
    }
    return arg;
}

/* The timed events beside the clients: bursts, a slowloris burst, a reload; then the clients
 * are stopped. Returns whether the reload answered 200. */
static bool events(struct slowloris *sl)
{
    const double at[] = {0.25, 0.35, 0.5, 0.6, 0.85};
    bool reload_ok = false;
    for (int e = 0; e < 5; e++) {
        while (now() < g_t0 + at[e] * O.seconds)
            usleep(100000);
        if (e == 1) {
            slowloris(sl);
        } else if (e == 2) {
            int st;
            double ms = timed("POST", "/v1/models/reload", "{}", &st);
            reload_ok = st == 200;
            printf("soak: reload at %.0f s: %d in %.0f ms\n", now() - g_t0, st, ms);
        } else {
            burst();
        }
    }
    while (now() < g_t0 + O.seconds)
        usleep(100000);
    return reload_ok;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--exsa"))
            O.exsa = v;
        else if (!strcmp(a, "-m"))
            O.model = v;
        else if (!strcmp(a, "-t"))
            O.seconds = atof(v);
        else if (!strcmp(a, "-c"))
            O.clients = atoi(v);
        else if (!strcmp(a, "-d"))
            O.disconnect = atof(v);
        else if (!strcmp(a, "--log"))
            O.log = v;
        else
            return -1;
    }
    return O.exsa && O.model && O.seconds >= 10 && O.clients > 0 && O.clients <= 256 ? 0 : -1;
}

static void report(const struct slowloris *sl)
{
    printf("soak: %.0f s, %d clients, %.0f%% of streams cut by their client\n", O.seconds,
           O.clients, O.disconnect * 100);
    printf("  requests %ld: answers %ld, documented errors %ld (503 + Retry-After, or an SSE "
           "error event after the reload), refused as they should be %ld, client disconnects "
           "%ld, LOST %ld\n",
           atomic_load(&n_requests), atomic_load(&n_answers), atomic_load(&n_errors),
           atomic_load(&n_refused), atomic_load(&n_disconnects), atomic_load(&n_lost));
    printf("  bursts of 40: %ld answered, %ld 503\n", atomic_load(&n_burst_ok),
           atomic_load(&n_burst_503));
    printf("  slowloris: %d connections from 127.0.0.2, %d held; meanwhile /v1/health %d in "
           "%.1f ms, a completion %d in %.1f ms; %d still held after the 5 s header timeout\n",
           sl->opened, sl->held, sl->health_status, sl->health_ms, sl->chat_status, sl->chat_ms,
           sl->left_after_timeout);
    printf("  resident memory: %.1f MiB at start, %.1f MiB after the warm-up, at most %.1f MiB "
           "after it\n",
           rss_start, rss_warm, rss_max_after_warm);
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0) {
        fprintf(stderr, "usage: soak --exsa build/exsa -m model.gguf [-t seconds >= 10] "
                        "[-c clients] [-d disconnect fraction] [--log server.log]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (start_server() < 0) {
        fprintf(stderr, "soak: the server did not start\n");
        return 1;
    }
    rss_start = rss_mib();
    g_t0 = now();
    warm_at = g_t0 + 0.2 * O.seconds;
    pthread_t th[256], mon;
    pthread_create(&mon, NULL, monitor, NULL);
    for (int i = 0; i < O.clients; i++)
        pthread_create(&th[i], NULL, client, (void *)(uintptr_t)(i + 1));
    struct slowloris sl = {0};
    bool reload_ok = events(&sl);
    atomic_store(&g_stop, true);
    for (int i = 0; i < O.clients; i++)
        pthread_join(th[i], NULL);
    pthread_join(mon, NULL);
    report(&sl);
    bool clean = idle_and_clean();
    double rss_end = rss_mib();
    int st_health, st_chat;
    timed("GET", "/v1/health", NULL, &st_health);
    timed("POST", "/v1/completions", "{\"prompt\":\"end\",\"max_tokens\":4}", &st_chat);
    printf("  at the end: %.1f MiB resident; /v1/health %d, a completion %d\n", rss_end, st_health,
           st_chat);
    bool flat = rss_end <= rss_warm * 1.10 + 16 && rss_max_after_warm <= rss_warm * 1.25 + 32;
    kill(g_pid, SIGTERM);
    int ws = 0;
    waitpid(g_pid, &ws, 0);
    bool exit_ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
    bool sl_ok = sl.held <= 64 && sl.health_status == 200 && sl.left_after_timeout == 0;
    bool ok = atomic_load(&n_lost) == 0 && clean && flat && st_health == 200 && st_chat == 200 &&
              reload_ok && sl_ok && exit_ok;
    printf("soak: %s (lost 0: %s; idle with nothing held: %s; memory flat: %s; slowloris: %s; "
           "reload: %s; clean exit: %s)\n",
           ok ? "PASSED" : "FAILED", n_lost ? "no" : "yes", clean ? "yes" : "no",
           flat ? "yes" : "no", sl_ok ? "yes" : "no", reload_ok ? "yes" : "no",
           exit_ok ? "yes" : "no");
    return ok ? 0 : 1;
}
