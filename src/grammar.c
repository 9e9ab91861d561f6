/*
 * grammar.c: the automaton of grammar.h.
 *
 * A thread's top frame is the one reading input. SEQ and ALT frames never read: a SEQ on top
 * pushes its next kid (or, done, pops), an ALT on top is replaced by each kid in turn (a fork);
 * gr_step() runs a work list of (thread, pending input) until every thread has read the input
 * or died. A reading frame answers each input with R_OK (taken), R_POP (taken, and the frame is
 * complete), R_PASS (not taken, but the frame is complete: pop it, its parent reads the input;
 * numbers end this way), R_PUSH (not taken: push a child, which reads it) or R_REJECT. A popped
 * frame tells its parent (child_done): a SEQ moves to its next kid, an object or array to the
 * place after a value. Object keys are matched against the sorted property names as they are
 * typed: the frame keeps the range [a, b) of names with the typed prefix (c bytes long) and a
 * bit mask m of the properties already given, and takes a byte only if some property not yet
 * given (or, with additional properties, any key) is still possible, so no state is a dead end.
 */
#include "grammar.h"

#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "strbuf.h"

int gr_add(struct grammar *g, enum gr_kind k)
{
    struct gr_node *p = grow_array(g->nodes, &g->cap, (size_t)g->n_nodes + 1, sizeof *p, 16);
    if (!p)
        return EXSA_ENOMEM;
    g->nodes = p;
    struct gr_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = k;
    n->additional = -1;
    n->max_items = n->max_len = -1;
    return g->n_nodes++;
}

void gr_props_free(struct gr_prop *p, int n)
{
    for (int k = 0; k < n; k++)
        free(p[k].name);
    free(p);
}

void gr_free(struct grammar *g)
{
    for (int i = 0; i < g->n_nodes; i++) {
        struct gr_node *n = &g->nodes[i];
        free(n->kids);
        free(n->lit);
        gr_props_free(n->set, n->n_set);
        gr_props_free(n->props, n->n_props);
    }
    free(g->nodes);
    memset(g, 0, sizeof *g);
}

static int cmp_str(const void *x, const void *y)
{
    const struct gr_prop *a = x, *b = y;
    int c = memcmp(a->name, b->name, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

bool gr_sort(struct gr_prop *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    for (int i = 1; i < n; i++)
        if (!cmp_str(&v[i - 1], &v[i]))
            return false;
    return true;
}

/* Depth-first over the edges that read nothing (ALT -> kid, SEQ -> first kid); mark: 0 new,
 * 1 on the path, 2 done. */
static bool no_loop(const struct grammar *g, int i, uint8_t *mark)
{
    if (mark[i])
        return mark[i] == 2;
    mark[i] = 1;
    const struct gr_node *n = &g->nodes[i];
    int k_end = n->kind == GR_ALT ? n->n_kids : n->kind == GR_SEQ && n->n_kids ? 1 : 0;
    for (int k = 0; k < k_end; k++)
        if (!no_loop(g, n->kids[k], mark))
            return false;
    mark[i] = 2;
    return true;
}

static bool in_range(const struct grammar *g, int i)
{
    return i >= 0 && i < g->n_nodes;
}

bool gr_check(const struct grammar *g)
{
    if (!in_range(g, g->root))
        return false;
    for (int i = 0; i < g->n_nodes; i++) {
        const struct gr_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_kids; k++)
            if (!in_range(g, n->kids[k]))
                return false;
        for (int k = 0; k < n->n_props; k++)
            if (!in_range(g, n->props[k].node))
                return false;
        if ((n->kind == GR_ARRAY && !in_range(g, n->items)) ||
            (n->kind == GR_OBJECT && n->additional >= 0 && !in_range(g, n->additional)))
            return false;
    }
    uint8_t *mark = calloc((size_t)g->n_nodes, 1);
    bool ok = mark != NULL;
    for (int i = 0; ok && i < g->n_nodes; i++)
        ok = no_loop(g, i, mark);
    free(mark);
    return ok;
}

/* ---- frames ---------------------------------------------------------------------------------- */

enum { R_OK, R_POP, R_PASS, R_PUSH, R_REJECT };

/* Object phases (O_VALUE: a value's frame is above). */
enum { O_OPEN, O_FIRST, O_KEY, O_KEYFREE, O_COLON, O_VALWS, O_VALUE, O_AFTER, O_NEXT };
/* Array phases. */
enum { A_OPEN, A_FIRST, A_ITEM, A_AFTER, A_NEXT };
/* Number phases; N_ZERO, N_INT, N_FRAC and N_EXPD are complete. */
enum { N_START, N_SIGN, N_ZERO, N_INT, N_DOT, N_FRAC, N_EXP, N_EXPS, N_EXPD };
/* String lexer results. */
enum { LX_CHAR, LX_CONT, LX_QUOTE, LX_BAD };

#define ADDL UINT32_MAX /* object frame c after a key that is no declared property */

static bool is_ws(int in)
{
    return in == ' ' || in == '\t' || in == '\n' || in == '\r';
}
static bool is_digit(int in)
{
    return in >= '0' && in <= '9';
}
static bool is_hex(int in)
{
    return is_digit(in) || (in >= 'a' && in <= 'f') || (in >= 'A' && in <= 'F');
}
static bool ident_start(int in)
{
    return (in >= 'a' && in <= 'z') || (in >= 'A' && in <= 'Z') || in == '_';
}
static bool ident_char(int in)
{
    return ident_start(in) || is_digit(in);
}

/* Whitespace between tokens: R_OK (counted), R_REJECT (too much), or -1 (not whitespace). */
static int ws(struct gr_frame *f, int in)
{
    if (!is_ws(in))
        return -1;
    return f->ws++ < GR_WS_MAX ? R_OK : R_REJECT;
}

/* One byte inside a JSON string body (after the opening quote). Escapes: \" \\ \/ \b \f \n \r
 * \t and \uXXXX outside the surrogates; raw bytes: valid UTF-8, no control characters. */
static int lex(struct gr_frame *f, int in)
{
    if (in > 255)
        return LX_BAD;
    if (f->esc == 1) {
        if (in == 'u')
            return f->esc = 2, LX_CONT;
        return strchr("\"\\/bfnrt", in) && in ? (f->esc = 0, LX_CONT) : LX_BAD;
    }
    if (f->esc) { /* 2: 1st hex digit, 7: 2nd after a d (no surrogates), 3..5: 2nd..4th */
        if (f->esc == 7 ? !(in >= '0' && in <= '7') : !is_hex(in))
            return LX_BAD;
        f->esc = f->esc == 2   ? (in == 'd' || in == 'D' ? 7 : 3)
                 : f->esc == 5 ? 0
                 : f->esc == 7 ? 4
                               : f->esc + 1;
        return LX_CONT;
    }
    if (f->u8) { /* continuation byte; class: 0 80-BF, 1 A0-BF, 2 80-9F, 3 90-BF, 4 80-8F */
        static const uint8_t lo[5] = {0x80, 0xA0, 0x80, 0x90, 0x80};
        static const uint8_t hi[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
        int cls = f->u8 >> 4, need = f->u8 & 15;
        if (in < lo[cls] || in > hi[cls])
            return LX_BAD;
        f->u8 = (uint8_t)(need - 1);
        return LX_CONT;
    }
    if (in == '"')
        return LX_QUOTE;
    if (in == '\\')
        return f->esc = 1, LX_CHAR;
    if (in < 0x20)
        return LX_BAD;
    if (in < 0x80)
        return LX_CHAR;
    if (in >= 0xC2 && in <= 0xDF)
        f->u8 = 1;
    else if (in >= 0xE0 && in <= 0xEF)
        f->u8 = (uint8_t)(2 | (in == 0xE0 ? 1 : in == 0xED ? 2 : 0) << 4);
    else if (in >= 0xF0 && in <= 0xF4)
        f->u8 = (uint8_t)(3 | (in == 0xF0 ? 3 : in == 0xF4 ? 4 : 0) << 4);
    else
        return LX_BAD;
    return LX_CHAR;
}

static int f_string(const struct gr_node *n, struct gr_frame *f, int in)
{
    if (f->st == 0)
        return in == '"' ? (f->st = 1, R_OK) : R_REJECT;
    switch (lex(f, in)) {
    case LX_QUOTE: return (int)f->a >= n->min_len ? R_POP : R_REJECT;
    case LX_CHAR:
        if (n->max_len >= 0 && (int)f->a >= n->max_len)
            return R_REJECT;
        f->a++;
        return R_OK;
    case LX_CONT: return R_OK;
    }
    return R_REJECT;
}

static int f_number(const struct gr_node *n, struct gr_frame *f, int in)
{
    bool digit = is_digit(in), frac_ok = !n->integer;
    int st = f->st;
    int next = -1;
    if (st == N_START && in == '-')
        next = N_SIGN;
    else if ((st == N_START || st == N_SIGN) && digit)
        next = in == '0' ? N_ZERO : N_INT, f->a = 1;
    else if (st == N_INT && digit && f->a < GR_INT_DIGITS)
        next = N_INT, f->a++;
    else if ((st == N_ZERO || st == N_INT) && in == '.' && frac_ok)
        next = N_DOT, f->a = 0;
    else if ((st == N_DOT || st == N_FRAC) && digit && f->a < GR_INT_DIGITS)
        next = N_FRAC, f->a++;
    else if ((st == N_ZERO || st == N_INT || st == N_FRAC) && (in == 'e' || in == 'E') && frac_ok)
        next = N_EXP, f->a = 0;
    else if (st == N_EXP && (in == '-' || in == '+'))
        next = N_EXPS;
    else if ((st == N_EXP || st == N_EXPS || st == N_EXPD) && digit && f->a < GR_EXP_DIGITS)
        next = N_EXPD, f->a++;
    if (next >= 0) {
        f->st = (uint8_t)next;
        return R_OK;
    }
    bool complete = st == N_ZERO || st == N_INT || st == N_FRAC || st == N_EXPD;
    return complete ? R_PASS : R_REJECT;
}

/* Narrows the sorted strings v[lo..hi) (sharing their first pos bytes) to those whose byte at
 * pos is in; returns false when none is left (lo, hi unchanged then). */
static bool narrow(const struct gr_prop *v, uint32_t *lo, uint32_t *hi, uint32_t pos, int in)
{
    uint32_t a = *lo, b;
    while (a < *hi && !(v[a].len > pos && (unsigned char)v[a].name[pos] >= in))
        a++;
    for (b = a; b < *hi && v[b].len > pos && (unsigned char)v[b].name[pos] == in;)
        b++;
    if (a == b)
        return false;
    *lo = a, *hi = b;
    return true;
}

static int f_litset(const struct gr_node *n, struct gr_frame *f, int in)
{
    if (narrow(n->set, &f->a, &f->b, f->c, in)) {
        f->c++;
        return f->b - f->a == 1 && n->set[f->a].len == f->c ? R_POP : R_OK;
    }
    return n->set[f->a].len == f->c ? R_PASS : R_REJECT;
}

static uint64_t range_mask(uint32_t lo, uint32_t hi)
{
    uint64_t below_hi = hi >= 64 ? ~0ull : (1ull << hi) - 1;
    return below_hi & ~((1ull << lo) - 1);
}

static uint64_t all_props(const struct gr_node *n)
{
    return range_mask(0, (uint32_t)n->n_props);
}

static bool more_keys(const struct gr_node *n, const struct gr_frame *f)
{
    return n->additional >= 0 || (all_props(n) & ~f->m);
}

/* A byte of a key being typed: narrows the property range (or goes free with additional
 * properties); refuses a byte after which no key not yet given is possible. */
static int key_byte(const struct gr_node *n, struct gr_frame *f, int in)
{
    if (f->st == O_KEY) {
        uint32_t lo = f->a, hi = f->b;
        if (!narrow(n->props, &lo, &hi, f->c, in)) {
            if (n->additional < 0)
                return R_REJECT;
            f->st = O_KEYFREE;
            return R_OK;
        }
        if (n->additional < 0 && !(range_mask(lo, hi) & ~f->m))
            return R_REJECT;
        f->a = lo, f->b = hi, f->c++;
    }
    return R_OK;
}

/* The key is complete: a property not given yet, or another key (with additional ones). */
static int close_key(const struct gr_node *n, struct gr_frame *f)
{
    if (f->st == O_KEY && f->a < f->b && n->props[f->a].len == f->c) {
        if (f->m >> f->a & 1)
            return R_REJECT; /* given already */
        f->m |= 1ull << f->a;
        f->c = f->a;
    } else if (n->additional >= 0) {
        f->c = ADDL;
    } else {
        return R_REJECT;
    }
    f->st = n->kwargs ? O_VALWS : O_COLON;
    f->ws = 0;
    return R_OK;
}

static int start_key(const struct gr_node *n, struct gr_frame *f, int in)
{
    if (!more_keys(n, f))
        return R_REJECT;
    f->a = 0, f->b = (uint32_t)n->n_props, f->c = 0, f->esc = f->u8 = 0;
    f->st = n->n_props ? O_KEY : O_KEYFREE;
    if (!n->kwargs)
        return in == '"' ? R_OK : R_REJECT;
    return ident_start(in) ? key_byte(n, f, in) : R_REJECT;
}

static int f_object(const struct gr_node *n, struct gr_frame *f, int in, int32_t *push)
{
    char open = n->kwargs ? '(' : '{', close = n->kwargs ? ')' : '}';
    bool req_ok = (f->m & n->required) == n->required;
    int w = f->st == O_KEY || f->st == O_KEYFREE || f->st == O_OPEN ? -1 : ws(f, in);
    if (w >= 0)
        return w;
    f->ws = 0;
    switch (f->st) {
    case O_OPEN: return in == open ? (f->st = O_FIRST, R_OK) : R_REJECT;
    case O_FIRST:
        if (in == close)
            return req_ok ? R_POP : R_REJECT;
        return start_key(n, f, in);
    case O_NEXT: return start_key(n, f, in);
    case O_KEY:
    case O_KEYFREE:
        if (n->kwargs) {
            if (in == '=')
                return close_key(n, f);
            return ident_char(in) ? key_byte(n, f, in) : R_REJECT;
        }
        switch (lex(f, in)) {
        case LX_QUOTE: return close_key(n, f);
        case LX_BAD: return R_REJECT;
        }
        return key_byte(n, f, in);
    case O_COLON: return in == ':' ? (f->st = O_VALWS, R_OK) : R_REJECT;
    case O_VALWS:
        f->st = O_VALUE;
        *push = f->c == ADDL ? n->additional : n->props[f->c].node;
        return R_PUSH;
    case O_AFTER:
        if (in == ',' && more_keys(n, f))
            return f->st = O_NEXT, R_OK;
        return in == close && req_ok ? R_POP : R_REJECT;
    }
    return R_REJECT;
}

static int f_array(const struct gr_node *n, struct gr_frame *f, int in, int32_t *push)
{
    int w = f->st == A_OPEN ? -1 : ws(f, in);
    if (w >= 0)
        return w;
    f->ws = 0;
    switch (f->st) {
    case A_OPEN: return in == '[' ? (f->st = A_FIRST, R_OK) : R_REJECT;
    case A_FIRST:
        if (in == ']')
            return n->min_items <= 0 ? R_POP : R_REJECT;
        if (n->max_items == 0)
            return R_REJECT;
        f->st = A_ITEM;
        *push = n->items;
        return R_PUSH;
    case A_NEXT:
        f->st = A_ITEM;
        *push = n->items;
        return R_PUSH;
    case A_AFTER:
        if (in == ',' && (n->max_items < 0 || (int)f->a < n->max_items))
            return f->st = A_NEXT, R_OK;
        return in == ']' && (int)f->a >= n->min_items ? R_POP : R_REJECT;
    }
    return R_REJECT;
}

/* The top frame reads input in. */
static int f_input(const struct grammar *g, struct gr_frame *f, int in, int32_t *push)
{
    const struct gr_node *n = &g->nodes[f->node];
    switch (n->kind) {
    case GR_LIT:
        if (in != (unsigned char)n->lit[f->a])
            return R_REJECT;
        return ++f->a == n->lit_len ? R_POP : R_OK;
    case GR_LITSET: return f_litset(n, f, in);
    case GR_TOKEN: return in == GR_TOKEN_INPUT(n->token) ? R_POP : R_REJECT;
    case GR_OBJECT: return f_object(n, f, in, push);
    case GR_ARRAY: return f_array(n, f, in, push);
    case GR_STRING: return f_string(n, f, in);
    case GR_NUMBER: return f_number(n, f, in);
    default: return R_REJECT; /* SEQ and ALT never read */
    }
}

/* ---- threads -----------------------------------------------------------------------------------
 */

static bool push_frame(const struct grammar *g, struct gr_thread *t, int node)
{
    if (t->depth == GR_MAX_DEPTH)
        return false;
    struct gr_frame *f = &t->f[t->depth++];
    memset(f, 0, sizeof *f);
    f->node = node;
    if (g->nodes[node].kind == GR_LITSET)
        f->b = (uint32_t)g->nodes[node].n_set;
    return true;
}

/* The top frame is complete: pop it and tell its parent. */
static void child_done(const struct grammar *g, struct gr_thread *t)
{
    t->depth--;
    if (!t->depth)
        return;
    struct gr_frame *p = &t->f[t->depth - 1];
    switch (g->nodes[p->node].kind) {
    case GR_SEQ:
        p->a++; /* its next kid is pushed when it is settled */
        break;
    case GR_OBJECT: p->st = O_AFTER, p->ws = 0; break;
    case GR_ARRAY: p->a++, p->st = A_AFTER, p->ws = 0; break;
    default: break;
    }
}

struct work {
    struct gr_thread t;
    int pending; /* the input still to read, or -1 */
};

struct run {
    struct work w[GR_MAX_THREADS * 4];
    int n;
    bool ended; /* a thread read GR_END to its end */
};

static void add_work(struct run *r, const struct gr_thread *t, int pending)
{
    if (r->n == (int)(sizeof r->w / sizeof r->w[0]))
        return; /* too many live alternatives: this one is dropped */
    struct work *w = &r->w[r->n++];
    w->t.depth = t->depth;
    memcpy(w->t.f, t->f, sizeof *t->f * (size_t)t->depth);
    w->pending = pending;
}

static bool same_thread(const struct gr_thread *a, const struct gr_thread *b)
{
    return a->depth == b->depth && !memcmp(a->f, b->f, sizeof *a->f * (size_t)a->depth);
}

static void emit(struct gr_state *out, const struct gr_thread *t)
{
    for (int i = 0; i < out->n; i++)
        if (same_thread(&out->t[i], t))
            return;
    if (out->n == GR_MAX_THREADS)
        return;
    struct gr_thread *d = &out->t[out->n++];
    d->depth = t->depth;
    memcpy(d->f, t->f, sizeof *t->f * (size_t)t->depth);
}

/* One work item: settles SEQ/ALT on top, or lets the top frame read the pending input. */
/* A SEQ on top pushes its next kid (or, done, pops); an ALT forks into its kids. */
static void settle(const struct grammar *g, struct run *r, struct work *w)
{
    struct gr_thread *t = &w->t;
    struct gr_frame *f = &t->f[t->depth - 1];
    const struct gr_node *n = &g->nodes[f->node];
    if (n->kind == GR_SEQ) {
        if ((int)f->a >= n->n_kids)
            child_done(g, t);
        else if (!push_frame(g, t, n->kids[f->a]))
            return;
        add_work(r, t, w->pending);
        return;
    }
    t->depth--; /* the ALT frame gives way to each kid */
    for (int k = 0; k < n->n_kids; k++) {
        if (!push_frame(g, t, n->kids[k]))
            break;
        add_work(r, t, w->pending);
        t->depth--;
    }
}

/* One work item: settles SEQ/ALT on top, or lets the top frame read the pending input. */
static void advance(const struct grammar *g, struct run *r, struct work *w, struct gr_state *out)
{
    struct gr_thread *t = &w->t;
    if (!t->depth) {
        if (w->pending == GR_END)
            r->ended = true;
        else if (w->pending < 0)
            emit(out, t);
        return;
    }
    struct gr_frame *f = &t->f[t->depth - 1];
    enum gr_kind kind = g->nodes[f->node].kind;
    if (kind == GR_SEQ || kind == GR_ALT) {
        settle(g, r, w);
        return;
    }
    if (w->pending < 0) {
        emit(out, t);
        return;
    }
    int32_t child = -1;
    switch (f_input(g, f, w->pending, &child)) {
    case R_OK: emit(out, t); break;
    case R_POP: /* complete, the input taken */
        child_done(g, t);
        add_work(r, t, -1);
        break;
    case R_PASS: /* complete, the input left to the parent */
        child_done(g, t);
        add_work(r, t, w->pending);
        break;
    case R_PUSH:
        if (push_frame(g, t, child))
            add_work(r, t, w->pending);
        break;
    default: break;
    }
}

static int run_all(const struct grammar *g, struct run *r, struct gr_state *out)
{
    out->n = 0;
    for (int budget = 4096; r->n > 0 && budget > 0; budget--) { /* gr_check rules out loops */
        struct work w;
        struct work *last = &r->w[--r->n];
        w.pending = last->pending;
        w.t.depth = last->t.depth;
        memcpy(w.t.f, last->t.f, sizeof *w.t.f * (size_t)w.t.depth);
        advance(g, r, &w, out);
    }
    return out->n;
}

int gr_start(const struct grammar *g, struct gr_state *s)
{
    static _Thread_local struct run r; /* scratch: one step at a time per thread */
    r.n = 0;
    r.ended = false;
    struct gr_thread t = {0};
    if (g->root < 0 || g->root >= g->n_nodes || !push_frame(g, &t, g->root)) {
        s->n = 0;
        return 0;
    }
    add_work(&r, &t, -1);
    return run_all(g, &r, s);
}

int gr_step(const struct grammar *g, const struct gr_state *in, int input, struct gr_state *out)
{
    static _Thread_local struct run r; /* scratch: one step at a time per thread */
    r.n = 0;
    r.ended = false;
    for (int i = in->n - 1; i >= 0; i--)
        add_work(&r, &in->t[i], input);
    int n = run_all(g, &r, out);
    if (input == GR_END) {
        out->n = 0;
        return r.ended;
    }
    return n;
}

/* One thread's room in a plain string: characters left (-1: any), or -2 when it is not in one. */
static int plain_room(const struct grammar *g, const struct gr_thread *t)
{
    if (!t->depth)
        return -2;
    const struct gr_frame *f = &t->f[t->depth - 1];
    const struct gr_node *n = &g->nodes[f->node];
    if (f->esc || f->u8)
        return -2;
    if (n->kind == GR_STRING && f->st == 1)
        return n->max_len < 0 ? -1 : n->max_len - (int)f->a;
    return n->kind == GR_OBJECT && !n->kwargs && f->st == O_KEYFREE ? -1 : -2;
}

bool gr_in_plain_string(const struct grammar *g, const struct gr_state *s, int *max_chars)
{
    int most = -2;
    for (int i = 0; i < s->n; i++) {
        int r = plain_room(g, &s->t[i]);
        if (r == -2)
            return false;
        most = most == -1 || r == -1 ? -1 : r > most ? r : most;
    }
    *max_chars = most;
    return s->n > 0;
}

void gr_copy(struct gr_state *dst, const struct gr_state *src)
{
    dst->n = src->n;
    for (int i = 0; i < src->n; i++) {
        dst->t[i].depth = src->t[i].depth;
        memcpy(dst->t[i].f, src->t[i].f, sizeof *src->t[i].f * (size_t)src->t[i].depth);
    }
}
