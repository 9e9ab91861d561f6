/*
 * reasoning.c: the think-block splitter of reasoning.h.
 *
 * struct rsn walks four states: START (only whitespace and a prefix of <think> seen: all held),
 * THINK (inside the block; lead set while its leading whitespace is still being dropped), AFTER
 * (the block closed; the content's leading whitespace is dropped) and CONTENT (all passes).
 * q holds the bytes not yet decided. In THINK, q keeps the longest suffix that could still be a
 * trailing whitespace run followed by a prefix of </think>; everything before it is reasoning.
 * Each decision depends only on the bytes before it, so any split gives the same result.
 */
#include "reasoning.h"

#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "strbuf.h"

#define OPEN_LEN (sizeof RSN_OPEN - 1)
#define CLOSE_LEN (sizeof RSN_CLOSE - 1)

enum { R_START, R_THINK, R_AFTER, R_CONTENT };

struct rsn {
    int state;
    bool lead;
    struct sb q, reasoning, content;
};

int rsn_new(bool open, struct rsn **out)
{
    struct rsn *r = calloc(1, sizeof *r);
    *out = r;
    if (!r)
        return EXSA_ENOMEM;
    r->state = open ? R_THINK : R_START;
    r->lead = true;
    return 0;
}

void rsn_free(struct rsn *r)
{
    if (!r)
        return;
    sb_free(&r->q);
    sb_free(&r->reasoning);
    sb_free(&r->content);
    free(r);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t lead_ws(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_ws(s[i]))
        i++;
    return i;
}

static size_t trail_ws(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && is_ws(s[n - 1 - k]))
        k++;
    return k;
}

/* START: returns true when the state changed. */
static bool at_start(struct rsn *r, bool final)
{
    size_t i = lead_ws(r->q.s, r->q.len), rest = r->q.len - i;
    if (rest >= OPEN_LEN && !memcmp(r->q.s + i, RSN_OPEN, OPEN_LEN)) {
        sb_drop(&r->q, i + OPEN_LEN);
        r->state = R_THINK;
        return true;
    }
    if (!final && rest < OPEN_LEN && !memcmp(r->q.s + i, RSN_OPEN, rest))
        return false; /* may still open */
    r->state = R_CONTENT;
    return true;
}

/* THINK: returns true when the state changed. */
static bool in_think(struct rsn *r, bool final)
{
    if (r->lead) {
        sb_drop(&r->q, lead_ws(r->q.s, r->q.len));
        if (!r->q.len)
            return false;
        r->lead = false;
    }
    const char *s = r->q.s, *at = memmem(s, r->q.len, RSN_CLOSE, CLOSE_LEN);
    if (at) {
        size_t k = (size_t)(at - s);
        sb_put(&r->reasoning, s, k - trail_ws(s, k));
        sb_drop(&r->q, k + CLOSE_LEN);
        r->state = R_AFTER;
        return true;
    }
    size_t n = r->q.len, hold = 0;
    if (final) {
        hold = trail_ws(s, n);
    } else {
        for (size_t k = n < CLOSE_LEN - 1 ? n : CLOSE_LEN - 1; k > 0 && !hold; k--)
            if (!memcmp(s + n - k, RSN_CLOSE, k))
                hold = k;
        hold += trail_ws(s, n - hold);
    }
    sb_put(&r->reasoning, s, n - hold);
    sb_drop(&r->q, n - hold);
    if (final)
        sb_clear(&r->q);
    return false;
}

static void run(struct rsn *r, bool final)
{
    for (bool changed = true; changed && r->q.len;) {
        switch (r->state) {
        case R_START: changed = at_start(r, final); break;
        case R_THINK: changed = in_think(r, final); break;
        case R_AFTER:
            sb_drop(&r->q, lead_ws(r->q.s, r->q.len));
            changed = r->q.len > 0;
            if (changed)
                r->state = R_CONTENT;
            break;
        default:
            sb_put(&r->content, r->q.s, r->q.len);
            sb_clear(&r->q);
            changed = false;
        }
    }
}

static int emit(struct rsn *r, struct rsn_out *o)
{
    o->reasoning = r->reasoning.s ? r->reasoning.s : "";
    o->reasoning_len = r->reasoning.len;
    o->content = r->content.s ? r->content.s : "";
    o->content_len = r->content.len;
    return r->q.err || r->reasoning.err || r->content.err ? EXSA_ENOMEM : 0;
}

int rsn_feed(struct rsn *r, const char *text, size_t n, struct rsn_out *o)
{
    sb_clear(&r->reasoning);
    sb_clear(&r->content);
    sb_put(&r->q, text, n);
    run(r, false);
    return emit(r, o);
}

int rsn_finish(struct rsn *r, struct rsn_out *o)
{
    sb_clear(&r->reasoning);
    sb_clear(&r->content);
    run(r, true);
    return emit(r, o);
}
