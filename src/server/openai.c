/*
 * openai.c: the OpenAI generating routes: POST /v1/chat/completions, POST /v1/completions (the
 * model routes are in models.c, embeddings in embed.c).
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
