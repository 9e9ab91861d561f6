/*
 * grammar.h: a byte-level pushdown automaton for constrained decoding. A grammar is a table of
 * nodes (JSON values shaped like a JSON schema: objects, arrays, strings, numbers, literal sets;
 * sequences, alternatives, exact bytes and special tokens around them); jsonschema.c builds
 * them. A state is a small set of threads (one per live alternative), each a stack of frames;
 * gr_step() advances a state by one input: a byte, a special token, or GR_END (may the value
 * stop here?). Whitespace between JSON tokens is allowed but runs are capped, numbers have
 * capped digit counts and nesting is capped, so every accepted reply is bounded in form; every
 * state that is alive can still reach an end (no dead ends), except past GR_MAX_DEPTH.
 * Read-only after building: one grammar may serve many states at once. Used by tokmask.c.
 */
#ifndef EXSA_GRAMMAR_H
#define EXSA_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GR_MAX_DEPTH 32
#define GR_MAX_THREADS 8
#define GR_MAX_PROPS 64  /* properties of one object */
#define GR_WS_MAX 20     /* bytes of whitespace in a row between two JSON tokens */
#define GR_INT_DIGITS 16 /* digits before the point (and after it) */
#define GR_EXP_DIGITS 3

/* Inputs besides bytes 0..255. */
#define GR_END 256
#define GR_TOKEN_INPUT(id) (257 + (int)(id))

enum gr_kind {
    GR_LIT,    /* exactly the bytes lit[0..lit_len) (lit_len > 0) */
    GR_LITSET, /* one of set[0..n_set): distinct, sorted by bytes (gr_sort), none empty */
    GR_TOKEN,  /* the special token `token` */
    GR_SEQ,    /* kids in order */
    GR_ALT,    /* one of the kids */
    GR_OBJECT, /* {"key": value, ...}, or with kwargs (key=value, ...) */
    GR_ARRAY,  /* [item, ...] */
    GR_STRING, /* a JSON string */
    GR_NUMBER, /* a JSON number (integer: no fraction, no exponent) */
};

struct gr_prop {
    char *name; /* the key's bytes as written between the quotes (JSON-escaped) */
    size_t len;
    int node;
};

struct gr_node {
    enum gr_kind kind;
    int *kids; /* SEQ, ALT */
    int n_kids;
    char *lit; /* LIT */
    size_t lit_len;
    struct gr_prop *set; /* LITSET (only name and len are used) */
    int n_set;
    int32_t token;         /* TOKEN */
    struct gr_prop *props; /* OBJECT: sorted by name, at most GR_MAX_PROPS */
    int n_props;
    uint64_t required;        /* OBJECT: bit i: props[i] must appear */
    int additional;           /* OBJECT: node of other keys' values, -1: no other keys */
    bool kwargs;              /* OBJECT: Python keyword arguments, keys are identifiers */
    int items;                /* ARRAY */
    int min_items, max_items; /* ARRAY (max -1: no limit) */
    int min_len, max_len;     /* STRING, in code points (max -1: no limit) */
    bool integer;             /* NUMBER */
};

struct grammar {
    struct gr_node *nodes;
    int n_nodes;
    size_t cap;
    int root;
};

/* Appends a node (zeroed, of kind k); returns its index, or EXSA_ENOMEM. Pointers into
 * g->nodes are invalidated by the next gr_add. */
int gr_add(struct grammar *g, enum gr_kind k);
/* Frees the nodes' arrays (the grammar struct itself is the caller's). */
void gr_free(struct grammar *g);
/* Frees n props' names and the array (a node's set or props, or one not yet in a node). */
void gr_props_free(struct gr_prop *p, int n);
/* Whether the grammar can run: every node index in range, and no loop of nodes that read
 * nothing (an ALT or a SEQ's first kid leading back to itself, as {"$ref": "#"} would). */
bool gr_check(const struct grammar *g);
/* Sorts strings (props or a literal set) by their bytes, shorter first on a common prefix,
 * the order matching needs. Returns false if two are equal. */
bool gr_sort(struct gr_prop *v, int n);

/* ---- matching ----------------------------------------------------------------------------- */

struct gr_frame {
    int32_t node;
    uint8_t st, ws;  /* phase; whitespace run */
    uint8_t esc, u8; /* string lexer: escape progress; UTF-8 bytes still due (+ class << 4) */
    uint32_t a, b, c;
    uint64_t m;
};

struct gr_thread {
    int depth; /* 0: the value is complete */
    struct gr_frame f[GR_MAX_DEPTH];
};

struct gr_state {
    int n;
    struct gr_thread t[GR_MAX_THREADS];
};

/* The state before the first input. Returns the number of threads (0: the grammar is empty). */
int gr_start(const struct grammar *g, struct gr_state *s);
/* The state after one input. Returns the number of live threads in out (0: the input is not
 * allowed); for GR_END, 1 if the value may end here, else 0 (out is then empty). in != out. */
int gr_step(const struct grammar *g, const struct gr_state *in, int input, struct gr_state *out);
/* Whether every thread of s is inside a string body (or a free object key) with no escape or
 * character half done: then *max_chars gets the most characters one of them still takes (-1:
 * any number). A plain byte (printable, not " or \) keeps such a state as it is, but for the
 * counts, and a plain token of k characters lives on in exactly the threads with room for k. */
bool gr_in_plain_string(const struct grammar *g, const struct gr_state *s, int *max_chars);
/* Copies the threads of src into dst (only the frames in use). */
void gr_copy(struct gr_state *dst, const struct gr_state *src);

#endif
