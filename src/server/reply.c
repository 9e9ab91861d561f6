/*
 * reply.c: OpenAI's JSON for one choice of a chat or completions reply, built from what the
 * scheduler's channel gives (struct sched_chunk: text pieces and, when asked for, each token's
 * logprobs). A choice runs its text through the reasoning parser (a template that thinks:
 * <think>...</think> goes to reasoning_content) and then the tool-call parser (tools offered:
 * LFM2 call blocks become tool_calls; a block that does not parse stays content), so streaming
 * and whole replies say the same. Streaming appends chunk objects to a list the caller sends as
 * SSE events: a choice's deltas carry the logprobs of the tokens sampled since its last event,
 * and a tool call goes out as OpenAI's deltas (index, id, type and name first, then the
 * arguments). Called by job.c; not thread-safe (one connection thread per reply).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "reasoning.h"
#include "server.h"
#include "strbuf.h"
#include "toolcall.h"

struct reply_choice {
    const struct reply_meta *rm;
    int index;
    struct rsn *rsn;      /* the template thinks, else NULL */
    struct tc_parser *tc; /* tools offered (tool_choice not none), else NULL */
    struct sb content, reasoning;
    int n_calls;        /* calls kept (at most rm->max_calls) */
    cJSON *lp;          /* logprobs not sent yet (streaming), or all of them */
    int n_lp;           /* tokens in lp */
    size_t text_offset; /* completions: characters of the tokens so far */
    bool began, done;
    enum gen_finish finish;
    int err; /* EXSA_ENOMEM once a parser ran out of memory */
};

/* ---- the pieces of every reply ------------------------------------------------------------- */

void reply_meta_of(struct reply_meta *rm, const struct job *j)
{
    memset(rm, 0, sizeof *rm);
    rm->kind = j->kind;
    snprintf(rm->id, sizeof rm->id, "%s", j->id);
    snprintf(rm->model_id, sizeof rm->model_id, "%s", j->model_id);
    rm->created = j->created;
    rm->include_usage = j->include_usage;
    rm->logprobs = j->gp.logprobs;
    rm->reasoning = j->reasoning;
    rm->tool_calls = j->kind == JOB_CHAT && j->tools && j->tool_mode != JOB_TOOLS_NONE;
    rm->max_calls = j->tool_mode == JOB_TOOLS_NAMED || !j->parallel_tool_calls ? 1 : INT32_MAX;
}

cJSON *reply_head(const struct reply_meta *rm, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", rm->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)rm->created);
    cJSON_AddStringToObject(o, "model", rm->model_id);
    cJSON_AddStringToObject(o, "system_fingerprint", "exsa-" EXSA_VERSION);
    return o;
}

cJSON *reply_usage(int n_prompt, int n_gen, int n_cached)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", n_prompt + n_gen);
    /* as OpenAI's: prompt tokens restored from the prompt cache, not computed */
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", n_cached);
    return u;
}

void reply_add_text(cJSON *o, const char *key, const char *text, size_t len)
{
    char *q = srv_json_quote(text, len);
    if (q)
        cJSON_AddRawToObject(o, key, q);
    else
        cJSON_AddStringToObject(o, key, "");
    free(q);
}

/* ---- logprobs ------------------------------------------------------------------------------ */

/* A logprob as JSON can hold it: a token that could not be drawn (-inf) reads -9999, as
 * OpenAI writes it. */
static double lp_value(float lp)
{
    return isfinite(lp) ? lp : -9999.0;
}

/* Chat's {token, logprob, bytes} of one logprob. */
static cJSON *chat_lp(const struct sched_chunk *ch, const struct sched_lp *l)
{
    const char *b = ch->lp_bytes + l->off;
    cJSON *o = cJSON_CreateObject(), *bytes;
    reply_add_text(o, "token", b, l->len);
    cJSON_AddNumberToObject(o, "logprob", lp_value(l->logprob));
    bytes = cJSON_AddArrayToObject(o, "bytes");
    for (uint32_t i = 0; i < l->len; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)b[i]));
    return o;
}

/* A token's text as a JSON-safe C string (invalid UTF-8 as U+FFFD), malloc'd. */
static char *token_text(const struct sched_chunk *ch, const struct sched_lp *l)
{
    char *q = srv_json_quote(ch->lp_bytes + l->off, l->len);
    cJSON *s = q ? cJSON_Parse(q) : NULL;
    char *t = s && cJSON_IsString(s) ? strdup(s->valuestring) : strdup("");
    cJSON_Delete(s);
    free(q);
    return t;
}

/* Appends token t of chunk ch to c->lp: chat's content[] entry, or the completions' legacy
 * columns (tokens, token_logprobs, top_logprobs as {token: logprob}, text_offset). */
static void add_token_lp(struct reply_choice *c, const struct sched_chunk *ch,
                         const struct sched_tok *t)
{
    if (!c->lp)
        c->lp = c->rm->kind == JOB_CHAT ? cJSON_CreateArray() : cJSON_CreateObject();
    if (!c->lp)
        return;
    if (c->rm->kind == JOB_CHAT) {
        cJSON *e = chat_lp(ch, &t->tok), *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < t->n_top; k++)
            cJSON_AddItemToArray(top, chat_lp(ch, &ch->lp_top[t->top + k]));
        cJSON_AddItemToArray(c->lp, e);
    } else {
        static const char *const cols[] = {"tokens", "token_logprobs", "top_logprobs",
                                           "text_offset"};
        cJSON *col[4];
        for (int k = 0; k < 4; k++)
            if (!(col[k] = cJSON_GetObjectItemCaseSensitive(c->lp, cols[k])))
                col[k] = cJSON_AddArrayToObject(c->lp, cols[k]);
        char *text = token_text(ch, &t->tok);
        cJSON_AddItemToArray(col[0], cJSON_CreateString(text ? text : ""));
        cJSON_AddItemToArray(col[1], cJSON_CreateNumber(lp_value(t->tok.logprob)));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < t->n_top; k++) {
            char *alt = token_text(ch, &ch->lp_top[t->top + k]);
            if (alt && !cJSON_GetObjectItemCaseSensitive(top, alt))
                cJSON_AddNumberToObject(top, alt, lp_value(ch->lp_top[t->top + k].logprob));
            free(alt);
        }
        cJSON_AddItemToArray(col[2], top);
        cJSON_AddItemToArray(col[3], cJSON_CreateNumber((double)c->text_offset));
        for (const char *p = text ? text : ""; *p; p++) /* code points, as clients index */
            c->text_offset += ((unsigned char)*p & 0xC0) != 0x80;
        free(text);
    }
    c->n_lp++;
}

/* Moves the logprobs not sent yet into choice object o: null when none were asked for, or in
 * a streaming chunk (stream) when there are none to send. */
static void take_lp(struct reply_choice *c, cJSON *o, bool stream)
{
    if (!c->rm->logprobs || (stream && !c->n_lp)) {
        cJSON_AddNullToObject(o, "logprobs");
        return;
    }
    cJSON *lp =
        c->lp ? c->lp : (c->rm->kind == JOB_CHAT ? cJSON_CreateArray() : cJSON_CreateObject());
    c->lp = NULL;
    c->n_lp = 0;
    if (c->rm->kind != JOB_CHAT) {
        cJSON_AddItemToObject(o, "logprobs", lp);
        return;
    }
    cJSON *w = cJSON_AddObjectToObject(o, "logprobs");
    cJSON_AddItemToObject(w, "content", lp);
    cJSON_AddNullToObject(w, "refusal");
}

/* ---- a choice ------------------------------------------------------------------------------ */

struct reply_choice *reply_choice_new(const struct reply_meta *rm, int index)
{
    struct reply_choice *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->rm = rm;
    c->index = index;
    char prefix[80];
    /* call ids unique to the reply and the choice: call_<reply id tail>_<choice>_<call> */
    const char *tail = strchr(rm->id, '-');
    snprintf(prefix, sizeof prefix, "call_%s_%d_", tail ? tail + 1 : rm->id, index);
    if ((rm->reasoning && rsn_new(false, &c->rsn)) ||
        (rm->tool_calls && tc_parser_new(prefix, &c->tc))) {
        reply_choice_free(c);
        return NULL;
    }
    return c;
}

void reply_choice_free(struct reply_choice *c)
{
    if (!c)
        return;
    rsn_free(c->rsn);
    tc_parser_free(c->tc);
    sb_free(&c->content);
    sb_free(&c->reasoning);
    cJSON_Delete(c->lp);
    free(c);
}

bool reply_choice_done(const struct reply_choice *c)
{
    return c->done;
}

static const char *finish_reason(const struct reply_choice *c)
{
    return c->finish == GEN_LENGTH ? "length" : c->n_calls > 0 ? "tool_calls" : "stop";
}

/* A streaming chunk of this choice: its choice object gets the delta (chat) or text. */
static cJSON *chunk(const struct reply_choice *c, cJSON **choice)
{
    const struct reply_meta *rm = c->rm;
    cJSON *o = reply_head(rm, rm->kind == JOB_CHAT ? "chat.completion.chunk" : "text_completion");
    *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(*choice, "index", c->index);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), *choice);
    if (rm->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return o;
}

/* Appends the event of one call (streaming): its head, then its arguments as a fragment. */
static void call_events(const struct reply_choice *c, const struct tc_delta *d, cJSON *events)
{
    for (int part = 0; part < 2; part++) {
        cJSON *ch, *o = chunk(c, &ch);
        cJSON *tcs = cJSON_AddArrayToObject(cJSON_AddObjectToObject(ch, "delta"), "tool_calls");
        cJSON *call = cJSON_CreateObject(), *fn;
        cJSON_AddItemToArray(tcs, call);
        cJSON_AddNumberToObject(call, "index", d->index);
        if (part == 0) {
            cJSON_AddStringToObject(call, "id", d->id);
            cJSON_AddStringToObject(call, "type", "function");
        }
        fn = cJSON_AddObjectToObject(call, "function");
        if (part == 0)
            cJSON_AddStringToObject(fn, "name", d->name);
        cJSON_AddStringToObject(fn, "arguments", part == 0 ? "" : d->arguments);
        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(events, o);
    }
}

/* Takes what the parsers let out: reasoning, content, completed calls. Streaming (events):
 * one chunk with the text and the logprobs not sent yet (none when there is nothing to say),
 * then the calls' chunks; calls past max_calls are dropped. */
static void emit(struct reply_choice *c, const char *rs, size_t rl, const char *ct, size_t cl,
                 const struct tc_delta *d, int nd, cJSON *events)
{
    sb_put(&c->reasoning, rs, rl);
    sb_put(&c->content, ct, cl);
    int keep = 0;
    while (keep < nd && c->n_calls + keep < c->rm->max_calls)
        keep++;
    c->n_calls += keep;
    if (!events || (!rl && !cl && !keep))
        return;
    if (rl || cl || c->n_lp) {
        cJSON *ch, *o = chunk(c, &ch);
        if (c->rm->kind == JOB_CHAT) {
            cJSON *delta = cJSON_AddObjectToObject(ch, "delta");
            if (rl)
                reply_add_text(delta, "reasoning_content", rs, rl);
            if (cl || !rl)
                reply_add_text(delta, "content", ct, cl);
        } else {
            reply_add_text(ch, "text", ct, cl);
        }
        take_lp(c, ch, true);
        cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(events, o);
    }
    for (int i = 0; i < keep; i++)
        call_events(c, &d[i], events);
}

/* Runs one piece of text through the reasoning and tool-call parsers (done: the reply is over,
 * flush them) and emits what comes out. */
static void feed(struct reply_choice *c, const char *p, size_t n, bool done, cJSON *events)
{
    const char *rs = NULL, *ct = p;
    size_t rl = 0, cl = n;
    struct rsn_out ro;
    if (c->rsn) {
        int rc = done ? rsn_finish(c->rsn, &ro) : rsn_feed(c->rsn, p, n, &ro);
        if (rc) {
            c->err = rc;
            return;
        }
        rs = ro.reasoning, rl = ro.reasoning_len, ct = ro.content, cl = ro.content_len;
    } else if (done) {
        ct = "", cl = 0;
    }
    struct tc_events ev = {0};
    if (c->tc) {
        int rc = tc_feed(c->tc, ct, cl, &ev);
        if (!rc && done) { /* the content first, then what the end released */
            emit(c, rs, rl, ev.content, ev.content_len, ev.deltas, ev.n_deltas, events);
            rs = NULL, rl = 0;
            rc = tc_finish(c->tc, &ev);
        }
        if (rc) {
            c->err = rc;
            return;
        }
        ct = ev.content, cl = ev.content_len;
    }
    emit(c, rs, rl, ct, cl, ev.deltas, ev.n_deltas, events);
}

int reply_choice_take(struct reply_choice *c, const struct sched_chunk *ch, cJSON *events)
{
    if (events && !c->began && c->rm->kind == JOB_CHAT) {
        cJSON *cho, *o = chunk(c, &cho), *delta = cJSON_AddObjectToObject(cho, "delta");
        cJSON_AddStringToObject(delta, "role", "assistant");
        cJSON_AddStringToObject(delta, "content", "");
        cJSON_AddNullToObject(cho, "logprobs");
        cJSON_AddNullToObject(cho, "finish_reason");
        cJSON_AddItemToArray(events, o);
    }
    c->began = true;
    size_t off = 0;
    int t = 0;
    for (int i = 0; i < ch->n_pieces && !c->err; i++) {
        for (; ch->piece_toks && t < ch->piece_toks[i] && t < ch->n_toks; t++)
            add_token_lp(c, ch, &ch->toks[t]);
        feed(c, ch->text + off, (size_t)ch->piece_len[i], false, events);
        off += (size_t)ch->piece_len[i];
    }
    for (; t < ch->n_toks; t++) /* held-back text: they go with a later event */
        add_token_lp(c, ch, &ch->toks[t]);
    if (!ch->done || c->err)
        return c->err;
    c->done = true;
    c->finish = ch->finish;
    feed(c, NULL, 0, true, events);
    if (events) {
        cJSON *cho, *o = chunk(c, &cho);
        if (c->rm->kind == JOB_CHAT)
            cJSON_AddObjectToObject(cho, "delta");
        else
            cJSON_AddStringToObject(cho, "text", "");
        take_lp(c, cho, true);
        cJSON_AddStringToObject(cho, "finish_reason", finish_reason(c));
        cJSON_AddItemToArray(events, o);
    }
    return c->err ? c->err : c->content.err ? c->content.err : c->reasoning.err;
}

/* The tool_calls list of a whole reply. */
static void add_calls(const struct reply_choice *c, cJSON *msg)
{
    cJSON *arr = cJSON_AddArrayToObject(msg, "tool_calls");
    for (int i = 0; i < c->n_calls && i < tc_n_calls(c->tc); i++) {
        const struct tc_call *tc = tc_call(c->tc, i);
        cJSON *call = cJSON_CreateObject(), *fn;
        cJSON_AddStringToObject(call, "id", tc->id);
        cJSON_AddStringToObject(call, "type", "function");
        fn = cJSON_AddObjectToObject(call, "function");
        cJSON_AddStringToObject(fn, "name", tc->name);
        cJSON_AddStringToObject(fn, "arguments", tc->arguments);
        cJSON_AddItemToArray(arr, call);
    }
}

cJSON *reply_choice_json(struct reply_choice *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", c->index);
    const char *ct = c->content.s ? c->content.s : "";
    if (c->rm->kind == JOB_CHAT) {
        cJSON *msg = cJSON_AddObjectToObject(o, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        if (c->n_calls > 0 && !c->content.len) /* OpenAI: a reply that only calls has none */
            cJSON_AddNullToObject(msg, "content");
        else
            reply_add_text(msg, "content", ct, c->content.len);
        if (c->rm->reasoning && c->reasoning.len)
            reply_add_text(msg, "reasoning_content", c->reasoning.s, c->reasoning.len);
        if (c->n_calls > 0)
            add_calls(c, msg);
    } else {
        reply_add_text(o, "text", ct, c->content.len);
    }
    take_lp(c, o, false);
    cJSON_AddStringToObject(o, "finish_reason", finish_reason(c));
    return o;
}
