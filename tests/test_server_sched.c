/*
 * test_server_sched.c: `exsa serve` end to end for the scheduler faults of issue 11: a lone
 * request on an idle server starts at once (BATCH_TIMEOUT_MS is 0 unless set, and set it does
 * what it says), a non-streaming request whose client leaves is cancelled and its slot freed
 * (the health shows it idle again), a reload loads the new model beside the one being served
 * (no request answered 503 meanwhile, the request in flight finishes, health stays 200), and
 * GET /v1/status and /slots list the running sequences.
 */
#include <pthread.h>

#include "server-util.h"

static char g_argv0[PATH_MAX];

/* The value of the first line of a /metrics body that starts with name and a space; -1 if none. */
static double metric(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ')
            return atof(p + n + 1);
    return -1;
}

static double queue_wait_sum(struct srv *s, double *count)
{
    int st;
    char *b = req(s, "GET", "/metrics", NULL, NULL, &st);
    double sum = metric(b, "exsa_queue_wait_seconds_sum");
    *count = metric(b, "exsa_queue_wait_seconds_count");
    free(b);
    return sum;
}

static void start_tiny(struct srv *s, const char *const *env)
{
    char flags[PATH_MAX + 32];
    snprintf(flags, sizeof flags, "-m '%s' -c 256", g_model);
    CHECK(start(s, env, flags) == 0, "the server did not start");
}

/* An idle server starts a lone request at once: its queue wait is scheduling time, not the
 * 100 ms of the original BATCH_TIMEOUT_MS. Set, the wait is what it says. */
static void test_idle_starts_at_once(void)
{
    find_paths(g_argv0, "exsa-test-server-sched");
    struct srv A, W;
    start_tiny(&A, NULL);
    const char *env[] = {"BATCH_TIMEOUT_MS=400", NULL};
    start_tiny(&W, env);
    int st;
    for (int i = 0; i < 3; i++) {
        free(req(&A, "POST", "/v1/chat/completions", CHAT(",\"max_tokens\":2"), NULL, &st));
        CHECK(st == 200, "default server: %d", st);
    }
    free(req(&W, "POST", "/v1/chat/completions", CHAT(",\"max_tokens\":2"), NULL, &st));
    CHECK(st == 200, "BATCH_TIMEOUT_MS=400 server: %d", st);
    double n_a, n_w;
    double wait_a = queue_wait_sum(&A, &n_a), wait_w = queue_wait_sum(&W, &n_w);
    CHECK(n_a == 3 && wait_a >= 0 && wait_a / 3 < 0.04,
          "lone requests waited %.4f s on average in the queue (%g of them)", wait_a / 3, n_a);
    CHECK(n_w == 1 && wait_w >= 0.39, "with BATCH_TIMEOUT_MS=400 the wait was %.4f s", wait_w);
    CHECK(stop(&A) == 0 && stop(&W) == 0, "exit status");
}

/* curl gives up after 1 s of a long non-streaming reply: the request is cancelled, and the
 * health shows no active request within 3 s (before: ~20 s until max_tokens). */
static void test_blocking_client_leaves(void)
{
    struct srv A;
    const char *env[] = {"EXSA_TEST_STEP_DELAY_MS=20", NULL};
    start_tiny(&A, env);
    free(sh("curl -s -m 1 -o /dev/null %s/v1/chat/completions " JSON_CT
            "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"go\"}],\"max_tokens\":4000,"
            "\"ignore_eos\":true}'",
            A.url));
    bool idle = false;
    char *b = NULL;
    for (int i = 0; i < 30 && !idle; i++, usleep(100000)) {
        int st;
        free(b);
        b = req(&A, "GET", "/v1/health", NULL, NULL, &st);
        idle = st == 200 && has(b, "\"active_requests\":0");
    }
    CHECK(idle, "the request of a client that left still runs after 3 s: %s", b);
    free(b);
    CHECK(stop(&A) == 0, "exit status");
}

struct bg {
    struct srv *s;
    const char *method, *path, *body;
    char *out;
    int st;
};

static void *bg_req(void *arg)
{
    struct bg *g = arg;
    g->out = req(g->s, g->method, g->path, g->body, NULL, &g->st);
    return NULL;
}

/* A reload while a reply is being generated: the reply finishes (200, every token), requests
 * sent during the reload are answered 200, health stays 200, and the reload says it is done. */
static void test_reload_beside(void)
{
    struct srv A;
    const char *env[] = {"EXSA_TEST_STEP_DELAY_MS=40", NULL};
    start_tiny(&A, env);
    struct bg run = {
        &A,   "POST", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":25,\"ignore_eos\":true}",
        NULL, 0};
    struct bg reload = {&A, "POST", "/v1/models/reload", "{}", NULL, 0};
    pthread_t t_run, t_reload;
    pthread_create(&t_run, NULL, bg_req, &run);
    usleep(300000); /* the reply is under way */
    pthread_create(&t_reload, NULL, bg_req, &reload);
    usleep(100000);
    int n_ok = 0, n = 0, health_ok = 0;
    for (; n < 4; n++) { /* during the reload: served, not refused */
        int st;
        free(req(&A, "POST", "/v1/completions", "{\"prompt\":\"b\",\"max_tokens\":2}", NULL, &st));
        n_ok += st == 200;
        char *h = req(&A, "GET", "/v1/health", NULL, NULL, &st);
        health_ok += st == 200 && has(h, "\"model_loaded\":true");
        free(h);
    }
    pthread_join(t_run, NULL);
    pthread_join(t_reload, NULL);
    CHECK(run.st == 200 && has(run.out, "\"completion_tokens\":25"), "the reply in flight: %d %s",
          run.st, run.out);
    CHECK(reload.st == 200 && has(reload.out, "\"success\":true") && has(reload.out, "reloaded"),
          "reload: %d %s", reload.st, reload.out);
    CHECK(n_ok == n && health_ok == n,
          "during the reload %d of %d requests and %d of %d health "
          "checks answered 200",
          n_ok, n, health_ok, n);
    free(run.out), free(reload.out);
    int st;
    char *b = req(&A, "POST", "/v1/completions", "{\"prompt\":\"c\",\"max_tokens\":2}", NULL, &st);
    CHECK(st == 200, "after the reload: %d %s", st, b);
    free(b);
    CHECK(stop(&A) == 0, "exit status");
}

/* /v1/status and /slots show a running sequence: its id, state and token counts. */
static void test_status_slots(void)
{
    struct srv A;
    const char *env[] = {"EXSA_TEST_STEP_DELAY_MS=40", NULL};
    start_tiny(&A, env);
    struct bg run = {&A,
                     "POST",
                     "/v1/completions",
                     "{\"prompt\":\"one two three\",\"max_tokens\":30,\"ignore_eos\":true}",
                     NULL,
                     0};
    pthread_t t;
    pthread_create(&t, NULL, bg_req, &run);
    char *status = NULL, *slots = NULL;
    bool seen = false;
    for (int i = 0; i < 40 && !seen; i++, usleep(50000)) {
        int st1, st2;
        free(status), free(slots);
        status = req(&A, "GET", "/v1/status", NULL, NULL, &st1);
        slots = req(&A, "GET", "/slots", NULL, NULL, &st2);
        seen = st1 == 200 && st2 == 200 && has(status, "\"slots\":[{\"id\":") &&
               has(status, "\"state\":\"generating\"") && has(slots, "[{\"id\":") &&
               has(slots, "\"n_prompt_tokens\":") && has(slots, "\"n_decoded\":") &&
               !has(slots, "\"n_decoded\":0,");
    }
    CHECK(seen, "a running sequence in /v1/status and /slots: %s / %s", status, slots);
    pthread_join(t, NULL);
    free(run.out), free(status), free(slots);
    int st;
    char *b = req(&A, "GET", "/slots", NULL, NULL, &st);
    CHECK(st == 200 && b && !strcmp(b, "[]"), "idle /slots: %d %s", st, b);
    free(b);
    CHECK(stop(&A) == 0, "exit status");
}

int main(int argc, char **argv)
{
    snprintf(g_argv0, sizeof g_argv0, "%s", argv[0]);
    RUN(test_idle_starts_at_once);
    RUN(test_blocking_client_leaves);
    RUN(test_reload_beside);
    RUN(test_status_slots);
    free(sh("rm -rf %s", g_tmp));
    TEST_END();
}
