/*
 * fuzz_request.c: a libFuzzer target over job_parse (src/server/request.c), the body parser of
 * every route that takes one (chat, completions, generate, tokenize, detokenize, models/load):
 * each input is parsed as each kind. It must give either a job that keeps the caps and
 * invariants of server.h (messages with a known role and a content, stop strings non-empty,
 * token ids >= 0), or an error with a status (400, or 503 when out of memory) and a message;
 * never a crash, a leak (ASan) or an over-read of the body, which is not NUL-terminated here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "server/server.h"

static const char *const roles[] = {"system", "user", "assistant", "tool"};

static bool known_role(const char *r)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(r, roles[i]))
            return true;
    return false;
}

/* Aborts when the parsed job j breaks an invariant. */
static void check_job(const struct job *j)
{
    if (j->kind == JOB_CHAT && (j->n_msgs < 1 || j->n_msgs > JOB_MAX_MESSAGES))
        abort();
    for (int i = 0; i < j->n_msgs; i++)
        if (!known_role(j->msgs[i].role) || !j->msgs[i].content)
            abort();
    if ((j->kind == JOB_COMPLETION && !j->text && !j->ids_given) ||
        ((j->kind == JOB_GENERATE || j->kind == JOB_TOKENIZE) && !j->text) ||
        (j->kind == JOB_LOAD && (!j->load_path || !j->load_path[0])))
        abort();
    if (j->n_prompt < 0 || j->n_prompt > JOB_MAX_IDS || (j->n_prompt && !j->prompt))
        abort();
    for (int i = 0; i < j->n_prompt; i++)
        if (j->prompt[i] < 0)
            abort();
    if (j->gp.n_stop < 0 || j->gp.n_stop > JOB_MAX_STOP)
        abort();
    for (int i = 0; i < j->gp.n_stop; i++)
        if (!j->gp.stop[i] || !j->gp.stop[i][0])
            abort();
    if (j->gp.sp.n_logit_bias < 0 || j->gp.sp.n_logit_bias > JOB_MAX_LOGIT_BIAS)
        abort();
    for (int i = 0; i < j->gp.sp.n_logit_bias; i++)
        if (j->bias_id[i] < 0 || !(j->bias[i] >= -100 && j->bias[i] <= 100))
            abort();
    /* issue 10's fields: choices, logprobs, and a forced tool choice only with tools and no
     * response_format (both would constrain the same reply) */
    if (j->n < 1 || j->n > JOB_MAX_N ||
        (j->kind != JOB_CHAT && j->kind != JOB_COMPLETION && j->n != 1))
        abort();
    if (j->gp.top_logprobs < 0 || j->gp.top_logprobs > SAMPLER_MAX_TOP_LOGPROBS ||
        (j->gp.top_logprobs && !j->gp.logprobs))
        abort();
    if ((j->tool_mode == JOB_TOOLS_REQUIRED || j->tool_mode == JOB_TOOLS_NAMED) &&
        (!j->tools || j->response_format))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int kind = JOB_CHAT; kind <= JOB_LOAD; kind++) {
        struct job j;
        struct srv_err e;
        int rc = job_parse((enum job_kind)kind, (const char *)data, size, &j, &e);
        if (rc == 0 && e.status == 0)
            check_job(&j);
        else if (rc != -1 || (e.status != 400 && e.status != 503) || !e.message[0])
            abort();
        job_free(&j);
    }
    return 0;
}
