/*
 * exsa_api.c: the Exsa routes (EXSA-API.md): health, status, model info / active, generate,
 * models list / load / reload / unload; and /metrics, /tokenize, /detokenize. models/load only
 * takes a `.gguf` file whose folder, after realpath() resolves symlinks and `..`, is the models
 * folder or inside it (the file itself may be a symlink the operator placed there); anything
 * else is a 403 or 404. A load or reload reads the new model beside the one being served, which
 * answers meanwhile (sched_load); unload ends what runs at once.
 */
#include <dirent.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "server.h"

static cJSON *model_info_json(const struct sched_stats *st)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_path", st->model_path);
    cJSON_AddNumberToObject(o, "context_size", st->n_ctx);
    cJSON_AddNumberToObject(o, "gpu_layers", st->gpu_layers);
    return o;
}

void srv_health_state(const struct sched_stats *st, bool shutting_down, struct srv_health *h)
{
    *h = (struct srv_health){200, "healthy", NULL, NULL};
    if (shutting_down || st->closing)
        *h = (struct srv_health){503, "shutting_down", "the server is shutting down",
                                 "shutting_down"};
    else if (!st->loaded && st->loading) /* a replacement loads beside a loaded model: 200 */
        *h = (struct srv_health){503, "loading", "a model is being loaded", "model_loading"};
    else if (!st->loaded)
        *h = (struct srv_health){503, "no_model", "no model is loaded; POST /v1/models/load first",
                                 "model_not_loaded"};
    else if (st->queue_full)
        h->status = "overloaded"; /* still 200: the queue drains by itself */
}

int route_health(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    struct srv_health h;
    srv_health_state(&st, c->srv->shutting_down, &h);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", h.status);
    cJSON_AddStringToObject(o, "version", EXSA_VERSION);
    cJSON_AddBoolToObject(o, "model_loaded", st.loaded);
    if (st.loaded && c->authed) /* with API_KEY set, the path is for those with the key */
        cJSON_AddStringToObject(o, "model_path", st.model_path);
    else
        cJSON_AddNullToObject(o, "model_path");
    cJSON_AddBoolToObject(o, "model_loading", st.loading);
    cJSON_AddNumberToObject(o, "context_size", st.n_ctx);
    cJSON_AddNumberToObject(o, "gpu_layers", st.gpu_layers);
    cJSON_AddNumberToObject(o, "active_requests", st.active);
    cJSON_AddNumberToObject(o, "queue_size", st.queued);
    cJSON_AddNumberToObject(o, "queue_capacity", st.max_queue);
    cJSON_AddNumberToObject(o, "max_batch_size", st.max_batch);
    cJSON_AddNumberToObject(o, "uptime_seconds", (long)(sched_now() - c->srv->t_start));
    if (h.reason) { /* not ready: also OpenAI's error shape, for clients that read only that */
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(e, "message", h.reason);
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddNullToObject(e, "param");
        cJSON_AddStringToObject(e, "code", h.code);
        c->retry_after = 1;
    }
    return srv_reply_json(c, h.http_status, o);
}

/* The running sequences as a JSON array (the shape of /slots; /v1/status carries it too). */
static cJSON *slots_json(struct srv_conn *c, const struct sched_stats *st)
{
    int max = st->max_batch > 0 ? st->max_batch : 1;
    struct sched_slot *sl = calloc((size_t)max, sizeof *sl);
    int n = sl ? sched_get_slots(c->srv->sched, sl, max) : 0;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n && i < max; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", sl[i].id);
        cJSON_AddStringToObject(o, "state", sl[i].state);
        cJSON_AddTrueToObject(o, "is_processing");
        cJSON_AddNumberToObject(o, "n_ctx", st->n_ctx);
        cJSON_AddNumberToObject(o, "n_prompt_tokens", sl[i].n_prompt);
        cJSON_AddNumberToObject(o, "n_past", sl[i].n_past);
        cJSON_AddNumberToObject(o, "n_decoded", sl[i].n_decoded);
        cJSON_AddNumberToObject(o, "n_cached", sl[i].n_cached);
        cJSON_AddNumberToObject(o, "seconds", (double)(long)(sl[i].seconds * 1000) / 1000);
        cJSON_AddItemToArray(a, o);
    }
    free(sl);
    return a;
}

int route_status(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", st.closing ? "shutting_down" : "running");
    cJSON_AddNumberToObject(o, "queue_capacity", st.max_queue);
    cJSON_AddNumberToObject(o, "queue_size", st.queued);
    cJSON_AddNumberToObject(o, "active_requests", st.active);
    cJSON_AddBoolToObject(o, "model_loaded", st.loaded);
    cJSON_AddBoolToObject(o, "model_loading", st.loading);
    cJSON_AddItemToObject(o, "slots", slots_json(c, &st));
    return srv_reply_json(c, 200, o);
}

int route_slots(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    return srv_reply_json(c, 200, slots_json(c, &st));
}

int route_model_info(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    if (!st.loaded)
        return srv_reply_error(c, 404, "invalid_request_error", NULL, "model_not_loaded",
                               "no model is loaded; POST /v1/models/load first");
    cJSON *o = model_info_json(&st);
    unsigned gen;
    struct exsa_model *m = sched_model_acquire(c->srv->sched, &gen, NULL);
    if (m) {
        const struct exsa_model_info *mi = exsa_model_info(m);
        cJSON_AddStringToObject(o, "arch", mi->arch ? mi->arch : "");
        cJSON_AddStringToObject(o, "name", mi->name ? mi->name : "");
        cJSON_AddNumberToObject(o, "n_layers", mi->n_layers);
        cJSON_AddNumberToObject(o, "vocab_size", mi->vocab_size);
        cJSON_AddNumberToObject(o, "n_ctx_train", mi->n_ctx_train);
        cJSON_AddNumberToObject(o, "n_params", (double)mi->n_params);
        if (chat_of_model(m))
            cJSON_AddStringToObject(o, "chat_template",
                                    chat_variant_name(chat_template_variant(chat_of_model(m))));
        sched_model_release(c->srv->sched);
    }
    return srv_reply_json(c, 200, o);
}

int route_generate(struct srv_conn *c)
{
    return job_route(c, JOB_GENERATE);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_gguf_name(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && !strcmp(name + n - 5, ".gguf");
}

int route_models_list(struct srv_conn *c)
{
    const char *root = c->srv->models_root;
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "models");
    cJSON_AddStringToObject(o, "models_dir", root);
    DIR *d = root[0] ? opendir(root) : NULL;
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[PATH_MAX * 2];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        if (!is_gguf_name(e->d_name) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (n == cap) {
            char **t = realloc(names, sizeof(char *) * (cap = cap ? cap * 2 : 16));
            if (!t)
                break;
            names = t;
        }
        if ((names[n] = strdup(path)))
            n++;
    }
    if (d)
        closedir(d);
    qsort(names, n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(names[i]));
        free(names[i]);
    }
    free(names);
    return srv_reply_json(c, 200, o);
}

/* Resolves a requested model path into out (PATH_MAX): relative paths start at the models
 * folder. Returns 0, or -1 after replying 400 / 403 / 404. */
static int resolve_model(struct srv_conn *c, const char *want, char *out)
{
    const char *root = c->srv->models_root;
    if (!root[0])
        return srv_reply_error(c, 400, "invalid_request_error", "model_path", "no_models_dir",
                               "there is no models folder (set MODELS_DIR)"),
               -1;
    char joined[PATH_MAX * 2 + 2], dir[PATH_MAX * 2 + 2], rdir[PATH_MAX];
    snprintf(joined, sizeof joined, want[0] == '/' ? "%s" : "%s/%s", want[0] == '/' ? want : root,
             want);
    char *slash = strrchr(joined, '/');
    const char *base = slash + 1;
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - joined), joined);
    if (!is_gguf_name(base))
        return srv_reply_error(c, 400, "invalid_request_error", "model_path", "invalid_value",
                               "only .gguf files can be loaded"),
               -1;
    if (!realpath(dir[0] ? dir : "/", rdir))
        return srv_reply_error(c, 404, "invalid_request_error", "model_path", "model_not_found",
                               "no such folder: %s", dir),
               -1;
    size_t rl = strlen(root);
    /* inside: root itself or below it (root "/" is the one that ends with a slash) */
    if (strncmp(rdir, root, rl) != 0 || (rdir[rl] != 0 && rdir[rl] != '/' && root[rl - 1] != '/'))
        return srv_reply_error(c, 403, "permission_error", "model_path", "outside_models_dir",
                               "'%s' is outside the models folder %s", want, root),
               -1;
    struct stat sb;
    if (snprintf(out, PATH_MAX, "%s/%s", rdir, base) >= PATH_MAX || stat(out, &sb) != 0 ||
        !S_ISREG(sb.st_mode))
        return srv_reply_error(c, 404, "invalid_request_error", "model_path", "model_not_found",
                               "no model file %s in %s", base, rdir),
               -1;
    return 0;
}

/* The answer of load, reload and unload. */
static int swap_reply(struct srv_conn *c, int rc, const char *err, const char *what)
{
    if (rc < 0) {
        int status = rc == EXSA_ECANCELLED ? 503 : rc == EXSA_ENOMEM ? 507 : 400;
        if (status == 503)
            c->retry_after = 1;
        return srv_reply_error(c, status, status == 400 ? "invalid_request_error" : "server_error",
                               "model_path", "model_load_failed", "%s", err);
    }
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddTrueToObject(o, "success");
    char msg[PATH_MAX + 700];
    /* on success err holds a note when the swap could not keep the old model serving */
    snprintf(msg, sizeof msg, "%s %s%s%s", what, st.loaded ? st.model_path : "",
             err && err[0] ? ": " : "", err ? err : "");
    cJSON_AddStringToObject(o, "message", msg);
    if (st.loaded)
        cJSON_AddItemToObject(o, "model_info", model_info_json(&st));
    else
        cJSON_AddNullToObject(o, "model_info");
    return srv_reply_json(c, 200, o);
}

int route_models_load(struct srv_conn *c)
{
    struct job j;
    struct srv_err e;
    char path[PATH_MAX], err[600] = "";
    int ret = MHD_YES;
    if (job_parse(JOB_LOAD, c->body, c->body_len, &j, &e) < 0) {
        ret = srv_reply_err(c, &e);
    } else if (resolve_model(c, j.load_path, path) == 0) {
        int rc = sched_load(c->srv->sched, path, j.load_gpu_layers, j.load_n_ctx, err, sizeof err);
        fprintf(stderr, "exsa serve: load %s: %s\n", path, err[0] ? err : "ok");
        ret = swap_reply(c, rc, err, "loaded");
    }
    job_free(&j);
    return ret;
}

int route_models_reload(struct srv_conn *c)
{
    char err[600] = "";
    int rc = sched_load(c->srv->sched, NULL, -1, -1, err, sizeof err);
    fprintf(stderr, "exsa serve: reload: %s\n", err[0] ? err : "ok");
    return swap_reply(c, rc, err, "reloaded");
}

int route_models_unload(struct srv_conn *c)
{
    int rc = sched_unload(c->srv->sched);
    fprintf(stderr, "exsa serve: unload: %s\n", rc < 0 ? exsa_strerror(rc) : "ok");
    return swap_reply(c, rc, rc < 0 ? "the server is shutting down" : "", "unloaded");
}

int route_metrics(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    int n_conns;
    unsigned long long n_timeouts;
    conntrack_stats(c->srv->ct, &n_conns, &n_timeouts);
    char *s =
        metrics_render(c->srv->metrics, &st, sched_now() - c->srv->t_start, n_conns, n_timeouts);
    return srv_reply_take(c, "text/plain; version=0.0.4; charset=utf-8", s);
}

int route_tokenize(struct srv_conn *c)
{
    struct job j;
    struct srv_err e;
    unsigned gen;
    int ret;
    struct exsa_model *m = job_open(c, JOB_TOKENIZE, &j, &gen, NULL, &e);
    if (m) {
        int rc = job_tokenize(m, j.text, j.add_special, j.parse_special, &j.prompt, &j.n_prompt);
        sched_model_release(c->srv->sched);
        if (rc < 0)
            srv_err_set(&e, 400, "content", "invalid_value", "cannot tokenize: %s",
                        exsa_strerror(rc));
    }
    if (e.status) {
        ret = srv_reply_err(c, &e);
    } else {
        cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tokens");
        for (int i = 0; i < j.n_prompt; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(j.prompt[i]));
        ret = srv_reply_json(c, 200, o);
    }
    job_free(&j);
    return ret;
}

/* The pieces of ids[0..n) in a new string (*n_out bytes; pieces may hold NUL bytes); NULL
 * with the 400 in e when an id is not below n_vocab, or out of memory. */
static char *detokenize(struct exsa_model *m, const int32_t *ids, int n, size_t *n_out,
                        struct srv_err *e)
{
    int n_vocab = exsa_model_info(m)->vocab_size;
    size_t len = 0, cap = 256;
    char *s = malloc(cap), piece[256];
    for (int i = 0; s && i < n; i++) {
        int k = ids[i] < n_vocab ? exsa_token_to_piece(m, ids[i], false, piece, sizeof piece) : -1;
        if (k < 0 || k > (int)sizeof piece)
            return free(s),
                   srv_err_set(e, 400, "tokens", "invalid_value",
                               "'tokens' must hold "
                               "integer ids below %d",
                               n_vocab),
                   NULL;
        if (len + k + 1 > cap) {
            char *t = realloc(s, cap = (len + k + 1) * 2);
            if (!t)
                free(s);
            s = t;
        }
        if (s)
            memcpy(s + len, piece, k), len += k;
    }
    if (!s)
        return srv_err_set(e, 503, NULL, NULL, "out of memory"), NULL;
    s[len] = 0;
    *n_out = len;
    return s;
}

int route_detokenize(struct srv_conn *c)
{
    struct job j;
    struct srv_err e;
    unsigned gen;
    char *s = NULL;
    size_t len = 0;
    struct exsa_model *m = job_open(c, JOB_DETOKENIZE, &j, &gen, NULL, &e);
    if (m) {
        s = detokenize(m, j.prompt, j.n_prompt, &len, &e);
        sched_model_release(c->srv->sched);
    }
    int ret;
    if (e.status) {
        ret = srv_reply_err(c, &e);
    } else {
        cJSON *o = cJSON_CreateObject();
        char *q = srv_json_quote(s, len); /* bytes that are not UTF-8 become U+FFFD */
        if (q)
            cJSON_AddRawToObject(o, "content", q);
        free(q);
        ret = srv_reply_json(c, 200, o);
    }
    free(s);
    job_free(&j);
    return ret;
}
