/*
 * tokmask.c: the token mask of tokmask.h.
 *
 * struct tm_vocab holds two tries in preorder (node i: its byte, its depth, the first token
 * whose bytes end there, and end[i], the index just past its subtree): one over every token with
 * bytes, one over the "special-in-strings" tokens only. A token is plain when its bytes are
 * complete UTF-8 with no control byte, no " and no \: inside a JSON string it only adds
 * characters. plain_le[k] is the set of plain tokens of at most k characters.
 * tm_allowed() walks a trie from the current state: at node i the state of its parent (one per
 * depth, states[]) steps by the node's byte; a dead state skips the subtree, so structural
 * states visit a few hundred nodes. Inside a plain string (the common case for long replies)
 * the plain tokens are taken whole from plain_le and only the other trie is walked.
 * End-of-generation tokens are allowed when the state accepts GR_END; the special tokens the
 * grammar names when it accepts them.
 */
#include "tokmask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "grammar.h"
#include "strbuf.h"
#include "tokenizer.h"

#define MAX_TOKEN_BYTES 128 /* longer tokens are never allowed */
#define PLAIN_K 16

struct trie {
    uint8_t *byte, *depth;
    int32_t *tok;  /* first token ending at the node, or -1 */
    uint32_t *end; /* one past the node's subtree */
    uint32_t n;
};

struct tm_vocab {
    const struct tokenizer *tok;
    int n_vocab, words; /* words: 64-bit words of a token bit set */
    int max_depth;
    struct trie all, odd;            /* odd: the tokens that are not plain */
    int32_t *next_same;              /* [n_vocab] the next token with the same bytes, or -1 */
    uint64_t *plain_le[PLAIN_K + 1]; /* [words] each */
    uint64_t *plain_all;
    int32_t *long_plain; /* plain tokens of more than PLAIN_K characters */
    uint8_t *long_chars;
    int n_long, max_plain_chars;
    int32_t *eog;
    int n_eog;
};

struct tm_mask {
    const struct tm_vocab *v;
    const struct grammar *g;
    struct gr_state *states; /* [max_depth + 1]: states[0] is the current state */
    struct gr_state *tmp;
    uint64_t *allowed;
    bool valid, done;
    int32_t *special; /* the special tokens the grammar names */
    int n_special;
};

static void set_bit(uint64_t *b, int32_t t)
{
    b[t >> 6] |= 1ull << (t & 63);
}

/* ---- the vocabulary --------------------------------------------------------------------- */

struct piece {
    int32_t id;
    const char *s;
    size_t len;
};

static int cmp_piece(const void *x, const void *y)
{
    const struct piece *a = x, *b = y;
    int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static void trie_free(struct trie *t)
{
    free(t->byte), free(t->depth), free(t->tok), free(t->end);
    memset(t, 0, sizeof *t);
}

/* The trie of p[0..n) (sorted); tokens with equal bytes chain through next_same. */
static int trie_build(struct trie *t, const struct piece *p, int n, int32_t *next_same)
{
    size_t cap = 1;
    for (int i = 0; i < n; i++)
        cap += p[i].len;
    t->byte = malloc(cap), t->depth = malloc(cap);
    t->tok = malloc(sizeof *t->tok * cap), t->end = malloc(sizeof *t->end * cap);
    if (!t->byte || !t->depth || !t->tok || !t->end)
        return EXSA_ENOMEM;
    uint32_t path[MAX_TOKEN_BYTES];
    size_t prev = 0;
    for (int i = 0; i < n; i++) {
        size_t lcp = 0;
        while (i > 0 && lcp < prev && lcp < p[i].len && p[i - 1].s[lcp] == p[i].s[lcp])
            lcp++;
        for (size_t d = lcp; d < prev; d++) /* the previous token's nodes past the prefix */
            t->end[path[d]] = t->n;
        for (size_t d = lcp; d < p[i].len; d++) {
            path[d] = t->n;
            t->byte[t->n] = (uint8_t)p[i].s[d];
            t->depth[t->n] = (uint8_t)(d + 1);
            t->tok[t->n++] = -1;
        }
        int32_t *at = &t->tok[path[p[i].len - 1]];
        while (*at >= 0)
            at = &next_same[*at];
        *at = p[i].id;
        prev = p[i].len;
    }
    for (size_t d = 0; d < prev; d++)
        t->end[path[d]] = t->n;
    return 0;
}

/* Characters of a plain token, or -1 when it is not plain. */
static int plain_chars(const char *s, size_t n)
{
    int chars = 0;
    for (size_t i = 0; i < n; chars++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\')
            return -1;
        int k = utf8_char((const unsigned char *)s + i, n - i);
        if (k <= 0)
            return -1;
        i += (size_t)k;
    }
    return chars;
}

/* Sorts the plain tokens into the plain_le sets; puts the others in odd[0..*n_odd). */
static int classify(struct tm_vocab *v, const struct piece *p, int n, struct piece *odd, int *n_odd)
{
    *n_odd = 0;
    for (int k = 0; k <= PLAIN_K; k++)
        if (!(v->plain_le[k] = calloc((size_t)v->words, 8)))
            return EXSA_ENOMEM;
    v->plain_all = calloc((size_t)v->words, 8);
    v->long_plain = malloc(sizeof *v->long_plain * (size_t)(n ? n : 1));
    v->long_chars = malloc((size_t)(n ? n : 1));
    if (!v->plain_all || !v->long_plain || !v->long_chars)
        return EXSA_ENOMEM;
    for (int i = 0; i < n; i++) {
        int c = plain_chars(p[i].s, p[i].len);
        if (c < 0) {
            odd[(*n_odd)++] = p[i];
            continue;
        }
        set_bit(v->plain_all, p[i].id);
        v->max_plain_chars = c > v->max_plain_chars ? c : v->max_plain_chars;
        for (int k = c; k <= PLAIN_K; k++)
            set_bit(v->plain_le[k], p[i].id);
        if (c > PLAIN_K) {
            v->long_plain[v->n_long] = p[i].id;
            v->long_chars[v->n_long++] = (uint8_t)(c > 255 ? 255 : c);
        }
    }
    return 0;
}

/* The tokens with bytes (not control tokens, not too long), sorted, in *out. */
static int gather(const struct tokenizer *tok, int n_vocab, struct tm_vocab *v, struct piece **out,
                  int *n)
{
    struct piece *p = malloc(sizeof *p * (size_t)n_vocab);
    v->eog = malloc(sizeof *v->eog * (size_t)n_vocab);
    if (!p || !v->eog) {
        free(p);
        return EXSA_ENOMEM;
    }
    *n = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        v->next_same[id] = -1;
        const char *s;
        size_t len;
        if (tok_is_eog(tok, id))
            v->eog[v->n_eog++] = id;
        if (id >= tok_n_vocab(tok) || tok_is_control(tok, id) ||
            tok_piece(tok, id, false, &s, &len) || !len || len > MAX_TOKEN_BYTES)
            continue;
        p[(*n)++] = (struct piece){id, s, len};
        v->max_depth = (int)len > v->max_depth ? (int)len : v->max_depth;
    }
    qsort(p, (size_t)*n, sizeof *p, cmp_piece);
    *out = p;
    return 0;
}

int tm_vocab_new(const struct tokenizer *tok, int n_vocab, struct tm_vocab **out)
{
    *out = NULL;
    struct tm_vocab *v = calloc(1, sizeof *v);
    if (!v || n_vocab <= 0) {
        free(v);
        return v ? EXSA_EINVAL : EXSA_ENOMEM;
    }
    v->tok = tok;
    v->n_vocab = n_vocab;
    v->words = (n_vocab + 63) / 64;
    v->next_same = malloc(sizeof *v->next_same * (size_t)n_vocab);
    struct piece *p = NULL, *odd = NULL;
    int n = 0, n_odd = 0;
    int rc = v->next_same ? gather(tok, n_vocab, v, &p, &n) : EXSA_ENOMEM;
    if (!rc && !(odd = malloc(sizeof *odd * (size_t)(n ? n : 1))))
        rc = EXSA_ENOMEM;
    if (!rc)
        rc = classify(v, p, n, odd, &n_odd);
    if (!rc)
        rc = trie_build(&v->all, p, n, v->next_same);
    if (!rc) { /* the odd trie chains nothing: next_same belongs to the full trie */
        int32_t *none = malloc(sizeof *none * (size_t)n_vocab);
        rc = none ? trie_build(&v->odd, odd, n_odd, none) : EXSA_ENOMEM;
        free(none);
    }
    free(p);
    free(odd);
    if (rc) {
        tm_vocab_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void tm_vocab_free(struct tm_vocab *v)
{
    if (!v)
        return;
    trie_free(&v->all);
    trie_free(&v->odd);
    for (int k = 0; k <= PLAIN_K; k++)
        free(v->plain_le[k]);
    free(v->plain_all);
    free(v->long_plain);
    free(v->long_chars);
    free(v->next_same);
    free(v->eog);
    free(v);
}

/* ---- masks ------------------------------------------------------------------------------ */

/* The special tokens named by g's TOKEN nodes. */
static int grammar_tokens(struct tm_mask *m)
{
    const struct grammar *g = m->g;
    m->special = malloc(sizeof *m->special * (size_t)(g->n_nodes ? g->n_nodes : 1));
    if (!m->special)
        return EXSA_ENOMEM;
    for (int i = 0; i < g->n_nodes; i++) {
        int32_t id = g->nodes[i].token;
        if (g->nodes[i].kind != GR_TOKEN || id < 0 || id >= m->v->n_vocab)
            continue;
        bool seen = false;
        for (int k = 0; k < m->n_special && !seen; k++)
            seen = m->special[k] == id;
        if (!seen)
            m->special[m->n_special++] = id;
    }
    return 0;
}

int tm_mask_new(const struct tm_vocab *v, const struct grammar *g, struct tm_mask **out)
{
    *out = NULL;
    struct tm_mask *m = calloc(1, sizeof *m);
    if (!m)
        return EXSA_ENOMEM;
    m->v = v, m->g = g;
    m->states = malloc(sizeof *m->states * (size_t)(v->max_depth + 1));
    m->tmp = malloc(sizeof *m->tmp);
    m->allowed = malloc(sizeof *m->allowed * (size_t)v->words);
    int rc = m->states && m->tmp && m->allowed ? grammar_tokens(m) : EXSA_ENOMEM;
    if (!rc && !gr_start(g, &m->states[0]))
        rc = EXSA_EINVAL;
    if (rc) {
        tm_mask_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void tm_mask_free(struct tm_mask *m)
{
    if (!m)
        return;
    free(m->states);
    free(m->tmp);
    free(m->allowed);
    free(m->special);
    free(m);
}

/* Marks the tokens of trie t that the state m->states[0] can read whole. */
static void walk(struct tm_mask *m, const struct trie *t, bool chain)
{
    struct gr_state *st = m->states;
    for (uint32_t i = 0; i < t->n;) {
        int d = t->depth[i];
        if (!gr_step(m->g, &st[d - 1], t->byte[i], &st[d])) {
            i = t->end[i];
            continue;
        }
        for (int32_t id = t->tok[i]; id >= 0; id = chain ? m->v->next_same[id] : -1)
            set_bit(m->allowed, id);
        i++;
    }
}

/* Inside a plain string that takes max_chars more characters (-1: any): the plain tokens. */
static void plain_tokens(struct tm_mask *m, int max_chars)
{
    const struct tm_vocab *v = m->v;
    bool all = max_chars < 0 || max_chars >= v->max_plain_chars;
    const uint64_t *src =
        all ? v->plain_all : v->plain_le[max_chars < PLAIN_K ? max_chars : PLAIN_K];
    memcpy(m->allowed, src, sizeof *m->allowed * (size_t)v->words);
    for (int i = 0; !all && max_chars > PLAIN_K && i < v->n_long; i++)
        if (v->long_chars[i] <= max_chars)
            set_bit(m->allowed, v->long_plain[i]);
}

static void compute(struct tm_mask *m)
{
    const struct tm_vocab *v = m->v;
    int max_chars;
    if (m->done) {
        memset(m->allowed, 0, sizeof *m->allowed * (size_t)v->words);
    } else if (gr_in_plain_string(m->g, &m->states[0], &max_chars)) {
        plain_tokens(m, max_chars);
        walk(m, &v->odd, false);
    } else {
        memset(m->allowed, 0, sizeof *m->allowed * (size_t)v->words);
        walk(m, &v->all, true);
    }
    bool any = false;
    for (int i = 0; i < m->n_special; i++)
        if (gr_step(m->g, &m->states[0], GR_TOKEN_INPUT(m->special[i]), m->tmp))
            set_bit(m->allowed, m->special[i]), any = true;
    for (int i = 0; i < v->words && !any; i++)
        any = m->allowed[i] != 0;
    if (m->done || !any || gr_step(m->g, &m->states[0], GR_END, m->tmp))
        for (int i = 0; i < v->n_eog; i++)
            set_bit(m->allowed, v->eog[i]);
    m->valid = true;
}

const uint64_t *tm_allowed(struct tm_mask *m)
{
    if (!m->valid)
        compute(m);
    return m->allowed;
}

int tm_accept(struct tm_mask *m, int32_t tok)
{
    const uint64_t *a = tm_allowed(m);
    if (tok < 0 || tok >= m->v->n_vocab || !(a[tok >> 6] >> (tok & 63) & 1))
        return EXSA_EINVAL;
    for (int i = 0; i < m->v->n_eog; i++)
        if (m->v->eog[i] == tok) {
            m->done = true;
            m->valid = false;
            return 0;
        }
    struct gr_state *st = m->states;
    const struct gr_state *last = NULL;
    for (int i = 0; i < m->n_special && !last; i++)
        if (m->special[i] == tok && gr_step(m->g, &st[0], GR_TOKEN_INPUT(tok), m->tmp))
            last = m->tmp;
    const char *s;
    size_t len;
    if (!last && !tok_piece(m->v->tok, tok, false, &s, &len) && len &&
        len <= (size_t)m->v->max_depth) { /* its bytes, through states[1..len] */
        size_t i = 0;
        while (i < len && gr_step(m->g, &st[i], (unsigned char)s[i], &st[i + 1]))
            i++;
        last = i == len ? &st[len] : NULL;
    }
    if (!last)
        return EXSA_EINVAL;
    gr_copy(&st[0], last);
    m->valid = false;
    return 0;
}

bool tm_done(const struct tm_mask *m)
{
    return m->done;
}

static void apply(void *ctx, float *logits, int n_vocab)
{
    struct tm_mask *m = ctx;
    const uint64_t *a = tm_allowed(m);
    int n = n_vocab < m->v->n_vocab ? n_vocab : m->v->n_vocab;
    for (int i = 0; i < n; i++)
        if (!(a[i >> 6] >> (i & 63) & 1))
            logits[i] = -INFINITY;
    for (int i = n; i < n_vocab; i++)
        logits[i] = -INFINITY;
}

static void accept(void *ctx, int32_t tok)
{
    tm_accept(ctx, tok);
}

struct sampler_mask tm_sampler_mask(struct tm_mask *m)
{
    return (struct sampler_mask){apply, accept, m};
}
