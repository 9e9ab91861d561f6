/*
 * server.h: `exsa serve`, the HTTP server on libmicrohttpd: configuration (config.c), the
 * connection glue, routing, auth, CORS and replies (http.c), the rate limiter and constant-time
 * key check (guard.c), Prometheus metrics (metrics.c), the OpenAI routes (openai.c), the Exsa
 * routes and tokenize/detokenize (exsa_api.c), and the request plumbing the generating routes
 * share (job.c: sampling parameters, tokenizing, SSE and blocking replies).
 *
 * struct server is shared by every connection thread: its fields are set before the daemon
 * starts and read-only afterwards, except what lives behind the scheduler, the metrics and the
 * rate limiter (each with its own lock). Called by tools/exsa/cmd_serve.c.
 */
#ifndef EXSA_SERVER_H
#define EXSA_SERVER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"

struct cJSON;

/* ---- configuration (config.c) --------------------------------------------------------------- */

struct srv_config {
    char model_path[PATH_MAX]; /* "" : start without a model */
    char host[256];
    int port;
    int gpu_layers, n_ctx, n_batch, n_threads;
    int backend; /* enum exsa_backend_kind */
    int kv_type; /* enum exsa_kv_type */
    bool cors;
    char cors_origins[1024]; /* comma-separated, or "*" */
    bool rate_limit;
    int rate_limit_max, rate_limit_window; /* requests per window; seconds */
    int max_queue;
    bool continuous;
    int max_batch, batch_timeout_ms;
    char models_dir[PATH_MAX];
    char api_key[512]; /* "" : no authentication */
    long max_body;     /* bytes */
    int step_delay_ms; /* test hook (EXSA_TEST_STEP_DELAY_MS) */
    int grace_ms;      /* how long shutdown lets requests in flight finish */
};

void srv_config_default(struct srv_config *c);
/* Reads every environment variable of EXSA-API.md. Returns 0 or EXSA_EINVAL (err says which). */
int srv_config_from_env(struct srv_config *c, char *err, size_t errlen);
/* Reads the flags (argv[0] is "serve"), which win over the environment. Returns 0, 1 when
 * --help was asked (usage printed), or EXSA_EINVAL with err naming the flag. */
int srv_config_from_args(struct srv_config *c, int argc, char **argv, char *err, size_t errlen);
void srv_config_usage(void);

/* ---- guard.c -------------------------------------------------------------------------------- */

/* Equal strings, in time that depends only on the lengths' maximum, not on where they differ. */
bool srv_consttime_eq(const char *a, const char *b);

struct ratelimit;
struct ratelimit *ratelimit_new(int max, int window_s);
void ratelimit_free(struct ratelimit *rl);
/* Counts one request of addr; true when it is within the limit, else *retry_after gets the
 * seconds until the window ends. */
bool ratelimit_allow(struct ratelimit *rl, const char *addr, int *retry_after);

/* ---- metrics.c ------------------------------------------------------------------------------ */

struct metrics;
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
void metrics_request(struct metrics *m, const char *route, int status);
void metrics_tokens(struct metrics *m, int n_prompt, int n_gen);
void metrics_latency(struct metrics *m, double ttft_s, double tpot_s); /* < 0: not measured */
/* The Prometheus text exposition; malloc'd. */
char *metrics_render(struct metrics *m, const struct sched_stats *st, double uptime_s);

/* ---- the server (http.c) -------------------------------------------------------------------- */

struct server {
    struct srv_config cfg;
    struct sched *sched;
    struct metrics *metrics;
    struct ratelimit *rl;
    struct MHD_Daemon *daemon;
    double t_start;      /* monotonic */
    long t_start_wall;   /* time(NULL) at start */
    char models_root[PATH_MAX]; /* realpath of the models folder, "" when it does not exist */
    volatile int shutting_down;
};

/* Builds the server, loads cfg->model_path when set, and starts listening. Returns 0 or a
 * negative code with a sentence in err. */
int srv_start(struct server *srv, const struct srv_config *cfg, char *err, size_t errlen);
/* Stops accepting, lets requests in flight finish for cfg.grace_ms, cancels the rest, frees. */
void srv_stop(struct server *srv);
/* The port the server listens on (the chosen one when cfg.port was 0). */
int srv_port(const struct server *srv);

/* One HTTP request being handled (http.c owns it; routes read it and reply through it). */
struct srv_conn {
    struct server *srv;
    struct MHD_Connection *mc;
    const char *method, *url;
    const char *route; /* the route's name for metrics ("other" when unknown) */
    char *body;
    size_t body_len;
    bool body_too_big;
    char addr[64];
    int fd;
    int status; /* the status replied (0 until then) */
    int retry_after; /* > 0: the next reply carries Retry-After */
    struct sched_req *req; /* the request in the scheduler, if any (cancelled at the end) */
    bool queued;
};

struct MHD_Response;

/* Replies: each queues one response on c and returns its MHD result. */
int srv_queue_response(struct srv_conn *c, int status, struct MHD_Response *r);
int srv_reply_json(struct srv_conn *c, int status, struct cJSON *body); /* takes body */
int srv_reply_text(struct srv_conn *c, int status, const char *ctype, const char *text);
/* OpenAI's error shape; type: "invalid_request_error", "authentication_error", ...; param and
 * code may be NULL. */
int srv_reply_error(struct srv_conn *c, int status, const char *type, const char *param,
                    const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* An error body in OpenAI's shape (for SSE error events); malloc'd JSON text. */
char *srv_error_json(const char *message, const char *type, const char *param, const char *code);
/* s[0..n) as a JSON string literal (quotes included; control bytes and NUL escaped, invalid
 * UTF-8 as U+FFFD), malloc'd; NULL when out of memory. Generated text may hold any byte. */
char *srv_json_quote(const char *s, size_t n);
/* s (malloc'd, NUL-terminated JSON text) with invalid UTF-8 bytes replaced by U+FFFD: s itself
 * when it is valid, else a new string (s is freed); NULL when out of memory (s is freed). */
char *srv_utf8_scrub(char *s);
/* Whether the client of c still holds its connection open. */
bool srv_client_alive(const struct srv_conn *c);

/* ---- the generating routes (job.c, openai.c, exsa_api.c) ------------------------------------ */

enum job_kind { JOB_CHAT, JOB_COMPLETION, JOB_GENERATE };

/* A generating request, parsed and tokenized, ready for the scheduler. */
struct job {
    enum job_kind kind;
    bool stream, include_usage;
    char id[48];
    char model_id[256];
    long created;
    int32_t *prompt;
    int n_prompt;
    struct gen_params gp;
    char **stop; /* owned copies behind gp.stop */
    int32_t *bias_id;
    float *bias;
    int n_bias_max;
};

void job_init(struct job *j, enum job_kind kind, const char *id_prefix);
void job_free(struct job *j);
/* Sampling parameters of an OpenAI body (or Exsa's sampling_params when exsa is true) into
 * j->gp, over the defaults already there. Returns 0, or replies 400 on c and returns -1. */
int job_parse_sampling(struct srv_conn *c, struct job *j, const struct cJSON *o, bool exsa);
/* Checks the prompt against the context and the logit-bias ids against the vocabulary (n_ctx,
 * n_vocab of the model the prompt was tokenized with); replies 400 and returns -1 when wrong. */
int job_check(struct srv_conn *c, struct job *j, int n_ctx, int n_vocab);
/* Submits j to the scheduler and replies: an SSE stream or one JSON body (which waits). */
int job_run(struct srv_conn *c, struct job *j, unsigned model_gen);
/* The body of c as a JSON object, or NULL after replying 400. */
struct cJSON *job_body(struct srv_conn *c);
/* Borrows the model (release with sched_model_release) and checks the body's "model" names it;
 * fills j->model_id. NULL after replying 503 (none loaded) or 404 (another model named). */
struct exsa_model *job_model(struct srv_conn *c, struct job *j, const struct cJSON *b,
                             unsigned *gen, int *n_ctx);
/* Tokenizes text with m; *out malloc'd. Returns 0 or a negative code. */
int job_tokenize(struct exsa_model *m, const char *text, bool add_bos, bool special,
                 int32_t **out, int *n_out);
/* Logs the keys of o that are not in known (a NULL-terminated list). */
void job_log_unknown(const struct srv_conn *c, const struct cJSON *o, const char *const *known);
/* The public id of the loaded model: its file name without ".gguf". */
void srv_model_id(const char *path, char *out, size_t size);

int route_models(struct srv_conn *c);
int route_chat(struct srv_conn *c);
int route_completions(struct srv_conn *c);
int route_health(struct srv_conn *c);
int route_status(struct srv_conn *c);
int route_model_info(struct srv_conn *c);
int route_generate(struct srv_conn *c);
int route_models_list(struct srv_conn *c);
int route_models_load(struct srv_conn *c);
int route_models_reload(struct srv_conn *c);
int route_models_unload(struct srv_conn *c);
int route_metrics(struct srv_conn *c);
int route_tokenize(struct srv_conn *c);
int route_detokenize(struct srv_conn *c);

#endif
