/*
 * toolcall.c: the LFM2 tool-call parser of toolcall.h.
 *
 * struct tc_parser is in text mode or call mode. In text mode q holds only a suffix of the reply
 * that is a proper prefix of TC_START (all else is content at once). In call mode q holds the
 * block's body since TC_START, and the body is parsed from its start by a recursive descent
 * that knows when it ran out of bytes: P_MORE (everything so far fits: hold on), P_FAIL (no
 * continuation can fit) or P_OK (a whole block, through TC_END). The descent never looks back
 * and decides each byte from the bytes before it, so a body that fails fails at the same byte
 * however the reply was split, and what follows is the same. On P_FAIL TC_START is content and
 * the body is scanned again as text (it may hold the next TC_START). Re-parsing is throttled to
 * body growth of a quarter (or a TC_END in the new bytes), so a long block costs O(n) parses'
 * worth of bytes, not O(n^2). Output JSON is compact; strings are re-escaped from their decoded
 * code points (invalid UTF-8 becomes U+FFFD), numbers keep their digits in JSON spelling.
 */
#include "toolcall.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "strbuf.h"

#define START_LEN (sizeof TC_START - 1)
#define END_LEN (sizeof TC_END - 1)
#define MAX_DEPTH 64

enum { P_OK = 0, P_MORE, P_FAIL };

/* ---- the descent ----------------------------------------------------------------------------- */

struct px {
    const unsigned char *s;
    size_t n, i;
    bool final; /* the bytes end here for good: running out is P_FAIL, not P_MORE */
    int depth;
};

/* One call being read. */
struct pcall {
    struct sb name, args;
    struct sb seen; /* its argument names so far, each between newlines */
};

#define NEED(p)                                                                                    \
    do {                                                                                           \
        if ((p)->i >= (p)->n)                                                                      \
            return (p)->final ? P_FAIL : P_MORE;                                                   \
    } while (0)
#define TRY(x)                                                                                     \
    do {                                                                                           \
        int r_ = (x);                                                                              \
        if (r_ != P_OK)                                                                            \
            return r_;                                                                             \
    } while (0)

static int value(struct px *p, struct sb *out);

static void skip_ws(struct px *p)
{
    while (p->i < p->n && strchr(" \t\r\n", p->s[p->i]) && p->s[p->i])
        p->i++;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}
static bool is_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}
static int hexval(int c)
{
    return is_digit(c)            ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Reads exactly k hex digits (octal digits, when oct: 1 to k of them) into *cp. */
static int digits(struct px *p, int k, bool oct, uint32_t *cp)
{
    *cp = 0;
    for (int j = 0; j < k; j++) {
        if (oct && j > 0 && p->i < p->n && (p->s[p->i] < '0' || p->s[p->i] > '7'))
            return P_OK;
        NEED(p);
        int v = oct ? (p->s[p->i] >= '0' && p->s[p->i] <= '7' ? p->s[p->i] - '0' : -1)
                    : hexval(p->s[p->i]);
        if (v < 0)
            return P_FAIL;
        *cp = *cp * (oct ? 8 : 16) + (uint32_t)v;
        p->i++;
    }
    return P_OK;
}

/* A code point into a JSON string body. */
static void put_cp(struct sb *out, uint32_t cp)
{
    if (cp < 0x80) {
        char c = (char)cp;
        sb_put_json_escaped(out, &c, 1);
    } else {
        sb_put_utf8(out, cp);
    }
}

/* After \u with a high surrogate: a \uDC00-\uDFFF that follows completes the pair. */
static int low_surrogate(struct px *p, uint32_t *cp)
{
    size_t save = p->i;
    for (const char *w = "\\u"; *w; w++) {
        NEED(p);
        if (p->s[p->i] != (unsigned char)*w) {
            p->i = save;
            *cp = 0xFFFD;
            return P_OK;
        }
        p->i++;
    }
    uint32_t lo;
    TRY(digits(p, 4, false, &lo));
    if (lo < 0xDC00 || lo > 0xDFFF) {
        p->i = save; /* not a pair: the high half alone is invalid; the next \u stands */
        *cp = 0xFFFD;
        return P_OK;
    }
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return P_OK;
}

/* One escape after a backslash (Python's, plus JSON's \/). */
static int escape(struct px *p, struct sb *out)
{
    NEED(p);
    unsigned char e = p->s[p->i++];
    const char *simple = "n\nt\tr\rb\bf\fv\va\a\\\\''\"\"//";
    for (const char *q = simple; *q; q += 2)
        if (e == (unsigned char)q[0]) {
            put_cp(out, (unsigned char)q[1]);
            return P_OK;
        }
    if (e == '\n')
        return P_OK; /* line continuation */
    uint32_t cp;
    if (e >= '0' && e <= '7') {
        p->i--;
        TRY(digits(p, 3, true, &cp));
    } else if (e == 'x' || e == 'u' || e == 'U') {
        TRY(digits(p, e == 'x' ? 2 : e == 'u' ? 4 : 8, false, &cp));
        if (e == 'u' && cp >= 0xD800 && cp <= 0xDBFF)
            TRY(low_surrogate(p, &cp));
    } else {
        put_cp(out, '\\'); /* Python keeps unknown escapes as they are */
        p->i--;
        return P_OK;
    }
    put_cp(out, cp);
    return P_OK;
}

/* A quoted string ('...' or "...") as a JSON string. */
static int string(struct px *p, struct sb *out)
{
    unsigned char q = p->s[p->i++];
    sb_putc(out, '"');
    for (;;) {
        NEED(p);
        unsigned char c = p->s[p->i];
        if (c == q) {
            p->i++;
            sb_putc(out, '"');
            return P_OK;
        }
        if (c == '\\') {
            p->i++;
            TRY(escape(p, out));
            continue;
        }
        int k = utf8_char(p->s + p->i, p->n - p->i);
        if (k < 0) {
            p->i = p->n; /* an incomplete character: its bytes are still to come */
            NEED(p);
        }
        if (k == 0) {
            sb_put_utf8(out, 0xFFFD);
            p->i++;
        } else {
            put_cp(out, utf8_decode(p->s + p->i, k));
            p->i += (size_t)k;
        }
    }
}

/* Digits into out (leading zeros dropped when lead); returns how many were read. */
static size_t run_digits(struct px *p, struct sb *out, bool lead)
{
    size_t b = p->i;
    while (p->i < p->n && is_digit(p->s[p->i])) {
        if (!(lead && out && p->s[p->i] == '0' && p->i + 1 < p->n && is_digit(p->s[p->i + 1])))
            sb_putc(out, (char)p->s[p->i]);
        p->i++;
    }
    return p->i - b;
}

/* A Python or JSON number, written in JSON spelling: -12, 0.5, 1.0, 1e-05. */
static int number(struct px *p, struct sb *out)
{
    if (p->s[p->i] == '-' || p->s[p->i] == '+') {
        if (p->s[p->i] == '-')
            sb_putc(out, '-');
        p->i++;
        NEED(p);
    }
    size_t nint = run_digits(p, out, true), nfrac = 0;
    if (!nint)
        sb_putc(out, '0');
    NEED(p);
    if (p->s[p->i] == '.') {
        p->i++;
        sb_putc(out, '.');
        nfrac = run_digits(p, out, false);
        if (!nfrac)
            sb_putc(out, '0');
        NEED(p);
    }
    if (!nint && !nfrac)
        return P_FAIL;
    if (p->s[p->i] == 'e' || p->s[p->i] == 'E') {
        p->i++;
        sb_putc(out, 'e');
        NEED(p);
        if (p->s[p->i] == '-' || p->s[p->i] == '+')
            sb_putc(out, (char)p->s[p->i++]);
        if (!run_digits(p, out, false)) {
            NEED(p);
            return P_FAIL;
        }
    }
    return P_OK;
}

/* True/False/None and true/false/null. */
static int keyword(struct px *p, struct sb *out)
{
    size_t b = p->i;
    while (p->i < p->n && is_word(p->s[p->i]))
        p->i++;
    NEED(p); /* the word may go on */
    static const char *const kw[][2] = {{"True", "true"},   {"true", "true"}, {"False", "false"},
                                        {"false", "false"}, {"None", "null"}, {"null", "null"}};
    for (size_t k = 0; k < sizeof kw / sizeof kw[0]; k++)
        if (strlen(kw[k][0]) == p->i - b && !memcmp(p->s + b, kw[k][0], p->i - b)) {
            sb_puts(out, kw[k][1]);
            return P_OK;
        }
    return P_FAIL;
}

/* ws, then the byte c. */
static int expect(struct px *p, unsigned char c)
{
    skip_ws(p);
    NEED(p);
    return p->s[p->i++] == c ? P_OK : P_FAIL;
}

typedef int (*item_fn)(struct px *p, void *ctx, int k);

/* Comma-separated items up to the byte close (taken), a trailing comma allowed; item k is read
 * by item(p, ctx, k). */
static int items(struct px *p, unsigned char close, item_fn item, void *ctx)
{
    for (int k = 0;; k++) {
        skip_ws(p);
        NEED(p);
        if (p->s[p->i] == close) {
            p->i++;
            return P_OK;
        }
        TRY(item(p, ctx, k));
        skip_ws(p);
        NEED(p);
        if (p->s[p->i] == ',')
            p->i++;
        else if (p->s[p->i] != close)
            return P_FAIL;
    }
}

static int array_item(struct px *p, void *out, int k)
{
    if (k)
        sb_putc(out, ',');
    return value(p, out);
}

/* A list or tuple, as a JSON array. */
static int array(struct px *p, struct sb *out)
{
    unsigned char close = p->s[p->i++] == '[' ? ']' : ')';
    sb_putc(out, '[');
    TRY(items(p, close, array_item, out));
    sb_putc(out, ']');
    return P_OK;
}

/* key: value, with a string (or number) key. */
static int dict_item(struct px *p, void *ctx, int k)
{
    struct sb *out = ctx;
    if (k)
        sb_putc(out, ',');
    unsigned char c = p->s[p->i];
    if (c == '"' || c == '\'') {
        TRY(string(p, out));
    } else if (is_digit(c) || c == '-' || c == '.') {
        sb_putc(out, '"');
        TRY(number(p, out));
        sb_putc(out, '"');
    } else {
        return P_FAIL;
    }
    TRY(expect(p, ':'));
    skip_ws(p);
    sb_putc(out, ':');
    return value(p, out);
}

static int dict(struct px *p, struct sb *out)
{
    p->i++;
    sb_putc(out, '{');
    TRY(items(p, '}', dict_item, out));
    sb_putc(out, '}');
    return P_OK;
}

static int value(struct px *p, struct sb *out)
{
    NEED(p);
    if (++p->depth > MAX_DEPTH)
        return P_FAIL;
    unsigned char c = p->s[p->i];
    int r = c == '"' || c == '\''                             ? string(p, out)
            : c == '[' || c == '('                            ? array(p, out)
            : c == '{'                                        ? dict(p, out)
            : is_digit(c) || c == '-' || c == '+' || c == '.' ? number(p, out)
            : is_word(c)                                      ? keyword(p, out)
                                                              : P_FAIL;
    p->depth--;
    return r;
}

/* ---- calls ------------------------------------------------------------------------------------
 */

static bool name_char(int c)
{
    return is_word(c) || c == '-';
}

/* A name: runs of [A-Za-z0-9_-] joined by single dots. */
static int call_name(struct px *p, struct sb *name)
{
    for (;;) {
        size_t b = p->i;
        while (p->i < p->n && name_char(p->s[p->i]))
            p->i++;
        if (p->i == b)
            return p->i < p->n || p->final ? P_FAIL : P_MORE;
        sb_put(name, (const char *)p->s + b, p->i - b);
        NEED(p);
        if (p->s[p->i] != '.')
            return P_OK;
        sb_putc(name, '.');
        p->i++;
    }
}

/* An argument name (letters, digits, _, -, and UTF-8 letters beyond ASCII) as a JSON key;
 * fails when it repeats an earlier one of the same call. */
static int arg_name(struct px *p, struct pcall *c)
{
    size_t b = p->i;
    while (p->i < p->n && (name_char(p->s[p->i]) || p->s[p->i] >= 0x80)) {
        int k = utf8_char(p->s + p->i, p->n - p->i);
        if (k == 0)
            return P_FAIL;
        p->i += k < 0 ? p->n - p->i : (size_t)k;
    }
    NEED(p);
    if (p->i == b)
        return P_FAIL;
    struct sb key = {0};
    sb_putc(&key, '\n');
    sb_put(&key, (const char *)p->s + b, p->i - b);
    sb_putc(&key, '\n');
    bool dup = key.err || (c->seen.len && memmem(c->seen.s, c->seen.len, key.s, key.len));
    if (!c->seen.len)
        sb_putc(&c->seen, '\n');
    sb_put(&c->seen, key.s + 1, key.len - 1); /* "\nname1\nname2\n": names hold no \n */
    sb_free(&key);
    sb_putc(&c->args, '"');
    sb_put_json_escaped(&c->args, (const char *)p->s + b, p->i - b);
    sb_puts(&c->args, "\":");
    return dup ? P_FAIL : P_OK;
}

/* arg=value */
static int kwarg(struct px *p, void *ctx, int k)
{
    struct pcall *c = ctx;
    if (k)
        sb_putc(&c->args, ',');
    TRY(arg_name(p, c));
    TRY(expect(p, '='));
    skip_ws(p);
    return value(p, &c->args);
}

/* name(arg=value, ...): keyword arguments only. */
static int py_call(struct px *p, struct pcall *c)
{
    TRY(call_name(p, &c->name));
    TRY(expect(p, '('));
    sb_putc(&c->args, '{');
    TRY(items(p, ')', kwarg, c));
    sb_putc(&c->args, '}');
    return c->args.err ? P_FAIL : P_OK;
}

/* The "arguments" of the JSON form: an object, or a string that holds one. */
static int json_args(struct px *p, struct pcall *c)
{
    NEED(p);
    if (p->s[p->i] == '{')
        return value(p, &c->args);
    if (p->s[p->i] != '"' && p->s[p->i] != '\'')
        return P_FAIL;
    struct sb lit = {0};
    int r = string(p, &lit);
    cJSON *str = r == P_OK && !lit.err ? cJSON_Parse(lit.s) : NULL;
    sb_free(&lit);
    if (r != P_OK || !cJSON_IsString(str)) {
        cJSON_Delete(str);
        return r != P_OK ? r : P_FAIL;
    }
    const char *in = str->valuestring;
    struct px sub = {(const unsigned char *)in, strlen(in), 0, true, p->depth};
    skip_ws(&sub);
    r = sub.i < sub.n && in[sub.i] == '{' ? value(&sub, &c->args) : P_FAIL;
    skip_ws(&sub);
    cJSON_Delete(str);
    return r == P_OK && sub.i == sub.n ? P_OK : P_FAIL;
}

struct jcall {
    struct pcall *c;
    bool have_args;
};

/* One key of the JSON form's object: "name" (once, a string), "arguments" or "parameters"
 * (the first of them), or another key, read and ignored. */
static int jcall_item(struct px *p, void *ctx, int k)
{
    struct jcall *j = ctx;
    if (p->s[p->i] != '"' && p->s[p->i] != '\'')
        return P_FAIL;
    struct sb key = {0}, skip = {0};
    int r = string(p, &key);
    if (r == P_OK)
        r = expect(p, ':');
    skip_ws(p);
    const char *kn = key.s ? key.s : "";
    bool is_name = !strcmp(kn, "\"name\""),
         is_args = !j->have_args && (!strcmp(kn, "\"arguments\"") || !strcmp(kn, "\"parameters\""));
    if (r == P_OK && p->i >= p->n)
        r = p->final ? P_FAIL : P_MORE;
    else if (r == P_OK && is_name) /* a second "name" is ambiguous */
        r = !j->c->name.len && (p->s[p->i] == '"' || p->s[p->i] == '\'') ? string(p, &j->c->name)
                                                                         : P_FAIL;
    else if (r == P_OK && is_args)
        r = json_args(p, j->c), j->have_args = true;
    else if (r == P_OK)
        r = value(p, &skip);
    sb_free(&key);
    sb_free(&skip);
    return r;
}

/* {"name": "f", "arguments": {...}}: the name must be a plain call name. */
static int json_call(struct px *p, struct pcall *c)
{
    p->i++;
    struct jcall j = {c, false};
    TRY(items(p, '}', jcall_item, &j));
    struct sb *nm = &c->name; /* a JSON string: "..." */
    if (nm->len < 3)
        return P_FAIL;
    for (size_t k = 1; k + 1 < nm->len; k++)
        if (!name_char(nm->s[k]) &&
            !(nm->s[k] == '.' && k > 1 && k + 2 < nm->len && nm->s[k - 1] != '.'))
            return P_FAIL;
    sb_drop(nm, 1);
    nm->s[--nm->len] = 0;
    if (!j.have_args)
        sb_puts(&c->args, "{}");
    return P_OK;
}

struct calls {
    struct pcall *v;
    int n;
    size_t cap;
};

static void calls_free(struct calls *cs)
{
    for (int i = 0; i < cs->n; i++)
        sb_free(&cs->v[i].name), sb_free(&cs->v[i].args), sb_free(&cs->v[i].seen);
    free(cs->v);
    memset(cs, 0, sizeof *cs);
}

static int element(struct px *p, void *ctx, int k)
{
    struct calls *cs = ctx;
    struct pcall *v = grow_array(cs->v, &cs->cap, (size_t)cs->n + 1, sizeof *v, 4);
    if (!v)
        return P_FAIL;
    cs->v = v;
    struct pcall *c = &cs->v[cs->n++];
    memset(c, 0, sizeof *c);
    NEED(p);
    return p->s[p->i] == '{' ? json_call(p, c) : py_call(p, c);
}

/* The body after TC_START: ws, [call, ...] or one call, ws, TC_END (which the reply's end may
 * stand for when final). *used gets the bytes taken, TC_END included. */
static int body(struct px *p, struct calls *cs, size_t *used)
{
    skip_ws(p);
    NEED(p);
    if (p->s[p->i] == '[') {
        p->i++;
        TRY(items(p, ']', element, cs));
        if (!cs->n)
            return P_FAIL; /* [] calls nothing */
    } else {
        TRY(element(p, cs, 0));
    }
    skip_ws(p);
    if (p->i == p->n && p->final) {
        *used = p->n;
        return P_OK;
    }
    for (size_t k = 0; k < END_LEN; k++, p->i++) {
        NEED(p);
        if (p->s[p->i] != (unsigned char)TC_END[k])
            return P_FAIL;
    }
    *used = p->i;
    return P_OK;
}

/* ---- the streaming parser ----------------------------------------------------------------- */

struct tc_parser {
    char *prefix;
    bool in_call, finished;
    struct sb q;       /* text mode: a held prefix of TC_START; call mode: the body so far */
    size_t checked;    /* call mode: q.len at the last parse */
    struct sb content; /* this feed's content */
    struct tc_call *calls;
    int n_calls, cap_calls;
    struct tc_delta *deltas; /* this feed's */
    int n_deltas, cap_deltas;
    int err;
};

/* Frees n calls' strings and the array (the parser's list and a tc_result's). */
static void call_list_free(struct tc_call *calls, int n)
{
    for (int i = 0; i < n; i++) {
        free(calls[i].id);
        free(calls[i].name);
        free(calls[i].arguments);
    }
    free(calls);
}

int tc_parser_new(const char *id_prefix, struct tc_parser **out)
{
    *out = NULL;
    struct tc_parser *p = calloc(1, sizeof *p);
    if (!p || !(p->prefix = strdup(id_prefix ? id_prefix : "call_"))) {
        free(p);
        return EXSA_ENOMEM;
    }
    *out = p;
    return 0;
}

void tc_parser_free(struct tc_parser *p)
{
    if (!p)
        return;
    call_list_free(p->calls, p->n_calls);
    free(p->deltas);
    sb_free(&p->q);
    sb_free(&p->content);
    free(p->prefix);
    free(p);
}

/* Moves the parsed calls into p and adds a delta for each. */
static int commit(struct tc_parser *p, struct calls *cs)
{
    if (p->n_calls + cs->n > p->cap_calls || p->n_deltas + cs->n > p->cap_deltas) {
        int cap = (p->n_calls + cs->n) * 2 + 4;
        struct tc_call *c = realloc(p->calls, sizeof *c * (size_t)cap);
        if (c)
            p->calls = c, p->cap_calls = cap;
        struct tc_delta *d = c ? realloc(p->deltas, sizeof *d * (size_t)cap) : NULL;
        if (!d)
            return EXSA_ENOMEM;
        p->deltas = d, p->cap_deltas = cap;
    }
    for (int i = 0; i < cs->n; i++) {
        struct tc_call *c = &p->calls[p->n_calls];
        char id[32];
        snprintf(id, sizeof id, "%d", p->n_calls);
        size_t lp = strlen(p->prefix);
        c->id = malloc(lp + strlen(id) + 1);
        c->name = sb_take(&cs->v[i].name);
        c->arguments = sb_take(&cs->v[i].args);
        if (!c->id || !c->name || !c->arguments) {
            free(c->id), free(c->name), free(c->arguments);
            return EXSA_ENOMEM;
        }
        memcpy(c->id, p->prefix, lp);
        strcpy(c->id + lp, id);
        p->deltas[p->n_deltas++] = (struct tc_delta){p->n_calls, c->id, c->name, c->arguments};
        p->n_calls++;
    }
    return 0;
}

/* The length of the longest suffix of s[0..n) that is a proper prefix of TC_START. */
static size_t held_suffix(const char *s, size_t n)
{
    for (size_t k = n < START_LEN - 1 ? n : START_LEN - 1; k > 0; k--)
        if (!memcmp(s + n - k, TC_START, k))
            return k;
    return 0;
}

/* Whether the body is worth parsing again: a TC_END arrived, or it grew by a quarter. */
static bool worth_parsing(const struct tc_parser *p)
{
    if (!p->q.len)
        return false;
    size_t from = p->checked >= END_LEN ? p->checked - END_LEN + 1 : 0;
    return p->q.len >= p->checked + p->checked / 4 + 8 ||
           memmem(p->q.s + from, p->q.len - from, TC_END, END_LEN) != NULL;
}

/* Call mode: parses the body; returns true when the mode changed (q then holds text). */
static bool try_body(struct tc_parser *p, bool final)
{
    if (!final && !worth_parsing(p))
        return false;
    struct px px = {(const unsigned char *)p->q.s, p->q.len, 0, final, 0};
    struct calls cs = {0};
    size_t used = 0;
    int r = body(&px, &cs, &used);
    if (r == P_MORE) {
        p->checked = p->q.len;
    } else if (r == P_OK) {
        int rc = commit(p, &cs);
        if (rc)
            p->err = rc;
        sb_drop(&p->q, used);
    } else {
        sb_puts(&p->content, TC_START);
    }
    calls_free(&cs);
    if (r != P_MORE)
        p->in_call = false;
    return r != P_MORE;
}

static void run(struct tc_parser *p, bool final)
{
    for (;;) {
        if (p->in_call) {
            if (!try_body(p, final))
                return;
            continue;
        }
        const char *s = p->q.s ? p->q.s : "";
        const char *at = memmem(s, p->q.len, TC_START, START_LEN);
        if (at) {
            sb_put(&p->content, s, (size_t)(at - s));
            sb_drop(&p->q, (size_t)(at - s) + START_LEN);
            p->in_call = true;
            p->checked = 0;
            continue;
        }
        size_t keep = final ? 0 : held_suffix(s, p->q.len);
        sb_put(&p->content, s, p->q.len - keep);
        sb_drop(&p->q, p->q.len - keep);
        return;
    }
}

static int events(struct tc_parser *p, struct tc_events *ev)
{
    if (p->content.err || p->q.err)
        p->err = EXSA_ENOMEM;
    ev->content = p->content.s ? p->content.s : "";
    ev->content_len = p->content.len;
    ev->deltas = p->deltas;
    ev->n_deltas = p->n_deltas;
    return p->err;
}

int tc_feed(struct tc_parser *p, const char *text, size_t n, struct tc_events *ev)
{
    sb_clear(&p->content);
    p->n_deltas = 0;
    if (p->finished)
        return EXSA_EINVAL;
    if (!p->err) {
        sb_put(&p->q, text, n);
        run(p, false);
    }
    return events(p, ev);
}

int tc_finish(struct tc_parser *p, struct tc_events *ev)
{
    sb_clear(&p->content);
    p->n_deltas = 0;
    if (p->finished)
        return EXSA_EINVAL;
    p->finished = true;
    if (!p->err)
        run(p, true);
    return events(p, ev);
}

int tc_n_calls(const struct tc_parser *p)
{
    return p->n_calls;
}

const struct tc_call *tc_call(const struct tc_parser *p, int i)
{
    return i >= 0 && i < p->n_calls ? &p->calls[i] : NULL;
}

int tc_parse(const char *text, size_t n, const char *id_prefix, struct tc_result *r)
{
    memset(r, 0, sizeof *r);
    struct tc_parser *p;
    int rc = tc_parser_new(id_prefix, &p);
    if (rc)
        return rc;
    struct sb content = {0};
    struct tc_events ev;
    rc = tc_feed(p, text, n, &ev);
    if (!rc)
        sb_put(&content, ev.content, ev.content_len);
    if (!rc && !(rc = tc_finish(p, &ev)))
        sb_put(&content, ev.content, ev.content_len);
    r->content_len = content.len;
    r->content = sb_take(&content);
    if (!rc && !r->content)
        rc = EXSA_ENOMEM;
    if (!rc) { /* the calls move to r */
        r->calls = p->calls;
        r->n_calls = p->n_calls;
        p->calls = NULL;
        p->n_calls = 0;
    }
    tc_parser_free(p);
    if (rc)
        tc_result_free(r);
    return rc;
}

void tc_result_free(struct tc_result *r)
{
    call_list_free(r->calls, r->n_calls);
    free(r->content);
    memset(r, 0, sizeof *r);
}
