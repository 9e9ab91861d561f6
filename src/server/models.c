/*
 * models.c: which model a request's "model" field names, and the OpenAI model routes
 * (GET /v1/models, GET /v1/models/{id}). One model is served at a time; as llama-server does,
 * it answers any name a client sends (clients send "gpt-4o" or a Hugging Face repo id), with
 * its real id in the reply, except a name of another .gguf file of MODELS_DIR: that one asks
 * for a model this server could load, so the answer is a 404 that says how. GET
 * /v1/models/{id} answers only the served model's names (OpenAI's 404 otherwise). Called by
 * job.c and embed.c (srv_model_check) and http.c's route table.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "server.h"

#define MODELS_PREFIX "/v1/models/"

/* Whether path names a regular file whose real path is real (PATH_MAX) after resolving. */
static bool same_file(const char *path, const char *real)
{
    char r[PATH_MAX];
    return real[0] && realpath(path, r) && !strcmp(r, real);
}

enum srv_model_match srv_model_match(const struct server *srv, const char *want, const char *served)
{
    if (!want || !want[0])
        return SRV_MODEL_SERVED;
    char id[256];
    srv_model_id(served, id, sizeof id);
    const char *base = strrchr(served, '/');
    base = base ? base + 1 : served;
    if (!strcmp(want, id) || !strcmp(want, base) || !strcmp(want, served))
        return SRV_MODEL_SERVED;
    /* only plain file names are looked up in MODELS_DIR (as /v1/models/list lists them) */
    const char *root = srv->models_root;
    if (!root[0] || strchr(want, '/') || !strcmp(want, ".") || !strcmp(want, ".."))
        return SRV_MODEL_UNKNOWN;
    size_t n = strlen(want);
    bool has_ext = n > 5 && !strcmp(want + n - 5, ".gguf");
    char path[PATH_MAX * 2], real[PATH_MAX];
    struct stat sb;
    if (snprintf(path, sizeof path, "%s/%s%s", root, want, has_ext ? "" : ".gguf") >=
            (int)sizeof path ||
        stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return SRV_MODEL_UNKNOWN;
    if (!realpath(served, real))
        real[0] = 0;
    return same_file(path, real) ? SRV_MODEL_SERVED : SRV_MODEL_OTHER;
}

int srv_model_check(const struct server *srv, const char *want, const char *served,
                    struct srv_err *e)
{
    if (srv_model_match(srv, want, served) != SRV_MODEL_OTHER)
        return 0;
    char id[256];
    srv_model_id(served, id, sizeof id);
    size_t n = strlen(want);
    bool has_ext = n > 5 && !strcmp(want + n - 5, ".gguf");
    return srv_err_set(e, 404, "model", "model_not_found",
                       "the model '%s' is a file of MODELS_DIR but is not loaded (this server "
                       "serves '%s'); load it first: POST /v1/models/load with "
                       "{\"model_path\": \"%s%s\"}",
                       want, id, want, has_ext ? "" : ".gguf");
}

/* OpenAI's model object of the served model (st->loaded). */
static cJSON *model_object(const struct srv_conn *c, const struct sched_stats *st)
{
    char id[256];
    srv_model_id(st->model_path, id, sizeof id);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "id", id);
    cJSON_AddStringToObject(e, "object", "model");
    cJSON_AddNumberToObject(e, "created", (double)(long)c->srv->t_start_wall);
    cJSON_AddStringToObject(e, "owned_by", "exsa");
    cJSON_AddNumberToObject(e, "context_length", st->n_ctx);
    return e;
}

int route_models(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    if (st.loaded)
        cJSON_AddItemToArray(data, model_object(c, &st));
    return srv_reply_json(c, 200, o);
}

int route_model_get(struct srv_conn *c)
{
    const char *want = c->url + strlen(MODELS_PREFIX);
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    enum srv_model_match mm =
        st.loaded ? srv_model_match(c->srv, want, st.model_path) : SRV_MODEL_UNKNOWN;
    if (mm == SRV_MODEL_SERVED)
        return srv_reply_json(c, 200, model_object(c, &st));
    if (mm == SRV_MODEL_OTHER) {
        struct srv_err e = {0};
        srv_model_check(c->srv, want, st.model_path, &e);
        return srv_reply_err(c, &e);
    }
    return srv_reply_error(c, 404, "invalid_request_error", "model", "model_not_found",
                           "the model '%s' does not exist%s", want,
                           st.loaded ? "" : " (no model is loaded)");
}
