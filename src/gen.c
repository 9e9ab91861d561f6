/*
 * gen.c: one reply being generated (gen.h): sampling, stop conditions and the streaming
 * detokenizer.
 *
 * struct gen keeps the bytes of the tokens sampled so far that are not shown yet (pend) and the
 * text handed out by the last call (outb). Invariants: pend never holds a whole stop string;
 * what was shown holds no start of a stop string (a suffix that could begin one stays in pend
 * until it cannot), so a stop string is always found inside pend; shown text is valid UTF-8
 * (an incomplete character at the end of pend waits for its next bytes; bytes that can never
 * be valid UTF-8 are shown as U+FFFD). Tokens are rendered with their special text (tool-call
 * and think markers reach the caller), except end-of-generation tokens, which end the reply.
 * Seeds: exsa_sampling_params.seed == SAMPLER_SEED_RANDOM (sampler.h) seeds from the clock; the
 * default params use it, so tests set a fixed seed. Callers: `exsa run`, `exsa chat`, sched.c.
 */
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "strbuf.h"
#include "tokenizer.h"

struct gen {
    const struct tokenizer *tok;
    struct sampler *smp;
    int max_tokens;
    char **stop; /* n_stop copies, none empty */
    int n_stop;
    bool ignore_eog;
    enum gen_finish finish;
    int n_tokens;
    int32_t last_tok;
    int stop_hit;   /* index of the stop string that matched, or -1 */
    size_t n_shown; /* bytes handed out so far */
    char *pend;     /* bytes not shown yet */
    size_t pend_len, pend_cap;
    char *outb; /* the text of the last gen_next/gen_flush */
    size_t out_len, out_cap;
    char reason[256];
};

void gen_params_default(struct gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->sp.temperature = 0.3f;
    p->sp.top_k = 0;
    p->sp.top_p = 1.0f;
    p->sp.min_p = 0.15f;
    p->sp.repeat_penalty = 1.05f;
    p->sp.penalty_last_n = 64;
    p->sp.seed = SAMPLER_SEED_RANDOM;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p)
        return EXSA_ENOMEM;
    *buf = p, *cap = c;
    return 0;
}

void gen_free(struct gen *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_stop; i++)
        free(g->stop[i]);
    free(g->stop);
    sampler_free(g->smp);
    free(g->pend);
    free(g->outb);
    free(g);
}

/* Returns 0, EXSA_EINVAL (no tokenizer, n_vocab <= 0, a NULL stop string, bad sampling
 * params, top_logprobs out of range) or EXSA_ENOMEM. Empty stop strings are ignored. */
int gen_create(const struct tokenizer *tok, int n_vocab, const struct gen_params *p,
               struct gen **out)
{
    *out = NULL;
    if (!tok || n_vocab <= 0 || !p || p->n_stop < 0 || (p->n_stop > 0 && !p->stop))
        return EXSA_EINVAL;
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i])
            return EXSA_EINVAL;
    struct gen *g = calloc(1, sizeof *g);
    if (!g)
        return EXSA_ENOMEM;
    g->tok = tok;
    g->max_tokens = p->max_tokens;
    g->ignore_eog = p->ignore_eog;
    g->stop_hit = -1;
    g->last_tok = -1;
    int rc = sampler_create(&p->sp, n_vocab, &g->smp);
    if (!rc && p->logprobs)
        rc = sampler_set_logprobs(g->smp, p->top_logprobs);
    if (!rc)
        sampler_set_mask(g->smp, &p->mask);
    g->stop = calloc((size_t)p->n_stop + 1, sizeof *g->stop);
    if (!rc && !g->stop)
        rc = EXSA_ENOMEM;
    for (int i = 0; !rc && i < p->n_stop; i++) {
        if (!p->stop[i][0])
            continue;
        if (!(g->stop[g->n_stop++] = strdup(p->stop[i])))
            rc = EXSA_ENOMEM;
    }
    if (!rc)
        rc = grow(&g->outb, &g->out_cap, 64);
    if (rc) {
        gen_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

void gen_prompt(struct gen *g, const int32_t *toks, int n)
{
    for (int i = 0; i < n; i++)
        sampler_accept(g->smp, toks[i]);
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* The longest prefix of s[0..n) that does not end inside an incomplete character. */
static size_t utf8_cut(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const unsigned char *c = (const unsigned char *)s + n - back;
        if ((*c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back for its lead */
        return utf8_char(c, back) == -1 ? n - back : n;
    }
    return n;
}

/* Appends s[0..n) to the shown text, invalid bytes (and an incomplete tail) as U+FFFD. */
static void show(struct gen *g, const char *s, size_t n)
{
    if (grow(&g->outb, &g->out_cap, g->out_len + n * 3 + 1))
        return; /* out of memory: the text is lost, generation goes on */
    size_t start = g->out_len;
    for (size_t i = 0; i < n;) {
        int k = utf8_char((const unsigned char *)s + i, n - i);
        if (k > 0) {
            memcpy(g->outb + g->out_len, s + i, (size_t)k);
            g->out_len += (size_t)k, i += (size_t)k;
        } else {
            memcpy(g->outb + g->out_len, "\xEF\xBF\xBD", 3);
            g->out_len += 3, i++;
        }
    }
    g->outb[g->out_len] = 0;
    g->n_shown += g->out_len - start;
}

/* Shows the first n bytes of pend and drops them from it. */
static void show_pend(struct gen *g, size_t n)
{
    if (!g->pend_len)
        return;
    show(g, g->pend, n);
    memmove(g->pend, g->pend + n, g->pend_len - n);
    g->pend_len -= n;
}

/* ---- stop strings ---------------------------------------------------------------------------- */

/* After new bytes in pend: ends the reply at the earliest stop string, else shows what can no
 * longer be part of one (and is whole UTF-8). */
static void scan(struct gen *g)
{
    if (!g->pend_len)
        return; /* stop strings are never empty */
    size_t at = (size_t)-1;
    for (int i = 0; i < g->n_stop; i++) {
        const char *p = memmem(g->pend, g->pend_len, g->stop[i], strlen(g->stop[i]));
        if (p && (size_t)(p - g->pend) < at)
            at = (size_t)(p - g->pend), g->stop_hit = i;
    }
    if (g->stop_hit >= 0) {
        show(g, g->pend, at);
        g->pend_len = 0; /* the stop string and what followed it are not part of the reply */
        g->finish = GEN_STOP;
        return;
    }
    size_t hold = 0;
    for (int i = 0; i < g->n_stop; i++) {
        size_t sl = strlen(g->stop[i]);
        for (size_t k = sl - 1 < g->pend_len ? sl - 1 : g->pend_len; k > hold; k--)
            if (memcmp(g->pend + g->pend_len - k, g->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    show_pend(g, utf8_cut(g->pend, g->pend_len - hold));
}

int32_t gen_next(struct gen *g, float *logits, const char **text, size_t *len)
{
    g->out_len = 0;
    g->outb[0] = 0;
    *text = g->outb;
    *len = 0;
    if (g->finish != GEN_RUNNING)
        return -1;
    int32_t t = sampler_sample(g->smp, logits);
    sampler_accept(g->smp, t);
    g->n_tokens++;
    g->last_tok = t;
    bool eog = tok_is_eog(g->tok, t);
    if (eog && !g->ignore_eog) {
        g->finish = GEN_EOG;
        show_pend(g, g->pend_len); /* no stop string can complete any more */
    } else {
        const char *p;
        size_t n = 0;
        if (!eog && tok_piece(g->tok, t, true, &p, &n) == 0 && n &&
            !grow(&g->pend, &g->pend_cap, g->pend_len + n)) {
            memcpy(g->pend + g->pend_len, p, n);
            g->pend_len += n;
        }
        scan(g);
        if (g->finish == GEN_RUNNING && g->max_tokens > 0 && g->n_tokens >= g->max_tokens) {
            g->finish = GEN_LENGTH;
            show_pend(g, g->pend_len);
        }
    }
    *text = g->outb; /* show() may have moved the buffer */
    *len = g->out_len;
    return t;
}

static struct gen_logprob with_bytes(const struct gen *g, struct sampler_logprob lp)
{
    struct gen_logprob r = {lp.id, lp.logprob, "", 0};
    if (tok_piece(g->tok, lp.id, true, &r.bytes, &r.len))
        r.bytes = "", r.len = 0;
    return r;
}

int gen_logprobs(const struct gen *g, struct gen_logprob *chosen, struct gen_logprob *top,
                 int max_top)
{
    struct sampler_logprob c;
    const struct sampler_logprob *t;
    int n = sampler_logprobs(g->smp, &c, &t);
    if (n < 0)
        return -1;
    *chosen = with_bytes(g, c);
    n = n < max_top ? n : max_top;
    for (int i = 0; i < n; i++)
        top[i] = with_bytes(g, t[i]);
    return n;
}

void gen_end(struct gen *g, enum gen_finish why)
{
    if (g->finish == GEN_RUNNING && why != GEN_RUNNING)
        g->finish = why;
}

enum gen_finish gen_finished(const struct gen *g)
{
    return g->finish;
}

int gen_n_tokens(const struct gen *g)
{
    return g->n_tokens;
}

/* While the reply runs, nothing (the held text may still become a stop string). */
void gen_flush(struct gen *g, const char **text, size_t *len)
{
    g->out_len = 0;
    g->outb[0] = 0;
    if (g->finish != GEN_RUNNING)
        show_pend(g, g->pend_len);
    *text = g->outb;
    *len = g->out_len;
}

/* NULL for GEN_RUNNING (OpenAI's finish_reason null). */
const char *gen_finish_reason(enum gen_finish f)
{
    switch (f) {
    case GEN_EOG:
    case GEN_STOP: return "stop";
    case GEN_LENGTH: return "length";
    case GEN_CANCELLED: return "cancelled";
    case GEN_RUNNING: break;
    }
    return NULL;
}

/* s with control characters written as \n, \t, \xNN, into buf. */
static void escape(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (; *s && o + 5 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n' || c == '\t' || c == '\r')
            o += (size_t)snprintf(buf + o, size - o, "\\%c",
                                  c == '\n'   ? 'n'
                                  : c == '\t' ? 't'
                                              : 'r');
        else if (c < 0x20)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = 0;
}

const char *gen_empty_reason(const struct gen *g)
{
    struct gen *m = (struct gen *)g; /* the sentence lives in g: a cache, not a state change */
    if (g->n_shown > 0 || g->pend_len > 0)
        return NULL;
    if (g->finish == GEN_EOG) {
        const char *p = "";
        size_t n = 0;
        tok_piece(g->tok, g->last_tok, true, &p, &n);
        snprintf(m->reason, sizeof m->reason,
                 "the model ended its reply %s with end-of-generation token %.*s (id %d)",
                 g->n_tokens == 1 ? "at once" : "before any text", (int)(n < 64 ? n : 64), p,
                 (int)g->last_tok);
        return m->reason;
    }
    if (g->finish == GEN_STOP) {
        char esc[128];
        escape(g->stop[g->stop_hit], esc, sizeof esc);
        snprintf(m->reason, sizeof m->reason,
                 "the stop string \"%s\" matched at the start of the reply", esc);
        return m->reason;
    }
    return NULL;
}
