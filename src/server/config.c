/*
 * config.c: the server's settings: defaults, then the environment variables of EXSA-API.md, then
 * the command-line flags (which win). One table (struct opt) names each setting's variable, its
 * flags and where it goes, so every variable has a flag of the same meaning and both go through
 * the same checked parser. Called by tools/exsa/cmd_serve.c through srv_config_*.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server.h"

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL, OPT_LONG };

struct opt {
    const char *env;
    const char *flag, *flag2; /* long and short flag (flag2 may be NULL) */
    enum opt_type type;
    size_t off;  /* offset in struct srv_config */
    size_t size; /* buffer size for OPT_STR */
    long lo, hi;
    const char *help;
};

#define F(field) offsetof(struct srv_config, field), sizeof(((struct srv_config *)0)->field)

static const struct opt opts[] = {
    {"MODEL_PATH", "--model", "-m", OPT_STR, F(model_path), 0, 0, "GGUF file to load at start"},
    {"HOST", "--host", NULL, OPT_STR, F(host), 0, 0, "address to bind (127.0.0.1)"},
    {"PORT", "--port", NULL, OPT_INT, F(port), 0, 65535, "port (3000; 0 picks a free one)"},
    {"GPU_LAYERS", "--gpu-layers", "-ngl", OPT_INT, F(gpu_layers), 0, 100000,
     "layers on the GPU (0)"},
    {"CONTEXT_SIZE", "--ctx-size", "-c", OPT_INT, F(n_ctx), 1, 1 << 24,
     "context per sequence (4096)"},
    {"BATCH_SIZE", "--batch-size", "-b", OPT_INT, F(n_batch), 1, 1 << 20,
     "tokens per forward step (512)"},
    {"THREADS", "--threads", "-t", OPT_INT, F(n_threads), 0, 4096, "CPU threads (0: all)"},
    {"BACKEND", "--backend", NULL, OPT_STR, 0, 0, 0, 0, "ref, cpu or cuda (cpu)"},
    {"KV_TYPE", "--kv-type", NULL, OPT_STR, 0, 0, 0, 0,
     "K/V cache: f32 or f16 (f16 on GPU layers, f32 on CPU ones)"},
    {"ENABLE_CORS", "--cors", NULL, OPT_BOOL, F(cors), 0, 1, "CORS headers (false)"},
    {"CORS_ORIGINS", "--cors-origins", NULL, OPT_STR, F(cors_origins), 0, 0,
     "allowed origins, comma-separated (*)"},
    {"CORS_MANAGEMENT", "--cors-management", NULL, OPT_BOOL, F(cors_manage), 0, 1,
     "CORS on models/list|load|reload|unload too (false)"},
    {"ALLOWED_HOSTS", "--allowed-hosts", NULL, OPT_STR, F(allowed_hosts), 0, 0,
     "Host names accepted besides HOST and addresses, comma-separated (none)"},
    {"ENABLE_RATE_LIMIT", "--rate-limit", NULL, OPT_BOOL, F(rate_limit), 0, 1,
     "per-address rate limit (false)"},
    {"RATE_LIMIT_MAX", "--rate-limit-max", NULL, OPT_INT, F(rate_limit_max), 1, 1 << 30,
     "requests per window (60)"},
    {"RATE_LIMIT_WINDOW", "--rate-limit-window", NULL, OPT_INT, F(rate_limit_window), 1, 1 << 30,
     "window in seconds (60)"},
    {"MAX_QUEUE_SIZE", "--max-queue", NULL, OPT_INT, F(max_queue), 0, 1 << 20,
     "requests waiting; past it 503 (100)"},
    {"ENABLE_CONTINUOUS_BATCHING", "--continuous-batching", NULL, OPT_BOOL, F(continuous), 0, 1,
     "decode several sequences per step (true)"},
    {"MAX_BATCH_SIZE", "--max-batch", NULL, OPT_INT, F(max_batch), 1, 4096,
     "sequences per step (8)"},
    {"DETERMINISTIC", "--deterministic", NULL, OPT_BOOL, F(deterministic), 0, 1,
     "batch-invariant GPU kernels: replies do not depend on other requests (false; costs GPU "
     "prefill speed)"},
    {"BATCH_TIMEOUT_MS", "--batch-timeout-ms", NULL, OPT_INT, F(batch_timeout_ms), 0, 60000,
     "wait to fill a batch when idle (0)"},
    {"MODELS_DIR", "--models-dir", NULL, OPT_STR, F(models_dir), 0, 0,
     "folder for models/list and models/load (./models, else ../models)"},
    {"API_KEY", "--api-key", NULL, OPT_STR, F(api_key), 0, 0, "Bearer key (none)"},
    {"MAX_BODY_SIZE", "--max-body", NULL, OPT_LONG, F(max_body), 1, 1L << 34,
     "request body limit in bytes (4194304)"},
    {"MAX_CONNECTIONS", "--max-connections", NULL, OPT_INT, F(max_conns), 1, 1 << 16,
     "open connections in all (1024)"},
    {"MAX_CONNECTIONS_PER_ADDRESS", "--max-conn-per-address", NULL, OPT_INT, F(max_conns_per_addr),
     0, 1 << 16, "open connections from one client address (128; 0: no limit)"},
    {"HEADER_TIMEOUT", "--header-timeout", NULL, OPT_INT, F(header_timeout), 0, 86400,
     "seconds a request's headers may take, also between kept-alive requests (60; 0: off)"},
    {"BODY_TIMEOUT", "--body-timeout", NULL, OPT_INT, F(body_timeout), 0, 86400,
     "seconds a request's body may take after its headers (60; 0: off)"},
    {"PROMPT_CACHE_MB", "--cache-mb", NULL, OPT_INT, F(cache_mb), 0, 1 << 24,
     "prompt cache in host memory, MiB (1024; 0: off)"},
    {"MMAP", "--mmap", NULL, OPT_BOOL, F(mmap), 0, 1,
     "map the model file (true); --no-mmap reads it into memory"},
    {"SHUTDOWN_GRACE_MS", "--shutdown-grace-ms", NULL, OPT_INT, F(grace_ms), 0, 3600000,
     "how long SIGTERM lets requests finish (10000)"},
    {"EXSA_TEST_STEP_DELAY_MS", "--test-step-delay-ms", NULL, OPT_INT, F(step_delay_ms), 0, 10000,
     "tests only: sleep after each scheduler step (0)"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

void srv_config_default(struct srv_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 3000;
    c->n_ctx = 4096;
    c->n_batch = 512;
    c->backend = EXSA_BACKEND_CPU;
    snprintf(c->cors_origins, sizeof c->cors_origins, "*");
    c->rate_limit_max = 60;
    c->rate_limit_window = 60;
    c->max_queue = 100;
    c->continuous = true;
    c->max_batch = 8;
    c->batch_timeout_ms =
        0; /* a lone request starts at once (continuous batching admits later ones) */
    c->max_body = 4L << 20;
    c->grace_ms = 10000;
    c->mmap = true;
    c->cache_mb = 1024;
    c->max_conns = 1024;
    c->max_conns_per_addr = 128;
    c->header_timeout = 60;
    c->body_timeout = 60;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i]))
            return *out = true, 0;
        if (!strcasecmp(s, no[i]))
            return *out = false, 0;
    }
    return -1;
}

/* Stores value (from env or a flag called name) into c per o. */
static int set_opt(struct srv_config *c, const struct opt *o, const char *name, const char *v,
                   char *err, size_t errlen)
{
    char *p = (char *)c + o->off;
    if (!strcmp(o->env, "BACKEND")) {
        int b = !strcmp(v, "ref") ? 0 : !strcmp(v, "cpu") ? 1 : !strcmp(v, "cuda") ? 2 : -1;
        if (b < 0)
            goto bad;
        c->backend = b;
        return 0;
    }
    if (!strcmp(o->env, "KV_TYPE")) {
        int t = !strcmp(v, "f32") ? EXSA_KV_F32 : !strcmp(v, "f16") ? EXSA_KV_F16 : -1;
        if (t < 0)
            goto bad;
        c->kv_type = t;
        return 0;
    }
    if (o->type == OPT_STR) {
        if (strlen(v) >= o->size) {
            snprintf(err, errlen, "%s: the value is longer than %zu bytes", name, o->size - 1);
            return EXSA_EINVAL;
        }
        memcpy(p, v, strlen(v) + 1);
        return 0;
    }
    if (o->type == OPT_BOOL)
        return parse_bool(v, (bool *)p) == 0
                   ? 0
                   : (snprintf(err, errlen, "%s: expected true or false, got '%s'", name, v),
                      EXSA_EINVAL);
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < o->lo || n > o->hi)
        goto bad;
    if (o->type == OPT_LONG)
        *(long *)p = n;
    else
        *(int *)p = (int)n;
    return 0;
bad:
    if (o->type == OPT_INT || o->type == OPT_LONG)
        snprintf(err, errlen, "%s: expected an integer in [%ld, %ld], got '%s'", name, o->lo, o->hi,
                 v);
    else
        snprintf(err, errlen, "%s: '%s' is not a valid value", name, v);
    return EXSA_EINVAL;
}

int srv_config_from_env(struct srv_config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (!v || !*v)
            continue;
        int rc = set_opt(c, &opts[i], opts[i].env, v, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void srv_config_usage(void)
{
    fprintf(stderr, "usage: exsa serve [-m model.gguf] [options]\n"
                    "Every option has an environment variable; flags win.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char names[64];
        snprintf(names, sizeof names, "%s%s%s%s", opts[i].flag, opts[i].flag2 ? ", " : "",
                 opts[i].flag2 ? opts[i].flag2 : "", opts[i].type == OPT_BOOL ? "" : " V");
        fprintf(stderr, "  %-26s %-27s %s\n", names, opts[i].env, opts[i].help);
    }
    fprintf(stderr, "  %-26s %-27s %s\n", "--no-cors, --no-rate-limit", "", "turn a switch off");
    fprintf(stderr, "  %-26s %-27s %s\n", "--no-continuous-batching, --no-mmap, --no-deterministic",
            "", "");
}

/* Finds the option of flag arg ("--x", "--x=v" or "--no-x"); *neg tells "--no-". */
static const struct opt *find_flag(const char *arg, size_t len, bool *neg)
{
    *neg = false;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < N_OPTS; i++) {
            const char *f = opts[i].flag, *f2 = opts[i].flag2;
            if (pass == 0 && ((strlen(f) == len && !strncmp(arg, f, len)) ||
                              (f2 && strlen(f2) == len && !strncmp(arg, f2, len))))
                return &opts[i];
            if (pass == 1 && opts[i].type == OPT_BOOL && len == strlen(f) + 3 &&
                !strncmp(arg, "--no-", 5) && !strncmp(arg + 5, f + 2, len - 5)) {
                *neg = true;
                return &opts[i];
            }
        }
    }
    return NULL;
}

int srv_config_from_args(struct srv_config *c, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            srv_config_usage();
            return 1;
        }
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        bool neg;
        const struct opt *o = find_flag(a, len, &neg);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (exsa serve --help lists them)", a);
            return EXSA_EINVAL;
        }
        const char *v;
        if (neg) {
            v = "false";
        } else if (eq) {
            v = eq + 1;
        } else if (o->type == OPT_BOOL && (i + 1 >= argc || parse_bool(argv[i + 1], &(bool){0}))) {
            v = "true"; /* a bare switch */
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "option %s needs a value", a);
            return EXSA_EINVAL;
        }
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)len, a);
        int rc = set_opt(c, o, name, v, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}
