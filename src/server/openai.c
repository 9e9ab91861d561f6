/*
 * openai.c: the OpenAI routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.
 * The two generating routes are job_route() of their kind: body parsed and checked by
 * request.c (400 naming the parameter), the model borrowed just long enough to tokenize (chat
 * template for chat; plain text or token ids for completions), then job_run(). Unknown
 * parameters are logged, not fatal.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server.h"

int route_chat(struct srv_conn *c)
{
    return job_route(c, JOB_CHAT);
}

int route_completions(struct srv_conn *c)
{
    return job_route(c, JOB_COMPLETION);
}

int route_models(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    if (st.loaded) {
        char id[256];
        srv_model_id(st.model_path, id, sizeof id);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", id);
        cJSON_AddStringToObject(e, "object", "model");
        cJSON_AddNumberToObject(e, "created", (double)(long)c->srv->t_start_wall);
        cJSON_AddStringToObject(e, "owned_by", "exsa");
        cJSON_AddNumberToObject(e, "context_length", st.n_ctx);
        cJSON_AddItemToArray(data, e);
    }
    return srv_reply_json(c, 200, o);
}
