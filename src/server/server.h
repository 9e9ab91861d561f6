/*
 * server.h: `exsa serve`, the HTTP server on libmicrohttpd: configuration (config.c), the
 * connection glue, routing, auth, CORS and replies (http.c), the rate limiter, Host, content
 * type and constant-time key checks (guard.c), the header and body deadlines (conns.c), Prometheus
 * metrics (metrics.c), the OpenAI routes (openai.c), the Exsa routes and tokenize/detokenize
 * (exsa_api.c), and the request plumbing the generating routes share (job.c: sampling parameters,
 * tokenizing, SSE and blocking replies; reply.c: the JSON of one choice, with its tool calls,
 * reasoning and logprobs).
 *
 * struct server is shared by every connection thread: its fields are set before the daemon
 * starts and read-only afterwards, except what lives behind the scheduler, the metrics and the
 * rate limiter (each with its own lock). Called by tools/exsa/cmd_serve.c.
 */
#ifndef EXSA_SERVER_H
#define EXSA_SERVER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gen.h"
#include "scheduler.h"

struct cJSON;
struct grammar;
struct tm_mask;
struct tm_vocab;

/* ---- configuration (config.c) --------------------------------------------------------------- */

struct srv_config {
    char model_path[PATH_MAX]; /* "" : start without a model */
    char host[256];
    int port;
    int gpu_layers, n_ctx, n_batch, n_threads;
    int backend; /* enum exsa_backend_kind */
    int kv_type; /* enum exsa_kv_type */
    bool cors;
    char cors_origins[1024];  /* comma-separated, or "*" */
    bool cors_manage;         /* CORS on the model-management routes too */
    char allowed_hosts[1024]; /* Host names besides the bound address, comma-separated */
    bool rate_limit;
    int rate_limit_max, rate_limit_window; /* requests per window; seconds */
    int max_queue;
    bool continuous;
    bool deterministic;
    int max_batch, batch_timeout_ms;
    char models_dir[PATH_MAX];
    char api_key[512];                 /* "" : no authentication */
    long max_body;                     /* bytes */
    int step_delay_ms;                 /* test hook (EXSA_TEST_STEP_DELAY_MS) */
    int grace_ms;                      /* how long shutdown lets requests in flight finish */
    int max_conns, max_conns_per_addr; /* open connections in all, and from one address */
    int header_timeout, body_timeout;  /* seconds for a request's headers; for its body */
    bool mmap;                         /* model files mapped (true) or read into memory */
    int cache_mb;                      /* prompt cache bound in MiB (0: off) */
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
/* Whether a request's Host header (NULL: none) names this server: an address literal,
 * localhost, the HOST it is bound to, or a name in ALLOWED_HOSTS. Any other name is what a
 * DNS-rebinding page sends. */
bool srv_host_allowed(const struct srv_config *cfg, const char *host);
/* Whether a Content-Type is application/json (parameters such as charset allowed). */
bool srv_is_json_type(const char *ctype);

struct ratelimit;
struct ratelimit *ratelimit_new(int max, int window_s);
void ratelimit_free(struct ratelimit *rl);
/* Counts one request of addr; true when it is within the limit, else *retry_after gets the
 * seconds until the window ends. */
bool ratelimit_allow(struct ratelimit *rl, const char *addr, int *retry_after);

/* ---- conns.c -------------------------------------------------------------------------------- */

enum conn_phase {
    CONN_HEADERS, /* waiting for a request's headers: HEADER_TIMEOUT */
    CONN_BODY,    /* receiving its body: BODY_TIMEOUT */
    CONN_BUSY,    /* being answered: no deadline here */
};
struct conntrack;
struct conn_slot;
/* Starts the watchdog; seconds <= 0 turn a deadline off. NULL when out of memory. */
struct conntrack *conntrack_new(int header_s, int body_s);
void conntrack_free(struct conntrack *ct);
/* A new connection on socket fd, waiting for headers (NULL when out of memory: no deadline). */
struct conn_slot *conntrack_open(struct conntrack *ct, int fd);
/* Before the socket is closed. */
void conntrack_close(struct conntrack *ct, struct conn_slot *s);
/* Enters phase ph (its deadline counts from now). */
void conntrack_phase(struct conntrack *ct, struct conn_slot *s, enum conn_phase ph);
void conntrack_stats(struct conntrack *ct, int *n_open, unsigned long long *n_timeouts);

/* ---- metrics.c ------------------------------------------------------------------------------ */

struct metrics;
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
void metrics_request(struct metrics *m, const char *route, int status);
void metrics_tokens(struct metrics *m, int n_prompt, int n_gen);
/* Seconds queued, to the first token, per output token (each < 0: not measured). */
void metrics_latency(struct metrics *m, double queue_s, double ttft_s, double tpot_s);
/* The Prometheus text exposition; malloc'd. n_conns, n_timeouts: from conntrack_stats. */
char *metrics_render(struct metrics *m, const struct sched_stats *st, double uptime_s, int n_conns,
                     unsigned long long n_timeouts);

/* ---- the server (http.c) -------------------------------------------------------------------- */

struct server {
    struct srv_config cfg;
    struct sched *sched;
    struct metrics *metrics;
    struct ratelimit *rl;
    struct conntrack *ct;
    struct MHD_Daemon *daemon;
    double t_start;             /* monotonic */
    long t_start_wall;          /* time(NULL) at start */
    char models_root[PATH_MAX]; /* realpath of the models folder, "" when it does not exist */
    volatile int shutting_down;
    /* the token index of constrained decoding (tokmask.h) for the model of generation
     * vocab_gen, built on first use (job.c), under vocab_mu */
    pthread_mutex_t vocab_mu;
    struct tm_vocab *vocab;
    unsigned vocab_gen;
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
    bool http11;            /* the request is HTTP/1.1 */
    bool manage;            /* a model-management route (no CORS unless cfg.cors_manage) */
    bool authed;            /* no API key is set, or the request carries it */
    int status;             /* the status replied (0 until then) */
    int retry_after;        /* > 0: the next reply carries Retry-After */
    struct sched_req *req;  /* the request in the scheduler, if any (cancelled at the end) */
    struct conn_slot *slot; /* the connection's deadlines (conns.c) */
    bool queued;
};

struct MHD_Response;

/* Replies: each queues one response on c and returns its MHD result. */
int srv_queue_response(struct srv_conn *c, int status, struct MHD_Response *r);
int srv_reply_json(struct srv_conn *c, int status, struct cJSON *body); /* takes body */
int srv_reply_text(struct srv_conn *c, int status, const char *ctype, const char *text);
/* 200 with the malloc'd text (taken, freed in every case); NULL (a failed allocation
 * upstream) answers 503 "out of memory" instead. */
int srv_reply_take(struct srv_conn *c, const char *ctype, char *text);
/* OpenAI's error shape; type: "invalid_request_error", "authentication_error", ...; param and
 * code may be NULL. */
int srv_reply_error(struct srv_conn *c, int status, const char *type, const char *param,
                    const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* An error body in OpenAI's shape (for SSE error events); malloc'd JSON text. */
char *srv_error_json(const char *message, const char *type, const char *param, const char *code);
/* s[0..n) as a JSON string literal (quotes included; control bytes and NUL escaped, invalid
 * UTF-8 as U+FFFD), malloc'd; NULL when out of memory. Generated text may hold any byte. */
char *srv_json_quote(const char *s, size_t n);
/* s (malloc'd, NUL-terminated JSON text) with invalid UTF-8 bytes replaced by U+FFFD: s itself
 * when it is valid, else a new string (s is freed); NULL when out of memory (s is freed). */
char *srv_utf8_scrub(char *s);
/* The client end of a reply being generated. A read of 0 bytes (the client's FIN) is not a
 * disconnect: the client may have half-closed its socket and still read. Only a write tells,
 * so after a FIN the reply probes now and then (a 100 Continue before a whole reply, an SSE
 * comment in a stream); a client that left answers the probe with a reset. */
struct srv_peer {
    int fd;           /* -1: unknown (always there) */
    bool http11;      /* 1xx answers are allowed */
    double next, gap; /* when the next probe is due; seconds between probes */
};
enum srv_peer_state { PEER_THERE, PEER_PROBE, PEER_GONE };
/* PEER_THERE: go on; PEER_PROBE: write a probe now (then go on); PEER_GONE: the client left. */
enum srv_peer_state srv_peer_check(struct srv_peer *p);
/* Writes "HTTP/1.1 100 Continue" (an interim answer every HTTP/1.1 client skips) as the probe
 * before a whole reply; false when the client is gone (or too old for 1xx answers). */
bool srv_peer_probe_continue(struct srv_peer *p);

/* ---- request bodies (request.c): bytes in, a job or a 400 out; no socket, no model --------- */

/* Caps on the lists a client controls (past one: a 400 naming the field and the cap). */
#define JOB_MAX_MESSAGES 4096   /* "messages" of a chat request */
#define JOB_MAX_PARTS 1024      /* content parts of one message */
#define JOB_MAX_STOP 16         /* stop strings */
#define JOB_MAX_TOOLS 256       /* "tools" */
#define JOB_MAX_LOGIT_BIAS 4096 /* "logit_bias" entries */
#define JOB_MAX_IDS (1 << 20)   /* token ids in a prompt or a /detokenize body */
#define JOB_MAX_UNKNOWN 8       /* unknown parameter names kept for the log */
#define JOB_MAX_N 8             /* "n": choices of one request */

/* An answer decided away from the socket: status, OpenAI's param and code, a sentence. */
struct srv_err {
    int status;        /* 0: no error */
    const char *param; /* static string or NULL */
    const char *code;  /* static string or NULL */
    int retry_after;   /* > 0: sent as Retry-After */
    char message[512];
};

enum job_kind { JOB_CHAT, JOB_COMPLETION, JOB_GENERATE, JOB_TOKENIZE, JOB_DETOKENIZE, JOB_LOAD };

/* tool_choice: auto (the model may call; calls are parsed from its text), none (no tools in
 * the prompt, nothing parsed), required / a named function (enforced by constrained decoding) */
enum job_tool_mode { JOB_TOOLS_AUTO, JOB_TOOLS_NONE, JOB_TOOLS_REQUIRED, JOB_TOOLS_NAMED };

/* One choice's constrained decoding: its grammar and the mask over it (built by job.c; the
 * choice's scheduler request owns it once submitted). */
struct job_mask {
    struct grammar *g;
    struct tm_mask *mask;
};

/* A request parsed from its body, then (generating kinds) tokenized and run. Strings point into
 * body, which the job owns; so do the arrays (job_free frees them). */
struct job {
    enum job_kind kind;
    struct cJSON *body;
    const char *model; /* the body's "model", or NULL */
    bool stream, include_usage;
    char id[48];
    char model_id[256];
    long created;
    /* chat: messages (strings into body, or joined parts in owned), tools as one JSON text */
    struct exsa_chat_msg *msgs;
    int n_msgs, n_owned;
    char **owned;
    char *tools;
    /* chat: tool_choice (its JSON text, checked against tools; NULL when absent), at most one
     * call a reply when parallel_tool_calls is false; response_format (chat and completions:
     * its JSON text, checked; NULL for none or "text") */
    char *tool_choice;
    enum job_tool_mode tool_mode;
    bool parallel_tool_calls;
    char *response_format;
    int n; /* choices (OpenAI's "n", 1..JOB_MAX_N) */
    /* set by job_route with the model: its template thinks (<think> -> reasoning_content);
     * the per-choice masks of constrained decoding (NULL: none) */
    bool reasoning;
    struct job_mask *masks[JOB_MAX_N];
    /* completion / generate / tokenize text; generate and tokenize switches */
    const char *text;
    bool use_chat_template, add_special, parse_special;
    /* token ids: given in the body (ids_given: completion ids, /detokenize) or tokenized */
    int32_t *prompt;
    int n_prompt;
    bool ids_given;
    /* models/load */
    const char *load_path;
    int load_gpu_layers, load_n_ctx; /* -1: keep the current setting */
    struct gen_params gp;
    bool cache_prompt; /* "cache_prompt" (true unless the body says false) */
    int32_t *bounds;   /* where messages start in prompt (chat_msg_starts), n_bounds of them */
    int n_bounds;
    char **stop; /* owned copies behind gp.stop */
    int32_t *bias_id;
    float *bias;
    const char *unknown[JOB_MAX_UNKNOWN]; /* names of unknown parameters (into body) */
    int n_unknown;                        /* how many there were in all */
};

/* Frees one choice's grammar and mask (NULL: nothing). In request.c (job_free needs it). */
void job_mask_free(struct job_mask *m);
/* Parses body[0..len) as a request of kind into j (always initialised: job_free it). Returns 0,
 * or -1 with the 400 in e. Linear in len. */
int job_parse(enum job_kind kind, const char *body, size_t len, struct job *j, struct srv_err *e);
void job_free(struct job *j);
/* Checks the prompt against the context and every token id (prompt ids given in the body,
 * logit-bias ids) against the vocabulary. Returns 0 or -1 with the 400 in e. */
int job_check(const struct job *j, int n_ctx, int n_vocab, struct srv_err *e);
/* Fills e (status, param, code, printf-style message); returns -1. */
int srv_err_set(struct srv_err *e, int status, const char *param, const char *code, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

/* ---- one choice of an OpenAI reply (reply.c) ------------------------------------------------ */

/* What every choice of a chat or completions reply shares, copied from its job. */
struct reply_meta {
    enum job_kind kind; /* JOB_CHAT or JOB_COMPLETION */
    char id[48];
    char model_id[256];
    long created;
    bool include_usage;
    bool logprobs;   /* logprobs were asked for */
    bool reasoning;  /* the template thinks: <think> text is reasoning_content */
    bool tool_calls; /* tools offered (tool_choice not none): calls are parsed out of the text */
    int max_calls;   /* calls kept in one reply (1: parallel_tool_calls false or a named one) */
};
void reply_meta_of(struct reply_meta *rm, const struct job *j);
/* OpenAI's common head (id, object, created, model, system_fingerprint); usage (n_cached:
 * prompt_tokens_details.cached_tokens); key: text as a JSON string (NUL bytes and invalid UTF-8
 * escaped or replaced). */
struct cJSON *reply_head(const struct reply_meta *rm, const char *object);
struct cJSON *reply_usage(int n_prompt, int n_gen, int n_cached);
void reply_add_text(struct cJSON *o, const char *key, const char *text, size_t len);

struct reply_choice;
/* Choice index of a reply described by rm (which must outlive it). NULL when out of memory. */
struct reply_choice *reply_choice_new(const struct reply_meta *rm, int index);
void reply_choice_free(struct reply_choice *c);
/* Takes one read of the choice's channel (an error chunk is the caller's to answer). With
 * events (a cJSON array: streaming) appends the chunk objects to send: the role first, then
 * text, reasoning and tool-call deltas, and at the end the finish_reason. Returns 0 or
 * EXSA_ENOMEM. */
int reply_choice_take(struct reply_choice *c, const struct sched_chunk *ch, struct cJSON *events);
bool reply_choice_done(const struct reply_choice *c);
/* The whole reply's choice object (message or text, logprobs, finish_reason). */
struct cJSON *reply_choice_json(struct reply_choice *c);

/* ---- the routes with a body (job.c, openai.c, exsa_api.c) ------------------------------------ */

/* Replies e on c (its status, OpenAI's error shape, Retry-After when set). */
int srv_reply_err(struct srv_conn *c, const struct srv_err *e);
/* The prologue every model route shares: parses c's body as kind into j, logs its unknown
 * parameters, borrows the model (release with sched_model_release) and checks the body's
 * "model" names it. Returns the model, or NULL with the answer in e (400, 503, 404). */
struct exsa_model *job_open(struct srv_conn *c, enum job_kind kind, struct job *j, unsigned *gen,
                            int *n_ctx, struct srv_err *e);
/* A generating route (chat, completion, generate) from body to reply. */
int job_route(struct srv_conn *c, enum job_kind kind);
/* Tokenizes text with m; *out malloc'd. Returns 0 or a negative code. */
int job_tokenize(struct exsa_model *m, const char *text, bool add_bos, bool special, int32_t **out,
                 int *n_out);
/* The public id of the loaded model: its file name without ".gguf". */
void srv_model_id(const char *path, char *out, size_t size);

/* ---- models.c: the "model" field, GET /v1/models[/{id}] ------------------------------------- */

/* Which model a request's "model" (want; NULL: none) names, with served the path of the model
 * being served: SRV_MODEL_SERVED (its id, file name or path, or a file of MODELS_DIR that is
 * the same file), SRV_MODEL_OTHER (another .gguf of MODELS_DIR, which a load would serve) or
 * SRV_MODEL_UNKNOWN. */
enum srv_model_match { SRV_MODEL_SERVED, SRV_MODEL_OTHER, SRV_MODEL_UNKNOWN };
enum srv_model_match srv_model_match(const struct server *srv, const char *want,
                                     const char *served);
/* The check every model route makes: 0 when the served model answers want (it answers any name
 * that is not another file of MODELS_DIR, as llama-server does), else -1 with a 404 in e that
 * says how to load that file. */
int srv_model_check(const struct server *srv, const char *want, const char *served,
                    struct srv_err *e);
/* exsa_api.c: what /health and /v1/health answer, from the scheduler's state alone (not from
 * the load code): 503 while no model is loaded, one is loading, or the server shuts down; the
 * status word for the body and, when not ready, the reason (a sentence) and an error code. */
struct srv_health {
    int http_status;
    const char *status;        /* "healthy", "overloaded", "loading", "no_model", "shutting_down" */
    const char *reason, *code; /* NULL when ready */
};
void srv_health_state(const struct sched_stats *st, bool shutting_down, struct srv_health *h);

int route_models(struct srv_conn *c);
int route_chat(struct srv_conn *c);
int route_completions(struct srv_conn *c);
int route_health(struct srv_conn *c);
int route_status(struct srv_conn *c);
int route_slots(struct srv_conn *c);
int route_model_info(struct srv_conn *c);
int route_generate(struct srv_conn *c);
int route_models_list(struct srv_conn *c);
int route_models_load(struct srv_conn *c);
int route_models_reload(struct srv_conn *c);
int route_models_unload(struct srv_conn *c);
int route_metrics(struct srv_conn *c);
int route_tokenize(struct srv_conn *c);
int route_detokenize(struct srv_conn *c);
int route_model_get(struct srv_conn *c);  /* models.c */
int route_embeddings(struct srv_conn *c); /* embed.c */

#endif
